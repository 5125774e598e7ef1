//! The session as the metrics see it: a [`SessionSource`] that reads the session's own atomic
//! counters when asked (a scrape, a progress line), so the threads that update them do no
//! extra work; and the master's size at the start, for the full-sync estimate.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::shared::Shared;
use crate::metrics::{FlowSnapshot, SessionSnapshot, SessionSource};
use crate::replay::{ReplayStats, Replayer};
use crate::source::Master;

/// The master's key count (all dbs) and `used_memory`, when it answered.
#[derive(Debug, Clone, Copy, Default)]
pub struct MasterSize {
    pub keys: Option<u64>,
    pub used_memory: Option<u64>,
}

impl MasterSize {
    /// Ask `INFO KEYSPACE` and `INFO MEMORY`. Best effort: only the estimate depends on it,
    /// so an error is logged and leaves the figure unknown (a broken connection shows up at
    /// the next command of the handshake anyway).
    pub fn ask(master: &mut Master) -> MasterSize {
        let keys = match master.keyspace() {
            Ok(dbs) => Some(dbs.values().sum()),
            Err(e) => {
                log::debug!("INFO KEYSPACE: {e}");
                None
            }
        };
        let used_memory = master.used_memory().unwrap_or_else(|e| {
            log::debug!("INFO MEMORY: {e}");
            None
        });
        MasterSize { keys, used_memory }
    }
}

/// What the metrics read of a running session.
pub struct SessionView {
    pub shared: Arc<Shared>,
    /// Each flow's replay counts (skipped/altered keys), republished by its reader.
    pub replay: Vec<Arc<Mutex<ReplayStats>>>,
    pub master: MasterSize,
    /// With several sources: this session's source label (its flows are `<label>-<i>`).
    pub label: Option<String>,
}

impl SessionSource for SessionView {
    fn snapshot(&self) -> SessionSnapshot {
        let now = Instant::now();
        let flows = self
            .shared
            .flows
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let applied_lsn = f.applied_next_lsn.load(Relaxed);
                let stable = f.stable.load(Relaxed);
                FlowSnapshot {
                    name: self.label.as_ref().map(|l| format!("{l}-{i}")),
                    keys: f.keys.load(Relaxed),
                    bytes: f.bytes.load(Relaxed),
                    records: f.records.load(Relaxed),
                    commands: f.commands.load(Relaxed),
                    received_lsn: f.received_next_lsn.load(Relaxed),
                    applied_lsn,
                    lag_ms: stable.then(|| f.transit.lag_ms(applied_lsn, now)),
                    fullsync_done: f.fullsync_end.load(Relaxed),
                    stable,
                }
            })
            .collect();
        let mut stats = ReplayStats::default();
        for r in &self.replay {
            stats.merge(&r.lock());
        }
        SessionSnapshot {
            flows,
            master_keys: self.master.keys,
            master_used_memory: self.master.used_memory,
            skipped: stats.skipped.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            altered: stats.altered.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            expired_on_arrival: stats.expired_on_arrival,
            rejected: self.shared.rejected.load(Relaxed),
        }
    }
}

fn count(s: &ReplayStats) -> u64 {
    s.skipped.values().chain(s.altered.values()).sum::<u64>()
        + s.expired_on_arrival
        + s.filtered_keys
        + s.filtered_records
        + s.split_records
}

/// Republish a reader's replay counts when they changed (the counts only grow, so their sum
/// tells). Called after each read; the common case is one short lock and two tiny sums.
pub fn publish_stats(replayer: &Replayer, out: &Mutex<ReplayStats>) {
    let now = replayer.stats();
    let mut g = out.lock();
    if count(now) != count(&g) {
        let mut copy = ReplayStats::default();
        copy.merge(now);
        *g = copy;
    }
}
