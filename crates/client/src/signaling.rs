//! Step 1 and 2 of the session flow (see `burrow_proto::signal`): ask burrowd for a
//! session over HTTP, and build what the WebRTC side needs from its grant.

use burrow_proto::signal::{
    ApiError, IceTransportPolicy, SessionGrant, SessionRequest, sessions_path,
};
use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, RequestInit, Response, RtcConfiguration};

use crate::error::{ClientError, describe};

/// How long `connect` waits for the data channel to open, unless told otherwise.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u32 = 20_000;

/// The options of `connect` (the `ConnectOptions` interface in TypeScript).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectOptions {
    /// burrowd's base URL, e.g. `https://burrow.example` (`http:` and `https:` only).
    pub url: String,
    /// The user's API token.
    pub token: String,
    /// The workspace's name.
    pub workspace: String,
    /// Relayed candidates only, even where a direct path would work.
    #[serde(default)]
    pub force_relay: bool,
    /// How long to wait for the tunnel to come up.
    #[serde(default)]
    pub connect_timeout_ms: Option<u32>,
}

impl ConnectOptions {
    /// Options with the defaults for the optional fields.
    pub fn new(url: &str, token: &str, workspace: &str) -> Self {
        Self {
            url: url.to_owned(),
            token: token.to_owned(),
            workspace: workspace.to_owned(),
            force_relay: false,
            connect_timeout_ms: None,
        }
    }

    /// The base URL without a trailing slash, checked to be http(s).
    pub(crate) fn base_url(&self) -> Result<&str, ClientError> {
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
        Ok(base)
    }
}

/// `POST {url}/api/v1/workspaces/{workspace}/sessions` with the user's token.
///
/// burrowd's refusals (401, 403, 404, 409) come back as [`ClientError::Api`], whose message
/// starts with the error code ("unauthorized: ...").
pub(crate) async fn request_session(opts: &ConnectOptions) -> Result<SessionGrant, ClientError> {
    let base = opts.base_url()?;
    let workspace = String::from(js_sys::encode_uri_component(&opts.workspace));
    let url = format!("{base}{}", sessions_path(&workspace));
    let body = serde_json::to_string(&SessionRequest {
        force_relay: opts.force_relay,
    })
    .map_err(|e| ClientError::Options(e.to_string()))?;

    let headers = Headers::new().map_err(|e| ClientError::webrtc("Headers", e))?;
    let auth = format!("Bearer {}", opts.token);
    for (name, value) in [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ] {
        headers
            .set(name, value)
            .map_err(|e| ClientError::Options(format!("{name} header: {}", describe(&e))))?;
    }
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    init.set_body(&JsValue::from_str(&body));

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
