//! One step's reply from the model, read whole from a JSON answer or built
//! up chunk by chunk from a stream, and the assistant message it becomes.

use serde_json::{json, Map, Value};

use crate::wire::usage::{self, Usage};

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Call {
    /// The stream's tool-call index (streams send a call in pieces).
    index: u64,
    pub id: String,
    pub name: String,
    pub arguments: String,
}

impl Call {
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "type": "function",
            "function": {"name": self.name, "arguments": self.arguments}})
    }
}

#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub content: String,
    /// Kimi's `reasoning_content` (already normalized from other names):
    /// thinking models refuse a tool turn whose reasoning is not sent back.
    pub reasoning: String,
    pub calls: Vec<Call>,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
}

impl Reply {
    /// A whole (normalized) `chat.completion`.
    pub fn from_completion(v: &Value) -> Reply {
        let choice = &v["choices"][0];
        let message = &choice["message"];
        let content = match &message["content"] {
            Value::String(text) => text.clone(),
            Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
            _ => String::new(),
        };
        let calls = message["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, c)| Call {
                index: i as u64,
                id: text(&c["id"]),
                name: text(&c["function"]["name"]),
                arguments: arguments(&c["function"]["arguments"]),
            })
            .collect();
        let mut reply = Reply {
            content,
            reasoning: text(&message["reasoning_content"]),
            calls,
            finish_reason: choice["finish_reason"].as_str().map(str::to_owned),
            usage: usage::usage(v),
            ..Reply::default()
        };
        reply.identify(v);
        reply
    }

    /// Adds one (normalized) streamed chunk. Returns what of it the client
    /// may see: its text and reasoning deltas, never its tool calls.
    pub fn add_chunk(&mut self, chunk: &Value) -> Option<Map<String, Value>> {
        self.identify(chunk);
        if let Some(u) = usage::usage(chunk) {
            self.usage = Some(u);
        }
        let choice = &chunk["choices"][0];
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(reason.to_owned());
        }
        let delta = &choice["delta"];
        for piece in delta["tool_calls"].as_array().into_iter().flatten() {
            // A server that sends whole calls without an index: a new id is a
            // new call, anything else continues the last one.
            let index = piece["index"].as_u64().unwrap_or_else(|| {
                let fresh = piece["id"].as_str().is_some_and(|id| {
                    !id.is_empty() && self.calls.last().is_none_or(|c| c.id != id)
                });
                match self.calls.last() {
                    Some(last) if !fresh => last.index,
                    _ => self.calls.iter().map(|c| c.index + 1).max().unwrap_or(0),
                }
            });
            if !self.calls.iter().any(|c| c.index == index) {
                self.calls.push(Call {
                    index,
                    ..Call::default()
                });
            }
            if let Some(call) = self.calls.iter_mut().find(|c| c.index == index) {
                call.id.push_str(piece["id"].as_str().unwrap_or_default());
                call.name
                    .push_str(piece["function"]["name"].as_str().unwrap_or_default());
                call.arguments
                    .push_str(piece["function"]["arguments"].as_str().unwrap_or_default());
            }
        }
        let mut visible = Map::new();
        for (field, into) in [
            ("content", &mut self.content),
            ("reasoning_content", &mut self.reasoning),
        ] {
            if let Some(text) = delta[field].as_str().filter(|t| !t.is_empty()) {
                into.push_str(text);
                visible.insert(field.into(), text.into());
            }
        }
        (!visible.is_empty()).then_some(visible)
    }

    /// Gives calls without an id (some local servers send none), or with
    /// one used twice, an id of their own: a tool result is matched to its
    /// call by id, upstream and in the client's transcript.
    pub fn name_calls(&mut self, step: u32) {
        let mut seen = std::collections::HashSet::new();
        for (i, call) in self.calls.iter_mut().enumerate() {
            if call.id.is_empty() || !seen.insert(call.id.clone()) {
                call.id = format!("call_hermes_{step}_{i}");
                seen.insert(call.id.clone());
            }
        }
    }

    /// The first id, time and model an answer names are the stream's.
    fn identify(&mut self, v: &Value) {
        if self.id.is_empty() {
            self.id = text(&v["id"]);
            self.created = v["created"].as_u64().unwrap_or(0);
            self.model = text(&v["model"]);
        }
    }

    /// The assistant message for the conversation, with `calls`.
    pub fn message<'a>(&self, calls: impl IntoIterator<Item = &'a Call>) -> Value {
        let mut message = json!({"role": "assistant", "content": self.content});
        if !self.reasoning.is_empty() {
            message["reasoning_content"] = self.reasoning.as_str().into();
        }
        let calls: Vec<Value> = calls.into_iter().map(Call::to_json).collect();
        if !calls.is_empty() {
            message["tool_calls"] = calls.into();
        }
        message
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// Arguments are a JSON string; some servers send the object itself.
fn arguments(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Usage summed over steps, in OpenAI's fields.
pub fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt,
        "completion_tokens": u.completion,
        "total_tokens": u.prompt + u.completion,
        "prompt_tokens_details": {"cached_tokens": u.cached},
    })
}

