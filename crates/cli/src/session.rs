//! Opening a tunnel to a workspace: ask burrowd for a session, signal over its WebSocket,
//! and hand the open data channel to the tunnel driver.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use burrow_peer::stack::{PeerConfig, PeerEvent, PeerSession, PeerStack};
use burrow_peer::tunnel::{self, ClientTunnel, TunnelConfig};
use burrow_proto::signal::{
    ApiError, ClientToServer, PathKind, ServerToClient, SessionGrant, SessionRequest, sessions_path,
};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

/// How long ICE, DTLS and the data channel may take to come up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where burrowd is and who we are.
#[derive(Clone)]
pub struct Endpoint {
    /// burrowd's base URL.
    pub url: String,
    /// The user's API token.
    pub token: String,
}

/// An open tunnel to a workspace.
pub struct Connection {
    /// Opens streams to workspace ports.
    pub tunnel: ClientTunnel,
    /// Direct or relayed.
    pub path: PathKind,
    /// Time from the session request to the open data channel.
    pub setup: Duration,
    peer: Arc<dyn PeerSession>,
}

impl Connection {
    /// Closes the peer connection.
    pub async fn close(&self) {
        self.peer.close().await;
    }

    /// The largest UDP datagram received from the agent so far: how large a packet the
    /// path was found to carry.
    pub fn largest_datagram_received(&self) -> usize {
        self.peer.largest_datagram_received()
    }
}

/// Opens a tunnel to `workspace`.
pub async fn connect(
    endpoint: &Endpoint,
    workspace: &str,
    force_relay: bool,
    stack: &dyn PeerStack,
) -> anyhow::Result<Connection> {
    let started = Instant::now();
    let grant = request_session(endpoint, workspace, force_relay).await?;
    debug!(?grant, "session granted");

    let signal_url = format!(
        "{}{}?ticket={}",
        ws_base(&endpoint.url)?,
        grant.signal_path,
        grant.ticket
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(signal_url.as_str())
        .await
        .context("opening the signaling WebSocket")?;

    let (peer, offer) = stack
        .offer(PeerConfig {
            ice_servers: grant.ice_servers.clone(),
            ice_transport_policy: grant.ice_transport_policy,
        })
        .await
        .context("creating the peer connection")?;
    let peer: Arc<dyn PeerSession> = Arc::from(peer);
    send(&mut ws, &ClientToServer::Offer { sdp: offer }).await?;

    let mut path = None;
    let deadline = tokio::time::sleep(CONNECT_TIMEOUT);
    tokio::pin!(deadline);
    let mut ws_open = true;
    while path.is_none() {
        tokio::select! {
            msg = ws.next(), if ws_open => match msg {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerToClient>(&text) {
                    Ok(ServerToClient::Answer { sdp }) => {
                        peer.set_answer(&sdp).await.context("applying the agent's answer")?;
                    }
                    Ok(ServerToClient::Candidate { candidate }) => {
                        if let Err(e) = peer.add_remote_candidate(candidate).await {
                            warn!(error = %e, "ignoring a remote candidate");
                        }
                    }
                    Ok(ServerToClient::Error(e)) => {
                        peer.close().await;
                        return Err(anyhow!(e).context("burrowd ended the session"));
                    }
                    Err(e) => warn!(error = %e, "ignoring a malformed signaling message"),
                },
                Some(Ok(Message::Close(_))) | None => ws_open = false,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    warn!(error = %e, "signaling WebSocket failed");
                    ws_open = false;
                }
            },
            event = peer.next_event() => match event {
                Some(PeerEvent::LocalCandidate(Some(candidate))) => {
                    if ws_open {
                        send(&mut ws, &ClientToServer::Candidate { candidate }).await?;
                    }
                }
                Some(PeerEvent::LocalCandidate(None)) => {}
                Some(PeerEvent::Connected(p)) => path = Some(p),
                Some(PeerEvent::Closed(reason)) => bail!("peer connection failed: {reason}"),
                None => bail!("peer connection closed"),
            },
            () = &mut deadline => {
                peer.close().await;
                bail!("no connection to workspace {workspace} within {CONNECT_TIMEOUT:?} (is a relay reachable?)");
            }
        }
    }
    let channel = tokio::time::timeout(CONNECT_TIMEOUT, peer.data_channel())
        .await
        .context("the data channel did not open")?
        .context("the data channel did not open")?;
    // The tunnel needs burrowd no more.
    let _ = ws.close(None).await;

    let (tunnel, driver) = tunnel::client(channel, TunnelConfig::default());
    tokio::spawn(async move {
        if let Err(e) = driver.await {
            warn!(error = %e, "tunnel ended");
        }
    });
    // Keep draining peer events so the stack never blocks on an unread queue.
    {
        let peer = Arc::clone(&peer);
        tokio::spawn(async move {
            while let Some(event) = peer.next_event().await {
                if let PeerEvent::Closed(reason) = event {
                    info!(%reason, "peer connection closed");
                    break;
                }
            }
        });
    }
    let path = path.unwrap_or(PathKind::Unknown);
    Ok(Connection {
        tunnel,
        path,
        setup: started.elapsed(),
        peer,
    })
}

async fn request_session(
    endpoint: &Endpoint,
    workspace: &str,
    force_relay: bool,
) -> anyhow::Result<SessionGrant> {
    let url = format!(
        "{}{}",
        endpoint.url.trim_end_matches('/'),
        sessions_path(workspace)
    );
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&endpoint.token)
        .json(&SessionRequest { force_relay })
        .send()
        .await
        .with_context(|| format!("reaching burrowd at {}", endpoint.url))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(match serde_json::from_str::<ApiError>(&body) {
            Ok(e) => anyhow!(e),
            Err(_) => anyhow!("HTTP {status}: {body}"),
        })
        .context(format!(
            "burrowd refused a session for workspace {workspace}"
        ));
    }
    response
        .json::<SessionGrant>()
        .await
        .context("reading burrowd's session grant")
}

fn ws_base(url: &str) -> anyhow::Result<String> {
    let url = url.trim_end_matches('/');
    if let Some(rest) = url.strip_prefix("http://") {
        Ok(format!("ws://{rest}"))
    } else if let Some(rest) = url.strip_prefix("https://") {
        Ok(format!("wss://{rest}"))
    } else {
        bail!("burrowd URL {url:?} must start with http:// or https://")
    }
}

async fn send<S>(ws: &mut S, msg: &ClientToServer) -> anyhow::Result<()>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let text = serde_json::to_string(msg).context("encoding a signaling message")?;
    ws.send(Message::text(text))
        .await
        .context("sending on the signaling WebSocket")
}
