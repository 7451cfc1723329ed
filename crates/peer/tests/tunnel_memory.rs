//! The tunnel driver over the in-memory channel, with real loopback TCP servers on the
//! agent's side. Every wait is bounded by a timeout so a bug fails a test instead of
//! hanging it.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use burrow_peer::channel::{
    ChannelClosed, MessageChannel, MessageSink, MessageSource, memory_pair,
};
use burrow_peer::tunnel::{
    self, ClientTunnel, OpenError, StreamRecord, TunnelConfig, TunnelStream,
};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LIMIT: Duration = Duration::from_secs(60);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match timeout(LIMIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: timed out after {LIMIT:?}"),
    }
}

/// A deterministic byte stream that is not periodic at any small length.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Binds a loopback listener and serves each connection with `handler` on a task of its own.
async fn server<F, Fut>(handler: F) -> u16
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(handler(socket));
        }
    });
    port
}

/// Echoes everything, then half-closes after the client did.
async fn echo_server() -> u16 {
    server(|mut socket| async move {
        let (mut r, mut w) = socket.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// Reads until EOF, then answers with the SHA-256 of what it read and closes.
async fn digest_sink_server() -> u16 {
    server(|mut socket| async move {
        let mut hasher = Sha256::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(_) => return,
            }
        }
        let _ = socket.write_all(&hasher.finalize()).await;
        let _ = socket.shutdown().await;
    })
    .await
}

/// Sends `len` bytes of `pattern(len, 7)`, then closes.
async fn source_server(len: usize) -> u16 {
    let data = Arc::new(pattern(len, 7));
    server(move |mut socket| {
        let data = Arc::clone(&data);
        async move {
            let _ = socket.write_all(&data).await;
            let _ = socket.shutdown().await;
        }
    })
    .await
}

/// Sends until the connection breaks.
async fn flood_server() -> u16 {
    server(|mut socket| async move {
        let chunk = pattern(64 * 1024, 11);
        while socket.write_all(&chunk).await.is_ok() {}
    })
    .await
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    listener.local_addr().expect("addr").port()
}

struct Setup {
    client: ClientTunnel,
    reports: mpsc::UnboundedReceiver<StreamRecord>,
    agent: JoinHandle<Result<(), tunnel::TunnelError>>,
    driver: JoinHandle<Result<(), tunnel::TunnelError>>,
    cut_client: watch::Sender<bool>,
}

fn start(allowed: &[u16]) -> Setup {
    start_with(allowed, TunnelConfig::default())
}

fn start_with(allowed: &[u16], config: TunnelConfig) -> Setup {
    let (client_side, agent_side) = memory_pair(64);
    let (client_side, cut_client) = cuttable(client_side);
    let allowed: HashSet<u16> = allowed.iter().copied().collect();
    let allow: Arc<dyn Fn(u16) -> bool + Send + Sync> = Arc::new(move |p| allowed.contains(&p));
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let agent = tokio::spawn(tunnel::serve(
        agent_side, config, LOCALHOST, allow, reports_tx,
    ));
    let (client, driver) = tunnel::client(client_side, config);
    let driver = tokio::spawn(driver);
    Setup {
        client,
        reports,
        agent,
        driver,
        cut_client,
    }
}

/// Wraps a channel so a test can kill it in both directions at once, as a dying peer
/// connection does.
fn cuttable(channel: MessageChannel) -> (MessageChannel, watch::Sender<bool>) {
    let (cut_tx, cut_rx) = watch::channel(false);
    (
        MessageChannel {
            sink: Box::new(CutSink(channel.sink, cut_rx.clone())),
            source: Box::new(CutSource(channel.source, cut_rx)),
        },
        cut_tx,
    )
}

struct CutSink(Box<dyn MessageSink>, watch::Receiver<bool>);
struct CutSource(Box<dyn MessageSource>, watch::Receiver<bool>);

#[async_trait]
impl MessageSink for CutSink {
    async fn send(&mut self, msg: Bytes) -> Result<(), ChannelClosed> {
        if *self.1.borrow() {
            return Err(ChannelClosed);
        }
        tokio::select! {
            r = self.0.send(msg) => r,
            _ = self.1.wait_for(|cut| *cut) => Err(ChannelClosed),
        }
    }
    async fn close(&mut self) {
        self.0.close().await;
    }
}

#[async_trait]
impl MessageSource for CutSource {
    async fn recv(&mut self) -> Option<Bytes> {
        if *self.1.borrow() {
            return None;
        }
        tokio::select! {
            m = self.0.recv() => m,
            _ = self.1.wait_for(|cut| *cut) => None,
        }
    }
}

async fn next_report(reports: &mut mpsc::UnboundedReceiver<StreamRecord>) -> StreamRecord {
    within("stream report", reports.recv())
        .await
        .expect("agent reports every stream")
}

/// Writes `data` and half-closes on a task while the caller reads everything back.
async fn exchange(stream: TunnelStream, data: Vec<u8>) -> io::Result<Vec<u8>> {
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        w.write_all(&data).await?;
        w.shutdown().await?;
        Ok::<_, io::Error>(w)
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).await?;
    let w = writer.await.expect("writer task")?;
    // Both directions ended: reunite so the drop is a clean one, not a reset.
    drop(r.unsplit(w));
    Ok(got)
}

