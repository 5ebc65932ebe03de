//! The Responses API: `POST /v1/responses` reads the Responses dialect,
//! sends the same routed exchange as chat, answers a Response object and
//! keeps it in the store; `GET`/`DELETE /v1/responses/{id}` and
//! `GET /v1/responses/{id}/input_items` read the store. Every stored
//! response belongs to the client key that made it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::admin::json_response;
use super::edge::Trace;
use super::proxy::{account, hermes_headers, read_body, send, with_headers, Streamed};
use crate::body::Body;
use crate::error::ApiError;
use crate::provider::Answer;
use crate::runtime::State;
use crate::store::{Order, Page, ResponseStore, StoreError, StoredResponse};
use crate::wire::chat::{json_object, Endpoint};
use crate::wire::responses::stream::OnComplete;
use crate::wire::responses::{self, Meta, ResponseEvents};
use crate::wire::usage;

pub async fn create(
    state: &Arc<State>,
    req: Request<Incoming>,
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    let started = Instant::now();
    let generation = state.current();
    let principal = generation.auth.check(req.headers())?;
    let owner = principal.map_or("", |p| p.name).to_owned();
    let bytes = read_body(req, generation.config.server.max_body_bytes).await?;
    let request = json_object(&bytes)?;
    let history = match request.get("previous_response_id") {
        None | Some(Value::Null) => vec![],
        Some(Value::String(id)) => {
            let previous = state
                .store
                .get(&owner, id)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| ApiError::PreviousResponseNotFound(id.clone()))?;
            conversation(&previous)
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "`previous_response_id` must be a string",
                Some("previous_response_id"),
            ))
        }
    };
    let chat = responses::to_chat(&request, &history)?;
    let sent = send(&generation, principal, Endpoint::Chat, chat, started, trace).await?;
    let headers = hermes_headers(&sent);
    let id = responses::new_id("resp");
    let created_at = now();
    let meta = Meta {
        id: &id,
        created_at,
        request: &request,
    };
    // What is stored once the answer is whole: the conversation so far.
    let keep = (request.get("store").and_then(Value::as_bool) != Some(false)).then(|| {
        let mut input = history;
        input.extend(input_items(&request));
        let store = state.store.clone();
        let (id, owner) = (id.clone(), owner);
        move |response: Value| {
            let stored = StoredResponse {
                id,
                owner,
                created_at,
                input,
                response,
            };
            tokio::spawn(async move { keep_response(&*store, stored).await });
        }
    });
    let served = sent.served;
    let resp = match served.answer {
        Answer::Json { body, usage } => {
            account(
                state,
                &served.provider,
                served.estimated_tokens,
                usage,
                trace,
            );
            let mut completion: Value = serde_json::from_slice(&body).map_err(|e| {
                ApiError::AllFailed(vec![format!(
                    "{}: answered invalid JSON: {e}",
                    served.provider
                )])
            })?;
            usage::completion(&mut completion);
            let response = responses::from_chat(&completion, &meta);
            if let Some(keep) = keep {
                keep(response.clone());
            }
            json_response(StatusCode::OK, &response)
        }
        Answer::Stream { first, rest } => {
            let on_complete: OnComplete = match keep {
                Some(keep) => Box::new(keep),
                None => Box::new(|_| {}),
            };
            let stream = Streamed {
                state,
                label: &sent.plan.label,
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

/// Stores a finished response; a store that fails loses the continuation,
/// never the answer, and says so once rather than on every request.
async fn keep_response(store: &dyn ResponseStore, stored: StoredResponse) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if let Err(e) = store.put(stored).await {
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
    let principal = generation.auth.check(headers)?;
    let owner = principal.map_or("", |p| p.name);
    let (id, items) = match rest.strip_suffix("/input_items") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    let not_found = || ApiError::ResponseNotFound(id.to_owned());
    let store = &state.store;
    let answer = match (method, items) {
        (&http::Method::GET, false) => {
            let stored = store.get(owner, id).await.map_err(unavailable)?;
            stored.ok_or_else(not_found)?.response
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

/// What a continued conversation is made of: the previous input and output.
fn conversation(previous: &StoredResponse) -> Vec<Value> {
    let mut items = previous.input.clone();
    items.extend(
        previous.response["output"]
            .as_array()
            .into_iter()
            .flatten()
            .cloned(),
    );
    items
}

/// This request's `input` as stored items, each with an id (the list
/// endpoint pages by item id).
fn input_items(request: &Map<String, Value>) -> Vec<Value> {
    let items = match request.get("input") {
        Some(Value::String(text)) => vec![json!({"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": text}]})],
        Some(Value::Array(items)) => items.clone(),
        _ => vec![],
    };
    items
        .into_iter()
        .map(|mut item| {
            // `to_chat` has accepted every item, so each is an object.
            if let Some(fields) = item.as_object_mut() {
                if fields.get("id").is_none_or(Value::is_null) {
                    let prefix = match fields.get("type").and_then(Value::as_str) {
                        Some("function_call") => "fc",
                        Some("function_call_output") => "fco",
                        Some("reasoning") => "rs",
                        _ => "msg",
                    };
                    fields.insert("id".into(), responses::new_id(prefix).into());
                }
                if !fields.contains_key("type") && fields.contains_key("role") {
                    fields.insert("type".into(), "message".into());
                }
            }
            item
        })
        .collect()
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
