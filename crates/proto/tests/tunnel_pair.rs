//! Two `Tunnel`s wired back to back in memory: every message one side transmits is handed
//! to the other, in order, like a reliable ordered data channel.

use burrow_proto::frame::{Frame, PROTOCOL_VERSION, ResetCode, StreamId};
use burrow_proto::tunnel::{Config, Event, Role, StreamEnd, StreamError, Tunnel, TunnelError};
use bytes::Bytes;

struct Pair {
    client: Tunnel,
    agent: Tunnel,
    client_events: Vec<Event>,
    agent_events: Vec<Event>,
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
        };
        p.pump();
        p
    }

    /// Moves messages both ways until neither side has anything to send, collecting events.
    fn pump(&mut self) {
        for _ in 0..1_000_000 {
            let mut moved = false;
            while let Some(msg) = self.client.poll_transmit() {
                self.agent
                    .handle_message(msg)
                    .expect("agent accepts client frames");
                moved = true;
            }
            while let Some(msg) = self.agent.poll_transmit() {
                self.client
                    .handle_message(msg)
                    .expect("client accepts agent frames");
                moved = true;
            }
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

    /// Opens a stream from the client and accepts it on the agent.
    fn open_accepted(&mut self, port: u16) -> StreamId {
        let id = self.client.open(port).expect("open");
        self.pump();
        assert!(
            self.agent_events
                .contains(&Event::StreamOpened { id, port }),
            "{:?}",
            self.agent_events
        );
        self.agent.accept(id).expect("accept");
        self.pump();
        assert!(self.client_events.contains(&Event::StreamAccepted { id }));
        id
    }
}

fn read_all(t: &mut Tunnel, id: StreamId) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = t.read(id).expect("stream is open") {
        out.extend_from_slice(&b);
    }
    out
}

fn closed_end(events: &[Event], id: StreamId) -> Option<StreamEnd> {
    events.iter().find_map(|e| match e {
        Event::StreamClosed { id: i, end, .. } if *i == id => Some(end.clone()),
        _ => None,
    })
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A client tunnel whose peer is played by hand: the agent's HELLO was delivered and the
/// client's opening frames were consumed.
fn client_with_fake_agent(config: Config) -> Tunnel {
    let mut client = Tunnel::new(Role::Client, config);
    while client.poll_transmit().is_some() {}
    client
        .handle_message(hello(PROTOCOL_VERSION))
        .expect("HELLO");
    client
}

fn hello(version: u16) -> Bytes {
    Frame::Hello {
        version,
        flags: 0,
        max_frame_payload: 16_379,
    }
    .to_bytes()
}

fn raw_frame(frame_type: u8, stream: u32, payload: &[u8]) -> Bytes {
    let mut v = vec![frame_type];
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    Bytes::from(v)
}

#[test]
fn open_accept_and_bytes_arrive_exactly_both_ways() {
    let mut p = Pair::new();
    let id = p.open_accepted(8080);
    assert_eq!(id.get(), 1);

    // Larger than the send buffer: each side writes again as frames leave.
    let up = pattern(100_000, 1);
    let down = pattern(70_001, 2);
    let (mut sent_up, mut sent_down) = (0, 0);
    let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        sent_up += p.client.write(id, &up[sent_up..]).expect("write");
        sent_down += p.agent.write(id, &down[sent_down..]).expect("write");
        p.pump();
        got_up.extend(read_all(&mut p.agent, id));
        got_down.extend(read_all(&mut p.client, id));
        if sent_up == up.len() && sent_down == down.len() {
            break;
        }
    }
    p.pump();
    got_up.extend(read_all(&mut p.agent, id));
    got_down.extend(read_all(&mut p.client, id));
    assert_eq!(got_up, up);
    assert_eq!(got_down, down);

    let stats = p.client.stream_stats(id).expect("open");
    assert_eq!(stats.port, 8080);
    assert_eq!(stats.bytes_sent, up.len() as u64);
    assert_eq!(stats.bytes_received, down.len() as u64);
}

#[test]
fn stream_ids_are_odd_and_increasing() {
    let mut p = Pair::new();
    let ids: Vec<u32> = (0..4)
        .map(|_| p.client.open(22).expect("open").get())
        .collect();
    assert_eq!(ids, [1, 3, 5, 7]);
}