#[tokio::test]
async fn echo_returns_exact_bytes_and_reports_ok() {
    let port = echo_server().await;
    let mut s = start(&[port]);
    let stream = within("open", s.client.open(port)).await.expect("open");
    let data = pattern(1_000_000, 1);
    let got = within("echo", exchange(stream, data.clone()))
        .await
        .expect("echo");
    assert_eq!(got, data);

    let record = next_report(&mut s.reports).await;
    assert_eq!(record.outcome, "ok");
    assert_eq!(record.port, port);
    assert_eq!(record.stream_id, 1);
    assert_eq!(record.bytes_to_workspace, 1_000_000);
    assert_eq!(record.bytes_to_client, 1_000_000);
    assert!(record.ended_at >= record.started_at);
    let stats = s.client.stats();
    assert_eq!(stats.bytes_sent, 1_000_000);
    assert_eq!(stats.bytes_received, 1_000_000);
}

#[tokio::test]
async fn fifty_megabytes_each_way_arrive_intact() {
    let sink = digest_sink_server().await;
    let total = 50 * 1024 * 1024;
    let source = source_server(total).await;
    let s = start(&[sink, source]);

    // Upload: the sink answers with the digest of what it got, after our half-close.
    let up = pattern(total, 3);
    let expected = Sha256::digest(&up).to_vec();
    let stream = within("open", s.client.open(sink)).await.expect("open");
    let answer = within("upload", exchange(stream, up))
        .await
        .expect("upload");
    assert_eq!(answer, expected, "sink saw different bytes");

    // Download.
    let mut stream = within("open", s.client.open(source)).await.expect("open");
    let mut hasher = Sha256::new();
    let mut received = 0;
    let mut buf = vec![0; 64 * 1024];
    within("download", async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            received += n;
        }
    })
    .await;
    assert_eq!(received, total);
    assert_eq!(
        hasher.finalize().to_vec(),
        Sha256::digest(pattern(total, 7)).to_vec()
    );
}

#[tokio::test]
async fn many_concurrent_streams_keep_their_bytes_apart() {
    let port = echo_server().await;
    let s = start(&[port]);
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let client = s.client.clone();
        tasks.push(tokio::spawn(async move {
            let stream = client.open(port).await.expect("open");
            let data = pattern(200_000 + i as usize * 1_000, i);
            let got = exchange(stream, data.clone()).await.expect("echo");
            assert!(got == data, "stream {i} got other bytes");
        }));
    }
    within("40 streams", async {
        for t in tasks {
            t.await.expect("stream task");
        }
    })
    .await;
}

