#!/usr/bin/env python3
"""Load benchmark: hermes-proxy against the upstream direct, nginx proxy_pass,
Portkey's gateway and LiteLLM's proxy, interleaved in one run. Standard
library only (the peers are installed by run.sh --install).

Run through ./run.sh (which builds the release binary first); see README.md.

  bench.py [all]      the comparison: startup, throughput (wrk), latency at a
                      fixed rate (oha), streams (TTFT, per-chunk), RSS
  bench.py streams    N concurrent open streams through hermes-proxy, and its RSS
  bench.py responses  a Responses request's proxy overhead beside a chat request's
  bench.py cluster    one replica with and without Redis ([cluster]) side by side
  bench.py sse-server internal: the paced SSE upstream

Everything listens on 127.0.0.1 ephemeral ports; every process started here
is stopped on exit (normal, error or signal).
"""

import argparse
import asyncio
import json
import os
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
VENV = os.environ.get("HERMES_BENCH_VENV", os.path.join(HERE, ".venv"))
# npm peers (package.json and package-lock.json there pin them; node_modules
# is installed by run.sh --install and not committed)
NODE_PEERS = os.environ.get("HERMES_BENCH_NODE", os.path.join(HERE, "node"))

# A chat completion as OpenAI answers one; usage already in OpenAI form, so
# the proxy has nothing to rewrite (the common case).
CANNED = (
    '{"id":"chatcmpl-bench0001","object":"chat.completion","created":1730000000,'
    '"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1",'
    '"choices":[{"index":0,"message":{"role":"assistant","content":"Rome. It is the capital '
    'of Italy and has been for a long time; the Colosseum and the Vatican are there.",'
    '"refusal":null},"logprobs":null,"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":57,"completion_tokens":24,"total_tokens":81,'
    '"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},'
    '"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0}}}'
)

# The request every client sends, to every target.
REQUEST = {
    "model": "bench",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
    ],
    "temperature": 0.2,
    "max_tokens": 64,
}

# Every client sends this key. Only LiteLLM checks it (it refuses to start
# without a master key); hermes-proxy (no [[server.keys]]) and nginx ignore it,
# Portkey forwards it to the upstream as the OpenAI key, which nginx ignores.
KEY = "sk-bench-" + secrets.token_hex(24)

PROCS = []  # (name, Popen) of everything started, for cleanup


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(name, argv, env=None, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
    p = subprocess.Popen(
        argv,
        env=env,
        stdout=stdout,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: workers stop with it
    )
    PROCS.append((name, p))
    return p


def stop(p, grace=3.0):
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def stop_all():
    while PROCS:
        _, p = PROCS.pop()
        stop(p)


def http_get_status(port, path, timeout=0.2):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64)
            m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
            return int(m.group(1)) if m else None
    except OSError:
        return None


def wait_ready(p, port, path, limit):
    """Seconds from now until `path` answers 200 (polled every 1 ms)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        if p.poll() is not None:
            raise RuntimeError(f"process exited with {p.returncode} before it was ready")
        if http_get_status(port, path) == 200:
            return time.perf_counter() - t0
        time.sleep(0.001)
    raise RuntimeError(f"not ready on :{port}{path} within {limit}s")


def rss_kib(pid):
    """(VmRSS, VmHWM) in KiB of pid and its children together."""
    pids = [pid]
    try:
        for line in open(f"/proc/{pid}/task/{pid}/children").read().split():
            pids.append(int(line))
    except OSError:
        pass
    rss = hwm = 0
    for q in pids:
        try:
            for line in open(f"/proc/{q}/status"):
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm += int(line.split()[1])
        except OSError:
            pass
    return rss, hwm


# ---------------------------------------------------------------------------
# targets


class Target:
    def __init__(self, name, port, sse_port, health, proc=None, started=None, headers=(), sse_headers=()):
        self.name = name
        self.port = port  # chat completions (JSON)
        self.sse_port = sse_port  # chat completions (streams)
        self.health = health
        self.proc = proc
        # extra request headers: Portkey is told its upstream per request
        self.headers = list(headers)
        self.sse_headers = list(sse_headers)
        self.ready_s = []
        if started is not None:
            self.ready_s.append(started)
        self.rss = {}

    def url(self):
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"


def nginx_conf(tmp, name, workers, body):
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    conf = f"""
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{body}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path, d


def start_nginx(tmp, name, workers, body, port):
    path, d = nginx_conf(tmp, name, workers, body)
    p = spawn(name, ["nginx", "-p", d, "-c", path, "-g", "daemon off;"],
              stderr=open(os.path.join(d, "stderr.log"), "w"))
    return p, wait_ready(p, port, "/health", 10)


