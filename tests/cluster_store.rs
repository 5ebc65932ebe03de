//! The store of replicas on a real `redis-server` (started here on a free
//! loopback port): the library's `SharedStore` and `Cluster` caches used
//! directly (owners, deletion, `max_responses`, `ttl`, prefixes, Redis
//! away), then real `hermes-proxy` processes sharing stored responses,
//! agent sessions, memory and the reasoning round trip, in front of
//! scripted mock upstreams whose request logs say what each replica sent.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hermes_proxy::cluster::store::SharedStore;
use hermes_proxy::cluster::Cluster;
use hermes_proxy::config;
use hermes_proxy::store::embedded::Embedded;
use hermes_proxy::store::{Kind, Page, ResponseStore};
use serde_json::{json, Value};
use support::cluster::{
    eventually, library_cluster, redis_available, unique_name, write_config, Redis, Replica,
};
use support::mock_upstream::{data_event, MockUpstream, Reply};
use support::proxy::{http, sse_data};
use support::stored::response;

const DAY: u64 = 24 * 3600;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---- The library against a real Redis ----

/// A replica's cluster handle on `url` under `prefix`.
fn cluster(url: &str, prefix: &str) -> Arc<Cluster> {
    cluster_within(url, prefix, Duration::from_millis(50))
}

/// The same with another `[cluster] timeout`.
fn cluster_within(url: &str, prefix: &str, timeout: Duration) -> Arc<Cluster> {
    library_cluster(url, prefix, timeout)
}

/// One replica's store: its own embedded file in `dir`, shared through
/// `cluster`.
fn store(
    cluster: &Arc<Cluster>,
    dir: &tempfile::TempDir,
    max_responses: u32,
    ttl: Duration,
) -> SharedStore {
    let settings = config::Store {
        path: dir
            .path()
            .join(format!("{}.db", unique_name()))
            .display()
            .to_string(),
        max_responses,
        ttl,
    };
    let local: Arc<dyn ResponseStore> = Arc::new(Embedded::open(&settings).unwrap());
    SharedStore::new(cluster.clone(), local, &settings)
}

/// An integer reply of `Redis::command` (`:42\r\n`).
fn integer(reply: &str) -> i64 {
    reply
        .trim()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an integer reply: {reply:?}"))
}

#[tokio::test]
async fn a_response_put_through_one_replica_is_read_through_another_by_its_owner_only() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let a = store(
        &cluster(&redis.url(), "hermes"),
        &dir,
        100,
        Duration::from_secs(DAY),
    );
    let b = store(
        &cluster(&redis.url(), "hermes"),
        &dir,
        100,
        Duration::from_secs(DAY),
    );
    assert!(a.shared());
    let made = response("resp_1", "team-a", now());
    a.put(made.clone()).await.unwrap();

    assert_eq!(b.get("team-a", "resp_1").await.unwrap(), Some(made.clone()));
    assert_eq!(b.get("team-b", "resp_1").await.unwrap(), None);
    assert_eq!(b.get("team-a", "resp_2").await.unwrap(), None);
    let items = b
        .input_items("team-a", "resp_1", Page::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(items["first_id"], "resp_1_in2");
    assert!(b
        .input_items("team-b", "resp_1", Page::default())
        .await
        .unwrap()
        .is_none());

    // Another owner can neither delete it nor learn that it exists.
    assert!(!b.delete("team-b", "resp_1").await.unwrap());
    assert!(b.delete("team-a", "resp_1").await.unwrap());
    assert!(!b.delete("team-a", "resp_1").await.unwrap());
    // Deleted through B: A does not fall back to its own copy.
    assert_eq!(a.get("team-a", "resp_1").await.unwrap(), None);
    assert_eq!(b.get("team-a", "resp_1").await.unwrap(), None);
    assert!(!a.delete("team-a", "resp_1").await.unwrap());
}

