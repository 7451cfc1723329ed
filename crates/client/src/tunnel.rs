//! The browser shell around proto's sans-IO [`burrow_proto::tunnel::Tunnel`].
//!
//! The page is single-threaded, so the shell is simpler than `burrow-peer`'s driver task:
//! one `Rc<RefCell<Inner>>` owns the proto `Tunnel`, the `RTCPeerConnection` and the
//! `RTCDataChannel`. The channel's event listeners (which hold only a `Weak`, so they keep
//! nothing alive) and the application's calls each change the `Tunnel`, then
//! [`Inner::pump`] drains its events (waking the futures waiting on them) and sends what it
//! produced.
//!
//! Backpressure, end to end:
//! - sending: `write` resolves only once the `Tunnel` took every byte, which it does only
//!   under the agent's credit; `pump` hands messages to the channel only while its
//!   `bufferedAmount` is below [`HIGH_WATER`] and resumes on `bufferedamountlow`, so the
//!   browser's buffer stays bounded by about [`HIGH_WATER`] plus one message;
//! - receiving: bytes stay in the `Tunnel` until `read` takes them, and reading is what
//!   grants the agent more credit, so a stream nobody reads stops its sender (and only
//!   it), holding at most one window.
//!
//! Liveness: one `setTimeout` (a gloo `Timeout` owned by `Inner`) is armed for the
//! `Tunnel`'s next keepalive or idle deadline, and the `Tunnel` is told the time when it
//! fires and after every incoming message. An agent that stops answering while ICE stays
//! up closes the tunnel after the idle timeout; that counts as a lost connection: open
//! streams fail with the reason, `statechange` ("reconnecting") carries it, and the tunnel
//! reconnects.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use burrow_proto::frame::{HEADER_LEN, ResetCode, StreamId};
use burrow_proto::signal::{
    ClientToServer, ErrorCode, IceCandidate, PathKind, ServerToClient, SessionGrant,
};
use burrow_proto::tunnel::{self as proto, Event, Role, StreamEnd, StreamError};
use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt as _;
use gloo_events::EventListener;
use gloo_timers::callback::Timeout;
use serde::Serialize;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MessageEvent, RtcDataChannel, RtcDataChannelInit, RtcDataChannelType, RtcPeerConnection,
    RtcPeerConnectionIceEvent, RtcPeerConnectionState, RtcSdpType, RtcSessionDescriptionInit,
    WebSocket,
};

use crate::error::{ClientError, describe};
use crate::http::HttpState;
use crate::signaling::{
    ConnectOptions, DEFAULT_CONNECT_TIMEOUT_MS, request_session, rtc_configuration, signal_url,
    to_js,
};

/// DATA payload the browser offers: 64 KiB messages, as native peers do. Chrome takes
/// messages up to 256 KiB, but 64 KiB is the largest every SCTP stack (and the RFC 8841
/// default `max-message-size`) accepts; HELLO settles on the smaller of both sides' values.
pub const MAX_FRAME_PAYLOAD: u32 = 64 * 1024 - HEADER_LEN as u32;

/// `bufferedAmount` above which nothing more is handed to the data channel.
pub const HIGH_WATER: u32 = 1024 * 1024;

/// `bufferedAmountLowThreshold`: sending resumes when the buffer drains below it.
pub const LOW_WATER: u32 = 256 * 1024;

/// Most bytes one `read` returns (received chunks are joined up to this).
const READ_BATCH: usize = 256 * 1024;

/// What happens while a tunnel is being set up, in the order it happened.
enum Setup {
    WsOpen,
    WsMessage(String),
    WsClosed(String),
    LocalCandidate(JsValue),
    DcOpen,
    DcClosed,
    PcFailed,
    Timeout,
}

/// One stream's state shared between the shell and the stream's handle.
#[derive(Default)]
struct Slot {
    /// `dial` waiting for the agent's answer.
    open_reply: Option<oneshot::Sender<Result<(), ClientError>>>,
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// The agent finished and everything it sent was read: reads return EOF.
    fin: bool,
    /// The application called `closeWrite`.
    write_closed: bool,
    /// How the stream ended, once it did (`Ok` for a clean close).
    ended: Option<Result<(), ClientError>>,
}

impl Slot {
    fn wake(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }
}

struct Inner {
    tunnel: proto::Tunnel,
    pc: RtcPeerConnection,
    dc: RtcDataChannel,
    /// The data channel is open and not closed by this side.
    dc_open: bool,
    streams: HashMap<StreamId, Rc<RefCell<Slot>>>,
    /// Outstanding pings by payload (the send time in microseconds).
    pings: HashMap<u64, oneshot::Sender<f64>>,
    last_ping: u64,
    last_rtt: Option<f64>,
    bytes_sent: u64,
    bytes_received: u64,
    /// Why the tunnel closed, once it did.
    closed: Option<String>,
    /// `connect` listening for the channel to open.
    setup: Option<mpsc::UnboundedSender<Setup>>,
    /// Removed (and their closures freed) when dropped.
    listeners: Vec<EventListener>,
    /// Called once if the connection is lost (not closed by this side): the tunnel then
    /// reconnects.
    lost: Option<Rc<dyn Fn(String)>>,
    /// Why the connection was lost, once it was: open streams fail with it.
    lost_reason: Option<String>,
    /// This shell, for the timer's callback (which must not keep it alive).
    me: Weak<RefCell<Inner>>,
    /// The timer armed for the tunnel's next deadline, with that deadline. Dropping it
    /// cancels it, so it ends with the connection.
    timer: Option<(Duration, Timeout)>,
}

