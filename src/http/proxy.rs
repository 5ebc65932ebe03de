//! A proxied request, in order: authenticate, read the body and parse it in
//! the client's dialect, route, send the canonical `Exchange` down the
//! route's stack under the request deadline, then answer in the dialect: a
//! JSON body, or a stream relayed as it arrives.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Map;
use std::time::Duration;
use tokio::time::Instant;
use tower::ServiceExt;

use super::edge::Trace;
use crate::auth::Principal;
use crate::body::{self, Body};
use crate::config::Server;
use crate::error::ApiError;
use crate::pipeline::exchange::{Caller, Exchange, Served};
use crate::pipeline::relay::{self, Relay, Resume};
use crate::provider::{Answer, Native};
use crate::route::Plan;
use crate::runtime::{Generation, State};
use crate::wire::chat::{parse_request, ChatBody, Endpoint};
use crate::wire::encode::{ChatEvents, StreamEncoder};
use crate::wire::sse::SseReader;

pub async fn forward(
    state: &Arc<State>,
    req: Request<Incoming>,
    endpoint: Endpoint,
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    let started = Instant::now();
    let generation = state.current();
    let principal = generation.auth.check(req.headers()).await?;
    let caller = caller(req.headers(), principal)?;
    let bytes = read_body(req, &generation.config.server).await?;
    let body = parse_request(bytes, endpoint)?;
    let streamed = body.stream();
    let resume_request = (endpoint == Endpoint::Chat && streamed).then(|| body.clone());
    let sent = send(
        &generation,
        principal,
        &caller,
        Canonical {
            endpoint,
            body,
            native: None,
        },
        started,
        trace,
    )
    .await?;
    account(state, &sent, trace);
    let headers = hermes_headers(&sent);
    let Sent {
        plan,
        served,
        deadline,
        timeout,
    } = sent;
    let resp = match served.answer {
        Answer::Json { body, .. } => respond(body::full(body), "application/json"),
        Answer::Stream { first, rest } => {
            // An agent's stream is the loop's, not one upstream's to continue.
            let resume = resume_request
                .filter(|_| plan.resume && served.agent.is_none())
                .map(|request| {
                    let route = plan.label.clone();
                    Resume::new(generation.routes.clone(), route, request, Some(caller))
                });
            let stream = Streamed {
                state,
                label: &plan.label,
                agent: served.agent.is_some(),
                native: false,
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

/// A request in the canonical schema, as a dialect made it.
pub(super) struct Canonical {
    pub endpoint: Endpoint,
    pub body: ChatBody,
    /// The client's own request, for a target that speaks its dialect.
    pub native: Option<Arc<Native>>,
}

/// A deadline so far away that it never comes (30 years).
const NO_DEADLINE: Duration = Duration::from_secs(30 * 365 * 86_400);

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
    caller: &Arc<Caller>,
    request: Canonical,
    started: Instant,
    trace: &mut Trace,
) -> Result<Sent, ApiError> {
    let Canonical {
        endpoint,
        body,
        native,
    } = request;
    let model = body.model().to_owned();
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
    trace.plan = Some(plan.clone());
    if let Some(p) = principal {
        if !p.may_use(&plan.label) {
            return Err(ApiError::ModelNotAllowed(model));
        }
    }
    let timeout = generation.config.defaults.request_timeout;
    // A timeout past what an Instant can hold (routes.toml accepts
    // "500000000000y") means none, not a panic.
    let deadline = started
        .checked_add(timeout)
        .unwrap_or_else(|| started + NO_DEADLINE);
    let exchange = Exchange {
        endpoint,
        body,
        plan: plan.clone(),
        deadline,
        routes: generation.routes.clone(),
        caller: Some(caller.clone()),
        native,
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
pub(super) fn hermes_headers(sent: &Sent) -> Vec<(HeaderName, String)> {
    // Names made once: a `&str` name is parsed again on every insert.
    const ROUTE: HeaderName = HeaderName::from_static("x-hermes-route");
    const PROVIDER: HeaderName = HeaderName::from_static("x-hermes-provider");
    const MODEL: HeaderName = HeaderName::from_static("x-hermes-model");
    const ATTEMPTS: HeaderName = HeaderName::from_static("x-hermes-attempts");
    const COMPRESSED: HeaderName = HeaderName::from_static("x-hermes-compressed");
    const AGENT_STEPS: HeaderName = HeaderName::from_static("x-hermes-agent-steps");
    let served = &sent.served;
    let mut headers = vec![
        (ROUTE, sent.plan.label.clone()),
        (PROVIDER, served.provider.clone()),
        (MODEL, served.model.clone()),
        (ATTEMPTS, served.attempts.to_string()),
    ];
    if let Some(report) = &served.compressed {
        headers.push((COMPRESSED, report.header()));
    }
    if let Some(agent) = served.agent.as_ref().filter(|a| a.steps > 0) {
        headers.push((AGENT_STEPS, agent.steps.to_string()));
    }
    headers
}

/// Longest session id or memory scope a client may name.
const MAX_ID_LEN: usize = 128;

/// Who is asking: the key's name, and the agent loop's session and memory
/// scope headers (printable ASCII, at most `MAX_ID_LEN` bytes).
pub(super) fn caller(
    headers: &HeaderMap,
    principal: Option<Principal<'_>>,
) -> Result<Arc<Caller>, ApiError> {
    // Names made once: a `&str` name is parsed again on every lookup.
    const SESSION: HeaderName = HeaderName::from_static("x-hermes-session-id");
    const MEMORY_SCOPE: HeaderName = HeaderName::from_static("x-hermes-memory-scope");
    let header = |name: HeaderName| -> Result<Option<String>, ApiError> {
        let Some(value) = headers.get(&name) else {
            return Ok(None);
        };
        match value.to_str() {
            Ok(v) if !v.is_empty() && v.len() <= MAX_ID_LEN && v.bytes().all(|b| b.is_ascii_graphic()) => {
                Ok(Some(v.to_owned()))
            }
            _ => Err(ApiError::invalid(
                format!("header `{name}` must be 1 to {MAX_ID_LEN} printable ASCII characters without spaces"),
                None,
            )),
        }
    };
    Ok(Arc::new(Caller {
        owner: principal.map_or("", |p| p.name).to_owned(),
        session: header(SESSION)?,
        memory_scope: header(MEMORY_SCOPE)?,
    }))
}

pub(super) fn with_headers(
    mut resp: Response<Body>,
    headers: Vec<(HeaderName, String)>,
) -> Response<Body> {
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::try_from(value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

/// A JSON answer's usage: accounted to its provider (unless the agent loop
/// counted it step by step), and noted for the access log. (A stream's is
/// the relay's, as its events arrive.)
pub(super) fn account(state: &State, sent: &Sent, trace: &mut Trace) {
    let served = &sent.served;
    let Answer::Json { usage, .. } = &served.answer else {
        return;
    };
    if let Some(usage) = usage.filter(|_| served.agent.is_none()) {
        let series = sent
            .plan
            .targets
            .iter()
            .find_map(|t| (t.provider.name == served.provider).then_some(&*t.series));
        state
            .handles
            .account(&served.provider, series, served.estimated_tokens, usage);
    }
    trace.usage = *usage;
}

/// A stream on its way to the client.
pub(super) struct Streamed<'a> {
    pub state: &'a State,
    pub label: &'a str,
    /// The agent loop's stream (see `Relay::agent`).
    pub agent: bool,
    /// The stream is in the client's own dialect (see `Relay::native`).
    pub native: bool,
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
            agent: self.agent,
            native: self.native.then(Map::new),
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

/// Reads at most `max_body_bytes` within `body_read_timeout`: a declared
/// length over the limit is refused before reading anything, an undeclared
/// one as soon as it passes the limit; a client that trickles its body is cut
/// off with a 408 rather than holding the request open.
/// (Not tower-http's `RequestBodyLimitLayer`: its 413 is not in the client's
/// dialect, and the limits here follow config reloads.)
pub(super) async fn read_body(req: Request<Incoming>, server: &Server) -> Result<Bytes, ApiError> {
    let limit = server.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::RequestTooLarge { limit });
    }
    let collect = Limited::new(req.into_body(), limit).collect();
    tokio::pin!(collect);
    let timeout = server.body_read_timeout;
    // Most bodies came with their headers: those need no timer.
    let collected = match (&mut collect).now_or_never() {
        Some(collected) => collected,
        None => tokio::time::timeout(timeout, collect)
            .await
            .map_err(|_| ApiError::RequestTimeout(timeout))?,
    };
    match collected {
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
