//! What the service worker leaves to burrowd, and the rewriting that keeps an app on its
//! own origin.
//!
//! Each app has an origin of its own (`http://8080--dev--alice.apps.example`), and the app
//! sees the page's path and query as they are. Only Burrow's reserved prefix
//! ([`RESERVED_PREFIX`]) and top-level documents (whose answer is Burrow's shell page, the
//! window holding the app's tunnel) go to burrowd. Pure functions: tested natively, used by
//! the service worker in Wasm.

use burrow_proto::app_origin::AppLabel;
pub use burrow_proto::app_origin::RESERVED_PREFIX;

/// The path of the script inserted into every HTML document the service worker serves: it
/// replaces `window.WebSocket` with the tunnelled one. A same-origin script file, not an
/// inline script, so apps whose Content-Security-Policy allows `'self'` scripts (code-server
/// does) still run it.
pub const WS_SHIM_PATH: &str = "/.burrow/shim.js";

/// How far into an HTML document the `<head>` tag is looked for before the script goes in
/// at the start (after any doctype) instead.
pub const HEAD_SEARCH_LIMIT: usize = 16 * 1024;

/// Whether a request for `path` is the app's (the worker forwards it through the tunnel)
/// rather than Burrow's. `/.burrow` itself and everything under it is Burrow's.
pub fn is_app_path(path: &str) -> bool {
    !(path == RESERVED_PREFIX.trim_end_matches('/') || path.starts_with(RESERVED_PREFIX))
}

/// The workspace port of the app whose origin has `hostname`: its first label's
/// (`8080--dev--alice.apps.example` is port 8080), by `burrow_proto::app_origin`'s rule.
/// `None` for any other host.
pub fn app_port(hostname: &str) -> Option<u16> {
    let label = hostname.split('.').next()?;
    AppLabel::parse(label).ok().map(|l| l.port())
}

/// Rewrites a redirect's `Location` so the browser stays on the app's origin: a URL the app
/// built from its own listening address (`http://localhost:PORT/x`, `http://127.0.0.1:PORT/x`)
/// becomes the path `/x`. Paths, relative references, the page's own URLs and other hosts
/// are left alone (the app saw the page's host as its `Host`, so its absolute URLs name it).
pub fn rewrite_location(location: &str, app_port: u16) -> String {
    let Some((scheme, after_scheme)) = location.split_once("://") else {
        return location.to_owned();
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return location.to_owned();
    }
    let authority_end = after_scheme
        .find(['/', '?', '#'])
        .unwrap_or(after_scheme.len());
    let authority = &after_scheme[..authority_end];
    let path = &after_scheme[authority_end..];
    let app_hosts = [
        format!("localhost:{app_port}"),
        format!("127.0.0.1:{app_port}"),
    ];
    if !app_hosts.iter().any(|h| h.eq_ignore_ascii_case(authority)) {
        return location.to_owned();
    }
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

/// Inserts the WebSocket shim's `<script>` into a streamed HTML document: right after the
/// `<head>` tag when it comes within [`HEAD_SEARCH_LIMIT`] bytes, else after a leading
/// doctype, else at the very start. Before the doctype would put the page in quirks mode.
///
/// Feed chunks with [`HtmlInjector::push`]; each call returns what may be passed on now.
/// Bytes are held back only until the insertion point is found.
#[derive(Debug)]
pub struct HtmlInjector {
    held: Vec<u8>,
    done: bool,
    tag: Vec<u8>,
}

impl HtmlInjector {
    /// An injector inserting a script tag that loads `script_src`.
    pub fn new(script_src: &str) -> Self {
        Self {
            held: Vec::new(),
            done: false,
            tag: format!("<script src=\"{script_src}\"></script>").into_bytes(),
        }
    }

    /// Takes the next chunk of the document; returns the bytes to pass on (possibly none).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.done {
            return chunk.to_vec();
        }
        self.held.extend_from_slice(chunk);
        if let Some(at) = find_head_end(&self.held) {
            return self.insert_at(at);
        }
        if self.held.len() >= HEAD_SEARCH_LIMIT {
            let at = doctype_end(&self.held).unwrap_or(0);
            return self.insert_at(at);
        }
        Vec::new()
    }

    /// The end of the document: whatever is still held, with the script inserted.
    pub fn finish(&mut self) -> Vec<u8> {
        if self.done {
            return Vec::new();
        }
        let at = find_head_end(&self.held)
            .or_else(|| doctype_end(&self.held))
            .unwrap_or(0);
        self.insert_at(at)
    }

    fn insert_at(&mut self, at: usize) -> Vec<u8> {
        self.done = true;
        let held = std::mem::take(&mut self.held);
        let mut out = Vec::with_capacity(held.len() + self.tag.len());
        out.extend_from_slice(&held[..at]);
        out.extend_from_slice(&self.tag);
        out.extend_from_slice(&held[at..]);
        out
    }
}

