//! Rules: decide from detections over time when something is a violation an inspector would
//! sign — a motorbike parked on the sidewalk, not a stream of people walking along it.
//!
//! [`CameraRules`] is one camera's whole logic as a pure unit — detections and stream time in,
//! incident events out — used by the live daemon and by replay alike. Per rule:
//!
//! 1. **Filters**: detections of the rule's classes that pass its per-class filters (score,
//!    area, aspect ratio), outside the camera's masks.
//! 2. **Tracking** ([`crate::track`]): which detections are the same object, and which objects
//!    are stationary, since when; a stationary one missed has gone once the camera's picture
//!    shows its place empty ([`crate::scene`]), and is hidden while something covers it.
//! 3. **Zone**: whether each track is in the rule's zone, with `inertia` detections before
//!    entering or leaving counts.
//! 4. **Presence**: stationary tracks in the zone whose median score passes `threshold`. Each
//!    one's dwell counts from when it stopped inside the zone (coasting through an occlusion
//!    does not reset it); passers never count, however many. An object that has gone stops
//!    counting at once, and its presence ended when it was last seen: the count goes down as
//!    well as up, and the incident resolves `clear_after` after the last one was last seen.
//! 5. **Schedule** ([`schedule`]): outside its hours a rule opens nothing and resolves what is
//!    open; an object already there when the hours begin dwells from their start.
//! 6. **Lifecycle**, one incident per rule:
//!
//! ```text
//! idle ──≥ min_count present for dwell──► open ──count changes / update_every──► updated
//!   ▲                                       │
//!   └── cooldown ◄── resolved ◄── nothing present for clear_after
//! ```
//!
//! An incident still open at its due time (`respond_within` after opening) sends one `updated`
//! report, which then says `overdue`.
//!
//! What must survive a restart — an open incident, a cooldown — is [`CameraRules::saved`] and
//! [`CameraRules::restore`]d by the caller.

pub mod schedule;
pub mod zone;

pub use schedule::Schedule;

use crate::config::{Camera, Rule};
use crate::detect::{BBox, Detection};
use crate::scene::{Cells, Picture, Scene, View};
use crate::track::{Track, Tracker, secs};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Opened,
    /// The count of objects changed, or `update_every` passed while open.
    Updated,
    Resolved,
}

/// A tracked, stationary object in an incident's zone.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentObject {
    pub track_id: u64,
    pub label: String,
    /// The median score of its recent detections.
    pub score: f32,
    /// Its last box in frame pixels.
    pub bbox: BBox,
    /// When it stopped inside the zone: its dwell counts from here.
    pub since: DateTime<Utc>,
}

/// A change in an incident's life, with what is needed to report it.
#[derive(Debug, Clone)]
pub struct IncidentEvent {
    pub kind: EventKind,
    pub incident_id: Uuid,
    pub rule: Arc<Rule>,
    /// When the first of the objects that opened it stopped in the zone.
    pub started_at: DateTime<Utc>,
    /// When the dwell was reached and the incident opened.
    pub opened_at: DateTime<Utc>,
    /// The frame this event was decided on (its snapshot goes into the report).
    pub at: DateTime<Utc>,
    /// The objects that count now (none when resolved).
    pub objects: Vec<IncidentObject>,
    /// Why a resolved incident ended; `None` for the other events.
    pub resolved_by: Option<ResolvedBy>,
    /// On the `updated` event of an incident whose rule pauses: the camera-health case that
    /// paused it (`view_blocked`, ...).
    pub paused_by: Option<&'static str>,
}

/// The IOC's word on an open incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// A false alarm: it resolves at once (`dismissed`), and its objects are not reported again
    /// while they stay.
    Dismiss,
    /// Dispatched: it stays open but sends no more periodic `updated` reports.
    Acknowledge,
}

/// Why an incident resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedBy {
    /// Nothing was present for the rule's `clear_after`.
    Clear,
    /// Its rule or camera left the config (a reload).
    Config,
    /// Its rule's hours ended.
    Schedule,
    /// The IOC called it a false alarm.
    Dismissed,
}

impl ResolvedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clear => "clear",
            Self::Config => "config",
            Self::Schedule => "schedule",
            Self::Dismissed => "dismissed",
        }
    }
}

