//! The Redis side: connections that apply [`Cmd`](crate::replay::Cmd)s in pipelines, to a
//! standalone server or a cluster (detected with `CLUSTER INFO`).

mod cluster;
pub mod keyspec;
pub mod resp;
pub mod server;
pub mod slots;
mod standalone;

use std::collections::BTreeMap;

pub use cluster::Cluster;
pub use standalone::{Standalone, TargetError};

use crate::checkpoint::name::{writer_name, LEGACY_WRITER_NAME};
use crate::checkpoint::{Owner, Stamp};
use crate::replay::Cmd;
use crate::tls::TlsClient;

/// A batch's checkpoint: what it says, and per command whether it is unsafe to apply twice
/// ([`crate::checkpoint::idempotent`]) and its record's LSN (both for a cluster; empty
/// otherwise).
pub struct Marks<'a> {
    pub stamp: Stamp<'a>,
    pub unsafe_twice: &'a [bool],
    pub lsns: &'a [u64],
    /// A cluster flow resumed from markers that differed between masters: no master's marker
    /// may go back below its own until the flow has passed them all
    /// ([`SlotSkip::marker_lsn`](crate::checkpoint::cluster::SlotSkip::marker_lsn)).
    pub resumed: Option<&'a crate::checkpoint::cluster::SlotSkip>,
}

// A handful of these live for a whole session (one per writer); boxing the standalone
// connection would add an indirection to every pipeline for no memory worth saving.
#[allow(clippy::large_enum_variant)]
pub enum Target {
    Standalone(Standalone),
    Cluster(Box<Cluster>),
}

