//! What the process has done, for people and machines: the figures behind `/metrics`
//! (Prometheus text), `/status` (JSON) and the progress display.
//!
//! One [`Metrics`] lives for the whole process ([`global`]), because a process may run several
//! replication sessions (a resync starts a new one) while a scraper must see counters that
//! only grow. A session *attaches* a [`SessionSource`] (the pipeline's view of its own atomic
//! counters) while it runs and *detaches* it at its end, when its final figures are folded
//! into the process totals. Reading the live counters on demand, instead of copying them on
//! every change, keeps the hot paths free of anything but the atomics they already update;
//! only the pipeline latency histogram and the per-node write counts are pushed here by the
//! writers (see [`Metrics::pipeline_latency`], [`Metrics::publish_node_writes`]).
//!
//! A run with several sources (several Dragonfly masters) has one session per source at a
//! time: each attaches under its source's number, the report merges them (flows in source
//! order), and the phase shown is the least advanced source's (the run is in full sync while
//! any source is).
//!
//! Layout: `histogram` (lock-free buckets), `prom` (text exposition), `status` (JSON),
//! `http` (the endpoint's thread, mio, HTTP/1.1).

pub mod histogram;
pub mod http;
pub mod prom;
pub mod status;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use histogram::{Histogram, HistogramSnapshot};

/// Where the process stands. A session moves forward through these; a new session starts
/// again at `Connecting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Phase {
    /// Handshake with the master and the target, flow registration.
    #[default]
    Connecting = 0,
    /// `DFLY SYNC` is being sent: the snapshot streams.
    FullSync = 1,
    /// `DFLY STARTSTABLE` answered (or every flow resumed PARTIAL): the live journal.
    StableSync = 2,
    /// A signal, an error or the end of `migrate`: the shutdown routine runs.
    Stopping = 3,
    /// The session ended without error.
    Done = 4,
    /// The session ended with an error.
    Failed = 5,
}

impl Phase {
    pub const ALL: [Phase; 6] = [Phase::Connecting, Phase::FullSync, Phase::StableSync, Phase::Stopping, Phase::Done, Phase::Failed];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Connecting => "connecting",
            Phase::FullSync => "full_sync",
            Phase::StableSync => "stable_sync",
            Phase::Stopping => "stopping",
            Phase::Done => "done",
            Phase::Failed => "failed",
        }
    }

    fn from_u8(v: u8) -> Phase {
        Phase::ALL.get(v as usize).copied().unwrap_or(Phase::Failed)
    }
}

/// The live figures of one flow of the running session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowSnapshot {
    /// With several sources: `<source label>-<flow>`, as the flow's thread is named (the
    /// flows of all sources are listed one after the other).
    pub name: Option<String>,
    /// Snapshot keys decoded.
    pub keys: u64,
    /// Bytes received from the master (wire bytes, compressed as sent).
    pub bytes: u64,
    /// Stable-sync journal records decoded.
    pub records: u64,
    /// Commands the target acknowledged.
    pub commands: u64,
    /// The next LSN the reader will decode (0 before the journal offset is known).
    pub received_lsn: u64,
    /// The next LSN after the last record the target applied (what an ACK carries).
    pub applied_lsn: u64,
    /// Age of the oldest record read from the master and not yet applied (0 when none is
    /// pending); `None` before stable sync.
    pub lag_ms: Option<u64>,
    pub fullsync_done: bool,
    pub stable: bool,
}

impl FlowSnapshot {
    /// Records decoded but not yet applied; `None` before stable sync.
    pub fn lag_records(&self) -> Option<u64> {
        self.stable.then(|| self.received_lsn.saturating_sub(self.applied_lsn))
    }
}

/// The live figures of the running session, read from its counters on demand.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionSnapshot {
    pub flows: Vec<FlowSnapshot>,
    /// The master's key count (all dbs) and `used_memory` when the session started, for the
    /// full-sync estimate; `None` when the master did not say.
    pub master_keys: Option<u64>,
    pub master_used_memory: Option<u64>,
    /// Keys or records not written, and written in a changed form, by reason.
    pub skipped: BTreeMap<String, u64>,
    pub altered: BTreeMap<String, u64>,
    /// Snapshot keys whose TTL had passed on arrival (not written).
    pub expired_on_arrival: u64,
    /// Commands the target rejected and the policy skipped.
    pub rejected: u64,
}

