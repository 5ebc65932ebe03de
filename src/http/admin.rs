//! The endpoints that are not proxied: health, readiness, the models,
//! the metrics page and `POST /admin/reload`.

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::json;

use crate::body::{self, Body};
use crate::error::ApiError;
use crate::runtime::{reload, State};

pub fn health() -> Response<Body> {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// 200 while some route has an enabled target; 503 otherwise.
pub fn ready(state: &State) -> Response<Body> {
    if state.current().routes.routes().any_usable() {
        json_response(StatusCode::OK, &json!({"status": "ready"}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "unavailable", "reason": "no route has an enabled target"}),
        )
    }
}

pub fn metrics(state: &State) -> Response<Body> {
    let mut resp = Response::new(body::full(state.render_metrics()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

pub async fn models(state: &State, headers: &HeaderMap) -> Result<Response<Body>, ApiError> {
    let generation = state.current();
    let principal = generation.auth.check(headers).await?;
    let data: Vec<_> = generation
        .routes
        .routes()
        .available()
        .iter()
        .filter(|id| principal.is_none_or(|p| p.may_see(id)))
        .map(|id| model_object(id))
        .collect();
    let mut list = json!({"object": "list", "data": data});
    if anthropic(headers) {
        list = anthropic_list(list);
    }
    Ok(json_response(StatusCode::OK, &list))
}

/// Anthropic's SDKs (which send `anthropic-version`) list models in their
/// own shape: each model also gets `type`, `display_name` and `created_at`,
/// the list its paging fields.
fn anthropic(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
}

fn anthropic_list(mut list: serde_json::Value) -> serde_json::Value {
    let ids: Vec<serde_json::Value> = list["data"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .map(|m| {
            *m = anthropic_model(m.take());
            m["id"].clone()
        })
        .collect();
    list["has_more"] = false.into();
    list["first_id"] = ids.first().cloned().unwrap_or_default();
    list["last_id"] = ids.last().cloned().unwrap_or_default();
    list
}

fn anthropic_model(mut model: serde_json::Value) -> serde_json::Value {
    model["type"] = "model".into();
    model["display_name"] = model["id"].clone();
    model["created_at"] = "1970-01-01T00:00:00Z".into();
    model
}

/// `GET /v1/models/{id}`: one of the listed models; `id` may hold slashes
/// (`provider/model`), sent as they are or percent-encoded.
pub async fn model(
    state: &State,
    headers: &HeaderMap,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let generation = state.current();
    let principal = generation.auth.check(headers).await?;
    let id = percent_encoding::percent_decode_str(id).decode_utf8_lossy();
    let visible = |m: &String| principal.is_none_or(|p| p.may_see(m));
    let available = generation.routes.routes().available();
    // A restricted key is told neither that a model it may not use exists
    // nor about other such models.
    if available.iter().any(|m| *m == id && visible(m)) {
        let mut model = model_object(&id);
        if anthropic(headers) {
            model = anthropic_model(model);
        }
        return Ok(json_response(StatusCode::OK, &model));
    }
    Err(ApiError::ModelNotFound {
        model: id.into_owned(),
        available: available.iter().filter(|m| visible(m)).cloned().collect(),
    })
}

fn model_object(id: &str) -> serde_json::Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "hermes-proxy"})
}

/// `POST /admin/reload`: off (404) unless an admin key is configured.
pub fn reload(state: &State, headers: &HeaderMap) -> Result<Response<Body>, ApiError> {
    let generation = state.current();
    let Some(admin_key) = &generation.config.server.admin_key else {
        return Err(ApiError::NotFound {
            method: "POST".into(),
            path: "/admin/reload (set admin_key_env in [server] to enable it)".into(),
        });
    };
    let presented = crate::auth::bearer_token(headers).unwrap_or_default();
    if !admin_key.matches(presented) {
        return Err(ApiError::InvalidApiKey);
    }
    drop(generation);
    let outcome = reload::reload(state, "admin endpoint");
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

pub(super) fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    json_text_response(status, serde_json::to_vec(value).unwrap_or_default())
}

/// A response whose body is JSON already written.
pub(super) fn json_text_response(status: StatusCode, json: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(body::full(json));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
