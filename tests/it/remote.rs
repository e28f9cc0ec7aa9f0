//! Remote commands from the IOC against a real mosquitto (MQTT 5): changes through the overlay
//! and reload path that survive a restart, refusals that change nothing, a snapshot, the running
//! config, and dismiss and acknowledge of an incident, across restarts too.

use crate::support::*;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{Value, json};
use std::time::Duration;

/// An IOC's MQTT 5 client: sends commands, collects every response and snapshot.
struct Commander {
    client: AsyncClient,
    messages: Messages,
    task: tokio::task::JoinHandle<()>,
}

impl Commander {
    async fn start(port: u16) -> Self {
        let mut options = MqttOptions::new(format!("ioc-{}", uuid::Uuid::new_v4()), "127.0.0.1", port);
        options.set_max_packet_size(Some(16 << 20));
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        client.subscribe("fieldwatch/edge-test/commands/+/+", QoS::AtLeastOnce).await.unwrap();
        client.subscribe("ioc/replies", QoS::AtLeastOnce).await.unwrap();
        let messages: Messages = Default::default();
        let (sink, (ready_tx, ready_rx)) = (messages.clone(), tokio::sync::oneshot::channel());
        let task = tokio::spawn(async move {
            let (mut ready, mut acks) = (Some(ready_tx), 0);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        acks += 1;
                        if acks == 2
                            && let Some(r) = ready.take()
                        {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        let correlation = p.properties.and_then(|p| p.correlation_data).map(|c| c.to_vec());
                        let topic = match correlation {
                            Some(c) => format!("{topic}#{}", String::from_utf8_lossy(&c)),
                            None => topic,
                        };
                        sink.lock().unwrap().push((topic, p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx).await.expect("subscribed").unwrap();
        Self { client, messages, task }
    }

    /// Sends `payload` and waits for the response on `…/commands/{id}/response`.
    async fn send_raw(&self, id: &str, payload: Vec<u8>) -> Value {
        self.client.publish("fieldwatch/edge-test/commands", QoS::AtLeastOnce, false, payload).await.unwrap();
        self.response(&format!("fieldwatch/edge-test/commands/{id}/response")).await
    }

    async fn send(&self, command: Value) -> Value {
        let id = command["command_id"].as_str().unwrap().to_string();
        self.send_raw(&id, command.to_string().into_bytes()).await
    }

    /// The first message on `topic` (with `#correlation` when it had one), waiting up to 20 s.
    async fn response(&self, topic: &str) -> Value {
        for _ in 0..200 {
            let found = self.messages.lock().unwrap().iter().find(|(t, _)| t == topic).map(|(_, p)| p.clone());
            if let Some(payload) = found {
                return serde_json::from_slice(&payload).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no message on {topic}: {:?}", self.messages.lock().unwrap().iter().map(|(t, _)| t).collect::<Vec<_>>());
    }
}

impl Drop for Commander {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `cam-ok` on parked_long.mp4's stream: a square parks in the zone 2 s in and stays; the rule
/// opens 1 s after it stood still and sends an `updated` report every second while open.
fn camera(url: &str) -> String {
    let block = scene_camera(url).replace("dwell_secs = 3", "dwell_secs = 1\nupdate_every_secs = 1");
    format!("\n[remote]\nenabled = true\nmax_command_bytes = 4096\n{block}")
}

/// The reports on `incident` of kind `event` among `messages`.
fn count(messages: &[(String, Vec<u8>)], incident: &str, event: &str) -> usize {
    (messages.iter())
        .filter(|(t, _)| t.ends_with("/reports"))
        .filter_map(|(_, p)| serde_json::from_slice::<Value>(p).ok())
        .filter(|r| r["incident_id"] == incident && r["event"] == event)
        .count()
}

/// The reports on `incident` of kind `event` so far.
fn events(subscriber: &Subscriber, incident: &str, event: &str) -> usize {
    count(&subscriber.messages(), incident, event)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_commands_change_the_running_config_through_the_overlay_and_feedback_outlives_a_restart() {
    let _serial = heavy().await;
    let dir = temp_dir("remote");
    let broker = Mosquitto::start();
    let subscriber = Subscriber::start(broker.port, "fieldwatch/#").await;
    let rtsp = RtspServer::start(&cache("clips/parked_long.mp4"), None);
    let config = daemon_config(&dir, broker.port, &camera(&rtsp.url()));
    let mut daemon = Daemon::start(&config, &dir.join("daemon.log"));
    daemon.wait_log("remote commands: listening", 1, Duration::from_secs(20)).await;
    let ioc = Commander::start(broker.port).await;
    let overlay = dir.join("state/overlay.toml");

    // Refused, each with its key, and nothing changes.
    let refusals = [
        (b"{\"command_id\": \"c1\", \"op\": ".to_vec(), "_", ""),
        (json!({"command_id": "c2", "op": "set_rule", "camera": "cam-ok", "rule": "sidewalk", "set": {"threshold": "high"}}).to_string().into_bytes(), "c2", "set.threshold"),
        (json!({"command_id": "c3", "op": "set_rule", "camera": "cam-ok", "rule": "kerb", "set": {"threshold": 0.5}}).to_string().into_bytes(), "c3", "rule"),
        (json!({"command_id": "c4", "op": "reload", "padding": "x".repeat(5000)}).to_string().into_bytes(), "_", ""),
        (json!({"command_id": "c5", "op": "self_destruct"}).to_string().into_bytes(), "c5", "op"),
        (json!({"command_id": "c6", "op": "set_zone", "camera": "cam-ok", "zone": "sidewalk", "polygon": [[0.1, 0.1], [0.9, 0.9]]}).to_string().into_bytes(), "c6", "polygon"),
        (json!({"command_id": "c7", "op": "set_rule", "camera": "cam-ok", "rule": "sidewalk", "set": {"threshold": 1.5}}).to_string().into_bytes(), "c7", "cameras[0].rules[0].threshold"),
    ];
    for (payload, id, path) in refusals {
        ioc.messages.lock().unwrap().clear();
        let response = ioc.send_raw(id, payload).await;
        assert_eq!(response["status"], "refused", "{response}");
        assert_eq!(response["path"], path, "{response}");
        assert!(!response["reason"].as_str().unwrap().is_empty());
        assert_eq!(response["config_revision"], 0, "{response}");
    }
    assert!(!overlay.exists(), "a refused command writes nothing");

    // The running config, secrets masked, answered on the command's own response topic with
    // its correlation data.
    let properties = PublishProperties {
        response_topic: Some("ioc/replies".into()),
        correlation_data: Some("ask-1".into()),
        ..Default::default()
    };
    let ask = json!({"command_id": "c8", "op": "get_config"}).to_string();
    ioc.client
        .publish_with_properties("fieldwatch/edge-test/commands", QoS::AtLeastOnce, false, ask, properties)
        .await
        .unwrap();
    let running = ioc.response("ioc/replies#ask-1").await;
    assert_eq!(running["status"], "accepted", "{running}");
    assert_eq!(running["config"]["cameras"][0]["url"], "***", "{running}");
    assert_eq!(running["config"]["cameras"][0]["rules"][0]["dwell_secs"], 1.0);
    let version_before = running["config_version"].as_str().unwrap().to_string();

    // A valid change: applied through the overlay and a reload, and announced.
    let set = json!({"command_id": "c9", "op": "set_rule", "camera": "cam-ok", "rule": "sidewalk",
                     "set": {"threshold": 0.55, "clear_after_secs": 3}});
    let applied = ioc.send(set).await;
    assert_eq!(applied["status"], "accepted", "{applied}");
    assert_eq!(applied["config_revision"], 1, "{applied}");
    let version = applied["config_version"].as_str().unwrap().to_string();
    assert_ne!(version, version_before);
    let written = std::fs::read_to_string(&overlay).unwrap();
    assert!(
        written.starts_with("# fieldwatch overlay, revision 1") && written.contains("threshold = 0.55"),
        "{written}"
    );
    daemon.wait_log("remote change applied", 1, Duration::from_secs(5)).await;
    subscriber
        .wait_for(Duration::from_secs(10), "the status announcing revision 1", |m| {
            m.iter().any(|(t, p)| {
                t.ends_with("/status")
                    && serde_json::from_slice::<Value>(p).is_ok_and(|s| s["device"]["config_revision"] == 1)
            })
        })
        .await;

    // The next report names the new config.
    subscriber.wait_for_reports(1, Duration::from_secs(20)).await;
    let opened = subscriber.json_on("edge-test/cam-ok/reports").into_iter().find(|r| r["event"] == "opened").unwrap();
    assert_eq!(opened["config_version"], version, "{opened:#}");
    let incident = opened["incident_id"].as_str().unwrap().to_string();

    // A snapshot now.
    let snapshot = ioc.send(json!({"command_id": "c10", "op": "snapshot", "camera": "cam-ok"})).await;
    assert_eq!(snapshot["status"], "accepted", "{snapshot}");
    let topic = snapshot["snapshot"]["topic"].as_str().unwrap().to_string();
    assert_eq!(topic, "fieldwatch/edge-test/commands/c10/snapshot");
    let jpeg = ioc.messages.lock().unwrap().iter().find(|(t, _)| *t == topic).map(|(_, p)| p.clone()).unwrap();
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);

    // Acknowledged: no more periodic updates, and still so after a restart.
    subscriber.wait_for(Duration::from_secs(5), "a periodic update", |m| count(m, &incident, "updated") >= 1).await;
    let ack = ioc.send(json!({"command_id": "c11", "op": "acknowledge", "incident_id": incident})).await;
    assert_eq!(ack["status"], "accepted", "{ack}");
    assert_eq!(ack["camera"], "cam-ok");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let updates = events(&subscriber, &incident, "updated");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(events(&subscriber, &incident, "updated"), updates, "acknowledged: no periodic update");
    let (status, _) = daemon.terminate(Duration::from_secs(10));
    assert!(status.success());
    let mut daemon = Daemon::start(&config, &dir.join("daemon-2.log"));
    daemon.wait_log("remote commands: listening", 1, Duration::from_secs(20)).await;
    daemon.wait_log("rtsp playing", 1, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(events(&subscriber, &incident, "updated"), updates, "still acknowledged after the restart");
    assert_eq!(subscriber.json_on("edge-test/cam-ok/reports").iter().filter(|r| r["event"] == "opened").count(), 1);
    let status = subscriber.json_on("edge-test/status");
    assert_eq!(status.last().unwrap()["device"]["config_revision"], 1, "the change outlived the restart");

    // Dismissed: resolved at once; the square that stays is not reported again, even after a
    // restart (known by its box then).
    let dismiss = ioc.send(json!({"command_id": "c12", "op": "dismiss", "incident_id": incident})).await;
    assert_eq!(dismiss["status"], "accepted", "{dismiss}");
    subscriber.wait_for(Duration::from_secs(5), "the dismissed report", |m| count(m, &incident, "resolved") == 1).await;
    let resolved =
        subscriber.json_on("edge-test/cam-ok/reports").into_iter().find(|r| r["event"] == "resolved").unwrap();
    assert_eq!(resolved["resolved_by"], "dismissed", "{resolved:#}");
    assert!(resolved["description"]["en"].as_str().unwrap().contains("false alarm"), "{resolved:#}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, _) = daemon.terminate(Duration::from_secs(10));
    assert!(status.success());
    let mut daemon = Daemon::start(&config, &dir.join("daemon-3.log"));
    daemon.wait_log("rtsp playing", 1, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let reports = subscriber.json_on("edge-test/cam-ok/reports");
    assert_eq!(reports.iter().filter(|r| r["event"] == "opened").count(), 1, "{reports:#?}");

    // Feedback on an incident the box does not have.
    let unknown = json!({"command_id": "c13", "op": "dismiss", "incident_id": uuid::Uuid::new_v4()});
    let answer = ioc.send(unknown).await;
    assert_eq!(
        (answer["status"].as_str(), answer["path"].as_str()),
        (Some("refused"), Some("incident_id")),
        "{answer}"
    );

    let (status, _) = daemon.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", daemon.log_text());
    let schema = crate::e2e::validator();
    for report in &reports {
        let errors: Vec<String> = schema.iter_errors(report).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{report:#}");
    }
    drop(ioc);
    std::fs::remove_dir_all(&dir).ok();
}

/// The committed schema and the daemon's reading agree on what a well-formed command is (value
/// ranges aside: those are the config's, checked with the whole config).
#[test]
fn the_command_schema_and_the_daemon_agree() {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("schemas/command.v1.json")).unwrap()).unwrap();
    let schema = jsonschema::options().should_validate_formats(true).build(&schema).unwrap();
    let id = "0b9f6a1e-6f0e-4f43-9d7e-2f6a3f3b8c11";
    let commands = [
        (
            json!({"command_id": "a", "op": "set_rule", "camera": "c", "rule": "r", "set": {"threshold": 0.5, "enabled": false}}),
            true,
        ),
        (
            json!({"command_id": "a", "op": "set_zone", "camera": "c", "zone": "z", "polygon": [[0, 0], [1, 0], [1, 1]]}),
            true,
        ),
        (json!({"command_id": "a", "op": "snapshot", "camera": "c"}), true),
        (json!({"command_id": "a.b-c_d", "op": "get_config"}), true),
        (json!({"command_id": "a", "op": "reload"}), true),
        (json!({"command_id": "a", "op": "dismiss", "incident_id": id}), true),
        (json!({"command_id": "a", "op": "acknowledge", "incident_id": id}), true),
        (json!({"op": "reload"}), false),
        (json!({"command_id": "a/b", "op": "reload"}), false),
        (json!({"command_id": "a", "op": "explode"}), false),
        (json!({"command_id": "a", "op": "reload", "camera": "c"}), false),
        (json!({"command_id": "a", "op": "set_rule", "camera": "c", "rule": "r"}), false),
        (json!({"command_id": "a", "op": "set_rule", "camera": "c", "rule": "r", "set": {}}), false),
        (json!({"command_id": "a", "op": "set_rule", "camera": "c", "rule": "r", "set": {"threshold": "x"}}), false),
        (json!({"command_id": "a", "op": "set_rule", "camera": "c", "rule": "r", "set": {"colour": 1}}), false),
        (json!({"command_id": "a", "op": "set_zone", "camera": "c", "zone": "z", "polygon": [[0, 0], [1, 0]]}), false),
        (
            json!({"command_id": "a", "op": "set_zone", "camera": "c", "zone": "z", "polygon": [[0, 0], [1, 0], [1, 2]]}),
            false,
        ),
        (json!({"command_id": "a", "op": "dismiss", "incident_id": "nope"}), false),
        (json!({"command_id": "a", "op": "dismiss"}), false),
        (json!({"command_id": "a", "op": "reload", "extra": 1}), false),
    ];
    for (command, valid) in commands {
        assert_eq!(schema.is_valid(&command), valid, "schema: {command}");
        let (_, parsed) = fieldwatch::remote::parse(command.to_string().as_bytes(), 4096);
        assert_eq!(parsed.is_ok(), valid, "daemon: {command}: {:?}", parsed.err());
    }
}
