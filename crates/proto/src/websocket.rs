//! The client side of WebSocket (RFC 6455) as a codec: the opening handshake and the
//! frame layer.
//!
//! The browser client reaches workspace apps' WebSockets (code-server's, for one) over
//! tunnelled TCP streams, so it speaks the protocol itself instead of using the browser's
//! `WebSocket`. Nothing here does I/O or makes up random bytes: the handshake key and each
//! frame's masking key come from the caller (RFC 6455 wants them unpredictable: use a
//! CSPRNG, `crypto.getRandomValues` in the browser).
//!
//! # Handshake
//!
//! [`Handshake`] builds the upgrade request (send it with [`crate::http1::encode_request`]
//! and [`crate::http1::BodyFraming::Empty`]) and checks the `101 Switching Protocols` head
//! that [`crate::http1::ResponseDecoder`] reports as an upgrade. The bytes that came after
//! the head are the first bytes of the frame stream: [`WebSocket::push`] them.
//!
//! # Frames
//!
//! A [`WebSocket`] decodes server frames into whole [`Message`]s (reassembling fragments,
//! with control frames allowed between them) and encodes client frames, masked. It tracks
//! the closing handshake: after receiving a Close it accepts no more frames, after sending
//! one it sends nothing more. Answering pings and closes is the caller's choice, made with
//! [`WebSocket::send`]; per RFC 6455 the server then closes the TCP connection.
//!
//! No extensions are offered, so reserved bits are always errors.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version, request, response};
use sha1::{Digest, Sha1};

/// The GUID RFC 6455 appends to the key to compute `Sec-WebSocket-Accept`.
pub const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest payload of a control frame (ping, pong, close).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Default limit on a received message, all fragments together: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// Why a handshake request cannot be built, or its response is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// A subprotocol that is not an HTTP token, or offered twice.
    #[error("invalid or repeated subprotocol {0:?}")]
    InvalidProtocol(String),
    /// An extra header the handshake sets itself (or, for `Sec-WebSocket-Extensions`, that
    /// this codec cannot honour).
    #[error("header {0} is set by the handshake")]
    ReservedHeader(HeaderName),
    /// The server answered with another status than 101.
    #[error("server answered {0} instead of 101 Switching Protocols")]
    NotSwitchingProtocols(StatusCode),
    /// `Upgrade: websocket` is missing.
    #[error("response lacks Upgrade: websocket")]
    MissingUpgrade,
    /// `Connection: upgrade` is missing.
    #[error("response lacks Connection: upgrade")]
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Accept` is missing or does not match the key.
    #[error("Sec-WebSocket-Accept is missing or wrong")]
    WrongAccept,
    /// The server chose a subprotocol that was not offered (or several).
    #[error("server chose subprotocol {0:?}, which was not offered")]
    UnofferedProtocol(String),
    /// The server enabled an extension; none were offered.
    #[error("server enabled extensions, none were offered")]
    UnofferedExtension,
}

/// The client's opening handshake: builds the request and checks the response.
///
/// ```
/// use burrow_proto::websocket::Handshake;
///
/// let handshake = Handshake::new("ws://localhost:8080/socket".parse().expect("uri"), [7; 16])
///     .protocol("chat");
/// let request = handshake.request().expect("valid");
/// assert_eq!(request.headers["sec-websocket-key"], "BwcHBwcHBwcHBwcHBwcHBw==");
/// ```
#[derive(Debug, Clone)]
pub struct Handshake {
    uri: Uri,
    key: String,
    protocols: Vec<String>,
    headers: HeaderMap,
}

impl Handshake {
    /// A handshake for `uri` (`ws://` or `http://`; only the host and path are used)
    /// with a `Sec-WebSocket-Key` made of 16 random bytes from the caller.
    pub fn new(uri: Uri, key: [u8; 16]) -> Self {
        Self {
            uri,
            key: BASE64.encode(key),
            protocols: Vec::new(),
            headers: HeaderMap::new(),
        }
    }

