//! Publishing to the IOC over MQTT (rumqttc, MQTT 5 or 3.1.1): reports from the [`Outbox`]
//! with QoS 1, plus a retained device status with a last will, so the IOC sees `offline`
//! whether the box stops cleanly or drops.
//!
//! Delivery is one report at a time: publish (its images first, in separate mode), wait for the
//! PUBACK, then delete it from the outbox and take the next. A report leaves the disk only once
//! the broker has it; after a lost connection rumqttc sends it again, and after a restart the
//! outbox does, so a report may arrive twice (the IOC de-duplicates on `report_id`) but never
//! not at all. The PUBACK is matched by packet id, so a late acknowledgement of an earlier
//! message is never taken for the current one.
//!
//! With MQTT 5 the PUBACK also says whether the broker took the message: one it refuses (ACL,
//! quota) is tried [`REFUSALS`] times, then becomes a dead letter in the outbox with the
//! broker's reason, as does one larger than either side's packet limit, so it neither vanishes
//! nor holds up the reports behind it. MQTT 3.1.1 has no way to refuse a publish: mosquitto
//! acknowledges one its ACL denied as if it had taken it.
//!
//! rumqttc only makes progress while its event loop is polled, so the loop runs in its own
//! task (`drive`) with a shutdown arm and backoff on errors — a bare `loop { poll() }` spins
//! at full CPU while the broker is down — and tells the publisher what happened on the link.

pub(crate) mod client;

use crate::config::{MqttConfig, SnapshotMode};
use crate::outbox::{Outbox, Pending};
use crate::report::{self, timestamp};
use backon::BackoffBuilder;
use client::{Client, Connection, Link};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// How long shutdown waits for the `offline` status to be acknowledged.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// A message not acknowledged this long on a live connection is sent again.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// A report the broker refuses is tried this many times, a pause apart, before it becomes a
/// dead letter: a refusal may be passing (quota), an ACL's is not.
pub const REFUSALS: u32 = 3;
const REFUSAL_PAUSE: Duration = Duration::from_secs(1);
/// What a PUBLISH adds to its topic and payload, at most: fixed header, lengths, packet id,
/// properties.
const PUBLISH_OVERHEAD: usize = 16;

pub fn reports_topic(config: &MqttConfig, device_id: &str, camera_id: &str) -> String {
    format!("{}/{device_id}/{camera_id}/reports", config.topic_prefix)
}

pub fn status_topic(config: &MqttConfig, device_id: &str) -> String {
    format!("{}/{device_id}/status", config.topic_prefix)
}

fn status(device_id: &str, state: &str, reason: &str) -> serde_json::Value {
    serde_json::json!({
        "state": state,
        "reason": reason,
        "device_id": device_id,
        "version": env!("CARGO_PKG_VERSION"),
        "at": timestamp(chrono::Utc::now()),
    })
}

/// Where separate snapshots go: `{prefix}/{device}/{camera}/snapshots/{report_id}`.
pub fn snapshots_topic(config: &MqttConfig, device_id: &str, camera_id: &str) -> String {
    format!("{}/{device_id}/{camera_id}/snapshots", config.topic_prefix)
}

pub fn heartbeat_topic(config: &MqttConfig, device_id: &str) -> String {
    format!("{}/{device_id}/heartbeat", config.topic_prefix)
}

/// Describes the device for its status and heartbeat: asked each time one is sent.
pub type Describe = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Whether this publisher speaks for the device on its status and heartbeat topics. The daemon
/// does; a replay publishing to the same broker must not announce the device online or offline.
#[derive(Clone)]
pub enum Presence {
    /// `describe` says what the status and heartbeat carry; `changed` wakes the publisher to
    /// send the retained status again (a reload changed the config it names).
    Announce {
        describe: Describe,
        changed: Arc<tokio::sync::Notify>,
    },
    Quiet,
}

/// The configured client id, or `fieldwatch-{device}`.
pub fn client_id(config: &MqttConfig, device_id: &str) -> String {
    if config.client_id.is_empty() { format!("fieldwatch-{device_id}") } else { config.client_id.clone() }
}

