//! Reading detector output, and non-maximum suppression — pure functions.
//!
//! Three layouts, as the common exports write them (boxes in model-input pixels):
//! - YOLOv8/YOLO11: `[1, 4 + C, N]`: per candidate cx, cy, w, h, then one score per class (no
//!   objectness, no NMS inside);
//! - YOLOv5/YOLOv7: `[1, N, 5 + C]`: cx, cy, w, h, objectness, class scores; a class's score is
//!   objectness times its own;
//! - end-to-end (YOLOv10, YOLO26): `[1, N, 6]`: x1, y1, x2, y2, score, class, NMS done inside.

// What comes from a camera, a clip or a model is never cut short by a cast unseen.
#![cfg_attr(not(test), deny(clippy::cast_possible_truncation))]

use super::preprocess::Letterbox;
use super::{BBox, Detection};
use crate::config::ModelFormat;

/// How one model's output reads, with its number of candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Yolov8 { candidates: usize },
    Yolov5 { candidates: usize },
    EndToEnd { candidates: usize },
}

impl Layout {
    /// The layout of an output of `shape` for a model of `classes` classes, as `format` says or,
    /// with `auto`, as the shape shows; an error names the shape and what was expected. A
    /// dimension the model leaves open (-1: the number of detections of an end-to-end export)
    /// matches nothing.
    pub fn of(shape: &[i64], classes: usize, format: ModelFormat) -> Result<Self, String> {
        let c = classes as i64;
        let [1, a, b] = *shape else {
            return Err(format!("output shape {shape:?} is not [1, rows, columns]"));
        };
        let v8 = a == 4 + c;
        let v5 = b == 5 + c;
        let e2e = b == 6;
        let n = |v: i64| usize::try_from(v).unwrap_or(0);
        match format {
            ModelFormat::Yolov8 if v8 => Ok(Layout::Yolov8 { candidates: n(b) }),
            ModelFormat::Yolov5 if v5 => Ok(Layout::Yolov5 { candidates: n(a) }),
            ModelFormat::EndToEnd if e2e => Ok(Layout::EndToEnd { candidates: n(a) }),
            ModelFormat::Auto => match (v8, v5, e2e) {
                (true, false, false) => Ok(Layout::Yolov8 { candidates: n(b) }),
                (false, true, false) => Ok(Layout::Yolov5 { candidates: n(a) }),
                (false, false, true) => Ok(Layout::EndToEnd { candidates: n(a) }),
                (false, false, false) => Err(format!(
                    "output shape {shape:?} fits no known layout for {classes} classes: [1, {}, N] (yolov8), \
                     [1, N, {}] (yolov5) or [1, N, 6] (end_to_end)",
                    4 + c,
                    5 + c
                )),
                _ => Err(format!("output shape {shape:?} could be more than one layout: set model.format")),
            },
            format => {
                Err(format!("output shape {shape:?} is not what model.format = {format:?} reads for {classes} classes"))
            }
        }
    }

    /// The format this layout is, to read later outputs of the same model without guessing.
    pub fn format(&self) -> ModelFormat {
        match self {
            Layout::Yolov8 { .. } => ModelFormat::Yolov8,
            Layout::Yolov5 { .. } => ModelFormat::Yolov5,
            Layout::EndToEnd { .. } => ModelFormat::EndToEnd,
        }
    }

    /// Whether the model has done its own NMS.
    pub fn end_to_end(&self) -> bool {
        matches!(self, Layout::EndToEnd { .. })
    }

    /// Values one image's output holds for a model of `classes` classes (None past `usize`).
    pub fn values(&self, classes: usize) -> Option<usize> {
        match *self {
            Layout::Yolov8 { candidates } => candidates.checked_mul(4 + classes),
            Layout::Yolov5 { candidates } => candidates.checked_mul(5 + classes),
            Layout::EndToEnd { candidates } => candidates.checked_mul(6),
        }
    }
}

/// One image's candidates read: those kept, and how many were malformed (a box or score that
/// is not a finite number, a box of no or negative size, a class id that is not one of the
/// model's) and dropped.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    pub detections: Vec<Detection>,
    pub malformed: usize,
}

