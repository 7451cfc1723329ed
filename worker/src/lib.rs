//! Burrow's service worker: serves `/@WORKSPACE/apps/PORT/…` from a workspace app through
//! the dashboard window's tunnel.
//!
//! Service workers have no `RTCPeerConnection`, so the tunnel lives in a window (the
//! dashboard). The worker hands each request to that window over a `MessagePort` and
//! streams the answer into `respondWith`:
//!
//! ```text
//! SW  -> window (any window client):  {burrow: "port-request", workspace}
//! window -> SW (message event):       {burrow: "port", workspace}      + ports[0]
//! SW  -> port:  {burrow: "fetch", workspace, port, url, method, headers, body, redirect,
//!                navigate}                                            + reply port
//! window -> reply port:  {type: "accepted"}   when the answer takes over 0.5 s, proving
//!                                             the port is alive (a quick answer does that)
//! window -> reply port:  {type: "waiting"}    then every 2 s until the app answers
//! window -> reply port:  {type: "response", status, statusText, headers, body}
//!                        (body: a Uint8Array, its buffer transferred, when the whole body
//!                        arrived with the head; else a transferred ReadableStream; or null)
//!                     |  {type: "error", message}
//! app page -> SW:  {burrow: "ws-port", workspace}  + ports[0]   (a page not framed by the
//!                  dashboard wants a WebSocket; the port is passed on to the window)
//! SW -> port:      {burrow: "ws-connect", workspace} + that port
//! ```
//!
//! Chrome stops idle service workers, so the port map is only a cache: a worker without a
//! live port asks its window clients again. A request no window answers gets a 503 page
//! within seconds, never a hang.
//!
//! GET responses the app allows to be reused are kept in Cache Storage and served from
//! there while fresh (revalidated with the app when stale), as the browser's HTTP cache does
//! for the app reached directly; the decisions are `burrow_proto::http_cache`'s.
//!
//! The JavaScript bootstrap (`web/burrow-sw.js`) only registers the event listeners (they
//! must be registered synchronously) and calls [`handle_fetch`] and [`handle_message`].

pub mod scope;
pub mod stored_urls;

#[cfg(target_arch = "wasm32")]
mod cache;
#[cfg(target_arch = "wasm32")]
mod sw;

#[cfg(target_arch = "wasm32")]
pub use sw::{handle_fetch, handle_message};
