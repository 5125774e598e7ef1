//! One flow's full-sync stream writer (protocol doc 5.2-5.9), without sockets.
//!
//! [`Serializer`] mirrors Dragonfly's serializer buffer: items are appended to `buf`, which is
//! flushed (compressed when the rules of 5.6 allow) into `ready` once it reaches the chunk
//! size; SELECTDB is re-emitted after every flush because the writer forgets the current db.
//! Entries whose serialization crosses the chunk size are cut at element boundaries: in
//! tagged mode into TAGGED_CHUNKs that may have other items between them (5.7), in legacy
//! mode contiguously and uncompressed. After FULLSYNC_END, journal blobs are held until
//! 8 KiB are pending or STARTSTABLE appends JOURNAL_OFFSET ([`Serializer::finish`]).
//!
//! [`Traversal`] is the point-in-time cut: the keys present when `DFLY SYNC` ran, in order,
//! and which of them are still to be serialized. A write to a pending key serializes it first
//! (serialize-before-mutate), so per key the entry always precedes the journal records that
//! change it.

use std::collections::{BTreeMap, HashSet, VecDeque};

use super::data::{Entry, Keyspace};
use super::encode::{self, Encoded};
use super::Compression;

/// Post-cut journal blobs are flushed once this much is pending (`kMinBlobSize`).
pub const POST_CUT_FLUSH: usize = 8 * 1024;
/// Flush threshold when splitting is disabled (`chunk_size` 0).
const DEFAULT_FLUSH: usize = 64 * 1024;
const CHUNK_HEADER: usize = 9;

#[derive(Debug, Clone, Copy)]
pub struct SerOpts {
    pub compression: Compression,
    pub tagged: bool,
    /// 0 disables splitting.
    pub chunk_size: usize,
    pub two_open: bool,
}

/// A split entry whose chunks are not all written yet (tagged mode).
struct Open {
    id: u32,
    db: u32,
    key: Vec<u8>,
    enc: Encoded,
    /// Bytes of `enc` already written in chunks.
    pos: usize,
}

pub struct Serializer {
    opts: SerOpts,
    /// Complete items not flushed yet.
    buf: Vec<u8>,
    cur_db: Option<u32>,
    /// Entry ordinal in this flow = tagged stream id (starts at 1).
    next_id: u32,
    open: VecDeque<Open>,
    /// Bytes ready for the socket, in order.
    ready: Vec<u8>,
}

impl Serializer {
    pub fn new(opts: SerOpts) -> Self {
        Serializer { opts, buf: Vec::new(), cur_db: None, next_id: 0, open: VecDeque::new(), ready: Vec::new() }
    }

    /// `REDIS0009` and the AUX fields, written straight to the socket (never compressed).
    pub fn header(&mut self, aux: &[(&str, Vec<u8>)]) {
        self.ready.extend_from_slice(b"REDIS0009");
        for (name, value) in aux {
            encode::aux(&mut self.ready, name, value);
        }
    }

