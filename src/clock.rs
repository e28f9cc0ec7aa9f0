//! The wall clock, injectable. The daemon reads it once per camera connection (to anchor stream
//! time) and for status messages; everything the rules decide runs on stream time instead, so a
//! clock step (NTP after boot on a box without a hardware clock) changes no incident.

use chrono::{DateTime, TimeDelta, Utc};
use std::sync::Mutex;

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock plus an offset that can be stepped, as NTP would: for tests.
#[derive(Debug, Default)]
pub struct SteppedClock {
    offset: Mutex<TimeDelta>,
}

impl SteppedClock {
    /// Moves the clock by `by` (forwards or backwards), at once.
    pub fn step(&self, by: TimeDelta) {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
}

impl Clock for SteppedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether the kernel says the system clock is synchronised (NTP or PTP disciplining it): edge
/// boxes often have no hardware clock and start before NTP does. `None` if it cannot tell.
pub fn is_synchronized() -> Option<bool> {
    let mut timex: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: modes = 0 only reads the kernel's clock state into `timex`.
    let state = unsafe { libc::adjtimex(&mut timex) };
    match state {
        -1 => None,
        libc::TIME_ERROR => Some(false),
        _ => Some(true),
    }
}
