//! Several Dragonfly masters into one target in one df2redis process (`--source` repeated):
//! a consolidation of standalone masters. Each master has its own session, threads named
//! after it and its own checkpoint markers (`<run>+<host>-<port>`); the target holds exactly
//! the union; a fault that needs one master's resync, when its keys cannot be told apart from
//! the other's, stops the run with the reason and leaves the other master's keys untouched.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::emulator_model::expected;
use common::live::{prefixed_master, prefixed_writer, union_of, poll, wait_acked_beyond, wait_every_flow_acked};
use common::redis_server::{compare, read_all, RedisServer};
use common::run::{df2redis, terminate, text, wait_bounded};
use common::Dataset;
use df2redis::emulator::{Config, Emulator};

const MINUTE: Duration = Duration::from_secs(60);




fn markers_of(c: &mut redis::Connection, name: &str) -> Vec<String> {
    let mut k: Vec<String> = redis::cmd("KEYS").arg(format!("df2redis:checkpoint:{name}:*")).query(c).unwrap();
    k.sort();
    k
}

/// The threads of process `pid`: name -> the CPUs it may run on.
fn threads(pid: u32) -> std::collections::BTreeMap<String, String> {
    let mut names = std::collections::BTreeMap::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let (Ok(n), Ok(status)) = (std::fs::read_to_string(t.path().join("comm")), std::fs::read_to_string(t.path().join("status"))) else { continue };
        let allowed = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap_or("").trim().to_string();
        names.insert(n.trim().to_string(), allowed);
    }
    names
}

#[test]
fn two_masters_in_one_run_are_replicated_exactly_with_their_own_sessions() {
    let (a, b) = (prefixed_master("a:", 300), prefixed_master("b:", 300));
    let srv = RedisServer::start(&[]);
    let (sa, sb) = (a.addr().to_string(), b.addr().to_string());
    let target = format!("redis://{}", srv.addr());
    // Two CPUs (or the one there is): master k's flows start k CPUs later in the list.
    let cpus = df2redis::affinity::available_cpus();
    let cpu = |j: usize| cpus[j % cpus.len()].to_string();
    let pin = format!("{},{}", cpu(0), cpu(1));
    let run = df2redis(&[
        "replicate", "--source", &sa, "--source", &sb, "--target", &target, "--name", "merge", "--progress-secs", "1",
        "--pin-flows", &pin,
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let wa = prefixed_writer(a.clone(), "a:", stop.clone());
    let wb = prefixed_writer(b.clone(), "b:", stop.clone());
    assert!(wait_every_flow_acked(&a, MINUTE) && wait_every_flow_acked(&b, MINUTE), "both masters reach stable sync");
    assert!(wait_acked_beyond(&a, 0, 300, MINUTE) && wait_acked_beyond(&b, 0, 300, MINUTE));
    // One session per master, each with its own flow, ACK and writer threads.
    let names = threads(run.id());
    for (k, emu) in [&a, &b].into_iter().enumerate() {
        let port = emu.addr().port();
        for t in [format!("flow-{port}-0"), format!("flow-{port}-1"), format!("ack-{port}-0"), format!("writer-{port}-0")] {
            assert!(names.contains_key(&t), "thread {t} missing: {names:?}");
        }
        assert_eq!(names[&format!("flow-{port}-0")], cpu(k), "master {k}'s first flow: {names:?}");
        assert_eq!(names[&format!("flow-{port}-1")], cpu(k + 1), "{names:?}");
    }
    let mut c = srv.conn();
    let (na, nb) = (format!("merge+127.0.0.1-{}", a.addr().port()), format!("merge+127.0.0.1-{}", b.addr().port()));
    assert!(poll(MINUTE, || markers_of(&mut c, &na).len() == 2 && markers_of(&mut c, &nb).len() == 2), "each master's own markers");
    stop.store(true, Ordering::SeqCst);
    let (ka, kb) = (wa.join().unwrap(), wb.join().unwrap());
    assert!(ka > 300 && kb > 300, "{ka} {kb}");
    assert!(a.wait_acked_all(MINUTE) && b.wait_acked_all(MINUTE));
    let out = terminate(run);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("2 masters into one target, one session each"), "{log}");
    let (diffs, compared, _) = compare(&union_of(&a, &b), &read_all(&mut c), &mut c, 1000, &BTreeSet::new());
    assert!(diffs.is_empty(), "{} differences:\n{}", diffs.len(), diffs.join("\n"));
    assert!(compared >= 2 * (300 + 20), "{compared}");
    // The summary counts both masters' flows.
    assert!(log.contains("flow 3"), "four flows in the summary:\n{log}");
}

/// Master B restarts (a new replid): its session must fully resync, but without slots or key
/// rules its keys cannot be told apart from A's on the target, so `--on-resync flush` is
/// refused: the run stops (exit 1) naming the choices, and A's keys are untouched.
#[test]
fn a_resync_of_one_unfiltered_master_is_refused_and_touches_nothing() {
    let (a, b) = (prefixed_master("a:", 100), prefixed_master("b:", 100));
    let srv = RedisServer::start(&[]);
    let (sa, sb) = (a.addr().to_string(), b.addr().to_string());
    let target = format!("redis://{}", srv.addr());
    let args = ["replicate", "--source", &sa, "--source", &sb, "--target", &target, "--retry-backoff-ms", "50"];
    let run = df2redis(&args);
    assert!(wait_every_flow_acked(&a, MINUTE) && wait_every_flow_acked(&b, MINUTE));
    let port = b.addr().port();
    Arc::try_unwrap(b).ok().expect("no writer on B").stop();
    let b = Emulator::start_on(Config { shards: 2, backlog_len: 1 << 20, ..Config::default() }, port).unwrap();
    b.write(0, &[b"SET", b"b:new", b"x"]).unwrap();
    let out = wait_bounded(run, MINUTE, "the run to refuse B's resync");
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains(&format!("source 127.0.0.1:{port}")), "the error names the master:\n{log}");
    assert!(log.contains("the other masters of this run") && log.contains("--on-resync keep"), "{log}");
    assert!(!log.contains("emptying the target"), "{log}");
    let mut c = srv.conn();
    let got = read_all(&mut c);
    // A's keys are all there, unchanged; B's old keys are still there (nothing was deleted).
    let b_keys = got.values().flat_map(|k| k.keys()).filter(|k| k.starts_with(b"b:")).count();
    assert!(b_keys >= 100, "B's keys were not deleted: {b_keys}");
    let only_a: Dataset = got.into_iter().map(|(db, keys)| (db, keys.into_iter().filter(|(k, _)| k.starts_with(b"a:")).collect())).collect();
    let (diffs, compared, _) = compare(&expected(&a), &only_a, &mut c, 1000, &BTreeSet::new());
    assert!(diffs.is_empty() && compared >= 120, "{compared} {diffs:?}");
}

