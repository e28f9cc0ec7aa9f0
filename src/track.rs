//! Multi-object tracking at the rates the daemon detects at (1–2 per second), where a passer
//! moves more than its own width between frames and a parked object barely moves.
//!
//! Pure: detections and stream time in, tracks out. Each update matches per class, in two
//! stages, each a Hungarian assignment (`pathfinding`'s `kuhn_munkres`):
//!
//! 1. **Stationary tracks** against their own anchor box (the median of their recent boxes) by
//!    IoU of at least `moving_iou`, so a passer cannot steal a parked object's track.
//! 2. **The rest** (moving and tentative tracks) by the distance between bottom centres,
//!    normalised by the track's size, plus the change in size (as Frigate does), gated. A
//!    moving track is looked for where its last two boxes say it is heading, so a walker
//!    passing a parked object is not swapped with it.
//! 3. **Stationary tracks left over** by the same distance, but only to detections that
//!    overlap their last box and that no other track took: an object pulling away from where
//!    it stood. After two such boxes in a row it is moving again (and its incident can resolve
//!    without waiting out the coast).
//!
//! A new track is tentative until `confirm_hits` hits and dies on its first miss; a moving
//! track dies after `moving_max_unseen`. A stationary one missed is looked for in the picture
//! ([`crate::scene`]): once its place has looked empty for `gone_after` it has gone, and its
//! presence ended when it was last seen; while its place is covered (a bus or a crowd in front
//! of it), still looks like it, or the picture cannot tell, it coasts on its last box for
//! `stationary_max_unseen`, with no velocity prediction. Why each track ended is in
//! [`Tracker::ended`].
//!
//! A track is stationary once its boxes have stayed close to their median (IoU ≥ `still_iou`)
//! for `stationary_after`, missing at most one detection on the way (a stream of passers
//! landing on the same spot now and then is not a parked object); it is stationary *since* the
//! first of those boxes, when it stopped.
//! It leaves only after two matched boxes in a row fall below `moving_iou` against its anchor
//! (lower than `still_iou`), so box jitter or one passer over it does not flip it back. A box
//! that lies inside its anchor is a part of it seen past something in front (a bus sliding
//! over it): it is seen, where it stood, and does not move.

use crate::detect::{BBox, Detection};
use crate::scene::{Place, Signature, View};
use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::time::Duration;
use tracing::debug;

/// Recent boxes kept per track: enough for the median and the stillness test at 2 fps.
const HISTORY: usize = 32;
/// Weights are integers for `kuhn_munkres`: this many per unit of IoU or of distance.
const SCALE: f64 = 10_000.0;

/// Tracking settings (see `TrackingConfig` for what each means and its default).
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerConfig {
    pub confirm_hits: u32,
    pub moving_max_unseen: Duration,
    pub stationary_max_unseen: Duration,
    /// A stationary track whose place has looked empty this long has gone.
    pub gone_after: Duration,
    pub stationary_after: Duration,
    pub still_iou: f32,
    pub moving_iou: f32,
    pub match_distance: f32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            confirm_hits: 3,
            moving_max_unseen: Duration::from_secs(3),
            stationary_max_unseen: Duration::from_secs(60),
            gone_after: Duration::from_secs(2),
            stationary_after: Duration::from_secs(5),
            still_iou: 0.7,
            moving_iou: 0.5,
            match_distance: 2.5,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Track {
    pub id: u64,
    pub class_id: usize,
    pub label: String,
    /// The last matched box (a coasting track stays where it was last seen).
    pub bbox: BBox,
    /// The last matched detection's score.
    pub score: f32,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub hits: u32,
    pub confirmed: bool,
    /// When it stopped moving; set once it has been still for `stationary_after`.
    pub stationary_since: Option<DateTime<Utc>>,
    history: VecDeque<Seen>,
    /// Matched boxes in a row that disagree with a stationary track's anchor.
    disagreeing: u32,
    /// Updates in a row that did not see it.
    missed: u32,
    /// Its look while last seen whole and uncovered (stationary tracks, with a picture).
    signature: Option<Signature>,
    /// Whether its last sighting was of all of it (not a part seen past something in front).
    whole: bool,
    /// Since when nothing has said it is still there: its last sighting, if every look at its
    /// place since was empty; else the first of the empty looks in a row. None after a look
    /// that was not empty.
    empty_since: Option<DateTime<Utc>>,
}

/// A confirmed track that ended in the last update, and when it was last known present.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ended {
    pub id: u64,
    /// Its last sighting if its place was seen empty, else the end of its coast.
    pub present_until: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    at: DateTime<Utc>,
    bbox: BBox,
    score: f32,
    /// Updates that missed the track just before this one saw it.
    missed_before: u32,
}

