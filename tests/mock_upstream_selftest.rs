//! Tests of the test helper itself: `support::mock_upstream` must behave as
//! documented before the proxy's integration tests can lean on it.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::mock_upstream::{wire, MockUpstream, Reply};

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

async fn post(up: &MockUpstream, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/chat/completions", up.base_url()))
        .json(body)
        .send()
        .await
        .expect("request reaches the mock")
}

/// Read a streamed body to its end; returns the text received and whether the
/// body ended in an error rather than cleanly.
async fn read_stream(resp: reqwest::Response) -> (String, bool) {
    let mut text = String::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => text.push_str(std::str::from_utf8(&b).unwrap()),
            Err(_) => return (text, true),
        }
    }
    (text, false)
}

fn data_payloads(sse: &str) -> Vec<String> {
    sse.split("\n\n")
        .filter_map(|ev| ev.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn scripted_replies_are_used_in_order_then_the_default() {
    let up = MockUpstream::start().await;
    up.push(Reply::json(418, json!({"n": 1})));
    up.push(Reply::raw(500, "text/plain", "boom"));
    assert_eq!(up.remaining(), 2);

    let r = post(&up, &chat_body("m")).await;
    assert_eq!(r.status(), 418);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"n": 1}));

    let r = post(&up, &chat_body("m")).await;
    assert_eq!(r.status(), 500);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.text().await.unwrap(), "boom");

    // Script used up: the built-in default chat completion, echoing the model.
    let r = post(&up, &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 10);

    up.set_default(Reply::chat("one two three"));
    for _ in 0..2 {
        let v: Value = post(&up, &chat_body("m")).await.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "one two three");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13})
        );
    }
    assert_eq!(up.request_count(), 5);
    assert_eq!(up.remaining(), 0);
}

#[tokio::test]
async fn get_models_is_built_in_and_does_not_consume_the_script() {
    let up = MockUpstream::start().await;
    up.push(Reply::json(429, json!({})));
    let client = reqwest::Client::new();

    let v: Value = client
        .get(format!("{}/models", up.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "mock-model");
    assert_eq!(v["data"][0]["object"], "model");

    let r = client
        .get(format!("http://{}/props", up.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    up.on_get("/props", Reply::json(200, json!({"n_ctx": 4096})));
    let v: Value = client
        .get(format!("http://{}/props", up.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["n_ctx"], 4096);

    assert_eq!(up.remaining(), 1, "GETs leave the script alone");
    assert_eq!(post(&up, &chat_body("m")).await.status(), 429);
}

#[tokio::test]
async fn headers_and_delay_are_applied() {
    let up = MockUpstream::start().await;
    up.push(
        Reply::chat("slow")
            .header("retry-after", "7")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .header("content-type", "application/json; charset=utf-8")
            .delay(Duration::from_millis(300)),
    );
    let started = std::time::Instant::now();
    let r = post(&up, &chat_body("m")).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.headers()["retry-after"], "7");
    let multi: Vec<_> = r.headers().get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);
    let content_types: Vec<_> = r.headers().get_all("content-type").iter().collect();
    assert_eq!(content_types, ["application/json; charset=utf-8"]);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "slow");
}

#[tokio::test(start_paused = true)]
async fn delay_and_gap_work_with_a_paused_clock() {
    let up = MockUpstream::start().await;
    up.push(Reply::chat("late").delay(Duration::from_secs(30)));
    up.push(
        Reply::sse(vec!["data: 1\n\n".into(), "data: 2\n\n".into()]).gap(Duration::from_secs(10)),
    );
    let started = tokio::time::Instant::now();
    let r = post(&up, &chat_body("m")).await;
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_secs(30));

    let started = tokio::time::Instant::now();
    let (text, failed) = read_stream(post(&up, &chat_body("m")).await).await;
    assert!(!failed);
    assert_eq!(text, "data: 1\n\ndata: 2\n\n");
    assert!(started.elapsed() >= Duration::from_secs(10));
}

