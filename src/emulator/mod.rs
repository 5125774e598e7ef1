//! A Dragonfly-master emulator for tests, the demo and the benchmark (feature `emulator`).
//!
//! It speaks the master side of Dragonfly's replication protocol (protocol doc section 14):
//! the REPLCONF/DFLY handshake with Dragonfly's error strings, one flow per shard with a
//! point-in-time snapshot (every RDB type and encoding Dragonfly v1.40 emits, LZF/LZ4/zstd,
//! tagged chunks), inline journal blobs for writes made during the snapshot, the held-back
//! post-cut journal, JOURNAL_OFFSET/EOF/token at STARTSTABLE, the live journal with LSN
//! markers, partial resume from a ring buffer, ACK tracking, session teardown, back-pressure
//! timeouts and injectable faults.
//!
//! Layout: [`data`] (values), [`commands`] (write semantics and their journal forms),
//! [`encode`] and [`listpack`] (bytes), [`snapshot`] (one flow's full-sync writer), `engine`
//! (shards, write path, journal, snapshot steps), `sessions` (REPLCONF/DFLY session state),
//! `flow` (the socket writer of one flow), `server` (TCP, RESP, command dispatch), `reads`
//! (the read commands `df2redis check` uses), `hash` (XXH64 shard mapping), [`datasets`]
//! (generators); cluster mode: [`cluster`] (layout, slot sets, `CLUSTER` replies),
//! `cluster_node` (ownership check, layout pushes, `FLUSHSLOTS`, the scripted migration) and
//! [`migration`] (the commands a migration sends for a key).
//!
//! Cluster mode ([`Config::cluster`], docs/protocol/dragonfly-cluster.md): the node answers
//! `CLUSTER SHARDS|SLOTS|NODES|INFO|MYID|KEYSLOT|HELP` and `INFO cluster` as Dragonfly v1.40.1
//! does, refuses key commands outside its slots with `MOVED` (reads too), and db n≠0. Layouts
//! are pushed with [`Emulator::push_cluster_layout`] (Dragonfly's `DFLYCLUSTER CONFIG`, which
//! the emulator does not take over the wire); a migration is [`Emulator::migrate_slots_to`]
//! then [`Emulator::finalize_migration_to`] then a push of the final layout, with each step's
//! journal records as Dragonfly writes them. Layouts carry no replicas.
//!
//! Threads: `emu-listen` accepts; each connection gets `emu-conn-<n>`, which after `DFLY
//! FLOW` keeps reading ACKs and starts `emu-flow-<i>` to write the flow. All are joined by
//! [`Emulator::stop`] (or on drop). No async runtime: blocking sockets and condition variables.
//!
//! Where it is knowingly simpler than Dragonfly: a stalled write cancels the session in
//! stable sync too (Dragonfly: 1 MiB pending for 30 s); no PING records, no `WAIT`; `DFLY
//! SYNC` after PARTIAL flows is refused by v1.36 and v1.40 (v1.36 also records a violation,
//! since a real v1.35-v1.39 master would corrupt the stream), and STARTSTABLE without SYNC
//! by v1.34 (a violation too); v1.34 serializes a PARTIAL flow's backlog at `DFLY SYNC`
//! at once, where Dragonfly's fiber may yield between flushes (same records, other flush
//! boundaries);
//! snapshot order is per key, not per bucket; no `journal_omit_redundant_writes` LSN gaps.

pub mod cluster;
mod cluster_node;
pub mod commands;
pub mod data;
pub mod datasets;
pub mod encode;
mod engine;
mod flow;
mod hash;
pub mod listpack;
pub mod migration;
mod reads;
mod resp;
mod server;
mod sessions;
pub mod snapshot;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use engine::{PreparedJournal, Released};
pub use data::{Consumer, Entry, Group, Keyspace, Pending, Stream, StreamId, StreamRecord, Value};

/// Which Dragonfly release the emulator pretends to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// v1.34.2: as v1.36 on the wire, but its partial sync (protocol doc 8.3) still wants
    /// `DFLY SYNC`: PARTIAL flows then get an RDB header, one journal blob per record from
    /// the requested LSN, FULLSYNC_END and the live records as blobs, and STARTSTABLE (valid
    /// only after SYNC) the usual JOURNAL_OFFSET, EOF, token and journal.
    V1_34,
    /// v1.36.0: `*4` capa reply (version 4), no tagged chunks by default, expiry as opcode
    /// EXPIRED, `shard_cnt` = shards the transaction touched.
    V1_36,
    /// v1.40.1: `*5` capa reply with lineage (version 5), tagged chunks, SYNC after PARTIAL
    /// rejected, expiry as `DEL`, `shard_cnt` 1.
    V1_40,
}

