//! Evidence clips: an MP4 of what happened around an incident's opening, made from the camera's
//! own encoded packets, so it is exactly what the camera sent (no re-encoding, no CPU spent on
//! pictures, and the inspector's clip is the camera's record).
//!
//! - [`PacketRing`]: each camera's source keeps its last `max_secs` of packets (back to a
//!   keyframe) in memory: about `max_secs` x the stream's bitrate, and never more than
//!   [`RING_MAX_BYTES`].
//! - [`cut`] takes the packets of a span, from the last keyframe at or before its start, and
//!   [`write_mp4`] remuxes them with libavformat.
//! - [`ClipStore`] keeps the clips in `{state_dir}/evidence`, within a total size and an age
//!   (oldest dropped first, counted).
//!
//! A camera with privacy masks gets no clip unless `evidence.reencode` is set: then
//! [`write_masked_mp4`] decodes the span, pixelates the masked areas of every picture and encodes
//! it again with libx264 (CPU: see the evidence benchmark).

use crate::source::{Connection, EncodedFrame, VideoCodec};
use chrono::{DateTime, TimeDelta, Utc};
use ffmpeg_next as ff;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The most one camera's ring holds, whatever its bitrate and window (a 30 s window of a
/// 8 Mbit/s stream).
pub const RING_MAX_BYTES: usize = 32 << 20;

/// One access unit as the source received it, placed in wall time.
#[derive(Debug, Clone)]
pub struct Packet {
    pub data: Arc<[u8]>,
    pub pts_secs: f64,
    pub at: DateTime<Utc>,
    pub keyframe: bool,
    pub connection: Arc<Connection>,
}

/// A camera's recent packets, from a keyframe on.
#[derive(Debug)]
pub struct PacketRing {
    window: TimeDelta,
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    packets: VecDeque<Packet>,
    bytes: usize,
    /// The newest time the camera's rules have seen: nothing newer than `window` before it is
    /// dropped, however far the source runs ahead (a replay reads its file faster than it is
    /// detected).
    consumed: Option<DateTime<Utc>>,
}

impl PacketRing {
    /// A ring keeping `window` of video back from its newest packet.
    pub fn new(window: Duration) -> Self {
        Self { window: TimeDelta::from_std(window).unwrap_or(TimeDelta::MAX), inner: Mutex::default() }
    }

    /// Keeps a copy of `frame` (at wall time `at`). A new connection starts the ring afresh:
    /// its packets do not continue the last one's.
    pub fn push(&self, frame: &EncodedFrame, at: DateTime<Utc>) {
        let Ok(mut ring) = self.inner.lock() else { return };
        if ring.packets.back().is_some_and(|p| p.connection.id != frame.connection.id) {
            *ring = Ring { consumed: ring.consumed, ..Ring::default() };
        }
        if ring.packets.is_empty() && !frame.keyframe {
            return;
        }
        ring.bytes += frame.data.len();
        ring.packets.push_back(Packet {
            data: frame.data.as_slice().into(),
            pts_secs: frame.pts_secs,
            at,
            keyframe: frame.keyframe,
            connection: frame.connection.clone(),
        });
        // Whole keyframe intervals go from the front while the next one still starts early
        // enough (before what the rules have seen, less the window), then while over size.
        if let Some(consumed) = ring.consumed {
            let cutoff = at.min(consumed) - self.window;
            while ring.second_keyframe_at().is_some_and(|next| next <= cutoff) {
                ring.drop_oldest_interval();
            }
        }
        while ring.bytes > RING_MAX_BYTES && ring.drop_oldest_interval() {}
    }

    /// The camera's rules have seen the stream up to `at`.
    pub fn consumed(&self, at: DateTime<Utc>) {
        if let Ok(mut ring) = self.inner.lock() {
            ring.consumed = Some(at);
        }
    }

    /// The packets of `from..=to`, starting at the last keyframe at or before `from` (or the
    /// oldest one kept). Empty when nothing of that span is kept.
    pub fn cut(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Packet> {
        let Ok(ring) = self.inner.lock() else { return Vec::new() };
        cut(ring.packets.iter(), from, to)
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.inner.lock().map(|r| r.bytes).unwrap_or(0)
    }
}

impl Ring {
    /// Where the second keyframe interval starts: the oldest packet kept once the first goes.
    fn second_keyframe(&self) -> Option<usize> {
        self.packets.iter().skip(1).position(|p| p.keyframe).map(|i| i + 1)
    }

