//! Several replicas as one: real `hermes-proxy` processes sharing a real
//! `redis-server` (started here on a free loopback port), in front of
//! scripted mock upstreams whose request logs say what each replica did.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::cluster::{
    eventually, library_cluster, redis_available, unique_name, write_config, Redis, Replica,
};
use support::mock_upstream::{MockUpstream, Reply};
use support::proxy::{config_for, http};

/// A routes.toml for replicas: route `main` over `upstreams` in order,
/// `[cluster]` on `HERMES_REDIS_URL`, the store in `dir`; `extra` appended.
fn config(dir: &std::path::Path, upstreams: &[(&str, &str)], extra: &str) -> String {
    let shared = format!(
        "[cluster]\nredis_url_env = \"HERMES_REDIS_URL\"\n\n[store]\npath = \"{}\"\n\n",
        dir.join(format!("{}.db", unique_name())).display()
    );
    config_for(upstreams, &(shared + extra))
}

/// `n` replicas of one config, each with its own store file.
fn replicas(
    n: usize,
    dir: &tempfile::TempDir,
    redis: &Redis,
    text: impl Fn() -> String,
    env: &[(&str, &str)],
) -> Vec<Replica> {
    let url = redis.url();
    let mut env: Vec<(&str, &str)> = env.to_vec();
    env.push(("HERMES_REDIS_URL", &url));
    (0..n)
        .map(|_| {
            let path = write_config(dir.path(), &format!("{}.toml", unique_name()), &text());
            Replica::start(&path, &env)
        })
        .collect()
}

async fn chat(replica: &Replica, key: Option<&str>) -> (u16, Value) {
    let mut req = http()
        .post(replica.url("/v1/chat/completions"))
        .json(&json!({"model": "main", "messages": [{"role": "user", "content": "hi"}]}));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_429_through_one_replica_keeps_the_others_off_that_provider() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let (first, second) = (MockUpstream::start().await, MockUpstream::start().await);
    let limited = json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}});
    first.push(Reply::json(429, limited).header("retry-after", "30"));
    first.set_default(Reply::chat("from first"));
    second.set_default(Reply::chat("from second"));
    let dir = tempfile::tempdir().unwrap();
    let upstreams = [("first", first.base_url()), ("second", second.base_url())];
    let ups: Vec<(&str, &str)> = upstreams.iter().map(|(n, u)| (*n, u.as_str())).collect();
    let r = replicas(3, &dir, &redis, || config(dir.path(), &ups, ""), &[]);

    let (status, body) = chat(&r[0], None).await;
    let answered = std::time::Instant::now();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "from second");
    assert_eq!(first.request_count(), 1);
    // How long the news takes (SPEC: within 100 ms), reported, not asserted:
    // this machine's scheduling is not the proxy's.
    let cooling = "hermes_provider_cooldown{provider=\"first\"} 1";
    while !r[1].metrics().await.contains(cooling) {
        assert!(
            answered.elapsed() < Duration::from_secs(2),
            "B never heard of the 429"
        );
    }
    eprintln!("the 429 on A reached B within {:?}", answered.elapsed());

    // B and C hear of it (their own cooldown gauge says so) ...
    for replica in &r[1..] {
        eventually(
            Duration::from_secs(2),
            "the cooldown reached a replica",
            || async {
                replica
                    .metrics()
                    .await
                    .contains("hermes_provider_cooldown{provider=\"first\"} 1")
            },
        )
        .await;
    }
    // ... and stay off `first`: its log still holds the one 429'd request.
    for replica in &r[1..] {
        let (status, body) = chat(replica, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], "from second");
    }
    assert_eq!(
        first.request_count(),
        1,
        "B or C went to the cooling provider"
    );
    assert_eq!(second.request_count(), 3);

    // A replica that starts later reads the cooldowns already in Redis.
    let late = replicas(1, &dir, &redis, || config(dir.path(), &ups, ""), &[]);
    eventually(
        Duration::from_secs(2),
        "a new replica read the cooldown",
        || async {
            late[0]
                .metrics()
                .await
                .contains("hermes_provider_cooldown{provider=\"first\"} 1")
        },
    )
    .await;
    let (_, body) = chat(&late[0], None).await;
    assert_eq!(body["choices"][0]["message"]["content"], "from second");
    assert_eq!(first.request_count(), 1);
}