impl Dialect {
    pub fn version(&self) -> &'static str {
        match self {
            Dialect::V1_34 => "df-v1.34.2",
            Dialect::V1_36 => "df-v1.36.0",
            Dialect::V1_40 => "df-v1.40.1",
        }
    }
}

/// Dragonfly's `--compression_mode` (also the `--compression` value of the emulator and bench
/// command lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// 0: nothing compressed.
    None,
    /// 1: LZF per string (0xC3), no blobs.
    Lzf,
    /// 3 (the default): flushed buffers as LZ4 frames (0xCA).
    Lz4,
    /// 2: flushed buffers as zstd frames (0xC9).
    Zstd,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Number of shards = flows.
    pub shards: usize,
    pub dialect: Dialect,
    pub compression: Compression,
    /// `None` = the dialect's default (v1.40 on, v1.36 off).
    pub tagged_chunks: Option<bool>,
    /// `--serialization_max_chunk_size`: big entries are cut at element boundaries past it,
    /// and the snapshot buffer is flushed when it reaches it.
    pub chunk_size: usize,
    /// Keep two big entries open at once and alternate their chunks (with other entries in
    /// between), which the source allows and the decoder supports.
    pub two_open_entries: bool,
    /// `requirepass`: every connection must AUTH first.
    pub password: Option<String>,
    /// An LSN marker follows a record when more than this passed since the last one.
    pub lsn_marker_period: Duration,
    /// A single flow-socket write blocked longer than this cancels the session.
    pub replication_timeout: Duration,
    /// Journal records kept per shard for partial resume.
    pub backlog_len: usize,
    /// Fault: write flow bytes in segments of this many bytes (TCP_NODELAY on).
    pub segment_size: Option<usize>,
    /// Fault: the eof token in the stream differs from the one in the FLOW reply.
    pub wrong_token: bool,
    /// Fault: close flow `.0` after `.1` bytes (this cancels the session).
    pub close_flow_after: Option<(usize, u64)>,
    /// Pause each flow's snapshot after this many entries until [`Emulator::resume_snapshot`].
    pub pause_snapshot_after: Option<usize>,
    /// Delay executing `DFLY STARTSTABLE` until [`Emulator::release_startstable`].
    pub hold_startstable: bool,
    /// Serve full syncs from pre-encoded bytes, so the emulator spends almost no CPU while a
    /// snapshot streams (as a real master's snapshot costs little next to the replica's work;
    /// the benchmark uses this). Each shard's body, everything between the AUX header and
    /// FULLSYNC_END with the configured compression and chunking, is encoded once by
    /// [`Emulator::pre_encode`] (call it after loading the data, before replicas connect) or,
    /// if the data changed since, at `DFLY SYNC`; every session then gets a fresh header,
    /// the body as it is, and FULLSYNC_END.
    ///
    /// The body is the point-in-time state at `DFLY SYNC` (any change to a shard discards
    /// its body, so a stale one is never sent). Writes during such a snapshot are correct:
    /// they are journaled as usual, but their inline journal blobs are held until the whole
    /// body is out and sent just before FULLSYNC_END, so every entry precedes every record
    /// (there is no serialize-before-mutate). `pause_snapshot_after` does not apply.
    pub pre_encode: bool,
    /// Serve TLS only, with this certificate (as a Dragonfly master with `--tls`).
    pub tls: Option<TlsServerFiles>,
    /// `--cluster_mode=yes` with this node id and initial layout; `None` = not a cluster node.
    pub cluster: Option<cluster::ClusterOptions>,
}

/// The emulator's TLS files (PEM).
#[derive(Clone, Debug)]
pub struct TlsServerFiles {
    /// The server's certificate (chain) and its private key (`--tls_cert_file`,
    /// `--tls_key_file`).
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// Require every client to present a certificate signed by this CA, as a Dragonfly master
    /// started with `--tls_ca_cert_file` does.
    pub client_ca: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            shards: 4,
            dialect: Dialect::V1_40,
            compression: Compression::Lz4,
            tagged_chunks: None,
            chunk_size: 64 * 1024,
            two_open_entries: false,
            password: None,
            lsn_marker_period: Duration::from_secs(3),
            replication_timeout: Duration::from_secs(30),
            backlog_len: 8192,
            segment_size: None,
            wrong_token: false,
            close_flow_after: None,
            pause_snapshot_after: None,
            hold_startstable: false,
            pre_encode: false,
            tls: None,
            cluster: None,
        }
    }
}

