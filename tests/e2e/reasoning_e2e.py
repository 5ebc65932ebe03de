"""End-to-end: reasoning that survives the round trip (README "Reasoning that
survives the round trip"), driven by the official OpenAI Python SDK the way
LangChain and the Vercel AI SDK drive it: they read an answer's tool calls,
rebuild the assistant turn as `{"role": "assistant", "content": None,
"tool_calls": [...]}` and so drop `reasoning_content` (and `thinking_blocks`).

Two scripted loopback upstreams refuse such a history as the real ones do:

- a Kimi-like Chat Completions server (thinking on): any assistant message
  with `tool_calls` and no `reasoning_content` key gets Kimi's 400 `thinking
  is enabled but reasoning_content is missing in assistant tool call message
  at index N` (an empty string is accepted, as Kimi accepts it). A user
  question "What is the weather in <City>?" with tools is answered, Kimi
  style, by a `functions.get_weather:0` call with `reasoning_content` "The
  user wants <City> weather; call get_weather."; a tool result last is
  answered "<City>: <result>". It streams as Kimi does when asked.
- a Messages server (Anthropic): with thinking on, a request whose last
  assistant turn calls tools without starting with a thinking block it
  signed itself gets Anthropic's 400 (`messages.N.content.0.type: Expected
  `thinking` or `redacted_thinking`, but found `tool_use`...`). A question
  is answered with a signed thinking block and a `tool_use`.

Both record every request body, so the asserts see what the proxy sent.

Cases:
  (0) the scripted upstreams do refuse a history without reasoning (so the
      cases below can fail);
  (a) two turns, whole: the SDK sees `reasoning_content`; turn 2 without it
      reaches the upstream once, with the original text;
      `hermes_reasoning_roundtrip_total{path="restored"}` +1;
  (b) the same with both turns streamed (the client gathers the deltas);
  (c) a history the proxy never saw: Kimi's 400, the proxy resends with
      `reasoning_content: ""`, the client gets the answer (path="empty" +1);
      from then on that target gets "" on the first try;
  (d) a Messages upstream with `reasoning_effort="high"`: turn 2 (without
      reasoning or `thinking_blocks`) goes with thinking still on and the
      assistant turn starting with the original signed thinking block.
Prints one line per case and "N passed, M failed" last.

    HERMES_BIN=target/release/hermes-proxy python tests/e2e/reasoning_e2e.py
"""

import base64
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

from harness import ChatUpstream, Proxy, report, run_with_proxy, serve, text_of  # noqa: E402

KEY = "sk-e2e-reasoning-key-0123456789"
USAGE = {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}
WEATHER = re.compile(r"What is the weather in (\w+)\?")

TOOLS = [{"type": "function", "function": {
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}}]

# Every request each upstream received: dicts with body and the status answered.
KIMI = []
CLAUDE = []
LOCK = threading.Lock()
# Signatures the Messages upstream issued: signature -> the thinking it signed.
# Random per run, so only a proxy that kept the real one can send it back.
SIGNED = {}


def take(log):
    with LOCK:
        taken = list(log)
        log.clear()
    return taken


def reasoning_for(city):
    return f"The user wants {city} weather; call get_weather."


def city_asked(messages):
    for m in reversed(messages):
        if m["role"] == "user":
            found = WEATHER.search(text_of(m.get("content")))
            if found:
                return found.group(1)
    return None


# ---------------------------------------------------------------- the Kimi-like upstream

def kimi_refusal(messages):
    """Kimi's 400 message for the first tool-call turn without reasoning, or None."""
    for index, m in enumerate(messages):
        if m.get("role") == "assistant" and m.get("tool_calls") and "reasoning_content" not in m:
            return ("thinking is enabled but reasoning_content is missing in assistant tool call "
                    f"message at index {index}")
    return None


class Kimi(ChatUpstream):
    def chat(self, body):
        messages = body["messages"]
        refusal = kimi_refusal(messages)
        with LOCK:
            KIMI.append({"body": body, "status": 400 if refusal else 200})
        if refusal:
            data = json.dumps({"error": {"message": refusal, "type": "invalid_request_error"}}).encode()
            self.send_response(400)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        last = messages[-1]
        city = city_asked(messages) or "Nowhere"
        if last["role"] == "tool":
            message = {"role": "assistant", "content": f"{city}: {text_of(last.get('content'))}"}
            finish = "stop"
        else:
            # Kimi's ids are `functions.<name>:<index>`, the same in every conversation.
            message = {"role": "assistant", "content": "", "reasoning_content": reasoning_for(city),
                       "tool_calls": [{"id": "functions.get_weather:0", "type": "function", "function": {
                           "name": "get_weather", "arguments": json.dumps({"city": city})}}]}
            finish = "tool_calls"
        self.answer(body, message, finish, USAGE)



