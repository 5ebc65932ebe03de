//! The route table: a client's `model` becomes a [`Plan`], the ordered
//! targets a request may be sent to. Built once per config (so a request
//! only looks a name up); no I/O.

use rustc_hash::FxHashMap;
use std::sync::Arc;

use crate::config::{self, Config, Strategy};
use crate::error::ApiError;
use crate::metrics::{ProviderSeries, RouteSeries};
use crate::provider::{self, Provider};
use crate::upstream::Client;

/// What is kept per target: by provider, then model, nested so that a
/// request finds its target by reference rather than by a key built for it.
pub type ByTarget<V> = FxHashMap<String, FxHashMap<String, V>>;

/// One place a request may be sent.
#[derive(Clone)]
pub struct Target {
    pub provider: Arc<config::Provider>,
    /// The provider's dialect, built once per config.
    pub adapter: Arc<dyn Provider>,
    pub model: String,
    /// For the `weighted` strategy.
    pub weight: u32,
    /// From routes.toml, if given.
    pub context_window: Option<u32>,
    /// The provider's metrics, shared by its targets.
    pub series: Arc<ProviderSeries>,
}

/// Where one request may go, and how.
#[derive(Clone, Debug)]
pub struct Plan {
    /// A route name, or `provider/*` for direct addressing: a bounded label.
    pub label: String,
    /// Enabled targets, in the route's order.
    pub targets: Vec<Target>,
    pub strategy: Strategy,
    /// Compress conversations that do not fit a target's window.
    pub compression: bool,
    /// Continue a broken text stream on the route's next target.
    pub resume: bool,
    /// The `model` the client asked for (the default summarizer route).
    pub requested: String,
    /// The metrics of `label`.
    pub series: Arc<RouteSeries>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("provider", &self.provider.name)
            .field("model", &self.model)
            .field("weight", &self.weight)
            .field("context_window", &self.context_window)
            .finish()
    }
}

/// Every route's plan and every enabled provider's adapter, for one config.
pub struct Routes {
    /// None: the route has no enabled target.
    plans: FxHashMap<String, Option<Arc<Plan>>>,
    providers: FxHashMap<String, Enabled>,
    available: Vec<String>,
}

/// An enabled provider, built once per config.
struct Enabled {
    provider: Arc<config::Provider>,
    adapter: Arc<dyn Provider>,
    series: Arc<ProviderSeries>,
    /// The metrics of `provider/*`, its direct address.
    direct: Arc<RouteSeries>,
}

impl Enabled {
    fn target(&self, model: &str) -> Target {
        Target {
            provider: self.provider.clone(),
            adapter: self.adapter.clone(),
            model: model.to_owned(),
            weight: 1,
            context_window: None,
            series: self.series.clone(),
        }
    }
}

impl Routes {
    pub fn new(config: &Config, client: &Client) -> Self {
        let providers: FxHashMap<_, _> = config
            .providers
            .iter()
            .filter(|p| p.enabled)
            .map(|p| {
                let provider = Arc::new(p.clone());
                let enabled = Enabled {
                    adapter: provider::build(&provider, client, &config.server),
                    provider,
                    series: Arc::default(),
                    direct: Arc::default(),
                };
                (p.name.clone(), enabled)
            })
            .collect();
        let plans = config
            .routes
            .iter()
            .map(|route| {
                let targets: Vec<Target> = route
                    .targets
                    .iter()
                    .filter_map(|t| {
                        Some(Target {
                            weight: t.weight,
                            context_window: t.context_window,
                            ..providers.get(&t.provider)?.target(&t.model)
                        })
                    })
                    .collect();
                let plan = (!targets.is_empty()).then(|| {
                    Arc::new(Plan {
                        label: route.name.clone(),
                        targets,
                        strategy: route.strategy,
                        compression: route.compression,
                        resume: route.resume,
                        requested: route.name.clone(),
                        series: Arc::default(),
                    })
                });
                (route.name.clone(), plan)
            })
            .collect();
        Routes {
            plans,
            providers,
            available: available_models(config),
        }
    }

    /// `model` is a route name, or `provider/model` to address a provider
    /// directly (retries on that provider, no fallback).
    pub fn resolve(&self, model: &str) -> Result<Arc<Plan>, ApiError> {
        match self.plans.get(model) {
            Some(Some(plan)) => return Ok(plan.clone()),
            Some(None) => {
                return Err(ApiError::Unavailable(format!(
                    "route `{model}` has no enabled target: set the API key variables its providers name (see `hermes-proxy check`)"
                )))
            }
            None => {}
        }
        if let Some((name, target_model)) = model.split_once('/') {
            if let Some(enabled) = self.providers.get(name) {
                if !target_model.is_empty() {
                    return Ok(Arc::new(Plan {
                        label: format!("{name}/*"),
                        targets: vec![enabled.target(target_model)],
                        strategy: Strategy::Fallback,
                        compression: true,
                        resume: false,
                        requested: model.to_owned(),
                        series: enabled.direct.clone(),
                    }));
                }
            }
        }
        Err(ApiError::ModelNotFound {
            model: model.to_owned(),
            available: self.available.clone(),
        })
    }

    /// Route names, then `provider/model` for every target of an enabled provider.
    pub fn available(&self) -> &[String] {
        &self.available
    }

    /// Whether some route has an enabled target.
    pub fn any_usable(&self) -> bool {
        self.plans.values().any(Option::is_some)
    }
}

fn available_models(config: &Config) -> Vec<String> {
    let mut out: Vec<String> = config.routes.iter().map(|r| r.name.clone()).collect();
    for route in &config.routes {
        for t in &route.targets {
            let enabled = config.provider(&t.provider).is_some_and(|p| p.enabled);
            let id = format!("{}/{}", t.provider, t.model);
            if enabled && !out.contains(&id) {
                out.push(id);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes {
        let config = crate::config::parse(crate::config::EMBEDDED, "routes.toml", &|_| None)
            .expect("embedded config parses");
        Routes::new(&config, &Client::new(std::time::Duration::from_secs(1)))
    }

    #[test]
    fn route_name_resolves_to_enabled_targets_in_order() {
        let routes = routes();
        let r = routes.resolve("default").unwrap();
        let names: Vec<&str> = r.targets.iter().map(|c| c.provider.name.as_str()).collect();
        assert_eq!(names, ["local", "demo"]); // kimi and openrouter have no key set
        assert_eq!(r.label, "default");
    }

    #[test]
    fn provider_slash_model_addresses_one_provider_with_a_bounded_label() {
        let routes = routes();
        let r = routes.resolve("local/meta-llama/llama-3.1-8b").unwrap();
        assert_eq!(r.targets.len(), 1);
        assert_eq!(r.targets[0].model, "meta-llama/llama-3.1-8b");
        assert_eq!(r.label, "local/*");
    }

    #[test]
    fn unknown_model_lists_what_is_available() {
        let routes = routes();
        let err = routes.resolve("gpt-9").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("gpt-9") && msg.contains("default") && msg.contains("demo/demo"),
            "{msg}"
        );
        // a disabled provider cannot be addressed directly
        assert!(matches!(
            routes.resolve("kimi/kimi-k2.6"),
            Err(ApiError::ModelNotFound { .. })
        ));
    }
}
