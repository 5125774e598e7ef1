//! Unit tests of the item-to-command mapping and its policies.

use std::sync::Arc;

use super::*;
use crate::protocol::{rdb_type as t, EntryHead, Piece, RecordKind, StreamId, StreamMeta};

fn rp(policy: Policy) -> Replayer {
    Replayer::new(policy, Clock::Fixed(1_800_000_000_000))
}

fn head(ty: u8, key: &str, expire: Option<u64>) -> Arc<EntryHead> {
    Arc::new(EntryHead { db: 3, key: key.into(), expire_at_ms: expire, rdb_type: ty, sticky: false, mc_flags: None })
}

fn piece(h: &Arc<EntryHead>, p: Piece, first: bool, last: bool) -> ValuePiece {
    ValuePiece { head: h.clone(), piece: p, first, last, wire_bytes: 0 }
}

fn strs(cmds: &[Cmd]) -> Vec<String> {
    cmds.iter()
        .map(|c| {
            let a: Vec<String> = c.argv.iter().map(|x| String::from_utf8_lossy(x).into_owned()).collect();
            format!("{}:{}", c.db, a.join(" "))
        })
        .collect()
}

fn record(args: &[&str]) -> JournalRecord {
    JournalRecord { db: 1, txid: 0, kind: RecordKind::Command, argv: Argv::from_slices(args), lsn: Some(7) }
}

#[test]
fn strings_overwrite_and_carry_absolute_ttls() {
    let mut r = rp(Policy::default());
    let mut out = vec![];
    r.value(&mut piece(&head(t::STRING, "k", Some(1_900_000_000_000)), Piece::String(b"v".to_vec()), true, true), &mut out);
    let h = head(t::STRING, "big", None);
    r.value(&mut piece(&h, Piece::String(b"ab".to_vec()), true, false), &mut out);
    r.value(&mut piece(&h, Piece::String(b"cd".to_vec()), false, true), &mut out);
    assert_eq!(strs(&out), ["3:SET k v PXAT 1900000000000", "3:SET big ab", "3:APPEND big cd"]);
}

#[test]
fn keys_expired_on_arrival_are_removed_not_written() {
    let mut r = rp(Policy::default());
    let mut out = vec![];
    let h = head(t::LIST_QUICKLIST_2, "old", Some(1_700_000_000_000));
    r.value(&mut piece(&h, Piece::ListElems(vec![b"a".to_vec()]), true, false), &mut out);
    r.value(&mut piece(&h, Piece::ListElems(vec![b"b".to_vec()]), false, true), &mut out);
    assert_eq!(strs(&out), ["3:DEL old"]);
    assert_eq!(r.stats().expired_on_arrival, 1);
}

#[test]
fn collections_start_from_nothing_and_scores_are_exact() {
    let mut r = rp(Policy::default());
    let mut out = vec![];
    let h = head(t::ZSET_2, "z", None);
    let members = vec![(b"lo".to_vec(), f64::NEG_INFINITY), (b"x".to_vec(), 0.1), (b"y".to_vec(), 1e21), (b"hi".to_vec(), f64::INFINITY)];
    r.value(&mut piece(&h, Piece::ZsetMembers(members), true, true), &mut out);
    assert_eq!(strs(&out), ["3:DEL z", "3:ZADD z -inf lo 0.1 x 1000000000000000000000 y inf hi"]);
    for s in ["0.1", "1000000000000000000000", "0.00018352938754621442", "-999834216.5494006"] {
        let f: f64 = s.parse().unwrap();
        assert_eq!(value::format_score(f).parse::<f64>().unwrap().to_bits(), f.to_bits());
    }
}

#[test]
fn an_empty_stream_still_exists_with_its_ids() {
    let mut r = rp(Policy::default());
    let mut out = vec![];
    let h = head(t::STREAM_LISTPACKS_3, "s", None);
    let meta = StreamMeta { length: 0, last_id: StreamId { ms: 5, seq: 1 }, entries_added: 3, max_deleted_id: StreamId { ms: 5, seq: 1 }, ..Default::default() };
    r.value(&mut piece(&h, Piece::StreamMeta(meta), true, true), &mut out);
    assert_eq!(
        strs(&out),
        [
            "3:DEL s",
            "3:XGROUP CREATE s df2redis-tmp 0 MKSTREAM",
            "3:XGROUP DESTROY s df2redis-tmp",
            "3:XSETID s 5-1 ENTRIESADDED 3 MAXDELETEDID 5-1"
        ]
    );
}

