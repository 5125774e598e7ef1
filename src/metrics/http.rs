//! A tiny HTTP/1.1 server on its own thread (`metrics-http`), for `/metrics` and `/status`.
//!
//! One mio poll loop, no async runtime and no HTTP crate: the endpoint answers a handful of
//! GETs from a scraper, so it only needs the request line. Each connection gets one answer
//! (`Connection: close`), which keeps the state machine to three steps: read the head,
//! write the answer, drain until the client closes (so that unread request bytes never turn
//! our close into a reset that could destroy the answer in flight). Limits keep a client
//! from holding resources: the head must fit in [`MAX_REQUEST`] bytes, a connection lives at
//! most [`CONN_DEADLINE`], and at most [`MAX_CONNS`] are open. Any input gives an answer or a
//! close, never a panic; a panicking handler gives a 500.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

/// The request line and headers must fit in this many bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// A connection is closed this long after it was accepted, answered or not.
pub const CONN_DEADLINE: Duration = Duration::from_secs(5);
/// Connections beyond this many are closed at once.
pub const MAX_CONNS: usize = 64;
/// How often [`Handler::tick`] runs.
const TICK: Duration = Duration::from_secs(1);

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

/// An answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn ok(content_type: &'static str, body: Vec<u8>) -> Self {
        Response { status: 200, content_type, body }
    }
    pub fn not_found() -> Self {
        Self::error(404)
    }
    pub fn method_not_allowed() -> Self {
        Self::error(405)
    }
    pub fn error(status: u16) -> Self {
        Response { status, content_type: "text/plain; charset=utf-8", body: format!("{status} {}\n", reason(status)).into_bytes() }
    }

    /// The bytes on the wire; a HEAD answer has the headers of the GET one and no body.
    pub fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// What the server serves.
pub trait Handler: Send + 'static {
    /// Answer `method` on `path` (the request target without query string).
    fn handle(&self, method: &str, path: &str) -> Response;
    /// Called about once a second by the server's thread.
    fn tick(&self) {}
}

/// The head of a request, as far as it was read.
#[derive(Debug, PartialEq)]
pub enum Parsed<'a> {
    /// No blank line yet: read more.
    Incomplete,
    Request { method: &'a str, path: &'a str },
    /// Answer with this status and close.
    Error(u16),
}

/// RFC 9110 `tchar`, the characters of a method name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parse the request line of `buf` once the head (up to the blank line) is complete.
/// Header fields are not needed and not interpreted; the body, if any, is never read.
pub fn parse_request(buf: &[u8]) -> Parsed<'_> {
    // Clients may send empty lines before the request line (RFC 9112 2.2).
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    let rest = &buf[start..];
    let end = rest.windows(2).position(|w| w == b"\n\n").or_else(|| rest.windows(3).position(|w| w == b"\n\r\n"));
    let Some(end) = end else {
        return if buf.len() >= MAX_REQUEST { Parsed::Error(431) } else { Parsed::Incomplete };
    };
    if start + end >= MAX_REQUEST {
        return Parsed::Error(431);
    }
    let line_end = rest.iter().position(|&b| b == b'\n').unwrap_or(end);
    let line = rest[..line_end].strip_suffix(b"\r").unwrap_or(&rest[..line_end]);
    let Ok(line) = std::str::from_utf8(line) else { return Parsed::Error(400) };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Parsed::Error(400);
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Parsed::Error(400);
    }
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if v.starts_with("HTTP/") && v.len() > 5 => return Parsed::Error(505),
        _ => return Parsed::Error(400),
    }
    // absolute-form (`http://host/path`, RFC 9112 3.2.2): keep the path.
    let target = match target.strip_prefix("http://").or_else(|| target.strip_prefix("https://")) {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Parsed::Error(400);
    }
    let path = target.split(['?', '#']).next().unwrap_or("/");
    Parsed::Request { method, path }
}

/// The endpoint: a bound listener served by the `metrics-http` thread until [`Server::stop`]
/// (or drop).
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Bind `addr` (`host:port`, resolved) and start serving. Binding happens here, so an
    /// address in use is reported to the caller rather than logged by the thread.
    pub fn start(addr: &str, handler: impl Handler) -> io::Result<Server> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let local = std_listener.local_addr()?;
        let mut listener = TcpListener::from_std(std_listener);
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || EventLoop { poll, listener, handler, stop: st, conns: HashMap::new(), next: 2 }.run())?;
        Ok(Server { addr: local, stop, waker, thread: Some(thread) })
    }

    /// The address actually bound (port 0 picks a free one).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

