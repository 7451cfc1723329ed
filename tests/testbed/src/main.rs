//! `burrow-testbed`: the workspace app the browser client's suites talk to through a
//! tunnel, a real HTTP/1.1 server (hyper, through axum) with a WebSocket echo.
//!
//! ```text
//! burrow-testbed PORT_FILE [FLAKY_PORT_FILE]
//! ```
//!
//! Binds 127.0.0.1:0 and writes the port to `PORT_FILE`. With `FLAKY_PORT_FILE`, also
//! serves [`flaky`] on a second port (written there): a server that answers the first
//! request of each connection (with the connection's number, counting from 1) and then
//! closes the connection when the next request arrives, unanswered, as a server whose
//! keep-alive timeout just expired does.
//!
//! Routes (every answer is computed from the request, so the suites can check exact bytes):
//! - `ANY /echo`: the request body back; `x-request-method` and `x-request-framing`
//!   (`chunked`, `length` or `none`: how the body was delimited) say what arrived.
//! - `GET /bytes/{n}`: `n` bytes of [`pattern`], streamed in 64 KiB pieces.
//! - `GET /headers`: the request's headers, one `name: value` line each.
//! - `GET /conn`: the client's address: equal answers mean one reused TCP connection.
//! - `GET /redirect/{n}`: a 302 to `/redirect/{n-1}`; `/redirect/0` answers `done`.
//! - `ANY /redirect-status/{code}`: a `code` redirect to `/echo`.
//! - `GET /gzip`, `GET /deflate`: [`COMPRESSED_TEXT`] with that content coding.
//! - `GET /cookie/set?name=value&...`: one `Set-Cookie` per pair (`Path=/`); a pair with an
//!   empty value deletes it (`Max-Age=0`).
//! - `GET /cookie/echo`: the request's `Cookie` header (empty if none).
//! - `GET /status/{code}`: that status; a body (`status {code}`) unless 1xx/204/304.
//! - `GET /ws`: WebSocket echo (text as text, binary as binary; picks the first offered
//!   subprotocol). A text message `close:CODE:REASON` makes the server close with them.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures_util::StreamExt as _;

/// The text `/gzip` and `/deflate` send compressed.
pub const COMPRESSED_TEXT: &str = "burrow decompressed this text: ";

/// Byte `i` of `/bytes/{n}`: not a short repeating pattern, so a lost, duplicated or
/// reordered piece shows.
pub fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// Largest `/bytes/{n}`: bounds what one request can make the server send.
const MAX_BYTES: u64 = 1 << 30;

fn app() -> Router {
    Router::new()
        .route("/echo", any(echo))
        .route("/bytes/{n}", get(bytes))
        .route("/headers", get(headers))
        .route("/conn", get(conn))
        .route("/redirect/{n}", get(redirect))
        .route("/redirect-status/{code}", any(redirect_status))
        .route("/gzip", get(|| compressed("gzip")))
        .route("/deflate", get(|| compressed("deflate")))
        .route("/cookie/set", get(cookie_set))
        .route("/cookie/echo", get(cookie_echo))
        .route("/status/{code}", get(status))
        .route("/ws", get(ws))
}

async fn echo(method: Method, headers: HeaderMap, body: Bytes) -> Response {
    let framing = if headers
        .get(header::TRANSFER_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        "chunked"
    } else if headers.contains_key(header::CONTENT_LENGTH) {
        "length"
    } else {
        "none"
    };
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert("x-request-framing", HeaderValue::from_static(framing));
    if let Ok(m) = HeaderValue::from_str(method.as_str()) {
        h.insert("x-request-method", m);
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        h.insert(header::CONTENT_TYPE, ct.clone());
    }
    response
}

async fn bytes(Path(n): Path<u64>) -> Response {
    if n > MAX_BYTES {
        return (StatusCode::BAD_REQUEST, "too many bytes").into_response();
    }
    const PIECE: u64 = 64 * 1024;
    let pieces = futures_util::stream::iter((0..n.div_ceil(PIECE)).map(move |k| {
        let start = k * PIECE;
        let end = (start + PIECE).min(n);
        Ok::<_, std::io::Error>(Bytes::from((start..end).map(pattern).collect::<Vec<u8>>()))
    }));
    let mut response = Body::from_stream(pieces).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    response
}

async fn headers(headers: HeaderMap) -> String {
    headers
        .iter()
        .map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())))
        .collect()
}

async fn conn(ConnectInfo(peer): ConnectInfo<SocketAddr>) -> String {
    peer.to_string()
}

