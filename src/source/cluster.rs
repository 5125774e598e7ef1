//! A Dragonfly cluster as a source: which masters it has and which hash slots each owns.
//!
//! A node in `--cluster_mode=yes` answers `CLUSTER SLOTS` (as Redis does: per slot range,
//! `start end [ip port id] [replica ...]`) and `CLUSTER MYID`; a node outside cluster mode
//! answers both with an error, and one in `--cluster_mode=emulated` lists itself with every
//! slot. Discovery asks one node and yields every master with its slot ranges, so one run can
//! replicate the whole cluster (one session per master), and each session knows the slots
//! it owns: a full resync of that master deletes only those slots' keys on the target, and a
//! journal record in a slot it does not own is a slot migration in progress.
//!
//! The probe is a plain connection (AUTH, the two commands, close), never a replication
//! handshake: `REPLCONF capa dragonfly` would open a sync session on the node.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufReader, Write};

use super::socket::{connect, SourceError};
use crate::config::Endpoint;
use crate::target::resp::{self, Reply};

/// Hash slots as sorted, disjoint, inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlotRanges(Vec<(u16, u16)>);

pub const SLOTS: u32 = 16384;

impl SlotRanges {
    /// Every slot.
    pub fn all() -> Self {
        SlotRanges(vec![(0, (SLOTS - 1) as u16)])
    }

    /// From ranges in any order (overlaps and neighbours merged); `None` for a slot beyond
    /// 16383 or a range whose end is before its start.
    pub fn from_ranges(mut r: Vec<(u16, u16)>) -> Option<Self> {
        if r.iter().any(|&(a, b)| a > b || u32::from(b) >= SLOTS) {
            return None;
        }
        r.sort_unstable();
        let mut out: Vec<(u16, u16)> = Vec::with_capacity(r.len());
        for (a, b) in r {
            match out.last_mut() {
                Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        Some(SlotRanges(out))
    }

    pub fn contains(&self, slot: u16) -> bool {
        // Few ranges in practice (one per node, a few after migrations): a scan is enough.
        self.0.iter().any(|&(a, b)| a <= slot && slot <= b)
    }

    pub fn count(&self) -> u32 {
        self.0.iter().map(|&(a, b)| u32::from(b) - u32::from(a) + 1).sum()
    }

    pub fn is_all(&self) -> bool {
        self.count() == SLOTS
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.0
    }

    /// Whether any slot is in both.
    pub fn overlaps(&self, other: &SlotRanges) -> bool {
        self.0.iter().any(|&(a, b)| other.0.iter().any(|&(c, d)| a <= d && c <= b))
    }

    /// The text form, `0-5460,10923-16383` (as [`Display`](fmt::Display) prints it).
    pub fn parse(s: &str) -> Option<Self> {
        let mut r = Vec::new();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            r.push((a.trim().parse().ok()?, b.trim().parse().ok()?));
        }
        Self::from_ranges(r)
    }
}

impl fmt::Display for SlotRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

/// One master of a Dragonfly cluster, as a node described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMaster {
    pub id: String,
    /// `ip:port` as the cluster announces it.
    pub addr: String,
    pub slots: SlotRanges,
}

/// What a node says about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// Not in cluster mode (`CLUSTER SLOTS` is an error).
    Standalone,
    /// In cluster mode: its own id, and every master with its slots.
    Cluster { myid: String, masters: Vec<ClusterMaster> },
}

impl Membership {
    /// The slots node `myid` owns, if this is a cluster (empty when it owns none).
    pub fn own_slots(&self) -> Option<SlotRanges> {
        match self {
            Membership::Standalone => None,
            Membership::Cluster { myid, masters } => {
                Some(masters.iter().find(|m| &m.id == myid).map(|m| m.slots.clone()).unwrap_or_default())
            }
        }
    }
}

