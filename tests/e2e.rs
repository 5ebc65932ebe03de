//! End-to-end checks with real third-party tools against the real binary:
//! the official OpenAI Python SDK (`tests/e2e/run.sh`), the Responses API
//! through that SDK and the OpenAI Agents SDK against a scripted Chat
//! Completions upstream, with two client keys and a store that outlives a
//! restart (`tests/e2e/responses_e2e.py`), the server-side agent loop through
//! that SDK against a scripted model (`tests/e2e/agent_e2e.py`), and a real
//! Prometheus that scrapes the proxy and evaluates every dashboard query
//! (`tests/e2e/prometheus_check.sh`), and the official OpenAI Node SDK
//! (`tests/e2e/node_sdk_e2e.mjs`: chat, streams, tools, errors), and the
//! official Anthropic Python SDK against the Messages ingress, routed to Chat
//! Completions and Messages upstreams (`tests/e2e/anthropic_e2e.py`), and
//! reasoning that survives the round trip through the OpenAI Python SDK: a
//! client that drops `reasoning_content` (and signed thinking) from its
//! history against scripted Kimi-like and Messages upstreams that refuse a
//! tool turn without it (`tests/e2e/reasoning_e2e.py`), and the real Claude
//! Code CLI in print mode against the Messages ingress, with a round trip
//! through its own `Read` tool (`tests/e2e/claude_code_e2e.py`).
//!
//! They need `pip install openai openai-agents anthropic` (or `HERMES_E2E_PYTHON`
//! naming a Python that has them), Debian's `prometheus` package, and node
//! with npm's `openai` (`HERMES_E2E_NODE_MODULES` naming the `node_modules`
//! that holds it, else `target/ci-node/node_modules`), and npm's
//! `@anthropic-ai/claude-code` (`HERMES_E2E_CLAUDE` naming its `claude`, else
//! `target/ci-node/node_modules/.bin/claude`); `.ci/run` installs them.
//! Without them each check says what is missing and is skipped, except under
//! CI (`CI` set), where a missing tool is a failure.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hermes-proxy");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Ok(()) to go on; Err(()) when the tool is missing outside CI (skip).
fn require(available: bool, what: &str) -> Result<(), ()> {
    if available {
        return Ok(());
    }
    let message = format!(
        "{what} is not installed: run .ci/run once (it installs it), or install it by hand"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
    Err(())
}

fn python() -> String {
    std::env::var("HERMES_E2E_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

/// Runs a script with the test binary and reports its output on failure.
fn run_script(script: &str, envs: &[(&str, String)]) {
    run_with("bash", script, envs)
}

fn run_with(interpreter: &str, script: &str, envs: &[(&str, String)]) {
    let out = Command::new(interpreter)
        .arg(format!("{REPO}/tests/e2e/{script}"))
        .env("HERMES_BIN", BIN)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .env_remove("MOONSHOT_API_KEY")
        .env_remove("OPENROUTER_API_KEY")
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(" passed, 0 failed"),
        "{script} printed no clean tally:\n{stdout}"
    );
}

#[test]
fn the_official_openai_python_sdk_works_against_the_proxy() {
    let python = python();
    let has_sdk = succeeds(Command::new(&python).args(["-c", "import openai"]));
    if require(has_sdk, &format!("the OpenAI Python SDK (for {python})")).is_err() {
        return;
    }
    run_script("run.sh", &[("PYTHON", python)]);
}

/// The Responses API with the official SDK and the Agents SDK: an Agent with a
/// function tool, a `function_call` -> `function_call_output` round trip,
/// `previous_response_id` across a proxy restart, and a stored response that
/// another client key can neither read nor continue.
#[test]
fn the_responses_api_keeps_tool_turns_and_conversations_across_restarts_per_key() {
    let python = python();
    let has_sdk = succeeds(Command::new(&python).args(["-c", "import agents, openai"]));
    if require(has_sdk, &format!("the OpenAI Agents SDK (for {python})")).is_err() {
        return;
    }
    run_with(&python, "responses_e2e.py", &[]);
}

/// The server-side agent loop (`agent = true`) through the official SDK: a
/// scripted model lists, reads and writes workspace files in four steps whose
/// tool results the proxy feeds back; the same streamed (text of every step,
/// `hermes.tool.progress` events, no built-in `tool_calls`); a sandbox escape
/// that comes back to the model as `error:`; memory in the next system prompt.
#[test]
fn the_agent_loop_runs_built_in_tools_and_feeds_their_results_back() {
    let python = python();
    let has_sdk = succeeds(Command::new(&python).args(["-c", "import openai"]));
    if require(has_sdk, &format!("the OpenAI Python SDK (for {python})")).is_err() {
        return;
    }
    run_with(&python, "agent_e2e.py", &[]);
}

/// The Messages ingress (`POST /v1/messages`) through the official Anthropic
/// Python SDK: create and stream on a Chat Completions route, a tool_use ->
/// tool_result round trip, count_tokens, typed 401/404/429/400 errors, a
/// byte-for-byte passthrough to a Messages upstream, and failover from a 529
/// Messages upstream to a Chat Completions one.
#[test]
fn the_official_anthropic_python_sdk_works_against_the_messages_ingress() {
    let python = python();
    let has_sdk = succeeds(Command::new(&python).args(["-c", "import anthropic, openai"]));
    if require(has_sdk, &format!("the Anthropic Python SDK (for {python})")).is_err() {
        return;
    }
    run_with(&python, "anthropic_e2e.py", &[]);
}

/// Reasoning that survives the round trip, through the official SDK: a
/// client rebuilds its tool-call turn without `reasoning_content` (whole and
/// streamed) and a Kimi-like upstream that refuses that still gets the
/// original text; a history the proxy never saw gets Kimi's 400 and is sent
/// again with `""`; a Messages upstream with thinking gets the original
/// signed thinking block back; `hermes_reasoning_roundtrip_total` counts each.
#[test]
fn reasoning_dropped_by_the_client_reaches_thinking_upstreams_again() {
    let python = python();
    let has_sdk = succeeds(Command::new(&python).args(["-c", "import openai"]));
    if require(has_sdk, &format!("the OpenAI Python SDK (for {python})")).is_err() {
        return;
    }
    run_with(&python, "reasoning_e2e.py", &[]);
}

/// The OpenAI Node SDK against a scripted upstream: chat, a stream with
/// usage, a stream the client aborts, tool calls whole and streamed with the
/// result sent back, and NotFound / BadRequest / RateLimit errors as typed.
#[test]
fn the_official_openai_node_sdk_works_against_the_proxy() {
    let modules = std::env::var("HERMES_E2E_NODE_MODULES")
        .unwrap_or_else(|_| format!("{REPO}/target/ci-node/node_modules"));
    let has_node = succeeds(Command::new("node").arg("--version"));
    let has_sdk = std::path::Path::new(&modules)
        .join("openai/package.json")
        .is_file();
    if require(has_node, "node").is_err()
        || require(
            has_sdk,
            &format!("the OpenAI Node SDK (npm openai, in {modules})"),
        )
        .is_err()
    {
        return;
    }
    run_with(
        "node",
        "node_sdk_e2e.mjs",
        &[("HERMES_E2E_NODE_MODULES", modules)],
    );
}

/// The real Claude Code CLI (`claude -p ... --output-format json`, fresh
/// HOME, only the proxy reachable) against a scripted Chat Completions
/// upstream: the printed result is the upstream's text, with `--bare` and as
/// users run it, and a call to Claude Code's `Read` tool comes back upstream
/// as a `tool` message holding the file.
#[test]
fn the_claude_code_cli_works_against_the_messages_ingress() {
    let python = python();
    let claude = std::env::var("HERMES_E2E_CLAUDE")
        .unwrap_or_else(|_| format!("{REPO}/target/ci-node/node_modules/.bin/claude"));
    let has_sdk = succeeds(Command::new(&python).args(["-c", "import openai"]));
    // Only looked at, not run: `claude` writes its state under HOME, and the
    // script runs it with a HOME of its own.
    let has_claude = std::path::Path::new(&claude).is_file();
    if require(has_sdk, &format!("the OpenAI Python SDK (for {python})")).is_err()
        || require(
            has_claude,
            &format!("Claude Code (npm @anthropic-ai/claude-code, at {claude})"),
        )
        .is_err()
    {
        return;
    }
    run_with(
        &python,
        "claude_code_e2e.py",
        &[("HERMES_E2E_CLAUDE", claude)],
    );
}

#[test]
fn prometheus_scrapes_the_proxy_and_every_dashboard_query_evaluates() {
    let has_prometheus = succeeds(Command::new("promtool").arg("--version"))
        && (succeeds(Command::new("prometheus").arg("--version"))
            || succeeds(Command::new("/usr/bin/prometheus").arg("--version")));
    if require(
        has_prometheus,
        "Prometheus (Debian: apt-get install prometheus)",
    )
    .is_err()
    {
        return;
    }
    run_script("prometheus_check.sh", &[]);
}
