"""End-to-end: the OpenAI Agents SDK (`openai-agents`) runs an Agent with one
function tool on its default model, the Responses API, against hermes-proxy,
whose route's upstream speaks Chat Completions only. The upstream is a
scripted loopback server: it asks for the tool first, then answers with what
the tool returned. Prints "N passed, M failed" last.

    HERMES_BIN=target/debug/hermes-proxy python tests/e2e/agents_e2e.py
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"

from agents import Agent, Runner, function_tool, set_default_openai_client, set_tracing_disabled  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

SEEN = []  # the chat requests the upstream received


class Upstream(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if not self.path.endswith("/chat/completions"):
            # The proxy asks loopback servers for their context window
            # (Ollama's /api/show); this one has none to tell.
            self.send_error(404)
            return
        SEEN.append(body)
        last = body["messages"][-1]
        if last["role"] == "tool":
            message = {"role": "assistant", "content": f"The weather in Paris: {last['content']}."}
            finish = "stop"
        else:
            message = {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_weather_1", "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]}
            finish = "tool_calls"
        answer = {"id": "chatcmpl-e2e", "object": "chat.completion", "created": 0, "model": body["model"],
                  "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                  "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


CALLS = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    CALLS.append(city)
    return "sunny, 24 C"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the proxy exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError("the proxy did not become ready")


async def run_agent(base_url):
    set_tracing_disabled(True)
    set_default_openai_client(AsyncOpenAI(base_url=base_url, api_key="sk-e2e-dummy"), use_for_tracing=False)
    agent = Agent(name="weather", instructions="Answer with the tool.", model="main", tools=[get_weather])
    return await Runner.run(agent, "What is the weather in Paris?")


def case_agent_with_a_tool(base_url):
    result = asyncio.run(run_agent(base_url))
    assert CALLS == ["Paris"], f"tool calls: {CALLS}"
    assert "sunny" in result.final_output, f"final output: {result.final_output!r}"
    assert len(SEEN) == 2, f"{len(SEEN)} upstream requests"
    tool_turn = SEEN[1]["messages"]
    roles = [m["role"] for m in tool_turn]
    assert roles[-2:] == ["assistant", "tool"], roles
    assert tool_turn[-1]["tool_call_id"] == "call_weather_1", tool_turn[-1]
    assert SEEN[0]["tools"][0]["function"]["name"] == "get_weather", SEEN[0]["tools"]


def main():
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    work = tempfile.mkdtemp(prefix="hermes-agents-e2e-")
    config = os.path.join(work, "routes.toml")
    with open(config, "w") as f:
        f.write(f"""
[providers.scripted]
kind = "openai"
base_url = "http://127.0.0.1:{upstream.server_address[1]}/v1"

[routes.main]
targets = [{{ provider = "scripted", model = "scripted-model" }}]
""")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_") or k == "HERMES_BIN"}
    log = open(os.path.join(work, "proxy.log"), "w")
    proc = subprocess.Popen([os.environ["HERMES_BIN"], "--config", config, "--listen", f"127.0.0.1:{port}"],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    passed = failed = 0
    try:
        wait_ready(f"http://127.0.0.1:{port}/ready", proc)
        for name, case in [("an Agent with a function tool on the Responses model", case_agent_with_a_tool)]:
            try:
                case(f"http://127.0.0.1:{port}/v1")
            except Exception as e:  # noqa: BLE001 - every failure is reported
                failed += 1
                print(f"FAIL  {name}: {type(e).__name__}: {e}")
                traceback.print_exc(file=sys.stdout)
            else:
                passed += 1
                print(f"ok    {name}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        upstream.shutdown()
        if failed:
            print(open(os.path.join(work, "proxy.log")).read()[-3000:])
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
