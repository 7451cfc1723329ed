//! Static files, compiled in (`web/`) or from `--web-dir` (the built Wasm packages): the
//! dashboard's pages on its origin, and on every app origin the shell page, the service
//! worker and their scripts under `/.burrow/`.
//!
//! None of it comes from an app: apps are served by the service worker through the user's
//! tunnel, and burrowd never proxies them.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeader;

/// The dashboard: logs in with the user's token, lists workspaces, launches apps.
const DASHBOARD_HTML: &str = include_str!("../../../web/index.html");
/// The dashboard's page that an app origin without a credential sends browsers to.
const AUTHORIZE_HTML: &str = include_str!("../../../web/authorize.html");
/// The page that hosts an app on its origin: installs the service worker, holds the tunnel.
pub const SHELL_HTML: &str = include_str!("../../../web/shell.html");
const SHELL_JS: &str = include_str!("../../../web/burrow-shell.js");
const SERVICE_WORKER_JS: &str = include_str!("../../../web/burrow-sw.js");
const WS_SHIM_JS: &str = include_str!("../../../web/burrow-ws-shim.js");

const NOSNIFF: (HeaderName, HeaderValue) = (
    header::X_CONTENT_TYPE_OPTIONS,
    HeaderValue::from_static("nosniff"),
);

/// Where `web/` is in this source tree: the default `--web-dir` (its `pkg/` holds what
/// `npm run build` produced).
pub fn default_web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

/// Whether `web_dir` holds the built packages the dashboard needs.
pub fn packages_built(web_dir: &Path) -> bool {
    [
        "pkg/client/burrow_client.js",
        "pkg/client/burrow_client_bg.wasm",
        "pkg/worker/burrow_worker.js",
        "pkg/worker/burrow_worker_bg.wasm",
    ]
    .iter()
    .all(|f| web_dir.join(f).is_file())
}

/// `web_dir/pkg`, which rebuilt packages replace under the same names: browsers must
/// revalidate them.
fn packages(web_dir: &Path) -> SetResponseHeader<ServeDir, HeaderValue> {
    SetResponseHeader::overriding(
        ServeDir::new(web_dir.join("pkg")),
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    )
}

/// The dashboard origin's static routes: `/`, `/apps/authorize`, and `web_dir/pkg` at
/// `/pkg/`.
pub fn dashboard_router<S: Clone + Send + Sync + 'static>(web_dir: &Path) -> Router<S> {
    Router::new()
        .route("/", get(|| async { dashboard_page(DASHBOARD_HTML) }))
        .route(
            burrow_proto::app_origin::AUTHORIZE_PATH,
            get(|| async { dashboard_page(AUTHORIZE_HTML) }),
        )
        .nest_service("/pkg", packages(web_dir))
}

/// A dashboard page: never framed (it holds the login), never sniffed, sends no referrer.
fn dashboard_page(body: &'static str) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("frame-ancestors 'none'"),
            ),
            NOSNIFF,
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// An app origin's static routes under `/.burrow/`: the shell page, its script, the
/// service worker, the WebSocket shim and `web_dir/pkg`. `dashboard_origin` may frame the
/// shell.
pub fn app_router<S: Clone + Send + Sync + 'static>(
    web_dir: &Path,
    dashboard_origin: &str,
) -> Router<S> {
    let frame_ancestors = frame_ancestors(dashboard_origin);
    Router::new()
        .route(
            "/.burrow/shell.html",
            get(move || async move { app_page(SHELL_HTML, frame_ancestors) }),
        )
        .route("/.burrow/shell.js", get(|| async { script(SHELL_JS) }))
        .route("/.burrow/shim.js", get(|| async { script(WS_SHIM_JS) }))
        .route("/.burrow/sw.js", get(service_worker))
        .nest_service("/.burrow/pkg", packages(web_dir))
}

/// The `Content-Security-Policy` of app pages: framed by their own origin or the
/// dashboard's, by nothing else (no other site can overlay an app).
pub fn frame_ancestors(dashboard_origin: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("frame-ancestors 'self' {dashboard_origin}"))
        // The origin was parsed from a URL, so this is not expected; refusing every
        // framer is the safe side.
        .unwrap_or(HeaderValue::from_static("frame-ancestors 'self'"))
}

/// An HTML page of an app origin; `frame_ancestors` from [`frame_ancestors`]. Not stored:
/// these pages come before the service worker, and a stale one could outlive it.
pub fn app_page(body: impl IntoResponse, frame_ancestors: HeaderValue) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, frame_ancestors),
            NOSNIFF,
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

