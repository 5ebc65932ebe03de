//! Limits enforced across replicas: one GCRA per limited key (a provider's
//! `rpm`, its `tpm`, a client key's `rpm`), kept in Redis and evaluated in
//! one Lua script, so that N replicas together admit what one would.
//!
//! The same algorithm as the local governor limiters, so a replica that
//! falls back to them when Redis is down keeps the same behaviour: a
//! per-minute rate with a burst, a request larger than the whole burst let
//! through uncharged, and a refusal that charges nothing.
//!
//! Cost: a round trip per request would halve a replica's throughput (two
//! `EVALSHA` when both the provider and the key are limited; see
//! benches/README.md), so a replica takes a few cells more than the request
//! needs when the burst is large (a lease: at most [`LEASE_SHARE`] of the
//! burst, [`LEASE_REQUESTS`] requests' worth) and spends them locally for up
//! to [`LEASE_FOR`]. Leased cells are charged in Redis when taken, so the
//! replicas never admit more than one would; at worst a lease that expires
//! unspent refuses a little early. A burst too small to share (under
//! `LEASE_SHARE` cells) is counted exactly: one round trip per request.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::Script;

use super::Cluster;

/// KEYS: one per limit. ARGV, four per limit: its emission interval (µs a
/// cell), its burst (cells), this request's cost (cells) and the cells to
/// lease beyond it. All or nothing: charges every limit its cost plus its
/// lease if they all fit, else just the costs if they all fit, and returns
/// {0, leased cells per limit}; else charges nothing and returns {µs until
/// all would admit the costs}. The clock is Redis's, so replicas' clocks
/// need not agree.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  tats[i] = tat
end
local function try(leasing)
  local wait, new_tats = 0, {}
  for i = 1, #KEYS do
    local interval = tonumber(ARGV[i * 4 - 3])
    local burst = tonumber(ARGV[i * 4 - 2])
    local cost = tonumber(ARGV[i * 4 - 1])
    if leasing then cost = cost + tonumber(ARGV[i * 4]) end
    if cost <= burst then
      local new_tat = tats[i] + interval * cost
      local over = new_tat - now - interval * burst
      if over > wait then wait = over end
      new_tats[i] = new_tat
    elseif leasing then
      wait = 1
    end
  end
  return wait, new_tats
end
local leased = true
local wait, new_tats = try(true)
if wait > 0 then
  leased = false
  wait, new_tats = try(false)
end
if wait > 0 then return {math.ceil(wait)} end
local out = {0}
for i, key in ipairs(KEYS) do
  local new_tat = new_tats[i]
  if new_tat then
    local ttl = math.ceil((new_tat - now) / 1000) + 1
    redis.call('SET', key, string.format('%.0f', new_tat), 'PX', ttl)
  end
  out[i + 1] = (leased and new_tat) and tonumber(ARGV[i * 4]) or 0
end
return out
";

/// A lease is at most this share of a limit's burst (1/8): a burst
/// smaller than 8 cells is never leased.
const LEASE_SHARE: u64 = 8;
/// ... and at most this many requests' worth of cells.
const LEASE_REQUESTS: u64 = 16;
/// Cells not spent within this are given up (charged, not used), so that a
/// replica cannot bank cells and spend them later on top of a full burst.
pub const LEASE_FOR: Duration = Duration::from_secs(1);

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

/// Cells a replica took beyond what its requests used, by limit key.
#[derive(Default)]
pub(crate) struct Leases(Mutex<HashMap<String, Lease>>);

struct Lease {
    cells: u64,
    until: Instant,
    /// A request is fetching more: the others ask Redis for their own cost
    /// only, so a crowd finding the lease empty brings back one lease, not
    /// one each.
    refilling: bool,
}

/// The keys a request is refilling, released when it is done (or dropped).
struct Refill<'a> {
    leases: &'a Leases,
    keys: Vec<&'a str>,
}

impl Drop for Refill<'_> {
    fn drop(&mut self) {
        let mut leases = self.leases.lock();
        for key in &self.keys {
            if let Some(lease) = leases.get_mut(*key) {
                lease.refilling = false;
            }
        }
    }
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spends `cost` of every limit from its lease if each has enough (None);
    /// otherwise spends nothing and claims the refill of the leases no other
    /// request is refilling.
    fn spend<'a>(&'a self, limits: &[&'a Limit], now: Instant) -> Option<Refill<'a>> {
        let mut leases = self.lock();
        let covered = limits.iter().all(|l| {
            leases
                .get(&l.key)
                .is_some_and(|lease| lease.until > now && lease.cells >= l.cost)
        });
        if covered {
            for limit in limits {
                if let Some(lease) = leases.get_mut(&limit.key) {
                    lease.cells -= limit.cost;
                }
            }
            return None;
        }
        let mut keys = Vec::new();
        for limit in limits.iter().filter(|l| l.lease() > 0) {
            let lease = leases.entry(limit.key.clone()).or_insert(Lease {
                cells: 0,
                until: now,
                refilling: false,
            });
            if !lease.refilling {
                lease.refilling = true;
                keys.push(limit.key.as_str());
            }
        }
        Some(Refill { leases: self, keys })
    }

    fn keep(&self, limits: &[&Limit], leased: &[u64], now: Instant) {
        let mut leases = self.lock();
        leases.retain(|_, lease| lease.until > now || lease.refilling);
        for (limit, cells) in limits.iter().zip(leased).filter(|(_, c)| **c > 0) {
            let lease = leases.entry(limit.key.clone()).or_insert(Lease {
                cells: 0,
                until: now,
                refilling: false,
            });
            if lease.until <= now {
                lease.cells = 0; // given up
            }
            lease.cells = lease.cells.saturating_add(*cells);
            lease.until = now + LEASE_FOR;
        }
    }
}