    /// Take the bytes ready for the socket.
    pub fn take_ready(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.ready)
    }
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }
    pub fn open_entries(&self) -> usize {
        self.open.len()
    }
    /// Whether the buffer holds items that were not flushed.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    fn flush_at(&self) -> usize {
        if self.opts.chunk_size == 0 {
            DEFAULT_FLUSH
        } else {
            self.opts.chunk_size.min(encode::MAX_BLOB)
        }
    }

    fn select(&mut self, db: u32) {
        if self.cur_db != Some(db) {
            self.buf.push(encode::OP_SELECTDB);
            encode::puint(&mut self.buf, db as u64);
            self.cur_db = Some(db);
        }
    }

    /// Serialize one entry. With `complete` a split entry is written to its end at once
    /// (a write is about to change it); otherwise it stays open and [`Serializer::advance`]
    /// writes its further chunks.
    pub fn entry(&mut self, db: u32, key: &[u8], e: &Entry, complete: bool) {
        let enc = encode::entry(key, e, self.opts.compression == Compression::Lzf);
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        let id = self.next_id;
        self.select(db);
        let end = enc.bytes.len();
        let header = if self.opts.tagged { CHUNK_HEADER } else { 0 };
        let cut = (self.opts.chunk_size > 0)
            .then(|| {
                enc.bounds.iter().copied().find(|&b| b < end && self.buf.len() + header + b >= self.opts.chunk_size)
            })
            .flatten();
        match cut {
            None => {
                self.buf.extend_from_slice(&enc.bytes);
                self.maybe_flush(self.flush_at());
            }
            Some(_) if !self.opts.tagged => {
                // Legacy: the entry stays contiguous; the pieces flushed mid-entry hold a
                // partial item and so go out uncompressed.
                self.buf.extend_from_slice(&enc.bytes);
                self.flush_raw();
            }
            Some(c) => {
                self.chunk(id, &enc.bytes[..c]);
                self.flush();
                let mut o = Open { id, db, key: key.to_vec(), enc, pos: c };
                if complete {
                    while !self.next_chunk(&mut o) {}
                } else {
                    self.open.push_back(o);
                }
            }
        }
    }

    /// Write the next chunk of an open entry: the oldest one, or alternately the two open
    /// ones when `two_open` is set.
    pub fn advance(&mut self) {
        let Some(mut o) = self.open.pop_front() else { return };
        if !self.next_chunk(&mut o) {
            if self.opts.two_open {
                self.open.push_back(o);
            } else {
                self.open.push_front(o);
            }
        }
    }

    /// Finish the open entry of this key, if any, before the key is changed.
    pub fn complete_key(&mut self, db: u32, key: &[u8]) {
        if let Some(i) = self.open.iter().position(|o| o.db == db && o.key == key) {
            let mut o = self.open.remove(i).expect("position is valid");
            while !self.next_chunk(&mut o) {}
        }
    }

    /// One chunk of `o`, ending at the first element boundary past the chunk size. Returns
    /// whether the entry is complete.
    fn next_chunk(&mut self, o: &mut Open) -> bool {
        let end = o.enc.bytes.len();
        let (used, th, pos) = (self.buf.len() + CHUNK_HEADER, self.opts.chunk_size, o.pos);
        let to = o.enc.bounds.iter().copied().find(|&b| b > pos && (b == end || used + (b - pos) >= th)).unwrap_or(end);
        let (id, from) = (o.id, o.pos);
        self.chunk(id, &o.enc.bytes[from..to]);
        o.pos = to;
        if to == end {
            self.maybe_flush(self.flush_at());
            true
        } else {
            self.flush();
            false
        }
    }

    fn chunk(&mut self, id: u32, payload: &[u8]) {
        self.buf.push(encode::OP_TAGGED_CHUNK);
        self.buf.extend_from_slice(&id.to_le_bytes());
        self.buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(payload);
    }

    /// An inline journal record (`D2 01 RSTR`). Before the cut it rides with the next
    /// snapshot flush; after it, it is held until 8 KiB are pending.
    pub fn journal_blob(&mut self, record: &[u8], post_cut: bool) {
        encode::journal_blob(&mut self.buf, record);
        self.maybe_flush(if post_cut { POST_CUT_FLUSH } else { self.flush_at() });
    }

    fn maybe_flush(&mut self, at: usize) {
        if self.buf.len() >= at {
            self.flush();
        }
    }

    /// Move the buffer to `ready`, as one compressed blob when the mode and size allow it.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match encode::compressed_blob(self.opts.compression, &self.buf) {
            Some(blob) => self.ready.extend_from_slice(&blob),
            None => self.ready.extend_from_slice(&self.buf),
        }
        self.buf.clear();
        self.cur_db = None;
    }

    fn flush_raw(&mut self) {
        self.ready.append(&mut self.buf);
        self.cur_db = None;
    }

    /// The snapshot is complete: flush, then FULLSYNC_END as its own raw write.
    pub fn fullsync_end(&mut self) {
        debug_assert!(self.open.is_empty(), "FULLSYNC_END with open tagged entries");
        self.flush();
        self.ready.extend_from_slice(&encode::FULLSYNC_END);
    }

    /// The end of a v1.34 incremental snapshot (a PARTIAL flow's backlog, protocol doc 8.3):
    /// FULLSYNC_END joins the pending journal blobs and is flushed with them, inside one
    /// compressed blob when the rules allow (Dragonfly v1.34.2 `SwitchIncrementalFb`:
    /// `SendFullSyncCut` then `PushSerialized(true)`, no flush in between).
    pub fn incremental_cut(&mut self) {
        self.buf.extend_from_slice(&encode::FULLSYNC_END);
        self.flush();
    }

    /// STARTSTABLE: held journal blobs + JOURNAL_OFFSET (one compressed blob when possible),
    /// then the raw EOF with a zero checksum and the 40-byte token.
    pub fn finish(&mut self, journal_offset: u64, token: &[u8]) {
        self.buf.push(encode::OP_JOURNAL_OFFSET);
        self.buf.extend_from_slice(&journal_offset.to_le_bytes());
        self.flush();
        self.ready.extend_from_slice(&encode::EOF);
        self.ready.extend_from_slice(token);
    }
}

/// A shard's whole full-sync body, everything a flow carries between the AUX header and
/// FULLSYNC_END (SELECTDBs, entries, tagged chunks, compressed blobs), serialized at once the
/// way [`Core::snapshot_step`](super::engine::Core) would with no write in between: same key
/// order, same chunking and flushes. Keys expired at `now_ms` are left out. Used by
/// pre-encoding ([`super::Config::pre_encode`]).
pub fn encode_body(opts: SerOpts, dbs: &BTreeMap<u32, Keyspace>, now_ms: u64) -> Vec<u8> {
    let mut ser = Serializer::new(opts);
    let max_open = if opts.two_open { 2 } else { 1 };
    let mut keys = dbs.iter().flat_map(|(db, ks)| ks.iter().map(move |(k, e)| (*db, k, e))).peekable();
    loop {
        let open = ser.open_entries();
        if open >= max_open || (open > 0 && keys.peek().is_none()) {
            ser.advance();
        } else if let Some((db, key, e)) = keys.next() {
            if !e.is_expired(now_ms) {
                ser.entry(db, key, e, false);
            }
        } else {
            break;
        }
    }
    ser.flush();
    let mut body = ser.take_ready();
    body.shrink_to_fit();
    body
}

