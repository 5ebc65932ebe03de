//! The route table: a client's `model` becomes an ordered list of candidate
//! targets. Pure lookups over the config; no I/O.

use crate::config::{Config, Provider, Strategy};
use crate::error::ApiError;

/// One place a request may be sent.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub provider: &'a Provider,
    pub model: &'a str,
    /// For the `weighted` strategy.
    pub weight: u32,
    /// From routes.toml, if given.
    pub context_window: Option<u32>,
}

#[derive(Debug)]
pub struct Resolved<'a> {
    /// A route name, or `provider/*` for direct addressing: a bounded label.
    pub label: String,
    /// Enabled targets, in the route's order.
    pub candidates: Vec<Candidate<'a>>,
    pub strategy: Strategy,
    /// Compress conversations that do not fit a target's window.
    pub compression: bool,
    /// The `model` the client asked for (the default summarizer route).
    pub requested: String,
}

/// `model` is a route name, or `provider/model` to address a provider directly
/// (retries on that provider, no fallback).
pub fn resolve<'a>(config: &'a Config, model: &'a str) -> Result<Resolved<'a>, ApiError> {
    if let Some(route) = config.route(model) {
        let candidates: Vec<Candidate> = route
            .targets
            .iter()
            .filter_map(|t| {
                let provider = config.provider(&t.provider)?;
                provider.enabled.then_some(Candidate {
                    provider,
                    model: &t.model,
                    weight: t.weight,
                    context_window: t.context_window,
                })
            })
            .collect();
        if candidates.is_empty() {
            return Err(ApiError::Unavailable(format!(
                "route `{model}` has no enabled target: set the API key variables its providers name (see `hermes-proxy check`)"
            )));
        }
        return Ok(Resolved {
            label: route.name.clone(),
            candidates,
            strategy: route.strategy,
            compression: route.compression,
            requested: model.to_owned(),
        });
    }
    if let Some((provider_name, target_model)) = model.split_once('/') {
        if let Some(provider) = config.provider(provider_name).filter(|p| p.enabled) {
            if !target_model.is_empty() {
                return Ok(Resolved {
                    label: format!("{provider_name}/*"),
                    candidates: vec![Candidate {
                        provider,
                        model: target_model,
                        weight: 1,
                        context_window: None,
                    }],
                    strategy: Strategy::Fallback,
                    compression: true,
                    requested: model.to_owned(),
                });
            }
        }
    }
    Err(ApiError::ModelNotFound {
        model: model.to_owned(),
        available: available_models(config),
    })
}

/// Route names, then `provider/model` for every target of an enabled provider.
pub fn available_models(config: &Config) -> Vec<String> {
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

    fn config() -> Config {
        crate::config::parse(crate::config::EMBEDDED, "routes.toml", &|_| None)
            .expect("embedded config parses")
    }

    #[test]
    fn route_name_resolves_to_enabled_targets_in_order() {
        let config = config();
        let r = resolve(&config, "default").unwrap();
        let names: Vec<&str> = r
            .candidates
            .iter()
            .map(|c| c.provider.name.as_str())
            .collect();
        assert_eq!(names, ["local", "demo"]); // kimi and openrouter have no key set
        assert_eq!(r.label, "default");
    }

    #[test]
    fn provider_slash_model_addresses_one_provider_with_a_bounded_label() {
        let config = config();
        let r = resolve(&config, "local/meta-llama/llama-3.1-8b").unwrap();
        assert_eq!(r.candidates.len(), 1);
        assert_eq!(r.candidates[0].model, "meta-llama/llama-3.1-8b");
        assert_eq!(r.label, "local/*");
    }

    #[test]
    fn unknown_model_lists_what_is_available() {
        let config = config();
        let err = resolve(&config, "gpt-9").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("gpt-9") && msg.contains("default") && msg.contains("demo/demo"),
            "{msg}"
        );
        // a disabled provider cannot be addressed directly
        assert!(matches!(
            resolve(&config, "kimi/kimi-k2.6"),
            Err(ApiError::ModelNotFound { .. })
        ));
    }
}
