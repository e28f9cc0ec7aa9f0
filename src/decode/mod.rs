//! Decoding: H.264 and H.265 access units → YUV 4:2:0 frames with libavcodec, sampled at the
//! camera's `detect_fps` of stream time. libavcodec follows parameter-set and resolution changes
//! mid-stream by itself; every frame carries its own size.
//!
//! Only sampled frames are copied out and offered to the detector, and by default only what
//! they need is decoded: a sample needs its references back to the last keyframe, but not the
//! frames after it up to the next keyframe, nor any non-reference frame before it. Decoding is
//! CPU work, so each camera gets a thread of its own, between two edges (see `pipeline`). Each
//! frame carries its stream time: the connection's anchor plus its timestamp, never a clock
//! reading.

// What comes from a camera, a clip or a model is never cut short by a cast unseen.
#![cfg_attr(not(test), deny(clippy::cast_possible_truncation))]

mod sampler;

pub use sampler::Sampler;

use crate::config::DecodeConfig;
use crate::pipeline::{EdgeReceiver, EdgeSender};
use crate::source::{Connection, EncodedFrame, VideoCodec};
use crate::telemetry::{CameraCounters, Throttle};
use chrono::{DateTime, Utc};
use ffmpeg_next as ff;
use image::RgbImage;
use sampler::KeyframeClock;
use std::sync::{Arc, Once};
use std::time::Instant;
use tracing::warn;

/// Decoding trouble (rejected units, odd pixel formats) is logged at most this often per camera.
const TROUBLE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

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
    /// Presentation time on the connection's stream clock, in seconds.
    pub pts_secs: f64,
    /// Stream time: the connection's wall-clock anchor plus this frame's timestamp.
    pub at: DateTime<Utc>,
}

impl Frame {
    /// Encodes an RGB image as a camera sends it (YUV 4:2:0, BT.601, limited range): photos
    /// go through the same path as decoded frames (tests, benchmarks, reference comparisons).
    #[allow(
        clippy::expect_used,
        reason = "the planes are allocated for the image's own size, which RgbImage guarantees"
    )]
    pub fn from_rgb(rgb: &RgbImage, at: DateTime<Utc>) -> Frame {
        use yuvutils_rs::{BufferStoreMut, YuvChromaSubsampling, YuvPlanarImageMut};
        let (width, height) = rgb.dimensions();
        let mut planes = YuvPlanarImageMut::alloc(width, height, YuvChromaSubsampling::Yuv420);
        yuvutils_rs::rgb_to_yuv420(
            &mut planes,
            rgb.as_raw(),
            width * 3,
            yuvutils_rs::YuvRange::Limited,
            yuvutils_rs::YuvStandardMatrix::Bt601,
            yuvutils_rs::YuvConversionMode::Balanced,
        )
        .expect("planes allocated for this size");
        let owned = |b: BufferStoreMut<'_, u8>| match b {
            BufferStoreMut::Owned(v) => v,
            BufferStoreMut::Borrowed(s) => s.to_vec(),
        };
        Frame {
            width,
            height,
            y: owned(planes.y_plane),
            u: owned(planes.u_plane),
            v: owned(planes.v_plane),
            full_range: false,
            pts_secs: 0.0,
            at,
        }
    }

    /// The luma plane, for the rules' picture of the scene.
    pub fn luma(&self) -> crate::scene::Luma<'_> {
        crate::scene::Luma { width: self.width, height: self.height, data: &self.y, full_range: self.full_range }
    }

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
        let mut rgb = RgbImage::new(self.width, self.height);
        let converted =
            yuvutils_rs::yuv420_to_rgb(&image, &mut rgb, self.width * 3, range, yuvutils_rs::YuvStandardMatrix::Bt601);
        // The decoder makes each plane the size it says; a frame made otherwise shows black.
        if let Err(error) = converted {
            tracing::warn!(%error, width = self.width, height = self.height, "a frame's planes do not match its size");
        }
        rgb
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("camera {camera}: cannot open the {codec:?} decoder: {source}")]
    Open { camera: String, codec: VideoCodec, source: ff::Error },
    #[error("camera {camera}: unsupported pixel format {format:?} (expected YUV 4:2:0)")]
    PixelFormat { camera: String, format: ff::format::Pixel },
}

/// Initialises libavformat/libavcodec once, quietly (errors surface as our own).
pub fn init_ffmpeg() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = ff::init();
        ff::util::log::set_level(ff::util::log::Level::Fatal);
    });
}

