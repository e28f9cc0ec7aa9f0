//! Reports: the versioned JSON the IOC receives (`schemas/report.v1.json`), with a generated
//! description and annotated JPEG snapshots.
//!
//! A report is built without its images' bytes in the JSON: they travel beside it ([`Images`])
//! through the outbox, and [`wire`] puts them in when it is sent — inline as base64, on a topic
//! of their own, or not at all — so the outbox can drop images before whole reports.
//!
//! The contract only grows by optional fields; anything else needs `fieldwatch.report/v2`.

mod evidence;
pub mod snapshot;
mod text;

pub use evidence::{Evidence, Shot, Shots};
pub use snapshot::{BOX_COLOUR, LINE, ZONE_COLOUR, annotate, blur_polygons, encode_jpeg, fit_width, header, label};
pub use text::{Description, check_template};

use crate::config::SnapshotMode;
use crate::detect::BBox;
use crate::rules::{EventKind, IncidentEvent, ResolvedBy};
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
    /// Every model's name, as `Config::all_models` lists them: a report names its rule's.
    pub model_names: Vec<String>,
    pub config_version: String,
    /// How snapshots are made (size, quality, privacy masks).
    pub snapshot: SnapshotStyle,
    /// Class names as reports write them (config `class_names`).
    pub class_names: std::sync::Arc<std::collections::BTreeMap<String, crate::config::Text>>,
}

/// How a camera's snapshots are made.
#[derive(Debug, Clone)]
pub struct SnapshotStyle {
    /// `None` makes no images at all.
    pub mode: SnapshotMode,
    /// Widest snapshot in pixels (0: the frame's own width).
    pub max_width: u32,
    pub jpeg_quality: u8,
    /// Crop to the objects (or, with none, the zone) with room around them.
    pub crop: bool,
    /// `opened` reports also show the frame where the objects were first seen.
    pub first_seen: bool,
    /// Polygons (normalised) blurred in every snapshot.
    pub privacy_masks: Vec<Vec<[f64; 2]>>,
    /// Detections of these classes are blurred in every snapshot.
    pub blur_classes: Vec<String>,
}

impl SnapshotStyle {
    /// The style `config` sets, with a camera's privacy masks.
    pub fn new(config: &crate::config::SnapshotConfig, privacy_masks: Vec<Vec<[f64; 2]>>) -> Self {
        Self {
            mode: config.mode,
            max_width: config.max_width,
            jpeg_quality: config.jpeg_quality,
            crop: config.crop,
            first_seen: config.first_seen,
            privacy_masks,
            blur_classes: config.blur_classes.clone(),
        }
    }
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
    /// How soon the city should act: the rule's `urgent`, `high`, `normal` or `low`.
    pub priority: &'static str,
    /// When the city should have acted: `opened_at` plus the rule's response time.
    pub due_at: String,
    /// Whether this report was made at or after `due_at` with the case not yet over; the first
    /// such report is an `updated` one sent at `due_at`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub overdue: bool,
    /// Where the case is (address, ward, WGS84 coordinates): its zone's, else its camera's;
    /// absent when neither says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub place: Option<crate::config::Place>,
    /// When the first object of the case stopped in the zone.
    pub started_at: String,
    /// When the dwell was reached.
    pub opened_at: String,
    /// The frame of this report's snapshot.
    pub observed_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    /// On resolved reports: `clear` (the scene cleared), `config` (its rule or camera was
    /// removed) or `schedule` (the rule's hours ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<&'static str>,
    /// On the `updated` report sent when the camera's rules pause: the camera-health case that
    /// paused them (`camera_offline`, `view_blocked`, `view_moved`); the case stays open as it
    /// was until the view returns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_by: Option<&'static str>,
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
    /// The annotated frame of `observed_at`; absent with `snapshot.mode = "none"` or when the
    /// outbox had to drop it (`snapshot_omitted` says which).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
    /// `opened` only: the frame where the objects were first seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<Snapshot>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_omitted: Option<&'static str>,
    /// `opened` only: the camera's own video around the opening (see [`crate::clip`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidenceClip>,
    /// The JPEGs the snapshots describe, sent by [`wire`].
    #[serde(skip)]
    pub images: Images,
}

/// An evidence clip as a report names it.
#[derive(Debug, Clone, Serialize)]
pub struct EvidenceClip {
    /// Where the box's HTTP endpoint serves it (with the endpoint's token): `/evidence/{report_id}.mp4`.
    pub url: String,
    pub content_type: &'static str,
    pub bytes: u64,
    pub sha256: String,
    /// The wall time of its first frame (a keyframe).
    pub start: String,
    pub duration_secs: f64,
}

