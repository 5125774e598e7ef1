//! Journal records to commands (protocol doc 7.5 and 12).
//!
//! Most records are standard Redis commands and pass through unchanged. Dragonfly-only
//! syntax is translated where an exact or policy-approved equivalent exists (`STICK` and
//! `_MCFLAGS` stripped, `SADDEX`/`HSETEX` to `SADD`/`HSET`, `RESTORE` payloads decoded and
//! rebuilt with ordinary commands) and counted otherwise.

use super::{restore, Cmd, MemberTtlPolicy, RecordClass, ReplayError, Replayer};
use crate::protocol::{Argv, JournalRecord, RecordKind};

/// Dragonfly commands Redis does not have, with the reason logged when one is skipped.
const DRAGONFLY_ONLY: &[(&str, &str)] = &[
    ("FIELDEXPIRE", "FIELDEXPIRE (Dragonfly-only command)"),
    ("DELEX", "DELEX (Dragonfly-only command)"),
    ("GAT", "GAT (memcache command)"),
    ("PREPEND", "PREPEND (memcache command)"),
    ("CL.THROTTLE", "CL.THROTTLE (Dragonfly-only command)"),
    ("DFLYCLUSTER", "DFLYCLUSTER (Dragonfly cluster command)"),
];

/// Command prefixes of Dragonfly-only data types, skipped like their snapshot values.
const DRAGONFLY_TYPE_PREFIXES: &[(&str, &str)] = &[
    ("BF.", "Bloom filter command (Dragonfly-only type)"),
    ("CF.", "Cuckoo filter command (Dragonfly-only type)"),
    ("CMS.", "count-min sketch command (Dragonfly-only type)"),
    ("TOPK.", "top-k command (Dragonfly-only type)"),
    ("FT.", "search index command (not replicated)"),
];

/// Write commands (or forms) Redis 7.0 introduced that Dragonfly journals verbatim when its
/// clients send them. A target before 7.0 would refuse them; the session stops with this
/// reason instead of a bare "unknown command" from the target.
fn needs_redis7(argv: &Argv) -> Option<&'static str> {
    let name = argv.get(0).unwrap_or_default();
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if ["LMPOP", "BLMPOP", "ZMPOP", "BZMPOP", "FCALL", "FUNCTION"].iter().any(|n| is(n)) {
        return Some("the command is Redis 7.0's");
    }
    // EXPIRE ... NX|XX|GT|LT (Dragonfly journals PEXPIREAT key ms, without them).
    if ["EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT"].iter().any(|n| is(n)) && argv.len() > 3 {
        return Some("expiry options NX/XX/GT/LT are Redis 7.0's");
    }
    None
}

/// `XSETID key id ENTRIESADDED n MAXDELETEDID id`, `XGROUP CREATE|SETID key group id ...
/// ENTRIESREAD n` for a target before Redis 7.0: the 7.0 arguments left out (counted as
/// altered when they carried something); `None` for every other command.
fn without_stream_meta(r: &mut Replayer, db: u32, argv: &Argv) -> Option<Argv> {
    let name = argv.get(0).unwrap_or_default();
    let key = argv.get(1).unwrap_or_default();
    // Options begin after `XSETID key id` and after `XGROUP CREATE|SETID key group id`.
    let (options_at, reason) = if name.eq_ignore_ascii_case(b"XSETID") {
        (3, super::STREAM_META_NOT_KEPT)
    } else if name.eq_ignore_ascii_case(b"XGROUP")
        && argv.get(1).is_some_and(|s| s.eq_ignore_ascii_case(b"CREATE") || s.eq_ignore_ascii_case(b"SETID"))
    {
        (5, super::ENTRIES_READ_NOT_KEPT)
    } else {
        return None;
    };
    let dropped = |a: &[u8]| {
        a.eq_ignore_ascii_case(b"ENTRIESADDED") || a.eq_ignore_ascii_case(b"MAXDELETEDID") || a.eq_ignore_ascii_case(b"ENTRIESREAD")
    };
    if !argv.iter().skip(options_at).any(dropped) {
        return None;
    }
    let mut out = Argv::with_capacity(argv.byte_len(), argv.len());
    let mut lost = false;
    let mut i = 0;
    while let Some(a) = argv.get(i) {
        if i >= options_at && dropped(a) {
            // ENTRIESREAD -1 says "unknown": nothing is lost by leaving it out.
            lost |= !(a.eq_ignore_ascii_case(b"ENTRIESREAD") && argv.get(i + 1) == Some(b"-1".as_slice()));
            i += 2;
            continue;
        }
        out.push(a);
        i += 1;
    }
    if lost {
        let key = if reason == super::ENTRIES_READ_NOT_KEPT { argv.get(2).unwrap_or_default() } else { key };
        r.stats.note(false, reason, db, key);
    }
    Some(out)
}