    fn second_keyframe_at(&self) -> Option<DateTime<Utc>> {
        self.second_keyframe().and_then(|i| self.packets.get(i)).map(|p| p.at)
    }

    /// Drops the oldest keyframe interval, unless it is the only one; whether it did.
    fn drop_oldest_interval(&mut self) -> bool {
        let Some(next) = self.second_keyframe() else { return false };
        let gone: usize = self.packets.drain(..next).map(|p| p.data.len()).sum();
        self.bytes -= gone;
        true
    }
}

/// See [`PacketRing::cut`].
fn cut<'a>(packets: impl Iterator<Item = &'a Packet>, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Packet> {
    let mut out: Vec<Packet> = Vec::new();
    for p in packets.take_while(|p| p.at <= to) {
        if p.keyframe && p.at <= from {
            out.clear();
        }
        if p.keyframe || !out.is_empty() {
            out.push(p.clone());
        }
    }
    out
}

/// A clip written: what a report says about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    pub bytes: u64,
    pub sha256: String,
    pub start: DateTime<Utc>,
    pub duration_secs: f64,
}

/// Ticks per second of the clips' timestamps (RTP's video clock).
const TICKS: i32 = 90_000;

/// The packets' presentation times in [`TICKS`] from the first one's (a clip's offsets are
/// minutes at most).
fn presentation_ticks(packets: &[Packet]) -> Vec<i64> {
    let first = packets.first().map_or(0.0, |p| p.pts_secs);
    #[allow(clippy::cast_possible_truncation, reason = "a clip's offsets are minutes at most")]
    packets.iter().map(|p| ((p.pts_secs - first) * f64::from(TICKS)).round() as i64).collect()
}

/// The file written beside `path` (`.mp4.part`), renamed to it once complete.
fn part_of(path: &Path) -> PathBuf {
    path.with_extension("mp4.part")
}

/// Finishes a clip written to [`part_of`] `path`: an error removes the part; a complete one is
/// hashed and renamed. `start` is its first frame's time, `span` its length in [`TICKS`].
fn finish_clip(path: &Path, written: Result<(), String>, start: DateTime<Utc>, span: i64) -> Result<Clip, String> {
    let part = part_of(path);
    if let Err(error) = written {
        let _ = std::fs::remove_file(&part);
        return Err(format!("writing {}: {error}", part.display()));
    }
    let bytes = std::fs::read(&part).map_err(|e| format!("reading back {}: {e}", part.display()))?;
    std::fs::rename(&part, path).map_err(|e| format!("renaming {}: {e}", part.display()))?;
    Ok(Clip {
        bytes: bytes.len() as u64,
        sha256: hex(&Sha256::digest(&bytes)),
        start,
        duration_secs: span as f64 / f64::from(TICKS),
    })
}

/// Remuxes `packets` (from a keyframe, one connection) into an MP4 at `path` (written beside
/// it, then renamed). `width` and `height` are the decoded frames'.
pub fn write_mp4(path: &Path, packets: &[Packet], width: u32, height: u32) -> Result<Clip, String> {
    let Some(first) = packets.first() else { return Err("no video to cut".into()) };
    crate::decode::init_ffmpeg();
    let pts = presentation_ticks(packets);
    let (dts, interval) = decode_times(&pts);
    let part = part_of(path);
    let written = (|| -> Result<(), ff::Error> {
        let mut output = ff::format::output_as(&part, "mp4")?;
        add_video_stream(&mut output, &first.connection, width, height)?;
        output.write_header()?;
        let time_base = output.stream(0).map(|s| s.time_base()).unwrap_or(ff::Rational(1, TICKS));
        for ((p, &pts), &dts) in packets.iter().zip(&pts).zip(&dts) {
            let mut packet = ff::Packet::copy(&p.data);
            packet.set_stream(0);
            packet.set_pts(Some(pts));
            packet.set_dts(Some(dts));
            packet.set_duration(interval);
            if p.keyframe {
                packet.set_flags(ff::packet::Flags::KEY);
            }
            packet.rescale_ts(ff::Rational(1, TICKS), time_base);
            packet.write_interleaved(&mut output)?;
        }
        output.write_trailer()
    })();
    let span = pts.iter().max().copied().unwrap_or(0) + interval;
    finish_clip(path, written.map_err(|e| e.to_string()), first.at, span)
}

