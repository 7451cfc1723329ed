//! The signaling broker's routing table, in memory: which agent connection serves each
//! workspace, and which client socket waits for each session.
//!
//! Every queue is bounded and filled with `try_send`: a socket that does not keep up loses
//! its session (with an error), it never stalls the other side. In particular the agent's
//! socket, shared by all of a workspace's sessions, is never blocked by one slow client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use burrow_proto::signal::{ApiError, ErrorCode, ServerToAgent, ServerToClient};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// Messages queued for one agent connection.
pub const AGENT_QUEUE: usize = 256;
/// Messages queued for one client socket (an answer and a few dozen candidates).
pub const CLIENT_QUEUE: usize = 64;

/// What an agent connection task receives when it registers.
#[derive(Debug)]
pub struct AgentRegistration {
    /// Identifies this connection among the workspace's successive ones.
    pub conn_id: u64,
    /// Messages to write to the agent.
    pub rx: mpsc::Receiver<ServerToAgent>,
    /// Fires when a newer connection of the workspace replaced this one or the server is
    /// shutting down.
    pub replaced: oneshot::Receiver<()>,
}

/// What a client session task receives when it opens.
#[derive(Debug)]
pub struct ClientRegistration {
    /// Queue to the agent serving the session's workspace.
    pub agent_tx: mpsc::Sender<ServerToAgent>,
    /// The signaling version that agent said hello with.
    pub agent_version: u32,
    /// Messages to write to the client.
    pub rx: mpsc::Receiver<ServerToClient>,
    /// Fires with the reason when the session must end (agent gone, client too slow, ...).
    pub killed: oneshot::Receiver<ApiError>,
}

struct AgentEntry {
    conn_id: u64,
    version: u32,
    tx: mpsc::Sender<ServerToAgent>,
    replaced: Option<oneshot::Sender<()>>,
}

struct SessionEntry {
    workspace_id: i64,
    agent_conn: u64,
    tx: mpsc::Sender<ServerToClient>,
    kill: Option<oneshot::Sender<ApiError>>,
}

impl SessionEntry {
    fn kill(mut self, reason: ApiError) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(reason);
        }
    }
}

#[derive(Default)]
struct Routes {
    agents: HashMap<i64, AgentEntry>,
    sessions: HashMap<String, SessionEntry>,
}

/// The routing table. The lock is never held across an `.await`.
#[derive(Default)]
pub struct Broker {
    routes: Mutex<Routes>,
    next_conn_id: AtomicU64,
}

/// What became of a message for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the client.
    Queued,
    /// No such session on this workspace (finished, or never opened).
    UnknownSession,
    /// The client did not keep up; its session was ended.
    ClientTooSlow,
}

fn agent_offline() -> ApiError {
    ApiError::new(
        ErrorCode::AgentOffline,
        "the workspace's agent disconnected",
    )
}

impl Broker {
    fn routes(&self) -> MutexGuard<'_, Routes> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters (each operation is one insert or remove), so keep going with them.
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new agent connection for `workspace_id`, which said hello with signaling
    /// `version`, replacing (and signalling) the previous one; sessions routed to the
    /// previous one end with `agent_offline`.
    pub fn register_agent(&self, workspace_id: i64, version: u32) -> AgentRegistration {
        let conn_id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(AGENT_QUEUE);
        let (replaced_tx, replaced) = oneshot::channel();
        let mut routes = self.routes();
        let old = routes.agents.insert(
            workspace_id,
            AgentEntry {
                conn_id,
                version,
                tx,
                replaced: Some(replaced_tx),
            },
        );
        if let Some(mut old) = old {
            debug!(
                workspace_id,
                old = old.conn_id,
                new = conn_id,
                "agent connection replaced"
            );
            if let Some(r) = old.replaced.take() {
                let _ = r.send(());
            }
            kill_sessions_of(&mut routes, old.conn_id);
        }
        AgentRegistration {
            conn_id,
            rx,
            replaced,
        }
    }

