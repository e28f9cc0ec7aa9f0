//! Letterboxing: scale the frame to fit the model input without distortion, pad the rest grey
//! (114, as YOLOv8 was trained), and remember how to map model pixels back to frame pixels.
//!
//! A [`Preprocessor`] goes straight from the decoded YUV 4:2:0 frame to the model's input: the
//! three planes are scaled to the letterboxed size first (SIMD, `fast_image_resize`; chroma is
//! scaled up bilinearly on the way), then each channel of the model's input is computed from
//! them (exact BT.601 in floating point) straight into the caller's input tensor, in the model's
//! channel order and value range. Its buffers
//! are kept between frames, so steady work allocates nothing and never makes a full-size RGB
//! image.

use crate::decode::Frame;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image, images::ImageRef};
use image::RgbImage;

/// The letterbox padding, 114 of 255.
const PAD: f32 = 114.0;

/// Where the frame landed inside the model input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub source_width: u32,
    pub source_height: u32,
    /// Size of the scaled frame inside the input.
    pub scaled_width: u32,
    pub scaled_height: u32,
    /// Offset of the scaled frame inside the input (centred; odd padding goes right/bottom).
    pub pad_x: u32,
    pub pad_y: u32,
}

impl Letterbox {
    pub fn new(source_width: u32, source_height: u32, input_width: u32, input_height: u32) -> Self {
        let scale = (input_width as f64 / source_width as f64).min(input_height as f64 / source_height as f64);
        let scaled_width = ((source_width as f64 * scale).round() as u32).min(input_width).max(1);
        let scaled_height = ((source_height as f64 * scale).round() as u32).min(input_height).max(1);
        Self {
            source_width,
            source_height,
            scaled_width,
            scaled_height,
            pad_x: input_width.saturating_sub(scaled_width) / 2,
            pad_y: input_height.saturating_sub(scaled_height) / 2,
        }
    }

    /// Model-input pixel → frame pixel (not clamped).
    pub fn to_source(&self, x: f32, y: f32) -> (f32, f32) {
        let sx = self.source_width as f32 / self.scaled_width as f32;
        let sy = self.source_height as f32 / self.scaled_height as f32;
        ((x - self.pad_x as f32) * sx, (y - self.pad_y as f32) * sy)
    }
}

/// How a model wants its input: channel order and the value a full-intensity channel has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputStyle {
    pub bgr: bool,
    /// 1/255 for inputs in 0..1, 1 for 0..255.
    pub scale: f32,
}

impl InputStyle {
    /// RGB in 0..1, as Ultralytics exports expect.
    pub const ULTRALYTICS: Self = Self { bgr: false, scale: 1.0 / 255.0 };
}

/// Why a picture could not be letterboxed.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("a {width}x{height} plane holds {len} bytes, too few")]
    ShortPlane { width: u32, height: u32, len: usize },
    #[error("cannot scale to the model input: {0}")]
    Resize(#[from] fast_image_resize::ResizeError),
}

impl PreprocessError {
    fn short(width: u32, height: u32, data: &[u8]) -> Self {
        Self::ShortPlane { width, height, len: data.len() }
    }
}

/// Letterboxes frames into a model's `[1, 3, H, W]` input, reusing its buffers.
pub struct Preprocessor {
    input_width: u32,
    input_height: u32,
    style: InputStyle,
    resizer: Resizer,
    /// The scaled Y, U and V planes, kept for the next frame of the same size.
    planes: Option<[Image<'static>; 3]>,
}

impl Preprocessor {
    pub fn new(input_width: u32, input_height: u32, style: InputStyle) -> Self {
        Self { input_width, input_height, style, resizer: Resizer::new(), planes: None }
    }

    pub fn input_len(&self) -> usize {
        3 * self.input_width as usize * self.input_height as usize
    }

