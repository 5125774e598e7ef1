//! An emulated 3-node Dragonfly cluster (`--cluster_mode=yes`) as the source of one df2redis
//! run: the masters discovered from one node, one session per master, into a standalone
//! Redis and into a 3-master Redis Cluster, exact with a live journal; kill -9 and resume;
//! one node restarted (only its slots resync, the other sessions untouched); two runs with
//! different names; and a slot migration during the journal.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::dragonfly_cluster::DragonflyCluster;
use common::emulator_model::expected;
use common::live::{kill9, poll, wait_every_flow_acked};
use common::redis_cluster::RedisCluster;
use common::redis_server::{compare, read_all, RedisServer};
use common::run::{df2redis, terminate, text, wait_bounded};
use common::Dataset;
use df2redis::emulator::cluster::{ClusterOptions, SlotRange};
use df2redis::emulator::{Config, Emulator};

const MINUTE: Duration = Duration::from_secs(60);

fn node_config() -> Config {
    Config { shards: 2, backlog_len: 1 << 20, ..Config::default() }
}

/// Strings, lists and hashes spread over every node.
fn fill(c: &DragonflyCluster, prefix: &str, n: usize) {
    for i in 0..n {
        c.write(&[b"SET", format!("{prefix}s:{i}").as_bytes(), format!("v{i}").as_bytes()]).unwrap();
        if i % 5 == 0 {
            c.write(&[b"RPUSH", format!("{prefix}l:{i}").as_bytes(), b"a", b"b", b"c"]).unwrap();
            c.write(&[b"HSET", format!("{prefix}h:{i}").as_bytes(), b"f", format!("{i}").as_bytes()]).unwrap();
        }
    }
}

/// Non-idempotent journal traffic on every node.
fn journal(c: &DragonflyCluster, prefix: &str, n: usize) {
    for i in 0..n {
        c.write(&[b"INCR", format!("{prefix}ctr:{}", i % 50).as_bytes()]).unwrap();
        c.write(&[b"LPUSH", format!("{prefix}q:{}", i % 17).as_bytes(), format!("{i}").as_bytes()]).unwrap();
    }
}

/// Every node's data together (their slots are disjoint).
fn union(c: &DragonflyCluster) -> Dataset {
    let mut all = Dataset::new();
    for n in &c.nodes {
        for (db, keys) in expected(n) {
            all.entry(db).or_default().extend(keys);
        }
    }
    all
}

fn all_acked(c: &DragonflyCluster) -> bool {
    c.nodes.iter().all(|n| n.wait_acked_all(MINUTE))
}

fn assert_exact(exp: &Dataset, act: &Dataset, what: &str, log: &str) {
    let scratch = RedisServer::start(&[]);
    let (diffs, compared, _) = compare(exp, act, &mut scratch.conn(), 1000, &BTreeSet::new());
    assert!(diffs.is_empty(), "{what}: {} differences:\n{}\n{log}", diffs.len(), diffs.join("\n"));
    assert!(compared > 0 && compared == exp.values().map(|k| k.len()).sum::<usize>(), "{what}: {compared} keys compared");
}

/// A 3-node cluster holding `fill(.., keys)`, a standalone Redis, and `replicate --name <name>`
/// from node 0 into it, returned once every node's flows are in stable sync.
fn replicating_into_redis(keys: usize, name: &str) -> (DragonflyCluster, RedisServer, String, std::process::Child) {
    let c = DragonflyCluster::start(3, node_config());
    fill(&c, "", keys);
    let srv = RedisServer::start(&[]);
    let target = format!("redis://{}", srv.addr());
    let run = replicate(&c, &target, &["--name", name]);
    assert!(c.nodes.iter().all(|n| wait_every_flow_acked(n, MINUTE)), "every node's flows reach stable sync");
    (c, srv, target, run)
}

/// Wait until every node's journal is ACKed, sessions restarting meanwhile or not.
fn every_node_caught_up(c: &DragonflyCluster) -> bool {
    poll(MINUTE, || c.nodes.iter().all(|e| e.acked().iter().zip(e.lsns()).all(|(a, l)| *a >= l)))
}

/// Stop the run (SIGTERM); it must exit 0. Returns its log.
fn stop_cleanly(run: std::process::Child) -> String {
    let out = terminate(run);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    log
}

