//! Where a replication can resume: per flow, the next LSN the target has not applied.
//!
//! The resume point lives **in the target**, written atomically with the writes it covers:
//! on a standalone server every stable-sync pipeline of flow `i` runs as
//! `MULTI ... EXEC` together with `SET df2redis:checkpoint:<run>:<i> "<marker>"` in db 0, so after any
//! crash the marker says exactly which journal records the target holds. Many journal commands
//! are not idempotent (INCR, LPUSH, APPEND, XADD): a resume point kept anywhere else (a local
//! file written after the reply) is either behind the target (records applied twice) or ahead
//! of it (records lost). A Redis Cluster cannot run a transaction across slots; its scheme,
//! one marker per flow and master node, is in [`cluster`].
//!
//! The marker value is `df2redis/1 replid=<master id> flows=<n> next_lsn=<lsn>` (on a cluster
//! also `slots=<layout>`): a resume is attempted only when every flow's marker names the
//! master's current replid and flow count (and the cluster's current layout).
//! A local file (`--checkpoint FILE`) mirrors the applied LSNs for people and scripts; it is
//! never read back, because it can lag the target.
//!
//! Marker keys are removed by `df2redis cleanup` once a migration is finished, and deleted at
//! the start of every full sync (a stale marker must never pair with a new snapshot).
//!
//! Every key carries the run name ([`name`]) right after the prefix, so several runs (several
//! masters) sharing one target never read, overwrite or delete each other's markers: a run
//! reads, writes and deletes `df2redis:checkpoint:<run>:*` only. Names hold no `:`, `{`, `}`
//! or glob characters, so that pattern matches no other run's keys and a cluster marker's
//! hashtag is still its first `{...}`. Keys of the earlier unnamed format
//! (`df2redis:checkpoint:<flow>`, `...:{<tag>}:<flow>`, `...:done:...`) are recognised
//! ([`owner_of`]) and never resumed from: they cannot say which master they belong to.

pub mod cluster;
pub mod idempotent;
pub mod name;

use std::io::Write;
use std::path::Path;

/// Every marker key starts with this (SCAN pattern: `df2redis:checkpoint:*`).
pub const MARKER_PREFIX: &str = "df2redis:checkpoint:";

/// The lease of a run name (see [`crate::lease`]): `df2redis:lease:<run>`.
pub const LEASE_PREFIX: &str = "df2redis:lease:";

/// The marker of `flow` of run `run` on a standalone server.
pub fn marker_key(run: &str, flow: usize) -> Vec<u8> {
    format!("{MARKER_PREFIX}{run}:{flow}").into_bytes()
}

/// SCAN pattern of every marker of run `run` (flow, node and done markers).
pub fn run_pattern(run: &str) -> String {
    format!("{MARKER_PREFIX}{run}:*")
}

/// Whether a target key is df2redis's own bookkeeping (a marker or a lease), not data.
pub fn is_internal(key: &[u8]) -> bool {
    key.starts_with(MARKER_PREFIX.as_bytes()) || key.starts_with(LEASE_PREFIX.as_bytes())
}

/// The run whose lease `key` is, if it is a lease.
pub fn lease_owner(key: &[u8]) -> Option<String> {
    key.strip_prefix(LEASE_PREFIX.as_bytes()).map(|n| String::from_utf8_lossy(n).into_owned())
}

/// Whose marker a key is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    /// The unnamed format of earlier versions (one run per target).
    Legacy,
    /// A named run's.
    Run(String),
}

/// Whose marker `key` is; `None` when it is not a marker key.
pub fn owner_of(key: &[u8]) -> Option<Owner> {
    let rest = key.strip_prefix(MARKER_PREFIX.as_bytes())?;
    let rest = String::from_utf8_lossy(rest);
    match rest.split_once(':') {
        // `<flow>`: the unnamed standalone format.
        None => Some(Owner::Legacy),
        // `{<tag>}:<flow>` and `done:{<tag>}:<flow>`: the unnamed cluster format ("done" is
        // not a valid run name for this reason).
        Some((head, _)) if head.starts_with('{') || head == "done" => Some(Owner::Legacy),
        Some((head, _)) => Some(Owner::Run(head.to_string())),
    }
}

/// One flow's resume point, as stored in its marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub replid: String,
    pub flows: usize,
    pub next_lsn: u64,
    /// A cluster's layout when the marker was written ([`cluster::Layout::fingerprint`]).
    pub slots: Option<String>,
}

/// What a batch's checkpoint says, before it is encoded for a target: flow `flow` of master
/// `replid` (with `flows` flows) has applied every record before `next_lsn`.
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    /// The run name the marker keys carry.
    pub run: &'a str,
    pub flow: usize,
    pub replid: &'a str,
    pub flows: usize,
    pub next_lsn: u64,
}

impl Stamp<'_> {
    pub fn mark(&self, slots: Option<&str>) -> Mark {
        Mark { replid: self.replid.to_string(), flows: self.flows, next_lsn: self.next_lsn, slots: slots.map(str::to_string) }
    }
}

impl Mark {
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("df2redis/1 replid={} flows={} next_lsn={}", self.replid, self.flows, self.next_lsn);
        if let Some(l) = &self.slots {
            s.push_str(" slots=");
            s.push_str(l);
        }
        s.into_bytes()
    }

    pub fn parse(v: &[u8]) -> Option<Mark> {
        let s = std::str::from_utf8(v).ok()?;
        let mut it = s.split(' ');
        if it.next()? != "df2redis/1" {
            return None;
        }
        let mut field = |name: &str| it.next()?.strip_prefix(name)?.strip_prefix('=').map(str::to_string);
        let replid = field("replid")?;
        let flows = field("flows")?.parse().ok()?;
        let next_lsn = field("next_lsn")?.parse().ok()?;
        let slots = match it.next() {
            None => None,
            Some(f) => Some(f.strip_prefix("slots=")?.to_string()),
        };
        Some(Mark { replid, flows, next_lsn, slots })
    }
}

