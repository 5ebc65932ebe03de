//! Errors in the OpenAI dialect: the `{"error": {...}}` body every
//! OpenAI-compatible client parses, and the HTTP response around it. The one
//! place an [`ApiError`] becomes bytes for a Chat Completions client.

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use serde_json::{json, Value};

use crate::body::{full, Body};
use crate::error::{secs_ceil, ApiError, UpstreamError};

impl UpstreamError {
    /// The OpenAI-shaped body for returning a client error as the upstream said it.
    pub fn to_openai_json(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.error_type.as_deref().unwrap_or("invalid_request_error"),
                "param": self.param,
                "code": self.code,
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