#[tokio::test]
async fn redis_keeps_max_responses_oldest_first_and_forgets_them_ttl_after_they_were_made() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_secs(30 * DAY);
    let a = store(&cluster(&redis.url(), "hermes"), &dir, 3, ttl);
    let b = store(&cluster(&redis.url(), "hermes"), &dir, 3, ttl);
    let t = now();
    for i in 1..=5u64 {
        a.put(response(&format!("resp_{i}"), "k", t - 10 + i))
            .await
            .unwrap();
    }
    for (id, kept) in [
        ("resp_1", false),
        ("resp_2", false),
        ("resp_3", true),
        ("resp_4", true),
        ("resp_5", true),
    ] {
        assert_eq!(b.get("k", id).await.unwrap().is_some(), kept, "{id}");
    }
    assert_eq!(integer(&redis.command(&["ZCARD", "hermes:responses"])), 3);
    assert_eq!(
        integer(&redis.command(&["EXISTS", "hermes:response:resp_1"])),
        0
    );
    // Replacing one in place does not count as one more.
    a.put(response("resp_5", "k", t)).await.unwrap();
    assert!(b.get("k", "resp_3").await.unwrap().is_some());

    // Each expires ttl after it was made...
    let left = integer(&redis.command(&["TTL", "hermes:response:resp_4"]));
    let expected = (t - 6 + ttl.as_secs()) as i64 - now() as i64;
    assert!((expected - 5..=expected + 1).contains(&left), "{left}");
    // ... so one made longer ago than that is not kept at all, and the
    // next write drops it from the index.
    a.put(response("resp_old", "k", t - 31 * DAY))
        .await
        .unwrap();
    assert_eq!(b.get("k", "resp_old").await.unwrap(), None);
    a.put(response("resp_6", "k", t)).await.unwrap();
    let index = redis.command(&["ZRANGE", "hermes:responses", "0", "-1"]);
    assert!(!index.contains("resp_old"), "{index}");
    assert_eq!(integer(&redis.command(&["ZCARD", "hermes:responses"])), 3);
}

#[tokio::test]
async fn sessions_and_memory_are_shared_per_kind_and_owner_and_expire_after_ttl() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_secs(2 * DAY);
    let a = store(&cluster(&redis.url(), "hermes"), &dir, 100, ttl);
    let b = store(&cluster(&redis.url(), "hermes"), &dir, 100, ttl);
    a.save(Kind::Session, "team:a", "s1", "first".into())
        .await
        .unwrap();
    a.save(Kind::Memory, "team:a", "s1", "notes".into())
        .await
        .unwrap();
    let load = |kind, owner: &'static str| b.load(kind, owner, "s1");
    assert_eq!(
        load(Kind::Session, "team:a").await.unwrap(),
        Some("first".into())
    );
    assert_eq!(
        load(Kind::Memory, "team:a").await.unwrap(),
        Some("notes".into())
    );
    assert_eq!(load(Kind::Session, "team").await.unwrap(), None);
    // B replaces it; A reads B's.
    b.save(Kind::Session, "team:a", "s1", "second".into())
        .await
        .unwrap();
    assert_eq!(
        a.load(Kind::Session, "team:a", "s1").await.unwrap(),
        Some("second".into())
    );
    // The owner's colon is escaped in the key, which expires ttl after its
    // last write.
    let key = "hermes:record:session:team%3Aa:s1";
    let left = integer(&redis.command(&["TTL", key]));
    assert!(
        (2 * DAY as i64 - 5..=2 * DAY as i64).contains(&left),
        "{left}"
    );
}

