//! The outbox's SQLite file: opening it (and setting a corrupt one aside, salvaging what still
//! reads), and the statements the queue runs. Every failure comes back as a [`Fault`] that
//! says what the storage is doing, so the caller can hold reports in memory meanwhile.

use super::{Held, Pending, Slot, Storage};
use crate::report::Images;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, params};
use std::path::{Path, PathBuf};
use tracing::{error, warn};

/// `auto_vacuum` before the first table, so dropped images can be given back to the file
/// system (`incremental_vacuum`) when the disk runs low; it only takes on a new file.
const SCHEMA: &str = "
    PRAGMA auto_vacuum = INCREMENTAL;
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

const COLUMNS: &str = "id, camera, topic, json, snapshot, first_seen, images_evicted";

/// What went wrong with the file, and what that says about the storage.
#[derive(Debug, Clone)]
pub(super) struct Fault {
    pub storage: Storage,
    pub message: String,
}

impl Fault {
    /// `error` on the file system holding `path`: what the file system says first (read-only,
    /// out of space), then what SQLite says.
    pub fn of(path: &Path, error: &dyn std::fmt::Display, code: Option<ErrorCode>) -> Self {
        let storage = match (filesystem(path), code) {
            (Some(fs), _) if fs != Storage::Ok => fs,
            (_, Some(ErrorCode::DiskFull)) => Storage::Full,
            (_, Some(ErrorCode::ReadOnly)) => Storage::ReadOnly,
            (_, Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)) => Storage::Corrupt,
            _ => Storage::Failing,
        };
        Self { storage, message: error.to_string() }
    }

    pub fn sql(path: &Path, error: &rusqlite::Error) -> Self {
        Self::of(path, error, error.sqlite_error_code())
    }

    fn io(path: &Path, error: &std::io::Error) -> Self {
        let code = match error.kind() {
            std::io::ErrorKind::StorageFull => Some(ErrorCode::DiskFull),
            std::io::ErrorKind::ReadOnlyFilesystem => Some(ErrorCode::ReadOnly),
            _ => None,
        };
        Self::of(path, error, code)
    }
}

/// Below this many free bytes the file system counts as full: SQLite needs room for its WAL.
const FULL_BELOW: u64 = 256 << 10;

/// The file system holding `path` (its folder): read-only, full, or fine; None if it cannot
/// be asked. Asked after a failure only: besides its figures, it tries to create a file, as a
/// file system the kernel turned read-only after an error still says `rw` in its flags.
pub(super) fn filesystem(path: &Path) -> Option<Storage> {
    let free = free_space(path)?;
    if free.read_only {
        return Some(Storage::ReadOnly);
    } else if free.bytes < FULL_BELOW {
        return Some(Storage::Full);
    }
    let dir = path.ancestors().find(|p| p.is_dir())?;
    let probe = dir.join(".fieldwatch-write-test");
    let written = std::fs::write(&probe, b"");
    let _ = std::fs::remove_file(&probe);
    Some(match written.map_err(|e| e.kind()) {
        Ok(()) => Storage::Ok,
        Err(std::io::ErrorKind::ReadOnlyFilesystem) => Storage::ReadOnly,
        Err(std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) => Storage::Full,
        Err(_) => Storage::Failing,
    })
}

pub(super) struct FreeSpace {
    pub bytes: u64,
    pub read_only: bool,
}

/// Free bytes for an unprivileged writer where `path` is (its folder if it does not exist).
pub(super) fn free_space(path: &Path) -> Option<FreeSpace> {
    use std::os::unix::ffi::OsStrExt;
    let dir = path.ancestors().find(|p| p.is_dir())?;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; zeroed is a valid value for it.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid C string and `stat` a writable statvfs.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(FreeSpace {
        bytes: stat.f_bavail.saturating_mul(stat.f_frsize),
        read_only: stat.f_flag & libc::ST_RDONLY != 0,
    })
}

