//! Which frames a report shows. Per rule, while objects are present in its zone, this keeps
//! the frame where they were first seen and the frame that shows them best since the rule's
//! last report or since they last changed (one came or went): the highest summed score with no
//! object cut by the frame's edge. `opened` and `updated` reports show that best frame if it
//! shows just the event's objects, else the frame the event was decided on (a report never
//! shows an object that has left, nor misses one that came); `opened` shows the first-seen one
//! too, so the IOC sees how long they have been there; `resolved` shows the cleared scene as
//! it is now.
//!
//! Frames are shared (`Arc`), so keeping two per rule costs no copy.

use crate::decode::Frame;
use crate::detect::{BBox, Detection};
use crate::rules::{EventKind, IncidentEvent, IncidentObject};
use std::collections::HashMap;
use std::sync::Arc;

/// A frame to show, with the objects to mark on it and the boxes to blur.
#[derive(Debug, Clone)]
pub struct Shot {
    pub frame: Arc<Frame>,
    pub objects: Vec<IncidentObject>,
    /// Detections of classes that are always blurred (`snapshot.blur_classes`).
    pub blur: Vec<BBox>,
}

/// The frames one report shows.
#[derive(Debug, Clone)]
pub struct Shots {
    pub main: Shot,
    pub first_seen: Option<Shot>,
}

/// A box closer than this to the frame's edge is taken as cut by it.
const EDGE_PX: f32 = 4.0;

#[derive(Debug, Default)]
struct Kept {
    first: Option<Shot>,
    /// The best frame since the last report, and how good it is.
    best: Option<((bool, f32), Shot)>,
    /// Whether the incident has reported since the objects were first seen.
    reported: bool,
}

#[derive(Debug, Default)]
pub struct Evidence {
    blur_classes: Vec<String>,
    by_rule: HashMap<String, Kept>,
}

impl Evidence {
    pub fn new(blur_classes: Vec<String>) -> Self {
        Self { blur_classes, by_rule: HashMap::new() }
    }

    /// The boxes of `detections` of the classes always blurred.
    pub fn blur(&self, detections: &[Detection]) -> Vec<BBox> {
        detections.iter().filter(|d| self.blur_classes.contains(&d.label)).map(|d| d.bbox).collect()
    }

    /// Notes what the rules saw in `frame`: per rule, whether its incident is open and the
    /// objects present (`CameraRules::present`, after `observe`).
    pub fn see<'a>(
        &mut self,
        frame: &Arc<Frame>,
        detections: &[Detection],
        present: impl IntoIterator<Item = (&'a str, bool, &'a [IncidentObject])>,
    ) {
        let blur = self.blur(detections);
        for (rule_id, open, objects) in present {
            if objects.is_empty() {
                if !open {
                    self.by_rule.remove(rule_id); // gone before it became a case
                }
                continue;
            }
            let kept = self.by_rule.entry(rule_id.to_string()).or_default();
            let shot = || Shot { frame: frame.clone(), objects: objects.to_vec(), blur: blur.clone() };
            if kept.first.is_none() && !kept.reported {
                kept.first = Some(shot());
            }
            let quality = (objects.iter().all(|o| !cut(&o.bbox, frame)), objects.iter().map(|o| o.score).sum::<f32>());
            // Ties go to the later frame: the same scene, more recent. Other objects: a new scene.
            let same = |shot: &Shot| same_objects(&shot.objects, objects);
            if kept.best.as_ref().is_none_or(|(best, shot)| !same(shot) || quality >= *best) {
                kept.best = Some((quality, shot()));
            }
        }
    }

    /// The frames for `event`'s report, decided on `frame` with `detections`; afterwards the
    /// rule's best frame starts afresh (or, once resolved, everything it kept is let go).
    pub fn take(&mut self, event: &IncidentEvent, frame: &Arc<Frame>, detections: &[Detection]) -> Shots {
        let blur = self.blur(detections);
        let now = || Shot { frame: frame.clone(), objects: event.objects.clone(), blur };
        if event.kind == EventKind::Resolved {
            self.by_rule.remove(&event.rule.id);
            return Shots { main: now(), first_seen: None };
        }
        let kept = self.by_rule.entry(event.rule.id.clone()).or_default();
        kept.reported = true;
        let main = kept.best.take().map(|(_, shot)| shot).filter(|shot| same_objects(&shot.objects, &event.objects));
        let first = kept.first.take().filter(|_| event.kind == EventKind::Opened);
        let main = main.unwrap_or_else(now);
        let first_seen = first.filter(|f| f.frame.at < main.frame.at);
        Shots { main, first_seen }
    }
}

/// Whether two lists show the same tracked objects.
fn same_objects(a: &[IncidentObject], b: &[IncidentObject]) -> bool {
    a.len() == b.len() && a.iter().all(|o| b.iter().any(|p| p.track_id == o.track_id))
}

