//! Reasoning that survives a client's round trip: Kimi's `reasoning_content`
//! and Anthropic's signed thinking put back into tool-call turns that come
//! back without them, the fallbacks when nothing was kept, the forced
//! `tool_choice` downgrade, and every upstream's reasoning field read as
//! `reasoning_content`.

use async_openai::types::{
    ChatCompletionMessageToolCall, ChatCompletionNamedToolChoice,
    ChatCompletionRequestAssistantMessageArgs, ChatCompletionRequestMessage,
    ChatCompletionRequestToolMessageArgs, ChatCompletionToolChoiceOption, ChatCompletionToolType,
    FunctionCall, FunctionName, ReasoningEffort,
};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::anthropic::{
    chunks, claude_config, first_turn, joined, start, thinking_tool_use, weather_request, THINKING,
    TOOL_ID,
};
use crate::support::mock_upstream::{data_event, wire, MockUpstream, Reply};
use crate::support::proxy::{config_for, http, sse_data, Proxy};

const KIMI_REASONING: &str =
    "The user asks about Paris. I should call get_weather with the city before answering.";
const KIMI_CALL: &str = "functions.get_weather:0";
const ARGS: &str = r#"{"location": "Paris"}"#;

/// `hermes_reasoning_roundtrip_total{path}`, 0 when never counted.
fn roundtrip(proxy: &Proxy, path: &str) -> u64 {
    let prefix = format!("hermes_reasoning_roundtrip_total{{path=\"{path}\"}} ");
    proxy
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(|n| n.trim().parse().unwrap()))
        .unwrap_or(0)
}

/// Turn 2 as a client builds it: the first turn, the assistant's tool calls
/// (no reasoning: the SDK's types have no field for it), the tool's result.
fn second_turn(calls: Vec<ChatCompletionMessageToolCall>) -> Vec<ChatCompletionRequestMessage> {
    let mut history = first_turn();
    let id = calls[0].id.clone();
    history.push(
        ChatCompletionRequestAssistantMessageArgs::default()
            .tool_calls(calls)
            .build()
            .unwrap()
            .into(),
    );
    history.push(
        ChatCompletionRequestToolMessageArgs::default()
            .tool_call_id(id)
            .content("18 degrees, sunny")
            .build()
            .unwrap()
            .into(),
    );
    history
}

/// The assistant tool-call message of a recorded chat request.
fn assistant_call(body: &Value) -> &Value {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "assistant" && m["tool_calls"].is_array())
        .unwrap_or_else(|| panic!("no assistant tool call in {body}"))
}

#[tokio::test]
async fn kimi_gets_back_the_original_reasoning_of_a_tool_call_turn_the_client_dropped() {
    let up = MockUpstream::start().await;
    up.require_reasoning_content();
    up.push(wire::kimi_thinking_tool_call(
        KIMI_REASONING,
        KIMI_CALL,
        "get_weather",
        ARGS,
    ));
    up.push(Reply::chat("It is 18 degrees in Paris."));
    let proxy = Proxy::start(&config_for(&[("kimi", &up.base_url())], "")).await;
    let client = proxy.openai("k");

    let first = client
        .chat()
        .create(weather_request(first_turn()))
        .await
        .unwrap();
    let calls = first.choices[0].message.tool_calls.clone().unwrap();
    assert_eq!(calls[0].id, KIMI_CALL);
    let second = client
        .chat()
        .create(weather_request(second_turn(calls)))
        .await
        .unwrap();
    assert_eq!(
        second.choices[0].message.content.as_deref(),
        Some("It is 18 degrees in Paris.")
    );

    assert_eq!(up.request_count(), 2, "Kimi refused a turn");
    let sent = assistant_call(&up.requests()[1].body).clone();
    assert_eq!(sent["reasoning_content"], KIMI_REASONING, "{sent}");
    assert_eq!(sent["tool_calls"][0]["id"], KIMI_CALL);
    assert_eq!(roundtrip(&proxy, "restored"), 1);
    assert_eq!(roundtrip(&proxy, "empty"), 0);
}

