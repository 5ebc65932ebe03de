//! Every metric the proxy exports, registered once with its help text.
//! Labels come only from bounded sets: route labels, provider names and fixed
//! outcome words, never a raw client model string or a key.

use std::sync::OnceLock;
use std::time::Duration;

use http::StatusCode;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets that resolve a microsecond-scale proxy hop and a minutes-long generation alike.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];
const OVERHEAD_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.5, 1.0,
];
/// Steps per agent answer: `max_steps` defaults to 12.
const STEP_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 50.0];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub ttft: HistogramVec,
    pub overhead: HistogramVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub retries: IntCounterVec,
    pub fallbacks: IntCounterVec,
    pub cooldown: IntGaugeVec,
    pub compressions: IntCounterVec,
    pub tokens: IntCounterVec,
    pub inflight: IntGauge,
    pub config_reloads: IntCounterVec,
    pub agent_tool_calls: IntCounterVec,
    pub agent_steps: HistogramVec,
    /// Beyond SPEC's table: issue 14 asks which way each assistant tool-call
    /// turn's reasoning went back (restored, empty, thinking_dropped,
    /// tool_choice_downgraded).
    pub reasoning_roundtrip: IntCounterVec,
    /// Beyond SPEC's table: issue 11 asks that a stored response the store
    /// failed to keep be counted, since the client got its answer anyway.
    pub store_write_failures: IntCounter,
    /// The series of requests that failed before routing.
    pub unrouted: RouteSeries,
}

