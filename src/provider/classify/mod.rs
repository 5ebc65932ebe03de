//! Upstream error classification.
//!
//! Every provider reports failure in its own shape (the samples in the tests
//! below are the bodies and headers each provider really sends). Failover only
//! needs two facts from a reply — what kind of failure it was and when the
//! upstream said to come back — and the client needs one OpenAI-shaped body.
//! This module derives all three. It is pure (callers pass `now`) so every rule
//! can be pinned by the real samples in the tests below.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};

use crate::error::{mask_keys, one_line, ErrorKind, UpstreamError};

mod hint;
use hint::*;

/// How much of a non-JSON body becomes the message.
const TEXT_BODY_CHARS: usize = 200;

/// Classify a non-2xx upstream reply.
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> UpstreamError {
    let mut fields = match serde_json::from_slice::<Value>(body) {
        Ok(value) => body_fields(&value),
        Err(_) => Fields::from_message(&text_body_message(body)),
    };
    if fields.message.is_empty() {
        // `{"error":{}}` or an unknown JSON shape: the raw text says more than nothing.
        fields.message = text_body_message(body);
    }
    if fields.message.is_empty() {
        fields.message = status
            .canonical_reason()
            .map_or_else(|| format!("HTTP {}", status.as_u16()), str::to_owned);
        fields.text = fields.message.clone();
    }
    build(status.as_u16(), fields, headers, now)
}

/// A 2xx body that is really an error: OpenRouter's HTTP 200 with
/// `{"error":{...,"code":429}}`, or an SSE data chunk carrying a top-level
/// `error`. The embedded numeric code is the status when present, else 502.
pub fn error_in_body(json: &Value, headers: &HeaderMap, now: SystemTime) -> Option<UpstreamError> {
    let mut fields = error_fields(json)?;
    let status = fields.embedded_status.unwrap_or(502);
    if fields.message.is_empty() {
        fields.message = "upstream reported an error".to_owned();
    }
    Some(build(status, fields, headers, now))
}

/// The retry hint, most specific first:
/// 1. `retry-after-ms`;
/// 2. `retry-after`, seconds or an HTTP-date in the future;
/// 3. the message text: "try again after N seconds" (Kimi), "try again in
///    644ms" / "in 1.5s" (OpenAI), "retry after/in ...";
/// 4. the latest of the exhausted buckets' resets: `x-ratelimit-reset-*` (Go
///    durations) and `anthropic-ratelimit-*-reset` (RFC 3339), each only when
///    its matching `*-remaining` is 0.
///
/// The message beats bucket resets because it names the limit that was hit,
/// while a reset is when a whole bucket is full again (an overestimate).
pub fn retry_hint(headers: &HeaderMap, message: &str, now: SystemTime) -> Option<Duration> {
    hint(headers, message, now, false)
}

/// On a 2xx: how long the target is busy though this request got through,
/// the latest reset of a bucket the upstream says is spent
/// (`x-ratelimit-remaining-*: 0`). A `Retry-After` on a success asks for
/// nothing (some servers send one on every answer) and is ignored.
pub fn busy_hint(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    // Every successful reply is asked and nearly none carries a hint: one
    // pass over the names beats a parsed lookup per name.
    if !headers.keys().any(|n| is_hint_header(n.as_str())) {
        return None;
    }
    bucket_reset(headers, now, false)
}

/// `throttled`: the reply was a 429, so a bucket without a remaining count may
/// be the one that stopped us.
///
/// A hint too large for a `Duration` reads as the longest one rather than as
/// none: the upstream did say "long", and the caller's `max_cooldown` cuts it.
fn hint(headers: &HeaderMap, message: &str, now: SystemTime, throttled: bool) -> Option<Duration> {
    if !throttled && message.is_empty() && !headers.keys().any(|n| is_hint_header(n.as_str())) {
        return None;
    }
    header(headers, "retry-after-ms")
        .and_then(|v| parse_decimal(v, NANOS_PER_MS))
        .or_else(|| header(headers, "retry-after").and_then(|v| parse_retry_after(v, now)))
        .or_else(|| message_hint(message))
        .or_else(|| bucket_reset(headers, now, throttled))
}

// ---------------------------------------------------------------------------
// Classification

/// Phrases that mean the prompt does not fit, from the providers' real error messages plus Gemini's and
/// Bedrock's wording. Not "too many tokens": that is throttling.
const CONTEXT_PHRASES: &[&str] = &[
    "maximum context length",
    "context window",
    "exceeds the available context size",
    "exceeded model token limit",
    "input token length too long",
    "prompt is too long",
    "prompt too long",
    "context length",
    "'max_tokens' or 'max_completion_tokens' is too large",
    "maximum number of tokens allowed",
    "input is too long",
];

/// Phrases that can only mean the account is out of money, whatever the status
/// (Anthropic says it with a 400, which must not go back to the client as its
/// own mistake).
const NO_MONEY_PHRASES: &[&str] = &[
    "insufficient balance",
    "credit balance is too low",
    "requires more credits",
    "insufficient credits",
];

/// Words that suggest quota on a 429 but also appear in per-minute limit
/// messages, so they only count when nothing else says "rate limit".
const QUOTA_WORDS: &[&str] = &["quota", "billing"];

