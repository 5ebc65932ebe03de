//! Providers behind one trait: an attempt turns the canonical request (the
//! OpenAI schema) into a provider's wire request, and its reply into an
//! [`Answer`] in the one schema, or into a classified [`UpstreamError`].
//!
//! - [`openai`]: every OpenAI-wire upstream (OpenAI, Kimi, OpenRouter, vLLM,
//!   llama.cpp, Ollama)
//! - [`anthropic`]: every Messages-API upstream (Anthropic, Kimi For Coding)
//! - [`mock`]: the built-in simulated upstream
//! - [`classify`]: any provider's error reply -> kind and retry hint
//! - `read`: a reply's body -> an answer (JSON skimmed, streams started)
//!
//! An attempt is over (and may fail over) until the upstream's first event
//! has arrived: only then does the proxy commit its 200 to the client.

pub mod anthropic;
pub mod classify;
pub mod mock;
pub mod openai;
mod post;
mod read;
mod skim;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::Response;

use crate::body::Body;
use crate::config::{self, ProviderKind};
use crate::error::{ErrorKind, UpstreamError};
use crate::upstream::Client;
use crate::wire::chat::{ChatBody, Endpoint};
use crate::wire::sse::SseReader;
use crate::wire::usage::Usage;

pub use read::{event_error, normalize_event};

/// One upstream's dialect. Implementations only translate and send; what
/// every attempt shares (timeouts, reading the answer, classification,
/// scrubbing) is [`attempt`]'s.
pub trait Provider: Send + Sync {
    /// Sends the canonical request (`body` already names the target's model)
    /// in this provider's wire format, and returns the reply's head.
    fn send<'a>(
        &'a self,
        endpoint: Endpoint,
        body: &'a ChatBody,
        stream: bool,
    ) -> BoxFuture<'a, Result<Response<Body>, UpstreamError>>;

    /// Sends the client's own request (`native`, in the client's dialect)
    /// with only its model replaced by `model`, when this provider speaks
    /// that dialect; `None` when it does not, and the canonical request is
    /// sent instead.
    fn send_native<'a>(
        &'a self,
        _native: &'a Native,
        _model: &'a str,
        _stream: bool,
    ) -> Option<BoxFuture<'a, Result<Response<Body>, UpstreamError>>> {
        None
    }

    /// A secret this provider holds, which must never travel on in a message
    /// (upstreams sometimes echo the key they rejected).
    fn secret(&self) -> Option<&str> {
        None
    }
}

/// The adapter for a configured provider.
pub fn build(
    provider: &Arc<config::Provider>,
    client: &Client,
    server: &config::Server,
) -> Arc<dyn Provider> {
    match provider.kind {
        ProviderKind::OpenAi => Arc::new(openai::OpenAi::new(provider.clone(), client.clone())),
        ProviderKind::Mock => Arc::new(mock::Mock::new(provider.mock.clone())),
        ProviderKind::Anthropic => Arc::new(anthropic::Anthropic::new(
            provider.clone(),
            client.clone(),
            server,
        )),
    }
}

/// A request as the client wrote it in the Messages dialect, for a target
/// that speaks Messages too: it goes untranslated, so what the canonical
/// request cannot hold (`cache_control` on any block, thinking signatures,
/// server tools) survives.
#[derive(Debug, Clone)]
pub struct Native {
    /// The body's bytes as they came.
    pub body: Bytes,
    /// The client's headers of that dialect that go along (`anthropic-beta`).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
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

/// What bounds one attempt: `[defaults]`' timing and hint cap, `[server]`'s
/// answer sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Bounds the wait for the status line and, when streaming, the first event.
    pub first_byte_timeout: Duration,
    /// Every retry or busy hint an upstream gives is cut to this.
    pub max_cooldown: Duration,
    /// A non-streamed answer larger than this is refused.
    pub max_answer_bytes: usize,
    /// A streamed event (or line) larger than this ends the stream.
    pub max_event_bytes: usize,
}