/// `rec.argv` is taken (moved into the command) when the record passes through unchanged, the
/// common case: no copy per record. It is left in place for global commands.
pub(super) fn record(r: &mut Replayer, rec: &mut JournalRecord, out: &mut Vec<Cmd>) -> Result<RecordClass, ReplayError> {
    if rec.kind == RecordKind::Ping {
        return Ok(RecordClass::Normal);
    }
    let argv = &rec.argv;
    let name = argv.get(0).unwrap_or_default();
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    let key = argv.get(1).unwrap_or_default();
    let db = rec.db;
    if is("FLUSHALL") || is("FLUSHDB") {
        return Ok(RecordClass::Global { txid: rec.txid });
    }
    if r.target_before_7() {
        if let Some(why) = needs_redis7(argv) {
            // Named by its first key where it has one (LMPOP's argument 1 is a count).
            let first = crate::target::keyspec::keys_of(argv).indices().first().and_then(|&i| argv.get(i));
            let on = first.map_or(String::new(), |k| format!(" for key {}", crate::protocol::cursor::show(k)));
            return Err(ReplayError(format!(
                "journal record {}{on} in db {db} cannot be written: {why}, and the target speaks Redis {} \
                 (replicate into Redis 7.0 or later, or Valkey)",
                argv.name_upper(),
                r.target
            )));
        }
        if let Some(argv) = without_stream_meta(r, db, argv) {
            out.push(Cmd { db, argv });
            return Ok(RecordClass::Normal);
        }
    }
    if is("SET") {
        let argv = strip_set_extras(std::mem::take(&mut rec.argv));
        out.push(Cmd { db, argv });
    } else if is("RESTORE") {
        restore::record(r, rec, out)?;
    } else if is("STICK") {
        r.stats.note(false, "sticky flag (Dragonfly STICK) dropped", db, key);
    } else if is("SADDEX") || is("HSETEX") {
        member_ttl_command(r, rec, out)?;
    } else if name.len() > 5 && name[..5].eq_ignore_ascii_case(b"JSON.") {
        if let Some((_, record)) = r.policy.json.skip_reasons() {
            r.stats.note(true, record, db, key);
        } else {
            // Values (and paths, which hold no wide integer) follow the key.
            if argv.iter().skip(2).any(crate::json::has_wide_integer) {
                r.stats.note(false, super::JSON_WIDE_INTEGER, db, key);
            }
            let argv = first_json_members(std::mem::take(&mut rec.argv));
            out.push(Cmd { db, argv });
        }
    } else if let Some((_, reason)) = DRAGONFLY_ONLY.iter().find(|(n, _)| is(n)) {
        r.stats.note(true, reason, db, key);
    } else if let Some((_, reason)) =
        DRAGONFLY_TYPE_PREFIXES.iter().find(|(p, _)| name.len() > p.len() && name[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
    {
        r.stats.note(true, reason, db, key);
    } else {
        out.push(Cmd { db, argv: std::mem::take(&mut rec.argv) });
    }
    Ok(RecordClass::Normal)
}

/// The arguments of a `JSON.*` record that are JSON values (which the target parses):
/// `JSON.SET` / `JSON.MERGE key path value`, `JSON.MSET key path value ...`,
/// `JSON.ARRAPPEND key path value...`, `JSON.ARRINSERT key path index value...`.
fn json_value_args(name: &[u8], argc: usize) -> Vec<usize> {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if is("JSON.SET") || is("JSON.MERGE") {
        (3..argc.min(4)).collect()
    } else if is("JSON.MSET") {
        (3..argc).step_by(3).collect()
    } else if is("JSON.ARRAPPEND") {
        (3..argc).collect()
    } else if is("JSON.ARRINSERT") {
        (4..argc).collect()
    } else {
        Vec::new()
    }
}

/// A `JSON.*` record whose values repeat a member name in an object, with only the first of
/// each kept ([`crate::json::first_members_only`]): Dragonfly applied the command keeping the
/// first, RedisJSON would keep the last. Any other record is returned as it is (no copy).
fn first_json_members(argv: Argv) -> Argv {
    let name = argv.get(0).unwrap_or_default();
    let fixed: Vec<(usize, Vec<u8>)> = json_value_args(name, argv.len())
        .into_iter()
        .filter_map(|i| crate::json::first_members_only(argv.get(i)?).map(|t| (i, t)))
        .collect();
    if fixed.is_empty() {
        return argv;
    }
    let mut out = Argv::with_capacity(argv.byte_len(), argv.len());
    for (i, a) in argv.iter().enumerate() {
        match fixed.iter().find(|f| f.0 == i) {
            Some((_, t)) => out.push(t),
            None => out.push(a),
        }
    }
    out
}

/// `SET key value [options]` without Dragonfly's `STICK` and `_MCFLAGS <n>`.
fn strip_set_extras(argv: Argv) -> Argv {
    let has_extras = argv.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"STICK") || a.eq_ignore_ascii_case(b"_MCFLAGS"));
    if !has_extras {
        return argv;
    }
    let mut out = Argv::with_capacity(argv.byte_len(), argv.len());
    let mut skip_next = false;
    for (i, a) in argv.iter().enumerate() {
        if skip_next {
            skip_next = false;
            continue;
        }
        if i >= 3 && a.eq_ignore_ascii_case(b"STICK") {
            continue;
        }
        if i >= 3 && a.eq_ignore_ascii_case(b"_MCFLAGS") {
            skip_next = true;
            continue;
        }
        out.push(a);
    }
    out
}

