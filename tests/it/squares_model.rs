//! The committed test detector (models/squares.onnx, made by models/make_squares.py) finds
//! solid squares on seeded random layouts to within a few pixels, through the daemon's own
//! preprocessing, ONNX Runtime session, output decoding and NMS.

use crate::support::*;
use fieldwatch::config::ModelConfig;
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
