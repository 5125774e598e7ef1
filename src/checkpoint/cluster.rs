//! Exactly-once checkpoints on a Redis Cluster.
//!
//! A cluster transaction must stay within one slot (EXEC answers CROSSSLOT), so the standalone
//! scheme (each pipeline in MULTI ... EXEC with its flow's marker) does not carry over. What a
//! cluster does instead, per flow and master node, for every stable-sync pipeline:
//!
//! - Commands that [replay safely](super::idempotent) go as they are.
//! - Every other command (INCR, LPUSH, APPEND, XADD ...), and from it on every later command of
//!   the same slot in the pipeline, goes into one Lua script per node and pipeline that first
//!   sets the node's marker `df2redis:checkpoint:<run>:{<tag>}:<flow>` (the tag hashes to the node's
//!   first slot) and then runs them in order. A script runs atomically and reaches the AOF and
//!   the replicas as one transaction; Redis lets a script without flags reach keys of several
//!   slots of its node. A node with nothing for the script gets a plain `SET` of its marker.
//! - Every master gets its marker with every pipeline, last on its connection.
//!
//! A connection applies its commands in order, so after any crash a node holds everything up
//! to its last marker, plus perhaps a prefix of the safe commands sent before the next script:
//! sending those again changes nothing. On resume each flow continues at its lowest marker
//! and skips, per slot, the records below the marker of the node that owns it
//! ([`SlotSkip`]); until it has passed them all, a node that was ahead keeps its marker
//! ([`SlotSkip::marker_lsn`]). Measured with `redis-cli --pipe` on the bench's journal mix (2 commands in 7
//! not safe to replay): +20% of Redis's time, against +37% for one MULTI per unsafe command
//! and +60% to +95% for scripts per command or per whole pipeline (`scripts/bench.sh` reports
//! `cluster_checkpoint_cost`).
//!
//! The markers also carry the cluster's layout (which node serves which slots, and the
//! nodes' config epochs, which change with every slot move and failover). A redirect means a
//! pipeline in flight was sent on an outdated layout: until every such pipeline is answered
//! (its redirected commands resent), markers say `unstable`, which never matches. A resume
//! needs every marker to name the current layout and no slot to be migrating; otherwise it is
//! a full resync, announced with the reason.
//!
//! A cross-slot RENAME is carried out with reads (DUMP, RESTORE); its last step, the DEL of the
//! source, runs in one transaction with `df2redis:checkpoint:<run>:done:{<slot tag>}:<flow>` = its
//! LSN, so a resume knows whether it happened.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::{Resume, ResumeAt, MARKER_PREFIX};
use crate::replay::Cmd;
use crate::target::keyspec::{self, Split};
use crate::target::slots::{key_slot, SLOTS};

/// The layout value of markers written while a redirect may leave them wrong.
pub const UNSTABLE: &str = "unstable";

/// SCAN pattern of run `run`'s done markers of cross-slot RENAMEs.
pub fn done_pattern(run: &str) -> String {
    format!("{MARKER_PREFIX}{run}:done:*")
}

/// The shortest decimal string that hashes to `slot`: `{tag}` puts a key in that slot.
pub fn slot_tag(slot: u16) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut t = vec![String::new(); SLOTS as usize];
        let mut left = SLOTS as usize;
        let mut n = 0u64;
        while left > 0 {
            let s = n.to_string();
            let slot = key_slot(s.as_bytes()) as usize;
            if t[slot].is_empty() {
                t[slot] = s;
                left -= 1;
            }
            n += 1;
        }
        t
    });
    &tags[slot as usize]
}

/// Run `run`'s marker of `flow` on the master whose first slot is `first_slot` (the run name
/// holds no braces, so the tag is the key's hashtag).
pub fn node_marker_key(run: &str, first_slot: u16, flow: usize) -> Vec<u8> {
    format!("{MARKER_PREFIX}{run}:{{{}}}:{flow}", slot_tag(first_slot)).into_bytes()
}

/// Run `run`'s done marker of `flow`'s cross-slot RENAMEs whose source is in `slot`.
pub fn done_marker_key(run: &str, slot: u16, flow: usize) -> Vec<u8> {
    format!("{MARKER_PREFIX}{run}:done:{{{}}}:{flow}", slot_tag(slot)).into_bytes()
}

