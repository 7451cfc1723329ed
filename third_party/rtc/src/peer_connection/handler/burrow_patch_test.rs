//! Burrow patch: the pipeline's queues give back the capacity a burst made them grow to.

use super::{QUEUE_KEPT_CAPACITY, QUEUE_TRIM_INTERVAL};
use crate::peer_connection::RTCPeerConnectionBuilder;
use crate::peer_connection::message::internal::{RTCMessageInternal, TaggedRTCMessageInternal};
use bytes::BytesMut;
use sansio::Protocol;
use shared::TaggedBytesMut;
use std::time::{Duration, Instant};

/// About what one driver iteration of a bulk transfer moves through each queue.
const BURST: usize = 3_500;

fn raw(now: Instant) -> TaggedRTCMessageInternal {
    TaggedRTCMessageInternal {
        now,
        transport: Default::default(),
        message: RTCMessageInternal::Raw(BytesMut::from(&b"packet"[..])),
    }
}

fn datagram(now: Instant) -> TaggedBytesMut {
    TaggedBytesMut {
        now,
        transport: Default::default(),
        message: BytesMut::from(&b"datagram"[..]),
    }
}

/// Fills the SCTP and DTLS handlers' write queues and the pipeline's own with a burst, then
/// drains them as the pipeline does.
fn burst_through(pc: &mut crate::peer_connection::RTCPeerConnection, now: Instant) {
    let ctx = &mut pc.pipeline_context;
    for _ in 0..BURST {
        ctx.sctp_handler_context.write_outs.push_back(raw(now));
        ctx.dtls_handler_context.write_outs.push_back(raw(now));
        ctx.write_outs.push_back(datagram(now));
    }
    ctx.sctp_handler_context.write_outs.clear();
    ctx.dtls_handler_context.write_outs.clear();
    ctx.write_outs.clear();
}

#[test]
fn an_idle_connection_gives_back_the_queue_capacity_a_burst_grew() {
    let base = Instant::now();
    let mut pc = RTCPeerConnectionBuilder::new()
        .build(base)
        .expect("build peer connection");
    let before = pc.pipeline_context.queue_capacity();
    burst_through(&mut pc, base);
    assert!(pc.pipeline_context.queue_capacity() >= before + 3 * BURST);

    let _ = pc.handle_timeout(base + QUEUE_TRIM_INTERVAL);

    let after = pc.pipeline_context.queue_capacity();
    assert!(
        after <= before + 3 * QUEUE_KEPT_CAPACITY,
        "capacity {after} messages after the burst and a timeout, {before} before it"
    );
}

#[test]
fn queues_are_trimmed_at_most_once_per_interval() {
    let base = Instant::now();
    let mut pc = RTCPeerConnectionBuilder::new()
        .build(base)
        .expect("build peer connection");
    let _ = pc.handle_timeout(base + QUEUE_TRIM_INTERVAL);
    // A burst right after a trim keeps its capacity until the interval has passed again, so
    // a busy connection reallocates its queues at most once a second.
    burst_through(&mut pc, base + QUEUE_TRIM_INTERVAL);
    let grown = pc.pipeline_context.queue_capacity();

    let _ = pc.handle_timeout(base + QUEUE_TRIM_INTERVAL + Duration::from_millis(500));
    assert_eq!(pc.pipeline_context.queue_capacity(), grown);

    let _ = pc.handle_timeout(base + 2 * QUEUE_TRIM_INTERVAL);
    assert!(pc.pipeline_context.queue_capacity() < grown);
}

#[test]
fn a_queue_that_holds_messages_keeps_them_all_through_a_trim() {
    let base = Instant::now();
    let mut pc = RTCPeerConnectionBuilder::new()
        .build(base)
        .expect("build peer connection");
    for _ in 0..BURST {
        pc.pipeline_context.write_outs.push_back(datagram(base));
    }

    let _ = pc.handle_timeout(base + QUEUE_TRIM_INTERVAL);

    let mut polled = 0;
    while let Some(datagram) = pc.poll_write() {
        assert_eq!(&datagram.message[..], b"datagram");
        polled += 1;
    }
    assert_eq!(polled, BURST, "a queued datagram was lost or made up");
}
