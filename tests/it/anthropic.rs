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

const CLAUDE_KEY: &str = "sk-ant-api03-upstream-secret";
const CLAUDE_MODEL: &str = "claude-sonnet-4-5";
const CLIENT_KEY: &str = "sk-hermes-claude-code";
const THINKING: &str = "The user wants to know the current weather in Paris. I have access to a function `get_weather`...";
const TOOL_ID: &str = "toolu_01CswdEQBMshySk6Y9DFKrfq";

/// A route `main` over an anthropic-kind `claude`, then (if given) an
/// openai-kind `gpt`.
fn claude_config(claude: &str, gpt: Option<&str>) -> String {
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
fn openai_only_with_key(gpt: &str) -> String {
    format!(
        "[defaults]\nbackoff_base = \"1ms\"\nbackoff_max = \"2ms\"\n\n\
         [[server.keys]]\nname = \"cc\"\nkey_env = \"CC_KEY\"\n\n\
         [providers.gpt]\nkind = \"openai\"\nbase_url = \"{gpt}\"\n\n\
         [routes.main]\ntargets = [{{ provider = \"gpt\", model = \"gpt-4o\" }}]\n"
    )
}

async fn start(toml: &str) -> Proxy {
    Proxy::start_with_env(toml, &[("CLAUDE_KEY", CLAUDE_KEY), ("CC_KEY", CLIENT_KEY)]).await
}

fn weather_tool() -> ChatCompletionTool {
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

fn weather_schema() -> Value {
    json!({"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]})
}

fn first_turn() -> Vec<ChatCompletionRequestMessage> {
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

fn weather_request(messages: Vec<ChatCompletionRequestMessage>) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model("main")
        .messages(messages)
        .tools([weather_tool()])
        .build()
        .unwrap()
}

fn thinking_tool_use() -> Reply {
    wire::anthropic_thinking_tool_use_message(
        THINKING,
        wire::DOC_TOOL_SIGNATURE,
        TOOL_ID,
        "get_weather",
        json!({"location": "Paris"}),
    )
}

fn parse(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A chat stream's JSON chunks (`[DONE]` left out).
fn chunks(data: &[String]) -> Vec<Value> {
    data.iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| parse(d))
        .collect()
}

/// The concatenation of `field` over a chat stream's deltas.
fn joined(chunks: &[Value], field: &str) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"][field].as_str())
        .collect()
}

/// An SSE body as (event name, data) pairs, in order.
async fn sse_events(resp: reqwest::Response) -> Vec<(Option<String>, String)> {
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
    up.push(wire::anthropic_error_event_stream());
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

/// A request as Claude Code sends it: streamed, cached system and user
/// blocks, one tool.
fn claude_code_request() -> Value {
    json!({
        "model": "main", "max_tokens": 32000, "stream": true,
        "system": [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
                    "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What's the weather in Paris?", "cache_control": {"type": "ephemeral"}}]}],
        "tools": [{"name": "get_weather", "description": "Current weather in a city",
                   "input_schema": weather_schema()}],
        "metadata": {"user_id": "user_abc123"}
    })
}

#[tokio::test]
async fn claude_code_streams_through_an_openai_route_as_well_formed_anthropic_events() {
    let up = MockUpstream::start().await;
    let args = r#"{"location": "Paris"}"#;
    up.push(wire::kimi_thinking_tool_call_stream(
        "The user wants the weather in Paris.",
        "functions.get_weather:0",
        "get_weather",
        args,
    ));
    let proxy = start(&openai_only_with_key(&up.base_url())).await;
    let resp = http()
        .post(proxy.url("/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14",
        )
        .json(&claude_code_request())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = sse_events(resp).await;
    let types: Vec<String> = events
        .iter()
        .map(|(name, data)| {
            let t = parse(data)["type"].as_str().unwrap_or_default().to_owned();
            if let Some(name) = name {
                assert_eq!(name, &t, "event name and payload type differ");
            }
            t
        })
        .collect();
    assert_eq!(
        types.first().map(String::as_str),
        Some("message_start"),
        "{types:?}"
    );
    assert_eq!(
        types.last().map(String::as_str),
        Some("message_stop"),
        "{types:?}"
    );
    assert_eq!(types[types.len() - 2], "message_delta", "{types:?}");

    // Blocks open in index order, one at a time; deltas go to the open one.
    let (mut open, mut next) = (None::<u64>, 0u64);
    let mut blocks: Vec<(Value, String, String)> = vec![];
    for (_, data) in &events {
        let e = parse(data);
        match e["type"].as_str().unwrap() {
            "content_block_start" => {
                assert_eq!(open, None, "a block started before the last stopped");
                assert_eq!(e["index"], next);
                open = Some(next);
                next += 1;
                blocks.push((e["content_block"].clone(), String::new(), String::new()));
            }
            "content_block_delta" => {
                assert_eq!(e["index"].as_u64(), open, "{e}");
                let block = blocks.last_mut().unwrap();
                match e["delta"]["type"].as_str().unwrap() {
                    "input_json_delta" => block
                        .1
                        .push_str(e["delta"]["partial_json"].as_str().unwrap()),
                    "thinking_delta" => block.2.push_str(e["delta"]["thinking"].as_str().unwrap()),
                    "text_delta" => block.2.push_str(e["delta"]["text"].as_str().unwrap()),
                    _ => {}
                }
            }
            "content_block_stop" => {
                assert_eq!(e["index"].as_u64(), open, "{e}");
                open = None;
            }
            _ => {}
        }
    }
    assert_eq!(open, None, "a block was never stopped");
    let tool = blocks
        .iter()
        .find(|(b, ..)| b["type"] == "tool_use")
        .expect("no tool_use block");
    assert_eq!(tool.0["id"], "functions.get_weather:0");
    assert_eq!(tool.0["name"], "get_weather");
    assert_eq!(parse(&tool.1), parse(args));
    let thinking = blocks.iter().find(|(b, ..)| b["type"] == "thinking");
    assert_eq!(
        thinking.map(|t| t.2.as_str()),
        Some("The user wants the weather in Paris.")
    );
    let delta = parse(&events[events.len() - 2].1);
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 30);
    let start = parse(&events[0].1);
    assert_eq!(start["message"]["role"], "assistant");
    assert_eq!(start["message"]["model"], "main");

    let seen = &up.requests()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.header("x-api-key"), None, "the client's key travelled");
    assert_eq!(seen.body["model"], "gpt-4o");
    assert_eq!(seen.body["stream"], true);
    let messages = seen.body["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert!(messages[0]["content"]
        .to_string()
        .contains("You are Claude Code"));
    assert_eq!(messages[1]["role"], "user");
    assert!(messages[1]["content"]
        .to_string()
        .contains("What's the weather in Paris?"));
    assert_eq!(seen.body["tools"][0]["type"], "function");
    assert_eq!(seen.body["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(
        seen.body["tools"][0]["function"]["parameters"],
        weather_schema()
    );
}

/// Spacing and key order no serializer would reproduce.
const PASSTHROUGH_BODY: &str = r#"{"max_tokens": 1024,  "model":"main", "system":[{"type":"text","text":"Be brief.","cache_control":{"type":"ephemeral"}}],
 "thinking": {"type": "enabled", "budget_tokens": 1000},
 "messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral","ttl":"1h"}}]}]STREAM}"#;

