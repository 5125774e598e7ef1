//! Test support: the shared fixtures, their expected data, real redis-server processes, and
//! reading a Redis dataset back for comparison.
#![allow(dead_code)]

pub mod capture_master;
pub mod capture_replay;
pub mod dragonfly_versions;
#[cfg(feature = "emulator")]
pub mod dragonfly_cluster;
#[cfg(feature = "emulator")]
pub mod emulator_model;
#[cfg(feature = "emulator")]
pub mod live;
pub mod redis_server;
pub mod run;
#[cfg(feature = "emulator")]
pub mod targets;
pub mod redis_cluster;
pub mod snapshots;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use df2redis::protocol::{
    rdb_type, FlowDecoder, Item, Limits, Piece, StreamGroup, StreamId, StreamMeta,
};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// The captures: `tests/fixtures` in the repo, or wherever `DF2REDIS_FIXTURES` points.
pub fn fixtures_root() -> PathBuf {
    std::env::var_os("DF2REDIS_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

/// The bytes of a fixture file: `path` itself, or `path.zst` decompressed (the repo keeps the
/// large captures zstd-compressed; a folder of plain files, such as the originals, works too).
pub fn read_fixture(path: &std::path::Path) -> Vec<u8> {
    if let Ok(b) = std::fs::read(path) {
        return b;
    }
    let mut zst = path.as_os_str().to_owned();
    zst.push(".zst");
    let file = std::fs::File::open(&zst)
        .unwrap_or_else(|e| panic!("fixture {} (or .zst): {e}", path.display()));
    let mut dec = ruzstd::decoding::StreamingDecoder::new(std::io::BufReader::new(file))
        .unwrap_or_else(|e| panic!("fixture {}.zst: {e}", path.display()));
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut dec, &mut out).unwrap_or_else(|e| panic!("fixture {}.zst: {e}", path.display()));
    out
}

/// Whether a fixture file exists, plain or compressed.
pub fn fixture_exists(path: &std::path::Path) -> bool {
    let mut zst = path.as_os_str().to_owned();
    zst.push(".zst");
    path.exists() || std::path::Path::new(&zst).exists()
}

pub struct Fixture {
    pub name: String,
    pub dir: PathBuf,
    pub session: Value,
}

impl Fixture {
    pub fn num_flows(&self) -> usize {
        self.session["num_flows"].as_u64().unwrap() as usize
    }
    pub fn flow_bytes(&self, i: usize) -> Vec<u8> {
        read_fixture(&self.dir.join(format!("flow-{i}.bin")))
    }
    pub fn token(&self, i: usize) -> Vec<u8> {
        self.session["flows"][i]["eof_token"].as_str().unwrap().as_bytes().to_vec()
    }
    pub fn lsn_at_end(&self, i: usize) -> u64 {
        self.session["master_lsn_at_end"][i].as_u64().unwrap()
    }
    pub fn expected(&self) -> Value {
        serde_json::from_slice(&read_fixture(&self.dir.join("expected.json"))).unwrap()
    }
    pub fn partial(&self) -> Option<Value> {
        let p = self.dir.join("partial.json");
        p.exists().then(|| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
    }
    pub fn partial_bytes(&self, i: usize) -> Vec<u8> {
        read_fixture(&self.dir.join(format!("partial-flow-{i}.bin")))
    }
    /// Decode flow `i` completely, feeding `step` bytes at a time.
    pub fn decode(&self, i: usize, step: usize) -> Vec<Item> {
        decode(&self.flow_bytes(i), Some(self.token(i)), step)
            .unwrap_or_else(|e| panic!("{} flow {i}: {e}", self.name))
    }
}

/// Every fixture folder, sorted by name.
pub fn fixtures() -> Vec<Fixture> {
    let root = fixtures_root();
    let mut v: Vec<Fixture> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("fixtures at {}: {e}", root.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("session.json").exists())
        .map(|e| {
            let dir = e.path();
            let session = serde_json::from_slice(&std::fs::read(dir.join("session.json")).unwrap()).unwrap();
            Fixture { name: e.file_name().to_string_lossy().into_owned(), dir, session }
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!v.is_empty(), "no fixtures under {}", root.display());
    v
}

pub fn decode(bytes: &[u8], token: Option<Vec<u8>>, step: usize) -> Result<Vec<Item>, df2redis::protocol::DecodeError> {
    let mut d = FlowDecoder::new(None, token, Limits::default());
    let mut out = Vec::new();
    for chunk in bytes.chunks(step.max(1)) {
        d.feed(chunk, &mut out)?;
    }
    d.finish()?;
    Ok(out)
}

/// Compare decoded snapshot keys with the master's data, key by key: every decoded key is
/// expected; a native one has the expected type, TTL (within 2 s) and value; a Dragonfly-only
/// one is counted. Keys for which `skip` holds are left out (keys a later write touched).
/// Every expected native key must have been decoded. Returns (native keys compared,
/// Dragonfly-only keys).
pub fn assert_decoded_equal(label: &str, decoded: &Dataset, expected: &Dataset, skip: impl Fn(&[u8]) -> bool) -> (usize, usize) {
    let (mut compared, mut df_only) = (0, 0);
    for (db, keys) in decoded {
        for (k, d) in keys {
            let name = format!("{label}: db {db} key {:?}", String::from_utf8_lossy(k));
            if skip(k) {
                continue;
            }
            let e = expected.get(db).and_then(|m| m.get(k)).unwrap_or_else(|| panic!("{name}: decoded but not expected"));
            if let Val::Other(_) = d.val {
                assert!(!NATIVE.contains(&e.ty.as_str()) || d.ty == "dragonfly-only", "{name}");
                df_only += 1;
                continue;
            }
            assert_eq!(d.ty, e.ty, "{name}: type");
            assert!((d.expire_at_ms - e.expire_at_ms).abs() <= 2000, "{name}: ttl {} vs {}", d.expire_at_ms, e.expire_at_ms);
            if let Some(diff) = diff_val(&e.val, &d.val) {
                panic!("{name}: {diff}");
            }
            compared += 1;
        }
    }
    for (db, keys) in expected {
        for (k, e) in keys {
            if NATIVE.contains(&e.ty.as_str()) && !skip(k) {
                assert!(
                    decoded.get(db).is_some_and(|m| m.contains_key(k)),
                    "{label}: db {db} key {:?} expected but not decoded",
                    String::from_utf8_lossy(k)
                );
            }
        }
    }
    assert!(compared > 0, "{label}: nothing compared");
    (compared, df_only)
}

/// Every db of `ds` merged into db 0, as a cluster target holds them (`--db-map N:0`); the
/// data sets the tests use have distinct key names across dbs, which this asserts.
pub fn merged(ds: Dataset) -> Dataset {
    let mut out = Dataset::new();
    for (_, keys) in ds {
        let db0 = out.entry(0).or_default();
        for (k, v) in keys {
            assert!(db0.insert(k, v).is_none(), "one key name in two dbs: merging would lose one");
        }
    }
    out
}

/// The snapshot's creation time (AUX `ctime`, Unix seconds) of a decoded flow.
pub fn ctime(items: &[Item]) -> u64 {
    items
        .iter()
        .find_map(|i| match i {
            Item::Aux { name, value } if name == b"ctime" => std::str::from_utf8(value).ok()?.parse().ok(),
            _ => None,
        })
        .expect("ctime AUX field")
}

// ---------------------------------------------------------------------------------------------
// Datasets: what expected.json holds and what we read back from Redis, in one model.

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: Vec<u8>,
    pub last_delivered_id: String,
    pub entries_read: Option<u64>,
    /// (id, consumer, delivery count)
    pub pending: Vec<(String, Vec<u8>, u64)>,
    pub consumers: BTreeSet<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    pub entries: Vec<(String, Vec<Vec<u8>>)>,
    pub last_id: String,
    pub entries_added: u64,
    pub max_deleted_id: String,
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Str(Vec<u8>),
    List(Vec<Vec<u8>>),
    Set(BTreeSet<Vec<u8>>),
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    /// In ZRANGE order: by score, then member.
    Zset(Vec<(Vec<u8>, f64)>),
    Stream(Stream),
    /// A type Redis cannot hold (Dragonfly-only); not compared.
    Other(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub ty: String,
    /// Absolute Unix ms, -1 for none.
    pub expire_at_ms: i64,
    pub val: Val,
}

pub type Dataset = BTreeMap<u32, BTreeMap<Vec<u8>, Key>>;

pub const NATIVE: &[&str] = &["string", "list", "set", "hash", "zset", "stream"];

pub fn b64(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        } as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn jbytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Object(o) => b64(o["b64"].as_str().unwrap()),
        Value::Number(n) => n.to_string().into_bytes(),
        other => panic!("not a byte string: {other}"),
    }
}

fn jkey(s: &str) -> Vec<u8> {
    match s.strip_prefix("b64:") {
        Some(b) => b64(b),
        None => s.as_bytes().to_vec(),
    }
}

pub fn score(s: &str) -> f64 {
    s.parse().unwrap_or_else(|_| panic!("score {s:?}"))
}

/// One section of expected.json (`at_startstable`, `final`, `after_partial_resume`).
pub fn parse_dataset(section: &Value) -> Dataset {
    let mut ds = Dataset::new();
    for (db, keys) in section.as_object().unwrap() {
        let m = ds.entry(db.parse().unwrap()).or_default();
        for (k, v) in keys.as_object().unwrap() {
            let ty = v["type"].as_str().unwrap().to_string();
            let val = &v["value"];
            let val = match ty.as_str() {
                "string" => Val::Str(jbytes(val)),
                "list" => Val::List(val.as_array().unwrap().iter().map(jbytes).collect()),
                "set" => Val::Set(val.as_array().unwrap().iter().map(jbytes).collect()),
                "hash" => Val::Hash(val.as_object().unwrap().iter().map(|(f, x)| (jkey(f), jbytes(x))).collect()),
                "zset" => Val::Zset(
                    val.as_array()
                        .unwrap()
                        .iter()
                        .map(|p| (jbytes(&p[0]), score(p[1].as_str().unwrap())))
                        .collect(),
                ),
                "stream" => Val::Stream(Stream {
                    entries: val
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| (e[0].as_str().unwrap().to_string(), e[1].as_array().unwrap().iter().map(jbytes).collect()))
                        .collect(),
                    last_id: v["last_id"].as_str().unwrap().to_string(),
                    entries_added: v["entries_added"].as_u64().unwrap(),
                    max_deleted_id: v["max_deleted_id"].as_str().unwrap().to_string(),
                    groups: v["groups"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|g| Group {
                            name: jbytes(&g["name"]),
                            last_delivered_id: g["last_delivered_id"].as_str().unwrap().to_string(),
                            entries_read: g["entries_read"].as_u64(),
                            pending: g["pending"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|p| (p[0].as_str().unwrap().to_string(), jbytes(&p[1]), p[2].as_u64().unwrap()))
                                .collect(),
                            consumers: g["consumers"].as_array().unwrap().iter().map(jbytes).collect(),
                        })
                        .collect(),
                }),
                other => Val::Other(other.to_string()),
            };
            m.insert(jkey(k), Key { ty, expire_at_ms: v["expire_at_ms"].as_i64().unwrap(), val });
        }
    }
    ds
}

