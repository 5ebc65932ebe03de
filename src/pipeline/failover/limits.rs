//! Proactive limits: a provider's configured `rpm` and `tpm`, so the proxy
//! slows down before the provider has to say 429.
//!
//! GCRA limiters from governor, one pair per provider, kept across reloads
//! while the provider's limits stay the same. Token use is estimated before
//! sending (prompt size plus `max_tokens`) and topped up once the real usage
//! is known; GCRA cannot hand back an over-estimate, so estimates err low.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::hooks::{AttemptHook, Ctx, Phase};
use crate::cluster::gcra::Limit;
use crate::cluster::Cluster;
use crate::config::Provider;
use crate::route::Target;
use crate::wire::chat::reserved_output;
use futures_util::future::BoxFuture;

pub struct ProviderLimits {
    rpm: Option<DefaultDirectRateLimiter>,
    tpm: Option<DefaultDirectRateLimiter>,
    settings: Settings,
}

/// A burst of a whole minute's budget at once would trip providers that
/// enforce their per-minute limits over shorter windows: ten seconds' worth.
fn burst(per_minute: u64) -> u64 {
    (per_minute / 6).max(1)
}

impl ProviderLimits {
    fn new(rpm: Option<u32>, tpm: Option<u64>) -> Self {
        let per_minute = |n: u64| {
            let n = NonZeroU32::new(n.min(u64::from(u32::MAX)) as u32)?;
            let burst = NonZeroU32::new(burst(u64::from(n.get())) as u32)?;
            Some(RateLimiter::direct(Quota::per_minute(n).allow_burst(burst)))
        };
        ProviderLimits {
            rpm: rpm.and_then(|n| per_minute(u64::from(n))),
            tpm: tpm.and_then(per_minute),
            settings: (rpm, tpm),
        }
    }

    /// Takes one request and `tokens` from the budget, or says how long until
    /// there is room. A request larger than the whole token burst can never
    /// fit, so it is let through rather than refused forever.
    pub fn acquire(&self, tokens: u32) -> Result<(), Duration> {
        // The limiter's own clock: a `DefaultClock::default()` per call
        // calibrates a new one (CPUID, which traps in a VM: ~50 µs a request).
        if let Some(rpm) = &self.rpm {
            if let Err(not_until) = rpm.check() {
                return Err(not_until.wait_time_from(rpm.clock().now()));
            }
        }
        if let (Some(tpm), Some(n)) = (&self.tpm, NonZeroU32::new(tokens)) {
            if let Ok(Err(not_until)) = tpm.check_n(n) {
                return Err(not_until.wait_time_from(tpm.clock().now()));
            }
        }
        Ok(())
    }

    /// Charges tokens the estimate missed, once the real usage is known.
    fn charge(&self, extra_tokens: u32) {
        if let (Some(tpm), Some(n)) = (&self.tpm, NonZeroU32::new(extra_tokens)) {
            let _ = tpm.check_n(n);
        }
    }

    pub fn counts_tokens(&self) -> bool {
        self.tpm.is_some()
    }

    /// The same limits for the cluster's shared GCRA (`cluster::gcra`), for
    /// `requests` (0 or 1) and `tokens`.
    fn shared(&self, cluster: &Cluster, provider: &str, requests: u64, tokens: u32) -> Vec<Limit> {
        let (rpm, tpm) = self.settings;
        let limit = |name: &str, per_minute: u64, cost: u64| Limit {
            key: cluster.key("provider_limit", &[provider, name]),
            per_minute,
            burst: burst(per_minute),
            cost,
        };
        let mut limits = Vec::with_capacity(2);
        if let Some(rpm) = rpm.filter(|_| requests > 0) {
            limits.push(limit("rpm", u64::from(rpm), requests));
        }
        if let Some(tpm) = tpm.filter(|_| tokens > 0) {
            limits.push(limit("tpm", tpm, u64::from(tokens)));
        }
        limits
    }
}

/// A provider's (rpm, tpm): its limiters are replaced only when these change.
type Settings = (Option<u32>, Option<u64>);

/// Every provider's limiters, by name; with `[cluster]`, the shared ones
/// first and these while Redis is away.
#[derive(Default)]
pub struct Limits {
    by_provider: Mutex<HashMap<String, (Settings, Arc<ProviderLimits>)>>,
    cluster: Option<Arc<Cluster>>,
}

impl Limits {
    pub fn new(cluster: Option<Arc<Cluster>>) -> Self {
        Limits {
            by_provider: Mutex::default(),
            cluster,
        }
    }

    /// Takes one request and `tokens` from `provider`'s budget, or says how
    /// long until there is room.
    pub async fn admit(
        &self,
        provider: &str,
        limits: &ProviderLimits,
        tokens: u32,
    ) -> Result<(), Duration> {
        if let Some(cluster) = &self.cluster {
            let shared = limits.shared(cluster, provider, 1, tokens);
            if let Some(verdict) = cluster.admit(&shared).await {
                return verdict;
            }
        }
        limits.acquire(tokens)
    }

