//! The WebRTC stack behind a trait.
//!
//! The client always offers and the agent always answers; each side has exactly one
//! data channel, labelled [`DATA_CHANNEL_LABEL`], created by the offerer.

use async_trait::async_trait;
use burrow_proto::signal::{IceCandidate, IceServer, IceTransportPolicy, PathKind};

use crate::channel::MessageChannel;

/// Label of the tunnel's data channel.
pub const DATA_CHANNEL_LABEL: &str = "burrow";

/// What a peer connection is built with.
#[derive(Debug, Clone, Default)]
pub struct PeerConfig {
    /// STUN/TURN servers, as burrowd handed them out.
    pub ice_servers: Vec<IceServer>,
    /// `Relay` forces a relayed path.
    pub ice_transport_policy: IceTransportPolicy,
}

/// Something the peer connection reports.
#[derive(Debug)]
pub enum PeerEvent {
    /// A local candidate to trickle to the other side; `None` once gathering is complete.
    LocalCandidate(Option<IceCandidate>),
    /// ICE and DTLS are up; the path is known.
    Connected(PathKind),
    /// The connection is lost for good (failed or closed).
    Closed(String),
}

/// Errors from the WebRTC stack.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The remote SDP could not be applied.
    #[error("bad SDP: {0}")]
    BadSdp(String),
    /// A remote candidate could not be added.
    #[error("bad ICE candidate: {0}")]
    BadCandidate(String),
    /// The connection did not come up or went away.
    #[error("peer connection failed: {0}")]
    Failed(String),
}

/// A WebRTC stack that can make peer connections.
#[async_trait]
pub trait PeerStack: Send + Sync + 'static {
    /// Creates a connection with the tunnel's data channel and returns it with its offer.
    async fn offer(&self, config: PeerConfig) -> Result<(Box<dyn PeerSession>, String), PeerError>;
    /// Creates a connection answering `offer_sdp` and returns it with its answer.
    async fn answer(
        &self,
        config: PeerConfig,
        offer_sdp: &str,
    ) -> Result<(Box<dyn PeerSession>, String), PeerError>;
}

/// One peer connection.
#[async_trait]
pub trait PeerSession: Send + Sync + 'static {
    /// Applies the remote answer (offerer side only).
    async fn set_answer(&self, sdp: &str) -> Result<(), PeerError>;
    /// Adds a trickled remote candidate.
    async fn add_remote_candidate(&self, candidate: IceCandidate) -> Result<(), PeerError>;
    /// The next event; `None` after [`PeerEvent::Closed`].
    async fn next_event(&self) -> Option<PeerEvent>;
    /// Waits until the tunnel's data channel is open and takes it. Only the first call
    /// returns it.
    async fn data_channel(&self) -> Result<MessageChannel, PeerError>;
    /// The path in use now (it can change after an ICE restart).
    async fn path(&self) -> PathKind;
    /// The largest UDP datagram received from the path so far, in bytes (0 before any): what
    /// the path was found to carry. Between native peers the SCTP layer searches for its
    /// path MTU, so a loopback path carries 16 KB packets where a relay stays near 1.4 KB.
    fn largest_datagram_received(&self) -> usize {
        0
    }
    /// Closes the connection.
    async fn close(&self);
}
