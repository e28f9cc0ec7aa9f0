//! One camera's stages — a source task, a decode thread, a rules task — as a unit that starts,
//! takes a changed camera, and stops on its own while everything else runs on: what a reload
//! needs. The models' inference workers are shared by every camera; a unit plugs into them
//! through a key of its own on each model's frames edge and its [`Route`] in that model's
//! [`Routes`], and unplugs by clearing them.

use crate::clip::{ClipStore, Recorder};
use crate::clock::Clock;
use crate::config::{Camera, Config};
use crate::decode::{self, Frame};
use crate::detect::{Detected, Detection, Route, Routes};
use crate::health::{Health, Kind, Reference};
use crate::live::{LiveView, Seen};
use crate::outbox::Outbox;
use crate::pipeline::{EdgeReceiver, EdgeSender, EdgeSpec, edge};
use crate::report::{self, Evidence, Origin, Report, Shot, Shots};
use crate::rules::{CameraRules, EventKind, Feedback, IncidentEvent};
use crate::source::SourceContext;
use crate::state::StateFile;
use crate::supervisor::{Stage, StageResult, Supervisor};
use crate::telemetry::{CameraCounters, Stages};
use crate::tuning::Tape;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

/// The frame edges' policies: live drops frames when something is slow; replay never drops.
/// (Reports are never dropped either way: the outbox live, a blocking edge in replay.)
#[derive(Debug, Clone, Copy)]
pub struct Policies {
    pub encoded: EdgeSpec,
    pub frames: EdgeSpec,
    pub detections: EdgeSpec,
}

impl Policies {
    pub const LIVE: Self = Self {
        encoded: crate::pipeline::ENCODED,
        frames: crate::pipeline::FRAMES,
        detections: crate::pipeline::DETECTIONS,
    };
    pub const LOSSLESS: Self = Self {
        encoded: crate::pipeline::ENCODED.lossless(),
        frames: crate::pipeline::FRAMES.lossless(),
        detections: crate::pipeline::DETECTIONS.lossless(),
    };
}

/// One model as units plug into it: a sender on its frames edge to make keys from (`None`: the
/// model is not loaded), and its workers' routes.
pub struct ModelInput {
    pub frames: Option<EdgeSender<Detected>>,
    pub routes: Routes,
}

/// What every unit plugs into, and what its reports say about the device and config.
pub struct Plant {
    pub models: Vec<ModelInput>,
    pub stages: Stages,
    pub policies: Policies,
    pub clock: Arc<dyn Clock>,
    pub shutdown: CancellationToken,
    /// The config the reports name (device, models, version, snapshot style).
    pub config: Config,
}

impl Plant {
    /// What camera `camera`'s reports say about where they come from.
    pub fn origin(&self, camera: &Camera) -> Origin {
        let config = &self.config;
        Origin {
            device_id: config.device.id.clone(),
            camera_id: camera.id.clone(),
            camera_name: camera.name.clone(),
            camera_location: camera.location.clone(),
            model_names: config.all_models().into_iter().map(|m| m.name).collect(),
            config_version: crate::app::config_version(config),
            class_names: camera.class_names.clone(),
            snapshot: report::SnapshotStyle::new(&config.snapshot, camera.privacy_masks.clone()),
        }
    }
}

/// How a camera's source runs, given its context: supervised reconnects live, one pass in replay.
pub type SourceRun = Box<dyn FnOnce(SourceContext) -> BoxFuture<'static, StageResult> + Send>;

/// A camera to start: its settings, its source, where its incident state is kept (live only),
/// where its reports go, where its evidence clips go (none: it makes none), and the tape that
/// keeps what its rules saw (replay's tuning report; none live).
pub struct CameraStart {
    pub camera: Arc<Camera>,
    pub run: SourceRun,
    pub state: Option<StateFile>,
    pub sink: ReportSink,
    pub clips: Option<Arc<ClipStore>>,
    pub tape: Option<Tape>,
}