# ---------------------------------------------------------------- the Messages upstream

def claude_refusal(body):
    """Anthropic's 400 message for an unsigned last tool turn while thinking, or None."""
    if (body.get("thinking") or {}).get("type") != "enabled":
        return None
    messages = body.get("messages") or []
    assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not assistants:
        return None
    index = assistants[-1]
    content = messages[index]["content"]
    blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
    if not any(b.get("type") == "tool_use" for b in blocks):
        return None
    first = blocks[0]
    if first.get("type") not in ("thinking", "redacted_thinking"):
        return (f"messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                f"`{first.get('type')}`. When `thinking` is enabled, a final `assistant` message must start "
                "with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). "
                "We recommend you include thinking blocks from previous turns. To avoid this requirement, "
                "disable `thinking`. Please consult our documentation at "
                "https://docs.claude.com/en/docs/build-with-claude/extended-thinking")
    # The real API checks the signature cryptographically; this one knows what it signed.
    if first.get("type") == "thinking" and SIGNED.get(first.get("signature")) != first.get("thinking"):
        return f"messages.{index}.content.0: Invalid `signature` in `thinking` block"
    return None


class Claude(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        if not self.path.endswith("/messages"):
            self.send_error(404)
            return
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        refusal = claude_refusal(body)
        with LOCK:
            CLAUDE.append({"body": body, "status": 400 if refusal else 200})
        if refusal:
            self.send_body(400, {"type": "error", "error": {"type": "invalid_request_error", "message": refusal}})
            return
        messages = body["messages"]
        last = messages[-1]["content"]
        results = [b for b in last if b.get("type") == "tool_result"] if isinstance(last, list) else []
        usage = {"input_tokens": 120, "output_tokens": 40}
        base = {"id": f"msg_e2e_{len(CLAUDE)}", "type": "message", "role": "assistant", "model": body["model"],
                "stop_sequence": None, "usage": usage}
        city = city_asked(messages) or "Nowhere"
        if results:
            result = results[0]["content"]
            text = result if isinstance(result, str) else text_of(result)
            self.send_body(200, dict(base, stop_reason="end_turn",
                                     content=[{"type": "text", "text": f"{city}: {text}"}]))
            return
        thinking = f"The user asks about {city}. I should call get_weather for {city}."
        signature = base64.b64encode(os.urandom(48)).decode()
        with LOCK:
            SIGNED[signature] = thinking
        self.send_body(200, dict(base, stop_reason="tool_use", content=[
            {"type": "thinking", "thinking": thinking, "signature": signature},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
             "input": {"city": city}},
        ]))

    def send_body(self, status, answer):
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


# ---------------------------------------------------------------- helpers

def roundtrip_counts(proxy):
    """path -> value of hermes_reasoning_roundtrip_total on /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^hermes_reasoning_roundtrip_total\{path="(\w+)"\} (\S+)$', text, re.M)}


def counted_since(proxy, before):
    after = roundtrip_counts(proxy)
    return {path: after.get(path, 0) - before.get(path, 0) for path in set(after) | set(before)
            if after.get(path, 0) != before.get(path, 0)}


def question(city):
    return {"role": "user", "content": f"What is the weather in {city}?"}


def rebuilt(call_id, name, arguments, result):
    """The assistant turn and tool result as LangChain / the Vercel AI SDK send them back:
    no reasoning_content, no thinking_blocks."""
    return [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": result},
    ]


def extra(obj, field):
    """A field the SDK's types do not declare (kept in `model_extra`)."""
    return (obj.model_extra or {}).get(field)


def post_json(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def assistant_turns(body):
    return [m for m in body["messages"] if m["role"] == "assistant"]


# ---------------------------------------------------------------- cases

def case_the_upstreams_refuse_a_history_without_reasoning(proxy, kimi_url, claude_url):
    history = [question("Oslo"), *rebuilt("functions.get_weather:0", "get_weather", '{"city": "Oslo"}', "2 C")]
    status, body = post_json(f"{kimi_url}/chat/completions", {"model": "kimi-k2", "messages": history})
    assert status == 400, (status, body)
    assert body["error"]["message"].endswith("assistant tool call message at index 1"), body
    history[1]["reasoning_content"] = ""
    status, body = post_json(f"{kimi_url}/chat/completions", {"model": "kimi-k2", "messages": history})
    assert status == 200, (status, body)
    take(KIMI)

    unsigned = {"model": "claude-thinking", "max_tokens": 20000,
                "thinking": {"type": "enabled", "budget_tokens": 16384},
                "messages": [question("Oslo"),
                             {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_x",
                                                                "name": "get_weather", "input": {"city": "Oslo"}}]},
                             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x",
                                                           "content": "2 C"}]}]}
    status, body = post_json(f"{claude_url}/messages", unsigned)
    assert status == 400 and body["type"] == "error", (status, body)
    assert body["error"]["message"].startswith("messages.1.content.0.type: Expected `thinking`"), body
    forged = json.loads(json.dumps(unsigned))
    forged["messages"][1]["content"].insert(0, {"type": "thinking", "thinking": "t", "signature": "forged"})
    status, body = post_json(f"{claude_url}/messages", forged)
    assert status == 400 and "Invalid `signature`" in body["error"]["message"], (status, body)
    take(CLAUDE)