#[tokio::test]
async fn sse_sends_events_verbatim_with_gaps() {
    let up = MockUpstream::start().await;
    let events = vec![
        ": OPENROUTER PROCESSING\n\n".to_string(),
        "data: {\"a\":1}\n\n".to_string(),
        "data: [DONE]\n\n".to_string(),
    ];
    up.push(Reply::sse(events.clone()).gap(Duration::from_millis(100)));
    let started = std::time::Instant::now();
    let r = post(&up, &chat_body("m")).await;
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let (text, failed) = read_stream(r).await;
    assert!(!failed);
    assert_eq!(text, events.concat());
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn cut_stream_ends_in_an_error_after_the_sent_events() {
    let up = MockUpstream::start().await;
    let events: Vec<String> = (1..=4).map(|i| format!("data: {i}\n\n")).collect();
    up.push(
        Reply::sse(events)
            .gap(Duration::from_millis(20))
            .cut_after(2),
    );
    let (text, failed) = read_stream(post(&up, &chat_body("m")).await).await;
    assert!(failed, "a cut stream must not end cleanly");
    assert_eq!(text, "data: 1\n\ndata: 2\n\n");

    // Without a gap the sent events still reach the client before the cut.
    up.push(Reply::sse(vec!["data: x\n\n".into(), "data: y\n\n".into()]).cut_after(5));
    let (text, failed) = read_stream(post(&up, &chat_body("m")).await).await;
    assert!(failed);
    assert_eq!(text, "data: x\n\ndata: y\n\n");

    // A stream_text cut before [DONE], and the server still serves afterwards.
    up.push(Reply::stream_text("a b c").cut_after(2));
    let (text, failed) = read_stream(post(&up, &chat_body("m")).await).await;
    assert!(failed);
    assert_eq!(data_payloads(&text).len(), 2);
    assert!(!text.contains("[DONE]"));
    assert_eq!(post(&up, &chat_body("m")).await.status(), 200);
}

#[tokio::test]
async fn stream_text_is_a_normal_openai_stream() {
    let up = MockUpstream::start().await;
    up.push(Reply::stream_text("Hello brave  new world"));
    up.push(Reply::stream_text("Hi there"));

    let (text, failed) = read_stream(post(&up, &chat_body("gpt-4o")).await).await;
    assert!(!failed);
    let payloads = data_payloads(&text);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    assert_eq!(
        chunks.len(),
        4 + 1,
        "one chunk per word plus the finish chunk"
    );
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello brave  new world");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["model"], "gpt-4o");
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));

    let mut body = chat_body("m");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (text, _) = read_stream(post(&up, &body).await).await;
    let payloads = data_payloads(&text);
    assert_eq!(payloads.len(), 2 + 1 + 1 + 1);
    let usage: Value = serde_json::from_str(&payloads[3]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12})
    );
    let first: Value = serde_json::from_str(&payloads[0]).unwrap();
    assert!(first["usage"].is_null());
}

