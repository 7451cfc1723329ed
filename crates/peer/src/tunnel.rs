//! The tokio shell around the sans-IO [`burrow_proto::tunnel::Tunnel`].
//!
//! One driver task owns the `Tunnel` and the [`MessageChannel`]; nothing else touches them,
//! so there is no lock on the data path. Everything else talks to the driver through a
//! command queue, and the driver hands received bytes to each stream through a small
//! bounded queue of its own:
//!
//! ```text
//!            commands (open, write, finish, reset, ping, dial results)
//!  sockets / ──────────────────────────────────────────────▶ driver ◀──▶ data channel
//!  TunnelStream ◀────────── per-stream bounded queue ────── (Tunnel)
//! ```
//!
//! - [`serve`] runs the agent's side: it dials the ports the client opens (if allowed) and
//!   copies bytes between each TCP connection and its stream, reporting every stream's
//!   outcome as a [`StreamRecord`].
//! - [`client`] runs the client's side and returns a [`ClientTunnel`] that opens streams
//!   as [`TunnelStream`]s (tokio `AsyncRead + AsyncWrite`).
//!
//! Backpressure runs end to end: a stream's writer may have at most [`OUTBOUND_LIMIT`] bytes
//! on their way to the driver, the `Tunnel` takes only what the peer's credit allows, and
//! the driver reads a stream's received bytes out of the `Tunnel` (which is what grants the
//! peer more credit) only when that stream's queue has room. The driver itself never stops
//! draining the channel, so one stalled stream cannot stall the others.
//!
//! When the channel dies, every stream ends with an error (`ConnectionAborted`, "tunnel
//! closed") rather than hanging. A peer that stops answering while the channel stays up
//! (ICE still connected, nothing getting through) is noticed by the `Tunnel`'s keepalive:
//! after [`burrow_proto::tunnel::DEFAULT_IDLE_TIMEOUT`] of silence it closes, the driver
//! ends with [`TunnelError::Timeout`], and streams and pings fail with its reason.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, SystemTime};

use burrow_proto::frame::{ResetCode, StreamId};
use burrow_proto::speedtest;
use burrow_proto::tunnel::{self as proto, Event, Role, StreamEnd, StreamStats, Tunnel};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::OptionFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use crate::channel::{ChannelClosed, MessageChannel, MessageSink, MessageSource};

/// Most bytes one stream's writer may have handed to the driver that the `Tunnel` has not
/// taken yet.
///
/// Several chunks, so that the writer reads ahead of the driver: with a single chunk every
/// frame waited for a wake-up of the writer's task, which cost one stream ~15 % of its
/// throughput on a loaded two-core machine.
pub const OUTBOUND_LIMIT: usize = 256 * 1024;

/// Bytes every stream may stage whatever the others hold, so that none waits on the rest
/// for a share of [`OUTBOUND_BUDGET`].
pub const OUTBOUND_FLOOR: usize = 16 * 1024;

/// Bytes the streams of one tunnel may stage together beyond their floors.
///
/// Behind a busy channel, per-stream limits alone let a hundred streams stage a hundred
/// times [`OUTBOUND_LIMIT`] of data that their sockets' kernel buffers would keep for free;
/// one stream alone still gets its whole limit. Together with the `Tunnel`'s send buffer
/// ([`burrow_proto::tunnel::DEFAULT_SEND_BUFFER`] a stream) this bounds a tunnel's outbound
/// memory.
pub const OUTBOUND_BUDGET: usize = 1024 * 1024;

/// Largest chunk read from a TCP socket or copied from a `poll_write` at once.
const CHUNK: usize = 64 * 1024;

/// Received chunks (each at most one DATA payload) queued to a stream's consumer.
const INBOUND_QUEUE: usize = 16;

/// How long the agent waits for a workspace port to accept a connection.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a closing driver keeps trying to send its last frames.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of one side of a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelConfig {
    /// Bytes the peer may send on a stream before this side grants more (the bound on each
    /// stream's receive buffer).
    pub initial_window: u32,
    /// Largest DATA payload this side accepts (see
    /// [`burrow_proto::frame::DEFAULT_MAX_FRAME_PAYLOAD`]).
    pub max_frame_payload: u32,
}

/// DATA payload native peers offer: 64 KiB messages. With 16 KiB messages webrtc-rs spends
/// most of its time in per-packet system calls and one channel carries less than half as much
/// (measured with `examples/dc_throughput.rs`). HELLO settles on the smaller of both sides'
/// values, so a peer that wants 16 KiB still gets it.
pub const NATIVE_MAX_FRAME_PAYLOAD: u32 = 64 * 1024 - burrow_proto::frame::HEADER_LEN as u32;

impl Default for TunnelConfig {
    fn default() -> Self {
        Self {
            initial_window: proto::Config::default().initial_window,
            max_frame_payload: NATIVE_MAX_FRAME_PAYLOAD,
        }
    }
}

impl TunnelConfig {
    fn to_proto(self) -> proto::Config {
        proto::Config {
            initial_window: self.initial_window,
            max_frame_payload: self.max_frame_payload,
            ..proto::Config::default()
        }
    }
}

/// Why a tunnel ended other than by its channel closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    /// The peer broke the protocol (or speaks another version); the tunnel told it why.
    #[error("tunnel protocol error: {0}")]
    Protocol(#[from] proto::TunnelError),
    /// The peer closed the tunnel because of an error of its own.
    #[error("peer closed the tunnel ({code}): {reason}")]
    ClosedByPeer {
        /// The peer's reason code.
        code: ResetCode,
        /// The peer's reason.
        reason: String,
    },
    /// Nothing came from the peer for the idle timeout, keepalive PINGs unanswered: it or
    /// every path to it is gone. The tunnel closed; the reason says how long it waited.
    #[error("tunnel timed out: {reason}")]
    Timeout {
        /// The tunnel's reason, e.g. "no word from the peer in 30 s".
        reason: String,
    },
    /// The tunnel is closed (the driver is gone).
    #[error("tunnel closed")]
    Closed,
}

/// Why [`ClientTunnel::open`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The agent refused the stream (port not allowed, dial failed, too many streams, ...).
    #[error("stream refused: {reason}")]
    Refused {
        /// The [`ResetCode`] number.
        code: u16,
        /// The agent's reason, e.g. "port 23 is not allowed".
        reason: String,
    },
    /// The tunnel closed before the stream was accepted.
    #[error("tunnel closed")]
    TunnelClosed,
}

