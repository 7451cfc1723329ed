//! An HTTP/1.1 client connection as a codec: request heads and bodies out, response events
//! in.
//!
//! The browser client speaks HTTP/1.1 to workspace apps (code-server and the like) over
//! tunnelled TCP streams. This module turns `http` crate types into bytes and bytes into
//! events; the caller moves the bytes, so it runs the same natively and in Wasm.
//!
//! # Sending
//!
//! [`encode_request`] writes a request head with the body framing the caller chose
//! ([`BodyFraming`]) and returns a [`BodyEncoder`] that frames the body to match.
//!
//! # Receiving
//!
//! A [`ResponseDecoder`] is told about each request sent on the connection
//! ([`ResponseDecoder::expect_response`], which needs the method: a response to HEAD has no
//! body whatever its headers say), is fed bytes with [`ResponseDecoder::push`] and the end of
//! the stream with [`ResponseDecoder::eof`], and yields [`ResponseEvent`]s from
//! [`ResponseDecoder::poll_event`]:
//!
//! ```text
//! Informational*  Head  Body*  Trailers?  End { reusable }
//! Informational*  Upgrade { head, rest }        (101, or 2xx to CONNECT)
//! ```
//!
//! Body bytes are handed out as they arrive, never collected into a whole body; content
//! codings (gzip, ...) are passed through untouched.
//!
//! # Message framing (RFC 9112 section 6.3)
//!
//! - Responses to HEAD, and 1xx, 204 and 304 responses, have no body; their
//!   `Content-Length` is ignored.
//! - `Transfer-Encoding` together with `Content-Length` is an error
//!   ([`DecodeError::ConflictingFraming`]), not "chunked wins": the RFC allows either, and
//!   the ambiguity is the signature of request smuggling and response splitting, so a
//!   connection that shows it is not worth keeping.
//! - `Transfer-Encoding` ending in `chunked` is chunked (other codings before it stay
//!   applied and are the caller's business); any other `Transfer-Encoding` makes the body
//!   run to the end of the connection. `Transfer-Encoding` in an HTTP/1.0 response is an
//!   error (RFC 9112 section 6.1 calls the framing faulty).
//! - `Content-Length` must be digits only; repeated values must agree.
//! - Otherwise the body runs to the end of the connection (close-delimited).
//!
//! Chunk-size lines must end in CRLF: a bare LF there is how several smuggling attacks
//! make two parsers disagree, so it is refused. Header blocks may end lines with a bare LF
//! (`httparse` accepts it, as RFC 9112 allows).

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version, request, response};

/// Default limit on the size of a response head (status line and headers), and of a
/// chunked body's trailer block: 64 KiB.
pub const DEFAULT_MAX_HEAD_LEN: usize = 64 * 1024;

/// Default limit on the number of headers in a response head or trailer block.
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// Default limit on a chunk-size line (size and extensions, without the CRLF): 4 KiB.
pub const DEFAULT_MAX_CHUNK_LINE_LEN: usize = 4 * 1024;

/// How a request body is delimited on the wire; the caller decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body and no framing header (a GET, say). Use `ContentLength(0)` for an empty
    /// body that the server should see announced.
    Empty,
    /// `Content-Length`: exactly this many bytes follow.
    ContentLength(u64),
    /// `Transfer-Encoding: chunked`, for bodies whose length is not known up front.
    Chunked,
}

/// Why a request cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A header value holds CR, LF or NUL, which would let it start a header (or a request)
    /// of its own.
    #[error("the value of header {name} contains CR, LF or NUL")]
    InvalidHeaderValue {
        /// The header.
        name: HeaderName,
    },
    /// The request target is empty or holds whitespace or control characters.
    #[error("the request target contains whitespace or control characters")]
    InvalidTarget,
    /// There is no `Host` header and the URI has no authority to make one from.
    #[error("the request has no Host header and its URI no authority")]
    MissingHost,
    /// The headers already hold `Content-Length` or `Transfer-Encoding`: the framing
    /// argument is the one source of the body's framing, so the two cannot disagree.
    #[error("header {0} is written from the body framing and must not be set by hand")]
    FramingHeader(HeaderName),
    /// More body than the `Content-Length` announced (or any body with
    /// [`BodyFraming::Empty`]).
    #[error("body exceeds its announced length of {length} bytes")]
    BodyTooLong {
        /// The announced length.
        length: u64,
    },
    /// The body ended before the `Content-Length` announced.
    #[error("body ended {missing} bytes short of its announced length")]
    BodyTooShort {
        /// Bytes still owed.
        missing: u64,
    },
}

