//! The native suite: what is started, what is measured, in which order.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use burrow_e2e::burrow::{self as procs, Burrowd, PortForward, Relay};
use burrow_e2e::services::{Sshd, free_tcp_port};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::load;
use crate::report::{Group, Results, Row, Target, percentile};

/// How long one transfer may take before it is aborted and reported.
const TRANSFER_LIMIT: Duration = Duration::from_secs(120);

const RAW: &str = "raw TCP";
const DIRECT: &str = "Burrow direct";
const RELAY: &str = "Burrow relay (forced)";
const SSH: &str = "ssh -L";

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Rounds of each throughput and latency comparison.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// MiB per bulk transfer (and in total over the 100 streams).
    #[arg(long, default_value_t = 1024)]
    bulk_mib: u64,
    /// Concurrent streams in the fairness comparison.
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Measured round trips per round of the echo comparison.
    #[arg(long, default_value_t = 2000)]
    echoes: usize,
    /// Runs of the connection-setup measurement per path.
    #[arg(long, default_value_t = 20)]
    setups: usize,
    /// Idle agents connected to burrowd for its memory figure.
    #[arg(long, default_value_t = 1000)]
    idle_agents: usize,
}

/// One way to reach the sink and the echo server.
struct Path_ {
    name: &'static str,
    sink: u16,
    echo: u16,
}

/// Runs the whole suite.
pub fn run(o: &Options) -> anyhow::Result<Results> {
    let date = command_output(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]))?;
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let tmp = tempfile::tempdir().context("creating the work directory")?;
    let dir = tmp.path();

    let sink = load::start_sink()?;
    let echo = load::start_echo()?;
    progress("starting burrowd, agent, port-forwards, sshd");
    let burrowd = Burrowd::start(dir, Relay::Embedded)?;
    let user = burrowd.add_user("bench")?;
    let agent_token = burrowd.add_workspace("bench", "bench")?;
    let _agent = procs::start_agent(dir, &burrowd.url, &agent_token, &[sink, echo])?;
    let fwd = |remote, relay| forward(dir, &burrowd.url, &user, remote, relay);
    let (direct_sink, direct_echo) = (fwd(sink, false)?, fwd(echo, false)?);
    let (relay_sink, relay_echo) = (fwd(sink, true)?, fwd(echo, true)?);
    let sshd = Sshd::start()?;
    let ssh = SshForward::start(&sshd, &[sink, echo])?;

    let paths = [
        Path_ {
            name: RAW,
            sink,
            echo,
        },
        Path_ {
            name: DIRECT,
            sink: direct_sink.port,
            echo: direct_echo.port,
        },
        Path_ {
            name: RELAY,
            sink: relay_sink.port,
            echo: relay_echo.port,
        },
        Path_ {
            name: SSH,
            sink: ssh.ports[0],
            echo: ssh.ports[1],
        },
    ];

    let bulk = bulk(o, &paths);
    let (aggregate, fairness) = parallel(o, &paths);
    let (p50, p99) = echo_rtt(o, &paths);
    let setup = setup(o, dir, &burrowd, &user, &sshd, echo)?;
    drop(ssh);
    drop((direct_sink, direct_echo, relay_sink, relay_echo));
    let agent_mem = agent_memory(dir, &burrowd, &user, echo, "memory", &mut |_, _| {})?;
    drop(burrowd);
    let burrowd_mem = burrowd_memory(o, dir)?;

    let targets = targets(
        &bulk,
        &aggregate,
        &fairness,
        &setup,
        &agent_mem,
        &burrowd_mem,
        o,
    );
    let mut machine = machine();
    machine.insert(
        "load average (1, 5, 15 min) at start / end".into(),
        format!(
            "{} / {}",
            load_fields(&load_before),
            load_fields(&std::fs::read_to_string("/proc/loadavg").unwrap_or_default())
        ),
    );
    Ok(Results {
        suite: "native".into(),
        date,
        machine,
        versions: versions(),
        groups: vec![
            bulk,
            aggregate,
            fairness,
            p50,
            p99,
            setup,
            agent_mem,
            burrowd_mem,
        ],
        targets,
        notes: notes(o),
    })
}

