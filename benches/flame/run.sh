#!/usr/bin/env bash
# CPU flame graphs of hermes-proxy answering chat completions (issue 15):
# benches/flame/before.svg and benches/flame/after.svg. See benches/README.md,
# "Flame graphs (issue 15)".
#
#   benches/flame/run.sh [--install] [--before REV] [--after REV] [--duration S]
#
# What it does, for each of the two revisions (before: ba479ea, the start of
# issue 15's work; after: HEAD):
#   1. builds the release binary of that revision with line tables
#      (CARGO_PROFILE_RELEASE_DEBUG=line-tables-only, so frames have names) in
#      a temporary `git worktree` (CARGO_TARGET_DIR, default target/flame);
#      HERMES_FLAME_BEFORE_BIN / HERMES_FLAME_AFTER_BIN name a binary to use
#      instead of building one (it needs line tables too);
#   2. runs `benches/load/bench.py profile --call-graph`: it starts a canned
#      nginx upstream (one worker, the JSON answer of the load benchmark), the
#      binary with default settings (info access log, to /dev/null) and wrk
#      (16 connections, 2 threads) posting the load benchmark's chat request;
#      `perf record -e cpu-clock -F 1000 --call-graph dwarf,65528 -p PID`
#      samples only hermes-proxy's threads (user and kernel) for the whole wrk
#      run (64 KiB of stack per sample: with 16 KiB, 40% of the stacks through
#      hyper and the tower layers came out cut short);
#   3. `perf script | inferno-collapse-perf | inferno-flamegraph` into the SVG;
#      frames narrower than half a pixel are left out to keep it small;
#      HERMES_FLAME_KEEP=DIR keeps the folded stacks there (for
#      inferno-diff-folded or a closer look).
# Every process started is stopped on exit; loopback ephemeral ports only.
#
# Needs: perf (linux-perf; cpu-clock is a software event, so a VM without
# hardware counters works; run as root or with kernel.perf_event_paranoid <= 1),
# nginx, wrk, python3, cargo, and inferno's inferno-collapse-perf and
# inferno-flamegraph (--install: cargo install inferno, pinned, from crates.io,
# plus apt-get install nginx wrk linux-perf when missing).
# Takes two release builds (about 3 minutes each on 2 cores) and about a
# minute per profile.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

INFERNO_PIN='0.12.8'
before_rev='ba479ea'
after_rev='HEAD'
duration=10
install=0
while (($#)); do
    case "$1" in
        --install) install=1 ;;
        --before) before_rev="$2"; shift ;;
        --after) after_rev="$2"; shift ;;
        --duration) duration="$2"; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

if [[ $install == 1 ]]; then
    need=()
    command -v nginx >/dev/null || need+=(nginx)
    command -v wrk >/dev/null || need+=(wrk)
    command -v perf >/dev/null || need+=(linux-perf)
    if ((${#need[@]})); then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    fi
    command -v inferno-flamegraph >/dev/null || cargo install --locked inferno --version "$INFERNO_PIN"
fi
export PATH="$PATH:$HOME/.cargo/bin"
for tool in perf nginx wrk python3 inferno-collapse-perf inferno-flamegraph; do
    command -v "$tool" >/dev/null || { echo "$tool is needed (run.sh --install)" >&2; exit 1; }
done

work="$(mktemp -d /tmp/hermes-flame.XXXXXX)"
worktrees=()
cleanup() {
    for w in "${worktrees[@]}"; do git -C "$repo" worktree remove --force "$w" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# build NAME REV -> $work/hermes-NAME, a release binary with line tables
build() {
    local name="$1" rev="$2" src="$work/src-$1"
    git -C "$repo" worktree add --detach --quiet "$src" "$rev" >&2
    worktrees+=("$src")
    (cd "$src" && CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target/flame}" \
        CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
        cargo build --release --quiet --bin hermes-proxy >&2)
    cp "${CARGO_TARGET_DIR:-$repo/target/flame}/release/hermes-proxy" "$work/hermes-$name"
}

# profile NAME BINARY REV -> benches/flame/NAME.svg
profile() {
    local name="$1" bin="$2" rev="$3" data="$work/$1.data"
    HERMES_BIN="$bin" python3 "$repo/benches/load/bench.py" profile --call-graph \
        --freq 1000 --stack-size 65528 --duration "$duration" --no-report \
        --output "$data" >/dev/null 2>"$work/$name.log" \
        || { cat "$work/$name.log" >&2; exit 1; }
    local requests cpu
    requests="$(sed -n 's/.*under perf: .* req\/s, \([0-9]*\) requests.*/\1/p' "$work/$name.log")"
    # inlined frames are resolved through addr2line: a minute or two
    perf script -i "$data" 2>/dev/null | inferno-collapse-perf > "$work/$name.folded"
    rm -f "$data"
    [[ -z "${HERMES_FLAME_KEEP:-}" ]] || cp "$work/$name.folded" "$HERMES_FLAME_KEEP/$name.folded"
    # cpu-clock weights are nanoseconds of CPU
    cpu="$(awk -v r="$requests" '{n += $NF} END {printf "%.1f s of CPU, %.0f µs per request", n / 1e9, n / 1e3 / r}' "$work/$name.folded")"
    inferno-flamegraph --minwidth 0.5 --width 1400 \
        --title "hermes-proxy $name ($rev): one chat completion through the proxy" \
        --subtitle "perf cpu-clock at 1 kHz, DWARF stacks, user and kernel; $requests requests (wrk, 16 connections), $cpu" \
        < "$work/$name.folded" > "$here/$name.svg"
    echo "$name: $rev, $requests requests, $cpu, $(du -k "$here/$name.svg" | cut -f1) KiB -> benches/flame/$name.svg" >&2
}

before_desc="$(git -C "$repo" rev-parse --short "$before_rev")"
after_desc="$(git -C "$repo" rev-parse --short "$after_rev")"
[[ -n "${HERMES_FLAME_BEFORE_BIN:-}" ]] || build before "$before_rev"
[[ -n "${HERMES_FLAME_AFTER_BIN:-}" ]] || build after "$after_rev"
profile before "${HERMES_FLAME_BEFORE_BIN:-$work/hermes-before}" "$before_desc"
profile after "${HERMES_FLAME_AFTER_BIN:-$work/hermes-after}" "$after_desc"
