//! One flow's byte stream, from `REDIS0009` to the live journal (protocol doc 5.2, 5.9, 7),
//! or one snapshot file ([`FlowDecoder::file`]).
//!
//! ```text
//! flow_stream := header body FULLSYNC_END post_cut* JOURNAL_OFFSET EOF token journal*
//! file        := header body EOF checksum trailing
//! ```
//!
//! [`FlowDecoder`] is fed whatever the socket delivers, down to one byte at a time, and emits
//! [`Item`]s. It never asks for bytes beyond the current unit: after FULLSYNC_END the master
//! sends nothing until STARTSTABLE, so a decoder that peeked ahead would deadlock the session.
//! Bytes it cannot use yet stay in a buffer no larger than the unit being read (a key, a list
//! node, a compressed blob); values are handed on in bounded pieces by [`EntryParser`].

use std::collections::HashMap;

use super::compress::{self, OP_BLOB_END, OP_LZ4, OP_ZSTD};
use super::cursor::{show, Cursor, PResult, RstrHeader, Stop};
use super::entry::{EntryParser, Limits, OP_DF_MASK, OP_EXPIRETIME_MS};
use super::error::{DecodeError, Space};
use super::items::{Item, JournalRecord};
use super::journal::{self, Unit};

pub const MAGIC_PREFIX: &[u8] = b"REDIS";
pub const OP_FULLSYNC_END: u8 = 0xC8;
pub const OP_JOURNAL_BLOB: u8 = 0xD2;
pub const OP_JOURNAL_OFFSET: u8 = 0xD3;
pub const OP_VECTOR_INDEX: u8 = 0xDE;
pub const OP_SHARD_DOC_INDEX: u8 = 0xDF;
pub const OP_TAGGED_CHUNK: u8 = 0xE0;
pub const OP_SLOT_INFO: u8 = 0xF4;
pub const OP_IDLE: u8 = 0xF8;
pub const OP_FREQ: u8 = 0xF9;
pub const OP_AUX: u8 = 0xFA;
pub const OP_RESIZEDB: u8 = 0xFB;
pub const OP_SELECTDB: u8 = 0xFE;
pub const OP_EOF: u8 = 0xFF;
pub const TOKEN_LEN: usize = 40;

/// Where the decoder is in the flow's grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Expecting `REDIS` + 4 digits.
    Magic,
    /// Snapshot body: entries, SELECTDB, blobs, chunks, inline journal; FULLSYNC_END may have
    /// been seen (then only journal blobs and JOURNAL_OFFSET may follow).
    Body,
    /// JOURNAL_OFFSET seen: EOF must follow.
    AwaitEof,
    /// EOF seen: the 40-byte token must follow.
    Token,
    /// Stable sync: journal records.
    Journal,
    /// A snapshot file's EOF and checksum were read: whatever follows is not RDB data (a
    /// Dragonfly file is written in 4 KiB blocks, and the last block's tail holds leftover
    /// bytes), counted and otherwise ignored.
    End,
}

/// Counters of what a decoder has seen, by top-level opcode.
#[derive(Debug, Clone)]
pub struct OpcodeCounts(pub [u64; 256]);

impl Default for OpcodeCounts {
    fn default() -> Self {
        OpcodeCounts([0; 256])
    }
}

/// An entry reassembled from TAGGED_CHUNKs.
struct Tagged {
    parser: EntryParser,
    /// Payload bytes received but not yet parsed (less than one unit).
    carry: Vec<u8>,
    /// Offset of `carry[0]` within the reassembled entry.
    carry_base: u64,
    need: usize,
    first_chunk_at: u64,
}

pub struct FlowDecoder {
    flow: Option<u32>,
    limits: Limits,
    expected_token: Option<Vec<u8>>,
    phase: Phase,
    /// Raw bytes received but not consumed (less than one unit).
    buf: Vec<u8>,
    /// Flow offset of `buf[0]`.
    buf_base: u64,
    /// Do not retry parsing until `buf` holds this many bytes.
    need: usize,
    /// RDB SELECTDB cursor.
    db: u32,
    /// Journal SELECT cursor (independent of the RDB one, protocol doc 5.8).
    journal_db: u32,
    /// An untagged entry being read off the raw stream.
    open: Option<EntryParser>,
    /// A tagged chunk whose payload is being read: (stream id, payload bytes left).
    chunk: Option<(u32, u64)>,
    tagged: HashMap<u32, Tagged>,
    fullsync_end: bool,
    journal_offset: Option<u64>,
    next_lsn: Option<u64>,
    last_lsn: Option<u64>,
    counts: OpcodeCounts,
    failed: Option<DecodeError>,
    /// Reused for every compressed blob.
    blob_buf: Vec<u8>,
    /// A v1.34 partial resume (protocol doc 8.3), until JOURNAL_OFFSET: the journal blobs are
    /// the flow's records from the resume LSN on, one LSN each.
    backlog: Option<Backlog>,
    /// Reading a snapshot file, not a flow: EOF and the checksum end the RDB data.
    file: bool,
    /// A file's offset of its EOF opcode, once read.
    eof_at: Option<u64>,
    /// Bytes after a file's checksum.
    trailing: u64,
}

