//! The canonical request and answer every route's stack speaks, whatever
//! dialect the client used: an [`Exchange`] goes down, a [`Served`] comes back.

use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::util::BoxCloneSyncService;

use crate::error::ApiError;
use crate::provider::{Answer, Native};
use crate::route::{Plan, Routes};
use crate::wire::agent::ToolStep;
use crate::wire::chat::{ChatBody, Endpoint};

/// One request on its way to an upstream.
pub struct Exchange {
    pub endpoint: Endpoint,
    /// The request body in the canonical (Chat Completions) schema.
    pub body: ChatBody,
    /// Where it may go.
    pub plan: Arc<Plan>,
    /// Nothing is started (no attempt, no backoff) that would end after this.
    pub deadline: Instant,
    /// The config's routes, for work that is itself a routed request (a
    /// summary, a resumed stream, an agent's next step).
    pub routes: Arc<RouteTable>,
    /// Who asked, for the layers that act for a client (the agent loop);
    /// None for the proxy's own requests (a summary), which they pass through.
    pub caller: Option<Arc<Caller>>,
    /// The client's request in its own dialect, for a target that speaks it
    /// (see [`Native`]); sent only while `body` is the client's as it came.
    pub native: Option<Arc<Native>>,
}

/// The client behind a request, as the layers that keep state for it
/// (the agent loop's sessions and memory) need it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Caller {
    /// The client key's name ("" when the proxy has no keys).
    pub owner: String,
    /// `X-Hermes-Session-Id`.
    pub session: Option<String>,
    /// `X-Hermes-Memory-Scope`.
    pub memory_scope: Option<String>,
}

/// What came back, before anything reached the client.
pub struct Served {
    pub answer: Answer,
    /// The provider and model that answered.
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
    /// Set when the agent loop answered; its steps' usage is already counted.
    pub agent: Option<AgentReport>,
    /// The answer is in the client's own dialect (the request went as
    /// `Exchange::native`), not the canonical one.
    pub native: bool,
}

/// What the agent loop did for an answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentReport {
    /// Upstream requests made; 0 until known (a stream's loop runs on).
    pub steps: u32,
    /// The built-in calls it ran, for answers that are not streamed.
    pub tools: Vec<ToolStep>,
}

/// A route's whole stack as one cloneable service.
pub type RouteService = BoxCloneSyncService<Exchange, Served, ApiError>;

/// Every route's stack for one config, built once when it is loaded.
pub struct RouteTable {
    routes: Routes,
    services: FxHashMap<String, RouteService>,
    /// For `provider/model`: no route, so no route layers.
    direct: RouteService,
}

impl RouteTable {
    pub fn new(
        routes: Routes,
        services: FxHashMap<String, RouteService>,
        direct: RouteService,
    ) -> Self {
        RouteTable {
            routes,
            services,
            direct,
        }
    }

    /// The plan for `model` and the stack to send it down.
    pub fn resolve(&self, model: &str) -> Result<(Arc<Plan>, RouteService), ApiError> {
        let plan = self.routes.resolve(model)?;
        let service = self.services.get(&plan.label).unwrap_or(&self.direct);
        Ok((plan, service.clone()))
    }

    pub fn routes(&self) -> &Routes {
        &self.routes
    }
}

/// What compression did, for the `x-hermes-compressed` header and the log.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    pub steps: Vec<&'static str>,
    pub before: u32,
    pub after: u32,
}

impl Report {
    pub fn header(&self) -> String {
        format!(
            "{}; {}->{} tokens",
            self.steps.join("+"),
            self.before,
            self.after
        )
    }
}
