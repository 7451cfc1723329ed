//! The two kinds of signaling WebSocket: an agent's (one per workspace, long-lived) and a
//! client's (one per session, until its data channel is open).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use burrow_proto::signal::{
    AgentToServer, ApiError, ClientToServer, ErrorCode, MIN_SIGNAL_VERSION,
    PORT_RESTRICTION_VERSION, SIGNAL_VERSION, ServerToAgent, ServerToClient, StreamReport,
};
use serde::Serialize;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::{Instant, sleep, timeout};
use tracing::{debug, error, info, warn};

use crate::api::{AppState, now_ms, policy};
use crate::broker::{AgentRegistration, ClientRegistration, Delivery};
use crate::db::{AuditEntry, Session, Workspace};

/// A write that takes longer than this means the peer stopped reading; it is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an agent has to say hello after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest stream outcome text kept from an agent's report.
const MAX_OUTCOME_CHARS: usize = 200;

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, message)
}

fn agent_offline() -> ApiError {
    ApiError::new(
        ErrorCode::AgentOffline,
        "the workspace's agent disconnected",
    )
}

/// The socket is unusable (closed, failed, or too slow to take a write).
#[derive(Debug)]
struct SocketGone;

async fn send_json<T: Serialize>(socket: &mut WebSocket, msg: &T) -> Result<(), SocketGone> {
    let text = serde_json::to_string(msg).map_err(|e| {
        error!(error = %e, "could not encode a signaling message");
        SocketGone
    })?;
    match timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            debug!(error = %e, "signaling write failed");
            Err(SocketGone)
        }
        Err(_) => {
            debug!("signaling write timed out");
            Err(SocketGone)
        }
    }
}

async fn send_ping(socket: &mut WebSocket) -> Result<(), SocketGone> {
    match timeout(SEND_TIMEOUT, socket.send(Message::Ping(Default::default()))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(SocketGone),
    }
}

/// Says goodbye with a close frame, not waiting long for it.
async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = timeout(
        Duration::from_secs(1),
        socket.send(Message::Close(Some(frame))),
    )
    .await;
}

/// Serves an agent's WebSocket for `workspace` until it closes, goes silent or is replaced.
pub async fn run_agent(
    mut socket: WebSocket,
    state: AppState,
    workspace: Workspace,
    remote: Option<SocketAddr>,
) {
    let (version, allowed_ports) = match wait_hello(&mut socket).await {
        Ok(hello) => hello,
        Err(e) => {
            warn!(workspace = %workspace.name, ?remote, error = %e, "agent did not register");
            let _ = send_json(&mut socket, &ServerToAgent::Error(e)).await;
            close(socket, close_code::POLICY, "expected hello").await;
            return;
        }
    };
    // The ports are recorded before the workspace shows as online: app launches check
    // them, and one made as soon as the agent is listed must find them.
    if let Err(e) = state
        .db()
        .agent_seen(workspace.id, Some(&allowed_ports), now_ms())
        .await
    {
        error!(error = %e, workspace = %workspace.name, "could not record the agent's ports");
    }
    let mut reg = state.broker().register_agent(workspace.id, version);
    let registered = ServerToAgent::Registered {
        workspace: workspace.name.clone(),
    };
    let reason = if send_json(&mut socket, &registered).await.is_err() {
        "could not confirm the registration".to_owned()
    } else {
        info!(workspace = %workspace.name, conn = reg.conn_id, ?remote, ?allowed_ports, version, "agent registered");
        agent_loop(&mut socket, &state, &workspace, &mut reg).await
    };
    if state.broker().unregister_agent(workspace.id, reg.conn_id)
        && let Err(e) = state.db().agent_seen(workspace.id, None, now_ms()).await
    {
        error!(error = %e, workspace = %workspace.name, "could not record the agent's departure");
    }
    info!(workspace = %workspace.name, conn = reg.conn_id, %reason, "agent disconnected");
    close(socket, close_code::NORMAL, "bye").await;
}

