//! Just enough RESP2 for pipelined writes: encode commands into one buffer, read replies.
//!
//! The writer builds a whole pipeline in one `Vec<u8>` and sends it with one `write_all`, then
//! reads exactly one reply per command. Replies are checked one by one so that a rejected
//! command is reported with its name and key, which redis-rs pipelines do not expose.

use std::borrow::Cow;
use std::io::{self, BufRead};

use crate::protocol::items::digits;

/// The arguments of `AUTH [user] password` (the default user when `user` is empty).
pub fn auth_args<'a>(user: &'a str, password: &'a str) -> Vec<&'a [u8]> {
    let mut args: Vec<&[u8]> = vec![b"AUTH"];
    if !user.is_empty() {
        args.push(user.as_bytes());
    }
    args.push(password.as_bytes());
    args
}

/// Append `args` as a RESP array of bulk strings.
pub fn encode<'a>(buf: &mut Vec<u8>, args: impl ExactSizeIterator<Item = &'a [u8]>) {
    let mut num = [0u8; 20];
    buf.push(b'*');
    buf.extend_from_slice(digits(&mut num, args.len()));
    buf.extend_from_slice(b"\r\n");
    for a in args {
        buf.push(b'$');
        buf.extend_from_slice(digits(&mut num, a.len()));
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(a);
        buf.extend_from_slice(b"\r\n");
    }
}

/// A reply, as far as the writer cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`, the reply to almost every write, and `+QUEUED` are held without an allocation.
    Status(Cow<'static, str>),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn as_error(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn line(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut l = Vec::with_capacity(16);
    r.read_until(b'\n', &mut l)?;
    if l.is_empty() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed while reading a reply"));
    }
    if !l.ends_with(b"\r\n") {
        return Err(bad("reply line not terminated by CRLF"));
    }
    l.truncate(l.len() - 2);
    Ok(l)
}

fn int(s: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(s).ok().and_then(|t| t.parse().ok()).ok_or_else(|| bad("bad integer in reply"))
}

/// A reply's first line, parsed.
enum Head {
    Status(Cow<'static, str>),
    Error(String),
    Int(i64),
    Bulk(i64),
    Array(i64),
}

fn head(l: &[u8]) -> io::Result<Head> {
    let (&kind, rest) = l.split_first().ok_or_else(|| bad("empty reply line"))?;
    Ok(match kind {
        b'+' if rest == b"OK" => Head::Status(Cow::Borrowed("OK")),
        // Every command of a checkpointed batch (MULTI ... EXEC) is answered QUEUED first.
        b'+' if rest == b"QUEUED" => Head::Status(Cow::Borrowed("QUEUED")),
        b'+' => Head::Status(Cow::Owned(String::from_utf8_lossy(rest).into_owned())),
        b'-' => Head::Error(String::from_utf8_lossy(rest).into_owned()),
        b':' => Head::Int(int(rest)?),
        b'$' => Head::Bulk(int(rest)?),
        b'*' => Head::Array(int(rest)?),
        other => return Err(bad(format!("unexpected reply type byte 0x{other:02X}"))),
    })
}

/// Parse the next line in place when the reader already holds all of it (the common case
/// with pipelined replies: no allocation per reply); otherwise read it into a buffer.
fn read_head(r: &mut impl BufRead) -> io::Result<Head> {
    let buf = r.fill_buf()?;
    if let Some(n) = buf.iter().position(|&b| b == b'\n') {
        if n == 0 || buf[n - 1] != b'\r' {
            return Err(bad("reply line not terminated by CRLF"));
        }
        let h = head(&buf[..n - 1]);
        r.consume(n + 1);
        return h;
    }
    head(&line(r)?)
}

/// Read one reply.
pub fn read_reply(r: &mut impl BufRead) -> io::Result<Reply> {
    let h = read_head(r)?;
    finish(h, r)
}

/// Read an array reply element by element, calling `on_error(index, message)` for each error
/// element, without building the array: EXEC's answer to a checkpointed batch is thousands of
/// `+OK`. Returns the element count, or any other reply whole (EXECABORT, a nil array).
pub fn read_array_checked(r: &mut impl BufRead, mut on_error: impl FnMut(usize, &str)) -> io::Result<Result<usize, Reply>> {
    match read_head(r)? {
        Head::Array(n) if n >= 0 => {
            for i in 0..n as usize {
                if let Reply::Error(e) = read_reply(r)? {
                    on_error(i, &e);
                }
            }
            Ok(Ok(n as usize))
        }
        h => Ok(Err(finish(h, r)?)),
    }
}

/// The rest of a reply whose first line is `h`.
fn finish(h: Head, r: &mut impl BufRead) -> io::Result<Reply> {
    Ok(match h {
        Head::Status(s) => Reply::Status(s),
        Head::Error(e) => Reply::Error(e),
        Head::Int(i) => Reply::Int(i),
        Head::Bulk(n) if n < 0 => Reply::Bulk(None),
        Head::Bulk(n) => {
            let mut v = vec![0; n as usize + 2];
            r.read_exact(&mut v)?;
            if !v.ends_with(b"\r\n") {
                return Err(bad("bulk reply not terminated by CRLF"));
            }
            v.truncate(n as usize);
            Reply::Bulk(Some(v))
        }
        Head::Array(n) if n < 0 => Reply::Array(None),
        Head::Array(n) => {
            let mut items = Vec::with_capacity((n as usize).min(1024));
            for _ in 0..n {
                items.push(read_reply(r)?);
            }
            Reply::Array(Some(items))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_checked_reports_error_elements_and_passes_other_replies() {
        let mut input: &[u8] = b"*3\r\n+OK\r\n-ERR bad\r\n:1\r\n-EXECABORT x\r\n";
        let mut errs = Vec::new();
        assert_eq!(read_array_checked(&mut input, |i, e| errs.push((i, e.to_string()))).unwrap(), Ok(3));
        assert_eq!(errs, vec![(1, "ERR bad".to_string())]);
        assert_eq!(read_array_checked(&mut input, |_, _| panic!()).unwrap(), Err(Reply::Error("EXECABORT x".into())));
    }

    #[test]
    fn encodes_and_reads() {
        let mut b = Vec::new();
        encode(&mut b, [b"SET".as_slice(), b"k", b""].into_iter());
        assert_eq!(b, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
        let mut input: &[u8] = b"+OK\r\n-ERR no\r\n:5\r\n$3\r\nabc\r\n*2\r\n$-1\r\n:1\r\n";
        assert_eq!(read_reply(&mut input).unwrap(), Reply::Status("OK".into()));
        assert_eq!(read_reply(&mut input).unwrap(), Reply::Error("ERR no".into()));
        assert_eq!(read_reply(&mut input).unwrap(), Reply::Int(5));
        assert_eq!(read_reply(&mut input).unwrap(), Reply::Bulk(Some(b"abc".to_vec())));
        assert_eq!(read_reply(&mut input).unwrap(), Reply::Array(Some(vec![Reply::Bulk(None), Reply::Int(1)])));
    }
}
