//! Letterboxing: scale the frame to fit the model input without distortion, pad the rest grey
//! (114, as YOLOv8 was trained), and remember how to map model pixels back to frame pixels.

use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image, images::ImageRef};
use image::RgbImage;

const PAD: f32 = 114.0 / 255.0;

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
        let scaled_width = ((source_width as f64 * scale).round() as u32).clamp(1, input_width);
        let scaled_height = ((source_height as f64 * scale).round() as u32).clamp(1, input_height);
        Self {
            source_width,
            source_height,
            scaled_width,
            scaled_height,
            pad_x: (input_width - scaled_width) / 2,
            pad_y: (input_height - scaled_height) / 2,
        }
    }

    /// Model-input pixel → frame pixel (not clamped).
    pub fn to_source(&self, x: f32, y: f32) -> (f32, f32) {
        let sx = self.source_width as f32 / self.scaled_width as f32;
        let sy = self.source_height as f32 / self.scaled_height as f32;
        ((x - self.pad_x as f32) * sx, (y - self.pad_y as f32) * sy)
    }
}

/// Builds the `[1, 3, H, W]` float tensor (RGB, 0..1) for `rgb`.
pub fn letterbox(rgb: &RgbImage, input_width: u32, input_height: u32) -> (Vec<f32>, Letterbox) {
    let lb = Letterbox::new(rgb.width(), rgb.height(), input_width, input_height);
    let src = ImageRef::new(rgb.width(), rgb.height(), rgb.as_raw(), PixelType::U8x3)
        .expect("RgbImage buffers are width*height*3");
    let mut scaled = Image::new(lb.scaled_width, lb.scaled_height, PixelType::U8x3);
    Resizer::new()
        .resize(&src, &mut scaled, &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)))
        .expect("source and destination are both U8x3");

    let (w, h) = (input_width as usize, input_height as usize);
    let plane = w * h;
    let mut tensor = vec![PAD; 3 * plane];
    let pixels = scaled.buffer();
    for y in 0..lb.scaled_height as usize {
        let row = (y + lb.pad_y as usize) * w + lb.pad_x as usize;
        let src_row = &pixels[y * lb.scaled_width as usize * 3..(y + 1) * lb.scaled_width as usize * 3];
        for (x, px) in src_row.chunks_exact(3).enumerate() {
            for c in 0..3 {
                tensor[c * plane + row + x] = px[c] as f32 / 255.0;
            }
        }
    }
    (tensor, lb)
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
        let (t, lb) = letterbox(&rgb, 32, 32);
        assert_eq!((lb.pad_x, lb.pad_y, lb.scaled_width, lb.scaled_height), (0, 8, 32, 16));
        assert!((t[0] - PAD).abs() < 1e-6, "top padding");
        assert!(t[8 * 32] < 0.01, "first scaled row is black");
        assert!(t[23 * 32 + 31] > 0.1, "the red corner pixel is bottom-right of the scaled area");
    }
}
