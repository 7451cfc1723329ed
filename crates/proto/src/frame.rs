//! The wire format of the stream protocol carried on the tunnel's data channel.
//!
//! One data-channel message is exactly one frame; the channel (SCTP, reliable and ordered)
//! already delimits messages, so frames carry no length prefix:
//!
//! ```text
//! +------+-----------------+--------------------------+
//! | type | stream id (u32) | payload (rest of message) |
//! | 1 B  | 4 B, big endian | type-specific             |
//! +------+-----------------+--------------------------+
//! ```
//!
//! All integers are big endian. Stream id 0 names the connection itself; streams are
//! opened by the client only, with odd ids that increase (1, 3, 5, ...), so an id never
//! comes back after its stream is gone and a late frame for a finished stream is told
//! apart from a frame for a stream that never existed.
//!
//! # Protocol flow
//!
//! 1. Each side's first frame is [`FRAME_HELLO`] with its [`PROTOCOL_VERSION`] and the
//!    largest DATA payload it accepts. A side that gets another version closes the
//!    connection with a [`FRAME_RESET`] on stream 0 that says so; nothing but HELLO (or that
//!    RESET) is valid before the peer's HELLO.
//! 2. The client opens a stream with [`FRAME_OPEN`]: the workspace port and how many bytes
//!    the agent may send it before waiting for credit (its receive window).
//! 3. The agent answers [`FRAME_OPEN_OK`] with its own receive window once its TCP dial
//!    succeeded, or [`FRAME_RESET`] with a reason (port not allowed, dial failed, ...).
//! 4. Both sides send [`FRAME_DATA`] within the credit the other side granted, and grant
//!    more with [`FRAME_WINDOW`] as their application consumes what arrived. Credit is per
//!    stream, so a stream whose reader stalls stops only itself.
//! 5. [`FRAME_FIN`] half-closes one direction (TCP's FIN); a stream ends cleanly when both
//!    directions are finished. [`FRAME_RESET`] ends a stream at once, in both directions.
//! 6. [`FRAME_PING`] / [`FRAME_PONG`] on stream 0 measure the round trip, and keep the
//!    connection alive: a side that has heard nothing for a while sends a PING, and one
//!    that has heard nothing for longer closes the connection ([`ResetCode::TIMEOUT`]).
//!    Any frame counts as a sign of life, so a busy connection sends no extra PINGs.
//! 7. [`FRAME_RESET`] on stream 0 closes the whole connection with a reason.
//!
//! A receiver always drains the channel: it never stops reading messages because one
//! stream's application is slow; the credit windows bound what it may have to buffer.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Version of the stream protocol, exchanged in [`FRAME_HELLO`].
///
/// History:
/// - 1: the first version (HELLO, OPEN, OPEN_OK, DATA, WINDOW, FIN, RESET, PING, PONG).
///   Reset code 10 ([`ResetCode::TIMEOUT`]) was added later without a new version: a side
///   keeps codes it does not know, and the reason text explains them.
pub const PROTOCOL_VERSION: u16 = 1;

/// Bytes before the payload: frame type (1) and stream id (4).
pub const HEADER_LEN: usize = 5;

/// Largest data-channel message every browser is known to deliver intact: 16 KiB.
///
/// Larger messages work between some implementations and not others (SCTP message
/// interleaving and `maxMessageSize` negotiation vary), so the default keeps a whole
/// frame, header included, within it.
pub const INTEROP_MESSAGE_SIZE: usize = 16 * 1024;

/// Default largest DATA payload: a whole DATA message fits [`INTEROP_MESSAGE_SIZE`].
///
/// Raise it (up to [`MAX_FRAME_PAYLOAD_LIMIT`]) where both ends are known to carry larger
/// messages; each side announces its own limit in HELLO and the smaller one is used.
pub const DEFAULT_MAX_FRAME_PAYLOAD: u32 = (INTEROP_MESSAGE_SIZE - HEADER_LEN) as u32;

/// Hard upper bound on any DATA payload, whatever the configuration: a decoder refuses
/// larger frames before looking further, which bounds what one message can make it hold.
pub const MAX_FRAME_PAYLOAD_LIMIT: u32 = 256 * 1024;

/// Largest RESET reason, in bytes of UTF-8.
pub const MAX_REASON_LEN: usize = 256;

// Frame types. Each line after the name describes the payload.

