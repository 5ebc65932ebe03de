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

#[cfg(test)]
mod tests {
    use super::*;

    /// Anthropic's documented basic streaming example (messages-streaming).
    const TEXT: &str = r#"event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-20250514", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}

event: message_stop
data: {"type": "message_stop"}
"#;

    /// The documented tool-use example.
    const TOOL_USE: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-opus-4-20250514","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":","}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" let"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"'s"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" check"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" the"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" weather"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" for"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" San"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" Francisco"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":","}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" CA"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":":"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" Francisc"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"o,"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" CA\""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":", "}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"unit\": \"fah"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"renheit\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}
"#;

    /// The documented extended-thinking example.
    const THINKING: &str = r#"event: message_start
data: {"type": "message_start", "message": {"id": "msg_01...", "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-20250514", "stop_reason": null, "stop_sequence": null}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me solve this step by step:\n\n1. First break down 27 * 453"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "\n2. 453 = 400 + 50 + 3"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "\n3. 27 * 400 = 10,800"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "\n4. 27 * 50 = 1,350"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "\n5. 27 * 3 = 81"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "\n6. 10,800 + 1,350 + 81 = 12,231"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds..."}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: content_block_start
data: {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "27 * 453 = 12,231"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 1}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}}

event: message_stop
data: {"type": "message_stop"}
"#;

    const ERROR: &str =
        r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#;

    /// `(event name, data)` of each event in a documented stream.
    fn events(text: &str) -> Vec<(Option<&str>, &str)> {
        text.split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                let mut name = None;
                let mut data = "";
                for line in e.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = Some(n);
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = d;
                    }
                }
                (name, data)
            })
            .collect()
    }

    /// Every payload handed on, `[DONE]` as the string "[DONE]".
    fn run(chunks: &mut ChatChunks, text: &str) -> Vec<Value> {
        let mut out = vec![];
        for (name, data) in events(text) {
            let bytes = chunks.event(name, data);
            for payload in sse::payloads(&bytes) {
                out.push(
                    serde_json::from_slice(payload)
                        .unwrap_or_else(|_| String::from_utf8_lossy(payload).into()),
                );
            }
        }
        out
    }

    fn deltas(out: &[Value]) -> Vec<&Value> {
        out.iter().map(|c| &c["choices"][0]["delta"]).collect()
    }

    fn joined(out: &[Value], field: &str) -> String {
        deltas(out)
            .iter()
            .filter_map(|d| d[field].as_str())
            .collect()
    }

    #[test]
    fn the_documented_text_stream_becomes_chat_chunks_and_done() {
        let mut chunks = ChatChunks::new();
        let out = run(&mut chunks, TEXT);
        // role, two texts, finish, [DONE]: the ping and the block events say nothing.
        assert_eq!(out.len(), 5, "{out:#?}");
        for chunk in &out[..4] {
            assert_eq!(chunk["id"], "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY");
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["model"], "claude-opus-4-20250514");
            assert!(chunk["created"].as_u64().unwrap() > 1_700_000_000);
            assert_eq!(chunk["choices"][0]["index"], 0);
        }
        assert_eq!(
            out[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(joined(&out, "content"), "Hello!");
        assert_eq!(out[1]["choices"][0]["finish_reason"], Value::Null);
        let finish = &out[3];
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert_eq!(finish["choices"][0]["delta"], json!({}));
        assert_eq!(finish["usage"]["prompt_tokens"], 25);
        assert_eq!(finish["usage"]["completion_tokens"], 15);
        assert_eq!(finish["usage"]["total_tokens"], 40);
        assert_eq!(out[4], "[DONE]");
        assert!(chunks.done());
    }

    #[test]
    fn tool_arguments_concatenated_across_deltas_equal_the_input() {
        let mut chunks = ChatChunks::default();
        let out = run(&mut chunks, TOOL_USE);
        assert_eq!(
            joined(&out, "content"),
            "Okay, let's check the weather for San Francisco, CA:"
        );
        let calls: Vec<&Value> = deltas(&out)
            .into_iter()
            .filter_map(|d| d["tool_calls"].as_array())
            .flatten()
            .collect();
        assert_eq!(
            calls[0],
            &json!({"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}})
        );
        assert!(calls[1..]
            .iter()
            .all(|c| c["index"] == 0 && c.get("id").is_none()));
        let arguments: String = calls
            .iter()
            .filter_map(|c| c["function"]["arguments"].as_str())
            .collect();
        let input: Value = serde_json::from_str(&arguments).unwrap();
        assert_eq!(
            input,
            json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
        );
        let finish = &out[out.len() - 2];
        assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(finish["usage"]["prompt_tokens"], 472);
        assert_eq!(finish["usage"]["completion_tokens"], 89);
        assert!(chunks.done());
    }

    #[test]
    fn a_second_tool_use_block_is_the_next_tool_call_index() {
        let mut chunks = ChatChunks::new();
        let out = run(
            &mut chunks,
            r#"data: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":1}}}

data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"a","name":"f","input":{}}}

data: {"type":"content_block_stop","index":0}

data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"b","name":"g","input":{}}}

data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{}"}}
"#,
        );
        let calls: Vec<&Value> = deltas(&out)
            .into_iter()
            .filter_map(|d| d["tool_calls"].get(0))
            .collect();
        assert_eq!(calls.len(), 3);
        assert_eq!(
            (calls[0]["index"].as_u64(), calls[0]["id"].as_str()),
            (Some(0), Some("a"))
        );
        assert_eq!(
            (calls[1]["index"].as_u64(), calls[1]["id"].as_str()),
            (Some(1), Some("b"))
        );
        assert_eq!(calls[2]["index"], 1);
        assert!(!chunks.done(), "no message_stop yet");
    }

    #[test]
    fn an_input_given_whole_at_the_start_is_sent_at_the_stop() {
        let mut chunks = ChatChunks::new();
        let out = run(
            &mut chunks,
            r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"a","name":"f","input":{"q":1}}}

