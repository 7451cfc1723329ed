//! An app's own service workers (code-server's webviews register one under their path).
//!
//! The browser fetches a worker's script from the network, past every service worker, and
//! burrowd has nothing of the app's to give. So the app page's shim fetches the script
//! through the tunnel first and stages it here (`PUT /.burrow/app-worker?src=PATH`, with the
//! origin's credential and `Origin`); the registration's own request for `PATH` is then
//! answered with Burrow's worker bootstrap, which imports the staged script before its own
//! listeners. So the app's worker runs with Burrow's beside it, on its own origin only.
//!
//! What burrowd thereby serves that came from an app is exactly these staged scripts: to
//! their own origin's worker (with that origin's credential), never to another origin, and
//! only for a script in a folder below the root, whose scope can therefore never be the
//! whole origin (Burrow's) nor `/.burrow/`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;

/// Largest script staged.
pub const MAX_SCRIPT_BYTES: usize = 4 * 1024 * 1024;
/// Scripts kept per app origin; staging another drops the oldest.
pub const MAX_SCRIPTS_PER_APP: usize = 8;
/// Bytes kept for every app together; the oldest scripts go first past this.
pub const MAX_TOTAL_BYTES: usize = 64 * 1024 * 1024;
/// Longest `src` (path and query) accepted.
pub const MAX_SRC_LEN: usize = 2048;

/// Why a script was not staged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    /// `src` is not a path of the app's own that may hold a worker.
    #[error(
        "{0:?} cannot be an app's worker: it must be a path in a folder below the root (its scope may not be the whole origin), outside /.burrow/"
    )]
    BadSrc(String),
    /// The script is larger than [`MAX_SCRIPT_BYTES`].
    #[error("the script has {0} bytes; at most {MAX_SCRIPT_BYTES} are staged")]
    TooLarge(usize),
}

/// The staged scripts, by app origin (its label) and `src`; bounded in count and bytes.
#[derive(Debug, Default, Clone)]
pub struct AppWorkers {
    inner: Arc<Mutex<Store>>,
}

#[derive(Debug, Default)]
struct Store {
    /// Oldest first.
    scripts: VecDeque<Staged>,
    bytes: usize,
}

#[derive(Debug)]
struct Staged {
    app: String,
    src: String,
    script: Bytes,
}

/// Whether `src` (a path and query) may name an app's worker: a path of the app's own
/// (`/`-rooted, not `//`, not under `/.burrow`, no control characters), in a folder below
/// the root, so the browser never lets it control the whole origin.
pub fn valid_src(src: &str) -> bool {
    let path = src.split_once('?').map_or(src, |(p, _)| p);
    src.len() <= MAX_SRC_LEN
        && path.starts_with('/')
        && !path.starts_with("//")
        && !(path == "/.burrow" || path.starts_with("/.burrow/"))
        && path[1..].contains('/')
        && !src.bytes().any(|b| b.is_ascii_control())
}

impl AppWorkers {
    /// Stages `script` as app `app`'s worker at `src`, replacing an earlier one there.
    pub fn stage(&self, app: &str, src: &str, script: Bytes) -> Result<(), StageError> {
        if !valid_src(src) {
            return Err(StageError::BadSrc(src.to_owned()));
        }
        if script.len() > MAX_SCRIPT_BYTES {
            return Err(StageError::TooLarge(script.len()));
        }
        let mut store = lock(&self.inner);
        store.remove(|s| s.app == app && s.src == src);
        while store.scripts.iter().filter(|s| s.app == app).count() >= MAX_SCRIPTS_PER_APP {
            store.remove_first(|s| s.app == app);
        }
        while store.bytes + script.len() > MAX_TOTAL_BYTES && !store.scripts.is_empty() {
            store.remove_first(|_| true);
        }
        store.bytes += script.len();
        store.scripts.push_back(Staged {
            app: app.to_owned(),
            src: src.to_owned(),
            script,
        });
        Ok(())
    }

