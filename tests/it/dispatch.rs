//! Reports the IOC can dispatch, end to end on the real street (vtest): camera-health cases
//! from generated clips (a view that turns black, a view that turns a tenth), a camera that goes
//! away (and a new reference picture asked for from the workbench), and a rule outside its
//! hours.

use crate::real_street::{street_camera, street_config};
use crate::support::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The health watch made quick for short clips: 3 s to open, 2 s to resolve.
const QUICK_HEALTH: &str =
    "[cameras.health]\nblocked_after_secs = 3\nmoved_after_secs = 3\nclear_after_secs = 2\noffline_after_secs = 2";

/// (rule, event, paused_by) of each report, in the order given (replay's: as they were made).
fn timeline(reports: &[Value]) -> Vec<(String, String, Option<String>)> {
    (reports.iter())
        .map(|r| {
            let text = |k: &str| r[k].as_str().map(String::from);
            (text("rule_id").unwrap(), text("event").unwrap(), text("paused_by"))
        })
        .collect()
}

fn replay(dir: &Path, clip: &str, camera: &str) -> Vec<Value> {
    replay_from(dir, clip, camera, &[])
}

/// [`replay`] with more arguments (`--start`).
fn replay_from(dir: &Path, clip: &str, camera: &str, args: &[&str]) -> Vec<Value> {
    std::fs::create_dir_all(dir).unwrap();
    let config = street_config(dir, 1, "enabled = false", camera, None);
    crate::replay::replay_with(&cache(&format!("clips/{clip}")), &config, &dir.join("out"), args, |_| {})
}

fn one<'a>(reports: &'a [Value], rule: &str, event: &str) -> &'a Value {
    let found: Vec<&Value> = reports.iter().filter(|r| r["rule_id"] == rule && r["event"] == event).collect();
    assert_eq!(found.len(), 1, "one {rule} {event} in {reports:#?}");
    found[0]
}

