//! The embedded STUN/TURN relay (UDP), built on the `turn` crate.
//!
//! It accepts the time-limited credentials burrowd mints ([`burrow_proto::turn_auth`]), so it
//! needs no per-session state, and it refuses to relay to loopback, private and link-local
//! peers unless told otherwise: a relay that forwards to whatever address a client names
//! would let any credential holder reach the relay host's internal network.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use burrow_proto::turn_auth::{self, TurnAuthError};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use turn::auth::{AuthHandler, generate_auth_key};
use turn::relay::RelayAddressGenerator;
use turn::server::Server;
use turn::server::config::{ConnConfig, ServerConfig as TurnServerConfig};
use webrtc_util::Conn;

/// The realm the relay announces; clients echo it back in their requests.
pub const REALM: &str = "burrow";

/// File (in the data directory) holding the secret shared by burrowd and the relay.
pub const SECRET_FILE: &str = "turn_secret";

/// How long a refused credential is not audited again: a client retries its allocation
/// several times, and each retry is not news.
const REFUSAL_AUDIT_QUIET: Duration = Duration::from_secs(60);

/// Most refused usernames remembered for [`REFUSAL_AUDIT_QUIET`] (bounds memory under a flood).
const REFUSAL_MEMORY: usize = 1024;

/// Most peers remembered for warn-once logging.
const WARNED_PEERS_MEMORY: usize = 1024;

/// How long after its last use an expired credential keeps working from the transport
/// address that used it while it was valid.
///
/// TURN clients (turn 0.17's, Chrome's) keep the Allocate's username for every later Refresh,
/// CreatePermission and ChannelBind of that allocation, and refresh permissions every two
/// minutes. Expiry must therefore gate new allocations, not the upkeep of a live one:
/// refusing it killed relayed tunnels once their credential (10 minutes by default) ran out.
const HELD_CREDENTIAL_IDLE: Duration = Duration::from_secs(15 * 60);

/// At most this many (username, address) pairs are held; past it, stale ones are dropped
/// and new ones are not held (their allocations then end when the credential does).
const HELD_CREDENTIALS_MEMORY: usize = 65_536;

/// How to run the embedded relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// UDP address to listen on for STUN/TURN.
    pub listen: SocketAddr,
    /// Address put in relayed candidates and ICE server URLs; defaults to `listen`'s IP.
    pub relay_ip: Option<IpAddr>,
    /// Relay to loopback, private and link-local peers too. Dangerous outside tests and
    /// single-host demos: it opens the relay host's internal network to credential holders.
    pub allow_private_peers: bool,
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The listening socket could not be bound.
    #[error("binding the relay's UDP socket on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The relay would announce an address nobody can reach.
    #[error(
        "the relay listens on the wildcard address {0}; pass --relay-ip with the address clients should use"
    )]
    NeedRelayIp(SocketAddr),
    /// The `turn` crate refused the configuration.
    #[error("starting the TURN server: {0}")]
    Turn(#[from] turn::Error),
}

/// A credential the relay refused, for the audit log.
#[derive(Debug, Clone)]
pub struct TurnRefusal {
    /// The username presented (a claim: its signature was never checked).
    pub username: String,
    /// Why it was refused.
    pub reason: TurnAuthError,
    /// Where the request came from.
    pub remote: SocketAddr,
    /// When, Unix milliseconds.
    pub at_ms: i64,
}

impl TurnRefusal {
    /// The audit log's outcome text for this refusal.
    pub fn outcome(&self) -> &'static str {
        match self.reason {
            TurnAuthError::Expired { .. } => "refused: turn credential expired",
            TurnAuthError::Malformed => "refused: turn credential malformed",
        }
    }

    /// The session the username names, if it has the shape burrowd mints
    /// (`<expiry>:<session id>` or `<expiry>:<session id>:agent`).
    pub fn claimed_session_id(&self) -> Option<&str> {
        let (_, id) = self.username.split_once(':')?;
        let id = id.strip_suffix(":agent").unwrap_or(id);
        (!id.is_empty()).then_some(id)
    }
}

