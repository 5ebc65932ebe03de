//! Replays of the samples in `tests/samples/README.md`: Anthropic Messages
//! answers, streams and errors, and the reasoning fields of the OpenAI-shaped
//! providers (Kimi's `reasoning_content`, OpenRouter's `reasoning_details`,
//! vLLM's and Ollama's `reasoning`). Each function names the sample it plays;
//! the README gives its source. Re-exported through `mock_upstream::wire`, so
//! tests write `wire::anthropic_tool_use_stream(...)` beside the older samples.
//!
//! Also the two checks behind `MockUpstream::require_reasoning_content` and
//! `MockUpstream::require_thinking_signatures`: what Kimi and Anthropic refuse
//! when a client (or the proxy) drops reasoning from a tool-call turn.

use serde_json::{json, Value};

use super::mock_upstream::{data_event, Reply};

/// `event: <name>\ndata: <json>\n\n`, Anthropic's framing: the event name
/// repeats the payload's `type`.
pub fn anthropic_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn anthropic_error(
    status: u16,
    error_type: &str,
    message: &str,
    request_id: Option<&str>,
) -> Reply {
    let mut body = json!({"type": "error", "error": {"type": error_type, "message": message}});
    if let Some(id) = request_id {
        body["request_id"] = json!(id);
    }
    Reply::json(status, body)
}

// ---------------------------------------------------------------- whole answers

/// The API reference's Messages example: one text block, `end_turn`, usage
/// with `cache_creation_input_tokens: 2051`, `cache_read_input_tokens: 2051`,
/// `input_tokens: 2095`, `output_tokens: 503`.
pub fn anthropic_cached_usage_message() -> Reply {
    Reply::json(
        200,
        cached_usage_envelope(
            json!([{"text": "Hi! My name is Claude.", "type": "text"}]),
            "end_turn",
        ),
    )
}

fn cached_usage_envelope(content: Value, stop_reason: &str) -> Value {
    json!({
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "content": content,
        "model": "claude-sonnet-4-5-20250929",
        "role": "assistant",
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "type": "message",
        "usage": {
            "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
            "cache_creation_input_tokens": 2051,
            "cache_read_input_tokens": 2051,
            "input_tokens": 2095,
            "output_tokens": 503,
            "server_tool_use": {"web_search_requests": 0},
            "service_tier": "standard"
        }
    })
}

/// The extended-thinking docs' tool-use answer: a `thinking` block with its
/// `signature`, the docs' text block, then `tool_use` (`id`, `name`, `input`);
/// `stop_reason: "tool_use"`. The docs' own values: thinking "The user wants
/// to know the current weather in Paris. I have access to a function
/// `get_weather`...", signature [`DOC_TOOL_SIGNATURE`],
/// id `toolu_01CswdEQBMshySk6Y9DFKrfq`, input `{"location": "Paris"}`.
pub fn anthropic_thinking_tool_use_message(
    thinking: &str,
    signature: &str,
    id: &str,
    name: &str,
    input: Value,
) -> Reply {
    let content = json!([
        {"type": "thinking", "thinking": thinking, "signature": signature},
        {"type": "text", "text": "I can help you get the current weather information for Paris. Let me check that for you"},
        {"type": "tool_use", "id": id, "name": name, "input": input}
    ]);
    Reply::json(200, cached_usage_envelope(content, "tool_use"))
}

/// The signature of the docs' thinking-with-tool-use example, as printed.
pub const DOC_TOOL_SIGNATURE: &str =
    "BDaL4VrbR2Oj0hO4XpJxT28J5TILnCrrUXoKiiNBZW9P+nr8XSj1zuZzAl4egiCCpQNvfyUuFFJP5CncdYZEQPPmLxYsNrcs....";

/// The `data` of the docs' redacted_thinking example, as printed.
pub const DOC_REDACTED_DATA: &str = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4mPnZ5sQ7vB9URj2pLmN3kF8/dW5hR7xJ0aP1oLs9yTcMnKVf2wRpEGjH9XZaBt4UvDcPrQ...";

