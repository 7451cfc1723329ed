//! A cookie jar for one origin of a workspace app, as a client keeps it (RFC 6265 section
//! 5.3 storage, section 5.4 the `Cookie` header).
//!
//! The browser client synthesizes the `Response`s of apps it reaches through a tunnel, and
//! a synthesized `Response` cannot set browser cookies, so the client keeps the apps'
//! cookies itself: one jar per workspace port. Everything in a jar belongs to the one app
//! behind that port, so `Domain` is not consulted; the tunnel is end-to-end encrypted, so
//! `Secure` cookies are sent too. Time comes in as milliseconds since the Unix epoch.

use cookie::Cookie;
use serde::Serialize;

/// Most cookies a jar holds (browsers keep about as many per domain); the least recently
/// set goes first.
pub const MAX_COOKIES: usize = 180;

/// Largest `Set-Cookie` value accepted, in bytes (RFC 6265 section 6.1's minimum).
pub const MAX_COOKIE_LEN: usize = 4096;

/// Why a `Set-Cookie` was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// Not a cookie: no `=`, an empty name, or not UTF-8.
    #[error("unparsable Set-Cookie: {0}")]
    Parse(String),
    /// Longer than [`MAX_COOKIE_LEN`].
    #[error("Set-Cookie of {0} bytes exceeds {MAX_COOKIE_LEN}")]
    TooLong(usize),
}

/// One stored cookie (the `{name, value, path, httpOnly, expires?}` objects of the
/// client's `cookies(port)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredCookie {
    /// The cookie's name.
    pub name: String,
    /// Its value, as the server sent it.
    pub value: String,
    /// The path it is sent for (its `Path`, else the default path of the URL that set it).
    pub path: String,
    /// `HttpOnly`: scripts must not see it (the page should not mirror it).
    pub http_only: bool,
    /// When it expires, in milliseconds since the Unix epoch; `None` for a session cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

/// The cookies of one app.
#[derive(Debug, Clone, Default)]
pub struct CookieJar {
    /// In order of creation (a replaced cookie keeps its place, as RFC 6265 asks).
    cookies: Vec<StoredCookie>,
}

