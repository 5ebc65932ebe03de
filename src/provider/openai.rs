//! The OpenAI wire, spoken by OpenAI, Kimi, OpenRouter and the local
//! servers (vLLM, llama.cpp, Ollama): the canonical request is already in
//! its schema, so an attempt is a POST with the key and configured headers.

use std::borrow::Cow;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response};
use serde_json::{Map, Value};

use super::Provider;
use crate::body::{self, Body};
use crate::config;
use crate::error::{ErrorKind, UpstreamError};
use crate::upstream::{self, Client};
use crate::wire::chat::Endpoint;
use futures_util::future::BoxFuture;

pub struct OpenAi {
    provider: Arc<config::Provider>,
    client: Client,
}

impl OpenAi {
    pub fn new(provider: Arc<config::Provider>, client: Client) -> Self {
        OpenAi { provider, client }
    }

    async fn post(
        &self,
        endpoint: Endpoint,
        body: &Map<String, Value>,
        stream: bool,
    ) -> Result<Response<Body>, UpstreamError> {
        let internal = |m: String| UpstreamError::transport(ErrorKind::ServerError, m);
        let base = self.provider.base_url.as_deref().unwrap_or_default();
        let bytes = serde_json::to_vec(&*without_thinking_blocks(body))
            .map_err(|e| internal(e.to_string()))?;
        let accept = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(format!("{base}{}", endpoint.path()))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, accept);
        if let Some(key) = &self.provider.api_key {
            let mut value =
                HeaderValue::try_from(format!("Bearer {}", key.expose())).map_err(|_| {
                    internal(format!(
                        "the API key of `{}` is not a valid header value",
                        self.provider.name
                    ))
                })?;
            value.set_sensitive(true);
            req = req.header(header::AUTHORIZATION, value);
        }
        for (name, value) in &self.provider.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let req = req.body(body::full(bytes)).map_err(|e| {
            internal(format!(
                "cannot build the request to `{}`: {e}",
                self.provider.name
            ))
        })?;
        self.client.send(req).await.map_err(|e| match e {
            upstream::SendError::Connect(m) | upstream::SendError::Refused(m) => {
                UpstreamError::transport(ErrorKind::ConnectError, m)
            }
            upstream::SendError::Other(m) => UpstreamError::transport(ErrorKind::ServerError, m),
        })
    }
}

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
        body: &'a Map<String, Value>,
        stream: bool,
    ) -> BoxFuture<'a, Result<Response<Body>, UpstreamError>> {
        Box::pin(self.post(endpoint, body, stream))
    }

    fn secret(&self) -> Option<&str> {
        self.provider.api_key.as_ref().map(|k| k.expose())
    }
}
