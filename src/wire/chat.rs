//! The Chat Completions dialect (and its siblings on the same wire: legacy
//! completions, embeddings): which endpoint a request is for, and the checks
//! on its body. Only what routing and the proxy rely on is checked; every
//! other field is the provider's business and is forwarded untouched.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// The OpenAI endpoints the proxy routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
    Embeddings,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
        }
    }
}

/// Checks only what routing and the proxy rely on; every other field is the
/// provider's business and is forwarded untouched.
pub fn parse_request(bytes: &[u8], endpoint: Endpoint) -> Result<Map<String, Value>, ApiError> {
    let body = json_object(bytes)?;
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {}
        None => {
            return Err(ApiError::invalid(
                "you must provide a `model` (a string)",
                Some("model"),
            ))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "`model` must be a non-empty string",
                Some("model"),
            ))
        }
    }
    if !matches!(
        body.get("stream"),
        None | Some(Value::Bool(_)) | Some(Value::Null)
    ) {
        return Err(ApiError::invalid(
            "`stream` must be a boolean",
            Some("stream"),
        ));
    }
    if !matches!(
        body.get("stream_options"),
        None | Some(Value::Object(_)) | Some(Value::Null)
    ) {
        return Err(ApiError::invalid(
            "`stream_options` must be an object",
            Some("stream_options"),
        ));
    }
    match endpoint {
        Endpoint::Chat => check_messages(body.get("messages"))?,
        Endpoint::Embeddings if body.get("input").is_none_or(Value::is_null) => {
            return Err(ApiError::invalid(
                "you must provide an `input`",
                Some("input"),
            ))
        }
        Endpoint::Completions if body.get("prompt").is_none_or(Value::is_null) => {
            return Err(ApiError::invalid(
                "you must provide a `prompt`",
                Some("prompt"),
            ))
        }
        _ => {}
    }
    if endpoint == Endpoint::Embeddings && body.get("stream").and_then(Value::as_bool) == Some(true)
    {
        return Err(ApiError::invalid(
            "embeddings cannot be streamed",
            Some("stream"),
        ));
    }
    Ok(body)
}

/// A request body that must be a JSON object, in any dialect.
pub fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}"), None))?;
    match value {
        Value::Object(body) => Ok(body),
        _ => Err(ApiError::invalid(
            "request body must be a JSON object",
            None,
        )),
    }
}

fn check_messages(messages: Option<&Value>) -> Result<(), ApiError> {
    let messages = match messages {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "`messages` must not be empty",
                Some("messages"),
            ))
        }
        None => {
            return Err(ApiError::invalid(
                "you must provide `messages` (an array)",
                Some("messages"),
            ))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "`messages` must be an array",
                Some("messages"),
            ))
        }
    };
    for (i, m) in messages.iter().enumerate() {
        if !m.get("role").is_some_and(Value::is_string) {
            return Err(ApiError::invalid(
                format!("`messages[{i}].role` must be a string"),
                Some("messages"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        parse_request(body.as_bytes(), Endpoint::Chat)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn names_the_offending_field() {
        assert!(err("not json").contains("not valid JSON"));
        assert!(err("[]").contains("JSON object"));
        assert!(err(r#"{"messages":[]}"#).contains("`model`"));
        assert!(err(r#"{"model":1,"messages":[]}"#).contains("`model`"));
        assert!(err(r#"{"model":"m","messages":{}}"#).contains("`messages`"));
        assert!(err(r#"{"model":"m","messages":[{"content":"x"}]}"#).contains("messages[0].role"));
        assert!(
            err(r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#)
                .contains("`stream`")
        );
    }

    #[test]
    fn keeps_unknown_fields_for_the_provider() {
        let body = parse_request(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"top_k":5,"provider":{"order":["x"]}}"#,
            Endpoint::Chat,
        )
        .unwrap();
        assert_eq!(body["top_k"], 5);
        assert_eq!(body["provider"]["order"][0], "x");
    }
}
