//! The live daemon's cameras and publisher, and changes to them without a restart.
//!
//! `systemctl reload fieldwatch` (SIGHUP) re-reads the config file and its overlay, validates
//! the result exactly as `check` does, and applies only what changed:
//! - an unchanged camera keeps its RTSP session, decoder, tracks and incidents;
//! - a camera whose rules, zones, masks or tracking changed keeps all that too, and its rules
//!   take the change on their next frame (a rule that stays keeps its open incident and its
//!   objects' dwell; a removed rule resolves its incident with `resolved_by: config`);
//! - a camera whose stream settings (URL, transport, decoding, timings) changed reconnects,
//!   its open incidents carried over through its state file;
//! - a removed camera resolves its open incidents (`config`) and stops; a new one starts;
//! - a changed broker is reconnected to (the outbox keeps what is waiting meanwhile).
//!
//! A reload that changes `[model]` or `[models]` (or has a camera read a model none read
//! before) loads the new models first — a model that does not load, or lacks a class a rule
//! names, refuses the reload — then stops every camera, replaces the inference workers and
//! starts the cameras again on them (they reconnect; open incidents carry over through their
//! state files). Changes to `device`, `outbox`, `http` and `log` are logged as taking effect at
//! the next restart. A refused config changes nothing: each
//! problem is logged with its key path and shows in the status, heartbeat and `/healthz` until
//! a reload is taken.

use crate::app::{AppError, check_classes, config_version, load_models, model_edges, start_models, used_models};
use crate::clip::ClipStore;
use crate::config::{self, Camera, ConfigError, Problem, Settings};
use crate::detect::{Detected, Detector};
use crate::live::LiveView;
use crate::outbox::Outbox;
use crate::pipeline::{EdgeCloser, EdgeReceiver};
use crate::publish::{self, Presence};
use crate::source::{self, RtspSource};
use crate::state::StateFile;
use crate::supervisor::{Stage, Supervisor};
use crate::telemetry::{CameraCounters, CameraList, ConfigState, Listed, ModelList};
use crate::unit::{CameraStart, CameraUnit, Plant, ReportSink};
use futures::FutureExt;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// The running cameras and publisher, and the config they run on.
pub struct Live {
    pub plant: Plant,
    settings: Settings,
    units: Vec<CameraUnit>,
    outbox: Arc<Outbox>,
    /// Each loaded model's classes, to check a new config's rules against.
    labels: Vec<Option<Vec<String>>>,
    pub cameras: CameraList,
    pub models: ModelList,
    pub config: ConfigState,
    publisher: Option<Publisher>,
    /// The running models' workers: what closes their edges, and what says their end is
    /// expected (a reload replaced them).
    workers: (Vec<EdgeCloser>, CancellationToken),
    /// Where the cameras' evidence clips are kept (limits as the config said at the start).
    pub clips: Arc<ClipStore>,
}

/// The running publisher: cancel `stop`, then wait for `done` (its offline status sent).
struct Publisher {
    stop: CancellationToken,
    done: CancellationToken,
}

impl Live {
    /// Starts `detectors` (per model, one per worker; see `load_models`) and a unit for each of
    /// `settings`' cameras on them.
    pub fn start(
        plant: Plant,
        supervisor: &mut Supervisor,
        settings: Settings,
        outbox: Arc<Outbox>,
        detectors: Vec<Vec<Detector>>,
    ) -> Result<Self, AppError> {
        let config = ConfigState::new(config_version(&settings.config));
        config.update(|now| (now.revision, now.running) = running(&settings));
        let clips = ClipStore::new(settings.evidence_dir(), &settings.config.evidence);
        let mut live = Self {
            plant,
            settings,
            units: Vec::new(),
            outbox,
            labels: Vec::new(),
            cameras: CameraList::default(),
            models: ModelList::default(),
            config,
            publisher: None,
            workers: (Vec::new(), CancellationToken::new()),
            clips: Arc::new(clips),
        };
        let edges = live.plug_models(&detectors);
        for camera in live.settings.cameras.clone() {
            let start = live.camera_start(&camera);
            let unit = CameraUnit::start(&live.plant, supervisor, start, Arc::default(), Arc::default())
                .map_err(|problem| AppError::Mismatch(vec![problem]))?;
            live.units.push(unit);
        }
        live.start_workers(supervisor, detectors, edges);
        live.list_cameras();
        Ok(live)
    }

