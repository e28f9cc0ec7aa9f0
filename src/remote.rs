//! Remote tuning and feedback from the IOC over MQTT 5 (`[remote]`, off by default).
//!
//! Commands come on `{topic_prefix}/{device}/commands`, one JSON document each
//! (`schemas/command.v1.json`, `docs/commands-v1.md`), on a connection of their own (client id
//! `{client_id}-commands`, MQTT 5, QoS 1), so that the publisher's ordered delivery of reports
//! never waits on them. Each gets exactly one response: on the command's MQTT 5 response topic
//! if it has one (its correlation data echoed), else on `…/commands/{command_id}/response`,
//! saying `accepted` or `refused` with the reason and its key path.
//!
//! A change (`set_rule`, `set_zone`) is written into a copy of the overlay, and the whole config
//! with it is checked as `check` would; only a valid one replaces the overlay, then the daemon
//! reloads as on SIGHUP, through the workbench's path. A reload that still refuses (a class the
//! model lacks) puts the overlay back. So a refused command changes nothing, and an accepted
//! one survives a restart. `dismiss` and `acknowledge` go to the camera whose incident it is.
//! Commands run one at a time, in the order they came.

use crate::config::{MqttConfig, MqttProtocol};
use crate::publish::client::{Client, Connection, connect};
use crate::rules::Feedback;
use crate::telemetry::{CameraList, ConfigState};
use crate::workbench::ReloadRequest;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

/// Feedback on an incident, for the camera whose incident it is: `Ok(camera id)` or why not.
pub struct FeedbackRequest {
    pub incident: Uuid,
    pub feedback: Feedback,
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// What the command handler needs of the daemon.
#[derive(Clone)]
pub struct Remote {
    pub mqtt: MqttConfig,
    pub device_id: String,
    /// The config file, to check a changed overlay against.
    pub config_path: PathBuf,
    pub overlay: PathBuf,
    pub max_bytes: usize,
    pub cameras: CameraList,
    pub config: ConfigState,
    pub reloads: mpsc::Sender<ReloadRequest>,
    pub feedback: mpsc::Sender<FeedbackRequest>,
}

/// Why a command was refused: the key of the command (or of the config it would make) and the
/// reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub path: String,
    pub reason: String,
}

fn refused(path: impl Into<String>, reason: impl Into<String>) -> Refused {
    Refused { path: path.into(), reason: reason.into() }
}

/// A command as it may come; which keys each operation takes is checked by [`Command::check`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    pub command_id: String,
    pub op: String,
    pub camera: Option<String>,
    pub rule: Option<String>,
    pub zone: Option<String>,
    pub set: Option<RuleChange>,
    pub polygon: Option<Vec<[f64; 2]>>,
    pub incident_id: Option<Uuid>,
}

/// The rule keys `set_rule` may change.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleChange {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dwell_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clear_after_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// The operations, and the keys each needs besides `command_id` and `op`.
const OPERATIONS: [(&str, &[&str]); 7] = [
    ("set_rule", &["camera", "rule", "set"]),
    ("set_zone", &["camera", "zone", "polygon"]),
    ("snapshot", &["camera"]),
    ("get_config", &[]),
    ("reload", &[]),
    ("dismiss", &["incident_id"]),
    ("acknowledge", &["incident_id"]),
];

/// The `command_id` of a payload, if it has a usable one (it names the response topic).
fn command_id(document: &Value) -> Option<String> {
    let id = document.get("command_id")?.as_str()?;
    let usable = !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    usable.then(|| id.to_string())
}

/// Reads a command: its id if usable, and the command or why it is refused.
pub fn parse(payload: &[u8], max_bytes: usize) -> (Option<String>, Result<Command, Refused>) {
    if payload.len() > max_bytes {
        let reason = format!("{} bytes, more than remote.max_command_bytes ({max_bytes})", payload.len());
        return (None, Err(refused("", reason)));
    }
    let document: Value = match serde_json::from_slice(payload) {
        Ok(document) => document,
        Err(e) => return (None, Err(refused("", format!("not JSON: {e}")))),
    };
    let id = command_id(&document);
    if !document.is_object() {
        return (id, Err(refused("", "a command is a JSON object")));
    }
    if id.is_none() {
        let reason = "required: 1 to 64 letters, digits, '-', '_' or '.' (it names the response topic)";
        return (id, Err(refused("command_id", reason)));
    }
    let command = serde_path_to_error::deserialize::<_, Command>(&document)
        .map_err(|e| refused(e.path().to_string().trim_start_matches('.'), e.inner().to_string()))
        .and_then(|command| command.check().map(|()| command));
    (id, command)
}

