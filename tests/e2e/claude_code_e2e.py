"""End-to-end: the real Claude Code CLI (npm `@anthropic-ai/claude-code`, run
in print mode) against the Messages ingress of hermes-proxy, whose route
`main` goes to a scripted loopback Chat Completions upstream.

Claude Code is started with a fresh HOME and nothing from the caller's
environment but PATH, so no login, settings or real key can leak in; its
API traffic goes to the proxy (ANTHROPIC_BASE_URL) with a client key of the
proxy's config, and its other traffic is switched off. Cases (a) and (b) run with
`--bare` (no hooks, plugins, CLAUDE.md or background prefetches: a run that
depends only on the prompt); (c) runs as users do.

The upstream decides its answer from the conversation: "Say hello" is
answered with GREETING; "Summarize notes.txt" with a call to Claude Code's
own `Read` tool on that file (the absolute path, as the tool's schema
demands); a `tool` message last with "notes.txt: " + the file's first line
as Claude Code's Read tool returned it. It streams as OpenAI does when asked
(Claude Code always streams). Every request it receives is recorded.

Cases:
  (a) `claude -p "Say hello" --output-format json`: the result is the
      upstream's text, not an error; the upstream got the prompt and
      Claude Code's tools as functions, streamed;
  (b) a tool round trip: Claude Code runs `Read` on the upstream's call and
      sends the result back; the upstream's second request has a `tool`
      message for that call whose text holds the file's content, line by
      line; the printed result is the upstream's final text.

  (c) the same prompt without `--bare`, as users run it: Claude Code 2.1.332
      then sends its environment block as a `"role": "system"` message
      inside `messages` (the ingress once refused that with a 400), and
      `thinking`, `context_management` and side requests ride along.

    HERMES_BIN=target/debug/hermes-proxy HERMES_E2E_CLAUDE=target/ci-node/node_modules/.bin/claude \\
        python tests/e2e/claude_code_e2e.py
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

from harness import ChatUpstream, Proxy, report, run_with_proxy, serve, text_of  # noqa: E402

KEY = "sk-e2e-claude-code-0123456789"
GREETING = "Hello from the scripted upstream, through hermes-proxy."
NOTES = "The launch moved to Thursday.\nBring the quarterly figures.\nNo slides, please.\n"
READ_CALL_ID = "call_read_notes_1"
USAGE = {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28}

# Every chat request the upstream received: dicts with body and the answer message.
EXCHANGES = []
LOCK = threading.Lock()
# Set by main() once the workspace exists: the file the upstream asks Claude Code to read.
NOTES_PATH = []


def take():
    with LOCK:
        taken = list(EXCHANGES)
        EXCHANGES.clear()
    return taken


def prompt_of(messages):
    """The text of the last user message (Claude Code sends a list of text parts)."""
    users = [m for m in messages if m["role"] == "user"]
    return text_of(users[-1].get("content")) if users else ""


def read_result_lines(result):
    """The file's lines from the Read tool's output: Claude Code numbers them
    (`1\\tline` in 2.1.332, `     1→line` in older versions) and may add a
    reminder after."""
    lines = []
    for line in result.splitlines():
        numbered = re.match(r"^\s*(\d+)(?:\t|\u2192)(.*)$", line)
        if numbered:
            lines.append((int(numbered.group(1)), numbered.group(2)))
    return [text for _, text in lines], [n for n, _ in lines]


def scripted_answer(body):
    messages = body["messages"]
    last = messages[-1]
    if last["role"] == "tool":
        result = text_of(last.get("content"))
        lines, _ = read_result_lines(result)
        first = lines[0] if lines else f"(unreadable: {result[:200]!r})"
        return {"role": "assistant", "content": f"notes.txt: {first}"}, "stop"
    prompt = prompt_of(messages)
    if "Summarize notes.txt" in prompt:
        tools = [t["function"]["name"] for t in body.get("tools") or []]
        if "Read" not in tools:
            return {"role": "assistant", "content": f"no Read tool among {tools}"}, "stop"
        return {"role": "assistant", "content": None, "tool_calls": [{
            "id": READ_CALL_ID, "type": "function",
            "function": {"name": "Read", "arguments": json.dumps({"file_path": NOTES_PATH[0]})}}]}, "tool_calls"
    if "Say hello" in prompt:
        return {"role": "assistant", "content": GREETING}, "stop"
    return {"role": "assistant", "content": f"unexpected prompt: {prompt[:200]!r}"}, "stop"


class Upstream(ChatUpstream):
    def chat(self, body):
        message, finish = scripted_answer(body)
        with LOCK:
            EXCHANGES.append({"body": body, "answer": message})
        self.answer(body, message, finish, USAGE)



# ---------------------------------------------------------------- running claude

def claude(proxy, home, workspace, prompt, *flags, bare=True):
    """Runs `claude -p PROMPT --output-format json` (with `--bare` unless
    told otherwise); returns its parsed result."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "LANG": "C.UTF-8",
        # The proxy's root: Claude Code appends /v1/messages itself.
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{proxy.port}",
        "ANTHROPIC_API_KEY": KEY,
        # Every model Claude Code might pick is the proxy's route.
        "ANTHROPIC_MODEL": "main",
        "ANTHROPIC_SMALL_FAST_MODEL": "main",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": "main",
        "ANTHROPIC_DEFAULT_SONNET_MODEL": "main",
        "ANTHROPIC_DEFAULT_OPUS_MODEL": "main",
        # No traffic but the API: no telemetry, updates, error reports.
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    command = [os.environ["HERMES_E2E_CLAUDE"], *(["--bare"] if bare else []),
               "-p", prompt, "--output-format", "json", *flags]
    done = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"claude exited with {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    try:
        result = json.loads(done.stdout)
    except ValueError as e:
        raise AssertionError(f"claude printed no JSON: {done.stdout[-3000:]!r}\n{done.stderr[-2000:]}") from e
    assert result.get("is_error") is False, f"claude reports an error: {result}"
    return result