    /// Offers a subprotocol (in order of preference).
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// Adds a header to the request (`Origin`, `Cookie`, ...).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The `Sec-WebSocket-Key`, base64.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The request head: `GET` with the upgrade headers, the offered subprotocols and the
    /// extra headers.
    pub fn request(&self) -> Result<request::Parts, HandshakeError> {
        const RESERVED: [HeaderName; 6] = [
            header::UPGRADE,
            header::CONNECTION,
            header::SEC_WEBSOCKET_KEY,
            header::SEC_WEBSOCKET_VERSION,
            header::SEC_WEBSOCKET_PROTOCOL,
            header::SEC_WEBSOCKET_EXTENSIONS,
        ];
        if let Some(name) = RESERVED.iter().find(|n| self.headers.contains_key(*n)) {
            return Err(HandshakeError::ReservedHeader(name.clone()));
        }
        for (i, p) in self.protocols.iter().enumerate() {
            if !is_token(p) || self.protocols[..i].contains(p) {
                return Err(HandshakeError::InvalidProtocol(p.clone()));
            }
        }
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = Method::GET;
        parts.uri = self.uri.clone();
        parts.version = Version::HTTP_11;
        parts.headers = self.headers.clone();
        let h = &mut parts.headers;
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        // Base64 and tokens are always valid header values; the `Err` arms cannot happen.
        let key = HeaderValue::from_str(&self.key)
            .map_err(|_| HandshakeError::InvalidProtocol(self.key.clone()))?;
        h.insert(header::SEC_WEBSOCKET_KEY, key);
        if !self.protocols.is_empty() {
            let list = self.protocols.join(", ");
            let value = HeaderValue::from_str(&list)
                .map_err(|_| HandshakeError::InvalidProtocol(list.clone()))?;
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        Ok(parts)
    }

    /// Checks the server's response head (RFC 6455 section 4.1) and returns the chosen
    /// subprotocol, if any.
    pub fn accept(&self, response: &response::Parts) -> Result<Option<String>, HandshakeError> {
        if response.status != StatusCode::SWITCHING_PROTOCOLS {
            return Err(HandshakeError::NotSwitchingProtocols(response.status));
        }
        let h = &response.headers;
        let has_token = |name: HeaderName, token: &str| {
            h.get_all(name).iter().any(|v| {
                v.as_bytes()
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
            })
        };
        if !has_token(header::UPGRADE, "websocket") {
            return Err(HandshakeError::MissingUpgrade);
        }
        if !has_token(header::CONNECTION, "upgrade") {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        let expected = accept_key(&self.key);
        let mut accepts = h.get_all(header::SEC_WEBSOCKET_ACCEPT).iter();
        match (accepts.next(), accepts.next()) {
            (Some(v), None) if v.as_bytes().trim_ascii() == expected.as_bytes() => {}
            _ => return Err(HandshakeError::WrongAccept),
        }
        if h.get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .any(|v| !v.as_bytes().trim_ascii().is_empty())
        {
            return Err(HandshakeError::UnofferedExtension);
        }
        let mut chosen = h.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter();
        match (chosen.next(), chosen.next()) {
            (None, _) => Ok(None),
            (Some(v), None) => {
                let p = String::from_utf8_lossy(v.as_bytes()).trim().to_owned();
                if self.protocols.contains(&p) {
                    Ok(Some(p))
                } else {
                    Err(HandshakeError::UnofferedProtocol(p))
                }
            }
            (Some(v), Some(_)) => Err(HandshakeError::UnofferedProtocol(
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )),
        }
    }
}

/// Whether `s` is an HTTP token (RFC 9110 section 5.6.2), as subprotocol names must be.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"(),/:;<=>?@[\\]{}".contains(&b))
}

/// A frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// A later fragment of a message.
    Continuation,
    /// The first frame of a text message.
    Text,
    /// The first frame of a binary message.
    Binary,
    /// Close.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl Opcode {
    /// The opcode of a 4-bit value; `None` for reserved ones.
    pub fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xa => Self::Pong,
            _ => return None,
        })
    }

    /// The 4-bit value on the wire.
    pub fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xa,
        }
    }

    /// Whether this is a control frame (close, ping, pong): at most
    /// [`MAX_CONTROL_PAYLOAD`] bytes and never fragmented.
    pub fn is_control(self) -> bool {
        self.bits() & 0x8 != 0
    }
}

/// The status code of a Close frame.
///
/// A code this version does not name is kept as it came.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigated away).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a message of a type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1007: a message whose content is invalid (a Text message that is not UTF-8).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message that violates the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: (client) the server did not negotiate a required extension.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);

    /// Whether the code may appear in a Close frame: 1000-1003, 1007-1014 and
    /// 3000-4999. 1004-1006 and 1015 are reserved for reporting, never sent.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({})", self.0)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A whole message, received or to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (always valid UTF-8).
    Text(String),
    /// A binary message.
    Binary(Bytes),
    /// A ping; RFC 6455 asks for a pong with the same payload.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame.
    Close {
        /// The status code; `None` for a Close without a body (what browsers report as
        /// 1005).
        code: Option<CloseCode>,
        /// Why, for people; empty without a code.
        reason: String,
    },
}

