//! `tunnel.fetch`: an HTTP/1.1 client over tunnelled streams that answers with real
//! `Response`s, for pages and service workers that present a workspace app in the browser.
//!
//! The wire work is proto's [`burrow_proto::http1`] codec; cookie storage and redirect
//! rules are proto's [`burrow_proto::cookies`] and [`burrow_proto::redirect`]. This module
//! moves bytes between them, the tunnel's streams and the browser's stream APIs:
//!
//! - request bodies: a body already complete when the request is sent (a string, a
//!   buffer, a small stream) goes with `Content-Length`; a body that is still being
//!   produced after [`BODY_WAIT_MS`] or exceeds [`MAX_BUFFERED_BODY`] is streamed chunked;
//! - response bodies: a pull-based `ReadableStream` (`wasm-streams`) reads the tunnel
//!   stream only when the page reads, and reading is what grants the agent credit, so a
//!   large body never sits in memory;
//! - connections: each workspace port keeps up to [`MAX_IDLE_PER_PORT`] idle streams; a
//!   stream returns to the pool only after its response body was read to the end, the
//!   request body was sent whole, and the response allowed keep-alive.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};

use burrow_proto::cookies::{CookieJar, StoredCookie};
use burrow_proto::http1::{
    BodyEncoder, BodyFraming, ResponseDecoder, ResponseEvent, encode_request,
};
use burrow_proto::redirect::{BODY_HEADERS, MAX_REDIRECTS, RedirectMode, redirected};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use futures_util::future::{Either, select};
use gloo_events::EventListener;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri, request, response};
use js_sys::Uint8Array;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{
    AbortSignal, Headers, ReadableStream, Request, RequestCredentials, RequestRedirect, Response,
    ResponseInit, Url,
};

use crate::error::{ClientError, describe};
use crate::tunnel::{StreamHandle, Tunnel, TunnelStream};

#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    // web-sys has it only behind `web_sys_unstable_apis`; this is all of it we use.
    #[wasm_bindgen(js_name = DecompressionStream)]
    type DecompressionStream;
    #[wasm_bindgen(constructor, js_class = DecompressionStream, catch)]
    fn new(format: &str) -> Result<DecompressionStream, JsValue>;
}

/// Idle keep-alive streams kept per workspace port.
pub const MAX_IDLE_PER_PORT: usize = 6;

/// Largest request body sent with `Content-Length`; larger bodies go chunked.
pub const MAX_BUFFERED_BODY: usize = 1024 * 1024;

/// How long a request body may take to produce its next chunk before the request is sent
/// chunked instead of waiting for the whole body (a string or buffer body is complete at
/// once; a live stream, an upload from a slow source, is not).
pub const BODY_WAIT_MS: u32 = 20;

/// Most bytes of a redirect's body read to keep its connection; a larger one is dropped.
const MAX_DRAINED: usize = 64 * 1024;

/// The stream of the exchange in progress, for the abort listener to reset.
#[derive(Default)]
struct AbortSlot {
    handle: Option<StreamHandle>,
    aborted: bool,
}

type Current = Rc<RefCell<AbortSlot>>;

/// The HTTP client state of one tunnel: idle connections and cookie jars, per port.
#[derive(Default)]
pub(crate) struct HttpState {
    idle: HashMap<u16, Vec<Conn>>,
    jars: HashMap<u16, CookieJar>,
}

impl HttpState {
    /// The cookie jar of `port`'s app.
    pub(crate) fn jar(&mut self, port: u16) -> &mut CookieJar {
        self.jars.entry(port).or_default()
    }

    /// The live cookies of `port`'s app.
    pub(crate) fn cookies(&mut self, port: u16) -> Vec<StoredCookie> {
        let now = now_unix_ms();
        let jar = self.jar(port);
        jar.remove_expired(now);
        jar.live(now).cloned().collect()
    }