#[tokio::test]
async fn hang_up_closes_without_a_response_and_is_recorded() {
    let up = MockUpstream::start().await;
    up.push(Reply::hang_up());
    let client = reqwest::Client::new();
    let err = client
        .post(format!("{}/chat/completions", up.base_url()))
        .json(&chat_body("m"))
        .send()
        .await
        .expect_err("no response after a hang-up");
    assert!(!err.is_status());
    assert_eq!(up.request_count(), 1);
    assert_eq!(up.requests()[0].body["model"], "m");
    // The next request gets the default.
    assert_eq!(post(&up, &chat_body("m")).await.status(), 200);
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn every_request_is_recorded() {
    let up = MockUpstream::start().await;
    let client = reqwest::Client::new();
    client
        .post(format!("{}/chat/completions?x=1", up.base_url()))
        .header("authorization", "Bearer sk-test")
        .header("x-title", "hermes")
        .json(&chat_body("kimi-k2.6"))
        .send()
        .await
        .unwrap();
    client
        .post(format!("{}/embeddings", up.base_url()))
        .body("not json")
        .send()
        .await
        .unwrap();
    client
        .get(format!("{}/models", up.base_url()))
        .send()
        .await
        .unwrap();

    let reqs = up.requests();
    assert_eq!(reqs.len(), 2, "the /models probe is recorded apart");
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/v1/chat/completions");
    assert_eq!(reqs[0].header("authorization"), Some("Bearer sk-test"));
    assert_eq!(reqs[0].headers["x-title"], "hermes");
    assert_eq!(reqs[0].body, chat_body("kimi-k2.6"));
    assert_eq!(reqs[1].path, "/v1/embeddings");
    assert_eq!(reqs[1].body, Value::Null);
    assert_eq!(&reqs[1].raw_body[..], b"not json");
    let probes = up.probes();
    assert_eq!(probes[0].method, "GET");
    assert_eq!(probes[0].path, "/v1/models");
}

#[tokio::test]
async fn wire_samples_carry_their_status_headers_and_bodies() {
    let up = MockUpstream::start().await;
    let cases: Vec<(Reply, u16, &str)> = vec![
        (wire::openai_rate_limit(), 429, "rate_limit_exceeded"),
        (wire::openai_insufficient_quota(), 429, "insufficient_quota"),
        (wire::kimi_rate_limit(), 429, "rate_limit_reached_error"),
        (wire::kimi_quota(), 429, "exceeded_current_quota_error"),
        (wire::kimi_overloaded(), 429, "engine_overloaded_error"),
        (
            wire::openrouter_rate_limit(),
            429,
            "Provider returned error",
        ),
        (wire::openrouter_credits_402(), 402, "more credits"),
        (wire::anthropic_rate_limit(), 429, "rate_limit_error"),
        (wire::anthropic_overloaded_529(), 529, "overloaded_error"),
        (wire::ollama_busy_503(), 503, "server busy"),
        (wire::llamacpp_loading_503(), 503, "Loading model"),
        (
            wire::openai_context_length(),
            400,
            "context_length_exceeded",
        ),
        (wire::vllm_context_length(), 400, "maximum context length"),
        (wire::vllm_max_tokens_too_large(), 400, "is too large"),
        (
            wire::llamacpp_context_length(),
            400,
            "exceed_context_size_error",
        ),
        (wire::ollama_context_length(), 400, "prompt too long"),
        (
            wire::kimi_context_length(),
            400,
            "exceeded model token limit",
        ),
        (wire::openrouter_context_length(), 400, "middle-out"),
        (wire::anthropic_context_length(), 400, "prompt is too long"),
    ];
    let n = cases.len();
    let mut expected = Vec::new();
    for (reply, status, needle) in cases {
        up.push(reply);
        expected.push((status, needle));
    }
    let mut responses = Vec::new();
    for (status, needle) in expected {
        let r = post(&up, &chat_body("m")).await;
        assert_eq!(r.status().as_u16(), status, "{needle}");
        assert_eq!(r.headers()["content-type"], "application/json");
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        serde_json::from_str::<Value>(&text).expect("wire bodies are JSON");
        assert!(text.contains(needle), "{text} lacks {needle}");
        responses.push(headers);
    }
    assert_eq!(responses.len(), n);
    assert_eq!(responses[0]["retry-after"], "1");
    assert_eq!(responses[0]["retry-after-ms"], "644");
    assert_eq!(responses[0]["x-ratelimit-reset-requests"], "6m0s");
    assert!(responses[2].get("retry-after").is_none(), "kimi sends none");
    let reset = responses[7]["anthropic-ratelimit-requests-reset"]
        .to_str()
        .unwrap();
    assert!(
        reset.len() == 20 && reset.ends_with('Z') && reset.as_bytes()[10] == b'T',
        "{reset}"
    );
}

#[tokio::test]
async fn wire_streams_follow_the_dialects() {
    let up = MockUpstream::start().await;
    up.push(Reply::sse(wire::openrouter_mid_stream_error_events()));
    up.push(wire::kimi_stream_usage_in_choice());

    let (text, failed) = read_stream(post(&up, &chat_body("m")).await).await;
    assert!(!failed);
    assert!(text.starts_with(": OPENROUTER PROCESSING\n\n"));
    let payloads = data_payloads(&text);
    let err: Value = serde_json::from_str(&payloads[payloads.len() - 2]).unwrap();
    assert_eq!(err["error"]["code"], "server_error");
    assert_eq!(err["choices"][0]["finish_reason"], "error");

    let (text, _) = read_stream(post(&up, &chat_body("m")).await).await;
    let payloads = data_payloads(&text);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let last: Value = serde_json::from_str(&payloads[payloads.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["choices"][0]["usage"]["cached_tokens"], 4);
    assert!(last.get("usage").is_none());
}

#[tokio::test]
async fn anthropic_replies_speak_messages() {
    let up = MockUpstream::start().await;
    up.push(Reply::anthropic_message("hi there"));
    up.push(Reply::anthropic_stream_text("hi there"));
    let v: Value = post(&up, &chat_body("claude-x"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "claude-x");
    assert_eq!(v["content"][0]["text"], "hi there");
    assert_eq!(v["usage"]["output_tokens"], 2);

    let (text, _) = read_stream(post(&up, &chat_body("claude-x")).await).await;
    let names: Vec<&str> = text
        .split("\n\n")
        .filter_map(|ev| ev.strip_prefix("event: "))
        .map(|ev| ev.split('\n').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let up = MockUpstream::start().await;
    // reqwest here is built without its http2 feature; speak h2c by hand.
    let stream = tokio::net::TcpStream::connect(up.addr()).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut head = [0u8; 9];
    rd.read_exact(&mut head).await.unwrap();
    assert_eq!(
        head[3], 0x04,
        "the server answers the preface with SETTINGS"
    );
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    let up = MockUpstream::start().await;
    let addr = up.addr();
    up.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let up = MockUpstream::start().await;
    let addr = up.addr();
    drop(up);
    // The abort lands at the accept loop's next poll.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("server still accepting after drop");
}
