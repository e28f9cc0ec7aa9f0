//! The edges between stages: bounded queues generic over their item, each with its policy when
//! full as data and its counters. The item types belong to the stages that produce them; this
//! module names no stage, and only `app` knows both ends, so the same stages run live (frames
//! may be dropped) or in replay (nothing is).
//!
//! | edge (live)              | capacity           | when full                                     |
//! |--------------------------|--------------------|-----------------------------------------------|
//! | source → decode          | 64 AUs             | drop the newest; the source skips to a keyframe |
//! | decode → model (→ model) | 1 frame per camera | newest wins per camera; the replaced one counted |
//! | detect → rules           | 4                  | drop the newest result, counted                |
//! | rules → replay output    | 256                | block: reports are never dropped               |
//!
//! Live, the rules commit each report to the outbox on disk (`crate::outbox`) instead of an
//! edge: it is bounded by bytes, and the publisher takes reports from there.
//!
//! In replay every edge blocks ([`EdgeSpec::lossless`]), so a clip gives the same result however
//! fast the machine is.
//!
//! An edge is used from threads (blocking `send`/`recv`) and from async tasks (`send_async`/
//! `recv_async`) alike; the async side never blocks a runtime worker.

use crate::telemetry::Counter;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// What an edge does with an item when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// The sender waits for room: nothing is lost, a slow consumer slows the producer.
    Block,
    /// The new item is discarded and counted; the sender hears [`Sent::Dropped`].
    DropNewest,
    /// Each sender key holds at most one waiting item: a newer one replaces it (counted) and
    /// keeps its place. The receiver takes the waiting key served least recently, so under
    /// overload every key loses the same share, whatever the phase of its arrivals.
    NewestWinsPerKey,
}

/// An edge's name, capacity (items waiting, in all keys) and policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeSpec {
    pub name: &'static str,
    pub capacity: usize,
    pub when_full: WhenFull,
}

impl EdgeSpec {
    /// The same edge, but blocking when full: nothing is dropped (replay).
    pub const fn lossless(self) -> Self {
        Self { when_full: WhenFull::Block, ..self }
    }
}

/// source → decode. Dropping one access unit corrupts every frame up to the next keyframe, so a
/// source that hears [`Sent::Dropped`] skips to the next keyframe itself.
pub const ENCODED: EdgeSpec = EdgeSpec { name: "encoded", capacity: 64, when_full: WhenFull::DropNewest };
/// decode → detect, one key per camera: a slow detector sees each camera's newest frame, and a
/// busy camera cannot starve the others. Capacity is per key under this policy.
pub const FRAMES: EdgeSpec = EdgeSpec { name: "frames", capacity: 1, when_full: WhenFull::NewestWinsPerKey };
/// detect → rules: rules are cheap, so a full edge means they are stuck; drop, don't wait.
pub const DETECTIONS: EdgeSpec = EdgeSpec { name: "detections", capacity: 4, when_full: WhenFull::DropNewest };
/// rules → replay output: reports are the product; a full edge makes the rules wait.
pub const REPORTS: EdgeSpec = EdgeSpec { name: "reports", capacity: 256, when_full: WhenFull::Block };

/// What one sender key put through an edge.
#[derive(Debug, Default)]
pub struct EdgeCounters {
    /// Items accepted (including those that later replaced another).
    pub sent: Counter,
    /// Items discarded by the policy: the newest under `DropNewest`, the replaced one under
    /// `NewestWinsPerKey`. Intended drops; `Block` never drops.
    pub dropped: Counter,
}

/// The receiving side has gone, or the edge was closed: the stage downstream stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// How a send went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Queued,
    /// The item was discarded (`DropNewest`).
    Dropped,
    /// The item took the place of this key's older one (`NewestWinsPerKey`).
    Replaced,
}

struct Shared<T> {
    spec: EdgeSpec,
    state: Mutex<State<T>>,
    /// Wakes threads blocked in `send`/`recv`.
    threads: Condvar,
    /// Wakes tasks awaiting `send_async`/`recv_async`.
    tasks: tokio::sync::Notify,
}

struct State<T> {
    items: VecDeque<(usize, T)>,
    senders: usize,
    receiver: bool,
    closed: bool,
    /// Per key, what it put through (keys are added, never taken back: see [`EdgeSender::new_key`]).
    counters: Vec<Arc<EdgeCounters>>,
    /// Per key, when it was last served (a count of receptions; 0: never).
    served: Vec<u64>,
    receptions: u64,
}

