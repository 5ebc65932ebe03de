"""End-to-end: the Responses API of hermes-proxy, driven by the official
OpenAI Python SDK (`openai`) and the OpenAI Agents SDK (`openai-agents`),
against a route whose upstream speaks Chat Completions only. The upstream is
a scripted loopback server whose answer depends on the request: offered
tools and a user message last, it asks for `get_weather`; a tool message
last, it answers with what the tool returned; otherwise it answers with the
user messages it saw, so a proxy that drops history fails the asserts.

The proxy runs with two client keys and a store file in a temporary work
directory. Cases:
  - an Agent (Agents SDK) with a function tool on the Responses model;
  - a raw SDK function-tool round trip: `function_call` ->
    `function_call_output` (via `previous_response_id`) -> answer;
  - `previous_response_id` across a proxy restart (SIGTERM, exit 0, start
    again on the same store), and a stored response is visible only to the
    key that created it: another key's retrieve / input_items / delete are
    404 `not_found`, its `previous_response_id` is 400
    `previous_response_not_found`.
Prints one line per case and "N passed, M failed" last.

    HERMES_BIN=target/debug/hermes-proxy python tests/e2e/responses_e2e.py
"""

import asyncio
import itertools
import json
import os
import sys
import tempfile
import threading
from http.server import ThreadingHTTPServer

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"

import openai  # noqa: E402
from agents import Agent, Runner, function_tool, set_default_openai_client, set_tracing_disabled  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

from harness import ChatUpstream, Proxy, report, run_with_proxy, text_of  # noqa: E402

KEY_A = "sk-e2e-key-a-0123456789"
KEY_B = "sk-e2e-key-b-9876543210"

# (request body, answer message) for every chat request the upstream received
EXCHANGES = []
CALL_IDS = itertools.count(1)


def user_texts(messages):
    return [text_of(m.get("content")) for m in messages if m["role"] == "user"]


