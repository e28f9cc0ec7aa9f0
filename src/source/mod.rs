//! Camera sources: pull encoded video and hand access units, with their stream timestamps, to
//! the decoder. Two implementations of [`Source`] feed the same decoder: [`RtspSource`]
//! (a live camera, with retina) and [`FileSource`] (a recorded clip, with libavformat).
//!
//! [`supervise`] owns one live camera for the daemon's lifetime: it calls
//! [`Source::run_once`] until shutdown, waiting with exponential backoff (and jitter, so a fleet
//! of cameras behind one failed switch does not reconnect in lockstep) after every failure.
//!
//! **Stream time.** Every frame's time is its stream timestamp mapped to the wall clock by one
//! [`StreamAnchor`] taken when a connection's first frame arrives ([`Timeline`]); the clock is
//! not read again until the next connection, so a clock step mid-stream changes nothing.

// What comes from a camera, a clip or a model is never cut short by a cast unseen.
#![cfg_attr(not(test), deny(clippy::cast_possible_truncation))]

mod file;
mod rtsp;

pub use file::FileSource;
pub use rtsp::RtspSource;

use crate::clock::Clock;
use crate::config::Camera;
use crate::pipeline::{Closed, EdgeSender, Sent};
use crate::telemetry::{CameraCounters, LinkState, Throttle};
use backon::BackoffBuilder;
use chrono::{DateTime, TimeDelta, Utc};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A connection that streamed this long resets the reconnect backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// Packet loss is logged at most this often per camera (with a count of the rest).
const LOSS_LOG_EVERY: Duration = Duration::from_secs(10);

/// Video codecs the decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    H265,
}

/// Maps one connection's stream timestamps to wall time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamAnchor {
    /// Wall time of the frame with timestamp `pts_secs`.
    pub wall: DateTime<Utc>,
    pub pts_secs: f64,
}

/// Whether `offset` seconds (not a NaN) are no further than `MAX_STREAM_OFFSET_SECS` either way.
fn within_span(offset: f64) -> bool {
    offset.abs().partial_cmp(&MAX_STREAM_OFFSET_SECS).is_some_and(|o| o.is_le())
}

/// The furthest a frame's time may be from its connection's anchor: a camera's or a clip's
/// timestamp further off is corrupt (no connection lasts a century). Everything after the
/// source can then add days to a frame's time without overflowing.
const MAX_STREAM_OFFSET_SECS: f64 = 100.0 * 365.25 * 86_400.0;

impl StreamAnchor {
    /// The wall time of a frame with timestamp `pts_secs`; None for a timestamp that is not a
    /// number or lies more than a century from the anchor's.
    pub fn time_of(&self, pts_secs: f64) -> Option<DateTime<Utc>> {
        let offset = pts_secs - self.pts_secs;
        if !within_span(offset) {
            return None;
        }
        // Within a century: the microseconds fit an i64 and the sum a DateTime.
        #[allow(clippy::cast_possible_truncation, reason = "within a century, checked above")]
        let micros = (offset * 1e6).round() as i64;
        self.wall.checked_add_signed(TimeDelta::microseconds(micros))
    }
}

/// What is common to every access unit of one connection (or one pass over a file).
#[derive(Debug)]
pub struct Connection {
    /// Increments on every new connection of a camera: the decoder starts afresh when it changes.
    pub id: u64,
    pub codec: VideoCodec,
    /// Out-of-band parameter sets for the decoder (an MP4's avcC); empty when they travel in
    /// band (Annex B, as retina hands them).
    pub extradata: Vec<u8>,
    pub anchor: StreamAnchor,
}

/// One access unit with its stream timestamp.
#[derive(Debug)]
pub struct EncodedFrame {
    pub data: Vec<u8>,
    /// Presentation time in seconds on the connection's stream clock.
    pub pts_secs: f64,
    pub keyframe: bool,
    /// The camera changed its parameter sets (resolution, profile) with this frame: the decoder
    /// is made afresh for it.
    pub new_parameters: bool,
    pub connection: Arc<Connection>,
}

/// Anchors a camera's connections to the wall clock, one reading per connection, and keeps its
/// time from going backwards across a reconnect (a clock stepped back meanwhile).
pub struct Timeline {
    clock: Arc<dyn Clock>,
    last: Option<DateTime<Utc>>,
}

impl Timeline {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock, last: None }
    }

    /// The anchor for a new connection whose first frame has `pts_secs`.
    pub fn anchor(&mut self, pts_secs: f64) -> StreamAnchor {
        let now = self.clock.now();
        let wall = match self.last {
            Some(last) if last >= now => last + TimeDelta::milliseconds(1),
            _ => now,
        };
        StreamAnchor { wall, pts_secs }
    }

    /// Notes a frame's time, so the next anchor comes after it.
    pub fn saw(&mut self, at: DateTime<Utc>) {
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("camera {camera}: rtsp {url}: {source}")]
    Rtsp { camera: String, url: String, source: retina::Error },
    #[error("camera {camera}: {url}: no H.264 or H.265 video stream offered")]
    NoVideo { camera: String, url: String },
    #[error("camera {camera}: rtsp {url}: silent: no frame for {secs:.1} s")]
    Stalled { camera: String, url: String, secs: f64 },
    #[error("clip {path}: {message}")]
    File { path: String, message: String },
}

