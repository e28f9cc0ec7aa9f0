//! Replay speed: `fieldwatch replay`'s path (file source → decode → detect → rules → reports)
//! over the test scene at detect_fps 2, for each model, as a ratio to real time — with the
//! breakdown that shows the path adds nothing per frame beyond decoding and inference: busy
//! time of the decode thread and of the detector (colour conversion, letterbox, inference),
//! against the same number of bare `Detector::detect` calls. Then what `--report` adds: the
//! tape kept of each frame (a 320 px JPEG, the scene's grid) and the study (the rules run again
//! per what-if cell), as wall time over the plain replay, and the page's size.
//!
//! `cargo bench --bench replay` (after `scripts/setup`). One ONNX Runtime thread, as configured.

use fieldwatch::app::{self, ReplayOptions};
use fieldwatch::config::ModelConfig;
use fieldwatch::detect::Detector;
use fieldwatch::source::FileSource;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

fn config(dir: &Path, model: &Path, runtime: &Path, class: &str) -> PathBuf {
    let text = format!(
        r#"
[device]
id = "bench"
state_dir = "{}"
[model]
path = "{}"
runtime = "{}"
[[cameras]]
id = "cam"
url = "rtsp://127.0.0.1:1/cam"
detect_fps = 2
[cameras.tracking]
stationary_after_secs = 1
stationary_max_unseen_secs = 1

# The squares are a plain grey picture: no camera-health watch (see tests/it/support.rs).
[cameras.health]
enabled = false

[[cameras.zones]]
name = "sidewalk"
polygon = [[0.25, 0.5], [0.75, 0.5], [0.75, 1.0], [0.25, 1.0]]

[[cameras.rules]]
id = "sidewalk"
violation = "sidewalk_encroachment"
classes = ["{class}"]
zone = "sidewalk"
dwell_secs = 3
clear_after_secs = 2
"#,
        dir.join("state").display(),
        model.display(),
        runtime.display()
    );
    let path = dir.join(format!("{class}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let runtime = root.join(".cache/onnxruntime/libonnxruntime.so");
    let clip = root.join(".cache/clips/scene.mp4");
    let dir = std::env::temp_dir().join(format!("fieldwatch-bench-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!("replay of scene.mp4 (640x360, 15 fps, 17 s) at detect_fps 2, 1 inference thread");
    println!(
        "{:<8} {:>6} {:>8} {:>10} {:>9} {:>9} {:>11} {:>9} {:>9} {:>8}",
        "model",
        "frames",
        "wall s",
        "x realtime",
        "decode s",
        "detect s",
        "bare det s",
        "overhead",
        "report +s",
        "page KB"
    );
    for (name, model, class) in [
        ("squares", root.join("models/squares.onnx"), "red"),
        ("person", root.join(".cache/models/person-yolov8.onnx"), "Normal"),
    ] {
        if !model.is_file() || !runtime.is_file() || !clip.is_file() {
            println!("{name}: skipped (run scripts/setup)");
            continue;
        }
        let settings = fieldwatch::config::load(&config(&dir, &model, &runtime, class)).unwrap();
        let source = FileSource::open(&clip, None).unwrap();
        let summary = tokio
            .block_on(app::replay(&settings, "cam", source, ReplayOptions::default(), CancellationToken::new()))
            .unwrap();

        // The same number of inferences, alone, on a frame of the clip's size.
        let mut detector =
            Detector::load(&ModelConfig { path: model.clone(), runtime: runtime.clone(), ..Default::default() })
                .unwrap();
        let frame = image::RgbImage::from_pixel(640, 360, image::Rgb([48, 48, 48]));
        detector.detect(&frame).unwrap(); // warm-up
        let started = Instant::now();
        for _ in 0..summary.frames {
            detector.detect(&frame).unwrap();
        }
        let bare = started.elapsed().as_secs_f64();

        let page = dir.join("report.html");
        let options = ReplayOptions { report: Some(page.clone()), ..Default::default() };
        let source = FileSource::open(&clip, None).unwrap();
        let reported =
            tokio.block_on(app::replay(&settings, "cam", source, options, CancellationToken::new())).unwrap();
        let page_kb = std::fs::metadata(&page).unwrap().len() as f64 / 1024.0;
        let video = summary.video_secs.unwrap_or(f64::NAN);
        println!(
            "{name:<8} {:>6} {:>8.2} {:>10.1} {:>9.2} {:>9.2} {:>11.2} {:>8.1}% {:>9.2} {:>8.0}",
            summary.frames,
            summary.wall_secs,
            video / summary.wall_secs,
            summary.decode_secs,
            summary.detect_secs,
            bare,
            (summary.wall_secs / bare - 1.0) * 100.0,
            reported.wall_secs - summary.wall_secs,
            page_kb,
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
