//! Cooldowns shared by every request: a target (provider, model) that said
//! "wait" or failed hard leaves the pool until its time is up.
//!
//! Kept in a plain map on tokio's clock rather than in a TTL cache: escalation
//! needs the strike count to outlive the cooldown itself, and the tokio clock
//! lets tests pause time. The map holds one entry per failing target and is
//! pruned of long-forgotten ones on every insert.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cluster::cooldowns::Note;
use crate::config::Defaults;

/// A failed target's strikes are forgotten this long after its cooldown ended.
const MEMORY: Duration = Duration::from_secs(600);
/// Rate limits without a hint escalate up to this many times `cooldown`.
const RATE_LIMIT_CAP_FACTOR: u32 = 16;
/// Quota and auth failures: nothing changes until a human acts; start long.
const EXHAUSTED_BASE: Duration = Duration::from_secs(300);
const EXHAUSTED_CAP: Duration = Duration::from_secs(3600);
/// Longer than any process lives (tokio's own "never" is 30 years).
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 86_400);

/// Why a target is being cooled down, which sets how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// 429: the provider's hint if it gave one, else `cooldown`, doubling on
    /// each repeat (capped).
    RateLimited,
    /// Quota, billing or auth: minutes, doubling on each repeat, up to an hour.
    Exhausted,
    /// Overloaded, unreachable, timing out or failing: `cooldown`, flat, so a
    /// recovered server is used again soon.
    Failing,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::RateLimited => "rate_limited",
            Reason::Exhausted => "exhausted",
            Reason::Failing => "failing",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Reason::RateLimited, Reason::Exhausted, Reason::Failing]
            .into_iter()
            .find(|r| r.as_str() == name)
    }
}

#[derive(Debug)]
struct Entry {
    until: Instant,
    strikes: u32,
    reason: Reason,
}

#[derive(Debug, Default)]
pub struct Cooldowns {
    entries: Mutex<HashMap<(String, String), Entry>>,
    /// With `[cluster]`: where each new cooldown goes to reach the other replicas.
    outbox: OnceLock<mpsc::Sender<Note>>,
}

