//! A Redis Cluster target: one connection per master, commands routed by slot.
//!
//! A writer's batch is split into one pipeline per master node, in batch order, so every key's
//! commands stay in order on the one connection that owns its slot. Multi-key records the
//! master split per shard are split again per slot (`keyspec`). Redirects are followed in batch
//! order: `MOVED` refreshes the slot map and resends to the new owner, `ASK` sends `ASKING` and
//! the command to the importing node, `TRYAGAIN` (a multi-key command during a migration)
//! retries after a short pause. A cross-slot `RENAME` is carried out as DUMP + PTTL +
//! RESTORE + DEL, which keeps the value and TTL exact; other cross-slot commands stop the run.
//!
//! With checkpoints, each pipeline also carries its flow's marker to every master, and the
//! commands that are unsafe to apply twice run in one script per node with it: the scheme and
//! why it is exact are in [`crate::checkpoint::cluster`].

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::keyspec::{self, slot_of, Split};
use super::resp::{self, Reply};
use super::slots::key_slot;
use super::standalone::{Standalone, TargetError};
use super::Marks;
use crate::checkpoint::cluster::{self as ck, SlotSkip, UNSTABLE};
use crate::checkpoint::Stamp;
use crate::protocol::cursor::show;
use crate::replay::Cmd;
use crate::tls::TlsClient;

const SLOTS: usize = 16384;
const MAX_REDIRECTS: usize = 16;

struct Node {
    addr: String,
    conn: Standalone,
    writes: u64,
}

/// Where one command of a batch went.
struct Routed {
    /// Index in the caller's batch (for error messages).
    src: usize,
    /// The command as sent, when it differs from the caller's (a per-slot part).
    part: Option<Cmd>,
    slot: Option<u16>,
    /// Unsafe to apply twice: runs in the node's checkpoint script (with checkpoints).
    unsafe_twice: bool,
}

/// What one node was sent of a pipeline: plain commands (indices into the routed list), then
/// the checkpoint script with its commands, or the marker alone.
#[derive(Default)]
struct NodePart {
    plain: Vec<usize>,
    script: Vec<usize>,
    tail: Tail,
}

/// A pipeline's replies, sorted out: what to resend where it was redirected (index into
/// `routed`, the error), and what the target refused (index, node, error, how many more).
struct Answered {
    routed: Vec<Routed>,
    redirects: Vec<(usize, String)>,
    refused: Vec<(usize, usize, String, usize)>,
}

/// A node's checkpoint marker: key, value.
type Marker = (Vec<u8>, Vec<u8>);

/// Per node address, the bytes of a pipeline ([`Cluster::encode_batch`]).
pub type NodeBytes = Vec<(String, Vec<u8>)>;

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Tail {
    #[default]
    None,
    Marker,
    Script,
}

