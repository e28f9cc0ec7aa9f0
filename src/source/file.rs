//! A recorded clip (MP4, MKV, raw H.264 Annex B, whatever libavformat reads) as a source, for
//! `fieldwatch replay`: the same access units and decoder as a live camera, as fast as the
//! stages downstream take them.
//!
//! Times come from the clip: its packet timestamps, anchored at its start time (the
//! clip's `creation_time`, else its modification time, unless given). A raw Annex B stream has
//! no timestamps; its frames are timed by the frame rate libavformat probes from the stream,
//! in decoding order.

use super::{Connection, EncodedFrame, Ended, Source, SourceContext, SourceError, StreamAnchor, VideoCodec};
use chrono::{DateTime, Utc};
use ffmpeg_next as ff;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct FileSource {
    path: PathBuf,
    start: DateTime<Utc>,
    duration_secs: Option<f64>,
}

impl FileSource {
    /// Checks that `path` has an H.264 video stream; `start` is the wall time of its first
    /// frame (default: the clip's `creation_time`, else the file's modification time).
    pub fn open(path: &Path, start: Option<DateTime<Utc>>) -> Result<Self, SourceError> {
        let input = open_input(path)?;
        let err = |message: String| SourceError::File { path: path.display().to_string(), message };
        let stream = input.streams().best(ff::media::Type::Video).ok_or_else(|| err("no video stream".into()))?;
        codec_of(&stream.parameters()).map_err(err)?;
        let created = [input.metadata(), stream.metadata()]
            .iter()
            .find_map(|m| m.get("creation_time").map(str::to_string))
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc));
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok().map(DateTime::<Utc>::from);
        let start = start.or(created).or(modified).unwrap_or_default();
        let duration_secs = (input.duration() > 0).then(|| input.duration() as f64 / f64::from(ff::ffi::AV_TIME_BASE));
        Ok(Self { path: path.to_path_buf(), start, duration_secs })
    }

    /// The clip's length as its container states it (a raw stream's is an estimate or none).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn duration_secs(&self) -> Option<f64> {
        self.duration_secs
    }
}

impl Source for FileSource {
    /// Reads the clip on this worker thread, handed over with `block_in_place` (libavformat
    /// blocks): needs the multi-threaded runtime, which `app` always builds.
    async fn run_once(&mut self, ctx: &mut SourceContext) -> Result<Ended, SourceError> {
        tokio::task::block_in_place(|| read(&self.path, self.start, ctx))
    }
}

fn open_input(path: &Path) -> Result<ff::format::context::Input, SourceError> {
    crate::decode::init_ffmpeg();
    ff::format::input(path).map_err(|e| SourceError::File { path: path.display().to_string(), message: e.to_string() })
}

fn codec_of(parameters: &ff::codec::Parameters) -> Result<VideoCodec, String> {
    match parameters.id() {
        ff::codec::Id::H264 => Ok(VideoCodec::H264),
        ff::codec::Id::HEVC => Ok(VideoCodec::H265),
        other => Err(format!("video codec {other:?} is not supported (H.264 and H.265 are)")),
    }
}

fn read(path: &Path, start: DateTime<Utc>, ctx: &mut SourceContext) -> Result<Ended, SourceError> {
    let err = |message: String| SourceError::File { path: path.display().to_string(), message };
    let mut input = open_input(path)?;
    let stream = input.streams().best(ff::media::Type::Video).ok_or_else(|| err("no video stream".into()))?;
    let (index, time_base, rate) = (stream.index(), f64::from(stream.time_base()), f64::from(stream.avg_frame_rate()));
    let parameters = stream.parameters();
    let codec = codec_of(&parameters).map_err(err)?;
    // SAFETY: `parameters` owns a valid AVCodecParameters; extradata is `extradata_size` bytes or null.
    let extradata = unsafe {
        let p = &*parameters.as_ptr();
        if p.extradata.is_null() || p.extradata_size <= 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts(p.extradata, p.extradata_size as usize).to_vec()
        }
    };
    let id = ctx.next_connection();
    let mut connection: Option<Arc<Connection>> = None;
    let mut decoded_order = 0u64;
    for (s, packet) in input.packets() {
        if s.index() != index {
            continue;
        }
        if ctx.shutdown.is_cancelled() {
            return Ok(Ended::Stopped);
        }
        let Some(data) = packet.data() else { continue };
        let pts_secs = match packet.pts().or(packet.dts()) {
            Some(ts) => ts as f64 * time_base,
            None if rate > 0.0 => decoded_order as f64 / rate,
            None => return Err(err("packets have no timestamps and the stream no frame rate".into())),
        };
        decoded_order += 1;
        let connection = connection
            .get_or_insert_with(|| {
                Arc::new(Connection {
                    id,
                    codec,
                    extradata: extradata.clone(),
                    anchor: StreamAnchor { wall: start, pts_secs },
                })
            })
            .clone();
        // Parameter sets travel in band here, and libavcodec follows their changes itself.
        let keyframe = packet.is_key();
        let frame = EncodedFrame { data: data.to_vec(), pts_secs, keyframe, new_parameters: false, connection };
        if ctx.offer_blocking(frame).is_err() {
            return Ok(Ended::Stopped);
        }
    }
    Ok(Ended::ByServer)
}
