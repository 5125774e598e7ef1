//! Which arguments of a command are keys, and splitting a multi-key command per cluster slot.
//!
//! [`keys_of`] knows every command Dragonfly writes to its journal (protocol doc 7.5), the
//! Dragonfly-only ones included, and the common Redis commands. A command it does not know is
//! assumed to have its key at `argv[1]` (if it has one), which is right for the vast majority
//! of Redis commands; commands with no key or with keys elsewhere are listed explicitly.
//!
//! [`split`] turns a command whose keys span several slots into one command per slot where
//! that is exact (`DEL`, `UNLINK`, `TOUCH`, `EXISTS`, `MSET`, `MSETNX`), and reports the others
//! as [`Split::CrossSlot`] for the caller to emulate (RENAME) or refuse.

use super::slots::key_slot;
use crate::protocol::cursor::show;
use crate::protocol::Argv;
use crate::replay::Cmd;

/// How a command's keys sit in its arguments (indices into `argv`, 0 being the name).
///
/// Normalised: no key is `None`, exactly one key is `Single` (even for a multi-key command
/// such as `DEL k`), two or more are `Many`, in argument order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keys {
    None,
    Single(usize),
    Many(Vec<usize>),
}

impl Keys {
    fn from_vec(mut v: Vec<usize>) -> Keys {
        match v.len() {
            0 => Keys::None,
            1 => Keys::Single(v[0]),
            _ => {
                // Keys found in several passes (e.g. SORT's STORE) are listed in argument order.
                v.sort_unstable();
                v.dedup();
                Keys::Many(v)
            }
        }
    }

    /// The key indices, in argument order.
    pub fn indices(&self) -> &[usize] {
        match self {
            Keys::None => &[],
            Keys::Single(i) => std::slice::from_ref(i),
            Keys::Many(v) => v,
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Keys::None)
    }
}

/// The result of [`split`].
#[derive(Debug, Clone, PartialEq)]
pub enum Split {
    /// Send the command as it is: keyless (`None`), or all its keys hash to this slot. (No
    /// copy: the caller has the command; this runs for every command on the cluster hot path,
    /// so the slot comes with it rather than being computed again.)
    One(Option<u16>),
    /// One command per slot, in the order the slots first appear among the keys; each holds
    /// its slot's keys (and their values) in their original order. Its key is `argv[1]`.
    PerSlot(Vec<Cmd>),
    /// The keys span several slots and the command cannot be split exactly: why.
    CrossSlot(String),
}

/// The command name upper-cased into a stack buffer (names longer than the buffer are not
/// known commands: they get the default spec).
fn upper_name(argv: &Argv) -> Option<([u8; 32], usize)> {
    let name = argv.get(0)?;
    if name.len() > 32 {
        return None;
    }
    let mut buf = [0u8; 32];
    for (d, s) in buf.iter_mut().zip(name) {
        *d = s.to_ascii_uppercase();
    }
    Some((buf, name.len()))
}

/// `argv[i]` parsed as a non-negative count.
fn count_at(argv: &Argv, i: usize) -> Option<usize> {
    std::str::from_utf8(argv.get(i)?).ok()?.parse().ok()
}

/// Indices `first..len-skip_tail` with `step`.
fn range(argv: &Argv, first: usize, skip_tail: usize, step: usize) -> Vec<usize> {
    let end = argv.len().saturating_sub(skip_tail);
    (first..end).step_by(step).collect()
}

/// `numkeys` at `at`, then that many keys; keys beyond the arguments are not reported.
fn numkeys(argv: &Argv, at: usize) -> Vec<usize> {
    let n = count_at(argv, at).unwrap_or(0);
    (at + 1..argv.len()).take(n).collect()
}

/// The index of the argument after the first case-insensitive `token` at or after `from`.
fn after_token(argv: &Argv, from: usize, tokens: &[&[u8]]) -> Vec<usize> {
    let mut v = Vec::new();
    let mut i = from;
    while i + 1 < argv.len() {
        if tokens.iter().any(|t| argv.get(i).is_some_and(|a| a.eq_ignore_ascii_case(t))) {
            v.push(i + 1);
            i += 2;
        } else {
            i += 1;
        }
    }
    v
}

/// Only `argv[i]`, if present.
fn at(argv: &Argv, i: usize) -> Vec<usize> {
    if i < argv.len() {
        vec![i]
    } else {
        vec![]
    }
}

