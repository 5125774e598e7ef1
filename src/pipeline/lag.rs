//! The lag of a flow in milliseconds: how long the oldest journal record that df2redis has
//! read from the master, and the target has not yet applied, has been waiting.
//!
//! Why this measure: it is zero when the target keeps up (even on an idle master, unlike "age
//! of the last applied record"), it grows steadily while the target is stuck (unlike "delay of
//! the last applied batch", which freezes), and it needs no clock shared with the master (the
//! journal carries no timestamps). What it leaves out: time the records spent in the master
//! and in our socket's receive buffer before the reader read them; a reader blocked on a full
//! queue makes that part grow, and the lag in records (received minus applied LSN) still
//! shows only what was decoded.
//!
//! The reader notes when each read began and, for every batch that completes journal records,
//! the last LSN of the batch with that time. The queue is trimmed of applied batches on every
//! push and every reading, so it holds at most the batches in flight between reader and target
//! (bounded by the channel capacity and the pipelines in flight).

use std::collections::VecDeque;
use std::time::Instant;

use parking_lot::Mutex;

#[derive(Default)]
pub struct Transit {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// When the read being processed began.
    read_at: Option<Instant>,
    /// (last LSN of a queued batch, when the read that brought its first record began).
    queued: VecDeque<(u64, Instant)>,
}

impl Transit {
    /// The reader has just read bytes from the master.
    pub fn read_now(&self) {
        self.inner.lock().read_at = Some(Instant::now());
    }

    /// The reader queued a batch whose last journal record has LSN `last_lsn` (if any).
    /// `applied_next` is the flow's applied LSN, to trim what the writer already applied.
    pub fn queued(&self, last_lsn: Option<u64>, applied_next: u64) {
        let Some(lsn) = last_lsn else { return };
        let mut g = self.inner.lock();
        trim(&mut g.queued, applied_next);
        let at = g.read_at.unwrap_or_else(Instant::now);
        g.queued.push_back((lsn, at));
    }

    /// Milliseconds the oldest unapplied record has waited, 0 when everything read is applied.
    pub fn lag_ms(&self, applied_next: u64, now: Instant) -> u64 {
        let mut g = self.inner.lock();
        trim(&mut g.queued, applied_next);
        g.queued.front().map_or(0, |&(_, at)| now.saturating_duration_since(at).as_millis() as u64)
    }
}

/// Drop the batches whose last record is applied (`lsn < applied_next`).
fn trim(q: &mut VecDeque<(u64, Instant)>, applied_next: u64) {
    while q.front().is_some_and(|&(lsn, _)| lsn < applied_next) {
        q.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_oldest_unapplied_batch_sets_the_lag() {
        let t = Transit::default();
        let now = Instant::now();
        assert_eq!(t.lag_ms(0, now), 0);
        t.read_now();
        t.queued(None, 0); // a snapshot-only batch: no records
        t.queued(Some(10), 0);
        t.queued(Some(20), 0);
        let later = now + Duration::from_secs(5);
        assert!(t.lag_ms(1, later) >= 4_000, "records 1..=10 wait");
        assert!(t.lag_ms(11, later) >= 4_000, "records 11..=20 still wait");
        assert_eq!(t.lag_ms(21, later), 0, "all applied");
        assert_eq!(t.inner.lock().queued.len(), 0);
    }
}
