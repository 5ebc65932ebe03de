//! A `POST /v1/responses` body becomes the canonical (Chat Completions)
//! request every route speaks.
//!
//! Fields the canonical request has no use for (`metadata`, `store`,
//! `previous_response_id`) are the endpoint's business; unknown fields are
//! ignored, never forwarded. What cannot be translated (a hosted tool such
//! as `web_search`, an item type we do not know) is a 400 naming it, never
//! a silent drop.

use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// The chat request for a Responses request. `history` is the conversation
/// a `previous_response_id` continues (its input and output items), put
/// before this request's own input.
pub fn to_chat(
    body: &Map<String, Value>,
    history: &[Value],
) -> Result<Map<String, Value>, ApiError> {
    let mut chat = Map::new();
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {
            chat.insert("model".into(), m.as_str().into());
        }
        _ => {
            return Err(invalid(
                "you must provide a `model` (a non-empty string)",
                "model",
            ))
        }
    }

    let mut messages = vec![];
    match body.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => messages.push(json!({"role": "system", "content": text})),
        Some(_) => return Err(invalid("`instructions` must be a string", "instructions")),
    }
    let text_input;
    let input: &[Value] = match body.get("input") {
        Some(Value::String(text)) => {
            text_input = [json!({"role": "user", "content": text})];
            &text_input
        }
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) if !history.is_empty() => &[],
        _ => {
            return Err(invalid(
                "you must provide `input` (a string or an array of input items)",
                "input",
            ))
        }
    };
    for item in history {
        add_item(&mut messages, item).map_err(|why| {
            invalid(
                &format!("the stored conversation: {why}"),
                "previous_response_id",
            )
        })?;
    }
    for (i, item) in input.iter().enumerate() {
        add_item(&mut messages, item)
            .map_err(|why| invalid(&format!("`input[{i}]`: {why}"), "input"))?;
    }
    if messages.is_empty() {
        return Err(invalid("`input` must not be empty", "input"));
    }
    chat.insert("messages".into(), Value::Array(messages));

    if let Some(tools) = body.get("tools").filter(|t| !t.is_null()) {
        chat.insert("tools".into(), Value::Array(tools_to_chat(tools)?));
    }
    if let Some(choice) = body.get("tool_choice").filter(|c| !c.is_null()) {
        chat.insert("tool_choice".into(), tool_choice_to_chat(choice)?);
    }
    for (from, to) in [
        ("parallel_tool_calls", "parallel_tool_calls"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("user", "user"),
        ("max_output_tokens", "max_tokens"),
    ] {
        if let Some(v) = body.get(from).filter(|v| !v.is_null()) {
            chat.insert(to.into(), v.clone());
        }
    }
    if let Some(format) = body.get("text").and_then(|t| t.get("format")) {
        if let Some(response_format) = format_to_chat(format)? {
            chat.insert("response_format".into(), response_format);
        }
    }
    if let Some(effort) = body
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .filter(|e| !e.is_null())
    {
        chat.insert("reasoning_effort".into(), effort.clone());
    }
    match body.get("stream") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            chat.insert("stream".into(), true.into());
            chat.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Some(_) => return Err(invalid("`stream` must be a boolean", "stream")),
    }
    Ok(chat)
}

fn invalid(message: &str, param: &'static str) -> ApiError {
    ApiError::invalid(message, Some(param))
}

