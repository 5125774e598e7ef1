//! The main connection (protocol doc section 3, 5.1, 6) and flow registration (section 4).
//!
//! Order matters to the master: `capa dragonfly` alone creates the session; `CLIENT-VERSION`
//! is never sent (before `capa` it crashes every master version). After `DFLY FLOW` a flow
//! connection carries only binary stream data toward us, so its reply is read byte-exactly and
//! whatever followed it in our buffer is handed to the flow decoder.

use std::io::{BufReader, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use super::socket::{connect, recv_buffer, SourceError, RECV_BUFFER};
use crate::target::resp::{self, Reply};
use crate::tls::{Stream, TlsClient};

/// What `REPLCONF capa dragonfly` and `INFO SERVER` told us.
#[derive(Debug, Clone)]
pub struct MasterInfo {
    pub replid: String,
    pub sync_id: String,
    pub num_flows: usize,
    /// DflyVersion ordinal (4 for v1.34-v1.36, 5 for v1.37+).
    pub version: i64,
    /// `df-v1.40.1`, when INFO SERVER answered.
    pub release: Option<String>,
}

impl MasterInfo {
    /// Whether the master speaks the v1.34 partial-sync dialect (protocol doc 8.3: `DFLY
    /// SYNC` after PARTIAL, the missing records as journal blobs) rather than the v1.35+ one
    /// (8.2). DflyVersion 4 covers v1.34 to v1.36, so only the release INFO SERVER named
    /// tells them apart: `None` when it named none and the version is 4.
    pub fn speaks_v134_resume(&self) -> Option<bool> {
        match &self.release {
            Some(r) => Some(r.contains("v1.34.")),
            None if self.version == 4 => None,
            None => Some(false),
        }
    }
}

/// `FULL` or `PARTIAL`, with the flow's eof token.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncReply {
    pub full: bool,
    pub token: String,
}

/// A registered flow connection: the socket, and stream bytes already read past the reply.
pub struct FlowConn {
    pub stream: Stream,
    pub leftover: Vec<u8>,
    pub reply: SyncReply,
    /// The LSN the flow was opened with (a resume attempt), if any.
    pub lsn: Option<u64>,
}

