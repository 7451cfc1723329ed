//! App origins: each workspace app opens in the browser on an origin of its own.
//!
//! An app is a workspace port. In the browser it is served (by Burrow's service worker,
//! through the user's tunnel) on `SCHEME://LABEL.SUFFIX[:PORT]`, where the apps URL given
//! to burrowd (`--apps-url http://*.localhost:8080`, [`AppsUrl`]) fixes the scheme, the
//! domain suffix and the port, and the [`AppLabel`] names the app:
//!
//! ```text
//! PORT--WORKSPACE--USER          e.g. 8080--dev--alice.localhost:8080
//! ```
//!
//! The browser's same-origin policy then keeps apps apart from each other and from the
//! dashboard: an app's scripts cannot read the dashboard's cookies or storage, nor another
//! app's, and the credential burrowd gives an app is good for that one port of that one
//! workspace.
//!
//! # Reaching an app
//!
//! 1. The dashboard asks burrowd to launch the app ([`launch_path`], a [`LaunchRequest`]
//!    body) and gets a [`Launch`]: a URL on the app's origin carrying a one-time code.
//! 2. The browser opens that URL ([`AUTH_PATH`]); burrowd spends the code, sets the app's
//!    credential cookie (HttpOnly, on the app's origin only) and redirects to the app's
//!    path, or to [`SHELL_PATH`] when the app is embedded in the dashboard.
//! 3. The app's page asks for tunnel sessions at [`SESSION_PATH`] with that cookie; each
//!    grant's signaling WebSocket is at [`signal_path`]. The agent serves such a session's
//!    tunnel only for the app's port.
//!
//! Everything of Burrow's on an app origin lives under [`RESERVED_PREFIX`]; every other path
//! belongs to the app.
//!
//! # Security considerations
//!
//! - A label must be a DNS label and must parse back to the same app, exactly: two
//!   spellings of one app would be two origins, each with its own cookies and storage, and a
//!   sloppy parser could let one app's host stand for another. [`AppLabel::parse`] therefore
//!   accepts only what [`AppLabel`]'s `Display` writes.
//! - `--` separates the parts, so names may not contain it; names are lowercase because
//!   host names are compared without case, and a label is at most 63 bytes.
//! - A deep link ([`AppPath`]) ends up in a `Location` header on the app's origin: it must
//!   stay a path on that origin (no `//host`, no `\`), and stay out of [`RESERVED_PREFIX`].

#![deny(missing_docs)]

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest app label: a DNS label is at most 63 bytes (RFC 1035 section 2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// Separator of a label's parts; names may not contain it.
const SEPARATOR: &str = "--";

/// Where Burrow's own files and endpoints live on an app origin.
pub const RESERVED_PREFIX: &str = "/.burrow/";

/// On an app origin: redeems a launch's one-time code (`?code=`), sets the app credential.
pub const AUTH_PATH: &str = "/.burrow/auth";

/// On an app origin: grants a tunnel session for the app (`POST`, a
/// [`crate::signal::SessionRequest`] body, the app credential cookie).
pub const SESSION_PATH: &str = "/.burrow/session";

/// On an app origin: the page that hosts an app, at the top level or embedded in the
/// dashboard (`?next=` the app's path).
pub const SHELL_PATH: &str = "/.burrow/shell.html";

/// On the dashboard origin: the page an app origin sends a browser to when it has no
/// credential (`?app=LABEL&next=PATH`).
pub const AUTHORIZE_PATH: &str = "/apps/authorize";

/// Longest deep link a launch may carry, in bytes.
pub const MAX_APP_PATH_LEN: usize = 2048;

/// On an app origin: the signaling WebSocket of a session granted at [`SESSION_PATH`].
pub fn signal_path(session_id: &str) -> String {
    format!("{RESERVED_PREFIX}signal/{session_id}")
}

/// On the dashboard origin: the endpoint that launches `workspace`'s app on `port`.
pub fn launch_path(workspace: &str, port: u16) -> String {
    format!("/api/v1/workspaces/{workspace}/apps/{port}/launch")
}

/// Whether `name` can be part of an app label: lowercase ASCII letters, digits and single
/// `-`, neither first nor last, and not empty.
pub fn is_label_safe(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains(SEPARATOR)
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Which name of a label is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// The workspace's name.
    Workspace,
    /// The user's name.
    User,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Workspace => "workspace",
            Self::User => "user",
        })
    }
}

