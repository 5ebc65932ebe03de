//! A bounded load test over loopback (600 requests from 16 connections, at
//! most 20 s): the primary answers 429 to every other request, the fallback
//! is healthy. Every client request must succeed, and the primary must never
//! see more than its `rpm` allows over the time the run took.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::mock_upstream::{MockUpstream, Reply};
use crate::support::proxy::{config_for, http, Proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_half_429s_on_the_primary_never_reach_a_client() {
    let primary = MockUpstream::start().await;
    for i in 0..4000 {
        primary.push(if i % 2 == 0 {
            Reply::json(429, json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}))
                .header("retry-after-ms", "50")
        } else {
            Reply::chat("primary")
        });
    }
    let fallback = MockUpstream::start().await;
    const RPM: usize = 1200; // 20 per second, bursts of 200
    let toml = config_for(
        &[
            ("primary", &primary.base_url()),
            ("fallback", &fallback.base_url()),
        ],
        "",
    )
    .replace(
        "[providers.primary]\nkind = \"openai\"\n",
        &format!("[providers.primary]\nkind = \"openai\"\nrpm = {RPM}\n"),
    );
    let proxy = Proxy::start(&toml).await;

    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let run_for = Duration::from_secs(20);
    const REQUESTS_PER_WORKER: usize = 600 / 16 + 1;
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (ok, failed, url) = (ok.clone(), failed.clone(), proxy.url("/v1/chat/completions"));
            tokio::spawn(async move {
                // bounded in count as well as time
                for _ in 0..REQUESTS_PER_WORKER {
                    if started.elapsed() >= run_for {
                        break;
                    }
                    let resp = http()
                        .post(&url)
                        .json(&json!({"model": "main", "messages": [{"role": "user", "content": "hi"}]}))
                        .send()
                        .await;
                    match resp {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let allowed = RPM / 6 + (RPM as f64 / 60.0 * elapsed).ceil() as usize;
    eprintln!(
        "load: {ok} ok, {failed} failed in {elapsed:.2}s ({:.0} req/s); primary saw {} (limit allows {allowed}), fallback {}",
        ok as f64 / elapsed,
        primary.request_count(),
        fallback.request_count()
    );
    assert_eq!(failed, 0);
    assert!(
        ok as f64 / elapsed > 100.0,
        "the load was too light to mean anything"
    );
    assert!(
        primary.request_count() <= allowed,
        "primary got {} > {allowed}",
        primary.request_count()
    );
}