/// The main connection, kept open (idle) for the whole replication: closing it ends the session.
pub struct Master {
    addr: String,
    out: Stream,
    inp: BufReader<Stream>,
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// `DFLY STARTSTABLE` waits for every flow to be drained; the master may take minutes.
pub const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

fn cmd_bytes(args: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    resp::encode(&mut b, args.iter().map(|a| a.as_bytes()));
    b
}

fn auth(out: &mut impl Write, inp: &mut impl std::io::BufRead, auth: Option<(&str, &str)>, what: &str, addr: &str) -> Result<(), SourceError> {
    let Some((user, pass)) = auth else { return Ok(()) };
    let mut b = Vec::new();
    resp::encode(&mut b, resp::auth_args(user, pass).into_iter());
    out.write_all(&b).map_err(|e| SourceError(format!("{what} to {addr}: {e}")))?;
    match resp::read_reply(inp).map_err(|e| SourceError(format!("{what} to {addr}: AUTH: {e}")))? {
        Reply::Status(_) => Ok(()),
        Reply::Error(e) => Err(SourceError(format!(
            "{what} to {addr}: {}: {e} (check --source-user / --source-password)",
            super::socket::AUTH_REJECTED
        ))),
        other => Err(SourceError(format!("{what} to {addr}: unexpected AUTH reply {other:?}"))),
    }
}

impl Master {
    /// Connect (over TLS with `tls`), authenticate and run the handshake up to `capa dragonfly`.
    pub fn connect(addr: &str, credentials: Option<(&str, &str)>, tls: Option<&TlsClient>) -> Result<(Master, MasterInfo), SourceError> {
        let s = connect(addr, false, "main connection", tls)?;
        s.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).ok();
        let mut out = s.try_clone().map_err(|e| SourceError(format!("main connection: {e}")))?;
        let mut inp = BufReader::new(s);
        auth(&mut out, &mut inp, credentials, "main connection", addr)?;
        let mut m = Master { addr: addr.to_string(), out, inp };
        m.expect_ok(&["PING"], "PONG")?;
        let server = match m.call(&["INFO", "SERVER"])? {
            Reply::Bulk(Some(text)) => String::from_utf8_lossy(&text).into_owned(),
            _ => String::new(),
        };
        let field = |name: &str| server.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()));
        let release = field("dragonfly_version:");
        m.expect_ok(&["REPLCONF", "listening-port", "0"], "OK")?;
        m.expect_ok(&["REPLCONF", "capa", "eof", "capa", "psync2"], "OK")?;
        let info = match m.call(&["REPLCONF", "capa", "dragonfly"])? {
            Reply::Array(Some(a)) if a.len() >= 4 => {
                let s = |r: &Reply| match r {
                    Reply::Status(s) => Some(s.to_string()),
                    Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                };
                let i = |r: &Reply| match r {
                    Reply::Int(i) => Some(*i),
                    _ => None,
                };
                let bad = || SourceError(format!("main connection to {addr}: malformed capa dragonfly reply {a:?}"));
                let num_flows = i(&a[2]).ok_or_else(bad)?;
                if !(1..=1024).contains(&num_flows) {
                    return Err(SourceError(format!("main connection to {addr}: master reports {num_flows} flows (expected 1..1024)")));
                }
                MasterInfo {
                    replid: s(&a[0]).ok_or_else(bad)?,
                    sync_id: s(&a[1]).ok_or_else(bad)?,
                    num_flows: num_flows as usize,
                    version: i(&a[3]).ok_or_else(bad)?,
                    release,
                }
            }
            Reply::Status(s) if s == "OK" => {
                // Redis and Valkey accept an unknown capa with +OK; INFO SERVER says which it is.
                let what = match (field("valkey_version:"), field("redis_version:")) {
                    (Some(v), _) => format!("a Valkey server: INFO SERVER reports valkey_version:{v}"),
                    (None, Some(v)) => format!("a Redis server: INFO SERVER reports redis_version:{v} and no dragonfly_version"),
                    (None, None) => "a Redis server?".to_string(),
                };
                return Err(SourceError(format!(
                    "source {addr} {}: it answered `REPLCONF capa dragonfly` with +OK ({what}); df2redis replicates \
                     from a Dragonfly master only (check --source)",
                    super::socket::NOT_DRAGONFLY
                )));
            }
            Reply::Error(e) => return Err(SourceError(format!("main connection to {addr}: REPLCONF capa dragonfly: {e}"))),
            other => return Err(SourceError(format!("main connection to {addr}: unexpected capa dragonfly reply {other:?}"))),
        };
        Ok((m, info))
    }

    fn call_timeout(&mut self, args: &[&str], timeout: Duration) -> Result<Reply, SourceError> {
        let what = args.join(" ");
        self.inp.get_ref().set_read_timeout(Some(timeout)).ok();
        self.out
            .write_all(&cmd_bytes(args))
            .map_err(|e| SourceError(format!("main connection to {}: sending {what}: {e}", self.addr)))?;
        resp::read_reply(&mut self.inp).map_err(|e| SourceError(format!("main connection to {}: waiting for the reply to {what}: {e}", self.addr)))
    }

    fn call(&mut self, args: &[&str]) -> Result<Reply, SourceError> {
        self.call_timeout(args, HANDSHAKE_TIMEOUT)
    }

    fn expect_ok(&mut self, args: &[&str], want: &str) -> Result<(), SourceError> {
        match self.call(args)? {
            Reply::Status(s) if s.eq_ignore_ascii_case(want) => Ok(()),
            other => Err(SourceError(format!("main connection to {}: {} answered {other:?}, expected +{want}", self.addr, args.join(" ")))),
        }
    }

    /// Keys per db, from `INFO KEYSPACE` (`db1:keys=4,expires=0,...`).
    pub fn keyspace(&mut self) -> Result<std::collections::BTreeMap<u32, u64>, SourceError> {
        let mut out = std::collections::BTreeMap::new();
        if let Reply::Bulk(Some(text)) = self.call(&["INFO", "KEYSPACE"])? {
            for line in String::from_utf8_lossy(&text).lines() {
                let Some((db, rest)) = line.strip_prefix("db").and_then(|l| l.split_once(':')) else { continue };
                let keys = rest.split(',').find_map(|kv| kv.strip_prefix("keys=")).and_then(|k| k.trim().parse().ok());
                if let (Ok(db), Some(keys)) = (db.parse::<u32>(), keys) {
                    out.insert(db, keys);
                }
            }
        }
        Ok(out)
    }

    /// `used_memory` from `INFO MEMORY`, in bytes; `None` when the master does not report it.
    pub fn used_memory(&mut self) -> Result<Option<u64>, SourceError> {
        Ok(match self.call(&["INFO", "MEMORY"])? {
            Reply::Bulk(Some(text)) => String::from_utf8_lossy(&text)
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:").and_then(|v| v.trim().parse().ok())),
            _ => None,
        })
    }

    /// `DFLY SYNC <sid>`: start the full sync on every flow.
    pub fn sync(&mut self, sync_id: &str) -> Result<(), SourceError> {
        match self.call_timeout(&["DFLY", "SYNC", sync_id], PHASE_TIMEOUT)? {
            Reply::Status(_) => Ok(()),
            other => Err(SourceError(format!("DFLY SYNC {sync_id} answered {other:?}"))),
        }
    }

    /// `DFLY STARTSTABLE <sid>`: switch every flow to the journal.
    pub fn start_stable(&mut self, sync_id: &str) -> Result<(), SourceError> {
        match self.call_timeout(&["DFLY", "STARTSTABLE", sync_id], PHASE_TIMEOUT)? {
            Reply::Status(_) => Ok(()),
            other => Err(SourceError(format!("DFLY STARTSTABLE {sync_id} answered {other:?}"))),
        }
    }

    /// Half-close: the master sees EOF, cancels the session and closes the flows from its side.
    pub fn shutdown_write(&self) {
        let _ = self.out.shutdown(Shutdown::Write);
    }

    /// Read until the master closes (bounded), so that our close sends FIN, not RST.
    pub fn drain(&mut self, timeout: Duration) {
        self.inp.get_ref().set_read_timeout(Some(timeout)).ok();
        let mut sink = [0u8; 4096];
        while matches!(self.inp.read(&mut sink), Ok(n) if n > 0) {}
    }
}

