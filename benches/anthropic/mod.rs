//! Inputs and loop bodies of the `anthropic` benchmarks, shared by
//! `hot_path` (criterion, wall clock) and `anthropic_count` (a driver for
//! callgrind), so both count exactly the same work.
//!
//! The inputs are one agent exchange seen both ways: a Claude-Code-like
//! Messages request and its chat equivalent, one answer as Anthropic and as
//! OpenAI send it, and one streamed answer as ~100 events of each.

// Each of the two bench crates that include this module uses a different
// part of it.
#![allow(dead_code)]

use bytes::Bytes;
use serde_json::{json, Map, Value};

use hermes_proxy::body;
use hermes_proxy::provider::normalize_event;
use hermes_proxy::wire::chat::{parse_request, Endpoint};
use hermes_proxy::wire::encode::StreamEncoder;
use hermes_proxy::wire::messages::ingress::{self, MessagesEvents};
use hermes_proxy::wire::messages::upstream::{self, ChatChunks};
use hermes_proxy::wire::messages::with_model;
use hermes_proxy::wire::sse::{SseEvent, SseReader};

pub const MODEL: &str = "claude-sonnet-4-5";

/// A coding agent's request as Claude Code sends it: system blocks with a
/// cache breakpoint, tools with JSON schemas, five rounds of tool use.
fn messages_request() -> Value {
    let schema = |props: Value, required: &[&str]| {
        json!({"type": "object", "properties": props, "required": required,
            "additionalProperties": false, "$schema": "http://json-schema.org/draft-07/schema#"})
    };
    let tools = json!([
        {"name": "Read", "description": "Reads a file from the local filesystem. The file_path must be absolute.",
         "input_schema": schema(json!({"file_path": {"type": "string", "description": "The absolute path to the file to read"},
            "offset": {"type": "number", "description": "The line number to start reading from"},
            "limit": {"type": "number", "description": "The number of lines to read"}}), &["file_path"])},
        {"name": "Edit", "description": "Performs exact string replacements in files.",
         "input_schema": schema(json!({"file_path": {"type": "string"}, "old_string": {"type": "string"},
            "new_string": {"type": "string"}, "replace_all": {"type": "boolean", "default": false}}),
            &["file_path", "old_string", "new_string"])},
        {"name": "Bash", "description": "Executes a given bash command in a persistent shell session with optional timeout.",
         "input_schema": schema(json!({"command": {"type": "string", "description": "The command to execute"},
            "timeout": {"type": "number", "description": "Optional timeout in milliseconds (max 600000)"}}), &["command"]),
         "cache_control": {"type": "ephemeral"}},
    ]);
    let calls = [
        ("Bash", json!({"command": "cargo test -p parser 2>&1 | tail -20"}),
         "test result: FAILED. 41 passed; 2 failed; 0 ignored\n\nfailures:\n    parser::tests::nested_blocks\n    parser::tests::trailing_comma"),
        ("Read", json!({"file_path": "/home/dev/project/parser/src/lib.rs", "offset": 120, "limit": 40}),
         "   120\tfn block(&mut self) -> Result<Block> {\n   121\t    self.expect(Token::LBrace)?;\n   122\t    let mut items = Vec::new();\n   123\t    while !self.at(Token::RBrace) {\n   124\t        items.push(self.item()?);\n   125\t    }\n   126\t    Ok(Block { items })\n   127\t}"),
        ("Edit", json!({"file_path": "/home/dev/project/parser/src/lib.rs", "old_string": "        items.push(self.item()?);\n",
            "new_string": "        items.push(self.item()?);\n        self.eat(Token::Comma);\n"}),
         "The file /home/dev/project/parser/src/lib.rs has been updated."),
        ("Bash", json!({"command": "cargo test -p parser nested_blocks"}),
         "running 1 test\ntest parser::tests::nested_blocks ... ok\n\ntest result: ok. 1 passed; 0 failed"),
        ("Bash", json!({"command": "cargo test -p parser 2>&1 | tail -3"}),
         "test result: ok. 43 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out"),
    ];
    let mut messages = vec![json!({"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>As you answer the user's questions, you can use the following context: the project is a Rust workspace.</system-reminder>"},
        {"type": "text", "text": "The parser tests fail since the last change. Find out why and fix it."},
    ]})];
    for (i, (name, input, result)) in calls.into_iter().enumerate() {
        let id = format!("toolu_01{i:02}A7b9XkQeVt3nM2pL8sRw");
        messages.push(json!({"role": "assistant", "content": [
            {"type": "text", "text": format!("Step {}: let me check with {name}.", i + 1)},
            {"type": "tool_use", "id": id, "name": name, "input": input},
        ]}));
        let mut result = json!({"type": "tool_result", "tool_use_id": id, "content": result});
        if i == 4 {
            result["cache_control"] = json!({"type": "ephemeral"});
        }
        messages.push(json!({"role": "user", "content": [result]}));
    }
    json!({
        "model": MODEL,
        "max_tokens": 32000,
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
            {"type": "text", "text": "You are an interactive CLI tool that helps users with software engineering tasks. Use the instructions below and the tools available to you to assist the user. Be concise: answer in fewer than 4 lines unless asked for detail. When you run a non-trivial bash command, explain what it does. Never commit unless asked. Prefer editing existing files to creating new ones. Follow the conventions of the code around you.",
             "cache_control": {"type": "ephemeral"}},
        ],
        "messages": messages,
        "tools": tools,
        "metadata": {"user_id": "user_3f1c9a_account__session_7b2e4d10"},
        "temperature": 1,
        "stream": true,
    })
}