/// The agent's account of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    /// The stream's id within the tunnel.
    pub stream_id: u32,
    /// The workspace port the client asked for.
    pub port: u16,
    /// When the client's OPEN arrived.
    pub started_at: SystemTime,
    /// When the stream ended.
    pub ended_at: SystemTime,
    /// Bytes from the client to the workspace port.
    pub bytes_to_workspace: u64,
    /// Bytes from the workspace port to the client.
    pub bytes_to_client: u64,
    /// `"ok"`, `"refused: port 23 is not allowed"`, `"dial failed: connection refused"`,
    /// `"reset by client"`, `"tunnel closed: the page was closed"`, ...
    pub outcome: String,
}

/// Byte counts of a client tunnel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelStats {
    /// Stream bytes handed to the tunnel for sending.
    pub bytes_sent: u64,
    /// Stream bytes received.
    pub bytes_received: u64,
    /// Streams open now.
    pub open_streams: usize,
}

/// Agent side: serves the streams the client opens until the channel closes.
///
/// Dials `dial_host:port` only for ports `allow(port)` accepts and refuses others with the
/// reason "port N is not allowed". `allow` is asked about the speed test's port
/// ([`speedtest::SPEEDTEST_PORT`]) too, which the agent serves itself when allowed: a
/// session restricted to one app's port gets no speed test. Every stream, served or
/// refused, is reported on `reports` once it ended. Returns `Ok` when the channel closes or the client closes the tunnel
/// normally.
pub async fn serve(
    channel: MessageChannel,
    config: TunnelConfig,
    dial_host: IpAddr,
    allow: Arc<dyn Fn(u16) -> bool + Send + Sync>,
    reports: mpsc::UnboundedSender<StreamRecord>,
) -> Result<(), TunnelError> {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let driver = Driver::new(
        Tunnel::new(Role::Agent, config.to_proto()),
        cmd_rx,
        &cmd_tx,
        Arc::new(Counters::default()),
        Some(AgentSide {
            dial_host,
            allow,
            reports,
            _keep_open: cmd_tx.clone(),
        }),
    );
    driver.run(channel).await
}

/// Client side: returns a cloneable handle and the driver future, which the caller spawns.
///
/// The driver ends when the channel closes, when the tunnel fails, or once every
/// [`ClientTunnel`] and [`TunnelStream`] is dropped (then it closes the tunnel politely).
pub fn client(
    channel: MessageChannel,
    config: TunnelConfig,
) -> (
    ClientTunnel,
    impl Future<Output = Result<(), TunnelError>> + Send + 'static,
) {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let counters = Arc::new(Counters::default());
    let driver = Driver::new(
        Tunnel::new(Role::Client, config.to_proto()),
        cmd_rx,
        &cmd_tx,
        Arc::clone(&counters),
        None,
    );
    let handle = ClientTunnel {
        cmd: cmd_tx,
        counters,
    };
    (handle, driver.run(channel))
}

/// A handle to a client tunnel; clones share the tunnel.
#[derive(Debug, Clone)]
pub struct ClientTunnel {
    cmd: mpsc::UnboundedSender<Cmd>,
    counters: Arc<Counters>,
}

impl ClientTunnel {
    /// Opens a stream to the workspace's `port`; resolves once the agent connected to it.
    pub async fn open(&self, port: u16) -> Result<TunnelStream, OpenError> {
        let (reply, answer) = oneshot::channel();
        self.cmd
            .send(Cmd::Open { port, reply })
            .map_err(|_| OpenError::TunnelClosed)?;
        answer.await.unwrap_or(Err(OpenError::TunnelClosed))
    }

    /// Measures the round trip to the agent. Fails once the tunnel is closed, with why it
    /// closed if it was not closed on purpose (say, [`TunnelError::Timeout`]).
    pub async fn ping(&self) -> Result<Duration, TunnelError> {
        let (reply, answer) = oneshot::channel();
        if self.cmd.send(Cmd::Ping { reply }).is_err() {
            return Err(self.counters.end_error());
        }
        answer
            .await
            .unwrap_or_else(|_| Err(self.counters.end_error()))
    }

    /// Byte counts and open streams.
    pub fn stats(&self) -> TunnelStats {
        TunnelStats {
            bytes_sent: self.counters.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.counters.bytes_received.load(Ordering::Relaxed),
            open_streams: self.counters.open_streams.load(Ordering::Relaxed),
        }
    }

    /// Whether the tunnel is closed: no stream can be opened on it any more.
    pub fn is_closed(&self) -> bool {
        self.counters.closed.load(Ordering::Acquire) || self.cmd.is_closed()
    }
}

#[derive(Debug, Default)]
struct Counters {
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    open_streams: AtomicUsize,
    closed: AtomicBool,
    /// How the tunnel failed, once it did (the driver's error).
    failure: OnceLock<TunnelError>,
}

impl Counters {
    /// The error for a call on a tunnel that is gone.
    fn end_error(&self) -> TunnelError {
        self.failure.get().cloned().unwrap_or(TunnelError::Closed)
    }
}

/// What the driver is asked to do.
enum Cmd {
    Open {
        port: u16,
        reply: oneshot::Sender<Result<TunnelStream, OpenError>>,
    },
    Ping {
        reply: oneshot::Sender<Result<Duration, TunnelError>>,
    },
    Write {
        id: StreamId,
        data: Bytes,
    },
    Finish {
        id: StreamId,
    },
    Reset {
        id: StreamId,
        code: ResetCode,
        reason: String,
    },
    Dialed {
        id: StreamId,
        result: io::Result<TcpStream>,
    },
}

impl std::fmt::Debug for Cmd {
    // Only for the handle's Debug; payloads are not worth printing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cmd::Open { .. } => "Open",
            Cmd::Ping { .. } => "Ping",
            Cmd::Write { .. } => "Write",
            Cmd::Finish { .. } => "Finish",
            Cmd::Reset { .. } => "Reset",
            Cmd::Dialed { .. } => "Dialed",
        })
    }
}

/// The bytes staged by all of a tunnel's writers (see [`OUTBOUND_BUDGET`]).
#[derive(Debug, Default)]
struct OutboundBudget {
    staged: AtomicUsize,
    /// Writers waiting for `staged` to drop; all are woken by any release.
    parked: StdMutex<Vec<Waker>>,
}

impl OutboundBudget {
    fn room(&self) -> usize {
        OUTBOUND_BUDGET.saturating_sub(self.staged.load(Ordering::Acquire))
    }

