//! The HTTP API against a real server: session grants and refusals, listings, audit rows.

mod common;

use burrow_proto::signal::{ApiError, ErrorCode, IceTransportPolicy};
use burrow_server::AuditRow;
use burrow_server::api::WorkspaceInfo;
use common::{Env, WAIT};

async fn api_error(r: reqwest::Response) -> ApiError {
    r.json().await.expect("ApiError body")
}

#[tokio::test]
async fn session_with_bad_token_is_401_json_and_audited_without_user() {
    let env = Env::start().await;
    env.user("alice").await;
    env.workspace("box", "alice").await;
    let r = env.request_session("bu_not-a-token", "box", false).await;
    assert_eq!(r.status(), 401);
    assert_eq!(api_error(r).await.code, ErrorCode::Unauthorized);

    let no_header = env
        .http
        .post(format!("{}/api/v1/workspaces/box/sessions", env.base))
        .send()
        .await
        .expect("request");
    assert_eq!(no_header.status(), 401);

    let rows = env.audit().await;
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row.outcome, "refused: unauthorized");
        assert_eq!(row.user, None);
        assert!(
            row.remote_addr
                .as_deref()
                .is_some_and(|a| a.starts_with("127.0.0.1:"))
        );
    }
}

#[tokio::test]
async fn session_for_another_users_workspace_answers_like_a_missing_one_but_is_audited() {
    let env = Env::start().await;
    let (_alice, _agent) = env.online_workspace("alice", "box").await;
    let mallory = env.user("mallory").await;
    let foreign = env.request_session(&mallory, "box", false).await;
    let foreign = (foreign.status(), api_error(foreign).await);
    // The same name, once the workspace is gone, as the attacker would see it.
    let missing = env.request_session(&mallory, "nowhere", false).await;
    let missing = (missing.status(), api_error(missing).await);
    assert_eq!(foreign.0, 404);
    assert_eq!(foreign.0, missing.0);
    assert_eq!(foreign.1.code, missing.1.code);
    assert_eq!(foreign.1.message, r#"no workspace named "box""#);
    assert_eq!(missing.1.message, r#"no workspace named "nowhere""#);
    let row = env.wait_audit(|r| r.outcome == "refused: forbidden").await;
    assert_eq!(row.user.as_deref(), Some("mallory"));
    assert_eq!(row.workspace.as_deref(), Some("box"));
}

#[tokio::test]
async fn session_for_unknown_workspace_is_404_and_audited() {
    let env = Env::start().await;
    let alice = env.user("alice").await;
    let r = env.request_session(&alice, "nowhere", false).await;
    assert_eq!(r.status(), 404);
    assert_eq!(api_error(r).await.code, ErrorCode::NotFound);
    let row = env.wait_audit(|r| r.outcome == "refused: not found").await;
    assert_eq!(row.user.as_deref(), Some("alice"));
}

#[tokio::test]
async fn session_while_agent_offline_is_409_and_audited() {
    let env = Env::start().await;
    let alice = env.user("alice").await;
    env.workspace("box", "alice").await;
    let r = env.request_session(&alice, "box", false).await;
    assert_eq!(r.status(), 409);
    assert_eq!(api_error(r).await.code, ErrorCode::AgentOffline);
    env.wait_audit(|r| {
        r.outcome == "refused: agent offline" && r.workspace.as_deref() == Some("box")
    })
    .await;
}

#[tokio::test]
async fn granted_session_carries_relay_ice_servers_and_is_audited() {
    let env = Env::start().await;
    let (alice, _agent) = env.online_workspace("alice", "box").await;
    let r = env.request_session(&alice, "box", true).await;
    assert_eq!(r.status(), 201);
    let grant: burrow_proto::signal::SessionGrant = r.json().await.expect("grant");
    assert_eq!(grant.ice_transport_policy, IceTransportPolicy::Relay);
    assert!(grant.ticket.starts_with("bt_"));
    let relay = env.server.relay_addr.expect("embedded relay");
    let urls: Vec<&str> = grant
        .ice_servers
        .iter()
        .flat_map(|s| s.urls.iter().map(String::as_str))
        .collect();
    assert!(urls.contains(&format!("stun:{relay}").as_str()), "{urls:?}");
    let turn = grant
        .ice_servers
        .iter()
        .find(|s| s.urls.iter().any(|u| u.starts_with("turn:")))
        .expect("a turn server");
    let username = turn.username.as_deref().expect("username");
    assert!(
        username.ends_with(&format!(":{}", grant.session_id)),
        "{username}"
    );
    assert!(turn.credential.is_some());

    let row = env.wait_audit(|r| r.outcome == "session granted").await;
    assert_eq!(row.session_id.as_deref(), Some(grant.session_id.0.as_str()));
    assert_eq!(row.user.as_deref(), Some("alice"));
}

#[tokio::test]
async fn workspace_list_shows_own_workspaces_with_online_status_and_ports() {
    let env = Env::start().await;
    let alice = env.user("alice").await;
    let box_token = env.workspace("box", "alice").await;
    env.workspace("idle", "alice").await;
    env.user("bob").await;
    env.workspace("bobs", "bob").await;
    let _agent = env.agent(&box_token, &[22, 8080]).await;

    let list: Vec<WorkspaceInfo> = env
        .http
        .get(format!("{}/api/v1/workspaces", env.base))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(list.len(), 2, "{list:?}");
    let b = list.iter().find(|w| w.name == "box").expect("box");
    assert!(b.online);
    assert_eq!(b.allowed_ports, vec![22, 8080]);
    let idle = list.iter().find(|w| w.name == "idle").expect("idle");
    assert!(!idle.online);

    let r = env
        .http
        .get(format!("{}/api/v1/workspaces", env.base))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn audit_endpoint_returns_only_the_callers_rows() {
    let env = Env::start().await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    env.request_session(&alice, "nowhere", false).await;
    env.request_session(&bob, "nowhere", false).await;
    env.request_session("bu_bad", "nowhere", false).await;
    let rows: Vec<AuditRow> = env
        .http
        .get(format!("{}/api/v1/audit", env.base))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].user.as_deref(), Some("alice"));
}

#[tokio::test]
async fn healthz_is_ok() {
    let env = Env::start().await;
    let r = tokio::time::timeout(WAIT, env.http.get(format!("{}/healthz", env.base)).send())
        .await
        .expect("in time")
        .expect("request");
    assert_eq!(r.status(), 200);
}
