//! Decoding: H.264 access units → YUV 4:2:0 frames with libavcodec, sampled at the camera's
//! `detect_fps`.
//!
//! Every access unit must be decoded (P-frames need their references), but only sampled frames
//! are copied out and offered to the detector. Decoding is CPU work, so each camera gets a
//! plain thread fed by the source's channel (see `pipeline`).

mod sampler;

pub use sampler::Sampler;

use crate::pipeline::FrameQueue;
use crate::source::{EncodedFrame, VideoCodec};
use crate::telemetry::CameraCounters;
use chrono::{DateTime, Utc};
use ffmpeg_next as ff;
use image::RgbImage;
use std::sync::{Arc, Once};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// RTP's 90 kHz clock: packet timestamps carry seconds in this time base.
const TIME_BASE: f64 = 90_000.0;

/// A decoded frame in planar YUV 4:2:0, planes packed without padding.
#[derive(Debug, Clone)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
    /// JPEG-style full range (0..255) rather than TV range (16..235).
    pub full_range: bool,
    /// Seconds since the start of the connection.
    pub pts_secs: f64,
    pub captured_at: DateTime<Utc>,
}

impl Frame {
    fn chroma_width(&self) -> u32 {
        self.width.div_ceil(2)
    }

    /// Converts to packed RGB (BT.601, as SD and most IP cameras signal).
    pub fn to_rgb(&self) -> RgbImage {
        let image = yuvutils_rs::YuvPlanarImage {
            y_plane: &self.y,
            y_stride: self.width,
            u_plane: &self.u,
            u_stride: self.chroma_width(),
            v_plane: &self.v,
            v_stride: self.chroma_width(),
            width: self.width,
            height: self.height,
        };
        let range = if self.full_range { yuvutils_rs::YuvRange::Full } else { yuvutils_rs::YuvRange::Limited };
        let mut rgb = vec![0u8; self.width as usize * self.height as usize * 3];
        yuvutils_rs::yuv420_to_rgb(&image, &mut rgb, self.width * 3, range, yuvutils_rs::YuvStandardMatrix::Bt601)
            .expect("plane sizes are computed from width and height");
        RgbImage::from_raw(self.width, self.height, rgb).expect("buffer sized width*height*3")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("camera {camera}: cannot open the {codec:?} decoder: {source}")]
    Open { camera: String, codec: VideoCodec, source: ff::Error },
    #[error("camera {camera}: unsupported pixel format {format:?} (expected YUV 4:2:0)")]
    PixelFormat { camera: String, format: ff::format::Pixel },
}

/// Decodes `camera`'s access units until the channel closes, offering sampled frames to `queue`.
pub fn run(
    camera_index: usize,
    camera_id: &str,
    detect_fps: f64,
    mut rx: mpsc::Receiver<EncodedFrame>,
    queue: &FrameQueue,
    counters: &CameraCounters,
) {
    let mut decoder: Option<(u64, ff::decoder::Video)> = None;
    let mut sampler = Sampler::new(detect_fps);
    let mut decoded = ff::frame::Video::empty();
    while let Some(au) = rx.blocking_recv() {
        if decoder.as_ref().map(|(c, _)| *c) != Some(au.connection) {
            match open(camera_id, au.codec) {
                Ok(d) => decoder = Some((au.connection, d)),
                Err(error) => {
                    warn!(%error, "decoder unavailable");
                    decoder = None;
                    continue;
                }
            }
            sampler = Sampler::new(detect_fps);
        }
        let Some((_, dec)) = decoder.as_mut() else { continue };
        let mut packet = ff::Packet::copy(&au.data);
        packet.set_pts(Some((au.pts_secs * TIME_BASE).round() as i64));
        if let Err(error) = dec.send_packet(&packet) {
            counters.decode_errors.inc();
            debug!(%error, "decoder rejected an access unit");
            continue;
        }
        while dec.receive_frame(&mut decoded).is_ok() {
            let pts_secs = decoded.pts().map(|p| p as f64 / TIME_BASE).unwrap_or(au.pts_secs);
            if !sampler.accept(pts_secs) {
                continue;
            }
            match copy_frame(camera_id, &decoded, pts_secs) {
                Ok(frame) => {
                    counters.frames_sampled.inc();
                    if queue.put(camera_index, Arc::new(frame)).is_err() {
                        return;
                    }
                }
                Err(error) => {
                    counters.decode_errors.inc();
                    warn!(%error, "frame skipped");
                }
            }
        }
    }
}

fn open(camera_id: &str, codec: VideoCodec) -> Result<ff::decoder::Video, DecodeError> {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = ff::init();
        ff::util::log::set_level(ff::util::log::Level::Fatal);
    });
    let id = match codec {
        VideoCodec::H264 => ff::codec::Id::H264,
    };
    let open_err = |source| DecodeError::Open { camera: camera_id.to_string(), codec, source };
    let found = ff::decoder::find(id).ok_or(open_err(ff::Error::DecoderNotFound))?;
    ff::codec::Context::new_with_codec(found).decoder().video().map_err(open_err)
}

fn copy_frame(camera_id: &str, f: &ff::frame::Video, pts_secs: f64) -> Result<Frame, DecodeError> {
    use ff::format::Pixel;
    let full_range = match f.format() {
        Pixel::YUV420P => f.color_range() == ff::color::Range::JPEG,
        Pixel::YUVJ420P => true,
        format => return Err(DecodeError::PixelFormat { camera: camera_id.to_string(), format }),
    };
    let (w, h) = (f.width() as usize, f.height() as usize);
    let plane = |i: usize, pw: usize, ph: usize| {
        let (data, stride) = (f.data(i), f.stride(i));
        let mut out = Vec::with_capacity(pw * ph);
        for row in 0..ph {
            out.extend_from_slice(&data[row * stride..row * stride + pw]);
        }
        out
    };
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    Ok(Frame {
        width: w as u32,
        height: h as u32,
        y: plane(0, w, h),
        u: plane(1, cw, ch),
        v: plane(2, cw, ch),
        full_range,
        pts_secs,
        captured_at: Utc::now(),
    })
}