/// Why a delivery did not complete.
enum Interrupted {
    Shutdown,
    LinkClosed,
}

/// What the broker did with a message.
enum Outcome {
    Taken,
    Refused(String),
}

struct Publisher {
    client: Client,
    link: mpsc::UnboundedReceiver<Link>,
    connected: bool,
    /// Set on every (re)connect: the retained `online` status is due again.
    reconnected: bool,
    /// The largest packet the broker takes, if it said (MQTT 5).
    broker_max_packet: Option<u32>,
}

impl Publisher {
    /// Takes link events until connected.
    async fn connected(&mut self, shutdown: &CancellationToken) -> Result<(), Interrupted> {
        while !self.connected {
            tokio::select! {
                _ = shutdown.cancelled() => return Err(Interrupted::Shutdown),
                event = self.link.recv() => match event {
                    Some(event) => self.note(&event),
                    None => return Err(Interrupted::LinkClosed),
                },
            }
        }
        Ok(())
    }

    fn note(&mut self, event: &Link) {
        match event {
            Link::Connected { max_packet } => {
                (self.connected, self.reconnected, self.broker_max_packet) = (true, true, *max_packet)
            }
            Link::Lost => self.connected = false,
            Link::Sent(_) | Link::Acked { .. } => {}
        }
    }

    /// Publishes one message with QoS 1 and waits for its PUBACK, sending it again after a
    /// timeout. A lost connection is waited out: rumqttc sends it again on reconnecting.
    async fn deliver(
        &mut self,
        topic: &str,
        payload: &[u8],
        retain: bool,
        shutdown: &CancellationToken,
    ) -> Result<Outcome, Interrupted> {
        loop {
            self.connected(shutdown).await?;
            if self.client.publish(topic, retain, payload.to_vec()).await.is_err() {
                return Err(Interrupted::LinkClosed); // the event loop is gone
            }
            let mut ours = HashSet::new();
            let deadline = tokio::time::sleep(ACK_TIMEOUT);
            tokio::pin!(deadline);
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return Err(Interrupted::Shutdown),
                    _ = &mut deadline, if self.connected => break,
                    event = self.link.recv() => event.ok_or(Interrupted::LinkClosed)?,
                };
                self.note(&event);
                match event {
                    Link::Sent(pkid) => {
                        ours.insert(pkid);
                    }
                    Link::Acked { pkid, refused } if ours.contains(&pkid) => {
                        return Ok(refused.map_or(Outcome::Taken, Outcome::Refused));
                    }
                    Link::Acked { pkid, .. } => debug!(pkid, "late puback of an earlier message; ignored"),
                    Link::Connected { .. } => deadline.as_mut().reset(tokio::time::Instant::now() + ACK_TIMEOUT),
                    Link::Lost => {}
                }
            }
            warn!(%topic, "no puback within {ACK_TIMEOUT:?}; sending again");
        }
    }

    /// Why a message of this size can never be sent, if it cannot.
    fn too_large(&self, config: &MqttConfig, topic: &str, payload: &[u8]) -> Option<String> {
        let size = topic.len() + payload.len() + PUBLISH_OVERHEAD;
        if size > config.max_packet_bytes {
            return Some(format!("{size} bytes is above mqtt.max_packet_bytes ({})", config.max_packet_bytes));
        }
        let broker = self.broker_max_packet.map(|m| m as usize).filter(|max| size > *max)?;
        Some(format!("{size} bytes is above the broker's maximum packet size ({broker})"))
    }

    /// Sends one queued report: its images on their own topics first (separate mode), then
    /// its JSON.
    async fn send_report(
        &mut self,
        config: &MqttConfig,
        report: &Pending,
        mode: SnapshotMode,
        snapshots_topic: &str,
        shutdown: &CancellationToken,
    ) -> Result<Outcome, Interrupted> {
        let wire = match report::wire(&report.json, &report.images, report.images_evicted, mode, snapshots_topic) {
            Ok(wire) => wire,
            Err(reason) => return Ok(Outcome::Refused(reason)),
        };
        let messages = wire.images.iter().map(|(t, p)| (t.as_str(), p.as_slice()));
        let messages: Vec<(&str, &[u8])> = messages.chain([(report.topic.as_str(), wire.json.as_slice())]).collect();
        for (topic, payload) in messages {
            self.connected(shutdown).await?;
            if let Some(reason) = self.too_large(config, topic, payload) {
                return Ok(Outcome::Refused(reason));
            }
            if let Outcome::Refused(reason) = self.deliver(topic, payload, false, shutdown).await? {
                return Ok(Outcome::Refused(format!("{reason} (topic {topic})")));
            }
        }
        Ok(Outcome::Taken)
    }
}

