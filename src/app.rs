//! Starts the daemon ([`run`]) and replay ([`replay`]) and watches them.
//!
//! Per camera, a [`CameraUnit`]: a source task, a decode thread and a rules task. Shared: per
//! model, `workers` inference threads serving every camera whose rules read it, fairly (see
//! [`start_models`]); and a report consumer — the MQTT publisher when live, the replay writer in
//! replay. Live and replay run the same units; only the source and the edges' policies differ.
//! Live, [`Live`] also takes changes to the config without a restart (SIGHUP).
//!
//! Every task and thread runs under a [`Supervisor`]: one that panics, fails, or (live) ends
//! before shutdown stops the daemon with a non-zero exit naming it.

use crate::clip::ClipStore;
use crate::clock::Clock;
use crate::config::{Config, ModelConfig, Problem, Settings, SnapshotMode};
use crate::detect::{self, DetectError, Detected, Detector, Routes};
use crate::outbox::{Outbox, OutboxError};
use crate::pipeline::{self, EdgeCloser, EdgeReceiver, EdgeSpec, edge};
use crate::publish::{self, Presence};
use crate::reload::Live;
use crate::remote::FeedbackRequest;
use crate::report::{self, Report};
use crate::source::{FileSource, Source};
use crate::supervisor::{Stage, StageFailed, StageResult, Supervisor, Until};
use crate::telemetry::{CameraCounters, CameraList, ConfigState, ModelCounters, ModelList, ModelStatus, Stages};
use crate::tuning::Tape;
use crate::unit::{CameraStart, CameraUnit, ModelInput, Plant, ReportSink, SourceRun};
use crate::workbench::{Edits, ReloadRequest, Workbench};
use futures::FutureExt;
use sha2::Digest;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{Span, error, info};

pub use crate::unit::Policies;

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
    /// A file replay was asked to write.
    #[error("{0}")]
    Write(String),
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
        let detectors = Detector::load_workers(model, workers(index, model))?;
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
pub(crate) fn used_models(settings: &Settings) -> Vec<bool> {
    let mut used = vec![false; settings.config.all_models().len()];
    for m in settings.cameras.iter().flat_map(|c| c.models()) {
        used.get_mut(m).into_iter().for_each(|used| *used = true);
    }
    used
}

