//! The master's state: shards (data, journal, and the flows attached to them), the write
//! path (routing, serialize-before-mutate, journaling) and the snapshot steps. Sessions are
//! in `sessions`.
//!
//! Locks, always taken in this order: `sessions` → shard (ascending index) → a pipe → the
//! progress counter. Nothing waits while holding `sessions` or a shard lock, except on a
//! shard lock. All waiting API calls wait on [`Progress`], which every relevant change bumps.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

use super::cluster_node::ClusterState;
use super::commands::{self, apply, Shape};
use super::data::{now_ms, Entry, Keyspace, Value};
use super::encode;
use super::flow::Pipe;
use super::hash::{random_hex, xxh64};
use super::sessions::Sessions;
use super::snapshot::{self as snap, SerOpts, Serializer, Traversal};
use super::{Config, Dialect};

/// Dragonfly's key-to-shard hash seed (`Shard()`: XXH64 of the key with this seed, modulo
/// the shard count); checked against the key placement in the v1.40.1 captures.
const SHARD_HASH_SEED: u64 = 120_577_240_643;

/// A change counter with a condition variable: waiters re-check their predicate after every
/// bump, so no wait loop sleeps.
#[derive(Default)]
pub(crate) struct Progress {
    gen: Mutex<u64>,
    cv: Condvar,
}

impl Progress {
    pub fn bump(&self) {
        *self.gen.lock() += 1;
        self.cv.notify_all();
    }
    /// Wait until `pred()` holds (true) or the deadline passes (false).
    pub fn wait_until(&self, deadline: Option<Instant>, mut pred: impl FnMut() -> bool) -> bool {
        loop {
            let seen = *self.gen.lock();
            if pred() {
                return true;
            }
            let mut g = self.gen.lock();
            while *g == seen {
                match deadline {
                    Some(d) => {
                        if self.cv.wait_until(&mut g, d).timed_out() {
                            drop(g);
                            return pred();
                        }
                    }
                    None => self.cv.wait(&mut g),
                }
            }
        }
    }
}

/// Bytes of a pre-encoded body handed to the socket writer per snapshot step.
const PRE_ENCODED_SLICE: usize = 1 << 20;

/// Where a flow attached to a shard is in its life.
pub(super) enum Stage {
    Snapshot(Traversal),
    /// Full sync from a pre-encoded body ([`Config::pre_encode`]): `body[pos..]` is still to
    /// be written. Journal records are held in the serializer until the body is out.
    PreEncoded {
        body: Arc<Vec<u8>>,
        pos: usize,
    },
    /// FULLSYNC_END written; journal blobs are held in the serializer.
    PostCut,
    /// Journal records go straight to the socket.
    Stable,
}

/// One flow of one session, attached to its shard.
pub(super) struct Feed {
    pub(super) session: u32,
    pub(super) pipe: Arc<Pipe>,
    pub(super) stage: Stage,
    pub(super) ser: Serializer,
    /// When the last LSN marker was written (stable sync).
    pub(super) last_mark: Option<Instant>,
}

impl Feed {
    /// Hand the serializer's output to the socket writer.
    pub(super) fn drain(&mut self) {
        if self.ser.has_ready() {
            let bytes = self.ser.take_ready();
            self.pipe.push(&bytes);
        }
    }

    /// A journal record of this shard: inline blob during full sync, raw in stable sync
    /// (followed by an LSN marker when the period passed).
    pub(super) fn record(&mut self, lsn: u64, rec: &[u8], period: Duration) {
        match self.stage {
            Stage::Snapshot(_) => self.ser.journal_blob(rec, false),
            // The body is the state at DFLY SYNC: every record goes after it (held, not
            // drained, so no byte of it lands inside the body).
            Stage::PreEncoded { .. } => {
                self.ser.journal_blob(rec, false);
                return;
            }
            Stage::PostCut => self.ser.journal_blob(rec, true),
            Stage::Stable => {
                let mut b = Vec::with_capacity(rec.len() + 4);
                b.extend_from_slice(rec);
                if self.last_mark.is_none_or(|t| t.elapsed() > period) {
                    encode::lsn_marker(&mut b, lsn);
                    self.last_mark = Some(Instant::now());
                }
                self.pipe.push(&b);
                return;
            }
        }
        self.drain();
    }
}