/// The running session, as the pipeline exposes it.
pub trait SessionSource: Send + Sync {
    fn snapshot(&self) -> SessionSnapshot;
}

/// Counters of ended sessions, per flow index and by reason.
#[derive(Debug, Clone, Default, PartialEq)]
struct Totals {
    /// Per source, per flow: keys, bytes, records, commands.
    flows: BTreeMap<usize, Vec<[u64; 4]>>,
    skipped: BTreeMap<String, u64>,
    altered: BTreeMap<String, u64>,
    expired_on_arrival: u64,
    rejected: u64,
    node_writes: BTreeMap<String, u64>,
    redirects: (u64, u64),
}

fn add_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

impl Totals {
    fn add_session(&mut self, source: usize, s: &SessionSnapshot) {
        let flows = self.flows.entry(source).or_default();
        if flows.len() < s.flows.len() {
            flows.resize(s.flows.len(), [0; 4]);
        }
        for (t, f) in flows.iter_mut().zip(&s.flows) {
            for (a, b) in t.iter_mut().zip([f.keys, f.bytes, f.records, f.commands]) {
                *a += b;
            }
        }
        add_map(&mut self.skipped, &s.skipped);
        add_map(&mut self.altered, &s.altered);
        self.expired_on_arrival += s.expired_on_arrival;
        self.rejected += s.rejected;
    }
}

/// One writer's latest cumulative per-node counts in the running session.
#[derive(Default)]
struct WriterBoard {
    published: Option<Instant>,
    node_writes: BTreeMap<String, u64>,
    redirects: (u64, u64),
}

/// Writer boards numbered per source: source `k`'s writer `w` publishes as board
/// `k * BOARDS_PER_SOURCE + w`.
pub const BOARDS_PER_SOURCE: usize = 1024;

/// How often a writer republishes its per-node counts (building them walks its nodes).
const NODE_WRITES_EVERY: Duration = Duration::from_secs(1);
/// The window of the ops/s and bytes/s figures.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Samples of (when, commands applied, bytes received) over the last [`RATE_WINDOW`].
#[derive(Default)]
struct Rates {
    samples: VecDeque<(Instant, u64, u64)>,
}

impl Rates {
    /// Add a sample and return (ops/s, bytes/s) since the oldest sample kept.
    fn sample(&mut self, now: Instant, commands: u64, bytes: u64) -> (f64, f64) {
        // A counter that went down means a new run of the counters: start over.
        if self.samples.back().is_some_and(|&(_, c, b)| c > commands || b > bytes) {
            self.samples.clear();
        }
        if self.samples.back().is_none_or(|&(t, _, _)| now.saturating_duration_since(t) >= Duration::from_millis(200)) {
            self.samples.push_back((now, commands, bytes));
        }
        // Keep one sample at or beyond the window's start, so the span covers the window.
        while self.samples.len() > 2 && now.saturating_duration_since(self.samples[1].0) >= RATE_WINDOW {
            self.samples.pop_front();
        }
        match (self.samples.front(), self.samples.back()) {
            (Some(&(t0, c0, b0)), Some(&(t1, c1, b1))) if t1 > t0 => {
                let dt = (t1 - t0).as_secs_f64();
                ((c1 - c0) as f64 / dt, (b1 - b0) as f64 / dt)
            }
            _ => (0.0, 0.0),
        }
    }
}

/// Progress of a full sync against the master's size at the start of the session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FullSyncProgress {
    pub keys: u64,
    pub bytes: u64,
    pub master_keys: Option<u64>,
    pub master_used_memory: Option<u64>,
    /// Done, 0..=1: keys decoded over the master's key count, or (when the master reported no
    /// keys) bytes received over its `used_memory`.
    pub ratio: Option<f64>,
    /// Time left at the average rate of this full sync; only while it runs.
    pub eta: Option<Duration>,
}

