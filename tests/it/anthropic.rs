//! `kind = "anthropic"` upstreams behind the chat API, and the Messages API
//! (`POST /v1/messages`) in front of any route: translation both ways,
//! failover across wire kinds, byte-exact passthrough, Anthropic-shaped errors.

use async_openai::types::{
    ChatCompletionMessageToolCall, ChatCompletionRequestAssistantMessageArgs,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessageArgs,
    ChatCompletionRequestToolMessageArgs, ChatCompletionRequestUserMessageArgs,
    ChatCompletionStreamOptions, ChatCompletionTool, ChatCompletionToolArgs,
    ChatCompletionToolType, CreateChatCompletionRequest, CreateChatCompletionRequestArgs,
    FinishReason, FunctionObjectArgs,
};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::support::mock_upstream::{wire, MockUpstream, Reply};
use crate::support::proxy::{http, sse_data, Proxy};

pub(crate) const CLAUDE_KEY: &str = "sk-ant-api03-upstream-secret";
pub(crate) const CLAUDE_MODEL: &str = "claude-sonnet-4-5";
pub(crate) const CLIENT_KEY: &str = "sk-hermes-claude-code";
pub(crate) const THINKING: &str = "The user wants to know the current weather in Paris. I have access to a function `get_weather`...";
pub(crate) const TOOL_ID: &str = "toolu_01CswdEQBMshySk6Y9DFKrfq";

/// A route `main` over an anthropic-kind `claude`, then (if given) an
/// openai-kind `gpt`.
pub(crate) fn claude_config(claude: &str, gpt: Option<&str>) -> String {
    let mut toml = format!(
        "[defaults]\nbackoff_base = \"1ms\"\nbackoff_max = \"2ms\"\n\n\
         [providers.claude]\nkind = \"anthropic\"\nbase_url = \"{claude}\"\napi_key_env = \"CLAUDE_KEY\"\n\n"
    );
    if let Some(gpt) = gpt {
        toml.push_str(&format!(
            "[providers.gpt]\nkind = \"openai\"\nbase_url = \"{gpt}\"\n\n"
        ));
    }
    toml.push_str(&format!(
        "[routes.main]\ntargets = [\n  {{ provider = \"claude\", model = \"{CLAUDE_MODEL}\" }},\n"
    ));
    if gpt.is_some() {
        toml.push_str("  { provider = \"gpt\", model = \"gpt-4o\" },\n");
    }
    toml.push_str("]\n");
    toml
}

/// An openai-kind `gpt` as the only target of `main`, with a client key `cc`.
pub(crate) fn openai_only_with_key(gpt: &str) -> String {
    format!(
        "[defaults]\nbackoff_base = \"1ms\"\nbackoff_max = \"2ms\"\n\n\
         [[server.keys]]\nname = \"cc\"\nkey_env = \"CC_KEY\"\n\n\
         [providers.gpt]\nkind = \"openai\"\nbase_url = \"{gpt}\"\n\n\
         [routes.main]\ntargets = [{{ provider = \"gpt\", model = \"gpt-4o\" }}]\n"
    )
}

pub(crate) async fn start(toml: &str) -> Proxy {
    Proxy::start_with_env(toml, &[("CLAUDE_KEY", CLAUDE_KEY), ("CC_KEY", CLIENT_KEY)]).await
}

pub(crate) fn weather_tool() -> ChatCompletionTool {
    ChatCompletionToolArgs::default()
        .r#type(ChatCompletionToolType::Function)
        .function(
            FunctionObjectArgs::default()
                .name("get_weather")
                .description("Current weather in a city")
                .parameters(weather_schema())
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

pub(crate) fn weather_schema() -> Value {
    json!({"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]})
}

pub(crate) fn first_turn() -> Vec<ChatCompletionRequestMessage> {
    vec![
        ChatCompletionRequestSystemMessageArgs::default()
            .content("You are a weather assistant.")
            .build()
            .unwrap()
            .into(),
        ChatCompletionRequestUserMessageArgs::default()
            .content("What's the weather in Paris?")
            .build()
            .unwrap()
            .into(),
    ]
}

pub(crate) fn weather_request(
    messages: Vec<ChatCompletionRequestMessage>,
) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model("main")
        .messages(messages)
        .tools([weather_tool()])
        .build()
        .unwrap()
}

pub(crate) fn thinking_tool_use() -> Reply {
    wire::anthropic_thinking_tool_use_message(
        THINKING,
        wire::DOC_TOOL_SIGNATURE,
        TOOL_ID,
        "get_weather",
        json!({"location": "Paris"}),
    )
}

pub(crate) fn parse(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A chat stream's JSON chunks (`[DONE]` left out).
pub(crate) fn chunks(data: &[String]) -> Vec<Value> {
    data.iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| parse(d))
        .collect()
}

/// The concatenation of `field` over a chat stream's deltas.
pub(crate) fn joined(chunks: &[Value], field: &str) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"][field].as_str())
        .collect()
}

/// An SSE body as (event name, data) pairs, in order.
pub(crate) async fn sse_events(resp: reqwest::Response) -> Vec<(Option<String>, String)> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|event| {
            let mut name = None;
            let mut data = vec![];
            for line in event.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = Some(n.trim().to_string());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.strip_prefix(' ').unwrap_or(d));
                }
            }
            (!data.is_empty()).then(|| (name, data.join("\n")))
        })
        .collect()
}

