//! Progress for people: during the full sync, keys, bytes and rates per flow and in total,
//! with the share done and an ETA from the master's key count; during stable sync, the lag of
//! each flow in records and milliseconds.
//!
//! On a terminal it is a live block at the bottom of stderr, redrawn twice a second (see
//! [`crate::console`]); otherwise one log line every `--progress-secs`, except in an idle
//! stable sync (see [`Quiet`]). The figures come from
//! the same [`Report`](crate::metrics::Report) as `/status` and `/metrics`, so the three never
//! disagree. Rates shown are over the last interval; the ETA uses the average rate of the
//! whole full sync, which moves less.

use std::time::{Duration, Instant};

use super::shared::Stopper;
use crate::metrics::{self, FlowSnapshot, FullSyncProgress, SessionSnapshot};

/// Refresh period of the live block on a terminal.
const LIVE_TICK: Duration = Duration::from_millis(500);
/// While an idle stable sync leaves the progress line unchanged, it is logged this often.
const HEARTBEAT: Duration = Duration::from_secs(60);

pub fn run(stop: &Stopper, every: Duration) {
    let console = crate::console::global();
    let live = console.is_terminal();
    let tick = if live { LIVE_TICK.min(every) } else { every };
    // The first line's rates are since the thread started (from nothing).
    let mut prev = (Instant::now(), SessionSnapshot::default());
    let mut quiet = Quiet::default();
    loop {
        if stop.receiver().recv_timeout(tick).is_err() && stop.is_stopped() {
            console.clear();
            return;
        }
        let report = metrics::global().report();
        let Some(s) = report.session else { continue };
        let now = Instant::now();
        let before = Some((now.saturating_duration_since(prev.0).as_secs_f64().max(1e-3), &prev.1));
        let stable = !s.flows.is_empty() && s.flows.iter().all(|f| f.stable);
        let fs = report.full_sync.unwrap_or_default();
        let lines = if stable { stable_lines(&s, before) } else { full_sync_lines(&s, before, &fs) };
        if live {
            console.show(lines);
        } else if let Some(line) = quiet.line(now, one_line(&lines), stable) {
            log::info!("{line}");
        }
        prev = (now, s);
    }
}

/// Which progress lines reach the log (no terminal). A replica of an idle master stays in
/// stable sync for days with nothing to say: the same line every few seconds would bury the
/// log lines that matter. So in stable sync a line is logged when it differs from the last one
/// logged (records applied, a lag that moves), and an unchanged one at most every
/// [`HEARTBEAT`], as a sign of life that says for how long nothing changed. Full-sync lines
/// all go out: their cadence is the point there.
#[derive(Default)]
struct Quiet {
    /// The last line logged, when it was logged, and since when it has been unchanged.
    last: Option<(String, Instant, Instant)>,
}

impl Quiet {
    /// The line to log at `now` for `line`, if any.
    fn line(&mut self, now: Instant, line: String, stable: bool) -> Option<String> {
        match &mut self.last {
            Some((last, logged_at, since)) if stable && *last == line => {
                if now.saturating_duration_since(*logged_at) < HEARTBEAT {
                    return None;
                }
                *logged_at = now;
                Some(format!("{line} (idle: unchanged for {})", duration(now.saturating_duration_since(*since))))
            }
            _ => {
                self.last = Some((line.clone(), now, now));
                Some(line)
            }
        }
    }
}

/// The block's lines as one log line: the headline, then the flows separated by commas.
fn one_line(lines: &[String]) -> String {
    match lines.split_first() {
        Some((head, rest)) if !rest.is_empty() => {
            let flows: Vec<&str> = rest.iter().map(|l| l.trim()).collect();
            format!("{head}; {}", flows.join(", "))
        }
        Some((head, _)) => head.clone(),
        None => String::new(),
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `75 s`, `12 min 5 s`, `3 h 20 min`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=99 => format!("{s} s"),
        100..=5999 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s / 60 % 60),
    }
}

