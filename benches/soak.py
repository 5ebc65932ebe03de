#!/usr/bin/env python3
"""Soak: N minutes (default 10) of mixed load against the release binary in
front of a scripted upstream. Standard library only; not run by CI.

  cargo build --release
  python3 benches/soak.py [--minutes 10] [--clients 16]

The load, all at once, for the whole run:
  - chats answered as JSON, and chats streamed and read to `[DONE]`;
  - streams the client drops after the first chunks (a disconnect mid-stream);
  - 429 storms: the route's primary target answers every request 429 with
    `retry-after: 1` for 10 s out of every 30 s; the route falls back to a
    second target, so clients should never see them;
  - a config reload every 5 s: the routes file is rewritten (written beside
    it, then renamed over it, as editors save) with another `max_attempts`,
    another comment and an extra route that comes and goes.

Reports failed requests (goal: 0), the proxy's RSS after warm-up and at the
end (goal: flat) and its peak, p50/p99 latency of JSON chats and of streams'
first chunk, reloads counted by the proxy, and panics in its log. Raw
numbers land in target/hermes-soak/results.json. Everything listens on
127.0.0.1 ephemeral ports; every process started here is stopped on exit.
"""

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, ".."))

STORM_EVERY = 30.0  # seconds: a storm starts at each multiple of this
STORM_LENGTH = 10.0
RELOAD_EVERY = 5.0
STREAM_CHUNKS = 20
CHUNK_GAP = 0.01  # seconds between an upstream stream's chunks

START = time.monotonic()


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def storming():
    return (time.monotonic() - START) % STORM_EVERY < STORM_LENGTH


