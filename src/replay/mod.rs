//! Decoded items to Redis commands: types, TTLs, Dragonfly-only rewrites and policies.
//!
//! [`Replayer`] turns each snapshot piece and journal record into zero or more [`Cmd`]s, in
//! order. It holds no connection: what it produces can go to a standalone Redis, a cluster, or
//! a test. What Redis cannot hold is handled by an explicit [`Policy`], counted by reason in
//! [`ReplayStats`] and logged once per key, never dropped in silence.

pub mod dump;
pub mod filter;
mod journal;
mod restore;
mod value;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use filter::{Filter, OnFlush};

use crate::protocol::cursor::show;
use crate::protocol::{Argv, JournalRecord, Limits, RecordKind, ValuePiece};
use crate::target::server::Version;

/// One command for the target, in the db it must run in.
#[derive(Debug, Clone, PartialEq)]
pub struct Cmd {
    pub db: u32,
    pub argv: Argv,
}

impl Cmd {
    pub fn new(db: u32, args: &[&[u8]]) -> Self {
        Cmd { db, argv: Argv::from_slices(args) }
    }
    /// The command's first key (argument 1), if it has arguments.
    pub fn key(&self) -> Option<&[u8]> {
        self.argv.get(1)
    }
    /// A short rendering for error messages: name, key and argument count.
    pub fn describe(&self) -> String {
        let name = self.argv.name_upper();
        if name == "AUTH" {
            return "AUTH (arguments not shown)".to_string();
        }
        match self.key() {
            Some(k) => format!("{name} {} (db {}, {} args)", show(k), self.db, self.argv.len() - 1),
            None => format!("{name} (db {})", self.db),
        }
    }
}

/// The altered-key reason for JSON written to RedisJSON with an integer beyond 64 bits, which
/// RedisJSON stores as a double (see [`crate::json::has_wide_integer`]). The document is
/// written: every other value in it is exact, and the count says how many keys lost digits.
pub const JSON_WIDE_INTEGER: &str = "JSON integer beyond 64 bits (RedisJSON stores it as a double)";

/// What to do with JSON documents (type 30 and JSON.* commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonPolicy {
    /// `JSON.SET key $ <doc>`: the target has RedisJSON.
    JsonSet,
    /// Skip the key (counted, logged once, and the target's old value under it removed): the
    /// target has no RedisJSON.
    Skip,
    /// As [`Skip`](Self::Skip), because `--json skip` asked for it (whatever the target has).
    SkipAsked,
}

impl JsonPolicy {
    /// The skip reasons of a document and of a `JSON.*` record; `None` when JSON is written.
    pub fn skip_reasons(self) -> Option<(&'static str, &'static str)> {
        match self {
            JsonPolicy::JsonSet => None,
            JsonPolicy::Skip => Some(("JSON document (target has no RedisJSON)", "JSON command (target has no RedisJSON)")),
            JsonPolicy::SkipAsked => Some(("JSON document (policy: skip)", "JSON command (policy: skip)")),
        }
    }
}

/// What to do with hashes/sets whose fields or members carry TTLs (types 31/32, HSETEX,
/// SADDEX). Redis before 7.4 has no field TTLs and no version has member TTLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberTtlPolicy {
    /// Write a plain hash/set; members already expired are left out, the others lose their TTL.
    DropTtl,
    /// Skip the key.
    Skip,
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub json: JsonPolicy,
    pub member_ttl: MemberTtlPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { json: JsonPolicy::Skip, member_ttl: MemberTtlPolicy::DropTtl }
    }
}

/// Where "now" comes from, for expiry decisions (keys or members already expired on arrival).
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    System,
    /// A fixed instant in Unix ms (tests replaying a capture as of its own time).
    Fixed(u64),
}

impl Clock {
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            Clock::Fixed(ms) => *ms,
        }
    }
}

/// The Redis version whose commands the target speaks (`redis_version`; Valkey keeps 7.2.4):
/// what is written depends on it. A replayer not told assumes 7.0, the oldest version whose
/// commands carry everything a Dragonfly stream holds.
pub const MODERN_TARGET: Version = Version(7, 0, 0);

/// Reasons counted as *altered* when the target is older than Redis 7.0.
pub(crate) const STREAM_META_NOT_KEPT: &str = "stream entries-added counter and max-deleted-id not kept (target before Redis 7.0)";
pub(crate) const ENTRIES_READ_NOT_KEPT: &str = "stream consumer group entries-read not kept (target before Redis 7.0)";

/// How many keys are named in the log per reason before the log goes quiet (counts go on).
const LOG_KEYS_PER_REASON: usize = 1000;