/// Why an app label cannot be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppLabelError {
    /// A name has characters a label may not have.
    #[error(
        "{kind} name {name:?} cannot name a browser origin: use lowercase letters, digits and -"
    )]
    UnsafeName {
        /// Which name.
        kind: NameKind,
        /// The name.
        name: String,
    },
    /// Port 0 is no app (it is the agent's speed test).
    #[error("port 0 is not an app")]
    PortZero,
    /// The label would be longer than a DNS label may be.
    #[error(
        "the app's origin label {label:?} is {} bytes, more than the {MAX_LABEL_LEN} a host name label may have: use shorter workspace or user names",
        label.len()
    )]
    TooLong {
        /// The label that was too long.
        label: String,
    },
    /// The text is not `PORT--WORKSPACE--USER` as [`AppLabel`] writes it.
    #[error("not an app label (PORT--WORKSPACE--USER)")]
    Malformed,
}

/// The name of one app's origin: port, workspace and user, written `PORT--WORKSPACE--USER`.
///
/// Only valid labels exist: build one with [`AppLabel::new`] or [`AppLabel::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AppLabel {
    port: u16,
    workspace: String,
    user: String,
}

impl AppLabel {
    /// The label of `user`'s `workspace` app on `port`, if those names can form one.
    pub fn new(port: u16, workspace: &str, user: &str) -> Result<Self, AppLabelError> {
        if port == 0 {
            return Err(AppLabelError::PortZero);
        }
        for (kind, name) in [(NameKind::Workspace, workspace), (NameKind::User, user)] {
            if !is_label_safe(name) {
                return Err(AppLabelError::UnsafeName {
                    kind,
                    name: name.to_owned(),
                });
            }
        }
        let label = Self {
            port,
            workspace: workspace.to_owned(),
            user: user.to_owned(),
        };
        let len = label.to_string().len();
        if len > MAX_LABEL_LEN {
            return Err(AppLabelError::TooLong {
                label: label.to_string(),
            });
        }
        Ok(label)
    }

    /// Reads a label back: exactly three `--`-separated parts, a port in 1..=65535 written
    /// without leading zeros, and label-safe names. Anything else is
    /// [`AppLabelError::Malformed`] (or the error [`AppLabel::new`] gives), so that one app
    /// has one label.
    pub fn parse(label: &str) -> Result<Self, AppLabelError> {
        if label.len() > MAX_LABEL_LEN {
            return Err(AppLabelError::Malformed);
        }
        let mut parts = label.split(SEPARATOR);
        let (Some(port), Some(workspace), Some(user), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AppLabelError::Malformed);
        };
        let canonical_port =
            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !port.starts_with('0');
        let port: u16 = match port.parse() {
            Ok(p) if canonical_port => p,
            _ => return Err(AppLabelError::Malformed),
        };
        // A name ending in `-` would leave a `---` that split as if the `-` began the next
        // part; `new` refuses such names, and so the round trip below stays exact.
        let parsed = Self::new(port, workspace, user).map_err(|_| AppLabelError::Malformed)?;
        if parsed.to_string() != label {
            return Err(AppLabelError::Malformed);
        }
        Ok(parsed)
    }

    /// The workspace port the app is.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The workspace's name.
    pub fn workspace(&self) -> &str {
        &self.workspace
    }

    /// The name of the user whose app this is.
    pub fn user(&self) -> &str {
        &self.user
    }
}

impl fmt::Display for AppLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{SEPARATOR}{}{SEPARATOR}{}",
            self.port, self.workspace, self.user
        )
    }
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// The scheme of an `http://` or `https://` URL (in any case) and what follows `://`.
    pub fn split_url(url: &str) -> Option<(Self, &str)> {
        let (scheme, rest) = url.split_once("://")?;
        if scheme.eq_ignore_ascii_case("http") {
            Some((Self::Http, rest))
        } else if scheme.eq_ignore_ascii_case("https") {
            Some((Self::Https, rest))
        } else {
            None
        }
    }

    /// The scheme as it is written in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

