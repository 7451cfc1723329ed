//! Idle agents for measuring burrowd's memory per connected agent.
//!
//! A thousand real `burrow-agent` processes would measure this machine, not burrowd: each
//! carries its own runtime and WebRTC stack. burrowd cannot tell these connections from
//! real agents: each authenticates with its own workspace's agent token, sends the agent's
//! `hello` and waits for `registered`, then stays connected answering burrowd's pings, as
//! an agent with no session does.

use std::time::Duration;

use anyhow::{Context as _, bail};
use burrow_proto::signal::{AGENT_CONNECT_PATH, AgentToServer, SIGNAL_VERSION, ServerToAgent};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http};

/// Connects one idle agent per token to burrowd at `url` (`http://host:port`), waits until
/// each is registered, and keeps them connected until `hold` resolves.
pub async fn hold_idle_agents(
    url: &str,
    tokens: &[String],
    hold: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let ws_url = format!(
        "{}{AGENT_CONNECT_PATH}",
        url.replacen("http://", "ws://", 1)
    );
    let mut tasks = tokio::task::JoinSet::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<anyhow::Result<()>>(tokens.len());
    for token in tokens {
        let ws_url = ws_url.clone();
        let token = token.clone();
        let ready = ready_tx.clone();
        tasks.spawn(async move {
            match register(&ws_url, &token).await {
                Ok(mut ws) => {
                    let _ = ready.send(Ok(())).await;
                    // Reading answers burrowd's pings.
                    while let Some(Ok(_)) = ws.next().await {}
                }
                Err(e) => {
                    let _ = ready.send(Err(e)).await;
                }
            }
        });
    }
    drop(ready_tx);
    for _ in 0..tokens.len() {
        match tokio::time::timeout(Duration::from_secs(60), ready_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => bail!("an idle agent task ended early"),
            Err(_) => bail!("idle agents did not all register within 60 s"),
        }
    }
    hold.await;
    tasks.shutdown().await;
    Ok(())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn register(ws_url: &str, token: &str) -> anyhow::Result<Ws> {
    let mut request = ws_url.into_client_request()?;
    request.headers_mut().insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .context("connecting an idle agent")?;
    let hello = AgentToServer::Hello {
        version: SIGNAL_VERSION,
        allowed_ports: vec![],
    };
    ws.send(Message::text(serde_json::to_string(&hello)?))
        .await?;
    match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str(&text)? {
            ServerToAgent::Registered { .. } => Ok(ws),
            other => bail!("expected registered, got {other:?}"),
        },
        other => bail!("no registration: {other:?}"),
    }
}
