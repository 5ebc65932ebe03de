//! Each route's stack, built once per config: the route's layers around
//! [`Failover`], outermost first. A concern that wraps a route (the agent
//! loop, a cache, a guardrail) is a `tower::Layer` added here, never a branch
//! in the attempt loop.
//!
//! ```text
//! RouteService = [extra layers for this route] -> [AgentLayer if agent = true] -> Failover
//!                   (per attempt: ReasoningHook, FitHook, LimitsHook) -> Provider
//! ```

use rustc_hash::FxHashMap;
use std::sync::Arc;

use tower::{Layer, Service};

use super::agent::AgentLayer;
use super::compress::fit::FitHook;
use super::exchange::{Exchange, RouteService, RouteTable, Served};
use super::failover::limits::LimitsHook;
use super::failover::Failover;
use super::reasoning::ReasoningHook;
use super::Handles;
use crate::config::Config;
use crate::error::ApiError;
use crate::route::Routes;
use crate::tools;

/// Wraps one route's stack.
pub type RouteLayer = Arc<dyn Fn(RouteService) -> RouteService + Send + Sync>;

/// Type-erases a `tower::Layer` over route stacks.
pub fn route_layer<L>(layer: L) -> RouteLayer
where
    L: Layer<RouteService> + Send + Sync + 'static,
    L::Service:
        Service<Exchange, Response = Served, Error = ApiError> + Clone + Send + Sync + 'static,
    <L::Service as Service<Exchange>>::Future: Send + 'static,
{
    Arc::new(move |inner| RouteService::new(layer.layer(inner)))
}

/// Layers added to named routes, kept across reloads and applied to every
/// stack built for those routes, in the order added (the last one outermost).
#[derive(Clone, Default)]
pub struct Layers {
    by_route: Vec<(String, RouteLayer)>,
}

impl Layers {
    pub fn add(mut self, route: &str, layer: RouteLayer) -> Self {
        self.by_route.push((route.to_owned(), layer));
        self
    }
}

/// Every route's stack for `config`.
pub fn build(config: &Config, handles: &Arc<Handles>, layers: &Layers) -> Arc<RouteTable> {
    // Hooks run in this order before each attempt: a conversation is fitted
    // to the target first, then charged to its limits at its real size.
    let failover = Failover::new(
        handles.clone(),
        config.defaults.clone(),
        crate::provider::Limits::from_config(config),
        vec![
            // Restored reasoning is part of the conversation to fit.
            Box::new(ReasoningHook::new(
                handles.reasoning.clone(),
                handles.metrics.reasoning_roundtrip.clone(),
            )),
            Box::new(FitHook::new(handles.clone(), config.compression.clone())),
            Box::new(LimitsHook::new(
                handles.limits.clone(),
                config.defaults.max_retry_wait,
            )),
        ],
    );
    // One toolbox for every agent route of this config.
    let toolbox = config.routes.iter().any(|r| r.agent).then(|| {
        let mut settings = tools::Settings::from_config(&config.agent);
        settings.private.push(config.store.path.clone().into());
        tools::Toolbox::new(settings, config.defaults.connect_timeout)
            .map(Arc::new)
            .inspect_err(|why| tracing::error!("agent routes cannot run their tools: {why}"))
    });
    let services: FxHashMap<String, RouteService> = config
        .routes
        .iter()
        .map(|route| {
            let mut stack = RouteService::new(failover.clone());
            if let Some(toolbox) = toolbox.as_ref().filter(|_| route.agent) {
                let agent = AgentLayer::new(
                    &route.name,
                    toolbox.clone(),
                    config.agent.max_steps,
                    handles.clone(),
                );
                stack = RouteService::new(agent.layer(stack));
            }
            let stack = layers
                .by_route
                .iter()
                .filter(|(name, _)| *name == route.name)
                .fold(stack, |inner, (_, layer)| layer(inner));
            (route.name.clone(), stack)
        })
        .collect();
    let routes = Routes::new(config, &handles.client);
    Arc::new(RouteTable::new(
        routes,
        services,
        RouteService::new(failover),
    ))
}
