//! Pure encoders for what a Dragonfly master writes: packed uints, RDB strings, listpacks,
//! intsets, snapshot entries (protocol doc 5.5), journal records (7.1) and compressed blobs
//! (5.6). No I/O, no clocks: the snapshot writer decides *when*, these decide the bytes.
//!
//! The counterpart is `crate::protocol`; every layout here is checked against it in the tests
//! below and in `tests/emulator_*.rs`.

use std::collections::VecDeque;
use std::io::Write;

use super::data::{parse_i64, Entry, Stream, Value};
use super::listpack::{intset, Listpack};
use super::Compression;
use crate::protocol::items::{rdb_type as t, StreamId, MEMBER_EXPIRY_BASE};

pub const OP_SELECTDB: u8 = 0xFE;
pub const OP_EXPIRETIME_MS: u8 = 0xFC;
pub const OP_DF_MASK: u8 = 0xDC;
pub const OP_AUX: u8 = 0xFA;
pub const OP_JOURNAL_BLOB: u8 = 0xD2;
pub const OP_JOURNAL_OFFSET: u8 = 0xD3;
pub const OP_TAGGED_CHUNK: u8 = 0xE0;
pub const OP_ZSTD: u8 = 0xC9;
pub const OP_LZ4: u8 = 0xCA;
pub const FULLSYNC_END: [u8; 9] = [0xC8, 0, 0, 0, 0, 0, 0, 0, 0];
/// EOF with the zero checksum Dragonfly always sends.
pub const EOF: [u8; 9] = [0xFF, 0, 0, 0, 0, 0, 0, 0, 0];

pub const J_SELECT: u64 = 6;
pub const J_EXPIRED: u64 = 9;
pub const J_COMMAND: u64 = 10;
pub const J_LSN: u64 = 15;

/// Quicklist nodes are listpacks of at most this many bytes (`list-max-listpack-size -2`);
/// a larger element gets a PLAIN node of its own.
pub const LIST_NODE_BYTES: usize = 8 * 1024;
/// Sets of at most this many integers are intsets.
pub const MAX_INTSET: usize = 512;
/// Hashes and zsets up to this many elements, each element up to `MAX_LISTPACK_VALUE` bytes,
/// are listpacks.
pub const MAX_LISTPACK_ENTRIES: usize = 128;
pub const MAX_LISTPACK_VALUE: usize = 64;
/// Stream listpack nodes: `stream-node-max-entries` / `stream-node-max-bytes`.
const STREAM_NODE_ENTRIES: usize = 100;
const STREAM_NODE_BYTES: usize = 4096;

