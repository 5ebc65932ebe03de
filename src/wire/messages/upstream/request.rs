//! The canonical (chat) request as a Messages request body.
//!
//! Anthropic refuses fields it does not know, so the body is built from the
//! fields it has, never by copying the chat body and deleting: whatever a
//! client adds (`stream_options`, `response_format`, `seed`, vendor
//! extensions) stays behind.
//!
//! Anthropic also requires strictly alternating roles and non-empty text, so
//! messages are merged by role (tool results travel as a user message) and
//! empty text is left out rather than sent and refused.

use serde_json::{json, Map, Value};

use crate::wire::chat::reserved_output;

/// Anthropic requires `max_tokens`; chat leaves it optional.
const DEFAULT_MAX_TOKENS: u64 = 4096;
/// Left for the answer when a thinking budget would use up `max_tokens`
/// (Anthropic requires `max_tokens` > `budget_tokens`).
const ANSWER_ROOM: u64 = 4096;

/// The canonical chat request (already names the target's model) as a
/// Messages request body.
pub fn request(chat: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(model) = chat.get("model") {
        out.insert("model".into(), model.clone());
    }
    let messages = chat
        .get("messages")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let (system, messages) = conversation(messages);
    if let Some(system) = system {
        out.insert("system".into(), system);
    }
    out.insert("messages".into(), Value::Array(messages));

    let thinking = thinking(chat);
    let mut max_tokens = reserved_output(chat).map_or(DEFAULT_MAX_TOKENS, |(_, n)| n);
    if let Some(budget) = thinking.as_ref().and_then(|t| t["budget_tokens"].as_u64()) {
        if max_tokens <= budget {
            max_tokens = budget.saturating_add(ANSWER_ROOM);
        }
    }
    out.insert("max_tokens".into(), max_tokens.into());

    if let Some(stop) = stop_sequences(chat.get("stop")) {
        out.insert("stop_sequences".into(), stop);
    }
    // Anthropic refuses sampling settings beside thinking.
    let thinking_on = thinking.as_ref().is_some_and(|t| t["type"] != "disabled");
    if !thinking_on {
        sampling(chat, &mut out);
    }
    if let Some(stream) = chat.get("stream").filter(|v| v.is_boolean()) {
        out.insert("stream".into(), stream.clone());
    }
    if let Some(user) = chat.get("user").and_then(Value::as_str) {
        if !user.is_empty() {
            out.insert("metadata".into(), json!({ "user_id": user }));
        }
    }
    let tools = tools(chat.get("tools"));
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        // A tool_choice without tools is refused; without tools there is
        // nothing to choose anyway.
        if let Some(choice) = tool_choice(chat) {
            out.insert("tool_choice".into(), choice);
        }
    }
    if let Some(thinking) = thinking {
        out.insert("thinking".into(), thinking);
    }
    out
}

