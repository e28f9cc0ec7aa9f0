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
//! Models are loaded once, at the start: a reload that changes `[model]` or `[models]` is
//! refused with a problem that says to restart. Changes to `device`, `outbox`, `http` and
//! `log` are logged as taking effect at the next restart. A refused config changes nothing: each
//! problem is logged with its key path and shows in the status, heartbeat and `/healthz` until
//! a reload is taken.

use crate::app::{AppError, check_classes, config_version};
use crate::config::{self, Camera, ConfigError, Problem, Settings};
use crate::live::LiveView;
use crate::outbox::Outbox;
use crate::publish::{self, Presence};
use crate::source::{self, RtspSource};
use crate::state::StateFile;
use crate::supervisor::{Stage, Supervisor};
use crate::telemetry::{CameraCounters, CameraList, ConfigState, Listed};
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
    pub config: ConfigState,
    publisher: Option<Publisher>,
}

/// The running publisher: cancel `stop`, then wait for `done` (its offline status sent).
struct Publisher {
    stop: CancellationToken,
    done: CancellationToken,
}

impl Live {
    /// Starts a unit for each of `settings`' cameras.
    pub fn start(
        plant: Plant,
        supervisor: &mut Supervisor,
        settings: Settings,
        outbox: Arc<Outbox>,
        labels: Vec<Option<Vec<String>>>,
    ) -> Result<Self, AppError> {
        let config = ConfigState::new(config_version(&settings.config));
        let mut live = Self {
            plant,
            settings,
            units: Vec::new(),
            outbox,
            labels,
            cameras: CameraList::default(),
            config,
            publisher: None,
        };
        for camera in live.settings.cameras.clone() {
            let start = live.camera_start(&camera);
            let unit = CameraUnit::start(&live.plant, supervisor, start, Arc::default(), Arc::default())
                .map_err(|problem| AppError::Mismatch(vec![problem]))?;
            live.units.push(unit);
        }
        live.list_cameras();
        Ok(live)
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
            Presence::Announce(describe),
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
        CameraStart { camera: camera.clone(), run, state: Some(state), sink }
    }

    fn list_cameras(&self) {
        let listed = self.units.iter().map(|u| Listed {
            id: u.camera.id.clone(),
            counters: u.counters.clone(),
            live: u.live.clone(),
        });
        self.cameras.set(listed.collect());
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
        let path = self.settings.path.clone();
        info!(config = %path.display(), overlay = %self.settings.overlay.display(), "reading the config");
        let new = match config::load(&path) {
            Ok(new) => {
                let problems = self.refusals(&new);
                if problems.is_empty() { Ok(new) } else { Err(problems) }
            }
            Err(ConfigError::Invalid { problems, .. }) => Err(problems),
            Err(ConfigError::Read { path, message }) => Err(vec![Problem { path, message }]),
        };
        let new = match new {
            Ok(new) => new,
            Err(problems) => {
                for problem in &problems {
                    error!(key = %problem.path, problem = %problem.message, "reload refused: the config has a problem");
                }
                error!(problems = problems.len(), "reload refused; the config before it runs on");
                let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
                self.config.update(|now| now.problems = problems.clone());
                return Err(problems);
            }
        };
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
                None => {
                    info!(camera = %camera.id, "camera added: starting it");
                    added += 1;
                    self.start_unit(supervisor, &camera, Arc::default(), Arc::default())
                }
            };
            self.units.extend(unit);
        }
        self.list_cameras();
        if broker_changed {
            info!(host = %self.settings.config.mqtt.host, port = self.settings.config.mqtt.port, "broker settings changed: reconnecting");
            self.start_publisher(supervisor, describe.clone()).await;
        }
        let version = config_version(&self.settings.config);
        self.config.update(|now| {
            now.version = version.clone();
            now.reloads += 1;
            now.problems.clear();
        });
        drop(old);
        info!(config_version = %version, changed, restarted, removed, added, broker_changed,
              took_ms = started.elapsed().as_millis() as u64, "reload taken");
        Ok(version)
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

    /// What makes `new` unusable beyond `load`'s own validation: what `check` also refuses
    /// (no camera, classes the models lack), and changes only a restart can make.
    fn refusals(&self, new: &Settings) -> Vec<Problem> {
        let mut problems = Vec::new();
        if new.cameras.is_empty() {
            problems.push(Problem { path: "cameras".into(), message: "at least one camera is required".into() });
        }
        let (old_models, new_models) = (self.settings.config.all_models(), new.config.all_models());
        if to_value(&old_models) != to_value(&new_models) {
            let message = "changed; models are loaded at the start: restart to apply (systemctl restart fieldwatch)";
            problems.push(Problem { path: "model".into(), message: message.into() });
            return problems;
        }
        let labels: Vec<Option<&[String]>> = self.labels.iter().map(Option::as_deref).collect();
        problems.extend(check_classes(new, &labels));
        for camera in &new.cameras {
            for m in camera.models() {
                if self.plant.models.get(m).is_none_or(|model| model.frames.is_none()) {
                    let name = new_models.get(m).map(|m| m.name.clone()).unwrap_or_default();
                    let message =
                        format!("reads model {name:?}, which no camera used at the start: restart to load it");
                    problems.push(Problem { path: format!("cameras.{}", camera.id), message });
                }
            }
        }
        problems
    }
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
    ];
    for (section, before, after) in pairs {
        if before != after {
            changed.push(section);
        }
    }
    changed
}
