//! A Messages answer (a non-streamed reply) as a `chat.completion`, its
//! signed thinking kept in the canonical `thinking_blocks`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::super::{chat_usage, finish_reason};

/// A Messages answer (the JSON of a non-streamed reply) as a
/// `chat.completion` object.
pub fn answer(message: &Value) -> Value {
    let mut text = String::new();
    let mut has_text = false;
    let mut reasoning: Option<String> = None;
    let mut thinking_blocks = vec![];
    let mut tool_calls = vec![];
    for block in message["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") => {
                has_text = true;
                text.push_str(block["text"].as_str().unwrap_or_default());
            }
            Some("thinking") => {
                reasoning
                    .get_or_insert_with(String::new)
                    .push_str(block["thinking"].as_str().unwrap_or_default());
                thinking_blocks.push(block.clone());
            }
            Some("redacted_thinking") => thinking_blocks.push(block.clone()),
            Some("tool_use") => tool_calls.push(json!({
                "id": block["id"],
                "type": "function",
                "function": {
                    "name": block["name"],
                    "arguments": arguments(&block["input"]),
                },
            })),
            _ => {}
        }
    }
    let mut reply = json!({
        "role": "assistant",
        "content": if has_text { Value::String(text) } else { Value::Null },
    });
    if let Some(reasoning) = reasoning {
        reply["reasoning_content"] = reasoning.into();
    }
    if !thinking_blocks.is_empty() {
        reply["thinking_blocks"] = thinking_blocks.into();
    }
    if !tool_calls.is_empty() {
        reply["tool_calls"] = tool_calls.into();
    }
    json!({
        "id": message["id"],
        "object": "chat.completion",
        "created": now(),
        "model": message["model"],
        "choices": [{
            "index": 0,
            "message": reply,
            "finish_reason": finish_reason(message["stop_reason"].as_str().unwrap_or_default()),
        }],
        "usage": chat_usage(&message["usage"]),
    })
}

/// A tool use's input as chat's arguments string.
pub(super) fn arguments(input: &Value) -> String {
    match input {
        Value::Object(_) => serde_json::to_string(input).unwrap_or_default(),
        _ => "{}".into(),
    }
}

/// Unix seconds.
pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_thinking_and_a_tool_use_become_one_assistant_message() {
        let message = json!({
            "id": "msg_01Aq9w938a90dw8q", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [
                {"type": "thinking", "thinking": "The user wants the weather.", "signature": "EqQBCgIYAhIM"},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
                {"type": "text", "text": "I'll check "},
                {"type": "text", "text": "the weather."},
                {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9",
                 "name": "get_weather", "input": {"location": "San Francisco, CA", "unit": "celsius"}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 2095, "output_tokens": 503,
                      "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20}
        });
        let chat = answer(&message);
        assert_eq!(chat["id"], "msg_01Aq9w938a90dw8q");
        assert_eq!(chat["object"], "chat.completion");
        assert_eq!(chat["model"], "claude-sonnet-4-5-20250929");
        assert!(chat["created"].as_u64().unwrap() > 1_700_000_000);
        let choice = &chat["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        let reply = &choice["message"];
        assert_eq!(reply["role"], "assistant");
        assert_eq!(reply["content"], "I'll check the weather.");
        assert_eq!(reply["reasoning_content"], "The user wants the weather.");
        assert_eq!(
            reply["thinking_blocks"],
            json!([
                {"type": "thinking", "thinking": "The user wants the weather.", "signature": "EqQBCgIYAhIM"},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"}
            ])
        );
        let call = &reply["tool_calls"][0];
        assert_eq!(call["id"], "toolu_01A09q90qw90lq917835lq9");
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(
            args,
            json!({"location": "San Francisco, CA", "unit": "celsius"})
        );
        assert_eq!(chat["usage"]["prompt_tokens"], 2215);
        assert_eq!(chat["usage"]["completion_tokens"], 503);
        assert_eq!(chat["usage"]["prompt_tokens_details"]["cached_tokens"], 100);
        assert_eq!(chat["usage"]["cache_creation_input_tokens"], 20);
    }

    #[test]
    fn a_plain_answer_has_no_reasoning_or_tool_fields() {
        let chat = answer(
            &json!({"id": "msg_1", "model": "claude", "stop_reason": "max_tokens",
            "content": [{"type": "text", "text": "Hi"}], "usage": {"input_tokens": 3, "output_tokens": 1}}),
        );
        let reply = &chat["choices"][0]["message"];
        assert_eq!(reply["content"], "Hi");
        assert!(reply.get("reasoning_content").is_none());
        assert!(reply.get("thinking_blocks").is_none());
        assert!(reply.get("tool_calls").is_none());
        assert_eq!(chat["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn an_answer_with_only_a_tool_use_has_null_content() {
        let chat = answer(
            &json!({"content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
            "stop_reason": "tool_use"}),
        );
        let reply = &chat["choices"][0]["message"];
        assert_eq!(reply["content"], Value::Null);
        assert_eq!(reply["tool_calls"][0]["function"]["arguments"], "{}");
    }

    #[test]
    fn garbage_answers_do_not_panic_and_still_make_a_completion() {
        for garbage in [
            json!(null),
            json!([]),
            json!("text"),
            json!({"content": "not blocks", "usage": 5}),
            json!({"content": [null, 1, {"type": "tool_use", "input": "x"}, {"type": "text"}]}),
        ] {
            let chat = answer(&garbage);
            assert_eq!(chat["object"], "chat.completion");
            assert_eq!(chat["choices"][0]["finish_reason"], "stop");
            assert_eq!(chat["usage"]["total_tokens"], 0);
        }
    }
}
