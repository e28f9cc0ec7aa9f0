//! Tuning from evidence: what one camera's rules made of a clip, what they almost made, and what
//! they would have made at other thresholds and dwells (`replay --report`).
//!
//! Replay keeps a [`Tape`] of what the rules saw of each detected frame: its detections, the
//! scene's grid (so that gone and hidden are told apart again exactly as in the pass), whether
//! a camera-health case paused the rules, and a small picture. [`study`] then runs the same
//! [`CameraRules`] over the tape, without decoding or inference: once as configured, and once
//! per what-if value. Beside them, a tracker of its own per rule follows every object of the
//! rule's classes, masked and filtered ones too, to say of each that stood still and never
//! counted the first stage that stopped it. [`html`] writes it all as one page.

pub mod html;

use crate::config::{Camera, Rule};
use crate::decode::Frame;
use crate::detect::{BBox, Detection};
use crate::rules::{CameraRules, EventKind, IncidentEvent, Refusal, ResolvedBy, zone};
use crate::scene::{Cells, Picture};
use crate::track::{Tracker, secs};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use uuid::Uuid;

/// How wide the kept pictures are.
const THUMB_WIDTH: u32 = 320;
/// The what-if table's thresholds, as offsets from each class's configured one.
pub const THRESHOLD_OFFSETS: [f32; 5] = [-0.1, -0.05, 0.0, 0.05, 0.1];
/// The what-if table's dwells, as factors of the configured one.
pub const DWELL_FACTORS: [f64; 3] = [0.5, 1.0, 2.0];
/// The near misses listed per rule, those that stood still longest first.
const NEAR_MISSES: usize = 12;
/// How close to a zone an object must come to be a near miss of its rule: its box, grown by this
/// fraction of the frame on each side, meets the zone's bounding box.
const NEAR: f64 = 0.1;

/// One detected frame as the rules saw it.
#[derive(Debug, Clone)]
pub struct Kept {
    pub at: DateTime<Utc>,
    pub detections: Vec<Detection>,
    pub width: u32,
    pub height: u32,
    /// The scene's grid of it; `None` while the rules were paused (they did not see it).
    pub cells: Option<Cells>,
    /// The camera-health case that paused the rules.
    pub paused: Option<&'static str>,
    /// A JPEG of it, [`THUMB_WIDTH`] wide, blurred as the live view is (empty if it failed).
    pub thumb: Vec<u8>,
}

/// What replay's rules saw, frame by frame.
#[derive(Debug, Clone, Default)]
pub struct Tape(Arc<Mutex<Vec<Kept>>>);

impl Tape {
    pub fn keep(
        &self,
        frame: &Frame,
        detections: &[Detection],
        cells: Option<Cells>,
        paused: Option<&'static str>,
        privacy_masks: &[Vec<[f64; 2]>],
        blur: &[BBox],
    ) {
        let thumb = crate::live::blurred_jpeg(frame, privacy_masks, blur, THUMB_WIDTH, 70).unwrap_or_default();
        let kept = Kept {
            at: frame.at,
            detections: detections.to_vec(),
            width: frame.width,
            height: frame.height,
            cells,
            paused,
            thumb,
        };
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(kept);
    }