pub(super) struct Shard {
    /// This shard's index (= its flow).
    pub(super) index: usize,
    pub(super) dbs: BTreeMap<u32, Keyspace>,
    /// LSN of the next journal record.
    pub(super) next_lsn: u64,
    /// The last `backlog_len` records: (lsn, SELECT+COMMAND bytes).
    pub(super) ring: VecDeque<(u64, Arc<Vec<u8>>)>,
    pub(super) feeds: Vec<Feed>,
    /// The pre-encoded full-sync body of this shard's current data; dropped by any change
    /// (a flow streaming it keeps its own reference).
    pub(super) pre: Option<Arc<Vec<u8>>>,
    /// `INFO KEYSPACE`/`MEMORY` figures of this shard, computed when asked; dropped by any
    /// change, as `pre` is.
    pub(super) stats: Option<ShardStats>,
}

/// Per db (keys, keys with a TTL), and the modelled memory of the shard's data.
#[derive(Clone, Default)]
pub(super) struct ShardStats {
    pub dbs: BTreeMap<u32, (u64, u64)>,
    pub memory: u64,
}

impl Shard {
    pub(super) fn lsn_available(&self, lsn: u64) -> bool {
        lsn == self.next_lsn
            || matches!((self.ring.front(), self.ring.back()), (Some(f), Some(b)) if f.0 <= lsn && lsn <= b.0)
    }
}

enum Step {
    Progress,
    Paused,
    Done,
}

pub(crate) struct Core {
    pub cfg: Config,
    pub replid: String,
    pub(super) shards: Vec<Mutex<Shard>>,
    pub(super) sessions: Mutex<Sessions>,
    /// The journal starts with the first `DFLY FLOW`; earlier writes consume no LSN.
    pub(super) journal_on: AtomicBool,
    pub(super) next_txid: AtomicU64,
    pub progress: Progress,
    pub(super) resumed: AtomicBool,
    pub(super) startstable_released: AtomicBool,
    pub(super) max_stall_ms: AtomicU64,
    pub(super) violations: Mutex<Vec<String>>,
    pub stopping: AtomicBool,
    /// Cluster mode ([`Config::cluster`]); the lock is also the migration finalization's pause.
    pub(super) cluster: Option<RwLock<ClusterState>>,
    /// A migration from this node is forwarding its writes: journal forms of db 0 are kept
    /// in `forward_buf` until the write that made them forwards them.
    pub(super) forwarding: AtomicBool,
    pub(super) forward_buf: Mutex<Vec<Vec<Vec<u8>>>>,
}

impl Core {
    pub fn new(cfg: Config) -> Self {
        let shards = (0..cfg.shards)
            .map(|index| {
                Mutex::new(Shard {
                    index,
                    dbs: BTreeMap::new(),
                    next_lsn: 1,
                    ring: VecDeque::new(),
                    feeds: Vec::new(),
                    pre: None,
                    stats: None,
                })
            })
            .collect();
        let replid = random_hex();
        let cluster = cfg.cluster.as_ref().map(|c| {
            let me = c.node_id.clone().unwrap_or_else(|| replid.clone());
            RwLock::new(ClusterState::new(me, c.layout.clone()))
        });
        Core {
            replid,
            cluster,
            forwarding: AtomicBool::new(false),
            forward_buf: Mutex::new(Vec::new()),
            shards,
            sessions: Mutex::new(Sessions::default()),
            journal_on: AtomicBool::new(false),
            next_txid: AtomicU64::new(1),
            progress: Progress::default(),
            resumed: AtomicBool::new(false),
            startstable_released: AtomicBool::new(false),
            max_stall_ms: AtomicU64::new(0),
            violations: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            cfg,
        }
    }

    /// In cluster mode Dragonfly hashes only the `{hashtag}` part (`Shard()`,
    /// `IsClusterShardedByTag`).
    pub fn shard_of(&self, key: &[u8]) -> usize {
        let key = if self.cluster.is_some() { crate::target::slots::hash_part(key) } else { key };
        (xxh64(key, SHARD_HASH_SEED) % self.cfg.shards as u64) as usize
    }