const BETA: &str = "prompt-caching-2024-07-31,extended-cache-ttl-2025-04-11";

async fn passthrough(proxy: &Proxy, stream: bool) -> (String, reqwest::Response) {
    let body = PASSTHROUGH_BODY.replace("STREAM", if stream { r#", "stream" :true"# } else { "" });
    let resp = http()
        .post(proxy.url("/v1/messages"))
        .header("x-api-key", "ignored-without-keys")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", BETA)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    (body, resp)
}

#[tokio::test]
async fn messages_to_an_anthropic_route_pass_through_byte_for_byte_but_the_model() {
    let up = MockUpstream::start().await;
    let answer = r#"{"id":"msg_01Pass","type":"message","role":"assistant",  "model":"claude-sonnet-4-5-20250929","content":[{"type":"thinking","thinking":"Say hi.","signature":"EqQBCgIYAhIM"},{"type":"text","text":"Hi!"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_read_input_tokens":10,"output_tokens":6}}"#;
    up.push(Reply::raw(200, "application/json", answer));
    let proxy = start(&claude_config(&up.base_url(), None)).await;
    let (sent, resp) = passthrough(&proxy, false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-hermes-provider"], "claude");
    assert_eq!(
        resp.text().await.unwrap(),
        answer,
        "the answer was rewritten"
    );

    let seen = &up.requests()[0];
    assert!(seen.path.ends_with("/v1/messages"));
    let expected = sent.replace(r#""model":"main""#, &format!(r#""model":"{CLAUDE_MODEL}""#));
    assert_ne!(expected, sent);
    assert_eq!(std::str::from_utf8(&seen.raw_body).unwrap(), expected);
    assert_eq!(seen.header("anthropic-beta"), Some(BETA));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(seen.header("x-api-key"), Some(CLAUDE_KEY));
}

#[tokio::test]
async fn a_streamed_passthrough_relays_the_upstreams_events_unchanged() {
    let up = MockUpstream::start().await;
    let events: Vec<String> = [
        r#"{"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5-20250929", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}"#,
        r#"{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}"#,
        r#"{"type": "ping"}"#,
        r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}"#,
        r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}"#,
        r#"{"type": "content_block_stop", "index": 0}"#,
        r#"{"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}"#,
        r#"{"type": "message_stop"}"#,
    ]
    .map(str::to_owned)
    .to_vec();
    let framed = events
        .iter()
        .map(|d| {
            format!(
                "event: {}\ndata: {d}\n\n",
                parse(d)["type"].as_str().unwrap()
            )
        })
        .collect();
    up.push(Reply::sse(framed));
    let proxy = start(&claude_config(&up.base_url(), None)).await;
    let (sent, resp) = passthrough(&proxy, true).await;
    assert_eq!(resp.status(), 200);
    let got = sse_events(resp).await;
    let expected: Vec<(Option<String>, String)> = events
        .iter()
        .map(|d| {
            (
                Some(parse(d)["type"].as_str().unwrap().to_owned()),
                d.clone(),
            )
        })
        .collect();
    assert_eq!(got, expected);

    let seen = &up.requests()[0];
    let expected = sent.replace(r#""model":"main""#, &format!(r#""model":"{CLAUDE_MODEL}""#));
    assert_eq!(std::str::from_utf8(&seen.raw_body).unwrap(), expected);
    assert_eq!(seen.header("anthropic-beta"), Some(BETA));
}

async fn messages_error(resp: reqwest::Response, status: u16, error_type: &str) -> Value {
    assert_eq!(resp.status(), status);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], error_type, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    v
}

#[tokio::test]
async fn messages_errors_are_anthropic_shaped() {
    let up = MockUpstream::start().await;
    let proxy = start(&openai_only_with_key(&up.base_url())).await;
    let send = |key: &str, body: Value| {
        http()
            .post(proxy.url("/v1/messages"))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
    };
    let ok =
        json!({"model": "main", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});

    messages_error(
        send("sk-wrong", ok.clone()).await.unwrap(),
        401,
        "authentication_error",
    )
    .await;
    let mut unknown = ok.clone();
    unknown["model"] = json!("no-such-model");
    messages_error(
        send(CLIENT_KEY, unknown).await.unwrap(),
        404,
        "not_found_error",
    )
    .await;
    let mut missing = ok.clone();
    missing.as_object_mut().unwrap().remove("max_tokens");
    let v = messages_error(
        send(CLIENT_KEY, missing).await.unwrap(),
        400,
        "invalid_request_error",
    )
    .await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens"),
        "{v}"
    );
    assert_eq!(
        up.request_count(),
        0,
        "a refused request reached the upstream"
    );

    // Bearer works as well as x-api-key.
    let resp = http()
        .post(proxy.url("/v1/messages"))
        .bearer_auth(CLIENT_KEY)
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], "Hello from mock");
}

