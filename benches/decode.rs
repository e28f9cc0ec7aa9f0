//! Decoding cost: the daemon's decode stage (file source → encoded edge → `decode::run`, as a
//! camera's frames go) against `ffmpeg -threads 1 -f null -` on the same clip, as frames per
//! second and their ratio (goal: at least 0.9); and the decoder's CPU per camera with
//! `decode = "keyframes"` against decoding every frame (goal: lower by at least GOP / 2), and
//! with the default `decode = "sampled"` at 1 and 2 samples per second.
//!
//! `cargo bench --bench decode [-- --clip FILE --out FILE.json]`. The default clip is
//! `.cache/clips/bench_1080p.mp4` (10 s of 1080p25 H.264 High with B-frames, GOP 50, made by
//! scripts/setup); CI runs a smoke run on the small test scene.

mod common;

use fieldwatch::config::DecodeConfig;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// What one pass of the decode stage over `clip` did.
struct Pass {
    wall: Duration,
    /// Decoder CPU: the decode thread's busy time.
    busy: Duration,
    units: u64,
    keyframes: u64,
    received: u64,
}

fn decode_stage(clip: &Path, mode: DecodeConfig, detect_fps: f64) -> Pass {
    let started = Instant::now();
    let counters = common::decode_clip(clip, mode, detect_fps, |_| true);
    Pass {
        wall: started.elapsed(),
        busy: Duration::from_nanos(counters.decode_busy.get()),
        units: counters.units_decoded.get(),
        keyframes: counters.keyframes_decoded.get(),
        received: counters.encoded_frames.get(),
    }
}

/// Frames per second of `ffmpeg -threads 1` decoding `clip` to nothing.
fn ffmpeg_fps(clip: &Path, frames: u64) -> f64 {
    let started = Instant::now();
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-threads", "1", "-i"])
        .arg(clip)
        .args(["-f", "null", "-"])
        .status()
        .expect("ffmpeg (run scripts/setup)");
    assert!(status.success());
    frames as f64 / started.elapsed().as_secs_f64()
}

fn best<T>(runs: usize, mut f: impl FnMut() -> T, key: impl Fn(&T) -> Duration) -> T {
    (0..runs).map(|_| f()).min_by_key(|r| key(r)).unwrap()
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let clip = arg("--clip").map(PathBuf::from).unwrap_or_else(|| root.join(".cache/clips/bench_1080p.mp4"));
    let runs = 3;
    let all = best(runs, || decode_stage(&clip, DecodeConfig::All, 2.0), |p| p.wall);
    let stage_fps = all.units as f64 / all.wall.as_secs_f64();
    let ffmpeg = (0..runs).map(|_| ffmpeg_fps(&clip, all.units)).fold(0.0, f64::max);
    let keyframes = best(runs, || decode_stage(&clip, DecodeConfig::Keyframes, 2.0), |p| p.busy);
    let sample_rates = [1.0, 2.0];
    let sampled = sample_rates.map(|fps| best(runs, || decode_stage(&clip, DecodeConfig::Sampled, fps), |p| p.busy));
    let gop = all.units as f64 / keyframes.keyframes.max(1) as f64;
    let cpu_ratio = all.busy.as_secs_f64() / keyframes.busy.as_secs_f64().max(1e-9);
    println!("decode {} ({} frames, GOP {gop:.0}), best of {runs}", clip.display(), all.units);
    println!("decode stage   {stage_fps:.0} fps");
    println!("ffmpeg -threads 1  {ffmpeg:.0} fps");
    println!("ratio          {:.2} (goal at least 0.9)", stage_fps / ffmpeg);
    println!(
        "keyframes mode decoder CPU {:.0} ms vs {:.0} ms for every frame: {cpu_ratio:.1}x lower (goal at least GOP/2 = {:.0}); {} of {} units decoded",
        keyframes.busy.as_secs_f64() * 1e3,
        all.busy.as_secs_f64() * 1e3,
        gop / 2.0,
        keyframes.units,
        keyframes.received
    );
    for (fps, pass) in sample_rates.iter().zip(&sampled) {
        println!(
            "sampled mode at {fps} fps decoder CPU {:.0} ms: {:.2} of every frame's; {} of {} units handed to the decoder",
            pass.busy.as_secs_f64() * 1e3,
            pass.busy.as_secs_f64() / all.busy.as_secs_f64().max(1e-9),
            pass.units,
            pass.received
        );
    }
    let json = serde_json::json!({
        "clip": clip.display().to_string(), "frames": all.units, "gop": gop,
        "stage_fps": stage_fps, "ffmpeg_threads1_fps": ffmpeg, "ratio": stage_fps / ffmpeg,
        "decoder_cpu_ms": { "all": all.busy.as_secs_f64() * 1e3, "keyframes": keyframes.busy.as_secs_f64() * 1e3,
            "sampled_1fps": sampled[0].busy.as_secs_f64() * 1e3, "sampled_2fps": sampled[1].busy.as_secs_f64() * 1e3 },
        "keyframes_cpu_reduction": cpu_ratio,
    });
    if let Some(out) = arg("--out") {
        std::fs::write(&out, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    }
}
