//! Signaling: the JSON messages exchanged with burrowd.
//!
//! burrowd brokers the WebRTC handshake and never carries tunnel data.
//!
//! # Protocol flow
//!
//! 1. A client asks for a session: `POST /api/v1/workspaces/{workspace}/sessions` with
//!    `Authorization: Bearer <user token>` and a [`SessionRequest`] body. burrowd checks the
//!    token (401), that the workspace exists and is the user's (404 either way, with the same
//!    message, so a workspace of another user cannot be told from a missing one) and that
//!    its agent is online (409), writes an audit row, and answers [`SessionGrant`]: the ICE
//!    servers (with short-lived TURN credentials) and a single-use ticket for step 2. Every
//!    error body is an [`ApiError`].
//! 2. The client opens the WebSocket at [`SessionGrant::signal_path`] with `?ticket=...`
//!    (browsers cannot set headers on a WebSocket, hence the ticket) and sends
//!    [`ClientToServer`] messages: its offer, then trickled candidates.
//! 3. burrowd forwards them to the workspace's agent, which holds one WebSocket at
//!    `GET /api/v1/agent/connect` (`Authorization: Bearer <agent token>`), as
//!    [`ServerToAgent`] messages, prefixed by [`ServerToAgent::Session`] that names the user,
//!    the ICE servers and, for an app's session, the one port its tunnel may reach. The agent
//!    answers with [`AgentToServer`] messages, forwarded to the client as [`ServerToClient`].
//! 4. Once the data channel is open, the session's WebSocket may close: the tunnel lives on
//!    without burrowd. The agent reports each stream it served (or refused) with
//!    [`AgentToServer::StreamReport`]; reports made while burrowd is away are queued and sent
//!    when the agent is registered again, and burrowd records each once.
//!
//! # App sessions
//!
//! A workspace app in the browser runs on an origin of its own ([`crate::app_origin`]) and
//! holds no user token, only a credential cookie for that app. Its page asks for a session
//! with `POST` [`SESSION_PATH`](crate::app_origin::SESSION_PATH) on its own origin (the
//! credential, and `Origin` equal to that origin; a [`SessionRequest`] body) and gets the
//! same [`SessionGrant`], whose [`SessionGrant::signal_path`] is
//! [`signal_path`](crate::app_origin::signal_path) on the app's origin. Steps 2
//! to 4 are the same, except that [`ServerToAgent::Session`] carries `ports: [PORT]`: the
//! agent serves that session's streams only to the app's port (within its own allowed
//! ports) and refuses every other one, its speed test included. Agents older than version 2
//! would ignore `ports`, so burrowd grants app sessions only on workspaces whose agent said
//! hello with version 2 or later (409 [`ErrorCode::AgentTooOld`] otherwise).
//!
//! Every message is one WebSocket text frame holding one JSON object tagged by `"type"`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Version of the signaling messages; sent by agents when they register.
///
/// burrowd accepts agents of [`MIN_SIGNAL_VERSION`] up to this version.
///
/// History:
/// - 1: the first version.
/// - 2: [`ServerToAgent::Session`] may carry `ports`, the only ports the session's tunnel
///   may reach (an app's session); agents of version 1 would ignore it.
pub const SIGNAL_VERSION: u32 = 2;

/// The oldest agent version burrowd still registers (it gets no app sessions).
pub const MIN_SIGNAL_VERSION: u32 = 1;

/// The first agent version that honours [`ServerToAgent::Session`]'s `ports`.
pub const PORT_RESTRICTION_VERSION: u32 = 2;

/// Path of the agents' WebSocket endpoint.
pub const AGENT_CONNECT_PATH: &str = "/api/v1/agent/connect";

/// Path of the endpoint that grants sessions, for a workspace name.
pub fn sessions_path(workspace: &str) -> String {
    format!("/api/v1/workspaces/{workspace}/sessions")
}

/// Body of a session request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRequest {
    /// Ask for a relayed path only (ICE transport policy `relay`), even where a direct one
    /// would work.
    #[serde(default)]
    pub force_relay: bool,
}

/// An opaque session identifier chosen by burrowd.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub String);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// burrowd's answer to a [`SessionRequest`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionGrant {
    /// The session this grant opens.
    pub session_id: SessionId,
    /// The workspace's name.
    pub workspace: String,
    /// STUN and TURN servers for the peer connection, with credentials.
    pub ice_servers: Vec<IceServer>,
    /// Which candidates the peer connection may use.
    pub ice_transport_policy: IceTransportPolicy,
    /// Path of the session's signaling WebSocket (relative to burrowd's base URL).
    pub signal_path: String,
    /// Single-use secret to append as `?ticket=` to [`Self::signal_path`].
    pub ticket: String,
}