#[tokio::test(start_paused = true)]
async fn every_target_rate_limited_is_an_anthropic_429_with_retry_after() {
    let (claude, gpt) = (MockUpstream::start().await, MockUpstream::start().await);
    claude.set_default(
        Reply::json(429, json!({"type": "error", "error": {"type": "rate_limit_error",
            "message": "This request would exceed your account's rate limit. Please try again later."}}))
        .header("retry-after", "40"),
    );
    gpt.set_default(
        Reply::json(
            429,
            json!({"error": {"message": "Rate limit reached", "type": "tokens",
            "code": "rate_limit_exceeded"}}),
        )
        .header("retry-after", "30"),
    );
    let proxy = start(&claude_config(&claude.base_url(), Some(&gpt.base_url()))).await;
    let resp = http()
        .post(proxy.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "main", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .expect("no retry-after")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "retry-after {retry_after}");
    messages_error(resp, 429, "rate_limit_error").await;
    assert!(claude.request_count() >= 1 && gpt.request_count() >= 1);
}

#[tokio::test]
async fn count_tokens_answers_a_positive_count_that_grows_with_the_input() {
    let up = MockUpstream::start().await;
    let proxy = start(&openai_only_with_key(&up.base_url())).await;
    let count = |text: String| {
        let proxy = &proxy;
        async move {
            let resp = http()
                .post(proxy.url("/v1/messages/count_tokens"))
                .header("x-api-key", CLIENT_KEY)
                .header("anthropic-version", "2023-06-01")
                .json(&json!({"model": "main", "system": "Be brief.",
                    "messages": [{"role": "user", "content": text}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{v}");
            v["input_tokens"]
                .as_u64()
                .expect("input_tokens is not an integer")
        }
    };
    let short = count("What's the weather in Paris?".into()).await;
    let long = count("What's the weather in Paris? ".repeat(50)).await;
    assert!(short > 0);
    assert!(long > short * 10, "{short} -> {long}");
    assert_eq!(up.request_count(), 0, "count_tokens asked the upstream");
}