impl Track {
    pub fn is_stationary(&self) -> bool {
        self.stationary_since.is_some()
    }

    /// Whether this update's detections included it.
    pub fn seen_at(&self, at: DateTime<Utc>) -> bool {
        self.last_seen == at
    }

    /// Until when it is known to be here, as of `at`: its last sighting while it is unseen and
    /// every look at its place since has been empty (it may have gone), else `at`.
    pub fn present_until(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        if self.empty_since.is_some() && !self.seen_at(at) { self.last_seen } else { at }
    }

    /// The median of its recent boxes, edge by edge: robust to jitter and to a stray box.
    pub fn anchor_box(&self) -> BBox {
        median_box(self.history.iter().map(|s| s.bbox))
    }

    /// Where a moving track should be at `at`: its last box moved on at the speed of its last
    /// two boxes (for at most two seconds ahead); its last box if it has only one.
    pub fn predicted(&self, at: DateTime<Utc>) -> BBox {
        let mut newest = self.history.iter().rev();
        let (Some(&b), Some(&a)) = (newest.next(), newest.next()) else {
            return self.bbox;
        };
        let span = (b.at - a.at).as_seconds_f64();
        if span <= 0.0 {
            return b.bbox;
        }
        let ahead = (at - b.at).as_seconds_f64().clamp(0.0, 2.0) / span;
        let ((ax, ay), (bx, by)) = (a.bbox.anchor(), b.bbox.anchor());
        let (dx, dy) = ((bx - ax) * ahead as f32, (by - ay) * ahead as f32);
        BBox { x1: b.bbox.x1 + dx, y1: b.bbox.y1 + dy, x2: b.bbox.x2 + dx, y2: b.bbox.y2 + dy }
    }

    /// The median of its recent detection scores.
    pub fn median_score(&self) -> f32 {
        let mut scores: Vec<f32> = self.history.iter().map(|s| s.score).collect();
        median(&mut scores)
    }

    fn new(id: u64, at: DateTime<Utc>, d: &Detection) -> Self {
        Self {
            id,
            class_id: d.class_id,
            label: d.label.clone(),
            bbox: d.bbox,
            score: d.score,
            first_seen: at,
            last_seen: at,
            hits: 1,
            confirmed: false,
            stationary_since: None,
            history: VecDeque::from([Seen { at, bbox: d.bbox, score: d.score, missed_before: 0 }]),
            disagreeing: 0,
            missed: 0,
            signature: None,
            whole: true,
            empty_since: Some(at),
        }
    }

    fn hit(&mut self, at: DateTime<Utc>, d: &Detection, config: &TrackerConfig) {
        self.hits += 1;
        self.confirmed |= self.hits >= config.confirm_hits;
        let mut bbox = d.bbox;
        self.whole = true;
        if self.is_stationary() {
            let anchor = self.anchor_box();
            if anchor.iou(&d.bbox) < config.moving_iou && within(&d.bbox, &anchor) {
                // A part of it, the rest covered (a bus sliding in front): seen, where it stood.
                bbox = anchor;
                self.whole = false;
                self.disagreeing = 0;
            } else if anchor.iou(&d.bbox) < config.moving_iou {
                self.disagreeing += 1;
                if self.disagreeing >= 2 {
                    // It moved off: start over from here as a moving object.
                    self.stationary_since = None;
                    self.disagreeing = 0;
                    self.history.clear();
                }
            } else {
                self.disagreeing = 0;
            }
        }
        self.history.push_back(Seen { at, bbox, score: d.score, missed_before: self.missed });
        self.missed = 0;
        self.empty_since = Some(at);
        if self.history.len() > HISTORY {
            self.history.pop_front();
        }
        (self.bbox, self.score, self.last_seen) = (bbox, d.score, at);
        if !self.is_stationary() && self.confirmed {
            let since = still_since(&self.history, config.still_iou);
            if since.is_some_and(|s| (at - s).to_std().unwrap_or_default() >= config.stationary_after) {
                self.stationary_since = since;
            }
        }
    }
}

