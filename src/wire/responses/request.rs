//! A `POST /v1/responses` body becomes the canonical (Chat Completions)
//! request every route speaks.
//!
//! Fields the canonical request has no use for (`metadata`, `store`,
//! `previous_response_id`) are the endpoint's business; unknown fields are
//! ignored, never forwarded. What cannot be translated (a hosted tool such
//! as `web_search`, an item type we do not know) is a 400 naming it, never
//! a silent drop.
//!
//! The body is not built into a JSON tree: [`Request`] keeps each field as
//! its own text (`RawValue`) and each is read where it is used, so the input
//! items go straight into chat messages and the store keeps the input's text
//! as the client sent it. That keeps a Responses request near the cost of a
//! chat request, whose body the proxy parses once.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// A Responses request, each field still the body's text. `null` reads as
/// absent, as it does for OpenAI.
#[derive(Deserialize, Default)]
pub struct Request<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    #[serde(borrow)]
    instructions: Option<&'a RawValue>,
    #[serde(borrow)]
    tools: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_choice: Option<&'a RawValue>,
    #[serde(borrow)]
    parallel_tool_calls: Option<&'a RawValue>,
    #[serde(borrow)]
    max_output_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    temperature: Option<&'a RawValue>,
    #[serde(borrow)]
    top_p: Option<&'a RawValue>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    reasoning: Option<&'a RawValue>,
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    user: Option<&'a RawValue>,
    #[serde(borrow)]
    store: Option<&'a RawValue>,
    #[serde(borrow)]
    stream: Option<&'a RawValue>,
    #[serde(borrow)]
    previous_response_id: Option<&'a RawValue>,
}

/// One input item's fields; which ones count depends on its `type`. Read
/// in one pass over the item, strings borrowed from the body where they
/// have no escapes.
#[derive(Deserialize)]
struct Item<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    role: Option<Str<'a>>,
    #[serde(borrow)]
    content: Option<Content<'a>>,
    #[serde(borrow)]
    call_id: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    arguments: Option<Str<'a>>,
    #[serde(borrow)]
    output: Option<&'a RawValue>,
}

/// A string field. (serde borrows a `Cow` only as a field of its own, not
/// inside an `Option`, hence the newtype.)
#[derive(Deserialize)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

/// A message's `content`: a string or content parts.
enum Content<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<Part<'a>>),
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    text: Option<Str<'a>>,
    #[serde(borrow)]
    image_url: Option<Str<'a>>,
    #[serde(borrow)]
    detail: Option<&'a RawValue>,
}