data: {"type":"content_block_stop","index":0}
"#,
        );
        assert_eq!(
            out[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"q\":1}"
        );
    }

    #[test]
    fn thinking_streams_as_reasoning_and_ends_as_one_signed_block() {
        let mut chunks = ChatChunks::new();
        let out = run(&mut chunks, THINKING);
        let whole = "Let me solve this step by step:\n\n1. First break down 27 * 453\n2. 453 = 400 + 50 + 3\n3. 27 * 400 = 10,800\n4. 27 * 50 = 1,350\n5. 27 * 3 = 81\n6. 10,800 + 1,350 + 81 = 12,231";
        assert_eq!(joined(&out, "reasoning_content"), whole);
        let blocks: Vec<&Value> = deltas(&out)
            .into_iter()
            .filter(|d| d.get("thinking_blocks").is_some())
            .collect();
        assert_eq!(blocks.len(), 1);
        assert_eq!(
            blocks[0]["thinking_blocks"],
            json!([{"type": "thinking", "thinking": whole,
                "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds..."}])
        );
        assert_eq!(joined(&out, "content"), "27 * 453 = 12,231");
        // The block comes before the answer's text.
        let block_at = out
            .iter()
            .position(|c| c["choices"][0]["delta"].get("thinking_blocks").is_some());
        let text_at = out
            .iter()
            .position(|c| c["choices"][0]["delta"]["content"] == "27 * 453 = 12,231");
        assert!(block_at < text_at);
        // No usage anywhere in this sample: zeros, not a panic.
        let finish = &out[out.len() - 2];
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert_eq!(finish["usage"]["total_tokens"], 0);
        assert_eq!(out[out.len() - 1], "[DONE]");
    }

    #[test]
    fn redacted_thinking_is_sent_whole_at_its_start() {
        let mut chunks = ChatChunks::new();
        let bytes = chunks.event(
            Some("content_block_start"),
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"redacted_thinking","data":"EmwKAhgBEgy3va3pzix"}}"#,
        );
        let chunk: Value = serde_json::from_slice(sse::payloads(&bytes).next().unwrap()).unwrap();
        assert_eq!(
            chunk["choices"][0]["delta"]["thinking_blocks"],
            json!([{"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"}])
        );
        let stop = chunks.event(None, r#"{"type":"content_block_stop","index":0}"#);
        assert!(stop.is_empty());
    }

    #[test]
    fn usage_merges_the_input_side_with_message_delta_and_keeps_cache_counts() {
        let mut chunks = ChatChunks::new();
        let out = run(
            &mut chunks,
            r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_c","model":"claude-sonnet-4-5","usage":{"input_tokens":12,"cache_creation_input_tokens":200,"cache_read_input_tokens":3000,"output_tokens":1}}}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":64,"cache_read_input_tokens":3500}}
