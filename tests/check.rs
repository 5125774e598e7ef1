//! `df2redis check` end to end: the emulator as the source, a real redis-server (standalone,
//! then a real 3-master cluster) as the target, `df2redis migrate` to make the copy and
//! `df2redis check` as a separate process. The check passes on the exact copy; then one
//! difference of each kind is injected into the target (a missing key, an extra key, a changed
//! value, a changed TTL, a changed type, one element changed in big keys of every type) and
//! the JSON report must name each key under its category and db, and nothing else.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::process::Output;

use common::redis_cluster::RedisCluster;
use common::redis_server::{now_ms, RedisServer, TempDir};
use common::run::{df2redis, text};
use df2redis::emulator::{Config, Emulator, Entry, Stream, StreamId, Value};
use df2redis::target::slots::key_slot;
use serde_json::Value as Json;

/// Elements of each big key: well past any window, so they are compared in many.
const BIG: usize = 60_000;

/// Every Redis type over dbs 0-2 (key names carry their db, so a cluster can hold all of them
/// in db 0), TTLs, and in db 0 a big list, hash, set, sorted set, stream and string.
fn load(emu: &Emulator) {
    let in_an_hour = now_ms() as u64 + 3_600_000;
    for db in 0..3u32 {
        let k = |name: &str| format!("db{db}:{name}").into_bytes();
        for i in 0..200 {
            emu.load(db, &k(&format!("s:{i}")), Entry::new(Value::String(format!("value-{i}").into_bytes())));
        }
        for i in 0..20 {
            emu.load(db, &k(&format!("ttl:{i}")), Entry::with_expiry(Value::String(b"t".to_vec()), in_an_hour + i * 1000));
            let list: VecDeque<Vec<u8>> = (0..10).map(|e| format!("e{e}").into_bytes()).collect();
            emu.load(db, &k(&format!("list:{i}")), Entry::new(Value::List(list)));
            let hash = (0..10).map(|f| (format!("f{f}").into_bytes(), format!("v{f}").into_bytes())).collect();
            emu.load(db, &k(&format!("hash:{i}")), Entry::new(Value::Hash(hash)));
            let set = (0..10).map(|m| format!("m{m}").into_bytes()).collect();
            emu.load(db, &k(&format!("set:{i}")), Entry::new(Value::Set(set)));
            let zset = (0..10).map(|m| (format!("m{m}").into_bytes(), m as f64 / 4.0)).collect();
            emu.load(db, &k(&format!("zset:{i}")), Entry::new(Value::Zset(zset)));
            let mut st = Stream::default();
            for e in 0..5u64 {
                st.add(StreamId { ms: 1000 + e, seq: 0 }, vec![(b"f".to_vec(), format!("{e}").into_bytes())]);
            }
            emu.load(db, &k(&format!("stream:{i}")), Entry::new(Value::Stream(st)));
        }
    }
    let big = |kind: &str| format!("db0:big:{kind}").into_bytes();
    let list: VecDeque<Vec<u8>> = (0..BIG).map(|i| format!("element-{i:06}").into_bytes()).collect();
    emu.load(0, &big("list"), Entry::new(Value::List(list)));
    let hash = (0..BIG).map(|i| (format!("field:{i:06}").into_bytes(), format!("value-{i}").into_bytes())).collect();
    emu.load(0, &big("hash"), Entry::new(Value::Hash(hash)));
    let set = (0..BIG).map(|i| format!("member:{i:06}").into_bytes()).collect();
    emu.load(0, &big("set"), Entry::new(Value::Set(set)));
    let zset = (0..BIG).map(|i| (format!("member:{i:06}").into_bytes(), i as f64 * 1.5)).collect();
    emu.load(0, &big("zset"), Entry::new(Value::Zset(zset)));
    let mut st = Stream::default();
    for i in 0..(BIG as u64 / 4) {
        st.add(StreamId { ms: 5000 + i / 3, seq: i % 3 }, vec![(b"n".to_vec(), i.to_string().into_bytes())]);
    }
    emu.load(0, &big("stream"), Entry::new(Value::Stream(st)));
    let s: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    emu.load(0, &big("string"), Entry::new(Value::String(s)));
    // Few elements, each big: windows of one element (sized from MEMORY USAGE).
    let fat: VecDeque<Vec<u8>> = (0..12u8).map(|i| vec![b'A' + i; 512 << 10]).collect();
    emu.load(0, &big("fat"), Entry::new(Value::List(fat)));
}

