//! The Messages wire (Anthropic, Kimi For Coding, any Messages-API server).
//! An attempt sends the canonical request translated, and hands the reply
//! back in the OpenAI wire, so that reading, classifying and relaying it is
//! what every other attempt does: a JSON answer is translated whole, a
//! stream event by event as it arrives. Error replies go back as they are:
//! the classifier reads Anthropic's `{"type":"error"}` shape.
//!
//! A client that speaks Messages itself is served by [`Provider::send_native`]:
//! its request goes as it came, only `model` rewritten, and the reply is not
//! translated at all.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::{Map, Value};

use super::post::{self, Destination};
use super::{Native, Provider};
use crate::body::{self, Body, BoxError};
use crate::config;
use crate::error::{ErrorKind, UpstreamError};
use crate::upstream::Client;
use crate::wire::chat::{ChatBody, Endpoint};
use crate::wire::messages::{self, upstream::ChatChunks};
use crate::wire::sse::{SseEvent, SseReader};

pub struct Anthropic {
    provider: Arc<config::Provider>,
    client: Client,
    /// Made once: `{base_url}/messages` (a base URL without its `/v1`, as
    /// `ANTHROPIC_BASE_URL` is usually written, gets it added), the key's header.
    to: Result<Destination, UpstreamError>,
    key: Result<Option<(HeaderName, HeaderValue)>, UpstreamError>,
    /// `[server]`'s bounds, for the reply this adapter reads to translate.
    max_answer_bytes: usize,
    max_event_bytes: usize,
}

impl Anthropic {
    pub fn new(provider: Arc<config::Provider>, client: Client, server: &config::Server) -> Self {
        let base = provider.base_url.as_deref().unwrap_or_default();
        let url = if base.ends_with("/v1") {
            format!("{base}/messages")
        } else {
            format!("{base}/v1/messages")
        };
        let to = Destination::new(&provider, url);
        let key = post::key_header(
            &provider,
            HeaderName::from_static("x-api-key"),
            str::to_owned,
        );
        Anthropic {
            provider,
            client,
            to,
            key,
            max_answer_bytes: server.max_answer_bytes,
            max_event_bytes: server.max_event_bytes,
        }
    }

    async fn post(
        &self,
        body: Vec<u8>,
        stream: bool,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<Response<Body>, UpstreamError> {
        let to = self.to.as_ref().map_err(Clone::clone)?;
        let key = self.key.clone()?;
        let version = (
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(messages::VERSION),
        );
        let headers = key
            .into_iter()
            .chain([version])
            .chain(extra.iter().cloned())
            .collect();
        post::post_json(&self.client, to, body, stream, headers).await
    }

    async fn translated(
        &self,
        body: &Map<String, Value>,
        stream: bool,
    ) -> Result<Response<Body>, UpstreamError> {
        let request = messages::upstream::request(body);
        let bytes = serde_json::to_vec(&request).map_err(|e| post::internal(e.to_string()))?;
        let resp = self.post(bytes, stream, &[]).await?;
        if !resp.status().is_success() {
            return Ok(resp);
        }
        if stream && super::read::is_event_stream(&resp) {
            return Ok(self.stream_as_chat(resp));
        }
        self.answer_as_chat(resp).await
    }

    /// The Messages events, translated as they arrive into chat events.
    /// `message_start` says nothing yet, and an overloaded Anthropic often
    /// sends its `error` event right after it: held back until the next
    /// event, so that such an error is the stream's first event and the
    /// attempt fails over instead of committing the client to a broken answer.
    fn stream_as_chat(&self, resp: Response<Body>) -> Response<Body> {
        struct State {
            reader: SseReader,
            chunks: ChatChunks,
            held: Option<Bytes>,
        }
        let (parts, body) = resp.into_parts();
        let state = State {
            reader: SseReader::new(body, self.max_event_bytes),
            chunks: ChatChunks::new(),
            held: None,
        };
        let events = futures_util::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            loop {
                match state.reader.next().await {
                    Ok(Some(SseEvent::Data { event, data })) => {
                        let out = state.chunks.event(event.as_deref(), &data);
                        if out.is_empty() {
                            continue;
                        }
                        let kind = event.as_deref().unwrap_or_default();
                        if kind == "message_start" || data.contains("\"type\":\"message_start\"") {
                            state.held = Some(out);
                            continue;
                        }
                        let out = match state.held.take() {
                            Some(held) if kind != "error" => [held, out].concat().into(),
                            _ => out,
                        };
                        let next = (!state.chunks.done()).then_some(state);
                        return Some((Ok::<_, BoxError>(Frame::data(out)), next));
                    }
                    Ok(Some(SseEvent::Comment)) => {}
                    // Ended: before `message_stop`, the reader on the
                    // other side reports the cut.
                    Ok(None) => return None,
                    Err(e) => return Some((Err(e), None)),
                }
            }
        });
        Response::from_parts(parts, StreamBody::new(events).boxed())
    }

    /// A whole Messages answer as a `chat.completion`. What is not a
    /// Message (an error in a 200, a body that is not JSON) goes on as it
    /// came, for the reader to classify or report.
    async fn answer_as_chat(&self, resp: Response<Body>) -> Result<Response<Body>, UpstreamError> {
        let (parts, body) = resp.into_parts();
        let (bytes, read) = super::read::read_up_to(body, self.max_answer_bytes).await;
        super::read::whole(read, self.max_answer_bytes)?;
        let translated = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .filter(|v| v["type"] == "message")
            .map(|v| messages::upstream::answer(&v))
            .and_then(|chat| serde_json::to_vec(&chat).ok());
        let body = translated.map_or(bytes, Bytes::from);
        Ok(Response::from_parts(parts, body::full(body)))
    }
}

impl Provider for Anthropic {
    fn send<'a>(
        &'a self,
        endpoint: Endpoint,
        body: &'a ChatBody,
        stream: bool,
    ) -> BoxFuture<'a, Result<Response<Body>, UpstreamError>> {
        Box::pin(async move {
            if endpoint != Endpoint::Chat {
                return Err(UpstreamError::transport(
                    ErrorKind::ClientError,
                    format!(
                        "`{}` speaks the Messages API, which has no {} endpoint",
                        self.provider.name,
                        endpoint.path()
                    ),
                ));
            }
            self.translated(body.tree(), stream).await
        })
    }

    fn send_native<'a>(
        &'a self,
        native: &'a Native,
        model: &'a str,
        stream: bool,
    ) -> Option<BoxFuture<'a, Result<Response<Body>, UpstreamError>>> {
        Some(Box::pin(async move {
            // The ingress checked that the body has one `model`.
            let bytes = messages::with_model(&native.body, model).ok_or_else(|| {
                UpstreamError::transport(ErrorKind::ClientError, "the request has no `model`")
            })?;
            self.post(bytes, stream, &native.headers).await
        }))
    }

    fn secret(&self) -> Option<&str> {
        self.provider.api_key.as_ref().map(|k| k.expose())
    }
}
