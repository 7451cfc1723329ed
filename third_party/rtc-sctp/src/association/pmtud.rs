//! Burrow patch (5): packetization-layer path MTU discovery (RFC 8899, its section 6.2 for
//! SCTP), sans-IO like the rest of the association.
//!
//! The association starts at the configured MTU (1191 bytes by default, safe on any path,
//! TURN over IPv6 included) and then probes for larger packets with HEARTBEAT padded by PAD
//! to the size under test. A probe the peer answers proves that size end to end: through
//! DTLS, ICE, any relay and the peer's receive path. Per-packet costs dominate a user-space
//! stack, so on a path that carries large datagrams (loopback, a jumbo-frame LAN) each byte
//! costs far less; on a 1500-byte path the gain is small, and where nothing larger gets
//! through nothing changes.

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Sizes (whole SCTP packets) tried above the configured one, smallest first: a 1500-byte
/// Ethernet path still carries 1400 after IPv6 (40), UDP (8), a TURN ChannelData header (4)
/// and a DTLS 1.2 AES-GCM record's overhead (37); 8900 is the same for 9000-byte jumbo
/// frames; 16 000 stays under DTLS's largest record (2^14 bytes of plaintext).
const CANDIDATES: [u32; 3] = [1400, 8900, 16_000];

/// Probes of one size before that size counts as not carried (RFC 8899's MAX_PROBES).
const MAX_PROBES: u8 = 3;

/// After a search ends below the ceiling, the next one starts this much later (RFC 8899's
/// PMTU_RAISE_TIMER): the path may have changed.
const RAISE_AFTER: Duration = Duration::from_secs(600);

/// After falling back for a suspected black hole, the search starts again this much later.
const RETRY_AFTER_BLACK_HOLE: Duration = Duration::from_secs(30);

/// Marks a heartbeat as one of this search's probes (the peer echoes it unchanged).
const MAGIC: &[u8; 4] = b"BPMT";

/// Bytes a probe's HEARTBEAT takes: the packet's common header (12), the chunk header (4),
/// the heartbeat info parameter's header (4) and its value (magic, size, sequence: 16).
const PROBE_OVERHEAD: u32 = 12 + 4 + 4 + 16;

/// The PAD chunk's header, which the padding adds to [`PROBE_OVERHEAD`].
const PAD_HEADER: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The association is not established yet: nothing is probed.
    Idle,
    /// A probe of `size` is to be sent once `at` has come.
    Due { size: u32, attempt: u8, at: Instant },
    /// A probe is out; it counts as lost at `deadline`.
    InFlight {
        size: u32,
        seq: u64,
        attempt: u8,
        deadline: Instant,
    },
    /// The search has ended; the next one starts at `at` (`None`: the ceiling is reached).
    Searched { at: Option<Instant> },
}

/// One probe to send: `padding` bytes of PAD after a HEARTBEAT whose info is `info`.
#[derive(Debug)]
pub(crate) struct Probe {
    pub(crate) info: Bytes,
    pub(crate) padding: usize,
    pub(crate) size: u32,
}

/// The search for the largest packet the path carries.
#[derive(Debug)]
pub(crate) struct PathMtuSearch {
    base: u32,
    ceiling: u32,
    confirmed: u32,
    seq: u64,
    state: State,
}

impl Default for PathMtuSearch {
    fn default() -> Self {
        PathMtuSearch::new(0, 0)
    }
}

impl PathMtuSearch {
    /// A search between `base` (the configured MTU, never probed) and `ceiling`; a ceiling at
    /// or below the base turns the search off.
    pub(crate) fn new(base: u32, ceiling: u32) -> Self {
        PathMtuSearch {
            base,
            // Probe sizes are whole words, so PAD needs no padding of its own.
            ceiling: ceiling & !3,
            confirmed: base,
            seq: 0,
            state: State::Idle,
        }
    }

    /// The largest packet size proven so far (the base before any probe succeeded).
    pub(crate) fn confirmed(&self) -> u32 {
        self.confirmed
    }

