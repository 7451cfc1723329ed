//! Where an app lives in the page's URL space, and the rewriting that keeps it there.
//!
//! An app on a workspace's port `P` is shown at `/@WORKSPACE/apps/P/` on burrowd's
//! origin; the app itself sees the rest of the path (`/@dev/apps/8080/static/x.js` is
//! `/static/x.js` on port 8080). Pure functions: tested natively, used by the service
//! worker in Wasm.

/// The path of the script inserted into every HTML page the service worker serves: it
/// replaces `window.WebSocket` with the tunnelled one. A same-origin script file, not an
/// inline script, so apps whose Content-Security-Policy allows `'self'` scripts (code-server
/// does) still run it.
pub const WS_SHIM_PATH: &str = "/burrow-ws-shim.js";

/// How far into an HTML document the `<head>` tag is looked for before the script goes in
/// at the start (after any doctype) instead.
pub const HEAD_SEARCH_LIMIT: usize = 16 * 1024;

/// An app request: which workspace, which port, and the path the app sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppTarget {
    /// The workspace's name.
    pub workspace: String,
    /// The workspace port the app listens on.
    pub port: u16,
    /// Path and query as the app sees them; always starts with `/`.
    pub rest: String,
    /// Whether the URL ended at the port with no slash (`/@dev/apps/8080`): relative links
    /// would resolve outside the app, so navigations are redirected to the slash form.
    pub missing_slash: bool,
}

impl AppTarget {
    /// The scope prefix, without a trailing slash: `/@dev/apps/8080`.
    pub fn prefix(&self) -> String {
        format!("/@{}/apps/{}", self.workspace, self.port)
    }
}

/// Parses a path and query (`/@dev/apps/8080/a?b`) into its app target; `None` for paths
/// outside any app scope or with a port that is not a number in 1..=65535.
pub fn parse_app_path(path_and_query: &str) -> Option<AppTarget> {
    let after_at = path_and_query.strip_prefix("/@")?;
    let (workspace, after_ws) = after_at.split_once('/')?;
    if workspace.is_empty() {
        return None;
    }
    let after_apps = after_ws.strip_prefix("apps/")?;
    let port_end = after_apps.find(['/', '?', '#']).unwrap_or(after_apps.len());
    let port: u16 = after_apps[..port_end].parse().ok().filter(|p| *p != 0)?;
    if !after_apps[..port_end].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let tail = &after_apps[port_end..];
    let (rest, missing_slash) = if tail.starts_with('/') {
        (tail.to_owned(), false)
    } else {
        (format!("/{tail}"), true)
    };
    Some(AppTarget {
        workspace: workspace.to_owned(),
        port,
        rest,
        missing_slash,
    })
}

/// Rewrites a redirect's `Location` so the browser stays inside the app's scope.
///
/// - `/x` (absolute path) becomes `/@WS/apps/PORT/x`;
/// - `http://localhost:PORT/x`, `http://127.0.0.1:PORT/x`, and URLs on the page's own host
///   (`page_host`, which the app saw as its `Host`) become `/@WS/apps/PORT/x`, unless
///   already inside the scope;
/// - relative references (`./x`, `x`, `?q`) and other hosts are left alone.
pub fn rewrite_location(location: &str, target: &AppTarget, page_host: &str) -> String {
    let prefix = target.prefix();
    if location.starts_with('/') && !location.starts_with("//") {
        if location == prefix || location.starts_with(&format!("{prefix}/")) {
            return location.to_owned();
        }
        return format!("{prefix}{location}");
    }
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
        format!("localhost:{}", target.port),
        format!("127.0.0.1:{}", target.port),
    ];
    let is_app = app_hosts.iter().any(|h| h.eq_ignore_ascii_case(authority));
    let is_page = authority.eq_ignore_ascii_case(page_host);
    if !is_app && !is_page {
        return location.to_owned();
    }
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    if is_page && (path == prefix || path.starts_with(&format!("{prefix}/"))) {
        return path;
    }
    format!("{prefix}{path}")
}

/// Rewrites a `Set-Cookie`-style `Path` so a cookie the app sets for `/x` applies to the
/// page's `/@WS/apps/PORT/x`.
pub fn scoped_cookie_path(path: Option<&str>, target: &AppTarget) -> String {
    let path = path.filter(|p| p.starts_with('/')).unwrap_or("/");
    format!("{}{}", target.prefix(), path)
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

    fn target(rest: &str) -> AppTarget {
        parse_app_path(&format!("/@dev/apps/8080{rest}")).expect("an app path")
    }

    #[test]
    fn app_paths_name_workspace_port_and_the_path_the_app_sees() {
        let t = target("/static/x.js?v=1");
        assert_eq!(t.workspace, "dev");
        assert_eq!(t.port, 8080);
        assert_eq!(t.rest, "/static/x.js?v=1");
        assert!(!t.missing_slash);
        let bare = target("");
        assert_eq!(bare.rest, "/");
        assert!(bare.missing_slash);
        assert_eq!(target("?a=b").rest, "/?a=b");
    }

    #[test]
    fn paths_outside_an_app_scope_are_not_app_paths() {
        for p in [
            "/",
            "/api/v1/workspaces",
            "/@dev/apps/",
            "/@dev/apps/0/",
            "/@dev/apps/65536/",
            "/@dev/apps/+80/",
            "/@dev/other/80/",
            "/@/apps/80/",
        ] {
            assert_eq!(parse_app_path(p), None, "{p}");
        }
    }

    #[test]
    fn redirects_to_the_app_or_page_host_stay_in_the_scope() {
        let t = target("/");
        let page = "127.0.0.1:9000";
        assert_eq!(
            rewrite_location("/login", &t, page),
            "/@dev/apps/8080/login"
        );
        assert_eq!(
            rewrite_location("http://localhost:8080/a?b", &t, page),
            "/@dev/apps/8080/a?b"
        );
        assert_eq!(
            rewrite_location("http://127.0.0.1:9000/x", &t, page),
            "/@dev/apps/8080/x"
        );
        assert_eq!(
            rewrite_location("http://127.0.0.1:9000/@dev/apps/8080/x", &t, page),
            "/@dev/apps/8080/x"
        );
        assert_eq!(
            rewrite_location("/@dev/apps/8080/y", &t, page),
            "/@dev/apps/8080/y"
        );
        assert_eq!(
            rewrite_location("http://localhost:8080", &t, page),
            "/@dev/apps/8080/"
        );
    }

    #[test]
    fn relative_and_foreign_redirects_are_left_alone() {
        let t = target("/");
        let page = "127.0.0.1:9000";
        for l in [
            "./?folder=/w",
            "login",
            "?q",
            "https://example.com/x",
            "//example.com/x",
        ] {
            assert_eq!(rewrite_location(l, &t, page), l);
        }
    }

    #[test]
    fn cookie_paths_move_under_the_scope() {
        let t = target("/");
        assert_eq!(scoped_cookie_path(Some("/"), &t), "/@dev/apps/8080/");
        assert_eq!(scoped_cookie_path(Some("/a"), &t), "/@dev/apps/8080/a");
        assert_eq!(scoped_cookie_path(None, &t), "/@dev/apps/8080/");
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