    fn take_idle(&mut self, port: u16) -> Option<Conn> {
        let idle = self.idle.get_mut(&port)?;
        while let Some(conn) = idle.pop() {
            // The app may have closed it while it sat in the pool.
            if !conn.stream.is_done() {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&mut self, port: u16, conn: Conn) {
        let idle = self.idle.entry(port).or_default();
        idle.retain(|c| !c.stream.is_done());
        if idle.len() < MAX_IDLE_PER_PORT {
            idle.push(conn);
        }
    }

    /// Forgets every idle connection (their streams are reset as they drop).
    pub(crate) fn clear_idle(&mut self) {
        self.idle.clear();
    }
}

/// One HTTP/1.1 connection: a tunnel stream and the decoder of its responses.
pub(crate) struct Conn {
    stream: TunnelStream,
    decoder: ResponseDecoder,
}

/// The request body, as far as it was read before sending.
enum RequestBody {
    None,
    /// The whole body: sent with `Content-Length`, and replayable (redirects, retries).
    Complete(Bytes),
    /// The start of a body still being produced: sent chunked, once.
    Streaming {
        start: Bytes,
        rest: Option<wasm_streams::readable::IntoStream<'static>>,
    },
}

impl RequestBody {
    async fn read(body: Option<ReadableStream>) -> Result<Self, ClientError> {
        let Some(body) = body else {
            return Ok(Self::None);
        };
        let mut rest = wasm_streams::ReadableStream::from_raw(body).into_stream();
        let mut start = BytesMut::new();
        loop {
            if start.len() > MAX_BUFFERED_BODY {
                break;
            }
            let next = std::pin::pin!(rest.next());
            let timer = gloo_timers::future::TimeoutFuture::new(BODY_WAIT_MS);
            // Dropping the losing `next()` loses nothing: the stream keeps its pending read.
            match select(next, timer).await {
                Either::Left((Some(chunk), _)) => start.extend_from_slice(&body_chunk(chunk)?),
                Either::Left((None, _)) => return Ok(Self::Complete(start.freeze())),
                Either::Right(((), _)) => break,
            }
        }
        Ok(Self::Streaming {
            start: start.freeze(),
            rest: Some(rest),
        })
    }

    fn replayable(&self) -> bool {
        !matches!(self, Self::Streaming { .. })
    }

    fn framing(&self, method: &Method) -> BodyFraming {
        match self {
            // As browsers do: a POST, PUT or PATCH without a body says so.
            Self::None if [Method::POST, Method::PUT, Method::PATCH].contains(method) => {
                BodyFraming::ContentLength(0)
            }
            Self::None => BodyFraming::Empty,
            Self::Complete(b) => BodyFraming::ContentLength(b.len() as u64),
            Self::Streaming { .. } => BodyFraming::Chunked,
        }
    }
}

fn body_chunk(chunk: Result<JsValue, JsValue>) -> Result<Vec<u8>, ClientError> {
    let chunk =
        chunk.map_err(|e| ClientError::Request(format!("reading the body: {}", describe(&e))))?;
    chunk
        .dyn_into::<Uint8Array>()
        .map(|a| a.to_vec())
        .map_err(|_| ClientError::Request("a request body chunk is not a Uint8Array".into()))
}

/// How an exchange failed, and whether retrying it on a fresh stream is safe.
struct ExchangeError {
    error: ClientError,
    /// A response byte arrived, or the request body was partly consumed.
    retry_unsafe: bool,
}

impl From<ClientError> for ExchangeError {
    fn from(error: ClientError) -> Self {
        Self {
            error,
            retry_unsafe: true,
        }
    }
}

/// `Request.method` values safe to send twice (RFC 9110 section 9.2.2).
fn idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

fn now_unix_ms() -> u64 {
    js_sys::Date::now() as u64
}

impl Tunnel {
    /// `tunnel.fetch(request, {host})`: see the crate docs. Rejects with the abort
    /// signal's reason when aborted, else with a [`ClientError`].
    pub async fn fetch(&self, request: Request, host: Option<String>) -> Result<Response, JsValue> {
        match self.fetch_parts(request, host).await? {
            (response, PartsBody::None) => response.into_response(Body::None),
            (response, PartsBody::Whole(bytes)) => {
                response.into_response(Body::Bytes(&Uint8Array::from(&bytes[..])))
            }
            (response, PartsBody::Streamed(state)) => {
                let stream = body_stream(response.coding(), *state)?;
                response.into_response(Body::Stream(&stream))
            }
        }
    }

    /// `tunnel.fetchParts(request, {host})`: the response as a plain object, for code that
    /// forwards it rather than reads it (the service-worker bridge posts it to the worker).
    /// Its body is a `Uint8Array` when the whole body had arrived with the head, so it
    /// crosses to another thread in one transfer; else a `ReadableStream`; `null` for none.
    pub async fn fetch_parts_js(
        &self,
        request: Request,
        host: Option<String>,
    ) -> Result<js_sys::Object, JsValue> {
        let (response, body) = self.fetch_parts(request, host).await?;
        let (body, decoded): (JsValue, bool) = match body {
            PartsBody::None => (JsValue::NULL, false),
            PartsBody::Whole(bytes) => (Uint8Array::from(&bytes[..]).into(), false),
            PartsBody::Streamed(state) => {
                let coding = response.coding();
                (body_stream(coding, *state)?.into(), coding.is_some())
            }
        };
        let headers = js_sys::Array::new();
        for (name, value) in response.visible_headers(decoded) {
            headers.push(&js_sys::Array::of2(&name.into(), &value.into()));
        }
        let parts = js_sys::Object::new();
        let set = |key: &str, value: &JsValue| js_sys::Reflect::set(&parts, &key.into(), value);
        set("status", &response.head.status.as_u16().into())?;
        set(
            "statusText",
            &response.head.status.canonical_reason().unwrap_or("").into(),
        )?;
        set("headers", &headers)?;
        set("url", &response.url.as_str().into())?;
        set("redirected", &response.redirected.into())?;
        set("body", &body)?;
        Ok(parts)
    }

    /// The exchange, with its body taken whole when it already arrived (and the browser
    /// need not decode it), else left to stream. Rejects with the abort signal's reason
    /// when aborted, else with a [`ClientError`].
    async fn fetch_parts(
        &self,
        request: Request,
        host: Option<String>,
    ) -> Result<(BuiltResponse, PartsBody), JsValue> {
        let signal = request.signal();
        if signal.aborted() {
            return Err(signal.reason());
        }
        let current: Current = Rc::default();
        let listener = {
            let current = Rc::clone(&current);
            EventListener::once(&signal, "abort", move |_| {
                let mut slot = current.borrow_mut();
                slot.aborted = true;
                if let Some(h) = slot.handle.take() {
                    h.reset("aborted by the page");
                }
            })
        };
        match self.fetch_inner(&request, host, &current).await {
            _ if signal.aborted() => Err(signal.reason()),
            Ok(Fetched { response, body }) => {
                let Some(mut body) = body else {
                    return Ok((response, PartsBody::None));
                };
                if response.coding().is_none()
                    && let Some(whole) = body.take_arrived()?
                {
                    return Ok((response, PartsBody::Whole(whole)));
                }
                body.abort = Some((listener, signal));
                body.current = current;
                Ok((response, PartsBody::Streamed(Box::new(body))))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn fetch_inner(
        &self,
        request: &Request,
        host_override: Option<String>,
        current: &Current,
    ) -> Result<Fetched, ClientError> {
        let mode = match request.redirect() {
            RequestRedirect::Error => RedirectMode::Error,
            RequestRedirect::Manual => RedirectMode::Manual,
            _ => RedirectMode::Follow,
        };
        let credentials = request.credentials() != RequestCredentials::Omit;
        let mut method = Method::from_bytes(request.method().as_bytes())
            .map_err(|_| ClientError::Request(format!("invalid method {}", request.method())))?;
        let mut url = Url::new(&request.url())
            .map_err(|e| ClientError::Request(format!("invalid URL: {}", describe(&e))))?;
        let mut headers = request_headers(&request.headers())?;
        let mut body = RequestBody::read(request.body()).await?;

        for hop in 0..=MAX_REDIRECTS {
            let port = url_port(&url)?;
            let path = url.pathname();
            let target = format!("{path}{}", url.search());
            let mut head_headers = headers.clone();
            let host = host_override.clone().unwrap_or_else(|| url.host());
            head_headers.insert(header::HOST, header_value("Host", &host)?);
            if !head_headers.contains_key(header::ACCEPT) {
                head_headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            }
            if !head_headers.contains_key(header::ACCEPT_ENCODING) {
                head_headers.insert(
                    header::ACCEPT_ENCODING,
                    HeaderValue::from_static("gzip, deflate"),
                );
            }
            if credentials
                && let Some(cookie) = self
                    .http
                    .borrow_mut()
                    .jar(port)
                    .cookie_header(&path, now_unix_ms())
            {
                head_headers.insert(header::COOKIE, header_value("Cookie", &cookie)?);
            }
            let (mut parts, ()) = http::Request::new(()).into_parts();
            parts.method = method.clone();
            parts.uri = target
                .parse::<Uri>()
                .map_err(|e| ClientError::Request(format!("invalid request target: {e}")))?;
            parts.headers = head_headers;

            let (conn, head, body_sent) = self.exchange(port, &parts, &mut body, current).await?;
            if credentials {
                let now = now_unix_ms();
                let mut http = self.http.borrow_mut();
                let jar = http.jar(port);
                for value in head.headers.get_all(header::SET_COOKIE) {
                    if let Err(e) = jar.store(value.as_bytes(), &path, now) {
                        web_sys::console::warn_1(&format!("burrow: cookie ignored: {e}").into());
                    }
                }
            }
            let body_state = BodyState {
                conn: Some(conn),
                http: Rc::downgrade(&self.http),
                port,
                reusable: body_sent,
                abort: None,
                current: Rc::default(),
                drained: 0,
                arrived: VecDeque::new(),
            };
            let location = head.headers.get(header::LOCATION).cloned();
            let next = redirected(head.status, &method);
            if let (Some(next), Some(location)) = (next, location) {
                match mode {
                    RedirectMode::Manual => {}
                    RedirectMode::Error => {
                        return Err(ClientError::Redirect(format!(
                            "{} redirect while the request's redirect mode is \"error\"",
                            head.status.as_u16()
                        )));
                    }
                    RedirectMode::Follow => {
                        if hop == MAX_REDIRECTS {
                            return Err(ClientError::Redirect(format!(
                                "more than {MAX_REDIRECTS} redirects"
                            )));
                        }
                        body_state.drain().await;
                        let location = String::from_utf8_lossy(location.as_bytes()).into_owned();
                        url = Url::new_with_base(&location, &url.href()).map_err(|e| {
                            ClientError::Redirect(format!(
                                "invalid Location {location:?}: {}",
                                describe(&e)
                            ))
                        })?;
                        if !matches!(url.protocol().as_str(), "http:" | "https:") {
                            return Err(ClientError::Redirect(format!(
                                "redirect to a non-HTTP URL {location:?}"
                            )));
                        }
                        if next.keep_body {
                            if !body.replayable() {
                                return Err(ClientError::Redirect(
                                    "a streamed request body cannot be sent again after a redirect"
                                        .into(),
                                ));
                            }
                        } else {
                            body = RequestBody::None;
                            for name in &BODY_HEADERS {
                                headers.remove(name);
                            }
                        }
                        method = next.method;
                        continue;
                    }
                }
            }
            let redirected = hop > 0;
            let final_url = url.href();
            let null_body = method == Method::HEAD
                || matches!(head.status.as_u16(), 101 | 103 | 204 | 205 | 304);
            let built = BuiltResponse {
                head,
                url: final_url,
                redirected,
            };
            if null_body {
                body_state.finish_empty();
                return Ok(Fetched {
                    response: built,
                    body: None,
                });
            }
            return Ok(Fetched {
                response: built,
                body: Some(body_state),
            });
        }
        Err(ClientError::Redirect(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// Sends one request on a pooled stream (or a new one) and reads the response head.
    /// A pooled stream that fails before any response byte is retried once on a fresh
    /// stream when the request is idempotent and its body can be sent again.
    async fn exchange(
        &self,
        port: u16,
        parts: &request::Parts,
        body: &mut RequestBody,
        current: &Current,
    ) -> Result<(Conn, response::Parts, bool), ClientError> {
        let mut fresh_only = false;
        loop {
            let pooled = if fresh_only {
                None
            } else {
                self.http.borrow_mut().take_idle(port)
            };
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => Conn {
                    stream: self.open(port).await?,
                    decoder: ResponseDecoder::default(),
                },
            };
            {
                let mut slot = current.borrow_mut();
                if slot.aborted {
                    return Err(ClientError::ResetLocally("aborted by the page".into()));
                }
                slot.handle = Some(conn.stream.handle());
            }
            match send_and_read_head(&mut conn, parts, body).await {
                Ok((head, body_sent)) => return Ok((conn, head, body_sent)),
                Err(e)
                    if reused
                        && !e.retry_unsafe
                        && idempotent(&parts.method)
                        && body.replayable() =>
                {
                    fresh_only = true;
                }
                Err(e) => return Err(e.error),
            }
        }
    }

    /// The cookies `port`'s app set, for `tunnel.cookies(port)`.
    pub fn cookies(&self, port: u16) -> Vec<StoredCookie> {
        self.http.borrow_mut().cookies(port)
    }
}

/// Writes the request and reads until the response head, both at once: an app may answer
/// before it read the whole body (then the rest is not sent, and the connection not
/// reused). Returns the head and whether the request body was sent whole.
async fn send_and_read_head(
    conn: &mut Conn,
    parts: &request::Parts,
    body: &mut RequestBody,
) -> Result<(response::Parts, bool), ExchangeError> {
    let mut buf = BytesMut::new();
    let framing = body.framing(&parts.method);
    let mut encoder = encode_request(parts, framing, &mut buf)
        .map_err(|e| ClientError::Request(e.to_string()))?;
    conn.decoder.expect_response(parts.method.clone());
    let handle = conn.stream.handle();
    let decoder = &mut conn.decoder;

    let consumed_stream = std::cell::Cell::new(false);
    let writer = async {
        match body {
            RequestBody::None => {}
            RequestBody::Complete(bytes) => encode(&mut encoder, bytes, &mut buf)?,
            RequestBody::Streaming { start, .. } => encode(&mut encoder, start, &mut buf)?,
        }
        write(&handle, &mut buf).await?;
        if let RequestBody::Streaming { rest, .. } = body
            && let Some(mut rest) = rest.take()
        {
            consumed_stream.set(true);
            while let Some(chunk) = rest.next().await {
                encode(&mut encoder, &body_chunk(chunk)?, &mut buf)?;
                write(&handle, &mut buf).await?;
            }
        }
        encoder
            .finish(&mut buf)
            .map_err(|e| ClientError::Request(e.to_string()))?;
        write(&handle, &mut buf).await
    };
    let response_started = std::cell::Cell::new(false);
    let reader = async {
        loop {
            match decoder.poll_event() {
                Ok(Some(ResponseEvent::Head(head))) => return Ok(head),
                Ok(Some(ResponseEvent::Informational(_))) => continue,
                Ok(Some(ResponseEvent::Upgrade { head, .. })) => {
                    return Err(ClientError::BadResponse(format!(
                        "the app switched protocols ({}) in answer to a fetch",
                        head.status
                    )));
                }
                Ok(Some(_)) => {
                    return Err(ClientError::BadResponse("body before the head".into()));
                }
                Ok(None) => {}
                Err(e) => return Err(ClientError::BadResponse(e.to_string())),
            }
            match handle.read().await? {
                Some(bytes) => {
                    response_started.set(true);
                    decoder.push(&bytes);
                }
                None => decoder.eof(),
            }
        }
    };
    let writer = std::pin::pin!(writer);
    let reader = std::pin::pin!(reader);
    let (result, body_sent) = match select(writer, reader).await {
        Either::Left((Ok(()), reader)) => (reader.await, true),
        // The body could not be read: nothing more can be sent, and the app may wait.
        Either::Left((Err(e @ ClientError::Request(_)), _)) => (Err(e), false),
        // The app may have answered before it stopped reading (413, say, then close).
        Either::Left((Err(e), reader)) => (reader.await.map_err(|_| e), false),
        Either::Right((head, _)) => (head, false),
    };
    let retry_unsafe = response_started.get() || consumed_stream.get();
    result
        .map(|head| (head, body_sent))
        .map_err(|error| ExchangeError {
            error,
            retry_unsafe,
        })
}

fn encode(encoder: &mut BodyEncoder, data: &[u8], buf: &mut BytesMut) -> Result<(), ClientError> {
    encoder
        .data(data, buf)
        .map_err(|e| ClientError::Request(e.to_string()))
}

async fn write(handle: &StreamHandle, buf: &mut BytesMut) -> Result<(), ClientError> {
    if buf.is_empty() {
        return Ok(());
    }
    let data = buf.split();
    handle.write(&data).await
}

/// The request's headers as `http` types (the browser already refused forbidden names).
fn request_headers(headers: &Headers) -> Result<HeaderMap, ClientError> {
    let mut map = HeaderMap::new();
    let iter = js_sys::try_iter(headers)
        .ok()
        .flatten()
        .ok_or_else(|| ClientError::Request("request headers are not iterable".into()))?;
    for entry in iter {
        let entry: js_sys::Array = entry
            .map_err(|e| ClientError::Request(describe(&e)))?
            .unchecked_into();
        let (Some(name), Some(value)) = (entry.get(0).as_string(), entry.get(1).as_string()) else {
            continue;
        };
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ClientError::Request(format!("invalid header name {name:?}")))?;
        // Framing is the codec's to write, from the body.
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        map.append(name.clone(), header_value(name.as_str(), &value)?);
    }
    Ok(map)
}

fn header_value(name: &str, value: &str) -> Result<HeaderValue, ClientError> {
    HeaderValue::from_str(value)
        .map_err(|_| ClientError::Request(format!("invalid value for header {name}")))
}

/// The workspace port a URL names: its port, else its scheme's default.
pub(crate) fn url_port(url: &Url) -> Result<u16, ClientError> {
    let port = url.port();
    if !port.is_empty() {
        return port
            .parse()
            .map_err(|_| ClientError::Request(format!("invalid port {port:?}")));
    }
    match url.protocol().as_str() {
        "http:" | "ws:" => Ok(80),
        "https:" | "wss:" => Ok(443),
        other => Err(ClientError::Request(format!(
            "unsupported URL scheme {other:?}"
        ))),
    }
}

struct Fetched {
    response: BuiltResponse,
    body: Option<BodyState>,
}

/// What the `Response` is made of, bar its body.
struct BuiltResponse {
    head: response::Parts,
    url: String,
    redirected: bool,
}

impl BuiltResponse {
    /// The content coding the browser decodes for us, if the body has a single one it knows.
    fn coding(&self) -> Option<&'static str> {
        let mut codings = self.head.headers.get_all(header::CONTENT_ENCODING).iter();
        let (Some(coding), None) = (codings.next(), codings.next()) else {
            return None;
        };
        match coding
            .as_bytes()
            .trim_ascii()
            .to_ascii_lowercase()
            .as_slice()
        {
            b"gzip" | b"x-gzip" => Some("gzip"),
            b"deflate" => Some("deflate"),
            b"br" => Some(BROTLI),
            _ => None,
        }
    }

    /// The headers as the browser should see them: without the content coding and length
    /// when the body is `decoded` on its way, and without values that are not text.
    fn visible_headers(&self, decoded: bool) -> impl Iterator<Item = (&str, &str)> {
        self.head.headers.iter().filter_map(move |(name, value)| {
            if decoded && (name == header::CONTENT_ENCODING || name == header::CONTENT_LENGTH) {
                return None;
            }
            Some((name.as_str(), std::str::from_utf8(value.as_bytes()).ok()?))
        })
    }

    fn into_response(self, body: Body<'_>) -> Result<Response, JsValue> {
        let decoded = matches!(body, Body::Stream(_)) && self.coding().is_some();
        let headers = Headers::new()?;
        for (name, value) in self.visible_headers(decoded) {
            // A value the browser refuses (not Latin-1 text) is left out, not fatal.
            let _ = headers.append(name, value);
        }
        let init = ResponseInit::new();
        init.set_status(self.head.status.as_u16());
        init.set_status_text(self.head.status.canonical_reason().unwrap_or(""));
        init.set_headers(&headers);
        let status = self.head.status;
        if !(200..=599).contains(&status.as_u16()) {
            return Err(ClientError::BadResponse(format!(
                "status {status} cannot be a fetch Response"
            ))
            .into());
        }
        let response = match body {
            Body::None => Response::new_with_opt_readable_stream_and_init(None, &init)?,
            Body::Bytes(bytes) => Response::new_with_opt_js_u8_array_and_init(Some(bytes), &init)?,
            Body::Stream(stream) => {
                Response::new_with_opt_readable_stream_and_init(Some(stream), &init)?
            }
        };
        // `url` and `redirected` are read-only getters on Response.prototype; own
        // properties on the instance shadow them.
        define(&response, "url", &self.url.into());
        define(&response, "redirected", &self.redirected.into());
        Ok(response)
    }
}

fn define(target: &JsValue, name: &str, value: &JsValue) {
    let desc = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&desc, &"value".into(), value);
    let _ = js_sys::Reflect::define_property(
        target.unchecked_ref::<js_sys::Object>(),
        &name.into(),
        &desc,
    );
}

/// What [`BodyState::decoded`] found.
enum Decoded {
    Chunk(Bytes),
    End,
    /// The decoder needs more of the stream.
    NeedInput,
}

/// How a response body leaves [`Tunnel::fetch_parts`].
enum PartsBody {
    None,
    /// It had all arrived with the head.
    Whole(Bytes),
    // Boxed: the state is large next to the other variants, and it is made once a fetch.
    Streamed(Box<BodyState>),
}

/// The `coding` name of brotli, which this module decodes itself (the browser's
/// `DecompressionStream` knows only gzip and deflate).
const BROTLI: &str = "br";

/// The body as a pull-based `ReadableStream`, decoded when it has a content `coding`: by
/// the browser for gzip and deflate, by [`Brotli`] for br.
fn body_stream(coding: Option<&'static str>, state: BodyState) -> Result<ReadableStream, JsValue> {
    let brotli = (coding == Some(BROTLI)).then(Brotli::default);
    let stream = futures_util::stream::unfold(Some((state, brotli)), |next| async move {
        let (mut state, mut brotli) = next?;
        loop {
            let decoded = match (state.next_chunk().await, brotli.as_mut()) {
                (Ok(Some(bytes)), None) => Ok(Some(bytes.to_vec())),
                (Ok(Some(bytes)), Some(b)) => b.push(&bytes).map(Some),
                (Ok(None), Some(b)) => b.finish().map(|rest| (!rest.is_empty()).then_some(rest)),
                (Ok(None), None) => Ok(None),
                (Err(e), _) => Err(e),
            };
            match decoded {
                // A compressed chunk need not yield any output yet.
                Ok(Some(bytes)) if bytes.is_empty() => continue,
                Ok(Some(bytes)) => {
                    return Some((
                        Ok(Uint8Array::from(&bytes[..]).into()),
                        Some((state, brotli)),
                    ));
                }
                Ok(None) => return None,
                Err(e) => {
                    let reason = match &state.abort {
                        Some((_, signal)) if signal.aborted() => signal.reason(),
                        _ => e.into(),
                    };
                    return Some((Err(reason), None));
                }
            }
        }
    });
    let mut body = wasm_streams::ReadableStream::from_stream(stream).into_raw();
    if let Some(format) = coding.filter(|c| *c != BROTLI) {
        let decompress = DecompressionStream::new(format)?;
        body = body.pipe_through(decompress.unchecked_ref());
    }
    Ok(body)
}

/// A streaming brotli decoder for response bodies (`brotli-decompressor`: Dropbox's, the
/// one `brotli` builds on).
struct Brotli {
    writer: Option<brotli_decompressor::DecompressorWriter<Vec<u8>>>,
}

impl Default for Brotli {
    fn default() -> Self {
        Self {
            writer: Some(brotli_decompressor::DecompressorWriter::new(
                Vec::new(),
                16 * 1024,
            )),
        }
    }
}

impl Brotli {
    /// Decodes the next compressed bytes; returns what they decoded to so far.
    fn push(&mut self, compressed: &[u8]) -> Result<Vec<u8>, ClientError> {
        use std::io::Write as _;
        let writer = self.writer.as_mut().ok_or_else(Self::ended)?;
        writer.write_all(compressed).map_err(Self::bad)?;
        Ok(std::mem::take(writer.get_mut()))
    }

    /// The end of the body: the rest of the output, or an error if the brotli stream was cut
    /// short.
    fn finish(&mut self) -> Result<Vec<u8>, ClientError> {
        let mut writer = self.writer.take().ok_or_else(Self::ended)?;
        writer.close().map_err(Self::bad)?;
        writer
            .into_inner()
            .map_err(|_| ClientError::BadResponse("the br body ended before its end".into()))
    }

    fn bad(e: std::io::Error) -> ClientError {
        ClientError::BadResponse(format!("the br body does not decode: {e}"))
    }

    fn ended() -> ClientError {
        ClientError::BadResponse("the br body was read past its end".into())
    }
}

/// What a `Response` is made with.
enum Body<'a> {
    None,
    /// The whole body, which had arrived with the head: no stream to pull through.
    Bytes(&'a Uint8Array),
    /// Decoded by the browser first when the response has a content coding it knows.
    Stream(&'a ReadableStream),
}

/// A response body being read: owns the connection until the body ends.
struct BodyState {
    conn: Option<Conn>,
    http: Weak<RefCell<HttpState>>,
    port: u16,
    /// The request went out whole, so the connection is in step for another.
    reusable: bool,
    /// The abort listener, kept (and removed on drop) for as long as the body is read.
    abort: Option<(EventListener, AbortSignal)>,
    current: Current,
    drained: usize,
    /// Pieces [`Self::take_arrived`] took from the decoder; the body starts with them.
    arrived: VecDeque<Bytes>,
}

impl BodyState {
    /// The next piece of the body, `None` at its end (the connection then goes back to the
    /// pool if it may).
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        if let Some(bytes) = self.arrived.pop_front() {
            return Ok(Some(bytes));
        }
        loop {
            match self.decoded()? {
                Decoded::Chunk(bytes) => return Ok(Some(bytes)),
                Decoded::End => return Ok(None),
                Decoded::NeedInput => {
                    let Some(conn) = self.conn.as_mut() else {
                        return Ok(None);
                    };
                    match conn.stream.read_chunk().await {
                        Ok(Some(bytes)) => conn.decoder.push(&bytes),
                        Ok(None) => conn.decoder.eof(),
                        Err(e) => {
                            self.conn = None;
                            return Err(e);
                        }
                    }
                }
            }
        }
    }

    /// The whole body if it had all arrived with the head, without waiting for the stream.
    ///
    /// A small response usually has: the app writes head and body at once, and they come
    /// in one tunnel message. Such a body is then handed over as bytes, which spares the
    /// page (and the service worker, which forwards it across threads) a stream's pull
    /// round trips. Otherwise what did arrive is kept for [`Self::next_chunk`], and `None`.
    fn take_arrived(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            match self.decoded()? {
                Decoded::Chunk(bytes) => self.arrived.push_back(bytes),
                Decoded::End => return Ok(Some(concat(self.arrived.drain(..)))),
                Decoded::NeedInput => return Ok(None),
            }
        }
    }

    /// The decoder's next piece of the body from what it holds, reading nothing: at the
    /// end the connection goes back to the pool if it may; on an error it is dropped.
    fn decoded(&mut self) -> Result<Decoded, ClientError> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(Decoded::End);
            };
            match conn.decoder.poll_event() {
                Ok(Some(ResponseEvent::Body(bytes))) if bytes.is_empty() => {}
                Ok(Some(ResponseEvent::Body(bytes))) => return Ok(Decoded::Chunk(bytes)),
                Ok(Some(ResponseEvent::End { reusable })) => {
                    self.release(reusable);
                    return Ok(Decoded::End);
                }
                Ok(Some(ResponseEvent::Trailers(_) | ResponseEvent::Informational(_))) => {}
                Ok(Some(ResponseEvent::Head(_) | ResponseEvent::Upgrade { .. })) => {
                    self.conn = None;
                    return Err(ClientError::BadResponse(
                        "a second response head inside a body".into(),
                    ));
                }
                Ok(None) => return Ok(Decoded::NeedInput),
                Err(e) => {
                    self.conn = None;
                    return Err(ClientError::BadResponse(e.to_string()));
                }
            }
        }
    }

