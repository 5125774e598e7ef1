//! Snapshot pieces to commands.
//!
//! A key's first piece replaces whatever the target held (`DEL`, or `SET` for strings); the
//! following pieces add elements in bounded commands; the last piece applies the TTL as an
//! absolute time. Streams are rebuilt with explicit IDs, `XSETID` and their consumer groups.

use std::sync::Arc;

use super::{Cmd, Decision, MemberTtlPolicy, Replayer};
use crate::protocol::cursor::show;
use crate::protocol::{rdb_type as t, Argv, Piece, StreamGroup, StreamMeta, ValuePiece};

const TMP_GROUP: &[u8] = b"df2redis-tmp";

/// `replace`: make the key's first piece replace whatever the target holds (a `DEL` first).
pub(super) fn piece(r: &mut Replayer, v: &mut ValuePiece, out: &mut Vec<Cmd>, replace: bool) {
    let h = &v.head;
    let ptr = Arc::as_ptr(h) as usize;
    let decision = if v.first {
        let d = decide(r, v);
        if !v.last {
            r.open.insert(ptr, d);
        }
        d
    } else {
        let d = r.open.get(&ptr).copied().unwrap_or(Decision::Write);
        if v.last {
            r.open.remove(&ptr);
        }
        d
    };
    if decision == Decision::Skip {
        if v.first && replace {
            out.push(replaced_by_nothing(h.db, &h.key));
        }
        return;
    }
    let db = h.db;
    let key = h.key.as_slice();
    let cmd = |args: &[&[u8]]| Cmd::new(db, args);
    let with = |name: &[u8], n: usize| {
        let mut a = Argv::with_capacity(64, n + 2);
        a.push(name);
        a.push(key);
        a
    };
    // A string's SET replaces the old value by itself; everything else starts from nothing.
    if v.first && replace && !matches!(v.piece, Piece::String(_) | Piece::Encoded { .. }) {
        out.push(cmd(&[b"DEL", key]));
    }
    let mut ttl_done = false;
    match &mut v.piece {
        Piece::String(s) => {
            if v.first {
                let mut a = with(b"SET", 3);
                a.push(s);
                if let (true, Some(ms)) = (v.last, h.expire_at_ms) {
                    a.push(b"PXAT");
                    a.push(ms.to_string().as_bytes());
                    ttl_done = true;
                }
                out.push(Cmd { db, argv: a });
            } else if !s.is_empty() {
                out.push(cmd(&[b"APPEND", key, s]));
            }
        }
        Piece::ListElems(elems) => push_many(out, db, with(b"RPUSH", elems.len()), elems.iter().map(|e| e.as_slice())),
        Piece::SetMembers(m) => push_many(out, db, with(b"SADD", m.len()), m.iter().map(|e| e.as_slice())),
        Piece::SetMembersTtl(m) => {
            let now_s = (r.clock.now_ms() / 1000) as i64;
            let live = m.iter().filter(|(_, ttl)| ttl.is_none_or(|s| s > now_s)).map(|(e, _)| e.as_slice());
            push_many(out, db, with(b"SADD", m.len()), live)
        }
        Piece::HashFields(f) => {
            push_many(out, db, with(b"HSET", f.len() * 2), f.iter().flat_map(|(a, b)| [a.as_slice(), b.as_slice()]))
        }
        Piece::HashFieldsTtl(f) => {
            let now_s = (r.clock.now_ms() / 1000) as i64;
            let live = f
                .iter()
                .filter(|(_, _, ttl)| ttl.is_none_or(|s| s > now_s))
                .flat_map(|(a, b, _)| [a.as_slice(), b.as_slice()]);
            push_many(out, db, with(b"HSET", f.len() * 2), live)
        }
        Piece::ZsetMembers(m) => {
            let mut a = with(b"ZADD", m.len() * 2);
            for (member, score) in m {
                a.push(format_score(*score).as_bytes());
                a.push(member);
            }
            if a.len() > 2 {
                out.push(Cmd { db, argv: a });
            }
        }
        Piece::StreamEntries(entries) => {
            for e in entries {
                let mut a = with(b"XADD", e.fields.len() + 1);
                a.push(e.id.to_string().as_bytes());
                for f in &e.fields {
                    a.push(f);
                }
                out.push(Cmd { db, argv: a });
            }
        }
        Piece::StreamMeta(m) => stream_meta(r, out, db, key, m),
        Piece::StreamGroup(g) => stream_group(r, out, db, key, g),
        Piece::Json(doc) => out.push(cmd(&[b"JSON.SET", key, b"$", doc])),
        Piece::Opaque(_) => {}
        Piece::Encoded { bytes, start } => {
            // RESTORE ... REPLACE ABSTTL replaces the key and sets its expiry in one command.
            if super::dump::rdb_version_for(bytes[*start]) <= r.target_rdb {
                // The target loads the value as it is: its buffer becomes the command.
                match super::dump::restore_framed(db, key, h.expire_at_ms, std::mem::take(bytes), *start) {
                    Ok(c) => out.push(c),
                    Err(b) => out.push(super::dump::restore(db, key, h.expire_at_ms, &b[*start..])),
                }
                return;
            }
            let e = &bytes[*start..];
            match super::dump::for_target(e, r.target_rdb) {
                Ok(payload) => out.push(super::dump::restore(db, key, h.expire_at_ms, &payload)),
                // The parser checked the value, so this is not expected; the element path
                // still writes it exactly.
                Err(why) => {
                    log::warn!("key {} in db {db}: re-encoding for the target failed ({why}); written as commands", show(key));
                    let cmd = super::dump::restore(db, key, h.expire_at_ms, e);
                    out.extend(super::dump::fallback(&cmd).unwrap_or_default());
                }
            }
            ttl_done = true;
        }
    }
    if v.last && !ttl_done {
        if let Some(ms) = h.expire_at_ms {
            out.push(cmd(&[b"PEXPIREAT", key, ms.to_string().as_bytes()]));
        }
    }
}