    pub fn take(&self) -> Vec<Kept> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Runs `camera`'s rules over `tape` as the unit ran them, calling `each` with every frame's
/// index and events.
fn rerun(camera: &Camera, tape: &[Kept], mut each: impl FnMut(usize, &[IncidentEvent])) {
    let mut rules = CameraRules::new(camera);
    for (i, kept) in tape.iter().enumerate() {
        let mut events = rules.follow(kept.paused, kept.at);
        if rules.paused().is_none() {
            let picture = kept.cells.as_ref().map(Picture::Cells);
            events.extend(rules.observe(kept.at, &kept.detections, kept.width, kept.height, picture));
        } else {
            events.extend(rules.overdue_while_paused(kept.at));
        }
        each(i, &events);
    }
}

/// The incidents rule `rule_id` of `camera` opens over `tape`.
pub fn opened(camera: &Camera, rule_id: &str, tape: &[Kept]) -> usize {
    let mut opened = 0;
    rerun(camera, tape, |_, events| {
        opened += events.iter().filter(|e| e.kind == EventKind::Opened && e.rule.id == rule_id).count();
    });
    opened
}

/// `camera` with rule `rule_id`'s thresholds moved by `offset` (within 0..1) and its dwell set.
pub fn variant(camera: &Camera, rule_id: &str, offset: f32, dwell: Duration) -> Camera {
    let rules = (camera.rules.iter())
        .map(|rule| {
            if rule.id != rule_id {
                return rule.clone();
            }
            let mut changed = (**rule).clone();
            for filter in changed.filters.values_mut() {
                filter.threshold = (filter.threshold + offset).clamp(0.0, 1.0);
            }
            changed.dwell = dwell;
            Arc::new(changed)
        })
        .collect();
    Camera { rules, ..camera.clone() }
}

/// What a camera's rules made of a clip.
#[derive(Debug)]
pub struct Study {
    pub camera: Arc<Camera>,
    /// The first and last frame's stream times.
    pub span: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub frames: usize,
    pub rules: Vec<RuleStudy>,
    /// The tape, for the pictures.
    pub tape: Vec<Kept>,
}

/// One rule's part of a [`Study`].
#[derive(Debug)]
pub struct RuleStudy {
    pub rule: Arc<Rule>,
    /// Its incidents' events as configured, in order.
    pub events: Vec<Happened>,
    /// Every confirmed object of its classes, in the order first seen.
    pub objects: Vec<Object>,
    /// Per class: the scores of its detections of objects inside the zone.
    pub scores: BTreeMap<String, Vec<f32>>,
    /// Incidents opened at `THRESHOLD_OFFSETS` (columns) and `DWELL_FACTORS` (rows).
    pub what_if: Vec<Vec<usize>>,
}

/// An incident event, numbered by incident in the order they opened (from 1).
#[derive(Debug, Clone)]
pub struct Happened {
    pub kind: EventKind,
    pub incident: usize,
    pub at: DateTime<Utc>,
    pub count: usize,
    pub resolved_by: Option<ResolvedBy>,
}

/// An object of a rule's classes, as the study's own tracker followed it.
#[derive(Debug, Clone)]
pub struct Object {
    pub id: u64,
    pub label: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// When it was inside the zone (by the zone's membership and inertia).
    pub in_zone: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// The longest it stood still, seconds.
    pub still_secs: f64,
    /// Whether an incident counted it.
    pub counted: bool,
    /// Why it never counted, for one that stood still.
    pub miss: Option<Miss>,
    /// A frame of it (index into the tape) standing still, if it did, else the last, and its box.
    pub shot: (usize, BBox),
}

/// The first stage that kept an object that stood still from counting.
#[derive(Debug, Clone, PartialEq)]
pub enum Miss {
    /// Its box's anchor was in a mask for most of its sightings.
    Masked,
    /// A filter turned most of its detections away.
    Filtered { by: Refusal, share: f64 },
    /// It never counted as inside the zone.
    OutsideZone,
    /// It was in the zone but never stood still there.
    Moving,
    /// Its median score stayed under the threshold while it stood in the zone.
    Score { median: f32, threshold: f32 },
    /// It passed the threshold for less than the dwell.
    Dwell { short_by: f64 },
    /// It dwelled, but never with enough others.
    MinCount { most: usize, min_count: u32 },
    /// It dwelled and was not counted: the rule was cooling down, off its schedule, or paused.
    Other,
}

impl Miss {
    /// The reason in a technician's words, naming the key to look at.
    pub fn why(&self, rule: &Rule) -> String {
        match self {
            Self::Masked => "masked: its anchor is in one of the camera's masks (masks)".into(),
            Self::Filtered { by, share } => {
                format!("filtered: {:.0}% of its detections failed {} ({})", share * 100.0, by.key(), filter_text(rule))
            }
            Self::OutsideZone => {
                format!("outside the zone: never counted as in zone {:?} (membership)", rule.zone.name)
            }
            Self::Moving => "moving: in the zone, but never stood still there (tracking.stationary_*)".into(),
            Self::Score { median, threshold } => {
                format!("median score {median:.2} under the threshold {threshold:.2} (threshold)")
            }
            Self::Dwell { short_by } => format!(
                "dwell short by {short_by:.1} s: present {:.1} s of {:.1} s (dwell_secs)",
                rule.dwell.as_secs_f64() - short_by,
                rule.dwell.as_secs_f64()
            ),
            Self::MinCount { most, min_count } => {
                format!("min_count not reached: {most} dwelled at once, {min_count} needed (min_count)")
            }
            Self::Other => "dwelled but not counted: cooldown, schedule or a paused camera".into(),
        }
    }

