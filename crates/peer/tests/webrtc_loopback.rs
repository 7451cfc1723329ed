//! Two `WebrtcStack`s in one process, on 127.0.0.1 only, signaling through in-test channels.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use burrow_peer::channel::{MessageChannel, MessageSink, MessageSource};
use burrow_peer::stack::{PeerConfig, PeerError, PeerEvent, PeerSession, PeerStack};
use burrow_peer::webrtc_rs::WebrtcStack;
use burrow_proto::signal::{IceServer, IceTransportPolicy, PathKind};
use burrow_proto::turn_auth::{TurnCredential, verify};
use bytes::Bytes;
use sha1::{Digest, Sha1};
use tokio::sync::mpsc;
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(20);

fn stack() -> WebrtcStack {
    WebrtcStack::new().with_bind_addr(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A connected pair and what each side reported.
struct Pair {
    client: Arc<dyn PeerSession>,
    agent: Arc<dyn PeerSession>,
    client_events: mpsc::UnboundedReceiver<PeerEvent>,
    agent_events: mpsc::UnboundedReceiver<PeerEvent>,
    /// The signaling tasks, which hold both sessions.
    trickles: [tokio::task::JoinHandle<()>; 2],
}

/// Forwards `from`'s local candidates to `to`; every other event goes to the returned channel.
fn trickle(
    from: Arc<dyn PeerSession>,
    to: Arc<dyn PeerSession>,
) -> (
    mpsc::UnboundedReceiver<PeerEvent>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(event) = from.next_event().await {
            match event {
                PeerEvent::LocalCandidate(Some(c)) => {
                    to.add_remote_candidate(c)
                        .await
                        .expect("remote candidate accepted");
                }
                PeerEvent::LocalCandidate(None) => {}
                other => {
                    let _ = tx.send(other);
                }
            }
        }
    });
    (rx, task)
}

async fn connect(client_config: PeerConfig, agent_config: PeerConfig) -> Pair {
    let (client, offer) = timeout(STEP, stack().offer(client_config))
        .await
        .expect("offer in time")
        .expect("offer");
    let (agent, answer) = timeout(STEP, stack().answer(agent_config, &offer))
        .await
        .expect("answer in time")
        .expect("answer");
    let client: Arc<dyn PeerSession> = Arc::from(client);
    let agent: Arc<dyn PeerSession> = Arc::from(agent);
    let (client_events, client_trickle) = trickle(client.clone(), agent.clone());
    let (agent_events, agent_trickle) = trickle(agent.clone(), client.clone());
    // Let the agent's candidates reach the client before its answer does, so the client must
    // queue them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    timeout(STEP, client.set_answer(&answer))
        .await
        .expect("set_answer in time")
        .expect("set_answer");
    Pair {
        client,
        agent,
        client_events,
        agent_events,
        trickles: [client_trickle, agent_trickle],
    }
}

async fn connected(events: &mut mpsc::UnboundedReceiver<PeerEvent>) -> PathKind {
    match timeout(STEP, events.recv())
        .await
        .expect("connected in time")
    {
        Some(PeerEvent::Connected(path)) => path,
        other => panic!("expected Connected, got {other:?}"),
    }
}

async fn channels(pair: &Pair) -> (MessageChannel, MessageChannel) {
    let client = timeout(STEP, pair.client.data_channel())
        .await
        .expect("client channel in time")
        .expect("client channel");
    let agent = timeout(STEP, pair.agent.data_channel())
        .await
        .expect("agent channel in time")
        .expect("agent channel");
    (client, agent)
}

/// Deterministic messages of varied sizes (1 byte to 64 KiB) adding up to `total` bytes.
fn messages(total: usize) -> impl Iterator<Item = Bytes> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut sent = 0usize;
    std::iter::from_fn(move || {
        if sent >= total {
            return None;
        }
        let r = next();
        let len = match r % 4 {
            0 => 1 + (r >> 8) as usize % 64,
            1 => 16 * 1024,
            2 => 64 * 1024,
            _ => 1 + (r >> 8) as usize % (64 * 1024),
        }
        .min(total - sent);
        sent += len;
        let fill = (r >> 32) as u8;
        Some(Bytes::from(
            (0..len)
                .map(|i| fill.wrapping_add(i as u8))
                .collect::<Vec<u8>>(),
        ))
    })
}

