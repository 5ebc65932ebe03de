//! The HTTP surface: the edge layers, then dispatch by path. Every error
//! becomes a response in the client's dialect here, in one place.
//!
//! - [`edge`]: request id, access log and metrics, CORS (tower layers)
//! - [`access`]: the access log line, written off the request's path
//! - [`lines`]: where every log line goes, written by one thread in batches
//! - [`browser`]: which web pages and host names a proxy without keys serves
//! - [`proxy`]: a proxied request: auth, body, dialect in, route, the route's
//!   stack, dialect out
//! - [`responses`]: the Responses API and its stored responses
//! - [`messages`]: the Anthropic Messages API
//! - [`admin`]: health, readiness, models, metrics, reload

pub mod access;
pub mod admin;
pub mod browser;
pub mod edge;
pub mod lines;
pub mod messages;
pub mod proxy;
pub mod responses;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tower::ServiceBuilder;

use crate::body::Body;
use crate::error::ApiError;
use crate::runtime::State;
use crate::wire::chat::Endpoint;
use edge::Trace;
use futures_util::future::BoxFuture;

/// The whole HTTP stack, outermost first: what the server runs for each request.
pub fn service(state: Arc<State>) -> impl edge::Inner + Clone {
    let handles = state.handles.clone();
    let cors_state = state.clone();
    ServiceBuilder::new()
        .layer(edge::from_fn(edge::request_id))
        .layer(edge::from_fn(move |req, next| {
            edge::observe(handles.clone(), req, next)
        }))
        .layer(edge::from_fn(move |req, next| {
            edge::cors(cors_state.clone(), req, next)
        }))
        .service(Dispatch { state })
}

/// Routes a request by method and path.
#[derive(Clone)]
pub struct Dispatch {
    state: Arc<State>,
}

impl tower::Service<Request<Incoming>> for Dispatch {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move {
            let mut trace = Trace::default();
            let result = dispatch(&state, req, &mut trace).await;
            let mut resp = result.unwrap_or_else(ApiError::into_response);
            if resp.status() == StatusCode::UNAUTHORIZED {
                // RFC 9110 requires a 401 to name the scheme that gets in,
                // whatever the dialect of the body.
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            resp.extensions_mut().insert(trace);
            Ok(resp)
        })
    }
}

/// An error in the dialect of the endpoint it answers: Anthropic's SDKs
/// read only Anthropic's shape, every other client OpenAI's.
pub(crate) fn error_response(path: &str, err: ApiError) -> Response<Body> {
    if path.starts_with("/v1/messages") {
        crate::wire::messages::ingress::error_response(&err)
    } else {
        err.into_response()
    }
}

async fn dispatch(
    state: &Arc<State>,
    req: Request<Incoming>,
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path();
    let path = path.strip_suffix('/').unwrap_or(path);
    let endpoint = match (req.method(), path) {
        (&Method::GET, "/health") => return Ok(admin::health()),
        (&Method::GET, "/ready") => return Ok(admin::ready(state)),
        (&Method::GET, "/metrics") => return Ok(admin::metrics(state)),
        (&Method::GET, "/v1/models") => return admin::models(state, req.headers()).await,
        (&Method::GET, p) if p.starts_with("/v1/models/") => {
            return admin::model(state, req.headers(), &p["/v1/models/".len()..]).await
        }
        (&Method::POST, "/admin/reload") => return admin::reload(state, req.headers()),
        (&Method::POST, "/v1/responses") => return responses::create(state, req, trace).await,
        (method, p) if p.starts_with("/v1/responses/") => {
            let rest = &p["/v1/responses/".len()..];
            return responses::stored(state, method, req.headers(), rest, req.uri().query()).await;
        }
        (&Method::POST, "/v1/messages") => return Ok(messages::create(state, req, trace).await),
        (&Method::POST, "/v1/messages/count_tokens") => {
            return Ok(messages::count_tokens(state, req).await)
        }
        (method, p) if p.starts_with("/v1/messages/") => return Ok(messages::not_found(method, p)),
        (&Method::POST, "/v1/chat/completions") => Endpoint::Chat,
        (&Method::POST, "/v1/completions") => Endpoint::Completions,
        (&Method::POST, "/v1/embeddings") => Endpoint::Embeddings,
        (method, path) => {
            return Err(ApiError::NotFound {
                method: method.to_string(),
                path: path.to_owned(),
            })
        }
    };
    proxy::forward(state, req, endpoint, trace).await
}
