//! Loading: the TOML file, the overlay in the state directory, then `FIELDWATCH__SECTION__KEY`
//! environment variables (see `layers`), then validation.
//!
//! serde stops at the first error. To report them all, [`load`] records the error, removes the
//! offending key from the raw tree and deserialises again; because every field has a default, a
//! removed key never causes a new error. Values that are present but wrong (ranges, duplicates,
//! polygons) are checked afterwards by `validate`, except under keys already reported.

use super::{Config, Settings};
use serde_json::Value;
use std::fmt;
use std::path::Path;

/// One problem in the configuration, located by its key path (`cameras[0].rules[1].zone`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {message}")]
    Read { path: String, message: String },
    #[error("config {path} has {} problem(s):\n{}", .problems.len(), .problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: String, problems: Vec<Problem> },
}

/// Reads, merges and validates the configuration at `path`, and builds its runtime types.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    load_with(path, None)
}

/// [`load`] with the overlay `overlay` instead of the one in the state directory (replay's
/// `--overlay`: the changes a technician or the IOC made on a box, tried on a clip elsewhere).
pub fn load_with(path: &Path, overlay: Option<&Path>) -> Result<Settings, ConfigError> {
    let shown = path.display().to_string();
    if !path.is_file() {
        return Err(ConfigError::Read { path: shown, message: "no such file".into() });
    }
    if let Some(overlay) = overlay.filter(|o| !o.is_file()) {
        return Err(ConfigError::Read { path: overlay.display().to_string(), message: "no such overlay file".into() });
    }
    let (merged, overrides, overlay) =
        super::layers::layered(path, overlay).map_err(|message| ConfigError::Read { path: shown.clone(), message })?;
    let settings = settle(merged).map_err(|problems| ConfigError::Invalid { path: shown, problems })?;
    Ok(Settings { path: path.to_path_buf(), overlay, overrides, ..settings })
}

/// The merged tree deserialised and validated: the settings, or every problem found.
fn settle(merged: Value) -> Result<Settings, Vec<Problem>> {
    let (config, mut problems, removed) = deserialize_all(merged);
    let mut cameras = Vec::new();
    if let Some(config) = &config {
        let (found, built) = super::validate::validate(config);
        problems.extend(found.into_iter().filter(|p| !within(p, &removed)));
        cameras = built;
    }
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    match config {
        Some(mut config) if problems.is_empty() => {
            // Read once here (validation checked it can be): the publisher sees only `password`.
            if let Some(path) = config.mqtt.password_path() {
                config.mqtt.password = super::Secret::new(super::read_password(&path).unwrap_or_default());
            }
            if let Some(path) = config.http.token_path() {
                config.http.token = super::Secret::new(super::read_password(&path).unwrap_or_default());
            }
            Ok(Settings {
                config,
                cameras,
                path: Default::default(),
                overlay: Default::default(),
                overrides: Vec::new(),
            })
        }
        _ => Err(problems),
    }
}

/// Deserialises `raw`, collecting every serde error with its path instead of stopping at one.
/// Also returns the paths it removed, whose later validation complaints would only repeat it.
fn deserialize_all(mut raw: Value) -> (Option<Config>, Vec<Problem>, Vec<String>) {
    let (mut problems, mut removed) = (Vec::new(), Vec::new());
    loop {
        match serde_path_to_error::deserialize::<_, Config>(&raw) {
            Ok(config) => return (Some(config), problems, removed),
            Err(err) => {
                let mut path: Vec<Segment> = err.path().iter().filter_map(Segment::from_serde).collect();
                let message = err.inner().to_string();
                // Name the unknown key itself if the path stops at its parent.
                if let Some(field) = unknown_field_name(&message)
                    && !matches!(path.last(), Some(Segment::Key(k)) if *k == field)
                {
                    path.push(Segment::Key(field));
                }
                problems.push(Problem { path: render(&path), message: tidy(&message) });
                // Remove the nearest key at or above the error (`zone[1][0]` → `zone`).
                loop {
                    if path.is_empty() {
                        // Nothing left to remove: the whole document has the wrong shape.
                        return (None, problems, removed);
                    }
                    if remove_key(&mut raw, &path) {
                        removed.push(render(&path));
                        break;
                    }
                    path.pop();
                }
            }
        }
    }
}

/// True if `problem` is at or below one of the `removed` paths.
fn within(problem: &Problem, removed: &[String]) -> bool {
    removed.iter().any(|r| {
        problem.path == *r || problem.path.starts_with(&format!("{r}.")) || problem.path.starts_with(&format!("{r}["))
    })
}