def start_upstream(tmp):
    port = free_port()
    body = f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /health {{ return 200 'ok'; }}
        location / {{ default_type application/json; return 200 '{CANNED}'; }}
    }}"""
    p, _ = start_nginx(tmp, "upstream", 1, body, port)
    return p, port


def start_sse_upstream():
    port = free_port()
    p = spawn("sse-upstream", [sys.executable, os.path.abspath(__file__), "sse-server", "--port", str(port)])
    wait_ready(p, port, "/health", 10)
    return p, port


def start_nginx_proxy(tmp, up, sse_up):
    """nginx as a reverse proxy with keep-alive upstreams; like hermes-proxy
    at its defaults, it writes an access log line per request (to a file)."""
    port, sse_port = free_port(), free_port()
    log_path = os.path.join(tmp, "nginx-proxy-access.log")
    loc = """proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off;"""
    body = f"""
    upstream up {{ server 127.0.0.1:{up}; keepalive 256; }}
    upstream sse {{ server 127.0.0.1:{sse_up}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        access_log {log_path} combined;
        location = /health {{ return 200 'ok'; }}
        location / {{ proxy_pass http://up; {loc} }}
    }}
    server {{
        listen 127.0.0.1:{sse_port} backlog=4096;
        access_log {log_path} combined;
        location / {{ proxy_pass http://sse; {loc} }}
    }}"""
    p, ready = start_nginx(tmp, "nginx-proxy", "auto", body, port)
    return Target("nginx proxy_pass", port, sse_port, "/health", p, ready)


def hermes_binary():
    # run.sh's cargo build honours CARGO_TARGET_DIR; so does this
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    return os.environ.get("HERMES_BIN", os.path.join(target, "release", "hermes-proxy"))


def hermes_config(tmp, up, sse_up, name="routes.toml", extra=""):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(f"""
[server]
listen = "127.0.0.1:8080"

[providers.up]
kind = "openai"
base_url = "http://127.0.0.1:{up}/v1"

[providers.sse]
kind = "openai"
base_url = "http://127.0.0.1:{sse_up}/v1"

[routes.bench]
targets = [{{ provider = "up", model = "gpt-4o-mini" }}]

[routes.bench-sse]
targets = [{{ provider = "sse", model = "gpt-4o-mini" }}]
{extra}
""")
    return path


def start_hermes(config, port, log_path=os.devnull, extra_env=None):
    env = dict(os.environ)
    env.pop("RUST_LOG", None)  # default settings: info-level access log
    for k in ("MOONSHOT_API_KEY", "OPENROUTER_API_KEY", "HERMES_CONFIG", "HERMES_LISTEN"):
        env.pop(k, None)
    env.update(extra_env or {})
    p = spawn("hermes", [hermes_binary(), "serve", "--config", config, "--listen", f"127.0.0.1:{port}"],
              env=env, stderr=open(log_path, "w"))
    return p, wait_ready(p, port, "/health", 10)


def litellm_bin():
    path = os.path.join(VENV, "bin", "litellm")
    return path if os.access(path, os.X_OK) else None


def start_litellm(tmp, up, sse_up, port):
    cfg = os.path.join(tmp, "litellm.yaml")
    with open(cfg, "w") as f:
        f.write(f"""model_list:
  - model_name: bench
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:{up}/v1
      api_key: sk-bench
  - model_name: bench-sse
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:{sse_up}/v1
      api_key: sk-bench
litellm_settings:
  telemetry: false
  set_verbose: false
""")
    env = dict(os.environ)
    env.update({
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the cost map at start
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "DISABLE_ADMIN_UI": "True",
        "NO_DOCS": "True",
        "LITELLM_MASTER_KEY": KEY,
    })
    for k in ("DATABASE_URL", "OPENAI_API_KEY"):
        env.pop(k, None)
    p = spawn("litellm", [litellm_bin(), "--config", cfg, "--host", "127.0.0.1", "--port", str(port),
                          "--num_workers", "1"],
              env=env, stdout=open(os.path.join(tmp, "litellm.log"), "w"), stderr=subprocess.STDOUT)
    return p, wait_ready(p, port, "/health/liveliness", 120)


def portkey_entry():
    path = os.path.join(NODE_PEERS, "node_modules", "@portkey-ai", "gateway", "build", "start-server.js")
    return path if os.path.isfile(path) and shutil.which("node") else None


def portkey_version():
    try:
        with open(os.path.join(os.path.dirname(os.path.dirname(portkey_entry())), "package.json")) as f:
            return json.load(f)["version"]
    except (OSError, TypeError, ValueError, KeyError):
        return "?"


# Portkey's start-server.js takes only --port and listens on every interface
# (its serve() call passes no hostname). This preload binds a listen(port)
# without a host to 127.0.0.1 instead, so nothing here is reachable from
# outside; it changes nothing else.
LOOPBACK_PRELOAD = """
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number') {
    if (args.length === 1 || args[1] === undefined) args[1] = '127.0.0.1';
    else if (typeof args[1] === 'function') args.splice(1, 0, '127.0.0.1');
  }
  return listen.apply(this, args);
};
"""


def portkey_headers(up):
    """Portkey is configured per request: the provider and its base URL ride
    in headers (no config file). 127.0.0.1 is in its default trusted hosts."""
    return [("x-portkey-provider", "openai"), ("x-portkey-custom-host", f"http://127.0.0.1:{up}/v1")]


def start_portkey(tmp, port, log_name="portkey.log"):
    """Portkey's gateway (npm @portkey-ai/gateway) at its defaults, on Node:
    `--headless` leaves out its browser log console, nothing else."""
    preload = os.path.join(tmp, "loopback.cjs")
    if not os.path.exists(preload):
        with open(preload, "w") as f:
            f.write(LOOPBACK_PRELOAD)
    env = dict(os.environ)
    for k in ("OPENAI_API_KEY", "REDIS_CONNECTION_STRING", "NODE_OPTIONS"):
        env.pop(k, None)
    p = spawn("portkey", ["node", "--require", preload, portkey_entry(), f"--port={port}", "--headless"],
              env=env, stdout=open(os.path.join(tmp, log_name), "w"), stderr=subprocess.STDOUT)
    return p, wait_ready(p, port, "/", 30)


# ---------------------------------------------------------------------------
# load tools


def wrk_script(tmp, body, headers=(), name="post"):
    path = os.path.join(tmp, f"{name}.lua")
    extra = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers)
    with open(path, "w") as f:
        f.write(f"""wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {KEY}"
{extra}function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors":%d,"status_errors":%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
""")
    return path


def run_wrk(url, script, conns, duration, threads):
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--timeout", "10s", "-s", script, url],
        capture_output=True, text=True, timeout=duration + 60,
    ).stdout
    m = re.search(r"WRKJSON (\{.*\})", out)
    if not m:
        raise RuntimeError(f"wrk gave no summary: {out[-500:]}")
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


def oha_bin():
    return shutil.which("oha") or (os.path.expanduser("~/.cargo/bin/oha")
                                   if os.access(os.path.expanduser("~/.cargo/bin/oha"), os.X_OK) else None)


def run_oha(url, body_path, rate, conns, duration, headers=()):
    """Open-loop load at a fixed rate; latencies corrected for coordinated omission."""
    extra = [a for k, v in headers for a in ("-H", f"{k}: {v}")]
    out = subprocess.run(
        [oha_bin(), "--no-tui", "--output-format", "json", "-z", f"{duration}s", "-c", str(conns),
         "-q", str(rate), "--latency-correction", "-m", "POST",
         "-H", "content-type: application/json", "-H", f"authorization: Bearer {KEY}", *extra,
         "-D", body_path, url],
        capture_output=True, text=True, timeout=duration + 60,
    )
    if out.returncode != 0:
        raise RuntimeError(f"oha failed: {out.stderr[-500:]}")
    j = json.loads(out.stdout)
    pct = j.get("latencyPercentiles", {})
    codes = j.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    total = sum(codes.values())
    return {
        "p50_us": pct.get("p50", 0) * 1e6,
        "p99_us": pct.get("p99", 0) * 1e6,
        "rps": j.get("summary", {}).get("requestsPerSec", 0),
        "non2xx": total - ok,
        # requests still in flight when the duration ends are cut, not failed
        "errors": sum(v for k, v in j.get("errorDistribution", {}).items() if "deadline" not in k),
    }


# ---------------------------------------------------------------------------
# streams: a paced SSE upstream and a client that times every chunk
#
# Each chunk's content is "t<ns> ", the upstream's CLOCK_MONOTONIC when it
# wrote the chunk; the client reads the same clock when the chunk arrives, so
# every chunk's delivery latency is measured directly (same machine).


def chunk_json(content, role=False, finish=None):
    delta = {"content": content}
    if role:
        delta = {"role": "assistant", "content": content}
    return json.dumps({
        "id": "chatcmpl-bench0001", "object": "chat.completion.chunk", "created": 1730000000,
        "model": "gpt-4o-mini", "system_fingerprint": "fp_0ba0d124f1",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }, separators=(",", ":"))


async def sse_handle(reader, writer):
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            if method == "GET":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
                await writer.drain()
                continue
            try:
                req = json.loads(body)
            except ValueError:
                req = {}
            n = int(req.get("max_tokens") or 32)
            m = re.match(r"gap_us=(\d+)", str(req.get("user", "")))
            gap = int(m.group(1)) / 1e6 if m else 0.0
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")

            def send(data):
                ev = b"data: " + data + b"\n\n"
                writer.write(b"%x\r\n%s\r\n" % (len(ev), ev))

            for i in range(n):
                if i and gap:
                    await asyncio.sleep(gap)
                send(chunk_json(f"t{time.monotonic_ns()} ", role=(i == 0)).encode())
                await writer.drain()
            send(chunk_json("", finish="stop").encode())
            send(b"[DONE]")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


def sse_server(port):
    async def main():
        server = await asyncio.start_server(sse_handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()
    asyncio.run(main())


class StreamClient:
    """One keep-alive HTTP/1.1 connection; reads a chunked SSE answer."""

    STAMP = re.compile(rb'"content":"t(\d+) ')

    def __init__(self, port, headers=()):
        self.port = port
        self.extra = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers)
        self.sock = None

    def connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        now = time.monotonic_ns()
        self.buf += data
        return now

    def stream(self, chunks, gap_us):
        """Returns (ttft_ns, [per-chunk delivery latency ns], first_ns, last_ns).
        A keep-alive connection the server closed meanwhile is reopened once."""
        try:
            return self._stream(chunks, gap_us)
        except (ConnectionError, BrokenPipeError):
            if not self.reused:
                raise
            self.close()
            return self._stream(chunks, gap_us)

    def _stream(self, chunks, gap_us):
        self.reused = self.sock is not None
        if self.sock is None:
            self.connect()
        body = json.dumps(dict(REQUEST, model="bench-sse", stream=True, max_tokens=chunks,
                               user=f"gap_us={gap_us}")).encode()
        req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Authorization: Bearer %s\r\nAccept: text/event-stream\r\n%s"
               b"Content-Length: %d\r\n\r\n%s" % (KEY.encode(), self.extra, len(body), body))
        sent = time.monotonic_ns()
        self.sock.sendall(req)
        now = sent
        while b"\r\n\r\n" not in self.buf:
            now = self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"stream answered {head[:80]!r}")
        chunked = b"transfer-encoding: chunked" in head.lower()
        lat, ttft, first, last = [], None, None, None
        payload = b""
        done = False
        while not done:
            # decode whatever framing there is into `payload`
            if chunked:
                while True:
                    i = self.buf.find(b"\r\n")
                    if i < 0:
                        break
                    size = int(self.buf[:i].split(b";")[0], 16)
                    if len(self.buf) < i + 2 + size + 2:
                        break
                    payload += self.buf[i + 2:i + 2 + size]
                    self.buf = self.buf[i + 2 + size + 2:]
                    if size == 0:
                        done = True
                        break
            else:
                payload += self.buf
                self.buf = b""
            while b"\n\n" in payload:
                ev, payload = payload.split(b"\n\n", 1)
                m = self.STAMP.search(ev)
                if m:
                    lat.append(now - int(m.group(1)))
                    if ttft is None:
                        ttft, first = now - sent, now
                    last = now
                elif b"[DONE]" in ev and not chunked:
                    done = True
            if not done:
                now = self._fill()
        if len(lat) != chunks:
            raise RuntimeError(f"expected {chunks} stamped chunks, got {len(lat)}")
        if b"connection: close" in head.lower():
            self.close()
        return ttft, lat, first, last


def pctl(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    f = int(k)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)


# ---------------------------------------------------------------------------
# the comparison


def compare(args):
    tmp = tempfile.mkdtemp(prefix="hermes-bench-")
    results = {"meta": machine()}
    body_path = os.path.join(tmp, "body.json")
    body = json.dumps(REQUEST)
    with open(body_path, "w") as f:
        f.write(body)
    try:
        up_proc, up_port = start_upstream(tmp)
        sse_proc, sse_port = start_sse_upstream()
        log(f"upstream nginx :{up_port}, SSE upstream :{sse_port}")

        targets = [Target("direct (floor)", up_port, sse_port, "/health", up_proc)]

        cfg = hermes_config(tmp, up_port, sse_port)
        hport = free_port()
        hp, ready = start_hermes(cfg, hport, log_path=os.path.join(tmp, "hermes.log"))
        hermes = Target("hermes-proxy", hport, hport, "/health", hp, ready)
        time.sleep(0.5)
        hermes.rss["idle"] = rss_kib(hp.pid)[0]
        targets.append(hermes)
        if args.quiet_variant:
            # the same binary without its per-request access log line
            qport = free_port()
            qp, qready = start_hermes(cfg, qport, log_path=os.path.join(tmp, "hermes-quiet.log"),
                                      extra_env={"RUST_LOG": "warn"})
            quiet = Target("hermes-proxy, RUST_LOG=warn", qport, qport, "/health", qp, qready)
            time.sleep(0.5)
            quiet.rss["idle"] = rss_kib(qp.pid)[0]
            targets.append(quiet)

        nginx = start_nginx_proxy(tmp, up_port, sse_port)
        time.sleep(0.5)
        nginx.rss["idle"] = rss_kib(nginx.proc.pid)[0]
        targets.append(nginx)

        litellm = None
        if args.litellm and litellm_bin():
            lport = free_port()
            lp, ready = start_litellm(tmp, up_port, sse_port, lport)
            litellm = Target("LiteLLM proxy", lport, lport, "/health/liveliness", lp, ready)
            time.sleep(1.0)
            litellm.rss["idle"] = rss_kib(lp.pid)[0]
            targets.append(litellm)
        elif args.litellm:
            log("LiteLLM not installed (run.sh --install puts litellm[proxy]==1.106.12 in benches/load/.venv): skipped")

        portkey = None
        if args.portkey and portkey_entry():
            pport = free_port()
            pp, ready = start_portkey(tmp, pport)
            portkey = Target(f"Portkey gateway {portkey_version()}", pport, pport, "/", pp, ready,
                             headers=portkey_headers(up_port), sse_headers=portkey_headers(sse_port))
            time.sleep(1.0)
            portkey.rss["idle"] = rss_kib(pp.pid)[0]
            targets.append(portkey)
        elif args.portkey:
            log("Portkey not installed (run.sh --install puts @portkey-ai/gateway in benches/load/node): skipped")

        # startup-to-ready: extra cold starts of each proxy, one at a time
        for _ in range(args.starts):
            p, r = start_hermes(cfg, free_port())
            hermes.ready_s.append(r)
            stop(p)
            tmp2 = tempfile.mkdtemp(dir=tmp)
            n = start_nginx_proxy(tmp2, up_port, sse_port)
            nginx.ready_s.append(n.ready_s[0])
            stop(n.proc)
            if portkey:
                p, r = start_portkey(tmp, free_port(), log_name="portkey-start.log")
                portkey.ready_s.append(r)
                stop(p)
        log("startup (s): hermes", [round(x, 4) for x in hermes.ready_s],
            "nginx", [round(x, 4) for x in nginx.ready_s],
            "portkey", [round(x, 3) for x in (portkey.ready_s if portkey else [])],
            "litellm", [round(x, 2) for x in (litellm.ready_s if litellm else [])])

        # one wrk script per target: Portkey's carry its routing headers
        scripts = {t.name: wrk_script(tmp, body, t.headers, name=f"post{i}") for i, t in enumerate(targets)}

        # warm-up: fill pools and caches on every path (Node's JIT too)
        for t in targets:
            run_wrk(t.url(), scripts[t.name], args.conns, 1, args.threads)

        # 1. throughput at `conns` connections, closed loop, interleaved rounds
        tput = {t.name: [] for t in targets}
        for r in range(args.rounds):
            order = targets[:]
            random.shuffle(order)
            for t in order:
                res = run_wrk(t.url(), scripts[t.name], args.conns, args.duration, args.threads)
                tput[t.name].append(res)
                log(f"round {r + 1} wrk {t.name}: {res['rps']:.0f} req/s p50 {res['p50_us']}us "
                    f"p99 {res['p99_us']}us errors {res['errors']}+{res['status_errors']}")
        results["throughput"] = tput

        # 2. latency at one fixed rate that hermes-proxy (both settings) and
        # nginx all sustain: half the lowest of their maximums, the same rate
        # for them and the direct floor, so their added latencies compare
        lat = {t.name: [] for t in targets}
        rate = {}
        own_max = {t.name: statistics.median(x["rps"] for x in tput[t.name]) for t in targets}
        compared = [t.name for t in targets if t.name.startswith(("hermes-proxy", "nginx"))]
        common = min(own_max[name] for name in compared) / 2
        for t in targets:
            # a slower peer (Portkey, LiteLLM) at that rate would only
            # measure its queue: half its own maximum
            rate[t.name] = int(min(common, own_max[t.name] / 2))
        if oha_bin():
            for r in range(args.rounds):
                order = targets[:]
                random.shuffle(order)
                for t in order:
                    res = run_oha(t.url(), body_path, rate[t.name], args.conns, args.duration, t.headers)
                    lat[t.name].append(res)
                    log(f"round {r + 1} oha {t.name} @{rate[t.name]}/s: p50 {res['p50_us']:.0f}us "
                        f"p99 {res['p99_us']:.0f}us non-2xx {res['non2xx']} errors {res['errors']}")
        else:
            log("oha not installed (run.sh --install builds it): fixed-rate latency skipped")
        results["latency"] = lat
        results["rate"] = rate

        for t in targets:
            if t.proc is not None and t is not targets[0]:
                t.rss["after_load"], t.rss["peak"] = rss_kib(t.proc.pid)

        # 3. streams: TTFT and per-chunk delivery latency, paced; relay cost, burst
        streams = {t.name: {"ttft": [], "chunk": []} for t in targets}
        clients = {t.name: StreamClient(t.sse_port, t.sse_headers) for t in targets}
        for r in range(args.rounds):
            order = targets[:]
            random.shuffle(order)
            for t in order:
                c = clients[t.name]
                s = streams[t.name]
                for _ in range(args.streams):
                    ttft, lat_ns, _, _ = c.stream(args.chunks, args.gap_us)
                    s["ttft"].append(ttft)
                    s["chunk"].extend(lat_ns[1:])
        for c in clients.values():
            c.close()
        results["streams"] = streams

        results["targets"] = {t.name: {"ready_s": t.ready_s, "rss": t.rss} for t in targets}
        results["args"] = vars(args)
        report(results, targets, hermes, nginx)
        save_results(results, "results.json")
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def save_results(results, name):
    """Writes a run's raw numbers under target/hermes-bench/ and says where."""
    out_dir = os.path.join(REPO, "target", "hermes-bench")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, name)
    with open(out, "w") as f:
        json.dump(results, f, indent=1, default=str)
    log(f"raw numbers: {out}")


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(open("/proc/meminfo").readline().split()[1])
        mem = f"{kb / 1048576:.0f} GiB"
    except (OSError, ValueError):
        pass
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "cpu": cpu, "cores": os.cpu_count(), "mem": mem}