/// What a running unit's rules task is told.
enum Control {
    /// The camera's rules, masks or tracking changed, or the config the reports name.
    Change { camera: Arc<Camera>, origin: Box<Origin> },
    /// The camera left the config: resolve its open incidents (reason `config`) and end.
    Retire,
    /// End, keeping the open incidents in the state file for the unit that replaces this one.
    Stop,
    /// The IOC's feedback on an incident; `reply`: whether it is this camera's, open.
    Feedback { incident: uuid::Uuid, feedback: Feedback, reply: tokio::sync::oneshot::Sender<bool> },
}

/// A running camera.
pub struct CameraUnit {
    pub camera: Arc<Camera>,
    pub counters: Arc<CameraCounters>,
    pub live: Arc<LiveView>,
    /// (model, key on its frames edge): the routes to clear when the unit stops.
    keys: Vec<(usize, usize)>,
    /// Cancelled to stop the source; the unit's stages may end from then on.
    stopping: CancellationToken,
    control: mpsc::UnboundedSender<Control>,
    /// Cancelled when the rules task has ended (its last reports queued, its state saved).
    rules_done: CancellationToken,
}

impl CameraUnit {
    /// Starts `start`'s camera under `supervisor`, counting into `counters` and showing in
    /// `live` (a restarted camera keeps its own). The source feeds the decoder; the decoder the
    /// first model the camera's rules read; each model the next; the last one the rules.
    pub fn start(
        plant: &Plant,
        supervisor: &mut Supervisor,
        start: CameraStart,
        counters: Arc<CameraCounters>,
        live: Arc<LiveView>,
    ) -> Result<Self, crate::config::Problem> {
        let CameraStart { camera, run: run_source, state, sink, clips, tape } = start;
        let route = camera.models();
        let unloaded = route.iter().find(|&&m| plant.models.get(m).is_none_or(|m| m.frames.is_none()));
        if let Some(m) = unloaded {
            let message = format!("reads model {m}, which is not loaded");
            return Err(crate::config::Problem { path: format!("cameras.{}", camera.id), message });
        }
        let c = counters;
        let span = info_span!("camera", camera = %camera.id);
        let stopping = plant.shutdown.child_token();
        let (encoded_tx, encoded_rx) = edge(plant.policies.encoded, vec![c.encoded.clone()]);
        let (detected_tx, detected_rx) = edge(plant.policies.detections, vec![c.detected.clone()]);
        // A key on each model's frames edge the camera uses; each model routes to the next.
        let senders: Vec<(usize, EdgeSender<Detected>)> = (route.iter())
            .filter_map(|&m| plant.models.get(m)?.frames.as_ref().map(|f| (m, f.new_key(c.frames.clone()))))
            .collect();
        let mut keys = Vec::new();
        for (step, (m, sender)) in senders.iter().enumerate() {
            let next = match senders.get(step + 1) {
                Some((_, after)) => after.keyed(after.key()),
                None => detected_tx.keyed(0),
            };
            let route = Route { camera_id: camera.id.clone(), counters: c.clone(), next };
            if let Some(model) = plant.models.get(*m) {
                model.routes.set(sender.key(), route);
                keys.push((*m, sender.key()));
            }
        }
        drop(detected_tx);
        let mut senders = senders.into_iter().map(|(_, s)| s);
        let first = senders.next();
        drop(senders); // the later models' keys live on in the routes

        let until = |name| Stage::of(name, &camera.id).until(&stopping);
        let mut ctx =
            SourceContext::new(encoded_tx, plant.clock.clone(), c.clone(), stopping.clone(), camera.stall_timeout);
        // A camera with privacy masks makes no clip (its video is the camera's own, unmasked)
        // unless clips are re-encoded with the masks pixelated.
        let evidence = &plant.config.evidence;
        let recorder = (clips.filter(|_| evidence.enabled && (camera.privacy_masks.is_empty() || evidence.reencode)))
            .map(|store| Recorder::new(store, evidence));
        ctx.ring = recorder.as_ref().map(|r| r.ring.clone());
        let id = camera.id.clone();
        let source = async move {
            crate::testing::maybe_panic("source", &id);
            run_source(ctx).await
        };
        supervisor.spawn(until("source"), source.instrument(span.clone()));

        plant.stages.add(format!("decode {}", camera.id), c.decoding.clone());
        let (cam, cc) = (camera.clone(), c.clone());
        supervisor.spawn_thread(until("decode"), span.clone(), move || {
            if let Some(first) = first {
                decode::run(&cam.id, cam.detect_fps, cam.decode, encoded_rx, first, &cc);
            }
            Ok(())
        });

        let (control, orders) = mpsc::unbounded_channel();
        let rules_done = CancellationToken::new();
        let origin = plant.origin(&camera);
        let masks = camera.privacy_masks.clone();
        let outgoing = Outgoing { sink, recorder, masks, queue: VecDeque::new(), counters: c.clone() };
        let clock = plant.clock.clone();
        let rules = Rules {
            camera: camera.clone(),
            origin,
            state,
            outgoing,
            counters: c.clone(),
            live: live.clone(),
            clock,
            tape,
        };
        let done = rules_done.clone().drop_guard();
        let shutdown = plant.shutdown.clone();
        let task = async move {
            let _done = done;
            rules.run(detected_rx, orders, shutdown).await
        };
        supervisor.spawn(until("rules"), task.instrument(span));
        Ok(Self { camera, counters: c, live, keys, stopping, control, rules_done })
    }

