use std::time::Duration;

use serde_json::{json, Value};

use crate::support::mock_upstream::{wire, MockUpstream, Reply};
use crate::support::proxy::{config_for, Proxy};

async fn chat(proxy: &Proxy) -> reqwest::Response {
    proxy
        .post(
            "/v1/chat/completions",
            &json!({"model": "main", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
}

fn limited(retry_after_secs: u64) -> Reply {
    Reply::json(
        429,
        json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}),
    )
    .header("retry-after", &retry_after_secs.to_string())
}

#[tokio::test(start_paused = true)]
async fn waits_out_a_short_retry_after_on_the_last_target_then_retries_it() {
    let up = MockUpstream::start().await;
    up.push(limited(2));
    let proxy = Proxy::start(&config_for(&[("only", &up.base_url())], "")).await;
    let started = tokio::time::Instant::now();
    let resp = chat(&proxy).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-hermes-attempts"], "2");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "retried before the hint"
    );
    assert_eq!(up.request_count(), 2);
    assert!(proxy
        .metrics()
        .contains("hermes_retries_total{provider=\"only\",reason=\"rate_limited\"} 1"));
}

#[tokio::test(start_paused = true)]
async fn answers_429_at_once_with_the_soonest_retry_after_when_every_target_is_limited() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    a.push(limited(40));
    b.push(limited(25));
    let proxy = Proxy::start(&config_for(
        &[("a", &a.base_url()), ("b", &b.base_url())],
        "",
    ))
    .await;
    let resp = chat(&proxy).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "25");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");

    // Both are cooling down now: the next request is refused without asking them.
    let started = tokio::time::Instant::now();
    let resp = chat(&proxy).await;
    assert_eq!(resp.status(), 429);
    assert!(started.elapsed() < Duration::from_millis(100));
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=25).contains(&retry), "{retry}");
    assert_eq!((a.request_count(), b.request_count()), (1, 1));
    assert!(proxy
        .metrics()
        .contains("hermes_provider_cooldown{provider=\"a\"} 1"));
}

#[tokio::test(start_paused = true)]
async fn a_cooling_target_is_skipped_until_its_hint_has_passed() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    a.push(limited(30));
    let proxy = Proxy::start(&config_for(
        &[("a", &a.base_url()), ("b", &b.base_url())],
        "",
    ))
    .await;
    for _ in 0..3 {
        let resp = chat(&proxy).await;
        assert_eq!(resp.headers()["x-hermes-provider"], "b");
    }
    assert_eq!(a.request_count(), 1, "a was asked again while cooling down");
    tokio::time::advance(Duration::from_secs(31)).await;
    let resp = chat(&proxy).await;
    assert_eq!(resp.headers()["x-hermes-provider"], "a");
    assert!(proxy
        .metrics()
        .contains("hermes_provider_cooldown{provider=\"a\"} 0"));
}

#[tokio::test]
async fn an_exhausted_quota_is_never_retried_and_the_target_is_set_aside() {
    for quota in [
        wire::openai_insufficient_quota(),
        wire::kimi_quota(),
        wire::openrouter_credits_402(),
    ] {
        let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
        a.push(quota);
        let proxy = Proxy::start(&config_for(
            &[("a", &a.base_url()), ("b", &b.base_url())],
            "",
        ))
        .await;
        assert_eq!(chat(&proxy).await.headers()["x-hermes-provider"], "b");
        assert_eq!(chat(&proxy).await.headers()["x-hermes-provider"], "b");
        assert_eq!(a.request_count(), 1);
    }
}

