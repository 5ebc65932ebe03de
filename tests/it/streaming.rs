use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::support::mock_upstream::{data_event, wire, MockUpstream, Reply};
use crate::support::proxy::{config_for, http, sse_data, Proxy};

fn chat_body(stream_usage: bool) -> Value {
    let mut body =
        json!({"model": "main", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    if stream_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

async fn stream(proxy: &Proxy, body: &Value) -> reqwest::Response {
    http()
        .post(proxy.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn async_openai_stream_assembles_the_demo_answer() {
    let proxy = Proxy::start(hermes_proxy::config::EMBEDDED).await;
    let request = async_openai::types::CreateChatCompletionRequestArgs::default()
        .model("demo/demo")
        .stream(true)
        .messages([
            async_openai::types::ChatCompletionRequestUserMessageArgs::default()
                .content("stream me")
                .build()
                .unwrap()
                .into(),
        ])
        .build()
        .unwrap();
    let mut chunks = proxy
        .openai("k")
        .chat()
        .create_stream(request)
        .await
        .unwrap();
    let mut text = String::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.unwrap();
        if let Some(c) = chunk.choices.first().and_then(|c| c.delta.content.clone()) {
            text.push_str(&c);
        }
    }
    assert!(text.contains("stream me"), "{text}");
}

#[tokio::test]
async fn hoists_kimi_stream_usage_to_the_top_level() {
    let up = MockUpstream::start().await;
    up.push(wire::kimi_stream_usage_in_choice());
    let proxy = Proxy::start(&config_for(&[("kimi", &up.base_url())], "")).await;
    let data = sse_data(stream(&proxy, &chat_body(true)).await).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let with_usage: Vec<Value> = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v.get("usage").is_some_and(|u| !u.is_null()))
        .collect();
    assert_eq!(with_usage.len(), 1, "{data:?}");
    assert_eq!(
        with_usage[0]["usage"]["prompt_tokens_details"]["cached_tokens"],
        4
    );
    assert!(with_usage[0]["choices"][0].get("usage").is_none());
}

#[tokio::test]
async fn drops_upstream_comments_and_renames_reasoning_in_deltas() {
    let up = MockUpstream::start().await;
    up.push(Reply::sse(vec![
        ": OPENROUTER PROCESSING\n\n".into(),
        data_event(&json!({"choices": [{"index": 0, "delta": {"reasoning": "thinking"}}]})),
        ": OPENROUTER PROCESSING\n\n".into(),
        data_event(&json!({"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]})),
        "data: [DONE]\n\n".into(),
    ]));
    let proxy = Proxy::start(&config_for(&[("openrouter", &up.base_url())], "")).await;
    let text = stream(&proxy, &chat_body(false))
        .await
        .text()
        .await
        .unwrap();
    assert!(!text.contains("OPENROUTER"), "{text}");
    assert!(
        text.contains("\"reasoning_content\":\"thinking\""),
        "{text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn a_mid_stream_upstream_error_ends_with_an_error_chunk_then_done() {
    let up = MockUpstream::start().await;
    up.push(Reply::sse(wire::openrouter_mid_stream_error_events()));
    let proxy = Proxy::start(&config_for(&[("openrouter", &up.base_url())], "")).await;
    let data = sse_data(stream(&proxy, &chat_body(false)).await).await;
    let n = data.len();
    assert_eq!(data[n - 1], "[DONE]");
    let last: Value = serde_json::from_str(&data[n - 2]).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("openrouter:"),
        "{last}"
    );
    assert!(data[..n - 2].iter().all(|d| !d.contains("\"error\"")));
}

#[tokio::test]
async fn a_cut_stream_tells_the_client_instead_of_ending_cleanly() {
    let up = MockUpstream::start().await;
    up.push(Reply::stream_text("one two three four").cut_after(2));
    let proxy = Proxy::start(&config_for(&[("up", &up.base_url())], "")).await;
    let data = sse_data(stream(&proxy, &chat_body(false)).await).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    let err: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert!(
        err["error"]["message"].as_str().unwrap().contains("broke")
            || err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("before [DONE]"),
        "{err}"
    );
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_event_fails_over() {
    let primary = MockUpstream::start().await;
    primary.push(Reply::sse(vec![
        ": OPENROUTER PROCESSING\n\n".into(),
        data_event(&json!({"error": {"message": "Provider returned error", "code": 429, "metadata": {"raw": "rate-limited upstream"}}})),
    ]));
    let fallback = MockUpstream::start().await;
    fallback.push(Reply::stream_text("fallback speaking"));
    let proxy = Proxy::start(&config_for(
        &[
            ("openrouter", &primary.base_url()),
            ("local", &fallback.base_url()),
        ],
        "",
    ))
    .await;
    let resp = stream(&proxy, &chat_body(false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-hermes-provider"], "local");
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("fallback") && !text.contains("\"error\""),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn sends_keep_alive_comments_during_upstream_silence() {
    let up = MockUpstream::start().await;
    up.push(Reply::stream_text("slow answer").gap(Duration::from_secs(40)));
    let proxy = Proxy::start(&config_for(&[("up", &up.base_url())], "")).await;
    let text = stream(&proxy, &chat_body(false))
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains(": keep-alive\n\n"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_upstream_request() {
    let up = MockUpstream::start().await;
    let words = vec!["w"; 1000].join(" ");
    up.push(Reply::stream_text(&words).gap(Duration::from_millis(20))); // 20 s in all
    let proxy = Proxy::start(&config_for(&[("up", &up.base_url())], "")).await;
    let resp = stream(&proxy, &chat_body(false)).await;
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    assert_eq!(up.open_streams(), 1);
    drop(body); // the client goes away after the first chunk
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while up.open_streams() > 0 || !proxy.metrics().contains("hermes_inflight_requests 0") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upstream stream was not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn resume_config(primary: &MockUpstream, fallback: &MockUpstream) -> String {
    config_for(
        &[
            ("primary", &primary.base_url()),
            ("fallback", &fallback.base_url()),
        ],
        "",
    )
    .replace("[routes.main]\n", "[routes.main]\nresume = true\n")
}

fn content_of(data: &[String]) -> String {
    data.iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect()
}

#[tokio::test]
async fn resume_continues_a_broken_text_stream_on_the_next_target() {
    let primary = MockUpstream::start().await;
    primary.push(Reply::stream_text("The quick brown fox jumps").cut_after(3));
    let fallback = MockUpstream::start().await;
    fallback.push(Reply::stream_text(" fox jumps over the lazy dog."));
    let proxy = Proxy::start(&resume_config(&primary, &fallback)).await;

    let resp = stream(&proxy, &chat_body(false)).await;
    assert_eq!(resp.headers()["x-hermes-provider"], "primary");
    let data = sse_data(resp).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(data.iter().all(|d| !d.contains("\"error\"")), "{data:?}");
    assert_eq!(
        content_of(&data),
        "The quick brown fox jumps over the lazy dog."
    );

    let sent = &fallback.requests()[0].body["messages"];
    let n = sent.as_array().unwrap().len();
    assert_eq!(
        sent[n - 2],
        json!({"role": "assistant", "content": "The quick brown"})
    );
    assert_eq!(sent[n - 1]["role"], "user");
    assert!(proxy
        .metrics()
        .contains("hermes_fallbacks_total{from=\"primary\",route=\"main\",to=\"fallback\"} 1"));
}

#[tokio::test]
async fn resume_does_not_splice_a_broken_tool_call() {
    let primary = MockUpstream::start().await;
    primary.push(
        Reply::sse(vec![
            data_event(&json!({"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": ""}}]}}]})),
            data_event(&json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"pa"}}]}}]})),
        ])
        .cut_after(2),
    );
    let fallback = MockUpstream::start().await;
    let proxy = Proxy::start(&resume_config(&primary, &fallback)).await;
    let data = sse_data(stream(&proxy, &chat_body(false)).await).await;
    assert!(data[data.len() - 2].contains("\"error\""), "{data:?}");
    assert_eq!(fallback.request_count(), 0);
}

#[tokio::test]
async fn an_upstream_that_ignores_stream_still_gives_the_client_a_stream() {
    let up = MockUpstream::start().await;
    up.push(Reply::chat("whole answer at once"));
    let proxy = Proxy::start(&config_for(&[("up", &up.base_url())], "")).await;
    let resp = stream(&proxy, &chat_body(false)).await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let data = sse_data(resp).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunk: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(chunk["object"], "chat.completion.chunk");
    assert_eq!(
        chunk["choices"][0]["delta"]["content"],
        "whole answer at once"
    );
}
