//! The agent loop over real HTTP: a scripted upstream plays the model (its
//! replies are fixtures), the tools work on real files in a temporary
//! workspace, and the client is async-openai or plain HTTP where headers and
//! raw events matter.

use std::path::Path;

use async_openai::types::{ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs};
use serde_json::{json, Value};

use crate::support::mock_upstream::{data_event, MockUpstream, Reply};
use crate::support::proxy::{config_for, http, Proxy};

/// One route, `main`, with the agent loop on over `workspace`.
pub fn agent_config(up: &MockUpstream, workspace: &Path, agent: &str) -> String {
    config_for(
        &[("up", &up.base_url())],
        &format!(
            "agent = true\n\n[agent]\nworkspace = \"{}\"\n{agent}\n",
            workspace.display()
        ),
    )
}

/// A whole reply calling `calls` (id, tool, arguments).
pub fn calls(calls: &[(&str, &str, Value)]) -> Reply {
    let tool_calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, args)| {
            json!({"id": id, "type": "function",
                "function": {"name": name, "arguments": args.to_string()}})
        })
        .collect();
    Reply::json(
        200,
        json!({"id": "chatcmpl-a", "object": "chat.completion", "created": 1, "model": "up-model",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "", "reasoning_content": "I should look.",
                "tool_calls": tool_calls}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}),
    )
}

/// The same as a stream: some text, then the calls in pieces, then usage.
pub fn streamed_calls(text: &str, calls: &[(&str, &str, Value)]) -> Reply {
    let chunk = |delta: Value, finish: Value| {
        data_event(
            &json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1,
            "model": "up-model", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": text}),
        Value::Null,
    )];
    for (i, (id, name, args)) in calls.iter().enumerate() {
        events.push(chunk(
            json!({"tool_calls": [{"index": i, "id": id, "type": "function",
                "function": {"name": name, "arguments": ""}}]}),
            Value::Null,
        ));
        events.push(chunk(
            json!({"tool_calls": [{"index": i, "function": {"arguments": args.to_string()}}]}),
            Value::Null,
        ));
    }
    events.push(chunk(json!({}), json!("tool_calls")));
    events.push(data_event(
        &json!({"id": "chatcmpl-s", "object": "chat.completion.chunk",
        "created": 1, "model": "up-model", "choices": [],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}),
    ));
    events.push("data: [DONE]\n\n".into());
    Reply::sse(events)
}

/// The three-step task: list the files, read one, write a summary.
fn script(up: &MockUpstream, streamed: bool) {
    let steps = [
        ("call_1", "list_files", json!({})),
        ("call_2", "read_file", json!({"path": "notes.md"})),
        (
            "call_3",
            "write_file",
            json!({"path": "out/summary.md", "content": "Notes say: ship it."}),
        ),
    ];
    for step in steps {
        up.push(if streamed {
            streamed_calls("Working. ", &[step])
        } else {
            calls(&[step])
        });
    }
    up.push(if streamed {
        Reply::stream_text("Done: out/summary.md written.")
    } else {
        Reply::chat("Done: out/summary.md written.")
    });
}

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.md"), "ship it").unwrap();
    dir
}