    /// App `app`'s script staged at `src`.
    pub fn get(&self, app: &str, src: &str) -> Option<Bytes> {
        lock(&self.inner)
            .scripts
            .iter()
            .find(|s| s.app == app && s.src == src)
            .map(|s| s.script.clone())
    }
}

impl Store {
    fn remove(&mut self, which: impl Fn(&Staged) -> bool) {
        let before = self.scripts.len();
        self.scripts.retain(|s| !which(s));
        if self.scripts.len() != before {
            self.bytes = self.scripts.iter().map(|s| s.script.len()).sum();
        }
    }

    fn remove_first(&mut self, which: impl Fn(&Staged) -> bool) {
        if let Some(at) = self.scripts.iter().position(which)
            && let Some(gone) = self.scripts.remove(at)
        {
            self.bytes -= gone.script.len();
        }
    }
}

fn lock(m: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    // A panic while staging leaves the store consistent enough to go on with.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scripts_in_a_folder_below_the_root_may_be_workers() {
        for ok in [
            "/stable-1/static/out/vs/workbench/contrib/webview/browser/pre/service-worker.js?v=4&x=y",
            "/x/sw.js",
        ] {
            assert!(valid_src(ok), "{ok}");
        }
        for bad in [
            "/sw.js",
            "/sw.js?scope=/x/",
            "sw.js",
            "//evil.example/x/sw.js",
            "/.burrow/sw.js",
            "/.burrow/x/sw.js",
            "/x/sw.js\n",
            "",
        ] {
            assert!(!valid_src(bad), "{bad:?}");
        }
        assert!(!valid_src(&format!("/x/{}", "a".repeat(MAX_SRC_LEN))));
    }

    #[test]
    fn a_script_is_served_to_its_own_app_only() {
        let w = AppWorkers::default();
        w.stage("8080--box--alice", "/x/sw.js", Bytes::from_static(b"1"))
            .expect("stage");
        assert_eq!(
            w.get("8080--box--alice", "/x/sw.js").as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(w.get("8081--box--alice", "/x/sw.js"), None);
        assert_eq!(w.get("8080--box--alice", "/x/sw.js?v=2"), None);
        w.stage("8080--box--alice", "/x/sw.js", Bytes::from_static(b"2"))
            .expect("restage");
        assert_eq!(
            w.get("8080--box--alice", "/x/sw.js").as_deref(),
            Some(&b"2"[..])
        );
    }

    #[test]
    fn staging_is_bounded_per_app_and_in_bytes() {
        let w = AppWorkers::default();
        for i in 0..MAX_SCRIPTS_PER_APP + 2 {
            w.stage("a", &format!("/x/{i}.js"), Bytes::from_static(b"x"))
                .expect("stage");
        }
        assert_eq!(w.get("a", "/x/0.js"), None, "the oldest went");
        assert!(
            w.get("a", &format!("/x/{}.js", MAX_SCRIPTS_PER_APP + 1))
                .is_some()
        );
        let big = Bytes::from(vec![0; MAX_SCRIPT_BYTES]);
        for i in 0..(MAX_TOTAL_BYTES / MAX_SCRIPT_BYTES) + 2 {
            w.stage(&format!("app{i}"), "/x/sw.js", big.clone())
                .expect("stage");
        }
        let store = lock(&w.inner);
        assert!(store.bytes <= MAX_TOTAL_BYTES, "{} bytes kept", store.bytes);
        drop(store);
        assert_eq!(
            w.stage("a", "/x/big.js", Bytes::from(vec![0; MAX_SCRIPT_BYTES + 1])),
            Err(StageError::TooLarge(MAX_SCRIPT_BYTES + 1))
        );
        assert!(matches!(
            w.stage("a", "/sw.js", Bytes::new()),
            Err(StageError::BadSrc(_))
        ));
    }
}
