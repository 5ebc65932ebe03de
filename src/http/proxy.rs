//! A proxied request, in order: authenticate, read the body and parse it in
//! the client's dialect, route, send the canonical `Exchange` down the
//! route's stack under the request deadline, then answer in the dialect: a
//! JSON body, or a stream relayed as it arrives.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value};
use std::time::Duration;
use tokio::time::Instant;
use tower::ServiceExt;

use super::edge::Trace;
use crate::auth::Principal;
use crate::body::{self, Body};
use crate::error::ApiError;
use crate::pipeline::exchange::{Exchange, Served};
use crate::pipeline::relay::{self, Relay, Resume};
use crate::provider::Answer;
use crate::route::Plan;
use crate::runtime::{Generation, State};
use crate::wire::chat::{parse_request, Endpoint};
use crate::wire::sse::{ChatEvents, SseReader, StreamEncoder};
use crate::wire::usage::Usage;

pub async fn forward(
    state: &Arc<State>,
    req: Request<Incoming>,
    endpoint: Endpoint,
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    let started = Instant::now();
    let generation = state.current();
    let principal = generation.auth.check(req.headers())?;
    let bytes = read_body(req, generation.config.server.max_body_bytes).await?;
    let body = parse_request(&bytes, endpoint)?;
    let streamed = body.get("stream").and_then(Value::as_bool) == Some(true);
    let resume_request = (endpoint == Endpoint::Chat && streamed).then(|| body.clone());
    let sent = send(&generation, principal, endpoint, body, started, trace).await?;
    let headers = hermes_headers(&sent);
    let Sent {
        plan,
        served,
        deadline,
        timeout,
    } = sent;
    let resp = match served.answer {
        Answer::Json { body, usage } => {
            account(
                state,
                &served.provider,
                served.estimated_tokens,
                usage,
                trace,
            );
            respond(body::full(body), "application/json")
        }
        Answer::Stream { first, rest } => {
            let resume = resume_request
                .filter(|_| plan.resume)
                .map(|request| Resume::new(generation.routes.clone(), plan.label.clone(), request));
            let stream = Streamed {
                state,
                label: &plan.label,
                provider: served.provider,
                estimated_tokens: served.estimated_tokens,
                deadline,
                timeout,
                started,
            };
            stream.relay(first, rest, resume, Box::new(ChatEvents))
        }
    };
    Ok(with_headers(resp, headers))
}

/// A routed request on its way back: the plan it followed and what came back.
pub(super) struct Sent {
    pub plan: Arc<Plan>,
    pub served: Served,
    pub deadline: Instant,
    /// The configured `request_timeout`, for the message when `deadline` passes.
    pub timeout: Duration,
}

/// Routes a canonical request for this client and sends it down the route's
/// stack under the request deadline; what every dialect shares.
pub(super) async fn send(
    generation: &Generation,
    principal: Option<Principal<'_>>,
    endpoint: Endpoint,
    body: Map<String, Value>,
    started: Instant,
    trace: &mut Trace,
) -> Result<Sent, ApiError> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let (plan, service) = generation
        .routes
        .resolve(&model)
        .map_err(|e| match (e, principal) {
            // A restricted key is not told about models it may not use.
            (ApiError::ModelNotFound { model, available }, Some(p)) => ApiError::ModelNotFound {
                model,
                available: available.into_iter().filter(|id| p.may_see(id)).collect(),
            },
            (e, _) => e,
        })?;
    trace.route = Some(plan.label.clone());
    if let Some(p) = principal {
        if !p.may_use(&plan.label) {
            return Err(ApiError::ModelNotAllowed(model));
        }
    }
    let timeout = generation.config.defaults.request_timeout;
    let deadline = started + timeout;
    let exchange = Exchange {
        endpoint,
        body,
        plan: plan.clone(),
        deadline,
        routes: generation.routes.clone(),
    };
    let served = tokio::time::timeout_at(deadline, service.oneshot(exchange))
        .await
        .map_err(|_| ApiError::Timeout(timeout))??;
    trace.provider = Some(served.provider.clone());
    trace.attempts = served.attempts;
    trace.upstream_time = served.upstream_time;
    Ok(Sent {
        plan,
        served,
        deadline,
        timeout,
    })
}

/// The `x-hermes-*` headers of a routed answer.
pub(super) fn hermes_headers(sent: &Sent) -> Vec<(&'static str, String)> {
    let served = &sent.served;
    let mut headers = vec![
        ("x-hermes-route", sent.plan.label.clone()),
        ("x-hermes-provider", served.provider.clone()),
        ("x-hermes-model", served.model.clone()),
        ("x-hermes-attempts", served.attempts.to_string()),
    ];
    if let Some(report) = &served.compressed {
        headers.push(("x-hermes-compressed", report.header()));
    }
    headers
}

pub(super) fn with_headers(
    mut resp: Response<Body>,
    headers: Vec<(&'static str, String)>,
) -> Response<Body> {
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::try_from(value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

/// A JSON answer's usage: accounted to its provider, and noted for the access log.
pub(super) fn account(
    state: &State,
    provider: &str,
    estimated_tokens: u32,
    usage: Option<Usage>,
    trace: &mut Trace,
) {
    if let Some(usage) = usage {
        state.handles.account(provider, estimated_tokens, usage);
    }
    trace.usage = usage;
}

/// A stream on its way to the client.
pub(super) struct Streamed<'a> {
    pub state: &'a State,
    pub label: &'a str,
    pub provider: String,
    pub estimated_tokens: u32,
    pub deadline: Instant,
    pub timeout: Duration,
    /// When the request arrived, for the time to first token.
    pub started: Instant,
}

impl Streamed<'_> {
    /// Answers at once and relays the rest as it comes, written by `encoder`
    /// in the client's dialect.
    pub(super) fn relay(
        self,
        first: Bytes,
        rest: Option<SseReader>,
        resume: Option<Resume>,
        encoder: Box<dyn StreamEncoder>,
    ) -> Response<Body> {
        let handles = &self.state.handles;
        handles
            .metrics
            .ttft
            .with_label_values(&[self.label, &self.provider])
            .observe(self.started.elapsed().as_secs_f64());
        let relay = Relay {
            handles: handles.clone(),
            provider: self.provider,
            estimated_tokens: self.estimated_tokens,
            deadline: self.deadline,
            timeout: self.timeout,
            resume,
            usage: None,
            encoder,
        };
        let mut resp = respond(relay::start(relay, first, rest), "text/event-stream");
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    }
}

pub(super) fn respond(body: Body, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Reads at most `limit` bytes: a declared length over the limit is refused
/// before reading anything, an undeclared one as soon as it passes the limit.
/// (Not tower-http's `RequestBodyLimitLayer`: its 413 is not in the client's
/// dialect, and the limit here follows config reloads.)
pub(super) async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
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