/// A tool, as the client declared it.
#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    description: Option<&'a RawValue>,
    #[serde(borrow)]
    parameters: Option<&'a RawValue>,
    #[serde(borrow)]
    strict: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Content<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Content<'a>, E> {
                Ok(Content::Text(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Content<'a>, E> {
                Ok(Content::Text(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E>(self, text: String) -> Result<Content<'a>, E> {
                Ok(Content::Text(Cow::Owned(text)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Content<'a>, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                while let Some(part) = seq.next_element()? {
                    parts.push(part);
                }
                Ok(Content::Parts(parts))
            }
        }
        d.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

impl<'a> Request<'a> {
    /// Reads a body; only its shape is checked here, each field where it is used.
    pub fn parse(body: &'a [u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(body).map_err(|e| {
            let message = match e.classify() {
                serde_json::error::Category::Data if !e.to_string().contains("duplicate") => {
                    "request body must be a JSON object".to_owned()
                }
                serde_json::error::Category::Data => format!("request body: {e}"),
                _ => format!("request body is not valid JSON: {e}"),
            };
            ApiError::invalid(message, None)
        })
    }

    /// `model`, as the client asked for it.
    pub fn model(&self) -> Result<Cow<'a, str>, ApiError> {
        self.model
            .and_then(string)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| invalid("you must provide a `model` (a non-empty string)", "model"))
    }

    /// The stored response this one continues.
    pub fn previous_response_id(&self) -> Result<Option<Cow<'a, str>>, ApiError> {
        self.previous_response_id
            .map(|raw| {
                string(raw).ok_or_else(|| {
                    invalid(
                        "`previous_response_id` must be a string",
                        "previous_response_id",
                    )
                })
            })
            .transpose()
    }

    /// Whether the response is to be stored (OpenAI's default: yes).
    pub fn store(&self) -> bool {
        self.store.is_none_or(|raw| raw.get() != "false")
    }

    /// A setting the Response object echoes, as the client sent it.
    pub fn setting(&self, key: &str) -> Option<Value> {
        let raw = match key {
            "model" => self.model,
            "instructions" => self.instructions,
            "tools" => self.tools,
            "tool_choice" => self.tool_choice,
            "parallel_tool_calls" => self.parallel_tool_calls,
            "max_output_tokens" => self.max_output_tokens,
            "temperature" => self.temperature,
            "top_p" => self.top_p,
            "text" => self.text,
            "reasoning" => self.reasoning,
            "metadata" => self.metadata,
            "user" => self.user,
            "store" => self.store,
            "previous_response_id" => self.previous_response_id,
            _ => None,
        }?;
        read(raw)
    }

    /// This request's input as the JSON array the store keeps, after
    /// `history` (the conversation it continues): the client's items as it
    /// sent them, a string input as the message it stands for.
    pub fn stored_input(&self, history: &[&RawValue]) -> String {
        let own = match self.input.map(|raw| (raw, string(raw))) {
            Some((_, Some(text))) => Cow::Owned(
                json!([{"type": "message", "role": "user",
                    "content": [{"type": "input_text", "text": text}]}])
                .to_string(),
            ),
            Some((raw, None)) => Cow::Borrowed(raw.get()),
            None => Cow::Borrowed("[]"),
        };
        // The items between the brackets, appended to the history's.
        let own = own
            .strip_prefix('[')
            .and_then(|items| items.strip_suffix(']'))
            .unwrap_or_default()
            .trim();
        let mut out = String::with_capacity(
            own.len() + 2 + history.iter().map(|i| i.get().len() + 1).sum::<usize>(),
        );
        out.push('[');
        for item in history
            .iter()
            .map(|i| i.get())
            .chain(Some(own).filter(|s| !s.is_empty()))
        {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(item);
        }
        out.push(']');
        out
    }

    /// The chat request for this request. `history` is the conversation a
    /// `previous_response_id` continues (its input and output items), put
    /// before this request's own input.
    pub fn to_chat(&self, history: &[&RawValue]) -> Result<Map<String, Value>, ApiError> {
        let mut chat = Map::new();
        chat.insert("model".into(), Value::String(self.model()?.into_owned()));

        let mut messages = vec![];
        if let Some(raw) = self.instructions {
            let text = string(raw)
                .ok_or_else(|| invalid("`instructions` must be a string", "instructions"))?;
            messages.push(json!({"role": "system", "content": text}));
        }
        for item in history {
            parse::<Item>(item)
                .ok_or_else(|| "an input item must be an object".to_owned())
                .and_then(|item| add_item(&mut messages, &item))
                .map_err(|why| {
                    invalid(
                        &format!("the stored conversation: {why}"),
                        "previous_response_id",
                    )
                })?;
        }
        match self.input {
            Some(raw) if raw.get().starts_with('"') => {
                let text = string(raw).unwrap_or_default();
                messages.push(json!({"role": "user", "content": text}));
            }
            Some(raw) if raw.get().starts_with('[') => {
                let items: Vec<Item> =
                    serde_json::from_str(raw.get()).map_err(|_| unreadable_item(raw))?;
                for (i, item) in items.iter().enumerate() {
                    add_item(&mut messages, item)
                        .map_err(|why| invalid(&format!("`input[{i}]`: {why}"), "input"))?;
                }
            }
            None if !history.is_empty() => {}
            _ => {
                return Err(invalid(
                    "you must provide `input` (a string or an array of input items)",
                    "input",
                ))
            }
        }
        if messages.is_empty() {
            return Err(invalid("`input` must not be empty", "input"));
        }
        chat.insert("messages".into(), Value::Array(messages));

        if let Some(tools) = self.tools {
            chat.insert("tools".into(), Value::Array(tools_to_chat(tools)?));
        }
        if let Some(choice) = self.tool_choice.and_then(read) {
            chat.insert("tool_choice".into(), tool_choice_to_chat(&choice)?);
        }
        for (raw, to) in [
            (self.parallel_tool_calls, "parallel_tool_calls"),
            (self.temperature, "temperature"),
            (self.top_p, "top_p"),
            (self.user, "user"),
            (self.max_output_tokens, "max_tokens"),
        ] {
            if let Some(v) = raw.and_then(read) {
                chat.insert(to.into(), v);
            }
        }
        if let Some(format) = self.setting("text").and_then(|t| t.get("format").cloned()) {
            if let Some(response_format) = format_to_chat(&format)? {
                chat.insert("response_format".into(), response_format);
            }
        }
        if let Some(effort) = self
            .setting("reasoning")
            .and_then(|r| r.get("effort").cloned())
            .filter(|e| !e.is_null())
        {
            chat.insert("reasoning_effort".into(), effort);
        }
        match self.stream.map(RawValue::get) {
            None | Some("false") => {}
            Some("true") => {
                chat.insert("stream".into(), true.into());
                chat.insert("stream_options".into(), json!({"include_usage": true}));
            }
            Some(_) => return Err(invalid("`stream` must be a boolean", "stream")),
        }
        Ok(chat)
    }
}