/// Dragonfly's `SADDEX key seconds member...` and `HSETEX key [NX] [KEEPTTL] seconds field
/// value...` as `SADD`/`HSET` without the TTL (policy `DropTtl`), or skipped.
fn member_ttl_command(r: &mut Replayer, rec: &JournalRecord, out: &mut Vec<Cmd>) -> Result<(), ReplayError> {
    let argv = &rec.argv;
    let key = argv.get(1).unwrap_or_default();
    if r.policy.member_ttl == MemberTtlPolicy::Skip {
        r.stats.note(true, "hash field or set member TTLs (policy: skip)", rec.db, key);
        return Ok(());
    }
    let hash = argv.get(0).is_some_and(|n| n.eq_ignore_ascii_case(b"HSETEX"));
    // Skip the flags, then the TTL seconds.
    let mut i = 2;
    while argv.get(i).is_some_and(|a| a.eq_ignore_ascii_case(b"NX") || a.eq_ignore_ascii_case(b"KEEPTTL")) {
        i += 1;
    }
    let rest: Vec<&[u8]> = argv.iter().skip(i + 1).collect();
    if rest.is_empty() || (hash && rest.len() % 2 != 0) {
        return Err(ReplayError(format!("cannot translate journal record {argv:?}: unexpected arguments")));
    }
    let mut a = Argv::with_capacity(argv.byte_len(), rest.len() + 2);
    a.push(if hash { b"HSET" } else { b"SADD" });
    a.push(key);
    for x in rest {
        a.push(x);
    }
    r.stats.note(false, "hash field or set member TTLs dropped", rec.db, key);
    out.push(Cmd { db: rec.db, argv: a });
    Ok(())
}
