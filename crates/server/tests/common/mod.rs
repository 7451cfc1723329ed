//! A real burrowd on 127.0.0.1:0 and real WebSocket peers speaking the signaling protocol.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use burrow_proto::signal::{
    AGENT_CONNECT_PATH, AgentToServer, ClientToServer, SIGNAL_VERSION, ServerToAgent,
    ServerToClient, SessionGrant, SessionRequest, sessions_path,
};
use burrow_server::{AuditRow, RelayConfig, RelayMode, RunningServer, ServerConfig};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Env {
    pub server: RunningServer,
    pub base: String,
    pub http: reqwest::Client,
    // Kept so the directory lives as long as the server.
    pub dir: tempfile::TempDir,
}

pub fn localhost0() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// A free TCP port on 127.0.0.1 (racy in principle; fine for a test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Env {
    /// A server whose embedded relay listens on 127.0.0.1 and may relay to loopback peers.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = ServerConfig::new(localhost0(), dir.path());
        config.relay = RelayMode::Embedded(RelayConfig {
            listen: localhost0(),
            relay_ip: None,
            allow_private_peers: true,
        });
        configure(&mut config);
        let server = tokio::time::timeout(WAIT, burrow_server::start(config))
            .await
            .expect("server starts in time")
            .expect("server starts");
        Self {
            base: server.base_url(),
            server,
            http: reqwest::Client::new(),
            dir,
        }
    }

    /// A server with apps in the browser on, under `http://*.localhost:PORT` where PORT is
    /// its own (so it listens on a port picked beforehand); its dashboard's origin is
    /// `http://127.0.0.1:PORT`.
    pub async fn start_with_apps(configure: impl FnOnce(&mut ServerConfig)) -> Self {
        let port = free_port();
        Self::start_with(|c| {
            c.listen = SocketAddr::from(([127, 0, 0, 1], port));
            c.apps_url = Some(
                burrow_proto::app_origin::AppsUrl::parse(&format!("http://*.localhost:{port}"))
                    .expect("apps url"),
            );
            configure(c);
        })
        .await
    }

    /// The dashboard's origin.
    pub fn dashboard(&self) -> String {
        self.server.origins().dashboard().to_owned()
    }

    /// `LABEL.localhost:PORT`, the `Host` of an app.
    pub fn app_host(&self, port: u16, workspace: &str, user: &str) -> String {
        format!(
            "{port}--{workspace}--{user}.localhost:{}",
            self.server.http_addr.port()
        )
    }

    /// The origin of an app.
    pub fn app_origin(&self, port: u16, workspace: &str, user: &str) -> String {
        format!("http://{}", self.app_host(port, workspace, user))
    }

    /// A request to `path` on the host `host`, sent to this server (names under
    /// `localhost` need no resolver this way).
    pub fn on_host(
        &self,
        method: reqwest::Method,
        host: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        browser()
            .request(method, format!("{}{path}", self.base))
            .header(http::header::HOST, host)
    }

    pub fn ws_base(&self) -> String {
        format!("ws://{}", self.server.http_addr)
    }

    pub async fn user(&self, name: &str) -> String {
        self.server.db.add_user(name, 0).await.expect("add user")
    }

    pub async fn workspace(&self, name: &str, owner: &str) -> String {
        self.server
            .db
            .add_workspace(name, owner, 0)
            .await
            .expect("add workspace")
    }

    pub async fn request_session(
        &self,
        token: &str,
        workspace: &str,
        force_relay: bool,
    ) -> reqwest::Response {
        tokio::time::timeout(
            WAIT,
            self.http
                .post(format!("{}{}", self.base, sessions_path(workspace)))
                .bearer_auth(token)
                .json(&SessionRequest { force_relay })
                .send(),
        )
        .await
        .expect("answer in time")
        .expect("request")
    }

    pub async fn grant(&self, token: &str, workspace: &str) -> SessionGrant {
        let r = self.request_session(token, workspace, false).await;
        assert_eq!(r.status(), 201, "session should be granted");
        r.json().await.expect("grant json")
    }

    pub async fn audit(&self) -> Vec<AuditRow> {
        self.server
            .db
            .audit_log(None, 1000)
            .await
            .expect("audit log")
    }

    /// Waits (bounded) for an audit row matching `pred`.
    pub async fn wait_audit(&self, pred: impl Fn(&AuditRow) -> bool) -> AuditRow {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(row) = self.audit().await.into_iter().find(|r| pred(r)) {
                return row;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no matching audit row in {WAIT:?}; log: {:#?}",
                self.audit().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Opens the agent WebSocket with `token` (no hello yet).
    pub async fn agent_socket(&self, token: &str) -> Result<Ws, tungstenite::Error> {
        let mut request = format!("{}{}", self.ws_base(), AGENT_CONNECT_PATH)
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
        tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect in time")
            .map(|(ws, _)| ws)
    }

    /// Connects and registers an agent serving `ports`.
    pub async fn agent(&self, token: &str, ports: &[u16]) -> Ws {
        self.agent_of_version(token, ports, SIGNAL_VERSION).await
    }

    /// Connects and registers an agent of signaling `version` serving `ports`.
    pub async fn agent_of_version(&self, token: &str, ports: &[u16], version: u32) -> Ws {
        let mut ws = self.agent_socket(token).await.expect("agent connects");
        send(
            &mut ws,
            &AgentToServer::Hello {
                version,
                allowed_ports: ports.to_vec(),
            },
        )
        .await;
        match recv::<ServerToAgent>(&mut ws).await {
            ServerToAgent::Registered { .. } => ws,
            other => panic!("expected registered, got {other:?}"),
        }
    }

    /// Opens a session's signaling socket.
    pub async fn client_socket(&self, grant: &SessionGrant) -> Result<Ws, tungstenite::Error> {
        let url = format!(
            "{}{}?ticket={}",
            self.ws_base(),
            grant.signal_path,
            grant.ticket
        );
        tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url.as_str()))
            .await
            .expect("connect in time")
            .map(|(ws, _)| ws)
    }

    /// A workspace `ws` owned by `user` with a registered agent; returns (user token, agent).
    pub async fn online_workspace(&self, user: &str, ws: &str) -> (String, Ws) {
        let token = self.user(user).await;
        let agent_token = self.workspace(ws, user).await;
        let agent = self.agent(&agent_token, &[22]).await;
        (token, agent)
    }
}