#[test]
fn refused_open_gives_the_client_code_and_reason() {
    let mut p = Pair::new();
    let id = p.client.open(23).expect("open");
    p.pump();
    p.agent
        .refuse(id, ResetCode::PORT_NOT_ALLOWED, "port 23 is not allowed")
        .expect("pending");
    p.pump();
    assert_eq!(
        closed_end(&p.client_events, id),
        Some(StreamEnd::Refused {
            code: ResetCode::PORT_NOT_ALLOWED,
            reason: "port 23 is not allowed".into()
        })
    );
    assert!(matches!(
        closed_end(&p.agent_events, id),
        Some(StreamEnd::ResetLocally { .. })
    ));
    assert_eq!(p.client.stream_count(), 0);
    assert_eq!(p.agent.stream_count(), 0);
}

#[test]
fn client_half_close_still_lets_the_agent_reply() {
    let mut p = Pair::new();
    let id = p.open_accepted(5432);
    p.client.write(id, b"request").expect("write");
    p.client.finish(id).expect("finish");
    p.pump();
    assert_eq!(read_all(&mut p.agent, id), b"request");
    p.collect();
    assert!(p.agent_events.contains(&Event::Finished { id }));
    assert_eq!(p.client.write(id, b"more"), Err(StreamError::Finished(id)));

    // The agent's direction is still open.
    p.agent.write(id, b"response").expect("write");
    p.agent.finish(id).expect("finish");
    p.pump();
    assert_eq!(read_all(&mut p.client, id), b"response");
    p.collect();
    assert!(p.client_events.contains(&Event::Finished { id }));
    assert_eq!(closed_end(&p.client_events, id), Some(StreamEnd::Finished));
    assert_eq!(closed_end(&p.agent_events, id), Some(StreamEnd::Finished));
}

#[test]
fn agent_half_close_still_lets_the_client_send() {
    let mut p = Pair::new();
    let id = p.open_accepted(22);
    p.agent.write(id, b"banner").expect("write");
    p.agent.finish(id).expect("finish");
    p.pump();
    assert_eq!(read_all(&mut p.client, id), b"banner");
    p.collect();
    assert!(p.client_events.contains(&Event::Finished { id }));
    assert_eq!(closed_end(&p.client_events, id), None);

    p.client.write(id, b"late upload").expect("write");
    p.client.finish(id).expect("finish");
    p.pump();
    assert_eq!(read_all(&mut p.agent, id), b"late upload");
    p.collect();
    assert_eq!(closed_end(&p.agent_events, id), Some(StreamEnd::Finished));
    assert_eq!(closed_end(&p.client_events, id), Some(StreamEnd::Finished));
}

#[test]
fn finished_waits_until_buffered_data_is_read() {
    let mut p = Pair::new();
    let id = p.open_accepted(22);
    p.agent.write(id, b"tail").expect("write");
    p.agent.finish(id).expect("finish");
    p.pump();
    assert!(!p.client_events.contains(&Event::Finished { id }));
    assert_eq!(read_all(&mut p.client, id), b"tail");
    p.collect();
    assert!(p.client_events.contains(&Event::Finished { id }));
}

#[test]
fn reset_reaches_the_peer_with_its_reason_and_drops_the_stream() {
    let mut p = Pair::new();
    let id = p.open_accepted(22);
    p.agent.write(id, &pattern(50_000, 0)).expect("write");
    p.client
        .reset(id, ResetCode::CANCELLED, "user pressed ^C")
        .expect("reset");
    p.pump();
    assert_eq!(
        closed_end(&p.agent_events, id),
        Some(StreamEnd::ResetByPeer {
            code: ResetCode::CANCELLED,
            reason: "user pressed ^C".into()
        })
    );
    assert_eq!(p.agent.write(id, b"x"), Err(StreamError::UnknownStream(id)));
    assert_eq!(
        p.client.write(id, b"x"),
        Err(StreamError::UnknownStream(id))
    );
    assert_eq!(p.client.read(id), Ok(None));
}

