//! The reader of one flow: a named thread (`flow-<i>`) that reads its socket, decodes, turns
//! items into commands and queues them, in order, for the writer that owns the flow.
//!
//! This thread never waits for anything but its socket and, when the target is slower than the
//! master, for room in its bounded queue. In particular it does not wait at the STARTSTABLE
//! barrier: after FULLSYNC_END the master may still send journal blobs (it flushes them at
//! 8 KiB), and a reader that stopped reading there would stall the master's writes into the
//! 30 s replication timeout (the Go predecessor's bug). It only *reports* FULLSYNC_END; the
//! flow's ACK thread waits at the barrier on its behalf.

use std::io::Read;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender};

use super::shared::{Failure, Fault, Shared};
use crate::checkpoint::{cluster::SlotSkip, idempotent};
use crate::protocol::{FlowDecoder, Item, Limits, RecordKind};
use crate::replay::{Cmd, RecordClass, Replayer};
use crate::source::files::FileCheck;
use crate::target::keyspec;

/// How the session ends for a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Apply the journal until stopped.
    Replicate,
    /// Stop applying at the token: the snapshot and every record before JOURNAL_OFFSET.
    Migrate,
    /// Snapshot files: every stream ends with its file.
    Restore,
}

/// Where a flow's stream starts, as the master answered its `DFLY FLOW` (protocol doc 4, 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowStart {
    /// FULL: the snapshot, FULLSYNC_END, and after STARTSTABLE JOURNAL_OFFSET, EOF, the token
    /// and the journal.
    Snapshot,
    /// PARTIAL from a v1.35+ master: journal records from this LSN on, nothing else.
    Journal(u64),
    /// PARTIAL from a v1.34 master (protocol doc 8.3): framed like a full sync, but the body
    /// is the flow's records from this LSN on as journal blobs (no snapshot entries).
    Backlog(u64),
    /// A snapshot file: the body, EOF and its checksum (see `source::files`); the stream is
    /// done at the end of the file.
    File,
}

impl FlowStart {
    /// The LSN the flow resumes at, if it resumes.
    pub fn resume_lsn(self) -> Option<u64> {
        match self {
            FlowStart::Snapshot | FlowStart::File => None,
            FlowStart::Journal(l) | FlowStart::Backlog(l) => Some(l),
        }
    }
    /// The stream has a FULLSYNC_END to wait for before STARTSTABLE.
    pub fn has_cut(self) -> bool {
        !matches!(self, FlowStart::Journal(_) | FlowStart::File)
    }
}

/// Work for a writer, in flow order.
pub enum ToWriter {
    Batch(Batch),
    /// A global command (FLUSHALL/FLUSHDB) with its txid and LSN: run once when every flow
    /// reached it.
    Global { cmd: Cmd, txid: u64, lsn: u64 },
    /// Migrate: this flow has nothing more to apply.
    Done,
}

/// Batches travel reader -> writer -> back to the reader (the `recycled` channel), which
/// drops the applied commands and reuses the batch. That keeps every allocation of a flow's
/// commands freed by the thread that made it: freed by the writers instead, glibc's frees went
/// to the flows' arenas under their locks, and each new batch's large allocation
/// consolidated thousands of small free chunks (malloc was 45% of the cluster path's CPU).
pub struct Batch {
    pub flow: usize,
    pub cmds: Vec<Cmd>,
    /// The LSN of the last stable record this batch completes, if any.
    pub last_lsn: Option<u64>,
    /// Stable records the batch completes (for the ACK cadence).
    pub records: u64,
    /// A PING is in it: ACK as soon as it is applied.
    pub force_ack: bool,
    /// Stable sync (and the journal blobs of a v1.34 resume): the flow's next LSN once this
    /// batch is applied (what an ACK may carry then). With checkpoints the writer applies the
    /// batch atomically with the flow's marker carrying it.
    pub checkpoint: Option<u64>,
    /// For a cluster target: each command's slot ([`keyspec::slot_hint`]), computed as the
    /// command is made (its bytes are in the flow thread's cache then), else empty.
    pub slots: Vec<u16>,
    /// For a cluster target with checkpoints: per command, whether it is unsafe to apply twice
    /// ([`crate::checkpoint::idempotent`]) and its record's LSN; else empty.
    pub unsafe_twice: Vec<bool>,
    pub lsns: Vec<u64>,
    bytes: usize,
}

