//! The agent's built-in speed test (`burrow speedtest`): a stream to [`SPEEDTEST_PORT`]
//! that the agent serves itself instead of dialing a workspace port, so the tunnel's speed
//! can be measured with nothing installed in the workspace.
//!
//! The client's first [`REQUEST_LEN`] bytes are a [`Request`]:
//! - [`Request::Download`]: the agent sends that many bytes of the [`Pattern`], then FIN.
//! - [`Request::Upload`]: the client sends that many bytes of the pattern, then FIN; the
//!   agent answers with an [`UploadReport`] (what arrived, and whether it was intact), then
//!   FIN.
//!
//! Both ends check the bytes against the pattern, so a speed test also shows that nothing
//! was lost, reordered or corrupted on the way.

/// The stream port of the speed test. Port 0 names no TCP service, so no workspace port is
/// shadowed, and an agent's allow-list never has to mention it.
pub const SPEEDTEST_PORT: u16 = 0;

/// Length of an encoded [`Request`]: a kind byte and a big-endian `u64` byte count.
pub const REQUEST_LEN: usize = 9;

/// Length of an encoded [`UploadReport`]: a big-endian `u64` count and an intact flag.
pub const REPORT_LEN: usize = 9;

/// The most bytes one request may ask for (16 GiB): a typo must not tie an agent up for
/// hours.
pub const MAX_BYTES: u64 = 16 << 30;

const KIND_DOWNLOAD: u8 = 1;
const KIND_UPLOAD: u8 = 2;

/// Why a speed-test message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpeedtestError {
    /// The message is shorter than its fixed length.
    #[error("speed test message of {got} bytes, {want} expected")]
    Short {
        /// Bytes given.
        got: usize,
        /// Bytes the message has.
        want: usize,
    },
    /// The request's kind byte is neither download nor upload.
    #[error("unknown speed test request kind {0}")]
    UnknownKind(u8),
    /// The request asks for more than [`MAX_BYTES`].
    #[error("speed test of {0} bytes is over the limit of {MAX_BYTES}")]
    TooLarge(u64),
    /// The report's intact flag is neither 0 nor 1.
    #[error("bad speed test report flag {0}")]
    BadFlag(u8),
}

/// What the client asks of the agent's speed test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The agent sends this many bytes.
    Download {
        /// Bytes to send.
        bytes: u64,
    },
    /// The client sends this many bytes.
    Upload {
        /// Bytes the client will send.
        bytes: u64,
    },
}

impl Request {
    /// The request as it goes on the stream.
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let (kind, bytes) = match *self {
            Request::Download { bytes } => (KIND_DOWNLOAD, bytes),
            Request::Upload { bytes } => (KIND_UPLOAD, bytes),
        };
        let mut out = [0; REQUEST_LEN];
        out[0] = kind;
        out[1..].copy_from_slice(&bytes.to_be_bytes());
        out
    }

    /// Reads a request from the first [`REQUEST_LEN`] bytes of `buf` (more are ignored).
    pub fn decode(buf: &[u8]) -> Result<Request, SpeedtestError> {
        let head = buf.get(..REQUEST_LEN).ok_or(SpeedtestError::Short {
            got: buf.len(),
            want: REQUEST_LEN,
        })?;
        let kind = head[0];
        let mut count = [0; 8];
        count.copy_from_slice(&head[1..]);
        let bytes = u64::from_be_bytes(count);
        if bytes > MAX_BYTES {
            return Err(SpeedtestError::TooLarge(bytes));
        }
        match kind {
            KIND_DOWNLOAD => Ok(Request::Download { bytes }),
            KIND_UPLOAD => Ok(Request::Upload { bytes }),
            other => Err(SpeedtestError::UnknownKind(other)),
        }
    }
}

/// The agent's answer to an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadReport {
    /// Bytes that arrived after the request.
    pub received: u64,
    /// Every one of them matched the [`Pattern`].
    pub intact: bool,
}

impl UploadReport {
    /// The report as it goes on the stream.
    pub fn encode(&self) -> [u8; REPORT_LEN] {
        let mut out = [0; REPORT_LEN];
        out[..8].copy_from_slice(&self.received.to_be_bytes());
        out[8] = u8::from(self.intact);
        out
    }

    /// Reads a report from the first [`REPORT_LEN`] bytes of `buf`.
    pub fn decode(buf: &[u8]) -> Result<UploadReport, SpeedtestError> {
        let head = buf.get(..REPORT_LEN).ok_or(SpeedtestError::Short {
            got: buf.len(),
            want: REPORT_LEN,
        })?;
        let mut count = [0; 8];
        count.copy_from_slice(&head[..8]);
        let intact = match head[8] {
            0 => false,
            1 => true,
            other => return Err(SpeedtestError::BadFlag(other)),
        };
        Ok(UploadReport {
            received: u64::from_be_bytes(count),
            intact,
        })
    }
}

/// The bytes a speed test carries: byte `i` of the stream is `i % 251`. The period is
/// prime, so a lost, repeated or shifted chunk of any power-of-two size shows.
///
/// Filling and checking copy and compare slices of one precomputed block, at memory
/// speed: a per-byte loop would cost the test a good part of the throughput it measures.
#[derive(Debug, Clone)]
pub struct Pattern {
    block: Vec<u8>,
}