/// Why an apps URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppsUrlError {
    /// Not `http://*.DOMAIN[:PORT]` or `https://*.DOMAIN[:PORT]`.
    #[error(
        "{url:?} is not an apps URL: expected http(s)://*.DOMAIN[:PORT], e.g. http://*.localhost:8080"
    )]
    Shape {
        /// The text given.
        url: String,
    },
    /// The domain after `*.` is not a host name.
    #[error("{domain:?} is not a domain name (letters, digits and - in dot-separated labels)")]
    Domain {
        /// The domain given.
        domain: String,
    },
    /// The port is not a number in 1..=65535.
    #[error("{port:?} is not a TCP port")]
    Port {
        /// The port given.
        port: String,
    },
}

/// Longest domain suffix accepted: a host name is at most 253 bytes, and the app's label
/// and its dot come first.
const MAX_SUFFIX_LEN: usize = 253 - MAX_LABEL_LEN - 1;

/// The wildcard URL apps are served under, such as `http://*.localhost:8080` or
/// `https://*.apps.example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppsUrl {
    scheme: Scheme,
    suffix: String,
    /// `None` for the scheme's default port.
    port: Option<u16>,
}

impl AppsUrl {
    /// Parses `SCHEME://*.DOMAIN[:PORT]` (a trailing `/` is allowed). The domain is
    /// lowercased; a port that is the scheme's default is dropped, as browsers drop it from
    /// origins.
    pub fn parse(url: &str) -> Result<Self, AppsUrlError> {
        let shape = || AppsUrlError::Shape {
            url: url.to_owned(),
        };
        let (scheme, rest) = Scheme::split_url(url).ok_or_else(shape)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let host_port = rest.strip_prefix("*.").ok_or_else(shape)?;
        if host_port.contains(['/', '?', '#', '@', '*', '[', ']']) {
            return Err(shape());
        }
        let (domain, port) = match host_port.rsplit_once(':') {
            Some((domain, port)) => (domain, Some(port)),
            None => (host_port, None),
        };
        let suffix = domain.to_ascii_lowercase();
        let domain_ok = !suffix.is_empty()
            && suffix.len() <= MAX_SUFFIX_LEN
            && suffix.split('.').all(is_dns_label);
        if !domain_ok {
            return Err(AppsUrlError::Domain {
                domain: domain.to_owned(),
            });
        }
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => {
                    (n != scheme.default_port()).then_some(n)
                }
                _ => {
                    return Err(AppsUrlError::Port { port: p.to_owned() });
                }
            },
        };
        Ok(Self {
            scheme,
            suffix,
            port,
        })
    }

    /// The scheme of every app origin.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The domain every app host ends with (after the label and a dot), lowercase.
    pub fn suffix(&self) -> &str {
        &self.suffix
    }

    /// The port of every app origin; `None` when it is the scheme's default.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Whether browsers treat app origins as secure contexts, where they keep `Secure`
    /// cookies: HTTPS, or hosts under `localhost`, which browsers resolve to loopback
    /// themselves.
    pub fn is_secure_context(&self) -> bool {
        self.scheme == Scheme::Https
            || self.suffix == "localhost"
            || self.suffix.ends_with(".localhost")
    }

    /// The origin of `label`'s app: `SCHEME://LABEL.SUFFIX[:PORT]`.
    pub fn origin(&self, label: &AppLabel) -> String {
        match self.port {
            Some(port) => format!("{}://{label}.{}:{port}", self.scheme.as_str(), self.suffix),
            None => format!("{}://{label}.{}", self.scheme.as_str(), self.suffix),
        }
    }

    /// What a request's `Host` (`HOST[:PORT]`, any case) is to the apps: `None` when it is
    /// not under the apps domain on the apps port, `Some(Ok(label))` for an app's host, and
    /// `Some(Err(_))` for a host under the apps domain whose first label names no app.
    pub fn match_host(&self, host: &str) -> Option<Result<AppLabel, AppLabelError>> {
        let host = host.to_ascii_lowercase();
        let (name, port) = match host.rsplit_once(':') {
            // `[::1]:8080` and other IP literals end in `]`, and are never app hosts.
            Some((name, port)) if !port.contains(']') => {
                let port = port.parse::<u16>().ok()?;
                (name, port)
            }
            _ => (host.as_str(), self.scheme.default_port()),
        };
        if port != self.port.unwrap_or(self.scheme.default_port()) {
            return None;
        }
        let label = name.strip_suffix(self.suffix.as_str())?.strip_suffix('.')?;
        Some(AppLabel::parse(label))
    }
}