    pub(super) fn shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        self.shards[i].lock()
    }

    pub fn violation(&self, what: String) {
        log::error!("protocol violation by the replica: {what}");
        self.violations.lock().push(what);
        self.progress.bump();
    }
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().clone()
    }
    pub fn note_stall(&self, took: Duration) {
        self.max_stall_ms.fetch_max(took.as_millis() as u64, Ordering::Relaxed);
    }
    pub fn max_stall_ms(&self) -> u64 {
        self.max_stall_ms.load(Ordering::Relaxed)
    }

    // ---- data --------------------------------------------------------------------------------

    pub fn load(&self, db: u32, key: &[u8], entry: Entry) {
        // A cluster node holds only its own slots' keys (of db 0), as Dragonfly's loader
        // skips the others.
        if let Some(st) = self.cluster_state() {
            if st.check_keys(db, &[key]).is_err() {
                return;
            }
        }
        let mut sh = self.shard(self.shard_of(key));
        self.touch(&mut sh, db, key);
        sh.dbs.entry(db).or_default().insert(key.to_vec(), entry);
    }

    pub fn data(&self) -> BTreeMap<u32, BTreeMap<Vec<u8>, Entry>> {
        let now = now_ms();
        let mut out: BTreeMap<u32, BTreeMap<Vec<u8>, Entry>> = BTreeMap::new();
        for s in &self.shards {
            let sh = s.lock();
            for (db, ks) in &sh.dbs {
                let live = ks.iter().filter(|(_, e)| !e.is_expired(now)).map(|(k, e)| (k.clone(), e.clone()));
                out.entry(*db).or_default().extend(live);
            }
        }
        out.retain(|_, m| !m.is_empty());
        out
    }

    /// Keys and keys with a TTL per db (expired keys not yet deleted included, as Redis and
    /// Dragonfly count them), and the modelled memory of all data: what `INFO KEYSPACE` and
    /// `INFO MEMORY` report. Cached per shard until its data changes.
    pub fn keyspace_stats(&self) -> (BTreeMap<u32, (u64, u64)>, u64) {
        let mut dbs: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        let mut memory = 0;
        for s in &self.shards {
            let mut sh = s.lock();
            let st = match &sh.stats {
                Some(st) => st.clone(),
                None => {
                    let mut st = ShardStats::default();
                    for (db, ks) in &sh.dbs {
                        let expires = ks.values().filter(|e| e.expire_at_ms.is_some()).count() as u64;
                        st.dbs.insert(*db, (ks.len() as u64, expires));
                        st.memory += ks.iter().map(|(k, e)| e.approx_memory(k)).sum::<u64>();
                    }
                    sh.stats = Some(st.clone());
                    st
                }
            };
            for (db, (k, e)) in st.dbs {
                let t = dbs.entry(db).or_default();
                t.0 += k;
                t.1 += e;
            }
            memory += st.memory;
        }
        dbs.retain(|_, (k, _)| *k > 0);
        (dbs, memory)
    }

    pub fn lsns(&self) -> Vec<u64> {
        self.shards.iter().map(|s| s.lock().next_lsn).collect()
    }

    /// `shard_cnt` of a COMMAND record: v1.38+ always 1, before the shards the transaction
    /// touched.
    fn shard_cnt(&self, touched: usize) -> u64 {
        match self.cfg.dialect {
            Dialect::V1_40 => 1,
            Dialect::V1_34 | Dialect::V1_36 => touched as u64,
        }
    }

    fn txid(&self) -> u64 {
        self.next_txid.fetch_add(1, Ordering::Relaxed)
    }

    /// A client's write; in cluster mode refused outside the node's slots (see
    /// `cluster_node`).
    pub fn write(&self, db: u32, args: &[&[u8]]) -> Result<(), String> {
        match self.cluster_state() {
            Some(st) => self.cluster_write(&st, db, args, &commands::keys(args)),
            None => self.write_unchecked(db, args),
        }
    }

    /// A write with no ownership check: a migration target executing what its source sends
    /// (Dragonfly's executor connection is `is_replicating`), or a node outside cluster mode.
    pub(super) fn write_unchecked(&self, db: u32, args: &[&[u8]]) -> Result<(), String> {
        self.write_to(db, args, &mut None)
    }

    /// The write path; with `cap`, the journal records go to `cap` (encoded, for a later
    /// [`Core::release_journal`]) instead of the shards' journals: no LSN is consumed.
    fn write_to(&self, db: u32, args: &[&[u8]], cap: &mut Option<&mut PreparedJournal>) -> Result<(), String> {
        let Some(name) = args.first() else { return Err("ERR empty command".into()) };
        let name = String::from_utf8_lossy(name).to_ascii_uppercase();
        let wrong_args = || format!("ERR wrong number of arguments for '{}' command", name.to_lowercase());
        let now = now_ms();
        match commands::shape(&name) {
            None => Err(format!("ERR unknown or unsupported write command '{name}'")),
            Some(Shape::Single) => {
                let key = *args.get(1).ok_or_else(wrong_args)?;
                let key = if name == "XGROUP" { *args.get(2).ok_or_else(wrong_args)? } else { key };
                let mut sh = self.shard(self.shard_of(key));
                self.expire_if_due(&mut sh, db, key, now, cap);
                self.touch(&mut sh, db, key);
                let ks = sh.dbs.entry(db).or_default();
                if let Some(j) = apply(ks, now, args)? {
                    let shard_cnt = self.shard_cnt(1);
                    self.journal(&mut sh, db, encode::J_COMMAND, 0, shard_cnt, &j, cap);
                }
                Ok(())
            }
            Some(Shape::Keys) | Some(Shape::Pairs) => {
                let pairs = commands::shape(&name) == Some(Shape::Pairs);
                let step = if pairs { 2 } else { 1 };
                let rest = &args[1..];
                if rest.is_empty() || rest.len() % step != 0 {
                    return Err(wrong_args());
                }
                let mut by_shard: BTreeMap<usize, Vec<&[u8]>> = BTreeMap::new();
                for unit in rest.chunks(step) {
                    by_shard.entry(self.shard_of(unit[0])).or_default().extend_from_slice(unit);
                }
                let txid = if rest.len() > step { self.txid() } else { 0 };
                let shard_cnt = self.shard_cnt(by_shard.len());
                for (s, part) in by_shard {
                    let mut sh = self.shard(s);
                    for unit in part.chunks(step) {
                        self.expire_if_due(&mut sh, db, unit[0], now, cap);
                        self.touch(&mut sh, db, unit[0]);
                        let ks = sh.dbs.entry(db).or_default();
                        if pairs {
                            let sticky = ks.get(unit[0]).is_some_and(|e| e.sticky);
                            let mut e = Entry::new(Value::String(unit[1].to_vec()));
                            e.sticky = sticky;
                            ks.insert(unit[0].to_vec(), e);
                        } else {
                            ks.remove(unit[0]);
                        }
                    }
                    let mut j: Vec<&[u8]> = vec![name.as_bytes()];
                    j.extend(part);
                    self.journal(&mut sh, db, encode::J_COMMAND, txid, shard_cnt, &j, cap);
                }
                Ok(())
            }
            Some(Shape::Rename) => {
                let (Some(&src), Some(&dst)) = (args.get(1), args.get(2)) else { return Err(wrong_args()) };
                if self.shard_of(src) != self.shard_of(dst) {
                    return Err("ERR the emulator renames only within one shard (Dragonfly journals a cross-shard \
                                RENAME as DEL + RESTORE)"
                        .into());
                }
                let mut sh = self.shard(self.shard_of(src));
                for k in [src, dst] {
                    self.expire_if_due(&mut sh, db, k, now, cap);
                    self.touch(&mut sh, db, k);
                }
                let ks = sh.dbs.entry(db).or_default();
                let Some(e) = ks.remove(src) else { return Err("ERR no such key".into()) };
                if name == "RENAMENX" && ks.contains_key(dst) {
                    ks.insert(src.to_vec(), e);
                    return Ok(());
                }
                ks.insert(dst.to_vec(), e);
                let shard_cnt = self.shard_cnt(1);
                self.journal(&mut sh, db, encode::J_COMMAND, 0, shard_cnt, args, cap);
                Ok(())
            }
            Some(Shape::Global) => {
                let all = name == "FLUSHALL";
                let txid = self.txid();
                let shard_cnt = self.shard_cnt(self.shards.len());
                // A global transaction: every shard is locked while it runs.
                let mut guards: Vec<MutexGuard<'_, Shard>> = self.shards.iter().map(|s| s.lock()).collect();
                for sh in guards.iter_mut() {
                    self.claim_all(sh, if all { None } else { Some(db) });
                    if all {
                        sh.dbs.clear();
                    } else {
                        sh.dbs.remove(&db);
                    }
                    self.journal(sh, db, encode::J_COMMAND, txid, shard_cnt, &[name.as_bytes()], cap);
                }
                Ok(())
            }
        }
    }

    /// Active expiry: delete every key whose TTL passed and journal it.
    pub fn expire_now(&self) {
        let now = now_ms();
        for s in &self.shards {
            let mut sh = s.lock();
            let due: Vec<(u32, Vec<u8>)> = sh
                .dbs
                .iter()
                .flat_map(|(db, ks)| ks.iter().filter(|(_, e)| e.is_expired(now)).map(move |(k, _)| (*db, k.clone())))
                .collect();
            for (db, key) in due {
                self.expire_if_due(&mut sh, db, &key, now, &mut None);
            }
        }
    }

    /// Lazy/active expiry of one key: delete it and journal `DEL key` (txid 0), as opcode
    /// EXPIRED before v1.38.
    fn expire_if_due(&self, sh: &mut Shard, db: u32, key: &[u8], now: u64, cap: &mut Option<&mut PreparedJournal>) {
        if !sh.dbs.get(&db).and_then(|ks| ks.get(key)).is_some_and(|e| e.is_expired(now)) {
            return;
        }
        self.touch(sh, db, key);
        if let Some(ks) = sh.dbs.get_mut(&db) {
            ks.remove(key);
        }
        let op = match self.cfg.dialect {
            Dialect::V1_34 | Dialect::V1_36 => encode::J_EXPIRED,
            Dialect::V1_40 => encode::J_COMMAND,
        };
        self.journal(sh, db, op, 0, 1, &[b"DEL".as_slice(), key], cap);
    }

    /// Serialize-before-mutate: a key some flow has not serialized yet is written now, as it
    /// is before the change; an open chunked entry of the key is finished first.
    pub(super) fn touch(&self, sh: &mut Shard, db: u32, key: &[u8]) {
        let Shard { dbs, feeds, pre, stats, .. } = sh;
        *pre = None;
        *stats = None;
        let now = now_ms();
        for f in feeds.iter_mut() {
            let Stage::Snapshot(tr) = &mut f.stage else { continue };
            if tr.claim(db, key) {
                if let Some(e) = dbs.get(&db).and_then(|ks| ks.get(key)).filter(|e| !e.is_expired(now)) {
                    f.ser.entry(db, key, e, true);
                }
            }
            f.ser.complete_key(db, key);
            f.drain();
        }
    }

    /// FLUSHDB/FLUSHALL during a snapshot: every pending key of the scope is serialized first.
    fn claim_all(&self, sh: &mut Shard, db: Option<u32>) {
        let Shard { dbs, feeds, pre, stats, .. } = sh;
        *pre = None;
        *stats = None;
        let now = now_ms();
        for f in feeds.iter_mut() {
            let Stage::Snapshot(tr) = &mut f.stage else { continue };
            for (d, k) in tr.claim_db(db) {
                if let Some(e) = dbs.get(&d).and_then(|ks| ks.get(&k)).filter(|e| !e.is_expired(now)) {
                    f.ser.entry(d, &k, e, true);
                }
                f.ser.complete_key(d, &k);
            }
            f.drain();
        }
    }

    /// Append a record to the shard's journal: next LSN, ring buffer, every attached flow.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn journal<T: AsRef<[u8]>>(
        &self,
        sh: &mut Shard,
        db: u32,
        op: u64,
        txid: u64,
        shard_cnt: u64,
        args: &[T],
        cap: &mut Option<&mut PreparedJournal>,
    ) {
        if let Some(p) = cap.as_deref_mut() {
            let part = &mut p.shards[sh.index];
            part.bytes.extend_from_slice(&encode::journal_record(db, op, txid, shard_cnt, args));
            part.ends.push(part.bytes.len());
            return;
        }
        self.note_forward(db, args);
        if !self.journal_on.load(Ordering::SeqCst) {
            return;
        }
        let lsn = sh.next_lsn;
        sh.next_lsn += 1;
        let rec = Arc::new(encode::journal_record(db, op, txid, shard_cnt, args));
        sh.ring.push_back((lsn, rec.clone()));
        while sh.ring.len() > self.cfg.backlog_len {
            sh.ring.pop_front();
        }
        for f in sh.feeds.iter_mut() {
            f.record(lsn, &rec, self.cfg.lsn_marker_period);
        }
    }

    // ---- snapshot ----------------------------------------------------------------------------

    pub(super) fn ser_opts(&self) -> SerOpts {
        SerOpts {
            compression: self.cfg.compression,
            tagged: self.cfg.tagged(),
            chunk_size: self.cfg.chunk_size,
            two_open: self.cfg.two_open_entries,
        }
    }

    /// AUX fields in Dragonfly's order; `shard-count` and `table-mem` on flow 0 only.
    pub(super) fn aux(&self, flow: usize, sh: &Shard) -> Vec<(&'static str, Vec<u8>)> {
        let used: usize = sh.dbs.values().map(|ks| ks.len() * 64).sum::<usize>() + 1_000_000;
        let mut aux = vec![
            ("redis-ver", b"6.2.11".to_vec()),
            ("df-ver", self.cfg.dialect.version().as_bytes().to_vec()),
            ("redis-bits", b"64".to_vec()),
            ("ctime", (now_ms() / 1000).to_string().into_bytes()),
            ("used-mem", (used * self.cfg.shards).to_string().into_bytes()),
            ("aof-preamble", b"0".to_vec()),
        ];
        if flow == 0 {
            aux.push(("shard-count", self.cfg.shards.to_string().into_bytes()));
            aux.push(("table-mem", (used / 2).to_string().into_bytes()));
        }
        aux.push(("shard-id", flow.to_string().into_bytes()));
        aux
    }

    /// The shard's pre-encoded body, encoded now if there is none or the data changed since.
    pub(super) fn pre_encoded(&self, sh: &mut Shard) -> Arc<Vec<u8>> {
        if let Some(b) = &sh.pre {
            return b.clone();
        }
        let body = Arc::new(snap::encode_body(self.ser_opts(), &sh.dbs, now_ms()));
        sh.pre = Some(body.clone());
        body
    }

    /// Encode every shard's body now (see [`Config::pre_encode`]); returns their total size.
    pub fn pre_encode(&self) -> u64 {
        // The INFO figures too, so that a replica's INFO at start costs nothing either.
        self.keyspace_stats();
        (0..self.shards.len()).map(|i| self.pre_encoded(&mut self.shard(i)).len() as u64).sum()
    }

    /// One step of flow `flow`'s snapshot, run by its writer thread: serialize until a flush
    /// produced bytes, the pause point, or the end (FULLSYNC_END). A pre-encoded snapshot
    /// instead returns the next slice of its body for the writer to send as it is (the
    /// pipe is empty then: nothing else is pushed while the body is out).
    pub fn snapshot_step(&self, sid: u32, flow: usize, pipe: &Arc<Pipe>) -> Option<(Arc<Vec<u8>>, Range<usize>)> {
        let mut sh = self.shard(flow);
        let now = now_ms();
        let Shard { dbs, feeds, .. } = &mut *sh;
        let Some(f) = feeds.iter_mut().find(|f| f.session == sid && Arc::ptr_eq(&f.pipe, pipe)) else {
            pipe.update(|st| st.snapshot_work = false);
            return None;
        };
        let max_open = if self.cfg.two_open_entries { 2 } else { 1 };
        let step = if let Stage::PreEncoded { body, pos } = &mut f.stage {
            if *pos < body.len() {
                let range = *pos..(*pos + PRE_ENCODED_SLICE).min(body.len());
                *pos = range.end;
                let len = range.len() as u64;
                pipe.update(|st| st.enqueued += len);
                return Some((body.clone(), range));
            }
            // Held journal blobs, then FULLSYNC_END.
            f.ser.fullsync_end();
            f.stage = Stage::PostCut;
            Step::Done
        } else {
            loop {
                let Stage::Snapshot(tr) = &mut f.stage else { break Step::Done };
                let paused = self.cfg.pause_snapshot_after.is_some_and(|n| tr.entries >= n && !self.resumed.load(Ordering::SeqCst));
                if paused {
                    f.ser.flush();
                    break Step::Paused;
                }
                let open = f.ser.open_entries();
                if open >= max_open || (open > 0 && tr.is_done()) {
                    f.ser.advance();
                } else if let Some((db, key)) = tr.next_key() {
                    if let Some(e) = dbs.get(&db).and_then(|ks| ks.get(&key)).filter(|e| !e.is_expired(now)) {
                        f.ser.entry(db, &key, e, false);
                        tr.entries += 1;
                    }
                } else {
                    f.ser.fullsync_end();
                    f.stage = Stage::PostCut;
                    break Step::Done;
                }
                if f.ser.has_ready() {
                    break Step::Progress;
                }
            }
        };
        f.drain();
        match step {
            Step::Progress => None,
            Step::Paused => {
                pipe.update(|st| {
                    // Checked under the pipe lock so a concurrent resume_snapshot() is not lost.
                    if !self.resumed.load(Ordering::SeqCst) {
                        st.paused = true;
                    }
                });
                drop(sh);
                self.progress.bump();
                None
            }
            Step::Done => {
                pipe.update(|st| {
                    st.snapshot_work = false;
                    st.snapshot_done = true;
                    st.fse_at = Some(st.enqueued);
                });
                drop(sh);
                self.progress.bump();
                None
            }
        }
    }

    pub fn resume_snapshot(&self) {
        self.resumed.store(true, Ordering::SeqCst);
        for s in &self.shards {
            for f in &s.lock().feeds {
                f.pipe.update(|st| st.paused = false);
            }
        }
    }

    pub fn release_startstable(&self) {
        self.startstable_released.store(true, Ordering::SeqCst);
        self.progress.bump();
    }
}

