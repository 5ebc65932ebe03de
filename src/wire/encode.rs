//! Writing a relayed stream in the client's dialect: the trait each
//! dialect's encoder implements, and the chat one.

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;

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
    /// What must be done before the bytes `encode` just returned reach the
    /// client (a stored response that the client's next request may read,
    /// through any replica).
    fn settle(&mut self) -> Option<BoxFuture<'static, ()>> {
        None
    }
}

/// What one normalized chat chunk says, as the dialect encoders read it:
/// absent parts are `None` or empty, and empty text counts as absent.
pub struct ChunkParts<'a> {
    pub usage: Option<&'a serde_json::Value>,
    pub finish_reason: Option<&'a str>,
    pub reasoning: Option<&'a str>,
    /// Finished signed thinking blocks (see `wire::messages`).
    pub thinking_blocks: &'a [serde_json::Value],
    pub content: Option<&'a str>,
    pub tool_calls: &'a [serde_json::Value],
}

impl<'a> ChunkParts<'a> {
    pub fn of(chunk: &'a serde_json::Value) -> Self {
        let choice = &chunk["choices"][0];
        let delta = &choice["delta"];
        let text = |key: &str| delta[key].as_str().filter(|t| !t.is_empty());
        let list = |key: &str| delta[key].as_array().map_or(&[][..], Vec::as_slice);
        ChunkParts {
            usage: Some(&chunk["usage"]).filter(|u| u.is_object()),
            finish_reason: choice["finish_reason"].as_str(),
            reasoning: text("reasoning_content"),
            thinking_blocks: list("thinking_blocks"),
            content: text("content"),
            tool_calls: list("tool_calls"),
        }
    }
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
