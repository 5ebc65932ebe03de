//! Properties over what peers send, on stable Rust (proptest): whatever the
//! bytes, the SSE reader, the chat request parser, the Messages dialect (both
//! ways), the error classifier and the config loader return an answer or an
//! error, never a panic, and the SSE reader holds no more than its bound. Case counts stay modest: these
//! run with the rest of the suite.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use hermes_proxy::body::{Body, BoxError};
use hermes_proxy::config;
use hermes_proxy::provider::classify;
use hermes_proxy::wire::chat::{parse_request, Endpoint};
use hermes_proxy::wire::sse::SseReader;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// `chunks` as the frames of one body.
fn body(chunks: Vec<Vec<u8>>) -> Body {
    let frames =
        futures_util::stream::iter(chunks).map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from(c))));
    BodyExt::boxed(StreamBody::new(frames))
}

/// Bytes that look like SSE often enough to reach every branch.
fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"event: x\n".to_vec()),
        Just(b": ping\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"[DONE]".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|p| p.concat())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn the_sse_reader_never_panics_and_stays_within_its_bound(
        bytes in sse_bytes(),
        cuts in proptest::collection::vec(0usize..2048, 0..8),
        limit in 1usize..256,
    ) {
        // The same bytes split at arbitrary points: frames must not matter.
        let mut chunks = vec![];
        let mut rest = &bytes[..];
        for cut in cuts {
            let (head, tail) = rest.split_at(cut.min(rest.len()));
            chunks.push(head.to_vec());
            rest = tail;
        }
        chunks.push(rest.to_vec());
        let mut reader = SseReader::new(body(chunks), limit);
        runtime().block_on(async {
            for _ in 0..10_000 {
                match reader.next().await {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        });
        prop_assert!(reader.buffered() <= limit, "{} > {limit}", reader.buffered());
    }

    #[test]
    fn the_chat_request_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for endpoint in [Endpoint::Chat, Endpoint::Embeddings] {
            let _ = parse_request(Bytes::copy_from_slice(&bytes), endpoint);
        }
    }

    #[test]
    fn the_chat_request_parser_never_panics_on_json(json in json_value(3)) {
        let bytes = serde_json::to_vec(&json).unwrap();
        let _ = parse_request(bytes.into(), Endpoint::Chat);
        let mut request = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        request["messages"][0] = json.clone();
        let _ = parse_request(serde_json::to_vec(&request).unwrap().into(), Endpoint::Chat);
        request["stream_options"] = json;
        let _ = parse_request(serde_json::to_vec(&request).unwrap().into(), Endpoint::Chat);
    }

    /// The parser builds no tree, yet accepts only what a tree parse accepts,
    /// and what it sends on is that tree with the model replaced.
    #[test]
    fn the_chat_request_parser_accepts_what_a_tree_parse_accepts(
        json in json_value(3),
        at in any::<usize>(),
        byte in prop_oneof![Just(b'"'), Just(b'\\'), Just(b'e'), Just(b'}'), Just(0xff_u8), any::<u8>()],
    ) {
        let request = serde_json::json!({"model": "m", "x": json, "messages": [{"role": "user", "content": "x"}]});
        let mut bytes = serde_json::to_vec(&request).unwrap();
        // One byte changed: near-valid JSON, the hard cases.
        let at = at % bytes.len();
        bytes[at] = byte;
        let tree = serde_json::from_slice::<serde_json::Value>(&bytes);
        let Ok(mut body) = parse_request(bytes.into(), Endpoint::Chat) else {
            return Ok(());
        };
        let Ok(serde_json::Value::Object(mut tree)) = tree else {
            panic!("accepted what a tree parse refuses");
        };
        body.set_model("target");
        tree.insert("model".into(), "target".into());
        let sent: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&body.to_vec()).unwrap();
        prop_assert_eq!(&sent, &tree);
        prop_assert_eq!(body.tree(), &tree);
    }

    #[test]
    fn the_error_classifier_never_panics(
        status in 100u16..1000,
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            json_value(3).prop_map(|v| serde_json::to_vec(&v).unwrap()),
            json_value(2).prop_map(|v| serde_json::to_vec(&serde_json::json!({"error": v})).unwrap()),
        ],
        hints in proptest::collection::vec((hint_name(), hint_value()), 0..4),
        now_secs in 0u64..(1u64 << 40),
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in hints {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        let now = UNIX_EPOCH + Duration::from_secs(now_secs);
        let status = StatusCode::from_u16(status).unwrap();
        let err = classify::classify(status, &headers, &body, now);
        let _ = err.summary();
        if let Ok(json) = serde_json::from_slice(&body) {
            let _ = classify::error_in_body(&json, &headers, now);
        }
        let _ = classify::busy_hint(&headers, SystemTime::now());
    }

    #[test]
    fn the_messages_dialect_never_panics_either_way(
        values in proptest::collection::vec(messages_json(3), 1..6),
        names in proptest::collection::vec(event_name(), 1..6),
    ) {
        use hermes_proxy::wire::encode::StreamEncoder;
        use hermes_proxy::wire::messages::{ingress, upstream};
        let mut chunks = upstream::ChatChunks::new();
        let mut events = ingress::MessagesEvents::new("m");
        for (value, name) in values.iter().zip(names.iter().cycle()) {
            let text = serde_json::to_string(value).unwrap();
            let mut request = serde_json::json!({"model": "m", "max_tokens": 5, "messages": [value]});
            let _ = ingress::parse(&serde_json::to_vec(&request).unwrap());
            let _ = ingress::parse(text.as_bytes());
            request["tools"] = value.clone();
            let _ = ingress::parse_count(&serde_json::to_vec(&request).unwrap());
            if let Some(map) = value.as_object() {
                let _ = upstream::request(map);
            }
            let chat = serde_json::json!({"model": "m", "messages": [value], "tools": value, "tool_choice": value});
            let _ = upstream::request(chat.as_object().unwrap());
            let _ = upstream::answer(value);
            let _ = ingress::answer(value, "m");
            let _ = chunks.event(Some(name), &text);
            let _ = events.encode(hermes_proxy::wire::sse::data(text.as_bytes()));
        }
        let _ = events.encode(Bytes::from_static(hermes_proxy::wire::sse::DONE));
        let _ = events.fail(&values[0]);
    }

    #[test]
    fn the_config_loader_never_panics(text in toml_text()) {
        let _ = config::parse(&text, "fuzz.toml", &|_| Some("value".into()));
    }
}

