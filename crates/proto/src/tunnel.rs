//! The sans-IO stream multiplexer: one side of a tunnel, as a state machine.
//!
//! A [`Tunnel`] carries many byte streams (each one a TCP connection at both ends) over one
//! reliable, ordered message channel, using the frames of [`crate::frame`]. It does no I/O
//! and reads no clock: the shell around it (the tokio driver in `burrow-peer`, or the
//! browser's JavaScript glue) feeds it the messages that arrive, sends the messages it
//! produces, and moves stream bytes between it and sockets.
//!
//! The [`Role::Client`] opens streams; the [`Role::Agent`] accepts or refuses them.
//!
//! # Guarantees
//!
//! - Streams never block each other. The shell must always drain the channel, and can,
//!   because every stream's receive buffer is bounded by the credit window it granted:
//!   a peer that sends beyond its credit gets the stream reset, not more memory. A stream
//!   whose application stops reading only stops its own sender.
//! - Per-stream memory is bounded: received-but-unread bytes never exceed
//!   [`Config::initial_window`], and queued-but-unsent bytes never exceed the smaller of
//!   the peer's credit and [`Config::send_buffer`].
//! - [`Tunnel::poll_transmit`] serves streams with pending data round-robin, one frame at a
//!   time, after control frames (credit updates first, so senders do not stall).
//! - Anything the peer sends is handled without panicking: a malformed message or a
//!   violation of the connection's rules is a [`TunnelError`] (and the tunnel closes with a
//!   RESET on stream 0 saying why); a violation confined to a stream resets that stream.
//! - A peer that stops answering is noticed: after [`Config::keepalive_interval`] without
//!   a word from it the tunnel sends a keepalive PING, and after [`Config::idle_timeout`]
//!   it closes with [`ResetCode::TIMEOUT`], so callers get an error instead of a hang.
//!   Any valid message from the peer counts as life: a tunnel moving data either way, or
//!   whose peer answers the PINGs, stays up indefinitely.
//!
//! # Events
//!
//! After any call, drain [`Tunnel::poll_event`]:
//!
//! - [`Event::StreamOpened`] (agent): the client asks for a port; answer with
//!   [`Tunnel::accept`] or [`Tunnel::refuse`].
//! - [`Event::StreamAccepted`] (client): the stream is open; it is writable.
//! - [`Event::Readable`]: data arrived in an empty receive buffer. Events are edge-triggered:
//!   call [`Tunnel::read`] until it returns `Ok(None)` to be told again.
//! - [`Event::Writable`]: a [`Tunnel::write`] that took less than it was given may now take
//!   more.
//! - [`Event::Finished`]: the peer half-closed the stream and everything it sent was read.
//! - [`Event::StreamClosed`]: the stream is gone (cleanly, refused, reset by either side, or
//!   because the tunnel closed; see [`StreamEnd`]), with its byte counts. Every stream gets
//!   exactly one, and its id is never reused.
//! - [`Event::Pong`]: the answer to a [`Tunnel::ping`] (never to the tunnel's own
//!   keepalives).
//! - [`Event::Closed`]: the tunnel is over; it is the last event.
//!
//! # Run loop
//!
//! A shell loops over: hand arriving messages to [`Tunnel::handle_message`]; call
//! [`Tunnel::handle_timeout`] with the time; apply what its application asked for (open,
//! write, finish, ...); drain [`Tunnel::poll_event`] and react; send what
//! [`Tunnel::poll_transmit`] returns while the channel accepts it; arm a timer for
//! [`Tunnel::poll_timeout`].
//!
//! Time is a [`Duration`] since any fixed origin of the shell's monotonic clock (the
//! driver's start, the page's `performance.now()`); the tunnel never reads a clock. The
//! shell calls `handle_timeout(now)` after each batch of `handle_message` calls (that is
//! when what arrived counts as life) and whenever the deadline `poll_timeout` gave has
//! passed; calling it early or more often is harmless. The first call starts the clock, so
//! make it when the channel opens. Until then the tunnel neither pings nor times out, and
//! `poll_timeout` is [`Duration::ZERO`] (call `handle_timeout` now); once closed it is
//! `None`.
//!
//! Here both sides run in one loop with the channel replaced by direct calls (and no
//! clock: nothing here waits long enough for liveness to matter):
//!
//! ```
//! use burrow_proto::tunnel::{Config, Event, Role, Tunnel, StreamEnd};
//!
//! let mut client = Tunnel::new(Role::Client, Config::default());
//! let mut agent = Tunnel::new(Role::Agent, Config::default());
//!
//! let id = client.open(5432).expect("open");
//! let mut request = &b"SELECT 1;"[..];
//! let mut reply = Vec::new();
//! let mut done = false;
//!
//! while !done {
//!     // The "channel": every message one side produces reaches the other in order.
//!     while let Some(msg) = client.poll_transmit() {
//!         agent.handle_message(msg).expect("valid frames");
//!     }
//!     while let Some(msg) = agent.poll_transmit() {
//!         client.handle_message(msg).expect("valid frames");
//!     }
//!     // The agent's shell: accept, echo upper-cased, half-close after the client did.
//!     while let Some(event) = agent.poll_event() {
//!         match event {
//!             Event::StreamOpened { id, port } => {
//!                 assert_eq!(port, 5432); // dial the port here; accept once connected
//!                 agent.accept(id).expect("pending");
//!             }
//!             Event::Readable { id } => {
//!                 while let Some(bytes) = agent.read(id).expect("open") {
//!                     let n = agent.write(id, &bytes.to_ascii_uppercase()).expect("open");
//!                     assert_eq!(n, bytes.len()); // a real shell keeps the rest for Writable
//!                 }
//!             }
//!             Event::Finished { id } => agent.finish(id).expect("open"),
//!             _ => {}
//!         }
//!     }
//!     // The client's shell: write the request once accepted, collect the reply.
//!     while let Some(event) = client.poll_event() {
//!         match event {
//!             Event::StreamAccepted { .. } | Event::Writable { .. } => {
//!                 let n = client.write(id, request).expect("open");
//!                 request = &request[n..];
//!                 if request.is_empty() {
//!                     client.finish(id).expect("open");
//!                 }
//!             }
//!             Event::Readable { .. } => {
//!                 while let Some(bytes) = client.read(id).expect("open") {
//!                     reply.extend_from_slice(&bytes);
//!                 }
//!             }
//!             Event::StreamClosed { end, stats, .. } => {
//!                 assert_eq!(end, StreamEnd::Finished);
//!                 assert_eq!(stats.bytes_received, 9);
//!                 done = true;
//!             }
//!             _ => {}
//!         }
//!     }
//! }
//! assert_eq!(reply, b"SELECT 1;");
//! ```

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::frame::{
    FRAME_DATA, Frame, FrameError, HEADER_LEN, MAX_FRAME_PAYLOAD_LIMIT, PROTOCOL_VERSION,
    ResetCode, StreamId, frame_name,
};

