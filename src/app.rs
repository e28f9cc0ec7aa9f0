//! Builds the stages for every camera, wires them with the edges of [`crate::pipeline`], and
//! watches them. The only module that knows both the stages and the edges between them.
//!
//! Per camera: a source task, a decode thread and a rules task. Shared: per model, `workers`
//! inference threads serving every camera whose rules read it, fairly; and a report consumer —
//! the MQTT publisher when live ([`run`]), the replay writer in [`replay`]. Live and replay run
//! the same stages through `start_cameras`; only the source and the edges' policies differ.
//!
//! Every task and thread runs under a [`Supervisor`]: one that panics, fails, or (live) ends
//! before shutdown stops the daemon with a non-zero exit naming it.

use crate::clock::Clock;
use crate::config::{Camera, Config, ModelConfig, Problem, Settings, SnapshotMode};
use crate::detect::{DetectError, Detected, Detector};
use crate::outbox::{Outbox, OutboxError};
use crate::pipeline::{self, EdgeCloser, EdgeReceiver, EdgeSender, EdgeSpec, edge};
use crate::publish::{self, Presence};
use crate::report::{self, Evidence, Origin, Report, Shots};
use crate::rules::{CameraRules, EventKind, IncidentEvent};
use crate::source::{self, FileSource, RtspSource, Source, SourceContext};
use crate::state::StateFile;
use crate::supervisor::{Stage, StageFailed, StageResult, Supervisor, Until};
use crate::telemetry::{CameraCounters, ModelCounters, ModelStatus, Stages};
use crate::{decode, detect};
use futures::FutureExt;
use futures::future::BoxFuture;
use sha2::Digest;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, error, info, info_span};

/// How long tasks get to finish after shutdown is requested before we stop waiting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Detector(#[from] DetectError),
    #[error("config does not match the model:\n{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Mismatch(Vec<Problem>),
    #[error("no camera {id:?} in the config (it has {known:?})")]
    NoCamera { id: String, known: Vec<String> },
    /// Not `#[from]`: that would make it the source too, and `{:#}` would say it twice.
    #[error("device.state_dir: {0}")]
    Outbox(OutboxError),
    #[error(transparent)]
    Stage(#[from] StageFailed),
    #[error("{0}")]
    Http(String),
}

impl From<OutboxError> for AppError {
    fn from(error: OutboxError) -> Self {
        AppError::Outbox(error)
    }
}

impl AppError {
    /// True for errors in what the operator configured: restarting will not help (exit 78).
    /// Storage trouble is not one: the daemon runs through it (see `outbox`), and only the
    /// `outbox` command and replay's own outbox can fail on it.
    pub fn is_config(&self) -> bool {
        matches!(self, AppError::Detector(_) | AppError::Mismatch(_) | AppError::NoCamera { .. })
    }
}

