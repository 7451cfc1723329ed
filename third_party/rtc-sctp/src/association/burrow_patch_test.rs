//! Burrow's patches to loss recovery (see BURROW.md at the crate's root): what a lost DATA
//! chunk costs when the peer reports it missing.

use super::*;
use crate::chunk::chunk_selective_ack::GapAckBlock;
use crate::chunk::chunk_type::{CT_RECONFIG, ChunkType};

/// An established association that has sent `count` one-chunk messages, TSN 100 onwards,
/// all in one window.
fn sent(count: u32) -> Result<(Association, Instant)> {
    let mut a = timed_test_association();
    a.my_next_tsn = 100;
    a.cumulative_tsn_ack_point = 99;
    a.advanced_peer_tsn_ack_point = 99;
    a.cwnd = count * a.mtu;
    a.ssthresh = a.cwnd;
    a.rwnd = 4 * a.cwnd;
    let now = Instant::now();
    let ppi = PayloadProtocolIdentifier::Binary;
    let mut stream = a.open_stream(1, ppi)?;
    for _ in 0..count {
        stream.write_sctp(now, &Bytes::from(vec![0x42; 1024]), ppi)?;
    }
    let tsns: Vec<u32> = transmitted_data(&a.gather_outbound(now).0)
        .iter()
        .map(|c| c.tsn)
        .collect();
    assert_eq!((100..100 + count).collect::<Vec<_>>(), tsns);
    Ok((a, now))
}

/// The peer's SACK: everything up to `cum` and the inclusive TSN ranges in `received`.
fn sack(cum: u32, received: &[(u32, u32)]) -> ChunkSelectiveAck {
    ChunkSelectiveAck {
        cumulative_tsn_ack: cum,
        advertised_receiver_window_credit: 1 << 20,
        gap_ack_blocks: received
            .iter()
            .map(|&(first, last)| GapAckBlock {
                start: (first - cum) as u16,
                end: (last - cum) as u16,
            })
            .collect(),
        ..Default::default()
    }
}

/// Hands `s` to the association and returns the DATA TSNs it sends in answer.
fn answer(a: &mut Association, s: &ChunkSelectiveAck, at: Instant) -> Result<Vec<u32>> {
    a.handle_sack(s, at)?;
    Ok(transmitted_data(&a.gather_outbound(at).0)
        .iter()
        .map(|c| c.tsn)
        .collect())
}

#[test]
fn chunks_still_in_flight_are_not_counted_missing_during_fast_recovery() -> Result<()> {
    // 100, 101 and 102 are lost; the peer has 103.. up to what each SACK says. 120..139 are
    // still on their way, reported neither received nor missing.
    let (mut a, now) = sent(40)?;
    let mut retransmitted = vec![];
    for last in 103..=105 {
        retransmitted.extend(answer(&mut a, &sack(99, &[(103, last)]), now)?);
    }
    assert!(a.in_fast_recovery);
    // Each retransmission arrives and advances the cumulative ack.
    for cum in 100..=102 {
        retransmitted.extend(answer(&mut a, &sack(cum, &[(103, 119)]), now)?);
    }
    assert_eq!(vec![100, 101, 102], retransmitted);
    for tsn in 120..140 {
        assert_eq!(
            0,
            a.inflight_queue.get(tsn).unwrap().miss_indicator,
            "tsn {tsn}"
        );
    }
    Ok(())
}

#[test]
fn a_chunk_marked_lost_during_a_fast_recovery_that_ends_first_is_still_fast_retransmitted()
-> Result<()> {
    // 100..104 are lost, and so is 110. Fast recovery retransmits one chunk per SACK that
    // advances the cumulative ack, lowest first; 110 collects its three miss indications
    // meanwhile, and the recovery ends (the cumulative ack passes its exit point, 107) when
    // the retransmitted 104 fills the hole before 105..109.
    let (mut a, now) = sent(40)?;
    let mut retransmitted = vec![];
    for last in 105..=107 {
        retransmitted.extend(answer(&mut a, &sack(99, &[(105, last)]), now)?);
    }
    assert!(a.in_fast_recovery);
    for cum in 100..=103 {
        let received = [(105, 109), (111, 112 + cum - 100)];
        retransmitted.extend(answer(&mut a, &sack(cum, &received), now)?);
    }
    assert_eq!(vec![100, 101, 102, 103, 104], retransmitted);
    assert_eq!(3, a.inflight_queue.get(110).unwrap().miss_indicator);

    let after = answer(&mut a, &sack(109, &[(111, 117)]), now)?;
    assert!(!a.in_fast_recovery);
    assert_eq!(
        Some(&110),
        after.first(),
        "110 must be retransmitted on the next SACK, not left to T3-rtx"
    );
    Ok(())
}

