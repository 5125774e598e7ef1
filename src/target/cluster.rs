//! A Redis Cluster target: one connection per master, commands routed by slot.
//!
//! A writer's batch is split into one pipeline per master node, in batch order, so every key's
//! commands stay in order on the one connection that owns its slot. Multi-key records the
//! master split per shard are split again per slot (`keyspec`). Redirects are followed in batch
//! order: `MOVED` refreshes the slot map and resends to the new owner, `ASK` sends `ASKING` and
//! the command to the importing node, `TRYAGAIN` (a multi-key command during a migration)
//! retries after a short pause. A cross-slot `RENAME` is carried out as DUMP + PTTL +
//! RESTORE + DEL, which keeps the value and TTL exact; other cross-slot commands stop the run.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::keyspec::{self, slot_of, Split};
use super::resp::Reply;
use super::slots::key_slot;
use super::standalone::{Standalone, TargetError};
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
}

pub struct Cluster {
    auth: Option<(String, String)>,
    /// Every node over TLS (a `tls-cluster yes` cluster announces its TLS ports to TLS clients).
    tls: Option<TlsClient>,
    seeds: Vec<String>,
    nodes: Vec<Node>,
    owner: Vec<u16>,
    /// Per pipeline in flight: the routed commands and, per node, which of them it got.
    pending: VecDeque<(Vec<Routed>, Vec<Vec<usize>>)>,
    pub moved: u64,
    pub asked: u64,
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
            pending: VecDeque::new(),
            moved: 0,
            asked: 0,
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
        let conn = Standalone::connect(addr, self.auth(), self.tls.as_ref())?;
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

    /// Send a batch as one pipeline per master. Batches with cross-slot RENAMEs are carried out
    /// synchronously here (the caller made sure nothing else is in flight).
    /// Send a batch, each command to the master of its slot. `hints` (empty, or one per
    /// command) are the flow threads' [`keyspec::slot_hint`]s.
    pub fn send(&mut self, cmds: &[Cmd], hints: &[u16]) -> Result<(), TargetError> {
        let mut routed: Vec<Routed> = Vec::with_capacity(cmds.len());
        for (i, c) in cmds.iter().enumerate() {
            Self::check_db(c)?;
            let split = match hints.get(i) {
                Some(&h) if h != keyspec::NO_HINT => Split::One(Some(h)),
                _ => keyspec::split(c),
            };
            match split {
                Split::One(slot) => routed.push(Routed { src: i, part: None, slot }),
                Split::PerSlot(parts) => {
                    for p in parts {
                        // Parts always carry their key at argv[1].
                        let slot = p.key().map(key_slot);
                        routed.push(Routed { src: i, part: Some(p), slot });
                    }
                }
                Split::CrossSlot(reason) => {
                    // Everything routed so far goes first, then the emulation, then the rest.
                    self.dispatch(cmds, std::mem::take(&mut routed))?;
                    self.recv(cmds)?;
                    self.cross_slot(c, &reason)?;
                }
            }
        }
        self.dispatch(cmds, routed)
    }

    fn dispatch(&mut self, cmds: &[Cmd], routed: Vec<Routed>) -> Result<(), TargetError> {
        let mut per_node: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        for (k, r) in routed.iter().enumerate() {
            // Keyless commands (none should reach a cluster writer) go to the first master.
            let node = r.slot.map_or(self.owner[0], |s| self.owner[s as usize]) as usize;
            per_node[node].push(k);
        }
        for (n, list) in per_node.iter().enumerate() {
            if !list.is_empty() {
                let it = list.iter().map(|&k| routed[k].part.as_ref().unwrap_or(&cmds[routed[k].src]));
                self.nodes[n].conn.send_iter(it)?;
            }
        }
        self.pending.push_back((routed, per_node));
        Ok(())
    }

    /// Read the replies of the oldest pipeline; follow redirects in batch order.
    pub fn recv(&mut self, cmds: &[Cmd]) -> Result<(), TargetError> {
        let Some((routed, per_node)) = self.pending.pop_front() else { return Ok(()) };
        let mut redirects: Vec<(usize, String)> = Vec::new();
        let mut first_err: Option<TargetError> = None;
        for (n, list) in per_node.iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let replies = self.nodes[n].conn.recv_raw()?;
            for (&k, reply) in list.iter().zip(replies) {
                match reply {
                    Reply::Error(e) if is_redirect(&e) => redirects.push((k, e)),
                    Reply::Error(e) => {
                        if first_err.is_none() {
                            let c = routed[k].part.as_ref().unwrap_or(&cmds[routed[k].src]);
                            first_err = Some(TargetError::Rejected {
                                index: routed[k].src,
                                command: format!("{} on {}", c.describe(), self.nodes[n].addr),
                                error: e,
                                more: 0,
                            });
                        }
                    }
                    _ => self.nodes[n].writes += 1,
                }
            }
        }
        redirects.sort_by_key(|r| r.0);
        for (k, e) in redirects {
            let c = routed[k].part.clone().unwrap_or_else(|| cmds[routed[k].src].clone());
            self.redirected(&c, e)?;
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Resend one redirected command until it lands (bounded).
    fn redirected(&mut self, c: &Cmd, mut e: String) -> Result<(), TargetError> {
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
                _ => {
                    // TRYAGAIN: a multi-key command meets a slot being migrated.
                    std::thread::sleep(Duration::from_millis(10 << attempt.min(6)));
                    let node = slot_of(&c.argv).map_or(self.owner[0], |s| self.owner[s as usize]) as usize;
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
    fn cross_slot(&mut self, c: &Cmd, reason: &str) -> Result<(), TargetError> {
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
        self.run(&Cmd::new(0, &[b"DEL", &src]))?;
        log::debug!("cluster: {name} {} -> {} across slots done as DUMP/RESTORE/DEL", show(&src), show(&dst));
        Ok(())
    }

    /// Whether every master holds no key.
    pub fn all_empty(&mut self) -> Result<bool, TargetError> {
        for addr in self.masters() {
            let n = self.node_index(&addr)?;
            if !matches!(self.nodes[n].conn.query(&[b"DBSIZE"])?, Reply::Int(0)) {
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