/// `temperature`, `top_p`, `top_k` where they are numbers.
fn sampling(chat: &Map<String, Value>, out: &mut Map<String, Value>) {
    if let Some(t) = chat.get("temperature").and_then(Value::as_f64) {
        // OpenAI's range is 0..2, Anthropic's 0..1 (it refuses more).
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = chat.get("top_p").filter(|v| v.is_number()) {
        out.insert("top_p".into(), p.clone());
    }
    if let Some(k) = chat.get("top_k").filter(|v| v.is_u64()) {
        out.insert("top_k".into(), k.clone());
    }
}

/// An Anthropic-style `thinking` object as given (LiteLLM's convention),
/// else one from `reasoning_effort`.
fn thinking(chat: &Map<String, Value>) -> Option<Value> {
    if let Some(thinking) = chat.get("thinking").filter(|v| v.is_object()) {
        return Some(thinking.clone());
    }
    let budget: u64 = match chat.get("reasoning_effort").and_then(Value::as_str)? {
        "low" => 1024,
        "medium" => 4096,
        "high" => 16384,
        _ => return None, // minimal, none
    };
    Some(json!({"type": "enabled", "budget_tokens": budget}))
}

/// `stop` (a string or strings) as `stop_sequences`; Anthropic refuses
/// whitespace-only sequences.
fn stop_sequences(stop: Option<&Value>) -> Option<Value> {
    let stops: Vec<Value> = match stop? {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    }
    .into_iter()
    .filter(|s| !s.trim().is_empty())
    .map(Value::from)
    .collect();
    (!stops.is_empty()).then_some(Value::Array(stops))
}

/// The system prompt (every system and developer message, wherever it
/// stands) and the conversation, one message per run of the same role.
fn conversation(messages: &[Value]) -> (Option<Value>, Vec<Value>) {
    let mut system = vec![];
    let mut turns: Vec<(&'static str, Vec<Value>)> = vec![];
    for message in messages {
        let (role, blocks) = match message["role"].as_str() {
            Some("system" | "developer") => {
                system.extend(text_blocks(&message["content"]));
                continue;
            }
            Some("user") => ("user", user_blocks(&message["content"])),
            Some("assistant") => ("assistant", assistant_blocks(message)),
            Some("tool") => ("user", vec![tool_result(message)]),
            _ => continue,
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages = turns
        .into_iter()
        .map(|(role, mut content)| {
            // Tool results must lead the user message that answers a tool use.
            content.sort_by_key(|b| b["type"] != "tool_result");
            json!({"role": role, "content": content})
        })
        .collect();
    (system_prompt(system), messages)
}

/// A string when nothing asks for caching, else text blocks that keep each
/// part's `cache_control`.
fn system_prompt(blocks: Vec<Value>) -> Option<Value> {
    if blocks.is_empty() {
        return None;
    }
    if blocks.iter().any(|b| b.get("cache_control").is_some()) {
        return Some(Value::Array(blocks));
    }
    let texts: Vec<&str> = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
    Some(texts.join("\n\n").into())
}

/// A text block, or nothing for empty text (Anthropic refuses it).
fn text_block(text: &str, cache_control: Option<&Value>) -> Option<Value> {
    if text.is_empty() {
        return None;
    }
    let mut block = json!({"type": "text", "text": text});
    if let Some(cache) = cache_control {
        block["cache_control"] = cache.clone();
    }
    Some(block)
}

/// Chat content (a string or parts) as text blocks; other parts dropped.
fn text_blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::String(text) => text_block(text, None).into_iter().collect(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| text_block(p["text"].as_str()?, p.get("cache_control")))
            .collect(),
        _ => vec![],
    }
}

/// A user message's (or a tool result's) content as blocks.
fn user_blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::Array(parts) => parts.iter().filter_map(user_part).collect(),
        other => text_blocks(other),
    }
}

fn user_part(part: &Value) -> Option<Value> {
    let mut block = match part["type"].as_str()? {
        "text" => return text_block(part["text"].as_str()?, part.get("cache_control")),
        "image_url" => {
            // `{"url": ...}`, or the bare URL some clients send.
            let url = part["image_url"]["url"]
                .as_str()
                .or(part["image_url"].as_str())?;
            json!({"type": "image", "source": image_source(url)?})
        }
        "file" => {
            let (media_type, data) = data_url(part["file"]["file_data"].as_str()?)?;
            if media_type != "application/pdf" {
                return None;
            }
            json!({"type": "document", "source":
                {"type": "base64", "media_type": media_type, "data": data}})
        }
        _ => return None,
    };
    if let Some(cache) = part.get("cache_control") {
        block["cache_control"] = cache.clone();
    }
    Some(block)
}

fn image_source(url: &str) -> Option<Value> {
    if let Some((media_type, data)) = data_url(url) {
        return Some(json!({"type": "base64", "media_type": media_type, "data": data}));
    }
    let web = url.starts_with("https://") || url.starts_with("http://");
    web.then(|| json!({"type": "url", "url": url}))
}

/// `data:<media type>;base64,<data>` as its media type and data.
fn data_url(url: &str) -> Option<(&str, &str)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    Some((media_type, data))
}