/// Why a connection ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The server closed the stream (camera reboot), or the clip ended.
    ByServer,
    /// Shutdown was requested, or the decoder went away.
    Stopped,
}

/// What a source needs to hand frames on: where to, with which times, and when to stop.
pub struct SourceContext {
    pub tx: EdgeSender<EncodedFrame>,
    pub timeline: Timeline,
    pub counters: Arc<CameraCounters>,
    pub shutdown: CancellationToken,
    /// Where the camera's recent packets are kept for evidence clips, if it makes them.
    pub ring: Option<Arc<crate::clip::PacketRing>>,
    connection: u64,
    /// Set after a loss (network or a full edge): frames are skipped until a keyframe.
    waiting_for_keyframe: bool,
    /// When this connection's first frame came: a connection healthy long enough resets the
    /// reconnect backoff.
    first_frame: Option<Instant>,
    /// Frames refused by a full edge since this moment: the pipeline is blocked once that lasts
    /// `blocked_after`.
    refused_since: Option<Instant>,
    blocked_after: Duration,
    loss_log: Throttle,
    bad_time: Throttle,
}

impl SourceContext {
    /// A context whose pipeline counts as blocked when it refuses frames for `blocked_after`
    /// (the camera's stall timeout).
    pub fn new(
        tx: EdgeSender<EncodedFrame>,
        clock: Arc<dyn Clock>,
        counters: Arc<CameraCounters>,
        shutdown: CancellationToken,
        blocked_after: Duration,
    ) -> Self {
        Self {
            tx,
            timeline: Timeline::new(clock),
            counters,
            shutdown,
            ring: None,
            connection: 0,
            waiting_for_keyframe: true,
            first_frame: None,
            refused_since: None,
            blocked_after,
            loss_log: Throttle::new(LOSS_LOG_EVERY),
            bad_time: Throttle::new(LOSS_LOG_EVERY),
        }
    }

    /// Starts the next connection: returns its id; frames wait for a keyframe.
    pub fn next_connection(&mut self) -> u64 {
        self.connection += 1;
        self.waiting_for_keyframe = true;
        self.first_frame = None;
        self.connection
    }

    /// The stream lost `packets` (network loss): skip to the next keyframe. Logged at most
    /// once per [`LOSS_LOG_EVERY`], with how many losses that held back.
    pub fn lost(&mut self, packets: u64) {
        self.waiting_for_keyframe = true;
        if let Some(held) = self.loss_log.ready(Instant::now()) {
            warn!(lost_packets = packets, earlier_losses_not_logged = held, "rtsp packet loss; waiting for a keyframe");
        }
    }

    /// Offers one access unit: skipped until a keyframe after a loss, counted, and sent (from an
    /// async task). `Err` once the decoder is gone.
    pub async fn offer(&mut self, frame: EncodedFrame) -> Result<(), Closed> {
        if !self.accept(&frame) {
            return Ok(());
        }
        let sent = self.tx.send_async(frame).await?;
        self.after_send(sent);
        Ok(())
    }

    /// [`offer`](Self::offer) from a thread (the file source reads on one).
    pub fn offer_blocking(&mut self, frame: EncodedFrame) -> Result<(), Closed> {
        if !self.accept(&frame) {
            return Ok(());
        }
        let sent = self.tx.send(frame)?;
        self.after_send(sent);
        Ok(())
    }

    fn accept(&mut self, frame: &EncodedFrame) -> bool {
        if self.waiting_for_keyframe && !frame.keyframe {
            return false;
        }
        let Some(at) = frame.connection.anchor.time_of(frame.pts_secs) else {
            // A corrupt timestamp: the frame cannot be placed in time. Its successors may need
            // it, so the decoder starts again at a keyframe.
            self.counters.decode_errors.inc();
            self.waiting_for_keyframe = true;
            if let Some(held) = self.bad_time.ready(Instant::now()) {
                warn!(
                    pts_secs = frame.pts_secs,
                    earlier_not_logged = held,
                    "frame with an impossible timestamp dropped"
                );
            }
            return false;
        };
        self.waiting_for_keyframe = false;
        self.counters.encoded_frames.inc();
        self.counters.last_frame_ms.set(at.timestamp_millis().max(0) as u64);
        self.counters.frame_received_ms.set(chrono::Utc::now().timestamp_millis().max(0) as u64);
        if self.counters.connection.get() != LinkState::Blocked {
            self.counters.connection.set(LinkState::Streaming);
        }
        self.first_frame.get_or_insert_with(Instant::now);
        self.timeline.saw(at);
        if let Some(ring) = &self.ring {
            ring.push(frame, at);
        }
        true
    }

