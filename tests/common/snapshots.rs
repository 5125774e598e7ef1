//! Snapshot files for the tests: the real Dragonfly snapshot fixtures unpacked into a temp
//! folder, and data to make Redis and Valkey write their own RDB files.

use std::path::{Path, PathBuf};

use super::redis_server::TempDir;
use super::{fixtures_root, read_fixture, Dataset, Val};

/// A snapshot fixture folder unpacked (its `.zst` files decompressed) into a temp dir.
pub struct Unpacked {
    pub dir: TempDir,
    pub expected: serde_json::Value,
}

pub fn unpack(name: &str) -> Unpacked {
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

pub fn snapshot_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fixtures_root().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

/// Write `bytes` as `dir/name` (a damaged copy of a file, for the bad-file tests).
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The offset of a snapshot file's EOF opcode: its RDB data ends 9 bytes later (EOF and the
/// 8-byte checksum), before any padding.
pub fn eof_offset(path: &Path) -> usize {
    let end = df2redis::source::files::read_file(path, df2redis::protocol::Limits::default(), |b| {
        b.clear();
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    (end.data_bytes - 9) as usize
}

/// Fill a server with every type in each encoding it has: small collections (ziplist or
/// listpack, intset), big ones (hashtable, skiplist, multi-node quicklist), integer, empty,
/// binary and LZF-compressible strings, a stream with a deleted entry, a group and pending
/// entries, absolute TTLs, and keys in dbs 1 and 2. Deterministic, so every server holds the
/// same logical data.
pub fn populate(c: &mut redis::Connection) {
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
pub fn save(c: &mut redis::Connection) -> PathBuf {
    let _: () = redis::cmd("SAVE").query(c).unwrap();
    let dir: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("dir").query(c).unwrap();
    let file: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("dbfilename").query(c).unwrap();
    PathBuf::from(&dir[1]).join(&file[1])
}

/// What a stream's RDB form cannot carry on an older server: Redis 6.2 (stream type 15) has no
/// entries-added counter, max-deleted id or a group's entries-read.
pub fn without_v7_stream_meta(ds: &mut Dataset) {
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

