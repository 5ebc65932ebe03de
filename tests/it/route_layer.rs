//! A route's stack takes extra tower layers without touching `Failover`: a
//! test-only layer that records the exchanges it sees and rewrites the system
//! prompt, attached to one route.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use hermes_proxy::error::ApiError;
use hermes_proxy::pipeline::service::{route_layer, Layers};
use hermes_proxy::pipeline::{Exchange, RouteService, Served};
use serde_json::{json, Value};
use tower::{Layer, Service};

use crate::support::mock_upstream::{wire, MockUpstream};
use crate::support::proxy::{config_for, Proxy};

const TERSE: &str = "Answer in one word.";

/// Replaces the conversation's system prompt and records each route label.
#[derive(Clone, Default)]
struct SystemPromptLayer {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Layer<RouteService> for SystemPromptLayer {
    type Service = SystemPrompt;
    fn layer(&self, inner: RouteService) -> SystemPrompt {
        SystemPrompt {
            inner,
            seen: self.seen.clone(),
        }
    }
}

#[derive(Clone)]
struct SystemPrompt {
    inner: RouteService,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Service<Exchange> for SystemPrompt {
    type Response = Served;
    type Error = ApiError;
    type Future = BoxFuture<'static, Result<Served, ApiError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ApiError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut exchange: Exchange) -> Self::Future {
        self.seen.lock().unwrap().push(exchange.plan.label.clone());
        if let Some(Value::Array(messages)) = exchange.body.tree_mut().get_mut("messages") {
            messages.retain(|m| m["role"] != "system");
            messages.insert(0, json!({"role": "system", "content": TERSE}));
        }
        Box::pin(self.inner.call(exchange))
    }
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "Be chatty."},
        {"role": "user", "content": "hi"},
    ]})
}

fn system_prompt(body: &Value) -> &Value {
    &body["messages"][0]["content"]
}

#[tokio::test]
async fn a_layer_on_one_route_rewrites_its_requests_and_leaves_other_routes_alone() {
    let up = MockUpstream::start().await;
    let toml = config_for(
        &[("up", &up.base_url())],
        "\n[routes.other]\ntargets = [{ provider = \"up\", model = \"other-model\" }]\n",
    );
    let layer = SystemPromptLayer::default();
    let layers = Layers::default().add("main", route_layer(layer.clone()));
    let proxy = Proxy::start_with_layers(&toml, layers).await;

    assert_eq!(
        proxy
            .post("/v1/chat/completions", &chat("main"))
            .await
            .status(),
        200
    );
    assert_eq!(
        proxy
            .post("/v1/chat/completions", &chat("other"))
            .await
            .status(),
        200
    );
    // Addressed directly, the provider has no route and so no route layers.
    let direct = proxy.post("/v1/chat/completions", &chat("up/x")).await;
    assert_eq!(direct.status(), 200);

    let seen = up.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(system_prompt(&seen[0].body), TERSE);
    assert_eq!(seen[0].body["messages"].as_array().unwrap().len(), 2);
    assert_eq!(system_prompt(&seen[1].body), "Be chatty.");
    assert_eq!(system_prompt(&seen[2].body), "Be chatty.");
    assert_eq!(*layer.seen.lock().unwrap(), ["main"]);
}

#[tokio::test(start_paused = true)]
async fn failover_runs_inside_the_layer_so_every_attempt_gets_the_rewrite() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    a.push(wire::openai_rate_limit());
    let toml = config_for(&[("a", &a.base_url()), ("b", &b.base_url())], "");
    let layer = SystemPromptLayer::default();
    let proxy = Proxy::start_with_layers(
        &toml,
        Layers::default().add("main", route_layer(layer.clone())),
    )
    .await;

    let resp = proxy.post("/v1/chat/completions", &chat("main")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-hermes-provider"], "b");
    assert_eq!(resp.headers()["x-hermes-attempts"], "2");
    assert_eq!(system_prompt(&a.requests()[0].body), TERSE);
    assert_eq!(system_prompt(&b.requests()[0].body), TERSE);
    // One exchange went through the layer; the two attempts happened below it.
    assert_eq!(layer.seen.lock().unwrap().len(), 1);
}
