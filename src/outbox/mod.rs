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
//!
//! **Storage faults never stop a camera.** A disk that is full, read-only or failing, or an
//! outbox file that is corrupt, is a runtime fault to survive and report ([`Storage`]), not an
//! error: reports the disk does not take are held in memory, in order behind what is on disk,
//! and published from there while the broker is up; [`Outbox::maintain`] (every second) retries
//! the disk with backoff (up to 10 s) and moves them back to it when it can. Past `memory_bytes` the held
//! reports lose their images first, then the oldest go, counted (`lost_*`). A corrupt file is
//! renamed aside (`outbox.db.corrupt-{time}`, never deleted) and what still reads is salvaged
//! into a new one. Below `min_free_bytes` on the disk, the oldest reports' images are dropped
//! and their space given back to the file system.

mod disk;

use crate::report::Images;
use disk::Fault;
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

#[derive(Debug, thiserror::Error)]
#[error("outbox {path}: {message}")]
pub struct OutboxError {
    pub path: String,
    pub message: String,
}

/// What the storage under the outbox is doing, as status, heartbeat and `/healthz` say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    #[default]
    Ok,
    /// Fewer free bytes than `outbox.min_free_bytes`: images are being dropped.
    Low,
    /// The disk takes no more writes: reports are held in memory.
    Full,
    ReadOnly,
    /// The outbox file was corrupt: it was set aside and a new one is being made.
    Corrupt,
    /// Writes fail for another reason (an I/O error).
    Failing,
}

impl Storage {
    pub fn as_str(self) -> &'static str {
        match self {
            Storage::Ok => "ok",
            Storage::Low => "low",
            Storage::Full => "full",
            Storage::ReadOnly => "read_only",
            Storage::Corrupt => "corrupt",
            Storage::Failing => "failing",
        }
    }
}

/// Where a waiting report is: on disk (its row id) or held in memory (its sequence number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Disk(i64),
    Held(u64),
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Slot::Disk(id) => write!(f, "{id}"),
            Slot::Held(seq) => write!(f, "memory-{seq}"),
        }
    }
}

/// A report waiting for the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub slot: Slot,
    pub camera: String,
    pub topic: String,
    /// The report's JSON, without image data.
    pub json: Vec<u8>,
    pub images: Images,
    /// Its images were dropped to keep the outbox (or the memory holding it) within its size.
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
    /// Reports waiting to be sent (dead letters not included), on disk and held in memory.
    pub reports: u64,
    /// Bytes on disk of everything kept, dead letters included: what `max_bytes` bounds.
    pub bytes: u64,
    /// When the oldest waiting report on disk was queued (RFC 3339, UTC).
    pub oldest: Option<String>,
    /// Reports the broker refused, kept apart.
    pub dead_letters: u64,
    /// Evicted to stay within the size limit (or the disk's free space), since the outbox was
    /// created: reports whose images were dropped, and whole reports.
    pub evicted_images: u64,
    pub evicted_reports: u64,
    /// What the storage is doing, and why if it is not fine.
    pub storage: Storage,
    pub storage_error: Option<String>,
    /// Free bytes on the outbox's file system.
    pub free_bytes: Option<u64>,
    /// Reports held in memory while the disk does not take them, and their bytes.
    pub held_reports: u64,
    pub held_bytes: u64,
    /// Lost past the memory bound since this process started: images, and whole reports.
    pub lost_images: u64,
    pub lost_reports: u64,
    /// Corrupt outbox files renamed aside since this process started.
    pub set_aside: u64,
}

impl Depth {
    /// How long the oldest waiting report has waited, in whole seconds.
    pub fn oldest_age_secs(&self) -> Option<i64> {
        let queued = chrono::DateTime::parse_from_rfc3339(self.oldest.as_deref()?).ok()?;
        Some((chrono::Utc::now() - queued.to_utc()).num_seconds().max(0))
    }
}

/// The outbox's bounds (see `OutboxConfig`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Most bytes on disk.
    pub max_bytes: u64,
    /// Most bytes held in memory while the disk does not take reports.
    pub memory_bytes: u64,
    /// Below this many free bytes on the disk, images are dropped.
    pub min_free_bytes: u64,
}

/// A report held in memory until the disk takes it.
#[derive(Debug, Clone)]
struct Held {
    seq: u64,
    camera: String,
    topic: String,
    json: Vec<u8>,
    images: Images,
    images_evicted: bool,
    /// Refused by the broker: a dead letter once it reaches the disk.
    dead: Option<String>,
}

impl Held {
    fn bytes(&self) -> usize {
        self.json.len() + self.images.bytes()
    }