    fn next_size(&self) -> Option<u32> {
        CANDIDATES
            .iter()
            .copied()
            .chain(std::iter::once(self.ceiling))
            .filter(|&s| s > self.confirmed && s <= self.ceiling)
            .min()
    }

    fn search_from_here(&mut self, now: Instant) {
        self.state = match self.next_size() {
            Some(size) => State::Due {
                size,
                attempt: 0,
                at: now,
            },
            None => State::Searched { at: None },
        };
    }

    /// When the search needs to act next, if it has something pending.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Due { at, .. } => Some(at),
            State::InFlight { deadline, .. } => Some(deadline),
            State::Searched { at } => at,
            State::Idle => None,
        }
    }

    /// Advances the search's clock: a probe unanswered past its deadline is lost, and a
    /// finished search is due again after [`RAISE_AFTER`].
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::InFlight {
                size,
                attempt,
                deadline,
                ..
            } if now >= deadline => {
                if attempt + 1 >= MAX_PROBES {
                    log::debug!(
                        "path MTU: {size} bytes not carried; staying at {}",
                        self.confirmed
                    );
                    self.state = State::Searched {
                        at: Some(now + RAISE_AFTER),
                    };
                } else {
                    self.state = State::Due {
                        size,
                        attempt: attempt + 1,
                        at: now,
                    };
                }
            }
            State::Searched { at: Some(at) } if now >= at => self.search_from_here(now),
            _ => {}
        }
    }

    /// The probe to send now, if one is due. `established` says whether the association can
    /// send (probing starts with the association); `timeout` is how long to wait for the
    /// answer (the retransmission timeout).
    pub(crate) fn poll_probe(
        &mut self,
        now: Instant,
        established: bool,
        timeout: Duration,
    ) -> Option<Probe> {
        if !established {
            return None;
        }
        if self.state == State::Idle {
            if self.ceiling <= self.base {
                self.state = State::Searched { at: None };
                return None;
            }
            self.search_from_here(now);
        }
        let State::Due { size, attempt, at } = self.state else {
            return None;
        };
        if now < at {
            return None;
        }
        self.seq = self.seq.wrapping_add(1);
        let mut info = BytesMut::with_capacity(16);
        info.put_slice(MAGIC);
        info.put_u32(size);
        info.put_u64(self.seq);
        self.state = State::InFlight {
            size,
            seq: self.seq,
            attempt,
            deadline: now + timeout,
        };
        Some(Probe {
            info: info.freeze(),
            padding: (size - PROBE_OVERHEAD - PAD_HEADER) as usize,
            size,
        })
    }

    /// A HEARTBEAT-ACK arrived with `info`. Returns the new confirmed size if it answers the
    /// probe in flight; anything else (an old probe, the peer's own heartbeat) is ignored.
    pub(crate) fn on_heartbeat_ack(&mut self, info: &[u8], now: Instant) -> Option<u32> {
        if info.len() != 16 || &info[..4] != MAGIC {
            return None;
        }
        let mut rest = &info[4..];
        let (size, seq) = (rest.get_u32(), rest.get_u64());
        match self.state {
            State::InFlight {
                size: want,
                seq: want_seq,
                ..
            } if size == want && seq == want_seq => {
                self.confirmed = size;
                self.search_from_here(now);
                Some(size)
            }
            _ => None,
        }
    }

    /// The association suspects that its packets stopped getting through (repeated
    /// retransmission timeouts). Returns the base size to fall back to if a probed size was
    /// in use; the search starts again after [`RETRY_AFTER_BLACK_HOLE`].
    pub(crate) fn on_black_hole(&mut self, now: Instant) -> Option<u32> {
        if self.confirmed <= self.base {
            return None;
        }
        log::debug!(
            "path MTU: falling back from {} to {} bytes after repeated retransmission timeouts",
            self.confirmed,
            self.base
        );
        self.confirmed = self.base;
        self.state = State::Searched {
            at: Some(now + RETRY_AFTER_BLACK_HOLE),
        };
        Some(self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTO: Duration = Duration::from_millis(400);

    fn answer(search: &mut PathMtuSearch, probe: &Probe, now: Instant) -> Option<u32> {
        search.on_heartbeat_ack(&probe.info, now)
    }

    #[test]
    fn nothing_is_probed_before_the_association_is_established() {
        let now = Instant::now();
        let mut s = PathMtuSearch::new(1191, 16_000);
        assert!(s.poll_probe(now, false, RTO).is_none());
        assert!(s.poll_timeout().is_none());
    }

    #[test]
    fn each_answered_probe_raises_the_size_up_to_the_ceiling() {
        let now = Instant::now();
        let mut s = PathMtuSearch::new(1191, 16_000);
        for want in CANDIDATES {
            let p = s.poll_probe(now, true, RTO).expect("a probe is due");
            assert_eq!(p.size, want);
            assert_eq!(
                PROBE_OVERHEAD as usize + PAD_HEADER as usize + p.padding,
                want as usize
            );
            assert_eq!(answer(&mut s, &p, now), Some(want));
        }
        assert_eq!(s.confirmed(), 16_000);
        assert!(s.poll_probe(now, true, RTO).is_none());
        assert!(
            s.poll_timeout().is_none(),
            "nothing more to search at the ceiling"
        );
    }

    #[test]
    fn a_size_unanswered_three_times_ends_the_search_at_the_last_answered_size() {
        let mut now = Instant::now();
        let mut s = PathMtuSearch::new(1191, 16_000);
        let p = s.poll_probe(now, true, RTO).unwrap();
        answer(&mut s, &p, now);
        for _ in 0..MAX_PROBES {
            let p = s.poll_probe(now, true, RTO).expect("probe or retry due");
            assert_eq!(p.size, 8900);
            assert!(
                s.poll_probe(now, true, RTO).is_none(),
                "one probe at a time"
            );
            now += RTO;
            s.handle_timeout(now);
        }
        assert!(s.poll_probe(now, true, RTO).is_none());
        assert_eq!(s.confirmed(), 1400);
        assert_eq!(s.poll_timeout(), Some(now + RAISE_AFTER));
        s.handle_timeout(now + RAISE_AFTER);
        assert_eq!(
            s.poll_probe(now + RAISE_AFTER, true, RTO).map(|p| p.size),
            Some(8900)
        );
    }

    #[test]
    fn an_answer_to_an_older_probe_or_a_foreign_heartbeat_proves_nothing() {
        let mut now = Instant::now();
        let mut s = PathMtuSearch::new(1191, 16_000);
        let first = s.poll_probe(now, true, RTO).unwrap();
        now += RTO;
        s.handle_timeout(now);
        let _retry = s.poll_probe(now, true, RTO).unwrap();
        assert_eq!(answer(&mut s, &first, now), None);
        assert_eq!(s.on_heartbeat_ack(b"someone else's heartbeat", now), None);
        assert_eq!(s.confirmed(), 1191);
    }

    #[test]
    fn a_black_hole_falls_back_to_the_base_and_searches_again_later() {
        let now = Instant::now();
        let mut s = PathMtuSearch::new(1191, 16_000);
        let p = s.poll_probe(now, true, RTO).unwrap();
        answer(&mut s, &p, now);
        assert_eq!(s.on_black_hole(now), Some(1191));
        assert_eq!(s.on_black_hole(now), None, "already at the base");
        let later = now + RETRY_AFTER_BLACK_HOLE;
        assert!(s.poll_probe(now, true, RTO).is_none());
        s.handle_timeout(later);
        assert_eq!(s.poll_probe(later, true, RTO).map(|p| p.size), Some(1400));
    }

    #[test]
    fn a_ceiling_at_the_base_turns_probing_off() {
        let now = Instant::now();
        let mut s = PathMtuSearch::new(1191, 1191);
        assert!(s.poll_probe(now, true, RTO).is_none());
        assert!(s.poll_timeout().is_none());
    }
}
