//! The journal side of the emulator: writes during the snapshot (serialize-before-mutate,
//! inline blobs), the held-back post-cut journal, multi-key and global commands, expiry,
//! LSN markers, and partial resume from the backlog.

mod emulator_support;

use std::collections::BTreeSet;
use std::time::Duration;

use df2redis::emulator::{Compression, Config, Dialect, Emulator, Entry, Value};
use df2redis::protocol::{Item, JournalRecord, RecordKind};
use emulator_support::*;

fn w(emu: &Emulator, db: u32, args: &[&str]) {
    emu.write(db, &args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>()).unwrap_or_else(|e| panic!("{args:?}: {e}"));
}

fn strings(emu: &Emulator, n: usize) {
    for i in 0..n {
        emu.load(0, format!("k:{i}").as_bytes(), Entry::new(Value::String(format!("v{i}").into_bytes())));
    }
}

fn entry_index(items: &[Item], key: &[u8]) -> Option<usize> {
    items.iter().position(|i| matches!(i, Item::Value(v) if v.last && v.head.key == key))
}

fn inline_index(items: &[Item], key: &[u8]) -> Option<usize> {
    items.iter().position(|i| matches!(i, Item::Journal(r) if r.lsn.is_none() && r.argv.get(1) == Some(key)))
}

/// Every key of `shard` in the dataset of `strings(n)`.
fn keys_on(emu: &Emulator, shard: usize, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("k:{i}").into_bytes()).filter(|k| emu.shard_of(k) == shard).collect()
}

#[test]
fn writes_during_a_paused_snapshot_arrive_inline_after_their_key() {
    let emu = Emulator::start(Config { shards: 2, pause_snapshot_after: Some(3), ..Config::default() }).unwrap();
    strings(&emu, 40);
    let mut m = handshake(emu.addr(), None);
    let mut flows = m.open_flows(None);
    assert_eq!(m.sync(), Reply::Simple("OK".into()));
    // Each flow stops after 3 entries (and flushes them).
    for f in flows.iter_mut() {
        let mut at = 0;
        for _ in 0..3 {
            at = f.wait_item(at, "3 entries before the pause", |i| matches!(i, Item::Value(v) if v.last)) + 1;
        }
    }
    let f0 = &flows[0];
    let done: Vec<Vec<u8>> = keys_on(&emu, 0, 40).into_iter().filter(|k| entry_index(&f0.items, k).is_some()).collect();
    let pending: Vec<Vec<u8>> =
        keys_on(&emu, 0, 40).into_iter().filter(|k| entry_index(&f0.items, k).is_none()).collect();
    assert_eq!(done.len(), 3);
    let (s, u) = (done[0].clone(), pending[0].clone());
    let (s_str, u_str) = (String::from_utf8(s.clone()).unwrap(), String::from_utf8(u.clone()).unwrap());
    let u_old = emu.data()[&0][&u].clone();
    w(&emu, 0, &["APPEND", &s_str, "+s"]);
    w(&emu, 0, &["APPEND", &u_str, "+u"]);
    w(&emu, 0, &["SET", "k:new", "created during the snapshot"]);
    w(&emu, 0, &["DEL", &pending[1].iter().map(|b| *b as char).collect::<String>()]);
    emu.resume_snapshot();
    for f in flows.iter_mut() {
        f.wait_fullsync_end();
    }
    let items = &flows[0].items;
    let (ue, uj) = (entry_index(items, &u).expect("U's entry"), inline_index(items, &u).expect("U's inline record"));
    assert!(ue < uj, "the entry of a key not yet serialized precedes the write's inline record");
    let Item::Value(v) = &items[ue] else { unreachable!() };
    assert_eq!(emu_value(&v.piece), u_old.value, "serialized as it was before the write");
    let (se, sj) = (entry_index(items, &s).unwrap(), inline_index(items, &s).expect("S's inline record"));
    assert!(se < sj);
    assert_eq!(m.startstable(), Reply::Simple("OK".into()));
    let mut replica = Replica::default();
    for f in flows.iter_mut() {
        f.wait_token();
        replica.apply_all(&f.items);
    }
    assert_same("after a paused snapshot", &replica.data(), &normalize(emu.data()));
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
}

