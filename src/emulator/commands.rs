//! The Redis semantics of the write commands the emulator accepts.
//!
//! [`apply`] executes a single-key command on a [`Keyspace`] and returns the command as
//! Dragonfly would journal it (protocol doc 7.5: `SET … PXAT`, `PEXPIREAT`, `DEL` for an
//! elapsed TTL, explicit XADD IDs), or nothing when the command changed nothing. Routing,
//! multi-key splitting, lazy expiry and journaling live in `engine`; everything here is pure
//! and single-threaded. Bad input is an error reply, never a panic.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::data::{parse_i64, Entry, Group, Keyspace, Stream, StreamId, Value};

pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
pub const NOT_INT: &str = "ERR value is not an integer or out of range";
pub const SYNTAX: &str = "ERR syntax error";

/// The command as it goes to the journal (argv, command name first).
pub type Argv = Vec<Vec<u8>>;

fn int_arg(s: &[u8]) -> Result<i64, String> {
    parse_i64(s).ok_or_else(|| NOT_INT.to_string())
}

/// A score as ZADD/ZINCRBY accept it: a float, `inf`, `+inf`, `-inf`; never NaN.
pub fn parse_score(s: &[u8]) -> Result<f64, String> {
    let t = std::str::from_utf8(s).map_err(|_| "ERR value is not a valid float".to_string())?;
    let v = match t.to_ascii_lowercase().as_str() {
        "inf" | "+inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        _ => t.parse::<f64>().map_err(|_| "ERR value is not a valid float".to_string())?,
    };
    if v.is_nan() {
        return Err("ERR value is not a valid float".into());
    }
    Ok(v)
}

/// A stream ID argument: `ms-seq` or `ms` (seq 0).
pub fn parse_stream_id(s: &[u8]) -> Result<StreamId, String> {
    let bad = || "ERR Invalid stream ID specified as stream command argument".to_string();
    let t = std::str::from_utf8(s).map_err(|_| bad())?;
    let (ms, seq) = match t.split_once('-') {
        Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
        None => (t.parse().map_err(|_| bad())?, 0),
    };
    Ok(StreamId { ms, seq })
}

pub fn id_arg(id: StreamId) -> Vec<u8> {
    id.to_string().into_bytes()
}

fn upper(s: &[u8]) -> String {
    String::from_utf8_lossy(s).to_ascii_uppercase()
}

/// The command as journaled: verbatim, with the name upper-cased as Dragonfly registers it.
fn owned(args: &[&[u8]]) -> Argv {
    let mut v: Argv = args.iter().map(|a| a.to_vec()).collect();
    v[0].make_ascii_uppercase();
    v
}

fn arity(args: &[&[u8]], min: usize, pairs_after: Option<usize>) -> Result<(), String> {
    let bad = args.len() < min || pairs_after.is_some_and(|from| args.len() < from || (args.len() - from) % 2 != 0);
    if bad {
        return Err(format!(
            "ERR wrong number of arguments for '{}' command",
            String::from_utf8_lossy(args[0]).to_lowercase()
        ));
    }
    Ok(())
}

/// Whether a command name is a write the emulator executes, and how its keys are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One key at `argv[1]`.
    Single,
    /// Keys at `argv[1..]` (DEL, UNLINK).
    Keys,
    /// Key-value pairs at `argv[1..]` (MSET).
    Pairs,
    /// Journaled on every shard (FLUSHDB, FLUSHALL).
    Global,
    /// Two keys on one shard, journaled verbatim (RENAME, RENAMENX). Dragonfly journals a
    /// cross-shard RENAME as DEL + RESTORE; the emulator does not emulate that form.
    Rename,
}

pub fn shape(name: &str) -> Option<Shape> {
    Some(match name {
        "SET" | "INCR" | "INCRBY" | "DECR" | "DECRBY" | "APPEND" | "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT"
        | "PERSIST" | "HSET" | "HDEL" | "HINCRBY" | "LPUSH" | "RPUSH" | "LPOP" | "RPOP" | "SADD" | "SREM" | "ZADD"
        | "ZREM" | "ZINCRBY" | "XADD" | "XDEL" | "XGROUP" | "XACK" | "HSETEX" | "SADDEX" | "STICK" | "JSON.SET" | "JSON.DEL"
        | "JSON.FORGET" => Shape::Single,
        "DEL" | "UNLINK" => Shape::Keys,
        "MSET" => Shape::Pairs,
        "FLUSHDB" | "FLUSHALL" => Shape::Global,
        "RENAME" | "RENAMENX" => Shape::Rename,
        _ => return None,
    })
}

