//! What must survive a restart: each camera's open incidents and cooldowns, so a restart
//! neither forgets a case it reported nor opens it again. One small JSON file per camera under
//! `{device.state_dir}/incidents/`, replaced atomically (write, fsync, rename) on every change.

use crate::rules::Saved;
use std::io::Write;
use std::path::{Path, PathBuf};

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
    /// Prepares `{state_dir}/incidents/{camera}.json`, creating the directory.
    pub fn open(state_dir: &Path, camera_id: &str) -> Result<Self, StateError> {
        let dir = state_dir.join("incidents");
        std::fs::create_dir_all(&dir).map_err(|e| error(&dir, e))?;
        Ok(Self { path: dir.join(format!("{camera_id}.json")) })
    }

    pub fn path(&self) -> &Path {
        &self.path
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
        let file = StateFile::open(&dir, "cam-1").unwrap();
        assert!(file.load().unwrap().is_empty());
        let until = chrono::DateTime::<chrono::Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let saved = vec![("sidewalk".to_string(), Saved::Cooldown { until })];
        file.save(&saved).unwrap();
        assert_eq!(file.load().unwrap(), saved);
        std::fs::write(file.path(), b"{ not json").unwrap();
        assert!(file.load().unwrap_err().to_string().starts_with("device.state_dir: "));
        std::fs::remove_dir_all(&dir).ok();
    }
}
