//! Reading a reply: a non-2xx body classified, a JSON answer skimmed (or
//! normalized when it must be), a stream's first event awaited, and each
//! streamed event normalized for the client.

use std::sync::LazyLock;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, Response};
use http_body_util::BodyExt;
use memchr::memmem::Finder;
use serde_json::Value;

use super::skim::skim;
use super::{classify, Answer};
use crate::body::Body;
use crate::error::{ErrorKind, UpstreamError};
use crate::wire::chat::Endpoint;
use crate::wire::messages;
use crate::wire::sse::{self, SseEvent, SseReader};
use crate::wire::usage::{self as normalize, Usage};

/// An upstream error body larger than this is cut: it is only read for its message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// How a stream's events are read.
pub(super) struct Events<'a> {
    pub(super) max_bytes: usize,
    pub(super) secret: Option<&'a str>,
}

pub(super) fn is_event_stream(resp: &Response<Body>) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

pub(super) async fn error(resp: Response<Body>) -> UpstreamError {
    let (parts, body) = resp.into_parts();
    // A body that breaks off still has a status worth classifying.
    let (bytes, _) = read_up_to(body, ERROR_BODY_LIMIT).await;
    classify::classify(parts.status, &parts.headers, &bytes, SystemTime::now())
}

/// How reading a body stopped early.
pub(super) enum Cut {
    TooLarge,
    Broke(String),
}

/// Reads until the body ends, fails, or would pass `limit` bytes (the rest
/// is left unread, and nothing past `limit` is held); says how it stopped.
pub(super) async fn read_up_to(mut body: Body, limit: usize) -> (Bytes, Result<(), Cut>) {
    let mut bytes = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    let room = limit - bytes.len();
                    if data.len() > room {
                        bytes.extend_from_slice(&data[..room]);
                        return (bytes.freeze(), Err(Cut::TooLarge));
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            Err(e) => return (bytes.freeze(), Err(Cut::Broke(e.to_string()))),
        }
    }
    (bytes.freeze(), Ok(()))
}

/// A non-streamed answer, read within `max_bytes`.
pub(super) async fn json(
    resp: Response<Body>,
    endpoint: Endpoint,
    max_bytes: usize,
) -> Result<Answer, UpstreamError> {
    let bad = |m: String| UpstreamError::transport(ErrorKind::ServerError, m);
    let (parts, body) = resp.into_parts();
    let (bytes, read) = read_up_to(body, max_bytes).await;
    whole(read, max_bytes)?;
    if let Some(usage) = skim(&bytes, endpoint) {
        return Ok(Answer::Json { body: bytes, usage });
    }
    let mut value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        bad(format!(
            "upstream answered {} with invalid JSON: {e}",
            parts.status
        ))
    })?;
    if let Some(err) = classify::error_in_body(&value, &parts.headers, SystemTime::now()) {
        return Err(err);
    }
    let changed = endpoint != Endpoint::Embeddings && normalize::completion(&mut value);
    let usage = normalize::usage(&value);
    let body = if changed {
        Bytes::from(serde_json::to_vec(&value).map_err(|e| bad(e.to_string()))?)
    } else {
        bytes
    };
    Ok(Answer::Json { body, usage })
}

/// Whether a body was read whole: a cut is the answer's failure.
pub(super) fn whole(read: Result<(), Cut>, max_bytes: usize) -> Result<(), UpstreamError> {
    match read {
        Ok(()) => Ok(()),
        Err(Cut::TooLarge) => Err(too_large(max_bytes)),
        Err(Cut::Broke(e)) => Err(UpstreamError::transport(
            ErrorKind::ServerError,
            format!("upstream answer broke off: {e}"),
        )),
    }
}

/// A non-streamed answer in the client's own dialect (Messages), read
/// within `max_bytes` and handed on as it came; only its usage is read.
pub(super) async fn native_json(
    resp: Response<Body>,
    max_bytes: usize,
) -> Result<Answer, UpstreamError> {
    let (parts, body) = resp.into_parts();
    let (bytes, read) = read_up_to(body, max_bytes).await;
    whole(read, max_bytes)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        UpstreamError::transport(
            ErrorKind::ServerError,
            format!("upstream answered {} with invalid JSON: {e}", parts.status),
        )
    })?;
    if let Some(err) = classify::error_in_body(&value, &parts.headers, SystemTime::now()) {
        return Err(err);
    }
    let usage = value.get("usage").map(messages::usage);
    Ok(Answer::Json { body: bytes, usage })
}

/// A whole `chat.completion` as a one-chunk stream.
pub(super) fn json_as_stream(answer: Answer) -> Answer {
    let Answer::Json { body, .. } = answer else {
        return answer;
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
        return Answer::Json { body, usage: None };
    };
    if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
        for choice in choices {
            if let Some(mut message) = choice.as_object_mut().and_then(|c| c.remove("message")) {
                if let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) {
                    for (i, call) in calls.iter_mut().enumerate() {
                        call["index"] = i.into();
                    }
                }
                choice["delta"] = message;
            }
        }
    }
    v["object"] = "chat.completion.chunk".into();
    let mut first =
        bytes::BytesMut::from(&sse::data(&serde_json::to_vec(&v).unwrap_or_default())[..]);
    first.extend_from_slice(sse::DONE);
    Answer::Stream {
        first: first.freeze(),
        rest: None,
    }
}