/// Decodes `camera`'s access units until `input` ends, sending sampled frames to `output`.
///
/// What reaches the decoder depends on `mode`:
/// - [`DecodeConfig::Sampled`] leaves out what no sample needs. Non-reference frames (most
///   B-frames) before the next slot are skipped by libavcodec. After a sample, if the next
///   keyframe is expected no later than the next slot, nothing is decoded until it: with a GOP
///   of one slot only keyframes are decoded, with two slots half of the frames.
/// - [`DecodeConfig::Keyframes`]: only random-access frames, each one decoded on its own (the
///   decoder is drained after it, so no frame waits for the next GOP).
/// - [`DecodeConfig::All`]: every frame.
pub fn run<T: From<Arc<Frame>>>(
    camera: &str,
    detect_fps: f64,
    mode: DecodeConfig,
    input: EdgeReceiver<EncodedFrame>,
    output: EdgeSender<T>,
    counters: &CameraCounters,
) {
    crate::testing::maybe_panic("decode", camera);
    crate::testing::maybe_block("decode", camera);
    // The decoder of the current connection; `None` inside while it could not be opened.
    let mut decoder: Option<(u64, Option<ff::decoder::Video>)> = None;
    let mut sampler = Sampler::new(detect_fps);
    let mut keyframes = KeyframeClock::default();
    let mut decoded = ff::frame::Video::empty();
    // Nothing is decoded until the next keyframe: after the decoder rejected an access unit
    // (it starts afresh there), or while no sample needs the frames before it.
    let mut skip_to_keyframe = false;
    let mut trouble = Throttle::new(TROUBLE_LOG_EVERY);
    loop {
        // Idle while waiting for the camera: a dead camera is not a hung decoder.
        counters.decoding.done();
        let Some(au) = input.recv() else { return };
        counters.decoding.start();
        let mut started = Instant::now();
        if decoder.as_ref().map(|(id, _)| *id) != Some(au.connection.id) || au.new_parameters {
            // Logged once per connection: a decoder that cannot open does not retry per frame.
            let opened = open(camera, &au.connection)
                .map_err(
                    |error| warn!(%error, connection = au.connection.id, "decoder unavailable for this connection"),
                )
                .ok();
            decoder = Some((au.connection.id, opened));
            sampler = Sampler::new(detect_fps);
            keyframes = KeyframeClock::default();
            skip_to_keyframe = false;
        }
        let Some((_, Some(dec))) = decoder.as_mut() else { continue };
        if au.keyframe {
            keyframes.keyframe(au.pts_secs);
            skip_to_keyframe = false;
        } else if mode == DecodeConfig::Keyframes || skip_to_keyframe {
            continue;
        } else if mode == DecodeConfig::Sampled
            && keyframes.next().is_some_and(|next| next > au.pts_secs && sampler.can_wait_for(next))
        {
            dec.flush(); // frames held for reordering are not needed either
            skip_to_keyframe = true;
            continue;
        }
        if mode == DecodeConfig::Sampled {
            let needed = sampler.would_accept(au.pts_secs);
            dec.skip_frame(if needed { ff::Discard::Default } else { ff::Discard::NonReference });
        }
        counters.units_decoded.inc();
        if au.keyframe {
            counters.keyframes_decoded.inc();
        }
        if let Err(error) = dec.send_packet(&packet(&au)) {
            counters.decode_errors.inc();
            skip_to_keyframe = true;
            if let Some(held) = trouble.ready(Instant::now()) {
                warn!(%error, earlier_not_logged = held, "decoder rejected an access unit; skipping to the next keyframe");
            }
            continue;
        }
        if mode == DecodeConfig::Keyframes {
            // Out with this frame now, not when the next keyframe pushes it out.
            let _ = dec.send_eof();
        }
        while dec.receive_frame(&mut decoded).is_ok() {
            let pts_secs = decoded.pts().map(|p| p as f64 / TIME_BASE).unwrap_or(au.pts_secs);
            if !sampler.accept(pts_secs) {
                continue;
            }
            let Some(at) = au.connection.anchor.time_of(pts_secs) else {
                // The source placed this unit in time; a decoder's own timestamp may not fit.
                counters.decode_errors.inc();
                if let Some(held) = trouble.ready(Instant::now()) {
                    warn!(pts_secs, earlier_not_logged = held, "decoded frame with an impossible timestamp skipped");
                }
                continue;
            };
            match copy_frame(camera, &decoded, pts_secs, at) {
                Ok(frame) => {
                    counters.frames_sampled.inc();
                    counters.frame_width.set(frame.width as u64);
                    counters.frame_height.set(frame.height as u64);
                    // Time waiting on a full edge is not decoding.
                    counters.decode_busy.add_since(started);
                    if output.send(Arc::new(frame).into()).is_err() {
                        return;
                    }
                    started = Instant::now();
                }
                Err(error) => {
                    counters.decode_errors.inc();
                    if let Some(held) = trouble.ready(Instant::now()) {
                        warn!(%error, earlier_not_logged = held, "frame skipped");
                    }
                }
            }
        }
        if mode == DecodeConfig::Keyframes {
            dec.flush(); // ready for the next keyframe after the end-of-stream above
        }
        counters.decode_busy.add_since(started);
    }
}