def case_whole_turns(proxy, *_):
    take(KIMI)
    before = roundtrip_counts(proxy)
    client = proxy.client()
    first = client.chat.completions.create(model="kimi", messages=[question("Paris")], tools=TOOLS)
    message = first.choices[0].message
    [call] = message.tool_calls
    assert call.id == "functions.get_weather:0" and call.function.name == "get_weather", call
    assert extra(message, "reasoning_content") == reasoning_for("Paris"), message
    assert reasoning_for("Paris") == "The user wants Paris weather; call get_weather."
    assert [e["status"] for e in take(KIMI)] == [200]

    history = [question("Paris"), *rebuilt(call.id, call.function.name, call.function.arguments, "21 C, sunny")]
    assert "reasoning_content" not in history[1]
    second = client.chat.completions.create(model="kimi", messages=history, tools=TOOLS)
    assert second.choices[0].message.content == "Paris: 21 C, sunny", second.choices[0].message

    turn2 = take(KIMI)
    assert [e["status"] for e in turn2] == [200], f"turn 2 reached the upstream as {turn2}"
    [assistant] = assistant_turns(turn2[0]["body"])
    assert assistant.get("reasoning_content") == reasoning_for("Paris"), assistant
    assert assistant["tool_calls"][0]["id"] == call.id, assistant
    assert "thinking_blocks" not in assistant, assistant
    assert counted_since(proxy, before) == {"restored": 1}, counted_since(proxy, before)


def case_streamed_turns(proxy, *_):
    take(KIMI)
    before = roundtrip_counts(proxy)
    client = proxy.client()
    reasoning, content, calls = "", "", {}
    stream = client.chat.completions.create(model="kimi", messages=[question("Lyon")], tools=TOOLS, stream=True)
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        reasoning += extra(delta, "reasoning_content") or ""
        content += delta.content or ""
        for piece in delta.tool_calls or []:
            call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += piece.id or ""
            if piece.function:
                call["name"] += piece.function.name or ""
                call["arguments"] += piece.function.arguments or ""
    assert reasoning == reasoning_for("Lyon"), f"the SDK saw reasoning {reasoning!r}"
    assert list(calls) == [0], calls
    call = calls[0]
    assert (call["id"], call["name"], json.loads(call["arguments"])) == \
        ("functions.get_weather:0", "get_weather", {"city": "Lyon"}), call
    [turn1] = take(KIMI)
    assert turn1["body"].get("stream") is True and turn1["status"] == 200, turn1

    # The gathered answer goes back without its reasoning, streamed again.
    history = [question("Lyon"), *rebuilt(call["id"], call["name"], call["arguments"], "18 C, cloudy")]
    answer = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
        model="kimi", messages=history, tools=TOOLS, stream=True) if chunk.choices)
    assert answer == "Lyon: 18 C, cloudy", repr(answer)

    turn2 = take(KIMI)
    assert [e["status"] for e in turn2] == [200], f"turn 2 reached the upstream as {turn2}"
    [assistant] = assistant_turns(turn2[0]["body"])
    # Not Paris's reasoning from (a): the key is the call's id, name and arguments.
    assert assistant.get("reasoning_content") == reasoning_for("Lyon"), assistant
    assert counted_since(proxy, before) == {"restored": 1}, counted_since(proxy, before)


def case_unseen_history_falls_back_to_empty(proxy, *_):
    take(KIMI)
    before = roundtrip_counts(proxy)
    client = proxy.client()
    history = [question("Berlin"), *rebuilt("call_made_up_42", "get_weather", '{"city": "Berlin"}', "15 C, rain")]
    answer = client.chat.completions.create(model="kimi", messages=history, tools=TOOLS)
    assert answer.choices[0].message.content == "Berlin: 15 C, rain", answer.choices[0].message

    tries = take(KIMI)
    assert [e["status"] for e in tries] == [400, 200], f"the upstream saw {tries}"
    assert "reasoning_content" not in assistant_turns(tries[0]["body"])[0], tries[0]
    [assistant] = assistant_turns(tries[1]["body"])
    assert assistant.get("reasoning_content") == "", assistant
    assert assistant["tool_calls"][0]["id"] == "call_made_up_42", assistant
    assert counted_since(proxy, before) == {"empty": 1}, counted_since(proxy, before)

    # The target said it needs reasoning: the next unseen history gets "" on the first try.
    before = roundtrip_counts(proxy)
    history = [question("Madrid"), *rebuilt("call_made_up_43", "get_weather", '{"city": "Madrid"}', "30 C")]
    answer = client.chat.completions.create(model="kimi", messages=history, tools=TOOLS)
    assert answer.choices[0].message.content == "Madrid: 30 C", answer.choices[0].message
    [only] = take(KIMI)
    assert only["status"] == 200 and assistant_turns(only["body"])[0].get("reasoning_content") == "", only
    assert counted_since(proxy, before) == {"empty": 1}, counted_since(proxy, before)