/// Appends one input item as chat messages. Consecutive `function_call`
/// items are one assistant turn with several tool calls, as chat has it.
fn add_item(messages: &mut Vec<Value>, item: &Value) -> Result<(), String> {
    let kind = match item.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        // A bare `{"role", "content"}` is a message.
        None if item.get("role").is_some() => "message",
        _ => return Err("an input item needs a `type`".into()),
    };
    match kind {
        "message" => messages.push(message_to_chat(item)?),
        "function_call" => {
            let call = json!({
                "id": text_field(item, "call_id")?,
                "type": "function",
                "function": {
                    "name": text_field(item, "name")?,
                    "arguments": item.get("arguments").and_then(Value::as_str).unwrap_or("{}"),
                },
            });
            let joins_last = messages.last().is_some_and(|m| {
                m["role"] == "assistant" && m.get("tool_calls").is_some() && m["content"].is_null()
            });
            match messages.last_mut() {
                Some(last) if joins_last => {
                    if let Some(calls) = last["tool_calls"].as_array_mut() {
                        calls.push(call);
                    }
                }
                _ => messages
                    .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        "function_call_output" => {
            let output = match item.get("output") {
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => return Err("a `function_call_output` needs an `output`".into()),
            };
            messages.push(json!({
                "role": "tool",
                "tool_call_id": text_field(item, "call_id")?,
                "content": output,
            }));
        }
        // An upstream's reasoning cannot be handed to another upstream.
        "reasoning" => {}
        other => return Err(format!("input items of type `{other}` are not supported")),
    }
    Ok(())
}

fn text_field<'a>(item: &'a Value, key: &str) -> Result<&'a str, String> {
    item.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{key}` must be a string"))
}

fn message_to_chat(item: &Value) -> Result<Value, String> {
    let role = match text_field(item, "role")? {
        // Chat upstreams other than OpenAI's newest know no `developer`.
        "developer" | "system" => "system",
        role @ ("user" | "assistant") => role,
        other => return Err(format!("unknown role `{other}`")),
    };
    let content = match item.get("content") {
        Some(Value::String(text)) => Value::String(text.clone()),
        Some(Value::Array(parts)) => {
            let parts = parts
                .iter()
                .map(part_to_chat)
                .collect::<Result<Vec<_>, _>>()?;
            // Text alone is sent as a string: every chat upstream takes that.
            if parts.iter().all(|p| p["type"] == "text") {
                let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
                Value::String(texts.join(""))
            } else {
                Value::Array(parts)
            }
        }
        _ => return Err("`content` must be a string or an array of content parts".into()),
    };
    Ok(json!({"role": role, "content": content}))
}

fn part_to_chat(part: &Value) -> Result<Value, String> {
    match part.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text" | "text") => {
            Ok(json!({"type": "text", "text": text_field(part, "text")?}))
        }
        Some("input_image") => {
            let url = part
                .get("image_url")
                .and_then(Value::as_str)
                .ok_or("an `input_image` needs an `image_url` (file ids are not supported)")?;
            let mut image = json!({"url": url});
            if let Some(detail) = part.get("detail").filter(|d| !d.is_null()) {
                image["detail"] = detail.clone();
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        Some(other) => Err(format!("content parts of type `{other}` are not supported")),
        None => Err("a content part needs a `type`".into()),
    }
}

/// Responses' flat function tools -> chat's nested ones.
fn tools_to_chat(tools: &Value) -> Result<Vec<Value>, ApiError> {
    let Value::Array(tools) = tools else {
        return Err(invalid("`tools` must be an array", "tools"));
    };
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| match tool.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = tool.get("name").and_then(Value::as_str).ok_or_else(|| {
                    invalid(&format!("`tools[{i}].name` must be a string"), "tools")
                })?;
                let mut function = json!({"name": name});
                for key in ["description", "parameters", "strict"] {
                    if let Some(v) = tool.get(key).filter(|v| !v.is_null()) {
                        function[key] = v.clone();
                    }
                }
                Ok(json!({"type": "function", "function": function}))
            }
            Some(hosted) => Err(invalid(
                &format!(
                    "`tools[{i}]`: tools of type `{hosted}` are not supported by this proxy; \
                     only `function` tools are"
                ),
                "tools",
            )),
            None => Err(invalid(
                &format!("`tools[{i}].type` must be a string"),
                "tools",
            )),
        })
        .collect()
}

fn tool_choice_to_chat(choice: &Value) -> Result<Value, ApiError> {
    match choice {
        Value::String(mode) if matches!(mode.as_str(), "auto" | "none" | "required") => {
            Ok(choice.clone())
        }
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o.get("name").and_then(Value::as_str).ok_or_else(|| {
                invalid("`tool_choice.name` must be a string", "tool_choice")
            })?;
            Ok(json!({"type": "function", "function": {"name": name}}))
        }
        _ => Err(invalid(
            "`tool_choice` must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\": ...}",
            "tool_choice",
        )),
    }
}

/// `text.format` -> `response_format`; plain text needs none.
fn format_to_chat(format: &Value) -> Result<Option<Value>, ApiError> {
    match format.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = json!({
                "name": format.get("name").cloned().unwrap_or_else(|| "response".into()),
                "schema": format.get("schema").cloned().unwrap_or_else(|| json!({})),
            });
            if let Some(strict) = format.get("strict").filter(|s| !s.is_null()) {
                schema["strict"] = strict.clone();
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        Some(other) => Err(invalid(
            &format!("`text.format.type` `{other}` is not supported"),
            "text",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Map<String, Value> {
        to_chat(body.as_object().unwrap(), &[]).unwrap()
    }

    fn error(body: Value) -> (String, Value) {
        let err = to_chat(body.as_object().unwrap(), &[]).unwrap_err();
        let json = err.to_json();
        (err.to_string(), json["error"]["param"].clone())
    }

    #[test]
    fn a_string_input_with_instructions_and_settings() {
        let c = chat(json!({
            "model": "main", "input": "hi", "instructions": "Be brief.",
            "max_output_tokens": 50, "temperature": 0.3, "top_p": 0.9, "user": "u1",
            "parallel_tool_calls": false, "reasoning": {"effort": "low"},
            "metadata": {"k": "v"}, "store": true, "previous_response_id": null, "unknown": 1,
        }));
        assert_eq!(
            Value::Object(c),
            json!({
                "model": "main",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "hi"},
                ],
                "max_tokens": 50, "temperature": 0.3, "top_p": 0.9, "user": "u1",
                "parallel_tool_calls": false, "reasoning_effort": "low",
            })
        );
    }

    #[test]
    fn items_become_messages_with_tool_calls_and_results() {
        let c = chat(json!({"model": "m", "input": [
            {"type": "message", "role": "developer", "content": "rules"},
            {"role": "user", "content": [
                {"type": "input_text", "text": "what is "},
                {"type": "input_text", "text": "this?"},
            ]},
            {"role": "user", "content": [
                {"type": "input_text", "text": "and this"},
                {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
            ]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{\"x\":1}"},
            {"type": "function_call", "call_id": "c2", "name": "b", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {"type": "function_call_output", "call_id": "c2", "output": {"ok": true}},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "done"}]},
        ]}));
        assert_eq!(
            c["messages"],
            json!([
                {"role": "system", "content": "rules"},
                {"role": "user", "content": "what is this?"},
                {"role": "user", "content": [
                    {"type": "text", "text": "and this"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{\"x\":1}"}},
                    {"id": "c2", "type": "function", "function": {"name": "b", "arguments": "{}"}},
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "one"},
                {"role": "tool", "tool_call_id": "c2", "content": "{\"ok\":true}"},
                {"role": "assistant", "content": "done"},
            ])
        );
    }

    #[test]
    fn function_tools_choice_and_formats_take_the_chat_shape() {
        let c = chat(json!({"model": "m", "input": "x",
            "tools": [{"type": "function", "name": "get_weather", "description": "d",
                "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
            "stream": true,
        }));
        assert_eq!(
            c["tools"],
            json!([{"type": "function", "function": {"name": "get_weather", "description": "d",
                "parameters": {"type": "object"}, "strict": true}}])
        );
        assert_eq!(
            c["tool_choice"],
            json!({"type": "function", "function": {"name": "get_weather"}})
        );
        assert_eq!(
            c["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}})
        );
        assert_eq!(c["stream"], true);
        assert_eq!(c["stream_options"], json!({"include_usage": true}));

        let c = chat(
            json!({"model": "m", "input": "x", "tool_choice": "required",
            "text": {"format": {"type": "json_object"}}}),
        );
        assert_eq!(c["tool_choice"], "required");
        assert_eq!(c["response_format"], json!({"type": "json_object"}));
        let plain = chat(json!({"model": "m", "input": "x", "text": {"format": {"type": "text"}}}));
        assert!(!plain.contains_key("response_format"));
    }

    #[test]
    fn a_continued_conversation_comes_before_the_new_input() {
        let history = [
            json!({"type": "message", "role": "user", "content": "first"}),
            json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "reply"}]}),
        ];
        let body = json!({"model": "m", "input": "second", "instructions": "sys"});
        let c = to_chat(body.as_object().unwrap(), &history).unwrap();
        let roles: Vec<&str> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert_eq!(c["messages"][3]["content"], "second");
        // With history, the new input may be left out.
        let only_history = json!({"model": "m"});
        assert!(to_chat(only_history.as_object().unwrap(), &history).is_ok());
    }

    #[test]
    fn what_cannot_be_translated_is_a_400_naming_it() {
        let (message, param) = error(json!({"model": "m", "input": "x",
            "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}]}));
        assert!(
            message.contains("tools[1]") && message.contains("web_search"),
            "{message}"
        );
        assert_eq!(param, "tools");

        let (message, param) = error(json!({"model": "m", "input": [
            {"role": "user", "content": "x"}, {"type": "item_reference", "id": "i"}]}));
        assert!(
            message.contains("input[1]") && message.contains("item_reference"),
            "{message}"
        );
        assert_eq!(param, "input");

        let (message, _) = error(json!({"model": "m", "input": [
            {"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}));
        assert!(message.contains("input_file"), "{message}");
        let (message, _) =
            error(json!({"model": "m", "input": [{"role": "tool", "content": "x"}]}));
        assert!(message.contains("unknown role `tool`"), "{message}");

        assert_eq!(error(json!({"input": "x"})).1, "model");
        assert_eq!(error(json!({"model": "m"})).1, "input");
        assert_eq!(error(json!({"model": "m", "input": []})).1, "input");
        assert_eq!(
            error(json!({"model": "m", "input": "x", "stream": "yes"})).1,
            "stream"
        );
        assert_eq!(
            error(json!({"model": "m", "input": "x", "tool_choice": "any"})).1,
            "tool_choice"
        );
        assert_eq!(
            error(json!({"model": "m", "input": "x", "text": {"format": {"type": "xml"}}})).1,
            "text"
        );
    }
}
