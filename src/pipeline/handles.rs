//! What outlives a config, handed to the parts of the pipeline that need it.

use std::sync::Arc;
use std::time::Duration;

use super::compress::summarizer::SUMMARIES_KEPT_FOR;
use super::compress::window::Windows;
use super::failover::balance::Latencies;
use super::failover::cooldown::Cooldowns;
use super::failover::limits::Limits;
use super::reasoning::Remembered;
use crate::cluster::{cooldowns, Cluster};
use crate::metrics::{Metrics, ProviderSeries};
use crate::store::ResponseStore;
use crate::upstream::Client;
use crate::wire::usage::Usage;

/// What outlives a config: the connection pool, cooldowns, limiters, latency
/// estimates, learned windows, cached summaries and the store. A reload builds new
/// routes over the same handles, so an unchanged provider keeps them all.
pub struct Handles {
    pub client: Client,
    pub metrics: Metrics,
    pub cooldowns: Cooldowns,
    pub limits: Arc<Limits>,
    pub latencies: Latencies,
    pub windows: Windows,
    /// Conversation summaries by prefix key (see `compress`), so a growing
    /// conversation is not summarized again on every turn; with a cluster,
    /// the first level over the replicas' shared ones.
    pub summaries: moka::sync::Cache<u64, String>,
    /// Stored responses, agent sessions and memory.
    pub store: Arc<dyn ResponseStore>,
    /// Each tool-call answer's reasoning, to give back to the clients that drop it.
    pub reasoning: Arc<Remembered>,
    /// The other replicas, through Redis (`[cluster]`); None: this one runs alone.
    pub cluster: Option<Arc<Cluster>>,
}

impl Handles {
    /// The handles of one process. With a cluster, its cooldowns are shared
    /// with the other replicas from here on.
    pub fn new(
        connect_timeout: Duration,
        metrics: Metrics,
        store: Arc<dyn ResponseStore>,
        cluster: Option<Arc<Cluster>>,
    ) -> Arc<Self> {
        let handles = Arc::new(Handles {
            client: Client::new(connect_timeout),
            metrics,
            cooldowns: Cooldowns::default(),
            limits: Arc::new(Limits::new(cluster.clone())),
            latencies: Latencies::default(),
            windows: Windows::default(),
            summaries: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(SUMMARIES_KEPT_FOR)
                .build(),
            store,
            reasoning: Arc::new(Remembered::new(cluster.clone())),
            cluster,
        });
        if let Some(cluster) = &handles.cluster {
            let weak = Arc::downgrade(&handles);
            let outbox = cooldowns::share(cluster.clone(), move |note| {
                if let Some(handles) = weak.upgrade() {
                    handles.cooldowns.adopt(&note, tokio::time::Instant::now());
                }
            });
            handles.cooldowns.share_with(outbox);
        }
        handles
    }

    /// An answer's real token usage: counted in metrics (into `series` when
    /// the caller has the provider's), and charged to the provider's `tpm`
    /// budget where it exceeded the estimate made before sending.
    pub fn account(
        &self,
        provider: &str,
        series: Option<&ProviderSeries>,
        estimated: u32,
        usage: Usage,
    ) {
        match series {
            Some(series) => series.record_usage(&self.metrics, provider, usage),
            None => ProviderSeries::default().record_usage(&self.metrics, provider, usage),
        }
        let actual = usage.prompt + usage.completion;
        if let Some(extra) = actual.checked_sub(u64::from(estimated)).filter(|n| *n > 0) {
            self.limits
                .charge(provider, extra.min(u64::from(u32::MAX)) as u32);
        }
    }
}