/// Ask the node at `ep.addr` (a plain connection: AUTH, `CLUSTER MYID`, `CLUSTER SLOTS`).
pub fn probe(ep: &Endpoint) -> Result<Membership, SourceError> {
    let addr = ep.addr.as_str();
    let s = connect(addr, false, "cluster probe", ep.tls())?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30))).ok();
    let mut out = s.try_clone().map_err(|e| SourceError(format!("cluster probe of {addr}: {e}")))?;
    let mut inp = BufReader::new(s);
    let mut call = |args: &[&[u8]]| -> Result<Reply, SourceError> {
        let mut b = Vec::new();
        resp::encode(&mut b, args.iter().copied());
        out.write_all(&b).map_err(|e| SourceError(format!("cluster probe of {addr}: {e}")))?;
        resp::read_reply(&mut inp).map_err(|e| SourceError(format!("cluster probe of {addr}: {e}")))
    };
    if let Some((user, pass)) = ep.auth() {
        if let Reply::Error(e) = call(&resp::auth_args(user, pass))? {
            return Err(SourceError(format!(
                "cluster probe of {addr}: {}: {e} (check --source-user / --source-password)",
                super::socket::AUTH_REJECTED
            )));
        }
    }
    let myid = match call(&[b"CLUSTER", b"MYID"])? {
        Reply::Bulk(Some(id)) => String::from_utf8_lossy(&id).into_owned(),
        Reply::Status(id) => id.to_string(),
        // Outside cluster mode Dragonfly refuses the CLUSTER commands.
        Reply::Error(_) => return Ok(Membership::Standalone),
        other => return Err(SourceError(format!("cluster probe of {addr}: CLUSTER MYID answered {other:?}"))),
    };
    match call(&[b"CLUSTER", b"SLOTS"])? {
        Reply::Error(_) => Ok(Membership::Standalone),
        Reply::Array(Some(rows)) => {
            let masters = parse_slots(&rows).map_err(|e| SourceError(format!("cluster probe of {addr}: CLUSTER SLOTS: {e}")))?;
            Ok(Membership::Cluster { myid, masters })
        }
        other => Err(SourceError(format!("cluster probe of {addr}: CLUSTER SLOTS answered {other:?}"))),
    }
}

/// One master to read, as [`plan`] found it.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub addr: String,
    /// A cluster node: the slots it owns now.
    pub slots: Option<SlotRanges>,
    /// How it was found (the node given that listed it), for the log.
    pub via: Option<String>,
}

/// The masters to read, shared by `replicate`/`migrate` (one session each) and `check` (one
/// source each): each address `given` (with `ep`'s credentials and TLS); a node in cluster
/// mode also brings its cluster's other masters when `discover`. A single source that
/// cannot be probed is returned as given, so that its user reports (or waits for) it as
/// before; one of several is an error naming it, unless `wait_for_unreachable` (replicate
/// --wait-for-source): then it is planned as given, its session waiting for it.
pub fn plan(ep: &Endpoint, given: &[String], discover: bool, wait_for_unreachable: bool) -> Result<Vec<Planned>, String> {
    let mut plan: Vec<Planned> = Vec::new();
    for addr in given {
        let mut ep = ep.clone();
        ep.addr = addr.clone();
        let membership = match probe(&ep) {
            Ok(m) => m,
            Err(_) if given.len() == 1 => return Ok(vec![Planned { addr: addr.clone(), slots: None, via: None }]),
            Err(e) if wait_for_unreachable => {
                // replicate --wait-for-source: its session keeps trying; it is taken as a
                // standalone master (its cluster membership cannot be asked now).
                log::warn!("source {addr}: cannot be reached now ({e}); its session waits for it (taken as a master outside cluster mode)");
                plan.push(Planned { addr: addr.clone(), slots: None, via: None });
                continue;
            }
            Err(e) => return Err(format!("source {addr}: cannot be reached: {e}")),
        };
        let add = |plan: &mut Vec<Planned>, p: Planned| {
            if let Some(have) = plan.iter_mut().find(|q| q.addr == p.addr) {
                // Given and also discovered: the given entry keeps its place.
                if have.slots.is_none() {
                    have.slots = p.slots;
                }
            } else {
                plan.push(p);
            }
        };
        match &membership {
            Membership::Standalone => add(&mut plan, Planned { addr: addr.clone(), slots: None, via: None }),
            Membership::Cluster { myid, masters } => {
                let own = membership.own_slots().unwrap_or_default();
                add(&mut plan, Planned { addr: addr.clone(), slots: Some(own), via: None });
                if discover {
                    for m in masters.iter().filter(|m| &m.id != myid) {
                        // The node given may be a replica: its masters are what to read.
                        add(&mut plan, Planned { addr: m.addr.clone(), slots: Some(m.slots.clone()), via: Some(addr.clone()) });
                    }
                }
            }
        }
    }
    // A replica given (or a node that owns nothing) has no slots to read when its cluster's
    // masters are in the list too.
    if plan.len() > 1 {
        plan.retain(|p| p.slots.as_ref().is_none_or(|s| !s.is_empty()));
    }
    Ok(plan)
}

