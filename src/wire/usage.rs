//! One schema for every OpenAI-dialect upstream: usage in OpenAI form and
//! reasoning text as `reasoning_content`, whatever the upstream called them.
//! Pure functions over parsed JSON; each returns whether it changed anything,
//! so callers re-serialize only when they must.

use serde_json::{Map, Value};

/// Token counts as OpenAI reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
}

/// A whole `chat.completion` (or `text_completion`) object.
pub fn completion(v: &mut Value) -> bool {
    normalize(v, "message")
}

/// One streamed `chat.completion.chunk`.
pub fn chunk(v: &mut Value) -> bool {
    normalize(v, "delta")
}

/// `part`: where a choice keeps its text (`message` whole, `delta` streamed).
fn normalize(v: &mut Value, part: &str) -> bool {
    let mut changed = hoist_usage(v);
    changed |= usage_in_place(v);
    if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
        for choice in choices {
            if let Some(text) = choice.get_mut(part) {
                changed |= reasoning(text);
            }
        }
    }
    changed
}

/// The usage a completion or chunk reports, after normalization.
pub fn usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?.as_object()?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        prompt: n("prompt_tokens"),
        completion: n("completion_tokens"),
        cached: u
            .get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

/// Kimi puts `usage` inside the last choice; OpenAI puts it at the top.
fn hoist_usage(v: &mut Value) -> bool {
    if v.get("usage").is_some_and(|u| !u.is_null()) {
        return false;
    }
    let found = v
        .get_mut("choices")
        .and_then(Value::as_array_mut)
        .and_then(|choices| {
            choices
                .iter_mut()
                .rev()
                .find_map(|c| c.as_object_mut().and_then(|c| c.remove("usage")))
        });
    match (found, v.as_object_mut()) {
        (Some(u), Some(obj)) if !u.is_null() => {
            obj.insert("usage".into(), u);
            true
        }
        _ => false,
    }
}

/// Rewrites `usage` into OpenAI's fields: Anthropic's `input_tokens` /
/// `output_tokens` / `cache_read_input_tokens`, Kimi's top-level
/// `cached_tokens`, DeepSeek's `prompt_cache_hit_tokens`; fills `total_tokens`
/// and `prompt_tokens_details.cached_tokens` when missing.
fn usage_in_place(v: &mut Value) -> bool {
    let Some(u) = v.get_mut("usage").and_then(Value::as_object_mut) else {
        return false;
    };
    let mut changed = false;
    changed |= rename(u, "input_tokens", "prompt_tokens");
    changed |= rename(u, "output_tokens", "completion_tokens");
    let get = |u: &Map<String, Value>, k: &str| u.get(k).and_then(Value::as_u64);
    let cached_elsewhere = [
        "cached_tokens",
        "cache_read_input_tokens",
        "prompt_cache_hit_tokens",
    ]
    .iter()
    .find_map(|k| get(u, k));
    if !u.contains_key("total_tokens") {
        let total = get(u, "prompt_tokens").unwrap_or(0) + get(u, "completion_tokens").unwrap_or(0);
        u.insert("total_tokens".into(), total.into());
        changed = true;
    }
    let details = u
        .entry("prompt_tokens_details")
        .or_insert_with(|| Value::Object(Map::new()));
    if details.is_null() {
        *details = Value::Object(Map::new());
    }
    if let Some(details) = details.as_object_mut() {
        if !details.contains_key("cached_tokens") {
            details.insert("cached_tokens".into(), cached_elsewhere.unwrap_or(0).into());
            changed = true;
        }
    }
    changed
}

fn rename(obj: &mut Map<String, Value>, from: &str, to: &str) -> bool {
    if obj.contains_key(to) {
        return false;
    }
    match obj.remove(from) {
        Some(v) => {
            obj.insert(to.into(), v);
            true
        }
        None => false,
    }
}

/// vLLM, Ollama and OpenRouter say `reasoning`; clients read `reasoning_content`.
fn reasoning(msg: &mut Value) -> bool {
    let Some(obj) = msg.as_object_mut() else {
        return false;
    };
    if obj.get("reasoning_content").is_some_and(|r| !r.is_null()) {
        // Some upstreams send both; one copy is enough.
        return obj.remove("reasoning").is_some();
    }
    match obj.remove("reasoning") {
        Some(Value::String(s)) => {
            obj.insert("reasoning_content".into(), Value::String(s));
            true
        }
        Some(other) => {
            // A non-string `reasoning` (e.g. an effort object) is not ours to move.
            obj.insert("reasoning".into(), other);
            from_details(obj)
        }
        None => from_details(obj),
    }
}

