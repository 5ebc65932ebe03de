//! The attempt loop: a route's targets tried in the strategy's order, each
//! reply classified once, within `max_attempts` and the request deadline.
//! Nothing here runs after the first byte has gone to the client: an
//! `Answer` is returned before the relay starts.
//!
//! The rules, by what the attempt's reply was (`last` = no other target of
//! this request is usable):
//! - `rate_limited` with a hint <= `max_retry_wait`: not last -> cool the
//!   target down for the hint and go to the next now; last -> wait the hint
//!   (plus jitter) and retry it.
//! - `rate_limited` with a longer hint or none: cool down for the hint (or
//!   `cooldown`, doubling on repeats) and go to the next now.
//! - `quota_exhausted`, `auth_error`: never retried; cooled down for minutes
//!   (doubling on repeats) and the next target tried.
//! - `overloaded`, `server_error`, `connect_error`, `timeout`: next target;
//!   last -> exponential backoff with full jitter, then retry it. A target
//!   that refused the connection is cooled down for `cooldown` (so every
//!   request does not pay for an absent local server).
//! - `context_length`: a 400 `context_length_exceeded` naming the provider.
//! - `client_error`: returned as the upstream said, normalized; no retry, no fallback.
//! - A target over its configured `rpm`/`tpm`: skipped if another is usable,
//!   else waited for within `max_retry_wait`.
//! - Targets cooling down are skipped. When nothing is left and every
//!   failure was a rate limit or a cooldown, the client gets 429 with
//!   `Retry-After` = the soonest target back, at once; otherwise 502 naming
//!   each provider's status and short reason.

use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::balance;
use crate::compress::{self, Report, TooLong};
use crate::context::{self, RoutedSummarizer};
use crate::cooldown::Reason;
use crate::error::ApiError;
use crate::limits::estimate_tokens;
use crate::provider::classify::{ErrorKind, UpstreamError};
use crate::provider::{self, Answer, Endpoint};
use crate::route::{Candidate, Resolved};
use crate::state::{Runtime, Shared};

pub struct Outcome {
    pub answer: Answer,
    pub provider: String,
    pub model: String,
    pub attempts: u32,
    /// Time spent waiting on upstreams and backoffs, so the proxy's own
    /// overhead can be told apart.
    pub upstream_time: Duration,
    /// Tokens charged to the provider's `tpm` before sending (0 without one).
    pub estimated_tokens: u32,
    /// What compression did to the conversation, if anything.
    pub compressed: Option<Report>,
}

/// What the loop has learned so far, for the final error.
#[derive(Default)]
struct Failures {
    lines: Vec<String>,
    /// Soonest moment a rate-limited or cooling target is back.
    soonest: Option<Duration>,
    /// False once any failure was more than a rate limit.
    only_rate_limits: bool,
}

impl Failures {
    fn rate_limited(&mut self, back_in: Duration) {
        self.soonest = Some(self.soonest.map_or(back_in, |s| s.min(back_in)));
    }

    fn into_error(self, route: &str) -> ApiError {
        match self.soonest {
            Some(retry_after) if self.only_rate_limits => ApiError::AllRateLimited {
                route: route.to_owned(),
                retry_after,
            },
            _ if self.lines.is_empty() => {
                ApiError::AllFailed(vec!["no attempt could be made".into()])
            }
            _ => ApiError::AllFailed(self.lines),
        }
    }
}