    /// A short name, for the page's and the tests' use.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Masked => "masked",
            Self::Filtered { by: Refusal::Score, .. } => "min_score",
            Self::Filtered { by: Refusal::Area, .. } => "area",
            Self::Filtered { by: Refusal::Ratio, .. } => "ratio",
            Self::OutsideZone => "outside_zone",
            Self::Moving => "moving",
            Self::Score { .. } => "threshold",
            Self::Dwell { .. } => "dwell",
            Self::MinCount { .. } => "min_count",
            Self::Other => "other",
        }
    }
}

fn filter_text(rule: &Rule) -> String {
    let each = rule.filters.iter().map(|(class, f)| {
        format!(
            "{class}: min_score {:.2}, area {:.4}..{:.4}, ratio {:.2}..{:.2}",
            f.min_score, f.min_area, f.max_area, f.min_ratio, f.max_ratio
        )
    });
    each.collect::<Vec<_>>().join("; ")
}

impl Object {
    pub fn is_near_miss(&self) -> bool {
        self.miss.is_some()
    }
}

/// What the study's tracker knows of one object.
#[derive(Debug)]
struct Follow {
    object: Object,
    sightings: u32,
    masked: u32,
    refused: BTreeMap<Refusal, u32>,
    inside: bool,
    streak: u32,
    streak_started: DateTime<Utc>,
    entered_at: Option<DateTime<Utc>>,
    /// Its median score the last time it stood still in the zone.
    median_still_inside: Option<f32>,
    /// Whether it came near the zone (see [`NEAR`]).
    near: bool,
    /// The longest it passed the threshold standing in the zone, seconds.
    present_secs: f64,
}

/// Studies `camera`'s rules over `tape` (see the module docs).
pub fn study(camera: Arc<Camera>, tape: Vec<Kept>) -> Study {
    let mut watches: Vec<Watch> = camera.rules.iter().map(|_| Watch::new(&camera)).collect();
    let mut numbers: HashMap<Uuid, usize> = HashMap::new();
    rerun(&camera, &tape, |i, happened| {
        let Some(kept) = tape.get(i) else { return };
        for (rule, watch) in camera.rules.iter().zip(&mut watches) {
            let mine: Vec<&IncidentEvent> = happened.iter().filter(|e| e.rule.id == rule.id).collect();
            watch.frame(&camera, rule, kept, i, &mine);
            for e in mine {
                let next = numbers.len() + 1;
                let incident = *numbers.entry(e.incident_id).or_insert(next);
                let happened =
                    Happened { kind: e.kind, incident, at: e.at, count: e.objects.len(), resolved_by: e.resolved_by };
                watch.events.push(happened);
            }
        }
    });
    let rules = (camera.rules.iter().zip(watches))
        .map(|(rule, watch)| {
            let Watch { follows, most_dwelled, scores, events, .. } = watch;
            let mut objects: Vec<Object> = follows.into_values().map(|f| judge(rule, f, most_dwelled)).collect();
            objects.sort_by_key(|o| (o.first_seen, o.id));
            let what_if = what_if(&camera, rule, &tape);
            RuleStudy { rule: rule.clone(), events, objects, scores, what_if }
        })
        .collect();
    let span = tape.first().zip(tape.last()).map(|(a, b)| (a.at, b.at));
    Study { camera, span, frames: tape.len(), rules, tape }
}

/// The incidents `rule` opens over `tape` at each of `DWELL_FACTORS` (rows) and
/// `THRESHOLD_OFFSETS` (columns), on as many threads as the machine has cores.
fn what_if(camera: &Camera, rule: &Rule, tape: &[Kept]) -> Vec<Vec<usize>> {
    let cells: Vec<(f32, Duration)> = (DWELL_FACTORS.iter())
        .flat_map(|factor| THRESHOLD_OFFSETS.iter().map(|offset| (*offset, rule.dwell.mul_f64(*factor))))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut opened_at: Vec<usize> = vec![0; cells.len()];
    std::thread::scope(|scope| {
        let chunk = cells.len().div_ceil(threads).max(1);
        for (cells, out) in cells.chunks(chunk).zip(opened_at.chunks_mut(chunk)) {
            scope.spawn(move || {
                for ((offset, dwell), out) in cells.iter().zip(out) {
                    *out = opened(&variant(camera, &rule.id, *offset, *dwell), &rule.id, tape);
                }
            });
        }
    });
    opened_at.chunks(THRESHOLD_OFFSETS.len()).map(<[usize]>::to_vec).collect()
}

