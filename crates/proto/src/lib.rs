//! Burrow's protocol core, with no I/O, no clock and no async runtime.
//!
//! Everything that crosses a wire in Burrow is defined here, so that the native shells
//! (`burrowd`, `burrow-agent`, the `burrow` CLI) and the browser client (Wasm) speak it
//! from one source:
//!
//! - [`frame`] and [`tunnel`]: the stream protocol carried on a WebRTC data channel.
//!   Many TCP streams share one channel; per-stream credit keeps one slow stream from
//!   stalling the others and bounds the memory each stream may hold.
//! - [`speedtest`]: the agent's built-in speed test, a stream it serves itself.
//! - [`signal`]: the JSON messages exchanged with burrowd's signaling broker.
//! - [`app_origin`]: the names of workspace apps' browser origins (`8080--dev--alice`),
//!   the apps URL they live under, and the launch of an app onto its origin.
//! - [`turn_auth`]: TURN REST credentials (coturn's `use-auth-secret` scheme).
//! - [`http1`] and [`websocket`]: the HTTP/1.1 and WebSocket (RFC 6455) client codecs the
//!   browser client speaks to workspace apps over tunnelled streams; [`cookies`] and
//!   [`redirect`] hold the rest of its HTTP client's logic (a cookie jar per app,
//!   following redirects as `fetch` does), and [`http_cache`] the decisions of the service
//!   worker's HTTP cache (RFC 9111).
//!
//! Time comes in as arguments (milliseconds from a clock the caller owns) and bytes come
//! in and go out as buffers: the caller moves them between sockets or browser APIs.

pub mod app_origin;
pub mod cookies;
pub mod frame;
pub mod http1;
pub mod http_cache;
pub mod redirect;
pub mod signal;
pub mod speedtest;
pub mod tunnel;
pub mod turn_auth;
pub mod websocket;
