//! `df2redis check`: prove that a target holds what the source holds.
//!
//! Two passes, both pipelined and paced:
//! 1. **Source pass.** Every source db with keys (`INFO KEYSPACE`) is walked with `SCAN`; each
//!    key is compared with its copy in the target db it maps to (`--db-map`, as `replicate`
//!    uses it): type, TTL (within a tolerance) and value ([`compare`], [`chunks`]). Keys not
//!    on the target are *missing*.
//! 2. **Target pass.** Every target db with keys (every master of a cluster) is walked and
//!    each key is looked up in the source dbs that map to that db; keys found in none are
//!    *extra*. `replicate`'s checkpoint markers (`df2redis:checkpoint:*`, db 0) are left out.
//!
//! With `--sample N`, about N keys of each side are checked, shared among the dbs by their key
//! counts, in SCAN order (which follows the servers' hash tables, so it is spread over the
//! key space). Memory stays bounded whatever the size of the keys: values are compared in
//! windows (see [`chunks`]).
//!
//! Several sources (`--source` repeated, or a Dragonfly cluster node whose masters are
//! discovered as `replicate` discovers them, [`cluster::plan`]) are compared with the target
//! as their union: see [`union`].
//!
//! A live source keeps changing while it is checked: keys that vanish or change type between
//! two reads are counted apart, not as differences. Writes not yet replicated when their key
//! is read do show up as differences; check a quiesced source (or after `migrate`) for a
//! verdict, or run it again to see whether they persist.

mod chunks;
mod compare;
mod conn;
mod pace;
pub mod report;
mod scan;
mod side;
mod union;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::config::Endpoint;
use crate::source::cluster::{self, Planned};

pub use report::{Category, Report, SourceInfo};

/// Keys per batch (one pipeline per round and side).
const BATCH: usize = 256;

/// What to check and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The credentials and TLS of every source (its address: the first source's).
    pub source: Endpoint,
    /// The sources given (`--source` repeated); empty: `source.addr`.
    pub sources: Vec<String>,
    /// A source in Dragonfly cluster mode brings every master of its cluster.
    pub discover: bool,
    pub target: Endpoint,
    /// Source db -> target db; unlisted dbs keep their number.
    pub db_map: BTreeMap<u32, u32>,
    /// Check about this many keys per side instead of all of them.
    pub sample: Option<u64>,
    /// TTLs further apart than this are a difference.
    pub ttl_tolerance_ms: u64,
    /// Keys read per second, over both sides (`None`: no limit).
    pub max_keys_per_s: Option<u64>,
    /// Keys listed per category and db in the report.
    pub max_listed: usize,
    pub progress_every: Duration,
}

/// Why a check could not give a verdict.
#[derive(Debug)]
pub enum CheckError {
    /// A usage or configuration error (exit code 2).
    Usage(String),
    /// A server failed or answered something unexpected (exit code 1).
    Failed(String),
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::Usage(m) | CheckError::Failed(m) => f.write_str(m),
        }
    }
}
impl std::error::Error for CheckError {}

/// Source db -> target db.
fn target_db_of(map: &BTreeMap<u32, u32>, db: u32) -> u32 {
    map.get(&db).copied().unwrap_or(db)
}

/// The source dbs whose keys go to target db `tdb`: those mapped to it, and `tdb` itself
/// unless it is mapped elsewhere.
fn source_dbs_of(map: &BTreeMap<u32, u32>, tdb: u32) -> Vec<u32> {
    let mut v: Vec<u32> = map.iter().filter(|(_, &t)| t == tdb).map(|(&s, _)| s).collect();
    if !map.contains_key(&tdb) {
        v.push(tdb);
    }
    v.sort_unstable();
    v
}

/// The masters to compare, as `replicate` would read them.
fn plan(opts: &Options) -> Result<Vec<Planned>, CheckError> {
    let given = if opts.sources.is_empty() { std::slice::from_ref(&opts.source.addr) } else { opts.sources.as_slice() };
    cluster::plan(&opts.source, given, opts.discover, false).map_err(|e| CheckError::Failed(format!("{e} (check --source)")))
}

/// Connect to every source: one given server as it always was (a Redis Cluster as a whole);
/// with several, or a Dragonfly cluster master, each server alone.
fn connect_sources(opts: &Options, plan: Vec<Planned>) -> Result<Vec<union::Source>, CheckError> {
    let alone = plan.len() > 1 || plan.iter().any(|p| p.slots.is_some());
    let mut out = Vec::with_capacity(plan.len());
    for p in plan {
        let (auth, tls) = (opts.source.auth(), opts.source.tls());
        let mut side = if alone { side::Side::one("source", &p.addr, auth, tls)? } else { side::Side::connect("source", std::slice::from_ref(&p.addr), auth, tls)? };
        let dbs = scan::keyspace(&mut side)?;
        out.push(union::Source { addr: p.addr, slots: p.slots, side, dbs });
    }
    Ok(out)
}

