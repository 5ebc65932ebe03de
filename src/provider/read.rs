//! Reading a reply: a non-2xx body classified, a JSON answer skimmed (or
//! normalized when it must be), a stream's first event awaited, and each
//! streamed event normalized for the client.

use std::sync::LazyLock;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, Response};
use http_body_util::BodyExt;
use memchr::memmem::Finder;
use serde_json::{Map, Value};

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

/// The fast path of [`json`]: nearly every answer is already in the one
/// schema. Only the top level is parsed: `usage` into a tree, everything
/// else (the choices with their text) skipped as raw slices, which is most
/// of the answer and was most of the cost. An answer whose choices mention
/// usage or reasoning, or that carries an error, goes the full path; so
/// does one whose usage normalization would change. Otherwise its usage is
/// returned and its bytes go on untouched. `None` (anything unusual, or a
/// parse the full path should report) means take the full path.
fn skim(bytes: &[u8], endpoint: Endpoint) -> Option<Option<Usage>> {
    use serde::Deserialize;
    use serde_json::value::RawValue;

    #[derive(Deserialize)]
    struct Skim<'a> {
        #[serde(default)]
        usage: Option<Value>,
        #[serde(default, borrow)]
        error: Option<&'a RawValue>,
        #[serde(default, borrow)]
        object: Option<&'a RawValue>,
        #[serde(default, borrow)]
        choices: Option<&'a RawValue>,
    }

    // A top-level array is an error shape (and serde would read it as a struct).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let skim: Skim = serde_json::from_slice(bytes).ok()?;
    if skim.error.is_some_and(|e| e.get() != "null")
        || skim.object.is_some_and(|o| o.get() == "\"error\"")
    {
        return None;
    }
    if let Some(choices) = skim.choices.map(RawValue::get) {
        // Kimi's usage inside a choice, reasoning under another name: the
        // full path's business. A false alarm only costs that path.
        let unusual = choices.contains("\"reasoning\"")
            || has_value(choices, &REASONING_DETAILS)
            || has_value(choices, &USAGE);
        if unusual || !choices.starts_with('[') {
            return None;
        }
    }
    let mut skeleton = Value::Object(Map::new());
    if let Some(usage) = skim.usage {
        skeleton["usage"] = usage;
    }
    if endpoint != Endpoint::Embeddings && normalize::completion(&mut skeleton) {
        return None;
    }
    Some(normalize::usage(&skeleton))
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
                return Ok(Answer::Stream {
                    first: Bytes::from_static(sse::DONE),
                    rest: None,
                })
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
static REASONING_DETAILS: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new("\"reasoning_details\""));

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

    /// What the full path decides: (an error?, rewritten?, usage).
    fn full(bytes: &[u8], endpoint: Endpoint) -> (bool, bool, Option<Usage>) {
        let mut v: Value = serde_json::from_slice(bytes).unwrap();
        let err = classify::error_in_body(&v, &http::HeaderMap::new(), SystemTime::now()).is_some();
        let changed = endpoint != Endpoint::Embeddings && normalize::completion(&mut v);
        (err, changed, normalize::usage(&v))
    }

    #[test]
    fn skim_takes_the_fast_path_only_where_the_full_path_changes_nothing() {
        let normal = r#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi","refusal":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":1}}}"#;
        let cases: &[(&str, bool)] = &[
            (normal, true),
            // no usage at all: nothing to normalize
            (r#"{"choices":[{"message":{"content":"x"}}]}"#, true),
            (
                r#"{"choices":[{"message":null,"usage":null}],"usage":null,"error":null}"#,
                true,
            ),
            // usage to complete or hoist (Kimi), reasoning to rename
            (
                r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
                false,
            ),
            (
                r#"{"choices":[{"message":{"content":"x"},"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"prompt_tokens_details":{"cached_tokens":0}}}]}"#,
                false,
            ),
            (
                r#"{"choices":[{"message":{"content":"4","reasoning":"2+2"}}]}"#,
                false,
            ),
            // a null `reasoning` beside `reasoning_content` is dropped by the full path
            (
                r#"{"choices":[{"message":{"reasoning_content":"r","reasoning":null}}]}"#,
                false,
            ),
            // usage as OpenAI sends it, with details the skim leaves alone
            (
                r#"{"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":1,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}},"choices":[]}"#,
                true,
            ),
            (r#"{"usage":null,"choices":[]}"#, true),
            // Kimi's reasoning_content needs nothing; text that quotes a key is text
            (
                r#"{"choices":[{"message":{"content":"the \"usage\" and \"reasoning\" keys","reasoning_content":"r"}}]}"#,
                true,
            ),
            // a null details object, Anthropic's names, Kimi's cached_tokens
            (
                r#"{"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"prompt_tokens_details":null}}"#,
                false,
            ),
            (r#"{"usage":{"input_tokens":3,"output_tokens":1}}"#, false),
            (
                r#"{"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"cached_tokens":4}}"#,
                false,
            ),
            (
                r#"{"choices":[{"message":{"content":"x","reasoning_details":[{"type":"reasoning.text","text":"t"}]}}]}"#,
                false,
            ),
            // errors in a 200 body, and shapes the skeleton does not model
            (r#"{"error":{"message":"busy","code":429}}"#, false),
            (r#"{"object":"error","message":"bad","code":400}"#, false),
            (r#"[{"error":{"message":"busy"}}]"#, false),
            (r#"{"choices":{"message":{}}}"#, false),
            (r#"{"usage":1,"usage":2}"#, false),
        ];
        for (body, fast) in cases {
            let got = skim(body.as_bytes(), Endpoint::Chat);
            assert_eq!(got.is_some(), *fast, "{body}");
            if let Some(usage) = got {
                assert_eq!(
                    full(body.as_bytes(), Endpoint::Chat),
                    (false, false, usage),
                    "{body}"
                );
            }
        }
        assert_eq!(
            skim(normal.as_bytes(), Endpoint::Chat),
            Some(Some(normalize::Usage {
                prompt: 5,
                completion: 2,
                cached: 1
            }))
        );
    }

    #[test]
    fn skim_reads_embedding_usage_without_building_the_vectors() {
        let body = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2,0.3]}],"model":"m","usage":{"prompt_tokens":3,"total_tokens":3}}"#;
        let usage = skim(body.as_bytes(), Endpoint::Embeddings).expect("fast path");
        assert_eq!(
            full(body.as_bytes(), Endpoint::Embeddings),
            (false, false, usage)
        );
        assert_eq!(usage.map(|u| u.prompt), Some(3));
    }
}
