//! Per-frame cost of each CPU stage on a 1080p frame, for capacity planning: how many cameras
//! at what detect_fps one box can carry. The rules stage (tracking, zones, lifecycle) is
//! measured on a busy street: 10 parked objects and 10 passers in every frame, without and with
//! the picture (the scene's background, light and looks at missed objects' places), and the
//! camera's health watch. `cargo bench --bench stages` (needs scripts/setup for
//! ONNX Runtime). Prints the median of each stage; no thresholds here — speed goals are read
//! from these numbers, never asserted in tests.

mod common;

use common::frame_1080p;
use fieldwatch::config::ModelConfig;
use fieldwatch::detect::{BBox, Detection, Detector, InputStyle, Preprocessor, letterbox, nms};
use fieldwatch::report::build;
use fieldwatch::rules::CameraRules;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn median(mut f: impl FnMut(), runs: usize) -> Duration {
    f(); // warm up
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

/// 8,400 candidates above threshold as a model gives them for a busy scene: 100 objects of
/// three classes, each found by 84 anchors whose boxes jitter around it. Generated from a fixed
/// seed, so every run sees the same input.
fn overlapping_candidates() -> Vec<Detection> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32
    };
    let mut out = Vec::with_capacity(8400);
    for object in 0..100 {
        let (cx, cy, size) = (next() * 1800.0 + 60.0, next() * 960.0 + 60.0, next() * 80.0 + 30.0);
        for _ in 0..84 {
            let jitter = |v: f32, n: f32| v + (n - 0.5) * size * 0.2;
            let (x, y, s) = (jitter(cx, next()), jitter(cy, next()), size * (0.9 + next() * 0.2));
            let bbox = BBox { x1: x - s / 2.0, y1: y - s / 2.0, x2: x + s / 2.0, y2: y + s / 2.0 };
            out.push(Detection {
                model: 0,
                class_id: object % 3,
                label: String::new(),
                score: 0.3 + next() * 0.7,
                bbox,
            });
        }
    }
    out
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let frame = frame_1080p();
    let rgb = frame.to_rgb();
    println!("stage (1920x1080 frame)            median");
    println!("yuv420 -> rgb (snapshots)          {:?}", median(|| drop(frame.to_rgb()), 30));
    for side in [320, 640] {
        // The detector's path: YUV planes scaled, converted small, written into a kept tensor.
        let mut prep = Preprocessor::new(side, side, InputStyle::ULTRALYTICS);
        let mut tensor = vec![0f32; prep.input_len()];
        let took = median(|| _ = prep.frame(&frame, &mut tensor, |v| v).expect("a decoded frame letterboxes"), 30);
        println!("preprocess yuv -> {side}x{side} tensor   {took:?}");
    }
    println!(
        "(from rgb, allocating: 640x640    {:?})",
        median(|| drop(letterbox(&rgb, 640, 640).expect("an RGB image letterboxes")), 30)
    );
    let candidates = overlapping_candidates();
    // Timed without making its input (a fresh copy each run).
    let mut times: Vec<Duration> = (0..31)
        .map(|_| {
            let input = candidates.clone();
            let t = Instant::now();
            drop(nms(input, 0.45));
            t.elapsed()
        })
        .collect();
    times.sort();
    let took = times[times.len() / 2];
    println!("nms, 8400 overlapping candidates   {took:?} ({} kept)", nms(candidates.clone(), 0.45).len());

    let runtime = root.join(".cache/onnxruntime/libonnxruntime.so");
    for (name, path) in [
        ("squares 320", root.join("models/squares.onnx")),
        ("person 640", root.join(".cache/models/person-yolov8.onnx")),
    ] {
        if !path.is_file() || !runtime.is_file() {
            println!("{name}: skipped (run scripts/setup)");
            continue;
        }
        let mut detector =
            Detector::load(&ModelConfig { path, runtime: runtime.clone(), ..Default::default() }).unwrap();
        println!("detect {name:<12} (1 thread)      {:?}", median(|| drop(detector.detect(&rgb).unwrap()), 10));
    }

    let (event, origin) = common::opened();
    let frame = Arc::new(frame);
    let shot = || fieldwatch::report::Shot { frame: frame.clone(), objects: event.objects.clone(), blur: vec![] };
    let one = fieldwatch::report::Shots { main: shot(), first_seen: None };
    let two = fieldwatch::report::Shots { main: shot(), first_seen: Some(shot()) };
    println!("report (rgb + annotate + jpeg)     {:?}", median(|| drop(build(&origin, &event, &one)), 10));
    println!("  opened, with first-seen frame    {:?}", median(|| drop(build(&origin, &event, &two)), 10));
    println!("rules, 10 parked + 10 passing       {:?}", rules_per_frame(event.rule.clone(), None));
    println!("  with the picture (scene)         {:?}", rules_per_frame(event.rule.clone(), Some(&frame)));
    scene_costs(&frame);
    health_costs(&frame);
}

