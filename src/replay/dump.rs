//! Whole snapshot values as `RESTORE key ttl payload REPLACE ABSTTL`, and back to commands
//! when the target refuses one.
//!
//! The payload is Redis's DUMP format built from the bytes the master sent: `type byte +
//! encoded value + u16 LE RDB version + u64 LE CRC-64 (Jones, as Redis computes it)`. The
//! version is the oldest RDB version that has the type, because a server refuses a payload
//! newer than its own format; which types a target loads is decided from its version
//! ([`crate::target::server::ServerInfo::loads_type`]) before any is sent, and the listpack
//! types are re-encoded to their plain forms for a target older than them (Redis 6.2).

use super::{Clock, Cmd, Policy, ReplayError, Replayer};
use crate::protocol::{rdb_type as t, Argv, JournalRecord, RecordKind};

/// The collection types Dragonfly sends in an encoding Redis loads as it is (types 2, 4, 5,
/// 11, 16, 17, 18), in the order they are logged. Strings (type 0) are left out: Redis takes
/// `SET` faster than a RESTORE of the same string.
pub const COLLECTION_TYPES: &[u8] =
    &[t::HASH_LISTPACK, t::ZSET_LISTPACK, t::LIST_QUICKLIST_2, t::SET_INTSET, t::HASH, t::ZSET_2, t::SET];

/// The oldest RDB version that has value type `ty` (Redis 5.0-6.2 write 9, 7.0 writes 10,
/// 7.2 writes 11).
pub fn rdb_version_for(ty: u8) -> u16 {
    match ty {
        0..=t::STREAM_LISTPACKS => 9,
        t::HASH_LISTPACK..=t::STREAM_LISTPACKS_2 => 10,
        20 | t::STREAM_LISTPACKS_3 => 11,
        _ => 12,
    }
}

/// The type a value of type `ty` is re-encoded to for a target whose RDB version predates
/// `ty` (Redis 6.2 has no listpack hashes and sorted sets and no quicklist 2 lists, but loads
/// the plain forms and converts small ones to its own compact encodings).
pub fn older_form(ty: u8) -> Option<u8> {
    match ty {
        t::HASH_LISTPACK => Some(t::HASH),
        t::ZSET_LISTPACK => Some(t::ZSET_2),
        t::LIST_QUICKLIST_2 => Some(LIST_PLAIN),
        _ => None,
    }
}

/// RDB type 1, a list as its element count and elements (every Redis version loads it).
const LIST_PLAIN: u8 = 1;

/// `encoded` in a form a target of RDB version `rdb` loads: as it is, or re-encoded to its
/// [`older_form`]. The parser has checked the value already, so a failure here is a bug
/// rather than bad input; it is reported all the same.
pub fn for_target(encoded: &[u8], rdb: u16) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    let ty = encoded[0];
    if rdb_version_for(ty) <= rdb {
        return Ok(std::borrow::Cow::Borrowed(encoded));
    }
    reencode(encoded).map(std::borrow::Cow::Owned)
}

