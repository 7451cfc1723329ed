//! Burrow's native peer: the shell around [`burrow_proto`] used by the agent and the CLI.
//!
//! - [`channel`]: the message pipe a tunnel runs over (a WebRTC data channel, or an
//!   in-memory pair in tests).
//! - [`stack`]: the WebRTC stack behind a small trait, so it can be swapped;
//!   [`webrtc_rs`] implements it with the `webrtc` crate.
//! - [`tunnel`]: drives the sans-IO [`burrow_proto::tunnel::Tunnel`] over a channel and tokio
//!   TCP sockets.

pub mod channel;
pub mod stack;
pub mod tunnel;
pub mod webrtc_rs;
