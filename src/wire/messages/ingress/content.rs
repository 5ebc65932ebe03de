//! A Messages conversation (`system` and `messages`) as chat messages.
//!
//! A user turn's `tool_result` blocks become chat `tool` messages ahead of
//! what else the turn says, since chat wants each result right after the
//! assistant message that made the call. An assistant turn's signed
//! thinking travels as the `thinking_blocks` extension (see the parent
//! module), so an Anthropic upstream can be sent it back unchanged.

use serde_json::{json, Map, Value};

use super::request::invalid;
use crate::error::ApiError;

/// `system` as the leading system message, if it says anything.
pub fn system(system: &Value) -> Result<Option<Value>, ApiError> {
    let blocks = match system {
        Value::String(text) if text.is_empty() => return Ok(None),
        Value::String(text) => return Ok(Some(json!({"role": "system", "content": text}))),
        Value::Array(blocks) => blocks,
        _ => {
            return Err(invalid(
                "`system`: must be a string or an array of text blocks",
                "system",
            ))
        }
    };
    let mut parts = Vec::with_capacity(blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        let text = block
            .as_object()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .and_then(|b| b.get("text"))
            .and_then(Value::as_str);
        let Some(text) = text else {
            return Err(invalid(
                format!(
                    "`system.{i}`: must be a text block (`{{\"type\": \"text\", \"text\": ...}}`)"
                ),
                "system",
            ));
        };
        parts.push(text_part(text, block));
    }
    if parts.is_empty() {
        return Ok(None);
    }
    // Cache breakpoints are per block; without any, one string is what every
    // chat upstream accepts.
    let content = if parts.iter().any(|p| p.get("cache_control").is_some()) {
        Value::Array(parts)
    } else {
        let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        texts.join("\n").into()
    };
    Ok(Some(json!({"role": "system", "content": content})))
}

/// `messages` (a non-empty array) appended to `out` as chat messages.
pub fn messages(list: &[Value], out: &mut Vec<Value>) -> Result<(), ApiError> {
    for (i, message) in list.iter().enumerate() {
        let Some(message) = message.as_object() else {
            return Err(invalid(
                format!("`messages.{i}`: must be an object"),
                "messages",
            ));
        };
        let content = match message.get("content") {
            None | Some(Value::Null) => {
                return Err(invalid(
                    format!("`messages.{i}.content`: field required"),
                    "messages",
                ))
            }
            Some(Value::String(text)) => Content::Text(text),
            Some(Value::Array(blocks)) => Content::Blocks(blocks),
            Some(_) => {
                return Err(invalid(
                    format!(
                        "`messages.{i}.content`: must be a string or an array of content blocks"
                    ),
                    "messages",
                ))
            }
        };
        match message.get("role").and_then(Value::as_str) {
            Some("user") => user(i, content, out)?,
            Some("assistant") => out.push(assistant(i, content)?),
            // Claude Code 2.x puts its environment notes in the conversation
            // as system turns; they read as system text wherever they stand.
            Some("system") => {
                let text = match content {
                    Content::Text(text) => Value::String(text.to_owned()),
                    Content::Blocks(blocks) => Value::Array(blocks.to_vec()),
                };
                out.extend(system(&text).map_err(|_| {
                    invalid(
                        format!("`messages.{i}.content`: a system turn holds text blocks only"),
                        "messages",
                    )
                })?);
            }
            _ => {
                return Err(invalid(
                    format!("`messages.{i}.role`: must be \"user\", \"assistant\" or \"system\""),
                    "messages",
                ))
            }
        }
    }
    Ok(())
}

