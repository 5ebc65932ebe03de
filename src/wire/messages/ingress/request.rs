//! A `POST /v1/messages` body becomes the canonical (Chat Completions)
//! request. Checked as Anthropic checks it, so a client learns which field
//! is wrong from us rather than from whichever upstream the route picks;
//! what chat has no field for (`thinking`, server tools, `service_tier`,
//! `container`, ...) stays only in [`Request::original`], for an upstream
//! that speaks Messages too.

use serde_json::{json, Map, Value};

use super::content;
use crate::error::ApiError;

/// A client's Messages request, parsed and checked.
#[derive(Debug, Clone)]
pub struct Request {
    /// The canonical chat request.
    pub chat: Map<String, Value>,
    /// The request exactly as the client sent it (for an upstream that speaks
    /// Messages too).
    pub original: Map<String, Value>,
    pub model: String,
    pub stream: bool,
}

/// `POST /v1/messages`.
pub fn parse(bytes: &[u8]) -> Result<Request, ApiError> {
    let original = object(bytes)?;
    let max_tokens = match present(&original, "max_tokens") {
        None => return Err(invalid("`max_tokens`: field required", "max_tokens")),
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| invalid("`max_tokens`: must be a positive integer", "max_tokens"))?,
    };
    let stream = match present(&original, "stream") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| invalid("`stream`: must be a boolean", "stream"))?,
    };
    let mut chat = to_chat(&original)?;
    chat.insert("max_tokens".into(), max_tokens.into());
    if stream {
        chat.insert("stream".into(), true.into());
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let model = chat
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok(Request {
        chat,
        original,
        model,
        stream,
    })
}

/// `POST /v1/messages/count_tokens`: the same body without `max_tokens`.
pub fn parse_count(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    to_chat(&object(bytes)?)
}

fn object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid(
            "request body must be a JSON object",
            None,
        )),
        Err(e) => Err(ApiError::invalid(
            format!("request body is not valid JSON: {e}"),
            None,
        )),
    }
}

/// Everything but `max_tokens` and `stream`, which only `/v1/messages` reads.
fn to_chat(body: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let model = match present(body, "model") {
        None => return Err(invalid("`model`: field required", "model")),
        Some(v) => v
            .as_str()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| invalid("`model`: must be a non-empty string", "model"))?,
    };
    let mut chat = Map::new();
    chat.insert("model".into(), model.into());

    let mut messages = vec![];
    if let Some(system) = present(body, "system") {
        messages.extend(content::system(system)?);
    }
    match present(body, "messages") {
        None => return Err(invalid("`messages`: field required", "messages")),
        Some(Value::Array(list)) if !list.is_empty() => content::messages(list, &mut messages)?,
        Some(Value::Array(_)) => {
            return Err(invalid(
                "`messages`: at least one message is required",
                "messages",
            ))
        }
        Some(_) => return Err(invalid("`messages`: must be an array", "messages")),
    }
    chat.insert("messages".into(), Value::Array(messages));

    let tools = match present(body, "tools") {
        Some(tools) => self::tools(tools)?,
        None => vec![],
    };
    if let Some(choice) = present(body, "tool_choice") {
        let (choice, parallel) = tool_choice(choice, &tools)?;
        if !tools.is_empty() {
            chat.extend(choice.map(|c| ("tool_choice".to_owned(), c)));
            if !parallel {
                chat.insert("parallel_tool_calls".into(), false.into());
            }
        }
    }
    if !tools.is_empty() {
        chat.insert("tools".into(), Value::Array(tools));
    }

    if let Some(stop) = present(body, "stop_sequences") {
        let all_strings = stop
            .as_array()
            .is_some_and(|s| s.iter().all(Value::is_string));
        if !all_strings {
            return Err(invalid(
                "`stop_sequences`: must be an array of strings",
                "stop_sequences",
            ));
        }
        if stop.as_array().is_some_and(|s| !s.is_empty()) {
            chat.insert("stop".into(), stop.clone());
        }
    }
    for field in ["temperature", "top_p"] {
        if let Some(v) = present(body, field) {
            if !v.is_number() {
                return Err(invalid(format!("`{field}`: must be a number"), field));
            }
            chat.insert(field.into(), v.clone());
        }
    }
    if let Some(v) = present(body, "top_k") {
        if v.as_u64().is_none() {
            return Err(invalid("`top_k`: must be a non-negative integer", "top_k"));
        }
        chat.insert("top_k".into(), v.clone());
    }
    if let Some(metadata) = present(body, "metadata") {
        let Some(metadata) = metadata.as_object() else {
            return Err(invalid("`metadata`: must be an object", "metadata"));
        };
        match metadata.get("user_id") {
            Some(Value::String(user)) => {
                chat.insert("user".into(), user.as_str().into());
            }
            None | Some(Value::Null) => {}
            Some(_) => return Err(invalid("`metadata.user_id`: must be a string", "metadata")),
        }
    }
    Ok(chat)
}

