//! A real 3-master Redis Cluster as the target, the emulator as the source: every type, a live
//! journal with cross-slot records, and a slot resharded while the journal flows.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::emulator_model::expected;
use common::redis_cluster::RedisCluster;
use common::run::{df2redis, text};
use common::redis_server::{compare, now_ms, RedisServer};
use common::merged;
use df2redis::emulator::{datasets, Config, Emulator};
use df2redis::target::slots::key_slot;

fn check(emu: &Emulator, cluster: &RedisCluster) -> usize {
    let exp = merged(expected(emu));
    let not_judged: BTreeSet<(u32, Vec<u8>)> =
        exp.iter().flat_map(|(db, m)| m.iter().filter(|(_, k)| k.ty == "dragonfly-only").map(move |(k, _)| (*db, k.clone()))).collect();
    let scratch = RedisServer::start(&[]);
    let (diffs, compared, _) = compare(&exp, &cluster.read_all(), &mut scratch.conn(), 1000, &not_judged);
    assert!(diffs.is_empty(), "{} differences:\n{}", diffs.len(), diffs.join("\n"));
    compared
}

#[test]
fn migrate_every_type_into_a_cluster() {
    let emu = Emulator::start(Config { shards: 4, ..Config::default() }).unwrap();
    datasets::type_coverage(&emu);
    let cluster = RedisCluster::start();
    let target = format!("redis://{}", cluster.seed());
    let out = df2redis(&["migrate", "--source", &emu.addr().to_string(), "--target", &target, "--db-map", "0:0,1:0,2:0"])
        .wait_with_output()
        .unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    for addr in cluster.addrs() {
        assert!(log.contains(&format!("node {addr}:")), "per-node writes for {addr}: {log}");
    }
    let n = check(&emu, &cluster);
    assert!(n >= 50, "only {n} keys compared");
    // Small collections went to their slots' masters as RESTORE payloads.
    if std::env::var("DF2REDIS_TEST_RESTORE").as_deref() != Ok("off") {
        for i in 0..cluster.addrs().len() {
            let info: String = redis::cmd("INFO").arg("commandstats").query(&mut cluster.conn(i)).unwrap();
            assert!(info.contains("cmdstat_restore:calls="), "master {i} got no RESTORE:\n{info}");
        }
    }
}

/// Two keys on one emulator shard (so RENAME is journaled verbatim) in different slots.
fn same_shard_cross_slot(emu: &Emulator, tag: &str) -> (String, String) {
    for i in 0.. {
        let (a, b) = (format!("{tag}:a:{i}"), format!("{tag}:b:{i}"));
        if emu.shard_of(a.as_bytes()) == emu.shard_of(b.as_bytes()) && key_slot(a.as_bytes()) != key_slot(b.as_bytes()) {
            return (a, b);
        }
    }
    unreachable!()
}

