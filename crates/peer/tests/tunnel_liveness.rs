//! The driver's keepalive and idle timeout, on tokio's paused clock: the far end of the
//! in-memory channel is played by hand, says HELLO and then answers or goes silent. Time
//! only moves when every task waits, so the tests take virtual seconds and no wall-clock
//! timing matters.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use burrow_peer::channel::{MessageChannel, memory_pair};
use burrow_peer::tunnel::{self, TunnelConfig, TunnelError};
use burrow_proto::frame::{Frame, PROTOCOL_VERSION, ResetCode, StreamId};
use burrow_proto::tunnel::{DEFAULT_IDLE_TIMEOUT, KEEPALIVE_PAYLOAD_BIT};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

const REASON: &str = "no word from the peer in 30 s";

/// The agent's side, by hand: HELLO, OPEN_OK for every OPEN, PONG for every PING while
/// `answer_pings`; every frame the client sent goes to the returned receiver.
fn fake_agent(mut far: MessageChannel, answer_pings: bool) -> mpsc::UnboundedReceiver<Frame> {
    let (seen_tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let hello = Frame::Hello {
            version: PROTOCOL_VERSION,
            flags: 0,
            max_frame_payload: 16_379,
        };
        if far.sink.send(hello.to_bytes()).await.is_err() {
            return;
        }
        while let Some(msg) = far.source.recv().await {
            let Ok(frame) = Frame::decode_bytes(&msg) else {
                return;
            };
            let reply = match &frame {
                Frame::Open { stream, .. } => Some(Frame::OpenOk {
                    stream: *stream,
                    window: 1 << 20,
                }),
                Frame::Ping { payload } if answer_pings => Some(Frame::Pong { payload: *payload }),
                _ => None,
            };
            let _ = seen_tx.send(frame);
            if let Some(reply) = reply
                && far.sink.send(reply.to_bytes()).await.is_err()
            {
                return;
            }
        }
        // The channel stays up (ICE still connected): only the answers stop.
        std::future::pending::<()>().await;
    });
    seen
}

fn drain(seen: &mut mpsc::UnboundedReceiver<Frame>) -> Vec<Frame> {
    std::iter::from_fn(|| seen.try_recv().ok()).collect()
}

fn is_keepalive(frame: &Frame) -> bool {
    matches!(frame, Frame::Ping { payload } if payload & KEEPALIVE_PAYLOAD_BIT != 0)
}

#[tokio::test(start_paused = true)]
async fn silent_peer_closes_the_tunnel_and_fails_its_callers_with_the_reason() {
    let (near, far) = memory_pair(64);
    let (client, driver) = tunnel::client(near, TunnelConfig::default());
    let driver = tokio::spawn(driver);
    let mut seen = fake_agent(far, false);

    let mut stream = client.open(22).await.expect("the fake agent accepts");
    let started = Instant::now();
    // A ping nobody answers: it fails when the tunnel gives up, not never.
    let err = client.ping().await.expect_err("no pong ever comes");
    let waited = started.elapsed();
    assert_eq!(
        err,
        TunnelError::Timeout {
            reason: REASON.into()
        }
    );
    assert_eq!(err.to_string(), format!("tunnel timed out: {REASON}"));
    assert!(
        waited >= DEFAULT_IDLE_TIMEOUT && waited < DEFAULT_IDLE_TIMEOUT + Duration::from_secs(1),
        "{waited:?}"
    );

    let mut buf = [0; 16];
    let read_err = stream.read(&mut buf).await.expect_err("the stream failed");
    assert_eq!(read_err.kind(), io::ErrorKind::ConnectionAborted);
    assert_eq!(read_err.to_string(), format!("tunnel closed: {REASON}"));

    assert_eq!(
        driver.await.expect("join"),
        Err(TunnelError::Timeout {
            reason: REASON.into()
        })
    );
    assert!(client.is_closed());
    assert_eq!(
        client.ping().await,
        Err(TunnelError::Timeout {
            reason: REASON.into()
        }),
        "later calls are told why too"
    );

    let frames = drain(&mut seen);
    assert_eq!(
        frames.iter().filter(|f| is_keepalive(f)).count(),
        5,
        "asked at 5, 10, ... 25 s: {frames:?}"
    );
    assert_eq!(
        frames.last(),
        Some(&Frame::Reset {
            stream: StreamId::CONNECTION,
            code: ResetCode::TIMEOUT,
            reason: REASON.into(),
        })
    );
}

#[tokio::test(start_paused = true)]
async fn answering_peer_keeps_an_idle_tunnel_up() {
    let (near, far) = memory_pair(64);
    let (client, driver) = tunnel::client(near, TunnelConfig::default());
    let driver = tokio::spawn(driver);
    let mut seen = fake_agent(far, true);

    let _stream = client.open(22).await.expect("the fake agent accepts");
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(!client.is_closed());
    assert!(!driver.is_finished());
    let rtt = client.ping().await.expect("the peer answers");
    assert!(rtt < Duration::from_secs(1), "{rtt:?}");

    let keepalives = drain(&mut seen).iter().filter(|f| is_keepalive(f)).count();
    assert!(keepalives >= 600 / 5 - 1, "{keepalives} keepalives");
    driver.abort();
}

#[tokio::test(start_paused = true)]
async fn agent_ends_the_tunnel_of_a_client_that_went_silent() {
    let (near, mut far) = memory_pair(64);
    let (reports, _records) = mpsc::unbounded_channel();
    let started = Instant::now();
    let agent = tokio::spawn(tunnel::serve(
        near,
        TunnelConfig::default(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        Arc::new(|_| true),
        reports,
    ));
    // The client says HELLO, then nothing; its channel stays open (`far` lives on).
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        flags: 0,
        max_frame_payload: 16_379,
    };
    far.sink.send(hello.to_bytes()).await.expect("send");

    assert_eq!(
        agent.await.expect("join"),
        Err(TunnelError::Timeout {
            reason: REASON.into()
        })
    );
    assert!(started.elapsed() < DEFAULT_IDLE_TIMEOUT + Duration::from_secs(1));
    let mut last = None;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::ZERO, far.source.recv()).await {
        last = Frame::decode_bytes(&msg).ok();
    }
    assert!(
        matches!(
            last,
            Some(Frame::Reset {
                code: ResetCode::TIMEOUT,
                ..
            })
        ),
        "{last:?}"
    );
}
