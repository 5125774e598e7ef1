//! The target against the union of several sources (consolidated masters, or the masters of
//! a Dragonfly cluster), whose keys the target holds together.
//!
//! Source pass: each source's keys are compared with the target as with one source, after one
//! more question: which other sources hold the key too (`EXISTS`, only in sources that may
//! hold it: a cluster master owning the key's slot, or any source whose slots are unknown). A
//! key held by an earlier source was compared when that source was walked and is skipped; a
//! key held by later sources is first compared with each of them (the same comparison as with
//! the target, [`Checker`]): when they differ it is a *conflict*, reported naming both, since
//! the target cannot match both and comparing it with one would hide that.
//!
//! Target pass: a target key must be in some source: in the master owning its slot when the
//! slots are known, otherwise in each source in turn until found.
//!
//! With one source nothing of this happens: its batches go straight to the [`Checker`], and
//! its findings read as they always did.

use std::collections::BTreeMap;

use crate::protocol::cursor::show;
use crate::source::cluster::SlotRanges;
use crate::target::resp::Reply;
use crate::target::slots::key_slot;

use super::compare::{type_name, Checker, Ticker};
use super::conn::{cmd, Args};
use super::pace::Pace;
use super::report::{Category, Report};
use super::side::Side;
use super::{source_dbs_of, CheckError};

/// One source of the check.
pub struct Source {
    pub addr: String,
    /// A Dragonfly cluster master: the slots it owns (it holds no other keys).
    pub slots: Option<SlotRanges>,
    pub side: Side,
    /// Keys per db (`INFO KEYSPACE`).
    pub dbs: BTreeMap<u32, u64>,
}

impl Source {
    /// Whether this source may hold `key`.
    fn may_hold(&self, key: &[u8]) -> bool {
        self.slots.as_ref().is_none_or(|s| s.contains(key_slot(key)))
    }
}

/// Everything a batch needs.
pub struct Union<'a> {
    pub sources: &'a mut [Source],
    pub tgt: &'a mut Side,
    pub report: &'a mut Report,
    pub pace: &'a mut Pace,
    pub ticker: &'a mut Ticker,
    pub ttl_tolerance_ms: u64,
    pub db_map: &'a BTreeMap<u32, u32>,
}

