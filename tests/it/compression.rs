use serde_json::{json, Value};

use crate::support::mock_upstream::{wire, MockUpstream, Reply};
use crate::support::proxy::{sse_data, Proxy};

/// A 300-message agent conversation: task, then turns of
/// user -> assistant tool call -> tool result -> assistant answer.
fn agent_conversation(messages: usize) -> Vec<Value> {
    let mut m = vec![
        json!({"role": "system", "content": "You are a meticulous coding agent."}),
        json!({"role": "user", "content": "Port the parser to the new AST."}),
    ];
    let mut i = 0;
    while m.len() < messages - 1 {
        m.push(json!({"role": "user", "content": format!("Step {i}: go on. {}", "context ".repeat(30))}));
        m.push(json!({"role": "assistant", "content": null, "tool_calls": [{"id": format!("call_{i}"), "type": "function",
            "function": {"name": "read_file", "arguments": format!("{{\"path\": \"src/file_{i}.rs\"}}")}}]}));
        m.push(json!({"role": "tool", "tool_call_id": format!("call_{i}"), "content": "fn parse() { todo }\n".repeat(60)}));
        m.push(
            json!({"role": "assistant", "content": format!("Read file {i}; it needs changes.")}),
        );
        i += 1;
    }
    m.truncate(messages - 1);
    // never end on a dangling tool call
    while m
        .last()
        .is_some_and(|x| x["role"] != "assistant" || x.get("tool_calls").is_some())
    {
        m.pop();
    }
    m.push(json!({"role": "user", "content": "Now summarize what changed."}));
    m
}

fn config(url: &str, window: Option<u32>, extra: &str) -> String {
    let window = window
        .map(|w| format!(", context_window = {w}"))
        .unwrap_or_default();
    format!(
        "[providers.small]\nkind = \"openai\"\nbase_url = \"{url}\"\n\n\
         [routes.main]\ntargets = [{{ provider = \"small\", model = \"small-8k\"{window} }}]\n{extra}"
    )
}