fn cut(b: &BBox, frame: &Frame) -> bool {
    b.x1 < EDGE_PX || b.y1 < EDGE_PX || b.x2 > frame.width as f32 - EDGE_PX || b.y2 > frame.height as f32 - EDGE_PX
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeDelta, Utc};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::seconds(1_800_000_000 + secs)
    }

    fn frame(secs: i64) -> Arc<Frame> {
        let (width, height) = (640, 360);
        let chroma = (width / 2 * height / 2) as usize;
        Arc::new(Frame {
            width,
            height,
            y: vec![0; (width * height) as usize],
            u: vec![128; chroma],
            v: vec![128; chroma],
            full_range: true,
            pts_secs: secs as f64,
            at: at(secs),
        })
    }

    fn object(score: f32, x1: f32) -> IncidentObject {
        let bbox = BBox { x1, y1: 200.0, x2: x1 + 50.0, y2: 250.0 };
        IncidentObject { track_id: 1, label: "motorbike".into(), score, bbox, since: at(0) }
    }

    fn event(kind: EventKind, secs: i64, objects: Vec<IncidentObject>) -> IncidentEvent {
        let rule = Arc::new(crate::rules::tests::rule(|_| {}));
        IncidentEvent {
            kind,
            incident_id: uuid::Uuid::nil(),
            rule,
            started_at: at(0),
            opened_at: at(3),
            at: at(secs),
            objects,
            resolved_by: None,
            paused_by: None,
        }
    }

    /// Feeds `seen` (second, objects) for the rule `sidewalk`, its incident open or not.
    fn see(evidence: &mut Evidence, secs: i64, open: bool, objects: &[IncidentObject]) -> Arc<Frame> {
        let f = frame(secs);
        evidence.see(&f, &[], [("sidewalk", open, objects)]);
        f
    }

    #[test]
    fn opened_shows_the_best_uncut_frame_and_the_first_seen_one() {
        let mut evidence = Evidence::new(Vec::new());
        see(&mut evidence, 0, false, &[object(0.7, 100.0)]);
        see(&mut evidence, 1, false, &[object(0.95, 0.0)]); // the best score, but cut by the left edge
        see(&mut evidence, 2, false, &[object(0.8, 100.0)]);
        let now = see(&mut evidence, 3, false, &[object(0.75, 100.0)]);
        let shots = evidence.take(&event(EventKind::Opened, 3, vec![object(0.75, 100.0)]), &now, &[]);
        assert_eq!(shots.main.frame.at, at(2), "the best frame with nothing cut");
        assert_eq!(shots.main.objects[0].score, 0.8, "with the objects as they were in it");
        assert_eq!(shots.first_seen.map(|s| s.frame.at), Some(at(0)));

        // An update shows the best frame since the last report, and no first-seen frame.
        see(&mut evidence, 4, true, &[object(0.7, 100.0)]);
        let now = see(&mut evidence, 5, true, &[object(0.6, 100.0)]);
        let shots = evidence.take(&event(EventKind::Updated, 5, vec![object(0.6, 100.0)]), &now, &[]);
        assert_eq!((shots.main.frame.at, shots.first_seen.is_none()), (at(4), true));

        // Resolved shows the cleared scene, now.
        let now = see(&mut evidence, 9, true, &[]);
        let shots = evidence.take(&event(EventKind::Resolved, 9, Vec::new()), &now, &[]);
        assert_eq!((shots.main.frame.at, shots.main.objects.len()), (at(9), 0));
    }

    #[test]
    fn a_count_going_down_shows_a_frame_without_the_one_that_left() {
        let mut evidence = Evidence::new(Vec::new());
        let two = |score| vec![object(score, 100.0), IncidentObject { track_id: 2, ..object(score, 300.0) }];
        see(&mut evidence, 0, false, &two(0.9));
        let now = see(&mut evidence, 3, false, &two(0.9));
        evidence.take(&event(EventKind::Opened, 3, two(0.9)), &now, &[]);
        see(&mut evidence, 4, true, &two(0.95)); // both, the best summed score
        see(&mut evidence, 5, true, &[object(0.6, 100.0)]); // the second has gone
        let now = see(&mut evidence, 6, true, &[object(0.5, 100.0)]);
        let shots = evidence.take(&event(EventKind::Updated, 6, vec![object(0.5, 100.0)]), &now, &[]);
        assert_eq!(shots.main.frame.at, at(5), "the best frame of the one still there");
        assert_eq!(shots.main.objects.len(), 1);
        // A frame of other objects than the event's (one present, not yet dwelled): now.
        see(&mut evidence, 7, true, &two(0.9));
        let now = see(&mut evidence, 8, true, &two(0.9));
        let shots = evidence.take(&event(EventKind::Updated, 8, vec![object(0.5, 100.0)]), &now, &[]);
        assert_eq!((shots.main.frame.at, shots.main.objects.len()), (at(8), 1));
    }

    #[test]
    fn objects_that_leave_before_a_case_opens_are_forgotten() {
        let mut evidence = Evidence::new(Vec::new());
        see(&mut evidence, 0, false, &[object(0.9, 100.0)]);
        see(&mut evidence, 1, false, &[]); // gone: no case
        see(&mut evidence, 5, false, &[object(0.7, 300.0)]);
        let now = see(&mut evidence, 8, false, &[object(0.7, 300.0)]);
        let shots = evidence.take(&event(EventKind::Opened, 8, vec![object(0.7, 300.0)]), &now, &[]);
        assert_eq!(shots.first_seen.map(|s| s.frame.at), Some(at(5)), "first seen is the new object's arrival");
        assert_eq!(shots.main.frame.at, at(8), "equal frames: the latest");
    }

    #[test]
    fn detections_of_blurred_classes_are_kept_with_each_frame() {
        let mut evidence = Evidence::new(vec!["face".into()]);
        let f = frame(0);
        let face = Detection {
            model: 0,
            class_id: 3,
            label: "face".into(),
            score: 0.9,
            bbox: BBox { x1: 1.0, y1: 2.0, x2: 3.0, y2: 4.0 },
        };
        let car = Detection { label: "car".into(), ..face.clone() };
        evidence.see(&f, &[face.clone(), car], [("sidewalk", false, &[object(0.8, 100.0)][..])]);
        let shots = evidence.take(&event(EventKind::Opened, 0, vec![object(0.8, 100.0)]), &f, &[]);
        assert_eq!(shots.main.blur, vec![face.bbox]);
    }
}