/// A journal encoded before the clock starts ([`Core::prepare_journal`]): per shard, the
/// SELECT+COMMAND records back to back, without LSNs (those are given when the records are
/// released, so live writes can interleave).
#[derive(Debug, Default)]
pub struct PreparedJournal {
    shards: Vec<PreparedShard>,
}

#[derive(Debug, Default)]
struct PreparedShard {
    bytes: Vec<u8>,
    /// End offset in `bytes` of each record.
    ends: Vec<usize>,
}

impl PreparedJournal {
    /// Records over all shards.
    pub fn records(&self) -> u64 {
        self.shards.iter().map(|s| s.ends.len() as u64).sum()
    }
    /// Encoded bytes over all shards (without LSN markers).
    pub fn bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.bytes.len() as u64).sum()
    }
    pub fn shard_records(&self, shard: usize) -> usize {
        self.shards[shard].ends.len()
    }
    /// The shard's records as they go on its flow (LSN markers are added when released).
    pub fn shard_bytes(&self, shard: usize) -> &[u8] {
        &self.shards[shard].bytes
    }
}

/// What [`Core::release_journal`] sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Released {
    pub records: u64,
    pub bytes: u64,
    /// From the start to the last chunk handed to the flows.
    pub secs: f64,
}

impl Core {
    /// Apply `ops` (commands of db `db`) to the data model now, as [`Core::write`] would,
    /// and encode their journal records per shard (cross-shard MSET/DEL split per shard with
    /// one txid, exactly as the live path) without sending them or consuming an LSN.
    pub fn prepare_journal<I, A, B>(&self, db: u32, ops: I) -> Result<PreparedJournal, String>
    where
        I: IntoIterator<Item = A>,
        A: AsRef<[B]>,
        B: AsRef<[u8]>,
    {
        let mut p = PreparedJournal { shards: (0..self.shards.len()).map(|_| PreparedShard::default()).collect() };
        for (i, op) in ops.into_iter().enumerate() {
            let args: Vec<&[u8]> = op.as_ref().iter().map(|a| a.as_ref()).collect();
            let mut cap = Some(&mut p);
            self.write_to(db, &args, &mut cap).map_err(|e| format!("prepared op {i}: {e}"))?;
        }
        Ok(p)
    }

