//! The snapshot datasets: generated once, loaded into the in-process emulator and written as
//! RESP commands for `redis-cli --pipe` (the same keys and values), with a sample of keys to
//! check on the target afterwards.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use df2redis::emulator::datasets::Rng;
use df2redis::emulator::{Emulator, Entry, Value};

use super::servers::R;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Strings, 16-byte keys, 32-byte values.
    Small,
    /// Hashes of `fields` fields (16-byte names, 32-byte values).
    Hashes,
    /// Lists of `elems` 32-byte elements (RPUSH in batches on the pipe side).
    Lists,
    /// Strings of `value_bytes` random bytes.
    Big,
    /// Sorted sets of `width` members (16-byte names; integer, fractional and negative scores).
    Zsets,
    /// Sets of `width` 16-byte members.
    Sets,
}

#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub kind: Kind,
    pub keys: usize,
    /// Hash fields, list elements or value bytes, by kind.
    pub width: usize,
    /// Elements per RPUSH in the RESP file (lists).
    pub list_batch: usize,
}

/// What a generated dataset holds.
pub struct Dataset {
    pub keys: u64,
    /// Key, field and value bytes: what the user's data weighs, whatever the encoding.
    pub payload: u64,
    /// The RESP file (when asked for) and its number of commands.
    pub resp: Option<PathBuf>,
    pub resp_cmds: u64,
    pub resp_bytes: u64,
    pub samples: Vec<Sample>,
}

pub struct Sample {
    pub key: Vec<u8>,
    pub expect: Expect,
}

pub enum Expect {
    Str(Vec<u8>),
    /// A big string: its length and its first and last 64 bytes.
    BigStr {
        len: u64,
        head: Vec<u8>,
        tail: Vec<u8>,
    },
    Hash {
        len: u64,
        field: Vec<u8>,
        value: Vec<u8>,
    },
    List {
        len: u64,
        first: Vec<u8>,
        last: Vec<u8>,
    },
    Zset {
        len: u64,
        member: Vec<u8>,
        score: f64,
    },
    Set {
        len: u64,
        member: Vec<u8>,
    },
}

struct Resp {
    w: BufWriter<File>,
    cmds: u64,
    bytes: u64,
}

impl Resp {
    fn cmd(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        let head = format!("*{}\r\n", args.len());
        self.w.write_all(head.as_bytes())?;
        self.bytes += head.len() as u64;
        for a in args {
            let head = format!("${}\r\n", a.len());
            self.w.write_all(head.as_bytes())?;
            self.w.write_all(a)?;
            self.w.write_all(b"\r\n")?;
            self.bytes += (head.len() + a.len() + 2) as u64;
        }
        self.cmds += 1;
        Ok(())
    }
}

