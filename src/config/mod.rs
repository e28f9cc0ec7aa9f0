//! Typed configuration: what the TOML file and `FIELDWATCH__…` environment variables may say.
//!
//! Every field has a real default (see each `Default` impl), so a partial file is complete once
//! loaded; [`load`] then reports *every* problem at once, each with its key path, and `run`
//! refuses to start on the same list that `fieldwatch check` prints.

mod camera;
mod layers;
mod load;
mod runtime;
mod validate;

pub use camera::*;
pub use layers::{Layer, OVERLAY, Override};
pub use load::{ConfigError, Problem, load, load_with};
pub use runtime::*;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub device: DeviceConfig,
    /// The model rules use unless they name another.
    pub model: ModelConfig,
    /// Further models by name, for rules that name them (`model = "garbage"` in a rule): a
    /// camera runs every model its rules use on each sampled frame, and its rules see their
    /// results joined. Same keys as `[model]`; `runtime` defaults to `[model]`'s.
    pub models: BTreeMap<String, ModelConfig>,
    pub mqtt: MqttConfig,
    pub outbox: OutboxConfig,
    pub snapshot: SnapshotConfig,
    pub evidence: EvidenceConfig,
    pub cameras: Vec<CameraConfig>,
    /// Class names as reports write them, per language: `[class_names.motorbike]` with
    /// `en = "motorbike"`, `vi = "xe máy"`. Classes left out keep built-in names for common
    /// street classes, else the model's own name.
    pub class_names: BTreeMap<String, Text>,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub remote: RemoteConfig,
}

/// Remote tuning and feedback from the IOC: commands on `{topic_prefix}/{device}/commands`
/// (MQTT 5, QoS 1; see `schemas/command.v1.json` and `docs/commands-v1.md`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteConfig {
    /// Whether the daemon takes commands. Default false: a box changes only from its own files
    /// and workbench.
    pub enabled: bool,
    /// Commands larger than this are refused unread. Default 65536.
    pub max_command_bytes: usize,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self { enabled: false, max_command_bytes: 65536 }
    }
}

/// The local HTTP endpoint: `/healthz` and `/metrics` (Prometheus text format), and the
/// technician's live view and zone editor (`/`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port to listen on; empty turns the endpoint off. Default `127.0.0.1:9464`:
    /// only the box itself (a local Prometheus agent, the technician's curl) can reach it.
    pub listen: String,
    /// `/healthz` fails when one of the daemon's own stages (a decoder, an inference worker) has
    /// been busy with one piece of work for longer than this. Default 30.
    pub stuck_after_secs: f64,
    /// What every page, picture and change needs (`Authorization: Bearer TOKEN`, or the login
    /// form's cookie); `/healthz` and `/metrics` stay open. Required, 16 characters or more,
    /// when `listen` is not a loopback address. Better kept out of the file: set
    /// `FIELDWATCH__HTTP__TOKEN`, or use `token_file`. Default empty: none.
    pub token: Secret,
    /// A file holding the token (trailing newline ignored), instead of `token`. A relative path
    /// is a systemd credential (`LoadCredential=`). Default empty: not used.
    pub token_file: PathBuf,
    /// Whether the zone editor may save a zone (to the overlay, then a reload). Default true.
    pub edit: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            stuck_after_secs: 30.0,
            token: Secret::default(),
            token_file: PathBuf::new(),
            edit: true,
        }
    }
}

