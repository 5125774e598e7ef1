//! A standalone Redis target: one connection, pipelined, db-aware.

use std::collections::VecDeque;
use std::io::{self, BufReader, Write};
use std::time::Duration;

use super::resp;
use crate::replay::Cmd;
use crate::tls::{Stream, TlsClient};

/// A command the target rejected, or a connection failure.
#[derive(Debug)]
pub enum TargetError {
    /// The target answered with an error: which command (its index in the batch and a
    /// description), what it said, and how many later commands of the batch were rejected too.
    /// Redis runs every command of a pipeline, so the others were applied.
    Rejected { index: usize, command: String, error: String, more: usize },
    Io { addr: String, error: io::Error },
}

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetError::Rejected { command, error, more: 0, .. } => write!(f, "target rejected {command}: {error}"),
            TargetError::Rejected { command, error, more, .. } => {
                write!(f, "target rejected {command}: {error} (and {more} more commands of the same batch)")
            }
            TargetError::Io { addr, error } => write!(f, "target {addr}: {error}"),
        }
    }
}
impl std::error::Error for TargetError {}

pub struct Standalone {
    addr: String,
    out: Stream,
    inp: BufReader<Stream>,
    /// The db the connection has selected.
    db: u32,
    buf: Vec<u8>,
    /// Per pipeline in flight: the command index of each reply (`None` for injected SELECTs
    /// and checkpoint markers), and whether it runs as MULTI ... EXEC.
    pending: VecDeque<(Vec<Option<usize>>, bool)>,
    /// RESTOREs the server refused in pipelines read since the last
    /// [`take_refused_restores`](Self::take_refused_restores): (command index, error). They
    /// are not errors of the batch: the writer writes their keys as commands instead.
    refused: Vec<(usize, String)>,
}

impl Standalone {
    /// Connect to `host:port`, over TLS with `tls`, optionally authenticating (`user` may be
    /// empty for the default user).
    pub fn connect(addr: &str, auth: Option<(&str, &str)>, tls: Option<&TlsClient>) -> Result<Self, TargetError> {
        let io_err = |error| TargetError::Io { addr: addr.to_string(), error };
        let s = crate::tls::connect(addr, Duration::from_secs(10), tls).map_err(io_err)?;
        let mut w = Standalone {
            addr: addr.to_string(),
            inp: BufReader::with_capacity(256 * 1024, s.try_clone().map_err(io_err)?),
            out: s,
            db: 0,
            buf: Vec::with_capacity(256 * 1024),
            pending: VecDeque::new(),
            refused: Vec::new(),
        };
        if let Some((user, pass)) = auth {
            // Its own message: the generic one would show the command's arguments.
            if let resp::Reply::Error(e) = w.query(&resp::auth_args(user, pass))? {
                return Err(TargetError::Io {
                    addr: addr.to_string(),
                    error: io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("AUTH failed: {e} (check the credentials in --target or --target-user/--target-password)"),
                    ),
                });
            }
        }
        Ok(w)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Send `cmds` as one pipeline and check every reply. Commands run in order; a `SELECT` is
    /// inserted wherever the db changes.
    pub fn apply(&mut self, cmds: &[Cmd]) -> Result<(), TargetError> {
        self.send(cmds)?;
        self.recv(cmds)
    }

    /// Send `cmds` as one pipeline without waiting for the replies: several pipelines may be in
    /// flight; [`recv`](Self::recv) must then be called once per `send`, in the same order, with
    /// the same commands.
    pub fn send(&mut self, cmds: &[Cmd]) -> Result<(), TargetError> {
        self.send_marked(cmds, None)
    }

    /// [`send`](Self::send), and with a `marker` (key, value) the pipeline runs as one
    /// transaction, `MULTI`, the commands, `SET key value` in db 0, `EXEC`: the marker (a
    /// checkpoint) is applied if and only if every command is.
    pub fn send_marked(&mut self, cmds: &[Cmd], marker: Option<(&[u8], &[u8])>) -> Result<(), TargetError> {
        self.buf.clear();
        let mut slots = Vec::with_capacity(cmds.len() + 3);
        if marker.is_some() {
            resp::encode(&mut self.buf, [b"MULTI".as_slice()].into_iter());
        }
        for (i, c) in cmds.iter().enumerate() {
            if c.db != self.db {
                self.select(c.db, &mut slots);
            }
            c.argv.write_resp(&mut self.buf);
            slots.push(Some(i));
        }
        if let Some((key, value)) = marker {
            self.select(0, &mut slots);
            resp::encode(&mut self.buf, [b"SET".as_slice(), key, value].into_iter());
            slots.push(None);
            resp::encode(&mut self.buf, [b"EXEC".as_slice()].into_iter());
        }
        self.pending.push_back((slots, marker.is_some()));
        self.out.write_all(&self.buf).map_err(|error| TargetError::Io { addr: self.addr.clone(), error })
    }