/// Appends a request head to `buf` and returns the encoder for its body.
///
/// The request line is `METHOD target HTTP/1.1` whatever `head.version` says: this codec
/// speaks HTTP/1.1 only. The target is the URI's path and query (origin form; `/` if
/// empty), or its authority for CONNECT. `Host` comes first, from the headers or else from
/// the URI's authority (without user info). Then the other headers, then the framing
/// header for `framing`. Header names go out lower-case, as `http` stores them.
///
/// Nothing is written when an error is returned.
pub fn encode_request(
    head: &request::Parts,
    framing: BodyFraming,
    buf: &mut BytesMut,
) -> Result<BodyEncoder, EncodeError> {
    for name in [header::CONTENT_LENGTH, header::TRANSFER_ENCODING] {
        if head.headers.contains_key(&name) {
            return Err(EncodeError::FramingHeader(name));
        }
    }
    for (name, value) in &head.headers {
        check_field_value(name, value.as_bytes())?;
    }

    let target = if head.method == Method::CONNECT {
        head.uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or(EncodeError::InvalidTarget)?
    } else {
        match head.uri.path_and_query().map(|pq| pq.as_str()) {
            None | Some("") => "/".to_owned(),
            Some(pq) if pq.starts_with('?') => format!("/{pq}"),
            Some(pq) => pq.to_owned(),
        }
    };
    if target.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(EncodeError::InvalidTarget);
    }

    // Host from the URI, without user info (which must never be sent in Host).
    let uri_host = head.uri.authority().map(|a| {
        let a = a.as_str();
        a.rsplit_once('@').map_or(a, |(_, host)| host)
    });
    let host: &[u8] = match (head.headers.get(header::HOST), uri_host) {
        (Some(h), _) => h.as_bytes(),
        (None, Some(h)) => h.as_bytes(),
        (None, None) => return Err(EncodeError::MissingHost),
    };
    check_field_value(&header::HOST, host)?;

    buf.put_slice(head.method.as_str().as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(target.as_bytes());
    buf.put_slice(b" HTTP/1.1\r\nhost: ");
    buf.put_slice(host);
    buf.put_slice(b"\r\n");
    for (name, value) in &head.headers {
        if name == header::HOST {
            continue;
        }
        buf.put_slice(name.as_str().as_bytes());
        buf.put_slice(b": ");
        buf.put_slice(value.as_bytes());
        buf.put_slice(b"\r\n");
    }
    match framing {
        BodyFraming::Empty => {}
        BodyFraming::ContentLength(n) => {
            buf.put_slice(format!("content-length: {n}\r\n").as_bytes());
        }
        BodyFraming::Chunked => buf.put_slice(b"transfer-encoding: chunked\r\n"),
    }
    buf.put_slice(b"\r\n");
    Ok(BodyEncoder {
        framing,
        written: 0,
    })
}

/// Frames the body of one request, as [`encode_request`] announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyEncoder {
    framing: BodyFraming,
    written: u64,
}

impl BodyEncoder {
    /// The framing the head announced.
    pub fn framing(&self) -> BodyFraming {
        self.framing
    }

    /// Appends body bytes to `buf`: as they are, or as one chunk when chunked.
    ///
    /// An empty `data` writes nothing (an empty chunk would end a chunked body). Bytes
    /// beyond the announced length are refused, and then nothing is written.
    pub fn data(&mut self, data: &[u8], buf: &mut BytesMut) -> Result<(), EncodeError> {
        let len = data.len() as u64;
        match self.framing {
            BodyFraming::Empty if !data.is_empty() => {
                return Err(EncodeError::BodyTooLong { length: 0 });
            }
            BodyFraming::Empty => {}
            BodyFraming::ContentLength(length) => {
                if self.written.saturating_add(len) > length {
                    return Err(EncodeError::BodyTooLong { length });
                }
                buf.put_slice(data);
            }
            BodyFraming::Chunked if data.is_empty() => {}
            BodyFraming::Chunked => {
                buf.put_slice(format!("{:x}\r\n", data.len()).as_bytes());
                buf.put_slice(data);
                buf.put_slice(b"\r\n");
            }
        }
        self.written += len;
        Ok(())
    }

