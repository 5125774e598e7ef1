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

// ---------------------------------------------------------------------------------------------
// RDB files written by Redis and Valkey themselves.

use common::redis_server::{read_all, RedisServer, ServerKind};
use common::Dataset;

/// Fill a server with every type in each encoding it has: small collections (ziplist or
/// listpack, intset), big ones (hashtable, skiplist, multi-node quicklist), integer, empty,
/// binary and LZF-compressible strings, a stream with a deleted entry, a group and pending
/// entries, absolute TTLs, and keys in dbs 1 and 2. Deterministic, so every server holds the
/// same logical data.
fn populate(c: &mut redis::Connection) {
    fn run(c: &mut redis::Connection, args: &[&[u8]]) {
        let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let _: redis::Value = cmd.query(c).unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(args[0])));
    }
    let far = b"4102444800000"; // 2100-01-01, absolute
    run(c, &[b"SET", b"s:int", b"12345"]);
    run(c, &[b"SET", b"s:min", b"-9223372036854775808"]);
    run(c, &[b"SET", b"s:empty", b""]);
    run(c, &[b"SET", b"s:bin", &[0u8, 0xFF, b'\r', b'\n', 0x80]]);
    run(c, &[b"SET", b"s:lzf", "abcdefgh".repeat(40).as_bytes()]);
    let big: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    run(c, &[b"SET", b"s:big", &big]);
    run(c, &[b"SET", b"s:ttl", b"v"]);
    run(c, &[b"PEXPIREAT", b"s:ttl", far]);
    run(c, &[b"RPUSH", b"l:small", b"a", b"1", b"-70000", b"", b"9223372036854775807", b"x"]);
    for chunk in (0..3000u32).collect::<Vec<_>>().chunks(500) {
        let items: Vec<String> = chunk.iter().map(|i| if i % 3 == 0 { i.to_string() } else { format!("element-{i:05}") }).collect();
        let mut args: Vec<&[u8]> = vec![b"RPUSH", b"l:big"];
        args.extend(items.iter().map(|s| s.as_bytes()));
        run(c, &args);
    }
    run(c, &[b"SADD", b"set:int16", b"1", b"2", b"-3"]);
    run(c, &[b"SADD", b"set:int64", b"1", b"9223372036854775807", b"-9223372036854775808"]);
    run(c, &[b"SADD", b"set:small", b"a", b"b", b"c"]);
    for i in 0..600u32 {
        run(c, &[b"SADD", b"set:big", format!("member-{i}").as_bytes()]);
    }
    run(c, &[b"HSET", b"h:small", b"f1", b"v1", b"f2", b"2", b"f3", b""]);
    run(c, &[b"PEXPIREAT", b"h:small", far]);
    for i in 0..600u32 {
        run(c, &[b"HSET", b"h:big", format!("field-{i}").as_bytes(), format!("{i}").as_bytes()]);
    }
    run(c, &[b"ZADD", b"z:small", b"1", b"a", b"-inf", b"ninf", b"inf", b"pinf", b"0.1", b"tenth", b"3", b"three"]);
    for i in 0..300u32 {
        run(c, &[b"ZADD", b"z:big", format!("{}.25", i).as_bytes(), format!("m{i}").as_bytes()]);
    }
    for i in 1..=6u32 {
        run(c, &[b"XADD", b"x:s", format!("1700000000000-{i}").as_bytes(), b"f", format!("v{i}").as_bytes()]);
    }
    run(c, &[b"XDEL", b"x:s", b"1700000000000-3"]);
    run(c, &[b"XGROUP", b"CREATE", b"x:s", b"g1", b"0"]);
    run(c, &[b"XREADGROUP", b"GROUP", b"g1", b"alice", b"COUNT", b"2", b"STREAMS", b"x:s", b">"]);
    run(c, &[b"XGROUP", b"CREATE", b"x:s", b"g2", b"$"]);
    run(c, &[b"SELECT", b"1"]);
    run(c, &[b"SET", b"db1:k", b"one"]);
    run(c, &[b"RPUSH", b"db1:l", b"x", b"y"]);
    run(c, &[b"SELECT", b"2"]);
    run(c, &[b"HSET", b"db2:h", b"a", b"b"]);
    run(c, &[b"SELECT", b"0"]);
}

/// SAVE, and the path of the file it wrote.
fn save(c: &mut redis::Connection) -> PathBuf {
    let _: () = redis::cmd("SAVE").query(c).unwrap();
    let dir: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("dir").query(c).unwrap();
    let file: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("dbfilename").query(c).unwrap();
    PathBuf::from(&dir[1]).join(&file[1])
}

/// What a stream's RDB form cannot carry on an older server: Redis 6.2 (stream type 15) has no
/// entries-added counter, max-deleted id or a group's entries-read.
fn without_v7_stream_meta(ds: &mut Dataset) {
    for keys in ds.values_mut() {
        for k in keys.values_mut() {
            if let Val::Stream(s) = &mut k.val {
                s.entries_added = 0;
                s.max_deleted_id = String::new();
                for g in &mut s.groups {
                    g.entries_read = None;
                }
            }
        }
    }
}

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
