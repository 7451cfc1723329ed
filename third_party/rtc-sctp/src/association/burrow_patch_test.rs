//! Burrow's patches to loss recovery (see BURROW.md at the crate's root): what a lost DATA
//! chunk costs when the peer reports it missing.

use super::*;
use crate::chunk::chunk_selective_ack::GapAckBlock;

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
