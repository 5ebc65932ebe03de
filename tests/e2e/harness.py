"""What the end-to-end scripts share: the proxy binary started on a free
loopback port with a config of the script's own, the frame of a scripted
Chat Completions upstream, and the loop that runs the cases, printing
`ok    name` or `FAIL  name: ...` per case and "N passed, M failed" last.

The scripts run as `python tests/e2e/<script>.py`, so this directory is
first on `sys.path` and `import harness` finds this file.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from openai import OpenAI


def text_of(content):
    """A chat message's content as text, whether a string or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


class ChatUpstream(BaseHTTPRequestHandler):
    """A loopback Chat Completions upstream; a subclass answers in `chat(body)`."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if not self.path.endswith("/chat/completions"):
            # The proxy asks loopback servers for their context window
            # (Ollama's /api/show); this one has none to tell.
            self.send_error(404)
            return
        self.chat(body)

    def send_json(self, answer):
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def answer(self, body, message, finish, usage):
        """`message` as OpenAI sends it: a whole completion, or (when the
        request streams) chunks that split its reasoning, text and each tool
        call's arguments in pieces, the finish, the usage when asked, [DONE]."""
        if body.get("stream") is not True:
            self.send_json({"id": "chatcmpl-e2e", "object": "chat.completion", "created": int(time.time()),
                            "model": body["model"],
                            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                            "usage": usage})
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.end_headers()
        base = {"id": "chatcmpl-e2e-stream", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body["model"]}

        def send(choices, **extra):
            self.wfile.write(b"data: " + json.dumps(dict(base, choices=choices, **extra)).encode() + b"\n\n")
            self.wfile.flush()

        def delta(d, finish_reason=None):
            send([{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish_reason}])

        def halves(text):
            return [piece for piece in (text[:len(text) // 2], text[len(text) // 2:]) if piece]

        delta({"role": "assistant", "content": ""})
        for piece in halves(message.get("reasoning_content") or ""):
            delta({"reasoning_content": piece})
        for piece in halves(message.get("content") or ""):
            delta({"content": piece})
        for index, call in enumerate(message.get("tool_calls") or []):
            delta({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                   "function": {"name": call["function"]["name"], "arguments": ""}}]})
            for piece in halves(call["function"]["arguments"]):
                delta({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        delta({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            send([], usage=usage)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def serve(handler):
    """A loopback HTTP server for `handler` on a free port, answering from a
    daemon thread (one thread per connection) until the script exits."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary():
    if os.environ.get("HERMES_BIN"):
        return os.path.abspath(os.environ["HERMES_BIN"])
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    return os.path.join(repo, target, "release", "hermes-proxy")


class Proxy:
    """The proxy binary on a fixed port and config; can be stopped and started again.

    `env` is added to the proxy's environment (the client keys its config
    names); `key` is what `client()` authenticates with unless told another.
    """

    def __init__(self, work, config, env=None, key=None):
        self.work, self.config, self.key = work, config, key
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = os.path.join(work, "proxy.log")
        self.proc = None
        # HERMES_* from the caller's shell (HERMES_CONFIG, HERMES_LISTEN, keys)
        # would change what the proxy under test serves.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_")}
        self.env.update(env or {})

    def start(self, timeout=30):
        with open(self.log_path, "a") as log:
            # A restarted proxy appends to the same log; this tells the runs apart.
            log.write(f"--- start on 127.0.0.1:{self.port}\n")
            log.flush()
            self.proc = subprocess.Popen(
                [binary(), "--config", self.config, "--listen", f"127.0.0.1:{self.port}"],
                cwd=self.work, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the proxy exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("the proxy did not become ready")

    def stop(self, timeout=15):
        """SIGTERM, wait; returns the exit status (None if it had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def client(self, key=None):
        return OpenAI(base_url=self.base_url, api_key=key or self.key, max_retries=0, timeout=30)


def run_cases(cases, run):
    """Runs `run(case)` for every (name, case); returns (passed, failed)."""
    passed = failed = 0
    for name, case in cases:
        try:
            run(case)
        except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
            failed += 1
            print(f"FAIL  {name}: {type(e).__name__}: {e}")
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print(f"ok    {name}")
        sys.stdout.flush()
    return passed, failed


def run_with_proxy(proxy, cases, *args):
    """Starts the proxy, runs `case(proxy, *args)` for every case and stops it;
    returns (passed, failed). On a failure the tail of the proxy's log is printed."""
    passed = failed = 0

    def run(case):
        # A case that stops the proxy (or a crash) must not fail the cases after it.
        if proxy.proc.poll() is not None:
            proxy.start()
        case(proxy, *args)

    try:
        proxy.start()
        passed, failed = run_cases(cases, run)
    except Exception as e:  # noqa: BLE001 - the proxy did not start
        failed += 1
        print(f"FAIL  starting the proxy: {type(e).__name__}: {e}")
    finally:
        proxy.stop()
        if failed and os.path.exists(proxy.log_path):
            print(open(proxy.log_path).read()[-3000:])
    return passed, failed


def report(passed, failed):
    """Prints the tally line; returns the exit status."""
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0
