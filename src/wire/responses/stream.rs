//! A chat stream becomes the Responses event stream, event by event as the
//! upstream sends it (never buffered): `response.created`,
//! `response.in_progress`, then per output item its `added`, deltas and
//! `done` events, and last `response.completed` | `response.incomplete` |
//! `response.failed` carrying the whole response. Every event is
//! `event: <type>` + `data: {..., "type", "sequence_number"}`, numbered from
//! 0; there is no `[DONE]`.

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::answer::usage;
use super::new_id;
use crate::wire::agent::{Status, ToolEvent};
use crate::wire::encode::{ChunkParts, StreamEncoder};
use crate::wire::sse;

/// Called once with the finished response (to store it); what it returns,
/// if anything, is awaited before the client gets the response's last event.
pub type OnComplete = Box<dyn FnOnce(Value) -> Option<BoxFuture<'static, ()>> + Send>;

pub struct ResponseEvents {
    /// The response so far: the envelope, then its finished output items.
    response: Value,
    sequence: u64,
    started: bool,
    ended: bool,
    current: Option<Item>,
    finish_reason: Option<String>,
    usage: Value,
    on_complete: Option<OnComplete>,
    /// What `on_complete` asked to wait for, until the relay takes it.
    settling: Option<BoxFuture<'static, ()>>,
}

/// The output item being streamed.
enum Item {
    Reasoning {
        id: String,
        text: String,
    },
    Message {
        id: String,
        text: String,
    },
    Call {
        /// The chat stream's tool-call index.
        index: u64,
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

impl ResponseEvents {
    /// `envelope`: the response without its outcome (`answer::envelope`).
    pub fn new(envelope: Value, on_complete: OnComplete) -> Self {
        ResponseEvents {
            response: envelope,
            sequence: 0,
            started: false,
            ended: false,
            current: None,
            finish_reason: None,
            usage: Value::Null,
            on_complete: Some(on_complete),
            settling: None,
        }
    }

    fn emit(&mut self, out: &mut BytesMut, kind: &str, mut event: Value) {
        event["type"] = kind.into();
        event["sequence_number"] = self.sequence.into();
        self.sequence += 1;
        out.extend_from_slice(&sse::named(
            kind,
            &serde_json::to_vec(&event).unwrap_or_default(),
        ));
    }

    fn output_index(&self) -> usize {
        self.response["output"].as_array().map_or(0, Vec::len)
    }

    fn start(&mut self, out: &mut BytesMut) {
        if !self.started {
            self.started = true;
            let response = self.response.clone();
            self.emit(out, "response.created", json!({"response": response}));
            self.emit(out, "response.in_progress", json!({"response": response}));
        }
    }

    /// One normalized chat chunk.
    fn chunk(&mut self, out: &mut BytesMut, chunk: &Value) {
        let parts = ChunkParts::of(chunk);
        if let Some(usage) = parts.usage {
            self.usage = usage.clone();
        }
        if let Some(reason) = parts.finish_reason {
            self.finish_reason = Some(reason.to_owned());
        }
        if let Some(text) = parts.reasoning {
            self.reasoning(out, text);
        }
        if let Some(text) = parts.content {
            self.text(out, text);
        }
        for call in parts.tool_calls {
            self.call(out, call);
        }
    }

    fn reasoning(&mut self, out: &mut BytesMut, delta: &str) {
        if !matches!(self.current, Some(Item::Reasoning { .. })) {
            self.close(out);
            let id = new_id("rs");
            let index = self.output_index();
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": index,
                "item": {"type": "reasoning", "id": id, "summary": []}}),
            );
            self.emit(out, "response.reasoning_summary_part.added", json!({"item_id": id,
                "output_index": index, "summary_index": 0, "part": {"type": "summary_text", "text": ""}}));
            self.current = Some(Item::Reasoning {
                id,
                text: String::new(),
            });
        }
        let index = self.output_index();
        if let Some(Item::Reasoning { id, text }) = &mut self.current {
            text.push_str(delta);
            let id = id.clone();
            self.emit(
                out,
                "response.reasoning_summary_text.delta",
                json!({"item_id": id,
                "output_index": index, "summary_index": 0, "delta": delta}),
            );
        }
    }

    fn text(&mut self, out: &mut BytesMut, delta: &str) {
        if !matches!(self.current, Some(Item::Message { .. })) {
            self.close(out);
            let id = new_id("msg");
            let index = self.output_index();
            self.emit(out, "response.output_item.added", json!({"output_index": index,
                "item": {"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []}}));
            self.emit(out, "response.content_part.added", json!({"item_id": id, "output_index": index,
                "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}));
            self.current = Some(Item::Message {
                id,
                text: String::new(),
            });
        }
        let index = self.output_index();
        if let Some(Item::Message { id, text }) = &mut self.current {
            text.push_str(delta);
            let id = id.clone();
            self.emit(
                out,
                "response.output_text.delta",
                json!({"item_id": id,
                "output_index": index, "content_index": 0, "delta": delta}),
            );
        }
    }

    fn call(&mut self, out: &mut BytesMut, call: &Value) {
        let tool_index = call["index"].as_u64().unwrap_or(0);
        let same = matches!(&self.current, Some(Item::Call { index, .. }) if *index == tool_index);
        if !same {
            self.close(out);
            let id = new_id("fc");
            let call_id = call["id"]
                .as_str()
                .map_or_else(|| new_id("call"), str::to_owned);
            let name = call["function"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let index = self.output_index();
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": index,
                "item": {"type": "function_call", "id": id, "call_id": call_id, "name": name,
                    "arguments": "", "status": "in_progress"}}),
            );
            self.current = Some(Item::Call {
                index: tool_index,
                id,
                call_id,
                name,
                arguments: String::new(),
            });
        }
        let Some(fragment) = call["function"]["arguments"]
            .as_str()
            .filter(|a| !a.is_empty())
        else {
            return;
        };
        let index = self.output_index();
        if let Some(Item::Call { id, arguments, .. }) = &mut self.current {
            arguments.push_str(fragment);
            let id = id.clone();
            self.emit(
                out,
                "response.function_call_arguments.delta",
                json!({"item_id": id,
                "output_index": index, "delta": fragment}),
            );
        }
    }

    /// Ends the item being streamed, if any, and adds it to the output.
    fn close(&mut self, out: &mut BytesMut) {
        let Some(item) = self.current.take() else {
            return;
        };
        let index = self.output_index();
        let done = match item {
            Item::Reasoning { id, text } => {
                let part = json!({"type": "summary_text", "text": text});
                self.emit(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id,
                    "output_index": index, "summary_index": 0, "text": text}),
                );
                self.emit(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id,
                    "output_index": index, "summary_index": 0, "part": part}),
                );
                json!({"type": "reasoning", "id": id, "summary": [part]})
            }
            Item::Message { id, text } => {
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                self.emit(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id,
                    "output_index": index, "content_index": 0, "text": text}),
                );
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id,
                    "output_index": index, "content_index": 0, "part": part}),
                );
                json!({"type": "message", "id": id, "status": "completed", "role": "assistant",
                    "content": [part]})
            }
            Item::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            } => {
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": id,
                    "output_index": index, "arguments": arguments}),
                );
                json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
                    "arguments": arguments, "status": "completed"})
            }
        };
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": done}),
        );
        if let Some(output) = self.response["output"].as_array_mut() {
            output.push(done);
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        self.close(out);
        self.ended = true;
        let incomplete = match self.finish_reason.as_deref() {
            Some("length") => Some("max_output_tokens"),
            Some("content_filter") => Some("content_filter"),
            _ => None,
        };
        self.response["status"] = if incomplete.is_some() {
            "incomplete"
        } else {
            "completed"
        }
        .into();
        self.response["incomplete_details"] =
            incomplete.map_or(Value::Null, |r| json!({"reason": r}));
        self.response["usage"] = usage(&self.usage);
        let response = self.response.clone();
        let kind = if incomplete.is_some() {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit(out, kind, json!({"response": response}));
        if let Some(on_complete) = self.on_complete.take() {
            self.settling = on_complete(response);
        }
    }
}