    fn after_send(&mut self, sent: Sent) {
        if sent != Sent::Dropped {
            if self.refused_since.take().is_some() && self.counters.connection.get() == LinkState::Blocked {
                info!("the pipeline takes frames again");
                self.counters.connection.set(LinkState::Streaming);
            }
            return;
        }
        // A dropped access unit corrupts every frame up to the next keyframe.
        self.waiting_for_keyframe = true;
        let since = *self.refused_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.blocked_after && self.counters.connection.get() != LinkState::Blocked {
            warn!(
                secs = since.elapsed().as_secs_f64(),
                "pipeline blocked: the camera sends frames but decoding has not taken them (not a camera fault)"
            );
            self.counters.blockages.inc();
            self.counters.connection.set(LinkState::Blocked);
        }
    }

    /// Whether this connection has streamed long enough to count as healthy.
    fn healthy(&self) -> bool {
        self.first_frame.is_some_and(|first| first.elapsed() >= HEALTHY_AFTER)
    }
}

/// One way of getting encoded video: a connection to a camera, or a pass over a clip.
pub trait Source: Send {
    /// Streams one connection into `ctx` until it ends, fails, or `ctx.shutdown`.
    fn run_once(&mut self, ctx: &mut SourceContext) -> impl Future<Output = Result<Ended, SourceError>> + Send;
}

/// Runs `camera`'s source until shutdown: connect, stream, and reconnect with backoff.
pub async fn supervise(camera: Arc<Camera>, mut source: impl Source, mut ctx: SourceContext) {
    let backoff = || {
        backon::ExponentialBuilder::default()
            .with_min_delay(camera.reconnect_min)
            .with_max_delay(camera.reconnect_max)
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    while !ctx.shutdown.is_cancelled() {
        ctx.counters.connection.set(LinkState::Connecting);
        let outcome = source.run_once(&mut ctx).await;
        if ctx.healthy() {
            delays = backoff(); // a connection that streamed for a while resets the backoff
        }
        // One line per attempt, so a failing camera logs once per backoff step, never a storm.
        let delay = delays.next().unwrap_or(camera.reconnect_max);
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        match outcome {
            Ok(Ended::Stopped) => break,
            Ok(Ended::ByServer) => {
                ctx.counters.set_last_error(Some("the server ended the stream".into()));
                info!(delay_ms, "stream ended by server; reconnecting")
            }
            Err(error) => {
                ctx.counters.set_last_error(Some(error.to_string()));
                warn!(%error, delay_ms, "camera unavailable; retrying")
            }
        }
        ctx.counters.connection.set(LinkState::BackingOff);
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    ctx.counters.connection.set(LinkState::Stopped);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SteppedClock;

    #[test]
    fn stream_time_follows_timestamps_and_never_goes_back_across_connections() {
        let clock = Arc::new(SteppedClock::default());
        let mut timeline = Timeline::new(clock.clone());
        let first = timeline.anchor(10.0);
        let later = first.time_of(12.5).unwrap();
        assert_eq!((later - first.wall).num_milliseconds(), 2500);
        timeline.saw(later);
        clock.step(TimeDelta::hours(-1)); // NTP pulls the clock back during a reconnect
        let second = timeline.anchor(0.0);
        assert!(second.wall > later, "the next connection starts after the last frame");
        clock.step(TimeDelta::hours(2));
        assert!(timeline.anchor(0.0).wall > later + TimeDelta::minutes(59), "a clock ahead is taken as is");
    }

    proptest::proptest! {
        /// Any timestamp a camera or a clip may send, against any anchor: a time within a
        /// century of the anchor's, or none; never a panic, and a day can be added to it.
        #[test]
        fn a_frame_time_is_sound_or_none_for_any_timestamp(
            anchor_pts in proptest::prop_oneof![
                proptest::prelude::Just(0.0f64), -1e12f64..1e12, proptest::num::f64::ANY
            ],
            pts in proptest::prop_oneof![
                proptest::prelude::Just(0.0f64),
                proptest::prelude::Just(-1.0f64),
                proptest::prelude::Just(i64::MAX as f64),
                proptest::prelude::Just(i64::MIN as f64),
                proptest::prelude::Just(f64::NAN),
                proptest::prelude::Just(f64::INFINITY),
                -1e10f64..1e10,
                proptest::num::f64::ANY,
            ],
        ) {
            let anchor = StreamAnchor { wall: Utc::now(), pts_secs: anchor_pts };
            if let Some(at) = anchor.time_of(pts) {
                proptest::prop_assert!((at - anchor.wall).num_days().abs() <= 36_525);
                proptest::prop_assert!(at.checked_add_signed(TimeDelta::days(1)).is_some());
            } else {
                proptest::prop_assert!(!within_span(pts - anchor_pts));
            }
        }
    }
}