impl Target {
    /// Connect to the first reachable seed; a node with cluster support enabled makes this a
    /// cluster target, using every seed to learn the topology. With `tls`, every connection
    /// (every cluster node too) is TLS.
    pub fn connect(seeds: &[String], auth: Option<(&str, &str)>, tls: Option<&TlsClient>) -> Result<Target, TargetError> {
        let mut last = None;
        for seed in seeds {
            let mut probe = match Standalone::connect(seed, auth, tls) {
                Ok(p) => p,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            return match probe.query(&[b"CLUSTER", b"INFO"])? {
                resp::Reply::Bulk(Some(info)) if String::from_utf8_lossy(&info).contains("cluster_state:") => {
                    let state = String::from_utf8_lossy(&info).lines().find(|l| l.starts_with("cluster_state:")).unwrap_or("").to_string();
                    if !state.ends_with("ok") {
                        log::warn!("cluster {seed}: {state}");
                    }
                    Ok(Target::Cluster(Box::new(Cluster::connect(seeds, auth, tls)?)))
                }
                // "ERR This instance has cluster support disabled": a standalone server.
                _ => Ok(Target::Standalone(probe)),
            };
        }
        Err(last.unwrap_or_else(|| TargetError::Io { addr: String::new(), error: std::io::Error::other("no target address given") }))
    }

    /// Name this target's connections as a writer of run `run` (see
    /// [`close_stale_writers`](Self::close_stale_writers)).
    pub fn name_writer(&mut self, run: &str) -> Result<(), TargetError> {
        let name = writer_name(run);
        match self {
            Target::Standalone(s) => s.set_name(&name),
            Target::Cluster(c) => c.set_name(&name),
        }
    }

    /// Close the connections earlier writers left on the target (every master of a cluster),
    /// before the checkpoints are read. A writer that crashed or whose session ended may
    /// leave pipelines the server has received and not yet run (a catch-up sends hundreds of
    /// KB at a time); run after the markers are read, they would apply records the new
    /// session applies again. Closing the connection drops what was not run, so the markers
    /// read afterwards say exactly what the target holds. Returns how many were closed, `None`
    /// when the server does not allow it (an ACL without CLIENT LIST / CLIENT KILL).
    ///
    /// Only run `run`'s writers are closed: other runs' writers on the same target are theirs.
    /// With `legacy`, the unnamed writers of an earlier version too (their markers were found).
    pub fn close_stale_writers(&mut self, run: &str, legacy: bool) -> Result<Option<u64>, TargetError> {
        let own = writer_name(run);
        let names: Vec<&str> = if legacy { vec![own.as_str(), LEGACY_WRITER_NAME] } else { vec![own.as_str()] };
        let mut total = Some(0);
        let kill = |s: &mut Standalone| -> Result<u64, TargetError> {
            for n in &names {
                let k = s.kill_named(n)?;
                total = total.zip(k).map(|(a, b)| a + b);
            }
            Ok(0)
        };
        self.for_each_master(kill)?;
        Ok(total)
    }

    /// Run `f` on the server, or on every master of a cluster; its counts are added up.
    fn for_each_master(&mut self, mut f: impl FnMut(&mut Standalone) -> Result<u64, TargetError>) -> Result<u64, TargetError> {
        match self {
            Target::Standalone(s) => f(s),
            Target::Cluster(c) => c.on_every_master_conn(f),
        }
    }

    /// Run one command about one key (db 0; on a cluster, on the master of its slot).
    pub fn query_key(&mut self, key: &[u8], args: &[&[u8]]) -> Result<resp::Reply, TargetError> {
        match self {
            Target::Standalone(s) => s.query_db0(args),
            Target::Cluster(c) => c.query_key(key, args),
        }
    }

    /// What the target is ([`server::ServerInfo`]): for a cluster, the least capable of its
    /// masters, so nothing is sent that one of them would refuse.
    pub fn server_info(&mut self) -> Result<server::ServerInfo, TargetError> {
        fn info_error(s: &Standalone, error: String) -> TargetError {
            TargetError::Rejected { index: 0, command: format!("INFO SERVER on {}", s.addr()), error, more: 0 }
        }
        fn one(s: &mut Standalone) -> Result<server::ServerInfo, TargetError> {
            let info = match s.query(&[b"INFO", b"SERVER"])? {
                resp::Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
                other => return Err(info_error(s, format!("answered {other:?}"))),
            };
            let modules = s.query(&[b"MODULE", b"LIST"])?;
            server::ServerInfo::parse(&info, &modules).map_err(|e| info_error(s, e))
        }
        let mut all = Vec::new();
        self.for_each_master(|s| {
            all.push(one(s)?);
            Ok(0)
        })?;
        Ok(server::ServerInfo::least(&all).expect("a target has a server"))
    }

    /// Whether the target holds no key but df2redis's own markers and leases (every db of a
    /// server, every master of a cluster).
    pub fn is_empty(&mut self) -> Result<bool, TargetError> {
        match self {
            Target::Standalone(s) => match s.query(&[b"INFO", b"KEYSPACE"])? {
                resp::Reply::Bulk(Some(info)) => {
                    let info = String::from_utf8_lossy(&info).into_owned();
                    let dbs: Vec<&str> = info.lines().filter(|l| l.starts_with("db")).collect();
                    if dbs.iter().any(|l| !l.starts_with("db0:")) {
                        return Ok(false);
                    }
                    if dbs.is_empty() {
                        return Ok(true);
                    }
                    s.db0_holds_only_internal()
                }
                _ => Ok(false),
            },
            Target::Cluster(c) => c.all_empty(),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }

    /// Whether the batch must run with nothing else in flight (cluster RENAME emulation).
    /// `hints`: as for [`send_batch`](Self::send_batch).
    pub fn needs_exclusive(&self, cmds: &[Cmd], hints: &[u16]) -> bool {
        match self {
            Target::Standalone(_) => false,
            Target::Cluster(c) => c.needs_exclusive(cmds, hints),
        }
    }

    pub fn send(&mut self, cmds: &[Cmd]) -> Result<(), TargetError> {
        self.send_batch(cmds, &[], None)
    }

    /// Send a batch; with `marks` it carries its flow's checkpoint, applied exactly with the
    /// commands it covers: as one MULTI ... EXEC on a server, as per-node markers and scripts
    /// on a cluster ([`crate::checkpoint::cluster`]). `hints` are the commands'
    /// [`keyspec::slot_hint`]s (or empty), used by a cluster.
    pub fn send_batch(&mut self, cmds: &[Cmd], hints: &[u16], marks: Option<&Marks>) -> Result<(), TargetError> {
        match self {
            Target::Standalone(s) => {
                let m = marks.map(|m| (crate::checkpoint::marker_key(m.stamp.run, m.stamp.flow), m.stamp.mark(None).encode()));
                s.send_marked(cmds, m.as_ref().map(|(k, v)| (k.as_slice(), v.as_slice())))
            }
            Target::Cluster(c) => c.send(cmds, hints, marks),
        }
    }

    /// A cluster: the bytes [`send_batch`](Self::send_batch) would write to each node (see
    /// [`Cluster::encode_batch`]); `None` for a server.
    #[doc(hidden)]
    pub fn encode_batch(&mut self, cmds: &[Cmd], hints: &[u16], marks: Option<&Marks>) -> Option<Result<cluster::NodeBytes, TargetError>> {
        match self {
            Target::Standalone(_) => None,
            Target::Cluster(c) => Some(c.encode_batch(cmds, hints, marks)),
        }
    }

    /// Run `run`'s checkpoint markers found in the target for flows `0..flows`, and what they
    /// allow.
    pub fn read_resume(&mut self, run: &str, replid: &str, flows: usize) -> Result<crate::checkpoint::Resume, TargetError> {
        match self {
            Target::Standalone(s) => {
                let marks = (0..flows)
                    .map(|i| match s.query_db0(&[b"GET", &crate::checkpoint::marker_key(run, i)])? {
                        resp::Reply::Bulk(v) => Ok(v),
                        other => Err(TargetError::Io {
                            addr: s.addr().to_string(),
                            error: std::io::Error::other(format!("GET of a checkpoint marker answered {other:?}")),
                        }),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(crate::checkpoint::decide(&marks, replid, flows))
            }
            Target::Cluster(c) => Ok(crate::checkpoint::cluster::decide(&c.read_markers(run, flows)?, replid, flows)),
        }
    }

    /// Delete run `run`'s checkpoint markers (db 0; every master of a cluster). Returns how
    /// many.
    pub fn delete_markers(&mut self, run: &str) -> Result<u64, TargetError> {
        self.delete_matching(&crate::checkpoint::run_pattern(run))
    }

    /// Delete the markers of the earlier unnamed format. Returns how many.
    pub fn delete_legacy_markers(&mut self) -> Result<u64, TargetError> {
        self.delete_where(&|k| crate::checkpoint::owner_of(k) == Some(Owner::Legacy))
    }

    /// Delete every df2redis key: every run's markers, the earlier format's, and the leases.
    pub fn delete_all_internal(&mut self) -> Result<u64, TargetError> {
        self.delete_where(&crate::checkpoint::is_internal)
    }

    fn delete_matching(&mut self, pattern: &str) -> Result<u64, TargetError> {
        self.for_each_master(|s| s.delete_matching(pattern.as_bytes()))
    }

    fn delete_where(&mut self, pick: &dyn Fn(&[u8]) -> bool) -> Result<u64, TargetError> {
        let all = |s: &mut Standalone| -> Result<u64, TargetError> {
            let mut n = 0;
            for k in s.keys_matching(b"df2redis:*")?.into_iter().filter(|k| pick(k)) {
                if let resp::Reply::Int(d) = s.query_db0(&[b"DEL", &k])? {
                    n += d as u64;
                }
            }
            Ok(n)
        };
        self.for_each_master(all)
    }

    /// df2redis's own keys on the target (db 0; every master of a cluster): markers of every
    /// run and format, and leases. One SCAN of the keyspace (MATCH `df2redis:*`).
    pub fn internal_keys(&mut self) -> Result<Vec<Vec<u8>>, TargetError> {
        let mut keys = Vec::new();
        self.for_each_master(|s| {
            keys.extend(s.keys_matching(b"df2redis:*")?.into_iter().filter(|k| crate::checkpoint::is_internal(k)));
            Ok(0)
        })?;
        Ok(keys)
    }

    /// Who has checkpoint markers on the target: run names, and whether the earlier unnamed
    /// format is there.
    pub fn marker_owners(&mut self) -> Result<std::collections::BTreeSet<Owner>, TargetError> {
        Ok(self.internal_keys()?.iter().filter_map(|k| crate::checkpoint::owner_of(k)).collect())
    }

    /// The run names whose lease is on the target.
    pub fn lease_names(&mut self) -> Result<Vec<String>, TargetError> {
        Ok(self.internal_keys()?.iter().filter_map(|k| crate::checkpoint::lease_owner(k)).collect())
    }

    /// Delete (UNLINK) the keys `pick` selects in the target dbs `dbs` (a cluster: db 0 of
    /// every master), never df2redis's own keys. Returns how many.
    pub fn unlink_where(&mut self, dbs: &[u32], pick: &dyn Fn(&[u8]) -> bool) -> Result<u64, TargetError> {
        let pick = |k: &[u8]| !crate::checkpoint::is_internal(k) && pick(k);
        match self {
            Target::Standalone(s) => {
                let mut n = 0;
                for &db in dbs {
                    n += s.unlink_where(db, &pick)?;
                }
                Ok(n)
            }
            Target::Cluster(c) => c.on_every_master_conn(|s| s.unlink_where(0, &pick)),
        }
    }

    /// Delete (UNLINK) the keys in the hash slots `owned` that `pick` selects: on a server a
    /// SCAN of the dbs `dbs`; on a cluster slot by slot on each slot's master. Never
    /// df2redis's own keys. Returns how many.
    pub fn unlink_in_slots(&mut self, dbs: &[u32], owned: &crate::source::cluster::SlotRanges, pick: &dyn Fn(&[u8]) -> bool) -> Result<u64, TargetError> {
        match self {
            Target::Standalone(_) => self.unlink_where(dbs, &|k| owned.contains(slots::key_slot(k)) && pick(k)),
            Target::Cluster(c) => c.unlink_in_slots(owned.ranges(), &|k| !crate::checkpoint::is_internal(k) && pick(k)),
        }
    }

    /// The dbs of a standalone target that hold keys (INFO KEYSPACE); `[0]` for a cluster.
    pub fn dbs_with_keys(&mut self) -> Result<Vec<u32>, TargetError> {
        match self {
            Target::Standalone(s) => match s.query(&[b"INFO", b"KEYSPACE"])? {
                resp::Reply::Bulk(Some(info)) => Ok(String::from_utf8_lossy(&info)
                    .lines()
                    .filter_map(|l| l.strip_prefix("db")?.split(':').next()?.parse().ok())
                    .collect()),
                _ => Ok(vec![0]),
            },
            Target::Cluster(_) => Ok(vec![0]),
        }
    }

    /// Empty the target: every db of a server, every master of a cluster.
    pub fn flush_all(&mut self) -> Result<(), TargetError> {
        let flush = Cmd::new(0, &[b"FLUSHALL"]);
        self.run_global(&flush)
    }

    pub fn recv(&mut self, cmds: &[Cmd]) -> Result<(), TargetError> {
        match self {
            Target::Standalone(s) => s.recv(cmds),
            Target::Cluster(c) => c.recv(cmds),
        }
    }

    /// The RESTOREs the target refused in the pipelines read since the last call: (index of the
    /// command in its batch, the error). [`recv`](Self::recv) does not report them as errors:
    /// the caller writes those keys as commands.
    pub fn take_refused_restores(&mut self) -> Vec<(usize, String)> {
        match self {
            Target::Standalone(s) => s.take_refused_restores(),
            Target::Cluster(c) => c.take_refused_restores(),
        }
    }

    /// Run a global command (FLUSHALL/FLUSHDB) once: on the server, or on every master.
    pub fn run_global(&mut self, cmd: &Cmd) -> Result<(), TargetError> {
        match self {
            Target::Standalone(s) => s.apply(std::slice::from_ref(cmd)),
            Target::Cluster(c) => c.on_every_master(cmd),
        }
    }

    /// Writes acknowledged per node (cluster), or under the single address.
    pub fn node_writes(&self) -> BTreeMap<String, u64> {
        match self {
            Target::Standalone(_) => BTreeMap::new(),
            Target::Cluster(c) => c.node_writes(),
        }
    }

    /// Redirects followed: (MOVED, ASK).
    pub fn redirects(&self) -> (u64, u64) {
        match self {
            Target::Standalone(_) => (0, 0),
            Target::Cluster(c) => (c.moved, c.asked),
        }
    }
}