fn progress(what: &str) {
    eprintln!("[burrow-bench] {what}");
}

fn forward(
    dir: &Path,
    url: &str,
    token: &str,
    remote: u16,
    relay: bool,
) -> anyhow::Result<PortForward> {
    let f = procs::port_forward(dir, url, token, "bench", remote, relay)?;
    let want = if relay { "(relay path" } else { "(direct path" };
    let text = f.proc.log_text();
    if !text.contains(want) {
        bail!("port-forward (force relay: {relay}) did not take the expected path:\n{text}");
    }
    Ok(f)
}

/// `ssh -N -L` forwarding one local port per remote port through sshd.
struct SshForward {
    child: Child,
    ports: Vec<u16>,
}

impl SshForward {
    fn start(sshd: &Sshd, remotes: &[u16]) -> anyhow::Result<Self> {
        let ports = remotes
            .iter()
            .map(|_| free_tcp_port())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut args = vec![
            "-N".to_owned(),
            "-o".into(),
            "ExitOnForwardFailure=yes".into(),
        ];
        for (local, remote) in ports.iter().zip(remotes) {
            args.push("-L".into());
            args.push(format!("127.0.0.1:{local}:127.0.0.1:{remote}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = sshd
            .ssh_cmd(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ssh -L")?;
        let me = Self { child, ports };
        for p in &me.ports {
            wait_connectable(*p, Duration::from_secs(30))?;
        }
        Ok(me)
    }
}

impl Drop for SshForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_connectable(port: u16, timeout: Duration) -> anyhow::Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => {
                return Err(e).with_context(|| format!("port {port} not listening"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// The paths in a different order each round, so none always runs first or last.
fn rotated(paths: &[Path_], round: usize) -> impl Iterator<Item = &Path_> {
    let n = paths.len();
    (0..n).map(move |i| &paths[(i + round) % n])
}

fn rows_for(paths: &[Path_]) -> Vec<Row> {
    paths
        .iter()
        .map(|p| Row {
            name: p.name.into(),
            samples: vec![],
            failures: vec![],
        })
        .collect()
}

fn row_mut<'a>(rows: &'a mut [Row], name: &str) -> &'a mut Row {
    let i = rows.iter().position(|r| r.name == name).unwrap_or(0);
    &mut rows[i]
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn bulk(o: &Options, paths: &[Path_]) -> Group {
    let bytes = o.bulk_mib << 20;
    let mut rows = rows_for(paths);
    for round in 0..o.rounds {
        for p in rotated(paths, round) {
            progress(&format!(
                "bulk round {}/{}: {}",
                round + 1,
                o.rounds,
                p.name
            ));
            let row = row_mut(&mut rows, p.name);
            match load::upload(p.sink, bytes, TRANSFER_LIMIT) {
                Ok(d) => row.samples.push(mb_per_s(bytes, d)),
                Err(e) => row.failures.push(format!("{e:#}")),
            }
        }
    }
    Group {
        id: "bulk".into(),
        title: format!(
            "Bulk throughput, one stream, {} MiB upload into a sink",
            o.bulk_mib
        ),
        unit: "MB/s".into(),
        compare: vec![RAW.into(), SSH.into()],
        plot: Some("throughput".into()),
        rows,
    }
}

fn parallel(o: &Options, paths: &[Path_]) -> (Group, Group) {
    let each = (o.bulk_mib << 20) / o.streams as u64;
    let mut agg = rows_for(paths);
    let mut fair: Vec<Row> = paths
        .iter()
        .flat_map(|p| {
            ["slowest ÷ mean", "slowest ÷ fastest"].map(|what| Row {
                name: format!("{}: {what}", p.name),
                samples: vec![],
                failures: vec![],
            })
        })
        .collect();
    for round in 0..o.rounds {
        for p in rotated(paths, round) {
            progress(&format!(
                "{} streams round {}/{}: {}",
                o.streams,
                round + 1,
                o.rounds,
                p.name
            ));
            match load::parallel_upload(p.sink, o.streams, each, TRANSFER_LIMIT) {
                Ok(r) => {
                    row_mut(&mut agg, p.name)
                        .samples
                        .push(mb_per_s(each * o.streams as u64, r.total));
                    let rates: Vec<f64> = r.per_stream.iter().map(|d| mb_per_s(each, *d)).collect();
                    let slowest = rates.iter().copied().fold(f64::INFINITY, f64::min);
                    let fastest = rates.iter().copied().fold(0.0, f64::max);
                    let mean = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
                    row_mut(&mut fair, &format!("{}: slowest ÷ mean", p.name))
                        .samples
                        .push(100.0 * slowest / mean);
                    row_mut(&mut fair, &format!("{}: slowest ÷ fastest", p.name))
                        .samples
                        .push(100.0 * slowest / fastest);
                }
                Err(e) => row_mut(&mut agg, p.name).failures.push(format!("{e:#}")),
            }
        }
    }
    (
        Group {
            id: "streams".into(),
            title: format!(
                "{} concurrent streams, aggregate throughput ({} MiB each, all started at once)",
                o.streams,
                each >> 20
            ),
            unit: "MB/s".into(),
            compare: vec![RAW.into(), SSH.into()],
            plot: Some("throughput".into()),
            rows: agg,
        },
        Group {
            id: "fairness".into(),
            title: format!(
                "{} concurrent streams, fairness (per-stream throughput, each stream timed from the common start)",
                o.streams
            ),
            unit: "%".into(),
            compare: vec![],
            plot: None,
            rows: fair,
        },
    )
}

fn echo_rtt(o: &Options, paths: &[Path_]) -> (Group, Group) {
    let mut p50 = rows_for(paths);
    let mut p99 = rows_for(paths);
    for round in 0..o.rounds {
        for p in rotated(paths, round) {
            progress(&format!(
                "echo round {}/{}: {}",
                round + 1,
                o.rounds,
                p.name
            ));
            match load::echo_round_trips(p.echo, 64, 200, o.echoes, Duration::from_secs(60)) {
                Ok(rtts) => {
                    let us: Vec<f64> = rtts.iter().map(|d| d.as_secs_f64() * 1e6).collect();
                    if let (Some(a), Some(b)) = (percentile(&us, 50.0), percentile(&us, 99.0)) {
                        row_mut(&mut p50, p.name).samples.push(a);
                        row_mut(&mut p99, p.name).samples.push(b);
                    }
                }
                Err(e) => row_mut(&mut p50, p.name).failures.push(format!("{e:#}")),
            }
        }
    }
    let group = |id: &str, pct: &str, rows| Group {
        id: id.into(),
        title: format!(
            "64-byte echo round trip, {pct} over {} round trips per round (one connection)",
            o.echoes
        ),
        unit: "µs".into(),
        compare: vec![RAW.into(), SSH.into()],
        plot: Some("latency".into()),
        rows,
    };
    (group("echo p50", "p50", p50), group("echo p99", "p99", p99))
}

/// From starting the forwarding process to the first byte echoed through it.
fn setup(
    o: &Options,
    dir: &Path,
    burrowd: &Burrowd,
    user: &str,
    sshd: &Sshd,
    echo: u16,
) -> anyhow::Result<Group> {
    let names = [
        format!("{DIRECT}: start → first echo"),
        format!("{DIRECT}: tunnel setup the CLI reports"),
        format!("{RELAY}: start → first echo"),
        format!("{SSH}: start → first echo"),
    ];
    let mut rows: Vec<Row> = names
        .iter()
        .map(|n| Row {
            name: n.clone(),
            samples: vec![],
            failures: vec![],
        })
        .collect();
    for run in 0..o.setups {
        progress(&format!("connection setup run {}/{}", run + 1, o.setups));
        for which in 0..3 {
            match which {
                0 | 1 => {
                    let relay = which == 1;
                    match burrow_setup(dir, &burrowd.url, user, echo, relay) {
                        Ok((total, reported)) => {
                            let i = if relay { 2 } else { 0 };
                            rows[i].samples.push(total.as_secs_f64() * 1e3);
                            if !relay && let Some(r) = reported {
                                rows[1].samples.push(r);
                            }
                        }
                        Err(e) => rows[if relay { 2 } else { 0 }]
                            .failures
                            .push(format!("{e:#}")),
                    }
                }
                _ => match ssh_setup(sshd, echo) {
                    Ok(d) => rows[3].samples.push(d.as_secs_f64() * 1e3),
                    Err(e) => rows[3].failures.push(format!("{e:#}")),
                },
            }
        }
    }
    Ok(Group {
        id: "setup".into(),
        title: format!(
            "Connection setup, from starting the forwarding process to the first byte echoed ({} runs each)",
            o.setups
        ),
        unit: "ms".into(),
        compare: vec![format!("{SSH}: start → first echo")],
        plot: None,
        rows,
    })
}

/// A child process that is interrupted (SIGINT, as Ctrl-C), then killed, on drop.
struct Interrupted(Child);

impl Drop for Interrupted {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn echo_one_byte(mut conn: TcpStream) -> anyhow::Result<()> {
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    conn.write_all(b"x")?;
    let mut b = [0u8; 1];
    conn.read_exact(&mut b).context("reading the echo")?;
    Ok(())
}

/// Returns the time to the first echo and the setup time the CLI printed.
fn burrow_setup(
    dir: &Path,
    url: &str,
    token: &str,
    echo: u16,
    relay: bool,
) -> anyhow::Result<(Duration, Option<f64>)> {
    let mut cmd = procs::burrow(url, token)?;
    cmd.args(["port-forward", "bench", &format!("0:{echo}")])
        .args(["--udp-bind", "127.0.0.1"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if relay {
        cmd.arg("--force-relay");
    }
    let start = Instant::now();
    let mut child = cmd.spawn().context("starting burrow port-forward")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let child = Interrupted(child);
    let lines = procs::lines_of(stderr);
    let deadline = start + Duration::from_secs(40);
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .context("port-forward did not print its port")?;
        if line.contains("Forwarding ") {
            break line;
        }
    };
    let addr: SocketAddr = line
        .split("Forwarding ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no address in {line:?}"))?;
    echo_one_byte(TcpStream::connect(addr).context("connecting to the forward")?)?;
    let total = start.elapsed();
    let reported = line
        .split("set up in ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok());
    drop(child);
    Ok((total, reported))
}

fn ssh_setup(sshd: &Sshd, echo: u16) -> anyhow::Result<Duration> {
    let local = free_tcp_port()?;
    let forward = format!("127.0.0.1:{local}:127.0.0.1:{echo}");
    let start = Instant::now();
    let child = sshd
        .ssh_cmd(&["-N", "-o", "ExitOnForwardFailure=yes", "-L", &forward])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting ssh -L")?;
    let _child = Interrupted(child);
    echo_one_byte(wait_connectable(local, Duration::from_secs(30))?)?;
    Ok(start.elapsed())
}

/// Resident set size of `pid` in MB (10^6 bytes).
fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024.0 / 1e6)
}

fn one(name: &str, value: f64) -> Row {
    Row {
        name: name.into(),
        samples: vec![value],
        failures: vec![],
    }
}

const AGENT_IDLE: &str = "agent, registered, no tunnel";
const AGENT_TUNNEL: &str = "agent, one tunnel open, no stream";
const AGENT_STREAMS: &str = "agent, 100 streams open";
const AGENT_CLOSED: &str = "agent, 5 s after the streams closed";

/// Runs only the agent-memory measurement, `repeat` times with a fresh agent each, and
/// prints each run's rows: for trying a change to that one figure without the whole suite.
pub fn probe_agent_memory(repeat: usize) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir().context("creating the work directory")?;
    let dir = tmp.path();
    let echo = load::start_echo()?;
    let burrowd = Burrowd::start(dir, Relay::Embedded)?;
    let user = burrowd.add_user("bench")?;
    for run in 0..repeat {
        let mut split = |at: &str, pid: u32| {
            eprintln!(
                "  {at}: {}",
                rss_split(pid).unwrap_or_else(|e| e.to_string())
            );
        };
        let workspace = format!("memory-{run}");
        let group = agent_memory(dir, &burrowd, &user, echo, &workspace, &mut split)?;
        let rows: Vec<String> = group
            .rows
            .iter()
            .map(|r| {
                format!(
                    "{}: {:.1}",
                    r.name,
                    r.samples.first().copied().unwrap_or(0.0)
                )
            })
            .collect();
        eprintln!("run {run}: {}", rows.join(" | "));
    }
    Ok(())
}

/// The resident set's parts (anonymous, file-backed, shared memory) from `/proc/PID/status`.
fn rss_split(pid: u32) -> anyhow::Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let parts: Vec<&str> = status
        .lines()
        .filter(|l| {
            ["RssAnon:", "RssFile:", "RssShmem:"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| l.trim())
        .collect();
    Ok(parts.join(", "))
}

/// A fresh agent's memory: idle, with a tunnel, with 100 open streams, after they close.
/// `detail` is called with each measurement's label and the agent's pid, for a closer look.
fn agent_memory(
    dir: &Path,
    burrowd: &Burrowd,
    user: &str,
    echo: u16,
    workspace: &str,
    detail: &mut dyn FnMut(&str, u32),
) -> anyhow::Result<Group> {
    progress("agent memory");
    let token = burrowd.add_workspace(workspace, "bench")?;
    let agent = procs::start_agent(dir, &burrowd.url, &token, &[echo])?;
    let pid = agent.pid().context("agent exited")?;
    let settle = || std::thread::sleep(Duration::from_secs(2));
    settle();
    let idle = rss_mb(pid)?;
    detail(AGENT_IDLE, pid);
    let fwd = procs::port_forward(dir, &burrowd.url, user, workspace, echo, false)?;
    echo_one_byte(TcpStream::connect(("127.0.0.1", fwd.port))?)?;
    settle();
    let tunnel = rss_mb(pid)?;
    detail(AGENT_TUNNEL, pid);
    // 256 KiB each way on every stream: every stream's buffers have been used.
    let streams = load::open_echo_streams(fwd.port, 100, 256 * 1024)?;
    settle();
    let open = rss_mb(pid)?;
    detail(AGENT_STREAMS, pid);
    drop(streams);
    std::thread::sleep(Duration::from_secs(5));
    let closed = rss_mb(pid)?;
    detail(AGENT_CLOSED, pid);
    Ok(Group {
        id: "agent memory".into(),
        title: "burrow-agent resident memory (VmRSS)".into(),
        unit: "MB".into(),
        compare: vec![AGENT_TUNNEL.into()],
        plot: None,
        rows: vec![
            one(AGENT_IDLE, idle),
            one(AGENT_TUNNEL, tunnel),
            one(AGENT_STREAMS, open),
            one(AGENT_CLOSED, closed),
        ],
    })
}

const BURROWD_BEFORE: &str = "burrowd, no agent connected";
const BURROWD_AGENTS: &str = "burrowd, idle agents connected";

/// A fresh burrowd's memory before and with `o.idle_agents` idle agents connected.
fn burrowd_memory(o: &Options, dir: &Path) -> anyhow::Result<Group> {
    let dir = dir.join("burrowd-memory");
    std::fs::create_dir_all(&dir)?;
    let mut burrowd = Burrowd::start(&dir, Relay::Embedded)?;
    burrowd.add_user("owner")?;
    progress(&format!("creating {} workspaces", o.idle_agents));
    let tokens = (0..o.idle_agents)
        .map(|i| burrowd.add_workspace(&format!("idle-{i}"), "owner"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pid = burrowd.proc().pid().context("burrowd exited")?;
    std::thread::sleep(Duration::from_secs(2));
    let before = rss_mb(pid)?;
    progress(&format!("connecting {} idle agents", o.idle_agents));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let url = burrowd.url.clone();
    rt.block_on(crate::agents::hold_idle_agents(&url, &tokens, async {
        // Registered; let burrowd settle (allocator, first pings), then read its RSS.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let _ = tx.send(rss_mb(pid));
    }))?;
    let with = rx.recv().context("no measurement")??;
    Ok(Group {
        id: "burrowd memory".into(),
        title: format!(
            "burrowd resident memory (VmRSS), {} workspaces, {} idle agents",
            o.idle_agents, o.idle_agents
        ),
        unit: "MB".into(),
        compare: vec![BURROWD_BEFORE.into()],
        plot: None,
        rows: vec![one(BURROWD_BEFORE, before), one(BURROWD_AGENTS, with)],
    })
}

#[allow(clippy::too_many_arguments)]
fn targets(
    bulk: &Group,
    agg: &Group,
    fair: &Group,
    setup: &Group,
    agent: &Group,
    burrowd: &Group,
    o: &Options,
) -> Vec<Target> {
    let med = |g: &Group, name: &str| g.row(name).and_then(Row::median);
    let mut t = Vec::new();
    let fmt = |v: Option<f64>, unit: &str| {
        v.map(|v| format!("{v:.0} {unit}"))
            .unwrap_or_else(|| "not measured".into())
    };
    let direct = med(bulk, DIRECT);
    t.push(Target {
        what: "Burrow direct, one stream".into(),
        target: "≥ 1 Gbit/s (125 MB/s)".into(),
        measured: format!(
            "{} ({:.2} Gbit/s)",
            fmt(direct, "MB/s"),
            direct.unwrap_or(0.0) * 8.0 / 1e3
        ),
        met: direct.is_some_and(|v| v >= 125.0),
    });
    let ssh = med(bulk, SSH);
    let ratio = direct.zip(ssh).map(|(a, b)| a / b);
    t.push(Target {
        what: "Burrow direct ÷ ssh -L, one stream".into(),
        target: "≥ 0.5 (aim: > 1)".into(),
        measured: ratio.map(|r| format!("{r:.2}")).unwrap_or_default(),
        met: ratio.is_some_and(|r| r >= 0.5),
    });
    let aggregate = med(agg, DIRECT);
    t.push(Target {
        what: format!("Burrow direct, {} streams aggregate", o.streams),
        target: "≥ the one-stream figure".into(),
        measured: format!("{} vs {}", fmt(aggregate, "MB/s"), fmt(direct, "MB/s")),
        met: aggregate.zip(direct).is_some_and(|(a, d)| a >= d),
    });
    let slowest = med(fair, &format!("{DIRECT}: slowest ÷ mean"));
    t.push(Target {
        what: format!("Burrow direct, {} streams: slowest stream", o.streams),
        target: "≥ 50 % of the mean".into(),
        measured: fmt(slowest, "%"),
        met: slowest.is_some_and(|v| v >= 50.0),
    });
    let setup_ms = med(setup, &format!("{DIRECT}: start → first echo"));
    t.push(Target {
        what: "Connection setup, `burrow port-forward` start → first byte echoed".into(),
        target: "≤ 150 ms median".into(),
        measured: fmt(setup_ms, "ms"),
        met: setup_ms.is_some_and(|v| v <= 150.0),
    });
    let open = med(agent, AGENT_STREAMS);
    t.push(Target {
        what: "Agent RSS with 100 open streams".into(),
        target: "≤ 30 MB".into(),
        measured: open.map(|v| format!("{v:.1} MB")).unwrap_or_default(),
        met: open.is_some_and(|v| v <= 30.0),
    });
    let before = med(agent, AGENT_TUNNEL);
    let closed = med(agent, AGENT_CLOSED);
    t.push(Target {
        what: "Agent RSS after the streams close".into(),
        target: "within 10 % of before they opened".into(),
        measured: match (closed, before) {
            (Some(c), Some(b)) => {
                format!("{c:.1} MB vs {b:.1} MB ({:+.0} %)", 100.0 * (c / b - 1.0))
            }
            _ => String::new(),
        },
        met: closed.zip(before).is_some_and(|(c, b)| c <= b * 1.1),
    });
    let per_agent = med(burrowd, BURROWD_AGENTS)
        .zip(med(burrowd, BURROWD_BEFORE))
        .map(|(w, b)| (w - b) * 1e6 / o.idle_agents as f64 / 1e3);
    t.push(Target {
        what: format!("burrowd per idle agent ({} connected)", o.idle_agents),
        target: "≤ 100 KB".into(),
        measured: per_agent.map(|v| format!("{v:.1} KB")).unwrap_or_default(),
        met: per_agent.is_some_and(|v| v <= 100.0),
    });
    t
}

fn notes(o: &Options) -> Vec<String> {
    vec![
        format!(
            "Throughput and echo comparisons: {} rounds; in each round every path runs once, \
             in an order rotated from round to round. Transfers are uploads from the driver \
             through the path into a sink that reports the byte count it received; a transfer \
             counts from connect to that count and is aborted after {} s.",
            o.rounds,
            TRANSFER_LIMIT.as_secs()
        ),
        "Paths: raw TCP straight to the sink; `burrow port-forward` with the direct (host \
         candidate) path; `burrow port-forward --force-relay` through burrowd's embedded TURN \
         relay; OpenSSH `ssh -N -L` through a local sshd (default ciphers). All on 127.0.0.1."
            .into(),
        "Connection setup runs alternate the three paths. Burrow's figure includes starting \
         the CLI process, the session request, signaling, ICE, DTLS, SCTP, the data channel \
         and the first stream's OPEN; ssh's includes key exchange and authentication."
            .into(),
        format!(
            "burrowd's idle agents are WebSocket connections made by the driver that speak the \
             agent protocol (own agent token each, `hello`, `registered`, answering pings); a \
             thousand real agent processes would measure this machine rather than burrowd. The \
             per-agent figure is (RSS with {n} agents − RSS before) ÷ {n}, with the {n} \
             workspaces created before the first reading.",
            n = o.idle_agents
        ),
        "The machine is shared with other work (see the load average): absolute numbers move \
         between runs; the ratios, measured side by side, are the meaningful part."
            .into(),
    ]
}

fn command_output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if text.is_empty() {
        text = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    }
    Ok(text)
}

fn load_fields(loadavg: &str) -> String {
    loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(", ")
}

fn machine() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if let Some(model) = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
    {
        m.insert("CPU".into(), model);
    }
    if let Ok(n) = std::thread::available_parallelism() {
        m.insert("cores available".into(), n.to_string());
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    if let Some(kb) = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
    {
        m.insert("memory".into(), format!("{:.1} GiB", kb / 1024.0 / 1024.0));
    }
    if let Ok(k) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        m.insert("kernel".into(), format!("Linux {}", k.trim()));
    }
    m
}

fn versions() -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    let rev = command_output(Command::new("git").args(["rev-parse", "--short", "HEAD"]))
        .unwrap_or_default();
    let dirty =
        command_output(Command::new("git").args(["status", "--porcelain", "--untracked-files=no"]))
            .map(|s| !s.is_empty())
            .unwrap_or(false);
    v.insert(
        "Burrow".into(),
        format!(
            "{} (git {rev}{}), release build; webrtc-rs 0.21.1",
            env!("CARGO_PKG_VERSION"),
            if dirty { ", with local changes" } else { "" }
        ),
    );
    if let Ok(ssh) = command_output(Command::new("ssh").arg("-V")) {
        v.insert("OpenSSH".into(), ssh);
    }
    if let Ok(rustc) = command_output(Command::new("rustc").arg("-V")) {
        v.insert("Rust".into(), rustc);
    }
    v
}
