//! One RTSP connection with `retina`: DESCRIBE, SETUP (TCP), PLAY, then frames until the stream
//! ends, stalls, fails or shutdown is requested.
//!
//! retina ends a closed stream with `None` and notices a frozen server only after about a
//! minute, so every `next()` runs under the camera's own stall timeout. After connecting, and
//! after any reported packet loss, frames are skipped until a random-access point. The session
//! belongs to a `SessionGroup` whose teardown is awaited before returning, so a reconnect never
//! races the old session on cameras that allow one client.

use super::{EncodedFrame, Ended, SourceError, VideoCodec};
use crate::config::{CameraConfig, redact_url};
use crate::pipeline::EncodedSender;
use crate::telemetry::CameraCounters;
use futures::StreamExt;
use retina::client::{Credentials, PlayOptions, SessionGroup, SessionOptions, SetupOptions, Transport};
use retina::codec::{CodecItem, FrameFormat};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) async fn run_once(
    camera: &CameraConfig,
    connection: u64,
    tx: &mut EncodedSender,
    counters: &CameraCounters,
    shutdown: &CancellationToken,
) -> Result<Ended, SourceError> {
    let shown = redact_url(camera.url.expose());
    let (url, creds) = split_credentials(camera.url.expose()).map_err(|message| SourceError::Url {
        camera: camera.id.clone(),
        url: shown.clone(),
        message,
    })?;
    let rtsp_err = |source| SourceError::Rtsp { camera: camera.id.clone(), url: shown.clone(), source };

    let group = Arc::new(SessionGroup::default());
    let options = SessionOptions::default()
        .creds(creds)
        .session_group(group.clone())
        .user_agent(format!("fieldwatch/{}", env!("CARGO_PKG_VERSION")));
    let result = tokio::select! {
        _ = shutdown.cancelled() => Ok(Ended::Stopped),
        r = stream(camera, connection, url, options, tx, counters, shutdown, &shown) => r,
    };
    // `stream` dropped its session; wait until retina has torn it down before reconnecting.
    if tokio::time::timeout(TEARDOWN_TIMEOUT, group.await_teardown()).await.is_err() {
        debug!("rtsp teardown still pending after {TEARDOWN_TIMEOUT:?}");
    }
    result.map_err(|e| match e {
        StreamError::Rtsp(source) => rtsp_err(source),
        StreamError::NoVideo => SourceError::NoVideo { camera: camera.id.clone(), url: shown.clone() },
        StreamError::Stalled(secs) => SourceError::Stalled { camera: camera.id.clone(), url: shown.clone(), secs },
    })
}

enum StreamError {
    Rtsp(retina::Error),
    NoVideo,
    Stalled(f64),
}

impl From<retina::Error> for StreamError {
    fn from(e: retina::Error) -> Self {
        StreamError::Rtsp(e)
    }
}

#[allow(clippy::too_many_arguments)]
async fn stream(
    camera: &CameraConfig,
    connection: u64,
    url: url::Url,
    options: SessionOptions,
    tx: &mut EncodedSender,
    counters: &CameraCounters,
    shutdown: &CancellationToken,
    shown: &str,
) -> Result<Ended, StreamError> {
    let stall = Duration::from_secs_f64(camera.stall_timeout_secs);
    let mut session = tokio::time::timeout(stall, retina::client::Session::describe(url, options))
        .await
        .map_err(|_| StreamError::Stalled(stall.as_secs_f64()))??;
    let video = session
        .streams()
        .iter()
        .position(|s| s.media() == "video" && s.encoding_name().eq_ignore_ascii_case("h264"))
        .ok_or(StreamError::NoVideo)?;
    session
        .setup(
            video,
            SetupOptions::default().transport(Transport::Tcp(Default::default())).frame_format(FrameFormat::SIMPLE),
        )
        .await?;
    let mut frames = session.play(PlayOptions::default()).await?.demuxed()?;
    counters.connects.inc();
    info!(url = %shown, connection, "rtsp playing");

    let mut waiting_for_keyframe = true;
    loop {
        let item = tokio::select! {
            _ = shutdown.cancelled() => return Ok(Ended::Stopped),
            item = tokio::time::timeout(stall, frames.next()) => item,
        };
        let frame = match item {
            Err(_) => return Err(StreamError::Stalled(stall.as_secs_f64())),
            Ok(None) => return Ok(Ended::ByServer),
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(Some(Ok(CodecItem::VideoFrame(f)))) => f,
            Ok(Some(Ok(_))) => continue,
        };
        if frame.loss() > 0 {
            warn!(lost_packets = frame.loss(), "rtsp packet loss; waiting for a keyframe");
            waiting_for_keyframe = true;
        }
        let keyframe = frame.is_random_access_point();
        if waiting_for_keyframe && !keyframe {
            continue;
        }
        waiting_for_keyframe = false;
        counters.encoded_frames.inc();
        let encoded = EncodedFrame {
            codec: VideoCodec::H264,
            pts_secs: frame.timestamp().elapsed_secs(),
            keyframe,
            connection,
            data: frame.into_data(),
        };
        if tx.send(encoded).is_err() {
            return Ok(Ended::Stopped);
        }
    }
}

/// Moves user:password out of the URL (retina takes them separately), percent-decoded.
fn split_credentials(raw: &str) -> Result<(url::Url, Option<Credentials>), String> {
    let mut url = url::Url::parse(raw).map_err(|e| e.to_string())?;
    let decode = |s: &str| Some(percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned());
    let creds = if url.username().is_empty() {
        None
    } else {
        Some(Credentials {
            username: decode(url.username()).unwrap_or_default(),
            password: url.password().and_then(decode).unwrap_or_default(),
        })
    };
    url.set_username("").map_err(|_| "cannot strip user name".to_string())?;
    url.set_password(None).map_err(|_| "cannot strip password".to_string())?;
    Ok((url, creds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_decoded() {
        let (url, creds) = split_credentials("rtsp://ad%40min:p%3Ass@cam.local:554/s1").unwrap();
        assert_eq!(url.as_str(), "rtsp://cam.local:554/s1");
        let c = creds.unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("ad@min", "p:ss"));
        assert!(split_credentials("rtsp://cam.local/s1").unwrap().1.is_none());
    }
}