fn event_name() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("message_start"),
        Just("content_block_start"),
        Just("content_block_delta"),
        Just("content_block_stop"),
        Just("message_delta"),
        Just("message_stop"),
        Just("ping"),
        Just("error"),
    ]
}

/// JSON shaped like Messages and chat payloads often enough to go deep.
fn messages_json(depth: u32) -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![Just(0i64), Just(1), Just(-1), Just(i64::MAX), any::<i64>()]
            .prop_map(Value::from),
        prop_oneof![
            Just("text"),
            Just("tool_use"),
            Just("tool_result"),
            Just("thinking"),
            Just("redacted_thinking"),
            Just("image"),
            Just("base64"),
            Just("url"),
            Just("text_delta"),
            Just("input_json_delta"),
            Just("thinking_delta"),
            Just("signature_delta"),
            Just("assistant"),
            Just("user"),
            Just("tool"),
            Just("system"),
            Just("end_turn"),
            Just("tool_use"),
            Just("{\"a\":"),
            Just("data:image/png;base64,AAAA"),
            Just("auto"),
            Just("any"),
            Just("required"),
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(depth, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("role".to_owned()),
                    Just("content".to_owned()),
                    Just("index".to_owned()),
                    Just("delta".to_owned()),
                    Just("text".to_owned()),
                    Just("thinking".to_owned()),
                    Just("signature".to_owned()),
                    Just("partial_json".to_owned()),
                    Just("content_block".to_owned()),
                    Just("stop_reason".to_owned()),
                    Just("usage".to_owned()),
                    Just("tool_use_id".to_owned()),
                    Just("input".to_owned()),
                    Just("id".to_owned()),
                    Just("name".to_owned()),
                    Just("source".to_owned()),
                    Just("choices".to_owned()),
                    Just("message".to_owned()),
                    Just("tool_calls".to_owned()),
                    Just("function".to_owned()),
                    Just("arguments".to_owned()),
                    Just("finish_reason".to_owned()),
                    Just("reasoning_content".to_owned()),
                    Just("thinking_blocks".to_owned()),
                    Just("error".to_owned()),
                    Just("input_schema".to_owned()),
                    Just("cache_control".to_owned()),
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_value(depth: u32) -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-z_ ]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("user"),
            Just("assistant"),
            Just("tool"),
            Just("system"),
            Just("rate_limit_exceeded"),
            Just("try again in 1m30s"),
            Just("Please retry after 18446744073709551615 seconds"),
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(depth, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("role".to_owned()),
                    Just("content".to_owned()),
                    Just("message".to_owned()),
                    Just("code".to_owned()),
                    Just("type".to_owned()),
                    Just("metadata".to_owned()),
                    Just("raw".to_owned()),
                    Just("tool_calls".to_owned()),
                    Just("include_usage".to_owned()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn hint_name() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("retry-after"),
        Just("retry-after-ms"),
        Just("x-ratelimit-remaining-requests"),
        Just("x-ratelimit-reset-requests"),
        Just("x-ratelimit-remaining-tokens"),
        Just("x-ratelimit-reset-tokens"),
        Just("anthropic-ratelimit-tokens-remaining"),
        Just("anthropic-ratelimit-tokens-reset"),
    ]
}

fn hint_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_owned()),
        Just("18446744073709551615".to_owned()),
        Just("99999999999999999999999999999999999999999".to_owned()),
        Just("18446744073709551615s".to_owned()),
        Just("Fri, 31 Dec 9999 23:59:59 GMT".to_owned()),
        Just("9999-12-31T23:59:59+23:59".to_owned()),
        "[0-9]{1,25}(\\.[0-9]{0,20})?(ns|us|ms|s|m|h){0,1}",
        "[ -~]{0,24}",
    ]
}