def med(xs, key):
    return statistics.median(x[key] for x in xs) if xs else float("nan")


def fmt_ms(us):
    return "—" if us != us else f"{us / 1000:.2f}"


def report(res, targets, hermes, nginx):
    a = res["args"]
    m = res["meta"]
    direct = targets[0].name
    lines = []
    w = lines.append
    w(f"{m['date']} · {m['cpu']} · {m['cores']} cores · {m['mem']} · "
      f"`benches/load/run.sh` (rounds {a['rounds']} × {a['duration']} s, {a['conns']} connections, "
      f"wrk -t{a['threads']})")
    w("")
    w("| target | req/s @%d conns (wrk) | × direct | fixed rate req/s (oha) | p50 ms | p99 ms | "
      "added p50 ms | added p99 ms | ready ms | RSS idle MiB | RSS after load MiB | peak MiB |" % a["conns"])
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    d_rps = med(res["throughput"][direct], "rps")
    d_p50 = med(res["latency"][direct], "p50_us")
    d_p99 = med(res["latency"][direct], "p99_us")
    for t in targets:
        tp = res["throughput"][t.name]
        lt = res["latency"][t.name]
        rps = med(tp, "rps")
        p50, p99 = med(lt, "p50_us"), med(lt, "p99_us")
        is_direct = t.name == direct
        ready = statistics.median(t.ready_s) * 1000 if t.ready_s else float("nan")
        rss = t.rss
        mib = lambda k: f"{rss[k] / 1024:.1f}" if k in rss else "—"  # noqa: E731
        w(f"| {t.name} | {rps:,.0f} | {rps / d_rps:.2f} | {res['rate'][t.name]:,} | {fmt_ms(p50)} | {fmt_ms(p99)} | "
          f"{'—' if is_direct else fmt_ms(p50 - d_p50)} | {'—' if is_direct else fmt_ms(p99 - d_p99)} | "
          f"{'—' if is_direct else f'{ready:.1f}'} | {mib('idle')} | {mib('after_load')} | {mib('peak')} |")
    w("")
    s = res["streams"]
    w(f"Streams: {a['streams']} streams × {a['chunks']} chunks paced {a['gap_us']} µs apart, per target and "
      f"round. Chunk latency = upstream write → client read of each chunk after the first (same clock).")
    w("")
    w("| target | TTFT p50 ms | TTFT p99 ms | added TTFT p50 ms | chunk latency p50 µs | chunk p99 µs | "
      "added per chunk p50 µs | added per chunk p99 µs |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|")
    dt = pctl(s[direct]["ttft"], 50)
    dc = pctl(s[direct]["chunk"], 50)
    dc99 = pctl(s[direct]["chunk"], 99)
    for t in targets:
        x = s[t.name]
        is_direct = t.name == direct
        t50 = pctl(x["ttft"], 50)
        c50 = pctl(x["chunk"], 50)
        c99 = pctl(x["chunk"], 99)
        w(f"| {t.name} | {t50 / 1e6:.2f} | {pctl(x['ttft'], 99) / 1e6:.2f} | "
          f"{'—' if is_direct else f'{(t50 - dt) / 1e6:.2f}'} | {c50 / 1e3:.0f} | {c99 / 1e3:.0f} | "
          f"{'—' if is_direct else f'{(c50 - dc) / 1e3:.0f}'} | "
          f"{'—' if is_direct else f'{(c99 - dc99) / 1e3:.0f}'} |")
    w("")
    h_rps = med(res["throughput"][hermes.name], "rps")
    n_rps = med(res["throughput"][nginx.name], "rps")
    ratio = h_rps / n_rps
    h_lat = res["latency"][hermes.name]
    added99 = (med(h_lat, "p99_us") - d_p99) / 1000 if h_lat else float("nan")
    rss = hermes.rss
    ready = statistics.median(hermes.ready_s) * 1000
    ok = lambda b: "met" if b else "**missed**"  # noqa: E731
    w("Goals (hermes-proxy, ratios from this run):")
    w("")
    w(f"- throughput ≥ 0.8× nginx proxy_pass at {a['conns']} connections: {ratio:.2f}× — {ok(ratio >= 0.8)}")
    floor50 = d_p50 / 1000
    floor99 = d_p99 / 1000
    if added99 < 0 or floor99 > 5 * floor50:
        verdict = (f"**inconclusive**: the direct floor's own p99 is {floor99:.2f} ms ({floor99 / floor50:.0f}× its "
                   f"p50), so this machine's scheduling noise is larger than the 0.5 ms being measured")
    else:
        verdict = ok(added99 <= 0.5)
    w(f"- p99 added latency ≤ 0.5 ms at the fixed rate ({res['rate'][hermes.name]:,} req/s): "
      f"{added99:.2f} ms (p50 added {(med(h_lat, 'p50_us') - d_p50) / 1000:.2f} ms) — {verdict}")
    n_lat = res["latency"][nginx.name]
    if h_lat and n_lat:
        gap = (med(h_lat, "p50_us") - med(n_lat, "p50_us")) / 1000
        w(f"- added p50 within 0.1 ms of nginx's at the same rate ({res['rate'][nginx.name]:,} req/s): "
          f"{gap:+.2f} ms — {ok(gap <= 0.1)}")
    w(f"- RSS ≤ 30 MiB idle: {rss['idle'] / 1024:.1f} MiB — {ok(rss['idle'] <= 30 * 1024)}; "
      f"≤ 64 MiB after load: {rss.get('peak', 0) / 1024:.1f} MiB peak — {ok(rss.get('peak', 0) <= 64 * 1024)}")
    w(f"- ready ≤ 50 ms after start: {ready:.1f} ms (median of {len(hermes.ready_s)}) — {ok(ready <= 50)}")
    w("- 10,000 concurrent open streams within 256 MiB: `run.sh streams`")
    print("\n".join(lines))


