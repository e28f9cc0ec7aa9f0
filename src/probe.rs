//! `fieldwatch probe URL`: what a camera really sends, before it goes into a config. Connects as
//! the daemon would (same RTSP source, same decoder), watches the stream for a few seconds and
//! reports codec, profile, resolution, frame rate, GOP length and bitrate, with one decoded
//! frame saved as JPEG. Any failure (unreachable, wrong password, no video) is an error that
//! says why.

use crate::clock::SystemClock;
use crate::config::{Camera, CameraUrl, TransportConfig};
use crate::pipeline::{self, edge};
use crate::source::{EncodedFrame, RtspSource, Source, SourceContext, VideoCodec};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a probe measured.
#[derive(Debug, Clone)]
pub struct Probed {
    pub codec: VideoCodec,
    pub profile: String,
    pub width: u32,
    pub height: u32,
    pub frames: usize,
    pub seconds: f64,
    pub frames_per_sec: f64,
    /// Frames from one keyframe to the next, on average; `None` if only one keyframe came.
    pub gop: Option<f64>,
    pub kilobits_per_sec: f64,
}

impl fmt::Display for Probed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codec = match self.codec {
            VideoCodec::H264 => "H.264",
            VideoCodec::H265 => "H.265",
        };
        writeln!(f, "codec       {codec} ({})", self.profile)?;
        writeln!(f, "resolution  {}x{}", self.width, self.height)?;
        writeln!(f, "frame rate  {:.2} fps ({} frames in {:.1} s)", self.frames_per_sec, self.frames, self.seconds)?;
        match self.gop {
            Some(gop) => writeln!(f, "GOP         {gop:.1} frames ({:.2} s)", gop / self.frames_per_sec.max(1e-9))?,
            None => writeln!(f, "GOP         longer than {} frames (one keyframe seen)", self.frames)?,
        }
        write!(f, "bitrate     {:.0} kbit/s", self.kilobits_per_sec)
    }
}

/// Watches `url` for `seconds` from its first keyframe over `transport`, saving one decoded
/// frame to `jpeg`.
pub async fn probe(url: CameraUrl, transport: TransportConfig, seconds: f64, jpeg: &Path) -> Result<Probed, String> {
    let camera = Arc::new(Camera { transport, ..Camera::at("probe", url) });
    let stall = camera.stall_timeout;
    let (tx, rx) = edge::<EncodedFrame>(pipeline::ENCODED.lossless(), vec![Arc::default()]);
    let stop = CancellationToken::new();
    let mut ctx = SourceContext::new(tx, Arc::new(SystemClock), Arc::default(), stop.clone(), stall);
    let source = tokio::spawn(async move {
        let ended = RtspSource::new(camera).run_once(&mut ctx).await;
        drop(ctx); // closes the edge: the collector below ends
        ended
    });
    let mut units = Vec::new();
    let watch = Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("--seconds: {seconds} is not a number of seconds (0 or more)"))?;
    let mut deadline = None;
    loop {
        let unit = match deadline {
            None => rx.recv_async().await,
            Some(at) => match tokio::time::timeout_at(at, rx.recv_async()).await {
                Ok(unit) => unit,
                Err(_) => break,
            },
        };
        let Some(unit) = unit else { break };
        deadline.get_or_insert_with(|| tokio::time::Instant::now() + watch);
        units.push(unit);
    }
    stop.cancel();
    let ended = source.await.map_err(|e| format!("the probe failed: {e}"))?;
    if units.is_empty() {
        return Err(match ended {
            Err(error) => error.to_string(),
            Ok(_) => "the camera ended the stream before sending a keyframe".into(),
        });
    }
    let measured = measure(&units);
    let (frame, profile) = tokio::task::spawn_blocking(move || crate::decode::first_picture(&units))
        .await
        .map_err(|e| format!("decoding failed: {e}"))??;
    let picture = crate::report::encode_jpeg(&frame.to_rgb(), 85).map_err(|e| format!("encoding the frame: {e}"))?;
    std::fs::write(jpeg, picture).map_err(|e| format!("writing {}: {e}", jpeg.display()))?;
    Ok(Probed { profile, width: frame.width, height: frame.height, ..measured })
}

/// Rate, GOP and bitrate of `units` (which start at a keyframe).
fn measure(units: &[EncodedFrame]) -> Probed {
    // B-frames arrive out of presentation order: the span is from the earliest to the latest.
    let first = units.iter().map(|u| u.pts_secs).fold(f64::MAX, f64::min);
    let last = units.iter().map(|u| u.pts_secs).fold(f64::MIN, f64::max);
    let seconds = (last - first).max(0.0);
    let per_sec = |n: f64| if seconds > 0.0 { n / seconds } else { 0.0 };
    let keyframes: Vec<usize> = units.iter().enumerate().filter(|(_, u)| u.keyframe).map(|(i, _)| i).collect();
    let gop = match (keyframes.first(), keyframes.last()) {
        (Some(first), Some(last)) if keyframes.len() > 1 => Some((last - first) as f64 / (keyframes.len() - 1) as f64),
        _ => None,
    };
    // Bits over the span between the first and the last frame's timestamps: the last unit's
    // bytes belong to the next interval.
    let bytes: usize = units.iter().rev().skip(1).map(|u| u.data.len()).sum();
    Probed {
        codec: units.first().map_or(VideoCodec::H264, |u| u.connection.codec),
        profile: String::new(),
        width: 0,
        height: 0,
        frames: units.len(),
        seconds,
        frames_per_sec: per_sec(units.len().saturating_sub(1) as f64),
        gop,
        kilobits_per_sec: per_sec(bytes as f64 * 8.0 / 1000.0),
    }
}
