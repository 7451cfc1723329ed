//! The core stays sans-IO: it must not grow a dependency on an async runtime, a socket
//! layer, a browser binding or a clock (Tailscale's `TestDeps` idea).

use std::process::Command;

#[test]
fn proto_depends_on_no_runtime_socket_or_browser_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "burrow-proto",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let forbidden = [
        "tokio",
        "mio",
        "async-std",
        "smol",
        "web-sys",
        "js-sys",
        "wasm-bindgen",
        "socket2",
        "webrtc",
    ];
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        assert!(
            !forbidden.contains(&name),
            "burrow-proto must stay sans-IO but depends on {name}:\n{tree}"
        );
    }
}
