//! The dashboard's HTTP API: logins, session grants, app launches, the two signaling
//! WebSockets, listings, health.
//!
//! [`app`] builds the router from an [`AppState`], so tests can drive it without a socket;
//! [`crate::host::service`] puts it, the static files and the app origins' router
//! ([`crate::apps`]) behind one listener.
//!
//! Requests are made with an API token (`Authorization: Bearer`, the CLI and scripts) or
//! with the dashboard's login cookie (browsers). A browser's state-changing requests must
//! also carry the dashboard's `Origin` ([`crate::origins`]); token requests need none.

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
use burrow_proto::app_origin::{self, AppLabel, AppPath, Launch, LaunchRequest};
use burrow_proto::signal::{
    AGENT_CONNECT_PATH, ErrorCode, IceServer, IceTransportPolicy, PORT_RESTRICTION_VERSION,
    SessionGrant, SessionId, SessionRequest,
};
use burrow_proto::turn_auth::TurnCredential;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::broker::Broker;
use crate::db::{AuditEntry, AuditRow, Db, NewAppCode, NewSession, User, Workspace};
use crate::error::AppError;
use crate::origins::{self, Origins};
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
    /// How long a dashboard login lasts.
    pub web_session_ttl: Duration,
    /// How long an app launch's one-time code may be redeemed.
    pub app_code_ttl: Duration,
    /// How long an app credential lasts (never past its login).
    pub app_credential_ttl: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(15),
            silence_timeout: Duration::from_secs(45),
            ticket_ttl: Duration::from_secs(60),
            turn_ttl: Duration::from_secs(600),
            web_session_ttl: Duration::from_secs(12 * 3600),
            app_code_ttl: Duration::from_secs(60),
            app_credential_ttl: Duration::from_secs(12 * 3600),
        }
    }
}

/// `now_ms + ttl`, in Unix milliseconds.
pub(crate) fn expiry(now_ms: i64, ttl: Duration) -> i64 {
    now_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
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
    origins: Origins,
}

impl AppState {
    /// State over `db`, handing out `ice` servers, serving the dashboard and the apps at
    /// `origins`.
    pub fn new(db: Db, ice: IceConfig, timing: Timing, origins: Origins) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                broker: Broker::default(),
                ice,
                timing,
                origins,
            }),
        }
    }

    /// The dashboard's origin and the apps URL.
    pub fn origins(&self) -> &Origins {
        &self.inner.origins
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

/// The router of burrowd's HTTP API, on the dashboard's origin.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/me", get(me))
        .route("/api/v1/workspaces", get(list_workspaces))
        .route(
            "/api/v1/workspaces/{workspace}/sessions",
            post(create_session),
        )
        .route(
            "/api/v1/workspaces/{workspace}/apps/{port}/launch",
            post(launch_app),
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

pub(crate) fn event(outcome: &str, remote: Option<SocketAddr>) -> AuditEntry {
    let mut e = AuditEntry::event(now_ms(), outcome);
    e.remote_addr = remote.map(|a| a.to_string());
    e
}

/// An audit row of `user`'s request, about `workspace` if known.
pub(crate) fn user_event(
    outcome: &str,
    remote: Option<SocketAddr>,
    user: &User,
    workspace: Option<&str>,
) -> AuditEntry {
    let mut e = event(outcome, remote);
    e.user = Some(user.name.clone());
    e.workspace = workspace.map(str::to_owned);
    e
}

/// A JSON body, or `T::default()` for an empty one.
pub(crate) fn json_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    }
}

/// Who made a request to the dashboard's API, and how.
pub(crate) enum Caller {
    /// An API token (`Authorization: Bearer`): the CLI, scripts. No `Origin` needed.
    Token(User),
    /// A browser, with the login cookie: its state-changing requests must carry the
    /// dashboard's `Origin`.
    Browser {
        /// Whose login it is.
        user: User,
        /// The login.
        web_session_id: i64,
    },
}

impl Caller {
    pub(crate) fn user(&self) -> &User {
        match self {
            Self::Token(user) | Self::Browser { user, .. } => user,
        }
    }
}