/// Appends one client frame, masked with `mask`, to `buf`.
///
/// This is the raw frame layer, for callers that fragment messages themselves; it checks
/// nothing (a control payload over [`MAX_CONTROL_PAYLOAD`] is written as given).
/// [`WebSocket::send`] is the checked way to send whole messages.
pub fn encode_frame(fin: bool, opcode: Opcode, payload: &[u8], mask: [u8; 4], buf: &mut BytesMut) {
    buf.reserve(14 + payload.len());
    buf.put_u8(u8::from(fin) << 7 | opcode.bits());
    // The length always uses the shortest encoding, as RFC 6455 section 5.2 requires.
    match payload.len() {
        len @ 0..=125 => buf.put_u8(0x80 | len as u8),
        len @ 126..=0xffff => {
            buf.put_u8(0x80 | 126);
            buf.put_u16(len as u16);
        }
        len => {
            buf.put_u8(0x80 | 127);
            buf.put_u64(len as u64);
        }
    }
    buf.put_slice(&mask);
    let start = buf.len();
    buf.put_slice(payload);
    for (i, b) in buf[start..].iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// Settings of a [`WebSocket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Largest message accepted, all fragments together; a frame that would exceed it is
    /// refused from its header, before its payload is buffered.
    pub max_message_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

/// Why the server's frames break the protocol. The connection is then unusable: send a
/// Close with [`ProtocolError::close_code`] and drop it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// RSV1-3 set without a negotiated extension.
    #[error("reserved bits 0x{0:x} set")]
    ReservedBits(u8),
    /// An opcode RFC 6455 reserves.
    #[error("reserved opcode 0x{0:x}")]
    ReservedOpcode(u8),
    /// A masked frame: servers must not mask.
    #[error("masked frame from the server")]
    MaskedFrame,
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame with more than [`MAX_CONTROL_PAYLOAD`] bytes.
    #[error("control frame payload of {0} bytes exceeds {MAX_CONTROL_PAYLOAD}")]
    ControlTooLong(u64),
    /// A 64-bit length with its most significant bit set.
    #[error("frame length has its most significant bit set")]
    InvalidLength,
    /// A continuation frame with no message in progress.
    #[error("continuation frame with no message in progress")]
    UnexpectedContinuation,
    /// A new data message before the previous one's last fragment.
    #[error("new message before the previous one ended")]
    ExpectedContinuation,
    /// A message over [`Config::max_message_size`].
    #[error("message exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A text message (or close reason) that is not UTF-8.
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    /// A Close payload of one byte.
    #[error("close frame payload of 1 byte")]
    InvalidClosePayload,
    /// A Close code that may not be sent (see [`CloseCode::is_sendable`]).
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A frame after the server's Close.
    #[error("frame after the close frame")]
    FrameAfterClose,
}

impl ProtocolError {
    /// The code to close the connection with, in reply to this error.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            Self::MessageTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// Why a message cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// A Close was already sent: nothing may follow it.
    #[error("a close frame was already sent")]
    Closed,
    /// A ping or pong payload over [`MAX_CONTROL_PAYLOAD`].
    #[error("control payload of {0} bytes exceeds {MAX_CONTROL_PAYLOAD}")]
    ControlTooLong(usize),
    /// A Close code that may not be sent (see [`CloseCode::is_sendable`]).
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(CloseCode),
    /// A Close reason without a code: the wire format has no place for it.
    #[error("a close reason needs a close code")]
    ReasonWithoutCode,
}

/// One client WebSocket connection after the handshake, as a state machine.
///
/// ```
/// use burrow_proto::websocket::{Message, WebSocket};
///
/// let mut ws = WebSocket::default();
/// // The server's unmasked "Hello" (RFC 6455 section 5.7).
/// ws.push(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
/// assert_eq!(ws.poll_event(), Ok(Some(Message::Text("Hello".into()))));
///
/// let mut out = bytes::BytesMut::new();
/// ws.send(&Message::Text("Hello".into()), [0x37, 0xfa, 0x21, 0x3d], &mut out).expect("open");
/// assert_eq!(&out[..], [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
/// ```
#[derive(Debug, Default)]
pub struct WebSocket {
    config: Config,
    buf: BytesMut,
    /// The data message being reassembled from fragments.
    partial: Option<Partial>,
    close_sent: bool,
    close_received: bool,
    failed: Option<ProtocolError>,
}

