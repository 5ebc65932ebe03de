"""End-to-end: the server-side agent loop of hermes-proxy (a route with
`agent = true`), driven by the official OpenAI Python SDK (`openai`), against
a scripted Chat Completions upstream that plays the model.

The upstream decides each reply from the conversation it receives, so a proxy
that does not run the built-in tools, or does not feed their results back,
fails the asserts. For the task "Summarize notes.md into out/summary.md" it
asks `list_files`; seeing `notes.md` in that result it asks `read_file`; with
the file's text it asks `write_file` of "Summary: " + that text; after
`wrote N bytes to out/summary.md` it answers "Done: wrote out/summary.md".
It answers streamed requests as OpenAI does (`delta.tool_calls` pieces, a
finish chunk, a usage chunk with `choices: []` when asked, `[DONE]`), with a
little text ("Looking. ") in every streamed tool-call step. Every request it
receives is recorded with the usage it answered.

Cases:
  - non-streamed: the answer, summed usage, `x-hermes-agent-steps: 4`, the
    written file, and the tool results the upstream got back;
  - streamed, iterated the naive way (`chunk.choices[0].delta.content`), and
    the raw stream's `hermes.tool.progress` events;
  - a sandbox escape through the loop (`../../etc/passwd` and friends): the
    answer still arrives, the tool results are `error: ...`;
  - memory: a `memory` add in one request is in the next request's system
    prompt under `## Memory`, and not in another scope's.
Prints one line per case and "N passed, M failed" last.

    HERMES_BIN=target/release/hermes-proxy python tests/e2e/agent_e2e.py
"""

import itertools
import json
import os
import shutil
import sys
import tempfile
import threading
import time

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

from harness import ChatUpstream, Proxy, report, run_with_proxy, serve, text_of  # noqa: E402

KEY = "sk-e2e-agent-key-0123456789"
KEY_NAME = "e2e-agent"
BUILTIN_TOOLS = ["read_file", "write_file", "list_files", "search_files", "memory"]

SUMMARIZE = "Summarize notes.md into out/summary.md"
ESCAPE = "escape"
REMEMBER = "remember tea"
NOTES = "# Notes\n\nThe meeting moved to Thursday.\nBring the quarterly figures.\n"
SUMMARY = "Summary: " + NOTES
DONE = "Done: wrote out/summary.md"
TEA = "The user likes tea."
STEP_TEXT = "Looking. "

# Every chat request the upstream received: dicts with body, reply, usage.
EXCHANGES = []
EXCHANGES_LOCK = threading.Lock()
CALL_IDS = itertools.count(1)
# Paths the escape case asks for; set by main() once the workspace is known.
ESCAPE_READS = []
ESCAPE_WRITE = "../escaped.txt"


def system_text(messages):
    return "\n".join(text_of(m.get("content")) for m in messages if m["role"] in ("system", "developer"))


def tool_messages(messages):
    return [m for m in messages if m["role"] == "tool"]


def call_names(messages):
    """tool_call_id -> tool name, from the assistant messages of a conversation."""
    names = {}
    for m in messages:
        for call in m.get("tool_calls") or []:
            names[call["id"]] = call["function"]["name"]
    return names


# ---------------------------------------------------------------- the scripted model

def calls(*named):
    """An assistant reply calling tools: (name, arguments) pairs."""
    return [{"id": f"call_{next(CALL_IDS)}", "type": "function",
             "function": {"name": name, "arguments": json.dumps(arguments)}}
            for name, arguments in named]