enum State {
    Reading,
    Writing { out: Vec<u8>, sent: usize },
    /// Answer sent and our side shut: read and discard until the client closes.
    Draining,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    state: State,
    deadline: Instant,
}

struct EventLoop<H> {
    poll: Poll,
    listener: TcpListener,
    handler: H,
    stop: Arc<AtomicBool>,
    conns: HashMap<Token, Conn>,
    next: usize,
}

impl<H: Handler> EventLoop<H> {
    fn run(mut self) {
        let mut events = Events::with_capacity(128);
        let mut next_tick = Instant::now() + TICK;
        while !self.stop.load(Ordering::SeqCst) {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("metrics endpoint: poll failed, the endpoint stops: {e}");
                return;
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    t => self.ready(t),
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + TICK;
                self.handler.tick();
                let expired: Vec<Token> = self.conns.iter().filter(|(_, c)| c.deadline <= now).map(|(t, _)| *t).collect();
                for t in expired {
                    self.close(t);
                }
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, for instance: leave the rest in the backlog.
                    log::warn!("metrics endpoint: accept: {e}");
                    return;
                }
            };
            if self.conns.len() >= MAX_CONNS {
                continue; // dropped: closed at once
            }
            let token = Token(self.next);
            self.next = if self.next == usize::MAX { 2 } else { self.next + 1 };
            if self.poll.registry().register(&mut stream, token, Interest::READABLE).is_ok() {
                let conn = Conn { stream, buf: Vec::new(), state: State::Reading, deadline: Instant::now() + CONN_DEADLINE };
                self.conns.insert(token, conn);
            }
        }
    }

    fn close(&mut self, t: Token) {
        if let Some(mut c) = self.conns.remove(&t) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    /// Advance one connection as far as its socket allows.
    fn ready(&mut self, t: Token) {
        let Some(c) = self.conns.get_mut(&t) else { return };
        let finished = match advance(c, &self.handler) {
            Ok(Step::Again) => false,
            Ok(Step::Wrote) => {
                // Now waiting to write: ask for writability (readable too, for a close).
                self.poll.registry().reregister(&mut c.stream, t, Interest::READABLE | Interest::WRITABLE).is_err()
            }
            Ok(Step::Finished) | Err(_) => true,
        };
        if finished {
            self.close(t);
        }
    }
}

enum Step {
    /// Wait for the next event.
    Again,
    /// The answer is partly written: wait for writability.
    Wrote,
    Finished,
}

