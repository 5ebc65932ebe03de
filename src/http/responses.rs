//! The Responses API: `POST /v1/responses` reads the Responses dialect,
//! sends the same routed exchange as chat, answers a Response object and
//! keeps it in the store; `GET`/`DELETE /v1/responses/{id}` and
//! `GET /v1/responses/{id}/input_items` read the store. Every stored
//! response belongs to the client key that made it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::admin::{json_response, json_text_response};
use super::edge::Trace;
use super::proxy::{
    account, caller, hermes_headers, read_body, send, with_headers, Canonical, Streamed,
};
use crate::body::Body;
use crate::error::ApiError;
use crate::provider::Answer;
use crate::runtime::State;
use crate::store::{Order, Page, StoreError, StoredResponse};
use crate::wire::chat::Endpoint;
use crate::wire::responses::stream::OnComplete;
use crate::wire::responses::{self, answer, stored, Meta, ResponseEvents};
use crate::wire::usage;

pub async fn create(
    state: &Arc<State>,
    req: Request<Incoming>,
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    let started = Instant::now();
    let generation = state.current();
    let principal = generation.auth.check(req.headers()).await?;
    let caller = caller(req.headers(), principal)?;
    let owner = caller.owner.clone();
    let bytes = read_body(req, &generation.config.server).await?;
    let request = responses::Request::parse(&bytes)?;
    let previous = match request.previous_response_id()? {
        None => None,
        Some(id) => Some(
            state
                .handles
                .store
                .get(&owner, &id)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| ApiError::PreviousResponseNotFound(id.into_owned()))?,
        ),
    };
    let history = previous
        .as_ref()
        .map(|p| stored::history(&p.input, &p.response))
        .unwrap_or_default();
    let chat = request.to_chat(&history)?;
    let sent = send(
        &generation,
        principal,
        &caller,
        Canonical {
            endpoint: Endpoint::Chat,
            body: chat.into(),
            native: None,
        },
        started,
        trace,
    )
    .await?;
    account(state, &sent, trace);
    let headers = hermes_headers(&sent);
    let id = responses::new_id("resp");
    let created_at = now();
    let meta = Meta {
        id: &id,
        created_at,
        request: &request,
    };
    // What is stored once the answer is whole: the conversation so far.
    // A store shared by replicas is written before the client hears the
    // answer is complete, so its next request finds it on any replica;
    // the embedded one is read back at once anyway, and not waited for.
    let keep = request.store().then(|| {
        let state = state.clone();
        let stored = StoredResponse {
            id: id.clone(),
            owner,
            created_at,
            input: request.stored_input(&history),
            response: String::new(),
        };
        move |response: String| -> Option<BoxFuture<'static, ()>> {
            let store = &state.handles.store;
            let written = store.put(StoredResponse { response, ..stored });
            let shared = store.shared();
            let reported = async move { report(&state, written.await) };
            if shared {
                return Some(Box::pin(reported));
            }
            tokio::spawn(reported);
            None
        }
    });
    let served = sent.served;
    let resp = match served.answer {
        Answer::Json { body, .. } => {
            let mut completion: Value = serde_json::from_slice(&body).map_err(|e| {
                ApiError::AllFailed(vec![format!(
                    "{}: answered invalid JSON: {e}",
                    served.provider
                )])
            })?;
            usage::completion(&mut completion);
            let mut response = responses::from_chat(&completion, &meta);
            if let Some(agent) = &served.agent {
                answer::with_steps(&mut response, &agent.tools);
            }
            let response = text(&response);
            let resp = json_text_response(StatusCode::OK, response.clone().into_bytes());
            if let Some(written) = keep.and_then(|keep| keep(response)) {
                written.await;
            }
            resp
        }
        Answer::Stream { first, rest } => {
            let on_complete: OnComplete = match keep {
                Some(keep) => Box::new(move |response: Value| keep(text(&response))),
                None => Box::new(|_| None),
            };
            let stream = Streamed {
                state,
                label: &sent.plan.label,
                agent: served.agent.is_some(),
                native: false,
                provider: served.provider,
                estimated_tokens: served.estimated_tokens,
                deadline: sent.deadline,
                timeout: sent.timeout,
                started,
            };
            let events = ResponseEvents::new(responses::envelope(&meta), on_complete);
            stream.relay(first, rest, None, Box::new(events))
        }
    };
    Ok(with_headers(resp, headers))
}

/// JSON text (serde's writer: `Value`'s `Display` goes through `fmt`, slower).
fn text(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// A store that fails loses the continuation, never the answer; it is
/// counted, and said once rather than on every request.
fn report(state: &State, written: Result<(), StoreError>) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if let Err(e) = written {
        state.handles.metrics.store_write_failures.inc();
        if !SAID.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "cannot store responses, so previous_response_id cannot continue them: {e}"
            );
        }
    }
}

/// `GET /v1/responses/{id}`, `DELETE` the same, `GET .../input_items`.
pub async fn stored(
    state: &State,
    method: &http::Method,
    headers: &HeaderMap,
    rest: &str,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let generation = state.current();
    let principal = generation.auth.check(headers).await?;
    let owner = principal.map_or("", |p| p.name);
    let (id, items) = match rest.strip_suffix("/input_items") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    let not_found = || ApiError::ResponseNotFound(id.to_owned());
    let store = &state.handles.store;
    let answer = match (method, items) {
        (&http::Method::GET, false) => {
            let stored = store.get(owner, id).await.map_err(unavailable)?;
            let text = stored.ok_or_else(not_found)?.response;
            return Ok(json_text_response(StatusCode::OK, text.into_bytes()));
        }
        (&http::Method::DELETE, false) => {
            if !store.delete(owner, id).await.map_err(unavailable)? {
                return Err(not_found());
            }
            json!({"id": id, "object": "response", "deleted": true})
        }
        (&http::Method::GET, true) => {
            let page = page(query)?;
            let listed = store
                .input_items(owner, id, page)
                .await
                .map_err(unavailable)?;
            listed.ok_or_else(not_found)?
        }
        (method, _) => {
            return Err(ApiError::NotFound {
                method: method.to_string(),
                path: format!("/v1/responses/{rest}"),
            })
        }
    };
    Ok(json_response(StatusCode::OK, &answer))
}

fn unavailable(e: StoreError) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `?after=&limit=&order=` of a list endpoint.
fn page(query: Option<&str>) -> Result<Page, ApiError> {
    let mut page = Page::default();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        match key {
            "after" => page.after = Some(value.into_owned()),
            "limit" => {
                page.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid("`limit` must be a number from 1 to 100", Some("limit"))
                    })?
            }
            "order" => {
                page.order = match value.as_ref() {
                    "asc" => Order::Asc,
                    "desc" => Order::Desc,
                    _ => {
                        return Err(ApiError::invalid(
                            "`order` must be \"asc\" or \"desc\"",
                            Some("order"),
                        ))
                    }
                }
            }
            // Other list parameters (`include`) change nothing here.
            _ => {}
        }
    }
    Ok(page)
}
