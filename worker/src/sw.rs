//! The service worker's event handlers (Wasm only). See the crate docs for the protocol.

use std::cell::RefCell;
use std::time::Duration;

use futures_channel::{mpsc, oneshot};
use futures_util::{FutureExt as _, StreamExt as _, future, pin_mut};
use gloo_events::EventListener;
use gloo_timers::future::TimeoutFuture;
use js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast as _, JsValue, prelude::wasm_bindgen};
use wasm_bindgen_futures::{JsFuture, future_to_promise};
use web_sys::{
    Client, ClientQueryOptions, ClientType, ExtendableMessageEvent, FetchEvent, Headers,
    MessageChannel, MessageEvent, MessagePort, ReadableStream, Request, RequestMode, Response,
    ResponseInit, ServiceWorkerGlobalScope, Url,
};

use burrow_proto::http_cache::{self, FetchCacheMode, Lookup};

use crate::cache;
use crate::scope::{HtmlInjector, WS_SHIM_PATH, app_port, rewrite_location};

/// How long a shell window gets to hand over its port.
const PORT_WAIT: Duration = Duration::from_secs(4);
/// How long a port gets to acknowledge a request before it counts as dead (its window
/// closed or navigated away: posting to such a port fails silently).
const ACK_WAIT: Duration = Duration::from_secs(3);
/// How long the window gets to deliver response headers, including connecting the
/// tunnel. Bounded so a request never hangs.
const HEAD_WAIT: Duration = Duration::from_secs(90);
/// The window says "waiting" every 2 s while the app has not answered; this long without
/// a word means the window died after accepting (a closed page's port need not fire
/// `close`), and the request fails instead of waiting out [`HEAD_WAIT`].
const BEAT_WAIT: Duration = Duration::from_secs(6);

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// This origin is one app, so one port serves every request: any shell window of the
/// origin holds a tunnel to that app and nothing else.
#[derive(Default)]
struct State {
    /// The live port of a shell window.
    port: Option<MessagePort>,
    /// The client id of the window the port came from, to tell whether it is still open.
    owner: Option<String>,
    /// Requests waiting for a port.
    waiters: Vec<oneshot::Sender<MessagePort>>,
}

/// Why a request could not be answered by the app.
#[derive(Debug, thiserror::Error)]
enum SwError {
    #[error(
        "no Burrow window holds this app's tunnel: reload the page, or open the app again from the dashboard"
    )]
    NoWindow,
    #[error("the port did not acknowledge the request")]
    NoAck,
    #[error("the app's Burrow window went away during the request")]
    WindowGone,
    #[error("the app did not answer within {0:?}")]
    HeadTimeout(Duration),
    #[error("{0}")]
    Tunnel(String),
    #[error("service worker: {0}")]
    Js(String),
}

impl From<JsValue> for SwError {
    fn from(v: JsValue) -> Self {
        let msg = v
            .dyn_ref::<js_sys::Error>()
            .map(|e| String::from(e.message()))
            .or_else(|| v.as_string())
            .unwrap_or_else(|| format!("{v:?}"));
        Self::Js(msg)
    }
}

fn scope() -> Result<ServiceWorkerGlobalScope, SwError> {
    js_sys::global()
        .dyn_into::<ServiceWorkerGlobalScope>()
        .map_err(|_| SwError::Js("not running in a service worker".into()))
}

/// Answers a fetch event for the app (the bootstrap hands over only requests outside
/// `/.burrow/` that are not top-level documents): a promise of the `Response` for
/// `respondWith`. It always resolves: failures become an error page (502/503).
#[wasm_bindgen(js_name = handleFetch)]
pub fn handle_fetch(event: FetchEvent) -> Promise {
    let request = event.request();
    future_to_promise(async move { Ok(respond(request).await.into()) })
}

