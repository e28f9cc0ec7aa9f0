//! The evidence picture: the frame with privacy masks and chosen classes blurred, optionally
//! cropped to the objects, with the zone, the objects' boxes and labels, and a header with the
//! camera and the local time drawn on it.
//!
//! Text is drawn with DejaVu Sans Condensed, embedded (`assets/fonts/`, Bitstream Vera license),
//! so Vietnamese names render with their diacritics on any box.

use super::{Origin, Shot};
use crate::detect::BBox;
use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use image::{Rgb, RgbImage};
use std::sync::LazyLock;

#[allow(clippy::expect_used, reason = "the font is embedded at build time and tested: parsing it cannot fail")]
static FONT: LazyLock<FontRef<'static>> = LazyLock::new(|| {
    FontRef::try_from_slice(include_bytes!("../../assets/fonts/DejaVuSansCondensed.ttf"))
        .expect("the embedded font is a valid TrueType file")
});

/// Zone outline colour (cyan) and box colour (yellow): neither is a common street colour, and
/// both survive JPEG well enough for a test to find them.
pub const ZONE_COLOUR: Rgb<u8> = Rgb([0, 255, 255]);
pub const BOX_COLOUR: Rgb<u8> = Rgb([255, 255, 0]);
/// Line thickness in pixels; boxes are drawn just outside the object so it stays visible.
pub const LINE: i32 = 3;
const TEXT_COLOUR: Rgb<u8> = Rgb([255, 255, 255]);
const TEXT_BACKGROUND: Rgb<u8> = Rgb([20, 20, 20]);

/// A rendered snapshot and where the shot's objects are in it.
pub struct Picture {
    pub image: RgbImage,
    /// The objects' boxes in the picture's pixels, in the shot's order.
    pub boxes: Vec<BBox>,
}

/// Draws `shot` as `origin`'s style says, with `zone` (normalised); `caption` leads the header.
pub fn render(origin: &Origin, zone: &[[f64; 2]], shot: &Shot, caption: &str) -> Picture {
    let style = &origin.snapshot;
    let frame = &shot.frame;
    let mut full = frame.to_rgb();
    let (w, h) = (frame.width as f64, frame.height as f64);
    let mut private = style.privacy_masks.clone();
    private.extend(shot.blur.iter().map(|b| {
        let (x1, y1, x2, y2) = (b.x1 as f64 / w, b.y1 as f64 / h, b.x2 as f64 / w, b.y2 as f64 / h);
        vec![[x1, y1], [x2, y1], [x2, y2], [x1, y2]]
    }));
    blur_polygons(&mut full, &private);
    let objects: Vec<BBox> = shot.objects.iter().map(|o| o.bbox).collect();
    let area = if style.crop {
        crop_area(&objects, zone, frame.width, frame.height)
    } else {
        [0, 0, frame.width, frame.height]
    };
    let [cx, cy, cw, ch] = area;
    let cropped = if style.crop { image::imageops::crop_imm(&full, cx, cy, cw, ch).to_image() } else { full };
    // Boxes and zone follow the crop and the scaling.
    let (mut image, scale) = fit_width(cropped, style.max_width);
    let boxes: Vec<BBox> = objects
        .iter()
        .map(|b| BBox {
            x1: (b.x1 - cx as f32) * scale,
            y1: (b.y1 - cy as f32) * scale,
            x2: (b.x2 - cx as f32) * scale,
            y2: (b.y2 - cy as f32) * scale,
        })
        .collect();
    let zone: Vec<[f64; 2]> =
        zone.iter().map(|p| [(p[0] * w - cx as f64) / cw as f64, (p[1] * h - cy as f64) / ch as f64]).collect();
    annotate(&mut image, &zone, &boxes);
    let text_height = (image.height() as f32 / 30.0).clamp(10.0, 32.0);
    for (o, b) in shot.objects.iter().zip(&boxes) {
        let text = format!("{} {:.2} #{}", o.label, o.score, o.track_id);
        label(&mut image, &text, b.x1 - LINE as f32, b.y1 - LINE as f32 - text_height - 1.0, text_height);
    }
    let local = frame.at.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S");
    let title = match caption {
        "" => format!("{} · {local}", origin.camera_name),
        caption => format!("{} · {caption} {local}", origin.camera_name),
    };
    header(&mut image, &title);
    Picture { image, boxes }
}

