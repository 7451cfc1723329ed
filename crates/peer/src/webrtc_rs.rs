//! [`PeerStack`] implemented with the `webrtc` crate (webrtc-rs 0.21, the async layer over the
//! sans-I/O `rtc` core).
//!
//! # Shape
//!
//! Each connection has
//!
//! - a **driver** owned by webrtc-rs, which runs the sockets, ICE, DTLS and SCTP. By default it
//!   runs on webrtc-rs' dedicated reactor pool ([`WebrtcOptions::reactor_threads`]), a
//!   current-thread tokio runtime on a thread of its own, which keeps the packet path off the
//!   application's worker pool;
//! - a **monitor** task (on the caller's tokio runtime) that turns the driver's callbacks into
//!   [`PeerEvent`]s and closes the connection when the session is closed or dropped;
//! - until the tunnel's data channel opens, a task waiting for it; the open channel is then
//!   read by the [`MessageSource`] itself, with no task in between.
//!
//! # Backpressure
//!
//! Sending waits while the channel's outstanding bytes (handed to SCTP, not yet acknowledged)
//! are at or above [`WebrtcOptions::send_high_water`]. The wait is webrtc-rs' own send-buffer
//! gate (`with_data_channel_send_buffer_limit`): the sender parks on a notification the driver
//! raises whenever SCTP releases acknowledged bytes, so it never spins. (Pacing on
//! `OnBufferedAmountLow` instead would tie sending to reading: that event arrives on the same
//! per-channel event stream as the messages, so a sender could wait on a reader that waits on
//! it.) On the receiving side a slow [`MessageSource`] leaves messages in the channel's event
//! queue (256 events); once that is full the driver keeps them in SCTP's reassembly queue and
//! the advertised receive window closes: backpressure reaches the remote sender.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use burrow_proto::signal::{IceCandidate, IceServer, IceTransportPolicy, PathKind};
use bytes::{Bytes, BytesMut};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tracing::{debug, info, warn};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidate, RTCIceCandidateInit, RTCIceCandidateType, RTCIceGatheringState, RTCIceServer,
    RTCIceTransportPolicy, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    RTCSessionDescription, SettingEngineBuilder,
};
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};

use crate::channel::{ChannelClosed, MessageChannel, MessageSink, MessageSource};
use crate::stack::{DATA_CHANNEL_LABEL, PeerConfig, PeerError, PeerEvent, PeerSession, PeerStack};

/// Tuning of a [`WebrtcStack`]. The defaults suit both the agent and the CLI.
#[derive(Debug, Clone)]
pub struct WebrtcOptions {
    /// Local UDP address to bind. The default `0.0.0.0:0` binds one socket per non-loopback
    /// IPv4 interface (webrtc-rs expands the wildcard), each on an ephemeral port. A concrete
    /// address binds exactly that one (tests use `127.0.0.1:0`); a fixed port suits a firewall
    /// that forwards it.
    pub bind_addr: SocketAddr,
    /// `SO_RCVBUF` and `SO_SNDBUF` asked for on every UDP socket, in bytes. The kernel caps
    /// them at `net.core.rmem_max` / `wmem_max`; the defaults (~200 KiB) drop datagrams under
    /// bursts, which SCTP then retransmits slowly.
    pub udp_buffer_bytes: usize,
    /// Threads of webrtc-rs' dedicated reactor pool, which runs every connection's driver
    /// (connections are spread over it round-robin; a thread starts when first used). `0`
    /// runs drivers on the caller's tokio runtime instead, where throughput is lower and
    /// erratic. The pool is process-wide and sized by the first connection that uses it.
    pub reactor_threads: usize,
    /// Sends wait while this many bytes are outstanding on the channel.
    pub send_high_water: usize,
    /// SCTP receive window (`a_rwnd`), in bytes: how much the peer may have in flight towards
    /// this side.
    pub sctp_receive_window: u32,
    /// Largest data-channel message, in bytes, announced in the SDP (`a=max-message-size`).
    /// webrtc-rs caps it at 256 KiB; the sender is bound by the smaller of both sides' values.
    pub max_message_size: u32,
    /// Whether to resolve the peer's mDNS (`.local`) host candidates, as browsers send them.
    /// This binds the shared mDNS port 5353; off by default.
    pub mdns_query: bool,
}

impl Default for WebrtcOptions {
    fn default() -> Self {
        Self {
            bind_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            udp_buffer_bytes: 8 * 1024 * 1024,
            reactor_threads: 2,
            send_high_water: 1024 * 1024,
            sctp_receive_window: 4 * 1024 * 1024,
            max_message_size: 256 * 1024,
            mdns_query: false,
        }
    }
}

/// The [`PeerStack`] of the `webrtc` crate.
#[derive(Debug, Clone, Default)]
pub struct WebrtcStack {
    options: WebrtcOptions,
}

impl WebrtcStack {
    /// A stack with the default [`WebrtcOptions`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A stack with the given options.
    pub fn with_options(options: WebrtcOptions) -> Self {
        Self { options }
    }