    /// Hands the running rules a changed camera (same source and models) and the config its
    /// reports now name: open incidents and dwell carry over (see [`CameraRules::reconfigure`]).
    pub fn change(&mut self, camera: Arc<Camera>, origin: Origin) {
        self.camera = camera.clone();
        let _ = self.control.send(Control::Change { camera, origin: Box::new(origin) });
    }

    /// Hands the rules the IOC's `feedback` on `incident`: whether it was this camera's, open.
    pub async fn feedback(&self, incident: uuid::Uuid, feedback: Feedback) -> bool {
        let (reply, taken) = tokio::sync::oneshot::channel();
        let _ = self.control.send(Control::Feedback { incident, feedback, reply });
        taken.await.unwrap_or(false)
    }

    /// Stops the unit; `retire` resolves its open incidents (reason `config`) first, otherwise
    /// they stay in the state file for the unit that replaces it. Returns once the rules task
    /// has ended: its reports are queued and its state saved.
    pub async fn stop(self, plant: &Plant, retire: bool) {
        self.stopping.cancel();
        let _ = self.control.send(if retire { Control::Retire } else { Control::Stop });
        for (m, key) in &self.keys {
            if let Some(model) = plant.models.get(*m) {
                model.routes.clear(*key);
            }
        }
        plant.stages.remove(&self.counters.decoding);
        self.rules_done.cancelled().await;
    }
}

/// A unit's rules task: watches the camera's health and applies its rules to each detected
/// frame; events become reports. With a state file (live), it takes up the incidents a previous
/// run left open, records every change, keeps the camera's reference picture, and watches for
/// the camera going offline.
struct Rules {
    camera: Arc<Camera>,
    origin: Origin,
    state: Option<StateFile>,
    outgoing: Outgoing,
    counters: Arc<CameraCounters>,
    live: Arc<LiveView>,
    clock: Arc<dyn Clock>,
    tape: Option<Tape>,
}

