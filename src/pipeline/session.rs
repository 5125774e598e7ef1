//! One replication session, start to end (protocol doc section 1's replica state machine):
//! handshake, one reader/ACK pair per flow, the writers, `DFLY SYNC`, the barrier,
//! `DFLY STARTSTABLE`, then either the live journal until a signal (`replicate`) or the
//! journal offset (`migrate`), and one shutdown path for every ending (section 10).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crossbeam_channel::select;

use super::flow::{FlowStart, Mode};
use super::report::MasterSize;
use super::prepare::{self, unreachable, PreparedTarget, StartError};
use super::shared::{Fault, Side};
use super::wiring::{self, Input, Plan, Wired};
use super::others;
use super::slots;
use crate::source::cluster::SlotRanges;
use crate::checkpoint::{self, Resume};
use crate::config::{Config, OnResync};
use crate::metrics::Phase;
use crate::replay::{JsonPolicy, OnFlush, Policy, ReplayStats};
use crate::source::{FlowConn, Master, MasterInfo};
use crate::target::Target;

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
    /// The session never started: this end could not be reached (its first connection failed).
    pub unreachable: Option<Side>,
    /// Sessions this run needed (more than one after reconnects), and why each earlier one
    /// ended.
    pub sessions: u32,
    pub reconnects: Vec<String>,
}