#[tokio::test]
async fn a_per_key_limit_across_two_replicas_admits_it_once_in_total() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let up = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = up.base_url();
    let keys = "[server]\n[[server.keys]]\nname = \"team\"\nkey_env = \"TEAM_KEY\"\nrpm = 4\n";
    let r = replicas(
        2,
        &dir,
        &redis,
        || config(dir.path(), &[("only", &url)], keys),
        &[("TEAM_KEY", "sk-team")],
    );
    let mut admitted = 0;
    let mut limited = 0;
    for i in 0..8 {
        let (status, body) = chat(&r[i % 2], Some("sk-team")).await;
        match status {
            200 => admitted += 1,
            429 => {
                assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
                limited += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    // One replica alone would admit 4; two without Redis would admit 8.
    assert_eq!((admitted, limited), (4, 4));
    assert_eq!(up.request_count(), 4);
}

#[tokio::test]
async fn a_provider_rpm_is_one_budget_for_all_replicas() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let up = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = up.base_url();
    // rpm 12: a burst of 2, then one every 5 s; waiting is not allowed.
    let text = || {
        config(dir.path(), &[("only", &url)], "")
            .replace("[defaults]\n", "[defaults]\nmax_retry_wait = \"1ms\"\n")
            .replace("kind = \"openai\"\n", "kind = \"openai\"\nrpm = 12\n")
    };
    let r = replicas(2, &dir, &redis, text, &[]);
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(chat(&r[i % 2], None).await.0);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn redis_killed_mid_load_fails_no_request_and_sharing_resumes_after_restart() {
    if !redis_available() {
        return;
    }
    let mut redis = Redis::start();
    let up = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = up.base_url();
    let keys = "[server]\n[[server.keys]]\nname = \"team\"\nkey_env = \"TEAM_KEY\"\nrpm = 100000\n";
    let r = replicas(
        2,
        &dir,
        &redis,
        || config(dir.path(), &[("only", &url)], keys),
        &[("TEAM_KEY", "sk-team")],
    );
    for replica in &r {
        eventually(Duration::from_secs(3), "redis up on a replica", || async {
            replica.metric("hermes_cluster_redis_up").await == Some(1.0)
        })
        .await;
    }

    // Load from four clients while Redis dies under it.
    let load = |n: usize| {
        let r = &r;
        async move {
            let clients = (0..4).map(|c| async move {
                let mut failed = Vec::new();
                for i in 0..n {
                    let (status, body) = chat(&r[(c + i) % 2], Some("sk-team")).await;
                    if status != 200 {
                        failed.push(format!("{status} {body}"));
                    }
                }
                failed
            });
            futures_util::future::join_all(clients).await.concat()
        }
    };
    let (failed, ()) = tokio::join!(load(60), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        redis.kill();
    });
    assert_eq!(failed, Vec::<String>::new());
    for replica in &r {
        eventually(
            Duration::from_secs(3),
            "redis down on a replica",
            || async { replica.metric("hermes_cluster_redis_up").await == Some(0.0) },
        )
        .await;
        assert_eq!(replica.logged("redis is unreachable"), 1, "logged once");
    }
    assert_eq!(load(10).await, Vec::<String>::new());

    redis.restart();
    for replica in &r {
        eventually(
            Duration::from_secs(5),
            "redis up again on a replica",
            || async { replica.metric("hermes_cluster_redis_up").await == Some(1.0) },
        )
        .await;
    }
    // Sharing again: the key's limit is counted in the fresh Redis (its
    // GCRA key lives for milliseconds at this rpm: count the script's runs).
    assert_eq!(load(5).await, Vec::<String>::new());
    assert!(
        scripts_run(&redis) >= 1,
        "no limit was counted in the restarted Redis"
    );
    // ... and cooldowns travel again: the subscribers came back too.
    let limited = json!({"error": {"message": "Rate limit reached", "type": "requests"}});
    up.push(Reply::json(429, limited).header("retry-after", "30"));
    let (status, _) = chat(&r[0], Some("sk-team")).await;
    assert_eq!(status, 429);
    eventually(
        Duration::from_secs(2),
        "the 429 reached the other replica",
        || async {
            r[1].metrics()
                .await
                .contains("hermes_provider_cooldown{provider=\"only\"} 1")
        },
    )
    .await;
    // Secrets stay out of the log (the URL has no password here, but the
    // key does: it must never be written).
    for replica in &r {
        assert_eq!(replica.logged("sk-team"), 0);
    }
}

/// The cluster handle of one process, straight from the library.
fn cluster_on(url: &str, prefix: &str) -> std::sync::Arc<hermes_proxy::cluster::Cluster> {
    library_cluster(url, prefix, Duration::from_millis(50))
}

/// Scripts Redis has run (EVAL and EVALSHA).
fn scripts_run(redis: &Redis) -> u64 {
    redis.calls(&["evalsha", "eval"])
}

#[tokio::test]
async fn a_large_limit_is_leased_a_few_cells_at_a_time_and_never_overspent() {
    use hermes_proxy::cluster::gcra::Limit;
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let (a, b) = (cluster_on(&redis.url(), "t"), cluster_on(&redis.url(), "t"));
    // A burst of 160: leases of at most 20 (an eighth). A cell comes back
    // every 3.75 s, so none does while the test runs.
    let limit = Limit {
        key: a.key("limit", &["key", "team"]),
        per_minute: 16,
        burst: 160,
        cost: 1,
    };
    let limit = std::slice::from_ref(&limit);
    let before = scripts_run(&redis);
    for _ in 0..34 {
        assert_eq!(a.admit(limit).await, Some(Ok(())));
    }
    // Leases grow while the round trips come quickly (1, 2, 4, ... 20),
    // topped up off the requests' path: far fewer trips than requests.
    let trips = scripts_run(&redis) - before;
    assert!(
        (1..=17).contains(&trips),
        "{trips} round trips for 34 requests"
    );
    // Together the replicas admit the burst and not one more: B what A has
    // not taken, then A what it still holds.
    let until_refused = |c: &std::sync::Arc<hermes_proxy::cluster::Cluster>| {
        let c = c.clone();
        async move {
            let mut n = 0;
            while c.admit(limit).await == Some(Ok(())) {
                n += 1;
                assert!(n <= 200, "never refused");
            }
            n
        }
    };
    let by_b = until_refused(&b).await;
    let by_a = until_refused(&a).await;
    assert!(by_b >= 160 - 34 - 3 * 20, "B refused too early: {by_b}");
    assert_eq!(34 + by_b + by_a, 160, "B {by_b}, then A {by_a}");
}

#[tokio::test]
async fn the_shared_gcra_admits_a_burst_then_says_how_long_to_wait() {
    use hermes_proxy::cluster::gcra::Limit;
    if !redis_available() {
        return;
    }
    let mut redis = Redis::start();
    let a = cluster_on(&redis.url(), "t");
    let b = cluster_on(&redis.url(), "t");
    let limit = |cost: u64| Limit {
        key: a.key("limit", &["p", "rpm"]),
        per_minute: 60,
        burst: 3,
        cost,
    };
    // Two replicas draw on one budget of 3.
    for c in [&a, &b, &a] {
        assert_eq!(c.admit(&[limit(1)]).await, Some(Ok(())));
    }
    let wait = b.admit(&[limit(1)]).await.unwrap().unwrap_err();
    assert!(
        wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    // Larger than the whole burst: let through rather than refused forever.
    assert_eq!(a.admit(&[limit(10)]).await, Some(Ok(())));
    // All or nothing: a refused pair charges neither.
    let other = Limit {
        key: a.key("limit", &["p", "tpm"]),
        per_minute: 600,
        burst: 7,
        cost: 3,
    };
    assert!(a.admit(&[other.clone(), limit(1)]).await.unwrap().is_err());
    let other = std::slice::from_ref(&other);
    assert_eq!(a.admit(other).await, Some(Ok(())));
    assert_eq!(b.admit(other).await, Some(Ok(())));
    assert!(a.admit(other).await.unwrap().is_err());
    // Names with colons stay apart, and the prefix is on every key.
    assert_eq!(
        a.key("cooldown", &["local", "qwen3:8b"]),
        "t:cooldown:local:qwen3%3A8b"
    );
    assert_ne!(a.key("x", &["a:b", "c"]), a.key("x", &["a", "b:c"]));

    // Redis gone: no verdict (the caller counts locally), and no waiting.
    redis.kill();
    let started = std::time::Instant::now();
    assert_eq!(a.admit(&[limit(1)]).await, None);
    assert_eq!(a.admit(&[limit(1)]).await, None);
    assert!(!a.is_up());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_redis_slower_than_the_timeout_counts_as_down_until_it_answers_again() {
    use hermes_proxy::cluster::gcra::Limit;
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let c = cluster_on(&redis.url(), "t");
    let limit = Limit {
        key: c.key("limit", &["key", "slow"]),
        per_minute: 60,
        burst: 3,
        cost: 1,
    };
    let limit = std::slice::from_ref(&limit);
    assert_eq!(c.admit(limit).await, Some(Ok(())));
    // Redis stops answering for 3 s: the call gives up after the 50 ms
    // timeout (the caller counts locally), and the next ones do not wait.
    redis.command(&["CLIENT", "PAUSE", "3000", "ALL"]);
    let started = std::time::Instant::now();
    assert_eq!(c.admit(limit).await, None);
    assert_eq!(c.admit(limit).await, None);
    assert!(!c.is_up());
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    // When it answers again, the probe brings sharing back.
    eventually(Duration::from_secs(10), "redis up again", || async {
        c.is_up()
    })
    .await;
    assert_eq!(c.admit(limit).await, Some(Ok(())));
}