const QUOTA_SIGNALS: &[&str] = &[
    "insufficient_quota",
    "exceeded_current_quota_error",
    "billing_hard_limit_reached",
    "billing_not_active",
];

const AUTH_SIGNALS: &[&str] = &[
    "authentication_error",
    "permission_error",
    "invalid_api_key",
];

fn kind_of(status: u16, fields: &Fields, has_hint: bool) -> ErrorKind {
    let text = fields.text.to_lowercase();
    let signal = |word: &str| fields.signals.iter().any(|s| s == word);
    let signal_mentions = |part: &str| fields.signals.iter().any(|s| s.contains(part));
    let says = |phrases: &[&str]| phrases.iter().any(|p| text.contains(p));
    let rate_limit_signal = signal_mentions("rate_limit");

    // Structured fields first: they are the upstream's own verdict.
    if signal("context_length_exceeded") || signal("exceed_context_size_error") || status == 413 {
        return ErrorKind::ContextLength;
    }
    if QUOTA_SIGNALS.iter().any(|s| signal(s)) || status == 402 || says(NO_MONEY_PHRASES) {
        return ErrorKind::QuotaExhausted;
    }
    if matches!(status, 401 | 403) || AUTH_SIGNALS.iter().any(|s| signal(s)) {
        return ErrorKind::AuthError;
    }
    // Before the 429 rule: Kimi reports engine overload as a 429.
    if signal_mentions("overloaded") || signal("unavailable_error") {
        return ErrorKind::Overloaded;
    }
    // On a 429 any talk of tokens is about throughput, not the prompt's size.
    if status != 429 && !rate_limit_signal && says(CONTEXT_PHRASES) {
        return ErrorKind::ContextLength;
    }
    if status == 429 || rate_limit_signal {
        // A provider that says when to come back is throttling, not broke.
        if !rate_limit_signal && !has_hint && says(QUOTA_WORDS) {
            return ErrorKind::QuotaExhausted;
        }
        return ErrorKind::RateLimited;
    }
    match status {
        503 | 529 => ErrorKind::Overloaded,
        408 | 504 | 524 => ErrorKind::Timeout,
        500..=599 if text.contains("overloaded") => ErrorKind::Overloaded,
        400..=499 => ErrorKind::ClientError,
        // Other 5xx, and anything odd (a 3xx we did not follow, a 200 with an
        // error and no code) is the upstream's fault.
        _ => ErrorKind::ServerError,
    }
}

fn build(status: u16, fields: Fields, headers: &HeaderMap, now: SystemTime) -> UpstreamError {
    let retry_after = hint(headers, &fields.text, now, status == 429);
    UpstreamError {
        kind: kind_of(status, &fields, retry_after.is_some()),
        status,
        message: mask_keys(&fields.message),
        error_type: fields.error_type,
        code: fields.code,
        param: fields.param,
        retry_after,
    }
}

// ---------------------------------------------------------------------------
// Body shapes

/// What an error body says, whatever its shape.
#[derive(Debug, Default)]
struct Fields {
    message: String,
    error_type: Option<String>,
    code: Option<String>,
    param: Option<String>,
    /// A numeric `code` in the body (OpenRouter, llama.cpp, vLLM).
    embedded_status: Option<u16>,
    /// Every type and code seen at any nesting level, lowercased.
    signals: Vec<String>,
    /// All message text seen (OpenRouter's wrapper and raw), for phrase
    /// matching and retry hints.
    text: String,
}

impl Fields {
    fn from_message(message: &str) -> Self {
        Fields {
            message: message.trim().to_owned(),
            text: message.to_owned(),
            ..Fields::default()
        }
    }
}