    /// Makes the frames edges and routes of `detectors`' models for the units to plug into.
    fn plug_models(&mut self, detectors: &[Vec<Detector>]) -> Vec<Option<EdgeReceiver<Detected>>> {
        self.labels = detectors.iter().map(|d| d.first().map(|d| d.labels().to_vec())).collect();
        let (inputs, edges) = model_edges(detectors, self.plant.policies.frames);
        self.plant.models = inputs;
        edges
    }

    /// Starts the models' workers, once the units have their routes.
    fn start_workers(
        &mut self,
        supervisor: &mut Supervisor,
        detectors: Vec<Vec<Detector>>,
        edges: Vec<Option<EdgeReceiver<Detected>>>,
    ) {
        let routes = self.plant.models.iter().map(|m| m.routes.clone()).collect();
        let stop = self.plant.shutdown.child_token();
        let (running, closers) = start_models(supervisor, detectors, edges, routes, &self.plant.stages, &stop);
        self.models.set(running);
        self.workers = (closers, stop);
    }

    /// Stops the models' workers: frames not yet looked at are dropped.
    pub fn close_models(&self) {
        self.workers.0.iter().for_each(EdgeCloser::close);
    }

    /// Starts (or, after a broker change, restarts) the publisher, which speaks for the device
    /// with `describe`.
    pub async fn start_publisher(&mut self, supervisor: &mut Supervisor, describe: publish::Describe) {
        if let Some(old) = self.publisher.take() {
            old.stop.cancel();
            old.done.cancelled().await;
        }
        let config = &self.settings.config;
        let stop = self.plant.shutdown.child_token();
        let done = CancellationToken::new();
        let guard = done.clone().drop_guard();
        let publisher = publish::run(
            config.mqtt.clone(),
            config.device.id.clone(),
            self.outbox.clone(),
            crate::app::sending(config),
            Presence::Announce { describe, changed: self.config.changed() },
            stop.clone(),
        );
        let task = async move {
            let _done = guard;
            publisher.await;
            Ok(())
        };
        supervisor.spawn(Stage::shared("publish").until(&stop), task);
        self.publisher = Some(Publisher { stop, done });
    }

    /// How `camera` runs live: supervised RTSP, its incident state file, reports to the outbox.
    fn camera_start(&self, camera: &Arc<Camera>) -> CameraStart {
        let config = &self.settings.config;
        let cam = camera.clone();
        let run = Box::new(move |ctx| source::supervise(cam.clone(), RtspSource::new(cam), ctx).map(Ok).boxed());
        let state = StateFile::open(self.settings.state_dir(), &camera.id);
        let topic = publish::reports_topic(&config.mqtt, &config.device.id, &camera.id);
        let sink = ReportSink::Outbox { outbox: self.outbox.clone(), topic };
        CameraStart {
            camera: camera.clone(),
            run,
            state: Some(state),
            sink,
            clips: Some(self.clips.clone()),
            tape: None,
        }
    }

    fn list_cameras(&self) {
        let listed = self.units.iter().map(|u| Listed {
            id: u.camera.id.clone(),
            camera: u.camera.clone(),
            counters: u.counters.clone(),
            live: u.live.clone(),
        });
        self.cameras.set(listed.collect());
    }

    /// Hands the IOC's `feedback` on `incident` to the camera that has it open: its id, or why
    /// none took it.
    pub async fn feedback(&self, incident: uuid::Uuid, feedback: crate::rules::Feedback) -> Result<String, String> {
        for unit in &self.units {
            if unit.feedback(incident, feedback).await {
                return Ok(unit.camera.id.clone());
            }
        }
        Err(format!("no open incident {incident} on this device"))
    }

    /// The config file, which remote changes are checked against.
    pub fn config_path(&self) -> std::path::PathBuf {
        self.settings.path.clone()
    }

    /// Where the overlay is: the workbench saves there.
    pub fn overlay(&self) -> std::path::PathBuf {
        self.settings.overlay.clone()
    }

