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
mod progress;
mod retry;
mod semaphore;
pub mod session;
mod shared;
mod writer;

pub use flow::Mode;
pub use retry::run;
pub use session::{FlowSummary, Outcome, Summary};
