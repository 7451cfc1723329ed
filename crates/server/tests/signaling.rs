//! The signaling broker with real WebSocket peers acting as agent and client.

mod common;

use std::time::Duration;

use burrow_proto::signal::{
    AgentToServer, ApiError, ClientToServer, ErrorCode, IceCandidate, IceTransportPolicy, PathKind,
    SIGNAL_VERSION, ServerToAgent, ServerToClient, SessionId, StreamReport,
};
use burrow_server::Timing;
use common::{Env, WAIT, client_error, expect_closed, offer, recv, send};
use futures_util::SinkExt as _;
use tokio_tungstenite::tungstenite::{self, Message};

fn candidate(n: u32) -> IceCandidate {
    IceCandidate {
        candidate: format!("candidate:{n} 1 udp 2122260223 127.0.0.1 5000{n} typ host"),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: None,
    }
}

#[tokio::test]
async fn offer_reaches_agent_after_session_and_answer_and_candidates_come_back() {
    let env = Env::start().await;
    let (alice, mut agent) = env.online_workspace("alice", "box").await;
    let grant = env.grant(&alice, "box").await;
    let mut client = env.client_socket(&grant).await.expect("client connects");
    send(&mut client, &offer()).await;
    send(
        &mut client,
        &ClientToServer::Candidate {
            candidate: candidate(1),
        },
    )
    .await;

    // The agent hears of the session first, with TURN credentials of its own.
    match recv::<ServerToAgent>(&mut agent).await {
        ServerToAgent::Session {
            session_id,
            user,
            ice_servers,
            ice_transport_policy,
            ports,
        } => {
            assert_eq!(session_id, grant.session_id);
            assert_eq!(user, "alice");
            assert_eq!(ice_transport_policy, IceTransportPolicy::All);
            // A token's session reaches every port the agent allows.
            assert_eq!(ports, None);
            let agent_turn = ice_servers
                .iter()
                .find_map(|s| s.username.clone())
                .expect("agent TURN username");
            assert!(agent_turn.ends_with(&format!(":{}:agent", grant.session_id)));
        }
        other => panic!("expected session first, got {other:?}"),
    }
    match recv::<ServerToAgent>(&mut agent).await {
        ServerToAgent::Offer { session_id, sdp } => {
            assert_eq!(session_id, grant.session_id);
            assert!(sdp.starts_with("v=0"));
        }
        other => panic!("expected the offer, got {other:?}"),
    }
    match recv::<ServerToAgent>(&mut agent).await {
        ServerToAgent::Candidate {
            session_id,
            candidate: c,
        } => {
            assert_eq!(session_id, grant.session_id);
            assert_eq!(c, candidate(1));
        }
        other => panic!("expected a candidate, got {other:?}"),
    }

    send(
        &mut agent,
        &AgentToServer::Answer {
            session_id: grant.session_id.clone(),
            sdp: "v=0 answer".into(),
        },
    )
    .await;
    send(
        &mut agent,
        &AgentToServer::Candidate {
            session_id: grant.session_id.clone(),
            candidate: candidate(2),
        },
    )
    .await;
    assert_eq!(
        recv::<ServerToClient>(&mut client).await,
        ServerToClient::Answer {
            sdp: "v=0 answer".into()
        }
    );
    assert_eq!(
        recv::<ServerToClient>(&mut client).await,
        ServerToClient::Candidate {
            candidate: candidate(2)
        }
    );
}

#[tokio::test]
async fn agent_session_error_reaches_the_client_and_ends_its_socket() {
    let env = Env::start().await;
    let (alice, mut agent) = env.online_workspace("alice", "box").await;
    let grant = env.grant(&alice, "box").await;
    let mut client = env.client_socket(&grant).await.expect("client connects");
    send(&mut client, &offer()).await;
    assert!(matches!(
        recv(&mut agent).await,
        ServerToAgent::Session { .. }
    ));
    send(
        &mut agent,
        &AgentToServer::SessionError {
            session_id: grant.session_id.clone(),
            error: ApiError::new(ErrorCode::BadSdp, "cannot parse"),
        },
    )
    .await;
    let e = client_error(recv(&mut client).await);
    assert_eq!(e.code, ErrorCode::BadSdp);
    expect_closed(&mut client).await;
}