    /// Ends the body: the last chunk when chunked; a check that the announced length was
    /// sent otherwise.
    pub fn finish(self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        match self.framing {
            BodyFraming::Empty => Ok(()),
            BodyFraming::ContentLength(length) if self.written < length => {
                Err(EncodeError::BodyTooShort {
                    missing: length - self.written,
                })
            }
            BodyFraming::ContentLength(_) => Ok(()),
            BodyFraming::Chunked => {
                buf.put_slice(b"0\r\n\r\n");
                Ok(())
            }
        }
    }
}

/// Limits on what a [`ResponseDecoder`] buffers before giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes in a response head, or in a trailer block.
    pub max_head_len: usize,
    /// Headers in a response head, or in a trailer block.
    pub max_headers: usize,
    /// Bytes in a chunk-size line, extensions included, CRLF excluded.
    pub max_chunk_line_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head_len: DEFAULT_MAX_HEAD_LEN,
            max_headers: DEFAULT_MAX_HEADERS,
            max_chunk_line_len: DEFAULT_MAX_CHUNK_LINE_LEN,
        }
    }
}

/// What a [`ResponseDecoder`] found in the bytes.
#[derive(Debug, Clone)]
pub enum ResponseEvent {
    /// A 1xx response other than 101 (100 Continue, 103 Early Hints, ...). The final
    /// response to the same request follows; callers not waiting on 100 Continue can
    /// ignore these.
    Informational(response::Parts),
    /// The head of the final response.
    Head(response::Parts),
    /// The next piece of the body, as it arrived.
    Body(Bytes),
    /// The trailer fields of a chunked body (only when there are any).
    Trailers(HeaderMap),
    /// The response is complete.
    End {
        /// Whether another request may be sent on this connection: the response was
        /// self-delimited and neither side of it said `Connection: close` (HTTP/1.0:
        /// unless it said `keep-alive`). A request that said `Connection: close` is the
        /// caller's to remember. When `false`, the decoder accepts no more bytes.
        reusable: bool,
    },
    /// `101 Switching Protocols`, or a 2xx answer to CONNECT: the connection now speaks
    /// another protocol. The decoder is done; `rest` holds the bytes that followed the
    /// head, which belong to the new protocol.
    Upgrade {
        /// The response head.
        head: response::Parts,
        /// Bytes received after the head.
        rest: Bytes,
    },
}

