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
//! benches/README.md), so a busy replica takes a few cells more than the
//! request needs when the burst is large (a lease: none while the key is
//! quiet, doubling while round trips come within [`LEASE_FOR`], at most
//! 1/`LEASE_SHARE` of the burst and `LEASE_REQUESTS` requests' worth;
//! halved when one expires unspent, so a slow key wastes nothing) and
//! spends them locally for up to [`LEASE_FOR`]; one request tops a lease up
//! in the background when it runs under half, so while traffic is steady no
//! request waits on Redis. Leased cells are charged in Redis when taken, so
//! the replicas never admit more than one would; at worst a lease that
//! expires unspent refuses a little early. A burst too small to share
//! (under `LEASE_SHARE` cells) is counted exactly: one round trip per
//! request.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
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
const LEASE_REQUESTS: u64 = 32;
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

#[derive(Default)]
struct Lease {
    cells: u64,
    /// None: nothing leased yet.
    until: Option<Instant>,
    /// A request is fetching more: the others spend what is left, or ask
    /// Redis for their own cost only, so a crowd brings back one lease.
    refilling: bool,
    /// Requests' worth the next lease holds: 0 (counted exactly) while the
    /// key is quiet, doubling while round trips come less than
    /// [`LEASE_FOR`] apart, halved when a lease expired unspent; so a slow
    /// key wastes no cells and a busy one makes few round trips.
    scale: u64,
    last_trip: Option<Instant>,
}

impl Lease {
    fn live(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| until > now)
    }

    /// The cells a refill should lease for `limit` now, adapting the scale.
    fn next(&mut self, limit: &Limit, now: Instant) -> u64 {
        let busy = self
            .last_trip
            .is_some_and(|at| now.saturating_duration_since(at) < LEASE_FOR);
        self.scale = if !self.live(now) && self.cells > 0 {
            self.scale / 2
        } else if busy {
            (self.scale * 2).clamp(1, LEASE_REQUESTS)
        } else {
            0
        };
        self.last_trip = Some(now);
        limit
            .lease()
            .min(limit.cost.max(1).saturating_mul(self.scale))
    }
}

/// What the leases said of a request.
enum Spent {
    /// Paid from the leases; these keys ran low and are now this request's
    /// to top up (by the cells given), off its path.
    Local(Vec<(String, u64)>),
    /// Not covered: ask Redis, leasing for these keys.
    Miss(Vec<(String, u64)>),
}

/// The keys a request is refilling, released when it is done (or dropped).
struct Refill {
    cluster: Arc<Cluster>,
    /// Each key, and the cells to lease for it (sized by the request that
    /// claimed it: a top-up's own cost is 0).
    keys: Vec<(String, u64)>,
}

impl Refill {
    fn lease(&self, key: &str) -> u64 {
        self.keys
            .iter()
            .find(|(k, _)| k == key)
            .map_or(0, |(_, cells)| *cells)
    }
}

impl Drop for Refill {
    fn drop(&mut self) {
        let mut leases = self.cluster.leases.lock();
        for (key, _) in &self.keys {
            if let Some(lease) = leases.get_mut(key) {
                lease.refilling = false;
            }
        }
    }
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spends `cost` of every limit from its lease if each has enough;
    /// otherwise spends nothing. Either way claims the refill of the leases
    /// that need one (empty, or under half) and no one else is refilling.
    fn spend(&self, limits: &[&Limit], now: Instant) -> Spent {
        let mut leases = self.lock();
        let covered = limits.iter().all(|l| {
            leases
                .get(&l.key)
                .is_some_and(|lease| lease.live(now) && lease.cells >= l.cost)
        });
        let mut claimed = Vec::new();
        for limit in limits {
            let lease = entry(&mut leases, &limit.key);
            if covered {
                lease.cells -= limit.cost;
            }
            let low = !lease.live(now) || lease.cells < limit.lease() / 2 + limit.cost;
            if limit.lease() > 0 && low && !lease.refilling {
                let cells = lease.next(limit, now);
                if cells > 0 {
                    lease.refilling = true;
                    claimed.push((limit.key.clone(), cells));
                }
            }
        }
        if covered {
            Spent::Local(claimed)
        } else {
            Spent::Miss(claimed)
        }
    }