impl Limit {
    /// Cells to take beyond this request's cost, to spend locally later.
    fn lease(&self) -> u64 {
        let share = self.burst / LEASE_SHARE;
        share.min(self.cost.max(1).saturating_mul(LEASE_REQUESTS))
    }
}

impl Cluster {
    /// Whether every limit admits the request now: `Ok` (and all charged) or
    /// how long until they would. None: Redis is not there, use local limits.
    pub async fn admit(&self, limits: &[Limit]) -> Option<Result<(), Duration>> {
        let limits: Vec<&Limit> = limits.iter().filter(|l| l.per_minute > 0).collect();
        if limits.is_empty() {
            return Some(Ok(()));
        }
        let Some(refill) = self.leases.spend(&limits, Instant::now()) else {
            return Some(Ok(()));
        };
        let mut invocation = GCRA.prepare_invoke();
        for limit in &limits {
            let interval = 60_000_000.0 / limit.per_minute as f64;
            let lease = if refill.keys.contains(&limit.key.as_str()) {
                limit.lease()
            } else {
                0
            };
            invocation
                .key(&limit.key)
                .arg(interval)
                .arg(limit.burst.max(1))
                .arg(limit.cost)
                .arg(lease);
        }
        let said: Vec<u64> = self
            .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        Some(match said.split_first() {
            Some((0, leased)) => {
                self.leases.keep(&limits, leased, Instant::now());
                drop(refill);
                Ok(())
            }
            Some((us, _)) => Err(Duration::from_micros(*us)),
            None => Ok(()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(key: &str, burst: u64, cost: u64) -> Limit {
        Limit {
            key: key.into(),
            per_minute: 600,
            burst,
            cost,
        }
    }

    #[test]
    fn a_lease_is_a_small_share_of_a_large_burst_and_none_of_a_small_one() {
        assert_eq!(limit("k", 7, 1).lease(), 0); // counted exactly
        assert_eq!(limit("k", 80, 1).lease(), 10);
        assert_eq!(limit("k", 100_000, 1).lease(), 16);
        assert_eq!(limit("k", 1_000_000, 500).lease(), 8000); // tokens
    }

    #[test]
    fn leased_cells_are_spent_all_or_nothing_and_expire() {
        let leases = Leases::default();
        let (rpm, tpm) = (limit("rpm", 800, 1), limit("tpm", 80_000, 300));
        let now = Instant::now();
        assert!(leases.spend(&[&rpm], now).is_some(), "nothing leased yet");
        leases.keep(&[&rpm, &tpm], &[2, 1000], now);
        assert!(leases.spend(&[&rpm, &tpm], now).is_none());
        assert!(leases.spend(&[&rpm, &tpm], now).is_none());
        // tpm has 400 left, rpm none: neither is spent.
        drop(leases.spend(&[&rpm, &tpm], now).unwrap());
        assert!(leases.spend(&[&tpm], now).is_none());
        // Leases brought back together add up.
        leases.keep(&[&rpm], &[1], now);
        leases.keep(&[&rpm], &[1], now);
        assert!(leases.spend(&[&rpm], now).is_none() && leases.spend(&[&rpm], now).is_none());
        // Given up after LEASE_FOR, spent or not.
        leases.keep(&[&rpm], &[5], now);
        assert!(leases.spend(&[&rpm], now + LEASE_FOR).is_some());
    }

    #[test]
    fn one_request_refills_a_lease_while_the_others_ask_for_their_own_cost() {
        let leases = Leases::default();
        let (rpm, small) = (limit("rpm", 800, 1), limit("small", 7, 1));
        let now = Instant::now();
        let first = leases.spend(&[&rpm, &small], now).unwrap();
        assert_eq!(first.keys, ["rpm"], "a burst under 8 is never leased");
        let second = leases.spend(&[&rpm], now).unwrap();
        assert!(second.keys.is_empty(), "the first is refilling it");
        drop(second);
        drop(first); // done, or its request was dropped
        assert_eq!(leases.spend(&[&rpm], now).unwrap().keys, ["rpm"]);
    }
}