#[test]
fn a_view_that_turns_black_is_a_blocked_case_that_pauses_the_rules_until_the_picture_returns() {
    let _serial = heavy_blocking();
    let dir = temp_dir("dispatch-black");
    let camera = street_camera("rtsp://127.0.0.1:9/none", &format!("detect_fps = 1\n\n{QUICK_HEALTH}"));
    let reports = replay(&dir, "vtest_black.mp4", &camera);
    let s = |a: &str, b: &str, c: Option<&str>| (a.to_string(), b.to_string(), c.map(String::from));
    // Black from 16 s to 26 s: the frontage's incident is paused (not resolved) meanwhile.
    assert_eq!(
        timeline(&reports),
        [
            s("frontage", "opened", None),
            s("view_blocked", "opened", None),
            s("frontage", "updated", Some("view_blocked")),
            s("view_blocked", "resolved", None),
        ],
        "{reports:#?}"
    );
    let validator = crate::e2e::validator();
    for r in &reports {
        assert!(validator.is_valid(r), "{:?}", validator.iter_errors(r).map(|e| e.to_string()).collect::<Vec<_>>());
    }
    let opened = one(&reports, "view_blocked", "opened");
    assert_eq!((&opened["category"], &opened["violation"]), (&Value::from("urban_infrastructure"), &opened["rule_id"]));
    assert_eq!(opened["priority"], "high");
    let begun = secs_between(one(&reports, "frontage", "opened"), "started_at", "observed_at");
    assert!(begun > 0.0);
    // It began when the picture went black (16 s), opened 3 s later.
    let (started, opened_at) = (secs_of(opened, "started_at"), secs_of(opened, "opened_at"));
    assert_eq!((opened_at - started).as_seconds_f64(), 3.0, "{opened:#}");
    // Its snapshot is the black frame; the last good view, before it, comes with it.
    let out = dir.join("out");
    let id = opened["report_id"].as_str().unwrap();
    let shot = image::open(out.join(format!("{}.jpg", report_file(&out, id)))).unwrap().to_luma8();
    let dark = shot.pixels().skip(shot.width() as usize * 40).filter(|p| p[0] < 30).count();
    assert!(dark as f64 > 0.9 * (shot.len() as f64 - shot.width() as f64 * 40.0), "the black view (header aside)");
    let last_good = &opened["first_seen"]["observed_at"];
    assert!(secs_of(&opened["first_seen"], "observed_at") < started, "last good view {last_good}");
    let paused = one(&reports, "frontage", "updated");
    assert!(paused["description"]["en"].as_str().unwrap().contains("camera view blocked"), "{paused:#}");
    assert_eq!(paused["incident_id"], one(&reports, "frontage", "opened")["incident_id"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_view_turned_by_a_tenth_is_a_moved_case() {
    let _serial = heavy_blocking();
    let dir = temp_dir("dispatch-moved");
    let camera = street_camera("rtsp://127.0.0.1:9/none", &format!("detect_fps = 1\n\n{QUICK_HEALTH}"));
    let reports = replay(&dir, "vtest_shifted.mp4", &camera);
    let moved = one(&reports, "view_moved", "opened");
    // Turned at 16 s, opened 3 s later; nothing blocked meanwhile.
    assert_eq!(secs_between(moved, "started_at", "opened_at"), 3.0, "{moved:#}");
    assert!(reports.iter().all(|r| r["rule_id"] != "view_blocked"), "{reports:#?}");
    assert!(moved["description"]["en"].as_str().unwrap().starts_with("Camera view moved"), "{moved:#}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_gone_longer_than_its_limit_is_an_offline_case_until_it_streams_again() {
    let _serial = heavy().await;
    let dir = temp_dir("dispatch-offline");
    let broker = Mosquitto::start();
    let subscriber = Subscriber::start(broker.port, "fieldwatch/#").await;
    let clip = cache("clips/vtest_12s.mp4");
    let camera = RtspServer::start(&clip, None);
    let port = camera.port;
    let keys = format!(
        "detect_fps = 1\nstall_timeout_secs = 1\nreconnect_min_secs = 0.5\nreconnect_max_secs = 0.5\n\n{QUICK_HEALTH}"
    );
    let http = free_port();
    let config = street_config(&dir, broker.port, "enabled = false", &street_camera(&camera.url(), &keys), Some(http));
    let text = std::fs::read_to_string(&config).unwrap().replacen("[mqtt]\n", "[mqtt]\nheartbeat_secs = 1\n", 1);
    std::fs::write(&config, text).unwrap();
    let mut daemon = Daemon::start(&config, &dir.join("daemon.log"));
    daemon.wait_log("rtsp playing", 1, Duration::from_secs(15)).await;
    // The first good frame is the reference picture; the workbench asks for a new one.
    daemon.wait_log("the camera's reference picture is taken", 1, Duration::from_secs(10)).await;
    let reference = dir.join("state/incidents/cam-ok.reference.pgm");
    assert!(std::fs::read(&reference).unwrap().starts_with(b"P5\n64 48\n255\n"), "a 64x48 grid of 768x576");
    let (_, page) = http_get(http, "/cameras/cam-ok");
    let csrf = page.split("name=\"csrf-token\" content=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    assert_eq!(http_post(http, "/cameras/cam-ok/reference", &[], "").0, 403, "not without the page's CSRF token");
    let (status, body) = http_post(http, "/cameras/cam-ok/reference", &[("X-CSRF-Token", &csrf)], "");
    assert_eq!(status, 202, "{body}");
    daemon.wait_log("the camera's reference picture is taken", 2, Duration::from_secs(10)).await;
    drop(camera);
    let offline = |m: &[(String, Vec<u8>)], event: &str| {
        m.iter().any(|(t, p)| {
            let p = String::from_utf8_lossy(p);
            t.ends_with("/reports") && p.contains("\"camera_offline\"") && p.contains(&format!("\"{event}\""))
        })
    };
    subscriber.wait_for(Duration::from_secs(15), "camera_offline opened", |m| offline(m, "opened")).await;
    let (_, metrics) = http_get(http, "/metrics");
    let open = "fieldwatch_health_case_open{camera=\"cam-ok\",kind=\"camera_offline\"}";
    assert!(metrics.lines().any(|l| l == format!("{open} 1")), "{metrics}");
    let _camera = RtspServer::start_on(port, &clip, None);
    subscriber.wait_for(Duration::from_secs(15), "camera_offline resolved", |m| offline(m, "resolved")).await;
    let (_, metrics) = http_get(http, "/metrics");
    assert!(metrics.lines().any(|l| l == format!("{open} 0")), "{metrics}");
    let (status, _) = daemon.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", daemon.log_text());

    let reports = subscriber.json_on("edge-test/cam-ok/reports");
    let opened = one(&reports, "camera_offline", "opened");
    let resolved = one(&reports, "camera_offline", "resolved");
    assert_eq!(opened["incident_id"], resolved["incident_id"]);
    // Silent since its last frame, opened 2 s on; its snapshot is the last frame it sent.
    assert!(secs_between(opened, "started_at", "opened_at") >= 2.0, "{opened:#}");
    assert!(opened["snapshot"]["data"].is_string() && opened.get("evidence").is_none(), "{opened:#}");
    let beats = subscriber.json_on("edge-test/heartbeat");
    assert!(beats.iter().any(|b| b["health_cases"]["camera_offline"] == 1), "{beats:#?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_rule_outside_its_hours_opens_nothing() {
    let _serial = heavy_blocking();
    let dir = temp_dir("dispatch-schedule");
    // The clip plays from noon on a Wednesday in Ho Chi Minh City (the default time zone).
    let noon = ["--start", "2026-12-02T12:00:00+07:00"];
    let window = |days: &str, from: &str, to: &str| {
        format!("[[cameras.rules.schedule]]\ndays = {days}\nfrom = \"{from}\"\nto = \"{to}\"\n")
    };
    let camera = street_camera("rtsp://127.0.0.1:9/none", "detect_fps = 1");
    let evening = format!("{camera}{}", window("[\"wed\"]", "18:00", "23:00"));
    assert_eq!(replay_from(&dir.join("evening"), "vtest_12s.mp4", &evening, &noon), Vec::<Value>::new(), "off at noon");
    let other_day = format!("{camera}{}", window("[\"tue\", \"thu\"]", "11:00", "13:00"));
    assert_eq!(replay_from(&dir.join("tue"), "vtest_12s.mp4", &other_day, &noon), Vec::<Value>::new(), "not Wednesday");
    // From Tuesday evening across midnight to Wednesday 13:00: on at noon.
    let overnight = format!("{camera}{}", window("[\"tue\"]", "20:00", "13:00"));
    let reports = replay_from(&dir.join("overnight"), "vtest_12s.mp4", &overnight, &noon);
    assert_eq!(timeline(&reports), [("frontage".to_string(), "opened".to_string(), None)]);
    std::fs::remove_dir_all(&dir).ok();
}

fn secs_of(report: &Value, key: &str) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(report[key].as_str().unwrap()).unwrap()
}

/// The stem of the file replay wrote report `id` to in `out`.
fn report_file(out: &Path, id: &str) -> String {
    (std::fs::read_dir(out).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .find(|p| std::fs::read_to_string(p).unwrap().contains(id))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .unwrap()
}
