//! The decisions of a private HTTP cache (RFC 9111) for responses that came through the
//! tunnel: which may be stored, when a stored one may be served as it is, when it must be
//! revalidated with the app first, and how a `304 Not Modified` freshens it.
//!
//! The browser's own HTTP cache never sees these responses: a service worker answers the
//! page's requests with responses it builds itself, and Chrome does not store those. So
//! without a cache of Burrow's own, every reload of an app (code-server's workbench, some
//! megabytes of scripts under versioned, year-long `max-age` URLs) would fetch everything
//! through the tunnel again, where the same app reached directly reloads from disk. The
//! service worker keeps the bodies in Cache Storage; this module only decides, from headers
//! and times the caller passes in (milliseconds since the Unix epoch).
//!
//! Deliberately narrower than a general-purpose cache: only `GET` answered with `200` is
//! stored, a request carrying its own conditional or range headers bypasses the cache (the
//! page then gets exactly what the app says), and a stale response is never served while
//! the app can be asked, except where the fetch cache mode allows it.

use std::time::{Duration, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

/// The header a stored response keeps the time it was received in (milliseconds since the
/// Unix epoch), for its age; removed before the response is served.
pub const RECEIVED_AT: &str = "x-burrow-received-at";

/// The largest body stored; larger ones (a big download) are passed through only, so one
/// download cannot evict an app's working set or fill the disk quota.
pub const MAX_STORED_BODY: u64 = 32 * 1024 * 1024;

/// The longest freshness lifetime derived heuristically from `Last-Modified` (RFC 9111
/// §4.2.2) for a response without explicit freshness: it is a guess, so bounded.
pub const MAX_HEURISTIC_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// The part of the time since `Last-Modified` that the heuristic treats as fresh (the
/// RFC's suggested 10 %).
const HEURISTIC_FRACTION: u32 = 10;

/// The fetch request's cache mode (`Request.cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FetchCacheMode {
    /// Use a fresh stored response, revalidate a stale one.
    #[default]
    Default,
    /// Neither use nor store anything.
    NoStore,
    /// Fetch anew, and store the result.
    Reload,
    /// Always revalidate a stored response with the app first.
    NoCache,
    /// Use any stored response, stale or not; fetch only without one.
    ForceCache,
    /// Use any stored response; without one, fail (the fetch standard's 504).
    OnlyIfCached,
}

impl FetchCacheMode {
    /// The mode named by a `RequestCache` string; [`Self::Default`] for anything else.
    pub fn from_fetch(name: &str) -> Self {
        match name {
            "no-store" => Self::NoStore,
            "reload" => Self::Reload,
            "no-cache" => Self::NoCache,
            "force-cache" => Self::ForceCache,
            "only-if-cached" => Self::OnlyIfCached,
            _ => Self::Default,
        }
    }
}

/// The `Cache-Control` directives this cache acts on (RFC 9111 §5.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store`: neither store nor use a stored response.
    pub no_store: bool,
    /// `no-cache` (also its field-qualified form, taken as the unqualified one, which is
    /// stricter): revalidate before every use.
    pub no_cache: bool,
    /// `max-age`, in seconds; an unparsable value counts as 0 (stale), as §4.2.1 advises.
    pub max_age: Option<u64>,
    /// `immutable` (RFC 8246): the body will not change while fresh, so a reload need not
    /// revalidate it.
    pub immutable: bool,
}

impl CacheControl {
    /// The directives of every `Cache-Control` field in `headers`; where one repeats, the
    /// first occurrence counts (§4.2.1).
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        let values = headers.get_all(header::CACHE_CONTROL);
        for directive in values
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
        {
            let (name, value) = match directive.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            match name.to_ascii_lowercase().as_str() {
                "no-store" => cc.no_store = true,
                "no-cache" => cc.no_cache = true,
                "immutable" => cc.immutable = true,
                "max-age" if cc.max_age.is_none() => {
                    cc.max_age = Some(value.and_then(|v| v.parse().ok()).unwrap_or(0));
                }
                _ => {}
            }
        }
        cc
    }
}

