//! The app origins' router: what burrowd answers on `LABEL.SUFFIX`, the origin of one
//! workspace app ([`burrow_proto::app_origin`]).
//!
//! burrowd never serves a byte of the app itself: the service worker does, through the
//! user's tunnel. burrowd answers only under `/.burrow/` (the launch code's redemption, the
//! app's session grants and signaling, the static files of [`crate::web::app_router`]) and,
//! for any other path, with the shell page for navigations (which installs the worker), a
//! redirect to the dashboard for a top-level navigation without a credential, or a 404.
//!
//! An app origin holds no user token: it has a credential cookie good for its own port of
//! its own workspace ([`crate::origins`]), which is all [`SESSION_PATH`] accepts, and the
//! sessions it grants reach that port only.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use burrow_proto::app_origin::{
    AUTH_PATH, AUTHORIZE_PATH, AppLabel, RESERVED_PREFIX, SESSION_PATH, SHELL_PATH,
};
use burrow_proto::signal::{ErrorCode, SessionRequest};
use serde::Deserialize;
use tracing::{info, warn};

use crate::api::{
    self, AppState, MAX_MESSAGE, RemoteAddr, SignalScope, TicketQuery, event, expiry, now_ms,
    user_event,
};
use crate::app_workers::{self, AppWorkers};
use crate::db::{AppCredential, NewAppCredential};
use crate::error::AppError;
use crate::origins::{self, encode_component};
use crate::secret;
use crate::web;

/// The app a request's `Host` names; the host router puts it in the request's extensions.
#[derive(Debug, Clone)]
pub struct AppHost(pub AppLabel);

/// What every non-navigation request outside `/.burrow/` gets: the app's own resources are
/// the service worker's to answer. In particular, an app that tries to register a service
/// worker of its own gets no script.
const NOT_SERVED: &str = "served by the Burrow service worker";

/// What a spent, expired or foreign code's page says.
const BAD_CODE: &str =
    "this link was already used or has expired: open the app from the dashboard again";

/// The app origins' router (for requests whose `Host` the host router found to be an app's:
/// see [`crate::host`]).
pub fn router(state: AppState) -> Router {
    let workers = Router::new()
        .route(
            APP_WORKER_PATH,
            get(staged_worker_script).put(stage_worker_script),
        )
        .layer(DefaultBodyLimit::max(app_workers::MAX_SCRIPT_BYTES));
    Router::new()
        .route(AUTH_PATH, get(redeem_code))
        .route(SESSION_PATH, post(create_session))
        .route("/.burrow/signal/{session}", get(signal))
        .fallback(other_path)
        .layer(DefaultBodyLimit::max(MAX_MESSAGE))
        .merge(workers)
        .layer(Extension(AppWorkers::default()))
        .with_state(state)
}

/// Where an app page stages its own worker's script, and that worker imports it from.
const APP_WORKER_PATH: &str = "/.burrow/app-worker";

#[derive(Debug, Deserialize)]
struct SrcQuery {
    src: Option<String>,
}