const PERIOD: usize = 251;

impl Default for Pattern {
    fn default() -> Self {
        Self::new()
    }
}

impl Pattern {
    /// The pattern, with a block of about 64 KiB to copy from.
    pub fn new() -> Self {
        let len = PERIOD * 261; // 65,511 bytes
        Self {
            block: (0..len).map(|i| (i % PERIOD) as u8).collect(),
        }
    }

    /// Fills `buf` with the pattern's bytes from stream offset `offset` on.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut at = phase(offset);
        let mut done = 0;
        while done < buf.len() {
            let n = (self.block.len() - at).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&self.block[at..at + n]);
            done += n;
            at = (at + n) % PERIOD;
        }
    }

    /// Whether `data` is the pattern's bytes from stream offset `offset` on.
    pub fn matches(&self, offset: u64, data: &[u8]) -> bool {
        let mut at = phase(offset);
        let mut done = 0;
        while done < data.len() {
            let n = (self.block.len() - at).min(data.len() - done);
            if data[done..done + n] != self.block[at..at + n] {
                return false;
            }
            done += n;
            at = (at + n) % PERIOD;
        }
        true
    }
}

fn phase(offset: u64) -> usize {
    // The remainder is below 251, so it fits any usize.
    (offset % PERIOD as u64) as usize
}

/// Checks a received byte stream against the [`Pattern`], chunk by chunk.
#[derive(Debug, Clone)]
pub struct Verifier {
    pattern: Pattern,
    received: u64,
    intact: bool,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    /// A verifier at stream offset 0.
    pub fn new() -> Self {
        Self {
            pattern: Pattern::new(),
            received: 0,
            intact: true,
        }
    }

    /// Takes the next chunk of the stream.
    pub fn update(&mut self, chunk: &[u8]) {
        if self.intact && !self.pattern.matches(self.received, chunk) {
            self.intact = false;
        }
        self.received += chunk.len() as u64;
    }

    /// Bytes taken so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Every byte taken so far matched the pattern.
    pub fn intact(&self) -> bool {
        self.intact
    }

    /// What the agent answers an upload with.
    pub fn report(&self) -> UploadReport {
        UploadReport {
            received: self.received,
            intact: self.intact,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_errors() {
        for r in [
            Request::Download { bytes: 0 },
            Request::Download { bytes: MAX_BYTES },
            Request::Upload { bytes: 123_456_789 },
        ] {
            assert_eq!(Request::decode(&r.encode()), Ok(r));
        }
        assert_eq!(
            Request::decode(&[1, 0, 0]),
            Err(SpeedtestError::Short { got: 3, want: 9 })
        );
        let mut unknown = Request::Download { bytes: 1 }.encode();
        unknown[0] = 7;
        assert_eq!(
            Request::decode(&unknown),
            Err(SpeedtestError::UnknownKind(7))
        );
        let huge = Request::Upload {
            bytes: MAX_BYTES + 1,
        }
        .encode();
        assert_eq!(
            Request::decode(&huge),
            Err(SpeedtestError::TooLarge(MAX_BYTES + 1))
        );
    }

    #[test]
    fn reports_round_trip_and_a_bad_flag_is_an_error() {
        let report = UploadReport {
            received: 42,
            intact: true,
        };
        assert_eq!(UploadReport::decode(&report.encode()), Ok(report));
        let mut bad = report.encode();
        bad[8] = 2;
        assert_eq!(UploadReport::decode(&bad), Err(SpeedtestError::BadFlag(2)));
        assert!(UploadReport::decode(&bad[..4]).is_err());
    }

    #[test]
    fn the_pattern_filled_in_any_chunking_is_byte_i_mod_251() {
        let pattern = Pattern::new();
        let mut whole = vec![0; 200_000];
        pattern.fill(0, &mut whole);
        assert!(whole.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        let mut pieced = Vec::new();
        let mut offset = 0u64;
        for len in [1usize, 250, 251, 65_511, 70_000, 63_987] {
            let mut buf = vec![0; len];
            pattern.fill(offset, &mut buf);
            pieced.extend_from_slice(&buf);
            offset += len as u64;
        }
        assert_eq!(pieced, whole);
    }

    #[test]
    fn the_verifier_notices_a_lost_or_changed_byte() {
        let pattern = Pattern::new();
        let mut data = vec![0; 300_000];
        pattern.fill(0, &mut data);

        let mut ok = Verifier::new();
        for chunk in data.chunks(4096) {
            ok.update(chunk);
        }
        assert!(ok.intact());
        assert_eq!(ok.received(), 300_000);

        let mut lost = Verifier::new();
        lost.update(&data[..65_536]);
        lost.update(&data[65_536 + 4096..]);
        assert!(!lost.intact());

        let mut changed = data.clone();
        changed[123_456] ^= 1;
        let mut flipped = Verifier::new();
        flipped.update(&changed);
        assert!(!flipped.intact());
        assert_eq!(
            flipped.report(),
            UploadReport {
                received: 300_000,
                intact: false
            }
        );
    }
}