impl Config {
    pub fn tagged(&self) -> bool {
        self.tagged_chunks.unwrap_or(self.dialect == Dialect::V1_40)
    }
}

/// A running emulator. Dropping it stops it.
pub struct Emulator {
    core: Arc<engine::Core>,
    server: Option<server::Server>,
}

impl Emulator {
    /// Listen on 127.0.0.1 (an ephemeral port) and serve in background threads.
    pub fn start(cfg: Config) -> std::io::Result<Emulator> {
        Self::start_on(cfg, 0)
    }

    /// As [`Emulator::start`], on a given port (0 = ephemeral).
    pub fn start_on(cfg: Config, port: u16) -> std::io::Result<Emulator> {
        if cfg.shards == 0 || cfg.shards > 1024 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "shards must be 1..=1024"));
        }
        let core = Arc::new(engine::Core::new(cfg));
        let server = server::Server::start(core.clone(), port)?;
        Ok(Emulator { core, server: Some(server) })
    }

    pub fn config(&self) -> &Config {
        &self.core.cfg
    }
    pub fn addr(&self) -> SocketAddr {
        self.server.as_ref().expect("running").addr()
    }
    pub fn master_replid(&self) -> String {
        self.core.replid.clone()
    }
    /// Load data directly (no journal), e.g. a dataset before any replica connects.
    pub fn load(&self, db: u32, key: &[u8], entry: Entry) {
        self.core.load(db, key, entry)
    }
    /// Encode every shard's full-sync body now, so that later `DFLY SYNC`s stream it without
    /// serializing (effective with [`Config::pre_encode`]; see there). Call it after loading
    /// the data. Returns the bodies' total size in bytes.
    pub fn pre_encode(&self) -> u64 {
        self.core.pre_encode()
    }
    /// Execute a client write as Dragonfly would: route to shards, split multi-key commands,
    /// journal.
    pub fn write(&self, db: u32, args: &[&[u8]]) -> Result<(), String> {
        self.core.write(db, args)
    }
    /// Run active expiry now (journals `DEL` for each due key).
    /// Apply `ops` (commands of db `db`) to the data model now and pre-encode their journal
    /// records per shard, without sending them or consuming LSNs; see [`Emulator::release_journal`].
    /// `data()` already shows their effect.
    pub fn prepare_journal<I, A, B>(&self, db: u32, ops: I) -> Result<PreparedJournal, String>
    where
        I: IntoIterator<Item = A>,
        A: AsRef<[B]>,
        B: AsRef<[u8]>,
    {
        self.core.prepare_journal(db, ops)
    }

    /// Stream a prepared journal on the flows of the current session, paced to `rate`
    /// records/s in total in chunks every `tick` (consecutive LSNs from each shard's current
    /// one, LSN markers as the live path writes them). Blocks until everything is out; live
    /// [`Emulator::write`]s from other threads interleave between chunks.
    pub fn release_journal(&self, prep: &PreparedJournal, rate: u64, tick: Duration) -> Released {
        self.core.release_journal(prep, rate, tick)
    }

    pub fn expire_now(&self) {
        self.core.expire_now()
    }
    /// The whole dataset (all shards merged, expired keys dropped).
    pub fn data(&self) -> BTreeMap<u32, BTreeMap<Vec<u8>, Entry>> {
        self.core.data()
    }
    /// The shard a key lives on (XXH64 with Dragonfly's seed, modulo the shard count).
    pub fn shard_of(&self, key: &[u8]) -> usize {
        self.core.shard_of(key)
    }
    /// Per-shard next LSN (as `DFLY REPLICAOFFSET` answers).
    pub fn lsns(&self) -> Vec<u64> {
        self.core.lsns()
    }
    /// Last `REPLCONF ACK` per flow of the latest session; 0 when none yet.
    pub fn acked(&self) -> Vec<u64> {
        self.core.acked()
    }
    /// Block until `acked() == lsns()` for every flow of the latest session, or the timeout.
    pub fn wait_acked_all(&self, timeout: Duration) -> bool {
        self.core.wait_acked_all(timeout)
    }
    /// Block until every flow of the latest session has been sent FULLSYNC_END.
    pub fn wait_fullsync_end(&self, timeout: Duration) -> bool {
        self.core.wait_fullsync_end(timeout)
    }
    /// Block until every flow of the latest session is paused at `pause_snapshot_after` (or
    /// finished its snapshot before reaching it): writes made now land mid-snapshot.
    pub fn wait_snapshot_paused(&self, timeout: Duration) -> bool {
        self.core.wait_snapshot_paused(timeout)
    }
    pub fn resume_snapshot(&self) {
        self.core.resume_snapshot()
    }
    pub fn release_startstable(&self) {
        self.core.release_startstable()
    }
    /// Per flow connection of the latest session: `Some(true)` if the replica closed it
    /// cleanly (EOF), `Some(false)` on reset/error, `None` while open.
    pub fn flow_closed_cleanly(&self) -> Vec<Option<bool>> {
        self.core.flow_closed_cleanly()
    }
    /// The main connection of the latest session: `Some(true)` if the replica closed it
    /// cleanly (EOF), `Some(false)` on reset/error, `None` while open.
    pub fn main_closed_cleanly(&self) -> Option<bool> {
        self.core.main_closed_cleanly()
    }
    /// Block until all connections of the latest session are closed.
    pub fn wait_session_closed(&self, timeout: Duration) -> bool {
        self.core.wait_session_closed(timeout)
    }
    /// Fault: cut one flow connection of the latest session (the session is cancelled).
    pub fn drop_flow(&self, flow: usize) -> bool {
        self.core.drop_flow(flow)
    }
    /// Longest single blocked write to a flow socket so far, in ms.
    pub fn max_stall_ms(&self) -> u64 {
        self.core.max_stall_ms()
    }
    /// Protocol misuse the emulator detected. Tests assert it is empty.
    pub fn violations(&self) -> Vec<String> {
        self.core.violations()
    }
    /// Sessions created so far (`SYNC<k>` numbers handed out).
    pub fn sessions_created(&self) -> u32 {
        self.core.sessions_created()
    }
    /// Cluster mode: this node's id (`CLUSTER MYID`); `None` outside cluster mode.
    pub fn cluster_id(&self) -> Option<String> {
        self.core.cluster_state().map(|st| st.me.clone())
    }
    /// Cluster mode: the layout last pushed (what `CLUSTER SHARDS` reports).
    pub fn cluster_layout(&self) -> Vec<cluster::ShardInfo> {
        self.core.cluster_state().map(|st| st.layout.clone()).unwrap_or_default()
    }
    /// Cluster mode: the slots this node serves now (finished migrations included).
    pub fn owned_slots(&self) -> Vec<cluster::SlotRange> {
        self.core.cluster_state().map(|st| st.mine.ranges()).unwrap_or_default()
    }
    /// Push a layout as a controller's `DFLYCLUSTER CONFIG` does: migrations it lists start
    /// (waiting for [`Emulator::migrate_slots_to`]), finished ones it no longer lists end, and
    /// the slots this node no longer serves are deleted with a `DFLYCLUSTER FLUSHSLOTS` record
    /// on every shard's journal. Errors outside cluster mode.
    pub fn push_cluster_layout(&self, layout: Vec<cluster::ShardInfo>) -> Result<(), String> {
        self.core.push_layout(layout)
    }
    /// Copy phase of the migration this node's layout lists to `target` (whose layout must
    /// list it as incoming): the keys of the slots are executed on `target` as Dragonfly's
    /// migration commands (so journaled there), and later writes to those slots here are
    /// forwarded. Returns the number of keys copied.
    pub fn migrate_slots_to(&self, target: &Emulator) -> Result<usize, String> {
        self.core.migrate_to(&target.core)
    }
    /// Finalize that migration: `target` serves the slots, this node answers `MOVED` for them
    /// but keeps their keys until a layout without the migration is pushed. Journals nothing.
    pub fn finalize_migration_to(&self, target: &Emulator) -> Result<(), String> {
        self.core.finalize_to(&target.core)
    }
    /// Close the listener and all connections, join every thread.
    pub fn stop(mut self) {
        self.shutdown();
    }
    fn shutdown(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop(&self.core);
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown();
    }
}
