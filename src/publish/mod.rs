//! Publishing to the IOC over MQTT (rumqttc): reports from the [`Outbox`] with QoS 1, plus a
//! retained device status with a last will, so the IOC sees `offline` whether the box stops
//! cleanly or drops.
//!
//! Delivery is one message at a time: publish, wait for its PUBACK, then delete it from the
//! outbox and take the next. A report leaves the disk only once the broker has it; after a
//! lost connection rumqttc sends it again, and after a restart the outbox does, so a report
//! may arrive twice (the IOC de-duplicates on `report_id`) but never not at all. The PUBACK is
//! matched by packet id, so a late acknowledgement of an earlier message is never taken for
//! the current one.
//!
//! rumqttc only makes progress while its event loop is polled, so the loop runs in its own
//! task (`drive`) with a shutdown arm and backoff on errors — a bare `loop { poll() }` spins
//! at full CPU while the broker is down — and tells the publisher what happened on the link.

use crate::config::MqttConfig;
use crate::outbox::Outbox;
use crate::report::timestamp;
use backon::BackoffBuilder;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
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

pub fn heartbeat_topic(config: &MqttConfig, device_id: &str) -> String {
    format!("{}/{device_id}/heartbeat", config.topic_prefix)
}

/// Describes the device for its status and heartbeat: asked each time one is sent.
pub type Describe = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Whether this publisher speaks for the device on its status and heartbeat topics. The daemon
/// does; a replay publishing to the same broker must not announce the device online or offline.
#[derive(Clone)]
pub enum Presence {
    Announce(Describe),
    Quiet,
}

/// The configured client id, or `fieldwatch-{device}`.
pub fn client_id(config: &MqttConfig, device_id: &str) -> String {
    if config.client_id.is_empty() { format!("fieldwatch-{device_id}") } else { config.client_id.clone() }
}

/// What happened on the link, as the event loop saw it.
#[derive(Debug)]
enum Link {
    Connected,
    Lost,
    /// A publish went out with this packet id (ours, or rumqttc sending it again).
    Sent(u16),
    Acked(u16),
}

/// Why a delivery did not complete.
enum Interrupted {
    Shutdown,
    LinkClosed,
}

struct Publisher {
    client: AsyncClient,
    link: mpsc::UnboundedReceiver<Link>,
    connected: bool,
    /// Set on every (re)connect: the retained `online` status is due again.
    reconnected: bool,
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
            Link::Connected => (self.connected, self.reconnected) = (true, true),
            Link::Lost => self.connected = false,
            Link::Sent(_) | Link::Acked(_) => {}
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
    ) -> Result<(), Interrupted> {
        loop {
            self.connected(shutdown).await?;
            if self.client.publish(topic, QoS::AtLeastOnce, retain, payload.to_vec()).await.is_err() {
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
                    Link::Acked(pkid) if ours.contains(&pkid) => return Ok(()),
                    Link::Acked(pkid) => debug!(pkid, "late puback of an earlier message; ignored"),
                    Link::Connected => deadline.as_mut().reset(tokio::time::Instant::now() + ACK_TIMEOUT),
                    Link::Lost => {}
                }
            }
            warn!(%topic, "no puback within {ACK_TIMEOUT:?}; sending again");
        }
    }
}

