//! What a flow decoder emits: typed items, in stream order.
//!
//! Snapshot values are emitted as [`ValuePiece`]s: the first piece of a key opens it, the last
//! closes it, and a large collection arrives as several bounded pieces in between. A small key
//! is a single piece that is both first and last. Pieces of one key share one `Arc<EntryHead>`,
//! so a consumer can tell interleaved tagged entries apart and never needs the whole value.

use std::sync::Arc;

/// RDB value type bytes Dragonfly v1.34-v1.40 emits (protocol doc 5.5), plus the older stream
/// layouts a generic parser may meet, and the encodings Redis 6.2 and Valkey write in their
/// own RDB files (ziplists, ziplist quicklists, listpack sets), which snapshot files may hold.
pub mod rdb_type {
    pub const STRING: u8 = 0;
    /// A list as its elements (RDB 0-6; only in payloads df2redis re-encodes for old targets).
    pub const LIST: u8 = 1;
    pub const SET: u8 = 2;
    pub const HASH: u8 = 4;
    pub const ZSET_2: u8 = 5;
    pub const LIST_ZIPLIST: u8 = 10;
    pub const SET_INTSET: u8 = 11;
    pub const ZSET_ZIPLIST: u8 = 12;
    pub const HASH_ZIPLIST: u8 = 13;
    pub const LIST_QUICKLIST: u8 = 14;
    pub const SET_LISTPACK: u8 = 20;
    pub const STREAM_LISTPACKS: u8 = 15;
    pub const HASH_LISTPACK: u8 = 16;
    pub const ZSET_LISTPACK: u8 = 17;
    pub const LIST_QUICKLIST_2: u8 = 18;
    pub const STREAM_LISTPACKS_2: u8 = 19;
    pub const STREAM_LISTPACKS_3: u8 = 21;
    pub const JSON: u8 = 30;
    pub const HASH_WITH_EXPIRY: u8 = 31;
    pub const SET_WITH_EXPIRY: u8 = 32;
    pub const SBF: u8 = 33;
    pub const SBF2: u8 = 34;
    pub const CMS: u8 = 35;
    pub const TOPK: u8 = 36;
    pub const CUCKOO: u8 = 37;

    /// A short name for logs and summaries.
    pub fn name(t: u8) -> &'static str {
        match t {
            STRING => "string",
            LIST => "list(plain)",
            SET => "set",
            HASH => "hash",
            ZSET_2 => "zset",
            SET_INTSET => "set(intset)",
            STREAM_LISTPACKS | STREAM_LISTPACKS_2 | STREAM_LISTPACKS_3 => "stream",
            HASH_LISTPACK => "hash(listpack)",
            ZSET_LISTPACK => "zset(listpack)",
            LIST_QUICKLIST_2 => "list",
            LIST_ZIPLIST => "list(ziplist)",
            LIST_QUICKLIST => "list(quicklist)",
            ZSET_ZIPLIST => "zset(ziplist)",
            HASH_ZIPLIST => "hash(ziplist)",
            SET_LISTPACK => "set(listpack)",
            JSON => "json",
            HASH_WITH_EXPIRY => "hash(field-ttl)",
            SET_WITH_EXPIRY => "set(member-ttl)",
            SBF | SBF2 => "bloom",
            CMS => "cms",
            TOPK => "topk",
            CUCKOO => "cuckoo",
            _ => "unknown",
        }
    }

    /// The type a value of `t` is handed on as: Redis's older and newer encodings of a list,
    /// hash, sorted set or set read as the ones Dragonfly sends, so everything after the
    /// decoder sees one type per kind of value.
    pub fn normalized(t: u8) -> u8 {
        match t {
            LIST | LIST_ZIPLIST | LIST_QUICKLIST => LIST_QUICKLIST_2,
            ZSET_ZIPLIST => ZSET_LISTPACK,
            HASH_ZIPLIST => HASH_LISTPACK,
            SET_LISTPACK => SET,
            other => other,
        }
    }

    /// Types that only Dragonfly has: Redis cannot hold them as they are.
    pub fn is_dragonfly_only(t: u8) -> bool {
        (JSON..=CUCKOO).contains(&t)
    }
}