/// Counts of what could not be written as it was, by reason.
#[derive(Debug, Default, Clone)]
pub struct ReplayStats {
    /// Keys or records not written.
    pub skipped: BTreeMap<&'static str, u64>,
    /// Keys or records written in a changed form.
    pub altered: BTreeMap<&'static str, u64>,
    /// Snapshot keys whose TTL had passed when they arrived (not written, as Dragonfly does).
    pub expired_on_arrival: u64,
    /// Snapshot keys the filter left out (`--include`/`--exclude`/`--dbs`).
    pub filtered_keys: u64,
    /// Journal records the filter left out: none of their keys pass, or their db is not
    /// selected.
    pub filtered_records: u64,
    /// Journal records written without the keys the filter leaves out (`DEL`, `MSET` ...).
    pub split_records: u64,
    logged: HashMap<&'static str, HashSet<Vec<u8>>>,
}

impl ReplayStats {
    fn note(&mut self, skipped: bool, reason: &'static str, db: u32, key: &[u8]) {
        let map = if skipped { &mut self.skipped } else { &mut self.altered };
        *map.entry(reason).or_default() += 1;
        let seen = self.logged.entry(reason).or_default();
        if seen.len() < LOG_KEYS_PER_REASON && seen.insert(key.to_vec()) {
            let what = if skipped { "skipped" } else { "altered" };
            log::warn!("{what} key {} in db {db}: {reason}", show(key));
            if seen.len() == LOG_KEYS_PER_REASON {
                log::warn!("further keys {what} for \"{reason}\" are counted but not logged");
            }
        }
    }
    /// Add another replayer's counts (flows are replayed by separate replayers).
    pub fn merge(&mut self, o: &ReplayStats) {
        for (k, v) in &o.skipped {
            *self.skipped.entry(k).or_default() += v;
        }
        for (k, v) in &o.altered {
            *self.altered.entry(k).or_default() += v;
        }
        self.expired_on_arrival += o.expired_on_arrival;
        self.filtered_keys += o.filtered_keys;
        self.filtered_records += o.filtered_records;
        self.split_records += o.split_records;
    }
}

/// A failure to turn an item into commands (a damaged RESTORE payload, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayError(pub String);

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ReplayError {}

/// How a journal record must be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordClass {
    /// Its commands (possibly none) were appended to the output.
    Normal,
    /// A global command (FLUSHALL/FLUSHDB) that every flow carries with this txid: wait until
    /// every flow reaches it, then run [`Replayer::global_command`] once.
    Global { txid: u64 },
}

/// Per-entry decision for values that arrive in several pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Write,
    Skip,
}

pub struct Replayer {
    policy: Policy,
    clock: Clock,
    limits: Limits,
    stats: ReplayStats,
    /// Source db -> target db; unlisted dbs keep their number.
    db_map: BTreeMap<u32, u32>,
    /// Which keys and dbs are replicated; `None` when everything is.
    filter: Option<Arc<Filter>>,
    /// The target held no keys when the session started: a snapshot entry is then the first
    /// write of its key, and needs no `DEL` before it.
    fresh_target: bool,
    /// The target's Redis-compatible version ([`with_target_version`](Self::with_target_version)).
    target: Version,
    /// Decisions for entries whose first piece was seen and whose last was not.
    /// Keyed by the address of the entry's shared head (`Arc::as_ptr`), which is unique while
    /// the entry is open: the pieces of one key share one `Arc<EntryHead>`.
    open: HashMap<usize, Decision>,
    /// The target's RDB version: whole values of newer types are re-encoded to older forms.
    target_rdb: u16,
}


impl Replayer {
    pub fn new(policy: Policy, clock: Clock) -> Self {
        Replayer {
            policy,
            clock,
            limits: Limits::default(),
            stats: ReplayStats::default(),
            db_map: BTreeMap::new(),
            filter: None,
            fresh_target: false,
            target: MODERN_TARGET,
            open: HashMap::new(),
            target_rdb: u16::MAX,
        }
    }

    /// The target reads RDB version `rdb` (see [`dump::for_target`]).
    pub fn with_target_rdb(mut self, rdb: u16) -> Self {
        self.target_rdb = rdb;
        self
    }

    /// The target was empty when the session started. Snapshot entries then skip the `DEL`
    /// that makes them replace an existing value: per key, the master sends the entry before
    /// any journal record that touches it, and the one record written by another flow
    /// (PFMERGE's `SET dst`) overwrites by itself. `RESTORE` records still replace.
    pub fn with_fresh_target(mut self, fresh: bool) -> Self {
        self.fresh_target = fresh;
        self
    }