impl fmt::Display for AppsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://*.{}", self.scheme.as_str(), self.suffix)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// Whether `s` is one label of a host name (RFC 1123): 1 to 63 letters, digits and `-`,
/// not starting or ending with `-`.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL_LEN
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Why a deep link cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppPathError {
    /// It does not start with `/`, or it starts with `//` or `/\`, which browsers read as
    /// another host.
    #[error("the path must start with a single /")]
    NotAPath,
    /// It is inside the prefix reserved for Burrow.
    #[error("the path may not be under /.burrow")]
    Reserved,
    /// It has a `.` or `..` segment, which browsers resolve before requesting.
    #[error("the path may not have . or .. segments")]
    DotSegment,
    /// Longer than [`MAX_APP_PATH_LEN`].
    #[error("the path is longer than {MAX_APP_PATH_LEN} bytes")]
    TooLong,
    /// It has a control character, a space, a backslash or a non-ASCII byte, which a URL
    /// carries percent-encoded.
    #[error("the path has characters that must be percent-encoded")]
    BadCharacter,
}

/// A deep link into an app: a path with an optional query (and fragment), as the browser
/// serializes it (percent-encoded, printable ASCII).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPath(String);

impl AppPath {
    /// The app's root, `/`.
    pub fn root() -> Self {
        Self("/".to_owned())
    }

    /// Checks a deep link; see [`AppPathError`] for what is refused.
    pub fn parse(path: &str) -> Result<Self, AppPathError> {
        if path.len() > MAX_APP_PATH_LEN {
            return Err(AppPathError::TooLong);
        }
        if !path.bytes().all(|b| b.is_ascii_graphic()) || path.contains('\\') {
            return Err(AppPathError::BadCharacter);
        }
        if !path.starts_with('/') || path.starts_with("//") {
            return Err(AppPathError::NotAPath);
        }
        let end = path.find(['?', '#']).unwrap_or(path.len());
        let only_path = &path[..end];
        if only_path == "/.burrow" || only_path.starts_with(RESERVED_PREFIX) {
            return Err(AppPathError::Reserved);
        }
        let dot_segment = only_path.split('/').any(|segment| {
            let s = segment.to_ascii_lowercase().replace("%2e", ".");
            s == "." || s == ".."
        });
        if dot_segment {
            return Err(AppPathError::DotSegment);
        }
        Ok(Self(path.to_owned()))
    }

    /// The path as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Body of a launch request ([`launch_path`]); an empty body means the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchRequest {
    /// Where in the app to land (an [`AppPath`]); `/` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The app is shown inside the dashboard: land on [`SHELL_PATH`], not on the app's page.
    #[serde(default)]
    pub embedded: bool,
}

/// burrowd's answer to a launch request.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// Open this URL (once, within a minute) to reach the app: [`AUTH_PATH`] on the app's
    /// origin with a one-time code.
    pub url: String,
    /// The app's origin.
    pub origin: String,
}

impl fmt::Debug for Launch {
    // The URL carries a one-time code, a bearer secret until it is spent.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Launch")
            .field("url", &"<redacted>")
            .field("origin", &self.origin)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(port: u16, ws: &str, user: &str) -> AppLabel {
        AppLabel::new(port, ws, user).expect("valid label")
    }

    #[test]
    fn label_is_port_workspace_user_and_parses_back() {
        let l = label(8080, "dev", "alice");
        assert_eq!(l.to_string(), "8080--dev--alice");
        assert_eq!(AppLabel::parse("8080--dev--alice"), Ok(l.clone()));
        assert_eq!((l.port(), l.workspace(), l.user()), (8080, "dev", "alice"));
        let hyphens = label(1, "my-box-2", "a-b");
        assert_eq!(AppLabel::parse(&hyphens.to_string()), Ok(hyphens));
    }