/// Member TTLs of types 31/32 are seconds relative to this Unix time (2023-02-01).
pub const MEMBER_EXPIRY_BASE: i64 = 1_675_209_600;

/// The key a snapshot value belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryHead {
    pub db: u32,
    pub key: Vec<u8>,
    /// Absolute Unix milliseconds (EXPIRETIME_MS), if the key has a TTL.
    pub expire_at_ms: Option<u64>,
    /// The RDB type byte.
    pub rdb_type: u8,
    /// DF_MASK sticky bit (Dragonfly `STICK`); Redis has no equivalent.
    pub sticky: bool,
    /// Memcached client flags (DF_MASK bit 1); Redis has no equivalent.
    pub mc_flags: Option<u32>,
}

/// A stream entry ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntry {
    pub id: StreamId,
    /// field, value, field, value, ...
    pub fields: Vec<Vec<u8>>,
}

/// Stream metadata that follows the entries (protocol doc 5.5).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamMeta {
    pub length: u64,
    pub last_id: StreamId,
    pub first_id: StreamId,
    pub max_deleted_id: StreamId,
    pub entries_added: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PendingEntry {
    pub id: StreamId,
    pub delivery_time_ms: u64,
    pub delivery_count: u64,
    /// The consumer that owns it (from the consumers' PELs), if any.
    pub consumer: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamConsumer {
    pub name: Vec<u8>,
    pub seen_time_ms: u64,
    pub active_time_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamGroup {
    pub name: Vec<u8>,
    pub last_id: StreamId,
    /// `None` for the older layouts that do not carry it.
    pub entries_read: Option<u64>,
    pub pending: Vec<PendingEntry>,
    pub consumers: Vec<StreamConsumer>,
}

/// A bounded part of one key's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// A string, or a slice of a long string (later slices append).
    String(Vec<u8>),
    ListElems(Vec<Vec<u8>>),
    SetMembers(Vec<Vec<u8>>),
    /// Members with their TTL in absolute Unix seconds (`None` = no TTL).
    SetMembersTtl(Vec<(Vec<u8>, Option<i64>)>),
    HashFields(Vec<(Vec<u8>, Vec<u8>)>),
    /// Fields with their TTL in absolute Unix seconds (`None` = no TTL).
    HashFieldsTtl(Vec<(Vec<u8>, Vec<u8>, Option<i64>)>),
    ZsetMembers(Vec<(Vec<u8>, f64)>),
    StreamEntries(Vec<StreamEntry>),
    StreamMeta(StreamMeta),
    StreamGroup(StreamGroup),
    /// A JSON document (type 30), compact text.
    Json(Vec<u8>),
    /// Bytes of a Dragonfly-only probabilistic type (33-37) that were parsed and skipped.
    Opaque(u64),
    /// A whole value as the master encoded it: `bytes[start..]` is its RDB type byte, then the
    /// value's bytes (a DUMP payload without its version and checksum). `bytes[..start]` is
    /// room, and the vector has [`ENCODED_TAIL`] bytes of spare capacity: the replayer frames
    /// the value as a RESTORE command in this buffer ([`Argv::from_framed`]), so the value is
    /// copied once between the socket's buffer and the writer's. Only for the types named in
    /// [`Limits::whole`](super::Limits::whole); always the key's only piece.
    Encoded { bytes: Vec<u8>, start: usize },
}

impl Piece {
    /// Number of elements (members, fields, entries) in this piece.
    pub fn elements(&self) -> usize {
        match self {
            Piece::String(_) | Piece::Json(_) | Piece::StreamMeta(_) | Piece::Opaque(_) | Piece::Encoded { .. } => 0,
            Piece::ListElems(v) | Piece::SetMembers(v) => v.len(),
            Piece::SetMembersTtl(v) => v.len(),
            Piece::HashFields(v) => v.len(),
            Piece::HashFieldsTtl(v) => v.len(),
            Piece::ZsetMembers(v) => v.len(),
            Piece::StreamEntries(v) => v.len(),
            Piece::StreamGroup(_) => 1,
        }
    }
}

/// Room in front of a [`Piece::Encoded`] value besides its key's length: a RESTORE's name,
/// key and TTL arguments and the payload's length as RESP (at most 69 bytes and the key).
pub const ENCODED_ROOM: usize = 80;
/// Spare capacity after a [`Piece::Encoded`] value: the DUMP trailer (RDB version and CRC-64),
/// and `REPLACE ABSTTL` as RESP (37 bytes).
pub const ENCODED_TAIL: usize = 48;

impl Piece {
    /// A [`Piece::Encoded`] of RDB type `ty` and value bytes `value`, with its room for `key`.
    pub fn encoded(ty: u8, value: &[u8], key: &[u8]) -> Piece {
        let start = ENCODED_ROOM + key.len();
        let mut bytes = Vec::with_capacity(start + 1 + value.len() + ENCODED_TAIL);
        bytes.resize(start, 0);
        bytes.push(ty);
        bytes.extend_from_slice(value);
        Piece::Encoded { bytes, start }
    }
}

/// One piece of a snapshot value.
#[derive(Debug, Clone, PartialEq)]
pub struct ValuePiece {
    pub head: Arc<EntryHead>,
    pub piece: Piece,
    /// The first piece of this key: the consumer replaces whatever the target holds.
    pub first: bool,
    /// The last piece of this key: the value is complete (apply the TTL now).
    pub last: bool,
    /// Payload bytes this piece covers on the wire (for progress and inspection).
    pub wire_bytes: u64,
}

/// The kind of a journal record (protocol doc 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Command,
    /// Opcode 9 (v1.37 and older): expiry; its payload is `DEL key`.
    Expired,
    Ping,
}

