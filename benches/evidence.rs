//! What evidence clips cost: each camera's packet ring (every packet the camera sends is copied
//! into it, and old keyframe intervals dropped) at 8 cameras, as CPU and memory, and writing one
//! clip (cut from the ring, remuxed to MP4).
//!
//! The packets of one clip (default `.cache/clips/street_720p.mp4`: 75 s of 720p25 H.264 at
//! 2 Mbit/s, a keyframe every 2 s) are pushed into N rings (one per camera) as the source does,
//! each with the rules caught up; the pushing thread's CPU time over the video's duration is
//! the share of one core the rings take. Goal: under 1% at 8 cameras, and each ring's memory
//! bounded by the window (`evidence.max_secs` + 5 s) times the bitrate, plus one keyframe
//! interval.
//!
//! `cargo bench --bench evidence [-- --clip FILE --cameras 8 --max-secs 30 --out FILE.json]`

mod common;

use chrono::{DateTime, TimeDelta, Utc};
use common::arg;
use fieldwatch::clip::{ClipStore, Recorder};
use fieldwatch::config::EvidenceConfig;
use fieldwatch::source::EncodedFrame;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// CPU time of the calling thread.
fn thread_cpu() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// A packet as a camera's source hands it on, with its wall time.
type Timed = (EncodedFrame, DateTime<Utc>);

