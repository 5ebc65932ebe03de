//! A relayed chat stream becomes Anthropic's stream events as it comes
//! (never buffered): `message_start`, then per content block its
//! `content_block_start`, deltas and `content_block_stop`, then
//! `message_delta` with the stop reason and usage and `message_stop`. A
//! broken stream ends with an `error` event instead.
//!
//! Chat interleaves nothing Anthropic cannot: reasoning, text and each tool
//! call arrive one after another, so a change of kind (or of tool index)
//! closes the open block and opens the next.

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use super::answer::{message_id, stop};
use super::error::error_from_openai;
use crate::wire::agent::{Status, ToolEvent};
use crate::wire::encode::StreamEncoder;
use crate::wire::messages::messages_usage;
use crate::wire::sse;

/// Writes a relayed chat stream as Anthropic's stream events.
pub struct MessagesEvents {
    model: String,
    started: bool,
    ended: bool,
    open: Option<Block>,
    /// The index the next content block gets.
    next_index: usize,
    /// Chat tool-call indexes whose block is already closed: Anthropic has
    /// no way to reopen one.
    closed_calls: Vec<u64>,
    made_calls: bool,
    finish_reason: Option<String>,
    usage: Value,
}

/// The content block being streamed.
struct Block {
    index: usize,
    kind: Kind,
}

#[derive(PartialEq)]
enum Kind {
    Thinking,
    Text,
    /// A tool call, by its chat index.
    Call(u64),
}

impl MessagesEvents {
    /// `model`: what the client asked for.
    pub fn new(model: &str) -> Self {
        MessagesEvents {
            model: model.to_owned(),
            started: false,
            ended: false,
            open: None,
            next_index: 0,
            closed_calls: vec![],
            made_calls: false,
            finish_reason: None,
            usage: Value::Null,
        }
    }

    fn emit(&self, out: &mut BytesMut, kind: &str, mut event: Value) {
        event["type"] = kind.into();
        out.extend_from_slice(&sse::named(
            kind,
            &serde_json::to_vec(&event).unwrap_or_default(),
        ));
    }

