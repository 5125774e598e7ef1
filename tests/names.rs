//! Several df2redis runs into one target, kept apart by their run names (`--name`): two
//! emulated masters with disjoint key prefixes, two `replicate` processes, one real Redis.
//! Each run keeps its own checkpoint markers, closes only its own writers, resumes from its
//! own markers after a kill -9, and a full resync deletes only its own keys (or is refused
//! when they cannot be told apart). Two processes with one name: the second refuses.

mod common;

use std::collections::BTreeSet;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::emulator_model::expected;
use common::live::{prefixed_master, prefixed_writer, union_of, kill9, poll, wait_acked_beyond, wait_every_flow_acked};
use common::redis_cluster::RedisCluster;
use common::redis_server::{compare, read_all, RedisServer};
use common::run::{df2redis, terminate, text, wait_bounded};
use common::Dataset;
use df2redis::checkpoint::name::default_for;
use df2redis::emulator::{Config, Emulator};

const MINUTE: Duration = Duration::from_secs(60);



fn replicate(emu: &Emulator, srv: &RedisServer, extra: &[&str]) -> Child {
    replicate_to(emu, &format!("redis://{}", srv.addr()), extra)
}

fn replicate_to(emu: &Emulator, target: &str, extra: &[&str]) -> Child {
    let source = emu.addr().to_string();
    let target = target.to_string();
    let mut args = vec!["replicate", "--source", &source, "--target", &target, "--progress-secs", "1", "--retry-backoff-ms", "50"];
    args.extend_from_slice(extra);
    df2redis(&args)
}

/// The marker keys of run `name` on the target.
fn markers_of(c: &mut redis::Connection, name: &str) -> Vec<String> {
    let mut k: Vec<String> = redis::cmd("KEYS").arg(format!("df2redis:checkpoint:{name}:*")).query(c).unwrap();
    k.sort();
    k
}


fn assert_holds(srv: &RedisServer, exp: &Dataset, at_least: usize, what: &str) {
    let mut c = srv.conn();
    let (diffs, compared, _) = compare(exp, &read_all(&mut c), &mut c, 1000, &BTreeSet::new());
    assert!(diffs.is_empty(), "{what}: {} differences:\n{}", diffs.len(), diffs.join("\n"));
    assert!(compared >= at_least, "{what}: {compared} keys compared");
}