#[tokio::test]
async fn kimi_gets_back_the_reasoning_of_a_streamed_tool_call_turn() {
    let up = MockUpstream::start().await;
    up.require_reasoning_content();
    up.push(wire::kimi_thinking_tool_call_stream(
        KIMI_REASONING,
        KIMI_CALL,
        "get_weather",
        ARGS,
    ));
    up.push(Reply::chat("It is 18 degrees in Paris."));
    let proxy = Proxy::start(&config_for(&[("kimi", &up.base_url())], "")).await;
    let client = proxy.openai("k");

    let mut request = weather_request(first_turn());
    request.stream = Some(true);
    let mut stream = client.chat().create_stream(request).await.unwrap();
    let (mut id, mut name, mut arguments) = (String::new(), String::new(), String::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        for choice in &chunk.choices {
            for call in choice.delta.tool_calls.iter().flatten() {
                id.push_str(call.id.as_deref().unwrap_or_default());
                if let Some(f) = &call.function {
                    name.push_str(f.name.as_deref().unwrap_or_default());
                    arguments.push_str(f.arguments.as_deref().unwrap_or_default());
                }
            }
        }
    }
    assert_eq!((id.as_str(), name.as_str()), (KIMI_CALL, "get_weather"));
    assert_eq!(arguments, ARGS);
    let calls = vec![ChatCompletionMessageToolCall {
        id,
        r#type: ChatCompletionToolType::Function,
        function: FunctionCall { name, arguments },
    }];
    client
        .chat()
        .create(weather_request(second_turn(calls)))
        .await
        .unwrap();

    assert_eq!(up.request_count(), 2, "Kimi refused a turn");
    let sent = assistant_call(&up.requests()[1].body).clone();
    assert_eq!(sent["reasoning_content"], KIMI_REASONING, "{sent}");
    assert_eq!(roundtrip(&proxy, "restored"), 1);
}

fn unseen_history(call_id: &str) -> Value {
    json!({"model": "main", "messages": [
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": call_id, "type": "function",
            "function": {"name": "get_weather", "arguments": ARGS}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "18 degrees, sunny"}],
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]})
}