/// Why the bytes are not a valid response (or not a complete one).
///
/// After an error the decoder keeps returning it: the connection cannot be trusted to be
/// in step any more and should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The status line or a header line is malformed.
    #[error("malformed response head: {0}")]
    Malformed(&'static str),
    /// The status code is outside 100..=999.
    #[error("invalid status code {0}")]
    InvalidStatus(u16),
    /// The response head (or a trailer block) did not end within the limit.
    #[error("response head exceeds {limit} bytes")]
    HeadTooLarge {
        /// The limit, [`Limits::max_head_len`].
        limit: usize,
    },
    /// More headers (or trailers) than the limit.
    #[error("more than {limit} headers")]
    TooManyHeaders {
        /// The limit, [`Limits::max_headers`].
        limit: usize,
    },
    /// `Content-Length` is not a number of bytes: a sign, a non-digit, or more than
    /// `u64` holds.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Several `Content-Length` values that differ.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// Both `Content-Length` and `Transfer-Encoding` (see the module docs).
    #[error("both Content-Length and Transfer-Encoding: ambiguous framing")]
    ConflictingFraming,
    /// `Transfer-Encoding` that cannot be honoured: `chunked` twice, or any in HTTP/1.0.
    #[error("invalid Transfer-Encoding: {0}")]
    InvalidTransferEncoding(&'static str),
    /// A chunk-size line longer than [`Limits::max_chunk_line_len`].
    #[error("chunk-size line exceeds {limit} bytes")]
    ChunkLineTooLong {
        /// The limit.
        limit: usize,
    },
    /// A chunk-size line that is not hex digits, optional extensions and CRLF, or a size
    /// beyond `u64`.
    #[error("invalid chunk-size line")]
    InvalidChunkSize,
    /// Chunk data not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    InvalidChunkEnd,
    /// Bytes arrived while no request was waiting for a response.
    #[error("response bytes while no request is outstanding")]
    UnexpectedResponse,
    /// Bytes arrived after a response that ended the connection (`Connection: close`,
    /// a close-delimited body) or switched its protocol.
    #[error("bytes after the connection's last response")]
    DataAfterEnd,
    /// The connection ended in the middle of a response, or before an expected one.
    #[error("connection closed before the response was complete")]
    UnexpectedEof,
}

/// The response side of one HTTP/1.1 client connection, as a state machine.
///
/// ```
/// use burrow_proto::http1::{ResponseDecoder, ResponseEvent};
/// use http::Method;
///
/// let mut decoder = ResponseDecoder::default();
/// decoder.expect_response(Method::GET);
/// decoder.push(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
/// let mut body = Vec::new();
/// while let Some(event) = decoder.poll_event().expect("valid response") {
///     match event {
///         ResponseEvent::Head(head) => assert_eq!(head.status, 200),
///         ResponseEvent::Body(bytes) => body.extend_from_slice(&bytes),
///         ResponseEvent::End { reusable } => assert!(reusable),
///         other => unreachable!("{other:?}"),
///     }
/// }
/// assert_eq!(body, b"hi");
/// ```
#[derive(Debug)]
pub struct ResponseDecoder {
    limits: Limits,
    buf: BytesMut,
    /// Methods of the requests still waiting for their response, oldest first.
    pending: VecDeque<Method>,
    state: State,
    /// Whether the current response leaves the connection usable.
    reusable: bool,
    /// Bytes of `buf` known to hold no end of head, so a head arriving a byte at a time is
    /// not rescanned from its start each time.
    scanned: usize,
    eof: bool,
}

#[derive(Debug)]
enum State {
    /// Between responses.
    Head,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    UntilEof,
    /// The body is complete; `End` is next.
    Done,
    /// The connection is over for HTTP (closed, or upgraded).
    Finished,
    Failed(DecodeError),
}

impl Default for ResponseDecoder {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl ResponseDecoder {
    /// A decoder for a fresh connection.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            buf: BytesMut::new(),
            pending: VecDeque::new(),
            state: State::Head,
            reusable: true,
            scanned: 0,
            eof: false,
        }
    }

    /// Records that a request with `method` was sent: its response comes after those of
    /// the requests recorded before (pipelining).
    pub fn expect_response(&mut self, method: Method) {
        self.pending.push_back(method);
    }

    /// Responses still owed, the current one included.
    pub fn pending_responses(&self) -> usize {
        self.pending.len() + usize::from(self.in_body())
    }

    /// Bytes received from the connection.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The connection delivered its last byte (the server closed it, or its TCP FIN came).
    pub fn eof(&mut self) {
        self.eof = true;
    }

    /// The next event, or `None` until more bytes (or the end) arrive.
    pub fn poll_event(&mut self) -> Result<Option<ResponseEvent>, DecodeError> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        let result = self.step();
        if let Err(e) = &result {
            self.state = State::Failed(e.clone());
        }
        result
    }

    fn in_body(&self) -> bool {
        matches!(
            self.state,
            State::Length(_)
                | State::ChunkSize
                | State::ChunkData(_)
                | State::ChunkEnd
                | State::Trailers
                | State::UntilEof
                | State::Done
        )
    }

    fn step(&mut self) -> Result<Option<ResponseEvent>, DecodeError> {
        loop {
            match self.state {
                State::Failed(ref e) => return Err(e.clone()),
                State::Finished => {
                    return if self.buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(DecodeError::DataAfterEnd)
                    };
                }
                State::Head => return self.head(),
                State::Done => {
                    let reusable = self.reusable;
                    self.state = if reusable {
                        State::Head
                    } else {
                        State::Finished
                    };
                    return Ok(Some(ResponseEvent::End { reusable }));
                }
                State::Length(0) => self.state = State::Done,
                State::Length(remaining) => {
                    let Some(data) = self.take_body(remaining)? else {
                        return Ok(None);
                    };
                    self.state = State::Length(remaining - data.len() as u64);
                    return Ok(Some(ResponseEvent::Body(data)));
                }
                State::UntilEof => {
                    if !self.buf.is_empty() {
                        return Ok(Some(ResponseEvent::Body(self.buf.split().freeze())));
                    }
                    if !self.eof {
                        return Ok(None);
                    }
                    self.reusable = false;
                    self.state = State::Done;
                }
                State::ChunkSize => {
                    let limit = self.limits.max_chunk_line_len;
                    let window = &self.buf[..self.buf.len().min(limit + 2)];
                    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
                        if self.buf.len() >= limit + 2 {
                            return Err(DecodeError::ChunkLineTooLong { limit });
                        }
                        return self.wait();
                    };
                    let size = match window[..lf].strip_suffix(b"\r") {
                        Some(line) if line.len() > limit => {
                            return Err(DecodeError::ChunkLineTooLong { limit });
                        }
                        Some(line) => parse_chunk_size(line)?,
                        None => return Err(DecodeError::InvalidChunkSize),
                    };
                    self.buf.advance(lf + 1);
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkData(0) => self.state = State::ChunkEnd,
                State::ChunkData(remaining) => {
                    let Some(data) = self.take_body(remaining)? else {
                        return Ok(None);
                    };
                    self.state = State::ChunkData(remaining - data.len() as u64);
                    return Ok(Some(ResponseEvent::Body(data)));
                }
                State::ChunkEnd => {
                    if self.buf.len() < 2 {
                        if self.buf.first().is_some_and(|&b| b != b'\r') {
                            return Err(DecodeError::InvalidChunkEnd);
                        }
                        return self.wait();
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(DecodeError::InvalidChunkEnd);
                    }
                    self.buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let limit = self.limits.max_head_len;
                    let window = &self.buf[..self.buf.len().min(limit)];
                    let mut headers = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
                    match httparse::parse_headers(window, &mut headers) {
                        Ok(httparse::Status::Complete((len, fields))) => {
                            let trailers = header_map(fields)?;
                            self.buf.advance(len);
                            self.state = State::Done;
                            if !trailers.is_empty() {
                                return Ok(Some(ResponseEvent::Trailers(trailers)));
                            }
                        }
                        Ok(httparse::Status::Partial) if window.len() >= limit => {
                            return Err(DecodeError::HeadTooLarge { limit });
                        }
                        Ok(httparse::Status::Partial) => return self.wait(),
                        Err(e) => return Err(self.httparse_error(e)),
                    }
                }
            }
        }
    }

    /// `None` for now, or an error if no more bytes will come.
    fn wait(&self) -> Result<Option<ResponseEvent>, DecodeError> {
        if self.eof {
            Err(DecodeError::UnexpectedEof)
        } else {
            Ok(None)
        }
    }

    /// Up to `remaining` body bytes from the buffer; `None` if it is empty.
    fn take_body(&mut self, remaining: u64) -> Result<Option<Bytes>, DecodeError> {
        if self.buf.is_empty() {
            return self.wait().map(|_| None);
        }
        let n = usize::try_from(remaining).map_or(self.buf.len(), |r| r.min(self.buf.len()));
        Ok(Some(self.buf.split_to(n).freeze()))
    }

    fn httparse_error(&self, e: httparse::Error) -> DecodeError {
        match e {
            httparse::Error::TooManyHeaders => DecodeError::TooManyHeaders {
                limit: self.limits.max_headers,
            },
            httparse::Error::HeaderName => DecodeError::Malformed("invalid header name"),
            httparse::Error::HeaderValue => DecodeError::Malformed("invalid header value"),
            httparse::Error::NewLine => DecodeError::Malformed("invalid line ending"),
            httparse::Error::Status => DecodeError::Malformed("invalid status"),
            httparse::Error::Token => DecodeError::Malformed("invalid token"),
            httparse::Error::Version => DecodeError::Malformed("invalid HTTP version"),
        }
    }

    /// Parses a response head, if a whole one is buffered, and decides the body's framing.
    fn head(&mut self) -> Result<Option<ResponseEvent>, DecodeError> {
        if self.buf.is_empty() {
            return if self.eof && !self.pending.is_empty() {
                Err(DecodeError::UnexpectedEof)
            } else {
                Ok(None)
            };
        }
        let Some(method) = self.pending.front().cloned() else {
            return Err(DecodeError::UnexpectedResponse);
        };
        let limit = self.limits.max_head_len;
        let window = &self.buf[..self.buf.len().min(limit)];
        // httparse would find the end too, but cheaply looking for a blank line first keeps
        // a head that trickles in byte by byte from costing quadratic time.
        let from = self.scanned.saturating_sub(2);
        if !has_blank_line(&window[from..]) {
            self.scanned = window.len();
            if window.len() >= limit {
                return Err(DecodeError::HeadTooLarge { limit });
            }
            return self.wait();
        }
        let mut headers = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(window) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                // The blank line was a leading one; wait for the real end.
                self.scanned = window.len();
                if window.len() >= limit {
                    return Err(DecodeError::HeadTooLarge { limit });
                }
                return self.wait();
            }
            Err(e) => return Err(self.httparse_error(e)),
        };
        let code = response.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| DecodeError::InvalidStatus(code))?;
        let version = match response.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        let headers = header_map(response.headers)?;
        self.buf.advance(len);
        self.scanned = 0;

        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = status;
        parts.version = version;
        parts.headers = headers;

        let upgrade = status == StatusCode::SWITCHING_PROTOCOLS
            || (method == Method::CONNECT && status.is_success());
        if upgrade {
            self.pending.pop_front();
            self.state = State::Finished;
            let rest = self.buf.split().freeze();
            return Ok(Some(ResponseEvent::Upgrade { head: parts, rest }));
        }
        if status.is_informational() {
            return Ok(Some(ResponseEvent::Informational(parts)));
        }
        self.pending.pop_front();

        self.reusable = keep_alive(version, &parts.headers);
        let bodiless = method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        self.state = if bodiless {
            State::Length(0)
        } else {
            match body_framing(version, &parts.headers)? {
                Framing::Length(n) => State::Length(n),
                Framing::Chunked => State::ChunkSize,
                Framing::UntilEof => {
                    self.reusable = false;
                    State::UntilEof
                }
            }
        };
        Ok(Some(ResponseEvent::Head(parts)))
    }
}

