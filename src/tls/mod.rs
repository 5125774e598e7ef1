//! TLS toward the master and the target (and for the emulator's listener).
//!
//! The TLS itself is rustls, with the ring crypto provider: a well-kept, audited library does
//! the protocol, the certificate checks and the cryptography far better than code of ours
//! could; ring builds with the C compiler alone (aws-lc-rs, rustls' default, would need cmake).
//! This module only loads the PEM files ([`pem`]), runs the handshakes, and makes a TLS
//! session usable from two threads at once the way a cloned `TcpStream` is ([`Stream`]): a
//! flow's reader and its ACK writer share one socket.
//!
//! What a Dragonfly master expects (`--tls`, protocol doc section 3): every connection of a
//! replica, main and flows, is TLS; with `--tls_ca_cert_file` it also demands a client
//! certificate signed by that CA from every connection. Redis (`--tls-port`) demands one
//! unless `tls-auth-clients no`.
//!
//! Certificates are verified against the CA file given (else the system's bundle) and the
//! name: the host of the address unless a server name is given (an IP address is checked
//! against the certificate's IP SANs).

mod pem;
mod stream;

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

pub use stream::{Stream, TlsStream};

/// The start of every message of a TLS failure retrying cannot fix (a certificate refused, an
/// alert from the peer).
pub const AUTH_FAILED: &str = "TLS authentication failed";

/// How long a handshake may take (when the socket has no timeout of its own).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// The TLS settings of one side, as configured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientSettings {
    /// PEM file of the CA(s) to trust; `None`: the system's bundle.
    pub ca: Option<PathBuf>,
    /// PEM client certificate (chain) and its private key, presented when both are set.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name to verify the server's certificate against; `None`: the host of the address.
    pub server_name: Option<String>,
}

/// A loaded client configuration for one side ("source" or "target"): connections made with
/// it are TLS.
#[derive(Clone)]
pub struct TlsClient {
    side: &'static str,
    settings: ClientSettings,
    config: Arc<rustls::ClientConfig>,
}

impl PartialEq for TlsClient {
    fn eq(&self, other: &Self) -> bool {
        self.side == other.side && self.settings == other.settings
    }
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").field("side", &self.side).field("settings", &self.settings).finish()
    }
}

/// `--target-tls-ca (file key target.tls_ca)`: how the setting `which` of `side` is named.
pub fn label(side: &str, which: &str) -> String {
    format!("--{side}-tls-{which} (file key {side}.tls_{})", which.replace('-', "_"))
}

impl TlsClient {
    /// Read the files of `settings` for `side` ("source" or "target"). Errors name the
    /// setting and the file.
    pub fn load(side: &'static str, settings: ClientSettings) -> Result<TlsClient, String> {
        let labels = pem::Labels { ca: label(side, "ca"), cert: label(side, "cert"), key: label(side, "key") };
        let cert_key = match (&settings.cert, &settings.key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            (Some(_), None) => return Err(format!("{} is set without {}: a client certificate needs its private key", labels.cert, labels.key)),
            (None, Some(_)) => return Err(format!("{} is set without {}: a private key needs its certificate", labels.key, labels.cert)),
        };
        if let Some(n) = &settings.server_name {
            ServerName::try_from(n.as_str())
                .map_err(|_| format!("{}: {n:?} is neither a DNS name nor an IP address", label(side, "server-name")))?;
        }
        let config = pem::client_config(settings.ca.as_deref(), cert_key, &labels)?;
        Ok(TlsClient { side, settings, config: Arc::new(config) })
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// The name the certificate of `addr` (host:port) must carry.
    fn server_name(&self, addr: &str) -> io::Result<ServerName<'static>> {
        let host = match &self.settings.server_name {
            Some(n) => n.clone(),
            None => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                host.trim_start_matches('[').trim_end_matches(']').to_string()
            }
        };
        ServerName::try_from(host.clone()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TLS: {host:?} is neither a DNS name nor an IP address to verify a certificate against: give {}", label(self.side, "server-name")),
            )
        })
    }

    /// Run the TLS handshake on a connected socket to `addr`.
    pub fn handshake(&self, tcp: TcpStream, addr: &str) -> io::Result<Stream> {
        let name = self.server_name(addr)?;
        let conn = rustls::ClientConnection::new(self.config.clone(), name).map_err(|e| io::Error::other(format!("TLS: {e}")))?;
        let mut conn = rustls::Connection::Client(conn);
        complete_handshake(&mut conn, &tcp, Some(self.side))?;
        Ok(Stream::Tls(TlsStream::new(tcp, conn, Some(self.side))))
    }
}

