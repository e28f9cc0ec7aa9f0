//! The `[[cameras]]` part of the file: each camera, its zones, masks, tracking and rules.

use super::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CameraConfig {
    /// Identifies the camera in topics and reports. Required; letters, digits, `-`, `_`.
    pub id: String,
    /// Human name shown in reports. Default: the id.
    pub name: String,
    /// Where it looks, in words ("Lê Lợi / Nguyễn Huệ, north side"). Default empty.
    pub location: String,
    /// Where its cases are, for the IOC to route them; a zone's own place overrides it field
    /// by field.
    pub place: PlaceConfig,
    /// `rtsp://[user:password@]host[:port]/path`. Required. Credentials never reach logs or reports.
    pub url: Secret,
    /// User name, instead of one in the URL. Basic and digest authentication both work: the
    /// camera says which it wants. Default empty.
    pub username: String,
    /// Password for `username`. Better kept out of the file: `password_file` or `password_env`.
    pub password: Secret,
    /// A file holding the password (trailing newline ignored); a relative path is looked up in
    /// systemd's `$CREDENTIALS_DIRECTORY` (`LoadCredential=`). Default empty.
    pub password_file: std::path::PathBuf,
    /// The name of an environment variable holding the password. Default empty.
    pub password_env: String,
    /// RTP over the RTSP connection (`tcp`, the default: passes firewalls and NAT, no loss on
    /// the wire) or over `udp` (less latency on a clean LAN; lost packets are lost).
    pub transport: TransportConfig,
    /// `sampled` (default) decodes what the sampled frames need: up to each sample, and then
    /// nothing until the next keyframe when that comes before the next sample is due.
    /// `keyframes` decodes only random-access frames, about one per GOP, for low-power boxes:
    /// sidewalk encroachment and garbage are slow. `all` decodes every frame.
    pub decode: DecodeConfig,
    /// Frames per second handed to the detector. Default 2: rules count seconds, not frames.
    pub detect_fps: f64,
    /// Seconds without a frame before the connection counts as stalled and is rebuilt (at most
    /// an hour). Default 10.
    pub stall_timeout_secs: f64,
    /// Reconnect backoff bounds in seconds (doubling from min to max, at most an hour).
    /// Defaults 1 and 30.
    pub reconnect_min_secs: f64,
    pub reconnect_max_secs: f64,
    /// Named areas of the frame that rules watch.
    pub zones: Vec<ZoneConfig>,
    /// Polygons (normalised) where detections are ignored: a billboard, a parking bay, the
    /// road beyond the sidewalk. A detection is ignored when its bottom centre is inside one.
    pub masks: Vec<Vec<[f64; 2]>>,
    /// Polygons (normalised) blurred in every snapshot of this camera: windows, a school gate,
    /// anything the city must not publish. Default: none.
    pub privacy_masks: Vec<Vec<[f64; 2]>>,
    pub tracking: TrackingConfig,
    /// Whether the camera itself works: offline, view blocked, view moved (see `health`).
    pub health: HealthConfig,
    /// Zone rules for this camera.
    pub rules: Vec<RuleConfig>,
}

impl Default for CameraConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            name: String::new(),
            location: String::new(),
            place: PlaceConfig::default(),
            url: Secret::default(),
            username: String::new(),
            password: Secret::default(),
            password_file: std::path::PathBuf::new(),
            password_env: String::new(),
            transport: TransportConfig::Tcp,
            decode: DecodeConfig::Sampled,
            detect_fps: 2.0,
            stall_timeout_secs: 10.0,
            reconnect_min_secs: 1.0,
            reconnect_max_secs: 30.0,
            zones: Vec::new(),
            masks: Vec::new(),
            privacy_masks: Vec::new(),
            tracking: TrackingConfig::default(),
            health: HealthConfig::default(),
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportConfig {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodeConfig {
    Sampled,
    Keyframes,
    All,
}

impl CameraConfig {
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() { &self.id } else { &self.name }
    }
}

/// Where a case is: the ward it goes to and where to send someone. Reports carry the zone's,
/// field by field, else the camera's.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlaceConfig {
    /// Street address, in words. Default empty.
    pub address: String,
    /// The ward or commune (phường, xã) that handles it. Default empty.
    pub ward: String,
    /// WGS84 latitude and longitude in degrees, both or neither. Default: none.
    pub lat: Option<f64>,
    pub lon: Option<f64>,
}