/// Stages the script of an app's own worker (see [`crate::app_workers`]): the app's own
/// origin and credential only.
async fn stage_worker_script(
    State(state): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    Extension(AppHost(label)): Extension<AppHost>,
    Extension(workers): Extension<AppWorkers>,
    headers: HeaderMap,
    query: Result<Query<SrcQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, AppError> {
    require_app_origin(&state, &headers, &label, remote).await?;
    let Some(c) = credential(&state, &headers, &label).await? else {
        return Err(AppError::new(
            ErrorCode::Unauthorized,
            "no valid credential for this app: open it from the dashboard again",
        ));
    };
    let src = query.ok().and_then(|Query(q)| q.src).unwrap_or_default();
    workers
        .stage(&label.to_string(), &src, body)
        .map_err(|e| AppError::new(ErrorCode::BadRequest, e.to_string()))?;
    info!(app = %label, user = %c.user.name, %src, "app worker staged");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The staged script, to the app's own worker (it comes with the origin's credential).
async fn staged_worker_script(
    State(state): State<AppState>,
    Extension(AppHost(label)): Extension<AppHost>,
    Extension(workers): Extension<AppWorkers>,
    headers: HeaderMap,
    query: Result<Query<SrcQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let src = query.ok().and_then(|Query(q)| q.src).unwrap_or_default();
    let same_origin = headers
        .get("sec-fetch-site")
        .is_none_or(|v| v.as_bytes() == b"same-origin");
    if !same_origin || credential(&state, &headers, &label).await?.is_none() {
        return Ok(plain(StatusCode::NOT_FOUND, "not found"));
    }
    Ok(match workers.get(&label.to_string(), &src) {
        Some(script) => web::staged_script(script),
        None => plain(StatusCode::NOT_FOUND, "not found"),
    })
}

/// The `frame-ancestors` policy of this burrowd's app pages.
fn frame_ancestors(state: &AppState) -> HeaderValue {
    web::frame_ancestors(state.origins().dashboard())
}

/// The origin of the app `label` names.
fn app_origin(state: &AppState, label: &AppLabel) -> String {
    // The host router sends requests here only when apps are on.
    state.origins().app_origin(label).unwrap_or_default()
}

#[derive(Debug, Deserialize)]
struct CodeQuery {
    code: Option<String>,
}

/// Trades a launch's one-time code for the app's credential cookie, then sends the browser
/// on to the app (or to the shell, for an app shown in the dashboard).
async fn redeem_code(
    State(state): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    Extension(AppHost(label)): Extension<AppHost>,
    query: Result<Query<CodeQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let code = query.ok().and_then(|Query(q)| q.code).unwrap_or_default();
    let now = now_ms();
    let redeemed = if code.is_empty() {
        None
    } else {
        state.db().redeem_app_code(&code, now).await?
    };
    let code = match redeemed {
        Some(c)
            if c.port == label.port()
                && c.workspace_name == label.workspace()
                && c.user.name == label.user() =>
        {
            c
        }
        other => {
            let e = match other {
                // Spent all the same. The row goes to the code's owner, who should know.
                Some(c) => {
                    let mut e = user_event(
                        "refused: app code for another app",
                        remote,
                        &c.user,
                        Some(&c.workspace_name),
                    );
                    e.port = Some(c.port);
                    e
                }
                None => {
                    let mut e = event("refused: bad app code", remote);
                    e.port = Some(label.port());
                    e
                }
            };
            state.audit_refusal(e).await;
            let page = Html(format!(
                "<!doctype html><meta charset=\"utf-8\"><title>Burrow</title><p>{BAD_CODE}</p>\n"
            ));
            let mut r = web::app_page(page, frame_ancestors(&state));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(r);
        }
    };

    let secret = secret::generate(secret::APP_CREDENTIAL_PREFIX);
    state
        .db()
        .create_app_credential(&NewAppCredential {
            secret_hash: secret::hash(&secret),
            user_id: code.user.id,
            workspace_id: code.workspace_id,
            port: code.port,
            web_session_id: code.web_session_id,
            created_at_ms: now,
            expires_at_ms: expiry(now, state.timing().app_credential_ttl),
        })
        .await?;
    let mut e = user_event(
        "app credential issued",
        remote,
        &code.user,
        Some(&code.workspace_name),
    );
    e.port = Some(code.port);
    state.db().record_audit(&e).await?;
    info!(user = %code.user.name, workspace = %code.workspace_name, port = code.port, "app credential issued");

    // The path was checked when the code was minted (`AppPath`): a path on this origin.
    let location = if code.embedded {
        format!("{SHELL_PATH}?next={}", encode_component(&code.path))
    } else {
        code.path
    };
    let location = HeaderValue::from_str(&location)
        .map_err(|_| AppError::new(ErrorCode::Internal, "internal error"))?;
    let mut r = web::app_page((), frame_ancestors(&state));
    *r.status_mut() = StatusCode::SEE_OTHER;
    let headers = r.headers_mut();
    headers.remove(header::CONTENT_TYPE);
    headers.insert(header::LOCATION, location);
    for (name, value) in api::cookie_headers(&state.origins().app_cookie(&secret))? {
        headers.insert(name, value);
    }
    Ok(r)
}

/// The app credential among the request's cookies that is good for `label`'s app.
async fn credential(
    state: &AppState,
    headers: &HeaderMap,
    label: &AppLabel,
) -> Result<Option<AppCredential>, AppError> {
    let now = now_ms();
    for secret in origins::cookie_values(headers, state.origins().app_cookie_name()) {
        let Some(c) = state.db().app_credential(secret, now).await? else {
            continue;
        };
        if c.port == label.port()
            && c.workspace.name == label.workspace()
            && c.user.name == label.user()
        {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Refuses (403, audited) a request whose `Origin` is not this app's.
async fn require_app_origin(
    state: &AppState,
    headers: &HeaderMap,
    label: &AppLabel,
    remote: Option<SocketAddr>,
) -> Result<(), AppError> {
    let expected = app_origin(state, label);
    let Err(refusal) = origins::check_origin(headers, &expected) else {
        return Ok(());
    };
    let mut e = event(refusal.outcome(), remote);
    e.port = Some(label.port());
    state.audit_refusal(e).await;
    warn!(?remote, app = %label, outcome = refusal.outcome(), "app request refused");
    Err(AppError::new(
        ErrorCode::Forbidden,
        refusal.message(&expected),
    ))
}

/// Grants the app's page a tunnel session that reaches its port only.
async fn create_session(
    State(state): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    Extension(AppHost(label)): Extension<AppHost>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    require_app_origin(&state, &headers, &label, remote).await?;
    let Some(c) = credential(&state, &headers, &label).await? else {
        let mut e = event("refused: unauthorized", remote);
        e.port = Some(label.port());
        state.audit_refusal(e).await;
        return Err(AppError::new(
            ErrorCode::Unauthorized,
            "no valid credential for this app: open it from the dashboard again",
        ));
    };
    let request: SessionRequest = match api::json_body(&body) {
        Ok(r) => r,
        Err(e) => {
            let mut row = user_event(
                "refused: bad request",
                remote,
                &c.user,
                Some(&c.workspace.name),
            );
            row.port = Some(c.port);
            state.audit_refusal(row).await;
            return Err(AppError::new(
                ErrorCode::BadRequest,
                format!("malformed session request: {e}"),
            ));
        }
    };
    let grant = api::grant_session(
        &state,
        &c.user,
        &c.workspace,
        &request,
        Some(c.port),
        remote,
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(grant)).into_response())
}

/// The signaling WebSocket of this app's sessions. Browsers send `Origin` on every
/// WebSocket and CORS does not apply to them, so it is checked here.
async fn signal(
    State(state): State<AppState>,
    RemoteAddr(remote): RemoteAddr,
    Extension(AppHost(label)): Extension<AppHost>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<TicketQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    require_app_origin(&state, &headers, &label, remote).await?;
    api::open_signal(
        state,
        remote,
        path,
        query,
        upgrade,
        SignalScope::App(&label),
    )
    .await
}

/// How a request to a path of the app's own was made, by its `Sec-Fetch-Dest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
    /// A top-level navigation (`document`), or a client that sends no fetch metadata.
    TopLevel,
    /// A navigation of a frame (`iframe`, `frame`): the dashboard showing the app.
    Frame,
    /// Anything else: a script, an image, a service worker's script, `fetch()`...
    Other,
}

impl Destination {
    fn of(headers: &HeaderMap) -> Self {
        match headers.get("sec-fetch-dest").map(HeaderValue::as_bytes) {
            None | Some(b"document") => Self::TopLevel,
            Some(b"iframe" | b"frame") => Self::Frame,
            Some(_) => Self::Other,
        }
    }
}

/// Every path that is not one of Burrow's: the shell for navigations (the service worker
/// takes over from there), the dashboard's authorization page for a top-level navigation
/// without a credential, a 404 for everything else.
async fn other_path(
    State(state): State<AppState>,
    Extension(AppHost(label)): Extension<AppHost>,
    Extension(workers): Extension<AppWorkers>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let path = uri.path();
    if path == "/.burrow" || path.starts_with(RESERVED_PREFIX) {
        return Ok(plain(StatusCode::NOT_FOUND, "not found"));
    }
    // The registration of a worker the app's page staged: Burrow's bootstrap, which imports
    // the staged script (see crate::app_workers). Nothing else is a worker script here.
    if headers.get("sec-fetch-dest").map(HeaderValue::as_bytes) == Some(b"serviceworker") {
        let src = uri.path_and_query().map_or(path, |p| p.as_str());
        return Ok(if workers.get(&label.to_string(), src).is_some() {
            web::app_worker_bootstrap()
        } else {
            plain(StatusCode::NOT_FOUND, NOT_SERVED)
        });
    }
    // Whatever the method: a navigation that reaches burrowd (a top-level form POST from
    // another site, say) gets the shell, which loads the app's page itself, and so the app
    // never sees the request.
    let destination = Destination::of(&headers);
    if destination == Destination::Other {
        return Ok(plain(StatusCode::NOT_FOUND, NOT_SERVED));
    }
    if destination == Destination::TopLevel && credential(&state, &headers, &label).await?.is_none()
    {
        let next = uri.path_and_query().map_or("/", |p| p.as_str());
        let location = format!(
            "{}{AUTHORIZE_PATH}?app={label}&next={}",
            state.origins().dashboard(),
            encode_component(next)
        );
        let location = HeaderValue::from_str(&location)
            .map_err(|_| AppError::new(ErrorCode::Internal, "internal error"))?;
        return Ok((
            StatusCode::FOUND,
            [
                (header::LOCATION, location),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("same-origin"),
                ),
            ],
        )
            .into_response());
    }
    Ok(web::app_page(web::SHELL_HTML, frame_ancestors(&state)))
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}
