#!/usr/bin/env bash
# Builds the browser packages burrowd serves from web/pkg/ (npm run build runs this):
#   web/pkg/client/  the tunnel client (crates/client), an ES module for the dashboard
#   web/pkg/worker/  the service worker (worker/), a classic script for importScripts
# Needs wasm-pack and wasm-bindgen-cli 0.2.130 (scripts/install-deps.sh installs them).
# BURROW_WASM_PROFILE=dev builds faster, unoptimised packages.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="--${BURROW_WASM_PROFILE:-release}"
# --mode no-install: use the installed wasm-bindgen rather than downloading one.
wasm-pack build crates/client "$profile" --mode no-install --target web --no-pack \
  --out-dir ../../web/pkg/client
wasm-pack build worker "$profile" --mode no-install --target no-modules --no-pack \
  --out-dir ../web/pkg/worker
rm -f web/pkg/client/.gitignore web/pkg/worker/.gitignore
echo "built web/pkg/client and web/pkg/worker"
