//! Writing a relayed stream in the client's dialect: the trait each
//! dialect's encoder implements, and the chat one.

use bytes::{Bytes, BytesMut};

use super::agent::ToolEvent;
use super::sse::{data, DONE};

/// Writes a relayed stream in the client's dialect. The relay hands it the
/// normalized chat events as they come (`data: {...}\n\n`, the end as
/// `data: [DONE]\n\n`, sometimes several in one buffer).
pub trait StreamEncoder: Send {
    /// What to send the client for `events` (empty: nothing yet).
    fn encode(&mut self, events: Bytes) -> Bytes;
    /// The stream broke with `error` (OpenAI's error shape): its last bytes.
    fn fail(&mut self, error: &serde_json::Value) -> Bytes;
    /// A built-in tool call of the agent loop started or ended.
    fn tool(&mut self, event: &ToolEvent) -> Bytes;
}

/// Chat Completions clients get the chat events as they are, and an error
/// chunk then `[DONE]` when the stream breaks.
pub struct ChatEvents;

impl StreamEncoder for ChatEvents {
    fn encode(&mut self, events: Bytes) -> Bytes {
        events
    }

    fn fail(&mut self, error: &serde_json::Value) -> Bytes {
        let mut out = BytesMut::from(&data(&serde_json::to_vec(error).unwrap_or_default())[..]);
        out.extend_from_slice(DONE);
        out.freeze()
    }

    fn tool(&mut self, event: &ToolEvent) -> Bytes {
        event.progress()
    }
}
