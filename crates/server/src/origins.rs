//! The browser origins burrowd serves and what guards them: the dashboard's origin (the
//! API and its login cookie) and one origin per app (each with its own credential cookie,
//! [`burrow_proto::app_origin`]); the cookies themselves and the `Origin` checks of
//! requests browsers make with them.
//!
//! # Security considerations
//!
//! - Cookies are `HttpOnly`: no script, the dashboard's or an app's, ever holds a secret.
//! - The login cookie is `SameSite=Strict` and every state-changing request made with it
//!   must carry the dashboard's `Origin`; an app's credential is `SameSite=None` (the
//!   dashboard embeds apps, a third-party context) and `Partitioned` (Chromium keeps no
//!   other cookie in a third-party iframe), so the `Origin` check is what stops another
//!   site from using it.
//! - `__Host-` cookies cannot be set by a sibling or parent domain, nor carry a `Domain`:
//!   one app's origin can neither read nor plant another's credential. Browsers keep
//!   `Secure` cookies only in secure contexts (HTTPS, loopback, `*.localhost`); elsewhere the
//!   cookies lose the prefix and `Secure`, and an embedded app cannot keep its credential.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, header};
use burrow_proto::app_origin::{AppLabel, AppsUrl, Scheme};

/// The login cookie's name where browsers keep `Secure` cookies.
pub const SESSION_COOKIE: &str = "__Host-burrow_session";
/// The login cookie's name on a plain-HTTP dashboard that is not on loopback.
pub const INSECURE_SESSION_COOKIE: &str = "burrow_session";
/// The app credential cookie's name where browsers keep `Secure` cookies.
pub const APP_COOKIE: &str = "__Host-burrow_app";
/// The app credential cookie's name on plain-HTTP app origins outside `localhost`.
pub const INSECURE_APP_COOKIE: &str = "burrow_app";

/// Longest part of a refused `Origin` header quoted back in an error message.
const MAX_QUOTED_ORIGIN: usize = 200;

/// Why the dashboard's URL cannot give its origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url:?} cannot be the dashboard's URL: expected http(s)://HOST[:PORT]")]
pub struct DashboardUrlError {
    /// The URL given.
    pub url: String,
}

/// The dashboard's origin and the apps URL, with the cookies that go with them.
#[derive(Debug, Clone)]
pub struct Origins {
    /// `SCHEME://HOST[:PORT]`, lowercase, without a default port.
    dashboard: String,
    /// `HOST[:PORT]` of the dashboard, as a `Host` header names it.
    dashboard_authority: String,
    dashboard_scheme: Scheme,
    dashboard_secure: bool,
    apps: Option<AppsUrl>,
}

impl Origins {
    /// The origin of `dashboard_url` (`--public-url`; any path is ignored) and the apps URL,
    /// `None` when apps in the browser are off.
    pub fn new(dashboard_url: &str, apps: Option<AppsUrl>) -> Result<Self, DashboardUrlError> {
        let err = || DashboardUrlError {
            url: dashboard_url.to_owned(),
        };
        let (scheme, rest) = Scheme::split_url(dashboard_url).ok_or_else(err)?;
        let authority = rest
            .split(['/', '?', '#'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if authority.is_empty() || authority.contains('@') {
            return Err(err());
        }
        let (host, port) = split_host_port(&authority).ok_or_else(err)?;
        let host_ok = if let Some(v6) = host.strip_prefix('[') {
            v6.strip_suffix(']')
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
        } else {
            host.split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        };
        if !host_ok {
            return Err(err());
        }
        let authority = match port {
            Some(p) if p != scheme.default_port() => format!("{host}:{p}"),
            _ => host.to_owned(),
        };
        let dashboard_secure = scheme == Scheme::Https || is_loopback_host(host);
        Ok(Self {
            dashboard: format!("{}://{authority}", scheme.as_str()),
            dashboard_authority: authority,
            dashboard_scheme: scheme,
            dashboard_secure,
            apps,
        })
    }

    /// The dashboard's origin of a burrowd without `--public-url`: `http://LISTEN_ADDR`.
    pub fn dashboard_url_of(listen: SocketAddr) -> String {
        format!("http://{listen}")
    }

    /// The dashboard's origin, `SCHEME://HOST[:PORT]`.
    pub fn dashboard(&self) -> &str {
        &self.dashboard
    }

    /// The apps URL; `None` when apps in the browser are off.
    pub fn apps(&self) -> Option<&AppsUrl> {
        self.apps.as_ref()
    }

    /// Whether a request's `Host` (any case) is the dashboard's own.
    pub fn is_dashboard_host(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let default_port = format!(":{}", self.dashboard_scheme.default_port());
        host == self.dashboard_authority
            || host
                .strip_suffix(&default_port)
                .is_some_and(|h| h == self.dashboard_authority)
    }

    /// The name of the login cookie.
    pub fn session_cookie_name(&self) -> &'static str {
        if self.dashboard_secure {
            SESSION_COOKIE
        } else {
            INSECURE_SESSION_COOKIE
        }
    }

    /// `Set-Cookie` of a new login.
    pub fn session_cookie(&self, secret: &str) -> String {
        format!(
            "{}={secret}; Path=/;{} HttpOnly; SameSite=Strict",
            self.session_cookie_name(),
            if self.dashboard_secure {
                " Secure;"
            } else {
                ""
            }
        )
    }

    /// `Set-Cookie` that removes the login cookie.
    pub fn clear_session_cookie(&self) -> String {
        format!("{}; Max-Age=0", self.session_cookie(""))
    }

    /// The name of the app credential cookie.
    pub fn app_cookie_name(&self) -> &'static str {
        if self.apps_secure() {
            APP_COOKIE
        } else {
            INSECURE_APP_COOKIE
        }
    }