/// An HTTP client that, like a test of a browser's view, follows no redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The `name=value` of the response's `Set-Cookie` for `name`, and the whole header.
pub fn set_cookie(r: &reqwest::Response, name: &str) -> Option<(String, String)> {
    r.headers()
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let pair = v.split(';').next().unwrap_or_default().to_owned();
            (pair, v.to_owned())
        })
}

/// Opens a WebSocket at `path` on `host` of this server with `origin` (if any).
pub async fn ws_on_host(
    env: &Env,
    host: &str,
    path: &str,
    origin: Option<&str>,
) -> Result<Ws, tungstenite::Error> {
    let mut request = format!("{}{path}", env.ws_base())
        .into_client_request()
        .expect("request");
    let headers = request.headers_mut();
    headers.insert(http::header::HOST, host.parse().expect("host"));
    if let Some(origin) = origin {
        headers.insert(http::header::ORIGIN, origin.parse().expect("origin"));
    }
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect in time")
        .map(|(ws, _)| ws)
}

/// Asserts that a WebSocket attempt was refused with HTTP `status` before upgrading.
pub fn assert_refused(result: Result<Ws, tungstenite::Error>, status: u16) {
    match result {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), status),
        Err(e) => panic!("expected HTTP {status}, got {e}"),
        Ok(_) => panic!("expected HTTP {status}, got an open WebSocket"),
    }
}

pub async fn send<T: serde::Serialize>(ws: &mut Ws, msg: &T) {
    let text = serde_json::to_string(msg).expect("encode");
    tokio::time::timeout(WAIT, ws.send(Message::text(text)))
        .await
        .expect("send in time")
        .expect("send");
}

/// The next text message, decoded; pings are skipped (and answered by tungstenite).
pub async fn recv<T: serde::de::DeserializeOwned>(ws: &mut Ws) -> T {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("message in time")
            .expect("socket open")
            .expect("socket ok");
        match msg {
            Message::Text(text) => {
                return serde_json::from_str(text.as_str())
                    .unwrap_or_else(|e| panic!("bad message {text}: {e}"));
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Waits (bounded) for the socket to close, skipping anything else.
pub async fn expect_closed(ws: &mut Ws) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("socket not closed within {WAIT:?}"),
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

pub fn offer() -> ClientToServer {
    ClientToServer::Offer {
        sdp: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n".into(),
    }
}

pub fn client_error(msg: ServerToClient) -> burrow_proto::signal::ApiError {
    match msg {
        ServerToClient::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}
