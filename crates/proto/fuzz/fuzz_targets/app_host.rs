//! `cargo +nightly fuzz run app_host` (from crates/proto): reading any `Host` header or
//! deep link never panics; a host that names an app names exactly the label that makes
//! that app's origin (one app, one spelling), and an accepted deep link stays a path of
//! the app's origin outside `/.burrow/`.
#![no_main]

use burrow_proto::app_origin::{AppLabel, AppPath, AppsUrl};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(label) = AppLabel::parse(text) {
        assert_eq!(label.to_string(), text);
        assert!(text.len() <= 63);
    }
    for apps in ["http://*.localhost:8080", "https://*.apps.example.com"] {
        let apps = AppsUrl::parse(apps).expect("valid apps URL");
        if let Some(Ok(label)) = apps.match_host(text) {
            let origin = apps.origin(&label);
            let host = origin.split_once("://").map(|(_, h)| h).unwrap_or_default();
            assert!(matches!(apps.match_host(host), Some(Ok(ref l)) if *l == label));
        }
    }
    if let Ok(path) = AppPath::parse(text) {
        let p = path.as_str();
        assert!(p.starts_with('/') && !p.starts_with("//") && !p.contains('\\'));
        assert!(!p.starts_with("/.burrow/") && p.bytes().all(|b| b.is_ascii_graphic()));
    }
});
