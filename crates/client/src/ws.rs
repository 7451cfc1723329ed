//! `tunnel.webSocket`: a `WebSocket`-compatible object over a tunnelled stream, speaking
//! proto's [`burrow_proto::websocket`] codec.
//!
//! The object the page sees is a real `EventTarget` subclass defined in a small JS snippet
//! ([`BurrowWebSocket`]), so `addEventListener`, `on*` properties, `MessageEvent` and
//! `CloseEvent` are the browser's own. Its `send` and `close` hand data to a [`WsDriver`];
//! one task per socket ([`run`]) does the handshake, then reads frames and writes queued
//! messages concurrently (a writer stalled on the agent's credit must not stop the
//! reading that lets the far side drain).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use burrow_proto::http1::{BodyFraming, ResponseDecoder, ResponseEvent, encode_request};
use burrow_proto::websocket::{CloseCode, Handshake, Message, SendError, WebSocket};
use bytes::{Bytes, BytesMut};
use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt as _;
use futures_util::future::{Either, select};
use http::Uri;
use http::header::{self, HeaderValue};
use js_sys::Uint8Array;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::Url;

use crate::error::{ClientError, describe};
use crate::http::url_port;
use crate::tunnel::{Tunnel, TunnelStream};

/// How long the app may take to answer the opening handshake.
const HANDSHAKE_TIMEOUT_MS: u32 = 30_000;

/// How long a closing handshake may take before the stream is dropped.
const CLOSE_TIMEOUT_MS: u32 = 10_000;

#[wasm_bindgen(inline_js = r#"
const STATES = ["CONNECTING", "OPEN", "CLOSING", "CLOSED"];
export class BurrowWebSocket extends EventTarget {
    constructor(driver, url) {
        super();
        this._driver = driver;
        this._url = url;
        this._readyState = 0;
        this._protocol = "";
        this._binaryType = "blob";
        for (const type of ["open", "message", "error", "close"]) {
            this["on" + type] = null;
            // The on* property is read at dispatch time, as the browser's WebSocket does.
            this.addEventListener(type, (event) => {
                const handler = this["on" + type];
                if (typeof handler === "function") handler.call(this, event);
            });
        }
    }
    get url() { return this._url; }
    get readyState() { return this._readyState; }
    get protocol() { return this._protocol; }
    get extensions() { return ""; }
    get bufferedAmount() { return this._driver.bufferedAmount; }
    get binaryType() { return this._binaryType; }
    set binaryType(value) {
        if (value === "blob" || value === "arraybuffer") this._binaryType = value;
    }
    send(data) {
        if (this._readyState === 0) {
            throw new DOMException("Still in CONNECTING state.", "InvalidStateError");
        }
        if (typeof data !== "string" && !(data instanceof Blob) &&
            !(data instanceof ArrayBuffer) && !ArrayBuffer.isView(data)) {
            data = String(data);
        }
        this._driver.send(data);
    }
    close(code, reason) {
        if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) {
            throw new DOMException("The close code must be 1000 or in 3000-4999.", "InvalidAccessError");
        }
        if (reason !== undefined && new TextEncoder().encode(reason).length > 123) {
            throw new DOMException("The close reason must be at most 123 bytes.", "SyntaxError");
        }
        if (this._readyState >= 2) return;
        this._readyState = 2;
        // A Close without a code has no room for a reason (RFC 6455 section 5.5.1).
        this._driver.close(code, code === undefined || reason === undefined ? "" : String(reason));
    }
    _open(protocol) {
        if (this._readyState === 0) this._readyState = 1;
        this._protocol = protocol;
        this.dispatchEvent(new Event("open"));
    }
    _message(data) {
        if (typeof data !== "string") {
            data = this._binaryType === "arraybuffer" ? data.buffer : new Blob([data]);
        }
        this.dispatchEvent(new MessageEvent("message", { data, origin: new URL(this._url).origin }));
    }
    _closing() { if (this._readyState < 2) this._readyState = 2; }
    _error() { this.dispatchEvent(new Event("error")); }
    _close(code, reason, wasClean) {
        this._readyState = 3;
        this.dispatchEvent(new CloseEvent("close", { code, reason, wasClean }));
    }
}
STATES.forEach((name, value) => {
    Object.defineProperty(BurrowWebSocket, name, { value, enumerable: true });
    Object.defineProperty(BurrowWebSocket.prototype, name, { value, enumerable: true });
});
"#)]
extern "C" {
    /// The `WebSocket`-like object `tunnel.webSocket` returns (an `EventTarget`).
    #[wasm_bindgen(extends = web_sys::EventTarget)]
    pub type BurrowWebSocket;

    #[wasm_bindgen(constructor)]
    fn new(driver: JsValue, url: &str) -> BurrowWebSocket;
    #[wasm_bindgen(method, js_name = _open)]
    fn fire_open(this: &BurrowWebSocket, protocol: &str);
    #[wasm_bindgen(method, js_name = _message)]
    fn fire_message(this: &BurrowWebSocket, data: &JsValue);
    #[wasm_bindgen(method, js_name = _closing)]
    fn set_closing(this: &BurrowWebSocket);
    #[wasm_bindgen(method, js_name = _error)]
    fn fire_error(this: &BurrowWebSocket);
    #[wasm_bindgen(method, js_name = _close)]
    fn fire_close(this: &BurrowWebSocket, code: u16, reason: &str, was_clean: bool);
    /// `readyState`, as the page sees it.
    #[wasm_bindgen(method, getter, js_name = readyState)]
    pub fn ready_state(this: &BurrowWebSocket) -> u16;
}

