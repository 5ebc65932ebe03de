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

// ---------------------------------------------------------------- tests/samples replays

/// `(event name, payload)` of every event of an Anthropic stream; panics on an
/// event that is not `event: X\ndata: <json>` with `type == X`, which is what
/// the Anthropic SDKs need to dispatch it.
fn anthropic_events(sse: &str) -> Vec<(String, Value)> {
    sse.split_terminator("\n\n")
        .map(|ev| {
            let (head, data) = ev.split_once('\n').expect("event line then data line");
            let name = head.strip_prefix("event: ").expect("event line first");
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").expect("data line"))
                .expect("data is one line of JSON");
            assert_eq!(
                data["type"], name,
                "the payload's type repeats the event name"
            );
            (name.to_string(), data)
        })
        .collect()
}

/// The JSON payloads of an OpenAI-style stream before its `[DONE]`.
fn chunks_until_done(sse: &str) -> Vec<Value> {
    let payloads = data_payloads(sse);
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"), "{sse}");
    payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).expect("chunk is JSON"))
        .collect()
}

async fn stream_of(up: &MockUpstream, reply: Reply) -> String {
    up.push(reply);
    let (text, failed) = read_stream(post(up, &chat_body("m")).await).await;
    assert!(!failed, "the stream ends cleanly");
    text
}

/// The concatenation of one content block's deltas of `kind` (`text`,
/// `partial_json`, `thinking`).
fn joined(events: &[(String, Value)], index: u64, kind: &str) -> String {
    events
        .iter()
        .filter(|(n, d)| n == "content_block_delta" && d["index"] == index)
        .filter_map(|(_, d)| d["delta"][kind].as_str())
        .collect()
}

#[tokio::test]
async fn anthropic_stream_samples_are_valid_and_in_the_documented_order() {
    let up = MockUpstream::start().await;

    let hello = stream_of(&up, wire::anthropic_hello_stream()).await;
    assert!(hello.contains("\"stop_sequence\":null}, \"usage\": {\"output_tokens\": 15}}"));
    let events = anthropic_events(&hello);
    assert_eq!(joined(&events, 0, "text"), "Hello!");
    assert_eq!(events.last().unwrap().0, "message_stop");

    let doc = anthropic_events(&stream_of(&up, wire::anthropic_doc_tool_use_stream()).await);
    assert_eq!(
        joined(&doc, 0, "text"),
        "Okay, let's check the weather for San Francisco, CA:"
    );
    let args: Value = serde_json::from_str(&joined(&doc, 1, "partial_json")).unwrap();
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
    let start = doc
        .iter()
        .find(|(n, d)| n == "content_block_start" && d["index"] == 1)
        .unwrap();
    assert_eq!(
        start.1["content_block"],
        json!({"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}})
    );
    let first_piece = doc
        .iter()
        .find(|(n, d)| n == "content_block_delta" && d["index"] == 1)
        .unwrap();
    assert_eq!(
        first_piece.1["delta"]["partial_json"], "",
        "the docs' first piece is empty"
    );
    let delta = &doc[doc.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 89);

    let thinking = "I should look the weather up.";
    let stream = wire::anthropic_thinking_tool_use_stream(
        thinking,
        "EqQBsig",
        "toolu_9",
        "get_weather",
        &["{\"ci", "ty\": \"Paris\"}"],
    );
    let events = anthropic_events(&stream_of(&up, stream).await);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..2], ["message_start", "content_block_start"]);
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "thinking", "thinking": ""})
    );
    assert_eq!(joined(&events, 0, "thinking"), thinking);
    // The signature is the thinking block's last delta, right before its stop.
    let stop0 = events
        .iter()
        .position(|(n, d)| n == "content_block_stop" && d["index"] == 0)
        .unwrap();
    assert_eq!(
        events[stop0 - 1].1["delta"],
        json!({"type": "signature_delta", "signature": "EqQBsig"})
    );
    assert_eq!(joined(&events, 1, "partial_json"), "{\"city\": \"Paris\"}");
    assert_eq!(names[names.len() - 2..], ["message_delta", "message_stop"]);

    let failed = anthropic_events(&stream_of(&up, wire::anthropic_error_event_stream()).await);
    let names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["message_start", "ping", "error"]);
    assert_eq!(
        failed[2].1["error"],
        json!({"type": "overloaded_error", "message": "Overloaded"})
    );
}