# ---------------------------------------------------------------------------
# N concurrent open streams


async def open_streams(port, n, hold, connect_limit):
    body = json.dumps(dict(REQUEST, model="slow", stream=True)).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    sem = asyncio.Semaphore(connect_limit)
    opened = 0
    failed = 0
    writers = []
    all_open = asyncio.Event()

    async def one():
        nonlocal opened, failed
        try:
            async with sem:
                r, wr = await asyncio.open_connection("127.0.0.1", port)
                writers.append(wr)
                wr.write(req)
                await wr.drain()
                data = b""
                while b"data: " not in data:  # the first event has arrived
                    chunk = await r.read(4096)
                    if not chunk:
                        raise ConnectionError("closed before the first event")
                    data += chunk
                if not data.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(data[:60])
            opened += 1
            if opened + failed == n:
                all_open.set()
            await hold.wait()
        except Exception as e:  # noqa: BLE001
            failed += 1
            if failed <= 3:
                log(f"stream failed: {e!r}")
            if opened + failed == n:
                all_open.set()

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    return tasks, writers, all_open, lambda: (opened, failed)


def streams_mode(args):
    # this client and hermes-proxy each hold one socket per stream
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.n + 1024
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        except (ValueError, OSError) as e:
            log(f"cannot raise the open-files limit: {e}")
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < want:
        log(f"open-files limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} < {want}: some streams will fail")
    tmp = tempfile.mkdtemp(prefix="hermes-streams-")
    try:
        cfg = os.path.join(tmp, "routes.toml")
        with open(cfg, "w") as f:
            f.write("""
[server]
listen = "127.0.0.1:8080"

[providers.slow]
kind = "mock"
chunk_delay = "10s"   # a word every 10 s: every stream stays open for the whole check

[routes.slow]
targets = [{ provider = "slow", model = "demo" }]
""")
        port = free_port()
        p, ready = start_hermes(cfg, port)
        time.sleep(0.5)
        idle = rss_kib(p.pid)[0]

        async def run():
            hold = asyncio.Event()
            t0 = time.perf_counter()
            tasks, writers, all_open, counts = await open_streams(port, args.n, hold, args.connect_limit)
            try:
                await asyncio.wait_for(all_open.wait(), args.timeout)
            except asyncio.TimeoutError:
                pass
            took = time.perf_counter() - t0
            opened, failed = counts()
            await asyncio.sleep(1.0)
            rss, hwm = rss_kib(p.pid)
            hold.set()
            for wr in writers:
                wr.close()
            await asyncio.gather(*tasks, return_exceptions=True)
            return opened, failed, took, rss, hwm

        opened, failed, took, rss, hwm = asyncio.run(run())
        time.sleep(2.0)
        after = rss_kib(p.pid)[0]
        per = (rss - idle) / max(opened, 1)
        print(f"| open streams | failed | time to open s | RSS idle MiB | RSS open MiB | peak MiB | "
              f"KiB per stream | RSS after close MiB | ready ms |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {opened:,} | {failed} | {took:.1f} | {idle / 1024:.1f} | {rss / 1024:.1f} | {hwm / 1024:.1f} | "
              f"{per:.1f} | {after / 1024:.1f} | {ready * 1000:.1f} |")
        goal = "met" if opened == args.n and hwm <= 256 * 1024 else "missed"
        print(f"\n{args.n:,} concurrent open streams within 256 MiB: **{goal}** (peak {hwm / 1024:.1f} MiB)")
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------
# profile: hermes-proxy under load, sampled by perf


def profile_mode(args):
    if not shutil.which("perf"):
        sys.exit("perf is not installed (apt-get install linux-perf)")
    tmp = tempfile.mkdtemp(prefix="hermes-profile-")
    try:
        body = json.dumps(REQUEST)
        script = wrk_script(tmp, body)
        up_proc, up_port = start_upstream(tmp)
        sse_proc, sse_port = start_sse_upstream()
        cfg = hermes_config(tmp, up_port, sse_port)
        port = free_port()
        hp, _ = start_hermes(cfg, port)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        run_wrk(url, script, args.conns, 1, args.threads)  # warm-up
        data = args.output or os.path.join(tmp, "perf.data")
        graph = ["--call-graph", f"dwarf,{args.stack_size}"] if args.call_graph else []
        rec = subprocess.Popen(["perf", "record", "-F", str(args.freq), "-e", "cpu-clock", *graph,
                                "-p", str(hp.pid), "-o", data, "--", "sleep", str(args.duration + 1)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        res = run_wrk(url, script, args.conns, args.duration, args.threads)
        rec.wait()
        log(f"under perf: {res['rps']:.0f} req/s, {res['requests']} requests")
        if args.no_report:
            return
        rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--percent-limit", "0.7",
                              "--sort", args.sort, "--stdio"], capture_output=True, text=True)
        print("\n".join(line.rstrip(" -") for line in rep.stdout.splitlines() if line.strip()))
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)  # --output is a path of its own, outside tmp


