//! `POST /v1/messages` in front of any route: Anthropic's events from an
//! OpenAI upstream, the client's own bytes through to an Anthropic upstream,
//! Anthropic-shaped errors, and `count_tokens`.

use serde_json::{json, Value};

use crate::anthropic::{
    claude_config, openai_only_with_key, parse, sse_events, start, weather_schema, CLAUDE_KEY,
    CLAUDE_MODEL, CLIENT_KEY,
};
use crate::support::mock_upstream::{wire, MockUpstream, Reply};
use crate::support::proxy::{http, Proxy};

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

#[tokio::test]
async fn an_upstream_failure_mid_stream_ends_the_messages_stream_with_an_error_event() {
    let up = MockUpstream::start().await;
    up.push(Reply::sse(wire::openrouter_mid_stream_error_events()));
    let proxy = start(&openai_only_with_key(&up.base_url())).await;
    let mut body = claude_code_request();
    body.as_object_mut().unwrap().remove("tools");
    let resp = http()
        .post(proxy.url("/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = sse_events(resp).await;
    let types: Vec<String> = events
        .iter()
        .map(|(_, d)| parse(d)["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(types.first().map(String::as_str), Some("message_start"));
    assert_eq!(types.last().map(String::as_str), Some("error"), "{types:?}");
    assert!(!types.iter().any(|t| t == "message_stop"), "{types:?}");
    let text: String = events
        .iter()
        .map(|(_, d)| parse(d))
        .filter(|e| e["delta"]["type"] == "text_delta")
        .map(|e| e["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "Hello world");
    let error = parse(&events.last().unwrap().1);
    assert!(error["error"]["type"].is_string(), "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Provider disconnected unexpectedly")),
        "{error}"
    );
}

#[tokio::test]
async fn an_anthropic_client_lists_models_in_anthropic_s_shape_and_others_in_openai_s() {
    let up = MockUpstream::start().await;
    let proxy = start(&claude_config(&up.base_url(), None)).await;
    let list = |anthropic: bool| {
        let mut req = http().get(proxy.url("/v1/models"));
        if anthropic {
            req = req.header("anthropic-version", "2023-06-01");
        }
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let models = list(true).await;
    assert_eq!(models["data"][0]["id"], "main", "{models}");
    assert_eq!(models["data"][0]["type"], "model");
    assert_eq!(models["data"][0]["display_name"], "main");
    assert_eq!(models["has_more"], false);
    assert_eq!(models["first_id"], "main");
    let openai = list(false).await;
    assert_eq!(openai["object"], "list");
    assert!(openai["data"][0].get("type").is_none(), "{openai}");
    assert!(openai.get("has_more").is_none(), "{openai}");
}
