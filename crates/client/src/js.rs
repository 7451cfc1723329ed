//! The JavaScript API: thin wrappers that turn the Rust API's futures into typed promises
//! and [`ClientError`]s into JS `Error`s.

use js_sys::{Promise, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::error::ClientError;
use crate::signaling::{ConnectOptions, to_js};
use crate::tunnel::{Tunnel, TunnelStream};
use crate::ws::WebSocketInit;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
/** Options of {@link connect}. */
export type ConnectOptions = (TokenConnectOptions | AppConnectOptions) & {
    /** Relayed candidates only (ICE transport policy "relay"), even where a direct path works. */
    forceRelay?: boolean;
    /** How long to wait for the tunnel to open, in milliseconds (default 20000). */
    connectTimeoutMs?: number;
};

/** A page holding the user's API token. */
export interface TokenConnectOptions {
    /** burrowd's base URL, e.g. "https://burrow.example". */
    url: string;
    /** The user's API token. */
    token: string;
    /** The workspace's name. */
    workspace: string;
    sessionUrl?: undefined;
}

/** A page on an app's own origin: burrowd reads the origin's HttpOnly cookie, and the
 *  tunnel reaches that one app only. */
export interface AppConnectOptions {
    /** Where sessions are granted, e.g. "/.burrow/session" (relative to the page). */
    sessionUrl: string;
    url?: undefined;
    token?: undefined;
    workspace?: undefined;
}

/** What {@link Tunnel.stats} reports. */
export interface TunnelStats {
    /** "relay" when the selected candidate pair goes through a TURN relay. */
    path: "direct" | "relay" | "unknown";
    /** The last ping's round trip, else the candidate pair's, in milliseconds. */
    rttMs: number | null;
    /** Stream bytes the tunnel took for sending. */
    bytesSent: number;
    /** Stream bytes read by the application. */
    bytesReceived: number;
    /** The tunnel's state when the stats were taken. */
    state: TunnelState;
}

/** See {@link Tunnel.state}. */
export type TunnelState = "connecting" | "connected" | "reconnecting" | "closed";

/** What {@link Tunnel.onstatechange} is called with. */
export interface TunnelStateEvent {
    state: TunnelState;
    /** For "reconnecting": why the connection was lost ("data channel closed", "the agent
     *  stopped answering: no word from the peer in 30 s", ...). For "closed": why, when
     *  reconnecting failed ("unauthorized: ...", "agent_offline: ...", ...). */
    error?: Error;
}

/** The second argument of {@link Tunnel.fetch}. */
export interface FetchInit {
    /** The `Host` header to send instead of the URL's host (the URL's port still picks the
     *  workspace port). */
    host?: string;
}

/** What {@link Tunnel.fetchParts} resolves to: a response's parts, ready to post to
 *  another thread (transfer `body`, or `body.buffer` when it is a `Uint8Array`). */
export interface TunnelResponseParts {
    status: number;
    statusText: string;
    /** As the browser should see them (no content coding once the body is decoded). */
    headers: [string, string][];
    /** The final URL, after redirects. */
    url: string;
    redirected: boolean;
    /** The whole body when it had arrived with the head, else a stream of it; `null`
     *  when the response has none (HEAD, 204, 304). */
    body: Uint8Array | ReadableStream<Uint8Array> | null;
}

/** A cookie the app behind a port set (see {@link Tunnel.cookies}). */
export interface TunnelCookie {
    name: string;
    value: string;
    path: string;
    /** Scripts must not see it: do not mirror it into `document.cookie`. */
    httpOnly: boolean;
    /** Expiry in milliseconds since the Unix epoch; absent for session cookies. */
    expires?: number;
}

/** The third argument of {@link Tunnel.webSocket}. */
export interface WebSocketInit {
    /** The `Host` header (default: the URL's host). */
    host?: string;
    /** The `Origin` header (default: this page's origin). */
    origin?: string;
}

/** A `WebSocket` over the tunnel: the browser's `WebSocket` interface, events included. */
export interface BurrowWebSocket extends EventTarget {
    readonly CONNECTING: 0;
    readonly OPEN: 1;
    readonly CLOSING: 2;
    readonly CLOSED: 3;
    readonly url: string;
    readonly readyState: number;
    /** Bytes accepted by `send` that the tunnel has not taken yet. */
    readonly bufferedAmount: number;
    readonly protocol: string;
    readonly extensions: string;
    binaryType: "blob" | "arraybuffer";
    onopen: ((this: BurrowWebSocket, ev: Event) => any) | null;
    onmessage: ((this: BurrowWebSocket, ev: MessageEvent) => any) | null;
    onerror: ((this: BurrowWebSocket, ev: Event) => any) | null;
    onclose: ((this: BurrowWebSocket, ev: CloseEvent) => any) | null;
    send(data: string | ArrayBufferLike | ArrayBufferView | Blob): void;
    close(code?: number, reason?: string): void;
}
"#;

/// Opens a tunnel to a workspace: asks burrowd for a session, negotiates a WebRTC peer
/// connection with the workspace's agent, and resolves once its data channel is open.
///
/// Rejects with an `Error` whose message says why: "unauthorized: ..." (bad token),
/// "not_found: ..." (no such workspace, or another user's), "agent_offline: ..." (no agent), ...
#[wasm_bindgen(js_name = connect, unchecked_return_type = "Promise<Tunnel>")]
pub fn connect_js(
    #[wasm_bindgen(unchecked_param_type = "ConnectOptions")] options: JsValue,
) -> Promise {
    future_to_promise(async move {
        let opts: ConnectOptions = serde_wasm_bindgen::from_value(options)
            .map_err(|e| ClientError::Options(e.to_string()))?;
        Ok(Tunnel::connect(opts).await?.into())
    })
}

#[wasm_bindgen]
impl Tunnel {
    /// Opens a stream to the workspace's `port`. Rejects with "stream refused: <the agent's
    /// reason>" when the agent will not connect it (port not allowed, nothing listening).
    #[wasm_bindgen(unchecked_return_type = "Promise<TunnelStream>")]
    pub fn dial(&self, port: u16) -> Promise {
        let tunnel = self.clone();
        future_to_promise(async move { Ok(tunnel.open(port).await?.into()) })
    }

    /// The round trip to the agent through the tunnel, in milliseconds.
    #[wasm_bindgen(unchecked_return_type = "Promise<number>")]
    pub fn ping(&self) -> Promise {
        let tunnel = self.clone();
        future_to_promise(async move { Ok(tunnel.ping_ms().await?.into()) })
    }

    /// Byte counts and the network path ("direct" or "relay").
    #[wasm_bindgen(js_name = stats, unchecked_return_type = "Promise<TunnelStats>")]
    pub fn stats_js(&self) -> Promise {
        let tunnel = self.clone();
        future_to_promise(async move { Ok(to_js(&tunnel.stats().await?)?) })
    }

    /// An HTTP/1.1 request to the workspace app on the URL's port, answered with a real
    /// `Response` whose body streams as the page reads it.
    ///
    /// Like the browser's `fetch`: every method; the request's body streamed
    /// (`Content-Length` when it is complete at once, chunked otherwise); keep-alive reuse;
    /// `request.redirect` ("follow" up to 20 hops, "manual", "error"); gzip and deflate
    /// bodies decoded; the tunnel's cookie jar for the port used unless
    /// `request.credentials` is "omit"; `request.signal` aborts (the stream is reset and
    /// the promise, or the body, fails with the signal's reason). The URL's host is only
    /// the default `Host` header: `init.host` replaces it. The scheme only picks the
    /// default port (80 for http:, 443 for https:): the tunnel is already encrypted end to
    /// end, so the app is always spoken to in plain HTTP/1.1.
    #[wasm_bindgen(js_name = fetch, unchecked_return_type = "Promise<Response>")]
    pub fn fetch_js(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Request | string")] request: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "FetchInit")] init: JsValue,
    ) -> Promise {
        let tunnel = self.clone();
        future_to_promise(async move {
            let (request, host) = fetch_args(request, &init)?;
            Ok(tunnel.fetch(request, host).await?.into())
        })
    }

    /// Like `fetch`, but resolves to the response's parts rather than a `Response`, for
    /// code that forwards it to another thread: a body that had arrived whole with the head
    /// is a `Uint8Array`, transferable in one piece, instead of a stream.
    #[wasm_bindgen(js_name = fetchParts, unchecked_return_type = "Promise<TunnelResponseParts>")]
    pub fn fetch_parts_js_api(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Request | string")] request: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "FetchInit")] init: JsValue,
    ) -> Promise {
        let tunnel = self.clone();
        future_to_promise(async move {
            let (request, host) = fetch_args(request, &init)?;
            Ok(tunnel.fetch_parts_js(request, host).await?.into())
        })
    }

    /// A `WebSocket`-compatible object connected to the workspace app on the URL's port
    /// (`ws:`/`wss:`; the host is only the default `Host` header). `protocols` are the
    /// offered subprotocols; `init.host` and `init.origin` set `Host` and `Origin`. The
    /// tunnel's cookies for the port are sent with the handshake.
    #[wasm_bindgen(js_name = webSocket, unchecked_return_type = "BurrowWebSocket")]
    pub fn web_socket_js(
        &self,
        url: &str,
        #[wasm_bindgen(unchecked_optional_param_type = "string | string[]")] protocols: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "WebSocketInit")] init: JsValue,
    ) -> Result<JsValue, JsValue> {
        let protocols = if let Some(p) = protocols.as_string() {
            vec![p]
        } else if protocols.is_undefined() || protocols.is_null() {
            Vec::new()
        } else {
            js_sys::Array::from(&protocols)
                .iter()
                .map(|p| {
                    p.as_string().ok_or_else(|| {
                        JsValue::from(ClientError::Request("protocols must be strings".into()))
                    })
                })
                .collect::<Result<_, _>>()?
        };
        let get = |key: &str| {
            if init.is_object() {
                js_sys::Reflect::get(&init, &key.into())
                    .ok()
                    .and_then(|v| v.as_string())
            } else {
                None
            }
        };
        let init = WebSocketInit {
            host: get("host"),
            origin: get("origin"),
        };
        Ok(self.web_socket(url, protocols, init)?.into())
    }

    /// The cookies the app on `port` set through `fetch`, for mirroring the non-HttpOnly
    /// ones into `document.cookie`.
    #[wasm_bindgen(js_name = cookies, unchecked_return_type = "Array<TunnelCookie>")]
    pub fn cookies_js(&self, port: u16) -> Result<JsValue, JsValue> {
        Ok(to_js(&self.cookies(port))?)
    }

    /// Closes the tunnel and the peer connection; open streams fail. Idempotent.
    #[wasm_bindgen(js_name = close)]
    pub fn close_js(&self) {
        self.close();
    }

    /// "connecting", "connected", "reconnecting" (the connection was lost: new `dial`s
    /// and `fetch`es wait, open streams failed) or "closed".
    #[wasm_bindgen(getter = state, unchecked_return_type = "TunnelState")]
    pub fn state_js(&self) -> String {
        self.state().as_str().to_owned()
    }

    /// Called with a `TunnelStateEvent` whenever `state` changes. When the peer
    /// connection fails, its data channel closes, or the agent stops answering (nothing
    /// heard for 30 s, keepalive pings included), the tunnel reconnects with backoff (new
    /// sessions through burrowd; the "reconnecting" event's `error` says what was lost); if
    /// that fails, `state` becomes "closed" and the event's `error` says why.
    #[wasm_bindgen(getter = onstatechange, unchecked_return_type = "((event: TunnelStateEvent) => void) | null")]
    pub fn onstatechange_js(&self) -> Option<js_sys::Function> {
        self.on_state_change()
    }

    /// Sets `onstatechange`.
    #[wasm_bindgen(setter = onstatechange)]
    pub fn set_onstatechange_js(
        &self,
        #[wasm_bindgen(unchecked_param_type = "((event: TunnelStateEvent) => void) | null")]
        f: Option<js_sys::Function>,
    ) {
        self.set_on_state_change(f);
    }

    /// Whether the tunnel is closed.
    #[wasm_bindgen(getter, js_name = closed)]
    pub fn closed_js(&self) -> bool {
        self.is_closed()
    }
}

#[wasm_bindgen]
impl TunnelStream {
    /// The workspace port the stream is connected to.
    #[wasm_bindgen(getter)]
    pub fn port(&self) -> u16 {
        self.workspace_port()
    }

    /// The stream's id within the tunnel.
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> u32 {
        self.stream_id()
    }

    /// The next bytes from the workspace, or `undefined` at EOF. Rejects if the stream was
    /// reset or the tunnel closed.
    #[wasm_bindgen(unchecked_return_type = "Promise<Uint8Array | undefined>")]
    pub fn read(&self) -> Promise {
        let h = self.handle();
        future_to_promise(async move {
            Ok(match h.read().await? {
                Some(bytes) => Uint8Array::from(bytes.as_slice()).into(),
                None => JsValue::UNDEFINED,
            })
        })
    }

    /// Sends bytes; resolves once the tunnel took all of them (under the agent's credit),
    /// so awaiting each write bounds what the page buffers.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn write(&self, data: &[u8]) -> Promise {
        let h = self.handle();
        let data = data.to_vec();
        future_to_promise(async move {
            h.write(&data).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Half-closes the stream (FIN after the bytes written): the service reads EOF and may
    /// still answer.
    #[wasm_bindgen(js_name = closeWrite)]
    pub fn close_write(&self) -> Result<(), JsValue> {
        Ok(self.finish()?)
    }

    /// Ends both directions at once; unsent and unread bytes are dropped.
    pub fn reset(&self) {
        self.abort();
    }
}

/// `fetch`'s and `fetchParts`' arguments: a `Request` (or a URL) and `init.host`.
fn fetch_args(
    request: JsValue,
    init: &JsValue,
) -> Result<(web_sys::Request, Option<String>), JsValue> {
    let request = match request.as_string() {
        Some(url) => web_sys::Request::new_with_str(&url)?,
        None => request
            .dyn_into::<web_sys::Request>()
            .map_err(|_| ClientError::Request("fetch takes a Request or a URL string".into()))?,
    };
    let host = if init.is_object() {
        js_sys::Reflect::get(init, &"host".into())?.as_string()
    } else {
        None
    };
    Ok((request, host))
}