#[tokio::test]
async fn bad_ticket_is_refused_with_401_before_upgrade() {
    let env = Env::start().await;
    let (alice, _agent) = env.online_workspace("alice", "box").await;
    let mut grant = env.grant(&alice, "box").await;
    let good = grant.ticket.clone();
    grant.ticket = "bt_wrong".into();
    match env.client_socket(&grant).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected HTTP 401, got {other:?}"),
    }
    env.wait_audit(|r| {
        r.outcome == "refused: bad ticket"
            && r.session_id.as_deref() == Some(grant.session_id.0.as_str())
    })
    .await;
    // The failed attempt did not spend the real ticket.
    grant.ticket = good;
    env.client_socket(&grant)
        .await
        .expect("the real ticket works");
}

#[tokio::test]
async fn used_ticket_is_refused() {
    let env = Env::start().await;
    let (alice, _agent) = env.online_workspace("alice", "box").await;
    let grant = env.grant(&alice, "box").await;
    let _first = env.client_socket(&grant).await.expect("first use");
    match env.client_socket(&grant).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected HTTP 401, got {other:?}"),
    }
}

#[tokio::test]
async fn expired_ticket_is_refused() {
    let env = Env::start_with(|c| {
        c.timing = Timing {
            ticket_ttl: Duration::from_millis(1),
            ..Timing::default()
        }
    })
    .await;
    let (alice, _agent) = env.online_workspace("alice", "box").await;
    let grant = env.grant(&alice, "box").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    match env.client_socket(&grant).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected HTTP 401, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_agent_token_is_refused_with_401_and_audited() {
    let env = Env::start().await;
    match env.agent_socket("ba_not-a-token").await {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401);
            let body = resp.body().as_deref().expect("body");
            let e: ApiError = serde_json::from_slice(body).expect("ApiError body");
            assert_eq!(e.code, ErrorCode::Unauthorized);
        }
        other => panic!("expected HTTP 401, got {other:?}"),
    }
    let row = env
        .wait_audit(|r| r.outcome == "refused: bad agent token")
        .await;
    assert_eq!(row.workspace, None);
}

#[tokio::test]
async fn agent_must_say_hello_first() {
    let env = Env::start().await;
    env.user("alice").await;
    let token = env.workspace("box", "alice").await;
    let mut ws = env.agent_socket(&token).await.expect("connects");
    send(
        &mut ws,
        &AgentToServer::Answer {
            session_id: SessionId("x".into()),
            sdp: "v=0".into(),
        },
    )
    .await;
    match recv::<ServerToAgent>(&mut ws).await {
        ServerToAgent::Error(e) => assert_eq!(e.code, ErrorCode::BadRequest),
        other => panic!("expected an error, got {other:?}"),
    }
    expect_closed(&mut ws).await;
}

fn report(session_id: &SessionId, stream_id: u32) -> StreamReport {
    StreamReport {
        session_id: session_id.clone(),
        stream_id,
        port: 22,
        started_at_ms: 1_700_000_000_000,
        ended_at_ms: 1_700_000_005_000,
        bytes_to_workspace: 1234,
        bytes_to_client: 5678,
        path: PathKind::Relay,
        outcome: "closed".into(),
    }
}

#[tokio::test]
async fn stream_report_sent_twice_is_recorded_once_and_acked_twice() {
    let env = Env::start().await;
    let (alice, mut agent) = env.online_workspace("alice", "box").await;
    let grant = env.grant(&alice, "box").await;
    for _ in 0..2 {
        send(
            &mut agent,
            &AgentToServer::StreamReport(report(&grant.session_id, 3)),
        )
        .await;
        assert_eq!(
            recv::<ServerToAgent>(&mut agent).await,
            ServerToAgent::ReportAck {
                session_id: grant.session_id.clone(),
                stream_id: 3
            }
        );
    }
    let rows: Vec<_> = env
        .audit()
        .await
        .into_iter()
        .filter(|r| r.stream_id == Some(3))
        .collect();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let r = &rows[0];
    assert_eq!(r.user.as_deref(), Some("alice"));
    assert_eq!(r.workspace.as_deref(), Some("box"));
    assert_eq!(r.port, Some(22));
    assert_eq!((r.bytes_to_workspace, r.bytes_to_client), (1234, 5678));
    assert_eq!(r.path, "relay");
    assert_eq!(r.outcome, "closed");
}