/// The rows of `CLUSTER SLOTS`: `[start, end, [ip, port, id, ...], replicas...]`, grouped
/// by master.
fn parse_slots(rows: &[Reply]) -> Result<Vec<ClusterMaster>, String> {
    let mut by_id: BTreeMap<String, (String, Vec<(u16, u16)>)> = BTreeMap::new();
    let mut order = Vec::new();
    for row in rows {
        let Reply::Array(Some(f)) = row else { return Err(format!("a row is {row:?}, not an array")) };
        let (Some(Reply::Int(a)), Some(Reply::Int(b)), Some(Reply::Array(Some(node)))) = (f.first(), f.get(1), f.get(2)) else {
            return Err(format!("a row is {f:?}, expected start, end, [ip, port, id]"));
        };
        let text = |r: Option<&Reply>| match r {
            Some(Reply::Bulk(Some(b))) => Some(String::from_utf8_lossy(b).into_owned()),
            Some(Reply::Status(s)) => Some(s.to_string()),
            _ => None,
        };
        let (Some(ip), Some(Reply::Int(port))) = (text(node.first()), node.get(1)) else {
            return Err(format!("a master is {node:?}, expected [ip, port, id]"));
        };
        let id = text(node.get(2)).unwrap_or_default();
        let (Ok(a), Ok(b)) = (u16::try_from(*a), u16::try_from(*b)) else { return Err(format!("slot range {a}-{b}")) };
        let addr = if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
        let key = if id.is_empty() { addr.clone() } else { id.clone() };
        let e = by_id.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            (addr, Vec::new())
        });
        e.1.push((a, b));
    }
    order
        .into_iter()
        .map(|id| {
            let (addr, r) = by_id.remove(&id).unwrap_or_default();
            let slots = SlotRanges::from_ranges(r).ok_or_else(|| format!("master {addr}: slot ranges out of 0..16383"))?;
            Ok(ClusterMaster { id, addr, slots })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_print_and_parse() {
        let r = SlotRanges::from_ranges(vec![(10, 20), (0, 5), (6, 9), (100, 100)]).unwrap();
        assert_eq!(r.to_string(), "0-20,100");
        assert_eq!(SlotRanges::parse("0-20,100"), Some(r.clone()));
        assert_eq!(r.count(), 22);
        assert!(r.contains(0) && r.contains(20) && r.contains(100) && !r.contains(21));
        assert!(SlotRanges::all().is_all() && SlotRanges::all().overlaps(&r));
        assert!(!r.overlaps(&SlotRanges::parse("21-99").unwrap()));
        assert!(SlotRanges::from_ranges(vec![(5, 4)]).is_none());
        assert!(SlotRanges::from_ranges(vec![(0, 16384)]).is_none());
        assert!(SlotRanges::parse("a-b").is_none());
    }

    #[test]
    fn cluster_slots_rows_group_by_master() {
        let node = |ip: &str, port: i64, id: &str| Reply::Array(Some(vec![Reply::Bulk(Some(ip.into())), Reply::Int(port), Reply::Bulk(Some(id.into()))]));
        let row = |a, b, n| Reply::Array(Some(vec![Reply::Int(a), Reply::Int(b), n]));
        let rows = vec![
            row(0, 100, node("127.0.0.1", 7000, "aa")),
            row(101, 200, node("127.0.0.1", 7001, "bb")),
            row(201, 300, node("127.0.0.1", 7000, "aa")),
        ];
        let m = parse_slots(&rows).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].addr.as_str(), m[0].slots.to_string()), ("127.0.0.1:7000", "0-100,201-300".to_string()));
        assert_eq!(m[1].id, "bb");
        let ms = Membership::Cluster { myid: "bb".into(), masters: m };
        assert_eq!(ms.own_slots().unwrap().to_string(), "101-200");
        assert!(parse_slots(&[Reply::Int(1)]).is_err());
    }
}
