//! The service worker's HTTP cache (Wasm only): app responses kept in Cache Storage, so a
//! reload does not fetch through the tunnel what the app said may be reused. Chrome's own
//! HTTP cache never holds a service worker's responses (see `burrow_proto::http_cache`,
//! which makes every decision here; this module only moves bodies and headers).
//!
//! A stored body is the one the page got: decoded, with the WebSocket shim already in an
//! HTML page. Its headers carry [`RECEIVED_AT`] for its age, removed before it is served.
//! Vary is Cache Storage's own business: `match` compares the request headers a stored
//! response varies on.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use burrow_proto::http_cache::{self, MAX_STORED_BODY, RECEIVED_AT};
use futures_channel::oneshot;
use futures_util::future::{self, Shared};
use futures_util::{FutureExt as _, StreamExt as _};
use gloo_timers::future::TimeoutFuture;
use http::{HeaderMap, HeaderName, HeaderValue};
use js_sys::{Array, Uint8Array};
use wasm_bindgen::{JsCast as _, JsValue};
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{Blob, Cache, Headers, ReadableStream, Request, Response, ResponseInit};

use crate::stored_urls::StoredUrls;

/// The Cache Storage cache of app responses. Versioned: a change to what is stored, or how,
/// takes a new name.
const CACHE_NAME: &str = "burrow-http-1";

/// How long a lookup waits for the same URL's response being stored (see [`STORING`]):
/// bounded, because a storable response may be a long stream.
const STORING_WAIT: Duration = Duration::from_secs(10);

/// Resolves when a response being stored is in the cache (or will not be).
type BeingStored = Shared<oneshot::Receiver<()>>;

thread_local! {
    /// Responses being stored, by URL. A lookup waits for them, as Chrome's HTTP cache
    /// locks an entry being written: two requests in a row for one URL then ask the app
    /// once, where the second would otherwise race the first one's `put`.
    static STORING: RefCell<HashMap<String, (u64, BeingStored)>> =
        RefCell::new(HashMap::new());
    static NEXT_STORING: Cell<u64> = const { Cell::new(0) };
    /// The opened cache, kept for the worker's life: opening costs a round trip to the
    /// browser's storage for every request otherwise.
    static OPENED: RefCell<Option<Cache>> = const { RefCell::new(None) };
    /// The URLs the cache may hold: a lookup of any other skips the round trip to the
    /// browser's storage (see [`crate::stored_urls`]).
    static STORED: RefCell<StoredUrls> = RefCell::new(StoredUrls::new());
}

/// A URL's entry in [`STORING`], for as long as its response is being stored; dropping it
/// lets the waiting lookups go on.
struct Storing {
    url: String,
    id: u64,
    _done: oneshot::Sender<()>,
}

impl Storing {
    fn begin(url: String) -> Self {
        let id = NEXT_STORING.replace(NEXT_STORING.get() + 1);
        let (done, waiting) = oneshot::channel();
        STORING.with_borrow_mut(|m| m.insert(url.clone(), (id, waiting.shared())));
        STORED.with_borrow_mut(|s| s.store_begins(&url));
        Self {
            url,
            id,
            _done: done,
        }
    }
}

impl Drop for Storing {
    fn drop(&mut self) {
        // A later store of the same URL may have replaced this entry; that one stays.
        STORING.with_borrow_mut(|m| {
            if m.get(&self.url).is_some_and(|(id, _)| *id == self.id) {
                m.remove(&self.url);
            }
        });
    }
}

/// A response found in the cache.
pub(crate) struct Stored {
    response: Response,
    /// Its headers, as stored.
    pub(crate) headers: HeaderMap,
    /// When it was received, in milliseconds since the Unix epoch.
    pub(crate) received_ms: u64,
}

/// The cache, or `None` (with a warning) where Cache Storage is unavailable: requests then
/// go to the app as if nothing were stored.
pub(crate) async fn open(scope: &web_sys::ServiceWorkerGlobalScope) -> Option<Cache> {
    if let Some(cache) = OPENED.with_borrow(Clone::clone) {
        return Some(cache);
    }
    let opened = async {
        let storage = scope.caches()?;
        let cache = JsFuture::from(storage.open(CACHE_NAME)).await?;
        Ok::<_, JsValue>(cache.unchecked_into::<Cache>())
    };
    match opened.await {
        Ok(cache) => {
            OPENED.set(Some(cache.clone()));
            spawn_local(read_keys(cache.clone()));
            Some(cache)
        }
        Err(e) => {
            warn("Cache Storage is unavailable; not caching", &e);
            None
        }
    }
}

