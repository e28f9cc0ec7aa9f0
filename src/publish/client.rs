//! One face for rumqttc's two clients, MQTT 5 and 3.1.1: connecting with our options (TLS,
//! credentials, last will), publishing, and what the event loop saw, in the publisher's words.

use crate::config::{MqttConfig, MqttProtocol};
use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5::PubAckReason;
use std::time::Duration;

/// What happened on the link.
#[derive(Debug)]
pub enum Link {
    /// With the broker's largest packet, when it says (MQTT 5).
    Connected {
        max_packet: Option<u32>,
    },
    Lost,
    /// A publish went out with this packet id (ours, or rumqttc sending it again).
    Sent(u16),
    /// The broker acknowledged packet `pkid`; `refused` says why it did not take it (MQTT 5).
    Acked {
        pkid: u16,
        refused: Option<String>,
    },
}

/// One turn of the event loop.
pub enum Polled {
    Link(Link),
    /// Our own DISCONNECT went out.
    Disconnected,
    Other,
}

/// Why the connection failed, as an operator needs to hear it.
pub enum Failure {
    Tls(String),
    /// The broker refused the connection with this code (bad credentials, not authorised).
    Refused(String),
    Other(String),
}

#[derive(Clone)]
pub enum Client {
    V5(v5::AsyncClient),
    V311(rumqttc::AsyncClient),
}

pub enum Connection {
    V5(Box<v5::EventLoop>),
    V311(Box<rumqttc::EventLoop>),
}

/// A client and its connection as `config` says, with `will` (topic, payload) as a retained
/// last will. Nothing is sent until the connection is polled.
pub fn connect(
    config: &MqttConfig,
    client_id: &str,
    will: Option<(String, String)>,
) -> Result<(Client, Connection), String> {
    let transport = tls(config)?;
    let keep_alive = Duration::from_secs(config.keep_alive_secs);
    let password = (!config.username.is_empty()).then(|| config.password.expose().to_string());
    Ok(match config.protocol {
        MqttProtocol::V5 => {
            let mut options = v5::MqttOptions::new(client_id, config.host.clone(), config.port);
            // rumqttc's MQTT 5 client cannot turn keep-alive off (validation says so).
            let keep_alive = keep_alive.max(Duration::from_secs(5));
            options
                .set_keep_alive(keep_alive)
                .set_max_packet_size(Some(u32::try_from(config.max_packet_bytes).unwrap_or(u32::MAX)));
            if let Some((topic, payload)) = will {
                let qos = v5::mqttbytes::QoS::AtLeastOnce;
                options.set_last_will(v5::mqttbytes::v5::LastWill::new(topic, payload, qos, true, None));
            }
            if let Some(password) = password {
                options.set_credentials(config.username.clone(), password);
            }
            if let Some(transport) = transport {
                options.set_transport(transport);
            }
            let (client, eventloop) = v5::AsyncClient::new(options, 64);
            (Client::V5(client), Connection::V5(Box::new(eventloop)))
        }
        MqttProtocol::V311 => {
            let mut options = rumqttc::MqttOptions::new(client_id, config.host.clone(), config.port);
            options.set_keep_alive(keep_alive).set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes);
            if let Some((topic, payload)) = will {
                options.set_last_will(rumqttc::LastWill::new(topic, payload, rumqttc::QoS::AtLeastOnce, true));
            }
            if let Some(password) = password {
                options.set_credentials(config.username.clone(), password);
            }
            if let Some(transport) = transport {
                options.set_transport(transport);
            }
            let (client, eventloop) = rumqttc::AsyncClient::new(options, 64);
            (Client::V311(client), Connection::V311(Box::new(eventloop)))
        }
    })
}

impl Client {
    /// Queues a QoS 1 publish; an error means the event loop is gone.
    pub async fn publish(&self, topic: &str, retain: bool, payload: Vec<u8>) -> Result<(), ()> {
        match self {
            Client::V5(c) => c.publish(topic, v5::mqttbytes::QoS::AtLeastOnce, retain, payload).await.map_err(drop),
            Client::V311(c) => c.publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload).await.map_err(drop),
        }
    }

    /// Sends at most once (QoS 0), without waiting: for status and heartbeats that the next
    /// one supersedes.
    pub fn publish_once(&self, topic: &str, retain: bool, payload: Vec<u8>) {
        let _ = match self {
            Client::V5(c) => c.try_publish(topic, v5::mqttbytes::QoS::AtMostOnce, retain, payload).map_err(drop),
            Client::V311(c) => c.try_publish(topic, rumqttc::QoS::AtMostOnce, retain, payload).map_err(drop),
        };
    }

    pub fn disconnect(&self) {
        let _ = match self {
            Client::V5(c) => c.try_disconnect().map_err(drop),
            Client::V311(c) => c.try_disconnect().map_err(drop),
        };
    }
}

impl Connection {
    pub async fn poll(&mut self) -> Result<Polled, Failure> {
        match self {
            Connection::V5(eventloop) => {
                use v5::mqttbytes::v5::Packet;
                use v5::{ConnectionError, Event};
                Ok(match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        Polled::Link(Link::Connected { max_packet: ack.properties.and_then(|p| p.max_packet_size) })
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => Polled::Link(Link::Sent(pkid)),
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        let reason = ack.properties.and_then(|p| p.reason_string);
                        Polled::Link(Link::Acked { pkid: ack.pkid, refused: refusal(ack.reason, reason) })
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => Polled::Disconnected,
                    Ok(_) => Polled::Other,
                    Err(ConnectionError::Tls(e)) => return Err(Failure::Tls(e.to_string())),
                    Err(ConnectionError::ConnectionRefused(code)) => return Err(Failure::Refused(format!("{code:?}"))),
                    Err(e) => return Err(Failure::Other(e.to_string())),
                })
            }
            Connection::V311(eventloop) => {
                use rumqttc::{ConnectionError, Event, Packet};
                Ok(match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Polled::Link(Link::Connected { max_packet: None }),
                    Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => Polled::Link(Link::Sent(pkid)),
                    // MQTT 3.1.1 cannot refuse a publish: an acknowledgement is all it says.
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        Polled::Link(Link::Acked { pkid: ack.pkid, refused: None })
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => Polled::Disconnected,
                    Ok(_) => Polled::Other,
                    Err(ConnectionError::Tls(e)) => return Err(Failure::Tls(e.to_string())),
                    Err(ConnectionError::ConnectionRefused(code)) => return Err(Failure::Refused(format!("{code:?}"))),
                    Err(e) => return Err(Failure::Other(e.to_string())),
                })
            }
        }
    }
}

/// Why an MQTT 5 PUBACK refuses its message, or `None` if the broker took it.
fn refusal(reason: PubAckReason, text: Option<String>) -> Option<String> {
    let code = match reason {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => return None,
        PubAckReason::UnspecifiedError => "unspecified error (0x80)",
        PubAckReason::ImplementationSpecificError => "implementation-specific error (0x83)",
        PubAckReason::NotAuthorized => "not authorized (0x87)",
        PubAckReason::TopicNameInvalid => "topic name invalid (0x90)",
        PubAckReason::PacketIdentifierInUse => "packet identifier in use (0x91)",
        PubAckReason::QuotaExceeded => "quota exceeded (0x97)",
        PubAckReason::PayloadFormatInvalid => "payload format invalid (0x99)",
    };
    Some(match text {
        Some(text) => format!("the broker refused it: {code}: {text}"),
        None => format!("the broker refused it: {code}"),
    })
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
