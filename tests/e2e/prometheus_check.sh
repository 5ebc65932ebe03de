#!/usr/bin/env bash
# A real Prometheus against a real proxy: scrape it, lint the exposition with
# `promtool check metrics`, then evaluate every query of the dashboards.
#
#   bash tests/e2e/prometheus_check.sh [PROXY_URL]
#
# PROXY_URL (e.g. http://127.0.0.1:8080) is a running proxy whose routes.toml
# has the repository's `default` route. Without it, the script starts
# $HERMES_BIN (default: <target dir>/release/hermes-proxy) with the
# repository's routes.toml on a free loopback port, and stops it at the end.
#
# Needs: prometheus and promtool (Debian: apt-get install prometheus),
# curl, python3. Environment: PROMETHEUS (default: prometheus on PATH, else
# /usr/bin/prometheus), PROMTOOL (default: promtool).
#
# Prints one line per query and `N passed, M failed`; exits non-zero on any
# failure. Everything it starts is stopped on exit; it writes only to a
# temporary directory.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac
PROMETHEUS="${PROMETHEUS:-$(command -v prometheus || echo /usr/bin/prometheus)}"
PROMTOOL="${PROMTOOL:-promtool}"
SCRAPE_TIMEOUT=30

log() { echo "prometheus-check [${SECONDS}s]: $*" >&2; }

for tool in "$PROMETHEUS" "$PROMTOOL" curl python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        log "$tool not found (Debian: apt-get install -y prometheus curl python3)"
        exit 1
    fi
done

WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/hermes-prom.XXXXXX")"
PROM_PID=""
PROXY_PID=""

stop() { # pid
    local pid="$1"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}

