//! A writer: a named thread (`writer-<w>`) that owns whole flows and applies their commands to
//! the target in flow order.
//!
//! Per-key order holds because a flow never spreads over writers: the master already
//! partitioned keys into flows by shard, so partitioning by flow is partitioning by key, and
//! each writer applies a flow's batches in the order the reader queued them. A writer keeps up
//! to [`PER_WRITER_INFLIGHT`] pipelines in flight (sending the next while the earlier ones are
//! answered), under the session-wide [`Semaphore`]; a small batch waits while one is in flight
//! and takes in its flow's next batches ([`Writer::offer`]). An LSN counts as applied, for
//! ACKs, only once the target has answered every command of its batch and of every batch
//! before it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Select};

use super::fallback;
use super::flow::{Batch, ToWriter};
use super::gate::{GateError, GlobalGate};
use super::limit;
use super::semaphore::Semaphore;
use super::shared::{Failure, Shared};
use crate::checkpoint::cluster::SlotSkip;
use crate::checkpoint::Stamp;
use crate::config::OnReject;
use crate::target::{Marks, Target, TargetError};

pub const PER_WRITER_INFLIGHT: usize = 4;

pub struct Writer {
    pub index: usize,
    /// Its metrics board: `source * BOARDS_PER_SOURCE + index`.
    pub board: usize,
    /// (flow index, its queue)
    pub flows: Vec<(usize, Receiver<ToWriter>)>,
    pub conn: Target,
    pub shared: Arc<Shared>,
    pub sem: Arc<Semaphore>,
    pub gate: Arc<GlobalGate>,
    pub on_reject: OnReject,
    /// Called with the flow index when a flow is fully applied (migrate).
    pub done: crossbeam_channel::Sender<usize>,
    /// ACK kick per flow (bounded(1); a full channel means a kick is already pending).
    pub kicks: Vec<crossbeam_channel::Sender<()>>,
    /// Checkpoint markers: the run name their keys carry, the master's replid and flow count
    /// they hold (`None`: no markers).
    pub markers: Option<(String, String, usize)>,
    /// On a cluster resumed from markers, per flow (by index): what each master held then,
    /// which its marker must not go below ([`Marks::resumed`]); the flows' own `skip`.
    pub resumed: Option<Vec<Arc<SlotSkip>>>,
    /// Per flow: where applied batches go back to the reader for reuse.
    pub recycle: Vec<crossbeam_channel::Sender<Batch>>,
    /// Pipelines sent and not yet answered, oldest first.
    pub inflight: VecDeque<Batch>,
    /// When each pipeline in `inflight` was sent (for the latency histogram).
    pub sent_at: VecDeque<Instant>,
    /// A small batch held back while this writer's earlier pipelines are answered, and the
    /// batches of its flow that arrived meanwhile, merged into it (see [`Writer::offer`]).
    pub held: Option<Batch>,
    /// A held batch is sent once it reaches these (the pipeline limits, --batch-cmds and
    /// --batch-bytes).
    pub merge_cmds: usize,
    pub merge_bytes: usize,
}

enum FlowSlot {
    Open,
    /// Parked at a global command: (txid, lsn).
    Parked(u64, u64),
    Closed,
}

impl Writer {
    pub fn run(mut self) {
        if let Err(e) = self.main_loop() {
            self.shared.fail(e);
        }
        self.shared.add_node_writes(&self.conn.node_writes(), self.conn.redirects());
        let conn = &self.conn;
        crate::metrics::global().publish_node_writes(self.board, true, || (conn.node_writes(), conn.redirects()));
        // Whatever is still in flight must not hold permits other writers wait for.
        while !self.inflight.is_empty() {
            self.inflight.pop_front();
            self.sem.release();
        }
    }