#[test]
fn frames_crossing_a_reset_are_ignored() {
    let mut p = Pair::new();
    let id = p.open_accepted(22);
    // Both sides act before hearing from the other: the agent's DATA and FIN arrive at a
    // client that already reset the stream, which must not be a protocol error.
    p.agent.write(id, b"in flight").expect("write");
    p.agent.finish(id).expect("finish");
    p.client
        .reset(id, ResetCode::CANCELLED, "bye")
        .expect("reset");
    p.pump();
    assert!(!p.client.is_closed() && !p.agent.is_closed());
    let id2 = p.open_accepted(22);
    assert_eq!(id2.get(), 3);
}

#[test]
fn stalled_stream_does_not_stop_another_streams_large_transfer() {
    let mut p = Pair::new();
    let stalled = p.open_accepted(1);
    let busy = p.open_accepted(2);

    // The agent fills the stalled stream as far as it is let; the client never reads it.
    let filler = pattern(64 * 1024, 9);
    let mut stalled_written = 0;
    for _ in 0..1_000 {
        let n = p.agent.write(stalled, &filler).expect("write");
        stalled_written += n;
        p.pump();
        if n == 0 {
            break;
        }
    }
    let window = Config::default().initial_window as usize;
    assert!(stalled_written >= window, "{stalled_written}");

    // Meanwhile 20 MB cross on the other stream, read as it arrives.
    let total = 20 * 1024 * 1024;
    let chunk = pattern(256 * 1024, 3);
    let (mut sent, mut received) = (0usize, 0usize);
    for _ in 0..100_000 {
        if sent < total {
            let want = (total - sent).min(chunk.len());
            sent += p.agent.write(busy, &chunk[..want]).expect("write");
        }
        p.pump();
        while let Some(b) = p.client.read(busy).expect("read") {
            received += b.len();
        }
        if received == total {
            break;
        }
    }
    assert_eq!(received, total);
    assert!(p.client.readable_len(stalled) <= window);
    assert!(!p.client.is_closed());
}

#[test]
fn unsent_bytes_never_exceed_the_send_buffer_whatever_the_credit() {
    let config = Config {
        send_buffer: 10_000,
        ..Config::default()
    };
    let mut p = Pair::with(config, Config::default());
    let id = p.open_accepted(1);
    // The channel is busy (nothing is transmitted): the peer's 1 MiB of credit must not
    // turn into 1 MiB queued here.
    let data = pattern(300_000, 4);
    let mut taken = 0;
    for _ in 0..100 {
        taken += p.client.write(id, &data[taken..]).expect("write");
    }
    assert_eq!(taken, 10_000);

    // As frames leave, the queue takes more, and everything arrives in order.
    let mut received = Vec::new();
    for _ in 0..10_000 {
        p.pump();
        while let Some(b) = p.agent.read(id).expect("read") {
            received.extend_from_slice(&b);
        }
        if taken < data.len() {
            let n = p.client.write(id, &data[taken..]).expect("write");
            assert!(n <= 10_000, "{n}");
            taken += n;
        } else if received.len() == data.len() {
            break;
        }
    }
    assert_eq!(received, data);
    assert!(
        p.client_events.contains(&Event::Writable { id }),
        "a short write is followed by Writable"
    );
}

#[test]
fn receive_buffer_never_exceeds_the_window() {
    let config = Config {
        initial_window: 100_000,
        ..Config::default()
    };
    let mut p = Pair::with(config, config);
    let id = p.open_accepted(1);
    let data = pattern(30_000, 0);
    for _ in 0..100 {
        p.agent.write(id, &data).expect("write");
        p.pump();
        assert!(p.client.readable_len(id) <= 100_000);
    }
    assert_eq!(p.client.readable_len(id), 100_000);
    // The sender holds at most its own window of unsent bytes on top.
    assert_eq!(p.agent.writable_len(id), 0);
    assert_eq!(p.agent.write(id, b"x"), Ok(0));

    // Reading frees credit and the blocked writer is told.
    let _ = read_all(&mut p.client, id);
    p.pump();
    assert!(p.agent_events.contains(&Event::Writable { id }));
}

