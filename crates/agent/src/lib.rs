//! The workspace agent: registers with burrowd over an outbound WebSocket, answers each
//! session's offer with a peer connection, and serves the tunnel's streams by dialling
//! allowed local ports. A session burrowd restricts to some ports (an app's session, for a
//! browser origin of that app alone) reaches only those of them the agent allows, and not
//! the agent's speed test.
//!
//! It opens no listening socket. A session, once connected, depends on burrowd for nothing:
//! if burrowd goes away the agent keeps serving its tunnels, reconnects with backoff, and then
//! sends the stream reports it queued meanwhile.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use burrow_peer::stack::{PeerConfig, PeerEvent, PeerSession, PeerStack};
use burrow_peer::tunnel::{self, StreamRecord, TunnelConfig};
use burrow_proto::signal::{
    AGENT_CONNECT_PATH, AgentToServer, ApiError, ErrorCode, IceCandidate, PathKind, SIGNAL_VERSION,
    ServerToAgent, SessionId, StreamReport,
};
use burrow_proto::speedtest::SPEEDTEST_PORT;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest, http};
use tracing::{debug, error, info, warn};

/// How long the agent waits for an offer after burrowd announced a session, and for a
/// peer connection to come up after answering.
const SESSION_SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// burrowd pings every 15 s; this much silence means the connection is dead.
const SERVER_SILENCE_TIMEOUT: Duration = Duration::from_secs(45);
/// Unacknowledged stream reports kept while burrowd is away; the oldest go first past this.
const MAX_PENDING_REPORTS: usize = 10_000;
/// Largest signaling message accepted from burrowd.
const MAX_SIGNAL_MESSAGE: usize = 256 * 1024;

/// What the agent needs to run.
#[derive(Clone)]
pub struct AgentConfig {
    /// burrowd's base URL (`http://host:port`).
    pub url: String,
    /// The workspace's agent token.
    pub token: String,
    /// Local ports clients may reach; every other port is refused.
    pub allowed_ports: Vec<u16>,
    /// Host the agent dials for allowed ports.
    pub dial_host: IpAddr,
    /// Tunnel flow-control settings.
    pub tunnel: TunnelConfig,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("allowed_ports", &self.allowed_ports)
            .field("dial_host", &self.dial_host)
            .finish_non_exhaustive()
    }
}

/// Errors that stop the agent for good (everything else is retried).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// burrowd refused the agent token.
    #[error("burrowd refused the agent token (HTTP {0}); check --token")]
    Unauthorized(u16),
    /// The URL cannot be used.
    #[error("bad burrowd URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why it is unusable.
        reason: String,
    },
}

/// Why one connection to burrowd ended.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Fatal(#[from] AgentError),
    #[error("{0}")]
    Transient(String),
}

/// The agent; see the crate docs.
pub struct Agent {
    shared: Arc<Shared>,
    outbox_rx: mpsc::UnboundedReceiver<AgentToServer>,
}

struct Shared {
    config: AgentConfig,
    stack: Arc<dyn PeerStack>,
    outbox: mpsc::UnboundedSender<AgentToServer>,
    sessions: Mutex<HashMap<SessionId, mpsc::UnboundedSender<SessionCommand>>>,
    pending_reports: Mutex<BTreeMap<(SessionId, u32), StreamReport>>,
}

enum SessionCommand {
    Offer(String),
    Candidate(IceCandidate),
}

/// Which stream ports one session's tunnel serves.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PortPolicy {
    ports: HashSet<u16>,
    speedtest: bool,
}

impl PortPolicy {
    /// The agent's `allowed` ports, narrowed to `only` when burrowd restricted the session
    /// (an app's session). A restricted session gets no speed test: it is a stream like
    /// any other to the app's page, and nothing the app needs.
    fn for_session(allowed: &[u16], only: Option<&[u16]>) -> Self {
        let allowed = allowed.iter().copied().filter(|&p| p != SPEEDTEST_PORT);
        match only {
            None => Self {
                ports: allowed.collect(),
                speedtest: true,
            },
            Some(only) => Self {
                ports: allowed.filter(|p| only.contains(p)).collect(),
                speedtest: false,
            },
        }
    }