fn source_keys(emu: &Emulator) -> u64 {
    emu.data().values().map(|m| m.len() as u64).sum()
}

/// `df2redis migrate` into `target`; it must succeed.
fn migrate(emu: &Emulator, target: &str, extra: &[&str]) {
    let src = emu.addr().to_string();
    let mut args = vec!["migrate", "--source", &src, "--target", target];
    args.extend_from_slice(extra);
    let out = df2redis(&args).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "migrate: {}", text(&out));
}

/// Run `df2redis check` with a JSON report; the exit code, the report and the output.
fn check(emu: &Emulator, target: &str, extra: &[&str], dir: &TempDir) -> (Option<i32>, Json, String) {
    let report: PathBuf = dir.0.join("report.json");
    let _ = std::fs::remove_file(&report);
    let src = emu.addr().to_string();
    let rp = report.to_string_lossy().into_owned();
    let mut args = vec!["check", "--source", &src, "--target", target, "--report", &rp];
    args.extend_from_slice(extra);
    let out: Output = df2redis(&args).wait_with_output().unwrap();
    let log = text(&out);
    let json = std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("no report ({e}): {log}"));
    let v: Json = serde_json::from_str(&json).unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{json}"));
    (out.status.code(), v, log)
}

/// (category, db, key) of every key the report lists.
fn listed(v: &Json) -> BTreeSet<(String, u64, String)> {
    let mut out = BTreeSet::new();
    for (arr, cats) in [("source_dbs", &["missing", "type", "value", "ttl"][..]), ("target_dbs", &["extra"][..])] {
        for d in v[arr].as_array().unwrap() {
            for c in cats {
                let l = &d[*c];
                let keys = l["keys"].as_array().unwrap();
                assert_eq!(l["count"].as_u64().unwrap(), keys.len() as u64, "{c}: every difference is listed: {d}");
                for k in keys {
                    out.insert((c.to_string(), d["db"].as_u64().unwrap(), k["key"].as_str().unwrap().to_string()));
                }
            }
        }
    }
    out
}

fn detail(v: &Json, cat: &str, key: &str) -> String {
    for arr in ["source_dbs", "target_dbs"] {
        for d in v[arr].as_array().unwrap() {
            if let Some(keys) = d[cat]["keys"].as_array() {
                if let Some(k) = keys.iter().find(|k| k["key"] == key) {
                    return k["detail"].as_str().unwrap().to_string();
                }
            }
        }
    }
    panic!("{key} not listed under {cat}: {v}");
}

fn assert_consistent(code: Option<i32>, v: &Json, log: &str, keys: u64) {
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(v["consistent"], true, "{v}");
    assert_eq!(v["complete"], true, "{v}");
    assert_eq!(v["totals"]["differences"], 0, "{v}");
    assert_eq!(v["totals"]["source_keys_checked"], keys, "{v}");
    assert!(log.contains("result: consistent"), "{log}");
}

