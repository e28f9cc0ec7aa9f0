//! Picks which decoded frames reach the detector: at most `fps` per second of stream time, and
//! tells the decoder which frames it can leave undecoded (`decode = "sampled"`).

/// Accepts a frame when at least one interval of stream time has passed since the last one.
/// Intervals are counted from the previous *slot*, not the previous frame, so 25 fps sampled at
/// 2 fps yields 2 frames per second rather than drifting down to 1.9.
#[derive(Debug, Clone)]
pub struct Sampler {
    interval: f64,
    next: Option<f64>,
}

impl Sampler {
    pub fn new(fps: f64) -> Self {
        Self { interval: 1.0 / fps, next: None }
    }

    pub fn accept(&mut self, pts_secs: f64) -> bool {
        match self.slot_after(pts_secs) {
            Some(next) => {
                self.next = Some(next);
                true
            }
            None => false,
        }
    }

    /// Whether a frame at `pts_secs` would be accepted now.
    pub fn would_accept(&self, pts_secs: f64) -> bool {
        self.slot_after(pts_secs).is_some()
    }

    /// Whether the next frame to take may as well be one at `pts_secs` (a keyframe to come):
    /// no slot falls due before it, so the frames up to it are not needed.
    pub fn can_wait_for(&self, pts_secs: f64) -> bool {
        self.next.is_some_and(|next| pts_secs <= next + self.slack())
    }

    /// Small tolerance: timestamps in a 90 kHz clock rarely land exactly on the slot.
    fn slack(&self) -> f64 {
        self.interval * 0.01
    }

    /// The slot after the one a frame at `pts_secs` takes, or `None` if it is not taken.
    fn slot_after(&self, pts_secs: f64) -> Option<f64> {
        let slack = self.slack();
        match self.next {
            // Time went backwards (new stream, wrap): start over.
            Some(next) if pts_secs + slack < next - self.interval => Some(pts_secs + self.interval),
            Some(next) if pts_secs + slack < next => None,
            Some(next) => {
                // Skip whole slots that passed without a frame, so a gap doesn't cause a burst.
                let missed = ((pts_secs - next) / self.interval).floor().max(0.0);
                Some(next + (missed + 1.0) * self.interval)
            }
            None => Some(pts_secs + self.interval),
        }
    }
}

/// When the next keyframe is expected on one connection: the last one plus the spacing before
/// it. Cameras send keyframes at a fixed interval (their GOP); if one comes late, the spacing
/// is measured again from it.
#[derive(Debug, Clone, Default)]
pub struct KeyframeClock {
    last: Option<f64>,
    spacing: Option<f64>,
}

impl KeyframeClock {
    pub fn keyframe(&mut self, pts_secs: f64) {
        self.spacing = self.last.map(|last| pts_secs - last).filter(|s| *s > 0.0);
        self.last = Some(pts_secs);
    }

    /// The expected time of the next keyframe, once two have been seen.
    pub fn next(&self) -> Option<f64> {
        Some(self.last? + self.spacing?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(fps_in: f64, fps_out: f64, secs: f64) -> usize {
        let mut s = Sampler::new(fps_out);
        (0..(fps_in * secs) as usize).filter(|i| s.accept(*i as f64 / fps_in)).count()
    }

    #[test]
    fn samples_at_the_requested_rate() {
        assert_eq!(count(25.0, 2.0, 10.0), 20);
        assert_eq!(count(30.0, 5.0, 10.0), 50);
        assert_eq!(count(10.0, 10.0, 10.0), 100);
        assert_eq!(count(5.0, 10.0, 10.0), 50, "never more than the stream has");
    }

    #[test]
    fn a_gap_does_not_cause_a_burst_and_time_going_back_restarts() {
        let mut s = Sampler::new(1.0);
        assert!(s.accept(0.0));
        assert!(s.accept(5.3));
        assert!(!s.accept(5.6));
        assert!(s.accept(6.0));
        assert!(s.accept(0.1), "a new stream starts over");
        assert!(!s.accept(0.5));
    }

    #[test]
    fn would_accept_answers_as_accept_does_without_taking_the_slot() {
        let mut s = Sampler::new(1.0);
        assert!(s.would_accept(0.0));
        assert!(s.accept(0.0));
        assert!(!s.would_accept(0.5));
        assert!(s.would_accept(1.0) && s.would_accept(1.0), "asking twice takes nothing");
        assert!(s.accept(1.0));
    }

    #[test]
    fn waiting_for_a_keyframe_is_fine_when_no_slot_falls_due_before_it() {
        let mut s = Sampler::new(1.0);
        assert!(!s.can_wait_for(2.0), "nothing sampled yet: the first frame is wanted now");
        assert!(s.accept(0.0));
        assert!(s.can_wait_for(0.5) && s.can_wait_for(1.0) && s.can_wait_for(1.005));
        assert!(!s.can_wait_for(1.5), "the slot at 1 s falls due before a keyframe at 1.5 s");
        assert!(s.accept(1.04));
        assert!(s.can_wait_for(2.0));
    }

    #[test]
    fn the_next_keyframe_is_expected_one_spacing_after_the_last() {
        let mut k = KeyframeClock::default();
        assert_eq!(k.next(), None);
        k.keyframe(10.0);
        assert_eq!(k.next(), None, "one keyframe says nothing of the spacing");
        k.keyframe(12.0);
        assert_eq!(k.next(), Some(14.0));
        k.keyframe(15.0);
        assert_eq!(k.next(), Some(18.0), "a late keyframe: measured again");
        k.keyframe(1.0);
        assert_eq!(k.next(), None, "time going back says nothing of the spacing");
    }
}