    /// Removes the agent connection if it is still the workspace's current one. Returns
    /// whether it was (and so whether the workspace is now offline).
    pub fn unregister_agent(&self, workspace_id: i64, conn_id: u64) -> bool {
        let mut routes = self.routes();
        let current = routes
            .agents
            .get(&workspace_id)
            .is_some_and(|a| a.conn_id == conn_id);
        if current {
            routes.agents.remove(&workspace_id);
        }
        kill_sessions_of(&mut routes, conn_id);
        current
    }

    /// Whether the workspace has an agent connected.
    pub fn agent_online(&self, workspace_id: i64) -> bool {
        self.routes().agents.contains_key(&workspace_id)
    }

    /// The signaling version of the workspace's connected agent, if one is connected.
    pub fn agent_version(&self, workspace_id: i64) -> Option<u32> {
        self.routes().agents.get(&workspace_id).map(|a| a.version)
    }

    /// Opens the route of a session whose client just connected.
    pub fn open_session(
        &self,
        session_id: &str,
        workspace_id: i64,
    ) -> Result<ClientRegistration, ApiError> {
        let mut routes = self.routes();
        let agent = routes.agents.get(&workspace_id).ok_or_else(|| {
            ApiError::new(
                ErrorCode::AgentOffline,
                "the workspace's agent is not connected",
            )
        })?;
        let agent_tx = agent.tx.clone();
        let agent_version = agent.version;
        let agent_conn = agent.conn_id;
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        let (kill, killed) = oneshot::channel();
        let old = routes.sessions.insert(
            session_id.to_owned(),
            SessionEntry {
                workspace_id,
                agent_conn,
                tx,
                kill: Some(kill),
            },
        );
        if let Some(old) = old {
            // Tickets are single-use, so this is not expected; keep one socket per session.
            old.kill(ApiError::new(ErrorCode::BadRequest, "session reopened"));
        }
        Ok(ClientRegistration {
            agent_tx,
            agent_version,
            rx,
            killed,
        })
    }

    /// Forgets a session whose client socket closed.
    pub fn close_session(&self, session_id: &str) {
        self.routes().sessions.remove(session_id);
    }

    /// Queues a message from `workspace_id`'s agent for the session's client. An agent can
    /// reach only its own workspace's sessions.
    pub fn to_client(&self, workspace_id: i64, session_id: &str, msg: ServerToClient) -> Delivery {
        let mut routes = self.routes();
        let Some(entry) = routes.sessions.get(session_id) else {
            return Delivery::UnknownSession;
        };
        if entry.workspace_id != workspace_id {
            return Delivery::UnknownSession;
        }
        match entry.tx.try_send(msg) {
            Ok(()) => Delivery::Queued,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                routes.sessions.remove(session_id);
                Delivery::UnknownSession
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(
                    session = session_id,
                    "client not reading its signaling socket; ending the session"
                );
                if let Some(entry) = routes.sessions.remove(session_id) {
                    entry.kill(ApiError::new(
                        ErrorCode::Internal,
                        "signaling messages arrived faster than the client read them",
                    ));
                }
                Delivery::ClientTooSlow
            }
        }
    }

    /// Ends a session of `workspace_id` with `reason`, sent to its client.
    pub fn fail_session(&self, workspace_id: i64, session_id: &str, reason: ApiError) -> bool {
        let mut routes = self.routes();
        if routes
            .sessions
            .get(session_id)
            .is_none_or(|e| e.workspace_id != workspace_id)
        {
            return false;
        }
        if let Some(entry) = routes.sessions.remove(session_id) {
            entry.kill(reason);
        }
        true
    }

    /// Ends every connection: agents are told to close, sessions get an error.
    pub fn shutdown(&self) {
        let mut routes = self.routes();
        for (_, mut agent) in routes.agents.drain() {
            if let Some(r) = agent.replaced.take() {
                let _ = r.send(());
            }
        }
        for (_, session) in routes.sessions.drain() {
            session.kill(ApiError::new(
                ErrorCode::Internal,
                "burrowd is shutting down",
            ));
        }
    }

    /// Number of connected agents and open client sessions.
    pub fn counts(&self) -> (usize, usize) {
        let routes = self.routes();
        (routes.agents.len(), routes.sessions.len())
    }
}

