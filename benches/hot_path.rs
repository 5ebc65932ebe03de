//! Micro benchmarks of the request path, through the library's public API.
//!
//! `cargo bench --bench hot_path` (about 30 s). Each group is what one
//! proxied request or one streamed chunk pays inside the proxy, sockets
//! excluded; benches/load/ measures the whole thing over loopback.
//!
//! - `request/*`: body parse + checks, route resolution, model rewrite and
//!   re-serialization (what `provider::send` puts on the wire).
//! - `sse/*`: one upstream chunk read from the body, normalized and encoded
//!   for the client: a plain content delta (the common case, no JSON parse)
//!   and a chunk that carries usage (parsed and rewritten).
//! - `classify/*`: an upstream error reply reduced to kind, hint and the
//!   OpenAI shape.
//! - `compression/*`: a 300-message agent conversation (tool calls and
//!   results) compressed into an 8k window: tool outputs cleared and the
//!   middle summarized (the summarizer answers at once, so this is the
//!   proxy's own cost: token counting, splitting, rebuilding), with the
//!   summary freshly written and reused from the cache.
//! - `anthropic/*`: the Messages dialect both ways beside the OpenAI path on
//!   the same agent exchange, per request, per answer, per streamed chunk
//!   and per whole stream (inputs and loop bodies in `anthropic/mod.rs`,
//!   shared with the callgrind driver `anthropic_count`).

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};

mod anthropic;

use hermes_proxy::body;
use hermes_proxy::config::{self, Config};
use hermes_proxy::provider::classify::{classify, error_in_body};
use hermes_proxy::provider::normalize_event;
use hermes_proxy::route;
use hermes_proxy::store::embedded::Embedded;
use hermes_proxy::store::{ResponseStore, StoredResponse};
use hermes_proxy::upstream::Client;
use hermes_proxy::wire::chat::parse_request;
use hermes_proxy::wire::chat::Endpoint;
use hermes_proxy::wire::responses;
use hermes_proxy::wire::sse::{SseEvent, SseReader};
use hermes_proxy::wire::usage;

const ROUTES: &str = r#"
[server]
listen = "127.0.0.1:8080"

[providers.up]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"

[providers.demo]
kind = "mock"

[routes.bench]
targets = [
  { provider = "up", model = "gpt-4o-mini" },
  { provider = "demo", model = "demo" },
]
"#;

fn config() -> Config {
    config::parse(ROUTES, "bench.toml", &|_| None).expect("bench config parses")
}

/// A chat request as SDKs send it: a system prompt and a few turns.
fn chat_body(turns: usize) -> Vec<u8> {
    let mut messages = vec![
        json!({"role": "system", "content": "You are a helpful assistant. Answer briefly and precisely."}),
    ];
    for i in 0..turns {
        messages.push(json!({"role": "user", "content": format!("Question {i}: what is the capital of France, and why is it famous?")}));
        messages.push(json!({"role": "assistant", "content": "Paris. It is famous for the Eiffel Tower, the Louvre and its cafés."}));
    }
    messages.push(json!({"role": "user", "content": "Thanks! One more: and of Italy?"}));
    serde_json::to_vec(&json!({
        "model": "bench",
        "messages": messages,
        "temperature": 0.2,
        "max_tokens": 256,
        "stream": false,
    }))
    .unwrap()
}

fn request(c: &mut Criterion) {
    let config = config();
    let routes = route::Routes::new(&config, &Client::new(Duration::from_secs(1)));
    let mut g = c.benchmark_group("request");
    g.bench_function("route_resolve", |b| {
        b.iter(|| black_box(routes.resolve(black_box("bench")).unwrap()))
    });
    for turns in [1usize, 20] {
        let bytes = bytes::Bytes::from(chat_body(turns));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format!("parse_route_serialize/{}B", bytes.len()), |b| {
            b.iter(|| {
                let mut body = parse_request(black_box(bytes.clone()), Endpoint::Chat).unwrap();
                let model = body.model().to_owned();
                let resolved = routes.resolve(&model).unwrap();
                let target = &resolved.targets[0];
                body.set_model(&target.model);
                black_box(body.to_vec())
            })
        });
    }
    g.finish();
}

