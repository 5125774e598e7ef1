//! One RESP connection used for reading: commands go out in pipelines (one buffer, one write)
//! and several pipelines may be in flight; replies are read back in order.
//!
//! It knows its side ("source" or "target") and address, so every error names both.

use std::collections::VecDeque;
use std::io::{self, BufReader, Write};
use std::time::Duration;

use crate::target::resp::{self, Reply};
use crate::tls::{Stream, TlsClient};

use super::CheckError;

/// One command: its arguments, the name first.
pub type Args = Vec<Vec<u8>>;

/// Build a command from borrowed arguments.
pub fn cmd(args: &[&[u8]]) -> Args {
    args.iter().map(|a| a.to_vec()).collect()
}

/// How long a reply may take before the check gives up on the server.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Conn {
    side: &'static str,
    addr: String,
    out: Stream,
    inp: BufReader<Stream>,
    /// The db the server has selected for this connection (after what is in flight).
    db: u32,
    buf: Vec<u8>,
    /// Per pipeline in flight: whether it starts with a SELECT, and how many replies follow.
    pending: VecDeque<(bool, usize)>,
}

impl Conn {
    /// Connect to `addr` (host:port), over TLS with `tls`, and authenticate when `auth`
    /// (user, password) is given.
    pub fn connect(side: &'static str, addr: &str, auth: Option<(&str, &str)>, tls: Option<&TlsClient>) -> Result<Conn, CheckError> {
        let fail = |e: io::Error| CheckError::Failed(format!("{side} {addr}: {e}"));
        let s = crate::tls::connect(addr, Duration::from_secs(10), tls).map_err(fail)?;
        s.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(fail)?;
        let mut c = Conn {
            side,
            addr: addr.to_string(),
            inp: BufReader::with_capacity(256 * 1024, s.try_clone().map_err(fail)?),
            out: s,
            db: 0,
            buf: Vec::with_capacity(64 * 1024),
            pending: VecDeque::new(),
        };
        if let Some((user, pass)) = auth {
            let args: Args = resp::auth_args(user, pass).into_iter().map(<[u8]>::to_vec).collect();
            if let Reply::Error(e) = c.query(&args)? {
                return Err(CheckError::Failed(format!("{side} {addr}: AUTH failed: {e} (check the {side} credentials)")));
            }
        }
        Ok(c)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// An error on this connection, naming the side and the address.
    pub fn error(&self, what: impl std::fmt::Display) -> CheckError {
        CheckError::Failed(format!("{} {}: {what}", self.side, self.addr))
    }

    /// Send `cmds` as one pipeline in `db` (a SELECT goes first when the connection is in
    /// another db). Read the replies with [`recv`](Self::recv).
    pub fn send<'a>(&mut self, db: u32, cmds: impl Iterator<Item = &'a Args>) -> Result<(), CheckError> {
        self.buf.clear();
        let select = db != self.db;
        if select {
            let n = db.to_string();
            resp::encode(&mut self.buf, [b"SELECT".as_slice(), n.as_bytes()].into_iter());
            self.db = db;
        }
        let mut n = 0;
        for c in cmds {
            resp::encode(&mut self.buf, c.iter().map(Vec::as_slice));
            n += 1;
        }
        self.pending.push_back((select, n));
        self.out.write_all(&self.buf).map_err(|e| self.error(e))
    }

    /// The replies of the oldest pipeline in flight, one per command.
    pub fn recv(&mut self) -> Result<Vec<Reply>, CheckError> {
        let Some((select, n)) = self.pending.pop_front() else { return Ok(Vec::new()) };
        if select {
            if let Reply::Error(e) = self.read()? {
                return Err(self.error(format!("SELECT {}: {e}", self.db)));
            }
        }
        (0..n).map(|_| self.read()).collect()
    }

    fn read(&mut self) -> Result<Reply, CheckError> {
        resp::read_reply(&mut self.inp).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                self.error(format!("no reply within {} s", REPLY_TIMEOUT.as_secs()))
            }
            _ => self.error(e),
        })
    }

    /// One command in the current db, and its reply (nothing else may be in flight).
    pub fn query(&mut self, args: &Args) -> Result<Reply, CheckError> {
        let db = self.db;
        self.send(db, std::iter::once(args))?;
        Ok(self.recv()?.pop().unwrap_or(Reply::Bulk(None)))
    }

    /// One command in `db`.
    pub fn query_in(&mut self, db: u32, args: &Args) -> Result<Reply, CheckError> {
        self.send(db, std::iter::once(args))?;
        Ok(self.recv()?.pop().unwrap_or(Reply::Bulk(None)))
    }
}
