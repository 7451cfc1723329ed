//! Burrow's service worker: serves a workspace app on its own origin
//! (`http://8080--dev--alice.apps.example/…`) through the tunnel of a shell window.
//!
//! Service workers have no `RTCPeerConnection`, so the tunnel lives in a window: Burrow's
//! shell page (`web/shell.html`), which burrowd serves for every top-level document of the
//! origin and which shows the app in a frame of its own. The worker hands each of the app's
//! requests to a shell over a `MessagePort` and streams the answer into `respondWith`. The
//! origin is one app (one workspace port, one user), so any shell of it will do, and nothing
//! here can reach another app:
//!
//! ```text
//! SW  -> window (any window client):  {burrow: "port-request"}
//! shell -> SW (message event):        {burrow: "port"}                 + ports[0]
//! SW  -> port:  {burrow: "fetch", url, method, headers, body, redirect, navigate}
//!                                                                      + reply port
//! shell -> reply port:  {type: "accepted"}   when the answer takes over 0.5 s, proving
//!                                            the port is alive (a quick answer does that)
//! shell -> reply port:  {type: "waiting"}    then every 2 s until the app answers
//! shell -> reply port:  {type: "response", status, statusText, headers, body}
//!                       (body: a Uint8Array, its buffer transferred, when the whole body
//!                       arrived with the head; else a transferred ReadableStream; or null)
//!                    |  {type: "error", message}
//! app page -> SW:  {burrow: "ws-port"}  + ports[0]   (a page with no shell above it wants
//!                  a WebSocket; the port is passed on to a shell)
//! SW -> port:      {burrow: "ws-connect"} + that port
//! ```
//!
//! Chrome stops idle service workers, so the port is only a cache: a worker without a live
//! port asks its window clients again. A request no window answers gets a 503 page
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
