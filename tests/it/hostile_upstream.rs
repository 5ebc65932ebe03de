//! Upstreams that misbehave on purpose: absurd rate-limit hints, answers and
//! events too large to hold, keys echoed back, streams that break. Whatever
//! they send, the client gets an answer or an OpenAI-shaped error, and the
//! proxy stays within its configured bounds.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::mock_upstream::{data_event, MockUpstream, Reply};
use crate::support::proxy::{config_for, sse_data, Proxy};

const U64_MAX: &str = "18446744073709551615";

/// The hints that used to overflow `Instant + Duration` or disable a target
/// for millennia.
fn huge_hints() -> Vec<(&'static str, String)> {
    vec![
        ("retry-after", U64_MAX.into()),
        ("retry-after", "1000000000000".into()),
        ("retry-after-ms", U64_MAX.into()),
        ("x-ratelimit-reset-requests", format!("{U64_MAX}s")),
        ("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT".into()),
    ]
}

fn limited(name: &str, value: &str) -> Reply {
    Reply::json(
        429,
        json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}),
    )
    .header(name, value)
}

fn body(stream: bool) -> Value {
    json!({"model": "main", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

async fn chat(proxy: &Proxy) -> reqwest::Response {
    proxy.post("/v1/chat/completions", &body(false)).await
}

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// `config_for` with lines added to its `[defaults]`.
fn with_defaults(upstreams: &[(&str, &str)], defaults: &str, extra: &str) -> String {
    config_for(upstreams, extra).replacen("[defaults]\n", &format!("[defaults]\n{defaults}"), 1)
}

#[tokio::test]
async fn huge_hints_on_a_429_neither_panic_nor_reach_the_client_uncapped() {
    for (name, value) in huge_hints() {
        let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
        a.push(limited(name, &value));
        let proxy = Proxy::start(&config_for(
            &[("a", &a.base_url()), ("b", &b.base_url())],
            "",
        ))
        .await;
        let resp = chat(&proxy).await;
        assert_eq!(resp.status(), 200, "{name}: {value}");
        assert_eq!(resp.headers()["x-hermes-provider"], "b");

        // The only target: the client is told to come back within max_cooldown.
        let only = MockUpstream::start().await;
        only.set_default(limited(name, &value));
        let proxy = Proxy::start(&config_for(&[("only", &only.base_url())], "")).await;
        for _ in 0..2 {
            let resp = chat(&proxy).await;
            assert_eq!(resp.status(), 429, "{name}: {value}");
            let wait = retry_after(&resp);
            assert!((1..=3600).contains(&wait), "{name}: {value}: {wait}");
        }
    }
}

#[tokio::test]
async fn retry_after_on_a_200_is_ignored_and_a_spent_bucket_is_busy_within_max_cooldown() {
    for (name, value) in huge_hints() {
        if name == "x-ratelimit-reset-requests" {
            continue; // a bucket reset counts only with its remaining count at 0
        }
        let up = MockUpstream::start().await;
        up.set_default(Reply::chat("fine").header(name, &value));
        let proxy = Proxy::start(&config_for(&[("only", &up.base_url())], "")).await;
        for _ in 0..2 {
            let resp = chat(&proxy).await;
            assert_eq!(resp.status(), 200, "{name}: {value}");
        }
        assert_eq!(up.request_count(), 2, "{name}: {value} cooled the target");
    }

    let up = MockUpstream::start().await;
    up.push(
        Reply::chat("the last one for a while")
            .header("x-ratelimit-remaining-requests", "0")
            .header("x-ratelimit-reset-requests", &format!("{U64_MAX}s")),
    );
    let proxy = Proxy::start(&config_for(&[("only", &up.base_url())], "")).await;
    let resp = chat(&proxy).await;
    assert_eq!(resp.status(), 200);
    let resp = chat(&proxy).await;
    assert_eq!(resp.status(), 429, "the spent target was asked again");
    let wait = retry_after(&resp);
    assert!((3590..=3600).contains(&wait), "{wait}");
    assert_eq!(up.request_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_1e12_second_hint_cools_the_target_down_for_at_most_max_cooldown() {
    let up = MockUpstream::start().await;
    up.push(limited("retry-after", "1000000000000"));
    let proxy = Proxy::start(&with_defaults(
        &[("only", &up.base_url())],
        "max_cooldown = \"1m\"\n",
        "",
    ))
    .await;
    let resp = chat(&proxy).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(retry_after(&resp), 60);
    assert_eq!(chat(&proxy).await.status(), 429, "cooling down");
    assert_eq!(up.request_count(), 1);

    tokio::time::advance(Duration::from_secs(61)).await;
    let resp = chat(&proxy).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn an_answer_over_max_answer_bytes_is_a_502_after_one_attempt() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    a.set_default(Reply::chat(&"word ".repeat(2000)));
    let proxy = Proxy::start(&config_for(
        &[("a", &a.base_url()), ("b", &b.base_url())],
        "[server]\nmax_answer_bytes = 4096\n",
    ))
    .await;
    for stream in [false, true] {
        let resp = proxy.post("/v1/chat/completions", &body(stream)).await;
        assert_eq!(resp.status(), 502, "stream: {stream}");
        let v: Value = resp.json().await.unwrap();
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("larger than max_answer_bytes (4096 bytes)"),
            "{v}"
        );
        assert_eq!(v["error"]["code"], "upstream_error", "{v}");
    }
    assert_eq!(a.request_count(), 2, "retried");
    assert_eq!(b.request_count(), 0, "failed over");
}

/// One provider whose key is `KEY`, behind route `main`.
fn keyed(up: &MockUpstream) -> String {
    format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"UP_KEY\"\n\n\
         [routes.main]\ntargets = [{{ provider = \"up\", model = \"m\" }}]\n",
        up.base_url()
    )
}

/// Not `sk-` shaped: only the configured key tells it is one.
const KEY: &str = "local-secret-4f9a1c77e2";

#[tokio::test]
async fn a_key_echoed_in_a_successful_answer_reaches_the_client_masked() {
    let up = MockUpstream::start().await;
    up.push(Reply::chat(&format!("you sent {KEY}, and {KEY} again")));
    up.push(Reply::stream_text(&format!(
        "{KEY} is what you sent, {KEY}"
    )));
    let proxy = Proxy::start_with_env(&keyed(&up), &[("UP_KEY", KEY)]).await;

    let resp = chat(&proxy).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(!text.contains(KEY), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "you sent ***, and *** again"
    );

    let resp = proxy.post("/v1/chat/completions", &body(true)).await;
    let data = sse_data(resp).await;
    assert!(data.iter().all(|d| !d.contains(KEY)), "{data:?}");
    let content: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, "*** is what you sent, ***");
    assert_eq!(
        up.requests()[0].header("authorization"),
        Some(&*format!("Bearer {KEY}"))
    );
}

/// The error chunk before `[DONE]`.
fn error_chunk(data: &[String]) -> Value {
    assert_eq!(data.last().unwrap(), "[DONE]", "{data:?}");
    let err: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert!(err.get("error").is_some(), "{data:?}");
    err
}

#[tokio::test]
async fn a_mid_stream_transport_failure_is_an_upstream_server_error_chunk() {
    let up = MockUpstream::start().await;
    up.push(Reply::stream_text("one two three four").cut_after(2));
    let proxy = Proxy::start(&config_for(&[("up", &up.base_url())], "")).await;
    let resp = proxy.post("/v1/chat/completions", &body(true)).await;
    let err = error_chunk(&sse_data(resp).await);
    assert_eq!(err["error"]["type"], "server_error", "{err}");
    assert_eq!(err["error"]["code"], "upstream_error", "{err}");
}

#[tokio::test]
async fn an_event_over_max_event_bytes_ends_the_stream_with_an_error_chunk() {
    let up = MockUpstream::start().await;
    let first = data_event(&json!({"choices": [{"index": 0, "delta": {"content": "a"}}]}));
    let huge = format!("data: {}\n\n", "x".repeat(64 * 1024));
    up.push(Reply::sse(vec![first, huge, "data: [DONE]\n\n".into()]));
    let proxy = Proxy::start(&config_for(
        &[("up", &up.base_url())],
        "[server]\nmax_event_bytes = 16384\n",
    ))
    .await;
    let resp = proxy.post("/v1/chat/completions", &body(true)).await;
    assert_eq!(resp.status(), 200);
    let data = sse_data(resp).await;
    let err = error_chunk(&data);
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("max_event_bytes (16384 bytes)"), "{err}");
    assert_eq!(err["error"]["type"], "server_error", "{err}");
    assert_eq!(data.len(), 3, "{data:?}");
}

#[tokio::test]
async fn a_stream_whose_first_event_is_huge_still_honours_first_byte_timeout() {
    // One 16 MiB line, 4 KiB at a time and never ended within the timeout.
    // (The reader's own test, a body that never stops sending, is the one
    // that starves a timer outright.)
    let up = MockUpstream::start().await;
    let mut pieces = vec!["data: ".to_owned()];
    pieces.extend(std::iter::repeat_n("x".repeat(4096), 4096));
    pieces.push("\n\n".into());
    up.push(Reply::sse(pieces).gap(Duration::from_millis(1)));
    let proxy = Proxy::start(&with_defaults(
        &[("up", &up.base_url())],
        "first_byte_timeout = \"1s\"\nmax_attempts = 1\n",
        "[server]\nmax_event_bytes = 33554432\n",
    ))
    .await;
    let started = Instant::now();
    let resp = proxy.post("/v1/chat/completions", &body(true)).await;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, 502, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("first_byte_timeout"),
        "{v}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        started.elapsed()
    );
}