    fn main_loop(&mut self) -> Result<(), Failure> {
        let mut slots: Vec<FlowSlot> = self.flows.iter().map(|_| FlowSlot::Open).collect();
        let mut global_cmd = None;
        loop {
            // Which flows may be read now.
            let open: Vec<usize> = (0..self.flows.len()).filter(|&k| matches!(slots[k], FlowSlot::Open)).collect();
            if open.is_empty() {
                self.send_held()?;
                self.complete_all()?;
                let parked: Vec<(u64, u64)> =
                    slots.iter().filter_map(|s| if let FlowSlot::Parked(t, l) = s { Some((*t, *l)) } else { None }).collect();
                if parked.is_empty() {
                    return Ok(()); // every flow closed
                }
                if parked.len() < slots.len() && !self.shared.stop.is_stopped() {
                    return Err(format!(
                        "writer {}: a flow ended while others wait at a global command (txid {})",
                        self.index, parked[0].0
                    )
                    .into());
                }
                let txid = parked[0].0;
                if parked.iter().any(|p| p.0 != txid) {
                    return Err(format!("writer {}: its flows reached different global commands ({parked:?})", self.index).into());
                }
                let cmd: crate::replay::Cmd = global_cmd.take().expect("a parked flow left its command");
                let conn = &mut self.conn;
                let passed = self.gate.pass(txid, &self.shared.stop, || {
                    log::info!("running {} once for every flow (txid {txid})", cmd.describe());
                    conn.run_global(&cmd).map_err(|e| format!("global command: {e}"))
                });
                match passed {
                    Ok(()) => {}
                    Err(GateError::Stopped) => return Ok(()),
                    Err(GateError::Failed(e)) => return Err(e.into()),
                }
                for (k, s) in slots.iter_mut().enumerate() {
                    if let FlowSlot::Parked(_, lsn) = *s {
                        let flow = self.flows[k].0;
                        // A FLUSHALL took the markers with it: put this flow's back. (Between the
                        // two a crash finds markers missing, which means a full resync: safe.)
                        self.write_marker(flow, lsn + 1)?;
                        self.applied(flow, Some(lsn + 1), 1, false);
                        *s = FlowSlot::Open;
                    }
                }
                continue;
            }
            if self.inflight.is_empty() {
                // Nothing to wait for: a held batch has no reason to wait either.
                self.send_held()?;
            }
            // Take the next message from any open flow; while pipelines are in flight, prefer
            // completing the oldest over waiting.
            let msg = {
                let mut sel = Select::new();
                for &k in &open {
                    sel.recv(&self.flows[k].1);
                }
                // (Nothing in flight means nothing held either: it was sent just above.)
                let op = if self.inflight.is_empty() { Some(sel.select()) } else { sel.try_select().ok() };
                op.map(|op| {
                    let k = open[op.index()];
                    (k, op.recv(&self.flows[k].1))
                })
            };
            let Some(msg) = msg else {
                // Nothing new: wait for the oldest answer, then send what was held meanwhile.
                self.complete_oldest()?;
                self.send_held()?;
                continue;
            };
            if !matches!(msg, (_, Ok(ToWriter::Batch(_)))) {
                // Whatever else a flow sends comes after the batch held for it.
                self.send_held()?;
            }
            match msg {
                (k, Err(_)) => slots[k] = FlowSlot::Closed,
                (_, Ok(ToWriter::Batch(b))) => self.offer(b)?,
                (k, Ok(ToWriter::Global { cmd, txid, lsn })) => {
                    slots[k] = FlowSlot::Parked(txid, lsn);
                    global_cmd = Some(cmd);
                }
                (k, Ok(ToWriter::Done)) => {
                    self.complete_all()?;
                    let _ = self.done.send(self.flows[k].0);
                }
            }
        }
    }