/// `[x, y, width, height]` of a crop around `objects` (frame pixels), or around the zone when
/// there are none: their bounds with as much room again on each side, at least a third of the
/// frame each way, within the frame.
fn crop_area(objects: &[BBox], zone: &[[f64; 2]], width: u32, height: u32) -> [u32; 4] {
    let (w, h) = (width as f32, height as f32);
    let corners: Vec<(f32, f32)> = match objects.is_empty() {
        false => objects.iter().flat_map(|b| [(b.x1, b.y1), (b.x2, b.y2)]).collect(),
        true => zone.iter().map(|p| (p[0] as f32 * w, p[1] as f32 * h)).collect(),
    };
    let (x1, x2) = corners.iter().fold((w, 0.0f32), |(lo, hi), c| (lo.min(c.0), hi.max(c.0)));
    let (y1, y2) = corners.iter().fold((h, 0.0f32), |(lo, hi), c| (lo.min(c.1), hi.max(c.1)));
    let span = |lo: f32, hi: f32, limit: f32| {
        let size = ((hi - lo).max(0.0) * 3.0).max(limit / 3.0).min(limit);
        let start = ((lo + hi) / 2.0 - size / 2.0).clamp(0.0, limit - size);
        (start.floor() as u32, (size.ceil() as u32).max(1))
    };
    let ((x, cw), (y, ch)) = (span(x1, x2, w), span(y1, y2, h));
    [x, y, cw.min(width - x), ch.min(height - y)]
}