pub use crate::frame::DEFAULT_MAX_FRAME_PAYLOAD;

/// Default receive window of a stream: 1 MiB.
///
/// One stream's throughput is at most a window per round trip (20 MB/s at 50 ms).
pub const DEFAULT_INITIAL_WINDOW: u32 = 1 << 20;

/// Default bound on a stream's queued-but-unsent bytes: 64 KiB.
///
/// The credit window, not this, is what keeps a long path full: it bounds the bytes in
/// flight. Queued bytes only wait for the channel, and the shell refills the queue as each
/// frame leaves ([`Event::Writable`]), so a frame or two is enough. A deeper queue is memory
/// per stream for nothing: behind a busy channel, a hundred streams with window-deep queues
/// would hold everything their sockets had to say, which the sockets' kernel buffers and
/// TCP's backpressure keep instead.
pub const DEFAULT_SEND_BUFFER: u32 = 1 << 16;

/// Default limit on streams open at once, per tunnel.
pub const DEFAULT_MAX_STREAMS: usize = 1024;

/// Default time without a word from the peer after which a keepalive PING is sent: 5 s.
///
/// A PING is 13 bytes, so an idle tunnel costs next to nothing at this rate, and the peer
/// is asked several times before [`DEFAULT_IDLE_TIMEOUT`] gives up on it. It also keeps
/// NAT and TURN bindings warm, though ICE's own consent checks already do.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// Default time without a word from the peer after which the tunnel closes: 30 s.
///
/// The channel is reliable (SCTP retransmits a lost PING or PONG), so silence means the
/// peer or every path to it is gone, not a dropped packet. It is long enough to ride out
/// an ICE restart, which keeps the SCTP association and with it the tunnel, and a peer
/// stalled by a busy machine; short enough that a caller learns of a dead peer in well
/// under a minute instead of never.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Smallest [`Config::keepalive_interval`]: shorter intervals would make an idle tunnel
/// ping about as fast as the shell's timer fires.
pub const MIN_KEEPALIVE_INTERVAL: Duration = Duration::from_millis(100);

/// PING payloads with this bit set are the tunnel's keepalives: their PONGs are not
/// reported as [`Event::Pong`]. Shells' payloads are timestamps since their clock's origin
/// (microseconds or nanoseconds), which stay below it for centuries.
pub const KEEPALIVE_PAYLOAD_BIT: u64 = 1 << 63;

/// PINGs the peer may have outstanding before it counts as flooding us.
const MAX_PENDING_PONGS: usize = 64;

/// Which side of the tunnel this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Opens streams (the CLI or the browser).
    Client,
    /// Accepts streams and dials workspace ports.
    Agent,
}

/// Settings of one side; the two sides need not agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Bytes the peer may send on a stream before this side grants more: the bound on each
    /// stream's receive buffer. Values below 1 are raised to 1.
    pub initial_window: u32,
    /// Largest DATA payload this side accepts; the peer's HELLO announces its own, and the
    /// smaller is used for sending. Clamped to `1..=`[`MAX_FRAME_PAYLOAD_LIMIT`].
    pub max_frame_payload: u32,
    /// Streams open at once. An agent refuses OPENs beyond it; a client's
    /// [`Tunnel::open`] fails.
    pub max_streams: usize,
    /// Bytes [`Tunnel::write`] queues on a stream before the channel takes them, whatever
    /// credit the peer grants (see [`DEFAULT_SEND_BUFFER`]). Values below 1 are raised to 1.
    pub send_buffer: u32,
    /// Time without a word from the peer after which a keepalive PING is sent (see
    /// [`DEFAULT_KEEPALIVE_INTERVAL`]). Raised to at least [`MIN_KEEPALIVE_INTERVAL`].
    pub keepalive_interval: Duration,
    /// Time without a word from the peer after which the tunnel closes with
    /// [`ResetCode::TIMEOUT`] (see [`DEFAULT_IDLE_TIMEOUT`]). Raised to at least twice
    /// `keepalive_interval`, so that a keepalive has time to be answered.
    pub idle_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            initial_window: DEFAULT_INITIAL_WINDOW,
            max_frame_payload: DEFAULT_MAX_FRAME_PAYLOAD,
            max_streams: DEFAULT_MAX_STREAMS,
            send_buffer: DEFAULT_SEND_BUFFER,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Byte counts of one stream (DATA payload only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// The workspace port the stream was opened for.
    pub port: u16,
    /// Bytes this side sent on the stream.
    pub bytes_sent: u64,
    /// Bytes this side received on the stream.
    pub bytes_received: u64,
}

