//! The embedded relay with the `turn` crate's client, all on 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use burrow_proto::signal::SessionGrant;
use burrow_proto::turn_auth::TurnCredential;
use burrow_server::{RelayConfig, RelayMode};
use common::{Env, WAIT, localhost0};
use tokio::net::UdpSocket;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn as _;

async fn turn_client(relay: SocketAddr, username: &str, password: &str) -> Client {
    let conn = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let client = Client::new(ClientConfig {
        stun_serv_addr: relay.to_string(),
        turn_serv_addr: relay.to_string(),
        username: username.to_owned(),
        password: password.to_owned(),
        // Learned from the server's first answer.
        realm: String::new(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(conn),
        vnet: None,
    })
    .await
    .expect("client");
    client.listen().await.expect("listen");
    client
}

/// The TURN username and password of a grant.
fn turn_credential(grant: &SessionGrant) -> (String, String) {
    let server = grant
        .ice_servers
        .iter()
        .find(|s| s.urls.iter().any(|u| u.starts_with("turn:")))
        .expect("a TURN server in the grant");
    (
        server.username.clone().expect("username"),
        server.credential.clone().expect("credential"),
    )
}

async fn env_with_session(allow_private_peers: bool) -> (Env, SessionGrant) {
    let env = Env::start_with(|c| {
        c.relay = RelayMode::Embedded(RelayConfig {
            listen: localhost0(),
            relay_ip: None,
            allow_private_peers,
        })
    })
    .await;
    let (alice, agent) = env.online_workspace("alice", "box").await;
    let grant = env.grant(&alice, "box").await;
    drop(agent);
    (env, grant)
}

#[tokio::test]
async fn credential_from_a_grant_allocates_on_the_embedded_relay() {
    let (env, grant) = env_with_session(true).await;
    let relay = env.server.relay_addr.expect("relay");
    let (user, pass) = turn_credential(&grant);
    let client = turn_client(relay, &user, &pass).await;
    let relayed = tokio::time::timeout(WAIT, client.allocate())
        .await
        .expect("allocation in time")
        .expect("allocation succeeds");
    let addr = relayed.local_addr().expect("relayed address");
    assert_eq!(addr.ip(), relay.ip());
    // The relay answers STUN binding requests too.
    let mapped = tokio::time::timeout(WAIT, client.send_binding_request())
        .await
        .expect("in time")
        .expect("binding");
    assert_eq!(mapped.ip().to_string(), "127.0.0.1");
    client.close().await.expect("close");
}

#[tokio::test]
async fn expired_credential_is_refused_and_audited() {
    let (env, grant) = env_with_session(true).await;
    let relay = env.server.relay_addr.expect("relay");
    let secret = burrow_server::relay::load_or_create_secret(env.dir.path()).expect("secret");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let expired = TurnCredential::mint(&secret, &grant.session_id.0, now - 10);
    let client = turn_client(relay, &expired.username, &expired.password).await;
    let result = tokio::time::timeout(WAIT, client.allocate())
        .await
        .expect("answer in time");
    assert!(result.is_err(), "an expired credential must not allocate");
    let row = env
        .wait_audit(|r| r.outcome == "refused: turn credential expired")
        .await;
    assert_eq!(row.session_id.as_deref(), Some(grant.session_id.0.as_str()));
    assert_eq!(row.user.as_deref(), Some("alice"));
    assert_eq!(row.workspace.as_deref(), Some("box"));
    assert!(row.remote_addr.is_some());
    client.close().await.expect("close");
}

#[tokio::test]
async fn credential_under_another_secret_is_refused() {
    let (env, grant) = env_with_session(true).await;
    let relay = env.server.relay_addr.expect("relay");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let forged = TurnCredential::mint(b"not the secret", &grant.session_id.0, now + 600);
    let client = turn_client(relay, &forged.username, &forged.password).await;
    let result = tokio::time::timeout(WAIT, client.allocate())
        .await
        .expect("answer in time");
    assert!(result.is_err(), "a forged credential must not allocate");
    client.close().await.expect("close");
}

/// Sends a datagram to a loopback peer through a relay allocation; returns whether it
/// arrived within `wait`.
async fn relayed_datagram_arrives(allow_private_peers: bool, wait: Duration) -> bool {
    let (env, grant) = env_with_session(allow_private_peers).await;
    let relay = env.server.relay_addr.expect("relay");
    let (user, pass) = turn_credential(&grant);
    let client = turn_client(relay, &user, &pass).await;
    let relayed = tokio::time::timeout(WAIT, client.allocate())
        .await
        .expect("allocation in time")
        .expect("allocation succeeds");
    let peer = UdpSocket::bind("127.0.0.1:0").await.expect("peer");
    let peer_addr = peer.local_addr().expect("peer addr");
    tokio::time::timeout(WAIT, relayed.send_to(b"through the relay", peer_addr))
        .await
        .expect("in time")
        .expect("send");
    let mut buf = [0u8; 64];
    let arrived = match tokio::time::timeout(wait, peer.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => &buf[..n] == b"through the relay",
        _ => false,
    };
    client.close().await.expect("close");
    arrived
}

#[tokio::test]
async fn relay_forwards_to_a_loopback_peer_when_private_peers_are_allowed() {
    assert!(relayed_datagram_arrives(true, WAIT).await);
}

#[tokio::test]
async fn relay_refuses_a_loopback_peer_by_default() {
    assert!(!relayed_datagram_arrives(false, Duration::from_secs(2)).await);
}