/// Decode times for packets with presentation times `pts` (in decode order), and the frame
/// interval: the presentation times sorted, moved back by the most any packet is reordered
/// (so none is decoded after it is shown). Without B-frames they are the presentation times.
fn decode_times(pts: &[i64]) -> (Vec<i64>, i64) {
    let mut sorted = pts.to_vec();
    sorted.sort_unstable();
    let mut gaps: Vec<i64> = sorted.windows(2).filter_map(|w| w.get(1).zip(w.first()).map(|(b, a)| b - a)).collect();
    gaps.sort_unstable();
    let interval = gaps.get(gaps.len() / 2).copied().filter(|&g| g > 0).unwrap_or(i64::from(TICKS) / 25);
    let delay = sorted.iter().zip(pts).map(|(s, p)| s - p).max().unwrap_or(0).max(0);
    (sorted.iter().map(|s| s - delay).collect(), interval)
}

fn add_video_stream(
    output: &mut ff::format::context::Output,
    connection: &Connection,
    width: u32,
    height: u32,
) -> Result<(), ff::Error> {
    let codec = match connection.codec {
        VideoCodec::H264 => ff::ffi::AVCodecID::AV_CODEC_ID_H264,
        VideoCodec::H265 => ff::ffi::AVCodecID::AV_CODEC_ID_HEVC,
    };
    let padding = ff::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
    let extradata = &connection.extradata;
    let size = i32::try_from(extradata.len()).map_err(|_| ff::Error::InvalidData)?;
    // SAFETY: the stream belongs to `output`, which frees it and its parameters (with the
    // extradata buffer, allocated by av_mallocz with the padding libavformat requires).
    unsafe {
        let stream = ff::ffi::avformat_new_stream(output.as_mut_ptr(), std::ptr::null());
        if stream.is_null() {
            return Err(ff::Error::Other { errno: ff::error::ENOMEM });
        }
        (*stream).time_base = ff::ffi::AVRational { num: 1, den: TICKS };
        let par = &mut *(*stream).codecpar;
        par.codec_type = ff::ffi::AVMediaType::AVMEDIA_TYPE_VIDEO;
        par.codec_id = codec;
        par.width = i32::try_from(width).unwrap_or(0);
        par.height = i32::try_from(height).unwrap_or(0);
        if !extradata.is_empty() {
            let buffer = ff::ffi::av_mallocz(extradata.len() + padding) as *mut u8;
            if buffer.is_null() {
                return Err(ff::Error::Other { errno: ff::error::ENOMEM });
            }
            std::ptr::copy_nonoverlapping(extradata.as_ptr(), buffer, extradata.len());
            par.extradata = buffer;
            par.extradata_size = size;
        }
    }
    Ok(())
}

/// The side of the blocks a privacy mask is pixelated in, in luma pixels: a face or a plate
/// becomes a few flat squares.
const MOSAIC: usize = 16;

