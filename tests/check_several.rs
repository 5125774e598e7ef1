//! `df2redis check` against several sources, whose union the target holds: two emulated
//! standalone masters copied by one `df2redis migrate --source a --source b`, then checked
//! consistent; then a changed value, a deleted key, an extra key and a key both masters hold
//! with different values, each reported with the source it came from (or, for the extra key,
//! the sources it was looked up in). Then a real Redis Cluster as the source: its masters are
//! discovered as a Dragonfly cluster's are, each compared as a source owning its slots, and an
//! extra key is looked up in the owner of its slot only.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::redis_cluster::RedisCluster;
use common::redis_server::{RedisServer, TempDir};
use common::run::{df2redis, text};
use df2redis::emulator::{Config, Emulator};
use df2redis::target::slots::key_slot;
use serde_json::Value as Json;

/// A master with `prefix` keys in db 0 and, for `db1`, some in db 1 too.
fn master(prefix: &str, keys: usize, db1: bool) -> Emulator {
    let emu = Emulator::start(Config { shards: 2, ..Config::default() }).unwrap();
    for i in 0..keys {
        emu.write(0, &[b"SET", format!("{prefix}s:{i}").as_bytes(), format!("v{i}").as_bytes()]).unwrap();
        emu.write(0, &[b"HSET", format!("{prefix}h:{}", i % 10).as_bytes(), format!("f{i}").as_bytes(), b"x"]).unwrap();
    }
    if db1 {
        for i in 0..keys / 4 {
            emu.write(1, &[b"RPUSH", format!("{prefix}db1:l:{}", i % 5).as_bytes(), format!("e{i}").as_bytes()]).unwrap();
        }
    }
    emu
}

/// `df2redis check` over `sources` with a JSON report: exit code, report, output.
fn check(sources: &[String], target: &str, extra: &[&str], dir: &TempDir) -> (Option<i32>, Json, String) {
    let report: PathBuf = dir.0.join("report.json");
    let _ = std::fs::remove_file(&report);
    let rp = report.to_string_lossy().into_owned();
    let mut args = vec!["check"];
    for s in sources {
        args.extend(["--source", s.as_str()]);
    }
    args.extend(["--target", target, "--report", &rp]);
    args.extend_from_slice(extra);
    let out = df2redis(&args).wait_with_output().unwrap();
    let log = text(&out);
    let json = std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("no report ({e}): {log}"));
    let v: Json = serde_json::from_str(&json).unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{json}"));
    (out.status.code(), v, log)
}

/// (category, source address or "target", db, key) of every key the report lists.
fn listed(v: &Json) -> BTreeSet<(String, String, u64, String)> {
    let mut out = BTreeSet::new();
    for d in v["source_dbs"].as_array().unwrap() {
        for c in ["missing", "type", "value", "ttl", "conflict"] {
            for k in d[c]["keys"].as_array().unwrap() {
                let src = d["source"].as_str().unwrap().to_string();
                out.insert((c.to_string(), src, d["db"].as_u64().unwrap(), k["key"].as_str().unwrap().to_string()));
            }
        }
    }
    for d in v["target_dbs"].as_array().unwrap() {
        for k in d["extra"]["keys"].as_array().unwrap() {
            out.insert(("extra".to_string(), "target".to_string(), d["db"].as_u64().unwrap(), k["key"].as_str().unwrap().to_string()));
        }
    }
    out
}

fn detail(v: &Json, cat: &str, key: &str) -> String {
    for arr in ["source_dbs", "target_dbs"] {
        for d in v[arr].as_array().unwrap() {
            for k in d[cat]["keys"].as_array().into_iter().flatten() {
                if k["key"] == key {
                    return k["detail"].as_str().unwrap().to_string();
                }
            }
        }
    }
    panic!("{key} not listed under {cat}: {v}")
}

