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
    let model = chat["model"].as_str().unwrap_or_default().to_owned();
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