def scripted_reply(messages):
    """(tool_calls or None, text): what the model answers to this conversation."""
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    task = text_of(messages[last_user]["content"])
    tail = messages[last_user + 1:]
    names = call_names(messages)
    # The tool results of the last step: the tool messages at the end.
    results = []
    for m in reversed(tail):
        if m["role"] != "tool":
            break
        results.insert(0, (names.get(m.get("tool_call_id")), text_of(m.get("content"))))

    if task == SUMMARIZE:
        if not tail:
            return calls(("list_files", {})), None
        if len(results) == 1:
            name, output = results[0]
            if name == "list_files" and "notes.md" in output.split():
                return calls(("read_file", {"path": "notes.md"})), None
            if name == "read_file" and not output.startswith("error:"):
                return calls(("write_file", {"path": "out/summary.md", "content": "Summary: " + output})), None
            if name == "write_file" and output.startswith("wrote ") and output.endswith("out/summary.md"):
                return None, DONE
        return None, f"confused: tail {json.dumps(tail)[:500]}"
    if task == ESCAPE:
        if not tail:
            return calls(*[("read_file", {"path": p}) for p in ESCAPE_READS],
                         ("write_file", {"path": ESCAPE_WRITE, "content": "escaped"})), None
        return None, f"{sum(o.startswith('error:') for _, o in results)} of {len(results)} refused"
    if task == REMEMBER:
        if not tail:
            return calls(("memory", {"action": "add", "content": TEA})), None
        return None, "Noted."
    return None, f"You said: {task}"