/// A command's arguments, stored in one buffer: one allocation for the bytes, and the
/// argument bounds inline for up to eight arguments (most journal records and snapshot
/// commands), because this is the hot path of both phases.
///
/// The buffer holds the arguments already as RESP bulk strings (`$<len>\r\n<arg>\r\n`
/// each), written by the thread that decodes them while the bytes are in its cache; sending
/// the command is then its `*<n>` header and one copy of the buffer ([`Argv::write_resp`]),
/// where encoding argument by argument on the writer's core was ~15% of the cluster path.
#[derive(Clone, Default)]
pub struct Argv {
    data: Vec<u8>,
    /// Where the arguments start in `data` (0 but for [`Argv::from_framed`], whose buffer
    /// may have room left in front).
    start: u32,
    /// Per argument, the end of its bytes (its trailing CRLF follows).
    ends: Ends,
}

/// Two commands are equal when their arguments are (whatever room a buffer has in front).
impl PartialEq for Argv {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}
impl Eq for Argv {}

/// The decimal digits of `n`, right-aligned in `buf` (RESP lengths, here and in
/// [`crate::target::resp`]).
pub fn digits(buf: &mut [u8; 20], mut n: usize) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

const INLINE_ARGS: usize = 8;

#[derive(Clone, PartialEq, Eq)]
enum Ends {
    Inline { n: u8, ends: [u32; INLINE_ARGS] },
    Heap(Vec<u32>),
}

impl Default for Ends {
    fn default() -> Self {
        Ends::Inline { n: 0, ends: [0; INLINE_ARGS] }
    }
}