/// How a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// Both directions were finished and everything received was read.
    Finished,
    /// (Client) the agent refused to open it.
    Refused {
        /// Why.
        code: ResetCode,
        /// Why, for people.
        reason: String,
    },
    /// The peer reset it.
    ResetByPeer {
        /// Why.
        code: ResetCode,
        /// Why, for people.
        reason: String,
    },
    /// This side reset it: the application called [`Tunnel::reset`] or [`Tunnel::refuse`],
    /// or the peer broke the protocol on it (then `code` says how).
    ResetLocally {
        /// Why.
        code: ResetCode,
        /// Why, for people.
        reason: String,
    },
    /// The whole tunnel closed (see [`Event::Closed`]) before the stream ended.
    TunnelClosed,
}

/// Something the application should know about; see the [module docs](self#events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// (Agent) the client asks to open a stream to `port`.
    StreamOpened {
        /// The new stream.
        id: StreamId,
        /// The workspace port asked for.
        port: u16,
    },
    /// (Client) the agent accepted the stream: it is open and writable.
    StreamAccepted {
        /// The stream.
        id: StreamId,
    },
    /// Data arrived in the stream's empty receive buffer; read until `Ok(None)`.
    Readable {
        /// The stream.
        id: StreamId,
    },
    /// The stream can take more of what a short [`Tunnel::write`] left over.
    Writable {
        /// The stream.
        id: StreamId,
    },
    /// The peer will send no more on the stream, and all it sent has been read.
    Finished {
        /// The stream.
        id: StreamId,
    },
    /// The stream is gone; its id is not valid any more.
    StreamClosed {
        /// The stream.
        id: StreamId,
        /// How it ended.
        end: StreamEnd,
        /// Its byte counts.
        stats: StreamStats,
    },
    /// The answer to a [`Tunnel::ping`].
    Pong {
        /// The payload given to `ping`.
        payload: u64,
    },
    /// The tunnel is closed; this is the last event.
    Closed {
        /// Why.
        code: ResetCode,
        /// Why, for people.
        reason: String,
        /// Whether the peer closed it (else this side did, or the peer broke the protocol).
        by_peer: bool,
    },
}

/// The peer broke the rules of the connection; the tunnel is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    /// A message that is not a valid frame.
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    /// The peer speaks another protocol version.
    #[error("peer speaks tunnel protocol version {theirs}, this side speaks {ours}")]
    VersionMismatch {
        /// [`PROTOCOL_VERSION`].
        ours: u16,
        /// The peer's.
        theirs: u16,
    },
    /// A frame other than HELLO came first.
    #[error("{frame} frame before the peer's HELLO")]
    BeforeHello {
        /// The frame type's name.
        frame: &'static str,
    },
    /// A frame on a stream that was never opened.
    #[error("{frame} frame for stream {stream}, which was never opened")]
    UnknownStream {
        /// The frame type's name.
        frame: &'static str,
        /// The stream id.
        stream: u32,
    },
    /// Another break of the connection's rules.
    #[error("protocol violation: {0}")]
    Violation(String),
    /// The peer piles up work for this side faster than the channel drains it.
    #[error("peer floods the tunnel with {0}")]
    Flooded(&'static str),
}

impl TunnelError {
    fn reset_code(&self) -> ResetCode {
        match self {
            TunnelError::VersionMismatch { .. } => ResetCode::VERSION_MISMATCH,
            _ => ResetCode::PROTOCOL_ERROR,
        }
    }
}

/// A call the tunnel's state does not allow; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// No such stream: never opened here, or already closed.
    #[error("no stream {0}")]
    UnknownStream(StreamId),
    /// Only the client opens streams, and only the agent accepts or refuses them.
    #[error("the {0:?} side cannot do that")]
    WrongRole(Role),
    /// `accept`/`refuse` on a stream that is not waiting for an answer.
    #[error("stream {0} is not waiting to be accepted")]
    NotPending(StreamId),
    /// `write` after `finish`.
    #[error("stream {0} was finished: no more writes")]
    Finished(StreamId),
    /// [`Config::max_streams`] streams are open.
    #[error("too many streams open (limit {0})")]
    TooManyStreams(usize),
    /// Every odd `u32` was used.
    #[error("stream ids are exhausted; open a new tunnel")]
    IdsExhausted,
    /// The tunnel is closed.
    #[error("tunnel closed")]
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Client: OPEN sent, waiting for OPEN_OK.
    Opening,
    /// Agent: OPEN received, waiting for the application's answer.
    Pending,
    Open,
}

#[derive(Debug)]
struct Stream {
    state: State,
    stats: StreamStats,

    // Sending.
    send_buf: BytesMut,
    /// Bytes the peer still lets us send (u64: WINDOW may push it past u32 before we check).
    send_credit: u64,
    fin_queued: bool,
    fin_sent: bool,
    want_writable: bool,
    /// In `Tunnel::ready`.
    scheduled: bool,

    // Receiving.
    recv_buf: VecDeque<Bytes>,
    /// Bytes the peer may still send before we grant more.
    recv_credit: u64,
    /// Bytes the application read that were not granted back yet.
    recv_unacked: u64,
    window_queued: bool,
    fin_received: bool,
}

impl Stream {
    fn new(state: State, port: u16, send_credit: u32, recv_window: u32) -> Self {
        Self {
            state,
            stats: StreamStats {
                port,
                ..StreamStats::default()
            },
            send_buf: BytesMut::new(),
            send_credit: u64::from(send_credit),
            fin_queued: false,
            fin_sent: false,
            want_writable: false,
            scheduled: false,
            recv_buf: VecDeque::new(),
            recv_credit: u64::from(recv_window),
            recv_unacked: 0,
            window_queued: false,
            fin_received: false,
        }
    }

    fn sendable(&self) -> bool {
        self.state == State::Open
            && if self.send_buf.is_empty() {
                self.fin_queued && !self.fin_sent
            } else {
                self.send_credit > 0
            }
    }