/// Takes a `message` event from a window of this origin: a shell's port for the app's
/// requests (`{burrow: "port"}`), or an app page's request for a WebSocket line to a shell
/// (`{burrow: "ws-port"}`: the page's port is passed on to the shell, which then speaks to
/// the page directly). Returns a promise for `waitUntil`.
#[wasm_bindgen(js_name = handleMessage)]
pub fn handle_message(event: ExtendableMessageEvent) -> Promise {
    let data = event.data();
    let Some(port) = event.ports().get(0).dyn_into::<MessagePort>().ok() else {
        return Promise::resolve(&JsValue::UNDEFINED);
    };
    match get_str(&data, "burrow").as_deref() {
        Some("port") => {
            let owner = event
                .source()
                .and_then(|source| source.dyn_into::<Client>().ok())
                .map(|client| client.id());
            adopt_port(port, owner);
            Promise::resolve(&JsValue::UNDEFINED)
        }
        Some("ws-port") => future_to_promise(async move {
            if let Err(e) = broker_web_socket(&port).await {
                // The page's side learns through its port; it reports a failed WebSocket.
                let msg = Object::new();
                let _ = set(&msg, "ev", &"fail".into());
                let _ = set(&msg, "message", &e.to_string().into());
                let _ = port.post_message(&msg);
            }
            Ok(JsValue::UNDEFINED)
        }),
        _ => Promise::resolve(&JsValue::UNDEFINED),
    }
}

fn adopt_port(port: MessagePort, owner: Option<String>) {
    STATE.with_borrow_mut(|s| {
        // The first window to answer wins; later answers are closed so that window's
        // side does not wait on a port nobody uses.
        if s.port.is_some() {
            port.close();
            return;
        }
        s.port = Some(port.clone());
        s.owner = owner;
        for waiter in std::mem::take(&mut s.waiters) {
            let _ = waiter.send(port.clone());
        }
    });
}

/// Hands an app page's port to a shell. A dead cached port goes unnoticed here; the page
/// times out waiting for the shell's `ready`.
async fn broker_web_socket(page_port: &MessagePort) -> Result<(), SwError> {
    let host = shell_port().await?;
    let msg = Object::new();
    set(&msg, "burrow", &"ws-connect".into())?;
    host.post_message_with_transferable(&msg, &Array::of1(page_port))?;
    Ok(())
}

/// The app's port on the workspace (its origin's label says), for rewriting the app's
/// redirects to its own address.
fn this_app_port() -> Result<u16, SwError> {
    let host = scope()?.location().hostname();
    app_port(&host).ok_or_else(|| SwError::Js(format!("{host:?} is not an app origin")))
}

async fn respond(request: Request) -> Response {
    let page = match Url::new(&request.url()) {
        Ok(u) => u,
        Err(e) => return error_page(400, &SwError::from(e).to_string()),
    };
    let app_port = match this_app_port() {
        Ok(p) => p,
        Err(e) => return error_page(500, &e.to_string()),
    };
    let target = AppRequest {
        path: format!("{}{}", page.pathname(), page.search()),
        app_port,
        navigate: request.mode() == RequestMode::Navigate,
    };
    match forward_cached(&request, &target).await {
        Ok(r) => r,
        Err(e @ SwError::NoWindow) => error_page(503, &e.to_string()),
        Err(e) => error_page(502, &e.to_string()),
    }
}

/// What the app is asked for.
struct AppRequest {
    /// Path and query, as the page asked for them (the app sees them unchanged).
    path: String,
    /// The workspace port the app listens on.
    app_port: u16,
    /// A navigation: it sees redirects itself, and an HTML answer gets the shim.
    navigate: bool,
}

