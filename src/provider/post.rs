//! One JSON POST to an upstream, the way every wire sends it: its content
//! type and accept, the wire's own headers (the key among them), then the
//! provider's configured headers; a failure to connect told apart from
//! others, since only a connection refused before sending is safe to move on.

use http::{header, HeaderName, HeaderValue, Method, Request, Response, Uri};

use crate::body::{self, Body};
use crate::config;
use crate::error::{ErrorKind, UpstreamError};
use crate::upstream::{self, Client};

/// Where a wire posts, made once per config rather than per request: the
/// URI parsed, its `Host` header, which would otherwise be formatted anew
/// for every request (together a tenth of sending one), and the provider's
/// configured headers.
#[derive(Debug, Clone)]
pub(super) struct Destination {
    uri: Uri,
    host: HeaderValue,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Destination {
    /// The URL's destination; the error is the one every request to it gets.
    pub(super) fn new(provider: &config::Provider, url: String) -> Result<Self, UpstreamError> {
        let bad = |why: &dyn std::fmt::Display| {
            internal(format!(
                "cannot build the request to `{}`: {why}",
                provider.name
            ))
        };
        let uri = Uri::try_from(url).map_err(|e| bad(&e))?;
        let mut host = upstream::host_header(&uri).map_err(|e| bad(&e))?;
        let mut headers: Vec<(HeaderName, HeaderValue)> = provider
            .headers
            .iter()
            .map(|(name, value)| {
                Ok((
                    HeaderName::try_from(name).map_err(|e| bad(&e))?,
                    HeaderValue::try_from(value).map_err(|e| bad(&e))?,
                ))
            })
            .collect::<Result<_, UpstreamError>>()?;
        // A configured `Host` is the one sent.
        if let Some(at) = headers.iter().position(|(name, _)| name == header::HOST) {
            host = headers.remove(at).1;
        }
        Ok(Destination { uri, host, headers })
    }
}

pub(super) async fn post_json(
    client: &Client,
    to: &Destination,
    body: Vec<u8>,
    stream: bool,
    wire_headers: Vec<(HeaderName, HeaderValue)>,
) -> Result<Response<Body>, UpstreamError> {
    const JSON: HeaderValue = HeaderValue::from_static("application/json");
    const EVENTS: HeaderValue = HeaderValue::from_static("text/event-stream");
    // Built in place: `http::request::Builder` moves itself through every
    // `.header()`, a tenth of sending a request.
    let mut req = Request::new(body::full(body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = to.uri.clone();
    let headers = req.headers_mut();
    headers.reserve(3 + wire_headers.len() + to.headers.len());
    headers.insert(header::HOST, to.host.clone());
    headers.insert(header::CONTENT_TYPE, JSON);
    headers.insert(header::ACCEPT, if stream { EVENTS } else { JSON });
    for (name, value) in wire_headers {
        headers.append(name, value);
    }
    for (name, value) in &to.headers {
        headers.append(name, value.clone());
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;

    #[test]
    fn a_destination_has_the_host_header_of_its_url() {
        let provider = config::Provider::named("up", ProviderKind::OpenAi);
        let host = |url: &str| {
            Destination::new(&provider, url.into())
                .map(|d| d.host.to_str().unwrap().to_owned())
                .map_err(|e| e.message)
        };
        assert_eq!(
            host("http://127.0.0.1:8080/v1/chat/completions").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            host("https://api.openai.com/v1/chat/completions").unwrap(),
            "api.openai.com"
        );
        assert_eq!(host("http://local:80/v1").unwrap(), "local");
        assert_eq!(host("https://local:80/v1").unwrap(), "local:80");
        assert_eq!(host("https://user:pw@host:8443/v1").unwrap(), "host:8443");
        assert_eq!(host("http://[::1]:11434/v1").unwrap(), "[::1]:11434");
        assert!(host("not a url/chat").unwrap_err().contains("`up`"));
        let configured = config::Provider {
            headers: vec![
                ("HOST".into(), "gateway.internal".into()),
                ("x-title".into(), "t".into()),
            ],
            ..provider.clone()
        };
        let to = Destination::new(&configured, "http://10.0.0.1:8000/v1".into()).unwrap();
        assert_eq!(to.host, "gateway.internal");
        assert_eq!(to.headers.len(), 1);
        assert!(host("/v1/chat/completions")
            .unwrap_err()
            .contains("no host"));
    }
}