enum Framing {
    Length(u64),
    Chunked,
    UntilEof,
}

/// The body framing of a response that may have a body (RFC 9112 section 6.3).
fn body_framing(version: Version, headers: &HeaderMap) -> Result<Framing, DecodeError> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(DecodeError::InvalidTransferEncoding(
                "in an HTTP/1.0 response",
            ));
        }
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(DecodeError::ConflictingFraming);
        }
        let codings: Vec<&[u8]> = list_items(headers.get_all(header::TRANSFER_ENCODING)).collect();
        let chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
        return match codings.iter().filter(|c| chunked(c)).count() {
            0 => Ok(Framing::UntilEof),
            1 if codings.last().is_some_and(|c| chunked(c)) => Ok(Framing::Chunked),
            // chunked before another coding: the body ends with the connection.
            1 => Ok(Framing::UntilEof),
            _ => Err(DecodeError::InvalidTransferEncoding(
                "chunked more than once",
            )),
        };
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let n = parse_content_length(trim_ows(item))?;
            if length.is_some_and(|l| l != n) {
                return Err(DecodeError::ConflictingContentLength);
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::UntilEof, Framing::Length))
}

fn parse_content_length(digits: &[u8]) -> Result<u64, DecodeError> {
    if digits.is_empty() {
        return Err(DecodeError::InvalidContentLength);
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return Err(DecodeError::InvalidContentLength);
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(DecodeError::InvalidContentLength)
    })
}

