//! Exactly-once resume. df2redis is killed with SIGKILL at random moments of a live
//! journal of non-idempotent commands (INCR, LPUSH, APPEND, XADD); each restart must resume
//! every flow from the checkpoint markers in the target (PARTIAL), and at the end the target
//! must equal the master exactly: a record applied twice (an extra INCR, a duplicated list
//! element) or lost shows up as a difference.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::emulator_model::expected;
use common::live::{journal_writer, kill9, last_run, mixed_journal_writer, poll, start_and_wait_spread, wait_acked_beyond};
use common::redis_cluster::RedisCluster;
use common::redis_server::{compare, read_all, RedisServer, ServerKind};
use common::run::{df2redis, terminate, text};
use df2redis::emulator::{datasets, Config, Dialect, Emulator};

#[test]
fn kill_9_at_random_moments_resumes_exactly_once_into_standalone() {
    let rounds: usize = std::env::var("DF2REDIS_KILL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    kill_9_rounds(Dialect::V1_40, rounds, None);
}

/// The same against a v1.34 master, whose partial sync is another dialect (protocol doc 8.3):
/// `DFLY SYNC` after the PARTIAL answers, the missing records as journal blobs, FULLSYNC_END,
/// then STARTSTABLE. Those blobs are applied and checkpointed like journal records, so a kill
/// while they are being applied loses and repeats nothing either: every other restart waits
/// for a long backlog and is killed as soon as the target's markers show its first batch.
#[test]
fn kill_9_at_random_moments_resumes_exactly_once_from_a_v1_34_master() {
    let rounds: usize = std::env::var("DF2REDIS_KILL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    kill_9_rounds(Dialect::V1_34, rounds, Some("in the v1.34 partial-sync dialect"));
}

/// Flow `i`'s marker of the only run on the target (`df2redis:checkpoint:<run>:<i>`).
fn flow_marker(c: &mut redis::Connection, i: usize) -> Option<Vec<u8>> {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg(format!("df2redis:checkpoint:*:{i}")).query(c).unwrap();
    assert!(keys.len() <= 1, "one run's markers expected: {keys:?}");
    keys.first().and_then(|k| redis::cmd("GET").arg(k).query(c).unwrap())
}

/// The markers' next LSNs in the target (0 for a flow without one).
fn markers(c: &mut redis::Connection, flows: usize) -> Vec<u64> {
    redis::cmd("SELECT").arg(0).query::<()>(c).unwrap();
    (0..flows)
        .map(|i| {
            let m = flow_marker(c, i);
            m.and_then(|m| df2redis::checkpoint::Mark::parse(&m)).map_or(0, |m| m.next_lsn)
        })
        .collect()
}


/// `rounds` runs of `replicate` killed with SIGKILL after a spread of acknowledged records,
/// then a last run stopped cleanly; every restart must resume (its log naming `dialect_note`
/// when given) and the target must end equal to the master. With a dialect note (v1.34),
/// rounds 2, 4, ... are started once the master journaled 10 000 more records and killed at
/// their first applied batch, while the missing records arrive as journal blobs.
fn kill_9_rounds(dialect: Dialect, rounds: usize, dialect_note: Option<&str>) {
    let emu = Arc::new(Emulator::start(Config { shards: 4, backlog_len: 1 << 20, dialect, ..Config::default() }).unwrap());
    datasets::small(&emu, 500);
    let srv = RedisServer::start(&[]);
    let target = format!("redis://{}", srv.addr());
    let source = emu.addr().to_string();
    let mut args = vec!["replicate", "--source", &source, "--target", &target, "--progress-secs", "1"];
    // Small pipelines: many checkpointed batches in a backlog, so a kill lands among them.
    let early_kills = dialect_note.is_some();
    if early_kills {
        args.extend(["--batch-cmds", "50"]);
    }
    let mut probe = srv.conn();
    let mut blob_kills = 0;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = journal_writer(emu.clone(), stop.clone());
    let resumed = |log: &str| {
        log.contains("resuming from the target's checkpoints") && dialect_note.is_none_or(|n| log.contains(n))
    };
    // A deterministic spread of moments: after 1 to ~3000 more acknowledged records.
    let mut seed = 0x9E3779B97F4A7C15u64;
    let mut partial_resumes = 0;
    for round in 0..rounds {
        if early_kills && round >= 2 && round % 2 == 0 {
            // A long backlog, then a kill at the first batch applied from it.
            let at_kill: u64 = emu.lsns().iter().sum();
            assert!(poll(Duration::from_secs(60), || emu.lsns().iter().sum::<u64>() >= at_kill + 10_000));
            let (start, lsns) = (markers(&mut probe, 4), emu.lsns());
            let child = df2redis(&args);
            let moved = poll(Duration::from_secs(60), || markers(&mut probe, 4) != start);
            let log = kill9(child);
            assert!(moved, "round {round}: no marker moved:\n{log}");
            assert!(resumed(&log), "round {round} did not resume partially:\n{log}");
            partial_resumes += 1;
            // Records journaled before the restart came as blobs: some still unapplied means
            // the kill hit that phase.
            if markers(&mut probe, 4).iter().zip(&lsns).any(|(m, l)| m < l) {
                blob_kills += 1;
            }
            continue;
        }
        let (child, more, reached) = start_and_wait_spread(&emu, &args, &mut seed);
        let log = kill9(child);
        assert!(reached, "round {round}: df2redis never acknowledged {more} more records:\n{log}");
        if resumed(&log) {
            partial_resumes += 1;
        } else {
            assert_eq!(round, 0, "round {round} did not resume partially:\n{log}");
        }
    }
    assert_eq!(partial_resumes, rounds.saturating_sub(1));
    if early_kills && rounds > 2 {
        assert!(blob_kills > 0, "no kill landed while the v1.34 journal blobs were applied");
    }
    let (written, log) = last_run(&emu, &args, &stop, writer);
    if rounds > 0 {
        assert!(resumed(&log), "{log}");
    }

    let exp = expected(&emu);
    let mut c = srv.conn();
    // One marker per flow, carrying the master's id and the flow's next LSN = what it acked.
    for (i, lsn) in emu.lsns().iter().enumerate() {
        let m: Vec<u8> = flow_marker(&mut c, i).expect("a marker per flow");
        let m = df2redis::checkpoint::Mark::parse(&m).expect("a df2redis marker");
        assert_eq!((m.replid.as_str(), m.flows, m.next_lsn), (emu.master_replid().as_str(), 4, *lsn), "flow {i}");
    }
    let act = read_all(&mut c); // without the markers
    let (diffs, compared, _) = compare(&exp, &act, &mut c, 1000, &BTreeSet::new());
    assert!(diffs.is_empty(), "{} differences after {rounds} kills and {written} writes:\n{}", diffs.len(), diffs.join("\n"));
    assert!(compared >= 500 + 97, "{compared}");

    // `cleanup` removes exactly the markers.
    redis::cmd("SELECT").arg(0).query::<()>(&mut c).unwrap();
    let before: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    let out = df2redis(&["cleanup", "--target", &target]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("removed 4 checkpoint marker keys"), "{}", text(&out));
    let after: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(before - after, 4);
}

/// The same into a real 3-master Redis Cluster, where a transaction cannot span slots: each
/// pipeline carries one marker per flow and master, and the commands unsafe to apply twice run
/// in one script per node with it (`checkpoint::cluster`). The journal interleaves them with
/// safe commands on the same keys and with cross-slot RENAMEs. Every restart must resume
/// PARTIAL, and at the end the cluster must equal the master exactly.
#[test]
fn kill_9_at_random_moments_resumes_exactly_once_into_a_cluster() {
    let rounds: usize = std::env::var("DF2REDIS_KILL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let emu = Arc::new(Emulator::start(Config { shards: 4, backlog_len: 1 << 20, ..Config::default() }).unwrap());
    datasets::small(&emu, 500);
    let cluster = RedisCluster::start();
    let target = format!("redis://{}", cluster.seed());
    let source = emu.addr().to_string();
    let args = ["replicate", "--source", &source, "--target", &target, "--progress-secs", "1"];
    let stop = Arc::new(AtomicBool::new(false));
    let writer = mixed_journal_writer(emu.clone(), stop.clone());
    let mut seed = 0x2545F4914F6CDD1Du64;
    let (mut partial_resumes, mut skipping_resumes, mut stale_closed) = (0, 0, 0);
    for round in 0..rounds {
        let (child, more, reached) = start_and_wait_spread(&emu, &args, &mut seed);
        // Every other round one master stops applying writes (CLIENT PAUSE) while the others
        // go on: the kill then leaves the nodes at different markers, and a prefix of what
        // the paused node was sent may or may not be applied once it resumes.
        // Rounds 2, 6, 10 ...: df2redis is stopped (SIGSTOP) while the master journals on,
        // then continued: it catches up in pipelines of hundreds of KB, which Redis reads in
        // 16 KB pieces, and while it does the target drops its connections on one node
        // (CLIENT KILL): a prefix of a pipeline is applied there. The session ends and the
        // next one resumes from the markers by itself; the kill -9 comes once it applied more.
        // Rounds 4, 8, 12 ...: the same catch-up, cut by the kill -9 itself.
        let catch_up = reached && round > 0 && round % 2 == 0;
        if catch_up {
            let p = round % 3;
            let pid = child.id().to_string();
            assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
            let at = emu.lsns().iter().sum::<u64>();
            let grew = poll(Duration::from_secs(30), || emu.lsns().iter().sum::<u64>() >= at + 20_000);
            let before = cluster_markers(&cluster, p);
            assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
            assert!(grew, "round {round}: the master journaled too little");
            assert!(poll(Duration::from_secs(30), || cluster_markers(&cluster, p) != before), "round {round}: node {p} applied nothing");
            if round % 4 == 2 {
                let killed: i64 =
                    redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal").arg("SKIPME").arg("yes").query(&mut cluster.conn(p)).unwrap();
                assert!(killed > 0, "round {round}: no connection to kill on node {p}");
                let again = emu.acked().iter().sum::<u64>();
                assert!(wait_acked_beyond(&emu, again, 500, Duration::from_secs(60)), "round {round}: no progress after the drop");
            }
        }
        let paused = (reached && !catch_up && round % 2 == 1).then(|| {
            let p = round % 3;
            let others = |c: &RedisCluster| (0..3).filter(|&i| i != p).map(|i| cluster_markers(c, i)).collect::<Vec<_>>();
            let before = others(&cluster);
            redis::cmd("CLIENT").arg("PAUSE").arg(5000).arg("WRITE").query::<()>(&mut cluster.conn(p)).unwrap();
            assert!(poll(Duration::from_secs(4), || others(&cluster) != before), "round {round}: no marker moved");
            p
        });
        let log = kill9(child);
        if let Some(p) = paused {
            redis::cmd("CLIENT").arg("UNPAUSE").query::<()>(&mut cluster.conn(p)).unwrap();
        }
        assert!(reached, "round {round}: df2redis never acknowledged {more} more records:\n{log}");
        if log.contains("resuming from the target's checkpoints") {
            partial_resumes += 1;
        } else {
            assert_eq!(round, 0, "round {round} did not resume partially:\n{log}");
        }
        if log.lines().any(|l| l.contains("resumed past every node's checkpoint") && !l.contains("; 0 commands")) {
            skipping_resumes += 1;
        }
        if log.contains("connections an earlier writer left on the target") {
            stale_closed += 1;
        }
    }
    assert_eq!(partial_resumes, rounds.saturating_sub(1));
    if rounds >= 4 {
        assert!(skipping_resumes > 0, "no resume found the nodes at different markers");
    }
    let (written, log) = last_run(&emu, &args, &stop, writer);
    if rounds > 0 {
        assert!(log.contains("resuming from the target's checkpoints"), "{log}");
    }
    eprintln!(
        "{rounds} kills, {skipping_resumes} resumes left out records some nodes held, {stale_closed} closed connections \
         the killed run left, {written} journal writes"
    );

    let exp = expected(&emu);
    let scratch = RedisServer::start(&[]);
    let (diffs, compared, _) = compare(&exp, &cluster.read_all(), &mut scratch.conn(), 1000, &BTreeSet::new());
    assert!(diffs.is_empty(), "{} differences after {rounds} kills and {written} writes:\n{}", diffs.len(), diffs.join("\n"));
    assert!(compared >= 500 + 97, "{compared}");

    // Every master holds one marker per flow, at the flow's last LSN.
    let mut node_markers = 0;
    for i in 0..3 {
        let mut c = cluster.conn(i);
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("df2redis:checkpoint:*:{*").query(&mut c).unwrap();
        // Node markers only: `<run>:done:{...}` are the done markers of cross-slot RENAMEs.
        let keys: Vec<Vec<u8>> = keys.into_iter().filter(|k| !String::from_utf8_lossy(k).contains(":done:")).collect();
        for k in &keys {
            let m: Vec<u8> = redis::cmd("GET").arg(k).query(&mut c).unwrap();
            let m = df2redis::checkpoint::Mark::parse(&m).expect("a df2redis marker");
            let flow: usize = String::from_utf8_lossy(k).rsplit(':').next().unwrap().parse().unwrap();
            assert_eq!((m.replid.as_str(), m.flows, m.next_lsn), (emu.master_replid().as_str(), 4, emu.lsns()[flow]));
        }
        assert_eq!(keys.len(), 4, "node {i}");
        node_markers += keys.len();
    }
    let out = df2redis(&["cleanup", "--target", &target]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("checkpoint marker keys"), "{}", text(&out));
    for i in 0..3 {
        let left: Vec<Vec<u8>> = redis::cmd("KEYS").arg("df2redis:*").query(&mut cluster.conn(i)).unwrap();
        assert!(left.is_empty(), "node {i} still has {left:?}");
    }
    assert_eq!(node_markers, 12);
}

/// Node `i`'s markers: (key, next_lsn), sorted.
fn cluster_markers(cluster: &RedisCluster, i: usize) -> Vec<(Vec<u8>, u64)> {
    let mut c = cluster.conn(i);
    let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("df2redis:checkpoint:*:{*").query(&mut c).unwrap();
    keys.retain(|k| !String::from_utf8_lossy(k).contains(":done:"));
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let m: Option<Vec<u8>> = redis::cmd("GET").arg(&k).query(&mut c).unwrap();
            let lsn = m.and_then(|m| df2redis::checkpoint::Mark::parse(&m)).map_or(0, |m| m.next_lsn);
            (k, lsn)
        })
        .collect()
}

/// A master that restarted (new replid) cannot serve the old checkpoints: the run announces a
/// full resync and, by default (`--on-resync flush`), empties the target first, so keys only
/// the old master had do not survive. `--checkpoint FILE` mirrors what was applied.
#[test]
fn a_restarted_master_means_a_full_resync_into_an_emptied_target() {
    let dir = std::env::temp_dir().join(format!("df2redis-resync-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("checkpoint");
    let emu = Emulator::start(Config { shards: 2, ..Config::default() }).unwrap();
    datasets::small(&emu, 300);
    let srv = RedisServer::start(&[]);
    let target = format!("redis://{}", srv.addr());
    let run = |emu: &Emulator| {
        let args = ["replicate", "--source", &emu.addr().to_string(), "--target", &target, "--checkpoint", file.to_str().unwrap()];
        let child = df2redis(&args);
        for i in 0..50 {
            emu.write(0, &[b"INCR", format!("ctr:{}", i % 5).as_bytes()]).unwrap();
        }
        assert!(emu.wait_acked_all(Duration::from_secs(60)), "{:?} vs {:?}", emu.acked(), emu.lsns());
        let out = terminate(child);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        text(&out)
    };
    let first = run(&emu);
    assert!(!first.contains("full resync"), "{first}");
    let mirrored = std::fs::read_to_string(&file).unwrap();
    assert!(mirrored.contains(&format!("master_replid = {}", emu.master_replid())), "{mirrored}");
    for (i, lsn) in emu.lsns().iter().enumerate() {
        assert!(mirrored.contains(&format!("flow.{i}.applied_next_lsn = {lsn}\n")), "{mirrored}");
    }
    let port = emu.addr().port();
    let old_id = emu.master_replid();
    emu.stop();

    // The same address, a new master id and fewer keys than before.
    let emu = Emulator::start_on(Config { shards: 2, ..Config::default() }, port).unwrap();
    assert_ne!(emu.master_replid(), old_id);
    datasets::small(&emu, 100);
    let second = run(&emu);
    assert!(second.contains("full resync: the checkpoints are from master"), "{second}");
    assert!(second.contains("emptying the target first"), "{second}");
    let mut c = srv.conn();
    let (diffs, compared, _) = compare(&expected(&emu), &read_all(&mut c), &mut c, 1000, &BTreeSet::new());
    assert!(diffs.is_empty(), "{} differences:\n{}", diffs.len(), diffs.join("\n"));
    assert!(compared >= 100, "{compared}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--checkpoints off`: the target holds only the data, and a restart is a full resync.
#[test]
fn without_checkpoints_no_marker_is_written_and_a_restart_resyncs() {
    let emu = Emulator::start(Config { shards: 2, ..Config::default() }).unwrap();
    datasets::small(&emu, 100);
    let srv = RedisServer::start(&[]);
    let target = format!("redis://{}", srv.addr());
    let args = ["replicate", "--source", &emu.addr().to_string(), "--target", &target, "--checkpoints", "off"];
    for run in 0..2 {
        let child = df2redis(&args);
        for i in 0..20 {
            emu.write(0, &[b"INCR", format!("ctr:{}", i % 3).as_bytes()]).unwrap();
        }
        assert!(emu.wait_acked_all(Duration::from_secs(60)), "{:?} vs {:?}", emu.acked(), emu.lsns());
        let out = terminate(child);
        let log = text(&out);
        assert_eq!(out.status.code(), Some(0), "{log}");
        assert!(log.contains("--checkpoints off: no resume point is kept"), "{log}");
        assert!(!log.contains("resuming from the target's checkpoints"), "run {run}: {log}");
        let mut c = srv.conn();
        let markers: Vec<String> = redis::cmd("KEYS").arg("df2redis:checkpoint:*").query(&mut c).unwrap();
        assert!(markers.is_empty(), "{markers:?}");
        let (diffs, _, _) = compare(&expected(&emu), &read_all(&mut c), &mut c, 1000, &BTreeSet::new());
        assert!(diffs.is_empty(), "run {run}: {}", diffs.join("\n"));
    }
}

/// A FLUSHDB among the records a resume brings (the v1.35+ journal, or v1.34's journal
/// blobs) runs once for every flow, and the checkpoint of the records queued before it stops
/// short of it: when the target refuses the FLUSHDB, every marker names the FLUSHDB's own
/// LSN, so the next run applies it instead of skipping it.
#[test]
fn a_flushdb_in_the_resumed_records_runs_once_and_is_never_checkpointed_before_it_ran() {
    for dialect in [Dialect::V1_40, Dialect::V1_34] {
        for refused in [false, true] {
            let emu = Emulator::start(Config { shards: 2, dialect: dialect.clone(), ..Config::default() }).unwrap();
            datasets::small(&emu, 100);
            // Renamed away: the journal's FLUSHDB is then a rejected command.
            let srv = RedisServer::start(if refused { &["--rename-command", "FLUSHDB", "FLUSHDB-OFF"] } else { &[] });
            let (source, target) = (emu.addr().to_string(), format!("redis://{}", srv.addr()));
            let args = ["replicate", "--source", &source, "--target", &target];
            let what = format!("{dialect:?}, FLUSHDB refused: {refused}");
            let child = df2redis(&args);
            assert!(emu.wait_acked_all(Duration::from_secs(60)), "{what}");
            let out = terminate(child);
            assert_eq!(out.status.code(), Some(0), "{what}: {}", text(&out));
            // While df2redis is away: records on both shards, the FLUSHDB, more records.
            let incr = |tag: &str| {
                for i in 0..20 {
                    emu.write(0, &[b"INCR", format!("{tag}:{i}").as_bytes()]).unwrap();
                }
            };
            incr("before");
            let flush_lsns = emu.lsns();
            emu.write(0, &[b"FLUSHDB"]).unwrap();
            incr("after");
            let child = df2redis(&args);
            let mut c = srv.conn();
            if refused {
                let out = child.wait_with_output().unwrap();
                let log = text(&out);
                assert_eq!(out.status.code(), Some(1), "{what}: {log}");
                assert!(log.contains("resuming from the target's checkpoints") && log.contains("FLUSHDB"), "{what}: {log}");
                assert_eq!(markers(&mut c, 2), flush_lsns, "{what}: the markers stop at the FLUSHDB:\n{log}");
                continue;
            }
            assert!(emu.wait_acked_all(Duration::from_secs(60)), "{what}");
            let out = terminate(child);
            let log = text(&out);
            assert_eq!(out.status.code(), Some(0), "{what}: {log}");
            assert!(log.contains("resuming from the target's checkpoints"), "{what}: {log}");
            assert!(log.contains("running FLUSHDB (db 0) once for every flow"), "{what}: {log}");
            let (diffs, compared, _) = compare(&expected(&emu), &read_all(&mut c), &mut c, 1000, &BTreeSet::new());
            assert!(diffs.is_empty(), "{what}: {} differences:\n{}", diffs.len(), diffs.join("\n"));
            assert_eq!(compared, 20, "{what}");
            assert_eq!(markers(&mut c, 2), emu.lsns(), "{what}");
        }
    }
}

/// A writer that crashed or whose session ended can leave pipelines on the target that the
/// server received and has not run yet (here held by CLIENT PAUSE); run after a new session
/// read the markers, they would apply records twice. A new session closes such connections
/// (named `df2redis-writer`) first: what they held is dropped.
#[test]
fn a_new_session_first_closes_what_an_earlier_writer_left_queued() {
    common::targets::stale_writer_is_closed(ServerKind::Redis7);
}