/// One rule as the live view shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RuleView {
    pub id: String,
    pub zone: String,
    /// The zone as fractions of the frame.
    pub polygon: Vec<[f64; 2]>,
    /// `idle`, `counting` (objects stay in the zone, not yet for the dwell), `open`, `cooldown`,
    /// `off` (outside its schedule) or `paused` (a camera-health case).
    pub state: &'static str,
    /// Stationary objects in the zone passing the threshold, dwelled or not.
    pub present: usize,
    pub min_count: u32,
    pub dwell_secs: f64,
    /// The longest any of them has stayed.
    pub longest_dwell_secs: f64,
    pub incident_id: Option<Uuid>,
    /// When the open incident opened, or when the cooldown ends.
    pub since: Option<DateTime<Utc>>,
    pub tracks: Vec<TrackView>,
}

/// A confirmed track as the live view shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TrackView {
    pub id: u64,
    pub class: String,
    pub score: f32,
    /// Frame pixels.
    pub bbox: BBox,
    pub stationary: bool,
    pub in_zone: bool,
    /// Seconds it has counted for the rule's dwell (absent: it does not count).
    pub dwell_secs: Option<f64>,
}

/// One rule's incident state that must outlive the process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Saved {
    Open {
        incident_id: Uuid,
        started_at: DateTime<Utc>,
        opened_at: DateTime<Utc>,
        count: usize,
        /// Its overdue report was made (absent in state files from before due times).
        #[serde(default)]
        overdue_reported: bool,
        /// The IOC acknowledged it: no periodic updates.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        acknowledged: bool,
    },
    Cooldown {
        until: DateTime<Utc>,
    },
    /// Objects of dismissed incidents that are still there: not reported again while they stay.
    Dismissed {
        objects: Vec<DismissedObject>,
    },
}

/// An object of a dismissed incident: known by its track while tracked, and by its box if the
/// track is lost and found in place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DismissedObject {
    pub bbox: BBox,
    /// When something was last seen in its place; it is forgotten `clear_after` later.
    pub seen_at: DateTime<Utc>,
    #[serde(skip)]
    pub tracks: Vec<u64>,
}

/// One camera's rules: feed it each detected frame in stream-time order.
#[derive(Debug)]
pub struct CameraRules {
    masks: Vec<Vec<[f64; 2]>>,
    rules: Vec<RuleEngine>,
    /// The camera's background and light, shared by its rules' trackers.
    scene: Scene,
    /// The camera-health case the rules are paused for (they see no frames meanwhile).
    paused: Option<&'static str>,
}

impl CameraRules {
    pub fn new(camera: &Camera) -> Self {
        let rules = camera.rules.iter().map(|rule| RuleEngine::new(rule.clone(), camera)).collect();
        Self { masks: camera.masks.clone(), rules, scene: Scene::new(), paused: None }
    }

    /// Pauses the rules at `at` for the camera-health case `why` (they are not fed frames
    /// meanwhile): each open incident stays open and says so in an `updated` event.
    pub fn pause(&mut self, at: DateTime<Utc>, why: &'static str) -> Vec<IncidentEvent> {
        self.paused = Some(why);
        (self.rules.iter())
            .filter_map(|r| match &r.state {
                State::Open(open) => Some(IncidentEvent {
                    paused_by: Some(why),
                    ..open.event(EventKind::Updated, &r.rule, at, r.shown.clone())
                }),
                State::Idle | State::Cooldown { .. } => None,
            })
            .collect()
    }