/// The clip's video packets as the daemon's file source hands them on (its own source, with
/// the clip's first frame at the Unix epoch), and its picture size.
fn packets(clip: &std::path::Path) -> (Vec<Timed>, (u32, u32)) {
    use fieldwatch::pipeline::{self, edge};
    use fieldwatch::source::{FileSource, Source, SourceContext};
    let counters = Arc::new(fieldwatch::telemetry::CameraCounters::default());
    let (tx, rx) = edge(pipeline::ENCODED.lossless(), vec![counters.encoded.clone()]);
    let mut source =
        FileSource::open(clip, Some(DateTime::UNIX_EPOCH)).expect("the benchmark clip (run scripts/setup)");
    let stop = tokio_util::sync::CancellationToken::new();
    let mut ctx = SourceContext::new(tx, Arc::new(fieldwatch::clock::SystemClock), counters, stop, Duration::MAX);
    let reader = std::thread::spawn(move || {
        // The file source reads on a blocking thread, which needs the multi-threaded runtime.
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.block_on(source.run_once(&mut ctx)).map(drop)
    });
    let frames: Vec<EncodedFrame> = std::iter::from_fn(|| rx.recv()).collect();
    reader.join().unwrap().expect("the clip plays");
    let (first, _) = fieldwatch::decode::first_picture(&frames).expect("a picture");
    let timed = frames
        .into_iter()
        .map(|f| {
            let at = f.connection.anchor.time_of(f.pts_secs).expect("the clip's times");
            (f, at)
        })
        .collect();
    (timed, (first.width, first.height))
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let clip = arg("--clip").map(PathBuf::from).unwrap_or_else(|| root.join(".cache/clips/street_720p.mp4"));
    let cameras: usize = arg("--cameras").and_then(|n| n.parse().ok()).unwrap_or(8);
    let max_secs: f64 = arg("--max-secs").and_then(|n| n.parse().ok()).unwrap_or(30.0);
    let (packets, (width, height)) = packets(&clip);
    let video_secs = packets.iter().map(|(f, _)| f.pts_secs).fold(0.0, f64::max);
    let bytes: usize = packets.iter().map(|(f, _)| f.data.len()).sum();
    let bitrate = bytes as f64 * 8.0 / video_secs;
    let gop_bytes = {
        let keys: Vec<usize> = packets.iter().enumerate().filter(|(_, (f, _))| f.keyframe).map(|(i, _)| i).collect();
        keys.windows(2).map(|w| packets[w[0]..w[1]].iter().map(|(f, _)| f.data.len()).sum::<usize>()).max().unwrap_or(0)
    };

    let dir = std::env::temp_dir().join(format!("fieldwatch-evidence-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = EvidenceConfig { max_secs, ..EvidenceConfig::default() };
    let store = Arc::new(ClipStore::new(dir.clone(), &config));
    let recorders: Vec<Recorder> = (0..cameras).map(|_| Recorder::new(store.clone(), &config)).collect();

    let started = (Instant::now(), thread_cpu());
    let mut largest = 0;
    for (frame, at) in &packets {
        for recorder in &recorders {
            recorder.ring.consumed(*at);
            recorder.ring.push(frame, *at);
        }
        largest = largest.max(recorders[0].ring.bytes());
    }
    let (wall, cpu) = (started.0.elapsed().as_secs_f64(), thread_cpu() - started.1);
    let bound = (max_secs + 5.0) * bitrate / 8.0 + gop_bytes as f64;

    // One clip: 15 s up to the newest packet, cut and remuxed.
    let end = packets.last().map(|(_, at)| *at).unwrap();
    let span = recorders[0].ring.cut(end - TimeDelta::seconds(15), end);
    let write_started = Instant::now();
    let written = fieldwatch::clip::write_mp4(&dir.join("one.mp4"), &span, width, height);
    let write_ms = write_started.elapsed().as_secs_f64() * 1e3;
    let written = written.expect("the clip is written");
    // The same clip for a camera with privacy masks (a quarter of the frame), re-encoded.
    let mask = vec![vec![[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]]];
    let (masked_started, masked_cpu) = (Instant::now(), thread_cpu());
    let masked = fieldwatch::clip::write_masked_mp4(&dir.join("masked.mp4"), &span, &mask).expect("re-encoded");
    let (masked_ms, masked_cpu) = (masked_started.elapsed().as_secs_f64() * 1e3, thread_cpu() - masked_cpu);
    std::fs::remove_dir_all(&dir).ok();

    let core_share = cpu / video_secs * 100.0;
    println!(
        "evidence: {} ({:.1} Mbit/s, {:.0} s), {cameras} camera rings of {max_secs} s + 5 s: CPU {core_share:.3}% of one core \
         for all {cameras} ({:.4}% each; {cpu:.3} s over {video_secs:.0} s of video, pushed in {wall:.2} s); \
         ring {:.1} MB at most per camera (bound: window x bitrate + 1 GOP = {:.1} MB), {:.1} MB for all; \
         one 15 s clip ({} packets, {:.1} MB) written in {write_ms:.1} ms; re-encoded with a privacy mask \
         ({:.1} MB, {:.1} s) in {masked_ms:.0} ms, {masked_cpu:.2} s of CPU = {:.2} s of a core per second of clip",
        clip.file_name().unwrap_or_default().display(),
        bitrate / 1e6,
        video_secs,
        core_share / cameras as f64,
        largest as f64 / 1e6,
        bound / 1e6,
        largest as f64 * cameras as f64 / 1e6,
        span.len(),
        written.bytes as f64 / 1e6,
        masked.bytes as f64 / 1e6,
        masked.duration_secs,
        masked_cpu / masked.duration_secs,
    );
    assert!(largest as f64 <= bound, "a ring held {largest} bytes, over its bound {bound}");
    if let Some(out) = arg("--out") {
        let json = serde_json::json!({
            "clip": clip.display().to_string(), "cameras": cameras, "max_secs": max_secs, "bitrate_bps": bitrate,
            "video_secs": video_secs, "cpu_secs": cpu, "core_percent_all_cameras": core_share,
            "ring_bytes_max_per_camera": largest, "ring_bytes_bound": bound, "clip_write_ms": write_ms,
            "masked_clip_ms": masked_ms, "masked_clip_cpu_secs": masked_cpu, "masked_clip_secs": masked.duration_secs,
        });
        std::fs::write(out, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    }
}