fn emu_value(p: &df2redis::protocol::Piece) -> Value {
    match p {
        df2redis::protocol::Piece::String(s) => Value::String(s.clone()),
        other => panic!("expected a string piece, got {other:?}"),
    }
}

#[test]
fn post_cut_writes_are_held_until_startstable_and_share_a_blob_with_the_offset() {
    let emu = Emulator::start(Config { shards: 2, ..Config::default() }).unwrap();
    strings(&emu, 20);
    let mut m = handshake(emu.addr(), None);
    let mut flows = m.open_flows(None);
    assert_eq!(m.sync(), Reply::Simple("OK".into()));
    for f in flows.iter_mut() {
        f.wait_fullsync_end();
    }
    assert!(emu.wait_fullsync_end(WAIT));
    let cuts: Vec<usize> = flows.iter().map(|f| f.raw.len()).collect();
    for i in 0..40 {
        w(&emu, 0, &["SET", &format!("post:{i}"), "a value written after the cut"]);
    }
    let per_shard: Vec<usize> =
        (0..2).map(|s| (0..40).filter(|i| emu.shard_of(format!("post:{i}").as_bytes()) == s).count()).collect();
    assert_eq!(m.startstable(), Reply::Simple("OK".into()));
    let lsns = emu.lsns();
    for f in flows.iter_mut() {
        let t = f.wait_token();
        let i = f.index;
        assert_eq!(f.raw[cuts[i] - 9], 0xC8, "flow {i}: FULLSYNC_END is the last byte before the hold");
        assert_eq!(f.raw[cuts[i]], 0xCA, "flow {i}: held blobs and JOURNAL_OFFSET come as one LZ4 blob");
        let fse = f.items.iter().position(|x| *x == Item::FullSyncEnd).unwrap();
        let held: Vec<&Item> = f.items[fse + 1..t].iter().collect();
        assert_eq!(held.len(), per_shard[i] + 2, "flow {i}: records, JOURNAL_OFFSET, EOF");
        assert!(held[..per_shard[i]].iter().all(|x| matches!(x, Item::Journal(r) if r.lsn.is_none())));
        assert_eq!(*held[per_shard[i]], Item::JournalOffset(lsns[i]));
        // The blob ends right before the raw EOF + token.
        assert_eq!(&f.raw[f.raw.len() - 49..f.raw.len() - 40], &[0xFF, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
}

#[test]
fn post_cut_journal_is_flushed_once_8_kib_are_pending() {
    let emu = Emulator::start(Config { shards: 1, compression: Compression::None, ..Config::default() }).unwrap();
    strings(&emu, 5);
    let mut m = handshake(emu.addr(), None);
    let mut flows = m.open_flows(None);
    assert_eq!(m.sync(), Reply::Simple("OK".into()));
    let fse = flows[0].wait_fullsync_end();
    let value = "x".repeat(100);
    for i in 0..100 {
        w(&emu, 0, &["SET", &format!("bulk:{i}"), &value]);
    }
    // About 12 KiB of records: the first 8 KiB leave before any STARTSTABLE.
    let first =
        flows[0].wait_item(fse, "a post-cut journal blob before STARTSTABLE", |i| matches!(i, Item::Journal(_)));
    assert!(first > fse);
    assert_eq!(m.startstable(), Reply::Simple("OK".into()));
    flows[0].wait_token();
    let inline = flows[0].items.iter().filter(|i| matches!(i, Item::Journal(r) if r.lsn.is_none())).count();
    assert_eq!(inline, 100);
}

#[test]
fn multi_key_and_global_commands_are_split_per_shard_with_one_txid() {
    let emu = Emulator::start(Config { shards: 3, ..Config::default() }).unwrap();
    strings(&emu, 30);
    let mut m = handshake(emu.addr(), None);
    let mut flows = full_sync(&mut m);
    let start = emu.lsns();
    let keys: Vec<String> = (0..30).map(|i| format!("k:{i}")).collect();
    let mut mset = vec!["MSET"];
    for k in &keys[..9] {
        mset.extend([k.as_str(), "new"]);
    }
    w(&emu, 0, &mset);
    let mut del = vec!["DEL"];
    del.extend(keys[9..18].iter().map(String::as_str));
    w(&emu, 0, &del);
    w(&emu, 0, &["SET", "single", "1"]);
    w(&emu, 1, &["SET", "in-db1", "1"]);
    w(&emu, 1, &["FLUSHDB"]);
    w(&emu, 0, &["FLUSHALL"]);
    let end = emu.lsns();
    let mut txids: std::collections::BTreeMap<String, BTreeSet<u64>> = Default::default();
    let mut replica = Replica::default();
    for f in flows.iter_mut() {
        f.wait_lsn(end[f.index] - 1);
        replica.apply_all(&f.items);
        let recs = f.stable_records();
        assert_eq!(recs.len() as u64, end[f.index] - start[f.index]);
        for r in &recs {
            let name = r.argv.name_upper();
            if name == "MSET" {
                assert!(
                    r.argv.iter().skip(1).step_by(2).all(|k| emu.shard_of(k) == f.index),
                    "MSET part holds only this shard's keys"
                );
            }
            if name == "DEL" {
                assert!(r.argv.iter().skip(1).all(|k| emu.shard_of(k) == f.index));
            }
            if name == "FLUSHDB" {
                assert_eq!(r.db, 1, "FLUSHDB carries the SELECT of the issuing db");
            }
            txids.entry(name).or_default().insert(r.txid);
        }
        let globals: Vec<String> =
            recs.iter().map(|r| r.argv.name_upper()).filter(|n| n.starts_with("FLUSH")).collect();
        assert_eq!(globals, ["FLUSHDB", "FLUSHALL"], "flow {}: every global command on every flow", f.index);
    }
    for name in ["MSET", "DEL", "FLUSHDB", "FLUSHALL"] {
        assert_eq!(txids[name].len(), 1, "{name}: one txid on every flow");
        assert!(!txids[name].contains(&0), "{name}: a real txid");
    }
    assert_eq!(txids["SET"], BTreeSet::from([0]), "single-key writes carry txid 0");
    assert!(replica.data().is_empty() && emu.data().is_empty());
}

#[test]
fn expiry_is_journaled_as_del_or_as_expired_before_v1_38() {
    for dialect in [Dialect::V1_40, Dialect::V1_36] {
        let emu = Emulator::start(Config { shards: 1, dialect: dialect.clone(), ..Config::default() }).unwrap();
        strings(&emu, 3);
        let mut m = handshake(emu.addr(), None);
        let mut flows = full_sync(&mut m);
        // Active expiry, then lazy expiry on access (the DEL comes before the INCR).
        emu.load(0, b"gone", Entry::with_expiry(Value::String(b"x".to_vec()), 1));
        emu.expire_now();
        emu.load(0, b"lazy", Entry::with_expiry(Value::String(b"5".to_vec()), 1));
        w(&emu, 0, &["INCR", "lazy"]);
        let lsn = emu.lsns()[0] - 1;
        flows[0].wait_lsn(lsn);
        let recs: Vec<(RecordKind, u64, String)> = flows[0]
            .stable_records()
            .iter()
            .map(|r| {
                (
                    r.kind,
                    r.txid,
                    r.argv.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>().join(" "),
                )
            })
            .collect();
        let kind = if dialect == Dialect::V1_36 { RecordKind::Expired } else { RecordKind::Command };
        assert_eq!(
            recs,
            vec![
                (kind, 0, "DEL gone".to_string()),
                (kind, 0, "DEL lazy".to_string()),
                (RecordKind::Command, 0, "INCR lazy".to_string())
            ],
            "{dialect:?}"
        );
        assert_eq!(emu.data()[&0][b"lazy".as_slice()].value, Value::String(b"1".to_vec()));
    }
}

#[test]
fn lsn_markers_follow_records_at_most_once_per_period() {
    for (period, every) in [(Duration::ZERO, true), (Duration::from_secs(3600), false)] {
        let emu = Emulator::start(Config { shards: 1, lsn_marker_period: period, ..Config::default() }).unwrap();
        let mut m = handshake(emu.addr(), None);
        let mut flows = full_sync(&mut m);
        for i in 0..5 {
            w(&emu, 0, &["SET", &format!("a{i}"), "1"]);
        }
        let at = flows[0].wait_lsn(5);
        if every {
            flows[0].wait_item(at, "the marker after LSN 5", |i| matches!(i, Item::LsnMark { announced: 5, .. }));
        }
        let marks: Vec<u64> = flows[0]
            .items
            .iter()
            .filter_map(|i| match i {
                Item::LsnMark { announced, expected } => {
                    assert_eq!(Some(*announced), *expected, "a marker carries the LSN of the record before it");
                    Some(*announced)
                }
                _ => None,
            })
            .collect();
        assert_eq!(marks, if every { vec![1, 2, 3, 4, 5] } else { vec![1] }, "period {period:?}");
    }
}

#[test]
fn partial_resume_streams_the_backlog_from_the_requested_lsn() {
    let emu = Emulator::start(Config { shards: 2, ..Config::default() }).unwrap();
    strings(&emu, 20);
    let (mut replica, resume) = sync_apply_and_leave(&emu);
    assert!(emu.wait_session_closed(WAIT));
    assert_eq!(emu.flow_closed_cleanly(), vec![Some(true), Some(true)]);

    // Writes while no replica is attached still go to the journal and its backlog.
    for i in 0..10 {
        w(&emu, 0, &["SET", &format!("away:{i}"), "v"]);
    }
    w(&emu, 0, &["DEL", "k:1", "k:2", "k:3"]);

    let mut m = handshake(emu.addr(), None);
    assert_eq!(m.sync_id, "SYNC2");
    let mut flows = m.open_flows(Some(&resume));
    assert!(flows.iter().all(|f| f.kind == "PARTIAL"));
    assert_eq!(m.sync(), Reply::Error("ERR invalid state".into()), "v1.40 rejects SYNC after PARTIAL");
    assert_eq!(m.startstable(), Reply::Simple("OK".into()));
    w(&emu, 0, &["SET", "live", "after resume"]);
    let end = emu.lsns();
    for f in flows.iter_mut() {
        assert!(end[f.index] > resume[f.index], "the writes above reach every shard");
        f.wait_lsn(end[f.index] - 1);
        let recs = f.stable_records();
        assert_eq!(recs[0].lsn, Some(resume[f.index]), "flow {}: the backlog starts at the requested LSN", f.index);
        assert!(
            matches!(f.items[1], Item::LsnMark { .. }),
            "flow {}: the first record is followed by a marker",
            f.index
        );
        assert!(!f.items.iter().any(|i| matches!(i, Item::Aux { .. } | Item::Token(_) | Item::JournalOffset(_))));
        replica.apply_all(&f.items);
        let next = f.next_lsn().unwrap();
        f.ack(next);
    }
    assert_same("after a partial resume", &replica.data(), &normalize(emu.data()));
    assert!(emu.wait_acked_all(WAIT));
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
}

#[test]
fn a_resume_point_outside_the_backlog_gets_a_full_sync() {
    let emu = Emulator::start(Config { shards: 2, backlog_len: 3, ..Config::default() }).unwrap();
    let mut m = handshake(emu.addr(), None);
    let flows = full_sync(&mut m);
    let resume = emu.lsns();
    close_gracefully(m, flows);
    let key0 = (0..).map(|i| format!("x{i}")).find(|k| emu.shard_of(k.as_bytes()) == 0).unwrap();
    for _ in 0..5 {
        w(&emu, 0, &["INCR", &key0]);
    }
    let mut m = handshake(emu.addr(), None);
    let flows = m.open_flows(Some(&resume));
    assert_eq!(flows[0].kind, "FULL", "LSN {} fell out of a 3-record backlog", resume[0]);
    assert_eq!(flows[1].kind, "PARTIAL", "nothing new on shard 1: its LSN is the current one");
    assert_eq!(
        m.startstable(),
        Reply::Error("ERR invalid state".into()),
        "mixed FULL/PARTIAL cannot start stable sync"
    );
}

#[test]
fn a_backlog_overrun_before_startstable_cancels_the_session() {
    let emu = Emulator::start(Config { shards: 1, backlog_len: 3, ..Config::default() }).unwrap();
    let mut m = handshake(emu.addr(), None);
    let flows = full_sync(&mut m);
    w(&emu, 0, &["SET", "a", "1"]);
    let resume = emu.lsns();
    close_gracefully(m, flows);
    let mut m = handshake(emu.addr(), None);
    let mut flows = m.open_flows(Some(&[resume[0] - 1]));
    assert_eq!(flows[0].kind, "PARTIAL");
    for i in 0..5 {
        w(&emu, 0, &["SET", &format!("b{i}"), "1"]);
    }
    assert_eq!(m.startstable(), Reply::Error("ERR invalid state".into()));
    assert!(flows[0].wait_closed().is_ok(), "the master closed the flow");
    assert!(emu.violations().is_empty());
}

#[test]
fn startstable_is_held_until_released() {
    let emu = Emulator::start(Config { shards: 1, hold_startstable: true, ..Config::default() }).unwrap();
    let mut m = handshake(emu.addr(), None);
    let mut flows = m.open_flows(None);
    assert_eq!(m.sync(), Reply::Simple("OK".into()));
    flows[0].wait_fullsync_end();
    let (reply, replied_at, released_at) = std::thread::scope(|s| {
        let call = s.spawn(|| {
            let r = m.startstable();
            (r, std::time::Instant::now())
        });
        for i in 0..3 {
            w(&emu, 0, &["SET", &format!("held:{i}"), "1"]);
        }
        let released_at = std::time::Instant::now();
        emu.release_startstable();
        let (r, at) = call.join().unwrap();
        (r, at, released_at)
    });
    assert_eq!(reply, Reply::Simple("OK".into()));
    assert!(replied_at >= released_at, "STARTSTABLE answered before release_startstable()");
    flows[0].wait_token();
    let inline = flows[0].items.iter().filter(|i| matches!(i, Item::Journal(r) if r.lsn.is_none())).count();
    assert_eq!(inline, 3, "the writes made while STARTSTABLE was held are post-cut blobs");
    assert_eq!(flows[0].journal_offset(), Some(4));
}

/// The flows' stable-sync records from `from[i]` on, as an observer replica saw them.
fn records_from(flows: &[Flow], from: &[u64]) -> Vec<Vec<JournalRecord>> {
    flows.iter().map(|f| f.stable_records().into_iter().filter(|r| r.lsn >= Some(from[f.index])).cloned().collect()).collect()
}

/// v1.34's partial sync (protocol doc 8.3): PARTIAL flows still need `DFLY SYNC`, then carry
/// an RDB header, one journal blob per backlog record from the requested LSN, FULLSYNC_END
/// and, after STARTSTABLE, JOURNAL_OFFSET, EOF, the token and the journal. Decoded with
/// `FlowDecoder::partial_v134`, the blobs are exactly the master's journal records from the
/// requested LSN on (as a replica that stayed connected received them), with their LSNs.
#[test]
fn v1_34_partial_resume_sends_the_backlog_as_journal_blobs_after_sync() {
    let emu = Emulator::start(Config { shards: 2, dialect: Dialect::V1_34, ..Config::default() }).unwrap();
    strings(&emu, 20);
    // An observer that stays in stable sync throughout: the master's journal, with LSNs.
    let mut obs = handshake(emu.addr(), None);
    assert_eq!(obs.capa.len(), 4, "v1.34 answers capa dragonfly with 4 elements");
    assert_eq!(obs.capa[3], Reply::Int(4), "DflyVersion 4");
    let mut observer = full_sync(&mut obs);

    let (mut replica, resume) = sync_apply_and_leave(&emu);

    // Writes while the replica is away: records of every kind the backlog can hold, enough
    // for a compressed blob on each flow.
    for i in 0..40 {
        w(&emu, 0, &["SET", &format!("away:{i}"), "a value written while the replica was away"]);
    }
    w(&emu, 0, &["DEL", "k:1", "k:2", "k:3"]);
    w(&emu, 0, &["INCR", "ctr"]);
    w(&emu, 0, &["MSET", "m:1", "a", "m:2", "b", "m:3", "c"]);

    let mut m = handshake(emu.addr(), None);
    let mut flows = m.open_flows_v134(&resume);
    assert!(flows.iter().all(|f| f.kind == "PARTIAL"));
    assert_eq!(m.sync(), Reply::Simple("OK".into()), "v1.34 wants DFLY SYNC after PARTIAL");
    let at_sync = emu.lsns();
    for f in flows.iter_mut() {
        let i = f.index;
        let fse = f.wait_fullsync_end();
        assert_eq!(aux_value(&f.items, "df-ver").as_deref(), Some("df-v1.34.2"), "flow {i}");
        assert!(!f.items.iter().any(|x| matches!(x, Item::Value(_))), "flow {i}: no snapshot entries");
        let blobs: Vec<u64> = f.items[..fse].iter().filter_map(|x| if let Item::Journal(r) = x { r.lsn } else { None }).collect();
        assert_eq!(blobs, (resume[i]..at_sync[i]).collect::<Vec<_>>(), "flow {i}: one blob per backlog record");
        assert_ne!(
            &f.raw[f.raw.len() - 9..],
            &[0xC8, 0, 0, 0, 0, 0, 0, 0, 0],
            "flow {i}: FULLSYNC_END rides in the compressed blob with the last backlog records"
        );
    }
    // A write after the cut is held, as in a full sync, until STARTSTABLE.
    w(&emu, 0, &["SET", "post-cut", "held"]);
    assert_eq!(m.startstable(), Reply::Simple("OK".into()));
    w(&emu, 0, &["SET", "live", "after STARTSTABLE"]);
    w(&emu, 0, &["APPEND", "away:1", "+live"]);
    let end = emu.lsns();
    for f in flows.iter_mut() {
        let i = f.index;
        let t = f.wait_token();
        assert!(end[i] > resume[i], "flow {i}: the writes above reach every shard");
        if end[i] > f.journal_offset().unwrap() {
            f.wait_lsn(end[i] - 1);
        }
        let offset = f.journal_offset().unwrap();
        assert!(offset >= at_sync[i], "flow {i}");
        let before_token = f.items[..t].iter().filter(|x| matches!(x, Item::Journal(_))).count() as u64;
        assert_eq!(resume[i] + before_token, offset, "flow {i}: JOURNAL_OFFSET follows the last blob");
        f.ack(end[i]);
    }
    for f in observer.iter_mut() {
        if end[f.index] > f.journal_offset().unwrap() {
            f.wait_lsn(end[f.index] - 1);
        }
    }
    let expected = records_from(&observer, &resume);
    for f in &flows {
        let got: Vec<JournalRecord> =
            f.items.iter().filter_map(|x| if let Item::Journal(r) = x { Some(r.clone()) } else { None }).collect();
        assert_eq!(got, expected[f.index], "flow {}: the master's records from LSN {} on, with their LSNs", f.index, resume[f.index]);
        replica.apply_all(&f.items);
    }
    assert_same("after a v1.34 partial resume", &replica.data(), &normalize(emu.data()));
    assert!(emu.wait_acked_all(WAIT));
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
}

/// A v1.34 master accepts STARTSTABLE only in full sync: straight after all-PARTIAL flows
/// (the v1.35+ procedure) it is refused, and the emulator records the misuse.
#[test]
fn v1_34_refuses_startstable_without_sync_after_partial_flows() {
    let emu = Emulator::start(Config { shards: 2, dialect: Dialect::V1_34, ..Config::default() }).unwrap();
    let mut m = handshake(emu.addr(), None);
    let flows = full_sync(&mut m);
    let resume = emu.lsns();
    close_gracefully(m, flows);
    w(&emu, 0, &["SET", "a", "1"]);
    let mut m = handshake(emu.addr(), None);
    let flows = m.open_flows_v134(&resume);
    assert!(flows.iter().all(|f| f.kind == "PARTIAL"));
    assert_eq!(m.startstable(), Reply::Error("ERR invalid state".into()));
    let v = emu.violations();
    assert!(v.len() == 1 && v[0].contains("STARTSTABLE") && v[0].contains("v1.34"), "{v:?}");
}

/// A replica's full sync plus one `SET before 1`, applied, then a clean goodbye: the replica
/// state and each flow's next LSN (equal to the master's).
fn sync_apply_and_leave(emu: &Emulator) -> (Replica, Vec<u64>) {
    let mut m = handshake(emu.addr(), None);
    let mut flows = full_sync(&mut m);
    w(emu, 0, &["SET", "before", "1"]);
    let mut replica = Replica::default();
    let lsns = emu.lsns();
    for f in flows.iter_mut() {
        if lsns[f.index] > f.journal_offset().unwrap() {
            f.wait_lsn(lsns[f.index] - 1);
        }
        replica.apply_all(&f.items);
    }
    let resume: Vec<u64> = flows.iter().map(|f| f.next_lsn().unwrap()).collect();
    assert_eq!(resume, lsns);
    close_gracefully(m, flows);
    (replica, resume)
}
