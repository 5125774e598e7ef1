//! Threads and channels of a session.
//!
//! ```text
//! flow-i  (reader: socket -> decoder -> replay) --bounded channel--> writer-w (pipelines -> target)
//! ack-i   (barrier before STARTSTABLE, then REPLCONF ACK <applied lsn> on flow i)
//! main    (coordinator: handshake, DFLY SYNC, barrier, DFLY STARTSTABLE, shutdown)
//! ```

mod ack;
mod flow;
mod gate;
mod lag;
mod progress;
mod report;
mod semaphore;
pub mod session;
mod shared;
mod writer;

pub use flow::Mode;
pub use session::{FlowSummary, Outcome, Summary};

use crate::config::Config;
use crate::metrics::{self, Phase};

/// Run one session (see [`session::run`]), with its start and its ending reported as phases
/// of the process metrics; the session reports the phases in between.
pub fn run(cfg: &Config, mode: Mode) -> Outcome {
    let m = metrics::global();
    m.set_phase(Phase::Connecting);
    let out = session::run(cfg, mode);
    // Also after a start that failed half-way: the session's counters join the totals.
    m.detach();
    m.set_phase(if matches!(out, Outcome::Ok(_)) { Phase::Done } else { Phase::Failed });
    out
}
