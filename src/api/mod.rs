//! The HTTP surface: one function from request to response. It stamps the
//! request id, answers CORS, dispatches by path, turns every error into the
//! OpenAI shape, and records the request's metrics and access log line.

pub mod sse;

use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use tracing::Instrument;

use crate::body::{self, Body};
use crate::error::ApiError;
use crate::provider::Endpoint;
use crate::proxy::{self, Trace};
use crate::route;
use crate::state::Shared;

/// The `route` label of proxied requests refused before a route was chosen.
const UNROUTED: &str = "unrouted";

const EXPOSED_HEADERS: &str =
    "x-request-id, x-hermes-route, x-hermes-provider, x-hermes-model, x-hermes-attempts, x-hermes-compressed, retry-after";

pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let request_id = request_id(req.headers());
    let span = tracing::info_span!("request", id = %request_id);
    let origin = req.headers().get(header::ORIGIN).cloned();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let inflight = Inflight::new(&shared);

    let mut trace = Trace::default();
    let result = dispatch(&shared, req, &mut trace)
        .instrument(span.clone())
        .await;
    let resp = result.unwrap_or_else(ApiError::into_response);

    let mut resp = resp.map(|b| body::with_guard(b, inflight));
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::try_from(request_id.as_str()) {
        headers.insert("x-request-id", v);
    }
    if let Some(origin) = origin {
        cors_headers(&shared, &origin, headers);
    }
    // Proxied requests that failed before routing (bad key, body, model)
    // count under a fixed label, so error ratios see them.
    let proxied = path.starts_with("/v1/") && method == Method::POST;
    if let Some(route) = trace.route.as_deref().or(proxied.then_some(UNROUTED)) {
        record(&shared, route, &resp, started, &trace);
        let _enter = span.enter();
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
    resp
}

async fn dispatch(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path();
    let path = path.strip_suffix('/').unwrap_or(path);
    match (req.method(), path) {
        (&Method::OPTIONS, _) => Ok(preflight(req.headers())),
        (&Method::GET, "/health") => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        (&Method::GET, "/ready") => Ok(ready(shared)),
        (&Method::GET, "/metrics") => {
            let mut resp = Response::new(body::full(shared.render_metrics()));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(resp)
        }
        (&Method::GET, "/v1/models") => models(shared, req.headers()),
        (&Method::POST, "/admin/reload") => admin_reload(shared, req.headers()),
        (&Method::POST, "/v1/chat/completions") => {
            proxy::forward(shared, req, Endpoint::Chat, trace).await
        }
        (&Method::POST, "/v1/completions") => {
            proxy::forward(shared, req, Endpoint::Completions, trace).await
        }
        (&Method::POST, "/v1/embeddings") => {
            proxy::forward(shared, req, Endpoint::Embeddings, trace).await
        }
        (method, path) => Err(ApiError::NotFound {
            method: method.to_string(),
            path: path.to_owned(),
        }),
    }
}

/// Counts a request in `hermes_inflight_requests` until its body is sent.
struct Inflight(prometheus::IntGauge);

impl Inflight {
    fn new(shared: &Shared) -> Self {
        shared.metrics.inflight.inc();
        Inflight(shared.metrics.inflight.clone())
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn record(shared: &Shared, route: &str, resp: &Response<Body>, started: Instant, trace: &Trace) {
    let m = &shared.metrics;
    let status = resp.status();
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

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("req_{:016x}", fastrand::u64(..)))
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(body::full(serde_json::to_vec(value).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// 200 while some route has an enabled target; 503 otherwise.
fn ready(shared: &Shared) -> Response<Body> {
    let rt = shared.runtime.load();
    let usable = rt
        .config
        .routes
        .iter()
        .any(|r| route::resolve(&rt.config, &r.name).is_ok());
    if usable {
        json_response(StatusCode::OK, &json!({"status": "ready"}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "unavailable", "reason": "no route has an enabled target"}),
        )
    }
}

fn models(shared: &Shared, headers: &HeaderMap) -> Result<Response<Body>, ApiError> {
    let rt = shared.runtime.load();
    let principal = rt.auth.check(headers)?;
    let data: Vec<_> = route::available_models(&rt.config)
        .into_iter()
        .filter(|id| principal.is_none_or(|p| p.may_see(id)))
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "hermes-proxy"}))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data}),
    ))
}

/// `POST /admin/reload`: off (404) unless an admin key is configured.
fn admin_reload(shared: &Shared, headers: &HeaderMap) -> Result<Response<Body>, ApiError> {
    let rt = shared.runtime.load();
    let Some(admin_key) = &rt.config.server.admin_key else {
        return Err(ApiError::NotFound {
            method: "POST".into(),
            path: "/admin/reload (set admin_key_env in [server] to enable it)".into(),
        });
    };
    let presented = crate::auth::bearer_token(headers).unwrap_or_default();
    if !admin_key.matches(presented) {
        return Err(ApiError::InvalidApiKey);
    }
    drop(rt);
    let outcome = crate::reload::reload(shared, "admin endpoint");
    let status = if outcome.result == "success" {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok(json_response(
        status,
        &serde_json::to_value(&outcome).unwrap_or_default(),
    ))
}

/// Adds the CORS headers when `origin` is allowed by `cors_origins`.
fn cors_headers(shared: &Shared, origin: &HeaderValue, headers: &mut HeaderMap) {
    let rt = shared.runtime.load();
    let origins = &rt.config.server.cors_origins;
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