    /// Re-reads the config and applies what changed; a config with problems changes nothing.
    /// `describe` is the publisher's, for a broker change. Returns the config version now
    /// running, or every problem (`key.path: message`) of the config refused.
    pub async fn reload(
        &mut self,
        supervisor: &mut Supervisor,
        describe: &publish::Describe,
    ) -> Result<String, Vec<String>> {
        let started = Instant::now();
        match self.read().await {
            Ok((new, detectors)) => {
                let version = self.apply(supervisor, describe, new, detectors).await;
                info!(config_version = %version, took_ms = started.elapsed().as_millis() as u64, "reload taken");
                Ok(version)
            }
            Err(problems) => {
                for problem in &problems {
                    error!(key = %problem.path, problem = %problem.message, "reload refused: the config has a problem");
                }
                error!(problems = problems.len(), "reload refused; the config before it runs on");
                let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
                self.config.update(|now| now.problems = problems.clone());
                Err(problems)
            }
        }
    }

    /// Reads and validates the config as `check` does, and loads the models it needs that do
    /// not run yet (before anything changes: one that does not load refuses the reload).
    async fn read(&self) -> Result<(Settings, Option<Vec<Vec<Detector>>>), Vec<Problem>> {
        let path = &self.settings.path;
        info!(config = %path.display(), overlay = %self.settings.overlay.display(), "reading the config");
        let new = match config::load(path) {
            Ok(new) => new,
            Err(ConfigError::Invalid { problems, .. }) => return Err(problems),
            Err(ConfigError::Read { path, message }) => return Err(vec![Problem { path, message }]),
        };
        let needs_models = self.needs_models(&new);
        let problems = self.refusals(&new, needs_models);
        if !problems.is_empty() {
            return Err(problems);
        }
        match needs_models {
            true => {
                info!("models changed: loading them");
                let (settings, used) = (new.clone(), used_models(&new));
                let workers =
                    move |i: usize, m: &config::ModelConfig| if used.get(i) == Some(&true) { m.workers } else { 0 };
                match tokio::task::spawn_blocking(move || load_models(&settings, workers)).await {
                    Ok(Ok(detectors)) => Ok((new, Some(detectors))),
                    Ok(Err(AppError::Mismatch(problems))) => Err(problems),
                    Ok(Err(error)) => Err(vec![Problem { path: "model".into(), message: error.to_string() }]),
                    Err(error) => Err(vec![Problem { path: "model".into(), message: error.to_string() }]),
                }
            }
            false => Ok((new, None)),
        }
    }

    /// Runs on `new` (and `detectors`, new models), changing only what changed; returns the
    /// config version now running.
    async fn apply(
        &mut self,
        supervisor: &mut Supervisor,
        describe: &publish::Describe,
        new: Settings,
        detectors: Option<Vec<Vec<Detector>>>,
    ) -> String {
        for section in restart_only(&self.settings.config, &new.config) {
            warn!(section, "changed: takes effect at the next restart");
        }
        let broker_changed = to_value(&self.settings.config.mqtt) != to_value(&new.config.mqtt);
        self.plant.config = new.config.clone();
        let old = std::mem::replace(&mut self.settings, new);
        let (mut changed, mut restarted, mut removed, mut added) = (0, 0, 0, 0);

        // Removed cameras first: their incidents resolve, their reports are queued.
        let (mut kept, gone): (Vec<CameraUnit>, Vec<CameraUnit>) =
            std::mem::take(&mut self.units).into_iter().partition(|u| self.settings.camera(&u.camera.id).is_some());
        for unit in gone {
            info!(camera = %unit.camera.id, "camera removed from the config: resolving its incidents and stopping it");
            unit.stop(&self.plant, true).await;
            removed += 1;
        }
        // New models: every camera stops, the old workers end, and all start on the new ones.
        let models_reloaded = detectors.is_some();
        let mut stopped = std::collections::HashMap::new();
        let mut edges = None;
        if let Some(detectors) = &detectors {
            for unit in std::mem::take(&mut kept) {
                let (id, counters, live) = (unit.camera.id.clone(), unit.counters.clone(), unit.live.clone());
                unit.stop(&self.plant, false).await;
                stopped.insert(id, (counters, live));
            }
            self.close_models();
            self.workers.1.cancel();
            self.plant.stages.remove_named("detect ");
            edges = Some(self.plug_models(detectors));
        }
        for camera in self.settings.cameras.clone() {
            let position = kept.iter().position(|u| u.camera.id == camera.id);
            let unit = match position.map(|i| kept.swap_remove(i)) {
                Some(mut unit) if unit.camera.same_source(&camera) => {
                    changed += usize::from(*unit.camera != *camera);
                    unit.change(camera.clone(), self.plant.origin(&camera));
                    Some(unit)
                }
                Some(unit) => {
                    info!(camera = %camera.id, "stream settings changed: reconnecting");
                    let (counters, live) = (unit.counters.clone(), unit.live.clone());
                    unit.stop(&self.plant, false).await;
                    restarted += 1;
                    self.start_unit(supervisor, &camera, counters, live)
                }
                None => match stopped.remove(&camera.id) {
                    Some((counters, live)) => {
                        restarted += 1;
                        self.start_unit(supervisor, &camera, counters, live)
                    }
                    None => {
                        info!(camera = %camera.id, "camera added: starting it");
                        added += 1;
                        self.start_unit(supervisor, &camera, Arc::default(), Arc::default())
                    }
                },
            };
            self.units.extend(unit);
        }
        if let (Some(detectors), Some(edges)) = (detectors, edges) {
            self.start_workers(supervisor, detectors, edges);
        }
        self.list_cameras();
        if broker_changed {
            info!(host = %self.settings.config.mqtt.host, port = self.settings.config.mqtt.port, "broker settings changed: reconnecting");
            self.start_publisher(supervisor, describe.clone()).await;
        }
        let version = config_version(&self.settings.config);
        self.config.update(|now| {
            now.version = version.clone();
            (now.revision, now.running) = running(&self.settings);
            now.reloads += 1;
            now.problems.clear();
        });
        drop(old);
        info!(changed, restarted, removed, added, models_reloaded, broker_changed, "config applied");
        version
    }

