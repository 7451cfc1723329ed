//! The message pipe a tunnel runs over.

use async_trait::async_trait;
use bytes::Bytes;

/// The channel was closed (by either side, or because the peer connection died).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("data channel closed")]
pub struct ChannelClosed;

/// The sending half of a reliable, ordered, message-oriented channel.
#[async_trait]
pub trait MessageSink: Send + 'static {
    /// Sends one message. Waits while the channel's send buffer is above its high-water mark,
    /// which is how backpressure from the network reaches the tunnel.
    async fn send(&mut self, msg: Bytes) -> Result<(), ChannelClosed>;
    /// Closes the channel.
    async fn close(&mut self);
}

/// The receiving half of a reliable, ordered, message-oriented channel.
#[async_trait]
pub trait MessageSource: Send + 'static {
    /// The next message, or `None` once the channel is closed.
    async fn recv(&mut self) -> Option<Bytes>;
}

/// A bidirectional channel split into its halves.
pub struct MessageChannel {
    /// Sending half.
    pub sink: Box<dyn MessageSink>,
    /// Receiving half.
    pub source: Box<dyn MessageSource>,
}

/// An in-memory channel pair, for tests of the tunnel driver without WebRTC.
pub fn memory_pair(capacity: usize) -> (MessageChannel, MessageChannel) {
    let (a_tx, b_rx) = tokio::sync::mpsc::channel(capacity);
    let (b_tx, a_rx) = tokio::sync::mpsc::channel(capacity);
    (
        MessageChannel {
            sink: Box::new(MemorySink(Some(a_tx))),
            source: Box::new(MemorySource(a_rx)),
        },
        MessageChannel {
            sink: Box::new(MemorySink(Some(b_tx))),
            source: Box::new(MemorySource(b_rx)),
        },
    )
}

struct MemorySink(Option<tokio::sync::mpsc::Sender<Bytes>>);
struct MemorySource(tokio::sync::mpsc::Receiver<Bytes>);

#[async_trait]
impl MessageSink for MemorySink {
    async fn send(&mut self, msg: Bytes) -> Result<(), ChannelClosed> {
        match &self.0 {
            Some(tx) => tx.send(msg).await.map_err(|_| ChannelClosed),
            None => Err(ChannelClosed),
        }
    }
    async fn close(&mut self) {
        self.0 = None;
    }
}

#[async_trait]
impl MessageSource for MemorySource {
    async fn recv(&mut self) -> Option<Bytes> {
        self.0.recv().await
    }
}