fn kill_sessions_of(routes: &mut Routes, conn_id: u64) {
    let ids: Vec<String> = routes
        .sessions
        .iter()
        .filter(|(_, s)| s.agent_conn == conn_id)
        .map(|(id, _)| id.clone())
        .collect();
    for id in ids {
        if let Some(entry) = routes.sessions.remove(&id) {
            entry.kill(agent_offline());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burrow_proto::signal::SIGNAL_VERSION;

    #[test]
    fn the_agents_hello_version_is_remembered_per_connection() {
        let b = Broker::default();
        assert_eq!(b.agent_version(1), None);
        let old = b.register_agent(1, 1);
        assert_eq!(b.agent_version(1), Some(1));
        assert_eq!(b.open_session("s", 1).expect("open").agent_version, 1);
        let _new = b.register_agent(1, SIGNAL_VERSION);
        assert_eq!(b.agent_version(1), Some(SIGNAL_VERSION));
        assert!(!b.unregister_agent(1, old.conn_id));
        assert_eq!(b.agent_version(1), Some(SIGNAL_VERSION));
    }

    #[test]
    fn newer_agent_replaces_older_and_ends_its_sessions() {
        let b = Broker::default();
        let mut first = b.register_agent(1, SIGNAL_VERSION);
        let mut client = b.open_session("s", 1).expect("agent online");
        let _second = b.register_agent(1, SIGNAL_VERSION);
        assert!(first.replaced.try_recv().is_ok());
        let reason = client.killed.try_recv().expect("session killed");
        assert_eq!(reason.code, ErrorCode::AgentOffline);
        // The old connection leaving does not take the new one offline.
        assert!(!b.unregister_agent(1, first.conn_id));
        assert!(b.agent_online(1));
    }

    #[test]
    fn agent_cannot_reach_another_workspaces_session() {
        let b = Broker::default();
        let _a1 = b.register_agent(1, SIGNAL_VERSION);
        let _a2 = b.register_agent(2, SIGNAL_VERSION);
        let mut c = b.open_session("s", 1).expect("open");
        let answer = ServerToClient::Answer { sdp: "v=0".into() };
        assert_eq!(
            b.to_client(2, "s", answer.clone()),
            Delivery::UnknownSession
        );
        assert!(!b.fail_session(2, "s", agent_offline()));
        assert_eq!(b.to_client(1, "s", answer.clone()), Delivery::Queued);
        assert_eq!(c.rx.try_recv().ok(), Some(answer));
    }

    #[test]
    fn slow_client_loses_its_session_instead_of_blocking() {
        let b = Broker::default();
        let _a = b.register_agent(1, SIGNAL_VERSION);
        let mut c = b.open_session("s", 1).expect("open");
        let msg = ServerToClient::Answer { sdp: "v=0".into() };
        for _ in 0..CLIENT_QUEUE {
            assert_eq!(b.to_client(1, "s", msg.clone()), Delivery::Queued);
        }
        assert_eq!(b.to_client(1, "s", msg.clone()), Delivery::ClientTooSlow);
        assert!(c.killed.try_recv().is_ok());
        assert_eq!(b.to_client(1, "s", msg), Delivery::UnknownSession);
    }

    #[test]
    fn session_needs_an_online_agent() {
        let b = Broker::default();
        let err = b.open_session("s", 1).expect_err("offline");
        assert_eq!(err.code, ErrorCode::AgentOffline);
    }
}