fn openai_overflow(limit: usize) -> Reply {
    Reply::json(
        400,
        json!({"error": {"message": format!("This model's maximum context length is {limit} tokens. However, your messages resulted in 90000 tokens. Please reduce the length of the messages."),
            "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}),
    )
}

async fn send(proxy: &Proxy, messages: &[Value], stream: bool) -> reqwest::Response {
    proxy
        .post(
            "/v1/chat/completions",
            &json!({"model": "main", "stream": stream, "messages": messages}),
        )
        .await
}

/// No tool result without its assistant call; system and last message verbatim.
fn assert_well_formed(sent: &[Value], original: &[Value]) {
    assert_eq!(sent[0], original[0]);
    assert_eq!(sent.last(), original.last());
    for (i, m) in sent.iter().enumerate() {
        if m["role"] == "tool" {
            let id = &m["tool_call_id"];
            assert!(
                sent[..i].iter().any(|p| p["tool_calls"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| &c["id"] == id))),
                "orphan tool result {id}"
            );
        }
    }
}

#[tokio::test]
async fn a_300_message_agent_conversation_fits_an_8k_window_streamed_and_not() {
    for stream in [false, true] {
        let up = MockUpstream::start().await;
        up.enforce_context(8192, openai_overflow(8192));
        if stream {
            up.set_default(Reply::stream_text("All changes summarized."));
        }
        // Summaries come from their own route (never streamed).
        let summarizer = MockUpstream::start().await;
        summarizer.set_default(Reply::chat(
            "Goal: port the parser. Files read; changes pending.",
        ));
        let extra = format!(
            "[providers.summ]\nkind = \"openai\"\nbase_url = \"{}\"\n[routes.summarize]\ntargets = [{{ provider = \"summ\", model = \"s\", context_window = 8192 }}]\n\
             [compression]\nsummarizer = \"summarize\"\n",
            summarizer.base_url()
        );
        let proxy = Proxy::start(&config(&up.base_url(), Some(8192), &extra)).await;
        let conversation = agent_conversation(300);
        let resp = send(&proxy, &conversation, stream).await;
        assert_eq!(resp.status(), 200);
        let header = resp.headers()["x-hermes-compressed"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            header.contains("summary") && header.contains("->") && header.ends_with("tokens"),
            "{header}"
        );
        if stream {
            assert_eq!(sse_data(resp).await.last().unwrap(), "[DONE]");
        }
        let requests = up.requests();
        let last = requests.last().unwrap();
        let sent = last.body["messages"].as_array().unwrap();
        assert_well_formed(sent, &conversation);
        assert!(sent.len() < 100, "{} messages still sent", sent.len());
        // the summary was asked for with the structured prompt, in chunks that fit its window
        let asked = summarizer.requests();
        assert!(asked.len() >= 2, "{} summary requests", asked.len());
        assert!(asked.iter().all(|r| r.body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("Decisions made")));
        assert!(asked
            .iter()
            .all(|r| r.raw_body.split(|b| b.is_ascii_whitespace()).count() < 8192));
        assert!(proxy
            .metrics()
            .contains("hermes_compressions_total{outcome=\"compressed\",route=\"main\"} 1"));
    }
}

#[tokio::test]
async fn learns_the_window_from_each_providers_error_and_retries_compressed() {
    let shapes = [
        openai_overflow(6000),
        Reply::json(
            400,
            json!({"error": {"code": 400, "message": "request (9476 tokens) exceeds the available context size (6000 tokens), try increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": 9476, "n_ctx": 6000}}),
        ),
        Reply::json(
            400,
            json!({"object": "error", "message": "This model's maximum context length is 6000 tokens. However, you requested 9000 tokens (8000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.", "type": "BadRequestError", "param": null, "code": 400}),
        ),
        Reply::json(
            400,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 9310 tokens > 6000 maximum"}}),
        ),
    ];
    for shape in shapes {
        let up = MockUpstream::start().await;
        up.enforce_context(6000, shape);
        let proxy = Proxy::start(&config(&up.base_url(), None, "")).await;
        let conversation = agent_conversation(120);
        let resp = send(&proxy, &conversation, false).await;
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
        assert!(resp.headers().contains_key("x-hermes-compressed"));
        // the limit is remembered: the next request is compressed before it is sent
        let before = up.request_count();
        let resp = send(&proxy, &conversation, false).await;
        assert_eq!(resp.status(), 200);
        let words = |r: &crate::support::mock_upstream::Recorded| {
            r.raw_body.split(|b| b.is_ascii_whitespace()).count()
        };
        let overflowed = up.requests()[before..]
            .iter()
            .filter(|r| words(r) > 6000)
            .count();
        assert_eq!(overflowed, 0, "sent uncompressed again");
    }
}

#[tokio::test]
async fn drops_old_turns_and_says_so_when_the_summarizer_fails() {
    let up = MockUpstream::start().await;
    up.enforce_context(8192, openai_overflow(8192));
    let broken = MockUpstream::start().await;
    broken.set_default(Reply::json(
        500,
        json!({"error": {"message": "summarizer down"}}),
    ));
    let extra = format!(
        "[providers.summ]\nkind = \"openai\"\nbase_url = \"{}\"\n[routes.summarize]\ntargets = [{{ provider = \"summ\", model = \"s\" }}]\n\
         [compression]\nsummarizer = \"summarize\"\n",
        broken.base_url()
    );
    let proxy = Proxy::start(&config(&up.base_url(), Some(8192), &extra)).await;
    let conversation = agent_conversation(300);
    let resp = send(&proxy, &conversation, false).await;
    assert_eq!(resp.status(), 200);
    let header = resp.headers()["x-hermes-compressed"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(header.contains("dropped"), "{header}");
    assert!(broken.request_count() >= 1);
    let last = up.requests().last().unwrap().body["messages"]
        .as_array()
        .unwrap()
        .clone();
    assert_well_formed(&last, &conversation);
    assert!(proxy
        .metrics()
        .contains("hermes_compressions_total{outcome=\"dropped\",route=\"main\"} 1"));
}

#[tokio::test]
async fn an_impossible_request_is_400_with_the_sizes() {
    let up = MockUpstream::start().await;
    let proxy = Proxy::start(&config(&up.base_url(), Some(2048), "")).await;
    let one_huge = vec![json!({"role": "user", "content": "word ".repeat(5000)})];
    let resp = send(&proxy, &one_huge, false).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("context window is 2048 tokens"), "{msg}");
    assert_eq!(up.request_count(), 0, "sent although it could not fit");
}

#[tokio::test]
async fn compression_off_returns_the_upstream_error_untouched() {
    let up = MockUpstream::start().await;
    up.push(wire::kimi_context_length());
    let proxy = Proxy::start(
        &config(&up.base_url(), None, "")
            .replace("[routes.main]\n", "[routes.main]\ncompression = \"off\"\n"),
    )
    .await;
    let resp = send(&proxy, &agent_conversation(20), false).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["error"]["message"],
        "Invalid request: Your request exceeded model token limit : 262144"
    );
    assert!(v["error"]["type"] == "invalid_request_error");
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn asks_local_servers_for_their_window_before_the_first_request() {
    let probes = [
        (
            "/v1/models",
            json!({"object": "list", "data": [{"id": "small-8k", "object": "model", "max_model_len": 6000}]}),
        ),
        (
            "/props",
            json!({"default_generation_settings": {"n_ctx": 6000}}),
        ),
        (
            "/api/show",
            json!({"model_info": {"qwen3.context_length": 40960}, "parameters": "num_ctx 6000\ntemperature 0.6"}),
        ),
    ];
    for (path, answer) in probes {
        let up = MockUpstream::start().await;
        up.on_get(path, Reply::json(200, answer));
        up.enforce_context(6000, openai_overflow(6000));
        let proxy = Proxy::start(&config(&up.base_url(), None, "")).await;
        let resp = send(&proxy, &agent_conversation(120), false).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert!(
            resp.headers().contains_key("x-hermes-compressed"),
            "{path}: not compressed before sending"
        );
        let words = |r: &crate::support::mock_upstream::Recorded| {
            r.raw_body.split(|b| b.is_ascii_whitespace()).count()
        };
        assert!(
            up.requests().iter().all(|r| words(r) <= 6000),
            "{path}: the window was not known up front"
        );
        assert!(up.probes().iter().any(|p| p.path == path));
    }
}

/// Finding 8: an OpenAI-kind server that answers the probes' paths with JSON
/// that holds no window (a catch-all handler, a different API) must not
/// teach one; the conversation goes out whole.
#[tokio::test]
async fn a_probe_answer_that_states_no_window_teaches_nothing() {
    let up = MockUpstream::start().await;
    up.on_get("/props", Reply::json(200, json!({"status": "ok"})));
    up.on_get(
        "/api/show",
        Reply::json(200, json!({"object": "list", "data": []})),
    );
    let proxy = Proxy::start(&config(&up.base_url(), None, "")).await;
    let conversation = agent_conversation(120);
    let resp = send(&proxy, &conversation, false).await;
    assert_eq!(resp.status(), 200);
    assert!(
        !resp.headers().contains_key("x-hermes-compressed"),
        "compressed for a window nobody stated"
    );
    assert!(up.probes().iter().any(|p| p.path == "/api/show"));
    let sent = up.requests().last().unwrap().body["messages"].clone();
    assert_eq!(sent.as_array().unwrap().len(), conversation.len());
}

/// The route a new user writes: a local 16k model configured as 128k (or
/// not at all), and the request's own route as the summarizer.
fn new_user_config(url: &str, window: Option<u32>) -> String {
    let window = window
        .map(|w| format!(", context_window = {w}"))
        .unwrap_or_default();
    format!(
        "[providers.local]\nkind = \"openai\"\nbase_url = \"{url}\"\n\n\
         [routes.main]\ntargets = [{{ provider = \"local\", model = \"qwen\"{window} }}]\n"
    )
}

/// A long chat with no tool outputs to clear: only a summary can shrink it.
fn chat_conversation(turns: usize) -> Vec<Value> {
    let mut m = vec![json!({"role": "user", "content": "Plan the migration with me."})];
    for i in 0..turns {
        m.push(json!({"role": "assistant", "content": format!("Part {i}: {}", "analysis ".repeat(400))}));
        m.push(
            json!({"role": "user", "content": format!("Noted {i}. {}", "question ".repeat(40))}),
        );
    }
    m
}

fn words(r: &crate::support::mock_upstream::Recorded) -> usize {
    r.raw_body.split(|b| b.is_ascii_whitespace()).count()
}

fn is_summary_request(r: &crate::support::mock_upstream::Recorded) -> bool {
    r.body["messages"][0]["content"]
        .as_str()
        .is_some_and(|s| s.contains("Decisions made"))
}

/// Issue 13's new-user scenario: the upstream's stated 16384 beats the
/// configured 131072, and the summarizer's own requests are planned for it.
#[tokio::test]
async fn a_stated_window_smaller_than_the_configured_one_wins_and_bounds_the_summarizer() {
    for configured in [Some(131072), None] {
        stated_window_bounds_every_request(configured).await;
    }
}

async fn stated_window_bounds_every_request(configured: Option<u32>) {
    let up = MockUpstream::start().await;
    up.enforce_context(16384, openai_overflow(16384));
    let proxy = Proxy::start(&new_user_config(&up.base_url(), configured)).await;
    let conversation = chat_conversation(150);
    let resp = send(&proxy, &conversation, false).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    assert_eq!(status, 200, "{:?}", resp.text().await);
    assert!(headers.contains_key("x-hermes-compressed"));
    let requests = up.requests();
    // Only the first request could not know the window.
    assert!(words(&requests[0]) > 16384);
    let summaries: Vec<_> = requests.iter().filter(|r| is_summary_request(r)).collect();
    // A middle of some 60k tokens goes to a 16k model in chunks.
    assert!(summaries.len() >= 4, "{} summary requests", summaries.len());
    for r in &requests[1..] {
        assert!(
            words(r) <= 16384,
            "{configured:?}: a {} request of {} words went to a 16384-token model",
            if is_summary_request(r) {
                "summary"
            } else {
                "chat"
            },
            words(r)
        );
    }
    assert_well_formed(
        requests.last().unwrap().body["messages"]
            .as_array()
            .unwrap(),
        &conversation,
    );
    // Learned once, the window holds for the next request: no failed attempt.
    let before = up.request_count();
    let resp = send(&proxy, &conversation, false).await;
    assert_eq!(resp.status(), 200);
    assert!(up.requests()[before..].iter().all(|r| words(r) <= 16384));
}

/// When even compression cannot make it fit, the 400 names the window in
/// force (the stated one, not the configured one) and how far it got.
#[tokio::test]
async fn the_too_long_error_states_the_window_in_force() {
    let up = MockUpstream::start().await;
    up.enforce_context(16384, openai_overflow(16384));
    let proxy = Proxy::start(&new_user_config(&up.base_url(), Some(131072))).await;
    let mut conversation = agent_conversation(40);
    conversation.push(json!({"role": "assistant", "content": "Ready."}));
    conversation.push(json!({"role": "user", "content": "word ".repeat(20000)}));
    let resp = send(&proxy, &conversation, false).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("16384"), "{msg}");
    assert!(!msg.contains("131072"), "{msg}");
    assert!(msg.contains("context window is 16384 tokens"), "{msg}");
    assert!(msg.contains("down to"), "{msg}");
}