enum Content<'a> {
    Text(&'a str),
    Blocks(&'a [Value]),
}

/// A block's `type`, checked to be there.
fn block_type(i: usize, j: usize, block: &Value) -> Result<&str, ApiError> {
    block["type"].as_str().ok_or_else(|| {
        invalid(
            format!(
                "`messages.{i}.content.{j}`: must be a content block (an object with a `type`)"
            ),
            "messages",
        )
    })
}

fn user(i: usize, content: Content, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let blocks = match content {
        Content::Text(text) => {
            out.push(json!({"role": "user", "content": text}));
            return Ok(());
        }
        Content::Blocks(blocks) => blocks,
    };
    let mut parts = vec![];
    for (j, block) in blocks.iter().enumerate() {
        let at = |what: &str| invalid(format!("`messages.{i}.content.{j}{what}"), "messages");
        match block_type(i, j, block)? {
            "text" => {
                let text = block["text"]
                    .as_str()
                    .ok_or_else(|| at(".text`: must be a string"))?;
                parts.push(text_part(text, block));
            }
            "image" => parts.extend(image(&block["source"]).map_err(|why| at(&why))?),
            "tool_result" => {
                let id = block["tool_use_id"]
                    .as_str()
                    .ok_or_else(|| at(".tool_use_id`: must be a string"))?;
                out.push(json!({"role": "tool", "tool_call_id": id,
                    "content": result_text(&block["content"])}));
            }
            "document" if block["source"]["type"] == "text" => {
                let text = block["source"]["data"]
                    .as_str()
                    .ok_or_else(|| at(".source.data`: must be a string"))?;
                parts.push(text_part(text, block));
            }
            _ => {}
        }
    }
    if !parts.is_empty() {
        out.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

/// An image's `source` as a chat image part; the error names what is wrong
/// below the block. Sources chat cannot carry (`file`, from the Files API)
/// are left out: a Messages upstream still gets them, untranslated.
fn image(source: &Value) -> Result<Option<Value>, String> {
    let url = match source["type"].as_str() {
        Some("base64") => {
            let (Some(media_type), Some(data)) =
                (source["media_type"].as_str(), source["data"].as_str())
            else {
                return Err(
                    ".source`: a base64 image needs `media_type` and `data` strings".into(),
                );
            };
            format!("data:{media_type};base64,{data}")
        }
        Some("url") => source["url"]
            .as_str()
            .ok_or(".source.url`: must be a string")?
            .to_owned(),
        Some(_) => return Ok(None),
        None => return Err(".source.type`: must be a string".into()),
    };
    Ok(Some(
        json!({"type": "image_url", "image_url": {"url": url}}),
    ))
}

/// What a tool result says, as the text chat's tool message carries: its
/// text blocks one per line (an image in a result has no place in chat).
fn result_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn assistant(i: usize, content: Content) -> Result<Value, ApiError> {
    let blocks = match content {
        Content::Text(text) => return Ok(json!({"role": "assistant", "content": text})),
        Content::Blocks(blocks) => blocks,
    };
    let (mut texts, mut reasoning, mut thinking, mut calls) = (vec![], vec![], vec![], vec![]);
    for (j, block) in blocks.iter().enumerate() {
        let at = |what: &str| invalid(format!("`messages.{i}.content.{j}{what}"), "messages");
        match block_type(i, j, block)? {
            "text" => texts.push(
                block["text"]
                    .as_str()
                    .ok_or_else(|| at(".text`: must be a string"))?,
            ),
            "thinking" => {
                reasoning.extend(block["thinking"].as_str());
                thinking.push(block.clone());
            }
            "redacted_thinking" => thinking.push(block.clone()),
            "tool_use" => {
                let (Some(id), Some(name)) = (block["id"].as_str(), block["name"].as_str()) else {
                    return Err(at("`: a tool_use block needs `id` and `name` strings"));
                };
                let arguments = match &block["input"] {
                    Value::Null => "{}".to_owned(),
                    input => input.to_string(),
                };
                calls.push(json!({"id": id, "type": "function",
                    "function": {"name": name, "arguments": arguments}}));
            }
            _ => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    let content = if texts.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        texts.join("\n").into()
    };
    message.insert("content".into(), content);
    if !thinking.is_empty() {
        message.insert("reasoning_content".into(), reasoning.join("\n").into());
        message.insert("thinking_blocks".into(), Value::Array(thinking));
    }
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    Ok(Value::Object(message))
}

/// A chat text part, keeping the block's cache breakpoint.
fn text_part(text: &str, block: &Value) -> Value {
    let mut part = json!({"type": "text", "text": text});
    if let Some(cache) = block.get("cache_control").filter(|c| !c.is_null()) {
        part["cache_control"] = cache.clone();
    }
    part
}
