//! `RESTORE key ttl payload REPLACE ABSTTL [STICK]` records (cross-shard RENAME, COPY).
//!
//! The payload is Dragonfly's DUMP format: `type + value + u16 LE rdb version + u64 LE CRC-64`.
//! Passing it to Redis would fail for stream type 21 on Redis < 7.2 and for every
//! Dragonfly-only type, so it is decoded with the snapshot entry parser and rebuilt with the
//! same commands as a snapshot entry of that key, policies included.

use super::{Cmd, ReplayError, Replayer};
use crate::protocol::cursor::{show, Cursor, Stop};
use crate::protocol::{EntryParser, Item, JournalRecord, Space};

pub(super) fn record(r: &mut Replayer, rec: &JournalRecord, out: &mut Vec<Cmd>) -> Result<(), ReplayError> {
    let argv = &rec.argv;
    let bad = |why: String| ReplayError(format!("journal record RESTORE in db {}: {why}", rec.db));
    let (Some(key), Some(ttl), Some(payload)) = (argv.get(1), argv.get(2), argv.get(3)) else {
        return Err(bad("expected RESTORE key ttl payload".into()));
    };
    let ttl: i64 = std::str::from_utf8(ttl)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&t| t >= 0)
        .ok_or_else(|| bad(format!("TTL {} is not a non-negative integer", show(ttl))))?;
    let absolute = argv.iter().skip(4).any(|a| a.eq_ignore_ascii_case(b"ABSTTL"));
    let expire = match (ttl, absolute) {
        (0, _) => None,
        (t, true) => Some(t as u64),
        (t, false) => Some(r.clock.now_ms() + t as u64),
    };
    let mut pieces = decode(rec.db, key, expire, payload, r.limits).map_err(|e| bad(format!("key {}: {e}", show(key))))?;
    // A RESTORE replaces the key whether or not the target started empty.
    let from = out.len();
    for p in &mut pieces {
        if let Item::Value(v) = p {
            super::value::piece(r, v, out, true);
        }
    }
    r.map_dbs(&mut out[from..]);
    Ok(())
}

/// Decode a DUMP payload into the value pieces of `key`.
pub fn decode(
    db: u32,
    key: &[u8],
    expire: Option<u64>,
    payload: &[u8],
    limits: crate::protocol::Limits,
) -> Result<Vec<Item>, String> {
    if payload.len() < 11 {
        return Err(format!("payload of {} bytes is shorter than a DUMP frame", payload.len()));
    }
    let (body, crc) = payload.split_at(payload.len() - 8);
    let crc = u64::from_le_bytes(crc.try_into().unwrap());
    if crate::crc64::update(0, body) != crc {
        return Err("payload CRC-64 does not match".into());
    }
    let value = &body[1..body.len() - 2];
    let mut p = EntryParser::for_value(db, key.to_vec(), body[0], expire, limits)?;
    let mut out = Vec::new();
    let mut cur = Cursor::new(value, Space::Payload, 1);
    match p.step(&mut cur, &mut out) {
        Ok(()) if cur.is_empty() => Ok(out),
        Ok(()) => Err(format!("{} bytes follow the value", cur.remaining())),
        Err(Stop::More(_)) => Err("value is truncated".into()),
        Err(Stop::Err(e)) => Err(e.to_string()),
    }
}