const CONTENT_CHUNK: &str = r#"{"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-mini","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{"content":" the"},"logprobs":null,"finish_reason":null}]}"#;
const USAGE_CHUNK: &str = r#"{"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1730000000,"model":"kimi-k2.6","choices":[{"index":0,"delta":{},"finish_reason":"stop","usage":{"prompt_tokens":19,"completion_tokens":13,"total_tokens":32,"cached_tokens":10}}]}"#;

/// An upstream SSE body of `n` content chunks, then usage and `[DONE]`.
fn sse_body(n: usize) -> Bytes {
    let mut out = String::new();
    for _ in 0..n {
        out.push_str("data: ");
        out.push_str(CONTENT_CHUNK);
        out.push_str("\n\n");
    }
    out.push_str("data: ");
    out.push_str(USAGE_CHUNK);
    out.push_str("\n\ndata: [DONE]\n\n");
    Bytes::from(out)
}

fn sse(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("sse");
    const N: usize = 100;
    let upstream = sse_body(N);
    g.throughput(Throughput::Elements(N as u64 + 2));
    // Read + normalize + encode every event of a 100-chunk stream, as the
    // relay does; reported per event.
    g.bench_function("relay_stream_100_chunks", |b| {
        b.iter_batched(
            || SseReader::new(body::full(upstream.clone()), 8 << 20),
            |mut reader| {
                rt.block_on(async {
                    let mut out = 0usize;
                    while let Some(event) = reader.next().await.unwrap() {
                        if let SseEvent::Data { data, .. } = event {
                            if data == "[DONE]" {
                                break;
                            }
                            let (bytes, _usage) = normalize_event(&data).unwrap();
                            out += bytes.len();
                        }
                    }
                    black_box(out)
                })
            },
            BatchSize::SmallInput,
        )
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("normalize_content_chunk", |b| {
        b.iter(|| black_box(normalize_event(black_box(CONTENT_CHUNK)).unwrap()))
    });
    g.bench_function("normalize_usage_chunk", |b| {
        b.iter(|| black_box(normalize_event(black_box(USAGE_CHUNK)).unwrap()))
    });
    g.finish();
}

const OPENAI_429: &str = r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Used 29937, Requested 385. Please try again in 644ms.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;
const OPENROUTER_429: &str = r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"z-ai/glm-5.3-flash is temporarily rate-limited upstream. Please retry shortly","provider_name":"BaseTen"}}}"#;
const CONTEXT_400: &str = r#"{"error":{"message":"This model's maximum context length is 4097 tokens. However, your messages resulted in 4294 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;

fn classification(c: &mut Criterion) {
    let now = SystemTime::now();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(
        "x-ratelimit-remaining-requests",
        HeaderValue::from_static("0"),
    );
    headers.insert("x-ratelimit-reset-requests", HeaderValue::from_static("1s"));
    let mut g = c.benchmark_group("classify");
    for (name, status, body) in [
        ("openai_429", StatusCode::TOO_MANY_REQUESTS, OPENAI_429),
        (
            "openrouter_429",
            StatusCode::TOO_MANY_REQUESTS,
            OPENROUTER_429,
        ),
        ("context_length_400", StatusCode::BAD_REQUEST, CONTEXT_400),
        (
            "html_502",
            StatusCode::BAD_GATEWAY,
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(classify(status, &headers, black_box(body.as_bytes()), now)))
        });
    }
    let in_body: Value = serde_json::from_str(OPENROUTER_429).unwrap();
    g.bench_function("error_in_200_body", |b| {
        b.iter(|| black_box(error_in_body(black_box(&in_body), &headers, now)))
    });
    g.finish();
}

/// Answers at once, remembering what it wrote: the proxy's own cost only.
struct InstantSummarizer(std::collections::HashMap<u64, String>, bool);