"#,
        );
        let finish = &out[1];
        assert_eq!(finish["choices"][0]["finish_reason"], "length");
        let usage = &finish["usage"];
        assert_eq!(usage["prompt_tokens"], 12 + 200 + 3500);
        assert_eq!(usage["completion_tokens"], 64);
        assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 3500);
        assert_eq!(usage["cache_creation_input_tokens"], 200);
    }

    #[test]
    fn stop_reasons_become_finish_reasons() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
        ] {
            let mut chunks = ChatChunks::new();
            let data = json!({"type": "message_delta", "delta": {"stop_reason": stop}}).to_string();
            let bytes = chunks.event(Some("message_delta"), &data);
            let chunk: Value =
                serde_json::from_slice(sse::payloads(&bytes).next().unwrap()).unwrap();
            assert_eq!(chunk["choices"][0]["finish_reason"], finish, "{stop}");
        }
    }

    #[test]
    fn an_error_event_is_handed_on_as_received() {
        let mut chunks = ChatChunks::new();
        let bytes = chunks.event(Some("error"), ERROR);
        assert_eq!(bytes, format!("data: {ERROR}\n\n"));
        // Without its name too: the payload's type says what it is.
        assert_eq!(chunks.event(None, ERROR), format!("data: {ERROR}\n\n"));
        assert!(!chunks.done());
    }

    #[test]
    fn ping_and_unknown_events_yield_nothing() {
        let mut chunks = ChatChunks::new();
        assert!(chunks.event(Some("ping"), r#"{"type": "ping"}"#).is_empty());
        assert!(chunks.event(None, r#"{"type": "ping"}"#).is_empty());
        assert!(chunks
            .event(Some("future_event"), r#"{"type": "future_event"}"#)
            .is_empty());
        let citation = r#"{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":{"type":"char_location"}}}"#;
        chunks.event(
            None,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        );
        assert!(chunks.event(None, citation).is_empty());
    }

    #[test]
    fn the_payload_type_wins_over_the_event_name() {
        let mut chunks = ChatChunks::new();
        let bytes = chunks.event(Some("ping"), r#"{"type":"message_stop"}"#);
        assert_eq!(bytes, sse::DONE);
        assert!(chunks.done());
        assert!(
            chunks.event(None, r#"{"type":"message_stop"}"#).is_empty(),
            "one [DONE]"
        );
    }

    #[test]
    fn garbage_never_panics_and_yields_nothing() {
        let mut chunks = ChatChunks::new();
        for (name, data) in [
            (None, "null"),
            (None, "[]"),
            (None, ""),
            (None, "{"),
            (Some("message_start"), "null"),
            (Some("message_start"), "42"),
            (None, r#"{"type":"content_block_delta"}"#),
            (
                None,
                r#"{"type":"content_block_delta","index":"x","delta":[]}"#,
            ),
            (
                None,
                r#"{"type":"content_block_delta","index":7,"delta":{"type":"input_json_delta","partial_json":"{"}}"#,
            ),
            (
                None,
                r#"{"type":"content_block_delta","index":7,"delta":{"type":"signature_delta","signature":"s"}}"#,
            ),
            (None, r#"{"type":"content_block_start"}"#),
            (
                None,
                r#"{"type":"content_block_start","index":18446744073709551615,"content_block":null}"#,
            ),
            (None, r#"{"type":"content_block_stop"}"#),
            (None, r#"{"type":"content_block_stop","index":3}"#),
            (None, r#"{"type":7}"#),
        ] {
            assert!(chunks.event(name, data).is_empty(), "{name:?} {data}");
        }
        // Odd but well-typed events still make well-formed chunks.
        let start = chunks.event(None, r#"{"type":"message_start","message":"no"}"#);
        let chunk: Value = serde_json::from_slice(sse::payloads(&start).next().unwrap()).unwrap();
        assert!(chunk["id"].as_str().unwrap().starts_with("msg_"));
        let finish = chunks.event(None, r#"{"type":"message_delta","delta":null,"usage":"x"}"#);
        let chunk: Value = serde_json::from_slice(sse::payloads(&finish).next().unwrap()).unwrap();
        assert_eq!(chunk["choices"][0]["finish_reason"], "stop");
        assert!(!chunks.done());
    }
}