/// What a Messages answer says: one sentence, one tool call.
const TEXT: &str = "The trailing comma after the last item was never consumed, so the block parser stopped early. I added `self.eat(Token::Comma)` after each item; all 43 tests pass now. Let me run the whole suite once more to be sure nothing else depends on the old behaviour.";
const TOOL_ID: &str = "toolu_01QmX4cV8nB2wZ5yT7uR9pLs";
const TOOL_INPUT: &str =
    r#"{"command": "cargo test --workspace 2>&1 | tail -5", "timeout": 600000}"#;

fn anthropic_answer() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": MODEL,
        "content": [
            {"type": "text", "text": TEXT},
            {"type": "tool_use", "id": TOOL_ID, "name": "Bash",
             "input": serde_json::from_str::<Value>(TOOL_INPUT).unwrap()},
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 12, "cache_creation_input_tokens": 311,
            "cache_read_input_tokens": 3208, "output_tokens": 97, "service_tier": "standard"},
    }))
    .unwrap()
}

fn chat_completion() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion",
        "created": 1_730_000_000, "model": "gpt-4.1-2025-04-14",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT, "refusal": null,
            "tool_calls": [{"id": "call_Y8Lq3oZc9PbD1xN6vT2wKe4R", "type": "function",
                "function": {"name": "Bash", "arguments": TOOL_INPUT}}],
            "annotations": []}, "logprobs": null, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 3531, "completion_tokens": 97, "total_tokens": 3628,
            "prompt_tokens_details": {"cached_tokens": 3208, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
        "service_tier": "default", "system_fingerprint": "fp_b3f1157249",
    }))
    .unwrap()
}

/// `TEXT` as a model streams it: a few characters per delta.
fn text_pieces() -> Vec<&'static str> {
    let mut pieces = vec![];
    let mut rest = TEXT;
    while !rest.is_empty() {
        let cut = rest.char_indices().nth(3).map_or(rest.len(), |(i, _)| i);
        pieces.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    pieces
}

/// `TOOL_INPUT` in the pieces `input_json_delta` / chat arguments arrive in.
fn json_pieces() -> Vec<&'static str> {
    TOOL_INPUT
        .as_bytes()
        .chunks(6)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect()
}

fn named(out: &mut String, event: &str, data: Value) {
    out.push_str(&format!("event: {event}\ndata: {data}\n\n"));
}

