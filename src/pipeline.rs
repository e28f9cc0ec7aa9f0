//! Every edge between stages, its capacity and what happens when it is full — kept in one
//! place so the whole flow control of the daemon can be read on one screen.
//!
//! | edge                     | capacity | when full                                              |
//! |--------------------------|----------|--------------------------------------------------------|
//! | source → decode          | 64 AUs   | drop, count, and skip until the next keyframe          |
//! | decode → detect          | 1 frame per camera | newest wins; the replaced frame is counted   |
//! | detect → rules           | 4        | drop the newest result, counted                         |
//! | rules → publish (reports)| 256      | block: reports are never dropped                        |

use crate::decode::Frame;
use crate::detect::Detection;
use crate::report::Report;
use crate::source::EncodedFrame;
use crate::telemetry::CameraCounters;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::mpsc;

pub const ENCODED_CAPACITY: usize = 64;
pub const DETECTIONS_CAPACITY: usize = 4;
pub const REPORTS_CAPACITY: usize = 256;

/// The receiving side has gone: the stage downstream stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// source → decode. Dropping one access unit corrupts every frame up to the next keyframe, so
/// after a drop the sender discards everything until a keyframe arrives.
pub struct EncodedSender {
    tx: mpsc::Sender<EncodedFrame>,
    resync: bool,
    counters: Arc<CameraCounters>,
}

pub fn encoded(counters: Arc<CameraCounters>) -> (EncodedSender, mpsc::Receiver<EncodedFrame>) {
    let (tx, rx) = mpsc::channel(ENCODED_CAPACITY);
    (EncodedSender { tx, resync: false, counters }, rx)
}

impl EncodedSender {
    pub fn send(&mut self, frame: EncodedFrame) -> Result<(), Closed> {
        if self.resync && !frame.keyframe {
            self.counters.encoded_dropped.inc();
            return Ok(());
        }
        self.resync = false;
        match self.tx.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.counters.encoded_dropped.inc();
                self.resync = true;
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed),
        }
    }
}

/// decode → detect: one slot per camera; the detector serves cameras in the order their slots
/// filled, so a busy camera cannot starve the others, and a slow detector sees fresh frames.
pub struct FrameQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
    counters: Vec<Arc<CameraCounters>>,
}

struct QueueState {
    slots: Vec<Option<Arc<Frame>>>,
    order: VecDeque<usize>,
    closed: bool,
}

impl FrameQueue {
    /// One slot per camera, indexed like `counters`.
    pub fn new(counters: Vec<Arc<CameraCounters>>) -> Arc<Self> {
        let state = QueueState { slots: vec![None; counters.len()], order: VecDeque::new(), closed: false };
        Arc::new(Self { state: Mutex::new(state), ready: Condvar::new(), counters })
    }

    /// Offers `camera`'s newest frame; an older frame still waiting is replaced and counted.
    pub fn put(&self, camera: usize, frame: Arc<Frame>) -> Result<(), Closed> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.closed {
            return Err(Closed);
        }
        if s.slots[camera].replace(frame).is_some() {
            self.counters[camera].frames_replaced.inc();
        } else {
            s.order.push_back(camera);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Waits for the next camera with a frame; `None` once closed.
    pub fn take(&self) -> Option<(usize, Arc<Frame>)> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if s.closed {
                return None;
            }
            if let Some(camera) = s.order.pop_front() {
                let frame = s.slots[camera].take().expect("a camera is queued only while its slot is full");
                return Some((camera, frame));
            }
            s = self.ready.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.ready.notify_all();
    }
}

/// What the detector hands to a camera's rules.
pub struct Detected {
    pub frame: Arc<Frame>,
    pub detections: Vec<Detection>,
}

/// detect → rules: rules are cheap, so a full channel means they are stuck; drop, don't wait.
pub struct DetectedSender {
    tx: mpsc::Sender<Detected>,
    counters: Arc<CameraCounters>,
}

pub fn detected(counters: Arc<CameraCounters>) -> (DetectedSender, mpsc::Receiver<Detected>) {
    let (tx, rx) = mpsc::channel(DETECTIONS_CAPACITY);
    (DetectedSender { tx, counters }, rx)
}

impl DetectedSender {
    pub fn send(&self, item: Detected) -> Result<(), Closed> {
        match self.tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.counters.detections_dropped.inc();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed),
        }
    }
}

/// rules → publish: reports are the product; a full channel makes the rules wait.
pub fn reports() -> (mpsc::Sender<Report>, mpsc::Receiver<Report>) {
    mpsc::channel(REPORTS_CAPACITY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::VideoCodec;

    fn frame(pts_secs: f64) -> Arc<Frame> {
        Arc::new(Frame {
            width: 2,
            height: 2,
            y: vec![0; 4],
            u: vec![128],
            v: vec![128],
            full_range: false,
            pts_secs,
            captured_at: chrono::Utc::now(),
        })
    }

    fn au(keyframe: bool) -> EncodedFrame {
        EncodedFrame { codec: VideoCodec::H264, data: vec![0, 0, 0, 1], pts_secs: 0.0, keyframe, connection: 1 }
    }

    #[test]
    fn frame_queue_keeps_the_newest_frame_and_serves_cameras_in_turn() {
        let counters: Vec<Arc<CameraCounters>> = (0..2).map(|_| Arc::default()).collect();
        let q = FrameQueue::new(counters.clone());
        q.put(0, frame(1.0)).unwrap();
        q.put(1, frame(1.5)).unwrap();
        q.put(0, frame(2.0)).unwrap(); // replaces camera 0's waiting frame, keeps its turn
        let (cam, f) = q.take().unwrap();
        assert_eq!((cam, f.pts_secs), (0, 2.0));
        assert_eq!(q.take().map(|(c, f)| (c, f.pts_secs)), Some((1, 1.5)));
        assert_eq!((counters[0].frames_replaced.get(), counters[1].frames_replaced.get()), (1, 0));
        q.close();
        assert!(q.take().is_none());
        assert_eq!(q.put(0, frame(3.0)), Err(Closed));
    }

    #[test]
    fn a_full_encoded_channel_drops_until_the_next_keyframe() {
        let counters = Arc::new(CameraCounters::default());
        let (mut tx, mut rx) = encoded(counters.clone());
        for _ in 0..ENCODED_CAPACITY {
            tx.send(au(false)).unwrap();
        }
        tx.send(au(false)).unwrap(); // full: dropped
        while rx.try_recv().is_ok() {}
        tx.send(au(false)).unwrap(); // room again, but not a keyframe: dropped
        assert!(rx.try_recv().is_err());
        tx.send(au(true)).unwrap();
        tx.send(au(false)).unwrap();
        assert!(rx.try_recv().unwrap().keyframe);
        assert!(!rx.try_recv().unwrap().keyframe);
        assert_eq!(counters.encoded_dropped.get(), 2);
        drop(rx);
        assert_eq!(tx.send(au(true)), Err(Closed));
    }
}