impl Inner {
    /// Drains the tunnel's events, then sends what it produced while the channel's buffer
    /// has room; repeats until neither makes progress.
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(event) = self.tunnel.poll_event() {
                progressed = true;
                self.on_event(event);
            }
            let mut drained = false;
            while self.dc_open && self.dc.buffered_amount() < HIGH_WATER {
                let Some(msg) = self.tunnel.poll_transmit() else {
                    drained = true;
                    break;
                };
                progressed = true;
                if let Err(e) = self.dc.send_with_u8_array(&msg) {
                    self.dc_open = false;
                    self.tunnel.close(
                        ResetCode::INTERNAL,
                        &format!("data channel send failed: {}", describe(&e)),
                    );
                }
            }
            if drained && self.tunnel.is_closed() {
                // The closing RESET is out: ending the channel tells the agent at once,
                // and its close event closes the peer connection.
                self.dc_open = false;
                self.dc.close();
            }
            if !progressed {
                break;
            }
        }
        self.arm_timer();
    }

    /// Arms the timer for the tunnel's deadline unless one at or before it is armed: the
    /// deadline only moves later as the agent is heard, and waking early is harmless (the
    /// tunnel does nothing, and the timer is armed again), so most calls change nothing.
    fn arm_timer(&mut self) {
        let deadline = match self.tunnel.poll_timeout() {
            // The clock starts when the channel opens (see `tick`).
            Some(deadline) if self.dc_open => deadline,
            _ => {
                self.timer = None;
                return;
            }
        };
        if self
            .timer
            .as_ref()
            .is_some_and(|(armed, _)| *armed <= deadline)
        {
            return;
        }
        let delay_ms = (deadline.saturating_sub(now()).as_secs_f64() * 1000.0).ceil();
        let weak = self.me.clone();
        let timeout = Timeout::new(delay_ms.min(f64::from(i32::MAX)) as u32, move || {
            with_inner(&weak, Inner::on_timer);
        });
        self.timer = Some((deadline, timeout));
    }

    fn on_timer(&mut self) {
        // Not dropped here: it may be the one running this code.
        if let Some((_, fired)) = self.timer.take() {
            wasm_bindgen_futures::spawn_local(async move { drop(fired) });
        }
        self.tick();
        self.pump();
    }

    /// Tells the tunnel the time: what arrived since counts as life, a keepalive may be
    /// due, or the agent was silent too long.
    fn tick(&mut self) {
        let was_closed = self.tunnel.is_closed();
        self.tunnel.handle_timeout(now());
        if !was_closed && self.tunnel.is_closed() {
            self.on_agent_silent();
        }
    }

    /// The tunnel gave up on a silent agent (ICE may still be up): handled as a lost
    /// connection, with the tunnel's reason ("no word from the peer in 30 s").
    fn on_agent_silent(&mut self) {
        let why = self.tunnel.close_reason().map_or_else(
            || "the agent stopped answering".to_owned(),
            |(_, reason)| format!("the agent stopped answering: {reason}"),
        );
        // Reconnecting logs it to the console.
        if self.lost.is_some() {
            self.lost_reason = Some(format!("{why}; reconnecting"));
        }
        // The streams fail with that reason, and the closing RESET goes out in case the
        // agent still listens; then the channel is let go as if it had died.
        self.pump();
        self.on_channel_closed(&why);
    }

    fn slot(&self, id: StreamId) -> Option<&Rc<RefCell<Slot>>> {
        self.streams.get(&id)
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::StreamAccepted { id } => {
                if let Some(slot) = self.slot(id)
                    && let Some(reply) = slot.borrow_mut().open_reply.take()
                {
                    let _ = reply.send(Ok(()));
                }
            }
            Event::Readable { id } | Event::Writable { id } => {
                if let Some(slot) = self.slot(id) {
                    slot.borrow_mut().wake();
                }
            }
            Event::Finished { id } => {
                if let Some(slot) = self.slot(id) {
                    let mut slot = slot.borrow_mut();
                    slot.fin = true;
                    slot.wake();
                }
            }
            Event::StreamClosed { id, end, .. } => {
                let Some(slot) = self.streams.remove(&id) else {
                    return;
                };
                let mut slot = slot.borrow_mut();
                let result = match end {
                    StreamEnd::Finished => Ok(()),
                    StreamEnd::Refused { code, reason } => Err(ClientError::Refused {
                        code: code.0,
                        reason,
                    }),
                    StreamEnd::ResetByPeer { code, reason } => Err(ClientError::ResetByPeer {
                        code: code.0,
                        reason,
                    }),
                    StreamEnd::ResetLocally { reason, .. } => {
                        Err(ClientError::ResetLocally(reason))
                    }
                    StreamEnd::TunnelClosed => Err(match &self.lost_reason {
                        Some(why) => ClientError::ConnectionLost(why.clone()),
                        None => ClientError::TunnelClosed(
                            "the tunnel closed before the stream ended".into(),
                        ),
                    }),
                };
                if let Some(reply) = slot.open_reply.take() {
                    let _ = reply.send(result.clone().and(Err(ClientError::TunnelClosed(
                        "stream closed before it opened".into(),
                    ))));
                }
                slot.ended = Some(result);
                slot.wake();
            }
            Event::Pong { payload } => {
                if let Some(reply) = self.pings.remove(&payload) {
                    let rtt = now_ms() - payload as f64 / 1000.0;
                    self.last_rtt = Some(rtt);
                    let _ = reply.send(rtt);
                }
            }
            Event::Closed { reason, .. } => {
                // Dropping the senders fails every outstanding ping.
                self.pings.clear();
                self.closed = Some(reason);
            }
            // Only an agent is asked to open streams.
            Event::StreamOpened { .. } => {}
        }
    }

    fn on_message(&mut self, msg: Bytes) {
        // An error closes the tunnel and queues the RESET saying why; pump sends it.
        let _ = self.tunnel.handle_message(msg);
        self.tick();
        self.pump();
    }

    /// The channel or the connection is gone: end the tunnel and free the browser's side.
    fn on_channel_closed(&mut self, why: &str) {
        self.dc_open = false;
        let lost = self.lost.take();
        if lost.is_some() && !self.tunnel.is_closed() {
            self.lost_reason = Some(format!("{why}; reconnecting"));
        }
        // At once, so that a call woken by the streams failing below already finds the
        // tunnel reconnecting.
        if let Some(lost) = lost {
            lost(why.to_owned());
        }
        if !self.tunnel.is_closed() {
            self.tunnel.close(ResetCode::NO_ERROR, why);
        }
        self.pump();
        self.notify(Setup::DcClosed);
        self.pc.close();
        // Not dropped here: one of them is running this code.
        let listeners = std::mem::take(&mut self.listeners);
        wasm_bindgen_futures::spawn_local(async move { drop(listeners) });
    }

    fn notify(&self, event: Setup) {
        if let Some(setup) = &self.setup {
            let _ = setup.unbounded_send(event);
        }
    }

    fn closed_error(&self) -> ClientError {
        ClientError::TunnelClosed(
            self.closed
                .clone()
                .unwrap_or_else(|| "the tunnel is closed".into()),
        )
    }
}