/// The keys of a write command, by its [`Shape`] (for the cluster ownership check).
pub fn keys<'a>(args: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let name = upper(args.first().copied().unwrap_or_default());
    let rest = args.get(1..).unwrap_or_default();
    match shape(&name) {
        Some(Shape::Single) if name == "XGROUP" => rest.get(1).copied().into_iter().collect(),
        Some(Shape::Single) => rest.first().copied().into_iter().collect(),
        Some(Shape::Keys) => rest.to_vec(),
        Some(Shape::Pairs) => rest.iter().step_by(2).copied().collect(),
        Some(Shape::Rename) => rest.iter().take(2).copied().collect(),
        Some(Shape::Global) | None => Vec::new(),
    }
}

/// Execute a single-key write on `ks` (lazy expiry already done by the caller). Returns the
/// journal form, or `None` when nothing changed.
pub fn apply(ks: &mut Keyspace, now: u64, args: &[&[u8]]) -> Result<Option<Argv>, String> {
    arity(args, 2, None)?;
    let name = upper(args[0]);
    let key = args[1];
    match name.as_str() {
        "SET" => set(ks, now, args),
        "INCR" | "DECR" | "INCRBY" | "DECRBY" => {
            let by = match name.as_str() {
                "INCR" => 1,
                "DECR" => -1,
                _ => {
                    arity(args, 3, None)?;
                    let v = int_arg(args[2])?;
                    if name == "DECRBY" {
                        v.checked_neg().ok_or(NOT_INT)?
                    } else {
                        v
                    }
                }
            };
            let cur = match ks.get(key).map(|e| &e.value) {
                None => 0,
                Some(Value::String(s)) => int_arg(s)?,
                Some(_) => return Err(WRONGTYPE.into()),
            };
            let new = cur.checked_add(by).ok_or("ERR increment or decrement would overflow")?;
            put_string(ks, key, new.to_string().into_bytes(), true);
            Ok(Some(owned(args)))
        }
        "APPEND" => {
            arity(args, 3, None)?;
            match ks.get_mut(key) {
                None => put_string(ks, key, args[2].to_vec(), false),
                Some(Entry { value: Value::String(s), .. }) => s.extend_from_slice(args[2]),
                Some(_) => return Err(WRONGTYPE.into()),
            }
            Ok(Some(owned(args)))
        }
        "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" => {
            arity(args, 3, None)?;
            if args.len() > 3 {
                return Err("ERR EXPIRE options (NX/XX/GT/LT) are not supported by the emulator".into());
            }
            let v = int_arg(args[2])?;
            let at = match name.as_str() {
                "EXPIRE" => now as i64 + v.saturating_mul(1000),
                "PEXPIRE" => now as i64 + v,
                "EXPIREAT" => v.saturating_mul(1000),
                _ => v,
            };
            let Some(e) = ks.get_mut(key) else { return Ok(None) };
            if at <= now as i64 {
                ks.remove(key);
                return Ok(Some(vec![b"DEL".to_vec(), key.to_vec()]));
            }
            e.expire_at_ms = Some(at as u64);
            Ok(Some(vec![b"PEXPIREAT".to_vec(), key.to_vec(), at.to_string().into_bytes()]))
        }
        "PERSIST" => match ks.get_mut(key) {
            Some(e) if e.expire_at_ms.is_some() => {
                e.expire_at_ms = None;
                Ok(Some(owned(args)))
            }
            _ => Ok(None),
        },
        "STICK" => match ks.get_mut(key) {
            Some(e) if !e.sticky => {
                e.sticky = true;
                Ok(Some(owned(args)))
            }
            _ => Ok(None),
        },
        "HSET" => {
            arity(args, 4, Some(2))?;
            let pairs = args[2..].chunks(2).map(|p| (p[0].to_vec(), p[1].to_vec()));
            match &mut entry_or(ks, key, || Value::Hash(BTreeMap::new()))?.value {
                Value::Hash(h) => h.extend(pairs),
                Value::HashTtl(h) => h.extend(pairs.map(|(f, v)| (f, (v, None)))),
                _ => return Err(WRONGTYPE.into()),
            }
            Ok(Some(owned(args)))
        }
        "HSETEX" => hsetex(ks, now, args),
        "JSON.SET" => json_set(ks, args),
        "JSON.DEL" | "JSON.FORGET" => {
            if args.len() > 3 || args.get(2).is_some_and(|p| !is_json_root(p)) {
                return Err(JSON_ROOT_ONLY.into());
            }
            match ks.get(key).map(|e| &e.value) {
                None => Ok(None),
                Some(Value::Json(_)) => {
                    ks.remove(key);
                    Ok(Some(owned(args)))
                }
                Some(_) => Err(WRONGTYPE.into()),
            }
        }
        "HDEL" => {
            arity(args, 3, None)?;
            let removed = match ks.get_mut(key).map(|e| &mut e.value) {
                None => 0,
                Some(Value::Hash(h)) => args[2..].iter().filter(|f| h.remove(**f).is_some()).count(),
                Some(Value::HashTtl(h)) => args[2..].iter().filter(|f| h.remove(**f).is_some()).count(),
                Some(_) => return Err(WRONGTYPE.into()),
            };
            drop_if_empty(ks, key);
            Ok((removed > 0).then(|| owned(args)))
        }
        "HINCRBY" => {
            arity(args, 4, None)?;
            let by = int_arg(args[3])?;
            let e = entry_or(ks, key, || Value::Hash(BTreeMap::new()))?;
            let slot = match &mut e.value {
                Value::Hash(h) => h.entry(args[2].to_vec()).or_insert_with(|| b"0".to_vec()),
                Value::HashTtl(h) => &mut h.entry(args[2].to_vec()).or_insert_with(|| (b"0".to_vec(), None)).0,
                _ => return Err(WRONGTYPE.into()),
            };
            let cur = parse_i64(slot).ok_or("ERR hash value is not an integer")?;
            *slot = cur.checked_add(by).ok_or("ERR increment or decrement would overflow")?.to_string().into_bytes();
            Ok(Some(owned(args)))
        }
        "LPUSH" | "RPUSH" => {
            arity(args, 3, None)?;
            let Value::List(l) = &mut entry_or(ks, key, || Value::List(VecDeque::new()))?.value else {
                return Err(WRONGTYPE.into());
            };
            for v in &args[2..] {
                if name == "LPUSH" {
                    l.push_front(v.to_vec());
                } else {
                    l.push_back(v.to_vec());
                }
            }
            Ok(Some(owned(args)))
        }
        "LPOP" | "RPOP" => {
            let count = match args.get(2) {
                Some(c) => usize::try_from(int_arg(c)?).map_err(|_| NOT_INT.to_string())?,
                None => 1,
            };
            let popped = match ks.get_mut(key).map(|e| &mut e.value) {
                None => 0,
                Some(Value::List(l)) => {
                    let n = count.min(l.len());
                    for _ in 0..n {
                        if name == "LPOP" {
                            l.pop_front();
                        } else {
                            l.pop_back();
                        }
                    }
                    n
                }
                Some(_) => return Err(WRONGTYPE.into()),
            };
            drop_if_empty(ks, key);
            Ok((popped > 0).then(|| owned(args)))
        }
        "SADD" => {
            arity(args, 3, None)?;
            let added = match &mut entry_or(ks, key, || Value::Set(BTreeSet::new()))?.value {
                Value::Set(s) => args[2..].iter().filter(|m| s.insert(m.to_vec())).count(),
                Value::SetTtl(s) => args[2..].iter().filter(|m| s.insert(m.to_vec(), None).is_none()).count(),
                _ => return Err(WRONGTYPE.into()),
            };
            drop_if_empty(ks, key);
            Ok((added > 0).then(|| owned(args)))
        }
        "SADDEX" => saddex(ks, now, args),
        "SREM" => {
            arity(args, 3, None)?;
            let removed = match ks.get_mut(key).map(|e| &mut e.value) {
                None => 0,
                Some(Value::Set(s)) => args[2..].iter().filter(|m| s.remove(**m)).count(),
                Some(Value::SetTtl(s)) => args[2..].iter().filter(|m| s.remove(**m).is_some()).count(),
                Some(_) => return Err(WRONGTYPE.into()),
            };
            drop_if_empty(ks, key);
            Ok((removed > 0).then(|| owned(args)))
        }
        "ZADD" => zadd(ks, args),
        "ZINCRBY" => {
            arity(args, 4, None)?;
            let by = parse_score(args[2])?;
            let Value::Zset(z) = &mut entry_or(ks, key, || Value::Zset(BTreeMap::new()))?.value else {
                return Err(WRONGTYPE.into());
            };
            let s = z.entry(args[3].to_vec()).or_insert(0.0);
            let new = *s + by;
            if new.is_nan() {
                return Err("ERR resulting score is not a number (NaN)".into());
            }
            *s = new;
            Ok(Some(owned(args)))
        }
        "ZREM" => {
            arity(args, 3, None)?;
            let removed = match ks.get_mut(key).map(|e| &mut e.value) {
                None => 0,
                Some(Value::Zset(z)) => args[2..].iter().filter(|m| z.remove(**m).is_some()).count(),
                Some(_) => return Err(WRONGTYPE.into()),
            };
            drop_if_empty(ks, key);
            Ok((removed > 0).then(|| owned(args)))
        }
        "XADD" => xadd(ks, now, args),
        "XDEL" => {
            arity(args, 3, None)?;
            let ids = args[2..].iter().map(|a| parse_stream_id(a)).collect::<Result<Vec<_>, _>>()?;
            let deleted = match ks.get_mut(key).map(|e| &mut e.value) {
                None => 0,
                Some(Value::Stream(s)) => ids.into_iter().filter(|id| s.delete(*id)).count(),
                Some(_) => return Err(WRONGTYPE.into()),
            };
            Ok((deleted > 0).then(|| owned(args)))
        }
        "XGROUP" => xgroup(ks, args),
        "XACK" => {
            arity(args, 4, None)?;
            let ids = args[3..].iter().map(|a| parse_stream_id(a)).collect::<Result<Vec<_>, _>>()?;
            let acked = match ks.get_mut(key).map(|e| &mut e.value) {
                None => 0,
                Some(Value::Stream(s)) => match s.groups.iter_mut().find(|g| g.name == args[2]) {
                    Some(g) => ids.iter().filter(|id| g.pel.remove(id).is_some()).count(),
                    None => {
                        return Err(format!(
                            "NOGROUP No such key or consumer group '{}'",
                            String::from_utf8_lossy(args[2])
                        ))
                    }
                },
                Some(_) => return Err(WRONGTYPE.into()),
            };
            Ok((acked > 0).then(|| owned(args)))
        }
        other => Err(format!("ERR unknown or unsupported write command '{other}'")),
    }
}

