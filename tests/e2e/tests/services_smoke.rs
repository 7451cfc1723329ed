//! Proves the service harness: each service starts, works when used directly (no tunnel), and
//! leaves no process behind when dropped.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use burrow_e2e::services::{
    Coturn, Postgres, Sshd, free_tcp_port, free_udp_port, process_alive, process_tree_pids,
    sha256_file, stun_binding, wait_for_tcp, write_random_file, write_random_file_seeded,
};

fn timed<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> T {
    let start = Instant::now();
    let value = f().unwrap_or_else(|e| panic!("{what}: {e:?}"));
    eprintln!("{what} took {:?}", start.elapsed());
    value
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Waits until the process tree rooted at `root` has at least `min` live processes.
fn wait_for_tree(root: u32, min: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = process_tree_pids(root);
        if pids.len() >= min || Instant::now() > deadline {
            return pids;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn assert_all_gone(pids: &[u32]) {
    let alive: Vec<u32> = pids.iter().copied().filter(|&p| process_alive(p)).collect();
    assert!(
        alive.is_empty(),
        "processes left behind: {alive:?} (of {pids:?})"
    );
}

fn finish(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn postgres_answers_select_1() {
    let pg = timed("Postgres::start", Postgres::start);
    let out = stdout_of(pg.psql_cmd(pg.port()).args(["-tAc", "select 1"]));
    assert_eq!(out.trim(), "1");
    // Only loopback.
    let out = stdout_of(
        pg.psql_cmd(pg.port())
            .args(["-tAc", "show listen_addresses"]),
    );
    assert_eq!(out.trim(), "127.0.0.1");
}

#[test]
fn pgbench_runs_against_postgres() {
    let pg = timed("Postgres::start", Postgres::start);
    stdout_of(pg.pgbench_cmd(pg.port()).args(["-i", "-q", "-s", "1"]));
    let out = stdout_of(
        pg.pgbench_cmd(pg.port())
            .args(["-c", "2", "-t", "50", "-n"]),
    );
    assert!(
        out.contains("number of transactions actually processed: 100"),
        "{out}"
    );
}

#[test]
fn postgres_drop_leaves_no_process() {
    let pg = timed("Postgres::start", Postgres::start);
    // A connected backend must go too.
    let held = pg
        .psql_cmd(pg.port())
        .args(["-c", "select pg_sleep(600)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // postmaster + checkpointer, bgwriter, walwriter, autovacuum, logical launcher + backend
    let pids = wait_for_tree(pg.pid(), 6);
    assert!(pids.len() >= 6, "unexpected process tree {pids:?}");
    // (autovacuum workers come and go: compare loosely)
    let owned = pg.owned_pids();
    assert!(owned.contains(&pg.pid()) && owned.len() >= 5, "{owned:?}");
    let pids: Vec<u32> = pids.into_iter().chain(owned).collect();
    let dir = pg.dir().to_owned();
    let start = Instant::now();
    drop(pg);
    eprintln!("Postgres drop took {:?}", start.elapsed());
    assert_all_gone(&pids);
    assert!(!dir.exists(), "temp dir {} left behind", dir.display());
    finish(held);
}

#[test]
fn sshd_runs_echo() {
    let sshd = timed("Sshd::start", Sshd::start);
    let out = stdout_of(sshd.ssh_cmd(&[]).arg("echo hi"));
    assert_eq!(out, "hi\n");
}

#[test]
fn scp_copies_a_file() {
    let sshd = timed("Sshd::start", Sshd::start);
    let local = sshd.dir().join("local.bin");
    let remote = sshd.dir().join("remote.bin");
    let digest = write_random_file(&local, 3 << 20).unwrap();
    stdout_of(
        sshd.scp_cmd(&["-q"])
            .arg(&local)
            .arg(Sshd::scp_target(&remote)),
    );
    assert_eq!(sha256_file(&remote).unwrap(), digest);
}

#[test]
fn ssh_through_proxy_command() {
    // The shape tunnel tests use: a ProxyCommand carrying the connection (here `ssh -W`).
    let sshd = timed("Sshd::start", Sshd::start);
    let key = sshd.client_key().display().to_string();
    let proxy = format!(
        "ProxyCommand=ssh -F /dev/null -i {key} -o StrictHostKeyChecking=no \
         -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -p {} -W %h:%p root@127.0.0.1",
        sshd.port()
    );
    let out = stdout_of(sshd.ssh_cmd(&["-o", &proxy]).arg("echo via-proxy"));
    assert_eq!(out, "via-proxy\n");
}

#[test]
fn ssh_and_scp_extra_args_override_the_port() {
    // ssh keeps the first value of an option: `-p` in extra_args must beat sshd's own port.
    let sshd = timed("Sshd::start", Sshd::start);
    let closed = free_tcp_port().unwrap().to_string();
    for mut cmd in [
        sshd.ssh_cmd(&["-p", &closed]),
        sshd.ssh_cmd(&["-o", &format!("Port={closed}")]),
        sshd.ssh_cmd_port(closed.parse().unwrap(), &[]),
    ] {
        let out = cmd.arg("echo hi").output().unwrap();
        assert!(!out.status.success(), "{cmd:?} reached sshd");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&closed) && err.contains("refused"), "{err}");
    }
    let local = sshd.dir().join("f");
    std::fs::write(&local, "x").unwrap();
    let out = sshd
        .scp_cmd(&["-P", &closed])
        .arg(&local)
        .arg(Sshd::scp_target(sshd.dir().join("g")))
        .output()
        .unwrap();
    assert!(!out.status.success(), "scp reached sshd");
    // And the default still reaches sshd's own port.
    assert_eq!(stdout_of(sshd.ssh_cmd(&[]).arg("echo hi")), "hi\n");
}

#[test]
fn sshd_drop_leaves_no_process() {
    let sshd = timed("Sshd::start", Sshd::start);
    // A command left running in the background after its ssh client is gone (sshd leaves it
    // running, orphaned: no longer in sshd's process tree) must go too.
    stdout_of(
        sshd.ssh_cmd(&[])
            .arg("sleep 600 </dev/null >/dev/null 2>&1 & echo $!"),
    );
    // An open session must go too (sshd's per-connection processes live in their own sessions).
    let held = sshd
        .ssh_cmd(&[])
        .arg("sleep 601")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // listener + connection handler + command
    let tree = wait_for_tree(sshd.pid(), 3);
    assert!(tree.len() >= 3, "unexpected process tree {tree:?}");
    let owned = sshd.owned_pids();
    assert!(
        tree.iter().all(|p| owned.contains(p)) && owned.len() > tree.len(),
        "owned {owned:?} should hold the tree {tree:?} and the orphaned sleep"
    );
    let start = Instant::now();
    drop(sshd);
    eprintln!("Sshd drop took {:?}", start.elapsed());
    assert_all_gone(&owned);
    finish(held);
}

#[test]
fn coturn_answers_stun_binding() {
    let turn = timed("Coturn::start", || Coturn::start("s3cret"));
    assert_eq!(turn.url(), format!("turn:127.0.0.1:{}", turn.port()));
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mapped = stun_binding(&socket, turn.addr(), Duration::from_secs(5)).unwrap();
    assert_eq!(mapped, socket.local_addr().unwrap());
    let (lo, hi) = turn.relay_ports();
    assert!(lo < hi && hi - lo < 100, "relay range {lo}-{hi}");
}

#[test]
fn coturn_requires_credentials_in_realm_burrow() {
    let turn = timed("Coturn::start", || Coturn::start("s3cret"));
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Allocate request with REQUESTED-TRANSPORT=UDP and no credentials.
    let mut req = Vec::new();
    req.extend_from_slice(&0x0003u16.to_be_bytes());
    req.extend_from_slice(&8u16.to_be_bytes());
    req.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    req.extend_from_slice(b"burrow-txid1");
    req.extend_from_slice(&[0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0]);
    socket.send_to(&req, turn.addr()).unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    let msg = &buf[..n];
    assert_eq!(
        u16::from_be_bytes([msg[0], msg[1]]),
        0x0113,
        "Allocate error response"
    );
    assert_eq!(&msg[8..20], b"burrow-txid1");
    let mut attrs = &msg[20..];
    let (mut code, mut realm) = (None, None);
    while attrs.len() >= 4 {
        let t = u16::from_be_bytes([attrs[0], attrs[1]]);
        let l = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let v = &attrs[4..4 + l];
        match t {
            0x0009 => code = Some(u16::from(v[2]) * 100 + u16::from(v[3])),
            0x0014 => realm = Some(String::from_utf8_lossy(v).into_owned()),
            _ => {}
        }
        attrs = &attrs[(4 + l).div_ceil(4) * 4..];
    }
    assert_eq!(code, Some(401));
    assert_eq!(realm.as_deref(), Some("burrow"));
}

#[test]
fn coturn_drop_leaves_no_process() {
    let turn = timed("Coturn::start", || Coturn::start("s3cret"));
    let pids = process_tree_pids(turn.pid());
    assert_eq!(pids, turn.owned_pids());
    let addr = turn.addr();
    let start = Instant::now();
    drop(turn);
    eprintln!("Coturn drop took {:?}", start.elapsed());
    assert_all_gone(&pids);
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    assert!(stun_binding(&socket, addr, Duration::from_millis(300)).is_err());
}

#[test]
fn services_start_side_by_side() {
    let (pg, sshd, turn) = thread::scope(|s| {
        let pg = s.spawn(Postgres::start);
        let sshd = s.spawn(Sshd::start);
        let turn = s.spawn(|| Coturn::start("x"));
        (
            pg.join().unwrap().unwrap(),
            sshd.join().unwrap().unwrap(),
            turn.join().unwrap().unwrap(),
        )
    });
    let ports = [pg.port(), sshd.port(), turn.port()];
    assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
}

#[test]
fn random_files_are_deterministic_and_fast() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let start = Instant::now();
    let digest = write_random_file(&a, 100 << 20).unwrap();
    let took = start.elapsed();
    eprintln!("write_random_file(100 MiB) took {took:?}");
    assert_eq!(std::fs::metadata(&a).unwrap().len(), 100 << 20);
    assert_eq!(sha256_file(&a).unwrap(), digest);
    assert!(took < Duration::from_secs(5), "too slow: {took:?}");

    let b = dir.path().join("b");
    assert_eq!(write_random_file(&b, 100 << 20).unwrap(), digest);
    let c = dir.path().join("c");
    assert_ne!(write_random_file_seeded(&c, 100 << 20, 7).unwrap(), digest);
    // Odd sizes, and the empty file.
    let d = dir.path().join("d");
    let dd = write_random_file(&d, 12_345).unwrap();
    assert_eq!(std::fs::metadata(&d).unwrap().len(), 12_345);
    assert_eq!(sha256_file(&d).unwrap(), dd);
    let e = dir.path().join("e");
    assert_eq!(
        write_random_file(&e, 0).unwrap(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn ports_and_wait_for_tcp() {
    let a = free_tcp_port().unwrap();
    let b = free_tcp_port().unwrap();
    let u = free_udp_port().unwrap();
    assert_ne!(a, b);
    assert_ne!(a, u);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, a));
    assert!(wait_for_tcp(addr, Duration::from_millis(200)).is_err());
    let listener = TcpListener::bind(addr).unwrap();
    wait_for_tcp(addr, Duration::from_secs(2)).unwrap();
    drop(listener);
}
