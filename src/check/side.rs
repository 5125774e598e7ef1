//! One side of the comparison: a single server (the source, or a standalone target) or a
//! Redis Cluster, whose keyed commands are routed to the master owning the key's slot.
//!
//! A pipeline is split into one pipeline per master, in order; `MOVED` reloads the slot map
//! and resends the command to the new owner, `ASK` sends it with `ASKING` to the importing
//! node, so a check survives a resharding in progress. Reads only: resending is harmless.

use std::collections::VecDeque;

use crate::target::resp::Reply;
use crate::target::slots::key_slot;

use super::conn::{cmd, Args, Conn};
use super::CheckError;
use crate::tls::TlsClient;

const SLOTS: usize = 16384;
const MAX_REDIRECTS: usize = 8;

pub enum Side {
    One(Conn),
    Cluster(Cluster),
}

pub struct Cluster {
    seeds: Vec<String>,
    auth: Option<(String, String)>,
    tls: Option<TlsClient>,
    nodes: Vec<Conn>,
    /// Slot -> index in `nodes` of its master.
    owner: Vec<u16>,
    /// Per pipeline in flight: for each node, the indices of the commands it got.
    pending: VecDeque<Vec<Vec<usize>>>,
}

impl Side {
    /// Connect to the first reachable of `seeds`; a server with cluster support enabled makes
    /// this a cluster side (every master, found through `CLUSTER SLOTS`).
    pub fn connect(side: &'static str, seeds: &[String], auth: Option<(&str, &str)>, tls: Option<&TlsClient>) -> Result<Side, CheckError> {
        let mut last = None;
        for seed in seeds {
            let mut c = match Conn::connect(side, seed, auth, tls) {
                Ok(c) => c,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            return match c.query(&cmd(&[b"CLUSTER", b"INFO"]))? {
                Reply::Bulk(Some(info)) if String::from_utf8_lossy(&info).contains("cluster_state:") => {
                    let mut cl = Cluster {
                        seeds: seeds.to_vec(),
                        auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
                        tls: tls.cloned(),
                        nodes: vec![c],
                        owner: vec![u16::MAX; SLOTS],
                        pending: VecDeque::new(),
                    };
                    cl.refresh()?;
                    Ok(Side::Cluster(cl))
                }
                // "ERR This instance has cluster support disabled", or a Dragonfly answering
                // without cluster_state: one server.
                _ => Ok(Side::One(c)),
            };
        }
        Err(last.unwrap_or_else(|| CheckError::Usage(format!("no {side} address given"))))
    }

    /// One server, whatever it is: a master of a Dragonfly cluster is read alone, its
    /// cluster's other masters being sources of their own.
    pub fn one(side: &'static str, addr: &str, auth: Option<(&str, &str)>, tls: Option<&TlsClient>) -> Result<Side, CheckError> {
        Ok(Side::One(Conn::connect(side, addr, auth, tls)?))
    }

        pub fn is_cluster(&self) -> bool {
        matches!(self, Side::Cluster(_))
    }

    /// The connections to scan: the server, or every master of the cluster.
    pub fn scan_nodes(&mut self) -> Vec<&mut Conn> {
        match self {
            Side::One(c) => vec![c],
            Side::Cluster(cl) => {
                let mut used: Vec<u16> = cl.owner.clone();
                used.sort_unstable();
                used.dedup();
                cl.nodes.iter_mut().enumerate().filter(|(i, _)| used.binary_search(&(*i as u16)).is_ok()).map(|(_, c)| c).collect()
            }
        }
    }

    /// Send keyed commands (each with its key at `args[1]`, or `MEMORY USAGE key`) as one
    /// pipeline in `db`; read the
    /// replies with [`recv`](Self::recv), passing the same commands.
    pub fn send(&mut self, db: u32, cmds: &[Args]) -> Result<(), CheckError> {
        match self {
            Side::One(c) => c.send(db, cmds.iter()),
            Side::Cluster(cl) => cl.send(cmds),
        }
    }

    /// The replies of the oldest pipeline in flight, in command order.
    pub fn recv(&mut self, cmds: &[Args]) -> Result<Vec<Reply>, CheckError> {
        match self {
            Side::One(c) => c.recv(),
            Side::Cluster(cl) => cl.recv(cmds),
        }
    }

    /// Send and read back.
    pub fn run(&mut self, db: u32, cmds: &[Args]) -> Result<Vec<Reply>, CheckError> {
        self.send(db, cmds)?;
        self.recv(cmds)
    }
}

impl Cluster {
    fn auth(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    fn node(&mut self, addr: &str) -> Result<usize, CheckError> {
        if let Some(i) = self.nodes.iter().position(|n| n.addr() == addr) {
            return Ok(i);
        }
        let c = Conn::connect("target", addr, self.auth(), self.tls.as_ref())?;
        self.nodes.push(c);
        Ok(self.nodes.len() - 1)
    }

    /// Reload the slot map from a known node or a seed.
    fn refresh(&mut self) -> Result<(), CheckError> {
        let mut candidates: Vec<String> = self.nodes.iter().map(|n| n.addr().to_string()).collect();
        candidates.extend(self.seeds.iter().cloned());
        let mut last = None;
        for addr in candidates {
            let got = self.node(&addr).and_then(|i| self.nodes[i].query(&cmd(&[b"CLUSTER", b"SLOTS"])));
            let reply = match got {
                Ok(r) => r,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let ranges = match parse_slots(&reply, addr.rsplit_once(':').map_or("", |h| h.0)) {
                Ok(r) => r,
                Err(e) => {
                    last = Some(CheckError::Failed(format!("target {addr}: CLUSTER SLOTS: {e}")));
                    continue;
                }
            };
            let mut owner = vec![u16::MAX; SLOTS];
            for (lo, hi, master) in ranges {
                let i = self.node(&master)? as u16;
                owner[lo as usize..=hi as usize].fill(i);
            }
            if let Some(s) = owner.iter().position(|&o| o == u16::MAX) {
                last = Some(CheckError::Failed(format!("target {addr}: slot {s} has no master (the cluster is not fully covered)")));
                continue;
            }
            self.owner = owner;
            return Ok(());
        }
        Err(last.unwrap_or_else(|| CheckError::Failed("target: no cluster node reachable".into())))
    }

    fn owner_of(&self, c: &Args) -> usize {
        // Every keyed command sent has its key at argv[1], but MEMORY USAGE <key>.
        let at = if c.first().is_some_and(|n| n.eq_ignore_ascii_case(b"MEMORY")) { 2 } else { 1 };
        c.get(at).map_or(self.owner[0], |k| self.owner[key_slot(k) as usize]) as usize
    }

    fn send(&mut self, cmds: &[Args]) -> Result<(), CheckError> {
        let mut per_node: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        for (i, c) in cmds.iter().enumerate() {
            per_node[self.owner_of(c)].push(i);
        }
        for (n, list) in per_node.iter().enumerate() {
            if !list.is_empty() {
                self.nodes[n].send(0, list.iter().map(|&i| &cmds[i]))?;
            }
        }
        self.pending.push_back(per_node);
        Ok(())
    }

    fn recv(&mut self, cmds: &[Args]) -> Result<Vec<Reply>, CheckError> {
        let Some(per_node) = self.pending.pop_front() else { return Ok(Vec::new()) };
        let mut out = vec![Reply::Bulk(None); cmds.len()];
        let mut redirected = Vec::new();
        for (n, list) in per_node.iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            for (&i, r) in list.iter().zip(self.nodes[n].recv()?) {
                match r {
                    Reply::Error(e) if e.starts_with("MOVED ") || e.starts_with("ASK ") => redirected.push((i, e)),
                    r => out[i] = r,
                }
            }
        }
        for (i, e) in redirected {
            out[i] = self.follow(&cmds[i], e)?;
        }
        Ok(out)
    }

    /// Resend a redirected command until it is answered (bounded).
    fn follow(&mut self, c: &Args, mut e: String) -> Result<Reply, CheckError> {
        for _ in 0..MAX_REDIRECTS {
            let mut parts = e.split_whitespace();
            let (kind, _slot, addr) = (parts.next().unwrap_or(""), parts.next(), parts.next().unwrap_or("").to_string());
            let reply = if kind == "MOVED" {
                self.refresh()?;
                let n = self.node(&addr)?;
                self.nodes[n].query_in(0, c)?
            } else {
                let n = self.node(&addr)?;
                self.nodes[n].send(0, [cmd(&[b"ASKING"]), c.clone()].iter())?;
                self.nodes[n].recv()?.pop().unwrap_or(Reply::Bulk(None))
            };
            match reply {
                Reply::Error(next) if next.starts_with("MOVED ") || next.starts_with("ASK ") => e = next,
                r => return Ok(r),
            }
        }
        Err(CheckError::Failed(format!("target: {} still redirected after {MAX_REDIRECTS} attempts: {e}", super::report::show_args(c))))
    }
}

/// `CLUSTER SLOTS` -> (first slot, last slot, master host:port); an empty host means the
/// host the reply came from.
pub fn parse_slots(reply: &Reply, this_host: &str) -> Result<Vec<(u16, u16, String)>, String> {
    let Reply::Array(Some(ranges)) = reply else { return Err(format!("unexpected reply {reply:?}")) };
    let mut out = Vec::new();
    for r in ranges {
        let Reply::Array(Some(r)) = r else { return Err("a range is not an array".into()) };
        let (Some(Reply::Int(a)), Some(Reply::Int(b)), Some(Reply::Array(Some(master)))) = (r.first(), r.get(1), r.get(2)) else {
            return Err(format!("unexpected range {r:?}"));
        };
        let (Some(Reply::Bulk(Some(host))), Some(Reply::Int(port))) = (master.first(), master.get(1)) else {
            return Err(format!("unexpected master {master:?}"));
        };
        let in_range = |v: i64| (0..SLOTS as i64).contains(&v);
        if !in_range(*a) || !in_range(*b) || a > b {
            return Err(format!("bad slot range {a}-{b}"));
        }
        let host = String::from_utf8_lossy(host);
        let host = if host.is_empty() || host == "?" { this_host.to_string() } else { host.into_owned() };
        out.push((*a as u16, *b as u16, format!("{host}:{port}")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ranges() {
        let b = |s: &str| Reply::Bulk(Some(s.as_bytes().to_vec()));
        let range = |a, z, host: &str, port| Reply::Array(Some(vec![Reply::Int(a), Reply::Int(z), Reply::Array(Some(vec![b(host), Reply::Int(port)]))]));
        let r = Reply::Array(Some(vec![range(0, 5460, "10.0.0.1", 7000), range(5461, 16383, "", 7001)]));
        assert_eq!(parse_slots(&r, "h").unwrap(), vec![(0, 5460, "10.0.0.1:7000".to_string()), (5461, 16383, "h:7001".to_string())]);
        assert!(parse_slots(&Reply::Array(Some(vec![range(9, 3, "h", 1)])), "h").is_err());
        assert!(parse_slots(&Reply::Array(Some(vec![range(0, 16384, "h", 1)])), "h").is_err());
        assert!(parse_slots(&Reply::Int(3), "h").is_err());
    }
}