/// Estimate the full sync's progress. The key count is the measure when the master gave one:
/// both sides count the same things, while wire bytes (serialized, often compressed) and
/// `used_memory` (in-memory, with overheads) can differ by a factor of two or three. Keys
/// written to the master during the sync and big keys (one key, many seconds) make it
/// approximate; the ratio is capped below 1 until the flows report FULLSYNC_END.
pub fn full_sync_progress(s: &SessionSnapshot, running_for: Option<Duration>) -> FullSyncProgress {
    let keys: u64 = s.flows.iter().map(|f| f.keys).sum();
    let bytes: u64 = s.flows.iter().map(|f| f.bytes).sum();
    let complete = !s.flows.is_empty() && s.flows.iter().all(|f| f.fullsync_done);
    let ratio = if complete {
        Some(1.0)
    } else {
        match (s.master_keys, s.master_used_memory) {
            (Some(k), _) if k > 0 => Some(keys as f64 / k as f64),
            (_, Some(m)) if m > 0 => Some(bytes as f64 / m as f64),
            _ => None,
        }
        .map(|r| r.min(0.99))
    };
    let eta = match (ratio, running_for) {
        (Some(r), Some(t)) if r > 0.0 && !complete => Some(Duration::from_secs_f64(t.as_secs_f64() * (1.0 - r) / r)),
        _ => None,
    };
    FullSyncProgress { keys, bytes, master_keys: s.master_keys, master_used_memory: s.master_used_memory, ratio, eta }
}

/// Everything the endpoints show, read at one moment: process totals (ended sessions plus the
/// running one) and the running session's gauges.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub phase: Phase,
    pub phase_for: Duration,
    pub uptime: Duration,
    pub sessions: u64,
    pub sessions_failed: u64,
    /// Per flow index: process totals of the counters, the running session's gauges.
    pub flows: Vec<FlowReport>,
    pub skipped: BTreeMap<String, u64>,
    pub altered: BTreeMap<String, u64>,
    pub expired_on_arrival: u64,
    pub rejected: u64,
    pub node_writes: BTreeMap<String, u64>,
    pub redirects: (u64, u64),
    pub ops_per_sec: f64,
    pub bytes_per_sec: f64,
    /// The running (or last) session's full sync.
    pub full_sync: Option<FullSyncProgress>,
    pub latency: HistogramSnapshot,
    /// The running session's own figures (the progress display shows these).
    pub session: Option<SessionSnapshot>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowReport {
    /// Counters: every session of the process.
    pub keys: u64,
    pub bytes: u64,
    pub records: u64,
    pub commands: u64,
    /// Gauges of the running session (`None` for a flow index it does not have).
    pub now: Option<FlowSnapshot>,
}