/// `HELLO` (stream 0): version u16, flags u16 (none defined yet: send 0, ignore unknown
/// bits), max DATA payload this side accepts u32. Later versions may append fields; a
/// decoder ignores bytes past the ones it knows, so a mismatched version is still read and
/// reported as such.
pub const FRAME_HELLO: u8 = 0x01;
/// `OPEN` (client to agent, new odd stream id): initial receive window of the client u32,
/// workspace port u16.
pub const FRAME_OPEN: u8 = 0x02;
/// `OPEN_OK` (agent to client): initial receive window of the agent u32.
pub const FRAME_OPEN_OK: u8 = 0x03;
/// `DATA`: the stream's bytes, 0 to the receiver's max payload (see HELLO).
pub const FRAME_DATA: u8 = 0x04;
/// `WINDOW`: credit increment u32, bytes the sender of this frame may now receive on top
/// of what it granted before.
pub const FRAME_WINDOW: u8 = 0x05;
/// `FIN`: empty; the sender sends no more DATA on this stream (half-close).
pub const FRAME_FIN: u8 = 0x06;
/// `RESET`: reason code u16, then the reason as UTF-8 text (the rest of the message, at
/// most [`MAX_REASON_LEN`] bytes). On a stream: the stream is gone in both directions
/// (before OPEN_OK: the open was refused). On stream 0: the connection is closed.
pub const FRAME_RESET: u8 = 0x07;
/// `PING` (stream 0): opaque u64, echoed in PONG.
pub const FRAME_PING: u8 = 0x08;
/// `PONG` (stream 0): the opaque u64 of the PING it answers.
pub const FRAME_PONG: u8 = 0x09;

/// Identifies a stream within one tunnel; 0 is the connection itself.
///
/// Only this crate mints stream ids (the [`crate::tunnel::Tunnel`] hands them out and
/// decodes them from frames), so one cannot be made up from an arbitrary integer by
/// accident; [`StreamId::get`] reads the number, for logs and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(u32);

impl StreamId {
    /// Stream 0: the connection (HELLO, PING, PONG, connection-closing RESET).
    pub const CONNECTION: StreamId = StreamId(0);

    pub(crate) const fn new(id: u32) -> Self {
        Self(id)
    }

    /// The id as it is on the wire.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Whether this is stream 0, the connection.
    pub const fn is_connection(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a stream (or, on stream 0, the connection) was reset.
///
/// A code this version does not know is kept as it came; its reason text still explains it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResetCode(pub u16);

impl ResetCode {
    /// Nothing went wrong: the connection is being closed on purpose.
    pub const NO_ERROR: ResetCode = ResetCode(0);
    /// The application on the sending side gave up on the stream.
    pub const CANCELLED: ResetCode = ResetCode(1);
    /// The agent does not forward the requested port.
    pub const PORT_NOT_ALLOWED: ResetCode = ResetCode(2);
    /// The agent could not connect to the requested port.
    pub const DIAL_FAILED: ResetCode = ResetCode(3);
    /// The stream was refused for another reason (too many streams, shutting down).
    pub const REFUSED: ResetCode = ResetCode(4);
    /// The peer broke the protocol on this stream (DATA after FIN, oversized frame, ...).
    pub const PROTOCOL_ERROR: ResetCode = ResetCode(5);
    /// The peer sent more than the credit it was granted.
    pub const FLOW_CONTROL: ResetCode = ResetCode(6);
    /// The TCP connection at one end failed (reset by the workspace service, write error).
    pub const SOCKET_ERROR: ResetCode = ResetCode(7);
    /// The peers speak different protocol versions (connection-level).
    pub const VERSION_MISMATCH: ResetCode = ResetCode(8);
    /// The sender hit a bug or a resource limit of its own.
    pub const INTERNAL: ResetCode = ResetCode(9);
    /// The sender heard nothing from its peer for its idle timeout, keepalive PINGs
    /// included, and gave up on the connection (connection-level). The peer rarely gets
    /// this RESET, since it is silent because it or the path is gone, but one whose
    /// messages were only delayed learns why it was dropped.
    pub const TIMEOUT: ResetCode = ResetCode(10);

    /// A short name for logs; `None` for codes this version does not know.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::NO_ERROR => "no error",
            Self::CANCELLED => "cancelled",
            Self::PORT_NOT_ALLOWED => "port not allowed",
            Self::DIAL_FAILED => "dial failed",
            Self::REFUSED => "refused",
            Self::PROTOCOL_ERROR => "protocol error",
            Self::FLOW_CONTROL => "flow control error",
            Self::SOCKET_ERROR => "socket error",
            Self::VERSION_MISMATCH => "version mismatch",
            Self::INTERNAL => "internal error",
            Self::TIMEOUT => "idle timeout",
            _ => return None,
        })
    }
}

