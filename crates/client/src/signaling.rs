//! Step 1 and 2 of the session flow (see `burrow_proto::signal`): ask burrowd for a
//! session over HTTP, and build what the WebRTC side needs from its grant.

use burrow_proto::signal::{
    ApiError, IceTransportPolicy, SessionGrant, SessionRequest, sessions_path,
};
use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, RequestCredentials, RequestInit, Response, RtcConfiguration};

use crate::error::{ClientError, describe};

/// How long `connect` waits for the data channel to open, unless told otherwise.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u32 = 20_000;

/// The options of `connect` (the `ConnectOptions` interface in TypeScript).
///
/// Two ways to be let in: `url` + `token` + `workspace` (a page holding the user's API token,
/// as a tool on a page of its own would), or `session_url` alone (a page on an app's own
/// origin, whose HttpOnly cookie burrowd reads: the page never sees a token, and the session
/// reaches that one app only).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectOptions {
    /// burrowd's base URL, e.g. `https://burrow.example` (`http:` and `https:` only).
    #[serde(default)]
    pub url: String,
    /// The user's API token.
    #[serde(default)]
    pub token: String,
    /// The workspace's name.
    #[serde(default)]
    pub workspace: String,
    /// Where to ask for a session with the page's own cookie instead of a token, e.g.
    /// `/.burrow/session` on an app's origin; relative URLs resolve against the page.
    #[serde(default)]
    pub session_url: Option<String>,
    /// Relayed candidates only, even where a direct path would work.
    #[serde(default)]
    pub force_relay: bool,
    /// How long to wait for the tunnel to come up.
    #[serde(default)]
    pub connect_timeout_ms: Option<u32>,
}

/// Where a session is asked for, and with what.
#[derive(Debug, Clone)]
pub(crate) struct SessionEndpoint {
    /// The URL to `POST` the [`SessionRequest`] to.
    pub url: String,
    /// `scheme://host` the grant's signaling path is relative to.
    pub origin: String,
    /// The bearer token, or `None` to send the page's cookies instead.
    pub token: Option<String>,
}

impl ConnectOptions {
    /// Options with the defaults for the optional fields.
    pub fn new(url: &str, token: &str, workspace: &str) -> Self {
        Self {
            url: url.to_owned(),
            token: token.to_owned(),
            workspace: workspace.to_owned(),
            session_url: None,
            force_relay: false,
            connect_timeout_ms: None,
        }
    }

    /// Options for a page on an app's origin: sessions from `session_url`, with its cookie.
    pub fn with_session_url(session_url: &str) -> Self {
        Self {
            session_url: Some(session_url.to_owned()),
            ..Self::new("", "", "")
        }
    }

    /// The endpoint these options name, checked: http(s) only, and either a session URL or
    /// all of url, token and workspace.
    pub(crate) fn endpoint(&self) -> Result<SessionEndpoint, ClientError> {
        if let Some(session_url) = &self.session_url {
            if !(self.token.is_empty() && self.workspace.is_empty()) {
                return Err(ClientError::Options(
                    "sessionUrl goes without token and workspace: the session's cookie names them"
                        .into(),
                ));
            }
            let base = web_sys::window()
                .and_then(|w| w.location().href().ok())
                .unwrap_or_default();
            let parsed = web_sys::Url::new_with_base(session_url, &base).map_err(|_| {
                ClientError::Options(format!("sessionUrl {session_url:?} is not a URL"))
            })?;
            let protocol = parsed.protocol();
            if protocol != "http:" && protocol != "https:" {
                return Err(ClientError::Options(format!(
                    "sessionUrl must be http(s), got {session_url:?}"
                )));
            }
            return Ok(SessionEndpoint {
                url: parsed.href(),
                origin: parsed.origin(),
                token: None,
            });
        }
        let base = self.url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Options(format!(
                "url must start with http:// or https://, got {:?}",
                self.url
            )));
        }
        if self.token.is_empty() {
            return Err(ClientError::Options("token is empty".into()));
        }
        if self.workspace.is_empty() {
            return Err(ClientError::Options("workspace is empty".into()));
        }
        let workspace = String::from(js_sys::encode_uri_component(&self.workspace));
        Ok(SessionEndpoint {
            url: format!("{base}{}", sessions_path(&workspace)),
            origin: base.to_owned(),
            token: Some(self.token.clone()),
        })
    }
}