/// Request headers that make a request the page's own conditional or partial one: such a
/// request goes to the app as it is and its answer is not stored.
const BYPASS_REQUEST_HEADERS: [HeaderName; 6] = [
    header::RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// Whether a request may be answered from the cache, or its answer stored, at all.
pub fn request_uses_cache(method: &Method, headers: &HeaderMap, mode: FetchCacheMode) -> bool {
    method == Method::GET
        && mode != FetchCacheMode::NoStore
        && !CacheControl::parse(headers).no_store
        && !BYPASS_REQUEST_HEADERS
            .iter()
            .any(|h| headers.contains_key(h))
}

/// Whether the app's answer to a request that [uses the cache](request_uses_cache) may be
/// stored (§3): a `200` the app does not forbid storing, that can vary on named request
/// headers only, and that will be of use later (fresh for a while, or revalidatable).
/// `received_ms` is when it arrived.
pub fn storable(status: StatusCode, response: &HeaderMap, received_ms: u64) -> bool {
    if status != StatusCode::OK || CacheControl::parse(response).no_store {
        return false;
    }
    let varies_on_everything = response
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == "*");
    !varies_on_everything
        && (freshness_lifetime(response, received_ms) > Duration::ZERO || has_validator(response))
}

/// How long a response stays fresh after it was generated (§4.2.1): `max-age`, else
/// `Expires` minus `Date`, else a tenth of the time since `Last-Modified` (at most
/// [`MAX_HEURISTIC_LIFETIME`]). `received_ms` stands in for a missing `Date`.
pub fn freshness_lifetime(response: &HeaderMap, received_ms: u64) -> Duration {
    if let Some(secs) = CacheControl::parse(response).max_age {
        return Duration::from_secs(secs);
    }
    let date = date_ms(response, header::DATE).unwrap_or(received_ms);
    if response.contains_key(header::EXPIRES) {
        // An invalid Expires ("0", "-1") means already expired (§5.3).
        let expires = date_ms(response, header::EXPIRES).unwrap_or(0);
        return Duration::from_millis(expires.saturating_sub(date));
    }
    match date_ms(response, header::LAST_MODIFIED) {
        Some(modified) => (Duration::from_millis(date.saturating_sub(modified))
            / HEURISTIC_FRACTION)
            .min(MAX_HEURISTIC_LIFETIME),
        None => Duration::ZERO,
    }
}

/// The stored response's age at `now_ms` (§4.2.3): its age when it was received (its `Age`,
/// or the time since its `Date`, whichever is larger) plus the time since then.
pub fn current_age(response: &HeaderMap, received_ms: u64, now_ms: u64) -> Duration {
    let age_value = response
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let apparent = date_ms(response, header::DATE).map_or(Duration::ZERO, |date| {
        Duration::from_millis(received_ms.saturating_sub(date))
    });
    age_value.max(apparent) + Duration::from_millis(now_ms.saturating_sub(received_ms))
}

/// What to do with a stored response for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Serve it as it is.
    Use,
    /// Ask the app first, with these headers added to the request: on `304 Not Modified`
    /// serve it [`freshened`], else serve (and store) the new answer.
    Revalidate(HeaderMap),
    /// It cannot be used: fetch anew.
    Fetch,
}

/// Whether the `stored` response (received at `received_ms`) answers a request with
/// `request` headers and cache `mode`, at `now_ms`.
pub fn lookup(
    mode: FetchCacheMode,
    request: &HeaderMap,
    stored: &HeaderMap,
    received_ms: u64,
    now_ms: u64,
) -> Lookup {
    match mode {
        FetchCacheMode::NoStore | FetchCacheMode::Reload => return Lookup::Fetch,
        FetchCacheMode::ForceCache | FetchCacheMode::OnlyIfCached => return Lookup::Use,
        FetchCacheMode::Default | FetchCacheMode::NoCache => {}
    }
    let asked = CacheControl::parse(request);
    let pragma_no_cache = !request.contains_key(header::CACHE_CONTROL)
        && request
            .get(header::PRAGMA)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("no-cache"));
    let given = CacheControl::parse(stored);
    let age = current_age(stored, received_ms, now_ms);
    let fresh = age < freshness_lifetime(stored, received_ms)
        && asked
            .max_age
            .is_none_or(|max| age <= Duration::from_secs(max));
    // A reload asks to revalidate, but an immutable response is by its own word unchanged
    // while fresh (RFC 8246), as browsers treat it.
    let must_ask = given.no_cache
        || ((mode == FetchCacheMode::NoCache || asked.no_cache || pragma_no_cache)
            && !(given.immutable && fresh));
    if fresh && !must_ask {
        return Lookup::Use;
    }
    let mut conditional = HeaderMap::new();
    if let Some(etag) = stored.get(header::ETAG) {
        conditional.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = stored.get(header::LAST_MODIFIED) {
        conditional.insert(header::IF_MODIFIED_SINCE, modified.clone());
    }
    if conditional.is_empty() {
        Lookup::Fetch
    } else {
        Lookup::Revalidate(conditional)
    }
}