impl Union<'_> {
    /// Compare keys of db `sdb` of source `i` with their copies in target db `tdb`.
    pub fn source_batch(&mut self, i: usize, sdb: u32, tdb: u32, keys: &[Vec<u8>]) -> Result<(), CheckError> {
        if self.sources.len() == 1 {
            return self.compare_with_target(i, sdb, tdb, keys);
        }
        let holders = self.holders(i, tdb, keys)?;
        let mut with_later: BTreeMap<(usize, u32), Vec<Vec<u8>>> = BTreeMap::new();
        let mut todo: Vec<Vec<u8>> = Vec::with_capacity(keys.len());
        for (k, h) in keys.iter().zip(holders) {
            if h.iter().any(|&(j, _)| j < i) {
                self.report.source_db(i, sdb).in_earlier_source += 1;
                continue;
            }
            for at in h {
                with_later.entry(at).or_default().push(k.clone());
            }
            todo.push(k.clone());
        }
        // Key -> how it differs in a later source.
        let mut conflicts: BTreeMap<Vec<u8>, String> = BTreeMap::new();
        for ((j, db), group) in with_later {
            for (k, d) in self.compare_sources(i, sdb, j, db, &group)? {
                conflicts.entry(k).or_insert(d);
            }
        }
        if !conflicts.is_empty() {
            todo.retain(|k| !conflicts.contains_key(k));
            for (k, d) in conflicts {
                self.report.source_db(i, sdb).checked += 1;
                self.report.record(Category::Conflict, i, sdb, &k, d);
            }
        }
        self.compare_with_target(i, sdb, tdb, &todo)
    }

    fn compare_with_target(&mut self, i: usize, sdb: u32, tdb: u32, keys: &[Vec<u8>]) -> Result<(), CheckError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut c = Checker::new(&mut self.sources[i].side, i, self.tgt, self.report, self.pace, self.ttl_tolerance_ms);
        c.ticker = Some(self.ticker);
        c.source_batch(sdb, tdb, keys)
    }

    /// For each key of source `i` (in a db mapped to `tdb`), the other sources holding it
    /// and in which of their dbs (the first found).
    fn holders(&mut self, i: usize, tdb: u32, keys: &[Vec<u8>]) -> Result<Vec<Vec<(usize, u32)>>, CheckError> {
        let sdbs = source_dbs_of(self.db_map, tdb);
        let mut out: Vec<Vec<(usize, u32)>> = vec![Vec::new(); keys.len()];
        for (j, s) in self.sources.iter_mut().enumerate().filter(|(j, _)| *j != i) {
            let mut ask: Vec<usize> = (0..keys.len()).filter(|&x| s.may_hold(&keys[x])).collect();
            for &db in &sdbs {
                if ask.is_empty() {
                    break;
                }
                self.pace.take(ask.len() as u64);
                let found = exists(&mut s.side, &s.addr, db, ask.iter().map(|&x| keys[x].as_slice()))?;
                let mut still = Vec::new();
                for (x, f) in ask.into_iter().zip(found) {
                    if f {
                        out[x].push((j, db));
                    } else {
                        still.push(x);
                    }
                }
                ask = still;
            }
        }
        Ok(out)
    }

    /// Compare keys of source `i` db `sdb` with their copies in source `j` db `db`: the keys
    /// that differ, each with how.
    fn compare_sources(&mut self, i: usize, sdb: u32, j: usize, db: u32, keys: &[Vec<u8>]) -> Result<Vec<(Vec<u8>, String)>, CheckError> {
        let (a, b) = pair_mut(self.sources, i, j);
        // Its own report, listing every finding: at most the keys of one batch.
        let mut scratch = Report::new(Vec::new(), String::new(), None, self.ttl_tolerance_ms, usize::MAX);
        Checker::new(&mut a.side, 0, &mut b.side, &mut scratch, self.pace, self.ttl_tolerance_ms).source_batch(sdb, db, keys)?;
        let mut out = Vec::new();
        for d in scratch.source_dbs.values() {
            // Missing: gone from `j` meanwhile (a live source), not a conflict.
            for c in [Category::Type, Category::Value, Category::Ttl] {
                for (k, detail) in &d.get(c).keys {
                    let (x, y) = (&a.addr, &b.addr);
                    out.push((k.clone(), format!("also in {y} db {db}, and they differ: {}: {detail} (source = {x}, target = {y})", c.name())));
                }
            }
        }
        Ok(out)
    }

    /// Look target keys of db `tdb` up in the sources; the keys found in none are extra.
    /// Checkpoint markers and leases are not the masters' data and are left out.
    pub fn target_batch(&mut self, tdb: u32, keys: &[Vec<u8>]) -> Result<(), CheckError> {
        let sdbs = source_dbs_of(self.db_map, tdb);
        let keys: Vec<&Vec<u8>> = keys.iter().filter(|k| !(tdb == 0 && crate::checkpoint::is_internal(k))).collect();
        self.pace.take(keys.len() as u64);
        self.report.target_db(tdb).checked += keys.len() as u64;
        // Per key, the sources that may hold it.
        let candidates: Vec<Vec<usize>> =
            keys.iter().map(|k| self.sources.iter().enumerate().filter(|(_, s)| s.may_hold(k)).map(|(j, _)| j).collect()).collect();
        let mut found = vec![false; keys.len()];
        for (j, s) in self.sources.iter_mut().enumerate() {
            for &sdb in &sdbs {
                let ask: Vec<usize> = (0..keys.len()).filter(|&x| !found[x] && candidates[x].contains(&j)).collect();
                if ask.is_empty() {
                    break;
                }
                if j > 0 {
                    // The first source's lookups are paid for above, as with one source.
                    self.pace.take(ask.len() as u64);
                }
                let got = exists(&mut s.side, &s.addr, sdb, ask.iter().map(|&x| keys[x].as_slice()))?;
                for (x, f) in ask.into_iter().zip(got) {
                    found[x] |= f;
                }
            }
        }
        let unseen: Vec<usize> = (0..keys.len()).filter(|&x| !found[x]).collect();
        if !unseen.is_empty() {
            let cmds: Vec<Args> = unseen.iter().map(|&x| cmd(&[b"TYPE", keys[x]])).collect();
            let types = self.tgt.run(tdb, &cmds)?;
            for (x, t) in unseen.into_iter().zip(types) {
                let k = keys[x];
                match type_name(&t).as_deref() {
                    // Gone from the target meanwhile.
                    Some("none") => self.report.target_db(tdb).checked -= 1,
                    Some(ty) => {
                        let why = self.not_found(k, &sdbs, &candidates[x]);
                        self.report.record(Category::Extra, 0, tdb, k, format!("{ty}, {why}"));
                    }
                    None => return Err(CheckError::Failed(format!("target: TYPE {} in db {tdb} answered {t:?}", show(k)))),
                }
            }
        }
        self.ticker.tick(self.report);
        Ok(())
    }

    /// Where an extra key was looked for.
    fn not_found(&self, key: &[u8], sdbs: &[u32], candidates: &[usize]) -> String {
        let dbs: Vec<String> = sdbs.iter().map(u32::to_string).collect();
        if dbs.is_empty() {
            return "no source db maps to it".to_string();
        }
        if !self.report.names_sources() {
            return format!("not in source db {}", dbs.join(", "));
        }
        if candidates.is_empty() {
            return format!("in slot {}, which no source checked owns", key_slot(key));
        }
        let addrs: Vec<&str> = candidates.iter().map(|&j| self.sources[j].addr.as_str()).collect();
        let owner = match candidates {
            [j] if self.sources[*j].slots.is_some() => format!(" (the owner of its slot {})", key_slot(key)),
            _ => String::new(),
        };
        format!("not in source db {} of {}{owner}", dbs.join(", "), addrs.join(", "))
    }
}