/// A short, stable fingerprint of the effective configuration (secrets masked), carried in
/// every report so the IOC can tell which settings produced it.
#[allow(clippy::expect_used, reason = "the config is plain data with string keys: serialising cannot fail")]
pub fn config_version(config: &Config) -> String {
    let json = serde_json::to_vec(config).expect("config serialises: plain data only");
    let digest = sha2::Sha256::digest(&json);
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Checks that every class a rule names exists in the model it reads, and every class of
/// `snapshot.blur_classes` in some model. `labels[m]` are model m's classes (`Config::all_models`
/// order); a model left out (`None`) is not checked.
pub fn check_classes(settings: &Settings, labels: &[Option<&[String]>]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let all: Vec<&String> = labels.iter().flatten().flat_map(|l| l.iter()).collect();
    for (i, class) in settings.config.snapshot.blur_classes.iter().enumerate() {
        if !all.contains(&class) {
            problems.push(Problem {
                path: format!("snapshot.blur_classes[{i}]"),
                message: format!("{class:?} is not a class of any model (they have {all:?})"),
            });
        }
    }
    for (i, camera) in settings.cameras.iter().enumerate() {
        for (j, rule) in camera.rules.iter().enumerate() {
            let Some(Some(known)) = labels.get(rule.model) else { continue };
            for (k, class) in rule.classes.iter().enumerate().filter(|(_, c)| !known.contains(c)) {
                problems.push(Problem {
                    path: format!("cameras[{i}].rules[{j}].classes[{k}]"),
                    message: format!("{class:?} is not a class of the model (it has {known:?})"),
                });
            }
        }
    }
    problems
}

/// Loads `workers(m)` detectors of every model m (`Config::all_models` order; 0 skips it: no
/// camera uses it) and checks the rules' classes against them: what `check`, `run` and `replay`
/// share. Each detector has a session of its own, for one inference worker.
pub fn load_models(
    settings: &Settings,
    workers: impl Fn(usize, &ModelConfig) -> usize,
) -> Result<Vec<Vec<Detector>>, AppError> {
    let mut loaded = Vec::new();
    for (index, model) in settings.config.all_models().iter().enumerate() {
        let detectors = (0..workers(index, model)).map(|_| Detector::load(model)).collect::<Result<Vec<_>, _>>()?;
        loaded.push(detectors);
    }
    let labels: Vec<Option<&[String]>> = loaded.iter().map(|d| d.first().map(Detector::labels)).collect();
    let mismatches = check_classes(settings, &labels);
    if !mismatches.is_empty() {
        return Err(AppError::Mismatch(mismatches));
    }
    Ok(loaded)
}

/// The models some camera's rules read (`[model]` for a camera without rules).
fn used_models(settings: &Settings) -> Vec<bool> {
    let mut used = vec![false; settings.config.all_models().len()];
    for m in settings.cameras.iter().flat_map(|c| c.models()) {
        used.get_mut(m).into_iter().for_each(|used| *used = true);
    }
    used
}

/// The frame edges' policies: live drops frames when something is slow; replay never drops.
/// (Reports are never dropped either way: the outbox live, a blocking edge in replay.)
#[derive(Debug, Clone, Copy)]
pub struct Policies {
    pub encoded: EdgeSpec,
    pub frames: EdgeSpec,
    pub detections: EdgeSpec,
}

impl Policies {
    pub const LIVE: Self =
        Self { encoded: pipeline::ENCODED, frames: pipeline::FRAMES, detections: pipeline::DETECTIONS };
    pub const LOSSLESS: Self = Self {
        encoded: pipeline::ENCODED.lossless(),
        frames: pipeline::FRAMES.lossless(),
        detections: pipeline::DETECTIONS.lossless(),
    };
}

/// Runs the daemon until `shutdown` is cancelled or a stage fails.
pub async fn run(settings: Settings, clock: Arc<dyn Clock>, shutdown: CancellationToken) -> Result<(), AppError> {
    let config = &settings.config;
    let used = used_models(&settings);
    let models = load_models(&settings, |i, m| if used.get(i) == Some(&true) { m.workers } else { 0 })?;
    // Building sessions frees far more than it keeps (the parsed model, optimiser copies).
    crate::telemetry::release_free_memory();
    info!(device = %config.device.id, cameras = settings.cameras.len(), config_version = %config_version(config), "starting");

    // A disk that is full, read-only or corrupt does not stop us: the outbox holds reports in
    // memory and says so (storage in the status, heartbeat and /healthz) until it recovers.
    let outbox = Arc::new(Outbox::start(&settings.outbox_path(), config.outbox.limits()));
    let http = match config.http.listen.as_str() {
        "" => None,
        listen => Some(crate::http::bind(listen).await.map_err(AppError::Http)?),
    };
    let mut cameras = Vec::new();
    for camera in &settings.cameras {
        let cam = camera.clone();
        let run: SourceRun =
            Box::new(move |ctx| source::supervise(cam.clone(), RtspSource::new(cam), ctx).map(Ok).boxed());
        let state = StateFile::open(settings.state_dir(), &camera.id);
        let topic = publish::reports_topic(&config.mqtt, &config.device.id, &camera.id);
        let sink = ReportSink::Outbox { outbox: outbox.clone(), topic };
        cameras.push(CameraStart { camera: camera.clone(), run, state: Some(state), sink });
    }
    let mut supervisor = Supervisor::default();
    let started = start_cameras(&mut supervisor, &settings, cameras, models, Policies::LIVE, clock, &shutdown)?;
    let describe = describe_device(&settings, &started, outbox.clone());
    let presence = Presence::Announce(describe);
    let publisher = publish::run(
        config.mqtt.clone(),
        config.device.id.clone(),
        outbox.clone(),
        sending(config),
        presence,
        shutdown.clone(),
    );
    supervisor.spawn(Stage::shared("publish"), publisher.map(Ok));
    supervisor.spawn(Stage::shared("storage"), look_after_storage(outbox.clone(), shutdown.clone()).map(Ok));
    tokio::spawn(crate::systemd::watchdog(started.stages.clone(), shutdown.clone()));
    if let Some(listener) = http {
        let observed = crate::http::Observed {
            stages: started.stages.clone(),
            stuck_after: Duration::from_secs_f64(config.http.stuck_after_secs),
            cameras: started.cameras.clone(),
            models: started.models.clone(),
            outbox: outbox.clone(),
        };
        tokio::spawn(crate::http::serve(listener, observed, shutdown.clone()));
    }
    crate::systemd::ready();

    supervisor.watch(&shutdown, Until::Shutdown).await;
    info!("shutting down");
    crate::systemd::stopping();
    started.frames.iter().for_each(EdgeCloser::close); // frames not yet looked at have no value now
    supervisor.drain(SHUTDOWN_GRACE).await;
    let result = supervisor.result().map_err(AppError::from);
    for (camera, c) in &started.cameras {
        info!(camera = %camera, connects = c.connects.get(), frames = c.encoded_frames.get(),
              sampled = c.frames_sampled.get(), detected = c.frames_detected.get(), reports = c.reports.get(),
              dropped_encoded = c.encoded.dropped.get(), replaced_frames = c.frames.dropped.get(),
              dropped_detections = c.detected.dropped.get(), decode_errors = c.decode_errors.get(),
              reports_failed = c.reports_failed.get(), silences = c.silences.get(), blockages = c.blockages.get(),
              units_decoded = c.units_decoded.get(), keyframes_decoded = c.keyframes_decoded.get(), "camera totals");
    }
    info!("stopped");
    result
}

/// Has the outbox look after its disk every second until shutdown, then once more: reports held
/// in memory that the disk still will not take are lost, and said so.
async fn look_after_storage(outbox: Arc<Outbox>, shutdown: CancellationToken) {
    loop {
        let o = outbox.clone();
        let _ = tokio::task::spawn_blocking(move || o.maintain()).await;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    let _ = tokio::task::spawn_blocking(move || outbox.close()).await;
}

fn sending(config: &Config) -> publish::Sending {
    publish::Sending { drain_bytes_per_sec: config.outbox.drain_bytes_per_sec, snapshots: config.snapshot.mode }
}

/// What the status and heartbeat say about the device: versions, clock, disk, outbox, and per
/// camera its frame rate since the last heartbeat, last frame, connects and reports.
fn describe_device(settings: &Settings, started: &Started, outbox: Arc<Outbox>) -> publish::Describe {
    let config_version = config_version(&settings.config);
    let models = started.models.clone();
    // The first model a rule reads (none without cameras).
    let (model, provider) = models.first().map(|m| (m.name.clone(), m.provider)).unzip();
    let cameras = started.cameras.clone();
    let started = Instant::now();
    let previous = std::sync::Mutex::new((Instant::now(), vec![0u64; cameras.len()]));
    Arc::new(move || {
        let mut previous = previous.lock().unwrap_or_else(|e| e.into_inner());
        let secs = previous.0.elapsed().as_secs_f64().max(1e-3);
        let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let cams: Vec<serde_json::Value> = cameras
            .iter()
            .enumerate()
            .map(|(i, (id, c))| {
                let frames = c.encoded_frames.get();
                let before = previous.1.get_mut(i).map_or(frames, |before| std::mem::replace(before, frames));
                let fps = frames.saturating_sub(before) as f64 / secs;
                let last = c.last_frame_ms.get();
                let last_frame_at = (last > 0)
                    .then(|| chrono::DateTime::from_timestamp_millis(last as i64).map(report::timestamp))
                    .flatten();
                serde_json::json!({
                    "id": id, "state": c.connection_state(now_ms), "last_error": c.last_error(),
                    "frames_per_sec": (fps * 10.0).round() / 10.0, "last_frame_at": last_frame_at,
                    "frame_size": (c.frame_width.get() > 0).then(|| format!("{}x{}", c.frame_width.get(), c.frame_height.get())),
                    "connects": c.connects.get(), "silences": c.silences.get(), "blockages": c.blockages.get(),
                    "units_decoded": c.units_decoded.get(), "keyframes_decoded": c.keyframes_decoded.get(),
                    "decode_errors": c.decode_errors.get(), "reports": c.reports.get(),
                    "frames_detected": c.frames_detected.get(),
                    "busy_ms": {
                        "decode": c.decode_busy.get() / 1_000_000, "preprocess": c.preprocess_busy.get() / 1_000_000,
                        "inference": c.detect_busy.get().saturating_sub(c.preprocess_busy.get()) / 1_000_000,
                        "rules": c.rules_busy.get() / 1_000_000,
                    },
                    "dropped": {
                        "encoded": c.encoded.dropped.get(), "frames_replaced": c.frames.dropped.get(),
                        "detections": c.detected.dropped.get(), "stale": c.frames_stale.get(),
                    },
                    "latency_ms": c.latency.quantiles().map(|(p50, p95)| serde_json::json!({ "p50": p50, "p95": p95 })),
                })
            })
            .collect();
        previous.0 = Instant::now();
        let models: Vec<serde_json::Value> = models
            .iter()
            .map(|m| {
                let s = &m.stats;
                serde_json::json!({
                    "name": m.name, "provider": m.provider, "workers": m.workers, "batch_limit": m.batch_limit,
                    "runs": s.runs.get(), "frames": s.frames.get(), "failures": s.failures.get(),
                    "malformed": s.malformed.get(),
                    "mean_batch": (s.mean_batch() * 100.0).round() / 100.0, "largest_batch": s.largest_batch.get(),
                    "busy_ms": s.busy.get() / 1_000_000,
                })
            })
            .collect();
        let depth = outbox.depth();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": started.elapsed().as_secs(),
            "config_version": config_version,
            "model": model,
            "provider": provider,
            "models": models,
            "clock_synchronized": crate::clock::is_synchronized(),
            // The outbox measures its file system (the state directory's) every second.
            "disk_free_bytes": depth.free_bytes,
            "outbox": {
                "reports": depth.reports, "bytes": depth.bytes, "oldest_queued_at": depth.oldest,
                "oldest_age_secs": depth.oldest_age_secs(),
                "dead_letters": depth.dead_letters, "evicted_images": depth.evicted_images,
                "evicted_reports": depth.evicted_reports,
                "held_in_memory": depth.held_reports, "held_bytes": depth.held_bytes,
                "lost_images": depth.lost_images, "lost_reports": depth.lost_reports,
                "set_aside": depth.set_aside,
            },
            "storage": depth.storage.as_str(),
            "storage_error": depth.storage_error,
            "cameras": cams,
        })
    })
}