/// Headers a `304` does not replace in the stored response (§3.2): they describe the stored
/// body, or this hop only, and [`RECEIVED_AT`] is the cache's own.
const KEPT_ON_UPDATE: [&str; 7] = [
    "content-length",
    "content-encoding",
    "content-range",
    "transfer-encoding",
    "connection",
    "keep-alive",
    RECEIVED_AT,
];

/// The stored response's headers after the app answered its revalidation with
/// `not_modified` (§4.3.4): each header the 304 carries replaces the stored ones of its name.
pub fn freshened(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut out = stored.clone();
    for name in not_modified.keys() {
        if KEPT_ON_UPDATE.contains(&name.as_str()) {
            continue;
        }
        out.remove(name);
        for value in not_modified.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The [`RECEIVED_AT`] value for a response received at `now_ms`.
pub fn received_at_value(now_ms: u64) -> HeaderValue {
    HeaderValue::from(now_ms)
}

/// When a stored response was received, from its [`RECEIVED_AT`] header; `None` if it has
/// none (it was not stored by this cache).
pub fn received_ms(stored: &HeaderMap) -> Option<u64> {
    stored.get(RECEIVED_AT)?.to_str().ok()?.parse().ok()
}

fn has_validator(response: &HeaderMap) -> bool {
    response.contains_key(header::ETAG) || response.contains_key(header::LAST_MODIFIED)
}

/// An HTTP-date header in milliseconds since the Unix epoch; `None` if absent or invalid.
fn date_ms(headers: &HeaderMap, name: HeaderName) -> Option<u64> {
    let text = headers.get(name)?.to_str().ok()?;
    let time = httpdate::parse_http_date(text).ok()?;
    u64::try_from(time.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-01T00:00:00Z, in milliseconds.
    const T0: u64 = 1_796_083_200_000;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        h
    }

    fn http_date(ms: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms))
    }

    #[test]
    fn cache_control_takes_the_first_max_age_and_an_unparsable_one_as_zero() {
        let cc = CacheControl::parse(&headers(&[
            ("cache-control", "public, max-age=600"),
            ("cache-control", "max-age=5, immutable"),
        ]));
        assert_eq!(cc.max_age, Some(600));
        assert!(cc.immutable && !cc.no_cache && !cc.no_store);
        let bad = CacheControl::parse(&headers(&[("cache-control", "max-age=soon")]));
        assert_eq!(bad.max_age, Some(0));
        let qualified =
            CacheControl::parse(&headers(&[("cache-control", "no-cache=\"set-cookie\"")]));
        assert!(qualified.no_cache);
    }

    #[test]
    fn only_plain_gets_use_the_cache() {
        let none = HeaderMap::new();
        assert!(request_uses_cache(
            &Method::GET,
            &none,
            FetchCacheMode::Default
        ));
        assert!(request_uses_cache(
            &Method::GET,
            &none,
            FetchCacheMode::Reload
        ));
        assert!(!request_uses_cache(
            &Method::POST,
            &none,
            FetchCacheMode::Default
        ));
        assert!(!request_uses_cache(
            &Method::HEAD,
            &none,
            FetchCacheMode::Default
        ));
        assert!(!request_uses_cache(
            &Method::GET,
            &none,
            FetchCacheMode::NoStore
        ));
        let range = headers(&[("range", "bytes=0-9")]);
        assert!(!request_uses_cache(
            &Method::GET,
            &range,
            FetchCacheMode::Default
        ));
        let own_conditional = headers(&[("if-none-match", "\"a\"")]);
        assert!(!request_uses_cache(
            &Method::GET,
            &own_conditional,
            FetchCacheMode::Default
        ));
        let no_store = headers(&[("cache-control", "no-store")]);
        assert!(!request_uses_cache(
            &Method::GET,
            &no_store,
            FetchCacheMode::Default
        ));
    }

    #[test]
    fn a_response_is_stored_only_when_allowed_and_of_later_use() {
        let ok = StatusCode::OK;
        assert!(storable(
            ok,
            &headers(&[("cache-control", "max-age=60")]),
            T0
        ));
        assert!(storable(
            ok,
            &headers(&[("etag", "\"v1\""), ("cache-control", "no-cache")]),
            T0
        ));
        assert!(!storable(
            ok,
            &headers(&[("cache-control", "no-store, max-age=60")]),
            T0
        ));
        assert!(!storable(
            ok,
            &headers(&[("cache-control", "max-age=60"), ("vary", "accept, *")]),
            T0
        ));
        assert!(storable(
            ok,
            &headers(&[("cache-control", "max-age=60"), ("vary", "accept-encoding")]),
            T0
        ));
        // Neither fresh for any time nor revalidatable: storing it would be useless.
        assert!(!storable(
            ok,
            &headers(&[("content-type", "text/plain")]),
            T0
        ));
        assert!(!storable(
            ok,
            &headers(&[("cache-control", "max-age=0")]),
            T0
        ));
        assert!(!storable(
            StatusCode::NOT_FOUND,
            &headers(&[("cache-control", "max-age=60")]),
            T0
        ));
        assert!(!storable(
            StatusCode::PARTIAL_CONTENT,
            &headers(&[("etag", "\"v1\"")]),
            T0
        ));
    }

    #[test]
    fn freshness_comes_from_max_age_then_expires_then_last_modified() {
        let date = http_date(T0);
        let h = headers(&[
            ("cache-control", "max-age=120"),
            ("expires", &http_date(T0 + 5_000)),
            ("date", &date),
        ]);
        assert_eq!(freshness_lifetime(&h, T0), Duration::from_secs(120));
        let h = headers(&[("expires", &http_date(T0 + 90_000)), ("date", &date)]);
        assert_eq!(freshness_lifetime(&h, T0), Duration::from_secs(90));
        let h = headers(&[("expires", "0"), ("date", &date)]);
        assert_eq!(freshness_lifetime(&h, T0), Duration::ZERO);
        // Modified 10 hours before: fresh for a tenth of that.
        let h = headers(&[
            ("last-modified", &http_date(T0 - 36_000_000)),
            ("date", &date),
        ]);
        assert_eq!(freshness_lifetime(&h, T0), Duration::from_secs(3600));
        // Modified a year before: the guess is capped.
        let h = headers(&[
            ("last-modified", &http_date(T0 - 365 * 86_400_000)),
            ("date", &date),
        ]);
        assert_eq!(freshness_lifetime(&h, T0), MAX_HEURISTIC_LIFETIME);
        // No Date: the time it was received stands in.
        let h = headers(&[("expires", &http_date(T0 + 30_000))]);
        assert_eq!(freshness_lifetime(&h, T0), Duration::from_secs(30));
    }

    #[test]
    fn age_counts_the_age_header_the_date_and_the_time_stored() {
        let h = headers(&[("age", "100"), ("date", &http_date(T0))]);
        assert_eq!(
            current_age(&h, T0 + 2_000, T0 + 12_000),
            Duration::from_secs(110)
        );
        let h = headers(&[("date", &http_date(T0))]);
        assert_eq!(
            current_age(&h, T0 + 2_000, T0 + 12_000),
            Duration::from_secs(12)
        );
        // A Date in the future (clock skew) does not make the age negative.
        let h = headers(&[("date", &http_date(T0 + 60_000))]);
        assert_eq!(current_age(&h, T0, T0 + 1_000), Duration::from_secs(1));
    }

    #[test]
    fn a_fresh_response_is_used_and_a_stale_one_revalidated_with_its_validators() {
        let stored = headers(&[
            ("cache-control", "max-age=60"),
            ("etag", "\"v1\""),
            ("last-modified", &http_date(T0 - 86_400_000)),
            ("date", &http_date(T0)),
        ]);
        let none = HeaderMap::new();
        let mode = FetchCacheMode::Default;
        assert_eq!(lookup(mode, &none, &stored, T0, T0 + 59_000), Lookup::Use);
        let Lookup::Revalidate(conditional) = lookup(mode, &none, &stored, T0, T0 + 61_000) else {
            panic!("a stale response is revalidated");
        };
        assert_eq!(
            conditional
                .get(header::IF_NONE_MATCH)
                .map(HeaderValue::as_bytes),
            Some(&b"\"v1\""[..])
        );
        assert!(conditional.contains_key(header::IF_MODIFIED_SINCE));
        // Stale without a validator: nothing to ask with.
        let bare = headers(&[("cache-control", "max-age=60"), ("date", &http_date(T0))]);
        assert_eq!(lookup(mode, &none, &bare, T0, T0 + 61_000), Lookup::Fetch);
    }

    #[test]
    fn no_cache_revalidates_unless_an_immutable_response_is_fresh() {
        let stored = headers(&[("cache-control", "max-age=600"), ("etag", "\"v1\"")]);
        let immutable = headers(&[
            ("cache-control", "max-age=600, immutable"),
            ("etag", "\"v1\""),
        ]);
        let none = HeaderMap::new();
        let asked = headers(&[("cache-control", "no-cache")]);
        let pragma = headers(&[("pragma", "no-cache")]);
        let revalidates = |l: Lookup| matches!(l, Lookup::Revalidate(_));
        assert!(revalidates(lookup(
            FetchCacheMode::NoCache,
            &none,
            &stored,
            T0,
            T0 + 1
        )));
        assert!(revalidates(lookup(
            FetchCacheMode::Default,
            &asked,
            &stored,
            T0,
            T0 + 1
        )));
        assert!(revalidates(lookup(
            FetchCacheMode::Default,
            &pragma,
            &stored,
            T0,
            T0 + 1
        )));
        assert_eq!(
            lookup(FetchCacheMode::NoCache, &none, &immutable, T0, T0 + 1),
            Lookup::Use
        );
        // The app's own no-cache always asks, immutable or not.
        let app_no_cache = headers(&[("cache-control", "no-cache, immutable"), ("etag", "\"v1\"")]);
        assert!(revalidates(lookup(
            FetchCacheMode::Default,
            &none,
            &app_no_cache,
            T0,
            T0 + 1
        )));
        // A request's max-age bounds the age it accepts.
        let young = headers(&[("cache-control", "max-age=5")]);
        assert!(revalidates(lookup(
            FetchCacheMode::Default,
            &young,
            &stored,
            T0,
            T0 + 10_000
        )));
    }

    #[test]
    fn the_fetch_cache_modes_override_freshness() {
        let stale = headers(&[("cache-control", "max-age=1"), ("etag", "\"v1\"")]);
        let fresh = headers(&[("cache-control", "max-age=600"), ("etag", "\"v1\"")]);
        let none = HeaderMap::new();
        let later = T0 + 3_600_000;
        assert_eq!(
            lookup(FetchCacheMode::ForceCache, &none, &stale, T0, later),
            Lookup::Use
        );
        assert_eq!(
            lookup(FetchCacheMode::OnlyIfCached, &none, &stale, T0, later),
            Lookup::Use
        );
        assert_eq!(
            lookup(FetchCacheMode::Reload, &none, &fresh, T0, T0 + 1),
            Lookup::Fetch
        );
        assert_eq!(
            lookup(FetchCacheMode::NoStore, &none, &fresh, T0, T0 + 1),
            Lookup::Fetch
        );
        assert_eq!(
            FetchCacheMode::from_fetch("only-if-cached"),
            FetchCacheMode::OnlyIfCached
        );
        assert_eq!(
            FetchCacheMode::from_fetch("something-new"),
            FetchCacheMode::Default
        );
    }

    #[test]
    fn a_304_replaces_the_headers_it_carries_but_not_those_of_the_stored_body() {
        let stored = headers(&[
            ("content-length", "1024"),
            ("content-type", "text/javascript"),
            ("cache-control", "max-age=60"),
            ("etag", "\"v1\""),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            (RECEIVED_AT, "1"),
        ]);
        let not_modified = headers(&[
            ("cache-control", "max-age=600"),
            ("content-length", "0"),
            ("set-cookie", "c=3"),
            (RECEIVED_AT, "2"),
        ]);
        let out = freshened(&stored, &not_modified);
        assert_eq!(
            out.get("cache-control").map(HeaderValue::as_bytes),
            Some(&b"max-age=600"[..])
        );
        assert_eq!(
            out.get("content-length").map(HeaderValue::as_bytes),
            Some(&b"1024"[..])
        );
        assert_eq!(out.get_all("set-cookie").iter().count(), 1);
        assert_eq!(
            out.get("content-type").map(HeaderValue::as_bytes),
            Some(&b"text/javascript"[..])
        );
        assert_eq!(received_ms(&out), Some(1));
    }

    #[test]
    fn the_received_time_round_trips_through_its_header() {
        let mut h = HeaderMap::new();
        assert_eq!(received_ms(&h), None);
        h.insert(RECEIVED_AT, received_at_value(T0));
        assert_eq!(received_ms(&h), Some(T0));
        h.insert(RECEIVED_AT, HeaderValue::from_static("yesterday"));
        assert_eq!(received_ms(&h), None);
    }
}
