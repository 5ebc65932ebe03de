//! The OpenAI wire, spoken by OpenAI, Kimi, OpenRouter and the local
//! servers (vLLM, llama.cpp, Ollama): the canonical request is already in
//! its schema, so an attempt is a POST with the key and configured headers.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use memchr::memmem::Finder;

use http::{header, HeaderName, HeaderValue, Response};
use serde_json::{Map, Value};

use super::post::{self, Destination};
use super::Provider;
use crate::body::Body;
use crate::config;
use crate::error::UpstreamError;
use crate::upstream::Client;
use crate::wire::chat::{ChatBody, Endpoint};
use futures_util::future::BoxFuture;

const ENDPOINTS: [Endpoint; 3] = [Endpoint::Chat, Endpoint::Completions, Endpoint::Embeddings];

pub struct OpenAi {
    provider: Arc<config::Provider>,
    client: Client,
    /// Made once: each endpoint's destination (in `ENDPOINTS` order), the key's header.
    to: [Result<Destination, UpstreamError>; 3],
    key: Result<Option<(HeaderName, HeaderValue)>, UpstreamError>,
}

impl OpenAi {
    pub fn new(provider: Arc<config::Provider>, client: Client) -> Self {
        let base = provider.base_url.as_deref().unwrap_or_default();
        let to = ENDPOINTS.map(|e| Destination::new(&provider, format!("{base}{}", e.path())));
        let key = post::key_header(&provider, header::AUTHORIZATION, |key| {
            format!("Bearer {key}")
        });
        OpenAi {
            provider,
            client,
            to,
            key,
        }
    }

    async fn post(
        &self,
        endpoint: Endpoint,
        body: &ChatBody,
        stream: bool,
    ) -> Result<Response<Body>, UpstreamError> {
        let at = ENDPOINTS.iter().position(|e| *e == endpoint).unwrap_or(0);
        let to = self.to[at].as_ref().map_err(Clone::clone)?;
        let bytes = if body.may_hold(&THINKING_BLOCKS) {
            serde_json::to_vec(&*without_thinking_blocks(body.tree()))
                .map_err(|e| post::internal(e.to_string()))?
        } else {
            body.to_vec()
        };
        let headers = self.key.clone()?.into_iter().collect();
        post::post_json(&self.client, to, bytes, stream, headers).await
    }
}

static THINKING_BLOCKS: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new("\"thinking_blocks\""));

/// Anthropic's signed thinking (`thinking_blocks`, kept on assistant turns
/// for a Messages upstream) is no field of this wire: strict servers refuse
/// a message with a field they do not know.
fn without_thinking_blocks(body: &Map<String, Value>) -> Cow<'_, Map<String, Value>> {
    let has = |m: &Value| m.get("thinking_blocks").is_some();
    let messages = body.get("messages").and_then(Value::as_array);
    if !messages.is_some_and(|m| m.iter().any(has)) {
        return Cow::Borrowed(body);
    }
    let mut body = body.clone();
    if let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) {
        for m in messages.iter_mut().filter_map(Value::as_object_mut) {
            m.remove("thinking_blocks");
        }
    }
    Cow::Owned(body)
}

impl Provider for OpenAi {
    fn send<'a>(
        &'a self,
        endpoint: Endpoint,
        body: &'a ChatBody,
        stream: bool,
    ) -> BoxFuture<'a, Result<Response<Body>, UpstreamError>> {
        Box::pin(self.post(endpoint, body, stream))
    }

    fn secret(&self) -> Option<&str> {
        self.provider.api_key.as_ref().map(|k| k.expose())
    }
}
