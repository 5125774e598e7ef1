//! Faults. The source or the target goes away during a run and df2redis carries on
//! with a new session (resuming from its checkpoints when the master still can), ends with the
//! target equal to the master, and closes every connection to the master with a FIN.
//!
//! The live journals are of non-idempotent commands (INCR, LPUSH, APPEND, XADD), so a record
//! applied twice or lost across a fault shows up as a difference.

mod common;

use std::collections::BTreeSet;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::emulator_model::expected;
use common::live::{journal_writer, mixed_journal_writer, wait_acked_beyond, wait_every_flow_acked};
use common::redis_cluster::RedisCluster;
use common::redis_server::{compare, free_port, read_all, RedisServer};
use common::run::{df2redis, terminate, text};
use df2redis::emulator::{datasets, Config, Emulator};

const MINUTE: Duration = Duration::from_secs(60);

fn replicate(emu: &Emulator, srv: &RedisServer, extra: &[&str]) -> Child {
    let source = emu.addr().to_string();
    let target = format!("redis://{}", srv.addr());
    let mut args = vec!["replicate", "--source", &source, "--target", &target, "--progress-secs", "1"];
    args.extend_from_slice(&["--retry-backoff-ms", "50"]);
    args.extend_from_slice(extra);
    df2redis(&args)
}

/// SIGTERM once every LSN is acknowledged; the run must exit 0. Returns its output.
fn finish(emu: &Emulator, child: Child) -> String {
    let acked = emu.wait_acked_all(MINUTE);
    let out = terminate(child);
    let log = text(&out);
    assert!(acked, "not every LSN acknowledged: {:?} vs {:?}\n{log}", emu.acked(), emu.lsns());
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    log
}

fn assert_equal(emu: &Emulator, srv: &RedisServer, at_least: usize, log: &str) {
    let mut c = srv.conn();
    let (diffs, compared, _) = compare(&expected(emu), &read_all(&mut c), &mut c, 1000, &BTreeSet::new());
    assert!(diffs.is_empty(), "{} differences:\n{}\n---- log:\n{log}", diffs.len(), diffs.join("\n"));
    assert!(compared >= at_least, "{compared} keys compared");
}

/// Run `during` while a journal writer keeps the emulator busy; stop the writer afterwards.
fn with_live_journal(emu: &Arc<Emulator>, during: impl FnOnce()) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = journal_writer(emu.clone(), stop.clone());
    during();
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap()
}

#[test]
fn a_dropped_flow_reestablishes_the_session_and_loses_nothing() {
    let emu = Arc::new(Emulator::start(Config { shards: 4, backlog_len: 1 << 20, ..Config::default() }).unwrap());
    datasets::small(&emu, 300);
    let srv = RedisServer::start(&[]);
    let child = replicate(&emu, &srv, &[]);
    let written = with_live_journal(&emu, || {
        assert!(wait_acked_beyond(&emu, 0, 500, MINUTE), "no progress before the fault");
        assert!(wait_every_flow_acked(&emu, MINUTE));
        let sessions = emu.sessions_created();
        assert!(emu.drop_flow(2));
        // The new session resumes and acknowledges more records.
        let deadline = std::time::Instant::now() + MINUTE;
        while emu.sessions_created() == sessions && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(emu.sessions_created() > sessions, "no new session after the flow was dropped");
        assert!(wait_acked_beyond(&emu, 0, 500, MINUTE), "no progress after the fault");
    });
    let log = finish(&emu, child);
    assert!(log.contains("a new session starts in"), "{log}");
    assert!(log.contains("resuming from the target's checkpoints"), "{log}");
    assert!(!log.contains("full resync"), "{log}");
    assert!(log.contains("sessions: 2"), "{log}");
    assert_equal(&emu, &srv, 300, &log);
    assert!(written > 0);
}

