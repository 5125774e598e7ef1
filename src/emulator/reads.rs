//! The read commands the emulator answers, as a Dragonfly master does: the subset
//! `df2redis check` uses to compare a source with its copy (and that tests may use to look at
//! the emulator over the wire).
//!
//! `SCAN`, `DBSIZE`, `EXISTS`, `TYPE`, `PTTL`, `GET`, `STRLEN`, `GETRANGE`, `LLEN`, `LRANGE`,
//! `HLEN`, `HSCAN`, `SCARD`, `SSCAN`, `ZCARD`, `ZSCAN`, `XLEN`, `XRANGE`, `JSON.GET key` (the
//! whole document, no path), `MEMORY USAGE` (an
//! estimate: the bytes of the value plus 16 per element) and the keyspace section of `INFO`,
//! with Redis's reply shapes and index rules. Reads never change the data:
//! an expired key (or hash field / set member) is simply absent, as it is to a client of the
//! real master.
//!
//! Cursors (`SCAN`, `HSCAN`, `SSCAN`, `ZSCAN`) walk items in the order of a 48-bit hash of
//! their name, and a cursor is the hash to resume from (for `SCAN`, with the shard in the bits
//! above). That keeps Redis's guarantee under concurrent writes: an item present for the whole
//! iteration is returned at least once; some may be returned twice (equal hashes), none is
//! skipped, and the iteration always ends.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;

use super::commands::{parse_stream_id, NOT_INT, SYNTAX, WRONGTYPE};
use super::data::{now_ms, parse_i64, Entry, StreamId, Value};
use super::engine::Core;
use super::resp;

const HASH_BITS: u32 = 48;
const HASH_MASK: u64 = (1 << HASH_BITS) - 1;

/// The keys a read command names (for the cluster ownership check).
pub(super) fn keys<'a>(name: &str, args: &[&'a [u8]]) -> Vec<&'a [u8]> {
    match name {
        "SCAN" | "DBSIZE" => Vec::new(),
        "EXISTS" => args[1..].to_vec(),
        "MEMORY" => args.get(2).copied().into_iter().collect(),
        _ => args.get(1).copied().into_iter().collect(),
    }
}

/// Whether `name` (upper case) is a read command answered by [`execute`].
pub(super) fn is_read(name: &str) -> bool {
    matches!(
        name,
        "SCAN"
            | "DBSIZE"
            | "EXISTS"
            | "TYPE"
            | "PTTL"
            | "GET"
            | "STRLEN"
            | "GETRANGE"
            | "LLEN"
            | "LRANGE"
            | "HLEN"
            | "HSCAN"
            | "SCARD"
            | "SSCAN"
            | "ZCARD"
            | "ZSCAN"
            | "XLEN"
            | "XRANGE"
            | "MEMORY"
            | "JSON.GET"
    )
}

/// Run a read command in `db`; the reply, an error reply for bad input.
pub(super) fn execute(core: &Core, db: u32, args: &[&[u8]]) -> Vec<u8> {
    match run(core, db, args) {
        Ok(r) => r,
        Err(e) => resp::error(&e),
    }
}

fn wrong_args(args: &[&[u8]]) -> String {
    format!("ERR wrong number of arguments for '{}' command", String::from_utf8_lossy(args[0]).to_lowercase())
}

fn run(core: &Core, db: u32, args: &[&[u8]]) -> Result<Vec<u8>, String> {
    let name = String::from_utf8_lossy(args[0]).to_ascii_uppercase();
    let (min, max) = match name.as_str() {
        "DBSIZE" => (1, 1),
        "EXISTS" => (2, usize::MAX),
        "SCAN" => (2, 6),
        "GETRANGE" | "LRANGE" => (4, 4),
        "HSCAN" | "SSCAN" | "ZSCAN" => (3, 5),
        "XRANGE" => (4, 6),
        "MEMORY" => (3, 5),
        _ => (2, 2),
    };
    if args.len() < min || args.len() > max {
        return Err(wrong_args(args));
    }
    let now = now_ms();
    match name.as_str() {
        "DBSIZE" => {
            let n: usize = (0..core.cfg.shards)
                .map(|i| core.shard(i).dbs.get(&db).map_or(0, |ks| ks.values().filter(|e| !e.is_expired(now)).count()))
                .sum();
            return Ok(resp::int(n as i64));
        }
        "EXISTS" => {
            let n = args[1..].iter().filter(|k| with_key(core, db, k, |e| e.is_some())).count();
            return Ok(resp::int(n as i64));
        }
        "SCAN" => return scan(core, db, args),
        "MEMORY" if args[1].eq_ignore_ascii_case(b"USAGE") => {
            return Ok(with_key(core, db, args[2], |e| e.map_or(b"$-1\r\n".to_vec(), |e| resp::int(memory_usage(&e.value) as i64))));
        }
        "MEMORY" => return Err(SYNTAX.into()),
        _ => {}
    }
    let key = args[1];
    with_key(core, db, key, |e| match name.as_str() {
        "TYPE" => Ok(resp::simple(e.map_or("none", |e| e.value.type_name()))),
        "PTTL" => Ok(resp::int(match e {
            None => -2,
            Some(Entry { expire_at_ms: None, .. }) => -1,
            Some(Entry { expire_at_ms: Some(t), .. }) => t.saturating_sub(now) as i64,
        })),
        _ => typed(&name, args, e.map(|e| &e.value), now),
    })
}