pub async fn run(
    shared: &Shared,
    rt: &Runtime,
    route: &Resolved<'_>,
    mut body: Map<String, Value>,
    endpoint: Endpoint,
    deadline: Instant,
) -> Result<Outcome, ApiError> {
    let defaults = &rt.config.defaults;
    let metrics = &shared.metrics;
    let mut plan: Vec<Candidate> = route.candidates.clone();
    balance::order(route.strategy, &mut plan, &shared.latencies);

    let mut failures = Failures {
        only_rate_limits: true,
        ..Default::default()
    };
    let mut tokens: Option<u32> = None;
    let mut upstream_time = Duration::ZERO;
    let mut attempts = 0;
    let mut retries_here = 0;
    let mut previous: Option<&str> = None;
    let mut next = 0;
    let mut fit = Fitting::default();

    while next < plan.len() && attempts < defaults.max_attempts {
        let candidate = plan[next];
        let provider = candidate.provider.name.as_str();
        if let Some((left, reason)) =
            shared
                .cooldowns
                .remaining(provider, candidate.model, Instant::now())
        {
            failures.lines.push(format!(
                "{provider}: cooling down for {}s",
                left.as_secs().max(1)
            ));
            if reason == Reason::RateLimited {
                failures.rate_limited(left);
            } else {
                failures.only_rate_limits = false;
            }
            next += 1;
            continue;
        }
        let last = plan[next + 1..].iter().all(|c| {
            shared
                .cooldowns
                .remaining(&c.provider.name, c.model, Instant::now())
                .is_some()
        });

        if route.compression {
            shared.windows.discover(&shared.client, &candidate).await;
            if let Some(window) = shared.windows.of(&candidate) {
                if fit.needed_for(window) && !compress::fits(&body, window) {
                    if let Err(too_long) = fit
                        .shrink(shared, rt, route, &mut body, window, deadline)
                        .await
                    {
                        failures.lines.push(format!("{provider}: {too_long}"));
                        failures.only_rate_limits = false;
                        next += 1;
                        continue;
                    }
                }
            }
        }

        if let Some(limits) = shared.limits.get(candidate.provider) {
            let tokens = *tokens.get_or_insert_with(|| {
                if limits.counts_tokens() {
                    estimate_tokens(&body)
                } else {
                    0
                }
            });
            if let Err(wait) = limits.acquire(tokens) {
                let waited =
                    last && wait <= defaults.max_retry_wait && Instant::now() + wait < deadline;
                if !waited {
                    failures
                        .lines
                        .push(format!("{provider}: over its configured rpm/tpm"));
                    failures.rate_limited(wait);
                    next += 1;
                    continue;
                }
                tokio::time::sleep(wait).await;
                upstream_time += wait;
                continue;
            }
        }

        attempts += 1;
        if let Some(from) = previous.filter(|from| *from != provider) {
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
            Ok(success) => {
                metrics
                    .upstream_requests
                    .with_label_values(&[provider, "ok"])
                    .inc();
                shared.cooldowns.clear(provider, candidate.model);
                shared
                    .latencies
                    .observe(provider, candidate.model, took, Instant::now());
                if let Some(busy) = success.busy_for {
                    shared.cooldowns.cool(
                        provider,
                        candidate.model,
                        Reason::RateLimited,
                        Some(busy),
                        defaults.cooldown,
                        Instant::now(),
                    );
                }
                return Ok(Outcome {
                    answer: success.answer,
                    provider: provider.to_owned(),
                    model: candidate.model.to_owned(),
                    attempts,
                    upstream_time,
                    estimated_tokens: tokens.unwrap_or(0),
                    compressed: fit.report,
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
        failures
            .lines
            .push(format!("{provider}: {}", err.summary()));

        if err.kind == ErrorKind::ContextLength && route.compression {
            // The upstream's own verdict beats our estimate: remember the
            // limit it states, compress for it, and try the same target again.
            if let Some(limit) = context::stated_limit(&err.message) {
                shared.windows.learn(provider, candidate.model, limit);
            }
            let window = match (shared.windows.of(&candidate), fit.compressed_for) {
                (Some(known), Some(tried)) if known >= tried => tried * 3 / 4,
                (Some(known), _) => known,
                (None, _) => {
                    compress::count(
                        body.get("messages")
                            .and_then(Value::as_array)
                            .map_or(&[][..], |m| m),
                    ) * 3
                        / 4
                }
            };
            if fit.rounds >= MAX_COMPRESSIONS {
                return Err(ApiError::ContextLength(format!(
                    "{provider}: {} (still too long after {MAX_COMPRESSIONS} compressions)",
                    err.message
                )));
            }
            match fit
                .shrink(shared, rt, route, &mut body, window, deadline)
                .await
            {
                Ok(()) => continue,
                Err(too_long) => {
                    failures
                        .lines
                        .push(format!("{provider}: {}; {too_long}", err.message));
                    failures.only_rate_limits = false;
                    next += 1;
                    continue;
                }
            }
        }
        if err.kind == ErrorKind::ContextLength {
            // compression = "off": the upstream's error, untouched.
            return Err(ApiError::Upstream(err));
        }
        let wait = match decide(&err, last, retries_here, defaults) {
            Decision::Return => {
                return Err(match err.kind {
                    ErrorKind::ContextLength => {
                        ApiError::ContextLength(format!("{provider}: {}", err.message))
                    }
                    _ => ApiError::Upstream(err),
                })
            }
            Decision::Retry(wait) => wait,
            Decision::Next(cool) => {
                if let Some(reason) = cool {
                    let left = shared.cooldowns.cool(
                        provider,
                        candidate.model,
                        reason,
                        err.retry_after,
                        defaults.cooldown,
                        Instant::now(),
                    );
                    if reason == Reason::RateLimited {
                        failures.rate_limited(left);
                    }
                }
                if err.kind != ErrorKind::RateLimited {
                    failures.only_rate_limits = false;
                }
                next += 1;
                retries_here = 0;
                continue;
            }
        };
        if err.kind == ErrorKind::RateLimited {
            failures.rate_limited(err.retry_after.unwrap_or(wait));
        } else {
            failures.only_rate_limits = false;
        }
        if attempts >= defaults.max_attempts || Instant::now() + wait >= deadline {
            // Out of attempts or time: report what happened instead of a
            // timeout, and let the next requests skip a target that said wait.
            if err.kind == ErrorKind::RateLimited {
                shared.cooldowns.cool(
                    provider,
                    candidate.model,
                    Reason::RateLimited,
                    err.retry_after,
                    defaults.cooldown,
                    Instant::now(),
                );
            }
            break;
        }
        metrics
            .retries
            .with_label_values(&[provider, err.kind.as_str()])
            .inc();
        tokio::time::sleep(wait).await;
        upstream_time += wait;
        retries_here += 1;
    }
    // Some target could not take the conversation even compressed: say so
    // with the sizes, unless another target only asked to wait.
    if fit.too_long.is_some() && failures.soonest.is_none() {
        return Err(ApiError::ContextLength(failures.lines.join("; ")));
    }
    Err(failures.into_error(&route.label))
}

/// At most this many compression rounds per request.
const MAX_COMPRESSIONS: u32 = 3;

/// Compression state across one request's attempts.
#[derive(Default)]
struct Fitting {
    /// The smallest window the conversation was compressed for.
    compressed_for: Option<u32>,
    rounds: u32,
    report: Option<Report>,
    too_long: Option<TooLong>,
}

impl Fitting {
    /// A conversation compressed for a window fits every larger one.
    fn needed_for(&self, window: u32) -> bool {
        self.compressed_for.is_none_or(|done| window < done)
    }

    async fn shrink(
        &mut self,
        shared: &Shared,
        rt: &Runtime,
        route: &Resolved<'_>,
        body: &mut Map<String, Value>,
        window: u32,
        deadline: Instant,
    ) -> Result<(), TooLong> {
        self.rounds += 1;
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut summarizer = RoutedSummarizer {
            shared,
            rt,
            model: &route.requested,
            deadline,
        };
        let started = Instant::now();
        let result = compress::compress(
            body,
            window,
            &rt.config.compression.settings,
            &mut summarizer,
        )
        .await;
        let outcome = match &result {
            Ok(r) if r.steps.contains(&"dropped") => "dropped",
            Ok(_) => "compressed",
            Err(_) => "too_long",
        };
        shared
            .metrics
            .compressions
            .with_label_values(&[&route.label, outcome])
            .inc();
        match result {
            Ok(report) => {
                tracing::info!(
                    route = %route.label,
                    model,
                    window,
                    ms = started.elapsed().as_millis() as u64,
                    "compressed the conversation: {}",
                    report.header()
                );
                self.compressed_for = Some(window);
                self.report = Some(match self.report.take() {
                    Some(mut earlier) => {
                        earlier.steps.extend(report.steps);
                        earlier.after = report.after;
                        earlier
                    }
                    None => report,
                });
                Ok(())
            }
            Err(too_long) => {
                tracing::warn!(route = %route.label, window, "cannot compress enough: {too_long}");
                self.too_long = Some(too_long.clone());
                Err(too_long)
            }
        }
    }
}

#[derive(Debug, PartialEq)]
enum Decision {
    /// Give the client this error now.
    Return,
    /// Wait, then try the same target again.
    Retry(Duration),
    /// Go to the next target, cooling this one down for this reason if any.
    Next(Option<Reason>),
}

/// The rules in the module doc, for one failed attempt.
fn decide(
    err: &UpstreamError,
    last: bool,
    retries_here: u32,
    d: &crate::config::Defaults,
) -> Decision {
    match err.kind {
        ErrorKind::ClientError | ErrorKind::ContextLength => Decision::Return,
        ErrorKind::RateLimited => match err.retry_after {
            Some(hint) if last && hint <= d.max_retry_wait => {
                Decision::Retry(hint + jitter(hint / 10))
            }
            _ => Decision::Next(Some(Reason::RateLimited)),
        },
        ErrorKind::QuotaExhausted | ErrorKind::AuthError => Decision::Next(Some(Reason::Exhausted)),
        ErrorKind::Overloaded
        | ErrorKind::ServerError
        | ErrorKind::ConnectError
        | ErrorKind::Timeout
            if last =>
        {
            Decision::Retry(backoff(retries_here, d.backoff_base, d.backoff_max))
        }
        ErrorKind::ConnectError => Decision::Next(Some(Reason::Failing)),
        ErrorKind::Overloaded | ErrorKind::ServerError | ErrorKind::Timeout => Decision::Next(None),
    }
}

/// Exponential backoff with full jitter: uniform in [0, min(max, base * 2^n)].
fn backoff(n: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = base.saturating_mul(1u32 << n.min(20)).min(max);
    jitter(ceiling)
}

/// Uniform in [0, up_to].
fn jitter(up_to: Duration) -> Duration {
    up_to.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Defaults;

    fn err(kind: ErrorKind, retry_after: Option<u64>) -> UpstreamError {
        let mut e = UpstreamError::transport(kind, "x");
        e.retry_after = retry_after.map(Duration::from_secs);
        e
    }

    #[test]
    fn a_short_rate_limit_hint_is_waited_for_only_on_the_last_target() {
        let d = Defaults::default(); // max_retry_wait 10 s
        assert_eq!(
            decide(&err(ErrorKind::RateLimited, Some(3)), false, 0, &d),
            Decision::Next(Some(Reason::RateLimited))
        );
        match decide(&err(ErrorKind::RateLimited, Some(3)), true, 0, &d) {
            Decision::Retry(w) => assert!(
                w >= Duration::from_secs(3) && w <= Duration::from_millis(3300),
                "{w:?}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_long_or_missing_rate_limit_hint_cools_down_and_moves_on_even_when_last() {
        let d = Defaults::default();
        for hint in [Some(60), None] {
            assert_eq!(
                decide(&err(ErrorKind::RateLimited, hint), true, 0, &d),
                Decision::Next(Some(Reason::RateLimited))
            );
        }
    }

    #[test]
    fn quota_and_auth_are_never_retried() {
        let d = Defaults::default();
        for kind in [ErrorKind::QuotaExhausted, ErrorKind::AuthError] {
            assert_eq!(
                decide(&err(kind, Some(1)), true, 0, &d),
                Decision::Next(Some(Reason::Exhausted))
            );
        }
    }

    #[test]
    fn server_failures_fail_over_then_back_off_on_the_last_target() {
        let d = Defaults::default();
        for kind in [
            ErrorKind::Overloaded,
            ErrorKind::ServerError,
            ErrorKind::Timeout,
        ] {
            assert_eq!(decide(&err(kind, None), false, 0, &d), Decision::Next(None));
            assert!(matches!(
                decide(&err(kind, None), true, 0, &d),
                Decision::Retry(_)
            ));
        }
        assert_eq!(
            decide(&err(ErrorKind::ConnectError, None), false, 0, &d),
            Decision::Next(Some(Reason::Failing))
        );
    }

    #[test]
    fn client_mistakes_and_context_length_return_at_once() {
        let d = Defaults::default();
        assert_eq!(
            decide(&err(ErrorKind::ClientError, None), false, 0, &d),
            Decision::Return
        );
        assert_eq!(
            decide(&err(ErrorKind::ContextLength, None), true, 0, &d),
            Decision::Return
        );
    }

    #[test]
    fn backoff_grows_exponentially_to_the_cap_with_full_jitter() {
        let base = Duration::from_millis(250);
        let max = Duration::from_secs(8);
        for n in 0..10 {
            let ceiling = (base * (1 << n)).min(max);
            for _ in 0..50 {
                assert!(backoff(n, base, max) <= ceiling);
            }
        }
        let samples: Vec<Duration> = (0..200).map(|_| backoff(10, base, max)).collect();
        assert!(
            samples.iter().any(|s| *s > Duration::from_secs(4)),
            "jitter spans the range"
        );
        assert!(samples.iter().any(|s| *s < Duration::from_secs(4)));
    }
}