impl Batch {
    pub(super) fn new(flow: usize, capacity: usize) -> Self {
        Batch {
            flow,
            cmds: Vec::with_capacity(capacity),
            last_lsn: None,
            records: 0,
            force_ack: false,
            checkpoint: None,
            slots: Vec::new(),
            unsafe_twice: Vec::new(),
            lsns: Vec::new(),
            bytes: 0,
        }
    }
    fn is_empty(&self) -> bool {
        self.cmds.is_empty() && self.last_lsn.is_none()
    }
    /// Payload bytes of its commands.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
    /// Append `later`, the next batch of the same flow, leaving it empty (for the reader to
    /// reuse). The result is what the two would have been as one batch.
    pub(super) fn absorb(&mut self, later: &mut Batch) {
        debug_assert_eq!(self.flow, later.flow);
        self.cmds.append(&mut later.cmds);
        self.slots.append(&mut later.slots);
        self.unsafe_twice.append(&mut later.unsafe_twice);
        self.lsns.append(&mut later.lsns);
        self.last_lsn = later.last_lsn.or(self.last_lsn);
        self.records += later.records;
        self.force_ack |= later.force_ack;
        self.checkpoint = later.checkpoint.or(self.checkpoint);
        self.bytes += later.bytes;
        later.reset();
    }
    fn reset(&mut self) {
        self.cmds.clear();
        self.last_lsn = None;
        self.records = 0;
        self.force_ack = false;
        self.checkpoint = None;
        self.slots.clear();
        self.unsafe_twice.clear();
        self.lsns.clear();
        self.bytes = 0;
    }
}

/// Events for the coordinator and the flow's ACK thread.
pub struct Signals {
    /// FULLSYNC_END seen (to the ACK thread, which waits at the barrier).
    pub cut: Sender<()>,
    /// The token was read: stable sync has begun on this flow (to the ACK thread).
    pub stable: Sender<()>,
    /// The reader exited (to the coordinator).
    pub exited: Sender<usize>,
}

pub struct FlowReader {
    pub index: usize,
    /// The bytes: a flow connection (plain or TLS; the ACK thread writes on a clone of it),
    /// or a snapshot file.
    pub stream: Box<dyn Read + Send>,
    pub leftover: Vec<u8>,
    pub token: String,
    pub mode: Mode,
    /// Decoder bounds, and which values are taken whole (RESTORE payloads).
    pub limits: Limits,
    pub replayer: Replayer,
    pub shared: Arc<Shared>,
    pub to_writer: Sender<ToWriter>,
    /// Batches the writer has applied, for reuse (see [`Batch`]).
    pub recycled: Receiver<Batch>,
    pub signals: Signals,
    pub batch_cmds: usize,
    pub batch_bytes: usize,
    /// Where the replayer's counts (skipped/altered keys) are published when the reader ends.
    pub stats_out: Arc<parking_lot::Mutex<crate::replay::ReplayStats>>,
    /// The target is a cluster: batches carry their commands' slots (see [`Batch::slots`]).
    pub slot_hints: bool,
    /// How the stream starts (a snapshot, or a resume at an LSN in either dialect, or a file).
    pub start: FlowStart,
    /// A file's path, for its errors (with `FlowStart::File`).
    pub file: Option<std::path::PathBuf>,
    /// A cluster target with checkpoints: batches say which commands are unsafe to apply
    /// twice, and carry their LSNs (see [`Batch::unsafe_twice`]).
    pub classify: bool,
    /// A resume on a cluster: what each slot holds already ([`SlotSkip`]).
    pub skip: Option<Arc<SlotSkip>>,
    /// A Dragonfly cluster node: the slots its master owned when the session started.
    pub owned: Option<Arc<crate::source::cluster::SlotRanges>>,
}