impl Summary {
    /// Add `s`'s counts (replay stats, rejections, RESTORE fallbacks, per-node writes,
    /// redirects, sessions) to these. Flows, positions, reasons and flags are the caller's:
    /// a run's successive sessions add up per flow, several masters' flows go side by side.
    pub fn add_counts(&mut self, s: &Summary) {
        self.stats.merge(&s.stats);
        self.rejected += s.rejected;
        for (k, v) in &s.restore_fallbacks {
            *self.restore_fallbacks.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &s.node_writes {
            *self.node_writes.entry(k.clone()).or_default() += v;
        }
        self.redirects.0 += s.redirects.0;
        self.redirects.1 += s.redirects.1;
        self.sessions += s.sessions;
    }
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
        Err(StartError::Unreachable(side, e)) => {
            let summary = Summary { elapsed: started.elapsed(), sessions: 1, unreachable: Some(side), ..Default::default() };
            return Outcome::Failed(e, summary, Fault::Transient);
        }
        Err(StartError::Failed(e, fault)) => {
            return Outcome::Failed(e, Summary { elapsed: started.elapsed(), sessions: 1, ..Default::default() }, fault)
        }
    };
    let result = sess.drive();
    let summary = sess.shutdown(started);
    match result.err().or_else(|| sess.pipe.shared.error()) {
        Some(e) => Outcome::Failed(e, summary, sess.pipe.shared.fault()),
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
    /// The threads: one reader and one ACK thread per flow, the writers.
    pipe: Wired,
    barrier: Arc<Barrier>,
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
    /// Which source of the run (metrics).
    source_index: usize,
    /// With several sources: this session's hold on its master's slots (see `slots::claim`),
    /// released when the session ends.
    _claim: Option<slots::Claim>,
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

impl Session {
    /// A full resync over a target an earlier run wrote: announce why, and apply the policy.
    /// `--on-resync flush` deletes only this run's keys: the whole target when no other run
    /// writes to it; with other runs there (their markers or leases), the keys this run's
    /// `--include`/`--exclude` rules select, and without such rules it refuses (the keys of
    /// this source cannot be told apart from theirs).
    fn prepare_full_resync(target: &mut Target, cfg: &Config, owned: Option<&SlotRanges>, why: &str) -> Result<(), StartError> {
        if cfg.on_resync == OnResync::Keep {
            log::warn!("full resync: {why}; the target is kept (--on-resync keep): keys deleted on the master meanwhile survive");
            return Ok(());
        }
        let others = others::other_runs(target, &cfg.name).map_err(|e| format!("looking for other runs on the target: {e}"))?;
        // A cluster node's keys are those of its slots; the other sources of this run may be
        // in their full sync, without markers yet: never a flush then.
        let partial_owner = owned.is_some_and(|s| !s.is_all());
        if !others.is_empty() || cfg.multi_source || partial_owner {
            return others::delete_own_keys(target, cfg, owned, why, &others);
        }
        if cfg.filter.is_active() && cfg.filter.on_flush == OnFlush::Stop {
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
        log::warn!("full resync: {why}; emptying the target first (--on-resync flush; no other run has markers or a lease there)");
        target.flush_all().map_err(|e| format!("emptying the target for the full resync: {e}"))?;
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
        owned: Option<&SlotRanges>,
        resume: Resume,
    ) -> Result<(Master, MasterInfo, Vec<FlowConn>, Opening), StartError> {
        let lsns = match resume {
            Resume::Nothing => {
                let conns = open_full(cfg, &info)?;
                return Ok((master, info, conns, Opening::Full));
            }
            Resume::Unusable(why) => {
                Self::prepare_full_resync(target, cfg, owned, &why)?;
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
        Self::prepare_full_resync(target, cfg, owned, &why)?;
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

    /// The slots the session's master (a cluster node) owns now.
    fn own_slots(cfg: &Config) -> Result<SlotRanges, StartError> {
        match crate::source::cluster::probe(&cfg.source) {
            Ok(m) => m.own_slots().ok_or_else(|| {
                StartError::Failed(format!("source {}: the node has left cluster mode (CLUSTER SLOTS is refused now)", cfg.source.addr), Fault::Fatal)
            }),
            Err(e) => Err(unreachable(Side::Source, e)),
        }
    }

    fn start(cfg: &Config, mode: Mode, prior: Option<&str>) -> Result<Session, StartError> {
        // The target first: no point in starting a snapshot nobody can write.
        let PreparedTarget { first: mut first_target, json, cluster, version, whole, rdb } = prepare::connect_target(cfg)?;

        // A cluster node: the slots it owns now (they may have moved since the run started),
        // claimed before anything is written (another session of this run may own them still).
        let owned = match &cfg.own_slots {
            None => None,
            Some(_) => Some(Self::own_slots(cfg)?),
        };
        let claim = match &owned {
            Some(o) if cfg.multi_source => Some(slots::claim(cfg, o)?),
            _ => None,
        };
        let (mut master, info) =
            Master::connect(&cfg.source.addr, cfg.source.auth(), cfg.source.tls()).map_err(|e| unreachable(Side::Source, e))?;
        if cluster {
            prepare::cluster_dbs(cfg, &master.keyspace()?)?;
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
        if let Some(gaps) = crate::source::release::journal_gaps(&info) {
            log::warn!("{gaps}");
        }
        let n = info.num_flows;
        let markers = mode == Mode::Replicate && cfg.checkpoints;
        if mode == Mode::Replicate && !cfg.checkpoints {
            log::warn!("--checkpoints off: no resume point is kept, so a restart or reconnect means a full resync");
        }
        prepare::close_stale_writers(&mut first_target, &cfg.name)?;
        let mut resume = if markers { first_target.read_resume(&cfg.name, &info.replid, n)? } else { Resume::Nothing };
        // No markers under this name: a first run, or an upgrade from the unnamed format, whose
        // markers cannot say which master they belong to (several runs may have shared the
        // target by mistake): they are never resumed from, and go with this full sync.
        let legacy = markers && resume == Resume::Nothing && others::has_legacy_markers(&mut first_target)?;
        if legacy {
            if let Some(k) = first_target.close_stale_writers(&cfg.name, true)?.filter(|&k| k > 0) {
                log::info!("closed {k} connections an earlier df2redis version's writers left on the target");
            }
            resume = Resume::Unusable(
                "the target holds checkpoint markers of an earlier df2redis version, without a run name \
                 (df2redis:checkpoint:<flow>): they cannot say which master they belong to, so they are not resumed from"
                    .into(),
            );
        }
        // A cluster resume: per flow, what each slot holds already (its nodes' markers differ).
        let skip = match &mut resume {
            Resume::At(at) => at.skip.take(),
            _ => None,
        };
        if let Some(o) = &owned {
            resume = slots::check_resume(&mut first_target, &cfg.name, o, resume)?;
        }
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
        let (mut master, info, conns, opening) = Self::open_flows(cfg, master, info, &mut first_target, owned.as_ref(), resume)?;
        let skip = skip.filter(|_| opening.resumes());
        if let Some(s) = &skip {
            log::info!(
                "the target is a Redis Cluster: each flow resumes at its lowest marker among the masters, and what a \
                 master holds already is left out, slot by slot"
            );
            // Where each master stands: what a resume that applied a record twice or left one
            // out would be debugged from.
            for (f, k) in s.iter().enumerate() {
                log::info!("flow {f}: next LSN per master: {}", k.describe());
            }
        }
        // The master's size now, just before its snapshot, for the full-sync estimate.
        let master_size = if opening == Opening::Full { MasterSize::ask(&mut master) } else { MasterSize::default() };
        let n = info.num_flows; // after mixed answers this is a new session's
        // A resume (either dialect) continues on a target that is exactly at its markers: no
        // flush, and the markers stay. The v1.34 dialect brings no snapshot entries either,
        // only journal records, so whether the target is empty does not matter then.
        if !opening.resumes() {
            // A stale marker must never pair with a new snapshot.
            first_target.delete_markers(&cfg.name)?;
            if let (Some(o), true) = (&owned, markers) {
                slots::record(&mut first_target, &cfg.name, o)?;
            }
            if legacy {
                let k = first_target.delete_legacy_markers()?;
                log::info!("deleted the {k} checkpoint markers of the earlier unnamed format");
            }
        }
        // A resume continues where the target stands: whether it is empty does not matter.
        let fresh = !opening.resumes() && prepare::is_fresh(&mut first_target)?;
        let starts: Vec<FlowStart> = conns
            .iter()
            .map(|c| match (c.reply.full, c.lsn) {
                (false, Some(lsn)) => opening.flow_start(lsn),
                _ => FlowStart::Snapshot,
            })
            .collect();

        let barrier = Arc::new(Barrier::new(n + 1));
        let nw = cfg.writers.unwrap_or(n).clamp(1, n);
        let conns_w = prepare::writer_conns(cfg, first_target, nw)?;
        let mut inputs = Vec::with_capacity(n);
        for (i, conn) in conns.into_iter().enumerate() {
            let ack = conn.stream.try_clone().map_err(|e| format!("flow {i}: {e}"))?;
            inputs.push(Input {
                thread: wiring::thread_name("flow", cfg, i),
                reader: Box::new(conn.stream),
                leftover: conn.leftover,
                token: conn.reply.token,
                start: starts[i],
                ack: Some(ack),
                file: None,
            });
        }
        let pipe = wiring::wire(Plan {
            cfg,
            mode,
            inputs,
            writers: conns_w,
            policy: Policy { json, member_ttl: cfg.member_ttl },
            fresh,
            cluster,
            markers: markers.then(|| info.replid.clone()),
            skip,
            barrier: Some(barrier.clone()),
            size: master_size,
            target_version: version,
            limits: crate::protocol::Limits { whole, ..Default::default() },
            target_rdb: rdb,
            owned: owned.clone().filter(|o| !o.is_all()).map(Arc::new),
        })?;
        if let Some(c) = &claim {
            c.attach(pipe.shared.clone());
        }
        Ok(Session {
            mode,
            master,
            info,
            pipe,
            barrier,
            json,
            barrier_passed: false,
            opening,
            checkpoint_file: cfg.checkpoint_file.clone(),
            file_every: Duration::from_secs(cfg.progress_secs),
            touched_target: opening.resumes(),
            reached_stable: false,
            source_index: cfg.source_index,
            _claim: claim,
        })
    }

    /// Full sync, barrier, STARTSTABLE, then wait for the end.
    fn drive(&mut self) -> Result<(), String> {
        if self.opening.sends_sync() {
            self.touched_target = true;
            // Before the command: the master starts streaming before it answers.
            crate::metrics::global().set_source_phase(self.source_index, Phase::FullSync);
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
        if self.pipe.shared.stop.is_stopped() {
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
        crate::metrics::global().set_source_phase(self.source_index, Phase::StableSync);
        log::info!("stable sync: applying the journal");
        let stop = self.pipe.shared.stop.receiver().clone();
        let mut done = 0;
        loop {
            select! {
                recv(self.pipe.streams_done) -> r => {
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
        let applied: Vec<u64> = self.pipe.shared.flows.iter().map(|f| f.applied_next_lsn.load(Relaxed)).collect();
        if let Err(e) = checkpoint::write_file(path, &self.info.replid, &applied) {
            log::warn!("checkpoint file {}: {e}", path.display());
        }
    }

    /// The one way out (protocol doc section 10): final ACKs, half-close the main connection
    /// so the master ends the session, read every flow to EOF (bounded), then join and close.
    fn shutdown(&mut self, started: Instant) -> Summary {
        crate::metrics::global().set_source_phase(self.source_index, Phase::Stopping);
        let stopped_by = if self.pipe.shared.interrupted.load(Relaxed) { crate::signals::received() } else { None };
        self.pipe.shared.stop.stop();
        if !self.barrier_passed {
            // The ACK threads arrive there on stop; release them.
            self.barrier_passed = true;
            self.barrier.wait();
        }
        // ACK threads send their final ACK on stop.
        for h in self.pipe.ackers.drain(..) {
            let _ = h.join();
        }
        self.master.shutdown_write();
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut exited = 0;
        while exited < self.pipe.readers.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.pipe.reader_exits.recv_timeout(left) {
                Ok(_) => exited += 1,
                Err(_) => {
                    log::warn!("flows did not reach EOF within {} s after the shutdown; closing them", DRAIN_TIMEOUT.as_secs());
                    for s in &self.pipe.sockets {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                    break;
                }
            }
        }
        for h in self.pipe.readers.drain(..).chain(self.pipe.writers.drain(..)) {
            let _ = h.join();
        }
        self.master.drain(Duration::from_secs(5));
        self.write_checkpoint_file();
        let mut summary = self.pipe.finish(started.elapsed());
        summary.json = Some(self.json);
        summary.stopped_by = stopped_by;
        summary.touched_target = self.touched_target;
        summary.reached_stable = self.reached_stable;
        summary
    }
}
