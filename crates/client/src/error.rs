//! The client's errors, and how they cross into JavaScript.

use burrow_proto::signal::{ApiError, ErrorCode};
use wasm_bindgen::{JsCast, JsValue};

/// Everything that can go wrong in the browser client.
///
/// At the JS boundary each becomes a JS `Error` named `BurrowError` whose `message` is
/// this type's `Display` (so `unauthorized: ...` for a refused token) and whose `code`
/// property is [`ClientError::code`], for programs that branch on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The options given to `connect` are unusable.
    #[error("invalid options: {0}")]
    Options(String),
    /// burrowd refused the request (bad token: `unauthorized: ...`; a workspace that does
    /// not exist or is another user's, which burrowd answers alike: `not_found: ...`; agent
    /// offline: `agent_offline: ...`).
    #[error("{0}")]
    Api(ApiError),
    /// burrowd answered something that is not an API error.
    #[error("burrowd answered HTTP {status}: {body}")]
    Http {
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// burrowd could not be reached (network down, CORS refused, ...).
    #[error("cannot reach burrowd at {url}: {message}")]
    Network {
        /// The URL asked for.
        url: String,
        /// What the browser said (browsers hide the details of CORS failures).
        message: String,
    },
    /// The signaling WebSocket failed or closed before the tunnel was up.
    #[error("signaling failed: {0}")]
    Signaling(String),
    /// The browser's WebRTC stack failed (offer, ICE, data channel).
    #[error("WebRTC failed: {0}")]
    WebRtc(String),
    /// Setting the tunnel up took too long.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The agent refused the stream; `reason` is the agent's (e.g. "port 23 is not
    /// allowed").
    #[error("stream refused: {reason}")]
    Refused {
        /// The tunnel's reset code.
        code: u16,
        /// The agent's reason.
        reason: String,
    },
    /// The agent reset the stream.
    #[error("stream reset by the agent: {reason}")]
    ResetByPeer {
        /// The tunnel's reset code.
        code: u16,
        /// The agent's reason.
        reason: String,
    },
    /// This side reset the stream (`reset()`, or the agent broke the protocol on it).
    #[error("stream was reset: {0}")]
    ResetLocally(String),
    /// A call the stream's state does not allow (write after `closeWrite`, ...).
    #[error("{0}")]
    Stream(String),
    /// The tunnel is closed.
    #[error("tunnel closed: {0}")]
    TunnelClosed(String),
    /// The tunnel lost its connection and is reconnecting; streams open at the time fail
    /// with this.
    #[error("tunnel connection lost: {0}")]
    ConnectionLost(String),
    /// A `fetch` or `webSocket` request that cannot be sent (bad URL, header, body).
    #[error("invalid request: {0}")]
    Request(String),
    /// A redirect that cannot be followed (mode "error", too many, bad Location).
    #[error("redirect refused: {0}")]
    Redirect(String),
    /// The workspace app answered something that is not valid HTTP/1.1 (or WebSocket).
    #[error("bad response from the app: {0}")]
    BadResponse(String),
}

impl ClientError {
    /// A stable code for programs: the [`ErrorCode`] string for API errors, else one of
    /// `options`, `http`, `network`, `signaling`, `webrtc`, `timeout`, `refused`, `reset`,
    /// `stream`, `closed`, `connection_lost`, `request`, `redirect`, `bad_response`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Options(_) => "options",
            Self::Api(e) => e.code.as_str(),
            Self::Http { .. } => "http",
            Self::Network { .. } => "network",
            Self::Signaling(_) => "signaling",
            Self::WebRtc(_) => "webrtc",
            Self::Timeout(_) => "timeout",
            Self::Refused { .. } => "refused",
            Self::ResetByPeer { .. } | Self::ResetLocally(_) => "reset",
            Self::Stream(_) => "stream",
            Self::TunnelClosed(_) => "closed",
            Self::ConnectionLost(_) => "connection_lost",
            Self::Request(_) => "request",
            Self::Redirect(_) => "redirect",
            Self::BadResponse(_) => "bad_response",
        }
    }

    /// Whether burrowd refused with this API error code.
    pub fn is_api(&self, code: ErrorCode) -> bool {
        matches!(self, Self::Api(e) if e.code == code)
    }

    /// A browser API call failed: `what` says which, the JS exception says why.
    pub(crate) fn webrtc(what: &str, err: JsValue) -> Self {
        Self::WebRtc(format!("{what}: {}", describe(&err)))
    }
}

impl From<ClientError> for JsValue {
    fn from(e: ClientError) -> JsValue {
        let err = js_sys::Error::new(&e.to_string());
        err.set_name("BurrowError");
        // Setting a property on a fresh Error cannot fail.
        let _ = js_sys::Reflect::set(&err, &"code".into(), &e.code().into());
        err.into()
    }
}

/// The message of a JS exception (an `Error`, a `DOMException`, or anything else).
pub(crate) fn describe(err: &JsValue) -> String {
    if let Some(e) = err.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    if let Some(s) = err.as_string() {
        return s;
    }
    js_sys::Reflect::get(err, &"message".into())
        .ok()
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| format!("{err:?}"))
}
