//! The Anthropic Messages API: `POST /v1/messages` reads the Messages
//! dialect, sends the same routed exchange as chat, and answers in that
//! dialect (a Message, or Anthropic's stream events); a target that speaks
//! Messages itself gets the client's request untranslated. Every error on
//! these paths is Anthropic-shaped, since Anthropic's SDKs parse no other.
//! `POST /v1/messages/count_tokens` answers the proxy's own estimate.

use std::sync::Arc;

use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::admin::json_response;
use super::edge::Trace;
use super::proxy::{
    account, caller, hermes_headers, read_body, respond, send, with_headers, Canonical, Streamed,
};
use crate::body::{self, Body};
use crate::error::ApiError;
use crate::pipeline::compress;
use crate::provider::{Answer, Native};
use crate::runtime::State;
use crate::wire::chat::Endpoint;
use crate::wire::messages::ingress::{self, MessagesEvents};
use crate::wire::usage;

/// The client's headers that go along to a Messages upstream untouched:
/// the beta features it asked for change what the upstream accepts.
const PASSED_ON: [&str; 1] = ["anthropic-beta"];

/// `POST /v1/messages`.
pub async fn create(
    state: &Arc<State>,
    req: Request<Incoming>,
    trace: &mut Trace,
) -> Response<Body> {
    answer(create_inner(state, req, trace).await)
}

/// `POST /v1/messages/count_tokens`.
pub async fn count_tokens(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    answer(count_inner(state, req).await)
}

/// Any other method or path under `/v1/messages`.
pub fn not_found(method: &http::Method, path: &str) -> Response<Body> {
    answer(Err(ApiError::NotFound {
        method: method.to_string(),
        path: path.to_owned(),
    }))
}

fn answer(result: Result<Response<Body>, ApiError>) -> Response<Body> {
    result.unwrap_or_else(|e| ingress::error_response(&e))
}

async fn create_inner(
    state: &Arc<State>,
    req: Request<Incoming>,
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    let started = Instant::now();
    let generation = state.current();
    let principal = generation.auth.check(req.headers()).await?;
    let caller = caller(req.headers(), principal)?;
    let native_headers = passed_on(req.headers());
    let bytes = read_body(req, &generation.config.server).await?;
    let request = ingress::parse(&bytes)?;
    let native = Arc::new(Native {
        body: bytes,
        headers: native_headers,
    });
    let sent = send(
        &generation,
        principal,
        &caller,
        Canonical {
            endpoint: Endpoint::Chat,
            body: request.chat.into(),
            native: Some(native),
        },
        started,
        trace,
    )
    .await?;
    account(state, &sent, trace);
    let headers = hermes_headers(&sent);
    let served = sent.served;
    let resp = match served.answer {
        Answer::Json { body, .. } if served.native => respond(body::full(body), "application/json"),
        Answer::Json { body, .. } => {
            let mut completion: Value = serde_json::from_slice(&body).map_err(|e| {
                ApiError::AllFailed(vec![format!(
                    "{}: answered invalid JSON: {e}",
                    served.provider
                )])
            })?;
            usage::completion(&mut completion);
            json_response(
                StatusCode::OK,
                &ingress::answer(&completion, &request.model),
            )
        }
        Answer::Stream { first, rest } => {
            let stream = Streamed {
                state,
                label: &sent.plan.label,
                agent: served.agent.is_some(),
                native: served.native,
                provider: served.provider,
                estimated_tokens: served.estimated_tokens,
                deadline: sent.deadline,
                timeout: sent.timeout,
                started,
            };
            stream.relay(
                first,
                rest,
                None,
                Box::new(MessagesEvents::new(&request.model)),
            )
        }
    };
    Ok(with_headers(resp, headers))
}

fn passed_on(headers: &HeaderMap) -> Vec<(http::HeaderName, http::HeaderValue)> {
    PASSED_ON
        .iter()
        .flat_map(|name| {
            headers
                .get_all(*name)
                .iter()
                .map(|v| (http::HeaderName::from_static(name), v.clone()))
        })
        .collect()
}

/// The proxy's estimate, as for its own window checks (o200k tokens), of
/// the messages, the system prompt and the tools' schemas. Only models the
/// client may use are counted, as Anthropic answers 404 for others.
async fn count_inner(
    state: &Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let generation = state.current();
    let principal = generation.auth.check(req.headers()).await?;
    let bytes = read_body(req, &generation.config.server).await?;
    let chat = ingress::parse_count(&bytes)?;
    let model = chat
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (plan, _) = generation.routes.resolve(model)?;
    if principal.is_some_and(|p| !p.may_use(&plan.label)) {
        return Err(ApiError::ModelNotAllowed(model.to_owned()));
    }
    let messages = chat
        .get("messages")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let tools = chat
        .get("tools")
        .map_or(0, |t| serde_json::to_vec(t).map_or(0, |b| b.len() / 4));
    let tokens = u64::from(compress::count(messages)) + tools as u64;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "input_tokens": tokens }),
    ))
}