#[test]
fn a_master_restarted_during_stable_sync_means_a_full_resync_into_an_emptied_target() {
    let emu = Arc::new(Emulator::start(Config { shards: 2, ..Config::default() }).unwrap());
    datasets::small(&emu, 300);
    let srv = RedisServer::start(&[]);
    let child = replicate(&emu, &srv, &[]);
    with_live_journal(&emu, || assert!(wait_acked_beyond(&emu, 0, 300, MINUTE)));
    assert!(emu.wait_acked_all(MINUTE));
    let port = emu.addr().port();
    let old_id = emu.master_replid();
    Arc::try_unwrap(emu).ok().expect("the writer is done").stop();

    // The same address, a new master id and other data: the old keys must not survive.
    let emu = Arc::new(Emulator::start_on(Config { shards: 2, ..Config::default() }, port).unwrap());
    assert_ne!(emu.master_replid(), old_id);
    datasets::small(&emu, 100);
    with_live_journal(&emu, || assert!(wait_acked_beyond(&emu, 0, 300, MINUTE), "no progress on the new master"));
    let log = finish(&emu, child);
    assert!(log.contains("a new session starts in"), "{log}");
    assert!(log.contains("full resync: the checkpoints are from master"), "{log}");
    assert!(log.contains("emptying the target first"), "{log}");
    assert_equal(&emu, &srv, 100, &log);
}

#[test]
fn a_restart_after_the_backlog_was_overrun_is_a_full_resync() {
    let emu = Arc::new(Emulator::start(Config { shards: 2, backlog_len: 50, ..Config::default() }).unwrap());
    datasets::small(&emu, 300);
    let srv = RedisServer::start(&[]);
    let child = replicate(&emu, &srv, &[]);
    with_live_journal(&emu, || assert!(wait_acked_beyond(&emu, 0, 200, MINUTE)));
    let first = finish(&emu, child);
    assert!(!first.contains("full resync"), "{first}");
    // While df2redis is away: far more records than the backlog keeps, deletes among them.
    for i in 0..400 {
        emu.write(0, &[b"INCR", format!("ctr:{}", i % 9).as_bytes()]).unwrap();
    }
    for i in 0..100 {
        emu.write(0, &[b"DEL", format!("key:{i:012}").as_bytes()]).unwrap();
    }
    let child = replicate(&emu, &srv, &[]);
    let log = finish(&emu, child);
    assert!(log.contains("must fully resync"), "{log}");
    assert!(log.contains("emptying the target first"), "{log}");
    assert_equal(&emu, &srv, 200, &log);
}

#[test]
fn redis_server_crashing_during_the_full_sync_and_the_journal_loses_nothing() {
    let emu = Arc::new(
        Emulator::start(Config { shards: 4, backlog_len: 1 << 20, pause_snapshot_after: Some(20), ..Config::default() })
            .unwrap(),
    );
    datasets::small(&emu, 2000);
    datasets::every_type(&emu);
    // appendfsync always: what the target acknowledged survives its crash, markers included.
    let durable = ["--appendonly", "yes", "--appendfsync", "always"];
    let mut srv = RedisServer::start(&durable);
    let child = replicate(&emu, &srv, &[]);

    // 1. Mid-snapshot.
    assert!(emu.wait_snapshot_paused(MINUTE), "the snapshot never paused");
    srv.crash_and_restart(&durable);
    emu.resume_snapshot();
    // 2. Mid-journal, once the new session is in stable sync.
    with_live_journal(&emu, || {
        assert!(wait_acked_beyond(&emu, 0, 1000, MINUTE), "no journal progress after the first crash");
        // Every flow's checkpoint is in the target (an ACK follows its marker).
        assert!(wait_every_flow_acked(&emu, MINUTE));
        srv.crash_and_restart(&durable);
        let base = emu.acked().iter().sum::<u64>();
        assert!(wait_acked_beyond(&emu, base, 1000, MINUTE), "no journal progress after the second crash");
    });
    let log = finish(&emu, child);
    // The first crash cut a full sync (no checkpoint yet): a full resync; the second one
    // resumes from the markers that survived with the data.
    assert!(log.contains("full resync: the previous session ended"), "{log}");
    assert!(log.contains("resuming from the target's checkpoints"), "{log}");
    assert!(log.matches("a new session starts in").count() >= 2, "{log}");
    assert_equal(&emu, &srv, 2000, &log);
}