/// The caller of a request: its bearer token if it has an `Authorization` header (a bad
/// token is not made up for by a cookie), else the first live login among its cookies.
pub(crate) async fn caller(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Caller>, AppError> {
    if headers.contains_key(header::AUTHORIZATION) {
        let Some(token) = bearer(headers) else {
            return Ok(None);
        };
        return Ok(state.db().user_by_token(token).await?.map(Caller::Token));
    }
    let name = state.origins().session_cookie_name();
    let now = now_ms();
    for secret in origins::cookie_values(headers, name) {
        if let Some(s) = state.db().web_session(secret, now).await? {
            return Ok(Some(Caller::Browser {
                user: s.user,
                web_session_id: s.id,
            }));
        }
    }
    Ok(None)
}

/// Refuses (403, audited) a browser request whose `Origin` is not the dashboard's.
async fn require_dashboard_origin(
    state: &AppState,
    headers: &HeaderMap,
    remote: Option<SocketAddr>,
    user: Option<&User>,
) -> Result<(), AppError> {
    let expected = state.origins().dashboard();
    let Err(refusal) = origins::check_origin(headers, expected) else {
        return Ok(());
    };
    let mut e = event(refusal.outcome(), remote);
    e.user = user.map(|u| u.name.clone());
    state.audit_refusal(e).await;
    warn!(
        ?remote,
        outcome = refusal.outcome(),
        "browser request refused"
    );
    Err(AppError::new(
        ErrorCode::Forbidden,
        refusal.message(expected),
    ))
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

/// The user of a request's bearer token or login cookie; 401 otherwise (not audited:
/// read-only endpoints, which need no `Origin` check either: browsers do not let another
/// origin read their answers).
async fn authenticate_user(state: &AppState, headers: &HeaderMap) -> Result<User, AppError> {
    caller(state, headers)
        .await?
        .map(|c| c.user().clone())
        .ok_or_else(AppError::unauthorized)
}

/// Body of `POST /api/v1/login`. No `Debug`: it holds the token.
#[derive(Clone, Default, Deserialize)]
struct LoginRequest {
    token: String,
}

/// The answer of `POST /api/v1/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedIn {
    /// The user's name.
    pub user: String,
}

/// The answer of `GET /api/v1/me`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    /// The user's name.
    pub user: String,
    /// The apps URL (`http://*.localhost:8080`); `None` (`null`) when apps in the browser
    /// are off.
    pub apps_url: Option<String>,
}

/// The headers of an answer that sets or clears a cookie: the cookie, and no caching.
pub(crate) fn cookie_headers(
    cookie: &str,
) -> Result<[(header::HeaderName, header::HeaderValue); 2], AppError> {
    // Cookie values are base64url secrets burrowd made, so this cannot fail in practice.
    let cookie = header::HeaderValue::from_str(cookie)
        .map_err(|_| AppError::new(ErrorCode::Internal, "internal error"))?;
    Ok([
        (header::SET_COOKIE, cookie),
        (
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        ),
    ])
}

/// Logs a browser in: trades the API token for an HttpOnly login cookie, so that the
/// dashboard's page keeps no secret. Only from the dashboard's own pages (`Origin`), so
/// another site cannot log a browser into an account of its choosing.
async fn login(
    State(state): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    require_dashboard_origin(&state, &headers, remote, None).await?;
    let request: LoginRequest = match json_body(&body) {
        Ok(r) => r,
        Err(e) => {
            state
                .audit_refusal(event("refused: bad login", remote))
                .await;
            return Err(AppError::new(
                ErrorCode::BadRequest,
                format!("malformed login request: {e}"),
            ));
        }
    };
    let user = match request.token.trim() {
        "" => None,
        token => state.db().user_by_token(token).await?,
    };
    let Some(user) = user else {
        state
            .audit_refusal(event("refused: bad login", remote))
            .await;
        return Err(AppError::new(
            ErrorCode::Unauthorized,
            "that is not a valid API token",
        ));
    };
    let now = now_ms();
    if let Err(e) = state.db().prune_expired(now).await {
        warn!(error = %e, "could not delete expired logins and app credentials");
    }
    let secret = secret::generate(secret::WEB_SESSION_PREFIX);
    state
        .db()
        .create_web_session(
            user.id,
            &secret::hash(&secret),
            now,
            expiry(now, state.timing().web_session_ttl),
        )
        .await?;
    state
        .db()
        .record_audit(&user_event("logged in", remote, &user, None))
        .await?;
    info!(user = %user.name, "logged in");
    let headers = cookie_headers(&state.origins().session_cookie(&secret))?;
    Ok((headers, Json(LoggedIn { user: user.name })).into_response())
}