/// Connect and check. `Err` when nothing could be checked (a usage error, a side
/// unreachable); a failure during the passes ends the check with the report so far, its
/// `error` set.
pub fn run(opts: &Options) -> Result<Report, CheckError> {
    let started = Instant::now();
    let mut sources = connect_sources(opts, plan(opts)?)?;
    let mut tgt = side::Side::connect("target", &opts.target.seeds, opts.target.auth(), opts.target.tls())?;
    let infos = sources.iter().map(|s| SourceInfo { addr: s.addr.clone(), slots: s.slots.clone() }).collect();
    let mut report = Report::new(infos, opts.target.seeds.join(","), opts.sample, opts.ttl_tolerance_ms, opts.max_listed);
    if tgt.is_cluster() {
        report.target_kind = "cluster";
    }
    let mut src_dbs: BTreeMap<u32, u64> = BTreeMap::new();
    for s in &sources {
        for (&db, &n) in &s.dbs {
            *src_dbs.entry(db).or_insert(0) += n;
        }
    }
    let tgt_dbs = scan::keyspace(&mut tgt)?;
    if tgt.is_cluster() {
        let unmapped: Vec<String> =
            src_dbs.iter().filter(|(&db, _)| target_db_of(&opts.db_map, db) != 0).map(|(db, n)| format!("db {db} ({n} keys)")).collect();
        if !unmapped.is_empty() {
            return Err(CheckError::Usage(format!(
                "the target is a Redis Cluster (db 0 only) and the {} keys in {}: give the mapping replicate used, e.g. --db-map {}",
                if sources.len() > 1 { "sources hold" } else { "source holds" },
                unmapped.join(", "),
                src_dbs.keys().map(|d| format!("{d}:0")).collect::<Vec<_>>().join(",")
            )));
        }
    }
    let each: Vec<String> = sources
        .iter()
        .map(|s| format!("{} (dbs {:?}{})", s.addr, s.dbs, s.slots.as_ref().map_or(String::new(), |r| format!(", slots {r}"))))
        .collect();
    log::info!(
        "check: source {} against {} target {} (dbs {:?}){}",
        each.join(", "),
        report.target_kind,
        report.target,
        tgt_dbs,
        opts.sample.map_or(String::new(), |n| format!(", a sample of about {n} keys per side"))
    );
    let mut pace = pace::Pace::new(opts.max_keys_per_s);
    let batch = pace.batch(BATCH);
    let mut ticker = compare::Ticker::new(opts.progress_every);
    let outcome = {
        let mut u = union::Union {
            sources: &mut sources,
            tgt: &mut tgt,
            report: &mut report,
            pace: &mut pace,
            ticker: &mut ticker,
            ttl_tolerance_ms: opts.ttl_tolerance_ms,
            db_map: &opts.db_map,
        };
        passes(&mut u, opts, &tgt_dbs, batch)
    };
    if let Err(e) = outcome {
        report.error = Some(e.to_string());
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

fn passes(u: &mut union::Union<'_>, opts: &Options, tgt_dbs: &BTreeMap<u32, u64>, batch: usize) -> Result<(), CheckError> {
    // A sample is shared among every source's dbs by their key counts.
    let counts: BTreeMap<(usize, u32), u64> =
        u.sources.iter().enumerate().flat_map(|(i, s)| s.dbs.iter().map(move |(&db, &n)| ((i, db), n))).collect();
    let src_limits = opts.sample.map(|n| scan::shares(n, &counts));
    for i in 0..u.sources.len() {
        let dbs: Vec<u32> = u.sources[i].dbs.keys().copied().collect();
        for sdb in dbs {
            let tdb = target_db_of(&opts.db_map, sdb);
            u.report.source_db(i, sdb).target_db = tdb;
            let limit = src_limits.as_ref().and_then(|l| l.get(&(i, sdb)).copied());
            let mut walk = scan::Scanner::new(sdb);
            let mut done = 0u64;
            while let Some(keys) = walk.next_page(&mut u.sources[i].side, batch)? {
                let keys = cut(keys, limit, &mut done);
                for part in keys.chunks(batch) {
                    u.source_batch(i, sdb, tdb, part)?;
                }
                if limit.is_some_and(|l| done >= l) {
                    break;
                }
            }
        }
    }
    let tgt_limits = opts.sample.map(|n| scan::shares(n, tgt_dbs));
    for &tdb in tgt_dbs.keys() {
        let limit = tgt_limits.as_ref().and_then(|l| l.get(&tdb).copied());
        let mut walk = scan::Scanner::new(tdb);
        let mut done = 0u64;
        u.report.target_db(tdb);
        while let Some(keys) = walk.next_page(u.tgt, batch)? {
            let keys = cut(keys, limit, &mut done);
            for part in keys.chunks(batch) {
                u.target_batch(tdb, part)?;
            }
            if limit.is_some_and(|l| done >= l) {
                break;
            }
        }
    }
    Ok(())
}

/// Keep the keys of a page that fit under `limit` (sample mode), counting them in `done`.
fn cut(mut keys: Vec<Vec<u8>>, limit: Option<u64>, done: &mut u64) -> Vec<Vec<u8>> {
    if let Some(l) = limit {
        keys.truncate(l.saturating_sub(*done).min(usize::MAX as u64) as usize);
    }
    *done += keys.len() as u64;
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_mapping_both_ways() {
        let map = BTreeMap::from([(1, 0), (2, 0), (5, 3)]);
        assert_eq!(target_db_of(&map, 1), 0);
        assert_eq!(target_db_of(&map, 4), 4);
        assert_eq!(source_dbs_of(&map, 0), vec![0, 1, 2]);
        assert_eq!(source_dbs_of(&map, 3), vec![3, 5]);
        // db 5 is mapped away: nothing lands in target db 5.
        assert_eq!(source_dbs_of(&map, 5), Vec::<u32>::new());
        let mut done = 0;
        assert_eq!(cut(vec![vec![1], vec![2], vec![3]], Some(2), &mut done).len(), 2);
        assert_eq!(cut(vec![vec![4]], Some(2), &mut done).len(), 0);
        assert_eq!(cut(vec![vec![4]], None, &mut done).len(), 1);
    }
}
