//! What every request reads: the runtime built from one config, swapped
//! whole on reload, and the parts that live as long as the process.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::Auth;
use crate::config::Config;
use crate::metrics::Metrics;
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

pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub client: Client,
    pub metrics: Metrics,
}

impl Shared {
    pub fn new(config: Config) -> Arc<Self> {
        let client = Client::new(config.defaults.connect_timeout);
        Arc::new(Shared {
            runtime: ArcSwap::from_pointee(Runtime::new(config)),
            client,
            metrics: Metrics::new(),
        })
    }
}
