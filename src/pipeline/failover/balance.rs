//! Strategies: the order in which a request tries its route's targets.
//! - `fallback`: as written in routes.toml.
//! - `weighted`: a weighted random order (each target's `weight`), so the
//!   first choice spreads load and the rest remain fallbacks.
//! - `latency`: peak-EWMA of time to first byte; the first choice is the
//!   faster of two picked at random (power of two choices, which avoids
//!   herding onto one target), the rest fastest first.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Strategy;
use crate::route::{ByTarget, Target};

/// How fast a peak is forgotten: the EWMA's time constant.
const DECAY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct Latencies {
    ewma: Mutex<ByTarget<(f64, Instant)>>,
}

impl Latencies {
    /// Records one time-to-first-byte sample. A slower sample is taken at
    /// once (peak); faster ones pull the estimate down gradually.
    pub fn observe(&self, provider: &str, model: &str, sample: Duration, now: Instant) {
        let sample = sample.as_secs_f64();
        let mut map = self.ewma.lock().unwrap_or_else(|e| e.into_inner());
        let models = match map.get_mut(provider) {
            Some(models) => models,
            None => map.entry(provider.to_owned()).or_default(),
        };
        let entry = match models.get_mut(model) {
            Some(entry) => entry,
            None => models.entry(model.to_owned()).or_insert((sample, now)),
        };
        let (value, at) = *entry;
        let next = if sample > value {
            sample
        } else {
            let w = (-(now - at).as_secs_f64() / DECAY.as_secs_f64()).exp();
            value * w + sample * (1.0 - w)
        };
        *entry = (next, now);
    }

    /// The estimate in seconds; an unmeasured target counts as fastest so it gets tried.
    pub fn estimate(&self, provider: &str, model: &str) -> f64 {
        let map = self.ewma.lock().unwrap_or_else(|e| e.into_inner());
        map.get(provider)
            .and_then(|models| models.get(model))
            .map_or(0.0, |(v, _)| *v)
    }
}

/// Orders `candidates` in place for `strategy`.
pub fn order(strategy: Strategy, candidates: &mut [&Target], latencies: &Latencies) {
    match strategy {
        Strategy::Fallback => {}
        Strategy::Weighted => {
            // Efraimidis–Spirakis: sorting by u^(1/w) is a weighted random permutation.
            let mut keyed: Vec<(f64, &Target)> = candidates
                .iter()
                .map(|c| (fastrand::f64().powf(1.0 / f64::from(c.weight.max(1))), *c))
                .collect();
            keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
            for (slot, (_, c)) in candidates.iter_mut().zip(keyed) {
                *slot = c;
            }
        }
        Strategy::Latency => {
            let est = |c: &Target| latencies.estimate(&c.provider.name, &c.model);
            candidates.sort_by(|a, b| est(a).total_cmp(&est(b)));
            if candidates.len() > 2 {
                let (i, j) = (
                    fastrand::usize(..candidates.len()),
                    fastrand::usize(..candidates.len()),
                );
                let pick = if est(candidates[i]) <= est(candidates[j]) {
                    i
                } else {
                    j
                };
                candidates[..=pick].rotate_right(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::config::{MockSettings, Provider, ProviderKind};

    fn target(name: &str, weight: u32) -> Target {
        let provider = Arc::new(Provider::named(name, ProviderKind::Mock));
        Target {
            adapter: Arc::new(crate::provider::mock::Mock::new(MockSettings::default())),
            provider,
            model: "m".into(),
            weight,
            context_window: None,
            series: Arc::default(),
        }
    }

    #[test]
    fn weighted_order_follows_the_weights() {
        let (a, b) = (target("a", 3), target("b", 1));
        let mut first_a = 0;
        for _ in 0..2000 {
            let mut c = [&a, &b];
            order(Strategy::Weighted, &mut c, &Latencies::default());
            first_a += usize::from(c[0].provider.name == "a");
        }
        // expected 1500 of 2000; far outside chance if the weights were ignored
        assert!((1350..1650).contains(&first_a), "{first_a}");
    }

    #[tokio::test(start_paused = true)]
    async fn latency_prefers_the_faster_target_and_peaks_decay() {
        let (slow, fast) = (target("slow", 1), target("fast", 1));
        let lat = Latencies::default();
        let now = Instant::now();
        lat.observe("slow", "m", Duration::from_millis(900), now);
        lat.observe("fast", "m", Duration::from_millis(100), now);
        let mut c = [&slow, &fast];
        order(Strategy::Latency, &mut c, &lat);
        assert_eq!(c[0].provider.name, "fast");

        // one slow spike is taken at once, then forgotten as fast samples come in
        lat.observe("fast", "m", Duration::from_secs(2), now);
        assert!(lat.estimate("fast", "m") >= 2.0);
        tokio::time::advance(Duration::from_secs(30)).await;
        lat.observe("fast", "m", Duration::from_millis(100), Instant::now());
        assert!(
            lat.estimate("fast", "m") < 0.3,
            "{}",
            lat.estimate("fast", "m")
        );
    }
}
