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

/// Options of `burrowd demo`.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// burrowd's HTTP address.
    pub listen: SocketAddr,
    /// The embedded relay's UDP address.
    pub relay_listen: SocketAddr,
    /// Data directory; a fresh temporary one when `None`.
    pub data_dir: Option<PathBuf>,
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

    let mut server_config = crate::ServerConfig::new(config.listen, &data_dir);
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
    let user_token = match server.db.add_user("demo", now).await {
        Ok(token) => token,
        Err(e) => anyhow::bail!("creating the demo user (use a fresh --data-dir): {e}"),
    };
    let agent_token = server
        .db
        .add_workspace("demo", "demo", now)
        .await
        .context("creating the demo workspace")?;

    let base_url = server.base_url();
    let agent = burrow_agent::Agent::new(
        burrow_agent::AgentConfig {
            url: base_url.clone(),
            token: agent_token,
            allowed_ports: vec![app_port],
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

    eprintln!(
        "\nBurrow demo is running (Ctrl-C to stop).\n\
         \n  Dashboard:   {base_url}/#token={user_token}\
         \n  User token:  {user_token}\
         \n  Workspace:   demo, serving a sample web app on its port {app_port}\
         \n\nReach the app through a WebRTC tunnel:\
         \n  cargo run --release --bin burrow -- --url {base_url} --token {user_token} port-forward demo 8081:{app_port}\
         \n  curl http://127.0.0.1:8081/\
         \n  cargo run --release --bin burrow -- --url {base_url} --token {user_token} ping demo --force-relay\n"
    );
    server.run_until(shutdown).await.context("serving")?;
    Ok(())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