/// Publishes every report in `outbox`, oldest first, until shutdown; then says `offline` (if
/// it speaks for the device) and disconnects. What is not acknowledged stays in the outbox.
pub async fn run(
    config: MqttConfig,
    device_id: String,
    outbox: Arc<Outbox>,
    drain_bytes_per_sec: u64,
    presence: Presence,
    shutdown: CancellationToken,
) {
    let status_topic = status_topic(&config, &device_id);
    let heartbeat_topic = heartbeat_topic(&config, &device_id);
    let describe = match presence {
        Presence::Announce(describe) => Some(describe),
        Presence::Quiet => None,
    };
    let announce = describe.is_some();
    let heartbeat_every = (config.heartbeat_secs > 0).then(|| Duration::from_secs(config.heartbeat_secs));
    let mut next_heartbeat = heartbeat_every.map(|every| tokio::time::Instant::now() + every);
    let mut options = MqttOptions::new(client_id(&config, &device_id), config.host.clone(), config.port);
    options
        .set_keep_alive(Duration::from_secs(config.keep_alive_secs))
        .set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes);
    if announce {
        let will = status(&device_id, "offline", "connection lost").to_string();
        options.set_last_will(LastWill::new(&status_topic, will, QoS::AtLeastOnce, true));
    }
    if !config.username.is_empty() {
        options.set_credentials(config.username.clone(), config.password.expose().to_string());
    }
    match tls(&config) {
        Ok(None) => {}
        Ok(Some(transport)) => {
            options.set_transport(transport);
        }
        Err(error) => {
            error!(%error, "cannot set up TLS to the broker; not publishing");
            return;
        }
    }
    let (client, eventloop) = AsyncClient::new(options, 64);
    let (link_tx, link) = mpsc::unbounded_channel();
    let stop_driver = CancellationToken::new();
    let mut driver = tokio::spawn(drive(eventloop, link_tx, stop_driver.clone()));
    info!(broker = %format!("{}:{}", config.host, config.port), "mqtt publisher started");
    let mut publisher = Publisher { client: client.clone(), link, connected: false, reconnected: false };

    let mut last = 0; // the newest outbox id delivered by this run
    let mut delivered = 0u64;
    loop {
        if let Some(describe) = describe.as_ref().filter(|_| publisher.connected && publisher.reconnected) {
            // Retained and sent again on every reconnect, so at most once is enough; waiting
            // for its PUBACK would hold up the reports behind it.
            publisher.reconnected = false;
            let mut online = status(&device_id, "online", "started");
            online["device"] = describe();
            let _ = client.try_publish(&status_topic, QoS::AtMostOnce, true, online.to_string().into_bytes());
        }
        if let (Some(describe), Some(due)) = (&describe, next_heartbeat)
            && publisher.connected
            && tokio::time::Instant::now() >= due
        {
            // Periodic and superseded by the next one: at most once, never queued behind reports.
            let beat = describe().to_string().into_bytes();
            let _ = client.try_publish(&heartbeat_topic, QoS::AtMostOnce, false, beat);
            next_heartbeat = heartbeat_every.map(|every| tokio::time::Instant::now() + every);
        }
        let next = match outbox.next_after(last) {
            Ok(next) => next,
            Err(error) => {
                error!(%error, "cannot read the outbox; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let Some(report) = next else {
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
                event = publisher.link.recv() => match event {
                    Some(event) => publisher.note(&event),
                    None => break,
                },
            }
            continue;
        };
        match publisher.deliver(&report.topic, &report.payload, false, &shutdown).await {
            Ok(()) => {
                if let Err(error) = outbox.remove(report.id) {
                    error!(%error, outbox_id = report.id, "delivered report not removed from the outbox; it will be sent again");
                }
                last = report.id;
                delivered += 1;
                info!(topic = %report.topic, outbox_id = report.id, "report delivered");
                if drain_bytes_per_sec > 0 {
                    // Pace the next one by this one's size: the link's share stays under the limit.
                    let pause = Duration::from_secs_f64(report.payload.len() as f64 / drain_bytes_per_sec as f64);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
            Err(Interrupted::Shutdown) => break,
            Err(Interrupted::LinkClosed) => break,
        }
    }
    if let Ok(depth) = outbox.depth()
        && depth.reports > 0
    {
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
    let _ = client.try_disconnect();
    if tokio::time::timeout(Duration::from_millis(500), &mut driver).await.is_err() {
        stop_driver.cancel();
        let _ = driver.await;
    }
    info!(delivered, "mqtt publisher stopped");
}

/// The TLS transport `config` asks for (with `ca_file`), or none.
fn tls(config: &MqttConfig) -> Result<Option<rumqttc::Transport>, String> {
    if config.ca_file.as_os_str().is_empty() {
        return Ok(None);
    }
    // rustls wants one process-wide crypto provider; ring is ours (a second install is a no-op).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("mqtt.{key}: cannot read {}: {e}", path.display()))
    };
    let ca = read("ca_file", &config.ca_file)?;
    let client_auth = match config.cert_file.as_os_str().is_empty() {
        true => None,
        false => Some((read("cert_file", &config.cert_file)?, read("key_file", &config.key_file)?)),
    };
    Ok(Some(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Simple { ca, alpn: None, client_auth })))
}

/// Polls the event loop until `stop`, telling the publisher about the link.
async fn drive(mut eventloop: EventLoop, link: mpsc::UnboundedSender<Link>, stop: CancellationToken) {
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
            e = eventloop.poll() => e,
        };
        let said = match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                info!("mqtt connected");
                delays = backoff();
                Some(Link::Connected)
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Some(Link::Sent(pkid)),
            Ok(Event::Incoming(Packet::PubAck(ack))) => Some(Link::Acked(ack.pkid)),
            // Our own clean disconnect: the broker closing the socket next is not an error.
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => None,
            Err(error) => {
                let _ = link.send(Link::Lost);
                let delay = delays.next().unwrap_or(Duration::from_secs(10));
                match &error {
                    rumqttc::ConnectionError::Tls(tls) => error!(
                        error = %tls, delay_ms = delay.as_millis() as u64,
                        "TLS with the broker failed: check mqtt.ca_file, mqtt.cert_file, mqtt.key_file and mqtt.host; retrying"
                    ),
                    rumqttc::ConnectionError::ConnectionRefused(code) => error!(
                        ?code,
                        delay_ms = delay.as_millis() as u64,
                        "the broker refused the connection: check mqtt.username and mqtt.password (reports stay in the outbox); retrying"
                    ),
                    _ => warn!(%error, delay_ms = delay.as_millis() as u64, "mqtt connection failed; retrying"),
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                None
            }
        };
        if let Some(said) = said
            && link.send(said).is_err()
        {
            return; // the publisher is gone
        }
    }
}
