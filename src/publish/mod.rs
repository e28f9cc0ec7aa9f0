//! Publishing to the IOC over MQTT (rumqttc): reports with QoS 1, plus a retained device status
//! with a last will, so the IOC sees `offline` whether the box stops cleanly or drops.
//!
//! rumqttc only makes progress while its event loop is polled, and `publish().await` waits on
//! that loop, so the loop runs in its own task ([`drive`]) with a shutdown arm and backoff on
//! errors — a bare `loop { poll() }` spins at full CPU while the broker is down.

use crate::config::MqttConfig;
use crate::pipeline::EdgeReceiver;
use crate::report::{Report, timestamp};
use backon::BackoffBuilder;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long shutdown waits for acknowledgements of reports already handed to the broker.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long shutdown waits for reports still being built.
const REPORT_GRACE: Duration = Duration::from_secs(1);

pub fn reports_topic(config: &MqttConfig, device_id: &str, camera_id: &str) -> String {
    format!("{}/{device_id}/{camera_id}/reports", config.topic_prefix)
}

pub fn status_topic(config: &MqttConfig, device_id: &str) -> String {
    format!("{}/{device_id}/status", config.topic_prefix)
}

fn status(device_id: &str, state: &str, reason: &str) -> Vec<u8> {
    serde_json::json!({
        "state": state,
        "reason": reason,
        "device_id": device_id,
        "version": env!("CARGO_PKG_VERSION"),
        "at": timestamp(chrono::Utc::now()),
    })
    .to_string()
    .into_bytes()
}

/// Whether this publisher speaks for the device on its status topic. The daemon does; a replay
/// publishing to the same broker must not announce the device online or offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Announce,
    Quiet,
}

/// The configured client id, or `fieldwatch-{device}`.
pub fn client_id(config: &MqttConfig, device_id: &str) -> String {
    if config.client_id.is_empty() { format!("fieldwatch-{device_id}") } else { config.client_id.clone() }
}

#[derive(Default)]
struct Acks {
    sent: AtomicU64,
    acked: AtomicU64,
}

/// Publishes every report from `reports` until shutdown, then drains, says `offline` and
/// disconnects.
pub async fn run(
    config: MqttConfig,
    device_id: String,
    reports: EdgeReceiver<Report>,
    presence: Presence,
    shutdown: CancellationToken,
) {
    let status_topic = status_topic(&config, &device_id);
    let announce = presence == Presence::Announce;
    let mut options = MqttOptions::new(client_id(&config, &device_id), config.host.clone(), config.port);
    options
        .set_keep_alive(Duration::from_secs(config.keep_alive_secs))
        .set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes);
    if announce {
        let will = status(&device_id, "offline", "connection lost");
        options.set_last_will(LastWill::new(&status_topic, will, QoS::AtLeastOnce, true));
    }
    if !config.username.is_empty() {
        options.set_credentials(config.username.clone(), config.password.expose().to_string());
    }
    let (client, eventloop) = AsyncClient::new(options, 64);
    let acks = Arc::new(Acks::default());
    let stop_driver = CancellationToken::new();
    let online = announce.then(|| (status_topic.clone(), status(&device_id, "online", "started")));
    let mut driver = tokio::spawn(drive(eventloop, client.clone(), online, acks.clone(), stop_driver.clone()));
    info!(broker = %format!("{}:{}", config.host, config.port), "mqtt publisher started");

    let publish = |report: Report| {
        let client = client.clone();
        let acks = acks.clone();
        let topic = reports_topic(&config, &device_id, &report.camera_id);
        async move {
            let payload = match serde_json::to_vec(&report) {
                Ok(p) => p,
                Err(error) => return warn!(%error, "report not serialisable; skipped"),
            };
            match client.publish(&topic, QoS::AtLeastOnce, false, payload).await {
                Ok(()) => {
                    acks.sent.fetch_add(1, Ordering::Relaxed);
                    info!(%topic, report_id = %report.report_id, event = report.event, "report queued for broker");
                }
                Err(error) => warn!(%error, report_id = %report.report_id, "report not handed to mqtt client"),
            }
        }
    };

    // Runs until every report sender is gone (the rules stopped). After shutdown is requested,
    // reports still being made get REPORT_GRACE to arrive; the broker must not hold up exit.
    let mut deadline = None;
    loop {
        let next = match deadline {
            None => tokio::select! {
                _ = shutdown.cancelled() => {
                    deadline = Some(tokio::time::Instant::now() + REPORT_GRACE);
                    continue;
                }
                r = reports.recv_async() => r,
            },
            Some(d) => tokio::time::timeout_at(d, reports.recv_async()).await.unwrap_or(None),
        };
        let Some(report) = next else { break };
        match deadline {
            Some(d) => {
                if tokio::time::timeout_at(d, publish(report)).await.is_err() {
                    break;
                }
            }
            None => publish(report).await,
        }
    }
    let lost = reports.depth();
    reports.close();
    if lost > 0 {
        warn!(lost, "reports not published before shutdown");
    }
    if announce {
        let _ = client.try_publish(&status_topic, QoS::AtLeastOnce, true, status(&device_id, "offline", "shutdown"));
        acks.sent.fetch_add(1, Ordering::Relaxed);
    }
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while acks.acked.load(Ordering::Relaxed) < acks.sent.load(Ordering::Relaxed)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The driver returns once DISCONNECT is on the wire; don't wait on a dead broker for it.
    let _ = client.try_disconnect();
    if tokio::time::timeout(Duration::from_millis(500), &mut driver).await.is_err() {
        stop_driver.cancel();
        let _ = driver.await;
    }
    info!(
        sent = acks.sent.load(Ordering::Relaxed),
        acked = acks.acked.load(Ordering::Relaxed),
        "mqtt publisher stopped"
    );
}

/// Polls the event loop until `stop`, announcing `online` (topic, payload) after every (re)connect.
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    online: Option<(String, Vec<u8>)>,
    acks: Arc<Acks>,
    stop: CancellationToken,
) {
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
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                info!("mqtt connected");
                delays = backoff();
                if let Some((topic, payload)) = &online {
                    let _ = client.try_publish(topic, QoS::AtLeastOnce, true, payload.clone());
                    acks.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                acks.acked.fetch_add(1, Ordering::Relaxed);
                debug!(pkid = ack.pkid, "mqtt puback");
            }
            // Our own clean disconnect: the broker closing the socket next is not an error.
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(error) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(10));
                warn!(%error, delay_ms = delay.as_millis() as u64, "mqtt connection failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