/// Signed thinking first (as Anthropic requires), then text, then tool uses.
fn assistant_blocks(message: &Value) -> Vec<Value> {
    // `reasoning_content` alone is not sent: a thinking block without its
    // signature is refused.
    let mut blocks: Vec<Value> = message["thinking_blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| matches!(b["type"].as_str(), Some("thinking" | "redacted_thinking")))
        .cloned()
        .collect();
    blocks.extend(text_blocks(&message["content"]));
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let function = &call["function"];
        let input = match &function["arguments"] {
            Value::String(text) => serde_json::from_str::<Value>(text)
                .ok()
                .filter(Value::is_object),
            // Some clients send the arguments as an object already.
            args @ Value::Object(_) => Some(args.clone()),
            _ => None,
        };
        blocks.push(json!({
            "type": "tool_use",
            "id": call["id"].as_str().unwrap_or_default(),
            "name": function["name"].as_str().unwrap_or_default(),
            "input": input.unwrap_or_else(|| json!({})),
        }));
    }
    blocks
}

fn tool_result(message: &Value) -> Value {
    let mut block = json!({
        "type": "tool_result",
        "tool_use_id": message["tool_call_id"].as_str().unwrap_or_default(),
    });
    let content = match &message["content"] {
        Value::String(text) if !text.is_empty() => Some(Value::String(text.clone())),
        parts @ Value::Array(_) => {
            let blocks = user_blocks(parts);
            (!blocks.is_empty()).then_some(Value::Array(blocks))
        }
        // Empty: `content` is optional, and an empty text block is refused.
        _ => None,
    };
    if let Some(content) = content {
        block["content"] = content;
    }
    block
}

/// Chat's function tools as Messages tools. A tool that is not a function
/// but has a `name` is taken as one of Anthropic's own (`web_search_...`)
/// and passed as given.
fn tools(tools: Option<&Value>) -> Vec<Value> {
    let mut out = vec![];
    for tool in tools.and_then(Value::as_array).into_iter().flatten() {
        let function = &tool["function"];
        let Some(name) = function["name"].as_str() else {
            if tool["type"].is_string() && tool["type"] != "function" && tool["name"].is_string() {
                out.push(tool.clone());
            }
            continue;
        };
        let mut schema = match &function["parameters"] {
            Value::Object(schema) => schema.clone(),
            _ => Map::new(),
        };
        // Anthropic requires the schema's type; OpenAI lets it be implied.
        schema.entry("type").or_insert_with(|| "object".into());
        if schema["type"] == "object" {
            schema.entry("properties").or_insert_with(|| json!({}));
        }
        let mut anthropic = json!({"name": name, "input_schema": schema});
        if let Some(description) = function["description"].as_str() {
            anthropic["description"] = description.into();
        }
        if let Some(cache) = tool.get("cache_control").or(function.get("cache_control")) {
            anthropic["cache_control"] = cache.clone();
        }
        out.push(anthropic);
    }
    out
}