/// What each step sent upstream, checked against the script.
fn assert_steps_sent(up: &MockUpstream) {
    let sent = up.requests();
    assert_eq!(sent.len(), 4);
    let tools: Vec<&str> = sent[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(
        tools.contains(&"read_file") && tools.contains(&"write_file"),
        "{tools:?}"
    );
    let second = sent[1].body["messages"].as_array().unwrap();
    let call = &second[second.len() - 2];
    assert_eq!(call["role"], "assistant");
    assert_eq!(call["tool_calls"][0]["id"], "call_1");
    if call.get("reasoning_content").is_some() {
        assert_eq!(call["reasoning_content"], "I should look.");
    }
    let listing = &second[second.len() - 1];
    assert_eq!(listing["role"], "tool");
    assert_eq!(listing["tool_call_id"], "call_1");
    assert!(
        listing["content"].as_str().unwrap().contains("notes.md"),
        "{listing}"
    );
    let third = sent[2].body["messages"].as_array().unwrap();
    assert_eq!(third.last().unwrap()["content"], "ship it");
    let fourth = sent[3].body["messages"].as_array().unwrap();
    assert!(fourth.last().unwrap()["content"]
        .as_str()
        .unwrap()
        .starts_with("wrote 19 bytes to out/summary.md"));
}

#[tokio::test]
async fn a_three_step_task_runs_to_the_end_through_the_sdk() {
    let up = MockUpstream::start().await;
    let ws = workspace();
    script(&up, false);
    let proxy = Proxy::start(&agent_config(&up, ws.path(), "")).await;
    let client = proxy.openai("unused");
    let request = CreateChatCompletionRequestArgs::default()
        .model("main")
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("Summarize notes.md into out/summary.md")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap();
    let answer = client.chat().create(request).await.unwrap();
    let choice = &answer.choices[0];
    assert_eq!(
        choice.message.content.as_deref(),
        Some("Done: out/summary.md written.")
    );
    assert!(choice.message.tool_calls.is_none());
    let usage = answer.usage.unwrap();
    // Three tool steps of 10 + 5, and the final answer: 10 + its 3 words.
    assert_eq!(usage.prompt_tokens, 40);
    assert_eq!(usage.completion_tokens, 15 + 3);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("out/summary.md")).unwrap(),
        "Notes say: ship it."
    );
    assert_steps_sent(&up);
    // Kimi's thinking models refuse a tool turn without its reasoning.
    let second = up.requests()[1].body["messages"].clone();
    assert_eq!(second[1]["reasoning_content"], "I should look.");
    let metrics = proxy.metrics();
    assert!(
        metrics.contains("hermes_agent_steps_count{route=\"main\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("hermes_agent_tool_calls_total{outcome=\"ok\",tool=\"read_file\"} 1"));
}

#[tokio::test]
async fn the_answer_says_how_many_steps_it_took() {
    let up = MockUpstream::start().await;
    let ws = workspace();
    script(&up, false);
    let proxy = Proxy::start(&agent_config(&up, ws.path(), "")).await;
    let resp = proxy.post("/v1/chat/completions", &task("go")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-hermes-agent-steps"], "4");
}

/// A chat request for `main` with one user message.
fn task(text: &str) -> Value {
    json!({"model": "main", "messages": [{"role": "user", "content": text}]})
}

/// Every `data:` payload of a stream, with the event name before it.
async fn events(resp: reqwest::Response) -> Vec<(Option<String>, String)> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty() && !block.starts_with(':'))
        .map(|block| {
            let mut name = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            (name, data)
        })
        .collect()
}