    /// The provider's limiters, or None when it sets no limits. Limiters are
    /// made on first use and replaced only when the configured numbers change.
    pub fn get(&self, provider: &Provider) -> Option<Arc<ProviderLimits>> {
        if provider.rpm.is_none() && provider.tpm.is_none() {
            return None;
        }
        let settings = (provider.rpm, provider.tpm);
        let mut map = self.by_provider.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&provider.name) {
            Some((s, l)) if *s == settings => Some(l.clone()),
            _ => {
                let limits = Arc::new(ProviderLimits::new(provider.rpm, provider.tpm));
                map.insert(provider.name.clone(), (settings, limits.clone()));
                Some(limits)
            }
        }
    }
}

impl Limits {
    /// Charges `provider`'s token budget for tokens its estimate missed.
    pub fn charge(&self, provider: &str, extra_tokens: u32) {
        let map = self.by_provider.lock().unwrap_or_else(|e| e.into_inner());
        let Some((_, limits)) = map.get(provider) else {
            return;
        };
        match &self.cluster {
            Some(cluster) if cluster.is_up() && limits.counts_tokens() => {
                let shared = limits.shared(cluster, provider, 0, extra_tokens);
                let cluster = cluster.clone();
                // Off the request's path: the answer is already on its way.
                tokio::spawn(async move { cluster.admit(&shared).await });
            }
            _ => limits.charge(extra_tokens),
        }
    }
}

/// The hook: a target over its configured `rpm`/`tpm` is skipped if another
/// is usable, else waited for within `max_retry_wait`.
pub struct LimitsHook {
    limits: Arc<Limits>,
    max_retry_wait: Duration,
}

impl LimitsHook {
    pub fn new(limits: Arc<Limits>, max_retry_wait: Duration) -> Self {
        LimitsHook {
            limits,
            max_retry_wait,
        }
    }
}

impl AttemptHook for LimitsHook {
    fn before<'a>(&'a self, ctx: &'a mut Ctx, target: &'a Target) -> BoxFuture<'a, Phase> {
        Box::pin(async move {
            let Some(limits) = self.limits.get(&target.provider) else {
                return Phase::Go;
            };
            let body = &ctx.exchange.body;
            let tokens = *ctx.tokens.get_or_insert_with(|| {
                if limits.counts_tokens() {
                    estimate_tokens(body.tree())
                } else {
                    0
                }
            });
            let provider = &target.provider.name;
            let Err(wait) = self.limits.admit(provider, &limits, tokens).await else {
                return Phase::Go;
            };
            let waited = ctx.last
                && wait <= self.max_retry_wait
                && Instant::now()
                    .checked_add(wait)
                    .is_some_and(|at| at < ctx.exchange.deadline);
            if !waited {
                return Phase::Skip {
                    line: format!("{}: over its configured rpm/tpm", target.provider.name),
                    rate_limited: Some(wait),
                };
            }
            tokio::time::sleep(wait).await;
            ctx.upstream_time += wait;
            Phase::Again
        })
    }
}

/// A cheap, deliberately low token estimate: about four bytes of prompt per
/// token, plus the output the request reserves.
pub fn estimate_tokens(body: &Map<String, Value>) -> u32 {
    let prompt_bytes: usize = ["messages", "prompt", "input"]
        .iter()
        .filter_map(|k| body.get(*k))
        .map(json_size)
        .sum();
    let reserved = reserved_output(body).map_or(0, |(_, n)| n);
    (prompt_bytes as u64 / 4 + reserved).min(u64::from(u32::MAX)) as u32
}

/// Approximate serialized size without serializing.
fn json_size(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len() + 2,
        Value::Array(a) => a.iter().map(json_size).sum::<usize>() + a.len() + 1,
        Value::Object(o) => {
            o.iter()
                .map(|(k, v)| k.len() + 3 + json_size(v))
                .sum::<usize>()
                + 1
        }
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rpm_admits_ten_seconds_worth_then_asks_to_wait() {
        let limits = ProviderLimits::new(Some(60), None);
        for _ in 0..10 {
            assert!(limits.acquire(0).is_ok());
        }
        let wait = limits.acquire(0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // a tiny limit still admits one request
        let tiny = ProviderLimits::new(Some(3), None);
        assert!(tiny.acquire(0).is_ok());
        assert!(tiny.acquire(0).unwrap_err() <= Duration::from_secs(20));
    }

    #[test]
    fn tpm_counts_estimated_tokens() {
        let limits = ProviderLimits::new(None, Some(6000)); // a 1000-token burst
        assert!(limits.acquire(600).is_ok());
        assert!(limits.acquire(600).is_err());
        // bigger than the whole burst: let through, never stuck
        assert!(ProviderLimits::new(None, Some(600)).acquire(5000).is_ok());
    }

    #[test]
    fn estimate_counts_prompt_and_reserved_output() {
        let body =
            json!({"messages": [{"role": "user", "content": "x".repeat(400)}], "max_tokens": 100});
        let est = estimate_tokens(body.as_object().unwrap());
        assert!((200..230).contains(&est), "{est}");
    }
}