    /// Pauses or resumes the rules as the camera's health says (`pausing`: the case that pauses
    /// them), at `at`: the events of a pause.
    pub fn follow(&mut self, pausing: Option<&'static str>, at: DateTime<Utc>) -> Vec<IncidentEvent> {
        match (pausing, self.paused) {
            (Some(why), None) => self.pause(at, why),
            (None, Some(_)) => {
                self.resume();
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// The camera-health case the rules are paused for.
    pub fn paused(&self) -> Option<&'static str> {
        self.paused
    }

    /// While paused (no frames reach the rules): the overdue `updated` event of each open
    /// incident whose due time has come by `at`, once, as it would have come with frames.
    pub fn overdue_while_paused(&mut self, at: DateTime<Utc>) -> Vec<IncidentEvent> {
        let Some(why) = self.paused else { return Vec::new() };
        (self.rules.iter_mut())
            .filter_map(|r| {
                let State::Open(open) = &mut r.state else { return None };
                if !open.overdue(&r.rule, at) {
                    return None;
                }
                open.overdue_reported = true;
                Some(IncidentEvent {
                    paused_by: Some(why),
                    ..open.event(EventKind::Updated, &r.rule, at, r.shown.clone())
                })
            })
            .collect()
    }

    /// Ends a pause: open incidents go on as after a restart (what is still there is known
    /// again once it is stationary again, and the clear time counts from then).
    pub fn resume(&mut self) {
        self.paused = None;
        let saved = self.saved();
        self.restore(&saved);
    }

    /// Takes `camera`'s changed rules at stream time `at` without losing what the unchanged
    /// parts know (a reload): a rule whose id stays keeps its tracks, its objects' dwell and its
    /// open incident, under its new thresholds, zone and timings; a new rule starts idle; a rule
    /// that is gone resolves its open incident (the events returned). Masks and tracking
    /// settings take effect from the next frame; the scene's background stays.
    pub fn reconfigure(&mut self, camera: &Camera, at: DateTime<Utc>) -> Vec<IncidentEvent> {
        let mut before = std::mem::take(&mut self.rules);
        self.rules = (camera.rules.iter())
            .map(|rule| match before.iter().position(|e| e.rule.id == rule.id) {
                Some(kept) => {
                    let mut engine = before.swap_remove(kept);
                    engine.rule = rule.clone();
                    engine.tracker.reconfigure(camera.tracking.clone());
                    engine
                }
                None => RuleEngine::new(rule.clone(), camera),
            })
            .collect();
        self.masks = camera.masks.clone();
        (before.into_iter())
            .filter_map(|gone| match gone.state {
                State::Open(open) => Some(IncidentEvent {
                    resolved_by: Some(ResolvedBy::Config),
                    ..open.event(EventKind::Resolved, &gone.rule, at, Vec::new())
                }),
                State::Idle | State::Cooldown { .. } => None,
            })
            .collect()
    }

    /// The events one frame's detections at stream time `at` cause, in rule order. `picture`,
    /// the frame's luma, tells objects that have gone from hidden ones; without it a missed
    /// object coasts.
    pub fn observe(
        &mut self,
        at: DateTime<Utc>,
        detections: &[Detection],
        width: u32,
        height: u32,
        picture: Option<Picture<'_>>,
    ) -> Vec<IncidentEvent> {
        let (w, h) = (width as f64, height as f64);
        let unmasked: Vec<Detection> = detections
            .iter()
            .filter(|d| {
                let (x, y) = d.bbox.anchor();
                !self.masks.iter().any(|m| zone::contains(m, (x as f64 / w, y as f64 / h)))
            })
            .cloned()
            .collect();
        let covering: Vec<BBox> = detections.iter().map(|d| d.bbox).collect();
        let view = picture.map(|picture| {
            // Where each track was last seen, and where a stationary one stands (its last box
            // may be a part of it, or jitter).
            let tracked = (self.rules.iter().flat_map(|r| r.tracker.tracks()))
                .flat_map(|t| [Some(t.bbox), t.is_stationary().then(|| t.anchor_box())])
                .flatten();
            let occupied: Vec<BBox> = covering.iter().copied().chain(tracked).collect();
            self.scene.look(picture, &occupied, &covering)
        });
        self.rules.iter_mut().filter_map(|r| r.observe(at, &unmasked, width, height, view.as_ref())).collect()
    }

    /// The last frame as the scene kept it on its grid: what a tuning tape keeps to see the
    /// frame again without decoding it.
    pub fn cells(&self) -> Cells {
        self.scene.cells()
    }

    /// Per rule: its id, whether its incident is open, and the stationary objects present in
    /// its zone in the last frame (dwelled or not yet): what a snapshot would show.
    pub fn present(&self) -> impl Iterator<Item = (&str, bool, &[IncidentObject])> {
        self.rules.iter().map(|r| (r.rule.id.as_str(), matches!(r.state, State::Open(_)), r.shown.as_slice()))
    }

    /// What each rule sees at stream time `at` (the last frame's), for the live view.
    pub fn view(&self, at: DateTime<Utc>) -> Vec<RuleView> {
        (self.rules.iter())
            .map(|r| {
                let dwell = |since: DateTime<Utc>| (at - since).as_seconds_f64().max(0.0);
                let tracks = (r.tracker.tracks().iter())
                    .filter(|t| t.confirmed)
                    .map(|t| TrackView {
                        id: t.id,
                        class: t.label.clone(),
                        score: t.median_score(),
                        bbox: t.bbox,
                        stationary: t.is_stationary(),
                        in_zone: r.zone.get(&t.id).is_some_and(|m| m.inside),
                        dwell_secs: r.shown.iter().find(|o| o.track_id == t.id).map(|o| dwell(o.since)),
                    })
                    .collect();
                let (state, incident_id, since) = match &r.state {
                    _ if self.paused.is_some() => ("paused", None, None),
                    State::Idle if !r.on => ("off", None, None),
                    State::Idle if r.shown.is_empty() => ("idle", None, None),
                    State::Idle => ("counting", None, None),
                    State::Open(open) => ("open", Some(open.incident_id), Some(open.opened_at)),
                    State::Cooldown { until } => ("cooldown", None, Some(*until)),
                };
                RuleView {
                    id: r.rule.id.clone(),
                    zone: r.rule.zone.name.clone(),
                    polygon: r.rule.zone.polygon.clone(),
                    state,
                    present: r.shown.len(),
                    min_count: r.rule.min_count,
                    dwell_secs: r.rule.dwell.as_secs_f64(),
                    longest_dwell_secs: r.shown.iter().map(|o| dwell(o.since)).fold(0.0, f64::max),
                    incident_id,
                    since,
                    tracks,
                }
            })
            .collect()
    }

    /// Takes the IOC's `feedback` on incident `incident` at `at`: `None` if no rule of this
    /// camera has it open; else the events it causes (a dismissed incident resolves).
    pub fn feedback(&mut self, incident: Uuid, feedback: Feedback, at: DateTime<Utc>) -> Option<Vec<IncidentEvent>> {
        let r =
            (self.rules.iter_mut()).find(|r| matches!(&r.state, State::Open(open) if open.incident_id == incident))?;
        let State::Open(open) = &mut r.state else { return None };
        Some(match feedback {
            Feedback::Acknowledge => {
                open.acknowledged = true;
                Vec::new()
            }
            Feedback::Dismiss => {
                let event = IncidentEvent {
                    resolved_by: Some(ResolvedBy::Dismissed),
                    ..open.event(EventKind::Resolved, &r.rule, at, Vec::new())
                };
                let objects =
                    (r.shown.iter()).map(|o| DismissedObject { bbox: o.bbox, seen_at: at, tracks: vec![o.track_id] });
                r.dismissed.extend(objects);
                r.state = State::Idle;
                vec![event]
            }
        })
    }

    /// Open incidents, cooldowns and dismissed objects by rule id, to keep across a restart.
    pub fn saved(&self) -> Vec<(String, Saved)> {
        let mut saved = Vec::new();
        for r in &self.rules {
            let state = match &r.state {
                State::Idle => None,
                State::Open(o) => Some(Saved::Open {
                    incident_id: o.incident_id,
                    started_at: o.started_at,
                    opened_at: o.opened_at,
                    count: o.count,
                    overdue_reported: o.overdue_reported,
                    acknowledged: o.acknowledged,
                }),
                State::Cooldown { until } => Some(Saved::Cooldown { until: *until }),
            };
            saved.extend(state.map(|state| (r.rule.id.clone(), state)));
            if !r.dismissed.is_empty() {
                saved.push((r.rule.id.clone(), Saved::Dismissed { objects: r.dismissed.clone() }));
            }
        }
        saved
    }

    /// Takes up where a previous run left off. An incident still open goes on; if nothing is
    /// there any more it resolves `clear_after` after an object could have been found
    /// stationary again (`stationary_after` from the first frame). State of rules that no
    /// longer exist is ignored.
    pub fn restore(&mut self, saved: &[(String, Saved)]) {
        for (rule_id, saved) in saved {
            let Some(engine) = self.rules.iter_mut().find(|r| &r.rule.id == rule_id) else { continue };
            engine.state = match saved {
                Saved::Open { incident_id, started_at, opened_at, count, overdue_reported, acknowledged } => {
                    State::Open(Open {
                        incident_id: *incident_id,
                        started_at: *started_at,
                        opened_at: *opened_at,
                        count: *count,
                        overdue_reported: *overdue_reported,
                        acknowledged: *acknowledged,
                        last_present: None,
                        last_update: None,
                    })
                }
                Saved::Cooldown { until } => State::Cooldown { until: *until },
                Saved::Dismissed { objects } => {
                    // Known again by their boxes; they are looked for as an open incident's
                    // objects are (see `forget_dismissed`).
                    engine.dismissed = objects.clone();
                    engine.dismissed_restored = true;
                    continue;
                }
            };
        }
    }
}

#[derive(Debug)]
struct RuleEngine {
    rule: Arc<Rule>,
    tracker: Tracker,
    /// Zone membership of each live track, by track id.
    zone: HashMap<u64, Membership>,
    /// The tracks present in the last frame and when each was last seen: when one ends,
    /// presence ends when the tracker says (its last sighting, or the end of its coast), not at
    /// the frame that noticed.
    present: HashMap<u64, DateTime<Utc>>,
    /// The objects present in the last frame.
    shown: Vec<IncidentObject>,
    /// Whether its schedule had it on at the last frame.
    on: bool,
    state: State,
    /// Objects of its dismissed incidents still there.
    dismissed: Vec<DismissedObject>,
    /// They were just restored: their last sightings are from before the restart.
    dismissed_restored: bool,
}

/// Whether a track counts as in the zone, with the inertia that keeps it from flapping.
#[derive(Debug, Clone, Copy)]
struct Membership {
    inside: bool,
    /// Detections in a row that disagree with `inside`, and when the first of them was.
    streak: u32,
    streak_started: DateTime<Utc>,
    entered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
enum State {
    Idle,
    Open(Open),
    Cooldown { until: DateTime<Utc> },
}

#[derive(Debug, Clone)]
struct Open {
    incident_id: Uuid,
    started_at: DateTime<Utc>,
    opened_at: DateTime<Utc>,
    count: usize,
    overdue_reported: bool,
    acknowledged: bool,
    /// Unset right after a restore: set from the first frame (see `restore`).
    last_present: Option<DateTime<Utc>>,
    last_update: Option<DateTime<Utc>>,
}

impl Open {
    /// An event of this incident of `rule` at `at`, showing `objects`.
    fn event(
        &self,
        kind: EventKind,
        rule: &Arc<Rule>,
        at: DateTime<Utc>,
        objects: Vec<IncidentObject>,
    ) -> IncidentEvent {
        IncidentEvent {
            kind,
            incident_id: self.incident_id,
            rule: rule.clone(),
            started_at: self.started_at,
            opened_at: self.opened_at,
            at,
            objects,
            resolved_by: None,
            paused_by: None,
        }
    }

    /// Whether its overdue report is owed at `at`: its due time has come and it was not made.
    fn overdue(&self, rule: &Rule, at: DateTime<Utc>) -> bool {
        !self.overdue_reported && at >= self.opened_at + secs(rule.respond_within)
    }
}

/// Which of a rule's per-class filters turned a detection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// Under `min_score`.
    Score,
    /// Outside `min_area`..`max_area` (of the frame).
    Area,
    /// Outside `min_ratio`..`max_ratio` (width over height).
    Ratio,
}

impl Refusal {
    pub fn key(self) -> &'static str {
        match self {
            Self::Score => "min_score",
            Self::Area => "min_area/max_area",
            Self::Ratio => "min_ratio/max_ratio",
        }
    }
}

impl Rule {
    /// The filter of `detection`'s class, if this rule reads its model and class.
    pub fn filter(&self, detection: &Detection) -> Option<&crate::config::Filter> {
        self.filters.get(&detection.label).filter(|_| detection.model == self.model)
    }
}

impl crate::config::Filter {
    /// Why this filter turns `detection` away in a frame of `frame_area` pixels, if it does.
    pub fn refuses(&self, detection: &Detection, frame_area: f64) -> Option<Refusal> {
        let b = &detection.bbox;
        let (bw, bh) = ((b.x2 - b.x1) as f64, (b.y2 - b.y1) as f64);
        let (area, ratio) = (bw * bh / frame_area, if bh > 0.0 { bw / bh } else { 0.0 });
        if detection.score < self.min_score {
            Some(Refusal::Score)
        } else if !(self.min_area..=self.max_area).contains(&area) {
            Some(Refusal::Area)
        } else if !(self.min_ratio..=self.max_ratio).contains(&ratio) {
            Some(Refusal::Ratio)
        } else {
            None
        }
    }
}

impl RuleEngine {
    fn new(rule: Arc<Rule>, camera: &Camera) -> Self {
        Self {
            rule,
            tracker: Tracker::new(camera.tracking.clone()),
            zone: HashMap::new(),
            present: HashMap::new(),
            shown: Vec::new(),
            on: true,
            state: State::Idle,
            dismissed: Vec::new(),
            dismissed_restored: false,
        }
    }