/// What `CLUSTER NODES` says of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// A digest of every master's slot ranges and config epoch.
    pub fingerprint: String,
    /// Slots being migrated or imported (`[slot->-id]`, `[slot-<-id]`). A node lists only
    /// its own: a caller that needs them all asks every master.
    pub moving: Vec<u16>,
}

impl Layout {
    /// Parse `CLUSTER NODES` output.
    pub fn parse(nodes: &str) -> Result<Layout, String> {
        let mut masters: Vec<(u16, String)> = Vec::new();
        let mut moving = Vec::new();
        for line in nodes.lines().filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return Err(format!("CLUSTER NODES line {line:?} has fewer than 8 fields"));
            }
            let (epoch, slots) = (f[6], &f[8..]);
            let mut ranges = Vec::new();
            for s in slots {
                if let Some(inner) = s.strip_prefix('[') {
                    let n = inner.split(['-', '>', '<']).next().unwrap_or_default();
                    moving.push(n.parse().map_err(|_| format!("CLUSTER NODES: bad migrating slot {s:?}"))?);
                    continue;
                }
                let (a, b) = s.split_once('-').unwrap_or((s, s));
                let a: u16 = a.parse().map_err(|_| format!("CLUSTER NODES: bad slot range {s:?}"))?;
                let b: u16 = b.parse().map_err(|_| format!("CLUSTER NODES: bad slot range {s:?}"))?;
                ranges.push((a, b));
            }
            if let Some(first) = ranges.iter().map(|r| r.0).min() {
                ranges.sort_unstable();
                let text: Vec<String> = ranges.iter().map(|(a, b)| format!("{a}-{b}")).collect();
                masters.push((first, format!("{}@{epoch}", text.join(","))));
            }
        }
        masters.sort();
        let all: Vec<&str> = masters.iter().map(|m| m.1.as_str()).collect();
        let digest = crc::Crc::<u64>::new(&crc::CRC_64_XZ).checksum(all.join(";").as_bytes());
        moving.sort_unstable();
        moving.dedup();
        Ok(Layout { fingerprint: format!("{digest:016x}"), moving })
    }
}

/// The markers found on a cluster, for [`decide`].
pub struct Found {
    pub layout: Layout,
    /// Per slot, the index (into `nodes`) of its master.
    pub owner: Vec<u16>,
    /// Per node: its address and, per flow, its raw marker.
    pub nodes: Vec<(String, Vec<Option<Vec<u8>>>)>,
    /// Done markers of cross-slot RENAMEs: (key, value).
    pub done: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Per flow on a cluster: which records each slot already holds.
#[derive(Debug, PartialEq, Eq)]
pub struct SlotSkip {
    /// Per slot: records below this LSN are applied there.
    below: Vec<u64>,
    /// Per slot: the LSN of the last cross-slot RENAME (from that slot) carried out.
    done: HashMap<u16, u64>,
    /// No record from this LSN on is skipped.
    until: u64,
    /// Per master address: the next LSN its marker said at the resume.
    nodes: HashMap<String, u64>,
    /// The cluster's layout at the resume (the markers' fingerprint).
    layout: String,
}

impl SlotSkip {
    /// The LSN from which nothing is skipped.
    pub fn until(&self) -> u64 {
        self.until
    }

    /// What the marker written now on the master at `addr` may say, after a batch that ends
    /// before `next_lsn`, the cluster being in layout `layout`; `None`: the marker must say
    /// the layout is unstable (a resume from it is then a full resync).
    ///
    /// Why: every pipeline writes the flow's marker on every master, and until the flow
    /// passes [`until`](Self::until) some master was ahead of it at the resume: it holds
    /// records at and above `next_lsn` already (they are left out for it). Its marker written
    /// as `next_lsn` would go back, and a crash then makes the next resume apply those
    /// records on it again (an INCR twice, an XADD refused). So it keeps its own. If the
    /// layout changed meanwhile, slots may have moved between masters that were ahead and
    /// behind, and no LSN says what each holds: unstable, until the flow passes `until`.
    /// (A FLUSHALL or FLUSHDB cannot fall inside that window: it removes every master's
    /// markers before any is written again, and a resume without them is a full resync.)
    pub fn marker_lsn(&self, addr: &str, next_lsn: u64, layout: &str) -> Option<u64> {
        if next_lsn >= self.until {
            return Some(next_lsn);
        }
        if layout != self.layout {
            return None;
        }
        Some(self.nodes.get(addr).map_or(next_lsn, |&held| held.max(next_lsn)))
    }

