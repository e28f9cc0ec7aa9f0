//! Logging setup and the counters every stage keeps (drops are always counted and say whether
//! they were intended). Metrics exposition and health come in a later change.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber on stderr (stdout stays for command output): `RUST_LOG` if
/// set, else the configured filter. Colours only on a terminal, never in the journal or a file.
pub fn init_logging(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Per-camera counters. `*_dropped` and `frames_replaced` are intended drops by a pipeline
/// policy (see `pipeline`); `decode_errors` are not.
#[derive(Debug, Default)]
pub struct CameraCounters {
    pub connects: Counter,
    pub encoded_frames: Counter,
    pub encoded_dropped: Counter,
    pub decode_errors: Counter,
    pub frames_sampled: Counter,
    pub frames_replaced: Counter,
    pub frames_detected: Counter,
    pub detections_dropped: Counter,
    pub reports: Counter,
}
