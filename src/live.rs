//! The technician's live view: each camera's latest sampled frame and what its rules see in
//! it (boxes, tracks, zones, each rule's state), served by [`crate::http`] at `/cameras/{id}`.
//!
//! It costs nothing while nobody watches: a camera's rules task keeps its latest view only
//! while a viewer has asked within [`WATCHED_FOR`], and a picture (JPEG) is made only when a
//! viewer asks for one. The page draws boxes and zones itself, over the picture.

use crate::decode::Frame;
use crate::detect::{BBox, Detection};
use crate::rules::RuleView;
use crate::telemetry::Counter;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long after a viewer's last request a camera keeps its view up to date.
pub const WATCHED_FOR: Duration = Duration::from_secs(5);

/// Widest picture the live view sends; the page scales it.
const PICTURE_WIDTH: u32 = 960;

/// One camera's live view.
#[derive(Debug, Default)]
pub struct LiveView {
    asked: Mutex<Option<Instant>>,
    latest: Mutex<Option<Arc<Seen>>>,
    /// Frames kept for a viewer, and pictures encoded for one: both stay 0 while nobody watches.
    pub views_kept: Counter,
    pub pictures: Counter,
}

/// A frame as the rules saw it.
#[derive(Debug)]
pub struct Seen {
    pub frame: Arc<Frame>,
    pub detections: Vec<Detection>,
    pub rules: Vec<RuleView>,
    /// The camera's masks: detections whose anchor is inside one are ignored.
    pub masks: Vec<Vec<[f64; 2]>>,
    /// What every picture of this camera blurs: its privacy masks, and the boxes of
    /// `snapshot.blur_classes`.
    pub privacy_masks: Vec<Vec<[f64; 2]>>,
    pub blur: Vec<BBox>,
}

impl LiveView {
    /// Whether a viewer has asked lately: only then is the view kept.
    pub fn watched(&self) -> bool {
        lock(&self.asked).is_some_and(|asked| asked.elapsed() < WATCHED_FOR)
    }

    /// The latest view, noting that someone watches.
    pub fn ask(&self) -> Option<Arc<Seen>> {
        *lock(&self.asked) = Some(Instant::now());
        lock(&self.latest).clone()
    }

