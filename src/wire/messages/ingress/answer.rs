//! A canonical `chat.completion` becomes the Message Anthropic's clients
//! parse: thinking, text and `tool_use` blocks in that order, the stop
//! reason, and usage with cache reads and writes apart.

use serde_json::{json, Value};

use super::new_id;
use crate::wire::messages::{messages_usage, stop_reason};

/// `completion` as a Message; `model` is what the client asked for.
pub fn answer(completion: &Value, model: &str) -> Value {
    let message = &completion["choices"][0]["message"];
    let mut content = thinking(message);
    let text = match &message["content"] {
        Value::String(text) => text.clone(),
        // Some upstreams answer in content parts.
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    };
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    let calls = message["tool_calls"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    for call in calls.iter().filter(|c| c.is_object()) {
        content.push(json!({
            "type": "tool_use",
            "id": call["id"].as_str().map_or_else(|| new_id("toolu"), str::to_owned),
            "name": call["function"]["name"].as_str().unwrap_or_default(),
            "input": input(&call["function"]["arguments"]),
        }));
    }
    let finish = completion["choices"][0]["finish_reason"]
        .as_str()
        .unwrap_or("stop");
    json!({
        "id": message_id(completion["id"].as_str()),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop(finish, content_has_calls(&content)),
        "stop_sequence": null,
        "usage": messages_usage(&completion["usage"]),
    })
}

/// The stop reason for `finish_reason`. Calls the upstream ended with
/// `stop` still ask for results: Anthropic's clients run tools on
/// `tool_use` only.
pub fn stop(finish_reason: &str, made_calls: bool) -> &'static str {
    match stop_reason(finish_reason) {
        "end_turn" if made_calls => "tool_use",
        reason => reason,
    }
}

/// `msg_` and the completion's own id, or a fresh one.
pub fn message_id(completion_id: Option<&str>) -> String {
    match completion_id.filter(|id| !id.is_empty()) {
        Some(id) => format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id)),
        None => new_id("msg"),
    }
}

fn content_has_calls(content: &[Value]) -> bool {
    content.iter().any(|b| b["type"] == "tool_use")
}

/// The signed blocks as the upstream gave them, else the reasoning text as
/// one unsigned block.
fn thinking(message: &Value) -> Vec<Value> {
    let signed: Vec<Value> = message["thinking_blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| matches!(b["type"].as_str(), Some("thinking" | "redacted_thinking")))
        .cloned()
        .collect();
    if !signed.is_empty() {
        return signed;
    }
    match message["reasoning_content"]
        .as_str()
        .filter(|t| !t.is_empty())
    {
        Some(text) => vec![json!({"type": "thinking", "thinking": text, "signature": ""})],
        None => vec![],
    }
}

/// A call's arguments as the `input` object: anything else (broken JSON, a
/// bare value) as `{}`, since clients index into it.
fn input(arguments: &Value) -> Value {
    match arguments {
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(object @ Value::Object(_)) => object,
            _ => json!({}),
        },
        object @ Value::Object(_) => object.clone(),
        _ => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinking_text_and_tool_use_come_in_order_with_cache_usage() {
        let completion = json!({
            "id": "chatcmpl-abc123",
            "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant",
                "content": "Let me look.",
                "reasoning_content": "The user wants a file.",
                "thinking_blocks": [
                    {"type": "thinking", "thinking": "The user wants a file.", "signature": "sig-1"},
                    {"type": "redacted_thinking", "data": "opaque"}
                ],
                "tool_calls": [{"id": "toolu_01", "type": "function",
                    "function": {"name": "Read", "arguments": "{\"file_path\":\"/a.rs\"}"}}]
            }}],
            "usage": {"prompt_tokens": 1360, "completion_tokens": 42, "total_tokens": 1402,
                "prompt_tokens_details": {"cached_tokens": 1000},
                "cache_creation_input_tokens": 300}
        });
        let message = answer(&completion, "claude-sonnet-4-5");
        assert_eq!(
            message,
            json!({
                "id": "msg_abc123",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [
                    {"type": "thinking", "thinking": "The user wants a file.", "signature": "sig-1"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_01", "name": "Read",
                        "input": {"file_path": "/a.rs"}}
                ],
                "stop_reason": "tool_use",
                "stop_sequence": null,
                "usage": {"input_tokens": 60, "cache_creation_input_tokens": 300,
                    "cache_read_input_tokens": 1000, "output_tokens": 42}
            })
        );
    }

    #[test]
    fn reasoning_without_signed_blocks_is_one_unsigned_thinking_block() {
        let completion = json!({"choices": [{"finish_reason": "length", "message": {
            "content": "partial", "reasoning_content": "hmm"}}]});
        let message = answer(&completion, "m");
        assert_eq!(
            message["content"],
            json!([{"type": "thinking", "thinking": "hmm", "signature": ""},
                {"type": "text", "text": "partial"}])
        );
        assert_eq!(message["stop_reason"], "max_tokens");
        assert!(message["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(
            message["usage"],
            json!({"input_tokens": 0, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "output_tokens": 0})
        );
    }

    #[test]
    fn broken_or_non_object_arguments_become_an_empty_input() {
        let completion = json!({"choices": [{"finish_reason": "stop", "message": {
            "content": null, "tool_calls": [
                {"id": "a", "function": {"name": "f", "arguments": "{\"x\":"}},
                {"id": "b", "function": {"name": "g", "arguments": "[1]"}}]}}]});
        let message = answer(&completion, "m");
        assert_eq!(message["content"][0]["input"], json!({}));
        assert_eq!(message["content"][1]["input"], json!({}));
        assert_eq!(message["stop_reason"], "tool_use", "calls ask for results");
    }

    #[test]
    fn odd_completions_never_panic() {
        for odd in [
            json!(null),
            json!([]),
            json!({"choices": "x"}),
            json!({"choices": [{"message": {"content": 5, "tool_calls": [1, null],
                "thinking_blocks": "x", "reasoning_content": []}}], "usage": "x", "id": 7}),
        ] {
            let message = answer(&odd, "m");
            assert_eq!(message["type"], "message");
            assert_eq!(message["stop_reason"], "end_turn");
        }
    }
}