    #[test]
    fn unsafe_names_are_refused_with_a_clear_message() {
        let e = AppLabel::new(8080, "Dev_1", "alice").expect_err("uppercase and _");
        assert_eq!(
            e.to_string(),
            "workspace name \"Dev_1\" cannot name a browser origin: use lowercase letters, digits and -"
        );
        for bad in ["", "-a", "a-", "a--b", "a.b", "a b", "é", "a_b", "A"] {
            assert!(!is_label_safe(bad), "{bad:?}");
            assert!(matches!(
                AppLabel::new(1, "ws", bad),
                Err(AppLabelError::UnsafeName {
                    kind: NameKind::User,
                    ..
                })
            ));
        }
        assert_eq!(AppLabel::new(0, "ws", "u"), Err(AppLabelError::PortZero));
    }

    #[test]
    fn labels_longer_than_63_bytes_are_refused() {
        // 5 + 2 + 27 + 2 + 27 = 63: the longest possible.
        let ws = "w".repeat(27);
        let user = "u".repeat(27);
        assert_eq!(label(65535, &ws, &user).to_string().len(), 63);
        let e = AppLabel::new(65535, &format!("{ws}w"), &user).expect_err("64 bytes");
        assert!(matches!(e, AppLabelError::TooLong { .. }));
        assert!(e.to_string().contains("64 bytes"), "{e}");
        assert_eq!(
            AppLabel::parse(&format!("65535--{ws}w--{user}")),
            Err(AppLabelError::Malformed)
        );
    }

