//! The Responses API over real HTTP, on a route whose upstream speaks Chat
//! Completions only: translation both ways, a function-tool round trip,
//! stored conversations across a restart, and one key's responses hidden
//! from another.

use serde_json::{json, Value};

use crate::support::mock_upstream::{MockUpstream, Reply};
use crate::support::proxy::{config_for, http, Proxy};

async fn create(proxy: &Proxy, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = http().post(proxy.url("/v1/responses")).json(&body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn get(proxy: &Proxy, key: &str, path: &str) -> (u16, Value) {
    let resp = http()
        .get(proxy.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn tool_call_reply() -> Reply {
    Reply::json(
        200,
        json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null, "tool_calls": [{"id": "call_w", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}}),
    )
}

#[tokio::test]
async fn a_function_tool_round_trip_on_a_chat_only_upstream() {
    let up = MockUpstream::start().await;
    up.push(tool_call_reply());
    up.push(Reply::chat("It is sunny in Paris."));
    let proxy = Proxy::start(&config_for(&[("up", &up.base_url())], "")).await;
    let tools = json!([{"type": "function", "name": "get_weather", "description": "Weather by city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);

    let (status, first) = create(
        &proxy,
        None,
        json!({"model": "main", "input": "Weather in Paris?", "instructions": "Use tools.",
            "tools": tools, "max_output_tokens": 100}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["model"], "main");
    let call = &first["output"][0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["call_id"], "call_w");
    assert_eq!(first["usage"]["input_tokens"], 20);
    let sent = &up.requests()[0].body;
    assert_eq!(sent["model"], "up-model");
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Use tools."})
    );
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");

    let (status, second) = create(
        &proxy,
        None,
        json!({"model": "main", "previous_response_id": first["id"], "tools": tools,
            "input": [{"type": "function_call_output", "call_id": "call_w", "output": "{\"sky\":\"sunny\"}"}]}),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        second["output"][0]["content"][0]["text"],
        "It is sunny in Paris."
    );
    assert_eq!(second["previous_response_id"], first["id"]);
    // The upstream saw the whole conversation as chat: question, tool call, result.
    let messages = up.requests()[1].body["messages"].clone();
    let roles: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool"], "{messages}");
    assert_eq!(messages[1]["tool_calls"][0]["id"], "call_w");
    assert_eq!(messages[2]["tool_call_id"], "call_w");
}

#[tokio::test]
async fn a_stored_conversation_survives_a_restart_and_stays_with_its_key() {
    let up = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("responses.db");
    let keys = format!(
        "[store]\npath = \"{}\"\n\n[[server.keys]]\nname = \"a\"\nkey_env = \"KEY_A\"\n\n\
         [[server.keys]]\nname = \"b\"\nkey_env = \"KEY_B\"\n",
        store.display()
    );
    let toml = config_for(&[("up", &up.base_url())], &keys);
    let env = [("KEY_A", "sk-a"), ("KEY_B", "sk-b")];

    let proxy = Proxy::start_with_env(&toml, &env).await;
    let (status, made) = create(
        &proxy,
        Some("sk-a"),
        json!({"model": "main", "input": "remember 42"}),
    )
    .await;
    assert_eq!(status, 200, "{made}");
    let id = made["id"].as_str().unwrap().to_owned();
    proxy.stop().await;

    let proxy = Proxy::start_with_env(&toml, &env).await;
    let (status, got) = get(&proxy, "sk-a", &format!("/v1/responses/{id}")).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got, made);
    let (status, items) = get(&proxy, "sk-a", &format!("/v1/responses/{id}/input_items")).await;
    assert_eq!(status, 200, "{items}");
    assert_eq!(items["data"][0]["content"][0]["text"], "remember 42");

    // Key b learns nothing, not even that the id exists.
    let (status, hidden) = get(&proxy, "sk-b", &format!("/v1/responses/{id}")).await;
    assert_eq!(
        (status, hidden["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let (status, refused) = create(
        &proxy,
        Some("sk-b"),
        json!({"model": "main", "input": "x", "previous_response_id": id}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(refused["error"]["code"], "previous_response_not_found");
    assert_eq!(refused["error"]["param"], "previous_response_id");

    // Continued across the restart: the upstream gets the earlier turn.
    let (status, _) = create(
        &proxy,
        Some("sk-a"),
        json!({"model": "main", "input": "what number?", "previous_response_id": id}),
    )
    .await;
    assert_eq!(status, 200);
    let messages = up.requests().last().unwrap().body["messages"].clone();
    assert_eq!(messages[0]["content"], "remember 42", "{messages}");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[2]["content"], "what number?");

    let deleted = http()
        .delete(proxy.url(&format!("/v1/responses/{id}")))
        .bearer_auth("sk-a")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let body: Value = deleted.json().await.unwrap();
    assert_eq!(
        body,
        json!({"id": id, "object": "response", "deleted": true})
    );
    assert_eq!(
        get(&proxy, "sk-a", &format!("/v1/responses/{id}")).await.0,
        404
    );
}

#[tokio::test]
async fn store_false_keeps_nothing_and_bad_input_names_the_field() {
    let up = MockUpstream::start().await;
    let proxy = Proxy::start(&config_for(&[("up", &up.base_url())], "")).await;
    let (status, made) = create(
        &proxy,
        None,
        json!({"model": "main", "input": "x", "store": false}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(made["store"], false);
    let id = made["id"].as_str().unwrap();
    assert_eq!(
        get(&proxy, "any", &format!("/v1/responses/{id}")).await.0,
        404
    );

    for (body, param) in [
        (json!({"model": "main"}), "input"),
        (json!({"input": "x"}), "model"),
        (
            json!({"model": "main", "input": [{"type": "item_reference", "id": "i"}]}),
            "input",
        ),
        (
            json!({"model": "main", "input": "x", "tools": [{"type": "file_search"}]}),
            "tools",
        ),
    ] {
        let (status, err) = create(&proxy, None, body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(err["error"]["param"], param, "{body}: {err}");
    }
    let (status, err) = create(&proxy, None, json!({"model": "nope", "input": "x"})).await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (404, json!("model_not_found"))
    );
    // Nothing above reached the upstream but the one stored=false request.
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn a_store_that_fails_at_run_time_still_answers_and_counts_the_loss() {
    let up = MockUpstream::start().await;
    up.push(Reply::chat("kept in mind"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("responses.db");
    let extra = format!("[store]\npath = \"{}\"\n", path.display());
    let proxy = Proxy::start(&config_for(&[("up", &up.base_url())], &extra)).await;
    // Someone breaks the file under the running proxy.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE responses")
        .unwrap();

    let (status, made) = create(&proxy, None, json!({"model": "main", "input": "x"})).await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(made["output"][0]["content"][0]["text"], "kept in mind");
    let failures = || {
        proxy
            .metrics()
            .lines()
            .find_map(|l| l.strip_prefix("hermes_store_write_failures_total "))
            .map(str::to_owned)
    };
    // The write is reported by a task of its own; give it a moment.
    for _ in 0..200 {
        if failures().as_deref() == Some("1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(failures().as_deref(), Some("1"), "{}", proxy.metrics());
}

/// The `(event, data)` pairs of a Responses stream, checking each event's
/// name matches its `type` and the sequence numbers count up from 0.
async fn events(resp: reqwest::Response) -> Vec<(String, Value)> {
    let text = resp.text().await.unwrap();
    let mut out = vec![];
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = None;
        let mut data = None;
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = Some(n.to_owned());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str::<Value>(d).unwrap());
            }
        }
        let (name, data) = (name.expect("an event name"), data.expect("data"));
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], out.len(), "{name}");
        out.push((name, data));
    }
    assert!(!text.contains("[DONE]"));
    out
}

async fn stream(proxy: &Proxy, body: Value) -> Vec<(String, Value)> {
    let resp = http()
        .post(proxy.url("/v1/responses"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    events(resp).await
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    crate::support::mock_upstream::data_event(&json!({"id": "c", "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))
}

#[tokio::test]
async fn a_stream_of_reasoning_text_and_usage_in_the_last_chunk() {
    let up = MockUpstream::start().await;
    // vLLM and OpenRouter say `reasoning`; Kimi puts usage in the last choice.
    up.push(Reply::sse(vec![
        chunk(json!({"role": "assistant", "reasoning": "Two "}), None),
        chunk(json!({"reasoning": "plus two."}), None),
        chunk(json!({"content": "It is "}), None),
        chunk(json!({"content": "4."}), None),
        crate::support::mock_upstream::data_event(&json!({"id": "c", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15, "cached_tokens": 2}}]})),
        "data: [DONE]\n\n".into(),
    ]));
    let proxy = Proxy::start(&config_for(&[("up", &up.base_url())], "")).await;
    let events = stream(
        &proxy,
        json!({"model": "main", "input": "2+2?", "stream": true}),
    )
    .await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(
        up.requests()[0].body["stream_options"]["include_usage"],
        true
    );
    let done = &events.last().unwrap().1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["model"], "main");
    assert_eq!(done["output"][0]["summary"][0]["text"], "Two plus two.");
    assert_eq!(done["output"][1]["content"][0]["text"], "It is 4.");
    assert_eq!(done["usage"]["input_tokens"], 9);
    assert_eq!(done["usage"]["input_tokens_details"]["cached_tokens"], 2);
    assert_eq!(done["usage"]["total_tokens"], 15);

    // The streamed response was stored whole, like a JSON one.
    let id = done["id"].as_str().unwrap();
    let mut stored = Value::Null;
    for _ in 0..50 {
        let (status, got) = get(&proxy, "k", &format!("/v1/responses/{id}")).await;
        if status == 200 {
            stored = got;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(&stored, done);
}

#[tokio::test]
async fn tool_call_arguments_stream_in_fragments_across_chunks() {
    let up = MockUpstream::start().await;
    up.push(Reply::sse(vec![
        chunk(json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": ""}}]}), None),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"ci"}}]}), None),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "ty\":\"Paris\"}"}}]}), None),
        chunk(json!({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
            "function": {"name": "get_time", "arguments": "{}"}}]}), None),
        chunk(json!({}), Some("tool_calls")),
        "data: [DONE]\n\n".into(),
    ]));
    let proxy = Proxy::start(&config_for(&[("up", &up.base_url())], "")).await;
    let events = stream(&proxy, json!({"model": "main", "input": "weather?", "stream": true,
        "tools": [{"type": "function", "name": "get_weather"}, {"type": "function", "name": "get_time"}]})).await;
    let deltas: Vec<&str> = events
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, ["{\"ci", "ty\":\"Paris\"}", "{}"]);
    let done = &events.last().unwrap().1["response"];
    assert_eq!(events.last().unwrap().0, "response.completed");
    assert_eq!(done["output"][0]["call_id"], "call_1");
    assert_eq!(done["output"][0]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(done["output"][1]["name"], "get_time");
}

#[tokio::test]
async fn an_upstream_that_breaks_mid_stream_ends_in_response_failed() {
    let up = MockUpstream::start().await;
    up.push(Reply::stream_text("one two three four five").cut_after(3));
    let proxy = Proxy::start(&config_for(&[("up", &up.base_url())], "")).await;
    let events = stream(
        &proxy,
        json!({"model": "main", "input": "count", "stream": true}),
    )
    .await;
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "response.failed");
    assert_eq!(data["response"]["status"], "failed");
    assert!(
        data["response"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("up"),
        "{data}"
    );
    // What had arrived was relayed before the failure.
    assert!(events
        .iter()
        .any(|(n, _)| n == "response.output_text.delta"));
}

#[tokio::test]
async fn the_real_kimi_and_openrouter_stream_samples() {
    use crate::support::mock_upstream::wire;
    let up = MockUpstream::start().await;
    up.push(wire::kimi_stream_usage_in_choice());
    up.push(Reply::sse(wire::openrouter_mid_stream_error_events()));
    let proxy = Proxy::start(&config_for(&[("up", &up.base_url())], "")).await;

    let kimi = stream(
        &proxy,
        json!({"model": "main", "input": "hi", "stream": true}),
    )
    .await;
    let (last, data) = kimi.last().unwrap();
    assert_eq!(last, "response.completed");
    let response = &data["response"];
    assert_eq!(
        response["output"][0]["content"][0]["text"],
        "Hello from Kimi"
    );
    assert_eq!(response["usage"]["input_tokens"], 10);
    assert_eq!(
        response["usage"]["input_tokens_details"]["cached_tokens"],
        4
    );

    // OpenRouter reports a failure mid-stream as a chunk with an `error`.
    let openrouter = stream(
        &proxy,
        json!({"model": "main", "input": "hi", "stream": true}),
    )
    .await;
    let (last, data) = openrouter.last().unwrap();
    assert_eq!(last, "response.failed");
    let message = data["response"]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Provider disconnected unexpectedly"),
        "{message}"
    );
    let text: String = openrouter
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello world");
}

#[tokio::test]
async fn odd_shapes_are_400s_never_a_crash() {
    let up = MockUpstream::start().await;
    let proxy = Proxy::start(&config_for(&[("up", &up.base_url())], "")).await;
    let odd = [
        json!({"model": "main", "input": [1, 2]}),
        json!({"model": "main", "input": ["text"]}),
        json!({"model": "main", "input": [null]}),
        json!({"model": "main", "input": {"role": "user"}}),
        json!({"model": "main", "input": [{"role": "user", "content": null}]}),
        json!({"model": "main", "input": [{"role": "user", "content": [1]}]}),
        json!({"model": "main", "input": [{"role": "user", "content": [{"type": "input_image"}]}]}),
        json!({"model": "main", "input": [{"type": "function_call", "name": 3}]}),
        json!({"model": "main", "input": [{"type": "function_call_output", "call_id": "c"}]}),
        json!({"model": "main", "input": "x", "tools": {"type": "function"}}),
        json!({"model": "main", "input": "x", "tools": [{"type": "function"}]}),
        json!({"model": "main", "input": "x", "tool_choice": {"type": "function"}}),
        json!({"model": "main", "input": "x", "instructions": 5}),
        json!({"model": "main", "input": "x", "previous_response_id": 5}),
        json!({"model": ["main"], "input": "x"}),
        json!([1, 2, 3]),
        json!("just a string"),
    ];
    for body in odd {
        let (status, err) = create(&proxy, None, body.clone()).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{err}"
        );
    }
    let garbage = http()
        .post(proxy.url("/v1/responses"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    assert_eq!(up.request_count(), 0);
}