/// [`forward`], through the HTTP cache (see [`crate::cache`]) where the request allows.
///
/// A stored response is served only while a shell window holding the app's tunnel is open
/// (see [`live_shell_port`]): without one the page gets the same 503 as for anything else,
/// so losing access to the app ends access to its cached content too.
async fn forward_cached(request: &Request, target: &AppRequest) -> Result<Response, SwError> {
    let method = http::Method::from_bytes(request.method().as_bytes())
        .map_err(|_| SwError::Js("a request method the http crate refuses".into()))?;
    let mode = FetchCacheMode::from_fetch(&get_str(request, "cache").unwrap_or_default());
    let asked = cache::header_map(&request.headers());
    if !http_cache::request_uses_cache(&method, &asked, mode) {
        return forward(request, target, None).await;
    }
    let Some(store) = cache::open(&scope()?).await else {
        return forward(request, target, None).await;
    };
    let found = cache::find(&store, request).await;
    let had_stored = found.is_some();
    let (stored, conditional) = match found {
        Some(s) => {
            live_shell_port().await?;
            match http_cache::lookup(mode, &asked, &s.headers, s.received_ms, now_ms()) {
                Lookup::Use => return Ok(s.serve()?),
                Lookup::Revalidate(headers) => (Some(s), Some(headers)),
                Lookup::Fetch => (None, None),
            }
        }
        None if mode == FetchCacheMode::OnlyIfCached => {
            return Ok(error_page(
                504,
                "not in the cache, and the request was only-if-cached",
            ));
        }
        None => (None, None),
    };
    let response = forward(request, target, conditional.as_ref()).await?;
    let now = now_ms();
    let headers = cache::header_map(&response.headers());
    let status =
        http::StatusCode::from_u16(response.status()).unwrap_or(http::StatusCode::BAD_GATEWAY);
    match stored {
        // Only a revalidation of what is stored asked a question a 304 answers.
        Some(s) if status == http::StatusCode::NOT_MODIFIED => {
            Ok(s.freshen(&store, request, &headers, now)?)
        }
        // A redirect is stored (or not) by its own freshness, like any answer: the browser
        // follows it, and its target is a request of its own.
        _ if http_cache::storable(status, &headers, now) => {
            Ok(cache::store(&store, request, response, now)?)
        }
        _ => {
            if had_stored {
                // What is stored was not used and is not replaced: it is stale, and the
                // app's latest answer says it may not be reused.
                cache::remove(&store, request);
            }
            Ok(response)
        }
    }
}

fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

async fn forward(
    request: &Request,
    target: &AppRequest,
    conditional: Option<&http::HeaderMap>,
) -> Result<Response, SwError> {
    let navigate = target.navigate;
    let method = request.method();
    let body = if method == "GET" || method == "HEAD" {
        JsValue::NULL
    } else {
        // Buffered, not streamed: a request that must be retried on a fresh port needs its
        // body twice, and apps' request bodies are small (forms, JSON).
        JsFuture::from(request.array_buffer()?).await?
    };
    let headers = Array::new();
    if let Some(entries) = js_sys::try_iter(&request.headers())? {
        for entry in entries {
            headers.push(&entry?);
        }
    }
    // The cache's revalidation: the request had no conditional headers of its own.
    for (name, value) in conditional.into_iter().flatten() {
        if let Ok(value) = value.to_str() {
            headers.push(&Array::of2(&name.as_str().into(), &value.into()));
        }
    }
    // Every redirect goes back to the browser, which follows it as it would the app's own
    // (or not: the request's redirect mode is the browser's to apply): so the page's
    // `response.url` and `redirected`, the address bar and relative links are right, and an
    // absolute Location on the app's own origin comes back through this worker.
    let redirect = "manual";
    let msg = Object::new();
    set(&msg, "burrow", &"fetch".into())?;
    set(
        &msg,
        "url",
        &format!("http://localhost:{}{}", target.app_port, target.path).into(),
    )?;
    set(&msg, "method", &method.as_str().into())?;
    set(&msg, "headers", &headers)?;
    set(&msg, "body", &body)?;
    set(&msg, "redirect", &redirect.into())?;
    set(&msg, "navigate", &navigate.into())?;

    // One retry: a cached port can belong to a window that has gone.
    for _ in 0..2 {
        let port = shell_port().await?;
        match exchange(&port, &msg).await {
            Ok(reply) => return build_response(&reply, target, &method),
            Err(SwError::NoAck) => forget_port(&port),
            // The window died after accepting: safe to ask another window only when
            // repeating the request cannot repeat its effect.
            Err(SwError::WindowGone) if method == "GET" || method == "HEAD" => forget_port(&port),
            Err(e) => return Err(e),
        }
    }
    Err(SwError::NoWindow)
}