/// OpenRouter may send only `reasoning_details` (its structured blocks):
/// their readable text becomes `reasoning_content`; the blocks stay, for
/// clients that send them back. Encrypted blocks have no text to show.
fn from_details(obj: &mut Map<String, Value>) -> bool {
    let Some(details) = obj.get("reasoning_details").and_then(Value::as_array) else {
        return false;
    };
    let text: String = details
        .iter()
        .filter_map(|d| match d["type"].as_str() {
            Some("reasoning.text") => d["text"].as_str(),
            Some("reasoning.summary") => d["summary"].as_str(),
            _ => None,
        })
        .collect();
    if text.is_empty() {
        return false;
    }
    obj.insert("reasoning_content".into(), Value::String(text));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openrouter_reasoning_details_alone_become_reasoning_content_streamed_and_whole() {
        let details = json!([
            {"type": "reasoning.summary", "summary": "Plan: ", "id": "r1", "format": "anthropic-claude-v1", "index": 0},
            {"type": "reasoning.text", "text": "add 2 and 2", "signature": "sig", "index": 1},
            {"type": "reasoning.encrypted", "data": "opaque", "index": 2}
        ]);
        let mut whole =
            json!({"choices":[{"message":{"content":"4","reasoning_details": details}}]});
        assert!(completion(&mut whole));
        let message = &whole["choices"][0]["message"];
        assert_eq!(message["reasoning_content"], "Plan: add 2 and 2");
        assert_eq!(message["reasoning_details"], details, "the blocks stay");
        let mut delta = json!({"choices":[{"delta":{"reasoning":null,"reasoning_details":[{"type":"reasoning.text","text":"add","index":0}]}}]});
        assert!(chunk(&mut delta));
        assert_eq!(delta["choices"][0]["delta"]["reasoning_content"], "add");
        // Encrypted only: nothing to show.
        let mut hidden = json!({"choices":[{"delta":{"reasoning_details":[{"type":"reasoning.encrypted","data":"x"}]}}]});
        assert!(!chunk(&mut hidden));
    }

    #[test]
    fn hoists_kimi_usage_from_last_choice_and_maps_cached_tokens() {
        let mut v = json!({"choices":[{"index":0,"delta":{},"finish_reason":"stop",
            "usage":{"prompt_tokens":19,"completion_tokens":13,"total_tokens":32,"cached_tokens":10}}]});
        assert!(chunk(&mut v));
        assert!(v["choices"][0].get("usage").is_none());
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 10);
        assert_eq!(
            usage(&v),
            Some(Usage {
                prompt: 19,
                completion: 13,
                cached: 10
            })
        );
    }

    #[test]
    fn converts_anthropic_usage_fields() {
        let mut v =
            json!({"usage":{"input_tokens":5,"output_tokens":7,"cache_read_input_tokens":3}});
        assert!(completion(&mut v));
        assert_eq!(v["usage"]["prompt_tokens"], 5);
        assert_eq!(v["usage"]["completion_tokens"], 7);
        assert_eq!(v["usage"]["total_tokens"], 12);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
    }

    #[test]
    fn renames_reasoning_to_reasoning_content_in_messages_and_deltas() {
        let mut msg =
            json!({"choices":[{"message":{"role":"assistant","content":"4","reasoning":"2+2"}}]});
        assert!(completion(&mut msg));
        assert_eq!(msg["choices"][0]["message"]["reasoning_content"], "2+2");
        assert!(msg["choices"][0]["message"].get("reasoning").is_none());

        let mut delta = json!({"choices":[{"delta":{"reasoning":"hm"}}]});
        assert!(chunk(&mut delta));
        assert_eq!(delta["choices"][0]["delta"]["reasoning_content"], "hm");
    }

    #[test]
    fn leaves_an_already_normal_chunk_untouched() {
        let mut v = json!({"choices":[{"delta":{"content":"hi"}}]});
        let before = v.clone();
        assert!(!chunk(&mut v));
        assert_eq!(v, before);
    }
}
