//! What the daemon runs on: the config turned, once at start, into types that cannot be wrong
//! later — durations as `Duration`, URLs parsed with credentials split off, zones resolved by
//! name, per-class filters filled in.

use super::{Category, Config, Secret, Text, redact_url};
use crate::track::TrackerConfig;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A loaded, validated configuration: the file as written (for `check` and the config version)
/// and the runtime types built from it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub cameras: Vec<Arc<Camera>>,
    /// The file it was read from: a reload reads it again.
    pub path: PathBuf,
    /// The overlay file laid over it, whether or not one exists yet.
    pub overlay: PathBuf,
    /// The keys the overlay or the environment set, for `check`.
    pub overrides: Vec<super::Override>,
}

impl Settings {
    pub fn camera(&self, id: &str) -> Option<&Arc<Camera>> {
        self.cameras.iter().find(|c| c.id == id)
    }

    /// Where the daemon keeps what must survive a restart (open incidents, cooldowns).
    pub fn state_dir(&self) -> &PathBuf {
        &self.config.device.state_dir
    }

    /// The outbox of reports waiting for the broker, in the state directory.
    pub fn outbox_path(&self) -> PathBuf {
        self.state_dir().join("outbox.db")
    }

    /// Where evidence clips are kept, in the state directory.
    pub fn evidence_dir(&self) -> PathBuf {
        self.state_dir().join("evidence")
    }
}

/// One camera as the daemon runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Camera {
    pub id: String,
    /// The id when no name was given.
    pub name: String,
    pub location: String,
    pub url: CameraUrl,
    pub transport: super::TransportConfig,
    pub decode: super::DecodeConfig,
    pub detect_fps: f64,
    pub stall_timeout: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub masks: Vec<Vec<[f64; 2]>>,
    pub privacy_masks: Vec<Vec<[f64; 2]>>,
    pub tracking: TrackerConfig,
    /// Where its cases are (its zones' places fall back on it).
    pub place: Place,
    pub health: HealthSettings,
    pub rules: Vec<Arc<Rule>>,
    /// Class names as reports write them (`motorbike` → "xe máy").
    pub class_names: Arc<BTreeMap<String, Text>>,
}

impl Camera {
    /// The models its rules read, as indexes into `Config::all_models`, in order; `[model]`
    /// alone for a camera without rules, so it is still watched.
    pub fn models(&self) -> Vec<usize> {
        let mut models: Vec<usize> = self.rules.iter().map(|r| r.model).collect();
        models.sort_unstable();
        models.dedup();
        if models.is_empty() {
            models.push(0);
        }
        models
    }

    /// Whether `other` streams the same way (URL, credentials, transport, decoding, timings)
    /// through the same models: if so, a reload keeps its connection and decoder.
    pub fn same_source(&self, other: &Camera) -> bool {
        self.url == other.url
            && self.transport == other.transport
            && self.decode == other.decode
            && self.detect_fps == other.detect_fps
            && self.stall_timeout == other.stall_timeout
            && (self.reconnect_min, self.reconnect_max) == (other.reconnect_min, other.reconnect_max)
            && self.models() == other.models()
    }

    /// Camera `id` at `url` with every other setting at its default (see `CameraConfig`) and no
    /// rules: for `fieldwatch probe`, and for tests and benchmarks of one stage.
    pub fn at(id: &str, url: CameraUrl) -> Self {
        let defaults = super::CameraConfig::default();
        Self {
            id: id.into(),
            name: id.into(),
            location: String::new(),
            url,
            transport: defaults.transport,
            decode: defaults.decode,
            detect_fps: defaults.detect_fps,
            stall_timeout: Duration::from_secs_f64(defaults.stall_timeout_secs),
            reconnect_min: Duration::from_secs_f64(defaults.reconnect_min_secs),
            reconnect_max: Duration::from_secs_f64(defaults.reconnect_max_secs),
            masks: Vec::new(),
            privacy_masks: Vec::new(),
            tracking: TrackerConfig::default(),
            place: Place::default(),
            health: HealthSettings::default(),
            rules: Vec::new(),
            class_names: Arc::default(),
        }
    }
}

/// An RTSP URL without its credentials, the credentials, and a form safe to log.
#[derive(Debug, Clone, PartialEq)]
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

/// A camera's health watch as it runs (see `HealthConfig` for what each field means).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSettings {
    pub enabled: bool,
    pub offline_after: Duration,
    pub blocked_after: Duration,
    pub moved_after: Duration,
    pub clear_after: Duration,
    pub blocked_edges: f32,
    pub moved_likeness: f32,
    pub priority: super::Priority,
    pub respond_within: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        let c = super::HealthConfig::default();
        Self {
            enabled: c.enabled,
            offline_after: Duration::from_secs_f64(c.offline_after_secs),
            blocked_after: Duration::from_secs_f64(c.blocked_after_secs),
            moved_after: Duration::from_secs_f64(c.moved_after_secs),
            clear_after: Duration::from_secs_f64(c.clear_after_secs),
            blocked_edges: c.blocked_edges as f32,
            moved_likeness: c.moved_likeness as f32,
            priority: c.priority,
            respond_within: Duration::from_secs_f64(c.priority.default_response_secs()),
        }
    }
}

/// A zone as rules use it.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub name: String,
    pub polygon: Vec<[f64; 2]>,
    pub membership: Membership,
    pub inertia: u32,
    /// The zone's place over its camera's.
    pub place: Place,
}

/// Where a case is, as reports carry it (`place`): each field the zone's, else the camera's.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Place {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ward: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
}

impl Place {
    /// `zone`'s fields, each falling back to `camera`'s.
    pub fn of(zone: &super::PlaceConfig, camera: &super::PlaceConfig) -> Self {
        let text = |z: &String, c: &String| [z, c].into_iter().find(|t| !t.is_empty()).cloned();
        let (lat, lon) = match (zone.lat, zone.lon) {
            (Some(lat), Some(lon)) => (Some(lat), Some(lon)),
            _ => (camera.lat, camera.lon),
        };
        Self { address: text(&zone.address, &camera.address), ward: text(&zone.ward, &camera.ward), lat, lon }
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What of a box must be inside a zone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Membership {
    BottomCenter,
    Center,
    /// At least this fraction of the box's area.
    Overlap(f64),
}

/// One rule as the rules stage runs it (see `RuleConfig` for what each field means).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: String,
    pub violation: String,
    pub category: Category,
    pub zone: Zone,
    /// The model whose detections it reads: an index into `Config::all_models`.
    pub model: usize,
    pub classes: Vec<String>,
    /// Filters for each of `classes`.
    pub filters: BTreeMap<String, Filter>,
    pub min_count: u32,
    pub dwell: Duration,
    pub clear_after: Duration,
    pub cooldown: Duration,
    /// `None`: only changes of count are reported while open.
    pub update_every: Option<Duration>,
    pub priority: super::Priority,
    /// From opening to `due_at`.
    pub respond_within: Duration,
    /// `None`: always on.
    pub schedule: Option<crate::rules::Schedule>,
    /// Overrides of the built-in report texts (empty: built-in).
    pub text: Templates,
}

/// Report text overrides per event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Templates {
    pub opened: Text,
    pub updated: Text,
    pub resolved: Text,
}

/// Which detections and tracks of one class a rule considers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Filter {
    pub min_score: f32,
    pub threshold: f32,
    pub min_area: f64,
    pub max_area: f64,
    pub min_ratio: f64,
    pub max_ratio: f64,
}