fn invalid(message: &str, param: &'static str) -> ApiError {
    ApiError::invalid(message, Some(param))
}

fn parse<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Option<T> {
    serde_json::from_str(raw.get()).ok()
}

/// A field as a JSON value (`null` is absent).
fn read(raw: &RawValue) -> Option<Value> {
    parse::<Value>(raw).filter(|v| !v.is_null())
}

/// A JSON string, borrowed from the body unless it has escapes.
fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    match serde_json::from_str::<&str>(text) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
    }
}

/// The 400 for an input that did not read as items: which item, and why.
fn unreadable_item(input: &RawValue) -> ApiError {
    let Some(items) = parse::<Vec<&RawValue>>(input) else {
        return invalid(
            "`input` must be a string or an array of input items",
            "input",
        );
    };
    for (i, item) in items.into_iter().enumerate() {
        if let Err(e) = serde_json::from_str::<Item>(item.get()) {
            let why = if item.get().starts_with('{') {
                e.to_string()
            } else {
                "an input item must be an object".to_owned()
            };
            return invalid(&format!("`input[{i}]`: {why}"), "input");
        }
    }
    invalid("`input` could not be read", "input")
}

fn text_field<'a, 'b>(field: &'b Option<Str<'a>>, key: &str) -> Result<&'b str, String> {
    field
        .as_ref()
        .map(|s| s.0.as_ref())
        .ok_or_else(|| format!("`{key}` must be a string"))
}

