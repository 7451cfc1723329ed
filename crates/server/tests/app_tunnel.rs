//! An app's session, end to end on loopback with a real burrowd, a real agent and a real
//! WebRTC peer: its tunnel reaches the app's port and no other, not even another port the
//! agent allows, nor the agent's speed test. A session granted with a token, on the same
//! agent, reaches both: the refusals are the app session's restriction, nothing else.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use burrow_agent::{Agent, AgentConfig};
use burrow_peer::stack::{PeerConfig, PeerEvent, PeerSession, PeerStack};
use burrow_peer::tunnel::{self, ClientTunnel, OpenError, TunnelConfig};
use burrow_peer::webrtc_rs::WebrtcStack;
use burrow_proto::app_origin::{Launch, LaunchRequest, launch_path};
use burrow_proto::signal::{ClientToServer, ServerToClient, SessionGrant, SessionRequest};
use burrow_proto::speedtest::SPEEDTEST_PORT;
use common::{Env, WAIT, Ws, recv, send, set_cookie, ws_on_host};
use futures_util::StreamExt as _;
use reqwest::Method;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// A TCP echo server on loopback; returns its port.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

fn stack() -> WebrtcStack {
    WebrtcStack::new().with_bind_addr(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Waits (bounded) until `workspace`'s agent is registered.
async fn wait_online(env: &Env, token: &str, workspace: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list: Vec<burrow_server::api::WorkspaceInfo> = env
            .http
            .get(format!("{}/api/v1/workspaces", env.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        if list.iter().any(|w| w.name == workspace && w.online) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent never registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects a tunnel with `grant`, signaling on `ws`; the client's half of what `burrow`
/// and the browser client do.
async fn connect(mut ws: Ws, grant: &SessionGrant) -> (ClientTunnel, Arc<dyn PeerSession>) {
    let (peer, offer) = stack()
        .offer(PeerConfig {
            ice_servers: grant.ice_servers.clone(),
            ice_transport_policy: grant.ice_transport_policy,
        })
        .await
        .expect("offer");
    let peer: Arc<dyn PeerSession> = Arc::from(peer);
    send(&mut ws, &ClientToServer::Offer { sdp: offer }).await;
    let setup = async {
        loop {
            tokio::select! {
                msg = recv::<ServerToClient>(&mut ws) => match msg {
                    ServerToClient::Answer { sdp } => peer.set_answer(&sdp).await.expect("answer"),
                    ServerToClient::Candidate { candidate } => {
                        let _ = peer.add_remote_candidate(candidate).await;
                    }
                    ServerToClient::Error(e) => panic!("burrowd ended the session: {e}"),
                },
                event = peer.next_event() => match event {
                    Some(PeerEvent::LocalCandidate(Some(candidate))) => {
                        send(&mut ws, &ClientToServer::Candidate { candidate }).await;
                    }
                    Some(PeerEvent::LocalCandidate(None)) => {}
                    Some(PeerEvent::Connected(_)) => return,
                    other => panic!("peer connection failed: {other:?}"),
                },
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), setup)
        .await
        .expect("connected in time");
    let channel = tokio::time::timeout(WAIT, peer.data_channel())
        .await
        .expect("data channel in time")
        .expect("data channel");
    let (tunnel, driver) = tunnel::client(channel, TunnelConfig::default());
    tokio::spawn(driver);
    // Drain the peer's events, and the socket until burrowd closes it.
    {
        let peer = Arc::clone(&peer);
        tokio::spawn(async move { while peer.next_event().await.is_some() {} });
    }
    tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
    (tunnel, peer)
}

async fn echoes(tunnel: &ClientTunnel, port: u16) {
    let mut stream = tokio::time::timeout(WAIT, tunnel.open(port))
        .await
        .expect("open in time")
        .expect("open");
    stream.write_all(b"hello app").await.expect("write");
    let mut buf = [0u8; 9];
    tokio::time::timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&buf, b"hello app");
}

async fn refused(tunnel: &ClientTunnel, port: u16) {
    match tokio::time::timeout(WAIT, tunnel.open(port))
        .await
        .expect("answer in time")
    {
        Err(OpenError::Refused { reason, .. }) => {
            assert_eq!(reason, format!("port {port} is not allowed"));
        }
        Err(e) => panic!("port {port}: expected a refusal, got {e}"),
        Ok(_) => panic!("port {port} must be refused on an app's session"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_session_reaches_its_port_and_neither_another_allowed_port_nor_the_speed_test() {
    let env = Env::start_with_apps(|_| {}).await;
    let alice = env.user("alice").await;
    let agent_token = env.workspace("box", "alice").await;
    let (app, other) = (echo_server().await, echo_server().await);
    let agent = Agent::new(
        AgentConfig {
            url: env.base.clone(),
            token: agent_token,
            allowed_ports: vec![app, other],
            dial_host: std::net::Ipv4Addr::LOCALHOST.into(),
            tunnel: TunnelConfig::default(),
            max_backoff: Duration::from_secs(1),
        },
        Arc::new(stack()),
    );
    let agent = tokio::spawn(agent.run());
    wait_online(&env, &alice, "box").await;

    // The browser's way in: launch, redeem the code on the app's host, ask for a session
    // there with the credential, signal there.
    let launch: Launch = env
        .http
        .post(format!("{}{}", env.base, launch_path("box", app)))
        .bearer_auth(&alice)
        .json(&LaunchRequest::default())
        .send()
        .await
        .expect("launch")
        .json()
        .await
        .expect("launch json");
    let host = env.app_host(app, "box", "alice");
    let origin = env.app_origin(app, "box", "alice");
    let auth_path = launch
        .url
        .strip_prefix(&origin)
        .expect("on the app's origin");
    let r = env
        .on_host(Method::GET, &host, auth_path)
        .send()
        .await
        .expect("auth");
    assert_eq!(r.status(), 303);
    let cookie = set_cookie(&r, "__Host-burrow_app").expect("credential").0;
    let r = env
        .on_host(Method::POST, &host, "/.burrow/session")
        .header("cookie", &cookie)
        .header("origin", &origin)
        .json(&SessionRequest::default())
        .send()
        .await
        .expect("session");
    assert_eq!(r.status(), 201);
    let grant: SessionGrant = r.json().await.expect("grant");
    let signal = format!("{}?ticket={}", grant.signal_path, grant.ticket);
    let ws = ws_on_host(&env, &host, &signal, Some(&origin))
        .await
        .expect("signal");
    let (tunnel, peer) = connect(ws, &grant).await;

    echoes(&tunnel, app).await;
    refused(&tunnel, other).await;
    refused(&tunnel, SPEEDTEST_PORT).await;
    // Still serving its own port after the refusals.
    echoes(&tunnel, app).await;
    let session = grant.session_id.0.clone();
    for port in [other, SPEEDTEST_PORT] {
        let row = env
            .wait_audit(|r| r.session_id.as_deref() == Some(&session) && r.port == Some(port))
            .await;
        assert_eq!(row.outcome, format!("refused: port {port} is not allowed"));
        assert_eq!(row.user.as_deref(), Some("alice"));
    }
    peer.close().await;

    // A token's session on the same agent reaches the other port and the speed test.
    let grant = env.grant(&alice, "box").await;
    let ws = env.client_socket(&grant).await.expect("signal");
    let (tunnel, peer) = connect(ws, &grant).await;
    echoes(&tunnel, other).await;
    let speedtest = tokio::time::timeout(WAIT, tunnel.open(SPEEDTEST_PORT))
        .await
        .expect("answer in time");
    assert!(speedtest.is_ok(), "the speed test: {:?}", speedtest.err());
    peer.close().await;
    agent.abort();
}
