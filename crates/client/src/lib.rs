//! Burrow's browser client: TCP streams to a remote workspace over a WebRTC data channel.
//!
//! Compiled to Wasm with wasm-bindgen. From JavaScript:
//!
//! ```js
//! import init, { connect } from "./burrow_client.js";
//! await init();
//! const tunnel = await connect({ url: "https://burrow.example", token, workspace: "dev" });
//! const stream = await tunnel.dial(8080);       // code-server, say
//! await stream.write(new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n"));
//! stream.closeWrite();
//! for (let b; (b = await stream.read()) !== undefined; ) console.log(b.length);
//! console.log(await tunnel.ping(), await tunnel.stats());  // ms, {path: "direct", ...}
//! tunnel.close();
//! ```
//!
//! On an app's own origin (`https://8080--dev--alice.apps.example`), a page connects with
//! `connect({ sessionUrl: "/.burrow/session" })` instead: burrowd grants the session from the
//! origin's HttpOnly cookie, and the tunnel reaches that one app's port only.
//!
//! `connect` follows the session flow of [`burrow_proto::signal`]: a session request with
//! the user's token (or the app origin's cookie), the signaling WebSocket with the grant's ticket, an offer and trickled
//! candidates, and a data channel labelled `burrow` that carries
//! [`burrow_proto::tunnel`]'s frames. Rust callers (such as the `wasm-tests` crate) use the
//! same types through [`Tunnel::connect`] and friends.
//!
//! Every failure is a [`ClientError`]; in JS, an `Error` with its message and a `code`.
//!
//! # The JS API (the generated `.d.ts` has the same, typed)
//!
//! ```ts
//! connect(options: ConnectOptions): Promise<Tunnel>
//! tunnel.dial(port: number): Promise<TunnelStream>       // raw bytes: read/write/closeWrite/reset
//! tunnel.ping(): Promise<number>
//! tunnel.stats(): Promise<TunnelStats>                  // {path, rttMs, bytesSent, bytesReceived, state}
//! tunnel.fetch(request: Request | string, init?: {host?: string}): Promise<Response>
//! tunnel.fetchParts(request, init?): Promise<TunnelResponseParts> // {status, statusText, headers, url,
//!                                                         //  redirected, body: Uint8Array | ReadableStream | null}
//! tunnel.webSocket(url: string, protocols?: string | string[],
//!                  init?: {host?: string, origin?: string}): BurrowWebSocket
//! tunnel.cookies(port: number): Array<{name, value, path, httpOnly, expires?}>
//! tunnel.state: "connecting" | "connected" | "reconnecting" | "closed"
//! tunnel.onstatechange: ((event: {state, error?: Error}) => void) | null
//! tunnel.close(): void
//! ```
//!
//! `fetch` and `webSocket` reach the workspace port in the URL (default 80/443); the
//! URL's host is only the default `Host` header (`init.host` replaces it), since the agent
//! always dials its own dial host. `fetch` behaves like the browser's as far as a page can
//! make it: see [`Tunnel::fetch`]'s JS docs in `js.rs` and the `http` module. The object
//! `webSocket` returns is an `EventTarget` with the browser `WebSocket`'s properties,
//! methods, constants and events (`open`, `message`, `error`, `close`, and the `on*`
//! properties).

mod error;
mod http;
mod js;
mod signaling;
mod tunnel;
mod ws;

pub use error::ClientError;
pub use http::{BODY_WAIT_MS, MAX_BUFFERED_BODY, MAX_IDLE_PER_PORT};
pub use js::connect_js;
pub use signaling::{ConnectOptions, DEFAULT_CONNECT_TIMEOUT_MS};
pub use tunnel::{
    HIGH_WATER, LOW_WATER, MAX_FRAME_PAYLOAD, RECONNECT_DELAYS_MS, Tunnel, TunnelState,
    TunnelStats, TunnelStream,
};
pub use ws::{BurrowWebSocket, WebSocketInit, WsDriver};