# ---------------------------------------------------------------------------
# the upstream


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    served = {"primary": 0, "fallback": 0, "rate_limited": 0}
    lock = threading.Lock()

    def log_message(self, *a):
        pass

    def count(self, what):
        with self.lock:
            self.served[what] += 1

    def send_body(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        # Context-window probes and model lists: nothing to tell.
        self.send_body(404, {"error": {"message": "not here", "type": "invalid_request_error"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"null")
        if not self.path.endswith("/chat/completions") or not isinstance(body, dict):
            self.send_body(404, {"error": {"message": "not here", "type": "invalid_request_error"}})
            return
        model = body.get("model", "")
        if model == "primary-model" and storming():
            self.count("rate_limited")
            self.send_body(
                429,
                {"error": {"message": "Rate limit reached for requests", "type": "requests",
                           "code": "rate_limit_exceeded"}},
                [("retry-after", "1")],
            )
            return
        self.count("primary" if model == "primary-model" else "fallback")
        usage = {"prompt_tokens": 20, "completion_tokens": STREAM_CHUNKS, "total_tokens": 20 + STREAM_CHUNKS}
        base = {"id": "chatcmpl-soak", "created": int(time.time()), "model": model}
        if not body.get("stream"):
            self.send_body(200, {**base, "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "soak " * 20},
                 "finish_reason": "stop"}], "usage": usage})
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def event(obj):
            data = f"data: {json.dumps(obj) if not isinstance(obj, str) else obj}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        try:
            for i in range(STREAM_CHUNKS):
                delta = {"content": f"w{i} "}
                finish = "stop" if i == STREAM_CHUNKS - 1 else None
                event({**base, "object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                time.sleep(CHUNK_GAP)
            event({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
            event("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True  # the proxy hung up: its client left


# ---------------------------------------------------------------------------
# the proxy


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_text(upstream_port, generation):
    extra = (f'\n[routes.extra-{generation}]\ntargets = [{{ provider = "fallback", model = "fallback-model" }}]\n'
             if generation % 2 else "")
    return f"""# soak generation {generation}
[defaults]
max_attempts = {4 + generation % 2}
max_retry_wait = "500ms"
cooldown = "2s"

[providers.primary]
kind = "openai"
base_url = "http://127.0.0.1:{upstream_port}/v1"

[providers.fallback]
kind = "openai"
base_url = "http://127.0.0.1:{upstream_port}/v1"

[routes.soak]
strategy = "fallback"
targets = [
  {{ provider = "primary", model = "primary-model" }},
  {{ provider = "fallback", model = "fallback-model" }},
]
{extra}"""


def write_config(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def rss_kib(pid):
    rss = hwm = 0
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def wait_ready(proc, port, limit=30):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the proxy exited with {proc.returncode}")
        try:
            if get(port, "/ready")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("the proxy did not become ready")


def metric(text, name, **labels):
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# ---------------------------------------------------------------------------
# the clients


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = {"json": 0, "stream": 0, "disconnect": 0}
        self.failures = []  # (kind, what)
        self.json_ms = []
        self.ttft_ms = []

    def fail(self, kind, what):
        with self.lock:
            self.failures.append((kind, what))


REQUEST = {"model": "soak", "messages": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say something for the soak test."}]}


def one(conn, kind, tally):
    body = dict(REQUEST, stream=kind != "json")
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"content-type": "application/json", "authorization": "Bearer sk-soak"})
    r = conn.getresponse()
    if r.status != 200:
        text = r.read()[:200]
        tally.fail(kind, f"{r.status} {text!r}")
        return True
    if kind == "json":
        answer = json.loads(r.read())
        ms = (time.perf_counter() - t0) * 1000
        if not answer.get("choices"):
            tally.fail(kind, "no choices")
            return True
        with tally.lock:
            tally.ok[kind] += 1
            tally.json_ms.append(ms)
        return True
    first = None
    done = False
    events = 0
    while True:
        line = r.readline()
        if not line:
            break
        if not line.startswith(b"data: "):
            continue
        events += 1
        if first is None:
            first = (time.perf_counter() - t0) * 1000
        if line.strip() == b"data: [DONE]":
            done = True
            break
        if b'"error"' in line:
            tally.fail(kind, f"error event: {line[:200]!r}")
            return False
        if kind == "disconnect" and events >= 3:
            break
    if first is None:
        tally.fail(kind, "no event")
        return False
    if kind == "stream" and not done:
        tally.fail(kind, f"ended after {events} events without [DONE]")
        return False
    if kind == "stream":
        r.read()  # the chunked body's end, so the connection can be reused
    with tally.lock:
        tally.ok[kind] += 1
        tally.ttft_ms.append(first)
    # A dropped stream leaves its connection mid-body: hang up (the disconnect).
    return kind == "stream"


def client(port, until, tally, seed):
    rnd = random.Random(seed)
    conn = None
    while time.monotonic() < until:
        kind = rnd.choices(["json", "stream", "disconnect"], [5, 3, 2])[0]
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            keep = one(conn, kind, tally)
        except (OSError, http.client.HTTPException, ValueError) as e:
            tally.fail(kind, f"{type(e).__name__}: {e}")
            keep = False
        if not keep:
            conn.close()
            conn = None
    if conn is not None:
        conn.close()


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=16)
    target_dir = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    ap.add_argument("--bin", default=os.path.join(target_dir, "release", "hermes-proxy"))
    args = ap.parse_args()
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"{args.bin} is missing: run cargo build --release first")

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    up_port = upstream.server_address[1]

    work = tempfile.mkdtemp(prefix="hermes-soak-")
    config = os.path.join(work, "routes.toml")
    write_config(config, config_text(up_port, 0))
    port = free_port()
    proxy_log = os.path.join(work, "proxy.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_")}
    env.setdefault("RUST_LOG", "warn")
    with open(proxy_log, "w") as out:
        proxy = subprocess.Popen([args.bin, "--config", config, "--listen", f"127.0.0.1:{port}"],
                                 cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)

    def stop(*_):
        if proxy.poll() is None:
            proxy.send_signal(signal.SIGTERM)
            try:
                proxy.wait(15)
            except subprocess.TimeoutExpired:
                proxy.kill()
        upstream.shutdown()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        wait_ready(proxy, port)
        tally = Tally()
        duration = args.minutes * 60
        until = time.monotonic() + duration
        log(f"soak: {args.minutes:g} min, {args.clients} clients, proxy pid {proxy.pid} on :{port}, "
            f"upstream :{up_port}, work dir {work}")
        threads = [threading.Thread(target=client, args=(port, until, tally, i), daemon=True)
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(min(10.0, duration / 4))  # warm-up: pools, caches, first streams
        rss_start, _ = rss_kib(proxy.pid)
        generation = 0
        next_reload = time.monotonic() + RELOAD_EVERY
        last_report = time.monotonic()
        samples = []
        while time.monotonic() < until:
            time.sleep(0.2)
            if time.monotonic() >= next_reload:
                generation += 1
                write_config(config, config_text(up_port, generation))
                next_reload += RELOAD_EVERY
            if time.monotonic() - last_report >= 30:
                last_report = time.monotonic()
                rss, _ = rss_kib(proxy.pid)
                samples.append(rss)
                done = sum(tally.ok.values())
                log(f"soak: {time.monotonic() - START:6.0f}s  ok {done}  failed {len(tally.failures)}  "
                    f"RSS {rss / 1024:.1f} MiB")
        for t in threads:
            t.join(60)
        time.sleep(1)  # the last reload and the last streams settle
        rss_end, hwm = rss_kib(proxy.pid)
        metrics = get(port, "/metrics")[1]
        reloads_ok = metric(metrics, "hermes_config_reloads_total", result="success")
        reloads_failed = metric(metrics, "hermes_config_reloads_total", result="failure")
        fallbacks = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                        if line.startswith("hermes_fallbacks_total{"))
    finally:
        stop()
    with open(proxy_log, errors="replace") as f:
        panics = sum(1 for line in f if "panicked" in line)

    total = sum(tally.ok.values()) + len(tally.failures)
    result = {
        "minutes": args.minutes, "clients": args.clients, "requests": total,
        "ok": tally.ok, "failed": len(tally.failures), "failures": tally.failures[:20],
        "rss_start_mib": round(rss_start / 1024, 1), "rss_end_mib": round(rss_end / 1024, 1),
        "rss_peak_mib": round(hwm / 1024, 1), "rss_samples_mib": [round(s / 1024, 1) for s in samples],
        "json_p50_ms": percentile(tally.json_ms, 50), "json_p99_ms": percentile(tally.json_ms, 99),
        "ttft_p50_ms": percentile(tally.ttft_ms, 50), "ttft_p99_ms": percentile(tally.ttft_ms, 99),
        "reloads_written": generation, "reloads_ok": reloads_ok, "reloads_failed": reloads_failed,
        "upstream": dict(Upstream.served), "fallbacks": fallbacks, "panics": panics,
        "proxy_exit": proxy.returncode,
    }
    out_dir = os.path.join(target_dir, "hermes-soak")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(result, f, indent=2)

    def ms(v):
        return "-" if v is None else f"{v:.1f}"

    print(f"requests      {total} in {args.minutes:g} min: json {tally.ok['json']}, streams {tally.ok['stream']}, "
          f"dropped mid-stream {tally.ok['disconnect']}")
    print(f"failed        {len(tally.failures)}")
    for kind, what in tally.failures[:10]:
        print(f"  {kind}: {what}")
    print(f"RSS           {result['rss_start_mib']} MiB after warm-up -> {result['rss_end_mib']} MiB at the end "
          f"(peak {result['rss_peak_mib']} MiB)")
    print(f"JSON chat     p50 {ms(result['json_p50_ms'])} ms, p99 {ms(result['json_p99_ms'])} ms")
    print(f"stream TTFT   p50 {ms(result['ttft_p50_ms'])} ms, p99 {ms(result['ttft_p99_ms'])} ms")
    print(f"429 storms    {Upstream.served['rate_limited']} answered 429 by the primary; "
          f"{fallbacks:.0f} fallbacks")
    print(f"reloads       {generation} written, {reloads_ok:.0f} applied, {reloads_failed:.0f} rejected")
    print(f"panics        {panics}; proxy exit status {proxy.returncode} after SIGTERM")
    problems = len(tally.failures) + panics + (proxy.returncode != 0)
    if problems:
        print(f"proxy log kept in {proxy_log}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