/// Which arguments of `argv` are keys, by command name (case-insensitive).
///
/// Unknown commands are assumed to have exactly one key, `argv[1]` (none if they have no
/// arguments). Keys past the end of a malformed command are not reported.
pub fn keys_of(argv: &Argv) -> Keys {
    let Some((buf, len)) = upper_name(argv) else {
        return Keys::from_vec(at(argv, 1));
    };
    let name = &buf[..len];
    let n = argv.len();
    let v: Vec<usize> = match name {
        // ---- No key: server, connection, scripting, pub/sub, transactions, global writes.
        b"FLUSHDB" | b"FLUSHALL" | b"SCRIPT" | b"FUNCTION" | b"PUBLISH" | b"SUBSCRIBE" | b"UNSUBSCRIBE"
        | b"PSUBSCRIBE" | b"PUNSUBSCRIBE" | b"SSUBSCRIBE" | b"SUNSUBSCRIBE" | b"PUBSUB" | b"PING" | b"ECHO"
        | b"SELECT" | b"SWAPDB" | b"MULTI" | b"EXEC" | b"DISCARD" | b"UNWATCH" | b"AUTH" | b"HELLO" | b"QUIT"
        | b"RESET" | b"INFO" | b"DBSIZE" | b"TIME" | b"LASTSAVE" | b"SAVE" | b"BGSAVE" | b"BGREWRITEAOF"
        | b"CONFIG" | b"CLIENT" | b"CLUSTER" | b"COMMAND" | b"DEBUG" | b"SLOWLOG" | b"LATENCY" | b"ACL"
        | b"MODULE" | b"MONITOR" | b"SHUTDOWN" | b"REPLICAOF" | b"SLAVEOF" | b"ROLE" | b"REPLCONF" | b"PSYNC"
        | b"SYNC" | b"FAILOVER" | b"WAIT" | b"WAITAOF" | b"READONLY" | b"READWRITE" | b"ASKING" | b"KEYS"
        | b"SCAN" | b"RANDOMKEY" | b"LOLWUT"
        // Dragonfly: replication control and cluster config (`DFLYCLUSTER FLUSHSLOTS` is a
        // global command over slot ranges, not keys).
        | b"DFLY" | b"DFLYCLUSTER" => vec![],

        // ---- Every argument is a key.
        b"DEL" | b"UNLINK" | b"TOUCH" | b"EXISTS" | b"MGET" | b"WATCH" | b"PFCOUNT" | b"SINTER" | b"SUNION"
        | b"SDIFF"
        // Dragonfly's `STICK key [key ...]`.
        | b"STICK" => range(argv, 1, 0, 1),

        // ---- Destination then sources, every argument a key.
        b"SINTERSTORE" | b"SUNIONSTORE" | b"SDIFFSTORE" | b"PFMERGE" => range(argv, 1, 0, 1),

        // ---- Key/value pairs.
        b"MSET" | b"MSETNX" => range(argv, 1, 0, 2),

        // ---- Two keys at 1 and 2.
        b"RENAME" | b"RENAMENX" | b"SMOVE" | b"LMOVE" | b"BLMOVE" | b"RPOPLPUSH" | b"BRPOPLPUSH" | b"COPY"
        | b"LCS" | b"ZRANGESTORE" | b"GEOSEARCHSTORE" => [1, 2].into_iter().filter(|&i| i < n).collect(),

        // ---- Keys then a trailing timeout.
        b"BLPOP" | b"BRPOP" | b"BZPOPMIN" | b"BZPOPMAX" => range(argv, 1, 1, 1),

        // ---- `BITOP op dst src...`.
        b"BITOP" => range(argv, 2, 0, 1),

        // ---- numkeys forms.
        // `dst numkeys key...`
        b"ZUNIONSTORE" | b"ZINTERSTORE" | b"ZDIFFSTORE" => {
            let mut v = at(argv, 1);
            v.extend(numkeys(argv, 2));
            v
        }
        // `numkeys key...`
        b"ZUNION" | b"ZINTER" | b"ZDIFF" | b"ZINTERCARD" | b"SINTERCARD" | b"LMPOP" | b"ZMPOP" => numkeys(argv, 1),
        // `timeout numkeys key...`, `script numkeys key...`
        b"BLMPOP" | b"BZMPOP" | b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            numkeys(argv, 2)
        }

        // ---- Subcommand then key.
        b"XGROUP" | b"XINFO" | b"OBJECT" => {
            let sub = argv.get(1).unwrap_or_default();
            if sub.eq_ignore_ascii_case(b"HELP") {
                vec![]
            } else {
                at(argv, 2)
            }
        }
        b"MEMORY" => {
            if argv.get(1).is_some_and(|s| s.eq_ignore_ascii_case(b"USAGE")) {
                at(argv, 2)
            } else {
                vec![]
            }
        }

        // ---- Key, plus keys named by option tokens.
        b"SORT" => {
            let mut v = at(argv, 1);
            v.extend(after_token(argv, 2, &[b"STORE"]));
            v
        }
        b"GEORADIUS" | b"GEORADIUSBYMEMBER" => {
            let mut v = at(argv, 1);
            v.extend(after_token(argv, 2, &[b"STORE", b"STOREDIST"]));
            v
        }
        // `XREAD|XREADGROUP ... STREAMS k1 .. kn id1 .. idn`
        b"XREAD" | b"XREADGROUP" => {
            let pos = (1..n).find(|&i| argv.get(i).is_some_and(|a| a.eq_ignore_ascii_case(b"STREAMS")));
            match pos {
                Some(p) => {
                    let rest = n - p - 1;
                    (p + 1..p + 1 + rest / 2).collect()
                }
                None => vec![],
            }
        }
        // `MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw] [AUTH2 u pw] [KEYS k...]`
        b"MIGRATE" => {
            if argv.get(3).is_some_and(|k| !k.is_empty()) {
                vec![3]
            } else {
                let pos = (6..n).find(|&i| argv.get(i).is_some_and(|a| a.eq_ignore_ascii_case(b"KEYS")));
                pos.map_or(vec![], |p| range(argv, p + 1, 0, 1))
            }
        }

        // ---- RedisJSON multi-key forms; the other JSON.* commands have their key at 1.
        // `JSON.MGET key... path`
        b"JSON.MGET" => range(argv, 1, 1, 1),
        // `JSON.MSET key path value [key path value ...]`
        b"JSON.MSET" => range(argv, 1, 0, 3),

        // Search index commands name indexes, not keys (FT.CREATE/ALTER/DROPINDEX are global).
        _ if name.starts_with(b"FT.") => vec![],

        // ---- Everything else, known or not: the key is argv[1]. Known single-key commands
        // that rely on this include SET, SETEX, PSETEX, SETNX, GETSET, GETDEL, GETEX, APPEND,
        // SETRANGE, INCR*, DECR*, EXPIRE*, PEXPIRE*, PERSIST, RESTORE, DUMP, MOVE, TYPE, TTL,
        // the list/set/hash/zset/stream/HLL/bitmap/geo single-key writes (LPUSH ... XADD,
        // XCLAIM, XAUTOCLAIM, XSETID, PFADD, SETBIT, BITFIELD ...), JSON.*, and the
        // Dragonfly-only SADDEX, HSETEX, FIELDEXPIRE, DELEX, PREPEND, CL.THROTTLE, BF.*, CF.*,
        // CMS.*, TOPK.*. SPUBLISH's shard channel is routed like a key.
        _ => at(argv, 1),
    };
    Keys::from_vec(v)
}