#[tokio::test]
async fn without_redis_a_replica_keeps_and_reads_its_own_and_a_redis_miss_falls_back_to_it() {
    if !redis_available() {
        return;
    }
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_secs(DAY);
    // Slow is not down here: Redis may hold a write for a while.
    let a = store(
        &cluster_within(&redis.url(), "hermes", Duration::from_secs(2)),
        &dir,
        100,
        ttl,
    );
    let b = store(&cluster(&redis.url(), "hermes"), &dir, 100, ttl);

    // Read back while its Redis write is still held: Redis does not know
    // it yet, the replica's own store does.
    hold_writes(&redis, 300);
    let written = a.put(response("resp_early", "k", now()));
    assert!(a.get("k", "resp_early").await.unwrap().is_some());
    assert_eq!(b.get("k", "resp_early").await.unwrap(), None);
    written.await.unwrap();
    assert!(b.get("k", "resp_early").await.unwrap().is_some());

    redis.kill();
    let started = std::time::Instant::now();
    a.put(response("resp_alone", "k", now())).await.unwrap();
    a.save(Kind::Session, "k", "s", "kept here".into())
        .await
        .unwrap();
    assert!(a.get("k", "resp_alone").await.unwrap().is_some());
    assert_eq!(
        a.load(Kind::Session, "k", "s").await.unwrap(),
        Some("kept here".into())
    );
    assert_eq!(b.get("k", "resp_alone").await.unwrap(), None);
    assert!(a.delete("k", "resp_early").await.unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "waited on a Redis that is gone: {:?}",
        started.elapsed()
    );

    // Back, but empty: Redis does not know the id, A's own copy answers.
    redis.restart();
    eventually(Duration::from_secs(3), "redis back", || async {
        let made = response(&unique_name(), "k", now());
        a.put(made.clone()).await.unwrap();
        b.get("k", &made.id).await.unwrap().is_some()
    })
    .await;
    assert!(a.get("k", "resp_alone").await.unwrap().is_some());
    assert_eq!(
        a.load(Kind::Session, "k", "s").await.unwrap(),
        Some("kept here".into())
    );
}

#[tokio::test]
async fn two_prefixes_on_one_redis_see_nothing_of_each_other() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_secs(DAY);
    let blue = store(&cluster(&redis.url(), "blue"), &dir, 100, ttl);
    let green = store(&cluster(&redis.url(), "green"), &dir, 100, ttl);
    let also_blue = store(&cluster(&redis.url(), "blue"), &dir, 100, ttl);
    blue.put(response("resp_1", "k", now())).await.unwrap();
    blue.save(Kind::Memory, "k", "m", "blue notes".into())
        .await
        .unwrap();
    assert!(also_blue.get("k", "resp_1").await.unwrap().is_some());
    assert_eq!(green.get("k", "resp_1").await.unwrap(), None);
    assert_eq!(green.load(Kind::Memory, "k", "m").await.unwrap(), None);
    assert!(!green.delete("k", "resp_1").await.unwrap());
    let keys = redis.command(&["KEYS", "*"]);
    assert!(keys.contains("blue:response:resp_1"), "{keys}");
    assert!(!keys.contains("green:"), "{keys}");
}

#[tokio::test]
async fn a_value_one_replica_remembers_is_recalled_by_another() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let (a, b) = (
        cluster(&redis.url(), "hermes"),
        cluster(&redis.url(), "hermes"),
    );
    let other = cluster(&redis.url(), "other");
    a.remember(
        "summary",
        0xff,
        "the summary".into(),
        Duration::from_secs(3600),
    );
    a.add_member("learned", "[\"p\",\"m\"]".into(), Duration::from_secs(DAY));
    let keys = [0xff, 0x100];
    eventually(Duration::from_secs(2), "B recalls A's value", || async {
        b.recall("summary", &keys).await == Some(vec![Some("the summary".into()), None])
    })
    .await;
    eventually(Duration::from_secs(2), "B reads A's set", || async {
        b.members("learned").await == Some(vec!["[\"p\",\"m\"]".into()])
    })
    .await;
    assert_eq!(other.recall("summary", &keys).await, Some(vec![None, None]));
    let left = integer(&redis.command(&["TTL", "hermes:summary:00000000000000ff"]));
    assert!((3595..=3600).contains(&left), "{left}");
    let left = integer(&redis.command(&["TTL", "hermes:learned"]));
    assert!((DAY as i64 - 5..=DAY as i64).contains(&left), "{left}");
}

