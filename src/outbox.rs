//! The durable queue between the rules and the broker: a report is committed to disk (SQLite,
//! WAL, `synchronous=FULL`) before any attempt to publish it, and removed only once the broker
//! has acknowledged it. A broker outage, a restart or a power cut in between loses nothing; the
//! rules never wait on the network, only on this one local write.
//!
//! A report's JSON and its images are kept apart, so that past `max_bytes` the images of the
//! oldest reports go first and only then the oldest reports themselves, each eviction counted
//! and logged; and so the publisher can send images inline or on their own topic.
//!
//! A report the broker refuses (the publisher retries it a few times) becomes a dead letter:
//! it stays here with the reason, out of the queue, until an operator requeues it
//! (`fieldwatch outbox --requeue`). Order is the order of `push`, so each camera's reports
//! leave in the order they were made; requeued dead letters go back to their place.

use crate::report::Images;
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
    /// The report's JSON, without image data.
    pub json: Vec<u8>,
    pub images: Images,
    /// Its images were dropped to keep the outbox within its size.
    pub images_evicted: bool,
}

/// A report the broker refused, kept with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub id: i64,
    pub camera: String,
    pub topic: String,
    pub bytes: u64,
    pub queued_at: String,
    pub failed_at: String,
    pub reason: String,
}

/// What is waiting, for status and `fieldwatch outbox`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Depth {
    /// Reports waiting to be sent (dead letters not included).
    pub reports: u64,
    /// Bytes on disk of everything kept, dead letters included: what `max_bytes` bounds.
    pub bytes: u64,
    /// When the oldest waiting report was queued (RFC 3339, UTC).
    pub oldest: Option<String>,
    /// Reports the broker refused, kept apart.
    pub dead_letters: u64,
    /// Evicted to stay within the size limit, since the outbox was created: reports whose
    /// images were dropped, and whole reports.
    pub evicted_images: u64,
    pub evicted_reports: u64,
}

impl Depth {
    /// How long the oldest waiting report has waited, in whole seconds.
    pub fn oldest_age_secs(&self) -> Option<i64> {
        let queued = chrono::DateTime::parse_from_rfc3339(self.oldest.as_deref()?).ok()?;
        Some((chrono::Utc::now() - queued.to_utc()).num_seconds().max(0))
    }
}

pub struct Outbox {
    path: PathBuf,
    db: Mutex<Connection>,
    max_bytes: u64,
    /// Wakes the publisher when a report is queued.
    pushed: tokio::sync::Notify,
    /// Reports the broker acknowledged (and so left the queue) since this process started.
    pub delivered: crate::telemetry::Counter,
}

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = FULL;
    CREATE TABLE IF NOT EXISTS queue (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        camera TEXT NOT NULL,
        topic TEXT NOT NULL,
        json BLOB NOT NULL,
        snapshot BLOB,
        first_seen BLOB,
        images_evicted INTEGER NOT NULL DEFAULT 0,
        -- bytes of json and images, kept up to date so the size limit is one SUM
        size INTEGER NOT NULL,
        queued_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        -- set for a dead letter: why the broker refused it, and when it gave up
        dead_reason TEXT,
        failed_at TEXT
    );
    CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);";

const SELECT_PENDING: &str =
    "SELECT id, camera, topic, json, snapshot, first_seen, images_evicted FROM queue WHERE dead_reason IS NULL";

