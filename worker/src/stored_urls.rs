//! Which URLs the service worker's cache may hold a response for.
//!
//! Asking Cache Storage is a round trip to the browser's storage, paid by every cacheable
//! request before it goes to the app, and most requests of an app not yet cached are
//! misses. So the worker keeps the set of URLs it stored, read once from the cache's keys
//! when it starts, and asks Cache Storage only for those. A miss cost 0.3–0.4 ms in a test
//! page of its own in headless Chromium on the benchmark VM; through the whole worker path,
//! in the benchmark's fresh browser contexts (whose storage is in memory), the saving was
//! within the noise (bench/findings.md). A profile on disk can only make a lookup slower.
//! Pure bookkeeping: tested natively, used by the worker in Wasm.
//!
//! Every uncertainty errs towards asking: a URL wrongly in the set costs one lookup that
//! finds nothing, while a URL wrongly missing would send to the app a request the cache
//! could have answered. So, until the keys are read (or if reading them failed), every URL
//! is asked for; a URL counts as stored from the moment its store begins, whether or not the
//! `put` then succeeds; and a removal only takes it out if no store of it began since.

use std::collections::HashMap;

/// The URLs the cache may hold (see the module docs).
#[derive(Debug, Default)]
pub struct StoredUrls {
    /// Stored or being stored, from this worker's own stores and from the cache's keys, each
    /// with how many stores of it this worker began: a removal that completes after a newer
    /// store began leaves the URL in.
    known: HashMap<String, u64>,
    /// Whether the cache's keys have been read into `known`.
    loaded: bool,
}

/// What a removal started: the URL and how many stores of it had begun by then.
#[derive(Debug)]
#[must_use = "pass it to `StoredUrls::removed` once the removal is done"]
pub struct Removal {
    url: String,
    stores_begun: u64,
}

impl StoredUrls {
    /// An empty set whose keys are not read yet: [`Self::may_hold`] says yes to every URL.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the cache may hold a response for `url`, that is, whether it must be asked.
    pub fn may_hold(&self, url: &str) -> bool {
        !self.loaded || self.known.contains_key(url)
    }

    /// The cache's keys have been read: from now on only known URLs are asked for. Stores
    /// that began while they were read stay known.
    pub fn keys_read(&mut self, urls: impl IntoIterator<Item = String>) {
        for url in urls {
            self.known.entry(url).or_default();
        }
        self.loaded = true;
    }

    /// A store of `url` begins.
    pub fn store_begins(&mut self, url: &str) {
        *self.known.entry(url.to_owned()).or_default() += 1;
    }

    /// A removal of `url` begins; pass what it returns to [`Self::removed`] when it is done.
    pub fn removal_begins(&self, url: &str) -> Removal {
        Removal {
            url: url.to_owned(),
            stores_begun: self.known.get(url).copied().unwrap_or(0),
        }
    }

    /// The removal is done: its URL is no longer stored, unless a store of it began since.
    pub fn removed(&mut self, removal: Removal) {
        if self
            .known
            .get(&removal.url)
            .is_some_and(|&n| n == removal.stores_begun)
        {
            self.known.remove(&removal.url);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "http://3000--dev--alice.localhost:8080/a.js";
    const B: &str = "http://3000--dev--alice.localhost:8080/b.js";

    #[test]
    fn every_url_is_asked_for_until_the_keys_are_read() {
        let urls = StoredUrls::new();
        assert!(urls.may_hold(A));
        assert!(urls.may_hold(B));
    }

    #[test]
    fn once_the_keys_are_read_only_stored_urls_are_asked_for() {
        let mut urls = StoredUrls::new();
        urls.keys_read([A.to_owned()]);
        assert!(urls.may_hold(A));
        assert!(!urls.may_hold(B));
    }

    #[test]
    fn a_store_that_began_while_the_keys_were_read_is_kept() {
        let mut urls = StoredUrls::new();
        urls.store_begins(B);
        urls.keys_read([A.to_owned()]);
        assert!(urls.may_hold(A) && urls.may_hold(B));
    }

    #[test]
    fn a_url_counts_as_stored_from_the_moment_its_store_begins() {
        let mut urls = StoredUrls::new();
        urls.keys_read([]);
        urls.store_begins(A);
        assert!(urls.may_hold(A));
    }

    #[test]
    fn a_removed_url_is_not_asked_for() {
        let mut urls = StoredUrls::new();
        urls.keys_read([A.to_owned()]);
        let removal = urls.removal_begins(A);
        assert!(urls.may_hold(A), "still stored until the removal is done");
        urls.removed(removal);
        assert!(!urls.may_hold(A));
    }

    #[test]
    fn a_removal_that_ends_after_a_newer_store_began_leaves_the_url_in() {
        let mut urls = StoredUrls::new();
        urls.keys_read([]);
        urls.store_begins(A);
        let removal = urls.removal_begins(A);
        urls.store_begins(A);
        urls.removed(removal);
        assert!(urls.may_hold(A));
    }

    #[test]
    fn storing_again_after_a_removal_makes_the_url_stored_again() {
        let mut urls = StoredUrls::new();
        urls.keys_read([]);
        urls.store_begins(A);
        let removal = urls.removal_begins(A);
        urls.removed(removal);
        assert!(!urls.may_hold(A));
        urls.store_begins(A);
        assert!(urls.may_hold(A));
    }
}
