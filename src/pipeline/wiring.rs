//! The thread wiring every source shares: one named reader thread per byte stream (a flow
//! connection of a live master, or a snapshot file), each decoding into a bounded queue of
//! batches drained by the writer threads, which own whole streams (so a key's writes keep
//! their order) and cap the pipelines in flight with a semaphore. A live master's flows also
//! get an ACK thread each, which waits at the STARTSTABLE barrier for its flow.
//!
//! What differs between sources is only what [`Input`]s they hand over and when they end;
//! the pipeline from bytes to target is this one.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver};

use super::ack::AckThread;
use super::flow::{FlowReader, FlowStart, Mode, Signals, ToWriter};
use super::gate::GlobalGate;
use super::report::{MasterSize, SessionView};
use super::semaphore::Semaphore;
use super::shared::Shared;
use super::session::{FlowSummary, Summary};
use super::writer::Writer;
use crate::checkpoint::cluster::SlotSkip;
use crate::config::Config;
use crate::replay::{Clock, Policy, ReplayStats, Replayer};
use crate::target::server::Version;
use crate::target::Target;

/// One byte stream for a reader thread.
pub struct Input {
    /// The reader thread's name (`flow-<i>`, `file-<i>`): what perf, gdb and the logs show.
    pub thread: String,
    pub reader: Box<dyn Read + Send>,
    /// Bytes already read off the stream (after a handshake reply).
    pub leftover: Vec<u8>,
    /// The eof token a full sync's stream must carry (empty for files).
    pub token: String,
    pub start: FlowStart,
    /// A live flow's socket: its ACK thread writes on it, and the shutdown may close it.
    pub ack: Option<crate::tls::Stream>,
    /// A file's path (with `FlowStart::File`), for its errors.
    pub file: Option<std::path::PathBuf>,
}

/// Everything the threads need, prepared by the source and the target.
pub struct Plan<'a> {
    pub cfg: &'a Config,
    pub mode: Mode,
    pub inputs: Vec<Input>,
    /// Connected writer connections (named as writers), one per writer thread.
    pub writers: Vec<Target>,
    pub policy: Policy,
    /// The target held no keys: snapshot entries need no DEL first.
    pub fresh: bool,
    pub cluster: bool,
    /// Checkpoints: the master's replication id (markers are written with every batch).
    pub markers: Option<String>,
    /// A cluster resume: what each slot holds already, per stream.
    pub skip: Option<Vec<Arc<SlotSkip>>>,
    /// The STARTSTABLE barrier the ACK threads wait at (live masters).
    pub barrier: Option<Arc<Barrier>>,
    /// The source's size, for the progress estimate.
    pub size: MasterSize,
    /// The Redis version the target speaks: the replayers write what it can take.
    pub target_version: Version,
    /// The decoders' limits (which values are taken whole, as RESTORE payloads).
    pub limits: crate::protocol::Limits,
    /// The RDB version the target's RESTORE payloads declare.
    pub target_rdb: u16,
    /// A Dragonfly cluster node owning only some slots: the slots it owned at the start (a
    /// journal record outside them ends the session, see `slots`).
    pub owned: Option<Arc<crate::source::cluster::SlotRanges>>,
}

/// The running threads and how to hear from them.
pub struct Wired {
    pub shared: Arc<Shared>,
    pub readers: Vec<JoinHandle<()>>,
    pub writers: Vec<JoinHandle<()>>,
    pub ackers: Vec<JoinHandle<()>>,
    pub helpers: Vec<JoinHandle<()>>,
    /// A reader ended (its index).
    pub reader_exits: Receiver<usize>,
    /// A writer applied a stream's last batch (its index): `migrate` and `restore` end there.
    pub streams_done: Receiver<usize>,
    pub replayers: Vec<Arc<parking_lot::Mutex<ReplayStats>>>,
    /// Live flows' sockets, to close them if they do not end in time.
    pub sockets: Vec<crate::tls::Stream>,
}