    fn select(&mut self, db: u32, slots: &mut Vec<Option<usize>>) {
        if db != self.db {
            let n = db.to_string();
            resp::encode(&mut self.buf, [b"SELECT".as_slice(), n.as_bytes()].into_iter());
            slots.push(None);
            self.db = db;
        }
    }

    /// Send commands (any iterator) as one pipeline; replies are read with
    /// [`recv_raw`](Self::recv_raw). No db handling: for cluster nodes, which have only db 0.
    pub fn send_iter<'a>(&mut self, cmds: impl Iterator<Item = &'a Cmd>) -> Result<(), TargetError> {
        self.buf.clear();
        let mut slots = Vec::new();
        for (i, c) in cmds.enumerate() {
            c.argv.write_resp(&mut self.buf);
            slots.push(Some(i));
        }
        self.pending.push_back((slots, false));
        self.out.write_all(&self.buf).map_err(|error| TargetError::Io { addr: self.addr.clone(), error })
    }

    /// Send a pipeline that `encode` writes, of `replies` commands; replies are read with
    /// [`recv_raw`](Self::recv_raw). No db handling: for cluster nodes, which have only db 0.
    pub fn send_with(&mut self, replies: usize, encode: impl FnOnce(&mut Vec<u8>)) -> Result<(), TargetError> {
        self.buf.clear();
        encode(&mut self.buf);
        self.pending.push_back(((0..replies).map(Some).collect(), false));
        self.out.write_all(&self.buf).map_err(|error| TargetError::Io { addr: self.addr.clone(), error })
    }

    /// The replies of the oldest pipeline in flight, one per command, unchecked.
    pub fn recv_raw(&mut self) -> Result<Vec<resp::Reply>, TargetError> {
        let (slots, _) = self.pending.pop_front().expect("recv_raw() without a send");
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            let reply = resp::read_reply(&mut self.inp).map_err(|error| TargetError::Io { addr: self.addr.clone(), error })?;
            if slot.is_some() {
                out.push(reply);
            }
        }
        Ok(out)
    }

    /// Send and read back (nothing else may be in flight on this connection).
    pub fn apply_raw<'a>(&mut self, cmds: impl Iterator<Item = &'a Cmd>) -> Result<Vec<resp::Reply>, TargetError> {
        self.send_iter(cmds)?;
        self.recv_raw()
    }

    /// Read the replies of the oldest pipeline in flight and check them.
    pub fn recv(&mut self, cmds: &[Cmd]) -> Result<(), TargetError> {
        let (slots, tx) = self.pending.pop_front().expect("recv() without a send()");
        let io = |addr: &str, error| TargetError::Io { addr: addr.to_string(), error };
        let mut first_err: Option<TargetError> = None;
        let note = |slot: Option<usize>, e: &str, first_err: &mut Option<TargetError>| match first_err {
            Some(TargetError::Rejected { more, .. }) => *more += 1,
            _ => {
                let (index, command) = match slot {
                    Some(i) => (i, cmds[i].describe()),
                    None => (usize::MAX, "SELECT or the checkpoint marker".to_string()),
                };
                *first_err = Some(TargetError::Rejected { index, command, error: e.to_string(), more: 0 });
            }
        };
        if !tx {
            for slot in &slots {
                let reply = resp::read_reply(&mut self.inp).map_err(|e| io(&self.addr, e))?;
                if let Some(e) = reply.as_error() {
                    match slot {
                        Some(i) if crate::replay::dump::is_restore(&cmds[*i]) => self.refused.push((*i, e.to_string())),
                        _ => note(*slot, e, &mut first_err),
                    }
                }
            }
            return first_err.map_or(Ok(()), Err);
        }
        // MULTI, one QUEUED per command (or the error that aborts the transaction), EXEC.
        let multi = resp::read_reply(&mut self.inp).map_err(|e| io(&self.addr, e))?;
        if let Some(e) = multi.as_error() {
            note(None, &format!("MULTI: {e}"), &mut first_err);
        }
        for slot in &slots {
            let reply = resp::read_reply(&mut self.inp).map_err(|e| io(&self.addr, e))?;
            if let Some(e) = reply.as_error() {
                note(*slot, &format!("{e} (so the whole transaction was discarded)"), &mut first_err);
            }
        }
        let exec = resp::read_array_checked(&mut self.inp, |i, e| note(slots.get(i).copied().flatten(), e, &mut first_err));
        match exec.map_err(|e| io(&self.addr, e))? {
            Ok(n) if n == slots.len() => {}
            Ok(n) => note(None, &format!("EXEC answered {n} results, expected {}", slots.len()), &mut first_err),
            Err(resp::Reply::Error(e)) => {
                // EXECABORT: nothing ran, and the SELECTs queued in it did not either.
                self.db = u32::MAX;
                if first_err.is_none() {
                    note(None, &e, &mut first_err);
                }
            }
            Err(other) => note(None, &format!("EXEC answered {other:?}, expected {} results", slots.len()), &mut first_err),
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The RESTOREs refused since the last call (see [`Standalone::refused`]).
    pub fn take_refused_restores(&mut self) -> Vec<(usize, String)> {
        std::mem::take(&mut self.refused)
    }

    /// [`query`](Self::query) in db 0, whatever db the pipelines left selected.
    pub fn query_db0(&mut self, args: &[&[u8]]) -> Result<resp::Reply, TargetError> {
        if self.db != 0 {
            self.query(&[b"SELECT", b"0"])?;
            self.db = 0;
        }
        self.query(args)
    }

    /// Delete the keys of db 0 matching a SCAN `pattern`; returns how many. One `DEL` per key:
    /// on a cluster node a multi-key `DEL` across slots is refused (CROSSSLOT), and there are
    /// only a handful (a few per flow).
    pub fn delete_matching(&mut self, pattern: &[u8]) -> Result<u64, TargetError> {
        let mut deleted = 0;
        for k in self.keys_matching(pattern)? {
            if let resp::Reply::Int(n) = self.query(&[b"DEL", &k])? {
                deleted += n as u64;
            }
        }
        Ok(deleted)
    }

    /// Delete the keys of db `db` that `pick` selects, walking the db with SCAN and sending
    /// one `UNLINK` per key (a cluster node refuses multi-key commands across slots), a SCAN
    /// page per pipeline; returns how many were deleted. For a full resync that must remove
    /// only one source's keys.
    pub fn unlink_where(&mut self, db: u32, pick: &dyn Fn(&[u8]) -> bool) -> Result<u64, TargetError> {
        let mut cursor = b"0".to_vec();
        let mut deleted = 0;
        loop {
            if self.db != db {
                self.query(&[b"SELECT", db.to_string().as_bytes()])?;
                self.db = db;
            }
            let reply = self.query(&[b"SCAN", &cursor, b"COUNT", b"1000"])?;
            let resp::Reply::Array(Some(parts)) = reply else {
                return Err(TargetError::Io { addr: self.addr.clone(), error: io::Error::other(format!("SCAN answered {reply:?}")) });
            };
            let mut parts = parts.into_iter();
            let (Some(resp::Reply::Bulk(Some(next))), Some(resp::Reply::Array(Some(keys)))) = (parts.next(), parts.next()) else {
                return Err(TargetError::Io { addr: self.addr.clone(), error: io::Error::other("SCAN answered an unexpected shape") });
            };
            let cmds: Vec<Cmd> = keys
                .into_iter()
                .filter_map(|k| if let resp::Reply::Bulk(Some(k)) = k { Some(k) } else { None })
                .filter(|k| pick(k))
                .map(|k| Cmd::new(db, &[b"UNLINK", &k]))
                .collect();
            if !cmds.is_empty() {
                for r in self.apply_raw(cmds.iter())? {
                    if let resp::Reply::Int(n) = r {
                        deleted += n as u64;
                    }
                }
            }
            if next == b"0" {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// Whether db 0 holds no key but df2redis's own (markers, leases): a target whose only key
    /// is this run's lease is still empty for a full sync (no DEL before each entry).
    pub fn db0_holds_only_internal(&mut self) -> Result<bool, TargetError> {
        // Beyond a handful of keys it cannot be markers and leases alone.
        const FEW: i64 = 64;
        match self.query_db0(&[b"DBSIZE"])? {
            resp::Reply::Int(0) => Ok(true),
            resp::Reply::Int(n) if n <= FEW => Ok(self.keys_matching(b"*")?.iter().all(|k| crate::checkpoint::is_internal(k))),
            _ => Ok(false),
        }
    }

    /// The keys of db 0 matching a SCAN `pattern`.
    pub fn keys_matching(&mut self, pattern: &[u8]) -> Result<Vec<Vec<u8>>, TargetError> {
        let mut cursor = b"0".to_vec();
        let mut out = Vec::new();
        loop {
            let reply = self.query_db0(&[b"SCAN", &cursor, b"MATCH", pattern, b"COUNT", b"1000"])?;
            let resp::Reply::Array(Some(parts)) = reply else {
                return Err(TargetError::Io { addr: self.addr.clone(), error: io::Error::other(format!("SCAN answered {reply:?}")) });
            };
            let mut parts = parts.into_iter();
            let (Some(resp::Reply::Bulk(Some(next))), Some(resp::Reply::Array(Some(keys)))) = (parts.next(), parts.next()) else {
                return Err(TargetError::Io { addr: self.addr.clone(), error: io::Error::other("SCAN answered an unexpected shape") });
            };
            out.extend(keys.into_iter().filter_map(|k| if let resp::Reply::Bulk(Some(k)) = k { Some(k) } else { None }));
            if next == b"0" {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// Name this connection (`CLIENT SETNAME`); a refusal (ACL) is logged, not fatal.
    pub fn set_name(&mut self, name: &str) -> Result<(), TargetError> {
        if let resp::Reply::Error(e) = self.query(&[b"CLIENT", b"SETNAME", name.as_bytes()])? {
            log::warn!("target {}: CLIENT SETNAME {name}: {e}", self.addr);
        }
        Ok(())
    }

    /// Close every other connection named `name` (`CLIENT LIST`, `CLIENT KILL ID`): what the
    /// server has not run of their pipelines yet is dropped. `None` when the server refuses
    /// (an ACL without CLIENT LIST / CLIENT KILL).
    pub fn kill_named(&mut self, name: &str) -> Result<Option<u64>, TargetError> {
        let list = match self.query(&[b"CLIENT", b"LIST", b"TYPE", b"normal"])? {
            resp::Reply::Bulk(Some(l)) => String::from_utf8_lossy(&l).into_owned(),
            resp::Reply::Error(e) => {
                log::warn!("target {}: CLIENT LIST: {e}", self.addr);
                return Ok(None);
            }
            other => return Err(TargetError::Io { addr: self.addr.clone(), error: io::Error::other(format!("CLIENT LIST answered {other:?}")) }),
        };
        let mut killed = 0;
        for line in list.lines() {
            let field = |k: &str| line.split(' ').find_map(|f| f.strip_prefix(k).and_then(|v| v.strip_prefix('=')));
            let (Some(id), Some(n)) = (field("id"), field("name")) else { continue };
            if n != name {
                continue;
            }
            match self.query(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()])? {
                resp::Reply::Int(n) => killed += n as u64,
                resp::Reply::Error(e) => {
                    log::warn!("target {}: CLIENT KILL ID {id}: {e}", self.addr);
                    return Ok(None);
                }
                _ => {}
            }
        }
        Ok(Some(killed))
    }

    /// Run one command and return its reply (for queries such as `MODULE LIST`).
    pub fn query(&mut self, args: &[&[u8]]) -> Result<resp::Reply, TargetError> {
        self.buf.clear();
        resp::encode(&mut self.buf, args.iter().copied());
        self.out.write_all(&self.buf).map_err(|error| TargetError::Io { addr: self.addr.clone(), error })?;
        resp::read_reply(&mut self.inp).map_err(|error| TargetError::Io { addr: self.addr.clone(), error })
    }
}
