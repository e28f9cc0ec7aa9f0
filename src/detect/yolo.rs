//! Decoding YOLOv8-layout output and non-maximum suppression — pure functions.
//!
//! YOLOv8 emits `[1, 4 + C, N]`: for each of N candidates, cx, cy, w, h in model-input pixels,
//! then one (already sigmoid) score per class. No objectness, no NMS inside the model.

use super::preprocess::Letterbox;
use super::{BBox, Detection};

/// Turns raw output into frame-pixel detections scoring at least `min_score`, before NMS.
pub fn decode(output: &[f32], classes: usize, candidates: usize, lb: &Letterbox, min_score: f32) -> Vec<Detection> {
    let at = |row: usize, i: usize| output[row * candidates + i];
    let (fw, fh) = (lb.source_width as f32, lb.source_height as f32);
    let mut out = Vec::new();
    for i in 0..candidates {
        let (class_id, score) = (0..classes)
            .map(|c| (c, at(4 + c, i)))
            .fold((0, f32::MIN), |best, cur| if cur.1 > best.1 { cur } else { best });
        if score < min_score {
            continue;
        }
        let (cx, cy, w, h) = (at(0, i), at(1, i), at(2, i), at(3, i));
        let (x1, y1) = lb.to_source(cx - w / 2.0, cy - h / 2.0);
        let (x2, y2) = lb.to_source(cx + w / 2.0, cy + h / 2.0);
        let bbox = BBox { x1: x1.clamp(0.0, fw), y1: y1.clamp(0.0, fh), x2: x2.clamp(0.0, fw), y2: y2.clamp(0.0, fh) };
        if bbox.area() > 0.0 {
            out.push(Detection { class_id, label: String::new(), score, bbox });
        }
    }
    out
}

/// Class-wise greedy NMS: highest score first; drops boxes overlapping a kept box of the same
/// class by more than `iou`.
pub fn nms(mut dets: Vec<Detection>, iou: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for d in dets {
        if kept.iter().all(|k| k.class_id != d.class_id || k.bbox.iou(&d.bbox) <= iou) {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds `[1, 4 + C, N]` from (cx, cy, w, h, scores) rows.
    fn output(rows: &[(f32, f32, f32, f32, &[f32])]) -> Vec<f32> {
        let (n, c) = (rows.len(), rows[0].4.len());
        let mut out = vec![0.0; (4 + c) * n];
        for (i, (cx, cy, w, h, s)) in rows.iter().enumerate() {
            for (r, v) in [*cx, *cy, *w, *h].into_iter().chain(s.iter().copied()).enumerate() {
                out[r * n + i] = v;
            }
        }
        out
    }

    #[test]
    fn boxes_map_back_through_the_letterbox() {
        let lb = Letterbox::new(1280, 720, 640, 640); // scale 0.5, pad_y 140
        let out = output(&[(100.0, 240.0, 40.0, 20.0, &[0.1, 0.9]), (5.0, 5.0, 4.0, 4.0, &[0.2, 0.1])]);
        let d = decode(&out, 2, 2, &lb, 0.25);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].class_id, 1);
        assert_eq!(d[0].bbox, BBox { x1: 160.0, y1: 180.0, x2: 240.0, y2: 220.0 });
    }

    #[test]
    fn nms_is_per_class() {
        let b = |x: f32| BBox { x1: x, y1: 0.0, x2: x + 10.0, y2: 10.0 };
        let d = |class_id, score, x| Detection { class_id, label: String::new(), score, bbox: b(x) };
        let kept = nms(vec![d(0, 0.8, 0.0), d(0, 0.9, 1.0), d(1, 0.7, 0.0), d(0, 0.6, 50.0)], 0.45);
        let summary: Vec<_> = kept.iter().map(|k| (k.class_id, k.score)).collect();
        assert_eq!(summary, vec![(0, 0.9), (1, 0.7), (0, 0.6)]);
    }
}