# ---------------------------------------------------------------- cases

def case_say_hello(proxy, home, workspace):
    take()
    result = claude(proxy, home, workspace, "Say hello")
    assert result["result"] == GREETING, result
    exchanges = take()
    assert len(exchanges) == 1, f"{len(exchanges)} upstream requests: {[e['answer'] for e in exchanges]}"
    body = exchanges[0]["body"]
    assert body["model"] == "upstream-model", body["model"]
    assert body.get("stream") is True, "Claude Code's streamed request was not streamed upstream"
    assert prompt_of(body["messages"]) == "Say hello", body["messages"]
    tools = {t["function"]["name"]: t["function"] for t in body.get("tools") or []}
    assert "Read" in tools, f"Claude Code's tools as the upstream got them: {sorted(tools)}"
    assert "file_path" in tools["Read"]["parameters"]["properties"], tools["Read"]


def case_read_tool_round_trip(proxy, home, workspace):
    take()
    result = claude(proxy, home, workspace, "Summarize notes.txt", "--allowedTools", "Read")
    exchanges = take()
    asked = [e["answer"].get("tool_calls") and e["answer"]["tool_calls"][0]["function"]["name"] for e in exchanges]
    assert asked == ["Read", None], f"the upstream's answers: {[e['answer'] for e in exchanges]}"

    messages = exchanges[1]["body"]["messages"]
    [assistant] = [m for m in messages if m["role"] == "assistant"]
    [call] = assistant["tool_calls"]
    assert call["id"] == READ_CALL_ID and call["function"]["name"] == "Read", call
    assert json.loads(call["function"]["arguments"]) == {"file_path": NOTES_PATH[0]}, call
    tool = messages[-1]
    assert tool["role"] == "tool" and tool["tool_call_id"] == READ_CALL_ID, messages[-2:]
    output = text_of(tool.get("content"))
    lines, numbers = read_result_lines(output)
    # What Claude Code's Read tool returned is the file, numbered from 1 (the
    # empty line after the last newline is numbered too).
    assert numbers == list(range(1, len(lines) + 1)), f"Read's output: {output!r}"
    assert "\n".join(lines) == NOTES, f"Read's output: {output!r}"

    assert result["result"] == "notes.txt: The launch moved to Thursday.", result
    assert result.get("num_turns") == 2, result


def case_default_mode(proxy, home, workspace):
    """Claude Code as a user runs it: no `--bare`, so its environment notes
    travel as `system` turns inside `messages`, thinking and context
    management ride along, and side requests may go to the small model."""
    take()
    result = claude(proxy, home, workspace, "Say hello", bare=False)
    assert result["result"] == GREETING, result
    exchanges = take()
    hello = [e for e in exchanges if "Say hello" in prompt_of(e["body"]["messages"])]
    assert hello, f"no upstream request carried the prompt: {[e['body']['messages'][-1] for e in exchanges]}"
    assert all(e["answer"].get("content") != "" for e in exchanges), exchanges


CASES = [
    ("(a) claude -p \"Say hello\": the upstream's text, streamed through the Messages ingress", case_say_hello),
    ("(b) Claude Code runs its Read tool and sends the file back as a tool result", case_read_tool_round_trip),
    ("(c) claude as users run it (no --bare): system turns inside messages are accepted", case_default_mode),
]


def main():
    upstream = serve(Upstream)
    work = tempfile.mkdtemp(prefix="hermes-claude-code-e2e-")
    home = os.path.join(work, "home")
    workspace = os.path.join(work, "workspace")
    os.makedirs(home)
    os.makedirs(workspace)
    NOTES_PATH.append(os.path.join(workspace, "notes.txt"))
    with open(NOTES_PATH[0], "w") as f:
        f.write(NOTES)
    config = os.path.join(work, "routes.toml")
    with open(config, "w") as f:
        f.write(f"""
[[server.keys]]
name = "e2e"
key_env = "HERMES_E2E_CLAUDE_CODE_KEY"

[providers.upstream]
kind = "openai"
base_url = "http://127.0.0.1:{upstream.server_address[1]}/v1"

[routes.main]
targets = [{{ provider = "upstream", model = "upstream-model" }}]

[store]
path = "{os.path.join(work, 'hermes.db')}"
""")
    proxy = Proxy(work, config, key=KEY, env={"HERMES_E2E_CLAUDE_CODE_KEY": KEY})
    try:
        passed, failed = run_with_proxy(proxy, CASES, home, workspace)
    finally:
        upstream.shutdown()
        upstream.server_close()
        shutil.rmtree(work, ignore_errors=True)
    return report(passed, failed)


if __name__ == "__main__":
    sys.exit(main())
