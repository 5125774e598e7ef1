//! `df2redis restore` end to end: the real Dragonfly v1.40.1 snapshot files (`SAVE DF` shard
//! files and `SAVE RDB`) into a standalone Redis and a 3-master Redis Cluster reproduce the
//! master's data; RDB files written by Redis 7.0, Redis 6.2 and Valkey 8.1 round-trip exactly;
//! bad files exit 1 naming the file, the byte offset and what was expected.

mod common;

use std::process::{Command, Output};

use common::redis_cluster::RedisCluster;
use common::redis_server::{compare, read_all, RedisServer, ServerKind};
use common::snapshots::{eof_offset, populate, save, unpack, without_v7_stream_meta, write_file};
use common::{diff_val, drop_expired_members, member_ttls, merged, parse_dataset, Dataset};
use df2redis::protocol::Limits;
use df2redis::source::files::{read_file, SnapshotSet};

/// The master's data as a copy made now must hold it: `expected.json`'s `final`, less the hash
/// fields and set members whose own TTL (Dragonfly's types 31/32) has passed since the save:
/// df2redis leaves those out, as Dragonfly's loader does.
fn expected_now(u: &common::snapshots::Unpacked) -> Dataset {
    let mut items = Vec::new();
    for f in SnapshotSet::open(&u.dir.0).unwrap().files {
        read_file(&f, Limits::default(), |b| {
            items.append(b);
            Ok(())
        })
        .unwrap();
    }
    let mut expected = parse_dataset(&u.expected["final"]);
    drop_expired_members(&mut expected, &member_ttls(&items), |db| db);
    expected
}