/// Build the dataset a sequence of decoded snapshot pieces describes (no journal applied).
pub fn assemble_snapshot<'a>(items: impl Iterator<Item = &'a Item>) -> Dataset {
    let mut ds = Dataset::new();
    let mut meta: BTreeMap<(u32, Vec<u8>), StreamMeta> = BTreeMap::new();
    let mut groups: BTreeMap<(u32, Vec<u8>), Vec<StreamGroup>> = BTreeMap::new();
    for item in items {
        let Item::Value(v) = item else { continue };
        let h = &v.head;
        let native = match h.rdb_type {
            rdb_type::STRING => "string",
            rdb_type::LIST_QUICKLIST_2 => "list",
            rdb_type::SET | rdb_type::SET_INTSET | rdb_type::SET_WITH_EXPIRY => "set",
            rdb_type::HASH | rdb_type::HASH_LISTPACK | rdb_type::HASH_WITH_EXPIRY => "hash",
            rdb_type::ZSET_2 | rdb_type::ZSET_LISTPACK => "zset",
            rdb_type::STREAM_LISTPACKS_3 | rdb_type::STREAM_LISTPACKS_2 | rdb_type::STREAM_LISTPACKS => "stream",
            _ => "dragonfly-only",
        };
        let entry = ds.entry(h.db).or_default().entry(h.key.clone()).or_insert_with(|| Key {
            ty: native.to_string(),
            expire_at_ms: h.expire_at_ms.map_or(-1, |m| m as i64),
            val: match native {
                "string" => Val::Str(Vec::new()),
                "list" => Val::List(Vec::new()),
                "set" => Val::Set(BTreeSet::new()),
                "hash" => Val::Hash(BTreeMap::new()),
                "zset" => Val::Zset(Vec::new()),
                "stream" => Val::Stream(Stream {
                    entries: vec![],
                    last_id: String::new(),
                    entries_added: 0,
                    max_deleted_id: String::new(),
                    groups: vec![],
                }),
                _ => Val::Other(rdb_type::name(h.rdb_type).to_string()),
            },
        });
        match (&mut entry.val, &v.piece) {
            (Val::Str(s), Piece::String(p)) => s.extend_from_slice(p),
            (Val::List(l), Piece::ListElems(p)) => l.extend(p.iter().cloned()),
            (Val::Set(s), Piece::SetMembers(p)) => s.extend(p.iter().cloned()),
            (Val::Set(s), Piece::SetMembersTtl(p)) => s.extend(p.iter().map(|(m, _)| m.clone())),
            (Val::Hash(m), Piece::HashFields(p)) => m.extend(p.iter().cloned()),
            (Val::Hash(m), Piece::HashFieldsTtl(p)) => m.extend(p.iter().map(|(f, x, _)| (f.clone(), x.clone()))),
            (Val::Zset(z), Piece::ZsetMembers(p)) => z.extend(p.iter().cloned()),
            (Val::Stream(s), Piece::StreamEntries(p)) => {
                s.entries.extend(p.iter().map(|e| (e.id.to_string(), e.fields.clone())))
            }
            (Val::Stream(_), Piece::StreamMeta(m)) => {
                meta.insert((h.db, h.key.clone()), m.clone());
            }
            (Val::Stream(_), Piece::StreamGroup(g)) => groups.entry((h.db, h.key.clone())).or_default().push(g.clone()),
            (Val::Other(_), _) => {}
            (val, piece) => panic!("piece {piece:?} does not fit {val:?}"),
        }
    }
    for (db, keys) in ds.iter_mut() {
        for (k, key) in keys.iter_mut() {
            match &mut key.val {
                Val::Zset(z) => sort_zset(z),
                Val::Stream(s) => {
                    let m = &meta[&(*db, k.clone())];
                    s.last_id = m.last_id.to_string();
                    s.entries_added = m.entries_added;
                    s.max_deleted_id = m.max_deleted_id.to_string();
                    s.groups = groups.remove(&(*db, k.clone())).unwrap_or_default().iter().map(group_of).collect();
                }
                _ => {}
            }
        }
    }
    ds
}

