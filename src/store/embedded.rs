//! The embedded store: one SQLite file (bundled SQLite, WAL journal), so a
//! single replica needs no server and keeps its responses across restarts.
//! SQLite calls block, so they run on tokio's blocking threads; one
//! connection behind a mutex is enough for the writes a proxy makes.
//!
//! `max_responses` and `ttl` are enforced on every write (expired and
//! surplus rows go, oldest first), and reads never return an expired row.
//! The row count is kept beside the connection, so a write costs index
//! look-ups, not a scan of every stored response.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use rusqlite::{params, Connection, OptionalExtension};

use super::{ResponseStore, StoreError, StoredResponse};
use crate::config;

/// Unix seconds now; injectable so expiry can be tested without waiting.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub struct Embedded {
    db: Arc<Mutex<Db>>,
    max_responses: u32,
    ttl: Duration,
    clock: Clock,
}

/// The connection and how many rows the table holds.
struct Db {
    conn: Connection,
    rows: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    input TEXT NOT NULL,
    response TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_by_age ON responses (created_at);
";

impl Embedded {
    /// Opens (or creates) the store `settings` name, with the system clock.
    pub fn open(settings: &config::Store) -> Result<Self, StoreError> {
        let clock: Clock = Arc::new(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
        Self::open_with_clock(settings, clock)
    }

    pub fn open_with_clock(settings: &config::Store, clock: Clock) -> Result<Self, StoreError> {
        let path = Path::new(&settings.path);
        let failed = |reason: String| StoreError::Open {
            path: settings.path.clone(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(|e| failed(e.to_string()))?;
        // The first statements are where a file that is not a database shows.
        // WAL with NORMAL sync: a commit is not fsynced on its own (a power
        // cut may lose the last writes, never corrupt the file), which keeps
        // a stored response from costing a disk flush.
        conn.pragma_update(None, "journal_mode", "WAL")
            .and_then(|()| conn.pragma_update(None, "synchronous", "NORMAL"))
            .and_then(|()| conn.busy_timeout(Duration::from_secs(5)))
            .and_then(|()| conn.execute_batch(SCHEMA))
            .map_err(|e| failed(e.to_string()))?;
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM responses", [], |row| row.get(0))
            .map_err(|e| failed(e.to_string()))?;
        Ok(Embedded {
            db: Arc::new(Mutex::new(Db {
                conn,
                rows: rows.max(0) as u64,
            })),
            max_responses: settings.max_responses,
            ttl: settings.ttl,
            clock,
        })
    }

    /// The oldest `created_at` that has not expired.
    fn oldest_alive(&self) -> i64 {
        let now = (self.clock)();
        now.saturating_sub(self.ttl.as_secs()) as i64
    }

    /// Runs `work` on a blocking thread with the connection.
    fn blocking<'a, T: Send + 'static>(
        &'a self,
        work: impl FnOnce(&mut Db) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        let db = self.db.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
                work(&mut db)
            })
            .await
            .map_err(|e| StoreError::Failed(e.to_string()))?
            .map_err(|e| StoreError::Failed(e.to_string()))
        })
    }
}

impl ResponseStore for Embedded {
    fn put(&self, r: StoredResponse) -> BoxFuture<'_, Result<(), StoreError>> {
        let (oldest, keep) = (self.oldest_alive(), u64::from(self.max_responses));
        self.blocking(move |db| {
            let input = serde_json::Value::Array(r.input).to_string();
            let tx = db.conn.transaction()?;
            let replaced = tx
                .query_row(
                    "SELECT 1 FROM responses WHERE id = ?1",
                    params![r.id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            tx.execute(
                "INSERT OR REPLACE INTO responses (id, owner, created_at, input, response)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    r.id,
                    r.owner,
                    r.created_at as i64,
                    input,
                    r.response.to_string()
                ],
            )?;
            let mut rows = db.rows + u64::from(!replaced);
            rows -= tx.execute(
                "DELETE FROM responses WHERE created_at < ?1",
                params![oldest],
            )? as u64;
            if rows > keep {
                let dropped = tx.execute(
                    "DELETE FROM responses WHERE rowid IN (
                         SELECT rowid FROM responses ORDER BY created_at, rowid LIMIT ?1)",
                    params![(rows - keep) as i64],
                )?;
                rows = rows.saturating_sub(dropped as u64);
            }
            tx.commit()?;
            db.rows = rows;
            Ok(())
        })
    }

    fn get<'a>(
        &'a self,
        owner: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredResponse>, StoreError>> {
        let (owner, id, oldest) = (owner.to_owned(), id.to_owned(), self.oldest_alive());
        self.blocking(move |db| {
            db.conn
                .query_row(
                    "SELECT created_at, input, response FROM responses
                 WHERE id = ?1 AND owner = ?2 AND created_at >= ?3",
                    params![id, owner, oldest],
                    |row| {
                        let created_at: i64 = row.get(0)?;
                        let input: String = row.get(1)?;
                        let response: String = row.get(2)?;
                        Ok((created_at, input, response))
                    },
                )
                .optional()
                .map(|found| {
                    found.map(|(created_at, input, response)| StoredResponse {
                        id,
                        owner,
                        created_at: created_at.max(0) as u64,
                        input: serde_json::from_str(&input).unwrap_or_default(),
                        response: serde_json::from_str(&response).unwrap_or_default(),
                    })
                })
        })
    }

    fn delete<'a>(
        &'a self,
        owner: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let (owner, id) = (owner.to_owned(), id.to_owned());
        self.blocking(move |db| {
            let deleted = db.conn.execute(
                "DELETE FROM responses WHERE id = ?1 AND owner = ?2",
                params![id, owner],
            )?;
            db.rows = db.rows.saturating_sub(deleted as u64);
            Ok(deleted > 0)
        })
    }
}
