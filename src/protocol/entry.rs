//! One snapshot entry (protocol doc 5.5): `[0xFC ms][0xDC mask] type key value`.
//!
//! The parser is a state machine that consumes one *unit* at a time (a prefix, the key, a list
//! node, a set member, a stream node, ...) and emits the value as bounded [`Piece`]s, so a
//! 500 MB list passes through in batches. The same parser serves untagged entries read
//! straight off the stream, entries reassembled from TAGGED_CHUNKs, entries inside compressed
//! blobs and RESTORE payloads in journal records: it only ever sees a [`Cursor`].

use std::sync::Arc;

use super::cursor::{show, Cursor, PResult, RstrHeader, Stop};
use super::items::{
    rdb_type as t, EntryHead, Item, PendingEntry, Piece, StreamConsumer, StreamEntry,
    StreamGroup, StreamId, StreamMeta, ValuePiece, MEMBER_EXPIRY_BASE,
};
use super::listpack::{intset, listpack, LpElem};
use super::whole::{self, Whole};
use super::ziplist::ziplist;

pub const OP_EXPIRETIME_MS: u8 = 0xFC;
pub const OP_DF_MASK: u8 = 0xDC;
const DF_MASK_STICKY: u32 = 1;
const DF_MASK_MC_FLAGS: u32 = 2;

/// Bounds on what one emitted piece may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Elements per piece of a collection.
    pub batch_elems: usize,
    /// Payload bytes per piece of a collection (checked after each element).
    pub batch_bytes: usize,
    /// Strings longer than this are emitted as several pieces (SET, then APPENDs).
    pub string_piece: usize,
    /// Largest compressed blob accepted (the master emits at most about 1 MiB).
    pub max_blob: usize,
    /// Value types emitted whole, as their encoded bytes ([`Piece::Encoded`]), when small
    /// enough; none by default.
    pub whole: Whole,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            batch_elems: 512,
            batch_bytes: 256 * 1024,
            string_piece: 1024 * 1024,
            max_blob: 64 * 1024 * 1024,
            whole: Whole::NONE,
        }
    }
}

/// Where the parser is within the entry.
#[derive(Debug, Clone)]
enum St {
    /// Before the type byte: EXPIRETIME_MS / DF_MASK prefixes may come.
    Prefix,
    Key,
    /// A value that may be taken whole ([`Limits::whole`]).
    Whole,
    /// The value of a type that is one RSTR (string, intset, listpacks, JSON).
    Single,
    /// A long plain string being streamed: bytes left.
    StringRest(usize),
    /// The element count of a counted collection.
    Count,
    /// Elements left of types 2, 4, 5, 31, 32.
    Elems(u64),
    /// Quicklist nodes left.
    ListNodes(u64),
    Stream(StreamSt),
    Df(DfSt),
    Done,
    /// Placeholder while a unit runs; every unit sets the next state or emits the last piece.
    Taken,
}

#[derive(Debug, Clone)]
enum StreamSt {
    Nodes(Option<u64>),
    Meta,
    GroupCount,
    Group { left: u64 },
    Pel { groups_left: u64, left: u64 },
    ConsumerCount { groups_left: u64 },
    Consumer { groups_left: u64, left: u64 },
    ConsumerPel { groups_left: u64, consumers_left: u64, name: Vec<u8>, left: u64 },
}

/// Dragonfly-only probabilistic types (33-37): parsed to stay aligned, not replayed.
#[derive(Debug, Clone)]
enum DfSt {
    Header,
    /// SBF/SBF2/Cuckoo filters left.
    Filters(u64),
    /// SBF2/Cuckoo: bytes of the current filter left, read as chunks; then `filters` more.
    Chunks { left: u64, filters: u64 },
    /// Raw bytes to skip, then `then`.
    Raw { left: u64, then: Box<DfSt> },
    /// TOPK heavy-hitter items left; then its counters (one plain string).
    TopkItems(u64),
}

pub struct EntryParser {
    db: u32,
    expire: Option<u64>,
    mask: u32,
    mc_flags: Option<u32>,
    ty: u8,
    head: Option<Arc<EntryHead>>,
    state: St,
    limits: Limits,
    batch: Option<Piece>,
    batch_bytes: usize,
    emitted: bool,
    /// Wire bytes consumed since the last emitted piece.
    wire: u64,
    unit_start: usize,
    /// Stream group being assembled (its PEL waits for the consumers' PELs).
    group: Option<StreamGroup>,
    stream_kind: u8,
    df_bytes: u64,
}