/// The docs' "Thinking redaction" answer: thinking, redacted_thinking, text.
pub fn anthropic_redacted_thinking_message() -> Reply {
    let content = json!([
        {"type": "thinking", "thinking": "Let me analyze this step by step...",
         "signature": "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG/UvLEczmEsUjavL...."},
        {"type": "redacted_thinking", "data": DOC_REDACTED_DATA},
        {"type": "text", "text": "Based on my analysis..."}
    ]);
    Reply::json(200, cached_usage_envelope(content, "end_turn"))
}

// ---------------------------------------------------------------- streams

/// The streaming docs' "Basic streaming request" response, byte for byte
/// (its uneven spacing included): "Hello" + "!", `end_turn`, output_tokens 15.
pub fn anthropic_hello_stream() -> Reply {
    Reply::sse(
        [
            "event: message_start\ndata: {\"type\": \"message_start\", \"message\": {\"id\": \"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\", \"type\": \"message\", \"role\": \"assistant\", \"content\": [], \"model\": \"claude-sonnet-4-5-20250929\", \"stop_reason\": null, \"stop_sequence\": null, \"usage\": {\"input_tokens\": 25, \"output_tokens\": 1}}}\n\n",
            "event: content_block_start\ndata: {\"type\": \"content_block_start\", \"index\": 0, \"content_block\": {\"type\": \"text\", \"text\": \"\"}}\n\n",
            "event: ping\ndata: {\"type\": \"ping\"}\n\n",
            "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"Hello\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"!\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\": \"content_block_stop\", \"index\": 0}\n\n",
            "event: message_delta\ndata: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"end_turn\", \"stop_sequence\":null}, \"usage\": {\"output_tokens\": 15}}\n\n",
            "event: message_stop\ndata: {\"type\": \"message_stop\"}\n\n",
        ]
        .map(str::to_string)
        .to_vec(),
    )
}

/// The text the docs' tool-use stream says before calling the tool, as it was split.
pub const DOC_TOOL_TEXT: [&str; 13] = [
    "Okay",
    ",",
    " let",
    "'s",
    " check",
    " the",
    " weather",
    " for",
    " San",
    " Francisco",
    ",",
    " CA",
    ":",
];

/// The docs' `input_json_delta` pieces; they join to
/// `{"location": "San Francisco, CA", "unit": "fahrenheit"}`.
pub const DOC_TOOL_PIECES: [&str; 8] = [
    "{\"location\":",
    " \"San",
    " Francisc",
    "o,",
    " CA\"",
    ", ",
    "\"unit\": \"fah",
    "renheit\"}",
];

fn compact(name: &str, data: Value) -> String {
    anthropic_event(name, &data)
}

fn message_start(id: &str, input_tokens: u64) -> String {
    compact(
        "message_start",
        json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929", "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": 2}, "content": [], "stop_reason": null}}),
    )
}

fn block_delta(index: usize, delta: Value) -> String {
    compact(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": index, "delta": delta}),
    )
}

fn block_stop(index: usize) -> String {
    compact(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    )
}

/// A tool_use block at `index`: start with `input: {}`, the empty first
/// `partial_json`, then `pieces`, stop.
fn tool_use_block(index: usize, id: &str, name: &str, pieces: &[&str]) -> Vec<String> {
    let mut events = vec![compact(
        "content_block_start",
        json!({"type": "content_block_start", "index": index,
               "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
    )];
    for piece in std::iter::once(&"").chain(pieces) {
        events.push(block_delta(
            index,
            json!({"type": "input_json_delta", "partial_json": piece}),
        ));
    }
    events.push(block_stop(index));
    events
}

fn message_end(stop_reason: &str, output_tokens: u64) -> Vec<String> {
    vec![
        compact(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                   "usage": {"output_tokens": output_tokens}}),
        ),
        compact("message_stop", json!({"type": "message_stop"})),
    ]
}

