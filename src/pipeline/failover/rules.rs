//! The failover rules, written next to the code that enforces them. The rules, by what the attempt's reply was (`last` = no other target of
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

use super::cooldown::Reason;
use crate::config::Defaults;
use crate::error::{ApiError, ErrorKind, UpstreamError};

/// What the loop has learned so far, for the final error.
pub(super) struct Failures {
    pub(super) lines: Vec<String>,
    /// Soonest moment a rate-limited or cooling target is back.
    pub(super) soonest: Option<Duration>,
    /// False once any failure was more than a rate limit.
    pub(super) only_rate_limits: bool,
}

impl Failures {
    pub(super) fn new() -> Self {
        Failures {
            lines: vec![],
            soonest: None,
            only_rate_limits: true,
        }
    }

    /// A target passed over without an attempt (cooling down, over its
    /// limits, or too small for the conversation).
    pub(super) fn skipped(&mut self, line: String, rate_limited: Option<Duration>) {
        self.lines.push(line);
        match rate_limited {
            Some(back_in) => self.rate_limited(back_in),
            None => self.only_rate_limits = false,
        }
    }

    pub(super) fn rate_limited(&mut self, back_in: Duration) {
        self.soonest = Some(self.soonest.map_or(back_in, |s| s.min(back_in)));
    }

    pub(super) fn into_error(self, route: &str) -> ApiError {
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

#[derive(Debug, PartialEq)]
pub(super) enum Decision {
    /// Give the client this error now.
    Return,
    /// Wait, then try the same target again.
    Retry(Duration),
    /// Go to the next target, cooling this one down for this reason if any.
    Next(Option<Reason>),
}

/// The rules in the module doc, for one failed attempt.
pub(super) fn decide(err: &UpstreamError, last: bool, retries_here: u32, d: &Defaults) -> Decision {
    match err.kind {
        ErrorKind::ClientError | ErrorKind::ContextLength => Decision::Return,
        ErrorKind::RateLimited => match err.retry_after {
            Some(hint) if last && hint <= d.max_retry_wait => {
                Decision::Retry(hint.saturating_add(jitter(hint / 10)))
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
pub(super) fn backoff(n: u32, base: Duration, max: Duration) -> Duration {
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
