//! The agent loop as a route layer: on a route with `agent = true`, a chat
//! request (and so a Responses one) is answered by running the tool loop
//! here. The built-in tools are offered beside the client's own; each step
//! is one request down the rest of the route's stack, so failover,
//! cooldowns, limits and compression protect every step.
//!
//! - [`run`]: the loop, whole or streamed
//! - [`reply`]: one step's reply and the assistant message it becomes
//! - [`events`]: a streamed step's chunks
//! - [`sink`]: the stream the client's answer is written to
//! - [`conversation`]: sessions and memory around the loop

mod conversation;
mod events;
mod reply;
mod run;
mod sink;

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tower::{Layer, Service, ServiceExt};

use super::exchange::{Exchange, RouteService, Served};
use super::Handles;
use crate::error::ApiError;
use crate::tools::Toolbox;
use crate::wire::chat::Endpoint;

/// What every request of one agent route shares.
struct Shared {
    route: String,
    /// Why the tools cannot run, when they cannot (a workspace that cannot
    /// be created): every agent request is told so.
    toolbox: Result<Arc<Toolbox>, String>,
    max_steps: u32,
    handles: Arc<Handles>,
}

/// Wraps a route's stack in the agent loop.
pub struct AgentLayer {
    shared: Arc<Shared>,
}

impl AgentLayer {
    pub fn new(
        route: &str,
        toolbox: Result<Arc<Toolbox>, String>,
        max_steps: u32,
        handles: Arc<Handles>,
    ) -> Self {
        AgentLayer {
            shared: Arc::new(Shared {
                route: route.to_owned(),
                toolbox,
                max_steps: max_steps.max(1),
                handles,
            }),
        }
    }
}

impl Layer<RouteService> for AgentLayer {
    type Service = Agent;

    fn layer(&self, inner: RouteService) -> Agent {
        Agent {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Agent {
    inner: RouteService,
    shared: Arc<Shared>,
}

impl Service<Exchange> for Agent {
    type Response = Served;
    type Error = ApiError;
    type Future = BoxFuture<'static, Result<Served, ApiError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ApiError>> {
        // Each step takes its own clone of the inner stack when it runs.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, exchange: Exchange) -> Self::Future {
        let inner = self.inner.clone();
        // Embeddings and legacy completions have no tools; the proxy's own
        // requests (summaries) are not the client's task.
        if exchange.endpoint != Endpoint::Chat || exchange.caller.is_none() {
            return Box::pin(inner.oneshot(exchange));
        }
        Box::pin(run::run(inner, self.shared.clone(), exchange))
    }
}
