#!/usr/bin/env bash
# Runs the browser client's suites (wasm-tests/) in headless Chromium against a live
# burrowd (embedded relay), burrow-agent, a TCP echo server and burrow-testbed (a real
# HTTP/1.1 and WebSocket app), all on 127.0.0.1.
#
# Everything started here is stopped on exit; the exit status is non-zero if anything
# failed. Needs: chromium and chromedriver, wasm-pack and wasm-bindgen-cli 0.2.130, the
# wasm32-unknown-unknown target, python3 and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target_dir=${CARGO_TARGET_DIR:-$root/target}

step() { printf '\n==> %s\n' "$*"; }

work=$(mktemp -d)
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" -ne 0 ]; then
        for log in "$work"/*.log; do
            [ -f "$log" ] || continue
            printf '\n--- last lines of %s ---\n' "$(basename "$log")"
            tail -n 40 "$log"
        done
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A TCP port free now on 127.0.0.1 (UDP with "udp").
free_port() {
    python3 - "${1:-tcp}" <<'EOF'
import socket, sys
kind = socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, kind)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
EOF
}

# Waits up to $2 seconds for command $1 to succeed.
wait_for() {
    local deadline=$((SECONDS + $2))
    until eval "$1" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "timed out waiting for: $1" >&2
            return 1
        fi
        sleep 0.2
    done
}

step "building burrowd, burrow-agent and burrow-testbed"
cargo build --locked --bins -p burrow-server -p burrow-agent -p burrow-testbed
burrowd=$target_dir/debug/burrowd
agent=$target_dir/debug/burrow-agent
testbed=$target_dir/debug/burrow-testbed

http_port=$(free_port)
relay_port=$(free_port udp)
# The test page's origin: wasm-bindgen-test-runner serves it here, and burrowd's CORS
# allows it.
page_port=$(free_port)
url=http://127.0.0.1:$http_port
data=$work/data

step "creating users and a workspace"
token=$("$burrowd" admin --data-dir "$data" user add alice)
other_token=$("$burrowd" admin --data-dir "$data" user add bob)
agent_token=$("$burrowd" admin --data-dir "$data" workspace add dev --owner alice)

step "starting burrowd on $url (relay udp 127.0.0.1:$relay_port)"
"$burrowd" serve --listen "127.0.0.1:$http_port" --data-dir "$data" \
    --relay-listen "127.0.0.1:$relay_port" --relay-danger-allow-private-peers \
    --cors-allow-origin "http://127.0.0.1:$page_port" >"$work/burrowd.log" 2>&1 &
pids+=($!)
wait_for "curl -fsS $url/healthz" 30

step "starting the echo server"
# Echoes until EOF, then half-closes: the client reads exactly what it wrote, then EOF.
python3 -u - "$work/echo.port" >"$work/echo.log" 2>&1 <<'EOF' &
import socket, socketserver, sys

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                break
            self.request.sendall(data)
        self.request.shutdown(socket.SHUT_WR)

class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

with Server(("127.0.0.1", 0), Echo) as server:
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()
EOF
pids+=($!)
wait_for "test -s $work/echo.port" 10
echo_port=$(cat "$work/echo.port")
denied_port=$((echo_port == 23 ? 24 : 23))

step "starting burrow-testbed"
"$testbed" "$work/app.port" "$work/flaky.port" >"$work/testbed.log" 2>&1 &
pids+=($!)
wait_for "test -s $work/app.port -a -s $work/flaky.port" 10
app_port=$(cat "$work/app.port")
flaky_port=$(cat "$work/flaky.port")

step "starting burrow-agent (allows ports $echo_port, $app_port and $flaky_port)"
"$agent" --url "$url" --token "$agent_token" --allow-ports "$echo_port,$app_port,$flaky_port" \
    --udp-bind 127.0.0.1 >"$work/agent.log" 2>&1 &
pids+=($!)
wait_for "curl -fsS -H 'Authorization: Bearer $token' $url/api/v1/workspaces | grep -q '\"online\":true'" 30

step "running the browser suites"
export BURROW_TEST_URL=$url
export BURROW_TEST_TOKEN=$token
export BURROW_TEST_OTHER_TOKEN=$other_token
export BURROW_TEST_WORKSPACE=dev
export BURROW_TEST_ECHO_PORT=$echo_port
export BURROW_TEST_DENIED_PORT=$denied_port
export BURROW_TEST_APP_PORT=$app_port
export BURROW_TEST_FLAKY_PORT=$flaky_port
export CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}
export WASM_BINDGEN_TEST_ADDRESS=127.0.0.1:$page_port
export WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-180}
# wasm-bindgen-test-runner reads webdriver.json (Chromium's path and switches) from the
# crate's directory, where cargo runs it.
wasm-pack test --headless --chrome --chromedriver "$CHROMEDRIVER" wasm-tests