/// Turns raw output into frame-pixel detections scoring at least `min_score`, before NMS: per
/// candidate its best class, or with `multi_label` every class scoring that much.
/// Candidates scoring that much are checked: a malformed one is dropped and counted, never
/// passed on (nor can any output, of whatever length, make this panic).
pub fn decode(
    output: &[f32],
    layout: Layout,
    classes: usize,
    lb: &Letterbox,
    min_score: f32,
    multi_label: bool,
) -> Decoded {
    let (fw, fh) = (lb.source_width as f32, lb.source_height as f32);
    // Model-input corners in, a frame box out, if they make a box.
    let frame_box = |x1: f32, y1: f32, x2: f32, y2: f32| {
        if !([x1, y1, x2, y2].iter().all(|v| v.is_finite()) && x2 > x1 && y2 > y1) {
            return None;
        }
        let (x1, y1) = lb.to_source(x1, y1);
        let (x2, y2) = lb.to_source(x2, y2);
        Some(BBox { x1: x1.clamp(0.0, fw), y1: y1.clamp(0.0, fh), x2: x2.clamp(0.0, fw), y2: y2.clamp(0.0, fh) })
    };
    let centred = |cx: f32, cy: f32, w: f32, h: f32| frame_box(cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0);
    let best = |scores: &mut dyn Iterator<Item = (usize, f32)>| {
        scores.fold((0, f32::MIN), |b, c| if c.1 > b.1 { c } else { b })
    };
    let mut out = Decoded::default();
    let mut keep = |class_id: Option<usize>, score: f32, bbox: Option<BBox>| match (class_id, bbox) {
        (Some(class_id), Some(bbox)) if score.is_finite() && class_id < classes => {
            // A box wholly in the letterbox's padding is clamped to nothing: not a detection.
            if bbox.area() > 0.0 {
                out.detections.push(Detection { model: 0, class_id, label: String::new(), score, bbox });
            }
        }
        _ => out.malformed += 1,
    };
    match layout {
        Layout::Yolov8 { candidates: n } => {
            let at = |row: usize, i: usize| output.get(row * n + i).copied().unwrap_or(f32::NAN);
            for i in 0..n {
                let bbox = || centred(at(0, i), at(1, i), at(2, i), at(3, i));
                if multi_label {
                    for c in (0..classes).filter(|&c| at(4 + c, i) >= min_score) {
                        keep(Some(c), at(4 + c, i), bbox());
                    }
                } else {
                    let (class_id, score) = best(&mut (0..classes).map(|c| (c, at(4 + c, i))));
                    if score >= min_score {
                        keep(Some(class_id), score, bbox());
                    }
                }
            }
        }
        Layout::Yolov5 { candidates: n } => {
            for row in output.chunks_exact(5 + classes).take(n) {
                let &[cx, cy, w, h, objectness, ref scores @ ..] = row else { continue };
                // Not a number fails this too.
                if objectness.partial_cmp(&min_score).is_none_or(|o| o.is_lt()) {
                    continue;
                }
                if multi_label {
                    for (c, score) in scores.iter().map(|s| objectness * s).enumerate().filter(|(_, s)| *s >= min_score)
                    {
                        keep(Some(c), score, centred(cx, cy, w, h));
                    }
                } else {
                    let (class_id, score) = best(&mut scores.iter().map(|s| objectness * s).enumerate());
                    if score >= min_score {
                        keep(Some(class_id), score, centred(cx, cy, w, h));
                    }
                }
            }
        }
        Layout::EndToEnd { candidates: n } => {
            for row in output.chunks_exact(6).take(n) {
                let &[x1, y1, x2, y2, score, class] = row else { continue };
                if score >= min_score {
                    // A class id is a whole number the model has (a float here, as exported).
                    let whole = class.round();
                    #[allow(clippy::cast_possible_truncation, reason = "a whole number from 0 to the class count")]
                    let class_id = ((class - whole).abs() < 0.01 && whole >= 0.0 && whole < classes as f32)
                        .then_some(whole as usize);
                    keep(class_id, score, frame_box(x1, y1, x2, y2));
                }
            }
        }
    }
    out
}