impl Rules {
    async fn run(
        self,
        detected: EdgeReceiver<Detected>,
        mut orders: mpsc::UnboundedReceiver<Control>,
        shutdown: CancellationToken,
    ) -> StageResult {
        let Self { mut camera, origin, state, mut outgoing, counters, live, clock, tape } = self;
        crate::testing::maybe_panic("rules", &camera.id);
        let mut evidence = Evidence::new(origin.snapshot.blur_classes.clone());
        let mut origin = Arc::new(origin);
        let mut logic = CameraRules::new(&camera);
        let reference = state.as_ref().and_then(|file| std::fs::read(file.reference_path()).ok());
        let mut health = Health::new(&camera, reference.and_then(|pgm| Reference::from_pgm(&pgm)), clock.now());
        if let Some(file) = &state {
            let saved = file.restore();
            logic.restore(&saved);
            health.restore(&saved);
            // Paused as before the restart; its reports were sent then.
            let _ = follow_health(&health, &mut logic, clock.now());
        }
        counters.health.set(&health);
        // The last frame that showed the view as it should be, and what to blur in it.
        let mut last_good: Option<(Arc<Frame>, Vec<crate::detect::BBox>)> = None;
        // Offline is wall time: checked each second while live.
        let mut silence = tokio::time::interval(std::time::Duration::from_secs(1));
        silence.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let live_source = state.is_some();
        // The last frame seen and what was found in it: the evidence of a reload's resolutions.
        let mut last: Option<(Arc<Frame>, Vec<Detection>)> = None;
        let mut retiring = false;
        // A change of the incident state not saved yet: it is saved once the reports of its
        // events are committed (an opened report waits for its clip), so a crash in between
        // repeats a report rather than losing one.
        let mut unsaved = false;
        loop {
            let (events, detected) = tokio::select! {
                biased;
                order = orders.recv() => {
                    let at = last.as_ref().map_or_else(chrono::Utc::now, |(frame, _)| frame.at);
                    match order {
                        Some(Control::Change { camera: changed, origin: named }) => {
                            camera = changed;
                            outgoing.masks = camera.privacy_masks.clone();
                            origin = Arc::new(*named);
                            let mut events = health.reconfigure(&camera, at);
                            events.extend(follow_health(&health, &mut logic, at));
                            events.extend(logic.reconfigure(&camera, at));
                            (events, None)
                        }
                        Some(Control::Retire) => {
                            retiring = true;
                            let emptied = Camera { rules: Vec::new(), ..(*camera).clone() };
                            (logic.reconfigure(&emptied, at), None)
                        }
                        Some(Control::Feedback { incident, feedback, reply }) => {
                            let found = logic.feedback(incident, feedback, at);
                            let _ = reply.send(found.is_some());
                            (found.unwrap_or_default(), None)
                        }
                        Some(Control::Stop) | None => return finish(&mut outgoing, &state, &logic, &health, unsaved).await,
                    }
                }
                _ = shutdown.cancelled() => return finish(&mut outgoing, &state, &logic, &health, unsaved).await,
                _ = silence.tick(), if live_source => {
                    let now = clock.now();
                    let mut events = health.silent(now);
                    events.extend(follow_health(&health, &mut logic, now));
                    events.extend(logic.overdue_while_paused(now));
                    if events.is_empty() {
                        continue;
                    }
                    (events, None)
                }
                _ = outgoing.due(), if outgoing.waiting() => {
                    outgoing.flush(None, false).await?;
                    if unsaved && outgoing.queue.is_empty() {
                        save_state(&state, &logic, &health).await;
                        unsaved = false;
                    }
                    continue;
                }
                d = detected.recv_async() => match d {
                    Some(Detected { frame, detections }) => {
                        counters.frames_detected.inc();
                        counters.detections.add(detections.len() as u64);
                        let latency = (chrono::Utc::now() - frame.at).num_milliseconds();
                        counters.latency.record(latency.clamp(0, u32::MAX as i64) as u32);
                        // With several inference workers a later frame can finish first: rules
                        // see stream time only forwards, so the earlier one is dropped (counted).
                        if last.as_ref().is_some_and(|(seen, _)| frame.at <= seen.at) {
                            counters.frames_stale.inc();
                            continue;
                        }
                        if let Some(recorder) = &outgoing.recorder {
                            recorder.ring.consumed(frame.at);
                        }
                        let started = Instant::now();
                        if counters.health.new_reference_requested() {
                            info!("a new reference picture is asked for: the next good frame becomes it");
                            health.retake_reference();
                        }
                        let mut events = health.observe(frame.at, frame.luma());
                        events.extend(follow_health(&health, &mut logic, frame.at));
                        let seen = logic.paused().is_none();
                        if seen {
                            events.extend(logic.observe(frame.at, &detections, frame.width, frame.height, Some(frame.luma().into())));
                            evidence.see(&frame, &detections, logic.present());
                        } else {
                            events.extend(logic.overdue_while_paused(frame.at));
                        }
                        if let Some(tape) = &tape {
                            let (cells, blur) = (seen.then(|| logic.cells()), evidence.blur(&detections));
                            tape.keep(&frame, &detections, cells, logic.paused(), &camera.privacy_masks, &blur);
                        }
                        if health.view_ok() {
                            last_good = Some((frame.clone(), evidence.blur(&detections)));
                        }
                        counters.rules_busy.add_since(started);
                        if let (Some(reference), Some(file)) = (health.take_new_reference(), &state) {
                            save_reference(file.reference_path(), reference).await;
                        }
                        if live.watched() {
                            let blur_classes = &origin.snapshot.blur_classes;
                            let blur = detections.iter().filter(|d| blur_classes.contains(&d.label)).map(|d| d.bbox).collect();
                            live.put(Seen {
                                frame: frame.clone(),
                                detections: detections.clone(),
                                rules: logic.view(frame.at),
                                masks: camera.masks.clone(),
                                privacy_masks: camera.privacy_masks.clone(),
                                blur,
                            });
                        }
                        (events, Some((frame, detections)))
                    }
                    // The unit's route was cleared (stopped) or the daemon is stopping.
                    None => return finish(&mut outgoing, &state, &logic, &health, unsaved).await,
                },
            };
            // An order (no frame) always changes what is saved; a frame when it has events.
            let changed = !events.is_empty() || detected.is_none();
            counters.health.set(&health);
            if let Some(seen) = detected {
                last = Some(seen);
            }
            // Reports are committed before the incident state: a crash in between repeats a
            // report rather than losing one.
            for event in events {
                info!(rule = %event.rule.id, incident = %event.incident_id, event = ?event.kind,
                      resolved_by = event.resolved_by.map(|r| r.as_str()), objects = event.objects.len(), "incident");
                if event.kind == EventKind::Opened {
                    counters.incidents_opened.inc();
                }
                let Some((frame, detections)) = &last else {
                    warn!(rule = %event.rule.id, incident = %event.incident_id, "resolved without a report: no frame seen since the start");
                    continue;
                };
                let health_case = Kind::of(&event.rule.id);
                let shots = match health_case {
                    Some(kind) => health_shots(kind, &event, frame, last_good.as_ref()),
                    None => evidence.take(&event, frame, detections),
                };
                // An offline camera has no video of its case.
                let clip = (event.kind == EventKind::Opened && health_case != Some(Kind::Offline)).then(|| {
                    let first = event.objects.iter().map(|o| o.since).chain([event.started_at]).min();
                    (first.unwrap_or(event.started_at), event.opened_at, frame.width, frame.height)
                });
                let Some(report) = build_report(&origin, event, shots).await else {
                    counters.reports_failed.inc();
                    continue;
                };
                counters.reports.inc();
                outgoing.push(report, clip);
            }
            outgoing.flush(last.as_ref().map(|(frame, _)| frame.at), false).await?;
            unsaved |= changed;
            if retiring {
                return finish(&mut outgoing, &state, &logic, &health, unsaved).await;
            }
            if unsaved && outgoing.queue.is_empty() {
                save_state(&state, &logic, &health).await;
                unsaved = false;
            }
        }
    }
}

