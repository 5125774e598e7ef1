//! A fixed-bucket latency histogram that writers update without a lock.
//!
//! Every writer thread records one observation per pipeline round trip, so recording must
//! cost next to nothing and never make writers wait for each other or for a scrape: one
//! relaxed atomic add on the bucket and one on the sum. A reader (a scrape, the progress
//! line) copies the buckets one by one; an observation landing meanwhile may be in one copy
//! and not in another, which Prometheus tolerates as long as the copy is self-consistent.
//! The snapshot therefore derives its count from the buckets it copied (so the `+Inf` bucket
//! always equals `_count`) instead of keeping a separate counter.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds: 100 us to 10 s. A loopback pipeline of a
/// few commands answers in ~100 us; a 1 MiB pipeline into a busy Redis in tens of ms; past
/// seconds the master's 30 s stall limit is near, so finer steps there would tell nothing new.
pub const BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

pub struct Histogram {
    /// Non-cumulative counts: bucket k counts observations in (BOUNDS_US[k-1], BOUNDS_US[k]];
    /// the last one everything above the largest bound.
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

/// A copy of a histogram at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds, cumulative count), in increasing order, without `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Every observation (the `+Inf` bucket).
    pub count: u64,
    pub sum_seconds: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { buckets: std::array::from_fn(|_| AtomicU64::new(0)), sum_us: AtomicU64::new(0) }
    }
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let k = BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[k].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BOUNDS_US.len());
        for (k, &b) in BOUNDS_US.iter().enumerate() {
            cumulative += self.buckets[k].load(Relaxed);
            buckets.push((b as f64 / 1e6, cumulative));
        }
        cumulative += self.buckets[BOUNDS_US.len()].load(Relaxed);
        HistogramSnapshot { buckets, count: cumulative, sum_seconds: self.sum_us.load(Relaxed) as f64 / 1e6 }
    }
}

impl HistogramSnapshot {
    /// The upper bound of the bucket holding quantile `q` (0..=1): an upper estimate, as
    /// precise as the buckets. `None` without observations; `f64::INFINITY` past the last
    /// bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        Some(self.buckets.iter().find(|(_, c)| *c >= rank).map_or(f64::INFINITY, |(b, _)| *b))
    }

    /// Mean observation in seconds.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_seconds / self.count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = Histogram::default();
        h.record(Duration::from_micros(100)); // exactly on the first bound: in it
        h.record(Duration::from_micros(101));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(60)); // past every bound
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets[0], (0.0001, 1));
        assert_eq!(s.buckets[1], (0.00025, 2));
        assert_eq!(s.buckets.last().unwrap(), &(10.0, 3));
        assert!(s.buckets.windows(2).all(|w| w[0].1 <= w[1].1 && w[0].0 < w[1].0));
        assert!((s.sum_seconds - 60.003201).abs() < 1e-9, "{}", s.sum_seconds);
        assert_eq!(s.quantile(0.5), Some(0.00025));
        assert_eq!(s.quantile(0.75), Some(0.005));
        assert_eq!(s.quantile(1.0), Some(f64::INFINITY));
        assert_eq!(HistogramSnapshot::default().quantile(0.5), None);
    }
}