/// Connect to `addr` (host:port) with TCP_NODELAY, plainly or, with `tls`, over TLS.
pub fn connect(addr: &str, timeout: Duration, tls: Option<&TlsClient>) -> io::Result<Stream> {
    let sa = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "address resolves to nothing"))?;
    let s = TcpStream::connect_timeout(&sa, timeout)?;
    s.set_nodelay(true)?;
    match tls {
        None => Ok(Stream::Plain(s)),
        Some(t) => t.handshake(s, addr),
    }
}

/// The server side of a handshake, with a configuration from [`server_config`].
pub fn accept(tcp: TcpStream, config: &Arc<rustls::ServerConfig>) -> io::Result<Stream> {
    let conn = rustls::ServerConnection::new(config.clone()).map_err(|e| io::Error::other(format!("TLS: {e}")))?;
    let mut conn = rustls::Connection::Server(conn);
    complete_handshake(&mut conn, &tcp, None)?;
    Ok(Stream::Tls(TlsStream::new(tcp, conn, None)))
}

/// A server configuration from PEM files (the emulator's `--tls-cert`, `--tls-key`,
/// `--tls-ca`): with `client_ca`, clients must present a certificate it signed.
pub fn server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let labels = pem::Labels { ca: "--tls-ca".into(), cert: "--tls-cert".into(), key: "--tls-key".into() };
    pem::server_config(cert, key, client_ca, &labels)
}

/// Drive the handshake to its end, bounded in time when the socket has no timeouts.
fn complete_handshake(conn: &mut rustls::Connection, tcp: &TcpStream, side: Option<&str>) -> io::Result<()> {
    let (rt, wt) = (tcp.read_timeout()?, tcp.write_timeout()?);
    tcp.set_read_timeout(rt.or(Some(HANDSHAKE_TIMEOUT)))?;
    tcp.set_write_timeout(wt.or(Some(HANDSHAKE_TIMEOUT)))?;
    let mut io = tcp;
    let mut result = Ok(());
    while conn.is_handshaking() && result.is_ok() {
        result = conn.complete_io(&mut io).map(|_| ());
    }
    while result.is_ok() && conn.wants_write() {
        result = conn.write_tls(&mut io).map(|_| ());
    }
    tcp.set_read_timeout(rt)?;
    tcp.set_write_timeout(wt)?;
    result.map_err(|e| handshake_error(e, side))
}

fn handshake_error(e: io::Error, side: Option<&str>) -> io::Error {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return explain(side, inner);
    }
    let peer = side.unwrap_or("peer");
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("TLS handshake: no answer within {} s (does the {peer} speak TLS on this port?)", HANDSHAKE_TIMEOUT.as_secs()),
        ),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => io::Error::new(
            e.kind(),
            format!("TLS handshake: the {peer} closed the connection ({e}); does it speak TLS on this port?"),
        ),
        _ => io::Error::new(e.kind(), format!("TLS handshake: {e}")),
    }
}

/// A TLS error as an `io::Error` whose message says what to check. Certificate problems and
/// the peer's alerts are `PermissionDenied` and start with [`AUTH_FAILED`]: retrying cannot
/// fix them.
pub(crate) fn explain(side: Option<&str>, e: &rustls::Error) -> io::Error {
    use rustls::{AlertDescription as A, Error as E};
    let refused_ours = matches!(
        e,
        E::AlertReceived(
            A::BadCertificate
                | A::CertificateRequired
                | A::UnknownCA
                | A::CertificateUnknown
                | A::CertificateExpired
                | A::CertificateRevoked
                | A::UnsupportedCertificate
                | A::AccessDenied
        )
    );
    let auth = refused_ours || matches!(e, E::InvalidCertificate(_) | E::NoCertificatesPresented | E::AlertReceived(_) | E::PeerIncompatible(_));
    let hint = side.and_then(|s| match e {
        E::InvalidCertificate(_) => Some(format!(
            "the {s}'s certificate was not accepted: check --{s}-tls-ca, the CA that signed it, and --{s}-tls-server-name, \
             a name it was issued for"
        )),
        _ if refused_ours => {
            Some(format!("the {s} refused our client certificate or wants one: check --{s}-tls-cert and --{s}-tls-key"))
        }
        E::InvalidMessage(_) => Some(format!("does the {s} speak TLS on this port?")),
        _ => None,
    });
    let head = if auth { AUTH_FAILED } else { "TLS error" };
    let msg = match hint {
        Some(h) => format!("{head}: {e} ({h})"),
        None => format!("{head}: {e}"),
    };
    io::Error::new(if auth { io::ErrorKind::PermissionDenied } else { io::ErrorKind::InvalidData }, msg)
}

#[cfg(test)]
mod tests;