/// The start of the longest run of recent boxes (at least two, missing at most one detection
/// between them) that all stay close to their own median: when the object stopped.
fn still_since(history: &VecDeque<Seen>, still_iou: f32) -> Option<DateTime<Utc>> {
    let n = history.len();
    (0..n.saturating_sub(1)).find_map(|start| {
        let run = history.range(start..);
        if run.clone().skip(1).map(|s| s.missed_before).sum::<u32>() > 1 {
            return None;
        }
        let median = median_box(run.clone().map(|s| s.bbox));
        run.clone().all(|s| s.bbox.iou(&median) >= still_iou).then(|| history[start].at)
    })
}

/// Whether `part` lies (all but a few pixels' worth) inside `whole`.
fn within(part: &BBox, whole: &BBox) -> bool {
    part.area() > 0.0 && part.intersection(whole).area() >= 0.85 * part.area()
}

/// A configured duration as a span of stream time, saturating (validation keeps them to a day).
pub(crate) fn secs(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

fn median(values: &mut [f32]) -> f32 {
    values.sort_by(f32::total_cmp);
    let (lower, upper) = values.split_at(values.len() / 2);
    match (lower.last(), upper.first()) {
        (Some(below), Some(middle)) if lower.len() == upper.len() => (below + middle) / 2.0,
        (_, Some(middle)) => *middle,
        (_, None) => 0.0,
    }
}

fn median_box(boxes: impl Iterator<Item = BBox>) -> BBox {
    let (mut x1, mut y1, mut x2, mut y2) = (vec![], vec![], vec![], vec![]);
    for b in boxes {
        x1.push(b.x1);
        y1.push(b.y1);
        x2.push(b.x2);
        y2.push(b.y2);
    }
    BBox { x1: median(&mut x1), y1: median(&mut y1), x2: median(&mut x2), y2: median(&mut y2) }
}

/// Size-normalised distance from a track's box to a detection's: bottom centres apart, in
/// units of the track's size, plus how much the size changed (log of the area ratio).
pub fn distance(track: &BBox, detection: &BBox) -> f32 {
    let ((tx, ty), (dx, dy)) = (track.anchor(), detection.anchor());
    let size = track.area().max(1.0).sqrt();
    let moved = (tx - dx).hypot(ty - dy) / size;
    let grew = (detection.area().max(1.0) / track.area().max(1.0)).ln().abs();
    moved + grew
}

/// Maximum-weight assignment of rows to columns; pairs of weight 0 or less are not allowed
/// and come back unassigned. `weights[r][c]`, any shape.
pub fn assign(weights: &[Vec<i64>]) -> Vec<Option<usize>> {
    let rows = weights.len();
    let columns = weights.first().map_or(0, Vec::len);
    if rows == 0 || columns == 0 {
        return vec![None; rows];
    }
    // kuhn_munkres wants no more rows than columns: transpose when needed.
    let transposed = rows > columns;
    let (r, c) = if transposed { (columns, rows) } else { (rows, columns) };
    // A ragged row's missing cells weigh 0: not allowed.
    let weight = |row: usize, column: usize| weights.get(row).and_then(|w| w.get(column)).copied().unwrap_or(0);
    let cell = |i: usize, j: usize| if transposed { weight(j, i) } else { weight(i, j) };
    let values = (0..r).flat_map(|i| (0..c).map(move |j| cell(i, j).max(0))).collect();
    let mut out = vec![None; rows];
    // r * c values and r, c > 0: the matrix cannot be refused; were it, nothing is assigned.
    let Ok(matrix) = pathfinding::matrix::Matrix::from_vec(r, c, values) else { return out };
    let (_, chosen) = pathfinding::kuhn_munkres::kuhn_munkres(&matrix);
    for (i, j) in chosen.into_iter().enumerate() {
        let (row, column) = if transposed { (j, i) } else { (i, j) };
        if let (true, Some(slot)) = (weight(row, column) > 0, out.get_mut(row)) {
            *slot = Some(column);
        }
    }
    out
}

/// The tracks of one camera (or one rule), updated with each frame's detections.
#[derive(Debug, Clone)]
pub struct Tracker {
    config: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
    ended: Vec<Ended>,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self { config, tracks: Vec::new(), next_id: 1, ended: Vec::new() }
    }

    /// The confirmed tracks the last update ended.
    pub fn ended(&self) -> &[Ended] {
        &self.ended
    }

    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    /// New settings from the next update on; the tracks stay (a reload).
    pub fn reconfigure(&mut self, config: TrackerConfig) {
        self.config = config;
    }

    /// Takes one frame's detections at stream time `at` (later than the previous update's),
    /// with the frame's picture where there is one.
    pub fn update(&mut self, at: DateTime<Utc>, detections: &[Detection], view: Option<&View>) {
        self.ended.clear();
        let mut matched_detection = vec![false; detections.len()];
        let mut labels: Vec<&str> = detections.iter().map(|d| d.label.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        let (moving_iou, gate) = (self.config.moving_iou, self.config.match_distance);
        for label in labels {
            let dets = positions(detections, |d| d.label == label);
            // Stage 1: stationary tracks by IoU with their anchor box.
            let stationary = positions(&self.tracks, |t| t.label == label && t.is_stationary());
            self.match_stage(at, detections, &dets, &stationary, &mut matched_detection, Track::anchor_box, |a, d| {
                let iou = a.iou(d);
                (iou >= moving_iou).then_some(iou)
            });
            // Stage 2: moving and tentative tracks by size-normalised distance from where they
            // were heading, gated.
            let rest = positions(&self.tracks, |t| t.label == label && !t.is_stationary() && !t.seen_at(at));
            let heading = |t: &Track| t.predicted(at);
            self.match_stage(at, detections, &dets, &rest, &mut matched_detection, heading, |e, d| {
                let distance = distance(e, d);
                (distance <= gate).then_some(gate - distance)
            });
            // Stage 3: stationary tracks not seen, to free detections overlapping their last box.
            let left = positions(&self.tracks, |t| t.label == label && t.is_stationary() && !t.seen_at(at));
            self.match_stage(
                at,
                detections,
                &dets,
                &left,
                &mut matched_detection,
                |t| t.bbox,
                |last, d| {
                    let distance = distance(last, d);
                    (last.iou(d) > 0.0 && distance <= gate).then_some(gate - distance)
                },
            );
        }
        // Tracks not seen now: tentative ones die; stationary ones once their place has looked
        // empty long enough; confirmed ones after their time unseen.
        let (config, ended) = (&self.config, &mut self.ended);
        self.tracks.retain_mut(|t| {
            if t.seen_at(at) {
                if let (true, Some(signature)) = (t.is_stationary() && t.whole, view.and_then(|v| v.signature(&t.bbox)))
                {
                    t.signature = Some(signature);
                }
                return true;
            }
            t.missed += 1;
            t.disagreeing = 0; // "two in a row": a miss breaks the row
            if !t.confirmed {
                return false;
            }
            if let (true, Some(view)) = (t.is_stationary(), view) {
                let look = view.place(&t.bbox, t.signature.as_ref());
                t.empty_since = if look.place == Place::Empty { t.empty_since.or(Some(at)) } else { None };
                let gone = t.empty_since.is_some_and(|since| at - since >= secs(config.gone_after));
                debug!(
                    track = t.id, label = %t.label, place = ?look.place, gone,
                    contrast = %format_args!("{:.1}", look.contrast),
                    to_background = %format_args!("{:.1}", look.to_background),
                    to_object = %format_args!("{:.1}", look.to_object),
                    "stationary object missed"
                );
                if gone {
                    ended.push(Ended { id: t.id, present_until: t.last_seen });
                    return false;
                }
            } else if t.is_stationary() {
                t.empty_since = None;
            }
            let limit = if t.is_stationary() { config.stationary_max_unseen } else { config.moving_max_unseen };
            let unseen = (at - t.last_seen).to_std().unwrap_or_default();
            if unseen > limit {
                let present_until = if t.is_stationary() { t.last_seen + secs(limit) } else { t.last_seen };
                ended.push(Ended { id: t.id, present_until });
                return false;
            }
            true
        });
        for (detection, matched) in detections.iter().zip(matched_detection) {
            if !matched {
                self.tracks.push(Track::new(self.next_id, at, detection));
                self.next_id += 1;
            }
        }
    }
}

impl Tracker {
    /// One matching stage: `tracks` against the detections of `dets` not matched yet, each pair
    /// weighed by `weigh(reference(track), detection box)` (`None`: not allowed; larger is
    /// better), assigned by Hungarian, and the pairs chosen recorded as hits.
    #[allow(clippy::too_many_arguments)]
    fn match_stage(
        &mut self,
        at: DateTime<Utc>,
        detections: &[Detection],
        dets: &[usize],
        tracks: &[usize],
        matched: &mut [bool],
        reference: impl Fn(&Track) -> BBox,
        weigh: impl Fn(&BBox, &BBox) -> Option<f32>,
    ) {
        let free: Vec<usize> = dets.iter().copied().filter(|&d| matched.get(d) == Some(&false)).collect();
        let weights: Vec<Vec<i64>> = tracks
            .iter()
            .map(|&t| {
                let reference = self.tracks.get(t).map(&reference);
                free.iter()
                    .map(|&d| {
                        let pair = reference.as_ref().zip(detections.get(d));
                        pair.and_then(|(r, detection)| weigh(r, &detection.bbox))
                            .map_or(0, |w| (w as f64 * SCALE) as i64 + 1)
                    })
                    .collect()
            })
            .collect();
        for (row, column) in assign(&weights).into_iter().enumerate() {
            let d = column.and_then(|c| free.get(c)).copied();
            let track = tracks.get(row).and_then(|&t| self.tracks.get_mut(t));
            if let (Some(track), Some(d)) = (track, d)
                && let (Some(detection), Some(matched)) = (detections.get(d), matched.get_mut(d))
            {
                track.hit(at, detection, &self.config);
                *matched = true;
            }
        }
    }
}

/// The positions in `items` of those `keep` accepts.
fn positions<T>(items: &[T], keep: impl Fn(&T) -> bool) -> Vec<usize> {
    items.iter().enumerate().filter(|(_, item)| keep(item)).map(|(i, _)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use proptest::prelude::*;

    fn t(secs: f64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap() + TimeDelta::milliseconds((secs * 1000.0) as i64)
    }

    fn det(x: f32, y: f32, size: f32) -> Detection {
        Detection {
            model: 0,
            class_id: 0,
            label: "motorbike".into(),
            score: 0.9,
            bbox: BBox { x1: x, y1: y, x2: x + size, y2: y + size },
        }
    }

    fn brute_force(weights: &[Vec<i64>]) -> i64 {
        fn go(weights: &[Vec<i64>], row: usize, used: &mut Vec<bool>) -> i64 {
            if row == weights.len() {
                return 0;
            }
            let mut best = go(weights, row + 1, used); // leave this row unassigned
            for c in 0..used.len() {
                if !used[c] && weights[row][c] > 0 {
                    used[c] = true;
                    best = best.max(weights[row][c] + go(weights, row + 1, used));
                    used[c] = false;
                }
            }
            best
        }
        let columns = weights.first().map_or(0, Vec::len);
        go(weights, 0, &mut vec![false; columns])
    }

    proptest! {
        #[test]
        fn hungarian_assignment_equals_brute_force(
            rows in 1usize..5, columns in 1usize..5, seed in proptest::collection::vec(-50i64..100, 25)
        ) {
            let weights: Vec<Vec<i64>> = (0..rows).map(|r| (0..columns).map(|c| seed[r * 5 + c]).collect()).collect();
            let assigned = assign(&weights);
            let total: i64 = assigned.iter().enumerate().filter_map(|(r, c)| c.map(|c| weights[r][c])).sum();
            let mut columns_used: Vec<usize> = assigned.iter().flatten().copied().collect();
            columns_used.sort_unstable();
            columns_used.dedup();
            prop_assert_eq!(columns_used.len(), assigned.iter().flatten().count(), "a column assigned twice");
            prop_assert_eq!(total, brute_force(&weights));
        }
    }

    #[test]
    fn a_new_track_is_confirmed_after_hits_and_a_tentative_one_dies_on_a_miss() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        tracker.update(t(0.0), &[det(10.0, 10.0, 20.0)], None);
        tracker.update(t(0.5), &[], None);
        assert!(tracker.tracks().is_empty(), "tentative track survived a miss");
        for i in 0..3 {
            tracker.update(t(1.0 + i as f64 * 0.5), &[det(10.0 + i as f32 * 15.0, 10.0, 20.0)], None);
        }
        assert_eq!(tracker.tracks().len(), 1);
        assert!(tracker.tracks()[0].confirmed && !tracker.tracks()[0].is_stationary());
        let id = tracker.tracks()[0].id;
        tracker.update(t(3.0), &[], None);
        assert_eq!(tracker.tracks()[0].id, id, "a confirmed track survives a miss");
        tracker.update(t(5.1), &[], None);
        assert!(tracker.tracks().is_empty(), "a moving track dies after 3 s unseen");
    }

    #[test]
    fn a_parked_object_becomes_stationary_since_it_stopped_and_coasts() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        // Moves for 2 s, then stops at x=100 with a pixel of jitter.
        for i in 0..=4 {
            tracker.update(t(i as f64 * 0.5), &[det(i as f32 * 25.0, 50.0, 40.0)], None);
        }
        for i in 5..=20 {
            let jitter = if i % 2 == 0 { 1.0 } else { -1.0 };
            tracker.update(t(i as f64 * 0.5), &[det(100.0 + jitter, 50.0, 40.0)], None);
        }
        let track = &tracker.tracks()[0];
        assert_eq!(tracker.tracks().len(), 1);
        let since = track.stationary_since.expect("stationary after 5 s still");
        assert!((since - t(2.0)).num_milliseconds().abs() <= 500, "stationary since {since}, stopped at 2 s");
        tracker.update(t(40.0), &[], None);
        assert_eq!(tracker.tracks().len(), 1, "coasts 30 s unseen");
        tracker.update(t(71.0), &[], None);
        assert!(tracker.tracks().is_empty(), "gone after 60 s unseen");
    }

    #[test]
    fn a_parked_object_seen_in_part_past_something_sliding_in_front_stays_put() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        for i in 0..=12 {
            tracker.update(t(i as f64 * 0.5), &[det(100.0, 50.0, 40.0)], None);
        }
        let parked = tracker.tracks()[0].id;
        // A box slides over it from the left: the detector sees ever less of its right side.
        for (i, left) in [110.0, 120.0, 125.0, 128.0].into_iter().enumerate() {
            let visible = Detection { bbox: BBox { x1: left, ..det(100.0, 50.0, 40.0).bbox }, ..det(0.0, 0.0, 1.0) };
            tracker.update(t(6.5 + i as f64 * 0.5), &[visible], None);
        }
        let track = tracker.tracks().iter().find(|t| t.id == parked).expect("kept");
        assert!(track.is_stationary(), "a part seen is not a move");
        assert_eq!(track.bbox, det(100.0, 50.0, 40.0).bbox, "it stays where it stood");
        assert_eq!(track.last_seen, t(8.0));
        // Pulling away is still a move: boxes that reach beyond where it stood.
        tracker.update(t(8.5), &[det(120.0, 50.0, 40.0)], None);
        tracker.update(t(9.0), &[det(140.0, 50.0, 40.0)], None);
        assert!(!tracker.tracks().iter().find(|t| t.id == parked).unwrap().is_stationary());
    }

    #[test]
    fn a_passer_over_a_parked_object_does_not_steal_its_track() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        for i in 0..=12 {
            tracker.update(t(i as f64 * 0.5), &[det(100.0, 50.0, 40.0)], None);
        }
        let parked = tracker.tracks()[0].id;
        assert!(tracker.tracks()[0].is_stationary());
        // A passer walks across it; the parked one is hidden while they overlap.
        for i in 0..10 {
            let x = 20.0 + i as f32 * 20.0;
            let at = t(6.5 + i as f64 * 0.5);
            let hidden = (x - 100.0).abs() < 30.0;
            let mut dets = vec![det(x, 55.0, 40.0)];
            if !hidden {
                dets.push(det(100.0, 50.0, 40.0));
            }
            tracker.update(at, &dets, None);
        }
        let still = tracker.tracks().iter().find(|t| t.id == parked).expect("parked track kept");
        assert!(still.is_stationary());
        assert_eq!(still.stationary_since, Some(t(0.0)));
        assert_eq!(still.bbox, det(100.0, 50.0, 40.0).bbox);
    }
}
