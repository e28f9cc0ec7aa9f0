//! Logging setup, the counters every stage keeps (drops are always counted and say whether
//! they were intended), and each of the daemon's own stages' progress (is it stuck?).

use crate::pipeline::EdgeCounters;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber on stderr (stdout stays for command output): `RUST_LOG` if
/// set, else the configured filter. Colours only on a terminal. Under systemd (stderr is the
/// journal: `$JOURNAL_STREAM`) each text line starts with its syslog priority (`<3>` error ..
/// `<7>` debug) and carries no timestamp, which the journal adds.
pub fn init_logging(default_filter: &str, format: crate::config::LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let layer = || tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false);
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let _ = match (format, journal) {
        (crate::config::LogFormat::Json, _) => {
            registry.with(layer().json().flatten_event(true).with_current_span(true).with_span_list(false)).try_init()
        }
        (crate::config::LogFormat::Text, true) => registry
            .with(
                layer()
                    .with_ansi(false)
                    .event_format(JournalPriority(tracing_subscriber::fmt::format().without_time().with_target(false))),
            )
            .try_init(),
        (crate::config::LogFormat::Text, false) => {
            registry.with(layer().with_ansi(std::io::stderr().is_terminal())).try_init()
        }
    };
}

/// A text format with the journal's priority prefix before each line.
struct JournalPriority<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalPriority<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        // The journal splits a message at newlines: each line of a multi-line event (a
        // library's pretty-printed struct) gets the event's priority too.
        let mut line = String::new();
        self.0.format_event(ctx, tracing_subscriber::fmt::format::Writer::new(&mut line), event)?;
        for part in line.trim_end_matches('\n').split('\n') {
            writeln!(writer, "<{priority}>{part}")?;
        }
        Ok(())
    }
}

/// Hands memory the allocator holds free back to the system (glibc keeps freed memory in its
/// arenas, so what loading models and running inferences freed would stay resident).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Whether one of the daemon's own stages is stuck: it says when it starts a piece of work and
/// when it is done, and one busy for too long is hung. A stage waiting for work (a dead camera's
/// decoder, an inference worker with no frames) is idle, never hung.
#[derive(Debug, Default)]
pub struct Progress {
    /// When the current piece of work began ([`since_epoch_ms`]); 0 when idle.
    busy_since: AtomicU64,
}

/// A process-wide monotonic origin for [`Progress`] (never 0 once read).
fn since_epoch_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

impl Progress {
    pub fn start(&self) {
        self.busy_since.store(since_epoch_ms(), Ordering::Relaxed);
    }

    pub fn done(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
    }

    /// How long the current piece of work has taken; `None` when idle.
    pub fn busy_for(&self) -> Option<std::time::Duration> {
        match self.busy_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(std::time::Duration::from_millis(since_epoch_ms().saturating_sub(since))),
        }
    }
}

/// The daemon's own stages by name, each with its [`Progress`]: what the watchdog and the
/// health check look at.
#[derive(Debug, Clone, Default)]
pub struct Stages(Arc<std::sync::Mutex<Vec<NamedProgress>>>);

type NamedProgress = (String, Arc<Progress>);

impl Stages {
    /// Adds a stage and returns the progress it must keep.
    pub fn register(&self, name: impl Into<String>) -> Arc<Progress> {
        let progress = Arc::new(Progress::default());
        self.add(name, progress.clone());
        progress
    }

    /// Adds a stage that keeps a progress it already has.
    pub fn add(&self, name: impl Into<String>, progress: Arc<Progress>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push((name.into(), progress));
    }

    /// Forgets a stage that was stopped on purpose (a camera a reload removed or restarted).
    pub fn remove(&self, progress: &Arc<Progress>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).retain(|(_, p)| !Arc::ptr_eq(p, progress));
    }

    /// Forgets the stages whose names start with `prefix` (models a reload replaced).
    pub fn remove_named(&self, prefix: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).retain(|(name, _)| !name.starts_with(prefix));
    }

    /// Every stage with how long its current work has taken (`None`: idle).
    pub fn all(&self) -> Vec<(String, Option<std::time::Duration>)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(n, p)| (n.clone(), p.busy_for())).collect()
    }

    /// The stages busy with one piece of work for longer than `limit`.
    pub fn hung(&self, limit: std::time::Duration) -> Vec<(String, std::time::Duration)> {
        self.all().into_iter().filter_map(|(n, busy)| busy.filter(|b| *b > limit).map(|b| (n, b))).collect()
    }
}

