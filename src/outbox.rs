//! The durable queue between the rules and the broker: a report is committed to disk (SQLite,
//! WAL, `synchronous=FULL`) before any attempt to publish it, and removed only once the broker
//! has acknowledged it. A broker outage, a restart or a power cut in between loses nothing; the
//! rules never wait on the network, only on this one local write.
//!
//! Bounded by bytes: past `max_bytes`, the oldest reports are evicted, each one counted and
//! logged. Order is the order of `push`, so each camera's reports leave in the order they were
//! made.

use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tracing::warn;

#[derive(Debug, thiserror::Error)]
#[error("outbox {path}: {message}")]
pub struct OutboxError {
    pub path: String,
    pub message: String,
}

/// A report waiting for the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub id: i64,
    pub camera: String,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What is waiting, for status and `fieldwatch outbox`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Depth {
    pub reports: u64,
    pub bytes: u64,
    /// When the oldest waiting report was queued (RFC 3339, UTC).
    pub oldest: Option<String>,
    /// Reports evicted to stay within the size limit, since the outbox was created.
    pub evicted: u64,
}

pub struct Outbox {
    path: PathBuf,
    db: Mutex<Connection>,
    max_bytes: u64,
    /// Wakes the publisher when a report is queued.
    pushed: tokio::sync::Notify,
}

impl Outbox {
    /// Opens (or creates) the outbox at `path`, holding at most `max_bytes` of reports.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, OutboxError> {
        let err = |e: rusqlite::Error| OutboxError { path: path.display().to_string(), message: e.to_string() };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| OutboxError { path: path.display().to_string(), message: e.to_string() })?;
        }
        let db = Connection::open(path).map_err(err)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS reports (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 camera TEXT NOT NULL,
                 topic TEXT NOT NULL,
                 payload BLOB NOT NULL,
                 queued_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
             );
             CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )
        .map_err(err)?;
        Ok(Self { path: path.to_path_buf(), db: Mutex::new(db), max_bytes, pushed: tokio::sync::Notify::new() })
    }

    fn err(&self, e: rusqlite::Error) -> OutboxError {
        OutboxError { path: self.path.display().to_string(), message: e.to_string() }
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commits a report to disk (blocking: call it off the async workers). Returns its id.
    pub fn push(&self, camera: &str, topic: &str, payload: &[u8]) -> Result<i64, OutboxError> {
        let mut db = self.db();
        let tx = db.transaction().map_err(|e| self.err(e))?;
        tx.execute("INSERT INTO reports (camera, topic, payload) VALUES (?1, ?2, ?3)", params![camera, topic, payload])
            .map_err(|e| self.err(e))?;
        let id = tx.last_insert_rowid();
        // Stay within the size limit: the oldest go first (never the one just queued).
        let mut evicted = 0u64;
        loop {
            let bytes: i64 = tx
                .query_row("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM reports", [], |r| r.get(0))
                .map_err(|e| self.err(e))?;
            if (bytes as u64) <= self.max_bytes {
                break;
            }
            let oldest: Option<(i64, String)> = tx
                .query_row("SELECT id, camera FROM reports WHERE id < ?1 ORDER BY id LIMIT 1", [id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(|e| self.err(e))?;
            let Some((old, old_camera)) = oldest else { break };
            tx.execute("DELETE FROM reports WHERE id = ?1", [old]).map_err(|e| self.err(e))?;
            warn!(outbox_id = old, camera = %old_camera, max_bytes = self.max_bytes, "outbox full: oldest report evicted");
            evicted += 1;
        }
        if evicted > 0 {
            tx.execute(
                "INSERT INTO counters (name, value) VALUES ('evicted', ?1)
                 ON CONFLICT(name) DO UPDATE SET value = value + ?1",
                [evicted as i64],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        drop(db);
        self.pushed.notify_one();
        Ok(id)
    }

    /// The oldest report after `after` (an id), if any.
    pub fn next_after(&self, after: i64) -> Result<Option<Pending>, OutboxError> {
        self.db()
            .query_row(
                "SELECT id, camera, topic, payload FROM reports WHERE id > ?1 ORDER BY id LIMIT 1",
                [after],
                |r| Ok(Pending { id: r.get(0)?, camera: r.get(1)?, topic: r.get(2)?, payload: r.get(3)? }),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Forgets a report the broker has acknowledged.
    pub fn remove(&self, id: i64) -> Result<(), OutboxError> {
        self.db().execute("DELETE FROM reports WHERE id = ?1", [id]).map(drop).map_err(|e| self.err(e))
    }

    pub fn depth(&self) -> Result<Depth, OutboxError> {
        let db = self.db();
        let (reports, bytes, oldest): (i64, i64, Option<String>) = db
            .query_row("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), MIN(queued_at) FROM reports", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| self.err(e))?;
        let evicted: i64 = db
            .query_row("SELECT value FROM counters WHERE name = 'evicted'", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?
            .unwrap_or(0);
        Ok(Depth { reports: reports as u64, bytes: bytes as u64, oldest, evicted: evicted as u64 })
    }

    /// Waits until a report is pushed (or one already was since the last wait).
    pub async fn pushed(&self) {
        self.pushed.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> PathBuf {
        std::env::temp_dir().join(format!("fw-outbox-{}", uuid::Uuid::new_v4())).join("outbox.db")
    }

    #[test]
    fn reports_survive_a_reopen_in_order_until_removed() {
        let path = temp();
        let outbox = Outbox::open(&path, 1 << 20).unwrap();
        let a = outbox.push("cam-1", "t/a", b"first").unwrap();
        let b = outbox.push("cam-2", "t/b", b"second").unwrap();
        drop(outbox);
        let outbox = Outbox::open(&path, 1 << 20).unwrap();
        let first = outbox.next_after(0).unwrap().unwrap();
        assert_eq!((first.id, first.topic.as_str(), first.payload.as_slice()), (a, "t/a", &b"first"[..]));
        assert_eq!(outbox.next_after(a).unwrap().unwrap().id, b);
        outbox.remove(a).unwrap();
        let depth = outbox.depth().unwrap();
        assert_eq!((depth.reports, depth.bytes), (1, 6));
        assert!(depth.oldest.is_some());
        outbox.remove(b).unwrap();
        assert_eq!(outbox.next_after(0).unwrap(), None);
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }

    #[test]
    fn past_its_size_the_oldest_reports_are_evicted_and_counted() {
        let path = temp();
        let outbox = Outbox::open(&path, 25).unwrap();
        for i in 0..5 {
            outbox.push("cam", "t", format!("report-{i}-").as_bytes()).unwrap(); // 9 bytes each
        }
        let depth = outbox.depth().unwrap();
        assert_eq!((depth.reports, depth.bytes, depth.evicted), (2, 18, 3));
        assert_eq!(outbox.next_after(0).unwrap().unwrap().payload, b"report-3-");
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }
}