fn put_string(ks: &mut Keyspace, key: &[u8], v: Vec<u8>, keep_ttl: bool) {
    match ks.get_mut(key) {
        Some(e) => {
            e.value = Value::String(v);
            if !keep_ttl {
                e.expire_at_ms = None;
            }
        }
        None => {
            ks.insert(key.to_vec(), Entry::new(Value::String(v)));
        }
    }
}

/// The key's entry, created with `make()` when absent.
fn entry_or<'a>(ks: &'a mut Keyspace, key: &[u8], make: impl FnOnce() -> Value) -> Result<&'a mut Entry, String> {
    if !ks.contains_key(key) {
        ks.insert(key.to_vec(), Entry::new(make()));
    }
    Ok(ks.get_mut(key).expect("inserted above"))
}

const JSON_ROOT_ONLY: &str = "ERR the emulator supports JSON.SET / JSON.DEL at the root path ($ or .) only";

fn is_json_root(p: &[u8]) -> bool {
    p == b"$" || p == b"."
}

/// `JSON.SET key $ doc [NX|XX]` at the root only, journaled verbatim as Dragonfly does. The
/// emulator stores the text it is given, unparsed: callers pass it as Dragonfly would print
/// it (compact, object members in sorted order, see `Value::Json`), since that text is what
/// the snapshot carries.
fn json_set(ks: &mut Keyspace, args: &[&[u8]]) -> Result<Option<Argv>, String> {
    arity(args, 4, None)?;
    if !is_json_root(args[2]) {
        return Err(JSON_ROOT_ONLY.into());
    }
    let (nx, xx) = match args.get(4..).unwrap_or_default() {
        [] => (false, false),
        [o] if o.eq_ignore_ascii_case(b"NX") => (true, false),
        [o] if o.eq_ignore_ascii_case(b"XX") => (false, true),
        _ => return Err(SYNTAX.into()),
    };
    let key = args[1];
    match ks.get_mut(key) {
        Some(_) if nx => Ok(None),
        None if xx => Ok(None),
        Some(Entry { value: Value::Json(doc), .. }) => {
            *doc = args[3].to_vec();
            Ok(Some(owned(args)))
        }
        Some(_) => Err(WRONGTYPE.into()),
        None => {
            ks.insert(key.to_vec(), Entry::new(Value::Json(args[3].to_vec())));
            Ok(Some(owned(args)))
        }
    }
}