    pub fn put(&self, seen: Seen) {
        self.views_kept.inc();
        *lock(&self.latest) = Some(Arc::new(seen));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The view as the page reads it: boxes and polygons as fractions of the frame.
pub fn json(seen: &Seen) -> serde_json::Value {
    let (w, h) = (seen.frame.width.max(1) as f32, seen.frame.height.max(1) as f32);
    let unit =
        |b: &BBox| [b.x1 / w, b.y1 / h, b.x2 / w, b.y2 / h].map(|v| (v.clamp(0.0, 1.0) * 10_000.0).round() / 10_000.0);
    let rules: Vec<serde_json::Value> = (seen.rules.iter())
        .map(|r| {
            let tracks: Vec<serde_json::Value> = (r.tracks.iter())
                .map(|t| {
                    serde_json::json!({
                        "id": t.id, "class": t.class, "score": (t.score * 100.0).round() / 100.0,
                        "box": unit(&t.bbox), "stationary": t.stationary, "in_zone": t.in_zone,
                        "dwell_secs": t.dwell_secs.map(|s| (s * 10.0).round() / 10.0),
                    })
                })
                .collect();
            serde_json::json!({
                "id": r.id, "zone": r.zone, "polygon": r.polygon, "state": r.state, "present": r.present,
                "min_count": r.min_count, "dwell_secs": r.dwell_secs,
                "longest_dwell_secs": (r.longest_dwell_secs * 10.0).round() / 10.0,
                "incident_id": r.incident_id, "since": r.since.map(crate::report::timestamp), "tracks": tracks,
            })
        })
        .collect();
    let detections: Vec<serde_json::Value> = (seen.detections.iter())
        .map(|d| serde_json::json!({ "class": d.label, "score": (d.score * 100.0).round() / 100.0, "box": unit(&d.bbox) }))
        .collect();
    serde_json::json!({
        "at": crate::report::timestamp(seen.frame.at),
        "frame_size": [seen.frame.width, seen.frame.height],
        "masks": seen.masks,
        "privacy_masks": seen.privacy_masks,
        "detections": detections,
        "rules": rules,
    })
}

/// The frame as a JPEG, its privacy masks and blurred classes blurred as in every report.
/// Counted in `view.pictures`.
pub fn picture(view: &LiveView, seen: &Seen) -> Result<Vec<u8>, String> {
    view.pictures.inc();
    blurred_jpeg(&seen.frame, &seen.privacy_masks, &seen.blur, PICTURE_WIDTH, 75)
}

/// `frame` as a JPEG at most `max_width` wide, with `privacy_masks` and the boxes `blur` (of
/// `snapshot.blur_classes`) blurred: a picture of a camera that is not a report's snapshot
/// (the live view, a tuning report's).
pub fn blurred_jpeg(
    frame: &Frame,
    privacy_masks: &[Vec<[f64; 2]>],
    blur: &[BBox],
    max_width: u32,
    quality: u8,
) -> Result<Vec<u8>, String> {
    use crate::report::snapshot;
    let mut rgb = frame.to_rgb();
    snapshot::blur_polygons(&mut rgb, privacy_masks);
    let (w, h) = (frame.width.max(1) as f64, frame.height.max(1) as f64);
    let boxes: Vec<Vec<[f64; 2]>> = (blur.iter())
        .map(|b| {
            let (x1, y1, x2, y2) = (b.x1 as f64 / w, b.y1 as f64 / h, b.x2 as f64 / w, b.y2 as f64 / h);
            vec![[x1, y1], [x2, y1], [x2, y2], [x1, y2]]
        })
        .collect();
    snapshot::blur_polygons(&mut rgb, &boxes);
    let (rgb, _) = snapshot::fit_width(rgb, max_width);
    snapshot::encode_jpeg(&rgb, quality).map_err(|e| e.to_string())
}

/// Writes zone `zone` of camera `camera` as `polygon` into the overlay at `path`, keeping what
/// else it says.
pub fn save_zone(path: &Path, camera: &str, zone: &str, polygon: &[[f64; 2]]) -> Result<(), String> {
    edit_overlay(path, camera, |cam| {
        let z = item(cam, "zones", "name", zone)?;
        z.insert("polygon".into(), toml_polygon(polygon));
        Ok(())
    })
}

/// Writes camera `camera`'s masks as `masks` (all of them) into the overlay at `path`.
pub fn save_masks(path: &Path, camera: &str, masks: &[Vec<[f64; 2]>]) -> Result<(), String> {
    edit_overlay(path, camera, |cam| {
        cam.insert("masks".into(), toml::Value::Array(masks.iter().map(|m| toml_polygon(m)).collect()));
        Ok(())
    })
}

fn toml_polygon(polygon: &[[f64; 2]]) -> toml::Value {
    use toml::Value;
    Value::Array(polygon.iter().map(|[x, y]| Value::Array(vec![Value::from(*x), Value::from(*y)])).collect())
}

/// The item of the array `key` in `table` whose `id_key` is `id`, made if missing.
pub fn item<'a>(table: &'a mut toml::Table, key: &str, id_key: &str, id: &str) -> Result<&'a mut toml::Table, String> {
    use toml::{Table, Value};
    let array = table.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(items) = array else { return Err(format!("{key} is not an array of tables")) };
    let found = items.iter().position(|v| v.get(id_key).and_then(Value::as_str) == Some(id));
    let index = match found {
        Some(i) => i,
        None => {
            items.push(Value::Table(Table::from_iter([(id_key.to_string(), Value::from(id))])));
            items.len() - 1
        }
    };
    items.get_mut(index).and_then(Value::as_table_mut).ok_or_else(|| format!("{key} is not an array of tables"))
}

/// Changes camera `camera`'s table in the overlay at `path` by `change`, keeping what else it
/// says; the write is atomic (a new file renamed over the old).
fn edit_overlay(
    path: &Path,
    camera: &str,
    change: impl FnOnce(&mut toml::Table) -> Result<(), String>,
) -> Result<(), String> {
    let (_, text) = changed_overlay(path, |overlay| change(camera_table(overlay, camera)?))?;
    write_overlay(path, &text)
}