#[tokio::test]
async fn anthropic_answer_and_error_samples_carry_their_shapes() {
    let up = MockUpstream::start().await;
    let get = |reply: Reply| {
        up.push(reply);
        async {
            let r = post(&up, &chat_body("m")).await;
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("JSON body"))
        }
    };

    let (status, v) = get(wire::anthropic_cached_usage_message()).await;
    assert_eq!(status, 200);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 2051);
    assert_eq!(v["usage"]["cache_creation_input_tokens"], 2051);
    assert_eq!(v["usage"]["input_tokens"], 2095);

    let (_, v) = get(wire::anthropic_thinking_tool_use_message(
        "The user wants to know the current weather in Paris.",
        wire::DOC_TOOL_SIGNATURE,
        "toolu_01CswdEQBMshySk6Y9DFKrfq",
        "get_weather",
        json!({"location": "Paris"}),
    ))
    .await;
    let types: Vec<&str> = v["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["thinking", "text", "tool_use"]);
    assert_eq!(v["content"][0]["signature"], wire::DOC_TOOL_SIGNATURE);
    assert_eq!(v["stop_reason"], "tool_use");

    let (_, v) = get(wire::anthropic_redacted_thinking_message()).await;
    assert_eq!(
        v["content"][1],
        json!({"type": "redacted_thinking", "data": wire::DOC_REDACTED_DATA})
    );

    let errors: Vec<(Reply, u16, &str, &str)> = vec![
        (wire::anthropic_invalid_request_400("max_tokens: Field required"), 400, "invalid_request_error", "max_tokens: Field required"),
        (wire::anthropic_authentication_401(), 401, "authentication_error", "invalid x-api-key"),
        (wire::anthropic_permission_403(), 403, "permission_error", "Permission denied"),
        (wire::anthropic_not_found_404("claude-nope"), 404, "not_found_error", "model: claude-nope"),
        (wire::anthropic_api_error_500(), 500, "api_error", "Internal server error"),
        (wire::anthropic_missing_thinking_400(3, "tool_use"), 400, "invalid_request_error", "messages.3.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`. When `thinking` is enabled"),
        (wire::anthropic_invalid_signature_400(1), 400, "invalid_request_error", "messages.1.content.0: Invalid `signature` in `thinking` block"),
    ];
    for (reply, want_status, kind, message) in errors {
        let (status, v) = get(reply).await;
        assert_eq!(status, want_status, "{v}");
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], kind);
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with(message),
            "{v}"
        );
    }
    let (status, v) = get(wire::anthropic_request_too_large_413()).await;
    assert_eq!(status, 413);
    assert!(
        v.get("type").is_none(),
        "Cloudflare's 413 has no top-level type: {v}"
    );
    assert_eq!(v["error"]["type"], "request_too_large");
}

