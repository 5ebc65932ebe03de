//! The request path's errors, one enum per boundary: [`UpstreamError`] for
//! what one upstream attempt said (classified by `provider::classify`), and
//! [`ApiError`] for what the client is told. Each knows its HTTP status and
//! code; `wire::error` renders them in the client's dialect. Internals never
//! reach the client: every variant renders its own short message.

use std::time::Duration;

use http::StatusCode;

/// What an upstream reply means for failover. One per upstream attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    RateLimited,
    QuotaExhausted,
    ContextLength,
    Overloaded,
    ServerError,
    Timeout,
    ConnectError,
    ClientError,
    AuthError,
}

impl ErrorKind {
    /// The metric label word (`hermes_upstream_requests_total{outcome=...}`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::QuotaExhausted => "quota_exhausted",
            ErrorKind::ContextLength => "context_length",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::ServerError => "server_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ConnectError => "connect_error",
            ErrorKind::ClientError => "client_error",
            ErrorKind::AuthError => "auth_error",
        }
    }

    /// Worth trying another target (or the same later): everything but
    /// ClientError and ContextLength, which would fail the same way anywhere
    /// (context length is fixed by compressing, not by moving).
    pub fn fails_over(self) -> bool {
        !matches!(self, ErrorKind::ClientError | ErrorKind::ContextLength)
    }
}

/// An upstream error reduced to the fields of the OpenAI error shape, plus
/// what failover needs.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamError {
    pub kind: ErrorKind,
    /// The upstream HTTP status, or the embedded code for a 200-with-error body
    /// (0 when there was no HTTP exchange at all).
    pub status: u16,
    /// Human message, normalized: OpenRouter's `metadata.raw` preferred and
    /// prefixed with `provider_name`; Ollama's bare string; API keys masked.
    pub message: String,
    pub error_type: Option<String>,
    /// Upstream's `error.code`, numbers stringified.
    pub code: Option<String>,
    pub param: Option<String>,
    /// When the upstream said to come back, if it said.
    pub retry_after: Option<Duration>,
}

impl UpstreamError {
    /// A failure with no HTTP reply: status 504 for a timeout (what a gateway
    /// would have said), 0 otherwise.
    pub fn transport(kind: ErrorKind, message: impl Into<String>) -> Self {
        UpstreamError {
            kind,
            status: if kind == ErrorKind::Timeout { 504 } else { 0 },
            message: mask_keys(&message.into()),
            error_type: None,
            code: None,
            param: None,
            retry_after: None,
        }
    }

    /// Short one-line summary for 502 messages, e.g.
    /// `429 rate_limited: Rate limit reached for ...`.
    pub fn summary(&self) -> String {
        let message = one_line(&self.message, SUMMARY_CHARS);
        if self.status == 0 {
            format!("{}: {}", self.kind.as_str(), message)
        } else {
            format!("{} {}: {}", self.status, self.kind.as_str(), message)
        }
    }
}

/// How much of a message goes into a one-line summary.
const SUMMARY_CHARS: usize = 160;

/// Collapse whitespace to single spaces and cut to `max` chars.
pub fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let cut: String = flat.chars().take(max).collect();
    format!("{}...", cut.trim_end())
}

/// Mask anything that looks like a provider key (`sk-...`: OpenAI, Kimi,
/// OpenRouter, Anthropic) before a message can reach a client or a log;
/// upstreams sometimes echo the key they rejected.
pub fn mask_keys(message: &str) -> String {
    const MIN_KEY_LEN: usize = 20;
    let is_key_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest
        .match_indices("sk")
        .map(|(i, _)| i)
        .find(|&i| matches!(rest.as_bytes().get(i + 2), Some(b'-' | b'_')))
    {
        let starts_word = !rest[..at].chars().next_back().is_some_and(is_key_char);
        let len = rest[at..]
            .find(|c: char| !is_key_char(c))
            .unwrap_or(rest.len() - at);
        out.push_str(&rest[..at]);
        if starts_word && len >= MIN_KEY_LEN {
            out.push_str("sk-***");
        } else {
            out.push_str(&rest[at..at + len.max(3)]);
        }
        rest = &rest[at + len.max(3)..];
    }
    out.push_str(rest);
    out
}

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
    #[error("no stored response with id `{0}`")]
    ResponseNotFound(String),
    #[error("previous response `{0}` not found: it was never stored, was deleted, expired, or belongs to another key")]
    PreviousResponseNotFound(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    RequestTooLarge { limit: usize },
    #[error("the request body did not arrive within {}s (body_read_timeout)", .0.as_secs_f64())]
    RequestTimeout(Duration),
    #[error("requests from the web page at `{0}` are refused: without client keys only local pages may call this proxy; to allow this origin, add `cors_origins = [\"{0}\"]` under `[server]` in routes.toml")]
    OriginNotAllowed(String),
    #[error("requests addressed to host `{0}` are refused: without client keys only localhost and loopback addresses are served (a guard against DNS rebinding); call it as http://127.0.0.1 or http://localhost, or configure `[[server.keys]]`")]
    HostNotAllowed(String),
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
            ApiError::ModelNotAllowed(_)
            | ApiError::OriginNotAllowed(_)
            | ApiError::HostNotAllowed(_) => StatusCode::FORBIDDEN,
            ApiError::ModelNotFound { .. }
            | ApiError::NotFound { .. }
            | ApiError::ResponseNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PreviousResponseNotFound(_) => StatusCode::BAD_REQUEST,
            ApiError::RequestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
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
            ApiError::NotFound { .. } | ApiError::ResponseNotFound(_) => "not_found",
            ApiError::PreviousResponseNotFound(_) => "previous_response_not_found",
            ApiError::RequestTooLarge { .. } => "request_too_large",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::OriginNotAllowed(_) => "origin_not_allowed",
            ApiError::HostNotAllowed(_) => "host_not_allowed",
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

    /// What the client is told to wait, where the error carries a wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::KeyRateLimited { retry_after }
            | ApiError::AllRateLimited { retry_after, .. } => Some(*retry_after),
            ApiError::Upstream(e) => e.retry_after,
            _ => None,
        }
    }
}