#[test]
fn the_retransmission_timeout_floor_is_400_ms_above_a_browsers_200_ms_delayed_sack() {
    let mut rto = RtoManager::new();
    // A loopback or LAN path: RTT about a millisecond.
    for _ in 0..16 {
        rto.set_new_rtt(1);
    }
    assert_eq!(400, rto.get_rto());
    // A long path is bounded by its own measurements, not the floor.
    let mut rto = RtoManager::new();
    for _ in 0..16 {
        rto.set_new_rtt(500);
    }
    assert!(rto.get_rto() > 400, "{}", rto.get_rto());
}

#[test]
fn a_lost_fast_retransmission_is_sent_again_once_later_data_is_acknowledged_not_left_to_t3_rtx()
-> Result<()> {
    // 100 is lost; three SACKs reporting 101.. received fast-retransmit it at 1 ms.
    let (mut a, now) = sent(40)?;
    let at = |ms| now + Duration::from_millis(ms);
    let mut retransmitted = vec![];
    for last in [110, 120, 139] {
        retransmitted.extend(answer(&mut a, &sack(99, &[(101, last)]), at(1))?);
    }
    assert_eq!(vec![100], retransmitted);
    // Repeating what the peer had before the retransmission tells nothing of it.
    assert!(answer(&mut a, &sack(99, &[(101, 139)]), at(2))?.is_empty());

    // New DATA goes out after the retransmission, and the peer acknowledges it while 100 is
    // still missing: the retransmission was lost too (the peer's socket buffer overflowed).
    let ppi = PayloadProtocolIdentifier::Binary;
    let mut stream = a.stream(1)?;
    for _ in 0..10 {
        stream.write_sctp(at(20), &Bytes::from(vec![0x42; 1024]), ppi)?;
    }
    let new: Vec<u32> = transmitted_data(&a.gather_outbound(at(20)).0)
        .iter()
        .map(|c| c.tsn)
        .collect();
    assert_eq!((140..150).collect::<Vec<_>>(), new);
    assert_eq!(
        vec![100],
        answer(&mut a, &sack(99, &[(101, 149)]), at(30))?,
        "100 must be retransmitted again now, not after the RTO"
    );
    // One retransmission per acknowledgment of later DATA: the same SACK again sends nothing.
    assert!(answer(&mut a, &sack(99, &[(101, 149)]), at(31))?.is_empty());
    Ok(())
}

/// An established association with path MTU discovery on (up to the default ceiling).
fn probing_association() -> Association {
    let mut a = Association::new(
        None,
        Arc::new(TransportConfig::default()),
        1400 - (COMMON_HEADER_SIZE + DATA_CHUNK_HEADER_SIZE),
        0,
        SocketAddr::from_str("0.0.0.0:0").unwrap(),
        SocketAddr::from_str("0.0.0.0:0").unwrap(),
        TransportProtocol::UDP,
        Instant::now(),
    );
    a.control_queue.clear();
    a.timers.stop(Timer::T1Init);
    a.set_state(AssociationState::Established);
    a.rwnd = 1 << 20;
    a.cwnd = 1 << 20;
    a.peer_supports_pad = true;
    a
}

/// The path MTU probes among `packets`, by size.
fn probes(packets: &[Bytes]) -> Vec<usize> {
    packets
        .iter()
        .filter(|raw| {
            Packet::unmarshal(raw)
                .unwrap()
                .chunks
                .iter()
                .any(|c| c.as_any().is::<ChunkHeartbeat>())
        })
        .map(|raw| raw.len())
        .collect()
}

/// Hands `packets` to `to`, as a path that carries only packets of up to `path_mtu` bytes.
fn deliver(to: &mut Association, packets: Vec<Bytes>, path_mtu: usize, now: Instant) {
    for raw in packets.into_iter().filter(|raw| raw.len() <= path_mtu) {
        to.handle_inbound(Packet::unmarshal(&raw).unwrap(), now)
            .unwrap();
    }
}

#[test]
fn answered_probes_raise_the_packet_size_and_data_already_queued_on_a_stream_uses_it() -> Result<()>
{
    // Configured at 1400 bytes; loopback carries anything, so the search ends at the
    // ceiling. The stream is opened before the search and keeps no size of its own.
    let mut a = probing_association();
    let mut b = probing_association();
    let now = Instant::now();
    let ppi = PayloadProtocolIdentifier::Binary;
    a.open_stream(1, ppi)?;
    let mut sizes = vec![];
    for _ in 0..10 {
        let out = a.gather_outbound(now).0;
        sizes.extend(probes(&out));
        deliver(&mut b, out, usize::MAX, now);
        // b answers each probe with a HEARTBEAT-ACK; its own probes go to a as well.
        let back = b.gather_outbound(now).0;
        deliver(&mut a, back, usize::MAX, now);
    }
    assert_eq!(
        vec![8900, 16_000],
        sizes,
        "1400 is the configured size, not probed"
    );
    assert_eq!(16_000, a.mtu);
    assert_eq!(16_000, b.mtu, "b probed its own direction");

    a.stream(1)?
        .write_sctp(now, &Bytes::from(vec![0x42; 64 * 1024]), ppi)?;
    let out = a.gather_outbound(now).0;
    let payloads: Vec<usize> = transmitted_data(&out)
        .iter()
        .map(|c| c.user_data.len())
        .collect();
    assert_eq!(vec![15_972, 15_972, 15_972, 15_972, 1648], payloads);
    assert!(out.iter().all(|raw| raw.len() <= 16_000));
    Ok(())
}