    fn keep(&self, limits: &[&Limit], leased: &[u64], now: Instant) {
        // One entry per limited provider and client key: bounded by the config.
        let mut leases = self.lock();
        for (limit, cells) in limits.iter().zip(leased).filter(|(_, c)| **c > 0) {
            let lease = entry(&mut leases, &limit.key);
            if !lease.live(now) {
                lease.cells = 0; // given up
            }
            lease.cells = lease.cells.saturating_add(*cells);
            lease.until = Some(now + LEASE_FOR);
        }
    }
}

/// `key`'s lease, made empty on first use. Looked up by the borrowed key:
/// `entry` would allocate a copy of it on every request.
fn entry<'m>(leases: &'m mut HashMap<String, Lease>, key: &str) -> &'m mut Lease {
    if !leases.contains_key(key) {
        leases.insert(key.to_owned(), Lease::default());
    }
    leases.get_mut(key).expect("inserted above")
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
    pub async fn admit(self: &Arc<Self>, limits: &[Limit]) -> Option<Result<(), Duration>> {
        let limits: Vec<&Limit> = limits.iter().filter(|l| l.per_minute > 0).collect();
        if limits.is_empty() {
            return Some(Ok(()));
        }
        match self.leases.spend(&limits, Instant::now()) {
            Spent::Local(keys) if keys.is_empty() => Some(Ok(())),
            Spent::Local(keys) => {
                // Topped up before it runs out, so that no request waits.
                let top_up: Vec<Limit> = (limits.iter())
                    .filter(|l| keys.iter().any(|(k, _)| *k == l.key))
                    .map(|l| Limit {
                        cost: 0,
                        ..(*l).clone()
                    })
                    .collect();
                let refill = Refill {
                    cluster: self.clone(),
                    keys,
                };
                tokio::spawn(async move {
                    let limits: Vec<&Limit> = top_up.iter().collect();
                    refill.cluster.evaluate(&limits, &refill).await
                });
                Some(Ok(()))
            }
            Spent::Miss(keys) => {
                let refill = Refill {
                    cluster: self.clone(),
                    keys,
                };
                self.evaluate(&limits, &refill).await
            }
        }
    }

    /// One run of the script: the limits' costs, and leases for the keys
    /// `refill` holds.
    async fn evaluate(&self, limits: &[&Limit], refill: &Refill) -> Option<Result<(), Duration>> {
        let mut invocation = GCRA.prepare_invoke();
        for limit in limits {
            let interval = 60_000_000.0 / limit.per_minute as f64;
            let lease = refill.lease(&limit.key);
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
                self.leases.keep(limits, leased, Instant::now());
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

    fn claimed(spent: Spent) -> (bool, Vec<(String, u64)>) {
        match spent {
            Spent::Local(keys) => (true, keys),
            Spent::Miss(keys) => (false, keys),
        }
    }

    /// The refill a request claimed is over (its `Refill` guard dropped).
    fn refilled(leases: &Leases, key: &str) {
        leases.lock().get_mut(key).unwrap().refilling = false;
    }

    #[test]
    fn a_lease_is_at_most_a_small_share_of_a_large_burst_and_none_of_a_small_one() {
        assert_eq!(limit("k", 7, 1).lease(), 0); // counted exactly
        assert_eq!(limit("k", 80, 1).lease(), 10);
        assert_eq!(limit("k", 100_000, 1).lease(), 32);
        assert_eq!(limit("k", 1_000_000, 500).lease(), 16_000); // tokens
    }

    #[test]
    fn a_quiet_key_is_counted_exactly_and_a_busy_one_leases_more_each_trip() {
        let leases = Leases::default();
        let rpm = limit("rpm", 8000, 1);
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // The first request, and one after a quiet second: no lease.
        assert_eq!(claimed(leases.spend(&[&rpm], t0)), (false, vec![]));
        assert_eq!(claimed(leases.spend(&[&rpm], ms(1500))), (false, vec![]));
        // Round trips less than LEASE_FOR apart: 1, 2, 4, ... up to 32 requests' worth.
        let mut sizes = Vec::new();
        for n in 1..=7 {
            let (local, keys) = claimed(leases.spend(&[&rpm], ms(1500 + n * 10)));
            assert!(!local);
            sizes.push(keys[0].1);
            refilled(&leases, "rpm");
        }
        assert_eq!(sizes, [1, 2, 4, 8, 16, 32, 32]);
    }

    #[test]
    fn a_lease_that_expired_unspent_halves_the_next() {
        let leases = Leases::default();
        let rpm = limit("rpm", 8000, 1);
        let t0 = Instant::now();
        for n in 0..4 {
            drop(leases.spend(&[&rpm], t0 + Duration::from_millis(n)));
            refilled(&leases, "rpm");
        }
        // Scale is 4 now; a lease of 4 that nobody spends expires ...
        leases.keep(&[&rpm], &[4], t0);
        let later = t0 + LEASE_FOR + Duration::from_millis(1);
        // ... and the next request leases 2.
        assert_eq!(
            claimed(leases.spend(&[&rpm], later)),
            (false, vec![("rpm".into(), 2)])
        );
    }

    #[test]
    fn leased_cells_are_spent_all_or_nothing_and_expire() {
        let leases = Leases::default();
        let (rpm, tpm) = (limit("rpm", 8000, 1), limit("tpm", 8_000_000, 300));
        let now = Instant::now();
        leases.keep(&[&rpm, &tpm], &[2, 1000], now);
        assert!(claimed(leases.spend(&[&rpm, &tpm], now)).0);
        assert!(claimed(leases.spend(&[&rpm, &tpm], now)).0);
        // tpm has 400 left, rpm none: neither is spent.
        assert!(!claimed(leases.spend(&[&rpm, &tpm], now)).0);
        assert!(claimed(leases.spend(&[&tpm], now)).0);
        // Leases brought back together add up; given up after LEASE_FOR.
        leases.keep(&[&rpm], &[1], now);
        leases.keep(&[&rpm], &[1], now);
        assert!(claimed(leases.spend(&[&rpm], now)).0 && claimed(leases.spend(&[&rpm], now)).0);
        assert!(!claimed(leases.spend(&[&rpm], now)).0);
        leases.keep(&[&rpm], &[5], now);
        assert!(!claimed(leases.spend(&[&rpm], now + LEASE_FOR)).0);
    }

    #[test]
    fn one_request_tops_a_low_lease_up_while_the_others_spend_it() {
        let leases = Leases::default();
        let (rpm, small) = (limit("rpm", 8000, 1), limit("small", 7, 1));
        let now = Instant::now();
        drop(leases.spend(&[&rpm], now));
        let (_, first) = claimed(leases.spend(&[&rpm, &small], now));
        // A burst under 8 is never leased; the other request waits its turn.
        assert_eq!(first, [("rpm".to_string(), 1)]);
        assert_eq!(claimed(leases.spend(&[&rpm], now)), (false, vec![]));
        refilled(&leases, "rpm");
        leases.keep(&[&rpm], &[32], now);
        // Above half (16 + this one) it is spent quietly; below, claimed once.
        for _ in 0..15 {
            assert_eq!(claimed(leases.spend(&[&rpm], now)), (true, vec![]));
        }
        let (local, keys) = claimed(leases.spend(&[&rpm], now));
        assert!(local && keys.len() == 1 && keys[0].0 == "rpm", "{keys:?}");
        assert_eq!(claimed(leases.spend(&[&rpm], now)), (true, vec![]));
    }

    #[test]
    fn a_lease_is_sized_by_the_cost_of_the_request_that_claims_it() {
        let leases = Leases::default();
        let tpm = limit("tpm", 8_000_000, 300);
        let now = Instant::now();
        drop(leases.spend(&[&tpm], now));
        let (_, keys) = claimed(leases.spend(&[&tpm], now));
        assert_eq!(keys, [("tpm".to_string(), 300)]);
    }
}