#[tokio::test]
async fn refused_port_gives_the_reason_and_a_record() {
    let port = echo_server().await;
    let mut s = start(&[port]);
    let err = within("open", s.client.open(23))
        .await
        .expect_err("port 23 is not allowed");
    assert_eq!(
        err,
        OpenError::Refused {
            code: 2,
            reason: "port 23 is not allowed".into()
        }
    );
    assert_eq!(err.to_string(), "stream refused: port 23 is not allowed");
    let record = next_report(&mut s.reports).await;
    assert_eq!(record.outcome, "refused: port 23 is not allowed");
    assert_eq!(record.port, 23);

    // The tunnel is fine afterwards.
    let stream = within("open", s.client.open(port)).await.expect("open");
    assert_eq!(
        exchange(stream, b"still here".to_vec())
            .await
            .expect("echo"),
        b"still here"
    );
}

#[tokio::test]
async fn dial_to_a_closed_port_is_a_clear_error() {
    let port = closed_port().await;
    let mut s = start(&[port]);
    let err = within("open", s.client.open(port))
        .await
        .expect_err("nothing listens");
    assert_eq!(
        err,
        OpenError::Refused {
            code: 3,
            reason: "dial failed: connection refused".into()
        }
    );
    let record = next_report(&mut s.reports).await;
    assert_eq!(record.outcome, "dial failed: connection refused");
}

#[tokio::test]
async fn client_half_close_lets_the_server_answer_then_close() {
    // A request/response server: reads to EOF, then answers and closes.
    let port = server(|mut socket| async move {
        let mut request = Vec::new();
        if socket.read_to_end(&mut request).await.is_ok() {
            let _ = socket
                .write_all(format!("got {} bytes", request.len()).as_bytes())
                .await;
            let _ = socket.shutdown().await;
        }
    })
    .await;
    let mut s = start(&[port]);
    let mut stream = within("open", s.client.open(port)).await.expect("open");
    stream.write_all(b"hello, workspace").await.expect("write");
    stream.shutdown().await.expect("half-close");
    let mut answer = String::new();
    within("answer", stream.read_to_string(&mut answer))
        .await
        .expect("read to EOF");
    assert_eq!(answer, "got 16 bytes");
    drop(stream);
    assert_eq!(next_report(&mut s.reports).await.outcome, "ok");
}

#[tokio::test]
async fn server_half_close_still_lets_the_client_send() {
    // The server sends a banner, half-closes, and then reports what it read afterwards.
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let port = server(move |mut socket| {
        let seen_tx = seen_tx.clone();
        async move {
            let _ = socket.write_all(b"banner").await;
            let _ = socket.shutdown().await;
            let mut rest = Vec::new();
            let _ = socket.read_to_end(&mut rest).await;
            let _ = seen_tx.send(rest);
        }
    })
    .await;
    let mut s = start(&[port]);
    let mut stream = within("open", s.client.open(port)).await.expect("open");
    let mut banner = Vec::new();
    within("banner", stream.read_to_end(&mut banner))
        .await
        .expect("EOF after banner");
    assert_eq!(banner, b"banner");
    stream.write_all(b"after your FIN").await.expect("write");
    stream.shutdown().await.expect("half-close");
    let seen = within("server read", seen_rx.recv()).await.expect("seen");
    assert_eq!(seen, b"after your FIN");
    drop(stream);
    assert_eq!(next_report(&mut s.reports).await.outcome, "ok");
}

