//! Keepalive and idle timeout, with a simulated clock: two `Tunnel`s back to back whose
//! "channel" can drop what one side says, and whose shells call `handle_timeout` after
//! every batch of messages, as the run-loop contract asks.

use std::time::Duration;

use burrow_proto::frame::{Frame, PROTOCOL_VERSION, ResetCode, StreamId};
use burrow_proto::tunnel::{
    Config, DEFAULT_IDLE_TIMEOUT, DEFAULT_KEEPALIVE_INTERVAL, Event, KEEPALIVE_PAYLOAD_BIT,
    MIN_KEEPALIVE_INTERVAL, Role, StreamEnd, Tunnel,
};

const SECOND: Duration = Duration::from_secs(1);

struct Pair {
    client: Tunnel,
    agent: Tunnel,
    client_events: Vec<Event>,
    agent_events: Vec<Event>,
    /// Frames the client sent and the agent sent, decoded, in order.
    client_sent: Vec<Frame>,
    agent_sent: Vec<Frame>,
    /// The agent's messages are lost on the way (the agent or the path died).
    agent_silent: bool,
    /// PONGs are lost both ways: only other frames can show life.
    drop_pongs: bool,
    now: Duration,
}

impl Pair {
    fn new() -> Self {
        Self::with(Config::default(), Config::default())
    }

    fn with(client: Config, agent: Config) -> Self {
        let mut p = Self {
            client: Tunnel::new(Role::Client, client),
            agent: Tunnel::new(Role::Agent, agent),
            client_events: Vec::new(),
            agent_events: Vec::new(),
            client_sent: Vec::new(),
            agent_sent: Vec::new(),
            agent_silent: false,
            drop_pongs: false,
            now: Duration::ZERO,
        };
        // The channel just opened: both clocks start.
        p.client.handle_timeout(p.now);
        p.agent.handle_timeout(p.now);
        p.pump();
        p
    }

    /// Moves messages both ways until neither side has anything to send, collecting events.
    fn pump(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            while let Some(msg) = self.client.poll_transmit() {
                let frame = Frame::decode_bytes(&msg).expect("client sends valid frames");
                moved = true;
                let lost = self.drop_pongs && matches!(frame, Frame::Pong { .. });
                self.client_sent.push(frame);
                if !lost {
                    self.agent
                        .handle_message(msg)
                        .expect("agent accepts client frames");
                }
            }
            self.agent.handle_timeout(self.now);
            while let Some(msg) = self.agent.poll_transmit() {
                let frame = Frame::decode_bytes(&msg).expect("agent sends valid frames");
                moved = true;
                let lost =
                    self.agent_silent || (self.drop_pongs && matches!(frame, Frame::Pong { .. }));
                self.agent_sent.push(frame);
                if !lost {
                    self.client
                        .handle_message(msg)
                        .expect("client accepts agent frames");
                }
            }
            self.client.handle_timeout(self.now);
            self.collect();
            if !moved {
                return;
            }
        }
        panic!("pump never went quiet");
    }

    fn collect(&mut self) {
        while let Some(e) = self.client.poll_event() {
            self.client_events.push(e);
        }
        while let Some(e) = self.agent.poll_event() {
            self.agent_events.push(e);
        }
    }

    /// Moves the clock to `now`, firing both sides' timers on the way as a shell would:
    /// at each deadline `poll_timeout` gives, and not in between.
    fn advance_to(&mut self, now: Duration) {
        loop {
            let next = [self.client.poll_timeout(), self.agent.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next.filter(|t| *t <= now) else {
                break;
            };
            self.now = self.now.max(next);
            self.client.handle_timeout(self.now);
            self.agent.handle_timeout(self.now);
            self.pump();
        }
        self.now = now;
        self.pump();
    }

    fn open_accepted(&mut self, port: u16) -> StreamId {
        let id = self.client.open(port).expect("open");
        self.pump();
        self.agent.accept(id).expect("accept");
        self.pump();
        assert!(self.client_events.contains(&Event::StreamAccepted { id }));
        id
    }
}

fn keepalives(frames: &[Frame]) -> usize {
    frames
        .iter()
        .filter(|f| matches!(f, Frame::Ping { payload } if payload & KEEPALIVE_PAYLOAD_BIT != 0))
        .count()
}

fn closed_end(events: &[Event], id: StreamId) -> Option<StreamEnd> {
    events.iter().find_map(|e| match e {
        Event::StreamClosed { id: i, end, .. } if *i == id => Some(end.clone()),
        _ => None,
    })
}

/// A client whose agent said HELLO once and is played by hand from then on.
fn client_with_fake_agent() -> Tunnel {
    let mut client = Tunnel::new(Role::Client, Config::default());
    client.handle_timeout(Duration::ZERO);
    while client.poll_transmit().is_some() {}
    client
        .handle_message(
            Frame::Hello {
                version: PROTOCOL_VERSION,
                flags: 0,
                max_frame_payload: 16_379,
            }
            .to_bytes(),
        )
        .expect("HELLO");
    client.handle_timeout(Duration::ZERO);
    client
}