impl hermes_proxy::pipeline::compress::Summarizer for InstantSummarizer {
    fn cached(&self, key: u64) -> Option<String> {
        self.0.get(&key).cloned()
    }
    async fn summarize(
        &mut self,
        middle: Vec<Value>,
        key: u64,
        _limit: u32,
    ) -> Result<String, String> {
        let text = format!(
            "Goal: port the parser. {} messages summarized.",
            middle.len()
        );
        if self.1 {
            self.0.insert(key, text.clone());
        }
        Ok(text)
    }
}

fn agent_conversation(n: usize) -> Vec<Value> {
    let mut m = vec![
        json!({"role": "system", "content": "You are a meticulous coding agent."}),
        json!({"role": "user", "content": "Port the parser to the new AST."}),
    ];
    let mut i = 0;
    while m.len() < n - 5 {
        m.push(json!({"role": "user", "content": format!("Step {i}: go on. {}", "context ".repeat(30))}));
        m.push(json!({"role": "assistant", "content": null, "tool_calls": [{"id": format!("call_{i}"), "type": "function",
            "function": {"name": "read_file", "arguments": format!("{{\"path\": \"src/file_{i}.rs\"}}")}}]}));
        m.push(json!({"role": "tool", "tool_call_id": format!("call_{i}"), "content": "fn parse() { todo }\n".repeat(60)}));
        m.push(
            json!({"role": "assistant", "content": format!("Read file {i}; it needs changes.")}),
        );
        i += 1;
    }
    m.push(json!({"role": "user", "content": "Now summarize what changed."}));
    m
}