fn group_of(g: &StreamGroup) -> Group {
    Group {
        name: g.name.clone(),
        last_delivered_id: g.last_id.to_string(),
        entries_read: g.entries_read,
        pending: g
            .pending
            .iter()
            .map(|p| (p.id.to_string(), p.consumer.clone().unwrap_or_default(), p.delivery_count))
            .collect(),
        consumers: g.consumers.iter().map(|c| c.name.clone()).collect(),
    }
}

pub fn sort_zset(z: &mut [(Vec<u8>, f64)]) {
    z.sort_by(|a, b| a.1.partial_cmp(&b.1).unwrap().then_with(|| a.0.cmp(&b.0)));
}

pub fn stream_id(s: &str) -> StreamId {
    let (ms, seq) = s.split_once('-').unwrap();
    StreamId { ms: ms.parse().unwrap(), seq: seq.parse().unwrap() }
}

/// Compare two values; `None` when equal. Stream group `entries_read` is compared only when
/// the expected side knows it (Dragonfly reports it as null).
pub fn diff_val(exp: &Val, act: &Val) -> Option<String> {
    match (exp, act) {
        (Val::Stream(e), Val::Stream(a)) => {
            let mut e = e.clone();
            for (ge, ga) in e.groups.iter_mut().zip(&a.groups) {
                if ge.entries_read.is_none() || ga.entries_read == Some(redis_server::NOT_HELD) {
                    ge.entries_read = ga.entries_read;
                }
            }
            // A target before Redis 7.0 holds neither (the replay counts them as altered).
            if a.entries_added == redis_server::NOT_HELD {
                e.entries_added = a.entries_added;
                e.max_deleted_id = a.max_deleted_id.clone();
            }
            (e != *a).then(|| format!("stream differs:\n  expected {:?}\n  actual   {:?}", short(&e), short(a)))
        }
        _ => (exp != act).then(|| format!("expected {:.300}\n  actual   {:.300}", format!("{exp:?}"), format!("{act:?}"))),
    }
}