/// The streaming docs' tool-use response with another tool: `message_start`
/// (`msg_014p7gG3wDgGV9EUtLvnow3U`, input_tokens 472), the docs' text block
/// ([`DOC_TOOL_TEXT`]) with its `ping`, then block 1 `tool_use` with `id`,
/// `name` and `pieces`, `stop_reason: "tool_use"`, output_tokens 89.
pub fn anthropic_tool_use_stream(id: &str, name: &str, pieces: &[&str]) -> Reply {
    let mut events = vec![
        message_start("msg_014p7gG3wDgGV9EUtLvnow3U", 472),
        compact(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        "event: ping\ndata: {\"type\": \"ping\"}\n\n".to_string(),
    ];
    for piece in DOC_TOOL_TEXT {
        events.push(block_delta(0, json!({"type": "text_delta", "text": piece})));
    }
    events.push(block_stop(0));
    events.extend(tool_use_block(1, id, name, pieces));
    events.extend(message_end("tool_use", 89));
    Reply::sse(events)
}

/// [`anthropic_tool_use_stream`] with the docs' own tool and pieces.
pub fn anthropic_doc_tool_use_stream() -> Reply {
    anthropic_tool_use_stream(
        "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "get_weather",
        &DOC_TOOL_PIECES,
    )
}

/// Extended thinking then a tool call, framed as the streaming docs' thinking
/// sample: block 0 `thinking` (start with `thinking: ""`, one `thinking_delta`
/// per word of `thinking`, then one `signature_delta`, stop), block 1
/// `tool_use` with `args_pieces`, `stop_reason: "tool_use"`.
pub fn anthropic_thinking_tool_use_stream(
    thinking: &str,
    signature: &str,
    id: &str,
    name: &str,
    args_pieces: &[&str],
) -> Reply {
    let mut events = vec![
        message_start("msg_01ThinkingToolUse", 472),
        compact(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        ),
    ];
    for piece in pieces_of(thinking) {
        events.push(block_delta(
            0,
            json!({"type": "thinking_delta", "thinking": piece}),
        ));
    }
    events.push(block_delta(
        0,
        json!({"type": "signature_delta", "signature": signature}),
    ));
    events.push(block_stop(0));
    events.extend(tool_use_block(1, id, name, args_pieces));
    events.extend(message_end("tool_use", 89));
    Reply::sse(events)
}

/// A stream that fails after its 200: `message_start`, a `ping`, then the
/// docs' `error` event (`overloaded_error`, "Overloaded") and nothing more.
pub fn anthropic_error_event_stream() -> Reply {
    Reply::sse(vec![
        message_start("msg_01ErrorAfterStart", 25),
        "event: ping\ndata: {\"type\": \"ping\"}\n\n".to_string(),
        "event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n"
            .to_string(),
    ])
}

/// `text` cut before each word, the spaces going with the word after them,
/// so the pieces join back to `text`.
fn pieces_of(text: &str) -> Vec<String> {
    let mut pieces: Vec<String> = Vec::new();
    for (i, word) in text.split(' ').enumerate() {
        if i == 0 {
            pieces.push(word.to_string());
        } else {
            pieces.push(format!(" {word}"));
        }
    }
    pieces
}

// ---------------------------------------------------------------- Anthropic errors

/// 400 `invalid_request_error` with `message` (e.g. "max_tokens: Field required").
pub fn anthropic_invalid_request_400(message: &str) -> Reply {
    anthropic_error(
        400,
        "invalid_request_error",
        message,
        Some("req_011CSHoEeqs5C35K2UUqR7Fy"),
    )
}

/// 401 `authentication_error` "invalid x-api-key".
pub fn anthropic_authentication_401() -> Reply {
    anthropic_error(
        401,
        "authentication_error",
        "invalid x-api-key",
        Some("req_011CYhr1kdGzCrPHfrhibMen"),
    )
}

/// 403 `permission_error` "Permission denied".
pub fn anthropic_permission_403() -> Reply {
    anthropic_error(
        403,
        "permission_error",
        "Permission denied",
        Some("req_011CaH4QYfa4v3jXKVw9mj25"),
    )
}

/// 404 `not_found_error` "model: <model>" (no request_id, as reported).
pub fn anthropic_not_found_404(model: &str) -> Reply {
    anthropic_error(404, "not_found_error", &format!("model: {model}"), None)
}

/// 413 from Cloudflare in front of the API: no top-level `type`.
pub fn anthropic_request_too_large_413() -> Reply {
    Reply::json(
        413,
        json!({"error": {"type": "request_too_large", "message": "Request exceeds the maximum size"}}),
    )
}

/// 500 `api_error` "Internal server error".
pub fn anthropic_api_error_500() -> Reply {
    anthropic_error(
        500,
        "api_error",
        "Internal server error",
        Some("req_011CZriQ7LQRRUrZ4zNutBbM"),
    )
}

/// 400 when thinking is on and the assistant message at `index` (the last
/// one with a tool_use) starts with a `found` block instead of thinking.
pub fn anthropic_missing_thinking_400(index: usize, found: &str) -> Reply {
    let message = format!(
        "messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{found}`. \
         When `thinking` is enabled, a final `assistant` message must start with a thinking block \
         (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include \
         thinking blocks from previous turns. To avoid this requirement, disable `thinking`. Please consult \
         our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
    );
    anthropic_error(
        400,
        "invalid_request_error",
        &message,
        Some("req_vrtx_011CXHqiZPJzdrvgn43AHAoA"),
    )
}

/// 400 for a thinking block at `messages.<index>.content.0` whose signature
/// is missing, empty or not Anthropic's.
pub fn anthropic_invalid_signature_400(index: usize) -> Reply {
    let message = format!("messages.{index}.content.0: Invalid `signature` in `thinking` block");
    anthropic_error(
        400,
        "invalid_request_error",
        &message,
        Some("req_011CZeGmrJK7Hoq6N9UqVP4j"),
    )
}

// ---------------------------------------------------------------- Kimi

/// Kimi's 400 when thinking is on and the assistant tool-call message at
/// `index` of `messages` has no `reasoning_content`.
pub fn kimi_missing_reasoning_400(index: usize) -> Reply {
    Reply::json(
        400,
        json!({"error": {"message": format!(
            "thinking is enabled but reasoning_content is missing in assistant tool call message at index {index}"),
            "type": "invalid_request_error"}}),
    )
}

/// Kimi's 400 for a forced tool choice in thinking mode: `which` is
/// `"specified"` (a named tool) or `"required"`.
pub fn kimi_tool_choice_400(which: &str) -> Reply {
    Reply::json(
        400,
        json!({"error": {"message": format!("tool_choice '{which}' is incompatible with thinking enabled"),
                         "type": "invalid_request_error"}}),
    )
}

/// A Kimi thinking model's tool call, not streamed: `reasoning_content` beside
/// an empty `content`, one call `id` (Kimi's are `functions.<name>:<n>`),
/// `finish_reason: "tool_calls"`, usage with Kimi's top-level `cached_tokens`.
pub fn kimi_thinking_tool_call(reasoning: &str, id: &str, name: &str, args: &str) -> Reply {
    Reply::json(
        200,
        json!({
            "id": "chatcmpl-kimi-thinking", "object": "chat.completion", "created": 1_700_000_000u64,
            "model": "kimi-k2.6",
            "choices": [{"index": 0, "message": {
                "role": "assistant", "content": "", "reasoning_content": reasoning,
                "tool_calls": [{"index": 0, "id": id, "type": "function",
                                "function": {"name": name, "arguments": args}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 60, "completion_tokens": 30, "total_tokens": 90, "cached_tokens": 0}
        }),
    )
}

/// The same streamed: a `role` chunk with empty `content`, one
/// `reasoning_content` chunk per word, the call's head (`id`, `name`, empty
/// arguments), the arguments in two halves, a finish chunk whose choice
/// carries `usage` (Kimi's place for it), `[DONE]`.
pub fn kimi_thinking_tool_call_stream(reasoning: &str, id: &str, name: &str, args: &str) -> Reply {
    let chunk = |choice: Value| {
        data_event(
            &json!({"id": "chatcmpl-kimi-thinking", "object": "chat.completion.chunk",
                           "created": 1_700_000_000u64, "model": "kimi-k2.6", "choices": [choice]}),
        )
    };
    let delta = |d: Value| chunk(json!({"index": 0, "delta": d, "finish_reason": null}));
    let mut events = vec![delta(json!({"role": "assistant", "content": ""}))];
    for piece in pieces_of(reasoning) {
        events.push(delta(json!({"reasoning_content": piece})));
    }
    events.push(delta(
        json!({"tool_calls": [{"index": 0, "id": id, "type": "function",
                                              "function": {"name": name, "arguments": ""}}]}),
    ));
    let half = args
        .char_indices()
        .nth(args.chars().count() / 2)
        .map_or(args.len(), |(i, _)| i);
    for piece in [&args[..half], &args[half..]] {
        events.push(delta(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
        ));
    }
    events.push(chunk(json!({"index": 0, "delta": {}, "finish_reason": "tool_calls",
        "usage": {"prompt_tokens": 60, "completion_tokens": 30, "total_tokens": 90, "cached_tokens": 0}})));
    events.push("data: [DONE]\n\n".to_string());
    Reply::sse(events)
}

// ---------------------------------------------------------------- OpenRouter, vLLM, Ollama

/// The three `reasoning_details` types exactly as OpenRouter's docs print them.
pub fn openrouter_doc_reasoning_details() -> [Value; 3] {
    [
        json!({"type": "reasoning.summary", "summary": "The model analyzed the problem by first identifying key constraints, then evaluating possible solutions...", "id": "reasoning-summary-1", "format": "anthropic-claude-v1", "index": 0}),
        json!({"type": "reasoning.encrypted", "data": "eyJlbmNyeXB0ZWQiOiJ0cnVlIiwiY29udGVudCI6IltSRURBQ1RFRF0ifQ==", "id": "reasoning-encrypted-1", "format": "anthropic-claude-v1", "index": 1}),
        json!({"type": "reasoning.text", "text": "Let me think through this step by step:\n1. First, I need to understand the user's question...", "signature": "sha256:abc123def456...", "id": "reasoning-text-1", "format": "anthropic-claude-v1", "index": 2}),
    ]
}

/// OpenRouter's non-streamed example: content "Based on my analysis, I
/// recommend the following approach...", `reasoning` (the plain text) and
/// `reasoning_details` = the docs' summary and text details plus the
/// encrypted one, in a `chat.completion` envelope.
pub fn openrouter_reasoning_details_message() -> Reply {
    let [_, encrypted, _] = openrouter_doc_reasoning_details();
    let mut encrypted = encrypted;
    encrypted["index"] = json!(2);
    Reply::json(
        200,
        json!({
            "id": "gen-reasoning-1", "provider": "Anthropic", "model": "anthropic/claude-sonnet-4",
            "object": "chat.completion", "created": 1_700_000_000u64,
            "choices": [{"index": 0, "finish_reason": "stop", "native_finish_reason": "end_turn", "message": {
                "role": "assistant",
                "content": "Based on my analysis, I recommend the following approach...",
                "reasoning": "Let me work through this systematically:\n1. First consideration...\n2. Second consideration...",
                "reasoning_details": [
                    {"type": "reasoning.summary", "summary": "Analyzed the problem by breaking it into components", "id": "reasoning-summary-1", "format": "anthropic-claude-v1", "index": 0},
                    {"type": "reasoning.text", "text": "Let me work through this systematically:\n1. First consideration...\n2. Second consideration...", "signature": null, "id": "reasoning-text-1", "format": "anthropic-claude-v1", "index": 1},
                    encrypted
                ]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 40, "total_tokens": 60}
        }),
    )
}

/// OpenRouter streamed: the docs' `reasoning.text` delta (with the matching
/// `reasoning` string), the encrypted detail, two content chunks ("Based on
/// my analysis", "..."), a `stop` chunk, `[DONE]`.
pub fn openrouter_reasoning_details_stream() -> Reply {
    let chunk = |delta: Value, finish: Value| {
        data_event(
            &json!({"id": "gen-reasoning-2", "provider": "Anthropic", "model": "anthropic/claude-sonnet-4",
            "object": "chat.completion.chunk", "created": 1_700_000_000u64,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let [_, encrypted, _] = openrouter_doc_reasoning_details();
    Reply::sse(vec![
        chunk(
            json!({"role": "assistant", "content": "", "reasoning": "Let me think about this step by step...",
                   "reasoning_details": [{"type": "reasoning.text", "text": "Let me think about this step by step...", "signature": null, "id": "reasoning-text-1", "format": "anthropic-claude-v1", "index": 0}]}),
            Value::Null,
        ),
        chunk(
            json!({"content": "", "reasoning_details": [encrypted]}),
            Value::Null,
        ),
        chunk(json!({"content": "Based on my analysis"}), Value::Null),
        chunk(json!({"content": "..."}), Value::Null),
        chunk(json!({}), json!("stop")),
        "data: [DONE]\n\n".to_string(),
    ])
}

/// vLLM (≥ 0.11) or Ollama, not streamed: `message.reasoning` beside `content`.
pub fn reasoning_field_message(reasoning: &str, text: &str) -> Reply {
    Reply::json(
        200,
        json!({"id": "chatcmpl-reasoning", "object": "chat.completion", "created": 1_700_000_000u64,
               "model": "qwen3:8b", "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
               "reasoning": reasoning}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}}),
    )
}

/// Ollama's stream: `delta.reasoning` one word a chunk (with `content: ""`,
/// as Ollama sends it), then `content` one word a chunk, `stop`, `[DONE]`.
pub fn reasoning_field_stream(reasoning: &str, text: &str) -> Reply {
    let chunk = |delta: Value, finish: Value| {
        data_event(
            &json!({"id": "chatcmpl-reasoning", "object": "chat.completion.chunk",
            "created": 1_700_000_000u64, "model": "qwen3:8b",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let mut events = Vec::new();
    for (i, piece) in pieces_of(reasoning).into_iter().enumerate() {
        let mut d = json!({"content": "", "reasoning": piece});
        if i == 0 {
            d["role"] = json!("assistant");
        }
        events.push(chunk(d, Value::Null));
    }
    for piece in pieces_of(text) {
        events.push(chunk(json!({"content": piece}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    events.push("data: [DONE]\n\n".to_string());
    Reply::sse(events)
}

// ---------------------------------------------------------------- strict upstreams

/// What Kimi refuses when thinking is on: the index in `messages` of the first
/// assistant message with `tool_calls` and no `reasoning_content` (absent or
/// null; an empty string passes).
pub fn missing_reasoning_content(body: &Value) -> Option<usize> {
    body["messages"].as_array()?.iter().position(|m| {
        m["role"] == "assistant"
            && m["tool_calls"].as_array().is_some_and(|c| !c.is_empty())
            && m.get("reasoning_content").is_none_or(Value::is_null)
    })
}

/// What Anthropic refuses with `thinking: {type: "enabled"}`: the last
/// assistant message holding a tool_use block must start with a `thinking`
/// block with a non-empty `signature`, or a `redacted_thinking` block.
/// Returns the reply Anthropic sends, or None when the request passes.
pub fn thinking_violation(body: &Value) -> Option<Reply> {
    if body.pointer("/thinking/type").and_then(Value::as_str) != Some("enabled") {
        return None;
    }
    let messages = body["messages"].as_array()?;
    let (index, blocks) = messages.iter().enumerate().rev().find_map(|(i, m)| {
        let blocks = m["content"].as_array()?;
        let uses_tool = m["role"] == "assistant" && blocks.iter().any(|b| b["type"] == "tool_use");
        uses_tool.then_some((i, blocks))
    })?;
    let first = &blocks[0];
    match first["type"].as_str().unwrap_or_default() {
        "redacted_thinking" => None,
        "thinking" if first["signature"].as_str().is_some_and(|s| !s.is_empty()) => None,
        "thinking" => Some(anthropic_invalid_signature_400(index)),
        found => Some(anthropic_missing_thinking_400(index, found)),
    }
}
