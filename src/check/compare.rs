//! Comparing batches of keys: the source pass (each source key against the target) and the
//! target pass (each target key looked up on the source).
//!
//! A checker compares one source with "the other side": the target, or (for a key held by
//! two sources, see [`super::union`]) another source.
//!
//! A batch of source keys goes through pipelined rounds, each sent to both sides at once:
//! `TYPE` + `PTTL`, then the sizes (and the source's `MEMORY USAGE`), then the values window by
//! window ([`chunks`]; JSON documents whole, see `json_documents`), where every
//! round carries a window of every value still being compared, within a byte budget. A batch
//! of small keys costs three or four round trips; a big value costs one more per window, and
//! never more memory than a window.
//!
//! [`chunks`]: super::chunks

use std::time::{Duration, Instant};

use crate::json;
use crate::protocol::cursor::show;
use crate::target::resp::Reply;

use super::chunks::{AfterSource, Job, Kind, Step};
use super::conn::{cmd, Args};
use super::pace::Pace;
use super::report::{Category, Report};
use super::side::Side;
use super::CheckError;

/// Reply bytes one value round may ask for per side (estimated from the windows).
const ROUND_BYTES: u64 = 8 << 20;

/// The type name RedisJSON (and Dragonfly) give JSON documents.
const JSON_TYPE: &str = "ReJSON-RL";

/// JSON documents taking more memory than this on either side are compared by type and TTL
/// only: a document is read whole, and two of them (text and tree) are held at once.
pub const JSON_WHOLE_MAX: u64 = 64 << 20;

/// The steady progress line: when it was last printed.
pub struct Ticker {
    every: Duration,
    started: Instant,
    last: Instant,
}

impl Ticker {
    pub fn new(every: Duration) -> Ticker {
        let now = Instant::now();
        Ticker { every, started: now, last: now }
    }

    /// Print the progress line if it is due.
    pub fn tick(&mut self, report: &Report) {
        if self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        let (s, t) = (report.source_checked(), report.target_checked());
        let rate = (s + t) as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        log::info!("check: {s} source keys compared, {t} target keys looked up, {} differences so far, {rate:.0} keys/s", report.differences());
    }
}

/// The two sides, what to compare with, and where the findings go.
pub struct Checker<'a> {
    pub src: &'a mut Side,
    pub tgt: &'a mut Side,
    /// Which source `src` is: findings go under its index in `report`.
    pub source: usize,
    pub report: &'a mut Report,
    pub pace: &'a mut Pace,
    pub ttl_tolerance_ms: i64,
    /// `None` for a comparison whose report is not the check's (two sources).
    pub ticker: Option<&'a mut Ticker>,
}

impl<'a> Checker<'a> {
    /// Compare source number `source` (`src`) with `tgt`.
    pub fn new(src: &'a mut Side, source: usize, tgt: &'a mut Side, report: &'a mut Report, pace: &'a mut Pace, ttl_tolerance_ms: u64) -> Self {
        Checker { src, tgt, source, report, pace, ttl_tolerance_ms: ttl_tolerance_ms.min(i64::MAX as u64) as i64, ticker: None }
    }

    /// The same kind of round on both sides at once: both pipelines are in flight together.
    fn both(&mut self, sdb: u32, scmds: &[Args], tdb: u32, tcmds: &[Args]) -> Result<(Vec<Reply>, Vec<Reply>), CheckError> {
        if !scmds.is_empty() {
            self.src.send(sdb, scmds)?;
        }
        if !tcmds.is_empty() {
            self.tgt.send(tdb, tcmds)?;
        }
        let s = if scmds.is_empty() { Vec::new() } else { self.src.recv(scmds)? };
        let t = if tcmds.is_empty() { Vec::new() } else { self.tgt.recv(tcmds)? };
        if s.len() != scmds.len() || t.len() != tcmds.len() {
            return Err(CheckError::Failed(format!("{} replies for {} commands", s.len() + t.len(), scmds.len() + tcmds.len())));
        }
        Ok((s, t))
    }