impl fmt::Debug for ResetCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "ResetCode({} {name:?})", self.0),
            None => write!(f, "ResetCode({})", self.0),
        }
    }
}

impl fmt::Display for ResetCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "code {}", self.0),
        }
    }
}

/// One frame of the stream protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// See [`FRAME_HELLO`].
    Hello {
        /// The sender's [`PROTOCOL_VERSION`].
        version: u16,
        /// Feature bits; none are defined in version 1.
        flags: u16,
        /// Largest DATA payload the sender accepts.
        max_frame_payload: u32,
    },
    /// See [`FRAME_OPEN`].
    Open {
        /// The new stream.
        stream: StreamId,
        /// Bytes the agent may send before waiting for a WINDOW.
        window: u32,
        /// Workspace port to connect to.
        port: u16,
    },
    /// See [`FRAME_OPEN_OK`].
    OpenOk {
        /// The accepted stream.
        stream: StreamId,
        /// Bytes the client may send before waiting for a WINDOW.
        window: u32,
    },
    /// See [`FRAME_DATA`].
    Data {
        /// The stream.
        stream: StreamId,
        /// The bytes.
        data: Bytes,
    },
    /// See [`FRAME_WINDOW`].
    Window {
        /// The stream.
        stream: StreamId,
        /// Additional bytes the peer may send.
        increment: u32,
    },
    /// See [`FRAME_FIN`].
    Fin {
        /// The stream.
        stream: StreamId,
    },
    /// See [`FRAME_RESET`].
    Reset {
        /// The stream, or [`StreamId::CONNECTION`] to close the connection.
        stream: StreamId,
        /// Why.
        code: ResetCode,
        /// Why, for people; at most [`MAX_REASON_LEN`] bytes are sent.
        reason: String,
    },
    /// See [`FRAME_PING`].
    Ping {
        /// Opaque; the shells put their clock's time here to measure the round trip.
        payload: u64,
    },
    /// See [`FRAME_PONG`].
    Pong {
        /// The payload of the PING this answers.
        payload: u64,
    },
}

/// Why a message is not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than the 5-byte header.
    #[error("message of {len} bytes is shorter than the {HEADER_LEN}-byte frame header")]
    ShortHeader {
        /// Length of the message.
        len: usize,
    },
    /// The type byte is not a frame type of this version.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// The payload is not the size the frame type requires.
    #[error("{frame} payload is {len} bytes, expected {expected}")]
    BadLength {
        /// Frame type name.
        frame: &'static str,
        /// Payload length found.
        len: usize,
        /// Payload length required.
        expected: usize,
    },
    /// A DATA payload larger than [`MAX_FRAME_PAYLOAD_LIMIT`].
    #[error("DATA payload of {len} bytes exceeds the limit of {MAX_FRAME_PAYLOAD_LIMIT}")]
    TooLarge {
        /// Payload length found.
        len: usize,
    },
    /// A connection frame on a stream, or a stream frame on stream 0.
    #[error("{frame} frame on stream {stream} (only HELLO, PING, PONG and RESET go on stream 0)")]
    WrongStream {
        /// Frame type name.
        frame: &'static str,
        /// The stream id found.
        stream: u32,
    },
    /// A RESET reason longer than [`MAX_REASON_LEN`].
    #[error("RESET reason of {len} bytes exceeds {MAX_REASON_LEN}")]
    ReasonTooLong {
        /// Reason length found.
        len: usize,
    },
    /// A RESET reason that is not UTF-8.
    #[error("RESET reason is not UTF-8")]
    ReasonNotUtf8,
}

impl Frame {
    /// The frame's type byte.
    pub fn frame_type(&self) -> u8 {
        match self {
            Frame::Hello { .. } => FRAME_HELLO,
            Frame::Open { .. } => FRAME_OPEN,
            Frame::OpenOk { .. } => FRAME_OPEN_OK,
            Frame::Data { .. } => FRAME_DATA,
            Frame::Window { .. } => FRAME_WINDOW,
            Frame::Fin { .. } => FRAME_FIN,
            Frame::Reset { .. } => FRAME_RESET,
            Frame::Ping { .. } => FRAME_PING,
            Frame::Pong { .. } => FRAME_PONG,
        }
    }

