//! One listener, two kinds of site: a request goes to the app origins' router when its
//! `Host` is under the apps URL's domain and port ([`crate::apps`]), and to the dashboard's
//! (the API and the dashboard's pages) otherwise. Neither answers the other's paths: an
//! app's page cannot reach the dashboard's API on its own origin, nor the dashboard an
//! app's credential.

use std::path::Path;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use tower::ServiceExt as _;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::api::{self, AppState};
use crate::apps::{self, AppHost};
use crate::server::ServerError;
use crate::web;

/// burrowd's whole HTTP service for `state`: the dashboard's router (with CORS for
/// `cors_allow_origins`, which apply to it alone) and, when apps are on, the app origins'
/// router, chosen by each request's `Host`. `web_dir/pkg` holds the built Wasm packages.
pub fn service(
    state: AppState,
    web_dir: &Path,
    cors_allow_origins: &[String],
) -> Result<Router, ServerError> {
    let dashboard = web::dashboard_router(web_dir).merge(api::app(state.clone()));
    let dashboard = api::with_cors(dashboard, cors_allow_origins)?;
    if state.origins().apps().is_none() {
        return Ok(dashboard);
    }
    let apps = web::app_router(web_dir, state.origins().dashboard())
        .merge(apps::router(state.clone()))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ));
    Ok(Router::new().fallback(move |mut request: Request| {
        let (dashboard, apps, state) = (dashboard.clone(), apps.clone(), state.clone());
        async move {
            let to = route(&state, &request);
            let answer = match to {
                Site::Dashboard => dashboard.oneshot(request).await,
                Site::App(label) => {
                    request.extensions_mut().insert(AppHost(label));
                    apps.oneshot(request).await
                }
                Site::NoSuchApp => {
                    return (
                        StatusCode::NOT_FOUND,
                        [(
                            header::X_CONTENT_TYPE_OPTIONS,
                            HeaderValue::from_static("nosniff"),
                        )],
                        "no such app",
                    )
                        .into_response();
                }
            };
            match answer {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    }))
}

/// Where a request goes.
enum Site {
    Dashboard,
    App(burrow_proto::app_origin::AppLabel),
    /// A host under the apps domain whose first label names no app (`www.localhost`): it
    /// gets neither the dashboard nor an app.
    NoSuchApp,
}

fn route(state: &AppState, request: &Request) -> Site {
    let Some(host) = host_of(request) else {
        return Site::Dashboard;
    };
    let origins = state.origins();
    let Some(apps) = origins.apps() else {
        return Site::Dashboard;
    };
    // The dashboard may itself live under the apps domain (`dash.localhost`).
    if origins.is_dashboard_host(host) {
        return Site::Dashboard;
    }
    match apps.match_host(host) {
        None => Site::Dashboard,
        Some(Ok(label)) => Site::App(label),
        Some(Err(_)) => Site::NoSuchApp,
    }
}

/// The request's host: HTTP/1.1's `Host` header, or HTTP/2's `:authority`.
fn host_of(request: &Request) -> Option<&str> {
    match request.headers().get(header::HOST) {
        Some(h) => h.to_str().ok(),
        None => request.uri().authority().map(|a| a.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request as HttpRequest;
    use burrow_proto::app_origin::AppsUrl;

    use crate::api::{IceConfig, Timing};
    use crate::db::Db;
    use crate::origins::Origins;

    async fn service_for(dashboard: &str, apps: &str) -> Router {
        let db = Db::open_in_memory().await.expect("db");
        let origins =
            Origins::new(dashboard, Some(AppsUrl::parse(apps).expect("apps"))).expect("origins");
        let state = AppState::new(db, IceConfig::default(), Timing::default(), origins);
        let dir = tempfile::tempdir().expect("tempdir");
        service(state, dir.path(), &[]).expect("service")
    }

    async fn status(router: &Router, host: &str, path: &str) -> StatusCode {
        let request = HttpRequest::get(path)
            .header(header::HOST, host)
            .body(Body::empty())
            .expect("request");
        router
            .clone()
            .oneshot(request)
            .await
            .expect("response")
            .status()
    }

    #[tokio::test]
    async fn hosts_choose_the_site_case_insensitively() {
        let router = service_for("http://127.0.0.1:8080", "http://*.localhost:8080").await;
        // The dashboard's health check answers on the dashboard only.
        assert_eq!(
            status(&router, "127.0.0.1:8080", "/healthz").await,
            StatusCode::OK
        );
        for app in [
            "8080--dev--alice.localhost:8080",
            "8080--DEV--Alice.LocalHost:8080",
        ] {
            // A navigation without a credential: sent to the dashboard to authorize.
            assert_eq!(
                status(&router, app, "/healthz").await,
                StatusCode::FOUND,
                "{app}"
            );
        }
        assert_eq!(
            status(&router, "www.localhost:8080", "/healthz").await,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn a_dashboard_under_the_apps_domain_stays_the_dashboard() {
        let router = service_for("http://dash.localhost:8080", "http://*.localhost:8080").await;
        assert_eq!(
            status(&router, "dash.localhost:8080", "/healthz").await,
            StatusCode::OK
        );
        assert_eq!(
            status(&router, "8080--dev--alice.localhost:8080", "/healthz").await,
            StatusCode::FOUND
        );
    }

    #[tokio::test]
    async fn an_http2_authority_is_read_when_there_is_no_host_header() {
        let router = service_for("http://127.0.0.1:8080", "http://*.localhost:8080").await;
        let request = HttpRequest::get("http://8080--dev--alice.localhost:8080/.burrow/nope")
            .body(Body::empty())
            .expect("request");
        let r = router.oneshot(request).await.expect("response");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            r.headers().get(header::X_CONTENT_TYPE_OPTIONS),
            Some(&HeaderValue::from_static("nosniff"))
        );
    }
}