#[test]
fn replicate_into_a_cluster_while_a_slot_is_resharded() {
    let emu = Emulator::start(Config { shards: 4, ..Config::default() }).unwrap();
    datasets::small(&emu, 2000);
    let cluster = RedisCluster::start();
    let target = format!("redis://{}", cluster.seed());
    let child = df2redis(&["replicate", "--source", &emu.addr().to_string(), "--target", &target, "--progress-secs", "1"]);
    assert!(emu.wait_fullsync_end(Duration::from_secs(60)));
    let w = |args: &[&str]| emu.write(0, &args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>()).unwrap();
    let mut child = Some(child);
    let mut synced = |what: &str| {
        if !emu.wait_acked_all(Duration::from_secs(60)) {
            let c = child.take().unwrap();
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let log = text(&c.wait_with_output().unwrap());
            panic!("{what}: ACKs {:?} vs LSNs {:?}\n{log}", emu.acked(), emu.lsns());
        }
    };

    // Stable sync first: a FLUSHDB before STARTSTABLE would be a full-sync journal blob, on
    // which Dragonfly (and df2redis) restart the sync.
    synced("stable sync");

    // Phase 1: FLUSHDB, then cross-slot multi-key records, RENAMEs across slots, expiry.
    w(&["SET", "before-flush", "x"]);
    w(&["FLUSHDB"]);
    for i in 0..2000 {
        w(&["MSET", &format!("m:{i}"), "a", &format!("m:{}", i + 1), "b", &format!("m:{}", i + 2), "c"]);
        if i % 4 == 0 {
            w(&["DEL", &format!("m:{i}"), &format!("m:{}", i + 1), &format!("gone:{i}")]);
        }
        if i % 10 == 0 {
            w(&["SET", &format!("ttl:{i}"), "t", "PXAT", &now_ms().to_string()]);
            w(&["SET", &format!("keep:{i}"), "t", "PX", "3600000"]);
        }
    }
    for r in 0..20 {
        let (a, b) = same_shard_cross_slot(&emu, &format!("rn{r}"));
        w(&["SET", &a, &format!("value-{r}"), "PX", "3600000"]);
        w(&["RENAME", &a, &b]);
        if r % 2 == 0 {
            let (c, d) = same_shard_cross_slot(&emu, &format!("rnx{r}"));
            w(&["SET", &c, "c"]);
            w(&["SET", &d, "d"]);
            w(&["RENAMENX", &c, &d]); // destination exists: nothing happens
        }
    }
    emu.expire_now();
    synced("phase 1");

    // Phase 2: slot {mig} half migrated: writes to moved keys get ASK.
    let slot = key_slot(b"{mig}");
    for i in 0..200 {
        w(&["SET", &format!("{{mig}}:k{i}"), &format!("v{i}")]);
    }
    synced("before the migration");
    let to = (cluster.owner(slot) + 1) % 3;
    cluster.begin_migration(slot, to);
    assert!(cluster.migrate_some_keys(slot, 100) >= 100);
    for i in 0..200 {
        w(&["APPEND", &format!("{{mig}}:k{i}"), "+1"]);
        w(&["SET", &format!("{{mig}}:new{i}"), "n"]);
    }
    synced("during the migration");

    // Phase 3: the migration completes; df2redis's slot map is stale: MOVED.
    cluster.finish_migration(slot);
    for i in 0..200 {
        w(&["APPEND", &format!("{{mig}}:k{i}"), "+2"]);
        w(&["INCR", &format!("{{mig}}:ctr{}", i % 7)]);
    }
    synced("after the migration");

    let child = child.unwrap();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    let redirects = log.lines().find(|l| l.starts_with("cluster redirects followed:")).unwrap_or_else(|| panic!("{log}"));
    let nums: Vec<u64> = redirects.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
    assert!(nums[0] > 0 && nums[1] > 0, "MOVED and ASK must both be seen and handled: {redirects}");
    // --progress-secs 1: the run lasts seconds, so the steady progress line appears.
    assert!(log.contains("stable sync: ") && log.contains(" lag "), "progress lines: {log}");
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    check(&emu, &cluster);
}

/// The cluster checkpoints record its layout: a restart resumes PARTIAL on the same layout,
/// and is a full resync, with the reason, while a slot is being migrated and after slots
/// moved (the nodes' config epochs changed). The cluster ends equal to the master each time.
#[test]
fn a_restart_after_the_clusters_slots_moved_is_a_full_resync() {
    let emu = Emulator::start(Config { shards: 4, ..Config::default() }).unwrap();
    datasets::small(&emu, 1000);
    let cluster = RedisCluster::start();
    let target = format!("redis://{}", cluster.seed());
    let source = emu.addr().to_string();
    let mut round = 0;
    let mut run = |expect: &str| {
        round += 1;
        let child = df2redis(&["replicate", "--source", &source, "--target", &target]);
        for i in 0..300 {
            let k = format!("{{mv}}:ctr{}", i % 7);
            emu.write(0, &[b"INCR", k.as_bytes()]).unwrap();
            emu.write(0, &[b"LPUSH", format!("list:{}", i % 5).as_bytes(), format!("r{round}-{i}").as_bytes()]).unwrap();
        }
        let acked = emu.wait_acked_all(Duration::from_secs(60));
        let out = common::run::terminate(child);
        let log = text(&out);
        assert!(acked, "round {round}: ACKs {:?} vs LSNs {:?}\n{log}", emu.acked(), emu.lsns());
        assert_eq!(out.status.code(), Some(0), "{log}");
        assert!(log.contains(expect), "round {round}: expected {expect:?}:\n{log}");
        check(&emu, &cluster);
    };
    run("snapshot complete");
    run("resuming from the target's checkpoints");
    let slot = key_slot(b"{mv}");
    let to = (cluster.owner(slot) + 1) % 3;
    cluster.begin_migration(slot, to);
    cluster.migrate_some_keys(slot, 3);
    run("are being migrated (a resume needs a settled layout)");
    cluster.finish_migration(slot);
    cluster.wait_consistent();
    run("the target cluster's layout changed since the checkpoints");
    run("resuming from the target's checkpoints");
}