fn tool_choice(chat: &Map<String, Value>) -> Option<Value> {
    let mut choice = match chat.get("tool_choice") {
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "required" => Some(json!({"type": "any"})),
            "none" => Some(json!({"type": "none"})),
            _ => None,
        },
        Some(choice @ Value::Object(_)) => choice["function"]["name"]
            .as_str()
            .map(|name| json!({"type": "tool", "name": name})),
        _ => None,
    };
    if chat.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
        // `none` takes no options.
        if choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = true.into();
        }
    }
    choice
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(chat: Value) -> Value {
        match chat {
            Value::Object(chat) => Value::Object(request(&chat)),
            _ => unreachable!("tests pass objects"),
        }
    }

    /// A whole agent turn as a real client sends it.
    fn conversation_request() -> Value {
        json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "system", "content": [
                    {"type": "text", "text": "You are a weather bot.", "cache_control": {"type": "ephemeral"}}
                ]},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this picture, and the weather in Paris and Rome?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}}
                ]},
                {"role": "assistant", "content": "Checking both.", "reasoning_content": "Two cities.",
                 "thinking_blocks": [{"type": "thinking", "thinking": "Two cities.", "signature": "EqQBCgIYAhIM"}],
                 "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": "not json"}}
                 ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C, sunny"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "24C"}]},
                {"role": "user", "content": "Thanks! And tomorrow?"},
                {"role": "developer", "content": "Answer briefly."}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                "cache_control": {"type": "ephemeral"}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "stop": "END",
            "temperature": 0.3,
            "top_p": 0.9,
            "user": "user-42",
            "metadata": {"trace": "x"},
            "stream": true,
            "stream_options": {"include_usage": true},
            "response_format": {"type": "json_object"},
            "n": 1, "logprobs": false, "seed": 7, "frequency_penalty": 0.5, "presence_penalty": 0.1,
            "some_vendor_field": true
        })
    }

    #[test]
    fn a_full_conversation_becomes_a_messages_request() {
        let body = translate(conversation_request());
        assert_eq!(body["model"], "claude-sonnet-4-5");
        assert_eq!(body["max_tokens"], 4096);
        assert_eq!(
            body["system"],
            json!([
                {"type": "text", "text": "You are a weather bot.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Answer briefly."}
            ])
        );
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this picture, and the weather in Paris and Rome?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Two cities.", "signature": "EqQBCgIYAhIM"},
                    {"type": "text", "text": "Checking both."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C, sunny"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "24C"}]},
                    {"type": "text", "text": "Thanks! And tomorrow?"}
                ]}
            ])
        );
        assert_eq!(
            body["tools"],
            json!([{"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                "cache_control": {"type": "ephemeral"}}])
        );
        assert_eq!(
            body["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert_eq!(body["stop_sequences"], json!(["END"]));
        assert_eq!(body["temperature"], 0.3);
        assert_eq!(body["top_p"], 0.9);
        assert_eq!(body["stream"], true);
        assert_eq!(body["metadata"], json!({"user_id": "user-42"}));
        let mut keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "max_tokens",
                "messages",
                "metadata",
                "model",
                "stop_sequences",
                "stream",
                "system",
                "temperature",
                "tool_choice",
                "tools",
                "top_p"
            ],
            "nothing else is forwarded"
        );
    }

    #[test]
    fn a_plain_system_prompt_is_one_string() {
        let body = translate(json!({"model": "m", "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": "Hi"}
        ]}));
        assert_eq!(body["system"], "Be kind.\n\nBe brief.");
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}])
        );
    }

    #[test]
    fn empty_text_and_reasoning_without_a_signature_are_not_sent() {
        let body = translate(json!({"messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "", "reasoning_content": "hmm",
             "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]},
            {"role": "tool", "tool_call_id": "t", "content": ""},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": ""}
        ]}));
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}
            ])
        );
        assert!(body.get("system").is_none());
    }

    #[test]
    fn consecutive_same_role_messages_merge_with_tool_results_first() {
        let body = translate(json!({"messages": [
            {"role": "user", "content": "one"},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "interjection"},
            {"role": "tool", "tool_call_id": "t", "content": "done"}
        ]}));
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[0]["content"].as_array().unwrap().len(), 2);
        assert_eq!(messages[1]["content"][1]["text"], "b");
        assert_eq!(messages[2]["content"][0]["type"], "tool_result");
        assert_eq!(messages[2]["content"][1]["text"], "interjection");
    }

    #[test]
    fn tool_choice_variants_map_to_anthropic_choices() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        for (choice, parallel, expected) in [
            (json!("auto"), Value::Null, json!({"type": "auto"})),
            (json!("required"), Value::Null, json!({"type": "any"})),
            (json!("none"), Value::Null, json!({"type": "none"})),
            (
                json!({"type": "function", "function": {"name": "f"}}),
                Value::Null,
                json!({"type": "tool", "name": "f"}),
            ),
            (
                Value::Null,
                json!(false),
                json!({"type": "auto", "disable_parallel_tool_use": true}),
            ),
            (
                json!({"type": "function", "function": {"name": "f"}}),
                json!(false),
                json!({"type": "tool", "name": "f", "disable_parallel_tool_use": true}),
            ),
            (json!("none"), json!(false), json!({"type": "none"})),
        ] {
            let body = translate(
                json!({"messages": [], "tools": tools, "tool_choice": choice,
                "parallel_tool_calls": parallel}),
            );
            assert_eq!(body["tool_choice"], expected, "{choice} {parallel}");
        }
        let body = translate(json!({"messages": [], "tools": tools, "parallel_tool_calls": true}));
        assert!(body.get("tool_choice").is_none());
        let body = translate(json!({"messages": [], "tool_choice": "required"}));
        assert!(body.get("tool_choice").is_none(), "no tools, no choice");
    }

    #[test]
    fn a_tool_without_parameters_gets_an_empty_object_schema() {
        let body = translate(json!({"tools": [
            {"type": "function", "function": {"name": "now"}},
            {"type": "function", "function": {"name": "q", "parameters": {"properties": {"a": {}}}}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
            {"type": "function"}
        ]}));
        assert_eq!(
            body["tools"],
            json!([
                {"name": "now", "input_schema": {"type": "object", "properties": {}}},
                {"name": "q", "input_schema": {"type": "object", "properties": {"a": {}}}},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
            ])
        );
    }

    #[test]
    fn reasoning_effort_turns_thinking_on_and_drops_sampling() {
        for (effort, budget) in [("low", 1024), ("medium", 4096), ("high", 16384)] {
            let body = translate(json!({"messages": [], "reasoning_effort": effort,
                "temperature": 0.5, "top_p": 0.9, "top_k": 40, "max_tokens": 2000}));
            assert_eq!(
                body["thinking"],
                json!({"type": "enabled", "budget_tokens": budget})
            );
            let max = body["max_tokens"].as_u64().unwrap();
            assert!(max > budget, "{effort}: {max}");
            assert_eq!(max, if budget < 2000 { 2000 } else { budget + 4096 });
            assert!(body.get("temperature").is_none());
            assert!(body.get("top_p").is_none());
            assert!(body.get("top_k").is_none());
            assert!(body.get("reasoning_effort").is_none());
        }
        for effort in ["minimal", "none"] {
            let body =
                translate(json!({"messages": [], "reasoning_effort": effort, "temperature": 0.5}));
            assert!(body.get("thinking").is_none(), "{effort}");
            assert_eq!(body["temperature"], 0.5);
        }
    }

    #[test]
    fn an_anthropic_thinking_object_is_copied_and_wins_over_reasoning_effort() {
        let body = translate(json!({"messages": [], "reasoning_effort": "low",
            "thinking": {"type": "enabled", "budget_tokens": 10000}, "max_completion_tokens": 12000,
            "max_tokens": 50}));
        assert_eq!(
            body["thinking"],
            json!({"type": "enabled", "budget_tokens": 10000})
        );
        assert_eq!(body["max_tokens"], 12000, "max_completion_tokens first");
        let body = translate(json!({"messages": [], "thinking": {"type": "disabled"}, "top_k": 5}));
        assert_eq!(body["thinking"], json!({"type": "disabled"}));
        assert_eq!(body["top_k"], 5, "disabled thinking keeps sampling");
    }

    #[test]
    fn stop_lists_user_and_temperature_are_translated() {
        let body = translate(
            json!({"stop": ["a", " ", "b", 3], "user": "u", "temperature": 1.7,
            "metadata": {"k": "v"}, "max_tokens": 99}),
        );
        assert_eq!(body["stop_sequences"], json!(["a", "b"]));
        assert_eq!(body["metadata"], json!({"user_id": "u"}));
        assert_eq!(body["temperature"], 1.0, "Anthropic's range ends at 1");
        assert_eq!(body["max_tokens"], 99);
        let body = translate(json!({"stop": [], "metadata": {"k": "v"}}));
        assert!(body.get("stop_sequences").is_none());
        assert!(body.get("metadata").is_none());
    }

    #[test]
    fn a_pdf_file_part_becomes_a_document() {
        let body = translate(json!({"messages": [{"role": "user", "content": [
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
            {"type": "image_url", "image_url": {"url": "ftp://nope"}},
            {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}
        ]}]}));
        assert_eq!(
            body["messages"][0]["content"],
            json!([{"type": "document", "source":
                {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}])
        );
    }

    #[test]
    fn garbage_requests_never_panic() {
        for garbage in [
            json!({}),
            json!({"messages": "x", "tools": {}, "tool_choice": 3, "stop": {}, "max_tokens": -1}),
            json!({"messages": [null, 1, {"role": 5}, {"role": "user", "content": [null, {"type": 1}]},
                {"role": "assistant", "thinking_blocks": "x", "tool_calls": [null, {"function": null}]},
                {"role": "tool"}, {"role": "user", "content": [{"type": "image_url", "image_url": null}]}],
                "tools": [null, {"function": {"name": 1}}], "reasoning_effort": 5, "thinking": "on"}),
        ] {
            let body = translate(garbage);
            assert_eq!(body["max_tokens"], 4096);
            assert!(body["messages"].is_array());
        }
    }
}