/// The keys of one shard at the cut, in serialization order (by db, then table order).
pub struct Traversal {
    order: Vec<(u32, Vec<u8>)>,
    pos: usize,
    pending: HashSet<(u32, Vec<u8>)>,
    /// Entries written by the traversal itself (for `pause_snapshot_after`).
    pub entries: usize,
}

impl Traversal {
    pub fn new(dbs: &BTreeMap<u32, Keyspace>) -> Self {
        let order: Vec<(u32, Vec<u8>)> =
            dbs.iter().flat_map(|(db, ks)| ks.keys().map(move |k| (*db, k.clone()))).collect();
        let pending = order.iter().cloned().collect();
        Traversal { order, pos: 0, pending, entries: 0 }
    }

    /// The next key still to serialize.
    pub fn next_key(&mut self) -> Option<(u32, Vec<u8>)> {
        while self.pos < self.order.len() {
            let k = std::mem::take(&mut self.order[self.pos]);
            self.pos += 1;
            if self.pending.remove(&k) {
                return Some(k);
            }
        }
        None
    }

    /// Claim a key a write is about to change: true if it was not serialized yet (the
    /// caller serializes it now).
    pub fn claim(&mut self, db: u32, key: &[u8]) -> bool {
        !self.pending.is_empty() && self.pending.remove(&(db, key.to_vec()))
    }

    /// Claim every pending key of a db (`None` = all dbs), for FLUSHDB/FLUSHALL.
    pub fn claim_db(&mut self, db: Option<u32>) -> Vec<(u32, Vec<u8>)> {
        let mut out: Vec<(u32, Vec<u8>)> =
            self.pending.iter().filter(|(d, _)| db.is_none_or(|x| x == *d)).cloned().collect();
        out.sort();
        for k in &out {
            self.pending.remove(k);
        }
        out
    }

    pub fn is_done(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::data::Value;
    use crate::protocol::{FlowDecoder, Item, Limits, Piece};
    use std::collections::VecDeque as Deque;

    fn decode(bytes: &[u8]) -> Vec<Item> {
        let mut d = FlowDecoder::new(None, Some(vec![b'a'; 40]), Limits::default());
        let mut out = Vec::new();
        d.feed(bytes, &mut out).unwrap();
        d.finish().unwrap();
        out
    }

    fn big_list(n: usize) -> Entry {
        Entry::new(Value::List((0..n).map(|i| format!("element-{i:08}").into_bytes()).collect::<Deque<_>>()))
    }

    fn run(opts: SerOpts) -> Vec<Item> {
        let mut s = Serializer::new(opts);
        s.header(&[("redis-ver", b"6.2.11".to_vec())]);
        s.entry(0, b"a", &Entry::new(Value::String(b"x".to_vec())), false);
        s.entry(0, b"big1", &big_list(20_000), false);
        s.journal_blob(&encode::journal_record(0, encode::J_COMMAND, 0, 1, &[b"SET".as_slice(), b"a", b"y"]), false);
        s.entry(1, b"b", &Entry::new(Value::String(b"z".to_vec())), false);
        s.entry(1, b"big2", &big_list(20_000), false);
        while s.open_entries() > 0 {
            s.advance();
        }
        s.fullsync_end();
        s.journal_blob(&encode::journal_record(1, encode::J_COMMAND, 0, 1, &[b"SET".as_slice(), b"b", b"w"]), true);
        s.finish(7, &[b'a'; 40]);
        decode(&s.take_ready())
    }

    #[test]
    fn every_mode_decodes_to_the_same_items() {
        for compression in [Compression::None, Compression::Lzf, Compression::Lz4, Compression::Zstd] {
            for (tagged, two_open) in [(false, false), (true, false), (true, true)] {
                let items = run(SerOpts { compression, tagged, chunk_size: 16 * 1024, two_open });
                let keys: Vec<(u32, Vec<u8>, usize)> = items
                    .iter()
                    .filter_map(|i| match i {
                        Item::Value(v) if v.last => Some((v.head.db, v.head.key.clone(), 0)),
                        _ => None,
                    })
                    .collect();
                let mut names: Vec<_> = keys.iter().map(|k| (k.0, k.1.clone())).collect();
                names.sort();
                assert_eq!(
                    names,
                    vec![(0, b"a".to_vec()), (0, b"big1".to_vec()), (1, b"b".to_vec()), (1, b"big2".to_vec())]
                );
                let elems: usize = items
                    .iter()
                    .map(|i| match i {
                        Item::Value(v) => match &v.piece {
                            Piece::ListElems(e) => e.len(),
                            _ => 0,
                        },
                        _ => 0,
                    })
                    .sum();
                assert_eq!(elems, 40_000);
                assert!(items.contains(&Item::JournalOffset(7)));
                let journal = items.iter().filter(|i| matches!(i, Item::Journal(_))).count();
                assert_eq!(journal, 2, "{compression:?} tagged={tagged}");
            }
        }
    }
}