    /// `Set-Cookie` of a new app credential.
    pub fn app_cookie(&self, secret: &str) -> String {
        if self.apps_secure() {
            format!("{APP_COOKIE}={secret}; Path=/; Secure; HttpOnly; SameSite=None; Partitioned")
        } else {
            // SameSite=None needs Secure; without it the app keeps its credential only at
            // the top level.
            format!("{INSECURE_APP_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Lax")
        }
    }

    fn apps_secure(&self) -> bool {
        self.apps.as_ref().is_some_and(AppsUrl::is_secure_context)
    }

    /// The origin of `label`'s app, when apps are on.
    pub fn app_origin(&self, label: &AppLabel) -> Option<String> {
        self.apps.as_ref().map(|a| a.origin(label))
    }
}

/// Splits `host[:port]` (`[v6]:port` too); `None` when the port is not a number.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let port_at = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => i,
        _ => return Some((authority, None)),
    };
    let port = &authority[port_at + 1..];
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((&authority[..port_at], Some(port.parse().ok()?)))
}

/// Hosts browsers treat as secure contexts over plain HTTP, where they keep `Secure`
/// cookies: loopback addresses and `localhost` names.
fn is_loopback_host(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
    }
}

/// Most cookies of one name looked up per request: each costs a database query, and a
/// browser sends one or two (a partitioned and an unpartitioned one).
pub const MAX_COOKIES_OF_A_NAME: usize = 4;

/// The values of the cookies named `name` in the request's `Cookie` headers, in order (a
/// browser may send several of one name, from different partitions), at most
/// [`MAX_COOKIES_OF_A_NAME`].
pub fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n == name && !v.is_empty()).then_some(v)
        })
        .take(MAX_COOKIES_OF_A_NAME)
}

/// Why a browser request's `Origin` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRefusal {
    /// There was no `Origin` header.
    Missing,
    /// It named another origin (quoted, shortened).
    Foreign(String),
}

impl OriginRefusal {
    /// The audit log's outcome for the refusal.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Missing => "refused: no origin",
            Self::Foreign(_) => "refused: foreign origin",
        }
    }

    /// What the client is told.
    pub fn message(&self, expected: &str) -> String {
        match self {
            Self::Missing => format!(
                "this request must come from a page of {expected} (it has no Origin header)"
            ),
            Self::Foreign(got) => {
                format!("this request came from a page of {got:?}, not of {expected}")
            }
        }
    }
}

/// Checks that the request's `Origin` is `expected` (compared without case, as hosts are).
pub fn check_origin(headers: &HeaderMap, expected: &str) -> Result<(), OriginRefusal> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Err(OriginRefusal::Missing);
    };
    let origin = String::from_utf8_lossy(origin.as_bytes());
    if origin.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(OriginRefusal::Foreign(
            origin.chars().take(MAX_QUOTED_ORIGIN).collect(),
        ))
    }
}