/// The LSNs of a v1.34 partial resume's journal blobs.
#[derive(Debug, Clone, Copy)]
struct Backlog {
    /// The LSN the replica resumed at (the first blob's).
    from: u64,
    /// The LSN the next blob record carries.
    next: u64,
}

impl FlowDecoder {
    /// A decoder for a flow answered `FULL`: the stream starts with the RDB header.
    pub fn new(flow: Option<u32>, expected_token: Option<Vec<u8>>, limits: Limits) -> Self {
        FlowDecoder {
            flow,
            limits,
            expected_token,
            phase: Phase::Magic,
            buf: Vec::new(),
            buf_base: 0,
            need: 0,
            db: 0,
            journal_db: 0,
            open: None,
            chunk: None,
            tagged: HashMap::new(),
            fullsync_end: false,
            journal_offset: None,
            next_lsn: None,
            last_lsn: None,
            counts: OpcodeCounts::default(),
            failed: None,
            blob_buf: Vec::new(),
            backlog: None,
            file: false,
            eof_at: None,
            trailing: 0,
        }
    }

    /// A decoder for a snapshot file: a Dragonfly shard or summary file (`SAVE DF`), an `.rdb`
    /// from Dragonfly's `SAVE RDB`, or Redis's and Valkey's own RDB files. The grammar is the
    /// full sync's without the replication framing: no FULLSYNC_END, JOURNAL_OFFSET or token;
    /// EOF is followed by the 8-byte checksum (CRC-64 of every byte before it, or 0 when the
    /// writer computed none, as Dragonfly does), and the file may go on with padding
    /// ([`Phase::End`]). The checksum is handed on in [`Item::Eof`]; the file reader checks it.
    pub fn file(limits: Limits) -> Self {
        let mut d = FlowDecoder::new(None, None, limits);
        d.file = true;
        d
    }

    /// A file's offset of its EOF opcode: every byte before it and the opcode itself are what
    /// its checksum covers.
    pub fn eof_at(&self) -> Option<u64> {
        self.eof_at
    }

    /// Bytes a file holds after its checksum.
    pub fn trailing(&self) -> u64 {
        self.trailing
    }

    /// A decoder for a flow answered `PARTIAL` (v1.35+): journal records from `next_lsn` on.
    pub fn partial(flow: Option<u32>, next_lsn: u64, limits: Limits) -> Self {
        let mut d = FlowDecoder::new(flow, None, limits);
        d.phase = Phase::Journal;
        d.next_lsn = Some(next_lsn);
        d
    }

    /// A decoder for a flow answered `PARTIAL` by a v1.34 master, which still wants `DFLY
    /// SYNC` (protocol doc 8.3): the stream is framed like a full sync (header, FULLSYNC_END,
    /// then after STARTSTABLE JOURNAL_OFFSET, EOF, the token and the journal), but its body
    /// holds only journal blobs, one per record from `next_lsn` on: the backlog, then the
    /// records written meanwhile. Those records are the ones the replica is missing, so they
    /// carry their LSNs here (consecutive from `next_lsn`), and JOURNAL_OFFSET must be the
    /// LSN after the last of them.
    ///
    /// Why one LSN per blob holds (Dragonfly v1.34.2, `SliceSnapshot::SwitchIncrementalFb`
    /// and `ConsumeJournalChange`): the backlog loop writes the ring buffer entry of every LSN
    /// from `next_lsn` up to the current one, then FULLSYNC_END, then registers a journal
    /// consumer that writes every later record; every journal record is one ring buffer entry
    /// with the next LSN (`JournalSlice::AddLogRecord`), and STARTSTABLE writes `GetLsn()` as
    /// JOURNAL_OFFSET after unregistering the consumer under the global lock.
    pub fn partial_v134(flow: Option<u32>, expected_token: Option<Vec<u8>>, next_lsn: u64, limits: Limits) -> Self {
        let mut d = FlowDecoder::new(flow, expected_token, limits);
        d.backlog = Some(Backlog { from: next_lsn, next: next_lsn });
        d
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }
    pub fn saw_fullsync_end(&self) -> bool {
        self.fullsync_end
    }
    pub fn journal_offset(&self) -> Option<u64> {
        self.journal_offset
    }
    /// The LSN the next stable-sync record will carry (what an ACK after it would send).
    pub fn next_lsn(&self) -> Option<u64> {
        self.next_lsn
    }
    pub fn counts(&self) -> &OpcodeCounts {
        &self.counts
    }
    /// Flow offset up to which bytes have been consumed.
    pub fn consumed(&self) -> u64 {
        self.buf_base
    }
    /// Bytes held back because they do not yet form a complete unit.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
    /// True between two top-level items of the snapshot body: no partial unit is buffered and
    /// no entry or chunk is in progress, so the next byte is an opcode.
    pub fn at_top_level(&self) -> bool {
        self.buf.is_empty() && self.open.is_none() && self.chunk.is_none()
    }