/// How the publisher sends reports.
#[derive(Debug, Clone, Copy)]
pub struct Sending {
    /// Bytes per second at most (0: as fast as the broker takes them).
    pub drain_bytes_per_sec: u64,
    pub snapshots: SnapshotMode,
}

/// Publishes every report in `outbox`, oldest first, until shutdown; then says `offline` (if
/// it speaks for the device) and disconnects. What is not acknowledged stays in the outbox.
pub async fn run(
    config: MqttConfig,
    device_id: String,
    outbox: Arc<Outbox>,
    sending: Sending,
    presence: Presence,
    shutdown: CancellationToken,
) {
    let status_topic = status_topic(&config, &device_id);
    let heartbeat_topic = heartbeat_topic(&config, &device_id);
    let describe = match presence {
        Presence::Announce { describe, changed } => Some((describe, changed)),
        Presence::Quiet => None,
    };
    let (describe, changed) = describe.unzip();
    let changed = changed.unwrap_or_default();
    let announce = describe.is_some();
    let heartbeat_every = (config.heartbeat_secs > 0).then(|| Duration::from_secs(config.heartbeat_secs));
    let mut next_heartbeat = heartbeat_every.map(|every| tokio::time::Instant::now() + every);
    let will = announce.then(|| (status_topic.clone(), status(&device_id, "offline", "connection lost").to_string()));
    let (client, connection) = match client::connect(&config, &client_id(&config, &device_id), will) {
        Ok(connected) => connected,
        Err(error) => {
            error!(%error, "cannot set up the connection to the broker; not publishing");
            return;
        }
    };
    let (link_tx, link) = mpsc::unbounded_channel();
    let stop_driver = CancellationToken::new();
    let mut driver = tokio::spawn(drive(connection, link_tx, stop_driver.clone()));
    info!(broker = %format!("{}:{}", config.host, config.port), protocol = ?config.protocol, "mqtt publisher started");
    let mut publisher =
        Publisher { client: client.clone(), link, connected: false, reconnected: false, broker_max_packet: None };

    let mut delivered = 0u64;
    // Refusals of the report at the head of the queue so far: (outbox id, count).
    let mut refusals: (Option<crate::outbox::Slot>, u32) = (None, 0);
    loop {
        if let Some(describe) = describe.as_ref().filter(|_| publisher.connected && publisher.reconnected) {
            // Retained and sent again on every reconnect, so at most once is enough; waiting
            // for its PUBACK would hold up the reports behind it.
            publisher.reconnected = false;
            let mut online = status(&device_id, "online", "started");
            if let Some(fields) = online.as_object_mut() {
                fields.insert("device".into(), describe());
            }
            client.publish_once(&status_topic, true, online.to_string().into_bytes());
        }
        if let (Some(describe), Some(due)) = (&describe, next_heartbeat)
            && publisher.connected
            && tokio::time::Instant::now() >= due
        {
            // Periodic and superseded by the next one: at most once, never queued behind reports.
            client.publish_once(&heartbeat_topic, false, describe().to_string().into_bytes());
            next_heartbeat = heartbeat_every.map(|every| tokio::time::Instant::now() + every);
        }
        let Some(report) = outbox.next() else {
            // Nothing waiting: keep up with the link until a report is queued or a heartbeat is due.
            let beating = announce && publisher.connected;
            let heartbeat = async {
                match next_heartbeat.filter(|_| beating) {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = heartbeat => {}
                _ = outbox.pushed() => {}
                _ = changed.notified() => publisher.reconnected = true, // the status is due again
                event = publisher.link.recv() => match event {
                    Some(event) => publisher.note(&event),
                    None => break,
                },
            }
            continue;
        };
        let snapshots = snapshots_topic(&config, &device_id, &report.camera);
        let pause = match publisher.send_report(&config, &report, sending.snapshots, &snapshots, &shutdown).await {
            Ok(Outcome::Taken) => {
                outbox.remove(report.slot);
                delivered += 1;
                info!(topic = %report.topic, outbox_id = %report.slot, "report delivered");
                // Pace the next one by this one's size: the link's share stays under the limit.
                let bytes = report.json.len() + report.images.bytes();
                (sending.drain_bytes_per_sec > 0)
                    .then(|| Duration::from_secs_f64(bytes as f64 / sending.drain_bytes_per_sec as f64))
            }
            Ok(Outcome::Refused(reason)) => {
                refusals = match refusals {
                    (Some(slot), n) if slot == report.slot => (Some(slot), n + 1),
                    _ => (Some(report.slot), 1),
                };
                if refusals.1 < REFUSALS {
                    warn!(outbox_id = %report.slot, camera = %report.camera, %reason, attempt = refusals.1, "the broker refused a report; trying again");
                    Some(REFUSAL_PAUSE * refusals.1)
                } else {
                    error!(outbox_id = %report.slot, camera = %report.camera, %reason, "the broker refused a report {REFUSALS} times: kept as a dead letter (see `fieldwatch outbox`)");
                    outbox.dead_letter(report.slot, &reason);
                    None
                }
            }
            Err(Interrupted::Shutdown) => break,
            Err(Interrupted::LinkClosed) => break,
        };
        if let Some(pause) = pause {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
    let depth = outbox.depth();
    if depth.reports > 0 {
        info!(pending = depth.reports, "reports kept in the outbox for the next start");
    }
    if announce && publisher.connected {
        let offline = status(&device_id, "offline", "shutdown").to_string().into_bytes();
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(DRAIN_TIMEOUT).await;
            stopper.cancel();
        });
        let _ = publisher.deliver(&status_topic, &offline, true, &stop).await;
        timer.abort();
    }
    // The driver returns once DISCONNECT is on the wire; don't wait on a dead broker for it.
    client.disconnect();
    if tokio::time::timeout(Duration::from_millis(500), &mut driver).await.is_err() {
        stop_driver.cancel();
        let _ = driver.await;
    }
    info!(delivered, "mqtt publisher stopped");
}

/// Polls the connection until `stop`, telling the publisher about the link.
async fn drive(mut connection: Connection, link: mpsc::UnboundedSender<Link>, stop: CancellationToken) {
    let backoff = || {
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = connection.poll() => e,
        };
        let said = match event {
            Ok(client::Polled::Link(said)) => {
                if let Link::Connected { max_packet } = &said {
                    info!(broker_max_packet = ?max_packet, "mqtt connected");
                    delays = backoff();
                }
                said
            }
            Ok(client::Polled::Other) => continue,
            // Our own clean disconnect: the broker closing the socket next is not an error.
            Ok(client::Polled::Disconnected) => return,
            Err(failure) => {
                let _ = link.send(Link::Lost);
                let delay = delays.next().unwrap_or(Duration::from_secs(10));
                let delay_ms = delay.as_millis() as u64;
                match failure {
                    client::Failure::Tls(error) => error!(
                        %error, delay_ms,
                        "TLS with the broker failed: check mqtt.ca_file, mqtt.cert_file, mqtt.key_file and mqtt.host; retrying"
                    ),
                    client::Failure::Refused(code) => error!(
                        %code, delay_ms,
                        "the broker refused the connection: check mqtt.username and mqtt.password (reports stay in the outbox); retrying"
                    ),
                    client::Failure::Other(error) => warn!(%error, delay_ms, "mqtt connection failed; retrying"),
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        };
        if link.send(said).is_err() {
            return; // the publisher is gone
        }
    }
}
