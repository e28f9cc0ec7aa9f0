//! The whole job on real parts: GStreamer RTSP camera → daemon binary (retina, libavcodec,
//! ONNX Runtime with the squares model) → mosquitto → a real MQTT subscriber.
//!
//! scene.mp4 (see scripts/make_clips): a red square outside the zone all along, a green one
//! inside it (not a rule class), a red one crossing the zone in under a second, and a red one
//! that stays inside from 6 s to 12 s. Exactly one incident must open and resolve.

use crate::support::*;
use base64::Engine;
use serde_json::Value;
use std::time::Duration;

const PASSWORD: &str = "s3cret-pw";

fn config(dir: &std::path::Path, mqtt_port: u16, rtsp_port: u16, dead_port: u16, http_port: u16) -> std::path::PathBuf {
    // Routing: the camera's ward, the zone's own address and coordinates, a high priority.
    let ok = scene_camera(&format!("rtsp://viewer:{PASSWORD}@127.0.0.1:{rtsp_port}/cam"))
        .replacen(
            "[cameras.tracking]",
            "[cameras.place]\nward = \"Ben Nghe\"\naddress = \"Le Loi St.\"\n\n[cameras.tracking]",
            1,
        )
        .replacen(
            "[[cameras.rules]]",
            "[cameras.zones.place]\naddress = \"86 Le Loi St.\"\nlat = 10.7743\nlon = 106.7015\n\n[[cameras.rules]]",
            1,
        )
        + "priority = \"high\"\n";
    let down = format!(
        r#"
[[cameras]]
id = "cam-down"
url = "rtsp://127.0.0.1:{dead_port}/cam"
reconnect_min_secs = 0.5
reconnect_max_secs = 1

[[cameras.zones]]
name = "road"
polygon = [[0, 0], [1, 0], [1, 1]]

[[cameras.rules]]
id = "road"
violation = "obstacle"
zone = "road"
classes = ["green"]
"#
    );
    daemon_config_http(dir, mqtt_port, "heartbeat_secs = 1", &format!("{ok}{down}"), Some(http_port))
}

/// `name{labels} value` lines of a Prometheus/OpenMetrics scrape, by `name{labels}`; every line
/// that is not a comment must parse.
fn parse_metrics(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {l}"));
            (key.to_string(), value.parse::<f64>().unwrap_or_else(|_| panic!("not a number: {l}")))
        })
        .collect()
}

pub fn validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("schemas/report.v1.json")).unwrap()).unwrap();
    // Formats (uuid, date-time) are only annotations in draft 2020-12 unless asked for.
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schemas/report.v1.json is a valid JSON Schema")
}

fn snapshot(report: &Value) -> image::RgbImage {
    let data = base64::engine::general_purpose::STANDARD.decode(report["snapshot"]["data"].as_str().unwrap()).unwrap();
    assert_eq!(&data[..2], &[0xFF, 0xD8], "snapshot is a JPEG");
    image::load_from_memory_with_format(&data, image::ImageFormat::Jpeg).unwrap().to_rgb8()
}