impl EvidenceClip {
    pub fn new(report_id: &str, clip: &crate::clip::Clip) -> Self {
        Self {
            url: format!("/evidence/{report_id}.mp4"),
            content_type: "video/mp4",
            bytes: clip.bytes,
            sha256: clip.sha256.clone(),
            start: timestamp(clip.start),
            duration_secs: (clip.duration_secs * 100.0).round() / 100.0,
        }
    }
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

/// An image's description in the JSON; [`wire`] adds `data` (inline) or `topic` (separate).
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
    /// The frame's time.
    pub observed_at: String,
}

/// A report's images as JPEG, kept apart from its JSON until it is sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Images {
    pub snapshot: Option<Vec<u8>>,
    pub first_seen: Option<Vec<u8>>,
}

impl Images {
    pub fn bytes(&self) -> usize {
        self.snapshot.as_ref().map_or(0, Vec::len) + self.first_seen.as_ref().map_or(0, Vec::len)
    }
}

/// Why a report carries no snapshot.
pub const OMITTED_DISABLED: &str = "disabled";
pub const OMITTED_EVICTED: &str = "evicted";
pub const OMITTED_UNENCODABLE: &str = "unencodable";

/// What goes on the wire for one report: its images on their own topics (separate mode), to
/// be sent first, then the report's JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Wire {
    pub images: Vec<(String, Vec<u8>)>,
    pub json: Vec<u8>,
}

/// The report as the IOC receives it, from its queued `json` and `images` (dropped by the
/// outbox if `evicted`). Separate images go to `{snapshots_topic}/{report_id}` and
/// `{snapshots_topic}/{report_id}/first_seen`.
pub fn wire(
    json: &[u8],
    images: &Images,
    evicted: bool,
    mode: SnapshotMode,
    snapshots_topic: &str,
) -> Result<Wire, String> {
    let mut report: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("queued report is not JSON: {e}"))?;
    let mut separate = Vec::new();
    let omitted = match mode {
        _ if evicted => Some(OMITTED_EVICTED),
        SnapshotMode::None => Some(OMITTED_DISABLED),
        SnapshotMode::Inline | SnapshotMode::Separate => None,
    };
    if let Some(why) = omitted {
        let fields = report.as_object_mut().ok_or("queued report is not a JSON object")?;
        fields.remove("snapshot");
        fields.remove("first_seen");
        fields.insert("snapshot_omitted".into(), why.into());
    } else {
        let id = report.get("report_id").and_then(|id| id.as_str()).unwrap_or_default().to_string();
        for (field, jpeg, topic) in [
            ("snapshot", &images.snapshot, format!("{snapshots_topic}/{id}")),
            ("first_seen", &images.first_seen, format!("{snapshots_topic}/{id}/first_seen")),
        ] {
            let (Some(jpeg), Some(described)) = (jpeg, report.get_mut(field)) else { continue };
            if mode == SnapshotMode::Inline {
                described["data"] = base64::engine::general_purpose::STANDARD.encode(jpeg).into();
            } else {
                described["topic"] = topic.clone().into();
                separate.push((topic, jpeg.clone()));
            }
        }
    }
    let json = serde_json::to_vec(&report).map_err(|e| e.to_string())?;
    Ok(Wire { images: separate, json })
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