    /// Compare source keys of db `sdb` with their copies in target db `tdb`.
    pub fn source_batch(&mut self, sdb: u32, tdb: u32, keys: &[Vec<u8>]) -> Result<(), CheckError> {
        self.pace.take(keys.len() as u64);
        let cmds: Vec<Args> = keys.iter().flat_map(|k| [cmd(&[b"TYPE", k]), cmd(&[b"PTTL", k])]).collect();
        let (s, t) = self.both(sdb, &cmds, tdb, &cmds)?;
        let mut sized: Vec<(&[u8], Kind)> = Vec::new();
        let mut json: Vec<&[u8]> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let at = |side: &str, r: &Reply, what: &str| CheckError::Failed(format!("{side}: {what} of key {} in db {}: {r:?}", show(key), if side == "source" { sdb } else { tdb }));
            let stype = type_name(&s[2 * i]).ok_or_else(|| at("source", &s[2 * i], "TYPE"))?;
            let ttype = type_name(&t[2 * i]).ok_or_else(|| at("target", &t[2 * i], "TYPE"))?;
            let (Reply::Int(sttl), Reply::Int(tttl)) = (&s[2 * i + 1], &t[2 * i + 1]) else {
                return Err(at("source or target", &Reply::Array(Some(vec![s[2 * i + 1].clone(), t[2 * i + 1].clone()])), "PTTL"));
            };
            self.report.source_db(self.source, sdb).checked += 1;
            if stype == "none" {
                self.report.source_db(self.source, sdb).vanished += 1;
                continue;
            }
            if ttype == "none" {
                if (0..=self.ttl_tolerance_ms).contains(sttl) {
                    // About to expire on the source: the target may rightly have let it go.
                    self.report.source_db(self.source, sdb).vanished += 1;
                } else {
                    self.report.record(Category::Missing, self.source, sdb, key, format!("{stype} not in target db {tdb}"));
                }
                continue;
            }
            if stype != ttype {
                self.report.record(Category::Type, self.source, sdb, key, format!("source {stype}, target {ttype}"));
                continue;
            }
            if let Some(d) = ttl_difference(*sttl, *tttl, self.ttl_tolerance_ms) {
                self.report.record(Category::Ttl, self.source, sdb, key, d);
            }
            match Kind::from_type(&stype) {
                Some(kind) => sized.push((key, kind)),
                None if stype == JSON_TYPE => json.push(key),
                None => self.report.source_db(self.source, sdb).not_compared += 1,
            }
        }
        // Sizes on both sides; on the source also what each collection takes in memory, which
        // sizes its first window (a server without MEMORY USAGE just answers an error).
        let tcmds: Vec<Args> = sized.iter().map(|(k, kind)| kind.size_cmd(k)).collect();
        let mut scmds = tcmds.clone();
        scmds.extend(sized.iter().map(|(k, _)| cmd(&[b"MEMORY", b"USAGE", k])));
        let (mut s, t) = self.both(sdb, &scmds, tdb, &tcmds)?;
        let usage = s.split_off(sized.len());
        let mut jobs = Vec::new();
        for ((((key, kind), sr), tr), mem) in sized.into_iter().zip(s).zip(t).zip(usage) {
            match (sr, tr) {
                (Reply::Int(a), Reply::Int(b)) if a != b => self.report.record(Category::Value, self.source, sdb, key, kind.size_differs(a, b)),
                (Reply::Int(0), Reply::Int(_)) => {}
                (Reply::Int(a), Reply::Int(_)) => {
                    let mut job = Job::new(key.to_vec(), kind, a.max(0) as u64);
                    if let Reply::Int(m) = mem {
                        job.set_memory_usage(m.max(0) as u64);
                    }
                    jobs.push(job);
                }
                (Reply::Error(e), _) | (_, Reply::Error(e)) if e.starts_with("WRONGTYPE") => self.report.source_db(self.source, sdb).vanished += 1,
                (a, b) => {
                    return Err(CheckError::Failed(format!("size of key {} in db {sdb}: source answered {a:?}, target {b:?}", show(key))));
                }
            }
        }
        self.values(sdb, tdb, jobs)?;
        self.json_documents(sdb, tdb, &json)?;
        self.progress();
        Ok(())
    }

    /// JSON documents (RedisJSON's type on both sides) are read whole, `JSON.GET key`, and
    /// compared as trees ([`crate::json::difference`]: the servers print one document
    /// differently, and doubles within a relative tolerance). A document cannot be read in
    /// windows, so `MEMORY USAGE` on both sides comes first: documents above
    /// [`JSON_WHOLE_MAX`] on either side (or on a server that does not answer it) are compared
    /// by type and TTL only, and the others are read in rounds within [`ROUND_BYTES`].
    fn json_documents(&mut self, sdb: u32, tdb: u32, keys: &[&[u8]]) -> Result<(), CheckError> {
        if keys.is_empty() {
            return Ok(());
        }
        let cmds: Vec<Args> = keys.iter().map(|k| cmd(&[b"MEMORY", b"USAGE", k])).collect();
        let (s, t) = self.both(sdb, &cmds, tdb, &cmds)?;
        let mut todo: Vec<(&[u8], u64)> = Vec::new();
        for ((key, sm), tm) in keys.iter().zip(s).zip(t) {
            match (sm, tm) {
                (Reply::Int(a), Reply::Int(b)) if a.max(b).max(0) as u64 <= JSON_WHOLE_MAX => todo.push((key, a.max(b).max(0) as u64)),
                (Reply::Bulk(None), _) | (_, Reply::Bulk(None)) => self.report.source_db(self.source, sdb).vanished += 1,
                _ => self.report.source_db(self.source, sdb).not_compared += 1,
            }
        }
        let mut rest = todo.as_slice();
        while !rest.is_empty() {
            let mut n = 1;
            let mut bytes = rest[0].1;
            while n < rest.len() && bytes + rest[n].1 <= ROUND_BYTES {
                bytes += rest[n].1;
                n += 1;
            }
            let (round, later) = rest.split_at(n);
            rest = later;
            let cmds: Vec<Args> = round.iter().map(|(k, _)| cmd(&[b"JSON.GET", k])).collect();
            let (s, t) = self.both(sdb, &cmds, tdb, &cmds)?;
            for (((key, _), sr), tr) in round.iter().zip(s).zip(t) {
                match (sr, tr) {
                    (Reply::Bulk(Some(a)), Reply::Bulk(Some(b))) => {
                        let diff = match (json::parse(&a), json::parse(&b)) {
                            (Ok(a), Ok(b)) => json::difference(&a, &b),
                            (Err(e), _) => Some(format!("the source's document does not parse: {e}")),
                            (_, Err(e)) => Some(format!("the target's document does not parse: {e}")),
                        };
                        if let Some(d) = diff {
                            self.report.record(Category::Value, self.source, sdb, key, format!("document differs at {d}"));
                        }
                    }
                    (Reply::Bulk(None), _) | (_, Reply::Bulk(None)) => self.report.source_db(self.source, sdb).vanished += 1,
                    (Reply::Error(e), _) | (_, Reply::Error(e)) if e.starts_with("WRONGTYPE") => self.report.source_db(self.source, sdb).vanished += 1,
                    (a, b) => {
                        return Err(CheckError::Failed(format!(
                            "JSON.GET {} in db {sdb}: source answered {a:?}, target {b:?}",
                            show(key)
                        )))
                    }
                }
            }
        }
        Ok(())
    }

    /// Compare values window by window until every job is judged.
    fn values(&mut self, sdb: u32, tdb: u32, jobs: Vec<Job>) -> Result<(), CheckError> {
        let mut queue: std::collections::VecDeque<Job> = jobs.into();
        while !queue.is_empty() {
            let mut round: Vec<Job> = Vec::new();
            let mut bytes = 0;
            while let Some(j) = queue.pop_front() {
                if !round.is_empty() && bytes + j.expected_bytes() > ROUND_BYTES {
                    queue.push_front(j);
                    break;
                }
                bytes += j.expected_bytes();
                round.push(j);
            }
            // Later windows of big values count against the rate limit as keys do.
            self.pace.take(round.iter().filter(|j| j.windows > 0).count() as u64);
            let mut scmds = Vec::with_capacity(round.len());
            let mut tcmds = Vec::new();
            let mut with_target = Vec::new();
            for (i, j) in round.iter().enumerate() {
                let (s, t) = j.source_cmd();
                scmds.push(s);
                if let Some(t) = t {
                    tcmds.push(t);
                    with_target.push(i);
                }
            }
            let (sr, tr) = self.both(sdb, &scmds, tdb, &tcmds)?;
            let mut tr_of: Vec<Option<Reply>> = vec![None; round.len()];
            for (i, r) in with_target.into_iter().zip(tr) {
                tr_of[i] = Some(r);
            }
            let mut steps: Vec<Option<Step>> = vec![None; round.len()];
            let mut lookups: Vec<(usize, Args)> = Vec::new();
            for (i, (r, t)) in sr.into_iter().zip(tr_of).enumerate() {
                match round[i].after_source(r, t).map_err(|e| value_error(&round[i], sdb, e))? {
                    AfterSource::Step(s) => steps[i] = Some(s),
                    AfterSource::Lookup(c) => lookups.push((i, c)),
                }
            }
            if !lookups.is_empty() {
                let cmds: Vec<Args> = lookups.iter().map(|l| l.1.clone()).collect();
                let replies = self.tgt.run(tdb, &cmds)?;
                for ((i, _), r) in lookups.into_iter().zip(replies) {
                    steps[i] = Some(round[i].after_lookup(r).map_err(|e| value_error(&round[i], sdb, e))?);
                }
            }
            for (job, step) in round.into_iter().zip(steps) {
                match step.unwrap_or(Step::Changed) {
                    Step::Same => {}
                    Step::More => queue.push_back(job),
                    Step::Differs(d) => self.report.record(Category::Value, self.source, sdb, &job.key, d),
                    Step::Changed => self.report.source_db(self.source, sdb).vanished += 1,
                }
            }
            self.progress();
        }
        Ok(())
    }

    fn progress(&mut self) {
        if let Some(t) = self.ticker.as_deref_mut() {
            t.tick(self.report);
        }
    }
}

