//! TCP connections to the master, set up as Dragonfly's own replica does.
//!
//! Flow sockets get a 10 MB receive buffer (the master's snapshot writes must never block for
//! long: it cancels the replication after 30 s) and TCP keepalive (an idle master sends nothing
//! in stable sync, so keepalive, not a read deadline, detects a dead peer).

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

use crate::tls::{Stream, TlsClient};

/// A failure on the source side, naming the connection.
#[derive(Debug)]
pub struct SourceError(pub String);

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for SourceError {}

/// The words every rejected-AUTH error of the source carries (handshake.rs writes them).
pub(crate) const AUTH_REJECTED: &str = "AUTH rejected";
/// The words of the error for a server that is not a Dragonfly master (handshake.rs).
pub(crate) const NOT_DRAGONFLY: &str = "is not a Dragonfly master";

impl SourceError {
    /// The master refused the credentials, or TLS authentication failed (a certificate
    /// refused either way): retrying cannot help.
    pub fn is_rejected_credentials(&self) -> bool {
        self.0.contains(AUTH_REJECTED) || self.0.contains(crate::tls::AUTH_FAILED)
    }

    /// The server answered the handshake as something other than a Dragonfly master (a Redis
    /// or Valkey server): the --source address is wrong, which no retry can fix.
    pub fn is_not_dragonfly(&self) -> bool {
        self.0.contains(NOT_DRAGONFLY)
    }
}

pub const RECV_BUFFER: usize = 10 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Connect to `addr` with keepalive (idle 300 s, interval 100 s, 3 probes) and, for flows, the
/// large receive buffer; then the TLS handshake with `tls`. `what` names the connection in
/// errors ("main connection", "flow 3").
pub fn connect(addr: &str, big_buffer: bool, what: &str, tls: Option<&TlsClient>) -> Result<Stream, SourceError> {
    let err = |e: io::Error| SourceError(format!("{what} to {addr}: {e}"));
    let sa = addr
        .to_socket_addrs()
        .map_err(err)?
        .next()
        .ok_or_else(|| SourceError(format!("{what}: {addr} resolves to no address")))?;
    let s = Socket::new(Domain::for_address(sa), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    if big_buffer {
        s.set_recv_buffer_size(RECV_BUFFER).map_err(err)?;
    }
    let ka = TcpKeepalive::new()
        .with_time(Duration::from_secs(300))
        .with_interval(Duration::from_secs(100))
        .with_retries(3);
    s.set_tcp_keepalive(&ka).map_err(err)?;
    s.set_nodelay(true).map_err(err)?;
    s.connect_timeout(&sa.into(), CONNECT_TIMEOUT).map_err(err)?;
    let tcp: TcpStream = s.into();
    match tls {
        None => Ok(Stream::Plain(tcp)),
        Some(t) => t.handshake(tcp, addr).map_err(err),
    }
}

/// The receive buffer the kernel granted (it may cap the request at net.core.rmem_max).
pub fn recv_buffer(s: &TcpStream) -> usize {
    SockRef::from(s).recv_buffer_size().unwrap_or(0)
}