/// Reads the URLs the cache holds into [`STORED`], in the background. Until they are read,
/// and if they cannot be, every lookup asks the cache.
async fn read_keys(cache: Cache) {
    match JsFuture::from(cache.keys()).await {
        Ok(keys) => {
            let urls: Vec<String> = Array::from(&keys)
                .iter()
                .filter_map(|key| key.dyn_into::<Request>().ok())
                .map(|key| key.url())
                .collect();
            STORED.with_borrow_mut(|s| s.keys_read(urls));
        }
        Err(e) => warn(
            "could not read what the cache holds; asking it for every request",
            &e,
        ),
    }
}

/// The stored response for `request`, if there is one this cache stored.
pub(crate) async fn find(cache: &Cache, request: &Request) -> Option<Stored> {
    let url = request.url();
    let storing = STORING.with_borrow(|m| m.get(&url).map(|(_, w)| w.clone()));
    if let Some(storing) = storing {
        let timeout =
            TimeoutFuture::new(u32::try_from(STORING_WAIT.as_millis()).unwrap_or(u32::MAX));
        let _ = future::select(storing, timeout).await;
    }
    if !STORED.with_borrow(|s| s.may_hold(&url)) {
        return None;
    }
    let found = JsFuture::from(cache.match_with_request(request))
        .await
        .ok()?;
    let response = found.dyn_into::<Response>().ok()?;
    let headers = header_map(&response.headers());
    let received_ms = http_cache::received_ms(&headers)?;
    Some(Stored {
        response,
        headers,
        received_ms,
    })
}

impl Stored {
    /// The stored response as the page gets it.
    pub(crate) fn serve(self) -> Result<Response, JsValue> {
        rebuilt(
            &self.response,
            &self.headers,
            self.response.body().as_ref(),
            None,
        )
    }

    /// After the app answered its revalidation with `304` (headers `not_modified`): stores
    /// the freshened response and returns it for the page.
    pub(crate) fn freshen(
        self,
        cache: &Cache,
        request: &Request,
        not_modified: &HeaderMap,
        now_ms: u64,
    ) -> Result<Response, JsValue> {
        let headers = http_cache::freshened(&self.headers, not_modified);
        let storing = Storing::begin(request.url());
        let Some(body) = self.response.body() else {
            let stored = rebuilt(&self.response, &headers, None, Some(now_ms))?;
            put(cache, request, stored, storing);
            return rebuilt(&self.response, &headers, None, None);
        };
        let (served, kept) = tee(&body)?;
        let stored = rebuilt(&self.response, &headers, Some(&kept), Some(now_ms))?;
        put(cache, request, stored, storing);
        rebuilt(&self.response, &headers, Some(&served), None)
    }
}

/// Stores `response` (received at `now_ms`) for `request` as the page reads it, and returns
/// what the page gets. A body over [`MAX_STORED_BODY`] is passed on and not stored, and so
/// is one the page does not read to its end.
///
/// The body is not teed: a second reader would drain the window's stream as fast as it can
/// and so take the page's backpressure away from the tunnel, and the agent's faster bursts
/// then lose more datagrams on their way into Chrome (bench/findings.md). Here the page's
/// reads alone pull the body, and the cache keeps a reference to each chunk they pass.
pub(crate) fn store(
    cache: &Cache,
    request: &Request,
    response: Response,
    now_ms: u64,
) -> Result<Response, JsValue> {
    let headers = header_map(&response.headers());
    let declared_len = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|n| n > MAX_STORED_BODY) {
        return Ok(response);
    }
    let storing = Storing::begin(request.url());
    let Some(body) = response.body() else {
        let stored = rebuilt(&response, &headers, None, Some(now_ms))?;
        put(cache, request, stored, storing);
        return Ok(response);
    };
    // Collected as the browser's own chunks and joined in a Blob at the end: no copy into
    // this module's memory, which would keep the largest body's size for good.
    let kept = Rc::new(RefCell::new(Some(Array::new())));
    let mut len = 0u64;
    let seen = kept.clone();
    let passed = wasm_streams::ReadableStream::from_raw(body.unchecked_into())
        .into_stream()
        .map(move |chunk| {
            match &chunk {
                Ok(bytes) => {
                    len += u64::from(bytes.unchecked_ref::<Uint8Array>().length());
                    let mut kept = seen.borrow_mut();
                    if len > MAX_STORED_BODY {
                        *kept = None;
                    } else if let Some(chunks) = kept.as_ref() {
                        chunks.push(bytes);
                    }
                }
                Err(_) => *seen.borrow_mut() = None,
            }
            Some(chunk)
        });
    let page_init = init(&response, &headers, None)?;
    let stored_init = init(&response, &headers, Some(now_ms))?;
    let cache = cache.clone();
    // The same JS object (a GET has no body to consume), not `Request.clone()`.
    let request = Clone::clone(request);
    let end = futures_util::stream::once(async move {
        // Reached only when the page read the body to its end without an error.
        let chunks = kept.borrow_mut().take()?;
        let stored = Blob::new_with_u8_array_sequence(&chunks)
            .and_then(|blob| Response::new_with_opt_blob_and_init(Some(&blob), &stored_init));
        match stored {
            Ok(stored) => put(&cache, &request, stored, storing),
            Err(e) => warn("could not store a response", &e),
        }
        None
    });
    let page_body =
        wasm_streams::ReadableStream::from_stream(passed.chain(end).filter_map(future::ready))
            .into_raw();
    Response::new_with_opt_readable_stream_and_init(Some(page_body.unchecked_ref()), &page_init)
}