fn replicate(c: &DragonflyCluster, target: &str, extra: &[&str]) -> std::process::Child {
    let source = c.addr(0).to_string();
    let mut args = vec!["replicate", "--source", &source, "--target", target, "--progress-secs", "1", "--retry-backoff-ms", "50"];
    args.extend_from_slice(extra);
    df2redis(&args)
}

#[test]
fn a_three_node_cluster_into_a_standalone_redis_with_a_kill_and_a_node_restart() {
    let (mut c, srv, target, run) = replicating_into_redis(600, "dfc");
    journal(&c, "j:", 400);
    assert!(all_acked(&c));
    // Each master has its own markers and its slots recorded beside them.
    let mut conn = srv.conn();
    for i in 0..3 {
        let name = format!("dfc+127.0.0.1-{}", c.addr(i).port());
        let slots: Option<String> = redis::cmd("GET").arg(format!("df2redis:checkpoint:{name}:slots")).query(&mut conn).unwrap();
        let want: Vec<String> = c.layout()[i].slots.iter().map(|r| format!("{}-{}", r.start, r.end)).collect();
        assert_eq!(slots, Some(want.join(",")), "node {i}");
    }

    // kill -9, restart: every master resumes PARTIAL from its own markers.
    let log = kill9(run);
    assert!(log.contains("3 masters into one target"), "{log}");
    journal(&c, "k:", 200);
    let run = replicate(&c, &target, &["--name", "dfc"]);
    assert!(all_acked(&c), "the restarted run catches up on every node");
    let sessions: Vec<u32> = c.nodes.iter().map(|n| n.sessions_created()).collect();

    // Node 2 restarts (a new replid, its own id and slots kept, other data): only its slots
    // are resynced; the other masters' sessions are untouched.
    let (port, id) = (c.addr(2).port(), c.id(2));
    let layout = c.layout().to_vec();
    c.nodes.remove(2).stop();
    let cfg = Config { cluster: Some(ClusterOptions { node_id: Some(id), layout }), ..node_config() };
    c.nodes.insert(2, Emulator::start_on(cfg, port).unwrap());
    fill(&c, "new:", 90);
    journal(&c, "after:", 100);
    assert!(all_acked(&c), "node 2 resynced, the others streamed");
    let log = stop_cleanly(run);
    assert!(log.contains("resuming from the target's checkpoints"), "{log}");
    assert!(log.contains("deleting only the keys in the master's hash slots"), "{log}");
    assert!(!log.contains("emptying the target"), "{log}");
    for (i, (node, before)) in c.nodes.iter().zip(&sessions).take(2).enumerate() {
        assert_eq!(node.sessions_created(), *before, "node {i}'s session was disturbed:\n{log}");
    }
    assert_exact(&union(&c), &read_all(&mut conn), "after kill -9 and a node restart", &log);
}