// ---- Replicas: real hermes-proxy processes sharing one Redis ----

const KEYS: &str = "[server]\n[[server.keys]]\nname = \"team\"\nkey_env = \"TEAM_KEY\"\n\
    [[server.keys]]\nname = \"other\"\nkey_env = \"OTHER_KEY\"\n";

/// A replica's routes.toml: route `main` over `upstream` (`route` appended
/// to the route), `[cluster]` on `HERMES_REDIS_URL` with `cluster` added,
/// the two keys, and `extra` last (`start_replica` gives each its own store).
fn replica_config(upstream: &str, route: &str, cluster: &str, extra: &str) -> String {
    format!(
        "[defaults]\nbackoff_base = \"1ms\"\nbackoff_max = \"2ms\"\n\n\
         [cluster]\nredis_url_env = \"HERMES_REDIS_URL\"\n{cluster}\n\
         [store]\npath = \"STORE_PATH\"\n\n\
         [providers.up]\nkind = \"openai\"\nbase_url = \"{upstream}\"\n\n\
         [routes.main]\ntargets = [{{ provider = \"up\", model = \"up-model\" }}]\n{route}\n\
         {KEYS}\n{extra}"
    )
}

/// A replica of `text`, with a store file of its own.
fn start_replica(dir: &std::path::Path, redis: &Redis, text: &str) -> Replica {
    let url = redis.url();
    let store = dir.join(format!("{}.db", unique_name()));
    let text = text.replace("STORE_PATH", &store.display().to_string());
    let path = write_config(dir, &format!("{}.toml", unique_name()), &text);
    Replica::start(
        &path,
        &[
            ("HERMES_REDIS_URL", &url),
            ("TEAM_KEY", "sk-team"),
            ("OTHER_KEY", "sk-other"),
        ],
    )
}

/// Two replicas of `text`, each sharing state through Redis already.
async fn two_replicas(dir: &std::path::Path, redis: &Redis, text: &str) -> (Replica, Replica) {
    let (a, b) = (
        start_replica(dir, redis, text),
        start_replica(dir, redis, text),
    );
    up_on(&a).await;
    up_on(&b).await;
    (a, b)
}

async fn up_on(replica: &Replica) {
    eventually(
        Duration::from_secs(3),
        "redis up on the replica",
        || async { replica.metric("hermes_cluster_redis_up").await == Some(1.0) },
    )
    .await;
}

async fn post(replica: &Replica, path: &str, key: &str, body: Value) -> (u16, Value) {
    post_to(replica.url(path), key, body).await
}