impl EntryParser {
    /// A parser positioned at the start of an entry, in `db`.
    pub fn new(db: u32, limits: Limits) -> Self {
        EntryParser {
            db,
            expire: None,
            mask: 0,
            mc_flags: None,
            ty: 0,
            head: None,
            state: St::Prefix,
            limits,
            batch: None,
            batch_bytes: 0,
            emitted: false,
            wire: 0,
            unit_start: 0,
            group: None,
            stream_kind: 0,
            df_bytes: 0,
        }
    }

    /// A parser positioned at the value of a key whose type and TTL are known already (the
    /// payload of a RESTORE command).
    pub fn for_value(
        db: u32,
        key: Vec<u8>,
        ty: u8,
        expire_at_ms: Option<u64>,
        limits: Limits,
    ) -> Result<Self, String> {
        let mut p = EntryParser::new(db, limits);
        p.expire = expire_at_ms;
        p.ty = ty;
        p.start_value(key).map_err(|e| match e {
            Stop::Err(e) => e.message,
            Stop::More(_) => unreachable!("start_value reads nothing"),
        })?;
        Ok(p)
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, St::Done)
    }

    pub fn head(&self) -> Option<&Arc<EntryHead>> {
        self.head.as_ref()
    }

    /// A description of the entry for error messages.
    pub fn describe(&self) -> String {
        match &self.head {
            Some(h) => format!(
                "entry type {} ({}) key {} in db {}",
                h.rdb_type,
                t::name(h.rdb_type),
                show(&h.key),
                h.db
            ),
            None => "an entry header".to_string(),
        }
    }

    /// Consume as many whole units as `cur` holds. Returns `Ok` once the entry is complete;
    /// `Stop::More` leaves `cur` at the start of the incomplete unit.
    pub fn step(&mut self, cur: &mut Cursor, out: &mut Vec<Item>) -> PResult<()> {
        while !self.is_done() {
            cur.mark();
            self.unit_start = cur.pos();
            // A unit reads everything it needs before it changes anything but the state, so
            // restoring the state is enough to retry it once more bytes have arrived.
            let state = self.state.clone();
            match self.unit(cur, out) {
                Ok(()) => self.wire += (cur.pos() - self.unit_start) as u64,
                Err(Stop::More(n)) => {
                    self.state = state;
                    cur.rewind();
                    return Err(Stop::More(n));
                }
                Err(Stop::Err(e)) => return Err(Stop::Err(e.in_context(|| self.describe()))),
            }
        }
        Ok(())
    }

    fn unit(&mut self, cur: &mut Cursor, out: &mut Vec<Item>) -> PResult<()> {
        match std::mem::replace(&mut self.state, St::Taken) {
            St::Prefix => {
                let at = cur.pos();
                match cur.u8()? {
                    OP_EXPIRETIME_MS => {
                        self.expire = Some(cur.u64_le()?);
                        self.state = St::Prefix;
                    }
                    OP_DF_MASK => {
                        self.mask = cur.u32_le()?;
                        if self.mask & DF_MASK_MC_FLAGS != 0 {
                            self.mc_flags = Some(cur.u32_le()?);
                        }
                        self.state = St::Prefix;
                    }
                    ty if is_supported(ty) => {
                        self.ty = ty;
                        self.state = St::Key;
                    }
                    ty => return Err(cur.err_at(at, unsupported_type(ty))),
                }
            }
            St::Key => {
                let key = cur.rstr_vec()?;
                self.start_value(key)?;
            }
            St::Whole => {
                let start = cur.pos();
                if whole::scan(self.ty, cur, self.limits.whole.max_bytes)? {
                    let key = self.head.as_ref().map_or(&[][..], |h| h.key.as_slice());
                    let piece = Piece::encoded(self.ty, cur.since(start), key);
                    self.emit(cur, out, piece, true);
                } else {
                    // Too big or empty: the element path reads it from its start.
                    cur.rewind();
                    self.state = self.element_state();
                }
            }
            St::Single => self.single(cur, out)?,
            St::StringRest(left) => {
                if cur.is_empty() {
                    return Err(Stop::More(1));
                }
                let want = left.min(self.limits.string_piece - self.batch_bytes);
                let got = cur.take_up_to(want);
                match self.batch.get_or_insert_with(|| Piece::String(Vec::new())) {
                    Piece::String(s) => s.extend_from_slice(got),
                    _ => unreachable!(),
                }
                self.batch_bytes += got.len();
                let left = left - got.len();
                if left == 0 {
                    self.flush(cur, out, true);
                } else {
                    if self.batch_bytes >= self.limits.string_piece {
                        self.flush(cur, out, false);
                    }
                    self.state = St::StringRest(left);
                }
            }
            St::Count => {
                let n = cur.puint()?;
                self.state = match self.ty {
                    t::LIST_QUICKLIST_2 | t::LIST_QUICKLIST => St::ListNodes(n),
                    _ => St::Elems(n),
                };
                if n == 0 {
                    // Dragonfly never emits empty containers; if one comes, it is an empty key.
                    self.flush(cur, out, true);
                }
            }
            St::Elems(left) => {
                self.element(cur)?;
                self.after_element(cur, out, left - 1, St::Elems);
            }
            St::ListNodes(left) => {
                let at = cur.pos();
                // A Redis 6.2 quicklist node is a bare ziplist; quicklist 2 says what it holds.
                let container = if self.ty == t::LIST_QUICKLIST { 3 } else { cur.puint()? };
                let node = cur.rstr()?;
                let elems = match container {
                    3 => ziplist(&node)
                        .map_err(|e| cur.err_at(at, format!("list node: {e}")))?
                        .iter()
                        .map(LpElem::to_vec)
                        .collect(),
                    1 => vec![node.into_owned()],
                    2 => listpack(&node)
                        .map_err(|e| cur.err_at(at, format!("list node: {e}")))?
                        .iter()
                        .map(LpElem::to_vec)
                        .collect(),
                    c => {
                        return Err(cur.err_at(
                            at,
                            format!("quicklist node container {c} (expected 1 PLAIN or 2 PACKED)"),
                        ))
                    }
                };
                // A node can hold more elements than a piece may: split it.
                for e in elems {
                    self.push_elem(e);
                    self.flush_if_full(cur, out);
                }
                self.after_element(cur, out, left - 1, St::ListNodes);
            }
            St::Stream(s) => self.stream_unit(s, cur, out)?,
            St::Df(s) => self.df_unit(s, cur, out)?,
            St::Done | St::Taken => unreachable!("step() stops at Done; Taken never persists"),
        }
        Ok(())
    }

    fn start_value(&mut self, key: Vec<u8>) -> PResult<()> {
        self.head = Some(Arc::new(EntryHead {
            db: self.db,
            key,
            expire_at_ms: self.expire,
            rdb_type: t::normalized(self.ty),
            sticky: self.mask & DF_MASK_STICKY != 0,
            mc_flags: self.mc_flags,
        }));
        self.state = if self.limits.whole.takes(self.ty) { St::Whole } else { self.element_state() };
        if let St::Taken = self.state {
            return Err(Stop::Err(super::error::DecodeError::new(
                super::error::Space::Payload,
                0,
                unsupported_type(self.ty),
            )));
        }
        Ok(())
    }

    /// Where the element path starts reading a value of this entry's type (`Taken` for a
    /// type it does not know).
    fn element_state(&mut self) -> St {
        if matches!(self.ty, t::STREAM_LISTPACKS | t::STREAM_LISTPACKS_2 | t::STREAM_LISTPACKS_3) {
            self.stream_kind = self.ty;
        }
        element_start(self.ty).unwrap_or(St::Taken)
    }

    /// Values stored as one RSTR.
    fn single(&mut self, cur: &mut Cursor, out: &mut Vec<Item>) -> PResult<()> {
        let at = cur.pos();
        let h = cur.rstr_header()?;
        if let (t::STRING, RstrHeader::Plain(n)) = (self.ty, h) {
            if n > self.limits.string_piece {
                self.state = St::StringRest(n);
                return Ok(());
            }
        }
        let blob = cur.rstr_body(h)?;
        let bad = |e: String| cur.err_at(at, e);
        match self.ty {
            t::STRING => self.batch = Some(Piece::String(blob.into_owned())),
            t::JSON => self.batch = Some(Piece::Json(blob.into_owned())),
            t::SET_INTSET => {
                let ints = intset(&blob).map_err(bad)?;
                self.batch = Some(Piece::SetMembers(Vec::new()));
                for (i, v) in ints.iter().enumerate() {
                    self.push_elem(v.to_string().into_bytes());
                    self.maybe_flush(cur, out, i + 1 == ints.len());
                }
            }
            t::LIST_ZIPLIST | t::SET_LISTPACK => {
                let e = if self.ty == t::SET_LISTPACK { listpack(&blob) } else { ziplist(&blob) };
                let e = e.map_err(|e| cur.err_at(at, e))?;
                self.batch = Some(self.empty_piece());
                for (i, v) in e.iter().enumerate() {
                    self.push_elem(v.to_vec());
                    self.maybe_flush(cur, out, i + 1 == e.len());
                }
            }
            t::HASH_LISTPACK | t::HASH_ZIPLIST => {
                let e = if self.ty == t::HASH_ZIPLIST { ziplist(&blob) } else { listpack(&blob) };
                let e = e.map_err(|e| cur.err_at(at, e))?;
                if e.len() % 2 != 0 {
                    return Err(cur.err_at(at, format!("hash listpack has an odd {} elements", e.len())));
                }
                self.batch = Some(Piece::HashFields(Vec::new()));
                let pairs = e.len() / 2;
                for (i, p) in e.chunks_exact(2).enumerate() {
                    self.push_pair(p[0].to_vec(), p[1].to_vec());
                    self.maybe_flush(cur, out, i + 1 == pairs);
                }
            }
            t::ZSET_LISTPACK | t::ZSET_ZIPLIST => {
                let e = if self.ty == t::ZSET_ZIPLIST { ziplist(&blob) } else { listpack(&blob) };
                let e = e.map_err(|e| cur.err_at(at, e))?;
                if e.len() % 2 != 0 {
                    return Err(cur.err_at(at, format!("zset listpack has an odd {} elements", e.len())));
                }
                self.batch = Some(Piece::ZsetMembers(Vec::new()));
                let pairs = e.len() / 2;
                for (i, p) in e.chunks_exact(2).enumerate() {
                    let score = lp_score(&p[1]).map_err(|e| cur.err_at(at, e))?;
                    self.push_scored(p[0].to_vec(), score);
                    self.maybe_flush(cur, out, i + 1 == pairs);
                }
            }
            _ => unreachable!(),
        }
        if !self.is_done() {
            // Strings, JSON, and empty collections.
            self.flush(cur, out, true);
        }
        Ok(())
    }

    /// One element of a counted collection (types 2, 4, 5, 31, 32), into the batch.
    fn element(&mut self, cur: &mut Cursor) -> PResult<()> {
        match self.ty {
            t::SET | t::LIST => {
                let m = cur.rstr_vec()?;
                self.push_elem(m);
            }
            t::SET_WITH_EXPIRY => {
                let m = cur.rstr_vec()?;
                let ttl = member_ttl(cur.rstr_i64("member TTL")?);
                self.batch_bytes += m.len();
                match self.batch.get_or_insert_with(|| Piece::SetMembersTtl(Vec::new())) {
                    Piece::SetMembersTtl(v) => v.push((m, ttl)),
                    _ => unreachable!(),
                }
            }
            t::HASH => {
                let f = cur.rstr_vec()?;
                let v = cur.rstr_vec()?;
                self.push_pair(f, v);
            }
            t::HASH_WITH_EXPIRY => {
                let f = cur.rstr_vec()?;
                let v = cur.rstr_vec()?;
                let ttl = member_ttl(cur.rstr_i64("field TTL")?);
                self.batch_bytes += f.len() + v.len();
                match self.batch.get_or_insert_with(|| Piece::HashFieldsTtl(Vec::new())) {
                    Piece::HashFieldsTtl(b) => b.push((f, v, ttl)),
                    _ => unreachable!(),
                }
            }
            t::ZSET_2 => {
                let m = cur.rstr_vec()?;
                let at = cur.pos();
                let s = cur.f64_le()?;
                if s.is_nan() {
                    return Err(cur.err_at(at, "sorted-set score is NaN"));
                }
                self.push_scored(m, s);
            }
            _ => unreachable!(),
        }
        Ok(())
    }

    fn after_element(&mut self, cur: &Cursor, out: &mut Vec<Item>, left: u64, next: fn(u64) -> St) {
        if left == 0 {
            self.flush(cur, out, true);
        } else {
            self.maybe_flush(cur, out, false);
            self.state = next(left);
        }
    }

    fn push_elem(&mut self, e: Vec<u8>) {
        self.batch_bytes += e.len();
        let ty = self.ty;
        match self.batch.get_or_insert_with(|| {
            if t::normalized(ty) == t::LIST_QUICKLIST_2 || ty == t::LIST {
                Piece::ListElems(Vec::new())
            } else {
                Piece::SetMembers(Vec::new())
            }
        }) {
            Piece::ListElems(v) | Piece::SetMembers(v) => v.push(e),
            _ => unreachable!(),
        }
    }
    fn push_pair(&mut self, f: Vec<u8>, v: Vec<u8>) {
        self.batch_bytes += f.len() + v.len();
        match self.batch.get_or_insert_with(|| Piece::HashFields(Vec::new())) {
            Piece::HashFields(b) => b.push((f, v)),
            _ => unreachable!(),
        }
    }
    fn push_scored(&mut self, m: Vec<u8>, s: f64) {
        self.batch_bytes += m.len() + 8;
        match self.batch.get_or_insert_with(|| Piece::ZsetMembers(Vec::new())) {
            Piece::ZsetMembers(b) => b.push((m, s)),
            _ => unreachable!(),
        }
    }

    /// Emit the batch (not as the last piece) when it reached a limit.
    fn flush_if_full(&mut self, cur: &Cursor, out: &mut Vec<Item>) {
        self.maybe_flush(cur, out, false)
    }

    fn maybe_flush(&mut self, cur: &Cursor, out: &mut Vec<Item>, last: bool) {
        let full = self.batch.as_ref().is_some_and(|b| b.elements() >= self.limits.batch_elems)
            || self.batch_bytes >= self.limits.batch_bytes;
        if last || full {
            self.flush(cur, out, last);
        }
    }

    /// Emit the current batch (possibly empty) as a piece; `last` completes the entry.
    fn flush(&mut self, cur: &Cursor, out: &mut Vec<Item>, last: bool) {
        let piece = self.batch.take().unwrap_or_else(|| self.empty_piece());
        self.emit(cur, out, piece, last);
    }

    fn emit(&mut self, cur: &Cursor, out: &mut Vec<Item>, piece: Piece, last: bool) {
        let wire = self.wire + (cur.pos() - self.unit_start) as u64;
        self.wire = 0;
        self.unit_start = cur.pos();
        self.batch_bytes = 0;
        out.push(Item::Value(ValuePiece {
            head: self.head.clone().expect("value pieces come after the key"),
            piece,
            first: !self.emitted,
            last,
            wire_bytes: wire,
        }));
        self.emitted = true;
        if last {
            self.state = St::Done;
        }
    }

    fn empty_piece(&self) -> Piece {
        match self.ty {
            t::STRING => Piece::String(Vec::new()),
            t::LIST_QUICKLIST_2 | t::LIST_QUICKLIST | t::LIST_ZIPLIST | t::LIST => Piece::ListElems(Vec::new()),
            t::SET | t::SET_INTSET | t::SET_LISTPACK => Piece::SetMembers(Vec::new()),
            t::SET_WITH_EXPIRY => Piece::SetMembersTtl(Vec::new()),
            t::HASH | t::HASH_LISTPACK | t::HASH_ZIPLIST => Piece::HashFields(Vec::new()),
            t::HASH_WITH_EXPIRY => Piece::HashFieldsTtl(Vec::new()),
            t::ZSET_2 | t::ZSET_LISTPACK | t::ZSET_ZIPLIST => Piece::ZsetMembers(Vec::new()),
            t::JSON => Piece::Json(Vec::new()),
            t::SBF | t::SBF2 | t::CMS | t::TOPK | t::CUCKOO => Piece::Opaque(self.df_bytes),
            _ => Piece::StreamEntries(Vec::new()),
        }
    }

    // ---- streams (types 15, 19, 21) -------------------------------------------------------

    fn stream_unit(&mut self, s: StreamSt, cur: &mut Cursor, out: &mut Vec<Item>) -> PResult<()> {
        match s {
            StreamSt::Nodes(None) => {
                let n = cur.puint()?;
                self.state = St::Stream(if n == 0 { StreamSt::Meta } else { StreamSt::Nodes(Some(n)) });
            }
            StreamSt::Nodes(Some(left)) => {
                let at = cur.pos();
                let master = cur.rstr()?;
                let lp = cur.rstr()?;
                if master.len() != 16 {
                    return Err(cur.err_at(at, format!("stream node key of {} bytes (expected 16)", master.len())));
                }
                let master = StreamId {
                    ms: u64::from_be_bytes(master[..8].try_into().unwrap()),
                    seq: u64::from_be_bytes(master[8..].try_into().unwrap()),
                };
                let entries =
                    stream_node(master, &lp).map_err(|e| cur.err_at(at, format!("stream node {master}: {e}")))?;
                for e in entries {
                    self.batch_bytes += e.fields.iter().map(Vec::len).sum::<usize>();
                    match self.batch.get_or_insert_with(|| Piece::StreamEntries(Vec::new())) {
                        Piece::StreamEntries(v) => v.push(e),
                        _ => unreachable!(),
                    }
                    self.flush_if_full(cur, out);
                }
                self.state = St::Stream(if left == 1 { StreamSt::Meta } else { StreamSt::Nodes(Some(left - 1)) });
            }
            StreamSt::Meta => {
                let length = cur.puint()?;
                let last_id = StreamId { ms: cur.puint()?, seq: cur.puint()? };
                let mut meta = StreamMeta { length, last_id, ..Default::default() };
                if self.stream_kind != t::STREAM_LISTPACKS {
                    meta.first_id = StreamId { ms: cur.puint()?, seq: cur.puint()? };
                    meta.max_deleted_id = StreamId { ms: cur.puint()?, seq: cur.puint()? };
                    meta.entries_added = cur.puint()?;
                } else {
                    meta.entries_added = length;
                }
                if let Some(b) = self.batch.take() {
                    self.emit(cur, out, b, false);
                }
                self.batch = Some(Piece::StreamMeta(meta));
                self.state = St::Stream(StreamSt::GroupCount);
            }
            StreamSt::GroupCount => {
                let n = cur.puint()?;
                let meta = self.batch.take().expect("meta precedes groups");
                self.emit(cur, out, meta, n == 0);
                if n > 0 {
                    self.state = St::Stream(StreamSt::Group { left: n });
                }
            }
            StreamSt::Group { left } => {
                let name = cur.rstr_vec()?;
                let last_id = StreamId { ms: cur.puint()?, seq: cur.puint()? };
                let entries_read =
                    if self.stream_kind == t::STREAM_LISTPACKS { None } else { Some(cur.puint()?) };
                let pel = cur.puint()?;
                self.group = Some(StreamGroup { name, last_id, entries_read, pending: Vec::new(), consumers: Vec::new() });
                let groups_left = left - 1;
                self.state = St::Stream(if pel == 0 {
                    StreamSt::ConsumerCount { groups_left }
                } else {
                    StreamSt::Pel { groups_left, left: pel }
                });
            }
            StreamSt::Pel { groups_left, left } => {
                let (ms, seq) = cur.stream_id_be()?;
                let delivery_time_ms = cur.u64_le()?;
                let delivery_count = cur.puint()?;
                let g = self.group.as_mut().expect("group header read");
                g.pending.push(PendingEntry { id: StreamId { ms, seq }, delivery_time_ms, delivery_count, consumer: None });
                self.state = St::Stream(if left == 1 {
                    StreamSt::ConsumerCount { groups_left }
                } else {
                    StreamSt::Pel { groups_left, left: left - 1 }
                });
            }
            StreamSt::ConsumerCount { groups_left } => {
                let n = cur.puint()?;
                if n == 0 {
                    self.finish_group(cur, out, groups_left);
                } else {
                    self.state = St::Stream(StreamSt::Consumer { groups_left, left: n });
                }
            }
            StreamSt::Consumer { groups_left, left } => {
                let name = cur.rstr_vec()?;
                let seen_time_ms = cur.u64_le()?;
                let active_time_ms =
                    if self.stream_kind == t::STREAM_LISTPACKS_3 { Some(cur.u64_le()?) } else { None };
                let pel = cur.puint()?;
                let g = self.group.as_mut().expect("group header read");
                g.consumers.push(StreamConsumer { name: name.clone(), seen_time_ms, active_time_ms });
                self.next_consumer(cur, out, groups_left, left - 1, name, pel);
            }
            StreamSt::ConsumerPel { groups_left, consumers_left, name, left } => {
                let at = cur.pos();
                let (ms, seq) = cur.stream_id_be()?;
                let id = StreamId { ms, seq };
                let g = self.group.as_mut().expect("group header read");
                // The group PEL is sorted by ID (it is a rax in Redis and Dragonfly).
                match g.pending.binary_search_by(|p| p.id.cmp(&id)) {
                    Ok(i) => g.pending[i].consumer = Some(name.clone()),
                    Err(_) => {
                        return Err(cur.err_at(
                            at,
                            format!("consumer {} owns pending entry {id} that is not in the group's PEL", show(&name)),
                        ))
                    }
                }
                self.next_consumer(cur, out, groups_left, consumers_left, name, left - 1);
            }
        }
        Ok(())
    }

    fn next_consumer(
        &mut self,
        cur: &Cursor,
        out: &mut Vec<Item>,
        groups_left: u64,
        consumers_left: u64,
        name: Vec<u8>,
        pel_left: u64,
    ) {
        self.state = St::Stream(if pel_left > 0 {
            StreamSt::ConsumerPel { groups_left, consumers_left, name, left: pel_left }
        } else if consumers_left > 0 {
            StreamSt::Consumer { groups_left, left: consumers_left }
        } else {
            return self.finish_group(cur, out, groups_left);
        });
    }

    fn finish_group(&mut self, cur: &Cursor, out: &mut Vec<Item>, groups_left: u64) {
        let g = self.group.take().expect("group header read");
        self.emit(cur, out, Piece::StreamGroup(g), groups_left == 0);
        if groups_left > 0 {
            self.state = St::Stream(StreamSt::Group { left: groups_left });
        }
    }

    // ---- Dragonfly-only probabilistic types (33-37) -------------------------------------

    fn df_unit(&mut self, s: DfSt, cur: &mut Cursor, out: &mut Vec<Item>) -> PResult<()> {
        let start = cur.pos();
        let next = match s {
            DfSt::Header => match self.ty {
                t::SBF | t::SBF2 => {
                    let _options = cur.puint()?;
                    let _grow_factor = cur.f64_le()?;
                    let _fp_prob = cur.f64_le()?;
                    let _prev_size = cur.puint()?;
                    let _current_size = cur.puint()?;
                    let _max_capacity = cur.puint()?;
                    DfSt::Filters(cur.puint()?)
                }
                t::CMS => {
                    let width = cur.puint()?;
                    let depth = cur.puint()?;
                    let _total_count = cur.puint()?;
                    let Some(bytes) = width.checked_mul(depth).and_then(|n| n.checked_mul(8)) else {
                        return Err(cur.err_at(start, format!("count-min sketch of {width} x {depth} counters")));
                    };
                    DfSt::Raw { left: bytes, then: Box::new(DfSt::Filters(0)) }
                }
                t::TOPK => {
                    let _zero = cur.puint()?;
                    let _k = cur.puint()?;
                    let _width = cur.puint()?;
                    let _depth = cur.puint()?;
                    let _decay = cur.f64_le()?;
                    DfSt::TopkItems(cur.puint()?)
                }
                t::CUCKOO => {
                    // slots per bucket, max iterations, expansion, buckets, items, deletes
                    for _ in 0..6 {
                        cur.puint()?;
                    }
                    DfSt::Filters(cur.puint()?)
                }
                _ => unreachable!(),
            },
            DfSt::Filters(0) => {
                self.emit(cur, out, Piece::Opaque(self.df_bytes), true);
                return Ok(());
            }
            DfSt::Filters(n) => match self.ty {
                t::SBF => {
                    let _hash_count = cur.puint()?;
                    let _bits = cur.rstr()?;
                    DfSt::Filters(n - 1)
                }
                t::SBF2 => {
                    let _hash_count = cur.puint()?;
                    DfSt::Chunks { left: cur.puint()?, filters: n - 1 }
                }
                _ => DfSt::Chunks { left: cur.puint()?, filters: n - 1 },
            },
            DfSt::Chunks { left: 0, filters } => DfSt::Filters(filters),
            DfSt::Chunks { left, filters } => {
                // Chunks are PUINT(len)+raw (v1.39+) or RSTRs (v1.35-v1.38). A plain RSTR is
                // the same bytes, so read the header and skip the payload as it streams by.
                let (len, raw) = match cur.rstr_header()? {
                    RstrHeader::Plain(n) => (n as u64, true),
                    h => (cur.rstr_body(h)?.len() as u64, false),
                };
                if len == 0 || len > left {
                    return Err(cur.err_at(
                        start,
                        format!("filter chunk of {len} bytes with {left} bytes of the filter left"),
                    ));
                }
                let then = DfSt::Chunks { left: left - len, filters };
                if raw {
                    DfSt::Raw { left: len, then: Box::new(then) }
                } else {
                    then
                }
            }
            DfSt::Raw { left: 0, then } => *then,
            DfSt::Raw { left, then } => {
                if cur.is_empty() {
                    return Err(Stop::More(1));
                }
                let got = cur.take_up_to(left.min(usize::MAX as u64) as usize).len() as u64;
                DfSt::Raw { left: left - got, then }
            }
            DfSt::TopkItems(0) => match cur.rstr_header()? {
                RstrHeader::Plain(n) => DfSt::Raw { left: n as u64, then: Box::new(DfSt::Filters(0)) },
                _ => return Err(cur.err_at(start, "top-k counters are not a plain string")),
            },
            DfSt::TopkItems(n) => {
                let _item = cur.rstr()?;
                let _count = cur.puint()?;
                DfSt::TopkItems(n - 1)
            }
        };
        self.df_bytes += (cur.pos() - start) as u64;
        self.state = St::Df(next);
        Ok(())
    }
}

