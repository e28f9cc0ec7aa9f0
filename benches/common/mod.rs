//! What the benchmarks share (and the tests, for clips): a 1080p frame, an `opened` event and
//! the camera it comes from, a clip decoded the way a camera's frames go, and the real servers
//! and process figures of the end-to-end benchmarks. Each user uses some of it.
#![allow(dead_code)]

use fieldwatch::decode::Frame;
use fieldwatch::report::Origin;
use fieldwatch::rules::{EventKind, IncidentEvent};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn frame_1080p() -> Frame {
    let (w, h) = (1920u32, 1080u32);
    let mut y = vec![90u8; (w * h) as usize];
    for (i, v) in y.iter_mut().enumerate() {
        *v = (i % 251) as u8;
    }
    let c = (w.div_ceil(2) * h.div_ceil(2)) as usize;
    Frame {
        width: w,
        height: h,
        y,
        u: vec![110; c],
        v: vec![150; c],
        full_range: false,
        pts_secs: 0.0,
        at: chrono::Utc::now(),
    }
}

/// An `opened` event of a rule on the lower part of the frame, and the camera's `Origin`.
pub fn opened() -> (IncidentEvent, Origin) {
    let event = IncidentEvent {
        kind: EventKind::Opened,
        incident_id: uuid::Uuid::new_v4(),
        rule: Arc::new(fieldwatch::config::Rule {
            id: "sidewalk".into(),
            violation: "sidewalk_encroachment".into(),
            category: fieldwatch::config::Category::UrbanOrder,
            zone: fieldwatch::config::Zone {
                name: "sidewalk".into(),
                polygon: vec![[0.1, 0.5], [0.9, 0.5], [0.9, 1.0]],
                membership: fieldwatch::config::Membership::BottomCenter,
                inertia: 2,
                place: Default::default(),
            },
            model: 0,
            classes: vec!["red".into()],
            filters: Default::default(),
            min_count: 1,
            dwell: std::time::Duration::from_secs(10),
            clear_after: std::time::Duration::from_secs(5),
            cooldown: std::time::Duration::from_secs(60),
            update_every: None,
            priority: fieldwatch::config::Priority::Normal,
            respond_within: std::time::Duration::from_secs(86_400),
            schedule: None,
            text: Default::default(),
        }),
        started_at: chrono::Utc::now(),
        opened_at: chrono::Utc::now(),
        at: chrono::Utc::now(),
        objects: vec![fieldwatch::rules::IncidentObject {
            track_id: 1,
            label: "motorbike".into(),
            score: 0.9,
            bbox: fieldwatch::detect::BBox { x1: 800.0, y1: 600.0, x2: 1000.0, y2: 800.0 },
            since: chrono::Utc::now(),
        }],
        resolved_by: None,
        paused_by: None,
    };
    let origin = Origin {
        device_id: "bench".into(),
        camera_id: "cam".into(),
        camera_name: "cam".into(),
        camera_location: String::new(),
        model_names: vec!["m".into()],
        config_version: "v".into(),
        class_names: Default::default(),
        snapshot: fieldwatch::report::SnapshotStyle::new(&Default::default(), Vec::new()),
    };
    (event, origin)
}