#[test]
fn two_masters_checked_as_their_union_and_each_difference_names_its_source() {
    let (a, b) = (master("a:", 200, false), master("b:", 200, true));
    let srv = RedisServer::start(&[]);
    let (sa, sb) = (a.addr().to_string(), b.addr().to_string());
    let sources = vec![sa.clone(), sb.clone()];
    let target = format!("redis://{}", srv.addr());
    let dir = TempDir::new("check-several");
    // b's db 1 goes to db 0 of the target, with a's and b's db 0.
    let map = ["--db-map", "1:0"];
    let out = df2redis(&["migrate", "--source", &sa, "--source", &sb, "--target", &target, map[0], map[1]]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "migrate: {}", text(&out));

    let (code, v, log) = check(&sources, &target, &map, &dir);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(v["consistent"], true, "{v}");
    assert!(log.contains(&format!("2 sources compared: {sa} (not a cluster node), {sb} (not a cluster node)")), "{log}");
    assert!(log.contains(&format!("source {sb} db 1 -> target db 0: 5 keys compared")), "{log}");
    let src_keys = 2 * 210 + 5;
    assert_eq!(v["totals"]["source_keys_checked"], src_keys, "{v}");
    assert_eq!(v["totals"]["target_keys_checked"], src_keys, "{v}");
    assert_eq!(v["sources"].as_array().unwrap().len(), 2, "{v}");

    // Without the mapping b's db 1 keys are missing (target db 1 is empty) and extra in db 0.
    let (code, v, log) = check(&sources, &target, &[], &dir);
    assert_eq!(code, Some(1), "{log}");
    assert_eq!(v["totals"]["missing"], 5, "{v}");
    assert_eq!(v["totals"]["extra"], 5, "{v}");

    // A sample and a rate limit with several sources: still consistent, fewer keys read.
    let (code, v, log) = check(&sources, &target, &["--db-map", "1:0", "--sample", "60", "--max-keys-per-s", "100000"], &dir);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(v["mode"], "sample");
    let n = v["totals"]["source_keys_checked"].as_u64().unwrap();
    assert!((60..=70).contains(&n), "about 60 source keys, shared among both sources' dbs: {n} {v}");
    assert!(v["source_dbs"].as_array().unwrap().iter().all(|d| d["keys_checked"].as_u64().unwrap() > 0), "every source db gets a share: {v}");

    // The differences: a value changed (a's key), a key deleted (b's), an extra key; a key in
    // both masters with different values (the target holds a's); one in both, the same.
    let mut c = srv.conn();
    redis::cmd("SET").arg("a:s:7").arg("changed").query::<()>(&mut c).unwrap();
    redis::cmd("DEL").arg("b:s:9").query::<()>(&mut c).unwrap();
    redis::cmd("SET").arg("stray").arg("1").query::<()>(&mut c).unwrap();
    for (emu, v) in [(&a, "from-a"), (&b, "from-b")] {
        emu.write(0, &[b"SET", b"shared:conflict", v.as_bytes()]).unwrap();
        emu.write(0, &[b"SET", b"shared:same", b"same"]).unwrap();
    }
    redis::cmd("SET").arg("shared:conflict").arg("from-a").query::<()>(&mut c).unwrap();
    redis::cmd("SET").arg("shared:same").arg("same").query::<()>(&mut c).unwrap();

    let (code, v, log) = check(&sources, &target, &map, &dir);
    assert_eq!(code, Some(1), "differences exit 1: {log}");
    assert_eq!(v["consistent"], false);
    let want: BTreeSet<(String, String, u64, String)> = [
        ("value", sa.as_str(), 0, "a:s:7"),
        ("missing", sb.as_str(), 0, "b:s:9"),
        ("extra", "target", 0, "stray"),
        ("conflict", sa.as_str(), 0, "shared:conflict"),
    ]
    .iter()
    .map(|(c, s, d, k)| (c.to_string(), s.to_string(), *d, k.to_string()))
    .collect();
    assert_eq!(listed(&v), want, "{v}");
    assert_eq!(detail(&v, "extra", "stray"), format!("string, not in source db 0, 1 of {sa}, {sb}"));
    let conflict = detail(&v, "conflict", "shared:conflict");
    assert!(conflict.starts_with(&format!("also in {sb} db 0, and they differ: value")), "{conflict}");
    assert_eq!(v["totals"]["conflict"], 1, "{v}");
    // shared:same was compared once, with a, and counted under b as compared there.
    let b0 = v["source_dbs"].as_array().unwrap().iter().find(|d| d["source"] == sb.as_str() && d["db"] == 0).unwrap();
    assert_eq!(b0["in_earlier_source"], 2, "shared:same and shared:conflict: {b0}");
    // The text names the sources too.
    assert!(log.contains(&format!("source {sa} db 0 -> target db 0:")) && log.contains("  conflict: \"shared:conflict\""), "{log}");
    assert!(log.contains("result: 4 differences"), "{log}");
    assert!(a.violations().is_empty() && b.violations().is_empty());
}

/// A source that answers `CLUSTER SLOTS` (here a real Redis Cluster, as a Dragonfly node in
/// cluster mode would): its masters are found from one node, each compared alone with the
/// slots it owns, and a target key is looked up in its slot's owner only. `--discover off`
/// compares the node given alone, so the others' keys are extra, in slots no source owns.
#[test]
fn a_cluster_source_is_checked_master_by_master_with_their_slots() {
    let cluster = RedisCluster::start();
    let srv = RedisServer::start(&[]);
    let mut t = srv.conn();
    for i in 0..300 {
        let (k, v) = (format!("k:{i}"), format!("v{i}"));
        let mut c = cluster.conn(cluster.owner(key_slot(k.as_bytes())));
        redis::cmd("SET").arg(&k).arg(&v).query::<()>(&mut c).unwrap();
        redis::cmd("SET").arg(&k).arg(&v).query::<()>(&mut t).unwrap();
    }
    let target = format!("redis://{}", srv.addr());
    let dir = TempDir::new("check-several-cluster");
    let seed = vec![cluster.seed()];
    let (code, v, log) = check(&seed, &target, &[], &dir);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("3 sources compared:") && log.contains("(slots 0-5460)"), "{log}");
    assert_eq!(v["totals"]["source_keys_checked"], 300, "{v}");
    let slots: Vec<String> = v["sources"].as_array().unwrap().iter().map(|s| s["slots"].as_str().unwrap().to_string()).collect();
    assert_eq!(slots.len(), 3, "{v}");

    redis::cmd("SET").arg("stray").arg("1").query::<()>(&mut t).unwrap();
    let (code, v, log) = check(&seed, &target, &[], &dir);
    assert_eq!(code, Some(1), "{log}");
    let owner = cluster.addrs()[cluster.owner(key_slot(b"stray"))].clone();
    let d = detail(&v, "extra", "stray");
    assert_eq!(d, format!("string, not in source db 0 of {owner} (the owner of its slot {})", key_slot(b"stray")), "{v}");

    // Only the node given: the keys of the other masters' slots are extra, and say why.
    let (code, v, log) = check(&seed, &target, &["--discover", "off", "--max-listed", "500"], &dir);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("1 source compared:"), "{log}");
    let other = (0..300).map(|i| format!("k:{i}")).find(|k| cluster.addrs()[cluster.owner(key_slot(k.as_bytes()))] != seed[0]).unwrap();
    assert_eq!(detail(&v, "extra", &other), format!("string, in slot {}, which no source checked owns", key_slot(other.as_bytes())));
}