#[tokio::test]
async fn stalled_stream_does_not_block_another_streams_transfer() {
    let total = 20 * 1024 * 1024;
    let source = source_server(total).await;
    let flood = flood_server().await;
    let s = start(&[source, flood]);

    // Opened and never read: its window fills and it stops, alone.
    let stalled = within("open", s.client.open(flood)).await.expect("open");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut stream = within("open", s.client.open(source)).await.expect("open");
    let mut received = 0;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    within("20 MB next to a stalled stream", async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            received += n;
        }
    })
    .await;
    assert_eq!(received, total);
    assert_eq!(
        hasher.finalize().to_vec(),
        Sha256::digest(pattern(total, 7)).to_vec()
    );
    // What the stalled stream holds is bounded by its window and the queue to the reader.
    let buffered = s.client.stats().bytes_received - total as u64;
    assert!(
        buffered <= 2 * 1024 * 1024,
        "stalled stream buffered {buffered} bytes"
    );
    drop(stalled);
}

#[tokio::test]
async fn channel_death_mid_transfer_ends_streams_with_errors() {
    let sink = digest_sink_server().await;
    let source = flood_server().await;
    let mut s = start(&[sink, source]);
    let mut download = within("open", s.client.open(source)).await.expect("open");
    let mut upload = within("open", s.client.open(sink)).await.expect("open");

    // Get both directions going, then kill the channel.
    let mut buf = vec![0; 64 * 1024];
    within("first bytes", download.read_exact(&mut buf))
        .await
        .expect("read");
    within("first upload", upload.write_all(&pattern(100_000, 1)))
        .await
        .expect("write");
    s.cut_client.send(true).expect("cut");

    let read_err = within("download ends", async {
        loop {
            match download.read(&mut buf).await {
                Ok(0) => panic!("a cut tunnel must not look like a clean EOF"),
                Ok(_) => continue,
                Err(e) => break e,
            }
        }
    })
    .await;
    assert_eq!(
        read_err.kind(),
        io::ErrorKind::ConnectionAborted,
        "{read_err}"
    );

    let chunk = pattern(64 * 1024, 2);
    let write_err = within("upload ends", async {
        loop {
            if let Err(e) = upload.write_all(&chunk).await {
                break e;
            }
        }
    })
    .await;
    assert_eq!(
        write_err.kind(),
        io::ErrorKind::ConnectionAborted,
        "{write_err}"
    );

    assert!(within("driver ends", s.driver).await.expect("join").is_ok());
    assert!(s.client.is_closed());
    assert_eq!(
        within("open", s.client.open(sink))
            .await
            .expect_err("closed"),
        OpenError::TunnelClosed
    );

    // The agent sees its channel close, ends both streams and says so.
    assert!(within("agent ends", s.agent).await.expect("join").is_ok());
    let mut outcomes = vec![
        next_report(&mut s.reports).await.outcome,
        next_report(&mut s.reports).await.outcome,
    ];
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            "tunnel closed: data channel closed",
            "tunnel closed: data channel closed"
        ]
    );
}

#[tokio::test]
async fn dropping_a_stream_resets_it_on_the_agent() {
    let port = echo_server().await;
    let mut s = start(&[port]);
    let mut stream = within("open", s.client.open(port)).await.expect("open");
    stream
        .write_all(b"half a conversation")
        .await
        .expect("write");
    drop(stream);
    assert_eq!(next_report(&mut s.reports).await.outcome, "reset by client");
}

#[tokio::test]
async fn dropping_a_stream_after_eof_ends_it_cleanly() {
    // How `ssh` via `burrow stdio` ends: the server closes, the client's stdin never does.
    let port = server(|mut socket| async move {
        let _ = socket.write_all(b"bye").await;
        let _ = socket.shutdown().await;
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest).await;
    })
    .await;
    let mut s = start(&[port]);
    let mut stream = within("open", s.client.open(port)).await.expect("open");
    let mut got = Vec::new();
    within("read to EOF", stream.read_to_end(&mut got))
        .await
        .expect("read");
    assert_eq!(got, b"bye");
    drop(stream);
    assert_eq!(next_report(&mut s.reports).await.outcome, "ok");
}

#[tokio::test]
async fn ping_measures_a_round_trip() {
    let s = start(&[]);
    for _ in 0..3 {
        let rtt = within("ping", s.client.ping()).await.expect("pong");
        assert!(rtt < Duration::from_secs(5), "{rtt:?}");
    }
}