/// `3`, or with several sources `<label>-<i>` (as its thread is named).
fn flow_name(i: usize, f: &FlowSnapshot) -> String {
    f.name.clone().unwrap_or_else(|| i.to_string())
}

type Before<'a> = Option<(f64, &'a SessionSnapshot)>;

fn full_sync_lines(s: &SessionSnapshot, before: Before, p: &FullSyncProgress) -> Vec<String> {
    let rate = |i: Option<usize>| -> (f64, f64) {
        let Some((dt, b)) = before else { return (0.0, 0.0) };
        let pick = |x: &SessionSnapshot| match i {
            Some(i) => x.flows.get(i).map_or((0, 0), |f| (f.keys, f.bytes)),
            None => (x.flows.iter().map(|f| f.keys).sum(), x.flows.iter().map(|f| f.bytes).sum()),
        };
        let ((k1, b1), (k0, b0)) = (pick(s), pick(b));
        (k1.saturating_sub(k0) as f64 / dt, b1.saturating_sub(b0) as f64 / dt / 1e6)
    };
    let (kps, mbps) = rate(None);
    let done = s.flows.iter().filter(|f| f.fullsync_done).count();
    let share = match (p.ratio, p.master_keys) {
        (Some(r), Some(k)) if k > 0 => format!("{} of ~{k} keys ({:.0}%)", p.keys, r * 100.0),
        // Bytes received of the master's used_memory, or of the snapshot files' total size.
        (Some(r), _) => format!("{} keys (~{:.0}% of the source's size)", p.keys, r * 100.0),
        (None, _) => format!("{} keys", p.keys),
    };
    let eta = p.eta.map_or(String::new(), |d| format!(", ETA {}", duration(d)));
    let mut lines = vec![format!(
        "full sync: {share}, {} ({kps:.0} keys/s, {mbps:.1} MB/s){eta}; {done}/{} flows complete",
        mb(p.bytes),
        s.flows.len()
    )];
    for (i, f) in s.flows.iter().enumerate() {
        let n = flow_name(i, f);
        if f.fullsync_done {
            lines.push(format!("  flow {n}: {} keys, {}, complete", f.keys, mb(f.bytes)));
        } else {
            let (k, m) = rate(Some(i));
            lines.push(format!("  flow {n}: {} keys, {}, {k:.0} keys/s, {m:.1} MB/s", f.keys, mb(f.bytes)));
        }
    }
    lines
}

