//! Checks on values serde accepted but that make no sense (ranges, duplicates, polygons, files),
//! done while building the runtime types, so nothing that passes `check` can fail later.

use super::{Camera, CameraUrl, Config, Problem, Rule};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// The longest any duration setting may be: a day (dwell, clear) or an hour (network timers).
const DAY: f64 = 86_400.0;
const HOUR: f64 = 3_600.0;

/// Checks `config` and builds its cameras; the cameras are complete only if there are no problems.
pub(super) fn validate(config: &Config) -> (Vec<Problem>, Vec<Arc<Camera>>) {
    let mut v = Validator::default();
    check_topic_level(&mut v, "device.id", &config.device.id);

    let model = &config.model;
    if model.path.as_os_str().is_empty() {
        v.problem("model.path", "required: the ONNX model file");
    } else if !model.path.is_file() {
        v.problem("model.path", format!("no such file: {}", model.path.display()));
    }
    match model.runtime_path() {
        None => v.problem("model.runtime", "required: the ONNX Runtime library (or set ORT_DYLIB_PATH)"),
        Some(p) if !p.is_file() => v.problem("model.runtime", format!("no such file: {}", p.display())),
        Some(_) => {}
    }
    v.range("model.min_score", model.min_score as f64, 0.0, 1.0);
    v.range("model.nms_iou", model.nms_iou as f64, 0.0, 1.0);
    if model.threads == 0 {
        v.problem("model.threads", "must be at least 1");
    }

    let mqtt = &config.mqtt;
    if mqtt.host.trim().is_empty() {
        v.problem("mqtt.host", "required");
    }
    if mqtt.port == 0 {
        v.problem("mqtt.port", "must be 1..=65535");
    }
    if mqtt.topic_prefix.is_empty() || mqtt.topic_prefix.contains(['+', '#']) {
        v.problem("mqtt.topic_prefix", "must be non-empty without MQTT wildcards (+, #)");
    }
    if mqtt.keep_alive_secs != 0 && !(5..=65_535).contains(&mqtt.keep_alive_secs) {
        v.problem("mqtt.keep_alive_secs", format!("{} must be 0 (off) or 5..=65535", mqtt.keep_alive_secs));
    }
    if mqtt.max_packet_bytes < 64 * 1024 {
        v.problem("mqtt.max_packet_bytes", "must be at least 65536: reports carry JPEG snapshots");
    }
    if mqtt.password.is_empty() != mqtt.username.is_empty() && !mqtt.password.is_empty() {
        v.problem("mqtt.password", "set without mqtt.username");
    }

    if config.cameras.is_empty() {
        v.problem("cameras", "at least one camera is required");
    }
    let mut ids = HashSet::new();
    let mut cameras = Vec::new();
    for (i, cam) in config.cameras.iter().enumerate() {
        let at = format!("cameras[{i}]");
        check_topic_level(&mut v, &format!("{at}.id"), &cam.id);
        if !cam.id.is_empty() && !ids.insert(cam.id.as_str()) {
            v.problem(format!("{at}.id"), format!("duplicate camera id {:?}", cam.id));
        }
        let url = match CameraUrl::parse(cam.url.expose()) {
            _ if cam.url.is_empty() => Err("required: rtsp://host[:port]/path".to_string()),
            parsed => parsed,
        };
        let url = url.map_err(|message| v.problem(format!("{at}.url"), message)).ok();
        v.range_open(&format!("{at}.detect_fps"), cam.detect_fps, 0.0, 60.0);
        let stall_timeout = v.secs_open(&format!("{at}.stall_timeout_secs"), cam.stall_timeout_secs, HOUR);
        let reconnect_min = v.secs_open(&format!("{at}.reconnect_min_secs"), cam.reconnect_min_secs, HOUR);
        let reconnect_max = v.secs_open(&format!("{at}.reconnect_max_secs"), cam.reconnect_max_secs, HOUR);
        if cam.reconnect_max_secs < cam.reconnect_min_secs {
            v.problem(format!("{at}.reconnect_max_secs"), "must be at least reconnect_min_secs");
        }
        let mut rules = Vec::new();
        let mut rule_ids = HashSet::new();
        for (j, rule) in cam.rules.iter().enumerate() {
            let at = format!("{at}.rules[{j}]");
            if rule.id.is_empty() {
                v.problem(format!("{at}.id"), "required");
            } else if !rule_ids.insert(rule.id.as_str()) {
                v.problem(format!("{at}.id"), format!("duplicate rule id {:?}", rule.id));
            }
            if rule.violation.is_empty() {
                v.problem(format!("{at}.violation"), "required, e.g. \"sidewalk_encroachment\"");
            }
            if rule.classes.is_empty() {
                v.problem(format!("{at}.classes"), "at least one class is required");
            }
            v.range(&format!("{at}.min_score"), rule.min_score as f64, 0.0, 1.0);
            if rule.zone.len() < 3 {
                v.problem(format!("{at}.zone"), "a polygon needs at least 3 points");
            }
            for (k, [x, y]) in rule.zone.iter().enumerate() {
                if !(0.0..=1.0).contains(x) || !(0.0..=1.0).contains(y) {
                    v.problem(
                        format!("{at}.zone[{k}]"),
                        format!("[{x}, {y}] is outside 0..1 (coordinates are fractions of the frame)"),
                    );
                }
            }
            let dwell = v.secs(&format!("{at}.dwell_secs"), rule.dwell_secs, DAY);
            let clear_after = v.secs_open(&format!("{at}.clear_after_secs"), rule.clear_after_secs, DAY);
            rules.push(Arc::new(Rule {
                id: rule.id.clone(),
                violation: rule.violation.clone(),
                category: rule.category,
                classes: rule.classes.clone(),
                min_score: rule.min_score,
                zone: rule.zone.clone(),
                dwell,
                clear_after,
            }));
        }
        if let Some(url) = url {
            cameras.push(Arc::new(Camera {
                id: cam.id.clone(),
                name: cam.display_name().to_string(),
                location: cam.location.clone(),
                url,
                detect_fps: cam.detect_fps,
                stall_timeout,
                reconnect_min,
                reconnect_max,
                rules,
            }));
        }
    }
    (v.problems, cameras)
}