/// Draws `zone` (normalised polygon) and `boxes` (frame pixels) onto `frame`.
pub fn annotate(frame: &mut RgbImage, zone: &[[f64; 2]], boxes: &[BBox]) {
    let (w, h) = (frame.width() as f64, frame.height() as f64);
    for (a, b) in crate::rules::zone::sides(zone) {
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

/// Writes `text` on a dark band across the top of `frame` (camera and local time).
pub fn header(frame: &mut RgbImage, text: &str) {
    let height = (frame.height() / 18).clamp(14, 48);
    fill(frame, 0, 0, frame.width() as i32, height as i32, TEXT_BACKGROUND);
    draw_text(frame, text, 4.0, 0.0, height as f32 * 0.8);
}

/// Writes `text` on a dark background with its top-left corner at (x, y), kept inside the frame.
pub fn label(frame: &mut RgbImage, text: &str, x: f32, y: f32, height: f32) {
    let width = text_width(text, height);
    let x = x.clamp(0.0, (frame.width() as f32 - width).max(0.0));
    let y = y.clamp(0.0, (frame.height() as f32 - height).max(0.0));
    fill(frame, x as i32, y as i32, (x + width) as i32 + 2, (y + height) as i32 + 1, TEXT_BACKGROUND);
    draw_text(frame, text, x + 1.0, y, height);
}

fn text_width(text: &str, height: f32) -> f32 {
    let font = FONT.as_scaled(PxScale::from(height));
    text.chars().map(|c| font.h_advance(font.glyph_id(c))).sum()
}

/// Renders `text` in white, anti-aliased onto what is there, top at `y`.
fn draw_text(frame: &mut RgbImage, text: &str, x: f32, y: f32, height: f32) {
    let scale = PxScale::from(height);
    let font = FONT.as_scaled(scale);
    let mut caret = x;
    for c in text.chars() {
        let id = font.glyph_id(c);
        let glyph = id.with_scale_and_position(scale, ab_glyph::point(caret, y + font.ascent()));
        caret += font.h_advance(id);
        let Some(outline) = FONT.outline_glyph(glyph) else { continue };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, coverage| {
            let (px, py) = (bounds.min.x as i32 + gx as i32, bounds.min.y as i32 + gy as i32);
            if px < 0 || py < 0 || px >= frame.width() as i32 || py >= frame.height() as i32 {
                return;
            }
            let p = frame.get_pixel_mut(px as u32, py as u32);
            for ch in 0..3 {
                p[ch] = (p[ch] as f32 * (1.0 - coverage) + TEXT_COLOUR[ch] as f32 * coverage) as u8;
            }
        });
    }
}

/// Blurs whatever is inside each polygon (normalised coordinates) beyond recognition: faces,
/// house fronts, plates — what the city must not publish.
pub fn blur_polygons(frame: &mut RgbImage, polygons: &[Vec<[f64; 2]>]) {
    let (w, h) = (frame.width(), frame.height());
    for polygon in polygons {
        let xs = polygon.iter().map(|p| p[0] * w as f64);
        let ys = polygon.iter().map(|p| p[1] * h as f64);
        let (x1, x2) = (xs.clone().fold(f64::MAX, f64::min).max(0.0), xs.fold(0.0, f64::max).min(w as f64));
        let (y1, y2) = (ys.clone().fold(f64::MAX, f64::min).max(0.0), ys.fold(0.0, f64::max).min(h as f64));
        if x2 <= x1 || y2 <= y1 {
            continue;
        }
        let (x, y, cw, ch) = (x1 as u32, y1 as u32, (x2 - x1).ceil() as u32, (y2 - y1).ceil() as u32);
        let (cw, ch) = (cw.min(w - x), ch.min(h - y));
        let region = image::imageops::crop_imm(frame, x, y, cw, ch).to_image();
        let sigma = (w.max(h) as f32 / 60.0).max(4.0);
        let blurred = image::imageops::fast_blur(&region, sigma);
        for (bx, by, p) in blurred.enumerate_pixels() {
            let (fx, fy) = (x + bx, y + by);
            let centre = ((fx as f64 + 0.5) / w as f64, (fy as f64 + 0.5) / h as f64);
            if crate::rules::zone::contains(polygon, centre) {
                frame.put_pixel(fx, fy, *p);
            }
        }
    }
}

/// `frame` scaled down to at most `max_width` pixels wide (0: as it is), and the factor.
pub fn fit_width(frame: RgbImage, max_width: u32) -> (RgbImage, f32) {
    if max_width == 0 || frame.width() <= max_width {
        return (frame, 1.0);
    }
    use fast_image_resize::{
        FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image, images::ImageRef,
    };
    let scale = max_width as f32 / frame.width() as f32;
    let height = ((frame.height() as f32 * scale).round() as u32).max(1);
    // fast_image_resize: about ten times faster than `image`'s resize, and this is on the way
    // from an incident opening to its report.
    let scaled = (|| {
        let src = ImageRef::new(frame.width(), frame.height(), frame.as_raw(), PixelType::U8x3).ok()?;
        let mut scaled = Image::new(max_width, height, PixelType::U8x3);
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        Resizer::new().resize(&src, &mut scaled, &options).ok()?;
        RgbImage::from_raw(max_width, height, scaled.into_vec())
    })();
    // Both are U8x3 of their sizes, so scaling does not fail; were it to, the frame goes as it is.
    match scaled {
        Some(scaled) => (scaled, scale),
        None => (frame, 1.0),
    }
}

/// `frame` as a JPEG; an error for a frame larger than JPEG allows (65,535 pixels a side).
pub fn encode_jpeg(frame: &RgbImage, quality: u8) -> Result<Vec<u8>, image::ImageError> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode_image(frame)?;
    Ok(out)
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
        let jpeg = encode_jpeg(&img, 80).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
    }

    #[test]
    fn a_frame_wider_than_jpeg_allows_is_an_error_not_a_panic() {
        assert!(encode_jpeg(&RgbImage::new(70_000, 1), 80).is_err());
    }

    fn bright(img: &RgbImage, x: std::ops::Range<u32>, y: std::ops::Range<u32>) -> usize {
        y.flat_map(|y| x.clone().map(move |x| (x, y))).filter(|&(x, y)| img.get_pixel(x, y)[0] > 150).count()
    }

    #[test]
    fn the_header_and_labels_write_vietnamese_text_in_white_on_dark() {
        let mut img = RgbImage::from_pixel(640, 360, Rgb([90, 90, 90]));
        header(&mut img, "Đường Lê Lợi · 2026-11-29 08:15:09");
        assert!(bright(&img, 0..640, 0..20) > 150, "text drawn in the header");
        assert_eq!(bright(&img, 300..640, 0..20), 0, "the text ends where it ends");
        assert_eq!(*img.get_pixel(639, 1), TEXT_BACKGROUND, "a dark band under it");
        // One glyph with a stacked diacritic renders taller than the same letter without.
        let ink = |s: &str| {
            let mut img = RgbImage::new(40, 40);
            draw_text(&mut img, s, 2.0, 0.0, 30.0);
            (0..40).filter(|&y| (0..40).any(|x| img.get_pixel(x, y)[0] > 100)).count()
        };
        assert!(ink("ệ") > ink("e") + 4, "ệ: {} rows, e: {}", ink("ệ"), ink("e"));
        let mut img = RgbImage::from_pixel(100, 100, Rgb([90, 90, 90]));
        label(&mut img, "red 0.97 #3", 90.0, -5.0, 12.0);
        assert!(bright(&img, 0..100, 0..12) > 20, "kept inside the frame");
    }

    #[test]
    fn privacy_masks_blur_inside_and_nowhere_else() {
        let checker =
            |x: u32, y: u32| if (x / 2 + y / 2).is_multiple_of(2) { Rgb([255, 255, 255]) } else { Rgb([0, 0, 0]) };
        let mut img = RgbImage::from_fn(200, 100, checker);
        blur_polygons(&mut img, &[vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]]);
        let contrast = |x: std::ops::Range<u32>| {
            let values: Vec<f64> =
                x.flat_map(|x| (20..80).map(move |y| (x, y))).map(|(x, y)| img.get_pixel(x, y)[0] as f64).collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt()
        };
        assert!(contrast(10..90) < 20.0, "masked half still shows its pattern: {}", contrast(10..90));
        assert!(contrast(110..190) > 100.0, "the other half is untouched");
    }

    #[test]
    fn crops_hold_the_objects_with_room_around_them_inside_the_frame() {
        let b = BBox { x1: 900.0, y1: 500.0, x2: 1000.0, y2: 600.0 };
        let [x, y, w, h] = crop_area(&[b], &[], 1920, 1080);
        assert!(x <= 800 && x + w >= 1100 && y <= 400 && y + h >= 700, "{x} {y} {w} {h}");
        assert!(w >= 640 && h >= 360, "at least a third of the frame: {w}x{h}");
        // At the corner it stays inside the frame.
        let corner = BBox { x1: 1800.0, y1: 1000.0, x2: 1919.0, y2: 1079.0 };
        let [x, y, w, h] = crop_area(&[corner], &[], 1920, 1080);
        assert!(x + w <= 1920 && y + h <= 1080 && x <= 1800 && y <= 1000, "{x} {y} {w} {h}");
        // With no objects, around the zone.
        let [x, _, w, _] = crop_area(&[], &[[0.0, 0.5], [0.5, 0.5], [0.5, 1.0]], 1920, 1080);
        assert_eq!((x, w), (0, 1920), "a zone half the frame wide, times three, is the whole width");
    }

    fn checkered_shot(blur: Vec<BBox>) -> Shot {
        let (width, height) = (640u32, 360u32);
        let y =
            (0..width * height).map(|i| if ((i % width) / 2 + (i / width) / 2) % 2 == 0 { 235 } else { 16 }).collect();
        let chroma = (width / 2 * height / 2) as usize;
        let frame = crate::decode::Frame {
            width,
            height,
            y,
            u: vec![128; chroma],
            v: vec![128; chroma],
            full_range: false,
            pts_secs: 0.0,
            at: chrono::Utc::now(),
        };
        let bbox = BBox { x1: 300.0, y1: 200.0, x2: 350.0, y2: 250.0 };
        let object = crate::rules::IncidentObject {
            track_id: 1,
            label: "motorbike".into(),
            score: 0.9,
            bbox,
            since: chrono::Utc::now(),
        };
        Shot { frame: std::sync::Arc::new(frame), objects: vec![object], blur }
    }

    fn origin(crop: bool) -> Origin {
        let mut style = super::super::SnapshotStyle::new(&Default::default(), Vec::new());
        style.crop = crop;
        Origin {
            device_id: "d".into(),
            camera_id: "c".into(),
            camera_name: "Cam".into(),
            camera_location: String::new(),
            model_names: vec!["m".into()],
            config_version: "v".into(),
            snapshot: style,
            class_names: Default::default(),
        }
    }

    fn contrast(img: &RgbImage, x: std::ops::Range<u32>, y: std::ops::Range<u32>) -> f64 {
        let values: Vec<f64> =
            x.flat_map(|x| y.clone().map(move |y| (x, y))).map(|(x, y)| img.get_pixel(x, y)[1] as f64).collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt()
    }

    #[test]
    fn detections_of_blurred_classes_are_blurred_and_crops_move_the_boxes() {
        let face = BBox { x1: 500.0, y1: 40.0, x2: 600.0, y2: 140.0 };
        let zone = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0]];
        let whole = render(&origin(false), &zone, &checkered_shot(vec![face]), "");
        assert_eq!((whole.image.width(), whole.boxes[0].x1), (640, 300.0));
        assert!(contrast(&whole.image, 520..580, 60..120) < 20.0, "the face is blurred");
        assert!(contrast(&whole.image, 100..160, 60..120) > 80.0, "the rest is not");

        let cropped = render(&origin(true), &zone, &checkered_shot(Vec::new()), "first seen");
        let (w, h) = (cropped.image.width(), cropped.image.height());
        assert!(w < 640 && h < 360 && w >= 213 && h >= 120, "{w}x{h}");
        let b = cropped.boxes[0];
        assert!(b.x1 > 0.0 && b.x2 < w as f32 && (b.x2 - b.x1 - 50.0).abs() < 0.01, "{b:?} in {w}x{h}");
    }

    #[test]
    fn wide_frames_are_scaled_to_the_maximum_width() {
        let (img, scale) = fit_width(RgbImage::new(1920, 1080), 1280);
        assert_eq!((img.width(), img.height(), scale), (1280, 720, 2.0 / 3.0));
        let (img, scale) = fit_width(RgbImage::new(640, 360), 1280);
        assert_eq!((img.width(), scale), (640, 1.0));
    }
}
