//! A Messages event stream becomes chat chunks, event by event as the
//! upstream sends them (never buffered beyond the block being read).
//!
//! Content blocks arrive one at a time, each opened by
//! `content_block_start` and addressed by its `index` afterwards; what a
//! chunk needs of a block (a tool call's chat index, the thinking text its
//! signature seals) is kept per block until the block stops.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use serde_json::{json, Map, Value};

use super::super::{chat_usage, finish_reason};
use super::answer::{arguments, now};
use crate::wire::sse;

/// Translates a Messages event stream, event by event, into chat chunks.
pub struct ChatChunks {
    id: String,
    model: Value,
    created: u64,
    /// message_start's usage (the input side); message_delta's usage
    /// overrides what it repeats.
    usage: Map<String, Value>,
    blocks: HashMap<u64, Block>,
    /// Tool-use blocks seen so far: the next one's chat index.
    tool_calls: u64,
    done: bool,
}

enum Block {
    Text,
    Tool {
        index: u64,
        /// An input given whole at the start (Anthropic gives `{}` and
        /// streams it; some compatible upstreams do not), sent at the stop
        /// if no delta came.
        input: Value,
        streamed: bool,
    },
    Thinking {
        text: String,
        signature: String,
    },
    /// Redacted thinking (sent whole at its start), server tools and blocks
    /// chat has no place for.
    Other,
}

impl Default for ChatChunks {
    fn default() -> Self {
        Self::new()
    }
}

impl ChatChunks {
    pub fn new() -> Self {
        ChatChunks {
            id: String::new(),
            model: Value::Null,
            created: now(),
            usage: Map::new(),
            blocks: HashMap::new(),
            tool_calls: 0,
            done: false,
        }
    }

    /// True once `message_stop` was seen.
    pub fn done(&self) -> bool {
        self.done
    }

    /// One upstream SSE event (`event:` name if any, `data:` payload) as the
    /// chat SSE bytes to hand on: zero or more `data: {chunk}\n\n`, or
    /// `data: [DONE]\n\n` for `message_stop`. An `error` event is handed on
    /// as received; `ping`, unknown events and unparseable data yield nothing.
    pub fn event(&mut self, name: Option<&str>, data: &str) -> Bytes {
        let Ok(event @ Value::Object(_)) = serde_json::from_str::<Value>(data) else {
            return Bytes::new();
        };
        // The payload's own type is authoritative; the name is a hint.
        let kind = event["type"].as_str().or(name).unwrap_or_default();
        let mut out = BytesMut::new();
        match kind {
            "message_start" => self.start(&mut out, &event["message"]),
            "content_block_start" => self.block_start(&mut out, &event),
            "content_block_delta" => self.block_delta(&mut out, &event),
            "content_block_stop" => self.block_stop(&mut out, &event),
            "message_delta" => self.message_delta(&mut out, &event),
            "message_stop" if !self.done => {
                self.done = true;
                out.extend_from_slice(sse::DONE);
            }
            "error" => out.extend_from_slice(&sse::data(data.trim().as_bytes())),
            _ => {} // ping, and events newer than this code
        }
        out.freeze()
    }

