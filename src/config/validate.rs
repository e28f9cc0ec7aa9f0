//! Checks on values serde accepted but that make no sense (ranges, duplicates, polygons, files,
//! names that refer to nothing), done while building the runtime types, so nothing that passes
//! `check` can fail later.

use super::{
    Camera, CameraConfig, CameraUrl, Config, Filter, HealthConfig, HealthSettings, Membership, MembershipConfig,
    ModelConfig, MqttProtocol, Place, PlaceConfig, Problem, Rule, RuleConfig, Templates, WindowConfig, Zone,
};
use crate::rules::Schedule;
use crate::track::TrackerConfig;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The longest any duration setting may be: a day (dwell, clear, cooldown) or an hour
/// (network and tracking timers).
const DAY: f64 = 86_400.0;
const HOUR: f64 = 3_600.0;
/// The largest packet MQTT can carry (its remaining length is at most 268,435,455 bytes).
const MQTT_MAX_PACKET: usize = 268_435_455;

/// Checks `config` and builds its cameras; the cameras are complete only if there are no problems.
pub(super) fn validate(config: &Config) -> (Vec<Problem>, Vec<Arc<Camera>>) {
    let mut v = Validator::default();
    check_topic_level(&mut v, "device.id", &config.device.id);
    if config.device.state_dir.as_os_str().is_empty() {
        v.problem("device.state_dir", "required: a directory for open incidents and cooldowns");
    }

    let models = config.all_models();
    for model in &models {
        check_model(&mut v, model);
    }
    let model_names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
    for (name, m) in &config.models {
        check_topic_level(&mut v, &format!("models.{name}"), name);
        if !m.name.is_empty() && m.name != *name {
            v.problem(format!("models.{name}.name"), "the table's own name is the model's name: leave this out");
        }
    }
    if let Some(first) = models.first()
        && config.models.contains_key(&first.name)
    {
        v.problem(format!("models.{}", first.name), "has the name of [model]: give one of them another name");
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
    } else if mqtt.keep_alive_secs == 0 && mqtt.protocol == MqttProtocol::V5 {
        v.problem("mqtt.keep_alive_secs", "0 (off) needs mqtt.protocol = \"3.1.1\"; with MQTT 5 use 5..=65535");
    }
    let set = |p: &std::path::PathBuf| !p.as_os_str().is_empty();
    for (key, path) in [("ca_file", &mqtt.ca_file), ("cert_file", &mqtt.cert_file), ("key_file", &mqtt.key_file)] {
        if set(path)
            && let Err(e) = std::fs::read(path)
        {
            v.problem(format!("mqtt.{key}"), format!("cannot read {}: {e}", path.display()));
        }
    }
    if set(&mqtt.cert_file) != set(&mqtt.key_file) {
        v.problem("mqtt.key_file", "cert_file and key_file go together");
    }
    if set(&mqtt.cert_file) && !set(&mqtt.ca_file) {
        v.problem("mqtt.ca_file", "required with cert_file: a client certificate is only sent over TLS");
    }
    if mqtt.heartbeat_secs > 86_400 {
        v.problem(
            "mqtt.heartbeat_secs",
            format!("{} is above a day (86400); 0 turns heartbeats off", mqtt.heartbeat_secs),
        );
    }
    if mqtt.max_packet_bytes < 64 * 1024 {
        v.problem("mqtt.max_packet_bytes", "must be at least 65536: reports carry JPEG snapshots");
    }
    if mqtt.max_packet_bytes > MQTT_MAX_PACKET {
        v.problem(
            "mqtt.max_packet_bytes",
            format!("{} is above MQTT's largest packet, {MQTT_MAX_PACKET}", mqtt.max_packet_bytes),
        );
    }
    if mqtt.password.is_empty() != mqtt.username.is_empty() && !mqtt.password.is_empty() {
        v.problem("mqtt.password", "set without mqtt.username");
    }
    if let Some(path) = mqtt.password_path() {
        if !mqtt.password.is_empty() {
            v.problem("mqtt.password_file", "set together with mqtt.password: use one");
        } else if mqtt.username.is_empty() {
            v.problem("mqtt.password_file", "set without mqtt.username");
        }
        if let Err(e) = super::read_password(&path) {
            v.problem("mqtt.password_file", format!("cannot read {}: {e}", path.display()));
        }
    }

    if !(1..=100).contains(&config.snapshot.jpeg_quality) {
        v.problem("snapshot.jpeg_quality", format!("{} is outside 1..=100", config.snapshot.jpeg_quality));
    }
    if config.snapshot.max_width != 0 && config.snapshot.max_width < 160 {
        v.problem("snapshot.max_width", "must be 0 (the frame's width) or at least 160");
    }
    let evidence = &config.evidence;
    v.range("evidence.pre_secs", evidence.pre_secs, 0.0, 600.0);
    v.range("evidence.post_secs", evidence.post_secs, 0.0, 600.0);
    if v.range_open("evidence.max_secs", evidence.max_secs, 0.0, 600.0) && evidence.post_secs > evidence.max_secs {
        v.problem("evidence.post_secs", "must be at most evidence.max_secs");
    }
    if evidence.max_bytes < 1 << 20 {
        v.problem("evidence.max_bytes", "must be at least 1048576 (1 MiB): one clip is a few MB");
    }
    v.range_open("evidence.max_age_days", evidence.max_age_days, 0.0, 3650.0);
    if config.outbox.max_bytes < 1 << 20 {
        v.problem(
            "outbox.max_bytes",
            "must be at least 1048576 (1 MiB): a report with its snapshot can be hundreds of KB",
        );
    }
    if !(1 << 20..=16 << 30).contains(&config.outbox.memory_bytes) {
        v.problem(
            "outbox.memory_bytes",
            format!("{} is outside 1048576 (1 MiB) ..= 17179869184 (16 GiB)", config.outbox.memory_bytes),
        );
    }
    if config.outbox.min_free_bytes > 1 << 40 {
        v.problem("outbox.min_free_bytes", format!("{} is above 1 TiB", config.outbox.min_free_bytes));
    }

    let http = &config.http;
    if !http.listen.is_empty() && http.listen.parse::<std::net::SocketAddr>().is_err() {
        v.problem(
            "http.listen",
            format!("{:?} is not an address:port such as 127.0.0.1:9464 (empty: off)", http.listen),
        );
    }
    v.range_open("http.stuck_after_secs", http.stuck_after_secs, 0.0, HOUR);
    let remote = config.remote.max_command_bytes;
    if !(256..=1 << 20).contains(&remote) {
        v.problem("remote.max_command_bytes", format!("{remote}: from 256 to 1048576"));
    }
    let token = match http.token_path() {
        Some(_) if !http.token.is_empty() => {
            v.problem("http.token_file", "set together with http.token: use one");
            None
        }
        Some(path) => match super::read_password(&path) {
            Ok(token) => Some(token),
            Err(e) => {
                v.problem("http.token_file", format!("cannot read {}: {e}", path.display()));
                None
            }
        },
        None => Some(http.token.expose().to_string()),
    };
    let open = http.listen.parse::<std::net::SocketAddr>().is_ok_and(|a| !a.ip().is_loopback());
    match token {
        Some(t) if t.is_empty() && open => v.problem(
            "http.token",
            format!(
                "required when http.listen ({}) is not a loopback address: set http.token or http.token_file",
                http.listen
            ),
        ),
        Some(t) if !t.is_empty() && t.chars().count() < 16 => v.problem("http.token", "must be 16 characters or more"),
        _ => {}
    }

    let timezone = match config.device.timezone.parse::<chrono_tz::Tz>() {
        Ok(tz) => tz,
        Err(_) => {
            let message =
                format!("{:?} is not an IANA time zone name such as Asia/Ho_Chi_Minh", config.device.timezone);
            v.problem("device.timezone", message);
            chrono_tz::UTC
        }
    };
    let class_names = Arc::new(config.class_names.clone());
    let mut ids = HashSet::new();
    let mut cameras = Vec::new();
    for (i, cam) in config.cameras.iter().enumerate() {
        let at = format!("cameras[{i}]");
        check_topic_level(&mut v, &format!("{at}.id"), &cam.id);
        if !cam.id.is_empty() && !ids.insert(cam.id.as_str()) {
            v.problem(format!("{at}.id"), format!("duplicate camera id {:?}", cam.id));
        }
        if let Some(camera) = camera(&mut v, &at, cam, &class_names, &model_names, timezone) {
            cameras.push(Arc::new(camera));
        }
    }
    (v.problems, cameras)
}