/// What the page asked the socket to send, in order.
enum Out {
    Text(String),
    Binary(Vec<u8>),
    Blob(web_sys::Blob, f64),
    Pong(Bytes),
    Close(Option<u16>, String),
}

/// The half of a socket its JS object calls into (`send`, `close`, `bufferedAmount`);
/// internal, so left out of the TypeScript declarations.
#[wasm_bindgen(skip_typescript)]
pub struct WsDriver {
    out: mpsc::UnboundedSender<Out>,
    buffered: Rc<Cell<f64>>,
}

#[wasm_bindgen]
impl WsDriver {
    /// Bytes accepted by `send` that the tunnel has not taken yet.
    #[wasm_bindgen(getter, js_name = bufferedAmount)]
    pub fn buffered_amount(&self) -> f64 {
        self.buffered.get()
    }

    /// Queues a message: a string is sent as text, anything else (ArrayBuffer, a view,
    /// Blob) as binary.
    pub fn send(&self, data: JsValue) {
        let (out, len) = if let Some(text) = data.as_string() {
            let len = text.len() as f64;
            (Out::Text(text), len)
        } else if let Some(blob) = data.dyn_ref::<web_sys::Blob>() {
            (Out::Blob(blob.clone(), blob.size()), blob.size())
        } else if let Some(buf) = data.dyn_ref::<js_sys::ArrayBuffer>() {
            let bytes = Uint8Array::new(buf).to_vec();
            let len = bytes.len() as f64;
            (Out::Binary(bytes), len)
        } else {
            // An ArrayBufferView: its own window on its buffer.
            let view = |key: &str| {
                js_sys::Reflect::get(&data, &key.into())
                    .ok()
                    .and_then(|v| v.as_f64())
                    .unwrap_or(0.0) as u32
            };
            let buffer = js_sys::Reflect::get(&data, &"buffer".into()).unwrap_or_default();
            let bytes = Uint8Array::new_with_byte_offset_and_length(
                &buffer,
                view("byteOffset"),
                view("byteLength"),
            )
            .to_vec();
            let len = bytes.len() as f64;
            (Out::Binary(bytes), len)
        };
        self.buffered.set(self.buffered.get() + len);
        // After the socket ended the message goes nowhere, as the browser's would.
        let _ = self.out.unbounded_send(out);
    }

    /// Starts the closing handshake (or abandons the opening one).
    pub fn close(&self, code: Option<u16>, reason: String) {
        let _ = self.out.unbounded_send(Out::Close(code, reason));
    }
}

/// The options of `tunnel.webSocket` (the `WebSocketInit` interface in TypeScript).
#[derive(Debug, Clone, Default)]
pub struct WebSocketInit {
    /// The `Host` header (default: the URL's host).
    pub host: Option<String>,
    /// The `Origin` header (default: the page's origin).
    pub origin: Option<String>,
}