/// Opens the outbox at `path`; with `check`, checks it (`quick_check`, which reads it all: a
/// corrupt file is found at start, not at the first report).
pub(super) fn connect(path: &Path, check: bool) -> Result<Connection, Fault> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Fault::io(path, &e))?;
    }
    let fault = |e: rusqlite::Error| Fault::sql(path, &e);
    let db = Connection::open(path).map_err(fault)?;
    db.execute_batch(SCHEMA).map_err(fault)?;
    if check {
        let found: String = db.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(fault)?;
        if found != "ok" {
            return Err(Fault { storage: Storage::Corrupt, message: format!("quick_check: {found}") });
        }
    }
    Ok(db)
}

/// Renames the corrupt outbox at `path` (and its WAL, which belongs with it) to
/// `{path}.corrupt-{time}`, never deleting it; returns the new name.
pub(super) fn set_aside(path: &Path) -> Result<PathBuf, Fault> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let aside = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
    std::fs::rename(path, &aside).map_err(|e| Fault::io(path, &e))?;
    for suffix in ["-wal", "-shm"] {
        let (from, to) = (format!("{}{suffix}", path.display()), format!("{}{suffix}", aside.display()));
        if let Err(error) = std::fs::rename(&from, &to)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            warn!(%error, file = from, "outbox: the corrupt file's companion stays where it was");
        }
    }
    Ok(aside)
}

/// Copies every report that still reads from the outbox set aside at `from` into `into`,
/// keeping ids (so order) and dead letters. Returns (salvaged, unreadable).
pub(super) fn salvage(from: &Path, into: &Connection) -> (u64, u64) {
    // A file cut short (a power cut while it grew) reads as corrupt throughout; a copy grown
    // back to the size its header says reads but for the pages that are missing.
    let padded = PathBuf::from(format!("{}.salvage", from.display()));
    let grown = grown_copy(from, &padded);
    let salvaged = salvage_from(if grown { &padded } else { from }, into);
    if grown {
        let _ = std::fs::remove_file(&padded);
    }
    salvaged
}

/// Copies `from` to `to`, grown with zeros to the size in its SQLite header, if it is shorter;
/// false (and nothing written) if it is not.
fn grown_copy(from: &Path, to: &Path) -> bool {
    use std::io::Read;
    // The header alone: page size at 16 (2 bytes), page count at 28 (4), big-endian.
    let mut header = [0u8; 32];
    let Ok(len) =
        std::fs::File::open(from).and_then(|mut f| f.read_exact(&mut header).and(f.metadata())).map(|m| m.len())
    else {
        return false;
    };
    let field =
        |at: usize, n: usize| header.get(at..at + n).map_or(0, |b| b.iter().fold(0u64, |v, x| v << 8 | u64::from(*x)));
    let page = match field(16, 2) {
        1 => 65_536,
        page => page,
    };
    let size = page.saturating_mul(field(28, 4));
    let written = size > len
        && std::fs::copy(from, to).is_ok()
        && std::fs::OpenOptions::new().write(true).open(to).and_then(|f| f.set_len(size)).is_ok();
    if !written {
        let _ = std::fs::remove_file(to);
    }
    written
}

