//! A standalone Redis target: one connection, pipelined, db-aware.

use std::collections::VecDeque;
use std::io::{self, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::resp;
use crate::replay::Cmd;

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
    out: TcpStream,
    inp: BufReader<TcpStream>,
    /// The db the connection has selected.
    db: u32,
    buf: Vec<u8>,
    /// Per pipeline in flight: the command index of each reply (`None` for injected SELECTs).
    pending: VecDeque<Vec<Option<usize>>>,
}

impl Standalone {
    /// Connect to `host:port`, optionally authenticating (`user` may be empty for the default
    /// user).
    pub fn connect(addr: &str, auth: Option<(&str, &str)>) -> Result<Self, TargetError> {
        let io_err = |error| TargetError::Io { addr: addr.to_string(), error };
        let sa = addr
            .to_socket_addrs()
            .map_err(io_err)?
            .next()
            .ok_or_else(|| io_err(io::Error::new(io::ErrorKind::NotFound, "address resolves to nothing")))?;
        let s = TcpStream::connect_timeout(&sa, Duration::from_secs(10)).map_err(io_err)?;
        s.set_nodelay(true).map_err(io_err)?;
        let mut w = Standalone {
            addr: addr.to_string(),
            inp: BufReader::with_capacity(256 * 1024, s.try_clone().map_err(io_err)?),
            out: s,
            db: 0,
            buf: Vec::with_capacity(256 * 1024),
            pending: VecDeque::new(),
        };
        if let Some((user, pass)) = auth {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if !user.is_empty() {
                args.push(user.as_bytes());
            }
            args.push(pass.as_bytes());
            // Its own message: the generic one would show the command's arguments.
            if let resp::Reply::Error(e) = w.query(&args)? {
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
        self.buf.clear();
        let mut slots = Vec::with_capacity(cmds.len() + 1);
        for (i, c) in cmds.iter().enumerate() {
            if c.db != self.db {
                let n = c.db.to_string();
                resp::encode(&mut self.buf, [b"SELECT".as_slice(), n.as_bytes()].into_iter());
                slots.push(None);
                self.db = c.db;
            }
            resp::encode(&mut self.buf, c.argv.iter());
            slots.push(Some(i));
        }
        self.pending.push_back(slots);
        self.out.write_all(&self.buf).map_err(|error| TargetError::Io { addr: self.addr.clone(), error })
    }

    /// Send commands (any iterator) as one pipeline; replies are read with
    /// [`recv_raw`](Self::recv_raw). No db handling: for cluster nodes, which have only db 0.
    pub fn send_iter<'a>(&mut self, cmds: impl Iterator<Item = &'a Cmd>) -> Result<(), TargetError> {
        self.buf.clear();
        let mut slots = Vec::new();
        for (i, c) in cmds.enumerate() {
            resp::encode(&mut self.buf, c.argv.iter());
            slots.push(Some(i));
        }
        self.pending.push_back(slots);
        self.out.write_all(&self.buf).map_err(|error| TargetError::Io { addr: self.addr.clone(), error })
    }

    /// The replies of the oldest pipeline in flight, one per command, unchecked.
    pub fn recv_raw(&mut self) -> Result<Vec<resp::Reply>, TargetError> {
        let slots = self.pending.pop_front().expect("recv_raw() without a send");
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
        let slots = self.pending.pop_front().expect("recv() without a send()");
        let mut first_err: Option<TargetError> = None;
        for slot in &slots {
            let reply = resp::read_reply(&mut self.inp).map_err(|error| TargetError::Io { addr: self.addr.clone(), error })?;
            let Some(e) = reply.as_error() else { continue };
            match &mut first_err {
                Some(TargetError::Rejected { more, .. }) => *more += 1,
                _ => {
                    let (index, command) = match slot {
                        Some(i) => (*i, cmds[*i].describe()),
                        None => (usize::MAX, "SELECT".to_string()),
                    };
                    first_err = Some(TargetError::Rejected { index, command, error: e.to_string(), more: 0 });
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Run one command and return its reply (for queries such as `MODULE LIST`).
    pub fn query(&mut self, args: &[&[u8]]) -> Result<resp::Reply, TargetError> {
        self.buf.clear();
        resp::encode(&mut self.buf, args.iter().copied());
        self.out.write_all(&self.buf).map_err(|error| TargetError::Io { addr: self.addr.clone(), error })?;
        resp::read_reply(&mut self.inp).map_err(|error| TargetError::Io { addr: self.addr.clone(), error })
    }
}
