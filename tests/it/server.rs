//! The server around the API: CORS, health and readiness, metrics, a
//! graceful stop that lets streams finish, and h2c.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::support::proxy::{http, sse_data, Proxy};

fn demo_config(server: &str) -> String {
    format!(
        "{server}\n\
         [providers.demo]\nkind = \"mock\"\nchunk_delay = \"1ms\"\n\n\
         [routes.main]\ntargets = [{{ provider = \"demo\", model = \"demo\" }}]\n"
    )
}

fn chat(stream: bool) -> Value {
    json!({"model": "main", "stream": stream, "messages": [{"role": "user", "content": "hello"}]})
}

async fn preflight(proxy: &Proxy, origin: &str) -> reqwest::Response {
    http()
        .request(reqwest::Method::OPTIONS, proxy.url("/v1/chat/completions"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

// ----- CORS -----

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_gets_204_with_the_allow_headers() {
    let proxy = Proxy::start(&demo_config(
        "[server]\ncors_origins = [\"https://app.example\"]\n",
    ))
    .await;
    let resp = preflight(&proxy, "https://app.example").await;
    assert_eq!(resp.status(), 204);
    assert_eq!(
        header(&resp, "access-control-allow-origin"),
        Some("https://app.example")
    );
    let methods = header(&resp, "access-control-allow-methods").unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let allowed = header(&resp, "access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    assert!(header(&resp, "vary").is_some_and(|v| v.to_ascii_lowercase().contains("origin")));
}

#[tokio::test]
async fn a_preflight_from_another_origin_gets_no_allow_origin() {
    let proxy = Proxy::start(&demo_config(
        "[server]\ncors_origins = [\"https://app.example\"]\n",
    ))
    .await;
    for origin in [
        "https://evil.example",
        "https://app.example.evil.example",
        "http://app.example",
    ] {
        let resp = preflight(&proxy, origin).await;
        assert!(
            header(&resp, "access-control-allow-origin").is_none(),
            "{origin} was allowed"
        );
    }
    // The same for an actual request: it is served, but the browser may not read it.
    let resp = http()
        .post(proxy.url("/v1/chat/completions"))
        .header("origin", "https://evil.example")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert!(header(&resp, "access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_wildcard_origin_list_allows_any_origin_with_star() {
    // With client keys; without them a page must be local or listed by name
    // (see browsers.rs).
    let toml = demo_config(
        "[server]\ncors_origins = [\"*\"]\n\n\
         [[server.keys]]\nname = \"web\"\nkey_env = \"WEB_KEY\"\n",
    );
    let proxy = Proxy::start_with_env(&toml, &[("WEB_KEY", "sk-web")]).await;
    let resp = preflight(&proxy, "https://anything.example").await;
    assert_eq!(resp.status(), 204);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn a_preflight_needs_no_client_key() {
    // Browsers never send credentials on a preflight.
    let toml = demo_config(
        "[server]\ncors_origins = [\"https://app.example\"]\n\n\
         [[server.keys]]\nname = \"web\"\nkey_env = \"WEB_KEY\"\n",
    );
    let proxy = Proxy::start_with_env(&toml, &[("WEB_KEY", "sk-web")]).await;
    let resp = preflight(&proxy, "https://app.example").await;
    assert_eq!(resp.status(), 204);
    assert_eq!(
        header(&resp, "access-control-allow-origin"),
        Some("https://app.example")
    );
}

#[tokio::test]
async fn cross_origin_answers_expose_the_hermes_headers() {
    let proxy = Proxy::start(&demo_config(
        "[server]\ncors_origins = [\"https://app.example\"]\n",
    ))
    .await;
    let resp = http()
        .post(proxy.url("/v1/chat/completions"))
        .header("origin", "https://app.example")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "access-control-allow-origin"),
        Some("https://app.example")
    );
    let exposed: Vec<String> = header(&resp, "access-control-expose-headers")
        .unwrap()
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for name in [
        "x-request-id",
        "x-hermes-route",
        "x-hermes-provider",
        "x-hermes-model",
        "x-hermes-attempts",
        "retry-after",
    ] {
        assert!(
            exposed.iter().any(|h| h == name),
            "{name} not in {exposed:?}"
        );
    }
    // Error answers carry them too, or a browser client could not read the error.
    let resp = http()
        .post(proxy.url("/v1/chat/completions"))
        .header("origin", "https://app.example")
        .json(&json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        header(&resp, "access-control-allow-origin"),
        Some("https://app.example")
    );
}

// ----- /health, /ready, /metrics -----

#[tokio::test]
async fn health_is_200() {
    let proxy = Proxy::start(hermes_proxy::config::EMBEDDED).await;
    let resp = http().get(proxy.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn ready_is_200_with_the_embedded_config() {
    let proxy = Proxy::start(hermes_proxy::config::EMBEDDED).await;
    let resp = http().get(proxy.url("/ready")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn ready_is_503_while_no_route_has_a_usable_target() {
    let toml = "[providers.paid]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
                api_key_env = \"HERMES_TEST_UNSET_KEY\"\n\n\
                [providers.other]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
                api_key_env = \"HERMES_TEST_UNSET_KEY_2\"\n\n\
                [routes.main]\ntargets = [{ provider = \"paid\", model = \"m\" }, { provider = \"other\", model = \"m\" }]\n";
    let proxy = Proxy::start(toml).await;
    let resp = http().get(proxy.url("/ready")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    // Liveness is a different question: the process is fine.
    let resp = http().get(proxy.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // The same file with a key set is ready.
    let proxy = Proxy::start_with_env(toml, &[("HERMES_TEST_UNSET_KEY", "sk-x")]).await;
    let resp = http().get(proxy.url("/ready")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_in_prometheus_text() {
    let proxy = Proxy::start(&demo_config("")).await;
    for _ in 0..2 {
        let resp = proxy.post("/v1/chat/completions", &chat(false)).await;
        assert_eq!(resp.status(), 200);
    }
    let resp = http().get(proxy.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "content-type").is_some_and(|t| t.starts_with("text/plain")));
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("hermes_requests_total{route=\"main\",status=\"200\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE hermes_requests_total counter"),
        "{text}"
    );
}

// ----- graceful stop -----

const SLOW_STREAMS: &str = "[providers.demo]\nkind = \"mock\"\nchunk_delay = \"50ms\"\n\n\
                            [routes.main]\ntargets = [{ provider = \"demo\", model = \"demo\" }]\n";

#[tokio::test]
async fn stop_lets_a_running_stream_finish_and_refuses_new_connections() {
    a_stop_lets_a_running_stream_finish(Proxy::start(SLOW_STREAMS).await).await;
}

#[tokio::test]
async fn on_worker_threads_a_stop_lets_a_running_stream_finish() {
    a_stop_lets_a_running_stream_finish(Proxy::start_on_workers(SLOW_STREAMS, 2).await).await;
}

async fn a_stop_lets_a_running_stream_finish(proxy: Proxy) {
    let addr = proxy.addr;
    let said = "one two three four five six seven eight nine ten eleven twelve";
    let resp = proxy.post("/v1/chat/completions", &json!({"model": "main", "stream": true, "messages": [{"role": "user", "content": said}]})).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    let mut text = String::from_utf8(first.to_vec()).unwrap();
    assert!(text.starts_with("data: "), "{text}");

    let stopping = tokio::spawn(proxy.stop());

    // The listener closes at once, while the stream is still being served.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            // Reset: queued in the backlog as the listener closed.
            Err(e) if e.kind() != std::io::ErrorKind::ConnectionReset => {
                panic!("unexpected connect error: {e}")
            }
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "still accepting connections after stop"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    assert!(
        !stopping.is_finished(),
        "stop returned before the stream ended"
    );

    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.expect("the stream was cut")).unwrap());
    }
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("\"error\""), "{text}");
    let content: String = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert!(content.contains(said), "{content}");
    assert!(content.ends_with("to reach a real model."), "{content}");

    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("stop did not return after the stream ended")
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_stop_does_not_wait_for_a_connection_that_never_sent_anything() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let proxy = Proxy::start(&demo_config("")).await;
    let mut silent = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    // Accepted, and waiting for its first bytes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(5), proxy.stop())
        .await
        .expect("the stop waited for a connection that sent nothing");
    // Its request, sent after the stop, is not served: the connection closes.
    let _ = silent
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection stayed open after the stop");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
}

// ----- h2c -----

#[tokio::test]
async fn http2_with_prior_knowledge_gets_answers_and_streams() {
    let proxy = Proxy::start(&demo_config("")).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .post(proxy.url("/v1/chat/completions"))
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.headers()["x-hermes-provider"], "demo");
    let v: Value = resp.json().await.unwrap();
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("hello"));

    let resp = h2
        .post(proxy.url("/v1/chat/completions"))
        .json(&chat(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let data = sse_data(resp).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert!(data.len() > 3, "{data:?}");
}
