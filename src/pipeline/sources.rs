//! Several Dragonfly masters into one target, in one run: the sources given (`--source`
//! repeated) and, for a node in Dragonfly cluster mode, every master of its cluster.
//!
//! Each master is its own replication: its own session (handshake, flows, barrier,
//! STARTSTABLE, ACKs), its own reconnects and resyncs ([`super::retry`]), run by a supervisor
//! thread `source-<label>`; its threads are `flow-<label>-<i>`, `ack-<label>-<i>` and
//! `writer-<label>-<w>`. Each session has its own writer threads rather than one pool for all
//! masters, on purpose: a session ends through its one shutdown path (its flows drained, its
//! writers joined, their last batches applied or not at all) before a new one resumes from
//! the markers, and a pool shared with other masters' sessions could not be drained for one
//! master without stalling the others' flows, which the masters cancel after 30 s. The
//! sessions still share the target's limits: `--max-ops-per-s` and `--max-bytes-per-s` are
//! per session (documented), and the in-flight cap is per session too.
//!
//! Markers, writer names and what a resync deletes are kept apart by a per-master run name,
//! `<run>+<host>-<port>` (`+` cannot occur in a run name, so no run's name is another's
//! prefix). A master that fails for good stops the others cleanly, and the run ends with its
//! error.

use std::time::Instant;

use crossbeam_channel::unbounded;

use super::flow::Mode;
use super::retry;
use super::session::{Outcome, Summary};
use super::shared::Fault;
use crate::config::Config;
use crate::source::cluster::{self, Planned};

/// Run every source; with one, exactly as before.
pub fn run(cfg: &Config, mode: Mode) -> Outcome {
    let given = if cfg.sources.is_empty() { std::slice::from_ref(&cfg.source.addr) } else { cfg.sources.as_slice() };
    let wait = cfg.wait_for_source && mode == Mode::Replicate;
    let plan = match cluster::plan(&cfg.source, given, cfg.discover, wait) {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(format!("{e}. No session has started (check --source)"), Summary::default(), Fault::Fatal),
    };
    let cfgs = configs(cfg, &plan);
    if cfgs.len() == 1 {
        return retry::run(&cfgs[0], mode);
    }
    log::info!("{} masters into one target, one session each:", cfgs.len());
    for (c, p) in cfgs.iter().zip(&plan) {
        log::info!(
            "  {} ({}{}): run name {}, threads flow-{}-*",
            c.source.addr,
            p.slots.as_ref().map_or("not a cluster node".to_string(), |s| format!("slots {s}")),
            p.via.as_ref().map_or(String::new(), |v| format!(", found via {v}")),
            c.name,
            c.source_label.as_deref().unwrap_or("")
        );
    }
    run_all(cfgs, mode)
}

/// Each master's config: its address, and with several, its own run name and label.
fn configs(cfg: &Config, plan: &[Planned]) -> Vec<Config> {
    let multi = plan.len() > 1;
    let ports: Vec<&str> = plan.iter().map(|p| p.addr.rsplit_once(':').map_or("", |x| x.1)).collect();
    let unique_ports = ports.iter().enumerate().all(|(i, p)| !p.is_empty() && !ports[..i].contains(p));
    plan.iter()
        .enumerate()
        .map(|(k, p)| {
            let mut c = cfg.clone();
            c.source.addr = p.addr.clone();
            c.source.seeds = vec![p.addr.clone()];
            c.own_slots = p.slots.clone();
            c.source_index = k;
            c.multi_source = multi;
            if multi {
                let host_port = crate::checkpoint::name::default_for(&p.addr);
                let host_port = host_port.strip_prefix("df2redis-").unwrap_or(&host_port);
                c.name = format!("{}+{host_port}", cfg.name);
                // Each master's applied LSNs in its own file: FILE.<host>-<port>.
                c.checkpoint_file = cfg.checkpoint_file.as_ref().map(|f| {
                    let mut s = f.clone().into_os_string();
                    s.push(format!(".{host_port}"));
                    std::path::PathBuf::from(s)
                });
                c.source_label = Some(if unique_ports { ports[k].to_string() } else { format!("s{k}") });
            }
            c
        })
        .collect()
}

