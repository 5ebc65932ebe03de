//! The Chat Completions dialect (and its siblings on the same wire: legacy
//! completions, embeddings): which endpoint a request is for, and the checks
//! on its body. Only what routing and the proxy rely on is checked; every
//! other field is the provider's business and is forwarded untouched.

mod body;
mod scan;

use bytes::Bytes;
use serde_json::{Map, Value};

pub use body::{reserved_output, ChatBody};
use scan::{Messages, Scanned, Shape};

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
/// provider's business and is forwarded untouched. The whole body is
/// checked to be JSON as strictly as a parse would, but no tree is built.
pub fn parse_request(bytes: Bytes, endpoint: Endpoint) -> Result<ChatBody, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        // Not an object: the parse's own words say what is wrong.
        return Err(match serde_json::from_slice::<Value>(&bytes) {
            Err(e) => not_json(e),
            Ok(_) => ApiError::invalid("request body must be a JSON object", None),
        });
    }
    // UTF-8 checked once for the whole body (JSON allows it nowhere but in
    // strings, so this refuses what a parse would); parsing a `str` then
    // skips the check string by string, a third of the scan.
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        ApiError::invalid(
            format!("request body is not valid JSON: not UTF-8 ({e})"),
            None,
        )
    })?;
    let scanned: Scanned = serde_json::from_str(text).map_err(not_json)?;
    let Some(raw_model) = scanned.model else {
        return Err(ApiError::invalid(
            "you must provide a `model` (a string)",
            Some("model"),
        ));
    };
    let model = match serde_json::from_str::<String>(raw_model.get()) {
        Ok(model) if !model.is_empty() => model,
        _ => {
            return Err(ApiError::invalid(
                "`model` must be a non-empty string",
                Some("model"),
            ))
        }
    };
    if !matches!(scanned.stream, None | Some(Shape::Bool(_) | Shape::Null)) {
        return Err(ApiError::invalid(
            "`stream` must be a boolean",
            Some("stream"),
        ));
    }
    if !matches!(
        scanned.stream_options,
        None | Some(Shape::Object | Shape::Null)
    ) {
        return Err(ApiError::invalid(
            "`stream_options` must be an object",
            Some("stream_options"),
        ));
    }
    let given = |shape: Option<Shape>| shape.is_some_and(|s| s != Shape::Null);
    match endpoint {
        Endpoint::Chat => check_messages(scanned.messages)?,
        Endpoint::Embeddings if !given(scanned.input) => {
            return Err(ApiError::invalid(
                "you must provide an `input`",
                Some("input"),
            ))
        }
        Endpoint::Completions if !given(scanned.prompt) => {
            return Err(ApiError::invalid(
                "you must provide a `prompt`",
                Some("prompt"),
            ))
        }
        _ => {}
    }
    let stream = scanned.stream == Some(Shape::Bool(true));
    if endpoint == Endpoint::Embeddings && stream {
        return Err(ApiError::invalid(
            "embeddings cannot be streamed",
            Some("stream"),
        ));
    }
    let reserved = body::reserved_by(|key| {
        let shape = match key {
            "max_tokens" => scanned.max_tokens,
            _ => scanned.max_completion_tokens,
        };
        match shape {
            Some(Shape::Count(n)) => Some(n),
            _ => None,
        }
    });
    if scanned.models > 1 {
        // Which one an upstream would read is its parser's choice: send
        // the tree, which has one.
        let mut tree: Map<String, Value> = serde_json::from_slice(&bytes).map_err(not_json)?;
        tree.insert("model".into(), Value::String(model));
        return Ok(ChatBody::from(tree));
    }
    // The raw value borrows from `bytes`: its place there is its offset.
    let at = raw_model.get().as_ptr() as usize - text.as_ptr() as usize;
    let model_at = at..at + raw_model.get().len();
    Ok(ChatBody::raw(bytes, model_at, model, stream, reserved))
}

fn not_json(e: serde_json::Error) -> ApiError {
    ApiError::invalid(format!("request body is not valid JSON: {e}"), None)
}