/// Decodes `units` (from a keyframe on) until one picture comes out; returns it with the
/// stream's profile as libavcodec names it. For `fieldwatch probe`.
pub fn first_picture(units: &[EncodedFrame]) -> Result<(Frame, String), String> {
    let connection = &units.first().ok_or("no access units")?.connection;
    let mut dec = open("probe", connection).map_err(|e| e.to_string())?;
    let mut decoded = ff::frame::Video::empty();
    let mut picture = None;
    for (i, au) in units.iter().enumerate() {
        let _ = dec.send_packet(&packet(au));
        if i + 1 == units.len() {
            let _ = dec.send_eof();
        }
        if dec.receive_frame(&mut decoded).is_ok() {
            let pts = decoded.pts().map_or(au.pts_secs, |p| p as f64 / TIME_BASE);
            let at = connection.anchor.time_of(pts).ok_or(format!("the camera's timestamp {pts} s is impossible"))?;
            picture = Some(copy_frame("probe", &decoded, pts, at).map_err(|e| e.to_string())?);
            break;
        }
    }
    let picture = picture.ok_or("no picture could be decoded from what the camera sent")?;
    // libavcodec's names, e.g. `H264(High)` → `High`.
    let profile = format!("{:?}", dec.profile());
    let profile = profile.split_once('(').map_or(profile.as_str(), |(_, p)| p.trim_end_matches(')')).to_string();
    Ok((picture, profile))
}

/// An access unit as libavcodec takes it, timestamped in the RTP time base.
fn packet(au: &EncodedFrame) -> ff::Packet {
    let mut packet = ff::Packet::copy(&au.data);
    #[allow(
        clippy::cast_possible_truncation,
        reason = "a float saturates into an i64; times beyond it are dropped at the source"
    )]
    let pts = (au.pts_secs * TIME_BASE).round() as i64;
    packet.set_pts(Some(pts));
    packet
}

/// A decoder for `connection`'s stream (`camera` names it in errors).
pub(crate) fn open(camera: &str, connection: &Connection) -> Result<ff::decoder::Video, DecodeError> {
    init_ffmpeg();
    let codec = connection.codec;
    let id = match codec {
        VideoCodec::H264 => ff::codec::Id::H264,
        VideoCodec::H265 => ff::codec::Id::HEVC,
    };
    let open_err = |source| DecodeError::Open { camera: camera.to_string(), codec, source };
    let found = ff::decoder::find(id).ok_or(open_err(ff::Error::DecoderNotFound))?;
    let mut context = ff::codec::Context::new_with_codec(found);
    if !connection.extradata.is_empty() {
        set_extradata(&mut context, &connection.extradata).map_err(open_err)?;
    }
    context.decoder().video().map_err(open_err)
}

/// Hands out-of-band parameter sets (avcC) to the decoder, which then reads length-prefixed
/// access units as MP4 and MKV store them.
fn set_extradata(context: &mut ff::codec::Context, data: &[u8]) -> Result<(), ff::Error> {
    let padding = ff::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
    // Parameter sets of gigabytes are not parameter sets.
    let size = i32::try_from(data.len()).map_err(|_| ff::Error::InvalidData)?;
    // SAFETY: the buffer is allocated with av_mallocz (zeroed padding, as libavcodec requires)
    // and owned by the codec context from here on, which frees it with the context.
    unsafe {
        let buffer = ff::ffi::av_mallocz(data.len() + padding) as *mut u8;
        if buffer.is_null() {
            return Err(ff::Error::Other { errno: ff::error::ENOMEM });
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), buffer, data.len());
        let ctx = &mut *context.as_mut_ptr();
        ctx.extradata = buffer;
        ctx.extradata_size = size;
    }
    Ok(())
}

fn copy_frame(camera_id: &str, f: &ff::frame::Video, pts_secs: f64, at: DateTime<Utc>) -> Result<Frame, DecodeError> {
    use ff::format::Pixel;
    let full_range = match f.format() {
        Pixel::YUV420P => f.color_range() == ff::color::Range::JPEG,
        Pixel::YUVJ420P => true,
        format => return Err(DecodeError::PixelFormat { camera: camera_id.to_string(), format }),
    };
    let (w, h) = (f.width() as usize, f.height() as usize);
    // libavcodec gives each plane `stride` bytes a row, `ph` rows: a row missing reads black.
    let plane = |i: usize, pw: usize, ph: usize| {
        let (data, stride) = (f.data(i), f.stride(i));
        let mut out = Vec::with_capacity(pw * ph);
        for row in 0..ph {
            match data.get(row * stride..row * stride + pw) {
                Some(row) => out.extend_from_slice(row),
                None => out.resize(out.len() + pw, 0),
            }
        }
        out
    };
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    Ok(Frame {
        width: f.width(),
        height: f.height(),
        y: plane(0, w, h),
        u: plane(1, cw, ch),
        v: plane(2, cw, ch),
        full_range,
        pts_secs,
        at,
    })
}