/// The answer as an Anthropic stream: message_start, a ping, the text
/// block's deltas, the tool_use block's input_json_delta pieces,
/// message_delta and message_stop.
fn anthropic_stream() -> Bytes {
    let mut s = String::new();
    named(
        &mut s,
        "message_start",
        json!({"type": "message_start", "message": {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": MODEL,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 12, "cache_creation_input_tokens": 311,
            "cache_read_input_tokens": 3208, "output_tokens": 1}}}),
    );
    named(
        &mut s,
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    named(&mut s, "ping", json!({"type": "ping"}));
    for piece in text_pieces() {
        named(&mut s, "content_block_delta", text_delta(0, piece));
    }
    named(
        &mut s,
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    named(
        &mut s,
        "content_block_start",
        json!({"type": "content_block_start", "index": 1,
        "content_block": {"type": "tool_use", "id": TOOL_ID, "name": "Bash", "input": {}}}),
    );
    for piece in json_pieces() {
        named(
            &mut s,
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": piece}}),
        );
    }
    named(
        &mut s,
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 1}),
    );
    named(
        &mut s,
        "message_delta",
        json!({"type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 97}}),
    );
    named(&mut s, "message_stop", json!({"type": "message_stop"}));
    Bytes::from(s)
}

fn text_delta(index: u64, text: &str) -> Value {
    json!({"type": "content_block_delta", "index": index,
        "delta": {"type": "text_delta", "text": text}})
}

/// A chat chunk as OpenAI sends it, around `delta`, to a request without
/// `stream_options.include_usage` (with it, OpenAI adds `"usage":null`).
fn chat_chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({"id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion.chunk",
        "created": 1_730_000_000, "model": "gpt-4.1-2025-04-14", "service_tier": "default",
        "system_fingerprint": "fp_b3f1157249",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
}

/// The same answer as an OpenAI stream: role, the text's deltas, the tool
/// call's argument pieces, finish, the usage chunk and `[DONE]`.
fn chat_stream() -> Bytes {
    let mut s = String::new();
    let mut push = |v: Value| s.push_str(&format!("data: {v}\n\n"));
    push(chat_chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    ));
    for piece in text_pieces() {
        push(chat_chunk(json!({"content": piece}), None));
    }
    push(chat_chunk(
        json!({"tool_calls": [{"index": 0, "id": "call_Y8Lq3oZc9PbD1xN6vT2wKe4R",
        "type": "function", "function": {"name": "Bash", "arguments": ""}}]}),
        None,
    ));
    for piece in json_pieces() {
        push(chat_chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            None,
        ));
    }
    push(chat_chunk(json!({}), Some("tool_calls")));
    let mut usage = chat_chunk(json!({}), None);
    usage["choices"] = json!([]);
    usage["usage"] = json!({"prompt_tokens": 3531, "completion_tokens": 97, "total_tokens": 3628,
        "prompt_tokens_details": {"cached_tokens": 3208, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}});
    push(usage);
    s.push_str("data: [DONE]\n\n");
    Bytes::from(s)
}

pub struct Inputs {
    /// The Messages request body.
    pub messages: Vec<u8>,
    /// Its chat equivalent (what ingress makes of it), as a body.
    pub chat: bytes::Bytes,
    /// The same, parsed (what reaches an Anthropic upstream's translation).
    pub chat_map: Map<String, Value>,
    pub anthropic_answer: Vec<u8>,
    pub completion: Vec<u8>,
    pub anthropic_stream: Bytes,
    pub chat_stream: Bytes,
    /// One plain text delta each way, as the per-chunk loops take it.
    pub text_event: String,
    pub chat_content_chunk: String,
    /// The same chunk with OpenAI's `"usage":null`, as a Messages client's
    /// streams get it: ingress always asks for `include_usage`.
    pub chat_content_chunk_usage_null: String,
    pub chat_content_event: Bytes,
}

impl Inputs {
    pub fn new() -> Self {
        let messages = serde_json::to_vec(&messages_request()).unwrap();
        let mut chat_map = ingress::parse(&messages).unwrap().chat;
        chat_map.remove("stream");
        chat_map.remove("stream_options");
        let chat = serde_json::to_vec(&chat_map).unwrap().into();
        let chat_content_chunk = chat_chunk(json!({"content": " the"}), None).to_string();
        let mut usage_null = chat_chunk(json!({"content": " the"}), None);
        usage_null["usage"] = Value::Null;
        Inputs {
            chat_content_chunk_usage_null: usage_null.to_string(),
            chat_content_event: Bytes::from(format!("data: {chat_content_chunk}\n\n")),
            chat_content_chunk,
            text_event: text_delta(0, " the").to_string(),
            messages,
            chat,
            chat_map,
            anthropic_answer: anthropic_answer(),
            completion: chat_completion(),
            anthropic_stream: anthropic_stream(),
            chat_stream: chat_stream(),
        }
    }

    /// Events in each stream (data events; `[DONE]` counted).
    pub fn stream_events(stream: &Bytes) -> usize {
        stream.windows(6).filter(|w| w == b"data: ").count()
    }

    // Per request.

    /// A chat client to an OpenAI upstream: parse and check, serialize.
    pub fn chat_in(&self) -> Vec<u8> {
        let mut body = parse_request(self.chat.clone(), Endpoint::Chat).unwrap();
        body.set_model(MODEL);
        body.to_vec()
    }

    /// To an Anthropic upstream: the parsed chat request translated, serialized.
    pub fn to_upstream(&self) -> Vec<u8> {
        serde_json::to_vec(&upstream::request(&self.chat_map)).unwrap()
    }

