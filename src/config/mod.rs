//! Typed configuration: what the TOML file and `FIELDWATCH__…` environment variables may say.
//!
//! Every field has a real default (see each `Default` impl), so a partial file is complete once
//! loaded; [`load`] then reports *every* problem at once, each with its key path, and `run`
//! refuses to start on the same list that `fieldwatch check` prints.

mod load;
mod validate;

pub use load::{ConfigError, Problem, load};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A loaded, validated configuration: the file as written (for `check` and the config version)
/// and the runtime types built from it once, at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub cameras: Vec<Arc<Camera>>,
}

impl Settings {
    pub fn camera(&self, id: &str) -> Option<&Arc<Camera>> {
        self.cameras.iter().find(|c| c.id == id)
    }
}

/// One camera as the daemon runs it: durations as `Duration`, the URL parsed and its
/// credentials split off (retina takes them separately; logs get the redacted form).
#[derive(Debug, Clone)]
pub struct Camera {
    pub id: String,
    /// The id when no name was given.
    pub name: String,
    pub location: String,
    pub url: CameraUrl,
    pub detect_fps: f64,
    pub stall_timeout: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub rules: Vec<Arc<Rule>>,
}

/// An RTSP URL without its credentials, the credentials, and a form safe to log.
#[derive(Debug, Clone)]
pub struct CameraUrl {
    pub url: url::Url,
    pub username: String,
    pub password: Secret,
    pub redacted: String,
}

impl CameraUrl {
    /// Splits `user:password@` (percent-decoded) out of `raw`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut url = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
        if url.scheme() != "rtsp" || url.host().is_none() {
            return Err("must be an rtsp:// URL with a host".into());
        }
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let username = decode(url.username());
        let password = Secret::new(url.password().map(decode).unwrap_or_default());
        url.set_username("").map_err(|_| "cannot strip the user name".to_string())?;
        url.set_password(None).map_err(|_| "cannot strip the password".to_string())?;
        Ok(Self { redacted: redact_url(raw), url, username, password })
    }
}

/// One zone rule as the rules stage runs it (see [`RuleConfig`] for what each field means).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: String,
    pub violation: String,
    pub category: Category,
    pub classes: Vec<String>,
    pub min_score: f32,
    pub zone: Vec<[f64; 2]>,
    pub dwell: Duration,
    pub clear_after: Duration,
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub device: DeviceConfig,
    pub model: ModelConfig,
    pub mqtt: MqttConfig,
    pub cameras: Vec<CameraConfig>,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceConfig {
    /// Identifies this edge box in topics and reports. Default: the host name.
    pub id: String,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        Self { id: host.trim().to_string() }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// ONNX model file (YOLOv8 output layout). Required.
    pub path: PathBuf,
    /// Name used in reports. Default: the file stem of `path`.
    pub name: String,
    /// ONNX Runtime shared library. Default: empty, meaning `$ORT_DYLIB_PATH`.
    pub runtime: PathBuf,
    /// Class names by index. Default: empty, meaning the model's own `names` metadata.
    pub labels: Vec<String>,
    /// Detections scoring below this are discarded before any rule sees them. Default 0.25.
    pub min_score: f32,
    /// Class-wise non-maximum suppression IoU. Default 0.45, as Ultralytics uses.
    pub nms_iou: f32,
    /// ONNX Runtime intra-op threads. Default 1: edge boxes share cores with decoding.
    pub threads: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::new(),
            name: String::new(),
            runtime: PathBuf::new(),
            labels: Vec::new(),
            min_score: 0.25,
            nms_iou: 0.45,
            threads: 1,
        }
    }
}

impl ModelConfig {
    /// The name reports carry: `name`, else the file stem.
    pub fn display_name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// The runtime library: `runtime`, else `$ORT_DYLIB_PATH`.
    pub fn runtime_path(&self) -> Option<PathBuf> {
        if !self.runtime.as_os_str().is_empty() {
            return Some(self.runtime.clone());
        }
        std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()).map(PathBuf::from)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host. Default `127.0.0.1`.
    pub host: String,
    /// Broker port. Default 1883.
    pub port: u16,
    /// Client id. Default: `fieldwatch-{device.id}`.
    pub client_id: String,
    /// Optional user name; empty means anonymous.
    pub username: String,
    /// Password for `username`; never logged.
    pub password: Secret,
    /// First topic level: reports go to `{prefix}/{device}/{camera}/reports`. Default `fieldwatch`.
    pub topic_prefix: String,
    /// MQTT keep-alive in seconds, 0 (off) or 5..=65535 (the protocol's limit). Default 30.
    pub keep_alive_secs: u64,
    /// Largest packet sent or received, in bytes. Default 4 MiB: reports carry JPEG snapshots.
    pub max_packet_bytes: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: String::new(),
            username: String::new(),
            password: Secret::default(),
            topic_prefix: "fieldwatch".into(),
            keep_alive_secs: 30,
            max_packet_bytes: 4 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CameraConfig {
    /// Identifies the camera in topics and reports. Required; letters, digits, `-`, `_`.
    pub id: String,
    /// Human name shown in reports. Default: the id.
    pub name: String,
    /// Where it looks, in words ("Lê Lợi / Nguyễn Huệ, north side"). Default empty.
    pub location: String,
    /// `rtsp://[user:password@]host[:port]/path`. Required. Credentials never reach logs or reports.
    pub url: Secret,
    /// Frames per second handed to the detector. Default 2: rules count seconds, not frames.
    pub detect_fps: f64,
    /// Seconds without a frame before the connection counts as stalled and is rebuilt (at most
    /// an hour). Default 10.
    pub stall_timeout_secs: f64,
    /// Reconnect backoff bounds in seconds (doubling from min to max, at most an hour).
    /// Defaults 1 and 30.
    pub reconnect_min_secs: f64,
    pub reconnect_max_secs: f64,
    /// Zone rules for this camera.
    pub rules: Vec<RuleConfig>,
}

impl Default for CameraConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            name: String::new(),
            location: String::new(),
            url: Secret::default(),
            detect_fps: 2.0,
            stall_timeout_secs: 10.0,
            reconnect_min_secs: 1.0,
            reconnect_max_secs: 30.0,
            rules: Vec::new(),
        }
    }
}

