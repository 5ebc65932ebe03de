//! The agent loop's built-in tool calls as the dialects show them. On the
//! canonical stream each call's start and end travel as one internal event
//! ([`EVENT`], never sent to a client as is); each dialect's encoder turns it
//! into what its clients expect: Hermes Agent's `hermes.tool.progress`
//! events for chat, `function_call` / `function_call_output` items for
//! Responses. A non-streamed answer carries the same calls as [`ToolStep`]s.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::sse;

/// The internal event's name on the canonical stream.
pub const EVENT: &str = "hermes.tool";
/// The internal event that ends an agent stream that failed: its data is
/// the error in OpenAI's shape, already final (not an upstream's to classify).
pub const FAILED: &str = "hermes.failed";
/// The event chat clients get, as Hermes Agent's API server names it.
pub const PROGRESS: &str = "hermes.tool.progress";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Completed,
    Failed,
}

/// Which stream an event belongs to: what a chat chunk of it repeats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamId {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl StreamId {
    /// A `chat.completion.chunk` of this stream with `choices`.
    pub fn chunk(&self, choices: serde_json::Value) -> serde_json::Value {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": choices})
    }
}

/// One built-in call starting (`Running`, with its arguments) or ending
/// (with its output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolEvent {
    pub stream: StreamId,
    pub tool: String,
    pub call_id: String,
    pub status: Status,
    pub emoji: String,
    /// A short preview of the arguments.
    pub label: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arguments: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

impl ToolEvent {
    /// The event on the canonical stream.
    pub fn encode(&self) -> Bytes {
        sse::named(EVENT, &serde_json::to_vec(self).unwrap_or_default())
    }

    /// What a chat client gets: Hermes Agent's progress event, whose data is
    /// also a valid empty-delta chunk (OpenAI's SDKs parse every `data:` line
    /// as a chunk, whatever the event is called).
    pub fn progress(&self) -> Bytes {
        let mut data = self
            .stream
            .chunk(json!([{"index": 0, "delta": {}, "finish_reason": null}]));
        data["tool"] = self.tool.as_str().into();
        data["toolCallId"] = self.call_id.as_str().into();
        data["status"] = json!(self.status);
        match self.status {
            Status::Running => {
                data["emoji"] = self.emoji.as_str().into();
                data["label"] = self.label.as_str().into();
            }
            Status::Completed | Status::Failed => {
                data["duration_ms"] = self.duration_ms.unwrap_or(0).into();
            }
        }
        sse::named(PROGRESS, &serde_json::to_vec(&data).unwrap_or_default())
    }
}

/// A built-in call the loop ran, for answers that are not streamed.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolStep {
    pub call_id: String,
    pub name: String,
    pub arguments: String,
    pub output: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn event(status: Status) -> ToolEvent {
        ToolEvent {
            stream: StreamId {
                id: "chatcmpl-1".into(),
                created: 7,
                model: "m".into(),
            },
            tool: "read_file".into(),
            call_id: "call_1".into(),
            status,
            emoji: "📖".into(),
            label: "notes.md".into(),
            arguments: r#"{"path":"notes.md"}"#.into(),
            output: "text".into(),
            duration_ms: Some(12),
        }
    }

    fn data(bytes: &[u8]) -> (String, Value) {
        let text = std::str::from_utf8(bytes).unwrap();
        let (head, rest) = text.split_once('\n').unwrap();
        let json = rest.strip_prefix("data: ").unwrap().trim_end();
        (head.into(), serde_json::from_str(json).unwrap())
    }

    #[test]
    fn progress_is_hermes_shaped_and_a_valid_empty_chunk() {
        let (head, running) = data(&event(Status::Running).progress());
        assert_eq!(head, "event: hermes.tool.progress");
        assert_eq!(running["tool"], "read_file");
        assert_eq!(running["emoji"], "📖");
        assert_eq!(running["label"], "notes.md");
        assert_eq!(running["toolCallId"], "call_1");
        assert_eq!(running["status"], "running");
        assert_eq!(running["id"], "chatcmpl-1");
        assert_eq!(running["object"], "chat.completion.chunk");
        assert_eq!(running["choices"][0]["delta"], json!({}));
        // Arguments and output stay inside the proxy's own event.
        assert!(running.get("arguments").is_none() && running.get("output").is_none());

        let (_, done) = data(&event(Status::Completed).progress());
        assert_eq!(done["status"], "completed");
        assert_eq!(done["duration_ms"], 12);
        assert!(done.get("label").is_none());
    }

    #[test]
    fn the_internal_event_reads_back() {
        let (head, json) = data(&event(Status::Failed).encode());
        assert_eq!(head, "event: hermes.tool");
        let back: ToolEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event(Status::Failed));
    }
}
