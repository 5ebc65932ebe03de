#!/usr/bin/env bash
# End-to-end test: start the release binary on a free loopback port with the
# repository's routes.toml and no provider keys (so the demo provider answers),
# run tests/e2e/openai_sdk_e2e.py against it with the official OpenAI SDK,
# then stop the proxy with SIGTERM and require a clean exit 0 within 10 s.
#
#   bash tests/e2e/run.sh
#
# Environment:
#   PYTHON       interpreter that has `openai` installed (default: python3)
#   HERMES_BIN   binary to test (default: <target dir>/release/hermes-proxy,
#                built with `cargo build --release` when missing)
#
# Writes nothing into the repository except cargo's own target directory.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac
BIN="${HERMES_BIN:-$TARGET_DIR/release/hermes-proxy}"
READY_TIMEOUT=30
STOP_TIMEOUT=10

log() { echo "e2e: $*" >&2; }

# Loopback requests must not go through an HTTP proxy the environment may set
# for package downloads (urllib and httpx both honour HTTP_PROXY).
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

if ! "$PYTHON" -c 'import openai' 2>/dev/null; then
    log "the OpenAI SDK is not importable by $PYTHON; run: $PYTHON -m pip install openai"
    exit 1
fi

if [[ ! -x "$BIN" ]]; then
    log "building the release binary ($BIN is missing)"
    (cd "$REPO" && cargo build --release --bin hermes-proxy)
fi

WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/hermes-e2e.XXXXXX")"
PROXY_LOG="$WORKDIR/proxy.log"
PROXY_PID=""

cleanup() {
    local status=$?
    if [[ -n "$PROXY_PID" ]] && kill -0 "$PROXY_PID" 2>/dev/null; then
        kill -KILL "$PROXY_PID" 2>/dev/null || true
        wait "$PROXY_PID" 2>/dev/null || true
    fi
    rm -rf "$WORKDIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_proxy_log() {
    log "---- proxy log (last 50 lines) ----"
    tail -n 50 "$PROXY_LOG" >&2 || true
    log "-----------------------------------"
}

PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
ADDR="127.0.0.1:$PORT"

# A clean environment for the proxy: no provider keys (the demo provider must
# answer), and no HERMES_* variables that would override the command line.
(
    cd "$WORKDIR"
    exec env -u MOONSHOT_API_KEY -u OPENROUTER_API_KEY \
        -u HERMES_CONFIG -u HERMES_LISTEN -u HERMES_ADMIN_KEY \
        RUST_LOG="${RUST_LOG:-info}" \
        "$BIN" --config "$REPO/routes.toml" --listen "$ADDR"
) >"$PROXY_LOG" 2>&1 &
PROXY_PID=$!
log "proxy pid $PROXY_PID on http://$ADDR (log: $PROXY_LOG)"

# Wait for GET /ready, bounded; give up early if the proxy died.
if ! "$PYTHON" - "$ADDR" "$READY_TIMEOUT" "$PROXY_PID" <<'EOF'
import os, sys, time, urllib.request
addr, timeout, pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        print("e2e: the proxy exited before it was ready", file=sys.stderr)
        sys.exit(1)
    try:
        with urllib.request.urlopen(f"http://{addr}/ready", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.2)
print(f"e2e: GET /ready did not answer 200 within {timeout:.0f}s", file=sys.stderr)
sys.exit(1)
EOF
then
    show_proxy_log
    echo "0 passed, 1 failed"
    exit 1
fi
log "proxy ready"

set +e
OPENAI_BASE_URL="http://$ADDR/v1" OPENAI_API_KEY="sk-e2e-dummy" \
    "$PYTHON" "$REPO/tests/e2e/openai_sdk_e2e.py"
TEST_STATUS=$?
set -e

# Graceful shutdown: SIGTERM must end the process with status 0 within 10 s.
STOP_STATUS=0
kill -TERM "$PROXY_PID"
for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
    kill -0 "$PROXY_PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$PROXY_PID" 2>/dev/null; then
    log "FAIL: the proxy did not exit within ${STOP_TIMEOUT}s of SIGTERM"
    STOP_STATUS=1
else
    set +e
    wait "$PROXY_PID"
    EXIT_CODE=$?
    set -e
    PROXY_PID=""
    if [[ $EXIT_CODE -eq 0 ]]; then
        log "ok: the proxy exited 0 after SIGTERM"
    else
        log "FAIL: the proxy exited $EXIT_CODE after SIGTERM (want 0)"
        STOP_STATUS=1
    fi
fi

if [[ $TEST_STATUS -ne 0 || $STOP_STATUS -ne 0 ]]; then
    show_proxy_log
fi
if [[ $STOP_STATUS -ne 0 && $TEST_STATUS -eq 0 ]]; then
    TEST_STATUS=1
fi
exit "$TEST_STATUS"
