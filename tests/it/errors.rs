//! Every row of SPEC's error table over real HTTP: status, `error.code`,
//! `error.type`, the message, and `Retry-After` where promised. The 401, 404,
//! 429 and 502 cases also go through async-openai, to prove a real SDK reads
//! the error shape.

use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::error::{ApiError as SdkApiError, OpenAIError};
use async_openai::types::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs, CreateChatCompletionResponse,
};
use futures_util::stream;
use http::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::mock_upstream::{wire, MockUpstream, Reply};
use crate::support::proxy::{config_for, http, Proxy};

/// The built-in mock provider behind a route `main`, a second route
/// `premium`, and `extra` appended (e.g. `[server]` or `[[server.keys]]` tables).
fn mock_config(extra: &str) -> String {
    format!(
        "{extra}\n\
         [providers.demo]\nkind = \"mock\"\n\n\
         [routes.main]\ntargets = [{{ provider = \"demo\", model = \"demo\" }}]\n\n\
         [routes.premium]\ntargets = [{{ provider = \"demo\", model = \"demo-large\" }}]\n"
    )
}

fn ask(model: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(model)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("hi")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap()
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// async-openai as a user would point it at the proxy, but with its own
/// retries off: it retries 429 and 5xx for up to 15 minutes by default,
/// which would hide the proxy's answer behind the SDK's backoff.
fn sdk(proxy: &Proxy, key: &str) -> async_openai::Client<OpenAIConfig> {
    proxy.openai(key).with_backoff(backoff::ExponentialBackoff {
        max_elapsed_time: Some(Duration::ZERO),
        ..Default::default()
    })
}

/// The `ApiError` the SDK parsed out of a failed call.
fn sdk_error(result: Result<CreateChatCompletionResponse, OpenAIError>) -> SdkApiError {
    match result {
        Err(OpenAIError::ApiError(e)) => e,
        Err(other) => panic!("the SDK did not read an API error: {other:?}"),
        Ok(resp) => panic!("expected an error, got an answer: {resp:?}"),
    }
}

/// An error answer as a client sees it.
struct ErrorReply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl ErrorReply {
    async fn read(resp: reqwest::Response) -> ErrorReply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
        ErrorReply {
            status,
            headers,
            body,
        }
    }

    /// Asserts the OpenAI shape `{"error": {message, type, param, code}}`
    /// with this status and code; returns the message.
    fn expect(&self, status: u16, code: &str) -> &str {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        let error = &self.body["error"];
        assert_eq!(error["code"], code, "{}", self.body);
        assert!(
            error["type"].as_str().is_some_and(|t| !t.is_empty()),
            "error.type missing: {}",
            self.body
        );
        assert!(
            error.get("param").is_some(),
            "error.param missing: {}",
            self.body
        );
        assert!(
            self.headers
                .get("content-type")
                .is_some_and(|v| v.to_str().unwrap().starts_with("application/json")),
            "{:?}",
            self.headers
        );
        assert!(self.headers.contains_key("x-request-id"));
        let message = error["message"]
            .as_str()
            .expect("error.message is a string");
        assert!(!message.is_empty());
        message
    }

    fn error_type(&self) -> &str {
        self.body["error"]["type"].as_str().unwrap()
    }

    fn retry_after(&self) -> u64 {
        let value = self
            .headers
            .get("retry-after")
            .unwrap_or_else(|| panic!("no Retry-After on {} {}", self.status, self.body));
        value
            .to_str()
            .unwrap()
            .parse()
            .expect("Retry-After in seconds")
    }
}