    fn allows(&self, port: u16) -> bool {
        if port == SPEEDTEST_PORT {
            self.speedtest
        } else {
            self.ports.contains(&port)
        }
    }
}

impl Agent {
    /// Creates an agent that makes its peer connections with `stack`.
    pub fn new(config: AgentConfig, stack: Arc<dyn PeerStack>) -> Self {
        let (outbox, outbox_rx) = mpsc::unbounded_channel();
        Self {
            shared: Arc::new(Shared {
                config,
                stack,
                outbox,
                sessions: Mutex::new(HashMap::new()),
                pending_reports: Mutex::new(BTreeMap::new()),
            }),
            outbox_rx,
        }
    }

    /// Runs until burrowd refuses the token for good; connection losses are retried with
    /// exponential backoff and jitter, and established tunnels keep running meanwhile.
    pub async fn run(mut self) -> Result<(), AgentError> {
        let url = agent_ws_url(&self.shared.config.url)?;
        let mut backoff = Duration::from_millis(250);
        loop {
            let started = tokio::time::Instant::now();
            match self.connect_once(&url).await {
                Err(ConnectionError::Fatal(e)) => return Err(e),
                Err(ConnectionError::Transient(reason)) => {
                    warn!(%reason, "lost burrowd; reconnecting in {:?}", backoff);
                }
                Ok(()) => info!("burrowd closed the connection; reconnecting"),
            }
            if started.elapsed() > Duration::from_secs(30) {
                // The connection had been healthy for a while: start over quickly.
                backoff = Duration::from_millis(250);
            }
            let jitter =
                Duration::from_millis(rand::random_range(0..=backoff.as_millis() as u64 / 4));
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(self.shared.config.max_backoff);
        }
    }

    async fn connect_once(&mut self, url: &str) -> Result<(), ConnectionError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| ConnectionError::Transient(format!("bad request: {e}")))?;
        let auth = http::HeaderValue::from_str(&format!("Bearer {}", self.shared.config.token))
            .map_err(|_| AgentError::BadUrl {
                url: url.to_owned(),
                reason: "the token has characters not allowed in a header".into(),
            })?;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, auth);
        let ws_config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(MAX_SIGNAL_MESSAGE))
            .max_frame_size(Some(MAX_SIGNAL_MESSAGE));
        let (mut ws, _) =
            match tokio_tungstenite::connect_async_with_config(request, Some(ws_config), false)
                .await
            {
                Ok(ok) => ok,
                Err(tungstenite::Error::Http(resp))
                    if resp.status() == http::StatusCode::UNAUTHORIZED
                        || resp.status() == http::StatusCode::FORBIDDEN =>
                {
                    return Err(AgentError::Unauthorized(resp.status().as_u16()).into());
                }
                Err(e) => return Err(ConnectionError::Transient(format!("connect: {e}"))),
            };

        let hello = AgentToServer::Hello {
            version: SIGNAL_VERSION,
            allowed_ports: self.shared.config.allowed_ports.clone(),
        };
        send_json(&mut ws, &hello).await?;
        let registered = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| ConnectionError::Transient("no answer to hello".into()))?;
        match registered {
            Some(Ok(Message::Text(text))) => match serde_json::from_str(&text) {
                Ok(ServerToAgent::Registered { workspace }) => {
                    info!(%workspace, "registered with burrowd")
                }
                Ok(ServerToAgent::Error(e)) if e.code == ErrorCode::Unauthorized => {
                    return Err(AgentError::Unauthorized(401).into());
                }
                Ok(other) => {
                    return Err(ConnectionError::Transient(format!(
                        "expected registered, got {other:?}"
                    )));
                }
                Err(e) => return Err(ConnectionError::Transient(format!("bad message: {e}"))),
            },
            Some(Ok(other)) => {
                return Err(ConnectionError::Transient(format!(
                    "expected registered, got {other:?}"
                )));
            }
            Some(Err(e)) => return Err(ConnectionError::Transient(e.to_string())),
            None => {
                return Err(ConnectionError::Transient(
                    "closed before registering".into(),
                ));
            }
        }

        // Signaling queued while disconnected belongs to sessions burrowd has forgotten;
        // only the stream reports are worth sending again.
        while self.outbox_rx.try_recv().is_ok() {}
        let pending: Vec<StreamReport> = lock(&self.shared.pending_reports)
            .values()
            .cloned()
            .collect();
        for report in pending {
            send_json(&mut ws, &AgentToServer::StreamReport(report)).await?;
        }

        loop {
            tokio::select! {
                msg = tokio::time::timeout(SERVER_SILENCE_TIMEOUT, ws.next()) => {
                    match msg {
                        Err(_) => return Err(ConnectionError::Transient("burrowd went silent".into())),
                        Ok(None) => return Ok(()),
                        Ok(Some(Err(e))) => return Err(ConnectionError::Transient(e.to_string())),
                        Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str::<ServerToAgent>(&text) {
                            Ok(msg) => self.shared.handle(msg),
                            Err(e) => warn!(error = %e, "ignoring malformed message from burrowd"),
                        },
                        Ok(Some(Ok(Message::Close(_)))) => return Ok(()),
                        Ok(Some(Ok(_))) => {} // pings are answered by tungstenite
                    }
                }
                Some(out) = self.outbox_rx.recv() => send_json(&mut ws, &out).await?,
            }
        }
    }
}