fn script(body: impl IntoResponse) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            NOSNIFF,
        ],
        body,
    )
        .into_response()
}

/// Burrow's worker bootstrap as the answer to an app's own worker registration (see
/// [`crate::app_workers`]): without `Service-Worker-Allowed`, so its scope is at most the
/// folder of the app's script.
pub fn app_worker_bootstrap() -> Response {
    script(SERVICE_WORKER_JS)
}

/// A script an app staged for its own worker, to that worker's `importScripts`.
pub fn staged_script(body: axum::body::Bytes) -> Response {
    script(body)
}

async fn service_worker() -> Response {
    let mut r = script(SERVICE_WORKER_JS);
    // Its script is under /.burrow/, its scope the whole app origin.
    r.headers_mut().insert(
        HeaderName::from_static("service-worker-allowed"),
        HeaderValue::from_static("/"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    const DASHBOARD: &str = "http://127.0.0.1:8080";

    async fn get(router: Router, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let r = router
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let (parts, body) = r.into_parts();
        let body = to_bytes(body, 1 << 20).await.expect("body");
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    fn header<'a>(h: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn dashboard_pages_are_never_framed_sniffed_or_referred() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, body) in [("/", DASHBOARD_HTML), ("/apps/authorize", AUTHORIZE_HTML)] {
            let (status, headers, got) = get(dashboard_router(dir.path()), path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(got, body, "{path}");
            assert_eq!(
                header(&headers, "content-security-policy"),
                Some("frame-ancestors 'none'")
            );
            assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
            assert_eq!(header(&headers, "referrer-policy"), Some("no-referrer"));
            assert_eq!(header(&headers, "cache-control"), Some("no-cache"));
        }
    }

    #[tokio::test]
    async fn path_based_apps_and_root_scripts_are_gone_from_the_dashboard() {
        let dir = tempfile::tempdir().expect("tempdir");
        for path in [
            "/@dev/apps/8080/",
            "/@dev/apps/8080/static/x.js",
            "/burrow-sw.js",
            "/burrow-host.js",
            "/burrow-ws-shim.js",
            "/.burrow/sw.js",
        ] {
            let (status, _, _) = get(dashboard_router(dir.path()), path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[tokio::test]
    async fn the_service_worker_may_control_the_whole_app_origin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (status, headers, body) =
            get(app_router(dir.path(), DASHBOARD), "/.burrow/sw.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, SERVICE_WORKER_JS);
        assert_eq!(header(&headers, "service-worker-allowed"), Some("/"));
        assert_eq!(
            header(&headers, "content-type"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(header(&headers, "cache-control"), Some("no-cache"));
        for (path, body) in [
            ("/.burrow/shell.js", SHELL_JS),
            ("/.burrow/shim.js", WS_SHIM_JS),
        ] {
            let (status, headers, got) = get(app_router(dir.path(), DASHBOARD), path).await;
            assert_eq!((status, got.as_str()), (StatusCode::OK, body), "{path}");
            assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
        }
    }

    #[tokio::test]
    async fn the_shell_may_be_framed_by_the_dashboard_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (status, headers, body) =
            get(app_router(dir.path(), DASHBOARD), "/.burrow/shell.html").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, SHELL_HTML));
        assert_eq!(
            header(&headers, "content-security-policy"),
            Some("frame-ancestors 'self' http://127.0.0.1:8080")
        );
        assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&headers, "referrer-policy"), Some("same-origin"));
        assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    }

    #[tokio::test]
    async fn built_packages_are_served_on_both_origins_from_the_web_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("pkg/client")).expect("mkdir");
        std::fs::write(dir.path().join("pkg/client/burrow_client.js"), "export {}").expect("write");
        for (router, path) in [
            (dashboard_router(dir.path()), "/pkg/client/burrow_client.js"),
            (
                app_router(dir.path(), DASHBOARD),
                "/.burrow/pkg/client/burrow_client.js",
            ),
        ] {
            let (status, headers, body) = get(router, path).await;
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::OK, "export {}"),
                "{path}"
            );
            assert_eq!(header(&headers, "cache-control"), Some("no-cache"));
        }
        let (status, _, _) = get(dashboard_router(dir.path()), "/pkg/../Cargo.toml").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = get(
            app_router(dir.path(), DASHBOARD),
            "/.burrow/pkg/../../Cargo.toml",
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(!packages_built(dir.path()));
    }
}