fn short(s: &Stream) -> String {
    format!(
        "{} entries (first {:?}, last {:?}), last_id {}, added {}, max_deleted {}, groups {:?}",
        s.entries.len(),
        s.entries.first().map(|e| &e.0),
        s.entries.last().map(|e| &e.0),
        s.last_id,
        s.entries_added,
        s.max_deleted_id,
        s.groups
    )
}

// ---------------------------------------------------------------------------------------------
// Replaying captures late

/// Absolute expiry times that snapshot entries carry and journal records set: `(db, key, unix ms)`.
pub fn absolute_ttls(items: &[Item]) -> Vec<(u32, Vec<u8>, i64)> {
    let mut out = Vec::new();
    for it in items {
        // Snapshot entries carry absolute expiries too.
        if let Item::Value(v) = it {
            if let (true, Some(ms)) = (v.first, v.head.expire_at_ms) {
                out.push((v.head.db, v.head.key.clone(), ms as i64));
            }
            continue;
        }
        let Item::Journal(r) = it else { continue };
        let a: Vec<&[u8]> = r.argv.iter().collect();
        let num = |b: &[u8]| std::str::from_utf8(b).ok().and_then(|s| s.parse::<i64>().ok());
        let name = r.argv.name_upper();
        let mut push = |t: Option<i64>| {
            if let (Some(t), Some(k)) = (t, a.get(1)) {
                out.push((r.db, k.to_vec(), t));
            }
        };
        match name.as_str() {
            "PEXPIREAT" => push(a.get(2).and_then(|b| num(b))),
            "EXPIREAT" => push(a.get(2).and_then(|b| num(b)).map(|s| s * 1000)),
            "RESTORE" => push(a.get(2).and_then(|b| num(b)).filter(|&t| t > 0)),
            "SET" => {
                for w in a.windows(2).skip(3) {
                    if w[0].eq_ignore_ascii_case(b"PXAT") {
                        push(num(w[1]));
                    } else if w[0].eq_ignore_ascii_case(b"EXAT") {
                        push(num(w[1]).map(|s| s * 1000));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Keys the tests do not judge: an absolute expiry they carried (snapshot or record) had passed
/// when the test replayed them, while on the master, at capture time, it had not. What happens
/// next depends on how late the capture is replayed: the key may vanish early, and a later
/// record may then recreate it without its TTL or fail on it. A live replica applies such
/// records within milliseconds; the test replays them hours later.
pub fn late_ttl_keys(ttls: &[(u32, Vec<u8>, i64)], expected: &Dataset) -> std::collections::BTreeSet<(u32, Vec<u8>)> {
    let now = redis_server::now_ms();
    ttls.iter()
        .filter(|(db, k, t)| *t < now + 2000 && expected.get(db).is_some_and(|m| m.contains_key(k)))
        .map(|(db, k, _)| (*db, k.clone()))
        .collect()
}


// ---------------------------------------------------------------------------------------------
// Field and member TTLs (types 31/32) that pass after the capture

/// Absolute expiry (Unix seconds) of every hash field / set member that has one in the
/// snapshot: (db, key) -> member -> seconds.
pub type MemberTtls = BTreeMap<(u32, Vec<u8>), BTreeMap<Vec<u8>, i64>>;

pub fn member_ttls(items: &[Item]) -> MemberTtls {
    let mut out = MemberTtls::new();
    for it in items {
        let Item::Value(v) = it else { continue };
        let key = (v.head.db, v.head.key.clone());
        match &v.piece {
            Piece::HashFieldsTtl(f) => {
                out.entry(key).or_default().extend(f.iter().filter_map(|(f, _, t)| t.map(|t| (f.clone(), t))))
            }
            Piece::SetMembersTtl(m) => {
                out.entry(key).or_default().extend(m.iter().filter_map(|(m, t)| t.map(|t| (m.clone(), t))))
            }
            _ => {}
        }
    }
    out
}

/// df2redis running on the real clock leaves out fields and members whose TTL has passed, as
/// Dragonfly's own loader does; the master's data (read at capture time) still had them.
/// Remove those from `expected` (and keys left empty); `db_of` maps a source db to the
/// expected dataset's db (identity, or 0 for a merged cluster dataset).
pub fn drop_expired_members(expected: &mut Dataset, ttls: &MemberTtls, db_of: impl Fn(u32) -> u32) {
    let now_s = redis_server::now_ms() / 1000;
    for ((db, key), members) in ttls {
        let Some(keys) = expected.get_mut(&db_of(*db)) else { continue };
        let Some(k) = keys.get_mut(key) else { continue };
        let gone = |m: &Vec<u8>| members.get(m).is_some_and(|&t| t <= now_s + 1);
        let empty = match &mut k.val {
            Val::Hash(h) => {
                h.retain(|f, _| !gone(f));
                h.is_empty()
            }
            Val::Set(s) => {
                s.retain(|m| !gone(m));
                s.is_empty()
            }
            _ => false,
        };
        if empty {
            keys.remove(key);
        }
    }
}