/// The slot of the command's first key (`None` if it has no key): where a command that
/// [`split`] returned as [`Split::One`], or a part of a [`Split::PerSlot`], must be sent. Not
/// always `argv[1]`: `XGROUP CREATE k ...`, `BITOP AND dst ...`, `EVAL s 1 k`.
pub fn slot_of(argv: &Argv) -> Option<u16> {
    if let Some(key) = single_key(argv) {
        return Some(key_slot(key));
    }
    keys_of(argv).indices().first().map(|&i| key_slot(argv.get(i).unwrap_or_default()))
}

/// [`slot_hint`]'s answer when the command has no key or keys in several slots: the writer
/// must [`split`] it.
pub const NO_HINT: u16 = u16::MAX;

/// The one slot of `cmd`'s keys, or [`NO_HINT`]. Flow threads compute it for a cluster target
/// while the command's bytes are still in their cache: computed by the writers, the first touch
/// of every key (and of every command name) on another core was ~10% of the cluster path's CPU.
pub fn slot_hint(cmd: &Cmd) -> u16 {
    match split_slot(&cmd.argv) {
        Some(Some(s)) => s,
        _ => NO_HINT,
    }
}

/// `Some(slot)` when every key of `argv` is in one slot (`Some(None)`: no key); `None` when
/// the keys span slots.
fn split_slot(argv: &Argv) -> Option<Option<u16>> {
    if let Some(key) = single_key(argv) {
        return Some(Some(key_slot(key)));
    }
    let keys = keys_of(argv);
    let mut slots = keys.indices().iter().map(|&i| key_slot(argv.get(i).unwrap_or_default()));
    let Some(first) = slots.next() else { return Some(None) };
    slots.all(|s| s == first).then_some(Some(first))
}

