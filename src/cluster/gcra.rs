//! Limits enforced across replicas: one GCRA per limited key (a provider's
//! `rpm`, its `tpm`, a client key's `rpm`), kept in Redis and evaluated in
//! one Lua script, so that N replicas together admit what one would.
//!
//! The same algorithm as the local governor limiters, so a replica that
//! falls back to them when Redis is down keeps the same behaviour: a
//! per-minute rate with a burst, a request larger than the whole burst let
//! through uncharged, and a refusal that charges nothing.
//!
//! Cost: one `EVALSHA` round trip per request that meets a limit (provider
//! `rpm` and `tpm` checked together in that one call; a client key's `rpm`
//! is a second one), and one more, off the request's path, when a token
//! estimate is topped up with the real usage.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::Cluster;

/// KEYS: one per limit. ARGV, three per limit: its emission interval (µs a
/// cell), its burst (cells) and this request's cost (cells). All or nothing:
/// returns 0 and charges every limit, or the µs until all would admit it and
/// charges none. The clock is Redis's, so replicas' clocks need not agree.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[i * 3 - 2])
  local burst = tonumber(ARGV[i * 3 - 1])
  local cost = tonumber(ARGV[i * 3])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  if cost <= burst then
    local new_tat = tat + interval * cost
    local over = new_tat - now - interval * burst
    if over > wait then wait = over end
    tats[i] = new_tat
  end
end
if wait > 0 then return math.ceil(wait) end
for i, key in ipairs(KEYS) do
  local new_tat = tats[i]
  if new_tat then
    local ttl = math.ceil((new_tat - now) / 1000) + 1
    redis.call('SET', key, string.format('%.0f', new_tat), 'PX', ttl)
  end
end
return 0
";

static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(SCRIPT));

/// One limit a request must pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    /// A key from [`Cluster::key`].
    pub key: String,
    pub per_minute: u64,
    /// Cells that may be taken at once.
    pub burst: u64,
    /// Cells this request takes (1 for a request, its tokens for `tpm`).
    pub cost: u64,
}

impl Cluster {
    /// Whether every limit admits the request now: `Ok` (and all charged) or
    /// how long until they would. None: Redis is not there, use local limits.
    pub async fn admit(&self, limits: &[Limit]) -> Option<Result<(), Duration>> {
        let limits: Vec<&Limit> = limits.iter().filter(|l| l.per_minute > 0).collect();
        if limits.is_empty() {
            return Some(Ok(()));
        }
        let mut invocation = GCRA.prepare_invoke();
        for limit in &limits {
            let interval = 60_000_000.0 / limit.per_minute as f64;
            invocation
                .key(&limit.key)
                .arg(interval)
                .arg(limit.burst.max(1))
                .arg(limit.cost);
        }
        let wait: u64 = self
            .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        Some(match wait {
            0 => Ok(()),
            us => Err(Duration::from_micros(us)),
        })
    }
}
