#!/usr/bin/env bash
# Load benchmark of hermes-proxy against the upstream direct, nginx proxy_pass,
# Portkey's gateway and LiteLLM, interleaved in one run. See benches/README.md.
#
#   benches/load/run.sh [--install] [all options...]   the comparison (~4 min)
#   benches/load/run.sh [--install] streams [--n 10000] N concurrent open streams
#   benches/load/run.sh [--install] cluster [options]  one replica with and without
#            Redis ([cluster]) side by side (~4 min; needs redis-server)
#
# --install  apt-get install nginx wrk redis-server; cargo install oha (compiles, minutes);
#            litellm[proxy]==1.106.12 into benches/load/.venv; @portkey-ai/gateway
#            1.15.2 into benches/load/node (npm ci, from the committed lock file).
#            Without it nothing is installed: a missing oha, LiteLLM or Portkey
#            skips its part.
# Loopback only; every process started is stopped on exit. CARGO_TARGET_DIR
# is honoured (bench.py looks for the binary there too).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

# LiteLLM is pinned: newer releases do not install here, and two 2026
# releases were compromised. Never float this version.
LITELLM_PIN='litellm[proxy]==1.106.12'
OHA_PIN='1.16.0'

install=0
args=()
for a in "$@"; do
    case "$a" in
        --install) install=1 ;;
        *) args+=("$a") ;;
    esac
done

if [[ $install == 1 ]]; then
    need=()
    command -v nginx >/dev/null || need+=(nginx)
    command -v wrk >/dev/null || need+=(wrk)
    command -v redis-server >/dev/null || need+=(redis-server)
    if ((${#need[@]})); then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    fi
    if ! command -v oha >/dev/null && [[ ! -x "$HOME/.cargo/bin/oha" ]]; then
        # Not packaged for Debian or PyPI: built from crates.io.
        cargo install oha --version "$OHA_PIN" --locked
    fi
    if [[ ! -x "$here/.venv/bin/litellm" ]]; then
        python3 -m venv "$here/.venv"
        "$here/.venv/bin/pip" install -q "$LITELLM_PIN"
    fi
    if [[ ! -d "$here/node/node_modules/@portkey-ai/gateway" ]]; then
        if command -v npm >/dev/null; then
            # Exact versions from node/package-lock.json. @hono/node-server is
            # held at 1.13.8 there (an override): with the newer one Portkey's
            # ^1.3.3 range picks, every streamed answer fails with "TypeError:
            # immutable" (Portkey-AI/gateway#1389). No install scripts: the
            # only one is patch-package, and the package ships no patches.
            npm ci --prefix "$here/node" --ignore-scripts --no-audit --no-fund
        else
            echo "npm not found: Portkey's gateway is not installed (apt-get install nodejs npm)" >&2
        fi
    fi
fi

# 10,000 streams need 10,000 sockets on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

(cd "$repo" && cargo build --release --quiet --bin hermes-proxy)

py=python3
pid=""
cleanup() {
    # bench.py stops what it started on TERM; this covers a kill of this script.
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT INT TERM HUP
"$py" "$here/bench.py" "${args[@]}" &
pid=$!
wait "$pid"
