//! The target side of a start, the same for every source: reach the target, learn what it is
//! (standalone or cluster, product, version, modules), decide what JSON documents become, and
//! open the writers' connections. What a start error means for the run (usage, retry, fatal)
//! is decided here too.

use super::shared::{Fault, Side};
use crate::config::{Config, JsonSetting};
use crate::replay::JsonPolicy;
use crate::source::SourceError;
use crate::target::server::Version;
use crate::target::{resp::Reply, Standalone, Target, TargetError};

#[derive(Debug)]
pub enum StartError {
    Usage(String),
    Failed(String, Fault),
    /// A transient failure to connect to this end, before the session had both ends.
    Unreachable(Side, String),
}

/// A connection to `side` failed: transient failures become [`StartError::Unreachable`], the
/// others (a refused password, a server that is not a Dragonfly master) stay as they are.
pub fn unreachable(side: Side, e: impl Into<StartError>) -> StartError {
    match e.into() {
        StartError::Failed(msg, Fault::Transient) => StartError::Unreachable(side, msg),
        other => other,
    }
}

/// Most start failures are the source or target not being there (yet): transient.
impl From<String> for StartError {
    fn from(e: String) -> Self {
        StartError::Failed(e, Fault::Transient)
    }
}

impl From<SourceError> for StartError {
    fn from(e: SourceError) -> Self {
        if e.is_not_dragonfly() {
            return StartError::Usage(e.0);
        }
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

/// A reachable target and what it can take.
pub struct PreparedTarget {
    /// The first writer connection (also used for the start's own queries).
    pub first: Target,
    pub json: JsonPolicy,
    pub cluster: bool,
    /// The Redis version the target speaks (its least capable master's): commands are written
    /// for it.
    pub version: Version,
    /// Which snapshot values go as RESTORE payloads, and the RDB version they declare.
    pub whole: crate::protocol::whole::Whole,
    pub rdb: u16,
}

/// Reach the target (the first seed that answers PING), then connect as a writer would and
/// ask every master what it is.
pub fn connect_target(cfg: &Config) -> Result<PreparedTarget, StartError> {
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
            (None, Some(e)) => return Err(unreachable(Side::Target, e)),
            (None, None) => return Err(StartError::Usage("no target address given (--target)".into())),
        }
    };
    match probe.query(&[b"PING"])? {
        Reply::Status(_) => {}
        other => return Err(format!("target {}: PING answered {other:?}", probe.addr()).into()),
    }
    drop(probe);
    let mut first =
        Target::connect(&cfg.target.seeds, cfg.target.auth(), cfg.target.tls()).map_err(|e| unreachable(Side::Target, e))?;
    let server = first.server_info()?;
    log::info!("target {}: {server}", cfg.target.seeds.join(","));
    if let Some(why) = server.unsupported() {
        return Err(StartError::Usage(why));
    }
    if !server.has_stream_meta() {
        log::warn!(
            "target speaks Redis {}: streams are written without their entries-added counter and max-deleted-id, \
             consumer groups without entries-read (counted as altered)",
            server.redis_compat
        );
    }
    let json = match cfg.json {
        JsonSetting::Fixed(p) => p,
        JsonSetting::Auto if server.has_module("ReJSON") => JsonPolicy::JsonSet,
        JsonSetting::Auto => JsonPolicy::Skip,
    };
    let why = match (cfg.json, server.has_module("ReJSON")) {
        (JsonSetting::Fixed(_), _) => " (--json)",
        (JsonSetting::Auto, true) => "",
        (JsonSetting::Auto, false) => " (no RedisJSON)",
    };
    log::info!("target: JSON documents will be {}{why}", if json == JsonPolicy::JsonSet { "written with JSON.SET" } else { "skipped" });
    let cluster = first.is_cluster();
    let whole = whole_values(cfg.restore, &server);
    Ok(PreparedTarget { first, json, cluster, version: server.redis_compat, whole, rdb: server.rdb_version() })
}

/// The writers' connections, `first` among them, each named as a writer. All are opened
/// before any thread starts: a failure here leaves nothing running.
pub fn writer_conns(cfg: &Config, mut first: Target, writers: usize) -> Result<Vec<Target>, StartError> {
    let mut conns = Vec::with_capacity(writers);
    first.name_writer(&cfg.name)?;
    conns.push(first);
    for _ in 1..writers {
        let mut t = Target::connect(&cfg.target.seeds, cfg.target.auth(), cfg.target.tls())?;
        t.name_writer(&cfg.name)?;
        conns.push(t);
    }
    Ok(conns)
}

/// Whether the target holds no key (then snapshot entries need no DEL first), logged.
pub fn is_fresh(target: &mut Target) -> Result<bool, StartError> {
    let fresh = target.is_empty()?;
    log::info!(
        "{}",
        if fresh {
            "the target holds no keys: snapshot entries are written without a DEL first"
        } else {
            "the target already holds keys: every snapshot entry replaces its key (DEL first)"
        }
    );
    Ok(fresh)
}

/// Which snapshot values go to the target as `RESTORE` payloads (`--restore`): the collection
/// types whose encoding the target's RDB version loads. Strings stay `SET`, which Redis takes
/// faster than the same strings as RESTOREs.
pub fn whole_values(restore: bool, server: &crate::target::server::ServerInfo) -> crate::protocol::whole::Whole {
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

/// Redis Cluster has only db 0: a source db that holds keys, passes the filter and is not
/// mapped to 0 is a usage error naming it, never merged in silence. `keyspace`: the source's
/// keys per db.
pub fn cluster_dbs(cfg: &Config, keyspace: &std::collections::BTreeMap<u32, u64>) -> Result<(), StartError> {
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
    Ok(())
}

/// Close the connections an earlier writer of this run left on the target, before anything is
/// read or written: its pipelines still queued there would otherwise apply after the markers
/// are read (or after a resync's flush).
pub fn close_stale_writers(target: &mut Target, name: &str) -> Result<(), StartError> {
    match target.close_stale_writers(name, false)? {
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
    Ok(())
}