/// One model's settings; `model.key` says where they are in the file.
fn check_model(v: &mut Validator, model: &ModelConfig) {
    let key = &model.key;
    if model.path.as_os_str().is_empty() {
        v.problem(format!("{key}.path"), "required: the ONNX model file");
    } else if !model.path.is_file() {
        v.problem(format!("{key}.path"), format!("no such file: {}", model.path.display()));
    }
    match model.runtime_path() {
        None => v.problem(format!("{key}.runtime"), "required: the ONNX Runtime library (or set ORT_DYLIB_PATH)"),
        Some(p) if !p.is_file() => v.problem(format!("{key}.runtime"), format!("no such file: {}", p.display())),
        Some(_) => {}
    }
    v.range(&format!("{key}.min_score"), model.min_score as f64, 0.0, 1.0);
    v.range(&format!("{key}.nms_iou"), model.nms_iou as f64, 0.0, 1.0);
    if !(1..=16).contains(&model.workers) {
        v.problem(format!("{key}.workers"), format!("{} is outside 1..=16", model.workers));
    }
    if !(1..=64).contains(&model.batch) {
        v.problem(format!("{key}.batch"), format!("{} is outside 1..=64", model.batch));
    }
    if model.threads == 0 {
        v.problem(format!("{key}.threads"), "must be at least 1");
    }
}