/// The checkpoint script: the node's marker first (if it cannot be written, nothing runs),
/// then the commands in order, each with `pcall` so that one refused command neither stops
/// the others nor undoes the marker; it answers `[index, error, ...]` for the refused ones.
/// `ARGV`: marker key, marker value, then per command its argument count and its arguments.
/// No flags line: Redis then lets the script reach keys of every slot of its node.
const SCRIPT: &str = "local m = redis.pcall('SET', ARGV[1], ARGV[2])
if type(m) == 'table' and m.err then return m end
local errs, i, n, last = {}, 3, 0, #ARGV
while i <= last do
  local c = tonumber(ARGV[i])
  n = n + 1
  local r = redis.pcall(unpack(ARGV, i + 1, i + c))
  if type(r) == 'table' and r.err then
    errs[#errs + 1] = n
    errs[#errs + 1] = r.err
  end
  i = i + c + 1
end
return errs
";

/// Lua passes at most ~8000 values to a call (`unpack`); longer commands are split where that
/// is exact (pushes) and refused otherwise.
const SCRIPT_MAX_ARGS: usize = 7000;
/// Elements per split push.
const PUSH_CHUNK: usize = 4000;

pub struct Cluster {
    auth: Option<(String, String)>,
    /// Every node over TLS (a `tls-cluster yes` cluster announces its TLS ports to TLS clients).
    tls: Option<TlsClient>,
    seeds: Vec<String>,
    nodes: Vec<Node>,
    owner: Vec<u16>,
    /// The name of every connection (`CLIENT SETNAME`), set with [`set_name`](Self::set_name).
    name: Option<String>,
    /// Per node: the first slot it owns (its marker's tag), `None` for a node that owns none.
    firsts: Vec<Option<u16>>,
    /// The layout digest markers carry ([`ck::Layout`]).
    layout: String,
    /// Pipelines sent and answered; markers say [`UNSTABLE`] until every pipeline sent before
    /// the last redirect (`unstable_until`) is answered and its redirects followed.
    sent: u64,
    received: u64,
    unstable_until: u64,
    /// Slots already sent to a checkpoint script in the pipeline being built (bitset).
    taint: Vec<u64>,
    /// Per pipeline in flight: the routed commands and what each node got.
    pending: VecDeque<(Vec<Routed>, Vec<NodePart>)>,
    /// Pipelines whose replies were read ahead of their `recv` (see [`recv`](Self::recv)).
    answered: VecDeque<Answered>,
    pub moved: u64,
    pub asked: u64,
    /// RESTOREs refused since the last [`take_refused_restores`](Self::take_refused_restores):
    /// (command index in its batch, error and node).
    refused_restores: Vec<(usize, String)>,
}

fn err(addr: &str, msg: String) -> TargetError {
    TargetError::Io { addr: addr.to_string(), error: std::io::Error::other(msg) }
}

impl Cluster {
    /// Connect through any of `seeds` and learn the slot map.
    pub fn connect(seeds: &[String], auth: Option<(&str, &str)>, tls: Option<&TlsClient>) -> Result<Cluster, TargetError> {
        let mut c = Cluster {
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            tls: tls.cloned(),
            seeds: seeds.to_vec(),
            nodes: Vec::new(),
            owner: vec![u16::MAX; SLOTS],
            name: None,
            firsts: Vec::new(),
            layout: String::new(),
            sent: 0,
            received: 0,
            unstable_until: 0,
            taint: vec![0; SLOTS / 64],
            pending: VecDeque::new(),
            answered: VecDeque::new(),
            moved: 0,
            asked: 0,
            refused_restores: Vec::new(),
        };
        c.refresh()?;
        Ok(c)
    }

    fn auth(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    fn node_index(&mut self, addr: &str) -> Result<usize, TargetError> {
        if let Some(i) = self.nodes.iter().position(|n| n.addr == addr) {
            return Ok(i);
        }
        let mut conn = Standalone::connect(addr, self.auth(), self.tls.as_ref())?;
        if let Some(name) = &self.name {
            conn.set_name(name)?;
        }
        log::info!("cluster: connected to master {addr}");
        self.nodes.push(Node { addr: addr.to_string(), conn, writes: 0 });
        Ok(self.nodes.len() - 1)
    }

    /// Reload the slot map (`CLUSTER SLOTS`) from a known node or a seed.
    pub fn refresh(&mut self) -> Result<(), TargetError> {
        let mut candidates: Vec<String> = self.nodes.iter().map(|n| n.addr.clone()).collect();
        candidates.extend(self.seeds.iter().cloned());
        let mut last = None;
        for addr in candidates {
            let reply = match self.node_index(&addr).and_then(|i| self.nodes[i].conn.query(&[b"CLUSTER", b"SLOTS"])) {
                Ok(r) => r,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let Reply::Array(Some(ranges)) = reply else {
                last = Some(err(&addr, format!("CLUSTER SLOTS answered {reply:?}")));
                continue;
            };
            let mut owner = vec![u16::MAX; SLOTS];
            for r in ranges {
                let Reply::Array(Some(r)) = r else { continue };
                let (Some(Reply::Int(a)), Some(Reply::Int(b)), Some(Reply::Array(Some(master)))) = (r.first(), r.get(1), r.get(2)) else {
                    continue;
                };
                let host = match master.first() {
                    Some(Reply::Bulk(Some(h))) => String::from_utf8_lossy(h).into_owned(),
                    _ => continue,
                };
                let port = match master.get(1) {
                    Some(Reply::Int(p)) => *p,
                    _ => continue,
                };
                let host = if host.is_empty() { addr.rsplit_once(':').map_or(host, |h| h.0.to_string()) } else { host };
                let idx = self.node_index(&format!("{host}:{port}"))? as u16;
                let (lo, hi) = ((*a).clamp(0, SLOTS as i64 - 1) as usize, (*b).clamp(0, SLOTS as i64 - 1) as usize);
                if lo <= hi {
                    owner[lo..=hi].fill(idx);
                }
            }
            if let Some(s) = owner.iter().position(|&o| o == u16::MAX) {
                last = Some(err(&addr, format!("slot {s} has no master (cluster not fully covered)")));
                continue;
            }
            self.owner = owner;
            self.firsts = vec![None; self.nodes.len()];
            for (s, &o) in self.owner.iter().enumerate().rev() {
                self.firsts[o as usize] = Some(s as u16);
            }
            self.layout = match self.query_layout() {
                Ok(l) => l.fingerprint,
                Err(e) => {
                    log::warn!("cluster: CLUSTER NODES: {e}; checkpoints written now will not be resumable");
                    "unknown".into()
                }
            };
            return Ok(());
        }
        Err(last.unwrap_or_else(|| err("cluster", "no seed reachable".into())))
    }

    pub fn masters(&self) -> Vec<String> {
        let mut used: Vec<u16> = self.owner.clone();
        used.sort_unstable();
        used.dedup();
        used.into_iter().map(|i| self.nodes[i as usize].addr.clone()).collect()
    }

    /// Writes acknowledged per master node.
    pub fn node_writes(&self) -> BTreeMap<String, u64> {
        self.nodes.iter().map(|n| (n.addr.clone(), n.writes)).collect()
    }

    /// Whether this batch needs the connections to itself (a cross-slot RENAME is emulated
    /// with reads): the caller completes every pipeline in flight first.
    pub fn needs_exclusive(&self, cmds: &[Cmd], hints: &[u16]) -> bool {
        cmds.iter().enumerate().any(|(i, c)| {
            if hints.get(i).is_some_and(|&h| h != keyspec::NO_HINT) {
                return false; // one slot: not a cross-slot RENAME
            }
            let n = c.argv.get(0).unwrap_or_default();
            (n.eq_ignore_ascii_case(b"RENAME") || n.eq_ignore_ascii_case(b"RENAMENX")) && matches!(keyspec::split(c), Split::CrossSlot(_))
        })
    }

    fn check_db(c: &Cmd) -> Result<(), TargetError> {
        if c.db != 0 {
            return Err(TargetError::Rejected {
                index: 0,
                command: c.describe(),
                error: format!(
                    "Redis Cluster has only db 0 and source db {} is not mapped to it (config db_map, e.g. db_map = {}:0)",
                    c.db, c.db
                ),
                more: 0,
            });
        }
        Ok(())
    }

    /// The layout as `CLUSTER NODES` shows it now (asked of the first slot's master).
    pub fn query_layout(&mut self) -> Result<ck::Layout, TargetError> {
        self.node_layout(self.owner[0] as usize)
    }

    /// The layout as node `n` shows it (`CLUSTER NODES`).
    fn node_layout(&mut self, n: usize) -> Result<ck::Layout, TargetError> {
        let addr = self.nodes[n].addr.clone();
        match self.nodes[n].conn.query(&[b"CLUSTER", b"NODES"])? {
            Reply::Bulk(Some(text)) => ck::Layout::parse(&String::from_utf8_lossy(&text)).map_err(|e| err(&addr, e)),
            other => Err(err(&addr, format!("CLUSTER NODES answered {other:?}"))),
        }
    }

    /// Every master's checkpoint markers for flows `0..flows`, with the layout now.
    pub fn read_markers(&mut self, run: &str, flows: usize) -> Result<ck::Found, TargetError> {
        // The digest as the first slot's master sees it (as `refresh` takes it); the moving
        // slots from every master, since a node lists only its own.
        let first = self.owner[0] as usize;
        let mut layout = ck::Layout { fingerprint: String::new(), moving: Vec::new() };
        for n in 0..self.nodes.len() {
            if self.firsts.get(n).copied().flatten().is_none() {
                continue;
            }
            let l = self.node_layout(n)?;
            if n == first {
                layout.fingerprint = l.fingerprint;
            }
            layout.moving.extend(l.moving);
        }
        layout.moving.sort_unstable();
        layout.moving.dedup();
        let mut nodes = Vec::with_capacity(self.nodes.len());
        let mut done = Vec::new();
        for n in 0..self.nodes.len() {
            let mut marks = vec![None; flows];
            if let Some(first) = self.firsts.get(n).copied().flatten() {
                let conn = &mut self.nodes[n].conn;
                for (f, m) in marks.iter_mut().enumerate() {
                    *m = get(conn, &ck::node_marker_key(run, first, f))?;
                }
                for k in conn.keys_matching(ck::done_pattern(run).as_bytes())? {
                    if let Some(v) = get(conn, &k)? {
                        done.push((k, v));
                    }
                }
            }
            nodes.push((self.nodes[n].addr.clone(), marks));
        }
        Ok(ck::Found { layout, owner: self.owner.clone(), nodes, done })
    }

    /// Send a batch, each command to the master of its slot. `hints` (empty, or one per
    /// command) are the flow threads' [`keyspec::slot_hint`]s. With `marks`, the batch carries
    /// its checkpoint ([`crate::checkpoint::cluster`]). A cross-slot RENAME is carried out
    /// synchronously here (the caller made sure nothing else is in flight).
    pub fn send(&mut self, cmds: &[Cmd], hints: &[u16], marks: Option<&Marks>) -> Result<(), TargetError> {
        let resumed = marks.and_then(|m| m.resumed);
        let mut routed: Vec<Routed> = Vec::with_capacity(cmds.len());
        for (i, c) in cmds.iter().enumerate() {
            Self::check_db(c)?;
            match self.route(&mut routed, cmds, i, hints, marks) {
                None => {}
                Some(reason) => {
                    // Everything routed so far goes first, checkpointed up to this record (a
                    // RENAME is a record of its own), then the emulation, then the rest.
                    let lsn = marks.and_then(|m| m.lsns.get(i).copied());
                    let before = marks.zip(lsn).map(|(m, l)| Stamp { next_lsn: l, ..m.stamp });
                    self.dispatch(cmds, std::mem::take(&mut routed), before, resumed)?;
                    self.recv(cmds)?;
                    self.cross_slot(c, &reason, marks.zip(lsn).map(|(m, l)| (m.stamp.run, m.stamp.flow, l)))?;
                }
            }
        }
        self.dispatch(cmds, routed, marks.map(|m| m.stamp), resumed)
    }

    /// Route command `i` (split per slot where its keys span slots); a cross-slot command
    /// that cannot be split is not routed: its reason is returned.
    fn route(&self, routed: &mut Vec<Routed>, cmds: &[Cmd], i: usize, hints: &[u16], marks: Option<&Marks>) -> Option<String> {
        let unsafe_twice = marks.is_some_and(|m| m.unsafe_twice.get(i).copied().unwrap_or(true));
        let split = match hints.get(i) {
            Some(&h) if h != keyspec::NO_HINT => Split::One(Some(h)),
            _ => keyspec::split(&cmds[i]),
        };
        match split {
            Split::One(slot) => routed.push(Routed { src: i, part: None, slot, unsafe_twice }),
            Split::PerSlot(parts) => {
                for p in parts {
                    // Parts always carry their key at argv[1].
                    let slot = p.key().map(key_slot);
                    routed.push(Routed { src: i, part: Some(p), slot, unsafe_twice });
                }
            }
            Split::CrossSlot(reason) => return Some(reason),
        }
        None
    }

    fn dispatch(&mut self, cmds: &[Cmd], routed: Vec<Routed>, stamp: Option<Stamp>, resumed: Option<&SlotSkip>) -> Result<(), TargetError> {
        let (parts, markers) = self.plan(cmds, &routed, stamp, resumed)?;
        for (n, (part, marker)) in parts.iter().zip(&markers).enumerate() {
            if part.plain.is_empty() && part.tail == Tail::None {
                continue;
            }
            let replies = part.plain.len() + usize::from(part.tail != Tail::None);
            self.nodes[n].conn.send_with(replies, |buf| encode_part(buf, part, marker.as_ref(), &routed, cmds))?;
        }
        self.sent += 1;
        self.pending.push_back((routed, parts));
        Ok(())
    }

    /// What each node gets of a pipeline, and its marker (key, value) with checkpoints: from a
    /// slot's first command that is unsafe to apply twice on, its commands go to the node's
    /// script, in order; every master gets its marker.
    fn plan(
        &mut self,
        cmds: &[Cmd],
        routed: &[Routed],
        stamp: Option<Stamp>,
        resumed: Option<&SlotSkip>,
    ) -> Result<(Vec<NodePart>, Vec<Option<Marker>>), TargetError> {
        let mut parts: Vec<NodePart> = (0..self.nodes.len()).map(|_| NodePart::default()).collect();
        let marking = stamp.is_some();
        let mut refused = None;
        for (k, r) in routed.iter().enumerate() {
            // Keyless commands (none should reach a cluster writer) go to the first master.
            let node = r.slot.map_or(self.owner[0], |s| self.owner[s as usize]) as usize;
            let s = r.slot.unwrap_or(0) as usize;
            if marking && (r.unsafe_twice || self.taint[s / 64] & (1 << (s % 64)) != 0) {
                self.taint[s / 64] |= 1 << (s % 64);
                let c = r.part.as_ref().unwrap_or(&cmds[r.src]);
                if c.argv.len() > SCRIPT_MAX_ARGS && !is_push(c) && refused.is_none() {
                    refused = Some(TargetError::Rejected {
                        index: r.src,
                        command: c.describe(),
                        error: format!(
                            "it has {} arguments, too many for the cluster checkpoint script (Lua passes at most ~8000); \
                             replicate with --checkpoints off to apply it (a restart is then a full resync)",
                            c.argv.len()
                        ),
                        more: 0,
                    });
                }
                parts[node].script.push(k);
            } else {
                parts[node].plain.push(k);
            }
        }
        for p in &parts {
            for &k in &p.script {
                let s = routed[k].slot.unwrap_or(0) as usize;
                self.taint[s / 64] &= !(1 << (s % 64));
            }
        }
        if let Some(e) = refused {
            return Err(e);
        }
        let layout = if self.received < self.unstable_until { UNSTABLE } else { self.layout.as_str() };
        let mut markers = Vec::with_capacity(parts.len());
        for (n, part) in parts.iter_mut().enumerate() {
            let marker = match (stamp, self.firsts.get(n).copied().flatten()) {
                (Some(st), Some(first)) => {
                    // A resumed flow's marker never goes back below what the master held
                    // ([`SlotSkip::marker_lsn`]).
                    let (next_lsn, layout) = match resumed.map(|r| r.marker_lsn(&self.nodes[n].addr, st.next_lsn, layout)) {
                        None => (st.next_lsn, layout),
                        Some(Some(l)) => (l, layout),
                        Some(None) => (st.next_lsn, UNSTABLE),
                    };
                    Some((ck::node_marker_key(st.run, first, st.flow), Stamp { next_lsn, ..st }.mark(Some(layout)).encode()))
                }
                _ => None,
            };
            if marker.is_none() && !part.script.is_empty() {
                // Routing follows the owner map, which also names every node's first slot.
                return Err(err(&self.nodes[n].addr, "checkpoint script for a node that owns no slot".into()));
            }
            part.tail = match (&marker, part.script.is_empty()) {
                (None, _) => Tail::None,
                (Some(_), true) => Tail::Marker,
                (Some(_), false) => Tail::Script,
            };
            markers.push(marker);
        }
        Ok((parts, markers))
    }

    /// The bytes [`send`](Self::send) would write to each node for this batch, without
    /// sending them (for tests that apply a prefix, as a crash would). Cross-slot RENAMEs,
    /// which need reads, are refused.
    #[doc(hidden)]
    pub fn encode_batch(&mut self, cmds: &[Cmd], hints: &[u16], marks: Option<&Marks>) -> Result<NodeBytes, TargetError> {
        let mut routed = Vec::with_capacity(cmds.len());
        for (i, c) in cmds.iter().enumerate() {
            if let Some(reason) = self.route(&mut routed, cmds, i, hints, marks) {
                return Err(err("cluster", format!("{}: {reason}", c.describe())));
            }
        }
        let (parts, markers) = self.plan(cmds, &routed, marks.map(|m| m.stamp), marks.and_then(|m| m.resumed))?;
        let mut out = Vec::new();
        for (n, (part, marker)) in parts.iter().zip(&markers).enumerate() {
            let mut buf = Vec::new();
            encode_part(&mut buf, part, marker.as_ref(), &routed, cmds);
            if !buf.is_empty() {
                out.push((self.nodes[n].addr.clone(), buf));
            }
        }
        Ok(out)
    }

    /// Read the replies of the oldest pipeline; follow redirects in batch order.
    ///
    /// A redirect is followed with commands of its own on the node's connection, which must
    /// then carry nothing else: the replies of every later pipeline in flight are read first
    /// (kept for their own `recv`, whose redirects come after these, in order).
    pub fn recv(&mut self, cmds: &[Cmd]) -> Result<(), TargetError> {
        let got = match self.answered.pop_front() {
            Some(g) => g,
            None => match self.read_oldest()? {
                Some(g) => g,
                None => return Ok(()),
            },
        };
        if !got.redirects.is_empty() {
            while !self.pending.is_empty() {
                if let Some(later) = self.read_oldest()? {
                    self.answered.push_back(later);
                }
            }
        }
        self.act(got, cmds)
    }

    /// The replies of the oldest pipeline in flight, sorted out.
    fn read_oldest(&mut self) -> Result<Option<Answered>, TargetError> {
        let Some((routed, parts)) = self.pending.pop_front() else { return Ok(None) };
        let mut got = Answered { routed, redirects: Vec::new(), refused: Vec::new() };
        for (n, part) in parts.iter().enumerate() {
            if part.plain.is_empty() && part.tail == Tail::None {
                continue;
            }
            let addr = &self.nodes[n].addr.clone();
            let mut replies = self.nodes[n].conn.recv_raw()?.into_iter();
            for (&k, reply) in part.plain.iter().zip(&mut replies) {
                match reply {
                    Reply::Error(e) if is_redirect(&e) => got.redirects.push((k, e)),
                    Reply::Error(e) => got.refused.push((k, n, e, 0)),
                    _ => self.nodes[n].writes += 1,
                }
            }
            match (part.tail, replies.next()) {
                (Tail::None, _) => {}
                (Tail::Marker, Some(Reply::Error(e))) => {
                    return Err(err(addr, format!("writing the checkpoint marker failed: {e}")));
                }
                (Tail::Marker, _) => {}
                (Tail::Script, Some(Reply::Array(Some(errs)))) => {
                    self.nodes[n].writes += (part.script.len().saturating_sub(errs.len() / 2)) as u64;
                    for pair in errs.chunks(2) {
                        let (Some(Reply::Int(i)), Some(Reply::Bulk(Some(e)))) = (pair.first(), pair.get(1)) else {
                            return Err(err(addr, format!("the checkpoint script answered {pair:?}")));
                        };
                        let Some(&k) = usize::try_from(*i - 1).ok().and_then(|i| part.script.get(i)) else {
                            return Err(err(addr, format!("the checkpoint script named command {i} of {}", part.script.len())));
                        };
                        let e = String::from_utf8_lossy(e).into_owned();
                        if is_redirect(&e) || e.contains("non local key") {
                            got.redirects.push((k, e));
                        } else {
                            got.refused.push((k, n, e, 0));
                        }
                    }
                }
                (Tail::Script, Some(Reply::Error(e))) => {
                    let n_cmds = part.script.len();
                    let e = format!("{e} (the checkpoint script was refused: none of its {n_cmds} commands ran)");
                    got.refused.push((part.script[0], n, e, n_cmds - 1));
                }
                (Tail::Script, other) => return Err(err(addr, format!("the checkpoint script answered {other:?}"))),
            }
        }
        got.redirects.sort_by_key(|r| r.0);
        Ok(Some(got))
    }

    /// Follow an answered pipeline's redirects, and report its first refused command.
    fn act(&mut self, got: Answered, cmds: &[Cmd]) -> Result<(), TargetError> {
        let cmd_of = |k: usize| got.routed[k].part.clone().unwrap_or_else(|| cmds[got.routed[k].src].clone());
        for (k, e) in &got.redirects {
            self.redirected(&cmd_of(*k), e.clone())?;
        }
        self.received += 1;
        // Refused RESTOREs of whole commands are the writer's to write as commands.
        let (restores, others): (Vec<_>, Vec<_>) = got.refused.into_iter().partition(|r| {
            got.routed[r.0].part.is_none() && r.3 == 0 && crate::replay::dump::is_restore(&cmds[got.routed[r.0].src])
        });
        for (k, n, e, _) in restores {
            self.refused_restores.push((got.routed[k].src, format!("{e} (on {})", self.nodes[n].addr)));
        }
        let mut refused = others.into_iter();
        let Some((k, n, error, more)) = refused.next() else { return Ok(()) };
        let more = more + refused.map(|r| 1 + r.3).sum::<usize>();
        let c = cmd_of(k);
        Err(TargetError::Rejected { index: got.routed[k].src, command: format!("{} on {}", c.describe(), self.nodes[n].addr), error, more })
    }

    /// Resend one redirected command until it lands (bounded).
    fn redirected(&mut self, c: &Cmd, mut e: String) -> Result<(), TargetError> {
        // Markers sent meanwhile may cover commands that are only now being resent.
        self.unstable_until = self.sent;
        for attempt in 0..MAX_REDIRECTS {
            let mut parts = e.split_whitespace();
            let kind = parts.next().unwrap_or_default().to_string();
            let reply = match kind.as_str() {
                "MOVED" => {
                    self.moved += 1;
                    let _slot = parts.next();
                    let addr = parts.next().unwrap_or_default().to_string();
                    log::debug!("cluster: {} moved to {addr}", c.describe());
                    self.refresh()?;
                    let n = self.node_index(&addr)?;
                    self.nodes[n].conn.apply_raw(std::iter::once(c))?.pop()
                }
                "ASK" => {
                    self.asked += 1;
                    let _slot = parts.next();
                    let addr = parts.next().unwrap_or_default().to_string();
                    let n = self.node_index(&addr)?;
                    let asking = Cmd::new(0, &[b"ASKING"]);
                    self.nodes[n].conn.apply_raw([&asking, c].into_iter())?.pop()
                }
                "TRYAGAIN" => {
                    // A multi-key command meets a slot being migrated.
                    std::thread::sleep(Duration::from_millis(10 << attempt.min(6)));
                    let node = slot_of(&c.argv).map_or(self.owner[0], |s| self.owner[s as usize]) as usize;
                    self.nodes[node].conn.apply_raw(std::iter::once(c))?.pop()
                }
                _ => {
                    // A checkpoint script met a key its node does not serve (the script's form
                    // of MOVED or ASK): ask the map again, and send the command where it says.
                    let slot = slot_of(&c.argv).unwrap_or(0) as usize;
                    let before = self.owner[slot];
                    self.refresh()?;
                    if self.owner[slot] != before {
                        self.moved += 1;
                    }
                    let node = self.owner[slot] as usize;
                    self.nodes[node].conn.apply_raw(std::iter::once(c))?.pop()
                }
            }
            .unwrap_or(Reply::Bulk(None));
            match reply {
                Reply::Error(next) if is_redirect(&next) => e = next,
                Reply::Error(error) => {
                    return Err(TargetError::Rejected { index: 0, command: c.describe(), error, more: 0 });
                }
                _ => return Ok(()),
            }
        }
        Err(TargetError::Rejected { index: 0, command: c.describe(), error: format!("still redirected after {MAX_REDIRECTS} attempts: {e}"), more: 0 })
    }

    /// Run a keyed command on the master that owns its slot, following redirects.
    /// Run one command about `key` on the master of its slot, following a redirect once.
    pub fn query_key(&mut self, key: &[u8], args: &[&[u8]]) -> Result<Reply, TargetError> {
        let slot = key_slot(key) as usize;
        let r = self.nodes[self.owner[slot] as usize].conn.query_db0(args)?;
        match r {
            Reply::Error(e) if is_redirect(&e) => {
                self.refresh()?;
                self.nodes[self.owner[slot] as usize].conn.query_db0(args)
            }
            other => Ok(other),
        }
    }

    fn run(&mut self, c: &Cmd) -> Result<Reply, TargetError> {
        let slot = slot_of(&c.argv).unwrap_or(0);
        let n = self.owner[slot as usize] as usize;
        let r = self.nodes[n].conn.apply_raw(std::iter::once(c))?.pop().unwrap_or(Reply::Bulk(None));
        match r {
            Reply::Error(e) if is_redirect(&e) => {
                self.redirected(c, e)?;
                // The redirected command ran; its reply is not needed by callers that use
                // `run` for writes. For reads, ask again now that the map is fresh.
                let n = self.owner[slot as usize] as usize;
                Ok(self.nodes[n].conn.apply_raw(std::iter::once(c))?.pop().unwrap_or(Reply::Bulk(None)))
            }
            other => Ok(other),
        }
    }

    /// `RENAME`/`RENAMENX` across slots as DUMP + PTTL + RESTORE + DEL: the value and the TTL
    /// stay exact. Anything else that spans slots has no exact equivalent: stop.
    /// With checkpoints (`done`: run name, flow and LSN), the final DEL runs in one transaction with the
    /// flow's done marker for the source slot, so a resume knows whether the RENAME happened.
    fn cross_slot(&mut self, c: &Cmd, reason: &str, done: Option<(&str, usize, u64)>) -> Result<(), TargetError> {
        let name = c.argv.name_upper();
        let (Some(src), Some(dst)) = (c.argv.get(1), c.argv.get(2)) else {
            return Err(TargetError::Rejected { index: 0, command: c.describe(), error: reason.to_string(), more: 0 });
        };
        if name != "RENAME" && name != "RENAMENX" {
            return Err(TargetError::Rejected {
                index: 0,
                command: c.describe(),
                error: format!("{reason}; Redis Cluster cannot run it across slots and there is no exact equivalent"),
                more: 0,
            });
        }
        let (src, dst) = (src.to_vec(), dst.to_vec());
        if name == "RENAMENX" {
            if let Reply::Int(1) = self.run(&Cmd::new(0, &[b"EXISTS", &dst]))? {
                return Ok(()); // RENAMENX does nothing when the destination exists.
            }
        }
        let payload = match self.run(&Cmd::new(0, &[b"DUMP", &src]))? {
            Reply::Bulk(Some(p)) => p,
            other => {
                return Err(TargetError::Rejected {
                    index: 0,
                    command: c.describe(),
                    error: format!("cross-slot {name} emulation: DUMP {} answered {other:?} (no such key on the target)", show(&src)),
                    more: 0,
                })
            }
        };
        let ttl = match self.run(&Cmd::new(0, &[b"PTTL", &src]))? {
            Reply::Int(t) if t > 0 => t,
            _ => 0,
        };
        let restore = Cmd::new(0, &[b"RESTORE", &dst, ttl.to_string().as_bytes(), &payload, b"REPLACE"]);
        if let Reply::Error(e) = self.run(&restore)? {
            return Err(TargetError::Rejected { index: 0, command: restore.describe(), error: e, more: 0 });
        }
        match done {
            None => {
                self.run(&Cmd::new(0, &[b"DEL", &src]))?;
            }
            Some((run, flow, lsn)) => {
                let slot = key_slot(&src);
                let (key, lsn) = (ck::done_marker_key(run, slot, flow), lsn.to_string());
                let tx = [
                    Cmd::new(0, &[b"MULTI"]),
                    Cmd::new(0, &[b"DEL", &src]),
                    Cmd::new(0, &[b"SET", &key, lsn.as_bytes()]),
                    Cmd::new(0, &[b"EXEC"]),
                ];
                let n = self.owner[slot as usize] as usize;
                let replies = self.nodes[n].conn.apply_raw(tx.iter())?;
                if !matches!(replies.last(), Some(Reply::Array(Some(r))) if r.len() == 2) {
                    return Err(TargetError::Rejected {
                        index: 0,
                        command: c.describe(),
                        error: format!("cross-slot {name} emulation: DEL with its done marker answered {replies:?}"),
                        more: 0,
                    });
                }
            }
        }
        log::debug!("cluster: {name} {} -> {} across slots done as DUMP/RESTORE/DEL", show(&src), show(&dst));
        Ok(())
    }

    /// The RESTOREs refused since the last call.
    pub fn take_refused_restores(&mut self) -> Vec<(usize, String)> {
        std::mem::take(&mut self.refused_restores)
    }

    /// Name every connection, present and future (`CLIENT SETNAME`).
    pub fn set_name(&mut self, name: &str) -> Result<(), TargetError> {
        self.name = Some(name.to_string());
        for n in &mut self.nodes {
            n.conn.set_name(name)?;
        }
        Ok(())
    }

    /// Whether every master holds no key.
    pub fn all_empty(&mut self) -> Result<bool, TargetError> {
        for addr in self.masters() {
            let n = self.node_index(&addr)?;
            if !self.nodes[n].conn.db0_holds_only_internal()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Run `f` on the connection of every master; the results are summed.
    pub fn on_every_master_conn(&mut self, mut f: impl FnMut(&mut Standalone) -> Result<u64, TargetError>) -> Result<u64, TargetError> {
        let mut total = 0;
        for addr in self.masters() {
            let n = self.node_index(&addr)?;
            total += f(&mut self.nodes[n].conn)?;
        }
        Ok(total)
    }

    /// UNLINK the keys `pick` selects in the slots `ranges`, slot by slot on the master that
    /// owns each (`CLUSTER GETKEYSINSLOT`): the work is the keys of those slots, not a SCAN of
    /// every master. Keys `pick` leaves stay in the slot and come back in the next page, so each
    /// page asks for as many more as were kept. Returns how many were deleted.
    pub fn unlink_in_slots(&mut self, ranges: &[(u16, u16)], pick: &dyn Fn(&[u8]) -> bool) -> Result<u64, TargetError> {
        const PAGE: usize = 1000;
        let mut deleted = 0;
        for &(a, b) in ranges {
            for slot in a..=b {
                let n = self.owner[slot as usize] as usize;
                let conn = &mut self.nodes[n].conn;
                let mut kept = 0;
                loop {
                    let want = PAGE + kept;
                    let reply = conn.query(&[b"CLUSTER", b"GETKEYSINSLOT", slot.to_string().as_bytes(), want.to_string().as_bytes()])?;
                    let Reply::Array(Some(keys)) = reply else {
                        return Err(err(conn.addr(), format!("CLUSTER GETKEYSINSLOT {slot} answered {reply:?}")));
                    };
                    let got = keys.len();
                    let cmds: Vec<Cmd> = keys
                        .into_iter()
                        .filter_map(|k| if let Reply::Bulk(Some(k)) = k { Some(k) } else { None })
                        .filter(|k| pick(k))
                        .map(|k| Cmd::new(0, &[b"UNLINK", &k]))
                        .collect();
                    kept = got - cmds.len();
                    for r in conn.apply_raw(cmds.iter())? {
                        match r {
                            Reply::Int(d) => deleted += d as u64,
                            Reply::Error(e) => return Err(err(conn.addr(), format!("UNLINK in slot {slot}: {e}"))),
                            _ => {}
                        }
                    }
                    if got < want {
                        break;
                    }
                }
            }
        }
        Ok(deleted)
    }

    /// Run a keyless command (FLUSHALL/FLUSHDB) once on every master.
    pub fn on_every_master(&mut self, c: &Cmd) -> Result<(), TargetError> {
        for addr in self.masters() {
            let n = self.node_index(&addr)?;
            if let Some(Reply::Error(e)) = self.nodes[n].conn.apply_raw(std::iter::once(c))?.pop() {
                return Err(TargetError::Rejected { index: 0, command: format!("{} on {addr}", c.describe()), error: e, more: 0 });
            }
            self.nodes[n].writes += 1;
        }
        Ok(())
    }
}

fn is_redirect(e: &str) -> bool {
    e.starts_with("MOVED ") || e.starts_with("ASK ") || e.starts_with("TRYAGAIN")
}

fn get(conn: &mut Standalone, key: &[u8]) -> Result<Option<Vec<u8>>, TargetError> {
    match conn.query(&[b"GET", key])? {
        Reply::Bulk(v) => Ok(v),
        other => Err(err(conn.addr(), format!("GET {} answered {other:?}", show(key)))),
    }
}

/// One node's share of a pipeline: its plain commands, then its script or its marker.
fn encode_part(buf: &mut Vec<u8>, part: &NodePart, marker: Option<&Marker>, routed: &[Routed], cmds: &[Cmd]) {
    let cmd_of = |k: usize| routed[k].part.as_ref().unwrap_or(&cmds[routed[k].src]);
    for &k in &part.plain {
        cmd_of(k).argv.write_resp(buf);
    }
    match (part.tail, marker) {
        (Tail::Marker, Some((key, value))) => resp::encode(buf, [b"SET".as_slice(), key, value].into_iter()),
        (Tail::Script, Some((key, value))) => encode_script(buf, key, value, part.script.iter().map(|&k| cmd_of(k))),
        _ => {}
    }
}

fn is_push(c: &Cmd) -> bool {
    let n = c.argv.get(0).unwrap_or_default();
    [b"LPUSH".as_slice(), b"RPUSH", b"LPUSHX", b"RPUSHX"].iter().any(|p| n.eq_ignore_ascii_case(p))
}

/// `EVAL <SCRIPT> 0 key value` followed, per command, by its argument count and arguments
/// (pushes longer than the script can pass split into pushes of [`PUSH_CHUNK`] elements).
fn encode_script<'a>(buf: &mut Vec<u8>, key: &[u8], value: &[u8], cmds: impl Iterator<Item = &'a Cmd> + Clone) {
    let mut num = [0u8; 20];
    let chunks = |c: &Cmd| if c.argv.len() > SCRIPT_MAX_ARGS { (c.argv.len() - 2).div_ceil(PUSH_CHUNK) } else { 1 };
    let total: usize = 5 + cmds.clone().map(|c| if chunks(c) == 1 { 1 + c.argv.len() } else { (c.argv.len() - 2) + 3 * chunks(c) }).sum::<usize>();
    buf.push(b'*');
    buf.extend_from_slice(crate::protocol::items::digits(&mut num, total));
    buf.extend_from_slice(b"\r\n");
    let bulk = |buf: &mut Vec<u8>, a: &[u8]| {
        let mut num = [0u8; 20];
        buf.push(b'$');
        buf.extend_from_slice(crate::protocol::items::digits(&mut num, a.len()));
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(a);
        buf.extend_from_slice(b"\r\n");
    };
    for a in [b"EVAL".as_slice(), SCRIPT.as_bytes(), b"0", key, value] {
        bulk(buf, a);
    }
    for c in cmds {
        if chunks(c) == 1 {
            bulk(buf, crate::protocol::items::digits(&mut num, c.argv.len()));
            c.argv.write_args_resp(buf);
            continue;
        }
        let (name, k) = (c.argv.get(0).unwrap_or_default(), c.argv.get(1).unwrap_or_default());
        let elements: Vec<&[u8]> = c.argv.iter().skip(2).collect();
        for part in elements.chunks(PUSH_CHUNK) {
            bulk(buf, crate::protocol::items::digits(&mut num, 2 + part.len()));
            bulk(buf, name);
            bulk(buf, k);
            for e in part {
                bulk(buf, e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    /// The script's arguments as Redis will see them (a RESP array read back as a reply).
    fn script_args(cmds: &[Cmd]) -> Vec<Vec<u8>> {
        let mut buf = Vec::new();
        encode_script(&mut buf, b"mk", b"mv", cmds.iter());
        let mut r = std::io::BufReader::new(&buf[..]);
        let Reply::Array(Some(items)) = resp::read_reply(&mut r).unwrap() else { panic!("not an array") };
        assert!(r.fill_buf().unwrap().is_empty(), "bytes after the command");
        items.into_iter().map(|i| if let Reply::Bulk(Some(b)) = i { b } else { panic!("{i:?}") }).collect()
    }

    #[test]
    fn script_arguments_count_each_command_and_split_long_pushes() {
        let long: Vec<Vec<u8>> = (0..PUSH_CHUNK + 10).map(|i| format!("e{i}").into_bytes()).collect();
        let mut push: Vec<&[u8]> = vec![b"RPUSH", b"l"];
        push.extend(long.iter().map(Vec::as_slice));
        let cmds = [Cmd::new(0, &[b"INCR", b"k"]), Cmd::new(0, &push), Cmd::new(0, &[b"APPEND", b"s", b"x"])];
        let a = script_args(&cmds);
        assert_eq!(&a[..5], &[b"EVAL".to_vec(), SCRIPT.as_bytes().to_vec(), b"0".to_vec(), b"mk".to_vec(), b"mv".to_vec()]);
        assert_eq!(&a[5..8], &[b"2".to_vec(), b"INCR".to_vec(), b"k".to_vec()]);
        // Short enough: one command as it is.
        assert_eq!(a.len(), 5 + 3 + (1 + push.len()) + 4);
        // Too long for Lua: pushes of PUSH_CHUNK elements, in order.
        let mut push: Vec<&[u8]> = vec![b"LPUSH", b"l"];
        let longer: Vec<Vec<u8>> = (0..SCRIPT_MAX_ARGS + 5).map(|i| format!("e{i}").into_bytes()).collect();
        push.extend(longer.iter().map(Vec::as_slice));
        let a = script_args(&[Cmd::new(0, &push)]);
        assert_eq!(a[5], (2 + PUSH_CHUNK).to_string().into_bytes());
        assert_eq!(&a[6..8], &[b"LPUSH".to_vec(), b"l".to_vec()]);
        let second = 5 + 1 + 2 + PUSH_CHUNK;
        assert_eq!(a[second], (2 + longer.len() - PUSH_CHUNK).to_string().into_bytes());
        assert_eq!(&a[second + 1..second + 3], &[b"LPUSH".to_vec(), b"l".to_vec()]);
        let elements: Vec<&Vec<u8>> = a[8..second].iter().chain(&a[second + 3..]).collect();
        assert_eq!(elements, longer.iter().collect::<Vec<_>>());
    }
}