    /// `message_start`, once; the id follows the first chunk's.
    fn start(&mut self, out: &mut BytesMut, chunk_id: Option<&str>) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({"id": message_id(chunk_id), "type": "message",
            "role": "assistant", "model": self.model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}});
        self.emit(out, "message_start", json!({"message": message}));
    }

    fn chunk(&mut self, out: &mut BytesMut, chunk: &Value) {
        self.start(out, chunk["id"].as_str());
        if chunk["error"].is_object() {
            self.failed(out, chunk);
            return;
        }
        if chunk["usage"].is_object() {
            self.usage = chunk["usage"].clone();
        }
        let choice = &chunk["choices"][0];
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(reason.to_owned());
        }
        let delta = &choice["delta"];
        if let Some(text) = delta["reasoning_content"]
            .as_str()
            .filter(|t| !t.is_empty())
        {
            self.open_as(
                out,
                Kind::Thinking,
                || json!({"type": "thinking", "thinking": "", "signature": ""}),
            );
            self.delta(out, json!({"type": "thinking_delta", "thinking": text}));
        }
        for block in delta["thinking_blocks"].as_array().into_iter().flatten() {
            self.signed(out, block);
        }
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            self.open_as(out, Kind::Text, || json!({"type": "text", "text": ""}));
            self.delta(out, json!({"type": "text_delta", "text": text}));
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            self.call(out, call);
        }
    }

    /// A finished thinking block, whole: the signature of the one being
    /// streamed, or the block itself when its text was not streamed.
    fn signed(&mut self, out: &mut BytesMut, block: &Value) {
        let signature = json!({"type": "signature_delta",
            "signature": block["signature"].as_str().unwrap_or_default()});
        match block["type"].as_str() {
            Some("thinking") => {
                if !self.is_open(&Kind::Thinking) {
                    self.open_as(
                        out,
                        Kind::Thinking,
                        || json!({"type": "thinking", "thinking": "", "signature": ""}),
                    );
                    if let Some(text) = block["thinking"].as_str().filter(|t| !t.is_empty()) {
                        self.delta(out, json!({"type": "thinking_delta", "thinking": text}));
                    }
                }
                self.delta(out, signature);
                self.close(out);
            }
            Some("redacted_thinking") => {
                self.close(out);
                let data = block["data"].as_str().unwrap_or_default();
                self.open_as(
                    out,
                    Kind::Thinking,
                    || json!({"type": "redacted_thinking", "data": data}),
                );
                self.close(out);
            }
            _ => {}
        }
    }

    fn call(&mut self, out: &mut BytesMut, call: &Value) {
        let index = call["index"].as_u64().unwrap_or(0);
        if !self.is_open(&Kind::Call(index)) {
            if self.closed_calls.contains(&index) {
                return;
            }
            let id = call["id"]
                .as_str()
                .filter(|id| !id.is_empty())
                .map_or_else(|| super::new_id("toolu"), str::to_owned);
            let name = call["function"]["name"].as_str().unwrap_or_default();
            self.made_calls = true;
            self.open_as(
                out,
                Kind::Call(index),
                || json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
            );
        }
        if let Some(fragment) = call["function"]["arguments"]
            .as_str()
            .filter(|a| !a.is_empty())
        {
            self.delta(
                out,
                json!({"type": "input_json_delta", "partial_json": fragment}),
            );
        }
    }

    fn is_open(&self, kind: &Kind) -> bool {
        self.open.as_ref().is_some_and(|b| b.kind == *kind)
    }

    /// Makes a block of `kind` the open one, closing another first.
    fn open_as(&mut self, out: &mut BytesMut, kind: Kind, block: impl FnOnce() -> Value) {
        if self.is_open(&kind) {
            return;
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.emit(
            out,
            "content_block_start",
            json!({"index": index, "content_block": block()}),
        );
        self.open = Some(Block { index, kind });
    }

    fn delta(&self, out: &mut BytesMut, delta: Value) {
        if let Some(block) = &self.open {
            self.emit(
                out,
                "content_block_delta",
                json!({"index": block.index, "delta": delta}),
            );
        }
    }

    fn close(&mut self, out: &mut BytesMut) {
        if let Some(block) = self.open.take() {
            if let Kind::Call(index) = block.kind {
                self.closed_calls.push(index);
            }
            self.emit(out, "content_block_stop", json!({"index": block.index}));
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        self.start(out, None);
        self.close(out);
        self.ended = true;
        let reason = stop(
            self.finish_reason.as_deref().unwrap_or("stop"),
            self.made_calls,
        );
        self.emit(
            out,
            "message_delta",
            json!({"delta": {"stop_reason": reason, "stop_sequence": null},
                "usage": messages_usage(&self.usage)}),
        );
        self.emit(out, "message_stop", json!({}));
    }

    fn failed(&mut self, out: &mut BytesMut, error: &Value) {
        self.start(out, None);
        self.close(out);
        self.ended = true;
        out.extend_from_slice(&sse::named(
            "error",
            &serde_json::to_vec(&error_from_openai(error)).unwrap_or_default(),
        ));
    }
}

impl StreamEncoder for MessagesEvents {
    fn encode(&mut self, events: Bytes) -> Bytes {
        let mut out = BytesMut::new();
        for payload in sse::payloads(&events) {
            if self.ended {
                break;
            }
            if payload == b"[DONE]" {
                self.finish(&mut out);
            } else if let Ok(chunk) = serde_json::from_slice::<Value>(payload) {
                if chunk.is_object() {
                    self.chunk(&mut out, &chunk);
                }
            }
        }
        out.freeze()
    }

    fn fail(&mut self, error: &Value) -> Bytes {
        let mut out = BytesMut::new();
        if !self.ended {
            self.failed(&mut out, error);
        }
        out.freeze()
    }

    /// Anthropic has no event for the proxy's own tool calls: a comment
    /// (which its SDKs skip) keeps the connection visibly alive meanwhile.
    fn tool(&mut self, event: &ToolEvent) -> Bytes {
        if self.ended {
            return Bytes::new();
        }
        let status = match event.status {
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
        };
        let name: String = event
            .tool
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Bytes::from(format!(": {name} {status}\n\n"))
    }
}