    /// The same stack binding its UDP sockets to `addr` (see [`WebrtcOptions::bind_addr`]).
    pub fn with_bind_addr(mut self, addr: SocketAddr) -> Self {
        self.options.bind_addr = addr;
        self
    }

    /// The options in use.
    pub fn options(&self) -> &WebrtcOptions {
        &self.options
    }

    /// Builds a peer connection and starts nothing else yet.
    async fn build(&self, config: &PeerConfig) -> Result<Built, PeerError> {
        let opts = &self.options;
        let configuration = RTCConfigurationBuilder::new()
            .with_ice_servers(ice_servers(&config.ice_servers))
            .with_ice_transport_policy(match config.ice_transport_policy {
                IceTransportPolicy::All => RTCIceTransportPolicy::All,
                IceTransportPolicy::Relay => RTCIceTransportPolicy::Relay,
            })
            .build();
        let mut settings = SettingEngineBuilder::new();
        if config.ice_transport_policy == IceTransportPolicy::Relay {
            // Only relay pairs exist, so webrtc-rs' default 2 s wait for something better
            // than a relay before nominating one is pure delay.
            settings = settings.with_relay_acceptance_min_wait(Some(Duration::ZERO));
        }
        // A peer-reflexive candidate is an address the peer's checks actually came from;
        // webrtc-rs waits 1 s before nominating one. With trickle ICE on a fast path the
        // peer's checks usually arrive before its candidates do, so the first working pair
        // is peer-reflexive and that wait was most of the connection setup time.
        settings = settings.with_prflx_acceptance_min_wait(Some(Duration::ZERO));
        let settings = settings
            .with_multicast_dns_mode(if opts.mdns_query {
                rtc::ice::mdns::MulticastDnsMode::QueryOnly
            } else {
                rtc::ice::mdns::MulticastDnsMode::Disabled
            })
            .with_sctp_max_receive_buffer_size(opts.sctp_receive_window)
            .with_sctp_max_message_size(
                rtc::peer_connection::configuration::setting_engine::SctpMaxMessageSize::Bounded(
                    opts.max_message_size,
                ),
            )
            .build();
        let pacing = Arc::new(Pacing::new());
        let runtime: Arc<dyn Runtime> = Arc::new(TunedRuntime {
            udp_buffer_bytes: opts.udp_buffer_bytes,
            pacing: pacing.clone(),
        });
        let (signal_tx, signal_rx) = mpsc::unbounded_channel();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(configuration)
            .with_setting_engine(settings)
            .with_runtime(runtime)
            .with_handler(Arc::new(Handler { tx: signal_tx }))
            .with_udp_addrs(vec![opts.bind_addr])
            .with_dedicated_reactor_pool_size(opts.reactor_threads)
            .with_data_channel_send_buffer_limit(opts.send_high_water.max(1))
            .build()
            .await
            .map_err(|e| PeerError::Failed(format!("cannot create peer connection: {e}")))?;
        Ok(Built {
            pc: Arc::new(pc),
            signals: signal_rx,
            pacing,
        })
    }
}

/// A new peer connection with what its session needs.
struct Built {
    pc: Arc<dyn PeerConnection>,
    signals: mpsc::UnboundedReceiver<Signal>,
    /// The driver's sleep policy (see [`Pacing`]).
    pacing: Arc<Pacing>,
}