    fn observe(
        &mut self,
        at: DateTime<Utc>,
        detections: &[Detection],
        width: u32,
        height: u32,
        view: Option<&View<'_>>,
    ) -> Option<IncidentEvent> {
        let frame_area = width as f64 * height as f64;
        let rule = self.rule.clone();
        let mine: Vec<Detection> = detections
            .iter()
            .filter(|d| rule.filter(d).is_some_and(|f| f.refuses(d, frame_area).is_none()))
            .cloned()
            .collect();
        self.tracker.update(at, &mine, view);
        let on_since = rule.schedule.as_ref().map_or(Some(DateTime::<Utc>::MIN_UTC), |s| s.on_since(at));
        self.on = on_since.is_some();

        let zone = &rule.zone;
        let mut alive = Vec::with_capacity(self.tracker.tracks().len());
        for track in self.tracker.tracks() {
            alive.push(track.id);
            let m = self.zone.entry(track.id).or_insert(Membership {
                inside: false,
                streak: 0,
                streak_started: at,
                entered_at: None,
            });
            if !track.seen_at(at) {
                continue; // coasting: no new evidence either way
            }
            if zone::is_in(zone, &track.bbox, width, height) == m.inside {
                m.streak = 0;
                continue;
            }
            if m.streak == 0 {
                m.streak_started = at;
            }
            m.streak += 1;
            if m.streak >= zone.inertia {
                m.inside = !m.inside;
                m.entered_at = m.inside.then_some(m.streak_started);
                m.streak = 0;
            }
        }
        self.zone.retain(|id, _| alive.contains(id));

        let mut present: Vec<IncidentObject> = self
            .tracker
            .tracks()
            .iter()
            .filter_map(|t| {
                let stationary_since = t.stationary_since.filter(|_| t.confirmed)?;
                let entered_at = self.zone.get(&t.id)?.entered_at?;
                let threshold = rule.filters.get(&t.label).map_or(1.0, |f| f.threshold);
                (t.median_score() >= threshold).then(|| IncidentObject {
                    track_id: t.id,
                    label: t.label.clone(),
                    score: t.median_score(),
                    bbox: t.bbox,
                    since: stationary_since.max(entered_at).max(on_since.unwrap_or(at)),
                })
            })
            .collect();
        present.sort_by_key(|o| o.track_id);
        self.forget_dismissed(at, &mut present);
        let dwell = secs(rule.dwell);
        let dwelled: Vec<IncidentObject> =
            present.iter().filter(|o| self.on && at - o.since >= dwell).cloned().collect();

        // When the last present object went: now if one is here; else when an ended one was
        // last present (its last sighting if it has gone, the end of its coast if it ran out),
        // or when one that moved off or left the zone was last seen.
        let ended = self.tracker.ended();
        let gone_at = self
            .present
            .iter()
            .filter(|(id, _)| !present.iter().any(|o| o.track_id == **id))
            .map(|(id, last_seen)| match ended.iter().find(|e| e.id == *id) {
                Some(e) => e.present_until.min(at),
                None => *last_seen,
            })
            .max();
        let here: Vec<&Track> =
            self.tracker.tracks().iter().filter(|t| present.iter().any(|o| o.track_id == t.id)).collect();
        self.present = here.iter().map(|t| (t.id, t.last_seen)).collect();
        // Present now, unless every object here is unseen with its place looking empty (it
        // may be gone): then only until the last of them was seen, so that, once gone, the
        // clear time counts from its last sighting.
        let present_at = here.iter().map(|t| t.present_until(at)).max().max(gone_at);
        if let State::Open(open) = &mut self.state
            && open.last_present.is_none()
        {
            // Just restored: an object still there is known again only once it is stationary
            // again, so the clear time counts from then.
            open.last_present = Some(at + secs(self.tracker.config().stationary_after));
        }
        self.shown = present;
        self.step(at, present_at, dwelled)
    }