/// Ends the browser's login and every app credential minted under it.
async fn logout(
    State(state): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    require_dashboard_origin(&state, &headers, remote, None).await?;
    let now = now_ms();
    let name = state.origins().session_cookie_name();
    for secret in origins::cookie_values(&headers, name) {
        let Some(session) = state.db().web_session(secret, now).await? else {
            continue;
        };
        let revoked = state.db().delete_web_session(session.id).await?;
        state
            .db()
            .record_audit(&user_event("logged out", remote, &session.user, None))
            .await?;
        info!(user = %session.user.name, revoked, "logged out");
    }
    let headers = cookie_headers(&state.origins().clear_session_cookie())?;
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

async fn me(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Me>, AppError> {
    let user = authenticate_user(&state, &headers).await?;
    Ok(Json(Me {
        user: user.name,
        apps_url: state.origins().apps().map(ToString::to_string),
    }))
}

/// What every refusal of a workspace that is missing or another user's says, so that the
/// two cannot be told apart.
fn no_such_workspace(name: &str) -> AppError {
    AppError::new(ErrorCode::NotFound, format!("no workspace named {name:?}"))
}

/// `user`'s workspace `name`; otherwise the one 404 of [`no_such_workspace`], audited as
/// `refused: not found` or `refused: forbidden`.
async fn own_workspace(
    state: &AppState,
    user: &User,
    name: &str,
    remote: Option<SocketAddr>,
) -> Result<Workspace, AppError> {
    match state.db().workspace_by_name(name).await? {
        Some(w) if w.owner_id == user.id => Ok(w),
        Some(w) => {
            state
                .audit_refusal(user_event(
                    "refused: forbidden",
                    remote,
                    user,
                    Some(&w.name),
                ))
                .await;
            warn!(user = %user.name, workspace = %w.name, "refused: not the owner");
            Err(no_such_workspace(name))
        }
        None => {
            // The name is the caller's input and names nothing: it is not worth a column.
            state
                .audit_refusal(user_event("refused: not found", remote, user, None))
                .await;
            Err(no_such_workspace(name))
        }
    }
}

/// Launches `workspace`'s app on `port` onto its own origin: mints the one-time code that
/// the app's origin trades for its credential ([`crate::apps`]).
async fn launch_app(
    State(state): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> Result<Json<Launch>, AppError> {
    let Some(caller) = caller(&state, &headers).await? else {
        state
            .audit_refusal(event("refused: unauthorized", remote))
            .await;
        return Err(AppError::unauthorized());
    };
    let user = caller.user();
    if let Caller::Browser { .. } = caller {
        require_dashboard_origin(&state, &headers, remote, Some(user)).await?;
    }
    let bad_request = async |message: String| {
        state
            .audit_refusal(user_event("refused: bad request", remote, user, None))
            .await;
        AppError::new(ErrorCode::BadRequest, message)
    };
    let Ok(Path((workspace_name, port))) = path else {
        return Err(bad_request("malformed workspace name or port".into()).await);
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p != 0 => p,
        _ => return Err(bad_request(format!("{port:?} is not an app's port")).await),
    };
    let request: LaunchRequest = match json_body(&body) {
        Ok(r) => r,
        Err(e) => return Err(bad_request(format!("malformed launch request: {e}")).await),
    };
    let app_path = match request.path.as_deref().map(AppPath::parse) {
        None => AppPath::root(),
        Some(Ok(p)) => p,
        Some(Err(e)) => return Err(bad_request(format!("bad app path: {e}")).await),
    };
    let Some(apps) = state.origins().apps() else {
        state
            .audit_refusal(user_event("refused: apps disabled", remote, user, None))
            .await;
        return Err(AppError::new(
            ErrorCode::AppsDisabled,
            "this burrowd serves no apps in the browser (it was started without --apps-url)",
        ));
    };
    let workspace = own_workspace(&state, user, &workspace_name, remote).await?;
    let ws = Some(workspace.name.as_str());
    let label = match AppLabel::new(port, &workspace.name, &user.name) {
        Ok(label) => label,
        Err(e) => {
            state
                .audit_refusal(user_event("refused: bad request", remote, user, ws))
                .await;
            return Err(AppError::new(ErrorCode::BadRequest, e.to_string()));
        }
    };
    if !workspace.allowed_ports.contains(&port) {
        let mut e = user_event("refused: port not allowed", remote, user, ws);
        e.port = Some(port);
        state.audit_refusal(e).await;
        return Err(AppError::new(
            ErrorCode::NotFound,
            format!(
                "the agent of workspace {:?} does not serve port {port}",
                workspace.name
            ),
        ));
    }

    let now = now_ms();
    let code = secret::generate(secret::APP_CODE_PREFIX);
    state
        .db()
        .create_app_code(&NewAppCode {
            code_hash: secret::hash(&code),
            user_id: user.id,
            workspace_id: workspace.id,
            port,
            path: app_path.to_string(),
            embedded: request.embedded,
            web_session_id: match caller {
                Caller::Browser { web_session_id, .. } => Some(web_session_id),
                Caller::Token(_) => None,
            },
            created_at_ms: now,
            expires_at_ms: expiry(now, state.timing().app_code_ttl),
        })
        .await?;
    let mut launched = user_event("app launched", remote, user, ws);
    launched.port = Some(port);
    state.db().record_audit(&launched).await?;
    info!(user = %user.name, workspace = %workspace.name, port, embedded = request.embedded, "app launched");
    let origin = apps.origin(&label);
    Ok(Json(Launch {
        url: format!("{origin}{}?code={code}", app_origin::AUTH_PATH),
        origin,
    }))
}

async fn create_session(
    State(state): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, AppError> {
    // Bearer only: a browser's page asks for sessions on its app's origin instead.
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
    let Ok(Path(workspace_name)) = path else {
        state
            .audit_refusal(user_event("refused: bad request", remote, &user, None))
            .await;
        return Err(AppError::new(
            ErrorCode::BadRequest,
            "malformed workspace name",
        ));
    };
    let request: SessionRequest = match json_body(&body) {
        Ok(r) => r,
        Err(e) => {
            state
                .audit_refusal(user_event("refused: bad request", remote, &user, None))
                .await;
            return Err(AppError::new(
                ErrorCode::BadRequest,
                format!("malformed session request: {e}"),
            ));
        }
    };
    let workspace = own_workspace(&state, &user, &workspace_name, remote).await?;
    let grant = grant_session(&state, &user, &workspace, &request, None, remote).await?;
    Ok((StatusCode::CREATED, Json(grant)).into_response())
}

/// Grants `user` a session to `workspace` (which they own), restricted to `app_port` for an
/// app's session: checks the agent, records the session and its audit row, mints the
/// ticket and the TURN credentials.
pub(crate) async fn grant_session(
    state: &AppState,
    user: &User,
    workspace: &Workspace,
    request: &SessionRequest,
    app_port: Option<u16>,
    remote: Option<SocketAddr>,
) -> Result<SessionGrant, AppError> {
    let refused = |outcome: &str| {
        let mut e = user_event(outcome, remote, user, Some(&workspace.name));
        e.port = app_port;
        e
    };
    let Some(agent_version) = state.broker().agent_version(workspace.id) else {
        state.audit_refusal(refused("refused: agent offline")).await;
        return Err(AppError::new(
            ErrorCode::AgentOffline,
            format!(
                "the agent of workspace {:?} is not connected",
                workspace.name
            ),
        ));
    };
    if app_port.is_some() && agent_version < PORT_RESTRICTION_VERSION {
        state.audit_refusal(refused("refused: agent too old")).await;
        return Err(AppError::new(
            ErrorCode::AgentTooOld,
            format!(
                "the agent is too old for browser apps: the agent of workspace {:?} speaks \
                 signaling version {agent_version}, apps need {PORT_RESTRICTION_VERSION} \
                 (upgrade burrow-agent)",
                workspace.name
            ),
        ));
    }
    if request.force_relay && !state.has_turn() {
        state.audit_refusal(refused("refused: no relay")).await;
        return Err(AppError::new(
            ErrorCode::BadRequest,
            "force_relay was asked for but this burrowd has no TURN relay",
        ));
    }

    let now = now_ms();
    let session_id = secret::generate_id();
    let ticket = secret::generate(secret::TICKET_PREFIX);
    state
        .db()
        .create_session(&NewSession {
            id: session_id.clone(),
            user_id: user.id,
            workspace_id: workspace.id,
            force_relay: request.force_relay,
            ticket_hash: secret::hash(&ticket),
            created_at_ms: now,
            ticket_expires_at_ms: expiry(now, state.timing().ticket_ttl),
            app_port,
        })
        .await?;
    let mut granted = refused("session granted");
    granted.session_id = Some(session_id.clone());
    // No grant leaves without its audit row: a failure here is a 500.
    state.db().record_audit(&granted).await?;
    info!(session = %session_id, user = %user.name, workspace = %workspace.name,
          force_relay = request.force_relay, ?app_port, "session granted");

    let signal_path = match app_port {
        Some(_) => app_origin::signal_path(&session_id),
        None => format!("/api/v1/sessions/{session_id}/signal"),
    };
    Ok(SessionGrant {
        session_id: SessionId(session_id.clone()),
        workspace: workspace.name.clone(),
        ice_servers: state.ice_servers(&session_id),
        ice_transport_policy: policy(request.force_relay),
        signal_path,
        ticket,
    })
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
pub(crate) struct TicketQuery {
    ticket: Option<String>,
}

/// Whose sessions a signaling endpoint opens.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SignalScope<'a> {
    /// The dashboard's endpoint: sessions granted with an API token, not apps' sessions.
    Dashboard,
    /// An app origin's endpoint: only that app's sessions.
    App(&'a AppLabel),
}

impl SignalScope<'_> {
    fn admits(&self, session: &crate::db::Session) -> bool {
        match self {
            Self::Dashboard => session.app_port.is_none(),
            Self::App(label) => {
                session.app_port == Some(label.port())
                    && session.workspace_name == label.workspace()
                    && session.user_name == label.user()
            }
        }
    }
}

async fn signal(
    State(state): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<TicketQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    open_signal(state, remote, path, query, upgrade, SignalScope::Dashboard).await
}

/// Redeems a session's ticket and serves its client's signaling WebSocket, if the session
/// is one `scope` may open.
pub(crate) async fn open_signal(
    state: AppState,
    remote: Option<SocketAddr>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<TicketQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    scope: SignalScope<'_>,
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
    let existing = state.db().session(&session_id).await?;
    // A session outside the scope is refused before its ticket is tried, so that it stays
    // usable where it belongs.
    let in_scope = existing.as_ref().is_some_and(|s| scope.admits(s));
    let session = if ticket.is_empty() || !in_scope {
        None
    } else {
        state
            .db()
            .redeem_ticket(&session_id, &ticket, now_ms())
            .await?
    };
    let Some(session) = session else {
        let outcome = match existing {
            Some(_) if !in_scope => "refused: session of another origin",
            _ => "refused: bad ticket",
        };
        let mut e = event(outcome, remote);
        // Only a session that exists goes into the log, not whatever id was sent.
        if let Some(s) = existing {
            e.user = Some(s.user_name);
            e.workspace = Some(s.workspace_name);
            e.session_id = Some(s.id);
            e.port = s.app_port;
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
        let origins = Origins::new("http://127.0.0.1:8080", None).expect("origins");
        AppState::new(db, IceConfig::default(), Timing::default(), origins)
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
