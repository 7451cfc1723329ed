//! The JavaScript API: thin wrappers that turn the Rust API's futures into typed promises
//! and [`ClientError`]s into JS `Error`s.

use js_sys::{Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::error::ClientError;
use crate::signaling::{ConnectOptions, to_js};
use crate::tunnel::{Tunnel, TunnelStream};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
/** Options of {@link connect}. */
export interface ConnectOptions {
    /** burrowd's base URL, e.g. "https://burrow.example". */
    url: string;
    /** The user's API token. */
    token: string;
    /** The workspace's name. */
    workspace: string;
    /** Relayed candidates only (ICE transport policy "relay"), even where a direct path works. */
    forceRelay?: boolean;
    /** How long to wait for the tunnel to open, in milliseconds (default 20000). */
    connectTimeoutMs?: number;
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
}
"#;

/// Opens a tunnel to a workspace: asks burrowd for a session, negotiates a WebRTC peer
/// connection with the workspace's agent, and resolves once its data channel is open.
///
/// Rejects with an `Error` whose message says why: "unauthorized: ..." (bad token),
/// "forbidden: ..." (another user's workspace), "agent_offline: ..." (no agent), ...
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

    /// Closes the tunnel and the peer connection; open streams fail. Idempotent.
    #[wasm_bindgen(js_name = close)]
    pub fn close_js(&self) {
        self.close();
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