/// The cameras running now, in config order, each with its counters and live view: a reload
/// changes the list.
#[derive(Clone, Default)]
pub struct CameraList(Arc<std::sync::RwLock<Vec<Listed>>>);

/// A running camera as the status, metrics and live view find it.
#[derive(Clone)]
pub struct Listed {
    pub id: String,
    /// As it runs now (a reload changes it).
    pub camera: Arc<crate::config::Camera>,
    pub counters: Arc<CameraCounters>,
    pub live: Arc<crate::live::LiveView>,
}

impl CameraList {
    pub fn set(&self, cameras: Vec<Listed>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = cameras;
    }

    /// Each camera's id and counters.
    pub fn all(&self) -> Vec<(String, Arc<CameraCounters>)> {
        let cameras = self.0.read().unwrap_or_else(|e| e.into_inner());
        cameras.iter().map(|c| (c.id.clone(), c.counters.clone())).collect()
    }

    pub fn get(&self, id: &str) -> Option<Listed> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).iter().find(|c| c.id == id).cloned()
    }
}

/// The config running and how the last reload went: the problems of a config that was refused
/// (the old one runs on), empty once one is taken.
#[derive(Clone, Default)]
pub struct ConfigState(Arc<std::sync::Mutex<ConfigNow>>, Arc<tokio::sync::Notify>);

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConfigNow {
    pub version: String,
    /// Reloads taken since the start.
    pub reloads: u64,
    /// Each problem of the config last refused, as `key.path: message`.
    pub problems: Vec<String>,
    /// The overlay's revision: changes saved into it by the workbench and remote commands.
    pub revision: u64,
    /// The config running, secrets masked (a remote `get_config`).
    #[serde(skip)]
    pub running: serde_json::Value,
}