/// A camera's health watch per frame (grid 64 wide, edges, likeness to the reference).
fn health_costs(frame: &fieldwatch::decode::Frame) {
    let camera = fieldwatch::config::Camera::at("c", fieldwatch::config::CameraUrl::parse("rtsp://h/c").unwrap());
    let mut health = fieldwatch::health::Health::new(&camera, None, frame.at);
    let mut at = frame.at;
    let took = median(
        || {
            at += chrono::TimeDelta::milliseconds(500);
            drop(health.observe(at, frame.luma()));
        },
        30,
    );
    println!("health: frame in (grid 64 wide)    {took:?}");
}

/// The scene on its own: a frame taken in (grid, light, background), and one look at a place.
fn scene_costs(frame: &fieldwatch::decode::Frame) {
    use fieldwatch::scene::Scene;
    let boxes: Vec<BBox> = (0..20)
        .map(|k| BBox { x1: 100.0 + k as f32 * 85.0, y1: 700.0, x2: 190.0 + k as f32 * 85.0, y2: 820.0 })
        .collect();
    let mut scene = Scene::new();
    let took = median(|| _ = scene.look(frame.luma().into(), &boxes, &boxes), 30);
    println!("scene: frame in (grid 160 wide)    {took:?}");
    let place = BBox { x1: 900.0, y1: 300.0, x2: 990.0, y2: 420.0 };
    let view = scene.look(frame.luma().into(), &boxes, &boxes);
    let signature = view.signature(&place);
    let looks = 10_000;
    let took = median(
        || {
            for _ in 0..looks {
                std::hint::black_box(view.place(std::hint::black_box(&place), signature.as_ref()));
            }
        },
        11,
    );
    println!("scene: one look at a place         {:?}", took / looks);
}

/// Mean cost of one frame through a camera's rules over five minutes at 2 fps, with `picture`
/// as every frame's picture if given.
fn rules_per_frame(rule: Arc<fieldwatch::config::Rule>, picture: Option<&fieldwatch::decode::Frame>) -> Duration {
    use fieldwatch::detect::{BBox, Detection};
    let mut rule = (*rule).clone();
    rule.classes = vec!["motorbike".into()];
    rule.zone.polygon = vec![[0.0, 0.4], [1.0, 0.4], [1.0, 1.0], [0.0, 1.0]];
    let filter = fieldwatch::config::Filter {
        min_score: 0.5,
        threshold: 0.6,
        min_area: 0.0,
        max_area: 1.0,
        min_ratio: 0.0,
        max_ratio: 100.0,
    };
    rule.filters = [("motorbike".to_string(), filter)].into();
    let url = fieldwatch::config::CameraUrl::parse("rtsp://127.0.0.1/cam").unwrap();
    let camera =
        fieldwatch::config::Camera { rules: vec![Arc::new(rule)], ..fieldwatch::config::Camera::at("cam", url) };
    let bike = |x: f32, y: f32| Detection {
        model: 0,
        class_id: 0,
        label: "motorbike".into(),
        score: 0.9,
        bbox: BBox { x1: x, y1: y - 120.0, x2: x + 90.0, y2: y },
    };
    let mut rules = CameraRules::new(&camera);
    let t0 = chrono::Utc::now();
    let frames = 600;
    let mut spent = Duration::ZERO;
    for i in 0..frames {
        let s = i as f32 / 2.0;
        let mut dets: Vec<Detection> =
            (0..10).map(|k| bike(100.0 + k as f32 * 170.0, 900.0 + (s * 3.1).sin())).collect();
        dets.extend((0..10).map(|k| bike(((s * 150.0 + k as f32 * 190.0) % 2000.0) - 90.0, 700.0 + k as f32 * 8.0)));
        let at = t0 + chrono::TimeDelta::milliseconds(500 * i as i64);
        let started = Instant::now();
        drop(rules.observe(at, &dets, 1920, 1080, picture.map(|p| p.luma().into())));
        spent += started.elapsed();
    }
    spent / frames
}