impl fmt::Debug for SessionGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionGrant")
            .field("session_id", &self.session_id)
            .field("workspace", &self.workspace)
            .field("ice_servers", &self.ice_servers)
            .field("ice_transport_policy", &self.ice_transport_policy)
            .field("signal_path", &self.signal_path)
            .field("ticket", &"<redacted>")
            .finish()
    }
}

/// A STUN or TURN server, shaped like the browser's `RTCIceServer` dictionary.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` or `turn:` URLs.
    pub urls: Vec<String>,
    /// TURN username (see [`crate::turn_auth`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl fmt::Debug for IceServer {
    // The credential is a secret; it is never logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Which ICE candidates a peer connection may use (the browser's `RTCIceTransportPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IceTransportPolicy {
    /// Any candidate: direct where the network allows, relayed otherwise.
    #[default]
    All,
    /// Relayed candidates only.
    Relay,
}

/// A trickled ICE candidate, shaped like the browser's `RTCIceCandidateInit` dictionary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    /// The candidate line (`candidate:...`); empty for the end of candidates.
    pub candidate: String,
    /// Media stream identification of the m-line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// Index of the m-line.
    #[serde(
        default,
        rename = "sdpMLineIndex",
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_m_line_index: Option<u16>,
    /// ICE username fragment the candidate belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// Messages a client sends on its session's signaling WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientToServer {
    /// The client's SDP offer (it always offers; the agent always answers).
    Offer {
        /// SDP text.
        sdp: String,
    },
    /// A trickled local candidate.
    Candidate {
        /// The candidate.
        candidate: IceCandidate,
    },
}

/// Messages burrowd sends on a session's signaling WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerToClient {
    /// The agent's SDP answer.
    Answer {
        /// SDP text.
        sdp: String,
    },
    /// A trickled candidate of the agent.
    Candidate {
        /// The candidate.
        candidate: IceCandidate,
    },
    /// The session failed; the socket closes after this.
    Error(ApiError),
}

/// Messages burrowd sends on an agent's WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerToAgent {
    /// The agent's token was accepted; it now serves this workspace.
    Registered {
        /// Workspace name.
        workspace: String,
    },
    /// A client was granted a session; its offer follows.
    Session {
        /// The session.
        session_id: SessionId,
        /// Name of the user the session belongs to.
        user: String,
        /// ICE servers for the agent's side, with credentials of its own.
        ice_servers: Vec<IceServer>,
        /// Which candidates the agent may use.
        ice_transport_policy: IceTransportPolicy,
        /// When present, the only ports this session's tunnel may reach (within the agent's
        /// own allowed ports); every other stream is refused, the speed test's (port 0)
        /// too. Absent: every port the agent allows, and the speed test. Sent only to
        /// agents of version [`PORT_RESTRICTION_VERSION`] or later.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ports: Option<Vec<u16>>,
    },
    /// The client's offer.
    Offer {
        /// The session.
        session_id: SessionId,
        /// SDP text.
        sdp: String,
    },
    /// A trickled candidate of the client.
    Candidate {
        /// The session.
        session_id: SessionId,
        /// The candidate.
        candidate: IceCandidate,
    },
    /// burrowd recorded a stream report; the agent may drop it from its queue.
    ReportAck {
        /// The session of the report.
        session_id: SessionId,
        /// The stream of the report.
        stream_id: u32,
    },
    /// The agent's request was refused.
    Error(ApiError),
}

/// Messages an agent sends on its WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentToServer {
    /// First message after connecting.
    Hello {
        /// [`SIGNAL_VERSION`] of the agent.
        version: u32,
        /// Ports the agent will dial, for the dashboard.
        allowed_ports: Vec<u16>,
    },
    /// The agent's SDP answer.
    Answer {
        /// The session.
        session_id: SessionId,
        /// SDP text.
        sdp: String,
    },
    /// A trickled candidate of the agent.
    Candidate {
        /// The session.
        session_id: SessionId,
        /// The candidate.
        candidate: IceCandidate,
    },
    /// The agent could not answer the session (bad SDP, ...); forwarded to the client.
    SessionError {
        /// The session.
        session_id: SessionId,
        /// What went wrong.
        error: ApiError,
    },
    /// A stream the agent served or refused, for the audit log.
    StreamReport(StreamReport),
}

/// The agent's account of one stream, recorded in burrowd's audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamReport {
    /// Session the stream belonged to.
    pub session_id: SessionId,
    /// Stream identifier within the session's tunnel.
    pub stream_id: u32,
    /// Workspace port the client asked for.
    pub port: u16,
    /// When the stream was opened, in Unix milliseconds.
    pub started_at_ms: u64,
    /// When it ended, in Unix milliseconds.
    pub ended_at_ms: u64,
    /// Bytes from the client to the workspace port.
    pub bytes_to_workspace: u64,
    /// Bytes from the workspace port to the client.
    pub bytes_to_client: u64,
    /// Whether the tunnel ran directly or through a relay.
    pub path: PathKind,
    /// How the stream ended.
    pub outcome: String,
}