/// Containers never stay empty (Redis deletes the key with its last element).
fn drop_if_empty(ks: &mut Keyspace, key: &[u8]) {
    let empty = match ks.get(key).map(|e| &e.value) {
        Some(Value::List(v)) => v.is_empty(),
        Some(Value::Set(v)) => v.is_empty(),
        Some(Value::Hash(v)) => v.is_empty(),
        Some(Value::Zset(v)) => v.is_empty(),
        Some(Value::HashTtl(v)) => v.is_empty(),
        Some(Value::SetTtl(v)) => v.is_empty(),
        _ => false,
    };
    if empty {
        ks.remove(key);
    }
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`, journaled as
/// `SET key value [PXAT abs]|[KEEPTTL]` (NX/XX/GET dropped).
fn set(ks: &mut Keyspace, now: u64, args: &[&[u8]]) -> Result<Option<Argv>, String> {
    arity(args, 3, None)?;
    let (key, value) = (args[1], args[2]);
    let (mut nx, mut xx, mut keep) = (false, false, false);
    let mut at: Option<i64> = None;
    let mut i = 3;
    while i < args.len() {
        let opt = upper(args[i]);
        match opt.as_str() {
            "NX" => nx = true,
            "XX" => xx = true,
            "GET" => {}
            "KEEPTTL" => keep = true,
            "EX" | "PX" | "EXAT" | "PXAT" => {
                let v = int_arg(args.get(i + 1).ok_or(SYNTAX)?)?;
                if v <= 0 || at.is_some() {
                    return Err(if v <= 0 { "ERR invalid expire time in 'set' command".into() } else { SYNTAX.into() });
                }
                at = Some(match opt.as_str() {
                    "EX" => (now as i64).saturating_add(v.saturating_mul(1000)),
                    "PX" => (now as i64).saturating_add(v),
                    "EXAT" => v.saturating_mul(1000),
                    _ => v,
                });
                i += 1;
            }
            _ => return Err(SYNTAX.into()),
        }
        i += 1;
    }
    if (nx && xx) || (keep && at.is_some()) {
        return Err(SYNTAX.into());
    }
    let exists = ks.contains_key(key);
    if (nx && exists) || (xx && !exists) {
        return Ok(None);
    }
    let old = ks.get(key);
    let sticky = old.is_some_and(|e| e.sticky);
    let ttl = if keep { old.and_then(|e| e.expire_at_ms) } else { at.map(|t| t.max(0) as u64) };
    ks.insert(key.to_vec(), Entry { value: Value::String(value.to_vec()), expire_at_ms: ttl, sticky });
    let mut j = vec![b"SET".to_vec(), key.to_vec(), value.to_vec()];
    if let Some(t) = at {
        j.push(b"PXAT".to_vec());
        j.push(t.to_string().into_bytes());
    } else if keep {
        j.push(b"KEEPTTL".to_vec());
    }
    Ok(Some(j))
}

/// Dragonfly's `HSETEX key [NX] [KEEPTTL] seconds field value ...` (verbatim in the journal).
fn hsetex(ks: &mut Keyspace, now: u64, args: &[&[u8]]) -> Result<Option<Argv>, String> {
    let mut i = 2;
    let (mut nx, mut keep) = (false, false);
    while i < args.len() {
        match upper(args[i]).as_str() {
            "NX" => nx = true,
            "KEEPTTL" => keep = true,
            _ => break,
        }
        i += 1;
    }
    let secs = int_arg(args.get(i).ok_or(SYNTAX)?)?;
    let rest = &args[i + 1..];
    if secs <= 0 || rest.is_empty() || rest.len() % 2 != 0 {
        return Err(SYNTAX.into());
    }
    let ttl = now / 1000 + secs as u64;
    let e = entry_or(ks, args[1], || Value::HashTtl(BTreeMap::new()))?;
    if let Value::Hash(h) = &mut e.value {
        let h = std::mem::take(h);
        e.value = Value::HashTtl(h.into_iter().map(|(f, v)| (f, (v, None))).collect());
    }
    let Value::HashTtl(h) = &mut e.value else { return Err(WRONGTYPE.into()) };
    for p in rest.chunks(2) {
        if nx && h.contains_key(p[0]) {
            continue;
        }
        let t = if keep { h.get(p[0]).map_or(Some(ttl), |(_, t)| *t) } else { Some(ttl) };
        h.insert(p[0].to_vec(), (p[1].to_vec(), t));
    }
    Ok(Some(owned(args)))
}

/// Dragonfly's `SADDEX key seconds member ...` (verbatim in the journal).
fn saddex(ks: &mut Keyspace, now: u64, args: &[&[u8]]) -> Result<Option<Argv>, String> {
    arity(args, 4, None)?;
    let secs = int_arg(args[2])?;
    if secs <= 0 {
        return Err(SYNTAX.into());
    }
    let ttl = now / 1000 + secs as u64;
    let e = entry_or(ks, args[1], || Value::SetTtl(BTreeMap::new()))?;
    if let Value::Set(s) = &mut e.value {
        let s = std::mem::take(s);
        e.value = Value::SetTtl(s.into_iter().map(|m| (m, None)).collect());
    }
    let Value::SetTtl(s) = &mut e.value else { return Err(WRONGTYPE.into()) };
    for m in &args[3..] {
        s.insert(m.to_vec(), Some(ttl));
    }
    Ok(Some(owned(args)))
}

/// `ZADD key [NX|XX] [CH] score member ...` (verbatim in the journal).
fn zadd(ks: &mut Keyspace, args: &[&[u8]]) -> Result<Option<Argv>, String> {
    let mut i = 2;
    let (mut nx, mut xx) = (false, false);
    while i < args.len() {
        match upper(args[i]).as_str() {
            "NX" => nx = true,
            "XX" => xx = true,
            "CH" => {}
            "GT" | "LT" | "INCR" => return Err("ERR ZADD GT/LT/INCR are not supported by the emulator".into()),
            _ => break,
        }
        i += 1;
    }
    let rest = &args[i..];
    if rest.is_empty() || rest.len() % 2 != 0 || (nx && xx) {
        return Err(SYNTAX.into());
    }
    let pairs = rest.chunks(2).map(|p| Ok((parse_score(p[0])?, p[1].to_vec()))).collect::<Result<Vec<_>, String>>()?;
    if !ks.contains_key(args[1]) && xx {
        return Ok(None);
    }
    let Value::Zset(z) = &mut entry_or(ks, args[1], || Value::Zset(BTreeMap::new()))?.value else {
        return Err(WRONGTYPE.into());
    };
    let mut changed = false;
    for (score, m) in pairs {
        let exists = z.contains_key(&m);
        if (nx && exists) || (xx && !exists) {
            continue;
        }
        changed |= z.insert(m, score) != Some(score);
    }
    drop_if_empty(ks, args[1]);
    Ok(changed.then(|| owned(args)))
}

/// `XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] n] id|* field value ...`, journaled with the explicit
/// ID and a trim rewritten as `MINID <first kept id>` (or `MAXLEN 0` when nothing is kept).
fn xadd(ks: &mut Keyspace, now: u64, args: &[&[u8]]) -> Result<Option<Argv>, String> {
    let key = args[1];
    let mut i = 2;
    let mut nomk = false;
    let mut maxlen: Option<u64> = None;
    let mut minid: Option<StreamId> = None;
    loop {
        let Some(a) = args.get(i) else { return Err(SYNTAX.into()) };
        match upper(a).as_str() {
            "NOMKSTREAM" => nomk = true,
            opt @ ("MAXLEN" | "MINID") => {
                i += 1;
                if matches!(args.get(i).copied(), Some(b"=") | Some(b"~")) {
                    i += 1;
                }
                let v = args.get(i).ok_or(SYNTAX)?;
                if opt == "MINID" {
                    minid = Some(parse_stream_id(v)?);
                } else {
                    let n = int_arg(v)?;
                    maxlen = Some(u64::try_from(n).map_err(|_| "ERR The MAXLEN argument must be >= 0.".to_string())?);
                }
            }
            _ => break,
        }
        i += 1;
    }
    if maxlen.is_some() && minid.is_some() {
        return Err(SYNTAX.into());
    }
    let id_arg_raw = args[i];
    let fields = &args[i + 1..];
    if fields.is_empty() || fields.len() % 2 != 0 {
        return Err("ERR wrong number of arguments for 'xadd' command".into());
    }
    let empty = Stream::default();
    let cur = match ks.get(key).map(|e| &e.value) {
        None if nomk => return Ok(None),
        None => &empty,
        Some(Value::Stream(s)) => s,
        Some(_) => return Err(WRONGTYPE.into()),
    };
    let id = if id_arg_raw == b"*" { cur.next_auto_id(now) } else { parse_stream_id(id_arg_raw)? };
    if id == StreamId::default() {
        return Err("ERR The ID specified in XADD must be greater than 0-0".into());
    }
    if id <= cur.last_id {
        return Err("ERR The ID specified in XADD is equal or smaller than the target stream top item".into());
    }
    let Value::Stream(s) = &mut entry_or(ks, key, || Value::Stream(Stream::default()))?.value else {
        unreachable!("checked above");
    };
    s.add(id, fields.chunks(2).map(|p| (p[0].to_vec(), p[1].to_vec())).collect());
    let mut j = vec![b"XADD".to_vec(), key.to_vec()];
    if let Some(min) = minid {
        s.trim_minid(min);
        j.extend([b"MINID".to_vec(), id_arg(min)]);
    }
    if let Some(n) = maxlen {
        s.trim_maxlen(n);
        if s.is_empty() {
            j.extend([b"MAXLEN".to_vec(), b"0".to_vec()]);
        } else {
            j.extend([b"MINID".to_vec(), id_arg(s.first_id())]);
        }
    }
    j.push(id_arg(id));
    j.extend(fields.iter().map(|f| f.to_vec()));
    Ok(Some(j))
}

/// `XGROUP CREATE key group id|$ [MKSTREAM] [ENTRIESREAD n]` (verbatim; `$` is not resolved
/// in the journal, as Dragonfly does).
fn xgroup(ks: &mut Keyspace, args: &[&[u8]]) -> Result<Option<Argv>, String> {
    arity(args, 5, None)?;
    if upper(args[1]) != "CREATE" {
        return Err("ERR only XGROUP CREATE is supported by the emulator".into());
    }
    let (key, name, id) = (args[2], args[3], args[4]);
    let mut mkstream = false;
    let mut entries_read = -1i64;
    let mut i = 5;
    while i < args.len() {
        match upper(args[i]).as_str() {
            "MKSTREAM" => mkstream = true,
            "ENTRIESREAD" => {
                i += 1;
                entries_read = int_arg(args.get(i).ok_or(SYNTAX)?)?;
            }
            _ => return Err(SYNTAX.into()),
        }
        i += 1;
    }
    if !ks.contains_key(key) && !mkstream {
        return Err("ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.".into());
    }
    let Value::Stream(s) = &mut entry_or(ks, key, || Value::Stream(Stream::default()))?.value else {
        return Err(WRONGTYPE.into());
    };
    if s.groups.iter().any(|g| g.name == name) {
        return Err("BUSYGROUP Consumer Group name already exists".into());
    }
    // `$` is the stream's last ID; like Redis, the group's entries-read stays unknown.
    let last_id = if id == b"$" { s.last_id } else { parse_stream_id(id)? };
    s.groups.push(Group { name: name.to_vec(), last_id, entries_read, pel: BTreeMap::new(), consumers: Vec::new() });
    Ok(Some(owned(args)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ks: &mut Keyspace, args: &[&str]) -> Result<Option<Vec<String>>, String> {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        apply(ks, 1_000_000, &a).map(|o| o.map(|v| v.into_iter().map(|x| String::from_utf8(x).unwrap()).collect()))
    }

    #[test]
    fn set_is_journaled_with_an_absolute_expiry() {
        let mut ks = Keyspace::default();
        assert_eq!(
            run(&mut ks, &["SET", "k", "v", "EX", "10", "NX"]).unwrap().unwrap(),
            ["SET", "k", "v", "PXAT", "1010000"]
        );
        assert_eq!(ks[b"k".as_slice()].expire_at_ms, Some(1_010_000));
        assert_eq!(run(&mut ks, &["SET", "k", "w", "NX"]).unwrap(), None);
        assert_eq!(run(&mut ks, &["SET", "k", "w", "KEEPTTL"]).unwrap().unwrap(), ["SET", "k", "w", "KEEPTTL"]);
        assert_eq!(ks[b"k".as_slice()].expire_at_ms, Some(1_010_000));
        assert!(run(&mut ks, &["SET", "k", "v", "EX", "0"]).is_err());
    }

    #[test]
    fn expire_becomes_pexpireat_or_del() {
        let mut ks = Keyspace::default();
        run(&mut ks, &["SET", "k", "v"]).unwrap();
        assert_eq!(run(&mut ks, &["EXPIRE", "k", "5"]).unwrap().unwrap(), ["PEXPIREAT", "k", "1005000"]);
        assert_eq!(run(&mut ks, &["PEXPIREAT", "k", "10"]).unwrap().unwrap(), ["DEL", "k"]);
        assert!(ks.is_empty());
        assert_eq!(run(&mut ks, &["EXPIRE", "k", "5"]).unwrap(), None);
    }

    #[test]
    fn xadd_gets_an_explicit_id_and_minid() {
        let mut ks = Keyspace::default();
        assert_eq!(run(&mut ks, &["XADD", "s", "*", "f", "1"]).unwrap().unwrap(), ["XADD", "s", "1000000-0", "f", "1"]);
        assert_eq!(run(&mut ks, &["XADD", "s", "*", "f", "2"]).unwrap().unwrap(), ["XADD", "s", "1000000-1", "f", "2"]);
        assert_eq!(
            run(&mut ks, &["XADD", "s", "MAXLEN", "~", "2", "*", "f", "3"]).unwrap().unwrap(),
            ["XADD", "s", "MINID", "1000000-1", "1000000-2", "f", "3"]
        );
        assert!(run(&mut ks, &["XADD", "s", "5-0", "f", "x"]).is_err());
    }

    #[test]
    fn errors_are_replies_not_panics() {
        let mut ks = Keyspace::default();
        run(&mut ks, &["SET", "k", "abc"]).unwrap();
        assert_eq!(run(&mut ks, &["INCR", "k"]).unwrap_err(), NOT_INT);
        assert_eq!(run(&mut ks, &["LPUSH", "k", "x"]).unwrap_err(), WRONGTYPE);
        assert!(run(&mut ks, &["HSET", "h", "f"]).is_err());
        assert!(run(&mut ks, &["XADD", "s"]).is_err());
        assert!(run(&mut ks, &["ZADD", "z", "nan", "m"]).is_err());
    }
}
