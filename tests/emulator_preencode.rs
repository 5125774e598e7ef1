//! The emulator's pre-encoded full sync (`Config::pre_encode`, `dfly-emulator --pre-encode`),
//! decoded by df2redis's own `FlowDecoder`: the same items as a live snapshot in every
//! compression and chunking mode, correct data when writes land while the body streams, and
//! never a stale body after the data changed.
#![cfg(feature = "emulator")]

mod emulator_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use df2redis::emulator::{datasets, Compression, Config, Dialect, Emulator};
use df2redis::protocol::Item;
use emulator_support::*;

/// Everything a flow carried except what differs per session by design (AUX values such as
/// `ctime`, the eof token).
fn session_independent(items: &[Item]) -> Vec<&Item> {
    items.iter().filter(|i| !matches!(i, Item::Aux { .. } | Item::Token(_))).collect()
}

/// Full sync of `emu`; returns the flows (after their tokens) and the replica built from them.
fn sync_and_apply(emu: &Emulator) -> (Master, Vec<Flow>, Replica) {
    let mut m = handshake(emu.addr(), None);
    let flows = full_sync(&mut m);
    let mut replica = Replica::default();
    for f in &flows {
        replica.apply_all(&f.items);
    }
    (m, flows, replica)
}

#[test]
fn a_pre_encoded_snapshot_decodes_to_the_same_items_as_a_live_one() {
    let base = || Config { shards: 3, chunk_size: 4096, ..Config::default() };
    let cases = [
        ("lz4 tagged", base()),
        ("lz4 tagged, two open entries", Config { two_open_entries: true, ..base() }),
        ("zstd tagged", Config { compression: Compression::Zstd, ..base() }),
        ("lzf tagged", Config { compression: Compression::Lzf, ..base() }),
        ("plain legacy", Config { compression: Compression::None, tagged_chunks: Some(false), ..base() }),
        ("v1.36", Config { dialect: Dialect::V1_36, ..base() }),
        ("one shard, no splitting", Config { shards: 1, chunk_size: 0, ..base() }),
    ];
    let data = {
        let template = Emulator::start(Config::default()).unwrap();
        datasets::every_type(&template);
        template.data()
    };
    for (name, cfg) in cases {
        let live = Emulator::start(cfg.clone()).unwrap();
        let pre = Emulator::start(Config { pre_encode: true, ..cfg }).unwrap();
        // The same entries (TTLs included), inserted in the same order: the same key order.
        for (db, ks) in &data {
            for (k, e) in ks {
                live.load(*db, k, e.clone());
                pre.load(*db, k, e.clone());
            }
        }
        assert!(pre.pre_encode() > 0, "{name}: an empty body");

        let (ml, fl, rl) = sync_and_apply(&live);
        let (mp, fp, rp) = sync_and_apply(&pre);
        for (a, b) in fl.iter().zip(&fp) {
            assert_eq!(
                session_independent(&a.items),
                session_independent(&b.items),
                "{name}: flow {} differs between the live and the pre-encoded snapshot",
                a.index
            );
            assert_eq!(aux_names(&a.items), aux_names(&b.items), "{name}: flow {} AUX fields", a.index);
            assert_eq!(opcode_counts(a), opcode_counts(b), "{name}: flow {} top-level opcodes", a.index);
        }
        assert_same(name, &rp.data(), &rl.data());
        assert_same(name, &rp.data(), &normalize(pre.data()));

        // The stable journal follows a pre-encoded snapshot as it follows a live one.
        pre.write(0, &[b"SET", b"after", b"1"]).unwrap();
        let s = pre.shard_of(b"after");
        let mut fp = fp;
        let at = fp[s].wait_lsn(pre.lsns()[s] - 1);
        assert!(matches!(&fp[s].items[at], Item::Journal(r) if r.argv.name_upper() == "SET"), "{name}");

        assert!(live.violations().is_empty() && pre.violations().is_empty(), "{name}");
        close_gracefully(ml, fl);
        close_gracefully(mp, fp);
        live.stop();
        pre.stop();
    }
}

#[test]
fn a_second_session_gets_the_same_body_again() {
    let emu = Emulator::start(Config { pre_encode: true, ..Config::default() }).unwrap();
    datasets::every_type(&emu);
    emu.pre_encode();
    let (m1, f1, r1) = sync_and_apply(&emu);
    let items1: Vec<Vec<Item>> =
        f1.iter().map(|f| session_independent(&f.items).into_iter().cloned().collect()).collect();
    close_gracefully(m1, f1);
    assert!(emu.wait_session_closed(WAIT));
    let (m2, f2, r2) = sync_and_apply(&emu);
    for (a, f) in items1.iter().zip(&f2) {
        assert_eq!(a.iter().collect::<Vec<_>>(), session_independent(&f.items), "flow {}", f.index);
    }
    assert_same("second session", &r2.data(), &r1.data());
    assert_same("second session", &r2.data(), &normalize(emu.data()));
    close_gracefully(m2, f2);
    emu.stop();
}