fn advance(c: &mut Conn, handler: &impl Handler) -> io::Result<Step> {
    let mut chunk = [0u8; 4096];
    loop {
        match &mut c.state {
            State::Reading => {
                let n = match c.stream.read(&mut chunk) {
                    Ok(0) => return Ok(Step::Finished), // closed before a complete head
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Again),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                c.buf.extend_from_slice(&chunk[..n]);
                let (resp, head_only) = match parse_request(&c.buf) {
                    Parsed::Incomplete => continue,
                    Parsed::Error(status) => (Response::error(status), false),
                    Parsed::Request { method, path } => {
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(method, path)));
                        (r.unwrap_or_else(|_| Response::error(500)), method == "HEAD")
                    }
                };
                c.buf = Vec::new();
                c.state = State::Writing { out: resp.encode(head_only), sent: 0 };
            }
            State::Writing { out, sent } => {
                match c.stream.write(&out[*sent..]) {
                    Ok(0) => return Ok(Step::Finished),
                    Ok(n) => *sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Wrote),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
                if *sent == out.len() {
                    let _ = c.stream.shutdown(Shutdown::Write);
                    c.state = State::Draining;
                }
            }
            State::Draining => match c.stream.read(&mut chunk) {
                Ok(0) => return Ok(Step::Finished),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Again),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn request_lines() {
        let ok = |m, p| Parsed::Request { method: m, path: p };
        assert_eq!(parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), ok("GET", "/metrics"));
        assert_eq!(parse_request(b"HEAD /status?pretty=1 HTTP/1.0\n\n"), ok("HEAD", "/status"));
        assert_eq!(parse_request(b"\r\nGET http://h:9/status#x HTTP/1.1\r\n\r\n"), ok("GET", "/status"));
        assert_eq!(parse_request(b"GET http://h:9 HTTP/1.1\r\n\r\n"), ok("GET", "/"));
        assert_eq!(parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), Parsed::Incomplete);
        assert_eq!(parse_request(b""), Parsed::Incomplete);
        assert_eq!(parse_request(b"GET /metrics HTTP/2.0\r\n\r\n"), Parsed::Error(505));
        assert_eq!(parse_request(b"GET /metrics FTP/1.1\r\n\r\n"), Parsed::Error(400));
        assert_eq!(parse_request(b"GET  /metrics HTTP/1.1\r\n\r\n"), Parsed::Error(400));
        assert_eq!(parse_request(b"GET metrics HTTP/1.1\r\n\r\n"), Parsed::Error(400));
        assert_eq!(parse_request(b"G(T / HTTP/1.1\r\n\r\n"), Parsed::Error(400));
        assert_eq!(parse_request(b"GET /\xff HTTP/1.1\r\n\r\n"), Parsed::Error(400));
        assert_eq!(parse_request(b"GET /a\x01 HTTP/1.1\r\n\r\n"), Parsed::Error(400));
        assert_eq!(parse_request(b"\r\n\r\n"), Parsed::Incomplete, "blank lines only");
        let mut big = b"GET /".to_vec();
        big.resize(MAX_REQUEST, b'a');
        assert_eq!(parse_request(&big), Parsed::Error(431));
        big.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        assert_eq!(parse_request(&big), Parsed::Error(431));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 0x2545F4914F6CDD1Du64;
        let alphabet = b"GET /HTP1.\r\n \x00\xff?:";
        for _ in 0..20_000 {
            let len = (x % 64) as usize;
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            let _ = parse_request(&buf);
        }
    }

    struct Echo;
    impl Handler for Echo {
        fn handle(&self, method: &str, path: &str) -> Response {
            match path {
                "/panic" => panic!("handler bug"),
                "/x" if method == "GET" || method == "HEAD" => Response::ok("text/plain", format!("{method} {path}").into_bytes()),
                "/x" => Response::method_not_allowed(),
                _ => Response::not_found(),
            }
        }
    }

    fn exchange(addr: SocketAddr, parts: &[&[u8]]) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for p in parts {
            s.write_all(p).unwrap();
            s.flush().unwrap();
        }
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_answers_and_errors_over_a_socket() {
        let srv = Server::start("127.0.0.1:0", Echo).unwrap();
        let a = srv.addr();
        let r = exchange(a, &[b"GET /x HTTP/1.1\r\n", b"Host: t\r\n", b"\r\n"]);
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.contains("Content-Length: 6\r\n") && r.ends_with("\r\n\r\nGET /x"), "{r}");
        let r = exchange(a, &[b"HEAD /x HTTP/1.1\r\n\r\n"]);
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.contains("Content-Length: 7\r\n") && r.ends_with("\r\n\r\n"), "{r}");
        let r = exchange(a, &[b"POST /x HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody"]);
        assert!(r.starts_with("HTTP/1.1 405 ") && r.contains("Allow: GET, HEAD\r\n"), "{r}");
        assert!(exchange(a, &[b"GET /nope HTTP/1.1\r\n\r\n"]).starts_with("HTTP/1.1 404 "));
        assert!(exchange(a, &[b"\x16\x03\x01\x02\x00\x01\x00\n\n"]).starts_with("HTTP/1.1 400 "));
        assert!(exchange(a, &[&vec![b'A'; MAX_REQUEST + 100]]).starts_with("HTTP/1.1 431 "));
        assert!(exchange(a, &[b"GET /panic HTTP/1.1\r\n\r\n"]).starts_with("HTTP/1.1 500 "));
        // A client that closes without a request, then the server still answers others.
        drop(std::net::TcpStream::connect(a).unwrap());
        assert!(exchange(a, &[b"GET /x HTTP/1.0\r\n\r\n"]).starts_with("HTTP/1.1 200 "));
        srv.stop();
        assert!(std::net::TcpStream::connect(a).is_err(), "the listener is closed after stop");
    }
}