/// Runs the daemon until `shutdown` is cancelled or a stage fails; SIGHUP reloads the config.
pub async fn run(settings: Settings, clock: Arc<dyn Clock>, shutdown: CancellationToken) -> Result<(), AppError> {
    let config = settings.config.clone();
    let used = used_models(&settings);
    let models = load_models(&settings, |i, m| if used.get(i) == Some(&true) { m.workers } else { 0 })?;
    // Building sessions frees far more than it keeps (the parsed model, optimiser copies).
    crate::telemetry::release_free_memory();
    info!(device = %config.device.id, cameras = settings.cameras.len(), config_version = %config_version(&config), "starting");
    for overridden in &settings.overrides {
        info!(%overridden, "config key overridden");
    }
    // Subscribed before anything starts, so a reload asked for meanwhile is not the default
    // action (terminate).
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .inspect_err(|error| error!(%error, "cannot watch SIGHUP: reloading needs a restart"))
        .ok();

    // A disk that is full, read-only or corrupt does not stop us: the outbox holds reports in
    // memory and says so (storage in the status, heartbeat and /healthz) until it recovers.
    let outbox = Arc::new(Outbox::start(&settings.outbox_path(), config.outbox.limits()));
    let http = match config.http.listen.as_str() {
        "" => None,
        listen => Some(crate::http::bind(listen).await.map_err(AppError::Http)?),
    };
    let mut supervisor = Supervisor::default();
    let stages = Stages::default();
    let plant = Plant {
        models: Vec::new(),
        stages: stages.clone(),
        policies: Policies::LIVE,
        clock,
        shutdown: shutdown.clone(),
        config: config.clone(),
    };
    let mut live = Live::start(plant, &mut supervisor, settings, outbox.clone(), models)?;
    let describe = describe_device(live.config.clone(), live.cameras.clone(), live.models.clone(), outbox.clone());
    live.start_publisher(&mut supervisor, describe.clone()).await;
    supervisor.spawn(Stage::shared("storage"), look_after_storage(outbox.clone(), shutdown.clone()).map(Ok));
    tokio::spawn(crate::systemd::watchdog(stages.clone(), shutdown.clone()));
    // The workbench's saves and remote changes, loaded as a SIGHUP would be.
    let (reloads, mut saves) = tokio::sync::mpsc::channel::<ReloadRequest>(4);
    let (feedback, mut feedbacks) = tokio::sync::mpsc::channel::<FeedbackRequest>(4);
    if config.remote.enabled {
        let remote = crate::remote::Remote {
            mqtt: config.mqtt.clone(),
            device_id: config.device.id.clone(),
            config_path: live.config_path(),
            overlay: live.overlay(),
            max_bytes: config.remote.max_command_bytes,
            cameras: live.cameras.clone(),
            config: live.config.clone(),
            reloads: reloads.clone(),
            feedback,
        };
        tokio::spawn(crate::remote::serve(remote, shutdown.clone()));
    }
    if let Some(listener) = http {
        let edits = config.http.edit.then(|| Edits { overlay: live.overlay(), reloads });
        let observed = crate::http::Observed {
            stages: stages.clone(),
            stuck_after: Duration::from_secs_f64(config.http.stuck_after_secs),
            cameras: live.cameras.clone(),
            models: live.models.clone(),
            outbox: outbox.clone(),
            config: live.config.clone(),
            workbench: Workbench::new(&config.http.token, edits),
            clips: live.clips.clone(),
        };
        tokio::spawn(crate::http::serve(listener, observed, shutdown.clone()));
    }
    crate::systemd::ready();

    loop {
        let hangup = async {
            match hangups.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        // A reload, and who waits for its outcome (a workbench save; nobody for SIGHUP).
        let reply = tokio::select! {
            _ = supervisor.watch(&shutdown, Until::Shutdown) => break,
            _ = hangup => {
                info!(from = "SIGHUP", "reloading the config");
                None
            }
            Some(save) = saves.recv() => {
                info!(from = %save.from, "reloading the config: a change was saved");
                Some(save.reply)
            }
            Some(request) = feedbacks.recv() => {
                let _ = request.reply.send(live.feedback(request.incident, request.feedback).await);
                continue;
            }
        };
        crate::systemd::reloading();
        let outcome = live.reload(&mut supervisor, &describe).await;
        crate::systemd::ready();
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }
    info!("shutting down");
    crate::systemd::stopping();
    live.close_models(); // frames not yet looked at have no value now
    supervisor.drain(SHUTDOWN_GRACE).await;
    let result = supervisor.result().map_err(AppError::from);
    for (camera, c) in live.cameras.all() {
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

pub(crate) fn sending(config: &Config) -> publish::Sending {
    publish::Sending { drain_bytes_per_sec: config.outbox.drain_bytes_per_sec, snapshots: config.snapshot.mode }
}

/// What the status and heartbeat say about the device: versions, clock, disk, outbox, and per
/// camera its frame rate since the last heartbeat, last frame, connects and reports.
fn describe_device(
    config: ConfigState,
    cameras: CameraList,
    models: ModelList,
    outbox: Arc<Outbox>,
) -> publish::Describe {
    let started = Instant::now();
    // When the last heartbeat was made, and each camera's frames then.
    let previous = std::sync::Mutex::new((Instant::now(), std::collections::HashMap::<String, u64>::new()));
    Arc::new(move || {
        let mut previous = previous.lock().unwrap_or_else(|e| e.into_inner());
        let secs = previous.0.elapsed().as_secs_f64().max(1e-3);
        let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let config = config.now();
        let models = models.all();
        // The first model a rule reads (none without cameras).
        let (model, provider) = models.first().map(|m| (m.name.clone(), m.provider)).unzip();
        let cams: Vec<serde_json::Value> = (cameras.all().iter())
            .map(|(id, c)| {
                let frames = c.encoded_frames.get();
                let before = previous.1.insert(id.clone(), frames).unwrap_or(frames);
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
                    "health": crate::health::Kind::ALL.into_iter().filter(|&k| c.health.is_open(k)).map(|k| k.as_str()).collect::<Vec<_>>(),
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
        let health_cases: serde_json::Map<String, serde_json::Value> = (crate::health::Kind::ALL.into_iter())
            .map(|k| (k.as_str().to_string(), cameras.all().iter().filter(|(_, c)| c.health.is_open(k)).count().into()))
            .collect();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": started.elapsed().as_secs(),
            "config_version": config.version,
            "config_reloads": config.reloads,
            "config_revision": config.revision,
            "config_problems": config.problems,
            "model": model,
            "provider": provider,
            "models": models,
            "clock_synchronized": crate::clock::is_synchronized(),
            // Open camera-health cases by kind, over all cameras.
            "health_cases": health_cases,
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
    /// Where to write the tuning report (see [`crate::tuning`]).
    pub report: Option<PathBuf>,
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
    let clip_name = clip.path().file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
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
    supervisor.spawn(Stage::shared("replay output"), write_reports(reports_rx, options.out.clone(), forward));

    let run: SourceRun = Box::new(move |mut ctx| {
        async move { clip.run_once(&mut ctx).await.map(|_| ()).map_err(|e| e.to_string()) }.boxed()
    });
    // File sources take their times from the clip; the clock is never read.
    let clock = Arc::new(crate::clock::SystemClock);
    let policies = Policies::LOSSLESS;
    let stages = Stages::default();
    let (inputs, edges) = model_edges(&models, policies.frames);
    let plant = Plant {
        models: inputs,
        stages: stages.clone(),
        policies,
        clock,
        shutdown: shutdown.clone(),
        config: config.clone(),
    };
    // Replay keeps no state: it must not touch what the live daemon remembers.
    // Clips go beside the reports in `--out` (none without it).
    let clips = (options.out.clone()).map(|dir| Arc::new(ClipStore::new(dir, &config.evidence)));
    let tape = options.report.is_some().then(Tape::default);
    let studied = camera.clone();
    let start = CameraStart { camera, run, state: None, sink: ReportSink::Edge(reports_tx), clips, tape: tape.clone() };
    let c = Arc::new(CameraCounters::default());
    let unit = CameraUnit::start(&plant, &mut supervisor, start, c.clone(), Arc::default())
        .map_err(|p| AppError::Mismatch(vec![p]))?;
    let routes = plant.models.iter().map(|m| m.routes.clone()).collect();
    start_models(&mut supervisor, models, edges, routes, &stages, &shutdown);
    // Each stage ends once the one before it has: the plant's own senders must not outlive the clip.
    drop(plant);
    supervisor.watch(&shutdown, Until::Done).await;
    drop(unit);
    supervisor.result()?;
    if let (Some(path), Some(tape)) = (&options.report, tape) {
        let study = crate::tuning::study(studied, tape.take());
        std::fs::write(path, crate::tuning::html::page(&study, &clip_name))
            .map_err(|e| AppError::Write(format!("writing the tuning report {}: {e}", path.display())))?;
    }

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

/// Per model, the frames edge its workers take from (keyed by camera: the units add their keys)
/// and the routes they send by; `None` edges for models not loaded.
pub(crate) fn model_edges(
    models: &[Vec<Detector>],
    frames: EdgeSpec,
) -> (Vec<ModelInput>, Vec<Option<EdgeReceiver<Detected>>>) {
    models
        .iter()
        .map(|detectors| match detectors.is_empty() {
            true => (ModelInput { frames: None, routes: Routes::default() }, None),
            false => {
                let (tx, rx) = edge(frames, Vec::new());
                (ModelInput { frames: Some(tx), routes: Routes::default() }, Some(rx))
            }
        })
        .unzip()
}

/// Starts the inference workers of every loaded model (`models[m]`, one detector per worker)
/// under `supervisor`: each takes the next cameras' newest frames from its model's edge and
/// passes each on by `routes[m]`. Returns the models' status and what closes their edges.
///
/// A camera's decoder feeds the first model its rules read; each model's workers pass the
/// frame, with what they found added, to the camera's next model, and the last one to its
/// rules: the rules see every model's results of a frame together, and each model serves the
/// cameras fairly on its own.
/// `stop` is cancelled when a reload replaces these models: the workers' end is then expected.
pub(crate) fn start_models(
    supervisor: &mut Supervisor,
    models: Vec<Vec<Detector>>,
    edges: Vec<Option<EdgeReceiver<Detected>>>,
    routes: Vec<Routes>,
    stages: &Stages,
    stop: &CancellationToken,
) -> (Vec<ModelStatus>, Vec<EdgeCloser>) {
    let mut running = Vec::new();
    let mut closers = Vec::new();
    for (m, ((detectors, rx), routes)) in models.into_iter().zip(edges).zip(routes).enumerate() {
        let (Some(first), Some(rx)) = (detectors.first(), rx) else { continue };
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
                routes: routes.clone(),
                stats: stats.clone(),
            };
            supervisor.spawn_thread(Stage::shared("detect").until(stop), Span::current(), move || {
                worker.run();
                Ok(())
            });
        }
    }
    (running, closers)
}
