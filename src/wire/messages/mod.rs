//! The Anthropic Messages dialect, both ways:
//!
//! - [`upstream`]: the canonical (chat) request as a Messages request for a
//!   `kind = "anthropic"` upstream, and its answers (JSON and streamed
//!   events) back as chat;
//! - [`ingress`]: a client's Messages request (`POST /v1/messages`) as the
//!   canonical request, and the chat answer back as a Message, as Anthropic's
//!   stream events, or as an Anthropic-shaped error.
//!
//! What chat has no field for travels in these canonical extensions, so a
//! round trip through either direction loses nothing:
//! - an assistant message (request or answer) keeps Anthropic's signed
//!   thinking as `thinking_blocks`: `[{"type":"thinking","thinking","signature"}
//!   | {"type":"redacted_thinking","data"}]`, beside its text in
//!   `reasoning_content`. A stream sends the text as `reasoning_content`
//!   deltas and each finished block once, whole, as
//!   `delta.thinking_blocks: [block]`.
//! - `usage` keeps `cache_creation_input_tokens` beside OpenAI's fields
//!   (`prompt_tokens` counts fresh, cached and cache-creating input alike;
//!   `prompt_tokens_details.cached_tokens` the cache reads).

pub mod ingress;
pub mod upstream;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::usage::Usage;

/// The `anthropic-version` every upstream request carries.
pub const VERSION: &str = "2023-06-01";

/// The client's request with only its `model` replaced, byte for byte
/// otherwise (a re-serialized body would reorder keys and reformat numbers,
/// and prompt caching hashes the bytes it is sent). `None` when the body
/// has no single top-level `model` to replace.
pub fn with_model(original: &[u8], model: &str) -> Option<Vec<u8>> {
    #[derive(Deserialize)]
    struct Model<'a> {
        #[serde(borrow)]
        model: &'a RawValue,
    }
    let found: Model = serde_json::from_slice(original).ok()?;
    // The raw value borrows from `original`: its place there is its offset.
    let at = found.model.get().as_ptr() as usize - original.as_ptr() as usize;
    let end = at + found.model.get().len();
    let model = serde_json::to_string(model).ok()?;
    let mut out = Vec::with_capacity(original.len() + model.len());
    out.extend_from_slice(&original[..at]);
    out.extend_from_slice(model.as_bytes());
    out.extend_from_slice(&original[end..]);
    Some(out)
}

/// Keeps the usage a Messages stream reports as it goes: `message_start`
/// carries the input side, `message_delta` the output (and, from some
/// servers, input fields again, which win). Returns the usage so far when
/// `data` reported any.
pub fn stream_usage(tally: &mut Map<String, Value>, data: &str) -> Option<Usage> {
    if !data.contains("\"usage\"") {
        return None;
    }
    let event: Value = serde_json::from_str(data).ok()?;
    let reported = event["message"]["usage"]
        .as_object()
        .or(event["usage"].as_object())?;
    for (k, v) in reported {
        if !v.is_null() {
            tally.insert(k.clone(), v.clone());
        }
    }
    Some(usage(&Value::Object(tally.clone())))
}

/// Messages usage as the counts the proxy accounts: the same sums as
/// [`chat_usage`], without building the chat form.
pub fn usage(usage: &Value) -> Usage {
    let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
    let read = n("cache_read_input_tokens");
    Usage {
        prompt: n("input_tokens") + read + n("cache_creation_input_tokens"),
        completion: n("output_tokens"),
        cached: read,
    }
}

/// A Messages `stop_reason` as a chat `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn
        _ => "stop",
    }
}

/// A chat `finish_reason` as a Messages `stop_reason`.
pub fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Messages usage (`input_tokens` fresh only, cache reads and writes apart)
/// as chat usage.
pub fn chat_usage(usage: &Value) -> Value {
    let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (fresh, read, created) = (
        n("input_tokens"),
        n("cache_read_input_tokens"),
        n("cache_creation_input_tokens"),
    );
    let prompt = fresh + read + created;
    let completion = n("output_tokens");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": read},
        "cache_creation_input_tokens": created,
    })
}

/// Chat usage as Messages usage: the inverse of [`chat_usage`].
pub fn messages_usage(usage: &Value) -> Value {
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let read = n(&usage["prompt_tokens_details"], "cached_tokens");
    let created = n(usage, "cache_creation_input_tokens");
    let prompt = n(usage, "prompt_tokens");
    json!({
        "input_tokens": prompt.saturating_sub(read + created),
        "cache_creation_input_tokens": created,
        "cache_read_input_tokens": read,
        "output_tokens": n(usage, "completion_tokens"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_round_trips_with_cache_reads_and_writes() {
        let anthropic = json!({"input_tokens": 10, "cache_read_input_tokens": 300,
            "cache_creation_input_tokens": 50, "output_tokens": 7});
        let chat = chat_usage(&anthropic);
        assert_eq!(chat["prompt_tokens"], 360);
        assert_eq!(chat["total_tokens"], 367);
        assert_eq!(chat["prompt_tokens_details"]["cached_tokens"], 300);
        assert_eq!(messages_usage(&chat), anthropic);
        assert_eq!(
            usage(&anthropic),
            Usage {
                prompt: 360,
                completion: 7,
                cached: 300
            }
        );
    }

    #[test]
    fn only_the_model_is_replaced_byte_for_byte() {
        let original = br#"{ "max_tokens": 1.50e3, "model" : "default", "system": [{"type":"text","text":"model","cache_control":{"type":"ephemeral"}}],"z":1}"#;
        let out = with_model(original, "claude-\"x\"").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{ "max_tokens": 1.50e3, "model" : "claude-\"x\"", "system": [{"type":"text","text":"model","cache_control":{"type":"ephemeral"}}],"z":1}"#
        );
        assert_eq!(with_model(br#"{"model":"a","model":"b"}"#, "c"), None);
        assert_eq!(with_model(b"[]", "c"), None);
    }

    #[test]
    fn a_streams_usage_adds_up_from_start_to_delta() {
        let mut tally = Map::new();
        let start = r#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":25,"cache_read_input_tokens":100,"output_tokens":1}}}"#;
        assert_eq!(stream_usage(&mut tally, start).unwrap().prompt, 125);
        assert_eq!(stream_usage(&mut tally, r#"{"type":"ping"}"#), None);
        let delta = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}"#;
        let usage = stream_usage(&mut tally, delta).unwrap();
        assert_eq!(usage.completion, 15);
        assert_eq!(usage.cached, 100);
    }

    #[test]
    fn stop_reasons_map_both_ways() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
        ] {
            assert_eq!(finish_reason(stop), finish);
            assert_eq!(stop_reason(finish), stop);
        }
        assert_eq!(finish_reason("stop_sequence"), "stop");
    }
}