/// The overlay at `path` as it is (`None`: there is none) and its text once `change`d, one
/// revision on (see [`overlay_revision`]).
pub fn changed_overlay(
    path: &Path,
    change: impl FnOnce(&mut toml::Table) -> Result<(), String>,
) -> Result<(Option<String>, String), String> {
    let before = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let text = before.clone().unwrap_or_default();
    let mut overlay: toml::Table = text.parse().map_err(|e| format!("{} is not TOML: {e}", path.display()))?;
    change(&mut overlay)?;
    let revision = revision_of(&text) + 1;
    let text = format!(
        "# fieldwatch overlay, revision {revision}: changes made while it runs (the workbench, remote commands), laid over the config file.\n{}",
        toml::to_string(&overlay).map_err(|e| e.to_string())?
    );
    Ok((before, text))
}

/// Camera `camera`'s table in `overlay`, made if missing.
pub fn camera_table<'a>(overlay: &'a mut toml::Table, camera: &str) -> Result<&'a mut toml::Table, String> {
    item(overlay, "cameras", "id", camera)
}

/// Writes `text` as the overlay at `path`, atomically (a new file renamed over the old).
pub fn write_overlay(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let part = path.with_extension("toml.part");
    std::fs::write(&part, text).map_err(|e| format!("writing {}: {e}", part.display()))?;
    std::fs::rename(&part, path).map_err(|e| format!("renaming to {}: {e}", path.display()))
}

/// How many changes were saved into the overlay at `path` (its first line says; 0: none).
pub fn overlay_revision(path: &Path) -> u64 {
    std::fs::read_to_string(path).map_or(0, |text| revision_of(&text))
}

fn revision_of(text: &str) -> u64 {
    let first = text.lines().next().unwrap_or_default();
    let after = first.strip_prefix("# fieldwatch overlay, revision ").unwrap_or_default();
    after.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Rounds a point to 4 decimals (a tenth of a pixel at 4K): what the editor shows and saves.
pub fn round_point([x, y]: [f64; 2]) -> [f64; 2] {
    [(x * 10_000.0).round() / 10_000.0, (y * 10_000.0).round() / 10_000.0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_zone_lands_in_the_overlay_beside_what_it_had_and_the_config_reads_it() {
        let dir = std::env::temp_dir().join(format!("fw-overlay-{}", uuid::Uuid::new_v4()));
        let path = dir.join("overlay.toml");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, "[[cameras]]\nid = \"cam-1\"\n[[cameras.rules]]\nid = \"r\"\nthreshold = 0.7\n").unwrap();
        save_zone(&path, "cam-1", "sidewalk", &[[0.1, 0.5], [0.9, 0.5], [0.9, 1.0]]).unwrap();
        save_zone(&path, "cam-2", "road", &[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]).unwrap();
        save_zone(&path, "cam-1", "sidewalk", &[[0.2, 0.5], [0.8, 0.5], [0.8, 1.0]]).unwrap();
        save_masks(&path, "cam-2", &[vec![[0.0, 0.0], [0.1, 0.0], [0.1, 0.1]]]).unwrap();
        let tree: serde_json::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(tree["cameras"][0]["rules"][0]["threshold"], 0.7);
        assert_eq!(tree["cameras"][0]["zones"][0]["name"], "sidewalk");
        assert_eq!(tree["cameras"][0]["zones"][0]["polygon"], serde_json::json!([[0.2, 0.5], [0.8, 0.5], [0.8, 1.0]]));
        assert_eq!(tree["cameras"][0]["zones"].as_array().unwrap().len(), 1);
        assert_eq!(tree["cameras"][1]["zones"][0]["name"], "road");
        assert_eq!(tree["cameras"][1]["masks"], serde_json::json!([[[0.0, 0.0], [0.1, 0.0], [0.1, 0.1]]]));
        std::fs::remove_dir_all(&dir).ok();
    }
}