/// Takes the camera's credentials from its own keys into `url`, where the URL had none.
fn credentials(v: &mut Validator, at: &str, cam: &CameraConfig, url: &mut CameraUrl) {
    let sources = [!cam.password.is_empty(), !cam.password_file.as_os_str().is_empty(), !cam.password_env.is_empty()];
    if sources.iter().filter(|s| **s).count() > 1 {
        v.problem(format!("{at}.password"), "give one of password, password_file and password_env");
        return;
    }
    if cam.username.is_empty() {
        if sources.iter().any(|s| *s) {
            v.problem(format!("{at}.username"), "required with a password");
        }
        return;
    }
    if !url.username.is_empty() {
        v.problem(format!("{at}.username"), "the URL has credentials already: use one or the other");
        return;
    }
    let password = if !cam.password_file.as_os_str().is_empty() {
        let path = super::credential_path(&cam.password_file);
        match super::read_password(&path) {
            Ok(text) => text,
            Err(e) => return v.problem(format!("{at}.password_file"), format!("cannot read {}: {e}", path.display())),
        }
    } else if !cam.password_env.is_empty() {
        match std::env::var(&cam.password_env) {
            Ok(value) => value,
            Err(_) => return v.problem(format!("{at}.password_env"), format!("${} is not set", cam.password_env)),
        }
    } else {
        cam.password.expose().to_string()
    };
    url.username = cam.username.clone();
    url.password = super::Secret::new(password);
}