/// What [`replay`] writes and where it sends reports.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Folder for each report's JSON and snapshot JPEG.
    pub out: Option<PathBuf>,
    /// Also publish the reports to the configured broker.
    pub publish: bool,
}

/// What a replay did, for its summary line and the benchmark.
#[derive(Debug, Clone, Default)]
pub struct ReplaySummary {
    pub frames: u64,
    pub detections: u64,
    pub incidents: u64,
    pub reports: u64,
    pub reports_failed: u64,
    /// Length of the clip, when its container says.
    pub video_secs: Option<f64>,
    pub wall_secs: f64,
    pub decode_secs: f64,
    pub detect_secs: f64,
}

impl fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frames {}, detections {}, incidents {}, reports {}",
            self.frames, self.detections, self.incidents, self.reports
        )?;
        if self.reports_failed > 0 {
            write!(f, " ({} failed)", self.reports_failed)?;
        }
        write!(f, "; {:.2} s (decode {:.2} s, detect {:.2} s)", self.wall_secs, self.decode_secs, self.detect_secs)?;
        if let Some(video) = self.video_secs.filter(|_| self.wall_secs > 0.0) {
            write!(f, "; {video:.1} s of video at {:.1}x real time", video / self.wall_secs)?;
        }
        Ok(())
    }
}