/// The client's custom tools as chat functions. Anthropic's own tools
/// (`web_search_*`, `bash_*`, `text_editor_*`, ...) run on Anthropic's side
/// or need its schema: chat has nothing to send them as.
fn tools(tools: &Value) -> Result<Vec<Value>, ApiError> {
    let Some(list) = tools.as_array() else {
        return Err(invalid("`tools`: must be an array", "tools"));
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        let Some(tool) = tool.as_object() else {
            return Err(invalid(format!("`tools.{i}`: must be an object"), "tools"));
        };
        match tool.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(kind)) if kind == "custom" => {}
            Some(Value::String(_)) => continue,
            Some(_) => {
                return Err(invalid(
                    format!("`tools.{i}.type`: must be a string"),
                    "tools",
                ))
            }
        }
        let Some(name) = tool
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        else {
            return Err(invalid(
                format!("`tools.{i}.name`: must be a non-empty string"),
                "tools",
            ));
        };
        let Some(schema) = tool.get("input_schema").filter(|s| s.is_object()) else {
            return Err(invalid(
                format!("`tools.{i}.input_schema`: field required (a JSON schema object)"),
                "tools",
            ));
        };
        let mut function = json!({"name": name, "parameters": schema});
        match tool.get("description") {
            Some(Value::String(d)) => function["description"] = d.as_str().into(),
            None | Some(Value::Null) => {}
            Some(_) => {
                return Err(invalid(
                    format!("`tools.{i}.description`: must be a string"),
                    "tools",
                ))
            }
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(out)
}

/// `tool_choice` as chat's, and whether parallel calls stay allowed. A named
/// tool chat does not have (a server tool) leaves the choice to the model.
fn tool_choice(choice: &Value, tools: &[Value]) -> Result<(Option<Value>, bool), ApiError> {
    let bad = |what: &str| invalid(format!("`tool_choice`: {what}"), "tool_choice");
    let Some(object) = choice.as_object() else {
        return Err(bad("must be an object"));
    };
    let parallel = match object.get("disable_parallel_tool_use") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(disable)) => !disable,
        Some(_) => return Err(bad("`disable_parallel_tool_use` must be a boolean")),
    };
    let chat = match object.get("type").and_then(Value::as_str) {
        Some("auto") => Some("auto".into()),
        Some("any") => Some("required".into()),
        Some("none") => Some("none".into()),
        Some("tool") => {
            let Some(name) = object.get("name").and_then(Value::as_str) else {
                return Err(bad("`name` is required when `type` is \"tool\""));
            };
            tools
                .iter()
                .any(|t| t["function"]["name"] == name)
                .then(|| json!({"type": "function", "function": {"name": name}}))
        }
        _ => {
            return Err(bad(
                "`type` must be \"auto\", \"any\", \"tool\" or \"none\"",
            ))
        }
    };
    Ok((chat, parallel))
}

/// A field that is there and not `null` (Anthropic's SDKs send `null` for
/// an option not given).
fn present<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    body.get(key).filter(|v| !v.is_null())
}