/// The same with a Redis Cluster target: one master (with `appendfsync always`) is killed during
/// the journal and restarted. Its markers survived with its data, so the new session resumes
/// PARTIAL from the markers of all three masters, and the cluster ends equal to the master.
#[test]
fn a_cluster_master_crashing_during_the_journal_loses_nothing() {
    let emu = Arc::new(Emulator::start(Config { shards: 4, backlog_len: 1 << 20, ..Config::default() }).unwrap());
    datasets::small(&emu, 2000);
    let mut cluster = RedisCluster::start_with(|| ["--appendonly", "yes", "--appendfsync", "always"].map(String::from).to_vec());
    let (source, target) = (emu.addr().to_string(), format!("redis://{}", cluster.seed()));
    let child = df2redis(&["replicate", "--source", &source, "--target", &target, "--retry-backoff-ms", "50", "--progress-secs", "1"]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = mixed_journal_writer(emu.clone(), stop.clone());
    assert!(wait_every_flow_acked(&emu, MINUTE) && wait_acked_beyond(&emu, 0, 5000, MINUTE), "no journal progress");
    cluster.nodes[1].crash_and_restart();
    cluster.wait_consistent();
    let base = emu.acked().iter().sum::<u64>();
    assert!(wait_acked_beyond(&emu, base, 5000, MINUTE), "no journal progress after the crash");
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let log = finish(&emu, child);
    assert!(log.contains("a new session starts in"), "{log}");
    assert!(log.contains("resuming from the target's checkpoints"), "{log}");
    assert!(!log.contains("full resync"), "{log}");
    let scratch = RedisServer::start(&[]);
    let (diffs, compared, _) = compare(&expected(&emu), &cluster.read_all(), &mut scratch.conn(), 1000, &BTreeSet::new());
    assert!(diffs.is_empty(), "{} differences:\n{}\n---- log:\n{log}", diffs.len(), diffs.join("\n"));
    assert!(compared >= 2000, "{compared} keys compared");
}

#[test]
fn shutdown_during_a_busy_journal_closes_every_connection_with_a_fin() {
    let emu = Arc::new(Emulator::start(Config { shards: 4, ..Config::default() }).unwrap());
    datasets::small(&emu, 200);
    let srv = RedisServer::start(&[]);
    let child = replicate(&emu, &srv, &[]);
    let mut out = None;
    with_live_journal(&emu, || {
        assert!(wait_acked_beyond(&emu, 0, 2000, MINUTE));
        // SIGTERM while records keep arriving on every flow.
        out = Some(terminate(child));
    });
    let out = out.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(emu.wait_session_closed(Duration::from_secs(30)), "a connection is still open");
    assert_eq!(emu.main_closed_cleanly(), Some(true), "main connection");
    assert_eq!(emu.flow_closed_cleanly(), vec![Some(true); 4], "flows: {}", text(&out));
}

#[test]
fn when_the_retries_run_out_the_error_lists_every_attempt() {
    // Nothing listens on the source port; --wait-for-source retries it (else: exit 1 at once).
    let srv = RedisServer::start(&[]);
    let source = format!("127.0.0.1:{}", free_port());
    let target = format!("redis://{}", srv.addr());
    let wait = "--wait-for-source";
    let args = ["replicate", wait, "--source", &source, "--target", &target, "--max-retries", "2", "--retry-backoff-ms", "10"];
    let out = df2redis(&args).wait_with_output().unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("giving up: 3 attempts in a row failed (--max-retries 2)"), "{log}");
    for k in 1..=3 {
        assert!(log.contains(&format!("attempt {k}: at ")), "{log}");
    }
    assert!(log.matches(&source).count() >= 3, "every attempt names the source: {log}");

    let args = ["replicate", wait, "--source", &source, "--target", &target, "--retry-deadline", "1", "--retry-backoff-ms", "300"];
    let out = df2redis(&args).wait_with_output().unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("the failures lasted past --retry-deadline 1 s"), "{log}");
}