/// Parses `chunk-size [ BWS ; chunk-ext ]` (the line without its CRLF); extensions are
/// checked for control characters and otherwise ignored.
fn parse_chunk_size(line: &[u8]) -> Result<u64, DecodeError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(DecodeError::InvalidChunkSize);
    }
    let size = line[..digits].iter().try_fold(0u64, |n, &d| {
        let v = (d as char).to_digit(16).unwrap_or(0);
        n.checked_mul(16)
            .and_then(|n| n.checked_add(u64::from(v)))
            .ok_or(DecodeError::InvalidChunkSize)
    })?;
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    let ext_ok = rest.is_empty()
        || (rest[0] == b';' && rest.iter().all(|&b| b == b'\t' || (b >= b' ' && b != 0x7f)));
    if !ext_ok {
        return Err(DecodeError::InvalidChunkSize);
    }
    Ok(size)
}

/// Whether `bytes` holds an empty line (`\n\n` or `\n\r\n`).
fn has_blank_line(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && bytes.get(i + 2) == Some(&b'\n')))
}

fn header_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, DecodeError> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| DecodeError::Malformed("invalid header name"))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| DecodeError::Malformed("invalid header value"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Whether the connection stays open after this response, from its version and
/// `Connection` header.
fn keep_alive(version: Version, headers: &HeaderMap) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for token in list_items(headers.get_all(header::CONNECTION)) {
        close |= token.eq_ignore_ascii_case(b"close");
        keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
    }
    !close && (version != Version::HTTP_10 || keep_alive)
}