pub(super) fn invalid(message: impl Into<String>, field: &'static str) -> ApiError {
    ApiError::invalid(message, Some(field))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_json(body: Value) -> Result<Request, ApiError> {
        parse(body.to_string().as_bytes())
    }

    /// What Claude Code sends mid-task: cached system blocks, custom and
    /// server tools, a signed thinking turn with a call, its result beside
    /// a screenshot.
    fn claude_code() -> Value {
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 32000,
            "stream": true,
            "metadata": {"user_id": "user_abc_session_1"},
            "thinking": {"type": "enabled", "budget_tokens": 10000},
            "temperature": 1,
            "system": [
                {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Working directory: /repo"}
            ],
            "tools": [
                {"name": "Read", "description": "Reads a file",
                    "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}},
                        "required": ["file_path"]}},
                {"type": "custom", "name": "Bash", "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
            ],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "Read a.rs"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "I should read it.", "signature": "EqQBCkYI"},
                    {"type": "redacted_thinking", "data": "EmwKAhgB"},
                    {"type": "text", "text": "Reading."},
                    {"type": "tool_use", "id": "toolu_01A", "name": "Read", "input": {"file_path": "/repo/a.rs"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01A",
                        "content": [{"type": "text", "text": "fn main() {}"}, {"type": "text", "text": "// end"}]},
                    {"type": "text", "text": "And this screenshot:", "cache_control": {"type": "ephemeral"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
                ]}
            ]
        })
    }

    #[test]
    fn a_claude_code_request_becomes_the_canonical_chat_request() {
        let request = parse_json(claude_code()).unwrap();
        assert_eq!(request.model, "claude-sonnet-4-5");
        assert!(request.stream);
        assert_eq!(Value::Object(request.original.clone()), claude_code());
        let chat = Value::Object(request.chat);
        assert_eq!(
            chat["messages"],
            json!([
                {"role": "system", "content": [
                    {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": "Working directory: /repo"}
                ]},
                {"role": "user", "content": "Read a.rs"},
                {"role": "assistant", "content": "Reading.",
                    "reasoning_content": "I should read it.",
                    "thinking_blocks": [
                        {"type": "thinking", "thinking": "I should read it.", "signature": "EqQBCkYI"},
                        {"type": "redacted_thinking", "data": "EmwKAhgB"}
                    ],
                    "tool_calls": [{"id": "toolu_01A", "type": "function",
                        "function": {"name": "Read", "arguments": "{\"file_path\":\"/repo/a.rs\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_01A", "content": "fn main() {}\n// end"},
                {"role": "user", "content": [
                    {"type": "text", "text": "And this screenshot:", "cache_control": {"type": "ephemeral"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
                ]}
            ])
        );
        assert_eq!(
            chat["tools"],
            json!([
                {"type": "function", "function": {"name": "Read", "description": "Reads a file",
                    "parameters": {"type": "object", "properties": {"file_path": {"type": "string"}},
                        "required": ["file_path"]}}},
                {"type": "function", "function": {"name": "Bash", "parameters": {"type": "object"}}}
            ])
        );
        assert_eq!(chat["tool_choice"], "auto");
        assert_eq!(chat["parallel_tool_calls"], false);
        assert_eq!(chat["max_tokens"], 32000);
        assert_eq!(chat["temperature"], 1);
        assert_eq!(chat["user"], "user_abc_session_1");
        assert_eq!(chat["stream"], true);
        assert_eq!(chat["stream_options"], json!({"include_usage": true}));
        assert!(
            chat.get("thinking").is_none(),
            "thinking stays in `original`"
        );
    }

    #[test]
    fn a_tool_only_assistant_turn_has_null_content_and_an_error_result_keeps_its_text() {
        let request = parse_json(json!({"model": "m", "max_tokens": 10, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "go"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": [1, 2]}},
                {"type": "tool_use", "id": "t2", "name": "g", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "boom", "is_error": true},
                {"type": "tool_result", "tool_use_id": "t2"}]}
        ]}))
        .unwrap();
        let messages = &request.chat["messages"];
        assert_eq!(
            messages[0],
            json!({"role": "user", "content": [{"type": "text", "text": "go"}]})
        );
        assert_eq!(messages[1]["content"], Value::Null);
        assert_eq!(
            messages[1]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":[1,2]}"
        );
        assert_eq!(messages[1]["tool_calls"][1]["id"], "t2");
        assert_eq!(
            messages[2],
            json!({"role": "tool", "tool_call_id": "t1", "content": "boom"})
        );
        assert_eq!(
            messages[3],
            json!({"role": "tool", "tool_call_id": "t2", "content": ""})
        );
        assert_eq!(
            messages.as_array().unwrap().len(),
            4,
            "no empty user message"
        );
        assert!(!request.stream);
        assert!(request.chat.get("stream").is_none());
    }

    #[test]
    fn settings_map_onto_chat_fields() {
        let chat = parse_json(json!({"model": "m", "max_tokens": 5,
            "system": "Be brief.", "stop_sequences": ["END"], "top_p": 0.9, "top_k": 40,
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "f"},
            "service_tier": "auto", "container": "c1",
            "messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
                {"type": "search_result", "source": "x"}]}]}))
        .unwrap()
        .chat;
        assert_eq!(
            chat["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            chat["messages"][1]["content"],
            json!([{"type": "text", "text": "notes"}])
        );
        assert_eq!(chat["stop"], json!(["END"]));
        assert_eq!(chat["top_p"], 0.9);
        assert_eq!(chat["top_k"], 40);
        assert_eq!(
            chat["tool_choice"],
            json!({"type": "function", "function": {"name": "f"}})
        );
        assert!(chat.get("parallel_tool_calls").is_none());
        for dropped in [
            "service_tier",
            "container",
            "system",
            "stop_sequences",
            "metadata",
        ] {
            assert!(chat.get(dropped).is_none(), "{dropped}");
        }
        let choice = |c: Value| {
            parse_json(json!({"model": "m", "max_tokens": 5, "tool_choice": c,
                "tools": [{"name": "f", "input_schema": {}}],
                "messages": [{"role": "user", "content": "hi"}]}))
            .unwrap()
            .chat
            .get("tool_choice")
            .cloned()
            .unwrap_or_default()
        };
        assert_eq!(choice(json!({"type": "any"})), "required");
        assert_eq!(choice(json!({"type": "none"})), "none");
        assert_eq!(
            choice(json!({"type": "tool", "name": "web_search"})),
            Value::Null
        );
    }

    #[test]
    fn only_server_tools_leave_no_tools_and_no_tool_choice() {
        let chat = parse_json(json!({"model": "m", "max_tokens": 5,
            "tools": [{"type": "bash_20250124", "name": "bash"},
                {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}],
            "tool_choice": {"type": "any"},
            "messages": [{"role": "user", "content": "hi"}]}))
        .unwrap()
        .chat;
        assert!(chat.get("tools").is_none());
        assert!(chat.get("tool_choice").is_none());
    }

    #[test]
    fn count_tokens_needs_no_max_tokens() {
        let chat =
            parse_count(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(chat["messages"], json!([{"role": "user", "content": "hi"}]));
        assert!(chat.get("max_tokens").is_none());
        let err = parse_count(br#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap_err();
        assert_eq!(err.to_string(), "`model`: field required");
    }

    /// Each bad field is a 400 whose message and `param` name it.
    #[test]
    fn each_invalid_field_is_named() {
        let ok = || claude_code();
        let with = |key: &str, value: Value| {
            let mut body = ok();
            body[key] = value;
            body
        };
        let without = |key: &str| {
            let mut body = ok();
            body.as_object_mut().unwrap().remove(key);
            body
        };
        let message =
            |content: Value| with("messages", json!([{"role": "user", "content": content}]));
        let cases = [
            (without("model"), "model", "`model`: field required"),
            (
                with("model", json!("")),
                "model",
                "`model`: must be a non-empty string",
            ),
            (
                with("model", json!(3)),
                "model",
                "`model`: must be a non-empty string",
            ),
            (
                without("max_tokens"),
                "max_tokens",
                "`max_tokens`: field required",
            ),
            (
                with("max_tokens", json!(0)),
                "max_tokens",
                "`max_tokens`: must be a positive integer",
            ),
            (
                with("max_tokens", json!(-1)),
                "max_tokens",
                "`max_tokens`: must be a positive integer",
            ),
            (
                with("max_tokens", json!(1.5)),
                "max_tokens",
                "`max_tokens`: must be a positive integer",
            ),
            (
                with("max_tokens", json!("100")),
                "max_tokens",
                "`max_tokens`: must be a positive integer",
            ),
            (
                without("messages"),
                "messages",
                "`messages`: field required",
            ),
            (
                with("messages", json!([])),
                "messages",
                "`messages`: at least one message is required",
            ),
            (
                with("messages", json!({})),
                "messages",
                "`messages`: must be an array",
            ),
            (
                with("messages", json!(["hi"])),
                "messages",
                "`messages.0`: must be an object",
            ),
            (
                with("messages", json!([{"role": "tool", "content": "x"}])),
                "messages",
                "`messages.0.role`: must be \"user\", \"assistant\" or \"system\"",
            ),
            (
                with("messages", json!([{"role": "user"}])),
                "messages",
                "`messages.0.content`: field required",
            ),
            (
                message(json!(5)),
                "messages",
                "`messages.0.content`: must be a string or an array of content blocks",
            ),
            (
                message(json!(["text"])),
                "messages",
                "`messages.0.content.0`: must be a content block (an object with a `type`)",
            ),
            (
                message(json!([{"type": "text"}])),
                "messages",
                "`messages.0.content.0.text`: must be a string",
            ),
            (
                message(json!([{"type": "image", "source": {"kind": "base64"}}])),
                "messages",
                "`messages.0.content.0.source.type`: must be a string",
            ),
            (
                message(json!([{"type": "tool_result", "content": "x"}])),
                "messages",
                "`messages.0.content.0.tool_use_id`: must be a string",
            ),
            (
                with(
                    "messages",
                    json!([{"role": "assistant", "content": [{"type": "tool_use", "id": "t"}]}]),
                ),
                "messages",
                "`messages.0.content.0`: a tool_use block needs `id` and `name` strings",
            ),
            (
                with("stream", json!("yes")),
                "stream",
                "`stream`: must be a boolean",
            ),
            (
                with("system", json!(1)),
                "system",
                "`system`: must be a string or an array of text blocks",
            ),
            (
                with("system", json!([{"type": "image"}])),
                "system",
                "`system.0`: must be a text block (`{\"type\": \"text\", \"text\": ...}`)",
            ),
            (
                with("tools", json!({})),
                "tools",
                "`tools`: must be an array",
            ),
            (
                with("tools", json!([{"name": "f"}])),
                "tools",
                "`tools.0.input_schema`: field required (a JSON schema object)",
            ),
            (
                with("tools", json!([{"input_schema": {}}])),
                "tools",
                "`tools.0.name`: must be a non-empty string",
            ),
            (
                with("tool_choice", json!({"type": "maybe"})),
                "tool_choice",
                "`tool_choice`: `type` must be \"auto\", \"any\", \"tool\" or \"none\"",
            ),
            (
                with("tool_choice", json!({"type": "tool"})),
                "tool_choice",
                "`tool_choice`: `name` is required when `type` is \"tool\"",
            ),
            (
                with("stop_sequences", json!("END")),
                "stop_sequences",
                "`stop_sequences`: must be an array of strings",
            ),
            (
                with("temperature", json!("hot")),
                "temperature",
                "`temperature`: must be a number",
            ),
            (
                with("top_k", json!(-3)),
                "top_k",
                "`top_k`: must be a non-negative integer",
            ),
            (
                with("metadata", json!({"user_id": 5})),
                "metadata",
                "`metadata.user_id`: must be a string",
            ),
        ];
        for (body, field, text) in cases {
            let err = parse_json(body).unwrap_err();
            assert_eq!(err.to_string(), text);
            assert!(
                matches!(err, ApiError::InvalidRequest { param: Some(p), .. } if p == field),
                "{text}"
            );
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn bodies_that_are_not_objects_are_refused() {
        for body in [&b"[]"[..], b"null", b"\"x\"", b"{", b"", b"\xff\xfe"] {
            let err = parse(body).unwrap_err();
            assert!(err.to_string().starts_with("request body"), "{err}");
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn garbage_of_any_shape_never_panics() {
        let values = [
            json!(null),
            json!(0),
            json!(-1),
            json!(1e300),
            json!(""),
            json!("x"),
            json!([]),
            json!([null]),
            json!([{}]),
            json!({}),
            json!({"type": null}),
            json!([{"type": "text", "text": 5}]),
            json!([{"type": "image", "source": 5}]),
            json!([{"type": "tool_result", "tool_use_id": "t", "content": [5, {"type": "text"}]}]),
            json!([{"type": "thinking", "thinking": 5}]),
            json!([{"type": "tool_use", "id": "a", "name": "b", "input": "not an object"}]),
        ];
        let keys = [
            "model",
            "max_tokens",
            "messages",
            "system",
            "tools",
            "tool_choice",
            "stream",
            "stop_sequences",
            "temperature",
            "top_k",
            "metadata",
        ];
        for key in keys {
            for value in &values {
                let mut body = claude_code();
                body[key] = value.clone();
                let _ = parse_json(body);
                for role in ["user", "assistant"] {
                    let mut body = claude_code();
                    body["messages"] = json!([{"role": role, "content": value}]);
                    let _ = parse_json(body);
                }
            }
        }
    }

    #[test]
    fn a_files_api_image_is_left_out_of_chat_but_kept_for_a_messages_upstream() {
        let body = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "file", "file_id": "file_011"}},
            {"type": "text", "text": "What is in it?"}]}]});
        let request = parse(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(
            request.chat["messages"],
            json!([{"role": "user", "content": [{"type": "text", "text": "What is in it?"}]}])
        );
        assert_eq!(request.original["messages"], body["messages"]);
    }

    #[test]
    fn a_system_turn_inside_messages_stays_system_text_where_it_stands() {
        let body = json!({"model": "m", "max_tokens": 10, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "<env>cwd: /repo</env>"}]},
            {"role": "user", "content": "go on"}]});
        let request = parse(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(
            request.chat["messages"][1],
            json!({"role": "system", "content": "<env>cwd: /repo</env>"})
        );
        assert_eq!(request.chat["messages"][2]["role"], "user");
    }
}