    /// Where each master's marker stood at the resume: `addr next-LSN, ...` (for the log).
    pub fn describe(&self) -> String {
        let mut n: Vec<_> = self.nodes.iter().collect();
        n.sort();
        n.iter().map(|(a, l)| format!("{a} {l}")).collect::<Vec<_>>().join(", ")
    }

    /// Drop from `cmds[from..]` (the commands of the record at `lsn`) what the target holds
    /// already; multi-key commands are split per slot where their slots differ. Returns how
    /// many commands (or per-slot parts) were dropped.
    pub fn filter(&self, lsn: u64, cmds: &mut Vec<Cmd>, from: usize) -> usize {
        if lsn >= self.until {
            return 0;
        }
        let holds = |slot: u16| lsn < self.below[slot as usize];
        let mut dropped = 0;
        let made: Vec<Cmd> = cmds.drain(from..).collect();
        for c in made {
            match keyspec::split(&c) {
                Split::One(None) => cmds.push(c),
                Split::One(Some(s)) => {
                    if holds(s) {
                        dropped += 1;
                    } else {
                        cmds.push(c);
                    }
                }
                Split::PerSlot(parts) => {
                    for p in parts {
                        if p.key().is_some_and(|k| holds(key_slot(k))) {
                            dropped += 1;
                        } else {
                            cmds.push(p);
                        }
                    }
                }
                Split::CrossSlot(_) => {
                    // A cross-slot RENAME: done once its source slot's node marker passed it, or
                    // its done marker says so.
                    let src = key_slot(c.argv.get(1).unwrap_or_default());
                    if holds(src) || self.done.get(&src).is_some_and(|&d| lsn <= d) {
                        dropped += 1;
                    } else {
                        cmds.push(c);
                    }
                }
            }
        }
        dropped
    }
}

/// Decide from the markers of every master for flows `0..flows` of master `replid`.
pub fn decide(found: &Found, replid: &str, flows: usize) -> Resume {
    let mut owned: Vec<bool> = vec![false; found.nodes.len()];
    for &o in &found.owner {
        if let Some(x) = owned.get_mut(o as usize) {
            *x = true;
        }
    }
    let masters: Vec<usize> = (0..found.nodes.len()).filter(|&n| owned[n]).collect();
    if masters.iter().all(|&n| found.nodes[n].1.iter().all(Option::is_none)) {
        return Resume::Nothing;
    }
    if !found.layout.moving.is_empty() {
        return Resume::Unusable(format!(
            "slots {:?} of the target cluster are being migrated (a resume needs a settled layout)",
            found.layout.moving
        ));
    }
    // Per node and flow: the next LSN.
    let mut next = vec![vec![0u64; flows]; found.nodes.len()];
    for &n in &masters {
        let (addr, marks) = &found.nodes[n];
        for (f, out) in next[n].iter_mut().enumerate() {
            let raw = marks.get(f).and_then(Option::as_deref);
            let mark = match super::usable(raw, replid, flows, &format!("flow {f} on {addr}")) {
                Ok(m) => m,
                Err(why) => return Resume::Unusable(why),
            };
            match mark.slots.as_deref() {
                Some(l) if l == found.layout.fingerprint => {}
                Some(UNSTABLE) => {
                    return Resume::Unusable(format!(
                        "flow {f}'s checkpoint on {addr} was written while slots moved (a redirect was being followed)"
                    ))
                }
                _ => {
                    return Resume::Unusable(format!(
                        "the target cluster's layout changed since the checkpoints (slots moved, or a failover): flow {f} \
                         on {addr}"
                    ))
                }
            }
            *out = mark.next_lsn;
        }
    }
    let mut done: Vec<HashMap<u16, u64>> = vec![HashMap::new(); flows];
    for (k, v) in &found.done {
        let parsed = std::str::from_utf8(k)
            .ok()
            .and_then(|k| k.rsplit_once(':'))
            .and_then(|(_, f)| f.parse::<usize>().ok())
            .zip(std::str::from_utf8(v).ok().and_then(|v| v.parse::<u64>().ok()));
        match parsed {
            Some((f, lsn)) if f < flows => {
                let d = done[f].entry(key_slot(k)).or_insert(lsn);
                *d = (*d).max(lsn);
            }
            _ => return Resume::Unusable(format!("{:?} is not a done marker df2redis writes", String::from_utf8_lossy(k))),
        }
    }
    let mut lsns = Vec::with_capacity(flows);
    let mut skip = Vec::with_capacity(flows);
    for (f, done) in done.into_iter().enumerate() {
        let below: Vec<u64> = found.owner.iter().map(|&o| next[o as usize][f]).collect();
        let lowest = masters.iter().map(|&n| next[n][f]).min().unwrap_or(0);
        let until = below.iter().copied().chain(done.values().map(|d| d + 1)).max().unwrap_or(0);
        let nodes = masters.iter().map(|&n| (found.nodes[n].0.clone(), next[n][f])).collect();
        lsns.push(lowest);
        skip.push(std::sync::Arc::new(SlotSkip { below, done, until, nodes, layout: found.layout.fingerprint.clone() }));
    }
    Resume::At(ResumeAt { lsns, skip: Some(skip) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Stamp;

    const NODES: &str = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7002@17002 master - 0 0 3 connected 10923-16383
d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected
";

    #[test]
    fn tags_hash_to_their_slots() {
        for s in [0u16, 1, 5460, 5461, 16383] {
            assert_eq!(key_slot(&node_marker_key("run-1", s, 3)), s);
            assert_eq!(key_slot(&done_marker_key("run-1", s, 0)), s);
        }
        assert!((0..SLOTS).all(|s| slot_tag(s).len() <= 6));
    }

    #[test]
    fn layout_changes_with_moves_and_epochs_only() {
        let l = Layout::parse(NODES).unwrap();
        assert!(l.moving.is_empty());
        // Another node's view lists the same nodes in another order, with other link states.
        let reordered = NODES.lines().rev().map(|x| x.replace("myself,", "")).collect::<Vec<_>>().join("\n");
        assert_eq!(Layout::parse(&reordered).unwrap(), l);
        let failover = NODES.replace("0 0 2 connected", "0 0 4 connected");
        assert_ne!(Layout::parse(&failover).unwrap().fingerprint, l.fingerprint);
        let moved = NODES.replace("0-5460", "0-5459").replace("5461-10922", "5460-10922");
        assert_ne!(Layout::parse(&moved).unwrap().fingerprint, l.fingerprint);
        let migrating = NODES.replace("0-5460", "0-5460 [5460->-b2]");
        assert_eq!(Layout::parse(&migrating).unwrap().moving, vec![5460]);
        assert!(Layout::parse("short line").is_err());
    }

    fn found(marks: [[Option<u64>; 2]; 3], layout: &Layout) -> Found {
        let mut owner = vec![0u16; SLOTS as usize];
        owner[5461..=10922].fill(1);
        owner[10923..].fill(2);
        let stamp = |f, l| Stamp { run: "r", flow: f, replid: "id", flows: 2, next_lsn: l }.mark(Some(&layout.fingerprint)).encode();
        Found {
            layout: layout.clone(),
            owner,
            nodes: marks
                .iter()
                .enumerate()
                .map(|(n, m)| (format!("node{n}"), m.iter().enumerate().map(|(f, l)| l.map(|l| stamp(f, l))).collect()))
                .collect(),
            done: Vec::new(),
        }
    }

    #[test]
    fn resume_at_the_lowest_marker_and_skip_per_slot() {
        let l = Layout::parse(NODES).unwrap();
        let f = found([[Some(10), Some(7)], [Some(12), Some(7)], [Some(11), Some(9)]], &l);
        let Resume::At(at) = decide(&f, "id", 2) else { panic!() };
        assert_eq!(at.lsns, vec![10, 7]);
        let skip = &at.skip.as_ref().unwrap()[0];
        assert_eq!(skip.until(), 12);
        // Slot 0 (node 0, marker 10) holds LSN 10 no more; slot 8000 (node 1, 12) holds 11.
        let key0 = format!("k{{{}}}", slot_tag(0));
        let key1 = format!("k{{{}}}", slot_tag(8000));
        let mut cmds = vec![Cmd::new(0, &[b"INCR", key0.as_bytes()]), Cmd::new(0, &[b"INCR", key1.as_bytes()])];
        assert_eq!(skip.filter(11, &mut cmds, 0), 1);
        assert_eq!(cmds.len(), 1);
        assert_eq!(cmds[0].key(), Some(key0.as_bytes()));
        // A DEL over both slots keeps only the part that is not held.
        let mut cmds = vec![Cmd::new(0, &[b"DEL", key0.as_bytes(), key1.as_bytes()])];
        assert_eq!(skip.filter(10, &mut cmds, 0), 1);
        assert_eq!(cmds[0].argv.len(), 2);
        assert_eq!(cmds[0].key(), Some(key0.as_bytes()));
        let mut cmds = vec![Cmd::new(0, &[b"INCR", key1.as_bytes()])];
        assert_eq!(skip.filter(12, &mut cmds, 0), 0);

        // Markers written meanwhile: a master ahead keeps its own (node1 holds up to 12), one
        // behind gets the batch's; past `until` all do; a layout change makes them unstable.
        let fp = l.fingerprint.as_str();
        assert_eq!([skip.marker_lsn("node0", 11, fp), skip.marker_lsn("node1", 11, fp)], [Some(11), Some(12)]);
        assert_eq!([skip.marker_lsn("node1", 12, fp), skip.marker_lsn("node1", 20, "other")], [Some(12), Some(20)]);
        assert_eq!(skip.marker_lsn("node0", 11, "other"), None);

        // Missing, foreign, unstable and outdated markers are not resumed from.
        assert!(matches!(decide(&found([[Some(1), None], [Some(1), Some(1)], [Some(1), Some(1)]], &l), "id", 2), Resume::Unusable(_)));
        assert!(matches!(decide(&found([[None, None], [None, None], [None, None]], &l), "id", 2), Resume::Nothing));
        assert!(matches!(decide(&f, "other", 2), Resume::Unusable(_)));
        let mut old = found([[Some(1), Some(1)]; 3], &l);
        old.layout = Layout::parse(&NODES.replace("0 0 2 connected", "0 0 5 connected")).unwrap();
        assert!(matches!(decide(&old, "id", 2), Resume::Unusable(w) if w.contains("layout changed")));
        let unstable = Layout { fingerprint: UNSTABLE.into(), moving: vec![] };
        let mut u = found([[Some(1), Some(1)]; 3], &unstable);
        u.layout = l.clone();
        assert!(matches!(decide(&u, "id", 2), Resume::Unusable(w) if w.contains("slots moved")));
        let mut m = found([[Some(1), Some(1)]; 3], &l);
        m.layout.moving = vec![3];
        assert!(matches!(decide(&m, "id", 2), Resume::Unusable(w) if w.contains("migrated")));
    }

    #[test]
    fn a_done_marker_skips_its_rename() {
        let l = Layout::parse(NODES).unwrap();
        let mut f = found([[Some(5), Some(5)]; 3], &l);
        let src = format!("a{{{}}}", slot_tag(100));
        let dst = format!("b{{{}}}", slot_tag(9000));
        f.done.push((done_marker_key("r", 100, 0), b"5".to_vec()));
        let Resume::At(at) = decide(&f, "id", 2) else { panic!() };
        let skip = &at.skip.as_ref().unwrap()[0];
        let mut cmds = vec![Cmd::new(0, &[b"RENAME", src.as_bytes(), dst.as_bytes()])];
        assert_eq!(skip.filter(5, &mut cmds, 0), 1);
        let mut cmds = vec![Cmd::new(0, &[b"RENAME", src.as_bytes(), dst.as_bytes()])];
        assert_eq!(at.skip.as_ref().unwrap()[1].filter(5, &mut cmds, 0), 0);
    }
}