/// The rules task's end: its waiting reports go out (their clips cut from what there is), then
/// the incident state is saved if it changed since.
async fn finish(
    outgoing: &mut Outgoing,
    state: &Option<StateFile>,
    logic: &CameraRules,
    health: &Health,
    unsaved: bool,
) -> StageResult {
    outgoing.flush(None, true).await?;
    if unsaved {
        save_state(state, logic, health).await;
    }
    Ok(())
}

/// Pauses or resumes the camera's rules as its health says, at `at`: the events of the pause
/// (an `updated` report for each open incident, saying why).
fn follow_health(health: &Health, logic: &mut CameraRules, at: DateTime<Utc>) -> Vec<IncidentEvent> {
    logic.follow(health.pausing().map(Kind::as_str), at)
}

/// The frames a camera-health report shows: the frame now (for an offline camera, the last one
/// it sent) and, when the case opens, the last good view before it.
fn health_shots(
    kind: Kind,
    event: &IncidentEvent,
    frame: &Arc<Frame>,
    last_good: Option<&(Arc<Frame>, Vec<crate::detect::BBox>)>,
) -> Shots {
    let shot =
        |frame: &Arc<Frame>, blur: Vec<crate::detect::BBox>| Shot { frame: frame.clone(), objects: Vec::new(), blur };
    let first_seen = (last_good.filter(|_| event.kind == EventKind::Opened && kind != Kind::Offline))
        .filter(|(good, _)| good.at < frame.at)
        .map(|(good, blur)| shot(good, blur.clone()));
    let now_blur = last_good.filter(|(good, _)| Arc::ptr_eq(good, frame)).map(|(_, b)| b.clone()).unwrap_or_default();
    Shots { main: shot(frame, now_blur), first_seen }
}