#[test]
fn small_reads_grant_credit_without_stalling_the_sender() {
    let config = Config {
        initial_window: 64 * 1024,
        ..Config::default()
    };
    let mut p = Pair::with(config, config);
    let id = p.open_accepted(1);
    let data = pattern(1_000_000, 5);
    let mut sent = 0;
    let mut got = Vec::new();
    for _ in 0..10_000 {
        if sent < data.len() {
            sent += p.agent.write(id, &data[sent..]).expect("write");
        }
        p.pump();
        // One chunk per round: the application reads slowly.
        if let Some(b) = p.client.read(id).expect("read") {
            got.extend_from_slice(&b);
        }
        if got.len() == data.len() {
            break;
        }
    }
    assert_eq!(got, data);
}

#[test]
fn streams_with_pending_data_are_served_round_robin() {
    let mut p = Pair::new();
    let ids: Vec<StreamId> = (0..3).map(|i| p.open_accepted(i)).collect();
    for id in &ids {
        p.client.write(*id, &pattern(100_000, 0)).expect("write");
    }
    let mut order = Vec::new();
    for _ in 0..9 {
        let msg = p.client.poll_transmit().expect("data queued");
        let Ok(Frame::Data { stream, .. }) = Frame::decode(&msg) else {
            panic!("expected DATA");
        };
        order.push(stream.get());
    }
    assert_eq!(order, [1, 3, 5, 1, 3, 5, 1, 3, 5]);
}

#[test]
fn data_frames_respect_the_smaller_max_payload() {
    let client = Config {
        max_frame_payload: 4096,
        ..Config::default()
    };
    let mut p = Pair::with(client, Config::default());
    let id = p.open_accepted(1);
    p.agent.write(id, &pattern(10_000, 0)).expect("write");
    let mut sizes = Vec::new();
    while let Some(msg) = p.agent.poll_transmit() {
        if let Ok(Frame::Data { data, .. }) = Frame::decode(&msg) {
            sizes.push(data.len());
        }
    }
    assert_eq!(sizes, [4096, 4096, 1808]);
}

#[test]
fn data_beyond_credit_resets_the_stream_with_flow_control() {
    let mut client = client_with_fake_agent(Config {
        initial_window: 1000,
        ..Config::default()
    });
    let id = client.open(1).expect("open");
    client
        .handle_message(
            Frame::OpenOk {
                stream: id,
                window: 1000,
            }
            .to_bytes(),
        )
        .expect("OPEN_OK");
    let ok = Frame::Data {
        stream: id,
        data: Bytes::from(vec![0; 600]),
    };
    client.handle_message(ok.to_bytes()).expect("within credit");
    client
        .handle_message(ok.to_bytes())
        .expect("a stream violation is not fatal");
    let mut events = Vec::new();
    while let Some(e) = client.poll_event() {
        events.push(e);
    }
    assert!(matches!(
        closed_end(&events, id),
        Some(StreamEnd::ResetLocally {
            code: ResetCode::FLOW_CONTROL,
            ..
        })
    ));
    let sent: Vec<Frame> = std::iter::from_fn(|| client.poll_transmit())
        .filter_map(|m| Frame::decode(&m).ok())
        .collect();
    assert!(sent.iter().any(|f| matches!(
        f,
        Frame::Reset { stream, code: ResetCode::FLOW_CONTROL, .. } if *stream == id
    )));
    assert!(!client.is_closed());
}

#[test]
fn data_after_fin_resets_the_stream() {
    let mut client = client_with_fake_agent(Config::default());
    let id = client.open(1).expect("open");
    for frame in [
        Frame::OpenOk {
            stream: id,
            window: 1000,
        },
        Frame::Fin { stream: id },
        Frame::Data {
            stream: id,
            data: Bytes::from_static(b"zombie"),
        },
    ] {
        client.handle_message(frame.to_bytes()).expect("not fatal");
    }
    let events: Vec<Event> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(matches!(
        closed_end(&events, id),
        Some(StreamEnd::ResetLocally { code: ResetCode::PROTOCOL_ERROR, ref reason })
            if reason.contains("after FIN")
    ));
}