impl StreamEncoder for ResponseEvents {
    fn encode(&mut self, events: Bytes) -> Bytes {
        let mut out = BytesMut::new();
        self.start(&mut out);
        for payload in sse::payloads(&events) {
            if self.ended {
                break;
            }
            if payload == b"[DONE]" {
                self.finish(&mut out);
            } else if let Ok(chunk) = serde_json::from_slice::<Value>(payload) {
                self.chunk(&mut out, &chunk);
            }
        }
        out.freeze()
    }

    fn settle(&mut self) -> Option<BoxFuture<'static, ()>> {
        self.settling.take()
    }

    /// A built-in call becomes a `function_call` item when it starts and a
    /// `function_call_output` item when it ends, each added and done at once.
    fn tool(&mut self, event: &ToolEvent) -> Bytes {
        let mut out = BytesMut::new();
        if self.ended {
            return out.freeze();
        }
        self.start(&mut out);
        self.close(&mut out);
        let item = match event.status {
            Status::Running => json!({"type": "function_call", "id": new_id("fc"),
                "call_id": event.call_id, "name": event.tool, "arguments": event.arguments,
                "status": "completed"}),
            Status::Completed | Status::Failed => json!({"type": "function_call_output",
                "id": new_id("fco"), "call_id": event.call_id, "output": event.output,
                "status": "completed"}),
        };
        let index = self.output_index();
        let mut added = item.clone();
        if event.status == Status::Running {
            added["arguments"] = "".into();
            added["status"] = "in_progress".into();
        }
        self.emit(
            &mut out,
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        );
        if event.status == Status::Running {
            let id = &item["id"];
            let (delta, done) = (
                json!({"item_id": id, "output_index": index, "delta": event.arguments}),
                json!({"item_id": id, "output_index": index, "arguments": event.arguments}),
            );
            self.emit(&mut out, "response.function_call_arguments.delta", delta);
            self.emit(&mut out, "response.function_call_arguments.done", done);
        }
        self.emit(
            &mut out,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        if let Some(output) = self.response["output"].as_array_mut() {
            output.push(item);
        }
        out.freeze()
    }

    fn fail(&mut self, error: &Value) -> Bytes {
        let mut out = BytesMut::new();
        if self.ended {
            return out.freeze();
        }
        self.start(&mut out);
        self.close(&mut out);
        self.ended = true;
        self.response["status"] = "failed".into();
        let error = &error["error"];
        self.response["error"] = json!({
            "code": error["code"].as_str().unwrap_or("server_error"),
            "message": error["message"],
        });
        let response = self.response.clone();
        self.emit(&mut out, "response.failed", json!({"response": response}));
        out.freeze()
    }
}