/// Ids become MQTT topic levels: keep them to a safe alphabet.
fn check_topic_level(v: &mut Validator, path: &str, id: &str) {
    if id.is_empty() {
        v.problem(path, "required");
    } else if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
        v.problem(path, format!("{id:?} may contain only letters, digits, '-', '_' and '.'"));
    }
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { path: path.into(), message: message.into() });
    }
    /// `lo <= value <= hi`
    fn range(&mut self, path: &str, value: f64, lo: f64, hi: f64) {
        if !(lo..=hi).contains(&value) {
            self.problem(path, format!("{value} is outside {lo}..={hi}"));
        }
    }
    /// `lo < value <= hi`
    fn range_open(&mut self, path: &str, value: f64, lo: f64, hi: f64) -> bool {
        let ok = value > lo && value <= hi;
        if !ok {
            self.problem(path, format!("{value} must be above {lo} and at most {hi}"));
        }
        ok
    }
    /// Seconds in `0..=max` as a `Duration` (zero, with a problem recorded, when out of range).
    fn secs(&mut self, path: &str, value: f64, max: f64) -> Duration {
        let ok = (0.0..=max).contains(&value);
        if !ok {
            self.problem(path, format!("{value} s is outside 0..={max} s"));
        }
        if ok { Duration::from_secs_f64(value) } else { Duration::ZERO }
    }
    /// Seconds above zero and at most `max`, as a `Duration`.
    fn secs_open(&mut self, path: &str, value: f64, max: f64) -> Duration {
        if self.range_open(path, value, 0.0, max) { Duration::from_secs_f64(value) } else { Duration::ZERO }
    }
}