/// A shell's port: cached, or asked of the window clients.
async fn shell_port() -> Result<MessagePort, SwError> {
    if let Some(p) = STATE.with_borrow(|s| s.port.clone()) {
        return Ok(p);
    }
    let (tx, rx) = oneshot::channel();
    STATE.with_borrow_mut(|s| s.waiters.push(tx));
    let options = ClientQueryOptions::new();
    options.set_include_uncontrolled(true);
    options.set_type(ClientType::Window);
    let clients: Array = JsFuture::from(scope()?.clients().match_all_with_options(&options))
        .await?
        .unchecked_into();
    let ask = Object::new();
    set(&ask, "burrow", &"port-request".into())?;
    let mut asked = 0;
    for client in clients.iter() {
        if let Ok(client) = client.dyn_into::<Client>()
            && client.post_message(&ask).is_ok()
        {
            asked += 1;
        }
    }
    if asked == 0 {
        return Err(SwError::NoWindow);
    }
    let timeout = TimeoutFuture::new(millis(PORT_WAIT));
    pin_mut!(rx);
    match future::select(rx, timeout).await {
        future::Either::Left((Ok(port), _)) => Ok(port),
        _ => Err(SwError::NoWindow),
    }
}

/// [`shell_port`], checked against the window that handed the port over. A cached port of
/// a closed window goes unnoticed until a request through it gets no answer, and a request
/// answered from the cache sends none: without this look, cached content would stay
/// reachable after the last shell closed.
async fn live_shell_port() -> Result<MessagePort, SwError> {
    for _ in 0..2 {
        let port = shell_port().await?;
        let Some(owner) = STATE.with_borrow(|s| s.owner.clone()) else {
            // Only a port whose message had no window as its source; nothing to look at.
            return Ok(port);
        };
        let client = JsFuture::from(scope()?.clients().get(&owner)).await?;
        if client.is_object() {
            return Ok(port);
        }
        forget_port(&port);
    }
    Err(SwError::NoWindow)
}

fn forget_port(port: &MessagePort) {
    STATE.with_borrow_mut(|s| {
        if s.port.as_ref().is_some_and(|p| p == port) {
            s.port = None;
            s.owner = None;
        }
    });
    port.close();
}

