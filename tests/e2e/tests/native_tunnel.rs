//! End to end, with real processes on loopback: burrowd (embedded relay or coturn),
//! burrow-agent, the burrow CLI, and real PostgreSQL and OpenSSH behind the tunnel.

use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use burrow_e2e::burrow::{
    Burrowd, Relay, bin, burrow, listening_sockets, port_forward, serve_file, start_agent,
};
use burrow_e2e::services::{Coturn, Postgres, Sshd, sha256_file, write_random_file};

const USER: &str = "alice";
const WS: &str = "devbox";

struct World {
    dir: tempfile::TempDir,
    burrowd: Burrowd,
    token: String,
    agent: burrow_e2e::burrow::Proc,
}

fn world(relay: Relay, ports: &[u16]) -> anyhow::Result<World> {
    let dir = tempfile::tempdir()?;
    let burrowd = Burrowd::start(dir.path(), relay)?;
    let token = burrowd.add_user(USER)?;
    let agent_token = burrowd.add_workspace(WS, USER)?;
    let agent = start_agent(dir.path(), &burrowd.url, &agent_token, ports)?;
    Ok(World {
        dir,
        burrowd,
        token,
        agent,
    })
}

fn assert_success(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn psql_through(pg: &Postgres, port: u16, sql: &str) -> anyhow::Result<String> {
    let out = pg.psql_cmd(port).args(["-tA", "-c", sql]).output()?;
    assert_success(&out, "psql");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn psql_runs_queries_and_pgbench_through_port_forward() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let w = world(Relay::Embedded, &[pg.port()])?;
    let fwd = port_forward(w.dir.path(), &w.burrowd.url, &w.token, WS, pg.port(), false)?;
    assert!(
        fwd.proc.log_text().contains("direct path"),
        "loopback peers should connect directly: {}",
        fwd.proc.log_tail()
    );

    assert_eq!(psql_through(&pg, fwd.port, "select 6 * 7")?, "42");

    let init = pg
        .pgbench_cmd(fwd.port)
        .args(["-i", "-s", "2", "-q"])
        .output()?;
    assert_success(&init, "pgbench -i");
    let run = pg
        .pgbench_cmd(fwd.port)
        .args(["-c", "8", "-j", "2", "-t", "200"])
        .output()?;
    assert_success(&run, "pgbench");
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        report.contains("number of transactions actually processed: 1600/1600"),
        "{report}"
    );
    assert_eq!(
        psql_through(&pg, fwd.port, "select count(*) from pgbench_history")?,
        "1600"
    );

    // Each forwarded connection is one stream; burrowd records them from the agent's reports.
    let row = w
        .burrowd
        .wait_for_audit("for a psql stream", Duration::from_secs(20), |r| {
            r["port"] == pg.port() && r["outcome"] == "ok" && r["path"] == "direct"
        })?;
    assert_eq!(row["user"], USER);
    assert_eq!(row["workspace"], WS);
    assert!(row["bytes_to_client"].as_u64().unwrap_or(0) > 0, "{row}");
    Ok(())
}

#[test]
fn ssh_through_stdio_proxy_runs_commands_and_scp_keeps_100mb_intact() -> anyhow::Result<()> {
    let sshd = Sshd::start()?;
    let w = world(Relay::Embedded, &[sshd.port()])?;
    let burrow_bin = bin("burrow")?;
    let proxy = format!(
        "ProxyCommand=env BURROW_URL={} BURROW_TOKEN={} {} stdio {WS} {} --udp-bind 127.0.0.1",
        w.burrowd.url,
        w.token,
        burrow_bin.display(),
        sshd.port()
    );

    let out = sshd
        .ssh_cmd(&["-o", &proxy])
        .arg("echo tunnelled-$((6*7))")
        .output()?;
    assert_success(&out, "ssh");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tunnelled-42");

    let src = w.dir.path().join("payload.bin");
    let dst = w.dir.path().join("payload.copy");
    write_random_file(&src, 100 * 1024 * 1024)?;
    let out = sshd
        .scp_cmd(&["-o", &proxy])
        .arg(&src)
        .arg(format!("root@127.0.0.1:{}", dst.display()))
        .output()?;
    assert_success(&out, "scp");
    assert_eq!(sha256_file(&src)?, sha256_file(&dst)?);
    Ok(())
}