fn is_box_colour(p: &image::Rgb<u8>) -> bool {
    p[0] > 180 && p[1] > 180 && p[2] < 100
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dwelling_object_gives_one_opened_and_one_resolved_report() {
    let _serial = heavy().await;
    let dir = temp_dir("e2e");
    let broker = Mosquitto::start();
    let camera = RtspServer::start(&cache("clips/scene.mp4"), Some(("viewer", PASSWORD)));
    let subscriber = Subscriber::start(broker.port, "fieldwatch/#").await;
    let http = free_port();
    let mut daemon = Daemon::start(&config(&dir, broker.port, camera.port, free_port(), http), &dir.join("daemon.log"));

    // The dweller appears 6 s into the clip, opens at ~9 s and clears at ~14 s.
    subscriber
        .wait_for(Duration::from_secs(40), "a resolved report", |m| {
            m.iter().any(|(t, p)| t.ends_with("/reports") && String::from_utf8_lossy(p).contains("\"resolved\""))
        })
        .await;
    // Let the clip play out (17 s) so a late, wrong report would still be seen.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (code, scraped) = http_get(http, "/metrics");
    assert_eq!(code, 200, "{scraped}");
    let (status, took) = daemon.terminate(Duration::from_secs(10));
    let log = daemon.log_text();
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");

    let reports = subscriber.json_on("edge-test/cam-ok/reports");
    let events: Vec<&str> = reports.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["opened", "resolved"], "{log}");

    // The scrape parses, and its counters moved with what happened.
    let metrics = parse_metrics(&scraped);
    let at = |key: &str| *metrics.get(key).unwrap_or_else(|| panic!("no {key} in\n{scraped}"));
    assert!(
        at("fieldwatch_frames_received_total{camera=\"cam-ok\"}")
            >= at("fieldwatch_frames_detected_total{camera=\"cam-ok\"}")
    );
    assert!(at("fieldwatch_frames_detected_total{camera=\"cam-ok\"}") > 50.0);
    assert_eq!(at("fieldwatch_incidents_opened_total{camera=\"cam-ok\"}"), 1.0);
    assert_eq!(at("fieldwatch_reports_total{camera=\"cam-ok\"}"), 2.0);
    assert_eq!(at("fieldwatch_reports_published_total"), 2.0);
    assert_eq!(at("fieldwatch_reports_pending"), 0.0);
    assert_eq!(at("fieldwatch_camera_streaming{camera=\"cam-down\"}"), 0.0);
    assert_eq!(at("fieldwatch_frames_received_total{camera=\"cam-down\"}"), 0.0);
    assert!(at("fieldwatch_inference_seconds_count{model=\"squares\"}") > 50.0);
    assert!(at("fieldwatch_inference_seconds_bucket{le=\"+Inf\",model=\"squares\"}") > 50.0);
    assert_eq!(at("fieldwatch_frames_dropped_total{camera=\"cam-ok\",reason=\"decode_error\"}"), 0.0);
    assert!(scraped.trim_end().ends_with("# EOF"));
    assert!(subscriber.json_on("cam-down/reports").is_empty());
    let (opened, resolved) = (&reports[0], &reports[1]);

    let validator = validator();
    for r in &reports {
        let errors: Vec<String> = validator.iter_errors(r).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "report does not match schemas/report.v1.json: {errors:#?}");
    }
    assert_eq!(opened["schema"], "fieldwatch.report/v1");
    assert_eq!(opened["incident_id"], resolved["incident_id"]);
    assert_ne!(opened["report_id"], resolved["report_id"]);
    assert_eq!(opened["device_id"], "edge-test");
    assert_eq!(opened["camera_id"], "cam-ok");
    assert_eq!(opened["camera_name"], "Test Street");
    assert_eq!(opened["camera_location"], "Le Loi / Nguyen Hue, north side");
    assert_eq!(opened["rule_id"], "sidewalk");
    assert_eq!(opened["violation"], "sidewalk_encroachment");
    assert_eq!(opened["category"], "urban_order");
    let place = serde_json::json!({ "address": "86 Le Loi St.", "ward": "Ben Nghe", "lat": 10.7743, "lon": 106.7015 });
    assert_eq!((&opened["place"], &resolved["place"]), (&place, &place), "the zone's place over the camera's");
    assert_eq!((&opened["priority"], &resolved["priority"]), (&Value::from("high"), &Value::from("high")));
    assert_eq!(secs_between(opened, "opened_at", "due_at"), 4.0 * 3600.0, "high: due in 4 h");
    assert_eq!(opened["due_at"], resolved["due_at"]);
    assert!(opened.get("overdue").is_none() && resolved.get("overdue").is_none());
    assert_eq!(opened["model"]["name"], "squares");
    assert!(opened["config_version"].as_str().unwrap().len() >= 8);
    for key in ["started_at", "opened_at", "observed_at"] {
        chrono::DateTime::parse_from_rfc3339(opened[key].as_str().unwrap()).unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    let dwell = secs_between(opened, "started_at", "opened_at");
    assert!((3.0..4.0).contains(&dwell), "dwell {dwell}");
    assert!(resolved["resolved_at"].is_string() && opened.get("resolved_at").is_none());
    let (en, vi) = (opened["description"]["en"].as_str().unwrap(), opened["description"]["vi"].as_str().unwrap());
    assert!(en.starts_with("Sidewalk encroachment: 1 red square stopped on the sidewalk at Test Street"), "{en}");
    assert!(vi.starts_with("Phát hiện lấn chiếm vỉa hè: 1 ô vuông đỏ dừng đỗ trên vỉa hè tại Test Street"), "{vi}");

    // The one object is the dweller at (300,240)-(348,288) in the 640x360 frame.
    let objects = opened["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0]["class"], "red");
    let b = &objects[0]["box"];
    let edges =
        [b["x1"].as_f64().unwrap(), b["y1"].as_f64().unwrap(), b["x2"].as_f64().unwrap(), b["y2"].as_f64().unwrap()];
    for (got, want) in edges.iter().zip([300.0, 240.0, 348.0, 288.0]) {
        assert!((got - want).abs() <= 3.0, "box {edges:?} vs dweller at [300, 240, 348, 288]");
    }
    assert!(resolved["objects"].as_array().unwrap().is_empty());

    let shot = snapshot(opened);
    assert_eq!((shot.width(), shot.height()), (640, 360));
    // The opened report also shows where it began: the first frame the object counted in.
    let first = opened["first_seen"]["observed_at"].as_str().expect("opened carries its first-seen frame");
    let since = chrono::DateTime::parse_from_rfc3339(first).unwrap();
    let observed = chrono::DateTime::parse_from_rfc3339(opened["observed_at"].as_str().unwrap()).unwrap();
    assert!(observed - since >= chrono::TimeDelta::seconds(2), "first seen {since}, observed {observed}");
    let first_jpeg = base64::engine::general_purpose::STANDARD.decode(opened["first_seen"]["data"].as_str().unwrap());
    assert_eq!(&first_jpeg.unwrap()[..2], &[0xFF, 0xD8]);
    assert!(resolved.get("first_seen").is_none(), "only opened reports carry it");
    assert_eq!((opened["snapshot"]["width"].as_u64(), opened["snapshot"]["height"].as_u64()), (Some(640), Some(360)));
    // The box is drawn just outside the object on all four sides; the object itself is red.
    let (x1, y1, x2, y2) = (edges[0] as u32, edges[1] as u32, edges[2] as u32, edges[3] as u32);
    let mid_y = (y1 + y2) / 2;
    let mid_x = (x1 + x2) / 2;
    for (x, y, side) in
        [(x1 - 2, mid_y, "left"), (x2 + 1, mid_y, "right"), (mid_x, y1 - 2, "top"), (mid_x, y2 + 1, "bottom")]
    {
        assert!(is_box_colour(shot.get_pixel(x, y)), "{side} edge at ({x},{y}) is {:?}", shot.get_pixel(x, y));
    }
    // A header names the camera and the local time, in white on a dark band.
    let text =
        (0..14).flat_map(|y| (0..300).map(move |x| (x, y))).filter(|&(x, y)| shot.get_pixel(x, y)[0] > 180).count();
    assert!(text > 100, "header text pixels: {text}");
    assert!(shot.get_pixel(630, 3)[0] < 60, "the header band is dark");
    let centre = shot.get_pixel(mid_x, mid_y);
    assert!(centre[0] > 180 && centre[1] < 80, "object centre {centre:?}");
    let cleared = snapshot(resolved);
    let there = cleared.get_pixel(mid_x, mid_y);
    assert!(there[0] < 100, "resolved snapshot still shows the object: {there:?}");
    assert!(!is_box_colour(cleared.get_pixel(x1 - 2, mid_y)), "no box on the cleared scene");

    // Device status: online while running, offline after a clean stop; retained.
    let status = subscriber.json_on("edge-test/status");
    assert_eq!(status.first().map(|s| s["state"].clone()), Some("online".into()), "{status:?}");
    assert_eq!(status.last().map(|s| s["state"].clone()), Some("offline".into()), "{status:?}");
    assert_eq!(status[0]["device"]["model"], "squares", "{status:?}");
    assert!(opened["clock_synchronized"].is_boolean() || opened.get("clock_synchronized").is_none());
    // Heartbeats every second: the working camera's frame rate and last frame, the dead one's none.
    let beats = subscriber.json_on("edge-test/heartbeat");
    assert!(beats.len() >= 10, "{} heartbeats in ~20 s", beats.len());
    let late = &beats[beats.len() / 2];
    let cams = late["cameras"].as_array().unwrap();
    let (ok, down) = (&cams[0], &cams[1]);
    assert_eq!((ok["id"].as_str(), down["id"].as_str()), (Some("cam-ok"), Some("cam-down")));
    let fps = ok["frames_per_sec"].as_f64().unwrap();
    assert!((10.0..=20.0).contains(&fps), "cam-ok at {fps} fps (the clip is 15 fps): {late}");
    assert!(ok["last_frame_at"].is_string() && down["last_frame_at"].is_null(), "{late}");
    assert_eq!(ok["state"], "streaming", "{late}");
    assert!(["connecting", "backing_off"].contains(&down["state"].as_str().unwrap()), "{late}");
    assert!(late["outbox"]["reports"].is_u64() && late["disk_free_bytes"].is_u64(), "{late}");
    assert!(late["version"].is_string() && late["config_version"].is_string() && late["model"] == "squares", "{late}");
    assert!(late["outbox"]["dead_letters"] == 0 && late["outbox"].get("oldest_age_secs").is_some(), "{late}");

    // The unreachable camera was retried without disturbing the other; no credentials leaked.
    let retries = log.lines().filter(|l| l.contains("cam-down") && l.contains("retrying")).count();
    assert!(retries >= 3, "expected repeated retries of cam-down:\n{log}");
    assert!(!log.contains(PASSWORD), "password in the log");
    assert!(!log.contains("panicked"), "{log}");
    for r in &reports {
        assert!(!r.to_string().contains(PASSWORD), "password in a report");
    }

    // Replaying the clip the camera played gives the same incidents: same events, the same
    // object and box, the same dwell and duration (to one detection interval, 0.2 s).
    let config = dir.join("fieldwatch.toml");
    let replayed = crate::replay::replay(&cache("clips/scene.mp4"), &config, &dir.join("replay"), &[]);
    let events: Vec<&str> = replayed.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["opened", "resolved"]);
    for (live, replay) in reports.iter().zip(&replayed) {
        for (from, to) in [("started_at", "opened_at"), ("started_at", "observed_at")] {
            let (l, r) = (secs_between(live, from, to), secs_between(replay, from, to));
            assert!((l - r).abs() <= 0.21, "{from}..{to}: live {l} s, replay {r} s");
        }
        assert!((live["duration_secs"].as_f64().unwrap() - replay["duration_secs"].as_f64().unwrap()).abs() <= 0.21);
        let (lo, ro) = (live["objects"].as_array().unwrap(), replay["objects"].as_array().unwrap());
        assert_eq!(lo.len(), ro.len());
        for (l, r) in lo.iter().zip(ro) {
            assert_eq!(l["class"], r["class"]);
            for k in ["x1", "y1", "x2", "y2"] {
                assert!((l["box"][k].as_f64().unwrap() - r["box"][k].as_f64().unwrap()).abs() <= 1.0, "{l} vs {r}");
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The schema is strict enough to be worth validating against: it rejects what a broken
/// report would look like.
#[test]
fn the_schema_rejects_broken_reports() {
    let v = validator();
    let good: Value = serde_json::json!({
        "schema": "fieldwatch.report/v1", "report_id": "0a81d87b-c99e-4741-a407-e7866bcac08a",
        "incident_id": "ab80c4eb-787d-46d9-8cb5-136228da8cc8", "event": "opened", "device_id": "d",
        "camera_id": "c", "camera_name": "C", "camera_location": "", "rule_id": "r",
        "violation": "garbage", "category": "environmental_sanitation",
        "started_at": "2026-11-28T10:02:01.826+07:00", "opened_at": "2026-11-28T10:02:04.826+07:00",
        "observed_at": "2026-11-28T10:02:04.826+07:00", "duration_secs": 3.0,
        "zone": [[0.25, 0.5], [0.75, 0.5], [0.75, 1.0]],
        "objects": [{"class": "red", "score": 0.9, "box": {"x1": 1.0, "y1": 2.0, "x2": 3.0, "y2": 4.0}}],
        "description": {"en": "x", "vi": "y"}, "model": {"name": "m"}, "config_version": "abc",
        "snapshot": {"content_type": "image/jpeg", "width": 640, "height": 360, "data": "/9j/4AAQ"}
    });
    assert!(v.is_valid(&good));
    // v1 grew by an event value and optional object fields; reports without them stay valid.
    let mut updated = good.clone();
    updated["event"] = "updated".into();
    updated["objects"][0]["track_id"] = 7.into();
    updated["objects"][0]["stayed_secs"] = 12.5.into();
    assert!(v.is_valid(&updated));
    let broken = |path: &str, value: Value| {
        let mut r = good.clone();
        *r.pointer_mut(path).unwrap() = value;
        r
    };
    let cases: [(&str, Value); 8] = [
        ("/event", "closed".into()),
        ("/report_id", "not-a-uuid".into()),
        ("/observed_at", "2026-11-28 10:02:04".into()),
        ("/observed_at", "2026-11-28T10:02:04Z".into()), // an offset, not Z: local time matters to the IOC
        ("/category", "parking".into()),
        ("/zone/0/0", 1.5.into()),
        ("/objects/0/score", 2.into()),
        ("/snapshot/content_type", "image/png".into()),
    ];
    for (path, value) in cases {
        assert!(!v.is_valid(&broken(path, value.clone())), "{path} = {value} accepted");
    }
    // A snapshot carries its image inline or names its topic; without either it is broken.
    let mut separate = good.clone();
    separate["snapshot"] = serde_json::json!({"content_type": "image/jpeg", "width": 640, "height": 360,
        "topic": "fieldwatch/d/c/snapshots/0a81d87b-c99e-4741-a407-e7866bcac08a"});
    assert!(v.is_valid(&separate));
    separate["snapshot"].as_object_mut().unwrap().remove("topic");
    assert!(!v.is_valid(&separate));
    // It may be left out, saying why.
    let mut omitted = good.clone();
    omitted.as_object_mut().unwrap().remove("snapshot");
    omitted["snapshot_omitted"] = "evicted".into();
    assert!(v.is_valid(&omitted));
    omitted["snapshot_omitted"] = "lost".into();
    assert!(!v.is_valid(&omitted));
}

/// The example consumers read in `docs/report-v1.md` is a valid report.
#[test]
fn the_documented_example_validates() {
    let doc = std::fs::read_to_string(root().join("docs/report-v1.md")).unwrap();
    let json = doc.split("```json").nth(1).and_then(|rest| rest.split("```").next()).expect("a json block");
    let example: Value = serde_json::from_str(json).unwrap();
    assert!(
        validator().is_valid(&example),
        "{:?}",
        validator().iter_errors(&example).map(|e| e.to_string()).collect::<Vec<_>>()
    );
}
