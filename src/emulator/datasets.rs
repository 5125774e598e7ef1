//! Deterministic datasets for the tests, the demo and the benchmark, loaded with
//! [`Emulator::load`] (no journal). A hand-written splitmix64 keeps them reproducible without a
//! random-number crate.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::data::{now_ms, Consumer, Entry, Group, Pending, Stream, StreamId, Value};
use super::encode::puint;
use super::{Dialect, Emulator};
use crate::protocol::items::rdb_type as t;

/// splitmix64: tiny, fast, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Random bytes (incompressible).
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
    /// Random printable text (compresses a little, like real values).
    pub fn text(&mut self, n: usize) -> Vec<u8> {
        const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        (0..n).map(|_| ALPHA[self.below(ALPHA.len() as u64) as usize]).collect()
    }
}

fn s(v: &str) -> Vec<u8> {
    v.as_bytes().to_vec()
}

fn string(v: impl Into<Vec<u8>>) -> Entry {
    Entry::new(Value::String(v.into()))
}

/// Every type and encoding the emulator serializes, over dbs 0-2: integer-edge, binary,
/// empty, compressible, random and 5 MB strings; TTLs from seconds to hours ahead; a sticky
/// key; lists small, of integers, with a 20 KB element (PLAIN node) and of ~10 MB (tagged
/// chunks); intsets of 16- and 64-bit members, small and big sets; small and big hashes;
/// zsets with infinities, fractional and precise scores, small and big; streams with deleted
/// entries, differing fields, consumer groups, PELs and consumers, and a big one; JSON
/// documents ([`json_documents`], and one of 1 MB); field
/// and member TTLs; and the Dragonfly-only opaque types of the emulated release.
pub fn type_coverage(emu: &Emulator) {
    every_type(emu);
    let mut r = Rng::new(8);
    emu.load(0, b"str:5mb", string(r.bytes(5 << 20)));
    let big: VecDeque<Vec<u8>> = (0..40_000)
        .map(|i| {
            let mut e = format!("element-{i:08}-").into_bytes();
            e.extend(r.text(240));
            e
        })
        .collect();
    emu.load(0, b"list:10mb", Entry::new(Value::List(big)));
    emu.load(0, b"json:1mb", Entry::new(Value::Json(json_1mb())));
}

