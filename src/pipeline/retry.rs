//! Reconnect: a session that ends because the source or the target went away (a transient
//! [`Fault`]) is followed by a new one, after an exponential backoff, bounded by
//! `--max-retries` and `--retry-deadline`.
//!
//! Recovery is by whole sessions, on purpose. A session ends through its one shutdown path
//! (final ACKs, half-closed main connection, flows drained to EOF), so the master sees a clean
//! replica leave; the next session resumes every flow from the checkpoint markers in the
//! target, which were written atomically with the batches they cover, so nothing is applied
//! twice or lost whichever pipeline the outage cut (a retry inside the writer could not know
//! which commands of a broken pipeline the target had run). When the master cannot resume
//! (backlog overrun, new master id) or the checkpoints cannot be used (an unfinished full sync,
//! a cluster whose slots moved), the new session is a full resync and the target is handled by
//! `--on-resync`.
//!
//! Before any session has started, there is nothing to recover: a source or target that
//! cannot be reached then is a wrong address or a server that is down, and waiting 10 minutes
//! to say so helps nobody. The run ends at once (exit 1, the address and the cause), except
//! for a source under `replicate --wait-for-source`.

use std::time::{Duration, Instant};

use super::flow::Mode;
use super::session::{self, Outcome, Summary};
use super::shared::{Fault, Side};
use crate::config::Config;

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Run sessions until one ends for good: finished, stopped by a signal, failed fatally, or the
/// retries ran out (then the error lists every attempt).
pub fn run(cfg: &Config, mode: Mode) -> Outcome {
    let started = Instant::now();
    let mut total: Option<Summary> = None;
    // Why the last session that wrote to the target ended (see `session::run`).
    let mut prior: Option<String> = None;
    // The current row of failures: since the last session that reached stable sync.
    let mut row: Vec<String> = Vec::new();
    let mut row_started = Instant::now();
    let mut backoff = cfg.retry_backoff;
    // The ends some session of this run reached (the target is connected first): an end
    // never reached is not retried, unless `waits_for` it.
    let (mut reached_source, mut reached_target) = (false, false);
    loop {
        let outcome = session::run(cfg, mode, prior.as_deref());
        // Also after a start that failed half-way: the session's counters join the totals.
        crate::metrics::global().detach(cfg.source_index);
        let (error, summary) = match outcome {
            Outcome::Failed(e, s, Fault::Transient) if crate::signals::received().is_none() => (e, s),
            Outcome::Ok(s) => return Outcome::Ok(finish(total, s, started)),
            Outcome::Failed(e, s, f) => return Outcome::Failed(e, finish(total, s, started), f),
            usage @ Outcome::Usage(_) => return usage,
        };
        reached_target |= summary.unreachable != Some(Side::Target);
        reached_source |= summary.unreachable.is_none();
        if let Some(side) = summary.unreachable {
            let reached = if side == Side::Source { reached_source } else { reached_target };
            if !reached && !waits_for(cfg, mode, side) {
                let e = first_contact(side, &error, mode);
                return Outcome::Failed(e, finish(total, summary, started), Fault::Fatal);
            }
        }
        if summary.reached_stable {
            row.clear();
            row_started = Instant::now();
            backoff = cfg.retry_backoff;
        }
        if summary.touched_target {
            prior = Some(error.clone());
        }
        let at = started.elapsed().as_secs_f64();
        row.push(format!("at {at:.1} s: {error}"));
        let merged = merge(total.take(), summary, &error);
        if cfg.max_retries == 0 {
            return Outcome::Failed(error, finish(Some(merged), Summary::default(), started), Fault::Transient);
        }
        let out_of_tries = row.len() > cfg.max_retries as usize;
        let out_of_time = row_started.elapsed() + backoff > cfg.retry_deadline;
        if out_of_tries || out_of_time {
            let why = if out_of_tries {
                format!("{} attempts in a row failed (--max-retries {})", row.len(), cfg.max_retries)
            } else {
                format!("the failures lasted past --retry-deadline {} s", cfg.retry_deadline.as_secs())
            };
            let history = row.iter().enumerate().map(|(i, r)| format!("\n  attempt {}: {r}", i + 1)).collect::<String>();
            return Outcome::Failed(format!("giving up: {why}:{history}"), finish(Some(merged), Summary::default(), started), Fault::Fatal);
        }
        total = Some(merged);
        log::warn!(
            "the session ended: {error}; a new session starts in {:.1} s (attempt {} of {}, until {} s after the first failure)",
            backoff.as_secs_f64(),
            row.len(),
            cfg.max_retries,
            cfg.retry_deadline.as_secs()
        );
        if let Some(sig) = wait(backoff) {
            let s = finish(total, Summary::default(), started);
            return Outcome::Failed(format!("{sig} received while waiting to reconnect; the last session ended: {error}"), s, Fault::Fatal);
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        crate::metrics::global().set_source_phase(cfg.source_index, crate::metrics::Phase::Connecting);
    }
}

/// Whether an end that cannot be reached before any session started is retried all the same.
///
/// Only the source, only for `replicate`, only when asked: a replication service may well
/// start before its master (boot order, a master being deployed or upgraded), and following
/// the master wherever it is is its job. A `migrate` is a one-off copy someone is watching.
/// The target is never waited for: it is the end the operator sets up for df2redis, so
/// unreachable at the start it is a wrong URL, a firewall or a server not started, which the
/// operator should hear about at once rather than after --retry-deadline (a service manager
/// restarts df2redis anyway: see scripts/df2redis.service).
fn waits_for(cfg: &Config, mode: Mode, side: Side) -> bool {
    side == Side::Source && mode == Mode::Replicate && cfg.wait_for_source
}

/// The error of a run that ends because an end could not be reached at the start.
pub(super) fn first_contact(side: Side, error: &str, mode: Mode) -> String {
    let (what, flag) = match side {
        Side::Source => ("the source", "--source"),
        Side::Target => ("the target", "--target"),
    };
    let hint = if side == Side::Source && mode == Mode::Replicate {
        "; replicate --wait-for-source keeps retrying until the master answers"
    } else {
        ""
    };
    format!("cannot reach {what}: {error}. No session has started, so this is not retried (check {flag}{hint})")
}

/// Sleep for the backoff, or less if a signal arrives (returned).
fn wait(d: Duration) -> Option<&'static str> {
    let until = Instant::now() + d;
    loop {
        if let Some(sig) = crate::signals::received() {
            return Some(sig);
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Add a failed session to the run's totals.
fn merge(total: Option<Summary>, s: Summary, why: &str) -> Summary {
    let mut t = add(total, s);
    t.reconnects.push(why.to_string());
    t
}

/// The run's summary: every session's counts, the last session's positions.
fn finish(total: Option<Summary>, last: Summary, started: Instant) -> Summary {
    let mut t = add(total, last);
    t.elapsed = started.elapsed();
    t
}

fn add(total: Option<Summary>, s: Summary) -> Summary {
    let Some(mut t) = total else { return s };
    t.add_counts(&s);
    if s.flows.len() == t.flows.len() {
        for (a, b) in t.flows.iter_mut().zip(&s.flows) {
            a.keys += b.keys;
            a.bytes += b.bytes;
            a.records += b.records;
            a.commands += b.commands;
            a.applied_next_lsn = b.applied_next_lsn;
        }
    } else if !s.flows.is_empty() {
        // Another master (or one with another shard count): its positions replace the old.
        t.flows = s.flows;
    }
    t.json = s.json.or(t.json);
    t.stopped_by = s.stopped_by;
    t.reconnects.extend(s.reconnects);
    t
}