async fn post_raw(proxy: &Proxy, body: &'static str) -> ErrorReply {
    let resp = http()
        .post(proxy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    ErrorReply::read(resp).await
}

async fn post_json(proxy: &Proxy, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = http().post(proxy.url("/v1/chat/completions")).json(body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.unwrap()
}

// ----- 400 invalid_request -----

#[tokio::test]
async fn a_body_that_is_not_json_is_400_invalid_request_and_never_reaches_upstream() {
    let up = MockUpstream::start().await;
    let proxy = Proxy::start(&config_for(&[("up", &up.base_url())], "")).await;
    for body in ["not json", "{\"model\": \"main\",", ""] {
        let reply = post_raw(&proxy, body).await;
        let message = reply.expect(400, "invalid_request");
        assert_eq!(reply.error_type(), "invalid_request_error");
        assert!(message.contains("JSON"), "{body:?}: {message}");
    }
    let reply = post_raw(&proxy, "[1, 2]").await;
    assert!(reply.expect(400, "invalid_request").contains("JSON object"));
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn a_field_of_the_wrong_type_is_400_naming_the_field() {
    let up = MockUpstream::start().await;
    let proxy = Proxy::start(&config_for(&[("up", &up.base_url())], "")).await;
    let cases: [(&str, &str); 6] = [
        (
            r#"{"model": 42, "messages": [{"role": "user", "content": "hi"}]}"#,
            "model",
        ),
        (
            r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
            "model",
        ),
        (
            r#"{"model": "main", "messages": {"role": "user"}}"#,
            "messages",
        ),
        (
            r#"{"model": "main", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}"#,
            "stream",
        ),
        (
            r#"{"model": "main", "messages": [{"role": "user", "content": "hi"}], "stream_options": true}"#,
            "stream_options",
        ),
        (
            r#"{"model": "main", "messages": [{"content": "hi"}]}"#,
            "role",
        ),
    ];
    for (body, field) in cases {
        let reply = post_raw(&proxy, body).await;
        let message = reply.expect(400, "invalid_request");
        assert!(
            message.contains(field),
            "message for {body} does not name `{field}`: {message}"
        );
    }
    assert_eq!(up.request_count(), 0);
}

// ----- 401 invalid_api_key -----

const ONE_KEY: &str = "[[server.keys]]\nname = \"team-a\"\nkey_env = \"TEAM_A_KEY\"\n";

#[tokio::test]
async fn a_missing_or_wrong_key_is_401_and_the_sdk_reads_it() {
    let proxy =
        Proxy::start_with_env(&mock_config(ONE_KEY), &[("TEAM_A_KEY", "sk-team-a-123")]).await;

    let err = sdk_error(sdk(&proxy, "sk-wrong").chat().create(ask("main")).await);
    assert_eq!(err.code.as_deref(), Some("invalid_api_key"));
    assert_eq!(err.r#type.as_deref(), Some("authentication_error"));
    assert!(err.message.contains("API key"), "{}", err.message);

    let missing = ErrorReply::read(post_json(&proxy, None, &chat("main")).await).await;
    missing.expect(401, "invalid_api_key");
    let wrong =
        ErrorReply::read(post_json(&proxy, Some("sk-team-a-12"), &chat("main")).await).await;
    wrong.expect(401, "invalid_api_key");
    let models = ErrorReply::read(http().get(proxy.url("/v1/models")).send().await.unwrap()).await;
    models.expect(401, "invalid_api_key");
}

#[tokio::test]
async fn the_right_key_is_accepted_as_bearer_or_x_api_key() {
    let proxy =
        Proxy::start_with_env(&mock_config(ONE_KEY), &[("TEAM_A_KEY", "sk-team-a-123")]).await;

    let answer = sdk(&proxy, "sk-team-a-123")
        .chat()
        .create(ask("main"))
        .await
        .unwrap();
    assert!(answer.choices[0].message.content.is_some());

    let resp = http()
        .post(proxy.url("/v1/chat/completions"))
        .header("x-api-key", "sk-team-a-123")
        .json(&chat("main"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http()
        .post(proxy.url("/v1/chat/completions"))
        .header("x-api-key", "sk-team-a-999")
        .json(&chat("main"))
        .send()
        .await
        .unwrap();
    ErrorReply::read(resp).await.expect(401, "invalid_api_key");
}

#[tokio::test]
async fn a_key_whose_variable_is_unset_admits_nobody() {
    // The variable is unset: the key exists but has no value, so auth stays
    // on and nothing (not even an empty key) gets in.
    let proxy = Proxy::start(&mock_config(ONE_KEY)).await;
    for presented in ["", "TEAM_A_KEY", "sk-team-a-123"] {
        let resp = http()
            .post(proxy.url("/v1/chat/completions"))
            .header("authorization", format!("Bearer {presented}"))
            .json(&chat("main"))
            .send()
            .await
            .unwrap();
        ErrorReply::read(resp).await.expect(401, "invalid_api_key");
    }
}

// ----- 403 model_not_allowed -----

#[tokio::test]
async fn a_route_outside_the_keys_allowlist_is_403() {
    let keys =
        "[[server.keys]]\nname = \"team-a\"\nkey_env = \"TEAM_A_KEY\"\nroutes = [\"main\"]\n\n\
                [[server.keys]]\nname = \"admin\"\nkey_env = \"ADMIN_KEY\"\nroutes = [\"*\"]\n";
    let proxy = Proxy::start_with_env(
        &mock_config(keys),
        &[("TEAM_A_KEY", "sk-team-a"), ("ADMIN_KEY", "sk-admin")],
    )
    .await;

    let reply =
        ErrorReply::read(post_json(&proxy, Some("sk-team-a"), &chat("premium")).await).await;
    let message = reply.expect(403, "model_not_allowed");
    assert_eq!(reply.error_type(), "permission_error");
    assert!(message.contains("premium"), "{message}");
    assert_eq!(reply.body["error"]["param"], "model");

    // Addressing a provider directly does not get around the allowlist.
    let direct =
        ErrorReply::read(post_json(&proxy, Some("sk-team-a"), &chat("demo/demo")).await).await;
    direct.expect(403, "model_not_allowed");

    let allowed = post_json(&proxy, Some("sk-team-a"), &chat("main")).await;
    assert_eq!(allowed.status(), 200);
    let admin = post_json(&proxy, Some("sk-admin"), &chat("premium")).await;
    assert_eq!(admin.status(), 200);

    // The model list shows only what the key may use.
    let list: Value = http()
        .get(proxy.url("/v1/models"))
        .bearer_auth("sk-team-a")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["main"]);

    // One model by id: another key's route is as absent as an unknown one.
    let get = |id: &str, key: &str| {
        http()
            .get(proxy.url(&format!("/v1/models/{id}")))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(get("main", "sk-team-a").await.unwrap().status(), 200);
    assert_eq!(get("premium", "sk-admin").await.unwrap().status(), 200);
    let hidden = ErrorReply::read(get("premium", "sk-team-a").await.unwrap()).await;
    let message = hidden.expect(404, "model_not_found");
    assert!(message.ends_with("available models: main"), "{message}");
    ErrorReply::read(get("premium", "sk-wrong").await.unwrap())
        .await
        .expect(401, "invalid_api_key");

    // Nor does a 404 tell a restricted key about routes it may not use.
    let unknown =
        ErrorReply::read(post_json(&proxy, Some("sk-team-a"), &chat("gpt-9")).await).await;
    let message = unknown.expect(404, "model_not_found");
    assert!(
        message.contains("main") && !message.contains("premium"),
        "{message}"
    );
}

// ----- 404 model_not_found, unknown path -----

#[tokio::test]
async fn an_unknown_model_is_404_listing_the_available_models() {
    let proxy = Proxy::start(&mock_config("")).await;

    let err = sdk_error(sdk(&proxy, "k").chat().create(ask("gpt-9")).await);
    assert_eq!(err.code.as_deref(), Some("model_not_found"));
    assert_eq!(err.param.as_deref(), Some("model"));
    for model in ["gpt-9", "main", "premium", "demo/demo", "demo/demo-large"] {
        assert!(
            err.message.contains(model),
            "`{model}` missing: {}",
            err.message
        );
    }

    let reply = ErrorReply::read(post_json(&proxy, None, &chat("nope/nothing")).await).await;
    let message = reply.expect(404, "model_not_found");
    assert_eq!(reply.error_type(), "invalid_request_error");
    assert!(
        message.contains("nope/nothing") && message.contains("main"),
        "{message}"
    );
}

#[tokio::test]
async fn a_disabled_provider_cannot_be_addressed_directly() {
    let toml = "[providers.paid]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
                api_key_env = \"PAID_KEY_NOT_SET\"\n\n\
                [providers.demo]\nkind = \"mock\"\n\n\
                [routes.main]\ntargets = [{ provider = \"paid\", model = \"big\" }, { provider = \"demo\", model = \"demo\" }]\n";
    let proxy = Proxy::start(toml).await;
    let reply = ErrorReply::read(post_json(&proxy, None, &chat("paid/big")).await).await;
    let message = reply.expect(404, "model_not_found");
    assert!(message.contains("demo/demo"), "{message}");
    assert!(!message.contains("paid/big,"), "{message}");
}

#[tokio::test]
async fn an_unknown_path_is_an_openai_shaped_404() {
    let proxy = Proxy::start(&mock_config("")).await;
    let get = ErrorReply::read(
        http()
            .get(proxy.url("/v1/no-such-thing"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let message = get.expect(404, "not_found");
    assert!(message.contains("/v1/no-such-thing"), "{message}");
    let wrong_method = ErrorReply::read(
        http()
            .delete(proxy.url("/v1/chat/completions"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(wrong_method.status, 404);
    assert!(wrong_method.body["error"]["message"].is_string());
}

// ----- 413 request_too_large -----

const SMALL_BODY_LIMIT: &str = "[server]\nmax_body_bytes = 1000\n";

/// A valid chat body of exactly `len` bytes.
fn chat_body_of_len(len: usize) -> String {
    let empty = chat("main").to_string().replace("\"hi\"", "\"\"");
    assert!(empty.len() <= len);
    let text = "x".repeat(len - empty.len());
    let body = chat("main")
        .to_string()
        .replace("\"hi\"", &format!("\"{text}\""));
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn a_body_over_max_body_bytes_with_a_content_length_is_413() {
    let proxy = Proxy::start(&mock_config(SMALL_BODY_LIMIT)).await;
    let resp = http()
        .post(proxy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(chat_body_of_len(1001))
        .send()
        .await
        .unwrap();
    let reply = ErrorReply::read(resp).await;
    let message = reply.expect(413, "request_too_large");
    assert!(message.contains("1000"), "{message}");
    assert_eq!(reply.error_type(), "invalid_request_error");

    // The limit itself is allowed.
    let resp = http()
        .post(proxy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(chat_body_of_len(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_chunked_body_over_max_body_bytes_is_413() {
    let up = MockUpstream::start().await;
    let toml = config_for(
        &[("up", &up.base_url())],
        "\n[server]\nmax_body_bytes = 1000\n",
    );
    let proxy = Proxy::start(&toml).await;
    let body = chat_body_of_len(2400);
    let resp = post_chunked(&proxy, body.as_bytes(), 300).await;
    ErrorReply::read(resp)
        .await
        .expect(413, "request_too_large");
    assert_eq!(up.request_count(), 0);

    // A chunked body under the limit goes through.
    let resp = post_chunked(&proxy, chat("main").to_string().as_bytes(), 10).await;
    assert_eq!(resp.status(), 200);
}

// ----- 429 rate_limit_exceeded -----

#[tokio::test]
async fn a_key_over_its_rpm_is_429_with_retry_after() {
    let keys = "[[server.keys]]\nname = \"team-a\"\nkey_env = \"TEAM_A_KEY\"\nrpm = 1\n\n\
                [[server.keys]]\nname = \"team-b\"\nkey_env = \"TEAM_B_KEY\"\nrpm = 1\n";
    let proxy = Proxy::start_with_env(
        &mock_config(keys),
        &[("TEAM_A_KEY", "sk-team-a"), ("TEAM_B_KEY", "sk-team-b")],
    )
    .await;
    let client = sdk(&proxy, "sk-team-a");
    client.chat().create(ask("main")).await.unwrap();

    let err = sdk_error(client.chat().create(ask("main")).await);
    assert_eq!(err.code.as_deref(), Some("rate_limit_exceeded"));
    assert_eq!(err.r#type.as_deref(), Some("rate_limit_error"));

    let reply = ErrorReply::read(post_json(&proxy, Some("sk-team-a"), &chat("main")).await).await;
    reply.expect(429, "rate_limit_exceeded");
    let wait = reply.retry_after();
    assert!((1..=60).contains(&wait), "Retry-After: {wait}");

    // The limit is per key: another key still gets through.
    let other = post_json(&proxy, Some("sk-team-b"), &chat("main")).await;
    assert_eq!(other.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn every_target_rate_limited_is_429_with_the_soonest_retry_after() {
    let slow = MockUpstream::start().await;
    slow.set_default(
        Reply::json(
            429,
            json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}),
        )
        .header("retry-after", "7"),
    );
    let soon = MockUpstream::start().await;
    soon.set_default(wire::openrouter_rate_limit()); // retry-after: 1
    let kimi = MockUpstream::start().await;
    kimi.set_default(wire::kimi_rate_limit()); // "after 1 seconds", no header
    let proxy = Proxy::start(&config_for(
        &[
            ("slow", &slow.base_url()),
            ("openrouter", &soon.base_url()),
            ("kimi", &kimi.base_url()),
        ],
        "",
    ))
    .await;

    let err = sdk_error(sdk(&proxy, "k").chat().create(ask("main")).await);
    assert_eq!(err.code.as_deref(), Some("rate_limit_exceeded"));

    let reply = ErrorReply::read(post_json(&proxy, None, &chat("main")).await).await;
    let message = reply.expect(429, "rate_limit_exceeded");
    assert_eq!(reply.error_type(), "rate_limit_error");
    assert!(message.contains("main"), "{message}");
    assert_eq!(reply.retry_after(), 1);
    assert!(slow.request_count() >= 1 && soon.request_count() >= 1 && kimi.request_count() >= 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_the_soonest_hint_not_the_first_one() {
    let later = MockUpstream::start().await;
    later.set_default(
        Reply::json(429, json!({"error": {"message": "slow down"}})).header("retry-after", "9"),
    );
    let sooner = MockUpstream::start().await;
    sooner.set_default(
        Reply::json(429, json!({"error": {"message": "slow down"}})).header("retry-after", "3"),
    );
    let proxy = Proxy::start(&config_for(
        &[("later", &later.base_url()), ("sooner", &sooner.base_url())],
        "",
    ))
    .await;
    let reply = ErrorReply::read(post_json(&proxy, None, &chat("main")).await).await;
    reply.expect(429, "rate_limit_exceeded");
    assert_eq!(reply.retry_after(), 3);
}

#[tokio::test]
async fn rate_limited_and_broken_targets_together_are_a_502_not_a_429() {
    let limited = MockUpstream::start().await;
    limited.set_default(wire::openai_rate_limit());
    let broken = MockUpstream::start().await;
    broken.set_default(Reply::json(
        500,
        json!({"error": {"message": "internal error"}}),
    ));
    let proxy = Proxy::start(&config_for(
        &[
            ("limited", &limited.base_url()),
            ("broken", &broken.base_url()),
        ],
        "",
    ))
    .await;
    let reply = ErrorReply::read(post_json(&proxy, None, &chat("main")).await).await;
    let message = reply.expect(502, "upstream_error");
    assert!(
        message.contains("limited") && message.contains("429"),
        "{message}"
    );
    assert!(
        message.contains("broken") && message.contains("500"),
        "{message}"
    );
}

// ----- quota -----

#[tokio::test]
async fn an_exhausted_quota_on_the_primary_fails_over_to_the_fallback() {
    let primary = MockUpstream::start().await;
    primary.set_default(wire::openai_insufficient_quota());
    let fallback = MockUpstream::start().await;
    fallback.push(Reply::chat("from the fallback"));
    let proxy = Proxy::start(&config_for(
        &[
            ("openai", &primary.base_url()),
            ("kimi", &fallback.base_url()),
        ],
        "",
    ))
    .await;
    let resp = post_json(&proxy, None, &chat("main")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-hermes-provider"], "kimi");
    assert_eq!(resp.headers()["x-hermes-attempts"], "2");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "from the fallback");
    // Quota is not a rate limit: never retried on the same provider.
    assert_eq!(primary.request_count(), 1);
    assert!(proxy.metrics().contains(
        "hermes_upstream_requests_total{outcome=\"quota_exhausted\",provider=\"openai\"} 1"
    ));
}

// ----- 400 context_length_exceeded -----

#[tokio::test]
async fn an_upstream_context_length_error_is_400_without_fallback() {
    let samples: [(Reply, &str); 7] = [
        (
            wire::openai_context_length(),
            "maximum context length is 4097",
        ),
        (wire::kimi_context_length(), "exceeded model token limit"),
        (wire::llamacpp_context_length(), "available context size"),
        (
            wire::vllm_context_length(),
            "maximum context length is 4096",
        ),
        (wire::ollama_context_length(), "prompt too long"),
        (
            wire::openrouter_context_length(),
            "maximum context length is 32768",
        ),
        (wire::anthropic_context_length(), "prompt is too long"),
    ];
    // A one-message conversation cannot be compressed: the client hears
    // why, with the provider's own words, and nothing is retried.
    let primary = MockUpstream::start().await;
    let proxy = Proxy::start(&config_for(&[("primary", &primary.base_url())], "")).await;
    for (i, (sample, reason)) in samples.clone().into_iter().enumerate() {
        primary.push(sample);
        let reply = ErrorReply::read(post_json(&proxy, None, &chat("main")).await).await;
        let message = reply.expect(400, "context_length_exceeded");
        assert_eq!(reply.error_type(), "invalid_request_error");
        assert!(message.contains(reason), "sample {i}: {message}");
        assert_eq!(primary.request_count(), i + 1, "sample {i} was retried");
    }
    assert!(proxy.metrics().contains(
        "hermes_upstream_requests_total{outcome=\"context_length\",provider=\"primary\"} 7"
    ));

    // With compression off, the upstream's error comes back as it was sent,
    // and no fallback is tried.
    let primary = MockUpstream::start().await;
    let fallback = MockUpstream::start().await;
    let proxy = Proxy::start(
        &config_for(
            &[
                ("primary", &primary.base_url()),
                ("fallback", &fallback.base_url()),
            ],
            "",
        )
        .replace("[routes.main]\n", "[routes.main]\ncompression = \"off\"\n"),
    )
    .await;
    for (i, (sample, reason)) in samples.into_iter().enumerate() {
        primary.push(sample);
        let resp = post_json(&proxy, None, &chat("main")).await;
        assert!(
            resp.status() == 400 || resp.status() == 413,
            "sample {i}: {}",
            resp.status()
        );
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["error"]["message"].as_str().unwrap().contains(reason),
            "sample {i}: {body}"
        );
    }
    assert_eq!(fallback.request_count(), 0);
}

// ----- 502 upstream_error -----

#[tokio::test]
async fn every_target_failing_is_502_naming_each_provider_and_never_a_key() {
    const KEY_A: &str = "sk-proj-AAAAsecretvalue0123456789abcdef";
    const KEY_B: &str = "sk-or-v1-BBBBsecretvalue0123456789abcdef";
    let a = MockUpstream::start().await;
    // Upstreams echo the key they rejected (OpenAI's 401 does).
    a.set_default(Reply::json(
        401,
        json!({"error": {"message": format!("Incorrect API key provided: {KEY_A}. You can find your API key at https://platform.openai.com/account/api-keys."),
            "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
    ));
    let b = MockUpstream::start().await;
    b.set_default(Reply::raw(
        503,
        "text/plain",
        &format!("upstream overloaded while serving Bearer {KEY_B}"),
    ));
    let toml = format!(
        "[defaults]\nbackoff_base = \"1ms\"\nbackoff_max = \"2ms\"\n\n\
         [providers.alpha]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"ALPHA_KEY\"\n\n\
         [providers.beta]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"BETA_KEY\"\n\n\
         [routes.main]\ntargets = [{{ provider = \"alpha\", model = \"a\" }}, {{ provider = \"beta\", model = \"b\" }}]\n",
        a.base_url(),
        b.base_url()
    );
    let proxy = Proxy::start_with_env(&toml, &[("ALPHA_KEY", KEY_A), ("BETA_KEY", KEY_B)]).await;

    let resp = post_json(&proxy, None, &chat("main")).await;
    let raw = resp.headers().clone();
    let reply = ErrorReply::read(resp).await;
    let message = reply.expect(502, "upstream_error");
    assert_eq!(reply.error_type(), "upstream_error");
    assert!(
        message.contains("alpha") && message.contains("401"),
        "{message}"
    );
    assert!(
        message.contains("beta") && message.contains("503"),
        "{message}"
    );
    assert!(message.contains("Incorrect API key"), "{message}");
    let text = reply.body.to_string();
    for secret in [KEY_A, KEY_B, "secretvalue"] {
        assert!(!text.contains(secret), "key leaked: {text}");
    }
    assert!(!format!("{raw:?}").contains("secretvalue"));
    // Both keys reached their upstream: the failure was theirs, not ours.
    assert_eq!(
        a.requests()[0].header("authorization"),
        Some(format!("Bearer {KEY_A}").as_str())
    );

    // async-openai: a 5xx body is kept whole as the message; it is our shape.
    let err = sdk_error(sdk(&proxy, "k").chat().create(ask("main")).await);
    assert!(!err.message.contains("secretvalue"), "{}", err.message);
    let body: Value = serde_json::from_str(&err.message).unwrap();
    assert_eq!(body["error"]["code"], "upstream_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("beta"));
}

#[tokio::test]
async fn unreachable_upstreams_are_502_with_a_connect_reason() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    };
    let proxy = Proxy::start(&config_for(&[("gone", &dead)], "")).await;
    let reply = ErrorReply::read(post_json(&proxy, None, &chat("main")).await).await;
    let message = reply.expect(502, "upstream_error");
    assert!(message.contains("gone"), "{message}");
    assert!(message.contains("connect"), "{message}");
}

// ----- 504 upstream_timeout -----

#[tokio::test(start_paused = true)]
async fn a_request_past_request_timeout_is_504() {
    let toml = "[defaults]\nrequest_timeout = \"300ms\"\n\n\
                [providers.sleepy]\nkind = \"mock\"\nfirst_byte_delay = \"10s\"\n\n\
                [routes.main]\ntargets = [{ provider = \"sleepy\", model = \"demo\" }]\n";
    let proxy = Proxy::start(toml).await;
    for stream in [false, true] {
        let started = tokio::time::Instant::now();
        let mut body = chat("main");
        body["stream"] = json!(stream);
        let reply = ErrorReply::read(post_json(&proxy, None, &body).await).await;
        let elapsed = started.elapsed();
        let message = reply.expect(504, "upstream_timeout");
        assert_eq!(reply.error_type(), "timeout_error");
        assert!(message.contains("0.3"), "{message}");
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(10),
            "answered after {elapsed:?}"
        );
    }
    assert!(proxy
        .metrics()
        .contains("hermes_requests_total{route=\"main\",status=\"504\"} 2"));
}

#[tokio::test]
async fn an_upstream_echoing_any_kind_of_key_does_not_leak_it_to_the_client() {
    const KEY: &str = "gsk_live0123456789abcdefSECRET";
    let up = MockUpstream::start().await;
    up.set_default(Reply::json(
        401,
        json!({"error": {"message": format!("Invalid API Key: {KEY}"), "type": "invalid_request_error", "code": "invalid_api_key"}}),
    ));
    let toml = format!(
        "[providers.groq]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"GROQ_KEY\"\n\n\
         [routes.main]\ntargets = [{{ provider = \"groq\", model = \"llama\" }}]\n",
        up.base_url()
    );
    let proxy = Proxy::start_with_env(&toml, &[("GROQ_KEY", KEY)]).await;
    let resp = post_json(&proxy, None, &chat("main")).await;
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(text.contains("groq") && text.contains("401"), "{text}");
    assert!(!text.contains("SECRET"), "the provider key leaked: {text}");
}

/// POSTs `body` in `chunk`-byte pieces with no content-length (chunked).
async fn post_chunked(proxy: &Proxy, body: &[u8], chunk: usize) -> reqwest::Response {
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(chunk).map(|c| Ok(c.to_vec())).collect();
    http()
        .post(proxy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream::iter(pieces)))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_request_timeout_past_any_clock_means_none_not_a_panic() {
    let proxy = Proxy::start(&mock_config(
        "[defaults]\nrequest_timeout = \"500000000000y\"",
    ))
    .await;
    let resp = proxy.post("/v1/chat/completions", &chat("main")).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(body["choices"][0]["message"]["content"].is_string());
}