def usage_for(body):
    """Distinct numbers per request, so a sum over the steps is checkable."""
    prompt = 40 + 7 * len(body["messages"])
    completion = 3 + len(EXCHANGES) % 5
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class Upstream(ChatUpstream):
    def chat(self, body):
        tool_calls, text = scripted_reply(body["messages"])
        streamed = body.get("stream") is True
        with EXCHANGES_LOCK:
            usage = usage_for(body)
            EXCHANGES.append({"body": body, "tool_calls": tool_calls, "text": text,
                              "usage": usage, "streamed": streamed})
        if streamed:
            self.stream(body, tool_calls, text, usage)
        else:
            self.whole(body, tool_calls, text, usage)

    def whole(self, body, tool_calls, text, usage):
        message = {"role": "assistant", "content": text}
        if tool_calls:
            message["tool_calls"] = tool_calls
        answer = {"id": "chatcmpl-upstream", "object": "chat.completion", "created": int(time.time()),
                  "model": body["model"],
                  "choices": [{"index": 0, "message": message,
                               "finish_reason": "tool_calls" if tool_calls else "stop"}],
                  "usage": usage}
        self.send_json(answer)

    def stream(self, body, tool_calls, text, usage):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.end_headers()
        base = {"id": "chatcmpl-upstream-stream", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body["model"]}

        def send(choices, **extra):
            chunk = dict(base, choices=choices, **extra)
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()

        def delta(d, finish=None):
            send([{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}])

        delta({"role": "assistant", "content": "", "refusal": None})
        content = STEP_TEXT if tool_calls else text
        for piece in (content[:len(content) // 2], content[len(content) // 2:]):
            delta({"content": piece})
        for index, call in enumerate(tool_calls or []):
            delta({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                   "function": {"name": call["function"]["name"], "arguments": ""}}]})
            arguments = call["function"]["arguments"]
            for piece in (arguments[:5], arguments[5:]):
                delta({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        delta({}, "tool_calls" if tool_calls else "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            send([], usage=usage)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


# ---------------------------------------------------------------- helpers for the cases

def take_exchanges():
    with EXCHANGES_LOCK:
        taken = list(EXCHANGES)
        EXCHANGES.clear()
    return taken


def summed(exchanges, field):
    return sum(e["usage"][field] for e in exchanges)


def check_summarize_exchanges(exchanges, ws):
    """The 4 upstream requests of the summarize task: tools offered, results fed back."""
    assert len(exchanges) == 4, f"{len(exchanges)} upstream requests: {[e['text'] for e in exchanges]}"
    for e in exchanges:
        offered = [t["function"]["name"] for t in e["body"].get("tools") or []]
        assert set(BUILTIN_TOOLS) <= set(offered), f"tools offered upstream: {offered}"
    asked = [e["tool_calls"][0]["function"]["name"] if e["tool_calls"] else None for e in exchanges]
    assert asked == ["list_files", "read_file", "write_file", None], f"the model's steps: {asked}"
    # Step k+1 carries step k's assistant message and its tool result.
    for before, after in zip(exchanges, exchanges[1:]):
        messages = after["body"]["messages"]
        assistant, tool = messages[-2], messages[-1]
        call = before["tool_calls"][0]
        assert assistant["role"] == "assistant", messages[-2:]
        assert [c["id"] for c in assistant.get("tool_calls") or []] == [call["id"]], assistant
        assert assistant["tool_calls"][0]["function"]["name"] == call["function"]["name"], assistant
        assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == \
            json.loads(call["function"]["arguments"]), assistant
        assert tool["role"] == "tool" and tool["tool_call_id"] == call["id"], tool
    results = [text_of(tool_messages(e["body"]["messages"])[-1]["content"]) for e in exchanges[1:]]
    listing, read, wrote = results
    assert "notes.md" in listing.splitlines(), f"list_files result: {listing!r}"
    assert read == NOTES, f"read_file result: {read!r}"
    assert wrote == f"wrote {len(SUMMARY.encode())} bytes to out/summary.md", f"write_file result: {wrote!r}"
    # The conversation grows by exactly one assistant + one tool message a step.
    lengths = [len(e["body"]["messages"]) for e in exchanges]
    assert lengths == [lengths[0] + 2 * i for i in range(4)], f"message counts: {lengths}"
    path = os.path.join(ws, "out", "summary.md")
    assert os.path.isfile(path), f"{path} was not written"
    with open(path) as f:
        written = f.read()
    assert written == SUMMARY, f"out/summary.md: {written!r}"


def fresh_output(ws):
    shutil.rmtree(os.path.join(ws, "out"), ignore_errors=True)


def parse_sse(lines):
    """(event name or None, data) per SSE event; comments (`: keep-alive`) skipped."""
    events, name, data = [], None, []
    for line in itertools.chain(lines, [""]):
        if line == "":
            if data:
                events.append((name, "\n".join(data)))
            name, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[len("event:"):].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:"):].removeprefix(" "))
    return events


# ---------------------------------------------------------------- cases

def case_non_streamed(proxy, ws):
    fresh_output(ws)
    take_exchanges()
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="main", messages=[{"role": "user", "content": SUMMARIZE}])
    steps = raw.headers.get("x-hermes-agent-steps")
    completion = raw.parse()
    exchanges = take_exchanges()
    assert steps == "4", f"x-hermes-agent-steps: {steps!r}"
    choice = completion.choices[0]
    assert choice.message.content == DONE, f"content: {choice.message.content!r}"
    assert choice.finish_reason == "stop", f"finish_reason: {choice.finish_reason!r}"
    assert not choice.message.tool_calls, f"tool_calls reached the client: {choice.message.tool_calls}"
    check_summarize_exchanges(exchanges, ws)
    assert not any(e["streamed"] for e in exchanges), "a non-streamed request was streamed upstream"
    usage = completion.usage
    want = (summed(exchanges, "prompt_tokens"), summed(exchanges, "completion_tokens"),
            summed(exchanges, "total_tokens"))
    got = (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    assert got == want, f"usage (prompt, completion, total) {got}, the 4 steps sum to {want}"


def case_streamed(proxy, ws):
    # 1. The naive way: every `data:` line is a chunk to the SDK, progress events included.
    fresh_output(ws)
    take_exchanges()
    content, usages, tool_call_chunks, count = "", [], [], 0
    stream = proxy.client().chat.completions.create(
        model="main", messages=[{"role": "user", "content": SUMMARIZE}],
        stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        count += 1
        if chunk.usage is not None:
            usages.append(chunk.usage)
        if chunk.choices:
            delta = chunk.choices[0].delta
            if delta.tool_calls:
                tool_call_chunks.append(delta.tool_calls)
            if delta.content:
                content += delta.content
    exchanges = take_exchanges()
    check_summarize_exchanges(exchanges, ws)
    assert all(e["streamed"] for e in exchanges), "a streamed request's steps were not streamed upstream"
    assert not tool_call_chunks, f"built-in tool calls reached the client: {tool_call_chunks}"
    assert content.endswith(DONE), f"content: {content!r}"
    assert content.count(STEP_TEXT) == 3, f"the text of every step should reach the client: {content!r}"
    assert usages, f"no usage chunk in {count} chunks"
    last = usages[-1]
    want = (summed(exchanges, "prompt_tokens"), summed(exchanges, "completion_tokens"),
            summed(exchanges, "total_tokens"))
    got = (last.prompt_tokens, last.completion_tokens, last.total_tokens)
    assert got == want, f"streamed usage {got}, the 4 steps sum to {want}"

    # 2. The raw stream: Hermes Agent's progress events around each tool run.
    fresh_output(ws)
    with proxy.client().chat.completions.with_streaming_response.create(
            model="main", messages=[{"role": "user", "content": SUMMARIZE}], stream=True) as response:
        assert response.headers.get("content-type", "").startswith("text/event-stream"), response.headers
        events = parse_sse(response.iter_lines())
    exchanges = take_exchanges()
    check_summarize_exchanges(exchanges, ws)
    assert events and events[-1] == (None, "[DONE]"), f"the stream ends with {events[-1:]}"
    chunks = [json.loads(d) for name, d in events[:-1] if name is None]
    progress = [(i, json.loads(d)) for i, (name, d) in enumerate(events) if name == "hermes.tool.progress"]
    others = {name for name, _ in events if name not in (None, "hermes.tool.progress")}
    assert not others, f"unexpected events: {others}"
    assert chunks, "no ordinary chunks"
    stream_id, model = chunks[0]["id"], chunks[0]["model"]
    assert all(c["id"] == stream_id for c in chunks), {c["id"] for c in chunks}
    assert not any(ch.get("delta", {}).get("tool_calls") for c in chunks for ch in c["choices"]), \
        "built-in tool calls reached the client"
    for _, data in progress:
        assert data.get("object") == "chat.completion.chunk", data
        assert data.get("choices") == [{"index": 0, "delta": {}, "finish_reason": None}], data
        assert data.get("id") == stream_id and data.get("model") == model, (data, stream_id, model)
        assert isinstance(data.get("created"), int), data
    by_call = {e["tool_calls"][0]["id"]: e["tool_calls"][0]["function"]["name"] for e in exchanges[:3]}
    positions = {}
    for call_id, tool in by_call.items():
        mine = [(i, d) for i, d in progress if d.get("toolCallId") == call_id]
        statuses = [d.get("status") for _, d in mine]
        assert statuses == ["running", "completed"], f"{tool} ({call_id}) progress: {statuses}"
        (start, running), (end, completed) = mine
        assert running["tool"] == tool and completed["tool"] == tool, mine
        assert isinstance(running.get("emoji"), str) and running["emoji"], running
        assert isinstance(running.get("label"), str), running
        assert isinstance(completed.get("duration_ms"), int) and completed["duration_ms"] >= 0, completed
        positions[tool] = (start, end)
    assert "notes.md" in [d for _, d in progress if d.get("tool") == "read_file"][0]["label"], progress
    assert len(progress) == 6, f"{len(progress)} progress events: {[d for _, d in progress]}"
    order = [positions[t] for t in ("list_files", "read_file", "write_file")]
    assert order == sorted(order) and all(s < e for s, e in order), f"progress positions: {positions}"
    # The final answer's text comes after the last tool ran.
    done_at = max(i for i, (name, d) in enumerate(events[:-1])
                  if name is None and any((ch.get("delta") or {}).get("content") for ch in json.loads(d)["choices"]))
    assert done_at > positions["write_file"][1], f"text at {done_at}, tools at {positions}"


def case_sandbox_escape(proxy, ws):
    work = os.path.dirname(ws)
    link = os.path.join(ws, "etc-link")
    os.symlink("/etc", link)
    try:
        take_exchanges()
        raw = proxy.client().chat.completions.with_raw_response.create(
            model="main", messages=[{"role": "user", "content": ESCAPE}])
        assert raw.status_code == 200, raw.status_code
        completion = raw.parse()
        exchanges = take_exchanges()
    finally:
        os.unlink(link)
    assert raw.headers.get("x-hermes-agent-steps") == "2", raw.headers.get("x-hermes-agent-steps")
    assert len(exchanges) == 2, f"{len(exchanges)} upstream requests"
    asked = exchanges[0]["tool_calls"]
    results = {m["tool_call_id"]: text_of(m["content"]) for m in tool_messages(exchanges[1]["body"]["messages"])}
    assert set(results) == {c["id"] for c in asked}, f"tool results for {set(results)}, calls {asked}"
    for call in asked:
        output = results[call["id"]]
        arguments = call["function"]["arguments"]
        assert output.startswith("error:"), f"{call['function']['name']} {arguments}: {output[:200]!r}"
        assert "root:" not in output, f"{arguments} leaked /etc/passwd: {output[:200]!r}"
    assert not os.path.exists(os.path.join(work, "escaped.txt")), "write_file wrote outside the workspace"
    content = completion.choices[0].message.content
    assert content == f"{len(asked)} of {len(asked)} refused", f"content: {content!r}"


def case_memory(proxy, ws):
    client = proxy.client()
    take_exchanges()
    first = client.chat.completions.create(model="main", messages=[{"role": "user", "content": REMEMBER}])
    exchanges = take_exchanges()
    assert first.choices[0].message.content == "Noted.", first.choices[0].message.content
    assert len(exchanges) == 2, f"{len(exchanges)} upstream requests"
    assert TEA not in system_text(exchanges[0]["body"]["messages"]), "the memory was there before it was added"
    [result] = tool_messages(exchanges[1]["body"]["messages"])
    output = text_of(result["content"])
    assert not output.startswith("error:") and TEA in output, f"memory tool result: {output!r}"

    question = "What should I drink this afternoon?"
    second = client.chat.completions.create(model="main", messages=[{"role": "user", "content": question}])
    exchanges = take_exchanges()
    assert second.choices[0].message.content == f"You said: {question}", second.choices[0].message.content
    assert len(exchanges) == 1, f"{len(exchanges)} upstream requests"
    messages = exchanges[0]["body"]["messages"]
    system = system_text(messages)
    assert "## Memory" in system and TEA in system, f"system prompt upstream: {system!r}"
    assert messages[-1]["role"] == "user" and text_of(messages[-1]["content"]) == question, messages[-1]

    # Another scope has its own (empty) memory.
    client.chat.completions.create(model="main", messages=[{"role": "user", "content": question}],
                                   extra_headers={"X-Hermes-Memory-Scope": "someone-else"})
    [other] = take_exchanges()
    assert TEA not in system_text(other["body"]["messages"]), "another scope saw the memory"


CASES = [
    ("non-streamed: 4 steps, tool results fed back, summed usage, x-hermes-agent-steps", case_non_streamed),
    ("streamed: naive SDK loop, no tool_calls, summed usage; hermes.tool.progress events", case_streamed),
    ("sandbox: an escape through the loop is an error: tool result, the answer arrives", case_sandbox_escape),
    ("memory: an add is in the next request's system prompt under ## Memory", case_memory),
]


def main():
    upstream = serve(Upstream)
    work = tempfile.mkdtemp(prefix="hermes-agent-e2e-")
    ws = os.path.join(work, "ws")
    os.makedirs(ws)
    with open(os.path.join(ws, "notes.md"), "w") as f:
        f.write(NOTES)
    ESCAPE_READS[:] = ["../../etc/passwd", os.path.relpath("/etc/passwd", ws), "/etc/passwd",
                       "etc-link/passwd"]
    config = os.path.join(work, "routes.toml")
    with open(config, "w") as f:
        f.write(f"""
[[server.keys]]
name = "{KEY_NAME}"
key_env = "HERMES_E2E_AGENT_KEY"

[providers.scripted]
kind = "openai"
base_url = "http://127.0.0.1:{upstream.server_address[1]}/v1"

[routes.main]
agent = true
targets = [{{ provider = "scripted", model = "scripted-model" }}]

[agent]
workspace = "{ws}"
tools = {json.dumps(BUILTIN_TOOLS)}

[store]
path = "{os.path.join(work, 'hermes.db')}"
""")
    proxy = Proxy(work, config, env={"HERMES_E2E_AGENT_KEY": KEY}, key=KEY)
    try:
        passed, failed = run_with_proxy(proxy, CASES, ws)
    finally:
        upstream.shutdown()
        upstream.server_close()
        shutil.rmtree(work, ignore_errors=True)
    return report(passed, failed)


if __name__ == "__main__":
    sys.exit(main())