impl CameraConfig {
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() { &self.id } else { &self.name }
    }
}

/// One zone rule: objects of `classes`, scoring at least `min_score`, whose bottom-centre lies
/// inside `zone` for `dwell_secs` open an incident; `clear_after_secs` without any resolves it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    /// Identifies the rule within its camera. Required.
    pub id: String,
    /// What is wrong, machine-readable (`sidewalk_encroachment`, `garbage`, `obstacle`). Required.
    pub violation: String,
    /// The city's report field. Default `urban_order`.
    pub category: Category,
    /// Model class names that count. Required, at least one.
    pub classes: Vec<String>,
    /// Minimum detection score that counts. Default 0.5.
    pub min_score: f32,
    /// Polygon in normalised image coordinates (0..1, origin top-left), at least 3 points. Required.
    pub zone: Vec<[f64; 2]>,
    /// Seconds an object must stay before an incident opens (at most a day). Default 10.
    pub dwell_secs: f64,
    /// Seconds the zone must stay free before the incident resolves (at most a day). Also the
    /// gap that presence survives (missed detections, occlusions). Default 5.
    pub clear_after_secs: f64,
}

impl Default for RuleConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            violation: String::new(),
            category: Category::UrbanOrder,
            classes: Vec::new(),
            min_score: 0.5,
            zone: Vec::new(),
            dwell_secs: 10.0,
            clear_after_secs: 5.0,
        }
    }
}

/// The report fields of the city's citizen-report system (see ARCHITECTURE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    UrbanOrder,
    EnvironmentalSanitation,
    UrbanInfrastructure,
    TelecomInfrastructure,
    PublicUtilityServices,
    Tourism,
    PublicAdministration,
    Other,
}

impl Category {
    /// The name in reports and config (`urban_order`).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::UrbanOrder => "urban_order",
            Category::EnvironmentalSanitation => "environmental_sanitation",
            Category::UrbanInfrastructure => "urban_infrastructure",
            Category::TelecomInfrastructure => "telecom_infrastructure",
            Category::PublicUtilityServices => "public_utility_services",
            Category::Tourism => "tourism",
            Category::PublicAdministration => "public_administration",
            Category::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `fieldwatch=debug`. `RUST_LOG` wins when set. Default `info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into() }
    }
}

/// A string that must not be printed: `Debug` and `Serialize` show `***`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

/// An RTSP URL without its credentials, safe to log.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("***");
                let _ = u.set_password(None);
            }
            u.to_string()
        }
        Err(_) => "<unparseable url>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_urls_never_print_credentials() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "\"***\"");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        let r = redact_url("rtsp://admin:hunter2@10.0.0.5:554/stream1");
        assert!(!r.contains("hunter2") && !r.contains("admin"), "{r}");
        assert!(r.contains("10.0.0.5:554/stream1"));
    }

    #[test]
    fn camera_urls_are_parsed_once_with_credentials_split_off_and_decoded() {
        let u = CameraUrl::parse("rtsp://ad%40min:p%3Ass@cam.local:554/s1").unwrap();
        assert_eq!(u.url.as_str(), "rtsp://cam.local:554/s1");
        assert_eq!((u.username.as_str(), u.password.expose()), ("ad@min", "p:ss"));
        assert!(!u.redacted.contains("p%3Ass") && !u.redacted.contains("ad%40min"), "{}", u.redacted);
        let plain = CameraUrl::parse("rtsp://cam.local/s1").unwrap();
        assert!(plain.username.is_empty() && plain.password.is_empty());
        assert!(CameraUrl::parse("http://cam.local/s1").unwrap_err().contains("rtsp://"));
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;
    use serde_json::Value;
    use std::collections::BTreeSet;

    fn key_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    out.insert(p.clone());
                    key_paths(v, &p, out);
                }
            }
            Value::Array(a) if a.first().is_some_and(Value::is_object) => key_paths(&a[0], &format!("{prefix}[]"), out),
            _ => {}
        }
    }

    /// config/example.toml documents every key there is, and only those.
    #[test]
    fn the_example_config_has_every_key_and_no_other() {
        let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml")).unwrap();
        let parsed: Value = config::Config::builder()
            .add_source(config::File::from_str(&example, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .unwrap();
        let full = Config {
            cameras: vec![CameraConfig { rules: vec![RuleConfig::default()], ..Default::default() }],
            ..Default::default()
        };
        let (mut documented, mut existing) = (BTreeSet::new(), BTreeSet::new());
        key_paths(&parsed, "", &mut documented);
        key_paths(&serde_json::to_value(&full).unwrap(), "", &mut existing);
        assert_eq!(documented, existing);
        let typed: Config = serde_json::from_value(parsed).expect("example deserialises");
        let (problems, cameras) = super::validate::validate(&typed);
        assert!(problems.iter().all(|p| p.message.starts_with("no such file")), "{problems:?}");
        assert_eq!(cameras.len(), 1);
    }
}