impl Drop for Inner {
    // Every handle is gone (the JS objects were freed): close politely, then at once.
    fn drop(&mut self) {
        if !self.tunnel.is_closed() {
            self.tunnel
                .close(ResetCode::NO_ERROR, "client dropped the tunnel");
        }
        self.pump();
        self.dc.close();
        self.pc.close();
    }
}

/// Runs `f` on the shell, or right after the current call if the shell is busy (an event
/// dispatched while Rust code runs must not be lost, nor panic on the `RefCell`).
fn with_inner(weak: &Weak<RefCell<Inner>>, f: impl FnOnce(&mut Inner) + 'static) {
    let Some(rc) = weak.upgrade() else { return };
    match rc.try_borrow_mut() {
        Ok(mut inner) => f(&mut inner),
        Err(_) => {
            let weak = weak.clone();
            wasm_bindgen_futures::spawn_local(async move {
                if let Some(rc) = weak.upgrade() {
                    f(&mut rc.borrow_mut());
                }
            });
        }
    }
}

/// Milliseconds from the page's monotonic clock.
fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map_or_else(js_sys::Date::now, |p| p.now())
}

/// The page's monotonic clock as the tunnel's time.
fn now() -> Duration {
    Duration::try_from_secs_f64(now_ms() / 1000.0).unwrap_or_default()
}

/// Byte counts and the network path of a tunnel (the `TunnelStats` interface in
/// TypeScript).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelStats {
    /// `direct`, `relay` (through burrowd's TURN relay), or `unknown` (no pair selected).
    pub path: PathKind,
    /// The last ping's round trip, else the selected candidate pair's, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Stream bytes the tunnel took for sending.
    pub bytes_sent: u64,
    /// Stream bytes read by the application.
    pub bytes_received: u64,
    /// The tunnel's state: `connected`, `reconnecting`, ...
    pub state: &'static str,
}

/// A tunnel to a workspace's agent. In JS: `connect()` returns one.
///
/// Clones share the tunnel. The browser's connection is closed by [`Tunnel::close`], or
/// once this and every stream of it are dropped (in JS: `free()`d).
#[wasm_bindgen::prelude::wasm_bindgen]
#[derive(Clone)]
pub struct Tunnel {
    /// The current connection (a new one after each reconnection; streams keep theirs).
    session: Rc<RefCell<Rc<RefCell<Inner>>>>,
    shared: Rc<Shared>,
    /// Idle HTTP connections and cookie jars of `fetch` and `webSocket`.
    pub(crate) http: Rc<RefCell<HttpState>>,
}

/// Where a tunnel is in its life (the `state` of `statechange` events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelState {
    /// The first connection is being set up.
    Connecting,
    /// The data channel is open.
    Connected,
    /// The connection was lost; a new one is being set up. New streams wait for it.
    Reconnecting,
    /// Closed for good: by `close()`, or because reconnecting failed.
    Closed,
}

impl TunnelState {
    /// `connecting`, `connected`, `reconnecting` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Reconnecting => "reconnecting",
            Self::Closed => "closed",
        }
    }
}

/// Delays before each reconnection attempt; after the last one fails the tunnel closes.
pub const RECONNECT_DELAYS_MS: [u32; 5] = [250, 1_000, 2_000, 4_000, 8_000];

/// What a tunnel's clones share beyond the connection.
struct Shared {
    /// What reconnections ask burrowd with.
    opts: RefCell<ConnectOptions>,
    state: Cell<TunnelState>,
    /// Why the tunnel closed for good, if reconnecting failed.
    error: RefCell<Option<ClientError>>,
    /// `onstatechange`, called with `{state, error?}`.
    on_state: RefCell<Option<js_sys::Function>>,
    /// Calls waiting for a reconnection to finish.
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// Bytes counted by connections before the current one.
    earlier_bytes: Cell<(u64, u64)>,
    /// The window's `pagehide` listener (see [`Tunnel::close_for_page_hide`]); removed
    /// with the tunnel.
    page_hide: RefCell<Option<EventListener>>,
}

/// A tunnel that does not keep it alive (for the reconnection task).
struct WeakTunnel {
    session: Weak<RefCell<Rc<RefCell<Inner>>>>,
    shared: Weak<Shared>,
    http: Weak<RefCell<HttpState>>,
}

impl WeakTunnel {
    fn upgrade(&self) -> Option<Tunnel> {
        Some(Tunnel {
            session: self.session.upgrade()?,
            shared: self.shared.upgrade()?,
            http: self.http.upgrade()?,
        })
    }
}

impl Tunnel {
    /// Asks burrowd for a session, negotiates the peer connection through its signaling
    /// socket, and resolves once the data channel is open.
    ///
    /// If the connection is lost later, the tunnel reconnects on its own (see
    /// [`TunnelState`]).
    pub async fn connect(opts: ConnectOptions) -> Result<Tunnel, ClientError> {
        let inner = establish(&opts).await?;
        let tunnel = Tunnel {
            session: Rc::new(RefCell::new(inner)),
            shared: Rc::new(Shared {
                opts: RefCell::new(opts),
                state: Cell::new(TunnelState::Connected),
                error: RefCell::new(None),
                on_state: RefCell::new(None),
                waiters: RefCell::new(Vec::new()),
                earlier_bytes: Cell::new((0, 0)),
                page_hide: RefCell::new(None),
            }),
            http: Rc::default(),
        };
        tunnel.inner().borrow_mut().lost = Some(tunnel.lost_callback());
        if let Some(window) = web_sys::window() {
            let weak = tunnel.downgrade();
            let listener = EventListener::new(&window, "pagehide", move |_| {
                if let Some(tunnel) = weak.upgrade() {
                    tunnel.close_for_page_hide();
                }
            });
            *tunnel.shared.page_hide.borrow_mut() = Some(listener);
        }
        Ok(tunnel)
    }