#[async_trait]
impl PeerStack for WebrtcStack {
    async fn offer(&self, config: PeerConfig) -> Result<(Box<dyn PeerSession>, String), PeerError> {
        let Built {
            pc,
            signals,
            pacing,
        } = self.build(&config).await?;
        let prepared = async {
            let dc = pc
                .create_data_channel(
                    DATA_CHANNEL_LABEL,
                    Some(RTCDataChannelInit {
                        ordered: true,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| PeerError::Failed(format!("cannot create data channel: {e}")))?;
            let offer = pc
                .create_offer(None)
                .await
                .map_err(|e| PeerError::Failed(format!("cannot create offer: {e}")))?;
            pc.set_local_description(offer)
                .await
                .map_err(|e| PeerError::Failed(format!("cannot apply own offer: {e}")))?;
            let sdp = local_sdp(&*pc).await?;
            Ok::<_, PeerError>((dc, sdp))
        }
        .await;
        match prepared {
            Ok((dc, sdp)) => {
                let session = WebrtcSession::start(pc, signals, Some(dc), false, pacing);
                Ok((Box::new(session), sdp))
            }
            Err(e) => {
                let _ = pc.close().await;
                Err(e)
            }
        }
    }

    async fn answer(
        &self,
        config: PeerConfig,
        offer_sdp: &str,
    ) -> Result<(Box<dyn PeerSession>, String), PeerError> {
        // Parse before building anything: most bad SDP stops here at no cost.
        let offer = RTCSessionDescription::offer(offer_sdp.to_owned())
            .map_err(|e| PeerError::BadSdp(e.to_string()))?;
        let Built {
            pc,
            signals,
            pacing,
        } = self.build(&config).await?;
        let prepared = async {
            pc.set_remote_description(offer)
                .await
                .map_err(|e| PeerError::BadSdp(e.to_string()))?;
            let answer = pc
                .create_answer(None)
                .await
                .map_err(|e| PeerError::BadSdp(format!("cannot answer this offer: {e}")))?;
            pc.set_local_description(answer)
                .await
                .map_err(|e| PeerError::Failed(format!("cannot apply own answer: {e}")))?;
            local_sdp(&*pc).await
        }
        .await;
        match prepared {
            Ok(sdp) => {
                let session = WebrtcSession::start(pc, signals, None, true, pacing);
                Ok((Box::new(session), sdp))
            }
            Err(e) => {
                let _ = pc.close().await;
                Err(e)
            }
        }
    }
}

async fn local_sdp(pc: &dyn PeerConnection) -> Result<String, PeerError> {
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .ok_or_else(|| PeerError::Failed("no local description".into()))
}

/// Converts burrowd's ICE servers, dropping the URLs webrtc-rs cannot use.
fn ice_servers(servers: &[IceServer]) -> Vec<RTCIceServer> {
    servers
        .iter()
        .filter_map(|server| {
            let urls: Vec<String> = server
                .urls
                .iter()
                .filter(|url| {
                    let lower = url.to_ascii_lowercase();
                    // The 0.21 TURN client speaks UDP only.
                    let unusable = lower.starts_with("turns:")
                        || (lower.starts_with("turn:") && lower.contains("transport=tcp"));
                    if unusable {
                        debug!(url = %url, "skipping ICE server URL: webrtc-rs 0.21 relays over UDP only");
                    }
                    !unusable
                })
                .cloned()
                .collect();
            (!urls.is_empty()).then(|| RTCIceServer {
                urls,
                username: server.username.clone().unwrap_or_default(),
                credential: server.credential.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// Converts a remote candidate to webrtc-rs' form.
fn to_rtc_candidate(c: IceCandidate) -> RTCIceCandidateInit {
    RTCIceCandidateInit {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_mline_index: c.sdp_m_line_index,
        username_fragment: c.username_fragment,
        url: None,
    }
}

/// Converts a local candidate to the browser's `RTCIceCandidateInit` shape, naming the m-line
/// it belongs to (webrtc-rs leaves `sdpMid` empty).
fn from_rtc_candidate(c: &RTCIceCandidate, mid: Option<&str>) -> Option<IceCandidate> {
    match c.to_json() {
        Ok(init) => Some(IceCandidate {
            candidate: init.candidate,
            sdp_mid: Some(mid.unwrap_or("0").to_owned()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        }),
        Err(e) => {
            warn!(error = %e, "cannot encode a local ICE candidate");
            None
        }
    }
}

/// The `a=mid:` of the first m-line of `sdp`.
fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|line| line.trim_end().strip_prefix("a=mid:"))
        .map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------
// Runtime: tokio, with large UDP socket buffers.
// ---------------------------------------------------------------------------------------------

/// webrtc-rs' tokio runtime, but every UDP socket gets large kernel buffers before it is
/// wrapped. (The builder takes no pre-bound socket and has no buffer setting; the runtime's
/// `wrap_udp_socket` is the one place every socket, relayed ones included, passes through.)
///
/// It also shortens the driver's sleeps while the connection is being set up. webrtc-rs
/// 0.21.1's driver loop flushes its writes before it processes the core's events, and some
/// handshake packets are queued by that event processing: the SCTP INIT after the DTLS
/// handshake, the data channel's DCEP OPEN and ACK after the SCTP association. Nothing wakes
/// the driver for them, so each waits for the next protocol timer, about 200 ms, and a
/// connection took over 400 ms to open on loopback. With sleeps capped at [`SETUP_TICK`]
/// they leave within a millisecond. Waking before a timer is due is harmless: the sans-IO
/// core only acts on deadlines that have passed.
#[derive(Debug)]
struct TunedRuntime {
    udp_buffer_bytes: usize,
    /// When the driver's sleeps are cut short.
    pacing: Arc<Pacing>,
}

/// Datagrams per UDP GSO send. webrtc-rs 0.21.1 batches up to 64 datagrams and 65535 bytes,
/// but the kernel refuses a GSO send whose total exceeds one IPv4 datagram's payload (65507
/// bytes) with `EMSGSIZE`. On loopback, where bulk sends fill whole batches, that dropped
/// every full batch, retransmissions were batched the same way, and SCTP gave the
/// association up (`T3-rtx` failure) in the middle of a transfer. 48 datagrams of at most
/// ~1.25 KB (SCTP's 1191-byte packets in DTLS records) stay well under the limit.
const MAX_GSO_SEGMENTS: usize = 48;

/// A UDP socket that reports at most [`MAX_GSO_SEGMENTS`] for GSO, and tells [`Pacing`]
/// about every datagram.
#[derive(Debug)]
struct GsoCapped {
    inner: Arc<dyn AsyncUdpSocket>,
    pacing: Arc<Pacing>,
}

impl AsyncUdpSocket for GsoCapped {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(
        &self,
        cx: &mut std::task::Context<'_>,
        transmit: &webrtc::runtime::Transmit<'_>,
    ) -> std::task::Poll<io::Result<usize>> {
        let sent = self.inner.poll_send(cx, transmit);
        if let std::task::Poll::Ready(Ok(_)) = sent {
            self.pacing.touch();
        }
        sent
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [webrtc::runtime::RecvMeta],
    ) -> std::task::Poll<io::Result<usize>> {
        let received = self.inner.poll_recv(cx, bufs, meta);
        if let std::task::Poll::Ready(Ok(n)) = received {
            self.pacing.touch();
            // A GRO read holds several datagrams of `stride` bytes (the last maybe shorter).
            if let Some(largest) = meta.iter().take(n).map(|m| m.stride.min(m.len)).max() {
                self.pacing
                    .largest_received
                    .fetch_max(largest, Ordering::Relaxed);
            }
        }
        received
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments().min(MAX_GSO_SEGMENTS)
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}

/// How many messages a peer may send before this end reports the channel open; the protocol
/// has it send one (HELLO) before hearing from us, so this is generous.
const MAX_EARLY_MESSAGES: usize = 64;

/// Longest driver sleep while a connection is being set up or busy (see [`Pacing`]).
const SETUP_TICK: Duration = Duration::from_millis(1);

/// How long after the last datagram or message the driver's sleeps stay short.
const ACTIVE_TAIL: Duration = Duration::from_millis(50);

/// When the driver's sleeps are cut short: while the connection is being set up, and on a
/// relayed path. There the next sleep after any datagram in or out, or any message this side
/// sends, ends at once, and sleeps stay under [`SETUP_TICK`] for [`ACTIVE_TAIL`] after.
///
/// webrtc-rs 0.21.1's driver loop flushes its queued writes first and then processes what
/// can queue more, so a packet queued late in an iteration waits for the next wake-up, which
/// nothing triggers: the next protocol timer, or the next datagram. During setup that held
/// back handshake packets (see [`TunedRuntime`]). On a relayed path it holds back everything:
/// the core's packets for a relayed candidate are handed to the TURN client's queue, which
/// is flushed at the *start* of an iteration, so every relayed packet waited for the next
/// wake-up. A 64-byte echo through the relay took 270 ms where the direct path takes 0.5 ms.
/// A busy connection wakes often anyway; after a quiet spell the driver sleeps long again, so
/// an idle connection costs next to nothing (an agent with three idle tunnels: 0.5–0.7 % of a
/// core). A direct path is left alone: its packets go out in the iteration that made them.
#[derive(Debug)]
struct Pacing {
    /// Set from creation until shortly after the data channel opened.
    setting_up: AtomicBool,
    /// The selected candidate pair goes through a TURN relay.
    relayed: AtomicBool,
    /// Origin of [`Pacing::active_until`].
    epoch: Instant,
    /// Nanoseconds after `epoch` until which sleeps stay short.
    active_until: AtomicU64,
    /// Something happened since the driver last went to sleep: its next sleep ends at once,
    /// so that what that iteration queued is flushed by the next one.
    kick: AtomicBool,
    /// The largest datagram received (see [`PeerSession::largest_datagram_received`]).
    /// Kept here because the socket wrapper and the session share this and nothing else.
    largest_received: AtomicUsize,
}

impl Pacing {
    fn new() -> Self {
        Self {
            setting_up: AtomicBool::new(true),
            relayed: AtomicBool::new(false),
            epoch: Instant::now(),
            active_until: AtomicU64::new(0),
            kick: AtomicBool::new(false),
            largest_received: AtomicUsize::new(0),
        }
    }

    /// Whether sleeps are cut short at all: during setup and on a relayed path.
    fn engaged(&self) -> bool {
        self.setting_up.load(Ordering::Relaxed) || self.relayed.load(Ordering::Relaxed)
    }

    /// Something was sent or received: keep sleeps short for [`ACTIVE_TAIL`].
    fn touch(&self) {
        // Called for every datagram: a direct path's bulk transfer should not pay for a
        // clock read and two stores that `cap` would ignore.
        if !self.engaged() {
            return;
        }
        let until = (self.epoch.elapsed() + ACTIVE_TAIL).as_nanos();
        self.active_until
            .store(u64::try_from(until).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.kick.store(true, Ordering::Relaxed);
    }

    /// The sleep the driver asked for, as this policy allows it.
    fn cap(&self, asked: Duration) -> Duration {
        if !self.engaged() {
            // A direct path's packets leave in the iteration that made them; waking early
            // would only cost CPU (5–10 % more per MB of a bulk transfer, measured).
            return asked;
        }
        if self.kick.swap(false, Ordering::Relaxed) {
            Duration::ZERO
        } else if self.setting_up.load(Ordering::Relaxed)
            || u128::from(self.active_until.load(Ordering::Relaxed))
                > self.epoch.elapsed().as_nanos()
        {
            asked.min(SETUP_TICK)
        } else {
            asked
        }
    }
}

/// How long short sleeps continue once this side's data channel is open: the peer may still
/// be waiting for a handshake packet this side queued (the DCEP ACK).
const SETUP_TICK_TAIL: Duration = Duration::from_millis(200);

impl Runtime for TunedRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        TokioRuntime.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        TokioRuntime.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        if self.udp_buffer_bytes > 0 {
            let sock = socket2::SockRef::from(&socket);
            if let Err(e) = sock.set_recv_buffer_size(self.udp_buffer_bytes) {
                debug!(error = %e, "cannot set SO_RCVBUF");
            }
            if let Err(e) = sock.set_send_buffer_size(self.udp_buffer_bytes) {
                debug!(error = %e, "cannot set SO_SNDBUF");
            }
            debug!(
                local = ?socket.local_addr().ok(),
                rcvbuf = ?sock.recv_buffer_size().ok(),
                sndbuf = ?sock.send_buffer_size().ok(),
                "UDP socket buffers"
            );
        }
        let socket = TokioRuntime.wrap_udp_socket(socket)?;
        Ok(Arc::new(GsoCapped {
            inner: socket,
            pacing: self.pacing.clone(),
        }))
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        TokioRuntime.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        Box::pin(async move { TokioRuntime.connect_tcp(remote_addr).await })
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move { TokioRuntime.resolve_host(host).await })
    }

    fn now(&self) -> Instant {
        TokioRuntime.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        TokioRuntime.sleep(self.pacing.cap(duration))
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        TokioRuntime.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        TokioRuntime.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        TokioRuntime.yield_now()
    }

    fn name(&self) -> &'static str {
        "tokio (burrow)"
    }
}

// ---------------------------------------------------------------------------------------------
// Driver callbacks.
// ---------------------------------------------------------------------------------------------

/// What the driver reports, forwarded to the session's monitor.
enum Signal {
    Candidate(RTCIceCandidate),
    GatheringComplete,
    State(RTCPeerConnectionState),
    DataChannel(Arc<dyn DataChannel>),
}

/// Runs on the driver: it must never wait, so it only forwards.
struct Handler {
    tx: mpsc::UnboundedSender<Signal>,
}

#[async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let _ = self.tx.send(Signal::Candidate(event.candidate));
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.tx.send(Signal::GatheringComplete);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.tx.send(Signal::State(state));
    }

    async fn on_data_channel(&self, data_channel: Arc<dyn DataChannel>) {
        let _ = self.tx.send(Signal::DataChannel(data_channel));
    }
}

// ---------------------------------------------------------------------------------------------
// Session.
// ---------------------------------------------------------------------------------------------

/// Remote candidates wait here until the remote description is set.
#[derive(Default)]
struct RemoteState {
    description_set: bool,
    pending: VecDeque<RTCIceCandidateInit>,
}

/// One connection.
struct WebrtcSession {
    pc: Arc<dyn PeerConnection>,
    path: Arc<StdMutex<PathKind>>,
    events: Mutex<EventStream>,
    channel: Mutex<Option<oneshot::Receiver<MessageChannel>>>,
    remote: Mutex<RemoteState>,
    /// Dropping it (with the session) or sending on it stops the monitor, which closes the
    /// connection.
    stop: StdMutex<Option<oneshot::Sender<()>>>,
    pacing: Arc<Pacing>,
}

struct EventStream {
    rx: mpsc::UnboundedReceiver<PeerEvent>,
    ended: bool,
}

impl WebrtcSession {
    fn start(
        pc: Arc<dyn PeerConnection>,
        signals: mpsc::UnboundedReceiver<Signal>,
        own_channel: Option<Arc<dyn DataChannel>>,
        remote_description_set: bool,
        pacing: Arc<Pacing>,
    ) -> Self {
        let path = Arc::new(StdMutex::new(PathKind::Unknown));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (channel_tx, channel_rx) = oneshot::channel();
        let (pump_stop_tx, pump_stop_rx) = tokio::sync::watch::channel(false);
        let channel_slot = match own_channel {
            Some(dc) => {
                tokio::spawn(open(dc, channel_tx, pump_stop_rx.clone(), pacing.clone()));
                None
            }
            None => Some(channel_tx),
        };
        tokio::spawn(
            Monitor {
                pc: pc.clone(),
                events: events_tx,
                path: path.clone(),
                channel_slot,
                pump_stop: pump_stop_tx,
                pump_stop_rx,
                mid: None,
                pacing: pacing.clone(),
            }
            .run(signals, stop_rx),
        );
        Self {
            pc,
            path,
            events: Mutex::new(EventStream {
                rx: events_rx,
                ended: false,
            }),
            channel: Mutex::new(Some(channel_rx)),
            remote: Mutex::new(RemoteState {
                description_set: remote_description_set,
                pending: VecDeque::new(),
            }),
            stop: StdMutex::new(Some(stop_tx)),
            pacing,
        }
    }
}

#[async_trait]
impl PeerSession for WebrtcSession {
    async fn set_answer(&self, sdp: &str) -> Result<(), PeerError> {
        let answer = RTCSessionDescription::answer(sdp.to_owned())
            .map_err(|e| PeerError::BadSdp(e.to_string()))?;
        let mut remote = self.remote.lock().await;
        if remote.description_set {
            return Err(PeerError::BadSdp(
                "the remote description is already set".into(),
            ));
        }
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(|e| PeerError::BadSdp(e.to_string()))?;
        remote.description_set = true;
        while let Some(candidate) = remote.pending.pop_front() {
            if let Err(e) = self.pc.add_ice_candidate(candidate).await {
                warn!(error = %e, "dropping a queued remote ICE candidate");
            }
        }
        Ok(())
    }

    async fn add_remote_candidate(&self, candidate: IceCandidate) -> Result<(), PeerError> {
        if candidate.candidate.trim().is_empty() {
            // End of candidates: webrtc-rs has nothing to do with it.
            return Ok(());
        }
        // Checked now, so a bad candidate is refused even while it would only be queued.
        let line = candidate.candidate.trim();
        let line = line.strip_prefix("candidate:").unwrap_or(line);
        rtc::ice::candidate::unmarshal_candidate(line)
            .map_err(|e| PeerError::BadCandidate(e.to_string()))?;
        let candidate = to_rtc_candidate(candidate);
        let mut remote = self.remote.lock().await;
        if !remote.description_set {
            remote.pending.push_back(candidate);
            return Ok(());
        }
        self.pc
            .add_ice_candidate(candidate)
            .await
            .map_err(|e| PeerError::BadCandidate(e.to_string()))
    }

    async fn next_event(&self) -> Option<PeerEvent> {
        let mut events = self.events.lock().await;
        if events.ended {
            return None;
        }
        let event = events.rx.recv().await;
        if matches!(event, None | Some(PeerEvent::Closed(_))) {
            events.ended = true;
        }
        event
    }

    async fn data_channel(&self) -> Result<MessageChannel, PeerError> {
        let rx = self
            .channel
            .lock()
            .await
            .take()
            .ok_or_else(|| PeerError::Failed("the data channel was already taken".into()))?;
        rx.await.map_err(|_| {
            PeerError::Failed("the connection closed before the data channel opened".into())
        })
    }

    async fn path(&self) -> PathKind {
        *self.path.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn largest_datagram_received(&self) -> usize {
        self.pacing.largest_received.load(Ordering::Relaxed)
    }

    async fn close(&self) {
        let stop = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        let _ = self.pc.close().await;
    }
}

/// Turns driver signals into [`PeerEvent`]s; owns the connection's shutdown.
struct Monitor {
    pc: Arc<dyn PeerConnection>,
    events: mpsc::UnboundedSender<PeerEvent>,
    path: Arc<StdMutex<PathKind>>,
    /// The answerer's way to hand over the data channel the offerer opens.
    channel_slot: Option<oneshot::Sender<MessageChannel>>,
    pump_stop: tokio::sync::watch::Sender<bool>,
    pump_stop_rx: tokio::sync::watch::Receiver<bool>,
    mid: Option<String>,
    pacing: Arc<Pacing>,
}

impl Monitor {
    async fn run(
        mut self,
        mut signals: mpsc::UnboundedReceiver<Signal>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let reason = loop {
            let signal = tokio::select! {
                biased;
                _ = &mut stop => break "closed locally".to_owned(),
                signal = signals.recv() => signal,
            };
            match signal {
                None => break "peer connection stopped".to_owned(),
                Some(Signal::Candidate(candidate)) => {
                    if self.mid.is_none() {
                        self.mid = self
                            .pc
                            .local_description()
                            .await
                            .and_then(|d| first_mid(&d.sdp));
                    }
                    if let Some(c) = from_rtc_candidate(&candidate, self.mid.as_deref()) {
                        let _ = self.events.send(PeerEvent::LocalCandidate(Some(c)));
                    }
                }
                Some(Signal::GatheringComplete) => {
                    let _ = self.events.send(PeerEvent::LocalCandidate(None));
                }
                Some(Signal::State(state)) => {
                    debug!(%state, "peer connection state");
                    match state {
                        RTCPeerConnectionState::Connected => {
                            let path = selected_path(&*self.pc).await;
                            *self.path.lock().unwrap_or_else(|e| e.into_inner()) = path;
                            self.pacing
                                .relayed
                                .store(path == PathKind::Relay, Ordering::Relaxed);
                            info!(%path, "peer connection up");
                            let _ = self.events.send(PeerEvent::Connected(path));
                        }
                        RTCPeerConnectionState::Failed => {
                            break "ICE or DTLS failed".to_owned();
                        }
                        RTCPeerConnectionState::Closed => {
                            break "peer connection closed".to_owned();
                        }
                        _ => {}
                    }
                }
                Some(Signal::DataChannel(dc)) => {
                    let label = dc.label().await.unwrap_or_default();
                    match self.channel_slot.take() {
                        Some(slot) if label == DATA_CHANNEL_LABEL => {
                            tokio::spawn(open(
                                dc,
                                slot,
                                self.pump_stop_rx.clone(),
                                self.pacing.clone(),
                            ));
                        }
                        slot => {
                            self.channel_slot = slot;
                            warn!(%label, "closing an unexpected data channel");
                            let _ = dc.close().await;
                        }
                    }
                }
            }
        };
        debug!(%reason, "closing peer connection");
        self.pacing.setting_up.store(false, Ordering::Relaxed);
        let _ = self.pump_stop.send(true);
        let _ = self.pc.close().await;
        let _ = self.events.send(PeerEvent::Closed(reason));
    }
}

/// Whether the selected candidate pair goes through a relay.
async fn selected_path(pc: &dyn PeerConnection) -> PathKind {
    let Some(sctp) = pc.sctp().await else {
        return PathKind::Unknown;
    };
    let ice = sctp.transport().ice_transport();
    match ice.get_selected_candidate_pair().await {
        Ok(Some(pair)) => {
            debug!(%pair, "selected candidate pair");
            if pair.local().typ == RTCIceCandidateType::Relay
                || pair.remote().typ == RTCIceCandidateType::Relay
            {
                PathKind::Relay
            } else {
                PathKind::Direct
            }
        }
        Ok(None) => PathKind::Unknown,
        Err(e) => {
            debug!(error = %e, "no selected candidate pair");
            PathKind::Unknown
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Data channel.
// ---------------------------------------------------------------------------------------------

/// Whether the channel is known to be closed, shared by its two halves.
struct ChannelState {
    closed: AtomicBool,
    closed_notify: Notify,
}

impl ChannelState {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.closed_notify.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Why a data channel never opened.
#[derive(Debug, PartialEq, Eq)]
enum OpenFailed {
    Closed,
    TooManyEarlyMessages,
}

/// Takes a channel's events until its open event, keeping the messages that come first.
///
/// The remote end may send as soon as its own end is open, and webrtc-rs can hand over a
/// message before it reports this end's open (seen on a relayed path). Such messages are the
/// first bytes of the tunnel (the peer's HELLO), so they are kept, in order, for the reader;
/// dropping them broke the tunnel's handshake.
async fn await_open<F, Fut>(mut next_event: F) -> Result<VecDeque<Bytes>, OpenFailed>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<DataChannelEvent>>,
{
    let mut early = VecDeque::new();
    loop {
        match next_event().await {
            None | Some(DataChannelEvent::OnClose) => return Err(OpenFailed::Closed),
            Some(DataChannelEvent::OnOpen) => return Ok(early),
            Some(DataChannelEvent::OnMessage(msg)) => {
                if early.len() >= MAX_EARLY_MESSAGES {
                    return Err(OpenFailed::TooManyEarlyMessages);
                }
                debug!("message received before the channel opened; kept for the reader");
                early.push_back(msg.data.freeze());
            }
            Some(_) => {}
        }
    }
}

/// Waits for the channel to open, then hands it over as a [`MessageChannel`]. Ends early
/// (dropping `ready`, which fails [`PeerSession::data_channel`]) when the channel or the
/// connection closes first.
async fn open(
    dc: Arc<dyn DataChannel>,
    mut ready: oneshot::Sender<MessageChannel>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    pacing: Arc<Pacing>,
) {
    let opened = tokio::select! {
        biased;
        _ = stop.wait_for(|stopped| *stopped) => return,
        _ = ready.closed() => return,
        opened = await_open(|| dc.poll()) => opened,
    };
    let early = match opened {
        Ok(early) => early,
        Err(OpenFailed::Closed) => return,
        Err(OpenFailed::TooManyEarlyMessages) => {
            warn!("peer sent too many messages before the channel opened; closing it");
            let _ = dc.close().await;
            return;
        }
    };
    let tail = pacing.clone();
    tokio::spawn(async move {
        tokio::time::sleep(SETUP_TICK_TAIL).await;
        tail.setting_up.store(false, Ordering::Relaxed);
    });
    let state = Arc::new(ChannelState {
        closed: AtomicBool::new(false),
        closed_notify: Notify::new(),
    });
    let channel = MessageChannel {
        sink: Box::new(WebrtcSink {
            dc: dc.clone(),
            state: state.clone(),
            pacing,
        }),
        source: Box::new(WebrtcSource { dc, state, early }),
    };
    // Fails only if the session is gone; dropping the channel then is all there is to do.
    let _ = ready.send(channel);
}

struct WebrtcSink {
    dc: Arc<dyn DataChannel>,
    state: Arc<ChannelState>,
    pacing: Arc<Pacing>,
}

#[async_trait]
impl MessageSink for WebrtcSink {
    async fn send(&mut self, msg: Bytes) -> Result<(), ChannelClosed> {
        let closed = self.state.closed_notify.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        if self.state.is_closed() {
            return Err(ChannelClosed);
        }
        let data = msg
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        // Before the driver wakes for it, so that it keeps its sleeps short until the
        // packets this message becomes have left (see `Pacing`).
        self.pacing.touch();
        // `send` parks while the channel is over its send-buffer limit, woken by the driver
        // as SCTP releases acknowledged bytes; it fails once the channel or the connection is
        // closed. The notification cuts the wait short when the source sees the close first.
        tokio::select! {
            result = self.dc.send(data) => result.map_err(|e| {
                debug!(error = %e, "data channel send failed");
                self.state.close();
                ChannelClosed
            }),
            _ = closed => Err(ChannelClosed),
        }
    }

    async fn close(&mut self) {
        self.state.close();
        let _ = self.dc.close().await;
    }
}

/// Reads the channel's events directly: a slow reader leaves them with the driver, which
/// then stops draining SCTP, and the shrinking receive window throttles the peer.
struct WebrtcSource {
    dc: Arc<dyn DataChannel>,
    state: Arc<ChannelState>,
    /// Messages that arrived before the open event, delivered before any later one.
    early: VecDeque<Bytes>,
}

#[async_trait]
impl MessageSource for WebrtcSource {
    async fn recv(&mut self) -> Option<Bytes> {
        if let Some(msg) = self.early.pop_front() {
            return Some(msg);
        }
        loop {
            // Cancel-safe: an event is only taken from the queue when `poll` completes.
            match self.dc.poll().await {
                Some(DataChannelEvent::OnMessage(msg)) => return Some(msg.data.freeze()),
                None | Some(DataChannelEvent::OnClose) => {
                    self.state.close();
                    return None;
                }
                Some(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_and_tls_turn_urls_are_skipped() {
        let servers = vec![
            IceServer {
                urls: vec![
                    "turn:relay.example:3478?transport=tcp".into(),
                    "turns:relay.example:5349".into(),
                    "turn:relay.example:3478?transport=udp".into(),
                    "stun:relay.example:3478".into(),
                ],
                username: Some("1:a".into()),
                credential: Some("pw".into()),
            },
            IceServer {
                urls: vec!["TURN:relay.example:3478?transport=TCP".into()],
                username: None,
                credential: None,
            },
        ];
        let out = ice_servers(&servers);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].urls,
            vec![
                "turn:relay.example:3478?transport=udp".to_owned(),
                "stun:relay.example:3478".to_owned()
            ]
        );
        assert_eq!(out[0].username, "1:a");
        assert_eq!(out[0].credential, "pw");
    }

    #[test]
    fn candidates_keep_the_browser_fields() {
        let c = IceCandidate {
            candidate: "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: Some("abcd".into()),
        };
        let r = to_rtc_candidate(c.clone());
        assert_eq!(r.candidate, c.candidate);
        assert_eq!(r.sdp_mid.as_deref(), Some("0"));
        assert_eq!(r.sdp_mline_index, Some(0));
        assert_eq!(r.username_fragment.as_deref(), Some("abcd"));
    }

    #[test]
    fn first_mid_is_found() {
        let sdp = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n";
        assert_eq!(first_mid(sdp).as_deref(), Some("0"));
        assert_eq!(first_mid("v=0\r\n"), None);
    }

    fn message(data: &[u8]) -> DataChannelEvent {
        DataChannelEvent::OnMessage(webrtc::data_channel::RTCDataChannelMessage {
            is_string: false,
            data: BytesMut::from(data),
        })
    }

    async fn await_open_over(events: Vec<DataChannelEvent>) -> Result<VecDeque<Bytes>, OpenFailed> {
        let mut events = events.into_iter();
        await_open(|| std::future::ready(events.next())).await
    }

    #[tokio::test]
    async fn messages_arriving_before_the_open_event_are_kept_in_order() {
        let early = await_open_over(vec![
            message(b"hello"),
            DataChannelEvent::OnBufferedAmountLow,
            message(b"pong"),
            DataChannelEvent::OnOpen,
            message(b"after"),
        ])
        .await
        .expect("the channel opens");
        assert_eq!(
            early,
            [Bytes::from_static(b"hello"), Bytes::from_static(b"pong")]
        );
    }

    #[tokio::test]
    async fn a_channel_that_closes_before_opening_fails_to_open() {
        let closed = await_open_over(vec![message(b"hello"), DataChannelEvent::OnClose]).await;
        assert_eq!(closed, Err(OpenFailed::Closed));
        assert_eq!(await_open_over(vec![]).await, Err(OpenFailed::Closed));
    }

    #[tokio::test]
    async fn a_flood_before_the_open_event_is_refused_not_buffered() {
        let mut events: Vec<_> = (0..=MAX_EARLY_MESSAGES).map(|_| message(b"x")).collect();
        events.push(DataChannelEvent::OnOpen);
        assert_eq!(
            await_open_over(events).await,
            Err(OpenFailed::TooManyEarlyMessages)
        );
    }
}