/// Generate `spec` into `emu` (with [`Emulator::load`]) and, when `resp` is given, as RESP
/// commands into that file.
pub fn generate(spec: &Spec, emu: &Emulator, resp: Option<&Path>) -> R<Dataset> {
    let io = |e: std::io::Error| format!("writing the RESP file: {e}");
    let mut out = match resp {
        Some(p) => Some(Resp {
            w: BufWriter::with_capacity(1 << 20, File::create(p).map_err(|e| format!("{}: {e}", p.display()))?),
            cmds: 0,
            bytes: 0,
        }),
        None => None,
    };
    let n = spec.keys;
    let every = (n / 20).max(1);
    let mut samples = Vec::new();
    let mut payload = 0u64;
    match spec.kind {
        Kind::Small => {
            let mut r = Rng::new(1);
            for i in 0..n {
                let key = format!("key:{i:012}").into_bytes();
                let v = r.text(32);
                payload += (key.len() + v.len()) as u64;
                if let Some(o) = out.as_mut() {
                    o.cmd(&[b"SET", &key, &v]).map_err(io)?;
                }
                if i % every == 0 || i + 1 == n {
                    samples.push(Sample { key: key.clone(), expect: Expect::Str(v.clone()) });
                }
                emu.load(0, &key, Entry::new(Value::String(v)));
            }
        }
        Kind::Hashes => {
            let mut r = Rng::new(2);
            let names: Vec<Vec<u8>> = (0..spec.width).map(|f| format!("field:{f:010}").into_bytes()).collect();
            for i in 0..n {
                let key = format!("hash:{i:011}").into_bytes();
                let h: BTreeMap<Vec<u8>, Vec<u8>> = names.iter().map(|f| (f.clone(), r.text(32))).collect();
                payload += key.len() as u64 + h.iter().map(|(f, v)| (f.len() + v.len()) as u64).sum::<u64>();
                if let Some(o) = out.as_mut() {
                    let mut args: Vec<&[u8]> = vec![b"HSET", &key];
                    for (f, v) in &h {
                        args.push(f);
                        args.push(v);
                    }
                    o.cmd(&args).map_err(io)?;
                }
                if (i % every == 0 || i + 1 == n) && !h.is_empty() {
                    let (f, v) = h.iter().next_back().expect("not empty");
                    samples.push(Sample {
                        key: key.clone(),
                        expect: Expect::Hash { len: h.len() as u64, field: f.clone(), value: v.clone() },
                    });
                }
                emu.load(0, &key, Entry::new(Value::Hash(h)));
            }
        }
        Kind::Lists => {
            let mut r = Rng::new(3);
            let batch = spec.list_batch.max(1);
            for i in 0..n {
                let key = format!("list:{i:011}").into_bytes();
                let l: VecDeque<Vec<u8>> = (0..spec.width).map(|_| r.text(32)).collect();
                payload += key.len() as u64 + l.iter().map(|e| e.len() as u64).sum::<u64>();
                if let Some(o) = out.as_mut() {
                    let (a, b) = l.as_slices();
                    let all: Vec<&[u8]> = a.iter().chain(b.iter()).map(|e| e.as_slice()).collect();
                    for part in all.chunks(batch) {
                        let mut args: Vec<&[u8]> = Vec::with_capacity(part.len() + 2);
                        args.push(b"RPUSH");
                        args.push(&key);
                        args.extend_from_slice(part);
                        o.cmd(&args).map_err(io)?;
                    }
                }
                if (i % every == 0 || i + 1 == n) && !l.is_empty() {
                    samples.push(Sample {
                        key: key.clone(),
                        expect: Expect::List {
                            len: l.len() as u64,
                            first: l.front().cloned().unwrap_or_default(),
                            last: l.back().cloned().unwrap_or_default(),
                        },
                    });
                }
                emu.load(0, &key, Entry::new(Value::List(l)));
            }
        }
        Kind::Zsets => {
            let mut r = Rng::new(5);
            for i in 0..n {
                let key = format!("zset:{i:011}").into_bytes();
                let z: BTreeMap<Vec<u8>, f64> = (0..spec.width)
                    .map(|m| {
                        let mut name = format!("m{m:03}:").into_bytes();
                        name.extend(r.text(11));
                        // Integers (a listpack keeps them as integers), fractions, negatives.
                        let score = match m % 3 {
                            0 => r.below(1_000_000) as f64,
                            1 => r.below(1_000_000) as f64 / 1024.0,
                            _ => -(r.below(1000) as f64) - 0.5,
                        };
                        (name, score)
                    })
                    .collect();
                payload += key.len() as u64 + z.keys().map(|m| m.len() as u64 + 8).sum::<u64>();
                if let Some(o) = out.as_mut() {
                    let scores: Vec<String> = z.values().map(|s| format!("{s}")).collect();
                    let mut args: Vec<&[u8]> = vec![b"ZADD", &key];
                    for ((m, _), s) in z.iter().zip(&scores) {
                        args.push(s.as_bytes());
                        args.push(m);
                    }
                    o.cmd(&args).map_err(io)?;
                }
                if i % every == 0 || i + 1 == n {
                    let (m, s) = z.iter().next_back().expect("not empty");
                    samples.push(Sample { key: key.clone(), expect: Expect::Zset { len: z.len() as u64, member: m.clone(), score: *s } });
                }
                emu.load(0, &key, Entry::new(Value::Zset(z.into_iter().collect())));
            }
        }
        Kind::Sets => {
            let mut r = Rng::new(6);
            for i in 0..n {
                let key = format!("set:{i:012}").into_bytes();
                let set: std::collections::BTreeSet<Vec<u8>> = (0..spec.width)
                    .map(|m| {
                        let mut name = format!("m{m:03}:").into_bytes();
                        name.extend(r.text(11));
                        name
                    })
                    .collect();
                payload += key.len() as u64 + set.iter().map(|m| m.len() as u64).sum::<u64>();
                if let Some(o) = out.as_mut() {
                    let mut args: Vec<&[u8]> = vec![b"SADD", &key];
                    args.extend(set.iter().map(|m| m.as_slice()));
                    o.cmd(&args).map_err(io)?;
                }
                if i % every == 0 || i + 1 == n {
                    let m = set.iter().next_back().expect("not empty");
                    samples.push(Sample { key: key.clone(), expect: Expect::Set { len: set.len() as u64, member: m.clone() } });
                }
                emu.load(0, &key, Entry::new(Value::Set(set)));
            }
        }
        Kind::Big => {
            let mut r = Rng::new(4);
            for i in 0..n {
                let key = format!("big:{i:012}").into_bytes();
                let v = r.bytes(spec.width);
                payload += (key.len() + v.len()) as u64;
                if let Some(o) = out.as_mut() {
                    o.cmd(&[b"SET", &key, &v]).map_err(io)?;
                }
                if i % every == 0 || i + 1 == n {
                    let k = v.len().min(64);
                    samples.push(Sample {
                        key: key.clone(),
                        expect: Expect::BigStr {
                            len: v.len() as u64,
                            head: v[..k].to_vec(),
                            tail: v[v.len() - k..].to_vec(),
                        },
                    });
                }
                emu.load(0, &key, Entry::new(Value::String(v)));
            }
        }
    }
    let (resp_cmds, resp_bytes) = match out {
        Some(mut o) => {
            o.w.flush().map_err(io)?;
            (o.cmds, o.bytes)
        }
        None => (0, 0),
    };
    Ok(Dataset { keys: n as u64, payload, resp: resp.map(Path::to_path_buf), resp_cmds, resp_bytes, samples })
}