/// The network path of a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// Peer to peer (host or server-reflexive candidates on both sides).
    Direct,
    /// Through a TURN relay.
    Relay,
    /// Not known (the connection was never established).
    Unknown,
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Direct => "direct",
            Self::Relay => "relay",
            Self::Unknown => "unknown",
        })
    }
}

/// The error body of every failed API call and the payload of signaling errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// Builds an error from a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}

/// Stable error codes of [`ApiError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No token, or a token that is not valid (HTTP 401).
    Unauthorized,
    /// The request may not be made this way, such as a browser request from a page of
    /// another origin (HTTP 403). Another user's workspace is [`Self::NotFound`].
    Forbidden,
    /// No such workspace, app or session, or one that is not the caller's (HTTP 404).
    NotFound,
    /// The workspace's agent is not connected (HTTP 409).
    AgentOffline,
    /// The workspace's agent is too old for browser apps: it cannot restrict a session to
    /// one port (HTTP 409).
    AgentTooOld,
    /// This burrowd serves no apps in the browser: it was started without `--apps-url`
    /// (HTTP 409).
    AppsDisabled,
    /// The request was malformed (HTTP 400).
    BadRequest,
    /// The SDP could not be used.
    BadSdp,
    /// Something failed on the server side (HTTP 500).
    Internal,
}

impl ErrorCode {
    /// The code as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::AgentOffline => "agent_offline",
            Self::AgentTooOld => "agent_too_old",
            Self::AppsDisabled => "apps_disabled",
            Self::BadRequest => "bad_request",
            Self::BadSdp => "bad_sdp",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status that carries this code.
    pub fn http_status(self) -> u16 {
        match self {
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::AgentOffline | Self::AgentTooOld | Self::AppsDisabled => 409,
            Self::BadRequest | Self::BadSdp => 400,
            Self::Internal => 500,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_json_matches_the_browser_dictionary() {
        let c = IceCandidate {
            candidate: "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(
            json,
            r#"{"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0}"#
        );
        let back: IceCandidate = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn messages_are_tagged_by_type() {
        let m = ClientToServer::Offer { sdp: "v=0".into() };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"offer","sdp":"v=0"}"#
        );
        let e = ServerToClient::Error(ApiError::new(ErrorCode::AgentOffline, "no agent"));
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"error","code":"agent_offline","message":"no agent"}"#
        );
    }

    #[test]
    fn session_ports_are_sent_only_when_restricted_and_read_from_version_1_messages() {
        let restricted = ServerToAgent::Session {
            session_id: SessionId("s".into()),
            user: "alice".into(),
            ice_servers: vec![],
            ice_transport_policy: IceTransportPolicy::All,
            ports: Some(vec![8080]),
        };
        let json = serde_json::to_string(&restricted).unwrap();
        assert_eq!(
            json,
            r#"{"type":"session","session_id":"s","user":"alice","ice_servers":[],"ice_transport_policy":"all","ports":[8080]}"#
        );
        assert_eq!(
            serde_json::from_str::<ServerToAgent>(&json).unwrap(),
            restricted
        );
        // What burrowd sends for an unrestricted session is what version 1 had.
        let v1 = r#"{"type":"session","session_id":"s","user":"alice","ice_servers":[],"ice_transport_policy":"all"}"#;
        let open: ServerToAgent = serde_json::from_str(v1).unwrap();
        assert!(matches!(open, ServerToAgent::Session { ports: None, .. }));
        assert_eq!(serde_json::to_string(&open).unwrap(), v1);
    }

    #[test]
    fn new_error_codes_are_409() {
        for code in [ErrorCode::AgentTooOld, ErrorCode::AppsDisabled] {
            assert_eq!(code.http_status(), 409);
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn unknown_message_type_is_an_error_not_a_panic() {
        let r: Result<AgentToServer, _> = serde_json::from_str(r#"{"type":"launch_missiles"}"#);
        assert!(r.is_err());
        let r: Result<AgentToServer, _> = serde_json::from_str("not json");
        assert!(r.is_err());
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let s = IceServer {
            urls: vec!["turn:127.0.0.1:3478".into()],
            username: Some("1700000000:alice".into()),
            credential: Some("s3cret".into()),
        };
        assert!(!format!("{s:?}").contains("s3cret"));
        let g = SessionGrant {
            session_id: SessionId("s1".into()),
            workspace: "w".into(),
            ice_servers: vec![s],
            ice_transport_policy: IceTransportPolicy::Relay,
            signal_path: "/x".into(),
            ticket: "t1ck3t".into(),
        };
        let dbg = format!("{g:?}");
        assert!(!dbg.contains("t1ck3t") && !dbg.contains("s3cret"));
    }
}
