//! Picks which decoded frames reach the detector: at most `fps` per second of stream time.

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
        // Small tolerance: timestamps in a 90 kHz clock rarely land exactly on the slot.
        let slack = self.interval * 0.01;
        match self.next {
            // Time went backwards (new stream, wrap): start over.
            Some(next) if pts_secs + slack < next - self.interval => {
                self.next = Some(pts_secs + self.interval);
                true
            }
            Some(next) if pts_secs + slack < next => false,
            Some(next) => {
                // Skip whole slots that passed without a frame, so a gap doesn't cause a burst.
                let missed = ((pts_secs - next) / self.interval).floor().max(0.0);
                self.next = Some(next + (missed + 1.0) * self.interval);
                true
            }
            None => {
                self.next = Some(pts_secs + self.interval);
                true
            }
        }
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
}
