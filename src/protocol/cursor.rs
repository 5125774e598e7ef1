//! A read cursor over a byte slice that may end before the current item does.
//!
//! Every parser in `protocol` is written against this cursor. A read past the end of the slice
//! yields [`Stop::More`] rather than an error: the caller rewinds to the start of the unit it
//! was reading and retries once more bytes have arrived. `Stop::More` carries how many bytes the
//! unit needs at least (counted from the unit's start), so a caller fed one byte at a time does
//! not re-parse a 100 KB string 100 000 times.
//!
//! Primitive encodings (protocol doc section 2): packed uints (PUINT), RDB strings (RSTR,
//! including INT8/16/32 and LZF), little-endian fixed-width fields.

use std::borrow::Cow;

use super::error::{DecodeError, Space};
use super::lzf;

/// Why a parse stopped before producing a value.
#[derive(Debug)]
pub enum Stop {
    /// The slice ended inside the unit; at least this many bytes from the unit start are needed.
    More(usize),
    /// The bytes are malformed.
    Err(DecodeError),
}

impl From<DecodeError> for Stop {
    fn from(e: DecodeError) -> Self {
        Stop::Err(e)
    }
}

pub type PResult<T> = Result<T, Stop>;

/// Largest string an RSTR may declare after LZF expansion (Dragonfly's loader guard, 2^29).
pub const MAX_LZF_LEN: u64 = 1 << 29;

pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Start of the unit being parsed; `Stop::More` sizes are relative to it.
    mark: usize,
    space: Space,
    /// Offset of `buf[0]` within `space`.
    base: u64,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8], space: Space, base: u64) -> Self {
        Cursor { buf, pos: 0, mark: 0, space, base }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
    pub fn space(&self) -> Space {
        self.space
    }
    /// Offset of the next byte within the cursor's space.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }
    pub fn offset_at(&self, pos: usize) -> u64 {
        self.base + pos as u64
    }

    /// Begin a unit: remember where it starts so that `Stop::More` and `rewind` refer to it.
    pub fn mark(&mut self) {
        self.mark = self.pos;
    }
    /// Go back to the start of the current unit (after `Stop::More`).
    pub fn rewind(&mut self) {
        self.pos = self.mark;
    }

    /// An error at the current position.
    pub fn err(&self, message: impl Into<String>) -> Stop {
        Stop::Err(DecodeError::new(self.space, self.offset(), message))
    }
    /// An error at an earlier position of this cursor.
    pub fn err_at(&self, pos: usize, message: impl Into<String>) -> Stop {
        Stop::Err(DecodeError::new(self.space, self.offset_at(pos), message))
    }

    fn need(&self, n: usize) -> PResult<()> {
        if self.remaining() < n {
            Err(Stop::More(self.pos - self.mark + n))
        } else {
            Ok(())
        }
    }

    pub fn peek_u8(&self) -> PResult<u8> {
        self.need(1)?;
        Ok(self.buf[self.pos])
    }

    pub fn u8(&mut self) -> PResult<u8> {
        self.need(1)?;
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(b)
    }

    pub fn bytes(&mut self, n: usize) -> PResult<&'a [u8]> {
        self.need(n)?;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Up to `n` bytes, whatever is available now (for streaming raw payloads).
    pub fn take_up_to(&mut self, n: usize) -> &'a [u8] {
        let k = n.min(self.remaining());
        let s = &self.buf[self.pos..self.pos + k];
        self.pos += k;
        s
    }

    pub fn u32_le(&mut self) -> PResult<u32> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap()))
    }
    pub fn u64_le(&mut self) -> PResult<u64> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }
    pub fn i64_le(&mut self) -> PResult<i64> {
        Ok(i64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }
    pub fn f64_le(&mut self) -> PResult<f64> {
        Ok(f64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }
    /// A raw 128-bit stream ID: two big-endian u64 (ms, seq).
    pub fn stream_id_be(&mut self) -> PResult<(u64, u64)> {
        let b = self.bytes(16)?;
        Ok((
            u64::from_be_bytes(b[..8].try_into().unwrap()),
            u64::from_be_bytes(b[8..].try_into().unwrap()),
        ))
    }

    /// A packed unsigned integer (protocol doc 2.2). The special string encodings (0xC0..)
    /// and the unused 0x82..0xBF are errors here.
    pub fn puint(&mut self) -> PResult<u64> {
        let start = self.pos;
        let b = self.u8()?;
        match b >> 6 {
            0 => Ok((b & 0x3F) as u64),
            1 => Ok((((b & 0x3F) as u64) << 8) | self.u8()? as u64),
            _ => match b {
                0x80 => Ok(u32::from_be_bytes(self.bytes(4)?.try_into().unwrap()) as u64),
                0x81 => Ok(u64::from_be_bytes(self.bytes(8)?.try_into().unwrap())),
                _ => Err(self.err_at(
                    start,
                    format!("expected a packed length, found invalid first byte 0x{b:02X}"),
                )),
            },
        }
    }

    /// A packed uint that must fit `max` (a count or a db index). `what` names it in errors.
    pub fn puint_max(&mut self, max: u64, what: &str) -> PResult<u64> {
        let start = self.pos;
        let v = self.puint()?;
        if v > max {
            return Err(self.err_at(start, format!("{what} {v} exceeds the limit of {max}")));
        }
        Ok(v)
    }

    /// A length that is about to be used to read that many bytes from this stream. Lengths
    /// larger than the address space are rejected rather than truncated.
    pub fn len(&mut self, what: &str) -> PResult<usize> {
        Ok(self.puint_max(usize::MAX as u64 >> 1, what)? as usize)
    }

    /// The header of an RDB string: either a plain length or a special encoding.
    pub fn rstr_header(&mut self) -> PResult<RstrHeader> {
        let start = self.pos;
        let b = self.peek_u8()?;
        if b >> 6 != 3 {
            return Ok(RstrHeader::Plain(self.len("string length")?));
        }
        self.pos += 1;
        match b & 0x3F {
            0 => Ok(RstrHeader::Int(self.u8()? as i8 as i64)),
            1 => Ok(RstrHeader::Int(i16::from_le_bytes(self.bytes(2)?.try_into().unwrap()) as i64)),
            2 => Ok(RstrHeader::Int(i32::from_le_bytes(self.bytes(4)?.try_into().unwrap()) as i64)),
            3 => {
                let clen = self.puint()?;
                let ulen = self.puint()?;
                if clen == 0 || ulen > MAX_LZF_LEN {
                    return Err(self.err_at(
                        start,
                        format!("LZF string with invalid lengths (compressed {clen}, uncompressed {ulen})"),
                    ));
                }
                Ok(RstrHeader::Lzf { clen: clen as usize, ulen: ulen as usize, at: start })
            }
            enc => Err(self.err_at(start, format!("unknown string encoding 0x{:02X}", 0xC0 | enc))),
        }
    }

    /// An RDB string (protocol doc 2.3), decoded: integers become their decimal text and LZF is
    /// expanded. Borrowed when the bytes are stored plain.
    pub fn rstr(&mut self) -> PResult<Cow<'a, [u8]>> {
        let h = self.rstr_header()?;
        self.rstr_body(h)
    }

    /// The bytes of an RDB string whose header was read already.
    pub fn rstr_body(&mut self, h: RstrHeader) -> PResult<Cow<'a, [u8]>> {
        match h {
            RstrHeader::Plain(n) => Ok(Cow::Borrowed(self.bytes(n)?)),
            RstrHeader::Int(v) => Ok(Cow::Owned(v.to_string().into_bytes())),
            RstrHeader::Lzf { clen, ulen, at } => {
                let data = self.bytes(clen)?;
                lzf::decompress(data, ulen)
                    .map(Cow::Owned)
                    .map_err(|e| self.err_at(at, format!("LZF string: {e}")))
            }
        }
    }

    /// Step over an RDB string without expanding it (LZF stays compressed).
    pub fn skip_rstr(&mut self) -> PResult<()> {
        match self.rstr_header()? {
            RstrHeader::Plain(n) => self.bytes(n).map(drop),
            RstrHeader::Int(_) => Ok(()),
            RstrHeader::Lzf { clen, .. } => self.bytes(clen).map(drop),
        }
    }

    /// The bytes from an earlier position of this cursor up to the current one.
    pub fn since(&self, start: usize) -> &'a [u8] {
        &self.buf[start..self.pos]
    }

    /// An RDB string as an owned vector.
    pub fn rstr_vec(&mut self) -> PResult<Vec<u8>> {
        Ok(self.rstr()?.into_owned())
    }

    /// An RDB string holding a decimal integer (member TTLs of types 31/32).
    pub fn rstr_i64(&mut self, what: &str) -> PResult<i64> {
        let start = self.pos;
        let s = self.rstr()?;
        std::str::from_utf8(&s)
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or_else(|| {
                self.err_at(start, format!("{what}: expected an integer, found {}", show(&s)))
            })
    }
}

/// How an RDB string is stored.
#[derive(Debug, Clone, Copy)]
pub enum RstrHeader {
    Plain(usize),
    Int(i64),
    Lzf { clen: usize, ulen: usize, at: usize },
}

/// A short, printable rendering of bytes for messages: text in quotes, otherwise hex, cut at
/// 64 bytes.
pub fn show(b: &[u8]) -> String {
    const MAX: usize = 64;
    let cut = &b[..b.len().min(MAX)];
    let tail = if b.len() > MAX { format!("... ({} bytes)", b.len()) } else { String::new() };
    if cut.iter().all(|&c| (0x20..0x7F).contains(&c)) {
        format!("\"{}\"{tail}", String::from_utf8_lossy(cut))
    } else {
        let hex: Vec<String> = cut.iter().map(|c| format!("{c:02X}")).collect();
        format!("0x{}{tail}", hex.join(""))
    }
}
