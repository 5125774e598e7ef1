//! SIGINT/SIGTERM: recorded by an async-signal-safe handler, acted on by a watcher thread.
//!
//! Two FFI declarations instead of a dependency: the handler only stores the signal number in
//! an atomic, which is all a signal handler may safely do. SIGPIPE is already ignored by the
//! Rust runtime, so a write to a closed socket is an error, never a kill.

use std::sync::atomic::{AtomicI32, Ordering};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;
/// Not a signal: the run lost its lease to another process ([`request_stop_lease_lost`]).
const LEASE_LOST: i32 = -1;
/// Not a signal: another source of a several-source run failed for good ([`request_stop_source_failed`]).
const SOURCE_FAILED: i32 = -2;

extern "C" fn on_signal(sig: i32) {
    RECEIVED.store(sig, Ordering::SeqCst);
}

extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
}

/// Install the handlers (once, at start-up).
pub fn install() {
    // SAFETY: the handler only performs an atomic store.
    unsafe {
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
    }
}

/// The signal received, if any ("SIGINT"/"SIGTERM").
pub fn received() -> Option<&'static str> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        SIGINT => Some("SIGINT"),
        SIGTERM => Some("SIGTERM"),
        LEASE_LOST => Some("the loss of its lease (another process runs with the same --name)"),
        SOURCE_FAILED => Some("the failure of another source of this run"),
        _ => Some("a signal"),
    }
}

/// Stop the run as a signal would: its lease was taken by another process with the same name,
/// and two writers under one name would corrupt each other's checkpoints.
pub fn request_stop_lease_lost() {
    RECEIVED.store(LEASE_LOST, Ordering::SeqCst);
}

/// Stop every session of the run as a signal would: one of several sources failed for good,
/// and the run ends with its error (the others stop cleanly, their checkpoints intact).
pub fn request_stop_source_failed() {
    let _ = RECEIVED.compare_exchange(0, SOURCE_FAILED, Ordering::SeqCst, Ordering::SeqCst);
}