/// A supervisor thread per master; the first to fail for good stops the others.
fn run_all(cfgs: Vec<Config>, mode: Mode) -> Outcome {
    let started = Instant::now();
    let (tx, rx) = unbounded();
    let mut handles = Vec::new();
    for (k, c) in cfgs.iter().cloned().enumerate() {
        let tx = tx.clone();
        let name = format!("source-{}", c.source_label.as_deref().unwrap_or("?"));
        match super::wiring::spawn(name, None, move || {
            let _ = tx.send((k, retry::run(&c, mode)));
        }) {
            Ok(h) => handles.push(h),
            Err(e) => {
                crate::signals::request_stop_source_failed();
                return Outcome::Failed(e, Summary::default(), Fault::Fatal);
            }
        }
    }
    drop(tx);
    // One progress display for the whole run (the metrics merge the masters' sessions).
    let progress_stop = std::sync::Arc::new(super::shared::Stopper::new());
    let every = std::time::Duration::from_secs(cfgs[0].progress_secs);
    let ps = progress_stop.clone();
    let progress = super::wiring::spawn("progress".into(), None, move || super::progress::run(&ps, every)).ok();
    let mut outcomes: Vec<Option<Outcome>> = (0..cfgs.len()).map(|_| None).collect();
    // Which source failed first, for good: its error is the run's.
    let mut first_failure: Option<usize> = None;
    for (k, out) in rx.iter() {
        let failed = !matches!(out, Outcome::Ok(_));
        if failed && first_failure.is_none() && crate::signals::received().is_none() {
            first_failure = Some(k);
            log::error!("source {} failed: the other sources stop now", cfgs[k].source.addr);
            crate::signals::request_stop_source_failed();
        }
        outcomes[k] = Some(out);
    }
    for h in handles {
        let _ = h.join();
    }
    progress_stop.stop();
    if let Some(h) = progress {
        let _ = h.join();
    }
    combine(&cfgs, outcomes.into_iter().map(|o| o.expect("every supervisor reports")).collect(), first_failure, started)
}

/// One outcome for the run: the first failure's error (others' errors after it are
/// consequences), the summaries added up.
fn combine(cfgs: &[Config], outcomes: Vec<Outcome>, first_failure: Option<usize>, started: Instant) -> Outcome {
    let mut total = Summary::default();
    let mut errors: Vec<(usize, String, Fault)> = Vec::new();
    let mut usage = None;
    for (k, out) in outcomes.into_iter().enumerate() {
        let s = match out {
            Outcome::Ok(s) => s,
            Outcome::Failed(e, s, f) => {
                errors.push((k, e, f));
                s
            }
            Outcome::Usage(e) => {
                usage.get_or_insert_with(|| format!("source {}: {e}", cfgs[k].source.addr));
                continue;
            }
        };
        add(&mut total, s, &cfgs[k].source.addr);
    }
    total.elapsed = started.elapsed();
    if let Some(u) = usage {
        return Outcome::Usage(u);
    }
    let first = first_failure.and_then(|k| errors.iter().position(|e| e.0 == k)).or(if errors.is_empty() { None } else { Some(0) });
    match first {
        None => Outcome::Ok(total),
        Some(i) => {
            let (k, e, f) = errors.swap_remove(i);
            let others = errors.len();
            let more = if others > 0 { format!(" ({others} other sources stopped after it)") } else { String::new() };
            Outcome::Failed(format!("source {}: {e}{more}", cfgs[k].source.addr), total, f)
        }
    }
}

/// Add one master's summary to the run's: its flows after the others'.
fn add(total: &mut Summary, s: Summary, addr: &str) {
    total.add_counts(&s);
    total.flows.extend(s.flows);
    total.json = total.json.or(s.json);
    total.stopped_by = total.stopped_by.or(s.stopped_by);
    total.touched_target |= s.touched_target;
    total.reached_stable |= s.reached_stable;
    total.unreachable = total.unreachable.or(s.unreachable);
    total.reconnects.extend(s.reconnects.into_iter().map(|r| format!("{addr}: {r}")));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::cluster::SlotRanges;

    #[test]
    fn several_masters_get_their_own_names_and_labels() {
        let mut cfg = Config { name: "mig".into(), checkpoint_file: Some("/tmp/lsns".into()), ..Default::default() };
        cfg.source.addr = "10.0.0.1:7000".into();
        let plan = vec![
            Planned { addr: "10.0.0.1:7000".into(), slots: SlotRanges::parse("0-8191"), via: None },
            Planned { addr: "10.0.0.2:7001".into(), slots: SlotRanges::parse("8192-16383"), via: Some("10.0.0.1:7000".into()) },
        ];
        let c = configs(&cfg, &plan);
        assert_eq!(c[0].name, "mig+10.0.0.1-7000");
        assert_eq!(c[1].name, "mig+10.0.0.2-7001");
        assert_eq!(c[1].source_label.as_deref(), Some("7001"));
        assert_eq!(c[1].checkpoint_file.as_deref(), Some(std::path::Path::new("/tmp/lsns.10.0.0.2-7001")));
        assert_eq!((c[1].source_index, c[1].multi_source), (1, true));
        assert_eq!(c[1].own_slots.as_ref().unwrap().to_string(), "8192-16383");
        let same_port = vec![Planned { addr: "a:7000".into(), slots: None, via: None }, Planned { addr: "b:7000".into(), slots: None, via: None }];
        assert_eq!(configs(&cfg, &same_port)[1].source_label.as_deref(), Some("s1"));
        let one = configs(&cfg, &plan[..1]);
        assert_eq!((one[0].name.as_str(), one[0].multi_source, one[0].source_label.is_none()), ("mig", false, true));
    }
}