    /// The stream the frame is on ([`StreamId::CONNECTION`] for connection frames).
    pub fn stream(&self) -> StreamId {
        match self {
            Frame::Hello { .. } | Frame::Ping { .. } | Frame::Pong { .. } => StreamId::CONNECTION,
            Frame::Open { stream, .. }
            | Frame::OpenOk { stream, .. }
            | Frame::Data { stream, .. }
            | Frame::Window { stream, .. }
            | Frame::Fin { stream }
            | Frame::Reset { stream, .. } => *stream,
        }
    }

    /// Size of the encoded frame, in bytes.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Frame::Hello { .. } => 8,
                Frame::Open { .. } => 6,
                Frame::OpenOk { .. } | Frame::Window { .. } => 4,
                Frame::Data { data, .. } => data.len(),
                Frame::Fin { .. } => 0,
                Frame::Reset { reason, .. } => 2 + truncate_reason(reason).len(),
                Frame::Ping { .. } | Frame::Pong { .. } => 8,
            }
    }

    /// Appends the encoded frame to `buf`.
    ///
    /// A RESET reason longer than [`MAX_REASON_LEN`] is cut at a character boundary, so
    /// whatever is encoded decodes. DATA is written as given: keeping it within the peer's
    /// limit is the sender's job (the [`crate::tunnel::Tunnel`] does).
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(self.encoded_len());
        buf.put_u8(self.frame_type());
        buf.put_u32(self.stream().get());
        match self {
            Frame::Hello {
                version,
                flags,
                max_frame_payload,
            } => {
                buf.put_u16(*version);
                buf.put_u16(*flags);
                buf.put_u32(*max_frame_payload);
            }
            Frame::Open { window, port, .. } => {
                buf.put_u32(*window);
                buf.put_u16(*port);
            }
            Frame::OpenOk { window, .. } => buf.put_u32(*window),
            Frame::Data { data, .. } => buf.put_slice(data),
            Frame::Window { increment, .. } => buf.put_u32(*increment),
            Frame::Fin { .. } => {}
            Frame::Reset { code, reason, .. } => {
                buf.put_u16(code.0);
                buf.put_slice(truncate_reason(reason).as_bytes());
            }
            Frame::Ping { payload } | Frame::Pong { payload } => buf.put_u64(*payload),
        }
    }

    /// Encodes the frame into a message of its own.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }

    /// Decodes one message; DATA payloads are copied out of `msg`.
    pub fn decode(msg: &[u8]) -> Result<Frame, FrameError> {
        decode_with(msg, Bytes::copy_from_slice)
    }

    /// Decodes one message; DATA payloads share `msg`'s buffer instead of being copied.
    pub fn decode_bytes(msg: &Bytes) -> Result<Frame, FrameError> {
        decode_with(msg, |payload| msg.slice_ref(payload))
    }
}

/// `reason` cut to at most [`MAX_REASON_LEN`] bytes, at a character boundary.
pub fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

