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
    /// Commands (or per-slot parts) of a cluster resume left out: their nodes held them.
    pub resume_skipped: AtomicU64,
    pub fullsync_end: AtomicBool,
    pub stable: AtomicBool,
    /// Batches of journal records between reader and target, for the lag in milliseconds.
    pub transit: super::lag::Transit,
}

/// Whether a failure is worth a new session: the source or target went away (transient), or
/// retrying cannot help (fatal: a stream that does not decode, a command the target rejects,
/// a rejected password).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Transient,
    Fatal,
}

/// One end of the replication, for the failures of a session that never started: which end
/// could not be reached (see `retry.rs` for what follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

/// An error with its [`Fault`]; a bare message is fatal unless said otherwise.
#[derive(Debug)]
pub struct Failure {
    pub msg: String,
    pub fault: Fault,
}

impl Failure {
    pub fn transient(msg: String) -> Self {
        Failure { msg, fault: Fault::Transient }
    }
}

impl From<String> for Failure {
    fn from(msg: String) -> Self {
        Failure { msg, fault: Fault::Fatal }
    }
}

pub struct Shared {
    pub stop: Stopper,
    error: Mutex<Option<String>>,
    /// Some failure of this session was fatal (then no new session is tried).
    fatal: AtomicBool,
    /// Errors after the first (logged as they happen).
    more_errors: AtomicU64,
    pub flows: Vec<FlowState>,
    /// Set when SIGINT/SIGTERM asked for the stop.
    pub interrupted: AtomicBool,
    /// Commands the target rejected and the policy skipped.
    pub rejected: AtomicU64,
    /// Keys whose RESTORE the target refused, written as commands instead, by reason.
    pub restore_fallbacks: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Writes per cluster node, and redirects followed (MOVED, ASK), summed over writers.
    pub node_writes: Mutex<(std::collections::BTreeMap<String, u64>, u64, u64)>,
    /// `--max-ops-per-s` / `--max-bytes-per-s`, shared by the writers (none by default).
    pub limit: super::limit::Limiter,
}

impl Shared {
    pub fn new(flows: usize) -> Self {
        Shared {
            stop: Stopper::new(),
            error: Mutex::new(None),
            fatal: AtomicBool::new(false),
            more_errors: AtomicU64::new(0),
            flows: (0..flows).map(|_| FlowState::default()).collect(),
            interrupted: AtomicBool::new(false),
            rejected: AtomicU64::new(0),
            restore_fallbacks: Mutex::new(Default::default()),
            node_writes: Mutex::new(Default::default()),
            limit: Default::default(),
        }
    }
    pub fn with_limit(mut self, limit: super::limit::Limiter) -> Self {
        self.limit = limit;
        self
    }
    /// Record an error and stop the session. The first one becomes the session's error; every
    /// one is logged, since the first seen is not always the first cause.
    pub fn fail(&self, f: Failure) {
        let Failure { msg: e, fault } = f;
        if fault == Fault::Fatal {
            self.fatal.store(true, Relaxed);
        }
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
    /// Count keys written as commands after the target refused their RESTORE; the first key
    /// of each reason is logged.
    pub fn note_restore_fallbacks(&self, reasons: &[String]) {
        let mut m = self.restore_fallbacks.lock();
        for r in reasons {
            let n = m.entry(r.clone()).or_default();
            if *n == 0 {
                log::warn!("the target refused a RESTORE ({r}); such keys are written as commands (counted in the summary)");
            }
            *n += 1;
        }
    }

    pub fn add_node_writes(&self, w: &std::collections::BTreeMap<String, u64>, (moved, asked): (u64, u64)) {
        let mut g = self.node_writes.lock();
        for (k, v) in w {
            *g.0.entry(k.clone()).or_default() += v;
        }
        g.1 += moved;
        g.2 += asked;
    }

    /// The session's fault: fatal if any failure was.
    pub fn fault(&self) -> Fault {
        if self.fatal.load(Relaxed) {
            Fault::Fatal
        } else {
            Fault::Transient
        }
    }

    pub fn error(&self) -> Option<String> {
        let more = self.more_errors.load(Relaxed);
        self.error.lock().clone().map(|e| if more > 0 { format!("{e} (and {more} more errors: see the log)") } else { e })
    }
}
