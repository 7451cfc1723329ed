//! The dashboard's static files: the service worker and its scripts (compiled in), the
//! built Wasm packages (`/pkg/`, from `--web-dir`), and the app view's boot page.
//!
//! Apps are served by the service worker through the user's tunnel; burrowd never proxies
//! them. `/@WORKSPACE/apps/PORT/...` here only ever answers with the same static boot page,
//! which installs the worker and reloads.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeader;

const SERVICE_WORKER_JS: &str = include_str!("../../../web/burrow-sw.js");
const WS_SHIM_JS: &str = include_str!("../../../web/burrow-ws-shim.js");
const HOST_JS: &str = include_str!("../../../web/burrow-host.js");
const APP_BOOT_HTML: &str = include_str!("../../../web/app.html");

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

/// The static routes. `web_dir/pkg` is served at `/pkg/`.
pub fn router<S: Clone + Send + Sync + 'static>(web_dir: &Path) -> Router<S> {
    // Rebuilt packages keep their names: browsers must revalidate them.
    let packages = SetResponseHeader::overriding(
        ServeDir::new(web_dir.join("pkg")),
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    Router::new()
        .route("/burrow-sw.js", get(service_worker))
        .route("/burrow-ws-shim.js", get(|| async { script(WS_SHIM_JS) }))
        .route("/burrow-host.js", get(|| async { script(HOST_JS) }))
        .route("/{at_workspace}/apps/{port}", get(app_boot))
        .route("/{at_workspace}/apps/{port}/", get(app_boot))
        .route("/{at_workspace}/apps/{port}/{*rest}", get(app_boot))
        .nest_service("/pkg", packages)
}

fn script(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn service_worker() -> Response {
    let mut r = script(SERVICE_WORKER_JS);
    // Its scope is the whole origin (apps live under /@WORKSPACE/apps/...).
    r.headers_mut().insert(
        header::HeaderName::from_static("service-worker-allowed"),
        HeaderValue::from_static("/"),
    );
    r
}

/// The boot page for a navigation the service worker did not take. Any other path shape
/// is a 404, like every unknown path.
async fn app_boot(UrlPath(params): UrlPath<Vec<(String, String)>>) -> Response {
    let workspace_ok = params
        .first()
        .is_some_and(|(_, v)| v.len() > 1 && v.starts_with('@'));
    let port_ok = params
        .get(1)
        .is_some_and(|(_, v)| v.parse::<u16>().is_ok_and(|p| p != 0));
    if !(workspace_ok && port_ok) {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        APP_BOOT_HTML,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt as _;

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

    #[tokio::test]
    async fn app_paths_get_only_the_static_boot_page() {
        let dir = tempfile::tempdir().expect("tempdir");
        for path in [
            "/@dev/apps/8080",
            "/@dev/apps/8080/",
            "/@dev/apps/8080/static/x.js?v=1",
        ] {
            let (status, headers, body) = get(router(dir.path()), path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(body, APP_BOOT_HTML, "{path}");
            assert_eq!(
                headers.get(header::CACHE_CONTROL).map(|v| v.as_bytes()),
                Some(&b"no-store"[..])
            );
        }
    }

    #[tokio::test]
    async fn paths_shaped_unlike_an_app_scope_are_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        for path in [
            "/dev/apps/8080/",
            "/@/apps/8080/",
            "/@dev/apps/0/",
            "/@dev/apps/x/",
        ] {
            let (status, _, _) = get(router(dir.path()), path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[tokio::test]
    async fn the_service_worker_may_control_the_whole_origin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (status, headers, body) = get(router(dir.path()), "/burrow-sw.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, SERVICE_WORKER_JS);
        assert_eq!(
            headers.get("service-worker-allowed").map(|v| v.as_bytes()),
            Some(&b"/"[..])
        );
    }

    #[tokio::test]
    async fn built_packages_are_served_from_the_web_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("pkg/client")).expect("mkdir");
        std::fs::write(dir.path().join("pkg/client/burrow_client.js"), "export {}").expect("write");
        let (status, headers, body) = get(router(dir.path()), "/pkg/client/burrow_client.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "export {}");
        assert_eq!(
            headers.get(header::CACHE_CONTROL).map(|v| v.as_bytes()),
            Some(&b"no-cache"[..])
        );
        let (status, _, _) = get(router(dir.path()), "/pkg/../Cargo.toml").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(!packages_built(dir.path()));
    }
}