fn reencode(encoded: &[u8]) -> Result<Vec<u8>, String> {
    use crate::protocol::cursor::{Cursor, Stop};
    use crate::protocol::listpack::{listpack, LpElem};
    let ty = encoded[0];
    let to = older_form(ty).ok_or_else(|| format!("no older form of RDB type {ty}"))?;
    let mut cur = Cursor::new(&encoded[1..], crate::protocol::Space::Payload, 1);
    let stop = |e: Stop| match e {
        Stop::More(_) => "value is truncated".to_string(),
        Stop::Err(e) => e.to_string(),
    };
    let mut out = Vec::with_capacity(encoded.len() + 64);
    out.push(to);
    let elem = |out: &mut Vec<u8>, e: &LpElem| match *e {
        LpElem::Str(s) => rstr(out, s),
        LpElem::Int(i) => rstr(out, i.to_string().as_bytes()),
    };
    match ty {
        t::HASH_LISTPACK | t::ZSET_LISTPACK => {
            let blob = cur.rstr().map_err(stop)?;
            let e = listpack(&blob)?;
            len(&mut out, e.len() as u64 / 2);
            for p in e.chunks_exact(2) {
                elem(&mut out, &p[0]);
                if ty == t::HASH_LISTPACK {
                    elem(&mut out, &p[1]);
                } else {
                    out.extend_from_slice(&crate::protocol::entry::lp_score(&p[1])?.to_le_bytes());
                }
            }
        }
        _ => {
            let nodes = cur.puint().map_err(stop)?;
            let mut body = Vec::with_capacity(encoded.len() + 64);
            let mut n = 0u64;
            for _ in 0..nodes {
                let container = cur.puint().map_err(stop)?;
                let node = cur.rstr().map_err(stop)?;
                if container == 1 {
                    rstr(&mut body, &node);
                    n += 1;
                } else {
                    for e in listpack(&node)? {
                        elem(&mut body, &e);
                        n += 1;
                    }
                }
            }
            len(&mut out, n);
            out.extend_from_slice(&body);
        }
    }
    Ok(out)
}