fn restore(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_df2redis")).arg("restore").args(args).env("RUST_LOG", "info").output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The master's data in `expected.json` against what `actual` holds: every native key equal
/// (TTLs within 2 s; keys whose TTL has passed must be absent), nothing else there.
fn assert_matches(label: &str, expected: &Dataset, actual: &Dataset, c: &mut redis::Connection) {
    let (diffs, compared, expired) = compare(expected, actual, c, 2000, &Default::default());
    assert!(diffs.is_empty(), "{label}: {} differences:\n{}", diffs.len(), diffs.join("\n"));
    assert!(compared > 0, "{label}: nothing compared");
    let native = |ds: &Dataset| -> usize {
        ds.values().flat_map(|m| m.values()).filter(|k| common::NATIVE.contains(&k.ty.as_str())).count()
    };
    assert_eq!(native(actual), compared, "{label}: the target holds keys the master did not have");
    eprintln!("{label}: {compared} keys equal, {expired} expired and absent");
}

#[test]
fn dragonfly_snapshot_files_restore_into_a_standalone_target() {
    for name in ["v1.40.1-types", "v1.40.1-bulk-zstd"] {
        let u = unpack(name);
        let expected = expected_now(&u);
        for from in [u.dir.0.clone(), u.dir.0.join("snap-summary.dfs"), u.dir.0.join("snap.rdb")] {
            let srv = RedisServer::start(&[]);
            let out = restore(&["--from", from.to_str().unwrap(), "--target", &format!("redis://{}", srv.addr())]);
            let log = text(&out);
            assert!(out.status.success(), "{name} {}: {log}", from.display());
            assert!(log.contains("---- restore summary ----"), "{log}");
            if name == "v1.40.1-types" {
                // The Dragonfly-only types are skipped by policy and counted, never silently.
                for reason in ["Bloom filter", "Cuckoo filter", "JSON document", "count-min sketch", "top-k"] {
                    assert!(log.contains(&format!("skipped: 1 x {reason}")), "{reason}: {log}");
                }
            }
            let mut c = srv.conn();
            let actual = read_all(&mut c);
            assert_matches(&format!("{name} from {}", from.display()), &expected, &actual, &mut c);
        }
    }
}

#[test]
fn dragonfly_snapshot_files_restore_into_a_cluster() {
    let cl = RedisCluster::start();
    let target = format!("redis://{}", cl.addrs().join(","));
    // HyperLogLogs are compared by PFCOUNT on a scratch server (compare() does that).
    let scratch = RedisServer::start(&[]);
    for name in ["v1.40.1-types", "v1.40.1-bulk-zstd"] {
        let u = unpack(name);
        let expected = merged(expected_now(&u));
        for from in [u.dir.0.join("snap-summary.dfs"), u.dir.0.join("snap.rdb")] {
            for node in 0..3 {
                let _: () = redis::cmd("FLUSHALL").query(&mut cl.conn(node)).unwrap();
            }
            let from = from.to_str().unwrap();
            if name == "v1.40.1-types" {
                // dbs 1 and 2 hold keys: a cluster has only db 0, and df2redis never merges in
                // silence.
                let out = restore(&["--from", from, "--target", &target]);
                assert_eq!(out.status.code(), Some(1), "{}", text(&out));
                assert!(text(&out).contains("not mapped to it"), "{}", text(&out));
                for node in 0..3 {
                    let _: () = redis::cmd("FLUSHALL").query(&mut cl.conn(node)).unwrap();
                }
            }
            let out = restore(&["--from", from, "--target", &target, "--db-map", "1:0,2:0"]);
            assert!(out.status.success(), "{}", text(&out));
            assert!(text(&out).contains(" writes"), "per-node writes in the summary: {}", text(&out));
            let (diffs, compared, _) = compare(&expected, &cl.read_all(), &mut scratch.conn(), 2000, &Default::default());
            assert!(diffs.is_empty(), "{name} {from}: {} differences:\n{}", diffs.len(), diffs.join("\n"));
            assert!(compared > 8000, "{compared}");
        }
    }
}

#[test]
fn filters_and_db_mapping_apply_to_a_restore() {
    let u = unpack("v1.40.1-types");
    let all = expected_now(&u);
    let srv = RedisServer::start(&[]);
    let out = restore(&[
        "--from",
        u.dir.0.to_str().unwrap(),
        "--target",
        &format!("redis://{}", srv.addr()),
        "--dbs",
        "0,1",
        "--db-map",
        "1:5",
        "--exclude",
        "prefix:bulk:",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let mut want = Dataset::new();
    for (db, keys) in &all {
        let to = match db {
            0 => 0,
            1 => 5,
            _ => continue,
        };
        for (k, v) in keys {
            if !k.starts_with(b"bulk:") {
                want.entry(to).or_default().insert(k.clone(), v.clone());
            }
        }
    }
    assert!(all[&0].keys().any(|k| k.starts_with(b"bulk:")), "the data set has keys the filter drops");
    let mut c = srv.conn();
    let actual = read_all(&mut c);
    assert_matches("filtered restore", &want, &actual, &mut c);
}

#[test]
fn rdb_files_written_by_redis_and_valkey_round_trip() {
    for kind in [ServerKind::Redis7, ServerKind::Redis62, ServerKind::Valkey8] {
        let src = RedisServer::start_kind(kind, &[]);
        let mut sc = src.conn();
        populate(&mut sc);
        let file = save(&mut sc);
        // Read what the source holds with the reader that suits it (6.2 has no PEXPIRETIME:
        // the populated data's TTLs are known absolute times, so a 7.0 copy gives them).
        let mut want = {
            let reference = RedisServer::start(&[]);
            let mut rc = reference.conn();
            populate(&mut rc);
            read_all(&mut rc)
        };
        let dst = RedisServer::start(&[]);
        let out = restore(&["--from", file.to_str().unwrap(), "--target", &format!("redis://{}", dst.addr())]);
        let log = text(&out);
        assert!(out.status.success(), "{kind:?}: {log}");
        assert!(log.contains("checksum verified"), "{kind:?}: {log}");
        let mut got = read_all(&mut dst.conn());
        if kind == ServerKind::Redis62 {
            without_v7_stream_meta(&mut want);
            without_v7_stream_meta(&mut got);
        }
        for (db, keys) in &want {
            for (k, e) in keys {
                let name = format!("{kind:?}: db {db} key {:?}", String::from_utf8_lossy(k));
                let g = got.get(db).and_then(|m| m.get(k)).unwrap_or_else(|| panic!("{name}: not restored"));
                assert_eq!((&g.ty, g.expire_at_ms), (&e.ty, e.expire_at_ms), "{name}");
                if let Some(d) = diff_val(&e.val, &g.val) {
                    panic!("{name}: {d}");
                }
            }
        }
        assert_eq!(got.values().map(|m| m.len()).sum::<usize>(), want.values().map(|m| m.len()).sum::<usize>(), "{kind:?}");
    }
}

#[test]
fn bad_files_exit_1_naming_the_file_the_offset_and_what_was_expected() {
    let u = unpack("v1.40.1-bulk-zstd");
    let srv = RedisServer::start(&[]);
    let target = format!("redis://{}", srv.addr());
    let rdb = std::fs::read(u.dir.0.join("snap.rdb")).unwrap();
    let dir = &u.dir.0;
    let write = |name: &str, bytes: &[u8]| write_file(dir, name, bytes).display().to_string();
    let fails = |from: &str, want: &[&str]| {
        let out = restore(&["--from", from, "--target", &target]);
        let log = text(&out);
        assert_eq!(out.status.code(), Some(1), "{from}: {log}");
        let err = log.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line: {log}"));
        for w in want {
            assert!(err.contains(w), "{from}: {w:?} not in {err:?}");
        }
        assert!(!log.contains("panicked"), "{log}");
    };
    // Truncated in the middle of the data.
    let cut = write("cut.rdb", &rdb[..500_000]);
    fails(&cut, &[&format!("error: {cut}: "), "the file ends too early (500000 bytes)", "stream ended; expected"]);
    // Not an RDB file.
    let wrong = write("wrong.rdb", b"PK\x03\x04 a zip file, not a snapshot");
    fails(&wrong, &[&format!(
        "error: {wrong}: byte offset 0: expected the RDB header (REDIS0009 ... REDIS0012), found 0x504B03042061207A69: not an RDB or Dragonfly snapshot file"
    )]);
    // A checksum that does not match the bytes (Dragonfly writes 0; a non-zero one is checked).
    let end = eof_offset(&dir.join("snap.rdb"));
    assert_eq!(rdb[end], 0xFF);
    let mut bad = rdb[..=end].to_vec();
    bad.extend_from_slice(&0x1234_5678_9abc_def0u64.to_le_bytes());
    let sum = write("badsum.rdb", &bad);
    fails(&sum, &[&format!("error: {sum}: byte offset {}: checksum mismatch: the file says 0x123456789abcdef0", end + 1)]);
    // An unknown opcode where an item must start.
    let mut op = rdb.clone();
    op[end] = 0xF1;
    let unknown = write("unknown.rdb", &op);
    fails(&unknown, &[&format!("error: {unknown}: byte offset {end}, reading opcode 0xF1: unknown opcode 0xF1 in the snapshot stream")]);
    // An unknown value type.
    let mut ty = rdb.clone();
    let first_entry = rdb.windows(2).position(|w| w == [0xFE, 0x00]).unwrap() + 2; // after SELECTDB 0
    let first_entry = first_entry + if rdb[first_entry] == 0xFB { 3 } else { 0 };
    ty[first_entry] = 29;
    let badtype = write("type.rdb", &ty);
    fails(&badtype, &[&format!("error: {badtype}: "), "RDB value type 29 is not supported"]);
    // A shard file missing from the summary's set.
    std::fs::remove_file(dir.join("snap-0001.dfs")).unwrap();
    let summary = dir.join("snap-summary.dfs");
    fails(
        summary.to_str().unwrap(),
        &[&format!("the summary names 2 shard files and {} is missing", dir.join("snap-0001.dfs").display())],
    );
    // A path that does not exist is a usage error (exit 2), naming the flag.
    let out = restore(&["--from", "/nonexistent/dump.rdb", "--target", &target]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--from /nonexistent/dump.rdb"), "{}", text(&out));
    // Without --from (or with --source instead) it says what restore needs.
    let out = restore(&["--target", &target]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("for restore: --from (file key source.from)"), "{}", text(&out));
    let out = restore(&["--source", "127.0.0.1:1", "--target", &target]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("restore needs --from PATH"), "{}", text(&out));
    // --from with --source is a usage error too.
    let out = restore(&["--from", &cut, "--source", "127.0.0.1:1", "--target", &target]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// Progress during a restore is the share of the files' bytes read, with an ETA (a line every
/// --progress-secs without a terminal). Rate-capped and with a one-batch queue, so the files
/// are still being read when the first line is due.
#[test]
fn a_restore_reports_progress_by_bytes_read() {
    let u = unpack("v1.40.1-bulk-zstd");
    let srv = RedisServer::start(&[]);
    let out = restore(&[
        "--from",
        u.dir.0.to_str().unwrap(),
        "--target",
        &format!("redis://{}", srv.addr()),
        "--progress-secs",
        "1",
        "--max-ops-per-s",
        "20000",
        "--channel-capacity",
        "1",
        "--batch-cmds",
        "100",
    ]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("full sync:") && l.contains("of the source's size") && l.contains("ETA"))
        .unwrap_or_else(|| panic!("no progress line with a share of the files' size and an ETA: {log}"));
    assert!(line.contains("0/2 flows complete"), "{line}");
}