    /// Bytes `write` would take now.
    fn room(&self, local_cap: u64) -> u64 {
        if self.state != State::Open || self.fin_queued {
            return 0;
        }
        self.send_credit
            .min(local_cap)
            .saturating_sub(self.send_buf.len() as u64)
    }
}

/// A control frame waiting for the channel. WINDOW is built when sent, so that one frame
/// carries all the credit freed until then.
#[derive(Debug)]
enum Control {
    Frame(Frame),
    Window(StreamId),
}

/// One side of a tunnel; see the [module docs](self).
#[derive(Debug)]
pub struct Tunnel {
    role: Role,
    config: Config,
    /// DATA payload limit for sending, known once the peer's HELLO arrived.
    send_max_payload: Option<usize>,
    streams: HashMap<StreamId, Stream>,
    /// Client: the id the next `open` uses.
    next_local_id: u32,
    /// Agent: the highest id the client opened.
    highest_peer_id: u32,
    control: VecDeque<Control>,
    ready: VecDeque<StreamId>,
    events: VecDeque<Event>,
    pending_pongs: usize,
    closed: bool,
    /// Why the tunnel closed, once it did (what its `Event::Closed` says).
    close_reason: Option<(ResetCode, String)>,
    /// A valid message arrived since the last `handle_timeout`.
    heard: bool,
    /// When the peer was last heard from, as `handle_timeout` saw it; `None` until the
    /// first `handle_timeout` starts the clock.
    last_heard: Option<Duration>,
    /// When the last keepalive PING was queued.
    last_keepalive: Option<Duration>,
    /// Keepalive PINGs queued so far (their payloads count up under the reserved bit).
    keepalives: u64,
}