/// Posts one request on `port` with a fresh reply channel; waits for the acknowledgement,
/// then for the response.
async fn exchange(port: &MessagePort, msg: &Object) -> Result<JsValue, SwError> {
    let channel = MessageChannel::new()?;
    let reply = channel.port1();
    let (tx, mut rx) = mpsc::unbounded::<Option<JsValue>>();
    let on_message = {
        let tx = tx.clone();
        EventListener::new(&reply, "message", move |e| {
            if let Some(e) = e.dyn_ref::<MessageEvent>() {
                let _ = tx.unbounded_send(Some(e.data()));
            }
        })
    };
    // Chrome fires `close` on a port whose other end went away with its window.
    let on_close = EventListener::new(&reply, "close", move |_| {
        let _ = tx.unbounded_send(None);
    });
    reply.start();
    let transfer = Array::of1(&channel.port2());
    let body = Reflect::get(msg, &"body".into())?;
    if body.is_instance_of::<js_sys::ArrayBuffer>() {
        // Copied, so a retry can send it again.
        let copy = Uint8Array::new(&body).slice(0, Uint8Array::new(&body).length());
        set(msg, "body", &copy.buffer())?;
        transfer.push(&copy.buffer());
    }
    port.post_message_with_transferable(msg, &transfer)?;

    let first = next_message(&mut rx, ACK_WAIT).await;
    let result = match first {
        Next::Message(m) if get_str(&m, "type").as_deref() == Some("accepted") => {
            let deadline = js_sys::Date::now() + HEAD_WAIT.as_secs_f64() * 1000.0;
            loop {
                match next_message(&mut rx, BEAT_WAIT).await {
                    Next::Message(m) if get_str(&m, "type").as_deref() == Some("waiting") => {
                        if js_sys::Date::now() > deadline {
                            break Err(SwError::HeadTimeout(HEAD_WAIT));
                        }
                    }
                    Next::Message(m) => break reply_to_result(m),
                    Next::Closed | Next::TimedOut => break Err(SwError::WindowGone),
                }
            }
        }
        Next::Message(m) => reply_to_result(m),
        Next::Closed | Next::TimedOut => Err(SwError::NoAck),
    };
    drop((on_message, on_close));
    reply.close();
    result
}

enum Next {
    Message(JsValue),
    Closed,
    TimedOut,
}

async fn next_message(rx: &mut mpsc::UnboundedReceiver<Option<JsValue>>, wait: Duration) -> Next {
    let timeout = TimeoutFuture::new(millis(wait)).fuse();
    let next = rx.next().fuse();
    pin_mut!(timeout, next);
    futures_util::select! {
        m = next => match m {
            Some(Some(m)) => Next::Message(m),
            _ => Next::Closed,
        },
        () = timeout => Next::TimedOut,
    }
}

fn reply_to_result(m: JsValue) -> Result<JsValue, SwError> {
    match get_str(&m, "type").as_deref() {
        Some("response") => Ok(m),
        Some("error") => Err(SwError::Tunnel(
            get_str(&m, "message").unwrap_or_else(|| "the tunnel failed".into()),
        )),
        other => Err(SwError::Js(format!(
            "unexpected reply {other:?} from the window"
        ))),
    }
}

fn build_response(reply: &JsValue, target: &AppRequest, method: &str) -> Result<Response, SwError> {
    let status = Reflect::get(reply, &"status".into())?
        .as_f64()
        .and_then(|s| u16::try_from(s as i64).ok())
        .filter(|s| (200..=599).contains(s))
        .ok_or_else(|| SwError::Tunnel("the app sent a status the browser cannot take".into()))?;
    let pairs: Array = Reflect::get(reply, &"headers".into())?
        .dyn_into()
        .map_err(|_| SwError::Js("reply without headers".into()))?;
    let mut encoded = false;
    // Only a document the browser shows runs scripts: a fetched HTML body (or an error
    // answer to one) keeps its bytes as the app sent them.
    let mut is_html = false;
    let mut kept = Vec::new();
    for pair in pairs.iter() {
        let pair: Array = pair.unchecked_into();
        let (Some(name), Some(value)) = (pair.get(0).as_string(), pair.get(1).as_string()) else {
            continue;
        };
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "content-encoding" => encoded = true,
            // Hop-by-hop, or set by the browser from the body it gets.
            "transfer-encoding" | "connection" | "keep-alive" | "set-cookie" => continue,
            "content-type"
                if target.navigate && value.to_ascii_lowercase().starts_with("text/html") =>
            {
                is_html = true
            }
            _ => {}
        }
        kept.push((lower, value));
    }
    let headers = Headers::new()?;
    for (name, value) in kept {
        // The body arrives decoded, so its coding and length no longer describe it.
        if encoded && (name == "content-encoding" || name == "content-length") {
            continue;
        }
        if is_html && name == "content-length" {
            continue;
        }
        let value = if name == "location" {
            rewrite_location(&value, target.app_port)
        } else {
            value
        };
        // A value the Headers class refuses is dropped rather than failing the response.
        let _ = headers.append(&name, &value);
    }
    let init = ResponseInit::new();
    init.set_status(status);
    if let Some(text) = get_str(reply, "statusText") {
        init.set_status_text(&text);
    }
    init.set_headers(&headers);
    let null_body = method == "HEAD" || matches!(status, 204 | 205 | 304);
    let body = Reflect::get(reply, &"body".into())?;
    if null_body || body.is_null() || body.is_undefined() {
        return Ok(Response::new_with_opt_readable_stream_and_init(
            None, &init,
        )?);
    }
    // A body that arrived whole with the head comes as bytes (one transfer); a longer or
    // still-running one as a stream, read as the page reads.
    if let Some(bytes) = body.dyn_ref::<Uint8Array>() {
        let bytes = if is_html {
            let mut injector = HtmlInjector::new(WS_SHIM_PATH);
            let mut html = injector.push(&bytes.to_vec());
            html.extend(injector.finish());
            Uint8Array::from(html.as_slice())
        } else {
            bytes.clone()
        };
        return Ok(Response::new_with_opt_js_u8_array_and_init(
            Some(&bytes),
            &init,
        )?);
    }
    let body = body
        .dyn_into::<ReadableStream>()
        .map_err(|_| SwError::Js("reply body is neither bytes nor a stream".into()))?;
    let body = if is_html { inject_shim(body) } else { body };
    Ok(Response::new_with_opt_readable_stream_and_init(
        Some(&body),
        &init,
    )?)
}

