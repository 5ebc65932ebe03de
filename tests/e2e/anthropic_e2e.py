"""End-to-end: the Anthropic Messages ingress of hermes-proxy (`POST
/v1/messages`), driven by the official Anthropic Python SDK (`anthropic`),
against two scripted loopback upstreams: one speaks Chat Completions (an
"openai" provider), the other speaks Messages (an "anthropic" provider).

The Chat Completions upstream decides its answer from the request: offered
tools and a user message last, it calls `get_weather`; a tool message last, it
answers with what the tool returned; otherwise it echoes the user turns. The
upstream model `limited` answers OpenAI's 429 with `retry-after: 30`. It
streams as OpenAI does when asked to. Usage is always 12 prompt / 8
completion tokens, so the SDK's `usage` is checkable.

The Messages upstream records every request's raw bytes and headers and
answers the samples of Anthropic's docs (tests/samples/README.md): the API
reference's message (with cache usage) or the "Hello" + "!" stream; the
upstream model `overloaded` answers 529 `overloaded_error`.

Cases:
  (a) `messages.create` on an openai-kind route: text, stop_reason, usage;
  (b) `messages.stream`: `text_stream`, `get_final_message()`, event types;
  (c) a tool round trip: tool_use -> tool_result; the upstream got the
      result as a `tool` message with the right `tool_call_id`;
  (d) `messages.count_tokens` is an int > 0;
  (e) errors as the SDK types them: 401, 404, 429 with retry-after, and a
      raw POST (urllib) without max_tokens -> 400 invalid_request_error;
  (f) an anthropic-kind route passes the request through byte for byte but
      `model` (with the client's anthropic-beta and cache_control), and the
      answer back, whole and streamed;
  (g) failover across kinds: 529 from the Messages upstream, answer from
      the Chat Completions one.
Prints one line per case and "N passed, M failed" last.

    HERMES_BIN=target/release/hermes-proxy python tests/e2e/anthropic_e2e.py
"""

import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

import anthropic  # noqa: E402

from harness import ChatUpstream, Proxy, report, run_with_proxy, serve, text_of  # noqa: E402

KEY = "sk-e2e-anthropic-key-0123456789"
UPSTREAM_KEY = "sk-ant-e2e-upstream-9876543210"
BETA = "prompt-caching-2024-07-31"
USAGE = {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}

# Chat Completions requests received: (body, answer message or None).
CHATS = []
# Messages requests received: dicts with path, headers, raw.
MESSAGES = []
LOCK = threading.Lock()
CALL_IDS = itertools.count(1)

