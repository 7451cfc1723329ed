//! The HTTP API: session grants, the two signaling WebSockets, listings, health.
//!
//! [`app`] builds the router from an [`AppState`], so tests can drive it without a socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use burrow_proto::signal::{
    AGENT_CONNECT_PATH, ErrorCode, IceServer, IceTransportPolicy, SessionGrant, SessionId,
    SessionRequest,
};
use burrow_proto::turn_auth::TurnCredential;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::broker::Broker;
use crate::db::{AuditEntry, AuditRow, Db, NewSession};
use crate::error::AppError;
use crate::secret;
use crate::signaling;

/// Largest request body and WebSocket message accepted. SDP and candidates are a few KiB.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Audit rows returned by `GET /api/v1/audit` when no `limit` is given.
const DEFAULT_AUDIT_LIMIT: u32 = 100;
/// Most audit rows one `GET /api/v1/audit` returns.
const MAX_AUDIT_LIMIT: u32 = 1000;

/// Read buffer of each signaling WebSocket. tungstenite's default, 128 KiB allocated per
/// connection, made an idle agent cost burrowd ~150 KB; signaling messages are a few KB
/// (larger ones are still read, in several reads).
const SIGNAL_READ_BUFFER: usize = 4 * 1024;

/// The STUN/TURN servers handed to peers.
#[derive(Clone, Default)]
pub struct IceConfig {
    /// `stun:` URLs, handed out as they are.
    pub stun_urls: Vec<String>,
    /// The TURN relay, whose credentials are minted per session.
    pub turn: Option<TurnConfig>,
}

/// A TURN relay that accepts TURN REST credentials under `secret`.
#[derive(Clone)]
pub struct TurnConfig {
    /// `turn:` URLs.
    pub urls: Vec<String>,
    /// The secret shared with the relay.
    pub secret: Arc<[u8]>,
}

impl std::fmt::Debug for IceConfig {
    // The TURN secret is never logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceConfig")
            .field("stun_urls", &self.stun_urls)
            .field("turn_urls", &self.turn.as_ref().map(|t| &t.urls))
            .finish()
    }
}

/// Durations of the protocol; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often burrowd pings a WebSocket peer.
    pub ping_interval: Duration,
    /// A WebSocket peer silent this long is dropped.
    pub silence_timeout: Duration,
    /// How long a session's signaling ticket may be redeemed.
    pub ticket_ttl: Duration,
    /// Lifetime of minted TURN credentials.
    pub turn_ttl: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(15),
            silence_timeout: Duration::from_secs(45),
            ticket_ttl: Duration::from_secs(60),
            turn_ttl: Duration::from_secs(600),
        }
    }
}

/// Everything the handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    broker: Broker,
    ice: IceConfig,
    timing: Timing,
}

impl AppState {
    /// State over `db`, handing out `ice` servers.
    pub fn new(db: Db, ice: IceConfig, timing: Timing) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                broker: Broker::default(),
                ice,
                timing,
            }),
        }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The signaling routes.
    pub fn broker(&self) -> &Broker {
        &self.inner.broker
    }

    /// The protocol's durations.
    pub fn timing(&self) -> Timing {
        self.inner.timing
    }

    /// ICE servers for one peer, with TURN credentials naming `holder` that expire after
    /// the configured TTL.
    pub fn ice_servers(&self, holder: &str) -> Vec<IceServer> {
        let ice = &self.inner.ice;
        let mut servers = Vec::new();
        if !ice.stun_urls.is_empty() {
            servers.push(IceServer {
                urls: ice.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if let Some(turn) = &ice.turn {
            let expires = unix_now().as_secs() + self.inner.timing.turn_ttl.as_secs();
            let c = TurnCredential::mint(&turn.secret, holder, expires);
            servers.push(IceServer {
                urls: turn.urls.clone(),
                username: Some(c.username),
                credential: Some(c.password),
            });
        }
        servers
    }

    fn has_turn(&self) -> bool {
        self.inner.ice.turn.is_some()
    }

    /// Writes an audit row for a refusal. A failure is logged, not returned: the refusal
    /// stands whether or not it could be recorded.
    pub(crate) async fn audit_refusal(&self, entry: AuditEntry) {
        if let Err(e) = self.db().record_audit(&entry).await {
            error!(error = %e, outcome = %entry.outcome, "could not record a refusal in the audit log");
        }
    }
}

/// Current time since the Unix epoch.
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    i64::try_from(unix_now().as_millis()).unwrap_or(i64::MAX)
}

/// The dashboard: one static page that talks to the API with the user's token.
const DASHBOARD_HTML: &str = include_str!("../../../web/index.html");

async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(DASHBOARD_HTML)
}

