//! The committed test detector (models/squares.onnx, made by models/make_squares.py) finds
//! solid squares on seeded random layouts to within a few pixels, through the daemon's own
//! preprocessing, ONNX Runtime session, output decoding and NMS.

use crate::support::*;
use fieldwatch::config::ModelConfig;
use fieldwatch::decode::Frame;
use fieldwatch::detect::Detector;
use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn squares_detector() -> Detector {
    Detector::load(&ModelConfig {
        path: root().join("models/squares.onnx"),
        runtime: ort_library(),
        ..Default::default()
    })
    .expect("squares model loads")
}

struct Square {
    class: &'static str,
    x: u32,
    y: u32,
    size: u32,
}

/// Non-overlapping squares (with a gap) on a random grey background.
fn layout(rng: &mut StdRng, width: u32, height: u32) -> (RgbImage, Vec<Square>) {
    let grey = rng.random_range(10..200u8);
    let mut img = RgbImage::from_pixel(width, height, Rgb([grey, grey, grey]));
    let mut squares: Vec<Square> = Vec::new();
    let wanted = rng.random_range(4..10);
    for _ in 0..200 {
        if squares.len() == wanted {
            break;
        }
        let size = rng.random_range(20..110);
        let (x, y) = (rng.random_range(0..width - size), rng.random_range(0..height - size));
        let gap = 8;
        let clear = squares.iter().all(|s| {
            x + size + gap <= s.x || s.x + s.size + gap <= x || y + size + gap <= s.y || s.y + s.size + gap <= y
        });
        if !clear {
            continue;
        }
        // Both classes on every layout, and colours that vary like real paint.
        let class = if squares.len().is_multiple_of(2) { "red" } else { "green" };
        let (hi, lo) = (rng.random_range(200..=255u8), rng.random_range(0..50u8));
        let colour = if class == "red" { Rgb([hi, lo, lo]) } else { Rgb([lo, hi, lo]) };
        paint_square(&mut img, x, y, size, colour);
        squares.push(Square { class, x, y, size });
    }
    (img, squares)
}

#[test]
fn finds_every_square_on_random_layouts_within_a_few_pixels() {
    let mut detector = squares_detector();
    assert_eq!(detector.labels(), ["red", "green"]);
    let tolerance = 3.0; // frame pixels; the model sees the frame at half size
    for seed in 0..12u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let (w, h) = if seed % 2 == 0 { (640, 480) } else { (640, 360) };
        let (img, squares) = layout(&mut rng, w, h);
        let found = detector.detect(&img).unwrap();
        assert_eq!(found.len(), squares.len(), "seed {seed}: found {found:#?}");
        for s in &squares {
            let want = [s.x as f32, s.y as f32, (s.x + s.size) as f32, (s.y + s.size) as f32];
            let hit = found.iter().find(|d| {
                let got = [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2];
                d.label == s.class && got.iter().zip(want).all(|(g, w)| (g - w).abs() <= tolerance)
            });
            assert!(hit.is_some(), "seed {seed}: no {} box near {want:?} in {found:#?}", s.class);
            assert!(hit.unwrap().score > 0.9, "a square scores near 1");
        }
    }
}

#[test]
fn an_empty_scene_has_no_detections() {
    let mut detector = squares_detector();
    let img = RgbImage::from_pixel(640, 360, Rgb([48, 48, 48]));
    assert!(detector.detect(&img).unwrap().is_empty());
}

fn load(model: &str, tweak: impl FnOnce(&mut ModelConfig)) -> Result<Detector, fieldwatch::detect::DetectError> {
    let mut config =
        ModelConfig { path: root().join("models").join(model), runtime: ort_library(), ..Default::default() };
    tweak(&mut config);
    Detector::load(&config)
}

/// What `detector` finds on seeded layouts, as (class, rounded box) lists.
fn findings(detector: &mut Detector) -> Vec<Vec<(String, [i32; 4])>> {
    (0..4u64)
        .map(|seed| {
            let (img, _) = layout(&mut StdRng::seed_from_u64(seed), 640, 360);
            let mut found: Vec<(String, [i32; 4])> = detector
                .detect(&img)
                .unwrap()
                .into_iter()
                .map(|d| (d.label, [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2].map(|v| v.round() as i32)))
                .collect();
            found.sort();
            found
        })
        .collect()
}