impl CookieJar {
    /// An empty jar.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores (or replaces, or deletes) the cookie of one `Set-Cookie` value received in
    /// answer to a request for `request_path` (the URL's path, without the query).
    ///
    /// A `Max-Age` of zero or less, or an `Expires` in the past, deletes the cookie of
    /// that name and path. `Max-Age` wins over `Expires`.
    pub fn store(
        &mut self,
        set_cookie: &[u8],
        request_path: &str,
        now_ms: u64,
    ) -> Result<(), CookieError> {
        if set_cookie.len() > MAX_COOKIE_LEN {
            return Err(CookieError::TooLong(set_cookie.len()));
        }
        // RFC 6265's cookie-octets exclude controls; a CR or LF kept here would end up in
        // a request's Cookie header.
        if set_cookie
            .iter()
            .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return Err(CookieError::Parse("control character".into()));
        }
        let text =
            std::str::from_utf8(set_cookie).map_err(|_| CookieError::Parse("not UTF-8".into()))?;
        let parsed = Cookie::parse(text).map_err(|e| CookieError::Parse(e.to_string()))?;
        if parsed.name().is_empty() {
            return Err(CookieError::Parse("empty name".into()));
        }
        let path = match parsed.path() {
            Some(p) if p.starts_with('/') => p.to_owned(),
            _ => default_path(request_path).to_owned(),
        };
        let expires = if let Some(max_age) = parsed.max_age() {
            let secs = max_age.whole_seconds();
            if secs <= 0 {
                Some(0)
            } else {
                Some(now_ms.saturating_add((secs as u64).saturating_mul(1000)))
            }
        } else {
            parsed.expires_datetime().map(|t| {
                u64::try_from(t.unix_timestamp())
                    .unwrap_or(0)
                    .saturating_mul(1000)
            })
        };
        let cookie = StoredCookie {
            name: parsed.name().to_owned(),
            value: parsed.value().to_owned(),
            path,
            http_only: parsed.http_only().unwrap_or(false),
            expires,
        };
        let existing = self
            .cookies
            .iter()
            .position(|c| c.name == cookie.name && c.path == cookie.path);
        let expired = cookie.expires.is_some_and(|e| e <= now_ms);
        match (existing, expired) {
            (Some(i), true) => {
                self.cookies.remove(i);
            }
            (Some(i), false) => self.cookies[i] = cookie,
            (None, true) => {}
            (None, false) => {
                self.remove_expired(now_ms);
                if self.cookies.len() >= MAX_COOKIES {
                    self.cookies.remove(0);
                }
                self.cookies.push(cookie);
            }
        }
        Ok(())
    }

    /// The `Cookie` header value for a request to `request_path`, or `None` if no cookie
    /// matches: `name=value` pairs joined by `; `, longer paths first, then older first
    /// (RFC 6265 section 5.4).
    pub fn cookie_header(&self, request_path: &str, now_ms: u64) -> Option<String> {
        let mut matching: Vec<&StoredCookie> = self
            .live(now_ms)
            .filter(|c| path_matches(request_path, &c.path))
            .collect();
        if matching.is_empty() {
            return None;
        }
        // Stable: equal paths keep their creation order.
        matching.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        Some(
            matching
                .iter()
                .map(|c| format!("{}={}", c.name, c.value))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    /// The cookies not expired at `now_ms`, oldest first.
    pub fn live(&self, now_ms: u64) -> impl Iterator<Item = &StoredCookie> {
        self.cookies
            .iter()
            .filter(move |c| c.expires.is_none_or(|e| e > now_ms))
    }

    /// Forgets the cookies expired at `now_ms`.
    pub fn remove_expired(&mut self, now_ms: u64) {
        self.cookies
            .retain(|c| c.expires.is_none_or(|e| e > now_ms));
    }
}

/// The default cookie path of a request path (RFC 6265 section 5.1.4): up to, not
/// including, its last `/`; `/` if that leaves nothing.
pub fn default_path(request_path: &str) -> &str {
    if !request_path.starts_with('/') {
        return "/";
    }
    match request_path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &request_path[..i],
    }
}

