//! Following HTTP redirects as the Fetch standard does (section 4.4, "HTTP-redirect
//! fetch"), minus the URL handling, which the caller does with its own URL parser (the
//! browser client uses the browser's `URL`).

use http::{Method, StatusCode, header::HeaderName};

/// Most redirects followed for one request before giving up (Fetch's limit).
pub const MAX_REDIRECTS: u32 = 20;

/// What to do with a redirect (`Request.redirect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedirectMode {
    /// Follow up to [`MAX_REDIRECTS`].
    #[default]
    Follow,
    /// Fail the request.
    Error,
    /// Hand the 3xx response to the caller as it is.
    Manual,
}

impl RedirectMode {
    /// The mode named by a `RequestRedirect` string; `None` for anything else.
    pub fn from_fetch(name: &str) -> Option<Self> {
        match name {
            "follow" => Some(Self::Follow),
            "error" => Some(Self::Error),
            "manual" => Some(Self::Manual),
            _ => None,
        }
    }
}

/// How to send the request that follows a redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirected {
    /// The next request's method.
    pub method: Method,
    /// Whether the next request carries the same body; when `false`, it has none and the
    /// [`BODY_HEADERS`] must be removed.
    pub keep_body: bool,
}

/// Headers that describe a request body, dropped with it (Fetch's "request-body-header
/// names").
pub const BODY_HEADERS: [HeaderName; 4] = [
    http::header::CONTENT_TYPE,
    http::header::CONTENT_ENCODING,
    http::header::CONTENT_LANGUAGE,
    http::header::CONTENT_LOCATION,
];

/// The next request after a `status` answer to a `method` request, or `None` if `status`
/// is not a redirect status (301, 302, 303, 307, 308).
///
/// 301 and 302 turn POST into GET, 303 turns everything but GET and HEAD into GET (those
/// lose their body); 307 and 308 repeat the request as it was.
pub fn redirected(status: StatusCode, method: &Method) -> Option<Redirected> {
    let to_get = match status.as_u16() {
        301 | 302 => method == Method::POST,
        303 => method != Method::GET && method != Method::HEAD,
        307 | 308 => false,
        _ => return None,
    };
    Some(if to_get {
        Redirected {
            method: Method::GET,
            keep_body: false,
        }
    } else {
        Redirected {
            method: method.clone(),
            keep_body: true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_becomes_get_on_301_302_303() {
        for code in [301, 302, 303] {
            let r = redirected(StatusCode::from_u16(code).expect("status"), &Method::POST);
            assert_eq!(
                r,
                Some(Redirected {
                    method: Method::GET,
                    keep_body: false
                }),
                "{code}"
            );
        }
    }

    #[test]
    fn put_keeps_its_method_on_302_but_not_on_303() {
        let put = Method::PUT;
        assert_eq!(
            redirected(StatusCode::FOUND, &put).map(|r| r.method),
            Some(Method::PUT)
        );
        assert_eq!(
            redirected(StatusCode::SEE_OTHER, &put).map(|r| r.method),
            Some(Method::GET)
        );
        assert_eq!(
            redirected(StatusCode::SEE_OTHER, &Method::HEAD).map(|r| r.method),
            Some(Method::HEAD)
        );
    }

    #[test]
    fn temporary_and_permanent_redirects_repeat_the_request_with_its_body() {
        for status in [
            StatusCode::TEMPORARY_REDIRECT,
            StatusCode::PERMANENT_REDIRECT,
        ] {
            assert_eq!(
                redirected(status, &Method::POST),
                Some(Redirected {
                    method: Method::POST,
                    keep_body: true
                })
            );
        }
    }

    #[test]
    fn other_statuses_are_not_redirects() {
        for code in [200, 300, 304, 305, 306, 404] {
            let status = StatusCode::from_u16(code).expect("status");
            assert_eq!(redirected(status, &Method::GET), None, "{code}");
        }
    }

    #[test]
    fn redirect_mode_parses_the_fetch_names() {
        assert_eq!(
            RedirectMode::from_fetch("follow"),
            Some(RedirectMode::Follow)
        );
        assert_eq!(
            RedirectMode::from_fetch("manual"),
            Some(RedirectMode::Manual)
        );
        assert_eq!(RedirectMode::from_fetch("error"), Some(RedirectMode::Error));
        assert_eq!(RedirectMode::from_fetch("Follow"), None);
    }
}