impl Cooldowns {
    /// How long `provider`/`model` is still cooling down, and why, if it is.
    pub fn remaining(
        &self,
        provider: &str,
        model: &str,
        now: Instant,
    ) -> Option<(Duration, Reason)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.is_empty() {
            return None; // the common case: no allocation for the key
        }
        let entry = entries.get(&(provider.to_owned(), model.to_owned()))?;
        (entry.until > now).then(|| (entry.until - now, entry.reason))
    }

    /// Starts (or extends) a cooldown and returns its length: `cooldown`
    /// based, never longer than `max_cooldown`, whatever the hint said.
    pub fn cool(
        &self,
        provider: &str,
        model: &str,
        reason: Reason,
        hint: Option<Duration>,
        d: &Defaults,
        now: Instant,
    ) -> Duration {
        let base = d.cooldown;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, e| e.until.checked_add(MEMORY).is_none_or(|t| t > now));
        let entry = entries
            .entry((provider.to_owned(), model.to_owned()))
            .or_insert(Entry {
                until: now,
                strikes: 0,
                reason,
            });
        entry.strikes = entry.strikes.saturating_add(1);
        let doubling = 1u32 << (entry.strikes - 1).min(16);
        let length = match (reason, hint) {
            (Reason::RateLimited, Some(hint)) => hint,
            (Reason::RateLimited, None) => base.saturating_mul(doubling.min(RATE_LIMIT_CAP_FACTOR)),
            (Reason::Exhausted, _) => EXHAUSTED_BASE.saturating_mul(doubling).min(EXHAUSTED_CAP),
            (Reason::Failing, hint) => hint.unwrap_or(base),
        };
        let length = length.min(d.max_cooldown);
        // A max_cooldown of centuries may pass the clock's range: then as
        // far as it reaches.
        let until = now
            .checked_add(length)
            .or_else(|| now.checked_add(FAR_FUTURE))
            .unwrap_or(now);
        if until >= entry.until {
            entry.until = until;
            entry.reason = reason;
        }
        let left = entry.until.saturating_duration_since(now);
        let reason = entry.reason;
        drop(entries);
        if let Some(outbox) = self.outbox.get() {
            // Full: the other replicas miss this one, this replica still honours it.
            let _ = outbox.try_send(Note::new(provider, model, reason.as_str(), left));
        }
        left
    }

    /// Sends every cooldown made from now on to `outbox` (see `cluster::cooldowns`).
    pub fn share_with(&self, outbox: mpsc::Sender<Note>) {
        let _ = self.outbox.set(outbox);
    }

    /// Another replica's cooldown: honoured here as if seen here, without
    /// counting a strike (escalation stays with the replica that saw it).
    pub fn adopt(&self, note: &Note, now: Instant) {
        let Some(reason) = Reason::from_name(&note.reason) else {
            return;
        };
        let Some(until) = now.checked_add(note.left()) else {
            return;
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries
            .entry((note.provider.clone(), note.model.clone()))
            .or_insert(Entry {
                until: now,
                strikes: 0,
                reason,
            });
        if until > entry.until {
            entry.until = until;
            entry.reason = reason;
        }
    }

    /// A success: the target is healthy and its strikes are forgotten.
    pub fn clear(&self, provider: &str, model: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !entries.is_empty() {
            entries.remove(&(provider.to_owned(), model.to_owned()));
        }
    }

    /// Providers with at least one target cooling down now (for the gauge).
    pub fn cooling_providers(&self, now: Instant) -> HashSet<String> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .filter(|(_, e)| e.until > now)
            .map(|((provider, _), _)| provider.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cooldown` 30 s, `max_cooldown` 1 h.
    fn d() -> Defaults {
        Defaults::default()
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_hint_sets_the_cooldown_and_it_expires() {
        let c = Cooldowns::default();
        let now = Instant::now();
        let d = c.cool(
            "kimi",
            "k2",
            Reason::RateLimited,
            Some(Duration::from_secs(7)),
            &d(),
            now,
        );
        assert_eq!(d, Duration::from_secs(7));
        assert_eq!(
            c.remaining("kimi", "k2", now),
            Some((Duration::from_secs(7), Reason::RateLimited))
        );
        assert_eq!(c.remaining("kimi", "other-model", now), None);
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(c.remaining("kimi", "k2", Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_rate_limits_without_hint_escalate_to_a_cap() {
        let c = Cooldowns::default();
        let mut lengths = vec![];
        for _ in 0..7 {
            let now = Instant::now();
            lengths.push(
                c.cool("p", "m", Reason::RateLimited, None, &d(), now)
                    .as_secs(),
            );
            tokio::time::advance(Duration::from_secs(3600)).await; // let each one expire
        }
        // forgotten after MEMORY: the 3600 s gaps reset the strikes each time
        assert_eq!(lengths, [30; 7]);

        let c = Cooldowns::default();
        let now = Instant::now();
        let lengths: Vec<u64> = (0..7)
            .map(|_| {
                c.cool("p", "m", Reason::RateLimited, None, &d(), now)
                    .as_secs()
            })
            .collect();
        assert_eq!(lengths, [30, 60, 120, 240, 480, 480, 480]);
    }

    #[tokio::test(start_paused = true)]
    async fn exhausted_quota_cools_for_minutes_and_success_clears() {
        let c = Cooldowns::default();
        let now = Instant::now();
        assert_eq!(
            c.cool("p", "m", Reason::Exhausted, None, &d(), now),
            Duration::from_secs(300)
        );
        assert_eq!(
            c.cool("p", "m", Reason::Exhausted, None, &d(), now),
            Duration::from_secs(600)
        );
        assert!(c.cooling_providers(now).contains("p"));
        c.clear("p", "m");
        assert_eq!(c.remaining("p", "m", now), None);
        assert_eq!(
            c.cool("p", "m", Reason::Exhausted, None, &d(), now),
            Duration::from_secs(300)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_new_cooldown_never_cuts_a_longer_one() {
        let c = Cooldowns::default();
        let now = Instant::now();
        c.cool("p", "m", Reason::Exhausted, None, &d(), now);
        let d = c.cool(
            "p",
            "m",
            Reason::RateLimited,
            Some(Duration::from_secs(1)),
            &d(),
            now,
        );
        assert_eq!(d, Duration::from_secs(300));
        assert_eq!(
            c.remaining("p", "m", now),
            Some((Duration::from_secs(300), Reason::Exhausted))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn another_replicas_cooldown_is_honoured_without_a_strike() {
        let c = Cooldowns::default();
        let now = Instant::now();
        let note = Note::new("kimi", "k2", "rate_limited", Duration::from_secs(20));
        c.adopt(&note, now);
        assert_eq!(
            c.remaining("kimi", "k2", now),
            Some((Duration::from_secs(20), Reason::RateLimited))
        );
        // A shorter one heard later does not cut it; an unknown reason is ignored.
        c.adopt(
            &Note::new("kimi", "k2", "exhausted", Duration::from_secs(5)),
            now,
        );
        c.adopt(
            &Note::new("kimi", "k3", "bored", Duration::from_secs(5)),
            now,
        );
        assert_eq!(
            c.remaining("kimi", "k2", now).unwrap().0,
            Duration::from_secs(20)
        );
        assert_eq!(c.remaining("kimi", "k3", now), None);
        // Escalation starts from this replica's own strikes: the first local
        // rate limit without a hint is the base, not a doubling.
        tokio::time::advance(Duration::from_secs(20)).await;
        let now = Instant::now();
        assert_eq!(c.remaining("kimi", "k2", now), None);
        let left = c.cool("kimi", "k2", Reason::RateLimited, None, &d(), now);
        assert_eq!(left, Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn each_new_cooldown_is_sent_to_the_other_replicas() {
        let c = Cooldowns::default();
        let (tx, mut rx) = mpsc::channel(4);
        c.share_with(tx);
        let now = Instant::now();
        c.cool("p", "m", Reason::Exhausted, None, &d(), now);
        let sent = rx.try_recv().unwrap();
        assert_eq!(
            (
                sent.provider.as_str(),
                sent.model.as_str(),
                sent.reason.as_str()
            ),
            ("p", "m", "exhausted")
        );
        assert_eq!(sent.left(), Duration::from_secs(300));
        // What comes from the others is not sent back.
        c.adopt(&Note::new("q", "m", "failing", Duration::from_secs(9)), now);
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn no_hint_cools_a_target_down_longer_than_max_cooldown() {
        let c = Cooldowns::default();
        let now = Instant::now();
        for hint in [Duration::from_secs(1_000_000_000_000), Duration::MAX] {
            let left = c.cool("p", "m", Reason::RateLimited, Some(hint), &d(), now);
            assert_eq!(left, Duration::from_secs(3600));
        }
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(c.remaining("p", "m", Instant::now()), None);

        // A max_cooldown past the clock's range cools as long as it can.
        let centuries = Defaults {
            max_cooldown: Duration::MAX,
            ..d()
        };
        let left = c.cool(
            "q",
            "m",
            Reason::Failing,
            Some(Duration::MAX),
            &centuries,
            now,
        );
        assert!(left >= FAR_FUTURE, "{left:?}");
        // Escalation saturates too.
        let huge_base = Defaults {
            cooldown: Duration::MAX / 2,
            max_cooldown: Duration::MAX,
            ..d()
        };
        for _ in 0..3 {
            c.cool("r", "m", Reason::RateLimited, None, &huge_base, now);
        }
    }
}
