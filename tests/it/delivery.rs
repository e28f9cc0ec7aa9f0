//! No report is lost when the link drops: reports made while the broker is down wait in the
//! outbox on disk, survive the daemon being killed, and arrive, in order, once both are back.

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
    let (status, _) = again.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", again.log_text());

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