/// Fields of a value that is an error by shape, or None for an ordinary body:
/// `{"error":{...}}` (OpenAI, Kimi, OpenRouter, llama.cpp, Anthropic),
/// `{"error":"..."}` (Ollama), `{"object":"error",...}` (old vLLM), and
/// `[{...}]` (Gemini wraps its error in an array).
fn error_fields(value: &Value) -> Option<Fields> {
    match value {
        Value::Array(items) => items.first().and_then(error_fields),
        Value::Object(obj) => match obj.get("error") {
            Some(Value::Object(err)) => Some(object_fields(err)),
            Some(Value::String(message)) => Some(Fields::from_message(message)),
            _ if obj.get("object").and_then(Value::as_str) == Some("error") => {
                Some(object_fields(obj))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Like `error_fields`, but makes the best of any JSON an error reply carried
/// (a bare string, FastAPI's `{"detail":...}`, a gateway's `{"message":...}`).
fn body_fields(value: &Value) -> Fields {
    if let Some(fields) = error_fields(value) {
        return fields;
    }
    match value {
        Value::Object(obj) => object_fields(obj),
        Value::String(message) => Fields::from_message(message),
        _ => Fields::default(),
    }
}

fn object_fields(err: &Map<String, Value>) -> Fields {
    let outer_message = err
        .get("message")
        .or_else(|| err.get("detail"))
        .filter(|v| !v.is_null())
        .map(text_of)
        .unwrap_or_default();
    let mut fields = Fields {
        error_type: err.get("type").and_then(Value::as_str).map(str::to_owned),
        code: err.get("code").and_then(code_text),
        param: err.get("param").and_then(param_text),
        embedded_status: err.get("code").and_then(status_of),
        text: outer_message.clone(),
        ..Fields::default()
    };
    fields
        .signals
        .extend(fields.error_type.iter().map(|s| s.to_lowercase()));
    fields
        .signals
        .extend(fields.code.iter().map(|s| s.to_lowercase()));

    // OpenRouter wraps the real provider's words in metadata.raw behind a bland
    // "Provider returned error"; raw may itself be the provider's JSON body.
    let metadata = err.get("metadata");
    let provider = metadata
        .and_then(|m| m.get("provider_name"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|p| !p.is_empty());
    let raw = metadata.and_then(|m| m.get("raw")).and_then(raw_fields);
    fields.message = match raw {
        Some(inner) => {
            fields.text.push(' ');
            fields.text.push_str(&inner.text);
            fields.signals.extend(inner.signals);
            if fields.error_type.is_none() {
                fields.error_type = inner.error_type;
            }
            match provider {
                Some(provider) => format!("{provider}: {}", inner.message),
                None => inner.message,
            }
        }
        None => outer_message.trim().to_owned(),
    };
    fields
}

/// OpenRouter's `metadata.raw`: a string that may hold JSON, or JSON itself.
fn raw_fields(raw: &Value) -> Option<Fields> {
    let fields = match raw {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(inner @ (Value::Object(_) | Value::Array(_))) => body_fields(&inner),
            _ => Fields::from_message(s),
        },
        Value::Object(_) | Value::Array(_) => body_fields(raw),
        _ => return None,
    };
    (!fields.message.is_empty()).then_some(fields)
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn code_text(code: &Value) -> Option<String> {
    match code {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn param_text(param: &Value) -> Option<String> {
    match param {
        Value::Null => None,
        other => Some(text_of(other)),
    }
}

/// An embedded code that is an HTTP error status (OpenRouter's `"code":429`).
fn status_of(code: &Value) -> Option<u16> {
    let n = match code {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (400..=599).contains(&n).then_some(n as u16)
}

/// The message for a body that is not JSON: an HTML page's title (Cloudflare's
/// 524 pages), else the first characters of the text.
fn text_body_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.starts_with('<') {
        if let Some(title) = html_title(text) {
            return title;
        }
    }
    text.chars()
        .take(TEXT_BODY_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}

fn html_title(html: &str) -> Option<String> {
    // ASCII lowercasing keeps byte offsets valid in the original.
    let lower = html.to_ascii_lowercase();
    let start = lower.find("<title>")? + "<title>".len();
    let end = start + lower[start..].find("</title>")?;
    let title = one_line(&html[start..end], TEXT_BODY_CHARS);
    (!title.is_empty()).then_some(title)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;
    use std::time::UNIX_EPOCH;

    /// A fixed "now" so HTTP-date and RFC 3339 hints are exact.
    fn now() -> SystemTime {
        // 2025-06-01T12:00:00Z
        UNIX_EPOCH + Duration::from_secs(1_748_779_200)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn classify_with(status: u16, pairs: &[(&'static str, &str)], body: &str) -> UpstreamError {
        classify(
            StatusCode::from_u16(status).unwrap(),
            &headers(pairs),
            body.as_bytes(),
            now(),
        )
    }

    fn classify_body(status: u16, body: &str) -> UpstreamError {
        classify_with(status, &[], body)
    }

    // --- Rate limits and quota, as providers send them ---

    #[test]
    fn openai_429_tpm_is_rate_limited_with_644ms_hint_from_message() {
        let body = r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Used 29937, Requested 385. Please try again in 644ms.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;
        // The requests bucket has room, so its 6m0s reset must not win.
        let err = classify_with(
            429,
            &[
                ("x-ratelimit-remaining-requests", "59"),
                ("x-ratelimit-reset-requests", "6m0s"),
            ],
            body,
        );
        assert_eq!(err.kind, ErrorKind::RateLimited);
        assert_eq!(err.status, 429);
        assert_eq!(err.retry_after, Some(Duration::from_millis(644)));
        assert_eq!(err.error_type.as_deref(), Some("tokens"));
        assert_eq!(err.code.as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(err.param, None);
        assert!(err.message.starts_with("Rate limit reached for gpt-4o"));
    }

    #[test]
    fn openai_429_insufficient_quota_is_quota_exhausted() {
        let body = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        let err = classify_body(429, body);
        assert_eq!(err.kind, ErrorKind::QuotaExhausted);
        assert_eq!(err.retry_after, None);
    }

    #[test]
    fn kimi_429_rpm_is_rate_limited_with_hint_parsed_from_after_1_seconds() {
        let body = r#"{"error":{"type":"rate_limit_reached_error","message":"Your account org-x<ak-y> request reached organization max RPM: 3, please try again after 1 seconds"}}"#;
        let err = classify_body(429, body);
        assert_eq!(err.kind, ErrorKind::RateLimited);
        assert_eq!(err.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(err.code, None);
        assert_eq!(err.error_type.as_deref(), Some("rate_limit_reached_error"));
    }

    #[test]
    fn kimi_429_concurrency_and_project_tpm_are_rate_limited() {
        for message in [
            "Your account org-x<ak-y> request reached max organization concurrency: 1, please try again after 1 seconds",
            "Your account org-x<ak-y> request reached project TPM rate limit, current: 1000, limit: 500",
        ] {
            let body = json!({"error": {"type": "rate_limit_reached_error", "message": message}});
            let err = classify_body(429, &body.to_string());
            assert_eq!(err.kind, ErrorKind::RateLimited, "{message}");
        }
    }

    #[test]
    fn kimi_429_insufficient_balance_is_quota_exhausted() {
        let body = r#"{"error":{"type":"exceeded_current_quota_error","message":"Your account is suspended due to insufficient balance, please recharge your account or check your plan and billing details"}}"#;
        assert_eq!(classify_body(429, body).kind, ErrorKind::QuotaExhausted);
    }

    #[test]
    fn kimi_429_engine_overloaded_is_overloaded_not_rate_limited() {
        let body = r#"{"error":{"type":"engine_overloaded_error","message":"The engine is currently overloaded, please try again later"}}"#;
        let err = classify_body(429, body);
        assert_eq!(err.kind, ErrorKind::Overloaded);
        assert_eq!(err.retry_after, None, "\"try again later\" is no duration");
    }

    #[test]
    fn openrouter_429_message_is_metadata_raw_prefixed_with_provider_and_retry_after_7s() {
        let body = r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"z-ai/glm-5.3-flash is temporarily rate-limited upstream. Please retry shortly","provider_name":"BaseTen"}}}"#;
        let err = classify_with(429, &[("retry-after", "7")], body);
        assert_eq!(err.kind, ErrorKind::RateLimited);
        assert_eq!(
            err.message,
            "BaseTen: z-ai/glm-5.3-flash is temporarily rate-limited upstream. Please retry shortly"
        );
        assert_eq!(err.code.as_deref(), Some("429"));
        assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
    }

    #[test]
    fn openrouter_402_credits_is_quota_exhausted_with_outer_message_when_no_raw() {
        let body = r#"{"error":{"message":"This request requires more credits, or fewer max_tokens. You requested up to 65536 tokens, but can only afford 3395.","code":402,"metadata":{"provider_name":null}}}"#;
        let err = classify_body(402, body);
        assert_eq!(err.kind, ErrorKind::QuotaExhausted);
        assert_eq!(
            err.message,
            "This request requires more credits, or fewer max_tokens. You requested up to 65536 tokens, but can only afford 3395."
        );
        assert_eq!(err.code.as_deref(), Some("402"));
    }

    #[test]
    fn openrouter_raw_holding_provider_json_uses_inner_message_and_code() {
        let raw = r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
        let body = json!({"error": {"message": "Provider returned error", "code": 400,
            "metadata": {"raw": raw, "provider_name": "Together"}}});
        let err = classify_body(400, &body.to_string());
        assert_eq!(err.kind, ErrorKind::ContextLength);
        assert_eq!(
            err.message,
            "Together: This model's maximum context length is 8192 tokens."
        );
        assert_eq!(err.code.as_deref(), Some("400"));
        assert_eq!(err.error_type.as_deref(), Some("invalid_request_error"));
    }

    #[test]
    fn anthropic_429_rate_limit_error_with_retry_after_seconds() {
        let body = r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your account's rate limit. Please try again later."}}"#;
        let err = classify_with(429, &[("retry-after", "12")], body);
        assert_eq!(err.kind, ErrorKind::RateLimited);
        assert_eq!(err.retry_after, Some(Duration::from_secs(12)));
        assert_eq!(
            err.message,
            "This request would exceed your account's rate limit. Please try again later."
        );
        assert_eq!(err.error_type.as_deref(), Some("rate_limit_error"));
    }

    #[test]
    fn anthropic_429_hint_from_rfc3339_reset_of_exhausted_bucket() {
        let body = r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your account's rate limit. Please try again later."}}"#;
        let err = classify_with(
            429,
            &[
                ("anthropic-ratelimit-requests-remaining", "12"),
                ("anthropic-ratelimit-requests-reset", "2025-06-01T12:05:00Z"),
                ("anthropic-ratelimit-tokens-remaining", "0"),
                ("anthropic-ratelimit-tokens-reset", "2025-06-01T12:00:30.5Z"),
            ],
            body,
        );
        assert_eq!(err.retry_after, Some(Duration::from_millis(30_500)));
    }

    #[test]
    fn anthropic_529_is_overloaded() {
        let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let err = classify_body(529, body);
        assert_eq!(err.kind, ErrorKind::Overloaded);
        assert_eq!(err.message, "Overloaded");
    }

    #[test]
    fn ollama_503_string_error_is_overloaded_and_message_is_the_string() {
        let body =
            r#"{"error":"server busy, please try again.  maximum pending requests exceeded"}"#;
        let err = classify_body(503, body);
        assert_eq!(err.kind, ErrorKind::Overloaded);
        assert_eq!(
            err.message,
            "server busy, please try again.  maximum pending requests exceeded"
        );
        assert_eq!(err.error_type, None);
    }

    #[test]
    fn llamacpp_503_loading_model_is_overloaded() {
        let body = r#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#;
        let err = classify_body(503, body);
        assert_eq!(err.kind, ErrorKind::Overloaded);
        assert_eq!(err.message, "Loading model");
        assert_eq!(err.code.as_deref(), Some("503"));
    }

    // --- Context length, as providers send it ---

    #[test]
    fn openai_400_context_length_exceeded_by_code() {
        let body = r#"{"error":{"message":"This model's maximum context length is 4097 tokens. However, your messages resulted in 4294 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        let err = classify_body(400, body);
        assert_eq!(err.kind, ErrorKind::ContextLength);
        assert!(!err.kind.fails_over());
        assert_eq!(err.param.as_deref(), Some("messages"));
    }

    #[test]
    fn openai_400_newer_context_window_message_is_context_length() {
        let body = r#"{"error":{"message":"Your input exceeds the context window of this model.","type":"invalid_request_error","param":"input","code":null}}"#;
        assert_eq!(classify_body(400, body).kind, ErrorKind::ContextLength);
    }

    #[test]
    fn vllm_old_object_error_shape_is_context_length_and_normalized() {
        let body = r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}"#;
        let err = classify_body(400, body);
        assert_eq!(err.kind, ErrorKind::ContextLength);
        assert!(err
            .message
            .starts_with("This model's maximum context length is 4096 tokens."));
        assert_eq!(err.error_type.as_deref(), Some("BadRequestError"));
        assert_eq!(err.code.as_deref(), Some("400"));
        assert_eq!(err.param, None);
    }

    #[test]
    fn vllm_max_tokens_too_large_is_context_length() {
        let message = "'max_tokens' or 'max_completion_tokens' is too large: 8000. This model's maximum context length is 4096 tokens and your request has 2778 input tokens (8000 > 4096 - 2778).";
        let new_shape = json!({"error": {"message": message, "type": "BadRequestError", "param": null, "code": 400}});
        let old_shape = json!({"object": "error", "message": message, "type": "BadRequestError", "param": null, "code": 400});
        for body in [new_shape, old_shape] {
            let err = classify_body(400, &body.to_string());
            assert_eq!(err.kind, ErrorKind::ContextLength);
            assert_eq!(err.message, message);
        }
    }

    #[test]
    fn llamacpp_exceed_context_size_error_by_type() {
        let body = r#"{"error":{"code":400,"message":"request (4476 tokens) exceeds the available context size (4096 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":4476,"n_ctx":4096}}"#;
        let err = classify_body(400, body);
        assert_eq!(err.kind, ErrorKind::ContextLength);
        assert_eq!(err.error_type.as_deref(), Some("exceed_context_size_error"));
    }

    #[test]
    fn ollama_prompt_too_long_string_error_is_context_length() {
        let body = r#"{"error":"prompt too long; exceeded max context length by 4 tokens"}"#;
        let err = classify_body(400, body);
        assert_eq!(err.kind, ErrorKind::ContextLength);
        assert_eq!(
            err.message,
            "prompt too long; exceeded max context length by 4 tokens"
        );
    }

    #[test]
    fn kimi_exceeded_model_token_limit_is_context_length() {
        let body = r#"{"error":{"type":"invalid_request_error","message":"Invalid request: Your request exceeded model token limit : 262144"}}"#;
        assert_eq!(classify_body(400, body).kind, ErrorKind::ContextLength);
    }

    #[test]
    fn kimi_input_token_length_too_long_is_context_length() {
        let body =
            r#"{"error":{"type":"invalid_request_error","message":"Input token length too long"}}"#;
        assert_eq!(classify_body(400, body).kind, ErrorKind::ContextLength);
    }

    #[test]
    fn openrouter_endpoint_maximum_context_length_is_context_length() {
        let message = "This endpoint's maximum context length is 32768 tokens. However, you requested about 42832 tokens (42832 of text input). Please reduce the length of either one, or use the \"middle-out\" transform to compress your prompt automatically.";
        let body = json!({"error": {"message": message, "code": 400}});
        let err = classify_body(400, &body.to_string());
        assert_eq!(err.kind, ErrorKind::ContextLength);
        assert_eq!(err.message, message);
    }

    #[test]
    fn anthropic_prompt_is_too_long_is_context_length() {
        let body = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208310 tokens > 200000 maximum"}}"#;
        let err = classify_body(400, body);
        assert_eq!(err.kind, ErrorKind::ContextLength);
        assert_eq!(
            err.message,
            "prompt is too long: 208310 tokens > 200000 maximum"
        );
    }

    #[test]
    fn status_413_is_context_length_with_reason_phrase_for_empty_body() {
        let err = classify_body(413, "");
        assert_eq!(err.kind, ErrorKind::ContextLength);
        assert_eq!(err.message, "Payload Too Large");
    }

    #[test]
    fn too_many_tokens_on_429_is_rate_limited_not_context_length() {
        let body = r#"{"error":{"message":"Too many tokens, please wait before trying again.","type":"throttling"}}"#;
        assert_eq!(classify_body(429, body).kind, ErrorKind::RateLimited);
    }

    #[test]
    fn too_many_tokens_on_400_is_a_client_error_not_context_length() {
        let body = r#"{"error":{"message":"Too many tokens","type":"invalid_request_error"}}"#;
        assert_eq!(classify_body(400, body).kind, ErrorKind::ClientError);
    }

    // --- Other quota and auth shapes ---

    #[test]
    fn quota_words_on_429_without_any_hint_are_quota_exhausted() {
        let body = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details."}}"#;
        assert_eq!(classify_body(429, body).kind, ErrorKind::QuotaExhausted);
    }

    #[test]
    fn quota_words_on_429_with_a_retry_time_are_rate_limited() {
        let body = r#"{"error":{"message":"Quota exceeded for metric: generate_content_free_tier_requests, limit: 15. Please retry in 32.5s."}}"#;
        let err = classify_body(429, body);
        assert_eq!(err.kind, ErrorKind::RateLimited);
        assert_eq!(err.retry_after, Some(Duration::from_millis(32_500)));
    }

    #[test]
    fn anthropic_low_credit_balance_on_400_is_quota_exhausted_not_client_error() {
        let body = r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}"#;
        assert_eq!(classify_body(400, body).kind, ErrorKind::QuotaExhausted);
    }

    #[test]
    fn status_401_and_403_are_auth_errors() {
        let body = r#"{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        assert_eq!(classify_body(401, body).kind, ErrorKind::AuthError);
        assert_eq!(classify_body(403, "forbidden").kind, ErrorKind::AuthError);
    }

    #[test]
    fn echoed_api_key_is_masked_in_message_and_summary() {
        let body = r#"{"error":{"message":"Incorrect API key provided: sk-proj-abcdefghijklmnopqrstuvwxyz0123. You can find your API key at https://platform.openai.com/account/api-keys.","code":"invalid_api_key"}}"#;
        let err = classify_body(401, body);
        assert_eq!(
            err.message,
            "Incorrect API key provided: sk-***. You can find your API key at https://platform.openai.com/account/api-keys."
        );
        assert!(!err.summary().contains("abcdefghij"));
        // Short look-alikes are left alone.
        assert_eq!(mask_keys("task-1 risk-free sk-x"), "task-1 risk-free sk-x");
    }

    // --- Status mapping and odd bodies ---

    #[test]
    fn timeouts_server_errors_and_client_errors_by_status() {
        for (status, kind) in [
            (408, ErrorKind::Timeout),
            (504, ErrorKind::Timeout),
            (524, ErrorKind::Timeout),
            (500, ErrorKind::ServerError),
            (502, ErrorKind::ServerError),
            (503, ErrorKind::Overloaded),
            (400, ErrorKind::ClientError),
            (404, ErrorKind::ClientError),
            (422, ErrorKind::ClientError),
            (429, ErrorKind::RateLimited),
        ] {
            assert_eq!(classify_body(status, "").kind, kind, "status {status}");
        }
    }

    #[test]
    fn kimi_404_retired_model_is_client_error_with_its_type() {
        let body = r#"{"error":{"message":"Not found the model kimi-k2-0711-preview or Permission denied","type":"resource_not_found_error"}}"#;
        let err = classify_body(404, body);
        assert_eq!(err.kind, ErrorKind::ClientError);
        assert_eq!(err.error_type.as_deref(), Some("resource_not_found_error"));
    }

    #[test]
    fn non_json_body_message_is_its_first_200_chars() {
        let text = "x".repeat(500);
        let err = classify_body(502, &format!("  {text}\n"));
        assert_eq!(err.message, "x".repeat(200));
        assert_eq!(err.kind, ErrorKind::ServerError);
    }

    #[test]
    fn html_error_page_message_is_its_title() {
        let html = "<!DOCTYPE html>\n<html><head><TITLE>openrouter.ai | 524: A timeout occurred</TITLE></head><body>...</body></html>";
        let err = classify_body(524, html);
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert_eq!(err.message, "openrouter.ai | 524: A timeout occurred");
    }

    #[test]
    fn fastapi_detail_body_gives_the_message() {
        let err = classify_body(404, r#"{"detail":"Not Found"}"#);
        assert_eq!(err.message, "Not Found");
        assert_eq!(err.kind, ErrorKind::ClientError);
    }

    #[test]
    fn empty_error_object_falls_back_to_the_raw_body() {
        assert_eq!(
            classify_body(500, r#"{"error":{}}"#).message,
            r#"{"error":{}}"#
        );
    }

    // --- Errors inside 2xx bodies ---

    #[test]
    fn openrouter_200_with_error_body_code_429_is_rate_limited() {
        let body = json!({"error": {"message": "Provider returned error", "code": 429,
            "metadata": {"raw": "Rate limit exceeded. Please try again in 20s.", "provider_name": "Chutes"}}});
        let err = error_in_body(&body, &HeaderMap::new(), now()).expect("an error");
        assert_eq!(err.kind, ErrorKind::RateLimited);
        assert_eq!(err.status, 429);
        assert_eq!(
            err.message,
            "Chutes: Rate limit exceeded. Please try again in 20s."
        );
        assert_eq!(err.retry_after, Some(Duration::from_secs(20)));
    }

    #[test]
    fn sse_chunk_with_error_and_no_numeric_code_is_a_502_server_error() {
        let chunk = json!({"id": "gen-1", "object": "chat.completion.chunk",
            "error": {"code": "server_error", "message": "Provider disconnected"},
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]});
        let err = error_in_body(&chunk, &HeaderMap::new(), now()).expect("an error");
        assert_eq!(err.status, 502);
        assert_eq!(err.kind, ErrorKind::ServerError);
        assert_eq!(err.code.as_deref(), Some("server_error"));
    }

    #[test]
    fn anthropic_stream_error_event_is_overloaded_by_type() {
        let event = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        let err = error_in_body(&event, &HeaderMap::new(), now()).expect("an error");
        assert_eq!(err.kind, ErrorKind::Overloaded);
        assert_eq!(err.status, 502);
    }

    #[test]
    fn ordinary_bodies_and_null_error_are_not_errors() {
        let ok = json!({"id": "x", "object": "chat.completion", "choices": []});
        let null_error = json!({"id": "x", "error": null, "choices": []});
        assert_eq!(error_in_body(&ok, &HeaderMap::new(), now()), None);
        assert_eq!(error_in_body(&null_error, &HeaderMap::new(), now()), None);
    }

    // --- Retry hints ---

    #[test]
    fn retry_after_ms_is_preferred_over_retry_after() {
        let h = headers(&[("retry-after", "2"), ("retry-after-ms", "1500.5")]);
        assert_eq!(
            retry_hint(&h, "", now()),
            Some(Duration::from_micros(1_500_500))
        );
    }

    #[test]
    fn retry_after_seconds_beats_message_text() {
        let h = headers(&[("retry-after", "7")]);
        assert_eq!(
            retry_hint(&h, "Please try again in 644ms.", now()),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn retry_after_http_date_in_the_future_is_relative_to_now() {
        let h = headers(&[("retry-after", "Sun, 01 Jun 2025 12:01:30 GMT")]);
        assert_eq!(retry_hint(&h, "", now()), Some(Duration::from_secs(90)));
    }

    #[test]
    fn retry_after_http_date_in_the_past_gives_no_hint() {
        let h = headers(&[("retry-after", "Sun, 01 Jun 2025 11:59:00 GMT")]);
        assert_eq!(retry_hint(&h, "", now()), None);
    }

    #[test]
    fn garbage_retry_after_falls_through_to_the_next_source() {
        let h = headers(&[("retry-after", "soon"), ("retry-after-ms", "-5")]);
        assert_eq!(
            retry_hint(&h, "try again after 3 seconds", now()),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn x_ratelimit_reset_requests_6m0s_counts_when_remaining_is_0() {
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "6m0s"),
            ("x-ratelimit-remaining-tokens", "29000"),
            ("x-ratelimit-reset-tokens", "12ms"),
        ]);
        assert_eq!(retry_hint(&h, "", now()), Some(Duration::from_secs(360)));
    }

    #[test]
    fn a_success_among_ordinary_headers_is_checked_for_every_hint_header() {
        let plain = headers(&[
            ("content-type", "application/json"),
            ("server", "nginx"),
            ("x-request-id", "abc"),
        ]);
        assert_eq!(retry_hint(&plain, "", now()), None);
        let busy = headers(&[
            ("content-type", "application/json"),
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "2025-06-01T12:00:30Z"),
        ]);
        assert_eq!(retry_hint(&busy, "", now()), Some(Duration::from_secs(30)));
    }

    #[test]
    fn x_ratelimit_resets_are_ignored_while_buckets_have_room() {
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "3"),
            ("x-ratelimit-reset-requests", "6m0s"),
        ]);
        assert_eq!(retry_hint(&h, "", now()), None);
        // ...and without a remaining count they only count on a 429.
        let bare = headers(&[("x-ratelimit-reset-tokens", "1m30.5s")]);
        assert_eq!(retry_hint(&bare, "", now()), None);
        let err = classify_with(429, &[("x-ratelimit-reset-tokens", "1m30.5s")], "");
        assert_eq!(err.retry_after, Some(Duration::from_millis(90_500)));
    }

    #[test]
    fn on_429_the_latest_unknown_or_exhausted_bucket_reset_wins() {
        let err = classify_with(
            429,
            &[
                ("x-ratelimit-reset-requests", "1s"),
                ("x-ratelimit-remaining-tokens", "0"),
                ("x-ratelimit-reset-tokens", "6m0s"),
            ],
            "",
        );
        assert_eq!(err.retry_after, Some(Duration::from_secs(360)));
    }

    #[test]
    fn openai_message_hints_in_ms_fractional_and_whole_seconds() {
        for (message, expected) in [
            ("Please try again in 644ms.", Duration::from_millis(644)),
            ("Please try again in 1.5s.", Duration::from_millis(1500)),
            ("Please try again in 20s.", Duration::from_secs(20)),
            ("Please try again in 6m0s.", Duration::from_secs(360)),
            ("Please retry after 20 seconds.", Duration::from_secs(20)),
        ] {
            assert_eq!(
                retry_hint(&HeaderMap::new(), message, now()),
                Some(expected),
                "{message}"
            );
        }
        assert_eq!(
            retry_hint(&HeaderMap::new(), "Please try again later.", now()),
            None
        );
    }

    #[test]
    fn hints_beyond_any_duration_read_as_the_longest_not_as_none() {
        let huge = "18446744073709551615";
        let cases = [
            headers(&[("retry-after", huge)]),
            headers(&[("retry-after-ms", &format!("{huge}{huge}"))]),
            headers(&[("x-ratelimit-reset-requests", &format!("{huge}s"))]),
            headers(&[("x-ratelimit-reset-tokens", &format!("{huge}h{huge}m"))]),
        ];
        for h in &cases {
            let hint = hint(h, "", now(), true).expect("a hint");
            assert!(
                hint >= Duration::from_secs(u64::MAX / 1000),
                "{h:?}: {hint:?}"
            );
        }
        let year_9999 = headers(&[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")]);
        let hint = retry_hint(&year_9999, "", now()).expect("a hint");
        assert!(hint > Duration::from_secs(7_000 * 365 * 86_400));
    }

    #[test]
    fn a_success_is_busy_only_for_a_spent_bucket_never_for_retry_after() {
        let retry = headers(&[("retry-after", "1000000000000"), ("retry-after-ms", "5")]);
        assert_eq!(busy_hint(&retry, now()), None);
        let spent = headers(&[
            ("retry-after", "7"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1m30s"),
        ]);
        assert_eq!(busy_hint(&spent, now()), Some(Duration::from_secs(90)));
        let room = headers(&[
            ("x-ratelimit-remaining-requests", "5"),
            ("x-ratelimit-reset-requests", "1m30s"),
        ]);
        assert_eq!(busy_hint(&room, now()), None);
    }

    #[test]
    fn go_durations_parse_exactly() {
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_go_duration("12ms"), Some(Duration::from_millis(12)));
        assert_eq!(
            parse_go_duration("1m30.5s"),
            Some(Duration::from_millis(90_500))
        );
        assert_eq!(parse_go_duration("1h2m"), Some(Duration::from_secs(3720)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "s", "5", "5x", "1..5s", "-1s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_parses_fraction_and_offset() {
        let noon = now();
        assert_eq!(parse_rfc3339("2025-06-01T12:00:00Z"), Some(noon));
        assert_eq!(
            parse_rfc3339("2025-06-01T14:00:00.25+02:00"),
            Some(noon + Duration::from_millis(250))
        );
        assert_eq!(parse_rfc3339("2025-06-01T12:00:00"), None);
        assert_eq!(parse_rfc3339("not a date at all!!"), None);
    }

    // --- Output shapes ---

    #[test]
    fn to_openai_json_keeps_upstream_type_code_and_param() {
        let body = r#"{"error":{"message":"Invalid value for 'temperature'.","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}"#;
        let err = classify_body(400, body);
        assert_eq!(err.kind, ErrorKind::ClientError);
        assert_eq!(
            err.to_openai_json(),
            json!({"error": {"message": "Invalid value for 'temperature'.",
                "type": "invalid_request_error", "param": "temperature", "code": "invalid_value"}})
        );
    }

    #[test]
    fn to_openai_json_defaults_type_and_nulls_code_for_ollama_string_error() {
        let err = classify_body(400, r#"{"error":"invalid options: foo"}"#);
        assert_eq!(
            err.to_openai_json(),
            json!({"error": {"message": "invalid options: foo",
                "type": "invalid_request_error", "param": null, "code": null}})
        );
    }

    #[test]
    fn summary_is_one_line_with_status_kind_and_truncated_message() {
        let err = classify_body(429, &format!("line one\nline two {}", "y".repeat(300)));
        let summary = err.summary();
        assert!(summary.starts_with("429 rate_limited: line one line two yyy"));
        assert!(summary.ends_with("..."));
        assert!(!summary.contains('\n'));
        assert!(summary.len() < 200);
    }

    #[test]
    fn transport_errors_have_status_0_or_504_for_timeouts() {
        let connect = UpstreamError::transport(ErrorKind::ConnectError, "connection refused");
        assert_eq!(connect.status, 0);
        assert_eq!(connect.summary(), "connect_error: connection refused");
        let timeout = UpstreamError::transport(ErrorKind::Timeout, "no response in 60s");
        assert_eq!(timeout.status, 504);
        assert_eq!(timeout.summary(), "504 timeout: no response in 60s");
    }

    #[test]
    fn only_client_and_context_errors_do_not_fail_over() {
        let all = [
            ErrorKind::RateLimited,
            ErrorKind::QuotaExhausted,
            ErrorKind::ContextLength,
            ErrorKind::Overloaded,
            ErrorKind::ServerError,
            ErrorKind::Timeout,
            ErrorKind::ConnectError,
            ErrorKind::ClientError,
            ErrorKind::AuthError,
        ];
        let labels: Vec<_> = all.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            labels,
            [
                "rate_limited",
                "quota_exhausted",
                "context_length",
                "overloaded",
                "server_error",
                "timeout",
                "connect_error",
                "client_error",
                "auth_error"
            ]
        );
        let staying: Vec<_> = all.iter().filter(|k| !k.fails_over()).collect();
        assert_eq!(
            staying,
            [&ErrorKind::ContextLength, &ErrorKind::ClientError]
        );
    }
}
