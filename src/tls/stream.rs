//! A connection that is plain TCP or TLS over TCP, with the same interface: `Read`, `Write`,
//! `try_clone`, `shutdown`, socket options.
//!
//! # One TLS session, two threads
//!
//! A flow socket is read by its reader thread and written (REPLCONF ACK) by its ACK thread at
//! the same time; the emulator's flow sockets likewise. Plain TCP allows that with
//! `try_clone()`. A TLS session is one state machine (`rustls::Connection`) for both
//! directions, so the clones of a [`TlsStream`] share it behind a mutex, and the rule that
//! keeps either thread from stalling the other is: **nobody blocks on the socket while holding
//! the lock to read.**
//!
//! - A reader reads raw TLS bytes from the socket *without* the lock, then takes it, feeds the
//!   bytes to rustls, decrypts into the caller's buffer, sends whatever rustls has to send
//!   (a key update, an alert) and lets go. Decryption under the lock is short (a read of at
//!   most the caller's buffer).
//! - A writer takes the lock, hands its plaintext to rustls, writes the records to the socket
//!   and lets go. Our writes are small (ACKs, pipelines the peer reads promptly); a write that
//!   blocks because the peer stopped reading delays the reader's next decryption, never the
//!   reader's socket read.
//!
//! Raw bytes read but not yet fed (rustls takes them a record at a time and the caller's
//! buffer may fill first) are kept in the shared state, so any clone may read next.
//!
//! # Closing
//!
//! [`Stream::shutdown`] with `Write` or `Both` sends TLS `close_notify` first, then shuts the
//! TCP socket down: the peer sees a clean end of the TLS stream followed by FIN, and the
//! clean-shutdown path toward the master (half-close the main connection, read the flows to
//! their end) works as with plain TCP. A peer that closes TCP without `close_notify` (many
//! servers do) reads as end of stream, not as an error: RESP and the replication stream frame
//! their own messages, so a truncation is seen by their decoders.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// A connection: plain TCP, or TLS over TCP.
pub enum Stream {
    Plain(TcpStream),
    Tls(TlsStream),
}

