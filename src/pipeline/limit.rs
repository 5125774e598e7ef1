//! `--max-ops-per-s` / `--max-bytes-per-s`: caps on what the writers send to the target, shared
//! by all of them, in both phases.
//!
//! Each cap is a virtual clock (GCRA, the token bucket's twin): `next` is when the next unit
//! may go; a batch books its commands (or bytes) by moving `next` forward by `cost / rate`, and
//! waits until the slot it booked, which may be now. Idle time earns at most [`BURST`] of
//! credit. Booking takes a lock for a few instructions; the wait happens after the lock is
//! released, so a writer waiting for its slot never holds up another writer's booking.
//!
//! A cap that holds the writers back also holds back the flow readers, whose queues fill: the
//! readers name the cap in their stall warning ([`Limiter::cause_since`]), because the master
//! cancels a replica whose flow is not read for 30 s.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::shared::Stopper;
use crate::replay::Cmd;

/// How much unused rate may accumulate while idle, and then go at once.
pub const BURST: Duration = Duration::from_millis(250);

/// The caps of a session (none by default).
#[derive(Default)]
pub struct Limiter {
    ops: Option<Cap>,
    bytes: Option<Cap>,
}

struct Cap {
    per_s: u64,
    /// The flag that set it, for messages.
    flag: &'static str,
    next: Mutex<Option<Instant>>,
    /// Time writers were told to wait for this cap, summed (ns).
    waited_ns: AtomicU64,
}

impl Cap {
    fn new(per_s: u64, flag: &'static str) -> Cap {
        Cap { per_s, flag, next: Mutex::new(None), waited_ns: AtomicU64::new(0) }
    }

    /// Book `units` at `now`; how long to wait before they may go.
    fn book(&self, units: u64, now: Instant) -> Duration {
        if units == 0 {
            return Duration::ZERO;
        }
        let cost = Duration::from_secs_f64(units as f64 / self.per_s as f64);
        let start = {
            let mut next = self.next.lock();
            let floor = now.checked_sub(BURST).unwrap_or(now);
            let start = next.map_or(floor, |n| n.max(floor));
            *next = Some(start + cost);
            start
        };
        let wait = start.saturating_duration_since(now);
        if !wait.is_zero() {
            self.waited_ns.fetch_add(wait.as_nanos() as u64, Relaxed);
        }
        wait
    }

    fn describe(&self) -> String {
        let what = if self.flag == "--max-ops-per-s" { "commands" } else { "bytes" };
        format!("the rate cap {} {} ({what} per second, all writers together)", self.flag, self.per_s)
    }
}

/// The caps' waiting totals at some moment (see [`Limiter::cause_since`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Mark {
    ops_ns: u64,
    bytes_ns: u64,
}

impl Limiter {
    pub fn new(ops_per_s: Option<u64>, bytes_per_s: Option<u64>) -> Limiter {
        Limiter {
            ops: ops_per_s.filter(|&r| r > 0).map(|r| Cap::new(r, "--max-ops-per-s")),
            bytes: bytes_per_s.filter(|&r| r > 0).map(|r| Cap::new(r, "--max-bytes-per-s")),
        }
    }

    pub fn is_active(&self) -> bool {
        self.ops.is_some() || self.bytes.is_some()
    }

    /// Book a batch of `cmds` commands and `bytes()` payload bytes (computed only under a bytes
    /// cap); `Some(slot)` when the caller must wait until `slot` before sending it (see
    /// [`wait_until`]). It must not hold anything others need while it waits.
    pub fn reserve(&self, cmds: usize, bytes: impl FnOnce() -> usize) -> Option<Instant> {
        if !self.is_active() {
            return None;
        }
        let now = Instant::now();
        let wait = self.reserve_at(now, cmds, bytes);
        (!wait.is_zero()).then(|| now + wait)
    }

    fn reserve_at(&self, now: Instant, cmds: usize, bytes: impl FnOnce() -> usize) -> Duration {
        let a = self.ops.as_ref().map_or(Duration::ZERO, |c| c.book(cmds as u64, now));
        let b = self.bytes.as_ref().map_or(Duration::ZERO, |c| c.book(bytes() as u64, now));
        a.max(b)
    }

    pub fn mark(&self) -> Mark {
        let ns = |c: &Option<Cap>| c.as_ref().map_or(0, |c| c.waited_ns.load(Relaxed));
        Mark { ops_ns: ns(&self.ops), bytes_ns: ns(&self.bytes) }
    }

