use async_openai::types::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use serde_json::{json, Value};

use crate::support::mock_upstream::{wire, MockUpstream, Reply};
use crate::support::proxy::{config_for, http, Proxy};

fn ask(model: &str, text: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(model)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content(text)
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap()
}

#[tokio::test]
async fn demo_provider_answers_the_default_route_with_no_keys_set() {
    let proxy = Proxy::start(hermes_proxy::config::EMBEDDED).await;
    let resp = proxy
        .openai("unused")
        .chat()
        .create(ask("default", "hello proxy"))
        .await
        .unwrap();
    let text = resp.choices[0].message.content.clone().unwrap();
    assert!(text.contains("hello proxy"), "{text}");
    let usage = resp.usage.unwrap();
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    proxy.stop().await;
}

#[tokio::test]
async fn forwards_unknown_fields_with_the_target_model_and_the_provider_key() {
    let up = MockUpstream::start().await;
    let toml = format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"UP_KEY\"\nheaders = {{ \"X-Title\" = \"hermes\" }}\n\
         [routes.main]\ntargets = [{{ provider = \"up\", model = \"real-model\" }}]\n",
        up.base_url()
    );
    let proxy = Proxy::start_with_env(&toml, &[("UP_KEY", "sk-upstream-secret")]).await;
    let resp = http()
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth("client-key-must-not-travel")
        .json(
            &json!({"model": "main", "messages": [{"role": "user", "content": "hi"}],
            "top_k": 3, "provider": {"order": ["a"]}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-hermes-route"], "main");
    assert_eq!(resp.headers()["x-hermes-provider"], "up");
    assert_eq!(resp.headers()["x-hermes-model"], "real-model");
    assert_eq!(resp.headers()["x-hermes-attempts"], "1");
    assert!(resp.headers().contains_key("x-request-id"));

    let seen = &up.requests()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.body["model"], "real-model");
    assert_eq!(seen.body["top_k"], 3);
    assert_eq!(seen.body["provider"], json!({"order": ["a"]}));
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-upstream-secret")
    );
    assert_eq!(seen.header("x-title"), Some("hermes"));
    proxy.stop().await;
}