/// Reads messages until the agent's hello; returns its version and allowed ports.
async fn wait_hello(socket: &mut WebSocket) -> Result<(u32, Vec<u16>), ApiError> {
    let deadline = Instant::now() + HELLO_TIMEOUT;
    loop {
        let msg = tokio::time::timeout_at(deadline, socket.recv())
            .await
            .map_err(|_| bad_request("no hello within 10 s"))?;
        let text = match msg {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Binary(_))) => {
                return Err(bad_request("signaling messages are JSON text frames"));
            }
            Some(Ok(Message::Close(_))) | None => {
                return Err(bad_request("closed before hello"));
            }
            Some(Err(e)) => return Err(bad_request(format!("connection error: {e}"))),
        };
        return match serde_json::from_str::<AgentToServer>(&text) {
            Ok(AgentToServer::Hello {
                version,
                allowed_ports,
            }) if (MIN_SIGNAL_VERSION..=SIGNAL_VERSION).contains(&version) => {
                Ok((version, allowed_ports))
            }
            Ok(AgentToServer::Hello { version, .. }) => Err(bad_request(format!(
                "unsupported signaling version {version}; this burrowd speaks {MIN_SIGNAL_VERSION} to {SIGNAL_VERSION}"
            ))),
            Ok(_) => Err(bad_request("the first message must be hello")),
            Err(e) => Err(bad_request(format!("malformed message: {e}"))),
        };
    }
}