#[test]
fn forced_relay_through_the_embedded_relay_carries_psql() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let w = world(Relay::Embedded, &[pg.port()])?;
    let fwd = port_forward(w.dir.path(), &w.burrowd.url, &w.token, WS, pg.port(), true)?;
    assert!(
        fwd.proc.log_text().contains("relay path"),
        "{}",
        fwd.proc.log_tail()
    );
    assert_eq!(psql_through(&pg, fwd.port, "select 'relayed'")?, "relayed");
    w.burrowd
        .wait_for_audit("for a relayed stream", Duration::from_secs(20), |r| {
            r["port"] == pg.port() && r["path"] == "relay"
        })?;
    Ok(())
}

#[test]
fn forced_relay_through_coturn_carries_ssh() -> anyhow::Result<()> {
    let secret = "coturn-test-secret";
    let coturn = Coturn::start(secret)?;
    let sshd = Sshd::start()?;
    let w = world(
        Relay::External {
            url: coturn.url(),
            secret: secret.to_owned(),
        },
        &[sshd.port()],
    )?;
    let mut ping = burrow(&w.burrowd.url, &w.token)?;
    let out = ping
        .args([
            "ping",
            WS,
            "-c",
            "3",
            "--force-relay",
            "--udp-bind",
            "127.0.0.1",
        ])
        .output()?;
    assert_success(&out, "burrow ping --force-relay");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("relay path"), "{text}");
    assert!(text.contains("rtt min/avg/max"), "{text}");

    let fwd = port_forward(
        w.dir.path(),
        &w.burrowd.url,
        &w.token,
        WS,
        sshd.port(),
        true,
    )?;
    let out = sshd
        .ssh_cmd(&["-p", &fwd.port.to_string()])
        .arg("echo via-coturn")
        .output()?;
    assert_success(
        &out,
        &format!(
            "ssh via coturn\nforward log:\n{}\nagent log:\n{}",
            fwd.proc.log_tail(),
            w.agent.log_tail()
        ),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "via-coturn");
    Ok(())
}

#[test]
fn tunnel_keeps_carrying_data_while_burrowd_is_down_and_agent_reregisters() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let payload = dir.path().join("big.bin");
    write_random_file(&payload, 200 * 1024 * 1024)?;
    let port = serve_file(&payload)?;
    let mut w = world(Relay::Embedded, &[port])?;
    let fwd = port_forward(w.dir.path(), &w.burrowd.url, &w.token, WS, port, false)?;

    let copy = dir.path().join("big.copy");
    let received = Arc::new(AtomicU64::new(0));
    // A reader capped at about 50 MB/s, so that burrowd dies mid-transfer.
    let reader = {
        let received = Arc::clone(&received);
        let copy = copy.clone();
        let port = fwd.port;
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut conn = std::net::TcpStream::connect(("127.0.0.1", port))?;
            conn.set_read_timeout(Some(Duration::from_secs(30)))?;
            let mut out = std::io::BufWriter::new(std::fs::File::create(&copy)?);
            let mut buf = vec![0u8; 64 * 1024];
            let started = std::time::Instant::now();
            loop {
                let n = conn.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])?;
                let total = received.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                let due = Duration::from_secs_f64(total as f64 / 50e6);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            out.flush()?;
            Ok(())
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < 8 * 1024 * 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "transfer did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    w.burrowd.kill();
    let at_kill = received.load(Ordering::Relaxed);
    assert!(
        at_kill < 200 * 1024 * 1024,
        "transfer finished before burrowd was killed"
    );
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    assert_eq!(received.load(Ordering::Relaxed), 200 * 1024 * 1024);
    assert_eq!(sha256_file(&payload)?, sha256_file(&copy)?);

    // burrowd comes back; the agent registers again and new sessions work.
    w.burrowd.restart(w.dir.path())?;
    w.agent
        .wait_for_log("reconnecting", Duration::from_secs(5))
        .ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let count = w
            .agent
            .log_text()
            .matches("registered with burrowd")
            .count();
        if count >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "agent did not re-register:\n{}",
            w.agent.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = burrow(&w.burrowd.url, &w.token)?
        .args(["ping", WS, "-c", "1", "--udp-bind", "127.0.0.1"])
        .output()?;
    assert_success(&out, "ping after burrowd restart");
    // The stream that ran while burrowd was down is in the audit log once it is back.
    w.burrowd
        .wait_for_audit("for the transfer", Duration::from_secs(30), |r| {
            r["port"] == port && r["bytes_to_client"].as_u64() == Some(200 * 1024 * 1024)
        })?;
    Ok(())
}

