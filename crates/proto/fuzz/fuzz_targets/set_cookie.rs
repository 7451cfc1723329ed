//! `cargo +nightly fuzz run set_cookie` (from crates/proto): storing any `Set-Cookie`
//! value never panics, and the `Cookie` header built from the jar never holds a byte
//! that could end the header (CR, LF, NUL).
#![no_main]

use burrow_proto::cookies::CookieJar;
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let mut jar = CookieJar::new();
    for value in data.split(|&b| b == b'\n') {
        let _ = jar.store(value, "/a/b", NOW);
    }
    for path in ["/", "/a", "/a/b/c"] {
        if let Some(header) = jar.cookie_header(path, NOW) {
            assert!(!header.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0));
        }
    }
});