#[test]
fn writes_while_a_pre_encoded_body_streams_follow_every_entry() {
    let emu = Emulator::start(Config { pre_encode: true, ..Config::default() }).unwrap();
    // A 10 MB list and a 5 MB string: the bodies take a while to decode, so the writes below
    // land while they are still being sent.
    datasets::type_coverage(&emu);
    emu.pre_encode();
    let mut m = handshake(emu.addr(), None);
    let mut flows = m.open_flows(None);
    assert_eq!(m.sync(), Reply::Simple("OK".into()));
    let w = |args: &[&str]| emu.write(0, &args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>()).unwrap();
    w(&["SET", "str:plain", "changed during the snapshot"]);
    w(&["LPUSH", "list:10mb", "head"]);
    w(&["MSET", "during:a", "1", "during:b", "2", "during:c", "3", "during:d", "4"]);
    w(&["DEL", "str:5mb", "during:c"]);
    w(&["HSET", "hash:small", "f-new", "v-new"]);
    w(&["DEL", "list:small", "set:small", "zset:small"]);
    w(&["SET", "list:small", "now a string"]);
    for i in 0..200 {
        w(&["SET", &format!("during:{i}"), &i.to_string()]);
    }
    for f in flows.iter_mut() {
        f.wait_fullsync_end();
    }
    assert_eq!(m.startstable(), Reply::Simple("OK".into()));
    let mut replica = Replica::default();
    let mut inline_before_end = 0;
    for f in flows.iter_mut() {
        f.wait_token();
        let end = f.items.iter().position(|i| matches!(i, Item::FullSyncEnd)).unwrap();
        let first_journal = f.items.iter().position(|i| matches!(i, Item::Journal(_)));
        let last_entry = f.items.iter().rposition(|i| matches!(i, Item::Value(_)));
        if let (Some(j), Some(e)) = (first_journal, last_entry) {
            assert!(e < j, "flow {}: an entry (item {e}) after a journal record (item {j})", f.index);
        }
        inline_before_end += f.items[..end].iter().filter(|i| matches!(i, Item::Journal(_))).count();
        replica.apply_all(&f.items);
    }
    assert!(inline_before_end > 0, "no write landed while a body was streaming");
    assert_same("after writes during the snapshot", &replica.data(), &normalize(emu.data()));
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    close_gracefully(m, flows);
    emu.stop();
}

#[test]
fn a_change_after_pre_encoding_is_never_served_stale() {
    let emu = Emulator::start(Config { pre_encode: true, ..Config::default() }).unwrap();
    datasets::small(&emu, 2000);
    emu.pre_encode();
    // Before any replica: load() and write() change the data (no journal yet).
    emu.load(0, b"loaded:late", df2redis::emulator::Entry::new(df2redis::emulator::Value::String(b"v".to_vec())));
    emu.write(0, &[b"SET", b"key:000000000007", b"rewritten"]).unwrap();
    emu.write(0, &[b"DEL", b"key:000000000008"]).unwrap();
    let (m, flows, replica) = sync_and_apply(&emu);
    assert_same("changed after pre-encoding", &replica.data(), &normalize(emu.data()));
    assert_eq!(replica.data()[&0].len(), 2000, "2000 - 1 deleted + 1 loaded");
    close_gracefully(m, flows);
    emu.stop();
}

#[test]
fn the_cli_pre_encodes_its_dataset() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dfly-emulator"))
        .args(["--port", "0", "--dataset", "hashes", "--keys", "500", "--fields", "20", "--pre-encode"])
        .arg("--exit-on-stdin-eof")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line.strip_prefix("listening ").and_then(|r| r.split_whitespace().next()).expect(&line);
    let mut m = handshake(addr.parse().unwrap(), None);
    let flows = full_sync(&mut m);
    let mut replica = Replica::default();
    for f in &flows {
        replica.apply_all(&f.items);
    }
    let data = replica.data();
    assert_eq!(data[&0].len(), 500);
    assert!(data[&0].values().all(|e| matches!(&e.value, df2redis::emulator::Value::Hash(h) if h.len() == 20)));
    close_gracefully(m, flows);
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("pre-encoded"), "{err}");
}