/// An RDB length (protocol doc 2.2).
fn len(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0x3F => out.push(n as u8),
        0x40..=0x3FFF => out.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]),
        0x4000..=0xFFFF_FFFF => {
            out.push(0x80);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(0x81);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// A plain RDB string.
fn rstr(out: &mut Vec<u8>, s: &[u8]) {
    len(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// The `RESTORE` of a whole value (`encoded`: its type byte and value bytes), replacing the
/// key and carrying its expiry as an absolute time.
pub fn restore(db: u32, key: &[u8], expire_at_ms: Option<u64>, encoded: &[u8]) -> Cmd {
    let version = rdb_version_for(encoded[0]).to_le_bytes();
    let crc = crate::crc64::update(crate::crc64::update(0, encoded), &version).to_le_bytes();
    let ttl = expire_at_ms.unwrap_or(0).to_string();
    let mut a = Argv::with_capacity(key.len() + encoded.len() + 48, 6);
    a.push(b"RESTORE");
    a.push(key);
    a.push(ttl.as_bytes());
    a.push_parts(&[encoded, &version, &crc]);
    a.push(b"REPLACE");
    a.push(b"ABSTTL");
    Cmd { db, argv: a }
}

/// [`restore`] of a [`Piece::Encoded`](crate::protocol::Piece::Encoded) value, framed in
/// its own buffer: the RESTORE's leading arguments go into the room in front of the value,
/// the DUMP trailer and `REPLACE ABSTTL` after it, and the buffer becomes the command's
/// ([`Argv::from_framed`]). The value is not copied again (it was, with the allocation this
/// saves, a tenth of the RESTORE path's time). `None` when the room does not suffice (the
/// caller then uses [`restore`]).
pub fn restore_framed(db: u32, key: &[u8], expire_at_ms: Option<u64>, mut bytes: Vec<u8>, start: usize) -> Result<Cmd, Vec<u8>> {
    let ty = bytes[start];
    let version = rdb_version_for(ty).to_le_bytes();
    let crc = crate::crc64::update(crate::crc64::update(0, &bytes[start..]), &version).to_le_bytes();
    let (mut num, mut ttl) = ([0u8; 20], [0u8; 20]);
    let ttl = crate::protocol::items::digits(&mut ttl, expire_at_ms.unwrap_or(0) as usize);
    let payload_len = bytes.len() - start + version.len() + crc.len();
    // The head, written right-aligned before the value: name, key, TTL, then the payload's
    // length line. Its length first, to know where it starts.
    let bulk = |n: usize, num: &mut [u8; 20]| 3 + crate::protocol::items::digits(num, n).len();
    let head = bulk(7, &mut num) + 7 + 2 + bulk(key.len(), &mut num) + key.len() + 2 + bulk(ttl.len(), &mut num) + ttl.len() + 2
        + bulk(payload_len, &mut num);
    if head > start || u32::try_from(bytes.len() + 64).is_err() {
        return Err(bytes);
    }
    let mut at = start - head;
    let first = at;
    let mut ends = [0u32; 6];
    let put = |bytes: &mut Vec<u8>, at: &mut usize, s: &[u8]| {
        bytes[*at..*at + s.len()].copy_from_slice(s);
        *at += s.len();
    };
    for (i, arg) in [&b"RESTORE"[..], key, ttl].into_iter().enumerate() {
        put(&mut bytes, &mut at, b"$");
        put(&mut bytes, &mut at, crate::protocol::items::digits(&mut num, arg.len()));
        put(&mut bytes, &mut at, b"\r\n");
        put(&mut bytes, &mut at, arg);
        ends[i] = at as u32;
        put(&mut bytes, &mut at, b"\r\n");
    }
    put(&mut bytes, &mut at, b"$");
    put(&mut bytes, &mut at, crate::protocol::items::digits(&mut num, payload_len));
    put(&mut bytes, &mut at, b"\r\n");
    debug_assert_eq!(at, start);
    bytes.extend_from_slice(&version);
    bytes.extend_from_slice(&crc);
    ends[3] = bytes.len() as u32;
    bytes.extend_from_slice(b"\r\n$7\r\nREPLACE");
    ends[4] = bytes.len() as u32;
    bytes.extend_from_slice(b"\r\n$6\r\nABSTTL");
    ends[5] = bytes.len() as u32;
    bytes.extend_from_slice(b"\r\n");
    Ok(Cmd { db, argv: Argv::from_framed(bytes, first, &ends) })
}

/// Whether `cmd` is a RESTORE (the only command a refusal of which is handled by
/// [`fallback`]).
pub fn is_restore(cmd: &Cmd) -> bool {
    cmd.argv.get(0).is_some_and(|n| n.eq_ignore_ascii_case(b"RESTORE"))
}

/// The commands that write what a refused RESTORE would have: `DEL`, the elements in bounded
/// commands, the TTL (a key expired meanwhile is only deleted). The command's db is already
/// the target's.
pub fn fallback(cmd: &Cmd) -> Result<Vec<Cmd>, ReplayError> {
    let rec = JournalRecord { db: cmd.db, txid: 0, kind: RecordKind::Command, argv: cmd.argv.clone(), lsn: None };
    let mut r = Replayer::new(Policy::default(), Clock::System);
    let mut out = Vec::new();
    super::restore::record(&mut r, &rec, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_redis_dump_format_and_decodes_back() {
        // A DUMP of `SADD s a` from Redis 7.0 ends in this version and checksum; a set of
        // type 2 with one member "a" must give the same trailer when built here.
        let cmd = restore(3, b"s", Some(1_900_000_000_000), &[t::SET, 1, 1, b'a']);
        let args: Vec<&[u8]> = cmd.argv.iter().collect();
        assert_eq!(args[0], b"RESTORE");
        assert_eq!(args[2], b"1900000000000");
        let payload = args[3];
        assert_eq!(&payload[..4], &[t::SET, 1, 1, b'a']);
        assert_eq!(&payload[4..6], &9u16.to_le_bytes());
        let crc = crc::Crc::<u64>::new(&crc::CRC_64_REDIS).checksum(&payload[..6]);
        assert_eq!(&payload[6..], &crc.to_le_bytes());
        assert_eq!(&args[4..], &[b"REPLACE".as_slice(), b"ABSTTL"]);
        let back = fallback(&cmd).unwrap();
        let names: Vec<String> = back.iter().map(|c| c.argv.name_upper()).collect();
        assert_eq!(names, ["DEL", "SADD", "PEXPIREAT"]);
        assert!(back.iter().all(|c| c.db == 3));
        assert_eq!(rdb_version_for(t::HASH_LISTPACK), 10);
        assert_eq!(rdb_version_for(t::SET_INTSET), 9);
    }

    #[test]
    fn a_framed_restore_is_the_same_command_in_its_value_buffer() {
        let value = [t::SET, 2, 1, b'a', 0, 0xFF];
        for key in [&b"k"[..], &[b'x'; 300][..], b""] {
            for ttl in [None, Some(1_900_000_000_000u64), Some(u64::MAX)] {
                let want = restore(0, key, ttl, &value[..]);
                let crate::protocol::Piece::Encoded { bytes, start } = crate::protocol::Piece::encoded(value[0], &value[1..], key)
                else {
                    unreachable!()
                };
                let got = restore_framed(0, key, ttl, bytes, start).expect("room enough");
                assert_eq!(got.argv, want.argv);
                let (mut a, mut b) = (Vec::new(), Vec::new());
                got.argv.write_resp(&mut a);
                want.argv.write_resp(&mut b);
                assert_eq!(a, b);
                assert_eq!(got.argv.byte_len(), want.argv.byte_len());
                assert_eq!(got.argv.get(3).unwrap().len(), value.len() + 10);
            }
        }
        // Too little room in front: the buffer is handed back for the copying path.
        let mut small = vec![0u8; 4];
        small.extend_from_slice(&value);
        assert!(restore_framed(0, b"key", None, small, 4).is_err());
    }

    #[test]
    fn listpack_types_are_reencoded_for_rdb_9() {
        // A listpack of "f", 7 (integer), and a quicklist of one packed node holding "a", -3.
        let lp = |elems: &[&[u8]]| {
            let mut body = Vec::new();
            for e in elems {
                match std::str::from_utf8(e).ok().and_then(|s| s.parse::<i64>().ok()) {
                    Some(i) if (0..128).contains(&i) => body.extend_from_slice(&[i as u8, 1]),
                    Some(i) if (-4096..4096).contains(&i) => {
                        let u = (i as u16) & 0x1FFF;
                        body.extend_from_slice(&[0xC0 | (u >> 8) as u8, u as u8, 2]);
                    }
                    _ => {
                        body.push(0x80 | e.len() as u8);
                        body.extend_from_slice(e);
                        body.push(1 + e.len() as u8);
                    }
                }
            }
            let mut out = ((body.len() + 7) as u32).to_le_bytes().to_vec();
            out.extend_from_slice(&(elems.len() as u16).to_le_bytes());
            out.extend_from_slice(&body);
            out.push(0xFF);
            out
        };
        let with_type = |ty: u8, prefix: &[u8], blob: &[u8]| {
            let mut v = vec![ty];
            v.extend_from_slice(prefix);
            rstr(&mut v, blob);
            v
        };
        let hash = with_type(t::HASH_LISTPACK, &[], &lp(&[b"f", b"7"]));
        assert_eq!(for_target(&hash, 10).unwrap().as_ref(), hash.as_slice(), "7.0 takes it as it is");
        assert_eq!(for_target(&hash, 9).unwrap().as_ref(), &[t::HASH, 1, 1, b'f', 1, b'7']);
        let zset = with_type(t::ZSET_LISTPACK, &[], &lp(&[b"m", b"-3"]));
        let mut want = vec![t::ZSET_2, 1, 1, b'm'];
        want.extend_from_slice(&(-3f64).to_le_bytes());
        assert_eq!(for_target(&zset, 9).unwrap().as_ref(), want.as_slice());
        let list = with_type(t::LIST_QUICKLIST_2, &[1, 2], &lp(&[b"a", b"-3"]));
        assert_eq!(for_target(&list, 9).unwrap().as_ref(), &[LIST_PLAIN, 2, 1, b'a', 2, b'-', b'3']);
        // Each decodes back to the same value through the element path.
        let back = fallback(&restore(0, b"h", None, &for_target(&hash, 9).unwrap())).unwrap();
        assert_eq!(back[1].argv.iter().collect::<Vec<_>>(), [b"HSET".as_slice(), b"h", b"f", b"7"]);
    }
}