#[test]
fn dragonfly_only_values_follow_the_policy_and_are_counted() {
    let mut r = rp(Policy::default());
    let mut out = vec![];
    r.value(&mut piece(&head(t::JSON, "j", None), Piece::Json(b"{}".to_vec()), true, true), &mut out);
    r.value(&mut piece(&head(t::SBF2, "bf", None), Piece::Opaque(10), true, true), &mut out);
    let h = head(t::SET_WITH_EXPIRY, "st", None);
    let now_s = 1_800_000_000;
    r.value(&mut piece(&h, Piece::SetMembersTtl(vec![(b"gone".to_vec(), Some(now_s - 1)), (b"live".to_vec(), Some(now_s + 60)), (b"forever".to_vec(), None)]), true, true), &mut out);
    assert_eq!(strs(&out), ["3:DEL j", "3:DEL bf", "3:DEL st", "3:SADD st live forever"]);
    assert_eq!(r.stats().skipped.values().sum::<u64>(), 2);
    assert_eq!(r.stats().altered.values().sum::<u64>(), 1);

    let mut r = rp(Policy { json: JsonPolicy::JsonSet, member_ttl: MemberTtlPolicy::Skip });
    let mut out = vec![];
    r.value(&mut piece(&head(t::JSON, "j", None), Piece::Json(b"{}".to_vec()), true, true), &mut out);
    r.value(&mut piece(&h, Piece::SetMembersTtl(vec![(b"m".to_vec(), None)]), true, true), &mut out);
    assert_eq!(strs(&out), ["3:DEL j", "3:JSON.SET j $ {}", "3:DEL st"]);
    assert!(r.stats().altered.is_empty());
}

