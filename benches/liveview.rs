//! Live view: what the workbench costs. N loopback RTSP cameras play the 720p street clip, with
//! the squares model at 2 fps per camera (every frame detected: no drops to vary the work); the
//! daemon's CPU (utime + stime from /proc) is measured
//! over a window three ways, each on a fresh daemon with the same cameras:
//! - `off`: `http.listen = ""`, no endpoint, no live view;
//! - `unwatched`: the endpoint on, nobody watching (no view kept, no picture made);
//! - `watched`: one viewer polling camera 1 as its page does (view.json and frame.jpg every
//!   500 ms).
//!
//! The modes take turns, `--rounds` times (a single run is noisy by several percent on a
//! shared box), and each mode's median is compared: `unwatched - off` is what an unwatched live
//! view costs (target: nothing measurable, under 1 %); `watched - unwatched` what one watched
//! camera costs.
//!
//! `cargo bench --bench liveview [-- --cameras 4] [--seconds 20] [--warmup 8] [--rounds 3]
//!  [--out FILE.json]`

mod common;

use common::{Proc, arg, daemon, free_port, http_body, mosquitto, proc_stats, rtsp_camera, scrape};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn config(dir: &Path, root: &Path, mqtt: u16, http: Option<u16>, ports: &[u16]) -> PathBuf {
    let listen = http.map(|p| format!("127.0.0.1:{p}")).unwrap_or_default();
    let mut text = format!(
        "[device]\nid = \"liveview\"\nstate_dir = \"{}\"\n[model]\npath = \"{}\"\nruntime = \"{}\"\n\
         [mqtt]\nport = {mqtt}\n[http]\nlisten = \"{listen}\"\n[log]\nlevel = \"warn\"\n",
        dir.join("state").display(),
        root.join("models/squares.onnx").display(),
        root.join(".cache/onnxruntime/libonnxruntime.so").display(),
    );
    for (i, port) in ports.iter().enumerate() {
        text.push_str(&format!(
            "[[cameras]]\nid = \"cam-{}\"\nurl = \"rtsp://127.0.0.1:{port}/cam\"\ndetect_fps = 2\n\
             [cameras.health]\nenabled = false\n\
             [[cameras.zones]]\nname = \"sidewalk\"\npolygon = [[0.25, 0.5], [0.75, 0.5], [0.75, 1.0], [0.25, 1.0]]\n\
             [[cameras.rules]]\nid = \"sidewalk\"\nviolation = \"sidewalk_encroachment\"\nzone = \"sidewalk\"\n\
             classes = [\"red\"]\n",
            i + 1
        ));
    }
    let path = dir.join("fieldwatch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One mode's run: the daemon's CPU share of one core over the window, the pictures the viewer
/// got, and what the daemon says it made for the live view: frames kept, pictures encoded.
fn run(
    root: &Path,
    dir: &Path,
    mqtt: u16,
    cameras: usize,
    mode: &str,
    warmup: Duration,
    window: Duration,
) -> (f64, u64, f64, f64) {
    let clip = root.join(".cache/clips/street_720p.mp4");
    let servers: Vec<(Proc, u16)> = (0..cameras).map(|_| rtsp_camera(root, &clip)).collect();
    let ports: Vec<u16> = servers.iter().map(|(_, p)| *p).collect();
    let http = (mode != "off").then(free_port);
    let path = config(dir, root, mqtt, http, &ports);
    let daemon = daemon(&path, None);
    let pid = daemon.0.id();
    let stop = Arc::new(AtomicBool::new(false));
    let pictures = Arc::new(AtomicU64::new(0));
    let viewer = (mode == "watched").then(|| {
        let (stop, pictures, port) = (stop.clone(), pictures.clone(), http.unwrap_or_default());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                http_body(port, "/cameras/cam-1/view.json");
                if !http_body(port, "/cameras/cam-1/frame.jpg").is_empty() {
                    pictures.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    });
    std::thread::sleep(warmup);
    let (before, started) = (proc_stats(pid).cpu, Instant::now());
    let pictures_before = pictures.load(Ordering::Relaxed);
    std::thread::sleep(window);
    let cpu = (proc_stats(pid).cpu - before) / started.elapsed().as_secs_f64();
    let got = pictures.load(Ordering::Relaxed) - pictures_before;
    let made = http.map(scrape).unwrap_or_default();
    let sum = |name: &str| -> f64 {
        (made.lines()).filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok()).sum()
    };
    let (kept, encoded) = (sum("fieldwatch_live_views_kept_total{"), sum("fieldwatch_live_pictures_total{"));
    stop.store(true, Ordering::Relaxed);
    if let Some(viewer) = viewer {
        let _ = viewer.join();
    }
    drop((daemon, servers));
    (cpu, got, kept, encoded)
}

fn main() {
    let cameras: usize = arg("--cameras").and_then(|n| n.parse().ok()).unwrap_or(4);
    let window = Duration::from_secs_f64(arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(20.0));
    let warmup = Duration::from_secs_f64(arg("--warmup").and_then(|s| s.parse().ok()).unwrap_or(8.0));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("fieldwatch-bench-liveview-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (broker, mqtt) = mosquitto(&dir);
    let rounds: usize = arg("--rounds").and_then(|n| n.parse().ok()).unwrap_or(3);
    const MODES: [&str; 3] = ["off", "unwatched", "watched"];
    let mut runs: Vec<Vec<(f64, u64, f64, f64)>> = vec![Vec::new(); MODES.len()];
    for round in 1..=rounds {
        for (mode, runs) in MODES.iter().zip(runs.iter_mut()) {
            let (cpu, pictures, kept, encoded) = run(&root, &dir, mqtt, cameras, mode, warmup, window);
            println!(
                "round {round}, {mode}: {:.1} % of a core; viewer got {pictures} pictures; daemon kept {kept} views, encoded {encoded} pictures",
                cpu * 100.0
            );
            runs.push((cpu * 100.0, pictures, kept, encoded));
        }
    }
    let mut results = serde_json::Map::new();
    for (mode, runs) in MODES.iter().zip(&runs) {
        let mut cpu: Vec<f64> = runs.iter().map(|r| r.0).collect();
        cpu.sort_by(f64::total_cmp);
        let round1 = |v: f64| (v * 10.0).round() / 10.0;
        results.insert(
            mode.to_string(),
            json!({
                "cpu_percent_of_a_core_median": round1(cpu.get(cpu.len() / 2).copied().unwrap_or(0.0)),
                "cpu_percent_of_a_core_runs": runs.iter().map(|r| round1(r.0)).collect::<Vec<_>>(),
                "pictures_per_run": runs.iter().map(|r| r.1).collect::<Vec<_>>(),
                "views_kept_per_run": runs.iter().map(|r| r.2).collect::<Vec<_>>(),
                "pictures_encoded_per_run": runs.iter().map(|r| r.3).collect::<Vec<_>>(),
            }),
        );
    }
    let cpu = |mode: &str| results[mode]["cpu_percent_of_a_core_median"].as_f64().unwrap_or(0.0);
    let result = json!({
        "cameras": cameras,
        "window_secs": window.as_secs_f64(),
        "modes": results,
        "rounds": rounds,
        "unwatched_minus_off_percent": ((cpu("unwatched") - cpu("off")) * 10.0).round() / 10.0,
        "one_watched_camera_percent": ((cpu("watched") - cpu("unwatched")) * 10.0).round() / 10.0,
    });
    println!("{result:#}");
    if let Some(out) = arg("--out") {
        std::fs::write(out, format!("{result:#}\n")).unwrap();
    }
    drop(broker);
    std::fs::remove_dir_all(&dir).ok();
}