/// Creates an edge with one sender key per entry of `counters` (one for a plain edge; none for
/// one shared by cameras, which add theirs with [`EdgeSender::new_key`]). The sender returned
/// has key 0 (without counters it sends nothing: it only makes keys); [`EdgeSender::keyed`]
/// makes others.
pub fn edge<T>(spec: EdgeSpec, counters: Vec<Arc<EdgeCounters>>) -> (EdgeSender<T>, EdgeReceiver<T>) {
    assert!(spec.capacity > 0, "an edge needs room for an item");
    let shared = Arc::new(Shared {
        spec,
        state: Mutex::new(State {
            items: VecDeque::new(),
            senders: 1,
            receiver: true,
            closed: false,
            served: vec![0; counters.len()],
            counters,
            receptions: 0,
        }),
        threads: Condvar::new(),
        tasks: tokio::sync::Notify::new(),
    });
    (EdgeSender { shared: shared.clone(), key: 0 }, EdgeReceiver { shared })
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic elsewhere never leaves the queue half-changed: every change is one call.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        self.threads.notify_all();
        self.tasks.notify_waiters();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake();
    }

    /// One attempt to send; `Err(item)` means "full, wait and retry" (only under `Block`).
    fn try_send(&self, key: usize, item: T) -> Result<Result<Sent, Closed>, T> {
        let mut s = self.lock();
        if s.closed || !s.receiver {
            return Ok(Err(Closed));
        }
        // Keys are checked when a sender is made (`edge`, `keyed`).
        let Some(counters) = s.counters.get(key).cloned() else { return Ok(Err(Closed)) };
        let outcome = match self.spec.when_full {
            WhenFull::NewestWinsPerKey => match s.items.iter_mut().find(|(k, _)| *k == key) {
                Some(waiting) => {
                    waiting.1 = item;
                    counters.dropped.inc();
                    Sent::Replaced
                }
                None => {
                    s.items.push_back((key, item));
                    Sent::Queued
                }
            },
            _ if s.items.len() < self.spec.capacity => {
                s.items.push_back((key, item));
                Sent::Queued
            }
            WhenFull::DropNewest => {
                counters.dropped.inc();
                return Ok(Ok(Sent::Dropped));
            }
            WhenFull::Block => return Err(item),
        };
        counters.sent.inc();
        drop(s);
        self.wake();
        Ok(Ok(outcome))
    }

    /// One attempt to receive up to `max` items (each of a different key under
    /// `NewestWinsPerKey`); `None` means "empty, wait and retry", an empty batch "ended".
    fn try_recv(&self, max: usize) -> Option<Vec<(usize, T)>> {
        let mut s = self.lock();
        if s.closed {
            return Some(Vec::new());
        }
        let mut batch = Vec::new();
        while batch.len() < max {
            let next = match self.spec.when_full {
                WhenFull::NewestWinsPerKey => {
                    let served = |key: usize| s.served.get(key).copied().unwrap_or_default();
                    let least_recent = s.items.iter().enumerate().min_by_key(|(_, (key, _))| served(*key));
                    least_recent.map(|(i, _)| i).and_then(|i| s.items.remove(i))
                }
                _ => s.items.pop_front(),
            };
            let Some(item) = next else { break };
            s.receptions += 1;
            let now = s.receptions;
            if let Some(served) = s.served.get_mut(item.0) {
                *served = now;
            }
            batch.push(item);
        }
        match batch.is_empty() {
            false => {
                drop(s);
                self.wake();
                Some(batch)
            }
            true if s.senders == 0 => Some(batch),
            true => None,
        }
    }
}

/// The producing side; clone it for more producers of the same key, [`keyed`](Self::keyed) for
/// another key.
pub struct EdgeSender<T> {
    shared: Arc<Shared<T>>,
    key: usize,
}

impl<T> EdgeSender<T> {
    /// A sender for `key` (an index into the edge's counters).
    pub fn keyed(&self, key: usize) -> Self {
        let mut s = self.shared.lock();
        assert!(key < s.counters.len(), "key {key} of edge {} out of range", self.shared.spec.name);
        s.senders += 1;
        Self { shared: self.shared.clone(), key }
    }

    /// A sender for a key of its own, added now with its `counters` (a camera started by a
    /// reload). Keys are never reused: a stopped camera's key just falls silent.
    pub fn new_key(&self, counters: Arc<EdgeCounters>) -> Self {
        let mut s = self.shared.lock();
        s.counters.push(counters);
        s.served.push(0);
        s.senders += 1;
        Self { shared: self.shared.clone(), key: s.counters.len() - 1 }
    }

    /// This sender's key.
    pub fn key(&self) -> usize {
        self.key
    }

