//! `tunnel.fetch` and `tunnel.webSocket` against burrow-testbed, a real HTTP/1.1 and
//! WebSocket server (axum) that `scripts/wasm-test.sh` starts on loopback, in Chrome.
//!
//! The URLs name the host `workspace.invalid`: the agent dials its own host whatever the
//! URL says, and the host only becomes the `Host` header.
#![cfg(target_arch = "wasm32")]

use burrow_client::{ConnectOptions, Tunnel};
use js_sys::{Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use web_sys::{ReadableStreamDefaultReader, Request, Response};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen(inline_js = r#"
export function nextEvent(target, type, timeoutMs) {
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${type} event within ${timeoutMs} ms`)), timeoutMs);
        target.addEventListener(type, (e) => { clearTimeout(timer); resolve(e); }, { once: true });
    });
}
export function slowStream(chunks, delayMs) {
    let i = 0;
    return new ReadableStream({
        async pull(controller) {
            await new Promise((r) => setTimeout(r, delayMs));
            if (i < chunks.length) controller.enqueue(chunks[i++]); else controller.close();
        },
    });
}
export function makeRequest(url, init) { return new Request(url, init); }
export function recordMessages(ws) {
    const got = [];
    ws.onmessage = (e) => got.push(e.data);
    return got;
}
export async function blobBytes(blob) { return new Uint8Array(await blob.arrayBuffer()); }
"#)]
extern "C" {
    #[wasm_bindgen(js_name = nextEvent)]
    fn next_event(target: &JsValue, kind: &str, timeout_ms: u32) -> js_sys::Promise;
    #[wasm_bindgen(js_name = slowStream)]
    fn slow_stream(chunks: &js_sys::Array, delay_ms: u32) -> JsValue;
    #[wasm_bindgen(js_name = makeRequest)]
    fn make_request(url: &str, init: &Object) -> Request;
    #[wasm_bindgen(js_name = recordMessages)]
    fn record_messages(ws: &JsValue) -> js_sys::Array;
    #[wasm_bindgen(js_name = blobBytes)]
    fn blob_bytes(blob: &JsValue) -> js_sys::Promise;
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

fn app_port() -> u16 {
    setting!("BURROW_TEST_APP_PORT").parse().expect("a port")
}

fn app_url(path: &str) -> String {
    format!("http://workspace.invalid:{}{path}", app_port())
}

/// burrow-testbed's `/bytes/{n}` byte `i` (a copy of `burrow_testbed::pattern`: the
/// testbed is a native binary).
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

async fn connect() -> Tunnel {
    let opts = ConnectOptions::new(
        setting!("BURROW_TEST_URL"),
        setting!("BURROW_TEST_TOKEN"),
        setting!("BURROW_TEST_WORKSPACE"),
    );
    match Tunnel::connect(opts).await {
        Ok(t) => t,
        Err(e) => panic!("connect failed: {e}"),
    }
}

fn obj(pairs: &[(&str, JsValue)]) -> Object {
    let o = Object::new();
    for (k, v) in pairs {
        Reflect::set(&o, &(*k).into(), v).expect("set");
    }
    o
}

async fn try_fetch(tunnel: &Tunnel, request: JsValue, init: JsValue) -> Result<Response, JsValue> {
    JsFuture::from(tunnel.fetch_js(request, init))
        .await
        .map(JsCast::unchecked_into)
}

async fn fetch(tunnel: &Tunnel, request: impl Into<JsValue>) -> Response {
    match try_fetch(tunnel, request.into(), JsValue::UNDEFINED).await {
        Ok(r) => r,
        Err(e) => panic!("fetch failed: {e:?}"),
    }
}

async fn body(response: &Response) -> Vec<u8> {
    let buf = JsFuture::from(response.array_buffer().expect("arrayBuffer"))
        .await
        .expect("read the body");
    Uint8Array::new(&buf).to_vec()
}

async fn text(response: &Response) -> String {
    String::from_utf8(body(response).await).expect("UTF-8 body")
}

fn header(response: &Response, name: &str) -> Option<String> {
    response.headers().get(name).expect("header name")
}

fn error_message(err: &JsValue) -> String {
    Reflect::get(err, &"message".into())
        .ok()
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| format!("{err:?}"))
}

#[wasm_bindgen_test]
async fn get_returns_status_headers_and_the_url_host_as_host() {
    let tunnel = connect().await;
    let response = fetch(&tunnel, app_url("/headers")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.status_text(), "OK");
    assert!(response.ok());
    let seen = text(&response).await;
    let host = format!("host: workspace.invalid:{}\n", app_port());
    assert!(seen.contains(&host), "{seen}");
    assert!(seen.contains("accept-encoding: gzip, deflate\n"), "{seen}");
    tunnel.close();
}

#[wasm_bindgen_test]
async fn init_host_replaces_the_host_header() {
    let tunnel = connect().await;
    let init = obj(&[("host", "burrow.example:8443".into())]);
    let response = try_fetch(&tunnel, app_url("/headers").into(), init.into())
        .await
        .expect("fetch");
    let seen = text(&response).await;
    assert!(seen.contains("host: burrow.example:8443\n"), "{seen}");
    tunnel.close();
}

#[wasm_bindgen_test]
async fn post_body_comes_back_byte_exact_with_content_length() {
    let tunnel = connect().await;
    let data: Vec<u8> = (0..300_000u64).map(pattern).collect();
    let init = obj(&[
        ("method", "POST".into()),
        ("body", Uint8Array::from(&data[..]).into()),
        (
            "headers",
            obj(&[("content-type", "application/x-test".into())]).into(),
        ),
    ]);
    let response = fetch(&tunnel, make_request(&app_url("/echo"), &init)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-request-method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        header(&response, "x-request-framing").as_deref(),
        Some("length")
    );
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("application/x-test")
    );
    assert!(body(&response).await == data, "echoed body differs");
    tunnel.close();
}

#[wasm_bindgen_test]
async fn every_method_reaches_the_app() {
    let tunnel = connect().await;
    for method in ["PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"] {
        let init = obj(&[("method", method.into())]);
        let response = fetch(&tunnel, make_request(&app_url("/echo"), &init)).await;
        assert_eq!(response.status(), 200, "{method}");
        assert_eq!(
            header(&response, "x-request-method").as_deref(),
            Some(method)
        );
        assert!(body(&response).await.is_empty());
    }
    tunnel.close();
}

#[wasm_bindgen_test]
async fn streamed_request_body_is_sent_chunked_and_exact() {
    let tunnel = connect().await;
    let chunks = js_sys::Array::new();
    let mut expected = Vec::new();
    for k in 0..5u64 {
        let chunk: Vec<u8> = (k * 10_000..k * 10_000 + 7_000).map(pattern).collect();
        expected.extend_from_slice(&chunk);
        chunks.push(&Uint8Array::from(&chunk[..]));
    }
    // Chunks 100 ms apart: the body is still being produced when the request goes out.
    let init = obj(&[
        ("method", "POST".into()),
        ("body", slow_stream(&chunks, 100)),
        ("duplex", "half".into()),
    ]);
    let response = fetch(&tunnel, make_request(&app_url("/echo"), &init)).await;
    assert_eq!(
        header(&response, "x-request-framing").as_deref(),
        Some("chunked")
    );
    assert!(body(&response).await == expected, "echoed body differs");
    tunnel.close();
}

#[wasm_bindgen_test]
async fn large_response_body_streams_with_exact_content() {
    let tunnel = connect().await;
    const LEN: u64 = 64 * 1024 * 1024;
    let response = fetch(&tunnel, app_url(&format!("/bytes/{LEN}"))).await;
    assert_eq!(header(&response, "content-length"), Some(LEN.to_string()));
    let reader: ReadableStreamDefaultReader = response
        .body()
        .expect("a body")
        .get_reader()
        .unchecked_into();
    let mut offset = 0u64;
    let mut chunks = 0;
    loop {
        let result = JsFuture::from(reader.read()).await.expect("read");
        if Reflect::get(&result, &"done".into())
            .expect("done")
            .is_truthy()
        {
            break;
        }
        let chunk: Uint8Array = Reflect::get(&result, &"value".into())
            .expect("value")
            .unchecked_into();
        let chunk = chunk.to_vec();
        // Pull-based: no read hands out more than one tunnel read's worth.
        assert!(chunk.len() <= 256 * 1024, "chunk of {} bytes", chunk.len());
        for (i, b) in chunk.iter().enumerate() {
            if *b != pattern(offset + i as u64) {
                panic!(
                    "byte {} is {b}, expected {}",
                    offset + i as u64,
                    pattern(offset + i as u64)
                );
            }
        }
        offset += chunk.len() as u64;
        chunks += 1;
    }
    assert_eq!(offset, LEN);
    assert!(chunks > 1);
    tunnel.close();
}

#[wasm_bindgen_test]
async fn keep_alive_reuses_the_connection_after_a_full_read() {
    let tunnel = connect().await;
    let first = text(&fetch(&tunnel, app_url("/conn")).await).await;
    let second = text(&fetch(&tunnel, app_url("/conn")).await).await;
    assert_eq!(
        first, second,
        "the second request used another TCP connection"
    );
    // A HEAD and a 204 leave the connection in step too.
    let head = make_request(&app_url("/conn"), &obj(&[("method", "HEAD".into())]));
    assert!(fetch(&tunnel, head).await.body().is_none());
    assert_eq!(fetch(&tunnel, app_url("/status/204")).await.status(), 204);
    let third = text(&fetch(&tunnel, app_url("/conn")).await).await;
    assert_eq!(first, third);
    // Two requests at once cannot share one connection. (One after the other may: a body
    // that arrived with its head is taken whole, which frees the connection at once.)
    let a = JsFuture::from(tunnel.fetch_js(app_url("/conn").into(), JsValue::UNDEFINED));
    let b = JsFuture::from(tunnel.fetch_js(app_url("/conn").into(), JsValue::UNDEFINED));
    let (a, b): (Response, Response) = (
        a.await.expect("fetch a").unchecked_into(),
        b.await.expect("fetch b").unchecked_into(),
    );
    let (a, b) = (text(&a).await, text(&b).await);
    assert_ne!(a, b);
    tunnel.close();
}

#[wasm_bindgen_test]
async fn unread_body_keeps_its_connection_out_of_the_pool() {
    let tunnel = connect().await;
    let big = fetch(&tunnel, app_url("/bytes/10000000")).await;
    let other = text(&fetch(&tunnel, app_url("/conn")).await).await;
    drop(big);
    let again = text(&fetch(&tunnel, app_url("/conn")).await).await;
    assert_eq!(other, again);
    tunnel.close();
}

#[wasm_bindgen_test]
async fn stale_pooled_connection_is_retried_once_for_idempotent_requests_only() {
    let tunnel = connect().await;
    let port: u16 = setting!("BURROW_TEST_FLAKY_PORT").parse().expect("a port");
    let url = format!("http://workspace.invalid:{port}/");
    let first: u64 = text(&fetch(&tunnel, url.as_str()).await)
        .await
        .parse()
        .expect("a connection number");
    // The pooled connection is closed unanswered: the GET goes again on a fresh one.
    let second: u64 = text(&fetch(&tunnel, url.as_str()).await)
        .await
        .parse()
        .expect("a connection number");
    assert_eq!(second, first + 1);
    // A POST is never sent twice: the stale connection's failure is the answer.
    let post = make_request(&url, &obj(&[("method", "POST".into())]));
    let err = try_fetch(&tunnel, post.into(), JsValue::UNDEFINED)
        .await
        .expect_err("a POST on a stale connection");
    let message = error_message(&err);
    assert!(
        message.starts_with("bad response from the app: "),
        "{message}"
    );
    tunnel.close();
}

#[wasm_bindgen_test]
async fn redirects_are_followed_up_to_the_final_response() {
    let tunnel = connect().await;
    let response = fetch(&tunnel, app_url("/redirect/3")).await;
    assert_eq!(response.status(), 200);
    assert!(response.redirected());
    assert_eq!(response.url(), app_url("/redirect/0"));
    assert_eq!(text(&response).await, "done");
    let too_many = try_fetch(&tunnel, app_url("/redirect/21").into(), JsValue::UNDEFINED)
        .await
        .expect_err("21 redirects");
    assert!(error_message(&too_many).contains("more than 20 redirects"));
    tunnel.close();
}

#[wasm_bindgen_test]
async fn manual_redirect_returns_the_3xx_and_error_rejects() {
    let tunnel = connect().await;
    let manual = make_request(
        &app_url("/redirect/2"),
        &obj(&[("redirect", "manual".into())]),
    );
    let response = fetch(&tunnel, manual).await;
    assert_eq!(response.status(), 302);
    assert_eq!(
        header(&response, "location").as_deref(),
        Some("/redirect/1")
    );
    let error = make_request(
        &app_url("/redirect/2"),
        &obj(&[("redirect", "error".into())]),
    );
    let err = try_fetch(&tunnel, error.into(), JsValue::UNDEFINED)
        .await
        .expect_err("redirect mode error");
    assert!(
        error_message(&err).starts_with("redirect refused: "),
        "{err:?}"
    );
    tunnel.close();
}

#[wasm_bindgen_test]
async fn see_other_turns_post_into_get_and_307_repeats_the_post() {
    let tunnel = connect().await;
    let post = |url: &str| {
        make_request(
            url,
            &obj(&[("method", "POST".into()), ("body", "payload".into())]),
        )
    };
    let response = fetch(&tunnel, post(&app_url("/redirect-status/303"))).await;
    assert_eq!(
        header(&response, "x-request-method").as_deref(),
        Some("GET")
    );
    assert_eq!(text(&response).await, "");
    let response = fetch(&tunnel, post(&app_url("/redirect-status/307"))).await;
    assert_eq!(
        header(&response, "x-request-method").as_deref(),
        Some("POST")
    );
    assert_eq!(text(&response).await, "payload");
    tunnel.close();
}

#[wasm_bindgen_test]
async fn gzip_and_deflate_bodies_are_decoded() {
    let tunnel = connect().await;
    let expected = "burrow decompressed this text: ".repeat(100);
    for coding in ["gzip", "deflate"] {
        let response = fetch(&tunnel, app_url(&format!("/{coding}"))).await;
        assert_eq!(header(&response, "content-encoding"), None, "{coding}");
        assert_eq!(header(&response, "content-length"), None, "{coding}");
        assert_eq!(text(&response).await, expected, "{coding}");
    }
    tunnel.close();
}

async fn fetch_parts(tunnel: &Tunnel, url: &str, init: &Object) -> Object {
    let request: JsValue = make_request(url, init).into();
    match JsFuture::from(tunnel.fetch_parts_js_api(request, JsValue::UNDEFINED)).await {
        Ok(parts) => parts.unchecked_into(),
        Err(e) => panic!("fetchParts failed: {e:?}"),
    }
}

fn parts_header(parts: &Object, name: &str) -> Option<String> {
    let headers: js_sys::Array = get(parts, "headers").unchecked_into();
    headers.iter().find_map(|pair| {
        let pair: js_sys::Array = pair.unchecked_into();
        (pair.get(0).as_string()? == name).then(|| pair.get(1).as_string())?
    })
}

async fn read_stream(stream: JsValue) -> Vec<u8> {
    let response = Response::new_with_opt_readable_stream(Some(stream.unchecked_ref()))
        .expect("a Response of the stream");
    body(&response).await
}

#[wasm_bindgen_test]
async fn fetch_parts_hands_over_a_body_that_arrived_with_its_head_whole() {
    let tunnel = connect().await;
    let parts = fetch_parts(&tunnel, &app_url("/bytes/1024"), &Object::new()).await;
    assert_eq!(get(&parts, "status").as_f64(), Some(200.0));
    assert_eq!(
        parts_header(&parts, "content-length").as_deref(),
        Some("1024")
    );
    let body = get(&parts, "body");
    let bytes = body
        .dyn_ref::<Uint8Array>()
        .unwrap_or_else(|| panic!("a 1 KiB body is not whole: {body:?}"))
        .to_vec();
    assert_eq!(bytes.len(), 1024);
    assert!(
        bytes
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern(i as u64))
    );
    // The connection went back to the pool: the next request reuses it.
    let again = fetch_parts(&tunnel, &app_url("/bytes/10"), &Object::new()).await;
    assert!(get(&again, "body").is_instance_of::<Uint8Array>());
    tunnel.close();
}

#[wasm_bindgen_test]
async fn fetch_parts_streams_a_body_larger_than_what_arrived_with_its_head() {
    let tunnel = connect().await;
    const LEN: usize = 4 * 1024 * 1024;
    let parts = fetch_parts(&tunnel, &app_url(&format!("/bytes/{LEN}")), &Object::new()).await;
    let body = get(&parts, "body");
    assert!(body.is_instance_of::<web_sys::ReadableStream>(), "{body:?}");
    let bytes = read_stream(body).await;
    assert_eq!(bytes.len(), LEN);
    assert!(
        bytes
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern(i as u64))
    );
    tunnel.close();
}

#[wasm_bindgen_test]
async fn fetch_parts_of_a_compressed_body_is_decoded_and_drops_the_coding_headers() {
    let tunnel = connect().await;
    let parts = fetch_parts(&tunnel, &app_url("/gzip"), &Object::new()).await;
    assert_eq!(parts_header(&parts, "content-encoding"), None);
    assert_eq!(parts_header(&parts, "content-length"), None);
    let text = String::from_utf8(read_stream(get(&parts, "body")).await).expect("UTF-8");
    assert_eq!(text, "burrow decompressed this text: ".repeat(100));
    let head = fetch_parts(
        &tunnel,
        &app_url("/bytes/100"),
        &obj(&[("method", "HEAD".into())]),
    )
    .await;
    assert!(get(&head, "body").is_null());
    tunnel.close();
}

#[wasm_bindgen_test]
async fn set_cookie_is_stored_and_sent_back() {
    let tunnel = connect().await;
    let port = app_port();
    let set = fetch(&tunnel, app_url("/cookie/set?a=1&b=2")).await;
    assert_eq!(text(&set).await, "set");
    let echo = text(&fetch(&tunnel, app_url("/cookie/echo")).await).await;
    assert_eq!(echo, "a=1; b=2");

    let cookies = js_sys::Array::from(&tunnel.cookies_js(port).expect("cookies"));
    assert_eq!(cookies.length(), 2);
    let first = cookies.get(0);
    let field = |k: &str| Reflect::get(&first, &k.into()).expect(k);
    assert_eq!(field("name").as_string().as_deref(), Some("a"));
    assert_eq!(field("value").as_string().as_deref(), Some("1"));
    assert_eq!(field("path").as_string().as_deref(), Some("/"));
    assert_eq!(field("httpOnly").as_bool(), Some(false));

    let omit = make_request(
        &app_url("/cookie/echo"),
        &obj(&[("credentials", "omit".into())]),
    );
    assert_eq!(text(&fetch(&tunnel, omit).await).await, "");

    fetch(&tunnel, app_url("/cookie/set?a=")).await;
    let echo = text(&fetch(&tunnel, app_url("/cookie/echo")).await).await;
    assert_eq!(echo, "b=2");
    tunnel.close();
}

#[wasm_bindgen_test]
async fn head_204_and_304_have_no_body() {
    let tunnel = connect().await;
    let head = make_request(&app_url("/bytes/10"), &obj(&[("method", "HEAD".into())]));
    let response = fetch(&tunnel, head).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-length").as_deref(), Some("10"));
    assert!(response.body().is_none());
    for status in [204, 304] {
        let response = fetch(&tunnel, app_url(&format!("/status/{status}"))).await;
        assert_eq!(response.status(), status);
        assert!(response.body().is_none());
    }
    let response = fetch(&tunnel, app_url("/status/404")).await;
    assert_eq!(response.status(), 404);
    assert!(!response.ok());
    assert_eq!(text(&response).await, "status 404");
    tunnel.close();
}

#[wasm_bindgen_test]
async fn abort_rejects_the_body_read_with_the_signals_reason() {
    let tunnel = connect().await;
    let controller = web_sys::AbortController::new().expect("AbortController");
    let init = obj(&[("signal", controller.signal().into())]);
    let response = fetch(&tunnel, make_request(&app_url("/bytes/500000000"), &init)).await;
    let reader: ReadableStreamDefaultReader = response
        .body()
        .expect("a body")
        .get_reader()
        .unchecked_into();
    JsFuture::from(reader.read())
        .await
        .expect("the first piece");
    controller.abort();
    // Reads fail with the signal's reason (a pull-based body holds at most one piece).
    let err = loop {
        match JsFuture::from(reader.read()).await {
            Ok(result) => assert!(
                !Reflect::get(&result, &"done".into())
                    .expect("done")
                    .is_truthy(),
                "the aborted body ended normally"
            ),
            Err(e) => break e,
        }
    };
    let name = Reflect::get(&err, &"name".into())
        .expect("name")
        .as_string();
    assert_eq!(name.as_deref(), Some("AbortError"), "{err:?}");

    let aborted = web_sys::AbortController::new().expect("AbortController");
    aborted.abort();
    let init = obj(&[("signal", aborted.signal().into())]);
    let err = try_fetch(
        &tunnel,
        make_request(&app_url("/conn"), &init).into(),
        JsValue::UNDEFINED,
    )
    .await
    .expect_err("an aborted request");
    let name = Reflect::get(&err, &"name".into())
        .expect("name")
        .as_string();
    assert_eq!(name.as_deref(), Some("AbortError"), "{err:?}");
    // The tunnel is fine afterwards.
    assert_eq!(fetch(&tunnel, app_url("/status/200")).await.status(), 200);
    tunnel.close();
}

async fn open_ws(tunnel: &Tunnel, protocols: JsValue) -> JsValue {
    let ws = tunnel
        .web_socket_js(&ws_url(), protocols, JsValue::UNDEFINED)
        .expect("webSocket");
    assert_eq!(ready_state(&ws), 0);
    // As the browser's WebSocket: no sending before the handshake completed.
    let err = call(&ws, "send", &["too early".into()]).expect_err("send while connecting");
    assert_eq!(
        get(&err, "name").as_string().as_deref(),
        Some("InvalidStateError")
    );
    JsFuture::from(next_event(&ws, "open", 20_000))
        .await
        .expect("open event");
    assert_eq!(ready_state(&ws), 1);
    ws
}

fn ws_url() -> String {
    format!("ws://workspace.invalid:{}/ws", app_port())
}

fn ready_state(ws: &JsValue) -> u32 {
    get(ws, "readyState").as_f64().expect("readyState") as u32
}

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &key.into()).expect(key)
}

fn call(ws: &JsValue, method: &str, args: &[JsValue]) -> Result<JsValue, JsValue> {
    let f: js_sys::Function = get(ws, method).unchecked_into();
    f.apply(ws, &args.iter().collect::<js_sys::Array>())
}

#[wasm_bindgen_test]
async fn websocket_echoes_text_and_reports_the_chosen_protocol() {
    let tunnel = connect().await;
    let protocols: js_sys::Array = ["chat", "other"]
        .iter()
        .map(|s| JsValue::from(*s))
        .collect();
    let ws = open_ws(&tunnel, protocols.into()).await;
    assert_eq!(get(&ws, "protocol").as_string().as_deref(), Some("chat"));
    assert_eq!(get(&ws, "extensions").as_string().as_deref(), Some(""));
    assert_eq!(get(&ws, "url").as_string(), Some(ws_url()));
    assert_eq!(get(&ws, "OPEN").as_f64(), Some(1.0));
    let via_property = record_messages(&ws);
    let message = next_event(&ws, "message", 10_000);
    call(&ws, "send", &["hello through the tunnel".into()]).expect("send");
    let event = JsFuture::from(message).await.expect("message event");
    assert_eq!(
        get(&event, "data").as_string().as_deref(),
        Some("hello through the tunnel")
    );
    assert_eq!(via_property.length(), 1);
    assert_eq!(
        via_property.get(0).as_string().as_deref(),
        Some("hello through the tunnel")
    );
    let closed = next_event(&ws, "close", 10_000);
    call(&ws, "close", &[1000.into(), "done".into()]).expect("close");
    assert_eq!(ready_state(&ws), 2);
    let event = JsFuture::from(closed).await.expect("close event");
    assert_eq!(get(&event, "code").as_f64(), Some(1000.0));
    assert_eq!(get(&event, "reason").as_string().as_deref(), Some("done"));
    assert_eq!(get(&event, "wasClean").as_bool(), Some(true));
    assert_eq!(ready_state(&ws), 3);
    tunnel.close();
}

#[wasm_bindgen_test]
async fn websocket_binary_round_trip_and_buffered_amount_drains() {
    let tunnel = connect().await;
    let ws = open_ws(&tunnel, JsValue::UNDEFINED).await;
    Reflect::set(&ws, &"binaryType".into(), &"arraybuffer".into()).expect("binaryType");
    let data: Vec<u8> = (0..2_000_000u64).map(pattern).collect();
    let message = next_event(&ws, "message", 30_000);
    call(&ws, "send", &[Uint8Array::from(&data[..]).into()]).expect("send");
    let queued = get(&ws, "bufferedAmount").as_f64().expect("bufferedAmount");
    assert_eq!(queued, data.len() as f64);
    let event = JsFuture::from(message).await.expect("message event");
    let got = get(&event, "data");
    assert!(got.is_instance_of::<js_sys::ArrayBuffer>());
    assert!(
        Uint8Array::new(&got).to_vec() == data,
        "echoed bytes differ"
    );
    assert_eq!(get(&ws, "bufferedAmount").as_f64(), Some(0.0));

    // binaryType "blob" (the default) delivers a Blob.
    Reflect::set(&ws, &"binaryType".into(), &"blob".into()).expect("binaryType");
    let message = next_event(&ws, "message", 10_000);
    call(
        &ws,
        "send",
        &[Uint8Array::from(&[1u8, 2, 3][..]).buffer().into()],
    )
    .expect("send");
    let event = JsFuture::from(message).await.expect("message event");
    let blob = get(&event, "data");
    assert!(blob.is_instance_of::<web_sys::Blob>());
    let bytes = JsFuture::from(blob_bytes(&blob)).await.expect("blob bytes");
    assert_eq!(Uint8Array::new(&bytes).to_vec(), [1, 2, 3]);
    call(&ws, "close", &[]).expect("close");
    tunnel.close();
}

#[wasm_bindgen_test]
async fn websocket_server_close_code_and_reason_reach_the_page() {
    let tunnel = connect().await;
    let ws = open_ws(&tunnel, JsValue::UNDEFINED).await;
    let closed = next_event(&ws, "close", 10_000);
    call(&ws, "send", &["close:4001:bye now".into()]).expect("send");
    let event = JsFuture::from(closed).await.expect("close event");
    assert_eq!(get(&event, "code").as_f64(), Some(4001.0));
    assert_eq!(
        get(&event, "reason").as_string().as_deref(),
        Some("bye now")
    );
    assert_eq!(get(&event, "wasClean").as_bool(), Some(true));
    assert_eq!(ready_state(&ws), 3);
    // Bad close codes throw as the browser's WebSocket does.
    let err = call(&ws, "close", &[1001.into()]).expect_err("code 1001 from a page");
    assert_eq!(
        get(&err, "name").as_string().as_deref(),
        Some("InvalidAccessError")
    );
    tunnel.close();
}

#[wasm_bindgen_test]
async fn websocket_to_a_plain_http_route_fails_with_error_and_close_1006() {
    let tunnel = connect().await;
    let url = format!("ws://workspace.invalid:{}/headers", app_port());
    let ws = tunnel
        .web_socket_js(&url, JsValue::UNDEFINED, JsValue::UNDEFINED)
        .expect("webSocket");
    let error = next_event(&ws, "error", 10_000);
    let closed = next_event(&ws, "close", 10_000);
    JsFuture::from(error).await.expect("error event");
    let event = JsFuture::from(closed).await.expect("close event");
    assert_eq!(get(&event, "code").as_f64(), Some(1006.0));
    assert_eq!(get(&event, "wasClean").as_bool(), Some(false));
    let err = call(&ws, "send", &["x".into()]);
    assert!(err.is_ok(), "send after close is silently dropped");
    tunnel.close();
}
