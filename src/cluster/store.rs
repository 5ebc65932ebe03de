//! The store of replicas: stored responses, agent sessions and memory kept
//! in Redis, so that a `previous_response_id`, a `GET /v1/responses/{id}`,
//! a session or a memory made through one replica is found through any.
//!
//! It wraps the replica's embedded store and never depends on Redis: every
//! write goes to both (Redis best-effort, within `[cluster] timeout`), every
//! read asks Redis first and the embedded store when Redis does not know
//! the id or is not there. So a replica keeps serving, and keeps its own
//! responses, while Redis is away, and a response read back on the replica
//! that made it is found even before its Redis write has landed.
//!
//! Keys (all under `{prefix}:`):
//! - `response:{id}`: a hash (`owner`, `created_at`, `input`, `response`),
//!   expiring `[store] ttl` after `created_at`. A deleted response leaves
//!   its hash as a tombstone (`owner`, `deleted`) until then, so no replica
//!   falls back to its own copy of it.
//! - `responses`: a sorted set of those keys by `created_at`, the index that
//!   `[store] max_responses` is enforced on: every put adds to it, drops the
//!   expired and then the oldest beyond the cap (their hashes with them), in
//!   one Lua script.
//! - `record:{kind}:{owner}:{key}`: a session or memory, expiring `ttl`
//!   after its last write, like the embedded store's records.
//!
//! The scripts build no key names of their own beyond the index entries,
//! which are whole key names: a single Redis (or Valkey) server, not Redis
//! Cluster's sharding.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use redis::Script;

use super::Cluster;
use crate::config;
use crate::store::{Kind, ResponseStore, StoreError, StoredResponse};

/// KEYS: the response's hash, the index. ARGV: owner, created_at, input,
/// response, when it expires (unix s), max_responses, the oldest
/// created_at still alive.
const PUT: &str = r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'created_at', ARGV[2],
  'input', ARGV[3], 'response', ARGV[4])
redis.call('EXPIREAT', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[2], KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[7])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[6])
if over > 0 then
  local oldest = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #oldest, 2 do redis.call('DEL', oldest[i]) end
end
return 0
";

/// KEYS: the response's hash, the index. ARGV: the owner. 1 when it was
/// there and is now a tombstone, 0 when there was none of this owner's.
const DELETE: &str = r"
local found = redis.call('HMGET', KEYS[1], 'owner', 'deleted')
if found[1] ~= ARGV[1] or found[2] then return 0 end
redis.call('HDEL', KEYS[1], 'created_at', 'input', 'response')
redis.call('HSET', KEYS[1], 'deleted', '1')
redis.call('ZREM', KEYS[2], KEYS[1])
return 1
";

static PUT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PUT));
static DELETE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(DELETE));

/// Stored responses, sessions and memory in Redis over the embedded store.
pub struct SharedStore {
    cluster: Arc<Cluster>,
    local: Arc<dyn ResponseStore>,
    max_responses: u32,
    ttl: Duration,
}

/// What Redis says of one response id.
enum Said {
    Found(StoredResponse),
    /// Deleted, or another owner's: absent, whatever a local copy says.
    Absent,
    /// Redis does not know it, or is not there: the local store decides.
    Unknown,
}

impl SharedStore {
    /// Shares through `cluster` what `local` keeps, with `settings`' cap and expiry.
    pub fn new(
        cluster: Arc<Cluster>,
        local: Arc<dyn ResponseStore>,
        settings: &config::Store,
    ) -> Self {
        SharedStore {
            cluster,
            local,
            max_responses: settings.max_responses,
            ttl: settings.ttl,
        }
    }

    fn index(&self) -> String {
        self.cluster.key("responses", &[])
    }

    fn record(&self, kind: Kind, owner: &str, key: &str) -> String {
        self.cluster.key("record", &[kind.as_str(), owner, key])
    }