    /// Writes `frame`, letterboxed, into `out` (`input_len` values), each value through
    /// `convert` (to the model's element type).
    pub fn frame<T: Copy>(
        &mut self,
        frame: &Frame,
        out: &mut [T],
        convert: impl Fn(f32) -> T,
    ) -> Result<Letterbox, PreprocessError> {
        let (lb, geometry) =
            (Letterbox::new(frame.width, frame.height, self.input_width, self.input_height), self.geometry());
        let (sw, sh) = (lb.scaled_width, lb.scaled_height);
        // Every plane is scaled to the letterboxed size, chroma included: scaling chroma up
        // bilinearly here is what a full-size conversion followed by a resize would give.
        let fits = |p: &[Image<'static>; 3]| p.iter().all(|p| (p.width(), p.height()) == (sw, sh));
        if !self.planes.as_ref().is_some_and(fits) {
            self.planes = None;
        }
        let planes = self.planes.get_or_insert_with(|| [(); 3].map(|_| Image::new(sw, sh, PixelType::U8)));
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        let (fcw, fch) = (frame.width.div_ceil(2), frame.height.div_ceil(2));
        for (plane, (data, w, h)) in
            planes.iter_mut().zip([(&frame.y, frame.width, frame.height), (&frame.u, fcw, fch), (&frame.v, fcw, fch)])
        {
            let src = ImageRef::new(w, h, data, PixelType::U8).map_err(|_| PreprocessError::short(w, h, data))?;
            self.resizer.resize(&src, plane, &options)?;
        }
        let [y, u, v] = planes.each_ref().map(Image::buffer);
        let (c, scale, sw) = (Bt601::new(frame.full_range), self.style.scale, sw as usize);
        geometry.fill(&lb, out, &convert, |row, [r, g, b]| {
            // Rows of the scaled planes, sw * sh bytes each by construction; a short one is padding.
            let at = row * sw..(row + 1) * sw;
            let [y, u, v] = [y, u, v].map(|plane| plane.get(at.clone()).unwrap_or_default());
            for ((d, y), v) in r.iter_mut().zip(y).zip(v) {
                *d = convert(c.red(*y, *v) * scale);
            }
            for (d, (y, (u, v))) in g.iter_mut().zip(y.iter().zip(u.iter().zip(v))) {
                *d = convert(c.green(*y, *u, *v) * scale);
            }
            for ((d, y), u) in b.iter_mut().zip(y).zip(u) {
                *d = convert(c.blue(*y, *u) * scale);
            }
        });
        Ok(lb)
    }

    /// [`frame`](Self::frame) for an RGB image (photos, `fieldwatch detect`).
    pub fn rgb<T: Copy>(
        &mut self,
        rgb: &RgbImage,
        out: &mut [T],
        convert: impl Fn(f32) -> T,
    ) -> Result<Letterbox, PreprocessError> {
        let lb = Letterbox::new(rgb.width(), rgb.height(), self.input_width, self.input_height);
        let src = ImageRef::new(rgb.width(), rgb.height(), rgb.as_raw(), PixelType::U8x3)
            .map_err(|_| PreprocessError::short(rgb.width(), rgb.height(), rgb.as_raw()))?;
        let mut scaled = Image::new(lb.scaled_width, lb.scaled_height, PixelType::U8x3);
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        self.resizer.resize(&src, &mut scaled, &options)?;
        let (scaled, row_len, scale) = (scaled.buffer(), lb.scaled_width as usize * 3, self.style.scale);
        self.geometry().fill(&lb, out, &convert, |row, channels| {
            let pixels = scaled.get(row * row_len..(row + 1) * row_len).unwrap_or_default();
            for (c, dst) in channels.into_iter().enumerate() {
                for (d, value) in dst.iter_mut().zip(pixels.iter().skip(c).step_by(3)) {
                    *d = convert(*value as f32 * scale);
                }
            }
        });
        Ok(lb)
    }

    fn geometry(&self) -> Geometry {
        Geometry { input_width: self.input_width, input_height: self.input_height, style: self.style }
    }
}

/// The model input's size and style: what filling it needs, apart from the scaled planes.
struct Geometry {
    input_width: u32,
    input_height: u32,
    style: InputStyle,
}

impl Geometry {
    /// Pads `out` and has `write_row(y, [r, g, b])` write row `y` of the scaled image into the
    /// rows of the red, green and blue planes where it lands (in the model's channel order).
    fn fill<T: Copy>(
        &self,
        lb: &Letterbox,
        out: &mut [T],
        convert: impl Fn(f32) -> T,
        mut write_row: impl FnMut(usize, [&mut [T]; 3]),
    ) {
        let (w, plane) = (self.input_width as usize, self.input_width as usize * self.input_height as usize);
        debug_assert_eq!(out.len(), 3 * plane, "the input tensor is [1, 3, H, W]");
        out.fill(convert(PAD * self.style.scale));
        let (first, rest) = out.split_at_mut(plane.min(out.len()));
        let (second, third) = rest.split_at_mut(plane.min(rest.len()));
        let sw = lb.scaled_width as usize;
        for y in 0..lb.scaled_height as usize {
            // The letterbox lies within the input by construction (Letterbox::new).
            let start = (y + lb.pad_y as usize) * w + lb.pad_x as usize;
            let at = start..start + sw;
            let rows = (first.get_mut(at.clone()), second.get_mut(at.clone()), third.get_mut(at));
            let (Some(p0), Some(p1), Some(p2)) = rows else { break };
            write_row(y, if self.style.bgr { [p2, p1, p0] } else { [p0, p1, p2] });
        }
    }
}

/// BT.601 YUV to RGB in floating point, as SD and most IP cameras signal it: exact, so the
/// model sees what a full-size conversion would give (integer converters round by up to a level).
struct Bt601 {
    luma: f32,
    chroma: f32,
    black: f32,
}

impl Bt601 {
    fn new(full_range: bool) -> Self {
        match full_range {
            true => Self { luma: 1.0, chroma: 1.0, black: 0.0 },
            false => Self { luma: 255.0 / 219.0, chroma: 255.0 / 224.0, black: 16.0 },
        }
    }

    fn luma(&self, y: u8) -> f32 {
        (y as f32 - self.black) * self.luma
    }

