//! The cross-flow barrier for global commands (protocol doc 7.4).
//!
//! FLUSHALL/FLUSHDB are journaled once per flow with one txid. Every writer stops at it until
//! all writers have applied everything before it; the last to arrive runs it once; then all go
//! on. Without this, writes another flow made after the flush could be wiped, or writes made
//! before it survive.

use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::shared::Stopper;

#[derive(Default)]
struct State {
    txid: Option<u64>,
    arrived: usize,
    generation: u64,
    failed: Option<String>,
}

/// Why a writer could not pass the gate.
#[derive(Debug)]
pub enum GateError {
    /// The session is stopping: not an error of its own.
    Stopped,
    Failed(String),
}

pub struct GlobalGate {
    parties: usize,
    state: Mutex<State>,
    cv: Condvar,
}

impl GlobalGate {
    pub fn new(parties: usize) -> Self {
        GlobalGate { parties, state: Mutex::new(State::default()), cv: Condvar::new() }
    }

    /// Arrive at global command `txid`; the last writer to arrive runs `exec`. Returns when the
    /// command has run, or an error if writers disagree on the txid, `exec` failed, or the
    /// session stopped.
    pub fn pass(&self, txid: u64, stop: &Stopper, exec: impl FnOnce() -> Result<(), String>) -> Result<(), GateError> {
        let mut s = self.state.lock();
        if let Some(t) = s.txid {
            if t != txid {
                return Err(GateError::Failed(format!(
                    "flows reached different global commands (txid {t} and txid {txid}); the master journals each on every flow"
                )));
            }
        }
        s.txid = Some(txid);
        s.arrived += 1;
        if s.arrived == self.parties {
            // Everyone else is parked on the condvar; running the command under the lock keeps
            // late arrivals of the next global from slipping in.
            let r = exec();
            s.failed = r.as_ref().err().cloned();
            s.txid = None;
            s.arrived = 0;
            s.generation += 1;
            self.cv.notify_all();
            return r.map_err(GateError::Failed);
        }
        let gen = s.generation;
        while s.generation == gen {
            if stop.is_stopped() {
                return Err(GateError::Stopped);
            }
            self.cv.wait_for(&mut s, Duration::from_millis(200));
        }
        match &s.failed {
            Some(e) => Err(GateError::Failed(e.clone())),
            None => Ok(()),
        }
    }
}