impl Shared {
    fn handle(self: &Arc<Self>, msg: ServerToAgent) {
        match msg {
            ServerToAgent::Session {
                session_id,
                user,
                ice_servers,
                ice_transport_policy,
                ports,
            } => {
                info!(session = %session_id, %user, ?ice_transport_policy, only_ports = ?ports, "session announced");
                let (tx, rx) = mpsc::unbounded_channel();
                lock(&self.sessions).insert(session_id.clone(), tx);
                let config = PeerConfig {
                    ice_servers,
                    ice_transport_policy,
                };
                let policy = PortPolicy::for_session(&self.config.allowed_ports, ports.as_deref());
                tokio::spawn(Arc::clone(self).run_session(session_id, config, policy, rx));
            }
            ServerToAgent::Offer { session_id, sdp } => {
                self.to_session(session_id, SessionCommand::Offer(sdp))
            }
            ServerToAgent::Candidate {
                session_id,
                candidate,
            } => self.to_session(session_id, SessionCommand::Candidate(candidate)),
            ServerToAgent::ReportAck {
                session_id,
                stream_id,
            } => {
                lock(&self.pending_reports).remove(&(session_id, stream_id));
            }
            ServerToAgent::Registered { .. } => {}
            ServerToAgent::Error(e) => warn!(error = %e, "burrowd refused a request"),
        }
    }

    fn to_session(&self, session_id: SessionId, cmd: SessionCommand) {
        let sent = lock(&self.sessions)
            .get(&session_id)
            .map(|tx| tx.send(cmd).is_ok())
            .unwrap_or(false);
        if !sent {
            warn!(session = %session_id, "signaling for an unknown session");
            let _ = self.outbox.send(AgentToServer::SessionError {
                session_id,
                error: ApiError::new(ErrorCode::NotFound, "the agent has no such session"),
            });
        }
    }

    async fn run_session(
        self: Arc<Self>,
        session_id: SessionId,
        config: PeerConfig,
        policy: PortPolicy,
        mut commands: mpsc::UnboundedReceiver<SessionCommand>,
    ) {
        if let Err(reason) = self
            .serve_session(&session_id, config, policy, &mut commands)
            .await
        {
            warn!(session = %session_id, %reason, "session ended with an error");
            let _ = self.outbox.send(AgentToServer::SessionError {
                session_id: session_id.clone(),
                error: reason,
            });
        }
        lock(&self.sessions).remove(&session_id);
    }

