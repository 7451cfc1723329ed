//! `burrow`: reach a workspace's TCP ports through a WebRTC tunnel.

mod session;
mod speedtest;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use burrow_peer::webrtc_rs::WebrtcStack;
use clap::{Args as ClapArgs, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tracing::{info, warn};

use session::{Connection, Endpoint};

/// Reach a Burrow workspace's TCP ports over WebRTC.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// burrowd's base URL (default: from `burrow login`).
    #[arg(long, global = true, env = "BURROW_URL")]
    url: Option<String>,
    /// Your API token (default: from `burrow login`).
    #[arg(long, global = true, env = "BURROW_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Save burrowd's URL and your token for later commands.
    Login {
        /// burrowd's base URL.
        url: String,
        /// Your API token.
        #[arg(long)]
        token: String,
    },
    /// Forward a local TCP port to a workspace port; many connections share one tunnel.
    PortForward {
        /// Workspace name.
        workspace: String,
        /// `LOCAL:REMOTE`; LOCAL 0 picks a free port.
        ports: String,
        /// Local address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Connect stdin/stdout to a workspace port (for `ssh -o ProxyCommand`).
    Stdio {
        /// Workspace name.
        workspace: String,
        /// Workspace port.
        port: u16,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Measure the round trip to a workspace's agent and show the path.
    Ping {
        /// Workspace name.
        workspace: String,
        /// Number of pings.
        #[arg(long, short = 'c', default_value_t = 5)]
        count: u32,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Measure a tunnel to a workspace's agent: round trip, download and upload, with
    /// every byte checked. Needs nothing in the workspace.
    Speedtest {
        /// Workspace name.
        workspace: String,
        /// MiB to move each way.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=16384))]
        mib: u64,
        #[command(flatten)]
        net: NetArgs,
    },
}

#[derive(Debug, Clone, ClapArgs)]
struct NetArgs {
    /// Use only a TURN relay, never a direct path.
    #[arg(long)]
    force_relay: bool,
    /// Local address for the WebRTC UDP sockets.
    #[arg(long, default_value = "0.0.0.0")]
    udp_bind: IpAddr,
}

#[derive(Serialize, Deserialize)]
struct SavedLogin {
    url: String,
    token: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // stdio carries a protocol on stdout: logs go to stderr, and quietly by default.
    let default_filter = match cli.command {
        Command::Stdio { .. } => "warn,webrtc=error,rtc=error",
        _ => "info,webrtc=warn,rtc=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = runtime.block_on(run(cli));
    // A blocking read of stdin may still be pending (stdio): do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Login { url, token } => {
            let path = login_path()?;
            save_login(&path, &SavedLogin { url, token })?;
            eprintln!("saved to {}", path.display());
            Ok(())
        }
        Command::PortForward {
            workspace,
            ports,
            bind,
            net,
        } => {
            let endpoint = endpoint(cli.url, cli.token)?;
            let (local, remote) = parse_ports(&ports)?;
            port_forward(
                endpoint,
                workspace,
                SocketAddr::new(bind, local),
                remote,
                net,
            )
            .await
        }
        Command::Stdio {
            workspace,
            port,
            net,
        } => {
            let endpoint = endpoint(cli.url, cli.token)?;
            stdio(endpoint, workspace, port, net).await
        }
        Command::Ping {
            workspace,
            count,
            net,
        } => {
            let endpoint = endpoint(cli.url, cli.token)?;
            ping(endpoint, workspace, count, net).await
        }
        Command::Speedtest {
            workspace,
            mib,
            net,
        } => {
            let endpoint = endpoint(cli.url, cli.token)?;
            speedtest(endpoint, workspace, mib, net).await
        }
    }
}

async fn open(endpoint: &Endpoint, workspace: &str, net: &NetArgs) -> anyhow::Result<Connection> {
    let stack = WebrtcStack::new().with_bind_addr(SocketAddr::new(net.udp_bind, 0));
    session::connect(endpoint, workspace, net.force_relay, &stack).await
}

async fn port_forward(
    endpoint: Endpoint,
    workspace: String,
    local: SocketAddr,
    remote: u16,
    net: NetArgs,
) -> anyhow::Result<()> {
    // Connect before listening so a bad token or an offline agent fails at once.
    let first = open(&endpoint, &workspace, &net).await?;
    let listener = TcpListener::bind(local)
        .await
        .with_context(|| format!("listening on {local}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    eprintln!(
        "Forwarding {bound} -> {workspace}:{remote} ({} path, set up in {} ms)",
        first.path,
        first.setup.as_millis()
    );
    let current = Arc::new(Mutex::new(first));
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => accepted.context("accepting a connection")?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let _ = socket.set_nodelay(true);
        let current = Arc::clone(&current);
        let endpoint = endpoint.clone();
        let workspace = workspace.clone();
        let net = net.clone();
        tokio::spawn(async move {
            if let Err(e) = forward_one(socket, &current, &endpoint, &workspace, remote, &net).await
            {
                warn!(%peer, error = format!("{e:#}"), "forwarded connection failed");
            }
        });
    }
}

async fn forward_one(
    mut socket: TcpStream,
    current: &Mutex<Connection>,
    endpoint: &Endpoint,
    workspace: &str,
    remote: u16,
    net: &NetArgs,
) -> anyhow::Result<()> {
    let tunnel = {
        let mut conn = current.lock().await;
        if conn.tunnel.is_closed() {
            info!("tunnel closed; opening a new one");
            conn.close().await;
            *conn = open(endpoint, workspace, net).await?;
        }
        conn.tunnel.clone()
    };
    let mut stream = tunnel
        .open(remote)
        .await
        .with_context(|| format!("opening {workspace}:{remote}"))?;
    let (up, down) = tokio::io::copy_bidirectional(&mut socket, &mut stream)
        .await
        .context("copying")?;
    info!(up, down, "connection closed");
    Ok(())
}

async fn stdio(
    endpoint: Endpoint,
    workspace: String,
    port: u16,
    net: NetArgs,
) -> anyhow::Result<()> {
    let conn = open(&endpoint, &workspace, &net).await?;
    let stream = conn
        .tunnel
        .open(port)
        .await
        .with_context(|| format!("opening {workspace}:{port}"))?;
    let (mut from_ws, mut to_ws) = tokio::io::split(stream);
    let upload = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        tokio::io::copy(&mut stdin, &mut to_ws).await?;
        // Half-close: the workspace sees EOF and can still answer.
        to_ws.shutdown().await
    });
    // The session is over when the workspace closes its side, even if stdin stays open
    // (ssh keeps it open until the proxy exits).
    let mut stdout = tokio::io::stdout();
    let copied = tokio::io::copy(&mut from_ws, &mut stdout).await;
    stdout.flush().await.context("flushing stdout")?;
    upload.abort();
    conn.close().await;
    copied.context("copying from the workspace")?;
    Ok(())
}