/// Member/field TTL text (seconds relative to 2023-02-01, -1 = none) to absolute seconds.
fn member_ttl(v: i64) -> Option<i64> {
    (v >= 0).then(|| v.saturating_add(MEMBER_EXPIRY_BASE))
}

/// A sorted-set score stored in a listpack (an integer, or its text).
pub fn lp_score(e: &LpElem) -> Result<f64, String> {
    match *e {
        LpElem::Int(i) => Ok(i as f64),
        LpElem::Str(s) => std::str::from_utf8(s)
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|f| !f.is_nan())
            .ok_or_else(|| format!("sorted-set score {} is not a number", show(s))),
    }
}

fn lp_int(e: &LpElem, what: &str) -> Result<i64, String> {
    match *e {
        LpElem::Int(i) => Ok(i),
        LpElem::Str(s) => std::str::from_utf8(s)
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or_else(|| format!("{what} {} is not an integer", show(s))),
    }
}

/// Decode one stream node (master ID + listpack, Redis t_stream.c layout) into its live entries.
fn stream_node(master: StreamId, lp: &[u8]) -> Result<Vec<StreamEntry>, String> {
    const DELETED: i64 = 1;
    const SAMEFIELDS: i64 = 2;
    let e = listpack(lp)?;
    let get = |i: usize| e.get(i).ok_or_else(|| format!("listpack ends at element {i}"));
    let count = lp_int(get(0)?, "entry count")?;
    let deleted = lp_int(get(1)?, "deleted count")?;
    let nmf = lp_int(get(2)?, "master field count")?;
    if count < 0 || deleted < 0 || nmf < 0 {
        return Err("negative counts in the master entry".into());
    }
    let nmf = nmf as usize;
    let master_fields: Vec<Vec<u8>> = (0..nmf).map(|i| get(3 + i).map(LpElem::to_vec)).collect::<Result<_, _>>()?;
    if lp_int(get(3 + nmf)?, "master terminator")? != 0 {
        return Err("master entry is not terminated by 0".into());
    }
    let mut i = 4 + nmf;
    let mut out = Vec::with_capacity(count as usize);
    let mut seen = 0i64;
    while i < e.len() {
        let flags = lp_int(get(i)?, "entry flags")?;
        let ms = lp_int(get(i + 1)?, "ms delta")?;
        let seq = lp_int(get(i + 2)?, "seq delta")?;
        i += 3;
        let mut fields = Vec::new();
        if flags & SAMEFIELDS != 0 {
            for (f, mf) in master_fields.iter().enumerate() {
                fields.push(mf.clone());
                fields.push(get(i + f)?.to_vec());
            }
            i += nmf;
        } else {
            let nf = lp_int(get(i)?, "field count")?;
            if nf < 0 {
                return Err("negative field count".into());
            }
            i += 1;
            for f in 0..(nf as usize) * 2 {
                fields.push(get(i + f)?.to_vec());
            }
            i += nf as usize * 2;
        }
        let _lp_count = get(i)?;
        i += 1;
        seen += 1;
        if flags & DELETED == 0 {
            let id = StreamId {
                ms: master.ms.wrapping_add(ms as u64),
                seq: master.seq.wrapping_add(seq as u64),
            };
            out.push(StreamEntry { id, fields });
        }
    }
    if seen != count + deleted {
        return Err(format!("node holds {seen} entries, its master entry says {count} + {deleted} deleted"));
    }
    Ok(out)
}