    fn park(&self, waker: &Waker) {
        if let Ok(mut parked) = self.parked.lock()
            && !parked.iter().any(|w| w.will_wake(waker))
        {
            parked.push(waker.clone());
        }
    }

    fn release(&self, n: usize) {
        self.staged.fetch_sub(n, Ordering::AcqRel);
        let parked = match self.parked.lock() {
            Ok(mut parked) if !parked.is_empty() => std::mem::take(&mut *parked),
            _ => return,
        };
        for waker in parked {
            waker.wake();
        }
    }
}

/// State of one stream shared between the driver and whoever moves its bytes.
#[derive(Debug)]
struct StreamShared {
    /// The peer finished and all its bytes are in the inbound queue: its end is EOF.
    fin: AtomicBool,
    /// Why the stream ended abnormally; set once.
    error: OnceLock<(io::ErrorKind, String)>,
    /// Bytes handed to the driver and not yet taken by the tunnel.
    in_flight: AtomicUsize,
    /// The writer waiting for `in_flight` to drop, or for the stream to fail.
    writer: AtomicWaker,
    /// The tunnel's total of staged bytes, `in_flight` included.
    budget: Arc<OutboundBudget>,
}

impl StreamShared {
    fn new(budget: Arc<OutboundBudget>) -> Self {
        Self {
            fin: AtomicBool::new(false),
            error: OnceLock::new(),
            in_flight: AtomicUsize::new(0),
            writer: AtomicWaker::new(),
            budget,
        }
    }

    fn error(&self) -> Option<io::Error> {
        self.error
            .get()
            .map(|(kind, msg)| io::Error::new(*kind, msg.clone()))
    }

    fn fail(&self, kind: io::ErrorKind, msg: String) {
        let _ = self.error.set((kind, msg));
        self.writer.wake();
    }

    /// Ready with the bytes a writer may hand over now, or with the stream's error.
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // Check, register, check again: a release between the first check and the
        // registration would otherwise be missed.
        for registered in [false, true] {
            if let Some(e) = self.error() {
                return Poll::Ready(Err(e));
            }
            let used = self.in_flight.load(Ordering::Acquire);
            let own = OUTBOUND_LIMIT.saturating_sub(used);
            let room = OUTBOUND_FLOOR
                .saturating_sub(used)
                .max(own.min(self.budget.room()));
            if room > 0 {
                return Poll::Ready(Ok(room));
            }
            if !registered {
                self.writer.register(cx.waker());
                if own > 0 {
                    // Held back by the other streams: any of their releases may free room.
                    self.budget.park(cx.waker());
                }
            }
        }
        Poll::Pending
    }

    /// Counts `n` bytes handed to the driver.
    fn stage(&self, n: usize) {
        self.in_flight.fetch_add(n, Ordering::AcqRel);
        self.budget.staged.fetch_add(n, Ordering::AcqRel);
    }

    /// Counts `n` staged bytes as taken by the tunnel (or dropped with the stream).
    fn release(&self, n: usize) {
        if n > 0 {
            self.in_flight.fetch_sub(n, Ordering::AcqRel);
            self.budget.release(n);
            self.writer.wake();
        }
    }
}

/// A stream of a client tunnel: bytes to and from one TCP connection on the workspace.
///
/// `poll_shutdown` half-closes (the workspace service reads EOF and may still answer);
/// reading returns EOF once the service closed its side. Dropping the stream before reading
/// EOF resets it (`RESET` "cancelled"); dropping it after EOF without a shutdown half-closes
/// it, as closing a TCP socket with nothing unread would. Errors: `ConnectionReset` when
/// the stream was reset, `ConnectionAborted` when the tunnel closed.
#[derive(Debug)]
pub struct TunnelStream {
    id: StreamId,
    port: u16,
    inbound: mpsc::Receiver<Bytes>,
    current: Bytes,
    shared: Arc<StreamShared>,
    cmd: mpsc::UnboundedSender<Cmd>,
    shutdown_sent: bool,
    eof_seen: bool,
    /// Never handed to the application (the open failed): dropping it means nothing.
    detached: bool,
}

impl TunnelStream {
    /// The stream's id within the tunnel.
    pub fn id(&self) -> u32 {
        self.id.get()
    }

    /// The workspace port it is connected to.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn closed_error(&self) -> io::Error {
        self.shared.error().unwrap_or_else(tunnel_closed)
    }
}