    /// Write commands for a target that speaks Redis `version`'s commands (its `redis_version`,
    /// the least of a cluster's masters). Before 7.0 a stream's entries-added counter and
    /// max-deleted-id and a group's entries-read have no command (nor place) in the target:
    /// they are left out and counted as altered; journal commands only 7.0 has are refused
    /// with an error naming the version.
    pub fn with_target_version(mut self, version: Version) -> Self {
        self.target = version;
        self
    }

    /// Whether the target is older than Redis 7.0: no stream metadata arguments, and none of
    /// 7.0's commands.
    fn target_before_7(&self) -> bool {
        self.target < MODERN_TARGET
    }

    /// Write source db N to target db `map[N]` (dbs not in the map keep their number).
    pub fn with_db_map(mut self, map: BTreeMap<u32, u32>) -> Self {
        self.db_map = map;
        self
    }

    /// Replicate only what `filter` passes, judged on the source dbs and keys (before the db
    /// mapping). An inactive filter costs nothing.
    pub fn with_filter(mut self, filter: Arc<Filter>) -> Self {
        self.filter = filter.is_active().then_some(filter);
        self
    }

    fn map_dbs(&self, cmds: &mut [Cmd]) {
        if !self.db_map.is_empty() {
            for c in cmds {
                if let Some(&d) = self.db_map.get(&c.db) {
                    c.db = d;
                }
            }
        }
    }

    pub fn stats(&self) -> &ReplayStats {
        &self.stats
    }

    /// Commands for one piece of a snapshot value, appended to `out`. A whole value's buffer
    /// ([`Piece::Encoded`](crate::protocol::Piece::Encoded)) may be taken: it becomes the
    /// RESTORE command, without a copy.
    pub fn value(&mut self, v: &mut ValuePiece, out: &mut Vec<Cmd>) {
        if let Some(f) = &self.filter {
            // Each piece is judged (a cheap test), so no per-key state is kept for the filter.
            if !f.passes(v.head.db, &v.head.key) {
                self.stats.filtered_keys += v.first as u64;
                return;
            }
        }
        let from = out.len();
        let replace = !self.fresh_target;
        value::piece(self, v, out, replace);
        self.map_dbs(&mut out[from..]);
    }

    /// Leave a snapshot value out, counted by `reason` (once per key, at its first piece).
    pub fn skip_value(&mut self, v: &ValuePiece, reason: &'static str) {
        *self.stats.skipped.entry(reason).or_default() += v.first as u64;
    }

    /// Commands for one journal record, appended to `out`.
    pub fn record(&mut self, r: &JournalRecord, out: &mut Vec<Cmd>) -> Result<RecordClass, ReplayError> {
        self.record_owned(r.clone(), out)
    }

    /// As [`record`](Self::record), taking the record: commands that pass through unchanged
    /// (most of them) move its arguments instead of copying them. Global commands are
    /// classified only; build their command with [`global_command`](Self::global_command)
    /// from the record before handing it over.
    pub fn record_owned(&mut self, mut r: JournalRecord, out: &mut Vec<Cmd>) -> Result<RecordClass, ReplayError> {
        if let (Some(f), false) = (&self.filter, r.kind == RecordKind::Ping) {
            match f.record(r.db, &r.argv).map_err(ReplayError)? {
                filter::Verdict::Keep => {}
                filter::Verdict::Drop => {
                    self.stats.filtered_records += 1;
                    return Ok(RecordClass::Normal);
                }
                filter::Verdict::Split(argv) => {
                    self.stats.split_records += 1;
                    r.argv = argv;
                }
            }
        }
        let from = out.len();
        let class = journal::record(self, &mut r, out)?;
        self.map_dbs(&mut out[from..]);
        if class != RecordClass::Normal && r.argv.name_upper() == "FLUSHDB" {
            let target = self.db_map.get(&r.db).copied().unwrap_or(r.db);
            // Source dbs the filter leaves out wrote nothing there.
            let selected = |db: u32| self.filter.as_ref().is_none_or(|f| f.db_passes(db));
            let sharing: Vec<u32> = self
                .db_map
                .iter()
                .filter(|&(&src, &dst)| dst == target && src != r.db && selected(src))
                .map(|(&src, _)| src)
                .collect();
            if !sharing.is_empty() {
                return Err(ReplayError(format!(
                    "FLUSHDB in source db {} cannot be replayed exactly: source dbs {sharing:?} are also mapped to target db \
                     {target} and would be flushed too (change db_map)",
                    r.db
                )));
            }
        }
        Ok(class)
    }

    /// The one command to run for a global record, once every flow reached it (db mapped).
    pub fn global_command(&self, r: &JournalRecord) -> Cmd {
        let db = self.db_map.get(&r.db).copied().unwrap_or(r.db);
        Cmd { db, argv: r.argv.clone() }
    }
}

#[cfg(test)]
mod tests;