impl Tunnel {
    /// A tunnel side, with its HELLO queued for [`Self::poll_transmit`].
    pub fn new(role: Role, config: Config) -> Self {
        let keepalive_interval = config.keepalive_interval.max(MIN_KEEPALIVE_INTERVAL);
        let config = Config {
            initial_window: config.initial_window.max(1),
            max_frame_payload: config.max_frame_payload.clamp(1, MAX_FRAME_PAYLOAD_LIMIT),
            max_streams: config.max_streams,
            send_buffer: config.send_buffer.max(1),
            keepalive_interval,
            idle_timeout: config
                .idle_timeout
                .max(keepalive_interval.saturating_mul(2)),
        };
        let mut control = VecDeque::new();
        control.push_back(Control::Frame(Frame::Hello {
            version: PROTOCOL_VERSION,
            flags: 0,
            max_frame_payload: config.max_frame_payload,
        }));
        Self {
            role,
            config,
            send_max_payload: None,
            streams: HashMap::new(),
            next_local_id: 1,
            highest_peer_id: 0,
            control,
            ready: VecDeque::new(),
            events: VecDeque::new(),
            pending_pongs: 0,
            closed: false,
            close_reason: None,
            heard: false,
            last_heard: None,
            last_keepalive: None,
            keepalives: 0,
        }
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The effective configuration (after clamping).
    pub fn config(&self) -> Config {
        self.config
    }

    /// Whether the peer's HELLO arrived.
    pub fn is_established(&self) -> bool {
        self.send_max_payload.is_some()
    }

    /// Whether the tunnel is closed ([`Event::Closed`] was queued).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Why the tunnel closed, once it did: the code and reason of its [`Event::Closed`].
    /// Shells read it while handling the [`StreamEnd::TunnelClosed`] events that come
    /// before that event, to tell each stream why.
    pub fn close_reason(&self) -> Option<(ResetCode, &str)> {
        self.close_reason
            .as_ref()
            .map(|(code, reason)| (*code, reason.as_str()))
    }

    /// Streams open now (including ones being opened).
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Byte counts of a stream that is still open.
    pub fn stream_stats(&self, id: StreamId) -> Option<StreamStats> {
        self.streams.get(&id).map(|s| s.stats)
    }

    /// Bytes received on the stream and not read yet.
    pub fn readable_len(&self, id: StreamId) -> usize {
        self.streams
            .get(&id)
            .map_or(0, |s| s.recv_buf.iter().map(Bytes::len).sum())
    }

    /// Bytes [`Self::write`] would take on the stream now.
    pub fn writable_len(&self, id: StreamId) -> usize {
        let cap = self.local_send_cap();
        self.streams
            .get(&id)
            .map_or(0, |s| usize::try_from(s.room(cap)).unwrap_or(usize::MAX))
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Handles one message from the channel.
    ///
    /// `Err` means the peer broke the connection's rules: the tunnel is now closed and a
    /// RESET on stream 0 saying why is queued; send it, then close the channel. Messages
    /// after the tunnel closed are ignored. A valid message is a sign of life, counted at
    /// the next [`Self::handle_timeout`].
    pub fn handle_message(&mut self, msg: Bytes) -> Result<(), TunnelError> {
        if self.closed {
            return Ok(());
        }
        match self.handle_frame(&msg) {
            Ok(()) => {
                self.heard = true;
                Ok(())
            }
            Err(err) => {
                let code = err.reset_code();
                self.shut(code, err.to_string(), true, false);
                Err(err)
            }
        }
    }

    fn handle_frame(&mut self, msg: &Bytes) -> Result<(), TunnelError> {
        let frame = Frame::decode_bytes(msg)?;
        if self.send_max_payload.is_none() {
            match frame {
                Frame::Hello { .. } => {}
                // A peer may refuse us outright (say, on a version it cannot serve).
                Frame::Reset { stream, .. } if stream.is_connection() => {}
                other => {
                    return Err(TunnelError::BeforeHello {
                        frame: frame_name(other.frame_type()).unwrap_or("?"),
                    });
                }
            }
        }
        match frame {
            Frame::Hello {
                version,
                max_frame_payload,
                ..
            } => {
                if self.send_max_payload.is_some() {
                    return Err(TunnelError::Violation("second HELLO".into()));
                }
                if version != PROTOCOL_VERSION {
                    return Err(TunnelError::VersionMismatch {
                        ours: PROTOCOL_VERSION,
                        theirs: version,
                    });
                }
                if max_frame_payload == 0 {
                    return Err(TunnelError::Violation(
                        "HELLO announces a max DATA payload of 0".into(),
                    ));
                }
                let max = max_frame_payload.min(self.config.max_frame_payload);
                self.send_max_payload = Some(max as usize);
                Ok(())
            }
            Frame::Ping { payload } => {
                if self.pending_pongs >= MAX_PENDING_PONGS {
                    return Err(TunnelError::Flooded("PINGs"));
                }
                self.pending_pongs += 1;
                self.control
                    .push_back(Control::Frame(Frame::Pong { payload }));
                Ok(())
            }
            Frame::Pong { payload } => {
                // A keepalive's answer only had to arrive; it is nobody's business above.
                if payload & KEEPALIVE_PAYLOAD_BIT == 0 {
                    self.events.push_back(Event::Pong { payload });
                }
                Ok(())
            }
            Frame::Reset {
                stream,
                code,
                reason,
            } if stream.is_connection() => {
                self.shut(code, reason, false, true);
                Ok(())
            }
            Frame::Open {
                stream,
                window,
                port,
            } => self.on_open(stream, window, port),
            Frame::OpenOk { stream, window } => {
                if self.role != Role::Client {
                    return Err(TunnelError::Violation("OPEN_OK sent to the agent".into()));
                }
                let Some(s) = self.stream_for(stream, "OPEN_OK")? else {
                    return Ok(());
                };
                if s.state != State::Opening {
                    return self.violation(stream, ResetCode::PROTOCOL_ERROR, "second OPEN_OK");
                }
                s.state = State::Open;
                s.send_credit = u64::from(window);
                self.events.push_back(Event::StreamAccepted { id: stream });
                self.after_send_credit(stream);
                Ok(())
            }
            Frame::Data { stream, data } => self.on_data(stream, data),
            Frame::Window { stream, increment } => {
                let Some(s) = self.stream_for(stream, "WINDOW")? else {
                    return Ok(());
                };
                if s.state != State::Open {
                    return self.violation(
                        stream,
                        ResetCode::PROTOCOL_ERROR,
                        "WINDOW before the stream was accepted",
                    );
                }
                s.send_credit += u64::from(increment);
                if s.send_credit > u64::from(u32::MAX) {
                    return self.violation(
                        stream,
                        ResetCode::FLOW_CONTROL,
                        "WINDOW grants more than 4 GiB of credit",
                    );
                }
                self.after_send_credit(stream);
                Ok(())
            }
            Frame::Fin { stream } => {
                let Some(s) = self.stream_for(stream, "FIN")? else {
                    return Ok(());
                };
                if s.state != State::Open {
                    return self.violation(
                        stream,
                        ResetCode::PROTOCOL_ERROR,
                        "FIN before the stream was accepted",
                    );
                }
                if s.fin_received {
                    return self.violation(stream, ResetCode::PROTOCOL_ERROR, "second FIN");
                }
                s.fin_received = true;
                if s.recv_buf.is_empty() {
                    self.events.push_back(Event::Finished { id: stream });
                    self.close_if_done(stream);
                }
                Ok(())
            }
            Frame::Reset {
                stream,
                code,
                reason,
            } => {
                let Some(s) = self.stream_for(stream, "RESET")? else {
                    return Ok(());
                };
                let end = if s.state == State::Opening {
                    StreamEnd::Refused { code, reason }
                } else {
                    StreamEnd::ResetByPeer { code, reason }
                };
                self.remove(stream, end);
                Ok(())
            }
        }
    }

    /// The stream a frame is for. `Ok(None)` for a stream that existed and is gone (its
    /// frame crossed our RESET or FIN, and is dropped); an error for one that never did.
    fn stream_for(
        &mut self,
        id: StreamId,
        frame: &'static str,
    ) -> Result<Option<&mut Stream>, TunnelError> {
        let raw = id.get();
        let existed = self.existed(id);
        match self.streams.get_mut(&id) {
            Some(s) => Ok(Some(s)),
            None if existed => Ok(None),
            None => Err(TunnelError::UnknownStream { frame, stream: raw }),
        }
    }

    /// Whether the stream was opened at some point (it may be gone). Ids are odd and only
    /// grow, so "not above the newest" means "existed once".
    fn existed(&self, id: StreamId) -> bool {
        let raw = id.get();
        raw % 2 == 1
            && match self.role {
                Role::Client => raw < self.next_local_id,
                Role::Agent => raw <= self.highest_peer_id,
            }
    }

    fn on_open(&mut self, id: StreamId, window: u32, port: u16) -> Result<(), TunnelError> {
        if self.role != Role::Agent {
            return Err(TunnelError::Violation("OPEN sent to the client".into()));
        }
        let raw = id.get();
        if raw.is_multiple_of(2) || raw <= self.highest_peer_id {
            return Err(TunnelError::Violation(format!(
                "OPEN for stream {raw}, not an odd id above {}",
                self.highest_peer_id
            )));
        }
        self.highest_peer_id = raw;
        if self.streams.len() >= self.config.max_streams {
            let reason = format!("too many streams (limit {})", self.config.max_streams);
            return self.queue_reset_from_peer_action(id, ResetCode::REFUSED, reason);
        }
        self.streams.insert(
            id,
            Stream::new(State::Pending, port, window, self.config.initial_window),
        );
        self.events.push_back(Event::StreamOpened { id, port });
        Ok(())
    }

    fn on_data(&mut self, id: StreamId, data: Bytes) -> Result<(), TunnelError> {
        let max_payload = self.config.max_frame_payload as usize;
        let Some(s) = self.stream_for(id, "DATA")? else {
            return Ok(());
        };
        let len = data.len();
        if s.state != State::Open {
            return self.violation(
                id,
                ResetCode::PROTOCOL_ERROR,
                "DATA before the stream was accepted",
            );
        }
        if s.fin_received {
            return self.violation(id, ResetCode::PROTOCOL_ERROR, "DATA after FIN");
        }
        if len > max_payload {
            let reason = format!("DATA of {len} bytes exceeds the max payload of {max_payload}");
            return self.violation(id, ResetCode::PROTOCOL_ERROR, reason);
        }
        if len as u64 > s.recv_credit {
            let reason = format!(
                "DATA of {len} bytes with {} bytes of credit left",
                s.recv_credit
            );
            return self.violation(id, ResetCode::FLOW_CONTROL, reason);
        }
        s.recv_credit -= len as u64;
        s.stats.bytes_received += len as u64;
        if len > 0 {
            let was_empty = s.recv_buf.is_empty();
            s.recv_buf.push_back(data);
            if was_empty {
                self.events.push_back(Event::Readable { id });
            }
        }
        Ok(())
    }

    /// The peer broke the protocol on one stream: reset it, and tell the application.
    fn violation(
        &mut self,
        id: StreamId,
        code: ResetCode,
        reason: impl Into<String>,
    ) -> Result<(), TunnelError> {
        let reason = reason.into();
        self.remove(
            id,
            StreamEnd::ResetLocally {
                code,
                reason: reason.clone(),
            },
        );
        self.queue_reset_from_peer_action(id, code, reason)
    }

    /// Queues a RESET the peer's frames caused; a peer that makes these pile up faster
    /// than the channel drains them is cut off rather than allowed to grow the queue.
    fn queue_reset_from_peer_action(
        &mut self,
        id: StreamId,
        code: ResetCode,
        reason: String,
    ) -> Result<(), TunnelError> {
        if self.control.len() > 4 * self.config.max_streams + 64 {
            return Err(TunnelError::Flooded("frames that need a RESET"));
        }
        self.control.push_back(Control::Frame(Frame::Reset {
            stream: id,
            code,
            reason,
        }));
        Ok(())
    }

    /// After the peer's credit grew: schedule queued data and wake a blocked writer.
    fn after_send_credit(&mut self, id: StreamId) {
        self.schedule(id);
        let cap = self.local_send_cap();
        if let Some(s) = self.streams.get_mut(&id)
            && s.want_writable
            && s.room(cap) > 0
        {
            s.want_writable = false;
            self.events.push_back(Event::Writable { id });
        }
    }

    fn schedule(&mut self, id: StreamId) {
        if let Some(s) = self.streams.get_mut(&id)
            && !s.scheduled
            && s.sendable()
        {
            s.scheduled = true;
            self.ready.push_back(id);
        }
    }

    /// Queued-but-unsent bytes a stream may hold, whatever credit the peer grants: a peer
    /// announcing a huge window must not make this side buffer that much.
    fn local_send_cap(&self) -> u64 {
        u64::from(self.config.send_buffer)
    }

    /// Removes a stream and reports how it ended.
    fn remove(&mut self, id: StreamId, end: StreamEnd) {
        if let Some(s) = self.streams.remove(&id) {
            self.events.push_back(Event::StreamClosed {
                id,
                end,
                stats: s.stats,
            });
        }
    }

    fn close_if_done(&mut self, id: StreamId) {
        if let Some(s) = self.streams.get(&id)
            && s.fin_sent
            && s.fin_received
            && s.recv_buf.is_empty()
        {
            self.remove(id, StreamEnd::Finished);
        }
    }

    /// Closes the tunnel: every stream ends, then [`Event::Closed`].
    fn shut(&mut self, code: ResetCode, reason: String, send: bool, by_peer: bool) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.close_reason = Some((code, reason.clone()));
        self.control.clear();
        self.ready.clear();
        self.pending_pongs = 0;
        if send {
            self.control.push_back(Control::Frame(Frame::Reset {
                stream: StreamId::CONNECTION,
                code,
                reason: reason.clone(),
            }));
        }
        let mut ids: Vec<StreamId> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.remove(id, StreamEnd::TunnelClosed);
        }
        self.events.push_back(Event::Closed {
            code,
            reason,
            by_peer,
        });
    }

