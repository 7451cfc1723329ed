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
//! `connect` follows the session flow of [`burrow_proto::signal`]: a session request with
//! the user's token, the signaling WebSocket with the grant's ticket, an offer and trickled
//! candidates, and a data channel labelled `burrow` that carries
//! [`burrow_proto::tunnel`]'s frames. Rust callers (such as the `wasm-tests` crate) use the
//! same types through [`Tunnel::connect`] and friends.
//!
//! Every failure is a [`ClientError`]; in JS, an `Error` with its message and a `code`.

mod error;
mod js;
mod signaling;
mod tunnel;

pub use error::ClientError;
pub use js::connect_js;
pub use signaling::{ConnectOptions, DEFAULT_CONNECT_TIMEOUT_MS};
pub use tunnel::{HIGH_WATER, LOW_WATER, MAX_FRAME_PAYLOAD, Tunnel, TunnelStats, TunnelStream};
