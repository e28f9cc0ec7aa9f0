//! Camera sources: pull encoded video and hand access units to the decoder.
//!
//! [`supervise`] owns one camera's connection for the daemon's lifetime: it calls
//! [`rtsp::run_once`] until shutdown, waiting with exponential backoff (and jitter, so a fleet of
//! cameras behind one failed switch does not reconnect in lockstep) after every failure. One
//! camera failing never affects another.

mod rtsp;

use crate::config::CameraConfig;
use crate::pipeline::EncodedSender;
use crate::telemetry::CameraCounters;
use backon::BackoffBuilder;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Video codecs the decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
}

/// One access unit, Annex B framed, parameter sets in front of every keyframe.
#[derive(Debug)]
pub struct EncodedFrame {
    pub codec: VideoCodec,
    pub data: Vec<u8>,
    /// Presentation time in seconds since the start of this connection.
    pub pts_secs: f64,
    pub keyframe: bool,
    /// Increments on every new connection: the decoder starts afresh when it changes.
    pub connection: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("camera {camera}: bad url {url}: {message}")]
    Url { camera: String, url: String, message: String },
    #[error("camera {camera}: rtsp {url}: {source}")]
    Rtsp { camera: String, url: String, source: retina::Error },
    #[error("camera {camera}: rtsp {url}: no H.264 video stream offered")]
    NoVideo { camera: String, url: String },
    #[error("camera {camera}: rtsp {url}: no frame for {secs:.1} s (stalled)")]
    Stalled { camera: String, url: String, secs: f64 },
}

/// Why a connection ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The server closed the stream (end of a clip, camera reboot).
    ByServer,
    /// Shutdown was requested, or the decoder went away.
    Stopped,
}

/// Runs `camera`'s source until `shutdown`: connect, stream, and reconnect with backoff.
pub async fn supervise(
    camera: Arc<CameraConfig>,
    mut tx: EncodedSender,
    counters: Arc<CameraCounters>,
    shutdown: CancellationToken,
) {
    let backoff = || {
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs_f64(camera.reconnect_min_secs))
            .with_max_delay(Duration::from_secs_f64(camera.reconnect_max_secs))
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    let mut connection = 0u64;
    while !shutdown.is_cancelled() {
        connection += 1;
        let frames_before = counters.encoded_frames.get();
        let outcome = rtsp::run_once(&camera, connection, &mut tx, &counters, &shutdown).await;
        let got_frames = counters.encoded_frames.get() > frames_before;
        if got_frames {
            delays = backoff(); // a connection that worked resets the backoff
        }
        let delay = delays.next().unwrap_or(Duration::from_secs_f64(camera.reconnect_max_secs));
        match outcome {
            Ok(Ended::Stopped) => break,
            Ok(Ended::ByServer) => info!(delay_ms = delay.as_millis() as u64, "stream ended by server; reconnecting"),
            Err(error) => warn!(%error, delay_ms = delay.as_millis() as u64, "camera unavailable; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