/// Why the markers found in the target do or do not allow a partial resume.
#[derive(Debug, PartialEq, Eq)]
pub enum Resume {
    /// Every flow has a marker from this master: resume each at its LSN.
    At(ResumeAt),
    /// No marker at all: a first run.
    Nothing,
    /// Markers exist but cannot be used; the reason is logged.
    Unusable(String),
}

/// Where each flow resumes.
#[derive(Debug, PartialEq, Eq)]
pub struct ResumeAt {
    /// Per flow: the LSN its journal resumes at.
    pub lsns: Vec<u64>,
    /// A cluster target: per flow, which records each slot already holds (its nodes' markers
    /// differ, and the flow resumes at the lowest).
    pub skip: Option<Vec<std::sync::Arc<cluster::SlotSkip>>>,
}

/// Decide from the markers read for flows `0..flows` of the master `replid`.
pub fn decide(marks: &[Option<Vec<u8>>], replid: &str, flows: usize) -> Resume {
    if marks.iter().all(Option::is_none) {
        return Resume::Nothing;
    }
    let mut lsns = Vec::with_capacity(flows);
    for (i, m) in marks.iter().enumerate() {
        match usable(m.as_deref(), replid, flows, &format!("flow {i}")) {
            Ok(mark) => lsns.push(mark.next_lsn),
            Err(why) => return Resume::Unusable(why),
        }
    }
    Resume::At(ResumeAt { lsns, skip: None })
}

/// The marker `raw` of `whose` ("flow 3"), if it is one df2redis writes for this master
/// (`replid`) and flow count; otherwise why a resume cannot use it.
pub(crate) fn usable(raw: Option<&[u8]>, replid: &str, flows: usize, whose: &str) -> Result<Mark, String> {
    let Some(raw) = raw else {
        return Err(format!("{whose} has no checkpoint (the previous run never reached stable sync on it)"));
    };
    let Some(mark) = Mark::parse(raw) else {
        return Err(format!("{whose}'s checkpoint {:?} is not one df2redis writes", String::from_utf8_lossy(raw)));
    };
    if mark.replid != replid {
        return Err(format!(
            "the checkpoints are from master {} and the master is now {replid} (it restarted or is another one)",
            mark.replid
        ));
    }
    if mark.flows != flows {
        return Err(format!("the checkpoints are for {} flows and the master now has {flows}", mark.flows));
    }
    Ok(mark)
}

/// Write the local checkpoint file atomically (temp file, fsync, rename, fsync of the
/// directory): readers see the old or the new content, never a torn one.
pub fn write_file(path: &Path, replid: &str, applied: &[u64]) -> std::io::Result<()> {
    let mut text = format!("# df2redis checkpoint (diagnostics only; the resume point is in the target)\nmaster_replid = {replid}\nflows = {}\n", applied.len());
    for (i, l) in applied.iter().enumerate() {
        text.push_str(&format!("flow.{i}.applied_next_lsn = {l}\n"));
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_decide() {
        let m = Mark { replid: "ab".repeat(20), flows: 2, next_lsn: 77, slots: None };
        assert_eq!(Mark::parse(&m.encode()), Some(m.clone()));
        let c = Mark { slots: Some("00ff".into()), ..m.clone() };
        assert_eq!(Mark::parse(&c.encode()), Some(c.clone()));
        assert_eq!(Mark::parse(b"df2redis/1 replid=x flows=z next_lsn=1"), None);
        let id = "ab".repeat(20);
        let enc = |l: u64| Some(Mark { next_lsn: l, ..m.clone() }.encode());
        assert_eq!(decide(&[None, None], &id, 2), Resume::Nothing);
        assert_eq!(decide(&[enc(5), enc(9)], &id, 2), Resume::At(ResumeAt { lsns: vec![5, 9], skip: None }));
        assert!(matches!(decide(&[enc(5), None], &id, 2), Resume::Unusable(_)));
        assert!(matches!(decide(&[enc(5), enc(9)], "other", 2), Resume::Unusable(_)));
        assert!(matches!(decide(&[enc(5), enc(9), None], &id, 3), Resume::Unusable(_)));
    }

    #[test]
    fn keys_name_their_run() {
        assert_eq!(marker_key("a-1", 3), b"df2redis:checkpoint:a-1:3");
        assert_eq!(owner_of(&marker_key("a-1", 3)), Some(Owner::Run("a-1".into())));
        assert_eq!(owner_of(&cluster::node_marker_key("r", 100, 0)), Some(Owner::Run("r".into())));
        assert_eq!(owner_of(&cluster::done_marker_key("r", 100, 0)), Some(Owner::Run("r".into())));
        assert_eq!(owner_of(b"df2redis:checkpoint:7"), Some(Owner::Legacy));
        assert_eq!(owner_of(b"df2redis:checkpoint:{12}:0"), Some(Owner::Legacy));
        assert_eq!(owner_of(b"df2redis:checkpoint:done:{12}:0"), Some(Owner::Legacy));
        assert_eq!(owner_of(b"user:key"), None);
        assert!(is_internal(b"df2redis:lease:r") && !is_internal(b"df2redis:other"));
    }

    #[test]
    fn file_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("df2redis-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("ckpt");
        write_file(&p, "id", &[1, 2]).unwrap();
        write_file(&p, "id", &[3, 4]).unwrap();
        let t = std::fs::read_to_string(&p).unwrap();
        assert!(t.contains("flow.1.applied_next_lsn = 4") && !t.contains("applied_next_lsn = 2"), "{t}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