/// Percent-encodes `s` for a URL query value (all but RFC 3986's unreserved characters),
/// as `encodeURIComponent` does, so that `decodeURIComponent` gives `s` back.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn apps(url: &str) -> Option<AppsUrl> {
        Some(AppsUrl::parse(url).expect("apps url"))
    }

    #[test]
    fn dashboard_origin_is_scheme_host_and_port_of_the_public_url() {
        let o = Origins::new("http://127.0.0.1:8080", None).expect("valid");
        assert_eq!(o.dashboard(), "http://127.0.0.1:8080");
        let o = Origins::new("HTTPS://Burrow.Example.com:443/some/path?x", None).expect("valid");
        assert_eq!(o.dashboard(), "https://burrow.example.com");
        assert!(o.is_dashboard_host("burrow.example.com"));
        assert!(o.is_dashboard_host("BURROW.example.com:443"));
        assert!(!o.is_dashboard_host("burrow.example.com:8443"));
        let o = Origins::new(
            &Origins::dashboard_url_of("[::1]:80".parse().expect("addr")),
            None,
        )
        .expect("valid");
        assert_eq!(o.dashboard(), "http://[::1]");
        for bad in [
            "",
            "127.0.0.1:8080",
            "ftp://x",
            "http://",
            "http://user@host",
            "http://host:port",
            "http://a b",
            "http://[zz]:80",
        ] {
            assert!(Origins::new(bad, None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn login_cookie_is_host_prefixed_and_secure_where_browsers_keep_it() {
        for secure in [
            "https://burrow.example.com",
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
            "http://dash.localhost:8080",
        ] {
            let o = Origins::new(secure, None).expect("valid");
            assert_eq!(
                o.session_cookie("bw_x"),
                "__Host-burrow_session=bw_x; Path=/; Secure; HttpOnly; SameSite=Strict",
                "{secure}"
            );
        }
        let o = Origins::new("http://burrow.lan:8080", None).expect("valid");
        assert_eq!(
            o.session_cookie("bw_x"),
            "burrow_session=bw_x; Path=/; HttpOnly; SameSite=Strict"
        );
        assert_eq!(
            o.clear_session_cookie(),
            "burrow_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        );
    }

    #[test]
    fn app_cookie_is_partitioned_for_embedding_where_secure_cookies_are_kept() {
        let o =
            Origins::new("http://127.0.0.1:8080", apps("http://*.localhost:8080")).expect("valid");
        assert_eq!(o.app_cookie_name(), APP_COOKIE);
        assert_eq!(
            o.app_cookie("bp_x"),
            "__Host-burrow_app=bp_x; Path=/; Secure; HttpOnly; SameSite=None; Partitioned"
        );
        let o = Origins::new("http://burrow.lan", apps("http://*.apps.lan")).expect("valid");
        assert_eq!(o.app_cookie_name(), INSECURE_APP_COOKIE);
        assert_eq!(
            o.app_cookie("bp_x"),
            "burrow_app=bp_x; Path=/; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn every_cookie_of_a_name_is_found() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-burrow_app=one;x=2"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-burrow_app=two; __Host-burrow_app="),
        );
        let values: Vec<&str> = cookie_values(&h, APP_COOKIE).collect();
        assert_eq!(values, ["one", "two"]);
        assert_eq!(cookie_values(&h, "burrow_app").count(), 0);
        // A flood of cookies costs a few lookups, not one each.
        let flood = vec!["__Host-burrow_app=x"; 100].join("; ");
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&flood).expect("header"),
        );
        assert_eq!(cookie_values(&h, APP_COOKIE).count(), MAX_COOKIES_OF_A_NAME);
    }

    #[test]
    fn origin_must_be_present_and_equal() {
        let mut h = HeaderMap::new();
        assert_eq!(
            check_origin(&h, "http://127.0.0.1:8080"),
            Err(OriginRefusal::Missing)
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        let e = check_origin(&h, "http://127.0.0.1:8080").expect_err("foreign");
        assert_eq!(e.outcome(), "refused: foreign origin");
        assert!(e.message("http://127.0.0.1:8080").contains("evil.example"));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check_origin(&h, "http://127.0.0.1:8080").is_err());
        // An origin that merely starts like the right one is another origin.
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:80800"),
        );
        assert!(check_origin(&h, "http://127.0.0.1:8080").is_err());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("HTTP://127.0.0.1:8080"),
        );
        assert_eq!(check_origin(&h, "http://127.0.0.1:8080"), Ok(()));
    }

    #[test]
    fn components_are_encoded_as_encode_uri_component_would() {
        assert_eq!(
            encode_component("/a b?x=1&y=/é#f"),
            "%2Fa%20b%3Fx%3D1%26y%3D%2F%C3%A9%23f"
        );
        assert_eq!(encode_component("AZaz09-._~"), "AZaz09-._~");
    }
}
