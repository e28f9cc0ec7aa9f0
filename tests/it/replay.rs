//! `fieldwatch replay`: the live pipeline's stages over a recorded clip, timed by the clip.
//! Deterministic run to run, the same whatever the container, and able to publish.

use crate::support::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const START: &str = "2026-11-28T10:00:00+07:00";

/// Runs `fieldwatch replay` on scene.mp4 as camera `cam-ok`, writing into `out`; returns the
/// reports it wrote, in order. Panics unless it exits 0 with its summary line.
pub fn replay(clip: &Path, config: &Path, out: &Path, extra: &[&str]) -> Vec<Value> {
    replay_with(clip, config, out, extra, |summary| {
        assert!(summary.contains("frames 85,") && summary.contains("incidents 1,"), "{summary}")
    })
}

/// [`replay`] for any clip.
pub fn replay_any(clip: &Path, config: &Path, out: &Path) -> Vec<Value> {
    replay_with(clip, config, out, &[], |_| {})
}

pub fn replay_with(clip: &Path, config: &Path, out: &Path, extra: &[&str], check: impl Fn(&str)) -> Vec<Value> {
    let (clip, config, out_arg) = (clip.display().to_string(), config.display().to_string(), out.display().to_string());
    let mut args = vec!["replay", &clip, "--config", &config, "--camera", "cam-ok", "--out", &out_arg];
    args.extend_from_slice(extra);
    let (code, text) = fieldwatch(&args);
    assert_eq!(code, 0, "{text}");
    let summary = text.lines().find(|l| l.starts_with("replay ")).unwrap_or_else(|| panic!("no summary line:\n{text}"));
    check(summary);
    let mut files: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for f in &files {
        let jpeg = std::fs::read(f.with_extension("jpg")).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "{} has its snapshot beside it", f.display());
        assert_eq!(text.lines().filter(|l| l.contains(&*f.display().to_string())).count(), 1, "one line per report");
    }
    files.iter().map(|f| serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap()).collect()
}

/// What must not change between two replays: everything but the random ids.
fn incidents(reports: &[Value]) -> Vec<Value> {
    reports
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let m = r.as_object_mut().unwrap();
            for volatile in ["report_id", "incident_id", "snapshot", "first_seen"] {
                m.remove(volatile);
            }
            // The clip is named after the report; its bytes are the same every time.
            if let Some(evidence) = m.get_mut("evidence").and_then(|e| e.as_object_mut()) {
                evidence.remove("url");
            }
            r
        })
        .collect()
}

fn scene_config(dir: &Path, mqtt_port: u16) -> std::path::PathBuf {
    daemon_config(dir, mqtt_port, &scene_camera("rtsp://127.0.0.1:1/cam"))
}

