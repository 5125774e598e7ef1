//! One replication session, start to end (protocol doc section 1's replica state machine):
//! handshake, one reader/ACK pair per flow, the writers, `DFLY SYNC`, the barrier,
//! `DFLY STARTSTABLE`, then either the live journal until a signal (`replicate`) or the
//! journal offset (`migrate`), and one shutdown path for every ending (section 10).

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver};

use super::ack::AckThread;
use super::flow::{FlowReader, FlowStart, Mode, Signals, ToWriter};
use super::gate::GlobalGate;
use super::report::{MasterSize, SessionView};
use super::semaphore::Semaphore;
use super::shared::{Fault, Shared};
use super::writer::Writer;
use crate::checkpoint::{self, Resume};
use crate::config::{Config, JsonSetting, OnResync};
use crate::metrics::Phase;
use crate::replay::{Clock, JsonPolicy, OnFlush, Policy, ReplayStats, Replayer};
use crate::source::{FlowConn, Master, MasterInfo, SourceError};
use crate::target::{resp::Reply, Standalone, Target, TargetError};

/// How a session ended.
#[derive(Debug)]
pub enum Outcome {
    /// Finished (migrate) or stopped by a signal (replicate).
    Ok(Summary),
    /// The settings cannot work with this source and target (exit code 2).
    Usage(String),
    /// A runtime failure: the message names the flow, key or node and the cause; whether a new
    /// session could succeed.
    Failed(String, Summary, Fault),
}

/// What was done, for the closing summary.
#[derive(Debug, Default)]
pub struct Summary {
    pub flows: Vec<FlowSummary>,
    pub stats: ReplayStats,
    pub rejected: u64,
    /// Keys whose RESTORE the target refused, written as commands instead, by reason.
    pub restore_fallbacks: std::collections::BTreeMap<String, u64>,
    pub elapsed: Duration,
    pub json: Option<JsonPolicy>,
    pub stopped_by: Option<&'static str>,
    /// Cluster targets: writes per master node, and redirects followed (MOVED, ASK).
    pub node_writes: std::collections::BTreeMap<String, u64>,
    pub redirects: (u64, u64),
    /// The session got as far as writing to the target (a full sync or a resume started).
    pub touched_target: bool,
    /// Stable sync began (the journal was flowing).
    pub reached_stable: bool,
    /// Sessions this run needed (more than one after reconnects), and why each earlier one
    /// ended.
    pub sessions: u32,
    pub reconnects: Vec<String>,
}

#[derive(Debug, Default, Clone)]
pub struct FlowSummary {
    pub keys: u64,
    pub bytes: u64,
    pub records: u64,
    pub commands: u64,
    pub applied_next_lsn: u64,
}

/// How long flows may take to reach EOF after the main connection is half-closed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(35);

/// One session. `prior` says why an earlier session of this run ended, when it had written to
/// the target: without checkpoints to resume from, that target is then handled as a full
/// resync's (`--on-resync`).
pub fn run(cfg: &Config, mode: Mode, prior: Option<&str>) -> Outcome {
    let started = Instant::now();
    let mut sess = match Session::start(cfg, mode, prior) {
        Ok(s) => s,
        Err(StartError::Usage(e)) => return Outcome::Usage(e),
        Err(StartError::Failed(e, fault)) => {
            return Outcome::Failed(e, Summary { elapsed: started.elapsed(), sessions: 1, ..Default::default() }, fault)
        }
    };
    let result = sess.drive();
    let summary = sess.shutdown(started);
    match result.err().or_else(|| sess.shared.error()) {
        Some(e) => Outcome::Failed(e, summary, sess.shared.fault()),
        None if mode == Mode::Migrate && summary.stopped_by.is_some() => {
            let by = summary.stopped_by.unwrap_or("a signal");
            Outcome::Failed(format!("interrupted by {by} before the snapshot was applied; the target is incomplete"), summary, Fault::Fatal)
        }
        None => Outcome::Ok(summary),
    }
}