/// Packed unsigned integer, shortest form (protocol doc 2.2).
pub fn puint(out: &mut Vec<u8>, v: u64) {
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&[0x40 | (v >> 8) as u8, v as u8]);
    } else if v <= u32::MAX as u64 {
        out.push(0x80);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// An RDB string written plain (length + bytes).
pub fn rstr_plain(out: &mut Vec<u8>, s: &[u8]) {
    puint(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// An RDB string the way `RdbSerializer::SaveString` writes it: INT8/16/32 for a canonical
/// integer of at most 11 bytes, else LZF when `lzf` (compression_mode=1) and it pays off,
/// else plain (protocol doc 2.3).
pub fn rstr(out: &mut Vec<u8>, s: &[u8], lzf: bool) {
    if s.len() <= 11 {
        if let Some(v) = parse_i64(s).filter(|v| i32::try_from(*v).is_ok()) {
            return rstr_int32(out, v as i32);
        }
    }
    if lzf && s.len() > 20 {
        if let Some(c) = crate::protocol::lzf::compress(s) {
            if c.len() + 8 < s.len() && (c.len() as f64) < 0.85 * s.len() as f64 {
                out.push(0xC3);
                puint(out, c.len() as u64);
                puint(out, s.len() as u64);
                out.extend_from_slice(&c);
                return;
            }
        }
    }
    rstr_plain(out, s);
}

fn rstr_int32(out: &mut Vec<u8>, v: i32) {
    if let Ok(b) = i8::try_from(v) {
        out.extend_from_slice(&[0xC0, b as u8]);
    } else if let Ok(h) = i16::try_from(v) {
        out.push(0xC1);
        out.extend_from_slice(&h.to_le_bytes());
    } else {
        out.push(0xC2);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// An integer written as a string (`SaveLongLongAsString`).
pub fn rstr_i64(out: &mut Vec<u8>, v: i64) {
    match i32::try_from(v) {
        Ok(v) => rstr_int32(out, v),
        Err(_) => rstr_plain(out, v.to_string().as_bytes()),
    }
}

// ---- snapshot entries (protocol doc 5.5) --------------------------------------------------

/// One serialized entry and its element boundaries, where a big entry may be cut into
/// chunks (protocol doc 5.7 rule 3). `bounds` is increasing and ends at `bytes.len()`.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub bounds: Vec<usize>,
}

impl Encoded {
    fn bound(&mut self) {
        self.bounds.push(self.bytes.len());
    }
}

/// `[0xFC ms][0xDC mask] type RSTR(key) value`. `lzf` is compression_mode=1.
pub fn entry(key: &[u8], e: &Entry, lzf: bool) -> Encoded {
    let mut x = Encoded { bytes: Vec::with_capacity(32 + key.len()), bounds: Vec::new() };
    if let Some(ms) = e.expire_at_ms {
        x.bytes.push(OP_EXPIRETIME_MS);
        x.bytes.extend_from_slice(&ms.to_le_bytes());
    }
    if e.sticky {
        x.bytes.push(OP_DF_MASK);
        x.bytes.extend_from_slice(&1u32.to_le_bytes());
    }
    let ty = value_type(&e.value);
    x.bytes.push(ty);
    rstr(&mut x.bytes, key, lzf);
    value(&mut x, ty, &e.value, lzf);
    if x.bounds.last() != Some(&x.bytes.len()) {
        x.bound();
    }
    x
}

/// The RDB type Dragonfly would pick for this value (depends on size and content).
pub fn value_type(v: &Value) -> u8 {
    match v {
        Value::String(_) => t::STRING,
        Value::List(_) => t::LIST_QUICKLIST_2,
        Value::Set(s) if s.len() <= MAX_INTSET && s.iter().all(|m| parse_i64(m).is_some()) => t::SET_INTSET,
        Value::Set(_) => t::SET,
        Value::Hash(h) if small(h.len(), h.iter().map(|(f, v)| f.len().max(v.len()))) => t::HASH_LISTPACK,
        Value::Hash(_) => t::HASH,
        Value::Zset(z) if small(z.len(), z.keys().map(Vec::len)) => t::ZSET_LISTPACK,
        Value::Zset(_) => t::ZSET_2,
        Value::Stream(_) => t::STREAM_LISTPACKS_3,
        Value::Json(_) => t::JSON,
        Value::HashTtl(_) => t::HASH_WITH_EXPIRY,
        Value::SetTtl(_) => t::SET_WITH_EXPIRY,
        Value::Opaque { rdb_type, .. } => *rdb_type,
    }
}

fn small(n: usize, mut lens: impl Iterator<Item = usize>) -> bool {
    n <= MAX_LISTPACK_ENTRIES && lens.all(|l| l <= MAX_LISTPACK_VALUE)
}

fn value(x: &mut Encoded, ty: u8, v: &Value, lzf: bool) {
    let out = &mut x.bytes;
    match v {
        Value::String(s) | Value::Json(s) => rstr(out, s, lzf),
        Value::List(l) => list(x, l, lzf),
        Value::Set(s) if ty == t::SET_INTSET => {
            let mut ints: Vec<i64> = s.iter().filter_map(|m| parse_i64(m)).collect();
            rstr(out, &intset(&mut ints), lzf);
        }
        Value::Set(s) => {
            puint(out, s.len() as u64);
            for m in s {
                rstr(&mut x.bytes, m, lzf);
                x.bound();
            }
        }
        Value::Hash(h) if ty == t::HASH_LISTPACK => {
            let mut lp = Listpack::default();
            for (f, v) in h {
                lp.push(f);
                lp.push(v);
            }
            rstr(out, &lp.finish(), lzf);
        }
        Value::Hash(h) => {
            puint(out, h.len() as u64);
            for (f, v) in h {
                rstr(&mut x.bytes, f, lzf);
                rstr(&mut x.bytes, v, lzf);
                x.bound();
            }
        }
        Value::Zset(z) => {
            let mut by_score: Vec<(&Vec<u8>, f64)> = z.iter().map(|(m, s)| (m, *s)).collect();
            by_score.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(b.0)));
            if ty == t::ZSET_LISTPACK {
                let mut lp = Listpack::default();
                for (m, s) in by_score {
                    lp.push(m);
                    push_score(&mut lp, s);
                }
                rstr(out, &lp.finish(), lzf);
            } else {
                puint(out, by_score.len() as u64);
                for (m, s) in by_score {
                    rstr(&mut x.bytes, m, lzf);
                    x.bytes.extend_from_slice(&s.to_le_bytes());
                    x.bound();
                }
            }
        }
        Value::Stream(s) => stream(x, s, lzf),
        Value::HashTtl(h) => {
            puint(out, h.len() as u64);
            for (f, (v, ttl)) in h {
                rstr(&mut x.bytes, f, lzf);
                rstr(&mut x.bytes, v, lzf);
                rstr_i64(&mut x.bytes, member_ttl(*ttl));
                x.bound();
            }
        }
        Value::SetTtl(s) => {
            puint(out, s.len() as u64);
            for (m, ttl) in s {
                rstr(&mut x.bytes, m, lzf);
                rstr_i64(&mut x.bytes, member_ttl(*ttl));
                x.bound();
            }
        }
        Value::Opaque { bytes, .. } => out.extend_from_slice(bytes),
    }
}

/// Member/field TTL as written in types 31/32: seconds since 2023-02-01, -1 for none.
fn member_ttl(abs_secs: Option<u64>) -> i64 {
    abs_secs.map_or(-1, |s| s as i64 - MEMBER_EXPIRY_BASE)
}

/// A zset score in a listpack the way `zzlInsertAt` stores it: integral values as integers,
/// infinities as `inf`/`-inf`, the rest as the shortest text that reads back exactly.
fn push_score(lp: &mut Listpack, s: f64) {
    if s.is_infinite() {
        lp.push(if s > 0.0 { b"inf" } else { b"-inf" });
    } else if s.fract() == 0.0 && s.abs() < 1e15 {
        lp.push_int(s as i64);
    } else {
        lp.push(format!("{s}").as_bytes());
    }
}

/// Type 18: quicklist of PACKED listpack nodes of at most 8 KiB; an element larger than a
/// node goes into a PLAIN node.
fn list(x: &mut Encoded, l: &VecDeque<Vec<u8>>, lzf: bool) {
    enum Node<'a> {
        Packed(Listpack),
        Plain(&'a [u8]),
    }
    let mut nodes: Vec<Node> = Vec::new();
    for e in l {
        if e.len() > LIST_NODE_BYTES {
            nodes.push(Node::Plain(e));
            continue;
        }
        let fits = matches!(nodes.last(), Some(Node::Packed(lp)) if lp.byte_len() + e.len() + 11 <= LIST_NODE_BYTES);
        if !fits {
            nodes.push(Node::Packed(Listpack::default()));
        }
        if let Some(Node::Packed(lp)) = nodes.last_mut() {
            lp.push(e);
        }
    }
    puint(&mut x.bytes, nodes.len() as u64);
    for n in nodes {
        match n {
            Node::Plain(e) => {
                puint(&mut x.bytes, 1);
                rstr(&mut x.bytes, e, lzf);
            }
            Node::Packed(lp) => {
                puint(&mut x.bytes, 2);
                rstr(&mut x.bytes, &lp.finish(), lzf);
            }
        }
        x.bound();
    }
}

/// Type 21 (STREAM_LISTPACKS_3): listpack nodes, metadata, consumer groups. The metadata
/// stays with the last node (no boundary between them).
fn stream(x: &mut Encoded, s: &Stream, lzf: bool) {
    let nodes = stream_nodes(s);
    puint(&mut x.bytes, nodes.len() as u64);
    for (i, (master, lp)) in nodes.iter().enumerate() {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&master.ms.to_be_bytes());
        id[8..].copy_from_slice(&master.seq.to_be_bytes());
        rstr(&mut x.bytes, &id, lzf);
        rstr(&mut x.bytes, lp, lzf);
        if i + 1 < nodes.len() {
            x.bound();
        }
    }
    let out = &mut x.bytes;
    puint(out, s.len());
    for id in [s.last_id, s.first_id(), s.max_deleted_id] {
        puint(out, id.ms);
        puint(out, id.seq);
    }
    puint(out, s.entries_added);
    puint(out, s.groups.len() as u64);
    for g in &s.groups {
        rstr(out, &g.name, lzf);
        puint(out, g.last_id.ms);
        puint(out, g.last_id.seq);
        puint(out, g.entries_read as u64);
        puint(out, g.pel.len() as u64);
        for (id, p) in &g.pel {
            raw_id(out, *id);
            out.extend_from_slice(&p.delivery_time_ms.to_le_bytes());
            puint(out, p.delivery_count);
        }
        puint(out, g.consumers.len() as u64);
        for c in &g.consumers {
            rstr(out, &c.name, lzf);
            out.extend_from_slice(&c.seen_time_ms.to_le_bytes());
            out.extend_from_slice(&c.active_time_ms.to_le_bytes());
            let owned: Vec<StreamId> = g.pel.iter().filter(|(_, p)| p.consumer == c.name).map(|(id, _)| *id).collect();
            puint(out, owned.len() as u64);
            for id in owned {
                raw_id(out, id);
            }
        }
    }
}

fn raw_id(out: &mut Vec<u8>, id: StreamId) {
    out.extend_from_slice(&id.ms.to_be_bytes());
    out.extend_from_slice(&id.seq.to_be_bytes());
}

/// Group a stream's entries (deleted ones included) into listpack nodes, Redis t_stream.c
/// layout: master entry `[count][deleted][n][fields…][0]`, then per entry
/// `[flags][ms-delta][seq-delta]` + values (SAMEFIELDS) or `[n][field,value…]`, + `[lp-count]`.
/// A node whose entries are all deleted is dropped, as Redis frees it.
fn stream_nodes(s: &Stream) -> Vec<(StreamId, Vec<u8>)> {
    const DELETED: i64 = 1;
    const SAMEFIELDS: i64 = 2;
    let all: Vec<_> = s.entries.iter().collect();
    let mut nodes = Vec::new();
    let mut i = 0;
    while i < all.len() {
        let (master, first) = all[i];
        let master_fields: Vec<&[u8]> = first.fields.iter().map(|(f, _)| f.as_slice()).collect();
        let mut body = Listpack::default();
        let (mut live, mut dead, mut n) = (0i64, 0i64, 0usize);
        while i < all.len() && n < STREAM_NODE_ENTRIES && (n == 0 || body.byte_len() < STREAM_NODE_BYTES) {
            let (id, rec) = all[i];
            let same = rec.fields.len() == master_fields.len()
                && rec.fields.iter().zip(&master_fields).all(|((f, _), m)| f == m);
            let flags = if rec.deleted { DELETED } else { 0 } | if same { SAMEFIELDS } else { 0 };
            body.push_int(flags);
            body.push_int(id.ms.wrapping_sub(master.ms) as i64);
            body.push_int(id.seq.wrapping_sub(master.seq) as i64);
            let nf = rec.fields.len() as i64;
            if same {
                for (_, v) in &rec.fields {
                    body.push(v);
                }
                body.push_int(nf + 3);
            } else {
                body.push_int(nf);
                for (f, v) in &rec.fields {
                    body.push(f);
                    body.push(v);
                }
                body.push_int(nf + 3 + nf + 1);
            }
            if rec.deleted {
                dead += 1;
            } else {
                live += 1;
            }
            n += 1;
            i += 1;
        }
        if live == 0 {
            continue;
        }
        // The master entry goes first, and its counts are known only now.
        let mut lp = Listpack::default();
        lp.push_int(live);
        lp.push_int(dead);
        lp.push_int(master_fields.len() as i64);
        for f in &master_fields {
            lp.push(f);
        }
        lp.push_int(0);
        lp.append(body);
        nodes.push((*master, lp.finish()));
    }
    nodes
}

// ---- journal records (protocol doc 7.1) ------------------------------------------------------

/// `SELECT db` + `COMMAND` (or `EXPIRED`) as one unit: every record carries its own SELECT.
pub fn journal_record<T: AsRef<[u8]>>(db: u32, opcode: u64, txid: u64, shard_cnt: u64, args: &[T]) -> Vec<u8> {
    let total: usize = args.iter().map(|a| a.as_ref().len()).sum();
    let mut out = Vec::with_capacity(total + 8 + 3 * args.len());
    puint(&mut out, J_SELECT);
    puint(&mut out, db as u64);
    puint(&mut out, opcode);
    puint(&mut out, txid);
    puint(&mut out, shard_cnt);
    puint(&mut out, args.len() as u64);
    puint(&mut out, total as u64);
    for a in args {
        rstr_plain(&mut out, a.as_ref());
    }
    out
}

/// The LSN marker the streamer writes after a record.
pub fn lsn_marker(out: &mut Vec<u8>, lsn: u64) {
    puint(out, J_LSN);
    puint(out, lsn);
}

/// `0xD2 PUINT(1) RSTR(record)`: an inline journal record (never LZF-encoded).
pub fn journal_blob(out: &mut Vec<u8>, record: &[u8]) {
    out.push(OP_JOURNAL_BLOB);
    puint(out, 1);
    rstr_plain(out, record);
}

pub fn aux(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(OP_AUX);
    rstr(out, name.as_bytes(), false);
    rstr(out, value, false);
}

// ---- compressed blobs (protocol doc 5.6) -------------------------------------------------------

/// Smallest and largest flushed buffer that is offered to the compressor.
pub const MIN_BLOB: usize = 256;
pub const MAX_BLOB: usize = 1 << 20;

/// The blob item (`0xCA|0xC9 RSTR(frame)`) for a flushed buffer of complete items, or `None`
/// when the mode compresses no blobs, the size is outside 256 B‥1 MiB, or the frame would be
/// more than 95 % of the input.
pub fn compressed_blob(mode: Compression, data: &[u8]) -> Option<Vec<u8>> {
    if !(MIN_BLOB..=MAX_BLOB).contains(&data.len()) {
        return None;
    }
    let (op, frame) = match mode {
        Compression::Lz4 => (OP_LZ4, lz4_frame(data)),
        Compression::Zstd => (OP_ZSTD, zstd_frame(data)),
        Compression::None | Compression::Lzf => return None,
    };
    if frame.len() * 100 > data.len() * 95 {
        return None;
    }
    let mut out = Vec::with_capacity(frame.len() + 6);
    out.push(op);
    rstr_plain(&mut out, &frame);
    Some(out)
}

/// An LZ4 frame with the content size, 64 KiB blocks, independent when it is one block and
/// linked otherwise (FLG 0x68 / 0x48, as Dragonfly's frames).
pub fn lz4_frame(data: &[u8]) -> Vec<u8> {
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
    let mode = if data.len() <= 64 * 1024 { BlockMode::Independent } else { BlockMode::Linked };
    let info = FrameInfo::new().content_size(Some(data.len() as u64)).block_size(BlockSize::Max64KB).block_mode(mode);
    let mut enc = FrameEncoder::with_frame_info(info, Vec::with_capacity(data.len() / 2 + 64));
    enc.write_all(data).expect("writing to a Vec cannot fail");
    enc.finish().expect("the content size matches the data written")
}

/// A zstd frame with the frame content size set. ruzstd's encoder leaves it out, and both
/// Dragonfly's loader and our decoder require it, so it is added to the frame header here:
/// `magic, descriptor, window descriptor` gain FCS flag 3 and an 8-byte size after the window
/// descriptor (RFC 8878 3.1.1.1).
pub fn zstd_frame(data: &[u8]) -> Vec<u8> {
    let raw = ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest);
    let desc = raw[4];
    assert!(
        desc & 0xC0 == 0 && desc & 0x20 == 0 && desc & 0x03 == 0,
        "ruzstd frame header changed (descriptor 0x{desc:02X}); update zstd_frame"
    );
    let mut out = Vec::with_capacity(raw.len() + 8);
    out.extend_from_slice(&raw[..4]);
    out.push(desc | 0xC0);
    out.push(raw[5]);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&raw[6..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::cursor::Cursor;
    use crate::protocol::listpack::{intset as read_intset, listpack, LpElem};
    use crate::protocol::Space;

    #[test]
    fn puint_forms() {
        for (v, want) in [
            (0u64, vec![0x00]),
            (63, vec![0x3F]),
            (64, vec![0x40, 0x40]),
            (16383, vec![0x7F, 0xFF]),
            (16384, vec![0x80, 0, 0, 0x40, 0]),
            (1 << 32, vec![0x81, 0, 0, 0, 1, 0, 0, 0, 0]),
        ] {
            let mut out = Vec::new();
            puint(&mut out, v);
            assert_eq!(out, want, "{v}");
        }
    }

    #[test]
    fn strings_round_trip_through_the_decoder() {
        let long = vec![b'x'; 200];
        for (s, lzf) in [
            (b"0".as_slice(), false),
            (b"-128", false),
            (b"300", false),
            (b"-2147483648", false),
            (b"2147483648", false),
            (b"007", false),
            (b"", false),
            (&long, true),
            (&long, false),
        ] {
            let mut out = Vec::new();
            rstr(&mut out, s, lzf);
            let mut c = Cursor::new(&out, Space::Stream, 0);
            assert_eq!(c.rstr().unwrap().as_ref(), s);
            assert!(c.is_empty());
        }
        let mut out = Vec::new();
        rstr(&mut out, b"-1", false);
        assert_eq!(out, [0xC0, 0xFF]);
    }

    #[test]
    fn listpack_round_trips() {
        let big = vec![b'y'; 5000];
        let items: Vec<&[u8]> = vec![
            b"a",
            b"0",
            b"127",
            b"128",
            b"-4096",
            b"4095",
            b"-32768",
            b"8388607",
            b"-8388609",
            b"2147483648",
            b"-9223372036854775808",
            &big,
            b"0x",
            &[b'z'; 100],
        ];
        let mut lp = Listpack::default();
        for i in &items {
            lp.push(i);
        }
        let blob = lp.finish();
        let got: Vec<Vec<u8>> = listpack(&blob).unwrap().iter().map(LpElem::to_vec).collect();
        assert_eq!(got, items.iter().map(|i| i.to_vec()).collect::<Vec<_>>());
        let mut ints = vec![5, -3, 70000];
        assert_eq!(read_intset(&intset(&mut ints)).unwrap(), vec![-3, 5, 70000]);
    }

    #[test]
    fn frames_carry_their_content_size() {
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 97).to_le_bytes()).collect();
        for (op, frame) in [(OP_LZ4, lz4_frame(&data)), (OP_ZSTD, zstd_frame(&data))] {
            assert_eq!(crate::protocol::compress::decompress(op, &frame, 1 << 24).unwrap(), data);
        }
        assert_eq!(lz4_frame(&data[..1000])[4], 0x68);
        assert_eq!(lz4_frame(&data)[4], 0x48);
    }
}