impl HttpConfig {
    /// The token file as it will be read: relative paths are systemd credentials.
    pub fn token_path(&self) -> Option<PathBuf> {
        (!self.token_file.as_os_str().is_empty()).then(|| credential_path(&self.token_file))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceConfig {
    /// Identifies this edge box in topics and reports. Default: the host name.
    pub id: String,
    /// Where open incidents and cooldowns are kept across restarts. Default: systemd's
    /// `$STATE_DIRECTORY`, else `/var/lib/fieldwatch`.
    pub state_dir: PathBuf,
    /// The IANA time zone of the box's streets (`Asia/Ho_Chi_Minh`, the default): rule
    /// schedules are read in it. A name, not an offset, so a zone's own changes are followed.
    pub timezone: String,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        // systemd may list several directories, separated by colons: the first is ours.
        let state = std::env::var("STATE_DIRECTORY").ok().and_then(|v| v.split(':').next().map(PathBuf::from));
        Self {
            id: host.trim().to_string(),
            state_dir: state.filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(|| "/var/lib/fieldwatch".into()),
            timezone: "Asia/Ho_Chi_Minh".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Where these settings are in the file (`model`, `models.garbage`), for messages.
    #[serde(skip)]
    pub key: String,
    /// ONNX model file (YOLOv8 output layout). Required.
    pub path: PathBuf,
    /// Name used in reports and by rules. Default: the file stem of `path` for `[model]`, the
    /// table's name for `[models.NAME]`.
    pub name: String,
    /// ONNX Runtime shared library. Default: empty, meaning `$ORT_DYLIB_PATH`.
    pub runtime: PathBuf,
    /// Class names by index. Default: empty, meaning `labels_file`, else the model's own
    /// `names` metadata (as Ultralytics exports write it).
    pub labels: Vec<String>,
    /// A file with one class name per line, in index order. Default empty: not used.
    pub labels_file: PathBuf,
    /// How the output reads: `auto` (default: from its shape), `yolov8` (`[1, 4 + C, N]`, also
    /// YOLO11), `yolov5` (`[1, N, 5 + C]` with objectness, also YOLOv7), `end_to_end`
    /// (`[1, N, 6]`: x1, y1, x2, y2, score, class, NMS inside, e.g. YOLOv10 and YOLO26).
    pub format: ModelFormat,
    /// Channel order the model expects: `rgb` (default, Ultralytics) or `bgr`.
    pub channel_order: ChannelOrder,
    /// Pixel values the model expects: `0-1` (default, Ultralytics) or `0-255`.
    pub pixel_range: PixelRange,
    /// Input side in pixels for models whose input size is dynamic. Default 640.
    pub input_size: u32,
    /// Detections scoring below this are discarded before any rule sees them. Default 0.25.
    pub min_score: f32,
    /// Class-wise non-maximum suppression IoU. Default 0.45, as Ultralytics uses.
    pub nms_iou: f32,
    /// Every class scoring `min_score` or more on a box is a detection of its own, as darknet
    /// reports them (a pickup is both `car` 0.70 and `truck` 0.41), instead of only the best
    /// class (default false, as Ultralytics predicts). A rule whose classes take more than one
    /// of them sees one object per class.
    pub multi_label: bool,
    /// ONNX Runtime intra-op threads per inference worker. Default 1.
    pub threads: usize,
    /// Inference workers, each a session of its own taking the next camera's newest frame.
    /// Default 2: on a 2-core box two single-thread sessions in parallel outrun one session
    /// with two threads (see the capacity benchmark). A box with one camera can use 1.
    pub workers: usize,
    /// Most frames (one per camera, each its newest) run together in one inference when the
    /// model's batch dimension is dynamic. Default 4; 1 turns batching off. A model with a
    /// fixed batch of 1 always runs one frame.
    pub batch: usize,
    /// ONNX Runtime's memory arena and memory patterns on the CPU: faster first runs, but they
    /// keep the peak of every run resident. Default false: less memory, same steady speed
    /// (see the capacity benchmark).
    pub arena: bool,
    /// Where inference runs: `cpu` (default), `cuda`, `tensorrt` or `openvino`. The GPU ones
    /// need a build with that cargo feature and an ONNX Runtime library built with them.
    pub provider: Provider,
    /// When `provider` is not available: false (default) refuses to start; true logs it and
    /// runs on the CPU.
    pub provider_fallback: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFormat {
    Auto,
    Yolov8,
    Yolov5,
    EndToEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum PixelRange {
    #[serde(rename = "0-1")]
    Unit,
    #[serde(rename = "0-255")]
    Byte,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Cpu,
    Cuda,
    Tensorrt,
    Openvino,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            key: "model".into(),
            path: PathBuf::new(),
            name: String::new(),
            runtime: PathBuf::new(),
            labels: Vec::new(),
            labels_file: PathBuf::new(),
            format: ModelFormat::Auto,
            channel_order: ChannelOrder::Rgb,
            pixel_range: PixelRange::Unit,
            input_size: 640,
            min_score: 0.25,
            nms_iou: 0.45,
            multi_label: false,
            threads: 1,
            workers: 2,
            batch: 4,
            arena: false,
            provider: Provider::Cpu,
            provider_fallback: false,
        }
    }
}

impl Config {
    /// Every model, `[model]` first, then `[models.NAME]` in name order, each with its name
    /// and key set and the runtime library inherited from `[model]`; a rule's model is an
    /// index into this list.
    pub fn all_models(&self) -> Vec<ModelConfig> {
        let primary = ModelConfig { key: "model".into(), name: self.model.display_name(), ..self.model.clone() };
        let extras = self.models.iter().map(|(name, m)| ModelConfig {
            key: format!("models.{name}"),
            name: name.clone(),
            runtime: if m.runtime.as_os_str().is_empty() { self.model.runtime.clone() } else { m.runtime.clone() },
            ..m.clone()
        });
        std::iter::once(primary).chain(extras).collect()
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
    /// Password for `username`; never logged. Better kept out of the file: set
    /// `FIELDWATCH__MQTT__PASSWORD`, or use `password_file`.
    pub password: Secret,
    /// A file holding the password (trailing newline ignored), instead of `password`. A
    /// relative path is looked up in systemd's `$CREDENTIALS_DIRECTORY` (`LoadCredential=`).
    /// Default empty: not used.
    pub password_file: PathBuf,
    /// First topic level: reports go to `{prefix}/{device}/{camera}/reports`. Default `fieldwatch`.
    pub topic_prefix: String,
    /// MQTT keep-alive in seconds, 5..=65535 (the protocol's limit); 0 (off) only with 3.1.1. Default 30.
    pub keep_alive_secs: u64,
    /// CA certificate (PEM) that signs the broker's: setting it turns TLS on. Default empty:
    /// plain TCP (only for a broker on the box or a trusted network).
    pub ca_file: PathBuf,
    /// Client certificate and its key (PEM), for brokers that want one. Default empty.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Seconds between heartbeats on `{prefix}/{device}/heartbeat` (per-camera frame rate and
    /// last frame, outbox depth, disk free, versions, clock sync); 0 turns them off. Default 60.
    pub heartbeat_secs: u64,
    /// Largest packet sent or received, in bytes. Default 4 MiB: reports carry JPEG snapshots.
    pub max_packet_bytes: usize,
    /// MQTT protocol version. Default `5`: the broker's PUBACK then says whether it took a
    /// report or refused it (ACL, quota). With `3.1.1` a broker cannot say so, and mosquitto
    /// acknowledges publishes its ACL denied as if it had taken them.
    pub protocol: MqttProtocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum MqttProtocol {
    #[serde(rename = "5")]
    V5,
    #[serde(rename = "3.1.1")]
    V311,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: String::new(),
            username: String::new(),
            password: Secret::default(),
            password_file: PathBuf::new(),
            topic_prefix: "fieldwatch".into(),
            keep_alive_secs: 30,
            ca_file: PathBuf::new(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            heartbeat_secs: 60,
            max_packet_bytes: 4 << 20,
            protocol: MqttProtocol::V5,
        }
    }
}

/// The evidence picture in each report.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Widest snapshot in pixels; wider frames are scaled down (boxes in the report with them).
    /// 0 keeps the frame's width. Default 1280: enough to read a scene, ~150 KB as JPEG.
    pub max_width: u32,
    /// JPEG quality, 1..=100. Default 80.
    pub jpeg_quality: u8,
    /// How images travel: `inline` (base64 in the report's JSON), `separate` (binary JPEG
    /// on `{prefix}/{device}/{camera}/snapshots/{report_id}`, named in the JSON, sent just
    /// before it) or `none`. Default `inline`.
    pub mode: SnapshotMode,
    /// Crop the snapshot to the incident's objects (with room around them) instead of the
    /// whole frame. Default false.
    pub crop: bool,
    /// `opened` reports also carry the frame where the objects were first seen, so the IOC
    /// sees how long they have been there. Default true.
    pub first_seen: bool,
    /// Detections of these classes are blurred in every snapshot, wherever they are (faces or
    /// plates, when the model finds them). Default none.
    pub blur_classes: Vec<String>,
}

/// Evidence clips: for each opened incident, the camera's own video from a little before its
/// objects were first seen to a little after it opened, remuxed to MP4 without re-encoding.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvidenceConfig {
    /// Whether opened incidents get a clip. Default true.
    pub enabled: bool,
    /// Seconds of video before the objects were first seen. Default 5.
    pub pre_secs: f64,
    /// Seconds of video after the incident opened; the opened report waits this long for its
    /// clip. Default 5.
    pub post_secs: f64,
    /// Longest clip in seconds: with a long dwell it starts this long before its end instead of
    /// before the first sighting. Each camera keeps this much of its video (plus one keyframe
    /// interval) in memory: about max_secs x bitrate (30 s of a 2 Mbit/s stream: 7.5 MB).
    /// Default 30, at most 600.
    pub max_secs: f64,
    /// Clips kept in `{state_dir}/evidence`, by total size: the oldest go first. Default 1 GiB.
    pub max_bytes: u64,
    /// Clips older than this many days are dropped. Default 30.
    pub max_age_days: f64,
    /// A camera with privacy masks gets a clip too, decoded, pixelated where masked and encoded
    /// again (libx264): CPU for every frame of every clip. Default false: no clip for it.
    pub reencode: bool,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            pre_secs: 5.0,
            post_secs: 5.0,
            max_secs: 30.0,
            max_bytes: 1 << 30,
            max_age_days: 30.0,
            reencode: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    Inline,
    Separate,
    None,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            max_width: 1280,
            jpeg_quality: 80,
            mode: SnapshotMode::Inline,
            crop: false,
            first_seen: true,
            blur_classes: Vec::new(),
        }
    }
}