def cpu_ticks(pid):
    """User and system clock ticks of a process and its children (nginx's workers)."""
    pids = [pid] + [int(d) for d in os.listdir("/proc") if d.isdigit() and proc_ppid(int(d)) == pid]
    user = system = 0
    for p in pids:
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])
    return user, system


def proc_ppid(pid):
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def cpu_mode(args):
    """CPU time per proxied request (user and kernel, from /proc) while wrk
    runs: hermes-proxy in each --env variant and nginx proxy_pass, interleaved."""
    tmp = tempfile.mkdtemp(prefix="hermes-cpu-")
    try:
        script = wrk_script(tmp, json.dumps(REQUEST))
        up_proc, up_port = start_upstream(tmp)
        sse_proc, sse_port = start_sse_upstream()
        cfg = hermes_config(tmp, up_port, sse_port)
        variants = [(f"hermes-proxy {json.dumps(env) if env else '(default)'}", env) for env in args.env or [{}]]
        # All started before any is measured, as the comparison runs them.
        procs, urls = {}, {}
        for name, env in variants:
            port = free_port()
            procs[name], _ = start_hermes(cfg, port, extra_env=dict(env))
            urls[name] = f"http://127.0.0.1:{port}/v1/chat/completions"
        nginx = start_nginx_proxy(tmp, up_port, sse_port)
        procs[nginx.name], urls[nginx.name] = nginx.proc, nginx.url()
        rows = {name: [] for name in procs}
        tick = os.sysconf("SC_CLK_TCK")
        for url in urls.values():
            run_wrk(url, script, args.conns, 1, args.threads)  # warm-up
        for r in range(args.rounds):
            for name, proc in procs.items():
                u0, s0 = cpu_ticks(proc.pid)
                res = run_wrk(urls[name], script, args.conns, args.duration, args.threads)
                u1, s1 = cpu_ticks(proc.pid)
                if res["errors"] or res["status_errors"]:
                    sys.exit(f"{name}: {res['errors']} failed requests, {res['status_errors']} not 2xx")
                n = max(res["requests"], 1)
                row = (res["rps"], (u1 - u0) / tick / n * 1e6, (s1 - s0) / tick / n * 1e6)
                rows[name].append(row)
                log(f"round {r + 1} {name}: {row[0]:.0f} req/s, user {row[1]:.1f} µs, system {row[2]:.1f} µs a request")
        print(f"CPU per request under wrk ({args.rounds} rounds × {args.duration} s, {args.conns} connections); medians:")
        print("| target | req/s | user µs | system µs | total µs |")
        print("|---|---:|---:|---:|---:|")
        for name in rows:
            rps, user, system = (statistics.median(x[i] for x in rows[name]) for i in range(3))
            print(f"| {name} | {rps:,.0f} | {user:.1f} | {system:.1f} | {user + system:.1f} |")
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def callgrind_mode(args):
    """Instructions per proxied request, counted by callgrind: repeatable on
    a noisy machine, where wall-clock numbers are not."""
    for tool in ("valgrind", "callgrind_control", "oha"):
        if not (shutil.which(tool) or (tool == "oha" and oha_bin())):
            sys.exit(f"{tool} is needed (apt-get install valgrind; run.sh --install for oha)")
    tmp = tempfile.mkdtemp(prefix="hermes-callgrind-")
    try:
        body_path = os.path.join(tmp, "body.json")
        with open(body_path, "w") as f:
            f.write(json.dumps(REQUEST))
        up_proc, up_port = start_upstream(tmp)
        sse_proc, sse_port = start_sse_upstream()
        cfg = hermes_config(tmp, up_port, sse_port)
        port = free_port()
        out = args.output or os.path.join(tmp, "callgrind.out")
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        env.update(args.env or {})
        if args.nginx:
            # the same proxy_pass setup as the comparison, one process, no master
            path, _ = nginx_conf(tmp, "nginx-callgrind", 1, f"""
    upstream up {{ server 127.0.0.1:{up_port}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        access_log {tmp}/nginx-access.log combined;
        location = /health {{ return 200 'ok'; }}
        location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }}
    }}""")
            argv = ["nginx", "-p", tmp, "-c", path, "-g", "daemon off; master_process off;"]
        else:
            argv = [hermes_binary(), "serve", "--config", cfg, "--listen", f"127.0.0.1:{port}"]
        p = spawn("callgrind", ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                f"--callgrind-out-file={out}", *argv],
                  env=env, stderr=open(os.path.join(tmp, "valgrind.log"), "w"))
        wait_ready(p, port, "/health", 120)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"

        def send(n):
            r = subprocess.run([oha_bin(), "--no-tui", "-n", str(n), "-c", str(args.conns), "-m", "POST",
                                "-H", "content-type: application/json", "-D", body_path, url],
                               capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                raise RuntimeError(r.stderr[-300:])

        send(200)  # warm-up: pools, caches, lazily built state
        subprocess.run(["callgrind_control", "-i", "on", str(p.pid)], capture_output=True)
        send(args.requests)
        subprocess.run(["callgrind_control", "-i", "off", str(p.pid)], capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True)
        stop(p, grace=30)
        dumps = sorted(f for f in os.listdir(os.path.dirname(out)) if f.startswith(os.path.basename(out)))
        total = 0
        for d in dumps:
            for line in open(os.path.join(os.path.dirname(out), d)):
                if line.startswith("totals:"):
                    total += int(line.split()[1])
                    break
        print(f"{total / args.requests:,.0f} instructions per request ({args.requests} requests, {args.conns} connections)")
        if args.annotate:
            for d in dumps:
                r = subprocess.run(["callgrind_annotate", "--inclusive=" + ("yes" if args.inclusive else "no"),
                                    os.path.join(os.path.dirname(out), d)], capture_output=True, text=True)
                print("\n".join(r.stdout.splitlines()[:args.annotate]))
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def conversation(turns=20):
    """The 20-turn conversation of benches/hot_path.rs, as chat messages."""
    messages = [{"role": "system", "content": "You are a helpful assistant. Answer briefly and precisely."}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"Question {i}: what is the capital of France, and why is it famous?"})
        messages.append({"role": "assistant", "content": "Paris. It is famous for the Eiffel Tower, the Louvre and its caf\u00e9s."})
    messages.append({"role": "user", "content": "Thanks! One more: and of Italy?"})
    return messages