impl Outbox {
    /// Opens (or creates) the outbox at `path`, holding at most `max_bytes` of reports.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, OutboxError> {
        let fail = |message: String| OutboxError { path: path.display().to_string(), message };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        }
        let db = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        db.execute_batch(SCHEMA).map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            path: path.to_path_buf(),
            db: Mutex::new(db),
            max_bytes,
            pushed: tokio::sync::Notify::new(),
            delivered: Default::default(),
        })
    }

    fn err(&self, e: rusqlite::Error) -> OutboxError {
        OutboxError { path: self.path.display().to_string(), message: e.to_string() }
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commits a report to disk (blocking: call it off the async workers). Returns its id.
    pub fn push(&self, camera: &str, topic: &str, json: &[u8], images: &Images) -> Result<i64, OutboxError> {
        let mut db = self.db();
        let tx = db.transaction().map_err(|e| self.err(e))?;
        let size = json.len() + images.bytes();
        tx.execute(
            "INSERT INTO queue (camera, topic, json, snapshot, first_seen, size) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![camera, topic, json, images.snapshot, images.first_seen, size as i64],
        )
        .map_err(|e| self.err(e))?;
        let id = tx.last_insert_rowid();
        self.evict(&tx, id).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        drop(db);
        self.pushed.notify_one();
        Ok(id)
    }

    /// Stays within `max_bytes` after `new` was queued: first the images of the oldest
    /// reports, then the oldest reports (never `new` itself), finally `new`'s own images.
    fn evict(&self, tx: &rusqlite::Transaction, new: i64) -> rusqlite::Result<()> {
        let (mut images, mut reports) = (0i64, 0i64);
        loop {
            let bytes: i64 = tx.query_row("SELECT COALESCE(SUM(size), 0) FROM queue", [], |r| r.get(0))?;
            if (bytes as u64) <= self.max_bytes {
                break;
            }
            let with_images: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, camera FROM queue WHERE id != ?1 AND (snapshot IS NOT NULL OR first_seen IS NOT NULL)
                     ORDER BY id LIMIT 1",
                    [new],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((id, camera)) = with_images {
                drop_images(tx, id)?;
                warn!(outbox_id = id, %camera, max_bytes = self.max_bytes, "outbox full: a report's images dropped");
                images += 1;
                continue;
            }
            let oldest: Option<(i64, String)> = tx
                .query_row("SELECT id, camera FROM queue WHERE id != ?1 ORDER BY id LIMIT 1", [new], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            if let Some((id, camera)) = oldest {
                tx.execute("DELETE FROM queue WHERE id = ?1", [id])?;
                warn!(outbox_id = id, %camera, max_bytes = self.max_bytes, "outbox full: oldest report evicted");
                reports += 1;
                continue;
            }
            // Only the new report is left and it is too big by itself: it goes without images.
            if drop_images(tx, new)? == 0 {
                break;
            }
            warn!(outbox_id = new, max_bytes = self.max_bytes, "outbox full: a report's images dropped");
            images += 1;
        }
        for (name, n) in [("evicted_images", images), ("evicted_reports", reports)] {
            if n > 0 {
                tx.execute(
                    "INSERT INTO counters (name, value) VALUES (?1, ?2)
                     ON CONFLICT(name) DO UPDATE SET value = value + ?2",
                    params![name, n],
                )?;
            }
        }
        Ok(())
    }

    /// The oldest report waiting to be sent, if any.
    pub fn next(&self) -> Result<Option<Pending>, OutboxError> {
        self.db()
            .query_row(&format!("{SELECT_PENDING} ORDER BY id LIMIT 1"), [], |r| {
                Ok(Pending {
                    id: r.get(0)?,
                    camera: r.get(1)?,
                    topic: r.get(2)?,
                    json: r.get(3)?,
                    images: Images { snapshot: r.get(4)?, first_seen: r.get(5)? },
                    images_evicted: r.get(6)?,
                })
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Forgets a report the broker has acknowledged (counted in `delivered`).
    pub fn remove(&self, id: i64) -> Result<(), OutboxError> {
        self.db().execute("DELETE FROM queue WHERE id = ?1", [id]).map_err(|e| self.err(e))?;
        self.delivered.inc();
        Ok(())
    }

    /// Takes a report the broker refused out of the queue, keeping it with `reason`.
    pub fn dead_letter(&self, id: i64, reason: &str) -> Result<(), OutboxError> {
        self.db()
            .execute(
                "UPDATE queue SET dead_reason = ?2, failed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1",
                params![id, reason],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// The dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, OutboxError> {
        let db = self.db();
        let mut query = db
            .prepare(
                "SELECT id, camera, topic, size, queued_at, failed_at, dead_reason FROM queue
                 WHERE dead_reason IS NOT NULL ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = query
            .query_map([], |r| {
                Ok(DeadLetter {
                    id: r.get(0)?,
                    camera: r.get(1)?,
                    topic: r.get(2)?,
                    bytes: r.get::<_, i64>(3)? as u64,
                    queued_at: r.get(4)?,
                    failed_at: r.get(5)?,
                    reason: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Puts every dead letter back in the queue, in its old place. Returns how many.
    pub fn requeue_dead_letters(&self) -> Result<usize, OutboxError> {
        let n = self
            .db()
            .execute("UPDATE queue SET dead_reason = NULL, failed_at = NULL WHERE dead_reason IS NOT NULL", [])
            .map_err(|e| self.err(e))?;
        if n > 0 {
            self.pushed.notify_one();
        }
        Ok(n)
    }

    pub fn depth(&self) -> Result<Depth, OutboxError> {
        let db = self.db();
        let (reports, bytes, oldest, dead): (i64, i64, Option<String>, i64) = db
            .query_row(
                "SELECT COUNT(*) FILTER (WHERE dead_reason IS NULL), COALESCE(SUM(size), 0),
                        MIN(queued_at) FILTER (WHERE dead_reason IS NULL), COUNT(dead_reason)
                 FROM queue",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(|e| self.err(e))?;
        let counter = |name: &str| -> Result<u64, OutboxError> {
            let value: Option<i64> = db
                .query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| r.get(0))
                .optional()
                .map_err(|e| self.err(e))?;
            Ok(value.unwrap_or(0) as u64)
        };
        Ok(Depth {
            reports: reports as u64,
            bytes: bytes as u64,
            oldest,
            dead_letters: dead as u64,
            evicted_images: counter("evicted_images")?,
            evicted_reports: counter("evicted_reports")?,
        })
    }

    /// Waits until a report is pushed or requeued (or one already was since the last wait).
    pub async fn pushed(&self) {
        self.pushed.notified().await
    }
}

/// Drops report `id`'s images; returns 0 if it had none.
fn drop_images(tx: &rusqlite::Transaction, id: i64) -> rusqlite::Result<usize> {
    tx.execute(
        "UPDATE queue SET snapshot = NULL, first_seen = NULL, images_evicted = 1, size = LENGTH(json)
         WHERE id = ?1 AND (snapshot IS NOT NULL OR first_seen IS NOT NULL)",
        [id],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> PathBuf {
        std::env::temp_dir().join(format!("fw-outbox-{}", uuid::Uuid::new_v4())).join("outbox.db")
    }

    fn images(snapshot: &[u8]) -> Images {
        Images { snapshot: Some(snapshot.to_vec()), first_seen: None }
    }

    #[test]
    fn reports_survive_a_reopen_in_order_until_removed() {
        let path = temp();
        let outbox = Outbox::open(&path, 1 << 20).unwrap();
        let a = outbox.push("cam-1", "t/a", b"first", &images(b"jpeg")).unwrap();
        let b = outbox.push("cam-2", "t/b", b"second", &Images::default()).unwrap();
        drop(outbox);
        let outbox = Outbox::open(&path, 1 << 20).unwrap();
        let first = outbox.next().unwrap().unwrap();
        assert_eq!((first.id, first.topic.as_str(), first.json.as_slice()), (a, "t/a", &b"first"[..]));
        assert_eq!(first.images, images(b"jpeg"));
        outbox.remove(a).unwrap();
        let depth = outbox.depth().unwrap();
        assert_eq!((depth.reports, depth.bytes), (1, 6));
        assert!((0..5).contains(&depth.oldest_age_secs().unwrap()), "{depth:?}");
        assert_eq!(outbox.next().unwrap().unwrap().id, b);
        outbox.remove(b).unwrap();
        assert_eq!(outbox.next().unwrap(), None);
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }

    #[test]
    fn past_its_size_the_oldest_images_go_first_then_the_oldest_reports() {
        let path = temp();
        // Each report: 9 bytes of JSON and 20 of image.
        let outbox = Outbox::open(&path, 70).unwrap();
        let push = |i: usize| outbox.push("cam", "t", format!("report-{i}-").as_bytes(), &images(&[0; 20])).unwrap();
        push(0);
        push(1);
        assert_eq!(outbox.depth().unwrap().bytes, 58, "within the limit: nothing evicted");
        push(2); // 87 bytes: the oldest report's images go
        let first = outbox.next().unwrap().unwrap();
        assert!(first.images_evicted && first.images == Images::default(), "{first:?}");
        assert_eq!(first.json, b"report-0-", "the report itself stays");
        let depth = outbox.depth().unwrap();
        assert_eq!((depth.reports, depth.bytes, depth.evicted_images, depth.evicted_reports), (3, 67, 1, 0));
        push(3); // 96: the images of report 1 (76), then of report 2 (56)
        let depth = outbox.depth().unwrap();
        assert_eq!((depth.bytes, depth.evicted_images, depth.evicted_reports), (56, 3, 0));
        push(4); // 85: the images of report 3 (65)
        push(5); // 94: the images of report 4 (74); no older images left, so report 0 goes (65)
        let depth = outbox.depth().unwrap();
        assert_eq!((depth.reports, depth.bytes, depth.evicted_images, depth.evicted_reports), (5, 65, 5, 1));
        assert_eq!(outbox.next().unwrap().unwrap().json, b"report-1-", "the oldest report went");
        let newest = {
            let mut last = None;
            while let Some(p) = outbox.next().unwrap() {
                outbox.remove(p.id).unwrap();
                last = Some(p);
            }
            last.unwrap()
        };
        assert_eq!(newest.json, b"report-5-", "the report just queued is never evicted");
        assert!(!newest.images_evicted);
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }

    #[test]
    fn a_report_alone_above_the_limit_loses_its_images_not_itself() {
        let path = temp();
        let outbox = Outbox::open(&path, 30).unwrap();
        outbox.push("cam", "t", b"report", &images(&[0; 100])).unwrap();
        let kept = outbox.next().unwrap().unwrap();
        assert!(kept.images_evicted);
        assert_eq!(outbox.depth().unwrap().evicted_images, 1);
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }

    #[test]
    fn dead_letters_leave_the_queue_with_their_reason_until_requeued() {
        let path = temp();
        let outbox = Outbox::open(&path, 1 << 20).unwrap();
        let a = outbox.push("cam", "t/denied", b"a", &Images::default()).unwrap();
        let b = outbox.push("cam", "t/ok", b"b", &Images::default()).unwrap();
        outbox.dead_letter(a, "not authorized").unwrap();
        assert_eq!(outbox.next().unwrap().unwrap().id, b, "a dead letter does not block the queue");
        let dead = outbox.dead_letters().unwrap();
        assert_eq!((dead.len(), dead[0].id, dead[0].reason.as_str()), (1, a, "not authorized"));
        let depth = outbox.depth().unwrap();
        assert_eq!((depth.reports, depth.dead_letters), (1, 1));
        drop(outbox);
        let outbox = Outbox::open(&path, 1 << 20).unwrap();
        assert_eq!(outbox.dead_letters().unwrap().len(), 1, "dead letters survive a restart");
        assert_eq!(outbox.requeue_dead_letters().unwrap(), 1);
        assert_eq!(outbox.next().unwrap().unwrap().id, a, "requeued in its old place");
        assert_eq!(outbox.depth().unwrap().dead_letters, 0);
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }
}