    /// The next message to send on the channel, if any.
    ///
    /// Call it while the channel accepts messages; what is not taken stays queued (within
    /// the per-stream bounds) and is what makes [`Self::write`] return short.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        while let Some(control) = self.control.pop_front() {
            match control {
                Control::Frame(frame) => {
                    if matches!(frame, Frame::Pong { .. }) {
                        self.pending_pongs = self.pending_pongs.saturating_sub(1);
                    }
                    return Some(frame.to_bytes());
                }
                Control::Window(id) => {
                    let Some(s) = self.streams.get_mut(&id) else {
                        continue;
                    };
                    s.window_queued = false;
                    // Once the peer finished, it sends nothing more: credit is moot.
                    if s.fin_received || s.recv_unacked == 0 {
                        continue;
                    }
                    // Unacked is at most one window, which is a u32.
                    let increment = u32::try_from(s.recv_unacked).unwrap_or(u32::MAX);
                    s.recv_credit += u64::from(increment);
                    s.recv_unacked -= u64::from(increment);
                    return Some(
                        Frame::Window {
                            stream: id,
                            increment,
                        }
                        .to_bytes(),
                    );
                }
            }
        }
        let max_payload = self.send_max_payload?;
        let cap = self.local_send_cap();
        while let Some(id) = self.ready.pop_front() {
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            s.scheduled = false;
            if !s.sendable() {
                continue;
            }
            if s.send_buf.is_empty() {
                s.fin_sent = true;
                let msg = Frame::Fin { stream: id }.to_bytes();
                self.close_if_done(id);
                return Some(msg);
            }
            let n = (s.send_buf.len() as u64).min(s.send_credit) as usize;
            let n = n.min(max_payload);
            let mut msg = BytesMut::with_capacity(HEADER_LEN + n);
            msg.put_u8(FRAME_DATA);
            msg.put_u32(id.get());
            msg.put_slice(&s.send_buf[..n]);
            s.send_buf.advance(n);
            if s.send_buf.is_empty() {
                // An emptied buffer still holds the allocation of the stream's largest burst
                // (up to `Config::send_buffer` and more): a hundred idle streams that each sent
                // one would keep megabytes for nothing. Dropping it costs one allocation for
                // the next burst.
                s.send_buf = BytesMut::new();
            }
            s.send_credit -= n as u64;
            s.stats.bytes_sent += n as u64;
            // Round-robin: back of the line, behind every other stream with data.
            if s.sendable() {
                s.scheduled = true;
                self.ready.push_back(id);
            }
            if s.want_writable && s.room(cap) > 0 {
                s.want_writable = false;
                self.events.push_back(Event::Writable { id });
            }
            return Some(msg.freeze());
        }
        None
    }

    /// (Client) opens a stream to the agent's `port`. [`Event::StreamAccepted`] or
    /// [`Event::StreamClosed`] with [`StreamEnd::Refused`] follows.
    pub fn open(&mut self, port: u16) -> Result<StreamId, StreamError> {
        if self.role != Role::Client {
            return Err(StreamError::WrongRole(self.role));
        }
        if self.closed {
            return Err(StreamError::Closed);
        }
        if self.streams.len() >= self.config.max_streams {
            return Err(StreamError::TooManyStreams(self.config.max_streams));
        }
        let raw = self.next_local_id;
        let next = raw.checked_add(2).ok_or(StreamError::IdsExhausted)?;
        self.next_local_id = next;
        let id = StreamId::new(raw);
        self.streams.insert(
            id,
            Stream::new(State::Opening, port, 0, self.config.initial_window),
        );
        self.control.push_back(Control::Frame(Frame::Open {
            stream: id,
            window: self.config.initial_window,
            port,
        }));
        Ok(id)
    }

    /// (Agent) accepts a stream announced by [`Event::StreamOpened`]; it is writable now.
    pub fn accept(&mut self, id: StreamId) -> Result<(), StreamError> {
        self.pending(id)?.state = State::Open;
        self.control.push_back(Control::Frame(Frame::OpenOk {
            stream: id,
            window: self.config.initial_window,
        }));
        self.after_send_credit(id);
        Ok(())
    }

    /// (Agent) refuses a stream announced by [`Event::StreamOpened`].
    pub fn refuse(
        &mut self,
        id: StreamId,
        code: ResetCode,
        reason: &str,
    ) -> Result<(), StreamError> {
        self.pending(id)?;
        self.reset(id, code, reason)
    }

    fn pending(&mut self, id: StreamId) -> Result<&mut Stream, StreamError> {
        if self.role != Role::Agent {
            return Err(StreamError::WrongRole(self.role));
        }
        let s = self
            .streams
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream(id))?;
        if s.state != State::Pending {
            return Err(StreamError::NotPending(id));
        }
        Ok(s)
    }

    /// Queues bytes on a stream and returns how many were taken: up to the peer's credit
    /// (and [`Config::send_buffer`]) minus what is already queued. Fewer than given (0 before
    /// the stream is accepted) means [`Event::Writable`] will say when to try again.
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, StreamError> {
        let cap = self.local_send_cap();
        let s = self
            .streams
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream(id))?;
        if s.fin_queued {
            return Err(StreamError::Finished(id));
        }
        let room = usize::try_from(s.room(cap)).unwrap_or(usize::MAX);
        let n = room.min(data.len());
        if n < data.len() {
            s.want_writable = true;
        }
        if n > 0 {
            s.send_buf.extend_from_slice(&data[..n]);
            self.schedule(id);
        }
        Ok(n)
    }

    /// Takes the next chunk of received bytes (one DATA frame's worth), or `Ok(None)` if
    /// none is buffered (or the stream is gone: see its [`Event::StreamClosed`]). Grants the peer more credit once about half a window was read.
    pub fn read(&mut self, id: StreamId) -> Result<Option<Bytes>, StreamError> {
        let threshold = u64::from(self.config.initial_window / 2).max(1);
        let existed = self.existed(id);
        let Some(s) = self.streams.get_mut(&id) else {
            // Reading until `None` must not fail because the last read closed the stream;
            // how it ended is in its `StreamClosed` event.
            return if existed {
                Ok(None)
            } else {
                Err(StreamError::UnknownStream(id))
            };
        };
        let Some(chunk) = s.recv_buf.pop_front() else {
            return Ok(None);
        };
        s.recv_unacked += chunk.len() as u64;
        // Granting at half a window keeps the sender busy while the grant travels.
        if !s.fin_received && !s.window_queued && s.recv_unacked >= threshold {
            s.window_queued = true;
            self.control.push_back(Control::Window(id));
        }
        if s.recv_buf.is_empty() && s.fin_received {
            self.events.push_back(Event::Finished { id });
            self.close_if_done(id);
        }
        Ok(Some(chunk))
    }

    /// Half-closes the stream: FIN follows the bytes already written. Idempotent.
    pub fn finish(&mut self, id: StreamId) -> Result<(), StreamError> {
        let s = self
            .streams
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream(id))?;
        if !s.fin_queued {
            s.fin_queued = true;
            s.want_writable = false;
            self.schedule(id);
        }
        Ok(())
    }

    /// Ends the stream in both directions at once; unsent and unread bytes are dropped.
    pub fn reset(
        &mut self,
        id: StreamId,
        code: ResetCode,
        reason: &str,
    ) -> Result<(), StreamError> {
        if !self.streams.contains_key(&id) {
            return Err(StreamError::UnknownStream(id));
        }
        self.remove(
            id,
            StreamEnd::ResetLocally {
                code,
                reason: reason.to_owned(),
            },
        );
        self.control.push_back(Control::Frame(Frame::Reset {
            stream: id,
            code,
            reason: reason.to_owned(),
        }));
        Ok(())
    }

    /// Sends a PING; [`Event::Pong`] with the same payload follows. The shell passes its
    /// clock's time, so the round trip is the time of the pong minus the payload. Does
    /// nothing once closed.
    ///
    /// Payloads with [`KEEPALIVE_PAYLOAD_BIT`] set are reserved for the tunnel's own
    /// keepalives: their PONGs are swallowed, so such a ping gets no [`Event::Pong`].
    pub fn ping(&mut self, payload: u64) {
        if !self.closed {
            self.control
                .push_back(Control::Frame(Frame::Ping { payload }));
        }
    }

    /// Tells the tunnel the time: turns the messages handled since the last call into a
    /// sign of life, queues a keepalive PING once the peer was silent for
    /// [`Config::keepalive_interval`] (at most one per interval), and closes the tunnel
    /// once it was silent for [`Config::idle_timeout`].
    ///
    /// `now` is the shell's monotonic time since any fixed origin. Call it after each batch
    /// of [`Self::handle_message`] calls and whenever [`Self::poll_timeout`]'s deadline has
    /// passed; extra calls do nothing. The first call starts the clock. A close by timeout
    /// is like [`Self::close`]: every stream ends with [`StreamEnd::TunnelClosed`],
    /// [`Event::Closed`] follows with [`ResetCode::TIMEOUT`], `by_peer: false` and a reason
    /// such as "no word from the peer in 30 s", and a RESET on stream 0 is queued. Does
    /// nothing once closed.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.closed {
            return;
        }
        // A clock that steps back (it should not) counts as no time passing.
        let last_heard = match self.last_heard {
            Some(t) if !self.heard => t,
            Some(t) => t.max(now),
            None => now,
        };
        self.heard = false;
        self.last_heard = Some(last_heard);
        let silent = now.saturating_sub(last_heard);
        if silent >= self.config.idle_timeout {
            let reason = format!(
                "no word from the peer in {}",
                human(self.config.idle_timeout)
            );
            self.shut(ResetCode::TIMEOUT, reason, true, false);
            return;
        }
        if now >= self.keepalive_deadline(last_heard) {
            self.last_keepalive = Some(now);
            self.keepalives = self.keepalives.wrapping_add(1);
            let payload = KEEPALIVE_PAYLOAD_BIT | (self.keepalives & !KEEPALIVE_PAYLOAD_BIT);
            self.control
                .push_back(Control::Frame(Frame::Ping { payload }));
        }
    }

    /// When [`Self::handle_timeout`] next has something to do: the next keepalive or the
    /// idle timeout, whichever is first. [`Duration::ZERO`] before the first
    /// `handle_timeout` (the clock has not started: call it now); `None` once closed.
    ///
    /// Read it again after every call that changes the tunnel (it only moves later as the
    /// peer is heard, but a shell that arms its timer for the earliest deadline it saw can
    /// ignore that: waking early is harmless).
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.closed {
            return None;
        }
        let Some(last_heard) = self.last_heard else {
            return Some(Duration::ZERO);
        };
        let idle = last_heard.saturating_add(self.config.idle_timeout);
        Some(idle.min(self.keepalive_deadline(last_heard)))
    }

    /// When a keepalive is due: an interval after the peer was last heard and after the
    /// last keepalive, so a silent peer is asked once per interval, not at every call.
    fn keepalive_deadline(&self, last_heard: Duration) -> Duration {
        let quiet_since = self
            .last_keepalive
            .map_or(last_heard, |sent| sent.max(last_heard));
        quiet_since.saturating_add(self.config.keepalive_interval)
    }

    /// Closes the tunnel at once: every stream ends ([`StreamEnd::TunnelClosed`]),
    /// [`Event::Closed`] follows, and a RESET on stream 0 with the reason is queued as
    /// the last message. For a graceful end, finish the streams and wait for them first.
    pub fn close(&mut self, code: ResetCode, reason: &str) {
        self.shut(code, reason.to_owned(), true, false);
    }
}