/// Builds the report for `event` showing `shots` (see [`Evidence`]). CPU-heavy (colour
/// conversion, JPEG): call it from a blocking thread.
pub fn build(origin: &Origin, event: &IncidentEvent, shots: &Shots) -> Report {
    crate::testing::maybe_panic_once("report", &origin.camera_id);
    let style = &origin.snapshot;
    // The report speaks of what its snapshot shows.
    let shown = IncidentEvent { at: shots.main.frame.at, objects: shots.main.objects.clone(), ..event.clone() };
    let (mut images, mut snapshot, mut first_seen) = (Images::default(), None, None);
    let mut omitted = (style.mode == SnapshotMode::None).then_some(OMITTED_DISABLED);
    let mut boxes: Vec<BBox> = shown.objects.iter().map(|o| o.bbox).collect();
    if style.mode != SnapshotMode::None {
        let zone = &shown.rule.zone.polygon;
        let first = shots.first_seen.as_ref().filter(|_| style.first_seen);
        // The two pictures of an opened report are drawn side by side: each is CPU work on the
        // way from an incident opening to its report.
        let (main, first) = std::thread::scope(|s| {
            // A camera-health case shows the last good view where a rule's shows the first sighting.
            let caption =
                if crate::health::Kind::of(&event.rule.id).is_some() { "last good view" } else { "first seen" };
            let first = first.map(|shot| s.spawn(move || (shot.frame.at, picture(origin, zone, shot, caption))));
            let main = picture(origin, zone, &shots.main, "");
            // A drawing that panicked loses its picture, not the report.
            (main, first.and_then(|f| f.join().ok()))
        });
        let (picture, jpeg) = main;
        boxes = picture.boxes;
        match jpeg {
            Ok(jpeg) => {
                snapshot = Some(describe_image(&picture.image, shown.at));
                images.snapshot = Some(jpeg);
                if let Some((at, (picture, Ok(jpeg)))) = first {
                    first_seen = Some(describe_image(&picture.image, at));
                    images.first_seen = Some(jpeg);
                }
            }
            Err(error) => {
                let size = format!("{}x{}", picture.image.width(), picture.image.height());
                tracing::warn!(%error, size, camera = %origin.camera_id, "the snapshot cannot be encoded; the report goes without");
                omitted = Some(OMITTED_UNENCODABLE);
            }
        }
    }
    let rule = &event.rule;
    let due_at = event.opened_at + crate::track::secs(rule.respond_within);
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
        priority: rule.priority.as_str(),
        due_at: timestamp(due_at),
        overdue: event.at >= due_at,
        place: Some(rule.zone.place.clone()).filter(|p| !p.is_empty()),
        started_at: timestamp(event.started_at),
        opened_at: timestamp(event.opened_at),
        observed_at: timestamp(shown.at),
        resolved_at: (event.kind == EventKind::Resolved).then(|| timestamp(event.at)),
        resolved_by: event.resolved_by.map(ResolvedBy::as_str),
        paused_by: event.paused_by,
        duration_secs: ((shown.at - event.started_at).as_seconds_f64() * 10.0).round() / 10.0,
        zone: rule.zone.polygon.clone(),
        objects: shown
            .objects
            .iter()
            .zip(&boxes)
            .map(|(o, b)| ReportObject {
                class: o.label.clone(),
                score: round(o.score, 1000.0),
                bbox: rounded(*b),
                track_id: o.track_id,
                stayed_secs: ((shown.at - o.since).as_seconds_f64() * 10.0).round() / 10.0,
            })
            .collect(),
        description: text::describe(&shown, origin),
        model: ModelInfo { name: origin.model_names.get(event.rule.model).cloned().unwrap_or_default() },
        config_version: origin.config_version.clone(),
        clock_synchronized: crate::clock::is_synchronized(),
        snapshot,
        first_seen,
        snapshot_omitted: omitted,
        evidence: None,
        images,
    }
}

/// A shot drawn and encoded as JPEG.
fn picture(
    origin: &Origin,
    zone: &[[f64; 2]],
    shot: &Shot,
    caption: &str,
) -> (snapshot::Picture, Result<Vec<u8>, image::ImageError>) {
    let picture = snapshot::render(origin, zone, shot, caption);
    let jpeg = encode_jpeg(&picture.image, origin.snapshot.jpeg_quality);
    (picture, jpeg)
}

fn describe_image(image: &image::RgbImage, at: DateTime<Utc>) -> Snapshot {
    Snapshot { content_type: "image/jpeg", width: image.width(), height: image.height(), observed_at: timestamp(at) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued() -> (Vec<u8>, Images) {
        let json = serde_json::json!({
            "report_id": "r1",
            "snapshot": { "content_type": "image/jpeg", "width": 2, "height": 1 },
            "first_seen": { "content_type": "image/jpeg", "width": 2, "height": 1 },
        });
        (serde_json::to_vec(&json).unwrap(), Images { snapshot: Some(vec![1, 2, 3]), first_seen: Some(vec![4]) })
    }

    fn parse(wire: &Wire) -> serde_json::Value {
        serde_json::from_slice(&wire.json).unwrap()
    }

    #[test]
    fn inline_images_go_into_the_json_as_base64() {
        let (json, images) = queued();
        let wire = wire(&json, &images, false, SnapshotMode::Inline, "p/d/c/snapshots").unwrap();
        assert!(wire.images.is_empty());
        let report = parse(&wire);
        assert_eq!(
            (report["snapshot"]["data"].as_str(), report["first_seen"]["data"].as_str()),
            (Some("AQID"), Some("BA=="))
        );
    }

    #[test]
    fn separate_images_go_first_on_topics_the_json_names() {
        let (json, images) = queued();
        let wire = wire(&json, &images, false, SnapshotMode::Separate, "p/d/c/snapshots").unwrap();
        let topics: Vec<&str> = wire.images.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(topics, ["p/d/c/snapshots/r1", "p/d/c/snapshots/r1/first_seen"]);
        assert_eq!(wire.images[0].1, [1, 2, 3]);
        let report = parse(&wire);
        assert_eq!(report["snapshot"]["topic"], "p/d/c/snapshots/r1");
        assert!(report["snapshot"].get("data").is_none());
    }

    #[test]
    fn without_images_the_report_says_why() {
        let (json, images) = queued();
        for (evicted, mode, why) in
            [(false, SnapshotMode::None, OMITTED_DISABLED), (true, SnapshotMode::Inline, OMITTED_EVICTED)]
        {
            let wire = wire(&json, &images, evicted, mode, "s").unwrap();
            let report = parse(&wire);
            assert!(wire.images.is_empty() && report.get("snapshot").is_none() && report.get("first_seen").is_none());
            assert_eq!(report["snapshot_omitted"], why);
        }
    }
}
