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
