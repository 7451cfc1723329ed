//! Throughput of one tunnel stream over the in-memory channel, through real loopback TCP on
//! the agent's side: `cargo run --release -p burrow-peer --example tunnel_throughput [MB]`.
//!
//! Measures an upload (client to a discarding server) and a download (from a server that
//! sends a fixed buffer), each of MB megabytes (default 1000), and prints MB/s.
#![allow(clippy::print_stdout)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use burrow_peer::channel::memory_pair;
use burrow_peer::tunnel::{self, TunnelConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mb: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let total = mb * 1_000_000;

    // Discards what it reads.
    let sink = TcpListener::bind((LOCALHOST, 0)).await?;
    let sink_port = sink.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = sink.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0; 256 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    // Sends `total` bytes.
    let source = TcpListener::bind((LOCALHOST, 0)).await?;
    let source_port = source.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = source.accept().await {
            tokio::spawn(async move {
                let buf = vec![0x5a; 256 * 1024];
                let mut left = total;
                while left > 0 {
                    let n = left.min(buf.len());
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });

    let (client_side, agent_side) = memory_pair(64);
    let (reports, _records) = tokio::sync::mpsc::unbounded_channel();
    let allow: Arc<dyn Fn(u16) -> bool + Send + Sync> = Arc::new(|_| true);
    tokio::spawn(tunnel::serve(
        agent_side,
        TunnelConfig::default(),
        LOCALHOST,
        allow,
        reports,
    ));
    let (client, driver) = tunnel::client(client_side, TunnelConfig::default());
    tokio::spawn(driver);

    let buf = vec![0xa5; 256 * 1024];
    let mut up = client
        .open(sink_port)
        .await
        .map_err(std::io::Error::other)?;
    let started = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len());
        up.write_all(&buf[..n]).await?;
        left -= n;
    }
    // Sent means handed to the tunnel; the window (1 MiB) is all that can still be in flight.
    let secs = started.elapsed().as_secs_f64();
    println!(
        "upload:   {mb} MB in {secs:.2} s = {:.0} MB/s",
        mb as f64 / secs
    );

    let mut down = client
        .open(source_port)
        .await
        .map_err(std::io::Error::other)?;
    let started = Instant::now();
    let mut buf = vec![0; 256 * 1024];
    let mut received = 0;
    loop {
        let n = down.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        received += n;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "download: {} MB in {secs:.2} s = {:.0} MB/s",
        received / 1_000_000,
        (received / 1_000_000) as f64 / secs
    );
    Ok(())
}