/// Two runs (default names, one per master) with disjoint `--include` rules into one Redis:
/// both exact; each keeps its own markers; a kill -9 and restart of one resumes PARTIAL from
/// its markers and takes over its own lease at once, while the other keeps streaming in its
/// first session (its writers were not closed); then one master restarts (a new replid) and
/// its run's full resync deletes only its keys, the other's untouched.
#[test]
fn two_runs_into_one_target_keep_apart_through_a_kill_and_a_resync() {
    let (a, b) = (prefixed_master("a:", 200), prefixed_master("b:", 200));
    let srv = RedisServer::start(&[]);
    let (name_a, name_b) = (default_for(&a.addr().to_string()), default_for(&b.addr().to_string()));
    assert_ne!(name_a, name_b, "the default names of two sources must differ");
    let mut run_a = replicate(&a, &srv, &["--include", "prefix:a:"]);
    let run_b = replicate(&b, &srv, &["--include", "prefix:b:"]);
    let stop = Arc::new(AtomicBool::new(false));
    let wa = prefixed_writer(a.clone(), "a:", stop.clone());
    let wb = prefixed_writer(b.clone(), "b:", stop.clone());
    assert!(wait_every_flow_acked(&a, MINUTE) && wait_every_flow_acked(&b, MINUTE), "both runs reach stable sync");
    assert!(wait_acked_beyond(&a, 0, 300, MINUTE) && wait_acked_beyond(&b, 0, 300, MINUTE));
    let mut c = srv.conn();
    assert!(poll(MINUTE, || markers_of(&mut c, &name_a).len() == 2 && markers_of(&mut c, &name_b).len() == 2));

    // kill -9 of run A, restarted at once: its own lease taken over, its own markers resumed.
    let sessions_b = b.sessions_created();
    let log = kill9(run_a);
    assert!(log.contains(&format!("lease df2redis:lease:{name_a} taken")), "{log}");
    run_a = replicate(&a, &srv, &["--include", "prefix:a:"]);
    let from = b.acked().iter().sum::<u64>();
    assert!(wait_acked_beyond(&a, a.acked().iter().sum(), 300, MINUTE), "run A progresses after its restart");
    assert!(wait_acked_beyond(&b, from, 300, MINUTE), "run B keeps streaming while A restarts");
    assert_eq!(b.sessions_created(), sessions_b, "run B's session must not have been disturbed");

    // Master A restarts: a new replid, other data. Run A's full resync deletes only a:* keys.
    stop.store(true, Ordering::SeqCst);
    wa.join().unwrap();
    let port = a.addr().port();
    let old_id = a.master_replid();
    Arc::try_unwrap(a).ok().expect("A's writer is done").stop();
    let a = Arc::new(Emulator::start_on(Config { shards: 2, backlog_len: 1 << 20, ..Config::default() }, port).unwrap());
    assert_ne!(a.master_replid(), old_id);
    for i in 0..50 {
        a.write(0, &[b"SET", format!("a:new:{i}").as_bytes(), b"x"]).unwrap();
    }
    assert!(a.wait_acked_all(MINUTE), "run A resynced from the restarted master");
    wb.join().unwrap();
    assert!(b.wait_acked_all(MINUTE));
    let out_a = terminate(run_a);
    let out_b = terminate(run_b);
    let (log_a, log_b) = (text(&out_a), text(&out_b));
    assert_eq!(out_a.status.code(), Some(0), "{log_a}");
    assert_eq!(out_b.status.code(), Some(0), "{log_b}");
    assert!(log_a.contains("resuming from the target's checkpoints"), "run A resumes PARTIAL after the kill:\n{log_a}");
    assert!(log_a.contains(&format!("took over the lease df2redis:lease:{name_a}")), "{log_a}");
    assert!(log_a.contains("full resync: the checkpoints are from master"), "{log_a}");
    assert!(log_a.contains(&format!("other df2redis runs write to this target (run names \"{name_b}\")")), "{log_a}");
    assert!(log_a.contains("deleting only the keys this run's rules select"), "{log_a}");
    assert!(!log_a.contains("emptying the target"), "{log_a}");
    assert!(!log_b.contains("full resync") && !log_b.contains("an earlier writer left"), "run B was never disturbed:\n{log_b}");
    // Exactly the new A's keys (the old a:* are gone) and every B key.
    assert_holds(&srv, &union_of(&a, &b), 50 + 200 + 20, "after A's resync");
    assert_eq!(markers_of(&mut c, &name_a).len(), 2);
    assert_eq!(markers_of(&mut c, &name_b).len(), 2);
    // A clean exit releases the leases.
    let leases: Vec<String> = redis::cmd("KEYS").arg("df2redis:lease:*").query(&mut c).unwrap();
    assert!(leases.is_empty(), "{leases:?}");
}