    /// A Messages client: parse, check and translate, serialize the chat.
    pub fn ingress_in(&self) -> Vec<u8> {
        let request = ingress::parse(&self.messages).unwrap();
        serde_json::to_vec(&request.chat).unwrap()
    }

    /// A Messages client to an Anthropic upstream: only `model` rewritten.
    pub fn passthrough(&self) -> Vec<u8> {
        with_model(&self.messages, "claude-opus-4-1").unwrap()
    }

    // Per answer. Each parses the upstream's JSON into a tree and serializes
    // what the client gets; the proxy's own OpenAI path skims the answer
    // instead (usage and error fields only, bytes forwarded untouched), so
    // `openai_answer` is an upper bound of that path.

    pub fn openai_answer(&self) -> Vec<u8> {
        let answer: Value = serde_json::from_slice(&self.completion).unwrap();
        serde_json::to_vec(&answer).unwrap()
    }

    pub fn upstream_answer(&self) -> Vec<u8> {
        let answer: Value = serde_json::from_slice(&self.anthropic_answer).unwrap();
        serde_json::to_vec(&upstream::answer(&answer)).unwrap()
    }

    pub fn ingress_answer(&self) -> Vec<u8> {
        let completion: Value = serde_json::from_slice(&self.completion).unwrap();
        serde_json::to_vec(&ingress::answer(&completion, MODEL)).unwrap()
    }

    // Per chunk: a plain text delta, mid-stream.

    pub fn normalize_chunk(&self) -> Bytes {
        normalize_event(&self.chat_content_chunk).unwrap().0
    }

    /// `"usage"` in a chunk defeats `normalize_event`'s no-parse path even
    /// when null.
    pub fn normalize_chunk_usage_null(&self) -> Bytes {
        normalize_event(&self.chat_content_chunk_usage_null)
            .unwrap()
            .0
    }

    /// A `ChatChunks` past message_start and the text block's start.
    pub fn chat_chunks(&self) -> ChatChunks {
        let mut chunks = ChatChunks::new();
        for event in self.anthropic_stream.split(|b| *b == b'\n') {
            if let Some(data) = event.strip_prefix(b"data: ") {
                let data = std::str::from_utf8(data).unwrap();
                chunks.event(None, data);
                if data.contains("content_block_start") {
                    break;
                }
            }
        }
        chunks
    }

    pub fn upstream_chunk(&self, chunks: &mut ChatChunks) -> Bytes {
        chunks.event(Some("content_block_delta"), &self.text_event)
    }

    /// A `MessagesEvents` past message_start and the text block's start.
    pub fn messages_events(&self) -> MessagesEvents {
        let mut events = MessagesEvents::new(MODEL);
        events.encode(self.chat_content_event.clone());
        events
    }

    pub fn ingress_chunk(&self, events: &mut MessagesEvents) -> Bytes {
        events.encode(self.chat_content_event.clone())
    }

    // Whole streams, read from an upstream body as the relay reads them.

    /// A chat stream relayed to a chat client: read + normalize each event.
    pub async fn openai_stream(&self) -> usize {
        let mut reader = SseReader::new(body::full(self.chat_stream.clone()), 8 << 20);
        let mut out = 0;
        while let Some(SseEvent::Data { data, .. }) = reader.next().await.unwrap() {
            if data == "[DONE]" {
                break;
            }
            out += normalize_event(&data).unwrap().0.len();
        }
        out
    }

    /// An Anthropic stream to a chat client: read + translate each event.
    pub async fn upstream_stream(&self) -> usize {
        let mut reader = SseReader::new(body::full(self.anthropic_stream.clone()), 8 << 20);
        let mut chunks = ChatChunks::new();
        let mut out = 0;
        while let Some(SseEvent::Data { event, data }) = reader.next().await.unwrap() {
            out += chunks.event(event.as_deref(), &data).len();
            if chunks.done() {
                break;
            }
        }
        out
    }

    /// A chat stream to a Messages client: read + normalize + encode each
    /// event (the relay normalizes before the client's encoder).
    pub async fn ingress_stream(&self) -> usize {
        let mut reader = SseReader::new(body::full(self.chat_stream.clone()), 8 << 20);
        let mut events = MessagesEvents::new(MODEL);
        let mut out = 0;
        while let Some(SseEvent::Data { data, .. }) = reader.next().await.unwrap() {
            let chunk = if data == "[DONE]" {
                Bytes::from_static(b"data: [DONE]\n\n")
            } else {
                normalize_event(&data).unwrap().0
            };
            out += events.encode(chunk).len();
            if data == "[DONE]" {
                break;
            }
        }
        out
    }
}