fn stable_lines(s: &SessionSnapshot, before: Before) -> Vec<String> {
    let total = |x: &SessionSnapshot, g: fn(&FlowSnapshot) -> u64| x.flows.iter().map(g).sum::<u64>();
    let per_sec = |g: fn(&FlowSnapshot) -> u64| before.map_or(0.0, |(dt, b)| total(s, g).saturating_sub(total(b, g)) as f64 / dt);
    let records = total(s, |f| f.records);
    let (rps, ops) = (per_sec(|f| f.records), per_sec(|f| f.commands));
    let mut lines = vec![format!("stable sync: {records} records ({rps:.0} records/s, {ops:.0} commands/s)")];
    for (i, f) in s.flows.iter().enumerate() {
        lines.push(format!(
            "  flow {} lag {} records {} ms (applied LSN {})",
            flow_name(i, f),
            f.lag_records().unwrap_or(0),
            f.lag_ms.unwrap_or(0),
            f.applied_lsn
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::full_sync_progress;

    #[test]
    fn lines_for_both_phases() {
        let mut s = SessionSnapshot {
            flows: vec![
                FlowSnapshot { keys: 300, bytes: 3_000_000, ..Default::default() },
                FlowSnapshot { keys: 100, bytes: 1_000_000, fullsync_done: true, ..Default::default() },
            ],
            master_keys: Some(1000),
            ..Default::default()
        };
        let mut b = s.clone();
        b.flows[0].keys = 100;
        let p = full_sync_progress(&s, Some(Duration::from_secs(4)));
        let l = one_line(&full_sync_lines(&s, Some((2.0, &b)), &p));
        assert_eq!(
            l,
            "full sync: 400 of ~1000 keys (40%), 4.0 MB (100 keys/s, 0.0 MB/s), ETA 6 s; 1/2 flows complete; \
             flow 0: 300 keys, 3.0 MB, 100 keys/s, 0.0 MB/s, flow 1: 100 keys, 1.0 MB, complete"
        );
        for f in &mut s.flows {
            f.stable = true;
            f.received_lsn = 50;
            f.applied_lsn = 45;
            f.records = 10;
            f.lag_ms = Some(7);
        }
        let mut b = s.clone();
        b.flows[0].commands = 0;
        s.flows[0].commands = 24;
        let l = one_line(&stable_lines(&s, Some((2.0, &b))));
        assert!(l.starts_with("stable sync: 20 records (0 records/s, 12 commands/s); flow 0 lag 5 records 7 ms"), "{l}");
        assert_eq!(duration(Duration::from_secs(725)), "12 min 5 s");
        // Several sources: flows carry their thread's name.
        s.flows[1].name = Some("7001-0".into());
        let l = one_line(&stable_lines(&s, None));
        assert!(l.contains("flow 0 lag") && l.contains("flow 7001-0 lag"), "{l}");
        assert_eq!(duration(Duration::from_secs(12_000)), "3 h 20 min");
    }

    /// An idle stable sync, driven with made-up instants: the line once, then one heartbeat a
    /// minute; a change is logged at once; full-sync lines always.
    #[test]
    fn an_idle_stable_sync_logs_on_change_and_a_heartbeat_a_minute() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let idle = "stable sync: 20 records (0 records/s, 0 commands/s); flow 0 lag 0 records 0 ms (applied LSN 45)";
        let mut q = Quiet::default();
        let mut logged = Vec::new();
        // Every 5 s for 10 minutes, nothing flowing.
        for s in (0..=600).step_by(5) {
            if let Some(l) = q.line(at(s), idle.to_string(), true) {
                logged.push((s, l));
            }
        }
        let times: Vec<u64> = logged.iter().map(|(s, _)| *s).collect();
        assert_eq!(times, (0..=600).step_by(60).collect::<Vec<u64>>(), "{logged:?}");
        assert_eq!(logged[0].1, idle);
        assert_eq!(logged[1].1, format!("{idle} (idle: unchanged for 60 s)"));
        assert_eq!(logged[10].1, format!("{idle} (idle: unchanged for 10 min 0 s)"));

        // Records again: logged at once, and the idle time starts anew.
        let busy = "stable sync: 25 records (1 records/s, 1 commands/s); flow 0 lag 0 records 0 ms (applied LSN 50)";
        assert_eq!(q.line(at(605), busy.to_string(), true).as_deref(), Some(busy));
        let idle2 = idle.replace("20 records", "25 records").replace("45", "50");
        assert_eq!(q.line(at(610), idle2.clone(), true), Some(idle2.clone()));
        assert_eq!(q.line(at(615), idle2.clone(), true), None);
        assert_eq!(q.line(at(669), idle2.clone(), true), None);
        assert_eq!(q.line(at(670), idle2.clone(), true), Some(format!("{idle2} (idle: unchanged for 60 s)")));

        // A full sync that makes no progress still logs every tick.
        let fs = "full sync: 0 keys, 0.0 MB (0 keys/s, 0.0 MB/s); 0/1 flows complete; flow 0: 0 keys, 0.0 MB, 0 keys/s, 0.0 MB/s";
        let mut q = Quiet::default();
        assert!((0..5).all(|i| q.line(at(i * 5), fs.to_string(), false).is_some()));
    }
}
