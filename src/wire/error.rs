//! Errors in the OpenAI dialect: the `{"error": {...}}` body every
//! OpenAI-compatible client parses, and the HTTP response around it. The one
//! place an [`ApiError`] becomes bytes for a Chat Completions client.

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use serde_json::{json, Value};

use crate::body::{full, Body};
use crate::error::{secs_ceil, ApiError, ErrorKind, UpstreamError};

impl UpstreamError {
    /// The OpenAI-shaped body: a client error as the upstream said it, or a
    /// stream's failure. What the upstream did not name follows the cause: a
    /// break is the upstream's fault, not the client's request.
    pub fn to_openai_json(&self) -> Value {
        let (error_type, code) = match self.kind {
            ErrorKind::ClientError => ("invalid_request_error", None),
            ErrorKind::ContextLength => ("invalid_request_error", Some("context_length_exceeded")),
            ErrorKind::RateLimited => ("rate_limit_error", Some("rate_limit_exceeded")),
            ErrorKind::Timeout => ("timeout_error", Some("upstream_timeout")),
            _ => ("server_error", Some("upstream_error")),
        };
        json!({
            "error": {
                "message": self.message,
                "type": self.error_type.as_deref().unwrap_or(error_type),
                "param": self.param,
                "code": self.code.as_deref().or(code),
            }
        })
    }
}

impl ApiError {
    fn error_type(&self) -> &'static str {
        match self.status().as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            502 => "upstream_error",
            503 => "service_unavailable",
            504 => "timeout_error",
            _ => "invalid_request_error",
        }
    }

    /// The `{"error": {...}}` object, also used as a stream's final error chunk.
    pub fn to_json(&self) -> Value {
        if let ApiError::Upstream(e) = self {
            return e.to_openai_json();
        }
        let param = match self {
            ApiError::InvalidRequest { param, .. } => *param,
            ApiError::ModelNotFound { .. } | ApiError::ModelNotAllowed(_) => Some("model"),
            ApiError::ContextLength(_) => Some("messages"),
            ApiError::PreviousResponseNotFound(_) => Some("previous_response_id"),
            _ => None,
        };
        json!({"error": {
            "message": self.to_string(),
            "type": self.error_type(),
            "param": param,
            "code": self.code(),
        }})
    }

    pub fn into_response(self) -> Response<Body> {
        let body = Bytes::from(serde_json::to_vec(&self.to_json()).unwrap_or_default());
        let mut resp = Response::new(full(body));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(wait) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs_ceil(wait)));
        }
        resp
    }
}