#[test]
fn data_before_accept_resets_the_stream() {
    let mut agent = Tunnel::new(Role::Agent, Config::default());
    agent
        .handle_message(hello(PROTOCOL_VERSION))
        .expect("HELLO");
    agent
        .handle_message(raw_frame(0x02, 1, &[0, 0, 0x10, 0, 0, 22]))
        .expect("OPEN");
    agent
        .handle_message(raw_frame(0x04, 1, b"eager"))
        .expect("not fatal");
    let events: Vec<Event> = std::iter::from_fn(|| agent.poll_event()).collect();
    assert!(matches!(
        events.last(),
        Some(Event::StreamClosed {
            end: StreamEnd::ResetLocally {
                code: ResetCode::PROTOCOL_ERROR,
                ..
            },
            ..
        })
    ));
}

#[test]
fn frame_for_a_never_opened_stream_closes_the_tunnel() {
    let mut client = client_with_fake_agent(Config::default());
    let err = client
        .handle_message(raw_frame(0x04, 99, b"x"))
        .expect_err("unknown stream");
    assert_eq!(
        err,
        TunnelError::UnknownStream {
            frame: "DATA",
            stream: 99
        }
    );
    assert!(client.is_closed());
    // The peer is told why, in a RESET on stream 0.
    let last = std::iter::from_fn(|| client.poll_transmit()).last();
    let Some(Ok(Frame::Reset {
        stream,
        code,
        reason,
    })) = last.map(|m| Frame::decode(&m))
    else {
        panic!("no closing RESET");
    };
    assert!(stream.is_connection());
    assert_eq!(code, ResetCode::PROTOCOL_ERROR);
    assert!(reason.contains("never opened"), "{reason}");
}

#[test]
fn frame_before_hello_closes_the_tunnel() {
    let mut agent = Tunnel::new(Role::Agent, Config::default());
    let err = agent
        .handle_message(raw_frame(0x02, 1, &[0, 0, 0x10, 0, 0, 22]))
        .expect_err("OPEN before HELLO");
    assert_eq!(err, TunnelError::BeforeHello { frame: "OPEN" });
    assert!(agent.is_closed());
}

#[test]
fn open_with_a_reused_or_even_id_closes_the_tunnel() {
    for ids in [[1u32, 1], [3, 1], [1, 4]] {
        let mut agent = Tunnel::new(Role::Agent, Config::default());
        agent
            .handle_message(hello(PROTOCOL_VERSION))
            .expect("HELLO");
        agent
            .handle_message(raw_frame(0x02, ids[0], &[0, 0, 0x10, 0, 0, 22]))
            .expect("first OPEN");
        assert!(matches!(
            agent.handle_message(raw_frame(0x02, ids[1], &[0, 0, 0x10, 0, 0, 22])),
            Err(TunnelError::Violation(_))
        ));
    }
}

#[test]
fn version_mismatch_is_a_clear_error_on_both_sides() {
    let mut agent = Tunnel::new(Role::Agent, Config::default());
    let err = agent.handle_message(hello(2)).expect_err("version 2");
    assert_eq!(err, TunnelError::VersionMismatch { ours: 1, theirs: 2 });
    assert_eq!(
        err.to_string(),
        "peer speaks tunnel protocol version 2, this side speaks 1"
    );

    // The RESET the agent queued tells a (version-1) client why, even before its HELLO.
    let mut client = Tunnel::new(Role::Client, Config::default());
    let id = client.open(22).expect("open");
    let msgs: Vec<Bytes> = std::iter::from_fn(|| agent.poll_transmit()).collect();
    for m in msgs {
        client
            .handle_message(m)
            .expect("a peer's close is not our error");
    }
    let events: Vec<Event> = std::iter::from_fn(|| client.poll_event()).collect();
    assert_eq!(closed_end(&events, id), Some(StreamEnd::TunnelClosed));
    let Some(Event::Closed {
        code,
        reason,
        by_peer,
    }) = events.last()
    else {
        panic!("no Closed: {events:?}");
    };
    assert_eq!(*code, ResetCode::VERSION_MISMATCH);
    assert!(*by_peer);
    assert!(reason.contains("version 2"), "{reason}");
    assert_eq!(client.open(22), Err(StreamError::Closed));
}

#[test]
fn ping_is_answered_with_the_same_payload() {
    let mut p = Pair::new();
    p.client.ping(0xdead_beef);
    p.agent.ping(7);
    p.pump();
    assert!(p.client_events.contains(&Event::Pong {
        payload: 0xdead_beef
    }));
    assert!(p.agent_events.contains(&Event::Pong { payload: 7 }));
}