/// A duration for people: whole seconds as "30 s", anything else in milliseconds.
fn human(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moves every message both ways until both sides are quiet.
    fn pump(a: &mut Tunnel, b: &mut Tunnel) {
        loop {
            let mut moved = false;
            while let Some(msg) = a.poll_transmit() {
                b.handle_message(msg).expect("valid frames");
                moved = true;
            }
            while let Some(msg) = b.poll_transmit() {
                a.handle_message(msg).expect("valid frames");
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    #[test]
    fn an_emptied_send_buffer_does_not_keep_its_burst_allocation() {
        let mut client = Tunnel::new(Role::Client, Config::default());
        let mut agent = Tunnel::new(Role::Agent, Config::default());
        pump(&mut client, &mut agent);
        let id = client.open(22).expect("open");
        pump(&mut client, &mut agent);
        while let Some(event) = agent.poll_event() {
            if let Event::StreamOpened { id, .. } = event {
                agent.accept(id).expect("accept");
            }
        }
        pump(&mut client, &mut agent);
        let burst = vec![7u8; 60 * 1024];
        assert_eq!(client.write(id, &burst), Ok(burst.len()));
        assert!(client.streams[&id].send_buf.capacity() >= burst.len());
        pump(&mut client, &mut agent);
        assert_eq!(
            client.stream_stats(id).map(|s| s.bytes_sent),
            Some(60 * 1024)
        );
        assert_eq!(client.streams[&id].send_buf.capacity(), 0);
        // Nor after a small write.
        assert_eq!(client.write(id, b"ls\n"), Ok(3));
        pump(&mut client, &mut agent);
        assert_eq!(client.streams[&id].send_buf.capacity(), 0);
    }
}
