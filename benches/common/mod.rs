//! What the benchmarks share: a 1080p frame, an `opened` event and the camera it comes from.

use fieldwatch::decode::Frame;
use fieldwatch::report::Origin;
use fieldwatch::rules::{EventKind, IncidentEvent};
use std::sync::Arc;

pub fn frame_1080p() -> Frame {
    let (w, h) = (1920u32, 1080u32);
    let mut y = vec![90u8; (w * h) as usize];
    for (i, v) in y.iter_mut().enumerate() {
        *v = (i % 251) as u8;
    }
    let c = (w.div_ceil(2) * h.div_ceil(2)) as usize;
    Frame {
        width: w,
        height: h,
        y,
        u: vec![110; c],
        v: vec![150; c],
        full_range: false,
        pts_secs: 0.0,
        at: chrono::Utc::now(),
    }
}

/// An `opened` event of a rule on the lower part of the frame, and the camera's `Origin`.
pub fn opened() -> (IncidentEvent, Origin) {
    let event = IncidentEvent {
        kind: EventKind::Opened,
        incident_id: uuid::Uuid::new_v4(),
        rule: Arc::new(fieldwatch::config::Rule {
            id: "sidewalk".into(),
            violation: "sidewalk_encroachment".into(),
            category: fieldwatch::config::Category::UrbanOrder,
            zone: fieldwatch::config::Zone {
                name: "sidewalk".into(),
                polygon: vec![[0.1, 0.5], [0.9, 0.5], [0.9, 1.0]],
                membership: fieldwatch::config::Membership::BottomCenter,
                inertia: 2,
            },
            classes: vec!["red".into()],
            filters: Default::default(),
            min_count: 1,
            dwell: std::time::Duration::from_secs(10),
            clear_after: std::time::Duration::from_secs(5),
            cooldown: std::time::Duration::from_secs(60),
            update_every: None,
            text: Default::default(),
        }),
        started_at: chrono::Utc::now(),
        opened_at: chrono::Utc::now(),
        at: chrono::Utc::now(),
        objects: vec![fieldwatch::rules::IncidentObject {
            track_id: 1,
            label: "motorbike".into(),
            score: 0.9,
            bbox: fieldwatch::detect::BBox { x1: 800.0, y1: 600.0, x2: 1000.0, y2: 800.0 },
            since: chrono::Utc::now(),
        }],
    };
    let origin = Origin {
        device_id: "bench".into(),
        camera_id: "cam".into(),
        camera_name: "cam".into(),
        camera_location: String::new(),
        model_name: "m".into(),
        config_version: "v".into(),
        class_names: Default::default(),
        snapshot: fieldwatch::report::SnapshotStyle::new(&Default::default(), Vec::new()),
    };
    (event, origin)
}