def responses_mode(args):
    """Chat and Responses side by side through one proxy on the canned upstream:
    the same conversation to /v1/chat/completions (route `chat`), to
    /v1/responses with `store: false` (route `resp`) and stored (route
    `stored`), one keep-alive connection, endpoints interleaved in random
    order each round. Per endpoint: hermes_overhead_seconds (request time
    minus upstream time, as the proxy measures it), the proxy's CPU time per
    request (all its threads, the store's included, from schedstat) and,
    with --callgrind, its instructions per request."""
    import http.client
    tmp = tempfile.mkdtemp(prefix="hermes-responses-")
    try:
        up_proc, up_port = start_upstream(tmp)
        cfg = os.path.join(tmp, "routes.toml")
        with open(cfg, "w") as f:
            f.write(f"""
[providers.up]
kind = "openai"
base_url = "http://127.0.0.1:{up_port}/v1"

[routes.chat]
targets = [{{ provider = "up", model = "gpt-4o-mini" }}]
[routes.resp]
targets = [{{ provider = "up", model = "gpt-4o-mini" }}]
[routes.stored]
targets = [{{ provider = "up", model = "gpt-4o-mini" }}]

[store]
path = "{tmp}/hermes.db"
max_responses = 10000
""")
        port = free_port()
        argv = [hermes_binary(), "serve", "--config", cfg, "--listen", f"127.0.0.1:{port}"]
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        if args.callgrind:
            out = os.path.join(tmp, "callgrind.out")
            argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *argv]
        p = spawn("hermes", argv, env=env, stderr=open(os.path.join(tmp, "hermes.log"), "w"))
        wait_ready(p, port, "/health", 120 if args.callgrind else 10)
        messages = conversation()
        bodies = {
            "chat": ("/v1/chat/completions", {"model": "chat", "messages": messages, "temperature": 0.2, "max_tokens": 256}),
            "resp": ("/v1/responses", {"model": "resp", "instructions": messages[0]["content"],
                                       "input": [dict(m, type="message") for m in messages[1:]],
                                       "temperature": 0.2, "max_output_tokens": 256, "store": False}),
            "stored": ("/v1/responses", {"model": "stored", "instructions": messages[0]["content"],
                                         "input": [dict(m, type="message") for m in messages[1:]],
                                         "temperature": 0.2, "max_output_tokens": 256}),
        }
        conn = http.client.HTTPConnection("127.0.0.1", port)

        def send(route, n):
            path, body = bodies[route]
            data = json.dumps(body).encode()
            for _ in range(n):
                conn.request("POST", path, data, {"content-type": "application/json"})
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    raise RuntimeError(f"{route}: {r.status}")

        def cpu_ns():
            total = 0
            for task in os.listdir(f"/proc/{p.pid}/task"):
                try:
                    total += int(open(f"/proc/{p.pid}/task/{task}/schedstat").read().split()[0])
                except OSError:
                    pass
            return total

        for route in bodies:
            send(route, 50)  # warm-up
        cpu = {r: [] for r in bodies}
        instr = {r: [] for r in bodies}
        for _ in range(args.rounds):
            order = list(bodies)
            random.shuffle(order)
            for route in order:
                if args.callgrind:
                    subprocess.run(["callgrind_control", "-i", "on", str(p.pid)], capture_output=True)
                before = cpu_ns()
                send(route, args.requests)
                cpu[route].append((cpu_ns() - before) / args.requests / 1000)
                if args.callgrind:
                    subprocess.run(["callgrind_control", "-i", "off", str(p.pid)], capture_output=True)
                    instr[route].append(callgrind_dump(p.pid, out) / args.requests)
        conn.close()
        with urllib_open(f"http://127.0.0.1:{port}/metrics") as r:
            metrics = r.read().decode()
        overhead = {}
        for route in bodies:
            total = float(re.search(rf'hermes_overhead_seconds_sum{{route="{route}"}} (\S+)', metrics).group(1))
            count = float(re.search(rf'hermes_overhead_seconds_count{{route="{route}"}} (\S+)', metrics).group(1))
            overhead[route] = total / count * 1e6
        print(f"{args.rounds} rounds x {args.requests} requests per endpoint, one keep-alive connection")
        print("| endpoint | overhead mean µs | × chat | proxy CPU µs per request | × chat |"
              + (" instructions per request | × chat |" if args.callgrind else ""))
        print("|---|---:|---:|---:|---:|" + ("---:|---:|" if args.callgrind else ""))
        names = {"chat": "`/v1/chat/completions`", "resp": "`/v1/responses`, `store: false`",
                 "stored": "`/v1/responses`, stored"}
        base_cpu = statistics.median(cpu["chat"])
        base_instr = statistics.median(instr["chat"]) if instr["chat"] else None
        for route in bodies:
            c = statistics.median(cpu[route])
            line = (f"| {names[route]} | {overhead[route]:.0f} | {overhead[route] / overhead['chat']:.2f} "
                    f"| {c:.0f} | {c / base_cpu:.2f} |")
            if base_instr:
                i = statistics.median(instr[route])
                line += f" {i:,.0f} | {i / base_instr:.2f} |"
            print(line)
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def callgrind_dump(pid, out):
    """Dumps callgrind's counters (which zeroes them) and returns the dump's total."""
    folder, name = os.path.dirname(out), os.path.basename(out)
    before = set(os.listdir(folder))
    subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True)
    for _ in range(100):
        new = [f for f in set(os.listdir(folder)) - before if f.startswith(name)]
        if new:
            time.sleep(0.2)  # let the dump finish writing
            for line in open(os.path.join(folder, new[0])):
                if line.startswith("totals:"):
                    return int(line.split()[1])
        time.sleep(0.1)
    raise RuntimeError("callgrind wrote no dump")


def urllib_open(url):
    import urllib.request
    return urllib.request.urlopen(url, timeout=10)


# ---------------------------------------------------------------------------
# cluster: one replica with and without Redis, side by side