#[test]
fn refusals_give_clear_errors_and_audit_rows() -> anyhow::Result<()> {
    let w = world(Relay::Embedded, &[1])?;
    let bob = w.burrowd.add_user("bob")?;

    // A bad token.
    let out = burrow(&w.burrowd.url, "bu_not-a-real-token")?
        .args(["ping", WS, "--udp-bind", "127.0.0.1"])
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unauthorized"), "{err}");
    w.burrowd
        .wait_for_audit("for the bad token", Duration::from_secs(5), |r| {
            r["outcome"]
                .as_str()
                .is_some_and(|o| o.contains("unauthorized"))
        })?;

    // Another user's workspace: refused as if it did not exist, audited as forbidden.
    let out = burrow(&w.burrowd.url, &bob)?
        .args(["ping", WS, "--udp-bind", "127.0.0.1"])
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not_found: no workspace named"), "{err}");
    w.burrowd
        .wait_for_audit("for bob's attempt", Duration::from_secs(5), |r| {
            r["user"] == "bob"
                && r["outcome"]
                    .as_str()
                    .is_some_and(|o| o.contains("forbidden"))
        })?;

    // A port the agent does not allow: the connection is closed and the refusal is audited.
    let fwd = port_forward(w.dir.path(), &w.burrowd.url, &w.token, WS, 23, false)?;
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", fwd.port))?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut conn, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a refused stream must be closed");
    let mut fwd = fwd;
    fwd.proc
        .wait_for_log("port 23 is not allowed", Duration::from_secs(10))?;
    w.burrowd
        .wait_for_audit("for port 23", Duration::from_secs(20), |r| {
            r["port"] == 23
                && r["outcome"]
                    .as_str()
                    .is_some_and(|o| o.contains("not allowed"))
        })?;
    Ok(())
}

#[test]
fn agent_opens_no_listening_socket() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let w = world(Relay::Embedded, &[pg.port()])?;
    // While serving a live stream, too.
    let fwd = port_forward(w.dir.path(), &w.burrowd.url, &w.token, WS, pg.port(), false)?;
    assert_eq!(psql_through(&pg, fwd.port, "select 1")?, "1");
    let pid = w.agent.pid().expect("agent runs");
    assert_eq!(listening_sockets(pid)?, Vec::<u64>::new());
    Ok(())
}

#[test]
fn speedtest_measures_both_ways_against_the_agent_with_nothing_in_the_workspace()
-> anyhow::Result<()> {
    // The agent allows one port nobody listens on: the speed test needs none.
    let w = world(Relay::Embedded, &[1])?;
    let out = burrow(&w.burrowd.url, &w.token)?
        .args(["speedtest", WS, "--mib", "16", "--udp-bind", "127.0.0.1"])
        .output()?;
    assert_success(
        &out,
        &format!("burrow speedtest\nagent log:\n{}", w.agent.log_tail()),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "direct path",
        "round trip: ",
        "download: 16.0 MiB in ",
        "upload:   16.0 MiB in ",
        // Loopback carries the path MTU search's largest step: 16 000 bytes of SCTP, plus DTLS.
        "packets:  up to 160",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    assert_eq!(text.matches(", intact").count(), 2, "{text}");
    // Both streams are in the audit log, as port 0.
    w.burrowd
        .wait_for_audit("for the speed test", Duration::from_secs(10), |r| {
            r["port"] == 0 && r["outcome"] == "ok" && r["bytes_to_client"] == 16 << 20
        })?;
    w.burrowd
        .wait_for_audit("for the upload", Duration::from_secs(10), |r| {
            r["port"] == 0 && r["outcome"] == "ok" && r["bytes_to_workspace"] == (16 << 20) + 9
        })?;
    Ok(())
}
