//! A live camera with `retina`: DESCRIBE, SETUP (TCP or UDP), PLAY, then H.264 or H.265 frames
//! until the stream ends, falls silent, fails or shutdown is requested.
//!
//! retina ends a closed stream with `None` and notices a frozen server only after about a
//! minute, so the stream runs under the camera's own stall timeout, counted from the last video
//! frame (RTCP reports alone do not keep a camera alive). After connecting, and
//! after any reported packet loss, frames are skipped until a random-access point. The session
//! belongs to a `SessionGroup` whose teardown is awaited before returning, so a reconnect never
//! races the old session on cameras that allow one client.

use super::{Connection, EncodedFrame, Ended, Source, SourceContext, SourceError, VideoCodec};
use crate::config::{Camera, TransportConfig};
use futures::StreamExt;
use retina::client::{Credentials, PlayOptions, SessionGroup, SessionOptions, SetupOptions, Transport};
use retina::codec::{CodecItem, FrameFormat};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(2);

pub struct RtspSource {
    camera: Arc<Camera>,
}

impl RtspSource {
    pub fn new(camera: Arc<Camera>) -> Self {
        Self { camera }
    }
}

impl Source for RtspSource {
    async fn run_once(&mut self, ctx: &mut SourceContext) -> Result<Ended, SourceError> {
        let camera = &*self.camera;
        let url = &camera.url;
        let creds = (!url.username.is_empty())
            .then(|| Credentials { username: url.username.clone(), password: url.password.expose().to_string() });
        let group = Arc::new(SessionGroup::default());
        let options = SessionOptions::default()
            .creds(creds)
            .session_group(group.clone())
            .user_agent(format!("fieldwatch/{}", env!("CARGO_PKG_VERSION")));
        let shutdown = ctx.shutdown.clone();
        let result = tokio::select! {
            _ = shutdown.cancelled() => Ok(Ended::Stopped),
            r = stream(camera, options, ctx) => r,
        };
        let (id, shown) = (camera.id.clone(), url.redacted.clone());
        let result = result.map_err(|e| match e {
            StreamError::Rtsp(source) => SourceError::Rtsp { camera: id, url: shown, source },
            StreamError::NoVideo => SourceError::NoVideo { camera: id, url: shown },
            StreamError::Stalled(secs) => SourceError::Stalled { camera: id, url: shown, secs },
        });
        if let Err(error @ SourceError::Stalled { .. }) = &result {
            // Said now: the teardown below may itself hang on a frozen camera.
            warn!(%error, "camera silent: dropping the connection");
            ctx.counters.silences.inc();
        }
        // `stream` dropped its session; wait until retina has torn it down before reconnecting.
        if tokio::time::timeout(TEARDOWN_TIMEOUT, group.await_teardown()).await.is_err() {
            debug!("rtsp teardown still pending after {TEARDOWN_TIMEOUT:?}");
        }
        result
    }
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

async fn stream(camera: &Camera, options: SessionOptions, ctx: &mut SourceContext) -> Result<Ended, StreamError> {
    let stall = camera.stall_timeout;
    let mut session = tokio::time::timeout(stall, retina::client::Session::describe(camera.url.url.clone(), options))
        .await
        .map_err(|_| StreamError::Stalled(stall.as_secs_f64()))??;
    let (video, codec) = session
        .streams()
        .iter()
        .enumerate()
        .filter(|(_, s)| s.media() == "video")
        .find_map(|(i, s)| match s.encoding_name().to_ascii_lowercase().as_str() {
            "h264" => Some((i, VideoCodec::H264)),
            "h265" => Some((i, VideoCodec::H265)),
            _ => None,
        })
        .ok_or(StreamError::NoVideo)?;
    let transport = match camera.transport {
        TransportConfig::Tcp => Transport::Tcp(Default::default()),
        TransportConfig::Udp => Transport::Udp(Default::default()),
    };
    // A server that answers DESCRIBE and then never SETUP or PLAY is as silent as one that stops
    // sending frames: each step of the connect has the same limit.
    let stalled = |_| StreamError::Stalled(stall.as_secs_f64());
    let options = SetupOptions::default().transport(transport).frame_format(FrameFormat::SIMPLE);
    tokio::time::timeout(stall, session.setup(video, options)).await.map_err(stalled)??;
    let playing = tokio::time::timeout(stall, session.play(PlayOptions::default())).await.map_err(stalled)??;
    let mut frames = playing.demuxed()?;
    let id = ctx.next_connection();
    ctx.counters.connects.inc();
    info!(url = %camera.url.redacted, connection = id, ?codec, transport = ?camera.transport, "rtsp playing");

    // The anchor is taken when the first frame arrives: the one wall-clock reading of this connection.
    let mut connection: Option<Arc<Connection>> = None;
    // Silence is counted from the last video frame: a server that stopped sending video but
    // still sends RTCP reports (GStreamer at the end of a clip does, every few seconds) is silent.
    let mut deadline = tokio::time::Instant::now() + stall;
    loop {
        let item = tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(Ended::Stopped),
            item = tokio::time::timeout_at(deadline, frames.next()) => item,
        };
        let frame = match item {
            Err(_) => return Err(StreamError::Stalled(stall.as_secs_f64())),
            Ok(None) => return Ok(Ended::ByServer),
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(Some(Ok(CodecItem::VideoFrame(f)))) => f,
            Ok(Some(Ok(_))) => continue,
        };
        deadline = tokio::time::Instant::now() + stall;
        if frame.loss() > 0 {
            ctx.lost(frame.loss() as u64);
        }
        let pts_secs = frame.timestamp().elapsed_secs();
        let connection = connection
            .get_or_insert_with(|| {
                Arc::new(Connection {
                    id,
                    codec,
                    extradata: Vec::new(), // SIMPLE frames carry parameter sets in band
                    anchor: ctx.timeline.anchor(pts_secs),
                })
            })
            .clone();
        let (keyframe, new_parameters) = (frame.is_random_access_point(), frame.has_new_parameters());
        if new_parameters {
            info!("the camera changed its video parameters; decoding afresh");
        }
        let encoded = EncodedFrame { pts_secs, keyframe, new_parameters, connection, data: frame.into_data() };
        if ctx.offer(encoded).await.is_err() {
            return Ok(Ended::Stopped);
        }
    }
}