fn tunnel_closed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "tunnel closed")
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.current.is_empty() {
                let n = this.current.len().min(buf.remaining());
                buf.put_slice(&this.current[..n]);
                this.current.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(this.inbound.poll_recv(cx)) {
                Some(chunk) => this.current = chunk,
                None if this.shared.fin.load(Ordering::Acquire) => {
                    this.eof_seen = true;
                    return Poll::Ready(Ok(()));
                }
                None => return Poll::Ready(Err(this.closed_error())),
            }
        }
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.shutdown_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let room = ready!(self.shared.poll_room(cx))?;
        let n = buf.len().min(room).min(CHUNK);
        self.shared.stage(n);
        let data = Bytes::copy_from_slice(&buf[..n]);
        if self.cmd.send(Cmd::Write { id: self.id, data }).is_err() {
            return Poll::Ready(Err(self.closed_error()));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are already queued to the driver, which sends them in order.
        match self.shared.error() {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.shutdown_sent {
            if self.cmd.send(Cmd::Finish { id: self.id }).is_err() {
                return Poll::Ready(Err(self.closed_error()));
            }
            self.shutdown_sent = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for TunnelStream {
    fn drop(&mut self) {
        if self.detached || self.shared.error.get().is_some() {
            return;
        }
        if self.eof_seen {
            // Like TCP's close() with nothing left unread: a FIN, not a reset. This is how
            // `ssh` through `burrow stdio` ends: the workspace closed, stdin never did.
            if !self.shutdown_sent {
                let _ = self.cmd.send(Cmd::Finish { id: self.id });
            }
        } else {
            let _ = self.cmd.send(Cmd::Reset {
                id: self.id,
                code: ResetCode::CANCELLED,
                reason: "stream dropped by the client".into(),
            });
        }
    }
}

/// What only the agent's driver has.
struct AgentSide {
    dial_host: IpAddr,
    allow: Arc<dyn Fn(u16) -> bool + Send + Sync>,
    reports: mpsc::UnboundedSender<StreamRecord>,
    /// The agent serves until the channel closes, not until its handles are gone.
    _keep_open: mpsc::UnboundedSender<Cmd>,
}

/// The driver's view of one stream.
struct DriverStream {
    shared: Arc<StreamShared>,
    /// To the stream's consumer; `None` before it exists and after FIN or failure.
    inbound: Option<mpsc::Sender<Bytes>>,
    /// A wait for room in `inbound` is pending in `Driver::room_waits`.
    waiting_room: bool,
    /// Bytes handed over by the writer that the tunnel did not take yet.
    outbound: VecDeque<Bytes>,
    finish_after_outbound: bool,
    /// Client: the `open` call waiting for the agent's answer, with the stream for it.
    pending_open: Option<(
        oneshot::Sender<Result<TunnelStream, OpenError>>,
        TunnelStream,
    )>,
    /// Agent: the socket tasks, stopped when the stream is reset.
    tasks: Vec<AbortHandle>,
    port: u16,
    started_at: SystemTime,
    /// Agent: the outcome decided when this side ended the stream.
    outcome: Option<String>,
}

impl DriverStream {
    fn new(port: u16, budget: &Arc<OutboundBudget>) -> Self {
        Self {
            shared: Arc::new(StreamShared::new(Arc::clone(budget))),
            inbound: None,
            waiting_room: false,
            outbound: VecDeque::new(),
            finish_after_outbound: false,
            pending_open: None,
            tasks: Vec::new(),
            port,
            started_at: SystemTime::now(),
            outcome: None,
        }
    }

    /// Drops what the writer staged, giving its share of the budget back.
    fn drop_outbound(&mut self) {
        let staged: usize = self.outbound.drain(..).map(|b| b.len()).sum();
        self.shared.release(staged);
    }
}

impl Drop for DriverStream {
    fn drop(&mut self) {
        self.drop_outbound();
    }
}

type RoomWait = Pin<
    Box<
        dyn Future<
                Output = (
                    StreamId,
                    Result<mpsc::OwnedPermit<Bytes>, mpsc::error::SendError<()>>,
                ),
            > + Send,
    >,
>;
type RecvFuture = Pin<Box<dyn Future<Output = (Box<dyn MessageSource>, Option<Bytes>)> + Send>>;
type SendFuture =
    Pin<Box<dyn Future<Output = (Box<dyn MessageSink>, Result<(), ChannelClosed>)> + Send>>;

/// The halves of the channel live inside these futures between uses, so that a message is
/// never lost to a cancelled `recv` or `send` (neither is promised to be cancel-safe).
fn recv_next(mut source: Box<dyn MessageSource>) -> RecvFuture {
    Box::pin(async move {
        let msg = source.recv().await;
        (source, msg)
    })
}

fn send_one(mut sink: Box<dyn MessageSink>, msg: Bytes) -> SendFuture {
    Box::pin(async move {
        let result = sink.send(msg).await;
        (sink, result)
    })
}

struct Driver {
    tunnel: Tunnel,
    streams: HashMap<StreamId, DriverStream>,
    cmd_rx: mpsc::UnboundedReceiver<Cmd>,
    /// For the senders handed to new streams and socket tasks; weak, so that a client's
    /// driver sees when every handle is gone.
    cmd_tx: mpsc::WeakUnboundedSender<Cmd>,
    room_waits: FuturesUnordered<RoomWait>,
    /// What this tunnel's writers have staged (see [`OUTBOUND_BUDGET`]).
    budget: Arc<OutboundBudget>,
    pings: VecDeque<(u64, oneshot::Sender<Result<Duration, TunnelError>>)>,
    last_ping: u64,
    epoch: Instant,
    counters: Arc<Counters>,
    agent: Option<AgentSide>,
    /// How the tunnel ended, once it did.
    ended: Option<Result<(), TunnelError>>,
}

impl Driver {
    fn new(
        tunnel: Tunnel,
        cmd_rx: mpsc::UnboundedReceiver<Cmd>,
        cmd_tx: &mpsc::UnboundedSender<Cmd>,
        counters: Arc<Counters>,
        agent: Option<AgentSide>,
    ) -> Self {
        Self {
            tunnel,
            streams: HashMap::new(),
            cmd_rx,
            cmd_tx: cmd_tx.downgrade(),
            room_waits: FuturesUnordered::new(),
            budget: Arc::default(),
            pings: VecDeque::new(),
            last_ping: 0,
            epoch: Instant::now(),
            counters,
            agent,
            ended: None,
        }
    }

    async fn run(mut self, channel: MessageChannel) -> Result<(), TunnelError> {
        let MessageChannel { sink, source } = channel;
        let mut recv = recv_next(source);
        let mut idle_sink = Some(sink);
        let mut sending: Option<SendFuture> = None;
        let mut channel_alive = true;
        let mut commands_open = true;
        let mut flush_deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
        // Set once sending failed: how long the source may take to hand over the rest.
        let mut drain_deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
        // One timer for the tunnel's keepalive and idle deadlines, moved rather than made
        // anew; `armed` is the deadline it is set to, `None` once it fired (or none is due).
        // It is moved only to an earlier deadline: the deadline moves later with every
        // message heard, and firing early costs a `handle_timeout` that does nothing.
        let mut timer = Box::pin(tokio::time::sleep_until(self.epoch));
        let mut armed: Option<Duration> = None;
        // The channel is open: the tunnel's clock starts now.
        self.tunnel.handle_timeout(self.epoch.elapsed());

        loop {
            if let Some(sink) = idle_sink.take() {
                match self.tunnel.poll_transmit() {
                    Some(msg) => {
                        trace!(len = msg.len(), "sending");
                        sending = Some(send_one(sink, msg));
                    }
                    None => idle_sink = Some(sink),
                }
            }
            if self.tunnel.is_closed() {
                // Closed: only the last frames (the closing RESET) are left to send.
                if sending.is_none() || !channel_alive {
                    break;
                }
                flush_deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(CLOSE_FLUSH_TIMEOUT)));
            }
            if let Some(deadline) = self.tunnel.poll_timeout()
                && armed.is_none_or(|at| deadline < at)
                // A deadline beyond what an Instant holds never comes: leave it unarmed.
                && let Some(when) = self.epoch.checked_add(deadline)
            {
                timer.as_mut().reset(when);
                armed = Some(deadline);
            }

            tokio::select! {
                (source, msg) = &mut recv, if channel_alive => match msg {
                    Some(msg) => {
                        recv = recv_next(source);
                        trace!(len = msg.len(), "received");
                        if let Err(e) = self.tunnel.handle_message(msg) {
                            warn!(error = %e, "peer broke the tunnel protocol");
                            self.ended.get_or_insert(Err(TunnelError::Protocol(e)));
                        }
                        // What arrived counts as life once the tunnel is told the time.
                        self.tunnel.handle_timeout(self.epoch.elapsed());
                    }
                    None => {
                        debug!("data channel closed");
                        channel_alive = false;
                        self.tunnel.close(ResetCode::NO_ERROR, "data channel closed");
                    }
                },
                Some((sink, result)) = OptionFuture::from(sending.as_mut()) => {
                    sending = None;
                    match result {
                        Ok(()) => idle_sink = Some(sink),
                        Err(ChannelClosed) => {
                            // Sending fails as soon as the channel is closing, but what the
                            // peer sent before it closed may still wait to be read: its
                            // CLOSE and reason, a stream's last bytes and FIN. Reading on
                            // until the source ends loses none of it.
                            debug!("data channel closed while sending; reading what is left");
                            drain_deadline.get_or_insert_with(|| {
                                Box::pin(tokio::time::sleep(CLOSE_FLUSH_TIMEOUT))
                            });
                        }
                    }
                },
                cmd = self.cmd_rx.recv(), if commands_open => match cmd {
                    Some(cmd) => self.on_cmd(cmd),
                    None => {
                        commands_open = false;
                        // Only a client gets here: every handle and stream is gone.
                        debug!("client tunnel dropped; closing");
                        self.tunnel.close(ResetCode::NO_ERROR, "client closed the tunnel");
                    }
                },
                Some((id, permit)) = self.room_waits.next(), if !self.room_waits.is_empty() => {
                    self.on_room(id, permit);
                },
                () = timer.as_mut(), if armed.is_some() => {
                    // Re-armed at the top of the loop, even to the same deadline: a fired
                    // Sleep stays ready.
                    armed = None;
                    self.tunnel.handle_timeout(self.epoch.elapsed());
                },
                Some(()) = OptionFuture::from(flush_deadline.as_mut()) => {
                    debug!("gave up sending the tunnel's last frames");
                    break;
                },
                Some(()) = OptionFuture::from(drain_deadline.as_mut()) => {
                    debug!("the closed channel's source did not end; closing");
                    drain_deadline = None;
                    channel_alive = false;
                    self.tunnel.close(ResetCode::NO_ERROR, "data channel closed");
                },
                // Unreachable while the loop's invariants hold (receiving stops only once
                // the tunnel is closed, which exits above); ending beats a select! panic.
                else => break,
            }
            self.handle_events();
            self.counters
                .open_streams
                .store(self.tunnel.stream_count(), Ordering::Relaxed);
        }

        // Whatever is left ends now; streams learn it from their shared state.
        self.tunnel
            .close(ResetCode::NO_ERROR, "tunnel driver stopped");
        self.handle_events();
        let ended = self.ended.take().unwrap_or(Ok(()));
        if let Err(e) = &ended {
            let _ = self.counters.failure.set(e.clone());
        }
        self.counters.closed.store(true, Ordering::Release);
        self.counters.open_streams.store(0, Ordering::Relaxed);
        if let Some(mut sink) = idle_sink {
            // A dead peer must not hold the caller up here either.
            let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, sink.close()).await;
        }
        drop(sending);
        ended
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Write { id, data } => {
                match self.streams.get_mut(&id) {
                    Some(ds) => ds.outbound.push_back(data),
                    // The stream is gone; its writer already has (or will get) the error.
                    None => {
                        self.budget.release(data.len());
                        return;
                    }
                }
                self.pump_outbound(id);
            }
            Cmd::Finish { id } => {
                if let Some(ds) = self.streams.get_mut(&id) {
                    ds.finish_after_outbound = true;
                }
                self.pump_outbound(id);
            }
            Cmd::Reset { id, code, reason } => {
                if let Some(ds) = self.streams.get_mut(&id) {
                    ds.outcome.get_or_insert_with(|| reason.clone());
                    debug!(stream = %id, %code, %reason, "resetting stream");
                    let _ = self.tunnel.reset(id, code, &reason);
                }
            }
            Cmd::Open { port, reply } => self.open(port, reply),
            Cmd::Ping { reply } => {
                // The payload is the send time, kept unique so each pong finds its ping.
                let now = self.nanos();
                let payload = now.max(self.last_ping + 1);
                self.last_ping = payload;
                self.tunnel.ping(payload);
                self.pings.push_back((payload, reply));
            }
            Cmd::Dialed { id, result } => self.on_dialed(id, result),
        }
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn open(&mut self, port: u16, reply: oneshot::Sender<Result<TunnelStream, OpenError>>) {
        let Some(cmd) = self.cmd_tx.upgrade() else {
            return;
        };
        let id = match self.tunnel.open(port) {
            Ok(id) => id,
            Err(e) => {
                let err = if self.tunnel.is_closed() {
                    OpenError::TunnelClosed
                } else {
                    OpenError::Refused {
                        code: ResetCode::REFUSED.0,
                        reason: e.to_string(),
                    }
                };
                let _ = reply.send(Err(err));
                return;
            }
        };
        debug!(stream = %id, port, "opening stream");
        let mut ds = DriverStream::new(port, &self.budget);
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        ds.inbound = Some(tx);
        let stream = TunnelStream {
            id,
            port,
            inbound: rx,
            current: Bytes::new(),
            shared: Arc::clone(&ds.shared),
            cmd,
            shutdown_sent: false,
            eof_seen: false,
            detached: true,
        };
        ds.pending_open = Some((reply, stream));
        self.streams.insert(id, ds);
    }

    /// Hands the tunnel what the stream's writer queued, as far as credit allows.
    fn pump_outbound(&mut self, id: StreamId) {
        let Some(ds) = self.streams.get_mut(&id) else {
            return;
        };
        while let Some(front) = ds.outbound.front_mut() {
            let n = match self.tunnel.write(id, front) {
                Ok(n) => n,
                Err(_) => {
                    ds.drop_outbound();
                    break;
                }
            };
            ds.shared.release(n);
            self.counters
                .bytes_sent
                .fetch_add(n as u64, Ordering::Relaxed);
            if n == front.len() {
                ds.outbound.pop_front();
            } else {
                front.advance(n);
                break; // Writable will say when to go on.
            }
        }
        if ds.outbound.is_empty() && ds.finish_after_outbound {
            ds.finish_after_outbound = false;
            let _ = self.tunnel.finish(id);
        }
    }

    /// Moves received bytes from the tunnel to the stream's consumer while it has room.
    fn pump_inbound(&mut self, id: StreamId) {
        let Some(ds) = self.streams.get_mut(&id) else {
            return;
        };
        if ds.waiting_room {
            return;
        }
        let Some(tx) = ds.inbound.as_ref() else {
            return;
        };
        loop {
            match tx.try_reserve() {
                Ok(permit) => match self.tunnel.read(id) {
                    Ok(Some(chunk)) => {
                        self.counters
                            .bytes_received
                            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        permit.send(chunk);
                    }
                    _ => return,
                },
                Err(mpsc::error::TrySendError::Full(())) => {
                    // Leave the rest in the tunnel (its window bounds it) until there is room.
                    ds.waiting_room = true;
                    let tx = tx.clone();
                    self.room_waits
                        .push(Box::pin(async move { (id, tx.reserve_owned().await) }));
                    return;
                }
                // The consumer is gone; its reset is on the way.
                Err(mpsc::error::TrySendError::Closed(())) => return,
            }
        }
    }

    fn on_room(
        &mut self,
        id: StreamId,
        permit: Result<mpsc::OwnedPermit<Bytes>, mpsc::error::SendError<()>>,
    ) {
        let Some(ds) = self.streams.get_mut(&id) else {
            return;
        };
        ds.waiting_room = false;
        let Ok(permit) = permit else {
            return;
        };
        if let Ok(Some(chunk)) = self.tunnel.read(id) {
            self.counters
                .bytes_received
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            permit.send(chunk);
            self.pump_inbound(id);
        }
    }

    fn handle_events(&mut self) {
        while let Some(event) = self.tunnel.poll_event() {
            match event {
                Event::StreamOpened { id, port } => self.on_stream_opened(id, port),
                Event::StreamAccepted { id } => self.on_accepted(id),
                Event::Readable { id } => self.pump_inbound(id),
                Event::Writable { id } => self.pump_outbound(id),
                Event::Finished { id } => {
                    if let Some(ds) = self.streams.get_mut(&id) {
                        // Everything the peer sent is in the queue: EOF follows it.
                        ds.shared.fin.store(true, Ordering::Release);
                        ds.inbound = None;
                    }
                }
                Event::StreamClosed { id, end, stats } => self.on_stream_closed(id, end, stats),
                Event::Pong { payload } => {
                    let now = self.nanos();
                    if let Some(at) = self.pings.iter().position(|(p, _)| *p == payload)
                        && let Some((_, reply)) = self.pings.remove(at)
                    {
                        let _ = reply.send(Ok(Duration::from_nanos(now.saturating_sub(payload))));
                    }
                }
                Event::Closed {
                    code,
                    reason,
                    by_peer,
                } => {
                    if code == ResetCode::TIMEOUT && !by_peer {
                        warn!(%reason, "peer stopped answering; tunnel closed");
                        self.ended
                            .get_or_insert(Err(TunnelError::Timeout { reason }));
                    } else {
                        info!(%code, %reason, by_peer, "tunnel closed");
                        if by_peer && code != ResetCode::NO_ERROR {
                            self.ended
                                .get_or_insert(Err(TunnelError::ClosedByPeer { code, reason }));
                        }
                    }
                    let error = match &self.ended {
                        Some(Err(e)) => e.clone(),
                        _ => TunnelError::Closed,
                    };
                    for (_, reply) in self.pings.drain(..) {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        }
    }

    fn on_accepted(&mut self, id: StreamId) {
        let Some(ds) = self.streams.get_mut(&id) else {
            return;
        };
        let Some((reply, mut stream)) = ds.pending_open.take() else {
            return;
        };
        debug!(stream = %id, "stream accepted");
        stream.detached = false;
        // If the caller stopped waiting, the stream drops here and resets itself.
        let _ = reply.send(Ok(stream));
    }

    fn on_stream_opened(&mut self, id: StreamId, port: u16) {
        let Some(agent) = &self.agent else {
            return;
        };
        let mut ds = DriverStream::new(port, &self.budget);
        if !(agent.allow)(port) {
            let reason = format!("port {port} is not allowed");
            info!(stream = %id, port, "refusing stream: {reason}");
            ds.outcome = Some(format!("refused: {reason}"));
            self.streams.insert(id, ds);
            let _ = self.tunnel.refuse(id, ResetCode::PORT_NOT_ALLOWED, &reason);
            return;
        }
        if port == speedtest::SPEEDTEST_PORT {
            self.serve_speedtest(id, ds);
            return;
        }
        let addr = SocketAddr::new(agent.dial_host, port);
        debug!(stream = %id, %addr, "dialing");
        if let Some(cmd) = self.cmd_tx.upgrade() {
            let dial = tokio::spawn(async move {
                let result =
                    match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
                        Ok(result) => result,
                        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
                    };
                let _ = cmd.send(Cmd::Dialed { id, result });
            });
            ds.tasks.push(dial.abort_handle());
        }
        self.streams.insert(id, ds);
    }

    /// Agent: the built-in speed test, served here instead of by a workspace port.
    fn serve_speedtest(&mut self, id: StreamId, mut ds: DriverStream) {
        let Some(cmd) = self.cmd_tx.upgrade() else {
            return;
        };
        if self.tunnel.accept(id).is_err() {
            return;
        }
        debug!(stream = %id, "speed test accepted");
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        ds.inbound = Some(tx);
        let task = tokio::spawn(speedtest_service(id, rx, Arc::clone(&ds.shared), cmd));
        ds.tasks = vec![task.abort_handle()];
        self.streams.insert(id, ds);
        self.pump_inbound(id);
    }

    fn on_dialed(&mut self, id: StreamId, result: io::Result<TcpStream>) {
        let Some(ds) = self.streams.get_mut(&id) else {
            return; // The client gave up meanwhile; the socket closes here.
        };
        ds.tasks.clear();
        let socket = match result {
            Ok(socket) => socket,
            Err(e) => {
                let reason = format!("dial failed: {}", describe(&e));
                info!(stream = %id, port = ds.port, "{reason}");
                ds.outcome = Some(reason.clone());
                let _ = self.tunnel.refuse(id, ResetCode::DIAL_FAILED, &reason);
                return;
            }
        };
        let Some(cmd) = self.cmd_tx.upgrade() else {
            return;
        };
        if self.tunnel.accept(id).is_err() {
            return;
        }
        debug!(stream = %id, "stream accepted");
        // Interactive protocols (ssh, psql) want each keystroke out at once.
        let _ = socket.set_nodelay(true);
        let (read_half, write_half) = socket.into_split();
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        ds.inbound = Some(tx);
        let reader = tokio::spawn(socket_reader(
            id,
            read_half,
            Arc::clone(&ds.shared),
            cmd.clone(),
        ));
        let writer = tokio::spawn(socket_writer(
            id,
            write_half,
            rx,
            Arc::clone(&ds.shared),
            cmd,
        ));
        ds.tasks = vec![reader.abort_handle(), writer.abort_handle()];
        // Bytes may already be waiting: the client could not send before OPEN_OK, but
        // pumping is cheap and keeps this independent of that rule.
        self.pump_inbound(id);
    }

    fn on_stream_closed(&mut self, id: StreamId, end: StreamEnd, stats: StreamStats) {
        let Some(mut ds) = self.streams.remove(&id) else {
            return;
        };
        debug!(stream = %id, ?end, sent = stats.bytes_sent, received = stats.bytes_received, "stream closed");
        let (error, outcome) = match &end {
            StreamEnd::Finished => (None, "ok".to_owned()),
            StreamEnd::Refused { code, reason } => {
                if let Some((reply, _stream)) = ds.pending_open.take() {
                    let _ = reply.send(Err(OpenError::Refused {
                        code: code.0,
                        reason: reason.clone(),
                    }));
                }
                (
                    Some((io::ErrorKind::ConnectionRefused, reason.clone())),
                    format!("refused: {reason}"),
                )
            }
            StreamEnd::ResetByPeer { code, reason } => {
                let msg = if reason.is_empty() {
                    format!("stream reset by peer ({code})")
                } else {
                    format!("stream reset by peer: {reason}")
                };
                let outcome = if *code == ResetCode::CANCELLED || reason.is_empty() {
                    "reset by client".to_owned()
                } else {
                    format!("reset by client: {reason}")
                };
                (Some((io::ErrorKind::ConnectionReset, msg)), outcome)
            }
            StreamEnd::ResetLocally { reason, .. } => (
                Some((
                    io::ErrorKind::ConnectionReset,
                    format!("stream reset: {reason}"),
                )),
                format!("reset: {reason}"),
            ),
            StreamEnd::TunnelClosed => {
                // A close on purpose needs no explanation; a failure (a silent peer, a
                // peer's error) is what the application must be told.
                let msg = match self.tunnel.close_reason() {
                    Some((code, reason)) if code != ResetCode::NO_ERROR => {
                        format!("tunnel closed: {reason}")
                    }
                    _ => "tunnel closed".to_owned(),
                };
                // The audit log keeps every reason: "the page was closed" and "no word from
                // the peer in 30 s" end a stream alike but mean different things.
                let outcome = match self.tunnel.close_reason() {
                    Some((_, reason)) if !reason.is_empty() => format!("tunnel closed: {reason}"),
                    _ => "tunnel closed".to_owned(),
                };
                (Some((io::ErrorKind::ConnectionAborted, msg)), outcome)
            }
        };
        if let Some((reply, _stream)) = ds.pending_open.take() {
            let _ = reply.send(Err(match &end {
                StreamEnd::ResetByPeer { code, reason }
                | StreamEnd::ResetLocally { code, reason } => OpenError::Refused {
                    code: code.0,
                    reason: reason.clone(),
                },
                _ => OpenError::TunnelClosed,
            }));
        }
        if let Some((kind, msg)) = error {
            ds.shared.fail(kind, msg);
            for task in &ds.tasks {
                task.abort();
            }
        }
        // Dropping the sender ends the consumer's queue: EOF after FIN, else the error.
        ds.inbound = None;
        ds.shared.writer.wake();

        if let Some(agent) = &self.agent {
            let record = StreamRecord {
                stream_id: id.get(),
                port: ds.port,
                started_at: ds.started_at,
                ended_at: SystemTime::now(),
                bytes_to_workspace: stats.bytes_received,
                bytes_to_client: stats.bytes_sent,
                // An outcome this side decided (refusal, dial or socket failure) wins.
                outcome: match end {
                    StreamEnd::Finished
                    | StreamEnd::TunnelClosed
                    | StreamEnd::ResetByPeer { .. } => outcome,
                    _ => ds.outcome.take().unwrap_or(outcome),
                },
            };
            let _ = agent.reports.send(record);
        }
    }
}

/// A short description of a dial error, without the OS error number.
fn describe(e: &io::Error) -> String {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused | TimedOut | HostUnreachable | NetworkUnreachable | AddrNotAvailable
        | PermissionDenied | ConnectionReset => e.kind().to_string(),
        _ => e.to_string(),
    }
}

/// Agent: copies the workspace connection's bytes into the stream.
async fn socket_reader(
    id: StreamId,
    socket: OwnedReadHalf,
    shared: Arc<StreamShared>,
    cmd: mpsc::UnboundedSender<Cmd>,
) {
    loop {
        let room = match std::future::poll_fn(|cx| shared.poll_room(cx)).await {
            Ok(room) => room,
            Err(_) => return, // The stream ended.
        };
        // Allocate only once there is something to read: a buffer taken before the wait
        // would be held for as long as the connection idles, 64 KiB for every open stream.
        let read = match socket.readable().await {
            Ok(()) => {
                let mut buf = BytesMut::with_capacity(room.min(CHUNK));
                match socket.try_read_buf(&mut buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    read => read.map(|n| (n, buf)),
                }
            }
            Err(e) => Err(e),
        };
        match read {
            Ok((0, _)) => {
                trace!(stream = %id, "workspace closed its side");
                let _ = cmd.send(Cmd::Finish { id });
                return;
            }
            Ok((n, buf)) => {
                shared.stage(n);
                // A short read keeps its whole allocation alive while it waits to be sent:
                // interactive traffic (a few bytes a read) would pin 64 KiB per keystroke.
                let data = if n < buf.capacity() / 2 {
                    Bytes::copy_from_slice(&buf)
                } else {
                    buf.freeze()
                };
                if cmd.send(Cmd::Write { id, data }).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = cmd.send(Cmd::Reset {
                    id,
                    code: ResetCode::SOCKET_ERROR,
                    reason: format!("workspace connection failed: {}", describe(&e)),
                });
                return;
            }
        }
    }
}

/// Agent: the speed test's end of a stream (see [`speedtest`]): reads the request, then
/// sends the pattern (a download) or checks it and reports (an upload).
async fn speedtest_service(
    id: StreamId,
    mut inbound: mpsc::Receiver<Bytes>,
    shared: Arc<StreamShared>,
    cmd: mpsc::UnboundedSender<Cmd>,
) {
    // "refused: …" as the audit log words a refused port.
    let refuse = |reason: String| {
        info!(stream = %id, "speed test refused: {reason}");
        let _ = cmd.send(Cmd::Reset {
            id,
            code: ResetCode::REFUSED,
            reason: format!("refused: {reason}"),
        });
    };
    let mut head = BytesMut::new();
    while head.len() < speedtest::REQUEST_LEN {
        match inbound.recv().await {
            Some(chunk) => head.extend_from_slice(&chunk),
            None => return refuse("the speed test request was cut short".into()),
        }
    }
    let request = match speedtest::Request::decode(&head) {
        Ok(request) => request,
        Err(e) => return refuse(e.to_string()),
    };
    let rest = head.split_off(speedtest::REQUEST_LEN);
    info!(stream = %id, ?request, "speed test");
    match request {
        speedtest::Request::Download { bytes } => {
            if !rest.is_empty() {
                return refuse("bytes after a download request".into());
            }
            let pattern = speedtest::Pattern::new();
            let mut sent = 0u64;
            while sent < bytes {
                let Ok(room) = std::future::poll_fn(|cx| shared.poll_room(cx)).await else {
                    return; // The stream ended.
                };
                let left = usize::try_from(bytes - sent).unwrap_or(usize::MAX);
                let n = room.min(CHUNK).min(left);
                let mut chunk = BytesMut::zeroed(n);
                pattern.fill(sent, &mut chunk);
                shared.stage(n);
                if cmd
                    .send(Cmd::Write {
                        id,
                        data: chunk.freeze(),
                    })
                    .is_err()
                {
                    return;
                }
                sent += n as u64;
            }
            let _ = cmd.send(Cmd::Finish { id });
            // The client's FIN (or reset) ends the stream; what it sends meanwhile is
            // dropped.
            while inbound.recv().await.is_some() {}
        }
        speedtest::Request::Upload { .. } => {
            let mut verifier = speedtest::Verifier::new();
            verifier.update(&rest);
            while let Some(chunk) = inbound.recv().await {
                verifier.update(&chunk);
            }
            if !shared.fin.load(Ordering::Acquire) {
                return; // Reset by the client: nobody wants the report.
            }
            let report = verifier.report().encode();
            if std::future::poll_fn(|cx| shared.poll_room(cx))
                .await
                .is_err()
            {
                return;
            }
            shared.stage(report.len());
            let _ = cmd.send(Cmd::Write {
                id,
                data: Bytes::copy_from_slice(&report),
            });
            let _ = cmd.send(Cmd::Finish { id });
        }
    }
}

/// Agent: copies the stream's bytes into the workspace connection; half-closes it after
/// the client's FIN.
async fn socket_writer(
    id: StreamId,
    mut socket: OwnedWriteHalf,
    mut inbound: mpsc::Receiver<Bytes>,
    shared: Arc<StreamShared>,
    cmd: mpsc::UnboundedSender<Cmd>,
) {
    while let Some(mut chunk) = inbound.recv().await {
        if let Err(e) = socket.write_all_buf(&mut chunk).await {
            let _ = cmd.send(Cmd::Reset {
                id,
                code: ResetCode::SOCKET_ERROR,
                reason: format!("workspace connection failed: {}", describe(&e)),
            });
            return;
        }
    }
    if shared.fin.load(Ordering::Acquire) {
        trace!(stream = %id, "client closed its side");
        let _ = socket.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker_ref;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// Stages as much as `shared` lets a writer stage now; returns the bytes staged.
    fn stage_all(shared: &StreamShared, cx: &mut Context<'_>) -> usize {
        let mut total = 0;
        while let Poll::Ready(Ok(room)) = shared.poll_room(cx) {
            let n = room.min(CHUNK);
            shared.stage(n);
            total += n;
        }
        total
    }

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn one_stream_alone_may_stage_its_whole_limit() {
        let budget = Arc::new(OutboundBudget::default());
        let shared = StreamShared::new(Arc::clone(&budget));
        let mut cx = Context::from_waker(noop_waker_ref());
        assert_eq!(stage_all(&shared, &mut cx), OUTBOUND_LIMIT);
    }

    #[test]
    fn streams_together_stage_at_most_the_budget_plus_their_floors() {
        let budget = Arc::new(OutboundBudget::default());
        let streams: Vec<StreamShared> = (0..100)
            .map(|_| StreamShared::new(Arc::clone(&budget)))
            .collect();
        let mut cx = Context::from_waker(noop_waker_ref());
        let staged: Vec<usize> = streams.iter().map(|s| stage_all(s, &mut cx)).collect();
        let total: usize = staged.iter().sum();
        assert!(
            total <= OUTBOUND_BUDGET + 100 * OUTBOUND_FLOOR,
            "{total} bytes staged"
        );
        assert!(
            staged.iter().all(|&n| n >= OUTBOUND_FLOOR),
            "every stream got at least its floor: {staged:?}"
        );
        assert_eq!(budget.staged.load(Ordering::SeqCst), total);
    }

    #[test]
    fn writer_held_back_by_other_streams_is_woken_when_they_release() {
        let budget = Arc::new(OutboundBudget::default());
        let big = StreamShared::new(Arc::clone(&budget));
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut hogs = Vec::new();
        while budget.room() > 0 {
            let s = StreamShared::new(Arc::clone(&budget));
            stage_all(&s, &mut cx);
            hogs.push(s);
        }
        assert_eq!(stage_all(&big, &mut cx), OUTBOUND_FLOOR);

        let counter = Arc::new(CountingWaker::default());
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        assert!(big.poll_room(&mut cx).is_pending());
        let staged = hogs[0].in_flight.load(Ordering::SeqCst);
        hogs[0].release(staged);
        assert!(
            counter.0.load(Ordering::SeqCst) >= 1,
            "the held-back writer was woken"
        );
        assert!(matches!(big.poll_room(&mut cx), Poll::Ready(Ok(n)) if n > 0));
    }

    #[test]
    fn dropped_stream_gives_its_staged_bytes_back_to_the_tunnel() {
        let budget = Arc::new(OutboundBudget::default());
        let mut ds = DriverStream::new(80, &budget);
        for _ in 0..3 {
            ds.shared.stage(CHUNK);
            ds.outbound.push_back(Bytes::from(vec![0; CHUNK]));
        }
        assert_eq!(budget.staged.load(Ordering::SeqCst), 3 * CHUNK);
        drop(ds);
        assert_eq!(budget.staged.load(Ordering::SeqCst), 0);
    }
}
