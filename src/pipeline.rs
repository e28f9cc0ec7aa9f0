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