    /// The current connection.
    fn inner(&self) -> Rc<RefCell<Inner>> {
        Rc::clone(&self.session.borrow())
    }

    fn downgrade(&self) -> WeakTunnel {
        WeakTunnel {
            session: Rc::downgrade(&self.session),
            shared: Rc::downgrade(&self.shared),
            http: Rc::downgrade(&self.http),
        }
    }

    /// What a connection calls when it is lost: start reconnecting.
    fn lost_callback(&self) -> Rc<dyn Fn(String)> {
        let weak = Rc::new(self.downgrade());
        Rc::new(move |why| {
            let Some(tunnel) = weak.upgrade() else { return };
            if tunnel.state() != TunnelState::Connected {
                return; // closed by the page
            }
            tunnel.set_state(
                TunnelState::Reconnecting,
                Some(&ClientError::ConnectionLost(why.clone())),
            );
            let weak = Rc::clone(&weak);
            wasm_bindgen_futures::spawn_local(async move { reconnect(&weak, why).await });
        })
    }

    /// The tunnel's state.
    pub fn state(&self) -> TunnelState {
        self.shared.state.get()
    }

    /// Sets the `onstatechange` callback (`None` removes it).
    pub fn set_on_state_change(&self, f: Option<js_sys::Function>) {
        *self.shared.on_state.borrow_mut() = f;
    }

    /// The `onstatechange` callback.
    pub fn on_state_change(&self) -> Option<js_sys::Function> {
        self.shared.on_state.borrow().clone()
    }

    fn set_state(&self, state: TunnelState, error: Option<&ClientError>) {
        if self.shared.state.replace(state) == state {
            return;
        }
        if state != TunnelState::Reconnecting {
            for waiter in self.shared.waiters.take() {
                let _ = waiter.send(());
            }
        }
        let event = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&event, &"state".into(), &state.as_str().into());
        if let Some(e) = error {
            let _ = js_sys::Reflect::set(&event, &"error".into(), &JsValue::from(e.clone()));
        }
        // Called from a task of its own: the page's handler may call back into the tunnel,
        // and this may run while the connection's state is borrowed.
        let shared = Rc::downgrade(&self.shared);
        wasm_bindgen_futures::spawn_local(async move {
            let callback = shared.upgrade().and_then(|s| s.on_state.borrow().clone());
            if let Some(f) = callback
                && let Err(e) = f.call1(&JsValue::UNDEFINED, &event)
            {
                web_sys::console::warn_1(
                    &format!("burrow: onstatechange threw: {}", describe(&e)).into(),
                );
            }
        });
    }

    /// Waits while the tunnel reconnects; fails if it is closed.
    async fn ready(&self) -> Result<Rc<RefCell<Inner>>, ClientError> {
        loop {
            match self.shared.state.get() {
                TunnelState::Connected => return Ok(self.inner()),
                TunnelState::Closed => return Err(self.closed_error()),
                TunnelState::Connecting | TunnelState::Reconnecting => {
                    let (tx, rx) = oneshot::channel();
                    self.shared.waiters.borrow_mut().push(tx);
                    let _ = rx.await;
                }
            }
        }
    }

    fn closed_error(&self) -> ClientError {
        if let Some(e) = self.shared.error.borrow().clone() {
            return e;
        }
        self.inner().borrow().closed_error()
    }

    /// Makes later reconnections use `token`, to exercise a refused reconnection. For
    /// tests.
    #[doc(hidden)]
    pub fn danger_set_token(&self, token: &str) {
        self.shared.opts.borrow_mut().token = token.to_owned();
    }

    /// Drops the current connection as a network failure would (the data channel closes
    /// without a word to the agent), to exercise reconnection. For tests.
    #[doc(hidden)]
    pub fn danger_drop_connection(&self) {
        let session = self.inner();
        let mut inner = session.borrow_mut();
        inner.dc.close();
        // What the channel's close event does, at once, so that the test's next call
        // already sees the loss.
        inner.on_channel_closed("connection dropped (danger_drop_connection)");
    }
}

/// Asks burrowd for a session and negotiates a peer connection with the agent.
async fn establish(opts: &ConnectOptions) -> Result<Rc<RefCell<Inner>>, ClientError> {
    let endpoint = opts.endpoint()?;
    let grant = request_session(opts, &endpoint).await?;
    let base = endpoint.origin;
    let timeout_ms = opts
        .connect_timeout_ms
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS);
    let (setup_tx, setup_rx) = mpsc::unbounded();
    let inner = new_peer(&grant, setup_tx.clone())?;
    // Dropping `inner` on an error closes the peer connection.
    negotiate(&inner, &base, &grant, setup_tx, setup_rx, timeout_ms).await?;
    inner.borrow_mut().setup = None;
    Ok(inner)
}