/// Decide, at a key's first piece, whether it is written; count and log when it is not.
fn decide(r: &mut Replayer, v: &ValuePiece) -> Decision {
    let h = &v.head;
    let skip = |r: &mut Replayer, out_reason: &'static str| {
        r.stats.note(true, out_reason, h.db, &h.key);
        Decision::Skip
    };
    if h.expire_at_ms.is_some_and(|ms| ms <= r.clock.now_ms()) {
        // Dragonfly's own loader drops such keys; the target must not keep an old value.
        r.stats.expired_on_arrival += 1;
        return Decision::Skip;
    }
    match h.rdb_type {
        t::JSON => match r.policy.json.skip_reasons() {
            Some((document, _)) => skip(r, document),
            None => {
                // A document is one piece: its whole text is here.
                if matches!(&v.piece, Piece::Json(doc) if crate::json::has_wide_integer(doc)) {
                    r.stats.note(false, super::JSON_WIDE_INTEGER, h.db, &h.key);
                }
                Decision::Write
            }
        },
        t::HASH_WITH_EXPIRY | t::SET_WITH_EXPIRY => match r.policy.member_ttl {
            MemberTtlPolicy::Skip => skip(r, "hash field or set member TTLs (policy: skip)"),
            MemberTtlPolicy::DropTtl => {
                r.stats.note(false, "hash field or set member TTLs dropped", h.db, &h.key);
                Decision::Write
            }
        },
        t::SBF | t::SBF2 => skip(r, "Bloom filter (Dragonfly-only type)"),
        t::CUCKOO => skip(r, "Cuckoo filter (Dragonfly-only type)"),
        t::CMS => skip(r, "count-min sketch (Dragonfly-only type)"),
        t::TOPK => skip(r, "top-k (Dragonfly-only type)"),
        _ => Decision::Write,
    }
}

/// `DEL` for keys that arrive expired or skipped, so that no stale target value survives.
fn replaced_by_nothing(db: u32, key: &[u8]) -> Cmd {
    Cmd::new(db, &[b"DEL", key])
}

fn push_many<'a>(out: &mut Vec<Cmd>, db: u32, mut a: Argv, items: impl Iterator<Item = &'a [u8]>) {
    for i in items {
        a.push(i);
    }
    if a.len() > 2 {
        out.push(Cmd { db, argv: a });
    }
}

/// Shortest text that parses back to the same double; `inf`/`-inf` as Redis accepts them.
pub fn format_score(s: f64) -> String {
    if s.is_infinite() {
        return if s > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // Rust's Display for f64 is the shortest round-trip representation, without exponent.
    format!("{s}")
}

fn stream_meta(r: &mut Replayer, out: &mut Vec<Cmd>, db: u32, key: &[u8], m: &StreamMeta) {
    if m.length == 0 {
        // No XADD created the key: make an empty stream, as the source has one.
        out.push(Cmd::new(db, &[b"XGROUP", b"CREATE", key, TMP_GROUP, b"0", b"MKSTREAM"]));
        out.push(Cmd::new(db, &[b"XGROUP", b"DESTROY", key, TMP_GROUP]));
    }
    if r.target_before_7() {
        // Redis 6.2 has `XSETID key id` only, and keeps neither counter.
        r.stats.note(false, super::STREAM_META_NOT_KEPT, db, key);
        out.push(Cmd::new(db, &[b"XSETID", key, m.last_id.to_string().as_bytes()]));
        return;
    }
    out.push(Cmd::new(
        db,
        &[
            b"XSETID",
            key,
            m.last_id.to_string().as_bytes(),
            b"ENTRIESADDED",
            m.entries_added.to_string().as_bytes(),
            b"MAXDELETEDID",
            m.max_deleted_id.to_string().as_bytes(),
        ],
    ));
}

fn stream_group(r: &mut Replayer, out: &mut Vec<Cmd>, db: u32, key: &[u8], g: &StreamGroup) {
    let last = g.last_id.to_string();
    let mut create = Argv::from_slices(&[b"XGROUP".as_slice(), b"CREATE", key, &g.name, last.as_bytes()]);
    // Dragonfly keeps "unknown" as a huge value; Redis only takes a real count (or none).
    if let Some(n) = g.entries_read.filter(|&n| n <= i64::MAX as u64) {
        if !r.target_before_7() {
            create.push(b"ENTRIESREAD");
            create.push(n.to_string().as_bytes());
        } else {
            r.stats.note(false, super::ENTRIES_READ_NOT_KEPT, db, key);
        }
    }
    out.push(Cmd { db, argv: create });
    for c in &g.consumers {
        out.push(Cmd::new(db, &[b"XGROUP", b"CREATECONSUMER", key, &g.name, &c.name]));
    }
    for p in &g.pending {
        let Some(consumer) = &p.consumer else {
            r.stats.note(false, "stream pending entry without a consumer dropped", db, key);
            continue;
        };
        out.push(Cmd::new(
            db,
            &[
                b"XCLAIM",
                key,
                &g.name,
                consumer,
                b"0",
                p.id.to_string().as_bytes(),
                b"TIME",
                p.delivery_time_ms.to_string().as_bytes(),
                b"RETRYCOUNT",
                p.delivery_count.to_string().as_bytes(),
                b"FORCE",
                b"JUSTID",
            ],
        ));
    }
}
