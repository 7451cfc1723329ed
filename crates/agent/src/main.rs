//! `burrow-agent`: runs in a workspace, connects out to burrowd and serves tunnels.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use burrow_agent::{Agent, AgentConfig};
use burrow_peer::tunnel::TunnelConfig;
use burrow_peer::webrtc_rs::WebrtcStack;
use clap::Parser;

mod allocator;

/// Serve this workspace's TCP ports to Burrow clients over WebRTC.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// burrowd's base URL.
    #[arg(long, env = "BURROW_URL")]
    url: String,
    /// The workspace's agent token (`burrowd admin workspace add` prints it).
    #[arg(long, env = "BURROW_AGENT_TOKEN", hide_env_values = true)]
    token: String,
    /// Local ports clients may reach, comma-separated; all others are refused.
    #[arg(long, value_delimiter = ',', required = true)]
    allow_ports: Vec<u16>,
    /// Host to dial for allowed ports.
    #[arg(long, default_value = "127.0.0.1")]
    dial_host: IpAddr,
    /// Local address for the WebRTC UDP sockets.
    #[arg(long, default_value = "0.0.0.0")]
    udp_bind: IpAddr,
    /// Longest wait between attempts to reach burrowd, in seconds.
    #[arg(long, default_value_t = 30)]
    max_backoff_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,webrtc=warn,rtc=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    allocator::spawn_purger();
    let stack = WebrtcStack::new().with_bind_addr(SocketAddr::new(args.udp_bind, 0));
    let config = AgentConfig {
        url: args.url,
        token: args.token,
        allowed_ports: args.allow_ports,
        dial_host: args.dial_host,
        tunnel: TunnelConfig::default(),
        max_backoff: Duration::from_secs(args.max_backoff_secs.max(1)),
    };
    tracing::info!(?config, "starting agent");
    let agent = Agent::new(config, Arc::new(stack));
    tokio::select! {
        result = agent.run() => result.context("agent stopped")?,
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