/// The reports waiting for the broker, on disk in `{device.state_dir}/outbox.db`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// Most bytes of reports kept while the broker is unreachable; past it the oldest go
    /// first, each one logged. Default 256 MiB: days of reports with snapshots.
    pub max_bytes: u64,
    /// Bytes per second at most when sending reports, so draining an hour's backlog does not
    /// choke a 4G link; 0: as fast as the broker takes them. Default 0.
    pub drain_bytes_per_sec: u64,
    /// Most bytes of reports held in memory while the disk does not take them (full,
    /// read-only, failing); past it the held reports lose their images, then the oldest go,
    /// counted in the heartbeat. Default 64 MiB.
    pub memory_bytes: u64,
    /// Below this many free bytes on the state directory's disk the oldest reports' images are
    /// dropped and the status says `storage: low`. Default 64 MiB.
    pub min_free_bytes: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self { max_bytes: 256 << 20, drain_bytes_per_sec: 0, memory_bytes: 64 << 20, min_free_bytes: 64 << 20 }
    }
}

impl OutboxConfig {
    pub fn limits(&self) -> crate::outbox::Limits {
        crate::outbox::Limits {
            max_bytes: self.max_bytes,
            memory_bytes: self.memory_bytes,
            min_free_bytes: self.min_free_bytes,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `fieldwatch=debug`. `RUST_LOG` wins when set. Default `info`.
    pub level: String,
    /// `text` (default: one readable line per event; under systemd with the journal's priority
    /// prefix and without a timestamp of its own) or `json` (one object per line).
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Text }
    }
}