/// JSON documents as Dragonfly prints them (its `SaveJsonObject` writes `to_string()` of the
/// jsoncons document as one RDB string, never split across chunks): compact; object members in
/// sorted order (Dragonfly's documents use jsoncons' `sorted_policy`); doubles in shortest
/// round-trip form with `.0` when integral; `"`, `\` and `\b \f \n \r \t` escaped short,
/// other control characters as `\u00XX` (upper-case hex), `/` and non-ASCII UTF-8 as they are.
/// Top-level scalars too (`42` goes out integer-encoded, as any short numeric string does).
pub fn json_documents(emu: &Emulator) {
    let ld = |db: u32, k: &str, e: Entry| emu.load(db, k.as_bytes(), e);
    let doc = |t: &str| Entry::new(Value::Json(s(t)));
    ld(0, "json:1", doc(r#"{"a":1,"b":[1,2,{"c":"x"}],"d":null,"e":1.5}"#));
    ld(0, "json:nested", doc(r#"{"a":[[1,[2,[3,[]]]],{"b":{"c":{"d":[null,{}]}}}],"z":[]}"#));
    ld(
        0,
        "json:numbers",
        doc(r#"{"f":[1.5,-0.25,90.33333333333333,3.141592653589793,100.0,0.1],"i":[0,-1,9223372036854775807,-9223372036854775808],"z":0.0}"#),
    );
    ld(
        0,
        "json:text",
        doc(r#"{"empty":"","escapes":"q\" b\\ s/ n\n t\t r\r b\b f\f c\u0001\u001F","unicode":"héllo wörld 日本語 😀"}"#),
    );
    ld(0, "json:array", doc(r#"[1,"two",null,true,false,{"k":"v"}]"#));
    ld(0, "json:string", doc(r#""just a string""#));
    ld(0, "json:number", doc("42"));
    ld(0, "json:ttl", Entry::with_expiry(Value::Json(s(r#"{"t":1}"#)), now_ms() + 3_600_000));
    ld(1, "db1:json", doc(r#"{"db":1}"#));
}

/// A document of a little over 1 MiB: an array of small objects with doubles and non-ASCII
/// text. Dragonfly sends it as one RDB string (one entry, never tagged).
pub fn json_1mb() -> Vec<u8> {
    let mut out = String::from(r#"{"items":["#);
    let mut i = 0u32;
    while out.len() < (1 << 20) {
        if i > 0 {
            out.push(',');
        }
        // `{:?}` is Rust's shortest round-trip form with `.0` kept, as jsoncons prints them.
        out.push_str(&format!(r#"{{"id":{i},"name":"item-{i:06}-ü","tags":["a","b/c"],"v":{:?}}}"#, f64::from(i) / 8.0));
        i += 1;
    }
    out.push_str("]}");
    out.into_bytes()
}

/// [`type_coverage`] without its two big values (5 MB string, 10 MB list): every type and
/// encoding in about 1 MB, for tests that run many configurations. With a small
/// `chunk_size` its big sets, hashes, zsets, lists and streams are still split into chunks.
pub fn every_type(emu: &Emulator) {
    let mut r = Rng::new(7);
    let now = now_ms();
    let ld = |db: u32, k: &str, e: Entry| emu.load(db, k.as_bytes(), e);

    for (i, v) in [
        "0",
        "-1",
        "127",
        "128",
        "-128",
        "-129",
        "32767",
        "32768",
        "-32768",
        "-32769",
        "2147483647",
        "2147483648",
        "-2147483648",
        "-2147483649",
        "9223372036854775807",
        "007",
        "+1",
        "1.5",
        "-0",
        " 1",
    ]
    .iter()
    .enumerate()
    {
        ld(0, &format!("str:int:{i}"), string(s(v)));
    }
    ld(0, "str:plain", string(s("hello world")));
    ld(0, "str:empty", string(Vec::new()));
    ld(0, "str:binary", string((0..=255u8).collect::<Vec<u8>>()));
    ld(0, "str:compressible", string(b"abcdefgh".repeat(12_500)));
    ld(0, "str:random", string(r.bytes(100_000)));
    ld(0, "str:ttl:seconds", Entry::with_expiry(Value::String(s("soon")), now + 30_000));
    ld(0, "str:ttl:hours", Entry::with_expiry(Value::String(s("later")), now + 5 * 3_600_000));
    ld(0, "str:sticky", Entry { value: Value::String(s("pinned")), expire_at_ms: None, sticky: true });

    ld(0, "list:small", Entry::new(Value::List([s("a"), s("1"), s("-300"), s(""), s("b")].into())));
    ld(
        0,
        "list:ints",
        Entry::new(Value::List((0..3000).map(|i: i64| (i * 7919 - 10_000_000).to_string().into_bytes()).collect())),
    );
    ld(0, "list:bigelem", Entry::new(Value::List([s("x"), r.bytes(20_000), s("y")].into())));

    ld(
        0,
        "set:intset16",
        Entry::new(Value::Set((0..50).map(|i: i64| (i * 3 - 70).to_string().into_bytes()).collect())),
    );
    ld(
        0,
        "set:intset64",
        Entry::new(Value::Set((0..20).map(|i: i64| (i * 1_000_000_000_007 - 5).to_string().into_bytes()).collect())),
    );
    ld(0, "set:small", Entry::new(Value::Set([s("a"), s("b"), s("c")].into())));
    ld(0, "set:big", Entry::new(Value::Set((0..5000).map(|i| format!("member:{i:06}").into_bytes()).collect())));

    ld(0, "hash:small", Entry::new(Value::Hash([(s("f1"), s("v1")), (s("f2"), s("2")), (s("n"), s("-7"))].into())));
    ld(0, "hash:longvalue", Entry::new(Value::Hash([(s("f"), vec![b'v'; 100])].into())));
    ld(
        0,
        "hash:big",
        Entry::new(Value::Hash((0..2000).map(|i| (format!("field:{i:05}").into_bytes(), r.text(24))).collect())),
    );

    ld(
        0,
        "zset:small",
        Entry::new(Value::Zset(
            [
                (s("a"), 1.0),
                (s("b"), 2.5),
                (s("c"), -3.0),
                (s("d"), 0.1),
                (s("pinf"), f64::INFINITY),
                (s("ninf"), f64::NEG_INFINITY),
            ]
            .into(),
        )),
    );
    ld(
        0,
        "zset:precise",
        Entry::new(Value::Zset((0..200).map(|i| (format!("m{i}").into_bytes(), i as f64 / 7.0 + 1e-9)).collect())),
    );
    ld(
        0,
        "zset:big",
        Entry::new(Value::Zset(
            (0..3000).map(|i| (format!("member:{i:06}").into_bytes(), (i % 97) as f64 * 1.5)).collect(),
        )),
    );

    ld(0, "stream:small", Entry::new(Value::Stream(small_stream(now))));
    ld(0, "stream:big", Entry::new(Value::Stream(big_stream(&mut r, 2000))));
    json_documents(emu);
    let secs = now / 1000;
    ld(
        0,
        "hashttl:1",
        Entry::new(Value::HashTtl(
            [
                (s("f1"), (s("v1"), Some(secs + 3600))),
                (s("f2"), (s("v2"), None)),
                (s("f3"), (s("3"), Some(secs + 7200))),
            ]
            .into(),
        )),
    );
    ld(
        0,
        "setttl:1",
        Entry::new(Value::SetTtl([(s("m1"), Some(secs + 3600)), (s("m2"), None), (s("7"), Some(secs + 60))].into())),
    );

    match emu.config().dialect {
        Dialect::V1_40 => {
            ld(0, "bf:1", opaque(t::SBF2, sbf2(&mut r)));
            ld(0, "cms:1", opaque(t::CMS, cms(&mut r)));
            ld(0, "topk:1", opaque(t::TOPK, topk(&mut r)));
            ld(0, "cf:1", opaque(t::CUCKOO, cuckoo(&mut r)));
        }
        Dialect::V1_34 | Dialect::V1_36 => ld(0, "bf:1", opaque(t::SBF, sbf(&mut r))),
    }

    ld(1, "db1:hash", Entry::new(Value::Hash([(s("k"), s("v"))].into())));
    ld(1, "db1:str", Entry::with_expiry(Value::String(s("in db1")), now + 3_600_000));
    ld(1, "db1:list", Entry::new(Value::List((0..100).map(|i| format!("item-{i}").into_bytes()).collect())));
    ld(2, "db2:set", Entry::new(Value::Set((1..=10).map(|i: i64| i.to_string().into_bytes()).collect())));
    ld(2, "db2:zset", Entry::new(Value::Zset([(s("x"), 42.0)].into())));
}

fn sid(ms: u64, seq: u64) -> StreamId {
    StreamId { ms, seq }
}

/// 21 entries (some deleted, some with their own fields), two groups with pending entries.
fn small_stream(now: u64) -> Stream {
    let mut st = Stream::default();
    let base = 1_700_000_000_000;
    for i in 0..21u64 {
        let fields = if i % 5 == 4 {
            vec![(s("other"), format!("o{i}").into_bytes()), (s("x"), s("y"))]
        } else {
            vec![(s("f"), format!("v{i}").into_bytes()), (s("n"), i.to_string().into_bytes())]
        };
        st.add(sid(base + i / 3, i % 3), fields);
    }
    for i in [2u64, 7, 8] {
        st.delete(sid(base + i / 3, i % 3));
    }
    let pel: BTreeMap<StreamId, Pending> = [
        (sid(base, 0), Pending { consumer: s("alice"), delivery_time_ms: now - 5000, delivery_count: 1 }),
        (sid(base, 1), Pending { consumer: s("bob"), delivery_time_ms: now - 4000, delivery_count: 3 }),
        (sid(base + 1, 0), Pending { consumer: s("alice"), delivery_time_ms: now - 3000, delivery_count: 2 }),
    ]
    .into();
    st.groups.push(Group {
        name: s("g1"),
        last_id: sid(base + 1, 0),
        entries_read: 4,
        pel,
        consumers: vec![
            Consumer { name: s("alice"), seen_time_ms: now - 3000, active_time_ms: now - 3000 },
            Consumer { name: s("bob"), seen_time_ms: now - 4000, active_time_ms: now - 4000 },
            Consumer { name: s("idle"), seen_time_ms: now - 9000, active_time_ms: now - 9000 },
        ],
    });
    st.groups.push(Group {
        name: s("g2"),
        last_id: StreamId::default(),
        entries_read: -1,
        pel: BTreeMap::new(),
        consumers: Vec::new(),
    });
    st
}

fn big_stream(r: &mut Rng, n: u64) -> Stream {
    let mut st = Stream::default();
    for i in 0..n {
        st.add(
            sid(1_700_000_000_000 + i, 0),
            vec![(s("sensor"), format!("s{}", i % 10).into_bytes()), (s("value"), r.text(20))],
        );
    }
    st
}

fn opaque(rdb_type: u8, bytes: Vec<u8>) -> Entry {
    Entry::new(Value::Opaque { rdb_type, bytes })
}

/// Raw filter bytes as chunks `PUINT(len) bytes` until `total` (SBF2/Cuckoo layout).
fn chunked(out: &mut Vec<u8>, data: &[u8], chunk: usize) {
    puint(out, data.len() as u64);
    for c in data.chunks(chunk) {
        puint(out, c.len() as u64);
        out.extend_from_slice(c);
    }
}

fn sbf_header(out: &mut Vec<u8>) {
    puint(out, 0); // options
    out.extend_from_slice(&2.0f64.to_le_bytes()); // grow factor
    out.extend_from_slice(&0.01f64.to_le_bytes()); // false-positive probability
    puint(out, 0); // prev size
    puint(out, 50); // current size
    puint(out, 1000); // max capacity
    puint(out, 1); // filters
    puint(out, 7); // hash count of the filter
}

/// A scalable Bloom filter, chunked layout (type 34, v1.39+ default).
pub fn sbf2(r: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    sbf_header(&mut out);
    chunked(&mut out, &r.bytes(2048), 1024);
    out
}

/// A scalable Bloom filter, one RDB string per filter (type 33, v1.36).
pub fn sbf(r: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    sbf_header(&mut out);
    super::encode::rstr_plain(&mut out, &r.bytes(2048));
    out
}

/// A count-min sketch 100 x 4 (type 35).
pub fn cms(r: &mut Rng) -> Vec<u8> {
    let (width, depth) = (100u64, 4u64);
    let mut out = Vec::new();
    puint(&mut out, width);
    puint(&mut out, depth);
    puint(&mut out, 10);
    for _ in 0..width * depth {
        out.extend_from_slice(&(r.below(3) as i64).to_le_bytes());
    }
    out
}

/// A top-k of k=3, 8 x 7 counters (type 36).
pub fn topk(r: &mut Rng) -> Vec<u8> {
    let (k, width, depth) = (3u64, 8u64, 7u64);
    let mut out = Vec::new();
    for v in [0, k, width, depth] {
        puint(&mut out, v);
    }
    out.extend_from_slice(&0.9f64.to_le_bytes());
    puint(&mut out, 3);
    for (item, count) in [("b", 1u64), ("a", 0), ("c", 0)] {
        super::encode::rstr_plain(&mut out, item.as_bytes());
        puint(&mut out, count);
    }
    let counters: Vec<u8> = (0..width * depth).flat_map(|_| (r.below(4) as u32).to_le_bytes()).collect();
    super::encode::rstr_plain(&mut out, &counters);
    out
}

/// A cuckoo filter with one 1 KiB filter (type 37).
pub fn cuckoo(r: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [2u64, 20, 1, 512, 1, 0] {
        puint(&mut out, v); // slots/bucket, max iterations, expansion, buckets, items, deletes
    }
    puint(&mut out, 1);
    chunked(&mut out, &r.bytes(1024), 1024);
    out
}

/// `n` strings with 16-byte keys (`key:000000000042`) and 32-byte values (bench `small`).
pub fn small(emu: &Emulator, n: usize) {
    let mut r = Rng::new(1);
    for i in 0..n {
        emu.load(0, format!("key:{i:012}").as_bytes(), string(r.text(32)));
    }
}

/// `n` hashes of `fields` fields each (16-byte field names, 32-byte values).
pub fn hashes(emu: &Emulator, n: usize, fields: usize) {
    let mut r = Rng::new(2);
    for i in 0..n {
        let h: BTreeMap<Vec<u8>, Vec<u8>> =
            (0..fields).map(|f| (format!("field:{f:010}").into_bytes(), r.text(32))).collect();
        emu.load(0, format!("hash:{i:011}").as_bytes(), Entry::new(Value::Hash(h)));
    }
}

/// `n` lists of `elems` 32-byte elements each.
pub fn lists(emu: &Emulator, n: usize, elems: usize) {
    let mut r = Rng::new(3);
    for i in 0..n {
        let l: VecDeque<Vec<u8>> = (0..elems).map(|_| r.text(32)).collect();
        emu.load(0, format!("list:{i:011}").as_bytes(), Entry::new(Value::List(l)));
    }
}

/// `n` strings of `bytes` random bytes each.
pub fn big(emu: &Emulator, n: usize, bytes: usize) {
    let mut r = Rng::new(4);
    for i in 0..n {
        emu.load(0, format!("big:{i:012}").as_bytes(), string(r.bytes(bytes)));
    }
}

/// Sets of `members` members (mixed integer and text), for completeness of the generators.
pub fn sets(emu: &Emulator, n: usize, members: usize) {
    let mut r = Rng::new(5);
    for i in 0..n {
        let set: BTreeSet<Vec<u8>> =
            (0..members).map(|m| if m % 2 == 0 { m.to_string().into_bytes() } else { r.text(16) }).collect();
        emu.load(0, format!("set:{i:012}").as_bytes(), Entry::new(Value::Set(set)));
    }
}
