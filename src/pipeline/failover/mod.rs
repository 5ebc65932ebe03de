//! The attempt loop: a plan's targets tried in the strategy's order, each
//! reply classified once, within `max_attempts` and the request deadline.
//! The rules it follows are in [`rules`]; concerns around each attempt
//! (proactive limits, compression) are [`hooks`]. Nothing here runs after
//! the first byte has gone to the client: a `Served` answer is returned
//! before the relay starts.
//!
//! [`Failover`] is the thin `Service` shell over the loop (linkerd's retry is
//! the model), the innermost service of every route's stack.

pub mod balance;
pub mod cooldown;
pub mod hooks;
pub mod limits;
mod rules;

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;

use super::exchange::{Exchange, Served};
use super::Handles;
use crate::config::Defaults;
use crate::error::{ApiError, ErrorKind, UpstreamError};
use crate::provider;
use crate::route::Target;
use cooldown::Reason;
use futures_util::future::BoxFuture;
use hooks::{AttemptHook, Ctx, Phase};
use rules::{decide, Decision, Failures};

/// The attempt loop as a service.
#[derive(Clone)]
pub struct Failover {
    handles: Arc<Handles>,
    defaults: Arc<Defaults>,
    limits: provider::Limits,
    hooks: Arc<[Box<dyn AttemptHook>]>,
}

impl Failover {
    pub fn new(
        handles: Arc<Handles>,
        defaults: Defaults,
        limits: provider::Limits,
        hooks: Vec<Box<dyn AttemptHook>>,
    ) -> Self {
        Failover {
            handles,
            defaults: Arc::new(defaults),
            limits,
            hooks: hooks.into(),
        }
    }
}

impl tower::Service<Exchange> for Failover {
    type Response = Served;
    type Error = ApiError;
    type Future = BoxFuture<'static, Result<Served, ApiError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ApiError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, exchange: Exchange) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.run(exchange).await })
    }
}