/// [`write_mp4`] for a camera with privacy masks: the span is decoded, every block of
/// [`MOSAIC`] pixels whose centre lies in one of `masks` (normalised polygons) is flattened to its
/// mean, and the pictures are encoded again (libx264, `veryfast`, CRF 23, one thread, a
/// keyframe every 2 s) and muxed. Costs decoding and encoding every frame of the clip.
pub fn write_masked_mp4(path: &Path, packets: &[Packet], masks: &[Vec<[f64; 2]>]) -> Result<Clip, String> {
    let Some(first) = packets.first() else { return Err("no video to cut".into()) };
    let mut decoder = crate::decode::open("evidence", &first.connection).map_err(|e| e.to_string())?;
    let part = part_of(path);
    let pts = presentation_ticks(packets);
    let mut last_pts = 0;
    let written = (|| -> Result<(), String> {
        let e = |e: ff::Error| e.to_string();
        let codec = ff::encoder::find_by_name("libx264").ok_or("libavcodec has no libx264 encoder")?;
        let mut output = ff::format::output_as(&part, "mp4").map_err(e)?;
        let mut encoder: Option<ff::encoder::Video> = None;
        let mut picture = ff::frame::Video::empty();
        let mut encoded = ff::Packet::empty();
        let mut time_base = ff::Rational(1, TICKS);
        let mut drain = |encoder: &mut ff::encoder::Video, output: &mut ff::format::context::Output, tb| {
            while encoder.receive_packet(&mut encoded).is_ok() {
                encoded.set_stream(0);
                encoded.rescale_ts(ff::Rational(1, TICKS), tb);
                encoded.write_interleaved(output).map_err(e)?;
            }
            Ok::<_, String>(())
        };
        let total = packets.len();
        for (i, (p, &pts)) in packets.iter().zip(&pts).enumerate() {
            let mut packet = ff::Packet::copy(&p.data);
            packet.set_pts(Some(pts));
            let _ = decoder.send_packet(&packet);
            if i + 1 == total {
                let _ = decoder.send_eof();
            }
            while decoder.receive_frame(&mut picture).is_ok() {
                pixelate(&mut picture, masks);
                if encoder.is_none() {
                    let mut context = ff::codec::Context::new_with_codec(codec).encoder().video().map_err(e)?;
                    context.set_width(picture.width());
                    context.set_height(picture.height());
                    context.set_format(picture.format());
                    context.set_time_base(ff::Rational(1, TICKS));
                    context.set_gop(50);
                    context.set_flags(ff::codec::Flags::GLOBAL_HEADER);
                    let mut options = ff::Dictionary::new();
                    options.set("preset", "veryfast");
                    options.set("crf", "23");
                    options.set("threads", "1");
                    let opened = context.open_with(options).map_err(e)?;
                    let mut stream = output.add_stream(codec).map_err(e)?;
                    stream.set_parameters(&opened);
                    stream.set_time_base(ff::Rational(1, TICKS));
                    output.write_header().map_err(e)?;
                    time_base = output.stream(0).map(|s| s.time_base()).unwrap_or(time_base);
                    encoder = Some(opened);
                }
                if let Some(encoder) = encoder.as_mut() {
                    last_pts = picture.pts().unwrap_or(last_pts);
                    picture.set_kind(ff::picture::Type::None);
                    encoder.send_frame(&picture).map_err(e)?;
                    drain(encoder, &mut output, time_base)?;
                }
            }
        }
        let mut encoder = encoder.ok_or("no picture could be decoded")?;
        encoder.send_eof().map_err(e)?;
        drain(&mut encoder, &mut output, time_base)?;
        output.write_trailer().map_err(e)
    })();
    let (_, interval) = decode_times(&pts);
    let span = last_pts.max(pts.iter().max().copied().unwrap_or(0)) + interval;
    finish_clip(path, written.map_err(|error| format!("re-encoding: {error}")), first.at, span)
}