#[derive(Debug)]
struct Partial {
    text: bool,
    data: BytesMut,
    /// Bytes of `data` known to be valid UTF-8 (text only): checking as fragments arrive
    /// fails a bad message early, and checks each byte once.
    valid: usize,
}

impl Partial {
    /// Checks the bytes that arrived since the last check, before the last fragment (which
    /// [`Partial::into_message`] checks whole).
    fn check_utf8(&mut self) -> Result<(), ProtocolError> {
        if !self.text {
            return Ok(());
        }
        match std::str::from_utf8(&self.data[self.valid..]) {
            Ok(_) => self.valid = self.data.len(),
            // A character cut by the fragment boundary is fine until the last fragment.
            Err(e) if e.error_len().is_none() => self.valid += e.valid_up_to(),
            Err(_) => return Err(ProtocolError::InvalidUtf8),
        }
        Ok(())
    }

    fn into_message(self) -> Result<Message, ProtocolError> {
        if self.text {
            String::from_utf8(self.data.into())
                .map(Message::Text)
                .map_err(|_| ProtocolError::InvalidUtf8)
        } else {
            Ok(Message::Binary(self.data.freeze()))
        }
    }
}

impl WebSocket {
    /// A connection whose handshake just completed.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Bytes received from the server (after the handshake's head).
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole message from the server, or `None` until more bytes arrive.
    ///
    /// After an error the connection is unusable and the same error comes back.
    pub fn poll_event(&mut self) -> Result<Option<Message>, ProtocolError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.decode();
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    /// Whether this side sent a Close.
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// Whether the server sent a Close.
    pub fn close_received(&self) -> bool {
        self.close_received
    }

    /// Whether both sides sent a Close: the closing handshake is complete and the TCP
    /// connection may be closed (RFC 6455 lets the server close it first).
    pub fn is_closed(&self) -> bool {
        self.close_sent && self.close_received
    }