    /// A batch from a flow: sent now, or held back to be merged with the next ones.
    ///
    /// Why hold: a live journal arrives a few hundred records per socket read, and each read
    /// made one pipeline (on a server, MULTI ... EXEC with the flow's marker). Redis pays per
    /// pipeline and per read as well as per command: at 750k ops/s, with Redis on a core of
    /// its own, it was 82% busy on such pipelines against 50% for the same commands through
    /// `redis-cli --pipe`, and with the emulator pacing the journal every 5 ms instead of 1 ms
    /// (five times larger reads) the same run held 1.1M ops/s. So, as Nagle's algorithm does
    /// for TCP segments, a small batch is held while an earlier pipeline of this writer is
    /// still unanswered, the batches its flow queues meanwhile are merged into it, and it goes
    /// when that answer arrives or it has grown to half a pipeline. Redis gets fewer, larger
    /// pipelines exactly when it is busy; when it keeps up, nothing is in flight and a batch
    /// goes at once, so the added delay is at most one round trip. Per-key order holds: only
    /// one flow's consecutive batches merge, in order, and nothing of that flow is sent before
    /// the held batch. Checkpoints stay exact: the merged batch carries the later checkpoint
    /// and is applied atomically with it, as one batch read at once would be.
    fn offer(&mut self, mut b: Batch) -> Result<(), Failure> {
        if let Some(h) = &mut self.held {
            let fits = h.flow == b.flow
                && h.cmds.len() + b.cmds.len() <= self.merge_cmds
                && h.bytes() + b.bytes() <= self.merge_bytes;
            if fits {
                h.absorb(&mut b);
                // The emptied batch goes back to its reader (full: dropped here).
                let _ = self.recycle[b.flow].try_send(b);
                if !self.is_small(self.held.as_ref().expect("just merged into")) {
                    self.send_held()?;
                }
                return Ok(());
            }
            self.send_held()?;
        }
        if self.is_small(&b) && !self.inflight.is_empty() {
            self.held = Some(b);
            return Ok(());
        }
        self.start(b)
    }

    /// Under half a pipeline in commands and in bytes: worth holding for more.
    fn is_small(&self, b: &Batch) -> bool {
        b.cmds.len() * 2 < self.merge_cmds && b.bytes() * 2 < self.merge_bytes
    }

    /// Send the held batch, if any.
    fn send_held(&mut self) -> Result<(), Failure> {
        match self.held.take() {
            Some(b) => self.start(b),
            None => Ok(()),
        }
    }

    /// Send a batch as a pipeline (waiting for a permit), keeping at most
    /// [`PER_WRITER_INFLIGHT`] in flight (one for a batch that needs the connection alone).
    fn start(&mut self, b: Batch) -> Result<(), Failure> {
        // --max-ops-per-s / --max-bytes-per-s: wait for the batch's slot with nothing in flight,
        // so that our permits serve the other writers meanwhile.
        if let Some(slot) = self.shared.limit.reserve(b.cmds.len(), || limit::payload(&b.cmds)) {
            self.complete_all()?;
            limit::wait_until(slot, &self.shared.stop);
        }
        let limit = if self.conn.needs_exclusive(&b.cmds, &b.slots) { 1 } else { PER_WRITER_INFLIGHT };
        while self.inflight.len() >= limit {
            self.complete_oldest()?;
        }
        if !self.sem.try_acquire() {
            // Free our own permits first: waiting while holding them could starve everyone.
            self.complete_all()?;
            self.sem.acquire();
        }
        let marks = match (&self.markers, b.checkpoint) {
            (Some((run, replid, flows)), Some(next_lsn)) => Some(Marks {
                stamp: Stamp { run, flow: b.flow, replid, flows: *flows, next_lsn },
                unsafe_twice: &b.unsafe_twice,
                lsns: &b.lsns,
                resumed: self.resumed.as_ref().map(|s| &*s[b.flow]),
            }),
            _ => None,
        };
        if let Err(e) = self.conn.send_batch(&b.cmds, &b.slots, marks.as_ref()) {
            self.sem.release();
            return Err(self.describe(e));
        }
        self.inflight.push_back(b);
        self.sent_at.push_back(Instant::now());
        Ok(())
    }

    fn complete_all(&mut self) -> Result<(), Failure> {
        while !self.inflight.is_empty() {
            self.complete_oldest()?;
        }
        Ok(())
    }