impl MqttConfig {
    /// The password file as it will be read: relative paths are systemd credentials.
    pub fn password_path(&self) -> Option<PathBuf> {
        (!self.password_file.as_os_str().is_empty()).then(|| credential_path(&self.password_file))
    }
}

/// Where a password file named in the config is read: a relative path is a systemd credential,
/// looked up in `$CREDENTIALS_DIRECTORY` (`LoadCredential=`).
pub fn credential_path(file: &std::path::Path) -> PathBuf {
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if file.is_relative() => PathBuf::from(dir).join(file),
        _ => file.to_path_buf(),
    }
}

/// A password file's content, without its trailing newline.
pub fn read_password(path: &std::path::Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim_end_matches(['\n', '\r']).to_string())
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
        let full_filter = FilterConfig {
            min_score: Some(0.5),
            threshold: Some(0.6),
            min_area: Some(0.0),
            max_area: Some(1.0),
            min_ratio: Some(0.0),
            max_ratio: Some(100.0),
        };
        let filters = ["bicycle", "car", "truck"].map(|class| (class.to_string(), full_filter.clone()));
        let rule = RuleConfig {
            filters: filters.into(),
            response_secs: Some(3600.0),
            schedule: Some(vec![WindowConfig::default()]),
            ..Default::default()
        };
        let place = PlaceConfig { lat: Some(0.0), lon: Some(0.0), ..Default::default() };
        let full = Config {
            cameras: vec![CameraConfig {
                health: HealthConfig { response_secs: Some(14_400.0), ..Default::default() },
                rules: vec![rule],
                zones: vec![ZoneConfig { place: place.clone(), ..Default::default() }],
                place,
                masks: vec![vec![[0.0, 0.0]]],
                ..Default::default()
            }],
            class_names: [("motorcycle".to_string(), Text::default())].into(),
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