    /// Hand shard `i`'s prepared records `from..to` to its flows: consecutive LSNs from the
    /// shard's next LSN, an LSN marker after them when the marker period passed (as the live
    /// path does after a record), straight to the socket writer in stable sync.
    fn release_part(&self, i: usize, part: &PreparedShard, from: usize, to: usize) -> u64 {
        if from >= to {
            return 0;
        }
        let mut sh = self.shard(i);
        if !self.journal_on.load(Ordering::SeqCst) {
            return 0;
        }
        let lo = if from == 0 { 0 } else { part.ends[from - 1] };
        let first = sh.next_lsn;
        sh.next_lsn += (to - from) as u64;
        let last = sh.next_lsn - 1;
        // Released records are not kept for a partial resume: a replica that asks for an LSN
        // before them gets a full sync (as after a backlog overflow).
        sh.ring.clear();
        let period = self.cfg.lsn_marker_period;
        for f in sh.feeds.iter_mut() {
            if matches!(f.stage, Stage::Stable) {
                f.pipe.push(&part.bytes[lo..part.ends[to - 1]]);
                if f.last_mark.is_none_or(|t| t.elapsed() > period) {
                    let mut m = Vec::with_capacity(12);
                    encode::lsn_marker(&mut m, last);
                    f.pipe.push(&m);
                    f.last_mark = Some(Instant::now());
                }
            } else {
                let mut start = lo;
                for (k, &end) in part.ends[from..to].iter().enumerate() {
                    f.record(first + k as u64, &part.bytes[start..end], period);
                    start = end;
                }
            }
        }
        (part.ends[to - 1] - lo) as u64
    }

