//! Reload: what a `systemctl reload` (SIGHUP) costs the cameras. N loopback RTSP cameras play
//! the parked-squares scene, each with two rules on its sidewalk; once both rules are open on
//! every camera, the config drops `extra` from camera 1 and raises its `sidewalk` threshold,
//! the other cameras unchanged, and the daemon gets SIGHUP. It measures the time from the
//! signal to the reload taken (the daemon's own `took_ms`), to the removed rule's incident
//! resolved (reason `config`: the rules run on the new config) and to its report queued, by the
//! daemon's log; and per camera, across the 4 s around the reload, the frames received against the stream's 15 fps, the frames dropped, and
//! the connections made (1: never reconnected).
//!
//! `cargo bench --bench reload [-- --cameras 4] [--reloads 5] [--out FILE.json]`

mod common;

use common::{Proc, arg, daemon, free_port, mosquitto, rtsp_camera, scrape};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The config: camera 1 has `extra` unless `first_changed`, and then a raised threshold.
fn config(dir: &Path, root: &Path, mqtt: u16, http: u16, ports: &[u16], first_changed: bool) -> PathBuf {
    let mut text = format!(
        "[device]\nid = \"reload\"\nstate_dir = \"{}\"\n[model]\npath = \"{}\"\nruntime = \"{}\"\n\
         [mqtt]\nport = {mqtt}\n[http]\nlisten = \"127.0.0.1:{http}\"\n",
        dir.join("state").display(),
        root.join("models/squares.onnx").display(),
        root.join(".cache/onnxruntime/libonnxruntime.so").display(),
    );
    for (i, port) in ports.iter().enumerate() {
        let changed = first_changed && i == 0;
        let threshold = if changed { 0.6 } else { 0.5 };
        text.push_str(&format!(
            "[[cameras]]\nid = \"cam-{}\"\nurl = \"rtsp://127.0.0.1:{port}/cam\"\ndetect_fps = 5\n\
             [cameras.tracking]\nstationary_after_secs = 1\nstationary_max_unseen_secs = 1\n\
             [cameras.health]\nenabled = false\n\
             [[cameras.zones]]\nname = \"sidewalk\"\npolygon = [[0.25, 0.5], [0.75, 0.5], [0.75, 1.0], [0.25, 1.0]]\n\
             [[cameras.rules]]\nid = \"sidewalk\"\nviolation = \"sidewalk_encroachment\"\nzone = \"sidewalk\"\n\
             classes = [\"red\"]\nthreshold = {threshold}\ndwell_secs = 3\nclear_after_secs = 2\ncooldown_secs = 0\n",
            i + 1
        ));
        if !changed {
            text.push_str(
                "[[cameras.rules]]\nid = \"extra\"\nviolation = \"obstacle\"\nzone = \"sidewalk\"\n\
                 classes = [\"red\"]\ndwell_secs = 3\nclear_after_secs = 2\ncooldown_secs = 0\n",
            );
        }
    }
    let path = dir.join("fieldwatch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A counter's value for one label set (`name{labels}`), 0 if absent.
fn sample(scrape: &str, series: &str) -> f64 {
    scrape.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0)
}

/// The sum of a counter's samples over every label set.
fn total(scrape: &str, name: &str) -> f64 {
    (scrape.lines())
        .filter(|l| l.starts_with(&format!("{name}_total{{")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Per camera: (frames received, frames dropped for any reason, connects).
fn per_camera(scrape: &str, cameras: usize) -> Vec<(f64, f64, f64)> {
    (1..=cameras)
        .map(|i| {
            let label = format!("camera=\"cam-{i}\"");
            let dropped: f64 = (scrape.lines())
                .filter(|l| l.starts_with("fieldwatch_frames_dropped_total{") && l.contains(&label))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum();
            let received = sample(scrape, &format!("fieldwatch_frames_received_total{{{label}}}"));
            (received, dropped, sample(scrape, &format!("fieldwatch_connects_total{{{label}}}")))
        })
        .collect()
}

fn wait(http: u16, within: Duration, done: impl Fn(&str) -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if done(&scrape(http)) {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn main() {
    let cameras: usize = arg("--cameras").and_then(|n| n.parse().ok()).unwrap_or(4);
    let reloads: usize = arg("--reloads").and_then(|n| n.parse().ok()).unwrap_or(5);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("fieldwatch-bench-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (broker, mqtt) = mosquitto(&dir);
    let clip = root.join(".cache/clips/parked.mp4");
    let http = free_port();
    let mut runs = Vec::new();
    for run in 0..reloads {
        // A fresh daemon and cameras each time: each reload finds both rules open.
        let servers: Vec<(Proc, u16)> = (0..cameras).map(|_| rtsp_camera(&root, &clip)).collect();
        let ports: Vec<u16> = servers.iter().map(|(_, p)| *p).collect();
        std::fs::remove_dir_all(dir.join("state")).ok();
        let path = config(&dir, &root, mqtt, http, &ports, false);
        let log_path = dir.join(format!("daemon-{run}.log"));
        let daemon = daemon(&path, Some(&log_path));
        let opened =
            wait(http, Duration::from_secs(30), |s| total(s, "fieldwatch_incidents_opened") >= 2.0 * cameras as f64);
        assert!(opened.is_some(), "both rules opened on every camera");
        let window_start = (scrape(http), Instant::now());
        std::thread::sleep(Duration::from_secs(2));
        config(&dir, &root, mqtt, http, &ports, true);
        let signalled = chrono::Utc::now();
        unsafe { libc::kill(daemon.0.id() as i32, libc::SIGHUP) };
        std::thread::sleep(Duration::from_secs(2));
        let window_end = (scrape(http), Instant::now());
        let secs = (window_end.1 - window_start.1).as_secs_f64();
        let (a, b) = (per_camera(&window_start.0, cameras), per_camera(&window_end.0, cameras));
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let took_ms: Option<f64> = (log.lines().find(|l| l.contains("reload taken")))
            .and_then(|l| l.split("took_ms=").nth(1)?.split_whitespace().next()?.parse().ok());
        // The log's own times: when the rules resolved the removed rule's incident, and when
        // its report was in the outbox.
        let at = |needle: &str, after: usize| -> Option<(usize, f64)> {
            let (n, line) = log.lines().enumerate().skip(after).find(|(_, l)| l.contains(needle))?;
            let time = chrono::DateTime::parse_from_rfc3339(line.split_whitespace().next()?).ok()?;
            Some((n, (time.with_timezone(&chrono::Utc) - signalled).as_seconds_f64() * 1000.0))
        };
        let resolved = at("resolved_by=\"config\"", 0);
        let queued = resolved.and_then(|(n, _)| at("event=\"resolved\"", n));
        let per: Vec<_> = a
            .iter()
            .zip(&b)
            .enumerate()
            .map(|(i, (a, b))| {
                json!({
                    "camera": format!("cam-{}", i + 1),
                    "changed": i == 0,
                    "frames_received": b.0 - a.0,
                    "frames_expected_at_15_fps": (secs * 15.0).round(),
                    "frames_dropped": b.1 - a.1,
                    "connects": b.2,
                })
            })
            .collect();
        runs.push(json!({
            "reload_taken_ms": took_ms,
            "sighup_to_removed_rule_resolved_ms": resolved.map(|(_, ms)| ms),
            "sighup_to_its_report_queued_ms": queued.map(|(_, ms)| ms),
            "window_secs": secs,
            "cameras": per,
        }));
        drop((daemon, servers));
    }
    let latencies: Vec<f64> = runs.iter().filter_map(|r| r["sighup_to_removed_rule_resolved_ms"].as_f64()).collect();
    let worst = latencies.iter().copied().fold(0.0, f64::max);
    let lost_unchanged: f64 = (runs.iter())
        .flat_map(|r| r["cameras"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["changed"] == false)
        .map(|c| c["frames_dropped"].as_f64().unwrap_or(0.0))
        .sum();
    let result = json!({
        "cameras": cameras,
        "reloads": reloads,
        "worst_sighup_to_effect_ms": worst,
        "frames_dropped_by_unchanged_cameras": lost_unchanged,
        "runs": runs,
    });
    println!("{result:#}");
    if let Some(out) = arg("--out") {
        std::fs::write(out, format!("{result:#}\n")).unwrap();
    }
    drop(broker);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(latencies.len(), reloads, "every reload resolved the removed rule's incident");
}