/// One set of injected differences: `w(db, args)` writes to the target.
fn inject(mut w: impl FnMut(u32, &[&[u8]]), cluster: bool) -> BTreeSet<(String, u64, String)> {
    let t = |db: u32| if cluster { 0 } else { db };
    w(0, &[b"DEL", b"db0:s:7"]);
    w(t(1), &[b"DEL", b"db1:s:3"]);
    w(0, &[b"SET", b"extra:key", b"x"]);
    w(0, &[b"SET", b"db0:s:11", b"changed"]);
    w(t(2), &[b"PEXPIRE", b"db2:ttl:5", b"600000"]);
    w(0, &[b"DEL", b"db0:s:12"]);
    w(0, &[b"RPUSH", b"db0:s:12", b"now a list"]);
    w(0, &[b"LSET", b"db0:big:list", b"41234", b"changed"]);
    w(0, &[b"HSET", b"db0:big:hash", b"field:049999", b"changed"]);
    w(0, &[b"SREM", b"db0:big:set", b"member:031337"]);
    w(0, &[b"SADD", b"db0:big:set", b"member:intruder"]);
    w(0, &[b"ZADD", b"db0:big:zset", b"XX", b"7", b"member:000555"]);
    w(0, &[b"SETRANGE", b"db0:big:string", b"2500000", b"!"]);
    w(0, &[b"XDEL", b"db0:big:stream", b"7000-1"]);
    w(0, &[b"XADD", b"db0:big:stream", b"99999-0", b"n", b"late"]);
    w(0, &[b"LSET", b"db0:big:fat", b"9", b"changed"]);
    // Not the master's data: never reported.
    w(0, &[b"SET", b"df2redis:checkpoint:0", b"df2redis/1 replid=x flows=4 next_lsn=1"]);
    let e = |c: &str, db: u64, k: &str| (c.to_string(), db, k.to_string());
    BTreeSet::from([
        e("missing", 0, "db0:s:7"),
        e("missing", 1, "db1:s:3"),
        e("extra", 0, "extra:key"),
        e("value", 0, "db0:s:11"),
        e("ttl", 2, "db2:ttl:5"),
        e("type", 0, "db0:s:12"),
        e("value", 0, "db0:big:list"),
        e("value", 0, "db0:big:hash"),
        e("value", 0, "db0:big:set"),
        e("value", 0, "db0:big:zset"),
        e("value", 0, "db0:big:string"),
        e("value", 0, "db0:big:stream"),
        e("value", 0, "db0:big:fat"),
    ])
}

fn assert_details(v: &Json) {
    for (cat, key, want) in [
        ("missing", "db0:s:7", "string not in target db 0"),
        ("value", "db0:s:11", "size differs"),
        ("ttl", "db2:ttl:5", " ms, target "),
        ("type", "db0:s:12", "source string, target list"),
        ("value", "db0:big:list", "element 41234 differs"),
        ("value", "db0:big:hash", "field \"field:049999\" differs"),
        ("value", "db0:big:set", "member \"member:031337\" missing on the target"),
        ("value", "db0:big:zset", "member \"member:000555\" score differs: source 832.5, target 7"),
        ("value", "db0:big:string", "bytes differ from offset 2500000"),
        ("value", "db0:big:stream", "stream entry 7000-1 differs"),
        ("value", "db0:big:fat", "element 9 differs"),
        ("extra", "extra:key", "string, not in source db 0"),
    ] {
        let d = detail(v, cat, key);
        assert!(d.contains(want), "{cat} {key}: {d:?} should say {want:?}");
    }
}