    async fn serve_session(
        &self,
        session_id: &SessionId,
        config: PeerConfig,
        policy: PortPolicy,
        commands: &mut mpsc::UnboundedReceiver<SessionCommand>,
    ) -> Result<(), ApiError> {
        let mut early_candidates = Vec::new();
        let offer = tokio::time::timeout(SESSION_SETUP_TIMEOUT, async {
            while let Some(cmd) = commands.recv().await {
                match cmd {
                    SessionCommand::Offer(sdp) => return Some(sdp),
                    SessionCommand::Candidate(c) => early_candidates.push(c),
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| ApiError::new(ErrorCode::BadRequest, "no offer arrived for the session"))?;

        let (peer, answer) = self
            .stack
            .answer(config, &offer)
            .await
            .map_err(|e| ApiError::new(ErrorCode::BadSdp, e.to_string()))?;
        let peer: Arc<dyn PeerSession> = Arc::from(peer);
        let _ = self.outbox.send(AgentToServer::Answer {
            session_id: session_id.clone(),
            sdp: answer,
        });
        for c in early_candidates {
            if let Err(e) = peer.add_remote_candidate(c).await {
                warn!(session = %session_id, error = %e, "ignoring a remote candidate");
            }
        }

        let (records_tx, mut records_rx) = mpsc::unbounded_channel();
        let serve_task = {
            let peer = Arc::clone(&peer);
            let tunnel_config = self.config.tunnel;
            let dial_host = self.config.dial_host;
            let session = session_id.clone();
            tokio::spawn(async move {
                let channel = peer.data_channel().await.map_err(|e| e.to_string())?;
                debug!(%session, "data channel open");
                let allow: Arc<dyn Fn(u16) -> bool + Send + Sync> =
                    Arc::new(move |port| policy.allows(port));
                tunnel::serve(channel, tunnel_config, dial_host, allow, records_tx)
                    .await
                    .map_err(|e| e.to_string())
            })
        };
        let mut serve_task = std::pin::pin!(serve_task);

        let setup_deadline = tokio::time::sleep(SESSION_SETUP_TIMEOUT);
        let mut setup_deadline = std::pin::pin!(setup_deadline);
        let mut connected = false;
        let mut path = PathKind::Unknown;
        let outcome = loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(SessionCommand::Candidate(c)) => {
                        if let Err(e) = peer.add_remote_candidate(c).await {
                            warn!(session = %session_id, error = %e, "ignoring a remote candidate");
                        }
                    }
                    Some(SessionCommand::Offer(_)) => {
                        warn!(session = %session_id, "ignoring a second offer");
                    }
                    // burrowd forgot the session; the tunnel does not need it.
                    None => {}
                },
                event = peer.next_event() => match event {
                    Some(PeerEvent::LocalCandidate(Some(candidate))) => {
                        let _ = self.outbox.send(AgentToServer::Candidate {
                            session_id: session_id.clone(),
                            candidate,
                        });
                    }
                    Some(PeerEvent::LocalCandidate(None)) => {}
                    Some(PeerEvent::Connected(p)) => {
                        connected = true;
                        path = p;
                        info!(session = %session_id, %path, "peer connected");
                    }
                    Some(PeerEvent::Closed(reason)) => break Ok(reason),
                    None => break Ok("peer connection closed".to_owned()),
                },
                Some(record) = records_rx.recv() => {
                    let current = peer.path().await;
                    if current != PathKind::Unknown {
                        path = current;
                    }
                    self.report(session_id, record, path);
                }
                result = &mut serve_task => {
                    break match result {
                        Ok(Ok(())) => Ok("tunnel closed".to_owned()),
                        Ok(Err(e)) => Ok(format!("tunnel ended: {e}")),
                        Err(e) => Err(ApiError::new(ErrorCode::Internal, format!("tunnel task failed: {e}"))),
                    };
                }
                () = &mut setup_deadline, if !connected => {
                    break Err(ApiError::new(ErrorCode::Internal, "peer connection did not come up in time"));
                }
            }
        };
        peer.close().await;
        // The serving task has dropped or will drop its sender; collect the last records.
        while let Ok(Some(record)) =
            tokio::time::timeout(Duration::from_secs(2), records_rx.recv()).await
        {
            self.report(session_id, record, path);
        }
        match &outcome {
            Ok(reason) => info!(session = %session_id, %reason, "session ended"),
            Err(e) => error!(session = %session_id, error = %e, "session failed"),
        }
        outcome.map(|_| ())
    }