impl Tunnel {
    /// Opens a WebSocket to the workspace app on the URL's port; see the crate docs.
    pub fn web_socket(
        &self,
        url: &str,
        protocols: Vec<String>,
        init: WebSocketInit,
    ) -> Result<BurrowWebSocket, ClientError> {
        let parsed = Url::new(url)
            .map_err(|e| ClientError::Request(format!("invalid URL {url:?}: {}", describe(&e))))?;
        if !matches!(
            parsed.protocol().as_str(),
            "ws:" | "wss:" | "http:" | "https:"
        ) {
            return Err(ClientError::Request(format!(
                "a WebSocket URL must be ws: or wss:, got {url:?}"
            )));
        }
        if !parsed.hash().is_empty() {
            return Err(ClientError::Request(
                "a WebSocket URL has no fragment".into(),
            ));
        }
        let port = url_port(&parsed)?;
        let (tx, rx) = mpsc::unbounded();
        let buffered = Rc::new(Cell::new(0.0));
        let driver = WsDriver {
            out: tx.clone(),
            buffered: Rc::clone(&buffered),
        };
        let socket = BurrowWebSocket::new(driver.into(), &parsed.href());
        let task = Task {
            tunnel: self.clone(),
            socket: socket.clone().unchecked_into(),
            port,
            url: parsed,
            protocols,
            init,
            out: rx,
            pongs: tx,
            buffered,
        };
        wasm_bindgen_futures::spawn_local(task.run());
        Ok(socket)
    }
}

struct Task {
    tunnel: Tunnel,
    socket: BurrowWebSocket,
    port: u16,
    url: Url,
    protocols: Vec<String>,
    init: WebSocketInit,
    out: mpsc::UnboundedReceiver<Out>,
    /// The reader's replies (pongs, the closing Close) go through the writer's queue.
    pongs: mpsc::UnboundedSender<Out>,
    buffered: Rc<Cell<f64>>,
}

/// How a socket ended.
enum End {
    /// The closing handshake completed (or the app closed the stream after its Close).
    Clean { code: u16, reason: String },
    /// Anything else: the stream failed, the app broke the protocol, or closed without a
    /// Close frame. `error` fires an `error` event first.
    Abnormal { error: bool, why: String },
}

impl Task {
    async fn run(mut self) {
        let end = match self.connect().await {
            Ok(Some((stream, codec, protocol))) => {
                self.socket.fire_open(&protocol);
                self.session(stream, codec).await
            }
            Ok(None) => End::Abnormal {
                error: true,
                why: "closed before the connection was established".into(),
            },
            Err(e) => End::Abnormal {
                error: true,
                why: e.to_string(),
            },
        };
        match end {
            End::Clean { code, reason } => self.socket.fire_close(code, &reason, true),
            End::Abnormal { error, why } => {
                web_sys::console::warn_1(
                    &format!("burrow: WebSocket {} failed: {why}", self.url.href()).into(),
                );
                if error {
                    self.socket.fire_error();
                }
                self.socket.fire_close(1006, "", false);
            }
        }
    }