pub struct Metrics {
    started: Instant,
    phase: AtomicU8,
    phase_since: Mutex<Instant>,
    /// When the running session entered full sync (for the ETA).
    full_sync_since: Mutex<Option<Instant>>,
    sessions: AtomicU64,
    sessions_failed: AtomicU64,
    /// Round trip of every pipeline: from its send to the parsed reply of its last command.
    pub pipeline_latency: Histogram,
    /// The running session of each source, by source number.
    current: Mutex<BTreeMap<usize, Arc<dyn SessionSource>>>,
    /// Each source's phase, when several report one (see [`Metrics::set_source_phase`]).
    source_phases: Mutex<BTreeMap<usize, Phase>>,
    /// The last snapshot of the last detached session (its full-sync figures stay visible).
    last: Mutex<Option<SessionSnapshot>>,
    /// By board number: a source's writer `w` is `source * BOARDS_PER_SOURCE + w`.
    writers: Mutex<BTreeMap<usize, WriterBoard>>,
    base: Mutex<Totals>,
    rates: Mutex<Rates>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::new)
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            started: Instant::now(),
            phase: AtomicU8::new(Phase::Connecting as u8),
            phase_since: Mutex::new(Instant::now()),
            full_sync_since: Mutex::new(None),
            sessions: AtomicU64::new(0),
            sessions_failed: AtomicU64::new(0),
            pipeline_latency: Histogram::default(),
            current: Mutex::new(BTreeMap::new()),
            source_phases: Mutex::new(BTreeMap::new()),
            last: Mutex::new(None),
            writers: Mutex::new(BTreeMap::new()),
            base: Mutex::new(Totals::default()),
            rates: Mutex::new(Rates::default()),
        }
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Relaxed))
    }

    /// The phase of source `source` of the run: the process shows the least advanced
    /// source's (with one source, this one's).
    pub fn set_source_phase(&self, source: usize, p: Phase) {
        let shown = {
            let mut phases = self.source_phases.lock();
            phases.insert(source, p);
            phases.values().copied().min_by_key(|p| *p as u8).unwrap_or(p)
        };
        if shown != self.phase() {
            self.store_phase(shown);
        }
    }

    /// The whole run's phase (its start and its end).
    pub fn set_phase(&self, p: Phase) {
        self.source_phases.lock().clear();
        self.store_phase(p);
    }

    fn store_phase(&self, p: Phase) {
        let now = Instant::now();
        *self.phase_since.lock() = now;
        match p {
            Phase::Connecting => *self.full_sync_since.lock() = None,
            Phase::FullSync => *self.full_sync_since.lock() = Some(now),
            _ => {}
        }
        if p == Phase::Failed {
            self.sessions_failed.fetch_add(1, Relaxed);
        }
        self.phase.store(p as u8, Relaxed);
        log::debug!("phase: {}", p.name());
    }

    /// Source `source`'s new session starts reporting through `src` (0 with one source).
    pub fn attach(&self, source: usize, src: Arc<dyn SessionSource>) {
        self.sessions.fetch_add(1, Relaxed);
        self.writers.lock().retain(|b, _| b / BOARDS_PER_SOURCE != source);
        self.current.lock().insert(source, src);
    }

    /// Source `source`'s session ended: its final figures become part of the process totals.
    /// Call it after its threads are joined, so that nothing changes afterwards.
    pub fn detach(&self, source: usize) {
        let Some(src) = self.current.lock().remove(&source) else { return };
        let last = src.snapshot();
        let boards: Vec<WriterBoard> = {
            let mut all = self.writers.lock();
            let mine: Vec<usize> = all.keys().copied().filter(|b| b / BOARDS_PER_SOURCE == source).collect();
            mine.into_iter().filter_map(|b| all.remove(&b)).collect()
        };
        let mut base = self.base.lock();
        base.add_session(source, &last);
        for b in &boards {
            add_map(&mut base.node_writes, &b.node_writes);
            base.redirects.0 += b.redirects.0;
            base.redirects.1 += b.redirects.1;
        }
        *self.last.lock() = Some(last);
    }

    /// Each running session's figures, by source.
    fn current_snapshots(&self) -> BTreeMap<usize, SessionSnapshot> {
        let current: Vec<(usize, Arc<dyn SessionSource>)> = self.current.lock().iter().map(|(k, s)| (*k, s.clone())).collect();
        current.into_iter().map(|(k, s)| (k, s.snapshot())).collect()
    }

    /// The running sessions' figures as one: flows in source order, counts added up.
    fn merged(current: &BTreeMap<usize, SessionSnapshot>) -> Option<SessionSnapshot> {
        let mut it = current.values().cloned();
        let mut all = it.next()?;
        for s in it {
            all.flows.extend(s.flows);
            all.master_keys = all.master_keys.zip(s.master_keys).map(|(a, b)| a + b);
            all.master_used_memory = all.master_used_memory.zip(s.master_used_memory).map(|(a, b)| a + b);
            add_map(&mut all.skipped, &s.skipped);
            add_map(&mut all.altered, &s.altered);
            all.expired_on_arrival += s.expired_on_arrival;
            all.rejected += s.rejected;
        }
        Some(all)
    }

    /// A writer's cumulative per-node write counts and redirects (MOVED, ASK) in the running
    /// session. `get` is only called when a publication is due (at most once a second per
    /// writer) or `force`d (at the writer's end).
    pub fn publish_node_writes(&self, writer: usize, force: bool, get: impl FnOnce() -> (BTreeMap<String, u64>, (u64, u64))) {
        let mut boards = self.writers.lock();
        let b = boards.entry(writer).or_default();
        if !force && b.published.is_some_and(|t| t.elapsed() < NODE_WRITES_EVERY) {
            return;
        }
        let (nodes, redirects) = get();
        b.published = Some(Instant::now());
        b.node_writes = nodes;
        b.redirects = redirects;
    }

    /// Read everything now.
    pub fn report(&self) -> Report {
        let now = Instant::now();
        let current = self.current_snapshots();
        let session = Self::merged(&current);
        let phase = self.phase();
        let base = self.base.lock().clone();
        let mut r = Report {
            phase,
            phase_for: now.saturating_duration_since(*self.phase_since.lock()),
            uptime: now.saturating_duration_since(self.started),
            sessions: self.sessions.load(Relaxed),
            sessions_failed: self.sessions_failed.load(Relaxed),
            skipped: base.skipped,
            altered: base.altered,
            expired_on_arrival: base.expired_on_arrival,
            rejected: base.rejected,
            node_writes: base.node_writes,
            redirects: base.redirects,
            latency: self.pipeline_latency.snapshot(),
            ..Default::default()
        };
        // Source by source (as the merged session lists them): ended sessions' totals plus the
        // running one's counters, per flow.
        let sources: std::collections::BTreeSet<usize> = base.flows.keys().chain(current.keys()).copied().collect();
        for k in sources {
            let totals = base.flows.get(&k).map_or(&[][..], |v| v.as_slice());
            let running = current.get(&k).map_or(&[][..], |s| s.flows.as_slice());
            for i in 0..totals.len().max(running.len()) {
                let t = totals.get(i).copied().unwrap_or_default();
                let now = running.get(i).cloned();
                let cur = now.as_ref().map_or([0; 4], |f| [f.keys, f.bytes, f.records, f.commands]);
                r.flows.push(FlowReport { keys: t[0] + cur[0], bytes: t[1] + cur[1], records: t[2] + cur[2], commands: t[3] + cur[3], now });
            }
        }
        if let Some(s) = &session {
            add_map(&mut r.skipped, &s.skipped);
            add_map(&mut r.altered, &s.altered);
            r.expired_on_arrival += s.expired_on_arrival;
            r.rejected += s.rejected;
            for b in self.writers.lock().values() {
                add_map(&mut r.node_writes, &b.node_writes);
                r.redirects.0 += b.redirects.0;
                r.redirects.1 += b.redirects.1;
            }
        }
        let running_for = match phase {
            Phase::FullSync => self.full_sync_since.lock().map(|t| now.saturating_duration_since(t)),
            _ => None,
        };
        let last = if session.is_none() { self.last.lock().clone() } else { None };
        r.full_sync = session.as_ref().or(last.as_ref()).map(|s| full_sync_progress(s, running_for));
        let commands = r.flows.iter().map(|f| f.commands).sum();
        let bytes = r.flows.iter().map(|f| f.bytes).sum();
        (r.ops_per_sec, r.bytes_per_sec) = self.rates.lock().sample(now, commands, bytes);
        r.session = session;
        r
    }
}

