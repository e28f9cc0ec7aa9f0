//! The evidence picture: the frame with the zone and the boxes drawn on it, as JPEG.

use crate::detect::BBox;
use image::{Rgb, RgbImage};

/// Zone outline colour (cyan) and box colour (yellow): neither is a common street colour, and
/// both survive JPEG well enough for a test to find them.
pub const ZONE_COLOUR: Rgb<u8> = Rgb([0, 255, 255]);
pub const BOX_COLOUR: Rgb<u8> = Rgb([255, 255, 0]);
/// Line thickness in pixels; boxes are drawn just outside the object so it stays visible.
pub const LINE: i32 = 3;
const JPEG_QUALITY: u8 = 80;

/// Draws `zone` (normalised polygon) and `boxes` (frame pixels) onto `frame`.
pub fn annotate(frame: &mut RgbImage, zone: &[[f64; 2]], boxes: &[BBox]) {
    let (w, h) = (frame.width() as f64, frame.height() as f64);
    for i in 0..zone.len() {
        let (a, b) = (zone[i], zone[(i + 1) % zone.len()]);
        line(frame, (a[0] * (w - 1.0), a[1] * (h - 1.0)), (b[0] * (w - 1.0), b[1] * (h - 1.0)), ZONE_COLOUR);
    }
    for b in boxes {
        let (x1, y1) = (b.x1.floor() as i32 - LINE, b.y1.floor() as i32 - LINE);
        let (x2, y2) = (b.x2.ceil() as i32, b.y2.ceil() as i32);
        fill(frame, x1, y1, x2 + LINE, y1 + LINE, BOX_COLOUR);
        fill(frame, x1, y2, x2 + LINE, y2 + LINE, BOX_COLOUR);
        fill(frame, x1, y1, x1 + LINE, y2 + LINE, BOX_COLOUR);
        fill(frame, x2, y1, x2 + LINE, y2 + LINE, BOX_COLOUR);
    }
}

pub fn encode_jpeg(frame: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
        .encode_image(frame)
        .expect("encoding an in-memory RGB image into a Vec cannot fail");
    out
}

/// Fills `[x1, x2) x [y1, y2)`, clipped to the image.
fn fill(img: &mut RgbImage, x1: i32, y1: i32, x2: i32, y2: i32, c: Rgb<u8>) {
    let (w, h) = (img.width() as i32, img.height() as i32);
    for y in y1.max(0)..y2.min(h) {
        for x in x1.max(0)..x2.min(w) {
            img.put_pixel(x as u32, y as u32, c);
        }
    }
}

/// A thick line: squares of side LINE stamped along the segment.
fn line(img: &mut RgbImage, a: (f64, f64), b: (f64, f64), c: Rgb<u8>) {
    let steps = (b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil().max(1.0) as usize;
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        let (x, y) = ((a.0 + (b.0 - a.0) * t) as i32, (a.1 + (b.1 - a.1) * t) as i32);
        fill(img, x - LINE / 2, y - LINE / 2, x - LINE / 2 + LINE, y - LINE / 2 + LINE, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_drawn_just_outside_the_object() {
        let mut img = RgbImage::new(100, 100);
        annotate(&mut img, &[[0.0, 0.0], [1.0, 0.0], [1.0, 0.2]], &[BBox { x1: 40.0, y1: 40.0, x2: 60.0, y2: 60.0 }]);
        assert_eq!(*img.get_pixel(38, 50), BOX_COLOUR, "left edge");
        assert_eq!(*img.get_pixel(61, 50), BOX_COLOUR, "right edge");
        assert_eq!(*img.get_pixel(50, 50), Rgb([0, 0, 0]), "inside untouched");
        assert_eq!(*img.get_pixel(50, 0), ZONE_COLOUR, "zone top edge");
        let jpeg = encode_jpeg(&img);
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
    }
}