fn camera(
    v: &mut Validator,
    at: &str,
    cam: &CameraConfig,
    class_names: &Arc<BTreeMap<String, super::Text>>,
    models: &[String],
    timezone: chrono_tz::Tz,
) -> Option<Camera> {
    let url = match CameraUrl::parse(cam.url.expose()) {
        _ if cam.url.is_empty() => Err("required: rtsp://host[:port]/path".to_string()),
        parsed => parsed,
    };
    let mut url = url.map_err(|message| v.problem(format!("{at}.url"), message)).ok();
    if let Some(url) = &mut url {
        credentials(v, at, cam, url);
    }
    v.range_open(&format!("{at}.detect_fps"), cam.detect_fps, 0.0, 60.0);
    let stall_timeout = v.secs_open(&format!("{at}.stall_timeout_secs"), cam.stall_timeout_secs, HOUR);
    let reconnect_min = v.secs_open(&format!("{at}.reconnect_min_secs"), cam.reconnect_min_secs, HOUR);
    let reconnect_max = v.secs_open(&format!("{at}.reconnect_max_secs"), cam.reconnect_max_secs, HOUR);
    if cam.reconnect_max_secs < cam.reconnect_min_secs {
        v.problem(format!("{at}.reconnect_max_secs"), "must be at least reconnect_min_secs");
    }
    for (k, mask) in cam.masks.iter().enumerate() {
        v.polygon(&format!("{at}.masks[{k}]"), mask);
    }
    for (k, mask) in cam.privacy_masks.iter().enumerate() {
        v.polygon(&format!("{at}.privacy_masks[{k}]"), mask);
    }
    let tracking = tracking(v, &format!("{at}.tracking"), &cam.tracking);
    v.place(&format!("{at}.place"), &cam.place);

    let mut zones = BTreeMap::new();
    for (k, zone) in cam.zones.iter().enumerate() {
        let at = format!("{at}.zones[{k}]");
        if zone.name.is_empty() {
            v.problem(format!("{at}.name"), "required");
        } else if zones.contains_key(&zone.name) {
            v.problem(format!("{at}.name"), format!("duplicate zone name {:?}", zone.name));
        }
        v.polygon(&format!("{at}.polygon"), &zone.polygon);
        let membership = match zone.membership {
            MembershipConfig::BottomCenter => Membership::BottomCenter,
            MembershipConfig::Center => Membership::Center,
            MembershipConfig::Overlap => Membership::Overlap(zone.overlap),
        };
        v.range_open(&format!("{at}.overlap"), zone.overlap, 0.0, 1.0);
        if !(1..=100).contains(&zone.inertia) {
            v.problem(format!("{at}.inertia"), format!("{} is outside 1..=100", zone.inertia));
        }
        v.place(&format!("{at}.place"), &zone.place);
        let built = Zone {
            name: zone.name.clone(),
            polygon: zone.polygon.clone(),
            membership,
            inertia: zone.inertia,
            place: Place::of(&zone.place, &cam.place),
        };
        zones.entry(zone.name.clone()).or_insert(built);
    }

    let mut rules = Vec::new();
    let mut rule_ids = HashSet::new();
    for (j, rule) in cam.rules.iter().enumerate() {
        let at = format!("{at}.rules[{j}]");
        if rule.id.is_empty() {
            v.problem(format!("{at}.id"), "required");
        } else if crate::health::Kind::of(&rule.id).is_some() {
            v.problem(format!("{at}.id"), format!("{:?} is the camera-health case's own id: choose another", rule.id));
        } else if !rule_ids.insert(rule.id.as_str()) {
            v.problem(format!("{at}.id"), format!("duplicate rule id {:?}", rule.id));
        }
        let zone = zones.get(&rule.zone).cloned();
        if zone.is_none() {
            let known: Vec<&String> = zones.keys().collect();
            let message = if rule.zone.is_empty() {
                "required: the name of one of this camera's zones".into()
            } else {
                format!("no zone {:?} on this camera (it has {known:?})", rule.zone)
            };
            v.problem(format!("{at}.zone"), message);
        }
        if let Some(built) = self::rule(v, &at, rule, zone, models, timezone).filter(|_| rule.enabled) {
            rules.push(Arc::new(built));
        }
    }
    Some(Camera {
        id: cam.id.clone(),
        name: cam.display_name().to_string(),
        location: cam.location.clone(),
        url: url?,
        transport: cam.transport,
        decode: cam.decode,
        detect_fps: cam.detect_fps,
        stall_timeout,
        reconnect_min,
        reconnect_max,
        masks: cam.masks.clone(),
        privacy_masks: cam.privacy_masks.clone(),
        tracking,
        place: Place::of(&PlaceConfig::default(), &cam.place),
        health: health(v, &format!("{at}.health"), &cam.health),
        rules,
        class_names: class_names.clone(),
    })
}

fn health(v: &mut Validator, at: &str, h: &HealthConfig) -> HealthSettings {
    v.range(&format!("{at}.blocked_edges"), h.blocked_edges, 0.0, 1.0);
    v.range(&format!("{at}.moved_likeness"), h.moved_likeness, 0.0, 1.0);
    HealthSettings {
        enabled: h.enabled,
        offline_after: v.secs_open(&format!("{at}.offline_after_secs"), h.offline_after_secs, DAY),
        blocked_after: v.secs(&format!("{at}.blocked_after_secs"), h.blocked_after_secs, DAY),
        moved_after: v.secs(&format!("{at}.moved_after_secs"), h.moved_after_secs, DAY),
        clear_after: v.secs(&format!("{at}.clear_after_secs"), h.clear_after_secs, DAY),
        blocked_edges: h.blocked_edges as f32,
        moved_likeness: h.moved_likeness as f32,
        priority: h.priority,
        respond_within: v.respond_within(at, h.priority, h.response_secs),
    }
}