/// The same detector exported the other ways models come (see make_squares.py's variants):
/// YOLOv5 rows with objectness, end-to-end rows, and a float16 BGR 0..255 input. Each is read
/// from its output shape, and finds exactly what the YOLOv8 form finds.
#[test]
fn every_output_format_and_input_convention_finds_the_same_squares() {
    let reference = findings(&mut squares_detector());
    assert!(reference.iter().all(|f| f.len() >= 4));
    for model in ["squares_yolov5.onnx", "squares_e2e.onnx"] {
        assert_eq!(findings(&mut load(model, |_| {}).unwrap()), reference, "{model}");
    }
    let bgr = |c: &mut ModelConfig| {
        c.channel_order = fieldwatch::config::ChannelOrder::Bgr;
        c.pixel_range = fieldwatch::config::PixelRange::Byte;
    };
    assert_eq!(findings(&mut load("squares_fp16_bgr_255.onnx", bgr).unwrap()), reference, "float16 BGR 0..255");
    // Fed as RGB 0..1 it sees nothing it knows: the input convention matters and is configured.
    let wrong = findings(&mut load("squares_fp16_bgr_255.onnx", |_| {}).unwrap());
    assert_ne!(wrong, reference);
}

#[test]
fn bad_models_are_clear_errors_naming_what_is_wrong() {
    let dir = temp_dir("bad-models");
    let not_onnx = dir.join("not.onnx");
    std::fs::write(&not_onnx, b"this is not a model").unwrap();
    let error = load("squares.onnx", |c| c.path = not_onnx.clone()).err().unwrap().to_string();
    assert!(error.starts_with("model.path: cannot load model") && error.contains("not.onnx"), "{error}");

    // Three labels for a two-class output: no layout fits, and the message shows the shapes.
    let error =
        load("squares.onnx", |c| c.labels = vec!["a".into(), "b".into(), "c".into()]).err().unwrap().to_string();
    assert!(error.contains("[1, 6, 1600]") && error.contains("[1, 7, N]"), "{error}");
    let error = load("squares.onnx", |c| c.format = fieldwatch::config::ModelFormat::Yolov5).err().unwrap().to_string();
    assert!(error.contains("model.format"), "{error}");

    // An output without its batch dimension fits no layout: refused at load, not per frame.
    let error = load("squares_rank2.onnx", |_| {}).err().unwrap().to_string();
    assert!(error.contains("output shape [6, 1600] is not [1, rows, columns]"), "{error}");

    // No class names at all: an empty labels file.
    let empty = dir.join("labels.txt");
    std::fs::write(&empty, "\n").unwrap();
    let error = load("squares.onnx", |c| c.labels_file = empty.clone()).err().unwrap().to_string();
    assert!(error.contains("no class names"), "{error}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The PyPI ONNX Runtime is CPU-only and this build has no GPU features: asking for CUDA is an
/// error naming the key, unless falling back to the CPU is allowed.
#[test]
fn an_unavailable_provider_is_refused_or_falls_back_to_the_cpu() {
    let cuda = |fallback: bool| {
        move |c: &mut ModelConfig| {
            c.provider = fieldwatch::config::Provider::Cuda;
            c.provider_fallback = fallback;
        }
    };
    let error = load("squares.onnx", cuda(false)).err().unwrap().to_string();
    assert!(
        error.starts_with("model.provider: cuda is not available") && error.contains("provider_fallback"),
        "{error}"
    );
    let mut detector = load("squares.onnx", cuda(true)).unwrap();
    assert_eq!(detector.provider(), "cpu");
    assert_eq!(findings(&mut detector), findings(&mut squares_detector()));
}

/// A model with a dynamic batch dimension (make_squares.py's `batch` variant) runs frames of
/// several cameras in one run, as YUV frames, and finds in each exactly what it finds alone.
#[test]
fn a_dynamic_batch_model_runs_several_frames_together_with_the_same_results() {
    let mut batched = load("squares_batch.onnx", |c| c.batch = 3).unwrap();
    assert_eq!(batched.max_batch(), 3);
    let mut single = squares_detector();
    assert_eq!(single.max_batch(), 1, "a fixed batch of 1 is never batched");
    let frames: Vec<Frame> = (0..3u64)
        .map(|seed| Frame::from_rgb(&layout(&mut StdRng::seed_from_u64(seed), 640, 360).0, chrono::Utc::now()))
        .collect();
    for n in [3, 2, 1] {
        let refs: Vec<&Frame> = frames.iter().take(n).collect();
        let together = batched.detect_frames(&refs).0.unwrap();
        assert_eq!(together.len(), n);
        for (frame, found) in frames.iter().zip(together) {
            assert!(found.len() >= 4, "{found:?}");
            assert_eq!(found, single.detect_frame(frame).0.unwrap(), "batch of {n}");
        }
    }
}
