//! Throughput of one data channel between two local `WebrtcStack` peers on 127.0.0.1.
//!
//! ```text
//! cargo run --release -p burrow-peer --example dc_throughput -- [--mb 500] [--msg 65536]
//!     [--high-water BYTES] [--window BYTES] [--udp-buf BYTES] [--reactors N] [--relay]
//! ```
//!
//! `--relay` forces both sides through a local TURN server (the `turn` crate).
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use burrow_peer::stack::{PeerConfig, PeerEvent, PeerSession, PeerStack};
use burrow_peer::webrtc_rs::{WebrtcOptions, WebrtcStack};
use burrow_proto::signal::{IceServer, IceTransportPolicy};
use burrow_proto::turn_auth::{TurnCredential, verify};
use bytes::Bytes;

struct Args {
    mb: usize,
    msg: usize,
    relay: bool,
    options: WebrtcOptions,
}

fn args() -> Args {
    let mut out = Args {
        mb: 500,
        msg: 64 * 1024,
        relay: false,
        options: WebrtcOptions {
            bind_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ..WebrtcOptions::default()
        },
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--mb" => out.mb = value(),
            "--msg" => out.msg = value(),
            "--high-water" => out.options.send_high_water = value(),
            "--window" => out.options.sctp_receive_window = value() as u32,
            "--udp-buf" => out.options.udp_buffer_bytes = value(),
            "--reactors" => out.options.reactor_threads = value(),
            "--relay" => out.relay = true,
            other => panic!("unknown flag {other}"),
        }
    }
    out
}

fn main() {
    let args = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(args));
}

async fn run(args: Args) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
    println!(
        "{} MB in {} B messages; high water {} B, SCTP window {} B, UDP buffers {} B, reactors {}{}",
        args.mb,
        args.msg,
        args.options.send_high_water,
        args.options.sctp_receive_window,
        args.options.udp_buffer_bytes,
        args.options.reactor_threads,
        if args.relay { ", via TURN" } else { "" }
    );

    let mut _server = None;
    let (client_config, agent_config) = if args.relay {
        let secret = b"bench";
        let (server, addr) = turn_server(secret).await;
        _server = Some(server);
        (
            relay_config(addr, secret, "client"),
            relay_config(addr, secret, "agent"),
        )
    } else {
        (PeerConfig::default(), PeerConfig::default())
    };

    let stack = WebrtcStack::with_options(args.options.clone());
    let (client, offer) = stack.offer(client_config).await.unwrap();
    let (agent, answer) = stack.answer(agent_config, &offer).await.unwrap();
    let client: Arc<dyn PeerSession> = Arc::from(client);
    let agent: Arc<dyn PeerSession> = Arc::from(agent);
    trickle(client.clone(), agent.clone());
    trickle(agent.clone(), client.clone());
    client.set_answer(&answer).await.unwrap();

    let setup = Instant::now();
    let c = client.data_channel().await.unwrap();
    let a = agent.data_channel().await.unwrap();
    println!(
        "channel open in {:?}, path {}",
        setup.elapsed(),
        client.path().await
    );

    let total = args.mb * 1024 * 1024;
    let msg = Bytes::from(vec![0x5a; args.msg]);
    let mut sink = c.sink;
    let mut source = a.source;
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        let mut sent = 0;
        while sent < total {
            let n = args.msg.min(total - sent);
            sink.send(msg.slice(..n)).await.unwrap();
            sent += n;
        }
        sink
    });
    let mut got = 0usize;
    let mut last = Instant::now();
    let mut last_bytes = 0usize;
    while got < total {
        let m = tokio::time::timeout(Duration::from_secs(30), source.recv())
            .await
            .expect("stalled for 30 s")
            .expect("channel closed");
        got += m.len();
        if last.elapsed() >= Duration::from_secs(1) {
            println!(
                "  {:7.1} MB/s",
                (got - last_bytes) as f64 / 1e6 / last.elapsed().as_secs_f64()
            );
            last = Instant::now();
            last_bytes = got;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let _sink = sender.await.unwrap();
    println!(
        "{} MB in {:.2} s: {:.1} MB/s ({:.0} Mbit/s)",
        args.mb,
        secs,
        total as f64 / 1e6 / secs,
        total as f64 * 8.0 / 1e6 / secs
    );
    client.close().await;
    agent.close().await;
}

fn trickle(from: Arc<dyn PeerSession>, to: Arc<dyn PeerSession>) {
    tokio::spawn(async move {
        while let Some(event) = from.next_event().await {
            if let PeerEvent::LocalCandidate(Some(c)) = event {
                let _ = to.add_remote_candidate(c).await;
            }
        }
    });
}

struct RestAuth {
    secret: Vec<u8>,
}

impl turn::auth::AuthHandler for RestAuth {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        _src_addr: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        let password = verify(&self.secret, username, unix_now())
            .map_err(|e| turn::Error::Other(e.to_string()))?;
        Ok(turn::auth::generate_auth_key(username, realm, &password))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Relay sockets on 127.0.0.1 with large buffers: with the kernel's default ~200 KiB they
/// drop datagrams under load, and SCTP recovers from loss slowly.
struct LoopbackRelay;

#[async_trait::async_trait]
impl turn::relay::RelayAddressGenerator for LoopbackRelay {
    fn validate(&self) -> Result<(), turn::Error> {
        Ok(())
    }

    async fn allocate_conn(
        &self,
        _use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn webrtc_util::Conn + Send + Sync>, SocketAddr), turn::Error> {
        let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, requested_port)).await?;
        let sock = socket2::SockRef::from(&socket);
        let _ = sock.set_recv_buffer_size(8 << 20);
        let _ = sock.set_send_buffer_size(8 << 20);
        let addr = socket.local_addr()?;
        Ok((Arc::new(socket), addr))
    }
}

async fn turn_server(secret: &[u8]) -> (turn::server::Server, SocketAddr) {
    use turn::server::config::{ConnConfig, ServerConfig};
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let sock = socket2::SockRef::from(&socket);
    let _ = sock.set_recv_buffer_size(8 << 20);
    let _ = sock.set_send_buffer_size(8 << 20);
    let addr = socket.local_addr().unwrap();
    let server = turn::server::Server::new(ServerConfig {
        conn_configs: vec![ConnConfig {
            conn: Arc::new(socket),
            relay_addr_generator: Box::new(LoopbackRelay),
        }],
        realm: "burrow.bench".to_owned(),
        auth_handler: Arc::new(RestAuth {
            secret: secret.to_vec(),
        }),
        channel_bind_timeout: Duration::from_secs(0),
        alloc_close_notify: None,
    })
    .await
    .unwrap();
    (server, addr)
}

fn relay_config(turn: SocketAddr, secret: &[u8], id: &str) -> PeerConfig {
    let cred = TurnCredential::mint(secret, id, unix_now() + 600);
    PeerConfig {
        ice_servers: vec![IceServer {
            urls: vec![format!("turn:{turn}?transport=udp")],
            username: Some(cred.username),
            credential: Some(cred.password),
        }],
        ice_transport_policy: IceTransportPolicy::Relay,
    }
}
