//! An overloaded Anthropic often answers 200, sends `message_start`, then an
//! `overloaded_error` event. Nothing was said yet, so that stream must fail
//! over like a 529 would, translated or passed through, and never reach the
//! client as a broken answer.

use futures_util::StreamExt;
use serde_json::json;

use crate::support::mock_upstream::{wire, MockUpstream, Reply};
use crate::support::proxy::{http, Proxy};

fn config(first: &MockUpstream, second: &MockUpstream, second_kind: &str) -> String {
    format!(
        r#"[defaults]
backoff_base = "1ms"
backoff_max = "2ms"

[providers.claude]
kind = "anthropic"
base_url = "{}"

[providers.other]
kind = "{second_kind}"
base_url = "{}"

[routes.main]
targets = [
  {{ provider = "claude", model = "claude-sonnet-4-5" }},
  {{ provider = "other", model = "other-model" }},
]
"#,
        first.base_url(),
        second.base_url()
    )
}

#[tokio::test]
async fn an_error_event_right_after_message_start_fails_over_for_a_chat_client() {
    let claude = MockUpstream::start().await;
    claude.push(wire::anthropic_error_event_stream());
    let other = MockUpstream::start().await;
    other.push(Reply::stream_text("from the fallback"));
    let proxy = Proxy::start(&config(&claude, &other, "openai")).await;

    let client = proxy.openai("unused");
    let request = async_openai::types::CreateChatCompletionRequestArgs::default()
        .model("main")
        .messages(vec![
            async_openai::types::ChatCompletionRequestUserMessageArgs::default()
                .content("hi")
                .build()
                .unwrap()
                .into(),
        ])
        .build()
        .unwrap();
    let mut stream = client.chat().create_stream(request).await.unwrap();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("no error reaches the client");
        if let Some(content) = chunk.choices.first().and_then(|c| c.delta.content.clone()) {
            text.push_str(&content);
        }
    }
    assert_eq!(text, "from the fallback");
    assert_eq!(claude.request_count(), 1);
    assert_eq!(other.request_count(), 1);
    assert!(proxy
        .metrics()
        .contains(r#"hermes_upstream_requests_total{outcome="overloaded",provider="claude"} 1"#));
}

#[tokio::test]
async fn an_error_event_right_after_message_start_fails_over_on_the_passthrough() {
    let claude = MockUpstream::start().await;
    claude.push(wire::anthropic_error_event_stream());
    let other = MockUpstream::start().await;
    other.push(Reply::anthropic_stream_text("from the second"));
    let proxy = Proxy::start(&config(&claude, &other, "anthropic")).await;

    let resp = http()
        .post(proxy.url("/v1/messages"))
        .json(&json!({"model": "main", "max_tokens": 64, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-hermes-provider"], "other");
    let body = resp.text().await.unwrap();
    assert!(!body.contains("overloaded_error"), "{body}");
    assert!(body.starts_with("event: message_start"), "{body}");
    assert!(body.contains("event: message_stop"), "{body}");
    assert_eq!(claude.request_count(), 1);
    assert_eq!(other.request_count(), 1);
}
