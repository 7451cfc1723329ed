//! Burrow's own processes for end-to-end tests: burrowd, burrow-agent and the burrow CLI,
//! started from the workspace's built binaries on loopback and killed on drop.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::services::{free_tcp_port, free_udp_port, wait_for_tcp};

/// Directory of the built `burrowd`, `burrow-agent` and `burrow` binaries: `BURROW_BIN_DIR`,
/// or the profile directory this test binary was built into.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BURROW_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("test binary lives in target/<profile>/deps")
}

/// Path of one of Burrow's binaries; fails clearly when it was not built.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.exists() {
        bail!(
            "{} not found: build the binaries first (`cargo build --workspace --bins`)",
            path.display()
        );
    }
    Ok(path)
}

/// A child process killed (and reaped) on drop, with its output in a log file.
pub struct Proc {
    child: Option<Child>,
    name: String,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> anyhow::Result<Self> {
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("cloning log handle")?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            child: Some(child),
            name: name.to_owned(),
            log,
        })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last lines the process wrote.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Everything the process wrote.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it has exited on its own.
    pub fn exited(&mut self) -> bool {
        matches!(
            self.child.as_mut().map(Child::try_wait),
            Some(Ok(Some(_))) | None
        )
    }

    /// Waits up to `timeout` until `needle` appears in the log.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return Ok(());
            }
            if self.exited() {
                bail!(
                    "{} exited before logging {needle:?}:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{} did not log {needle:?} within {timeout:?}:\n{}",
            self.name,
            self.log_tail()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a test wants burrowd's relay.
#[derive(Clone, Debug)]
pub enum Relay {
    /// The embedded STUN/TURN relay on a free loopback UDP port (loopback peers allowed).
    Embedded,
    /// An external TURN server (coturn) with a shared secret.
    External {
        /// `turn:HOST:PORT`.
        url: String,
        /// coturn's `static-auth-secret`.
        secret: String,
    },
}

/// A running burrowd with its data directory.
pub struct Burrowd {
    proc: Proc,
    /// Base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    http_port: u16,
    relay_port: u16,
    relay: Relay,
    data_dir: PathBuf,
}

impl Burrowd {
    /// Starts burrowd with its data in `dir` and waits until it serves.
    pub fn start(dir: &Path, relay: Relay) -> anyhow::Result<Self> {
        let http_port = free_tcp_port()?;
        let relay_port = free_udp_port()?;
        let data_dir = dir.join("burrowd-data");
        std::fs::create_dir_all(&data_dir)?;
        let mut me = Self {
            proc: Self::spawn(dir, &data_dir, http_port, relay_port, &relay)?,
            url: format!("http://127.0.0.1:{http_port}"),
            http_port,
            relay_port,
            relay,
            data_dir,
        };
        me.wait_ready()?;
        Ok(me)
    }

    fn spawn(
        dir: &Path,
        data_dir: &Path,
        http_port: u16,
        relay_port: u16,
        relay: &Relay,
    ) -> anyhow::Result<Proc> {
        let mut cmd = Command::new(bin("burrowd")?);
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("--data-dir")
            .arg(data_dir);
        match relay {
            Relay::Embedded => {
                cmd.args(["--relay", "embedded", "--relay-listen"])
                    .arg(format!("127.0.0.1:{relay_port}"))
                    .arg("--relay-danger-allow-private-peers");
            }
            Relay::External { url, secret } => {
                cmd.args([
                    "--relay",
                    "none",
                    "--turn-url",
                    url,
                    "--turn-secret",
                    secret,
                ]);
            }
        }
        cmd.env("RUST_LOG", "info,burrow_server=debug");
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        Proc::spawn("burrowd", cmd, dir.join(format!("burrowd-{n}.log")))
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.http_port).parse()?;
        wait_for_tcp(addr, Duration::from_secs(30))
            .with_context(|| format!("burrowd did not start:\n{}", self.proc.log_tail()))
    }

    /// Kills burrowd abruptly (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts burrowd again on the same ports and data.
    pub fn restart(&mut self, dir: &Path) -> anyhow::Result<()> {
        self.proc.kill();
        self.proc = Self::spawn(
            dir,
            &self.data_dir,
            self.http_port,
            self.relay_port,
            &self.relay,
        )?;
        self.wait_ready()
    }

    /// The process, for its log.
    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(bin("burrowd")?)
            .arg("admin")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .output()
            .context("running burrowd admin")?;
        if !out.status.success() {
            bail!(
                "burrowd admin {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Adds a user and returns its API token.
    pub fn add_user(&self, name: &str) -> anyhow::Result<String> {
        self.admin(&["user", "add", name])
    }

    /// Adds a workspace owned by `owner` and returns its agent token.
    pub fn add_workspace(&self, name: &str, owner: &str) -> anyhow::Result<String> {
        self.admin(&["workspace", "add", name, "--owner", owner])
    }

    /// The audit log as JSON rows.
    pub fn audit(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let text = self.admin(&["audit", "--json"])?;
        let rows: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("audit output: {text}"))?;
        Ok(rows.as_array().cloned().unwrap_or_default())
    }

    /// Waits until the audit log has a row for which `pred` holds.
    pub fn wait_for_audit(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let rows = self.audit()?;
            if let Some(row) = rows.iter().find(|r| pred(r)) {
                return Ok(row.clone());
            }
            if Instant::now() > deadline {
                bail!("no audit row {what} within {timeout:?}; rows: {rows:#?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Starts `burrow-agent` for a workspace, serving `ports`, and waits until it registered.
pub fn start_agent(dir: &Path, url: &str, token: &str, ports: &[u16]) -> anyhow::Result<Proc> {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let mut cmd = Command::new(bin("burrow-agent")?);
    cmd.arg("--url")
        .arg(url)
        .arg("--allow-ports")
        .arg(ports.join(","))
        .args(["--udp-bind", "127.0.0.1", "--max-backoff-secs", "1"])
        .env("BURROW_AGENT_TOKEN", token)
        .env("RUST_LOG", "info");
    let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let mut agent = Proc::spawn("burrow-agent", cmd, dir.join(format!("agent-{n}.log")))?;
    agent.wait_for_log("registered with burrowd", Duration::from_secs(30))?;
    Ok(agent)
}

/// A `burrow` CLI command for `url` and `token`, with UDP on loopback only.
pub fn burrow(url: &str, token: &str) -> anyhow::Result<Command> {
    let mut cmd = Command::new(bin("burrow")?);
    cmd.env("BURROW_URL", url)
        .env("BURROW_TOKEN", token)
        .env("XDG_CONFIG_HOME", "/nonexistent-burrow-test-config");
    Ok(cmd)
}

/// A running `burrow port-forward`, with the local port it listens on.
pub struct PortForward {
    /// The CLI process.
    pub proc: Proc,
    /// Local port forwarding to the workspace.
    pub port: u16,
}

/// Starts `burrow port-forward WORKSPACE 0:REMOTE` and waits until it listens.
pub fn port_forward(
    dir: &Path,
    url: &str,
    token: &str,
    workspace: &str,
    remote: u16,
    force_relay: bool,
) -> anyhow::Result<PortForward> {
    let mut cmd = burrow(url, token)?;
    cmd.args([
        "port-forward",
        workspace,
        &format!("0:{remote}"),
        "--udp-bind",
        "127.0.0.1",
    ]);
    if force_relay {
        cmd.arg("--force-relay");
    }
    let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let mut proc = Proc::spawn(
        "burrow port-forward",
        cmd,
        dir.join(format!("forward-{n}.log")),
    )?;
    proc.wait_for_log("Forwarding ", Duration::from_secs(40))?;
    let text = proc.log_text();
    let port = text
        .lines()
        .find_map(|l| {
            let rest = l.split("Forwarding ").nth(1)?;
            let addr = rest.split_whitespace().next()?;
            addr.parse::<SocketAddr>().ok()
        })
        .map(|a| a.port())
        .with_context(|| format!("no port in port-forward output:\n{text}"))?;
    Ok(PortForward { proc, port })
}

/// A TCP server on loopback that sends the file at `path` to every connection and closes it;
/// stands in for any download-like workspace service. Returns its port.
pub fn serve_file(path: &Path) -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut conn = conn;
                if let Ok(mut f) = std::fs::File::open(&path) {
                    let _ = std::io::copy(&mut f, &mut conn);
                }
            });
        }
    });
    Ok(port)
}

/// Inodes of the TCP sockets in LISTEN state that process `pid` holds open.
pub fn listening_sockets(pid: u32) -> anyhow::Result<Vec<u64>> {
    let mut listening_inodes = Vec::new();
    for table in ["tcp", "tcp6"] {
        let path = format!("/proc/{pid}/net/{table}");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // st == 0A is LISTEN; column 9 is the inode.
            if cols.len() > 9
                && cols[3] == "0A"
                && let Ok(inode) = cols[9].parse::<u64>()
            {
                listening_inodes.push(inode);
            }
        }
    }
    let mut held = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']'))
                && let Ok(inode) = inode.parse::<u64>()
                && listening_inodes.contains(&inode)
            {
                held.push(inode);
            }
        }
    }
    Ok(held)
}

/// Reads a child's output line by line on a thread, for processes whose output is piped.
pub fn lines_of(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