/// The non-empty items of a comma-separated header list, trimmed.
fn list_items<'a>(values: header::GetAll<'a, HeaderValue>) -> impl Iterator<Item = &'a [u8]> + 'a {
    values
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(trim_ows)
        .filter(|item| !item.is_empty())
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let end = bytes.len()
        - bytes
            .iter()
            .rev()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
    bytes.get(start..end).unwrap_or_default()
}

/// Refuses CR, LF and NUL in a field value. `http`'s checked constructors already refuse
/// them, so this only guards against values that bypassed them; the wire must never see
/// one, because a CRLF in a value starts a header (or a request) the caller never wrote.
fn check_field_value(name: &HeaderName, value: &[u8]) -> Result<(), EncodeError> {
    if value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(EncodeError::InvalidHeaderValue { name: name.clone() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_values_with_cr_lf_or_nul_are_refused() {
        for value in [&b"a\r\nX-Injected: 1"[..], b"a\nb", b"a\rb", b"a\0b"] {
            assert_eq!(
                check_field_value(&header::USER_AGENT, value),
                Err(EncodeError::InvalidHeaderValue {
                    name: header::USER_AGENT
                })
            );
        }
        assert_eq!(check_field_value(&header::USER_AGENT, b"a\tb c"), Ok(()));
    }

    #[test]
    fn chunk_size_lines_parse_strictly() {
        assert_eq!(parse_chunk_size(b"1a"), Ok(26));
        assert_eq!(parse_chunk_size(b"0000A"), Ok(10));
        assert_eq!(parse_chunk_size(b"5;name=value;x"), Ok(5));
        assert_eq!(parse_chunk_size(b"5 ;x=\"quoted\""), Ok(5));
        assert_eq!(parse_chunk_size(b"ffffffffffffffff"), Ok(u64::MAX));
        for bad in [
            &b""[..],
            b";x",
            b"-1",
            b"+1",
            b"0x10",
            b"5 x",
            b"1 2",
            b"10000000000000000",
            b"5;a\rb",
        ] {
            assert_eq!(
                parse_chunk_size(bad),
                Err(DecodeError::InvalidChunkSize),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn blank_lines_are_found_with_either_line_ending() {
        assert!(has_blank_line(b"a\r\n\r\n"));
        assert!(has_blank_line(b"a\n\n"));
        assert!(has_blank_line(b"a\n\r\n"));
        assert!(!has_blank_line(b"a\r\nb\r\n"));
        assert!(!has_blank_line(b"a\n\r"));
    }
}