cleanup() {
    local status=$?
    stop "$PROM_PID"
    stop "$PROXY_PID"
    rm -rf "$WORKDIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_for URL SECONDS PID: until URL answers 200, bounded; fails early if PID died.
wait_for() {
    local url="$1" deadline=$((SECONDS + $2)) pid="$3"
    until curl -fsS -o /dev/null "$url" 2>/dev/null; do
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.2
    done
}

# ---------------------------------------------------------------- the proxy
PROXY="${1:-}"
if [[ -z "$PROXY" ]]; then
    BIN="${HERMES_BIN:-$TARGET_DIR/release/hermes-proxy}"
    if [[ ! -x "$BIN" ]]; then
        log "$BIN is missing: run cargo build --release, or pass a proxy URL"
        exit 1
    fi
    BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
    PROXY="http://127.0.0.1:$(free_port)"
    (
        cd "$WORKDIR"
        exec env -u MOONSHOT_API_KEY -u OPENROUTER_API_KEY \
            -u HERMES_CONFIG -u HERMES_LISTEN -u HERMES_ADMIN_KEY \
            "$BIN" --config "$REPO/routes.toml" --listen "${PROXY#http://}"
    ) >"$WORKDIR/proxy.log" 2>&1 &
    PROXY_PID=$!
    if ! wait_for "$PROXY/health" 30 "$PROXY_PID"; then
        log "the proxy did not come up on $PROXY:"
        tail -n 30 "$WORKDIR/proxy.log" >&2 || true
        exit 1
    fi
    log "started $BIN on $PROXY (pid $PROXY_PID)"
fi
PROXY="${PROXY%/}"
TARGET="${PROXY#*://}"
TARGET="${TARGET%%/*}"

# ---------------------------------------------------------------- prometheus
PROM_PORT="$(free_port)"
PROM="http://127.0.0.1:$PROM_PORT"
# dashboards/prometheus.yml with this proxy as the target and a 1 s interval.
sed -e "s|127\.0\.0\.1:8080|$TARGET|" \
    -e "s|scrape_interval: .*|scrape_interval: 1s|" \
    -e "s|evaluation_interval: .*|evaluation_interval: 1s|" \
    "$REPO/dashboards/prometheus.yml" >"$WORKDIR/prometheus.yml"
grep -q "$TARGET" "$WORKDIR/prometheus.yml" || {
    log "could not point dashboards/prometheus.yml at $TARGET"
    exit 1
}
"$PROMTOOL" check config "$WORKDIR/prometheus.yml" >&2

"$PROMETHEUS" --config.file="$WORKDIR/prometheus.yml" \
    --storage.tsdb.path="$WORKDIR/data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" \
    --web.console.templates="$WORKDIR" --web.console.libraries="$WORKDIR" \
    >"$WORKDIR/prometheus.log" 2>&1 &
PROM_PID=$!
if ! wait_for "$PROM/-/ready" 30 "$PROM_PID"; then
    log "prometheus did not become ready:"
    tail -n 30 "$WORKDIR/prometheus.log" >&2 || true
    exit 1
fi
log "prometheus $PROM (pid $PROM_PID) scraping $PROXY every 1s"

# ---------------------------------------------------------------- traffic
chat() { # JSON body -> HTTP status
    curl -sS -o /dev/null -w '%{http_code}' --max-time 30 \
        -H 'content-type: application/json' -d "$1" "$PROXY/v1/chat/completions"
}
MSG='[{"role":"user","content":"Say hello to Prometheus"}]'
traffic() {
    local s
    s="$(chat "{\"model\":\"default\",\"messages\":$MSG}")"
    log "non-stream default: $s"
    [[ "$s" == 200 ]] || return 1
    s="$(chat "{\"model\":\"default\",\"messages\":$MSG,\"stream\":true,\"stream_options\":{\"include_usage\":true}}")"
    log "stream default: $s"
    [[ "$s" == 200 ]] || return 1
    s="$(chat "{\"model\":\"gpt-secret-model-xyz\",\"messages\":$MSG}")"
    log "unknown model: $s"
    [[ "$s" == 404 ]] || return 1
}
traffic || {
    log "the proxy did not answer as expected"
    exit 1
}

# ---------------------------------------------------------------- scraped?
deadline=$((SECONDS + SCRAPE_TIMEOUT))
until curl -fsS "$PROM/api/v1/targets" | python3 -c '
import json, sys
targets = json.load(sys.stdin)["data"]["activeTargets"]
sys.exit(0 if targets and all(t["health"] == "up" for t in targets) else 1)'; do
    if ((SECONDS >= deadline)); then
        log "prometheus never scraped $PROXY successfully:"
        curl -sS "$PROM/api/v1/targets" >&2 || true
        exit 1
    fi
    sleep 0.5
done
log "prometheus has scraped the proxy"
# One more round after the first scrape, so rate() has two points to work on.
traffic >/dev/null 2>&1 || true
sleep 3

PASS=0
FAIL=0
ok() {
    echo "ok    $*"
    PASS=$((PASS + 1))
}
bad() {
    echo "FAIL  $*"
    FAIL=$((FAIL + 1))
}

# ---------------------------------------------------------------- promtool
curl -fsS "$PROXY/metrics" >"$WORKDIR/metrics.txt"
if "$PROMTOOL" check metrics <"$WORKDIR/metrics.txt" >"$WORKDIR/promtool.out" 2>&1; then
    ok "promtool check metrics ($(grep -c '^# TYPE hermes_' "$WORKDIR/metrics.txt") hermes_ families)"
else
    bad "promtool check metrics"
    sed 's/^/      /' "$WORKDIR/promtool.out"
fi
if grep -q 'gpt-secret-model-xyz' "$WORKDIR/metrics.txt"; then
    bad "a client's model string appears in /metrics"
else
    ok "no client model string in /metrics"
fi

# ---------------------------------------------------------------- queries
# Every expr of every dashboard, with Grafana's variables made concrete
# ($__rate_interval, $__interval, $__range... -> 1m; $route, ${provider},
# ${route:regex}... -> .*, what the All option sends), evaluated by
# /api/v1/query; every label_values() variable through /api/v1/label/.../values.
# An empty result is fine (a family nobody has observed yet); a Prometheus
# error is not. Prints one line per query; the last line is its fail count.
python3 - "$PROM" "$REPO"/dashboards/*.json >"$WORKDIR/queries.out" <<'EOF' || true
import json, re, sys, urllib.error, urllib.parse, urllib.request

prom, files = sys.argv[1], sys.argv[2:]

def concrete(expr):
    expr = re.sub(r"\$\{__\w+(:\w+)?\}|\$__\w+", "1m", expr)
    return re.sub(r"\$\{\w+(:\w+)?\}|\$\w+", ".*", expr)

def walk(v, where, out):
    """Every string under an `expr` key, with the panel title / annotation name above it."""
    if isinstance(v, dict):
        where = v.get("title") or v.get("name") or where
        for k, child in v.items():
            if k == "expr" and isinstance(child, str):
                out.append((f"{where} {v.get('refId', '')}".strip(), child))
            else:
                walk(child, where, out)
    elif isinstance(v, list):
        for child in v:
            walk(child, where, out)

def ask(path, params):
    url = f"{prom}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read()
    except urllib.error.HTTPError as e:  # 400/422 carry the error as JSON
        body = e.read()
    except OSError as e:
        return f"no answer: {e}"
    try:
        a = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:200]!r}"
    if a.get("status") != "success":
        return f"{a.get('errorType')}: {a.get('error')}"
    data = a["data"]
    return len(data["result"]) if isinstance(data, dict) else len(data)

checks = []
for file in files:
    dash = json.load(open(file))
    name = file.rsplit("/", 1)[-1]
    found = []
    walk(dash.get("panels", []), "", found)
    walk(dash.get("annotations", {}), "annotation", found)
    walk({k: v for k, v in dash.items() if k not in ("panels", "annotations")}, "", found)
    if not found:
        checks.append((f"{name}: no queries at all", None, None))
    for where, expr in found:
        q = " ".join(concrete(expr).split())
        checks.append((f"{name}: {where}", q, ("/api/v1/query", {"query": q}, "series")))
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = var.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*(\w+)\s*\)\s*", q)
        label = f"{name}: variable ${var.get('name')}"
        if not m:
            checks.append((f"{label}: cannot check {q!r}", None, None))
        else:
            path = f"/api/v1/label/{m.group(2)}/values"
            checks.append((label, q, (path, {"match[]": m.group(1)}, "values")))

failed = 0
for label, q, how in checks:
    result = "not a query" if how is None else ask(how[0], how[1])
    if isinstance(result, int):
        print(f"ok    {label} ({result} {how[2]})")
    else:
        failed += 1
        print(f"FAIL  {label}: {result}")
        if q:
            print(f"      {q}")
print(failed)
EOF
head -n -1 "$WORKDIR/queries.out"
QUERY_PASS="$(grep -c '^ok ' "$WORKDIR/queries.out" || true)"
QUERY_FAIL="$(tail -n 1 "$WORKDIR/queries.out")"
if ! [[ "$QUERY_FAIL" =~ ^[0-9]+$ ]]; then
    bad "the query checker crashed"
    cat "$WORKDIR/queries.out"
    QUERY_FAIL=0
fi
PASS=$((PASS + QUERY_PASS))
FAIL=$((FAIL + QUERY_FAIL))

echo "$PASS passed, $FAIL failed"
[[ $FAIL -eq 0 && $PASS -gt 2 ]]