/// Sends `total` bytes from `from` to `to` and checks they arrive whole and in order.
async fn transfer(
    mut sink: Box<dyn MessageSink>,
    mut source: Box<dyn MessageSource>,
    total: usize,
) {
    let sender = tokio::spawn(async move {
        let mut hash = Sha1::new();
        let mut count = 0u64;
        for msg in messages(total) {
            hash.update((msg.len() as u32).to_be_bytes());
            hash.update(&msg);
            count += 1;
            sink.send(msg).await.expect("send");
        }
        (hash.finalize().to_vec(), count, sink)
    });
    let receiver = tokio::spawn(async move {
        let mut hash = Sha1::new();
        let mut count = 0u64;
        let mut bytes = 0usize;
        while bytes < total {
            let msg = timeout(STEP, source.recv())
                .await
                .expect("a message in time")
                .expect("channel still open");
            bytes += msg.len();
            hash.update((msg.len() as u32).to_be_bytes());
            hash.update(&msg);
            count += 1;
        }
        (hash.finalize().to_vec(), count, bytes)
    });
    let (sent_hash, sent_count, _sink) = timeout(Duration::from_secs(120), sender)
        .await
        .expect("sent in time")
        .expect("sender task");
    let (got_hash, got_count, got_bytes) = timeout(Duration::from_secs(120), receiver)
        .await
        .expect("received in time")
        .expect("receiver task");
    assert_eq!(got_bytes, total);
    assert_eq!(got_count, sent_count);
    assert_eq!(got_hash, sent_hash, "messages differ or are out of order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_transfer_of_20_mb_arrives_in_order() {
    init_tracing();
    let mut pair = connect(PeerConfig::default(), PeerConfig::default()).await;
    assert_eq!(connected(&mut pair.client_events).await, PathKind::Direct);
    assert_eq!(connected(&mut pair.agent_events).await, PathKind::Direct);
    assert_eq!(pair.client.path().await, PathKind::Direct);
    assert_eq!(pair.agent.path().await, PathKind::Direct);

    let (client, agent) = channels(&pair).await;
    // Only the first call gets the channel.
    assert!(pair.client.data_channel().await.is_err());

    // Both directions at once.
    let up = transfer(client.sink, agent.source, 20 * 1024 * 1024);
    let down = transfer(agent.sink, client.source, 5 * 1024 * 1024);
    tokio::join!(up, down);

    pair.client.close().await;
    pair.agent.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_peers_on_loopback_use_16_kb_packets_once_the_path_mtu_search_proves_them() {
    // Two webrtc-rs peers list PAD among their SCTP extensions, so each probes its direction
    // (third_party/rtc-sctp, change 5); loopback carries the largest size, 16 000 bytes of
    // SCTP in one DTLS record.
    init_tracing();
    let mut pair = connect(PeerConfig::default(), PeerConfig::default()).await;
    assert_eq!(connected(&mut pair.client_events).await, PathKind::Direct);
    let (client, agent) = channels(&pair).await;
    let up = transfer(client.sink, agent.source, 4 * 1024 * 1024);
    let down = transfer(agent.sink, client.source, 4 * 1024 * 1024);
    tokio::join!(up, down);
    for (side, session) in [("agent", &pair.agent), ("client", &pair.client)] {
        let largest = session.largest_datagram_received();
        assert!(
            (16_000..16_100).contains(&largest),
            "{side} received datagrams of at most {largest} bytes"
        );
    }
    pair.client.close().await;
    pair.agent.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_stalls_the_sender() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    init_tracing();
    const TOTAL: usize = 64 * 1024 * 1024;
    const MSG: usize = 64 * 1024;
    let mut pair = connect(PeerConfig::default(), PeerConfig::default()).await;
    connected(&mut pair.client_events).await;
    let (client, agent) = channels(&pair).await;
    let mut sink = client.sink;
    let mut source = agent.source;

    let progress = Arc::new(AtomicUsize::new(0));
    let sent = progress.clone();
    let sender = tokio::spawn(async move {
        let msg = Bytes::from(vec![7u8; MSG]);
        for _ in 0..TOTAL / MSG {
            sink.send(msg.clone()).await.expect("send");
            sent.fetch_add(MSG, Ordering::Relaxed);
        }
        sink
    });

    // Nobody reads: the sender must stall well before TOTAL.
    let mut last = usize::MAX;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = progress.load(Ordering::Relaxed);
        assert!(now < TOTAL, "the sender never waited for the reader");
        if now == last {
            break;
        }
        last = now;
    }
    tracing::info!(buffered = last, "sender stalled");

    // Reading resumes the sender, and every byte arrives.
    let mut got = 0;
    while got < TOTAL {
        let msg = timeout(STEP, source.recv())
            .await
            .expect("a message in time")
            .expect("channel open");
        assert!(msg.iter().all(|b| *b == 7));
        got += msg.len();
    }
    assert_eq!(got, TOTAL);
    timeout(STEP, sender)
        .await
        .expect("sender done in time")
        .expect("sender task");
    pair.client.close().await;
    pair.agent.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sdp_is_an_error() {
    init_tracing();
    for sdp in [
        "",
        "not sdp at all",
        "v=0\r\n",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n",
    ] {
        let result = timeout(STEP, stack().answer(PeerConfig::default(), sdp))
            .await
            .expect("answer in time");
        match result {
            Err(PeerError::BadSdp(_)) => {}
            Err(other) => panic!("{sdp:?}: expected BadSdp, got {other:?}"),
            Ok(_) => panic!("{sdp:?}: expected BadSdp, got an answer"),
        }
    }

    let (client, _offer) = timeout(STEP, stack().offer(PeerConfig::default()))
        .await
        .expect("offer in time")
        .expect("offer");
    // A bad candidate is refused even before the answer, when it would only be queued.
    let bad = burrow_proto::signal::IceCandidate {
        candidate: "candidate:what is this".into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: None,
    };
    match timeout(STEP, client.add_remote_candidate(bad))
        .await
        .expect("in time")
    {
        Err(PeerError::BadCandidate(_)) => {}
        other => panic!("expected BadCandidate, got {other:?}"),
    }
    for sdp in ["", "garbage"] {
        match timeout(STEP, client.set_answer(sdp))
            .await
            .expect("in time")
        {
            Err(PeerError::BadSdp(_)) => {}
            other => panic!("{sdp:?}: expected BadSdp, got {other:?}"),
        }
    }
    client.close().await;
    // After close the session reports Closed, then nothing.
    let mut saw_closed = false;
    while let Some(event) = timeout(STEP, client.next_event()).await.expect("in time") {
        if matches!(event, PeerEvent::Closed(_)) {
            saw_closed = true;
        }
    }
    assert!(saw_closed);
    assert!(
        timeout(STEP, client.data_channel())
            .await
            .expect("in time")
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_one_side_ends_the_other() {
    init_tracing();
    let mut pair = connect(PeerConfig::default(), PeerConfig::default()).await;
    connected(&mut pair.client_events).await;
    let (mut client, mut agent) = channels(&pair).await;
    client
        .sink
        .send(Bytes::from_static(b"hello"))
        .await
        .expect("send");
    let got = timeout(STEP, agent.source.recv()).await.expect("in time");
    assert_eq!(got.as_deref(), Some(&b"hello"[..]));

    pair.client.close().await;

    assert_eq!(
        timeout(STEP, agent.source.recv())
            .await
            .expect("agent source ends in time"),
        None
    );
    assert_eq!(
        timeout(STEP, client.source.recv())
            .await
            .expect("client source ends in time"),
        None
    );
    assert!(
        timeout(STEP, client.sink.send(Bytes::from_static(b"late")))
            .await
            .expect("in time")
            .is_err()
    );
    // The agent's sink fails too once its side has noticed.
    let mut failed = false;
    for _ in 0..100 {
        if timeout(STEP, agent.sink.send(Bytes::from_static(b"late")))
            .await
            .expect("in time")
            .is_err()
        {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed);
    pair.agent.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_channel_ends_the_remote_source() {
    init_tracing();
    let mut pair = connect(PeerConfig::default(), PeerConfig::default()).await;
    connected(&mut pair.agent_events).await;
    let (mut client, mut agent) = channels(&pair).await;
    agent.sink.close().await;
    assert_eq!(
        timeout(STEP, client.source.recv())
            .await
            .expect("client source ends in time"),
        None
    );
    assert!(
        timeout(STEP, client.sink.send(Bytes::from_static(b"late")))
            .await
            .expect("in time")
            .is_err()
    );
    assert_eq!(
        timeout(STEP, agent.source.recv())
            .await
            .expect("agent source ends in time"),
        None
    );
    pair.client.close().await;
    pair.agent.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_session_closes_the_connection() {
    init_tracing();
    let mut pair = connect(PeerConfig::default(), PeerConfig::default()).await;
    connected(&mut pair.client_events).await;
    let (_client, mut agent) = channels(&pair).await;
    let Pair {
        client,
        agent: agent_session,
        trickles,
        ..
    } = pair;
    // Signaling is over; its tasks hold clones of both sessions.
    for task in trickles {
        task.abort();
        let _ = task.await;
    }
    assert_eq!(Arc::strong_count(&client), 1);
    drop(client);
    assert_eq!(
        timeout(STEP, agent.source.recv())
            .await
            .expect("agent source ends in time"),
        None
    );
    agent_session.close().await;
}

// --- forced relay through a TURN server ----------------------------------------------------

/// coturn's `use-auth-secret` scheme, checked with burrow's own code: the username is
/// `<expiry>:<id>`, which turn's `LongTermAuthHandler` (plain `<expiry>`) refuses.
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

/// Allocates relay sockets on 127.0.0.1, like turn's `RelayAddressGeneratorStatic` with
/// `relay_address` 127.0.0.1, but with large socket buffers: with the kernel's default
/// (~200 KiB) the relay drops datagrams under load and throughput collapses to ~1 MB/s.
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
        let socket =
            big_buffers(tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, requested_port)).await?);
        let addr = socket.local_addr()?;
        Ok((Arc::new(socket), addr))
    }
}

fn big_buffers(socket: tokio::net::UdpSocket) -> tokio::net::UdpSocket {
    let sock = socket2::SockRef::from(&socket);
    let _ = sock.set_recv_buffer_size(8 << 20);
    let _ = sock.set_send_buffer_size(8 << 20);
    socket
}

async fn turn_server(secret: &[u8]) -> (turn::server::Server, SocketAddr) {
    use turn::server::config::{ConnConfig, ServerConfig};

    let socket = big_buffers(
        tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind TURN socket"),
    );
    let addr = socket.local_addr().expect("TURN address");
    let server = turn::server::Server::new(ServerConfig {
        conn_configs: vec![ConnConfig {
            conn: Arc::new(socket),
            relay_addr_generator: Box::new(LoopbackRelay),
        }],
        realm: "burrow.test".to_owned(),
        auth_handler: Arc::new(RestAuth {
            secret: secret.to_vec(),
        }),
        channel_bind_timeout: Duration::from_secs(0),
        alloc_close_notify: None,
    })
    .await
    .expect("TURN server");
    (server, addr)
}

fn relay_config(turn: SocketAddr, secret: &[u8], id: &str) -> PeerConfig {
    let cred = TurnCredential::mint(secret, id, unix_now() + 600);
    PeerConfig {
        ice_servers: vec![IceServer {
            urls: vec![
                // Skipped: the 0.21 TURN client is UDP only.
                format!("turn:{turn}?transport=tcp"),
                format!("turn:{turn}?transport=udp"),
            ],
            username: Some(cred.username),
            credential: Some(cred.password),
        }],
        ice_transport_policy: IceTransportPolicy::Relay,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_relay_goes_through_turn_in_packets_the_relay_carries() {
    init_tracing();
    let secret = b"relay-test-secret";
    let (server, turn) = turn_server(secret).await;
    let mut pair = connect(
        relay_config(turn, secret, "client"),
        relay_config(turn, secret, "agent"),
    )
    .await;
    assert_eq!(connected(&mut pair.client_events).await, PathKind::Relay);
    assert_eq!(connected(&mut pair.agent_events).await, PathKind::Relay);
    assert_eq!(pair.client.path().await, PathKind::Relay);

    let (client, agent) = channels(&pair).await;
    transfer(client.sink, agent.source, 4 * 1024 * 1024).await;
    // webrtc-rs' TURN server reads 1500 bytes per datagram and drops larger ones, so the
    // path MTU search ends at its 1400-byte step (plus DTLS and TURN framing on the wire).
    let largest = pair.agent.largest_datagram_received();
    assert!(
        (1400..=1500).contains(&largest),
        "the agent received datagrams of at most {largest} bytes"
    );

    pair.client.close().await;
    pair.agent.close().await;
    let _ = server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_turn_credentials_never_connect() {
    init_tracing();
    let secret = b"relay-test-secret";
    let (server, turn) = turn_server(secret).await;
    let mut pair = connect(
        relay_config(turn, b"wrong secret", "client"),
        relay_config(turn, b"wrong secret", "agent"),
    )
    .await;
    // No relay candidate can be gathered, so nothing connects; the session must not claim so.
    let early = timeout(Duration::from_secs(3), pair.client_events.recv()).await;
    assert!(
        !matches!(early, Ok(Some(PeerEvent::Connected(_)))),
        "connected without a relay: {early:?}"
    );
    assert_eq!(pair.client.path().await, PathKind::Unknown);
    pair.client.close().await;
    pair.agent.close().await;
    let _ = server.close().await;
}