    /// The opening handshake; `None` if the page closed the socket meanwhile.
    async fn connect(&mut self) -> Result<Option<(TunnelStream, WebSocket, String)>, ClientError> {
        let (tunnel, url, port) = (&self.tunnel, &self.url, self.port);
        let (protocols, init) = (&self.protocols, &self.init);
        let handshake = async {
            let stream = tunnel.open(port).await?;
            let handle = stream.handle();
            let target = format!("{}{}", url.pathname(), url.search());
            let uri: Uri = target
                .parse()
                .map_err(|e| ClientError::Request(format!("invalid WebSocket target: {e}")))?;
            let mut hs = Handshake::new(uri, random_bytes::<16>()?);
            for p in protocols {
                hs = hs.protocol(p.clone());
            }
            let host = init.host.clone().unwrap_or_else(|| url.host());
            let origin = init.origin.clone().unwrap_or_else(page_origin);
            hs = hs
                .header(header::HOST, value(&host)?)
                .header(header::ORIGIN, value(&origin)?);
            let path = url.pathname();
            let now = js_sys::Date::now() as u64;
            let cookie = tunnel.http.borrow_mut().jar(port).cookie_header(&path, now);
            if let Some(cookie) = cookie {
                hs = hs.header(header::COOKIE, value(&cookie)?);
            }
            let parts = hs
                .request()
                .map_err(|e| ClientError::Request(e.to_string()))?;
            let mut buf = BytesMut::new();
            encode_request(&parts, BodyFraming::Empty, &mut buf)
                .map_err(|e| ClientError::Request(e.to_string()))?;
            handle.write(&buf).await?;

            let mut decoder = ResponseDecoder::default();
            decoder.expect_response(http::Method::GET);
            loop {
                match decoder.poll_event() {
                    Ok(Some(ResponseEvent::Upgrade { head, rest })) => {
                        let protocol = hs
                            .accept(&head)
                            .map_err(|e| ClientError::BadResponse(e.to_string()))?;
                        let mut http = tunnel.http.borrow_mut();
                        let jar = http.jar(port);
                        for v in head.headers.get_all(header::SET_COOKIE) {
                            let _ = jar.store(v.as_bytes(), &path, now);
                        }
                        let mut codec = WebSocket::default();
                        codec.push(&rest);
                        return Ok((stream, codec, protocol.unwrap_or_default()));
                    }
                    Ok(Some(ResponseEvent::Head(head))) => {
                        return Err(ClientError::BadResponse(format!(
                            "the app answered the WebSocket handshake with {}",
                            head.status
                        )));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => match handle.read().await? {
                        Some(bytes) => decoder.push(&bytes),
                        None => decoder.eof(),
                    },
                    Err(e) => return Err(ClientError::BadResponse(e.to_string())),
                }
            }
        };
        let handshake = std::pin::pin!(handshake);
        let timeout = gloo_timers::future::TimeoutFuture::new(HANDSHAKE_TIMEOUT_MS);
        // The page may only close() while connecting (send() throws then).
        match select(handshake, select(self.out.next(), timeout)).await {
            Either::Left((result, _)) => result.map(Some),
            Either::Right((Either::Left(_), _)) => Ok(None),
            Either::Right((Either::Right(_), _)) => Err(ClientError::Timeout(format!(
                "no WebSocket handshake answer within {} s",
                HANDSHAKE_TIMEOUT_MS / 1000
            ))),
        }
    }

    /// The open socket: frames in, queued messages out, until it closes.
    async fn session(&mut self, stream: TunnelStream, codec: WebSocket) -> End {
        let handle = stream.handle();
        let codec = RefCell::new(codec);
        let (socket, out, pongs, buffered) =
            (&self.socket, &mut self.out, &self.pongs, &self.buffered);
        let (close_started, close_started_rx) = oneshot::channel::<()>();

        let writer = async {
            let mut close_started = Some(close_started);
            while let Some(item) = out.next().await {
                let (message, len) = match item {
                    Out::Text(t) => {
                        let len = t.len() as f64;
                        (Message::Text(t), len)
                    }
                    Out::Binary(b) => {
                        let len = b.len() as f64;
                        (Message::Binary(b.into()), len)
                    }
                    Out::Blob(blob, len) => match JsFuture::from(blob.array_buffer()).await {
                        Ok(buf) => (Message::Binary(Uint8Array::new(&buf).to_vec().into()), len),
                        Err(e) => return format!("reading a Blob to send: {}", describe(&e)),
                    },
                    Out::Pong(p) => (Message::Pong(p), 0.0),
                    Out::Close(code, reason) => (
                        Message::Close {
                            code: code.map(CloseCode),
                            reason,
                        },
                        0.0,
                    ),
                };
                let is_close = matches!(message, Message::Close { .. });
                let mask = match random_bytes::<4>() {
                    Ok(m) => m,
                    Err(e) => return e.to_string(),
                };
                let mut buf = BytesMut::new();
                match codec.borrow_mut().send(&message, mask, &mut buf) {
                    Ok(()) => {}
                    // After our Close nothing more goes out; the page's data is dropped.
                    Err(SendError::Closed) => {
                        buffered.set((buffered.get() - len).max(0.0));
                        continue;
                    }
                    Err(e) => return e.to_string(),
                }
                if is_close {
                    socket.set_closing();
                    if let Some(tx) = close_started.take() {
                        let _ = tx.send(());
                    }
                }
                let written = handle.write(&buf).await;
                buffered.set((buffered.get() - len).max(0.0));
                if let Err(e) = written {
                    return e.to_string();
                }
            }
            // Unreachable while the task holds `pongs`, the queue's other sender.
            std::future::pending().await
        };

        let reader = async {
            loop {
                let event = codec.borrow_mut().poll_event();
                match event {
                    Ok(Some(Message::Text(t))) => socket.fire_message(&t.into()),
                    Ok(Some(Message::Binary(b))) => {
                        socket.fire_message(&Uint8Array::from(&b[..]).into())
                    }
                    Ok(Some(Message::Ping(p))) => {
                        let _ = pongs.unbounded_send(Out::Pong(p));
                    }
                    Ok(Some(Message::Pong(_))) => {}
                    Ok(Some(Message::Close { code, reason })) => {
                        socket.set_closing();
                        if !codec.borrow().close_sent() {
                            // RFC 6455 section 5.5.1: answer with the code received.
                            let _ =
                                pongs.unbounded_send(Out::Close(code.map(|c| c.0), String::new()));
                        }
                        // The app closes the connection once it has our Close.
                        let eof = async { while let Ok(Some(_)) = handle.read().await {} };
                        let eof = std::pin::pin!(eof);
                        select(
                            eof,
                            gloo_timers::future::TimeoutFuture::new(CLOSE_TIMEOUT_MS),
                        )
                        .await;
                        return End::Clean {
                            code: code.map_or(1005, |c| c.0),
                            reason,
                        };
                    }
                    Ok(None) => match handle.read().await {
                        Ok(Some(bytes)) => codec.borrow_mut().push(&bytes),
                        Ok(None) => {
                            return End::Abnormal {
                                error: false,
                                why: "the app closed the connection without a Close frame".into(),
                            };
                        }
                        Err(e) => {
                            return End::Abnormal {
                                error: true,
                                why: e.to_string(),
                            };
                        }
                    },
                    Err(e) => {
                        // RFC 6455 section 7.1.7: fail the connection with a Close saying
                        // why; the writer sends it while the app gets a moment to hang up.
                        let code = e.close_code().0;
                        let _ = pongs.unbounded_send(Out::Close(Some(code), String::new()));
                        let eof = async { while let Ok(Some(_)) = handle.read().await {} };
                        let eof = std::pin::pin!(eof);
                        select(eof, gloo_timers::future::TimeoutFuture::new(1_000)).await;
                        return End::Abnormal {
                            error: true,
                            why: format!("protocol error: {e}"),
                        };
                    }
                }
            }
        };

        let watchdog = async {
            if close_started_rx.await.is_ok() {
                gloo_timers::future::TimeoutFuture::new(CLOSE_TIMEOUT_MS).await;
            } else {
                std::future::pending::<()>().await;
            }
        };

        let reader = std::pin::pin!(reader);
        let writer = std::pin::pin!(writer);
        let watchdog = std::pin::pin!(watchdog);
        let end = match select(reader, select(writer, watchdog)).await {
            Either::Left((end, _)) => end,
            Either::Right((Either::Left((why, _)), _)) => End::Abnormal { error: true, why },
            Either::Right((Either::Right(((), _)), _)) => End::Abnormal {
                error: false,
                why: "the app did not answer the Close within 10 s".into(),
            },
        };
        // Dropping the stream half-closes it after EOF, resets it otherwise.
        drop(stream);
        end
    }
}

/// `N` bytes from the browser's CSPRNG (handshake keys and frame masks).
fn random_bytes<const N: usize>() -> Result<[u8; N], ClientError> {
    let mut out = [0u8; N];
    let crypto = js_sys::Reflect::get(&js_sys::global(), &"crypto".into())
        .map_err(|e| ClientError::Request(format!("no crypto: {}", describe(&e))))?;
    let crypto: web_sys::Crypto = crypto
        .dyn_into()
        .map_err(|_| ClientError::Request("no crypto.getRandomValues".into()))?;
    crypto
        .get_random_values_with_u8_array(&mut out)
        .map_err(|e| ClientError::Request(format!("getRandomValues: {}", describe(&e))))?;
    Ok(out)
}

/// The page's origin, the `Origin` a browser's WebSocket would send.
fn page_origin() -> String {
    js_sys::Reflect::get(&js_sys::global(), &"location".into())
        .ok()
        .and_then(|l| js_sys::Reflect::get(&l, &"origin".into()).ok())
        .and_then(|o| o.as_string())
        .unwrap_or_else(|| "null".into())
}

fn value(s: &str) -> Result<HeaderValue, ClientError> {
    HeaderValue::from_str(s)
        .map_err(|_| ClientError::Request(format!("invalid header value {s:?}")))
}
