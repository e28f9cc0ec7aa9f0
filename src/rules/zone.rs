//! Zone geometry: polygons in normalised frame coordinates, and whether a box is in one.

use crate::config::{Membership, Zone};
use crate::detect::BBox;

/// Even-odd ray casting; `point` and `polygon` in the same (normalised) coordinates.
pub fn contains(polygon: &[[f64; 2]], point: (f64, f64)) -> bool {
    let (px, py) = point;
    let mut inside = false;
    for ([xi, yi], [xj, yj]) in sides(polygon) {
        if (yi > py) != (yj > py) && px < (xj - xi) * (py - yi) / (yj - yi) + xi {
            inside = !inside;
        }
    }
    inside
}

/// Each side of `polygon`: every point with the next, the last with the first.
pub fn sides(polygon: &[[f64; 2]]) -> impl Iterator<Item = ([f64; 2], [f64; 2])> + '_ {
    polygon.iter().copied().zip(polygon.iter().copied().cycle().skip(1))
}

/// Whether `bbox` (pixels of a `width` x `height` frame) is in `zone`, by its membership rule.
pub fn is_in(zone: &Zone, bbox: &BBox, width: u32, height: u32) -> bool {
    let (w, h) = (width as f64, height as f64);
    let [x1, y1, x2, y2] = [bbox.x1 as f64 / w, bbox.y1 as f64 / h, bbox.x2 as f64 / w, bbox.y2 as f64 / h];
    match zone.membership {
        Membership::BottomCenter => contains(&zone.polygon, ((x1 + x2) / 2.0, y2)),
        Membership::Center => contains(&zone.polygon, ((x1 + x2) / 2.0, (y1 + y2) / 2.0)),
        Membership::Overlap(at_least) => {
            let area = (x2 - x1) * (y2 - y1);
            area > 0.0 && area_inside(&zone.polygon, [x1, y1, x2, y2]) / area >= at_least
        }
    }
}

/// Area of `polygon` inside the rectangle `[x1, y1, x2, y2]`: the polygon clipped to each of
/// the rectangle's edges in turn (Sutherland–Hodgman; exact for any polygon against a convex
/// clip), then the shoelace formula.
fn area_inside(polygon: &[[f64; 2]], [x1, y1, x2, y2]: [f64; 4]) -> f64 {
    // Each edge keeps the points p where inside(p) >= 0.
    let edges: [&dyn Fn([f64; 2]) -> f64; 4] = [&|[x, _]| x - x1, &|[x, _]| x2 - x, &|[_, y]| y - y1, &|[_, y]| y2 - y];
    let mut points = polygon.to_vec();
    for inside in edges {
        let mut clipped = Vec::with_capacity(points.len() + 4);
        for (a, b) in sides(&points) {
            let (da, db) = (inside(a), inside(b));
            if da >= 0.0 {
                clipped.push(a);
            }
            if (da >= 0.0) != (db >= 0.0) {
                let (t, [ax, ay], [bx, by]) = (da / (da - db), a, b);
                clipped.push([ax + (bx - ax) * t, ay + (by - ay) * t]);
            }
        }
        points = clipped;
        if points.is_empty() {
            return 0.0;
        }
    }
    let twice: f64 = sides(&points).map(|([ax, ay], [bx, by])| ax * by - bx * ay).sum();
    twice.abs() / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_outside_and_concave() {
        let square = [[0.1, 0.5], [0.9, 0.5], [0.9, 1.0], [0.1, 1.0]];
        assert!(contains(&square, (0.5, 0.75)));
        assert!(!contains(&square, (0.5, 0.25)));
        assert!(!contains(&square, (0.95, 0.75)));
        let l_shape = [[0.0, 0.0], [1.0, 0.0], [1.0, 0.2], [0.2, 0.2], [0.2, 1.0], [0.0, 1.0]];
        assert!(contains(&l_shape, (0.1, 0.9)));
        assert!(!contains(&l_shape, (0.6, 0.6)));
    }

    #[test]
    fn membership_by_bottom_centre_centre_or_overlap() {
        let zone = |membership| Zone {
            name: "z".into(),
            polygon: vec![[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]],
            membership,
            inertia: 1,
            place: Default::default(),
        };
        // 100x100 frame; the box spans y 40..60: its bottom is in, its centre on the edge, 50% overlaps.
        let b = BBox { x1: 10.0, y1: 40.0, x2: 30.0, y2: 60.0 };
        assert!(is_in(&zone(Membership::BottomCenter), &b, 100, 100));
        assert!(!is_in(&zone(Membership::Center), &BBox { y1: 30.0, y2: 50.0 - 1.0, ..b }, 100, 100));
        assert!(is_in(&zone(Membership::Overlap(0.5)), &b, 100, 100));
        assert!(!is_in(&zone(Membership::Overlap(0.6)), &b, 100, 100));
        let triangle = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]];
        assert!((area_inside(&triangle, [0.0, 0.0, 1.0, 1.0]) - 0.5).abs() < 1e-9);
        assert!((area_inside(&triangle, [0.0, 0.0, 0.5, 0.5]) - 0.25).abs() < 1e-9);
    }
}
