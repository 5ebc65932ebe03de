//! The running proxy's state: the process-lifetime [`Handles`], and the
//! [`Generation`] built from one config, swapped whole on [`reload`].
//!
//! A request loads the current generation once and keeps it to the end, so a
//! reload never changes a request halfway.

pub mod reload;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::Auth;
use crate::cluster::store::SharedStore;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::service::{self, Layers};
use crate::pipeline::{Handles, RouteTable};
use crate::store::embedded::Embedded;
use crate::store::{ResponseStore, StoreError};
use reload::ConfigSource;

/// Everything derived from one config.
pub struct Generation {
    pub config: Arc<Config>,
    pub auth: Auth,
    /// Every route's stack, built once for this config.
    pub routes: Arc<RouteTable>,
}

/// The proxy while it runs: what a reload keeps and what it replaces.
pub struct State {
    /// What outlives a config, the store among it (opened at start from
    /// `[store]`: a reload that moves it takes a restart).
    pub handles: Arc<Handles>,
    current: ArcSwap<Generation>,
    /// Where the config came from, for reloads (None: the embedded default).
    pub source: Option<ConfigSource>,
    /// Route layers an embedding program added; rebuilt into every generation.
    layers: Layers,
}

impl State {
    /// The state for `config`; fails only when the store cannot be opened.
    pub fn new(config: Config) -> Result<Arc<Self>, StoreError> {
        Self::build(config, None, Layers::default())
    }

    pub fn with_source(
        config: Config,
        source: Option<ConfigSource>,
    ) -> Result<Arc<Self>, StoreError> {
        Self::build(config, source, Layers::default())
    }

    /// As `with_source`, with extra layers on named routes.
    pub fn build(
        config: Config,
        source: Option<ConfigSource>,
        layers: Layers,
    ) -> Result<Arc<Self>, StoreError> {
        let local: Arc<dyn ResponseStore> = Arc::new(Embedded::open(&config.store)?);
        let metrics = Metrics::new();
        let cluster = (config.cluster.as_ref())
            .and_then(|settings| Cluster::new(settings, metrics.cluster_up()));
        // Replicas share their store through Redis, over the embedded one.
        let store: Arc<dyn ResponseStore> = match &cluster {
            Some(cluster) => Arc::new(SharedStore::new(cluster.clone(), local, &config.store)),
            None => local,
        };
        let handles = Handles::new(config.defaults.connect_timeout, metrics, store, cluster);
        let first = generation(config, &handles, &layers);
        Ok(Arc::new(State {
            current: ArcSwap::from_pointee(first),
            handles,
            source,
            layers,
        }))
    }

    /// The generation serving now.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Builds a generation from `config` and makes it the current one.
    pub fn install(&self, config: Config) {
        let next = generation(config, &self.handles, &self.layers);
        self.current.store(Arc::new(next));
    }

    /// The metrics page. Gauges that describe state (cooldowns) are set from
    /// that state here, so they can never be left stale.
    pub fn render_metrics(&self) -> Vec<u8> {
        let h = &self.handles;
        let cooling = h.cooldowns.cooling_providers(tokio::time::Instant::now());
        for p in &self.current.load().config.providers {
            let v = i64::from(cooling.contains(&p.name));
            h.metrics.cooldown.with_label_values(&[&p.name]).set(v);
        }
        h.metrics.render()
    }
}

fn generation(config: Config, handles: &Arc<Handles>, layers: &Layers) -> Generation {
    handles.metrics.register_series(&config);
    let routes = service::build(&config, handles, layers);
    Generation {
        auth: Auth::new(&config.server.keys, handles.cluster.clone()),
        config: Arc::new(config),
        routes,
    }
}