TOOLS = [{
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]


def take(log):
    with LOCK:
        taken = list(log)
        log.clear()
    return taken


# ---------------------------------------------------------------- the Chat Completions upstream

def scripted_answer(body):
    messages = body["messages"]
    last = messages[-1]
    if last["role"] == "tool":
        return {"role": "assistant", "content": f"The weather in Paris: {text_of(last['content'])}."}, "stop"
    if last["role"] == "user" and body.get("tools"):
        return {"role": "assistant", "content": None, "tool_calls": [{
            "id": f"call_weather_{next(CALL_IDS)}", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]}, "tool_calls"
    users = [text_of(m.get("content")) for m in messages if m["role"] == "user"]
    return {"role": "assistant", "content": f"You said: {' | '.join(users)}"}, "stop"


class Chat(ChatUpstream):
    def chat(self, body):
        if body.get("model") == "limited":
            with LOCK:
                CHATS.append((body, None))
            data = json.dumps({"error": {
                "message": "Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): "
                           "Limit 30000, Used 29937, Requested 385. Please try again in 644ms.",
                "type": "tokens", "param": None, "code": "rate_limit_exceeded"}}).encode()
            self.send_response(429)
            self.send_header("content-type", "application/json")
            self.send_header("retry-after", "30")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        message, finish = scripted_answer(body)
        with LOCK:
            CHATS.append((body, message))
        self.answer(body, message, finish, USAGE)



# ---------------------------------------------------------------- the Messages upstream

# The API reference's Messages example (citations placeholder left out).
DOC_MESSAGE = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "content": [{"text": "Hi! My name is Claude.", "type": "text"}],
    "model": "claude-sonnet-4-5-20250929",
    "role": "assistant",
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "type": "message",
    "usage": {"cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
              "cache_creation_input_tokens": 2051, "cache_read_input_tokens": 2051,
              "input_tokens": 2095, "output_tokens": 503,
              "server_tool_use": {"web_search_requests": 0}, "service_tier": "standard"},
}

# The streaming docs' "Basic streaming request" response, byte for byte.
DOC_STREAM = (
    'event: message_start\ndata: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", '
    '"type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5-20250929", "stop_reason": null, '
    '"stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}\n\n'
    'event: content_block_start\ndata: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}\n\n'
    'event: ping\ndata: {"type": "ping"}\n\n'
    'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}\n\n'
    'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}\n\n'
    'event: content_block_stop\ndata: {"type": "content_block_stop", "index": 0}\n\n'
    'event: message_delta\ndata: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, '
    '"usage": {"output_tokens": 15}}\n\n'
    'event: message_stop\ndata: {"type": "message_stop"}\n\n'
)

OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


class Messages(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        raw = self.rfile.read(int(self.headers["content-length"]))
        with LOCK:
            MESSAGES.append({"path": self.path, "headers": dict(self.headers.items()), "raw": raw})
        if not self.path.endswith("/messages"):
            self.send_error(404)
            return
        body = json.loads(raw)
        if body.get("model") == "overloaded":
            self.send_body(529, "application/json", json.dumps(OVERLOADED).encode())
        elif body.get("stream") is True:
            self.send_body(200, "text/event-stream", DOC_STREAM.encode())
        else:
            self.send_body(200, "application/json", json.dumps(DOC_MESSAGE).encode())

    def send_body(self, status, content_type, data):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


# ---------------------------------------------------------------- helpers

def root_url(proxy):
    # The SDK appends /v1/messages itself.
    return f"http://127.0.0.1:{proxy.port}"


def client(proxy, key=KEY, http_client=None):
    return anthropic.Anthropic(base_url=root_url(proxy), api_key=key, max_retries=0, timeout=30,
                               http_client=http_client)


def recording_client(proxy):
    """A client plus the list of raw request bodies it sends."""
    sent = []

    def keep(request):
        sent.append(request.read())

    # The SDK's own client class: newer SDKs build on `httpx2` and refuse an `httpx.Client`.
    http_client = anthropic.DefaultHttpxClient(event_hooks={"request": [keep]})
    return client(proxy, http_client=http_client), sent


def raw_post(proxy, body):
    """(status, parsed JSON) of a POST /v1/messages the SDK would refuse to send."""
    request = urllib.request.Request(
        f"{root_url(proxy)}/v1/messages", data=json.dumps(body).encode(), method="POST",
        headers={"content-type": "application/json", "x-api-key": KEY, "anthropic-version": "2023-06-01"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def expect(kind, status, call):
    try:
        result = call()
    except kind as e:
        assert e.status_code == status, f"{kind.__name__} with status {e.status_code}, not {status}: {e}"
        return e
    except anthropic.APIStatusError as e:
        raise AssertionError(f"expected {kind.__name__} ({status}), got {e.status_code}: {e}") from e
    raise AssertionError(f"expected {kind.__name__} ({status}), got an answer: {result!r}")


def anthropic_error_type(e):
    body = e.body if isinstance(e.body, dict) else {}
    # The SDK keeps the whole JSON body; an Anthropic-shaped error has `type: "error"`.
    assert body.get("type") == "error", f"not an Anthropic error body: {e.body!r}"
    return body["error"]["type"]


def text_blocks(message):
    return "".join(b.text for b in message.content if b.type == "text")


# ---------------------------------------------------------------- cases

def case_create_on_an_openai_route(proxy):
    take(CHATS)
    message = client(proxy).messages.create(
        model="main", max_tokens=64, system="Be brief.",
        messages=[{"role": "user", "content": "Hello there"}])
    assert message.type == "message" and message.role == "assistant", message
    assert text_blocks(message) == "You said: Hello there", message.content
    assert message.stop_reason == "end_turn", message.stop_reason
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 8), message.usage
    [(sent, _)] = take(CHATS)
    assert sent["model"] == "chat-model", sent["model"]
    roles = [(m["role"], text_of(m.get("content"))) for m in sent["messages"]]
    assert roles == [("system", "Be brief."), ("user", "Hello there")], roles
    assert 64 in (sent.get("max_tokens"), sent.get("max_completion_tokens")), sent


def case_stream_with_typed_events(proxy):
    take(CHATS)
    with client(proxy).messages.stream(model="main", max_tokens=64,
                                       messages=[{"role": "user", "content": "Stream this"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "You said: Stream this", repr(text)
    assert text_blocks(final) == text, final.content
    assert final.stop_reason == "end_turn", final.stop_reason
    assert final.usage.output_tokens == 8, final.usage
    [(sent, _)] = take(CHATS)
    assert sent.get("stream") is True, "a streamed request was not streamed upstream"

    seen = []
    with client(proxy).messages.stream(model="main", max_tokens=64,
                                       messages=[{"role": "user", "content": "Events please"}]) as stream:
        for event in stream:
            seen.append(event.type)
    take(CHATS)
    wire = ["message_start", "content_block_start", "content_block_delta", "content_block_stop",
            "message_delta", "message_stop"]
    assert all(t in seen for t in wire), f"event types seen: {seen}"
    assert seen[0] == "message_start" and seen[-1] == "message_stop", seen
    assert "text" in seen, f"the SDK's text events are missing: {seen}"


def case_tool_round_trip(proxy):
    take(CHATS)
    c = client(proxy)
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = c.messages.create(model="main", max_tokens=256, tools=TOOLS, messages=[question])
    assert first.stop_reason == "tool_use", first.stop_reason
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1, first.content
    use = uses[0]
    [(sent, asked)] = take(CHATS)
    call = asked["tool_calls"][0]
    assert use.id == call["id"] and use.name == "get_weather", (use, call)
    assert use.input == {"city": "Paris"}, use.input
    offered = sent["tools"][0]["function"]
    assert offered["name"] == "get_weather", sent["tools"]
    assert offered["parameters"] == TOOLS[0]["input_schema"], offered

    second = c.messages.create(model="main", max_tokens=256, tools=TOOLS, messages=[
        question,
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 24 C"}]},
    ])
    assert "sunny, 24 C" in text_blocks(second), second.content
    [(sent, _)] = take(CHATS)
    turns = [m for m in sent["messages"] if m["role"] not in ("system", "developer")]
    assert [m["role"] for m in turns] == ["user", "assistant", "tool"], turns
    replayed = turns[1]["tool_calls"][0]
    assert replayed["id"] == use.id and replayed["function"]["name"] == "get_weather", replayed
    assert json.loads(replayed["function"]["arguments"]) == {"city": "Paris"}, replayed
    assert turns[2]["tool_call_id"] == use.id, turns[2]
    assert text_of(turns[2]["content"]) == "sunny, 24 C", turns[2]


def case_count_tokens(proxy):
    counted = client(proxy).messages.count_tokens(
        model="main", system="Be brief.", tools=TOOLS,
        messages=[{"role": "user", "content": "How many tokens is this sentence?"}])
    assert isinstance(counted.input_tokens, int) and counted.input_tokens > 0, counted


def case_errors(proxy):
    ask = [{"role": "user", "content": "hi"}]
    e = expect(anthropic.AuthenticationError, 401,
               lambda: client(proxy, key="sk-wrong-key").messages.create(model="main", max_tokens=16, messages=ask))
    assert anthropic_error_type(e) == "authentication_error", e.body
    e = expect(anthropic.NotFoundError, 404,
               lambda: client(proxy).messages.create(model="no-such-route", max_tokens=16, messages=ask))
    assert anthropic_error_type(e) == "not_found_error", e.body
    take(CHATS)
    e = expect(anthropic.RateLimitError, 429,
               lambda: client(proxy).messages.create(model="limited", max_tokens=16, messages=ask))
    assert anthropic_error_type(e) == "rate_limit_error", e.body
    assert e.response.headers.get("retry-after"), f"no retry-after: {dict(e.response.headers)}"
    assert take(CHATS), "the 429 route never reached its upstream"

    status, body = raw_post(proxy, {"model": "main", "messages": ask})
    assert status == 400, (status, body)
    assert body.get("type") == "error" and body["error"]["type"] == "invalid_request_error", body
    assert body["error"].get("message"), body


def check_passthrough(sent, received):
    """The upstream got the client's bytes, `model` excepted, and the right headers."""
    assert received["path"].endswith("/v1/messages"), received["path"]
    expected = re.sub(rb'("model"\s*:\s*)"passthrough"', rb'\1"claude-upstream"', sent)
    assert expected != sent, f"no model in what the SDK sent: {sent[:200]!r}"
    assert received["raw"] == expected, f"sent {expected[:300]!r}\nreceived {received['raw'][:300]!r}"
    headers = {k.lower(): v for k, v in received["headers"].items()}
    assert headers.get("x-api-key") == UPSTREAM_KEY, "the upstream did not get the provider's key"
    assert headers.get("anthropic-version") == "2023-06-01", headers.get("anthropic-version")
    assert BETA in (headers.get("anthropic-beta") or ""), headers.get("anthropic-beta")


def case_passthrough_to_an_anthropic_route(proxy):
    system = [{"type": "text", "text": "You are a careful assistant. " * 20, "cache_control": {"type": "ephemeral"}}]
    ask = [{"role": "user", "content": "Hello, Claude"}]
    take(MESSAGES)
    c, sent = recording_client(proxy)
    message = c.messages.create(model="passthrough", max_tokens=256, system=system, messages=ask,
                                extra_headers={"anthropic-beta": BETA})
    [received] = take(MESSAGES)
    check_passthrough(sent[-1], received)
    assert message.id == DOC_MESSAGE["id"], message.id
    assert text_blocks(message) == "Hi! My name is Claude.", message.content
    assert message.usage.cache_read_input_tokens == 2051, message.usage
    assert message.usage.cache_creation_input_tokens == 2051, message.usage

    with c.messages.stream(model="passthrough", max_tokens=256, system=system, messages=ask,
                           extra_headers={"anthropic-beta": BETA}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    [received] = take(MESSAGES)
    check_passthrough(sent[-1], received)
    assert text == "Hello!", repr(text)
    assert final.id == "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", final.id
    assert final.usage.output_tokens == 15, final.usage


def case_failover_across_kinds(proxy):
    take(MESSAGES)
    take(CHATS)
    message = client(proxy).messages.create(model="failover", max_tokens=64,
                                            messages=[{"role": "user", "content": "Anyone there?"}])
    assert text_blocks(message) == "You said: Anyone there?", message.content
    tried = take(MESSAGES)
    assert tried and all(json.loads(t["raw"])["model"] == "overloaded" for t in tried), tried
    answered = take(CHATS)
    assert len(answered) == 1 and answered[0][0]["model"] == "chat-model", answered


CASES = [
    ("(a) messages.create on an openai-kind route: text, stop_reason, usage", case_create_on_an_openai_route),
    ("(b) messages.stream: text_stream, get_final_message, event types", case_stream_with_typed_events),
    ("(c) tool_use -> tool_result arrives upstream as a tool message", case_tool_round_trip),
    ("(d) messages.count_tokens", case_count_tokens),
    ("(e) 401, 404, 429 with retry-after, 400 without max_tokens, Anthropic-shaped", case_errors),
    ("(f) anthropic-kind route: byte-for-byte passthrough, whole and streamed", case_passthrough_to_an_anthropic_route),
    ("(g) failover from a 529 Messages upstream to a Chat Completions one", case_failover_across_kinds),
]


def main():
    chat = serve(Chat)
    messages = serve(Messages)
    work = tempfile.mkdtemp(prefix="hermes-anthropic-e2e-")
    config = os.path.join(work, "routes.toml")
    with open(config, "w") as f:
        f.write(f"""
[[server.keys]]
name = "e2e"
key_env = "HERMES_E2E_ANTHROPIC_KEY"

[providers.chat]
kind = "openai"
base_url = "http://127.0.0.1:{chat.server_address[1]}/v1"

[providers.claude]
kind = "anthropic"
base_url = "http://127.0.0.1:{messages.server_address[1]}/v1"
api_key_env = "HERMES_E2E_UPSTREAM_ANTHROPIC_KEY"

[routes.main]
targets = [{{ provider = "chat", model = "chat-model" }}]

[routes.limited]
targets = [{{ provider = "chat", model = "limited" }}]

[routes.passthrough]
targets = [{{ provider = "claude", model = "claude-upstream" }}]

[routes.failover]
strategy = "fallback"
targets = [
  {{ provider = "claude", model = "overloaded" }},
  {{ provider = "chat", model = "chat-model" }},
]

[store]
path = "{os.path.join(work, 'hermes.db')}"
""")
    proxy = Proxy(work, config, key=KEY,
                  env={"HERMES_E2E_ANTHROPIC_KEY": KEY, "HERMES_E2E_UPSTREAM_ANTHROPIC_KEY": UPSTREAM_KEY})
    try:
        passed, failed = run_with_proxy(proxy, CASES)
    finally:
        for server in (chat, messages):
            server.shutdown()
            server.server_close()
        shutil.rmtree(work, ignore_errors=True)
    return report(passed, failed)


if __name__ == "__main__":
    sys.exit(main())