/// A named polygon in normalised frame coordinates (0..1, origin top-left).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZoneConfig {
    /// Rules name their zone by this. Required, unique per camera.
    pub name: String,
    /// At least 3 points. Required.
    pub polygon: Vec<[f64; 2]>,
    /// What of an object must be inside: `bottom_center` (where it touches the ground; the
    /// default), `center`, or `overlap` (at least `overlap` of its box's area).
    pub membership: MembershipConfig,
    /// With `membership = "overlap"`: the fraction of the box inside. Default 0.5.
    pub overlap: f64,
    /// Consecutive detections in (or out) before an object counts as entered (or left): a box
    /// wobbling on the edge does not flap. Default 2.
    pub inertia: u32,
    /// Where this part of the street is, where it differs from the camera's place.
    pub place: PlaceConfig,
}

impl Default for ZoneConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            polygon: Vec::new(),
            membership: MembershipConfig::BottomCenter,
            overlap: 0.5,
            inertia: 2,
            place: PlaceConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipConfig {
    BottomCenter,
    Center,
    Overlap,
}

/// How objects are followed from frame to frame (see `track`). Times are seconds of stream time.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackingConfig {
    /// Detections in a row before a new track counts. Default 3: one stray box is not an object.
    pub confirm_hits: u32,
    /// A moving track is dropped after this long unseen. Default 3.
    pub moving_max_unseen_secs: f64,
    /// A stationary track coasts on its last box this long unseen (a bus or a crowd in front
    /// of it) before it is dropped. Default 60.
    pub stationary_max_unseen_secs: f64,
    /// A stationary object missed while its place looks like the street behind it (not covered,
    /// not like the object) has gone after this long; its presence ended when it was last seen.
    /// Default 2: two detections at 1/s, four at 2/s, so one odd frame decides nothing.
    pub gone_after_secs: f64,
    /// How long an object's box must stay put before it is stationary (parked, dumped).
    /// Default 5.
    pub stationary_after_secs: f64,
    /// IoU with its own recent median box above which an object counts as not moving. Default 0.7.
    pub still_iou: f64,
    /// A detection is a stationary object if its box has at least this IoU with the object's
    /// anchor (its median box); it moves again after two boxes in a row below it. Lower than
    /// `still_iou`, so jitter does not flip it. Default 0.5.
    pub moving_iou: f64,
    /// Largest distance (bottom centres apart in units of the object's size, plus the change
    /// of size) for a moving object to be matched. Default 2.5: at 1 detection per second a
    /// walker moves more than a body width.
    pub match_distance: f64,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        Self {
            confirm_hits: 3,
            moving_max_unseen_secs: 3.0,
            stationary_max_unseen_secs: 60.0,
            gone_after_secs: 2.0,
            stationary_after_secs: 5.0,
            still_iou: 0.7,
            moving_iou: 0.5,
            match_distance: 2.5,
        }
    }
}

/// The camera-health cases of one camera (see `health`): each opens an `urban_infrastructure`
/// incident and pauses the camera's rules while it lasts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Default true.
    pub enabled: bool,
    /// Seconds without a frame before the camera counts as offline. Default 300: reconnects
    /// after a network hiccup take seconds, a dead camera stays dead.
    pub offline_after_secs: f64,
    /// Seconds the view must stay without structure (black, covered) to open a case. Default 20:
    /// a bus passing close to the lens takes a few.
    pub blocked_after_secs: f64,
    /// Seconds the view must stay unlike its reference to open a case. Default 30.
    pub moved_after_secs: f64,
    /// Seconds the view must look right again before a blocked or moved case resolves. Default 5.
    pub clear_after_secs: f64,
    /// Fraction of the picture's grid cells on an edge under which it has no structure.
    /// Default 0.01.
    pub blocked_edges: f64,
    /// Structure likeness to the reference (0..1) under which the view has moved. Default 0.4.
    pub moved_likeness: f64,
    /// The cases' priority. Default "high": every rule of the camera is blind meanwhile.
    pub priority: Priority,
    /// Seconds to the cases' due_at. Default: by priority, as for rules.
    pub response_secs: Option<f64>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            offline_after_secs: 300.0,
            blocked_after_secs: 20.0,
            moved_after_secs: 30.0,
            clear_after_secs: 5.0,
            blocked_edges: 0.01,
            moved_likeness: 0.4,
            priority: Priority::High,
            response_secs: None,
        }
    }
}