async fn post_to(url: String, key: &str, body: Value) -> (u16, Value) {
    let resp = http()
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

async fn get(replica: &Replica, path: &str, key: &str) -> (u16, Value) {
    let resp = http()
        .get(replica.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

/// Makes Redis hold every write for `ms` from now (reads go on): a write
/// the answer does not wait for is then still missing when the client
/// turns to another replica.
fn hold_writes(redis: &Redis, ms: u64) {
    let reply = redis.command(&["CLIENT", "PAUSE", &ms.to_string(), "WRITE"]);
    assert!(reply.starts_with("+OK"), "{reply}");
}

/// The message texts of an upstream request, in order.
fn texts(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

#[tokio::test]
async fn a_response_made_through_one_replica_is_read_and_continued_through_another() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let up = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A generous timeout, so that Redis holding a write is slow, not down.
    let text = replica_config(&up.base_url(), "", "timeout = \"2s\"", "");
    let (a, b) = two_replicas(dir.path(), &redis, &text).await;

    up.push(Reply::chat("Hello Ada."));
    hold_writes(&redis, 300);
    let (status, made) = post(
        &a,
        "/v1/responses",
        "sk-team",
        json!({"model": "main", "input": "My name is Ada."}),
    )
    .await;
    assert_eq!(status, 200, "{made}");
    let id = made["id"].as_str().unwrap().to_owned();

    // At once through B: found, for its owner only.
    let (status, got) = get(&b, &format!("/v1/responses/{id}"), "sk-team").await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got, made);
    let (status, hidden) = get(&b, &format!("/v1/responses/{id}"), "sk-other").await;
    assert_eq!(status, 404, "{hidden}");
    let (status, items) = get(&b, &format!("/v1/responses/{id}/input_items"), "sk-team").await;
    assert_eq!(status, 200, "{items}");
    assert_eq!(items["data"][0]["content"][0]["text"], "My name is Ada.");

    // Continued through B, streamed: B's upstream request holds A's turn.
    up.push(Reply::stream_text("You are Ada."));
    hold_writes(&redis, 300);
    let resp = http()
        .post(b.url("/v1/responses"))
        .bearer_auth("sk-team")
        .json(
            &json!({"model": "main", "input": "Who am I?", "previous_response_id": id,
            "stream": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = sse_data(resp).await;
    let done: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(done["type"], "response.completed", "{events:?}");
    let second = done["response"]["id"].as_str().unwrap().to_owned();
    let sent = up.requests();
    assert_eq!(
        texts(&sent[1].body),
        ["My name is Ada.", "Hello Ada.", "Who am I?"]
    );

    // ... and that streamed answer, continued at once through A.
    up.push(Reply::chat("Still Ada."));
    let (status, third) = post(
        &a,
        "/v1/responses",
        "sk-team",
        json!({"model": "main", "input": "Sure?", "previous_response_id": second}),
    )
    .await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(
        texts(&up.requests()[2].body),
        [
            "My name is Ada.",
            "Hello Ada.",
            "Who am I?",
            "You are Ada.",
            "Sure?"
        ]
    );
    // Another key cannot continue it anywhere.
    let (status, refused) = post(
        &b,
        "/v1/responses",
        "sk-other",
        json!({"model": "main", "input": "Me?", "previous_response_id": second}),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "previous_response_not_found");

    // Deleted through B: gone through A too, its own copy included.
    let resp = http()
        .delete(b.url(&format!("/v1/responses/{id}")))
        .bearer_auth("sk-team")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, _) = get(&a, &format!("/v1/responses/{id}"), "sk-team").await;
    assert_eq!(status, 404);
    assert_eq!(up.request_count(), 3);
}

/// An agent route over `workspace` with the default tools.
fn agent_route(workspace: &std::path::Path) -> (String, String) {
    (
        "agent = true\n".into(),
        format!("[agent]\nworkspace = \"{}\"\n", workspace.display()),
    )
}

/// A whole reply calling one tool, with its reasoning.
fn call(id: &str, name: &str, arguments: Value) -> Reply {
    Reply::json(
        200,
        json!({"id": "chatcmpl-a", "object": "chat.completion", "created": 1, "model": "up-model",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "", "reasoning_content": "I should look.",
                "tool_calls": [{"id": id, "type": "function",
                    "function": {"name": name, "arguments": arguments.to_string()}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}),
    )
}

/// The same, streamed.
fn streamed_call(id: &str, name: &str, arguments: Value) -> Reply {
    let chunk = |delta: Value, finish: Value| {
        data_event(
            &json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1,
            "model": "up-model", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    Reply::sse(vec![
        chunk(
            json!({"role": "assistant", "reasoning_content": "I should look."}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": id, "type": "function",
                "function": {"name": name, "arguments": arguments.to_string()}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
        "data: [DONE]\n\n".into(),
    ])
}

#[tokio::test]
async fn an_agent_session_and_its_memory_continue_on_the_other_replica() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let up = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("notes.md"), "ship it").unwrap();
    let (route, agent) = agent_route(ws.path());
    let text = replica_config(&up.base_url(), &route, "timeout = \"2s\"", &agent);
    let (a, b) = two_replicas(dir.path(), &redis, &text).await;
    let chat = |replica: &Replica, messages: Value, stream: bool| {
        http()
            .post(replica.url("/v1/chat/completions"))
            .bearer_auth("sk-team")
            .header("x-hermes-session-id", "s-1")
            .json(&json!({"model": "main", "messages": messages, "stream": stream}))
            .send()
    };

    // Through A, streamed: a tool step, then the answer. Redis holds the
    // session's write: the stream ends only once it has landed.
    up.push(streamed_call(
        "call_1",
        "read_file",
        json!({"path": "notes.md"}),
    ));
    up.push(Reply::stream_text("It says ship it."));
    hold_writes(&redis, 300);
    let resp = chat(
        &a,
        json!([{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "read notes.md"}]),
        true,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let events = sse_data(resp).await;
    assert_eq!(events.last().unwrap(), "[DONE]");

    // Through B at once, only the new message: the session is there. The
    // model notes something in memory on the way.
    up.push(call(
        "call_2",
        "memory",
        json!({"action": "add", "content": "prefers metric units"}),
    ));
    up.push(Reply::chat("Yes."));
    hold_writes(&redis, 300);
    let resp = chat(&b, json!([{"role": "user", "content": "sure?"}]), false)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = up.requests();
    assert_eq!(sent.len(), 4);
    let roles = |body: &Value| -> Vec<String> {
        body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        roles(&sent[2].body),
        ["system", "user", "assistant", "tool", "assistant", "user"]
    );
    let last = &sent[2].body["messages"];
    assert_eq!(last[3]["content"], "ship it");
    assert_eq!(last[4]["content"], "It says ship it.");

    // Back through A: the session holds B's turn, and the memory B wrote
    // (it is the key's, so another session has it too).
    up.push(Reply::chat("Still yes."));
    let resp = chat(&a, json!([{"role": "user", "content": "really?"}]), false)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = up.requests();
    assert_eq!(
        roles(&sent[4].body),
        [
            "system",
            "user",
            "assistant",
            "tool",
            "assistant",
            "user",
            "assistant",
            "tool",
            "assistant",
            "user"
        ]
    );
    let system = sent[4].body["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("prefers metric units"), "{system}");
    up.push(Reply::chat("Metric."));
    let resp = http()
        .post(a.url("/v1/chat/completions"))
        .bearer_auth("sk-team")
        .json(&json!({"model": "main", "messages": [{"role": "user", "content": "units?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let system = up.requests()[5].body["messages"][0]["content"].clone();
    assert!(
        system.as_str().unwrap().contains("prefers metric units"),
        "{system}"
    );
}

#[tokio::test]
async fn with_redis_killed_responses_are_still_stored_and_continued_on_the_same_replica() {
    if !redis_available() {
        return;
    }
    let mut redis = Redis::start();
    let up = MockUpstream::start().await;
    up.set_default(Reply::chat("Noted."));
    let dir = tempfile::tempdir().unwrap();
    let text = replica_config(&up.base_url(), "", "", "");
    let (a, b) = two_replicas(dir.path(), &redis, &text).await;
    let (status, before) = post(
        &a,
        "/v1/responses",
        "sk-team",
        json!({"model": "main", "input": "one"}),
    )
    .await;
    assert_eq!(status, 200, "{before}");

    redis.kill();
    let mut previous = before["id"].as_str().unwrap().to_owned();
    let mut failed = vec![];
    for turn in ["two", "three", "four"] {
        let (status, made) = post(
            &a,
            "/v1/responses",
            "sk-team",
            json!({"model": "main", "input": turn, "previous_response_id": previous}),
        )
        .await;
        if status != 200 {
            failed.push(format!("{status} {made}"));
            continue;
        }
        previous = made["id"].as_str().unwrap().to_owned();
        let (status, got) = get(&a, &format!("/v1/responses/{previous}"), "sk-team").await;
        if status != 200 || got != made {
            failed.push(format!("GET {status} {got}"));
        }
    }
    assert_eq!(failed, Vec::<String>::new());
    let last = up.requests().pop().unwrap();
    assert_eq!(
        texts(&last.body),
        ["one", "Noted.", "two", "Noted.", "three", "Noted.", "four"]
    );
    assert_eq!(a.metric("hermes_cluster_redis_up").await, Some(0.0));
    // B never heard of the ones made while Redis was away: a 404, not a 5xx.
    let (status, _) = get(&b, &format!("/v1/responses/{previous}"), "sk-team").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn two_deployments_with_different_prefixes_on_one_redis_do_not_see_each_other() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let up = MockUpstream::start().await;
    up.set_default(Reply::chat("Hi."));
    let dir = tempfile::tempdir().unwrap();
    let blue = replica_config(&up.base_url(), "", "prefix = \"blue\"", "");
    let green = replica_config(&up.base_url(), "", "prefix = \"green\"", "");
    let (blue_a, blue_b, green_a) = (
        start_replica(dir.path(), &redis, &blue),
        start_replica(dir.path(), &redis, &blue),
        start_replica(dir.path(), &redis, &green),
    );
    for replica in [&blue_a, &blue_b, &green_a] {
        up_on(replica).await;
    }
    let (status, made) = post(
        &blue_a,
        "/v1/responses",
        "sk-team",
        json!({"model": "main", "input": "hello"}),
    )
    .await;
    assert_eq!(status, 200, "{made}");
    let path = format!("/v1/responses/{}", made["id"].as_str().unwrap());
    assert_eq!(get(&blue_b, &path, "sk-team").await.0, 200);
    assert_eq!(get(&green_a, &path, "sk-team").await.0, 404);
    let keys = redis.command(&["KEYS", "*"]);
    assert!(keys.contains("blue:response:resp_"), "{keys}");
    assert!(!keys.contains("green:response"), "{keys}");
}

#[tokio::test]
async fn reasoning_kept_or_learned_by_one_replica_serves_the_others() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let up = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = replica_config(&up.base_url(), "", "", "");
    let (a, b) = two_replicas(dir.path(), &redis, &text).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let ask = json!({"role": "user", "content": "Weather in Paris?"});
    let chat = |replica: &Replica, messages: Value| {
        post_to(
            replica.url("/v1/chat/completions"),
            "sk-team",
            json!({"model": "main", "messages": messages, "tools": tools}),
        )
    };

    // A keeps the reasoning of its tool-call answer ...
    up.push(call("call_1", "get_weather", json!({"city": "Paris"})));
    let (status, first) = chat(&a, json!([ask])).await;
    assert_eq!(status, 200, "{first}");
    eventually(Duration::from_secs(2), "A shared the reasoning", || async {
        redis
            .command(&["KEYS", "hermes:reasoning:*"])
            .contains("hermes:reasoning:")
    })
    .await;
    // ... and B puts it back when the client returns without it.
    let mut turn = first["choices"][0]["message"].clone();
    turn.as_object_mut().unwrap().remove("reasoning_content");
    let result = json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"});
    up.push(Reply::chat("Sunny."));
    let (status, _) = chat(&b, json!([ask, turn, result])).await;
    assert_eq!(status, 200);
    let sent = up.requests();
    assert_eq!(
        sent[1].body["messages"][1]["reasoning_content"],
        "I should look."
    );

    // A learns that the upstream wants reasoning back on every tool-call turn ...
    up.require_reasoning_content();
    let unknown = |id: &str| {
        json!([ask, {"role": "assistant", "content": null, "tool_calls": [{"id": id,
            "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": id, "content": "rain"}])
    };
    up.push(Reply::chat("Rain."));
    let (status, _) = chat(&a, unknown("call_a")).await;
    assert_eq!(status, 200);
    assert_eq!(
        up.request_count(),
        4,
        "refused once, then sent with an empty one"
    );
    eventually(
        Duration::from_secs(2),
        "A shared what it learned",
        || async {
            redis
                .command(&["SMEMBERS", "hermes:needs_reasoning"])
                .contains("up-model")
        },
    )
    .await;
    // ... and a replica that starts now knows it from its first request.
    let c = start_replica(dir.path(), &redis, &text);
    up_on(&c).await;
    up.push(Reply::chat("Rain."));
    let (status, _) = chat(&c, unknown("call_c")).await;
    assert_eq!(status, 200);
    let sent = up.requests();
    assert_eq!(sent.len(), 5, "C was refused first");
    assert_eq!(sent[4].body["messages"][1]["reasoning_content"], "");
}

#[tokio::test]
async fn a_turn_no_replica_kept_is_asked_of_redis_once() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let up = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = replica_config(&up.base_url(), "", "", "");
    let (_a, b) = two_replicas(dir.path(), &redis, &text).await;
    // A model that does not reason: its tool-call turns come back bare.
    let history = json!([{"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_9",
            "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "rain"}]);
    let lookups = || redis.calls(&["mget"]);
    let before = lookups();
    for _ in 0..3 {
        let body = json!({"model": "main", "messages": history});
        let (status, _) = post(&b, "/v1/chat/completions", "sk-team", body).await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        lookups() - before,
        1,
        "asked once, then remembered as absent"
    );
}

#[tokio::test]
async fn a_summary_written_by_one_replica_is_reused_by_another() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let up = MockUpstream::start().await;
    up.set_default(Reply::chat("All changes summarized."));
    let summarizer = MockUpstream::start().await;
    summarizer.set_default(Reply::chat(
        "Goal: port the parser. Files read; changes pending.",
    ));
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[providers.summ]\nkind = \"openai\"\nbase_url = \"{}\"\n\
         [routes.summarize]\ntargets = [{{ provider = \"summ\", model = \"s\", context_window = 8192 }}]\n\
         [compression]\nsummarizer = \"summarize\"\n",
        summarizer.base_url()
    );
    let text = replica_config(&up.base_url(), "", "", &extra).replace(
        "model = \"up-model\" }",
        "model = \"up-model\", context_window = 8192 }",
    );
    let (a, b) = two_replicas(dir.path(), &redis, &text).await;
    // A long agent conversation: only a summary of its middle fits 8k.
    let mut conversation = vec![json!({"role": "system", "content": "You are a coding agent."})];
    for i in 0..60 {
        conversation.push(json!({"role": "user", "content": format!("Step {i}: go on.")}));
        conversation.push(json!({"role": "assistant",
            "content": format!("Read file {i}. {}", "It needs changes. ".repeat(40))}));
    }
    conversation.push(json!({"role": "user", "content": "Now summarize what changed."}));
    let send = |replica: &Replica| {
        post_to(
            replica.url("/v1/chat/completions"),
            "sk-team",
            json!({"model": "main", "messages": conversation}),
        )
    };
    let (status, body) = send(&a).await;
    assert_eq!(status, 200, "{body}");
    let written = summarizer.request_count();
    assert!(written >= 1);
    eventually(Duration::from_secs(2), "A shared the summary", || async {
        redis
            .command(&["KEYS", "hermes:summary:*"])
            .contains("hermes:summary:")
    })
    .await;

    let (status, body) = send(&b).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(summarizer.request_count(), written, "B summarized again");
    let sent = up.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].body["messages"], sent[0].body["messages"]);
    assert!(sent[1].body["messages"].as_array().unwrap().len() < conversation.len());
}