/// The index just past the `>` of the first `<head>` or `<head attr...>` tag.
fn find_head_end(html: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(pos) = find_ci(&html[from..], b"<head") {
        let start = from + pos;
        let after = start + 5;
        match html.get(after) {
            // `<header>` and friends are not `<head>`.
            Some(b'>') => return Some(after + 1),
            Some(b' ' | b'\t' | b'\n' | b'\r' | b'/') => {
                return html[after..]
                    .iter()
                    .position(|b| *b == b'>')
                    .map(|p| after + p + 1);
            }
            Some(_) => from = after,
            None => return None,
        }
    }
    None
}

/// The index just past a doctype at the start of the document (after a BOM and blanks).
fn doctype_end(html: &[u8]) -> Option<usize> {
    let mut i = if html.starts_with(&[0xEF, 0xBB, 0xBF]) {
        3
    } else {
        0
    };
    while html.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    if find_ci(&html[i..], b"<!doctype") != Some(0) {
        return None;
    }
    html[i..].iter().position(|b| *b == b'>').map(|p| i + p + 1)
}

fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burrows_reserved_prefix_is_not_the_apps() {
        for p in [
            "/.burrow",
            "/.burrow/",
            "/.burrow/sw.js",
            "/.burrow/pkg/x.wasm",
        ] {
            assert!(!is_app_path(p), "{p}");
        }
        for p in [
            "/",
            "/.burrowed",
            "/a/.burrow/x",
            "/static/x.js",
            "/.well-known/x",
        ] {
            assert!(is_app_path(p), "{p}");
        }
    }

    #[test]
    fn the_apps_port_is_the_first_part_of_its_label() {
        assert_eq!(app_port("8080--dev--alice.localhost"), Some(8080));
        assert_eq!(app_port("22--w--u.apps.example.com"), Some(22));
        for h in [
            "localhost",
            "127.0.0.1",
            "0--dev--a.x",
            "+80--d--a.x",
            "99999--d--a.x",
            "dev--8080.x",
        ] {
            assert_eq!(app_port(h), None, "{h}");
        }
    }

    #[test]
    fn redirects_to_the_apps_own_address_stay_on_its_origin() {
        assert_eq!(rewrite_location("http://localhost:8080/a?b", 8080), "/a?b");
        assert_eq!(rewrite_location("http://127.0.0.1:8080/x", 8080), "/x");
        assert_eq!(rewrite_location("HTTP://LOCALHOST:8080", 8080), "/");
        assert_eq!(rewrite_location("http://localhost:8080?q", 8080), "/?q");
    }

    #[test]
    fn paths_relative_and_foreign_redirects_are_left_alone() {
        for l in [
            "/login",
            "./?folder=/w",
            "login",
            "?q",
            "https://example.com/x",
            "//example.com/x",
            "http://localhost:9090/other-port",
            "http://8080--dev--alice.localhost:9000/x",
        ] {
            assert_eq!(rewrite_location(l, 8080), l);
        }
    }

    fn inject(chunks: &[&str]) -> String {
        let mut inj = HtmlInjector::new("/s.js");
        let mut out = Vec::new();
        for c in chunks {
            out.extend(inj.push(c.as_bytes()));
        }
        out.extend(inj.finish());
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn the_script_goes_right_after_the_head_tag_even_across_chunks() {
        assert_eq!(
            inject(&["<!DOCTYPE html><html><he", "ad lang=x><title>t</title>"]),
            "<!DOCTYPE html><html><head lang=x><script src=\"/s.js\"></script><title>t</title>"
        );
        assert_eq!(
            inject(&["<HTML><HEAD>", "<script>1</script>"]),
            "<HTML><HEAD><script src=\"/s.js\"></script><script>1</script>"
        );
    }

    #[test]
    fn header_elements_are_not_mistaken_for_head() {
        assert_eq!(
            inject(&["<!doctype html><header>x</header>"]),
            "<!doctype html><script src=\"/s.js\"></script><header>x</header>"
        );
    }

    #[test]
    fn without_head_the_script_goes_after_the_doctype_or_first() {
        assert_eq!(inject(&["<p>hi"]), "<script src=\"/s.js\"></script><p>hi");
        let long = format!("<!doctype html>{}", "x".repeat(HEAD_SEARCH_LIMIT));
        let out = inject(&[&long, "<head>"]);
        assert!(out.starts_with("<!doctype html><script src=\"/s.js\"></script>xx"));
        assert!(out.ends_with("<head>"));
        assert_eq!(out.matches("<script").count(), 1);
    }

    #[test]
    fn nothing_is_held_back_after_the_insertion() {
        let mut inj = HtmlInjector::new("/s.js");
        assert!(!inj.push(b"<head>").is_empty());
        assert_eq!(inj.push(b"rest"), b"rest");
        assert!(inj.finish().is_empty());
    }
}