impl Command {
    /// Whether its operation is known, and has what it needs and nothing it does not take.
    fn check(&self) -> Result<(), Refused> {
        let known: Vec<&str> = OPERATIONS.iter().map(|(op, _)| *op).collect();
        let Some((op, needs)) = OPERATIONS.iter().find(|(op, _)| *op == self.op) else {
            return Err(refused("op", format!("unknown operation {:?} (one of {known:?})", self.op)));
        };
        let given = [
            ("camera", self.camera.is_some()),
            ("rule", self.rule.is_some()),
            ("zone", self.zone.is_some()),
            ("set", self.set.is_some()),
            ("polygon", self.polygon.is_some()),
            ("incident_id", self.incident_id.is_some()),
        ];
        for (key, present) in given {
            match (needs.contains(&key), present) {
                (true, false) => return Err(refused(key, format!("required by {op}"))),
                (false, true) => return Err(refused(key, format!("not taken by {op}"))),
                _ => {}
            }
        }
        // The values' ranges are the config's own: a change is checked with the whole config.
        if let Some(set) = &self.set {
            let any = [set.threshold, set.min_score, set.dwell_secs, set.clear_after_secs].iter().any(Option::is_some);
            if !any && set.enabled.is_none() {
                return Err(refused("set", "nothing to change: give at least one key"));
            }
        }
        if let Some(polygon) = &self.polygon {
            if polygon.len() < 3 {
                return Err(refused("polygon", format!("{} points: a zone needs at least 3", polygon.len())));
            }
            if let Some(i) = polygon.iter().position(|p| p.iter().any(|v| !(0.0..=1.0).contains(v))) {
                return Err(refused(format!("polygon[{i}]"), "points are fractions of the frame, 0..=1"));
            }
        }
        Ok(())
    }
}

/// The topic commands come on.
pub fn commands_topic(mqtt: &MqttConfig, device_id: &str) -> String {
    format!("{}/{device_id}/commands", mqtt.topic_prefix)
}

/// Takes commands until `shutdown`: connects (and reconnects), subscribes, and answers each.
pub async fn serve(remote: Remote, shutdown: CancellationToken) {
    let topic = commands_topic(&remote.mqtt, &remote.device_id);
    let mqtt = MqttConfig { protocol: MqttProtocol::V5, ..remote.mqtt.clone() };
    let client_id = format!("{}-commands", crate::publish::client_id(&mqtt, &remote.device_id));
    let (client, mut eventloop) = match connect(&mqtt, &client_id, None) {
        Ok((Client::V5(client), Connection::V5(eventloop))) => (client, eventloop),
        Ok(_) => return,
        Err(e) => {
            error!(error = %e, "remote commands: cannot set up the MQTT connection; no commands will be taken");
            return;
        }
    };
    // One command at a time, in order; the event loop goes on meanwhile (responses go out).
    let turn = Arc::new(Mutex::new(()));
    let mut failures = 0u32;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                match client.subscribe(topic.clone(), QoS::AtLeastOnce).await {
                    Ok(()) => info!(%topic, "remote commands: listening"),
                    Err(e) => warn!(error = %e, "remote commands: cannot subscribe"),
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let (remote, client, turn) = (remote.clone(), client.clone(), turn.clone());
                tokio::spawn(async move {
                    let _turn = turn.lock().await;
                    answer(&remote, &client, &publish.payload, publish.properties).await;
                });
            }
            Ok(_) => {}
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    warn!(error = %e, "remote commands: connection lost; retrying");
                }
                let wait = Duration::from_secs(u64::from(failures.min(5)));
                tokio::select! { _ = shutdown.cancelled() => break, _ = tokio::time::sleep(wait) => {} }
            }
        }
    }
    let _ = client.try_disconnect();
}