/// Flattens every [`MOSAIC`] block of `picture` (planar YUV 4:2:0) whose centre lies in one of
/// `masks` to its mean, in each plane.
fn pixelate(picture: &mut ff::frame::Video, masks: &[Vec<[f64; 2]>]) {
    let (width, height) = (picture.width() as usize, picture.height() as usize);
    if masks.is_empty() || width == 0 || height == 0 {
        return;
    }
    for plane in 0..picture.planes().min(3) {
        let (shift, stride) = (usize::from(plane > 0), picture.stride(plane));
        let (pw, ph, block) = (width.div_ceil(1 << shift), height.div_ceil(1 << shift), MOSAIC >> shift);
        let data = picture.data_mut(plane);
        for by in (0..ph).step_by(block) {
            for bx in (0..pw).step_by(block) {
                let (bw, bh) = (block.min(pw - bx), block.min(ph - by));
                let centre = ((bx as f64 + bw as f64 / 2.0) / pw as f64, (by as f64 + bh as f64 / 2.0) / ph as f64);
                if !masks.iter().any(|m| crate::rules::zone::contains(m, centre)) {
                    continue;
                }
                let rows = (by..by + bh).map(|y| y * stride + bx);
                let sum: usize =
                    rows.clone().filter_map(|r| data.get(r..r + bw)).flatten().map(|&v| usize::from(v)).sum();
                #[allow(clippy::cast_possible_truncation, reason = "a mean of bytes is a byte")]
                let mean = (sum / (bw * bh).max(1)) as u8;
                for r in rows {
                    data.get_mut(r..r + bw).into_iter().for_each(|row| row.fill(mean));
                }
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a camera needs to make clips: its ring, the store, and the spans to cut.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub ring: Arc<PacketRing>,
    pub store: Arc<ClipStore>,
    pre: TimeDelta,
    post: TimeDelta,
    longest: TimeDelta,
    /// Whether a camera with privacy masks gets a clip, re-encoded with them pixelated.
    pub reencode: bool,
}

/// The ring keeps this much more than the longest clip: the source runs ahead of the rules by
/// the pipeline's latency when a clip is cut.
const RING_SLACK_SECS: f64 = 5.0;

impl Recorder {
    /// A recorder with `config`'s spans (validated: 0..=600 s each) into `store`.
    pub fn new(store: Arc<ClipStore>, config: &crate::config::EvidenceConfig) -> Self {
        let delta =
            |secs: f64| TimeDelta::from_std(Duration::from_secs_f64(secs.clamp(0.0, 600.0))).unwrap_or_default();
        let ring = PacketRing::new(Duration::from_secs_f64((config.max_secs + RING_SLACK_SECS).clamp(0.0, 1200.0)));
        Self {
            ring: Arc::new(ring),
            store,
            pre: delta(config.pre_secs),
            post: delta(config.post_secs),
            longest: delta(config.max_secs),
            reencode: config.reencode,
        }
    }

    /// The span of an incident's clip: from `pre` before its objects were first seen (`first`)
    /// to `post` after it opened, at most `max_secs` long (then it starts later).
    pub fn span(&self, first: DateTime<Utc>, opened: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let to = opened + self.post;
        ((first - self.pre).max(to - self.longest), to)
    }

    /// How long after the opening a clip is due.
    pub fn post(&self) -> Duration {
        self.post.to_std().unwrap_or_default()
    }
}

/// One clip in the store, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub report_id: String,
    pub bytes: u64,
    pub modified: SystemTime,
}

/// The clips kept on disk, named `{report_id}.mp4`, within a total size and an age.
#[derive(Debug)]
pub struct ClipStore {
    pub dir: PathBuf,
    max_bytes: u64,
    max_age: Duration,
}

impl ClipStore {
    /// The clips in `dir`, within `config`'s `max_bytes` and `max_age_days`.
    pub fn new(dir: PathBuf, config: &crate::config::EvidenceConfig) -> Self {
        let max_age = Duration::try_from_secs_f64(config.max_age_days * 86_400.0).unwrap_or(Duration::MAX);
        Self { dir, max_bytes: config.max_bytes, max_age }
    }

    /// Where the clip of report `report_id` is (or would be); None for an id that is not one
    /// (report ids are UUIDs: hex digits and dashes), so no request reaches another file.
    pub fn path_of(&self, report_id: &str) -> Option<PathBuf> {
        let valid = !report_id.is_empty()
            && report_id.len() <= 64
            && report_id.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        valid.then(|| self.dir.join(format!("{report_id}.mp4")))
    }

    /// The clips kept, oldest first.
    pub fn list(&self) -> Vec<Stored> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut clips: Vec<Stored> = entries
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let report_id = name.strip_suffix(".mp4")?.to_string();
                let meta = e.metadata().ok()?;
                Some(Stored { report_id, bytes: meta.len(), modified: meta.modified().ok()? })
            })
            .collect();
        clips.sort_by(|a, b| a.modified.cmp(&b.modified).then_with(|| a.report_id.cmp(&b.report_id)));
        clips
    }

    /// Drops clips older than the age limit, then the oldest while over the size limit.
    /// Returns how many went.
    pub fn enforce(&self, now: SystemTime) -> u64 {
        let clips = self.list();
        let mut total: u64 = clips.iter().map(|c| c.bytes).sum();
        let mut dropped = 0;
        for clip in clips {
            let old = now.duration_since(clip.modified).is_ok_and(|age| age > self.max_age);
            if !old && total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(self.dir.join(format!("{}.mp4", clip.report_id))).is_ok() {
                total -= clip.bytes;
                dropped += 1;
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::StreamAnchor;

    fn connection(id: u64) -> Arc<Connection> {
        let anchor = StreamAnchor { wall: DateTime::UNIX_EPOCH, pts_secs: 0.0 };
        Arc::new(Connection { id, codec: VideoCodec::H264, extradata: Vec::new(), anchor })
    }

    fn frame(connection: &Arc<Connection>, i: u32, gop: u32, size: usize) -> (EncodedFrame, DateTime<Utc>) {
        let pts_secs = f64::from(i) / 10.0;
        let frame = EncodedFrame {
            data: vec![0; size],
            pts_secs,
            keyframe: i.is_multiple_of(gop),
            new_parameters: false,
            connection: connection.clone(),
        };
        (frame, DateTime::UNIX_EPOCH + TimeDelta::milliseconds(i64::from(i) * 100))
    }

    fn secs(s: f64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::milliseconds((s * 1000.0) as i64)
    }

    #[test]
    fn the_ring_keeps_its_window_back_to_a_keyframe() {
        let ring = PacketRing::new(Duration::from_secs(3));
        let c = connection(1);
        ring.consumed(secs(1000.0));
        for i in 0..100 {
            let (f, at) = frame(&c, i, 10, 100);
            ring.push(&f, at);
        }
        // Newest at 9.9 s; the window reaches 6.9 s; the keyframe at or before it is 6.0 s.
        let kept = ring.cut(secs(0.0), secs(100.0));
        assert_eq!(kept.first().map(|p| p.pts_secs), Some(6.0));
        assert_eq!(kept.len(), 40);
        assert_eq!(ring.bytes(), 4000);
        // A span starts at its keyframe and ends at its end.
        let span = ring.cut(secs(7.5), secs(8.5));
        assert_eq!(span.first().map(|p| (p.pts_secs, p.keyframe)), Some((7.0, true)));
        assert_eq!(span.last().map(|p| p.pts_secs), Some(8.5));
        // A new connection starts afresh, at its first keyframe.
        let d = connection(2);
        let (f, at) = frame(&d, 3, 10, 100);
        ring.push(&f, at);
        assert_eq!(ring.bytes(), 0, "a non-keyframe does not start a ring");
        let (f, at) = frame(&d, 10, 10, 100);
        ring.push(&f, at);
        assert_eq!(ring.cut(secs(0.0), secs(100.0)).len(), 1);
    }

    #[test]
    fn the_ring_keeps_what_its_rules_have_not_reached() {
        // The source is at 9.9 s, the rules at 4 s: a window of 3 s back from 4 s is kept.
        let ring = PacketRing::new(Duration::from_secs(3));
        let c = connection(1);
        ring.consumed(secs(4.0));
        for i in 0..100 {
            let (f, at) = frame(&c, i, 10, 100);
            ring.push(&f, at);
        }
        assert_eq!(ring.cut(secs(0.0), secs(100.0)).first().map(|p| p.pts_secs), Some(1.0));
    }

    #[test]
    fn the_ring_never_holds_more_than_its_bytes() {
        let ring = PacketRing::new(Duration::from_secs(3600));
        let c = connection(1);
        for i in 0..200 {
            let (f, at) = frame(&c, i, 10, 1 << 20);
            ring.push(&f, at);
        }
        assert!(ring.bytes() <= RING_MAX_BYTES, "{}", ring.bytes());
        assert!(ring.cut(secs(0.0), secs(100.0)).first().is_some_and(|p| p.keyframe));
    }

    #[test]
    fn decode_times_precede_presentation_with_b_frames() {
        // I0 P3 B1 B2 P6 B4 B5, in ticks of 1.
        let pts = [0, 3, 1, 2, 6, 4, 5];
        let (dts, interval) = decode_times(&pts);
        assert_eq!(interval, 1);
        assert!(dts.windows(2).all(|w| w[0] < w[1]));
        assert!(dts.iter().zip(&pts).all(|(d, p)| d <= p), "{dts:?}");
        assert_eq!(decode_times(&[0, 10, 20]).0, [0, 10, 20]);
    }

    #[test]
    fn the_store_drops_old_and_oldest_clips_and_refuses_odd_names() {
        let dir = std::env::temp_dir().join(format!("fieldwatch-clips-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let limits = crate::config::EvidenceConfig { max_bytes: 2500, max_age_days: 1.0, ..Default::default() };
        let store = ClipStore::new(dir.clone(), &limits);
        let now = SystemTime::now();
        for (i, age_secs) in [(1, 200_000u64), (2, 300), (3, 200), (4, 100)] {
            let path = store.path_of(&format!("0000000{i}")).unwrap();
            std::fs::write(&path, vec![0u8; 1000]).unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(now - Duration::from_secs(age_secs)).unwrap();
        }
        // 1 is over a day old; then 2 goes to bring 3000 bytes under 2500.
        assert_eq!(store.enforce(now), 2);
        let left: Vec<String> = store.list().into_iter().map(|c| c.report_id).collect();
        assert_eq!(left, ["00000003", "00000004"]);
        assert!(store.path_of("../state").is_none());
        assert!(store.path_of("").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
