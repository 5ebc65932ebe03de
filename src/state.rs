//! What every request reads: the runtime built from one config, swapped
//! whole on reload, and the parts that live as long as the process.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::Auth;
use crate::balance::Latencies;
use crate::config::Config;
use crate::context::Windows;
use crate::cooldown::Cooldowns;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::provider::normalize::Usage;
use crate::reload::ConfigSource;
use crate::upstream::Client;

/// Everything derived from one config. A request loads it once and keeps it
/// to the end, so a reload never changes a request halfway.
pub struct Runtime {
    pub config: Config,
    pub auth: Auth,
}

impl Runtime {
    pub fn new(config: Config) -> Self {
        let auth = Auth::new(&config.server.keys);
        Runtime { config, auth }
    }
}

/// Lives as long as the process: what must survive a reload (pools,
/// cooldowns, limiters, latency estimates) is here, not in `Runtime`.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub client: Client,
    pub metrics: Metrics,
    pub cooldowns: Cooldowns,
    pub limits: Limits,
    pub latencies: Latencies,
    pub windows: Windows,
    /// Conversation summaries by prefix key (see `compress`), so a growing
    /// conversation is not summarized again on every turn.
    pub summaries: moka::sync::Cache<u64, String>,
    /// Where the config came from, for reloads (None: the embedded default).
    pub source: Option<ConfigSource>,
}

impl Shared {
    pub fn new(config: Config) -> Arc<Self> {
        Self::with_source(config, None)
    }

    pub fn with_source(config: Config, source: Option<ConfigSource>) -> Arc<Self> {
        let client = Client::new(config.defaults.connect_timeout);
        let metrics = Metrics::new();
        metrics.register_series(&config);
        Arc::new(Shared {
            runtime: ArcSwap::from_pointee(Runtime::new(config)),
            client,
            metrics,
            cooldowns: Cooldowns::default(),
            limits: Limits::default(),
            latencies: Latencies::default(),
            windows: Windows::default(),
            summaries: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(std::time::Duration::from_secs(3600))
                .build(),
            source,
        })
    }

    /// The metrics page. Gauges that describe state (cooldowns) are set from
    /// that state here, so they can never be left stale.
    pub fn render_metrics(&self) -> Vec<u8> {
        let cooling = self
            .cooldowns
            .cooling_providers(tokio::time::Instant::now());
        for p in &self.runtime.load().config.providers {
            let v = i64::from(cooling.contains(&p.name));
            self.metrics.cooldown.with_label_values(&[&p.name]).set(v);
        }
        self.metrics.render()
    }

    /// An answer's real token usage: counted in metrics, and charged to the
    /// provider's `tpm` budget where it exceeded the estimate made before sending.
    pub fn account(&self, provider: &str, estimated: u32, usage: Usage) {
        self.metrics.record_usage(provider, usage);
        let actual = usage.prompt + usage.completion;
        if let Some(extra) = actual.checked_sub(u64::from(estimated)).filter(|n| *n > 0) {
            self.limits
                .charge(provider, extra.min(u64::from(u32::MAX)) as u32);
        }
    }
}