    /// Gives the connection back to the pool if the exchange left it in step.
    fn release(&mut self, reusable: bool) {
        let Some(conn) = self.conn.take() else { return };
        self.current.borrow_mut().handle = None;
        if reusable
            && self.reusable
            && let Some(http) = self.http.upgrade()
        {
            http.borrow_mut().put_idle(self.port, conn);
        }
    }

    /// A response without a body: its end is already decoded, or the connection is
    /// dropped.
    fn finish_empty(mut self) {
        if let Some(conn) = self.conn.as_mut()
            && let Ok(Some(ResponseEvent::End { reusable })) = conn.decoder.poll_event()
        {
            self.release(reusable);
        }
    }

    /// Reads a redirect's body to its end to keep the connection, unless it is large.
    async fn drain(mut self) {
        while let Ok(Some(bytes)) = self.next_chunk().await {
            self.drained += bytes.len();
            if self.drained > MAX_DRAINED {
                return;
            }
        }
    }
}

/// One buffer of the pieces, without a copy when there is just one.
fn concat(pieces: impl ExactSizeIterator<Item = Bytes>) -> Bytes {
    let mut pieces = pieces.peekable();
    if pieces.len() == 1 {
        return pieces.next().unwrap_or_default();
    }
    let mut whole = BytesMut::new();
    for piece in pieces {
        whole.extend_from_slice(&piece);
    }
    whole.freeze()
}