    /// Appends `message` to `buf` as one frame masked with `mask` (4 random bytes per
    /// frame, from the caller).
    ///
    /// A Close reason longer than the 123 bytes that fit is cut at a character boundary.
    /// Nothing is written when an error is returned.
    pub fn send(
        &mut self,
        message: &Message,
        mask: [u8; 4],
        buf: &mut BytesMut,
    ) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        match message {
            Message::Text(text) => encode_frame(true, Opcode::Text, text.as_bytes(), mask, buf),
            Message::Binary(data) => encode_frame(true, Opcode::Binary, data, mask, buf),
            Message::Ping(data) | Message::Pong(data) => {
                if data.len() > MAX_CONTROL_PAYLOAD {
                    return Err(SendError::ControlTooLong(data.len()));
                }
                let opcode = if matches!(message, Message::Ping(_)) {
                    Opcode::Ping
                } else {
                    Opcode::Pong
                };
                encode_frame(true, opcode, data, mask, buf);
            }
            Message::Close { code, reason } => {
                let mut payload = Vec::with_capacity(MAX_CONTROL_PAYLOAD);
                match code {
                    None if !reason.is_empty() => return Err(SendError::ReasonWithoutCode),
                    None => {}
                    Some(code) if !code.is_sendable() => {
                        return Err(SendError::InvalidCloseCode(*code));
                    }
                    Some(code) => {
                        payload.extend_from_slice(&code.0.to_be_bytes());
                        let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
                        while !reason.is_char_boundary(end) {
                            end -= 1;
                        }
                        payload.extend_from_slice(&reason.as_bytes()[..end]);
                    }
                }
                encode_frame(true, Opcode::Close, &payload, mask, buf);
                self.close_sent = true;
            }
        }
        Ok(())
    }

    fn decode(&mut self) -> Result<Option<Message>, ProtocolError> {
        loop {
            if self.buf.is_empty() {
                return Ok(None);
            }
            if self.close_received {
                return Err(ProtocolError::FrameAfterClose);
            }
            let Some((header_len, fin, opcode, len)) = self.frame_header()? else {
                return Ok(None);
            };
            // `frame_header` bounded `len` by the message limit (which is a usize) or by
            // MAX_CONTROL_PAYLOAD, so it fits a usize.
            let len = usize::try_from(len).map_err(|_| ProtocolError::MessageTooLarge {
                limit: self.config.max_message_size,
            })?;
            if self.buf.len() - header_len < len {
                return Ok(None);
            }
            self.buf.advance(header_len);
            let payload = self.buf.split_to(len);
            match opcode {
                Opcode::Ping => return Ok(Some(Message::Ping(payload.freeze()))),
                Opcode::Pong => return Ok(Some(Message::Pong(payload.freeze()))),
                Opcode::Close => {
                    let message = parse_close(&payload)?;
                    self.close_received = true;
                    return Ok(Some(message));
                }
                Opcode::Text | Opcode::Binary => {
                    let mut partial = Partial {
                        text: opcode == Opcode::Text,
                        data: payload,
                        valid: 0,
                    };
                    if fin {
                        return partial.into_message().map(Some);
                    }
                    partial.check_utf8()?;
                    self.partial = Some(partial);
                }
                Opcode::Continuation => {
                    let Some(mut partial) = self.partial.take() else {
                        return Err(ProtocolError::UnexpectedContinuation);
                    };
                    partial.data.unsplit(payload);
                    if fin {
                        return partial.into_message().map(Some);
                    }
                    partial.check_utf8()?;
                    self.partial = Some(partial);
                }
            }
        }
    }

    /// Reads and checks the header of the next frame: its length, FIN, opcode and
    /// payload length; `None` if it is not all here yet.
    fn frame_header(&self) -> Result<Option<(usize, bool, Opcode, u64)>, ProtocolError> {
        let [b0, b1, ..] = self.buf[..] else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        if b0 & 0x70 != 0 {
            return Err(ProtocolError::ReservedBits(b0 & 0x70));
        }
        let opcode =
            Opcode::from_bits(b0 & 0x0f).ok_or(ProtocolError::ReservedOpcode(b0 & 0x0f))?;
        if b1 & 0x80 != 0 {
            return Err(ProtocolError::MaskedFrame);
        }
        let len7 = b1 & 0x7f;
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::FragmentedControl);
            }
            if usize::from(len7) > MAX_CONTROL_PAYLOAD {
                // 126 and 127 announce an extended length, which is always too long.
                let mut ext = [0u8; 8];
                let n = if len7 == 126 { 2 } else { 8 };
                return match self.buf.get(2..2 + n) {
                    Some(bytes) => {
                        ext[8 - n..].copy_from_slice(bytes);
                        Err(ProtocolError::ControlTooLong(u64::from_be_bytes(ext)))
                    }
                    None => Err(ProtocolError::ControlTooLong(u64::from(len7))),
                };
            }
        } else {
            match (opcode, &self.partial) {
                (Opcode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
                (Opcode::Text | Opcode::Binary, Some(_)) => {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                _ => {}
            }
        }
        let (header_len, len) = match len7 {
            126 => match self.buf.get(2..4) {
                Some(&[a, b]) => (4, u64::from(u16::from_be_bytes([a, b]))),
                _ => return Ok(None),
            },
            127 => match self.buf.get(2..10) {
                Some(bytes) => {
                    let mut ext = [0u8; 8];
                    ext.copy_from_slice(bytes);
                    let len = u64::from_be_bytes(ext);
                    if len >> 63 != 0 {
                        return Err(ProtocolError::InvalidLength);
                    }
                    (10, len)
                }
                None => return Ok(None),
            },
            len => (2, u64::from(len)),
        };
        if !opcode.is_control() {
            let so_far = self.partial.as_ref().map_or(0, |p| p.data.len()) as u64;
            let limit = self.config.max_message_size;
            if so_far.saturating_add(len) > limit as u64 {
                return Err(ProtocolError::MessageTooLarge { limit });
            }
        }
        Ok(Some((header_len, fin, opcode, len)))
    }
}

/// The code and reason of a Close payload.
fn parse_close(payload: &[u8]) -> Result<Message, ProtocolError> {
    match payload {
        [] => Ok(Message::Close {
            code: None,
            reason: String::new(),
        }),
        [_] => Err(ProtocolError::InvalidClosePayload),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_sendable() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Message::Close {
                code: Some(code),
                reason: reason.to_owned(),
            })
        }
    }
}