#[test]
fn replay_is_deterministic_and_agrees_across_containers() {
    let dir = temp_dir("replay");
    let config = scene_config(&dir, 1883);
    let start = ["--start", START];
    let first = replay(&cache("clips/scene.mp4"), &config, &dir.join("mp4-a"), &start);
    let again = replay(&cache("clips/scene.mp4"), &config, &dir.join("mp4-b"), &start);
    assert_eq!(incidents(&first), incidents(&again), "two replays of one clip differ");
    let events: Vec<&str> = first.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["opened", "resolved"]);
    assert_eq!(first[0]["incident_id"], first[1]["incident_id"]);
    // The clip's own times: the dweller arrives 6 s in, the incident opens 3 s later, and
    // resolves 3 s after it leaves at 12 s (1 s of coasting, 2 s clear); `--start` pins the
    // clip's first frame.
    let started = chrono::DateTime::parse_from_rfc3339(first[0]["started_at"].as_str().unwrap()).unwrap();
    assert_eq!(started, chrono::DateTime::parse_from_rfc3339("2026-11-28T10:00:06+07:00").unwrap());
    assert_eq!(secs_between(&first[0], "started_at", "opened_at"), 3.0);
    assert_eq!(secs_between(&first[1], "started_at", "resolved_at"), 9.0);
    let validator = crate::e2e::validator();
    for r in &first {
        assert!(validator.is_valid(r), "{r}");
    }
    // The same clip from every container; its MP4 bytes differ only by how each container
    // carried the parameter sets (avcC, CodecPrivate or in band).
    let container_free = |reports: &[Value]| -> Vec<Value> {
        let mut reports = incidents(reports);
        for r in &mut reports {
            if let Some(evidence) = r.get_mut("evidence").and_then(|e| e.as_object_mut()) {
                evidence.remove("sha256");
                evidence.remove("bytes");
            }
        }
        reports
    };
    for container in ["mkv", "h264"] {
        let other = replay(&cache(&format!("clips/scene.{container}")), &config, &dir.join(container), &start);
        assert_eq!(container_free(&first), container_free(&other), "scene.{container} disagrees with scene.mp4");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_report_whose_building_panics_is_built_again_not_lost() {
    let dir = temp_dir("replay-report-panic");
    let config = scene_config(&dir, 1883);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fieldwatch"))
        .args(["replay", &cache("clips/scene.mp4").display().to_string(), "--camera", "cam-ok", "--config"])
        .arg(&config)
        .env("FIELDWATCH_TEST_PANIC", "report:cam-ok")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("building a report failed") && stderr.contains("attempt=1"), "{stderr}");
    assert!(stdout.contains("reports 2;") && !stdout.contains("failed"), "{stdout}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_can_publish_its_reports_without_speaking_for_the_device() {
    let dir = temp_dir("replay-publish");
    let broker = Mosquitto::start();
    let subscriber = Subscriber::start(broker.port, "fieldwatch/#").await;
    let config = scene_config(&dir, broker.port);
    let clip = cache("clips/scene.mp4");
    let out = dir.join("out");
    let written = tokio::task::spawn_blocking(move || replay(&clip, &config, &out, &["--publish"])).await.unwrap();
    subscriber.wait_for_reports(2, Duration::from_secs(10)).await;
    let published = subscriber.json_on("edge-test/cam-ok/reports");
    let ids = |rs: &[Value]| rs.iter().map(|r| r["report_id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&published), ids(&written), "the broker got exactly what was written, in order");
    assert!(subscriber.json_on("/status").is_empty(), "a replay must not announce the device online or offline");
    std::fs::remove_dir_all(&dir).ok();
}

/// `snapshot.mode = "separate"`: each image goes as binary JPEG to its own topic just before
/// its report, which names that topic instead of carrying the image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_snapshots_arrive_on_their_own_topic_before_their_report() {
    let dir = temp_dir("replay-separate");
    let broker = Mosquitto::start();
    let subscriber = Subscriber::start(broker.port, "fieldwatch/#").await;
    let cameras = format!("[snapshot]\nmode = \"separate\"\n\n{}", scene_camera("rtsp://127.0.0.1:1/cam"));
    let config = daemon_config(&dir, broker.port, &cameras);
    let (clip, out) = (cache("clips/scene.mp4"), dir.join("out"));
    tokio::task::spawn_blocking(move || replay(&clip, &config, &out, &["--publish"])).await.unwrap();
    subscriber.wait_for_reports(2, Duration::from_secs(10)).await;
    let messages = subscriber.messages();
    let validator = crate::e2e::validator();
    for (at, (topic, payload)) in messages.iter().enumerate().filter(|(_, (t, _))| t.ends_with("/reports")) {
        let report: Value = serde_json::from_slice(payload).unwrap();
        assert!(validator.is_valid(&report), "{report}");
        let mut images = vec![("snapshot", &report["snapshot"])];
        if report["event"] == "opened" {
            images.push(("first_seen", &report["first_seen"]));
        }
        for (field, image) in images {
            assert!(image.get("data").is_none(), "{field} not inline");
            let named = image["topic"].as_str().unwrap_or_else(|| panic!("{field} names its topic: {report}"));
            let expected = format!("fieldwatch/edge-test/cam-ok/snapshots/{}", report["report_id"].as_str().unwrap());
            let expected = if field == "snapshot" { expected } else { format!("{expected}/first_seen") };
            assert_eq!(named, expected);
            let (before, (_, jpeg)) = messages
                .iter()
                .enumerate()
                .find(|(_, (t, _))| t == named)
                .unwrap_or_else(|| panic!("nothing on {named}"));
            assert!(before < at, "{named} arrives before {topic}");
            assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "binary JPEG");
            let decoded = image::load_from_memory(jpeg).unwrap();
            assert_eq!(Some(decoded.width() as u64), image["width"].as_u64());
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