#[test]
fn a_three_node_cluster_into_a_redis_cluster_and_two_named_runs() {
    let mut c = DragonflyCluster::start(3, node_config());
    fill(&c, "", 500);
    let rc = RedisCluster::start();
    let target = format!("redis://{}", rc.seed());
    let run = replicate(&c, &target, &[]);
    assert!(c.nodes.iter().all(|n| wait_every_flow_acked(n, MINUTE)));
    journal(&c, "j:", 300);
    assert!(all_acked(&c));
    // Node 1 restarts with other data: its slots are emptied slot by slot on the Redis
    // Cluster and reloaded; the other nodes' keys stay.
    let (port, id, layout) = (c.addr(1).port(), c.id(1), c.layout().to_vec());
    c.nodes.remove(1).stop();
    let cfg = Config { cluster: Some(ClusterOptions { node_id: Some(id), layout }), ..node_config() };
    c.nodes.insert(1, Emulator::start_on(cfg, port).unwrap());
    fill(&c, "re:", 60);
    assert!(all_acked(&c));
    let log = stop_cleanly(run);
    assert!(log.contains("deleting only the keys in the master's hash slots"), "{log}");
    assert_exact(&union(&c), &rc.read_all(), "3 nodes into a Redis Cluster", &log);
    // check, given one node, compares the target with every master of the cluster.
    let out = wait_bounded(df2redis(&["check", "--source", &c.addr(0).to_string(), "--target", &target]), MINUTE, "check");
    let report = text(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(report.contains("3 sources compared"), "{report}");

    // One process per node, each under its own (default) name, into another target: both safe.
    let srv = RedisServer::start(&[]);
    let t2 = format!("redis://{}", srv.addr());
    let runs: Vec<_> = (0..3)
        .map(|i| df2redis(&["replicate", "--source", &c.addr(i).to_string(), "--discover", "off", "--target", &t2, "--progress-secs", "1"]))
        .collect();
    // Same name as the first: refused (exit 2), naming it.
    let dup = wait_bounded(
        df2redis(&["replicate", "--source", &c.addr(0).to_string(), "--discover", "off", "--target", &t2]),
        MINUTE,
        "a second run with the same name to refuse",
    );
    assert_eq!(dup.status.code(), Some(2), "{}", text(&dup));
    assert!(text(&dup).contains("another df2redis runs under the name"), "{}", text(&dup));
    journal(&c, "two:", 100);
    assert!(all_acked(&c));
    let mut logs = String::new();
    for r in runs {
        logs.push_str(&stop_cleanly(r));
    }
    assert_exact(&union(&c), &read_all(&mut srv.conn()), "one process per node", &logs);
}

#[test]
fn a_slot_migration_during_the_journal_ends_exact() {
    let (mut c, srv, _, run) = replicating_into_redis(600, "mig");
    journal(&c, "j:", 200);
    assert!(all_acked(&c));
    // Move the first 300 slots of node 0 to node 1, with writes to them before and after.
    let moving = SlotRange { start: c.layout()[0].slots[0].start, end: c.layout()[0].slots[0].start + 299 };
    let mut n = 0;
    for _ in 0..50 {
        let k = DragonflyCluster::key_in(&[moving], "moving:", &mut n);
        c.write(&[b"INCR", k.as_bytes()]).unwrap();
    }
    let copied = c.migrate(0, 1, &[moving]);
    assert!(copied > 0, "keys moved");
    for _ in 0..50 {
        let k = DragonflyCluster::key_in(&[moving], "moved:", &mut n);
        c.write(&[b"SET", k.as_bytes(), b"after"]).unwrap();
    }
    journal(&c, "after:", 200);
    // Every node's journal applied (node 1's session restarts until the layout is committed).
    assert!(every_node_caught_up(&c), "every node caught up");
    let log = stop_cleanly(run);
    assert!(log.contains("FLUSHSLOTS") || log.contains("did not own when this session started"), "the migration was seen:\n{log}");
    assert!(log.contains("hash slots changed"), "a master whose slots changed resyncs:\n{log}");
    assert_exact(&union(&c), &read_all(&mut srv.conn()), "after a slot migration", &log);
}

/// The migration step by step, with the run watching: while the copy is in the new owner's
/// journal (and after finalization, before the commit) its session keeps restarting without
/// applying anything of the moving slots; writes go on elsewhere meanwhile; after the commit
/// both masters resync their slots and the target is exact.
#[test]
fn a_migration_in_progress_holds_the_new_owner_until_the_layout_is_committed() {
    let (mut c, srv, _, run) = replicating_into_redis(400, "step");
    let moving = SlotRange { start: c.layout()[2].slots[0].start, end: c.layout()[2].slots[0].start + 499 };
    let mut n = 0;
    for _ in 0..40 {
        let k = DragonflyCluster::key_in(&[moving], "moving:", &mut n);
        c.write(&[b"SET", k.as_bytes(), b"before"]).unwrap();
    }
    assert!(all_acked(&c));
    let before = c.nodes[0].sessions_created();
    c.begin_migration(2, 0, &[moving]);
    assert!(c.copy(2, 0) >= 40);
    // The new owner's session sees keys it does not own yet and restarts, again and again.
    assert!(poll(MINUTE, || c.nodes[0].sessions_created() >= before + 2), "node 0's session restarts during the copy");
    journal(&c, "meanwhile:", 100);
    c.finalize(2, 0);
    for _ in 0..40 {
        let k = DragonflyCluster::key_in(&[moving], "moved:", &mut n);
        c.write(&[b"SET", k.as_bytes(), b"after"]).unwrap();
    }
    c.commit(2, 0);
    journal(&c, "after:", 100);
    assert!(every_node_caught_up(&c), "every node caught up");
    let log = stop_cleanly(run);
    assert!(log.contains("a slot migration into it is in progress"), "{log}");
    assert!(log.contains("hash slots changed"), "{log}");
    assert_exact(&union(&c), &read_all(&mut srv.conn()), "after a watched slot migration", &log);
}
