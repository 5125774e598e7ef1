//! Whole snapshot values as `RESTORE key ttl payload REPLACE ABSTTL`, and back to commands
//! when the target refuses one.
//!
//! The payload is Redis's DUMP format built from the bytes the master sent: `type byte +
//! encoded value + u16 LE RDB version + u64 LE CRC-64 (Jones, as Redis computes it)`. The
//! version is the oldest RDB version that has the type, because a server refuses a payload
//! newer than its own format; which types a target loads is decided from its version
//! ([`crate::target::server::ServerInfo::restore_types`]) before any is sent.

use super::{Clock, Cmd, Policy, ReplayError, Replayer};
use crate::protocol::{rdb_type as t, Argv, JournalRecord, RecordKind};

/// The collection types Dragonfly sends in an encoding Redis loads as it is (types 2, 4, 5,
/// 11, 16, 17, 18), in the order they are logged. Strings (type 0) are left out: Redis takes
/// `SET` faster than a RESTORE of the same string.
pub const COLLECTION_TYPES: &[u8] =
    &[t::HASH_LISTPACK, t::ZSET_LISTPACK, t::LIST_QUICKLIST_2, t::SET_INTSET, t::HASH, t::ZSET_2, t::SET];

/// Slice-by-16: the checksum runs over every byte of every RESTORE payload on the hot path.
const CRC64: crc::Crc<u64, crc::Table<16>> = crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_REDIS);

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

/// The `RESTORE` of a whole value (`encoded`: its type byte and value bytes), replacing the
/// key and carrying its expiry as an absolute time.
pub fn restore(db: u32, key: &[u8], expire_at_ms: Option<u64>, encoded: &[u8]) -> Cmd {
    let version = rdb_version_for(encoded[0]).to_le_bytes();
    let mut crc = CRC64.digest();
    crc.update(encoded);
    crc.update(&version);
    let crc = crc.finalize().to_le_bytes();
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
}
