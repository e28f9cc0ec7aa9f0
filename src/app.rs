//! Builds the stages for every camera, wires them with the channels of [`crate::pipeline`],
//! and owns shutdown: one `CancellationToken` every loop honours, and a `TaskTracker` to wait
//! for the async tasks before the threads are joined.
//!
//! Per camera: a source task, a decode thread and a rules task. Shared: one detector thread
//! (one model, all cameras, served fairly) and one publisher task.

use crate::config::{CameraConfig, Config, Problem};
use crate::detect::{DetectError, Detector};
use crate::pipeline::{self, Detected, FrameQueue};
use crate::report::{self, Origin, Report};
use crate::rules::ZoneRule;
use crate::telemetry::CameraCounters;
use crate::{decode, detect, publish, source};
use sha2::Digest;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

/// How long tasks get to finish after shutdown is requested before we stop waiting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Detector(#[from] DetectError),
    #[error("config does not match the model:\n{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Mismatch(Vec<Problem>),
    #[error("cannot start thread {name}: {source}")]
    Thread { name: String, source: std::io::Error },
}

/// A short, stable fingerprint of the effective configuration (secrets masked), carried in
/// every report so the IOC can tell which settings produced it.
pub fn config_version(config: &Config) -> String {
    let json = serde_json::to_vec(config).expect("config serialises: plain data only");
    let digest = sha2::Sha256::digest(&json);
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Checks that every class a rule names exists in the model.
pub fn check_classes(config: &Config, labels: &[String]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, cam) in config.cameras.iter().enumerate() {
        for (j, rule) in cam.rules.iter().enumerate() {
            for (k, class) in rule.classes.iter().enumerate() {
                if !labels.contains(class) {
                    problems.push(Problem {
                        path: format!("cameras[{i}].rules[{j}].classes[{k}]"),
                        message: format!("{class:?} is not a class of the model (it has {labels:?})"),
                    });
                }
            }
        }
    }
    problems
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AppError> {
    let detector = Detector::load(&config.model)?;
    let mismatches = check_classes(&config, detector.labels());
    if !mismatches.is_empty() {
        return Err(AppError::Mismatch(mismatches));
    }
    let version = config_version(&config);
    info!(device = %config.device.id, cameras = config.cameras.len(), config_version = %version, "starting");

    let tracker = TaskTracker::new();
    let counters: Vec<Arc<CameraCounters>> = config.cameras.iter().map(|_| Arc::default()).collect();
    let queue = FrameQueue::new(counters.clone());
    let (reports_tx, reports_rx) = pipeline::reports();
    tracker.spawn(publish::run(config.mqtt.clone(), config.device.id.clone(), reports_rx, shutdown.clone()));

    let mut threads = Vec::new();
    let mut detected_txs = Vec::new();
    for (index, camera) in config.cameras.iter().enumerate() {
        let camera = Arc::new(camera.clone());
        let span = info_span!("camera", camera = %camera.id);
        let (encoded_tx, encoded_rx) = pipeline::encoded(counters[index].clone());
        let (detected_tx, detected_rx) = pipeline::detected(counters[index].clone());
        detected_txs.push(detected_tx);
        tracker.spawn(
            source::supervise(camera.clone(), encoded_tx, counters[index].clone(), shutdown.clone())
                .instrument(span.clone()),
        );

        let (q, c, cam, thread_span) = (queue.clone(), counters[index].clone(), camera.clone(), span.clone());
        threads.push(spawn_thread(format!("decode-{}", camera.id), move || {
            let _entered = thread_span.enter();
            decode::run(index, &cam.id, cam.detect_fps, encoded_rx, &q, &c);
        })?);

        let origin = Origin {
            device_id: config.device.id.clone(),
            camera_id: camera.id.clone(),
            camera_name: camera.display_name().to_string(),
            camera_location: camera.location.clone(),
            model_name: detector.name().to_string(),
            config_version: version.clone(),
        };
        let rules_task = run_rules(
            camera.clone(),
            origin,
            detected_rx,
            reports_tx.clone(),
            counters[index].clone(),
            shutdown.clone(),
        );
        tracker.spawn(rules_task.instrument(span));
    }
    drop(reports_tx);
    let (q, c) = (queue.clone(), counters.clone());
    threads.push(spawn_thread("detect".into(), move || detect::run_worker(detector, q, detected_txs, c))?);

    shutdown.cancelled().await;
    info!("shutting down");
    queue.close();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        warn!("tasks still running after {SHUTDOWN_GRACE:?}; exiting anyway");
        return Ok(());
    }
    // Threads end once their channels close; a decoder mid-frame takes milliseconds.
    for t in threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    for (camera, c) in config.cameras.iter().zip(&counters) {
        info!(camera = %camera.id, connects = c.connects.get(), frames = c.encoded_frames.get(),
              sampled = c.frames_sampled.get(), detected = c.frames_detected.get(), reports = c.reports.get(),
              dropped_encoded = c.encoded_dropped.get(), replaced_frames = c.frames_replaced.get(),
              dropped_detections = c.detections_dropped.get(), decode_errors = c.decode_errors.get(), "camera totals");
    }
    info!("stopped");
    Ok(())
}

fn spawn_thread(name: String, f: impl FnOnce() + Send + 'static) -> Result<std::thread::JoinHandle<()>, AppError> {
    std::thread::Builder::new().name(name.clone()).spawn(f).map_err(|source| AppError::Thread { name, source })
}

/// Applies `camera`'s rules to each detection result; events become reports.
async fn run_rules(
    camera: Arc<CameraConfig>,
    origin: Origin,
    mut detected: mpsc::Receiver<Detected>,
    reports: mpsc::Sender<Report>,
    counters: Arc<CameraCounters>,
    shutdown: CancellationToken,
) {
    let origin = Arc::new(origin);
    let mut rules: Vec<ZoneRule> = camera.rules.iter().cloned().map(ZoneRule::new).collect();
    loop {
        let Detected { frame, detections } = tokio::select! {
            _ = shutdown.cancelled() => return,
            d = detected.recv() => match d { Some(d) => d, None => return },
        };
        for rule in &mut rules {
            let Some(event) = rule.observe(frame.captured_at, &detections, frame.width, frame.height) else { continue };
            info!(rule = %event.rule.id, incident = %event.incident_id, event = ?event.kind, objects = event.objects.len(), "incident");
            let (origin, frame) = (origin.clone(), frame.clone());
            let report = match tokio::task::spawn_blocking(move || report::build(&origin, &event, &frame)).await {
                Ok(r) => r,
                Err(e) => {
                    error!(error = %e, "building a report failed");
                    continue;
                }
            };
            counters.reports.inc();
            if reports.send(report).await.is_err() {
                return;
            }
        }
    }
}