/// The HTML body with the WebSocket shim's script inserted, still streamed.
fn inject_shim(body: ReadableStream) -> ReadableStream {
    let source = wasm_streams::ReadableStream::from_raw(body.unchecked_into()).into_stream();
    let injector = std::rc::Rc::new(RefCell::new(HtmlInjector::new(WS_SHIM_PATH)));
    let tail_injector = injector.clone();
    let chunks = source
        .map(move |chunk| {
            let chunk = chunk?;
            let bytes = Uint8Array::new(&chunk).to_vec();
            let out = injector.borrow_mut().push(&bytes);
            Ok::<_, JsValue>(out)
        })
        .chain(futures_util::stream::once(async move {
            Ok(tail_injector.borrow_mut().finish())
        }))
        .filter(|r| future::ready(!matches!(r, Ok(v) if v.is_empty())))
        .map(|r| r.map(|v| JsValue::from(Uint8Array::from(v.as_slice()))));
    wasm_streams::ReadableStream::from_stream(chunks)
        .into_raw()
        .unchecked_into()
}

/// A small HTML page saying what went wrong, for a person looking at the frame.
fn error_page(status: u16, message: &str) -> Response {
    web_sys::console::warn_1(&format!("burrow service worker: {status}: {message}").into());
    let escaped = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let html = format!(
        "<!doctype html><meta charset=utf-8><title>Burrow: {status}</title>\
         <body style=\"font:15px system-ui;margin:2rem\"><h1>Burrow could not reach the app</h1>\
         <p id=burrow-error>{escaped}</p></body>"
    );
    let init = ResponseInit::new();
    init.set_status(status);
    if let Ok(h) = Headers::new() {
        let _ = h.set("content-type", "text/html; charset=utf-8");
        let _ = h.set("cache-control", "no-store");
        init.set_headers(&h);
    }
    Response::new_with_opt_str_and_init(Some(&html), &init).unwrap_or_else(|_| fallback_response())
}

fn fallback_response() -> Response {
    Response::error()
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn get_str(obj: &JsValue, key: &str) -> Option<String> {
    Reflect::get(obj, &key.into()).ok()?.as_string()
}

fn set(obj: &Object, key: &str, value: &JsValue) -> Result<(), SwError> {
    Reflect::set(obj, &key.into(), value)?;
    Ok(())
}
