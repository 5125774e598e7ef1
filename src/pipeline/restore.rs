//! `restore`: snapshot files into the target. The source is a set of files
//! ([`SnapshotSet`]: a Dragonfly snapshot's shard files, or one `.rdb`), each read by its own
//! `file-<i>` thread through the same pipeline a live master's flows go through
//! ([`wiring`](super::wiring)); the run ends when every file has been applied.
//!
//! No checkpoints are written: an interrupted restore is simply run again (every entry
//! replaces its key). Keys whose TTL has passed by the time they are read are skipped and
//! counted, as the live copy does.

use std::time::Instant;

use crossbeam_channel::select;

use super::flow::{FlowStart, Mode};
use super::prepare::{self, PreparedTarget, StartError};
use super::report::MasterSize;
use super::session::{Outcome, Summary};
use super::shared::Fault;
use super::wiring::{self, Input, Plan};
use crate::config::Config;
use crate::metrics::Phase;
use crate::replay::Policy;
use crate::source::files::SnapshotSet;

pub fn run(cfg: &Config) -> Outcome {
    let started = Instant::now();
    let failed = |e: String, fault| Outcome::Failed(e, Summary { elapsed: started.elapsed(), sessions: 1, ..Default::default() }, fault);
    let Some(from) = cfg.from.as_deref() else {
        return Outcome::Usage("restore needs --from PATH (file key source.from): a snapshot's summary file or folder, or an .rdb file".into());
    };
    if let Err(e) = std::fs::metadata(from) {
        return Outcome::Usage(format!("--from {}: {e}", from.display()));
    }
    let set = match SnapshotSet::open(from) {
        Ok(s) => s,
        Err(e) => return failed(e.to_string(), Fault::Fatal),
    };
    let total = set.total_bytes();
    log::info!(
        "restoring {} file{} ({:.1} MB){}",
        set.files.len(),
        if set.files.len() == 1 { "" } else { "s" },
        total as f64 / 1e6,
        set.snapshot_id.as_ref().map_or(String::new(), |id| format!(", Dragonfly snapshot {}", String::from_utf8_lossy(id)))
    );
    let mut inputs = Vec::with_capacity(set.files.len());
    for (i, path) in set.files.iter().enumerate() {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => return failed(format!("{}: cannot open it: {e}", path.display()), Fault::Fatal),
        };
        log::info!("file-{i}: {}", path.display());
        inputs.push(Input {
            thread: format!("file-{i}"),
            reader: Box::new(file),
            leftover: Vec::new(),
            token: String::new(),
            start: FlowStart::File,
            ack: None,
            file: Some(path.clone()),
        });
    }
    let n = inputs.len();
    let started_pipe = (|| -> Result<(wiring::Wired, crate::replay::JsonPolicy), StartError> {
        let PreparedTarget { mut first, json, cluster, version, whole, rdb } = prepare::connect_target(cfg)?;
        let fresh = prepare::is_fresh(&mut first)?;
        let writers = prepare::writer_conns(cfg, first, cfg.writers.unwrap_or(n).clamp(1, n))?;
        let pipe = wiring::wire(Plan {
            cfg,
            mode: Mode::Restore,
            inputs,
            writers,
            policy: Policy { json, member_ttl: cfg.member_ttl },
            fresh,
            cluster,
            markers: None,
            skip: None,
            barrier: None,
            // Progress is the share of the files' bytes read.
            size: MasterSize { keys: None, used_memory: Some(total) },
            target_version: version,
            limits: crate::protocol::Limits { whole, ..Default::default() },
            target_rdb: rdb,
            owned: None,
        })?;
        Ok((pipe, json))
    })();
    let (mut pipe, json) = match started_pipe {
        Ok(p) => p,
        Err(StartError::Usage(e)) => return Outcome::Usage(e),
        // Nothing was written yet; a restore is not retried (run it again).
        Err(StartError::Failed(e, _) | StartError::Unreachable(_, e)) => return failed(e, Fault::Fatal),
    };
    crate::metrics::global().set_phase(Phase::FullSync);
    let stop = pipe.shared.stop.receiver().clone();
    let mut done = 0;
    while done < n {
        select! {
            recv(pipe.streams_done) -> r => match r {
                Ok(_) => done += 1,
                Err(_) => break,
            },
            recv(stop) -> _ => break,
        }
    }
    crate::metrics::global().set_phase(Phase::Stopping);
    let stopped_by = if pipe.shared.interrupted.load(std::sync::atomic::Ordering::Relaxed) { crate::signals::received() } else { None };
    pipe.shared.stop.stop();
    let mut summary = pipe.finish(started.elapsed());
    summary.json = Some(json);
    summary.stopped_by = stopped_by;
    summary.touched_target = true;
    match pipe.shared.error() {
        Some(e) => Outcome::Failed(e, summary, Fault::Fatal),
        None if done < n => {
            let by = stopped_by.unwrap_or("a signal");
            Outcome::Failed(
                format!("interrupted by {by} after {done} of {n} files; the target is incomplete (run the restore again: entries replace their keys)"),
                summary,
                Fault::Fatal,
            )
        }
        None => Outcome::Ok(summary),
    }
}
