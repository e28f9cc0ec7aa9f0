//! What must survive a restart: each camera's open incidents and cooldowns, so a restart
//! neither forgets a case it reported nor opens it again. One small JSON file per camera under
//! `{device.state_dir}/incidents/`, replaced atomically (write, fsync, rename) on every change.
//!
//! Storage trouble never stops a camera: the rules keep their state in memory whatever the
//! disk does, a save that fails is logged and made again at the next change, and a file that
//! does not read (corrupt) is renamed aside (`{camera}.json.corrupt-{time}`), never overwritten.

use crate::rules::Saved;
use std::io::Write;
use std::path::{Path, PathBuf};
use tracing::{error, info, warn};

#[derive(Debug, thiserror::Error)]
#[error("device.state_dir: {path}: {message}")]
pub struct StateError {
    pub path: String,
    pub message: String,
}

/// One camera's incident state on disk.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// Prepares `{state_dir}/incidents/{camera}.json`, creating the directory (again at each
    /// save if the disk does not let it now).
    pub fn open(state_dir: &Path, camera_id: &str) -> Self {
        let dir = state_dir.join("incidents");
        if let Err(error) = std::fs::create_dir_all(&dir) {
            warn!(%error, dir = %dir.display(), "incident state directory cannot be made now; state kept in memory");
        }
        Self { path: dir.join(format!("{camera_id}.json")) }
    }

    /// The saved state, for a start: none if there is no file, or if it does not read, in which
    /// case the file is renamed aside (kept for a post-mortem) and a new one starts.
    pub fn restore(&self) -> Vec<(String, Saved)> {
        match self.load() {
            Ok(saved) => {
                if !saved.is_empty() {
                    info!(rules = saved.len(), "incidents and cooldowns restored");
                }
                saved
            }
            Err(failure) => {
                let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
                let aside = PathBuf::from(format!("{}.corrupt-{stamp}", self.path.display()));
                match std::fs::rename(&self.path, &aside) {
                    Ok(()) => {
                        error!(error = %failure, aside = %aside.display(), "incident state unreadable: set aside; starting afresh")
                    }
                    Err(e) => {
                        error!(error = %failure, rename = %e, "incident state unreadable, and it cannot be set aside; starting afresh")
                    }
                }
                Vec::new()
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the camera's reference picture is kept (see [`crate::health`]): beside its state,
    /// `{camera}.reference.pgm`.
    pub fn reference_path(&self) -> PathBuf {
        self.path.with_extension("reference.pgm")
    }

    /// The saved state; none if there is no file yet.
    pub fn load(&self) -> Result<Vec<(String, Saved)>, StateError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| error(&self.path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(error(&self.path, e)),
        }
    }

    /// Replaces the file with `saved`; after a crash it holds either the old or the new state.
    pub fn save(&self, saved: &[(String, Saved)]) -> Result<(), StateError> {
        let json = serde_json::to_vec_pretty(saved).map_err(|e| error(&self.path, e))?;
        let part = self.path.with_extension("json.part");
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = std::fs::File::create(&part)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&part, &self.path)?;
            // The rename itself is durable once the directory is synced.
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| error(&self.path, e))
    }
}

fn error(path: &Path, e: impl std::fmt::Display) -> StateError {
    StateError { path: path.display().to_string(), message: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_a_missing_file_is_no_state() {
        let dir = std::env::temp_dir().join(format!("fw-state-{}", uuid::Uuid::new_v4()));
        let file = StateFile::open(&dir, "cam-1");
        assert!(file.load().unwrap().is_empty());
        let until = chrono::DateTime::<chrono::Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let saved = vec![("sidewalk".to_string(), Saved::Cooldown { until })];
        file.save(&saved).unwrap();
        assert_eq!(file.load().unwrap(), saved);
        std::fs::write(file.path(), b"{ not json").unwrap();
        assert!(file.load().unwrap_err().to_string().starts_with("device.state_dir: "));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_unreadable_state_is_set_aside_not_overwritten_and_the_camera_starts_afresh() {
        let dir = std::env::temp_dir().join(format!("fw-state-{}", uuid::Uuid::new_v4()));
        let file = StateFile::open(&dir, "cam-1");
        std::fs::write(file.path(), b"\0\0\0 half a write").unwrap();
        assert!(file.restore().is_empty());
        let aside: Vec<_> = std::fs::read_dir(dir.join("incidents")).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert!(aside[0].to_string_lossy().contains("cam-1.json.corrupt-"), "{aside:?}");
        assert_eq!(std::fs::read(&aside[0]).unwrap(), b"\0\0\0 half a write");
        let until = chrono::DateTime::<chrono::Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        file.save(&[("sidewalk".to_string(), Saved::Cooldown { until })]).unwrap();
        assert_eq!(file.restore().len(), 1, "a new state starts beside it");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_state_directory_that_cannot_be_made_at_start_is_made_at_the_first_save() {
        let dir = std::env::temp_dir().join(format!("fw-state-{}", uuid::Uuid::new_v4()));
        std::fs::write(&dir, b"a file where the directory should be").unwrap();
        let file = StateFile::open(&dir, "cam-1");
        assert!(file.restore().is_empty(), "no state, no panic");
        assert!(file.save(&[]).is_err(), "the save fails, and says so");
        std::fs::remove_file(&dir).unwrap();
        file.save(&[]).unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }
}