/// How the flows of a session were opened (protocol doc 5, 8.2, 8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// Every flow FULL: `DFLY SYNC`, a snapshot per flow, the barrier at FULLSYNC_END,
    /// `DFLY STARTSTABLE`. Markers deleted first, the target flushed under `--on-resync`.
    Full,
    /// Every flow PARTIAL, v1.35+: no `DFLY SYNC`; `DFLY STARTSTABLE` at once, then each
    /// flow's journal from its LSN.
    Partial,
    /// Every flow PARTIAL, v1.34: `DFLY SYNC` all the same; each flow sends its missing
    /// records as journal blobs in an RDB frame and FULLSYNC_END (the barrier waits for it),
    /// then after `DFLY STARTSTABLE` JOURNAL_OFFSET, EOF, the token and the journal.
    PartialV134,
}

impl Opening {
    fn resumes(self) -> bool {
        self != Opening::Full
    }
    /// `DFLY SYNC` is the next step (and every flow has a FULLSYNC_END to wait for).
    fn sends_sync(self) -> bool {
        self != Opening::Partial
    }
    fn flow_start(self, lsn: u64) -> FlowStart {
        match self {
            Opening::Full => FlowStart::Snapshot,
            Opening::Partial => FlowStart::Journal(lsn),
            Opening::PartialV134 => FlowStart::Backlog(lsn),
        }
    }
}

struct Session {
    mode: Mode,
    master: Master,
    info: MasterInfo,
    shared: Arc<Shared>,
    barrier: Arc<Barrier>,
    flow_sockets: Vec<crate::tls::Stream>,
    readers: Vec<JoinHandle<()>>,
    writers: Vec<JoinHandle<()>>,
    ackers: Vec<JoinHandle<()>>,
    helpers: Vec<JoinHandle<()>>,
    reader_exits: Receiver<usize>,
    flows_done: Receiver<usize>,
    replayers: Vec<Arc<parking_lot::Mutex<ReplayStats>>>,
    json: JsonPolicy,
    /// Whether the coordinator has taken its place at the barrier (it must, exactly once, or
    /// the ACK threads would wait there forever).
    barrier_passed: bool,
    opening: Opening,
    checkpoint_file: Option<std::path::PathBuf>,
    file_every: Duration,
    /// For the summary: `DFLY SYNC` (or a resume) started writing to the target; STARTSTABLE
    /// was accepted.
    touched_target: bool,
    reached_stable: bool,
}

/// Which snapshot values go to the target as `RESTORE` payloads (`--restore`): the collection
/// types whose encoding the target's RDB version loads. Strings stay `SET`, which Redis takes
/// faster than the same strings as RESTOREs.
fn whole_values(restore: bool, server: &crate::target::server::ServerInfo) -> crate::protocol::whole::Whole {
    use crate::protocol::{rdb_type::name, whole};
    let name_all = |v: &[u8]| v.iter().map(|&ty| name(ty)).collect::<Vec<_>>().join(", ");
    if !restore {
        log::info!("snapshot values: every one is written as commands (--restore off)");
        return whole::Whole::NONE;
    }
    let (yes, no): (Vec<u8>, Vec<u8>) = crate::replay::dump::COLLECTION_TYPES.iter().partition(|&&ty| server.loads_type(ty));
    let w = whole::Whole::new(yes.iter().copied(), whole::DEFAULT_MAX_BYTES);
    if yes.is_empty() {
        log::info!("snapshot values: every one is written as commands (the target's RESTORE takes none of Dragonfly's encodings)");
    } else {
        log::info!(
            "snapshot values: {} values up to {} KiB are written as RESTORE payloads (target RDB version {}){}",
            name_all(&yes),
            w.max_bytes / 1024,
            server.rdb_version(),
            if no.is_empty() { String::new() } else { format!("; {} as commands (unknown to that RDB version)", name_all(&no)) }
        );
        let older: Vec<u8> =
            yes.iter().copied().filter(|&ty| crate::replay::dump::rdb_version_for(ty) > server.rdb_version()).collect();
        if !older.is_empty() {
            log::info!("snapshot values: {} re-encoded to their plain forms for RDB version {}", name_all(&older), server.rdb_version());
        }
    }
    w
}

