//! Per-attempt hooks: concerns that run around each attempt of the loop
//! without being branches in it (pingora's `ProxyHttp` phases are the model).
//! Proactive rpm/tpm limits and context-window compression are hooks; the
//! loop itself only knows the failover rules.

use std::time::Duration;

use super::super::exchange::{Exchange, Report};
use crate::error::{ApiError, UpstreamError};
use crate::provider::Success;
use crate::route::Target;
use futures_util::future::BoxFuture;

/// What a hook decides for the target at hand.
pub enum Phase {
    /// Nothing to say: go on.
    Go,
    /// Try the same target again (the hook waited, or changed the request).
    Again,
    /// Skip this target. `line` goes into the final error; `rate_limited`
    /// says when the target is back, if only a rate limit stood in the way.
    Skip {
        line: String,
        rate_limited: Option<Duration>,
    },
    /// Give the client this error now.
    Fail(ApiError),
}

/// One request's state across its attempts, shared by the loop and its hooks.
pub struct Ctx {
    pub exchange: Exchange,
    /// No other target of this request is usable.
    pub last: bool,
    /// Time spent waiting on upstreams, backoffs and limits.
    pub upstream_time: Duration,
    /// Tokens charged to `tpm` before sending, once estimated.
    pub tokens: Option<u32>,
    /// What compression did, for the answer's header.
    pub compressed: Option<Report>,
    /// Some target could not take the conversation even compressed.
    pub too_long: bool,
    /// Each hook's own per-request state, by type.
    pub state: http::Extensions,
}

impl Ctx {
    pub fn new(exchange: Exchange) -> Self {
        Ctx {
            exchange,
            last: false,
            upstream_time: Duration::ZERO,
            tokens: None,
            compressed: None,
            too_long: false,
            state: http::Extensions::new(),
        }
    }
}

/// A concern around each attempt. Hooks run in the order they were given.
pub trait AttemptHook: Send + Sync {
    /// Before an attempt on `target`.
    fn before<'a>(&'a self, ctx: &'a mut Ctx, target: &'a Target) -> BoxFuture<'a, Phase>;

    /// After an attempt on `target` failed with `err`; `Go` leaves the
    /// decision to the failover rules.
    fn after_error<'a>(
        &'a self,
        _ctx: &'a mut Ctx,
        _target: &'a Target,
        _err: &'a UpstreamError,
    ) -> BoxFuture<'a, Phase> {
        Box::pin(async { Phase::Go })
    }

    /// After an attempt on `target` succeeded, before the answer goes up
    /// the stack: a hook may watch it (a stream through `SseReader::tap`).
    fn answered(&self, _ctx: &Ctx, _target: &Target, _success: &mut Success) {}
}