/// An answer over `max_answer_bytes`: a 502 for the client, returned at
/// once. Not retried and not failed over: the same question would likely
/// draw an answer as large again, and each attempt would hold that much.
pub(super) fn too_large(max_bytes: usize) -> UpstreamError {
    let mut err = UpstreamError::transport(
        ErrorKind::ClientError,
        format!(
            "the upstream answer is larger than max_answer_bytes ({max_bytes} bytes); \
             not retried (raise [server] max_answer_bytes to accept it)"
        ),
    );
    err.status = 502;
    err.error_type = Some("server_error".into());
    err.code = Some("upstream_error".into());
    err
}

/// The stream's first event, awaited so that a stream that fails before it
/// fails over. `native`: the events are in the client's dialect (Messages)
/// and go on as they came, with their names.
pub(super) async fn first_event(
    resp: Response<Body>,
    events: Events<'_>,
    native: bool,
) -> Result<Answer, UpstreamError> {
    let broke = |m: String| UpstreamError::transport(ErrorKind::ServerError, m);
    let mut reader = SseReader::new(resp.into_body(), events.max_bytes).mask(events.secret);
    // A native stream's opening events, held until one says something.
    let mut held = bytes::BytesMut::new();
    loop {
        match reader.next().await {
            Ok(Some(SseEvent::Comment)) => continue,
            Ok(Some(SseEvent::Data { data, .. })) if data == "[DONE]" => {
                reader.finish();
                return Ok(Answer::Stream {
                    first: Bytes::from_static(sse::DONE),
                    rest: None,
                });
            }
            Ok(Some(SseEvent::Data { event, data })) if native => {
                let value: Value = serde_json::from_str(&data).unwrap_or_default();
                if let Some(err) = event_error(&value) {
                    return Err(err);
                }
                let name = event
                    .as_deref()
                    .or(value["type"].as_str())
                    .unwrap_or("message");
                held.extend_from_slice(&sse::named(name, data.as_bytes()));
                // Nothing said yet: an `error` may still come, and fail over.
                if matches!(name, "message_start" | "ping") {
                    continue;
                }
                return Ok(Answer::Stream {
                    first: held.freeze(),
                    rest: Some(reader),
                });
            }
            Ok(Some(SseEvent::Data { data, .. })) => {
                let (first, _usage) = normalize_event(&data)?;
                return Ok(Answer::Stream {
                    first,
                    rest: Some(reader),
                });
            }
            Ok(None) => {
                return Err(broke(
                    "upstream ended the stream before its first event".into(),
                ))
            }
            Err(e) => return Err(broke(format!("upstream stream broke: {e}"))),
        }
    }
}

/// One upstream `data:` payload, normalized and encoded for the client; an
/// error chunk (OpenRouter reports mid-stream failures that way) is an `Err`.
pub fn normalize_event(data: &str) -> Result<(Bytes, Option<Usage>), UpstreamError> {
    // Only these fields are ever rewritten: skip the parse for plain content
    // deltas, which are nearly every chunk of a stream. OpenAI sends
    // `"usage":null` in every chunk of a stream that asked for usage; a null
    // usage or error needs nothing either.
    let interesting = ["\"reasoning\"", "\"reasoning_details\""]
        .iter()
        .any(|k| data.contains(k))
        || has_value(data, &USAGE)
        || has_value(data, &ERROR);
    if !interesting {
        return Ok((sse::data(data.as_bytes()), None));
    }
    let Ok(mut value) = serde_json::from_str::<Value>(data) else {
        return Ok((sse::data(data.as_bytes()), None));
    };
    if let Some(err) = event_error(&value) {
        return Err(err);
    }
    let changed = normalize::chunk(&mut value);
    let usage = normalize::usage(&value);
    let bytes = if changed {
        sse::data(&serde_json::to_vec(&value).unwrap_or_default())
    } else {
        sse::data(data.as_bytes())
    };
    Ok((bytes, usage))
}

/// The error a streamed event reports (OpenRouter's error chunk, a Messages
/// `error` event), if it reports one; a stream has no headers to consult.
pub fn event_error(event: &Value) -> Option<UpstreamError> {
    classify::error_in_body(event, &http::HeaderMap::new(), SystemTime::now())
}

/// The keys looked for in every answer and stream event, each searcher
/// built once: building one costs more than searching a short body.
static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"usage\""));
static ERROR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"error\""));

/// Whether `key` appears in `json` with a value other than `null` (a
/// textual look: a false positive only costs the parse it saves).
fn has_value(json: &str, key: &Finder<'_>) -> bool {
    key.find_iter(json.as_bytes()).any(|at| {
        let rest = json[at + key.needle().len()..].trim_start();
        let value = rest.strip_prefix(':').unwrap_or(rest).trim_start();
        !value.starts_with("null")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_null_usage_or_error_is_not_worth_a_parse_but_any_other_is() {
        assert!(!has_value(r#"{"choices":[],"usage":null}"#, &USAGE));
        assert!(!has_value(r#"{"usage" : null, "error":null}"#, &ERROR));
        assert!(has_value(
            r#"{"usage":null,"choices":[{"usage":{"prompt_tokens":1}}]}"#,
            &USAGE
        ));
        assert!(has_value(r#"{"usage": {"prompt_tokens":1}}"#, &USAGE));
        assert!(has_value(r#"{"error":"busy"}"#, &ERROR));
        let chunk = r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}"#;
        let (bytes, usage) = normalize_event(chunk).unwrap();
        assert_eq!(&bytes[..], &sse::data(chunk.as_bytes())[..]);
        assert_eq!(usage, None);
    }
}