async fn redirect(Path(n): Path<u32>) -> Response {
    if n == 0 {
        return "done".into_response();
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, format!("/redirect/{}", n - 1))],
    )
        .into_response()
}

async fn redirect_status(Path(code): Path<u16>) -> Response {
    match StatusCode::from_u16(code) {
        Ok(status) if status.is_redirection() => {
            (status, [(header::LOCATION, "/echo")], "redirecting").into_response()
        }
        _ => (StatusCode::BAD_REQUEST, "not a redirect status").into_response(),
    }
}

async fn compressed(coding: &'static str) -> Response {
    let text = COMPRESSED_TEXT.repeat(100);
    let body = match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(text.as_bytes()).and_then(|()| e.finish())
        }
        _ => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(text.as_bytes()).and_then(|()| e.finish())
        }
    };
    match body {
        Ok(body) => (
            [
                (header::CONTENT_ENCODING, coding),
                (header::CONTENT_TYPE, "text/plain"),
            ],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn cookie_set(Query(pairs): Query<Vec<(String, String)>>) -> Response {
    let mut response = "set".into_response();
    for (name, value) in pairs {
        let cookie = if value.is_empty() {
            format!("{name}=; Path=/; Max-Age=0")
        } else {
            format!("{name}={value}; Path=/")
        };
        match HeaderValue::from_str(&cookie) {
            Ok(v) => {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
            Err(_) => return (StatusCode::BAD_REQUEST, "bad cookie").into_response(),
        }
    }
    response
}

async fn cookie_echo(headers: HeaderMap) -> Vec<u8> {
    headers
        .get(header::COOKIE)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default()
}

async fn status(Path(code): Path<u16>) -> Response {
    match StatusCode::from_u16(code) {
        Ok(s) if s.is_informational() => (StatusCode::BAD_REQUEST, "1xx").into_response(),
        Ok(s) if s == StatusCode::NO_CONTENT || s == StatusCode::NOT_MODIFIED => s.into_response(),
        Ok(s) => (s, format!("status {code}")).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "not a status").into_response(),
    }
}

async fn ws(upgrade: WebSocketUpgrade, headers: HeaderMap) -> Response {
    let first = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|list| list.split(',').next())
        .map(|p| p.trim().to_owned());
    let upgrade = match first {
        Some(p) => upgrade.protocols([p]),
        None => upgrade,
    };
    upgrade.on_upgrade(ws_echo)
}

async fn ws_echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.next().await {
        let reply = match msg {
            Message::Text(text) => {
                if let Some(rest) = text.as_str().strip_prefix("close:") {
                    let (code, reason) = rest.split_once(':').unwrap_or((rest, ""));
                    let frame = CloseFrame {
                        code: code.parse().unwrap_or(1000),
                        reason: reason.to_owned().into(),
                    };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    continue;
                }
                Message::Text(text)
            }
            Message::Binary(data) => Message::Binary(data),
            // Pings are answered by the library; a Close ends the loop after its reply.
            _ => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

/// Answers one request per connection, then closes it on the next (see the crate docs).
async fn flaky(listener: tokio::net::TcpListener) {
    let mut connections = 0u64;
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        connections += 1;
        let number = connections;
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            if read_head(&mut socket).await.is_err() {
                return;
            }
            let body = number.to_string();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if socket.write_all(response.as_bytes()).await.is_err() {
                return;
            }
            // The next request is read, then the connection dropped without an answer.
            let _ = read_head(&mut socket).await;
        });
    }
}

/// Reads up to the end of a request head (bodies are not expected here).
async fn read_head(socket: &mut tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt as _;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 64 * 1024 {
            return Err(std::io::Error::other("request head too long"));
        }
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

/// Binds 127.0.0.1:0 and writes the port to `file` (whole, then renamed, so a reader
/// never sees half a number).
async fn bind(file: &std::ffi::OsStr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding 127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let tmp = std::path::PathBuf::from(file).with_extension("tmp");
    std::fs::write(&tmp, port.to_string()).context("writing the port file")?;
    std::fs::rename(&tmp, file).context("writing the port file")?;
    Ok(listener)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let port_file = args
        .next()
        .context("usage: burrow-testbed PORT_FILE [FLAKY_PORT_FILE]")?;
    if let Some(flaky_file) = args.next() {
        tokio::spawn(flaky(bind(&flaky_file).await?));
    }
    let listener = bind(&port_file).await?;
    axum::serve(
        listener,
        app().into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .context("serving")
}