/// Whether a cookie with `cookie_path` is sent to `request_path` (RFC 6265 section
/// 5.1.4): the same path, or a path below it (`/a` matches `/a/b`, not `/ab`).
pub fn path_matches(request_path: &str, cookie_path: &str) -> bool {
    let request_path = if request_path.is_empty() {
        "/"
    } else {
        request_path
    };
    match request_path.strip_prefix(cookie_path) {
        Some("") => true,
        Some(rest) => cookie_path.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn jar(set: &[&str], request_path: &str) -> CookieJar {
        let mut jar = CookieJar::new();
        for s in set {
            jar.store(s.as_bytes(), request_path, NOW)
                .expect("valid cookie");
        }
        jar
    }

    #[test]
    fn stored_cookie_is_sent_back_on_matching_paths_only() {
        let jar = jar(&["a=1; Path=/app"], "/");
        assert_eq!(jar.cookie_header("/app", NOW).as_deref(), Some("a=1"));
        assert_eq!(jar.cookie_header("/app/x", NOW).as_deref(), Some("a=1"));
        assert_eq!(jar.cookie_header("/apple", NOW), None);
        assert_eq!(jar.cookie_header("/", NOW), None);
    }

    #[test]
    fn default_path_is_the_directory_of_the_request() {
        assert_eq!(default_path("/a/b/c"), "/a/b");
        assert_eq!(default_path("/a"), "/");
        assert_eq!(default_path(""), "/");
        let jar = jar(&["s=v"], "/docs/page");
        assert_eq!(jar.live(NOW).next().map(|c| c.path.as_str()), Some("/docs"));
    }

    #[test]
    fn longer_paths_come_first_then_older_cookies() {
        let jar = jar(&["a=1; Path=/", "b=2; Path=/x", "c=3; Path=/"], "/");
        assert_eq!(
            jar.cookie_header("/x/y", NOW).as_deref(),
            Some("b=2; a=1; c=3")
        );
    }

    #[test]
    fn same_name_and_path_replaces_in_place() {
        let jar = jar(&["a=1; Path=/", "b=2; Path=/", "a=3; Path=/"], "/");
        assert_eq!(jar.cookie_header("/", NOW).as_deref(), Some("a=3; b=2"));
    }

    #[test]
    fn max_age_zero_deletes_and_max_age_sets_the_expiry() {
        let mut jar = jar(&["a=1; Path=/", "b=2; Path=/; Max-Age=60"], "/");
        let b = jar.live(NOW).find(|c| c.name == "b").cloned().expect("b");
        assert_eq!(b.expires, Some(NOW + 60_000));
        assert_eq!(jar.cookie_header("/", NOW + 61_000).as_deref(), Some("a=1"));
        jar.store(b"a=; Path=/; Max-Age=0", "/", NOW)
            .expect("valid");
        assert_eq!(jar.cookie_header("/", NOW).as_deref(), Some("b=2"));
    }

    #[test]
    fn expires_in_the_past_deletes_and_max_age_wins_over_expires() {
        let mut jar = jar(&["a=1; Path=/"], "/");
        jar.store(
            b"a=1; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
            "/",
            NOW,
        )
        .expect("valid");
        assert_eq!(jar.cookie_header("/", NOW), None);
        jar.store(
            b"b=2; Path=/; Max-Age=10; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
            "/",
            NOW,
        )
        .expect("valid");
        assert_eq!(jar.cookie_header("/", NOW).as_deref(), Some("b=2"));
        jar.store(
            b"c=3; Path=/; Expires=Wed, 01 Jan 2100 00:00:00 GMT",
            "/",
            NOW,
        )
        .expect("valid");
        let c = jar.live(NOW).find(|c| c.name == "c").cloned().expect("c");
        assert_eq!(c.expires, Some(4_102_444_800_000));
    }

    #[test]
    fn http_only_is_recorded() {
        let jar = jar(&["h=1; HttpOnly; Path=/", "p=2; Path=/"], "/");
        let flags: Vec<(String, bool)> = jar
            .live(NOW)
            .map(|c| (c.name.clone(), c.http_only))
            .collect();
        assert_eq!(flags, [("h".into(), true), ("p".into(), false)]);
    }

    #[test]
    fn garbage_is_an_error_not_a_cookie() {
        let mut jar = CookieJar::new();
        assert!(matches!(
            jar.store(b"no-equals-sign", "/", NOW),
            Err(CookieError::Parse(_))
        ));
        assert!(matches!(
            jar.store(b"=v", "/", NOW),
            Err(CookieError::Parse(_))
        ));
        assert!(matches!(
            jar.store(&[0xff, b'=', b'1'], "/", NOW),
            Err(CookieError::Parse(_))
        ));
        assert!(matches!(
            jar.store(b"a=1\r\nx: y", "/", NOW),
            Err(CookieError::Parse(_))
        ));
        assert!(matches!(
            jar.store(b"a=1\0", "/", NOW),
            Err(CookieError::Parse(_))
        ));
        let long = format!("a={}", "x".repeat(MAX_COOKIE_LEN));
        assert!(matches!(
            jar.store(long.as_bytes(), "/", NOW),
            Err(CookieError::TooLong(_))
        ));
        assert_eq!(jar.cookie_header("/", NOW), None);
    }

    #[test]
    fn jar_is_bounded_dropping_the_oldest() {
        let mut jar = CookieJar::new();
        for i in 0..MAX_COOKIES + 5 {
            jar.store(format!("c{i}=v").as_bytes(), "/", NOW)
                .expect("valid");
        }
        assert_eq!(jar.live(NOW).count(), MAX_COOKIES);
        assert_eq!(jar.live(NOW).next().map(|c| c.name.as_str()), Some("c5"));
    }
}