/// `<what>-<i>`, or with several sources `<what>-<source label>-<i>` (what perf, gdb and
/// the logs show; Linux keeps 15 bytes of a thread name, hence short labels).
pub fn thread_name(what: &str, cfg: &Config, i: usize) -> String {
    match &cfg.source_label {
        Some(l) => format!("{what}-{l}-{i}"),
        None => format!("{what}-{i}"),
    }
}

pub fn spawn(name: String, cpu: Option<usize>, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, String> {
    let err_name = name.clone();
    thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            if let Some(c) = cpu {
                if let Err(e) = crate::affinity::pin_current_thread(c) {
                    log::warn!("{name}: cannot pin to CPU {c}: {e}");
                }
            }
            f()
        })
        .map_err(|e| format!("cannot start thread {err_name}: {e}"))
}

/// Start every thread of `plan`. Stream `i` goes to writer `i % writers`.
pub fn wire(plan: Plan) -> Result<Wired, String> {
    let Plan { cfg, mode, inputs, writers: conns_w, policy, fresh, cluster, markers, skip, barrier, size, target_version, limits, target_rdb, owned } =
        plan;
    let n = inputs.len();
    let nw = conns_w.len();
    let shared = Arc::new(Shared::new(n).with_limit(super::limit::Limiter::new(cfg.max_ops_per_s, cfg.max_bytes_per_s)));
    let sem = Arc::new(Semaphore::new(cfg.inflight_pipelines));
    let gate = Arc::new(GlobalGate::new(nw));
    let (exit_tx, reader_exits) = unbounded();
    let (done_tx, streams_done) = unbounded();
    let filter = Arc::new(cfg.filter.clone());
    let mut w = Wired {
        shared: shared.clone(),
        readers: Vec::new(),
        writers: Vec::new(),
        ackers: Vec::new(),
        helpers: Vec::new(),
        reader_exits,
        streams_done,
        replayers: Vec::new(),
        sockets: Vec::new(),
    };

    let mut to_writers: Vec<Vec<(usize, Receiver<ToWriter>)>> = (0..nw).map(|_| Vec::new()).collect();
    let mut kicks_tx = Vec::new();
    let mut recycle_tx = Vec::new();
    for (i, input) in inputs.into_iter().enumerate() {
        let (kick_tx, kick_rx) = bounded(1);
        kicks_tx.push(kick_tx);
        // Applied batches go back to their stream's reader for reuse (see `Batch`). Bounded:
        // when the reader has spares the writer drops the batch itself, which shares the
        // freeing between the threads (an unbounded return measured ~7% slower).
        let (rtx, recycled) = bounded(cfg.channel_capacity + super::writer::PER_WRITER_INFLIGHT);
        recycle_tx.push(rtx);
        let (tx, rx) = bounded(cfg.channel_capacity);
        to_writers[i % nw].push((i, rx));
        let (cut_tx, cut_rx) = bounded(1);
        let (stable_tx, stable_rx) = bounded(1);
        let stats = Arc::new(parking_lot::Mutex::new(ReplayStats::default()));
        w.replayers.push(stats.clone());
        let Input { thread: name, reader: input_reader, leftover, token, start, ack, file } = input;
        let reader = FlowReader {
            index: i,
            stream: input_reader,
            leftover,
            token,
            mode,
            limits,
            replayer: Replayer::new(policy, Clock::System)
                .with_db_map(cfg.db_map.clone())
                .with_filter(filter.clone())
                .with_fresh_target(fresh)
                .with_target_version(target_version)
                .with_target_rdb(target_rdb),
            shared: shared.clone(),
            to_writer: tx,
            recycled,
            signals: Signals { cut: cut_tx, stable: stable_tx, exited: exit_tx.clone() },
            batch_cmds: cfg.batch_cmds,
            batch_bytes: cfg.batch_bytes,
            stats_out: stats,
            slot_hints: cluster,
            start,
            file,
            classify: cluster && markers.is_some(),
            skip: skip.as_ref().map(|s| s[i].clone()),
            owned: owned.clone(),
        };
        if let Some(l) = start.resume_lsn() {
            shared.flows[i].applied_next_lsn.store(l, Relaxed);
        }
        // With several sources, each source's flows start one CPU later in the list.
        let cpu = cfg.pin_flows.as_ref().map(|l| l.cpu_for(i + cfg.source_index));
        w.readers.push(spawn(name, cpu, move || reader.run())?);
        if let (Some(sock), Some(barrier)) = (ack, &barrier) {
            w.sockets.push(sock.try_clone().map_err(|e| format!("flow {i}: {e}"))?);
            let acker = AckThread {
                index: i,
                stream: sock,
                cut: cut_rx,
                stable: stable_rx,
                kick: kick_rx,
                barrier: barrier.clone(),
                shared: shared.clone(),
                start,
            };
            w.ackers.push(spawn(thread_name("ack", cfg, i), None, move || acker.run())?);
        }
    }
    for ((wi, flows), conn) in to_writers.into_iter().enumerate().zip(conns_w) {
        let writer = Writer {
            index: wi,
            board: cfg.source_index * crate::metrics::BOARDS_PER_SOURCE + wi,
            flows,
            conn,
            shared: shared.clone(),
            sem: sem.clone(),
            gate: gate.clone(),
            on_reject: cfg.on_reject,
            done: done_tx.clone(),
            kicks: kicks_tx.clone(),
            recycle: recycle_tx.clone(),
            markers: markers.clone().map(|id| (cfg.name.clone(), id, n)),
            resumed: skip.clone(),
            inflight: VecDeque::new(),
            sent_at: VecDeque::new(),
            held: None,
            merge_cmds: cfg.batch_cmds,
            merge_bytes: cfg.batch_bytes,
        };
        let cpu = cfg.pin_writers.as_ref().map(|l| l.cpu_for(wi + cfg.source_index));
        w.writers.push(spawn(thread_name("writer", cfg, wi), cpu, move || writer.run())?);
    }
    crate::metrics::global().attach(cfg.source_index, Arc::new(SessionView { shared: shared.clone(), replay: w.replayers.clone(), master: size, label: cfg.source_label.clone() }));
    // Signals and progress.
    let sh = shared.clone();
    w.helpers.push(spawn("signals".into(), None, move || loop {
        if let Some(sig) = crate::signals::received() {
            log::info!("{sig} received: shutting down cleanly");
            sh.interrupted.store(true, Relaxed);
            sh.stop.stop();
            return;
        }
        if sh.stop.receiver().recv_timeout(Duration::from_millis(100)).is_err() && sh.stop.is_stopped() {
            return;
        }
    })?);
    if !cfg.multi_source {
        // Several sources: one progress display for the run (sources.rs), not one per session.
        let sh = shared.clone();
        let every = Duration::from_secs(cfg.progress_secs);
        w.helpers.push(spawn("progress".into(), None, move || super::progress::run(&sh.stop, every))?);
    }
    Ok(w)
}

impl Wired {
    /// After every reader and writer has ended: join the helpers and add up what was done.
    pub fn finish(&mut self, elapsed: Duration) -> Summary {
        for h in self.readers.drain(..).chain(self.writers.drain(..)).chain(self.helpers.drain(..)) {
            let _ = h.join();
        }
        let mut stats = ReplayStats::default();
        for r in &self.replayers {
            stats.merge(&r.lock());
        }
        let (node_writes, moved, asked) = self.shared.node_writes.lock().clone();
        Summary {
            flows: self
                .shared
                .flows
                .iter()
                .map(|f| FlowSummary {
                    keys: f.keys.load(Relaxed),
                    bytes: f.bytes.load(Relaxed),
                    records: f.records.load(Relaxed),
                    commands: f.commands.load(Relaxed),
                    applied_next_lsn: f.applied_next_lsn.load(Relaxed),
                })
                .collect(),
            stats,
            rejected: self.shared.rejected.load(Relaxed),
            restore_fallbacks: self.shared.restore_fallbacks.lock().clone(),
            elapsed,
            node_writes,
            redirects: (moved, asked),
            sessions: 1,
            ..Default::default()
        }
    }
}