/// Replaces a lost connection: new sessions with backoff ([`RECONNECT_DELAYS_MS`]), until
/// one opens, burrowd refuses for good (token, permission), or the attempts run out.
async fn reconnect(weak: &WeakTunnel, why: String) {
    {
        let Some(tunnel) = weak.upgrade() else { return };
        web_sys::console::warn_1(&format!("burrow: connection lost ({why}), reconnecting").into());
        tunnel.http.borrow_mut().clear_idle();
    }
    let mut last = ClientError::ConnectionLost(why);
    for delay in RECONNECT_DELAYS_MS {
        gloo_timers::future::TimeoutFuture::new(delay).await;
        let Some(tunnel) = weak.upgrade() else { return };
        if tunnel.state() == TunnelState::Closed {
            return;
        }
        let opts = tunnel.shared.opts.borrow().clone();
        match establish(&opts).await {
            Ok(inner) => {
                if tunnel.state() == TunnelState::Closed {
                    return; // `inner` closes as it drops
                }
                let old = tunnel.inner();
                let (sent, received) = {
                    let old = old.borrow();
                    (old.bytes_sent, old.bytes_received)
                };
                let (s, r) = tunnel.shared.earlier_bytes.get();
                tunnel.shared.earlier_bytes.set((s + sent, r + received));
                inner.borrow_mut().lost = Some(tunnel.lost_callback());
                *tunnel.session.borrow_mut() = inner;
                tunnel.set_state(TunnelState::Connected, None);
                return;
            }
            Err(e) => {
                let fatal = e.is_api(ErrorCode::Unauthorized)
                    || e.is_api(ErrorCode::Forbidden)
                    || e.is_api(ErrorCode::NotFound);
                web_sys::console::warn_1(&format!("burrow: reconnecting failed: {e}").into());
                last = e;
                if fatal {
                    break;
                }
            }
        }
    }
    if let Some(tunnel) = weak.upgrade() {
        *tunnel.shared.error.borrow_mut() = Some(last.clone());
        tunnel.set_state(TunnelState::Closed, Some(&last));
    }
}

/// The peer connection and its data channel, with the channel's listeners attached
/// from the start so that no message is missed.
fn new_peer(
    grant: &SessionGrant,
    setup: mpsc::UnboundedSender<Setup>,
) -> Result<Rc<RefCell<Inner>>, ClientError> {
    let pc = RtcPeerConnection::new_with_configuration(&rtc_configuration(grant)?)
        .map_err(|e| ClientError::webrtc("creating the RTCPeerConnection", e))?;
    let init = RtcDataChannelInit::new();
    init.set_ordered(true); // and reliable: no maxRetransmits nor maxPacketLifeTime
    let dc = pc.create_data_channel_with_data_channel_dict("burrow", &init);
    dc.set_binary_type(RtcDataChannelType::Arraybuffer);
    dc.set_buffered_amount_low_threshold(LOW_WATER);

    let config = proto::Config {
        max_frame_payload: MAX_FRAME_PAYLOAD,
        ..proto::Config::default()
    };
    let inner = Rc::new(RefCell::new(Inner {
        tunnel: proto::Tunnel::new(Role::Client, config),
        pc: pc.clone(),
        dc: dc.clone(),
        dc_open: false,
        streams: HashMap::new(),
        pings: HashMap::new(),
        last_ping: 0,
        last_rtt: None,
        bytes_sent: 0,
        bytes_received: 0,
        closed: None,
        setup: Some(setup),
        listeners: Vec::new(),
        lost: None,
        lost_reason: None,
        me: Weak::new(),
        timer: None,
    }));
    inner.borrow_mut().me = Rc::downgrade(&inner);

    let weak = Rc::downgrade(&inner);
    let on =
        |target: &web_sys::EventTarget, name: &'static str, f: fn(&mut Inner, &web_sys::Event)| {
            let weak = weak.clone();
            EventListener::new(target, name, move |event| {
                let event = event.clone();
                with_inner(&weak, move |inner| f(inner, &event));
            })
        };
    let listeners = vec![
        on(&dc, "open", |inner, _| {
            inner.dc_open = true;
            inner.tick(); // the tunnel's clock starts
            inner.pump(); // our HELLO
            inner.notify(Setup::DcOpen);
        }),
        on(&dc, "message", |inner, event| {
            let Some(event) = event.dyn_ref::<MessageEvent>() else {
                return;
            };
            match event.data().dyn_into::<js_sys::ArrayBuffer>() {
                Ok(buf) => inner.on_message(Bytes::from(js_sys::Uint8Array::new(&buf).to_vec())),
                // Text is not a frame: let the tunnel reject it as one.
                Err(_) => inner.on_message(Bytes::new()),
            }
        }),
        on(&dc, "bufferedamountlow", |inner, _| inner.pump()),
        on(&dc, "close", |inner, _| {
            inner.on_channel_closed("data channel closed")
        }),
        on(&pc, "connectionstatechange", |inner, _| {
            if inner.pc.connection_state() == RtcPeerConnectionState::Failed {
                inner.notify(Setup::PcFailed);
                inner.on_channel_closed("the peer connection failed");
            }
        }),
    ];
    inner.borrow_mut().listeners = listeners;
    Ok(inner)
}

