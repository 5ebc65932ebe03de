//! A second level under a replica's own caches (conversation summaries, the
//! reasoning round trip, learned per-target quirks): text values under a
//! kind and the local cache's own `u64` key, and sets of names, each with an
//! expiry.
//!
//! The caller keeps its local cache as the first level and asks here only
//! on a local miss (one round trip for many keys, bounded by `[cluster]
//! timeout`); writes go off the request's path, in their own task.

use std::sync::Arc;
use std::time::Duration;

use super::Cluster;

impl Cluster {
    /// The values kept under `keys` of `kind`, in one round trip: one entry
    /// per key, None where nothing is kept. None: Redis is not there.
    pub async fn recall(&self, kind: &str, keys: &[u64]) -> Option<Vec<Option<String>>> {
        if keys.is_empty() {
            return Some(Vec::new());
        }
        let mut get = redis::cmd("MGET");
        for key in keys {
            get.arg(self.cache_key(kind, *key));
        }
        let values: Vec<Option<String>> = self
            .run(|mut conn| async move { get.query_async(&mut conn).await })
            .await?;
        (values.len() == keys.len()).then_some(values)
    }

    /// Keeps `value` under `key` of `kind` for `ttl`, in the background.
    pub fn remember(self: &Arc<Self>, kind: &str, key: u64, value: String, ttl: Duration) {
        if !self.is_up() {
            return;
        }
        let key = self.cache_key(kind, key);
        let cluster = self.clone();
        tokio::spawn(async move {
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(value).arg("PX").arg(millis(ttl));
            cluster
                .run(|mut conn| async move { set.query_async::<()>(&mut conn).await })
                .await
        });
    }

    fn cache_key(&self, kind: &str, key: u64) -> String {
        self.key(kind, &[&format!("{key:016x}")])
    }

    /// Adds `member` to the set `kind`, whose expiry becomes `ttl` from now,
    /// in the background.
    pub fn add_member(self: &Arc<Self>, kind: &str, member: String, ttl: Duration) {
        if !self.is_up() {
            return;
        }
        let key = self.key(kind, &[]);
        let cluster = self.clone();
        tokio::spawn(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("SADD").arg(&key).arg(member).ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(millis(ttl)).ignore();
            cluster
                .run(|mut conn| async move { pipe.query_async::<()>(&mut conn).await })
                .await
        });
    }

    /// The members of the set `kind`. None: Redis is not there.
    pub async fn members(&self, kind: &str) -> Option<Vec<String>> {
        let key = self.key(kind, &[]);
        self.run(|mut conn| async move {
            redis::cmd("SMEMBERS")
                .arg(&key)
                .query_async(&mut conn)
                .await
        })
        .await
    }
}

/// Whole milliseconds, at least one (Redis refuses an expiry of 0).
pub(crate) fn millis(d: Duration) -> u64 {
    d.as_millis().clamp(1, u128::from(u64::MAX)) as u64
}