impl Ends {
    fn as_slice(&self) -> &[u32] {
        match self {
            Ends::Inline { n, ends } => &ends[..*n as usize],
            Ends::Heap(v) => v,
        }
    }
    fn push(&mut self, end: u32) {
        match self {
            Ends::Inline { n, ends } if (*n as usize) < INLINE_ARGS => {
                ends[*n as usize] = end;
                *n += 1;
            }
            Ends::Inline { n, ends } => {
                let mut v = Vec::with_capacity(INLINE_ARGS * 2);
                v.extend_from_slice(&ends[..*n as usize]);
                v.push(end);
                *self = Ends::Heap(v);
            }
            Ends::Heap(v) => v.push(end),
        }
    }
}

impl Argv {
    /// Room for `args` arguments of `bytes` bytes in all.
    pub fn with_capacity(bytes: usize, args: usize) -> Self {
        let ends = if args > INLINE_ARGS { Ends::Heap(Vec::with_capacity(args)) } else { Ends::default() };
        Argv { data: Vec::with_capacity(bytes + args * 8), start: 0, ends }
    }
    pub fn from_slices<S: AsRef<[u8]>>(args: &[S]) -> Self {
        let mut a = Argv::with_capacity(args.iter().map(|s| s.as_ref().len()).sum(), args.len());
        for s in args {
            a.push(s.as_ref());
        }
        a
    }
    /// A command whose arguments were written as RESP bulk strings into `data[start..]` by
    /// the caller, argument `i` ending (before its CRLF) at `ends[i]`: the buffer becomes the
    /// command's without a copy (see [`crate::replay::dump::restore_framed`]). The caller
    /// guarantees the framing; it is checked in debug builds.
    pub fn from_framed(data: Vec<u8>, start: usize, ends: &[u32]) -> Self {
        let mut e = if ends.len() > INLINE_ARGS { Ends::Heap(Vec::with_capacity(ends.len())) } else { Ends::default() };
        for &end in ends {
            e.push(end);
        }
        let a = Argv { data, start: start as u32, ends: e };
        debug_assert!(a.ends.as_slice().last().is_some_and(|&end| end as usize + 2 == a.data.len()));
        debug_assert!(a.ends.as_slice().iter().all(|&end| a.data[end as usize..].starts_with(b"\r\n")));
        a
    }
    /// Append an argument. Arguments total at most 4 GiB (a Redis command is far smaller).
    pub fn push(&mut self, arg: &[u8]) {
        let mut num = [0u8; 20];
        self.data.push(b'$');
        self.data.extend_from_slice(digits(&mut num, arg.len()));
        self.data.extend_from_slice(b"\r\n");
        self.data.extend_from_slice(arg);
        self.ends.push(self.data.len() as u32);
        self.data.extend_from_slice(b"\r\n");
    }
    /// Where an argument's bytes start, given where its bulk header (`$<len>\r\n`) starts.
    fn arg_start(&self, header: usize) -> usize {
        // The header is ours (push), so it is well formed: skip to its LF.
        header + self.data[header..].iter().position(|&b| b == b'\n').map_or(0, |p| p + 1)
    }
    /// The header start of argument `i`: just past the previous argument's CRLF.
    fn header_start(&self, ends: &[u32], i: usize) -> usize {
        if i == 0 {
            self.start as usize
        } else {
            ends[i - 1] as usize + 2
        }
    }
    /// The whole command as RESP, appended to `out`: the `*<n>` header and the buffer.
    pub fn write_resp(&self, out: &mut Vec<u8>) {
        let mut num = [0u8; 20];
        out.push(b'*');
        out.extend_from_slice(digits(&mut num, self.len()));
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.data[self.start as usize..]);
    }
    /// Append one argument made of several slices (a payload and its trailer) without
    /// joining them first.
    pub fn push_parts(&mut self, parts: &[&[u8]]) {
        let mut num = [0u8; 20];
        self.data.push(b'$');
        self.data.extend_from_slice(digits(&mut num, parts.iter().map(|p| p.len()).sum()));
        self.data.extend_from_slice(b"\r\n");
        for p in parts {
            self.data.extend_from_slice(p);
        }
        self.ends.push(self.data.len() as u32);
        self.data.extend_from_slice(b"\r\n");
    }
    /// The arguments as RESP bulk strings, without the `*<n>` header (to embed them in a
    /// longer command, such as a script's arguments).
    pub fn write_args_resp(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.data[self.start as usize..]);
    }
    pub fn len(&self) -> usize {
        self.ends.as_slice().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let ends = self.ends.as_slice();
        let end = *ends.get(i)? as usize;
        Some(&self.data[self.arg_start(self.header_start(ends, i))..end])
    }
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        let ends = self.ends.as_slice();
        (0..ends.len()).map(move |i| &self.data[self.arg_start(self.header_start(ends, i))..ends[i] as usize])
    }
    /// Bytes of the arguments as RESP bulk strings (the payload plus ~5 bytes each).
    pub fn byte_len(&self) -> usize {
        self.data.len() - self.start as usize
    }
    /// The command name, upper-cased.
    pub fn name_upper(&self) -> String {
        String::from_utf8_lossy(self.get(0).unwrap_or_default()).to_ascii_uppercase()
    }
}

