//! Config changes without a restart: SIGHUP re-reads the config and the overlay in the state
//! directory, and applies only what changed.

use crate::support::*;
use serde_json::Value;
use std::time::Duration;

/// The scene camera (see `scene_camera`) with a second rule on its zone, `extra`.
fn two_rules(url: &str) -> String {
    format!(
        "{}\n[[cameras.rules]]\nid = \"extra\"\nviolation = \"obstacle\"\nzone = \"sidewalk\"\nclasses = [\"red\"]\ndwell_secs = 3\nclear_after_secs = 2\n",
        scene_camera(url)
    )
}

fn hangup(daemon: &Daemon) {
    unsafe { libc::kill(daemon.proc.0.id() as i32, libc::SIGHUP) };
}

/// The value of the metric line that starts with `series` (`name{labels}`).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// One daemon, reloads while incidents are open: a raised threshold (from the overlay) keeps the
/// open incident (same id, same start) and the camera's connection; a removed rule resolves with
/// `resolved_by: config`; an added camera starts; the live view shows the open rule, its tracks
/// and zone, and follows the camera; a zone saved from the editor (with its CSRF token) goes
/// into the overlay and the running rule (its view and its next report); a broken config
/// changes nothing and shows in `/healthz`; a changed model is loaded and the cameras detect
/// on it; `check` names the overlay's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_only_what_changed_and_a_broken_config_changes_nothing() {
    let _serial = heavy_exclusive().await;
    let dir = temp_dir("reload");
    let broker = Mosquitto::start();
    let camera = RtspServer::start(&cache("clips/parked.mp4"), None);
    let url = format!("rtsp://127.0.0.1:{}/cam", camera.port);
    let http = free_port();
    let subscriber = Subscriber::start(broker.port, "fieldwatch/#").await;
    let config = daemon_config_http(&dir, broker.port, "", &two_rules(&url), Some(http));
    let daemon = Daemon::start(&config, &dir.join("daemon.log"));
    let reports = || subscriber.json_on("cam-ok/reports");
    let of = |reports: &[Value], rule: &str, event: &str| -> Vec<Value> {
        reports.iter().filter(|r| r["rule_id"] == rule && r["event"] == event).cloned().collect()
    };
    // Whether a report of `rule` with `event` is among `messages`.
    let has = |messages: &[(String, Vec<u8>)], rule: &str, event: &str| {
        messages.iter().filter(|(topic, _)| topic.ends_with("cam-ok/reports")).any(|(_, payload)| {
            serde_json::from_slice::<Value>(payload).is_ok_and(|r| r["rule_id"] == rule && r["event"] == event)
        })
    };
    subscriber
        .wait_for(Duration::from_secs(20), "both rules open", |m| {
            has(m, "sidewalk", "opened") && has(m, "extra", "opened")
        })
        .await;

    // The overlay raises the threshold of `sidewalk`; the file drops `extra` and adds a camera.
    let overlay = dir.join("state/overlay.toml");
    std::fs::write(&overlay, "[[cameras]]\nid = \"cam-ok\"\n[[cameras.rules]]\nid = \"sidewalk\"\nthreshold = 0.6\n")
        .unwrap();
    let without_extra = two_rules(&url).split("[[cameras.rules]]\nid = \"extra\"").next().unwrap().to_string();
    daemon_config_http(
        &dir,
        broker.port,
        "",
        &format!("{without_extra}{}", camera_block("cam-2", &url, "")),
        Some(http),
    );
    let (code, checked) = fieldwatch(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{checked}");
    assert!(
        checked.contains(&format!("cameras[0].rules[0].threshold: from the overlay {}", overlay.display())),
        "{checked}"
    );
    hangup(&daemon);
    daemon.wait_log("reload taken", 1, Duration::from_secs(5)).await;
    subscriber.wait_for(Duration::from_secs(5), "extra resolved", |m| has(m, "extra", "resolved")).await;
    let r = reports();
    let resolved = &of(&r, "extra", "resolved")[0];
    assert_eq!(resolved["resolved_by"], "config", "{resolved:#}");
    assert_eq!(resolved["incident_id"], of(&r, "extra", "opened")[0]["incident_id"]);

    // The live view shows the open rule with its tracks and zone, and a new frame within 2 s.
    // The first view of a frame seen after `at_least` for which `wanted` holds.
    let view_where = |at_least: &str, wanted: &dyn Fn(&Value) -> bool| -> Value {
        let mut last = Value::Null;
        for _ in 0..40 {
            let (status, body) = http_get(http, "/cameras/cam-ok/view.json");
            assert_eq!(status, 200, "{body}");
            last = serde_json::from_str(&body).unwrap();
            if last["seen"]["at"].as_str().is_some_and(|at| at > at_least) && wanted(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no such view after {at_least}: {last:#}");
    };
    let view = |at_least: &str| view_where(at_least, &|_| true);
    let first = view("");
    let sidewalk = &first["seen"]["rules"][0];
    assert_eq!((&sidewalk["id"], &sidewalk["state"]), (&Value::from("sidewalk"), &Value::from("open")), "{first:#}");
    assert_eq!(sidewalk["incident_id"], of(&r, "sidewalk", "opened")[0]["incident_id"]);
    assert_eq!(sidewalk["polygon"], serde_json::json!([[0.25, 0.5], [0.75, 0.5], [0.75, 1.0], [0.25, 1.0]]));
    let tracks = sidewalk["tracks"].as_array().unwrap();
    assert!(tracks.iter().filter(|t| t["stationary"] == true && t["class"] == "red").count() >= 3, "{first:#}");
    let started = std::time::Instant::now();
    let next = view(first["seen"]["at"].as_str().unwrap());
    assert!(started.elapsed() < Duration::from_secs(2), "the view follows the camera");
    let (status, jpeg) = http_get_bytes(http, "/cameras/cam-ok/frame.jpg");
    assert_eq!((status, &jpeg[..2]), (200, &[0xff, 0xd8][..]), "a JPEG");
    assert_eq!(next["connects"], 1);

    // The editor's save: the zone goes into the overlay and the running rule takes it.
    let (_, page) = http_get(http, "/cameras/cam-ok");
    let csrf = page.split("name=\"csrf-token\" content=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let zone = serde_json::json!({ "zone": "sidewalk", "polygon": [[0.2, 0.5], [0.8, 0.5], [0.8, 1.0], [0.2, 1.0]] });
    let (status, _) = http_post(http, "/cameras/cam-ok/zones", &[], &zone.to_string());
    assert_eq!(status, 403, "a change without the CSRF token is refused");
    let (status, saved) = http_post(http, "/cameras/cam-ok/zones", &[("X-CSRF-Token", &csrf)], &zone.to_string());
    assert_eq!(status, 200, "{saved}");
    assert!(std::fs::read_to_string(&overlay).unwrap().contains("[0.8, 1.0]"));
    // The save returns once the new config is handed to the camera; frames already on their
    // way are judged by the old zone, so the view takes it within a few frames.
    let after =
        view_where(next["seen"]["at"].as_str().unwrap(), &|v| v["seen"]["rules"][0]["polygon"] == zone["polygon"]);
    assert_eq!(after["seen"]["rules"][0]["incident_id"], sidewalk["incident_id"], "the incident stays open");
    assert_eq!(after["connects"], 1);

    // The squares leave at 12 s: `sidewalk` resolves as it would have, the incident it opened.
    subscriber.wait_for(Duration::from_secs(15), "sidewalk resolved", |m| has(m, "sidewalk", "resolved")).await;
    let r = reports();
    let (opened, resolved) = (&of(&r, "sidewalk", "opened"), &of(&r, "sidewalk", "resolved")[0]);
    assert_eq!(opened.len(), 1, "{r:#?}");
    assert_eq!(resolved["incident_id"], opened[0]["incident_id"]);
    assert_eq!(resolved["started_at"], opened[0]["started_at"], "the dwell did not restart");
    assert_eq!(resolved["resolved_by"], "clear");
    assert_ne!(resolved["config_version"], opened[0]["config_version"], "the report names the new config");
    assert_eq!(resolved["zone"], zone["polygon"], "the report names the saved zone");

    daemon.wait_log("camera added: starting it", 1, Duration::from_secs(1)).await;
    let (_, metrics) = http_get(http, "/metrics");
    assert_eq!(metric(&metrics, "fieldwatch_connects_total{camera=\"cam-ok\"}"), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "fieldwatch_connects_total{camera=\"cam-2\"}"), Some(1.0), "{metrics}");

    // A broken config is refused, named, and shown; everything runs on as it was.
    daemon_config_http(&dir, broker.port, "", &without_extra.replace("dwell_secs = 3", "dwell_secs = -1"), Some(http));
    hangup(&daemon);
    daemon.wait_log("reload refused;", 1, Duration::from_secs(5)).await;
    assert!(daemon.log_text().contains("cameras[0].rules[0].dwell_secs"), "{}", daemon.log_text());
    let (status, health) = http_get(http, "/healthz");
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!((status, &health["status"]), (200, &Value::from("degraded")), "{health:#}");
    assert!(
        health["config"]["problems"][0].as_str().unwrap().starts_with("cameras[0].rules[0].dwell_secs"),
        "{health:#}"
    );
    let (_, metrics) = http_get(http, "/metrics");
    assert_eq!(metric(&metrics, "fieldwatch_connects_total{camera=\"cam-2\"}"), Some(1.0), "{metrics}");

    // A changed model is loaded, and the cameras start again on it (a reconnect, a new pass of
    // the clip); the refusal's problems are gone.
    let fixed = daemon_config_http(&dir, broker.port, "", &without_extra, Some(http));
    let text = std::fs::read_to_string(&fixed).unwrap().replacen("\n\n[mqtt]", "\nmin_score = 0.3\n\n[mqtt]", 1);
    std::fs::write(&fixed, text).unwrap();
    let detected = |metrics: &str| metric(metrics, "fieldwatch_frames_detected_total{camera=\"cam-ok\"}");
    let before = detected(&metrics);
    hangup(&daemon);
    daemon.wait_log("reload taken", 3, Duration::from_secs(10)).await;
    assert!(daemon.log_text().contains("models changed: loading them"), "{}", daemon.log_text());
    let started = std::time::Instant::now();
    loop {
        let (_, metrics) = http_get(http, "/metrics");
        if metric(&metrics, "fieldwatch_connects_total{camera=\"cam-ok\"}") == Some(2.0) && detected(&metrics) > before
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "cam-ok detects on the new model: {metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, health) = http_get(http, "/healthz");
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["config"]["problems"], serde_json::json!([]), "{health:#}");

    let mut daemon = daemon;
    assert!(daemon.terminate(Duration::from_secs(10)).0.success());
    std::fs::remove_dir_all(&dir).ok();
}