/// Plays `clip` through the daemon's file source, encoded edge and decode stage (`mode`,
/// sampling at `detect_fps`), handing each sampled frame to `each` until it says `false`.
/// Returns the camera's counters (decode busy time, units decoded...).
pub fn decode_clip(
    clip: &std::path::Path,
    mode: fieldwatch::config::DecodeConfig,
    detect_fps: f64,
    mut each: impl FnMut(Arc<Frame>) -> bool,
) -> Arc<fieldwatch::telemetry::CameraCounters> {
    use fieldwatch::pipeline::{self, edge};
    use fieldwatch::source::{FileSource, Source, SourceContext};
    let counters = Arc::new(fieldwatch::telemetry::CameraCounters::default());
    let (encoded_tx, encoded_rx) = edge(pipeline::ENCODED.lossless(), vec![counters.encoded.clone()]);
    let (frames_tx, frames_rx) = edge(pipeline::FRAMES.lossless(), vec![counters.frames.clone()]);
    let c = counters.clone();
    let decoder =
        std::thread::spawn(move || fieldwatch::decode::run("bench", detect_fps, mode, encoded_rx, frames_tx, &c));
    let mut source = FileSource::open(clip, None).expect("the benchmark clip (run scripts/setup)");
    let clock = Arc::new(fieldwatch::clock::SystemClock);
    let stop = tokio_util::sync::CancellationToken::new();
    let mut ctx = SourceContext::new(encoded_tx, clock, counters.clone(), stop, std::time::Duration::MAX);
    let reader = std::thread::spawn(move || {
        // The file source reads on a blocking thread, which needs the multi-threaded runtime.
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.block_on(source.run_once(&mut ctx)).map(drop)
    });
    while let Some(frame) = frames_rx.recv() {
        if !each(frame) {
            break;
        }
    }
    drop(frames_rx); // the decoder stops at its next frame, and the reader after it
    decoder.join().unwrap();
    reader.join().unwrap().expect("the clip plays");
    counters
}

pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

pub fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed when dropped.
/// A child process, killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback RTSP camera serving `clip` (once a session), and its port.
pub fn rtsp_camera(root: &Path, clip: &Path) -> (Proc, u16) {
    let mut child = Command::new("/usr/bin/python3")
        .arg(root.join("scripts/rtsp_server.py"))
        .arg("--clip")
        .arg(clip)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with gi (run scripts/setup)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().strip_prefix("PORT ").expect("the camera says its port").parse().unwrap();
    (Proc(child), port)
}

/// A mosquitto on a free port, and the port.
pub fn mosquitto(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    (mosquitto_on(dir, port), port)
}

/// A mosquitto on `port` (again: a broker back where it was).
pub fn mosquitto_on(dir: &Path, port: u16) -> Proc {
    let conf = dir.join("mosquitto.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")).unwrap();
    let child =
        Command::new("mosquitto").arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}

/// /proc figures of a process.
#[derive(Default)]
pub struct ProcStats {
    /// CPU seconds so far.
    pub cpu: f64,
    /// Resident bytes, and their split: anonymous (the heap: weights, activations, frames) and
    /// file-backed (the binary and libraries as far as touched).
    pub rss: u64,
    pub rss_anon: u64,
    pub rss_file: u64,
    pub open_files: usize,
}

pub fn proc_stats(pid: u32) -> ProcStats {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let bytes = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    ProcStats {
        cpu: (ticks(11) + ticks(12)) / 100.0, // utime, stime (fields 14, 15 of stat)
        rss: bytes("VmRSS:"),
        rss_anon: bytes("RssAnon:"),
        rss_file: bytes("RssFile:"),
        open_files: std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0),
    }
}

/// The daemon of this build, run with `config`, its output to `log` (or nowhere).
pub fn daemon(config: &Path, log: Option<&Path>) -> Proc {
    let output = || match log {
        Some(log) => Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap()),
        None => Stdio::null(),
    };
    let child = Command::new(env!("CARGO_BIN_EXE_fieldwatch"))
        .args(["run", "--config"])
        .arg(config)
        .stdout(output())
        .stderr(output())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

/// `GET path` on 127.0.0.1:`port`: the body of a 200 answer; empty otherwise or on any failure.
pub fn http_body(port: u16, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return Vec::new() };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let head = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(response.len(), |i| i + 4);
    match response.starts_with(b"HTTP/1.1 200") {
        true => response.split_off(head),
        false => Vec::new(),
    }
}

/// The daemon's `/metrics` scrape on `port` (empty while it does not answer).
pub fn scrape(port: u16) -> String {
    String::from_utf8_lossy(&http_body(port, "/metrics")).into_owned()
}
