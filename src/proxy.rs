//! A proxied request, in order: authenticate, read and check the body, route,
//! run the attempt loop under the request deadline, then answer: a JSON body,
//! or a stream relayed as it arrives.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::body::{self, Body};
use crate::error::ApiError;
use crate::failover::{self, Outcome};
use crate::provider::{Answer, Endpoint};
use crate::relay::{self, Relay, Resume};
use crate::route;
use crate::state::Shared;

/// What the request path learned, for the access log and metrics.
#[derive(Debug, Default)]
pub struct Trace {
    pub route: Option<String>,
    pub provider: Option<String>,
    pub attempts: u32,
    pub upstream_time: std::time::Duration,
    /// Known for JSON answers; a stream logs its own when it ends.
    pub usage: Option<crate::provider::normalize::Usage>,
}

pub async fn forward(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    endpoint: Endpoint,
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    let started = Instant::now();
    let rt = shared.runtime.load_full();
    let principal = rt.auth.check(req.headers())?;
    let bytes = read_body(req, rt.config.server.max_body_bytes).await?;
    let body = parse_request(&bytes, endpoint)?;
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let resolved = route::resolve(&rt.config, &model).map_err(|e| match (e, principal) {
        // A restricted key is not told about models it may not use.
        (ApiError::ModelNotFound { model, available }, Some(p)) => ApiError::ModelNotFound {
            model,
            available: available.into_iter().filter(|id| p.may_see(id)).collect(),
        },
        (e, _) => e,
    })?;
    trace.route = Some(resolved.label.clone());
    if let Some(p) = principal {
        if !p.may_use(&resolved.label) {
            return Err(ApiError::ModelNotAllowed(model));
        }
    }

    let resume = (endpoint == Endpoint::Chat
        && body.get("stream").and_then(Value::as_bool) == Some(true)
        && rt.config.route(&resolved.label).is_some_and(|r| r.resume))
    .then(|| Resume::new(rt.clone(), resolved.label.clone(), body.clone()));
    let timeout = rt.config.defaults.request_timeout;
    let deadline = started + timeout;
    let outcome = tokio::time::timeout_at(
        deadline,
        failover::run(shared, &rt, &resolved, body, endpoint, deadline),
    )
    .await
    .map_err(|_| ApiError::Timeout(timeout))??;
    trace.provider = Some(outcome.provider.clone());
    trace.attempts = outcome.attempts;
    trace.upstream_time = outcome.upstream_time;
    let compressed = outcome
        .compressed
        .as_ref()
        .map(|r| ("x-hermes-compressed", r.header()));
    let headers = [
        ("x-hermes-route", resolved.label.clone()),
        ("x-hermes-provider", outcome.provider.clone()),
        ("x-hermes-model", outcome.model.clone()),
        ("x-hermes-attempts", outcome.attempts.to_string()),
    ];
    let Outcome {
        answer,
        provider,
        estimated_tokens,
        ..
    } = outcome;
    let mut resp = match answer {
        Answer::Json { body, usage } => {
            if let Some(usage) = usage {
                shared.account(&provider, estimated_tokens, usage);
            }
            trace.usage = usage;
            respond(body::full(body), "application/json")
        }
        Answer::Stream { first, rest } => {
            shared
                .metrics
                .ttft
                .with_label_values(&[&resolved.label, &provider])
                .observe(started.elapsed().as_secs_f64());
            let relay = Relay {
                shared: shared.clone(),
                provider,
                estimated_tokens,
                deadline,
                timeout,
                resume,
                usage: None,
            };
            let mut resp = respond(relay::start(relay, first, rest), "text/event-stream");
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
    };
    for (name, value) in headers.into_iter().chain(compressed) {
        if let Ok(v) = HeaderValue::try_from(value) {
            resp.headers_mut().insert(name, v);
        }
    }
    Ok(resp)
}

fn respond(body: Body, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Reads at most `limit` bytes: a declared length over the limit is refused
/// before reading anything, an undeclared one as soon as it passes the limit.
async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::RequestTooLarge { limit });
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::RequestTooLarge { limit })
        }
        Err(e) => Err(ApiError::invalid(
            format!("could not read the request body: {e}"),
            None,
        )),
    }
}

/// Checks only what routing and the proxy rely on; every other field is the
/// provider's business and is forwarded untouched.
pub fn parse_request(bytes: &[u8], endpoint: Endpoint) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}"), None))?;
    let Value::Object(body) = value else {
        return Err(ApiError::invalid(
            "request body must be a JSON object",
            None,
        ));
    };
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {}
        None => {
            return Err(ApiError::invalid(
                "you must provide a `model` (a string)",
                Some("model"),
            ))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "`model` must be a non-empty string",
                Some("model"),
            ))
        }
    }
    if !matches!(
        body.get("stream"),
        None | Some(Value::Bool(_)) | Some(Value::Null)
    ) {
        return Err(ApiError::invalid(
            "`stream` must be a boolean",
            Some("stream"),
        ));
    }
    if !matches!(
        body.get("stream_options"),
        None | Some(Value::Object(_)) | Some(Value::Null)
    ) {
        return Err(ApiError::invalid(
            "`stream_options` must be an object",
            Some("stream_options"),
        ));
    }
    match endpoint {
        Endpoint::Chat => check_messages(body.get("messages"))?,
        Endpoint::Embeddings if body.get("input").is_none_or(Value::is_null) => {
            return Err(ApiError::invalid(
                "you must provide an `input`",
                Some("input"),
            ))
        }
        Endpoint::Completions if body.get("prompt").is_none_or(Value::is_null) => {
            return Err(ApiError::invalid(
                "you must provide a `prompt`",
                Some("prompt"),
            ))
        }
        _ => {}
    }
    if endpoint == Endpoint::Embeddings && body.get("stream").and_then(Value::as_bool) == Some(true)
    {
        return Err(ApiError::invalid(
            "embeddings cannot be streamed",
            Some("stream"),
        ));
    }
    Ok(body)
}

fn check_messages(messages: Option<&Value>) -> Result<(), ApiError> {
    let messages = match messages {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "`messages` must not be empty",
                Some("messages"),
            ))
        }
        None => {
            return Err(ApiError::invalid(
                "you must provide `messages` (an array)",
                Some("messages"),
            ))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "`messages` must be an array",
                Some("messages"),
            ))
        }
    };
    for (i, m) in messages.iter().enumerate() {
        if !m.get("role").is_some_and(Value::is_string) {
            return Err(ApiError::invalid(
                format!("`messages[{i}].role` must be a string"),
                Some("messages"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        parse_request(body.as_bytes(), Endpoint::Chat)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn names_the_offending_field() {
        assert!(err("not json").contains("not valid JSON"));
        assert!(err("[]").contains("JSON object"));
        assert!(err(r#"{"messages":[]}"#).contains("`model`"));
        assert!(err(r#"{"model":1,"messages":[]}"#).contains("`model`"));
        assert!(err(r#"{"model":"m","messages":{}}"#).contains("`messages`"));
        assert!(err(r#"{"model":"m","messages":[{"content":"x"}]}"#).contains("messages[0].role"));
        assert!(
            err(r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#)
                .contains("`stream`")
        );
    }

    #[test]
    fn keeps_unknown_fields_for_the_provider() {
        let body = parse_request(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"top_k":5,"provider":{"order":["x"]}}"#,
            Endpoint::Chat,
        )
        .unwrap();
        assert_eq!(body["top_k"], 5);
        assert_eq!(body["provider"]["order"][0], "x");
    }
}