/// Appends one input item as chat messages. Consecutive `function_call`
/// items are one assistant turn with several tool calls, as chat has it.
fn add_item(messages: &mut Vec<Value>, item: &Item) -> Result<(), String> {
    let kind = match &item.kind {
        Some(kind) => kind.0.as_ref(),
        // A bare `{"role", "content"}` is a message.
        None if item.role.is_some() => "message",
        None => return Err("an input item needs a `type`".into()),
    };
    match kind {
        "message" => messages.push(message_to_chat(item)?),
        "function_call" => {
            let call = json!({
                "id": text_field(&item.call_id, "call_id")?,
                "type": "function",
                "function": {
                    "name": text_field(&item.name, "name")?,
                    "arguments": text_field(&item.arguments, "arguments").unwrap_or("{}"),
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
            let output = match item.output {
                Some(raw) => match string(raw) {
                    Some(text) => text.into_owned(),
                    None => read(raw).unwrap_or_default().to_string(),
                },
                None => return Err("a `function_call_output` needs an `output`".into()),
            };
            messages.push(json!({
                "role": "tool",
                "tool_call_id": text_field(&item.call_id, "call_id")?,
                "content": output,
            }));
        }
        // An upstream's reasoning cannot be handed to another upstream.
        "reasoning" => {}
        other => return Err(format!("input items of type `{other}` are not supported")),
    }
    Ok(())
}

fn message_to_chat(item: &Item) -> Result<Value, String> {
    let role = match text_field(&item.role, "role")? {
        // Chat upstreams other than OpenAI's newest know no `developer`.
        "developer" | "system" => "system",
        "user" => "user",
        "assistant" => "assistant",
        other => return Err(format!("unknown role `{other}`")),
    };
    let content = match &item.content {
        Some(Content::Text(text)) => Value::String(text.as_ref().to_owned()),
        Some(Content::Parts(parts)) => {
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
        None => return Err("`content` must be a string or an array of content parts".into()),
    };
    Ok(json!({"role": role, "content": content}))
}

fn part_to_chat(part: &Part) -> Result<Value, String> {
    match part.kind.as_ref().map(|k| k.0.as_ref()) {
        Some("input_text" | "output_text" | "text") => {
            Ok(json!({"type": "text", "text": text_field(&part.text, "text")?}))
        }
        Some("input_image") => {
            let url = text_field(&part.image_url, "image_url").map_err(|_| {
                "an `input_image` needs an `image_url` (file ids are not supported)"
            })?;
            let mut image = json!({"url": url});
            if let Some(detail) = part.detail.and_then(read) {
                image["detail"] = detail;
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        Some(other) => Err(format!("content parts of type `{other}` are not supported")),
        None => Err("a content part needs a `type`".into()),
    }
}

/// Responses' flat function tools -> chat's nested ones.
fn tools_to_chat(tools: &RawValue) -> Result<Vec<Value>, ApiError> {
    let tools: Vec<&RawValue> =
        parse(tools).ok_or_else(|| invalid("`tools` must be an array", "tools"))?;
    tools
        .into_iter()
        .enumerate()
        .map(|(i, tool)| {
            let tool: Tool = parse(tool)
                .ok_or_else(|| invalid(&format!("`tools[{i}]` must be an object"), "tools"))?;
            match tool.kind.and_then(string).as_deref() {
                Some("function") => {
                    let name = tool.name.and_then(string).ok_or_else(|| {
                        invalid(&format!("`tools[{i}].name` must be a string"), "tools")
                    })?;
                    let mut function = json!({"name": name});
                    for (key, raw) in [
                        ("description", tool.description),
                        ("parameters", tool.parameters),
                        ("strict", tool.strict),
                    ] {
                        if let Some(v) = raw.and_then(read) {
                            function[key] = v;
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
            }
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

    fn to_chat(body: &Value, history: &[&RawValue]) -> Result<Map<String, Value>, ApiError> {
        let bytes = body.to_string();
        Request::parse(bytes.as_bytes())?.to_chat(history)
    }

    fn chat(body: Value) -> Map<String, Value> {
        to_chat(&body, &[]).unwrap()
    }

    fn error(body: Value) -> (String, Value) {
        let err = to_chat(&body, &[]).unwrap_err();
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
        ]
        .map(|item| serde_json::value::to_raw_value(&item).unwrap());
        let history: Vec<&RawValue> = history.iter().map(|item| &**item).collect();
        let body = json!({"model": "m", "input": "second", "instructions": "sys"});
        let c = to_chat(&body, &history).unwrap();
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
        assert!(to_chat(&only_history, &history).is_ok());
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