/// Runs camera `camera_id`'s pipeline over `clip` as fast as the machine allows, with edges
/// that never drop: each report is printed as one line, saved under `options.out`, and sent to
/// the broker with `options.publish`.
pub async fn replay(
    settings: &Settings,
    camera_id: &str,
    mut clip: FileSource,
    options: ReplayOptions,
    shutdown: CancellationToken,
) -> Result<ReplaySummary, AppError> {
    let config = &settings.config;
    let camera = settings.camera(camera_id).cloned().ok_or_else(|| AppError::NoCamera {
        id: camera_id.to_string(),
        known: settings.cameras.iter().map(|c| c.id.clone()).collect(),
    })?;
    // One worker per model: frames are detected in stream order, so a replay is the same every time.
    let used = camera.models();
    let models = load_models(settings, |i, _| used.contains(&i) as usize)?;
    let video_secs = clip.duration_secs();
    let started_at = Instant::now();

    let mut supervisor = Supervisor::default();
    let (reports_tx, reports_rx) = edge(pipeline::REPORTS, vec![Arc::default()]);
    let forward = match options.publish {
        false => None,
        true => {
            // An outbox of its own, thrown away afterwards: replay keeps nothing of the daemon's.
            let dir = std::env::temp_dir().join(format!("fieldwatch-replay-{}", std::process::id()));
            let outbox = Arc::new(Outbox::open(&dir.join("outbox.db"), config.outbox.max_bytes)?);
            let mut mqtt = config.mqtt.clone();
            // Never the daemon's own client id: the broker would disconnect the running daemon.
            mqtt.client_id = format!("{}-replay-{}", publish::client_id(&mqtt, &config.device.id), std::process::id());
            let done = shutdown.child_token();
            let publisher = publish::run(
                mqtt,
                config.device.id.clone(),
                outbox.clone(),
                sending(config),
                Presence::Quiet,
                done.clone(),
            );
            supervisor.spawn(Stage::shared("publish"), publisher.map(Ok));
            let topic = publish::reports_topic(&config.mqtt, &config.device.id, &camera.id);
            Some(Forward { sink: ReportSink::Outbox { outbox: outbox.clone(), topic }, outbox, dir, done })
        }
    };
    supervisor.spawn(Stage::shared("replay output"), write_reports(reports_rx, options.out, forward));

    let run: SourceRun = Box::new(move |mut ctx| {
        async move { clip.run_once(&mut ctx).await.map(|_| ()).map_err(|e| e.to_string()) }.boxed()
    });
    // File sources take their times from the clip; the clock is never read.
    let clock = Arc::new(crate::clock::SystemClock);
    // Replay keeps no state: it must not touch what the live daemon remembers.
    let cameras = vec![CameraStart { camera, run, state: None, sink: ReportSink::Edge(reports_tx) }];
    let started = start_cameras(&mut supervisor, settings, cameras, models, Policies::LOSSLESS, clock, &shutdown)?;
    supervisor.watch(&shutdown, Until::Done).await;
    supervisor.result()?;

    let Some((_, c)) = started.cameras.first() else {
        return Err(AppError::NoCamera { id: camera_id.to_string(), known: Vec::new() });
    };
    Ok(ReplaySummary {
        frames: c.frames_detected.get(),
        detections: c.detections.get(),
        incidents: c.incidents_opened.get(),
        reports: c.reports.get(),
        reports_failed: c.reports_failed.get(),
        video_secs,
        wall_secs: started_at.elapsed().as_secs_f64(),
        decode_secs: c.decode_busy.get() as f64 / 1e9,
        detect_secs: c.detect_busy.get() as f64 / 1e9,
    })
}

