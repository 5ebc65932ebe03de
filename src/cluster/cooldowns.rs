//! Cooldowns and busy marks shared by the replicas.
//!
//! The hot path never asks Redis: each replica reads its own table. A
//! replica that cools a target down writes the cooldown to Redis as a key
//! that expires with it and publishes it; every other replica's subscriber
//! puts it into its own table (within the pub/sub delay, well under the
//! 100 ms SPEC allows). A replica that (re)subscribes first reads the keys,
//! so a cooldown published while it was away is not missed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Cluster, PROBE_DOWN};

/// One target's cooldown, as it travels between replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub provider: String,
    pub model: String,
    /// The local table's reason, by name.
    pub reason: String,
    /// How long it has left.
    pub left_ms: u64,
    #[serde(default)]
    replica: String,
}

impl Note {
    pub fn new(provider: &str, model: &str, reason: &str, left: Duration) -> Self {
        Note {
            provider: provider.to_owned(),
            model: model.to_owned(),
            reason: reason.to_owned(),
            left_ms: left.as_millis().min(u128::from(u64::MAX)) as u64,
            replica: String::new(),
        }
    }

    pub fn left(&self) -> Duration {
        Duration::from_millis(self.left_ms)
    }
}

/// Cooldowns queued for Redis beyond this are kept local (a replica that
/// cannot keep up with its own 429s has bigger problems than sharing them).
const OUTBOX: usize = 1024;
/// How long connecting and subscribing may take.
const SUBSCRIBE_WITHIN: Duration = Duration::from_secs(2);

/// Starts sharing: returns where the local table sends its new cooldowns,
/// and hands every other replica's to `adopt`.
pub fn share(
    cluster: Arc<Cluster>,
    adopt: impl Fn(Note) + Send + Sync + 'static,
) -> mpsc::Sender<Note> {
    let (tx, rx) = mpsc::channel(OUTBOX);
    tokio::spawn(publish(cluster.clone(), rx));
    tokio::spawn(subscribe(cluster, adopt));
    tx
}

async fn publish(cluster: Arc<Cluster>, mut outbox: mpsc::Receiver<Note>) {
    let channel = cluster.channel("cooldowns");
    while let Some(mut note) = outbox.recv().await {
        if note.left_ms == 0 {
            continue;
        }
        note.replica.clone_from(&cluster.replica);
        let key = cluster.key("cooldown", &[&note.provider, &note.model]);
        let Ok(json) = serde_json::to_string(&note) else {
            continue;
        };
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&key)
            .arg(&json)
            .arg("PX")
            .arg(note.left_ms)
            .ignore()
            .cmd("PUBLISH")
            .arg(&channel)
            .arg(&json)
            .ignore();
        let _: Option<()> = cluster
            .run(|mut conn| async move { pipe.exec_async(&mut conn).await })
            .await;
    }
}

async fn subscribe(cluster: Arc<Cluster>, adopt: impl Fn(Note) + Send + Sync) {
    let channel = cluster.channel("cooldowns");
    let mut returns = cluster.returns();
    loop {
        returns.borrow_and_update();
        // Bounded: a Redis that accepts and never answers must not keep
        // this replica from trying again.
        let subscribed = tokio::time::timeout(SUBSCRIBE_WITHIN, async {
            let mut pubsub = cluster.pubsub().await.ok()?;
            pubsub.subscribe(&channel).await.ok()?;
            Some(pubsub)
        });
        if let Ok(Some(mut pubsub)) = subscribed.await {
            // Subscribed first, read second: nothing published in between
            // is missed (at worst one is adopted twice).
            for note in current(&cluster).await {
                adopt(note);
            }
            let mut messages = pubsub.on_message();
            loop {
                tokio::select! {
                    message = messages.next() => {
                        let Some(message) = message else { break };
                        let note = serde_json::from_slice::<Note>(message.get_payload_bytes());
                        match note {
                            Ok(note) if note.replica != cluster.replica => adopt(note),
                            _ => {}
                        }
                    }
                    // Redis was away (this connection may be a dead one) and
                    // is back: subscribe again, and read what was missed
                    // (the read above finds nothing while Redis counts as down).
                    _ = returns.changed() => break,
                }
            }
        }
        tokio::time::sleep(PROBE_DOWN).await;
    }
}

/// Every cooldown now in Redis, each with the time it has left.
async fn current(cluster: &Cluster) -> Vec<Note> {
    let pattern = format!("{}*", cluster.key("cooldown", &[]));
    let found = cluster
        .run(|mut conn| async move {
            let mut keys: Vec<String> = Vec::new();
            let mut cursor = 0u64;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut conn)
                    .await?;
                keys.extend(batch);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let values: Vec<Option<String>> =
                redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.pttl(key);
            }
            let left: Vec<i64> = pipe.query_async(&mut conn).await?;
            Ok(values.into_iter().zip(left).collect::<Vec<_>>())
        })
        .await
        .unwrap_or_default();
    found
        .into_iter()
        .filter_map(|(json, left)| {
            let mut note: Note = serde_json::from_str(&json?).ok()?;
            note.left_ms = u64::try_from(left).ok().filter(|ms| *ms > 0)?;
            Some(note)
        })
        .collect()
}
