//! Rules: decide from detections over time when something is a violation.
//!
//! [`CameraRules`] is one camera's whole logic as a pure unit — detections and stream time in,
//! incident events out — used by the live daemon and by replay alike. Each [`ZoneRule`] in it is
//! a state machine driven by [`ZoneRule::observe`] with the frame's time passed in, so its
//! timing is tested without clocks or sleeps:
//!
//! ```text
//! idle ──object in zone──► candidate ──present for dwell──► open (report "opened")
//!   ▲                          │                                 │
//!   └──── gone for clear_after ┘◄──────── gone for clear_after ──┘ (report "resolved")
//! ```
//!
//! "Present" means at least one object of the rule's classes, scoring at least `min_score`,
//! with its bottom-centre inside the zone. Presence survives gaps shorter than `clear_after`
//! (a missed detection, a passing bus), so flicker neither restarts the dwell nor closes a case.

pub mod zone;

use crate::config::Rule;
use crate::detect::Detection;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Opened,
    Resolved,
}

/// A change in an incident's life, with what is needed to report it.
#[derive(Debug, Clone)]
pub struct IncidentEvent {
    pub kind: EventKind,
    pub incident_id: Uuid,
    pub rule: Arc<Rule>,
    /// First frame in which an object was present.
    pub started_at: DateTime<Utc>,
    /// When the dwell was reached and the incident opened.
    pub opened_at: DateTime<Utc>,
    /// The frame this event was decided on (its snapshot goes into the report).
    pub at: DateTime<Utc>,
    /// Objects present in that frame (none when resolved).
    pub objects: Vec<Detection>,
}

#[derive(Debug, Clone)]
enum State {
    Idle,
    Candidate { started_at: DateTime<Utc>, last_seen: DateTime<Utc> },
    Open { incident_id: Uuid, started_at: DateTime<Utc>, opened_at: DateTime<Utc>, last_seen: DateTime<Utc> },
}

/// One camera's rules: feed it each detected frame in stream-time order.
#[derive(Debug)]
pub struct CameraRules {
    rules: Vec<ZoneRule>,
}

impl CameraRules {
    pub fn new(rules: &[Arc<Rule>]) -> Self {
        Self { rules: rules.iter().cloned().map(ZoneRule::new).collect() }
    }

    /// The events one frame's detections at stream time `at` cause, in rule order.
    pub fn observe(
        &mut self,
        at: DateTime<Utc>,
        detections: &[Detection],
        width: u32,
        height: u32,
    ) -> Vec<IncidentEvent> {
        self.rules.iter_mut().filter_map(|r| r.observe(at, detections, width, height)).collect()
    }
}

#[derive(Debug)]
pub struct ZoneRule {
    rule: Arc<Rule>,
    state: State,
}

impl ZoneRule {
    pub fn new(rule: Arc<Rule>) -> Self {
        Self { rule, state: State::Idle }
    }

    /// The detections that count for this rule in a `width` x `height` frame.
    pub fn matching(&self, detections: &[Detection], width: u32, height: u32) -> Vec<Detection> {
        detections
            .iter()
            .filter(|d| d.score >= self.rule.min_score && self.rule.classes.contains(&d.label))
            .filter(|d| {
                let (ax, ay) = d.bbox.anchor();
                zone::contains(&self.rule.zone, (ax as f64 / width as f64, ay as f64 / height as f64))
            })
            .cloned()
            .collect()
    }

    /// Feeds one frame's detections taken at `at`; returns an event when the incident opens or resolves.
    pub fn observe(
        &mut self,
        at: DateTime<Utc>,
        detections: &[Detection],
        width: u32,
        height: u32,
    ) -> Option<IncidentEvent> {
        let present = self.matching(detections, width, height);
        let secs = |from: DateTime<Utc>| (at - from).as_seconds_f64();
        let clear_after = self.rule.clear_after.as_secs_f64();
        match self.state {
            State::Idle if !present.is_empty() => {
                self.state = State::Candidate { started_at: at, last_seen: at };
                self.open_if_dwelled(at, present)
            }
            State::Idle => None,
            State::Candidate { started_at, .. } if !present.is_empty() => {
                self.state = State::Candidate { started_at, last_seen: at };
                self.open_if_dwelled(at, present)
            }
            State::Candidate { last_seen, .. } => {
                if secs(last_seen) >= clear_after {
                    self.state = State::Idle;
                }
                None
            }
            State::Open { incident_id, started_at, opened_at, .. } if !present.is_empty() => {
                self.state = State::Open { incident_id, started_at, opened_at, last_seen: at };
                None
            }
            State::Open { incident_id, started_at, opened_at, last_seen } => {
                if secs(last_seen) < clear_after {
                    return None;
                }
                self.state = State::Idle;
                Some(IncidentEvent {
                    kind: EventKind::Resolved,
                    incident_id,
                    rule: self.rule.clone(),
                    started_at,
                    opened_at,
                    at,
                    objects: vec![],
                })
            }
        }
    }