pub fn add(total: &mut Usage, u: Usage) {
    total.prompt += u.prompt;
    total.completion += u.completion;
    total.cached += u.cached;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamed_reply_assembles_calls_and_shows_only_text() {
        let mut reply = Reply::default();
        let chunks = [
            json!({"id": "c1", "created": 5, "model": "m", "choices": [{"index": 0,
                "delta": {"role": "assistant", "reasoning_content": "think"}}]}),
            json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}),
            json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
                "id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": ""}}]}}]}),
            json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
                "function": {"arguments": "{\"path\":"}}]}}]}),
            json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
                "function": {"arguments": "\"a.md\"}"}}]}, "finish_reason": "tool_calls"}]}),
            json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}),
        ];
        let visible: Vec<_> = chunks.iter().map(|c| reply.add_chunk(c)).collect();
        assert_eq!(visible[0].as_ref().unwrap()["reasoning_content"], "think");
        assert_eq!(visible[1].as_ref().unwrap()["content"], "Hi");
        assert!(visible[2..].iter().all(Option::is_none));
        assert_eq!(reply.calls.len(), 1);
        assert_eq!(reply.calls[0].name, "read_file");
        assert_eq!(reply.calls[0].arguments, r#"{"path":"a.md"}"#);
        assert_eq!(reply.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(reply.usage.unwrap().completion, 4);
        assert_eq!((reply.id.as_str(), reply.created), ("c1", 5));
        let message = reply.message(&reply.calls);
        assert_eq!(message["reasoning_content"], "think");
        assert_eq!(message["tool_calls"][0]["function"]["name"], "read_file");
    }

    #[test]
    fn calls_without_index_or_id_are_kept_apart_and_named() {
        let mut reply = Reply::default();
        for (id, name) in [("call_a", "read_file"), ("call_b", "list_files")] {
            reply.add_chunk(&json!({"choices": [{"delta": {"tool_calls": [{"id": id,
                "function": {"name": name, "arguments": "{}"}}]}}]}));
        }
        let names: Vec<&str> = reply.calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["read_file", "list_files"]);

        let v = json!({"choices": [{"message": {"tool_calls": [
            {"function": {"name": "read_file", "arguments": "{}"}},
            {"id": "x", "function": {"name": "list_files", "arguments": "{}"}},
            {"id": "x", "function": {"name": "memory", "arguments": "{}"}}]}}]});
        let mut reply = Reply::from_completion(&v);
        reply.name_calls(3);
        let ids: Vec<&str> = reply.calls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["call_hermes_3_0", "x", "call_hermes_3_2"]);
    }

    #[test]
    fn a_whole_reply_reads_calls_with_object_arguments() {
        let v = json!({"id": "x", "model": "m", "choices": [{"message": {"role": "assistant",
            "content": null, "tool_calls": [{"id": "call_9", "type": "function",
            "function": {"name": "list_files", "arguments": {"path": "."}}}]},
            "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 1, "completion_tokens": 2}});
        let reply = Reply::from_completion(&v);
        assert_eq!(reply.content, "");
        assert_eq!(reply.calls[0].arguments, r#"{"path":"."}"#);
        assert!(reply.message([]).get("tool_calls").is_none());
    }
}
