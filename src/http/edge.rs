//! The edge: tower layers every HTTP request passes, outermost first.
//!
//! - [`RequestIdLayer`]: keeps the client's `x-request-id` (if short and
//!   non-empty) or makes one; the request's tracing span; echoes the id.
//! - [`ObserveLayer`]: in-flight gauge, request metrics, the access log line.
//! - [`CorsLayer`]: answers preflights and adds CORS headers for allowed origins.
//!
//! These are hand-written rather than tower-http's: its request-id layer keeps
//! any client id (SPEC bounds it at 128 bytes), its CORS layer fixes the
//! allowed origins when built (ours follow live reloads) and answers
//! preflights differently, and its trace layer cannot see which route and
//! provider served the request, which the access log must say.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::body::{self, Body};
use crate::metrics::Metrics;
use crate::pipeline::Handles;
use crate::provider::BoxFuture;
use crate::runtime::State;
use crate::wire::usage::Usage;

/// The `route` label of proxied requests refused before a route was chosen.
const UNROUTED: &str = "unrouted";

const EXPOSED_HEADERS: &str =
    "x-request-id, x-hermes-route, x-hermes-provider, x-hermes-model, x-hermes-attempts, x-hermes-compressed, retry-after";

/// What the request path learned, for the access log and metrics; handlers
/// put it in the response's extensions.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    pub route: Option<String>,
    pub provider: Option<String>,
    pub attempts: u32,
    pub upstream_time: Duration,
    /// Known for JSON answers; a stream logs its own when it ends.
    pub usage: Option<Usage>,
}

type Resp = Result<Response<Body>, Infallible>;

// ------------------------------------------------------------------ request id

#[derive(Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;
    fn layer(&self, inner: S) -> RequestId<S> {
        RequestId { inner }
    }
}

#[derive(Clone)]
pub struct RequestId<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for RequestId<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Resp>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let id = request_id(req.headers());
        let span = tracing::info_span!("request", id = %id);
        let fut = self.inner.call(req).instrument(span);
        Box::pin(async move {
            let mut resp = fut.await?;
            if let Ok(v) = HeaderValue::try_from(id.as_str()) {
                resp.headers_mut().insert("x-request-id", v);
            }
            Ok(resp)
        })
    }
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("req_{:016x}", fastrand::u64(..)))
}

// ------------------------------------------------------------------ observe

#[derive(Clone)]
pub struct ObserveLayer {
    handles: Arc<Handles>,
}

impl ObserveLayer {
    pub fn new(handles: Arc<Handles>) -> Self {
        ObserveLayer { handles }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            handles: self.handles.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    handles: Arc<Handles>,
}

impl<S, B> Service<Request<B>> for Observe<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Resp>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let inflight = Inflight::new(&self.handles.metrics);
        let fut = self.inner.call(req);
        let handles = self.handles.clone();
        Box::pin(async move {
            let resp = fut.await?;
            let trace = resp
                .extensions()
                .get::<Trace>()
                .cloned()
                .unwrap_or_default();
            // Proxied requests that failed before routing (bad key, body, model)
            // count under a fixed label, so error ratios see them.
            let proxied = path.starts_with("/v1/") && method == Method::POST;
            if let Some(route) = trace.route.as_deref().or(proxied.then_some(UNROUTED)) {
                record(&handles.metrics, route, resp.status(), started, &trace);
                tracing::info!(
                    route,
                    provider = trace.provider.as_deref().unwrap_or("-"),
                    attempts = trace.attempts,
                    status = resp.status().as_u16(),
                    ms = started.elapsed().as_millis() as u64,
                    upstream_ms = trace.upstream_time.as_millis() as u64,
                    prompt_tokens = trace.usage.map(|u| u.prompt),
                    completion_tokens = trace.usage.map(|u| u.completion),
                    "{method} {path}"
                );
            }
            Ok(resp.map(|b| body::with_guard(b, inflight)))
        })
    }
}

/// Counts a request in `hermes_inflight_requests` until its body is sent.
struct Inflight(prometheus::IntGauge);

impl Inflight {
    fn new(metrics: &Metrics) -> Self {
        metrics.inflight.inc();
        Inflight(metrics.inflight.clone())
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn record(m: &Metrics, route: &str, status: StatusCode, started: Instant, trace: &Trace) {
    m.requests
        .with_label_values(&[route, status.as_str()])
        .inc();
    let elapsed = started.elapsed();
    m.request_duration
        .with_label_values(&[route])
        .observe(elapsed.as_secs_f64());
    let overhead = elapsed.saturating_sub(trace.upstream_time);
    m.overhead
        .with_label_values(&[route])
        .observe(overhead.as_secs_f64());
}

// ------------------------------------------------------------------ CORS

#[derive(Clone)]
pub struct CorsLayer {
    state: Arc<State>,
}

impl CorsLayer {
    pub fn new(state: Arc<State>) -> Self {
        CorsLayer { state }
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;
    fn layer(&self, inner: S) -> Cors<S> {
        Cors {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Cors<S> {
    inner: S,
    state: Arc<State>,
}

impl<S, B> Service<Request<B>> for Cors<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Resp>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let origin = req.headers().get(header::ORIGIN).cloned();
        let state = self.state.clone();
        let answer = if req.method() == Method::OPTIONS {
            let resp = preflight(req.headers());
            Box::pin(async move { Ok(resp) }) as BoxFuture<'static, Resp>
        } else {
            Box::pin(self.inner.call(req))
        };
        Box::pin(async move {
            let mut resp = answer.await?;
            if let Some(origin) = origin {
                cors_headers(&state, &origin, resp.headers_mut());
            }
            Ok(resp)
        })
    }
}

/// Adds the CORS headers when `origin` is allowed by `cors_origins`.
fn cors_headers(state: &State, origin: &HeaderValue, headers: &mut HeaderMap) {
    let generation = state.current();
    let origins = &generation.config.server.cors_origins;
    let allowed = if origins.iter().any(|o| o == "*") {
        HeaderValue::from_static("*")
    } else if origins.iter().any(|o| o.as_bytes() == origin.as_bytes()) {
        origin.clone()
    } else {
        return;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    headers.insert(header::VARY, HeaderValue::from_static("origin"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
}

/// Browsers ask before a cross-origin POST with an Authorization header; the
/// origin check itself happens in `cors_headers`, like on every answer.
fn preflight(req_headers: &HeaderMap) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    let requested = req_headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static(
            "authorization, content-type, x-api-key",
        ));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    resp
}