#[tokio::test]
async fn dropping_every_handle_closes_the_tunnel_cleanly() {
    let mut s = start(&[]);
    drop(s.client);
    assert!(within("driver ends", s.driver).await.expect("join").is_ok());
    assert!(within("agent ends", s.agent).await.expect("join").is_ok());
    assert!(s.reports.recv().await.is_none());
}

#[tokio::test]
async fn small_windows_and_frames_still_carry_exact_bytes() {
    let port = echo_server().await;
    let config = TunnelConfig {
        initial_window: 3_000,
        max_frame_payload: 1_000,
    };
    let s = start_with(&[port], config);
    let stream = within("open", s.client.open(port)).await.expect("open");
    let data = pattern(300_000, 9);
    let got = within("echo", exchange(stream, data.clone()))
        .await
        .expect("echo");
    assert!(got == data);
}

#[tokio::test]
async fn agent_dials_the_configured_host() {
    // The agent dials dial_host, not wherever the client might wish.
    let port = echo_server().await;
    let (client_side, agent_side) = memory_pair(8);
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let other_host = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let allow: Arc<dyn Fn(u16) -> bool + Send + Sync> = Arc::new(|_| true);
    tokio::spawn(tunnel::serve(
        agent_side,
        TunnelConfig::default(),
        other_host,
        allow,
        reports_tx,
    ));
    let (client, driver) = tunnel::client(client_side, TunnelConfig::default());
    tokio::spawn(driver);
    // Nothing listens on 127.0.0.2 at the echo server's port.
    let addr = SocketAddr::new(other_host, port);
    let err = within("open", client.open(port))
        .await
        .expect_err("other host");
    assert!(
        matches!(err, OpenError::Refused { code: 3, .. }),
        "dialing {addr}: {err:?}"
    );
    assert!(
        next_report(&mut reports)
            .await
            .outcome
            .starts_with("dial failed")
    );
}

/// The agent's end of a channel the test drives by hand: what the agent sends comes out
/// of `sent`; once `fail` is set every send fails, as webrtc-rs fails sends on a channel
/// that is closing, and `failed` says when the first one did.
struct ClosingSink {
    sent: mpsc::UnboundedSender<Bytes>,
    fail: watch::Receiver<bool>,
    failed: Option<tokio::sync::oneshot::Sender<()>>,
}

#[async_trait]
impl MessageSink for ClosingSink {
    async fn send(&mut self, msg: Bytes) -> Result<(), ChannelClosed> {
        if *self.fail.borrow() {
            if let Some(failed) = self.failed.take() {
                let _ = failed.send(());
            }
            return Err(ChannelClosed);
        }
        self.sent.send(msg).map_err(|_| ChannelClosed)
    }
    async fn close(&mut self) {}
}

struct QueueSource(mpsc::UnboundedReceiver<Bytes>);

#[async_trait]
impl MessageSource for QueueSource {
    async fn recv(&mut self) -> Option<Bytes> {
        self.0.recv().await
    }
}