const READ_BUFFER: usize = 1 << 20;
/// Warn when the reader has waited this long for queue room: the master gives up at 30 s.
const STALL_WARNING: Duration = Duration::from_secs(10);

impl FlowReader {
    pub fn run(mut self) {
        let i = self.index;
        if let Err(e) = self.read_loop() {
            if !self.shared.stop.is_stopped() || !e.benign_after_stop {
                self.shared.fail(Failure { msg: e.message, fault: e.fault });
            }
            // The session is ending: keep reading, discarding, until the master closes the
            // flow (it does once the main connection is half-closed; the coordinator bounds the
            // wait). Closing a socket with unread bytes would send an RST instead of a FIN.
            self.drain();
        }
        *self.stats_out.lock() = self.replayer.stats().clone();
        let _ = self.signals.exited.send(i);
    }

    fn read_loop(&mut self) -> Result<(), FlowError> {
        let i = self.index;
        let token = || Some(self.token.clone().into_bytes());
        let dec = match self.start {
            FlowStart::Snapshot => FlowDecoder::new(Some(i as u32), token(), self.limits),
            // PARTIAL, v1.35+: the stream is the journal from `lsn` on (protocol doc 8.2).
            FlowStart::Journal(lsn) => FlowDecoder::partial(Some(i as u32), lsn, self.limits),
            // PARTIAL, v1.34: the records from `lsn` on come as journal blobs, each with its
            // LSN (protocol doc 8.3); they are checkpointed like stable records.
            FlowStart::Backlog(lsn) => FlowDecoder::partial_v134(Some(i as u32), token(), lsn, self.limits),
            FlowStart::File => FlowDecoder::file(self.limits),
        };
        let resume = self.start.resume_lsn();
        let mut st = ReadState {
            dec,
            items: Vec::new(),
            batch: self.new_batch(),
            applying: true,
            checkpointed: resume.is_some(),
            next_lsn: resume,
            check: (self.start == FlowStart::File).then(FileCheck::new),
        };
        if let FlowStart::Journal(_) = self.start {
            self.begin_stable();
        }
        let leftover = std::mem::take(&mut self.leftover);
        if !leftover.is_empty() {
            self.process(&leftover, &mut st)?;
        }
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            let n = match self.stream.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(FlowError::after_stop(format!(
                        "flow {i}: reading from the master failed at byte offset {}: {e}",
                        st.dec.consumed() + st.dec.buffered() as u64
                    )))
                }
            };
            if n == 0 {
                if let Some(check) = &st.check {
                    return self.file_end(check, &st.dec);
                }
                return self.at_eof(&st.dec, st.applying);
            }
            self.process(&buf[..n], &mut st)?;
        }
    }

    fn drain(&mut self) {
        if self.file.is_some() {
            // A file is not a master waiting on its socket: nothing to read to its end.
            return;
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Decode bytes just read, turn the items into commands and queue them.
    fn process(&mut self, data: &[u8], st: &mut ReadState) -> Result<(), FlowError> {
        let i = self.index;
        self.shared.flows[i].bytes.fetch_add(data.len() as u64, Relaxed);
        self.shared.flows[i].transit.read_now();
        if !st.applying {
            // Migrate is complete for this flow: keep draining so the master never stalls.
            return Ok(());
        }
        if let Some(check) = &st.check {
            check.header(data).map_err(|(offset, m)| self.file_error(offset, m))?;
        }
        if let Err(e) = st.dec.feed(data, &mut st.items) {
            return Err(match &self.file {
                Some(_) => self.file_error(None, e.to_string()),
                None => FlowError::fatal(format!("{e}")),
            });
        }
        if let Some(check) = &mut st.check {
            check.fed(&st.dec, data, &st.items);
        }
        // The item vector is reused from read to read.
        let mut items = std::mem::take(&mut st.items);
        for item in items.drain(..) {
            if !self.handle(item, st)? {
                break;
            }
        }
        st.items = items;
        if !st.batch.is_empty() {
            self.send_batch(st)?;
        }
        if !st.applying {
            self.send_msg(ToWriter::Done)?;
        }
        self.shared.flows[i].received_next_lsn.store(st.dec.next_lsn().unwrap_or(0), Relaxed);
        super::report::publish_stats(&self.replayer, &self.stats_out);
        Ok(())
    }

    /// Handle one item; returns false when the rest of this read must not be applied.
    fn handle(&mut self, item: Item, rs: &mut ReadState) -> Result<bool, FlowError> {
        let i = self.index;
        let st = &self.shared.flows[i];
        let batch = &mut rs.batch;
        match item {
            Item::Value(mut v) => {
                if v.last {
                    st.keys.fetch_add(1, Relaxed);
                }
                batch.bytes += v.wire_bytes as usize;
                // The key's slot, once, for a cluster node's ownership and a cluster target's hints.
                let slot = (self.owned.is_some() || self.slot_hints).then(|| crate::target::slots::key_slot(&v.head.key));
                let not_owned = match (&self.owned, slot) {
                    (Some(o), Some(s)) => !o.contains(s),
                    _ => false,
                };
                if not_owned {
                    // A key being migrated into this master: until the layout says it owns the
                    // slot, the old owner's session writes it (this snapshot's copy may be older).
                    self.replayer.skip_value(&v, super::slots::NOT_OWNED);
                } else {
                    self.replayer.value(&mut v, &mut batch.cmds);
                }
                if let (true, Some(s)) = (self.slot_hints, slot) {
                    // Every command a snapshot entry becomes is about its key.
                    batch.slots.resize(batch.cmds.len(), s);
                }
            }
            Item::Journal(rec) => {
                let is_global = rec.argv.get(0).is_some_and(|n| n.eq_ignore_ascii_case(b"FLUSHALL") || n.eq_ignore_ascii_case(b"FLUSHDB"));
                if rec.lsn.is_none() && is_global {
                    // Dragonfly's own replica restarts the full sync here (issue #1231 upstream):
                    // applying a flush in the middle of a snapshot load can delete data that
                    // must survive. (The blobs of a v1.34 resume carry LSNs: no snapshot there,
                    // so a flush is applied once for every flow, as in stable sync.)
                    return Err(FlowError::transient(format!(
                        "flow {i}: the master journaled {} during the full sync; Dragonfly restarts the sync in this \
                         case, and so does df2redis (a new session, a full resync).",
                        rec.argv.name_upper()
                    )));
                }
                if let Some(why) = self.owned.as_ref().and_then(|o| super::slots::foreign(&rec.argv, o)) {
                    // Nothing of this record or after it is applied; the markers stay before it.
                    return Err(FlowError::transient(format!(
                        "flow {i}: {why}. The session restarts: a master whose slots changed resyncs the slots it owns \
                         then, after the previous owner's session has stopped"
                    )));
                }
                if let Some(l) = rec.lsn {
                    st.records.fetch_add(1, Relaxed);
                    rs.next_lsn = Some(l + 1);
                }
                batch.bytes += rec.argv.byte_len();
                let (lsn, txid_kind_ping) = (rec.lsn, rec.kind == RecordKind::Ping);
                // A global record's command is built before the record is handed over.
                let global = is_global.then(|| self.replayer.global_command(&rec));
                let from = batch.cmds.len();
                let class =
                    self.replayer.record_owned(rec, &mut batch.cmds).map_err(|e| FlowError::fatal(format!("flow {i}: {e}")))?;
                if let (Some(skip), Some(l), RecordClass::Normal) = (&self.skip, lsn, class) {
                    // A cluster resumes each flow at its lowest node marker: what the other
                    // nodes hold already is left out.
                    let dropped = skip.filter(l, &mut batch.cmds, from);
                    st.resume_skipped.fetch_add(dropped as u64, Relaxed);
                    if l + 1 >= skip.until() {
                        let n = st.resume_skipped.load(Relaxed);
                        log::info!(
                            "flow {i}: resumed past every node's checkpoint; {n} commands were left out (their cluster nodes \
                             held them already)"
                        );
                        self.skip = None;
                    }
                }
                if self.classify {
                    batch.unsafe_twice.resize(from, false);
                    batch.lsns.resize(from, 0);
                    batch.unsafe_twice.extend(batch.cmds[from..].iter().map(|c| !idempotent::replays_safely(&c.argv)));
                    batch.lsns.resize(batch.cmds.len(), lsn.unwrap_or(0));
                }
                if self.slot_hints {
                    let from = batch.slots.len();
                    batch.slots.extend(batch.cmds[from..].iter().map(keyspec::slot_hint));
                }
                match (class, lsn) {
                    (RecordClass::Normal, Some(lsn)) => {
                        batch.last_lsn = Some(lsn);
                        batch.records += 1;
                        batch.force_ack |= txid_kind_ping;
                    }
                    (RecordClass::Normal, None) => {}
                    (RecordClass::Global { txid }, lsn) => {
                        // Everything before it goes first, checkpointed up to the global
                        // command, not past it: the writer completes its LSN once it ran.
                        if !batch.is_empty() {
                            let after = std::mem::replace(&mut rs.next_lsn, lsn);
                            self.send_batch(rs)?;
                            rs.next_lsn = after;
                        }
                        let cmd = global.expect("classified global");
                        self.send_msg(ToWriter::Global { cmd, txid, lsn: lsn.unwrap_or(0) })?;
                    }
                }
            }
            Item::LsnMark { announced, expected } => {
                if Some(announced) != expected {
                    log::warn!("flow {i}: the master's LSN marker says {announced}, the last record decoded had {expected:?}");
                }
            }
            Item::FullSyncEnd => {
                st.fullsync_end.store(true, Relaxed);
                match self.start {
                    FlowStart::Backlog(from) => log::info!(
                        "flow {i}: the master's backlog from LSN {from} is sent (FULLSYNC_END after {} records)",
                        st.records.load(Relaxed)
                    ),
                    _ => log::info!("flow {i}: snapshot complete (FULLSYNC_END after {} keys)", st.keys.load(Relaxed)),
                }
                let _ = self.signals.cut.send(());
            }
            Item::JournalOffset(o) => rs.next_lsn = Some(o),
            Item::Token(_) => {
                rs.checkpointed = true;
                self.begin_stable();
                // The end of the full sync goes to the writer now, even with nothing else to
                // send: once applied, JOURNAL_OFFSET may be acknowledged (not before: the
                // snapshot ahead of it may still be in flight), and with checkpoints a flow
                // that stays quiet is resumable.
                self.send_batch(rs)?;
                if self.mode == Mode::Migrate {
                    log::info!(
                        "flow {i}: reached the journal offset {}; nothing after it is applied",
                        rs.dec.journal_offset().unwrap_or(0)
                    );
                    rs.applying = false;
                    return Ok(false);
                }
            }
            Item::Aux { .. } | Item::Eof { .. } | Item::Skipped { .. } => {}
        }
        if rs.batch.cmds.len() >= self.batch_cmds || rs.batch.bytes >= self.batch_bytes {
            self.send_batch(rs)?;
        }
        Ok(true)
    }

    /// The end of a file: it must have ended after its checksum (which must match); then the
    /// stream is done.
    fn file_end(&self, check: &FileCheck, dec: &FlowDecoder) -> Result<(), FlowError> {
        let end = check.finish(dec).map_err(|(offset, m)| self.file_error(offset, m))?;
        // For the progress display: this stream's snapshot is complete.
        self.shared.flows[self.index].fullsync_end.store(true, Relaxed);
        let path = self.file.as_deref().unwrap_or(std::path::Path::new("?"));
        log::info!(
            "{}: {} keys, {} bytes of RDB data, checksum {}",
            path.display(),
            self.shared.flows[self.index].keys.load(Relaxed),
            end.data_bytes,
            if end.checksum_verified { "verified" } else { "not written (0), not verified" }
        );
        self.send_msg(ToWriter::Done)
    }

    /// A file's error, named by its path and (when known) the byte offset.
    fn file_error(&self, offset: Option<u64>, message: String) -> FlowError {
        let path = self.file.as_deref().unwrap_or(std::path::Path::new("?")).display();
        FlowError::fatal(match offset {
            Some(o) => format!("{path}: byte offset {o}: {message}"),
            None => format!("{path}: {message}"),
        })
    }

    fn at_eof(&self, dec: &FlowDecoder, applying: bool) -> Result<(), FlowError> {
        if !applying {
            return Ok(());
        }
        if self.shared.stop.is_stopped() {
            // The session is ending for another reason (another flow failed and the master
            // closed everything, or we shut down). A stream cut mid-item is still worth a line:
            // it may be the first cause.
            if let Err(e) = dec.finish() {
                log::warn!("the master closed the connection of {e}");
            }
            return Ok(());
        }
        match dec.finish() {
            Err(e) => Err(FlowError::transient(format!("the master closed the connection of {e}"))),
            Ok(()) => Err(FlowError::transient(format!(
                "flow {}: the master closed the connection at byte offset {} (it cancelled the replication \
                 session; its log says why, e.g. a replication timeout)",
                self.index,
                dec.consumed()
            ))),
        }
    }

    /// An empty batch: a recycled one when the writer has returned any.
    fn new_batch(&self) -> Batch {
        match self.recycled.try_recv() {
            Ok(mut b) => {
                b.reset();
                b
            }
            Err(_) => Batch::new(self.index, self.batch_cmds),
        }
    }

    /// Stable sync begins on this flow (its token was read, or it resumes PARTIAL, v1.35+).
    fn begin_stable(&self) {
        self.shared.flows[self.index].stable.store(true, Relaxed);
        let _ = self.signals.stable.send(());
    }

    /// Queue the batch being filled and start a new one. Once records carry LSNs it carries
    /// the flow's next LSN (see [`Batch::checkpoint`]).
    fn send_batch(&self, rs: &mut ReadState) -> Result<(), FlowError> {
        let mut b = std::mem::replace(&mut rs.batch, self.new_batch());
        if rs.checkpointed {
            b.checkpoint = rs.next_lsn;
        }
        if self.classify {
            b.unsafe_twice.resize(b.cmds.len(), true);
            b.lsns.resize(b.cmds.len(), 0);
        }
        debug_assert!(!self.slot_hints || b.slots.len() == b.cmds.len());
        let st = &self.shared.flows[self.index];
        st.transit.queued(b.last_lsn, st.applied_next_lsn.load(Relaxed));
        self.send_msg(ToWriter::Batch(b))
    }

    /// Queue a message for the writer. A full queue means the target is slower than the master:
    /// wait, and say so long before the master's 30 s limit.
    fn send_msg(&self, mut msg: ToWriter) -> Result<(), FlowError> {
        let started = Instant::now();
        let mut warned = false;
        // The rate caps' waiting so far, taken on the first timeout (not on the fast path).
        let mut caps = None;
        loop {
            match self.to_writer.send_timeout(msg, Duration::from_millis(250)) {
                Ok(()) => {
                    if warned {
                        log::warn!("flow {}: the target caught up after {:.1} s", self.index, started.elapsed().as_secs_f64());
                    }
                    return Ok(());
                }
                Err(SendTimeoutError::Timeout(m)) => {
                    if self.shared.stop.is_stopped() {
                        return Err(FlowError::after_stop(format!("flow {}: stopped while the writer queue was full", self.index)));
                    }
                    let caps = *caps.get_or_insert_with(|| self.shared.limit.mark());
                    if !warned && started.elapsed() >= STALL_WARNING {
                        warned = true;
                        let (why, fix) = match self.shared.limit.cause_since(&caps, Duration::from_secs(1)) {
                            Some(cap) => (
                                format!("{cap} is holding the writers back"),
                                "raise the cap, or lower --batch-cmds and --batch-bytes so that each batch passes it sooner",
                            ),
                            None => (
                                "the target is slower than the master".to_string(),
                                "raise --channel-capacity, --inflight, or check the target",
                            ),
                        };
                        log::warn!(
                            "flow {}: {why}; this flow has not been read for {} s and the master cancels the \
                             replication at 30 s ({fix})",
                            self.index,
                            started.elapsed().as_secs()
                        );
                    }
                    msg = m;
                }
                Err(SendTimeoutError::Disconnected(_)) => {
                    return Err(FlowError::after_stop(format!("flow {}: its writer has stopped", self.index)))
                }
            }
        }
    }
}

struct ReadState {
    dec: FlowDecoder,
    items: Vec<Item>,
    batch: Batch,
    applying: bool,
    /// Batches carry the flow's next LSN as their checkpoint: from the token on, and from
    /// the start of a resume (in v1.34 the journal blobs before the token carry LSNs too).
    checkpointed: bool,
    /// The LSN the next journal record will carry, once known: per item, unlike the
    /// decoder's, which is already past every item of the current read.
    next_lsn: Option<u64>,
    /// A file's end rules (checksum, padding), checked as it is read.
    check: Option<FileCheck>,
}

struct FlowError {
    message: String,
    /// True for errors that are expected once the session is stopping (closed sockets).
    benign_after_stop: bool,
    fault: Fault,
}

impl FlowError {
    /// Retrying cannot help: the stream does not decode, a record cannot be replayed.
    fn fatal(message: String) -> Self {
        FlowError { message, benign_after_stop: false, fault: Fault::Fatal }
    }
    /// The connection or the session ended under us: a new session may succeed.
    fn transient(message: String) -> Self {
        FlowError { message, benign_after_stop: false, fault: Fault::Transient }
    }
    fn after_stop(message: String) -> Self {
        FlowError { message, benign_after_stop: true, fault: Fault::Transient }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(keys: &[&str], lsn: Option<u64>, checkpoint: Option<u64>) -> Batch {
        let mut b = Batch::new(3, 4);
        for k in keys {
            b.cmds.push(Cmd::new(0, &[b"SET", k.as_bytes(), b"v"]));
            b.slots.push(1);
            b.unsafe_twice.push(false);
            b.lsns.push(lsn.unwrap_or(0));
            b.bytes += 10;
        }
        b.last_lsn = lsn;
        b.records = keys.len() as u64;
        b.checkpoint = checkpoint;
        b
    }

    #[test]
    fn absorbing_the_next_batch_is_one_batch_read_at_once() {
        let mut a = batch(&["a", "b"], Some(7), Some(8));
        let mut b = batch(&["c"], Some(9), Some(10));
        b.force_ack = true;
        a.absorb(&mut b);
        let keys: Vec<String> = a.cmds.iter().map(|c| c.describe()).collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert!(keys[2].contains('c'), "{keys:?}");
        assert_eq!((a.last_lsn, a.checkpoint, a.records, a.force_ack, a.bytes()), (Some(9), Some(10), 3, true, 30));
        assert_eq!((a.slots.len(), a.unsafe_twice.len(), a.lsns.len()), (3, 3, 3));
        assert!(b.is_empty() && b.slots.is_empty() && b.bytes() == 0);
        // A batch without records (a snapshot batch) keeps the earlier LSN and checkpoint.
        let mut c = batch(&["d"], None, None);
        a.absorb(&mut c);
        assert_eq!((a.last_lsn, a.checkpoint, a.cmds.len()), (Some(9), Some(10), 4));
    }
}