/// The router of burrowd's HTTP API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(healthz))
        .route("/api/v1/workspaces", get(list_workspaces))
        .route(
            "/api/v1/workspaces/{workspace}/sessions",
            post(create_session),
        )
        .route("/api/v1/sessions/{session}/signal", get(signal))
        .route(AGENT_CONNECT_PATH, get(agent_connect))
        .route("/api/v1/audit", get(audit))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_MESSAGE))
        .with_state(state)
}

/// Lets pages served from `origins` call the API from a browser (the Wasm client runs in
/// pages that burrowd does not serve). No origins: the router is returned as it is, so
/// browsers keep refusing cross-origin calls.
///
/// Only what the client needs is allowed: `GET`/`POST` with `Authorization` and
/// `Content-Type`. WebSockets are not subject to CORS; their ticket is what guards them.
pub fn with_cors(router: Router, origins: &[String]) -> Result<Router, crate::ServerError> {
    use tower_http::cors::{AllowOrigin, CorsLayer};

    if origins.is_empty() {
        return Ok(router);
    }
    let origins = origins
        .iter()
        .map(|o| {
            header::HeaderValue::from_str(o.trim_end_matches('/')).map_err(|_| {
                crate::ServerError::Config(format!("CORS origin {o:?} is not a valid header value"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600));
    Ok(router.layer(cors))
}

/// The peer address of the request, when served with connect info (not under `oneshot`).
pub struct RemoteAddr(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for RemoteAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn event(outcome: &str, remote: Option<SocketAddr>) -> AuditEntry {
    let mut e = AuditEntry::event(now_ms(), outcome);
    e.remote_addr = remote.map(|a| a.to_string());
    e
}

async fn healthz() -> &'static str {
    "ok"
}

async fn not_found() -> AppError {
    AppError::new(ErrorCode::NotFound, "no such endpoint")
}

/// A workspace as `GET /api/v1/workspaces` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceInfo {
    /// Name.
    pub name: String,
    /// Whether its agent is connected now.
    pub online: bool,
    /// Ports its agent last said it will dial.
    pub allowed_ports: Vec<u16>,
    /// When its agent last registered or left, Unix milliseconds.
    pub last_seen_ms: Option<i64>,
}

async fn list_workspaces(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<WorkspaceInfo>>, AppError> {
    let user = authenticate_user(&state, &headers).await?;
    let list = state
        .db()
        .workspaces_owned_by(user.id)
        .await?
        .into_iter()
        .map(|w| WorkspaceInfo {
            online: state.broker().agent_online(w.id),
            name: w.name,
            allowed_ports: w.allowed_ports,
            last_seen_ms: w.last_seen_ms,
        })
        .collect();
    Ok(Json(list))
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    limit: Option<u32>,
}

async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Vec<AuditRow>>, AppError> {
    let user = authenticate_user(&state, &headers).await?;
    let Query(q) = query.map_err(|e| AppError::new(ErrorCode::BadRequest, e.body_text()))?;
    let limit = q
        .limit
        .unwrap_or(DEFAULT_AUDIT_LIMIT)
        .clamp(1, MAX_AUDIT_LIMIT);
    Ok(Json(state.db().audit_log(Some(&user.name), limit).await?))
}

/// The user of a request's bearer token; 401 otherwise (not audited: read-only endpoints).
async fn authenticate_user(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<crate::db::User, AppError> {
    let Some(token) = bearer(headers) else {
        return Err(AppError::unauthorized());
    };
    state
        .db()
        .user_by_token(token)
        .await?
        .ok_or_else(AppError::unauthorized)
}

async fn create_session(
    State(state): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, AppError> {
    let user = match bearer(&headers) {
        Some(token) => state.db().user_by_token(token).await?,
        None => None,
    };
    let Some(user) = user else {
        state
            .audit_refusal(event("refused: unauthorized", remote))
            .await;
        return Err(AppError::unauthorized());
    };
    let refused = |outcome: &str, workspace: Option<&str>| {
        let mut e = event(outcome, remote);
        e.user = Some(user.name.clone());
        e.workspace = workspace.map(str::to_owned);
        e
    };

    let Ok(Path(workspace_name)) = path else {
        state
            .audit_refusal(refused("refused: bad request", None))
            .await;
        return Err(AppError::new(
            ErrorCode::BadRequest,
            "malformed workspace name",
        ));
    };
    // An empty body asks for the defaults.
    let request: SessionRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SessionRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                state
                    .audit_refusal(refused("refused: bad request", None))
                    .await;
                return Err(AppError::new(
                    ErrorCode::BadRequest,
                    format!("malformed session request: {e}"),
                ));
            }
        }
    };

    let Some(workspace) = state.db().workspace_by_name(&workspace_name).await? else {
        // The name is the caller's input and names nothing: it is not worth a column.
        state
            .audit_refusal(refused("refused: not found", None))
            .await;
        return Err(AppError::new(
            ErrorCode::NotFound,
            format!("no workspace named {workspace_name:?}"),
        ));
    };
    let ws = Some(workspace.name.as_str());
    if workspace.owner_id != user.id {
        state.audit_refusal(refused("refused: forbidden", ws)).await;
        warn!(user = %user.name, workspace = %workspace.name, "session refused: not the owner");
        return Err(AppError::new(
            ErrorCode::Forbidden,
            format!("workspace {:?} belongs to another user", workspace.name),
        ));
    }
    if !state.broker().agent_online(workspace.id) {
        state
            .audit_refusal(refused("refused: agent offline", ws))
            .await;
        return Err(AppError::new(
            ErrorCode::AgentOffline,
            format!(
                "the agent of workspace {:?} is not connected",
                workspace.name
            ),
        ));
    }
    if request.force_relay && !state.has_turn() {
        state.audit_refusal(refused("refused: no relay", ws)).await;
        return Err(AppError::new(
            ErrorCode::BadRequest,
            "force_relay was asked for but this burrowd has no TURN relay",
        ));
    }

    let now = now_ms();
    let session_id = secret::generate_id();
    let ticket = secret::generate(secret::TICKET_PREFIX);
    let ticket_ttl = i64::try_from(state.timing().ticket_ttl.as_millis()).unwrap_or(i64::MAX);
    state
        .db()
        .create_session(&NewSession {
            id: session_id.clone(),
            user_id: user.id,
            workspace_id: workspace.id,
            force_relay: request.force_relay,
            ticket_hash: secret::hash(&ticket),
            created_at_ms: now,
            ticket_expires_at_ms: now.saturating_add(ticket_ttl),
        })
        .await?;
    let mut granted = refused("session granted", ws);
    granted.session_id = Some(session_id.clone());
    // No grant leaves without its audit row: a failure here is a 500.
    state.db().record_audit(&granted).await?;
    info!(session = %session_id, user = %user.name, workspace = %workspace.name,
          force_relay = request.force_relay, "session granted");

    let grant = SessionGrant {
        session_id: SessionId(session_id.clone()),
        workspace: workspace.name,
        ice_servers: state.ice_servers(&session_id),
        ice_transport_policy: policy(request.force_relay),
        signal_path: format!("/api/v1/sessions/{session_id}/signal"),
        ticket,
    };
    Ok((StatusCode::CREATED, Json(grant)).into_response())
}

/// The ICE transport policy of a session.
pub fn policy(force_relay: bool) -> IceTransportPolicy {
    if force_relay {
        IceTransportPolicy::Relay
    } else {
        IceTransportPolicy::All
    }
}

#[derive(Debug, Deserialize)]
struct TicketQuery {
    ticket: Option<String>,
}

async fn signal(
    State(state): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<TicketQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let Ok(Path(session_id)) = path else {
        return Err(AppError::new(ErrorCode::BadRequest, "malformed session id"));
    };
    // Checked before the ticket, so that a request that cannot become a WebSocket does not
    // spend it.
    let upgrade = upgrade.map_err(|e| {
        AppError::new(
            ErrorCode::BadRequest,
            format!("expected a WebSocket upgrade: {}", e.body_text()),
        )
    })?;
    let ticket = query.ok().and_then(|Query(q)| q.ticket).unwrap_or_default();
    let session = if ticket.is_empty() {
        None
    } else {
        state
            .db()
            .redeem_ticket(&session_id, &ticket, now_ms())
            .await?
    };
    let Some(session) = session else {
        let mut e = event("refused: bad ticket", remote);
        // Only a session that exists goes into the log, not whatever id was sent.
        if let Some(s) = state.db().session(&session_id).await? {
            e.user = Some(s.user_name);
            e.workspace = Some(s.workspace_name);
            e.session_id = Some(s.id);
        }
        state.audit_refusal(e).await;
        return Err(AppError::new(
            ErrorCode::Unauthorized,
            "the ticket is invalid, already used or expired",
        ));
    };
    Ok(upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .read_buffer_size(SIGNAL_READ_BUFFER)
        .on_upgrade(move |socket| signaling::run_client(socket, state, session, remote)))
}

async fn agent_connect(
    State(state): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let workspace = match bearer(&headers) {
        Some(token) => state.db().workspace_by_agent_token(token).await?,
        None => None,
    };
    let Some(workspace) = workspace else {
        warn!(?remote, "agent connection refused: bad token");
        state
            .audit_refusal(event("refused: bad agent token", remote))
            .await;
        return Err(AppError::unauthorized());
    };
    let upgrade = upgrade.map_err(|e| {
        AppError::new(
            ErrorCode::BadRequest,
            format!("expected a WebSocket upgrade: {}", e.body_text()),
        )
    })?;
    Ok(upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .read_buffer_size(SIGNAL_READ_BUFFER)
        .on_upgrade(move |socket| signaling::run_agent(socket, state, workspace, remote)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use burrow_proto::signal::ApiError;
    use tower::ServiceExt as _;

    async fn state() -> AppState {
        let db = Db::open_in_memory().await.expect("db");
        AppState::new(db, IceConfig::default(), Timing::default())
    }

    async fn body_json<T: serde::de::DeserializeOwned>(r: Response) -> T {
        let bytes = axum::body::to_bytes(r.into_body(), MAX_MESSAGE)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("json body")
    }

    #[tokio::test]
    async fn healthz_answers_ok() {
        let r = app(state().await)
            .oneshot(Request::get("/healthz").body(Body::empty()).expect("req"))
            .await
            .expect("response");
        assert_eq!(r.status(), StatusCode::OK);
    }

    fn preflight(origin: &str) -> Request<Body> {
        Request::options("/api/v1/workspaces/ws/sessions")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization,content-type",
            )
            .body(Body::empty())
            .expect("req")
    }

    #[tokio::test]
    async fn cors_preflight_from_an_allowed_origin_is_allowed() {
        let router = with_cors(app(state().await), &["http://127.0.0.1:8000/".into()])
            .expect("valid origin");
        let r = router
            .oneshot(preflight("http://127.0.0.1:8000"))
            .await
            .expect("response");
        assert!(r.status().is_success(), "{}", r.status());
        assert_eq!(
            r.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some(&header::HeaderValue::from_static("http://127.0.0.1:8000"))
        );
    }

    #[tokio::test]
    async fn cors_preflight_from_another_origin_gets_no_allow_header() {
        let router =
            with_cors(app(state().await), &["http://127.0.0.1:8000".into()]).expect("valid origin");
        let r = router
            .oneshot(preflight("http://evil.example"))
            .await
            .expect("response");
        assert!(
            r.headers()
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .is_none()
        );
        // Without the flag nothing is allowed at all.
        let r = app(state().await)
            .oneshot(preflight("http://127.0.0.1:8000"))
            .await
            .expect("response");
        assert!(
            r.headers()
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .is_none()
        );
    }

    #[tokio::test]
    async fn session_request_without_token_is_401_json_and_audited() {
        let state = state().await;
        let r = app(state.clone())
            .oneshot(
                Request::post("/api/v1/workspaces/ws/sessions")
                    .body(Body::empty())
                    .expect("req"),
            )
            .await
            .expect("response");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()
                .get(header::WWW_AUTHENTICATE)
                .map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
        let e: ApiError = body_json(r).await;
        assert_eq!(e.code, ErrorCode::Unauthorized);
        let log = state.db().audit_log(None, 10).await.expect("log");
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].outcome, "refused: unauthorized");
        assert_eq!(log[0].user, None);
    }

    #[tokio::test]
    async fn malformed_session_request_is_400_not_a_panic() {
        let state = state().await;
        let token = state.db().add_user("alice", 0).await.expect("user");
        state
            .db()
            .add_workspace("ws", "alice", 0)
            .await
            .expect("ws");
        let r = app(state)
            .oneshot(
                Request::post("/api/v1/workspaces/ws/sessions")
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .body(Body::from("{not json"))
                    .expect("req"),
            )
            .await
            .expect("response");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let e: ApiError = body_json(r).await;
        assert_eq!(e.code, ErrorCode::BadRequest);
    }

    #[tokio::test]
    async fn oversized_body_is_refused() {
        let state = state().await;
        let token = state.db().add_user("alice", 0).await.expect("user");
        let r = app(state)
            .oneshot(
                Request::post("/api/v1/workspaces/ws/sessions")
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .body(Body::from(vec![b' '; MAX_MESSAGE + 1]))
                    .expect("req"),
            )
            .await
            .expect("response");
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn unknown_path_is_404_json() {
        let r = app(state().await)
            .oneshot(Request::get("/nope").body(Body::empty()).expect("req"))
            .await
            .expect("response");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let e: ApiError = body_json(r).await;
        assert_eq!(e.code, ErrorCode::NotFound);
    }

    #[test]
    fn bearer_parses_case_insensitive_scheme() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bearer abc".parse().expect("hv"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().expect("hv"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().expect("hv"));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn ice_config_debug_hides_the_turn_secret() {
        let db_less = IceConfig {
            stun_urls: vec!["stun:127.0.0.1:3478".into()],
            turn: Some(TurnConfig {
                urls: vec!["turn:127.0.0.1:3478".into()],
                secret: Arc::from(&b"s3cret"[..]),
            }),
        };
        assert!(!format!("{db_less:?}").contains("s3cret"));
    }
}