impl Limits {
    pub fn from_config(config: &config::Config) -> Self {
        Limits {
            first_byte_timeout: config.defaults.first_byte_timeout,
            max_cooldown: config.defaults.max_cooldown,
            max_answer_bytes: config.server.max_answer_bytes,
            max_event_bytes: config.server.max_event_bytes,
        }
    }
}

/// A successful attempt.
pub struct Success {
    pub answer: Answer,
    /// The answer is in the client's own dialect, untranslated (the request
    /// went as [`Native`]).
    pub native: bool,
    /// The upstream said its budget is spent (`x-ratelimit-remaining-*: 0`):
    /// the target is busy this long, though this request got through.
    pub busy_for: Option<Duration>,
}

enum Head {
    Json(Response<Body>),
    Stream(Answer),
}

/// One attempt against one provider. `body` already names the target's model.
///
/// Whatever the upstream sends stays within `limits`: its hints are cut to
/// `max_cooldown` here, before any decision uses them, and its answer is
/// read within `max_answer_bytes` / `max_event_bytes`. The provider's key,
/// should the upstream echo it, is masked in answers as in errors.
///
/// With `native` (the client's own request) a provider that speaks the
/// client's dialect is sent that instead, and its answer is left in that
/// dialect: only its usage is read, and its errors classified.
pub async fn attempt(
    provider: &dyn Provider,
    endpoint: Endpoint,
    body: &ChatBody,
    native: Option<&Native>,
    limits: &Limits,
) -> Result<Success, UpstreamError> {
    let stream = body.stream();
    let first_byte_timeout = limits.first_byte_timeout;
    let secret = provider.secret().filter(|k| !k.is_empty());
    let mut busy_for = None;
    let model = body.model();
    let native_send = native.and_then(|n| provider.send_native(n, model, stream));
    let is_native = native_send.is_some();
    let head = async {
        let resp = match native_send {
            Some(send) => send.await?,
            None => provider.send(endpoint, body, stream).await?,
        };
        if !resp.status().is_success() {
            return Err(read::error(resp).await);
        }
        busy_for = classify::busy_hint(resp.headers(), SystemTime::now())
            .map(|busy| busy.min(limits.max_cooldown));
        if stream && read::is_event_stream(&resp) {
            let events = read::Events {
                max_bytes: limits.max_event_bytes,
                secret,
            };
            return read::first_event(resp, events, is_native)
                .await
                .map(Head::Stream);
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
            Head::Stream(answer) => Ok::<_, UpstreamError>(answer),
            Head::Json(resp) if is_native => {
                let answer = read::native_json(resp, limits.max_answer_bytes).await?;
                Ok(mask_answer(answer, secret))
            }
            Head::Json(resp) => {
                let answer = read::json(resp, endpoint, limits.max_answer_bytes).await?;
                let answer = mask_answer(answer, secret);
                // Some servers ignore `stream`; the client still gets a stream.
                Ok(if stream {
                    read::json_as_stream(answer)
                } else {
                    answer
                })
            }
        }
    };
    match answer.await {
        Ok(answer) => Ok(Success {
            answer,
            native: is_native,
            busy_for,
        }),
        Err(mut err) => {
            err.retry_after = err.retry_after.map(|hint| hint.min(limits.max_cooldown));
            Err(scrub(err, secret))
        }
    }
}

/// The key in a JSON answer, as bytes: looked for on the raw body (one
/// memchr-driven pass), rewritten only in the rare answer that has it.
fn mask_answer(answer: Answer, secret: Option<&str>) -> Answer {
    let (Answer::Json { body, usage }, Some(key)) = (&answer, secret) else {
        return answer;
    };
    let finder = memchr::memmem::Finder::new(key.as_bytes());
    if finder.find(body).is_none() {
        return answer;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest = &body[..];
    while let Some(at) = finder.find(rest) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(b"***");
        rest = &rest[at + key.len()..];
    }
    out.extend_from_slice(rest);
    Answer::Json {
        body: Bytes::from(out),
        usage: *usage,
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
