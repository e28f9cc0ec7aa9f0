//! The short human description in each report, in English and Vietnamese.

use crate::rules::{EventKind, IncidentEvent};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Description {
    pub en: String,
    pub vi: String,
}

/// Names for the violations the city reports most; others are shown as their id.
fn violation_names(violation: &str) -> (String, String) {
    let (en, vi) = match violation {
        "sidewalk_encroachment" => ("Sidewalk encroachment", "Lấn chiếm vỉa hè"),
        "garbage" => ("Garbage dumped", "Đổ rác thải"),
        "obstacle" => ("Obstacle on the road", "Vật cản trên đường"),
        "illegal_parking" => ("Illegal parking", "Đỗ xe sai quy định"),
        other => return (other.replace('_', " "), other.replace('_', " ")),
    };
    (en.into(), vi.into())
}

pub fn describe(event: &IncidentEvent, camera_name: &str, location: &str) -> Description {
    let (what_en, what_vi) = violation_names(&event.rule.violation);
    let place = if location.is_empty() { camera_name.to_string() } else { format!("{camera_name} ({location})") };
    let zone = &event.rule.id;
    match event.kind {
        EventKind::Opened => {
            let secs = (event.at - event.started_at).num_seconds();
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for o in &event.objects {
                *counts.entry(o.label.as_str()).or_default() += 1;
            }
            let objects = counts.iter().map(|(l, n)| format!("{n} {l}")).collect::<Vec<_>>().join(", ");
            Description {
                en: format!("{what_en} at {place}: {objects} in zone '{zone}' for {secs} s."),
                vi: format!("{what_vi} tại {place}: {objects} trong vùng '{zone}' đã {secs} giây."),
            }
        }
        EventKind::Resolved => {
            let secs = (event.at - event.started_at).num_seconds();
            let lower_en = lowercase_first(&what_en);
            let lower_vi = lowercase_first(&what_vi);
            Description {
                en: format!("Cleared: {lower_en} at {place}; zone '{zone}' is free again after {secs} s."),
                vi: format!("Đã hết {lower_vi} tại {place}; vùng '{zone}' đã thông thoáng sau {secs} giây."),
            }
        }
    }
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_lowercase().chain(c).collect()).unwrap_or_default()
}