/// Class-wise greedy NMS: highest score first; drops boxes overlapping a kept box of the same
/// class by more than `iou`.
///
/// Kept boxes are filed in a coarse grid (32 x 32 cells over the boxes' extent, per class) in
/// every cell they touch, so a candidate is compared only with kept boxes in the cells it
/// touches: 8,400 candidates take a fraction of a millisecond instead of comparing each with
/// every kept box. Class ids are those [`decode`] keeps: below the model's class count.
pub fn nms(dets: Vec<Detection>, iou: f32) -> Vec<Detection> {
    const CELLS: usize = 32;
    // Sorted as plain integers: the score's bits in total order (highest first) above the index.
    let mut order: Vec<u64> = dets
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let bits = d.score.to_bits() as i32;
            let ordered = (bits ^ (((bits >> 31) as u32) >> 1) as i32) as u32 ^ 0x8000_0000; // ascending
            (u64::from(!ordered) << 32) | i as u64
        })
        .collect();
    order.sort_unstable();
    let classes = dets.iter().map(|d| d.class_id.saturating_add(1)).max().unwrap_or(0);
    let extent = dets.iter().fold(1.0f32, |m, d| m.max(d.bbox.x2).max(d.bbox.y2));
    #[allow(clippy::cast_possible_truncation, reason = "a cell from 0 up: the float saturates, then the grid's edge")]
    let cell_of = |v: f32| ((v.max(0.0) / extent * CELLS as f32) as usize).min(CELLS - 1);
    let cells = |b: &BBox| {
        let (x1, x2, y1, y2) = (cell_of(b.x1), cell_of(b.x2), cell_of(b.y1), cell_of(b.y2));
        (y1..=y2).flat_map(move |y| (x1..=x2).map(move |x| y * CELLS + x))
    };
    let mut grid: Vec<Vec<BBox>> = vec![Vec::new(); classes * CELLS * CELLS];
    let mut kept: Vec<&Detection> = Vec::new();
    for key in order {
        let Some(d) = usize::try_from(key & u64::from(u32::MAX)).ok().and_then(|i| dets.get(i)) else { continue }; // the low half: its index
        let base = d.class_id * CELLS * CELLS;
        let overlaps = cells(&d.bbox).filter_map(|cell| grid.get(base + cell)).flatten().any(|k| k.iou(&d.bbox) > iou);
        if !overlaps {
            for cell in cells(&d.bbox) {
                grid.get_mut(base + cell).into_iter().for_each(|kept| kept.push(d.bbox));
            }
            kept.push(d);
        }
    }
    kept.into_iter().cloned().collect()
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
        let d = decode(&out, Layout::Yolov8 { candidates: 2 }, 2, &lb, 0.25, false).detections;
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].class_id, 1);
        assert_eq!(d[0].bbox, BBox { x1: 160.0, y1: 180.0, x2: 240.0, y2: 220.0 });
    }

    #[test]
    fn multi_label_keeps_every_class_over_the_score_on_a_box() {
        let lb = Letterbox::new(640, 640, 640, 640);
        let out = output(&[(100.0, 100.0, 40.0, 20.0, &[0.7, 0.41, 0.1])]);
        let classes = |multi| -> Vec<(usize, f32)> {
            decode(&out, Layout::Yolov8 { candidates: 1 }, 3, &lb, 0.25, multi)
                .detections
                .iter()
                .map(|d| (d.class_id, d.score))
                .collect()
        };
        assert_eq!(classes(false), [(0, 0.7)]);
        assert_eq!(classes(true), [(0, 0.7), (1, 0.41)]);
        #[rustfmt::skip]
        let v5 = [100.0, 100.0, 20.0, 20.0, 0.5, 0.9, 0.6, 0.2]; // 0.45, 0.3, 0.1
        let d = decode(&v5, Layout::Yolov5 { candidates: 1 }, 3, &lb, 0.25, true).detections;
        assert_eq!(d.iter().map(|d| d.class_id).collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn yolov5_rows_weigh_class_scores_by_objectness() {
        let lb = Letterbox::new(640, 640, 640, 640);
        #[rustfmt::skip]
        let out = [
            100.0, 100.0, 20.0, 20.0, 0.9, 0.1, 0.8, // class 1 at 0.72
            300.0, 300.0, 20.0, 20.0, 0.2, 0.9, 0.1, // objectness too low
        ];
        let d = decode(&out, Layout::Yolov5 { candidates: 2 }, 2, &lb, 0.25, false).detections;
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].class_id, (d[0].score * 100.0).round()), (1, 72.0));
        assert_eq!(d[0].bbox, BBox { x1: 90.0, y1: 90.0, x2: 110.0, y2: 110.0 });
    }

    #[test]
    fn end_to_end_rows_are_corners_score_and_class() {
        let lb = Letterbox::new(1280, 720, 640, 640); // scale 0.5, pad_y 140
        let out = [80.0, 230.0, 120.0, 250.0, 0.9, 1.0, 0.0, 0.0, 1.0, 1.0, 0.1, 0.0];
        let d = decode(&out, Layout::EndToEnd { candidates: 2 }, 2, &lb, 0.25, false).detections;
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].class_id, d[0].bbox), (1, BBox { x1: 160.0, y1: 180.0, x2: 240.0, y2: 220.0 }));
    }

    #[test]
    fn malformed_candidates_are_dropped_and_counted() {
        let lb = Letterbox::new(640, 640, 640, 640);
        #[rustfmt::skip]
        let out = [
            10.0, 10.0, 50.0, 50.0, 0.9, 0.0,      // fine
            f32::NAN, 10.0, 50.0, 50.0, 0.9, 0.0,  // a corner not a number
            10.0, 10.0, f32::INFINITY, 50.0, 0.9, 1.0,
            50.0, 10.0, 10.0, 50.0, 0.9, 0.0,      // negative width
            10.0, 10.0, 50.0, 50.0, 0.9, 7.0,      // a class the model lacks
            10.0, 10.0, 50.0, 50.0, 0.9, -1.0,
            10.0, 10.0, 50.0, 50.0, 0.9, f32::NAN,
            10.0, 10.0, 50.0, 50.0, f32::INFINITY, 1.0,
            10.0, 10.0, 50.0, 50.0, f32::NAN, 1.0, // not a score that passes: not looked at
        ];
        let d = decode(&out, Layout::EndToEnd { candidates: 9 }, 2, &lb, 0.25, false);
        assert_eq!((d.detections.len(), d.malformed), (1, 7));
        // Fewer values than the layout says: read as far as they go, never past.
        let d = decode(&out[..8], Layout::Yolov8 { candidates: 100 }, 2, &lb, 0.25, false);
        assert!(d.detections.is_empty());
    }

    proptest::proptest! {
        /// Any output, of any layout and length, with any values: decode ends, and what it keeps
        /// is a box inside the frame, of some size, with a class the model has and a finite
        /// score that passes; every candidate that passed the score is kept or counted.
        #[test]
        fn decode_keeps_only_sound_detections_of_any_output(
            format in 0usize..3,
            candidates in 0usize..40,
            classes in 1usize..5,
            values in proptest::collection::vec(
                proptest::prop_oneof![
                    -1000.0f32..1000.0,
                    0.0f32..1.0,
                    proptest::prelude::Just(f32::NAN),
                    proptest::prelude::Just(f32::INFINITY),
                    proptest::prelude::Just(f32::NEG_INFINITY),
                    0.0f32..8.0,
                ],
                0..400,
            ),
        ) {
            let layout = [
                Layout::Yolov8 { candidates },
                Layout::Yolov5 { candidates },
                Layout::EndToEnd { candidates },
            ][format];
            let lb = Letterbox::new(1280, 720, 640, 640);
            let d = decode(&values, layout, classes, &lb, 0.25, false);
            for det in &d.detections {
                let b = det.bbox;
                proptest::prop_assert!(det.class_id < classes && det.score.is_finite() && det.score >= 0.25);
                proptest::prop_assert!(b.x1 >= 0.0 && b.y1 >= 0.0 && b.x2 <= 1280.0 && b.y2 <= 720.0 && b.area() > 0.0);
            }
            proptest::prop_assert!(d.detections.len() + d.malformed <= candidates);
        }
    }

    #[test]
    fn the_layout_comes_from_the_shape_or_the_config_and_a_mismatch_names_the_shapes() {
        use ModelFormat::*;
        assert_eq!(Layout::of(&[1, 6, 8400], 2, Auto), Ok(Layout::Yolov8 { candidates: 8400 }));
        assert_eq!(Layout::of(&[1, 25200, 85], 80, Auto), Ok(Layout::Yolov5 { candidates: 25200 }));
        assert_eq!(Layout::of(&[1, 300, 6], 80, Auto), Ok(Layout::EndToEnd { candidates: 300 }));
        // One class: [1, N, 6] is both yolov5 and end-to-end.
        assert!(Layout::of(&[1, 300, 6], 1, Auto).unwrap_err().contains("set model.format"));
        assert_eq!(Layout::of(&[1, 300, 6], 1, EndToEnd), Ok(Layout::EndToEnd { candidates: 300 }));
        let wrong = Layout::of(&[1, 84, 8400], 2, Auto).unwrap_err();
        assert!(wrong.contains("[1, 84, 8400]") && wrong.contains("[1, 6, N]"), "{wrong}");
        assert!(Layout::of(&[1, 6, 8400], 2, Yolov5).unwrap_err().contains("Yolov5"));
        assert!(Layout::of(&[6, 8400], 2, Auto).is_err());
        // An end-to-end export's row count is open, and may even equal 4 + C at run time.
        assert_eq!(Layout::of(&[1, -1, 6], 2, Auto), Ok(Layout::EndToEnd { candidates: 0 }));
        assert_eq!(Layout::of(&[1, 6, 6], 2, EndToEnd), Ok(Layout::EndToEnd { candidates: 6 }));
    }

    #[test]
    fn nms_finds_overlaps_across_grid_cells() {
        // Boxes far apart stretch the grid; the overlapping pair straddles cell borders.
        let d = |score, x1: f32, y1: f32, size: f32| Detection {
            model: 0,
            class_id: 0,
            label: String::new(),
            score,
            bbox: BBox { x1, y1, x2: x1 + size, y2: y1 + size },
        };
        let kept = nms(vec![d(0.9, 60.0, 60.0, 40.0), d(0.8, 64.0, 58.0, 40.0), d(0.7, 3000.0, 3000.0, 10.0)], 0.45);
        let scores: Vec<f32> = kept.iter().map(|k| k.score).collect();
        assert_eq!(scores, [0.9, 0.7]);
    }

    #[test]
    fn nms_handles_ties_and_nothing() {
        let b = BBox { x1: 0.0, y1: 0.0, x2: 10.0, y2: 10.0 };
        let d = |score| Detection { model: 0, class_id: 0, label: String::new(), score, bbox: b };
        assert_eq!(nms(vec![d(0.5), d(0.5)], 0.45).len(), 1, "equal boxes, equal scores: one kept");
        assert!(nms(Vec::new(), 0.45).is_empty());
    }

    #[test]
    fn nms_is_per_class() {
        let b = |x: f32| BBox { x1: x, y1: 0.0, x2: x + 10.0, y2: 10.0 };
        let d = |class_id, score, x| Detection { model: 0, class_id, label: String::new(), score, bbox: b(x) };
        let kept = nms(vec![d(0, 0.8, 0.0), d(0, 0.9, 1.0), d(1, 0.7, 0.0), d(0, 0.6, 50.0)], 0.45);
        let summary: Vec<_> = kept.iter().map(|k| (k.class_id, k.score)).collect();
        assert_eq!(summary, vec![(0, 0.9), (1, 0.7), (0, 0.6)]);
    }
}
