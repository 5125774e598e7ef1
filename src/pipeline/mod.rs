//! Threads and channels of a session.
//!
//! ```text
//! flow-i  (reader: socket -> decoder -> replay) --bounded channel--> writer-w (pipelines -> target)
//! ack-i   (barrier before STARTSTABLE, then REPLCONF ACK <applied lsn> on flow i)
//! main    (coordinator: handshake, DFLY SYNC, barrier, DFLY STARTSTABLE, shutdown)
//! ```

mod ack;
mod fallback;
mod flow;
mod gate;
mod lag;
mod limit;
mod others;
mod prepare;
mod progress;
mod report;
mod restore;
mod retry;
mod semaphore;
mod slots;
mod sources;
pub mod session;
mod shared;
mod wiring;
mod writer;

pub use flow::Mode;
pub use session::{FlowSummary, Outcome, Summary};

use crate::config::Config;
use crate::metrics::{self, Phase};

/// Run sessions until one ends for good (see [`retry::run`]), with the start and the ending
/// reported as phases of the process metrics; the sessions report the phases in between.
/// The error of a run whose target cannot be reached before any session (as a session's
/// first contact reports it), for what connects to the target first (the run's lease).
pub fn cannot_reach_target(error: &str) -> String {
    retry::first_contact(shared::Side::Target, error, Mode::Migrate)
}

pub fn run(cfg: &Config, mode: Mode) -> Outcome {
    let m = metrics::global();
    m.set_phase(Phase::Connecting);
    let out = match mode {
        // Files are not a connection that comes back: a failed restore is run again by hand.
        Mode::Restore => restore::run(cfg),
        _ => sources::run(cfg, mode),
    };
    m.set_phase(if matches!(out, Outcome::Ok(_)) { Phase::Done } else { Phase::Failed });
    out
}