fn check_messages(messages: Option<Messages>) -> Result<(), ApiError> {
    let wrong = match messages {
        None => "you must provide `messages` (an array)",
        Some(Messages::NotArray) => "`messages` must be an array",
        Some(Messages::Array { len: 0, .. }) => "`messages` must not be empty",
        Some(Messages::Array {
            roleless: Some(i), ..
        }) => {
            return Err(ApiError::invalid(
                format!("`messages[{i}].role` must be a string"),
                Some("messages"),
            ))
        }
        Some(Messages::Array { roleless: None, .. }) => return Ok(()),
    };
    Err(ApiError::invalid(wrong, Some("messages")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        parse_request(Bytes::copy_from_slice(body.as_bytes()), Endpoint::Chat)
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
        let body = parse(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"top_k":5,"provider":{"order":["x"]}}"#,
        );
        assert_eq!(body.tree()["top_k"], 5);
        assert_eq!(body.tree()["provider"]["order"][0], "x");
    }

    fn parse(body: &str) -> ChatBody {
        parse_request(Bytes::copy_from_slice(body.as_bytes()), Endpoint::Chat).unwrap()
    }

    #[test]
    fn sends_the_clients_bytes_with_only_the_model_replaced() {
        let sent = r#" { "messages" : [{"role":"user","content":"h\u00e9"}], "temperature":1.50,
            "model":"route","z":1 }"#;
        let mut body = parse(sent);
        assert_eq!(body.model(), "route");
        assert!(!body.stream());
        body.set_model("a \"quoted\" model");
        assert_eq!(
            String::from_utf8(body.to_vec()).unwrap(),
            sent.replace(r#""route""#, r#""a \"quoted\" model""#)
        );
        // Reading the tree keeps the bytes; changing it sends the tree.
        assert_eq!(body.tree()["model"], "a \"quoted\" model");
        assert_eq!(body.raw_len(), Some(sent.len()));
        body.tree_mut().insert("stream".into(), Value::Bool(true));
        assert_eq!(body.raw_len(), None);
        assert!(body.stream());
        body.set_model("m2");
        let resent: Value = serde_json::from_slice(&body.to_vec()).unwrap();
        assert_eq!(resent["model"], "m2");
        assert_eq!(resent["temperature"], 1.5);
        assert_eq!(resent["messages"][0]["content"], "hé");
    }

    #[test]
    fn reads_routing_fields_without_a_tree() {
        let body = parse(
            r#"{"model":"m","stream":true,"max_tokens":9,"messages":[{"role":"user","content":"x"}]}"#,
        );
        assert!(body.stream());
        assert_eq!(body.reserved_output(), Some(("max_tokens", 9)));
        let needle = memchr::memmem::Finder::new("\"tool_calls\"");
        assert!(!body.may_hold(&needle));
        assert!(ChatBody::from(body.tree().clone()).may_hold(&needle));
        // A model given twice: the last counts, and only it is sent.
        let twice = parse(r#"{"model":"a","messages":[{"role":"user"}],"model":"b"}"#);
        assert_eq!(twice.model(), "b");
        let sent: Map<String, Value> = serde_json::from_slice(&twice.to_vec()).unwrap();
        assert_eq!(sent.len(), 2);
    }

    #[test]
    fn checks_the_other_endpoints_fields() {
        let err = |body: &str, endpoint| {
            parse_request(Bytes::copy_from_slice(body.as_bytes()), endpoint)
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"model":"m","input":null}"#, Endpoint::Embeddings).contains("`input`"));
        assert!(err(r#"{"model":"m"}"#, Endpoint::Completions).contains("`prompt`"));
        assert!(err(
            r#"{"model":"m","input":"x","stream":true}"#,
            Endpoint::Embeddings
        )
        .contains("cannot be streamed"));
        assert!(err(r#"{"model":"m","messages":null}"#, Endpoint::Chat).contains("an array"));
        assert!(err(r#"{"model":"","messages":[]}"#, Endpoint::Chat).contains("non-empty"));
        assert!(err(
            r#"{"model":"m","messages":[],"stream_options":1}"#,
            Endpoint::Chat
        )
        .contains("`stream_options`"));
    }
}
