//! The edge: what every HTTP request passes, outermost first, each a tower
//! layer made from an async function around the rest of the stack
//! ([`from_fn`], what axum's `middleware::from_fn` does):
//!
//! - [`request_id`]: keeps the client's `x-request-id` (if short and
//!   non-empty) or makes one; the request's tracing span; echoes the id.
//! - [`observe`]: in-flight gauge, request metrics, the access log line.
//! - [`cors`]: refuses drive-by requests from web pages (see [`browser`]),
//!   answers preflights and adds CORS headers for allowed origins.
//!
//! These are ours rather than tower-http's: its request-id layer keeps any
//! client id (ours bounds it at 128 bytes), its CORS layer fixes the allowed
//! origins when built (ours follow live reloads) and answers preflights
//! differently, and its trace layer cannot see which route and provider
//! served the request, which the access log must say.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tower::{Layer, Service};
use tracing::Instrument;

use super::access;
use super::browser;
use crate::body::{self, Body};
use crate::metrics::Metrics;
use crate::pipeline::Handles;
use crate::route::Plan;
use crate::runtime::State;
use crate::wire::usage::Usage;
use futures_util::FutureExt;

/// The `route` label of proxied requests refused before a route was chosen.
const UNROUTED: &str = "unrouted";

const EXPOSED_HEADERS: &str =
    "x-request-id, x-hermes-route, x-hermes-provider, x-hermes-model, x-hermes-attempts, x-hermes-compressed, retry-after";

/// What the request path learned, for the access log and metrics; handlers
/// put it in the response's extensions.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    /// The route the request took, once routed.
    pub plan: Option<Arc<Plan>>,
    pub provider: Option<String>,
    pub attempts: u32,
    pub upstream_time: Duration,
    /// Known for JSON answers; a stream logs its own when it ends.
    pub usage: Option<Usage>,
}

// ------------------------------------------------------------------ from_fn

/// What an edge function wraps: the rest of the stack.
pub trait Inner:
    Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future: Send>
    + Send
    + 'static
{
}

impl<S> Inner for S where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future: Send>
        + Send
        + 'static
{
}

/// The rest of the stack, already ready, for an edge function to call once
/// (or not at all, to answer by itself).
pub struct Next<S> {
    ready: S,
}

impl<S: Inner> Next<S> {
    pub fn run(mut self, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send {
        self.ready.call(req).map(|answer| match answer {
            Ok(resp) => resp,
            Err(never) => match never {},
        })
    }
}

/// A layer from an async function `f(request, next) -> response`. Nothing is
/// boxed: each layer's future is the function's own.
pub fn from_fn<F>(f: F) -> FromFn<F> {
    FromFn { f }
}

#[derive(Clone)]
pub struct FromFn<F> {
    f: F,
}

impl<S, F: Clone> Layer<S> for FromFn<F> {
    type Service = Edge<S, F>;
    fn layer(&self, inner: S) -> Edge<S, F> {
        Edge {
            inner,
            f: self.f.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Edge<S, F> {
    inner: S,
    f: F,
}

type Answered = fn(Response<Body>) -> Result<Response<Body>, Infallible>;

impl<S, F, Fut> Service<Request<Incoming>> for Edge<S, F>
where
    S: Inner + Clone,
    F: Fn(Request<Incoming>, Next<S>) -> Fut,
    Fut: Future<Output = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = futures_util::future::Map<Fut, Answered>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        // The service that was polled ready is the one to call; a clone stays.
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        (self.f)(req, Next { ready }).map(Ok as Answered)
    }
}

// ------------------------------------------------------------------ request id

/// The request's id, for the layers inside that log it.
#[derive(Clone)]
pub struct RequestId(pub Arc<str>);

pub async fn request_id<S: Inner>(mut req: Request<Incoming>, next: Next<S>) -> Response<Body> {
    let id = id_of(req.headers());
    req.extensions_mut().insert(RequestId(id.as_str().into()));
    // A debug span: entered on every poll of the request, an info-level one
    // cost 4,700 instructions a request (benches/README.md, issue 15). The
    // access line carries the id at info; `RUST_LOG=hermes_proxy=debug`
    // puts it on every line of the request.
    let span = tracing::debug_span!("request", id = %id);
    let mut resp = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::try_from(id.as_str()) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Made once: a `&str` name is parsed again on every lookup.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn id_of(headers: &HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(new_id)
}

/// `req_` and 16 random hex digits (written by hand: `format!` was a
/// tenth of the edge's cost).
fn new_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = fastrand::u64(..);
    let mut id = String::with_capacity(20);
    id.push_str("req_");
    id.extend(
        (0..16)
            .rev()
            .map(|i| HEX[(n >> (i * 4)) as usize & 0xf] as char),
    );
    id
}

// ------------------------------------------------------------------ observe

pub async fn observe<S: Inner>(
    handles: Arc<Handles>,
    req: Request<Incoming>,
    next: Next<S>,
) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let id = req.extensions().get::<RequestId>().cloned();
    let inflight = Inflight::new(&handles.metrics);
    let mut resp = next.run(req).await;
    let trace = resp.extensions_mut().remove::<Trace>().unwrap_or_default();
    // Proxied requests that failed before routing (bad key, body, model)
    // count under a fixed label, so error ratios see them.
    let proxied = path.starts_with("/v1/") && method == Method::POST;
    let m = &handles.metrics;
    let routed = trace.plan.as_ref().map(|p| (p.label.as_str(), &*p.series));
    if let Some((route, series)) = routed.or(proxied.then_some((UNROUTED, &m.unrouted))) {
        let elapsed = started.elapsed();
        let overhead = elapsed.saturating_sub(trace.upstream_time);
        series.record(m, route, resp.status(), elapsed, overhead);
        access::log(&access::Line {
            request_id: id.as_ref().map_or("-", |id| &id.0),
            method: method.as_str(),
            path: &path,
            route,
            provider: trace.provider.as_deref().unwrap_or("-"),
            attempts: trace.attempts,
            status: resp.status().as_u16(),
            ms: elapsed.as_millis() as u64,
            upstream_ms: trace.upstream_time.as_millis() as u64,
            prompt_tokens: trace.usage.map(|u| u.prompt),
            completion_tokens: trace.usage.map(|u| u.completion),
        });
    }
    resp.map(|b| body::with_guard(b, inflight))
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

// ------------------------------------------------------------------ CORS

pub async fn cors<S: Inner>(
    state: Arc<State>,
    req: Request<Incoming>,
    next: Next<S>,
) -> Response<Body> {
    let refused = browser::refusal(&state.current().config.server, req.headers(), req.uri());
    if let Some(refused) = refused {
        // No CORS headers: the page may not read even the refusal.
        return super::error_response(req.uri().path(), refused);
    }
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut resp = if req.method() == Method::OPTIONS {
        preflight(req.headers())
    } else {
        next.run(req).await
    };
    if let Some(origin) = origin {
        cors_headers(&state, &origin, resp.headers_mut());
    }
    resp
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_new_request_id_is_req_and_16_hex_digits() {
        let (a, b) = (super::new_id(), super::new_id());
        assert_ne!(a, b);
        let hex = a.strip_prefix("req_").unwrap();
        assert_eq!(hex.len(), 16);
        assert!(u64::from_str_radix(hex, 16).is_ok(), "{a}");
    }
}