#[tokio::test]
async fn a_chat_request_to_an_anthropic_target_is_sent_as_messages_and_answered_as_chat() {
    let up = MockUpstream::start().await;
    up.push(thinking_tool_use());
    up.push(thinking_tool_use());
    let proxy = start(&claude_config(&up.base_url(), None)).await;

    let mut request = weather_request(first_turn());
    request.stream_options = Some(ChatCompletionStreamOptions {
        include_usage: true,
    });
    request.seed = Some(7);
    let resp = proxy.openai("k").chat().create(request).await.unwrap();

    let seen = &up.requests()[0];
    assert!(seen.path.ends_with("/v1/messages"), "{}", seen.path);
    assert_eq!(seen.header("x-api-key"), Some(CLAUDE_KEY));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(seen.header("authorization"), None);
    let body = &seen.body;
    assert_eq!(body["model"], CLAUDE_MODEL);
    assert_eq!(body["system"], "You are a weather assistant.");
    assert_eq!(body["messages"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["messages"][0]["role"], "user");
    assert!(
        body["messages"][0]
            .to_string()
            .contains("What's the weather in Paris?"),
        "{body}"
    );
    assert_eq!(body["max_tokens"], 4096);
    assert_eq!(body["tools"][0]["name"], "get_weather");
    assert_eq!(body["tools"][0]["input_schema"], weather_schema());
    assert_eq!(body["tools"][0]["description"], "Current weather in a city");
    for unknown in ["stream_options", "seed", "parameters", "function"] {
        assert!(
            body.get(unknown).is_none(),
            "`{unknown}` reached Anthropic: {body}"
        );
    }
    assert!(body["tools"][0].get("function").is_none(), "{body}");

    let choice = &resp.choices[0];
    assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
    let calls = choice.message.tool_calls.clone().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].id, TOOL_ID);
    assert_eq!(calls[0].function.name, "get_weather");
    assert_eq!(
        parse(&calls[0].function.arguments),
        json!({"location": "Paris"})
    );
    let usage = resp.usage.unwrap();
    assert_eq!(usage.prompt_tokens, 2095 + 2051 + 2051);
    assert_eq!(usage.completion_tokens, 503);
    assert_eq!(usage.total_tokens, 2095 + 2051 + 2051 + 503);
    assert_eq!(
        usage.prompt_tokens_details.and_then(|d| d.cached_tokens),
        Some(2051)
    );

    // What the SDK's types leave out: the reasoning and its signed block.
    let raw: Value = http()
        .post(proxy.url("/v1/chat/completions"))
        .json(&json!({"model": "main", "messages": [{"role": "user", "content": "Paris?"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let message = &raw["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], THINKING);
    assert_eq!(
        message["thinking_blocks"],
        json!([{"type": "thinking", "thinking": THINKING, "signature": wire::DOC_TOOL_SIGNATURE}])
    );
    assert_eq!(
        message["content"],
        "I can help you get the current weather information for Paris. Let me check that for you"
    );
}

#[tokio::test]
async fn an_anthropic_stream_becomes_chat_chunks_with_text_arguments_usage_and_reasoning() {
    let up = MockUpstream::start().await;
    up.push(wire::anthropic_doc_tool_use_stream());
    let pieces = ["{\"location\":", " \"Par", "is\"}"];
    up.push(wire::anthropic_thinking_tool_use_stream(
        THINKING,
        wire::DOC_TOOL_SIGNATURE,
        TOOL_ID,
        "get_weather",
        &pieces,
    ));
    let proxy = start(&claude_config(&up.base_url(), None)).await;

    let mut request = weather_request(first_turn());
    request.stream = Some(true);
    request.stream_options = Some(ChatCompletionStreamOptions {
        include_usage: true,
    });
    let mut stream = proxy
        .openai("k")
        .chat()
        .create_stream(request)
        .await
        .unwrap();
    let (mut text, mut arguments, mut ids, mut names) =
        (String::new(), String::new(), vec![], vec![]);
    let (mut finish, mut usage) = (None, None);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        if let Some(u) = chunk.usage {
            usage = Some(u);
        }
        let Some(choice) = chunk.choices.first() else {
            continue;
        };
        text.push_str(choice.delta.content.as_deref().unwrap_or_default());
        for call in choice.delta.tool_calls.iter().flatten() {
            ids.extend(call.id.clone());
            if let Some(f) = &call.function {
                names.extend(f.name.clone());
                arguments.push_str(f.arguments.as_deref().unwrap_or_default());
            }
        }
        if choice.finish_reason.is_some() {
            finish = choice.finish_reason;
        }
    }
    assert_eq!(up.requests()[0].body["stream"], true);
    assert!(up.requests()[0].body.get("stream_options").is_none());
    assert_eq!(text, wire::DOC_TOOL_TEXT.concat());
    assert_eq!(arguments, wire::DOC_TOOL_PIECES.concat());
    assert_eq!(
        parse(&arguments),
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
    assert_eq!(ids, ["toolu_01T1x1fJ34qAmk2tNTrN7Up6"]);
    assert_eq!(names, ["get_weather"]);
    assert_eq!(finish, Some(FinishReason::ToolCalls));
    let usage = usage.expect("no usage in the stream");
    assert_eq!(usage.prompt_tokens, 472);
    assert_eq!(usage.completion_tokens, 89);

    // The reasoning, which the SDK's delta type has no field for.
    let resp = http()
        .post(proxy.url("/v1/chat/completions"))
        .json(&json!({"model": "main", "stream": true,
            "messages": [{"role": "user", "content": "Paris?"}]}))
        .send()
        .await
        .unwrap();
    let data = sse_data(resp).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks = chunks(&data);
    assert_eq!(joined(&chunks, "reasoning_content"), THINKING);
    let blocks: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("thinking_blocks"))
        .collect();
    assert_eq!(
        blocks,
        [
            &json!([{"type": "thinking", "thinking": THINKING, "signature": wire::DOC_TOOL_SIGNATURE}])
        ]
    );
    let args: String = chunks
        .iter()
        .flat_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array().cloned())
        .flatten()
        .filter_map(|t| t["function"]["arguments"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(args, pieces.concat());
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| f.is_string())
        .collect();
    assert_eq!(finish, [&json!("tool_calls")]);
}

#[tokio::test]
async fn a_tool_result_goes_to_anthropic_as_a_user_tool_result_block() {
    let up = MockUpstream::start().await;
    up.push(thinking_tool_use());
    up.push(Reply::anthropic_message(
        "It is 18 degrees and sunny in Paris.",
    ));
    let proxy = start(&claude_config(&up.base_url(), None)).await;
    let client = proxy.openai("k");

    let first = client
        .chat()
        .create(weather_request(first_turn()))
        .await
        .unwrap();
    let calls: Vec<ChatCompletionMessageToolCall> =
        first.choices[0].message.tool_calls.clone().unwrap();
    let mut history = first_turn();
    history.push(
        ChatCompletionRequestAssistantMessageArgs::default()
            .tool_calls(calls.clone())
            .build()
            .unwrap()
            .into(),
    );
    history.push(
        ChatCompletionRequestToolMessageArgs::default()
            .tool_call_id(calls[0].id.clone())
            .content("18 degrees, sunny")
            .build()
            .unwrap()
            .into(),
    );
    let second = client
        .chat()
        .create(weather_request(history))
        .await
        .unwrap();
    assert_eq!(
        second.choices[0].message.content.as_deref(),
        Some("It is 18 degrees and sunny in Paris.")
    );
    assert_eq!(second.choices[0].finish_reason, Some(FinishReason::Stop));

    let body = &up.requests()[1].body;
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{body}");
    assert_eq!(body["system"], "You are a weather assistant.");
    assert_eq!(messages[1]["role"], "assistant");
    let tool_use: Vec<&Value> = messages[1]["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .collect();
    assert_eq!(
        tool_use,
        [
            &json!({"type": "tool_use", "id": TOOL_ID, "name": "get_weather", "input": {"location": "Paris"}})
        ]
    );
    assert_eq!(messages[2]["role"], "user");
    let result = &messages[2]["content"][0];
    assert_eq!(result["type"], "tool_result", "{body}");
    assert_eq!(result["tool_use_id"], TOOL_ID);
    assert!(result.to_string().contains("18 degrees, sunny"), "{result}");
}

#[tokio::test(start_paused = true)]
async fn an_overloaded_anthropic_target_fails_over_to_an_openai_target() {
    let (claude, gpt) = (MockUpstream::start().await, MockUpstream::start().await);
    claude.push(wire::anthropic_overloaded_529());
    gpt.push(Reply::chat("answered by gpt"));
    let proxy = start(&claude_config(&claude.base_url(), Some(&gpt.base_url()))).await;
    let resp = http()
        .post(proxy.url("/v1/chat/completions"))
        .json(&json!({"model": "main", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-hermes-provider"], "gpt");
    assert_eq!(resp.headers()["x-hermes-model"], "gpt-4o");
    assert_eq!(resp.headers()["x-hermes-attempts"], "2");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "answered by gpt");
    assert_eq!(claude.request_count(), 1);
    assert!(claude.requests()[0].path.ends_with("/messages"));
    let to_gpt = &gpt.requests()[0];
    assert_eq!(to_gpt.path, "/v1/chat/completions");
    assert_eq!(to_gpt.body["model"], "gpt-4o");
    assert_eq!(to_gpt.body["messages"][0]["content"], "hi");
}

#[tokio::test(start_paused = true)]
async fn a_client_error_from_an_anthropic_target_is_returned_without_failover() {
    let (claude, gpt) = (MockUpstream::start().await, MockUpstream::start().await);
    claude.push(wire::anthropic_invalid_request_400(
        "messages.0.content: Input should be a valid list",
    ));
    let proxy = start(&claude_config(&claude.base_url(), Some(&gpt.base_url()))).await;
    let resp = http()
        .post(proxy.url("/v1/chat/completions"))
        .json(&json!({"model": "main", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Input should be a valid list"),
        "not the upstream's message: {v}"
    );
    assert!(v["error"]["type"].is_string(), "not OpenAI-shaped: {v}");
    assert!(v.get("type").is_none(), "still Anthropic-shaped: {v}");
    assert_eq!(claude.request_count(), 1);
    assert_eq!(gpt.request_count(), 0, "a client error was failed over");
}

#[tokio::test]
async fn an_error_event_mid_stream_ends_the_chat_stream_with_an_error_chunk() {
    let up = MockUpstream::start().await;
    // Text has gone to the client before the error: too late to fail over.
    // (An error right after `message_start` fails over: anthropic_overload.rs.)
    let event = wire::anthropic_event;
    up.push(Reply::sse(vec![
        event(
            "message_start",
            &json!({"type": "message_start", "message": {"id": "msg_1",
            "type": "message", "role": "assistant", "content": [], "model": CLAUDE_MODEL,
            "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        ),
        event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "Hello"}}),
        ),
        event(
            "error",
            &json!({"type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
    ]));
    let proxy = start(&claude_config(&up.base_url(), None)).await;
    let resp = http()
        .post(proxy.url("/v1/chat/completions"))
        .json(&json!({"model": "main", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let data = sse_data(resp).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    assert!(data.len() >= 2, "{data:?}");
    let last = parse(&data[data.len() - 2]);
    assert!(
        last["error"].is_object(),
        "no error before [DONE]: {data:?}"
    );
    assert!(
        last["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Overloaded")),
        "{last}"
    );
    assert!(
        chunks(&data)
            .iter()
            .all(|c| c["choices"][0]["finish_reason"] != "stop"),
        "the stream claims a clean end: {data:?}"
    );
}

#[tokio::test]
async fn a_base_url_without_v1_gets_v1_messages_and_limits_map_both_ways() {
    let up = MockUpstream::start().await;
    up.push(Reply::json(
        200,
        json!({"id": "msg_01Cut", "type": "message", "role": "assistant", "model": CLAUDE_MODEL,
            "content": [{"type": "text", "text": "One, two"}], "stop_reason": "max_tokens",
            "stop_sequence": null, "usage": {"input_tokens": 9, "output_tokens": 50}}),
    ));
    let base = format!("http://{}", up.addr());
    let proxy = start(&claude_config(&base, None)).await;
    let v: Value = http()
        .post(proxy.url("/v1/chat/completions"))
        .json(&json!({"model": "main", "max_tokens": 50, "stop": ["END"],
            "messages": [{"role": "user", "content": "count"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seen = &up.requests()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.body["max_tokens"], 50);
    assert_eq!(seen.body["stop_sequences"], json!(["END"]));
    assert!(seen.body.get("stop").is_none());
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "One, two");
    assert_eq!(v["usage"]["prompt_tokens"], 9);
    assert_eq!(v["usage"]["completion_tokens"], 50);
}