    /// Feed bytes received from the flow; items decoded from them are appended to `out`.
    /// After an error the decoder stays failed and returns the same error.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<Item>) -> Result<(), DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = if self.buf.is_empty() {
            // Fast path: parse straight from the caller's buffer, keep only the tail.
            let base = self.buf_base;
            let r = self.run(data, base, out);
            if let Ok(used) = r {
                self.buf.extend_from_slice(&data[used..]);
                self.buf_base += used as u64;
            }
            r.map(|_| ())
        } else {
            self.buf.extend_from_slice(data);
            if self.buf.len() < self.need {
                return Ok(());
            }
            let buf = std::mem::take(&mut self.buf);
            let base = self.buf_base;
            let r = self.run(&buf, base, out);
            if let Ok(used) = r {
                self.buf = buf;
                self.buf.drain(..used);
                self.buf_base += used as u64;
            }
            r.map(|_| ())
        };
        result.map_err(|mut e| {
            e.flow = self.flow;
            self.failed = Some(e.clone());
            e
        })
    }

    /// Declare the end of the stream. A stream may end cleanly only in stable sync, between
    /// two records (the master closed the flow); anywhere else it was cut short.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if (self.phase == Phase::Journal || self.phase == Phase::End) && self.buf.is_empty() {
            return Ok(());
        }
        let expected = match (&self.open, self.chunk, self.phase) {
            (Some(p), _, _) => format!("the rest of {}", p.describe()),
            (None, Some((id, left)), _) => format!("{left} more bytes of tagged chunk {id}"),
            (None, None, Phase::Magic) => "the RDB header (REDIS0009)".to_string(),
            (None, None, Phase::Body) if self.file => "the next snapshot item or EOF (0xFF)".to_string(),
            (None, None, Phase::AwaitEof) if self.file => "the 8-byte checksum after EOF (0xFF)".to_string(),
            (None, None, Phase::Body) if self.fullsync_end => {
                "a journal blob or JOURNAL_OFFSET (0xD3) after FULLSYNC_END".to_string()
            }
            (None, None, Phase::Body) => "the next snapshot item or FULLSYNC_END (0xC8)".to_string(),
            (None, None, Phase::AwaitEof) => "EOF (0xFF) after JOURNAL_OFFSET".to_string(),
            (None, None, Phase::Token) => format!("the {TOKEN_LEN}-byte eof token"),
            (None, None, Phase::Journal) => "the rest of a journal record".to_string(),
            (None, None, Phase::End) => unreachable!("a file's end is a clean end"),
        };
        let mut e = DecodeError::new(
            Space::Stream,
            self.buf_base + self.buf.len() as u64,
            format!(
                "stream ended; expected {expected}{}",
                if self.buf.is_empty() {
                    String::new()
                } else {
                    format!(" ({} bytes of an incomplete unit start at byte offset {})", self.buf.len(), self.buf_base)
                }
            ),
        );
        e.flow = self.flow;
        Err(e)
    }

    /// Parse units from `data` (flow offset `base`) until it runs out; returns bytes consumed.
    fn run(&mut self, data: &[u8], base: u64, out: &mut Vec<Item>) -> Result<usize, DecodeError> {
        let mut cur = Cursor::new(data, Space::Stream, base);
        self.need = 0;
        while !cur.is_empty() {
            match self.raw_unit(&mut cur, out) {
                Ok(()) => {}
                Err(Stop::More(n)) => {
                    self.need = n;
                    break;
                }
                Err(Stop::Err(e)) => return Err(e),
            }
        }
        Ok(cur.pos())
    }

    /// One unit of the raw stream. On `Stop::More` the cursor is left at the unit's start.
    fn raw_unit(&mut self, cur: &mut Cursor, out: &mut Vec<Item>) -> PResult<()> {
        if self.chunk.is_some() {
            return self.chunk_payload(cur, out);
        }
        if let Some(p) = self.open.as_mut() {
            p.step(cur, out)?;
            self.open = None;
            return Ok(());
        }
        cur.mark();
        let r = match self.phase {
            Phase::Magic => self.magic(cur),
            Phase::Body => self.body_item(cur, out, None),
            Phase::AwaitEof => self.eof(cur, out),
            Phase::Token => self.token(cur, out),
            Phase::Journal => self.journal_unit(cur, out),
            Phase::End => {
                self.trailing += cur.take_up_to(cur.remaining()).len() as u64;
                Ok(())
            }
        };
        if let Err(Stop::More(_)) = r {
            // Entries and chunks keep their own progress; everything else restarts.
            if self.open.is_none() && self.chunk.is_none() {
                cur.rewind();
            }
        }
        r
    }

    fn magic(&mut self, cur: &mut Cursor) -> PResult<()> {
        let m = cur.bytes(9)?;
        let version = std::str::from_utf8(&m[5..]).ok().and_then(|v| v.parse::<u32>().ok());
        if &m[..5] != MAGIC_PREFIX || !matches!(version, Some(5..=12)) || !m[5..].iter().all(u8::is_ascii_digit) {
            return Err(cur.err_at(0, format!("expected the RDB header REDIS0009, found {}", show(m))));
        }
        self.phase = Phase::Body;
        Ok(())
    }

    /// One top-level item of the snapshot body. `blob` is the flow offset of the compressed
    /// blob being expanded, if the cursor reads one.
    fn body_item(&mut self, cur: &mut Cursor, out: &mut Vec<Item>, blob: Option<u64>) -> PResult<()> {
        let at = cur.pos();
        let op = cur.u8()?;
        let r = self.body_op(op, at, cur, out, blob);
        // Count an item once: when it completed, or when it started an entry or chunk that
        // keeps its own progress (a plain `More` will be retried from the opcode).
        if r.is_ok() || self.open.is_some() || self.chunk.is_some() {
            self.counts.0[op as usize] += 1;
        }
        r.map_err(|s| match s {
            Stop::Err(e) => Stop::Err(e.in_context(|| opcode_name(op))),
            more => more,
        })
    }

    fn body_op(&mut self, op: u8, at: usize, cur: &mut Cursor, out: &mut Vec<Item>, blob: Option<u64>) -> PResult<()> {
        match op {
            OP_AUX => {
                let name = cur.rstr_vec()?;
                let value = cur.rstr_vec()?;
                out.push(Item::Aux { name, value });
            }
            OP_SELECTDB => self.db = cur.puint_max(u32::MAX as u64, "SELECTDB index")? as u32,
            OP_EXPIRETIME_MS | OP_DF_MASK | 0..=37 => {
                if self.backlog.is_some() {
                    return Err(cur.err_at(at, "snapshot entry in a v1.34 partial-sync stream (it carries only journal blobs)"));
                }
                if self.fullsync_end {
                    return Err(cur.err_at(at, "snapshot entry after FULLSYNC_END"));
                }
                // The entry parser reads its own prefixes and type byte.
                cur.rewind();
                self.open = Some(EntryParser::new(self.db, self.limits));
                self.open.as_mut().unwrap().step(cur, out)?;
                self.open = None;
            }
            OP_FULLSYNC_END | OP_JOURNAL_OFFSET if self.file => {
                return Err(cur.err_at(at, "a replication opcode in a snapshot file (files end with EOF and a checksum)"))
            }
            OP_FULLSYNC_END => {
                cur.bytes(8)?;
                if let Some(id) = self.tagged.keys().next() {
                    return Err(cur.err_at(
                        at,
                        format!("FULLSYNC_END while tagged entry {id} ({}) is incomplete", self.tagged[id].parser.describe()),
                    ));
                }
                self.fullsync_end = true;
                out.push(Item::FullSyncEnd);
            }
            OP_LZ4 | OP_ZSTD => {
                if blob.is_some() {
                    return Err(cur.err_at(at, "compressed blob inside a compressed blob"));
                }
                let len = match cur.rstr_header()? {
                    RstrHeader::Plain(n) => n,
                    _ => return Err(cur.err_at(at + 1, "compressed blob length is not a plain length")),
                };
                if len > self.limits.max_blob {
                    return Err(cur.err_at(
                        at + 1,
                        format!("compressed blob of {len} bytes exceeds the {}-byte limit", self.limits.max_blob),
                    ));
                }
                let frame = cur.bytes(len)?;
                let blob_at = cur.offset_at(at);
                let mut data = std::mem::take(&mut self.blob_buf);
                compress::decompress_into(op, frame, self.limits.max_blob, &mut data).map_err(|e| cur.err_at(at, e))?;
                self.run_blob(&data, blob_at, out)?;
                self.blob_buf = data;
            }
            OP_BLOB_END => return Err(cur.err_at(at, "0xCB (compressed blob end) is never sent on the wire")),
            OP_JOURNAL_BLOB => {
                let n = cur.puint()?;
                // Offsets of a plain payload are flow offsets; an encoded one gets its own space.
                match cur.rstr_header()? {
                    RstrHeader::Plain(len) => {
                        let base = cur.offset();
                        let payload = cur.bytes(len)?;
                        self.journal_blob(n, payload, cur.space(), base, out)?;
                    }
                    h => {
                        let payload = cur.rstr_body(h)?;
                        self.journal_blob(n, &payload, Space::Payload, 0, out)?;
                    }
                }
            }
            OP_JOURNAL_OFFSET => {
                let lsn = cur.u64_le()?;
                if !self.fullsync_end {
                    return Err(cur.err_at(at, "JOURNAL_OFFSET before FULLSYNC_END"));
                }
                if let Some(b) = self.backlog.take() {
                    if lsn != b.next {
                        return Err(cur.err_at(
                            at,
                            format!(
                                "JOURNAL_OFFSET {lsn} does not follow the v1.34 partial-sync records: {} journal blobs \
                                 from LSN {} end before LSN {}",
                                b.next - b.from,
                                b.from,
                                b.next
                            ),
                        ));
                    }
                }
                self.journal_offset = Some(lsn);
                self.next_lsn = Some(lsn);
                self.phase = Phase::AwaitEof;
                out.push(Item::JournalOffset(lsn));
            }
            OP_TAGGED_CHUNK => {
                let id = cur.u32_le()?;
                let len = cur.u32_le()?;
                if id == 0 || len == 0 {
                    return Err(cur.err_at(at, format!("tagged chunk with stream id {id} and length {len} (both must be > 0)")));
                }
                if self.backlog.is_some() {
                    return Err(cur.err_at(at, "tagged chunk in a v1.34 partial-sync stream (it carries only journal blobs)"));
                }
                if self.fullsync_end {
                    return Err(cur.err_at(at, "tagged chunk after FULLSYNC_END"));
                }
                let first_chunk_at = blob.unwrap_or_else(|| cur.offset_at(at));
                let db = self.db;
                let limits = self.limits;
                self.tagged.entry(id).or_insert_with(|| Tagged {
                    parser: EntryParser::new(db, limits),
                    carry: Vec::new(),
                    carry_base: 0,
                    need: 0,
                    first_chunk_at,
                });
                self.chunk = Some((id, len as u64));
                if blob.is_some() {
                    // Inside a blob the whole payload must be there.
                    if cur.remaining() < len as usize {
                        return Err(cur.err_at(at, "tagged chunk crosses the end of its compressed blob"));
                    }
                    self.chunk_payload(cur, out)?;
                }
            }
            OP_EOF if self.file => {
                if blob.is_some() {
                    return Err(cur.err_at(at, "EOF (0xFF) inside a compressed blob"));
                }
                if let Some(id) = self.tagged.keys().next() {
                    return Err(cur.err_at(
                        at,
                        format!("EOF (0xFF) while tagged entry {id} ({}) is incomplete", self.tagged[id].parser.describe()),
                    ));
                }
                // The checksum is read as a unit of its own, so a file cut inside it says so.
                self.eof_at = Some(cur.offset_at(at));
                self.phase = Phase::AwaitEof;
            }
            OP_EOF => {
                return Err(cur.err_at(at, if self.fullsync_end {
                    "EOF (0xFF) without JOURNAL_OFFSET (0xD3) before it"
                } else {
                    "EOF (0xFF) before FULLSYNC_END"
                }))
            }
            OP_VECTOR_INDEX => {
                let start = cur.pos();
                cur.rstr()?;
                cur.puint()?;
                let n = cur.puint()?;
                for _ in 0..n {
                    cur.bytes(4 + 8)?;
                    let level = cur.u32_le()?;
                    for _ in 0..=level {
                        let k = cur.u32_le()?;
                        cur.bytes(k as usize * 4)?;
                    }
                }
                out.push(Item::Skipped { opcode: op, bytes: (cur.pos() - start) as u64 });
            }
            OP_SHARD_DOC_INDEX => {
                let start = cur.pos();
                cur.puint()?;
                cur.rstr()?;
                let n = cur.puint()?;
                for _ in 0..n {
                    cur.rstr()?;
                    cur.puint()?;
                }
                out.push(Item::Skipped { opcode: op, bytes: (cur.pos() - start) as u64 });
            }
            OP_SLOT_INFO => {
                for _ in 0..3 {
                    cur.puint()?;
                }
            }
            OP_RESIZEDB => {
                cur.puint()?;
                cur.puint()?;
            }
            OP_IDLE => {
                cur.puint()?;
            }
            OP_FREQ => {
                cur.u8()?;
            }
            other => return Err(cur.err_at(at, format!("unknown opcode 0x{other:02X} in the snapshot stream"))),
        }
        Ok(())
    }

    /// Items inside an expanded compressed blob. They are always complete (protocol doc 5.6).
    fn run_blob(&mut self, data: &[u8], at: u64, out: &mut Vec<Item>) -> PResult<()> {
        let mut cur = Cursor::new(data, Space::Blob { at }, 0);
        while !cur.is_empty() {
            cur.mark();
            let r = match self.phase {
                Phase::Body => self.body_item(&mut cur, out, Some(at)),
                _ => Err(cur.err(format!(
                    "compressed blob continues after JOURNAL_OFFSET ({} bytes left)",
                    cur.remaining()
                ))),
            };
            match r {
                Ok(()) => {}
                Err(Stop::More(_)) => {
                    let what = match &self.open {
                        Some(p) => p.describe(),
                        None => "an item".to_string(),
                    };
                    self.open = None;
                    return Err(Stop::Err(DecodeError::new(
                        Space::Blob { at },
                        cur.pos() as u64,
                        format!("{what} crosses the end of the compressed blob ({} bytes)", data.len()),
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Payload bytes of the current tagged chunk: hand what is here to its entry.
    fn chunk_payload(&mut self, cur: &mut Cursor, out: &mut Vec<Item>) -> PResult<()> {
        let (id, left) = self.chunk.expect("called with a chunk in progress");
        if cur.is_empty() {
            return Err(Stop::More(1));
        }
        let bytes = cur.take_up_to(left.min(usize::MAX as u64) as usize);
        let left = left - bytes.len() as u64;
        self.chunk = (left > 0).then_some((id, left));
        let t = self.tagged.get_mut(&id).expect("chunk header registered the entry");
        t.carry.extend_from_slice(bytes);
        if t.carry.len() < t.need {
            return Ok(());
        }
        let space = Space::Tagged { stream_id: id, first_chunk_at: t.first_chunk_at };
        let mut c = Cursor::new(&t.carry, space, t.carry_base);
        match t.parser.step(&mut c, out) {
            Ok(()) => {
                if !c.is_empty() || self.chunk.is_some() {
                    return Err(c.err(format!(
                        "tagged entry {id} ({}) is complete but its chunk holds {} more bytes",
                        t.parser.describe(),
                        c.remaining() as u64 + self.chunk.map_or(0, |(_, l)| l)
                    )));
                }
                self.tagged.remove(&id);
            }
            Err(Stop::More(n)) => {
                let used = c.pos();
                t.need = n;
                t.carry.drain(..used);
                t.carry_base += used as u64;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// The records of a JOURNAL_BLOB (`0xD2 PUINT(n) RSTR(records)`), applied inline.
    fn journal_blob(&mut self, n: u64, payload: &[u8], space: Space, base: u64, out: &mut Vec<Item>) -> PResult<()> {
        let mut c = Cursor::new(payload, space, base);
        let mut records = 0u64;
        while !c.is_empty() {
            c.mark();
            match journal::parse_unit(&mut c) {
                Ok(Unit::Select(db)) => self.journal_db = db,
                Ok(Unit::Record { kind, txid, argv }) => {
                    records += 1;
                    // Inline records have no LSN of their own, except in a v1.34 partial resume.
                    let lsn = self.backlog.as_mut().map(|b| {
                        b.next += 1;
                        b.next - 1
                    });
                    out.push(Item::Journal(JournalRecord { db: self.journal_db, txid, kind, argv, lsn }));
                }
                Ok(Unit::Lsn(_)) => return Err(c.err_at(0, "LSN record inside a journal blob")),
                Err(Stop::More(_)) => return Err(c.err("journal record crosses the end of its journal blob")),
                Err(e) => return Err(e),
            }
        }
        if records != n {
            return Err(c.err_at(0, format!("journal blob declares {n} records and holds {records}")));
        }
        Ok(())
    }

    fn eof(&mut self, cur: &mut Cursor, out: &mut Vec<Item>) -> PResult<()> {
        if self.file {
            // The EOF opcode was counted where it was read (body_item).
            let checksum = cur.u64_le()?;
            self.phase = Phase::End;
            out.push(Item::Eof { checksum });
            return Ok(());
        }
        let at = cur.pos();
        let op = cur.u8()?;
        if op != OP_EOF {
            return Err(cur.err_at(at, format!("expected EOF (0xFF) after JOURNAL_OFFSET, found 0x{op:02X}")));
        }
        let checksum = cur.u64_le()?;
        self.counts.0[OP_EOF as usize] += 1;
        self.phase = Phase::Token;
        out.push(Item::Eof { checksum });
        Ok(())
    }

    fn token(&mut self, cur: &mut Cursor, out: &mut Vec<Item>) -> PResult<()> {
        let at = cur.pos();
        let tok = cur.bytes(TOKEN_LEN)?;
        if let Some(expected) = &self.expected_token {
            if tok != expected.as_slice() {
                return Err(cur.err_at(
                    at,
                    format!(
                        "eof token mismatch: the FLOW reply gave {}, the stream carries {} \
                         (the snapshot was misparsed or the stream is damaged)",
                        show(expected),
                        show(tok)
                    ),
                ));
            }
        } else if !tok.iter().all(u8::is_ascii_hexdigit) {
            return Err(cur.err_at(at, format!("expected a 40-hex-digit eof token, found {}", show(tok))));
        }
        self.phase = Phase::Journal;
        out.push(Item::Token(tok.to_vec()));
        Ok(())
    }

    fn journal_unit(&mut self, cur: &mut Cursor, out: &mut Vec<Item>) -> PResult<()> {
        match journal::parse_unit(cur)? {
            Unit::Select(db) => self.journal_db = db,
            Unit::Record { kind, txid, argv } => {
                let lsn = self.next_lsn.unwrap_or(0);
                self.next_lsn = Some(lsn + 1);
                self.last_lsn = Some(lsn);
                out.push(Item::Journal(JournalRecord { db: self.journal_db, txid, kind, argv, lsn: Some(lsn) }));
            }
            Unit::Lsn(announced) => out.push(Item::LsnMark { announced, expected: self.last_lsn }),
        }
        Ok(())
    }
}

/// A name for a top-level opcode, for summaries and error context.
pub fn opcode_name(op: u8) -> String {
    let name = match op {
        0..=37 => return format!("entry of type {op} ({})", super::items::rdb_type::name(op)),
        OP_FULLSYNC_END => "FULLSYNC_END",
        OP_ZSTD => "ZSTD blob",
        OP_LZ4 => "LZ4 blob",
        OP_BLOB_END => "BLOB_END",
        OP_JOURNAL_BLOB => "JOURNAL_BLOB",
        OP_JOURNAL_OFFSET => "JOURNAL_OFFSET",
        OP_DF_MASK => "DF_MASK",
        OP_VECTOR_INDEX => "VECTOR_INDEX",
        OP_SHARD_DOC_INDEX => "SHARD_DOC_INDEX",
        OP_TAGGED_CHUNK => "TAGGED_CHUNK",
        OP_SLOT_INFO => "SLOT_INFO",
        OP_IDLE => "IDLE",
        OP_FREQ => "FREQ",
        OP_AUX => "AUX",
        OP_RESIZEDB => "RESIZEDB",
        OP_EXPIRETIME_MS => "EXPIRETIME_MS",
        OP_SELECTDB => "SELECTDB",
        OP_EOF => "EOF",
        _ => return format!("opcode 0x{op:02X}"),
    };
    format!("{name} (0x{op:02X})")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SELECT 0` + `COMMAND SET <key> 1` as one journal blob (`D2 01 RSTR`).
    fn blob(key: &[u8]) -> Vec<u8> {
        let mut rec = vec![0x06, 0x00, 0x0A, 0x00, 0x01, 0x03, (3 + key.len() + 1) as u8, 3];
        rec.extend_from_slice(b"SET");
        rec.push(key.len() as u8);
        rec.extend_from_slice(key);
        rec.extend_from_slice(&[1, b'1']);
        let mut b = vec![OP_JOURNAL_BLOB, 1, rec.len() as u8];
        b.extend_from_slice(&rec);
        b
    }

    /// A v1.34 partial stream: header, `blobs` journal blobs, FULLSYNC_END, then
    /// JOURNAL_OFFSET `offset`, EOF and the token.
    fn v134_stream(blobs: usize, offset: u64, token: &[u8]) -> Vec<u8> {
        let mut s = b"REDIS0009".to_vec();
        for k in 0..blobs {
            s.extend(blob(format!("k{k}").as_bytes()));
        }
        s.extend_from_slice(&[OP_FULLSYNC_END, 0, 0, 0, 0, 0, 0, 0, 0]);
        s.push(OP_JOURNAL_OFFSET);
        s.extend_from_slice(&offset.to_le_bytes());
        s.extend_from_slice(&[OP_EOF, 0, 0, 0, 0, 0, 0, 0, 0]);
        s.extend_from_slice(token);
        s
    }

    #[test]
    fn v134_partial_blobs_carry_consecutive_lsns_up_to_the_journal_offset() {
        let token = [b'a'; TOKEN_LEN];
        let mut d = FlowDecoder::partial_v134(Some(0), Some(token.to_vec()), 7, Limits::default());
        let mut out = Vec::new();
        d.feed(&v134_stream(3, 10, &token), &mut out).unwrap();
        let lsns: Vec<Option<u64>> =
            out.iter().filter_map(|i| if let Item::Journal(r) = i { Some(r.lsn) } else { None }).collect();
        assert_eq!(lsns, [Some(7), Some(8), Some(9)]);
        assert_eq!(d.phase(), Phase::Journal);
        assert_eq!(d.next_lsn(), Some(10));
        // Nothing missed since the resume point: no blob, JOURNAL_OFFSET = the resume LSN.
        let mut d = FlowDecoder::partial_v134(Some(0), Some(token.to_vec()), 7, Limits::default());
        d.feed(&v134_stream(0, 7, &token), &mut Vec::new()).unwrap();
        assert_eq!(d.next_lsn(), Some(7));
    }

    #[test]
    fn v134_partial_rejects_a_journal_offset_that_does_not_follow_the_blobs() {
        let token = [b'a'; TOKEN_LEN];
        let mut d = FlowDecoder::partial_v134(Some(0), Some(token.to_vec()), 7, Limits::default());
        let e = d.feed(&v134_stream(3, 11, &token), &mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains("JOURNAL_OFFSET 11 does not follow") && e.contains("3 journal blobs from LSN 7"), "{e}");
    }

    /// A plain list (RDB type 1, written by Redis before quicklists) is read as a list in a
    /// snapshot file, as it is in a DUMP payload.
    #[test]
    fn a_plain_list_in_a_file_is_a_list() {
        use crate::protocol::rdb_type;
        let mut s = b"REDIS0009".to_vec();
        s.extend_from_slice(&[rdb_type::LIST, 1, b'l', 2, 1, b'a', 0xC0, 7]); // "a", int8 7
        s.extend_from_slice(&[OP_EOF, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut d = FlowDecoder::file(Limits::default());
        let mut out = Vec::new();
        d.feed(&s, &mut out).unwrap();
        d.finish().unwrap();
        let v = out.iter().find_map(|i| if let Item::Value(v) = i { Some(v) } else { None }).unwrap();
        assert_eq!(v.head.rdb_type, rdb_type::LIST_QUICKLIST_2);
        assert_eq!(v.piece, crate::protocol::Piece::ListElems(vec![b"a".to_vec(), b"7".to_vec()]));
    }

    #[test]
    fn v134_partial_rejects_snapshot_entries() {
        let mut s = b"REDIS0009".to_vec();
        s.extend_from_slice(&[0x00, 1, b'k', 1, b'v']); // a string entry
        let mut d = FlowDecoder::partial_v134(Some(0), None, 7, Limits::default());
        let e = d.feed(&s, &mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains("snapshot entry in a v1.34 partial-sync stream"), "{e}");
    }
}