fn tracking(v: &mut Validator, at: &str, t: &super::TrackingConfig) -> TrackerConfig {
    if !(1..=100).contains(&t.confirm_hits) {
        v.problem(format!("{at}.confirm_hits"), format!("{} is outside 1..=100", t.confirm_hits));
    }
    for (key, value) in [("still_iou", t.still_iou), ("moving_iou", t.moving_iou)] {
        v.range_open(&format!("{at}.{key}"), value, 0.0, 1.0);
    }
    if t.moving_iou >= t.still_iou {
        v.problem(
            format!("{at}.moving_iou"),
            "must be below still_iou, or box jitter flips objects between moving and still",
        );
    }
    v.range_open(&format!("{at}.match_distance"), t.match_distance, 0.0, 100.0);
    TrackerConfig {
        confirm_hits: t.confirm_hits,
        moving_max_unseen: v.secs(&format!("{at}.moving_max_unseen_secs"), t.moving_max_unseen_secs, HOUR),
        stationary_max_unseen: v.secs(&format!("{at}.stationary_max_unseen_secs"), t.stationary_max_unseen_secs, HOUR),
        gone_after: v.secs(&format!("{at}.gone_after_secs"), t.gone_after_secs, HOUR),
        stationary_after: v.secs(&format!("{at}.stationary_after_secs"), t.stationary_after_secs, HOUR),
        still_iou: t.still_iou as f32,
        moving_iou: t.moving_iou as f32,
        match_distance: t.match_distance as f32,
    }
}