fn salvage_from(from: &Path, into: &Connection) -> (u64, u64) {
    // Read as it is, changing nothing: `immutable` needs no lock and no shared-memory file. A
    // WAL left beside it holds committed reports, which only a writable open reads.
    let has_wal = Path::new(&format!("{}-wal", from.display())).exists();
    let opened = match has_wal {
        false => Connection::open_with_flags(
            format!("file:{}?immutable=1", from.display()),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        ),
        true => Connection::open(from),
    };
    let old = match opened {
        Ok(old) => old,
        Err(error) => {
            warn!(%error, "outbox salvage: the file set aside does not open");
            return (0, 0);
        }
    };
    // The range of ids first, each end one walk down the tree (apart: together they would scan
    // the table, through any damaged page), else up to the last id given out; then each id on
    // its own, so a damaged page loses the rows on it, not the rows after it.
    let end = |sql: &str| old.query_row(sql, [], |r| r.get::<_, Option<i64>>(0));
    let issued = || end("SELECT seq FROM sqlite_sequence WHERE name = 'queue'");
    let (first, last) = match (end("SELECT MIN(id) FROM queue"), end("SELECT MAX(id) FROM queue"), issued()) {
        (Ok(Some(first)), Ok(Some(last)), _) => (first, last),
        (_, _, Ok(Some(last))) => (1, last),
        (_, _, Ok(None)) => return (0, 0),
        (_, _, Err(error)) => {
            warn!(%error, "outbox salvage: nothing readable");
            return (0, 0);
        }
    };
    const MOST_PROBED: i64 = 1_000_000;
    let (mut saved, mut unreadable) = (0, 0);
    let Ok(mut read) = old.prepare(
        "SELECT camera, topic, json, snapshot, first_seen, images_evicted, size, queued_at, dead_reason, failed_at
         FROM queue WHERE id = ?1",
    ) else {
        return (0, 0);
    };
    for id in first.max(last.saturating_sub(MOST_PROBED))..=last {
        let row = read
            .query_row([id], |r| {
                let values: [rusqlite::types::Value; 10] = [
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ];
                Ok(values)
            })
            .optional();
        let copied = row.and_then(|row| match row {
            None => Ok(false),
            Some(values) => into
                .execute(
                    "INSERT INTO queue (id, camera, topic, json, snapshot, first_seen, images_evicted, size, queued_at,
                                        dead_reason, failed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    rusqlite::params_from_iter(std::iter::once(rusqlite::types::Value::Integer(id)).chain(values)),
                )
                .map(|_| true),
        });
        match copied {
            Ok(true) => saved += 1,
            Ok(false) => {}
            Err(_) => unreadable += 1,
        }
    }
    if let Ok(mut counters) = old.prepare("SELECT name, value FROM counters") {
        let rows = counters.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)));
        for (name, value) in rows.into_iter().flatten().flatten() {
            let _ = into.execute("INSERT OR REPLACE INTO counters (name, value) VALUES (?1, ?2)", params![name, value]);
        }
    }
    if unreadable > 0 {
        error!(unreadable, saved, "outbox salvage: some reports could not be read and are lost");
    }
    (saved, unreadable)
}

/// Queues `held` in one transaction, staying within `max_bytes`; returns its id.
pub(super) fn insert(db: &mut Connection, held: &Held, max_bytes: u64) -> rusqlite::Result<i64> {
    let tx = db.transaction()?;
    let images = &held.images;
    tx.execute(
        "INSERT INTO queue (camera, topic, json, snapshot, first_seen, images_evicted, size, dead_reason, failed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, CASE WHEN ?8 IS NULL THEN NULL
                 ELSE strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END)",
        params![
            held.camera,
            held.topic,
            held.json,
            images.snapshot,
            images.first_seen,
            held.images_evicted,
            held.bytes() as i64,
            held.dead
        ],
    )?;
    let id = tx.last_insert_rowid();
    evict(&tx, id, max_bytes)?;
    tx.commit()?;
    Ok(id)
}

/// Stays within `max_bytes` after `new` was queued: first the images of the oldest
/// reports, then the oldest reports (never `new` itself), finally `new`'s own images.
fn evict(tx: &Transaction, new: i64, max_bytes: u64) -> rusqlite::Result<()> {
    let (mut images, mut reports) = (0i64, 0i64);
    loop {
        let bytes: i64 = tx.query_row("SELECT COALESCE(SUM(size), 0) FROM queue", [], |r| r.get(0))?;
        if u64::try_from(bytes).unwrap_or(0) <= max_bytes {
            break;
        }
        if let Some((id, camera)) = oldest_with_images(tx, new)? {
            drop_images(tx, id)?;
            warn!(outbox_id = id, %camera, max_bytes, "outbox full: a report's images dropped");
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
            warn!(outbox_id = id, %camera, max_bytes, "outbox full: oldest report evicted");
            reports += 1;
            continue;
        }
        // Only the new report is left and it is too big by itself: it goes without images.
        if drop_images(tx, new)? == 0 {
            break;
        }
        warn!(outbox_id = new, max_bytes, "outbox full: a report's images dropped");
        images += 1;
    }
    count(tx, "evicted_images", images)?;
    count(tx, "evicted_reports", reports)
}

fn count(db: &Connection, name: &str, n: i64) -> rusqlite::Result<()> {
    if n > 0 {
        db.execute(
            "INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = value + ?2",
            params![name, n],
        )?;
    }
    Ok(())
}