impl Failover {
    async fn run(&self, exchange: Exchange) -> Result<Served, ApiError> {
        let defaults = &*self.defaults;
        let h = &*self.handles;
        let metrics = &h.metrics;
        let plan = exchange.plan.clone();
        let mut order: Vec<&Target> = plan.targets.iter().collect();
        balance::order(plan.strategy, &mut order, &h.latencies);

        let mut ctx = Ctx::new(exchange);
        let mut failures = Failures::new();
        let mut attempts = 0;
        let mut retries_here = 0;
        let mut previous: Option<&str> = None;
        let mut next = 0;

        while next < order.len() && attempts < defaults.max_attempts {
            let target = order[next];
            let provider = target.provider.name.as_str();
            if let Some((left, reason)) =
                h.cooldowns
                    .remaining(provider, &target.model, Instant::now())
            {
                let line = format!("{provider}: cooling down for {}s", left.as_secs().max(1));
                failures.skipped(line, (reason == Reason::RateLimited).then_some(left));
                next += 1;
                continue;
            }
            ctx.last = order[next + 1..].iter().all(|t| {
                h.cooldowns
                    .remaining(&t.provider.name, &t.model, Instant::now())
                    .is_some()
            });

            if let Some(advance) = apply(self.before(&mut ctx, target).await, &mut failures)? {
                next += advance;
                continue;
            }

            attempts += 1;
            if let Some(from) = previous.filter(|from| *from != provider) {
                metrics
                    .fallbacks
                    .with_label_values(&[&plan.label, from, provider])
                    .inc();
            }
            previous = Some(provider);
            let body = &mut ctx.exchange.body;
            body.set_model(&target.model);

            let started = Instant::now();
            // Compression rewrote the conversation: the client's own bytes
            // are no longer what should be sent.
            let native = ctx
                .exchange
                .native
                .as_deref()
                .filter(|_| ctx.compressed.is_none());
            let result = provider::attempt(
                &*target.adapter,
                ctx.exchange.endpoint,
                body,
                native,
                &self.limits,
            )
            .await;
            let took = started.elapsed();
            ctx.upstream_time += took;
            let outcome = result.as_ref().map_or_else(|e| e.kind.as_str(), |_| "ok");
            target.series.attempt(metrics, provider, took, outcome);

            let err = match result {
                Ok(mut success) => {
                    for hook in self.hooks.iter() {
                        hook.answered(&ctx, target, &mut success);
                    }
                    h.cooldowns.clear(provider, &target.model);
                    h.latencies
                        .observe(provider, &target.model, took, Instant::now());
                    if let Some(busy) = success.busy_for {
                        h.cooldowns.cool(
                            provider,
                            &target.model,
                            Reason::RateLimited,
                            Some(busy),
                            defaults,
                            Instant::now(),
                        );
                    }
                    return Ok(Served {
                        answer: success.answer,
                        provider: provider.to_owned(),
                        model: target.model.clone(),
                        attempts,
                        upstream_time: ctx.upstream_time,
                        estimated_tokens: ctx.tokens.unwrap_or(0),
                        compressed: ctx.compressed,
                        agent: None,
                        native: success.native,
                    });
                }
                Err(err) => err,
            };
            tracing::warn!(
                provider,
                model = %target.model,
                outcome = err.kind.as_str(),
                status = err.status,
                "upstream attempt failed: {}",
                err.message
            );
            failures
                .lines
                .push(format!("{provider}: {}", err.summary()));

            let phase = self.after_error(&mut ctx, target, &err).await;
            if let Some(advance) = apply(phase, &mut failures)? {
                next += advance;
                continue;
            }

            let wait = match decide(&err, ctx.last, retries_here, defaults) {
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
                        let left = h.cooldowns.cool(
                            provider,
                            &target.model,
                            reason,
                            err.retry_after,
                            defaults,
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
            let past_deadline = Instant::now()
                .checked_add(wait)
                .is_none_or(|at| at >= ctx.exchange.deadline);
            if attempts >= defaults.max_attempts || past_deadline {
                // Out of attempts or time: report what happened instead of a
                // timeout, and let the next requests skip a target that said wait.
                if err.kind == ErrorKind::RateLimited {
                    h.cooldowns.cool(
                        provider,
                        &target.model,
                        Reason::RateLimited,
                        err.retry_after,
                        defaults,
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
            ctx.upstream_time += wait;
            retries_here += 1;
        }
        // Some target could not take the conversation even compressed: say so
        // with the sizes, unless another target only asked to wait.
        if ctx.too_long && failures.soonest.is_none() {
            return Err(ApiError::ContextLength(failures.lines.join("; ")));
        }
        Err(failures.into_error(&plan.label))
    }
}

impl Failover {
    /// The hooks in order, until one has something to say.
    async fn before(&self, ctx: &mut Ctx, target: &Target) -> Phase {
        for hook in self.hooks.iter() {
            match hook.before(ctx, target).await {
                Phase::Go => {}
                said => return said,
            }
        }
        Phase::Go
    }

    async fn after_error(&self, ctx: &mut Ctx, target: &Target, err: &UpstreamError) -> Phase {
        for hook in self.hooks.iter() {
            match hook.after_error(ctx, target, err).await {
                Phase::Go => {}
                said => return said,
            }
        }
        Phase::Go
    }
}

/// How a hook's phase moves the loop: `None` goes on with this target,
/// `Some(n)` moves `n` targets on (0: the same one again) and loops.
fn apply(phase: Phase, failures: &mut Failures) -> Result<Option<usize>, ApiError> {
    match phase {
        Phase::Go => Ok(None),
        Phase::Again => Ok(Some(0)),
        Phase::Skip { line, rate_limited } => {
            failures.skipped(line, rate_limited);
            Ok(Some(1))
        }
        Phase::Fail(err) => Err(err),
    }
}
