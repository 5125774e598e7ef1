//! Snapshot files as a source (`df2redis::source::files`): the real Dragonfly v1.40.1 files in
//! tests/fixtures/snapshots decode completely, by summary, by folder and as `.rdb`, to the
//! master's data; bad files give an error naming the file, the offset and what was expected.

mod common;

use std::path::Path;

use common::redis_server::TempDir;
use common::snapshots::{eof_offset, populate, save, snapshot_names, unpack, without_v7_stream_meta, write_file};
use common::{assemble_snapshot, assert_decoded_equal, diff_val, parse_dataset};
use df2redis::protocol::{Item, Limits};
use df2redis::source::files::{read_file, FileEnd, SnapshotSet};


/// Every item of every file of the set, and how each file ended.
fn read_set(set: &SnapshotSet) -> (Vec<Item>, Vec<FileEnd>) {
    let mut items = Vec::new();
    let mut ends = Vec::new();
    for f in &set.files {
        let end = read_file(f, Limits::default(), |batch| {
            items.append(batch);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        ends.push(end);
    }
    (items, ends)
}

/// The decoded keys equal `expected.final` (see `assert_decoded_equal`).
fn assert_equals_expected(label: &str, items: &[Item], expected: &serde_json::Value) -> (usize, usize) {
    assert_decoded_equal(label, &assemble_snapshot(items.iter()), &parse_dataset(&expected["final"]), |_| false)
}

#[test]
fn every_snapshot_fixture_decodes_to_the_masters_data() {
    for name in snapshot_names() {
        let u = unpack(&name);
        let summary = std::fs::read_dir(&u.dir.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with("-summary.dfs"))
            .unwrap();
        // The folder and the summary name the same set: every shard file, in order.
        let by_dir = SnapshotSet::open(&u.dir.0).unwrap();
        let by_summary = SnapshotSet::open(&summary).unwrap();
        assert_eq!(by_dir, by_summary, "{name}");
        assert!(by_dir.files.len() >= 2, "{name}: {:?}", by_dir.files);
        assert!(by_dir.snapshot_id.as_ref().is_some_and(|id| id.len() == 32), "{name}: snapshot-id");
        let (items, ends) = read_set(&by_dir);
        // Dragonfly computes no checksum; its files end on a 4 KiB block.
        for (f, end) in by_dir.files.iter().zip(&ends) {
            assert!(!end.checksum_verified, "{}", f.display());
            assert_eq!((end.data_bytes + end.trailing) % 4096, 0, "{}: {end:?}", f.display());
        }
        let (n, df) = assert_equals_expected(&format!("{name} (.dfs)"), &items, &u.expected);
        eprintln!("{name}: .dfs: {n} native keys equal, {df} Dragonfly-only keys");

        let rdb = SnapshotSet::open(&u.dir.0.join("snap.rdb")).unwrap();
        assert_eq!(rdb.files, vec![u.dir.0.join("snap.rdb")]);
        let (items, _) = read_set(&rdb);
        let (n, df) = assert_equals_expected(&format!("{name} (.rdb)"), &items, &u.expected);
        eprintln!("{name}: .rdb: {n} native keys equal, {df} Dragonfly-only keys");
    }
}

/// Read `path` and return the error text.
fn read_err(path: &Path) -> String {
    read_file(path, Limits::default(), |b| {
        b.clear();
        Ok(())
    })
    .map(|end| panic!("{} read without error: {end:?}", path.display()))
    .unwrap_err()
    .to_string()
}

const CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_REDIS);

#[test]
fn bad_files_are_named_with_the_offset_and_what_was_expected() {
    let u = unpack("v1.40.1-bulk-zstd");
    let rdb = std::fs::read(u.dir.0.join("snap.rdb")).unwrap();
    // Where the RDB data ends: EOF and an 8-byte zero checksum, then Dragonfly's padding.
    let eof_at = eof_offset(&u.dir.0.join("snap.rdb"));
    assert_eq!(rdb[eof_at], 0xFF);
    let out = TempDir::new("badfiles");

    // Truncated: in the body, and inside the checksum.
    let p = write_file(&out.0, "cut.rdb", &rdb[..eof_at / 2]);
    let e = read_err(&p);
    assert!(e.starts_with(&format!("{}: ", p.display())) && e.contains("the file ends too early"), "{e}");
    let p = write_file(&out.0, "cut-checksum.rdb", &rdb[..eof_at + 4]);
    let e = read_err(&p);
    assert!(e.contains("the file ends too early") && e.contains("the 8-byte checksum after EOF"), "{e}");

    // Not an RDB file at all.
    let p = write_file(&out.0, "wrong.rdb", b"*1\r\n$4\r\nPING\r\n");
    let e = read_err(&p);
    assert!(e.contains("byte offset 0") && e.contains("expected the RDB header"), "{e}");

    // A checksum that is not zero is verified: the right one passes, a wrong one is named.
    let mut with_sum = rdb[..eof_at + 1].to_vec();
    let crc = CRC64.checksum(&with_sum);
    with_sum.extend_from_slice(&crc.to_le_bytes());
    let p = write_file(&out.0, "sum.rdb", &with_sum);
    let end = read_file(&p, Limits::default(), |b| {
        b.clear();
        Ok(())
    })
    .unwrap();
    assert!(end.checksum_verified && end.trailing == 0, "{end:?}");
    let mut bad_sum = with_sum.clone();
    bad_sum[eof_at + 1] ^= 0x01;
    let p = write_file(&out.0, "badsum.rdb", &bad_sum);
    let e = read_err(&p);
    assert!(e.contains(&format!("byte offset {}", eof_at + 1)) && e.contains("checksum mismatch"), "{e}");
    // A flipped data byte with the original checksum: mismatch too (or a decode error there).
    let mut flipped = with_sum.clone();
    flipped[eof_at - 3] ^= 0x40;
    let e = read_err(&write_file(&out.0, "flipped.rdb", &flipped));
    assert!(e.contains("checksum mismatch") || e.contains("byte offset"), "{e}");

    // Bytes after the checksum that are not Dragonfly's block padding.
    let mut extra = with_sum.clone();
    extra.extend_from_slice(b"garbage");
    let e = read_err(&write_file(&out.0, "extra.rdb", &extra));
    assert!(e.contains("7 bytes follow the checksum"), "{e}");
    eprintln!("extra: {e}");

    // An unknown opcode where an item starts (in place of EOF).
    let mut unknown = rdb.clone();
    unknown[eof_at] = 0xF1;
    let e = read_err(&write_file(&out.0, "unknown.rdb", &unknown));
    assert!(e.contains(&format!("byte offset {eof_at}")), "{e}");
    eprintln!("unknown opcode: {e}");

    // A shard file missing from the summary's set.
    std::fs::remove_file(u.dir.0.join("snap-0001.dfs")).unwrap();
    let e = SnapshotSet::open(&u.dir.0).unwrap_err().to_string();
    assert!(e.contains("snap-summary.dfs") && e.contains("names 2 shard files") && e.contains("snap-0001.dfs is missing"), "{e}");
    // A shard file named alone.
    let e = SnapshotSet::open(&u.dir.0.join("snap-0000.dfs")).unwrap_err().to_string();
    assert!(e.contains("name its -summary.dfs file"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// RDB files written by Redis and Valkey themselves.

use common::redis_server::{read_all, RedisServer, ServerKind};

#[test]
fn rdb_files_written_by_redis_and_valkey_decode_exactly() {
    // The data as Redis 7.0 holds it is what every server's file must decode to.
    let reference = RedisServer::start(&[]);
    let mut rc = reference.conn();
    populate(&mut rc);
    let expected = read_all(&mut rc);
    for kind in [ServerKind::Redis7, ServerKind::Redis62, ServerKind::Valkey8] {
        let server = RedisServer::start_kind(kind, &[]);
        let mut c = server.conn();
        populate(&mut c);
        let path = save(&mut c);
        let set = SnapshotSet::open(&path).unwrap();
        let (items, ends) = read_set(&set);
        assert!(ends[0].checksum_verified && ends[0].trailing == 0, "{kind:?}: {:?}", ends[0]);
        let version = items.iter().find_map(|i| match i {
            Item::Aux { name, value } if name == b"redis-ver" || name == b"valkey-ver" => Some(String::from_utf8_lossy(value).into_owned()),
            _ => None,
        });
        let mut decoded = assemble_snapshot(items.iter());
        let mut want = expected.clone();
        if kind == ServerKind::Redis62 {
            without_v7_stream_meta(&mut want);
            without_v7_stream_meta(&mut decoded);
        }
        for (db, keys) in &want {
            for (k, e) in keys {
                let name = format!("{kind:?} ({version:?}): db {db} key {:?}", String::from_utf8_lossy(k));
                let d = decoded.get(db).and_then(|m| m.get(k)).unwrap_or_else(|| panic!("{name}: not in the file"));
                assert_eq!(d.ty, e.ty, "{name}: type");
                assert_eq!(d.expire_at_ms, e.expire_at_ms, "{name}: expiry");
                if let Some(diff) = diff_val(&e.val, &d.val) {
                    panic!("{name}: {diff}");
                }
            }
        }
        let n: usize = decoded.values().map(|m| m.len()).sum();
        assert_eq!(n, want.values().map(|m| m.len()).sum::<usize>(), "{kind:?}: key count");
        // The encodings this test means to cover were in the file: Redis 6.2's ziplists and
        // ziplist quicklists, Valkey's listpack sets (entry type bytes, counted by the decoder).
        let mut dec = df2redis::protocol::FlowDecoder::file(Limits::default());
        dec.feed(&std::fs::read(&path).unwrap(), &mut Vec::new()).unwrap();
        let want_types: &[u8] = match kind {
            ServerKind::Redis62 => &[12, 13, 14, 11, 15],
            ServerKind::Valkey8 => &[16, 17, 18, 20, 11, 21],
            _ => &[16, 17, 18, 11, 19],
        };
        for &t in want_types {
            assert!(dec.counts().0[t as usize] > 0, "{kind:?}: no entry of RDB type {t} in the file");
        }
        // Every type was in the file.
        let types: std::collections::BTreeSet<&str> = ["hash", "zset", "list", "set", "string", "stream"].into();
        assert!(types.iter().all(|t| decoded.values().flat_map(|m| m.values()).any(|k| k.ty == *t)), "{kind:?}");
        eprintln!("{kind:?} ({version:?}): {n} keys decode exactly, checksum verified");
    }
}

#[test]
fn inspect_reads_snapshot_files() {
    let u = unpack("v1.40.1-types");
    for (file, want) in [("snap-0001.dfs", "EOF (0xFF)                           1"), ("snap.rdb", "type 30 json")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_df2redis"))
            .arg("inspect")
            .arg(u.dir.0.join(file))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains(want), "{file}: {text}");
    }
    // A flow capture's grammar is still the default for other names.
    let copy = u.dir.0.join("shard.bin");
    std::fs::copy(u.dir.0.join("snap-0001.dfs"), &copy).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_df2redis")).arg("inspect").arg(&copy).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("EOF (0xFF) before FULLSYNC_END"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_df2redis")).args(["inspect", "--file"]).arg(&copy).output().unwrap();
    assert!(out.status.success());
}