impl Stream {
    /// Another handle on the same connection (the same socket and, for TLS, the same session).
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Plain(s) => Stream::Plain(s.try_clone()?),
            Stream::Tls(s) => Stream::Tls(s.try_clone()?),
        })
    }

    /// Shut the connection down; for TLS, `close_notify` goes out first unless only the read
    /// side is shut.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown(how),
            Stream::Tls(s) => s.shutdown(how),
        }
    }

    /// The TCP socket underneath (socket options, addresses).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.tcp,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The socket's read timeout (shared by every handle of the connection).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(t)
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp().set_write_timeout(t)
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.tcp().set_nodelay(on)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write_vectored(bufs),
            Stream::Tls(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Raw bytes read from the socket per system call (allocated on a handle's first read).
const RAW_READ: usize = 256 * 1024;
/// rustls buffers up to this much plaintext to encrypt and records to send (its default,
/// 64 KiB, would split a 1 MiB pipeline into 16 system calls).
const SEND_BUFFER: usize = 256 * 1024;
/// How long `shutdown` waits for a writer in progress before it skips `close_notify`.
const CLOSE_NOTIFY_WAIT: Duration = Duration::from_millis(200);

/// TLS over a TCP socket; clones share the session (see the module docs).
pub struct TlsStream {
    tcp: TcpStream,
    shared: Arc<Mutex<Session>>,
    /// This handle's buffer for raw reads.
    scratch: Vec<u8>,
}

struct Session {
    conn: rustls::Connection,
    /// Received TLS bytes not yet fed to rustls: `stash[stash_pos..]`.
    stash: Vec<u8>,
    stash_pos: usize,
    /// The socket reached end of file.
    tcp_eof: bool,
    /// ... and rustls has been told.
    eof_fed: bool,
    /// "source" or "target" for the hints in error messages; `None` on the server side.
    side: Option<&'static str>,
}

impl TlsStream {
    /// Wrap a connection whose handshake is complete (see [`super::TlsClient::handshake`] and
    /// [`super::accept`]).
    pub(crate) fn new(tcp: TcpStream, mut conn: rustls::Connection, side: Option<&'static str>) -> TlsStream {
        conn.set_buffer_limit(Some(SEND_BUFFER));
        let session = Session { conn, stash: Vec::new(), stash_pos: 0, tcp_eof: false, eof_fed: false, side };
        TlsStream { tcp, shared: Arc::new(Mutex::new(session)), scratch: Vec::new() }
    }

    pub fn try_clone(&self) -> io::Result<TlsStream> {
        Ok(TlsStream { tcp: self.tcp.try_clone()?, shared: self.shared.clone(), scratch: Vec::new() })
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read {
            // A writer blocked on a peer that does not read would hold the lock: then the
            // socket is shut down without close_notify, which also unblocks that writer.
            if let Some(mut s) = self.shared.try_lock_for(CLOSE_NOTIFY_WAIT) {
                s.conn.send_close_notify();
                let _ = s.send_pending(&self.tcp);
            }
        }
        self.tcp.shutdown(how)
    }

    /// Plaintext into `out`: decrypt what is already here, else read the socket (without the
    /// lock) until something decrypts or the stream ends.
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if let Some(n) = self.shared.lock().decrypt(&self.tcp, out, &[])? {
            return Ok(n);
        }
        if self.scratch.is_empty() {
            self.scratch = vec![0; RAW_READ];
        }
        loop {
            let got = match (&self.tcp).read(&mut self.scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut s = self.shared.lock();
            if got == 0 {
                s.tcp_eof = true;
            }
            if let Some(n) = s.decrypt(&self.tcp, out, &self.scratch[..got])? {
                return Ok(n);
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_with(|conn| conn.writer().write(buf), buf.is_empty())
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let empty = bufs.iter().all(|b| b.is_empty());
        self.write_with(|conn| conn.writer().write_vectored(bufs), empty)
    }

    /// Hand plaintext to rustls (it takes what fits in its buffer) and send the records. An
    /// error (the socket failed or timed out) leaves the connection unusable, as callers treat
    /// it: records rustls accepted may not have gone out.
    fn write_with(&mut self, mut put: impl FnMut(&mut rustls::Connection) -> io::Result<usize>, empty: bool) -> io::Result<usize> {
        let mut s = self.shared.lock();
        let mut n = put(&mut s.conn)?;
        if n == 0 && !empty {
            // The send buffer was full: empty it and try again.
            s.send_pending(&self.tcp)?;
            n = put(&mut s.conn)?;
        }
        s.send_pending(&self.tcp)?;
        if n == 0 && !empty {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "TLS: the session takes no more data"));
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.shared.lock().send_pending(&self.tcp)
    }
}

impl Session {
    /// Decrypt into `out`: plaintext already decrypted first, then the stashed bytes, then
    /// `fresh` (bytes just read; what rustls does not take yet is stashed). `Some(n)` when
    /// there is something to return (`Some(0)`: the stream ended), `None` when more bytes are
    /// needed from the socket.
    fn decrypt(&mut self, tcp: &TcpStream, out: &mut [u8], mut fresh: &[u8]) -> io::Result<Option<usize>> {
        let mut filled = 0;
        let result = loop {
            match self.conn.reader().read(&mut out[filled..]) {
                Ok(0) => break Ok(Some(filled)), // close_notify received: the end (after `filled`)
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP EOF without close_notify: an end of stream too (see the module docs).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(Some(filled)),
                Err(e) => break Err(e),
            }
            if filled == out.len() {
                break Ok(Some(filled));
            }
            // Feed more: what was stashed, then the fresh bytes, then the end of file.
            let fed = if self.stash_pos < self.stash.len() {
                let n = self.conn.read_tls(&mut &self.stash[self.stash_pos..])?;
                self.stash_pos += n;
                if self.stash_pos == self.stash.len() {
                    self.stash.clear();
                    self.stash_pos = 0;
                }
                n
            } else if !fresh.is_empty() {
                self.conn.read_tls(&mut fresh)?
            } else if self.tcp_eof && !self.eof_fed {
                self.eof_fed = true;
                let _ = self.conn.read_tls(&mut io::empty())?;
                1
            } else {
                0
            };
            if fed == 0 {
                break Ok((filled > 0).then_some(filled));
            }
            if let Err(e) = self.conn.process_new_packets() {
                // rustls queued an alert for the peer: send it, then report.
                let _ = self.send_pending(tcp);
                break Err(super::explain(self.side, &e));
            }
            self.send_pending(tcp)?;
        };
        if !fresh.is_empty() {
            self.stash.drain(..self.stash_pos);
            self.stash_pos = 0;
            self.stash.extend_from_slice(fresh);
        }
        result
    }

    /// Write every TLS record rustls has queued.
    fn send_pending(&mut self, tcp: &TcpStream) -> io::Result<()> {
        let mut w = tcp;
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut w) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "TLS: the socket takes no more data")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