/// Look `key` up in `db` under its shard's lock; expired keys are absent.
fn with_key<R>(core: &Core, db: u32, key: &[u8], f: impl FnOnce(Option<&Entry>) -> R) -> R {
    let sh = core.shard(core.shard_of(key));
    let now = now_ms();
    f(sh.dbs.get(&db).and_then(|ks| ks.get(key)).filter(|e| !e.is_expired(now)))
}

/// About the bytes a value takes: its payload plus 16 per element, plus a header.
fn memory_usage(v: &Value) -> usize {
    const E: usize = 16;
    64 + match v {
        Value::String(s) | Value::Json(s) => s.len(),
        Value::Opaque { bytes, .. } => bytes.len(),
        Value::List(l) => l.iter().map(|e| e.len() + E).sum(),
        Value::Set(m) => m.iter().map(|e| e.len() + E).sum(),
        Value::SetTtl(m) => m.keys().map(|e| e.len() + E).sum(),
        Value::Hash(h) => h.iter().map(|(f, v)| f.len() + v.len() + E).sum(),
        Value::HashTtl(h) => h.iter().map(|(f, (v, _))| f.len() + v.len() + E).sum(),
        Value::Zset(z) => z.keys().map(|m| m.len() + 8 + E).sum(),
        Value::Stream(s) => s.live().map(|(_, r)| r.fields.iter().map(|(f, v)| f.len() + v.len() + E).sum::<usize>() + E).sum(),
    }
}

fn int_arg(a: &[u8]) -> Result<i64, String> {
    parse_i64(a).ok_or_else(|| NOT_INT.to_string())
}

/// Redis's index rules for GETRANGE/LRANGE: negative indices count from the end; the result
/// is the inclusive range, or `None` when it is empty.
fn index_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let s = if start < 0 { (start + len).max(0) } else { start };
    let e = if end < 0 { end + len } else { end.min(len - 1) };
    (len > 0 && s <= e && s < len && e >= 0).then_some((s as usize, e as usize))
}

/// Options after the fixed arguments: `COUNT n` only.
fn count_option(opts: &[&[u8]]) -> Result<usize, String> {
    match opts {
        [] => Ok(10),
        [k, n] if k.eq_ignore_ascii_case(b"COUNT") => match parse_i64(n) {
            Some(n) if n >= 1 => Ok(n as usize),
            _ => Err(SYNTAX.into()),
        },
        _ => Err(SYNTAX.into()),
    }
}

fn cursor_arg(a: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(a).ok().and_then(|s| s.parse().ok()).ok_or_else(|| "ERR invalid cursor".to_string())
}

fn order(item: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(item);
    h.finish() & HASH_MASK
}