/// Where replay sends its reports with `--publish`: an outbox of its own, drained by a
/// publisher that stops (`done`) once the outbox is empty.
struct Forward {
    /// The replayed camera's reports into `outbox`.
    sink: ReportSink,
    outbox: Arc<Outbox>,
    dir: PathBuf,
    done: CancellationToken,
}

/// How long replay waits for the broker to take its reports before giving up.
const PUBLISH_WAIT: Duration = Duration::from_secs(30);

/// Prints one line per report, saves its JSON and JPEG under `out`, and forwards it.
async fn write_reports(reports: EdgeReceiver<Report>, out: Option<PathBuf>, forward: Option<Forward>) -> StageResult {
    if let Some(dir) = &out {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let mut n = 0;
    while let Some(report) = reports.recv_async().await {
        n += 1;
        let objects: Vec<String> = report.objects.iter().map(|o| format!("{} {:.2}", o.class, o.score)).collect();
        let mut line = format!(
            "{:<8} {}/{} incident {} at {} objects [{}]",
            report.event,
            report.camera_id,
            report.rule_id,
            &report.incident_id[..8],
            report.observed_at,
            objects.join(", ")
        );
        if let Some(dir) = &out {
            let stem = dir.join(format!("{n:04}-{}-{}", report.event, report.rule_id));
            // The JSON as the IOC receives it inline; the images also as files to look at.
            let json = serde_json::to_vec(&report).map_err(|e| e.to_string())?;
            let wire = report::wire(&json, &report.images, false, SnapshotMode::Inline, "")?;
            let pretty: serde_json::Value = serde_json::from_slice(&wire.json).map_err(|e| e.to_string())?;
            let write = |path: PathBuf, bytes: &[u8]| {
                std::fs::write(&path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
            };
            write(stem.with_extension("json"), &serde_json::to_vec_pretty(&pretty).map_err(|e| e.to_string())?)?;
            if let Some(jpeg) = &report.images.snapshot {
                write(stem.with_extension("jpg"), jpeg)?;
            }
            if let Some(jpeg) = &report.images.first_seen {
                write(stem.with_extension("first_seen.jpg"), jpeg)?;
            }
            line.push_str(&format!(" -> {}.json", stem.display()));
        }
        println!("{line}");
        if let Some(f) = &forward {
            f.sink.put(report).await?;
        }
    }
    let Some(f) = forward else { return Ok(()) };
    // Wait for the broker to have every report, then let the publisher go.
    let waiting = || f.outbox.depth().reports;
    let _ = tokio::time::timeout(PUBLISH_WAIT, async {
        while waiting() > 0 && !f.done.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let left = waiting();
    f.done.cancel();
    std::fs::remove_dir_all(&f.dir).ok();
    match left {
        0 => Ok(()),
        _ => Err(format!("{left} report(s) not taken by the broker within {PUBLISH_WAIT:?}")),
    }
}

/// Where a camera's reports go: committed to the outbox before anything else happens (live),
/// or through an edge to the replay writer.
enum ReportSink {
    Outbox { outbox: Arc<Outbox>, topic: String },
    Edge(EdgeSender<Report>),
}

impl ReportSink {
    async fn put(&self, report: Report) -> Result<(), String> {
        match self {
            ReportSink::Edge(tx) => {
                tx.send_async(report).await.map(drop).map_err(|_| "the report consumer stopped".into())
            }
            ReportSink::Outbox { outbox, topic } => {
                let json = serde_json::to_vec(&report).map_err(|e| format!("report not serialisable: {e}"))?;
                let (outbox, topic, camera) = (outbox.clone(), topic.clone(), report.camera_id.clone());
                let images = report.images.clone();
                match tokio::task::spawn_blocking(move || outbox.push(&camera, &topic, &json, &images)).await {
                    Ok(slot) => {
                        info!(outbox_id = %slot, report_id = %report.report_id, event = report.event, "report queued in the outbox");
                        Ok(())
                    }
                    Err(error) => Err(format!("queueing the report failed: {error}")),
                }
            }
        }
    }
}

/// How a camera's source runs, given its context: supervised reconnects live, one pass in replay.
type SourceRun = Box<dyn FnOnce(SourceContext) -> BoxFuture<'static, StageResult> + Send>;

/// A camera to start: its settings, its source, and where its incident state is kept (live only).
struct CameraStart {
    camera: Arc<Camera>,
    run: SourceRun,
    state: Option<StateFile>,
    sink: ReportSink,
}

/// Handles on the stages [`start_cameras`] started.
struct Started {
    /// Each camera's id and counters.
    cameras: Vec<(String, Arc<CameraCounters>)>,
    /// The daemon's own stages that can hang (decoders, inference workers), for the watchdog.
    stages: Stages,
    /// The models running, with their counters.
    models: Vec<ModelStatus>,
    /// Stop the models' inference workers at shutdown.
    frames: Vec<EdgeCloser>,
}

/// Starts source, decode and rules for each camera and the inference workers of every model
/// with detectors (`models[m]`, one per worker), under `supervisor`, with edges of `policies`;
/// each camera's reports go to its `sink`.
///
/// Each model has one frames edge keyed by camera. A camera's decoder feeds the first model its
/// rules read; each model's workers pass the frame, with what they found added, to the camera's
/// next model, and the last one to its rules: the rules see every model's results of a frame
/// together, and each model serves the cameras fairly on its own.
fn start_cameras(
    supervisor: &mut Supervisor,
    settings: &Settings,
    cameras: Vec<CameraStart>,
    models: Vec<Vec<Detector>>,
    policies: Policies,
    clock: Arc<dyn Clock>,
    shutdown: &CancellationToken,
) -> Result<Started, AppError> {
    let config = &settings.config;
    let version = config_version(config);
    let model_names: Vec<String> = config.all_models().into_iter().map(|m| m.name).collect();
    let counters: Vec<Arc<CameraCounters>> = cameras.iter().map(|_| Arc::default()).collect();
    let stages = Stages::default();
    let frame_edges: Vec<(EdgeSender<Detected>, EdgeReceiver<Detected>)> =
        models.iter().map(|_| edge(policies.frames, counters.iter().map(|c| c.frames.clone()).collect())).collect();
    // Each camera's decoder feeds the first model it reads; one that reads a model not loaded
    // is refused here, before anything starts (Settings resolves every model a rule names).
    let mut first_edges = Vec::new();
    for (index, start) in cameras.iter().enumerate() {
        let first = start.camera.models().into_iter().min().and_then(|m| frame_edges.get(m));
        let unloaded = start.camera.models().into_iter().find(|&m| m >= frame_edges.len());
        match (first, unloaded) {
            (Some((first, _)), None) => first_edges.push(first.keyed(index)),
            (_, unloaded) => {
                return Err(AppError::Mismatch(vec![Problem {
                    path: format!("cameras.{}", start.camera.id),
                    message: format!("reads model {unloaded:?} of the {} loaded", frame_edges.len()),
                }]));
            }
        }
    }
    // outputs[m][camera]: where model m sends that camera's frames next.
    let mut outputs: Vec<Vec<Option<EdgeSender<Detected>>>> = models.iter().map(|_| Vec::new()).collect();
    let mut ids = Vec::new();
    let starts = cameras.into_iter().zip(&counters).zip(first_edges).enumerate();
    for (index, ((CameraStart { camera, run: run_source, state, sink }, c), first_edge)) in starts {
        let span = info_span!("camera", camera = %camera.id);
        let (encoded_tx, encoded_rx) = edge(policies.encoded, vec![c.encoded.clone()]);
        let (detected_tx, detected_rx) = edge(policies.detections, vec![c.detected.clone()]);
        ids.push(camera.id.clone());
        let route = camera.models();
        for (m, out) in outputs.iter_mut().enumerate() {
            let next = match route.iter().position(|r| *r == m) {
                None => None,
                Some(step) => match route.get(step + 1) {
                    Some(&after) => frame_edges.get(after).map(|(next, _)| next.keyed(index)),
                    None => Some(detected_tx.clone()),
                },
            };
            out.push(next);
        }
        drop(detected_tx);

        let ctx = SourceContext::new(encoded_tx, clock.clone(), c.clone(), shutdown.clone(), camera.stall_timeout);
        let id = camera.id.clone();
        let source = async move {
            crate::testing::maybe_panic("source", &id);
            run_source(ctx).await
        };
        supervisor.spawn(Stage::of("source", &camera.id), source.instrument(span.clone()));

        stages.add(format!("decode {}", camera.id), c.decoding.clone());
        let (cam, frames, cc) = (camera.clone(), first_edge, c.clone());
        supervisor.spawn_thread(Stage::of("decode", &camera.id), span.clone(), move || {
            decode::run(&cam.id, cam.detect_fps, cam.decode, encoded_rx, frames, &cc);
            Ok(())
        });

        let origin = Origin {
            device_id: config.device.id.clone(),
            camera_id: camera.id.clone(),
            camera_name: camera.name.clone(),
            camera_location: camera.location.clone(),
            model_names: model_names.clone(),
            config_version: version.clone(),
            class_names: camera.class_names.clone(),
            snapshot: report::SnapshotStyle::new(&config.snapshot, camera.privacy_masks.clone()),
        };
        let rules = run_rules(camera.clone(), origin, state, detected_rx, sink, c.clone(), shutdown.clone());
        supervisor.spawn(Stage::of("rules", &camera.id), rules.instrument(span));
    }
    let mut running = Vec::new();
    let mut closers = Vec::new();
    for (m, ((detectors, (tx, rx)), outputs)) in models.into_iter().zip(frame_edges).zip(outputs).enumerate() {
        drop(tx); // the senders are the decoders' and the previous models' workers'
        let Some(first) = detectors.first() else { continue };
        let stats = Arc::new(ModelCounters::default());
        closers.push(rx.closer());
        // Every worker of a model takes the next cameras' newest frames from the same edge.
        let input = Arc::new(rx);
        let edge = input.clone();
        running.push(ModelStatus {
            name: first.name().to_string(),
            provider: first.provider(),
            workers: detectors.len(),
            batch_limit: first.max_batch(),
            stats: stats.clone(),
            waiting: Arc::new(move || edge.depth()),
        });
        for (n, detector) in detectors.into_iter().enumerate() {
            let worker = detect::Worker {
                progress: stages.register(format!("detect {} #{}", detector.name(), n + 1)),
                detector,
                model: m,
                input: input.clone(),
                outputs: outputs.clone(),
                counters: counters.clone(),
                stats: stats.clone(),
                camera_ids: ids.clone(),
            };
            supervisor.spawn_thread(Stage::shared("detect"), Span::current(), move || {
                worker.run();
                Ok(())
            });
        }
    }
    let cameras = ids.into_iter().zip(counters).collect();
    Ok(Started { cameras, stages, models: running, frames: closers })
}

/// Applies `camera`'s rules to each detection result; events become reports. With a `state`
/// file, it takes up the incidents a previous run left open and records every change.
async fn run_rules(
    camera: Arc<Camera>,
    origin: Origin,
    state: Option<StateFile>,
    detected: EdgeReceiver<Detected>,
    reports: ReportSink,
    counters: Arc<CameraCounters>,
    shutdown: CancellationToken,
) -> StageResult {
    crate::testing::maybe_panic("rules", &camera.id);
    let mut evidence = Evidence::new(origin.snapshot.blur_classes.clone());
    let origin = Arc::new(origin);
    let mut logic = CameraRules::new(&camera);
    if let Some(file) = &state {
        logic.restore(&file.restore());
    }
    let mut last_at = None;
    loop {
        let Detected { frame, detections } = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            d = detected.recv_async() => match d { Some(d) => d, None => return Ok(()) },
        };
        counters.frames_detected.inc();
        counters.detections.add(detections.len() as u64);
        counters.latency.record((chrono::Utc::now() - frame.at).num_milliseconds().clamp(0, u32::MAX as i64) as u32);
        // With several inference workers a later frame can finish first: rules see stream time
        // only forwards, so the earlier one is dropped (counted).
        if last_at.is_some_and(|last| frame.at <= last) {
            counters.frames_stale.inc();
            continue;
        }
        last_at = Some(frame.at);
        let started = Instant::now();
        let events = logic.observe(frame.at, &detections, frame.width, frame.height, Some(frame.luma()));
        evidence.see(&frame, &detections, logic.present());
        counters.rules_busy.add_since(started);
        let changed = !events.is_empty();
        // Reports are committed before the incident state: a crash in between repeats a
        // report rather than losing one.
        for event in events {
            info!(rule = %event.rule.id, incident = %event.incident_id, event = ?event.kind, objects = event.objects.len(), "incident");
            if event.kind == EventKind::Opened {
                counters.incidents_opened.inc();
            }
            let shots = evidence.take(&event, &frame, &detections);
            let Some(report) = build_report(&origin, event, shots).await else {
                counters.reports_failed.inc();
                continue;
            };
            counters.reports.inc();
            reports.put(report).await?;
        }
        if let (Some(file), true) = (&state, changed) {
            let (file, saved) = (file.clone(), logic.saved());
            match tokio::task::spawn_blocking(move || file.save(&saved)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => error!(%error, "incident state not saved: a restart may repeat or forget it"),
                Err(error) => error!(%error, "saving the incident state failed"),
            }
        }
    }
}

/// Builds a report on a blocking thread (colour conversion and JPEG are CPU work). A panic is
/// retried once; a second one is logged at error with the incident, never passed over silently.
async fn build_report(origin: &Arc<Origin>, event: IncidentEvent, shots: Shots) -> Option<Report> {
    const ATTEMPTS: u32 = 2;
    for attempt in 1..=ATTEMPTS {
        let (o, e, f) = (origin.clone(), event.clone(), shots.clone());
        match tokio::task::spawn_blocking(move || report::build(&o, &e, &f)).await {
            Ok(report) => return Some(report),
            Err(error) => {
                error!(attempt, incident = %event.incident_id, event = ?event.kind, error = %error, "building a report failed")
            }
        }
    }
    error!(incident = %event.incident_id, event = ?event.kind, rule = %event.rule.id, "report lost: building it failed {ATTEMPTS} times");
    None
}
