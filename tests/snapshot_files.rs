//! Snapshot files as a source (`df2redis::source::files`): the real Dragonfly v1.40.1 files in
//! tests/fixtures/snapshots decode completely, by summary, by folder and as `.rdb`, to the
//! master's data; bad files give an error naming the file, the offset and what was expected.

mod common;

use std::path::{Path, PathBuf};

use common::redis_server::TempDir;
use common::{assemble_snapshot, diff_val, fixtures_root, parse_dataset, read_fixture, Val};
use df2redis::protocol::{Item, Limits};
use df2redis::source::files::{read_file, FileEnd, SnapshotSet};

const NATIVE: [&str; 6] = ["string", "list", "set", "hash", "zset", "stream"];

/// A snapshot fixture folder unpacked (its `.zst` files decompressed) into a temp dir.
struct Unpacked {
    dir: TempDir,
    expected: serde_json::Value,
}

fn unpack(name: &str) -> Unpacked {
    let src = fixtures_root().join("snapshots").join(name);
    let dir = TempDir::new("snapfiles");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let file = p.file_name().unwrap().to_str().unwrap().to_string();
        let plain = file.strip_suffix(".zst").unwrap_or(&file).to_string();
        std::fs::write(dir.0.join(&plain), read_fixture(&src.join(&plain))).unwrap();
    }
    let expected = serde_json::from_slice(&std::fs::read(dir.0.join("expected.json")).unwrap()).unwrap();
    Unpacked { dir, expected }
}

fn snapshot_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fixtures_root().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

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

/// The decoded keys equal `expected.final`: every native key's type, TTL and value, and every
/// Dragonfly-only key present; nothing extra, nothing missing.
fn assert_equals_expected(label: &str, items: &[Item], expected: &serde_json::Value) -> (usize, usize) {
    let expected = parse_dataset(&expected["final"]);
    let decoded = assemble_snapshot(items.iter());
    let (mut compared, mut df_only) = (0, 0);
    for (db, keys) in &decoded {
        for (k, d) in keys {
            let name = format!("{label}: db {db} key {:?}", String::from_utf8_lossy(k));
            let e = expected.get(db).and_then(|m| m.get(k)).unwrap_or_else(|| panic!("{name}: decoded but not expected"));
            if let Val::Other(_) = d.val {
                assert!(!NATIVE.contains(&e.ty.as_str()), "{name}: {} decoded as a Dragonfly-only type", e.ty);
                df_only += 1;
                continue;
            }
            assert_eq!(d.ty, e.ty, "{name}: type");
            assert!((d.expire_at_ms - e.expire_at_ms).abs() <= 2000, "{name}: ttl {} vs {}", d.expire_at_ms, e.expire_at_ms);
            if let Some(diff) = diff_val(&e.val, &d.val) {
                panic!("{name}: {diff}");
            }
            compared += 1;
        }
    }
    for (db, keys) in &expected {
        for k in keys.keys() {
            assert!(
                decoded.get(db).is_some_and(|m| m.contains_key(k)),
                "{label}: db {db} key {:?} expected but not in the files",
                String::from_utf8_lossy(k)
            );
        }
    }
    assert!(compared > 0, "{label}: nothing compared");
    (compared, df_only)
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

fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.0.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

const CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_REDIS);

#[test]
fn bad_files_are_named_with_the_offset_and_what_was_expected() {
    let u = unpack("v1.40.1-bulk-zstd");
    let rdb = std::fs::read(u.dir.0.join("snap.rdb")).unwrap();
    // Where the RDB data ends: EOF and an 8-byte zero checksum, then Dragonfly's padding.
    let end = read_file(&u.dir.0.join("snap.rdb"), Limits::default(), |b| {
        b.clear();
        Ok(())
    })
    .unwrap();
    let eof_at = (end.data_bytes - 9) as usize;
    assert_eq!(rdb[eof_at], 0xFF);
    let out = TempDir::new("badfiles");

    // Truncated: in the body, and inside the checksum.
    let p = write(&out, "cut.rdb", &rdb[..eof_at / 2]);
    let e = read_err(&p);
    assert!(e.starts_with(&format!("{}: ", p.display())) && e.contains("the file ends too early"), "{e}");
    let p = write(&out, "cut-checksum.rdb", &rdb[..eof_at + 4]);
    let e = read_err(&p);
    assert!(e.contains("the file ends too early") && e.contains("the 8-byte checksum after EOF"), "{e}");

    // Not an RDB file at all.
    let p = write(&out, "wrong.rdb", b"*1\r\n$4\r\nPING\r\n");
    let e = read_err(&p);
    assert!(e.contains("byte offset 0") && e.contains("expected the RDB header"), "{e}");

    // A checksum that is not zero is verified: the right one passes, a wrong one is named.
    let mut with_sum = rdb[..eof_at + 1].to_vec();
    let crc = CRC64.checksum(&with_sum);
    with_sum.extend_from_slice(&crc.to_le_bytes());
    let p = write(&out, "sum.rdb", &with_sum);
    let end = read_file(&p, Limits::default(), |b| {
        b.clear();
        Ok(())
    })
    .unwrap();
    assert!(end.checksum_verified && end.trailing == 0, "{end:?}");
    let mut bad_sum = with_sum.clone();
    bad_sum[eof_at + 1] ^= 0x01;
    let p = write(&out, "badsum.rdb", &bad_sum);
    let e = read_err(&p);
    assert!(e.contains(&format!("byte offset {}", eof_at + 1)) && e.contains("checksum mismatch"), "{e}");
    // A flipped data byte with the original checksum: mismatch too (or a decode error there).
    let mut flipped = with_sum.clone();
    flipped[eof_at - 3] ^= 0x40;
    let e = read_err(&write(&out, "flipped.rdb", &flipped));
    assert!(e.contains("checksum mismatch") || e.contains("byte offset"), "{e}");

    // Bytes after the checksum that are not Dragonfly's block padding.
    let mut extra = with_sum.clone();
    extra.extend_from_slice(b"garbage");
    let e = read_err(&write(&out, "extra.rdb", &extra));
    assert!(e.contains("7 bytes follow the checksum"), "{e}");
    eprintln!("extra: {e}");

    // An unknown opcode where an item starts (in place of EOF).
    let mut unknown = rdb.clone();
    unknown[eof_at] = 0xF1;
    let e = read_err(&write(&out, "unknown.rdb", &unknown));
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