#[tokio::test]
async fn what_the_client_sent_before_its_channel_closed_is_read_though_sending_failed_first() {
    use burrow_proto::frame::ResetCode;
    use burrow_proto::tunnel::{Config, Role, Tunnel};

    // A workspace server whose sockets the test writes to when it wants the agent to send.
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (to_agent, agent_rx) = mpsc::unbounded_channel();
    let (agent_tx, mut from_agent) = mpsc::unbounded_channel();
    let (fail, fail_rx) = watch::channel(false);
    let (failed_tx, failed) = tokio::sync::oneshot::channel();
    let channel = MessageChannel {
        sink: Box::new(ClosingSink {
            sent: agent_tx,
            fail: fail_rx,
            failed: Some(failed_tx),
        }),
        source: Box::new(QueueSource(agent_rx)),
    };
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let allow: Arc<dyn Fn(u16) -> bool + Send + Sync> = Arc::new(move |p| p == port);
    let agent = tokio::spawn(tunnel::serve(
        channel,
        TunnelConfig::default(),
        LOCALHOST,
        allow,
        reports_tx,
    ));

    // The client: the sans-IO tunnel, its messages moved by hand.
    let mut client = Tunnel::new(Role::Client, Config::default());
    let flush = |client: &mut Tunnel| {
        while let Some(msg) = client.poll_transmit() {
            to_agent.send(msg).expect("agent reads");
        }
    };
    flush(&mut client);
    let id = client.open(port).expect("open");
    flush(&mut client);
    let (mut workspace, _) = within("the agent dials", listener.accept())
        .await
        .expect("accept");
    while !client.is_established() || client.stream_stats(id).is_none() {
        let msg = within("the agent's frames", from_agent.recv())
            .await
            .expect("agent sends");
        client.handle_message(msg).expect("valid frames");
    }

    // The channel starts closing: the agent's next send fails before it has read the
    // client's last frames, which are already on their way.
    fail.send(true).expect("fail");
    workspace.write_all(b"to the client").await.expect("write");
    within("the agent's send fails", failed)
        .await
        .expect("failed");
    client.close(ResetCode::NO_ERROR, "bye");
    flush(&mut client);
    drop(to_agent);

    let record = next_report(&mut reports).await;
    assert_eq!(record.outcome, "tunnel closed: bye");
    assert!(within("agent ends", agent).await.expect("join").is_ok());
}

#[tokio::test]
async fn the_speed_test_is_refused_where_its_port_is_not_allowed() {
    use burrow_proto::speedtest::SPEEDTEST_PORT;

    // As for a session restricted to one app's port.
    let port = echo_server().await;
    let mut s = start(&[port]);
    let err = within("open", s.client.open(SPEEDTEST_PORT))
        .await
        .expect_err("the speed test is not allowed");
    assert_eq!(
        err,
        OpenError::Refused {
            code: 2,
            reason: "port 0 is not allowed".into()
        }
    );
    let record = next_report(&mut s.reports).await;
    assert_eq!(
        (record.port, record.outcome.as_str()),
        (0, "refused: port 0 is not allowed")
    );
}

#[tokio::test]
async fn the_agents_speed_test_checks_an_upload_and_refuses_a_bad_request() {
    use burrow_proto::speedtest::{Request, SPEEDTEST_PORT, UploadReport};

    // No workspace port is allowed: the speed test is the agent's own.
    let mut s = start(&[SPEEDTEST_PORT]);

    // Bytes that are not the pattern arrive counted, and reported as not intact.
    let stream = within("open", s.client.open(SPEEDTEST_PORT))
        .await
        .expect("open");
    let mut upload = Request::Upload { bytes: 1000 }.encode().to_vec();
    upload.extend_from_slice(&[0xab; 1000]);
    let answer = within("upload", exchange(stream, upload))
        .await
        .expect("upload");
    assert_eq!(
        UploadReport::decode(&answer),
        Ok(UploadReport {
            received: 1000,
            intact: false
        })
    );
    let record = next_report(&mut s.reports).await;
    assert_eq!((record.port, record.outcome.as_str()), (0, "ok"));

    // An unknown request is reset with the reason, which the audit log keeps.
    let mut stream = within("open", s.client.open(SPEEDTEST_PORT))
        .await
        .expect("open");
    let mut bad = Request::Download { bytes: 1 }.encode();
    bad[0] = 7;
    stream.write_all(&bad).await.expect("write");
    let mut buf = [0; 16];
    let err = within("the refusal", stream.read(&mut buf))
        .await
        .expect_err("reset");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    assert!(
        err.to_string()
            .contains("unknown speed test request kind 7"),
        "{err}"
    );
    let record = next_report(&mut s.reports).await;
    assert_eq!(record.outcome, "refused: unknown speed test request kind 7");
}