    fn open_if_dwelled(&mut self, at: DateTime<Utc>, objects: Vec<Detection>) -> Option<IncidentEvent> {
        let State::Candidate { started_at, .. } = self.state else { return None };
        if (at - started_at).as_seconds_f64() < self.rule.dwell.as_secs_f64() {
            return None;
        }
        let incident_id = Uuid::new_v4();
        self.state = State::Open { incident_id, started_at, opened_at: at, last_seen: at };
        Some(IncidentEvent {
            kind: EventKind::Opened,
            incident_id,
            rule: self.rule.clone(),
            started_at,
            opened_at: at,
            at,
            objects,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::BBox;
    use chrono::TimeDelta;

    fn rule() -> ZoneRule {
        ZoneRule::new(Arc::new(Rule {
            id: "sidewalk".into(),
            violation: "sidewalk_encroachment".into(),
            category: crate::config::Category::UrbanOrder,
            classes: vec!["red".into()],
            min_score: 0.5,
            zone: vec![[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]],
            dwell: std::time::Duration::from_secs(3),
            clear_after: std::time::Duration::from_secs(2),
        }))
    }

    /// A 10x10 object of `label` whose bottom-centre is at (x, y) in a 100x100 frame.
    fn obj(label: &str, score: f32, x: f32, y: f32) -> Detection {
        Detection {
            class_id: 0,
            label: label.into(),
            score,
            bbox: BBox { x1: x - 5.0, y1: y - 10.0, x2: x + 5.0, y2: y },
        }
    }

    /// Runs `frames` (one per half second) and returns (time, kind) of each event.
    fn run(frames: &[Vec<Detection>]) -> Vec<(f64, EventKind)> {
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        let mut r = rule();
        let mut events = vec![];
        for (i, dets) in frames.iter().enumerate() {
            let at = t0 + TimeDelta::milliseconds(500 * i as i64);
            if let Some(e) = r.observe(at, dets, 100, 100) {
                events.push(((e.at - t0).as_seconds_f64(), e.kind));
            }
        }
        events
    }

    #[test]
    fn dwelling_opens_once_and_leaving_resolves_after_clear_after() {
        let mut frames = vec![vec![obj("red", 0.9, 50.0, 80.0)]; 10]; // 0.0 .. 4.5 s
        frames.extend(vec![vec![]; 6]); // 5.0 .. 7.5 s
        assert_eq!(run(&frames), vec![(3.0, EventKind::Opened), (6.5, EventKind::Resolved)]);
    }

    #[test]
    fn passing_through_outside_wrong_class_or_low_score_never_open() {
        let mut frames = vec![vec![obj("red", 0.9, 50.0, 80.0)]; 4]; // 1.5 s in the zone
        frames.extend(vec![vec![]; 6]);
        frames.extend(vec![vec![obj("red", 0.9, 50.0, 30.0)]; 10]); // outside (anchor above the zone)
        frames.extend(vec![vec![obj("green", 0.9, 50.0, 80.0)]; 10]);
        frames.extend(vec![vec![obj("red", 0.3, 50.0, 80.0)]; 10]);
        assert_eq!(run(&frames), vec![]);
    }

    #[test]
    fn short_gaps_neither_restart_the_dwell_nor_resolve() {
        let r = obj("red", 0.9, 50.0, 80.0);
        #[rustfmt::skip]
        let frames = vec![
            vec![r.clone()], vec![r.clone()], vec![], vec![r.clone()], vec![r.clone()], vec![], vec![r.clone()], // 0..3 s
            vec![], vec![], vec![r.clone()], vec![], vec![], vec![], vec![], // gaps of 1 s keep it open
        ];
        assert_eq!(run(&frames), vec![(3.0, EventKind::Opened), (6.5, EventKind::Resolved)]);
    }
}