fn rule(
    v: &mut Validator,
    at: &str,
    rule: &RuleConfig,
    zone: Option<Zone>,
    models: &[String],
    timezone: chrono_tz::Tz,
) -> Option<Rule> {
    let model = match rule.model.as_str() {
        "" => Some(0),
        name => models.iter().position(|m| m == name),
    };
    if model.is_none() {
        v.problem(format!("{at}.model"), format!("{:?} is not a model of the config (it has {models:?})", rule.model));
    }
    if rule.violation.is_empty() {
        v.problem(format!("{at}.violation"), "required, e.g. \"sidewalk_encroachment\"");
    }
    if rule.classes.is_empty() {
        v.problem(format!("{at}.classes"), "at least one class is required");
    }
    let base = Filter {
        min_score: rule.min_score,
        threshold: rule.threshold,
        min_area: rule.min_area,
        max_area: rule.max_area,
        min_ratio: rule.min_ratio,
        max_ratio: rule.max_ratio,
    };
    v.filter(at, &base);
    for class in rule.filters.keys() {
        if !rule.classes.contains(class) {
            v.problem(
                format!("{at}.filters.{class}"),
                format!("{class:?} is not one of the rule's classes {:?}", rule.classes),
            );
        }
    }
    let mut filters = BTreeMap::new();
    for class in &rule.classes {
        let filter = match rule.filters.get(class) {
            None => base,
            Some(o) => {
                let filter = Filter {
                    min_score: o.min_score.unwrap_or(base.min_score),
                    threshold: o.threshold.unwrap_or(base.threshold),
                    min_area: o.min_area.unwrap_or(base.min_area),
                    max_area: o.max_area.unwrap_or(base.max_area),
                    min_ratio: o.min_ratio.unwrap_or(base.min_ratio),
                    max_ratio: o.max_ratio.unwrap_or(base.max_ratio),
                };
                v.filter(&format!("{at}.filters.{class}"), &filter);
                filter
            }
        };
        filters.insert(class.clone(), filter);
    }
    if !(1..=1000).contains(&rule.min_count) {
        v.problem(format!("{at}.min_count"), format!("{} is outside 1..=1000", rule.min_count));
    }
    let dwell = v.secs(&format!("{at}.dwell_secs"), rule.dwell_secs, DAY);
    let clear_after = v.secs_open(&format!("{at}.clear_after_secs"), rule.clear_after_secs, DAY);
    let cooldown = v.secs(&format!("{at}.cooldown_secs"), rule.cooldown_secs, DAY);
    let update_every = v.secs(&format!("{at}.update_every_secs"), rule.update_every_secs, DAY);
    let respond_within = v.respond_within(at, rule.priority, rule.response_secs);
    let schedule = rule.schedule.as_ref().map(|windows| v.schedule(&format!("{at}.schedule"), windows, timezone));
    let text = &rule.text;
    for (event, t) in [("opened", &text.opened), ("updated", &text.updated), ("resolved", &text.resolved)] {
        for (lang, template) in [("en", &t.en), ("vi", &t.vi)] {
            if let Err(message) = crate::report::check_template(template) {
                v.problem(format!("{at}.text.{event}.{lang}"), message);
            }
        }
    }
    Some(Rule {
        id: rule.id.clone(),
        violation: rule.violation.clone(),
        category: rule.category,
        zone: zone?,
        model: model?,
        classes: rule.classes.clone(),
        filters,
        min_count: rule.min_count,
        dwell,
        clear_after,
        cooldown,
        update_every: (!update_every.is_zero()).then_some(update_every),
        priority: rule.priority,
        respond_within,
        schedule,
        text: Templates { opened: text.opened.clone(), updated: text.updated.clone(), resolved: text.resolved.clone() },
    })
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
    /// A polygon in normalised coordinates with at least 3 points.
    fn polygon(&mut self, path: &str, points: &[[f64; 2]]) {
        if points.len() < 3 {
            self.problem(path, "a polygon needs at least 3 points");
        }
        for (k, [x, y]) in points.iter().enumerate() {
            if !(0.0..=1.0).contains(x) || !(0.0..=1.0).contains(y) {
                self.problem(
                    format!("{path}[{k}]"),
                    format!("[{x}, {y}] is outside 0..1 (coordinates are fractions of the frame)"),
                );
            }
        }
    }
    /// `response_secs` at `at`, else `priority`'s default: above 0, at most 30 days.
    fn respond_within(&mut self, at: &str, priority: super::Priority, response_secs: Option<f64>) -> Duration {
        let secs = response_secs.unwrap_or_else(|| priority.default_response_secs());
        self.secs_open(&format!("{at}.response_secs"), secs, 30.0 * DAY)
    }
    /// Coordinates in range, both or neither.
    fn place(&mut self, at: &str, place: &PlaceConfig) {
        match (place.lat, place.lon) {
            (Some(lat), Some(lon)) => {
                self.range(&format!("{at}.lat"), lat, -90.0, 90.0);
                self.range(&format!("{at}.lon"), lon, -180.0, 180.0);
            }
            (None, None) => {}
            (Some(_), None) => self.problem(format!("{at}.lon"), "required with lat (WGS84 degrees)"),
            (None, Some(_)) => self.problem(format!("{at}.lat"), "required with lon (WGS84 degrees)"),
        }
    }
    /// A rule's weekly windows.
    fn schedule(&mut self, at: &str, windows: &[WindowConfig], tz: chrono_tz::Tz) -> Schedule {
        use crate::rules::schedule::{Window, parse_day, parse_time};
        if windows.is_empty() {
            self.problem(at, "empty: the rule would never be on; leave `schedule` out to keep it on at all hours");
        }
        let mut built = Vec::new();
        for (k, w) in windows.iter().enumerate() {
            let at = format!("{at}[{k}]");
            let mut days = [false; 7];
            if w.days.is_empty() {
                self.problem(format!("{at}.days"), "empty: the window would never start; leave it out for every day");
            }
            for (d, day) in w.days.iter().enumerate() {
                match parse_day(day) {
                    Ok(i) => days.get_mut(i).into_iter().for_each(|on| *on = true),
                    Err(message) => self.problem(format!("{at}.days[{d}]"), message),
                }
            }
            let mut time = |key: &str, text: &str| {
                let parsed = parse_time(text).map_err(|message| self.problem(format!("{at}.{key}"), message));
                parsed.unwrap_or_default()
            };
            let (from, to) = (time("from", &w.from), time("to", &w.to));
            if from == 24 * 60 {
                self.problem(format!("{at}.from"), "24:00 is the end of a day: start at 00:00");
            } else if from == to {
                self.problem(format!("{at}.to"), "equals `from`: for a whole day use from = \"00:00\", to = \"24:00\"");
            }
            built.push(Window { days, from, to });
        }
        Schedule::new(built, tz)
    }
    fn filter(&mut self, at: &str, f: &Filter) {
        self.range(&format!("{at}.min_score"), f.min_score as f64, 0.0, 1.0);
        self.range(&format!("{at}.threshold"), f.threshold as f64, 0.0, 1.0);
        self.range(&format!("{at}.min_area"), f.min_area, 0.0, 1.0);
        self.range(&format!("{at}.max_area"), f.max_area, 0.0, 1.0);
        if f.max_area < f.min_area {
            self.problem(format!("{at}.max_area"), "must be at least min_area");
        }
        self.range(&format!("{at}.min_ratio"), f.min_ratio, 0.0, 1000.0);
        self.range_open(&format!("{at}.max_ratio"), f.max_ratio, 0.0, 1000.0);
        if f.max_ratio < f.min_ratio {
            self.problem(format!("{at}.max_ratio"), "must be at least min_ratio");
        }
    }
}