/// A running embedded relay.
pub struct Relay {
    server: Server,
    local_addr: SocketAddr,
    advertised: SocketAddr,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("local_addr", &self.local_addr)
            .field("advertised", &self.advertised)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Binds the relay and starts serving. Refused credentials are sent on `refusals`
    /// (dropped, not waited for, when the channel is full).
    pub async fn start(
        config: &RelayConfig,
        secret: Arc<[u8]>,
        refusals: mpsc::Sender<TurnRefusal>,
    ) -> Result<Self, RelayError> {
        let relay_ip = match config.relay_ip {
            Some(ip) => ip,
            None if config.listen.ip().is_unspecified() => {
                return Err(RelayError::NeedRelayIp(config.listen));
            }
            None => config.listen.ip(),
        };
        let socket = bind_udp(config.listen).map_err(|source| RelayError::Bind {
            addr: config.listen,
            source,
        })?;
        let local_addr = socket.local_addr().map_err(|source| RelayError::Bind {
            addr: config.listen,
            source,
        })?;
        if config.allow_private_peers {
            warn!("the relay will forward to loopback, private and link-local peers");
        }
        let generator = FilteringRelayGenerator {
            bind_ip: config.listen.ip(),
            relay_ip,
            allow_private_peers: config.allow_private_peers,
            warned: Arc::new(WarnOnce::default()),
        };
        let auth = SecretAuthHandler::new(secret, refusals);
        let server = Server::new(TurnServerConfig {
            conn_configs: vec![ConnConfig {
                conn: Arc::new(socket),
                relay_addr_generator: Box::new(generator),
            }],
            realm: REALM.to_owned(),
            auth_handler: Arc::new(auth),
            // Zero selects the crate's default (10 minutes).
            channel_bind_timeout: Duration::ZERO,
            alloc_close_notify: None,
        })
        .await?;
        let advertised = SocketAddr::new(relay_ip, local_addr.port());
        info!(%local_addr, %advertised, "embedded STUN/TURN relay listening (UDP)");
        Ok(Self {
            server,
            local_addr,
            advertised,
        })
    }

    /// The address the relay's socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address clients are told to use (relay IP, bound port).
    pub fn advertised_addr(&self) -> SocketAddr {
        self.advertised
    }

    /// Stops the relay and its allocations.
    pub async fn close(&self) {
        if let Err(e) = self.server.close().await {
            debug!(error = %e, "closing the relay");
        }
    }
}

/// Reads the relay secret from `data_dir`, creating it (mode 0600) on first start.
///
/// The secret is text (base64url of 32 random bytes) and its bytes are the HMAC key, as with
/// coturn's `static-auth-secret`, so the same file can configure an external coturn.
pub fn load_or_create_secret(data_dir: &Path) -> io::Result<Arc<[u8]>> {
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = text.trim();
            if text.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(Arc::from(text.as_bytes()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let secret = crate::secret::generate("");
            write_private_file(&path, secret.as_bytes())?;
            info!(path = %path.display(), "created a new relay secret");
            Ok(Arc::from(secret.as_bytes()))
        }
        Err(e) => Err(e),
    }
}

fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Whether the relay may exchange packets with `ip`.
///
/// Unspecified, multicast and broadcast addresses are never peers. Loopback, private
/// (RFC 1918, unique-local), shared (RFC 6598) and link-local addresses are peers only with
/// `allow_private`. IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
pub fn peer_allowed(ip: IpAddr, allow_private: bool) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let (never, internal) = match ip {
        IpAddr::V4(a) => (
            a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.octets()[0] == 0,
            a.is_loopback() || a.is_private() || a.is_link_local() || is_shared_v4(a),
        ),
        IpAddr::V6(a) => (
            a.is_unspecified() || a.is_multicast(),
            a.is_loopback() || is_unique_local_v6(a) || is_link_local_v6(a),
        ),
    };
    !never && (allow_private || !internal)
}