/// One of two masters is down at the start: without `--wait-for-source` the run exits 1 at
/// once naming it; with it, the other master is replicated meanwhile and the late one joins
/// when it comes up.
#[test]
fn a_master_down_at_the_start_is_named_or_waited_for() {
    let a = prefixed_master("a:", 50);
    let srv = RedisServer::start(&[]);
    let port = common::redis_server::free_port();
    let (sa, sb) = (a.addr().to_string(), format!("127.0.0.1:{port}"));
    let target = format!("redis://{}", srv.addr());
    let out = wait_bounded(df2redis(&["replicate", "--source", &sa, "--source", &sb, "--target", &target]), MINUTE, "the run to refuse");
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains(&format!("source {sb}: cannot be reached")) && log.contains("No session has started"), "{log}");

    let run = df2redis(&[
        "replicate", "--source", &sa, "--source", &sb, "--target", &target, "--wait-for-source", "--retry-backoff-ms", "50",
    ]);
    assert!(wait_every_flow_acked(&a, MINUTE), "the reachable master is replicated meanwhile");
    let b = Emulator::start_on(Config { shards: 2, backlog_len: 1 << 20, ..Config::default() }, port).unwrap();
    b.write(0, &[b"SET", b"b:late", b"1"]).unwrap();
    assert!(wait_every_flow_acked(&b, MINUTE) && b.wait_acked_all(MINUTE), "the late master joins");
    let out = terminate(run);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    let mut c = srv.conn();
    let (diffs, compared, _) = compare(&union_of(&a, &b), &read_all(&mut c), &mut c, 1000, &BTreeSet::new());
    assert!(diffs.is_empty() && compared == 50 + 20 + 1, "{compared} {diffs:?}");
}