/// Runs one command and publishes its response.
async fn answer(remote: &Remote, client: &AsyncClient, payload: &[u8], properties: Option<PublishProperties>) {
    let (id, command) = parse(payload, remote.max_bytes);
    // The operation asked for, as far as it can be read: a refused command's response says it too.
    let op = match &command {
        Ok(command) => command.op.clone(),
        Err(_) if payload.len() <= remote.max_bytes => serde_json::from_slice::<Value>(payload)
            .ok()
            .and_then(|d| d.get("op")?.as_str().map(str::to_string))
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    let outcome = match command {
        Ok(command) => run(remote, client, &command).await,
        Err(refusal) => Err(refusal),
    };
    let config = remote.config.now();
    let mut response = serde_json::Map::new();
    response.insert("command_id".into(), id.clone().into());
    response.insert("op".into(), op.clone().into());
    match outcome {
        Ok(extra) => {
            response.insert("status".into(), "accepted".into());
            if let Value::Object(extra) = extra {
                response.extend(extra);
            }
        }
        Err(Refused { path, reason }) => {
            warn!(command = id.as_deref().unwrap_or("-"), %op, key = %path, %reason, "remote command refused");
            response.insert("status".into(), "refused".into());
            response.insert("path".into(), path.into());
            response.insert("reason".into(), reason.into());
        }
    }
    response.insert("config_version".into(), config.version.into());
    response.insert("config_revision".into(), config.revision.into());
    let response = Value::Object(response);
    let topic = properties.as_ref().and_then(|p| p.response_topic.clone()).unwrap_or_else(|| {
        format!("{}/{}/response", commands_topic(&remote.mqtt, &remote.device_id), id.as_deref().unwrap_or("_"))
    });
    let echo = PublishProperties {
        correlation_data: properties.and_then(|p| p.correlation_data),
        content_type: Some("application/json".into()),
        ..Default::default()
    };
    let body = response.to_string();
    if let Err(e) = client.publish_with_properties(topic, QoS::AtLeastOnce, false, body, echo).await {
        warn!(error = %e, "remote commands: the response could not be queued");
    }
}

/// Carries out a checked command: what the response adds, or why it is refused.
async fn run(remote: &Remote, client: &AsyncClient, command: &Command) -> Result<Value, Refused> {
    let id = command.command_id.as_str();
    match command.op.as_str() {
        "set_rule" | "set_zone" => change(remote, command).await,
        "reload" => reload(remote, &format!("remote command {id}")).await.map(|_| json!({})),
        "get_config" => {
            let running = remote.config.now().running;
            Ok(json!({ "config": running }))
        }
        "snapshot" => snapshot(remote, client, id, command.camera.as_deref().unwrap_or_default()).await,
        "dismiss" | "acknowledge" => {
            let feedback = if command.op == "dismiss" { Feedback::Dismiss } else { Feedback::Acknowledge };
            let incident = command.incident_id.unwrap_or_default();
            let (reply, outcome) = oneshot::channel();
            let stopping = || refused("", "the daemon is stopping");
            remote.feedback.send(FeedbackRequest { incident, feedback, reply }).await.map_err(|_| stopping())?;
            match outcome.await.map_err(|_| stopping())? {
                Ok(camera) => {
                    info!(command = id, %incident, camera = %camera, feedback = ?feedback, "remote feedback taken");
                    Ok(json!({ "camera": camera, "incident_id": incident }))
                }
                Err(reason) => Err(refused("incident_id", reason)),
            }
        }
        other => Err(refused("op", format!("unknown operation {other:?}"))),
    }
}

/// A change to make to the overlay.
type OverlayChange = Box<dyn FnOnce(&mut toml::Table) -> Result<(), String> + Send>;

/// `set_rule` or `set_zone`: the overlay changed, checked, and reloaded.
async fn change(remote: &Remote, command: &Command) -> Result<Value, Refused> {
    let camera = command.camera.clone().unwrap_or_default();
    let running = remote.config.now().running;
    let cameras = running.get("cameras").and_then(Value::as_array).cloned().unwrap_or_default();
    let Some(known) = cameras.iter().find(|c| c.get("id").and_then(Value::as_str) == Some(camera.as_str())) else {
        return Err(refused("camera", format!("no camera {camera:?}")));
    };
    let has = |list: &str, key: &str, name: &str| {
        (known.get(list).and_then(Value::as_array).into_iter().flatten())
            .any(|item| item.get(key).and_then(Value::as_str) == Some(name))
    };
    let (what, change): (String, OverlayChange) = match (&command.rule, &command.zone, &command.set, &command.polygon) {
        (Some(rule), _, Some(set), _) => {
            if !has("rules", "id", rule) {
                return Err(refused("rule", format!("no rule {rule:?} on camera {camera:?}")));
            }
            let (rule, set) = (rule.clone(), set.clone());
            let what = format!("rule {rule}: {}", serde_json::to_string(&set).unwrap_or_default());
            (
                what,
                Box::new(move |overlay| {
                    let table = crate::live::item(crate::live::camera_table(overlay, &camera)?, "rules", "id", &rule)?;
                    let number = |v: f64| toml::Value::Float((v * 1e6).round() / 1e6);
                    let keys = [
                        ("threshold", set.threshold),
                        ("min_score", set.min_score),
                        ("dwell_secs", set.dwell_secs),
                        ("clear_after_secs", set.clear_after_secs),
                    ];
                    for (key, value) in keys {
                        if let Some(v) = value {
                            table.insert(key.into(), number(v));
                        }
                    }
                    if let Some(enabled) = set.enabled {
                        table.insert("enabled".into(), toml::Value::Boolean(enabled));
                    }
                    Ok(())
                }),
            )
        }
        (_, Some(zone), _, Some(polygon)) => {
            if !has("zones", "name", zone) {
                return Err(refused("zone", format!("no zone {zone:?} on camera {camera:?}")));
            }
            let (zone, polygon) = (zone.clone(), polygon.clone());
            let what = format!("zone {zone}: {polygon:?}");
            (
                what,
                Box::new(move |overlay| {
                    let table =
                        crate::live::item(crate::live::camera_table(overlay, &camera)?, "zones", "name", &zone)?;
                    let points = polygon.iter().map(|p| crate::live::round_point(*p));
                    let points = points.map(|[x, y]| toml::Value::Array(vec![x.into(), y.into()])).collect();
                    table.insert("polygon".into(), toml::Value::Array(points));
                    Ok(())
                }),
            )
        }
        _ => return Err(refused("op", "set_rule takes rule and set; set_zone takes zone and polygon")),
    };
    let (overlay, config_path) = (remote.overlay.clone(), remote.config_path.clone());
    let checked = tokio::task::spawn_blocking(move || -> Result<Option<String>, Refused> {
        let (before, text) = crate::live::changed_overlay(&overlay, change).map_err(|e| refused("", e))?;
        let candidate = overlay.with_extension("toml.candidate");
        crate::live::write_overlay(&candidate, &text).map_err(|e| refused("", e))?;
        let loaded = crate::config::load_with(&config_path, Some(&candidate));
        let outcome = match loaded {
            Ok(_) => std::fs::rename(&candidate, &overlay)
                .map(|()| before)
                .map_err(|e| refused("", format!("replacing {}: {e}", overlay.display()))),
            Err(crate::config::ConfigError::Invalid { problems, .. }) => {
                let path = problems.first().map(|p| p.path.clone()).unwrap_or_default();
                let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
                Err(refused(path, format!("the config would be invalid: {}", all.join("; "))))
            }
            Err(e) => Err(refused("", e.to_string())),
        };
        let _ = std::fs::remove_file(&candidate);
        outcome
    })
    .await
    .map_err(|e| refused("", e.to_string()))??;
    match reload(remote, &format!("remote command {}", command.command_id)).await {
        Ok(version) => {
            let revision = crate::live::overlay_revision(&remote.overlay);
            info!(command = %command.command_id, change = %what, config_version = %version, config_revision = revision,
                  overlay = %remote.overlay.display(), "remote change applied");
            Ok(json!({}))
        }
        Err(refusal) => {
            // Put the overlay back, and the config before it back in force.
            let restored = match &checked {
                Some(before) => crate::live::write_overlay(&remote.overlay, before),
                None => std::fs::remove_file(&remote.overlay).map_err(|e| e.to_string()),
            };
            if let Err(e) = restored {
                error!(error = %e, overlay = %remote.overlay.display(), "remote change refused, and the overlay could not be put back");
            }
            let _ = reload(remote, "remote command refused: overlay put back").await;
            Err(refusal)
        }
    }
}

/// Reloads as SIGHUP would: the config version now running, or the first problem.
async fn reload(remote: &Remote, from: &str) -> Result<String, Refused> {
    let (reply, outcome) = oneshot::channel();
    let stopping = || refused("", "the daemon is stopping");
    remote.reloads.send(ReloadRequest { from: from.to_string(), reply }).await.map_err(|_| stopping())?;
    match outcome.await.map_err(|_| stopping())? {
        Ok(version) => Ok(version),
        Err(problems) => {
            let path = problems.first().and_then(|p| p.split_once(": ")).map_or("", |(path, _)| path);
            Err(refused(path, format!("reload refused: {}", problems.join("; "))))
        }
    }
}

/// `snapshot`: the camera's view now, blurred as reports are, on `…/commands/{id}/snapshot`.
async fn snapshot(remote: &Remote, client: &AsyncClient, id: &str, camera: &str) -> Result<Value, Refused> {
    let Some(listed) = remote.cameras.get(camera) else {
        return Err(refused("camera", format!("no camera {camera:?}")));
    };
    // Asking makes the camera keep its frames for a while; the next one comes within a second
    // or two of a live camera.
    let mut seen = listed.live.ask();
    for _ in 0..30 {
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        seen = listed.live.ask();
    }
    let Some(seen) = seen else { return Err(refused("camera", "no frame from the camera in 6 s")) };
    let at = crate::report::timestamp(seen.frame.at);
    let view = listed.live.clone();
    let jpeg = tokio::task::spawn_blocking(move || crate::live::picture(&view, &seen))
        .await
        .map_err(|e| refused("", e.to_string()))?
        .map_err(|e| refused("", e))?;
    let topic = format!("{}/{id}/snapshot", commands_topic(&remote.mqtt, &remote.device_id));
    let bytes = jpeg.len();
    client.publish(topic.clone(), QoS::AtLeastOnce, false, jpeg).await.map_err(|e| refused("", e.to_string()))?;
    Ok(json!({ "snapshot": { "topic": topic, "bytes": bytes, "at": at } }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(payload: &str) -> (Option<String>, Refused) {
        let (id, outcome) = parse(payload.as_bytes(), 1024);
        (id, outcome.unwrap_err())
    }

    #[test]
    fn bad_commands_are_refused_with_the_key_that_is_wrong() {
        let path = |payload: &str| refusal(payload).1.path;
        assert_eq!(refusal("{not json").1.path, "");
        assert!(refusal("{not json").1.reason.starts_with("not JSON"));
        assert_eq!(
            refusal(&format!("{{\"command_id\":\"a\",\"op\":\"reload\",\"x\":\"{}\"}}", "y".repeat(2000))).1.reason,
            "2039 bytes, more than remote.max_command_bytes (1024)"
        );
        assert_eq!(path(r#"{"op":"reload"}"#), "command_id");
        assert_eq!(path(r#"{"command_id":"a/b","op":"reload"}"#), "command_id");
        assert_eq!(
            refusal(r#"{"command_id":"c1","op":"explode"}"#),
            (
                Some("c1".into()),
                refused(
                    "op",
                    "unknown operation \"explode\" (one of [\"set_rule\", \"set_zone\", \"snapshot\", \"get_config\", \"reload\", \"dismiss\", \"acknowledge\"])"
                )
            )
        );
        assert_eq!(
            path(r#"{"command_id":"c","op":"set_rule","camera":"k","rule":"r","set":{"threshold":"high"}}"#),
            "set.threshold"
        );
        assert_eq!(
            path(r#"{"command_id":"c","op":"set_rule","camera":"k","rule":"r","set":{"colour":1}}"#),
            "set.colour"
        );
        assert_eq!(path(r#"{"command_id":"c","op":"set_rule","camera":"k","set":{"dwell_secs":3}}"#), "rule");
        assert_eq!(path(r#"{"command_id":"c","op":"set_rule","camera":"k","rule":"r","set":{}}"#), "set");
        assert_eq!(
            path(r#"{"command_id":"c","op":"set_zone","camera":"k","zone":"z","polygon":[[0,0],[1,1]]}"#),
            "polygon"
        );
        assert_eq!(
            path(r#"{"command_id":"c","op":"set_zone","camera":"k","zone":"z","polygon":[[0,0],[1,1],[2,0]]}"#),
            "polygon[2]"
        );
        assert_eq!(path(r#"{"command_id":"c","op":"reload","camera":"k"}"#), "camera");
        assert_eq!(path(r#"{"command_id":"c","op":"dismiss","incident_id":"nope"}"#), "incident_id");
        assert_eq!(path(r#"["c"]"#), "");
        let (id, ok) =
            parse(br#"{"command_id":"c.2","op":"set_rule","camera":"k","rule":"r","set":{"enabled":false}}"#, 1024);
        assert_eq!(id.as_deref(), Some("c.2"));
        assert!(ok.is_ok());
    }
}