/// The same on a 3-master Redis Cluster: each run's node markers on every master carry its
/// name (with the hashtag still on the node), and a restarted master's resync deletes its
/// run's keys on every master, the other run's untouched.
#[test]
fn on_a_cluster_a_resync_deletes_only_its_runs_keys_on_every_master() {
    let (a, b) = (prefixed_master("a:", 200), prefixed_master("b:", 200));
    let cluster = RedisCluster::start();
    let target = format!("redis://{}", cluster.seed());
    let (name_a, name_b) = (default_for(&a.addr().to_string()), default_for(&b.addr().to_string()));
    let run_a = replicate_to(&a, &target, &["--include", "prefix:a:"]);
    let run_b = replicate_to(&b, &target, &["--include", "prefix:b:"]);
    let stop = Arc::new(AtomicBool::new(false));
    let wa = prefixed_writer(a.clone(), "a:", stop.clone());
    let wb = prefixed_writer(b.clone(), "b:", stop.clone());
    assert!(wait_every_flow_acked(&a, MINUTE) && wait_every_flow_acked(&b, MINUTE), "both runs reach stable sync");
    assert!(wait_acked_beyond(&a, 0, 300, MINUTE) && wait_acked_beyond(&b, 0, 300, MINUTE));
    // Every master holds both runs' node markers (2 flows each), in its own slots.
    for i in 0..3 {
        let mut c = cluster.conn(i);
        for name in [&name_a, &name_b] {
            assert!(poll(MINUTE, || markers_of(&mut c, name).iter().filter(|k| !k.contains(":done:")).count() == 2), "node {i}, run {name}");
        }
    }
    stop.store(true, Ordering::SeqCst);
    wa.join().unwrap();
    let port = a.addr().port();
    Arc::try_unwrap(a).ok().expect("A's writer is done").stop();
    let a = Arc::new(Emulator::start_on(Config { shards: 2, backlog_len: 1 << 20, ..Config::default() }, port).unwrap());
    for i in 0..60 {
        a.write(0, &[b"SET", format!("a:new:{i}").as_bytes(), b"x"]).unwrap();
    }
    assert!(a.wait_acked_all(MINUTE), "run A resynced from the restarted master");
    wb.join().unwrap();
    assert!(b.wait_acked_all(MINUTE));
    let (out_a, out_b) = (terminate(run_a), terminate(run_b));
    let (log_a, log_b) = (text(&out_a), text(&out_b));
    assert_eq!(out_a.status.code(), Some(0), "{log_a}");
    assert_eq!(out_b.status.code(), Some(0), "{log_b}");
    assert!(log_a.contains("deleting only the keys this run's rules select"), "{log_a}");
    assert!(!log_b.contains("full resync"), "{log_b}");
    let scratch = RedisServer::start(&[]);
    let (diffs, compared, _) = compare(&union_of(&a, &b), &cluster.read_all(), &mut scratch.conn(), 1000, &BTreeSet::new());
    assert!(diffs.is_empty(), "{} differences:\n{}\n{log_a}", diffs.len(), diffs.join("\n"));
    assert!(compared >= 60 + 200 + 20, "{compared}");
}

/// A full resync of a run without rules that could tell its keys apart, while another run
/// writes to the same target: `--on-resync flush` is refused with the reason and what to do,
/// and the other run's keys and stream are untouched.
#[test]
fn an_unfiltered_resync_beside_another_run_is_refused() {
    let (a, b) = (prefixed_master("a:", 100), prefixed_master("b:", 100));
    let srv = RedisServer::start(&[]);
    let run_b = replicate(&b, &srv, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let wb = prefixed_writer(b.clone(), "b:", stop.clone());
    assert!(wait_every_flow_acked(&b, MINUTE));
    // Run A's markers from an earlier master: its next start must fully resync.
    let name_a = default_for(&a.addr().to_string());
    let mut c = srv.conn();
    for f in 0..2 {
        let k = format!("df2redis:checkpoint:{name_a}:{f}");
        redis::cmd("SET").arg(k).arg(format!("df2redis/1 replid={} flows=2 next_lsn=5", "e".repeat(40))).query::<()>(&mut c).unwrap();
    }
    let out = wait_bounded(replicate(&a, &srv, &[]), MINUTE, "run A to refuse its resync");
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("other df2redis runs write to it too"), "{log}");
    assert!(log.contains(&default_for(&b.addr().to_string())), "the message names the other run:\n{log}");
    assert!(log.contains("--on-resync keep") && log.contains("--include/--exclude") && log.contains("its own target"), "{log}");
    // B goes on, and the target holds exactly B's data.
    let from = b.acked().iter().sum::<u64>();
    assert!(wait_acked_beyond(&b, from, 200, MINUTE), "run B keeps streaming");
    stop.store(true, Ordering::SeqCst);
    wb.join().unwrap();
    assert!(b.wait_acked_all(MINUTE));
    let out_b = terminate(run_b);
    assert_eq!(out_b.status.code(), Some(0), "{}", text(&out_b));
    assert_holds(&srv, &expected(&b), 100 + 20, "B's data after A's refusal");
}