#[test]
fn ping_flood_closes_the_tunnel_instead_of_queueing_forever() {
    let mut agent = Tunnel::new(Role::Agent, Config::default());
    agent
        .handle_message(hello(PROTOCOL_VERSION))
        .expect("HELLO");
    let ping = Frame::Ping { payload: 1 }.to_bytes();
    let mut result = Ok(());
    for _ in 0..1_000 {
        result = agent.handle_message(ping.clone());
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(result, Err(TunnelError::Flooded(_))));
}

#[test]
fn close_ends_every_stream_and_tells_the_peer() {
    let mut p = Pair::new();
    let a = p.open_accepted(1);
    let b = p.open_accepted(2);
    p.agent.close(ResetCode::NO_ERROR, "agent shutting down");
    p.pump();
    for id in [a, b] {
        assert_eq!(
            closed_end(&p.client_events, id),
            Some(StreamEnd::TunnelClosed)
        );
        assert_eq!(
            closed_end(&p.agent_events, id),
            Some(StreamEnd::TunnelClosed)
        );
    }
    assert_eq!(
        p.client_events.last(),
        Some(&Event::Closed {
            code: ResetCode::NO_ERROR,
            reason: "agent shutting down".into(),
            by_peer: true
        })
    );
    assert!(p.client.is_closed() && p.agent.is_closed());
}

#[test]
fn agent_refuses_opens_beyond_its_stream_limit() {
    let agent = Config {
        max_streams: 2,
        ..Config::default()
    };
    let mut p = Pair::with(Config::default(), agent);
    let _a = p.open_accepted(1);
    let _b = p.open_accepted(1);
    let c = p.client.open(1).expect("client has no such limit");
    p.pump();
    assert!(matches!(
        closed_end(&p.client_events, c),
        Some(StreamEnd::Refused {
            code: ResetCode::REFUSED,
            ..
        })
    ));
}

#[test]
fn roles_are_enforced() {
    let mut p = Pair::new();
    assert_eq!(p.agent.open(22), Err(StreamError::WrongRole(Role::Agent)));
    let id = p.client.open(22).expect("open");
    assert_eq!(
        p.client.accept(id),
        Err(StreamError::WrongRole(Role::Client))
    );
    p.pump();
    p.agent.accept(id).expect("accept");
    assert_eq!(p.agent.accept(id), Err(StreamError::NotPending(id)));
}

#[test]
fn writes_before_accept_wait_for_writable() {
    let mut p = Pair::new();
    let id = p.client.open(22).expect("open");
    assert_eq!(p.client.write(id, b"early"), Ok(0));
    p.pump();
    p.agent.accept(id).expect("accept");
    p.pump();
    assert!(p.client_events.contains(&Event::Writable { id }));
    assert_eq!(p.client.write(id, b"early"), Ok(5));
}

/// A small deterministic generator, so the test replays the same inputs on every run.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_frames_from_a_hostile_peer_never_panic() {
    let mut rng = XorShift(0x0123_4567_89ab_cdef);
    for round in 0..2_000 {
        let role = if round % 2 == 0 {
            Role::Client
        } else {
            Role::Agent
        };
        let mut t = Tunnel::new(
            role,
            Config {
                initial_window: 4096,
                ..Config::default()
            },
        );
        if role == Role::Client {
            let _ = t.open(22);
            let _ = t.open(80);
        }
        let _ = t.handle_message(hello(PROTOCOL_VERSION));
        for _ in 0..50 {
            // Mostly well-formed frames on small stream ids, so the state machine is hit
            // deep, with some raw garbage.
            let ty = (rng.next() % 11) as u8;
            let stream = (rng.next() % 6) as u32;
            let len = (rng.next() % 40) as usize;
            let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = t.handle_message(raw_frame(ty, stream, &payload));
            while let Some(e) = t.poll_event() {
                if let Event::StreamOpened { id, .. } = e {
                    let _ = t.accept(id);
                    let _ = t.write(id, &payload);
                }
            }
            while t.poll_transmit().is_some() {}
        }
    }
}