    fn chroma(&self, c: u8) -> f32 {
        (c as f32 - 128.0) * self.chroma
    }

    fn red(&self, y: u8, v: u8) -> f32 {
        byte_range(self.luma(y) + 1.402 * self.chroma(v))
    }

    fn green(&self, y: u8, u: u8, v: u8) -> f32 {
        byte_range(self.luma(y) - 0.344_136 * self.chroma(u) - 0.714_136 * self.chroma(v))
    }

    fn blue(&self, y: u8, u: u8) -> f32 {
        byte_range(self.luma(y) + 1.772 * self.chroma(u))
    }
}

/// `v` limited to 0..=255. Not `clamp`: its checks keep the conversion loops from being
/// vectorised (3.3 ms instead of 2.1 ms per 1080p frame).
#[allow(clippy::manual_clamp)]
fn byte_range(v: f32) -> f32 {
    v.max(0.0).min(255.0)
}

/// The `[1, 3, H, W]` RGB 0..1 tensor for `rgb`, freshly allocated (tests and benchmarks).
pub fn letterbox(
    rgb: &RgbImage,
    input_width: u32,
    input_height: u32,
) -> Result<(Vec<f32>, Letterbox), PreprocessError> {
    let mut prep = Preprocessor::new(input_width, input_height, InputStyle::ULTRALYTICS);
    let mut tensor = vec![0.0; prep.input_len()];
    let lb = prep.rgb(rgb, &mut tensor, |v| v)?;
    Ok((tensor, lb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_frames_are_padded_top_and_bottom_and_map_back() {
        let lb = Letterbox::new(1920, 1080, 640, 640);
        assert_eq!((lb.scaled_width, lb.scaled_height, lb.pad_x, lb.pad_y), (640, 360, 0, 140));
        assert_eq!(lb.to_source(320.0, 320.0), (960.0, 540.0));
        assert_eq!(lb.to_source(0.0, 140.0), (0.0, 0.0));
    }

    #[test]
    fn pixels_land_inside_the_box_and_padding_is_grey() {
        let mut rgb = RgbImage::new(64, 32);
        rgb.put_pixel(63, 31, image::Rgb([255, 0, 0]));
        let (t, lb) = letterbox(&rgb, 32, 32).unwrap();
        assert_eq!((lb.pad_x, lb.pad_y, lb.scaled_width, lb.scaled_height), (0, 8, 32, 16));
        assert!((t[0] - PAD / 255.0).abs() < 1e-6, "top padding");
        assert!(t[8 * 32] < 0.01, "first scaled row is black");
        assert!(t[23 * 32 + 31] > 0.1, "the red corner pixel is bottom-right of the scaled area");
    }

    /// A 64x32 frame: mid-grey, with the bottom-right 16x16 pure red (BT.601 limited range).
    fn red_cornered_frame() -> Frame {
        let (w, h) = (64usize, 32usize);
        let mut y = vec![126u8; w * h];
        let (mut u, mut v) = (vec![128u8; w * h / 4], vec![128u8; w * h / 4]);
        for row in 16..32 {
            for col in 48..64 {
                y[row * w + col] = 81;
                if row % 2 == 0 && col % 2 == 0 {
                    u[row / 2 * w / 2 + col / 2] = 90;
                    v[row / 2 * w / 2 + col / 2] = 240;
                }
            }
        }
        Frame { width: 64, height: 32, y, u, v, full_range: false, pts_secs: 0.0, at: chrono::Utc::now() }
    }

    #[test]
    fn frames_go_from_yuv_to_the_tensor_in_the_models_order_and_range() {
        let frame = red_cornered_frame();
        let mut prep = Preprocessor::new(32, 32, InputStyle::ULTRALYTICS);
        let mut t = vec![0f32; prep.input_len()];
        let lb = prep.frame(&frame, &mut t, |v| v).unwrap();
        assert_eq!((lb.pad_y, lb.scaled_height), (8, 16));
        let at = |t: &[f32], c: usize, x: usize, y: usize| t[c * 32 * 32 + y * 32 + x];
        assert!((at(&t, 0, 0, 0) - 114.0 / 255.0).abs() < 1e-6, "padding");
        let (r, g, b) = (at(&t, 0, 30, 21), at(&t, 1, 30, 21), at(&t, 2, 30, 21));
        assert!(r > 0.9 && g < 0.1 && b < 0.1, "red corner: {r} {g} {b}");
        let grey = at(&t, 0, 4, 10);
        assert!((grey - 0.5).abs() < 0.05, "grey stays grey: {grey}");

        // BGR and 0..255: the same pixel, channels swapped, values in bytes.
        let mut prep = Preprocessor::new(32, 32, InputStyle { bgr: true, scale: 1.0 });
        let mut t = vec![0f32; prep.input_len()];
        prep.frame(&frame, &mut t, |v| v).unwrap();
        assert!(at(&t, 2, 30, 21) > 230.0 && at(&t, 0, 30, 21) < 25.0, "red is the last channel, in bytes");
        assert_eq!(at(&t, 0, 0, 0), 114.0);
    }
}
