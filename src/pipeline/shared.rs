//! State the threads of one session share: the stop broadcast, the first error, per-flow
//! progress counters and applied LSNs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

/// A broadcast "stop": dropping the only sender disconnects every receiver, so any thread can
/// wait for it in a `select!` next to its own channels.
pub struct Stopper {
    tx: Mutex<Option<Sender<()>>>,
    rx: Receiver<()>,
    flag: AtomicBool,
}

impl Stopper {
    pub fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(0);
        Stopper { tx: Mutex::new(Some(tx)), rx, flag: AtomicBool::new(false) }
    }
    pub fn stop(&self) {
        self.flag.store(true, Relaxed);
        self.tx.lock().take();
    }
    pub fn is_stopped(&self) -> bool {
        self.flag.load(Relaxed)
    }
    /// Becomes ready (disconnected) when the session stops.
    pub fn receiver(&self) -> &Receiver<()> {
        &self.rx
    }
}

impl Default for Stopper {
    fn default() -> Self {
        Self::new()
    }
}

/// Counters of one flow, written by its reader and writer, read by the ACK and progress threads.
#[derive(Default)]
pub struct FlowState {
    /// The LSN an ACK would carry: the next one after the last record the target applied
    /// (JOURNAL_OFFSET until a stable record is applied; 0 before the offset is known).
    pub applied_next_lsn: AtomicU64,
    /// The next LSN the reader will decode (for lag).
    pub received_next_lsn: AtomicU64,
    /// Records applied since the last ACK (the ACK thread sends early past 1024).
    pub applied_since_ack: AtomicU64,
    /// Snapshot keys decoded, and wire bytes received.
    pub keys: AtomicU64,
    pub bytes: AtomicU64,
    /// Stable-sync records decoded.
    pub records: AtomicU64,
    /// Commands the target acknowledged.
    pub commands: AtomicU64,
    pub fullsync_end: AtomicBool,
    pub stable: AtomicBool,
    /// Batches of journal records between reader and target, for the lag in milliseconds.
    pub transit: super::lag::Transit,
}

pub struct Shared {
    pub stop: Stopper,
    error: Mutex<Option<String>>,
    /// Errors after the first (logged as they happen).
    more_errors: AtomicU64,
    pub flows: Vec<FlowState>,
    /// Set when SIGINT/SIGTERM asked for the stop.
    pub interrupted: AtomicBool,
    /// Commands the target rejected and the policy skipped.
    pub rejected: AtomicU64,
    /// Writes per cluster node, and redirects followed (MOVED, ASK), summed over writers.
    pub node_writes: Mutex<(std::collections::BTreeMap<String, u64>, u64, u64)>,
}

impl Shared {
    pub fn new(flows: usize) -> Self {
        Shared {
            stop: Stopper::new(),
            error: Mutex::new(None),
            more_errors: AtomicU64::new(0),
            flows: (0..flows).map(|_| FlowState::default()).collect(),
            interrupted: AtomicBool::new(false),
            rejected: AtomicU64::new(0),
            node_writes: Mutex::new(Default::default()),
        }
    }
    /// Record an error and stop the session. The first one becomes the session's error; every
    /// one is logged, since the first seen is not always the first cause.
    pub fn fail(&self, e: String) {
        log::error!("{e}");
        {
            let mut slot = self.error.lock();
            if slot.is_none() {
                *slot = Some(e);
            } else {
                self.more_errors.fetch_add(1, Relaxed);
            }
        }
        self.stop.stop();
    }
    pub fn add_node_writes(&self, w: &std::collections::BTreeMap<String, u64>, (moved, asked): (u64, u64)) {
        let mut g = self.node_writes.lock();
        for (k, v) in w {
            *g.0.entry(k.clone()).or_default() += v;
        }
        g.1 += moved;
        g.2 += asked;
    }

    pub fn error(&self) -> Option<String> {
        let more = self.more_errors.load(Relaxed);
        self.error.lock().clone().map(|e| if more > 0 { format!("{e} (and {more} more errors: see the log)") } else { e })
    }
}