def scripted_answer(body):
    """What the upstream answers: a tool call, the tool's output, or the user turns it saw."""
    messages = body["messages"]
    last = messages[-1]
    if last["role"] == "tool":
        return {"role": "assistant",
                "content": f"The weather in Paris: {text_of(last['content'])}."}, "stop"
    if last["role"] == "user" and body.get("tools"):
        call_id = f"call_weather_{next(CALL_IDS)}"
        return {"role": "assistant", "content": None, "tool_calls": [{
            "id": call_id, "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]}, "tool_calls"
    users = user_texts(messages)
    return {"role": "assistant",
            "content": f"[{len(users)} user turns] you said: {' | '.join(users)}"}, "stop"


class Upstream(ChatUpstream):
    def chat(self, body):
        message, finish = scripted_answer(body)
        EXCHANGES.append((body, message))
        answer = {"id": "chatcmpl-e2e", "object": "chat.completion", "created": 0, "model": body["model"],
                  "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                  "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}}
        self.send_json(answer)


# ---------------------------------------------------------------- case: Agents SDK

CALLS = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    CALLS.append(city)
    return "sunny, 24 C"


async def run_agent(base_url):
    set_tracing_disabled(True)
    set_default_openai_client(AsyncOpenAI(base_url=base_url, api_key=KEY_A, max_retries=0),
                              use_for_tracing=False)
    agent = Agent(name="weather", instructions="Answer with the tool.", model="main", tools=[get_weather])
    return await Runner.run(agent, "What is the weather in Paris?")


def case_agent_with_a_tool(proxy):
    EXCHANGES.clear()
    result = asyncio.run(run_agent(proxy.base_url))
    assert CALLS == ["Paris"], f"tool calls: {CALLS}"
    assert "sunny" in result.final_output, f"final output: {result.final_output!r}"
    assert len(EXCHANGES) == 2, f"{len(EXCHANGES)} upstream requests"
    (first, asked), (second, _) = EXCHANGES
    assert first["tools"][0]["function"]["name"] == "get_weather", first["tools"]
    tool_turn = second["messages"]
    roles = [m["role"] for m in tool_turn]
    assert roles[-2:] == ["assistant", "tool"], roles
    call_id = asked["tool_calls"][0]["id"]
    assert tool_turn[-2]["tool_calls"][0]["id"] == call_id, tool_turn[-2]
    assert tool_turn[-1]["tool_call_id"] == call_id, tool_turn[-1]


# ---------------------------------------------------------------- case: raw SDK tool round trip

TOOLS = [{
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False},
    "strict": True,
}]


def case_function_tool_round_trip(proxy):
    EXCHANGES.clear()
    client = proxy.client(KEY_A)
    question = "What is the weather in Paris?"
    first = client.responses.create(model="main", input=question, tools=TOOLS)
    assert first.status == "completed", first.status
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1, f"output: {first.output}"
    call = calls[0]
    assert len(EXCHANGES) == 1, f"{len(EXCHANGES)} upstream requests"
    sent, asked = EXCHANGES[0]
    upstream_call = asked["tool_calls"][0]
    assert call.call_id == upstream_call["id"], (call.call_id, upstream_call["id"])
    assert call.name == "get_weather", call.name
    assert json.loads(call.arguments) == {"city": "Paris"}, call.arguments
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"], sent["tools"]
    assert sent["tools"][0]["function"]["parameters"]["properties"] == {"city": {"type": "string"}}, sent["tools"]
    assert user_texts(sent["messages"]) == [question], sent["messages"]

    second = client.responses.create(
        model="main", previous_response_id=first.id, tools=TOOLS,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 24 C"}])
    assert second.status == "completed", second.status
    assert "sunny, 24 C" in second.output_text, f"output_text: {second.output_text!r}"
    assert second.previous_response_id == first.id, second.previous_response_id
    assert not [item for item in second.output if item.type == "function_call"], second.output
    assert len(EXCHANGES) == 2, f"{len(EXCHANGES)} upstream requests"
    messages = EXCHANGES[1][0]["messages"]
    roles = [m["role"] for m in messages if m["role"] not in ("system", "developer")]
    assert roles == ["user", "assistant", "tool"], [(m["role"], m.get("content")) for m in messages]
    user, assistant, tool = [m for m in messages if m["role"] not in ("system", "developer")]
    assert text_of(user["content"]) == question, user
    assert len(assistant.get("tool_calls") or []) == 1, assistant
    replayed = assistant["tool_calls"][0]
    assert replayed["id"] == call.call_id, replayed
    assert replayed["function"]["name"] == "get_weather", replayed
    assert json.loads(replayed["function"]["arguments"]) == {"city": "Paris"}, replayed
    assert tool["tool_call_id"] == call.call_id, tool
    assert text_of(tool["content"]) == "sunny, 24 C", tool


# ---------------------------------------------------------------- case: restart and ownership

def expect_error(kind, code, call):
    try:
        result = call()
    except kind as e:
        assert e.code == code, f"{kind.__name__} with code {e.code!r}, not {code!r}: {e}"
        return e
    except openai.APIStatusError as e:
        raise AssertionError(f"expected {kind.__name__} ({code}), got {e.status_code} {e.code!r}: {e}") from e
    raise AssertionError(f"expected {kind.__name__} ({code}), got an answer: {result!r}")


def case_previous_response_across_a_restart_and_other_keys(proxy):
    EXCHANGES.clear()
    a = proxy.client(KEY_A)
    turns = ["My favourite colour is heliotrope.", "And my cat is called Ada."]
    r1 = a.responses.create(model="main", input=turns[0])
    r2 = a.responses.create(model="main", input=turns[1], previous_response_id=r1.id)
    assert "[2 user turns]" in r2.output_text, f"before the restart: {r2.output_text!r}"

    status = proxy.stop()
    assert status == 0, f"the proxy exited with {status} on SIGTERM"
    proxy.start()
    a = proxy.client(KEY_A)
    b = proxy.client(KEY_B)

    # Key A continues the conversation stored before the restart.
    EXCHANGES.clear()
    turns.append("What are their names?")
    r3 = a.responses.create(model="main", input=turns[2], previous_response_id=r2.id)
    assert r3.previous_response_id == r2.id, r3.previous_response_id
    assert "[3 user turns]" in r3.output_text, f"after the restart: {r3.output_text!r}"
    assert len(EXCHANGES) == 1, f"{len(EXCHANGES)} upstream requests"
    messages = [m for m in EXCHANGES[0][0]["messages"] if m["role"] not in ("system", "developer")]
    got = [(m["role"], text_of(m.get("content"))) for m in messages]
    want = [("user", turns[0]), ("assistant", r1.output_text),
            ("user", turns[1]), ("assistant", r2.output_text),
            ("user", turns[2])]
    assert got == want, f"the upstream saw {got}"

    # Key A reads what was stored before and after the restart.
    for stored in (r1, r3):
        again = a.responses.retrieve(stored.id)
        assert again.id == stored.id and again.output_text == stored.output_text, again
    items = a.responses.input_items.list(r1.id)
    assert any(turns[0] in json.dumps(item.model_dump()) for item in items.data), items.data

    # Key B cannot see it, continue it, list its input or delete it.
    EXCHANGES.clear()
    expect_error(openai.NotFoundError, "not_found", lambda: b.responses.retrieve(r3.id))
    expect_error(openai.NotFoundError, "not_found", lambda: b.responses.retrieve(r1.id))
    expect_error(openai.BadRequestError, "previous_response_not_found",
                 lambda: b.responses.create(model="main", input="Tell me their names.",
                                            previous_response_id=r3.id))
    e = expect_error(openai.NotFoundError, "not_found", lambda: b.responses.input_items.list(r3.id))
    assert e.status_code == 404, e.status_code
    expect_error(openai.NotFoundError, "not_found", lambda: b.responses.delete(r3.id))
    assert not EXCHANGES, f"key B's requests reached the upstream: {EXCHANGES}"
    # ... and key A still has it, untouched by key B's delete.
    assert a.responses.retrieve(r3.id).output_text == r3.output_text


CASES = [
    ("an Agent with a function tool on the Responses model", case_agent_with_a_tool),
    ("a function_call -> function_call_output round trip with the raw SDK", case_function_tool_round_trip),
    ("previous_response_id across a restart; another key cannot read it",
     case_previous_response_across_a_restart_and_other_keys),
]


def main():
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    work = tempfile.mkdtemp(prefix="hermes-responses-e2e-")
    config = os.path.join(work, "routes.toml")
    with open(config, "w") as f:
        f.write(f"""
[[server.keys]]
name = "team-a"
key_env = "HERMES_E2E_KEY_A"

[[server.keys]]
name = "team-b"
key_env = "HERMES_E2E_KEY_B"

[providers.scripted]
kind = "openai"
base_url = "http://127.0.0.1:{upstream.server_address[1]}/v1"

[routes.main]
targets = [{{ provider = "scripted", model = "scripted-model" }}]

[store]
path = "{os.path.join(work, 'data', 'hermes.db')}"
max_responses = 1000
ttl = "1h"
""")
    proxy = Proxy(work, config, env={"HERMES_E2E_KEY_A": KEY_A, "HERMES_E2E_KEY_B": KEY_B})
    try:
        passed, failed = run_with_proxy(proxy, CASES)
    finally:
        upstream.shutdown()
    return report(passed, failed)


if __name__ == "__main__":
    sys.exit(main())