/// `metric`, registered in `registry` (each family once).
fn registered<M: Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registered(registry, c)
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric definition");
    registered(registry, h)
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let cooldown = IntGaugeVec::new(
            Opts::new(
                "hermes_provider_cooldown",
                "1 while the provider is cooling down after a rate limit or failure",
            ),
            &["provider"],
        )
        .expect("valid metric definition");
        let cooldown = registered(&r, cooldown);
        let inflight = IntGauge::new(
            "hermes_inflight_requests",
            "Client requests being served now",
        )
        .expect("valid metric definition");
        let inflight = registered(&r, inflight);
        Metrics {
            requests: counter(
                &r,
                "hermes_requests_total",
                "Client requests by route and HTTP status",
                &["route", "status"],
            ),
            request_duration: histogram(
                &r,
                "hermes_request_duration_seconds",
                "Whole client request duration, streams included",
                &["route"],
                LATENCY_BUCKETS,
            ),
            ttft: histogram(
                &r,
                "hermes_time_to_first_token_seconds",
                "Time from request to the first streamed event",
                &["route", "provider"],
                LATENCY_BUCKETS,
            ),
            overhead: histogram(
                &r,
                "hermes_overhead_seconds",
                "Time spent in the proxy itself, upstream time excluded",
                &["route"],
                OVERHEAD_BUCKETS,
            ),
            upstream_requests: counter(
                &r,
                "hermes_upstream_requests_total",
                "Upstream attempts by provider and classified outcome",
                &["provider", "outcome"],
            ),
            upstream_duration: histogram(
                &r,
                "hermes_upstream_duration_seconds",
                "Upstream attempt duration until its answer began",
                &["provider"],
                LATENCY_BUCKETS,
            ),
            retries: counter(
                &r,
                "hermes_retries_total",
                "Upstream retries by provider and reason",
                &["provider", "reason"],
            ),
            fallbacks: counter(
                &r,
                "hermes_fallbacks_total",
                "Fallbacks from one provider to another within a route",
                &["route", "from", "to"],
            ),
            cooldown,
            compressions: counter(
                &r,
                "hermes_compressions_total",
                "Conversation compressions by route and outcome",
                &["route", "outcome"],
            ),
            tokens: counter(
                &r,
                "hermes_tokens_total",
                "Tokens reported by upstreams, by provider and kind",
                &["provider", "kind"],
            ),
            inflight,
            config_reloads: counter(
                &r,
                "hermes_config_reloads_total",
                "Config reloads by result",
                &["result"],
            ),
            agent_tool_calls: counter(
                &r,
                "hermes_agent_tool_calls_total",
                "Agent tool calls by tool and outcome",
                &["tool", "outcome"],
            ),
            agent_steps: histogram(
                &r,
                "hermes_agent_steps",
                "Upstream requests (steps) per agent answer",
                &["route"],
                STEP_BUCKETS,
            ),
            reasoning_roundtrip: counter(
                &r,
                "hermes_reasoning_roundtrip_total",
                "Assistant tool-call turns whose reasoning was restored, or sent by a fallback, by path",
                &["path"],
            ),
            store_write_failures: registered(
                &r,
                IntCounter::new(
                    "hermes_store_write_failures_total",
                    "Responses answered but not kept by the store (previous_response_id cannot continue them)",
                )
                .expect("valid metric definition"),
            ),
            unrouted: RouteSeries::default(),
            registry: r,
        }
    }

    /// `hermes_cluster_redis_up`, registered only by a replica with `[cluster]`
    /// (SPEC: absent without it).
    pub fn cluster_up(&self) -> IntGauge {
        let gauge = IntGauge::new(
            "hermes_cluster_redis_up",
            "1 while Redis answers this replica, 0 while it goes on with local state",
        )
        .expect("valid metric definition");
        registered(&self.registry, gauge)
    }

    /// Creates every bounded series a config implies at 0, so each documented
    /// metric family is on /metrics before its first event (and rates start from 0).
    pub fn register_series(&self, config: &crate::config::Config) {
        for result in ["success", "failure"] {
            self.config_reloads.with_label_values(&[result]);
        }
        // A retry happens on the last usable target for these kinds (see failover).
        for provider in &config.providers {
            for reason in [
                "rate_limited",
                "overloaded",
                "server_error",
                "connect_error",
                "timeout",
            ] {
                self.retries.with_label_values(&[&provider.name, reason]);
            }
        }
        for route in &config.routes {
            for outcome in ["compressed", "dropped", "too_long"] {
                self.compressions.with_label_values(&[&route.name, outcome]);
            }
        }
        for tool in &config.agent.tools {
            for outcome in ["ok", "error", "timeout", "refused"] {
                self.agent_tool_calls.with_label_values(&[tool, outcome]);
            }
        }
        for path in [
            "restored",
            "empty",
            "thinking_dropped",
            "tool_choice_downgraded",
        ] {
            self.reasoning_roundtrip.with_label_values(&[path]);
        }
        // Every route, so the family is there before a route turns agent on.
        for route in &config.routes {
            self.agent_steps.with_label_values(&[&route.name]);
        }
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding our own registry into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// A route's series a request counts into, kept with the route's plan: found
/// by label once, not on every request (prometheus hashes the labels of each
/// `with_label_values`). Each is found on its first use, so a series still
/// appears on /metrics only once something happened.
#[derive(Debug, Default)]
pub struct RouteSeries {
    answered: OnceLock<IntCounter>,
    duration: OnceLock<Histogram>,
    overhead: OnceLock<Histogram>,
}

impl RouteSeries {
    /// A finished request of the route `route`.
    pub fn record(
        &self,
        m: &Metrics,
        route: &str,
        status: StatusCode,
        elapsed: Duration,
        overhead: Duration,
    ) {
        // Nearly every request answers 200; any other status is looked up.
        if status == StatusCode::OK {
            self.answered
                .get_or_init(|| m.requests.with_label_values(&[route, status.as_str()]))
                .inc();
        } else {
            m.requests
                .with_label_values(&[route, status.as_str()])
                .inc();
        }
        self.duration
            .get_or_init(|| m.request_duration.with_label_values(&[route]))
            .observe(elapsed.as_secs_f64());
        self.overhead
            .get_or_init(|| m.overhead.with_label_values(&[route]))
            .observe(overhead.as_secs_f64());
    }
}

/// A provider's series, as [`RouteSeries`] is a route's: kept with every
/// target of the provider.
#[derive(Debug, Default)]
pub struct ProviderSeries {
    upstream_duration: OnceLock<Histogram>,
    upstream_ok: OnceLock<IntCounter>,
    /// prompt, completion and cached tokens
    tokens: [OnceLock<IntCounter>; 3],
}

impl ProviderSeries {
    /// An upstream attempt of `provider` that took `took`; `outcome` is
    /// "ok" or the failure's kind.
    pub fn attempt(&self, m: &Metrics, provider: &str, took: Duration, outcome: &str) {
        self.upstream_duration
            .get_or_init(|| m.upstream_duration.with_label_values(&[provider]))
            .observe(took.as_secs_f64());
        if outcome == "ok" {
            self.upstream_ok
                .get_or_init(|| m.upstream_requests.with_label_values(&[provider, outcome]))
                .inc();
        } else {
            m.upstream_requests
                .with_label_values(&[provider, outcome])
                .inc();
        }
    }

    pub fn record_usage(&self, m: &Metrics, provider: &str, usage: crate::wire::usage::Usage) {
        let counts = [usage.prompt, usage.completion, usage.cached];
        for ((kind, n), series) in ["prompt", "completion", "cached"]
            .into_iter()
            .zip(counts)
            .zip(&self.tokens)
        {
            if n > 0 {
                series
                    .get_or_init(|| m.tokens.with_label_values(&[provider, kind]))
                    .inc_by(n);
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::usage::Usage;

    fn rendered(m: &Metrics) -> String {
        String::from_utf8(m.render()).unwrap()
    }

    /// The kept handles count into the labelled series, which appear only
    /// once something happened; other statuses and outcomes still count.
    #[test]
    fn kept_series_count_where_label_lookups_would() {
        let m = Metrics::new();
        let (route, provider) = (RouteSeries::default(), ProviderSeries::default());
        let text = rendered(&m);
        assert!(!text.contains("route=\"main\"") && !text.contains("provider=\"p\""));

        let ms = Duration::from_millis;
        for status in [StatusCode::OK, StatusCode::OK, StatusCode::BAD_GATEWAY] {
            route.record(&m, "main", status, ms(3), ms(1));
        }
        provider.attempt(&m, "p", ms(2), "ok");
        provider.attempt(&m, "p", ms(2), "rate_limited");
        let usage = Usage {
            prompt: 5,
            completion: 2,
            cached: 0,
        };
        provider.record_usage(&m, "p", usage);
        provider.record_usage(&m, "p", usage);

        let text = rendered(&m);
        for line in [
            r#"hermes_requests_total{route="main",status="200"} 2"#,
            r#"hermes_requests_total{route="main",status="502"} 1"#,
            r#"hermes_request_duration_seconds_count{route="main"} 3"#,
            r#"hermes_overhead_seconds_count{route="main"} 3"#,
            r#"hermes_upstream_requests_total{outcome="ok",provider="p"} 1"#,
            r#"hermes_upstream_requests_total{outcome="rate_limited",provider="p"} 1"#,
            r#"hermes_upstream_duration_seconds_count{provider="p"} 2"#,
            r#"hermes_tokens_total{kind="prompt",provider="p"} 10"#,
            r#"hermes_tokens_total{kind="completion",provider="p"} 4"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(
            !text.contains(r#"kind="cached""#),
            "no cached tokens were seen"
        );
    }
}