/// [`open`], then says on stdout where it got.
#[allow(clippy::print_stdout)]
async fn open_announced(
    endpoint: &Endpoint,
    workspace: &str,
    net: &NetArgs,
) -> anyhow::Result<Connection> {
    let conn = open(endpoint, workspace, net).await?;
    println!(
        "connected to {workspace}: {} path, set up in {} ms",
        conn.path,
        conn.setup.as_millis()
    );
    Ok(conn)
}

// The report is the command's output, so it goes to stdout.
#[allow(clippy::print_stdout)]
async fn ping(
    endpoint: Endpoint,
    workspace: String,
    count: u32,
    net: NetArgs,
) -> anyhow::Result<()> {
    let conn = open_announced(&endpoint, &workspace, &net).await?;
    let mut rtts = Vec::new();
    for seq in 0..count {
        let rtt = speedtest::ping_once(&conn.tunnel).await?;
        println!(
            "seq={seq} rtt={:.3} ms path={}",
            rtt.as_secs_f64() * 1e3,
            conn.path
        );
        rtts.push(rtt);
        if seq + 1 < count {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if let (Some(min), Some(max)) = (rtts.iter().min(), rtts.iter().max()) {
        let avg = rtts.iter().sum::<Duration>() / rtts.len() as u32;
        println!(
            "rtt min/avg/max = {:.3}/{:.3}/{:.3} ms",
            min.as_secs_f64() * 1e3,
            avg.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
    }
    conn.close().await;
    Ok(())
}

// The report is the command's output, so it goes to stdout.
#[allow(clippy::print_stdout)]
async fn speedtest(
    endpoint: Endpoint,
    workspace: String,
    mib: u64,
    net: NetArgs,
) -> anyhow::Result<()> {
    let conn = open_announced(&endpoint, &workspace, &net).await?;
    let bytes = mib * 1024 * 1024;
    let result = async {
        let rtt = speedtest::round_trip(&conn.tunnel, 5).await?;
        println!(
            "round trip: {:.3} ms (median of 5)",
            rtt.as_secs_f64() * 1e3
        );
        let down = speedtest::download(&conn.tunnel, bytes).await?;
        println!("download: {}, intact", down.describe());
        println!(
            "packets:  up to {} bytes per datagram from the agent (path MTU search)",
            conn.largest_datagram_received()
        );
        let up = speedtest::upload(&conn.tunnel, bytes).await?;
        println!("upload:   {}, intact", up.describe());
        anyhow::Ok(())
    }
    .await;
    conn.close().await;
    result
}

fn parse_ports(spec: &str) -> anyhow::Result<(u16, u16)> {
    let (local, remote) = match spec.split_once(':') {
        Some((l, r)) => (l, r),
        None => (spec, spec),
    };
    let local = local
        .parse()
        .with_context(|| format!("bad local port in {spec:?}"))?;
    let remote: u16 = remote
        .parse()
        .with_context(|| format!("bad remote port in {spec:?}"))?;
    if remote == 0 {
        bail!("remote port must not be 0");
    }
    Ok((local, remote))
}

fn endpoint(url: Option<String>, token: Option<String>) -> anyhow::Result<Endpoint> {
    let saved = match (&url, &token) {
        (Some(_), Some(_)) => None,
        _ => load_login(&login_path()?)?,
    };
    let url = url
        .or_else(|| saved.as_ref().map(|s| s.url.clone()))
        .context("no burrowd URL: pass --url, set BURROW_URL or run `burrow login`")?;
    let token = token
        .or_else(|| saved.map(|s| s.token))
        .context("no token: pass --token, set BURROW_TOKEN or run `burrow login`")?;
    Ok(Endpoint { url, token })
}

fn login_path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".config"),
    };
    Ok(base.join("burrow").join("login.json"))
}

fn save_login(path: &PathBuf, login: &SavedLogin) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(login).context("encoding the login")?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // The token is a secret: readable by its owner only.
        options.mode(0o600);
    }
    use std::io::Write;
    options
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

fn load_login(path: &PathBuf) -> anyhow::Result<Option<SavedLogin>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_spec_takes_local_and_remote() {
        assert_eq!(parse_ports("15432:5432").unwrap(), (15432, 5432));
        assert_eq!(parse_ports("0:22").unwrap(), (0, 22));
        assert_eq!(parse_ports("8080").unwrap(), (8080, 8080));
        assert!(parse_ports("x:1").is_err());
        assert!(parse_ports("1:0").is_err());
        assert!(parse_ports("1:70000").is_err());
    }
}