    /// Stream `prep` on every flow, paced to `rate` records/s in total: every `tick`, the
    /// records due by then (each shard in proportion to its share) are handed to the flows
    /// in one piece. Returns when all are out (or the emulator stops). Costs a few lock
    /// and copy operations per tick, nothing per record.
    pub fn release_journal(&self, prep: &PreparedJournal, rate: u64, tick: Duration) -> Released {
        let total = prep.records();
        let mut sent = vec![0usize; prep.shards.len()];
        let mut out = Released::default();
        let start = Instant::now();
        if total == 0 || rate == 0 {
            return out;
        }
        loop {
            let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
            for (i, part) in prep.shards.iter().enumerate() {
                let n = part.ends.len() as u64;
                let to = if due >= total { n } else { (due as u128 * n as u128 / total as u128) as u64 } as usize;
                if to > sent[i] {
                    out.bytes += self.release_part(i, part, sent[i], to);
                    out.records += (to - sent[i]) as u64;
                    sent[i] = to;
                }
            }
            if due >= total || self.stopping.load(Ordering::SeqCst) {
                break;
            }
            // Pacing, not synchronization: the releaser is a rate limiter.
            std::thread::sleep(tick);
        }
        out.secs = start.elapsed().as_secs_f64();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_land_on_the_shards_a_real_master_put_them_on() {
        // From the v1.40.1-default capture (3 shards).
        let core = Core::new(Config { shards: 3, ..Config::default() });
        for (key, shard) in
            [("bulk:001911", 0), ("zset:big", 0), ("hash:big", 1), ("cms:1", 1), ("stream:big", 2), ("cf:1", 2)]
        {
            assert_eq!(core.shard_of(key.as_bytes()), shard, "{key}");
        }
    }
}