/// The commands a full sync sends for almost every key, and the commonest journal writes: one
/// key, `argv[1]`. Checked before [`keys_of`]'s full table, whose name matching was 7% of the
/// cluster path's CPU. A test keeps this list consistent with the table.
const SINGLE_KEY: [&[u8]; 16] = [
    b"SET", b"HSET", b"RPUSH", b"SADD", b"ZADD", b"XADD", b"APPEND", b"PEXPIREAT", b"RESTORE", b"JSON.SET",
    b"LPUSH", b"INCR", b"INCRBY", b"HINCRBY", b"SETEX", b"PEXPIRE",
];

fn single_key(argv: &Argv) -> Option<&[u8]> {
    let name = argv.get(0)?;
    if SINGLE_KEY.iter().any(|n| n.eq_ignore_ascii_case(name)) {
        argv.get(1)
    } else {
        None
    }
}

/// Split `cmd` so that every resulting command's keys hash to one slot.
///
/// * keyless, or every key in one slot: [`Split::One`] with the command unchanged;
/// * `DEL`, `UNLINK`, `TOUCH`, `EXISTS` across slots: one command per slot with that slot's
///   keys (the replies of `EXISTS`/`DEL` parts add up to the original's);
/// * `MSET`/`MSETNX` across slots: one `MSET` per slot with that slot's pairs. `MSETNX`
///   cannot be split atomically (its all-or-nothing check spans slots), but Dragonfly
///   journals `MSETNX` as `MSET` per shard anyway (protocol doc 7.5), so what reaches us is
///   already the outcome: it is replayed as `MSET`;
/// * `JSON.MSET` across slots: one `JSON.MSET` per slot with that slot's key/path/value
///   triples. Dragonfly journals it per shard with only the triples it applied, so it too is
///   already the outcome;
/// * anything else across slots (`RENAME`, `RENAMENX`, `SMOVE`, `LMOVE`, `SINTERSTORE`,
///   `PFMERGE`, `BITOP`, `COPY`, `SORT ... STORE`, `EVAL` ...): [`Split::CrossSlot`]. So is
///   an `MSET` with a dangling argument, which must reach the target whole to fail there.
pub fn split(cmd: &Cmd) -> Split {
    let argv = &cmd.argv;
    if let Some(one) = split_slot(argv) {
        return Split::One(one);
    }
    let keys = keys_of(argv);
    let idx = keys.indices();
    let slots: Vec<u16> = idx.iter().map(|&i| key_slot(argv.get(i).unwrap_or_default())).collect();
    let name = argv.name_upper();
    let per_slot_of = |group: usize, out_name: &[u8]| -> Vec<Cmd> {
        // Slots in order of first appearance, each with its key indices in order.
        let mut order: Vec<(u16, Vec<usize>)> = Vec::new();
        for (&i, &s) in idx.iter().zip(&slots) {
            match order.iter_mut().find(|(os, _)| *os == s) {
                Some((_, v)) => v.push(i),
                None => order.push((s, vec![i])),
            }
        }
        order
            .into_iter()
            .map(|(_, members)| {
                let mut a = Argv::with_capacity(0, 1 + members.len() * group);
                a.push(out_name);
                for i in members {
                    for j in i..i + group {
                        a.push(argv.get(j).unwrap_or_default());
                    }
                }
                Cmd { db: cmd.db, argv: a }
            })
            .collect()
    };
    match name.as_str() {
        "DEL" | "UNLINK" | "TOUCH" | "EXISTS" => {
            Split::PerSlot(per_slot_of(1, argv.get(0).unwrap_or_default()))
        }
        "MSET" | "MSETNX" => {
            if argv.len() % 2 == 0 {
                return Split::CrossSlot(format!(
                    "{name} with an odd number of key/value arguments ({}) across slots",
                    argv.len() - 1
                ));
            }
            // MSETNX is replayed as MSET: see the function's documentation.
            Split::PerSlot(per_slot_of(2, b"MSET"))
        }
        "JSON.MSET" => {
            if argv.len() % 3 != 1 {
                return Split::CrossSlot(format!(
                    "JSON.MSET with {} arguments, not key/path/value triples, across slots",
                    argv.len() - 1
                ));
            }
            Split::PerSlot(per_slot_of(3, b"JSON.MSET"))
        }
        _ => {
            let shown: Vec<String> = idx
                .iter()
                .zip(&slots)
                .take(4)
                .map(|(&i, s)| format!("{} (slot {s})", show(argv.get(i).unwrap_or_default())))
                .collect();
            let more = if idx.len() > 4 { format!(" and {} more", idx.len() - 4) } else { String::new() };
            Split::CrossSlot(format!(
                "{name} in db {} has keys in different cluster slots: {}{more}",
                cmd.db,
                shown.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn av(s: &str) -> Argv {
        Argv::from_slices(&s.split(' ').collect::<Vec<_>>())
    }
    fn keys(s: &str) -> Vec<usize> {
        keys_of(&av(s)).indices().to_vec()
    }
    fn cmd(s: &str) -> Cmd {
        Cmd { db: 0, argv: av(s) }
    }
    fn cmds(v: &[&str]) -> Vec<Cmd> {
        v.iter().map(|s| cmd(s)).collect()
    }
    /// Asserts that the given keys hash to pairwise different slots.
    fn assert_slots_differ(ks: &[&str]) {
        for (i, a) in ks.iter().enumerate() {
            for b in &ks[i + 1..] {
                assert_ne!(key_slot(a.as_bytes()), key_slot(b.as_bytes()), "{a} and {b}");
            }
        }
    }

    #[test]
    fn journal_commands_of_the_fixtures() {
        // Every command name seen in the v1.40.1 captures, in its journal form.
        let cases: &[(&str, &[usize])] = &[
            ("APPEND k v", &[1]),
            ("DEL k", &[1]),
            ("DEL a b c", &[1, 2, 3]),
            ("FLUSHALL", &[]),
            ("FLUSHALL ASYNC", &[]),
            ("FLUSHDB", &[]),
            ("FLUSHDB SYNC", &[]),
            ("HDEL k f1 f2", &[1]),
            ("HINCRBYFLOAT k f 1.5", &[1]),
            ("HSET k f v f2 v2", &[1]),
            ("HSETEX k 100 f v", &[1]),
            ("HSETEX k NX KEEPTTL 100 f v", &[1]),
            ("INCR k", &[1]),
            ("INCRBY k 5", &[1]),
            ("INCRBYFLOAT k 0.5", &[1]),
            ("JSON.SET k $.a 2", &[1]),
            ("LPOP k", &[1]),
            ("LPUSH k a b", &[1]),
            ("MSET a 1 b 2", &[1, 3]),
            ("PERSIST k", &[1]),
            ("PEXPIREAT k 1700000000000", &[1]),
            ("PFADD k a b", &[1]),
            ("RENAME a b", &[1, 2]),
            ("RESTORE k 0 payload REPLACE ABSTTL", &[1]),
            ("RPOP k", &[1]),
            ("RPUSH k a", &[1]),
            ("SADD k m", &[1]),
            ("SADDEX k 100 m", &[1]),
            ("SET k v PXAT 1700000000000", &[1]),
            ("SETBIT k 7 1", &[1]),
            ("SETRANGE k 2 xx", &[1]),
            ("SREM k m", &[1]),
            ("STICK k", &[1]),
            ("STICK a b", &[1, 2]),
            ("XACK k g 1-1", &[1]),
            ("XADD k MINID 1-0 2-0 f v", &[1]),
            ("XCLAIM k g c 0 1-1 TIME 5 RETRYCOUNT 1 FORCE JUSTID LASTID 1-1", &[1]),
            ("XGROUP CREATE k g $", &[2]),
            ("XGROUP CREATECONSUMER k g c", &[2]),
            ("XGROUP SETID k g 1-1 ENTRIESREAD 2", &[2]),
            ("XTRIM k MINID 1-0", &[1]),
            ("ZADD k 1 m", &[1]),
            ("ZINCRBY k 1 m", &[1]),
            ("ZPOPMIN k 2", &[1]),
        ];
        for (c, want) in cases {
            assert_eq!(keys(c), *want, "{c}");
        }
    }

    #[test]
    fn common_redis_writes() {
        let cases: &[(&str, &[usize])] = &[
            // strings
            ("SET k v", &[1]),
            ("SETEX k 10 v", &[1]),
            ("PSETEX k 10 v", &[1]),
            ("SETNX k v", &[1]),
            ("GETSET k v", &[1]),
            ("GETDEL k", &[1]),
            ("GETEX k PERSIST", &[1]),
            ("DECR k", &[1]),
            ("DECRBY k 2", &[1]),
            ("MSETNX a 1 b 2 c 3", &[1, 3, 5]),
            // keyspace
            ("UNLINK a b", &[1, 2]),
            ("TOUCH a", &[1]),
            ("EXISTS a b a", &[1, 2, 3]),
            ("EXPIRE k 10", &[1]),
            ("EXPIREAT k 10", &[1]),
            ("PEXPIRE k 10", &[1]),
            ("RENAMENX a b", &[1, 2]),
            ("COPY a b DB 1 REPLACE", &[1, 2]),
            ("MOVE k 2", &[1]),
            // lists
            ("LPUSHX k a", &[1]),
            ("RPUSHX k a", &[1]),
            ("LSET k 0 v", &[1]),
            ("LINSERT k BEFORE p v", &[1]),
            ("LREM k 0 v", &[1]),
            ("LTRIM k 0 -1", &[1]),
            ("LMOVE a b LEFT RIGHT", &[1, 2]),
            ("RPOPLPUSH a b", &[1, 2]),
            ("BLMOVE a b LEFT RIGHT 0", &[1, 2]),
            ("BRPOPLPUSH a b 0", &[1, 2]),
            ("BLPOP a b 0", &[1, 2]),
            ("BRPOP a 1.5", &[1]),
            ("LMPOP 2 a b LEFT COUNT 2", &[2, 3]),
            ("BLMPOP 0 2 a b LEFT", &[3, 4]),
            // sets
            ("SPOP k 2", &[1]),
            ("SMOVE a b m", &[1, 2]),
            ("SINTERSTORE d a b", &[1, 2, 3]),
            ("SUNIONSTORE d a", &[1, 2]),
            ("SDIFFSTORE d a b c", &[1, 2, 3, 4]),
            ("SINTERCARD 2 a b LIMIT 1", &[2, 3]),
            // hashes
            ("HMSET k f v", &[1]),
            ("HSETNX k f v", &[1]),
            ("HINCRBY k f 1", &[1]),
            // zsets
            ("ZREM k m", &[1]),
            ("ZPOPMAX k", &[1]),
            ("ZREMRANGEBYSCORE k 0 1", &[1]),
            ("ZREMRANGEBYRANK k 0 1", &[1]),
            ("ZREMRANGEBYLEX k - +", &[1]),
            ("ZUNIONSTORE d 2 a b WEIGHTS 1 2", &[1, 3, 4]),
            ("ZINTERSTORE d 1 a", &[1, 3]),
            ("ZDIFFSTORE d 2 a b", &[1, 3, 4]),
            ("ZRANGESTORE d s 0 -1", &[1, 2]),
            ("ZUNION 2 a b WITHSCORES", &[2, 3]),
            ("BZPOPMIN a b 0", &[1, 2]),
            ("ZMPOP 1 a MIN", &[2]),
            ("BZMPOP 0 2 a b MAX", &[3, 4]),
            // streams
            ("XADD k * f v", &[1]),
            ("XDEL k 1-1", &[1]),
            ("XGROUP DESTROY k g", &[2]),
            ("XGROUP DELCONSUMER k g c", &[2]),
            ("XGROUP HELP", &[]),
            ("XAUTOCLAIM k g c 0 0-0", &[1]),
            ("XSETID k 5-5 ENTRIESADDED 3 MAXDELETEDID 1-1", &[1]),
            ("XINFO STREAM k", &[2]),
            ("XREAD COUNT 2 STREAMS a b 0 0", &[4, 5]),
            ("XREADGROUP GROUP g c STREAMS a >", &[5]),
            // HyperLogLog
            ("PFMERGE d a b", &[1, 2, 3]),
            ("PFCOUNT a b", &[1, 2]),
            // bitmaps
            ("BITOP AND d a b", &[2, 3, 4]),
            ("BITOP NOT d a", &[2, 3]),
            ("BITFIELD k SET u8 0 1", &[1]),
            // JSON
            ("JSON.DEL k $.a", &[1]),
            ("JSON.NUMINCRBY k $.a 1", &[1]),
            ("JSON.MGET a b $", &[1, 2]),
            ("JSON.MSET a $ 1 b $ 2", &[1, 4]),
            // pub/sub, server, scripting
            ("PUBLISH ch msg", &[]),
            ("SPUBLISH ch msg", &[1]),
            ("SCRIPT LOAD return", &[]),
            ("SCRIPT FLUSH", &[]),
            ("FUNCTION FLUSH", &[]),
            ("SELECT 3", &[]),
            ("MULTI", &[]),
            ("EXEC", &[]),
            ("PING", &[]),
            ("DFLYCLUSTER FLUSHSLOTS 0 100", &[]),
            ("FT.CREATE idx ON HASH", &[]),
            ("FT.DROPINDEX idx", &[]),
            ("EVAL script 2 a b x y", &[3, 4]),
            ("EVALSHA sha 0 x", &[]),
            ("FCALL f 1 a x", &[3]),
            // SORT / GEO with destinations
            ("SORT k", &[1]),
            ("SORT k LIMIT 0 5 STORE d", &[1, 6]),
            ("SORT k store d", &[1, 3]),
            ("GEORADIUS k 0 0 5 km STORE d", &[1, 7]),
            ("GEORADIUSBYMEMBER k m 5 km STOREDIST d", &[1, 6]),
            ("GEOSEARCHSTORE d s FROMMEMBER m BYRADIUS 5 km", &[1, 2]),
            ("GEOADD k 0 0 m", &[1]),
            ("OBJECT ENCODING k", &[2]),
            ("MEMORY USAGE k", &[2]),
            ("MEMORY STATS", &[]),
            ("MIGRATE h 6379 k 0 100", &[3]),
            ("MIGRATE h 6379  0 100 COPY KEYS a b", &[8, 9]),
            // Dragonfly-only
            ("FIELDEXPIRE k 10 f", &[1]),
            ("DELEX k", &[1]),
            ("PREPEND k v", &[1]),
            ("CL.THROTTLE k 1 2 3", &[1]),
            ("BF.ADD k x", &[1]),
            ("CMS.INCRBY k x 1", &[1]),
        ];
        for (c, want) in cases {
            assert_eq!(keys(c), *want, "{c}");
        }
    }

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(keys("del a b"), vec![1, 2]);
        assert_eq!(keys("xGroup create k g $"), vec![2]);
        assert_eq!(keys("bitop or d a"), vec![2, 3]);
        assert_eq!(keys("flushall"), Vec::<usize>::new());
        assert_eq!(keys("ft.search idx q"), Vec::<usize>::new());
    }

    #[test]
    fn unknown_commands_use_argv1() {
        assert_eq!(keys_of(&av("NOSUCHCMD k x y")), Keys::Single(1));
        assert_eq!(keys_of(&av("NOSUCHCMD")), Keys::None);
        let long = "X".repeat(40);
        assert_eq!(keys_of(&av(&format!("{long} k"))), Keys::Single(1));
        assert_eq!(keys_of(&Argv::default()), Keys::None);
    }

    #[test]
    fn normalisation_and_malformed() {
        assert_eq!(keys_of(&av("DEL k")), Keys::Single(1));
        assert_eq!(keys_of(&av("DEL")), Keys::None);
        assert_eq!(keys_of(&av("MSET a 1 b 2")), Keys::Many(vec![1, 3]));
        // A dangling MSET key is still a key (the command is sent whole and fails there).
        assert_eq!(keys("MSET a 1 b"), vec![1, 3]);
        // numkeys larger than the arguments, or not a number.
        assert_eq!(keys("ZUNIONSTORE d 5 a"), vec![1, 3]);
        assert_eq!(keys("ZUNIONSTORE d x a"), vec![1]);
        assert_eq!(keys("EVAL s"), Vec::<usize>::new());
        assert_eq!(keys("EVAL s -1 a"), Vec::<usize>::new());
        assert_eq!(keys("BITOP AND"), Vec::<usize>::new());
        assert_eq!(keys("RENAME a"), vec![1]);
        assert_eq!(keys("XREAD STREAMS"), Vec::<usize>::new());
        assert_eq!(keys("SORT k STORE"), vec![1]);
        assert_eq!(keys("BLPOP 0"), Vec::<usize>::new());
    }

    #[test]
    fn single_key_fast_path_agrees_with_the_table() {
        for name in SINGLE_KEY {
            let mut a = Argv::default();
            for arg in [name, b"k", b"1", b"2", b"3"] {
                a.push(arg);
            }
            assert_eq!(keys_of(&a).indices(), &[1], "{}", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn slot_hints_agree_with_split() {
        for c in ["SET foo v", "RPUSH {t}a x", "DEL {t}a {t}b", "MSET a 1 b 2", "DEL a b", "PING", "RENAME a b", "EVAL s 1 foo"] {
            let c = cmd(c);
            let want = match split(&c) {
                Split::One(Some(s)) => s,
                _ => NO_HINT,
            };
            assert_eq!(slot_hint(&c), want, "{}", c.describe());
        }
        assert_eq!(slot_hint(&cmd("SET foo v")), 12182);
        assert_eq!(slot_hint(&cmd("MSET a 1 b 2")), NO_HINT);
    }

    #[test]
    fn slot_of_commands() {
        assert_eq!(slot_of(&av("SET foo v")), Some(12182));
        assert_eq!(slot_of(&av("XGROUP CREATE bar g $")), Some(5061));
        assert_eq!(slot_of(&av("BITOP AND {t}d {t}a")), Some(key_slot(b"t")));
        assert_eq!(slot_of(&av("EVAL s 1 foo")), Some(12182));
        assert_eq!(slot_of(&av("EVAL s 0")), None);
        assert_eq!(slot_of(&av("FLUSHALL")), None);
    }

    #[test]
    fn single_slot_and_keyless_are_one() {
        for c in [
            "SET foo v",
            "FLUSHALL",
            "PUBLISH ch m",
            "DEL foo",
            "DEL {t}a {t}b {t}c",
            "MSET {t}a 1 {t}b 2",
            "RENAME {u}a {u}b",
            "SMOVE {u}a {u}b m",
            "EVAL s 2 {x}1 {x}2",
            "DEL foo foo",
        ] {
            assert!(matches!(split(&cmd(c)), Split::One(_)), "{c}");
        }
    }

    #[test]
    fn del_family_splits_per_slot_in_first_appearance_order() {
        assert_slots_differ(&["foo", "bar", "baz"]);
        assert_eq!(key_slot(b"{foo}x"), key_slot(b"foo"));
        let c = Cmd { db: 3, argv: av("DEL foo bar {foo}x baz bar") };
        let want: Vec<Cmd> =
            ["DEL foo {foo}x", "DEL bar bar", "DEL baz"].iter().map(|s| Cmd { db: 3, argv: av(s) }).collect();
        assert_eq!(split(&c), Split::PerSlot(want));
        for name in ["UNLINK", "TOUCH", "EXISTS", "unlink"] {
            let got = split(&cmd(&format!("{name} foo bar")));
            assert_eq!(got, Split::PerSlot(cmds(&[&format!("{name} foo"), &format!("{name} bar")])), "{name}");
        }
    }

    #[test]
    fn mset_splits_pairs_and_msetnx_becomes_mset() {
        let got = split(&cmd("MSET foo 1 bar 2 {bar}y 3 foo 4"));
        assert_eq!(got, Split::PerSlot(cmds(&["MSET foo 1 foo 4", "MSET bar 2 {bar}y 3"])));
        let got = split(&cmd("msetnx foo 1 bar 2"));
        assert_eq!(got, Split::PerSlot(cmds(&["MSET foo 1", "MSET bar 2"])));
        // Single-slot MSETNX stays MSETNX.
        assert_eq!(split(&cmd("MSETNX {a}1 x {a}2 y")), Split::One(Some(key_slot(b"{a}1"))));
        // A dangling argument is never dropped.
        assert!(matches!(split(&cmd("MSET foo 1 bar")), Split::CrossSlot(r) if r.contains("odd")));
    }

    #[test]
    fn json_mset_splits_triples() {
        let got = split(&cmd("JSON.MSET foo $ 1 bar $.a 2 {foo}x $ 3"));
        assert_eq!(got, Split::PerSlot(cmds(&["JSON.MSET foo $ 1 {foo}x $ 3", "JSON.MSET bar $.a 2"])));
        assert_eq!(split(&cmd("JSON.MSET {a}1 $ 1 {a}2 $ 2")), Split::One(Some(key_slot(b"{a}1"))));
        assert!(matches!(split(&cmd("JSON.MSET foo $ 1 bar $")), Split::CrossSlot(r) if r.contains("triples")));
    }

    #[test]
    fn binary_values_survive_a_split() {
        let c = Cmd { db: 0, argv: Argv::from_slices(&[&b"MSET"[..], b"foo", b"\x00\xff\r\n", b"bar", b""]) };
        let want = vec![
            Cmd { db: 0, argv: Argv::from_slices(&[&b"MSET"[..], b"foo", b"\x00\xff\r\n"]) },
            Cmd { db: 0, argv: Argv::from_slices(&[&b"MSET"[..], b"bar", b""]) },
        ];
        assert_eq!(split(&c), Split::PerSlot(want));
    }

    #[test]
    fn other_multi_key_commands_are_cross_slot() {
        for c in [
            "RENAME foo bar",
            "RENAMENX foo bar",
            "SMOVE foo bar m",
            "LMOVE foo bar LEFT RIGHT",
            "RPOPLPUSH foo bar",
            "SINTERSTORE foo bar",
            "PFMERGE foo bar",
            "BITOP AND foo bar",
            "COPY foo bar",
            "SORT foo STORE bar",
            "ZUNIONSTORE foo 1 bar",
            "EVAL s 2 foo bar",
            "MGET foo bar",
            "BLPOP foo bar 0",
        ] {
            match split(&cmd(c)) {
                Split::CrossSlot(reason) => {
                    let name = c.split(' ').next().unwrap();
                    assert!(reason.starts_with(name), "{c}: {reason}");
                    assert!(reason.contains("\"foo\" (slot 12182)") && reason.contains("\"bar\" (slot 5061)"), "{c}: {reason}");
                }
                other => panic!("{c}: {other:?}"),
            }
        }
        // The reason names the keys and their slots, and is bounded.
        let many = format!("SINTERSTORE {}", (0..20).map(|i| format!("k{i}")).collect::<Vec<_>>().join(" "));
        let Split::CrossSlot(r) = split(&cmd(&many)) else { panic!() };
        assert!(r.contains("and 16 more"), "{r}");
    }
}