fn compression(c: &mut Criterion) {
    use hermes_proxy::pipeline::compress::{compress, Settings};
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let conversation = agent_conversation(300);
    let body: serde_json::Map<String, Value> = json!({"model": "m", "messages": conversation})
        .as_object()
        .unwrap()
        .clone();
    hermes_proxy::pipeline::compress::count(&conversation); // load the tokenizer outside the measurement
    let settings = Settings::default();
    let mut g = c.benchmark_group("compression");
    g.bench_function("300_messages_summarized", |b| {
        b.iter_batched(
            || body.clone(),
            |mut body| {
                let mut s = InstantSummarizer(Default::default(), false);
                rt.block_on(compress(&mut body, 8192, &settings, &mut s))
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    let mut warm = InstantSummarizer(Default::default(), true);
    rt.block_on(compress(&mut body.clone(), 8192, &settings, &mut warm))
        .unwrap();
    g.bench_function("300_messages_cached_summary", |b| {
        b.iter_batched(
            || body.clone(),
            |mut body| {
                rt.block_on(compress(&mut body, 8192, &settings, &mut warm))
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A chat completion as an upstream answers one, usage included.
const COMPLETION: &str = r#"{"id":"chatcmpl-AbC123","object":"chat.completion","created":1730000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Rome. It is famous for the Colosseum, the Vatican and its food.","refusal":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":412,"completion_tokens":16,"total_tokens":428,"prompt_tokens_details":{"cached_tokens":384}}}"#;

/// The same conversation as `chat_body`, as a Responses request.
fn responses_body(turns: usize) -> Vec<u8> {
    let chat: Value = serde_json::from_slice(&chat_body(turns)).unwrap();
    let mut input: Vec<Value> = chat["messages"].as_array().unwrap()[1..].to_vec();
    for item in &mut input {
        item["type"] = "message".into();
    }
    serde_json::to_vec(
        &json!({"model": "bench", "instructions": chat["messages"][0]["content"],
        "input": input, "temperature": 0.2, "max_output_tokens": 256}),
    )
    .unwrap()
}

/// What a Responses request costs the proxy beside a chat request, on the
/// same 20-turn conversation: chat is parse + route + serialize (its answer
/// goes back as it came); Responses adds translating in, translating the
/// answer out, and (`_stored`) writing it to the embedded store.
fn responses(c: &mut Criterion) {
    let config = config();
    let routes = route::Routes::new(&config, &Client::new(Duration::from_secs(1)));
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(&hermes_proxy::config::Store {
        path: dir.path().join("bench.db").display().to_string(),
        max_responses: 10_000,
        ttl: Duration::from_secs(3600),
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let chat_bytes = bytes::Bytes::from(chat_body(20));
    let responses_bytes = responses_body(20);
    let mut g = c.benchmark_group("responses");
    g.bench_function("chat_in", |b| {
        b.iter(|| {
            let mut body = parse_request(black_box(chat_bytes.clone()), Endpoint::Chat).unwrap();
            let model = body.model().to_owned();
            let target = &routes.resolve(&model).unwrap().targets[0];
            body.set_model(&target.model);
            black_box(body.to_vec())
        })
    });
    let translate = || {
        let request = responses::Request::parse(black_box(&responses_bytes)).unwrap();
        let mut body = request.to_chat(&[]).unwrap();
        let target = &routes.resolve("bench").unwrap().targets[0];
        body.insert("model".into(), Value::String(target.model.clone()));
        black_box(serde_json::to_vec(&body).unwrap());
        let mut completion: Value = serde_json::from_str(COMPLETION).unwrap();
        usage::completion(&mut completion);
        let meta = responses::Meta {
            id: "resp_bench",
            created_at: 1_730_000_000,
            request: &request,
        };
        let response = responses::from_chat(&completion, &meta).to_string();
        (request.stored_input(&[]), black_box(response))
    };
    g.bench_function("responses_in_out", |b| b.iter(translate));
    let mut n = 0u64;
    g.bench_function("responses_in_out_stored", |b| {
        b.iter(|| {
            let (input, response) = translate();
            n += 1;
            let stored = StoredResponse {
                id: format!("resp_{n}"),
                owner: String::new(),
                created_at: 1_730_000_000,
                input,
                response,
            };
            rt.block_on(store.put(stored)).unwrap();
        })
    });
    g.finish();
}

fn anthropic(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let inputs = anthropic::Inputs::new();
    let i = &inputs;
    let mut g = c.benchmark_group("anthropic");
    g.throughput(Throughput::Elements(1));
    g.bench_function("openai/chat_in", |b| b.iter(|| black_box(i.chat_in())));
    g.bench_function("anthropic/to_upstream", |b| {
        b.iter(|| black_box(i.to_upstream()))
    });
    g.bench_function("anthropic/ingress_in", |b| {
        b.iter(|| black_box(i.ingress_in()))
    });
    g.bench_function("anthropic/passthrough", |b| {
        b.iter(|| black_box(i.passthrough()))
    });
    g.bench_function("openai/answer", |b| b.iter(|| black_box(i.openai_answer())));
    g.bench_function("anthropic/upstream_answer", |b| {
        b.iter(|| black_box(i.upstream_answer()))
    });
    g.bench_function("anthropic/ingress_answer", |b| {
        b.iter(|| black_box(i.ingress_answer()))
    });
    g.bench_function("openai/normalize_chunk", |b| {
        b.iter(|| black_box(i.normalize_chunk()))
    });
    g.bench_function("openai/normalize_chunk_usage_null", |b| {
        b.iter(|| black_box(i.normalize_chunk_usage_null()))
    });
    // The translators keep per-stream state; a text delta mid-block leaves
    // it as it found it, so one primed translator serves every iteration.
    let mut chunks = i.chat_chunks();
    g.bench_function("anthropic/upstream_chunk", |b| {
        b.iter(|| black_box(i.upstream_chunk(&mut chunks)))
    });
    let mut events = i.messages_events();
    g.bench_function("anthropic/ingress_chunk", |b| {
        b.iter(|| black_box(i.ingress_chunk(&mut events)))
    });
    for (name, stream, run) in [
        ("openai/stream", &i.chat_stream, 0),
        ("anthropic/upstream_stream", &i.anthropic_stream, 1),
        ("anthropic/ingress_stream", &i.chat_stream, 2),
    ] {
        let n = anthropic::Inputs::stream_events(stream);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{name}_{n}_events"), |b| {
            b.iter(|| {
                black_box(rt.block_on(async {
                    match run {
                        0 => i.openai_stream().await,
                        1 => i.upstream_stream().await,
                        _ => i.ingress_stream().await,
                    }
                }))
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = request, sse, classification, compression, responses, anthropic
}
criterion_main!(benches);