impl std::fmt::Debug for Argv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter().map(super::cursor::show)).finish()
    }
}

/// A journal record (protocol doc 7.1), inline (inside 0xD2) or from the stable-sync stream.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalRecord {
    /// The db of the SELECT that preceded it.
    pub db: u32,
    pub txid: u64,
    pub kind: RecordKind,
    /// Empty for PING.
    pub argv: Argv,
    /// The record's LSN in stable sync; `None` for inline records of the full sync, whose
    /// LSNs lie below JOURNAL_OFFSET and are not acknowledged. The inline records of a v1.34
    /// partial resume do carry theirs (see [`FlowDecoder::partial_v134`](super::FlowDecoder)).
    pub lsn: Option<u64>,
}

/// Everything a flow decoder emits.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A header field (`0xFA`).
    Aux { name: Vec<u8>, value: Vec<u8> },
    /// A piece of a snapshot value.
    Value(ValuePiece),
    /// A journal record.
    Journal(JournalRecord),
    /// `0x0F`: the master's LSN marker; `expected` is the LSN of the record before it.
    LsnMark { announced: u64, expected: Option<u64> },
    /// `0xC8`: this shard's snapshot is complete.
    FullSyncEnd,
    /// `0xD3`: the LSN of the first stable-sync record.
    JournalOffset(u64),
    /// `0xFF`: end of the RDB part; the checksum (always 0 from Dragonfly).
    Eof { checksum: u64 },
    /// The 40-byte eof token after EOF; stable-sync records follow.
    Token(Vec<u8>),
    /// An item that was parsed and deliberately not replayed (HNSW index data, ...).
    Skipped { opcode: u8, bytes: u64 },
}

#[cfg(test)]
mod tests {
    use super::Argv;

    #[test]
    fn argv_keeps_its_arguments_as_resp() {
        let args: [&[u8]; 10] = [b"SET", b"", b"a\r\nb\n", b"x", b"1", b"2", b"3", b"4", b"5", &[0u8; 300]];
        let a = Argv::from_slices(&args);
        assert_eq!(a.len(), 10);
        for (i, want) in args.iter().enumerate() {
            assert_eq!(a.get(i), Some(*want), "arg {i}");
        }
        assert_eq!(a.iter().collect::<Vec<_>>(), args.to_vec());
        assert_eq!(a.get(10), None);
        let mut resp = Vec::new();
        a.write_resp(&mut resp);
        let mut want = Vec::new();
        crate::target::resp::encode(&mut want, args.iter().copied());
        assert_eq!(resp, want);
        let mut empty = Vec::new();
        Argv::default().write_resp(&mut empty);
        assert_eq!(empty, b"*0\r\n");
    }
}