impl FlowConn {
    /// Open flow `i`: connect (over TLS with `tls`), authenticate,
    /// `DFLY FLOW <replid> <sid> <i> [<lsn>]`.
    pub fn open(
        addr: &str,
        credentials: Option<(&str, &str)>,
        tls: Option<&TlsClient>,
        info: &MasterInfo,
        i: usize,
        lsn: Option<u64>,
    ) -> Result<FlowConn, SourceError> {
        let what = format!("flow {i}");
        let s = connect(addr, true, &what, tls)?;
        let granted = recv_buffer(s.tcp());
        if granted < RECV_BUFFER {
            log::debug!("{what}: the kernel granted a {granted}-byte receive buffer (asked {RECV_BUFFER}; net.core.rmem_max caps it)");
        }
        s.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).ok();
        let mut out = s.try_clone().map_err(|e| SourceError(format!("{what}: {e}")))?;
        let mut inp = BufReader::new(s);
        auth(&mut out, &mut inp, credentials, &what, addr)?;
        let idx = i.to_string();
        let lsn_s = lsn.map(|l| l.to_string());
        let mut args = vec!["DFLY", "FLOW", info.replid.as_str(), info.sync_id.as_str(), idx.as_str()];
        if let Some(l) = &lsn_s {
            args.push(l);
        }
        out.write_all(&cmd_bytes(&args)).map_err(|e| SourceError(format!("{what}: sending DFLY FLOW: {e}")))?;
        let reply = resp::read_reply(&mut inp).map_err(|e| SourceError(format!("{what}: waiting for the DFLY FLOW reply: {e}")))?;
        let reply = match reply {
            Reply::Array(Some(a)) if a.len() == 2 => match (&a[0], &a[1]) {
                (Reply::Status(kind), Reply::Status(token)) if (kind == "FULL" || kind == "PARTIAL") && token.len() == 40 => {
                    SyncReply { full: kind == "FULL", token: token.to_string() }
                }
                _ => return Err(SourceError(format!("{what}: malformed DFLY FLOW reply {a:?}"))),
            },
            Reply::Error(e) => return Err(SourceError(format!("{what}: DFLY FLOW rejected: {e}"))),
            other => return Err(SourceError(format!("{what}: unexpected DFLY FLOW reply {other:?}"))),
        };
        // Bytes after the reply already belong to the stream.
        let leftover = inp.buffer().to_vec();
        let stream = inp.into_inner();
        stream.set_read_timeout(None).ok();
        Ok(FlowConn { stream, leftover, reply, lsn })
    }
}