#[test]
fn json_records_with_repeated_member_names_keep_the_first_as_dragonfly_does() {
    let mut r = rp(Policy { json: JsonPolicy::JsonSet, member_ttl: MemberTtlPolicy::DropTtl });
    let mut out = vec![];
    for rec in [
        record(&["JSON.SET", "j", "$", r#"{"a":1,"a":2}"#, "NX"]),
        record(&["JSON.MSET", "j", "$.x", r#"{"b":1,"b":2}"#, "{k}2", "$", "[1]"]),
        record(&["JSON.ARRINSERT", "j", "$.l", "0", r#"{"c":1,"c":2}"#, "3"]),
        record(&["JSON.SET", "j", "$.y", r#"{"d":1}"#]),
    ] {
        r.record(&rec, &mut out).unwrap();
    }
    assert_eq!(
        strs(&out),
        [
            r#"1:JSON.SET j $ {"a":1} NX"#,
            r#"1:JSON.MSET j $.x {"b":1} {k}2 $ [1]"#,
            r#"1:JSON.ARRINSERT j $.l 0 {"c":1} 3"#,
            r#"1:JSON.SET j $.y {"d":1}"#,
        ]
    );
    assert!(r.stats().altered.is_empty() && r.stats().skipped.is_empty());
}

#[test]
fn json_integers_beyond_64_bits_are_written_and_counted_as_altered() {
    let mut r = rp(Policy { json: JsonPolicy::JsonSet, member_ttl: MemberTtlPolicy::DropTtl });
    let mut out = vec![];
    let doc = br#"{"n":123456789012345678901234567890}"#.to_vec();
    r.value(&mut piece(&head(t::JSON, "j", None), Piece::Json(doc), true, true), &mut out);
    for rec in [record(&["JSON.SET", "j", "$.m", "-9223372036854775809"]), record(&["JSON.SET", "j", "$.k", "18446744073709551615"])] {
        r.record(&rec, &mut out).unwrap();
    }
    assert_eq!(strs(&out).len(), 4, "written: {:?}", strs(&out));
    assert_eq!(r.stats().altered.get(crate::replay::JSON_WIDE_INTEGER), Some(&2));
}

#[test]
fn journal_rewrites() {
    let mut r = rp(Policy::default());
    let mut out = vec![];
    for rec in [
        record(&["SET", "k", "v", "PXAT", "1900000000000", "STICK", "_MCFLAGS", "7"]),
        record(&["SET", "k", "v"]),
        record(&["STICK", "k"]),
        record(&["SADDEX", "s", "60", "a", "b"]),
        record(&["HSETEX", "h", "KEEPTTL", "60", "f", "v"]),
        record(&["JSON.SET", "j", "$.a", "2"]),
        record(&["PREPEND", "k", "x"]),
        record(&["INCRBYFLOAT", "f", "1.5"]),
    ] {
        assert_eq!(r.record(&rec, &mut out).unwrap(), RecordClass::Normal);
    }
    assert_eq!(
        strs(&out),
        ["1:SET k v PXAT 1900000000000", "1:SET k v", "1:SADD s a b", "1:HSET h f v", "1:INCRBYFLOAT f 1.5"]
    );
    assert_eq!(r.stats().skipped.values().sum::<u64>(), 2, "{:?}", r.stats());
    let flush = JournalRecord { txid: 9, ..record(&["FLUSHDB"]) };
    assert_eq!(r.record(&flush, &mut out).unwrap(), RecordClass::Global { txid: 9 });
    let ping = JournalRecord { kind: RecordKind::Ping, argv: Argv::default(), ..record(&[]) };
    assert_eq!(r.record(&ping, &mut vec![]).unwrap(), RecordClass::Normal);
}

#[test]
fn restore_payloads_are_decoded_and_checked() {
    // From fixture v1.40.1-default: RESTORE j:renamed <abs ms> <type 0 "pZZ"> REPLACE ABSTTL
    let payload = [0x00, 0x03, 0x70, 0x5A, 0x5A, 0x09, 0x00, 0x3A, 0x73, 0xB5, 0xF7, 0x79, 0x7B, 0xC4, 0xE5];
    let mut r = rp(Policy::default());
    let mut out = vec![];
    let rec = |p: &[u8]| JournalRecord {
        argv: Argv::from_slices(&[b"RESTORE".as_slice(), b"j:renamed", b"1900000000000", p, b"REPLACE", b"ABSTTL"]),
        ..record(&[])
    };
    r.record(&rec(&payload), &mut out).unwrap();
    assert_eq!(strs(&out), ["1:SET j:renamed pZZ PXAT 1900000000000"]);
    let mut bad = payload;
    bad[3] ^= 1;
    let e = r.record(&rec(&bad), &mut out).unwrap_err();
    assert!(e.0.contains("CRC") && e.0.contains("j:renamed"), "{e}");
}

#[test]
fn the_filter_applies_to_snapshot_and_journal_before_the_db_map() {
    let rule = |s: &str| filter::Rule::parse(s).unwrap();
    let f = Filter { include: vec![rule("prefix:a:")], dbs: Some([1, 3].into()), ..Filter::default() };
    let mut r = rp(Policy::default()).with_db_map([(3, 0), (1, 0)].into()).with_filter(Arc::new(f));
    let mut out = vec![];
    // Snapshot: head() puts keys in db 3, mapped to 0; a big key's pieces all follow its first.
    let big = head(t::LIST_QUICKLIST_2, "b:big", None);
    r.value(&mut piece(&big, Piece::ListElems(vec![b"x".to_vec()]), true, false), &mut out);
    r.value(&mut piece(&head(t::STRING, "a:1", None), Piece::String(b"v".to_vec()), true, true), &mut out);
    r.value(&mut piece(&big, Piece::ListElems(vec![b"y".to_vec()]), false, true), &mut out);
    assert_eq!(strs(&out), ["0:SET a:1 v"]);
    // Journal (record() is in db 1, mapped to 0).
    let mut out = vec![];
    for rec in [
        record(&["SET", "a:2", "v"]),
        record(&["SET", "b:2", "v"]),
        record(&["DEL", "a:2", "b:2", "a:3"]),
        record(&["MSET", "b:1", "x", "a:1", "y"]),
        JournalRecord { db: 2, ..record(&["SET", "a:9", "v"]) },
    ] {
        assert_eq!(r.record(&rec, &mut out).unwrap(), RecordClass::Normal);
    }
    assert_eq!(strs(&out), ["0:SET a:2 v", "0:DEL a:2 a:3", "0:MSET a:1 y"]);
    let e = r.record(&record(&["RENAME", "a:1", "b:1"]), &mut out).unwrap_err();
    assert!(e.0.contains("RENAME") && e.0.contains("\"b:1\" (dropped: matches no --include (prefix:a:))"), "{e}");
    let s = r.stats();
    assert_eq!((s.filtered_keys, s.filtered_records, s.split_records), (1, 2, 2));
    // A PING is not a record the filter judges.
    let ping = JournalRecord { kind: RecordKind::Ping, argv: Argv::default(), db: 7, ..record(&[]) };
    assert_eq!(r.record(&ping, &mut vec![]).unwrap(), RecordClass::Normal);
    assert_eq!(r.stats().filtered_records, 2);
}

#[test]
fn a_flushdb_shares_its_target_db_only_with_selected_source_dbs() {
    let rec = JournalRecord { txid: 4, ..record(&["FLUSHDB"]) };
    // dbs 1 and 2 both go to 0: flushing db 1 would flush db 2's keys too...
    let mut r = rp(Policy::default()).with_db_map([(1, 0), (2, 0)].into());
    assert!(r.record(&rec, &mut vec![]).unwrap_err().0.contains("source dbs [2]"));
    // ... unless db 2 is not replicated at all.
    let f = Filter { dbs: Some([1].into()), ..Filter::default() };
    let mut r = rp(Policy::default()).with_db_map([(1, 0), (2, 0)].into()).with_filter(Arc::new(f));
    assert_eq!(r.record(&rec, &mut vec![]).unwrap(), RecordClass::Global { txid: 4 });
    assert_eq!(r.global_command(&rec).db, 0);
    // A FLUSHDB of a db the filter leaves out is left out too.
    let other = JournalRecord { db: 2, ..rec.clone() };
    assert_eq!(r.record(&other, &mut vec![]).unwrap(), RecordClass::Normal);
    assert_eq!(r.stats().filtered_records, 1);
}

#[test]
fn a_redis_6_2_target_gets_streams_without_7_0_metadata_counted_as_altered() {
    use crate::protocol::{StreamConsumer, StreamGroup};
    let mut r = rp(Policy::default()).with_target_version(crate::target::server::Version(6, 2, 14));
    let mut out = vec![];
    let h = head(t::STREAM_LISTPACKS_3, "s", None);
    let meta = StreamMeta { length: 0, last_id: StreamId { ms: 5, seq: 1 }, entries_added: 3, max_deleted_id: StreamId { ms: 5, seq: 1 }, ..Default::default() };
    r.value(&mut piece(&h, Piece::StreamMeta(meta), true, false), &mut out);
    let g = StreamGroup {
        name: b"g".to_vec(),
        last_id: StreamId { ms: 5, seq: 1 },
        entries_read: Some(2),
        consumers: vec![StreamConsumer { name: b"c".to_vec(), seen_time_ms: 0, active_time_ms: None }],
        pending: vec![],
    };
    r.value(&mut piece(&h, Piece::StreamGroup(g), false, true), &mut out);
    assert_eq!(
        strs(&out),
        [
            "3:DEL s",
            "3:XGROUP CREATE s df2redis-tmp 0 MKSTREAM",
            "3:XGROUP DESTROY s df2redis-tmp",
            "3:XSETID s 5-1",
            "3:XGROUP CREATE s g 5-1",
            "3:XGROUP CREATECONSUMER s g c",
        ]
    );
    assert_eq!(r.stats().altered.get(STREAM_META_NOT_KEPT), Some(&1));
    assert_eq!(r.stats().altered.get(ENTRIES_READ_NOT_KEPT), Some(&1));

    // Journal records: the 7.0 arguments are left out; ENTRIESREAD -1 (unknown) loses nothing.
    out.clear();
    for rec in [
        &["XSETID", "s", "9-0", "ENTRIESADDED", "12", "MAXDELETEDID", "3-0"][..],
        &["XGROUP", "SETID", "s", "g", "9-0", "ENTRIESREAD", "4"],
        &["XGROUP", "SETID", "s", "g", "9-0", "ENTRIESREAD", "-1"],
        &["XGROUP", "CREATE", "s", "h", "$", "MKSTREAM", "ENTRIESREAD", "0"],
        &["XSETID", "s", "10-0"],
        &["XGROUP", "CREATE", "s", "ENTRIESREAD", "0"],
    ] {
        assert_eq!(r.record(&record(rec), &mut out), Ok(RecordClass::Normal));
    }
    assert_eq!(
        strs(&out),
        [
            "1:XSETID s 9-0",
            "1:XGROUP SETID s g 9-0",
            "1:XGROUP SETID s g 9-0",
            "1:XGROUP CREATE s h $ MKSTREAM",
            "1:XSETID s 10-0",
            "1:XGROUP CREATE s ENTRIESREAD 0",
        ]
    );
    assert_eq!(r.stats().altered.get(STREAM_META_NOT_KEPT), Some(&2));
    assert_eq!(r.stats().altered.get(ENTRIES_READ_NOT_KEPT), Some(&3));

    // What 6.2 has no form for stops the run with a reason, never silently.
    for rec in [&["LMPOP", "1", "l", "LEFT"][..], &["PEXPIREAT", "k", "1900000000000", "GT"]] {
        let e = r.record(&record(rec), &mut out).unwrap_err();
        assert!(e.0.contains("target speaks Redis 6.2.14") && e.0.contains("Redis 7.0"), "{e}");
        assert!(e.0.contains(&format!("{} for key \"{}\" in db 1", rec[0], if rec[0] == "LMPOP" { "l" } else { "k" })), "{e}");
    }
    // A 7.0 target gets them as they are.
    let mut r7 = rp(Policy::default());
    out.clear();
    r7.record(&record(&["XSETID", "s", "9-0", "ENTRIESADDED", "12", "MAXDELETEDID", "3-0"]), &mut out).unwrap();
    r7.record(&record(&["PEXPIREAT", "k", "1900000000000", "GT"]), &mut out).unwrap();
    assert_eq!(strs(&out), ["1:XSETID s 9-0 ENTRIESADDED 12 MAXDELETEDID 3-0", "1:PEXPIREAT k 1900000000000 GT"]);
    assert!(r7.stats().altered.is_empty());
}