fn value_error(j: &Job, sdb: u32, e: String) -> CheckError {
    CheckError::Failed(format!("comparing the {:?} value of key {} (source db {sdb}): {e}", j.kind, show(&j.key)))
}

/// A `TYPE` reply as text.
pub fn type_name(r: &Reply) -> Option<String> {
    match r {
        Reply::Status(s) => Some(s.to_string()),
        Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// What differs between two `PTTL`s (-1: no TTL), beyond the tolerance.
pub fn ttl_difference(src: i64, tgt: i64, tolerance_ms: i64) -> Option<String> {
    match (src, tgt) {
        (-1, -1) => None,
        // Gone between TYPE and PTTL: judged by TYPE next time, not here.
        (-2, _) | (_, -2) => None,
        (-1, t) => Some(format!("source has no TTL, target {t} ms")),
        (s, -1) => Some(format!("source {s} ms, target has no TTL")),
        (s, t) if s.abs_diff(t) > tolerance_ms as u64 => Some(format!("source {s} ms, target {t} ms")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_within_tolerance() {
        assert_eq!(ttl_difference(-1, -1, 2000), None);
        assert_eq!(ttl_difference(10_000, 8_500, 2000), None);
        assert_eq!(ttl_difference(10_000, 7_000, 2000), Some("source 10000 ms, target 7000 ms".into()));
        assert_eq!(ttl_difference(-1, 5, 2000), Some("source has no TTL, target 5 ms".into()));
        assert_eq!(ttl_difference(5, -1, 2000), Some("source 5 ms, target has no TTL".into()));
        assert_eq!(ttl_difference(-2, 5, 2000), None);
    }
}