/// Offer, answer and candidates through the signaling socket, until the channel opens.
async fn negotiate(
    inner: &Rc<RefCell<Inner>>,
    base: &str,
    grant: &SessionGrant,
    setup_tx: mpsc::UnboundedSender<Setup>,
    mut setup_rx: mpsc::UnboundedReceiver<Setup>,
    timeout_ms: u32,
) -> Result<(), ClientError> {
    let pc = inner.borrow().pc.clone();
    let ws = WebSocket::new(&signal_url(base, grant))
        .map_err(|e| ClientError::Signaling(describe(&e)))?;
    let send = {
        let tx = setup_tx.clone();
        move |event: Setup| {
            let _ = tx.unbounded_send(event);
        }
    };
    let _listeners = {
        let (s1, s2, s3, s4) = (send.clone(), send.clone(), send.clone(), send.clone());
        [
            EventListener::new(&ws, "open", move |_| s1(Setup::WsOpen)),
            EventListener::new(&ws, "message", move |event| {
                if let Some(text) = event
                    .dyn_ref::<MessageEvent>()
                    .and_then(|e| e.data().as_string())
                {
                    s2(Setup::WsMessage(text));
                }
            }),
            EventListener::new(&ws, "close", move |event| {
                let why = event
                    .dyn_ref::<web_sys::CloseEvent>()
                    .map(|e| format!("code {}, {:?}", e.code(), e.reason()))
                    .unwrap_or_default();
                s3(Setup::WsClosed(why));
            }),
            EventListener::new(&pc, "icecandidate", move |event| {
                if let Some(c) = event
                    .dyn_ref::<RtcPeerConnectionIceEvent>()
                    .and_then(|e| e.candidate())
                {
                    s4(Setup::LocalCandidate(c.to_json().into()));
                }
            }),
        ]
    };
    let _timeout = gloo_timers::callback::Timeout::new(timeout_ms, move || send(Setup::Timeout));
    drop(setup_tx);

    let result = async {
        let offer = JsFuture::from(pc.create_offer())
            .await
            .map_err(|e| ClientError::webrtc("createOffer", e))?;
        let sdp = js_sys::Reflect::get(&offer, &"sdp".into())
            .ok()
            .and_then(|s| s.as_string())
            .ok_or_else(|| ClientError::WebRtc("createOffer gave no SDP".into()))?;
        let desc = RtcSessionDescriptionInit::new(RtcSdpType::Offer);
        desc.set_sdp(&sdp);
        JsFuture::from(pc.set_local_description(&desc))
            .await
            .map_err(|e| ClientError::webrtc("setLocalDescription", e))?;

        let mut outbox = vec![ClientToServer::Offer { sdp }];
        let mut ws_open = false;
        let mut answered = false;
        let mut remote_candidates = Vec::new();
        let send_ws = |msg: &ClientToServer| -> Result<(), ClientError> {
            let text =
                serde_json::to_string(msg).map_err(|e| ClientError::Signaling(e.to_string()))?;
            ws.send_with_str(&text)
                .map_err(|e| ClientError::Signaling(describe(&e)))
        };
        while let Some(event) = setup_rx.next().await {
            match event {
                Setup::WsOpen => {
                    ws_open = true;
                    for msg in outbox.drain(..) {
                        send_ws(&msg)?;
                    }
                }
                Setup::LocalCandidate(json) => {
                    let Ok(candidate) = serde_wasm_bindgen::from_value::<IceCandidate>(json) else {
                        continue;
                    };
                    if candidate.candidate.is_empty() {
                        continue;
                    }
                    let msg = ClientToServer::Candidate { candidate };
                    if ws_open {
                        send_ws(&msg)?;
                    } else {
                        outbox.push(msg);
                    }
                }
                Setup::WsMessage(text) => match serde_json::from_str::<ServerToClient>(&text) {
                    Ok(ServerToClient::Answer { sdp }) => {
                        let desc = RtcSessionDescriptionInit::new(RtcSdpType::Answer);
                        desc.set_sdp(&sdp);
                        JsFuture::from(pc.set_remote_description(&desc))
                            .await
                            .map_err(|e| ClientError::webrtc("setRemoteDescription", e))?;
                        answered = true;
                        for c in remote_candidates.drain(..) {
                            add_candidate(&pc, &c).await;
                        }
                    }
                    // Candidates may not be added before the answer is set.
                    Ok(ServerToClient::Candidate { candidate }) if answered => {
                        add_candidate(&pc, &candidate).await;
                    }
                    Ok(ServerToClient::Candidate { candidate }) => {
                        remote_candidates.push(candidate);
                    }
                    Ok(ServerToClient::Error(api)) => return Err(ClientError::Api(api)),
                    Err(e) => {
                        return Err(ClientError::Signaling(format!(
                            "unreadable message from burrowd: {e}"
                        )));
                    }
                },
                // After the answer the socket is not needed: the candidates already
                // exchanged may well be enough.
                Setup::WsClosed(_) if answered => {}
                Setup::WsClosed(why) => {
                    return Err(ClientError::Signaling(format!(
                        "the signaling socket closed before the agent answered ({why})"
                    )));
                }
                Setup::DcOpen => return Ok(()),
                Setup::DcClosed => {
                    return Err(ClientError::WebRtc(
                        "the data channel closed before it opened".into(),
                    ));
                }
                Setup::PcFailed => {
                    return Err(ClientError::WebRtc(
                        "ICE failed: no network path to the agent".into(),
                    ));
                }
                Setup::Timeout => {
                    return Err(ClientError::Timeout(format!(
                        "the tunnel did not open within {timeout_ms} ms"
                    )));
                }
            }
        }
        Err(ClientError::WebRtc("setup ended unexpectedly".into()))
    }
    .await;
    // Once the channel is open the tunnel lives on without burrowd.
    let _ = ws.close();
    result
}

impl Tunnel {
    /// Opens a stream to the workspace's `port`; resolves once the agent connected to it,
    /// or fails with the agent's reason ([`ClientError::Refused`]).
    ///
    /// While the tunnel reconnects, it waits for the new connection; a dial that the old
    /// connection failed as it was being lost is tried once more on the new one.
    pub async fn open(&self, port: u16) -> Result<TunnelStream, ClientError> {
        match self.open_once(port).await {
            Err(ClientError::TunnelClosed(_) | ClientError::ConnectionLost(_))
                if self.state() != TunnelState::Closed =>
            {
                self.open_once(port).await
            }
            result => result,
        }
    }

    async fn open_once(&self, port: u16) -> Result<TunnelStream, ClientError> {
        let session = self.ready().await?;
        let (reply, answer) = oneshot::channel();
        let (id, slot) = {
            let mut inner = session.borrow_mut();
            if inner.closed.is_some() {
                return Err(inner.closed_error());
            }
            let id = inner.tunnel.open(port).map_err(|e| match e {
                StreamError::Closed => inner.closed_error(),
                e => ClientError::Stream(e.to_string()),
            })?;
            let slot = Rc::new(RefCell::new(Slot {
                open_reply: Some(reply),
                ..Slot::default()
            }));
            inner.streams.insert(id, Rc::clone(&slot));
            inner.pump();
            (id, slot)
        };
        match answer.await {
            Ok(Ok(())) => Ok(TunnelStream {
                handle: StreamHandle {
                    inner: Rc::clone(&session),
                    id,
                    port,
                    slot,
                },
            }),
            Ok(Err(e)) => Err(e),
            Err(oneshot::Canceled) => Err(session.borrow().closed_error()),
        }
    }

