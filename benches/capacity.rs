//! Capacity: how many cameras one box holds. For each number of cameras N it starts N loopback
//! RTSP cameras (GStreamer, a 720p25 or 1080p25 H.264 High clip), a local mosquitto and the
//! daemon with the real person model at `detect_fps = 1`, lets it settle, and measures over a
//! window: detections per second per camera, process CPU and CPU by stage (from the daemon's own
//! counters in its heartbeat), frame drops by reason, capture-to-detection latency, peak
//! resident memory (sampled every 250 ms) and open files. A step *holds* when every camera keeps
//! 0.95 of `detect_fps` and the latency shows no backlog (p95 under 3 s). It also measures a
//! bare inference loop on the same model and threads, the runtime's own limit, to set the
//! daemon's aggregate against.
//!
//! `cargo bench --bench capacity [-- --cameras 1,2,4,5,6 | --find] [--clip 720|1080]
//!  [--seconds 30] [--warmup 15] [--threads T] [--workers W] [--arena true] [--soak MINUTES]
//!  [--model FILE --class NAME] [--evidence false] [--bare-secs 10] [--out FILE.json]`
//! `--model` and `--class` run another model with a rule for that class (default: the person
//! model, class `Normal`); `--evidence false` turns evidence clips (each camera's packet ring)
//! off, to see what they cost.
//! `--find` steps N up from 1 until a step does not hold. `--soak M` runs the first N for M
//! minutes, printing RSS and open files every minute. CI runs a smoke run of two cameras.
//! Needs `scripts/setup` (clips, model, ONNX Runtime, GStreamer, mosquitto).

mod common;

use common::{Proc, ProcStats, arg, flag, mosquitto, proc_stats, rtsp_camera};
use fieldwatch::decode::Frame;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The newest heartbeat, as it arrives.
type Latest = Arc<Mutex<Option<(Instant, Value)>>>;

/// What the daemon runs: the `[model]` keys but `runtime`, the class its rules take, and
/// whether it makes evidence clips.
struct Setup {
    model: String,
    class: String,
    evidence: bool,
}

