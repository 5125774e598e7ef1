//! `--max-keys-per-s`: spread the check's reads over time so that a production server hardly
//! notices it. Sleeping here is the point (pacing), not a way to wait for something.

use std::time::{Duration, Instant};

/// How far the pace may fall behind and then catch up in a burst.
const BURST: Duration = Duration::from_secs(1);

pub struct Pace {
    per_s: Option<u64>,
    /// When the next key may be read.
    next: Instant,
}

impl Pace {
    /// `None`: no limit.
    pub fn new(per_s: Option<u64>) -> Pace {
        Pace { per_s: per_s.filter(|&r| r > 0), next: Instant::now() }
    }

    /// Keys per batch that keep about ten batches a second under the limit.
    pub fn batch(&self, max: usize) -> usize {
        self.per_s.map_or(max, |r| ((r / 10) as usize).clamp(1, max))
    }

    /// Wait until `n` more keys may be read.
    pub fn take(&mut self, n: u64) {
        let d = self.delay(n, Instant::now());
        if !d.is_zero() {
            std::thread::sleep(d);
        }
    }

    /// How long to wait at `now` before reading `n` keys (and book them).
    fn delay(&mut self, n: u64, now: Instant) -> Duration {
        let Some(r) = self.per_s else { return Duration::ZERO };
        if n == 0 {
            return Duration::ZERO;
        }
        let floor = now.checked_sub(BURST).unwrap_or(now);
        if self.next < floor {
            self.next = floor;
        }
        let start = self.next;
        self.next += Duration::from_secs_f64(n as f64 / r as f64);
        start.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_rate_with_a_bounded_burst() {
        let mut p = Pace::new(Some(100));
        let t0 = Instant::now();
        p.next = t0;
        // 100 keys at once: no wait; the next 100 wait a second.
        assert_eq!(p.delay(100, t0), Duration::ZERO);
        assert_eq!(p.delay(100, t0), Duration::from_secs(1));
        assert_eq!(p.delay(50, t0), Duration::from_secs(2));
        // Idle for a minute: at most one second of credit.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(p.delay(100, later), Duration::ZERO);
        assert_eq!(p.delay(100, later), Duration::ZERO);
        assert_eq!(p.delay(100, later), Duration::from_secs(1));
        assert_eq!(Pace::new(None).delay(1_000_000, t0), Duration::ZERO);
        assert_eq!(Pace::new(Some(50)).batch(256), 5);
        assert_eq!(Pace::new(Some(5)).batch(256), 1);
        assert_eq!(Pace::new(None).batch(256), 256);
    }
}