/// The endpoint's routes: `/metrics`, `/status`, and an index at `/`.
pub struct Routes(pub &'static Metrics);

impl http::Handler for Routes {
    fn handle(&self, method: &str, path: &str) -> http::Response {
        let body = match path {
            "/metrics" | "/status" | "/" => {
                if method != "GET" && method != "HEAD" {
                    return http::Response::method_not_allowed();
                }
                match path {
                    "/metrics" => return http::Response::ok(prom::CONTENT_TYPE, prom::render(&self.0.report()).into_bytes()),
                    "/status" => return http::Response::ok(status::CONTENT_TYPE, status::render(&self.0.report()).into_bytes()),
                    _ => "df2redis\n/metrics  Prometheus text format\n/status   JSON\n",
                }
            }
            _ => return http::Response::not_found(),
        };
        http::Response::ok("text/plain; charset=utf-8", body.as_bytes().to_vec())
    }

    /// Keeps the ops/s and bytes/s window sampled between requests.
    fn tick(&self) {
        let _ = self.0.report();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(SessionSnapshot);
    impl SessionSource for Fixed {
        fn snapshot(&self) -> SessionSnapshot {
            self.0.clone()
        }
    }

    fn session(keys: u64, commands: u64) -> SessionSnapshot {
        SessionSnapshot {
            flows: vec![FlowSnapshot { keys, commands, bytes: 10, ..Default::default() }; 2],
            skipped: [("Bloom filter".to_string(), 1)].into(),
            master_keys: Some(4 * keys),
            ..Default::default()
        }
    }

    #[test]
    fn counters_survive_sessions_and_gauges_follow_the_running_one() {
        let m = Metrics::new();
        m.attach(0, Arc::new(Fixed(session(5, 7))));
        m.publish_node_writes(0, false, || ([("n1".to_string(), 3)].into(), (1, 0)));
        // Not due again within a second: the closure is not called.
        m.publish_node_writes(0, false, || unreachable!());
        let r = m.report();
        assert_eq!((r.flows[0].keys, r.flows[1].commands, r.skipped["Bloom filter"]), (5, 7, 1));
        assert_eq!((r.node_writes["n1"], r.redirects), (3, (1, 0)));
        m.detach(0);
        m.attach(0, Arc::new(Fixed(session(2, 1))));
        m.publish_node_writes(0, true, || ([("n1".to_string(), 1)].into(), (0, 2)));
        let r = m.report();
        assert_eq!((r.flows[0].keys, r.flows[0].commands, r.skipped["Bloom filter"]), (7, 8, 2));
        assert_eq!((r.node_writes["n1"], r.redirects, r.sessions), (4, (1, 2), 2));
        assert_eq!(r.flows[0].now.as_ref().unwrap().keys, 2, "gauges are the running session's");
        m.detach(0);
        let r = m.report();
        assert!(r.flows[0].now.is_none() && r.session.is_none());
        assert_eq!(r.full_sync.unwrap().keys, 4, "the last session's full sync stays visible");
    }

    #[test]
    fn several_sources_merge_and_show_the_least_advanced_phase() {
        let m = Metrics::new();
        m.attach(0, Arc::new(Fixed(session(5, 7))));
        m.attach(1, Arc::new(Fixed(session(2, 1))));
        m.publish_node_writes(0, true, || ([("n1".to_string(), 3)].into(), (0, 0)));
        m.publish_node_writes(BOARDS_PER_SOURCE, true, || ([("n1".to_string(), 4)].into(), (0, 0)));
        let r = m.report();
        assert_eq!(r.flows.len(), 4, "both sources' flows, one after the other");
        assert_eq!((r.flows[0].keys, r.flows[2].keys, r.skipped["Bloom filter"], r.node_writes["n1"]), (5, 2, 2, 7));
        m.set_source_phase(0, Phase::StableSync);
        m.set_source_phase(1, Phase::FullSync);
        assert_eq!(m.phase(), Phase::FullSync, "the run is in full sync while a source is");
        m.set_source_phase(1, Phase::StableSync);
        assert_eq!(m.phase(), Phase::StableSync);
        // Source 1's session ends: its figures (and only its writer board) go to the totals.
        m.detach(1);
        let r = m.report();
        assert_eq!((r.flows.len(), r.flows[2].keys, r.flows[2].now.is_none()), (4, 2, true));
        assert_eq!(r.node_writes["n1"], 7);
        m.attach(1, Arc::new(Fixed(session(1, 0))));
        assert_eq!(m.report().node_writes["n1"], 7, "source 0's board survives source 1's new session");
    }

    #[test]
    fn full_sync_ratio_and_eta() {
        let mut s = session(25, 0);
        s.master_keys = Some(200); // 50 of 200 keys
        let p = full_sync_progress(&s, Some(Duration::from_secs(10)));
        assert_eq!(p.ratio, Some(0.25));
        assert_eq!(p.eta, Some(Duration::from_secs(30)));
        s.master_keys = Some(0);
        s.master_used_memory = Some(80);
        assert_eq!(full_sync_progress(&s, None).ratio, Some(0.25), "bytes when the master has no keys");
        s.master_used_memory = None;
        assert_eq!(full_sync_progress(&s, None).ratio, None);
        s.master_keys = Some(10); // more keys than announced: capped until FULLSYNC_END
        assert_eq!(full_sync_progress(&s, None).ratio, Some(0.99));
        s.flows.iter_mut().for_each(|f| f.fullsync_done = true);
        let p = full_sync_progress(&s, Some(Duration::from_secs(1)));
        assert_eq!((p.ratio, p.eta), (Some(1.0), None));
    }

    #[test]
    fn rates_over_a_window() {
        let mut r = Rates::default();
        let t = Instant::now();
        assert_eq!(r.sample(t, 0, 0), (0.0, 0.0));
        assert_eq!(r.sample(t + Duration::from_secs(2), 200, 1000), (100.0, 500.0));
        let (ops, _) = r.sample(t + Duration::from_secs(20), 2200, 1000);
        assert_eq!(ops, 2000.0 / 18.0, "the oldest sample kept starts the window");
        assert_eq!(r.sample(t + Duration::from_secs(21), 5, 5), (0.0, 0.0), "a reset starts over");
    }
}