    /// Sends from a thread, waiting for room if the edge blocks.
    pub fn send(&self, mut item: T) -> Result<Sent, Closed> {
        loop {
            match self.shared.try_send(self.key, item) {
                Ok(result) => return result,
                Err(back) => item = back,
            }
            let s = self.shared.lock();
            if s.items.len() >= self.shared.spec.capacity && !s.closed && s.receiver {
                drop(self.shared.threads.wait(s).unwrap_or_else(|e| e.into_inner()));
            }
        }
    }

    /// Sends from an async task, awaiting room if the edge blocks.
    pub async fn send_async(&self, mut item: T) -> Result<Sent, Closed> {
        loop {
            let notified = self.shared.tasks.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.shared.try_send(self.key, item) {
                Ok(result) => return result,
                Err(back) => item = back,
            }
            notified.await;
        }
    }
}

impl<T> Clone for EdgeSender<T> {
    fn clone(&self) -> Self {
        self.keyed(self.key)
    }
}

impl<T> Drop for EdgeSender<T> {
    fn drop(&mut self) {
        self.shared.lock().senders -= 1;
        self.shared.wake();
    }
}

/// The consuming side. Once every sender is gone it drains what is left, then ends.
pub struct EdgeReceiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> EdgeReceiver<T> {
    /// Receives from a thread with the sender's key; `None` once closed or drained.
    pub fn recv_keyed(&self) -> Option<(usize, T)> {
        self.recv_batch(1).pop()
    }

    /// Receives from a thread as many items as are waiting, at most `max`, with their keys
    /// (keys served least recently first); waits while there are none. Empty once closed or
    /// drained.
    pub fn recv_batch(&self, max: usize) -> Vec<(usize, T)> {
        loop {
            if let Some(batch) = self.shared.try_recv(max) {
                return batch;
            }
            let s = self.shared.lock();
            if s.items.is_empty() && s.senders > 0 && !s.closed {
                drop(self.shared.threads.wait(s).unwrap_or_else(|e| e.into_inner()));
            }
        }
    }

    /// Receives from a thread; `None` once closed or drained.
    pub fn recv(&self) -> Option<T> {
        self.recv_keyed().map(|(_, item)| item)
    }

    /// Receives from an async task; `None` once closed or drained.
    pub async fn recv_async(&self) -> Option<T> {
        loop {
            let notified = self.shared.tasks.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(mut batch) = self.shared.try_recv(1) {
                return batch.pop().map(|(_, item)| item);
            }
            notified.await;
        }
    }

    /// Items waiting now.
    pub fn depth(&self) -> usize {
        self.shared.lock().items.len()
    }

    /// Stops the edge at once: waiting items are discarded, senders hear [`Closed`], and
    /// receivers get `None`. Used at shutdown, where a frame not yet looked at has no value.
    pub fn close(&self) {
        self.shared.close();
    }

    /// A handle that can close this edge from elsewhere (the shutdown path).
    pub fn closer(&self) -> EdgeCloser
    where
        T: Send + 'static,
    {
        let shared = self.shared.clone();
        EdgeCloser(Box::new(move || shared.close()))
    }
}

impl<T> Drop for EdgeReceiver<T> {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.receiver = false;
        s.items.clear();
        drop(s);
        self.shared.wake();
    }
}

/// Closes an edge without knowing its item type (see [`EdgeReceiver::close`]).
pub struct EdgeCloser(Box<dyn Fn() + Send + Sync>);