/// Where the element path starts reading a value of type `ty`; `None` for a type the parser
/// does not know. The one list of supported types: an entry prefix is checked against it too.
fn element_start(ty: u8) -> Option<St> {
    Some(match ty {
        t::STRING | t::SET_INTSET | t::HASH_LISTPACK | t::ZSET_LISTPACK | t::JSON => St::Single,
        t::LIST_ZIPLIST | t::HASH_ZIPLIST | t::ZSET_ZIPLIST | t::SET_LISTPACK => St::Single,
        t::SET | t::HASH | t::ZSET_2 | t::HASH_WITH_EXPIRY | t::SET_WITH_EXPIRY => St::Count,
        t::LIST_QUICKLIST_2 | t::LIST_QUICKLIST | t::LIST => St::Count,
        t::STREAM_LISTPACKS | t::STREAM_LISTPACKS_2 | t::STREAM_LISTPACKS_3 => St::Stream(StreamSt::Nodes(None)),
        t::SBF | t::SBF2 | t::CMS | t::TOPK | t::CUCKOO => St::Df(DfSt::Header),
        _ => return None,
    })
}

fn is_supported(ty: u8) -> bool {
    element_start(ty).is_some()
}

fn unsupported_type(ty: u8) -> String {
    if ty <= 37 {
        format!("RDB value type {ty} is not supported (neither Dragonfly v1.34-v1.40 nor Redis 6.2-7.x or Valkey 8 write it)")
    } else {
        format!("expected a value type (0-37) or an entry prefix (0xFC, 0xDC), found 0x{ty:02X}")
    }
}