def resp_encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def resp_read(f):
    """One RESP2 reply from a socket's file."""
    line = f.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(f"redis: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [resp_read(f) for _ in range(n)]
    raise RuntimeError(f"redis: unexpected reply {line[:40]!r}")


def redis_cmd(port, *args, timeout=2.0):
    """One command over a fresh raw RESP connection (no redis-cli needed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(resp_encode(*args))
        with s.makefile("rb") as f:
            return resp_read(f)


def start_redis(tmp):
    port = free_port()
    d = os.path.join(tmp, "redis")
    os.makedirs(d, exist_ok=True)
    p = spawn("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", d, "--logfile", os.path.join(d, "redis.log")])
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 10:
        if p.poll() is not None:
            raise RuntimeError(f"redis-server exited with {p.returncode}")
        try:
            if redis_cmd(port, "PING", timeout=0.2) == "PONG":
                return p, port
        except (OSError, RuntimeError):
            pass
        time.sleep(0.01)
    raise RuntimeError("redis-server did not answer PING within 10 s")


def redis_info(port, section):
    """INFO `section` as {field: value}; commandstats values as dicts."""
    out = {}
    for line in redis_cmd(port, "INFO", section).splitlines():
        if ":" not in line or line.startswith("#"):
            continue
        k, v = line.split(":", 1)
        if "=" in v:
            out[k] = {a: b for a, b in (kv.split("=", 1) for kv in v.split(","))}
        else:
            out[k] = v
    return out


def redis_scripts(port):
    """(EVAL + EVALSHA calls, their server-side µs in total) so far."""
    stats = redis_info(port, "commandstats")
    calls = usec = 0
    for cmd in ("cmdstat_evalsha", "cmdstat_eval"):
        if cmd in stats:
            calls += int(stats[cmd]["calls"])
            usec += int(stats[cmd]["usec"])
    return calls, usec


def redis_ping_us(port, n=2000):
    """Round trips of PING from this (Python) client over one connection,
    µs: the loopback round trip with Redis's least work, as a reference."""
    times = []
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        msg = resp_encode("PING")
        for _ in range(n):
            t0 = time.perf_counter_ns()
            s.sendall(msg)
            if s.recv(64) != b"+PONG\r\n":
                raise RuntimeError("PING: unexpected reply")
            times.append((time.perf_counter_ns() - t0) / 1000)
    return {"p50": pctl(times, 50), "p99": pctl(times, 99)}


def cpu_ns(pid):
    """CPU time of every thread of pid so far, ns (schedstat; /proc/pid/stat's
    ticks are 10 ms, too coarse for a 5 s run)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            total += int(open(f"/proc/{pid}/task/{task}/schedstat").read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def cluster_config(tmp, name, up, limits, redis):
    """The bench route over the canned upstream, a client key (the bench's
    bearer KEY, from HERMES_BENCH_KEY). With `limits`, the provider's rpm/tpm
    and the key's rpm are set far above any rate this machine reaches: checked
    on every request, never refusing. With `redis`, [cluster] as well."""
    path = os.path.join(tmp, name)
    provider_limits = "rpm = 1_000_000_000\ntpm = 1_000_000_000_000\n" if limits else ""
    key_limit = "rpm = 1_000_000_000\n" if limits else ""
    cluster = '\n[cluster]\nredis_url_env = "HERMES_REDIS_URL"\n' if redis else ""
    with open(path, "w") as f:
        f.write(f"""
[server]
listen = "127.0.0.1:8080"

[[server.keys]]
name = "bench"
key_env = "HERMES_BENCH_KEY"
{key_limit}
[providers.up]
kind = "openai"
base_url = "http://127.0.0.1:{up}/v1"
{provider_limits}
[routes.bench]
targets = [{{ provider = "up", model = "gpt-4o-mini" }}]
{cluster}""")
    return path


def cluster_mode(args):
    """One replica without and with Redis ([cluster]), otherwise the same
    config, interleaved in one run: throughput (wrk, closed loop) and latency
    at one fixed rate (oha, open loop), the direct upstream for reference."""
    for tool in ("wrk", "nginx", "redis-server"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed (apt-get install wrk nginx redis-server)")
    if not oha_bin():
        sys.exit("oha is needed (run.sh --install builds it)")
    tmp = tempfile.mkdtemp(prefix="hermes-cluster-")
    body = json.dumps(REQUEST)
    body_path = os.path.join(tmp, "body.json")
    with open(body_path, "w") as f:
        f.write(body)
    results = {"meta": machine(), "args": vars(args)}
    try:
        up_proc, up_port = start_upstream(tmp)
        redis_proc, redis_port = start_redis(tmp)
        log(f"upstream nginx :{up_port}, redis-server :{redis_port} (pid {redis_proc.pid})")
        targets = [Target("direct (floor)", up_port, up_port, "/health", up_proc)]
        targets[0].limits = targets[0].redis = False
        pairs = [("limits", True)] + ([("no limits", False)] if args.unlimited else [])
        pair_of = {}  # with-Redis target name -> its without-Redis twin's
        cluster_targets = []
        for label, limits in pairs:
            names = []
            for redis in (False, True):
                name = f"{label}, {'with' if redis else 'without'} Redis"
                slug = re.sub(r"\W+", "-", name).strip("-")
                cfg = cluster_config(tmp, f"{slug}.toml", up_port, limits, redis)
                env = {"HERMES_BENCH_KEY": KEY}
                if redis:
                    env["HERMES_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
                port = free_port()
                p, ready = start_hermes(cfg, port, log_path=os.path.join(tmp, f"{slug}.log"), extra_env=env)
                t = Target(name, port, port, "/health", p, ready)
                t.log_path = os.path.join(tmp, f"{slug}.log")
                t.limits, t.redis = limits, redis
                targets.append(t)
                names.append(name)
                if redis:
                    cluster_targets.append(t)
            pair_of[names[1]] = names[0]
        script = wrk_script(tmp, body)
        time.sleep(0.5)

        # warm-up (pools, the script loaded into Redis), and the fixed rate:
        # a quarter of the slowest replica's warm-up throughput, the same for
        # all (on 2 shared cores half of it already measures queues, not the
        # per-request cost)
        warm = {}
        for t in targets:
            warm[t.name] = run_wrk(t.url(), script, args.conns, args.warmup, args.threads)["rps"]
            log(f"warm-up {t.name}: {warm[t.name]:.0f} req/s")
        rate = args.rate or int(min(v for k, v in warm.items() if k != targets[0].name) / 4)
        results["rate"] = rate
        log(f"fixed rate for oha: {rate} req/s")

        tput = {t.name: [] for t in targets}
        lat = {t.name: [] for t in targets}  # oha at `conns` connections
        lat1 = {t.name: [] for t in targets}  # oha on one connection: no queue behind other requests
        proxy_cpu = {t.name: [] for t in targets}  # µs of the proxy per request, wrk runs
        redis_cpu = {t.name: [] for t in targets}  # µs of redis-server per request, wrk runs
        scripts_per = {t.name: [] for t in targets}  # EVAL/EVALSHA calls per request
        script_usec = {t.name: [] for t in targets}  # Redis's own µs per script call
        seen_keys = []

        def peek_keys():
            # the limit keys live ~1 ms past each request (their TTL is the
            # GCRA's slack at these limits): look while the load runs
            time.sleep(args.duration / 2)
            try:
                seen_keys.extend(redis_cmd(redis_port, "KEYS", "*") or [])
            except (OSError, RuntimeError) as e:
                log(f"KEYS failed: {e}")

        for r in range(args.rounds):
            order = targets[:]
            random.shuffle(order)
            for t in order:
                calls0, usec0 = redis_scripts(redis_port)
                rc0 = cpu_ns(redis_proc.pid)
                pc0 = cpu_ns(t.proc.pid)
                peek = None
                if t.redis and t.limits and not seen_keys:
                    peek = threading.Thread(target=peek_keys)
                    peek.start()
                res = run_wrk(t.url(), script, args.conns, args.duration, args.threads)
                if peek:
                    peek.join()
                pc1 = cpu_ns(t.proc.pid)
                rc1 = cpu_ns(redis_proc.pid)
                calls1, usec1 = redis_scripts(redis_port)
                n = max(res["requests"], 1)
                tput[t.name].append(res)
                if t is not targets[0]:
                    proxy_cpu[t.name].append((pc1 - pc0) / n / 1000)
                    redis_cpu[t.name].append((rc1 - rc0) / n / 1000)
                    scripts_per[t.name].append((calls1 - calls0) / n)
                    if calls1 > calls0:
                        script_usec[t.name].append((usec1 - usec0) / (calls1 - calls0))
                log(f"round {r + 1} wrk {t.name}: {res['rps']:.0f} req/s p50 {res['p50_us']}us "
                    f"p99 {res['p99_us']}us errors {res['errors']}+{res['status_errors']} "
                    f"scripts/req {(calls1 - calls0) / n:.2f}")
            order = targets[:]
            random.shuffle(order)
            for t in order:
                res = run_oha(t.url(), body_path, rate, args.conns, args.duration)
                lat[t.name].append(res)
                log(f"round {r + 1} oha {t.name} @{rate}/s: p50 {res['p50_us']:.0f}us "
                    f"p99 {res['p99_us']:.0f}us rps {res['rps']:.0f} non-2xx {res['non2xx']} "
                    f"errors {res['errors']}")
            order = targets[:]
            random.shuffle(order)
            for t in order:
                res = run_oha(t.url(), body_path, args.rate1, 1, args.duration)
                lat1[t.name].append(res)
                log(f"round {r + 1} oha -c1 {t.name} @{args.rate1}/s: p50 {res['p50_us']:.0f}us "
                    f"p99 {res['p99_us']:.0f}us non-2xx {res['non2xx']} errors {res['errors']}")

        # proof that the Redis path was taken
        checks = {"keys_seen": sorted(set(seen_keys)), "redis_up": {}, "fallbacks": {},
                  "dbsize_after": redis_cmd(redis_port, "DBSIZE")}
        for t in cluster_targets:
            with urllib_open(f"http://127.0.0.1:{t.port}/metrics") as resp:
                m = re.search(r"^hermes_cluster_redis_up (\S+)$", resp.read().decode(), re.M)
            checks["redis_up"][t.name] = m.group(1) if m else "absent"
            with open(t.log_path, errors="replace") as f:
                checks["fallbacks"][t.name] = sum("redis is unreachable" in line for line in f)
        errors = sum(x["errors"] + x["status_errors"] for v in tput.values() for x in v) + \
            sum(x["errors"] + x["non2xx"] for L in (lat, lat1) for v in L.values() for x in v)
        checks["errors"] = errors
        results["ping_us"] = redis_ping_us(redis_port)
        results.update(throughput=tput, latency=lat, latency1=lat1, proxy_cpu_us=proxy_cpu, redis_cpu_us=redis_cpu,
                       scripts_per_request=scripts_per, script_server_us=script_usec, checks=checks)
        cluster_report(results, targets, pair_of)
        save_results(results, "cluster.json")
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def cluster_report(res, targets, pair_of):
    a, m = res["args"], res["meta"]
    tput, lat, lat1 = res["throughput"], res["latency"], res["latency1"]
    w = print
    w(f"{m['date']} · {m['cpu']} · {m['cores']} cores · {m['mem']} · `benches/load/run.sh cluster` "
      f"(rounds {a['rounds']} × {a['duration']} s: wrk -t{a['threads']} -c{a['conns']}; oha -c{a['conns']} "
      f"at {res['rate']:,} req/s and oha -c1 at {a['rate1']:,} req/s, both --latency-correction)")
    w("")
    w("| system | req/s best | req/s median | × without Redis: median (rounds min–max) | "
      "proxy CPU µs/req | redis-server CPU µs/req | scripts/req |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    for t in targets:
        rps = [x["rps"] for x in tput[t.name]]
        ratio = "—"
        twin = pair_of.get(t.name)
        if twin:
            tw = [x["rps"] for x in tput[twin]]
            per_round = [x / y for x, y in zip(rps, tw)]
            ratio = (f"**{statistics.median(rps) / statistics.median(tw):.2f}** "
                     f"({min(per_round):.2f}–{max(per_round):.2f})")
        direct = t is targets[0]
        cpu = "—" if direct else f"{statistics.median(res['proxy_cpu_us'][t.name]):.0f}"
        rcpu = "—" if not t.redis else f"{statistics.median(res['redis_cpu_us'][t.name]):.1f}"
        calls = "—" if not t.redis else f"{statistics.median(res['scripts_per_request'][t.name]):.2f}"
        w(f"| {t.name} | {max(rps):,.0f} | {statistics.median(rps):,.0f} | {ratio} | {cpu} | {rcpu} | {calls} |")
    w("")
    w(f"| system | p50 ms @{a['conns']} conns | p99 ms | added p50 ms | added p99 ms | "
      f"p50 ms @1 conn | p99 ms | added p50 ms | added p99 ms |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in targets:
        cells = []
        for L in (lat, lat1):
            p50, p99 = med(L[t.name], "p50_us"), med(L[t.name], "p99_us")
            twin = pair_of.get(t.name)
            add50 = f"**{(p50 - med(L[twin], 'p50_us')) / 1000:+.3f}**" if twin else "—"
            add99 = f"**{(p99 - med(L[twin], 'p99_us')) / 1000:+.3f}**" if twin else "—"
            cells += [f"{p50 / 1000:.3f}", f"{p99 / 1000:.3f}", add50, add99]
        w(f"| {t.name} | " + " | ".join(cells) + " |")
    w("")
    w("Added = with Redis minus without, medians of the rounds, same run.")
    w("")
    for t in targets:
        if t.name in pair_of and res["script_server_us"][t.name]:
            w(f"- {t.name}: Redis's own time per script call (INFO commandstats) "
              f"{statistics.median(res['script_server_us'][t.name]):.1f} µs; a bare PING round trip "
              f"from a Python client after the run: p50 {res['ping_us']['p50']:.0f} µs, "
              f"p99 {res['ping_us']['p99']:.0f} µs")
    # the whole cost of shared limits: with Redis against a replica with no limits at all
    if "limits, with Redis" in tput and "no limits, without Redis" in tput:
        x, y = "limits, with Redis", "no limits, without Redis"
        rr = statistics.median(r["rps"] for r in tput[x]) / statistics.median(r["rps"] for r in tput[y])
        w(f"- {x} against {y} (limits and Redis together): {rr:.2f}× throughput; added p50/p99 "
          f"{(med(lat[x], 'p50_us') - med(lat[y], 'p50_us')) / 1000:+.3f}/"
          f"{(med(lat[x], 'p99_us') - med(lat[y], 'p99_us')) / 1000:+.3f} ms @{a['conns']} conns, "
          f"{(med(lat1[x], 'p50_us') - med(lat1[y], 'p50_us')) / 1000:+.3f}/"
          f"{(med(lat1[x], 'p99_us') - med(lat1[y], 'p99_us')) / 1000:+.3f} ms @1 conn")
    spread = {}
    for label, L in ((f"@{a['conns']} conns", lat), ("@1 conn", lat1)):
        sp = {t.name: max(x["p99_us"] for x in L[t.name]) - min(x["p99_us"] for x in L[t.name]) for t in targets}
        spread[label] = sp
        w(f"- p99 spread between rounds {label} (max − min, ms): "
          + ", ".join(f"{k} {v / 1000:.3f}" for k, v in sp.items()))
    c = res["checks"]
    w(f"- Redis path taken: limit keys seen in Redis under load: {', '.join(c['keys_seen']) or '**none**'}; "
      f"`hermes_cluster_redis_up` at the end: "
      + ", ".join(f"{k} {v}" for k, v in c["redis_up"].items())
      + "; fallbacks to local state logged: "
      + ", ".join(f"{k} {v}" for k, v in c["fallbacks"].items())
      + f"; failed or non-2xx requests in the run: {c['errors']}")
    ok = lambda b: "met" if b else "**missed**"  # noqa: E731
    for name, twin in pair_of.items():
        rps = statistics.median(x["rps"] for x in tput[name]) / statistics.median(x["rps"] for x in tput[twin])
        parts = []
        for label, L in ((f"@{a['conns']} conns", lat), ("@1 conn", lat1)):
            add99 = (med(L[name], "p99_us") - med(L[twin], "p99_us")) / 1000
            noise = max(spread[label][name], spread[label][twin]) / 1000
            v = f"{add99:+.3f} ms {label} — {ok(add99 <= 0.2)}"
            if noise > 0.2:
                v += f" (rounds' p99 spread {noise:.2f} ms)"
            parts.append(v)
        w(f"- goal, {name}: throughput ≥ 0.9× without Redis: {rps:.2f}× — {ok(rps >= 0.9)}; "
          f"added p99 ≤ 0.2 ms: " + "; ".join(parts))

# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    sub = ap.add_subparsers(dest="mode")
    a = sub.add_parser("all", help="the comparison (default)")
    for p in (ap, a):
        p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
        p.add_argument("--duration", type=int, default=5, help="seconds per measurement (default 5)")
        p.add_argument("--conns", type=int, default=16, help="client connections (default 16)")
        p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
        p.add_argument("--starts", type=int, default=5, help="extra cold starts per proxy (default 5)")
        p.add_argument("--streams", type=int, default=20, help="paced streams per target per round")
        p.add_argument("--chunks", type=int, default=32, help="chunks per paced stream")
        p.add_argument("--gap-us", type=int, default=2000, help="gap between paced chunks (µs)")
        p.add_argument("--no-litellm", dest="litellm", action="store_false", help="skip LiteLLM")
        p.add_argument("--no-portkey", dest="portkey", action="store_false", help="skip Portkey's gateway")
        p.add_argument("--no-quiet-variant", dest="quiet_variant", action="store_false",
                       help="skip the hermes-proxy row without its access log (RUST_LOG=warn)")
    s = sub.add_parser("streams", help="N concurrent open streams through hermes-proxy")
    s.add_argument("--n", type=int, default=10000)
    s.add_argument("--connect-limit", type=int, default=256, help="connections being opened at once")
    s.add_argument("--timeout", type=float, default=120)
    pr = sub.add_parser("profile", help="perf record hermes-proxy under wrk load")
    pr.add_argument("--duration", type=int, default=10)
    pr.add_argument("--conns", type=int, default=16)
    pr.add_argument("--threads", type=int, default=2)
    pr.add_argument("--freq", type=int, default=2000)
    pr.add_argument("--sort", default="dso,symbol")
    pr.add_argument("--call-graph", action="store_true", help="DWARF call graphs (large files)")
    pr.add_argument("--stack-size", type=int, default=16384,
                    help="bytes of stack copied per sample with --call-graph (default 16384; at most 65528)")
    pr.add_argument("--no-report", action="store_true", help="record only (with --output), no perf report")
    pr.add_argument("--output", help="keep perf.data here")
    cg = sub.add_parser("callgrind", help="instructions per request under callgrind")
    cg.add_argument("--requests", type=int, default=2000)
    cg.add_argument("--conns", type=int, default=4)
    cg.add_argument("--annotate", type=int, default=0, help="print this many lines of callgrind_annotate")
    cg.add_argument("--inclusive", action="store_true")
    cg.add_argument("--env", type=json.loads, help='extra environment for hermes-proxy, JSON: {"RUST_LOG":"warn"}')
    cg.add_argument("--output", help="callgrind output file (kept)")
    cg.add_argument("--nginx", action="store_true", help="count nginx proxy_pass instead, for scale")
    cpu = sub.add_parser("cpu", help="CPU time per request, hermes-proxy variants beside nginx")
    cpu.add_argument("--rounds", type=int, default=3)
    cpu.add_argument("--duration", type=int, default=5)
    cpu.add_argument("--conns", type=int, default=16)
    cpu.add_argument("--threads", type=int, default=2)
    cpu.add_argument("--env", type=json.loads,
                     help='hermes-proxy variants, a JSON list of environments: [{}, {"TOKIO_WORKER_THREADS":"1"}]')
    rs = sub.add_parser("responses", help="a Responses request's overhead beside a chat request's")
    rs.add_argument("--rounds", type=int, default=3)
    rs.add_argument("--requests", type=int, default=500, help="requests per endpoint and round")
    rs.add_argument("--callgrind", action="store_true", help="also count instructions (slow)")
    cl = sub.add_parser("cluster", help="one replica with and without Redis, side by side")
    cl.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    cl.add_argument("--duration", type=int, default=3, help="seconds per measurement (default 3)")
    cl.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per system (default 2)")
    cl.add_argument("--conns", type=int, default=16, help="client connections (default 16)")
    cl.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    cl.add_argument("--rate", type=int, default=0,
                    help="oha's fixed rate (default: a quarter of the slowest replica's warm-up req/s)")
    cl.add_argument("--rate1", type=int, default=500,
                    help="the one-connection oha pass's fixed rate (default 500)")
    cl.add_argument("--no-unlimited", dest="unlimited", action="store_false",
                    help="skip the pair without any limits")
    x = sub.add_parser("sse-server")
    x.add_argument("--port", type=int, required=True)
    args = ap.parse_args()

    if args.mode == "sse-server":
        return sse_server(args.port)

    def on_signal(signum, _frame):
        stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    if args.mode == "streams":
        return streams_mode(args)
    if args.mode == "profile":
        return profile_mode(args)
    if args.mode == "callgrind":
        return callgrind_mode(args)
    if args.mode == "cpu":
        return cpu_mode(args)
    if args.mode == "responses":
        return responses_mode(args)
    if args.mode == "cluster":
        return cluster_mode(args)
    if not shutil.which("wrk") or not shutil.which("nginx"):
        sys.exit("wrk and nginx are needed: run.sh --install (apt-get install wrk nginx)")
    return compare(args)


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