/// Saves the camera's reference picture (see [`crate::health`]); a failure is logged, and the
/// reference is kept in memory.
async fn save_reference(path: std::path::PathBuf, reference: Reference) {
    let pgm = reference.to_pgm();
    let shown = path.display().to_string();
    let written = tokio::task::spawn_blocking(move || {
        let part = path.with_extension("pgm.part");
        std::fs::write(&part, pgm).and_then(|()| std::fs::rename(&part, &path))
    })
    .await;
    match written {
        Ok(Ok(())) => info!(path = %shown, "the camera's reference picture is taken"),
        Ok(Err(error)) => warn!(%error, path = %shown, "the camera's reference picture is not saved; kept in memory"),
        Err(error) => warn!(%error, "saving the reference picture failed"),
    }
}

async fn save_state(state: &Option<StateFile>, logic: &CameraRules, health: &Health) {
    let Some(file) = state else { return };
    let (file, saved) = (file.clone(), [logic.saved(), health.saved()].concat());
    match tokio::task::spawn_blocking(move || file.save(&saved)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => error!(%error, "incident state not saved: a restart may repeat or forget it"),
        Err(error) => error!(%error, "saving the incident state failed"),
    }
}

/// An opened report's clip to cut: its span, the frame size, and when to stop waiting for the
/// stream to reach its end (the camera went away).
struct ClipOrder {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    size: (u32, u32),
    deadline: tokio::time::Instant,
}

/// How long past a clip's end its report waits for the stream to get there.
const CLIP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A camera's reports on their way out, in order: an opened report waits for its evidence clip
/// (until the stream reaches the clip's end, or a deadline if it does not), and the camera's
/// later reports wait behind it.
struct Outgoing {
    sink: ReportSink,
    recorder: Option<Recorder>,
    /// The camera's privacy masks: its clips are re-encoded with them pixelated, or not made.
    masks: Vec<Vec<[f64; 2]>>,
    queue: VecDeque<(Report, Option<ClipOrder>)>,
    counters: Arc<CameraCounters>,
}