#[tokio::test]
async fn a_streamed_task_shows_text_and_progress_but_never_built_in_calls() {
    let up = MockUpstream::start().await;
    let ws = workspace();
    script(&up, true);
    let proxy = Proxy::start(&agent_config(&up, ws.path(), "")).await;
    let resp = proxy
        .post(
            "/v1/chat/completions",
            &json!({"model": "main", "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "Summarize notes.md"}]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let events = events(resp).await;
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<(Option<String>, Value)> = events[..events.len() - 1]
        .iter()
        .map(|(name, data)| (name.clone(), serde_json::from_str(data).unwrap()))
        .collect();
    let mut text = String::new();
    let mut progress = vec![];
    for (name, chunk) in &chunks {
        // Every payload is a chunk of one stream.
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        assert_eq!(chunk["id"], chunks[0].1["id"]);
        if let Some(choice) = chunk["choices"].get(0) {
            assert!(choice["delta"].get("tool_calls").is_none(), "{chunk}");
            text.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
        }
        match name.as_deref() {
            Some("hermes.tool.progress") => progress.push(chunk.clone()),
            None => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(
        text,
        "Working. Working. Working. Done: out/summary.md written."
    );
    let statuses: Vec<(String, String)> = progress
        .iter()
        .map(|p| {
            (
                p["tool"].as_str().unwrap().to_owned(),
                p["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("list_files", "running"),
            ("list_files", "completed"),
            ("read_file", "running"),
            ("read_file", "completed"),
            ("write_file", "running"),
            ("write_file", "completed"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert_eq!(progress[2]["toolCallId"], "call_2");
    assert_eq!(progress[2]["label"], "notes.md");
    assert_eq!(progress[2]["choices"][0]["delta"], json!({}));
    let finish = chunks
        .iter()
        .filter_map(|(_, c)| c["choices"][0]["finish_reason"].as_str())
        .collect::<Vec<_>>();
    assert_eq!(finish, ["stop"]);
    let usage = &chunks.last().unwrap().1["usage"];
    assert_eq!(usage["prompt_tokens"], 40);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("out/summary.md")).unwrap(),
        "Notes say: ship it."
    );
    assert_steps_sent(&up);
}

#[tokio::test]
async fn a_client_tool_call_ends_the_loop_after_the_built_ins_of_its_reply() {
    let up = MockUpstream::start().await;
    let ws = workspace();
    up.push(calls(&[
        ("call_b", "read_file", json!({"path": "notes.md"})),
        ("call_c", "get_weather", json!({"city": "Paris"})),
    ]));
    let proxy = Proxy::start(&agent_config(&up, ws.path(), "")).await;
    let resp = proxy
        .post(
            "/v1/chat/completions",
            &json!({"model": "main",
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {}}}}],
            "messages": [{"role": "user", "content": "weather?"}]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(up.request_count(), 1);
    let offered = up.requests()[0].body["tools"].to_string();
    assert!(offered.contains("get_weather") && offered.contains("read_file"));
    let metrics = proxy.metrics();
    assert!(metrics.contains("hermes_agent_tool_calls_total{outcome=\"ok\",tool=\"read_file\"} 1"));
}

#[tokio::test]
async fn at_max_steps_the_last_built_in_calls_are_not_run() {
    let up = MockUpstream::start().await;
    let ws = workspace();
    up.push(calls(&[("call_1", "list_files", json!({}))]));
    up.push(calls(&[(
        "call_2",
        "write_file",
        json!({"path": "never.md", "content": "x"}),
    )]));
    let proxy = Proxy::start(&agent_config(&up, ws.path(), "max_steps = 2")).await;
    let resp = proxy.post("/v1/chat/completions", &task("go")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-hermes-agent-steps"], "2");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());
    assert!(!ws.path().join("never.md").exists());
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn a_client_tool_named_like_a_built_in_is_refused() {
    let up = MockUpstream::start().await;
    let ws = workspace();
    let proxy = Proxy::start(&agent_config(&up, ws.path(), "")).await;
    let resp = proxy
        .post(
            "/v1/chat/completions",
            &json!({"model": "main",
            "tools": [{"type": "function", "function": {"name": "read_file", "parameters": {}}}],
            "messages": [{"role": "user", "content": "go"}]}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`read_file` is the name of a built-in tool"));
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn a_failing_tool_is_an_error_message_to_the_model_not_a_failed_request() {
    let up = MockUpstream::start().await;
    let ws = workspace();
    up.push(calls(&[
        ("call_1", "read_file", json!({"path": "missing.md"})),
        ("call_2", "no_such_tool", json!({})),
    ]));
    up.push(Reply::chat("It is not there."));
    let proxy = Proxy::start(&agent_config(&up, ws.path(), "")).await;
    let resp = proxy
        .post("/v1/chat/completions", &task("read missing.md"))
        .await;
    assert_eq!(resp.status(), 200);
    let sent = up.requests();
    let messages = sent[1].body["messages"].as_array().unwrap();
    let n = messages.len();
    for result in &messages[n - 2..] {
        assert_eq!(result["role"], "tool");
        assert!(
            result["content"].as_str().unwrap().starts_with("error:"),
            "{result}"
        );
    }
    let metrics = proxy.metrics();
    assert!(
        metrics.contains("hermes_agent_tool_calls_total{outcome=\"error\",tool=\"read_file\"} 1")
    );
    assert!(metrics.contains("hermes_agent_tool_calls_total{outcome=\"error\",tool=\"unknown\"} 1"));
}

#[tokio::test]
async fn a_session_keeps_the_tool_steps_and_sends_nothing_twice() {
    let up = MockUpstream::start().await;
    let ws = workspace();
    up.push(calls(&[(
        "call_1",
        "read_file",
        json!({"path": "notes.md"}),
    )]));
    up.push(Reply::chat("It says ship it."));
    up.push(Reply::chat("Yes."));
    up.push(Reply::chat("Still yes."));
    let proxy = Proxy::start(&agent_config(&up, ws.path(), "")).await;
    let send = |messages: Value| {
        http()
            .post(proxy.url("/v1/chat/completions"))
            .header("x-hermes-session-id", "s-1")
            .json(&json!({"model": "main", "messages": messages}))
            .send()
    };
    let first = json!([{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "read notes.md"}]);
    assert_eq!(send(first.clone()).await.unwrap().status(), 200);
    // A chat UI resends the transcript it saw (no tool steps) and one new message.
    let mut transcript = first.as_array().unwrap().clone();
    transcript.push(json!({"role": "assistant", "content": "It says ship it."}));
    transcript.push(json!({"role": "user", "content": "sure?"}));
    assert_eq!(send(transcript.into()).await.unwrap().status(), 200);
    // A client that sends only its new message.
    assert_eq!(
        send(json!([{"role": "user", "content": "really?"}]))
            .await
            .unwrap()
            .status(),
        200
    );
    let sent = up.requests();
    let roles = |i: usize| -> Vec<String> {
        sent[i].body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        roles(2),
        ["system", "user", "assistant", "tool", "assistant", "user"]
    );
    assert_eq!(
        roles(3),
        [
            "system",
            "user",
            "assistant",
            "tool",
            "assistant",
            "user",
            "assistant",
            "user"
        ]
    );
    let last = sent[3].body["messages"].as_array().unwrap();
    assert_eq!(last[3]["content"], "ship it");
    assert_eq!(last[7]["content"], "really?");
    // Without the header nothing is kept.
    up.push(Reply::chat("Fresh."));
    proxy.post("/v1/chat/completions", &task("hello")).await;
    assert_eq!(
        up.requests()[4].body["messages"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn responses_show_built_in_steps_as_function_call_items() {
    let up = MockUpstream::start().await;
    let ws = workspace();
    up.push(calls(&[(
        "call_1",
        "read_file",
        json!({"path": "notes.md"}),
    )]));
    up.push(Reply::chat("It says ship it."));
    up.push(streamed_calls(
        "",
        &[("call_2", "read_file", json!({"path": "notes.md"}))],
    ));
    up.push(Reply::stream_text("It says ship it."));
    let proxy = Proxy::start(&agent_config(&up, ws.path(), "")).await;
    let resp = proxy
        .post(
            "/v1/responses",
            &json!({"model": "main", "input": "read notes.md"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let kinds: Vec<&str> = body["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["function_call", "function_call_output", "message"]);
    assert_eq!(body["output"][1]["output"], "ship it");

    // The stored response continues with its tool steps in place.
    up.push(Reply::chat("Yes."));
    let resp = proxy
        .post(
            "/v1/responses",
            &json!({"model": "main", "input": "sure?",
            "previous_response_id": body["id"]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let continued = up.requests()[2].body["messages"].clone();
    let roles: Vec<&str> = continued
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant", "user"]);
    assert_eq!(continued[2]["content"], "ship it");

    up.push(streamed_calls(
        "",
        &[("call_2", "read_file", json!({"path": "notes.md"}))],
    ));
    up.push(Reply::stream_text("It says ship it."));
    let resp = proxy
        .post(
            "/v1/responses",
            &json!({"model": "main", "input": "read notes.md", "stream": true}),
        )
        .await;
    let events = events(resp).await;
    let added: Vec<String> = events
        .iter()
        .filter(|(name, _)| name.as_deref() == Some("response.output_item.added"))
        .map(|(_, data)| {
            let v: Value = serde_json::from_str(data).unwrap();
            v["item"]["type"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(added, ["function_call", "function_call_output", "message"]);
    let arguments: Vec<&String> = events
        .iter()
        .filter(|(name, _)| name.as_deref() == Some("response.function_call_arguments.done"))
        .map(|(_, data)| data)
        .collect();
    assert_eq!(arguments.len(), 1);
    assert!(
        arguments[0].contains(r#"{\"path\":\"notes.md\"}"#),
        "{arguments:?}"
    );
    let (name, last) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("response.completed"));
    let last: Value = serde_json::from_str(last).unwrap();
    assert_eq!(last["response"]["output"][1]["output"], "ship it");
}

/// The pids of running processes whose command line is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<u32> {
    let wanted = argv.join("\0") + "\0";
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted.as_bytes())
        })
        .collect()
}

/// Waits (up to 10 s, polling) until `done` holds.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    done()
}

fn sleeper_config(up: &MockUpstream, ws: &Path) -> String {
    agent_config(
        up,
        ws,
        "tools = [\"terminal\"]\nterminal_allow = [\"sleep\"]\ntool_timeout = \"60s\"",
    )
}

#[tokio::test]
async fn a_streaming_client_that_goes_away_stops_the_loop_and_kills_its_tool() {
    let up = MockUpstream::start().await;
    let ws = workspace();
    let argv = ["sleep", "3017"];
    up.push(streamed_calls(
        "Waiting. ",
        &[("call_s", "terminal", json!({"command": argv.join(" ")}))],
    ));
    up.push(Reply::stream_text("never asked for"));
    let proxy = Proxy::start(&sleeper_config(&up, ws.path())).await;
    let mut resp = proxy
        .post(
            "/v1/chat/completions",
            &json!({"model": "main", "stream": true,
            "messages": [{"role": "user", "content": "wait"}]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let mut seen = String::new();
    while !seen.contains("\"running\"") {
        seen.push_str(&String::from_utf8_lossy(
            &resp.chunk().await.unwrap().unwrap(),
        ));
    }
    assert!(
        eventually(|| !processes(&argv).is_empty()).await,
        "the tool never started"
    );
    drop(resp);
    assert!(
        eventually(|| processes(&argv).is_empty()).await,
        "the tool outlived its client"
    );
    assert_eq!(up.request_count(), 1, "the loop went on without its client");
}

#[tokio::test]
async fn a_client_that_gives_up_on_a_whole_answer_kills_its_tool() {
    let up = MockUpstream::start().await;
    let ws = workspace();
    let argv = ["sleep", "3018"];
    up.push(calls(&[(
        "call_s",
        "terminal",
        json!({"command": argv.join(" ")}),
    )]));
    up.push(Reply::chat("never asked for"));
    let proxy = Proxy::start(&sleeper_config(&up, ws.path())).await;
    let request = http()
        .post(proxy.url("/v1/chat/completions"))
        .timeout(std::time::Duration::from_secs(1))
        .json(&task("wait"))
        .send();
    let started = tokio::spawn(request);
    assert!(
        eventually(|| !processes(&argv).is_empty()).await,
        "the tool never started"
    );
    assert!(
        started.await.unwrap().is_err(),
        "the client should have timed out"
    );
    assert!(
        eventually(|| processes(&argv).is_empty()).await,
        "the tool outlived its client"
    );
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn a_step_answered_without_a_choice_fails_cleanly() {
    let up = MockUpstream::start().await;
    let ws = workspace();
    up.push(Reply::json(
        200,
        json!({"id": "x", "object": "chat.completion", "choices": []}),
    ));
    let proxy = Proxy::start(&agent_config(&up, ws.path(), "")).await;
    let resp = proxy.post("/v1/chat/completions", &task("go")).await;
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("answered without a choice"));
}

#[tokio::test]
async fn a_later_step_that_breaks_mid_stream_ends_the_stream_with_one_error() {
    let up = MockUpstream::start().await;
    let ws = workspace();
    up.push(streamed_calls(
        "Looking. ",
        &[("call_1", "list_files", json!({}))],
    ));
    up.push(Reply::stream_text("half an answer and then").cut_after(2));
    let proxy = Proxy::start(&agent_config(&up, ws.path(), "")).await;
    let mut body = task("go");
    body["stream"] = true.into();
    let resp = proxy.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let events = events(resp).await;
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let errors: Vec<Value> = events
        .iter()
        .filter(|(_, data)| data.contains("\"error\""))
        .map(|(_, data)| serde_json::from_str(data).unwrap())
        .collect();
    assert_eq!(errors.len(), 1, "{events:?}");
    let message = errors[0]["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("up: "), "{message}");
    assert!(!message.starts_with("up: up: "), "{message}");
    let metrics = proxy.metrics();
    assert!(
        metrics
            .contains("hermes_upstream_requests_total{outcome=\"server_error\",provider=\"up\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_forced_tool_choice_holds_for_the_first_step_only_and_calls_are_capped() {
    let up = MockUpstream::start().await;
    let ws = workspace();
    let many: Vec<(String, &str, Value)> = (0..20)
        .map(|i| (format!("call_{i}"), "list_files", json!({})))
        .collect();
    let many: Vec<(&str, &str, Value)> = many
        .iter()
        .map(|(id, name, args)| (id.as_str(), *name, args.clone()))
        .collect();
    up.push(calls(&many));
    up.push(Reply::chat("Listed."));
    let proxy = Proxy::start(&agent_config(&up, ws.path(), "")).await;
    let mut body = task("list");
    body["tool_choice"] = "required".into();
    let resp = proxy.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let sent = up.requests();
    assert_eq!(sent[0].body["tool_choice"], "required");
    assert_eq!(sent[1].body["tool_choice"], "auto");
    let results: Vec<&str> = sent[1].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(results.len(), 20);
    assert!(results[..16].iter().all(|r| r.contains("notes.md")));
    assert!(results[16..]
        .iter()
        .all(|r| r.starts_with("error: at most 16")));
}