    fn pending(&self) -> Pending {
        Pending {
            slot: Slot::Held(self.seq),
            camera: self.camera.clone(),
            topic: self.topic.clone(),
            json: self.json.clone(),
            images: self.images.clone(),
            images_evicted: self.images_evicted,
        }
    }
}

/// How long to wait before trying the disk again: 1 s, doubling to 10 s (a try is a reopen and
/// a small write: cheap, and a freed disk is used again within seconds).
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MOST: Duration = Duration::from_secs(10);
/// Held reports moved to disk by one `maintain`.
const FLUSH_BATCH: usize = 64;

#[derive(Default)]
struct Inner {
    /// None while the file cannot be opened.
    db: Option<Connection>,
    /// The last failure of the disk, until a write succeeds again.
    fault: Option<Fault>,
    /// The file was checked for corruption (once a process, and after setting one aside).
    checked: bool,
    /// Free bytes on the file system, as `maintain` last found them.
    free_bytes: Option<u64>,
    held: VecDeque<Held>,
    held_bytes: u64,
    next_seq: u64,
    /// The held report last handed to the publisher, and its row id once it moved to disk.
    in_flight: Option<(u64, Option<i64>)>,
    /// Delivered, or refused, while the disk would not record it: retried, and skipped meanwhile.
    unremoved: BTreeSet<i64>,
    undead: BTreeMap<i64, String>,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    lost_images: u64,
    lost_reports: u64,
    /// Images and reports lost in this episode of the disk being out: the first of each kind
    /// is logged, and the totals when the held reports are on disk again.
    episode_loss: (u64, u64),
    set_aside: u64,
    /// The storage state last logged, to log changes once.
    announced: Storage,
}

pub struct Outbox {
    path: PathBuf,
    limits: Limits,
    inner: Mutex<Inner>,
    /// Wakes the publisher when a report is queued.
    pushed: tokio::sync::Notify,
    /// Reports the broker acknowledged (and so left the queue) since this process started.
    pub delivered: crate::telemetry::Counter,
}

impl Outbox {
    /// Opens the outbox at `path` as it is, holding at most `max_bytes` of reports: an error
    /// if it cannot (for `fieldwatch outbox` and tests; the daemon uses [`start`](Self::start)).
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, OutboxError> {
        let db = disk::connect(path, true)
            .map_err(|fault| OutboxError { path: path.display().to_string(), message: fault.message })?;
        let limits = Limits { max_bytes, memory_bytes: 64 << 20, min_free_bytes: 0 };
        Ok(Self::with(path, limits, Inner { db: Some(db), checked: true, ..Inner::default() }))
    }

    /// Opens the outbox at `path` for the daemon, whatever the disk does: a corrupt file is set
    /// aside and salvaged into a new one; a disk that cannot take it (full, read-only) leaves
    /// the outbox holding reports in memory, retried by [`maintain`](Self::maintain).
    pub fn start(path: &Path, limits: Limits) -> Self {
        let outbox = Self::with(path, limits, Inner::default());
        outbox.maintain();
        outbox
    }