#[tokio::test]
async fn stream_report_for_another_workspaces_session_is_refused() {
    let env = Env::start().await;
    let (alice, _agent) = env.online_workspace("alice", "box").await;
    let (_bob, mut bobs_agent) = env.online_workspace("bob", "bobs").await;
    let grant = env.grant(&alice, "box").await;
    send(
        &mut bobs_agent,
        &AgentToServer::StreamReport(report(&grant.session_id, 1)),
    )
    .await;
    match recv::<ServerToAgent>(&mut bobs_agent).await {
        ServerToAgent::Error(e) => assert_eq!(e.code, ErrorCode::NotFound),
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(env.audit().await.iter().all(|r| r.stream_id.is_none()));
}

#[tokio::test]
async fn agent_reconnect_replaces_the_old_connection() {
    let env = Env::start().await;
    let alice = env.user("alice").await;
    let token = env.workspace("box", "alice").await;
    let mut old = env.agent(&token, &[22]).await;
    let mut new = env.agent(&token, &[22]).await;
    expect_closed(&mut old).await;

    // Sessions now go to the new connection.
    let grant = env.grant(&alice, "box").await;
    let mut client = env.client_socket(&grant).await.expect("client");
    send(&mut client, &offer()).await;
    assert!(matches!(
        recv(&mut new).await,
        ServerToAgent::Session { .. }
    ));
    assert!(matches!(recv(&mut new).await, ServerToAgent::Offer { .. }));
}

#[tokio::test]
async fn agent_leaving_ends_waiting_sessions_with_agent_offline() {
    let env = Env::start().await;
    let (alice, mut agent) = env.online_workspace("alice", "box").await;
    let grant = env.grant(&alice, "box").await;
    let mut client = env.client_socket(&grant).await.expect("client");
    send(&mut client, &offer()).await;
    assert!(matches!(
        recv(&mut agent).await,
        ServerToAgent::Session { .. }
    ));
    agent.close(None).await.expect("close");
    drop(agent);
    let e = client_error(recv(&mut client).await);
    assert_eq!(e.code, ErrorCode::AgentOffline);
    expect_closed(&mut client).await;
}

#[tokio::test]
async fn malformed_agent_message_gets_an_error_and_the_agent_stays() {
    let env = Env::start().await;
    let (alice, mut agent) = env.online_workspace("alice", "box").await;
    agent
        .send(Message::text("{\"type\":\"launch_missiles\"}"))
        .await
        .expect("send");
    match recv::<ServerToAgent>(&mut agent).await {
        ServerToAgent::Error(e) => assert_eq!(e.code, ErrorCode::BadRequest),
        other => panic!("expected an error, got {other:?}"),
    }
    agent.send(Message::text("not json")).await.expect("send");
    assert!(matches!(recv(&mut agent).await, ServerToAgent::Error(_)));
    // Still registered.
    let r = env.request_session(&alice, "box", false).await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn malformed_client_message_ends_the_session_with_bad_request() {
    let env = Env::start().await;
    let (alice, _agent) = env.online_workspace("alice", "box").await;
    let grant = env.grant(&alice, "box").await;
    let mut client = env.client_socket(&grant).await.expect("client");
    client.send(Message::text("{oops")).await.expect("send");
    let e = client_error(recv(&mut client).await);
    assert_eq!(e.code, ErrorCode::BadRequest);
    expect_closed(&mut client).await;
}

#[tokio::test]
async fn oversized_agent_message_is_refused_without_taking_the_server_down() {
    let env = Env::start().await;
    let (alice, mut agent) = env.online_workspace("alice", "box").await;
    let huge = serde_json::to_string(&AgentToServer::Answer {
        session_id: SessionId("x".into()),
        sdp: "a".repeat(100 * 1024),
    })
    .expect("encode");
    // The server may close before the whole frame is written; either way is fine.
    let _ = agent.send(Message::text(huge)).await;
    expect_closed(&mut agent).await;
    // The server still serves, and the workspace can register again.
    let token = env.workspace("box2", "alice").await;
    let _agent2 = env.agent(&token, &[]).await;
    let r = env.request_session(&alice, "box2", false).await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn silent_agent_is_dropped() {
    let env = Env::start_with(|c| {
        c.timing = Timing {
            ping_interval: Duration::from_millis(100),
            silence_timeout: Duration::from_millis(400),
            ..Timing::default()
        }
    })
    .await;
    let alice = env.user("alice").await;
    let token = env.workspace("box", "alice").await;
    // Registers, then never reads again, so its pings go unanswered.
    let _agent = env.agent(&token, &[22]).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = env.request_session(&alice, "box", false).await;
        if r.status() == 409 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent never dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn responsive_agent_stays_registered_past_the_silence_timeout() {
    let env = Env::start_with(|c| {
        c.timing = Timing {
            ping_interval: Duration::from_millis(100),
            silence_timeout: Duration::from_millis(400),
            ..Timing::default()
        }
    })
    .await;
    let alice = env.user("alice").await;
    let token = env.workspace("box", "alice").await;
    let mut agent = env.agent(&token, &[22]).await;
    // Reading lets tungstenite answer the server's pings.
    let reader = tokio::spawn(async move {
        use futures_util::StreamExt as _;
        while let Some(Ok(_)) = agent.next().await {}
    });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = env.request_session(&alice, "box", false).await;
    assert_eq!(r.status(), 201);
    reader.abort();
}

#[tokio::test]
async fn hello_with_unknown_version_is_refused() {
    let env = Env::start().await;
    env.user("alice").await;
    let token = env.workspace("box", "alice").await;
    let mut ws = env.agent_socket(&token).await.expect("connects");
    send(
        &mut ws,
        &AgentToServer::Hello {
            version: SIGNAL_VERSION + 1,
            allowed_ports: vec![],
        },
    )
    .await;
    match recv::<ServerToAgent>(&mut ws).await {
        ServerToAgent::Error(e) => assert_eq!(e.code, ErrorCode::BadRequest),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_agent_of_version_1_is_still_registered_and_served_token_sessions() {
    let env = Env::start().await;
    let alice = env.user("alice").await;
    let token = env.workspace("box", "alice").await;
    let mut agent = env.agent_of_version(&token, &[22], 1).await;
    let grant = env.grant(&alice, "box").await;
    let _client = env.client_socket(&grant).await.expect("client");
    assert!(matches!(
        recv(&mut agent).await,
        ServerToAgent::Session { ports: None, .. }
    ));
}

#[tokio::test]
async fn forced_relay_session_tells_the_agent_to_use_relay_candidates_only() {
    let env = Env::start().await;
    let (alice, mut agent) = env.online_workspace("alice", "box").await;
    let r = env.request_session(&alice, "box", true).await;
    assert_eq!(r.status(), 201);
    let grant: burrow_proto::signal::SessionGrant = r.json().await.expect("grant");
    let _client = env.client_socket(&grant).await.expect("client");
    match recv::<ServerToAgent>(&mut agent).await {
        ServerToAgent::Session {
            ice_transport_policy,
            ..
        } => assert_eq!(ice_transport_policy, IceTransportPolicy::Relay),
        other => panic!("expected session, got {other:?}"),
    }
}

#[tokio::test]
async fn shutdown_closes_agent_sockets_and_returns_promptly() {
    let env = Env::start().await;
    let (_alice, mut agent) = env.online_workspace("alice", "box").await;
    let Env {
        server, dir: _dir, ..
    } = env;
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown in time")
        .expect("clean shutdown");
    expect_closed(&mut agent).await;
}