#[test]
fn a_path_that_drops_large_packets_keeps_the_largest_size_that_got_through() -> Result<()> {
    // A 9000-byte path: 8900 is answered, 16 000 never; after three tries the search stops
    // (until RFC 8899's raise timer, 600 s) and data keeps flowing at 8900.
    let mut a = probing_association();
    let mut b = probing_association();
    a.path_mtu = PathMtuSearch::new(1400, 16_000);
    let mut now = Instant::now();
    let mut lost = 0;
    for _ in 0..20 {
        let out = a.gather_outbound(now).0;
        lost += probes(&out).iter().filter(|&&s| s > 9000).count();
        deliver(&mut b, out, 9000, now);
        let back = b.gather_outbound(now).0;
        deliver(&mut a, back, 9000, now);
        now += Duration::from_millis(1000);
        a.handle_timeout(now);
    }
    assert_eq!(3, lost, "16 000 is tried three times");
    assert_eq!(8900, a.mtu);
    let next = a.poll_timeout().expect("a later search is scheduled");
    assert!(next > now + Duration::from_secs(500), "{next:?}");
    Ok(())
}

#[test]
fn an_unknown_chunk_type_with_the_skip_bit_is_skipped_and_one_without_drops_the_packet() {
    let mut raw = BytesMut::new();
    let header = |raw: &mut BytesMut| {
        raw.extend_from_slice(&[0x13, 0x88, 0x13, 0x88, 0, 0, 0, 1, 0, 0, 0, 0]);
    };
    let with_checksum = |mut raw: BytesMut| {
        let sum = crate::util::generate_packet_checksum(&raw.clone().freeze());
        raw[8..12].copy_from_slice(&sum.to_le_bytes());
        raw.freeze()
    };
    header(&mut raw);
    // PAD (0x84, top bits 10) of 8 bytes, then a COOKIE-ACK.
    raw.extend_from_slice(&[0x84, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0]);
    raw.extend_from_slice(&[11, 0, 0, 4]);
    let packet = Packet::unmarshal(&with_checksum(raw)).expect("PAD is skipped");
    assert_eq!(1, packet.chunks.len());
    assert!(packet.chunks[0].as_any().is::<ChunkCookieAck>());

    let mut raw = BytesMut::new();
    header(&mut raw);
    // Type 0x3f: top bits 00, "stop processing this SCTP packet and discard it".
    raw.extend_from_slice(&[0x3f, 0, 0, 4]);
    assert!(Packet::unmarshal(&with_checksum(raw)).is_err());
}

/// The peer's INIT: an endpoint that lists the chunk types in `extensions`.
fn peer_init(extensions: Vec<ChunkType>) -> (Packet, ChunkInit) {
    let pkt = Packet {
        common_header: CommonHeader {
            source_port: 5000,
            destination_port: 5000,
            ..Default::default()
        },
        ..Default::default()
    };
    let init = ChunkInit {
        initial_tsn: 1234,
        num_outbound_streams: 1024,
        num_inbound_streams: 1024,
        initiate_tag: 5678,
        advertised_receiver_window_credit: 1 << 20,
        params: vec![Box::new(ParamSupportedExtensions {
            chunk_types: extensions,
        })],
        ..Default::default()
    };
    (pkt, init)
}

#[test]
fn only_a_peer_that_lists_pad_among_its_extensions_is_probed() -> Result<()> {
    // Chrome lists RE-CONFIG and FORWARD-TSN but not PAD, and closed the data channel
    // when it was probed; a patched peer lists PAD.
    for (extensions, probed) in [
        (vec![CT_RECONFIG, CT_FORWARD_TSN], false),
        (vec![CT_RECONFIG, CT_FORWARD_TSN, CT_PAD], true),
    ] {
        let mut a = probing_association();
        a.peer_supports_pad = false;
        a.set_state(AssociationState::Closed);
        let (pkt, init) = peer_init(extensions.clone());
        a.handle_init(&pkt, &init)?;
        a.set_state(AssociationState::Established);
        a.control_queue.clear();
        let now = Instant::now();
        let sent = probes(&a.gather_outbound(now).0);
        assert_eq!(probed, !sent.is_empty(), "{extensions:?}: {sent:?}");
        assert_eq!(probed, a.poll_timeout().is_some(), "{extensions:?}");
    }
    // And this endpoint lists PAD in its own INIT and INIT-ACK.
    let mut init = ChunkInit::default();
    init.set_supported_extensions();
    let listed = init.params.iter().any(|p| {
        p.as_any()
            .downcast_ref::<ParamSupportedExtensions>()
            .is_some_and(|e| e.chunk_types.contains(&CT_PAD))
    });
    assert!(listed);
    Ok(())
}