impl Outgoing {
    /// Queues `report`; `clip` (objects first seen, opened, frame size) when it gets one.
    fn push(&mut self, report: Report, clip: Option<(DateTime<Utc>, DateTime<Utc>, u32, u32)>) {
        let order = self.recorder.as_ref().zip(clip).map(|(recorder, (first, opened, width, height))| {
            let (from, to) = recorder.span(first, opened);
            let deadline = tokio::time::Instant::now() + recorder.post() + CLIP_GRACE;
            ClipOrder { from, to, size: (width, height), deadline }
        });
        self.queue.push_back((report, order));
    }

    /// Whether a report waits for its clip.
    fn waiting(&self) -> bool {
        self.queue.front().is_some_and(|(_, order)| order.is_some())
    }

    /// When the first waiting report stops waiting.
    async fn due(&self) {
        match self.queue.front().and_then(|(_, order)| order.as_ref()) {
            Some(order) => tokio::time::sleep_until(order.deadline).await,
            None => std::future::pending().await,
        }
    }

    /// Sends the reports that wait no longer: the stream has reached `now` (stream time), a
    /// deadline passed, or `all` (the camera is stopping: clips are cut from what there is).
    async fn flush(&mut self, now: Option<DateTime<Utc>>, all: bool) -> StageResult {
        while let Some((_, order)) = self.queue.front() {
            let ready = order
                .as_ref()
                .is_none_or(|o| all || now.is_some_and(|t| t >= o.to) || tokio::time::Instant::now() >= o.deadline);
            if !ready {
                break;
            }
            let Some((mut report, order)) = self.queue.pop_front() else { break };
            if let Some(order) = order {
                report.evidence = self.record(&report.report_id, order).await;
            }
            self.sink.put(report).await?;
        }
        Ok(())
    }

    /// Cuts and writes one clip (on a blocking thread), then keeps the store within its limits.
    async fn record(&self, report_id: &str, order: ClipOrder) -> Option<report::EvidenceClip> {
        let recorder = self.recorder.as_ref()?;
        if !self.masks.is_empty() && !recorder.reencode {
            info!(report_id, "no evidence clip: the camera has privacy masks (evidence.reencode is off)");
            return None;
        }
        let packets = recorder.ring.cut(order.from, order.to);
        let path = recorder.store.path_of(report_id)?;
        let (store, masks) = (recorder.store.clone(), self.masks.clone());
        let (width, height) = order.size;
        let written = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&store.dir).map_err(|e| format!("creating {}: {e}", store.dir.display()))?;
            let clip = match masks.is_empty() {
                true => crate::clip::write_mp4(&path, &packets, width, height)?,
                false => crate::clip::write_masked_mp4(&path, &packets, &masks)?,
            };
            Ok::<_, String>((clip, store.enforce(std::time::SystemTime::now())))
        })
        .await;
        match written {
            Ok(Ok((clip, dropped))) => {
                self.counters.clips.inc();
                self.counters.clips_dropped.add(dropped);
                info!(report_id, bytes = clip.bytes, secs = clip.duration_secs, dropped, "evidence clip written");
                Some(report::EvidenceClip::new(report_id, &clip))
            }
            Ok(Err(error)) => {
                self.counters.clips_failed.inc();
                warn!(report_id, %error, "no evidence clip: the report goes without one");
                None
            }
            Err(error) => {
                self.counters.clips_failed.inc();
                error!(report_id, %error, "making the evidence clip failed: the report goes without one");
                None
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

/// Where a camera's reports go: committed to the outbox before anything else happens (live),
/// or through an edge to the replay writer.
pub enum ReportSink {
    Outbox { outbox: Arc<Outbox>, topic: String },
    Edge(EdgeSender<Report>),
}

impl ReportSink {
    pub async fn put(&self, report: Report) -> Result<(), String> {
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
