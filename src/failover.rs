//! The attempt loop: a route's candidates tried in order until one answers,
//! each reply classified once. Nothing here runs after the first byte has
//! gone to the client: an `Answer` is returned before the relay starts.
//!
//! Rules, by the kind of the failed attempt:
//! - `client_error`: the client's own mistake; returned as the upstream said
//!   it, normalized; no retry, no fallback.
//! - `context_length`: a 400 `context_length_exceeded` naming the provider.
//! - every other kind: fall over to the next candidate, within `max_attempts`.
//! - all candidates rate limited: 429 with `Retry-After` = the soonest hint.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::provider::classify::ErrorKind;
use crate::provider::{self, Answer, Endpoint};
use crate::route::Resolved;
use crate::state::{Runtime, Shared};

pub struct Outcome {
    pub answer: Answer,
    pub provider: String,
    pub model: String,
    pub attempts: u32,
    /// Time spent waiting on upstreams, so the proxy's own overhead can be told apart.
    pub upstream_time: Duration,
}

pub async fn run(
    shared: &Shared,
    rt: &Runtime,
    route: &Resolved<'_>,
    mut body: Map<String, Value>,
    endpoint: Endpoint,
) -> Result<Outcome, ApiError> {
    let defaults = &rt.config.defaults;
    let metrics = &shared.metrics;
    let mut failures = Vec::new();
    let mut soonest_retry: Option<Duration> = None;
    let mut all_rate_limited = true;
    let mut upstream_time = Duration::ZERO;
    let mut attempts = 0;
    let mut previous: Option<&str> = None;

    for candidate in &route.candidates {
        if attempts >= defaults.max_attempts {
            break;
        }
        attempts += 1;
        let provider = candidate.provider.name.as_str();
        if let Some(from) = previous {
            metrics
                .fallbacks
                .with_label_values(&[&route.label, from, provider])
                .inc();
        }
        previous = Some(provider);
        body.insert("model".into(), Value::String(candidate.model.to_owned()));

        let started = Instant::now();
        let result = provider::call(
            &shared.client,
            candidate.provider,
            endpoint,
            &body,
            defaults.first_byte_timeout,
        )
        .await;
        let took = started.elapsed();
        upstream_time += took;
        metrics
            .upstream_duration
            .with_label_values(&[provider])
            .observe(took.as_secs_f64());

        let err = match result {
            Ok(answer) => {
                metrics
                    .upstream_requests
                    .with_label_values(&[provider, "ok"])
                    .inc();
                return Ok(Outcome {
                    answer,
                    provider: provider.to_owned(),
                    model: candidate.model.to_owned(),
                    attempts,
                    upstream_time,
                });
            }
            Err(err) => err,
        };
        metrics
            .upstream_requests
            .with_label_values(&[provider, err.kind.as_str()])
            .inc();
        tracing::warn!(
            provider,
            model = candidate.model,
            outcome = err.kind.as_str(),
            status = err.status,
            "upstream attempt failed: {}",
            err.message
        );
        match err.kind {
            ErrorKind::ClientError => return Err(ApiError::Upstream(err)),
            ErrorKind::ContextLength => {
                return Err(ApiError::ContextLength(format!(
                    "{provider}: {}",
                    err.message
                )))
            }
            ErrorKind::RateLimited => {
                let wait = err.retry_after.unwrap_or(defaults.cooldown);
                soonest_retry = Some(soonest_retry.map_or(wait, |s| s.min(wait)));
            }
            _ => all_rate_limited = false,
        }
        failures.push(format!("{provider}: {}", err.summary()));
    }

    if all_rate_limited {
        if let Some(retry_after) = soonest_retry {
            return Err(ApiError::AllRateLimited {
                route: route.label.clone(),
                retry_after,
            });
        }
    }
    Err(ApiError::AllFailed(failures))
}