    /// Measures the round trip to the agent through the tunnel, in milliseconds.
    pub async fn ping_ms(&self) -> Result<f64, ClientError> {
        let session = self.ready().await?;
        let answer = {
            let mut inner = session.borrow_mut();
            if inner.closed.is_some() {
                return Err(inner.closed_error());
            }
            // The payload is the send time, unique per outstanding ping.
            let payload = ((now_ms() * 1000.0) as u64).max(inner.last_ping + 1);
            inner.last_ping = payload;
            let (reply, answer) = oneshot::channel();
            inner.pings.insert(payload, reply);
            inner.tunnel.ping(payload);
            inner.pump();
            answer
        };
        match answer.await {
            Ok(rtt) => Ok(rtt),
            Err(oneshot::Canceled) => Err(session.borrow().closed_error()),
        }
    }

    /// Byte counts, and the network path from the browser's `getStats()`.
    pub async fn stats(&self) -> Result<TunnelStats, ClientError> {
        let session = self.inner();
        let pc = session.borrow().pc.clone();
        let report = JsFuture::from(pc.get_stats())
            .await
            .map_err(|e| ClientError::webrtc("getStats", e))?;
        let (path, pair_rtt) = selected_path(&report);
        let inner = session.borrow();
        let (sent, received) = self.shared.earlier_bytes.get();
        Ok(TunnelStats {
            path,
            rtt_ms: inner.last_rtt.or(pair_rtt),
            bytes_sent: sent + inner.bytes_sent,
            bytes_received: received + inner.bytes_received,
            state: self.state().as_str(),
        })
    }

    /// Closes the tunnel: every stream fails with "tunnel closed", the agent is told, and
    /// the peer connection is closed. Idempotent.
    pub fn close(&self) {
        self.close_with("client closed the tunnel");
    }

    /// [`Tunnel::close`], telling the agent `reason` (it lands in the audit log).
    fn close_with(&self, reason: &str) {
        self.set_state(TunnelState::Closed, None);
        let session = self.inner();
        let mut inner = session.borrow_mut();
        inner.lost = None;
        if !inner.tunnel.is_closed() {
            inner.tunnel.close(ResetCode::NO_ERROR, reason);
        }
        inner.pump();
    }

    /// The page is going away (a closed tab, a navigation): say so to the agent and close
    /// the channel now. When a page holding a tunnel was closed, Chrome sent the agent
    /// nothing: it kept the workspace's connections (code-server's WebSockets) open until
    /// its idle timeout ended the tunnel 30 s later. `close` alone would wait for the
    /// channel's buffer to drain before closing it, and the page is gone by then. The peer
    /// connection is not closed here: that would drop the queued CLOSE frame (seen in
    /// Chrome); the channel's own close sends what is queued first.
    fn close_for_page_hide(&self) {
        if self.is_closed() {
            return;
        }
        self.close_with("the page was closed");
        let session = self.inner();
        let mut inner = session.borrow_mut();
        inner.dc_open = false;
        inner.dc.close();
        // The channel's close is a stream reset the agent must still receive; closing the
        // connection too sends SCTP's ABORT at once. A frame of another process (an app's
        // shell in the dashboard's view) may have its process ended right after pagehide,
        // before the reset is on its way.
        inner.pc.close();
    }

    /// Whether the tunnel is closed.
    pub fn is_closed(&self) -> bool {
        self.state() == TunnelState::Closed
    }
}

async fn add_candidate(pc: &RtcPeerConnection, candidate: &IceCandidate) {
    let Ok(init) = to_js(candidate) else { return };
    let init: web_sys::RtcIceCandidateInit = init.unchecked_into();
    // One unusable candidate (an address family the browser lacks, ...) is not fatal:
    // the others may work, and ICE failure is reported on its own.
    if let Err(e) =
        JsFuture::from(pc.add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init))).await
    {
        web_sys::console::warn_1(&format!("burrow: candidate ignored: {}", describe(&e)).into());
    }
}

/// The path of the selected candidate pair, and its current round trip in milliseconds.
fn selected_path(report: &JsValue) -> (PathKind, Option<f64>) {
    let get = |v: &JsValue, key: &str| js_sys::Reflect::get(v, &key.into()).ok();
    let get_str = |v: &JsValue, key: &str| get(v, key).and_then(|s| s.as_string());
    // RTCStatsReport is map-like: iterating gives [id, stats] pairs.
    let mut by_id = HashMap::new();
    if let Ok(Some(iter)) = js_sys::try_iter(report) {
        for entry in iter.flatten() {
            let entry: js_sys::Array = entry.unchecked_into();
            if let Some(id) = entry.get(0).as_string() {
                by_id.insert(id, entry.get(1));
            }
        }
    }
    let is_type = |v: &JsValue, t: &str| get_str(v, "type").as_deref() == Some(t);
    let selected = by_id
        .values()
        .filter(|v| is_type(v, "transport"))
        .find_map(|t| get_str(t, "selectedCandidatePairId"))
        .and_then(|id| by_id.get(&id))
        .or_else(|| {
            // Browsers without `selectedCandidatePairId` mark the pair itself.
            by_id.values().find(|v| {
                is_type(v, "candidate-pair")
                    && (get(v, "selected").and_then(|s| s.as_bool()) == Some(true)
                        || (get(v, "nominated").and_then(|s| s.as_bool()) == Some(true)
                            && get_str(v, "state").as_deref() == Some("succeeded")))
            })
        });
    let Some(pair) = selected else {
        return (PathKind::Unknown, None);
    };
    let relayed = ["localCandidateId", "remoteCandidateId"].iter().any(|key| {
        get_str(pair, key)
            .and_then(|id| by_id.get(&id))
            .and_then(|c| get_str(c, "candidateType"))
            .as_deref()
            == Some("relay")
    });
    let rtt = get(pair, "currentRoundTripTime")
        .and_then(|r| r.as_f64())
        .map(|s| s * 1000.0);
    (
        if relayed {
            PathKind::Relay
        } else {
            PathKind::Direct
        },
        rtt,
    )
}