    fn report(&self, session_id: &SessionId, record: StreamRecord, path: PathKind) {
        let report = StreamReport {
            session_id: session_id.clone(),
            stream_id: record.stream_id,
            port: record.port,
            started_at_ms: unix_ms(record.started_at),
            ended_at_ms: unix_ms(record.ended_at),
            bytes_to_workspace: record.bytes_to_workspace,
            bytes_to_client: record.bytes_to_client,
            path,
            outcome: record.outcome,
        };
        info!(
            session = %session_id,
            stream = report.stream_id,
            port = report.port,
            up = report.bytes_to_workspace,
            down = report.bytes_to_client,
            outcome = %report.outcome,
            "stream ended"
        );
        {
            let mut pending = lock(&self.pending_reports);
            if pending.len() >= MAX_PENDING_REPORTS {
                warn!("too many unacknowledged stream reports; dropping the oldest");
                pending.pop_first();
            }
            pending.insert((session_id.clone(), report.stream_id), report.clone());
        }
        let _ = self.outbox.send(AgentToServer::StreamReport(report));
    }
}

fn agent_ws_url(base: &str) -> Result<String, AgentError> {
    let base = base.trim_end_matches('/');
    let rest = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        return Err(AgentError::BadUrl {
            url: base.to_owned(),
            reason: "expected http:// or https://".into(),
        });
    };
    Ok(format!("{rest}{AGENT_CONNECT_PATH}"))
}

async fn send_json<S>(ws: &mut S, msg: &AgentToServer) -> Result<(), ConnectionError>
where
    S: futures_util::Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let text = serde_json::to_string(msg)
        .map_err(|e| ConnectionError::Transient(format!("encode: {e}")))?;
    ws.send(Message::text(text))
        .await
        .map_err(|e| ConnectionError::Transient(format!("send: {e}")))
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical
/// section here leaves the maps consistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unrestricted_session_serves_the_allowed_ports_and_the_speed_test() {
        let p = PortPolicy::for_session(&[22, 8080], None);
        assert!(p.allows(22) && p.allows(8080) && p.allows(SPEEDTEST_PORT));
        assert!(!p.allows(23));
    }

    #[test]
    fn a_restricted_session_serves_only_its_ports_within_the_allowed_ones() {
        let p = PortPolicy::for_session(&[22, 8080], Some(&[8080]));
        assert!(p.allows(8080));
        assert!(!p.allows(22), "another allowed port");
        assert!(!p.allows(SPEEDTEST_PORT), "the speed test");
        // burrowd cannot widen what the agent allows, nor smuggle the speed test in.
        let p = PortPolicy::for_session(&[22], Some(&[8080, 0]));
        assert!(!p.allows(8080) && !p.allows(22) && !p.allows(SPEEDTEST_PORT));
        let p = PortPolicy::for_session(&[22], Some(&[]));
        assert!(!p.allows(22));
    }

    #[test]
    fn agent_url_follows_the_scheme_of_the_base_url() {
        assert_eq!(
            agent_ws_url("http://127.0.0.1:8080/").unwrap(),
            "ws://127.0.0.1:8080/api/v1/agent/connect"
        );
        assert_eq!(
            agent_ws_url("https://burrow.example").unwrap(),
            "wss://burrow.example/api/v1/agent/connect"
        );
        assert!(agent_ws_url("ftp://x").is_err());
    }
}
