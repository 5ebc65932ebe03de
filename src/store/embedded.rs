//! The embedded store: one SQLite file (bundled SQLite, WAL journal), so a
//! single replica needs no server and keeps its responses across restarts.
//!
//! One thread owns the connection and runs every read and write in the
//! order they were asked for; whatever is queued when it wakes runs in one
//! transaction (a group commit), so under load many responses share one
//! commit and no async thread ever waits on SQLite. A write is queued when
//! `put` is called, so a read asked for afterwards sees it.
//!
//! `max_responses` and `ttl` are enforced after every batch that wrote (expired and
//! surplus rows go, oldest first), and reads never return an expired row.
//! The thread keeps the row count, so trimming costs index look-ups, not a
//! scan of every stored response.

use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::{Kind, ResponseStore, StoreError, StoredResponse};
use crate::config;

/// Unix seconds now; injectable so expiry can be tested without waiting.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub struct Embedded {
    jobs: mpsc::Sender<Job>,
}

/// One read or write, run by the store's thread inside a batch; what it
/// returns answers its caller once the batch is committed (or not).
type Job = Box<dyn FnOnce(&mut Db) -> Reply + Send>;
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// At most this many jobs share a transaction, so a flood of writes still
/// lets the reads queued behind it through.
const BATCH: usize = 64;

/// The connection, owned by the store's thread, and what it enforces.
struct Db {
    conn: Connection,
    rows: u64,
    /// Whether this batch wrote a response (and so may need trimming).
    wrote: bool,
    max_responses: u64,
    ttl: Duration,
    clock: Clock,
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
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (kind, owner, key)
);
CREATE INDEX IF NOT EXISTS records_by_age ON records (updated_at);
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
        let mut db = Db {
            conn,
            rows: 0,
            wrote: false,
            max_responses: u64::from(settings.max_responses),
            ttl: settings.ttl,
            clock,
        };
        db.count().map_err(|e| failed(e.to_string()))?;
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("hermes-store".into())
            .spawn(move || serve(db, queue))
            .map_err(|e| failed(format!("cannot start its thread: {e}")))?;
        Ok(Embedded { jobs })
    }

    /// Queues `work` for the store's thread now; the future is its outcome.
    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Db) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let (tell, told) = oneshot::channel();
        let job: Job = Box::new(move |db| {
            let result = work(db).map_err(|e| e.to_string());
            Box::new(move |committed: Result<(), String>| {
                let _ = tell.send(result.and_then(|value| committed.map(|()| value)));
            })
        });
        let queued = self.jobs.send(job).is_ok();
        Box::pin(async move {
            let stopped = || StoreError::Failed("the store's thread has stopped".into());
            if !queued {
                return Err(stopped());
            }
            told.await
                .map_err(|_| stopped())?
                .map_err(StoreError::Failed)
        })
    }
}

/// The store's thread: batches of queued jobs, one transaction each, until
/// the store is dropped.
fn serve(mut db: Db, queue: mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let batch: Vec<Job> = std::iter::once(first)
            .chain(queue.try_iter().take(BATCH - 1))
            .collect();
        let began = db.statement("BEGIN").is_ok();
        let replies: Vec<Reply> = batch.into_iter().map(|job| job(&mut db)).collect();
        let mut outcome = if std::mem::take(&mut db.wrote) {
            db.trim()
        } else {
            Ok(())
        };
        if began {
            outcome = outcome.and_then(|()| db.statement("COMMIT"));
            if outcome.is_err() {
                // What the batch counted did not happen.
                let _ = db.statement("ROLLBACK");
                let _ = db.count();
            }
        }
        let outcome = outcome.map_err(|e| e.to_string());
        for reply in replies {
            reply(outcome.clone());
        }
    }
}

impl Db {
    /// A statement without parameters, prepared once (`execute_batch`
    /// parses its text on every call).
    fn statement(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }

    fn count(&mut self) -> rusqlite::Result<()> {
        let rows: i64 = self
            .conn
            .query_row("SELECT count(*) FROM responses", [], |row| row.get(0))?;
        self.rows = rows.max(0) as u64;
        Ok(())
    }