/// A second process with the name of a running one exits 2 naming the first (its pid); the
/// name is free again once the first exits cleanly.
#[test]
fn a_second_run_with_the_same_name_refuses_to_start() {
    let (a, b) = (prefixed_master("a:", 50), prefixed_master("b:", 50));
    let srv = RedisServer::start(&[]);
    let first = replicate(&a, &srv, &["--name", "shared", "--include", "prefix:a:"]);
    let stop = Arc::new(AtomicBool::new(false));
    let wa = prefixed_writer(a.clone(), "a:", stop.clone());
    assert!(wait_every_flow_acked(&a, MINUTE));
    stop.store(true, Ordering::SeqCst);
    wa.join().unwrap();
    let out = wait_bounded(replicate(&b, &srv, &["--name", "shared", "--include", "prefix:b:"]), MINUTE, "the second run to refuse");
    let log = text(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("another df2redis runs under the name \"shared\""), "{log}");
    assert!(log.contains(&format!("pid={}", first.id())), "the message names the first run:\n{log}");
    let out = terminate(first);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut c = srv.conn();
    let lease: Option<String> = redis::cmd("GET").arg("df2redis:lease:shared").query(&mut c).unwrap();
    assert_eq!(lease, None, "a clean exit releases the lease");
    // A name that cannot be part of a key is a usage error.
    let out = wait_bounded(replicate(&a, &srv, &["--name", "a:b"]), MINUTE, "a bad --name to be refused");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--name (file key run.name)"), "{}", text(&out));
}

/// `cleanup --name` removes that run's markers only (and the unnamed format's); without a
/// name it needs the run to be the only one; a running run (live lease) is refused.
#[test]
fn cleanup_removes_only_the_named_runs_markers() {
    let srv = RedisServer::start(&[]);
    let target = format!("redis://{}", srv.addr());
    let mut c = srv.conn();
    let set = |c: &mut redis::Connection, k: &str| redis::cmd("SET").arg(k).arg("df2redis/1 replid=x flows=1 next_lsn=1").query::<()>(c).unwrap();
    for k in ["df2redis:checkpoint:ra:0", "df2redis:checkpoint:ra:1", "df2redis:checkpoint:rb:0", "df2redis:checkpoint:3", "data:key"] {
        set(&mut c, k);
    }
    let cleanup = |extra: &[&str]| {
        let mut args = vec!["cleanup", "--target", &target];
        args.extend_from_slice(extra);
        wait_bounded(df2redis(&args), MINUTE, "cleanup")
    };
    let out = cleanup(&[]);
    assert_eq!(out.status.code(), Some(2), "two runs: a name is needed\n{}", text(&out));
    assert!(text(&out).contains("ra, rb"), "{}", text(&out));
    let out = cleanup(&["--name", "ra"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("removed 3 checkpoint marker keys") && text(&out).contains("other runs' markers kept: rb"), "{}", text(&out));
    let mut left: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    left.sort();
    assert_eq!(left, ["data:key", "df2redis:checkpoint:rb:0"]);
    // rb is running (its lease names this live process on this host): refused.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let lease = format!("host={host} pid={} started=0 token=t", std::process::id());
    redis::cmd("SET").arg("df2redis:lease:rb").arg(&lease).query::<()>(&mut c).unwrap();
    let out = cleanup(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("run \"rb\" is running"), "{}", text(&out));
    redis::cmd("DEL").arg("df2redis:lease:rb").query::<()>(&mut c).unwrap();
    let out = cleanup(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let left: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert_eq!(left, ["data:key"]);
}

/// Markers of the earlier unnamed format are not resumed from: the run says why and fully
/// resyncs (the target it owned alone is flushed), and they are deleted.
#[test]
fn markers_without_a_run_name_mean_a_full_resync() {
    let a = prefixed_master("a:", 100);
    let srv = RedisServer::start(&[]);
    let mut c = srv.conn();
    for f in 0..2 {
        let m = format!("df2redis/1 replid={} flows=2 next_lsn=1", a.master_replid());
        redis::cmd("SET").arg(format!("df2redis:checkpoint:{f}")).arg(m).query::<()>(&mut c).unwrap();
    }
    redis::cmd("SET").arg("a:stale").arg("deleted on the master meanwhile").query::<()>(&mut c).unwrap();
    let run = replicate(&a, &srv, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let wa = prefixed_writer(a.clone(), "a:", stop.clone());
    assert!(wait_every_flow_acked(&a, MINUTE));
    stop.store(true, Ordering::SeqCst);
    wa.join().unwrap();
    assert!(a.wait_acked_all(MINUTE));
    let out = terminate(run);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("checkpoint markers of an earlier df2redis version"), "{log}");
    assert!(log.contains("emptying the target first"), "{log}");
    let legacy: Vec<String> = redis::cmd("KEYS").arg("df2redis:checkpoint:[0-9]*").query(&mut c).unwrap();
    assert!(legacy.is_empty(), "{legacy:?}");
    assert_holds(&srv, &expected(&a), 100 + 20, "after the upgrade's resync");
}