fn sent(t: &mut Tunnel) -> Vec<Frame> {
    std::iter::from_fn(|| t.poll_transmit())
        .map(|m| Frame::decode_bytes(&m).expect("valid frame"))
        .collect()
}

#[test]
fn defaults_are_documented_values() {
    let c = Config::default();
    assert_eq!(c.keepalive_interval, DEFAULT_KEEPALIVE_INTERVAL);
    assert_eq!(c.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    assert_eq!(DEFAULT_KEEPALIVE_INTERVAL, 5 * SECOND);
    assert_eq!(DEFAULT_IDLE_TIMEOUT, 30 * SECOND);
}

#[test]
fn silent_peer_gets_a_keepalive_ping_after_the_interval() {
    let mut client = client_with_fake_agent();
    assert_eq!(client.poll_timeout(), Some(5 * SECOND));

    client.handle_timeout(5 * SECOND - Duration::from_millis(1));
    assert!(sent(&mut client).is_empty(), "nothing before the interval");

    client.handle_timeout(5 * SECOND);
    let frames = sent(&mut client);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(keepalives(&frames), 1, "{frames:?}");

    // One per interval, however often the shell calls.
    for ms in [5_001, 6_000, 9_999] {
        client.handle_timeout(Duration::from_millis(ms));
        assert!(sent(&mut client).is_empty(), "at {ms} ms");
    }
    assert_eq!(client.poll_timeout(), Some(10 * SECOND));
    client.handle_timeout(10 * SECOND);
    assert_eq!(keepalives(&sent(&mut client)), 1);
}

#[test]
fn keepalive_payloads_differ_and_carry_the_reserved_bit() {
    let mut client = client_with_fake_agent();
    let mut payloads = Vec::new();
    for s in [5, 10, 15] {
        client.handle_timeout(s * SECOND);
        for f in sent(&mut client) {
            if let Frame::Ping { payload } = f {
                payloads.push(payload);
            }
        }
    }
    assert_eq!(payloads.len(), 3);
    assert!(payloads.iter().all(|p| p & KEEPALIVE_PAYLOAD_BIT != 0));
    payloads.dedup();
    assert_eq!(payloads.len(), 3, "{payloads:?}");
}

#[test]
fn answering_peer_keeps_the_tunnel_alive_for_many_intervals() {
    let mut p = Pair::new();
    let id = p.open_accepted(22);
    // Ten minutes of an idle tunnel, in seconds.
    for s in 1..=600 {
        p.advance_to(s * SECOND);
    }
    assert!(!p.client.is_closed() && !p.agent.is_closed());
    assert!(
        p.client.stream_stats(id).is_some(),
        "the stream is still open"
    );
    assert!(
        keepalives(&p.client_sent) >= 600 / 5 - 1,
        "{} keepalives",
        keepalives(&p.client_sent)
    );
    assert!(
        !p.client_events
            .iter()
            .chain(&p.agent_events)
            .any(|e| matches!(e, Event::Closed { .. })),
    );
}

#[test]
fn a_busy_tunnel_sends_no_keepalives() {
    let mut p = Pair::new();
    for s in 1..=120 {
        // The application pings every 2 s: the peer is heard well within the interval.
        if s % 2 == 0 {
            p.client.ping(u64::from(s));
            p.agent.ping(u64::from(s));
        }
        p.advance_to(s * SECOND);
    }
    assert_eq!(keepalives(&p.client_sent), 0);
    assert_eq!(keepalives(&p.agent_sent), 0);
}

#[test]
fn data_flowing_one_way_keeps_both_sides_alive_without_pongs() {
    // A small agent window makes the agent grant credit (WINDOW) every couple of seconds.
    let agent = Config {
        initial_window: 4096,
        ..Config::default()
    };
    let mut p = Pair::with(Config::default(), agent);
    p.drop_pongs = true;
    let id = p.open_accepted(5432);
    let chunk = [7u8; 1024];
    for s in 1..=300 {
        assert_eq!(p.client.write(id, &chunk).expect("open"), chunk.len());
        p.advance_to(s * SECOND);
        while p.agent.read(id).expect("open").is_some() {}
        p.pump();
    }
    assert!(!p.client.is_closed() && !p.agent.is_closed());
    assert_eq!(
        p.agent.stream_stats(id).map(|s| s.bytes_received),
        Some(300 * 1024)
    );
}

#[test]
fn unresponsive_peer_closes_the_tunnel_after_the_idle_timeout() {
    let mut p = Pair::new();
    let a = p.open_accepted(22);
    let b = p.open_accepted(80);
    let origin = p.now;
    p.agent_silent = true;
    p.client_sent.clear();

    p.advance_to(origin + 30 * SECOND - Duration::from_millis(1));
    assert!(!p.client.is_closed(), "not before the idle timeout");
    assert_eq!(keepalives(&p.client_sent), 5, "asked at 5, 10, ... 25 s");

    p.advance_to(origin + 30 * SECOND);
    assert!(p.client.is_closed());
    for id in [a, b] {
        assert_eq!(
            closed_end(&p.client_events, id),
            Some(StreamEnd::TunnelClosed)
        );
    }
    assert_eq!(
        p.client_events.last(),
        Some(&Event::Closed {
            code: ResetCode::TIMEOUT,
            reason: "no word from the peer in 30 s".into(),
            by_peer: false,
        })
    );
    assert_eq!(
        p.client.close_reason(),
        Some((ResetCode::TIMEOUT, "no word from the peer in 30 s"))
    );
    // The RESET on stream 0 was sent last; a peer that was only slow learns why.
    assert_eq!(
        p.client_sent.last(),
        Some(&Frame::Reset {
            stream: StreamId::CONNECTION,
            code: ResetCode::TIMEOUT,
            reason: "no word from the peer in 30 s".into(),
        })
    );
    assert!(p.agent.is_closed());
    assert!(p.agent_events.contains(&Event::Closed {
        code: ResetCode::TIMEOUT,
        reason: "no word from the peer in 30 s".into(),
        by_peer: true,
    }));
}

#[test]
fn a_message_before_the_deadline_postpones_the_timeout() {
    let mut client = client_with_fake_agent();
    for s in [5, 10, 15, 20, 25] {
        client.handle_timeout(s * SECOND);
    }
    while client.poll_transmit().is_some() {}
    // The peer answers at the last moment.
    let pong = Frame::Pong {
        payload: KEEPALIVE_PAYLOAD_BIT | 1,
    };
    client
        .handle_message(pong.to_bytes())
        .expect("a valid PONG");
    client.handle_timeout(30 * SECOND - Duration::from_millis(1));
    client.handle_timeout(30 * SECOND);
    assert!(!client.is_closed());
    assert_eq!(
        client.poll_timeout(),
        Some(35 * SECOND - Duration::from_millis(1))
    );
    client.handle_timeout(60 * SECOND);
    assert!(client.is_closed(), "silence since 29.999 s");
}

#[test]
fn keepalive_pongs_are_not_reported_to_the_application() {
    let mut p = Pair::new();
    p.client.ping(42);
    for s in 1..=60 {
        p.advance_to(s * SECOND);
    }
    assert!(keepalives(&p.client_sent) > 0);
    let pongs: Vec<&Event> = p
        .client_events
        .iter()
        .chain(&p.agent_events)
        .filter(|e| matches!(e, Event::Pong { .. }))
        .collect();
    assert_eq!(pongs, [&Event::Pong { payload: 42 }]);
}

#[test]
fn poll_timeout_is_none_once_closed() {
    let mut t = Tunnel::new(Role::Client, Config::default());
    assert_eq!(
        t.poll_timeout(),
        Some(Duration::ZERO),
        "call handle_timeout to start the clock"
    );
    t.handle_timeout(100 * SECOND);
    assert_eq!(t.poll_timeout(), Some(105 * SECOND));
    t.close(ResetCode::NO_ERROR, "done");
    assert_eq!(t.poll_timeout(), None);
    t.handle_timeout(1_000 * SECOND);
    assert_eq!(t.poll_timeout(), None);

    let mut timed_out = client_with_fake_agent();
    timed_out.handle_timeout(30 * SECOND);
    assert!(timed_out.is_closed());
    assert_eq!(timed_out.poll_timeout(), None);
}

#[test]
fn nothing_happens_before_the_clock_starts() {
    let mut client = Tunnel::new(Role::Client, Config::default());
    while client.poll_transmit().is_some() {}
    // However late the first call, it only starts the clock.
    client.handle_timeout(3_600 * SECOND);
    assert!(!client.is_closed());
    assert!(client.poll_transmit().is_none());
    assert_eq!(client.poll_timeout(), Some(3_605 * SECOND));
}

#[test]
fn liveness_settings_are_clamped() {
    let t = Tunnel::new(
        Role::Client,
        Config {
            keepalive_interval: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            ..Config::default()
        },
    );
    assert_eq!(t.config().keepalive_interval, MIN_KEEPALIVE_INTERVAL);
    assert_eq!(t.config().idle_timeout, 2 * MIN_KEEPALIVE_INTERVAL);

    // Huge values do not overflow the deadlines.
    let mut t = Tunnel::new(
        Role::Client,
        Config {
            keepalive_interval: Duration::MAX,
            idle_timeout: Duration::MAX,
            ..Config::default()
        },
    );
    t.handle_timeout(SECOND);
    assert_eq!(t.poll_timeout(), Some(Duration::MAX));
    t.handle_timeout(Duration::MAX);
    assert!(!t.is_closed());
}

#[test]
fn timeout_reason_names_a_fractional_timeout_in_milliseconds() {
    let mut t = Tunnel::new(
        Role::Client,
        Config {
            keepalive_interval: Duration::from_millis(500),
            idle_timeout: Duration::from_millis(1_500),
            ..Config::default()
        },
    );
    t.handle_timeout(Duration::ZERO);
    t.handle_timeout(Duration::from_millis(1_500));
    assert_eq!(
        t.close_reason(),
        Some((ResetCode::TIMEOUT, "no word from the peer in 1500 ms"))
    );
}
