//! The built-in simulated upstream (`kind = "mock"`): answers in OpenAI's wire
//! format without a socket, so the proxy works offline and the rest of the
//! request path (classification, normalization, relay) runs exactly as it
//! does for a real provider.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Response, StatusCode};
use serde_json::{json, Map, Value};

use super::Provider;
use crate::body::{self, Body};
use crate::config::MockSettings;
use crate::error::UpstreamError;
use crate::wire::chat::{ChatBody, Endpoint};
use crate::wire::sse;
use futures_util::future::BoxFuture;

pub struct Mock {
    settings: MockSettings,
}

impl Mock {
    pub fn new(settings: MockSettings) -> Self {
        Mock { settings }
    }
}

impl Provider for Mock {
    fn send<'a>(
        &'a self,
        endpoint: Endpoint,
        body: &'a ChatBody,
        _stream: bool,
    ) -> BoxFuture<'a, Result<Response<Body>, UpstreamError>> {
        Box::pin(async move { Ok(respond(&self.settings, endpoint, body.tree()).await) })
    }
}

pub async fn respond(
    settings: &MockSettings,
    endpoint: Endpoint,
    request: &Map<String, Value>,
) -> Response<Body> {
    if !settings.first_byte_delay.is_zero() {
        tokio::time::sleep(settings.first_byte_delay).await;
    }
    if roll(settings.rate_limit_ratio) {
        return json_response(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": {"message": "Rate limit reached for demo on requests per min (RPM): Limit 60. Please try again in 1s.",
                "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
        );
    }
    if roll(settings.context_error_ratio) {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": {"message": "This model's maximum context length is 4096 tokens. However, your messages resulted in 5000 tokens. Please reduce the length of the messages.",
                "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}),
        );
    }
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("demo")
        .to_owned();
    match endpoint {
        Endpoint::Embeddings => json_response(StatusCode::OK, embeddings(&model, request)),
        Endpoint::Completions => {
            let text = reply_text(request);
            let usage = usage(request, &text);
            json_response(
                StatusCode::OK,
                json!({"id": "cmpl-demo", "object": "text_completion", "created": now(), "model": model,
                    "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": null}],
                    "usage": usage}),
            )
        }
        Endpoint::Chat => {
            let text = reply_text(request);
            if request.get("stream").and_then(Value::as_bool) == Some(true) {
                stream(settings, model, request, text)
            } else {
                let usage = usage(request, &text);
                json_response(
                    StatusCode::OK,
                    json!({"id": "chatcmpl-demo", "object": "chat.completion", "created": now(), "model": model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                        "usage": usage}),
                )
            }
        }
    }
}

fn roll(ratio: f64) -> bool {
    ratio > 0.0 && fastrand::f64() < ratio
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn json_response(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body::full(serde_json::to_vec(&body).unwrap_or_default()))
        .expect("static response parts are valid")
}

/// The last user message's text, from a string or an array of content parts.
fn last_user_text(request: &Map<String, Value>) -> String {
    let messages = request.get("messages").and_then(Value::as_array);
    let content = messages
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| &m["content"]);
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => request
            .get("prompt")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    }
}

fn reply_text(request: &Map<String, Value>) -> String {
    let said: String = last_user_text(request).chars().take(200).collect();
    format!(
        "Hello from the hermes-proxy demo provider. You said: \"{said}\". \
         Set MOONSHOT_API_KEY or OPENROUTER_API_KEY, or start Ollama, to reach a real model."
    )
}

/// Word counts stand in for tokens: the demo has no tokenizer to agree with.
fn usage(request: &Map<String, Value>, reply: &str) -> Value {
    let prompt = request
        .get("messages")
        .map(|m| m.to_string().split_whitespace().count())
        .unwrap_or(1) as u64;
    let completion = reply.split_whitespace().count() as u64;
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0}})
}

fn embeddings(model: &str, request: &Map<String, Value>) -> Value {
    let inputs: Vec<String> = match request.get("input") {
        Some(Value::Array(items)) => items.iter().map(|i| i.to_string()).collect(),
        Some(other) => vec![other.to_string()],
        None => vec![String::new()],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": pseudo_vector(text)}))
        .collect();
    let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count()).sum();
    json!({"object": "list", "model": model, "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
}

/// A deterministic unit vector from the text, so equal inputs embed equally.
fn pseudo_vector(text: &str) -> Vec<f32> {
    let mut seed = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let raw: Vec<f32> = (0..16)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / u32::MAX as f32) - 0.25
        })
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    raw.into_iter().map(|x| x / norm).collect()
}

fn stream(
    settings: &MockSettings,
    model: String,
    request: &Map<String, Value>,
    text: String,
) -> Response<Body> {
    let include_usage = request
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    let usage = include_usage.then(|| usage(request, &text));
    let gap = settings.chunk_delay;
    let (tx, body) = body::channel(8);
    tokio::spawn(async move {
        let created = now();
        let chunk = |delta: Value, finish: Value| {
            let v = json!({"id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            sse::data(&serde_json::to_vec(&v).unwrap_or_default())
        };
        // Each event is made when it is sent: a stream held open holds
        // none made ahead (the streams benchmark holds 10,000 of them).
        enum Part<'a> {
            Start,
            Word(&'a str),
            Stop,
            Usage(Value),
            Done,
        }
        let parts = std::iter::once(Part::Start)
            .chain(text.split_inclusive(' ').map(Part::Word))
            .chain([Part::Stop])
            .chain(usage.map(Part::Usage))
            .chain([Part::Done]);
        for (i, part) in parts.enumerate() {
            if i > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            let event = match part {
                Part::Start => chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                Part::Word(word) => chunk(json!({"content": word}), Value::Null),
                Part::Stop => chunk(json!({}), json!("stop")),
                Part::Usage(usage) => {
                    let v = json!({"id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": created,
                        "model": model, "choices": [], "usage": usage});
                    sse::data(&serde_json::to_vec(&v).unwrap_or_default())
                }
                Part::Done => Bytes::from_static(sse::DONE),
            };
            if tx.send(event).await.is_err() {
                return; // the reader went away
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(body)
        .expect("static response parts are valid")
}
