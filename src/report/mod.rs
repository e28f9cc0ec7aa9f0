//! Reports: the versioned JSON the IOC receives (`schemas/report.v1.json`), with a generated
//! description and an annotated JPEG snapshot carried inside as base64.
//!
//! The contract only grows by optional fields; anything else needs `fieldwatch.report/v2`.

mod snapshot;
mod text;

pub use snapshot::{BOX_COLOUR, LINE, ZONE_COLOUR, annotate, blur_polygons, encode_jpeg, fit_width, header, label};
pub use text::{Description, check_template};

use crate::decode::Frame;
use crate::detect::BBox;
use crate::rules::{EventKind, IncidentEvent};
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

pub const SCHEMA: &str = "fieldwatch.report/v1";

/// Everything about the reporting camera and daemon that goes into each report.
#[derive(Debug, Clone)]
pub struct Origin {
    pub device_id: String,
    pub camera_id: String,
    pub camera_name: String,
    pub camera_location: String,
    pub model_name: String,
    pub config_version: String,
    /// How snapshots are made (size, quality, privacy masks).
    pub snapshot: SnapshotStyle,
    /// Class names as reports write them (config `class_names`).
    pub class_names: std::sync::Arc<std::collections::BTreeMap<String, crate::config::Text>>,
}

/// How a camera's snapshots are made.
#[derive(Debug, Clone)]
pub struct SnapshotStyle {
    /// Widest snapshot in pixels (0: the frame's own width).
    pub max_width: u32,
    pub jpeg_quality: u8,
    /// Polygons (normalised) blurred in every snapshot.
    pub privacy_masks: Vec<Vec<[f64; 2]>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub report_id: String,
    pub incident_id: String,
    pub event: &'static str,
    pub device_id: String,
    pub camera_id: String,
    pub camera_name: String,
    pub camera_location: String,
    pub rule_id: String,
    pub violation: String,
    pub category: String,
    /// When the first object of the case stopped in the zone.
    pub started_at: String,
    /// When the dwell was reached.
    pub opened_at: String,
    /// The frame of this report's snapshot.
    pub observed_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    pub duration_secs: f64,
    pub zone: Vec<[f64; 2]>,
    pub objects: Vec<ReportObject>,
    pub description: Description,
    pub model: ModelInfo,
    pub config_version: String,
    /// Whether the box's clock was synchronised (NTP) when the report was made; absent if it
    /// cannot tell. Times from an unsynchronised clock may be off by the clock's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_synchronized: Option<bool>,
    pub snapshot: Snapshot,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReportObject {
    pub class: String,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: BBox,
    pub track_id: u64,
    pub stayed_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
    /// Base64 (standard alphabet, padded) JPEG.
    pub data: String,
}

impl Report {
    /// The snapshot as JPEG bytes (empty if the base64 is somehow broken).
    pub fn snapshot_jpeg(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(&self.snapshot.data).unwrap_or_default()
    }
}

fn round(v: f32, per: f32) -> f32 {
    (v * per).round() / per
}

/// Boxes to a tenth of a pixel: finer is noise, and it keeps reports readable.
fn rounded(b: BBox) -> BBox {
    BBox { x1: round(b.x1, 10.0), y1: round(b.y1, 10.0), x2: round(b.x2, 10.0), y2: round(b.y2, 10.0) }
}

/// RFC 3339 in the box's local offset, e.g. `2026-11-28T16:45:03.120+07:00`.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.with_timezone(&chrono::Local).to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// Builds the report for `event` from the frame it was decided on. CPU-heavy (colour
/// conversion, JPEG): call it from a blocking thread.
pub fn build(origin: &Origin, event: &IncidentEvent, frame: &Frame) -> Report {
    crate::testing::maybe_panic_once("report", &origin.camera_id);
    let style = &origin.snapshot;
    let mut full = frame.to_rgb();
    blur_polygons(&mut full, &style.privacy_masks);
    // Boxes in the report are pixels of the snapshot, so they scale with it.
    let (mut rgb, scale) = fit_width(full, style.max_width);
    let scaled = |b: BBox| BBox { x1: b.x1 * scale, y1: b.y1 * scale, x2: b.x2 * scale, y2: b.y2 * scale };
    let boxes: Vec<BBox> = event.objects.iter().map(|o| scaled(o.bbox)).collect();
    annotate(&mut rgb, &event.rule.zone.polygon, &boxes);
    let text_height = (rgb.height() as f32 / 30.0).clamp(10.0, 32.0);
    for (o, b) in event.objects.iter().zip(&boxes) {
        let text = format!("{} {:.2} #{}", o.label, o.score, o.track_id);
        label(&mut rgb, &text, b.x1 - LINE as f32, b.y1 - LINE as f32 - text_height - 1.0, text_height);
    }
    let local = event.at.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S");
    header(&mut rgb, &format!("{} · {local}", origin.camera_name));
    let jpeg = encode_jpeg(&rgb, style.jpeg_quality);
    let rule = &event.rule;
    Report {
        schema: SCHEMA,
        report_id: uuid::Uuid::new_v4().to_string(),
        incident_id: event.incident_id.to_string(),
        event: match event.kind {
            EventKind::Opened => "opened",
            EventKind::Updated => "updated",
            EventKind::Resolved => "resolved",
        },
        device_id: origin.device_id.clone(),
        camera_id: origin.camera_id.clone(),
        camera_name: origin.camera_name.clone(),
        camera_location: origin.camera_location.clone(),
        rule_id: rule.id.clone(),
        violation: rule.violation.clone(),
        category: rule.category.as_str().to_string(),
        started_at: timestamp(event.started_at),
        opened_at: timestamp(event.opened_at),
        observed_at: timestamp(event.at),
        resolved_at: (event.kind == EventKind::Resolved).then(|| timestamp(event.at)),
        duration_secs: ((event.at - event.started_at).as_seconds_f64() * 10.0).round() / 10.0,
        zone: rule.zone.polygon.clone(),
        objects: event
            .objects
            .iter()
            .map(|o| ReportObject {
                class: o.label.clone(),
                score: round(o.score, 1000.0),
                bbox: rounded(scaled(o.bbox)),
                track_id: o.track_id,
                stayed_secs: ((event.at - o.since).as_seconds_f64() * 10.0).round() / 10.0,
            })
            .collect(),
        description: text::describe(event, origin),
        model: ModelInfo { name: origin.model_name.clone() },
        config_version: origin.config_version.clone(),
        clock_synchronized: crate::clock::is_synchronized(),
        snapshot: Snapshot {
            content_type: "image/jpeg",
            width: rgb.width(),
            height: rgb.height(),
            data: base64::engine::general_purpose::STANDARD.encode(jpeg),
        },
    }
}