fn is_shared_v4(a: Ipv4Addr) -> bool {
    // 100.64.0.0/10, carrier-grade NAT: internal to some provider's network.
    let o = a.octets();
    o[0] == 100 && (o[1] & 0xc0) == 64
}

fn is_unique_local_v6(a: Ipv6Addr) -> bool {
    (a.segments()[0] & 0xfe00) == 0xfc00
}

fn is_link_local_v6(a: Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

/// Logs a refused peer once, not once per packet.
#[derive(Default)]
struct WarnOnce {
    seen: Mutex<HashSet<IpAddr>>,
}

impl WarnOnce {
    fn refused(&self, peer: SocketAddr, direction: &str) {
        let first = match self.seen.lock() {
            Ok(mut seen) if seen.len() < WARNED_PEERS_MEMORY => seen.insert(peer.ip()),
            Ok(seen) => {
                !seen.contains(&peer.ip()) && {
                    debug!("too many refused peers to remember; logging at debug from now on");
                    false
                }
            }
            Err(_) => false,
        };
        if first {
            warn!(%peer, direction, "relay refused a private, loopback or link-local peer (see --relay-danger-allow-private-peers)");
        } else {
            debug!(%peer, direction, "relay refused a peer");
        }
    }
}

/// Hands each allocation a relay socket wrapped in [`FilteredConn`].
struct FilteringRelayGenerator {
    bind_ip: IpAddr,
    relay_ip: IpAddr,
    allow_private_peers: bool,
    warned: Arc<WarnOnce>,
}

#[async_trait]
impl RelayAddressGenerator for FilteringRelayGenerator {
    fn validate(&self) -> Result<(), turn::Error> {
        Ok(())
    }

    async fn allocate_conn(
        &self,
        _use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        let socket = bind_udp(SocketAddr::new(self.bind_ip, requested_port))
            .map_err(|e| turn::Error::Other(format!("binding a relay socket: {e}")))?;
        let mut relay_addr = socket
            .local_addr()
            .map_err(|e| turn::Error::Other(format!("relay socket address: {e}")))?;
        relay_addr.set_ip(self.relay_ip);
        let conn = FilteredConn {
            inner: socket,
            allow_private: self.allow_private_peers,
            warned: Arc::clone(&self.warned),
        };
        Ok((Arc::new(conn), relay_addr))
    }
}

/// A relay socket that neither sends to nor accepts from peers [`peer_allowed`] refuses.
pub struct FilteredConn {
    inner: UdpSocket,
    allow_private: bool,
    warned: Arc<WarnOnce>,
}

impl FilteredConn {
    fn check(&self, peer: SocketAddr, direction: &str) -> Result<(), webrtc_util::Error> {
        if peer_allowed(peer.ip(), self.allow_private) {
            Ok(())
        } else {
            self.warned.refused(peer, direction);
            Err(webrtc_util::Error::Other(format!(
                "relaying to {peer} is not allowed"
            )))
        }
    }
}

#[async_trait]
impl Conn for FilteredConn {
    async fn connect(&self, addr: SocketAddr) -> Result<(), webrtc_util::Error> {
        self.check(addr, "connect")?;
        Conn::connect(&self.inner, addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> Result<usize, webrtc_util::Error> {
        // Only a connected socket receives this way, and `connect` checked its peer.
        Conn::recv(&self.inner, buf).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), webrtc_util::Error> {
        loop {
            let (n, from) = Conn::recv_from(&self.inner, buf).await?;
            // Dropped, not an error: an error would end the allocation's read loop, and
            // anyone can send a datagram to a relay port.
            if self.check(from, "inbound").is_ok() {
                return Ok((n, from));
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> Result<usize, webrtc_util::Error> {
        Conn::send(&self.inner, buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> Result<usize, webrtc_util::Error> {
        self.check(target, "outbound")?;
        Conn::send_to(&self.inner, buf, target).await
    }

    fn local_addr(&self) -> Result<SocketAddr, webrtc_util::Error> {
        Conn::local_addr(&self.inner)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Conn::remote_addr(&self.inner)
    }

    async fn close(&self) -> Result<(), webrtc_util::Error> {
        Conn::close(&self.inner).await
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// Verifies burrowd's TURN REST usernames.
///
/// It only checks the expiry and derives the key; the `turn` crate then checks the request's
/// MESSAGE-INTEGRITY with that key, which proves the username was minted with the secret.
struct SecretAuthHandler {
    secret: Arc<[u8]>,
    refusals: mpsc::Sender<TurnRefusal>,
    /// Usernames refused lately, so that retries are not audited again.
    recent: Mutex<RecentKeys<String>>,
    /// Credentials that authenticated while valid, by the address that used them, with
    /// their last use: see [`HELD_CREDENTIAL_IDLE`].
    held: Mutex<RecentKeys<(String, SocketAddr)>>,
}

/// Keys with when they were last seen, for a bounded time and in bounded number: past
/// `capacity`, keys unseen for `idle` are forgotten, and a new key is not recorded while
/// the recent ones still fill it (a flood of distinct keys must not grow the map).
#[derive(Debug)]
struct RecentKeys<K> {
    seen: HashMap<K, Instant>,
    idle: Duration,
    capacity: usize,
}

impl<K: Eq + std::hash::Hash> RecentKeys<K> {
    fn new(idle: Duration, capacity: usize) -> Self {
        Self {
            seen: HashMap::new(),
            idle,
            capacity,
        }
    }

    /// Whether `key` was seen less than `idle` before `now`.
    fn is_recent<Q>(&self, key: &Q, now: Instant) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ?Sized,
    {
        self.seen
            .get(key)
            .is_some_and(|at| now.duration_since(*at) < self.idle)
    }

    /// Records `key` as seen at `now`; false if it is new and there is no room for it.
    fn touch(&mut self, key: K, now: Instant) -> bool {
        if self.seen.len() >= self.capacity && !self.seen.contains_key(&key) {
            let idle = self.idle;
            self.seen.retain(|_, at| now.duration_since(*at) < idle);
            if self.seen.len() >= self.capacity {
                return false;
            }
        }
        self.seen.insert(key, now);
        true
    }
}

impl SecretAuthHandler {
    fn new(secret: Arc<[u8]>, refusals: mpsc::Sender<TurnRefusal>) -> Self {
        Self {
            secret,
            refusals,
            recent: Mutex::new(RecentKeys::new(REFUSAL_AUDIT_QUIET, REFUSAL_MEMORY)),
            held: Mutex::new(RecentKeys::new(
                HELD_CREDENTIAL_IDLE,
                HELD_CREDENTIALS_MEMORY,
            )),
        }
    }

    /// The password `username` must prove when used from `src_addr`: a valid credential's,
    /// or an expired one's if this address used it while valid and has kept using it.
    fn authorize(
        &self,
        username: &str,
        src_addr: SocketAddr,
        now_unix: u64,
        now: Instant,
    ) -> Result<String, TurnAuthError> {
        let Ok(mut held) = self.held.lock() else {
            return turn_auth::verify(&self.secret, username, now_unix);
        };
        let key = (username.to_owned(), src_addr);
        match turn_auth::verify(&self.secret, username, now_unix) {
            Ok(password) => {
                if !held.touch(key, now) {
                    debug!("too many held TURN credentials; this one ends at its expiry");
                }
                Ok(password)
            }
            Err(TurnAuthError::Expired { .. }) if held.is_recent(&key, now) => {
                held.touch(key, now);
                Ok(turn_auth::password_for(&self.secret, username))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether this refusal is news (not a retry of one reported lately).
    fn should_report(&self, username: &str) -> bool {
        let Ok(mut recent) = self.recent.lock() else {
            return false;
        };
        let now = Instant::now();
        // A flood of distinct usernames fills the map: it stops being audited rather than grow.
        !recent.is_recent(username, now) && recent.touch(username.to_owned(), now)
    }
}

impl AuthHandler for SecretAuthHandler {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        src_addr: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        match self.authorize(username, src_addr, now.as_secs(), Instant::now()) {
            Ok(password) => Ok(generate_auth_key(username, realm, &password)),
            Err(reason) => {
                info!(%username, %src_addr, %reason, "relay refused a credential");
                if self.should_report(username) {
                    let refusal = TurnRefusal {
                        username: username.to_owned(),
                        reason: reason.clone(),
                        remote: src_addr,
                        at_ms: i64::try_from(now.as_millis()).unwrap_or(i64::MAX),
                    };
                    if self.refusals.try_send(refusal).is_err() {
                        warn!("audit queue full; a TURN refusal was not recorded");
                    }
                }
                Err(turn::Error::Other(reason.to_string()))
            }
        }
    }
}

/// Socket buffer size asked for on every relay socket. With the kernel default (about
/// 200 KiB) bursts of a data channel overflow it, SCTP sees loss and relayed throughput falls
/// by an order of magnitude; the kernel caps the request at `net.core.rmem_max`.
const RELAY_SOCKET_BUFFER: usize = 8 * 1024 * 1024;

/// Binds a non-blocking UDP socket with large buffers, for the tokio runtime.
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: a smaller buffer still works, only slower under load.
    let _ = socket.set_recv_buffer_size(RELAY_SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(RELAY_SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn private_loopback_and_link_local_peers_are_refused_by_default() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!peer_allowed(ip(a), false), "{a} should be refused");
            assert!(
                peer_allowed(ip(a), true),
                "{a} should be allowed when private peers are"
            );
        }
    }

    #[test]
    fn public_peers_are_allowed() {
        for a in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2001:4860:4860::8888",
        ] {
            assert!(peer_allowed(ip(a), false), "{a}");
        }
    }

    #[test]
    fn unspecified_multicast_and_broadcast_are_never_peers() {
        for a in [
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "ff02::1",
        ] {
            assert!(!peer_allowed(ip(a), true), "{a}");
        }
    }

    #[test]
    fn refusal_names_the_session_it_claims() {
        let r = |u: &str| TurnRefusal {
            username: u.into(),
            reason: TurnAuthError::Malformed,
            remote: "127.0.0.1:1".parse().expect("addr"),
            at_ms: 0,
        };
        assert_eq!(r("10:abc").claimed_session_id(), Some("abc"));
        assert_eq!(r("10:abc:agent").claimed_session_id(), Some("abc"));
        assert_eq!(r("nocolon").claimed_session_id(), None);
        assert_eq!(r("10:").claimed_session_id(), None);
    }

    #[tokio::test]
    async fn filtered_conn_refuses_to_send_to_loopback_unless_allowed() {
        let target = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let target_addr = target.local_addr().expect("addr");
        for allow in [false, true] {
            let conn = FilteredConn {
                inner: UdpSocket::bind("127.0.0.1:0").await.expect("bind"),
                allow_private: allow,
                warned: Arc::new(WarnOnce::default()),
            };
            let sent = conn.send_to(b"hi", target_addr).await;
            assert_eq!(sent.is_ok(), allow, "allow_private={allow}");
        }
        let mut buf = [0u8; 8];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), target.recv_from(&mut buf))
            .await
            .expect("the allowed datagram arrives")
            .expect("recv");
        assert_eq!(&buf[..n], b"hi");
    }

    #[tokio::test]
    async fn filtered_conn_drops_datagrams_from_refused_peers() {
        let conn = FilteredConn {
            inner: UdpSocket::bind("127.0.0.1:0").await.expect("bind"),
            allow_private: false,
            warned: Arc::new(WarnOnce::default()),
        };
        let addr = conn.inner.local_addr().expect("addr");
        let sender = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        sender.send_to(b"sneaky", addr).await.expect("send");
        let mut buf = [0u8; 8];
        let got = tokio::time::timeout(Duration::from_millis(300), conn.recv_from(&mut buf)).await;
        assert!(
            got.is_err(),
            "a datagram from a loopback peer must not be delivered"
        );
    }

    fn handler() -> SecretAuthHandler {
        let (tx, _rx) = mpsc::channel(8);
        SecretAuthHandler::new(Arc::from(&b"relay-secret"[..]), tx)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn recent_keys_refuse_a_new_key_while_full_and_make_room_from_stale_ones() {
        let idle = Duration::from_secs(60);
        let mut keys = RecentKeys::new(idle, 2);
        let t0 = Instant::now();
        assert!(keys.touch("a", t0));
        assert!(keys.touch("b", t0 + Duration::from_secs(30)));
        assert!(
            !keys.touch("c", t0 + Duration::from_secs(40)),
            "full of recent keys"
        );
        assert!(
            keys.touch("a", t0 + Duration::from_secs(40)),
            "a known key is updated"
        );
        assert!(keys.is_recent("a", t0 + Duration::from_secs(90)));
        assert!(!keys.is_recent("b", t0 + Duration::from_secs(90)));
        assert!(keys.touch("c", t0 + Duration::from_secs(95)), "b was stale");
        assert!(!keys.is_recent("b", t0 + Duration::from_secs(95)));
    }

    #[test]
    fn expired_credential_keeps_working_from_the_address_that_used_it_while_valid() {
        let auth = handler();
        let cred = turn_auth::TurnCredential::mint(b"relay-secret", "s1", 1_000);
        let t0 = Instant::now();
        let client = addr("127.0.0.1:40000");
        assert_eq!(
            auth.authorize(&cred.username, client, 900, t0),
            Ok(cred.password.clone())
        );
        // Permission refreshes every two minutes, long after the expiry.
        for i in 1..=10u32 {
            let at = t0 + Duration::from_secs(120) * i;
            assert_eq!(
                auth.authorize(&cred.username, client, 1_000 + 120 * u64::from(i), at),
                Ok(cred.password.clone()),
                "refresh {i}"
            );
        }
    }

    #[test]
    fn expired_credential_is_refused_from_another_address() {
        let auth = handler();
        let cred = turn_auth::TurnCredential::mint(b"relay-secret", "s1", 1_000);
        let t0 = Instant::now();
        assert!(
            auth.authorize(&cred.username, addr("127.0.0.1:40000"), 900, t0)
                .is_ok()
        );
        assert!(matches!(
            auth.authorize(&cred.username, addr("127.0.0.1:40001"), 1_001, t0),
            Err(TurnAuthError::Expired { .. })
        ));
    }

    #[test]
    fn expired_credential_never_used_while_valid_is_refused() {
        let auth = handler();
        let cred = turn_auth::TurnCredential::mint(b"relay-secret", "s1", 1_000);
        assert!(matches!(
            auth.authorize(
                &cred.username,
                addr("127.0.0.1:40000"),
                1_001,
                Instant::now()
            ),
            Err(TurnAuthError::Expired { .. })
        ));
    }

    #[test]
    fn held_credential_lapses_when_left_unused() {
        let auth = handler();
        let cred = turn_auth::TurnCredential::mint(b"relay-secret", "s1", 1_000);
        let t0 = Instant::now();
        let client = addr("127.0.0.1:40000");
        assert!(auth.authorize(&cred.username, client, 900, t0).is_ok());
        let later = t0 + HELD_CREDENTIAL_IDLE + Duration::from_secs(1);
        assert!(matches!(
            auth.authorize(&cred.username, client, 5_000, later),
            Err(TurnAuthError::Expired { .. })
        ));
    }

    #[test]
    fn secret_file_is_created_private_and_reused() {
        let dir =
            std::env::temp_dir().join(format!("burrowd-secret-{}", crate::secret::generate_id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let a = load_or_create_secret(&dir).expect("create");
        let b = load_or_create_secret(&dir).expect("load");
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join(SECRET_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