fn spawn(name: String, cpu: Option<usize>, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, String> {
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

/// Open every flow for a full sync (no LSN); each must answer FULL.
fn open_full(cfg: &Config, info: &MasterInfo) -> Result<Vec<FlowConn>, StartError> {
    (0..info.num_flows)
        .map(|i| {
            let c = FlowConn::open(&cfg.source.addr, cfg.source.auth(), cfg.source.tls(), info, i, None)?;
            if !c.reply.full {
                return Err(format!("flow {i}: the master answered PARTIAL to a full-sync request").into());
            }
            Ok(c)
        })
        .collect()
}

enum StartError {
    Usage(String),
    Failed(String, Fault),
}

/// Most start failures are the source or target not being there (yet): transient.
impl From<String> for StartError {
    fn from(e: String) -> Self {
        StartError::Failed(e, Fault::Transient)
    }
}

impl From<SourceError> for StartError {
    fn from(e: SourceError) -> Self {
        let fault = if e.is_rejected_credentials() { Fault::Fatal } else { Fault::Transient };
        StartError::Failed(e.0, fault)
    }
}

impl From<TargetError> for StartError {
    fn from(e: TargetError) -> Self {
        // A refused AUTH comes as PermissionDenied (standalone.rs).
        let lost = matches!(&e, TargetError::Io { error, .. } if error.kind() != std::io::ErrorKind::PermissionDenied);
        let fault = if lost { Fault::Transient } else { Fault::Fatal };
        StartError::Failed(e.to_string(), fault)
    }
}

impl Session {
    /// A full resync over a target an earlier run wrote: announce why, and apply the policy.
    fn prepare_full_resync(target: &mut Target, cfg: &Config, why: &str) -> Result<(), StartError> {
        match cfg.on_resync {
            OnResync::Flush if cfg.filter.is_active() && cfg.filter.on_flush == OnFlush::Stop => {
                return Err(StartError::Failed(
                    format!(
                        "full resync: {why}; emptying the target first (--on-resync flush) would also delete keys the \
                         filter never copied ({}), which may belong to others. Stopping. Choose --on-resync keep (write \
                         over the target; keys deleted on the master meanwhile survive) or --on-flush flush (empty the \
                         whole target all the same)",
                        cfg.filter.describe()
                    ),
                    Fault::Fatal,
                ));
            }
            OnResync::Flush => {
                log::warn!("full resync: {why}; emptying the target first (--on-resync flush)");
                target.flush_all().map_err(|e| format!("emptying the target for the full resync: {e}"))?;
            }
            OnResync::Keep => log::warn!(
                "full resync: {why}; the target is kept (--on-resync keep): keys deleted on the master meanwhile survive"
            ),
        }
        Ok(())
    }

    /// Open the flows: resumed at the target's checkpoints when every flow answers PARTIAL
    /// (protocol doc 8.2), otherwise for a full sync, announced with its reason and the resync
    /// policy applied. Mixed answers end the session and a new one starts without LSNs, as
    /// Dragonfly's replica does; hence the master connection and info returned.
    fn open_flows(
        cfg: &Config,
        master: Master,
        info: MasterInfo,
        target: &mut Target,
        resume: Resume,
    ) -> Result<(Master, MasterInfo, Vec<FlowConn>, Opening), StartError> {
        let lsns = match resume {
            Resume::Nothing => {
                let conns = open_full(cfg, &info)?;
                return Ok((master, info, conns, Opening::Full));
            }
            Resume::Unusable(why) => {
                Self::prepare_full_resync(target, cfg, &why)?;
                let conns = open_full(cfg, &info)?;
                return Ok((master, info, conns, Opening::Full));
            }
            Resume::At(at) => at.lsns,
        };
        let v134 = info.speaks_v134_resume().unwrap_or_default();
        let n = info.num_flows;
        let conns = (0..n)
            .map(|i| FlowConn::open(&cfg.source.addr, cfg.source.auth(), cfg.source.tls(), &info, i, Some(lsns[i])).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let partial = conns.iter().filter(|c| !c.reply.full).count();
        if partial == n {
            if v134 {
                log::info!(
                    "resuming from the target's checkpoints: every flow continues its journal (PARTIAL) at {lsns:?}, \
                     in the v1.34 partial-sync dialect (DFLY SYNC, then each flow's missing records as journal blobs)"
                );
                return Ok((master, info, conns, Opening::PartialV134));
            }
            log::info!("resuming from the target's checkpoints: every flow continues its journal (PARTIAL) at {lsns:?}");
            return Ok((master, info, conns, Opening::Partial));
        }
        let why = format!(
            "{} of {n} flows must fully resync (the master's backlog no longer holds the records after the checkpoints)",
            n - partial
        );
        Self::prepare_full_resync(target, cfg, &why)?;
        if partial == 0 {
            // All FULL: the full sync continues in this session.
            return Ok((master, info, conns, Opening::Full));
        }
        // Mixed: closing this session's connections cancels it on the master.
        drop(conns);
        drop(master);
        let (master, info) = Master::connect(&cfg.source.addr, cfg.source.auth(), cfg.source.tls())?;
        let conns = open_full(cfg, &info)?;
        Ok((master, info, conns, Opening::Full))
    }

    fn start(cfg: &Config, mode: Mode, prior: Option<&str>) -> Result<Session, StartError> {
        // The target first: no point in starting a snapshot nobody can write.
        let mut probe = {
            let mut last = None;
            let mut found = None;
            for seed in &cfg.target.seeds {
                match Standalone::connect(seed, cfg.target.auth(), cfg.target.tls()) {
                    Ok(p) => {
                        found = Some(p);
                        break;
                    }
                    Err(e) => {
                        log::warn!("{e}");
                        last = Some(e);
                    }
                }
            }
            match (found, last) {
                (Some(p), _) => p,
                (None, Some(e)) => return Err(e.into()),
                (None, None) => return Err(StartError::Usage("no target address given (--target)".into())),
            }
        };
        match probe.query(&[b"PING"])? {
            Reply::Status(_) => {}
            other => return Err(format!("target {}: PING answered {other:?}", probe.addr()).into()),
        }
        drop(probe);
        let mut first_target = Target::connect(&cfg.target.seeds, cfg.target.auth(), cfg.target.tls())?;
        let server = first_target.server_info()?;
        log::info!("target {}: {server}", cfg.target.seeds.join(","));
        let json = match cfg.json {
            JsonSetting::Fixed(p) => p,
            JsonSetting::Auto if server.has_module("ReJSON") => JsonPolicy::JsonSet,
            JsonSetting::Auto => JsonPolicy::Skip,
        };
        log::info!(
            "target: JSON documents will be {}",
            if json == JsonPolicy::JsonSet { "written with JSON.SET" } else { "skipped (no RedisJSON)" }
        );
        let cluster = first_target.is_cluster();
        let whole = whole_values(cfg.restore, &server);
        let rdb = server.rdb_version();

        let (mut master, info) = Master::connect(&cfg.source.addr, cfg.source.auth(), cfg.source.tls())?;
        if cluster {
            // Redis Cluster has only db 0: data elsewhere must be mapped explicitly, never merged
            // in silence.
            let keyspace = master.keyspace()?;
            let unmapped: Vec<String> = keyspace
                .iter()
                .filter(|&(&db, &keys)| keys > 0 && cfg.filter.db_passes(db) && cfg.db_map.get(&db).copied().unwrap_or(db) != 0)
                .map(|(db, keys)| format!("db {db} holds {keys} keys"))
                .collect();
            if !unmapped.is_empty() {
                return Err(StartError::Usage(format!(
                    "the target is a Redis Cluster, which has only db 0, and on the master {}: map those dbs \
                     explicitly (--db-map, e.g. {}) to merge them into db 0",
                    unmapped.join(", "),
                    keyspace.keys().filter(|&&d| cfg.filter.db_passes(d)).map(|d| format!("{d}:0")).collect::<Vec<_>>().join(",")
                )));
            }
            log::info!(
                "target is a Redis Cluster; dbs written to db 0: {:?}",
                keyspace.keys().filter(|&&d| cfg.filter.db_passes(d)).collect::<Vec<_>>()
            );
        }
        log::info!(
            "master {} ({}): replid {}, session {}, {} flows, protocol version {}",
            cfg.source.addr,
            info.release.as_deref().unwrap_or("version unknown"),
            info.replid,
            info.sync_id,
            info.num_flows,
            info.version
        );
        let n = info.num_flows;
        let markers = mode == Mode::Replicate && cfg.checkpoints;
        if mode == Mode::Replicate && !cfg.checkpoints {
            log::warn!("--checkpoints off: no resume point is kept, so a restart or reconnect means a full resync");
        }
        // Before anything is read or written: an earlier writer's pipelines still queued on the
        // target would otherwise apply after the markers are read (or after a resync's flush).
        match first_target.close_stale_writers()? {
            Some(0) => {}
            Some(k) => log::info!(
                "closed {k} connections an earlier writer left on the target (what they held unapplied is dropped; the \
                 checkpoints say what was applied)"
            ),
            None => log::warn!(
                "the target does not allow CLIENT LIST / CLIENT KILL for this user: if an earlier run's connections still \
                 hold unapplied pipelines, they could apply after this run starts (grant +client|list and +client|kill, or \
                 wait a few seconds before restarting)"
            ),
        }
        let mut resume = if markers { first_target.read_resume(&info.replid, n)? } else { Resume::Nothing };
        // A cluster resume: per flow, what each slot holds already (its nodes' markers differ).
        let skip = match &mut resume {
            Resume::At(at) => at.skip.take(),
            _ => None,
        };
        if let (Resume::Nothing, Some(why)) = (&resume, prior) {
            resume = Resume::Unusable(format!("the previous session ended ({why}) with no checkpoint to resume from"));
        }
        if matches!(resume, Resume::At(_)) && info.speaks_v134_resume().is_none() {
            // Guessing wrong would fail the session: v1.34 refuses STARTSTABLE without SYNC, and
            // v1.35+ would corrupt the stream after SYNC (protocol doc 5.1, 8.3).
            resume = Resume::Unusable(format!(
                "the master's INFO SERVER names no dragonfly_version, and its protocol version {} is shared by \
                 v1.34 to v1.36, whose partial-sync dialects differ (allow INFO for the replication user to resume)",
                info.version
            ));
        }
        let (mut master, info, conns, opening) = Self::open_flows(cfg, master, info, &mut first_target, resume)?;
        let skip = skip.filter(|_| opening.resumes());
        if skip.is_some() {
            log::info!(
                "the target is a Redis Cluster: each flow resumes at its lowest marker among the masters, and what a \
                 master holds already is left out, slot by slot"
            );
        }
        // The master's size now, just before its snapshot, for the full-sync estimate.
        let master_size = if opening == Opening::Full { MasterSize::ask(&mut master) } else { MasterSize::default() };
        let n = info.num_flows; // after mixed answers this is a new session's
        // A resume (either dialect) continues on a target that is exactly at its markers: no
        // flush, and the markers stay. The v1.34 dialect brings no snapshot entries either,
        // only journal records, so whether the target is empty does not matter then.
        if !opening.resumes() {
            // A stale marker must never pair with a new snapshot.
            first_target.delete_markers()?;
        }
        let fresh = !opening.resumes() && first_target.is_empty()?;
        if !opening.resumes() {
            log::info!(
                "{}",
                if fresh {
                    "the target holds no keys: snapshot entries are written without a DEL first"
                } else {
                    "the target already holds keys: every snapshot entry replaces its key (DEL first)"
                }
            );
        }
        let starts: Vec<FlowStart> = conns
            .iter()
            .map(|c| match (c.reply.full, c.lsn) {
                (false, Some(lsn)) => opening.flow_start(lsn),
                _ => FlowStart::Snapshot,
            })
            .collect();

        let shared = Arc::new(Shared::new(n).with_limit(super::limit::Limiter::new(cfg.max_ops_per_s, cfg.max_bytes_per_s)));
        let barrier = Arc::new(Barrier::new(n + 1));
        let nw = cfg.writers.unwrap_or(n).clamp(1, n);
        let sem = Arc::new(Semaphore::new(cfg.inflight_pipelines));
        let gate = Arc::new(GlobalGate::new(nw));
        let (exit_tx, reader_exits) = unbounded();
        let (done_tx, flows_done) = unbounded();
        let policy = Policy { json, member_ttl: cfg.member_ttl };
        let filter = Arc::new(cfg.filter.clone());
        let replid = info.replid.clone();

        let mut to_writers: Vec<Vec<(usize, Receiver<ToWriter>)>> = (0..nw).map(|_| Vec::new()).collect();
        let mut kicks_tx = Vec::new();
        let mut kicks_rx = Vec::new();
        let mut recycle_tx = Vec::new();
        let mut recycle_rx = Vec::new();
        for _ in 0..n {
            let (t, r) = bounded(1);
            kicks_tx.push(t);
            kicks_rx.push(r);
            // Applied batches go back to their flow's reader for reuse (see `Batch`). Bounded:
            // when the reader has spares the writer drops the batch itself, which shares the
            // freeing between the threads (an unbounded return measured ~7% slower).
            let (t, r) = bounded(cfg.channel_capacity + super::writer::PER_WRITER_INFLIGHT);
            recycle_tx.push(t);
            recycle_rx.push(r);
        }
        let mut sess = Session {
            mode,
            master,
            info,
            shared: shared.clone(),
            barrier: barrier.clone(),
            flow_sockets: Vec::new(),
            readers: Vec::new(),
            writers: Vec::new(),
            ackers: Vec::new(),
            helpers: Vec::new(),
            reader_exits,
            flows_done,
            replayers: Vec::new(),
            json,
            barrier_passed: false,
            opening,
            checkpoint_file: cfg.checkpoint_file.clone(),
            file_every: Duration::from_secs(cfg.progress_secs),
            touched_target: opening.resumes(),
            reached_stable: false,
        };
        // Every target connection before any thread starts: a failure here leaves nothing
        // running and nothing half-read on the master's sockets.
        let mut conns_w = Vec::with_capacity(nw);
        first_target.name_writer()?;
        conns_w.push(first_target);
        for _ in 1..nw {
            let mut t = Target::connect(&cfg.target.seeds, cfg.target.auth(), cfg.target.tls())?;
            t.name_writer()?;
            conns_w.push(t);
        }
        for (i, ((conn, kick_rx), recycled)) in conns.into_iter().zip(kicks_rx).zip(recycle_rx).enumerate() {
            let (tx, rx) = bounded(cfg.channel_capacity);
            to_writers[i % nw].push((i, rx));
            let (cut_tx, cut_rx) = bounded(1);
            let (stable_tx, stable_rx) = bounded(1);
            let ack_stream = conn.stream.try_clone().map_err(|e| format!("flow {i}: {e}"))?;
            sess.flow_sockets.push(conn.stream.try_clone().map_err(|e| format!("flow {i}: {e}"))?);
            let stats = Arc::new(parking_lot::Mutex::new(ReplayStats::default()));
            sess.replayers.push(stats.clone());
            let reader = FlowReader {
                index: i,
                stream: conn.stream,
                leftover: conn.leftover,
                token: conn.reply.token,
                mode,
                limits: crate::protocol::Limits { whole, ..Default::default() },
                replayer: Replayer::new(policy, Clock::System)
                    .with_db_map(cfg.db_map.clone())
                    .with_filter(filter.clone())
                    .with_fresh_target(fresh)
                    .with_target_rdb(rdb),
                shared: shared.clone(),
                to_writer: tx,
                recycled,
                signals: Signals { cut: cut_tx, stable: stable_tx, exited: exit_tx.clone() },
                batch_cmds: cfg.batch_cmds,
                batch_bytes: cfg.batch_bytes,
                stats_out: stats,
                slot_hints: cluster,
                start: starts[i],
                classify: cluster && markers,
                skip: skip.as_ref().map(|s| s[i].clone()),
            };
            if let Some(l) = starts[i].resume_lsn() {
                shared.flows[i].applied_next_lsn.store(l, Relaxed);
            }
            let cpu = cfg.pin_flows.as_ref().map(|l| l.cpu_for(i));
            sess.readers.push(spawn(format!("flow-{i}"), cpu, move || reader.run())?);
            let acker = AckThread {
                index: i,
                stream: ack_stream,
                cut: cut_rx,
                stable: stable_rx,
                kick: kick_rx,
                barrier: barrier.clone(),
                shared: shared.clone(),
                start: starts[i],
            };
            sess.ackers.push(spawn(format!("ack-{i}"), None, move || acker.run())?);
        }
        for ((w, flows), conn) in to_writers.into_iter().enumerate().zip(conns_w) {
            let writer = Writer {
                index: w,
                flows,
                conn,
                shared: shared.clone(),
                sem: sem.clone(),
                gate: gate.clone(),
                on_reject: cfg.on_reject,
                done: done_tx.clone(),
                kicks: kicks_tx.clone(),
                recycle: recycle_tx.clone(),
                markers: markers.then(|| (replid.clone(), n)),
                inflight: VecDeque::new(),
                sent_at: VecDeque::new(),
            };
            let cpu = cfg.pin_writers.as_ref().map(|l| l.cpu_for(w));
            sess.writers.push(spawn(format!("writer-{w}"), cpu, move || writer.run())?);
        }
        crate::metrics::global().attach(Arc::new(SessionView {
            shared: shared.clone(),
            replay: sess.replayers.clone(),
            master: master_size,
        }));
        // Signals and progress.
        let sh = shared.clone();
        sess.helpers.push(spawn("signals".into(), None, move || loop {
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
        let sh = shared.clone();
        let every = Duration::from_secs(cfg.progress_secs);
        sess.helpers.push(spawn("progress".into(), None, move || super::progress::run(&sh, every))?);
        Ok(sess)
    }

    /// Full sync, barrier, STARTSTABLE, then wait for the end.
    fn drive(&mut self) -> Result<(), String> {
        if self.opening.sends_sync() {
            self.touched_target = true;
            // Before the command: the master starts streaming before it answers.
            crate::metrics::global().set_phase(Phase::FullSync);
            self.master.sync(&self.info.sync_id).map_err(|e| e.to_string())?;
            if self.opening == Opening::PartialV134 {
                log::info!("DFLY SYNC sent (v1.34 partial resume): each flow sends its missing records, then FULLSYNC_END");
            } else {
                log::info!("full sync started on {} flows", self.info.num_flows);
            }
        }
        // Every ACK thread arrives once its flow saw FULLSYNC_END (or the session stopped);
        // the readers keep reading meanwhile.
        self.barrier_passed = true;
        self.barrier.wait();
        if self.shared.stop.is_stopped() {
            return Ok(());
        }
        match self.opening {
            // v1.35+: STARTSTABLE directly after all-PARTIAL (protocol doc 8.2).
            Opening::Partial => log::info!("sending DFLY STARTSTABLE (partial resume, no snapshot)"),
            Opening::PartialV134 => {
                log::info!("every flow sent its missing records (FULLSYNC_END): sending DFLY STARTSTABLE")
            }
            Opening::Full => log::info!("every flow reached FULLSYNC_END: sending DFLY STARTSTABLE"),
        }
        self.master.start_stable(&self.info.sync_id).map_err(|e| e.to_string())?;
        self.reached_stable = true;
        crate::metrics::global().set_phase(Phase::StableSync);
        log::info!("stable sync: applying the journal");
        let stop = self.shared.stop.receiver().clone();
        let mut done = 0;
        loop {
            select! {
                recv(self.flows_done) -> r => {
                    if r.is_ok() {
                        done += 1;
                        if self.mode == Mode::Migrate && done == self.info.num_flows {
                            log::info!("migrate: every flow applied up to its journal offset");
                            return Ok(());
                        }
                    }
                },
                recv(stop) -> _ => return Ok(()),
                default(self.file_every) => self.write_checkpoint_file(),
            }
        }
    }

    /// Mirror the applied LSNs in the `--checkpoint` file (diagnostics only).
    fn write_checkpoint_file(&self) {
        let Some(path) = &self.checkpoint_file else { return };
        let applied: Vec<u64> = self.shared.flows.iter().map(|f| f.applied_next_lsn.load(Relaxed)).collect();
        if let Err(e) = checkpoint::write_file(path, &self.info.replid, &applied) {
            log::warn!("checkpoint file {}: {e}", path.display());
        }
    }

    /// The one way out (protocol doc section 10): final ACKs, half-close the main connection
    /// so the master ends the session, read every flow to EOF (bounded), then join and close.
    fn shutdown(&mut self, started: Instant) -> Summary {
        crate::metrics::global().set_phase(Phase::Stopping);
        let stopped_by = if self.shared.interrupted.load(Relaxed) { crate::signals::received() } else { None };
        self.shared.stop.stop();
        if !self.barrier_passed {
            // The ACK threads arrive there on stop; release them.
            self.barrier_passed = true;
            self.barrier.wait();
        }
        // ACK threads send their final ACK on stop.
        for h in self.ackers.drain(..) {
            let _ = h.join();
        }
        self.master.shutdown_write();
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut exited = 0;
        while exited < self.readers.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.reader_exits.recv_timeout(left) {
                Ok(_) => exited += 1,
                Err(_) => {
                    log::warn!("flows did not reach EOF within {} s after the shutdown; closing them", DRAIN_TIMEOUT.as_secs());
                    for s in &self.flow_sockets {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                    break;
                }
            }
        }
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
        for h in self.writers.drain(..) {
            let _ = h.join();
        }
        self.master.drain(Duration::from_secs(5));
        self.write_checkpoint_file();
        for h in self.helpers.drain(..) {
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
            elapsed: started.elapsed(),
            json: Some(self.json),
            stopped_by,
            node_writes,
            redirects: (moved, asked),
            touched_target: self.touched_target,
            reached_stable: self.reached_stable,
            sessions: 1,
            reconnects: Vec::new(),
        }
    }
}
