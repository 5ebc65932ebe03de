//! Providers behind one trait: an attempt turns the canonical request (the
//! OpenAI schema) into a provider's wire request, and its reply into an
//! [`Answer`] in the one schema, or into a classified [`UpstreamError`].
//!
//! - [`openai`]: every OpenAI-wire upstream (OpenAI, Kimi, OpenRouter, vLLM,
//!   llama.cpp, Ollama)
//! - [`mock`]: the built-in simulated upstream
//! - [`classify`]: any provider's error reply -> kind and retry hint
//! - `read`: a reply's body -> an answer (JSON skimmed, streams started)
//!
//! An attempt is over (and may fail over) until the upstream's first event
//! has arrived: only then does the proxy commit its 200 to the client.

pub mod classify;
pub mod mock;
pub mod openai;
mod read;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::Response;
use serde_json::{Map, Value};

use crate::body::Body;
use crate::config::{self, ProviderKind};
use crate::error::{ErrorKind, UpstreamError};
use crate::upstream::Client;
use crate::wire::chat::Endpoint;
use crate::wire::sse::SseReader;
use crate::wire::usage::Usage;

pub use read::normalize_event;

/// One upstream's dialect. Implementations only translate and send; what
/// every attempt shares (timeouts, reading the answer, classification,
/// scrubbing) is [`attempt`]'s.
pub trait Provider: Send + Sync {
    /// Sends the canonical request (`body` already names the target's model)
    /// in this provider's wire format, and returns the reply's head.
    fn send<'a>(
        &'a self,
        endpoint: Endpoint,
        body: &'a Map<String, Value>,
        stream: bool,
    ) -> BoxFuture<'a, Result<Response<Body>, UpstreamError>>;

    /// A secret this provider holds, which must never travel on in a message
    /// (upstreams sometimes echo the key they rejected).
    fn secret(&self) -> Option<&str> {
        None
    }
}

/// The adapter for a configured provider.
pub fn build(provider: &Arc<config::Provider>, client: &Client) -> Arc<dyn Provider> {
    match provider.kind {
        ProviderKind::OpenAi => Arc::new(openai::OpenAi::new(provider.clone(), client.clone())),
        ProviderKind::Mock => Arc::new(mock::Mock::new(provider.mock.clone())),
        ProviderKind::Anthropic => Arc::new(Unsupported("anthropic")),
    }
}

/// A kind `check` accepts but this build cannot speak yet.
struct Unsupported(&'static str);

impl Provider for Unsupported {
    fn send<'a>(
        &'a self,
        _: Endpoint,
        _: &'a Map<String, Value>,
        _: bool,
    ) -> BoxFuture<'a, Result<Response<Body>, UpstreamError>> {
        let message = format!(
            "provider kind \"{}\" is not supported by this build",
            self.0
        );
        Box::pin(async move { Err(UpstreamError::transport(ErrorKind::ClientError, message)) })
    }
}

/// What a successful attempt hands back before anything reached the client.
pub enum Answer {
    Json {
        body: Bytes,
        usage: Option<Usage>,
    },
    /// A stream whose first event (already normalized and encoded) arrived;
    /// `rest` yields the remainder, or is `None` when the stream already ended.
    Stream {
        first: Bytes,
        rest: Option<SseReader>,
    },
}

/// A successful attempt.
pub struct Success {
    pub answer: Answer,
    /// The upstream said its budget is spent (`x-ratelimit-remaining-*: 0`):
    /// the target is busy this long, though this request got through.
    pub busy_for: Option<Duration>,
}

enum Head {
    Json(Response<Body>),
    Stream(Answer),
}

/// One attempt against one provider. `body` already names the target's model.
/// `first_byte_timeout` bounds the wait for the status line and, when
/// streaming, the first event.
pub async fn attempt(
    provider: &dyn Provider,
    endpoint: Endpoint,
    body: &Map<String, Value>,
    first_byte_timeout: Duration,
) -> Result<Success, UpstreamError> {
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    let mut busy_for = None;
    let head = async {
        let resp = provider.send(endpoint, body, stream).await?;
        if !resp.status().is_success() {
            return Err(read::error(resp).await);
        }
        busy_for = classify::retry_hint(resp.headers(), "", SystemTime::now());
        if stream && read::is_event_stream(&resp) {
            return read::first_event(resp).await.map(Head::Stream);
        }
        Ok(Head::Json(resp))
    };
    let answer = async {
        let head = tokio::time::timeout(first_byte_timeout, head)
            .await
            .map_err(|_| {
                UpstreamError::transport(
                    ErrorKind::Timeout,
                    format!("no answer within first_byte_timeout ({first_byte_timeout:?})"),
                )
            })??;
        match head {
            Head::Stream(answer) => Ok(answer),
            // Some servers ignore `stream`; the client still gets a stream.
            Head::Json(resp) if stream => {
                read::json(resp, endpoint).await.map(read::json_as_stream)
            }
            Head::Json(resp) => read::json(resp, endpoint).await,
        }
    };
    match answer.await {
        Ok(answer) => Ok(Success { answer, busy_for }),
        Err(err) => Err(scrub(err, provider.secret())),
    }
}

/// Whatever its format, the configured key never travels on in a message.
fn scrub(mut err: UpstreamError, secret: Option<&str>) -> UpstreamError {
    if let Some(key) = secret.filter(|k| !k.is_empty()) {
        if err.message.contains(key) {
            err.message = err.message.replace(key, "***");
        }
    }
    err
}