#[test]
fn check_a_standalone_copy_then_find_each_injected_difference() {
    let emu = Emulator::start(Config { shards: 4, ..Config::default() }).unwrap();
    load(&emu);
    let keys = source_keys(&emu);
    let srv = RedisServer::start(&[]);
    let target = format!("redis://{}", srv.addr());
    let dir = TempDir::new("check");
    migrate(&emu, &target, &[]);

    let (code, v, log) = check(&emu, &target, &[], &dir);
    assert_consistent(code, &v, &log, keys);
    assert_eq!(v["target_kind"], "standalone");
    let per_db: BTreeMap<u64, u64> =
        v["source_dbs"].as_array().unwrap().iter().map(|d| (d["db"].as_u64().unwrap(), d["keys_checked"].as_u64().unwrap())).collect();
    assert_eq!(per_db.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2], "{v}");
    assert_eq!(v["totals"]["target_keys_checked"], keys, "{v}");

    // A sample checks about N keys of each side; paced, it takes its time.
    let (code, v, log) = check(&emu, &target, &["--sample", "200", "--max-keys-per-s", "400"], &dir);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(v["mode"], "sample");
    let (s, t) = (v["totals"]["source_keys_checked"].as_u64().unwrap(), v["totals"]["target_keys_checked"].as_u64().unwrap());
    assert!((200..=203).contains(&s) && (200..=203).contains(&t), "sample sizes {s} {t}: {v}");
    // 400 keys at 400/s with one second of burst credit: at least most of a second.
    assert!(v["elapsed_ms"].as_u64().unwrap() >= 700, "the rate limit was not applied: {v}");

    let mut c = srv.conn();
    let want = inject(
        |db, args| {
            redis::cmd("SELECT").arg(db).query::<()>(&mut c).unwrap();
            let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
            for a in &args[1..] {
                cmd.arg(*a);
            }
            cmd.query::<redis::Value>(&mut c).unwrap();
        },
        false,
    );
    let (code, v, log) = check(&emu, &target, &[], &dir);
    assert_eq!(code, Some(1), "{log}");
    assert_eq!(v["consistent"], false);
    assert_eq!(listed(&v), want, "{v}");
    assert_details(&v);
    assert!(log.contains("result: 13 differences"), "{log}");
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
}

#[test]
fn check_a_cluster_copy_then_find_each_injected_difference() {
    let emu = Emulator::start(Config { shards: 4, ..Config::default() }).unwrap();
    load(&emu);
    let keys = source_keys(&emu);
    let cluster = RedisCluster::start();
    let target = format!("redis://{}", cluster.seed());
    let dir = TempDir::new("check-cluster");
    let map = ["--db-map", "0:0,1:0,2:0"];
    migrate(&emu, &target, &map);

    // Without the mapping: a usage error naming the dbs.
    let out = df2redis(&["check", "--source", &emu.addr().to_string(), "--target", &target]).wait_with_output().unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("db 1 (") && log.contains("db 2 (") && log.contains("--db-map"), "{log}");

    let (code, v, log) = check(&emu, &target, &map, &dir);
    assert_consistent(code, &v, &log, keys);
    assert_eq!(v["target_kind"], "cluster");
    let tdbs = v["target_dbs"].as_array().unwrap();
    assert_eq!(tdbs.len(), 1);
    assert_eq!(tdbs[0]["keys_checked"], keys, "every master was scanned: {v}");
    assert!(v["source_dbs"].as_array().unwrap().iter().all(|d| d["target_db"] == 0), "{v}");

    // A slot half migrated: its moved keys answer ASK on their old owner; still consistent.
    let slots: Vec<u16> = [b"db0:big:list".as_slice(), b"db1:hash:3"].iter().map(|k| key_slot(k)).collect();
    for &slot in &slots {
        cluster.begin_migration(slot, (cluster.owner(slot) + 1) % 3);
        assert!(cluster.migrate_some_keys(slot, 100) >= 1);
    }
    let (code, v, log) = check(&emu, &target, &map, &dir);
    assert_consistent(code, &v, &log, keys);
    for slot in slots {
        cluster.finish_migration(slot);
    }

    let want = inject(
        |_, args| {
            let mut c = cluster.conn(cluster.owner(key_slot(args[1])));
            let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
            for a in &args[1..] {
                cmd.arg(*a);
            }
            cmd.query::<redis::Value>(&mut c).unwrap();
        },
        true,
    );
    let (code, v, log) = check(&emu, &target, &map, &dir);
    assert_eq!(code, Some(1), "{log}");
    assert_eq!(listed(&v), want, "{v}");
    assert_details(&v);
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
}
