//! Several replicas as one: the state they share through Redis when
//! `[cluster] redis_url_env` is set.
//!
//! Every replica keeps its local state (cooldowns, limiters, the embedded
//! store) and Redis is an addition to it, never a dependency: a call that
//! fails or takes longer than `[cluster] timeout` marks Redis down, the
//! caller goes on with its local state, and a watcher pings until Redis
//! answers again. While Redis is down no call waits on it.
//!
//! - [`cooldowns`]: a cooldown or busy mark seen by one replica reaches the
//!   others' local tables through pub/sub (no round trip on the hot path).
//! - [`gcra`]: `rpm`/`tpm` limits as one GCRA per key, in a Lua script.
//! - [`store`]: stored responses, agent sessions and memory, over each
//!   replica's embedded store.
//! - [`cache`]: a second level under local caches (conversation summaries,
//!   the reasoning round trip), asked on a local miss.

pub mod cache;
pub mod cooldowns;
pub mod gcra;
pub mod store;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;

use crate::config;

/// How often a replica asks Redis whether it is there: often while it is
/// down (to resume sharing soon), now and then while it is up (to notice a
/// Redis that died while nothing was asking).
pub(crate) const PROBE_DOWN: Duration = Duration::from_millis(250);
const PROBE_UP: Duration = Duration::from_secs(1);

pub struct Cluster {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    up: AtomicBool,
    gauge: prometheus::IntGauge,
    /// This process, so that it can skip its own broadcasts.
    pub replica: String,
    leases: gcra::Leases,
    born: std::time::Instant,
    /// The minute (since `born`, from 1) a refusal was last logged.
    refusal_said: std::sync::atomic::AtomicU64,
    /// Counts Redis coming back after being down: the subscriber then
    /// subscribes again and reads what it missed.
    returns: tokio::sync::watch::Sender<u64>,
}

impl Cluster {
    /// The cluster `settings` describe, or None when its URL is unset or
    /// does not parse (said once in the log; the replica then runs alone).
    /// Connects lazily: Redis need not be up when the proxy starts.
    pub fn new(settings: &config::Cluster, gauge: prometheus::IntGauge) -> Option<Arc<Self>> {
        let url = settings.redis_url.as_ref()?;
        // The error text may quote the URL, which may hold a password.
        let Ok(client) = redis::Client::open(url.expose()) else {
            tracing::error!(
                "[cluster] is off: {} does not hold a redis:// URL",
                settings.redis_url_env
            );
            return None;
        };
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(settings.timeout))
            .set_connection_timeout(Some(settings.timeout.max(Duration::from_millis(250))))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200));
        let conn = match ConnectionManager::new_lazy_with_config(client.clone(), config) {
            Ok(conn) => conn,
            Err(err) => {
                tracing::error!("[cluster] is off: {}", err.category());
                return None;
            }
        };
        gauge.set(0);
        let cluster = Arc::new(Cluster {
            client,
            conn,
            prefix: settings.prefix.clone(),
            timeout: settings.timeout,
            // Assumed up until a call says otherwise, so the first requests
            // already share; a Redis that is not there costs them one timeout.
            up: AtomicBool::new(true),
            gauge,
            replica: replica_id(),
            leases: gcra::Leases::default(),
            returns: tokio::sync::watch::Sender::new(0),
            born: std::time::Instant::now(),
            refusal_said: std::sync::atomic::AtomicU64::new(0),
        });
        tokio::spawn(probe(Arc::downgrade(&cluster)));
        Some(cluster)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// `{prefix}:{kind}:{part}:{part}...`, with `%` and `:` escaped in the
    /// parts so that names holding colons (`qwen3:8b`) cannot collide.
    pub fn key(&self, kind: &str, parts: &[&str]) -> String {
        let mut key = format!("{}:{kind}", self.prefix);
        for part in parts {
            key.push(':');
            for c in part.chars() {
                match c {
                    '%' => key.push_str("%25"),
                    ':' => key.push_str("%3A"),
                    c => key.push(c),
                }
            }
        }
        key
    }

    /// Runs `call` on the shared connection within the timeout. None when
    /// Redis is down, failed or was too slow: the caller uses local state.
    pub async fn run<T, F, Fut>(&self, call: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.is_up() {
            return None;
        }
        match tokio::time::timeout(self.timeout, call(self.conn.clone())).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(err)) if !unreachable(&err) => {
                // Redis answered: it is up, this one command was refused
                // (out of memory, read-only...). Said once a minute, not
                // once a request.
                let minute = self.born.elapsed().as_secs() / 60 + 1;
                if self.refusal_said.swap(minute, Ordering::Relaxed) != minute {
                    tracing::warn!(
                        "redis refuses commands ({}): this replica uses its local state for them",
                        err.category()
                    );
                }
                None
            }
            Ok(Err(err)) => {
                self.went_down(err.category());
                None
            }
            Err(_) => {
                self.went_down("no answer within [cluster] timeout");
                None
            }
        }
    }

    /// A separate connection for subscribing (a subscribed connection can
    /// send nothing else).
    pub(crate) async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        self.client.get_async_pubsub().await
    }

    pub(crate) fn channel(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    fn went_down(&self, why: &str) {
        if self.up.swap(false, Ordering::Relaxed) {
            self.gauge.set(0);
            tracing::warn!(
                "redis is unreachable ({why}): this replica goes on with its local state \
                 until it is back"
            );
        }
    }

    fn came_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("redis is back: sharing state with the other replicas again");
            self.returns.send_modify(|n| *n += 1);
        }
        self.gauge.set(1);
    }

    /// Changes each time Redis comes back after being down.
    pub(crate) fn returns(&self) -> tokio::sync::watch::Receiver<u64> {
        self.returns.subscribe()
    }
}

fn unreachable(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_unrecoverable_error()
}

/// Unique enough among the replicas of one deployment: pid and start time.
fn replica_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

/// Pings Redis for as long as the cluster exists.
async fn probe(cluster: std::sync::Weak<Cluster>) {
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let ping = async {
            let mut conn = c.conn.clone();
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        match tokio::time::timeout(c.timeout, ping).await {
            Ok(Ok(_)) => c.came_up(),
            Ok(Err(err)) => c.went_down(err.category()),
            Err(_) => c.went_down("no answer within [cluster] timeout"),
        }
        let wait = if c.is_up() { PROBE_UP } else { PROBE_DOWN };
        drop(c);
        tokio::time::sleep(wait).await;
    }
}
