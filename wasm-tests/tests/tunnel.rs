//! The browser client against a live burrowd and agent, in Chrome.
//!
//! `scripts/wasm-test.sh` starts everything on loopback and passes where it runs through
//! compile-time environment variables (the tests run in a page, which has no environment).
//! A missing variable fails the test: these suites never skip silently.
#![cfg(target_arch = "wasm32")]

use burrow_client::{ClientError, ConnectOptions, Tunnel, TunnelState, TunnelStream};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen(inline_js = r#"
export function stateRecorder() {
    const f = (event) => f.states.push(event.state);
    f.states = [];
    return f;
}
export function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
export function firePageHide() { window.dispatchEvent(new PageTransitionEvent("pagehide")); }
export async function auditOutcomes(url, token, port) {
    const r = await fetch(`${url}/api/v1/audit?limit=1000`, { headers: { authorization: `Bearer ${token}` } });
    if (!r.ok) throw new Error(`audit: ${r.status}`);
    return (await r.json()).filter((row) => row.port === port).map((row) => row.outcome);
}
"#)]
extern "C" {
    /// A function for `onstatechange` that records the states in its `states` array.
    #[wasm_bindgen(js_name = stateRecorder)]
    fn state_recorder() -> js_sys::Function;
    fn sleep(ms: u32) -> js_sys::Promise;
    /// Dispatches `pagehide` on the window, as closing the tab does.
    #[wasm_bindgen(js_name = firePageHide)]
    fn fire_page_hide();
    /// The outcomes of burrowd's audit rows for streams to `port`.
    #[wasm_bindgen(js_name = auditOutcomes)]
    fn audit_outcomes(url: &str, token: &str, port: u16) -> js_sys::Promise;
}

fn recorded_states(f: &js_sys::Function) -> Vec<String> {
    let states = js_sys::Reflect::get(f, &"states".into()).expect("states");
    js_sys::Array::from(&states)
        .iter()
        .map(|s| s.as_string().expect("a state string"))
        .collect()
}

macro_rules! setting {
    ($name:literal) => {
        option_env!($name).unwrap_or_else(|| {
            panic!(concat!(
                $name,
                " was not set at build time: run the suites with scripts/wasm-test.sh"
            ))
        })
    };
}

fn options() -> ConnectOptions {
    ConnectOptions::new(
        setting!("BURROW_TEST_URL"),
        setting!("BURROW_TEST_TOKEN"),
        setting!("BURROW_TEST_WORKSPACE"),
    )
}

fn port(value: &str) -> u16 {
    value.parse().expect("a port number")
}

fn echo_port() -> u16 {
    port(setting!("BURROW_TEST_ECHO_PORT"))
}

async fn outcomes_for(port: u16) -> Vec<String> {
    let rows = JsFuture::from(audit_outcomes(
        setting!("BURROW_TEST_URL"),
        setting!("BURROW_TEST_TOKEN"),
        port,
    ))
    .await
    .expect("the audit log");
    js_sys::Array::from(&rows)
        .iter()
        .map(|s| s.as_string().expect("an outcome"))
        .collect()
}

async fn connect(opts: ConnectOptions) -> Tunnel {
    match Tunnel::connect(opts).await {
        Ok(t) => t,
        Err(e) => panic!("connect failed: {e}"),
    }
}

/// Writes `data` while reading the echo concurrently (the echo cannot be read after the
/// whole write: credit would stall both directions), then half-closes and reads to EOF.
async fn echo(stream: &TunnelStream, data: &[u8], chunk: usize) -> Vec<u8> {
    let writer = async {
        for piece in data.chunks(chunk) {
            stream.write_all(piece).await.expect("write");
        }
        stream.finish().expect("closeWrite");
    };
    let reader = async {
        let mut got = Vec::with_capacity(data.len());
        while let Some(bytes) = stream.read_chunk().await.expect("read") {
            got.extend_from_slice(&bytes);
        }
        got
    };
    let ((), got) = futures_join(writer, reader).await;
    got
}

/// Both futures to completion, polled together.
async fn futures_join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none()
            && let std::task::Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let std::task::Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready((ra.take().expect("a"), rb.take().expect("b")))
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

#[wasm_bindgen_test]
async fn echo_port_returns_exactly_the_bytes_written() {
    let tunnel = connect(options()).await;
    let stream = tunnel.open(echo_port()).await.expect("dial the echo port");
    assert_eq!(stream.workspace_port(), echo_port());
    let got = echo(&stream, b"hello from the browser\n", 1024).await;
    assert_eq!(got, b"hello from the browser\n");
    let stats = tunnel.stats().await.expect("stats");
    assert_eq!(stats.bytes_sent, 23);
    assert_eq!(stats.bytes_received, 23);
    tunnel.close();
    assert!(tunnel.is_closed());
}

#[wasm_bindgen_test]
async fn four_megabytes_round_trip_with_exact_content() {
    let tunnel = connect(options()).await;
    let stream = tunnel.open(echo_port()).await.expect("dial the echo port");
    // Not a repeating short pattern: a lost, duplicated or reordered chunk shows.
    let data: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let got = echo(&stream, &data, 300 * 1024).await;
    assert_eq!(got.len(), data.len());
    assert!(got == data, "echoed bytes differ from the bytes written");
    tunnel.close();
}

#[wasm_bindgen_test]
async fn default_connection_is_direct_on_loopback() {
    let tunnel = connect(options()).await;
    let stream = tunnel.open(echo_port()).await.expect("dial");
    assert_eq!(echo(&stream, b"x", 1).await, b"x");
    let stats = tunnel.stats().await.expect("stats");
    assert_eq!(stats.path.to_string(), "direct");
    tunnel.close();
}

#[wasm_bindgen_test]
async fn forced_relay_connects_and_reports_the_relay_path() {
    let mut opts = options();
    opts.force_relay = true;
    let tunnel = connect(opts).await;
    let stream = tunnel
        .open(echo_port())
        .await
        .expect("dial through the relay");
    assert_eq!(echo(&stream, b"relayed", 1024).await, b"relayed");
    let stats = tunnel.stats().await.expect("stats");
    assert_eq!(stats.path.to_string(), "relay");
    tunnel.close();
}

#[wasm_bindgen_test]
async fn ping_returns_a_positive_round_trip() {
    let tunnel = connect(options()).await;
    let rtt = tunnel.ping_ms().await.expect("ping");
    assert!(rtt > 0.0 && rtt < 5_000.0, "rtt {rtt} ms");
    let stats = tunnel.stats().await.expect("stats");
    assert_eq!(stats.rtt_ms, Some(rtt));
    tunnel.close();
    let err = tunnel.ping_ms().await.expect_err("ping on a closed tunnel");
    assert!(matches!(err, ClientError::TunnelClosed(_)), "{err}");
}

/// Connects through the exported JS function and returns the rejection's message.
async fn js_connect_error(token: &str, workspace: &str) -> String {
    let opts = js_sys::Object::new();
    for (k, v) in [
        ("url", setting!("BURROW_TEST_URL")),
        ("token", token),
        ("workspace", workspace),
    ] {
        js_sys::Reflect::set(&opts, &k.into(), &v.into()).expect("set");
    }
    let err = JsFuture::from(burrow_client::connect_js(opts.into()))
        .await
        .expect_err("connect must be refused");
    let err: js_sys::Error = err.dyn_into().expect("a JS Error");
    assert_eq!(String::from(err.name()), "BurrowError");
    String::from(err.message())
}

#[wasm_bindgen_test]
async fn bad_token_is_refused_as_unauthorized() {
    let message = js_connect_error("not-a-token", setting!("BURROW_TEST_WORKSPACE")).await;
    assert!(message.starts_with("unauthorized: "), "{message}");
}

#[wasm_bindgen_test]
async fn another_users_workspace_is_refused_as_if_missing() {
    let message = js_connect_error(
        setting!("BURROW_TEST_OTHER_TOKEN"),
        setting!("BURROW_TEST_WORKSPACE"),
    )
    .await;
    assert!(
        message.starts_with("not_found: no workspace named"),
        "{message}"
    );
}

#[wasm_bindgen_test]
async fn port_not_allowed_is_refused_with_the_agents_reason() {
    let tunnel = connect(options()).await;
    let denied = port(setting!("BURROW_TEST_DENIED_PORT"));
    let err = match tunnel.open(denied).await {
        Ok(_) => panic!("port {denied} must be refused"),
        Err(e) => e,
    };
    assert!(matches!(err, ClientError::Refused { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with("stream refused: ") && message.contains("not allowed"),
        "{message}"
    );
    // The tunnel survives a refused stream.
    let stream = tunnel
        .open(echo_port())
        .await
        .expect("dial after a refusal");
    assert_eq!(echo(&stream, b"still up", 1024).await, b"still up");
    tunnel.close();
}

#[wasm_bindgen_test]
async fn lost_connection_fails_open_streams_and_reconnects_for_new_ones() {
    let tunnel = connect(options()).await;
    assert_eq!(tunnel.state(), TunnelState::Connected);
    let recorder = state_recorder();
    tunnel.set_on_state_change(Some(recorder.clone()));
    let stream = tunnel.open(echo_port()).await.expect("dial");
    stream.write_all(b"before").await.expect("write");

    tunnel.danger_drop_connection();
    let err = loop {
        match stream.read_chunk().await {
            Ok(Some(_)) => continue, // the echo of "before", if it came in time
            Ok(None) => panic!("EOF instead of an error on a lost connection"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, ClientError::ConnectionLost(_)), "{err}");
    assert!(
        err.to_string().starts_with("tunnel connection lost: "),
        "{err}"
    );
    assert_eq!(tunnel.state(), TunnelState::Reconnecting);

    // A new dial waits for the new connection.
    let stream = tunnel
        .open(echo_port())
        .await
        .expect("dial after reconnecting");
    assert_eq!(tunnel.state(), TunnelState::Connected);
    assert_eq!(echo(&stream, b"after", 1024).await, b"after");
    let stats = tunnel.stats().await.expect("stats");
    assert_eq!(stats.state, "connected");
    tunnel.close();
    wasm_bindgen_futures::JsFuture::from(sleep(50))
        .await
        .expect("sleep");
    assert_eq!(
        recorded_states(&recorder),
        ["reconnecting", "connected", "closed"]
    );
}

#[wasm_bindgen_test]
async fn refused_reconnection_closes_the_tunnel_with_burrowds_reason() {
    let tunnel = connect(options()).await;
    let recorder = state_recorder();
    tunnel.set_on_state_change(Some(recorder.clone()));
    // As if the user's token were revoked while the tunnel was up.
    tunnel.danger_set_token("revoked-token");
    tunnel.danger_drop_connection();
    let err = match tunnel.open(echo_port()).await {
        Ok(_) => panic!("a dial must fail once reconnecting was refused"),
        Err(e) => e,
    };
    assert!(err.to_string().starts_with("unauthorized: "), "{err}");
    assert_eq!(tunnel.state(), TunnelState::Closed);
    assert!(tunnel.is_closed());
    wasm_bindgen_futures::JsFuture::from(sleep(50))
        .await
        .expect("sleep");
    assert_eq!(recorded_states(&recorder), ["reconnecting", "closed"]);
}

#[wasm_bindgen_test]
async fn page_hide_closes_the_tunnel_and_the_agent_ends_its_streams_at_once() {
    // Rows for the echo port whose stream ended with its tunnel. The reason is not pinned:
    // the agent's webrtc-rs may drop the CLOSE frame that arrives bundled with the
    // channel's reset, and then records "data channel closed".
    let ended_with_tunnel = || async {
        outcomes_for(echo_port())
            .await
            .iter()
            .filter(|o| o.starts_with("tunnel closed"))
            .count()
    };
    let before = ended_with_tunnel().await;
    let tunnel = connect(options()).await;
    let stream = tunnel.open(echo_port()).await.expect("dial");
    assert_eq!(echo(&stream, b"open at pagehide", 1024).await.len(), 16);
    let open = tunnel.open(echo_port()).await.expect("dial");
    open.write_all(b"still open").await.expect("write");

    fire_page_hide();
    assert_eq!(tunnel.state(), TunnelState::Closed);
    let err = loop {
        match open.read_chunk().await {
            Ok(Some(_)) => continue, // the echo, if it came in time
            Ok(None) => panic!("EOF instead of an error on a tunnel closed by pagehide"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, ClientError::TunnelClosed(_)), "{err}");

    // The agent ended the open stream at once: its idle timeout (30 s) would be too late.
    for _ in 0..100 {
        if ended_with_tunnel().await > before {
            return;
        }
        JsFuture::from(sleep(100)).await.expect("sleep");
    }
    panic!("the agent had not ended the stream 10 s after pagehide");
}