#[derive(Debug, Clone)]
enum Segment {
    Key(String),
    Index(usize),
}

impl Segment {
    fn from_serde(s: &serde_path_to_error::Segment) -> Option<Self> {
        match s {
            serde_path_to_error::Segment::Map { key } => Some(Segment::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
            _ => None,
        }
    }
}

fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Segment::Key(k) if out.is_empty() => out.push_str(k),
            Segment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() { "(top level)".into() } else { out }
}

fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// serde's "unknown field `x`, expected one of `a`, `b`" → "unknown key; expected one of …".
fn tidy(message: &str) -> String {
    match message.strip_prefix("unknown field `").and_then(|r| r.find("`, ").map(|i| &r[i + 3..])) {
        Some(rest) => format!("unknown key; {rest}"),
        None if message.starts_with("unknown field") => "unknown key".into(),
        None => message.to_string(),
    }
}

/// Removes the object key at `path`; false if `path` does not end in a key that exists.
fn remove_key(root: &mut Value, path: &[Segment]) -> bool {
    let Some((Segment::Key(last), parents)) = path.split_last() else { return false };
    let mut node = root;
    for seg in parents {
        let next = match (seg, node) {
            (Segment::Key(k), Value::Object(m)) => m.get_mut(k),
            (Segment::Index(i), Value::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        let Some(next) = next else { return false };
        node = next;
    }
    match node {
        Value::Object(m) => m.remove(last).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn loaded(toml_text: &str) -> Result<Settings, ConfigError> {
        let dir = std::env::temp_dir().join(format!("fw-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, toml_text).unwrap();
        let result = load(&path);
        std::fs::remove_dir_all(&dir).ok();
        result
    }

    fn problems(toml_text: &str) -> Vec<Problem> {
        match loaded(toml_text) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid { problems, .. }) => problems,
            Err(e) => panic!("unexpected {e}"),
        }
    }

    const GOOD: &str = r#"
        [device]
        id = "edge-1"
        [model]
        path = "Cargo.toml"
        runtime = "Cargo.toml"
        [[cameras]]
        id = "cam-1"
        url = "rtsp://127.0.0.1:8554/x"
        [[cameras.zones]]
        name = "sidewalk"
        polygon = [[0.1, 0.5], [0.9, 0.5], [0.9, 1.0]]
        [[cameras.rules]]
        id = "sidewalk"
        violation = "sidewalk_encroachment"
        zone = "sidewalk"
        classes = ["red"]
    "#;

    #[test]
    fn a_good_config_loads_with_defaults() {
        assert_eq!(problems(GOOD), vec![]);
    }

    #[test]
    fn every_kind_of_mistake_is_reported_at_once_with_its_path() {
        let bad = GOOD
            .replace("[device]", "[device]\ncolour = \"blue\"")
            .replace("id = \"cam-1\"", "id = \"cam-1\"\ndetect_fps = \"fast\"")
            .replace("[[0.1, 0.5], [0.9, 0.5], [0.9, 1.0]]", "[[0.1, 0.5], [1.9, 0.5], [0.9, 1.0]]");
        let found: Vec<String> = problems(&bad).iter().map(|p| p.to_string()).collect();
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].starts_with("cameras[0].detect_fps: invalid type"), "{found:#?}");
        assert!(found[1].starts_with("cameras[0].zones[0].polygon[1]:"), "{found:#?}");
        assert!(found[2].starts_with("device.colour: unknown key"), "{found:#?}");
    }

    #[test]
    fn protocol_and_snapshot_mode_take_only_their_values() {
        let bad = GOOD.replace("[device]", "[mqtt]\nprotocol = \"4\"\n[snapshot]\nmode = \"sideways\"\n[device]");
        let found: Vec<String> = problems(&bad).iter().map(|p| p.to_string()).collect();
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].starts_with("mqtt.protocol: unknown variant `4`, expected `5` or `3.1.1`"), "{found:#?}");
        assert!(found[1].starts_with("snapshot.mode: unknown variant `sideways`"), "{found:#?}");
        let no_keep_alive = GOOD.replace("[device]", "[mqtt]\nkeep_alive_secs = 0\n[device]");
        assert!(problems(&no_keep_alive)[0].to_string().starts_with("mqtt.keep_alive_secs: 0 (off) needs"));
        let old_broker = no_keep_alive.replace("[mqtt]", "[mqtt]\nprotocol = \"3.1.1\"");
        assert_eq!(problems(&old_broker), vec![]);
    }

    #[test]
    fn camera_credentials_come_from_one_place_and_name_the_bad_key() {
        let with = |keys: &str| GOOD.replace("id = \"cam-1\"", &format!("id = \"cam-1\"\n{keys}"));
        let first = |keys: &str| problems(&with(keys)).first().map(|p| p.to_string()).unwrap_or_default();
        assert!(first("password = \"x\"").starts_with("cameras[0].username: required with a password"));
        assert!(
            first("username = \"u\"\npassword = \"x\"\npassword_env = \"X\"")
                .starts_with("cameras[0].password: give one of")
        );
        assert!(
            first("username = \"u\"\npassword_file = \"/nonexistent/pw\"")
                .starts_with("cameras[0].password_file: cannot read /nonexistent/pw")
        );
        assert!(
            first("username = \"u\"\npassword_env = \"FIELDWATCH_TEST_UNSET_VAR\"")
                .starts_with("cameras[0].password_env: $FIELDWATCH_TEST_UNSET_VAR is not set")
        );
        assert!(first("transport = \"quic\"").starts_with("cameras[0].transport: unknown variant `quic`"));
        assert!(first("decode = \"some\"").starts_with("cameras[0].decode: unknown variant `some`"));
        let in_url = GOOD
            .replace("rtsp://127.0.0.1", "rtsp://a:b@127.0.0.1")
            .replace("id = \"cam-1\"", "id = \"cam-1\"\nusername = \"u\"");
        assert!(problems(&in_url)[0].to_string().starts_with("cameras[0].username: the URL has credentials already"));
        let good = with("username = \"u\"\npassword = \"p\"\ntransport = \"udp\"\ndecode = \"keyframes\"");
        assert_eq!(problems(&good), vec![]);
    }

    #[test]
    fn errors_inside_arrays_are_reported_once_and_the_rest_still_checked() {
        let bad = GOOD
            .replace("[[0.1, 0.5], [0.9, 0.5], [0.9, 1.0]]", "[[0.1, 0.5], [0.9, \"x\"], [0.9, 1.0]]")
            .replace("id = \"cam-1\"", "id = \"cam 1\"");
        let found: Vec<String> = problems(&bad).iter().map(|p| p.to_string()).collect();
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].starts_with("cameras[0].id: \"cam 1\" may contain only"), "{found:#?}");
        assert!(found[1].starts_with("cameras[0].zones[0].polygon[1][1]: invalid type: string"), "{found:#?}");
    }

    #[test]
    fn the_mqtt_password_can_come_from_a_file() {
        let dir = std::env::temp_dir().join(format!("fw-pw-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let with = |mqtt: &str| GOOD.replace("[[cameras]]", &format!("[mqtt]\n{mqtt}\n[[cameras]]"));
        let text = with(&format!("username = \"box\"\npassword_file = \"{}\"", file.display()));
        let path = dir.join("c.toml");
        std::fs::write(&path, &text).unwrap();
        let settings = load(&path).unwrap();
        assert_eq!(settings.config.mqtt.password.expose(), "s3cret");
        let both = with(&format!("username = \"box\"\npassword = \"x\"\npassword_file = \"{}\"", file.display()));
        assert!(problems(&both)[0].to_string().starts_with("mqtt.password_file: set together with mqtt.password"));
        let missing = with("username = \"box\"\npassword_file = \"/nonexistent/pw\"");
        assert!(problems(&missing)[0].to_string().starts_with("mqtt.password_file: cannot read /nonexistent/pw"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn rules_zones_filters_and_tracking_are_checked_with_their_paths() {
        let bad = GOOD
            .replace("zone = \"sidewalk\"", "zone = \"road\"\nthreshold = 2")
            .replace("[[cameras.zones]]", "[cameras.tracking]\nmoving_iou = 0.9\n[[cameras.zones]]\ninertia = 0")
            .replace("url = \"rtsp", "masks = [[[0, 0], [1, 0]]]\nurl = \"rtsp")
            + "[cameras.rules.filters.car]\nmin_area = 0.5\n";
        let found: Vec<String> = problems(&bad).iter().map(|p| p.to_string()).collect();
        let expected = [
            "cameras[0].masks[0]: a polygon needs at least 3 points",
            "cameras[0].rules[0].filters.car: \"car\" is not one of the rule's classes",
            "cameras[0].rules[0].threshold: 2 is outside 0..=1",
            "cameras[0].rules[0].zone: no zone \"road\" on this camera (it has [\"sidewalk\"])",
            "cameras[0].tracking.moving_iou: must be below still_iou",
            "cameras[0].zones[0].inertia: 0 is outside 1..=100",
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for (f, e) in found.iter().zip(expected) {
            assert!(f.starts_with(e), "{f} should start with {e}");
        }
    }

    #[test]
    fn time_zone_schedules_response_times_and_places_are_checked_with_their_paths() {
        let bad = GOOD
            .replace("id = \"edge-1\"", "id = \"edge-1\"\ntimezone = \"Asia/Saigon City\"")
            .replace("[[cameras.zones]]", "[cameras.place]\nlat = 10.7\n[[cameras.zones]]")
            .replace("[[cameras.rules]]", "[cameras.zones.place]\nlat = 91.0\nlon = 106.7\n[[cameras.rules]]")
            + "response_secs = 0\nschedule = []\n[[cameras.rules]]\nid = \"night\"\nviolation = \"vending\"\n\
               zone = \"sidewalk\"\nclasses = [\"red\"]\n\
               [[cameras.rules.schedule]]\ndays = []\nfrom = \"24:00\"\n\
               [[cameras.rules.schedule]]\ndays = [\"fri\", \"friday\"]\nfrom = \"18:00\"\nto = \"18:00\"\n\
               [[cameras.rules.schedule]]\nfrom = \"7:30pm\"\n";
        let found: Vec<String> = problems(&bad).iter().map(|p| p.to_string()).collect();
        let expected = [
            "cameras[0].place.lon: required with lat",
            "cameras[0].rules[0].response_secs: 0 must be above 0",
            "cameras[0].rules[0].schedule: empty: the rule would never be on",
            "cameras[0].rules[1].schedule[0].days: empty",
            "cameras[0].rules[1].schedule[0].from: 24:00 is the end of a day",
            "cameras[0].rules[1].schedule[1].days[1]: \"friday\" is not a day",
            "cameras[0].rules[1].schedule[1].to: equals `from`",
            "cameras[0].rules[1].schedule[2].from: \"7:30pm\" is not a time of day",
            "cameras[0].zones[0].place.lat: 91 is outside -90..=90",
            "device.timezone: \"Asia/Saigon City\" is not an IANA time zone name",
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for (f, e) in found.iter().zip(expected) {
            assert!(f.starts_with(e), "{f} should start with {e}");
        }
        let good = GOOD.replace("id = \"edge-1\"", "id = \"edge-1\"\ntimezone = \"Europe/Berlin\"")
            + "priority = \"urgent\"\n[[cameras.rules.schedule]]\ndays = [\"sat\", \"Sun\"]\nfrom = \"18:00\"\nto = \"02:00\"\n";
        let rule = &loaded(&good).unwrap().cameras[0].rules[0];
        assert_eq!(rule.respond_within, std::time::Duration::from_secs(1800), "urgent's default");
        assert!(rule.schedule.is_some());
    }

    /// GOOD with a value under every kind of numeric key: two models, masks, per-class
    /// filters, a rule of each model.
    fn full() -> String {
        let filter =
            "min_score = 0.3\nthreshold = 0.4\nmin_area = 0.01\nmax_area = 0.5\nmin_ratio = 0.1\nmax_ratio = 10.0";
        let litter =
            "id = \"litter\"\nviolation = \"garbage\"\nzone = \"sidewalk\"\nmodel = \"garbage\"\nclasses = [\"bag\"]";
        GOOD.replace("[model]", "[models.garbage]\npath = \"Cargo.toml\"\n[model]")
            .replace(
                "url = \"rtsp://127.0.0.1:8554/x\"",
                "url = \"rtsp://127.0.0.1:8554/x\"\nmasks = [[[0.0, 0.0], [0.1, 0.0], [0.1, 0.1]]]\n\
                 privacy_masks = [[[0.5, 0.0], [0.6, 0.0], [0.6, 0.1]]]",
            )
            .replace(
                "classes = [\"red\"]",
                &format!("classes = [\"red\", \"blue\"]\n[cameras.rules.filters.blue]\n{filter}"),
            )
            + &format!("[[cameras.rules]]\n{litter}\n")
    }

    /// Every number in `value` (the config as its types serialise it, defaults included), by path.
    fn numbers(value: &Value, path: &mut Vec<Segment>, out: &mut Vec<Vec<Segment>>) {
        let mut below = |segment: Segment, value: &Value| {
            path.push(segment);
            numbers(value, path, out);
            path.pop();
        };
        match value {
            Value::Number(_) => out.push(path.clone()),
            Value::Object(map) => map.iter().for_each(|(k, v)| below(Segment::Key(k.clone()), v)),
            Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| below(Segment::Index(i), v)),
            _ => {}
        }
    }

    fn at<'a>(root: &'a mut Value, path: &[Segment]) -> &'a mut Value {
        path.iter().fold(root, |node, segment| match segment {
            Segment::Key(k) => &mut node[k.as_str()],
            Segment::Index(i) => &mut node[*i],
        })
    }

    /// The table (or list) holding `key`.
    fn parent(key: &str) -> &str {
        &key[..key.rfind(['.', '[']).unwrap_or(0)]
    }

    /// `key` without its table.
    fn leaf(key: &str) -> &str {
        &key[key.rfind('.').map_or(0, |i| i + 1)..]
    }

    /// The full config as a tree, and the paths of its numeric keys.
    fn full_tree() -> (Value, Vec<Vec<Segment>>) {
        let mut tree = serde_json::to_value(&loaded(&full()).unwrap().config).unwrap();
        // Secrets serialise masked: back to what the config said.
        tree["mqtt"].as_object_mut().unwrap().remove("password");
        tree["cameras"][0].as_object_mut().unwrap().remove("password");
        tree["cameras"][0]["url"] = json!("rtsp://127.0.0.1:8554/x");
        let mut keys = Vec::new();
        numbers(&tree, &mut Vec::new(), &mut keys);
        (tree, keys)
    }

    /// `key` set to `value` in `tree`: the config loads and its rules run, or it is refused with
    /// a problem at the key, or beside it saying its name (max_area below min_area is reported
    /// at max_area, "must be at least min_area"); never a panic. Returns what went wrong.
    fn try_extreme(tree: &Value, key: &[Segment], value: &Value) -> Result<(), String> {
        let mut tree = tree.clone();
        *at(&mut tree, key) = value.clone();
        let name = render(key);
        let outcome = std::panic::catch_unwind(|| {
            let settings = settle(tree)?;
            for camera in &settings.cameras {
                let mut rules = crate::rules::CameraRules::new(camera);
                let start = chrono::Utc::now();
                let bbox = crate::detect::BBox { x1: 300.0, y1: 400.0, x2: 340.0, y2: 470.0 };
                for (k, label) in ["red", "blue", "bag"].into_iter().enumerate().cycle().take(30) {
                    let (model, class_id, label) = (usize::from(label == "bag"), k % 2, label.to_string());
                    let seen = crate::detect::Detection { model, class_id, label, score: 0.9, bbox };
                    let at = start + chrono::TimeDelta::milliseconds(700 * k as i64);
                    rules.observe(at, &[seen], 640, 480, None);
                }
            }
            Ok::<(), Vec<Problem>>(())
        });
        match outcome {
            Err(_) => Err(format!("{name} = {value}: panicked")),
            Ok(Ok(())) => Ok(()),
            Ok(Err(problems)) => {
                let names = |p: &Problem| {
                    name == p.path
                        || name.starts_with(&format!("{}.", p.path))
                        || name.starts_with(&format!("{}[", p.path))
                        || (parent(&name) == parent(&p.path) && p.message.contains(leaf(&name)))
                };
                match problems.iter().any(names) {
                    true => Ok(()),
                    false => Err(format!("{name} = {value}: refused without naming it: {problems:?}")),
                }
            }
        }
    }

    #[test]
    fn every_numeric_key_at_its_extremes_loads_or_is_refused_by_name() {
        let (tree, keys) = full_tree();
        assert!(keys.len() > 60, "numeric keys found: {}", keys.len());
        assert!(settle(tree.clone()).is_ok(), "the full config loads as it serialises");
        // NaN and the infinities arrive as null: TOML and the environment give floats that
        // the merged tree cannot hold.
        let extremes = [
            json!(0),
            json!(1),
            json!(-1),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(0.5),
            json!(-0.5),
            json!(1e-300),
            json!(1e300),
            json!(-1e300),
            Value::Null,
        ];
        let failures: Vec<String> = (keys.iter())
            .flat_map(|key| extremes.iter().map(move |value| (key, value)))
            .filter_map(|(key, value)| try_extreme(&tree, key, value).err())
            .collect();
        assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn any_number_under_any_numeric_key_loads_or_is_refused_by_name(
            pick in any::<prop::sample::Index>(),
            value in prop_oneof![any::<i64>().prop_map(|v| json!(v)), prop::num::f64::NORMAL.prop_map(|v| json!(v))],
        ) {
            let (tree, keys) = full_tree();
            if let Err(failure) = try_extreme(&tree, pick.get::<Vec<Segment>>(&keys), &value) {
                prop_assert!(false, "{}", failure);
            }
        }
    }
}