/// Check the sampled keys on the target (`conn_for` gives a connection to the node holding
/// a key).
pub fn verify_samples(samples: &[Sample], mut conn_for: impl FnMut(&[u8]) -> R<redis::Connection>) -> R<()> {
    for s in samples {
        let mut c = conn_for(&s.key)?;
        let name = String::from_utf8_lossy(&s.key).into_owned();
        let q = |e: redis::RedisError| format!("reading {name}: {e}");
        match &s.expect {
            Expect::Str(v) => {
                let got: Option<Vec<u8>> = redis::cmd("GET").arg(&s.key).query(&mut c).map_err(q)?;
                if got.as_ref() != Some(v) {
                    return Err(format!("key {name}: value differs on the target"));
                }
            }
            Expect::BigStr { len, head, tail } => {
                let got_len: u64 = redis::cmd("STRLEN").arg(&s.key).query(&mut c).map_err(q)?;
                let h: Vec<u8> =
                    redis::cmd("GETRANGE").arg(&s.key).arg(0).arg(head.len() as i64 - 1).query(&mut c).map_err(q)?;
                let t: Vec<u8> =
                    redis::cmd("GETRANGE").arg(&s.key).arg(-(tail.len() as i64)).arg(-1).query(&mut c).map_err(q)?;
                if got_len != *len || &h != head || &t != tail {
                    return Err(format!("key {name}: big value differs on the target (length {got_len}, want {len})"));
                }
            }
            Expect::Hash { len, field, value } => {
                let n: u64 = redis::cmd("HLEN").arg(&s.key).query(&mut c).map_err(q)?;
                let v: Option<Vec<u8>> = redis::cmd("HGET").arg(&s.key).arg(field).query(&mut c).map_err(q)?;
                if n != *len || v.as_ref() != Some(value) {
                    return Err(format!("hash {name}: {n} fields (want {len}) or a field value differs"));
                }
            }
            Expect::List { len, first, last } => {
                let n: u64 = redis::cmd("LLEN").arg(&s.key).query(&mut c).map_err(q)?;
                let f: Option<Vec<u8>> = redis::cmd("LINDEX").arg(&s.key).arg(0).query(&mut c).map_err(q)?;
                let l: Option<Vec<u8>> = redis::cmd("LINDEX").arg(&s.key).arg(-1).query(&mut c).map_err(q)?;
                if n != *len || f.as_ref() != Some(first) || l.as_ref() != Some(last) {
                    return Err(format!("list {name}: {n} elements (want {len}) or its ends differ"));
                }
            }
            Expect::Zset { len, member, score } => {
                let n: u64 = redis::cmd("ZCARD").arg(&s.key).query(&mut c).map_err(q)?;
                let got: Option<f64> = redis::cmd("ZSCORE").arg(&s.key).arg(member).query(&mut c).map_err(q)?;
                if n != *len || got != Some(*score) {
                    return Err(format!("zset {name}: {n} members (want {len}) or a score differs ({got:?}, want {score})"));
                }
            }
            Expect::Set { len, member } => {
                let n: u64 = redis::cmd("SCARD").arg(&s.key).query(&mut c).map_err(q)?;
                let is: bool = redis::cmd("SISMEMBER").arg(&s.key).arg(member).query(&mut c).map_err(q)?;
                if n != *len || !is {
                    return Err(format!("set {name}: {n} members (want {len}) or a member is missing"));
                }
            }
        }
    }
    Ok(())
}

