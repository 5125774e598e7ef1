//! RESP on the control plane (protocol doc 2.1): commands as arrays of bulk strings or as
//! inline lines (Dragonfly's own replica sends inline commands), replies in RESP2.

use std::io::{self, BufRead};

/// Refuse absurd sizes from a broken client instead of allocating them.
const MAX_ARGS: usize = 1 << 20;
const MAX_BULK: usize = 512 << 20;
const MAX_INLINE: usize = 64 << 10;

#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    /// Malformed input: the connection is answered with this and closed.
    Protocol(String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Read one command. `Ok(None)` at a clean end of the stream between commands.
pub(crate) fn read_command(r: &mut impl BufRead) -> Result<Option<Vec<Vec<u8>>>, ReadError> {
    loop {
        let first = match r.fill_buf()? {
            [] => return Ok(None),
            b => b[0],
        };
        if first == b'*' {
            let n = read_int_line(r, b'*')?;
            if !(0..=MAX_ARGS as i64).contains(&n) {
                return Err(ReadError::Protocol(format!("invalid multibulk length {n}")));
            }
            let mut args = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let len = read_int_line(r, b'$')?;
                if !(0..=MAX_BULK as i64).contains(&len) {
                    return Err(ReadError::Protocol(format!("invalid bulk length {len}")));
                }
                let mut buf = vec![0u8; len as usize + 2];
                r.read_exact(&mut buf).map_err(eof_inside)?;
                if &buf[len as usize..] != b"\r\n" {
                    return Err(ReadError::Protocol("bulk string not terminated by CRLF".into()));
                }
                buf.truncate(len as usize);
                args.push(buf);
            }
            if args.is_empty() {
                continue;
            }
            return Ok(Some(args));
        }
        let line = read_line(r)?;
        let args: Vec<Vec<u8>> =
            line.split(|b| b.is_ascii_whitespace()).filter(|a| !a.is_empty()).map(<[u8]>::to_vec).collect();
        if !args.is_empty() {
            return Ok(Some(args));
        }
    }
}

fn eof_inside(e: io::Error) -> ReadError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ReadError::Protocol("connection closed inside a command".into())
    } else {
        ReadError::Io(e)
    }
}

fn read_line(r: &mut impl BufRead) -> Result<Vec<u8>, ReadError> {
    let mut line = Vec::new();
    let n = io::Read::take(&mut *r, MAX_INLINE as u64).read_until(b'\n', &mut line)?;
    if n == 0 || line.last() != Some(&b'\n') {
        return Err(if n >= MAX_INLINE {
            ReadError::Protocol("too big inline request".into())
        } else {
            ReadError::Protocol("connection closed inside a command".into())
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(line)
}

fn read_int_line(r: &mut impl BufRead, prefix: u8) -> Result<i64, ReadError> {
    let line = read_line(r)?;
    if line.first() != Some(&prefix) {
        return Err(ReadError::Protocol(format!(
            "expected '{}', got '{}'",
            prefix as char,
            String::from_utf8_lossy(&line)
        )));
    }
    std::str::from_utf8(&line[1..])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ReadError::Protocol(format!("invalid length '{}'", String::from_utf8_lossy(&line[1..]))))
}

// ---- replies -----------------------------------------------------------------------------------

pub(crate) fn simple(s: &str) -> Vec<u8> {
    format!("+{s}\r\n").into_bytes()
}

/// An error reply; like Dragonfly, `ERR ` is added to a message without an error code.
pub(crate) fn error(msg: &str) -> Vec<u8> {
    let coded = msg.split_whitespace().next().is_some_and(|w| w.len() > 1 && w.bytes().all(|b| b.is_ascii_uppercase()));
    if coded {
        format!("-{msg}\r\n").into_bytes()
    } else {
        format!("-ERR {msg}\r\n").into_bytes()
    }
}

pub(crate) fn int(v: i64) -> Vec<u8> {
    format!(":{v}\r\n").into_bytes()
}

pub(crate) fn bulk(b: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", b.len()).into_bytes();
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
    out
}

pub(crate) fn array(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", items.len()).into_bytes();
    for i in items {
        out.extend_from_slice(i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Vec<Result<Option<Vec<Vec<u8>>>, String>> {
        let mut r = io::BufReader::new(input);
        let mut out = Vec::new();
        loop {
            match read_command(&mut r) {
                Ok(None) => {
                    out.push(Ok(None));
                    return out;
                }
                Ok(c) => out.push(Ok(c)),
                Err(ReadError::Protocol(m)) => {
                    out.push(Err(m));
                    return out;
                }
                Err(ReadError::Io(e)) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn arrays_and_inline_commands() {
        let got = parse(b"*2\r\n$4\r\nPING\r\n$0\r\n\r\n\r\nREPLCONF  ACK 42\r\nDFLY SYNC SYNC1\n");
        assert_eq!(
            got,
            vec![
                Ok(Some(vec![b"PING".to_vec(), vec![]])),
                Ok(Some(vec![b"REPLCONF".to_vec(), b"ACK".to_vec(), b"42".to_vec()])),
                Ok(Some(vec![b"DFLY".to_vec(), b"SYNC".to_vec(), b"SYNC1".to_vec()])),
                Ok(None)
            ]
        );
    }

    #[test]
    fn malformed_input_is_a_protocol_error() {
        assert!(parse(b"*x\r\n").last().unwrap().is_err());
        assert!(parse(b"*1\r\n$3\r\nabcd\r\n").last().unwrap().is_err());
        assert!(parse(b"*1\r\n$3\r\nab").last().unwrap().is_err());
        assert!(parse(b"PING").last().unwrap().is_err());
    }

    #[test]
    fn error_codes() {
        assert_eq!(error("syntax error"), b"-ERR syntax error\r\n");
        assert_eq!(error("ERR bad master id"), b"-ERR bad master id\r\n");
        assert_eq!(error("WRONGTYPE Operation"), b"-WRONGTYPE Operation\r\n");
    }
}