#[tokio::test]
async fn reasoning_dialect_samples_carry_their_fields() {
    let up = MockUpstream::start().await;
    let id = "functions.get_weather:0";
    let args = "{\"city\": \"Paris\"}";

    up.push(wire::kimi_thinking_tool_call(
        "Need the weather.",
        id,
        "get_weather",
        args,
    ));
    let v: Value = post(&up, &chat_body("m")).await.json().await.unwrap();
    let message = &v["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], "Need the weather.");
    assert_eq!(message["tool_calls"][0]["id"], id);
    assert_eq!(message["tool_calls"][0]["function"]["arguments"], args);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");

    let stream =
        wire::kimi_thinking_tool_call_stream("Need the weather first.", id, "get_weather", args);
    let chunks = chunks_until_done(&stream_of(&up, stream).await);
    let delta = |c: &Value| c["choices"][0]["delta"].clone();
    let reasoning: String = chunks
        .iter()
        .filter_map(|c| delta(c)["reasoning_content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(reasoning, "Need the weather first.");
    let arguments: String = chunks
        .iter()
        .filter_map(|c| {
            delta(c)["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(arguments, args);
    assert_eq!(
        chunks
            .iter()
            .filter(|c| delta(c)["tool_calls"][0]["id"] == id)
            .count(),
        1
    );
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
    assert!(
        last["choices"][0]["usage"]["total_tokens"].is_u64(),
        "Kimi's usage sits in the choice"
    );

    for (reply, status, message) in [
        (wire::kimi_missing_reasoning_400(4), 400, "thinking is enabled but reasoning_content is missing in assistant tool call message at index 4"),
        (wire::kimi_tool_choice_400("required"), 400, "tool_choice 'required' is incompatible with thinking enabled"),
    ] {
        up.push(reply);
        let r = post(&up, &chat_body("m")).await;
        assert_eq!(r.status().as_u16(), status);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v, json!({"error": {"message": message, "type": "invalid_request_error"}}));
    }

    up.push(wire::openrouter_reasoning_details_message());
    let v: Value = post(&up, &chat_body("m")).await.json().await.unwrap();
    let details = v["choices"][0]["message"]["reasoning_details"]
        .as_array()
        .unwrap();
    let kinds: Vec<&str> = details
        .iter()
        .map(|d| d["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["reasoning.summary", "reasoning.text", "reasoning.encrypted"]
    );
    assert!(v["choices"][0]["message"]["reasoning"].is_string());

    let chunks =
        chunks_until_done(&stream_of(&up, wire::openrouter_reasoning_details_stream()).await);
    let kinds: Vec<Value> = chunks
        .iter()
        .flat_map(|c| {
            delta(c)["reasoning_details"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|d| d["type"].clone())
        .collect();
    assert_eq!(
        kinds,
        [json!("reasoning.text"), json!("reasoning.encrypted")]
    );
    let content: String = chunks
        .iter()
        .filter_map(|c| delta(c)["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(content, "Based on my analysis...");

    up.push(wire::reasoning_field_message("Think.", "Answer."));
    let v: Value = post(&up, &chat_body("m")).await.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["reasoning"], "Think.");
    assert!(v["choices"][0]["message"]
        .get("reasoning_content")
        .is_none());

    let chunks = chunks_until_done(
        &stream_of(
            &up,
            wire::reasoning_field_stream("We need an answer", "It is 4"),
        )
        .await,
    );
    let reasoning: String = chunks
        .iter()
        .filter_map(|c| delta(c)["reasoning"].as_str().map(str::to_string))
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| delta(c)["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        (reasoning.as_str(), content.as_str()),
        ("We need an answer", "It is 4")
    );
}

fn tool_call_turn(reasoning: Option<Value>) -> Value {
    let mut assistant = json!({"role": "assistant", "content": "", "tool_calls": [{"id": "functions.get_weather:0",
        "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]});
    if let Some(r) = reasoning {
        assistant["reasoning_content"] = r;
    }
    json!({"model": "kimi-k2.6", "messages": [
        {"role": "system", "content": "You are Kimi."},
        {"role": "user", "content": "Weather in Paris?"},
        assistant,
        {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "sunny"}
    ]})
}

#[tokio::test]
async fn require_reasoning_content_plays_kimi() {
    let up = MockUpstream::start().await;
    up.push(Reply::chat("scripted"));
    // Off by default: the lenient mock answers anything.
    assert_eq!(post(&up, &tool_call_turn(None)).await.status(), 200);

    up.require_reasoning_content();
    up.push(Reply::chat("scripted"));
    for missing in [None, Some(Value::Null)] {
        let r = post(&up, &tool_call_turn(missing)).await;
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v["error"]["message"],
            "thinking is enabled but reasoning_content is missing in assistant tool call message at index 2"
        );
    }
    assert_eq!(up.remaining(), 1, "a refusal does not use up the script");
    for present in [json!(""), json!("I should call get_weather.")] {
        let r = post(&up, &tool_call_turn(Some(present))).await;
        assert_eq!(r.status(), 200);
    }
    // Assistant turns without tool calls need no reasoning.
    let plain = json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                                     {"role": "user", "content": "bye"}]});
    assert_eq!(post(&up, &plain).await.status(), 200);

    let reqs = up.requests();
    assert_eq!(reqs.len(), 6, "refused requests are recorded too");
    assert!(reqs[1].body["messages"][2]
        .get("reasoning_content")
        .is_none());
}

fn thinking_turn(first: Option<Value>, thinking: bool) -> Value {
    let tool_use = json!({"type": "tool_use", "id": "toolu_01CswdEQBMshySk6Y9DFKrfq", "name": "get_weather",
                          "input": {"location": "Paris"}});
    let mut content: Vec<Value> = first.into_iter().collect();
    content.push(tool_use);
    let mut body = json!({"model": "claude-x", "max_tokens": 16000, "messages": [
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01CswdEQBMshySk6Y9DFKrfq",
                                      "content": "88F"}]}
    ]});
    if thinking {
        body["thinking"] = json!({"type": "enabled", "budget_tokens": 10000});
    }
    body
}

#[tokio::test]
async fn require_thinking_signatures_plays_anthropic() {
    let up = MockUpstream::start().await;
    up.set_default(Reply::anthropic_message("88F in Paris"));
    up.require_thinking_signatures();
    let signed =
        json!({"type": "thinking", "thinking": "Check it.", "signature": wire::DOC_TOOL_SIGNATURE});
    let text = json!({"type": "text", "text": "Let me check"});

    let refusals = [
        (thinking_turn(None, true), "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`."),
        (thinking_turn(Some(text.clone()), true), "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `text`."),
        (thinking_turn(Some(json!({"type": "thinking", "thinking": "x", "signature": ""})), true), "messages.1.content.0: Invalid `signature` in `thinking` block"),
        (thinking_turn(Some(json!({"type": "thinking", "thinking": "x"})), true), "messages.1.content.0: Invalid `signature` in `thinking` block"),
    ];
    for (body, message) in &refusals {
        let r = post(&up, body).await;
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with(message),
            "{v}"
        );
    }
    let passes = [
        thinking_turn(Some(signed.clone()), true),
        thinking_turn(
            Some(json!({"type": "redacted_thinking", "data": wire::DOC_REDACTED_DATA})),
            true,
        ),
        // Without thinking, tool turns need no thinking block.
        thinking_turn(None, false),
    ];
    for body in &passes {
        let r = post(&up, body).await;
        assert_eq!(r.status(), 200, "{body}");
    }
    // Only the last tool_use turn is judged: an older unsigned one passes.
    let mut older = thinking_turn(Some(signed), true);
    let mut unsigned = older["messages"][1].clone();
    unsigned["content"] = json!([unsigned["content"][1]]);
    let tail = older["messages"].as_array().unwrap()[1..].to_vec();
    let mut messages = vec![
        older["messages"][0].clone(),
        unsigned,
        older["messages"][2].clone(),
    ];
    messages.extend(tail);
    older["messages"] = json!(messages);
    assert_eq!(post(&up, &older).await.status(), 200, "{older}");

    assert_eq!(up.requests().len(), refusals.len() + passes.len() + 1);
}
