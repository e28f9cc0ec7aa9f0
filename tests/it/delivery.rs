//! No report is lost when the link drops: reports made while the broker is down wait in the
//! outbox on disk, survive the daemon being killed, and arrive, in order, once both are back.
//! A daemon killed while connected leaves its retained last will, `offline`.

use crate::support::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_made_during_a_broker_outage_survive_a_kill_and_arrive_in_order() {
    let _serial = heavy().await;
    let dir = temp_dir("delivery");
    let mut broker = Mosquitto::start();
    broker.stop(); // the port stays ours; nothing listens on it
    let camera = RtspServer::start(&cache("clips/scene.mp4"), None);
    let config = daemon_config(&dir, broker.port, &scene_camera(&format!("rtsp://127.0.0.1:{}/cam", camera.port)));

    // The incident opens and resolves while the broker is down; then the box loses power.
    let mut daemon = Daemon::start(&config, &dir.join("run1.log"));
    daemon.wait_log("report queued in the outbox", 2, Duration::from_secs(30)).await;
    daemon.proc.0.kill().unwrap(); // SIGKILL: no clean shutdown, nothing flushed on the way out
    daemon.proc.0.wait().unwrap();
    let (code, out) = fieldwatch(&["outbox", "--config", &config.display().to_string()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": 2 report(s)"), "{out}");

    broker.restart();
    let subscriber = Subscriber::start(broker.port, "fieldwatch/#").await;
    let mut again = Daemon::start(&config, &dir.join("run2.log"));
    subscriber
        .wait_for(Duration::from_secs(20), "both reports", |m| {
            m.iter().filter(|(t, _)| t.ends_with("/reports")).count() >= 2
        })
        .await;
    // Killed while connected: the broker publishes the retained last will.
    again.proc.0.kill().unwrap();
    again.proc.0.wait().unwrap();
    subscriber
        .wait_for(Duration::from_secs(10), "the last will", |m| {
            m.iter().any(|(t, p)| t.ends_with("/status") && String::from_utf8_lossy(p).contains("connection lost"))
        })
        .await;
    let late = Subscriber::start(broker.port, "fieldwatch/edge-test/status").await;
    late.wait_for(Duration::from_secs(5), "the retained status", |m| !m.is_empty()).await;
    assert_eq!(late.json_on("/status")[0]["state"], "offline", "retained for whoever subscribes later");

    let reports = subscriber.json_on("edge-test/cam-ok/reports");
    let events: Vec<&str> = reports.iter().map(|r| r["event"].as_str().unwrap()).collect();
    let first = |e: &str| events.iter().position(|x| *x == e).unwrap_or_else(|| panic!("no {e} in {events:?}"));
    assert!(first("opened") < first("resolved"), "order kept: {events:?}");
    assert!(reports.iter().all(|r| r["incident_id"] == reports[0]["incident_id"]), "{events:?}");
    let validator = crate::e2e::validator();
    assert!(reports.iter().all(|r| validator.is_valid(r)));
    assert!(again.log_text().contains("report delivered"), "{}", again.log_text());
    std::fs::remove_dir_all(&dir).ok();
}

/// A broker that wants a password: the wrong one is reported clearly (and never logged), the
/// reports wait in the outbox, and they arrive once the right one, from a file, is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_reported_clearly_and_lose_nothing() {
    let _serial = heavy().await;
    let dir = temp_dir("delivery-auth");
    let broker = Mosquitto::start_with_users(&[("box", "right-pw"), ("ioc", "ioc-pw")]);
    let subscriber = Subscriber::start_as(broker.port, "fieldwatch/#", Some(("ioc", "ioc-pw"))).await;
    let camera = RtspServer::start(&cache("clips/scene.mp4"), None);
    let cameras = scene_camera(&format!("rtsp://127.0.0.1:{}/cam", camera.port));
    let password = dir.join("mqtt-password");

    std::fs::write(&password, "wrong-pw\n").unwrap();
    let mqtt = format!("username = \"box\"\npassword_file = \"{}\"", password.display());
    let config = daemon_config_with(&dir, broker.port, &mqtt, &cameras);
    let mut daemon = Daemon::start(&config, &dir.join("run1.log"));
    daemon.wait_log("report queued in the outbox", 2, Duration::from_secs(30)).await;
    let (status, _) = daemon.terminate(Duration::from_secs(10));
    let log = daemon.log_text();
    assert!(status.success(), "{log}");
    assert!(log.contains("the broker refused the connection: check mqtt.username and mqtt.password"), "{log}");
    assert!(!log.contains("wrong-pw"), "a password in the log");
    assert!(subscriber.json_on("/reports").is_empty());

    std::fs::write(&password, "right-pw\n").unwrap();
    let mut again = Daemon::start(&config, &dir.join("run2.log"));
    subscriber
        .wait_for(Duration::from_secs(20), "both reports", |m| {
            m.iter().filter(|(t, _)| t.ends_with("/reports")).count() >= 2
        })
        .await;
    assert!(again.terminate(Duration::from_secs(10)).0.success());
    let events: Vec<String> = subscriber
        .json_on("edge-test/cam-ok/reports")
        .iter()
        .map(|r| r["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events[..2], ["opened", "resolved"]);
    let status = subscriber.json_on("edge-test/status");
    assert_eq!(status.first().map(|s| s["state"].clone()), Some("online".into()), "{status:?}");
    std::fs::remove_dir_all(&dir).ok();
}
