//! A standalone Redis target: one connection, pipelined, db-aware.

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
    /// Index into the pipeline of each command (`None` for injected SELECTs).
    slots: Vec<Option<usize>>,
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
            slots: Vec::new(),
        };
        if let Some((user, pass)) = auth {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if !user.is_empty() {
                args.push(user.as_bytes());
            }
            args.push(pass.as_bytes());
            w.apply(&[Cmd::new(0, &args)])?;
        }
        Ok(w)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Send `cmds` as one pipeline and check every reply. Commands run in order; a `SELECT` is
    /// inserted wherever the db changes.
    pub fn apply(&mut self, cmds: &[Cmd]) -> Result<(), TargetError> {
        if cmds.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        self.slots.clear();
        let mut db = self.db;
        for (i, c) in cmds.iter().enumerate() {
            if c.db != db {
                let n = c.db.to_string();
                resp::encode(&mut self.buf, [b"SELECT".as_slice(), n.as_bytes()].into_iter());
                self.slots.push(None);
                db = c.db;
            }
            resp::encode(&mut self.buf, c.argv.iter());
            self.slots.push(Some(i));
        }
        let io_err = |addr: &str, error| TargetError::Io { addr: addr.to_string(), error };
        self.out.write_all(&self.buf).map_err(|e| io_err(&self.addr, e))?;
        let mut first_err: Option<TargetError> = None;
        for slot in &self.slots {
            let reply = resp::read_reply(&mut self.inp).map_err(|e| io_err(&self.addr, e))?;
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
        self.db = db;
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
