#!/usr/bin/env bash
# Burrow's native benchmarks: builds the release binaries, runs every comparison side by
# side on loopback (burrowd with its embedded relay, burrow-agent, `burrow port-forward`,
# sshd for `ssh -L`), writes bench/results/native.json, then renders BENCHMARKS.md and
# bench/plot.svg from every bench/results/*.json (other suites, e.g. the browser half, drop
# their own file there and rerun `burrow-bench render`).
#
# Usage: bench/run.sh [burrow-bench run options, e.g. --rounds 5 --bulk-mib 256]
# Needs OpenSSH (scripts/install-deps.sh installs it). Not part of the test command: it
# measures time and asserts nothing about it. Takes about 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh native
cargo build --release --locked --bin burrowd --bin burrow-agent --bin burrow --bin burrow-bench
bin="${CARGO_TARGET_DIR:-target}/release"
# A thousand idle agents plus the benchmark's own sockets exceed the usual 1024 descriptors.
ulimit -n "$(ulimit -Hn)"
BURROW_BIN_DIR="$bin" "$bin/burrow-bench" run "$@"
"$bin/burrow-bench" render