/// TOML-ish text: real sections and keys with arbitrary values, or noise.
fn toml_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("[server]".to_owned()),
        Just("[defaults]".to_owned()),
        Just("[providers.p]".to_owned()),
        Just("[routes.main]".to_owned()),
        Just("[[server.keys]]".to_owned()),
        Just("kind = \"openai\"".to_owned()),
        Just("base_url = \"http://127.0.0.1:1/v1\"".to_owned()),
        Just("targets = [{ provider = \"p\", model = \"m\" }]".to_owned()),
        (
            prop_oneof![
                Just("max_cooldown"),
                Just("cooldown"),
                Just("max_event_bytes"),
                Just("max_answer_bytes"),
                Just("request_timeout"),
                Just("max_attempts"),
                Just("listen"),
                Just("rpm"),
                Just("key_env"),
            ],
            prop_oneof![
                Just("\"1h\"".to_owned()),
                Just("\"18446744073709551615s\"".to_owned()),
                Just("\"99999999999y\"".to_owned()),
                Just("-1".to_owned()),
                Just("18446744073709551615".to_owned()),
                Just("9223372036854775807".to_owned()),
                "[ -~]{0,16}",
            ],
        )
            .prop_map(|(k, v)| format!("{k} = {v}")),
        "[ -~]{0,40}",
    ];
    proptest::collection::vec(line, 0..16).prop_map(|lines| lines.join("\n"))
}
