//! Zone geometry: polygons in normalised frame coordinates.

/// Even-odd ray casting; `point` and `polygon` in the same (normalised) coordinates.
pub fn contains(polygon: &[[f64; 2]], point: (f64, f64)) -> bool {
    let (px, py) = point;
    let mut inside = false;
    let mut j = polygon.len().wrapping_sub(1);
    for i in 0..polygon.len() {
        let ([xi, yi], [xj, yj]) = (polygon[i], polygon[j]);
        if (yi > py) != (yj > py) && px < (xj - xi) * (py - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
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
}