/// Write every key of `keys` as `RESTORE key 0 <DUMP payload>` (from `conn`) into `dst`, in
/// that order (the RESTORE ceiling: what the target takes when fed its own DUMP format).
/// Returns commands.
///
/// The order matters. The ceiling is piped into the same server it was DUMPed from, and in the
/// SCAN order of that server the keys would arrive bucket by bucket of its own hash table
/// (same process, same hash seed): each insert then touches the bucket next to the last one,
/// which made 200k lists20 RESTOREs 16% faster (385k against 331k keys/s, 3 runs each) than
/// the same payloads in any order a fresh server would see. No copy from a master arrives in
/// that order, so the keys go in the dataset's own order, as the commands pipe sends them.
pub fn dump_as_restores(conn: &mut redis::Connection, keys: &[Vec<u8>], dst: &Path) -> R<u64> {
    let e = |e: redis::RedisError| format!("DUMP: {e}");
    let mut w = Resp {
        w: BufWriter::with_capacity(1 << 20, File::create(dst).map_err(|e| format!("{}: {e}", dst.display()))?),
        cmds: 0,
        bytes: 0,
    };
    for part in keys.chunks(1000) {
        let mut p = redis::pipe();
        for k in part {
            p.cmd("DUMP").arg(k);
        }
        let payloads: Vec<Option<Vec<u8>>> = p.query(conn).map_err(e)?;
        for (k, v) in part.iter().zip(&payloads) {
            let v = v.as_ref().ok_or_else(|| format!("DUMP {}: no such key", String::from_utf8_lossy(k)))?;
            w.cmd(&[b"RESTORE", k, b"0", v]).map_err(|e| e.to_string())?;
        }
    }
    w.w.flush().map_err(|e| e.to_string())?;
    Ok(w.cmds)
}

/// The keys of a RESP file's commands (each command's first key), in the order they first
/// appear.
pub fn keys_in_order(src: &Path) -> R<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for_each_command(src, |_, key| {
        if seen.insert(key.to_vec()) {
            keys.push(key.to_vec());
        }
        Ok(())
    })?;
    Ok(keys)
}

/// Split a RESP file into one file per cluster master, each command to the master owning the
/// slot of its first key (`owner[slot]`), keeping the order. Returns commands per file.
pub fn split_by_slot(src: &Path, owner: &[u8], dst: &[PathBuf]) -> R<Vec<u64>> {
    let mut outs = dst
        .iter()
        .map(|p| {
            File::create(p).map(|f| BufWriter::with_capacity(1 << 20, f)).map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect::<R<Vec<_>>>()?;
    let mut counts = vec![0u64; dst.len()];
    for_each_command(src, |cmd, key| {
        let node = owner[df2redis::target::slots::key_slot(key) as usize] as usize;
        outs[node].write_all(cmd).map_err(|e| e.to_string())?;
        counts[node] += 1;
        Ok(())
    })?;
    for o in outs.iter_mut() {
        o.flush().map_err(|e| e.to_string())?;
    }
    Ok(counts)
}

/// Call `f(command, first key)` for every command of the RESP file `src`, in order.
fn for_each_command(src: &Path, mut f: impl FnMut(&[u8], &[u8]) -> R<()>) -> R<()> {
    let bad = |what: &str| format!("{}: malformed RESP ({what})", src.display());
    let mut r = BufReader::with_capacity(1 << 20, File::open(src).map_err(|e| format!("{}: {e}", src.display()))?);
    let mut cmd: Vec<u8> = Vec::new();
    let mut line = Vec::new();
    loop {
        cmd.clear();
        line.clear();
        if r.read_until(b'\n', &mut line).map_err(|e| e.to_string())? == 0 {
            return Ok(());
        }
        let n: usize = parse_len(&line, b'*').ok_or_else(|| bad("array header"))?;
        cmd.extend_from_slice(&line);
        let mut key_at = None;
        for i in 0..n {
            line.clear();
            r.read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
            let len: usize = parse_len(&line, b'$').ok_or_else(|| bad("bulk header"))?;
            cmd.extend_from_slice(&line);
            let at = cmd.len();
            cmd.resize(at + len + 2, 0);
            r.read_exact(&mut cmd[at..]).map_err(|e| e.to_string())?;
            if i == 1 {
                key_at = Some(at..at + len);
            }
        }
        let key = key_at.ok_or_else(|| bad("a command without a key"))?;
        f(&cmd, &cmd[key])?;
    }
}

fn parse_len(line: &[u8], prefix: u8) -> Option<usize> {
    let body = line.strip_prefix(&[prefix])?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(body).ok()?.parse().ok()
}
