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
use crate::wire::encode::{ChunkParts, StreamEncoder};
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
        let parts = ChunkParts::of(chunk);
        if let Some(usage) = parts.usage {
            self.usage = usage.clone();
        }
        if let Some(reason) = parts.finish_reason {
            self.finish_reason = Some(reason.to_owned());
        }
        if let Some(text) = parts.reasoning {
            self.open_as(
                out,
                Kind::Thinking,
                || json!({"type": "thinking", "thinking": "", "signature": ""}),
            );
            self.delta(out, json!({"type": "thinking_delta", "thinking": text}));
        }
        for block in parts.thinking_blocks {
            self.signed(out, block);
        }
        if let Some(text) = parts.content {
            self.open_as(out, Kind::Text, || json!({"type": "text", "text": ""}));
            self.delta(out, json!({"type": "text_delta", "text": text}));
        }
        for call in parts.tool_calls {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(delta: Value) -> String {
        let chunk = json!({"id": "chatcmpl-xyz", "object": "chat.completion.chunk",
            "model": "upstream-model", "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
        format!("data: {chunk}\n\n")
    }

    fn call(index: u64, id: Option<&str>, name: Option<&str>, arguments: &str) -> String {
        let mut function = json!({"arguments": arguments});
        if let Some(name) = name {
            function["name"] = name.into();
        }
        let mut call = json!({"index": index, "function": function});
        if let Some(id) = id {
            call["id"] = id.into();
            call["type"] = "function".into();
        }
        chunk(json!({"tool_calls": [call]}))
    }

    /// The events in `bytes`, each checked to be `event: <type>` with data
    /// of that `type`.
    fn events(bytes: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(bytes).unwrap();
        text.split_terminator("\n\n")
            .map(|event| {
                let (name, data) = event
                    .strip_prefix("event: ")
                    .and_then(|e| e.split_once("\ndata: "))
                    .unwrap_or_else(|| panic!("not a named event: {event:?}"));
                let data: Value = serde_json::from_str(data).unwrap();
                assert_eq!(data["type"], name);
                data
            })
            .collect()
    }

    fn run(encoder: &mut MessagesEvents, buffers: &[String]) -> Vec<Value> {
        let mut out = vec![];
        for buffer in buffers {
            out.extend_from_slice(&encoder.encode(Bytes::from(buffer.clone())));
        }
        events(&out)
    }

    #[test]
    fn a_chat_stream_becomes_anthropics_event_sequence() {
        let usage = json!({"id": "chatcmpl-xyz", "choices": [], "usage": {
            "prompt_tokens": 2100, "completion_tokens": 90, "total_tokens": 2190,
            "prompt_tokens_details": {"cached_tokens": 2000}, "cache_creation_input_tokens": 0}});
        let finish = json!({"id": "chatcmpl-xyz", "choices": [
            {"index": 0, "delta": {}, "finish_reason": "tool_calls"}]});
        let buffers = [
            chunk(json!({"role": "assistant", "content": ""})),
            chunk(json!({"reasoning_content": "Two files"}))
                + &chunk(json!({"reasoning_content": " to read."})),
            chunk(json!({"thinking_blocks": [
                {"type": "thinking", "thinking": "Two files to read.", "signature": "sig-abc"}]})),
            chunk(json!({"content": "Reading"})),
            chunk(json!({"content": " both."})),
            call(0, Some("toolu_1"), Some("Read"), ""),
            call(0, None, None, "{\"file_pa"),
            call(0, None, None, "th\": \"a.rs\"}"),
            call(1, Some("toolu_2"), Some("Read"), "{\"file_path\":"),
            call(1, None, None, " \"b.rs\"}"),
            format!("data: {finish}\n\n"),
            format!("data: {usage}\n\ndata: [DONE]\n\n"),
        ];
        let mut encoder = MessagesEvents::new("claude-sonnet-4-5");
        let events = run(&mut encoder, &buffers);
        let start = |index: usize, block: Value| json!({"type": "content_block_start", "index": index, "content_block": block});
        let delta = |index: usize, delta: Value| json!({"type": "content_block_delta", "index": index, "delta": delta});
        let stop = |index: usize| json!({"type": "content_block_stop", "index": index});
        let expected = vec![
            json!({"type": "message_start", "message": {"id": "msg_xyz", "type": "message",
                "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}),
            start(
                0,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
            ),
            delta(
                0,
                json!({"type": "thinking_delta", "thinking": "Two files"}),
            ),
            delta(
                0,
                json!({"type": "thinking_delta", "thinking": " to read."}),
            ),
            delta(
                0,
                json!({"type": "signature_delta", "signature": "sig-abc"}),
            ),
            stop(0),
            start(1, json!({"type": "text", "text": ""})),
            delta(1, json!({"type": "text_delta", "text": "Reading"})),
            delta(1, json!({"type": "text_delta", "text": " both."})),
            stop(1),
            start(
                2,
                json!({"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}),
            ),
            delta(
                2,
                json!({"type": "input_json_delta", "partial_json": "{\"file_pa"}),
            ),
            delta(
                2,
                json!({"type": "input_json_delta", "partial_json": "th\": \"a.rs\"}"}),
            ),
            stop(2),
            start(
                3,
                json!({"type": "tool_use", "id": "toolu_2", "name": "Read", "input": {}}),
            ),
            delta(
                3,
                json!({"type": "input_json_delta", "partial_json": "{\"file_path\":"}),
            ),
            delta(
                3,
                json!({"type": "input_json_delta", "partial_json": " \"b.rs\"}"}),
            ),
            stop(3),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"input_tokens": 100, "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 2000, "output_tokens": 90}}),
            json!({"type": "message_stop"}),
        ];
        assert_eq!(events, expected);

        // What a client accumulates from the partial JSON is each call's input.
        for (index, path) in [(2, "a.rs"), (3, "b.rs")] {
            let json: String = events
                .iter()
                .filter(|e| e["index"] == index && e["delta"]["type"] == "input_json_delta")
                .filter_map(|e| e["delta"]["partial_json"].as_str())
                .collect();
            let input: Value = serde_json::from_str(&json).unwrap();
            assert_eq!(input, json!({"file_path": path}));
        }
        assert!(encoder
            .encode(Bytes::from(chunk(json!({"content": "late"}))))
            .is_empty());
    }

    #[test]
    fn a_whole_thinking_block_without_streamed_text_is_sent_whole() {
        let mut encoder = MessagesEvents::new("m");
        let events = run(
            &mut encoder,
            &[
                chunk(json!({"content": "a"})),
                chunk(json!({"thinking_blocks": [
                    {"type": "thinking", "thinking": "t", "signature": "s"},
                    {"type": "redacted_thinking", "data": "opaque"}]})),
                "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n".into(),
            ],
        );
        let kinds: Vec<(&str, &Value)> = events
            .iter()
            .map(|e| (e["type"].as_str().unwrap(), &e["index"]))
            .collect();
        assert_eq!(
            kinds,
            [
                ("message_start", &Value::Null),
                ("content_block_start", &json!(0)),
                ("content_block_delta", &json!(0)),
                ("content_block_stop", &json!(0)),
                ("content_block_start", &json!(1)),
                ("content_block_delta", &json!(1)),
                ("content_block_delta", &json!(1)),
                ("content_block_stop", &json!(1)),
                ("content_block_start", &json!(2)),
                ("content_block_stop", &json!(2)),
                ("message_delta", &Value::Null),
                ("message_stop", &Value::Null),
            ]
        );
        assert_eq!(
            events[5]["delta"],
            json!({"type": "thinking_delta", "thinking": "t"})
        );
        assert_eq!(
            events[6]["delta"],
            json!({"type": "signature_delta", "signature": "s"})
        );
        assert_eq!(
            events[8]["content_block"],
            json!({"type": "redacted_thinking", "data": "opaque"})
        );
        assert_eq!(events[10]["delta"]["stop_reason"], "end_turn");
        assert_eq!(events[10]["usage"]["output_tokens"], 0);
    }

    #[test]
    fn a_failure_mid_block_closes_it_then_errors_and_ends_the_stream() {
        let mut encoder = MessagesEvents::new("m");
        let mut out = encoder
            .encode(Bytes::from(call(0, Some("toolu_1"), Some("f"), "{\"a\"")))
            .to_vec();
        out.extend_from_slice(&encoder.fail(&json!({"error": {"message": "upstream broke",
            "type": "server_error", "code": "upstream_error"}})));
        let events = events(&out);
        let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "error"
            ]
        );
        assert_eq!(
            events[4],
            json!({"type": "error", "error": {"type": "api_error", "message": "upstream broke"}})
        );
        assert!(encoder.encode(Bytes::from_static(sse::DONE)).is_empty());
        assert!(encoder.fail(&json!({})).is_empty());
    }

    #[test]
    fn an_error_chunk_fails_the_stream() {
        let mut encoder = MessagesEvents::new("m");
        let error = json!({"error": {"message": "slow down", "type": "rate_limit_error"}});
        let events = run(
            &mut encoder,
            &[chunk(json!({"content": "hi"})) + &format!("data: {error}\n\ndata: [DONE]\n\n")],
        );
        let last = events.last().unwrap();
        assert_eq!(
            last["error"],
            json!({"type": "rate_limit_error", "message": "slow down"})
        );
        assert_eq!(events[events.len() - 2]["type"], "content_block_stop");
        assert!(events.iter().all(|e| e["type"] != "message_stop"));
    }

    #[test]
    fn agent_tool_progress_is_a_comment() {
        let mut encoder = MessagesEvents::new("m");
        let event = ToolEvent {
            stream: Default::default(),
            tool: "web_search\nevent: x".into(),
            call_id: "c".into(),
            status: Status::Running,
            emoji: String::new(),
            label: String::new(),
            arguments: String::new(),
            output: String::new(),
            duration_ms: None,
        };
        assert_eq!(
            &encoder.tool(&event)[..],
            b": web_search event: x running\n\n"
        );
    }

    #[test]
    fn garbage_never_panics_and_the_end_is_still_well_formed() {
        let mut encoder = MessagesEvents::new("m");
        for garbage in [
            "data: not json\n\n",
            "data: 5\n\ndata: []\n\ndata: null\n\n",
            "data: {\"choices\":\"x\"}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":5,\"tool_calls\":[null,5,{\"index\":-1}],\"thinking_blocks\":[1,{}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":7}}]}}],\"usage\":5}\n\n",
            "event: x\n\n: comment\n\n\n\ndata:",
        ] {
            encoder.encode(Bytes::from(garbage));
        }
        let events = events(&encoder.encode(Bytes::from_static(sse::DONE)));
        let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(
            kinds,
            ["content_block_stop", "message_delta", "message_stop"]
        );
        assert_eq!(events[1]["delta"]["stop_reason"], "tool_use");
    }
}
