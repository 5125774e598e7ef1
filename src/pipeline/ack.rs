//! The ACK thread of one flow (`ack-<i>`): it stands in for its flow at the STARTSTABLE
//! barrier, then sends `REPLCONF ACK <next lsn>` on the flow connection.
//!
//! Why a separate thread: the card wants a `std::sync::Barrier` before `DFLY STARTSTABLE`, and
//! correctness wants every flow socket read without pause (the master cancels a replica whose
//! socket stalls 30 s, and it may send journal blobs after FULLSYNC_END). The reader therefore
//! only signals FULLSYNC_END; this thread, idle until stable sync anyway, waits at the barrier
//! with the coordinator. ACK cadence as Dragonfly's replica: at the start of stable sync, every
//! second, after more than 1024 applied records, and right after a PING is applied. The ACK
//! carries only what the target applied. The master never answers an ACK.

use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use crossbeam_channel::{select, Receiver};

use super::flow::FlowStart;
use super::shared::Shared;
use crate::target::resp;

pub struct AckThread {
    pub index: usize,
    /// A write handle on the flow socket (the reader owns the read side; with TLS the two
    /// share the session, see `tls::stream`).
    pub stream: crate::tls::Stream,
    pub cut: Receiver<()>,
    pub stable: Receiver<()>,
    pub kick: Receiver<()>,
    pub barrier: Arc<Barrier>,
    pub shared: Arc<Shared>,
    /// How the flow's stream starts: a v1.35+ partial resume has no FULLSYNC_END to wait for.
    pub start: FlowStart,
}

const INTERVAL: Duration = Duration::from_secs(1);

impl AckThread {
    pub fn run(mut self) {
        let stop = self.shared.stop.receiver().clone();
        // 1. Wait for this flow's FULLSYNC_END (or the stop), then at the barrier. Arriving on
        //    stop too keeps the coordinator from waiting forever on a failed flow.
        if self.start.has_cut() {
            select! {
                recv(self.cut) -> _ => {},
                recv(stop) -> _ => {},
            }
        }
        self.barrier.wait();
        // 2. Stable sync begins on this flow when the reader has read the token.
        select! {
            recv(self.stable) -> r => if r.is_err() { return },
            recv(stop) -> _ => return,
        }
        let mut last_sent = None;
        loop {
            self.send_ack(&mut last_sent);
            select! {
                recv(self.kick) -> r => if r.is_err() { return },
                recv(stop) -> _ => {
                    // A final ACK with what was applied, then leave the socket to shutdown.
                    self.send_ack(&mut last_sent);
                    return;
                },
                default(INTERVAL) => {},
            }
        }
    }

    fn send_ack(&mut self, last: &mut Option<u64>) {
        let st = &self.shared.flows[self.index];
        let lsn = st.applied_next_lsn.load(Relaxed);
        if lsn == 0 {
            // The end of the full sync is not applied yet: nothing to acknowledge.
            return;
        }
        st.applied_since_ack.store(0, Relaxed);
        let mut b = Vec::with_capacity(48);
        let n = lsn.to_string();
        resp::encode(&mut b, [b"REPLCONF".as_slice(), b"ACK", n.as_bytes()].into_iter());
        if let Err(e) = self.stream.write_all(&b) {
            if !self.shared.stop.is_stopped() {
                log::warn!("flow {}: sending REPLCONF ACK {lsn}: {e}", self.index);
            }
            return;
        }
        if *last != Some(lsn) {
            log::debug!("flow {}: ACK {lsn}", self.index);
        }
        *last = Some(lsn);
    }
}