/// `POST`s a session request to the endpoint: with the user's token, or with the page's
/// cookies (`credentials: same-origin`) for a session URL.
///
/// burrowd's refusals (401, 403, 404, 409) come back as [`ClientError::Api`], whose message
/// starts with the error code ("unauthorized: ...").
pub(crate) async fn request_session(
    opts: &ConnectOptions,
    endpoint: &SessionEndpoint,
) -> Result<SessionGrant, ClientError> {
    let url = endpoint.url.clone();
    let body = serde_json::to_string(&SessionRequest {
        force_relay: opts.force_relay,
    })
    .map_err(|e| ClientError::Options(e.to_string()))?;

    let headers = Headers::new().map_err(|e| ClientError::webrtc("Headers", e))?;
    let auth = endpoint.token.as_ref().map(|t| format!("Bearer {t}"));
    let pairs = [
        ("Authorization", auth.as_deref()),
        ("Content-Type", Some("application/json")),
    ];
    for (name, value) in pairs {
        let Some(value) = value else { continue };
        headers
            .set(name, value)
            .map_err(|e| ClientError::Options(format!("{name} header: {}", describe(&e))))?;
    }
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    init.set_body(&JsValue::from_str(&body));
    init.set_credentials(if endpoint.token.is_some() {
        // A token page's cookies are not burrowd's business.
        RequestCredentials::Omit
    } else {
        RequestCredentials::SameOrigin
    });

    let window = web_sys::window()
        .ok_or_else(|| ClientError::Options("burrow-client needs a window (a page)".into()))?;
    let network = |e: JsValue| ClientError::Network {
        url: url.clone(),
        message: describe(&e),
    };
    let response: Response = JsFuture::from(window.fetch_with_str_and_init(&url, &init))
        .await
        .map_err(network)?
        .unchecked_into();
    let text = JsFuture::from(response.text().map_err(network)?)
        .await
        .map_err(network)?
        .as_string()
        .unwrap_or_default();
    let status = response.status();
    if (200..300).contains(&status) {
        return serde_json::from_str(&text).map_err(|e| ClientError::Http {
            status,
            body: format!("not a session grant ({e}): {}", truncate(&text)),
        });
    }
    match serde_json::from_str::<ApiError>(&text) {
        Ok(api) => Err(ClientError::Api(api)),
        Err(_) => Err(ClientError::Http {
            status,
            body: truncate(&text),
        }),
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}

/// The session's signaling WebSocket URL: the grant's path on burrowd's host, with the
/// ticket as the query (browsers cannot set headers on WebSockets).
pub(crate) fn signal_url(base: &str, grant: &SessionGrant) -> String {
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        format!("ws://{}", base.trim_start_matches("http://"))
    };
    format!(
        "{ws_base}{}?ticket={}",
        grant.signal_path,
        js_sys::encode_uri_component(&grant.ticket)
    )
}

/// The `RTCConfiguration` dictionary for the grant.
pub(crate) fn rtc_configuration(grant: &SessionGrant) -> Result<RtcConfiguration, ClientError> {
    // IceServer and IceTransportPolicy serialize exactly as the browser's dictionaries.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Config<'a> {
        ice_servers: &'a [burrow_proto::signal::IceServer],
        ice_transport_policy: IceTransportPolicy,
    }
    to_js(&Config {
        ice_servers: &grant.ice_servers,
        ice_transport_policy: grant.ice_transport_policy,
    })
    .map(JsCast::unchecked_into)
}

/// Plain JS objects (not `Map`s) from serde values, as browser dictionaries need.
pub(crate) fn to_js<T: Serialize>(value: &T) -> Result<JsValue, ClientError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| ClientError::WebRtc(format!("encoding a dictionary: {e}")))
}