    /// The Redis write of `r`, started now in its own task (so writes reach
    /// Redis in the order they were made); its outcome is only logged.
    fn share(&self, r: &StoredResponse) -> Option<tokio::task::JoinHandle<()>> {
        if !self.cluster.is_up() {
            return None;
        }
        let ttl = self.ttl.as_secs();
        let mut put = PUT_SCRIPT.prepare_invoke();
        put.key(self.cluster.key("response", &[&r.id]))
            .key(self.index())
            .arg(&r.owner)
            .arg(r.created_at)
            .arg(&r.input)
            .arg(&r.response)
            .arg(r.created_at.saturating_add(ttl))
            .arg(self.max_responses)
            .arg(now().saturating_sub(ttl));
        let cluster = self.cluster.clone();
        Some(tokio::spawn(async move {
            cluster
                .run(|mut conn| async move { put.invoke_async::<()>(&mut conn).await })
                .await;
        }))
    }

    async fn ask(&self, owner: &str, id: &str) -> Said {
        let key = self.cluster.key("response", &[id]);
        let fields: Option<Vec<Option<String>>> = self
            .cluster
            .run(|mut conn| async move {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg(&["owner", "created_at", "input", "response", "deleted"][..])
                    .query_async(&mut conn)
                    .await
            })
            .await;
        let Some([stored_owner, created_at, input, response, deleted]) =
            fields.and_then(|f| <[Option<String>; 5]>::try_from(f).ok())
        else {
            return Said::Unknown;
        };
        let Some(stored_owner) = stored_owner else {
            return Said::Unknown;
        };
        if stored_owner != owner {
            return Said::Absent;
        }
        if deleted.is_some() {
            // Deleted through another replica: this one's copy goes too.
            let (local, owner, id) = (self.local.clone(), owner.to_owned(), id.to_owned());
            tokio::spawn(async move { local.delete(&owner, &id).await });
            return Said::Absent;
        }
        match (created_at.and_then(|c| c.parse().ok()), input, response) {
            (Some(created_at), Some(input), Some(response)) => Said::Found(StoredResponse {
                id: id.to_owned(),
                owner: stored_owner,
                created_at,
                input,
                response,
            }),
            _ => Said::Unknown,
        }
    }
}

impl ResponseStore for SharedStore {
    fn put(&self, r: StoredResponse) -> BoxFuture<'static, Result<(), StoreError>> {
        let shared = self.share(&r);
        let local = self.local.put(r);
        Box::pin(async move {
            if let Some(shared) = shared {
                let _ = shared.await;
            }
            local.await
        })
    }

    fn get<'a>(
        &'a self,
        owner: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredResponse>, StoreError>> {
        Box::pin(async move {
            match self.ask(owner, id).await {
                Said::Found(r) => Ok(Some(r)),
                Said::Absent => Ok(None),
                Said::Unknown => self.local.get(owner, id).await,
            }
        })
    }

    fn delete<'a>(
        &'a self,
        owner: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let key = self.cluster.key("response", &[id]);
        let index = self.index();
        let shared = async move {
            let mut delete = DELETE_SCRIPT.prepare_invoke();
            delete.key(key).key(index).arg(owner);
            self.cluster
                .run(|mut conn| async move { delete.invoke_async::<i64>(&mut conn).await })
                .await
        };
        Box::pin(async move {
            let (shared, local) = tokio::join!(shared, self.local.delete(owner, id));
            match shared {
                Some(1) => Ok(true),
                _ => local,
            }
        })
    }

    fn load<'a>(
        &'a self,
        kind: Kind,
        owner: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let record = self.record(kind, owner, key);
        Box::pin(async move {
            let shared: Option<Option<String>> = self
                .cluster
                .run(|mut conn| async move {
                    redis::cmd("GET").arg(&record).query_async(&mut conn).await
                })
                .await;
            match shared.flatten() {
                Some(value) => Ok(Some(value)),
                None => self.local.load(kind, owner, key).await,
            }
        })
    }

    fn save(
        &self,
        kind: Kind,
        owner: &str,
        key: &str,
        value: String,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let shared = self.cluster.is_up().then(|| {
            let mut set = redis::cmd("SET");
            set.arg(self.record(kind, owner, key))
                .arg(&value)
                .arg("PX")
                .arg(super::cache::millis(self.ttl));
            let cluster = self.cluster.clone();
            tokio::spawn(async move {
                cluster
                    .run(|mut conn| async move { set.query_async::<()>(&mut conn).await })
                    .await;
            })
        });
        let local = self.local.save(kind, owner, key, value);
        Box::pin(async move {
            if let Some(shared) = shared {
                let _ = shared.await;
            }
            local.await
        })
    }

    fn shared(&self) -> bool {
        true
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