    /// The cap that made the writers wait since `mark`, described for a log line, when they
    /// waited at least `at_least` for it (summed over writers): the cap, not the target, is
    /// then what holds the flows back.
    pub fn cause_since(&self, mark: &Mark, at_least: Duration) -> Option<String> {
        let now = self.mark();
        let grew = [(now.ops_ns - mark.ops_ns, &self.ops), (now.bytes_ns - mark.bytes_ns, &self.bytes)];
        let (ns, cap) = grew.into_iter().max_by_key(|(ns, _)| *ns)?;
        let cap = cap.as_ref()?;
        (ns >= at_least.as_nanos() as u64).then(|| cap.describe())
    }
}

/// The payload of a batch, as the bytes cap counts it (the arguments, without RESP framing).
pub fn payload(cmds: &[Cmd]) -> usize {
    cmds.iter().map(|c| c.argv.byte_len()).sum()
}

/// Wait for a booked slot, or until the session stops: then the rest of what is queued is
/// applied without the cap, so that a shutdown is never held up by it.
pub fn wait_until(slot: Instant, stop: &Stopper) {
    let left = slot.saturating_duration_since(Instant::now());
    if !left.is_zero() && !stop.is_stopped() {
        // The stop channel is never sent on: it disconnects on stop, which ends the wait.
        let _ = stop.receiver().recv_timeout(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn batches_book_their_cost_and_wait_for_their_slot() {
        let l = Limiter::new(Some(1000), None);
        let t0 = Instant::now();
        // A fresh cap has a burst's credit: 250 commands go at once, then 1 ms per command.
        assert_eq!(l.reserve_at(t0, 200, || 0), Duration::ZERO);
        assert_eq!(l.reserve_at(t0, 100, || 0), Duration::ZERO);
        assert_eq!(l.reserve_at(t0, 100, || 0), 50 * MS);
        assert_eq!(l.reserve_at(t0, 1, || 0), 150 * MS);
        // Idle for a minute: still only a burst's credit.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(l.reserve_at(later, 250, || 0), Duration::ZERO);
        assert_eq!(l.reserve_at(later, 10, || 0), Duration::ZERO);
        assert_eq!(l.reserve_at(later, 10, || 0), 10 * MS);
        // Over N commands the time booked is N/rate less the burst.
        let l = Limiter::new(Some(500), None);
        let mut last = Duration::ZERO;
        for _ in 0..100 {
            last = l.reserve_at(t0, 50, || 0);
        }
        // 5000 commands at 500/s: the last batch starts at 10 s - 250 ms - its own 100 ms.
        assert_eq!(last, Duration::from_millis(10_000 - 250 - 100));
    }

    #[test]
    fn both_caps_apply_and_the_slower_one_decides() {
        let l = Limiter::new(Some(1_000_000), Some(1000));
        let t0 = Instant::now();
        let mut computed = 0;
        assert_eq!(
            l.reserve_at(t0, 1, || {
                computed += 1;
                1250
            }),
            Duration::ZERO
        );
        assert_eq!(l.reserve_at(t0, 1, || 1000), Duration::from_secs(1));
        assert_eq!(computed, 1);
        // Without a bytes cap the size is never computed.
        let l = Limiter::new(Some(10), None);
        assert_eq!(l.reserve_at(t0, 1, || panic!("size computed without a bytes cap")), Duration::ZERO);
        assert!(!Limiter::default().is_active());
        assert_eq!(Limiter::default().reserve(1_000_000, || usize::MAX), None);
    }

    #[test]
    fn the_cap_that_held_writers_back_is_named() {
        let l = Limiter::new(Some(100), Some(1 << 30));
        let t0 = Instant::now();
        let m = l.mark();
        assert_eq!(l.cause_since(&m, MS), None);
        l.reserve_at(t0, 25, || 10);
        l.reserve_at(t0, 100, || 10);
        assert_eq!(l.cause_since(&m, MS), None, "the burst and the first slot cost no wait");
        assert_eq!(l.reserve_at(t0, 10, || 10), Duration::from_secs(1));
        let cause = l.cause_since(&m, 100 * MS).unwrap();
        assert!(cause.contains("--max-ops-per-s 100") && cause.contains("commands per second"), "{cause}");
        assert_eq!(l.cause_since(&m, Duration::from_secs(5)), None);
        assert_eq!(l.cause_since(&l.mark(), MS), None);
        assert_eq!(Limiter::default().cause_since(&Mark::default(), Duration::ZERO), None);
    }

    #[test]
    fn a_stop_ends_the_wait() {
        let stop = Stopper::new();
        let t = Instant::now();
        wait_until(t + 20 * MS, &stop);
        assert!(t.elapsed() >= 20 * MS);
        stop.stop();
        let t = Instant::now();
        wait_until(t + Duration::from_secs(3600), &stop);
        assert!(t.elapsed() < Duration::from_secs(60));
    }
}