/// What the study follows of one rule over the tape.
#[derive(Debug)]
struct Watch {
    /// Its own tracker, fed every detection of the rule's classes (masked and filtered too).
    tracker: Tracker,
    follows: HashMap<u64, Follow>,
    /// The most objects that had dwelled at once.
    most_dwelled: usize,
    /// Per class: the scores of detections of objects inside the zone.
    scores: BTreeMap<String, Vec<f32>>,
    /// The rule's incident events as configured.
    events: Vec<Happened>,
}

impl Watch {
    fn new(camera: &Camera) -> Self {
        Self {
            tracker: Tracker::new(camera.tracking.clone()),
            follows: HashMap::new(),
            most_dwelled: 0,
            scores: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    /// Frame `index` of the tape for `rule`: which of its objects are masked, filtered, in the
    /// zone, standing, present; which the rule's `events` of that frame counted.
    fn frame(&mut self, camera: &Camera, rule: &Rule, kept: &Kept, index: usize, events: &[&IncidentEvent]) {
        // While paused the rules saw nothing; neither does the study.
        if kept.cells.is_none() && kept.paused.is_some() {
            return;
        }
        let at = kept.at;
        let (w, h) = (kept.width as f64, kept.height as f64);
        let mine: Vec<Detection> = kept.detections.iter().filter(|d| rule.filter(d).is_some()).cloned().collect();
        self.tracker.update(at, &mine, None);
        let dwell = secs(rule.dwell);
        let mut dwelled = 0;
        for track in self.tracker.tracks().iter().filter(|t| t.confirmed) {
            let f = self.follows.entry(track.id).or_insert_with(|| Follow {
                object: Object {
                    id: track.id,
                    label: track.label.clone(),
                    first_seen: track.first_seen,
                    last_seen: at,
                    in_zone: Vec::new(),
                    still_secs: 0.0,
                    counted: false,
                    miss: None,
                    shot: (index, track.bbox),
                },
                sightings: 0,
                masked: 0,
                refused: BTreeMap::new(),
                inside: false,
                streak: 0,
                streak_started: at,
                entered_at: None,
                median_still_inside: None,
                near: false,
                present_secs: 0.0,
            });
            if !track.seen_at(at) {
                continue;
            }
            let Some(seen) = mine.iter().max_by(|a, b| a.bbox.iou(&track.bbox).total_cmp(&b.bbox.iou(&track.bbox)))
            else {
                continue;
            };
            f.sightings += 1;
            f.object.last_seen = at;
            f.near |= near(&rule.zone.polygon, &seen.bbox, w, h);
            let (x, y) = seen.bbox.anchor();
            if camera.masks.iter().any(|m| zone::contains(m, (x as f64 / w, y as f64 / h))) {
                f.masked += 1;
            } else if let Some(by) = rule.filter(seen).and_then(|filter| filter.refuses(seen, w * h)) {
                *f.refused.entry(by).or_default() += 1;
            }
            // Zone membership with the zone's inertia, as the rule keeps it.
            if zone::is_in(&rule.zone, &track.bbox, kept.width, kept.height) != f.inside {
                if f.streak == 0 {
                    f.streak_started = at;
                }
                f.streak += 1;
                if f.streak >= rule.zone.inertia {
                    f.inside = !f.inside;
                    f.entered_at = f.inside.then_some(f.streak_started);
                    f.streak = 0;
                    if f.inside {
                        f.object.in_zone.push((f.streak_started, at));
                    }
                }
            } else {
                f.streak = 0;
            }
            if f.inside {
                if let Some(last) = f.object.in_zone.last_mut() {
                    last.1 = at;
                }
                self.scores.entry(seen.label.clone()).or_default().push(seen.score);
            }
            let Some(still) = track.stationary_since else {
                if f.object.still_secs == 0.0 {
                    f.object.shot = (index, track.bbox);
                }
                continue;
            };
            f.object.still_secs = f.object.still_secs.max((at - still).as_seconds_f64());
            f.object.shot = (index, track.bbox);
            let Some(entered) = f.entered_at.filter(|_| f.inside) else { continue };
            let median = track.median_score();
            f.median_still_inside = Some(median);
            let threshold = rule.filters.get(&track.label).map_or(1.0, |filter| filter.threshold);
            if median >= threshold {
                let present = at - still.max(entered);
                f.present_secs = f.present_secs.max(present.as_seconds_f64());
                dwelled += usize::from(present >= dwell);
            }
        }
        self.most_dwelled = self.most_dwelled.max(dwelled);
        // What the rule's events counted, by box.
        for object in events.iter().flat_map(|e| e.objects.iter()) {
            let best = (self.tracker.tracks().iter())
                .filter(|t| t.seen_at(at))
                .max_by(|a, b| a.bbox.iou(&object.bbox).total_cmp(&b.bbox.iou(&object.bbox)));
            if let Some(f) = best.filter(|t| t.bbox.iou(&object.bbox) >= 0.5).and_then(|t| self.follows.get_mut(&t.id))
            {
                f.object.counted = true;
            }
        }
    }
}

/// Whether `bbox` (pixels of a `w` x `h` frame) comes [`NEAR`] the zone `polygon`.
fn near(polygon: &[[f64; 2]], bbox: &BBox, w: f64, h: f64) -> bool {
    let (mut low, mut high) = ([f64::MAX; 2], [f64::MIN; 2]);
    for [x, y] in polygon {
        (low, high) = ([low[0].min(*x), low[1].min(*y)], [high[0].max(*x), high[1].max(*y)]);
    }
    let (x1, y1) = (bbox.x1 as f64 / w - NEAR, bbox.y1 as f64 / h - NEAR);
    let (x2, y2) = (bbox.x2 as f64 / w + NEAR, bbox.y2 as f64 / h + NEAR);
    x1 <= high[0] && x2 >= low[0] && y1 <= high[1] && y2 >= low[1]
}

/// The object `follow` made, with why it missed if it stood still and never counted.
fn judge(rule: &Rule, f: Follow, most_dwelled: usize) -> Object {
    let mut object = f.object;
    if object.counted || object.still_secs <= 0.0 || !f.near {
        return object;
    }
    let unmasked = f.sightings.saturating_sub(f.masked);
    let refused = f.refused.iter().max_by_key(|(_, n)| **n).map(|(by, n)| (*by, *n));
    let dwell = rule.dwell.as_secs_f64();
    object.miss = Some(if f.masked * 2 >= f.sightings.max(1) {
        Miss::Masked
    } else if let Some((by, n)) = refused.filter(|(_, n)| n * 2 >= unmasked.max(1)) {
        Miss::Filtered { by, share: n as f64 / unmasked.max(1) as f64 }
    } else if object.in_zone.is_empty() {
        Miss::OutsideZone
    } else if let Some(median) = f.median_still_inside.filter(|_| f.present_secs <= 0.0) {
        let threshold = rule.filters.get(&object.label).map_or(1.0, |filter| filter.threshold);
        Miss::Score { median, threshold }
    } else if f.median_still_inside.is_none() {
        Miss::Moving
    } else if f.present_secs < dwell {
        Miss::Dwell { short_by: dwell - f.present_secs }
    } else if most_dwelled < rule.min_count as usize {
        Miss::MinCount { most: most_dwelled, min_count: rule.min_count }
    } else {
        Miss::Other
    });
    object
}

impl RuleStudy {
    /// Its near misses, those that stood still longest first, at most [`NEAR_MISSES`], and how
    /// many more there were.
    pub fn near_misses(&self) -> (Vec<&Object>, usize) {
        let mut all: Vec<&Object> = self.objects.iter().filter(|o| o.is_near_miss()).collect();
        all.sort_by(|a, b| b.still_secs.total_cmp(&a.still_secs).then(a.id.cmp(&b.id)));
        let more = all.len().saturating_sub(NEAR_MISSES);
        all.truncate(NEAR_MISSES);
        (all, more)
    }

    /// The incidents it opened as configured.
    pub fn opened(&self) -> usize {
        self.events.iter().filter(|e| e.kind == EventKind::Opened).count()
    }
}