fn decode_with(msg: &[u8], data: impl FnOnce(&[u8]) -> Bytes) -> Result<Frame, FrameError> {
    if msg.len() < HEADER_LEN {
        return Err(FrameError::ShortHeader { len: msg.len() });
    }
    let (mut header, payload) = msg.split_at(HEADER_LEN);
    let frame_type = header.get_u8();
    let raw_stream = header.get_u32();
    let name = frame_name(frame_type).ok_or(FrameError::UnknownType(frame_type))?;

    // Connection frames live on stream 0 and stream frames never do; RESET may be either.
    let on_connection = matches!(frame_type, FRAME_HELLO | FRAME_PING | FRAME_PONG);
    if on_connection != (raw_stream == 0) && frame_type != FRAME_RESET {
        return Err(FrameError::WrongStream {
            frame: name,
            stream: raw_stream,
        });
    }
    let stream = StreamId(raw_stream);

    let exact = |expected: usize| {
        if payload.len() == expected {
            Ok(payload)
        } else {
            Err(FrameError::BadLength {
                frame: name,
                len: payload.len(),
                expected,
            })
        }
    };

    let frame = match frame_type {
        FRAME_HELLO => {
            // Trailing bytes are tolerated: a later version may append fields, and its
            // version number must still reach the mismatch check.
            if payload.len() < 8 {
                return Err(FrameError::BadLength {
                    frame: name,
                    len: payload.len(),
                    expected: 8,
                });
            }
            let mut p = payload;
            Frame::Hello {
                version: p.get_u16(),
                flags: p.get_u16(),
                max_frame_payload: p.get_u32(),
            }
        }
        FRAME_OPEN => {
            let mut p = exact(6)?;
            Frame::Open {
                stream,
                window: p.get_u32(),
                port: p.get_u16(),
            }
        }
        FRAME_OPEN_OK => {
            let mut p = exact(4)?;
            Frame::OpenOk {
                stream,
                window: p.get_u32(),
            }
        }
        FRAME_DATA => {
            if payload.len() > MAX_FRAME_PAYLOAD_LIMIT as usize {
                return Err(FrameError::TooLarge { len: payload.len() });
            }
            Frame::Data {
                stream,
                data: data(payload),
            }
        }
        FRAME_WINDOW => {
            let mut p = exact(4)?;
            Frame::Window {
                stream,
                increment: p.get_u32(),
            }
        }
        FRAME_FIN => {
            exact(0)?;
            Frame::Fin { stream }
        }
        FRAME_RESET => {
            if payload.len() < 2 {
                return Err(FrameError::BadLength {
                    frame: name,
                    len: payload.len(),
                    expected: 2,
                });
            }
            let (mut code, reason) = payload.split_at(2);
            if reason.len() > MAX_REASON_LEN {
                return Err(FrameError::ReasonTooLong { len: reason.len() });
            }
            let reason = std::str::from_utf8(reason).map_err(|_| FrameError::ReasonNotUtf8)?;
            Frame::Reset {
                stream,
                code: ResetCode(code.get_u16()),
                reason: reason.to_owned(),
            }
        }
        FRAME_PING => Frame::Ping {
            payload: exact(8)?.get_u64(),
        },
        FRAME_PONG => Frame::Pong {
            payload: exact(8)?.get_u64(),
        },
        _ => return Err(FrameError::UnknownType(frame_type)),
    };
    Ok(frame)
}

