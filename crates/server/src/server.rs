//! Starting and stopping a whole burrowd in-process: database, relay, HTTP API.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use burrow_proto::app_origin::AppsUrl;

use crate::api::{AppState, IceConfig, Timing, TurnConfig};
use crate::db::{AuditEntry, Db, DbError};
use crate::origins::Origins;
use crate::relay::{self, Relay, RelayConfig, RelayError, TurnRefusal};

/// How long shutdown waits for connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Which TURN relay sessions use.
#[derive(Clone)]
pub enum RelayMode {
    /// No relay: only direct paths (and any `stun_urls`).
    None,
    /// burrowd's own relay.
    Embedded(RelayConfig),
    /// An external TURN server (coturn with `use-auth-secret`) sharing `secret`.
    External {
        /// Its `turn:` URL.
        turn_url: String,
        /// Its `static-auth-secret`.
        secret: String,
    },
}

impl std::fmt::Debug for RelayMode {
    // The external secret is never logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Embedded(c) => f.debug_tuple("Embedded").field(c).finish(),
            Self::External { turn_url, .. } => f
                .debug_struct("External")
                .field("turn_url", turn_url)
                .field("secret", &"<redacted>")
                .finish(),
        }
    }
}

/// How to run burrowd.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// HTTP listen address (port 0 picks one; see [`RunningServer::http_addr`]).
    pub listen: SocketAddr,
    /// Directory of the database and the relay secret.
    pub data_dir: PathBuf,
    /// The URL clients and agents use to reach this server. Its origin is the dashboard's,
    /// which browser requests made with the login cookie must come from; without it,
    /// `http://<listen address>`.
    pub public_url: Option<String>,
    /// The wildcard URL workspace apps are served under in the browser, each on an origin
    /// of its own (`http://*.localhost:8080`). `None`: no apps in the browser.
    pub apps_url: Option<AppsUrl>,
    /// The relay.
    pub relay: RelayMode,
    /// `stun:` URLs to hand out. Empty: the relay's own (embedded, or the external TURN
    /// server's host and port).
    pub stun_urls: Vec<String>,
    /// Ping, silence, ticket and TURN credential durations.
    pub timing: Timing,
    /// Web origins (`http://127.0.0.1:8000`) whose pages may call the API from a browser
    /// (CORS). Empty: only same-origin pages, such as the dashboard.
    pub cors_allow_origins: Vec<String>,
    /// The dashboard's web directory: its `pkg/` (the built Wasm packages, `npm run
    /// build`) is served at `/pkg/`.
    pub web_dir: PathBuf,
}

impl ServerConfig {
    /// The defaults: embedded relay on 127.0.0.1:3478 refusing private peers, TURN
    /// credentials valid 600 s.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            data_dir: data_dir.into(),
            public_url: None,
            apps_url: None,
            relay: RelayMode::Embedded(RelayConfig {
                listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3478),
                relay_ip: None,
                allow_private_peers: false,
            }),
            stun_urls: Vec::new(),
            timing: Timing::default(),
            cors_allow_origins: Vec::new(),
            web_dir: crate::web::default_web_dir(),
        }
    }
}

/// Why burrowd could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The database could not be opened.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The relay secret could not be read or created.
    #[error("relay secret in {path}: {source}")]
    Secret {
        /// Its file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The relay could not start.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// The HTTP listener could not be bound.
    #[error("binding the HTTP listener on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration does not hold together.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
}

/// A burrowd serving in this process.
pub struct RunningServer {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Where clients reach the embedded relay (its advertised address), if it runs.
    pub relay_addr: Option<SocketAddr>,
    /// The database, for admin actions while serving.
    pub db: Db,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    serve: JoinHandle<std::io::Result<()>>,
    relay: Option<Relay>,
    audit_task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("http_addr", &self.http_addr)
            .field("relay_addr", &self.relay_addr)
            .finish_non_exhaustive()
    }
}