/// What the stream's futures share; [`TunnelStream`] is the owning handle.
#[derive(Clone)]
pub(crate) struct StreamHandle {
    inner: Rc<RefCell<Inner>>,
    id: StreamId,
    port: u16,
    slot: Rc<RefCell<Slot>>,
}

impl StreamHandle {
    /// Whether the stream ended or the agent finished sending: nothing more comes from it.
    pub(crate) fn is_done(&self) -> bool {
        let slot = self.slot.borrow();
        slot.fin || slot.ended.is_some()
    }
    /// The stream's end as a read or write error, if it ended.
    fn ended(&self) -> Option<Result<(), ClientError>> {
        self.slot.borrow().ended.clone()
    }

    pub(crate) async fn read(&self) -> Result<Option<Vec<u8>>, ClientError> {
        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            for first in [true, false] {
                if self.slot.borrow().fin {
                    return Poll::Ready(Ok(None));
                }
                match self.ended() {
                    Some(Ok(())) => return Poll::Ready(Ok(None)),
                    Some(Err(e)) => return Poll::Ready(Err(e)),
                    None => {}
                }
                let mut out: Vec<u8> = Vec::new();
                while out.len() < READ_BATCH {
                    match inner.tunnel.read(self.id) {
                        Ok(Some(chunk)) => out.extend_from_slice(&chunk),
                        _ => break,
                    }
                }
                if !out.is_empty() {
                    inner.bytes_received += out.len() as u64;
                    inner.pump(); // credit for the agent, and Finished if that was all
                    return Poll::Ready(Ok(Some(out)));
                }
                if first {
                    // A Finished or StreamClosed may be queued but not drained yet.
                    inner.pump();
                }
            }
            self.slot.borrow_mut().reader = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    pub(crate) async fn write(&self, data: &[u8]) -> Result<(), ClientError> {
        let mut written = 0;
        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            loop {
                match self.ended() {
                    Some(Err(e)) => return Poll::Ready(Err(e)),
                    Some(Ok(())) => {
                        return Poll::Ready(Err(ClientError::Stream(
                            "the stream is closed".into(),
                        )));
                    }
                    None => {}
                }
                if self.slot.borrow().write_closed {
                    return Poll::Ready(Err(ClientError::Stream("write after closeWrite".into())));
                }
                if written == data.len() {
                    return Poll::Ready(Ok(()));
                }
                match inner.tunnel.write(self.id, &data[written..]) {
                    // Out of credit or queue room: the tunnel now owes a Writable event.
                    Ok(0) => {
                        self.slot.borrow_mut().writer = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                    Ok(n) => {
                        written += n;
                        inner.bytes_sent += n as u64;
                        inner.pump();
                    }
                    Err(e) => return Poll::Ready(Err(ClientError::Stream(e.to_string()))),
                }
            }
        })
        .await
    }

    pub(crate) fn close_write(&self) -> Result<(), ClientError> {
        if let Some(Err(e)) = self.ended() {
            return Err(e);
        }
        let mut inner = self.inner.borrow_mut();
        if self.ended().is_none() {
            inner
                .tunnel
                .finish(self.id)
                .map_err(|e| ClientError::Stream(e.to_string()))?;
        }
        self.slot.borrow_mut().write_closed = true;
        inner.pump();
        Ok(())
    }

    pub(crate) fn reset(&self, reason: &str) {
        let mut inner = self.inner.borrow_mut();
        if self.ended().is_none() {
            // It can only fail for a stream already gone, which is what we want.
            let _ = inner.tunnel.reset(self.id, ResetCode::CANCELLED, reason);
            inner.pump();
        }
    }
}

/// A stream of a tunnel: bytes to and from one TCP connection on the workspace.
///
/// Dropping it (in JS: `free()`) before reading EOF resets it; after EOF it is
/// half-closed instead, as closing a TCP socket with nothing unread would.
#[wasm_bindgen::prelude::wasm_bindgen]
pub struct TunnelStream {
    handle: StreamHandle,
}

impl TunnelStream {
    pub(crate) fn handle(&self) -> StreamHandle {
        self.handle.clone()
    }

    /// Whether the stream ended or the workspace side finished sending.
    pub fn is_done(&self) -> bool {
        self.handle.is_done()
    }

    /// The stream's id within the tunnel.
    pub fn stream_id(&self) -> u32 {
        self.handle.id.get()
    }

    /// The workspace port it is connected to.
    pub fn workspace_port(&self) -> u16 {
        self.handle.port
    }

    /// The next bytes from the workspace, or `None` at EOF.
    pub async fn read_chunk(&self) -> Result<Option<Vec<u8>>, ClientError> {
        self.handle.read().await
    }

    /// Resolves once the tunnel took all of `data` (under the agent's credit).
    pub async fn write_all(&self, data: &[u8]) -> Result<(), ClientError> {
        self.handle.write(data).await
    }

    /// Half-closes: the workspace service reads EOF and may still answer.
    pub fn finish(&self) -> Result<(), ClientError> {
        self.handle.close_write()
    }

    /// Ends both directions at once; unsent and unread bytes are dropped.
    pub fn abort(&self) {
        self.handle.reset("reset by the client");
    }
}

impl Drop for TunnelStream {
    fn drop(&mut self) {
        let h = &self.handle;
        let (fin, ended) = {
            let slot = h.slot.borrow();
            (slot.fin, slot.ended.is_some())
        };
        if ended {
            return;
        }
        let Ok(mut inner) = h.inner.try_borrow_mut() else {
            return;
        };
        let _ = if fin {
            inner.tunnel.finish(h.id)
        } else {
            inner
                .tunnel
                .reset(h.id, ResetCode::CANCELLED, "stream dropped by the client")
        };
        inner.pump();
    }
}