/// One rule: at least `min_count` stationary objects of `classes` inside `zone` for
/// `dwell_secs` open an incident; `clear_after_secs` without any resolves it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    /// Identifies the rule within its camera. Required.
    pub id: String,
    /// What is wrong, machine-readable (`sidewalk_encroachment`, `garbage`, `obstacle`). Required.
    pub violation: String,
    /// The city's report field. Default `urban_order`.
    pub category: Category,
    /// The zone (by name) this rule watches. Required.
    pub zone: String,
    /// Whether the rule runs. A rule turned off (here, or by a remote command) is checked but not
    /// run; turning it off in a reload resolves its open incident (`resolved_by: config`).
    /// Default true.
    pub enabled: bool,
    /// The model whose detections this rule reads, by name (see `[models.NAME]`). Default
    /// empty: `[model]`.
    pub model: String,
    /// Model class names that count. Required, at least one.
    pub classes: Vec<String>,
    /// Least score of a detection to be considered at all. Default 0.5.
    pub min_score: f32,
    /// Least median score over a track's recent detections for it to count. Default 0.6:
    /// one lucky frame does not make an object.
    pub threshold: f32,
    /// Box area as a fraction of the frame, inclusive. Defaults 0 and 1.
    pub min_area: f64,
    pub max_area: f64,
    /// Box width / height, inclusive. Defaults 0 and 100 (no limit).
    pub min_ratio: f64,
    pub max_ratio: f64,
    /// Per-class overrides of the five filters above: `[cameras.rules.filters.motorbike]`.
    pub filters: BTreeMap<String, FilterConfig>,
    /// Stationary objects needed at once. Default 1.
    pub min_count: u32,
    /// Seconds each object must stay, counted from when it stopped inside the zone, before it
    /// counts (at most a day). Default 10.
    pub dwell_secs: f64,
    /// Seconds with no stationary object in the zone before the incident resolves (at most a
    /// day). Default 5.
    pub clear_after_secs: f64,
    /// Seconds after an incident resolves before this rule can open another (at most a day).
    /// Default 60: an object that leaves and comes straight back is one case, not two.
    pub cooldown_secs: f64,
    /// Seconds between `updated` reports while an incident stays open and unchanged; 0 turns
    /// them off (a change of count is always reported). Default 900.
    pub update_every_secs: f64,
    /// How soon the city should act: `urgent`, `high`, `normal` (the default) or `low`.
    pub priority: Priority,
    /// Seconds from opening to the report's `due_at`; an incident still open then sends one
    /// `updated` report marked `overdue`. Default by priority: urgent 1800 (half an hour), high
    /// 14400 (4 h), normal 86400 (a working day and night), low 259200 (3 days).
    pub response_secs: Option<f64>,
    /// When the rule is on: weekly windows in `device.timezone`. Outside them it opens nothing
    /// and an open incident resolves (`resolved_by: "schedule"`). Default: always on.
    pub schedule: Option<Vec<WindowConfig>>,
    /// Report text templates overriding the built-in ones for this rule's violation.
    pub text: TemplatesConfig,
}

/// How soon a case needs handling; the IOC routes on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Urgent,
    High,
    Normal,
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Urgent => "urgent",
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }

    /// The response time when a rule sets none, in seconds.
    pub fn default_response_secs(self) -> f64 {
        match self {
            Self::Urgent => 1800.0,
            Self::High => 14_400.0,
            Self::Normal => 86_400.0,
            Self::Low => 259_200.0,
        }
    }
}

/// One weekly window of a rule's schedule, in local wall-clock time.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WindowConfig {
    /// The days it starts on: `mon` … `sun`. Default: every day.
    pub days: Vec<String>,
    /// `HH:MM` it starts. Default `00:00`.
    pub from: String,
    /// `HH:MM` it ends, up to `24:00`; at or before `from`, it ends the next day (a night
    /// market from 18:00 to 02:00). Default `24:00`.
    pub to: String,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            days: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].map(String::from).into(),
            from: "00:00".into(),
            to: "24:00".into(),
        }
    }
}

impl Default for RuleConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            violation: String::new(),
            category: Category::UrbanOrder,
            zone: String::new(),
            enabled: true,
            model: String::new(),
            classes: Vec::new(),
            min_score: 0.5,
            threshold: 0.6,
            min_area: 0.0,
            max_area: 1.0,
            min_ratio: 0.0,
            max_ratio: 100.0,
            filters: BTreeMap::new(),
            min_count: 1,
            dwell_secs: 10.0,
            clear_after_secs: 5.0,
            cooldown_secs: 60.0,
            update_every_secs: 900.0,
            priority: Priority::Normal,
            response_secs: None,
            schedule: None,
            text: TemplatesConfig::default(),
        }
    }
}

/// A class's own filters; a key left out takes the rule's value.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {
    pub min_score: Option<f32>,
    pub threshold: Option<f32>,
    pub min_area: Option<f64>,
    pub max_area: Option<f64>,
    pub min_ratio: Option<f64>,
    pub max_ratio: Option<f64>,
}

/// Templates for each event; an empty text keeps the built-in one. Placeholders: {violation},
/// {objects} ("3 xe máy"), {count}, {camera}, {location}, {place} (camera and location),
/// {zone}, {since} (local HH:MM), {duration} ("12 phút").
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplatesConfig {
    pub opened: Text,
    pub updated: Text,
    pub resolved: Text,
}

/// A text in each report language.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Text {
    pub en: String,
    pub vi: String,
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
