//! The request path's one error type, and the one place errors become
//! OpenAI-shaped HTTP responses. Internals never reach the client: every
//! variant renders its own short message.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;

use crate::body::{full, Body};
use crate::provider::classify::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<&'static str>,
    },
    #[error("invalid API key: send `Authorization: Bearer <key>` or `x-api-key`")]
    InvalidApiKey,
    #[error("this key may not use model `{0}`")]
    ModelNotAllowed(String),
    #[error("model `{model}` does not exist; available models: {}", available.join(", "))]
    ModelNotFound {
        model: String,
        available: Vec<String>,
    },
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    #[error("request body is larger than the limit of {limit} bytes")]
    RequestTooLarge { limit: usize },
    #[error("rate limit for this key exceeded; retry after {}s", secs_ceil(*retry_after))]
    KeyRateLimited { retry_after: Duration },
    #[error("every target of `{route}` is rate limited or cooling down; retry after {}s", secs_ceil(*retry_after))]
    AllRateLimited {
        route: String,
        retry_after: Duration,
    },
    #[error("{0}")]
    ContextLength(String),
    /// A client mistake an upstream reported: returned as the upstream said.
    #[error("{}", .0.message)]
    Upstream(UpstreamError),
    /// Every attempt failed; one short line per attempt, never a key.
    #[error("every upstream attempt failed: {}", .0.join("; "))]
    AllFailed(Vec<String>),
    #[error("the request did not complete within {}s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("{0}")]
    Unavailable(String),
}

pub fn secs_ceil(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } | ApiError::ContextLength(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidApiKey => StatusCode::UNAUTHORIZED,
            ApiError::ModelNotAllowed(_) => StatusCode::FORBIDDEN,
            ApiError::ModelNotFound { .. } | ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::RequestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::KeyRateLimited { .. } | ApiError::AllRateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Upstream(e) => {
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST)
            }
            ApiError::AllFailed(_) => StatusCode::BAD_GATEWAY,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The OpenAI `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::InvalidApiKey => "invalid_api_key",
            ApiError::ModelNotAllowed(_) => "model_not_allowed",
            ApiError::ModelNotFound { .. } => "model_not_found",
            ApiError::NotFound { .. } => "not_found",
            ApiError::RequestTooLarge { .. } => "request_too_large",
            ApiError::KeyRateLimited { .. } | ApiError::AllRateLimited { .. } => {
                "rate_limit_exceeded"
            }
            ApiError::ContextLength(_) => "context_length_exceeded",
            ApiError::Upstream(_) => "upstream_client_error",
            ApiError::AllFailed(_) => "upstream_error",
            ApiError::Timeout(_) => "upstream_timeout",
            ApiError::Unavailable(_) => "unavailable",
        }
    }

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
    pub fn to_json(&self) -> serde_json::Value {
        if let ApiError::Upstream(e) = self {
            return e.to_openai_json();
        }
        let param = match self {
            ApiError::InvalidRequest { param, .. } => *param,
            ApiError::ModelNotFound { .. } | ApiError::ModelNotAllowed(_) => Some("model"),
            ApiError::ContextLength(_) => Some("messages"),
            _ => None,
        };
        json!({"error": {
            "message": self.to_string(),
            "type": self.error_type(),
            "param": param,
            "code": self.code(),
        }})
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::KeyRateLimited { retry_after }
            | ApiError::AllRateLimited { retry_after, .. } => Some(*retry_after),
            ApiError::Upstream(e) => e.retry_after,
            _ => None,
        }
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