/// The daemon's config.
fn config(dir: &Path, root: &Path, mqtt: u16, ports: &[u16], setup: &Setup) -> PathBuf {
    let Setup { model, class, evidence } = setup;
    let mut text = format!(
        "[device]\nid = \"capacity\"\nstate_dir = \"{}\"\n[model]\nruntime = \"{}\"\n{model}\n\
         [mqtt]\nport = {mqtt}\nheartbeat_secs = 1\n[http]\nlisten = \"\"\n[log]\nlevel = \"warn\"\n\
         [evidence]\nenabled = {evidence}\n",
        dir.join("state").display(),
        root.join(".cache/onnxruntime/libonnxruntime.so").display(),
    );
    for (i, port) in ports.iter().enumerate() {
        text.push_str(&format!(
            "[[cameras]]\nid = \"cam-{}\"\nurl = \"rtsp://127.0.0.1:{port}/cam\"\ndetect_fps = 1\n\
             [[cameras.zones]]\nname = \"all\"\npolygon = [[0, 0], [1, 0], [1, 1]]\n\
             [[cameras.rules]]\nid = \"people\"\nviolation = \"obstacle\"\nzone = \"all\"\nclasses = [\"{class}\"]\n",
            i + 1
        ));
    }
    let path = dir.join("fieldwatch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Sum over cameras of a heartbeat number at `path` (e.g. `/busy_ms/decode`), per camera too.
fn per_camera(beat: &Value, path: &str) -> Vec<f64> {
    beat["cameras"]
        .as_array()
        .map(|c| c.iter().map(|c| c.pointer(path).and_then(Value::as_f64).unwrap_or(0.0)).collect())
        .unwrap_or_default()
}

struct Step {
    cameras: usize,
    json: Value,
    holds: bool,
}

fn step(
    root: &Path,
    clip: &Path,
    cameras: usize,
    setup: &Setup,
    warmup: Duration,
    window: Duration,
    soak: Option<u64>,
) -> Step {
    let dir = std::env::temp_dir().join(format!("fieldwatch-capacity-{}-{cameras}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_broker, mqtt) = mosquitto(&dir);
    let servers: Vec<(Proc, u16)> = (0..cameras).map(|_| rtsp_camera(root, clip)).collect();
    let ports: Vec<u16> = servers.iter().map(|(_, p)| *p).collect();
    let config = config(&dir, root, mqtt, &ports, setup);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let latest: Latest = Arc::default();
    let listener = {
        let latest = latest.clone();
        runtime.spawn(async move {
            let mut options = MqttOptions::new("capacity-bench", "127.0.0.1", mqtt);
            options.set_max_packet_size(1 << 20, 1 << 20);
            let (client, mut events) = AsyncClient::new(options, 16);
            client.subscribe("fieldwatch/capacity/heartbeat", QoS::AtMostOnce).await.unwrap();
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(beat) = serde_json::from_slice(&p.payload) {
                            *latest.lock().unwrap() = Some((Instant::now(), beat));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        })
    };
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let daemon = Proc(
        Command::new(env!("CARGO_BIN_EXE_fieldwatch"))
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let pid = daemon.0.id();
    std::thread::sleep(warmup);
    let snapshot = || {
        let (at, beat) = latest.lock().unwrap().clone().expect("heartbeats arrive (see the daemon log)");
        let now = proc_stats(pid);
        (at, beat, now.cpu, now.rss, now.open_files)
    };
    if let Some(minutes) = soak {
        println!("soak: {cameras} cameras for {minutes} min");
        let detected = |beat: &Value| per_camera(beat, "/frames_detected").iter().sum::<f64>();
        let mut before = None;
        for minute in 0..=minutes {
            let (_, beat, cpu, rss, fds) = snapshot();
            let rate = before.map(|b| (detected(&beat) - b) / 60.0).unwrap_or(f64::NAN);
            before = Some(detected(&beat));
            println!(
                "  minute {minute:>3}: rss {:.0} MB, open files {fds}, cpu {cpu:.0} s, detections {rate:.2}/s",
                rss as f64 / 1e6
            );
            if minute < minutes {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
    }
    let (t0, a, cpu0, _, _) = snapshot();
    // Resident memory rises and falls with each inference: the window's peak is what counts.
    let (mut peak, started) = (ProcStats::default(), Instant::now());
    while started.elapsed() < window {
        std::thread::sleep(Duration::from_millis(250).min(window.saturating_sub(started.elapsed())));
        let now = proc_stats(pid);
        if now.rss > peak.rss {
            peak = now;
        }
    }
    let (t1, b, cpu1, _, fds) = snapshot();
    let secs = (t1 - t0).as_secs_f64();
    let rate = |path: &str| -> Vec<f64> {
        per_camera(&b, path).iter().zip(per_camera(&a, path)).map(|(b, a)| (b - a) / secs).collect()
    };
    let detections = rate("/frames_detected");
    let busy = |stage: &str| rate(&format!("/busy_ms/{stage}")).iter().sum::<f64>() / 1000.0;
    let dropped = |reason: &str| rate(&format!("/dropped/{reason}")).iter().sum::<f64>() * secs;
    let p95 = per_camera(&b, "/latency_ms/p95").into_iter().fold(0.0, f64::max);
    let p50 = per_camera(&b, "/latency_ms/p50").into_iter().fold(0.0, f64::max);
    let holds = detections.iter().all(|d| *d >= 0.95) && p95 < 3000.0;
    drop(daemon);
    listener.abort();
    drop(servers);
    runtime.shutdown_timeout(Duration::from_millis(200));
    std::fs::remove_dir_all(&dir).ok();
    let json = json!({
        "cameras": cameras, "window_secs": secs, "holds": holds,
        "detections_per_sec": detections, "aggregate_detections_per_sec": detections.iter().sum::<f64>(),
        "process_cpu_cores": (cpu1 - cpu0) / secs,
        "stage_cpu_cores": { "decode": busy("decode"), "preprocess": busy("preprocess"), "inference": busy("inference"), "rules": busy("rules") },
        "dropped": { "encoded": dropped("encoded"), "frames_replaced": dropped("frames_replaced"), "detections": dropped("detections") },
        "latency_ms": { "p50": p50, "p95": p95 },
        "peak_rss_bytes": peak.rss, "peak_rss_anon_bytes": peak.rss_anon, "peak_rss_file_bytes": peak.rss_file, "open_files": fds,
    });
    Step { cameras, json, holds }
}

/// Detections per second of bare loops, `sessions` in parallel with `threads` each, running one
/// frame of the clip through `Detector::detect_frame`: the runtime's own limit.
fn bare_loop(root: &Path, model: &Path, frame: &Frame, sessions: usize, threads: usize, seconds: f64) -> f64 {
    use fieldwatch::config::ModelConfig;
    let config = ModelConfig {
        path: model.to_path_buf(),
        runtime: root.join(".cache/onnxruntime/libonnxruntime.so"),
        threads,
        ..Default::default()
    };
    let loops: Vec<_> = (0..sessions)
        .map(|_| {
            let mut detector =
                fieldwatch::detect::Detector::load(&config).expect("the person model (run scripts/setup)");
            let frame = frame.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut n = 0;
                while started.elapsed().as_secs_f64() < seconds || n < 3 {
                    let _ = detector.detect_frame(&frame);
                    n += 1;
                }
                n as f64 / started.elapsed().as_secs_f64()
            })
        })
        .collect();
    loops.into_iter().map(|l| l.join().unwrap()).sum()
}

fn first_frame(clip: &Path) -> Frame {
    let mut first = None;
    common::decode_clip(clip, fieldwatch::config::DecodeConfig::Keyframes, 1.0, |frame| {
        first = Some(frame);
        false
    });
    (*first.expect("a frame from the clip")).clone()
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let clip_name = match arg("--clip").as_deref() {
        Some("1080") => "street_1080p.mp4",
        _ => "street_720p.mp4",
    };
    let clip = root.join(".cache/clips").join(clip_name);
    assert!(clip.is_file(), "{} is missing: run scripts/setup", clip.display());
    let defaults = fieldwatch::config::ModelConfig::default();
    let threads: usize = arg("--threads").and_then(|t| t.parse().ok()).unwrap_or(defaults.threads);
    let workers: usize = arg("--workers").and_then(|t| t.parse().ok()).unwrap_or(defaults.workers);
    let arena = arg("--arena").map_or(defaults.arena, |a| a == "true");
    let model_file = arg("--model").map(PathBuf::from).unwrap_or_else(|| root.join(".cache/models/person-yolov8.onnx"));
    let setup = Setup {
        model: format!(
            "path = \"{}\"\nthreads = {threads}\nworkers = {workers}\narena = {arena}",
            model_file.display()
        ),
        class: arg("--class").unwrap_or_else(|| "Normal".into()),
        evidence: arg("--evidence").is_none_or(|e| e != "false"),
    };
    let seconds =
        |name: &str, default: u64| Duration::from_secs(arg(name).and_then(|s| s.parse().ok()).unwrap_or(default));
    let (window, warmup) = (seconds("--seconds", 30), seconds("--warmup", 15));
    let soak: Option<u64> = arg("--soak").and_then(|m| m.parse().ok());
    let counts: Vec<usize> = match arg("--cameras") {
        Some(list) => list.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
        None if flag("--find") || soak.is_none() => (1..=16).collect(),
        None => vec![5],
    };
    let frame = first_frame(&clip);
    let cores = workers * threads;
    let bare_secs: f64 = arg("--bare-secs").and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let bare_loop = |sessions, threads| bare_loop(&root, &model_file, &frame, sessions, threads, bare_secs);
    let (parallel, one) = (bare_loop(workers, threads), bare_loop(1, cores));
    let bare = parallel.max(one);
    println!(
        "capacity: {clip_name}, {}, detect_fps 1, model.threads {threads}, workers {workers}, arena {arena}, \
         evidence {}; \
         bare loops: {workers} session(s) x {threads} thread(s) {parallel:.2}/s, 1 session x {cores} thread(s) {one:.2}/s",
        model_file.file_name().unwrap_or_default().display(),
        setup.evidence
    );
    println!(
        "cameras  det/s per camera (min..max)  cpu cores  decode/prep/infer/rules  drops enc/repl/det  latency p50/p95 ms  peak rss MB (anon+file)  files"
    );
    let mut steps = Vec::new();
    let stop_at_failure = arg("--cameras").is_none();
    for n in counts {
        let s = step(&root, &clip, n, &setup, warmup, window, soak.filter(|_| steps.is_empty()));
        let j = &s.json;
        let d: Vec<f64> = j["detections_per_sec"].as_array().unwrap().iter().filter_map(Value::as_f64).collect();
        let (lo, hi) = d.iter().fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        let st = &j["stage_cpu_cores"];
        let dr = &j["dropped"];
        println!(
            "{n:>7}  {lo:.2}..{hi:.2} (sum {:.2})  {:>18.2}  {:.2}/{:.2}/{:.2}/{:.3}  {:.0}/{:.0}/{:.0}  {:>6}/{:<6}  {:>6.0} ({:.0}+{:.0})  {:>5}  {}",
            j["aggregate_detections_per_sec"].as_f64().unwrap(),
            j["process_cpu_cores"].as_f64().unwrap(),
            st["decode"].as_f64().unwrap(),
            st["preprocess"].as_f64().unwrap(),
            st["inference"].as_f64().unwrap(),
            st["rules"].as_f64().unwrap(),
            dr["encoded"].as_f64().unwrap(),
            dr["frames_replaced"].as_f64().unwrap(),
            dr["detections"].as_f64().unwrap(),
            j["latency_ms"]["p50"],
            j["latency_ms"]["p95"],
            j["peak_rss_bytes"].as_f64().unwrap() / 1e6,
            j["peak_rss_anon_bytes"].as_f64().unwrap() / 1e6,
            j["peak_rss_file_bytes"].as_f64().unwrap() / 1e6,
            j["open_files"],
            if s.holds { "holds" } else { "does not hold" },
        );
        let failed = !s.holds;
        steps.push(s);
        if failed && stop_at_failure {
            break;
        }
    }
    let largest = steps.iter().filter(|s| s.holds).map(|s| s.cameras).max().unwrap_or(0);
    let best = steps.iter().filter_map(|s| s.json["aggregate_detections_per_sec"].as_f64()).fold(0.0, f64::max);
    println!("largest N that holds: {largest}; best aggregate {best:.2}/s = {:.2} of the bare loop", best / bare);
    let json = json!({
        "clip": clip_name, "model": model_file.display().to_string(), "class": setup.class, "evidence": setup.evidence, "threads": threads, "workers": workers, "arena": arena, "bare_loop_per_sec": bare, "bare_parallel_sessions_per_sec": parallel, "bare_one_session_per_sec": one, "largest_holding": largest,
        "aggregate_vs_bare": best / bare, "steps": steps.iter().map(|s| s.json.clone()).collect::<Vec<_>>(),
    });
    if let Some(out) = arg("--out") {
        std::fs::write(&out, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    }
}