/// `EXISTS` for each key, pipelined, in db `db` of a source.
fn exists<'k>(side: &mut Side, addr: &str, db: u32, keys: impl Iterator<Item = &'k [u8]>) -> Result<Vec<bool>, CheckError> {
    let cmds: Vec<Args> = keys.map(|k| cmd(&[b"EXISTS", k])).collect();
    let replies = side.run(db, &cmds)?;
    cmds.iter()
        .zip(replies)
        .map(|(c, r)| match r {
            Reply::Int(n) => Ok(n > 0),
            other => Err(CheckError::Failed(format!("source {addr}: EXISTS {} in db {db} answered {other:?}", show(&c[1])))),
        })
        .collect()
}

/// Two distinct elements of a slice, both mutable.
fn pair_mut<T>(v: &mut [T], i: usize, j: usize) -> (&mut T, &mut T) {
    assert_ne!(i, j, "pair_mut of one element");
    if i < j {
        let (a, b) = v.split_at_mut(j);
        (&mut a[i], &mut b[0])
    } else {
        let (a, b) = v.split_at_mut(i);
        (&mut b[0], &mut a[j])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_either_way() {
        let mut v = vec![1, 2, 3];
        let (a, b) = pair_mut(&mut v, 2, 0);
        assert_eq!((*a, *b), (3, 1));
        let (a, b) = pair_mut(&mut v, 0, 1);
        std::mem::swap(a, b);
        assert_eq!(v, vec![2, 1, 3]);
    }
}
