//! One JSON POST to an upstream, the way every wire sends it: its content
//! type and accept, the wire's own headers (the key among them), then the
//! provider's configured headers; a failure to connect told apart from
//! others, since only a connection refused before sending is safe to move on.

use http::{header, HeaderName, HeaderValue, Method, Request, Response};

use crate::body::{self, Body};
use crate::config;
use crate::error::{ErrorKind, UpstreamError};
use crate::upstream::{self, Client};

pub(super) async fn post_json(
    client: &Client,
    provider: &config::Provider,
    uri: String,
    body: Vec<u8>,
    stream: bool,
    wire_headers: Vec<(HeaderName, HeaderValue)>,
) -> Result<Response<Body>, UpstreamError> {
    let accept = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, accept);
    for (name, value) in wire_headers {
        req = req.header(name, value);
    }
    for (name, value) in &provider.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let req = req.body(body::full(body)).map_err(|e| {
        internal(format!(
            "cannot build the request to `{}`: {e}",
            provider.name
        ))
    })?;
    client.send(req).await.map_err(|e| match e {
        upstream::SendError::Connect(m) | upstream::SendError::Refused(m) => {
            UpstreamError::transport(ErrorKind::ConnectError, m)
        }
        upstream::SendError::Other(m) => internal(m),
    })
}

/// The provider's key as the header `name` (`value` writes it as the wire
/// wants it), marked sensitive so no debug output shows it; none without a key.
pub(super) fn key_header(
    provider: &config::Provider,
    name: HeaderName,
    value: impl FnOnce(&str) -> String,
) -> Result<Option<(HeaderName, HeaderValue)>, UpstreamError> {
    let Some(key) = &provider.api_key else {
        return Ok(None);
    };
    let mut value = HeaderValue::try_from(value(key.expose())).map_err(|_| {
        internal(format!(
            "the API key of `{}` is not a valid header value",
            provider.name
        ))
    })?;
    value.set_sensitive(true);
    Ok(Some((name, value)))
}

pub(super) fn internal(message: impl Into<String>) -> UpstreamError {
    UpstreamError::transport(ErrorKind::ServerError, message)
}
