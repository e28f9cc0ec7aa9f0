//! Which frames a report shows. Per rule, while objects are present in its zone, this keeps
//! the frame where they were first seen and the frame that shows them best since the rule's
//! last report: the highest summed score with no object cut by the frame's edge. `opened` and
//! `updated` reports show that best frame (and `opened` the first-seen one too, so the IOC
//! sees how long they have been there); `resolved` shows the cleared scene as it is now.
//!
//! Frames are shared (`Arc`), so keeping two per rule costs no copy.

use crate::decode::Frame;
use crate::detect::{BBox, Detection};
use crate::rules::{CameraRules, EventKind, IncidentEvent, IncidentObject};
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

    fn blur(&self, detections: &[Detection]) -> Vec<BBox> {
        detections.iter().filter(|d| self.blur_classes.contains(&d.label)).map(|d| d.bbox).collect()
    }

    /// Notes what each of `rules` saw in `frame` (call it after `rules.observe`).
    pub fn see(&mut self, frame: &Arc<Frame>, detections: &[Detection], rules: &CameraRules) {
        let blur = self.blur(detections);
        for (rule_id, open, objects) in rules.present() {
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
            // Ties go to the later frame: the same scene, more recent.
            if kept.best.as_ref().is_none_or(|(best, _)| quality >= *best) {
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
        let main = kept.best.take().map(|(_, shot)| shot);
        let first = kept.first.take().filter(|_| event.kind == EventKind::Opened);
        let main = main.unwrap_or_else(now);
        let first_seen = first.filter(|f| f.frame.at < main.frame.at);
        Shots { main, first_seen }
    }
}

fn cut(b: &BBox, frame: &Frame) -> bool {
    b.x1 < EDGE_PX || b.y1 < EDGE_PX || b.x2 > frame.width as f32 - EDGE_PX || b.y2 > frame.height as f32 - EDGE_PX
}