    #[test]
    fn parse_accepts_only_the_one_spelling_of_a_label() {
        for bad in [
            "",
            "8080",
            "8080--dev",
            "8080--dev--alice--x",
            "8080----alice",
            "8080--dev--",
            "--dev--alice",
            "08080--dev--alice",
            "+8080--dev--alice",
            "0--dev--alice",
            "65536--dev--alice",
            "99999999999999999999--dev--alice",
            "8080--Dev--alice",
            "8080--dev---alice",
            "8080---dev--alice",
            "8080--de.v--alice",
            "8080--dev--alice.",
            " 8080--dev--alice",
            "x8080--dev--alice",
        ] {
            assert_eq!(
                AppLabel::parse(bad),
                Err(AppLabelError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn apps_url_parses_scheme_domain_and_port() {
        let u = AppsUrl::parse("http://*.localhost:8080").expect("valid");
        assert_eq!(
            (u.scheme(), u.suffix(), u.port()),
            (Scheme::Http, "localhost", Some(8080))
        );
        assert_eq!(u.to_string(), "http://*.localhost:8080");
        assert!(u.is_secure_context());
        assert_eq!(
            u.origin(&label(8080, "dev", "alice")),
            "http://8080--dev--alice.localhost:8080"
        );

        let u = AppsUrl::parse("HTTPS://*.Apps.Example.com/").expect("valid");
        assert_eq!(
            (u.scheme(), u.suffix(), u.port()),
            (Scheme::Https, "apps.example.com", None)
        );
        assert_eq!(u.to_string(), "https://*.apps.example.com");
        assert_eq!(
            u.origin(&label(22, "b", "c")),
            "https://22--b--c.apps.example.com"
        );
        // The default port is not part of an origin.
        let u = AppsUrl::parse("https://*.apps.example.com:443").expect("valid");
        assert_eq!(u.port(), None);
        assert!(
            !AppsUrl::parse("http://*.apps.lan:8080")
                .expect("valid")
                .is_secure_context()
        );
    }

    #[test]
    fn apps_url_refuses_what_is_not_a_wildcard_origin() {
        for bad in [
            "",
            "*.localhost",
            "ftp://*.localhost",
            "http://localhost:8080",
            "http://*localhost",
            "http://*.",
            "http://*.localhost:0",
            "http://*.localhost:65536",
            "http://*.localhost:+80",
            "http://*.localhost:",
            "http://*.localhost/apps",
            "http://*.*.localhost",
            "http://user@*.localhost",
            "http://*.[::1]:8080",
            "http://*.-x.example",
            "http://*.a..b",
            "http://*.a_b.example",
        ] {
            assert!(AppsUrl::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts_match_an_app_only_on_the_apps_domain_and_port() {
        let u = AppsUrl::parse("http://*.localhost:8080").expect("valid");
        let alice = label(8080, "dev", "alice");
        assert_eq!(
            u.match_host("8080--dev--alice.localhost:8080"),
            Some(Ok(alice.clone()))
        );
        assert_eq!(
            u.match_host("8080--DEV--Alice.LOCALHOST:8080"),
            Some(Ok(alice))
        );
        for other in [
            "127.0.0.1:8080",
            "localhost:8080",
            "8080--dev--alice.localhost",
            "8080--dev--alice.localhost:8081",
            "8080--dev--alice.localhost.:8080",
            "8080--dev--alice.notlocalhost:8080",
            "8080--dev--alicelocalhost:8080",
            "[::1]:8080",
            "8080--dev--alice.localhost:x",
            "",
        ] {
            assert_eq!(u.match_host(other), None, "{other:?}");
        }
        for not_an_app in [
            "foo.localhost:8080",
            "x.8080--dev--alice.localhost:8080",
            "8080--Dev_1--alice.localhost:8080",
            ".localhost:8080",
        ] {
            assert!(
                matches!(u.match_host(not_an_app), Some(Err(_))),
                "{not_an_app:?}"
            );
        }
        // Without a port in the apps URL, the scheme's default is the one to match.
        let u = AppsUrl::parse("https://*.apps.example.com").expect("valid");
        assert!(matches!(
            u.match_host("1--a--b.apps.example.com"),
            Some(Ok(_))
        ));
        assert!(matches!(
            u.match_host("1--a--b.apps.example.com:443"),
            Some(Ok(_))
        ));
        assert_eq!(u.match_host("1--a--b.apps.example.com:8443"), None);
    }

    #[test]
    fn deep_links_stay_on_the_app_and_out_of_the_reserved_prefix() {
        for good in [
            "/",
            "/deep/link?q=1",
            "/a/b.c/?x=/.burrow/y#frag",
            "/.burrowing",
            "/%2F%2Fevil",
            "/a/...",
        ] {
            assert_eq!(
                AppPath::parse(good).map(|p| p.to_string()),
                Ok(good.to_owned()),
                "{good:?}"
            );
        }
        let cases = [
            ("", AppPathError::NotAPath),
            ("deep", AppPathError::NotAPath),
            ("//evil.example/", AppPathError::NotAPath),
            ("https://evil.example/", AppPathError::NotAPath),
            ("/\\evil.example", AppPathError::BadCharacter),
            ("/.burrow", AppPathError::Reserved),
            ("/.burrow/auth?code=x", AppPathError::Reserved),
            ("/.burrow?x", AppPathError::Reserved),
            ("/./.burrow/auth", AppPathError::DotSegment),
            ("/a/../.burrow/auth", AppPathError::DotSegment),
            ("/a/%2E%2e/b", AppPathError::DotSegment),
            ("/a b", AppPathError::BadCharacter),
            ("/a\r\nSet-Cookie: x=y", AppPathError::BadCharacter),
            ("/a\u{7f}", AppPathError::BadCharacter),
            ("/é", AppPathError::BadCharacter),
        ];
        for (bad, why) in cases {
            assert_eq!(AppPath::parse(bad), Err(why), "{bad:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_APP_PATH_LEN));
        assert_eq!(AppPath::parse(&long), Err(AppPathError::TooLong));
        assert!(AppPath::parse(&long[..MAX_APP_PATH_LEN]).is_ok());
        assert_eq!(AppPath::root().as_str(), "/");
    }

    #[test]
    fn launch_request_defaults_and_launch_debug_hides_the_code() {
        let r: LaunchRequest = serde_json::from_str("{}").expect("json");
        assert_eq!(r, LaunchRequest::default());
        let r: LaunchRequest =
            serde_json::from_str(r#"{"path":"/x","embedded":true}"#).expect("json");
        assert_eq!(r.path.as_deref(), Some("/x"));
        assert!(r.embedded);
        let l = Launch {
            url: "http://1--a--b.localhost/.burrow/auth?code=s3cret".into(),
            origin: "http://1--a--b.localhost".into(),
        };
        assert!(!format!("{l:?}").contains("s3cret"));
    }

    #[test]
    fn paths_of_the_flow() {
        assert_eq!(signal_path("abc"), "/.burrow/signal/abc");
        assert_eq!(
            launch_path("dev", 8080),
            "/api/v1/workspaces/dev/apps/8080/launch"
        );
        assert!(AUTH_PATH.starts_with(RESERVED_PREFIX));
        assert!(SESSION_PATH.starts_with(RESERVED_PREFIX));
        assert!(SHELL_PATH.starts_with(RESERVED_PREFIX));
    }
}