impl EdgeCloser {
    pub fn close(&self) {
        (self.0)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn counters(n: usize) -> Vec<Arc<EdgeCounters>> {
        (0..n).map(|_| Arc::default()).collect()
    }

    /// Four keys each sending one item per second to a consumer that can take 3.5 a second,
    /// all arriving in the same phase: every key gets within 10% of the others' share.
    #[test]
    fn under_overload_every_key_loses_the_same_share() {
        let c = counters(4);
        let (tx0, rx) = edge::<u32>(FRAMES, c.clone());
        let senders: Vec<_> = (0..4).map(|k| tx0.keyed(k)).collect();
        let mut served = [0u32; 4];
        // Time in ms; the consumer takes 280 ms per item; key k sends at 1000 * s + 10 * k.
        let mut free_at = 0;
        for ms in 0..60_000u32 {
            for (k, tx) in senders.iter().enumerate() {
                if ms % 1000 == 10 * k as u32 {
                    tx.send(ms).unwrap();
                }
            }
            if ms >= free_at
                && let Some((key, _)) = rx.shared.try_recv(1).and_then(|mut b| b.pop())
            {
                served[key] += 1;
                free_at = ms + 280;
            }
        }
        let (lo, hi) = (*served.iter().min().unwrap() as f64, *served.iter().max().unwrap() as f64);
        assert!(hi / lo <= 1.1, "shares {served:?}");
        assert!(served.iter().sum::<u32>() >= 200, "the consumer stays busy: {served:?}");
    }

    #[test]
    fn newest_wins_per_key_keeps_each_keys_turn() {
        let c = counters(2);
        let (tx0, rx) = edge::<f64>(FRAMES, c.clone());
        let tx1 = tx0.keyed(1);
        assert_eq!(tx0.send(1.0), Ok(Sent::Queued));
        assert_eq!(tx1.send(1.5), Ok(Sent::Queued));
        assert_eq!(tx0.send(2.0), Ok(Sent::Replaced)); // replaces key 0's waiting item, keeps its turn
        assert_eq!(rx.recv_keyed(), Some((0, 2.0)));
        assert_eq!(rx.recv_keyed(), Some((1, 1.5)));
        assert_eq!((c[0].dropped.get(), c[1].dropped.get(), c[0].sent.get()), (1, 0, 2));
        rx.close();
        assert!(rx.recv().is_none());
        assert_eq!(tx0.send(3.0), Err(Closed));
    }

    #[test]
    fn a_batch_takes_each_waiting_key_once_least_recently_served_first() {
        let (tx0, rx) = edge::<u32>(FRAMES, counters(3));
        let (tx1, tx2) = (tx0.keyed(1), tx0.keyed(2));
        tx1.send(10).unwrap();
        assert_eq!(rx.recv_batch(4), vec![(1, 10)]);
        for (tx, v) in [(&tx0, 0), (&tx1, 11), (&tx2, 20), (&tx0, 1)] {
            tx.send(v).unwrap();
        }
        assert_eq!(rx.recv_batch(2), vec![(0, 1), (2, 20)], "key 1 was served last; key 0's newest");
        assert_eq!(rx.recv_batch(2), vec![(1, 11)]);
        drop((tx0, tx1, tx2));
        assert!(rx.recv_batch(2).is_empty(), "ended");
    }

    #[test]
    fn drop_newest_discards_and_counts_when_full() {
        let c = counters(1);
        let spec = EdgeSpec { name: "t", capacity: 2, when_full: WhenFull::DropNewest };
        let (tx, rx) = edge::<u32>(spec, c.clone());
        assert_eq!(tx.send(1), Ok(Sent::Queued));
        assert_eq!(tx.send(2), Ok(Sent::Queued));
        assert_eq!(tx.send(3), Ok(Sent::Dropped));
        assert_eq!((rx.recv(), rx.recv()), (Some(1), Some(2)));
        assert_eq!((c[0].sent.get(), c[0].dropped.get()), (2, 1));
        drop(tx);
        assert_eq!(rx.recv(), None, "all senders gone and drained");
        let (tx, rx) = edge::<u32>(spec, counters(1));
        drop(rx);
        assert_eq!(tx.send(1), Err(Closed));
    }

    #[test]
    fn a_blocking_edge_loses_nothing_between_a_thread_and_a_task() {
        let spec = EdgeSpec { name: "t", capacity: 2, when_full: WhenFull::Block };
        let c = counters(1);
        let (tx, rx) = edge::<u32>(spec, c.clone());
        let producer = std::thread::spawn(move || {
            for i in 0..1000 {
                tx.send(i).unwrap();
            }
        });
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let got = rt.block_on(async {
            let mut got = Vec::new();
            while let Some(i) = rx.recv_async().await {
                got.push(i);
                if i % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await; // let the producer fill it up
                }
            }
            got
        });
        producer.join().unwrap();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert_eq!((c[0].sent.get(), c[0].dropped.get()), (1000, 0));
    }

    #[test]
    fn a_task_blocked_on_a_full_edge_wakes_when_a_thread_makes_room_or_closes() {
        let spec = EdgeSpec { name: "t", capacity: 1, when_full: WhenFull::Block };
        let (tx, rx) = edge::<u32>(spec, counters(1));
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            tx.send_async(1).await.unwrap();
            let consumer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                let first = rx.recv();
                std::thread::sleep(Duration::from_millis(50));
                rx.close();
                first
            });
            assert_eq!(tx.send_async(2).await, Ok(Sent::Queued), "room made by the thread");
            assert_eq!(tx.send_async(3).await, Err(Closed), "closed while waiting");
            assert_eq!(consumer.join().unwrap(), Some(1));
        });
    }
}