/// The name of a frame type, for errors and logs; `None` if this version does not know it.
pub fn frame_name(frame_type: u8) -> Option<&'static str> {
    Some(match frame_type {
        FRAME_HELLO => "HELLO",
        FRAME_OPEN => "OPEN",
        FRAME_OPEN_OK => "OPEN_OK",
        FRAME_DATA => "DATA",
        FRAME_WINDOW => "WINDOW",
        FRAME_FIN => "FIN",
        FRAME_RESET => "RESET",
        FRAME_PING => "PING",
        FRAME_PONG => "PONG",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: u32) -> StreamId {
        StreamId::new(id)
    }

    /// Encodes `frame`, checks it against `golden`, and decodes `golden` back both ways.
    fn golden(frame: Frame, golden: &[u8]) {
        assert_eq!(frame.to_bytes().as_ref(), golden, "encoding of {frame:?}");
        assert_eq!(frame.encoded_len(), golden.len());
        assert_eq!(Frame::decode(golden), Ok(frame.clone()));
        assert_eq!(
            Frame::decode_bytes(&Bytes::copy_from_slice(golden)),
            Ok(frame)
        );
    }

    #[test]
    fn hello_golden_bytes() {
        golden(
            Frame::Hello {
                version: 1,
                flags: 0,
                max_frame_payload: 16_379,
            },
            &[
                0x01, 0, 0, 0, 0, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x3f, 0xfb,
            ],
        );
    }

    #[test]
    fn open_golden_bytes() {
        golden(
            Frame::Open {
                stream: s(1),
                window: 0x0010_0000,
                port: 5432,
            },
            &[0x02, 0, 0, 0, 1, 0x00, 0x10, 0x00, 0x00, 0x15, 0x38],
        );
    }

    #[test]
    fn open_ok_golden_bytes() {
        golden(
            Frame::OpenOk {
                stream: s(3),
                window: 65_536,
            },
            &[0x03, 0, 0, 0, 3, 0x00, 0x01, 0x00, 0x00],
        );
    }

    #[test]
    fn data_golden_bytes() {
        golden(
            Frame::Data {
                stream: s(0x0102_0305),
                data: Bytes::from_static(b"hi\n"),
            },
            &[0x04, 0x01, 0x02, 0x03, 0x05, b'h', b'i', b'\n'],
        );
        golden(
            Frame::Data {
                stream: s(5),
                data: Bytes::new(),
            },
            &[0x04, 0, 0, 0, 5],
        );
    }

    #[test]
    fn window_golden_bytes() {
        golden(
            Frame::Window {
                stream: s(7),
                increment: 0x0008_0000,
            },
            &[0x05, 0, 0, 0, 7, 0x00, 0x08, 0x00, 0x00],
        );
    }

    #[test]
    fn fin_golden_bytes() {
        golden(Frame::Fin { stream: s(9) }, &[0x06, 0, 0, 0, 9]);
    }

    #[test]
    fn reset_golden_bytes() {
        golden(
            Frame::Reset {
                stream: s(1),
                code: ResetCode::PORT_NOT_ALLOWED,
                reason: "port 23 is not allowed".into(),
            },
            &[
                &[0x07, 0, 0, 0, 1, 0x00, 0x02][..],
                b"port 23 is not allowed".as_slice(),
            ]
            .concat(),
        );
        golden(
            Frame::Reset {
                stream: StreamId::CONNECTION,
                code: ResetCode::VERSION_MISMATCH,
                reason: String::new(),
            },
            &[0x07, 0, 0, 0, 0, 0x00, 0x08],
        );
    }

    #[test]
    fn ping_and_pong_golden_bytes() {
        golden(
            Frame::Ping {
                payload: 0x0102_0304_0506_0708,
            },
            &[0x08, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
        );
        golden(
            Frame::Pong { payload: u64::MAX },
            &[
                0x09, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        );
    }

    #[test]
    fn default_data_message_fits_the_interop_size() {
        let f = Frame::Data {
            stream: s(1),
            data: Bytes::from(vec![0; DEFAULT_MAX_FRAME_PAYLOAD as usize]),
        };
        assert_eq!(f.encoded_len(), INTEROP_MESSAGE_SIZE);
    }

    #[test]
    fn hello_from_a_later_version_with_extra_fields_still_decodes() {
        let msg = [
            0x01, 0, 0, 0, 0, 0x00, 0x02, 0x00, 0x01, 0, 0, 0x40, 0, 0xaa, 0xbb,
        ];
        assert_eq!(
            Frame::decode(&msg),
            Ok(Frame::Hello {
                version: 2,
                flags: 1,
                max_frame_payload: 0x4000
            })
        );
    }

    #[test]
    fn truncated_frames_are_errors() {
        let frames = [
            Frame::Hello {
                version: 1,
                flags: 0,
                max_frame_payload: 1,
            },
            Frame::Open {
                stream: s(1),
                window: 1,
                port: 1,
            },
            Frame::OpenOk {
                stream: s(1),
                window: 1,
            },
            Frame::Window {
                stream: s(1),
                increment: 1,
            },
            Frame::Reset {
                stream: s(1),
                code: ResetCode::CANCELLED,
                reason: String::new(),
            },
            Frame::Ping { payload: 1 },
            Frame::Pong { payload: 1 },
        ];
        for f in frames {
            let bytes = f.to_bytes();
            for cut in 0..bytes.len() {
                assert!(
                    Frame::decode(&bytes[..cut]).is_err(),
                    "{f:?} cut to {cut} bytes decoded"
                );
            }
        }
    }

    #[test]
    fn fixed_size_frames_with_trailing_bytes_are_errors() {
        for msg in [
            &[0x02, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0][..],
            &[0x05, 0, 0, 0, 1, 0, 0, 0, 1, 9],
            &[0x06, 0, 0, 0, 1, 0],
            &[0x08, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        ] {
            assert!(
                matches!(Frame::decode(msg), Err(FrameError::BadLength { .. })),
                "{msg:?}"
            );
        }
    }

    #[test]
    fn unknown_frame_type_is_an_error() {
        assert_eq!(
            Frame::decode(&[0x7f, 0, 0, 0, 1]),
            Err(FrameError::UnknownType(0x7f))
        );
        assert_eq!(
            Frame::decode(&[0x00, 0, 0, 0, 0]),
            Err(FrameError::UnknownType(0))
        );
    }

    #[test]
    fn frames_on_the_wrong_stream_are_errors() {
        assert!(matches!(
            Frame::decode(&[0x06, 0, 0, 0, 0]),
            Err(FrameError::WrongStream { stream: 0, .. })
        ));
        assert!(matches!(
            Frame::decode(&[0x08, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::WrongStream { stream: 3, .. })
        ));
    }

    #[test]
    fn oversized_data_is_an_error() {
        let mut msg = vec![0x04, 0, 0, 0, 1];
        msg.resize(HEADER_LEN + MAX_FRAME_PAYLOAD_LIMIT as usize, 0);
        assert!(Frame::decode(&msg).is_ok());
        msg.push(0);
        assert_eq!(
            Frame::decode(&msg),
            Err(FrameError::TooLarge {
                len: MAX_FRAME_PAYLOAD_LIMIT as usize + 1
            })
        );
    }

    #[test]
    fn reset_reason_must_be_short_utf8() {
        let mut msg = vec![0x07, 0, 0, 0, 1, 0, 1];
        msg.extend(std::iter::repeat_n(b'x', MAX_REASON_LEN + 1));
        assert_eq!(
            Frame::decode(&msg),
            Err(FrameError::ReasonTooLong {
                len: MAX_REASON_LEN + 1
            })
        );
        assert_eq!(
            Frame::decode(&[0x07, 0, 0, 0, 1, 0, 1, 0xff, 0xfe]),
            Err(FrameError::ReasonNotUtf8)
        );
    }

    #[test]
    fn long_reasons_are_cut_at_a_char_boundary_when_encoding() {
        let reason = "é".repeat(200); // 400 bytes, 2 per char
        let f = Frame::Reset {
            stream: s(1),
            code: ResetCode::INTERNAL,
            reason,
        };
        let Ok(Frame::Reset { reason, .. }) = Frame::decode(&f.to_bytes()) else {
            panic!("encoded RESET does not decode");
        };
        assert_eq!(reason, "é".repeat(128));
    }

    #[test]
    fn decode_bytes_shares_the_message_buffer() {
        let msg = Frame::Data {
            stream: s(1),
            data: Bytes::from_static(b"payload"),
        }
        .to_bytes();
        let Ok(Frame::Data { data, .. }) = Frame::decode_bytes(&msg) else {
            panic!("not DATA");
        };
        assert_eq!(data.as_ptr(), msg[HEADER_LEN..].as_ptr());
    }

    #[test]
    fn unknown_reset_codes_are_kept_and_displayed() {
        assert_eq!(ResetCode(4242).to_string(), "code 4242");
        assert_eq!(ResetCode::DIAL_FAILED.to_string(), "dial failed");
    }

    /// A small deterministic generator, so the garbage test needs no extra crate and
    /// replays the same inputs on every run.
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
    fn random_and_mutated_messages_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let seeds: Vec<Bytes> = [
            Frame::Hello {
                version: 1,
                flags: 0,
                max_frame_payload: 16_379,
            },
            Frame::Open {
                stream: s(1),
                window: 1 << 20,
                port: 22,
            },
            Frame::Data {
                stream: s(1),
                data: Bytes::from_static(b"some bytes"),
            },
            Frame::Reset {
                stream: s(1),
                code: ResetCode::REFUSED,
                reason: "no".into(),
            },
        ]
        .iter()
        .map(Frame::to_bytes)
        .collect();
        for i in 0..50_000 {
            let msg: Vec<u8> = if i % 2 == 0 {
                // Pure garbage, biased towards known type bytes so the payload parsers run.
                let len = (rng.next() % 300) as usize;
                let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if let Some(t) = v.first_mut() {
                    *t %= 11;
                }
                v
            } else {
                // A valid frame with a few bytes flipped and a random cut.
                let seed = &seeds[(rng.next() % seeds.len() as u64) as usize];
                let mut v = seed.to_vec();
                for _ in 0..(rng.next() % 3) {
                    let at = (rng.next() % v.len() as u64) as usize;
                    v[at] = rng.next() as u8;
                }
                v.truncate((rng.next() % (v.len() as u64 + 1)) as usize);
                v
            };
            if let Ok(frame) = Frame::decode(&msg) {
                // Whatever decodes re-encodes to something that decodes to the same frame.
                assert_eq!(Frame::decode(&frame.to_bytes()), Ok(frame));
            }
        }
    }
}