/// Starts burrowd: opens the database, starts the relay, binds the HTTP API.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    // Checked before anything starts; without it the origin is known once bound.
    if let Some(url) = &config.public_url {
        Origins::new(url, None).map_err(|e| ServerError::Config(format!("--public-url: {e}")))?;
    }
    let db = Db::open(&config.data_dir).await?;
    let (refusal_tx, refusal_rx) = mpsc::channel::<TurnRefusal>(64);
    let (relay, turn) = match &config.relay {
        RelayMode::None => (None, None),
        RelayMode::External { turn_url, secret } => {
            if !(turn_url.starts_with("turn:") || turn_url.starts_with("turns:")) {
                return Err(ServerError::Config(format!(
                    "--turn-url {turn_url:?} must start with turn: or turns:"
                )));
            }
            if secret.is_empty() {
                return Err(ServerError::Config("the TURN secret is empty".into()));
            }
            let turn = TurnConfig {
                urls: vec![turn_url.clone()],
                secret: Arc::from(secret.as_bytes()),
            };
            (None, Some(turn))
        }
        RelayMode::Embedded(relay_config) => {
            let secret = relay::load_or_create_secret(&config.data_dir).map_err(|source| {
                ServerError::Secret {
                    path: config.data_dir.join(relay::SECRET_FILE),
                    source,
                }
            })?;
            let relay = Relay::start(relay_config, Arc::clone(&secret), refusal_tx).await?;
            let turn = TurnConfig {
                urls: vec![format!("turn:{}", relay.advertised_addr())],
                secret,
            };
            (Some(relay), Some(turn))
        }
    };
    let stun_urls = if !config.stun_urls.is_empty() {
        config.stun_urls.clone()
    } else if let Some(relay) = &relay {
        vec![format!("stun:{}", relay.advertised_addr())]
    } else if let RelayMode::External { turn_url, .. } = &config.relay {
        stun_url_of(turn_url).into_iter().collect()
    } else {
        Vec::new()
    };
    let ice = IceConfig { stun_urls, turn };
    info!(?ice, relay = ?config.relay, "ICE servers");

    let audit_task = tokio::spawn(record_relay_refusals(db.clone(), refusal_rx));

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let dashboard_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| Origins::dashboard_url_of(http_addr));
    let origins = Origins::new(&dashboard_url, config.apps_url.clone())
        .map_err(|e| ServerError::Config(format!("--public-url: {e}")))?;
    if config.public_url.is_none() && http_addr.ip().is_unspecified() {
        warn!(dashboard = %origins.dashboard(), "no --public-url: browsers must reach the dashboard at exactly this origin, or their logins are refused");
    }
    if let Some(apps) = origins.apps()
        && !apps.is_secure_context()
    {
        warn!(apps_url = %apps, "app origins are plain HTTP outside localhost: browsers keep no Secure cookie there, so apps shown inside the dashboard cannot keep their credential; use https:// or *.localhost");
    }
    let state = AppState::new(db.clone(), ice, config.timing, origins);
    let (stop, stopped) = oneshot::channel::<()>();
    if !crate::web::packages_built(&config.web_dir) {
        warn!(web_dir = %config.web_dir.display(), "the dashboard's Wasm packages are not built (npm run build): the dashboard cannot open tunnels");
    }
    let app = crate::host::service(state.clone(), &config.web_dir, &config.cors_allow_origins)?
        .into_make_service_with_connect_info::<SocketAddr>();
    let serve = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    let apps_url = state.origins().apps().map(ToString::to_string);
    info!(%http_addr, public_url = %dashboard_url, dashboard = %state.origins().dashboard(),
          apps_url = apps_url.as_deref().unwrap_or("off"), data_dir = %config.data_dir.display(),
          "burrowd listening");
    Ok(RunningServer {
        http_addr,
        relay_addr: relay.as_ref().map(Relay::advertised_addr),
        db,
        state,
        stop: Some(stop),
        serve,
        relay,
        audit_task: Some(audit_task),
    })
}

/// `stun:host:port` of a `turn:host:port[?transport=...]` URL (coturn answers STUN too).
fn stun_url_of(turn_url: &str) -> Option<String> {
    let rest = turn_url.strip_prefix("turn:")?;
    let host_port = rest.split('?').next().unwrap_or(rest);
    (!host_port.is_empty()).then(|| format!("stun:{host_port}"))
}

impl RunningServer {
    /// The HTTP base URL, `http://<http_addr>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The dashboard's origin and the apps URL it serves.
    pub fn origins(&self) -> &Origins {
        self.state.origins()
    }

    /// The URL agents connect to.
    pub fn agent_connect_url(&self) -> String {
        format!(
            "ws://{}{}",
            self.http_addr,
            burrow_proto::signal::AGENT_CONNECT_PATH
        )
    }

    /// Serves until `signal` completes (or the HTTP server fails), then shuts down.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), ServerError> {
        let failed = tokio::select! {
            () = signal => None,
            r = &mut self.serve => Some(r),
        };
        match failed {
            None => self.shutdown().await,
            Some(r) => {
                self.close_rest().await;
                match r {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(ServerError::Serve(e)),
                    Err(e) => Err(ServerError::Serve(std::io::Error::other(e))),
                }
            }
        }
    }

    /// Stops serving: closes every WebSocket (agents and clients are told), waits up to a
    /// few seconds for requests in flight, stops the relay and closes the database.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        info!("shutting down");
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.state.broker().shutdown();
        let result = match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.serve).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(ServerError::Serve(e)),
            Ok(Err(e)) => Err(ServerError::Serve(std::io::Error::other(e))),
            Err(_) => {
                warn!("connections still open after {SHUTDOWN_GRACE:?}; closing anyway");
                self.serve.abort();
                Ok(())
            }
        };
        self.close_rest().await;
        result
    }

    async fn close_rest(&mut self) {
        self.state.broker().shutdown();
        if let Some(relay) = self.relay.take() {
            relay.close().await;
        }
        if let Some(task) = self.audit_task.take() {
            // Refusals already queued are worth a moment; the relay's sender may outlive it.
            if tokio::time::timeout(Duration::from_millis(500), async {
                while !task.is_finished() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .is_err()
            {
                task.abort();
            }
        }
        self.db.close().await;
    }
}

/// Writes the relay's credential refusals to the audit log, with the session's user and
/// workspace when the username names a real session.
async fn record_relay_refusals(db: Db, mut refusals: mpsc::Receiver<TurnRefusal>) {
    while let Some(r) = refusals.recv().await {
        let mut entry = AuditEntry::event(r.at_ms, r.outcome());
        entry.remote_addr = Some(r.remote.to_string());
        if let Some(id) = r.claimed_session_id() {
            match db.session(id).await {
                Ok(Some(s)) => {
                    entry.user = Some(s.user_name);
                    entry.workspace = Some(s.workspace_name);
                    entry.session_id = Some(s.id);
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "could not look up a refused TURN username's session"),
            }
        }
        if let Err(e) = db.record_audit(&entry).await {
            error!(error = %e, "could not record a TURN refusal in the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_url_is_derived_from_turn_url() {
        assert_eq!(
            stun_url_of("turn:relay.example:3478?transport=udp").as_deref(),
            Some("stun:relay.example:3478")
        );
        assert_eq!(stun_url_of("turns:relay.example:5349"), None);
    }

    #[test]
    fn relay_mode_debug_hides_the_external_secret() {
        let m = RelayMode::External {
            turn_url: "turn:x:3478".into(),
            secret: "hunter2".into(),
        };
        assert!(!format!("{m:?}").contains("hunter2"));
    }
}