/// Removes what is stored for `request`, in the background.
pub(crate) fn remove(cache: &Cache, request: &Request) {
    let removal = STORED.with_borrow(|s| s.removal_begins(&request.url()));
    let done = JsFuture::from(cache.delete_with_request(request));
    spawn_local(async move {
        match done.await {
            Ok(_) => STORED.with_borrow_mut(|s| s.removed(removal)),
            // Still counted as stored: the lookups keep asking the cache.
            Err(e) => warn("could not remove a stored response", &e),
        }
    });
}

/// Puts in the background; a failure (the storage quota, say) only means it is not stored.
/// `storing` ends when the put does.
fn put(cache: &Cache, request: &Request, response: Response, storing: Storing) {
    let done = JsFuture::from(cache.put_with_request(request, &response));
    spawn_local(async move {
        if let Err(e) = done.await {
            warn("could not store a response", &e);
        }
        drop(storing);
    });
}

/// Two readers of one body: the first for the page, the second for the cache.
fn tee(body: &ReadableStream) -> Result<(ReadableStream, ReadableStream), JsValue> {
    let both = body.tee();
    Ok((both.get(0).dyn_into()?, both.get(1).dyn_into()?))
}

/// A response like `like` with `headers` and `body`; with [`RECEIVED_AT`] set to
/// `received_ms` when given (to store), else without it (to serve).
fn rebuilt(
    like: &Response,
    headers: &HeaderMap,
    body: Option<&ReadableStream>,
    received_ms: Option<u64>,
) -> Result<Response, JsValue> {
    Response::new_with_opt_readable_stream_and_init(body, &init(like, headers, received_ms)?)
}

fn init(
    like: &Response,
    headers: &HeaderMap,
    received_ms: Option<u64>,
) -> Result<ResponseInit, JsValue> {
    let out = Headers::new()?;
    for (name, value) in headers {
        if name == RECEIVED_AT {
            continue;
        }
        if let Ok(value) = value.to_str() {
            out.append(name.as_str(), value)?;
        }
    }
    if let Some(ms) = received_ms {
        out.set(RECEIVED_AT, &ms.to_string())?;
    }
    let init = ResponseInit::new();
    init.set_status(like.status());
    init.set_status_text(&like.status_text());
    init.set_headers(&out);
    Ok(init)
}

/// `headers` as an [`HeaderMap`]; entries the `http` crate refuses are left out (the
/// browser has already validated them, so there are none in practice).
pub(crate) fn header_map(headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    let Ok(Some(entries)) = js_sys::try_iter(headers) else {
        return map;
    };
    for entry in entries.flatten() {
        let pair: Array = entry.unchecked_into();
        let (Some(name), Some(value)) = (pair.get(0).as_string(), pair.get(1).as_string()) else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            map.append(name, value);
        }
    }
    map
}

fn warn(what: &str, e: &JsValue) {
    let detail = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .unwrap_or_else(|| format!("{e:?}"));
    web_sys::console::warn_1(&format!("burrow service worker: {what}: {detail}").into());
}