impl ConfigState {
    pub fn new(version: String) -> Self {
        Self(Arc::new(std::sync::Mutex::new(ConfigNow { version, ..Default::default() })), Arc::default())
    }
    pub fn now(&self) -> ConfigNow {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Changes it, and wakes whoever waits on [`changed`](Self::changed).
    pub fn update(&self, change: impl FnOnce(&mut ConfigNow)) {
        change(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
        self.1.notify_one();
    }

    /// Notified after each update (the publisher sends the retained status again).
    pub fn changed(&self) -> Arc<tokio::sync::Notify> {
        self.1.clone()
    }
}

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Adds the nanoseconds elapsed since `start` (for busy-time counters).
    pub fn add_since(&self, start: Instant) {
        self.add(start.elapsed().as_nanos() as u64);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// Sets the value (for gauges such as a last-seen time).
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

/// Per-model counters: how its inferences went, and how many frames each one carried.
#[derive(Debug)]
pub struct ModelCounters {
    /// Seconds per run, preprocessing included (for `/metrics`).
    pub run_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Inference runs, frames in them (runs of several frames when batching), and the largest
    /// batch yet.
    pub runs: Counter,
    pub frames: Counter,
    pub largest_batch: Counter,
    /// Nanoseconds inside runs, preprocessing included.
    pub busy: Counter,
    pub failures: Counter,
    /// Output candidates dropped as malformed (not finite, no size, a class it does not have).
    pub malformed: Counter,
}

/// The models running now: a reload that changes a model replaces the list.
#[derive(Clone, Default)]
pub struct ModelList(Arc<std::sync::RwLock<Vec<ModelStatus>>>);

impl ModelList {
    pub fn set(&self, models: Vec<ModelStatus>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = models;
    }
    pub fn all(&self) -> Vec<ModelStatus> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A running model as the heartbeat and `/metrics` show it.
#[derive(Clone)]
pub struct ModelStatus {
    pub name: String,
    pub provider: &'static str,
    pub workers: usize,
    pub batch_limit: usize,
    pub stats: Arc<ModelCounters>,
    /// Frames waiting in its edge now.
    pub waiting: Arc<dyn Fn() -> usize + Send + Sync>,
}

impl Default for ModelCounters {
    fn default() -> Self {
        use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
        Self {
            // 10 ms to about 20 s: a small model on a GPU to a large one on a slow CPU.
            run_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            runs: Counter::default(),
            frames: Counter::default(),
            largest_batch: Counter::default(),
            busy: Counter::default(),
            failures: Counter::default(),
            malformed: Counter::default(),
        }
    }
}

impl ModelCounters {
    /// Records a run of `frames` frames that took `took`.
    pub fn ran(&self, frames: usize, took: std::time::Duration) {
        self.run_seconds.observe(took.as_secs_f64());
        self.runs.inc();
        self.frames.add(frames as u64);
        self.largest_batch.0.fetch_max(frames as u64, Ordering::Relaxed);
        self.busy.add(took.as_nanos() as u64);
    }

    /// Frames per run on average (0 before the first).
    pub fn mean_batch(&self) -> f64 {
        self.frames.get() as f64 / self.runs.get().max(1) as f64
    }
}

/// Per-camera counters. The edges' own counters (`encoded`, `frames`, `detections`) count
/// intended drops by a pipeline policy (see `pipeline`); `decode_errors` are not intended.
#[derive(Debug, Default)]
pub struct CameraCounters {
    pub connects: Counter,
    /// Access units taken from the source (after keyframe resync).
    pub encoded_frames: Counter,
    pub decode_errors: Counter,
    /// Decoded frames picked at `detect_fps`.
    pub frames_sampled: Counter,
    pub frames_detected: Counter,
    /// Objects found in those frames, after NMS.
    pub detections: Counter,
    pub incidents_opened: Counter,
    pub reports: Counter,
    /// Evidence clips written, those that could not be, and those dropped from the store (its
    /// size or age limit) after this camera's clips were written.
    pub clips: Counter,
    pub clips_failed: Counter,
    pub clips_dropped: Counter,
    /// Reports whose building failed even after a retry (logged at error with the incident).
    pub reports_failed: Counter,
    pub encoded: Arc<EdgeCounters>,
    pub frames: Arc<EdgeCounters>,
    pub detected: Arc<EdgeCounters>,
    /// Nanoseconds spent decoding (not waiting on edges), and in this camera's inferences.
    pub decode_busy: Counter,
    pub detect_busy: Counter,
    /// Stream time of the newest access unit, in Unix milliseconds (0: none yet).
    pub last_frame_ms: Counter,
    /// Where the camera's connection stands, and when (wall clock, Unix ms) a frame last came.
    pub connection: ConnectionGauge,
    pub frame_received_ms: Counter,
    /// Why the last connection failed, for status (credentials never appear in it).
    pub last_error: std::sync::Mutex<Option<String>>,
    /// Connections given up because the camera fell silent (no frame for `stall_timeout`), and
    /// times frames kept arriving but the pipeline did not take them (blocked).
    pub silences: Counter,
    pub blockages: Counter,
    /// Nanoseconds preparing this camera's frames for the model (inside `detect_busy`), and in
    /// its rules.
    pub preprocess_busy: Counter,
    pub rules_busy: Counter,
    /// Detected frames that arrived after a later one (several inference workers) and were
    /// dropped before the rules.
    pub frames_stale: Counter,
    /// From a frame's capture (its stream time) to its detections being ready, recent frames.
    pub latency: Latencies,
    /// The size of the last decoded frame (it may change mid-stream).
    pub frame_width: Counter,
    pub frame_height: Counter,
    /// Access units handed to the decoder, and how many of them were keyframes.
    pub units_decoded: Counter,
    pub keyframes_decoded: Counter,
    /// The decode thread's progress (busy while decoding one access unit).
    pub decoding: Arc<Progress>,
    /// The camera-health cases open now.
    pub health: HealthGauge,
}

/// Where a camera's connection stands, as the source sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LinkState {
    /// Connecting, or connected and waiting for the first keyframe.
    Connecting,
    Streaming,
    /// Waiting to try again after a failure.
    BackingOff,
    Stopped,
    /// Frames arrive, but the pipeline has not taken them for `stall_timeout`.
    Blocked,
}

/// A frame not received for this long makes a streaming camera count as stalled (until its
/// `stall_timeout_secs` rebuilds the connection).
pub const STALLED_AFTER_MS: u64 = 2_000;

/// Which camera-health cases are open (see [`crate::health`]), one bit per kind; and the
/// workbench's request to take a new reference picture, until the camera's unit takes it.
#[derive(Debug, Default)]
pub struct HealthGauge(AtomicU8, std::sync::atomic::AtomicBool);

impl HealthGauge {
    pub fn set(&self, health: &crate::health::Health) {
        let bits = health.open().fold(0u8, |bits, kind| bits | 1 << kind as u8);
        self.0.store(bits, Ordering::Relaxed);
    }

    /// Asks the camera's unit to take its next good frame as the reference picture.
    pub fn request_new_reference(&self) {
        self.1.store(true, Ordering::Relaxed);
    }

    /// Whether a new reference was asked for since the last call.
    pub fn new_reference_requested(&self) -> bool {
        self.1.swap(false, Ordering::Relaxed)
    }

    /// Whether a case of `kind` is open.
    pub fn is_open(&self, kind: crate::health::Kind) -> bool {
        self.0.load(Ordering::Relaxed) & 1 << kind as u8 != 0
    }
}

#[derive(Debug, Default)]
pub struct ConnectionGauge(AtomicU8);

impl ConnectionGauge {
    pub fn set(&self, state: LinkState) {
        self.0.store(state as u8, Ordering::Relaxed);
    }

    pub fn get(&self) -> LinkState {
        match self.0.load(Ordering::Relaxed) {
            1 => LinkState::Streaming,
            2 => LinkState::BackingOff,
            3 => LinkState::Stopped,
            4 => LinkState::Blocked,
            _ => LinkState::Connecting,
        }
    }
}

impl CameraCounters {
    /// The connection's state for status and heartbeat: `connecting`, `streaming`, `stalled`
    /// (streaming, but no frame for [`STALLED_AFTER_MS`]; at `stall_timeout` the camera counts
    /// as silent and is reconnected), `blocked` (frames arrive but are not taken), `backing_off`
    /// or `stopped`.
    pub fn connection_state(&self, now_ms: u64) -> &'static str {
        match self.connection.get() {
            LinkState::Connecting => "connecting",
            LinkState::Streaming if now_ms.saturating_sub(self.frame_received_ms.get()) > STALLED_AFTER_MS => "stalled",
            LinkState::Streaming => "streaming",
            LinkState::BackingOff => "backing_off",
            LinkState::Stopped => "stopped",
            LinkState::Blocked => "blocked",
        }
    }

    pub fn set_last_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The most recent latencies (milliseconds), for their median and 95th percentile.
#[derive(Debug, Default)]
pub struct Latencies(std::sync::Mutex<std::collections::VecDeque<u32>>);

impl Latencies {
    const KEPT: usize = 512;

    pub fn record(&self, ms: u32) {
        let mut recent = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == Self::KEPT {
            recent.pop_front();
        }
        recent.push_back(ms);
    }

    /// (p50, p95) of the recent latencies, if any.
    pub fn quantiles(&self) -> Option<(u32, u32)> {
        let mut sorted: Vec<u32> = self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect();
        sorted.sort_unstable();
        let at = |q: f64| sorted.get((sorted.len().saturating_sub(1) as f64 * q).round() as usize).copied();
        Some((at(0.5)?, at(0.95)?))
    }
}

/// Lets a repeated event be logged at most once per `every`, counting what it held back: the
/// way to log per-packet or per-frame trouble without a log storm.
#[derive(Debug)]
pub struct Throttle {
    every: std::time::Duration,
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    pub fn new(every: std::time::Duration) -> Self {
        Self { every, last: None, held: 0 }
    }

    /// `Some(n)` when this occurrence may be logged, `n` being how many were held back since
    /// the last one logged; `None` when it must not.
    pub fn ready(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|last| now - last < self.every) {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streaming_camera_without_frames_for_a_while_is_stalled() {
        let c = CameraCounters::default();
        assert_eq!(c.connection_state(10_000), "connecting");
        c.connection.set(LinkState::Streaming);
        c.frame_received_ms.set(10_000);
        assert_eq!(c.connection_state(10_000 + STALLED_AFTER_MS), "streaming");
        assert_eq!(c.connection_state(10_001 + STALLED_AFTER_MS), "stalled");
        c.connection.set(LinkState::BackingOff);
        assert_eq!(c.connection_state(10_000), "backing_off");
    }

    #[test]
    fn latency_quantiles_come_from_the_recent_window() {
        let l = Latencies::default();
        assert_eq!(l.quantiles(), None);
        for ms in 1..=100 {
            l.record(ms);
        }
        assert_eq!(l.quantiles(), Some((51, 95)));
        for _ in 0..Latencies::KEPT {
            l.record(7);
        }
        assert_eq!(l.quantiles(), Some((7, 7)), "old values leave the window");
    }

    #[test]
    fn a_throttle_lets_one_through_per_interval_and_counts_the_rest() {
        let mut t = Throttle::new(std::time::Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(t.ready(start), Some(0));
        assert_eq!(t.ready(start + std::time::Duration::from_secs(1)), None);
        assert_eq!(t.ready(start + std::time::Duration::from_secs(2)), None);
        assert_eq!(t.ready(start + std::time::Duration::from_secs(11)), Some(2));
    }
}