#[tokio::test]
async fn an_exhausted_quota_on_the_only_target_is_a_502_not_a_retry() {
    let a = MockUpstream::start().await;
    a.push(wire::openai_insufficient_quota());
    let proxy = Proxy::start(&config_for(&[("a", &a.base_url())], "")).await;
    let resp = chat(&proxy).await;
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("quota_exhausted"),
        "{v}"
    );
    assert_eq!(a.request_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn backs_off_and_retries_a_failing_last_target() {
    for failure in [
        wire::anthropic_overloaded_529(),
        wire::ollama_busy_503(),
        Reply::raw(500, "text/plain", "boom"),
    ] {
        let up = MockUpstream::start().await;
        up.push(failure.clone());
        up.push(failure);
        let proxy = Proxy::start(&config_for(&[("only", &up.base_url())], "")).await;
        let resp = chat(&proxy).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-hermes-attempts"], "3");
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_byte_times_out_and_fails_over() {
    let (slow, fast) = (MockUpstream::start().await, MockUpstream::start().await);
    slow.push(Reply::chat("too late").delay(Duration::from_secs(120)));
    let proxy = Proxy::start(
        &config_for(
            &[("slow", &slow.base_url()), ("fast", &fast.base_url())],
            "",
        )
        .replace("[defaults]\n", "[defaults]\nfirst_byte_timeout = \"5s\"\n"),
    )
    .await;
    let resp = chat(&proxy).await;
    assert_eq!(resp.headers()["x-hermes-provider"], "fast");
    assert!(proxy
        .metrics()
        .contains("hermes_upstream_requests_total{outcome=\"timeout\",provider=\"slow\"} 1"));
}

#[tokio::test(start_paused = true)]
async fn stops_at_max_attempts_and_names_every_failure() {
    let ups: Vec<MockUpstream> =
        futures_util::future::join_all((0..4).map(|_| MockUpstream::start())).await;
    for up in &ups {
        up.set_default(Reply::json(
            500,
            json!({"error": {"message": "internal failure", "type": "server_error"}}),
        ));
    }
    let names = ["p0", "p1", "p2", "p3"];
    let urls: Vec<String> = ups.iter().map(|u| u.base_url()).collect();
    let pairs: Vec<(&str, &str)> = names
        .iter()
        .zip(&urls)
        .map(|(n, u)| (*n, u.as_str()))
        .collect();
    let proxy = Proxy::start(
        &config_for(&pairs, "").replace("[defaults]\n", "[defaults]\nmax_attempts = 3\n"),
    )
    .await;
    let resp = chat(&proxy).await;
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("p0: 500") && msg.contains("p1: 500") && msg.contains("p2: 500"),
        "{msg}"
    );
    assert_eq!(v["error"]["code"], "upstream_error");
    let total: usize = ups.iter().map(MockUpstream::request_count).sum();
    assert_eq!(total, 3);
}

#[tokio::test]
async fn a_provider_over_its_configured_rpm_is_skipped_not_hammered() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    // rpm = 12 admits a burst of 2 (ten seconds' worth)
    let toml = config_for(&[("a", &a.base_url()), ("b", &b.base_url())], "").replace(
        "[providers.a]\nkind = \"openai\"\n",
        "[providers.a]\nkind = \"openai\"\nrpm = 12\n",
    );
    let proxy = Proxy::start(&toml).await;
    let mut providers = vec![];
    for _ in 0..4 {
        providers.push(
            chat(&proxy).await.headers()["x-hermes-provider"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(providers, ["a", "a", "b", "b"]);
    assert_eq!(a.request_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn remaining_requests_at_zero_marks_a_target_busy_until_its_reset() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    a.push(
        Reply::chat("last one")
            .header("x-ratelimit-remaining-requests", "0")
            .header("x-ratelimit-reset-requests", "20s"),
    );
    let proxy = Proxy::start(&config_for(
        &[("a", &a.base_url()), ("b", &b.base_url())],
        "",
    ))
    .await;
    assert_eq!(chat(&proxy).await.headers()["x-hermes-provider"], "a");
    assert_eq!(chat(&proxy).await.headers()["x-hermes-provider"], "b");
    tokio::time::advance(Duration::from_secs(21)).await;
    assert_eq!(chat(&proxy).await.headers()["x-hermes-provider"], "a");
}

#[tokio::test]
async fn weighted_strategy_spreads_requests_by_weight() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    let toml = format!(
        "[providers.a]\nkind = \"openai\"\nbase_url = \"{}\"\n[providers.b]\nkind = \"openai\"\nbase_url = \"{}\"\n\
         [routes.main]\nstrategy = \"weighted\"\ntargets = [{{ provider = \"a\", model = \"m\", weight = 3 }}, {{ provider = \"b\", model = \"m\", weight = 1 }}]\n",
        a.base_url(),
        b.base_url()
    );
    let proxy = Proxy::start(&toml).await;
    for _ in 0..200 {
        assert_eq!(chat(&proxy).await.status(), 200);
    }
    // expected 150 : 50; far outside chance if weights were ignored
    assert!(
        (120..=180).contains(&a.request_count()),
        "{} : {}",
        a.request_count(),
        b.request_count()
    );
}

#[tokio::test(start_paused = true)]
async fn latency_strategy_prefers_the_faster_target() {
    let (slow, fast) = (MockUpstream::start().await, MockUpstream::start().await);
    slow.set_default(Reply::chat("slow").delay(Duration::from_millis(800)));
    let toml = format!(
        "[providers.slow]\nkind = \"openai\"\nbase_url = \"{}\"\n[providers.fast]\nkind = \"openai\"\nbase_url = \"{}\"\n\
         [routes.main]\nstrategy = \"latency\"\ntargets = [{{ provider = \"slow\", model = \"m\" }}, {{ provider = \"fast\", model = \"m\" }}]\n",
        slow.base_url(),
        fast.base_url()
    );
    let proxy = Proxy::start(&toml).await;
    for _ in 0..20 {
        chat(&proxy).await;
    }
    // Unmeasured targets are tried first; after that the fast one wins.
    assert!(
        slow.request_count() <= 2,
        "slow got {}",
        slow.request_count()
    );
    assert!(fast.request_count() >= 18);
}
