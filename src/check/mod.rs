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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::config::Endpoint;

pub use report::{Category, Report};

/// Keys per batch (one pipeline per round and side).
const BATCH: usize = 256;

/// What to check and how.
#[derive(Debug, Clone)]
pub struct Options {
    pub source: Endpoint,
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

/// Connect and check. `Err` when nothing could be checked (a usage error, a side
/// unreachable); a failure during the passes ends the check with the report so far, its
/// `error` set.
pub fn run(opts: &Options) -> Result<Report, CheckError> {
    let started = Instant::now();
    let mut src = side::Side::connect("source", std::slice::from_ref(&opts.source.addr), opts.source.auth(), opts.source.tls())?;
    let mut tgt = side::Side::connect("target", &opts.target.seeds, opts.target.auth(), opts.target.tls())?;
    let mut report = Report::new(opts.source.addr.clone(), opts.target.seeds.join(","), opts.sample, opts.ttl_tolerance_ms, opts.max_listed);
    if tgt.is_cluster() {
        report.target_kind = "cluster";
    }
    let src_dbs = scan::keyspace(&mut src)?;
    let tgt_dbs = scan::keyspace(&mut tgt)?;
    if tgt.is_cluster() {
        let unmapped: Vec<String> =
            src_dbs.iter().filter(|(&db, _)| target_db_of(&opts.db_map, db) != 0).map(|(db, n)| format!("db {db} ({n} keys)")).collect();
        if !unmapped.is_empty() {
            return Err(CheckError::Usage(format!(
                "the target is a Redis Cluster (db 0 only) and the source holds keys in {}: give the mapping replicate used, e.g. --db-map {}",
                unmapped.join(", "),
                src_dbs.keys().map(|d| format!("{d}:0")).collect::<Vec<_>>().join(",")
            )));
        }
    }
    log::info!(
        "check: source {} (dbs {:?}) against {} target {} (dbs {:?}){}",
        opts.source.addr,
        src_dbs,
        report.target_kind,
        report.target,
        tgt_dbs,
        opts.sample.map_or(String::new(), |n| format!(", a sample of about {n} keys per side"))
    );
    let pace = pace::Pace::new(opts.max_keys_per_s);
    let batch = pace.batch(BATCH);
    let outcome = {
        let mut checker = compare::Checker::new(&mut src, &mut tgt, &mut report, pace, opts.ttl_tolerance_ms, opts.progress_every);
        passes(&mut checker, opts, &src_dbs, &tgt_dbs, batch)
    };
    if let Err(e) = outcome {
        report.error = Some(e.to_string());
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

fn passes(
    c: &mut compare::Checker<'_>,
    opts: &Options,
    src_dbs: &BTreeMap<u32, u64>,
    tgt_dbs: &BTreeMap<u32, u64>,
    batch: usize,
) -> Result<(), CheckError> {
    let limits = |counts: &BTreeMap<u32, u64>| opts.sample.map(|n| scan::shares(n, counts));
    let src_limits = limits(src_dbs);
    for &sdb in src_dbs.keys() {
        let tdb = target_db_of(&opts.db_map, sdb);
        c.report.source_db(sdb).target_db = tdb;
        let limit = src_limits.as_ref().and_then(|l| l.get(&sdb).copied());
        let mut walk = scan::Scanner::new(sdb);
        let mut done = 0u64;
        while let Some(keys) = walk.next_page(c.src, batch)? {
            let keys = cut(keys, limit, &mut done);
            for part in keys.chunks(batch) {
                c.source_batch(sdb, tdb, part)?;
            }
            if limit.is_some_and(|l| done >= l) {
                break;
            }
        }
    }
    let tgt_limits = limits(tgt_dbs);
    for &tdb in tgt_dbs.keys() {
        let sdbs = source_dbs_of(&opts.db_map, tdb);
        let limit = tgt_limits.as_ref().and_then(|l| l.get(&tdb).copied());
        let mut walk = scan::Scanner::new(tdb);
        let mut done = 0u64;
        c.report.target_db(tdb);
        while let Some(keys) = walk.next_page(c.tgt, batch)? {
            let keys = cut(keys, limit, &mut done);
            for part in keys.chunks(batch) {
                c.target_batch(tdb, &sdbs, part)?;
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