    /// Drops from `present` the objects of dismissed incidents: by track, or by box (IoU 0.5)
    /// for a track lost and found in place, which is then known by its new track too. An object
    /// unseen for `clear_after` is forgotten.
    fn forget_dismissed(&mut self, at: DateTime<Utc>, present: &mut Vec<IncidentObject>) {
        if self.dismissed.is_empty() {
            return;
        }
        if std::mem::take(&mut self.dismissed_restored) {
            // Just restored: an object still there is found again once tracked, as an open
            // incident's is, so it is looked for until then.
            let grace = at + secs(self.tracker.config().stationary_after);
            self.dismissed.iter_mut().for_each(|d| d.seen_at = grace);
        }
        for d in &mut self.dismissed {
            for t in self.tracker.tracks() {
                let same = d.tracks.contains(&t.id) || (t.seen_at(at) && t.bbox.iou(&d.bbox) >= 0.5);
                if same {
                    if !d.tracks.contains(&t.id) {
                        d.tracks.push(t.id);
                    }
                    if t.seen_at(at) {
                        (d.bbox, d.seen_at) = (t.bbox, at);
                    }
                }
            }
        }
        present.retain(|o| !self.dismissed.iter().any(|d| d.tracks.contains(&o.track_id)));
        let clear = secs(self.rule.clear_after);
        self.dismissed.retain(|d| at - d.seen_at < clear);
    }