def case_signed_thinking_to_a_messages_upstream(proxy, *_):
    take(CLAUDE)
    before = roundtrip_counts(proxy)
    client = proxy.client()
    first = client.chat.completions.create(model="claude", messages=[question("Paris")], tools=TOOLS,
                                           reasoning_effort="high")
    message = first.choices[0].message
    [call] = message.tool_calls
    [turn1] = take(CLAUDE)
    assert turn1["status"] == 200, turn1
    assert turn1["body"]["thinking"] == {"type": "enabled", "budget_tokens": 16384}, turn1["body"]
    with LOCK:
        [(signature, thinking)] = [(s, t) for s, t in SIGNED.items() if "Paris" in t]
    assert call.id == "toolu_01A09q90qw90lq917835lq9", call
    assert extra(message, "reasoning_content") == thinking, message
    blocks = extra(message, "thinking_blocks")
    assert blocks and blocks[0].get("signature") == signature, blocks

    history = [question("Paris"), *rebuilt(call.id, call.function.name, call.function.arguments, "21 C, sunny")]
    second = client.chat.completions.create(model="claude", messages=history, tools=TOOLS, reasoning_effort="high")
    assert second.choices[0].message.content == "Paris: 21 C, sunny", second.choices[0].message

    turn2 = take(CLAUDE)
    assert [e["status"] for e in turn2] == [200], f"turn 2 reached the upstream as {turn2}"
    sent = turn2[0]["body"]
    # Thinking stays on: the turn was not sent by the thinking-off fallback.
    assert sent.get("thinking") == {"type": "enabled", "budget_tokens": 16384}, sent
    [assistant] = assistant_turns(sent)
    assert assistant["content"][0] == {"type": "thinking", "thinking": thinking, "signature": signature}, assistant
    assert [b["type"] for b in assistant["content"]] == ["thinking", "tool_use"], assistant
    assert assistant["content"][1]["id"] == call.id, assistant
    result = sent["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == call.id, sent["messages"][-1]
    assert counted_since(proxy, before) == {"restored": 1}, counted_since(proxy, before)


CASES = [
    ("(0) the scripted upstreams refuse a tool turn without its reasoning",
     case_the_upstreams_refuse_a_history_without_reasoning),
    ("(a) whole turns: the dropped reasoning_content reaches the upstream again", case_whole_turns),
    ("(b) streamed turns: the gathered answer's reasoning is restored", case_streamed_turns),
    ("(c) an unseen history: Kimi's 400, then reasoning_content \"\"", case_unseen_history_falls_back_to_empty),
    ("(d) a Messages upstream gets the original signed thinking block", case_signed_thinking_to_a_messages_upstream),
]


def main():
    kimi = serve(Kimi)
    claude = serve(Claude)
    kimi_url = f"http://127.0.0.1:{kimi.server_address[1]}/v1"
    claude_url = f"http://127.0.0.1:{claude.server_address[1]}/v1"
    work = tempfile.mkdtemp(prefix="hermes-reasoning-e2e-")
    config = os.path.join(work, "routes.toml")
    with open(config, "w") as f:
        f.write(f"""
[[server.keys]]
name = "e2e"
key_env = "HERMES_E2E_REASONING_KEY"

[providers.kimi]
kind = "openai"
base_url = "{kimi_url}"

[providers.claude]
kind = "anthropic"
base_url = "{claude_url}"

[routes.kimi]
targets = [{{ provider = "kimi", model = "kimi-k2" }}]

[routes.claude]
targets = [{{ provider = "claude", model = "claude-thinking" }}]

[store]
path = "{os.path.join(work, 'hermes.db')}"
""")
    proxy = Proxy(work, config, key=KEY, env={"HERMES_E2E_REASONING_KEY": KEY})
    try:
        passed, failed = run_with_proxy(proxy, CASES, kimi_url, claude_url)
    finally:
        for server in (kimi, claude):
            server.shutdown()
            server.server_close()
        shutil.rmtree(work, ignore_errors=True)
    return report(passed, failed)


if __name__ == "__main__":
    sys.exit(main())
