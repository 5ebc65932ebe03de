//! SPEC's "Browsers" rules over real HTTP: without client keys, a page that
//! is not local (and not listed by name) is refused, and so is a request
//! addressed to a host name that is not loopback; with keys, `cors_origins`
//! applies as written. The same in a real browser: `chromium.rs`.

use serde_json::{json, Value};

use crate::support::proxy::{http, Proxy};

fn demo_config(server: &str) -> String {
    format!(
        "[server]\n{server}\n\
         [providers.demo]\nkind = \"mock\"\nchunk_delay = \"1ms\"\n\n\
         [routes.main]\ntargets = [{{ provider = \"demo\", model = \"demo\" }}]\n"
    )
}

const KEYED: &str = "[[server.keys]]\nname = \"web\"\nkey_env = \"WEB_KEY\"\n";

fn chat() -> String {
    json!({"model": "main", "messages": [{"role": "user", "content": "hello"}]}).to_string()
}

/// What a page's `fetch` with a `text/plain` body sends: no preflight.
async fn simple_post(proxy: &Proxy, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = http()
        .post(proxy.url("/v1/chat/completions"))
        .header("content-type", "text/plain;charset=UTF-8")
        .body(chat());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

fn allow_origin(resp: &reqwest::Response) -> Option<&str> {
    resp.headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap())
}

async fn refused(resp: reqwest::Response, code: &str) -> String {
    assert_eq!(resp.status(), 403);
    assert_eq!(allow_origin(&resp), None, "a refusal must not be readable");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn without_keys_a_foreign_page_is_refused_even_under_a_wildcard() {
    let proxy = Proxy::start(&demo_config("cors_origins = [\"*\"]\n")).await;
    let resp = simple_post(&proxy, &[("origin", "https://evil.example")]).await;
    let message = refused(resp, "origin_not_allowed").await;
    assert!(
        message.contains("https://evil.example")
            && message.contains("cors_origins = [\"https://evil.example\"]")
            && message.contains("[server]"),
        "{message}"
    );
    // Every endpoint, preflights and reads included.
    let preflight = http()
        .request(reqwest::Method::OPTIONS, proxy.url("/v1/chat/completions"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    refused(preflight, "origin_not_allowed").await;
    let models = http()
        .get(proxy.url("/v1/models"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    refused(models, "origin_not_allowed").await;
    // A sandboxed frame says `null`: not local either.
    let null = simple_post(&proxy, &[("origin", "null")]).await;
    refused(null, "origin_not_allowed").await;
    assert!(
        !proxy
            .metrics()
            .contains("hermes_requests_total{route=\"main\""),
        "a refused request reached the route"
    );
}

#[tokio::test]
async fn without_keys_local_pages_and_listed_origins_are_served() {
    let proxy = Proxy::start(&demo_config(
        "cors_origins = [\"*\", \"https://app.example\"]\n",
    ))
    .await;
    for origin in [
        "http://localhost:5173",
        "http://chat.localhost",
        "http://127.0.0.1:3000",
        "http://[::1]:8080",
        "tauri://localhost",
        "vscode-webview://abc123",
        "https://app.example",
    ] {
        let resp = simple_post(&proxy, &[("origin", origin)]).await;
        assert_eq!(resp.status(), 200, "{origin}");
        assert!(allow_origin(&resp).is_some(), "{origin}");
    }
    // No Origin at all: not a browser's cross-origin request.
    assert_eq!(simple_post(&proxy, &[]).await.status(), 200);
}

#[tokio::test]
async fn without_keys_a_host_name_that_is_not_loopback_is_refused() {
    // DNS rebinding: evil.test resolves to 127.0.0.1, so the page is
    // same-origin with the proxy and sends no Origin on a simple request.
    let proxy = Proxy::start(&demo_config("cors_origins = [\"*\"]\n")).await;
    let port = proxy.addr.port();
    let rebound = simple_post(&proxy, &[("host", &format!("evil.test:{port}"))]).await;
    let message = refused(rebound, "host_not_allowed").await;
    assert!(message.contains("evil.test"), "{message}");
    let health = http()
        .get(proxy.url("/health"))
        .header("host", format!("evil.test:{port}"))
        .send()
        .await
        .unwrap();
    refused(health, "host_not_allowed").await;
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "app.localhost".to_owned(),
    ] {
        let resp = simple_post(&proxy, &[("host", &host)]).await;
        assert_eq!(resp.status(), 200, "{host}");
    }
}

#[tokio::test]
async fn with_keys_cors_origins_applies_as_written_and_host_is_not_checked() {
    let proxy = Proxy::start_with_env(
        &demo_config(&format!(
            "cors_origins = [\"https://app.example\"]\n{KEYED}"
        )),
        &[("WEB_KEY", "sk-web-123")],
    )
    .await;
    let auth = ("authorization", "Bearer sk-web-123");
    let foreign = simple_post(
        &proxy,
        &[
            auth,
            ("origin", "https://evil.example"),
            ("host", "proxy.lan:8080"),
        ],
    )
    .await;
    assert_eq!(foreign.status(), 200);
    assert_eq!(allow_origin(&foreign), None);
    let listed = simple_post(&proxy, &[auth, ("origin", "https://app.example")]).await;
    assert_eq!(listed.status(), 200);
    assert_eq!(allow_origin(&listed), Some("https://app.example"));
    // And a page without the key gets nowhere (and is told the scheme).
    let keyless = simple_post(&proxy, &[("origin", "https://evil.example")]).await;
    assert_eq!(keyless.status(), 401);
}