#[tokio::test]
async fn history_the_proxy_never_saw_is_retried_with_empty_reasoning_then_sent_so_at_once() {
    let up = MockUpstream::start().await;
    up.require_reasoning_content();
    let proxy = Proxy::start(&config_for(&[("kimi", &up.base_url())], "")).await;

    let resp = proxy
        .post(
            "/v1/chat/completions",
            &unseen_history("functions.get_weather:7"),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-hermes-provider"], "kimi");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock");
    let seen = up.requests();
    assert_eq!(seen.len(), 2, "not one refusal then one retry");
    assert!(
        assistant_call(&seen[0].body)
            .get("reasoning_content")
            .is_none(),
        "the first attempt was already altered"
    );
    assert_eq!(assistant_call(&seen[1].body)["reasoning_content"], "");
    assert_eq!(seen[1].body["model"], "kimi-model", "not the same target");
    assert!(roundtrip(&proxy, "empty") >= 1);

    let resp = proxy
        .post(
            "/v1/chat/completions",
            &unseen_history("functions.get_weather:8"),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let seen = up.requests();
    assert_eq!(seen.len(), 3, "the target was asked twice again");
    assert_eq!(assistant_call(&seen[2].body)["reasoning_content"], "");
    assert_eq!(roundtrip(&proxy, "restored"), 0);
}

#[tokio::test]
async fn anthropic_gets_back_the_signed_thinking_of_a_tool_use_turn_the_client_dropped() {
    let up = MockUpstream::start().await;
    up.require_thinking_signatures();
    up.push(thinking_tool_use());
    up.push(Reply::anthropic_message("It is 18 degrees in Paris."));
    let proxy = start(&claude_config(&up.base_url(), None)).await;
    let client = proxy.openai("k");

    let mut request = weather_request(first_turn());
    request.reasoning_effort = Some(ReasoningEffort::Medium);
    let first = client.chat().create(request).await.unwrap();
    let calls = first.choices[0].message.tool_calls.clone().unwrap();
    assert_eq!(calls[0].id, TOOL_ID);
    assert_eq!(up.requests()[0].body["thinking"]["type"], "enabled");

    let mut request = weather_request(second_turn(calls));
    request.reasoning_effort = Some(ReasoningEffort::Medium);
    let second = client.chat().create(request).await.unwrap();
    assert_eq!(
        second.choices[0].message.content.as_deref(),
        Some("It is 18 degrees in Paris.")
    );

    assert_eq!(up.request_count(), 2, "Anthropic refused a turn");
    let body = &up.requests()[1].body;
    assert_eq!(body["thinking"]["type"], "enabled", "thinking was dropped");
    let assistant = &body["messages"][1];
    assert_eq!(assistant["role"], "assistant", "{body}");
    assert_eq!(
        assistant["content"][0],
        json!({"type": "thinking", "thinking": THINKING, "signature": wire::DOC_TOOL_SIGNATURE})
    );
    assert!(assistant["content"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["type"] == "tool_use" && b["id"] == TOOL_ID));
    assert_eq!(roundtrip(&proxy, "restored"), 1);
    assert_eq!(roundtrip(&proxy, "thinking_dropped"), 0);
}

#[tokio::test]
async fn unsigned_history_the_proxy_never_saw_goes_to_anthropic_without_thinking() {
    let up = MockUpstream::start().await;
    up.require_thinking_signatures();
    up.push(Reply::anthropic_message("It is 18 degrees in Paris."));
    let proxy = start(&claude_config(&up.base_url(), None)).await;
    let mut body = unseen_history("toolu_01NeverSeenByTheProxy");
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 2000});
    let resp = proxy.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "It is 18 degrees in Paris."
    );

    assert_eq!(up.request_count(), 1);
    let sent = &up.requests()[0].body;
    assert!(sent.get("thinking").is_none(), "thinking was sent: {sent}");
    assert_eq!(sent["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(roundtrip(&proxy, "thinking_dropped"), 1);
}

async fn whole_and_streamed(
    up: &MockUpstream,
    proxy: &Proxy,
    whole: Reply,
    streamed: Reply,
) -> (Value, Vec<Value>) {
    up.push(whole);
    up.push(streamed);
    let mut body = json!({"model": "main", "messages": [{"role": "user", "content": "think"}]});
    let v: Value = proxy
        .post("/v1/chat/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    body["stream"] = json!(true);
    let data = sse_data(
        http()
            .post(proxy.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    (v["choices"][0]["message"].clone(), chunks(&data))
}

fn no_plain_reasoning(message: &Value, chunks: &[Value]) {
    assert!(message.get("reasoning").is_none(), "{message}");
    for c in chunks {
        assert!(c["choices"][0]["delta"].get("reasoning").is_none(), "{c}");
    }
}

#[tokio::test]
async fn openrouter_reasoning_becomes_reasoning_content_whole_and_streamed() {
    let up = MockUpstream::start().await;
    let proxy = Proxy::start(&config_for(&[("or", &up.base_url())], "")).await;
    let (message, streamed) = whole_and_streamed(
        &up,
        &proxy,
        wire::openrouter_reasoning_details_message(),
        wire::openrouter_reasoning_details_stream(),
    )
    .await;
    assert_eq!(
        message["reasoning_content"],
        "Let me work through this systematically:\n1. First consideration...\n2. Second consideration..."
    );
    assert_eq!(
        message["reasoning_details"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(
        joined(&streamed, "reasoning_content"),
        "Let me think about this step by step..."
    );
    assert_eq!(joined(&streamed, "content"), "Based on my analysis...");
    no_plain_reasoning(&message, &streamed);

    // `reasoning_details` alone, streamed in two pieces of one block.
    let detail = |text: &str| {
        json!([{"type": "reasoning.text", "text": text, "signature": null,
                "id": "reasoning-text-1", "format": "anthropic-claude-v1", "index": 0}])
    };
    let text = "Let me think about this step by step...";
    let whole = Reply::json(
        200,
        json!({"id": "gen-d", "object": "chat.completion", "created": 1, "model": "anthropic/claude-sonnet-4",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
                "content": "Done.", "reasoning_details": detail(text)}}]}),
    );
    let chunk = |delta: Value, finish: Value| {
        data_event(
            &json!({"id": "gen-d", "object": "chat.completion.chunk", "created": 1,
            "model": "anthropic/claude-sonnet-4",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let streamed = Reply::sse(vec![
        chunk(
            json!({"role": "assistant", "content": "", "reasoning_details": detail("Let me think")}),
            Value::Null,
        ),
        chunk(
            json!({"content": "", "reasoning_details": detail(" about this step by step...")}),
            Value::Null,
        ),
        chunk(json!({"content": "Done."}), Value::Null),
        chunk(json!({}), json!("stop")),
        "data: [DONE]\n\n".to_string(),
    ]);
    let (message, streamed) = whole_and_streamed(&up, &proxy, whole, streamed).await;
    assert_eq!(message["reasoning_content"], text, "{message}");
    assert_eq!(joined(&streamed, "reasoning_content"), text);
    assert_eq!(message["content"], joined(&streamed, "content"));
}

#[tokio::test]
async fn vllm_and_ollama_reasoning_becomes_reasoning_content_whole_and_streamed() {
    let up = MockUpstream::start().await;
    let proxy = Proxy::start(&config_for(&[("local", &up.base_url())], "")).await;
    let (reasoning, text) = (
        "Two plus two is four, so the answer is 4.",
        "The answer is 4.",
    );
    let (message, streamed) = whole_and_streamed(
        &up,
        &proxy,
        wire::reasoning_field_message(reasoning, text),
        wire::reasoning_field_stream(reasoning, text),
    )
    .await;
    assert_eq!(message["reasoning_content"], reasoning);
    assert_eq!(joined(&streamed, "reasoning_content"), reasoning);
    assert_eq!(message["content"], text);
    assert_eq!(joined(&streamed, "content"), text);
    no_plain_reasoning(&message, &streamed);
}

#[tokio::test]
async fn a_forced_tool_choice_kimi_refuses_while_thinking_is_downgraded_and_retried() {
    let up = MockUpstream::start().await;
    up.push(wire::kimi_tool_choice_400("specified"));
    let proxy = Proxy::start(&config_for(&[("kimi", &up.base_url())], "")).await;
    let mut request = weather_request(first_turn());
    request.tool_choice = Some(ChatCompletionToolChoiceOption::Named(
        ChatCompletionNamedToolChoice {
            r#type: ChatCompletionToolType::Function,
            function: FunctionName {
                name: "get_weather".into(),
            },
        },
    ));
    let resp = proxy.openai("k").chat().create(request).await.unwrap();
    assert_eq!(
        resp.choices[0].message.content.as_deref(),
        Some("Hello from mock")
    );

    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].body["tool_choice"]["function"]["name"],
        "get_weather"
    );
    assert_eq!(seen[1].body["tool_choice"], "auto");
    let last = seen[1].body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["role"], "system", "{last}");
    assert!(
        last["content"].as_str().unwrap().contains("get_weather"),
        "{last}"
    );
    assert_eq!(
        seen[0].body["messages"].as_array().unwrap().len() + 1,
        seen[1].body["messages"].as_array().unwrap().len()
    );
    assert_eq!(roundtrip(&proxy, "tool_choice_downgraded"), 1);

    // The target is known to refuse now: the next forced choice goes as
    // `auto` at once.
    let mut body = unseen_history("call_1");
    body["messages"] = json!([{"role": "user", "content": "Weather in Paris?"}]);
    body["tool_choice"] = json!("required");
    let resp = proxy.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.request_count(), 3);
    assert_eq!(up.requests()[2].body["tool_choice"], "auto");
    assert_eq!(roundtrip(&proxy, "tool_choice_downgraded"), 2);
}

#[tokio::test]
async fn kept_reasoning_is_restored_only_for_the_client_key_that_was_answered() {
    let up = MockUpstream::start().await;
    up.push(wire::kimi_thinking_tool_call(
        KIMI_REASONING,
        KIMI_CALL,
        "get_weather",
        ARGS,
    ));
    let keys = "[[server.keys]]\nname = \"alice\"\nkey_env = \"ALICE\"\n\n\
                [[server.keys]]\nname = \"bob\"\nkey_env = \"BOB\"\n";
    let proxy = Proxy::start_with_env(
        &config_for(&[("kimi", &up.base_url())], keys),
        &[("ALICE", "sk-alice"), ("BOB", "sk-bob")],
    )
    .await;
    let first = proxy
        .openai("sk-alice")
        .chat()
        .create(weather_request(first_turn()))
        .await
        .unwrap();
    let calls = first.choices[0].message.tool_calls.clone().unwrap();
    for key in ["sk-bob", "sk-alice"] {
        proxy
            .openai(key)
            .chat()
            .create(weather_request(second_turn(calls.clone())))
            .await
            .unwrap();
    }
    let seen = up.requests();
    assert_eq!(seen.len(), 3);
    assert!(
        assistant_call(&seen[1].body)
            .get("reasoning_content")
            .is_none(),
        "bob got alice's reasoning"
    );
    assert_eq!(
        assistant_call(&seen[2].body)["reasoning_content"],
        KIMI_REASONING
    );
    assert_eq!(roundtrip(&proxy, "restored"), 1);
}