    fn with(path: &Path, limits: Limits, inner: Inner) -> Self {
        Self {
            path: path.to_path_buf(),
            limits,
            inner: Mutex::new(Inner { retry_delay: RETRY_FIRST, ..inner }),
            pushed: tokio::sync::Notify::new(),
            delivered: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn strict(&self, fault: Fault) -> OutboxError {
        OutboxError { path: self.path.display().to_string(), message: fault.message }
    }

    fn sql_fault(&self, error: &rusqlite::Error) -> Fault {
        Fault::sql(&self.path, error)
    }

    /// Queues a report (blocking: call it off the async workers): on disk, or held in memory
    /// while the disk does not take it, behind any held already. Never fails.
    pub fn push(&self, camera: &str, topic: &str, json: &[u8], images: &Images) -> Slot {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let held = Held {
            seq,
            camera: camera.to_string(),
            topic: topic.to_string(),
            json: json.to_vec(),
            images: images.clone(),
            images_evicted: false,
            dead: None,
        };
        let behind_held = !inner.held.is_empty();
        let written = match &mut inner.db {
            Some(db) if !behind_held => Some(disk::insert(db, &held, self.limits.max_bytes)),
            _ => None,
        };
        let slot = match written {
            Some(Ok(id)) => {
                inner.fault = None;
                Slot::Disk(id)
            }
            failed => {
                if let Some(Err(error)) = failed {
                    let fault = self.sql_fault(&error);
                    self.fail(&mut inner, fault);
                }
                inner.held_bytes += held.bytes() as u64;
                inner.held.push_back(held);
                self.within_memory(&mut inner);
                Slot::Held(seq)
            }
        };
        drop(inner);
        self.pushed.notify_one();
        slot
    }

    /// Records a failure of the disk: logged when the state changes, retried with backoff.
    fn fail(&self, inner: &mut Inner, fault: Fault) {
        if fault.storage == Storage::Corrupt {
            // Checked, set aside and made anew at the next try.
            inner.db = None;
            inner.checked = false;
        }
        if inner.fault.as_ref().map(|f| f.storage) != Some(fault.storage) {
            error!(storage = fault.storage.as_str(), error = %fault.message, path = %self.path.display(),
                "outbox: the disk does not take reports; holding them in memory and retrying");
        }
        inner.fault = Some(fault);
        inner.retry_at = Some(Instant::now() + inner.retry_delay);
        inner.retry_delay = (inner.retry_delay * 2).min(RETRY_MOST);
    }

    /// Keeps the held reports within `memory_bytes`: the oldest reports' images first, then
    /// the oldest reports; each loss counted, each kind logged once an episode.
    fn within_memory(&self, inner: &mut Inner) {
        while inner.held_bytes > self.limits.memory_bytes {
            let with_images = inner.held.iter_mut().find(|h| h.images.bytes() > 0);
            if let Some(held) = with_images {
                let freed = held.images.bytes() as u64;
                held.images = Images::default();
                held.images_evicted = true;
                inner.held_bytes -= freed;
                inner.lost_images += 1;
                inner.episode_loss.0 += 1;
                if inner.episode_loss.0 == 1 {
                    error!(
                        memory_bytes = self.limits.memory_bytes,
                        "outbox: memory full while the disk is out: the oldest held reports lose their images (counted in the heartbeat)"
                    );
                }
                continue;
            }
            let Some(oldest) = inner.held.pop_front() else { break };
            inner.held_bytes -= oldest.bytes() as u64;
            inner.lost_reports += 1;
            inner.episode_loss.1 += 1;
            if inner.episode_loss.1 == 1 {
                error!(memory_bytes = self.limits.memory_bytes, camera = %oldest.camera,
                    "outbox: memory full while the disk is out: the oldest held reports are lost (counted in the heartbeat)");
            }
        }
    }

    /// The oldest report waiting: on disk first (older), then held in memory.
    pub fn next(&self) -> Option<Pending> {
        let mut inner = self.lock();
        let from_disk = inner.db.as_ref().map(|db| {
            let skip = |id: i64| inner.unremoved.contains(&id) || inner.undead.contains_key(&id);
            disk::next(db, skip)
        });
        match from_disk {
            Some(Ok(Some(pending))) => return Some(pending),
            Some(Err(error)) => {
                let fault = self.sql_fault(&error);
                self.fail(&mut inner, fault);
            }
            _ => {}
        }
        let held = inner.held.iter().find(|h| h.dead.is_none()).map(Held::pending);
        inner.in_flight = held.as_ref().and_then(|p| match p.slot {
            Slot::Held(seq) => Some((seq, None)),
            Slot::Disk(_) => None,
        });
        held
    }

    /// Where a held report went if it moved to disk while the publisher had it.
    fn settled(inner: &Inner, slot: Slot) -> Slot {
        match (slot, inner.in_flight) {
            (Slot::Held(seq), Some((flying, Some(id)))) if seq == flying => Slot::Disk(id),
            _ => slot,
        }
    }

    /// Forgets a report the broker has acknowledged (counted in `delivered`). Never fails: a
    /// row the disk will not delete is skipped and deleted later (after a crash meanwhile it
    /// is sent again: at least once).
    pub fn remove(&self, slot: Slot) {
        let mut inner = self.lock();
        match Self::settled(&inner, slot) {
            Slot::Held(seq) => {
                if let Some(at) = inner.held.iter().position(|h| h.seq == seq)
                    && let Some(held) = inner.held.remove(at)
                {
                    inner.held_bytes -= held.bytes() as u64;
                }
            }
            Slot::Disk(id) => {
                let removed = inner.db.as_ref().map(|db| disk::remove(db, id));
                if let Some(Err(error)) = &removed {
                    let fault = self.sql_fault(error);
                    self.fail(&mut inner, fault);
                }
                if !matches!(removed, Some(Ok(()))) {
                    inner.unremoved.insert(id);
                }
            }
        }
        self.delivered.inc();
    }

    /// Takes a report the broker refused out of the queue, keeping it with `reason`.
    pub fn dead_letter(&self, slot: Slot, reason: &str) {
        let mut inner = self.lock();
        match Self::settled(&inner, slot) {
            Slot::Held(seq) => {
                if let Some(held) = inner.held.iter_mut().find(|h| h.seq == seq) {
                    held.dead = Some(reason.to_string());
                }
            }
            Slot::Disk(id) => {
                let done = inner.db.as_ref().map(|db| disk::dead_letter(db, id, reason));
                if let Some(Err(error)) = &done {
                    let fault = self.sql_fault(error);
                    self.fail(&mut inner, fault);
                }
                if !matches!(done, Some(Ok(()))) {
                    inner.undead.insert(id, reason.to_string());
                }
            }
        }
    }

    /// Looks after the disk (call it every second or so; blocking): opens the outbox if it is
    /// not open (setting a corrupt one aside), moves held reports to it in order and retries
    /// what it refused, when the backoff allows; watches the free space, dropping the oldest
    /// reports' images below `min_free_bytes`. Logs each change of [`Storage`].
    pub fn maintain(&self) {
        let mut inner = self.lock();
        let due = inner.retry_at.is_none_or(|at| Instant::now() >= at);
        // A disk in trouble is opened afresh at each try: the file system under the path may
        // have been mounted again. If it does not open, the old connection still reads.
        if due && (inner.db.is_none() || inner.fault.is_some()) {
            match self.reopen(&mut inner) {
                Ok(db) => inner.db = Some(db),
                Err(fault) => self.fail(&mut inner, fault),
            }
        }
        let pending =
            inner.fault.is_some() || !inner.held.is_empty() || !inner.unremoved.is_empty() || !inner.undead.is_empty();
        if due && pending && inner.db.is_some() {
            match self.flush(&mut inner) {
                Ok(()) => {
                    inner.fault = None;
                    inner.retry_at = None;
                    inner.retry_delay = RETRY_FIRST;
                }
                Err(fault) => self.fail(&mut inner, fault),
            }
        }
        inner.free_bytes = disk::free_space(&self.path).map(|f| f.bytes);
        if self.storage(&inner) == Storage::Low
            && let Some(db) = &inner.db
            && let Err(error) = disk::shed_images(db, 16)
        {
            warn!(%error, "outbox: dropping images to free the disk failed");
        }
        let storage = self.storage(&inner);
        if storage != inner.announced {
            match storage {
                Storage::Ok => info!(held = inner.held.len(), "outbox: storage is fine again"),
                Storage::Low => warn!(free_bytes = ?inner.free_bytes, min_free_bytes = self.limits.min_free_bytes,
                    "outbox: the disk is low on space; dropping the oldest reports' images"),
                _ => {}
            }
            inner.announced = storage;
        }
    }

    /// Opens the file again; a corrupt one is renamed aside and salvaged into a new one.
    fn reopen(&self, inner: &mut Inner) -> Result<Connection, Fault> {
        match disk::connect(&self.path, !inner.checked) {
            Err(fault) if fault.storage == Storage::Corrupt => {
                error!(error = %fault.message, path = %self.path.display(), "outbox: the file is corrupt; setting it aside");
                inner.db = None; // closed before it is renamed
                let aside = disk::set_aside(&self.path)?;
                inner.set_aside += 1;
                let db = disk::connect(&self.path, false)?;
                let (saved, unreadable) = disk::salvage(&aside, &db);
                error!(aside = %aside.display(), saved, unreadable, "outbox: a new outbox started with the reports that still read");
                inner.checked = true;
                Ok(db)
            }
            Ok(db) => {
                inner.checked = true;
                Ok(db)
            }
            failed => failed,
        }
    }

    /// Retries what the disk refused, moves the held reports to it in order, then checks that
    /// it takes writes.
    fn flush(&self, inner: &mut Inner) -> Result<(), Fault> {
        let Inner { db: Some(db), held, held_bytes, unremoved, undead, in_flight, episode_loss, .. } = inner else {
            return Ok(());
        };
        let fault = |e: rusqlite::Error| Fault::sql(&self.path, &e);
        while let Some(&id) = unremoved.first() {
            disk::remove(db, id).map_err(fault)?;
            unremoved.remove(&id);
        }
        while let Some((&id, reason)) = undead.first_key_value() {
            disk::dead_letter(db, id, reason).map_err(fault)?;
            undead.remove(&id);
        }
        // A bounded batch a call, so a long backlog does not hold up the rules' next push.
        let moved = held.len().min(FLUSH_BATCH);
        for _ in 0..moved {
            let Some(first) = held.front() else { break };
            let id = disk::insert(db, first, self.limits.max_bytes).map_err(fault)?;
            if let Some(flying) = in_flight.as_mut().filter(|(seq, _)| *seq == first.seq) {
                flying.1 = Some(id);
            }
            *held_bytes -= first.bytes() as u64;
            held.pop_front();
        }
        if moved > 0 {
            info!(reports = moved, still_held = held.len(), "outbox: reports held in memory moved to disk");
        }
        if held.is_empty() && *episode_loss != (0, 0) {
            let (images, reports) = std::mem::take(episode_loss);
            error!(
                images,
                reports,
                memory_bytes = self.limits.memory_bytes,
                "outbox: lost past the memory bound while the disk did not take reports"
            );
        }
        disk::probe(db).map_err(fault)
    }

    fn storage(&self, inner: &Inner) -> Storage {
        let low = inner.free_bytes.is_some_and(|free| free < self.limits.min_free_bytes);
        match (&inner.fault, low) {
            (Some(fault), _) => fault.storage,
            (None, true) => Storage::Low,
            (None, false) => Storage::Ok,
        }
    }

    /// The dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, OutboxError> {
        let inner = self.lock();
        let Some(db) = &inner.db else { return Ok(Vec::new()) };
        let err = |e: rusqlite::Error| self.strict(self.sql_fault(&e));
        let mut query = db
            .prepare(
                "SELECT id, camera, topic, size, queued_at, failed_at, dead_reason FROM queue
                 WHERE dead_reason IS NOT NULL ORDER BY id",
            )
            .map_err(err)?;
        let rows = query
            .query_map([], |r| {
                Ok(DeadLetter {
                    id: r.get(0)?,
                    camera: r.get(1)?,
                    topic: r.get(2)?,
                    bytes: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                    queued_at: r.get(4)?,
                    failed_at: r.get(5)?,
                    reason: r.get(6)?,
                })
            })
            .map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
    }

    /// Puts every dead letter back in the queue, in its old place. Returns how many.
    pub fn requeue_dead_letters(&self) -> Result<usize, OutboxError> {
        let inner = self.lock();
        let Some(db) = &inner.db else { return Ok(0) };
        let n = db
            .execute("UPDATE queue SET dead_reason = NULL, failed_at = NULL WHERE dead_reason IS NOT NULL", [])
            .map_err(|e| self.strict(self.sql_fault(&e)))?;
        drop(inner);
        if n > 0 {
            self.pushed.notify_one();
        }
        Ok(n)
    }

    /// What is waiting, and what the storage is doing. What the disk cannot say reads as zero.
    pub fn depth(&self) -> Depth {
        let inner = self.lock();
        let mut depth = inner.db.as_ref().and_then(|db| disk::depth(db).ok()).unwrap_or_default();
        depth.reports += inner.held.iter().filter(|h| h.dead.is_none()).count() as u64;
        depth.reports = depth.reports.saturating_sub(inner.unremoved.len() as u64 + inner.undead.len() as u64);
        depth.dead_letters += inner.undead.len() as u64;
        Depth {
            storage: self.storage(&inner),
            storage_error: inner.fault.as_ref().map(|f| f.message.clone()),
            free_bytes: inner.free_bytes,
            held_reports: inner.held.len() as u64,
            held_bytes: inner.held_bytes,
            lost_images: inner.lost_images,
            lost_reports: inner.lost_reports,
            set_aside: inner.set_aside,
            ..depth
        }
    }

    /// At shutdown: one last try to put the held reports on disk; those it will not take are
    /// lost with this process, and logged.
    pub fn close(&self) {
        let mut inner = self.lock();
        if inner.held.is_empty() {
            return;
        }
        inner.retry_at = None;
        drop(inner);
        self.maintain();
        let inner = self.lock();
        if !inner.held.is_empty() {
            error!(
                reports = inner.held.len(),
                storage = self.storage(&inner).as_str(),
                "outbox: reports held in memory are lost at shutdown: the disk did not take them"
            );
        }
    }

    /// Waits until a report is pushed or requeued (or one already was since the last wait).
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

    fn images(snapshot: &[u8]) -> Images {
        Images { snapshot: Some(snapshot.to_vec()), first_seen: None }
    }

    #[test]
    fn reports_survive_a_reopen_in_order_until_removed() {
        let path = temp();
        let outbox = Outbox::open(&path, 1 << 20).unwrap();
        let a = outbox.push("cam-1", "t/a", b"first", &images(b"jpeg"));
        let b = outbox.push("cam-2", "t/b", b"second", &Images::default());
        drop(outbox);
        let outbox = Outbox::open(&path, 1 << 20).unwrap();
        let first = outbox.next().unwrap();
        assert_eq!((first.slot, first.topic.as_str(), first.json.as_slice()), (a, "t/a", &b"first"[..]));
        assert_eq!(first.images, images(b"jpeg"));
        outbox.remove(a);
        let depth = outbox.depth();
        assert_eq!((depth.reports, depth.bytes), (1, 6));
        assert!((0..5).contains(&depth.oldest_age_secs().unwrap()), "{depth:?}");
        assert_eq!(outbox.next().unwrap().slot, b);
        outbox.remove(b);
        assert_eq!(outbox.next(), None);
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }

    #[test]
    fn past_its_size_the_oldest_images_go_first_then_the_oldest_reports() {
        let path = temp();
        // Each report: 9 bytes of JSON and 20 of image.
        let outbox = Outbox::open(&path, 70).unwrap();
        let push = |i: usize| outbox.push("cam", "t", format!("report-{i}-").as_bytes(), &images(&[0; 20]));
        push(0);
        push(1);
        assert_eq!(outbox.depth().bytes, 58, "within the limit: nothing evicted");
        push(2); // 87 bytes: the oldest report's images go
        let first = outbox.next().unwrap();
        assert!(first.images_evicted && first.images == Images::default(), "{first:?}");
        assert_eq!(first.json, b"report-0-", "the report itself stays");
        let depth = outbox.depth();
        assert_eq!((depth.reports, depth.bytes, depth.evicted_images, depth.evicted_reports), (3, 67, 1, 0));
        push(3); // 96: the images of report 1 (76), then of report 2 (56)
        let depth = outbox.depth();
        assert_eq!((depth.bytes, depth.evicted_images, depth.evicted_reports), (56, 3, 0));
        push(4); // 85: the images of report 3 (65)
        push(5); // 94: the images of report 4 (74); no older images left, so report 0 goes (65)
        let depth = outbox.depth();
        assert_eq!((depth.reports, depth.bytes, depth.evicted_images, depth.evicted_reports), (5, 65, 5, 1));
        assert_eq!(outbox.next().unwrap().json, b"report-1-", "the oldest report went");
        let newest = {
            let mut last = None;
            while let Some(p) = outbox.next() {
                outbox.remove(p.slot);
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
        outbox.push("cam", "t", b"report", &images(&[0; 100]));
        let kept = outbox.next().unwrap();
        assert!(kept.images_evicted);
        assert_eq!(outbox.depth().evicted_images, 1);
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }

    #[test]
    fn dead_letters_leave_the_queue_with_their_reason_until_requeued() {
        let path = temp();
        let outbox = Outbox::open(&path, 1 << 20).unwrap();
        let a = outbox.push("cam", "t/denied", b"a", &Images::default());
        let b = outbox.push("cam", "t/ok", b"b", &Images::default());
        outbox.dead_letter(a, "not authorized");
        assert_eq!(outbox.next().unwrap().slot, b, "a dead letter does not block the queue");
        let dead = outbox.dead_letters().unwrap();
        assert_eq!((dead.len(), Slot::Disk(dead[0].id), dead[0].reason.as_str()), (1, a, "not authorized"));
        let depth = outbox.depth();
        assert_eq!((depth.reports, depth.dead_letters), (1, 1));
        drop(outbox);
        let outbox = Outbox::open(&path, 1 << 20).unwrap();
        assert_eq!(outbox.dead_letters().unwrap().len(), 1, "dead letters survive a restart");
        assert_eq!(outbox.requeue_dead_letters().unwrap(), 1);
        assert_eq!(outbox.next().unwrap().slot, a, "requeued in its old place");
        assert_eq!(outbox.depth().dead_letters, 0);
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }

    /// A tmpfs of `bytes` for a storage test, or None (the test is skipped, saying why) where
    /// this process may not mount one.
    fn tmpfs(bytes: u64) -> Option<crate::testing::Tmpfs> {
        let dir = std::env::temp_dir().join(format!("fw-tmpfs-{}", uuid::Uuid::new_v4()));
        match crate::testing::Tmpfs::mount(&dir, bytes) {
            Ok(fs) => Some(fs),
            Err(why) => {
                eprintln!("SKIPPED: cannot mount a tmpfs here ({why}); the storage tests need root");
                std::fs::remove_dir_all(&dir).ok();
                None
            }
        }
    }

    const LIMITS: Limits = Limits { max_bytes: 64 << 20, memory_bytes: 1 << 20, min_free_bytes: 0 };

    /// Calls `maintain` until `done` (the backoff may hold the next try back a few seconds).
    fn maintained(outbox: &Outbox, done: impl Fn(&Depth) -> bool) -> Depth {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            outbox.maintain();
            let depth = outbox.depth();
            if done(&depth) || Instant::now() > deadline {
                return depth;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Takes every waiting report, in order, removing each.
    fn drain(outbox: &Outbox) -> Vec<String> {
        std::iter::from_fn(|| {
            let next = outbox.next()?;
            outbox.remove(next.slot);
            Some(String::from_utf8(next.json).unwrap())
        })
        .collect()
    }

    #[test]
    fn a_full_disk_holds_reports_in_memory_in_order_until_it_takes_them_back() {
        let Some(fs) = tmpfs(4 << 20) else { return };
        let outbox = Outbox::start(&fs.dir.join("outbox.db"), LIMITS);
        assert!(matches!(outbox.push("cam", "t", b"r0", &images(&[1; 1000])), Slot::Disk(_)));
        let filler = fs.fill();
        let slots: Vec<Slot> =
            (1..=5).map(|i| outbox.push("cam", "t", format!("r{i}").as_bytes(), &images(&[1; 1000]))).collect();
        assert!(slots.iter().all(|s| matches!(s, Slot::Held(_))), "{slots:?}");
        let depth = outbox.depth();
        assert_eq!((depth.storage, depth.held_reports, depth.reports), (Storage::Full, 5, 6), "{depth:?}");
        // The broker is up meanwhile: what is on disk goes first, then the held ones in order.
        let first = outbox.next().unwrap();
        assert_eq!(first.json, b"r0");
        outbox.remove(first.slot); // the disk may not delete it now: skipped, deleted later
        assert_eq!(outbox.next().unwrap().json, b"r1", "held reports follow, oldest first");

        std::fs::remove_file(filler).unwrap();
        let depth = maintained(&outbox, |d| d.storage == Storage::Ok && d.held_reports == 0);
        assert_eq!((depth.storage, depth.held_reports, depth.reports), (Storage::Ok, 0, 5), "{depth:?}");
        assert!(
            matches!(outbox.push("cam", "t", b"r6", &Images::default()), Slot::Disk(_)),
            "the disk takes reports again"
        );
        assert_eq!(drain(&outbox), ["r1", "r2", "r3", "r4", "r5", "r6"]);
        assert_eq!((outbox.depth().lost_reports, outbox.depth().lost_images), (0, 0));
    }

    #[test]
    fn past_the_memory_bound_held_reports_lose_their_images_then_the_oldest_go_counted() {
        let Some(fs) = tmpfs(2 << 20) else { return };
        let limits = Limits { memory_bytes: 10_000, ..LIMITS };
        let outbox = Outbox::start(&fs.dir.join("outbox.db"), limits);
        let _filler = fs.fill();
        // Each: 2 bytes of JSON and 3,000 of image; four fit, the fifth's arrival drops images.
        for i in 0..5 {
            outbox.push("cam", "t", format!("r{i}").as_bytes(), &images(&[1; 3000]));
        }
        let depth = outbox.depth();
        assert_eq!((depth.held_reports, depth.lost_images, depth.lost_reports), (5, 2, 0), "{depth:?}");
        assert!(depth.held_bytes <= 10_000);
        let first = outbox.next().unwrap();
        assert!(first.images_evicted && first.images == Images::default(), "the oldest lost its images");
        // Reports of JSON alone past the bound: once no images are left, the oldest go.
        for i in 5..10 {
            outbox.push(
                "cam",
                "t",
                format!("r{i}").as_bytes(),
                &Images { snapshot: Some(vec![0; 9990]), first_seen: None },
            );
        }
        let depth = outbox.depth();
        assert!(depth.lost_reports == 0 && depth.lost_images >= 6, "images go before reports: {depth:?}");
        outbox.push("cam", "t", &[b'x'; 10_000], &Images::default());
        let depth = outbox.depth();
        assert!(depth.lost_reports > 0 && depth.held_bytes <= 10_000, "{depth:?}");
        assert_eq!(outbox.next().unwrap().json.len(), 10_000, "only the newest fits");
    }

    #[test]
    fn a_disk_turned_read_only_under_the_outbox_holds_reports_and_recovers_once_repaired() {
        let dir = std::env::temp_dir().join(format!("fw-ext4-{}", uuid::Uuid::new_v4()));
        let fs = match crate::testing::Ext4::mount(&dir, 16 << 20) {
            Ok(fs) => fs,
            Err(why) => {
                return eprintln!("SKIPPED: cannot mount an ext4 image here ({why}); the storage tests need root");
            }
        };
        let outbox = Outbox::start(&fs.dir.join("outbox.db"), LIMITS);
        assert!(matches!(outbox.push("cam", "t", b"r0", &Images::default()), Slot::Disk(_)));
        fs.fail().unwrap();
        assert!(matches!(outbox.push("cam", "t", b"r1", &Images::default()), Slot::Held(_)));
        outbox.maintain();
        assert_eq!(outbox.depth().storage, Storage::ReadOnly, "{:?}", outbox.depth());
        assert_eq!(outbox.next().unwrap().json, b"r0", "what is on disk still reads, first");
        fs.repair().unwrap();
        let depth = maintained(&outbox, |d| d.storage == Storage::Ok && d.held_reports == 0);
        assert_eq!((depth.storage, depth.reports), (Storage::Ok, 2), "{depth:?}");
        assert_eq!(drain(&outbox), ["r0", "r1"]);
    }

    #[test]
    fn a_full_disk_at_start_leaves_the_outbox_in_memory_until_there_is_room() {
        let Some(fs) = tmpfs(1 << 20) else { return };
        let filler = fs.fill();
        let path = fs.dir.join("state/outbox.db");
        let outbox = Outbox::start(&path, LIMITS);
        assert!(matches!(outbox.push("cam", "t", b"r0", &Images::default()), Slot::Held(_)));
        assert_eq!(outbox.depth().storage, Storage::Full, "{:?}", outbox.depth());
        std::fs::remove_file(filler).unwrap();
        let depth = maintained(&outbox, |d| d.held_reports == 0 && d.storage == Storage::Ok);
        assert_eq!((depth.storage, depth.reports), (Storage::Ok, 1), "{depth:?}");
        assert!(path.exists());
    }

    #[test]
    fn below_min_free_bytes_the_oldest_reports_images_are_dropped_and_given_back() {
        let Some(fs) = tmpfs(8 << 20) else { return };
        let path = fs.dir.join("outbox.db");
        let outbox = Outbox::start(&path, LIMITS);
        for i in 0..20 {
            outbox.push("cam", "t", format!("r{i}").as_bytes(), &images(&[7; 200_000]));
        }
        outbox.maintain();
        let free_before = outbox.depth().free_bytes.unwrap();
        // Ask for more free space than there is: the images go, oldest first, and the pages
        // go back to the file system.
        let limits = Limits { min_free_bytes: 8 << 20, ..LIMITS };
        drop(outbox);
        let outbox = Outbox::start(&path, limits);
        let depth = maintained(&outbox, |d| d.evicted_images >= 20);
        assert_eq!((depth.storage, depth.reports, depth.evicted_images), (Storage::Low, 20, 20), "{depth:?}");
        assert!(depth.free_bytes.unwrap() > free_before + 3_000_000, "space given back: {depth:?} vs {free_before}");
        let first = outbox.next().unwrap();
        assert!(first.images_evicted, "reports stay, without their images");
    }

    /// A real outbox of `n` reports with 3 KB images, closed; returns its path.
    fn real_outbox(dir: &Path, n: usize) -> PathBuf {
        let path = dir.join("outbox.db");
        let outbox = Outbox::open(&path, 64 << 20).unwrap();
        for i in 0..n {
            outbox.push("cam", "t", format!("r{i}").as_bytes(), &images(&[i as u8; 3000]));
        }
        drop(outbox);
        path
    }

    fn set_aside_files(dir: &Path) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.to_string_lossy().contains("outbox.db.corrupt-")
                    && !p.to_string_lossy().ends_with("-wal")
                    && !p.to_string_lossy().ends_with("-shm")
            })
            .collect();
        found.sort();
        found
    }

    #[test]
    fn a_corrupt_outbox_is_set_aside_and_what_still_reads_is_salvaged() {
        let dir = temp().parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("outbox.db");

        // Random bytes: nothing to salvage, but the daemon gets a new outbox.
        let noise: Vec<u8> = (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(&path, &noise).unwrap();
        let outbox = Outbox::start(&path, LIMITS);
        let depth = outbox.depth();
        assert_eq!((depth.storage, depth.set_aside, depth.reports), (Storage::Ok, 1, 0), "{depth:?}");
        assert!(matches!(outbox.push("cam", "t", b"new", &Images::default()), Slot::Disk(_)));
        let aside = set_aside_files(&dir);
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::read(&aside[0]).unwrap(), noise, "set aside as it was, never deleted");
        drop(outbox);
        std::fs::remove_dir_all(&dir).unwrap();

        // A real one with a zeroed page in the middle: the reports on other pages are kept.
        std::fs::create_dir_all(&dir).unwrap();
        let path = real_outbox(&dir, 200);
        let mut bytes = std::fs::read(&path).unwrap();
        let page = 4096;
        let middle = bytes.len() / page / 2 * page;
        bytes[middle..middle + page].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        let outbox = Outbox::start(&path, LIMITS);
        let depth = outbox.depth();
        assert_eq!(depth.set_aside, 1, "{depth:?}");
        let kept = drain(&outbox);
        assert!(kept.len() >= 150 && kept.len() < 200, "salvaged {} of 200", kept.len());
        let numbers: Vec<usize> = kept.iter().map(|r| r[1..].parse().unwrap()).collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "in their order");
        drop(outbox);
        std::fs::remove_dir_all(&dir).unwrap();

        // A truncated copy of a real one.
        std::fs::create_dir_all(&dir).unwrap();
        let path = real_outbox(&dir, 200);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let outbox = Outbox::start(&path, LIMITS);
        assert_eq!(outbox.depth().set_aside, 1);
        let kept = drain(&outbox).len();
        assert!(kept > 0 && kept < 200, "salvaged {kept} of 200");
        drop(outbox);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