/// One page of a hash-ordered iteration: the items whose hash is at least `from`, up to
/// `count` of the smallest hashes (every item sharing the last hash included), and the hash
/// to resume from (`None` when nothing is left).
fn page<'a, T>(items: impl Iterator<Item = (&'a [u8], T)>, from: u64, count: usize) -> (Vec<(&'a [u8], T)>, Option<u64>) {
    let mut v: Vec<(u64, &'a [u8], T)> = items.map(|(k, t)| (order(k), k, t)).filter(|x| x.0 >= from).collect();
    let count = count.max(1);
    if v.len() <= count {
        return (v.into_iter().map(|x| (x.1, x.2)).collect(), None);
    }
    v.select_nth_unstable_by_key(count - 1, |x| x.0);
    let cut = v[count - 1].0;
    let out = v.into_iter().filter(|x| x.0 <= cut).map(|x| (x.1, x.2)).collect();
    (out, (cut < HASH_MASK).then_some(cut + 1))
}

fn scan(core: &Core, db: u32, args: &[&[u8]]) -> Result<Vec<u8>, String> {
    let cursor = cursor_arg(args[1])?;
    let count = count_option(&args[2..])?;
    let (shard, from) = ((cursor >> HASH_BITS) as usize, cursor & HASH_MASK);
    if shard >= core.cfg.shards {
        return Ok(resp::array(&[resp::bulk(b"0"), resp::array(&[])]));
    }
    let now = now_ms();
    let sh = core.shard(shard);
    let live = sh.dbs.get(&db).into_iter().flat_map(|ks| ks.iter()).filter(|(_, e)| !e.is_expired(now)).map(|(k, _)| (k.as_slice(), ()));
    let (keys, next) = page(live, from, count);
    let next = match next {
        Some(h) => ((shard as u64) << HASH_BITS) | h,
        None if shard + 1 < core.cfg.shards => (shard as u64 + 1) << HASH_BITS,
        None => 0,
    };
    let keys: Vec<Vec<u8>> = keys.into_iter().map(|(k, _)| resp::bulk(k)).collect();
    Ok(resp::array(&[resp::bulk(next.to_string().as_bytes()), resp::array(&keys)]))
}

fn scan_reply(items: Vec<Vec<u8>>, next: Option<u64>) -> Vec<u8> {
    let cursor = next.unwrap_or(0).to_string();
    resp::array(&[resp::bulk(cursor.as_bytes()), resp::array(&items)])
}

fn score_text(s: f64) -> String {
    if s.is_infinite() {
        if s > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        s.to_string()
    }
}

/// The type-specific commands, on the key's value (`None`: no such key).
fn typed(name: &str, args: &[&[u8]], v: Option<&Value>, now_ms: u64) -> Result<Vec<u8>, String> {
    let now_s = now_ms / 1000;
    let live = |t: &Option<u64>| t.is_none_or(|t| t > now_s);
    match (name, v) {
        ("GET", None) => Ok(b"$-1\r\n".to_vec()),
        ("GET", Some(Value::String(s))) => Ok(resp::bulk(s)),
        // The whole document (no path), as Dragonfly prints it; the emulator keeps that text.
        ("JSON.GET", None) => Ok(b"$-1\r\n".to_vec()),
        ("JSON.GET", Some(Value::Json(doc))) => Ok(resp::bulk(doc)),
        ("STRLEN", Some(Value::String(s))) => Ok(resp::int(s.len() as i64)),
        ("GETRANGE", v) => {
            let (start, end) = (int_arg(args[2])?, int_arg(args[3])?);
            match v {
                None => Ok(resp::bulk(b"")),
                Some(Value::String(s)) => Ok(resp::bulk(index_range(start, end, s.len()).map_or(&[][..], |(a, b)| &s[a..=b]))),
                Some(_) => Err(WRONGTYPE.into()),
            }
        }
        ("LLEN", Some(Value::List(l))) => Ok(resp::int(l.len() as i64)),
        ("LRANGE", v) => {
            let (start, end) = (int_arg(args[2])?, int_arg(args[3])?);
            match v {
                None => Ok(resp::array(&[])),
                Some(Value::List(l)) => {
                    let items = index_range(start, end, l.len()).map_or(Vec::new(), |(a, b)| l.range(a..=b).map(|e| resp::bulk(e)).collect());
                    Ok(resp::array(&items))
                }
                Some(_) => Err(WRONGTYPE.into()),
            }
        }
        ("HLEN", Some(Value::Hash(h))) => Ok(resp::int(h.len() as i64)),
        ("HLEN", Some(Value::HashTtl(h))) => Ok(resp::int(h.values().filter(|(_, t)| live(t)).count() as i64)),
        ("SCARD", Some(Value::Set(s))) => Ok(resp::int(s.len() as i64)),
        ("SCARD", Some(Value::SetTtl(s))) => Ok(resp::int(s.values().filter(|t| live(t)).count() as i64)),
        ("ZCARD", Some(Value::Zset(z))) => Ok(resp::int(z.len() as i64)),
        ("XLEN", Some(Value::Stream(s))) => Ok(resp::int(s.len() as i64)),
        ("STRLEN" | "LLEN" | "HLEN" | "SCARD" | "ZCARD" | "XLEN", None) => Ok(resp::int(0)),
        ("HSCAN" | "SSCAN" | "ZSCAN", v) => {
            let (from, count) = (cursor_arg(args[2])?, count_option(&args[3..])?);
            let pairs = |it: Vec<(&[u8], Vec<u8>)>| it.into_iter().flat_map(|(k, v)| [resp::bulk(k), v]).collect::<Vec<_>>();
            let (items, next) = match (name, v) {
                (_, None) => (Vec::new(), None),
                ("HSCAN", Some(Value::Hash(h))) => {
                    let (p, n) = page(h.iter().map(|(f, v)| (f.as_slice(), resp::bulk(v))), from, count);
                    (pairs(p), n)
                }
                ("HSCAN", Some(Value::HashTtl(h))) => {
                    let (p, n) = page(h.iter().filter(|(_, (_, t))| live(t)).map(|(f, (v, _))| (f.as_slice(), resp::bulk(v))), from, count);
                    (pairs(p), n)
                }
                ("SSCAN", Some(Value::Set(s))) => {
                    let (p, n) = page(s.iter().map(|m| (m.as_slice(), ())), from, count);
                    (p.into_iter().map(|(m, _)| resp::bulk(m)).collect(), n)
                }
                ("SSCAN", Some(Value::SetTtl(s))) => {
                    let (p, n) = page(s.iter().filter(|(_, t)| live(t)).map(|(m, _)| (m.as_slice(), ())), from, count);
                    (p.into_iter().map(|(m, _)| resp::bulk(m)).collect(), n)
                }
                ("ZSCAN", Some(Value::Zset(z))) => {
                    let (p, n) = page(z.iter().map(|(m, s)| (m.as_slice(), resp::bulk(score_text(*s).as_bytes()))), from, count);
                    (pairs(p), n)
                }
                _ => return Err(WRONGTYPE.into()),
            };
            Ok(scan_reply(items, next))
        }
        ("XRANGE", v) => {
            let start = match args[2] {
                b"-" => StreamId { ms: 0, seq: 0 },
                a => parse_stream_id(a)?,
            };
            let end = match args[3] {
                b"+" => StreamId { ms: u64::MAX, seq: u64::MAX },
                a if !a.contains(&b'-') => StreamId { ms: parse_stream_id(a)?.ms, seq: u64::MAX },
                a => parse_stream_id(a)?,
            };
            let count = if args.len() > 4 { count_option(&args[4..])? } else { usize::MAX };
            match v {
                None => Ok(resp::array(&[])),
                Some(Value::Stream(s)) => {
                    let entries: Vec<Vec<u8>> = s
                        .live()
                        .filter(|(id, _)| **id >= start && **id <= end)
                        .take(count)
                        .map(|(id, r)| {
                            let fields: Vec<Vec<u8>> = r.fields.iter().flat_map(|(f, v)| [resp::bulk(f), resp::bulk(v)]).collect();
                            resp::array(&[resp::bulk(id.to_string().as_bytes()), resp::array(&fields)])
                        })
                        .collect();
                    Ok(resp::array(&entries))
                }
                Some(_) => Err(WRONGTYPE.into()),
            }
        }
        (_, Some(_)) => Err(WRONGTYPE.into()),
        (other, None) => Err(format!("ERR unknown command '{other}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn index_ranges_follow_redis() {
        assert_eq!(index_range(0, -1, 5), Some((0, 4)));
        assert_eq!(index_range(-2, -1, 5), Some((3, 4)));
        assert_eq!(index_range(3, 100, 5), Some((3, 4)));
        assert_eq!(index_range(-100, 1, 5), Some((0, 1)));
        assert_eq!(index_range(4, 2, 5), None);
        assert_eq!(index_range(5, 9, 5), None);
        assert_eq!(index_range(0, -1, 0), None);
        assert_eq!(index_range(0, -6, 5), None);
    }

    #[test]
    fn pages_cover_every_item_and_end() {
        let items: Vec<Vec<u8>> = (0..1000).map(|i| format!("m{i}").into_bytes()).collect();
        let mut seen = BTreeSet::new();
        let (mut from, mut calls) = (0, 0);
        loop {
            let (p, next) = page(items.iter().map(|m| (m.as_slice(), ())), from, 64);
            assert!(p.len() >= 64 || next.is_none());
            seen.extend(p.into_iter().map(|(m, _)| m.to_vec()));
            calls += 1;
            match next {
                Some(n) => from = n,
                None => break,
            }
        }
        assert_eq!(seen.len(), 1000);
        assert!(calls <= 16, "{calls}");
    }
}