    fn start(&mut self, out: &mut BytesMut, message: &Value) {
        self.id = match message["id"].as_str() {
            Some(id) => id.to_owned(),
            None => format!("msg_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
        };
        self.model = message["model"].clone();
        if let Some(usage) = message["usage"].as_object() {
            self.usage = usage.clone();
        }
        self.chunk(out, json!({"role": "assistant", "content": ""}));
    }

    fn block_start(&mut self, out: &mut BytesMut, event: &Value) {
        let Some(at) = event["index"].as_u64() else {
            return;
        };
        let block = &event["content_block"];
        let state = match block["type"].as_str() {
            Some("text") => {
                if let Some(text) = block["text"].as_str().filter(|t| !t.is_empty()) {
                    self.chunk(out, json!({"content": text}));
                }
                Block::Text
            }
            Some("tool_use") => {
                let index = self.tool_calls;
                self.tool_calls += 1;
                self.chunk(
                    out,
                    json!({"tool_calls": [{
                        "index": index,
                        "id": block["id"],
                        "type": "function",
                        "function": {"name": block["name"], "arguments": ""},
                    }]}),
                );
                Block::Tool {
                    index,
                    input: block["input"].clone(),
                    streamed: false,
                }
            }
            Some("thinking") => {
                let text = block["thinking"].as_str().unwrap_or_default();
                if !text.is_empty() {
                    self.chunk(out, json!({"reasoning_content": text}));
                }
                Block::Thinking {
                    text: text.to_owned(),
                    signature: block["signature"].as_str().unwrap_or_default().to_owned(),
                }
            }
            Some("redacted_thinking") => {
                self.chunk(
                    out,
                    json!({"thinking_blocks": [
                        {"type": "redacted_thinking", "data": block["data"]}
                    ]}),
                );
                Block::Other
            }
            _ => Block::Other,
        };
        self.blocks.insert(at, state);
    }

    fn block_delta(&mut self, out: &mut BytesMut, event: &Value) {
        let delta = &event["delta"];
        let block = event["index"]
            .as_u64()
            .and_then(|at| self.blocks.get_mut(&at));
        match (delta["type"].as_str(), block) {
            (Some("text_delta"), _) => {
                if let Some(text) = delta["text"].as_str().filter(|t| !t.is_empty()) {
                    self.chunk(out, json!({"content": text}));
                }
            }
            (Some("thinking_delta"), block) => {
                let Some(text) = delta["thinking"].as_str().filter(|t| !t.is_empty()) else {
                    return;
                };
                if let Some(Block::Thinking { text: whole, .. }) = block {
                    whole.push_str(text);
                }
                self.chunk(out, json!({"reasoning_content": text}));
            }
            (Some("signature_delta"), Some(Block::Thinking { signature, .. })) => {
                signature.push_str(delta["signature"].as_str().unwrap_or_default());
            }
            (
                Some("input_json_delta"),
                Some(Block::Tool {
                    index, streamed, ..
                }),
            ) => {
                let Some(json) = delta["partial_json"].as_str().filter(|j| !j.is_empty()) else {
                    return;
                };
                *streamed = true;
                let index = *index;
                self.chunk(
                    out,
                    json!({"tool_calls": [{"index": index, "function": {"arguments": json}}]}),
                );
            }
            _ => {} // citations_delta, and deltas for blocks never started
        }
    }

    fn block_stop(&mut self, out: &mut BytesMut, event: &Value) {
        let Some(block) = event["index"]
            .as_u64()
            .and_then(|at| self.blocks.remove(&at))
        else {
            return;
        };
        match block {
            Block::Thinking { text, signature } => self.chunk(
                out,
                json!({"thinking_blocks": [
                    {"type": "thinking", "thinking": text, "signature": signature}
                ]}),
            ),
            Block::Tool {
                index,
                input,
                streamed: false,
            } if input.as_object().is_some_and(|i| !i.is_empty()) => self.chunk(
                out,
                json!({"tool_calls": [{"index": index, "function": {"arguments": arguments(&input)}}]}),
            ),
            _ => {}
        }
    }

    fn message_delta(&mut self, out: &mut BytesMut, event: &Value) {
        let mut usage = self.usage.clone();
        for (key, value) in event["usage"].as_object().into_iter().flatten() {
            if !value.is_null() {
                usage.insert(key.clone(), value.clone());
            }
        }
        let stop = event["delta"]["stop_reason"].as_str().unwrap_or_default();
        let mut chunk = self.envelope(json!({}));
        chunk["choices"][0]["finish_reason"] = finish_reason(stop).into();
        chunk["usage"] = chat_usage(&Value::Object(usage));
        write(out, &chunk);
    }

    fn envelope(&self, delta: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": null}],
        })
    }

    fn chunk(&self, out: &mut BytesMut, delta: Value) {
        write(out, &self.envelope(delta));
    }
}

fn write(out: &mut BytesMut, chunk: &Value) {
    out.extend_from_slice(&sse::data(&serde_json::to_vec(chunk).unwrap_or_default()));
}