#[tokio::test]
async fn keeps_the_clients_request_id() {
    let proxy = Proxy::start(hermes_proxy::config::EMBEDDED).await;
    let resp = http()
        .post(proxy.url("/v1/chat/completions"))
        .header("x-request-id", "trace-123")
        .json(&json!({"model": "demo/demo", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-123");
    assert_eq!(resp.headers()["x-hermes-route"], "demo/*");
}

#[tokio::test]
async fn replaces_an_overlong_request_id_with_its_own() {
    let proxy = Proxy::start(hermes_proxy::config::EMBEDDED).await;
    let resp = http()
        .get(proxy.url("/health"))
        .header("x-request-id", "x".repeat(129))
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap();
    assert!(id.starts_with("req_") && id.len() < 129, "{id}");
}

#[tokio::test]
async fn normalizes_kimi_usage_and_reasoning_in_a_json_answer() {
    let up = MockUpstream::start().await;
    up.push(Reply::json(
        200,
        json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "kimi-k2.6",
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "4", "reasoning": "2+2=4"},
                "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15, "cached_tokens": 8}}]}),
    ));
    let proxy = Proxy::start(&config_for(&[("kimi", &up.base_url())], "")).await;
    let v: Value = proxy
        .post(
            "/v1/chat/completions",
            &json!({"model": "main", "messages": [{"role": "user", "content": "2+2?"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 12);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 8);
    assert_eq!(v["choices"][0]["message"]["reasoning_content"], "2+2=4");
    assert!(v["choices"][0].get("usage").is_none());
    assert!(proxy
        .metrics()
        .contains("hermes_tokens_total{kind=\"cached\",provider=\"kimi\"} 8"));
}

#[tokio::test]
async fn falls_back_when_primary_is_rate_limited() {
    let primary = MockUpstream::start().await;
    primary.push(wire::kimi_rate_limit());
    let fallback = MockUpstream::start().await;
    fallback.push(Reply::chat("from fallback"));
    let proxy = Proxy::start(&config_for(
        &[
            ("kimi", &primary.base_url()),
            ("openrouter", &fallback.base_url()),
        ],
        "",
    ))
    .await;
    let resp = proxy
        .post(
            "/v1/chat/completions",
            &json!({"model": "main", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-hermes-provider"], "openrouter");
    assert_eq!(resp.headers()["x-hermes-attempts"], "2");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "from fallback");
    let metrics = proxy.metrics();
    assert!(
        metrics
            .contains("hermes_fallbacks_total{from=\"kimi\",route=\"main\",to=\"openrouter\"} 1"),
        "{metrics}"
    );
    assert!(metrics
        .contains("hermes_upstream_requests_total{outcome=\"rate_limited\",provider=\"kimi\"} 1"));
}

#[tokio::test]
async fn a_client_mistake_is_returned_normalized_without_fallback() {
    let primary = MockUpstream::start().await;
    primary.push(Reply::json(
        422,
        json!({"object": "error", "message": "temperature must be <= 2", "type": "BadRequestError", "param": "temperature", "code": 422}),
    ));
    let fallback = MockUpstream::start().await;
    let proxy = Proxy::start(&config_for(
        &[
            ("vllm", &primary.base_url()),
            ("other", &fallback.base_url()),
        ],
        "",
    ))
    .await;
    let resp = proxy.post("/v1/chat/completions", &json!({"model": "main", "temperature": 9, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(resp.status(), 422);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["message"], "temperature must be <= 2");
    assert_eq!(v["error"]["param"], "temperature");
    assert_eq!(fallback.request_count(), 0);
}

#[tokio::test]
async fn fails_over_on_connection_refused_and_an_error_inside_a_200() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    }; // listener dropped: connections are refused
    let openrouter = MockUpstream::start().await;
    openrouter.push(Reply::json(
        200,
        json!({"error": {"message": "Provider returned error", "code": 502, "metadata": {"raw": "upstream exploded", "provider_name": "X"}}}),
    ));
    let good = MockUpstream::start().await;
    let proxy = Proxy::start(&config_for(
        &[
            ("dead", &dead),
            ("openrouter", &openrouter.base_url()),
            ("good", &good.base_url()),
        ],
        "",
    ))
    .await;
    let resp = proxy
        .openai("k")
        .chat()
        .create(ask("main", "hi"))
        .await
        .unwrap();
    assert_eq!(
        resp.choices[0].message.content.as_deref(),
        Some("Hello from mock")
    );
    assert_eq!(good.request_count(), 1);
}

#[tokio::test]
async fn lists_models_for_the_openai_sdk() {
    let proxy = Proxy::start(hermes_proxy::config::EMBEDDED).await;
    let list = proxy.openai("k").models().list().await.unwrap();
    let ids: Vec<&str> = list.data.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["default", "local/qwen3:8b", "demo/demo"]);
}

#[tokio::test]
async fn retrieves_one_model_by_id_slashes_included() {
    let proxy = Proxy::start(hermes_proxy::config::EMBEDDED).await;
    let client = proxy.openai("k");
    for id in ["default", "demo/demo", "local/qwen3:8b"] {
        let model = client.models().retrieve(id).await.unwrap();
        assert_eq!(model.id, id);
        assert_eq!(model.object, "model");
    }
    let encoded = http()
        .get(proxy.url("/v1/models/demo%2Fdemo"))
        .send()
        .await
        .unwrap();
    assert_eq!(encoded.status(), 200);
    let body: Value = encoded.json().await.unwrap();
    assert_eq!(body["id"], "demo/demo");

    let missing = http()
        .get(proxy.url("/v1/models/gpt-9"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["param"], "model");
}

#[tokio::test]
async fn embeddings_and_legacy_completions_are_routed() {
    let up = MockUpstream::start().await;
    up.push(Reply::json(200, json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}], "model": "m", "usage": {"prompt_tokens": 2, "total_tokens": 2}})));
    up.push(Reply::json(200, json!({"id": "x", "object": "text_completion", "choices": [{"index": 0, "text": "done", "finish_reason": "stop"}]})));
    let proxy = Proxy::start(&config_for(&[("up", &up.base_url())], "")).await;
    let emb: Value = proxy
        .post(
            "/v1/embeddings",
            &json!({"model": "main", "input": "hello"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(emb["data"][0]["embedding"], json!([0.1, 0.2]));
    let cmpl: Value = proxy
        .post(
            "/v1/completions",
            &json!({"model": "main", "prompt": "say done"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cmpl["choices"][0]["text"], "done");
    let paths: Vec<String> = up.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/v1/embeddings", "/v1/completions"]);
}