    /// The oldest `created_at` that has not expired.
    fn oldest_alive(&self) -> i64 {
        let now = (self.clock)();
        now.saturating_sub(self.ttl.as_secs()) as i64
    }

    /// Drops what has expired, then the oldest beyond `max_responses`.
    /// Records (sessions, memory) expire when untouched for `ttl`.
    fn trim(&mut self) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached("DELETE FROM records WHERE updated_at < ?1")?
            .execute(params![self.oldest_alive()])?;
        let expired = self
            .conn
            .prepare_cached("DELETE FROM responses WHERE created_at < ?1")?
            .execute(params![self.oldest_alive()])?;
        self.rows = self.rows.saturating_sub(expired as u64);
        if self.rows > self.max_responses {
            let dropped = self
                .conn
                .prepare_cached(
                    "DELETE FROM responses WHERE rowid IN (
                         SELECT rowid FROM responses ORDER BY created_at, rowid LIMIT ?1)",
                )?
                .execute(params![(self.rows - self.max_responses) as i64])?;
            self.rows = self.rows.saturating_sub(dropped as u64);
        }
        Ok(())
    }
}

impl ResponseStore for Embedded {
    fn put(&self, r: StoredResponse) -> BoxFuture<'static, Result<(), StoreError>> {
        self.run(move |db| {
            let fields = params![r.id, r.owner, r.created_at as i64, r.input, r.response];
            // Ids are fresh, so the insert is what happens; a replaced id is
            // updated in place and counted once.
            let inserted = db
                .conn
                .prepare_cached(
                    "INSERT INTO responses (id, owner, created_at, input, response)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
                )?
                .execute(fields)?;
            if inserted == 0 {
                db.conn
                    .prepare_cached(
                        "UPDATE responses SET owner = ?2, created_at = ?3, input = ?4,
                         response = ?5 WHERE id = ?1",
                    )?
                    .execute(fields)?;
            }
            db.rows += inserted as u64;
            db.wrote = true;
            Ok(())
        })
    }

    fn get<'a>(
        &'a self,
        owner: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredResponse>, StoreError>> {
        let (owner, id) = (owner.to_owned(), id.to_owned());
        self.run(move |db| {
            let oldest = db.oldest_alive();
            db.conn
                .prepare_cached(
                    "SELECT created_at, input, response FROM responses
                     WHERE id = ?1 AND owner = ?2 AND created_at >= ?3",
                )?
                .query_row(params![id, owner, oldest], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()
                .map(|found| {
                    found.map(|(created_at, input, response)| StoredResponse {
                        id,
                        owner,
                        created_at: created_at.max(0) as u64,
                        input,
                        response,
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
        self.run(move |db| {
            let deleted = db
                .conn
                .prepare_cached("DELETE FROM responses WHERE id = ?1 AND owner = ?2")?
                .execute(params![id, owner])?;
            db.rows = db.rows.saturating_sub(deleted as u64);
            Ok(deleted > 0)
        })
    }

    fn load<'a>(
        &'a self,
        kind: Kind,
        owner: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let (owner, key) = (owner.to_owned(), key.to_owned());
        self.run(move |db| {
            let oldest = db.oldest_alive();
            db.conn
                .prepare_cached(
                    "SELECT value FROM records
                     WHERE kind = ?1 AND owner = ?2 AND key = ?3 AND updated_at >= ?4",
                )?
                .query_row(params![kind.as_str(), owner, key, oldest], |row| row.get(0))
                .optional()
        })
    }

    fn save(
        &self,
        kind: Kind,
        owner: &str,
        key: &str,
        value: String,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let (owner, key) = (owner.to_owned(), key.to_owned());
        self.run(move |db| {
            let now = (db.clock)() as i64;
            db.conn
                .prepare_cached(
                    "INSERT INTO records (kind, owner, key, value, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (kind, owner, key)
                     DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                )?
                .execute(params![kind.as_str(), owner, key, value, now])?;
            db.wrote = true;
            Ok(())
        })
    }
}