/// The registered agent's message loop; returns why it ended.
async fn agent_loop(
    socket: &mut WebSocket,
    state: &AppState,
    workspace: &Workspace,
    reg: &mut AgentRegistration,
) -> String {
    let timing = state.timing();
    let mut ping =
        tokio::time::interval_at(Instant::now() + timing.ping_interval, timing.ping_interval);
    let silence = sleep(timing.silence_timeout);
    tokio::pin!(silence);
    loop {
        tokio::select! {
            msg = socket.recv() => {
                silence.as_mut().reset(Instant::now() + timing.silence_timeout);
                match msg {
                    None | Some(Ok(Message::Close(_))) => return "the agent closed".into(),
                    Some(Err(e)) => {
                        // Typically a message over the size limit; the socket is done for.
                        let _ = send_json(socket, &ServerToAgent::Error(bad_request(format!("connection error: {e}")))).await;
                        return format!("connection error: {e}");
                    }
                    Some(Ok(Message::Text(text))) => {
                        if handle_agent_message(socket, state, workspace, &text).await.is_err() {
                            return "write failed".into();
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let e = bad_request("signaling messages are JSON text frames");
                        if send_json(socket, &ServerToAgent::Error(e)).await.is_err() {
                            return "write failed".into();
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                }
            }
            out = reg.rx.recv() => match out {
                Some(msg) => {
                    if send_json(socket, &msg).await.is_err() {
                        return "write failed or timed out".into();
                    }
                }
                None => return "routing closed".into(),
            },
            _ = ping.tick() => {
                if send_ping(socket).await.is_err() {
                    return "ping failed".into();
                }
            }
            () = &mut silence => return format!("silent for {:?}", timing.silence_timeout),
            _ = &mut reg.replaced => return "replaced by a newer connection, or shutting down".into(),
        }
    }
}

async fn handle_agent_message(
    socket: &mut WebSocket,
    state: &AppState,
    workspace: &Workspace,
    text: &str,
) -> Result<(), SocketGone> {
    let msg = match serde_json::from_str::<AgentToServer>(text) {
        Ok(msg) => msg,
        Err(e) => {
            debug!(workspace = %workspace.name, error = %e, "malformed message from an agent");
            let e = bad_request(format!("malformed message: {e}"));
            return send_json(socket, &ServerToAgent::Error(e)).await;
        }
    };
    let broker = state.broker();
    let (session_id, to_client) = match msg {
        AgentToServer::Hello { .. } => {
            let e = bad_request("already registered");
            return send_json(socket, &ServerToAgent::Error(e)).await;
        }
        AgentToServer::StreamReport(report) => {
            return record_report(socket, state, workspace, report).await;
        }
        AgentToServer::SessionError { session_id, error } => {
            info!(session = %session_id, error = %error, "agent ended a session");
            broker.fail_session(workspace.id, &session_id.0, error);
            return Ok(());
        }
        AgentToServer::Answer { session_id, sdp } => (session_id, ServerToClient::Answer { sdp }),
        AgentToServer::Candidate {
            session_id,
            candidate,
        } => (session_id, ServerToClient::Candidate { candidate }),
    };
    match broker.to_client(workspace.id, &session_id.0, to_client) {
        Delivery::Queued | Delivery::ClientTooSlow => {}
        // Usual after the client's data channel opened and it hung up; nothing to do.
        Delivery::UnknownSession => {
            debug!(session = %session_id, "signaling for a session with no client socket")
        }
    }
    Ok(())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Records a stream report (once per session and stream) and acknowledges it.
async fn record_report(
    socket: &mut WebSocket,
    state: &AppState,
    workspace: &Workspace,
    report: StreamReport,
) -> Result<(), SocketGone> {
    let session = match state.db().session(&report.session_id.0).await {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "could not look up a reported session");
            let e = ApiError::new(
                ErrorCode::Internal,
                "could not record the report; retry later",
            );
            return send_json(socket, &ServerToAgent::Error(e)).await;
        }
    };
    // An agent reports only its own workspace's sessions.
    let Some(session) = session.filter(|s| s.workspace_id == workspace.id) else {
        warn!(workspace = %workspace.name, session = %report.session_id, "stream report for an unknown session");
        let e = ApiError::new(
            ErrorCode::NotFound,
            format!("no session {} on this workspace", report.session_id),
        );
        return send_json(socket, &ServerToAgent::Error(e)).await;
    };
    let entry = AuditEntry {
        at_ms: now_ms(),
        user: Some(session.user_name),
        workspace: Some(session.workspace_name),
        port: Some(report.port),
        session_id: Some(session.id),
        stream_id: Some(report.stream_id),
        started_at_ms: Some(to_i64(report.started_at_ms)),
        ended_at_ms: Some(to_i64(report.ended_at_ms)),
        bytes_to_workspace: report.bytes_to_workspace,
        bytes_to_client: report.bytes_to_client,
        path: report.path.to_string(),
        outcome: report.outcome.chars().take(MAX_OUTCOME_CHARS).collect(),
        remote_addr: None,
    };
    match state.db().record_audit(&entry).await {
        Ok(new) => {
            debug!(session = %report.session_id, stream = report.stream_id, new, "stream report recorded");
            let ack = ServerToAgent::ReportAck {
                session_id: report.session_id,
                stream_id: report.stream_id,
            };
            send_json(socket, &ack).await
        }
        Err(e) => {
            // No ack: the agent keeps the report and sends it again when it reconnects.
            error!(error = %e, "could not record a stream report");
            let e = ApiError::new(
                ErrorCode::Internal,
                "could not record the report; retry later",
            );
            send_json(socket, &ServerToAgent::Error(e)).await
        }
    }
}

/// Serves a client's signaling WebSocket for `session` (whose ticket was just redeemed).
pub async fn run_client(
    mut socket: WebSocket,
    state: AppState,
    session: Session,
    remote: Option<SocketAddr>,
) {
    let reg = match state
        .broker()
        .open_session(&session.id, session.workspace_id)
    {
        Ok(reg) => reg,
        Err(e) => {
            let _ = send_json(&mut socket, &ServerToClient::Error(e)).await;
            close(socket, close_code::NORMAL, "session failed").await;
            return;
        }
    };
    debug!(session = %session.id, ?remote, "client signaling open");
    let announce = ServerToAgent::Session {
        session_id: burrow_proto::signal::SessionId(session.id.clone()),
        user: session.user_name.clone(),
        // The agent gets credentials of its own, so either side's can expire or be
        // revoked alone, and the relay's logs tell the two apart.
        ice_servers: state.ice_servers(&format!("{}:agent", session.id)),
        ice_transport_policy: policy(session.force_relay),
        ports: session.app_port.map(|p| vec![p]),
    };
    // The grant checked the agent's version, but the workspace may have been taken over
    // by an older agent since: it would ignore `ports` and serve every port.
    let failure = if session.app_port.is_some() && reg.agent_version < PORT_RESTRICTION_VERSION {
        Some(ApiError::new(
            ErrorCode::AgentTooOld,
            "the agent is too old for browser apps",
        ))
    } else {
        match reg.agent_tx.try_send(announce) {
            Ok(()) => client_loop(&mut socket, &state, &session, reg).await,
            Err(TrySendError::Full(_)) => Some(ApiError::new(
                ErrorCode::Internal,
                "the agent is not keeping up; try again",
            )),
            Err(TrySendError::Closed(_)) => Some(agent_offline()),
        }
    };
    state.broker().close_session(&session.id);
    match failure {
        Some(e) => {
            info!(session = %session.id, error = %e, "session signaling failed");
            let _ = send_json(&mut socket, &ServerToClient::Error(e)).await;
            close(socket, close_code::NORMAL, "session failed").await;
        }
        None => {
            debug!(session = %session.id, "client signaling closed");
            close(socket, close_code::NORMAL, "bye").await;
        }
    }
}

/// Relays between the client and the agent; returns the error to tell the client, if any.
async fn client_loop(
    socket: &mut WebSocket,
    state: &AppState,
    session: &Session,
    mut reg: ClientRegistration,
) -> Option<ApiError> {
    let timing = state.timing();
    let mut ping =
        tokio::time::interval_at(Instant::now() + timing.ping_interval, timing.ping_interval);
    let silence = sleep(timing.silence_timeout);
    tokio::pin!(silence);
    let session_id = burrow_proto::signal::SessionId(session.id.clone());
    loop {
        tokio::select! {
            msg = socket.recv() => {
                silence.as_mut().reset(Instant::now() + timing.silence_timeout);
                let text = match msg {
                    None | Some(Ok(Message::Close(_))) => return None,
                    Some(Err(e)) => return Some(bad_request(format!("connection error: {e}"))),
                    Some(Ok(Message::Binary(_))) => {
                        return Some(bad_request("signaling messages are JSON text frames"));
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Text(text))) => text,
                };
                let to_agent = match serde_json::from_str::<ClientToServer>(&text) {
                    Ok(ClientToServer::Offer { sdp }) => ServerToAgent::Offer {
                        session_id: session_id.clone(),
                        sdp,
                    },
                    Ok(ClientToServer::Candidate { candidate }) => ServerToAgent::Candidate {
                        session_id: session_id.clone(),
                        candidate,
                    },
                    Err(e) => return Some(bad_request(format!("malformed message: {e}"))),
                };
                match reg.agent_tx.try_send(to_agent) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        warn!(session = %session.id, "agent queue full; ending the session");
                        return Some(ApiError::new(ErrorCode::Internal, "the agent is not keeping up"));
                    }
                    Err(TrySendError::Closed(_)) => return Some(agent_offline()),
                }
            }
            out = reg.rx.recv() => match out {
                Some(msg) => {
                    if send_json(socket, &msg).await.is_err() {
                        return None;
                    }
                }
                // The route was dropped; a kill, if any, was sent before that.
                None => return Some(reg.killed.try_recv().unwrap_or_else(|_| agent_offline())),
            },
            reason = &mut reg.killed => {
                // Deliver what the agent sent before the session ended (an answer, then
                // its error, say), in order.
                while let Ok(msg) = reg.rx.try_recv() {
                    if send_json(socket, &msg).await.is_err() {
                        return None;
                    }
                }
                return Some(reason.unwrap_or_else(|_| agent_offline()));
            }
            _ = ping.tick() => {
                if send_ping(socket).await.is_err() {
                    return None;
                }
            }
            () = &mut silence => return None,
        }
    }
}