fn oldest_with_images(db: &Connection, except: i64) -> rusqlite::Result<Option<(i64, String)>> {
    db.query_row(
        "SELECT id, camera FROM queue WHERE id != ?1 AND (snapshot IS NOT NULL OR first_seen IS NOT NULL)
         ORDER BY id LIMIT 1",
        [except],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// Drops report `id`'s images; returns 0 if it had none.
fn drop_images(db: &Connection, id: i64) -> rusqlite::Result<usize> {
    db.execute(
        "UPDATE queue SET snapshot = NULL, first_seen = NULL, images_evicted = 1, size = LENGTH(json)
         WHERE id = ?1 AND (snapshot IS NOT NULL OR first_seen IS NOT NULL)",
        [id],
    )
}

/// The disk is running low: drops the images of up to `most` of the oldest reports and gives
/// the pages back to the file system. Returns how many reports lost their images.
pub(super) fn shed_images(db: &Connection, most: usize) -> rusqlite::Result<i64> {
    let mut dropped = 0;
    for _ in 0..most {
        let Some((id, camera)) = oldest_with_images(db, 0)? else { break };
        drop_images(db, id)?;
        warn!(outbox_id = id, %camera, "disk low: a report's images dropped");
        dropped += 1;
    }
    count(db, "evicted_images", dropped)?;
    if dropped > 0 {
        // Each step of incremental_vacuum frees one page: step it to the end.
        let mut vacuum = db.prepare("PRAGMA incremental_vacuum")?;
        let mut pages = vacuum.query([])?;
        while pages.next()?.is_some() {}
        db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(dropped)
}

/// The oldest report waiting on disk, leaving out those in `skip` (delivered or refused
/// while the disk would not record it).
pub(super) fn next(db: &Connection, skip: impl Fn(i64) -> bool) -> rusqlite::Result<Option<Pending>> {
    let mut after = 0;
    loop {
        let found = db
            .query_row(
                &format!("SELECT {COLUMNS} FROM queue WHERE dead_reason IS NULL AND id > ?1 ORDER BY id LIMIT 1"),
                [after],
                |r| {
                    Ok(Pending {
                        slot: Slot::Disk(r.get(0)?),
                        camera: r.get(1)?,
                        topic: r.get(2)?,
                        json: r.get(3)?,
                        images: Images { snapshot: r.get(4)?, first_seen: r.get(5)? },
                        images_evicted: r.get(6)?,
                    })
                },
            )
            .optional()?;
        match found {
            Some(Pending { slot: Slot::Disk(id), .. }) if skip(id) => after = id,
            found => return Ok(found),
        }
    }
}

pub(super) fn remove(db: &Connection, id: i64) -> rusqlite::Result<()> {
    db.execute("DELETE FROM queue WHERE id = ?1", [id]).map(drop)
}

pub(super) fn dead_letter(db: &Connection, id: i64, reason: &str) -> rusqlite::Result<()> {
    db.execute(
        "UPDATE queue SET dead_reason = ?2, failed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1",
        params![id, reason],
    )
    .map(drop)
}

/// A small write, to learn whether the disk takes writes again.
pub(super) fn probe(db: &Connection) -> rusqlite::Result<()> {
    db.execute(
        "INSERT INTO counters (name, value) VALUES ('writable', 1) ON CONFLICT(name) DO UPDATE SET value = value + 1",
        [],
    )
    .map(drop)
}

/// The disk's part of [`super::Depth`].
pub(super) fn depth(db: &Connection) -> rusqlite::Result<super::Depth> {
    let (reports, bytes, oldest, dead): (i64, i64, Option<String>, i64) = db.query_row(
        "SELECT COUNT(*) FILTER (WHERE dead_reason IS NULL), COALESCE(SUM(size), 0),
                MIN(queued_at) FILTER (WHERE dead_reason IS NULL), COUNT(dead_reason)
         FROM queue",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let counter = |name: &str| -> rusqlite::Result<u64> {
        let value: Option<i64> =
            db.query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| r.get(0)).optional()?;
        Ok(u64::try_from(value.unwrap_or(0)).unwrap_or(0))
    };
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(super::Depth {
        reports: count(reports),
        bytes: count(bytes),
        oldest,
        dead_letters: count(dead),
        evicted_images: counter("evicted_images")?,
        evicted_reports: counter("evicted_reports")?,
        ..super::Depth::default()
    })
}
