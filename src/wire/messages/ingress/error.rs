//! Errors in Anthropic's shape: `{"type": "error", "error": {"type",
//! "message"}}`, the error type following the HTTP status as Anthropic's
//! clients expect (their SDKs pick the exception by status, Claude Code
//! shows the type and message).

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use serde_json::{json, Value};

use crate::body::{full, Body};
use crate::error::{secs_ceil, ApiError};

/// Anthropic's error type for an HTTP status.
fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        // Anthropic uses this for any 4xx it has no type for.
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

fn body(error_type: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type, "message": message}})
}

/// `err` in Anthropic's shape.
pub fn error_json(err: &ApiError) -> Value {
    // An upstream's own status, unless it was no HTTP status at all.
    body(error_type(err.status().as_u16()), &err.to_string())
}

/// `err` as the HTTP response: its status, the body of [`error_json`], and
/// `retry-after` when the error carries a wait.
pub fn error_response(err: &ApiError) -> Response<Body> {
    let bytes = Bytes::from(serde_json::to_vec(&error_json(err)).unwrap_or_default());
    let mut response = Response::new(full(bytes));
    *response.status_mut() = err.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(wait) = err.retry_after() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs_ceil(wait)));
    }
    response
}

/// An OpenAI-shaped error (`{"error": {"message", "type", "code"}}`, what
/// the relay hands a failing stream's encoder) in Anthropic's shape. The
/// code is read before the type: it is the more specific of the two
/// (`server_error` / `overloaded`).
pub fn error_from_openai(error: &Value) -> Value {
    let inner = if error["error"].is_object() {
        &error["error"]
    } else {
        error
    };
    let mapped: Vec<&str> = [&inner["code"], &inner["type"]]
        .into_iter()
        .filter_map(|v| v.as_str().and_then(anthropic_type))
        .collect();
    let error_type = mapped
        .iter()
        .find(|t| **t != "api_error")
        .or(mapped.first())
        .copied()
        .unwrap_or("api_error");
    let message = inner["message"]
        .as_str()
        .filter(|m| !m.is_empty())
        .unwrap_or("the upstream stream failed");
    body(error_type, message)
}

/// An OpenAI (or upstream) error type or code as Anthropic's type, if it
/// names one.
fn anthropic_type(word: &str) -> Option<&'static str> {
    Some(match word {
        "rate_limit_error" | "rate_limit_exceeded" | "rate_limited" => "rate_limit_error",
        "overloaded" | "overloaded_error" => "overloaded_error",
        "invalid_request_error" | "invalid_request" | "context_length_exceeded" => {
            "invalid_request_error"
        }
        "authentication_error" | "invalid_api_key" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" => "not_found_error",
        "request_too_large" => "request_too_large",
        "server_error" | "upstream_error" | "api_error" | "timeout" | "timeout_error"
        | "upstream_timeout" => "api_error",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ErrorKind, UpstreamError};
    use std::time::Duration;

    fn upstream(status: u16, message: &str) -> ApiError {
        ApiError::Upstream(UpstreamError {
            kind: ErrorKind::ClientError,
            status,
            message: message.into(),
            error_type: None,
            code: None,
            param: None,
            retry_after: None,
        })
    }

    #[test]
    fn every_status_gets_anthropics_error_type() {
        let cases = [
            (
                ApiError::invalid("`max_tokens`: field required", Some("max_tokens")),
                400,
                "invalid_request_error",
            ),
            (
                ApiError::RequestTimeout(Duration::from_secs(30)),
                408,
                "invalid_request_error",
            ),
            (
                ApiError::RequestTooLarge { limit: 10 },
                413,
                "request_too_large",
            ),
            (ApiError::InvalidApiKey, 401, "authentication_error"),
            (
                ApiError::ModelNotAllowed("m".into()),
                403,
                "permission_error",
            ),
            (
                ApiError::NotFound {
                    method: "GET".into(),
                    path: "/x".into(),
                },
                404,
                "not_found_error",
            ),
            (
                ApiError::KeyRateLimited {
                    retry_after: Duration::from_millis(1500),
                },
                429,
                "rate_limit_error",
            ),
            (
                ApiError::Unavailable("draining".into()),
                503,
                "overloaded_error",
            ),
            (upstream(529, "Overloaded"), 529, "overloaded_error"),
            (upstream(500, "boom"), 500, "api_error"),
            (
                ApiError::AllFailed(vec!["429 rate_limited: slow".into()]),
                502,
                "api_error",
            ),
            (ApiError::Timeout(Duration::from_secs(60)), 504, "api_error"),
            (upstream(422, "bad schema"), 422, "invalid_request_error"),
        ];
        for (err, status, kind) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            let json = error_json(&err);
            assert_eq!(json["type"], "error");
            assert_eq!(json["error"]["type"], kind, "{err}");
            assert_eq!(json["error"]["message"], err.to_string());
        }
    }

    #[tokio::test]
    async fn the_response_carries_status_json_and_whole_retry_after_seconds() {
        use http_body_util::BodyExt;
        let err = ApiError::KeyRateLimited {
            retry_after: Duration::from_millis(1500),
        };
        let response = error_response(&err);
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers()["retry-after"], "2");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["error"]["type"], "rate_limit_error");
        assert!(error_response(&ApiError::InvalidApiKey)
            .headers()
            .get("retry-after")
            .is_none());
    }

    #[test]
    fn openai_errors_map_by_code_then_type_and_keep_the_message() {
        for (error, kind) in [
            (
                json!({"type": "rate_limit_error", "code": "rate_limit_exceeded"}),
                "rate_limit_error",
            ),
            (
                json!({"type": "server_error", "code": "upstream_error"}),
                "api_error",
            ),
            (
                json!({"type": "server_error", "code": "overloaded"}),
                "overloaded_error",
            ),
            (
                json!({"type": "invalid_request_error", "code": "context_length_exceeded"}),
                "invalid_request_error",
            ),
            (
                json!({"type": "timeout_error", "code": "upstream_timeout"}),
                "api_error",
            ),
            (json!({"type": "something_new", "code": 42}), "api_error"),
        ] {
            let mut error = error;
            error["message"] = "it broke".into();
            let out = error_from_openai(&json!({"error": error}));
            assert_eq!(
                out,
                json!({"type": "error", "error": {"type": kind, "message": "it broke"}})
            );
        }
        let odd = error_from_openai(&json!("x"));
        assert_eq!(odd["error"]["type"], "api_error");
        assert_eq!(odd["error"]["message"], "the upstream stream failed");
    }
}
