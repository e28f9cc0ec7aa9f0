//! The config's layers, each over the one before: the file, the overlay, the environment.
//!
//! The overlay (`overlay.toml` in the state directory) holds changes made while the daemon
//! runs — the zone editor's saves — because under systemd the config directory is read-only.
//! It has the file's shape; its `[[cameras]]` are matched to the file's by `id`, their
//! `[[cameras.rules]]` by `id` and `[[cameras.zones]]` by `name`, so it only needs to name what
//! it changes. Every key a later layer sets is recorded with where it came from, for `check`.

use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};

/// The overlay's file name in the state directory.
pub const OVERLAY: &str = "overlay.toml";

/// A key a later layer set, and which layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// As problems name keys: `cameras[0].zones[1].polygon`.
    pub key: String,
    pub from: Layer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    Overlay(PathBuf),
    /// The environment variable's name.
    Environment(String),
}

impl fmt::Display for Override {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.from {
            Layer::Overlay(path) => write!(f, "{}: from the overlay {}", self.key, path.display()),
            Layer::Environment(name) => write!(f, "{}: from the environment ({name})", self.key),
        }
    }
}

/// The environment variable that sets `key` (`mqtt.host` → `FIELDWATCH__MQTT__HOST`).
fn variable(key: &str) -> String {
    format!("FIELDWATCH__{}", key.replace('.', "__").to_uppercase())
}

/// Reads one layer into a tree.
pub fn read(source: impl config::Source + Send + Sync + 'static) -> Result<Value, String> {
    config::Config::builder()
        .add_source(source)
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .map_err(|e| e.to_string())
}

/// The environment's layer: `FIELDWATCH__SECTION__KEY`.
pub fn environment() -> config::Environment {
    config::Environment::with_prefix("FIELDWATCH").prefix_separator("__").separator("__").try_parsing(true)
}

/// Where the overlay of the config `tree` (file and environment merged) lives.
pub fn overlay_path(tree: &Value) -> PathBuf {
    let named = tree.pointer("/device/state_dir").and_then(Value::as_str).filter(|s| !s.is_empty());
    named.map_or_else(|| super::DeviceConfig::default().state_dir, PathBuf::from).join(OVERLAY)
}

/// Lays `over` onto `base`, recording in `out` each key it changes.
pub fn merge(base: &mut Value, over: Value, layer: &dyn Fn(&str) -> Layer, out: &mut Vec<Override>) {
    merge_at(base, over, "", layer, out);
}

fn merge_at(base: &mut Value, over: Value, key: &str, layer: &dyn Fn(&str) -> Layer, out: &mut Vec<Override>) {
    let join = |k: &str| if key.is_empty() { k.to_string() } else { format!("{key}.{k}") };
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (k, v) in over {
                let key = join(&k);
                match base.get_mut(&k) {
                    Some(below) => merge_at(below, v, &key, layer, out),
                    None => {
                        out.push(Override { from: layer(&key), key });
                        base.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(base), Value::Array(over)) if identity(key).is_some() => {
            let id = identity(key).unwrap_or_default();
            for item in over {
                let name = item.get(id).cloned();
                let found = base.iter().position(|b| name.is_some() && b.get(id) == name.as_ref());
                match found.and_then(|i| base.get_mut(i).map(|b| (i, b))) {
                    Some((i, below)) => merge_at(below, item, &format!("{key}[{i}]"), layer, out),
                    None => {
                        out.push(Override { key: format!("{key}[{}]", base.len()), from: layer(key) });
                        base.push(item);
                    }
                }
            }
        }
        // A value the layer repeats (an item's id) overrides nothing.
        (base, over) if *base == over => {}
        (base, over) => {
            out.push(Override { key: key.to_string(), from: layer(key) });
            *base = over;
        }
    }
}

/// The key that identifies an item of the array at `key`, for arrays merged item by item.
fn identity(key: &str) -> Option<&'static str> {
    let last = key.rsplit('.').next().unwrap_or(key);
    match last {
        "cameras" if key == "cameras" => Some("id"),
        "rules" if key.starts_with("cameras[") => Some("id"),
        "zones" if key.starts_with("cameras[") => Some("name"),
        _ => None,
    }
}

/// The three layers merged: the tree to deserialise, the keys the overlay and the environment
/// set, and the overlay's path (whether or not it exists). `overlay`: this file instead of the
/// one in the state directory.
pub fn layered(path: &Path, overlay: Option<&Path>) -> Result<(Value, Vec<Override>, PathBuf), String> {
    let file = read(config::File::from(path).format(config::FileFormat::Toml))?;
    let env = read(environment())?;
    let mut probe = file.clone();
    merge(&mut probe, env.clone(), &|k| Layer::Environment(variable(k)), &mut Vec::new());
    let overlay = overlay.map_or_else(|| overlay_path(&probe), Path::to_path_buf);
    let mut tree = file;
    let mut overrides = Vec::new();
    if overlay.is_file() {
        let layer = read(config::File::from(overlay.as_path()).format(config::FileFormat::Toml))
            .map_err(|e| format!("overlay {}: {e}", overlay.display()))?;
        let from = overlay.clone();
        merge(&mut tree, layer, &|_| Layer::Overlay(from.clone()), &mut overrides);
    }
    merge(&mut tree, env, &|k| Layer::Environment(variable(k)), &mut overrides);
    Ok((tree, overrides, overlay))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cameras_rules_and_zones_merge_by_their_ids_and_every_key_set_is_recorded() {
        let mut base = json!({
            "mqtt": { "host": "a", "port": 1 },
            "cameras": [
                { "id": "c1", "url": "u1", "zones": [{ "name": "z", "polygon": [[0, 0]] }],
                  "rules": [{ "id": "r1", "zone": "z", "threshold": 0.5 }, { "id": "r2", "zone": "z" }] },
                { "id": "c2", "url": "u2" },
            ],
        });
        let over = json!({
            "mqtt": { "host": "b" },
            "cameras": [
                { "id": "c2", "detect_fps": 2 },
                { "id": "c1", "zones": [{ "name": "z", "polygon": [[1, 1]] }, { "name": "new", "polygon": [] }],
                  "rules": [{ "id": "r2", "threshold": 0.9 }] },
            ],
        });
        let mut out = Vec::new();
        let from = PathBuf::from("/s/overlay.toml");
        merge(&mut base, over, &|_| Layer::Overlay(from.clone()), &mut out);
        assert_eq!(base["mqtt"], json!({ "host": "b", "port": 1 }));
        assert_eq!(base["cameras"][0]["zones"][0]["polygon"], json!([[1, 1]]));
        assert_eq!(base["cameras"][0]["zones"][1]["name"], "new");
        assert_eq!(base["cameras"][0]["rules"][0]["threshold"], 0.5);
        assert_eq!(base["cameras"][0]["rules"][1], json!({ "id": "r2", "zone": "z", "threshold": 0.9 }));
        assert_eq!(base["cameras"][1]["detect_fps"], 2);
        assert_eq!(base["cameras"].as_array().map(Vec::len), Some(2));
        let keys: Vec<String> = out.iter().map(|o| o.key.clone()).collect();
        assert_eq!(
            keys,
            [
                "mqtt.host",
                "cameras[1].detect_fps",
                "cameras[0].zones[0].polygon",
                "cameras[0].zones[1]",
                "cameras[0].rules[1].threshold"
            ]
        );
        assert_eq!(out[0].to_string(), "mqtt.host: from the overlay /s/overlay.toml");
        assert_eq!(variable("mqtt.host"), "FIELDWATCH__MQTT__HOST");
    }
}
