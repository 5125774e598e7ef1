//! The socket side of one flow: a [`Pipe`] of bytes waiting to be written, and the writer
//! thread (`emu-flow-<i>`) that drains it.
//!
//! Producers (the snapshot step, journal writes, STARTSTABLE) append to the pipe under their
//! shard lock; the writer takes everything pending and writes it with blocking writes, outside
//! every lock, so a replica that does not read stalls only its own flow. Each write is timed:
//! the longest is `max_stall_ms`, and one longer than `replication_timeout` cancels the
//! session, as Dragonfly's `BreakStalledFlowsInShard` does. The writer also runs the snapshot
//! steps of its flow, so the snapshot advances exactly as fast as the replica reads.

use std::io::Write;
use std::net::Shutdown;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::engine::Core;
use crate::tls::Stream;

/// Largest single socket write (and so the unit a stall is measured in).
const WRITE_SLICE: usize = 64 * 1024;

#[derive(Default)]
pub(crate) struct PipeState {
    /// Bytes not yet handed to the socket.
    pub out: Vec<u8>,
    pub cancelled: bool,
    /// The writer must run snapshot steps (the flow is in full sync).
    pub snapshot_work: bool,
    /// The snapshot reached `pause_snapshot_after` and waits for `resume_snapshot()`.
    pub paused: bool,
    /// FULLSYNC_END has been produced (the snapshot fiber is done).
    pub snapshot_done: bool,
    /// Total bytes ever appended.
    pub enqueued: u64,
    /// `enqueued` right after FULLSYNC_END.
    pub fse_at: Option<u64>,
    /// Total bytes written to the socket.
    pub written: u64,
}

pub(crate) struct Pipe {
    st: Mutex<PipeState>,
    cv: Condvar,
}

impl Pipe {
    pub fn new() -> Self {
        Pipe { st: Mutex::new(PipeState::default()), cv: Condvar::new() }
    }
    pub fn lock(&self) -> MutexGuard<'_, PipeState> {
        self.st.lock()
    }
    /// Append bytes for the socket and wake the writer.
    pub fn push(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut st = self.st.lock();
        if st.cancelled {
            return;
        }
        st.out.extend_from_slice(bytes);
        st.enqueued += bytes.len() as u64;
        drop(st);
        self.cv.notify_all();
    }
    /// Change the state and wake the writer.
    pub fn update(&self, f: impl FnOnce(&mut PipeState)) {
        f(&mut self.st.lock());
        self.cv.notify_all();
    }
    pub fn cancel(&self) {
        self.update(|st| {
            st.cancelled = true;
            st.out = Vec::new();
        });
    }
    pub fn is_cancelled(&self) -> bool {
        self.st.lock().cancelled
    }
}

/// What the writer does next.
enum Next {
    Write(Vec<u8>),
    Step,
    Stop,
}

/// The body of `emu-flow-<flow>`: run snapshot steps and write whatever the pipe holds until
/// the session is cancelled or the socket fails.
pub(crate) fn run_writer(core: Arc<Core>, sid: u32, flow: usize, pipe: Arc<Pipe>, mut sock: Stream) {
    let cfg = &core.cfg;
    let segment = cfg.segment_size.filter(|s| *s > 0).unwrap_or(WRITE_SLICE).min(WRITE_SLICE);
    let close_after = cfg.close_flow_after.filter(|(f, _)| *f == flow).map(|(_, n)| n);
    // Dragonfly sets TCP_NODELAY on its connections (`--tcp_nodelay`, default true): without
    // it, small journal writes wait for the replica's delayed ACK (up to 40 ms of lag).
    let _ = sock.set_nodelay(true);
    // A write blocked this long returns an error; one blocked longer in total cancels too.
    let _ = sock.set_write_timeout(Some(cfg.replication_timeout));
    let mut written: u64 = 0;
    loop {
        let next = {
            let mut st = pipe.lock();
            loop {
                if st.cancelled {
                    break Next::Stop;
                }
                if !st.out.is_empty() {
                    break Next::Write(std::mem::take(&mut st.out));
                }
                if st.snapshot_work && !st.paused {
                    break Next::Step;
                }
                pipe.cv.wait(&mut st);
            }
        };
        // Either the pipe's bytes or a slice of a pre-encoded body, sent without a copy.
        let (owned, shared);
        let mut bytes: &[u8] = match next {
            Next::Stop => return,
            Next::Step => match core.snapshot_step(sid, flow, &pipe) {
                Some(s) => {
                    shared = s;
                    &shared.0[shared.1.clone()]
                }
                None => continue,
            },
            Next::Write(b) => {
                owned = b;
                &owned
            }
        };
        let mut close_now = false;
        if let Some(limit) = close_after {
            let room = limit.saturating_sub(written);
            if bytes.len() as u64 >= room {
                bytes = &bytes[..room as usize];
                close_now = true;
            }
        }
        for piece in bytes.chunks(segment) {
            let start = Instant::now();
            let r = sock.write_all(piece);
            let took = start.elapsed();
            core.note_stall(took);
            if let Err(e) = r {
                core.cancel_session(sid, &format!("flow {flow}: write failed: {e}"));
                return;
            }
            if took > cfg.replication_timeout {
                core.cancel_session(sid, &format!("flow {flow}: a write was blocked for {} ms", took.as_millis()));
                return;
            }
            written += piece.len() as u64;
        }
        let fse_now = {
            let mut st = pipe.lock();
            st.written = written;
            st.fse_at.is_some_and(|at| written >= at)
        };
        if fse_now {
            core.progress.bump();
        }
        if close_now {
            log::info!("flow {flow}: closing after {written} bytes (fault injection)");
            let _ = sock.shutdown(Shutdown::Write);
            core.cancel_session(sid, &format!("flow {flow} closed after {written} bytes (fault injection)"));
            return;
        }
    }
}