    fn complete_oldest(&mut self) -> Result<(), Failure> {
        let Some(b) = self.inflight.pop_front() else { return Ok(()) };
        let sent_at = self.sent_at.pop_front();
        let r = self.conn.recv(&b.cmds);
        let refused = self.conn.take_refused_restores();
        // Keys whose RESTORE was refused are written as commands, in a pipeline sent now
        // (before any later batch of the flow) under this batch's permit.
        let kept_permit = !refused.is_empty() && !matches!(r, Err(TargetError::Io { .. }));
        if kept_permit {
            if let Err(e) = self.fall_back(&b, &refused) {
                self.sem.release();
                return Err(e);
            }
        } else {
            self.sem.release();
        }
        self.record_round_trip(sent_at);
        match r {
            Ok(()) => {}
            Err(TargetError::Rejected { command, error, more, .. }) if self.on_reject == OnReject::SkipAndCount => {
                self.shared.rejected.fetch_add(1 + more as u64, Relaxed);
                log::warn!("flow {}: target rejected {command}: {error}; skipped and counted (policy on_reject = skip)", b.flow);
            }
            Err(e) => {
                let f = self.describe(e);
                return Err(Failure { msg: format!("flow {}: {}", b.flow, f.msg), ..f });
            }
        }
        self.shared.flows[b.flow].commands.fetch_add(b.cmds.len() as u64, Relaxed);
        // The checkpoint, when there is one, is the flow's next LSN (it also covers the
        // JOURNAL_OFFSET of a batch without records).
        self.applied(b.flow, b.checkpoint.or(b.last_lsn.map(|l| l + 1)), b.records, b.force_ack);
        // Full means the reader has spares: dropped here then.
        let _ = self.recycle[b.flow].try_send(b);
        Ok(())
    }

    /// Send the commands that replace `b`'s refused RESTOREs ([`fallback::plan`]) as a
    /// pipeline of their own, in flight after those already sent.
    fn fall_back(&mut self, b: &Batch, refused: &[(usize, String)]) -> Result<(), Failure> {
        let later = self.inflight.iter().flat_map(|x| x.cmds.iter());
        let plan = fallback::plan(&b.cmds, refused, later).map_err(|e| Failure::from(format!("flow {}: {e}", b.flow)))?;
        self.shared.note_restore_fallbacks(&plan.reasons);
        let mut fb = Batch::new(b.flow, 0);
        fb.cmds = plan.cmds;
        if self.conn.is_cluster() {
            fb.slots = fb.cmds.iter().map(crate::target::keyspec::slot_hint).collect();
        }
        self.conn.send_batch(&fb.cmds, &fb.slots, None).map_err(|e| self.describe(e))?;
        self.inflight.push_back(fb);
        self.sent_at.push_back(Instant::now());
        Ok(())
    }

    /// Record that everything before `next_lsn` of `flow` is applied; kick the ACK thread
    /// when due.
    fn applied(&self, flow: usize, next_lsn: Option<u64>, records: u64, force: bool) {
        let st = &self.shared.flows[flow];
        if let Some(l) = next_lsn {
            st.applied_next_lsn.fetch_max(l, Relaxed);
        }
        let since = st.applied_since_ack.fetch_add(records, Relaxed) + records;
        if force || since > 1024 {
            let _ = self.kicks[flow].try_send(());
        }
    }

    /// Write one flow's marker on its own (after a global command), with nothing in flight.
    fn write_marker(&mut self, flow: usize, next_lsn: u64) -> Result<(), Failure> {
        let Some((run, replid, flows)) = &self.markers else { return Ok(()) };
        // (No resume floor: a global command removed every master's markers.)
        let marks = Marks { stamp: Stamp { run, flow, replid, flows: *flows, next_lsn }, unsafe_twice: &[], lsns: &[], resumed: None };
        self.conn.send_batch(&[], &[], Some(&marks)).and_then(|()| self.conn.recv(&[])).map_err(|e| self.describe(e))
    }

    /// Metrics: the pipeline's round trip, and this writer's per-node counts once a second
    /// or when nothing is left in flight (the writer may then wait long: the figures must not
    /// stay behind meanwhile).
    fn record_round_trip(&self, sent_at: Option<Instant>) {
        let m = crate::metrics::global();
        if let Some(t) = sent_at {
            m.pipeline_latency.record(t.elapsed());
        }
        let conn = &self.conn;
        m.publish_node_writes(self.board, self.inflight.is_empty(), || (conn.node_writes(), conn.redirects()));
    }

    /// A rejected command is fatal (retrying would be rejected again); a lost connection is
    /// transient: the session ends and a new one resumes from the checkpoints.
    fn describe(&self, e: TargetError) -> Failure {
        match e {
            TargetError::Rejected { .. } => format!("{e} (set policy.on_reject = skip to count and go on)").into(),
            TargetError::Io { .. } => Failure::transient(format!("{e}")),
        }
    }
}