    fn start_unit(
        &self,
        supervisor: &mut Supervisor,
        camera: &Arc<Camera>,
        counters: Arc<CameraCounters>,
        live: Arc<LiveView>,
    ) -> Option<CameraUnit> {
        let start = self.camera_start(camera);
        match CameraUnit::start(&self.plant, supervisor, start, counters, live) {
            Ok(unit) => Some(unit),
            // Refused before anything changed (see `refusals`); said again should it happen.
            Err(problem) => {
                error!(%problem, "camera not started");
                None
            }
        }
    }

    /// What makes `new` unusable beyond `load`'s own validation that `check` also refuses:
    /// no camera, and (with the running models: `needs_models` false) classes they lack.
    fn refusals(&self, new: &Settings, needs_models: bool) -> Vec<Problem> {
        let mut problems = Vec::new();
        if new.cameras.is_empty() {
            problems.push(Problem { path: "cameras".into(), message: "at least one camera is required".into() });
        }
        // New models are checked against their own classes as they load.
        if !needs_models {
            let labels: Vec<Option<&[String]>> = self.labels.iter().map(Option::as_deref).collect();
            problems.extend(check_classes(new, &labels));
        }
        problems
    }

    /// Whether `new` needs other models than those running: one changed, or a camera reads one
    /// that no camera read before (not loaded).
    fn needs_models(&self, new: &Settings) -> bool {
        let unloaded = |m: usize| self.plant.models.get(m).is_none_or(|model| model.frames.is_none());
        to_value(&self.settings.config.all_models()) != to_value(&new.config.all_models())
            || new.cameras.iter().flat_map(|c| c.models()).any(unloaded)
    }
}

/// The overlay's revision and the config as it runs (secrets masked), for the status and a
/// remote `get_config`.
fn running(settings: &Settings) -> (u64, serde_json::Value) {
    (crate::live::overlay_revision(&settings.overlay), to_value(&settings.config))
}

fn to_value<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// The sections that changed between `old` and `new` and only take effect at a restart.
fn restart_only(old: &config::Config, new: &config::Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let pairs = [
        ("device", to_value(&old.device), to_value(&new.device)),
        ("outbox", to_value(&old.outbox), to_value(&new.outbox)),
        ("http", to_value(&old.http), to_value(&new.http)),
        ("log", to_value(&old.log), to_value(&new.log)),
        ("remote", to_value(&old.remote), to_value(&new.remote)),
    ];
    for (section, before, after) in pairs {
        if before != after {
            changed.push(section);
        }
    }
    changed
}