    /// The lifecycle, given when something was last present (now, or just before) and which
    /// objects have dwelled.
    fn step(
        &mut self,
        at: DateTime<Utc>,
        present_at: Option<DateTime<Utc>>,
        dwelled: Vec<IncidentObject>,
    ) -> Option<IncidentEvent> {
        let rule = self.rule.clone();
        if let State::Cooldown { until } = self.state
            && at >= until
        {
            self.state = State::Idle;
        }
        let resolved = |open: &Open, why| IncidentEvent {
            resolved_by: Some(why),
            ..open.event(EventKind::Resolved, &rule, at, Vec::new())
        };
        match &mut self.state {
            State::Cooldown { .. } => None,
            State::Open(open) if !self.on => {
                let e = resolved(open, ResolvedBy::Schedule);
                self.state = State::Idle;
                Some(e)
            }
            State::Idle if dwelled.len() >= rule.min_count as usize => {
                let open = Open {
                    incident_id: Uuid::new_v4(),
                    started_at: dwelled.iter().map(|o| o.since).min().unwrap_or(at),
                    opened_at: at,
                    count: dwelled.len(),
                    overdue_reported: false,
                    acknowledged: false,
                    last_present: Some(at),
                    last_update: Some(at),
                };
                let e = open.event(EventKind::Opened, &rule, at, dwelled);
                self.state = State::Open(open);
                Some(e)
            }
            State::Idle => None,
            State::Open(open) => {
                let last_update = *open.last_update.get_or_insert(at);
                let last_present = open.last_present.max(present_at).unwrap_or(at);
                open.last_present = Some(last_present);
                if last_present < at && at - last_present >= secs(rule.clear_after) {
                    let e = resolved(open, ResolvedBy::Clear);
                    self.state = State::Cooldown { until: at + secs(rule.cooldown) };
                    return Some(e);
                }
                let changed = !dwelled.is_empty() && dwelled.len() != open.count;
                let due = rule.update_every.is_some_and(|every| at - last_update >= secs(every))
                    && !dwelled.is_empty()
                    && !open.acknowledged;
                let overdue = open.overdue(&rule, at);
                if !(changed || due || overdue) {
                    return None;
                }
                open.overdue_reported |= overdue;
                if !dwelled.is_empty() {
                    open.count = dwelled.len();
                }
                open.last_update = Some(at);
                Some(open.event(EventKind::Updated, &rule, at, dwelled))
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
