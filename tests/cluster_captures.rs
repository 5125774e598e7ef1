//! A Redis Cluster target fed from the real captures: slot routing and per-slot splitting of
//! the master's records, explicit db mapping (never a silent merge), per-node write counts.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::capture_master::{CaptureMaster, Faults};
use common::redis_cluster::RedisCluster;
use common::redis_server::{compare, RedisServer};
use common::run::{df2redis, text};
use common::*;

fn fixture(name: &str) -> Fixture {
    fixtures().into_iter().find(|f| f.name == name).unwrap()
}

#[test]
fn data_outside_db_0_without_a_mapping_stops_before_anything_is_written() {
    let fx = fixture("v1.40.1-default");
    let master = CaptureMaster::start(&fx, Faults::default());
    let cluster = RedisCluster::start();
    let target = format!("redis://{}", cluster.seed());
    let out = df2redis(&["migrate", "--source", &master.addr(), "--target", &target]).wait_with_output().unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("db 1 holds 4 keys") && log.contains("db 2 holds 2 keys") && log.contains("--db-map"), "{log}");
    assert!(cluster.read_all().values().all(|m| m.is_empty()), "nothing may be written");
}

#[test]
fn migrate_into_a_cluster_with_a_db_map() {
    let fx = fixture("v1.40.1-default");
    let master = CaptureMaster::start(&fx, Faults::default());
    let cluster = RedisCluster::start();
    // Two seeds, one of them wrong: any reachable seed will do.
    let target = format!("redis://127.0.0.1:1,{}", cluster.seed());
    let out = df2redis(&["migrate", "--source", &master.addr(), "--target", &target, "--db-map", "0:0,1:0,2:0"]).wait_with_output().unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    for addr in cluster.addrs() {
        let line = log.lines().find(|l| l.starts_with(&format!("node {addr}:"))).unwrap_or_else(|| panic!("no write count for {addr}: {log}"));
        let n: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(n > 1000, "{line}");
    }
    master.wait_closed(Duration::from_secs(30)).unwrap();
    let mut expected = merged(parse_dataset(&fx.expected()["at_startstable"]));
    for i in 0..fx.num_flows() {
        drop_expired_members(&mut expected, &member_ttls(&fx.decode(i, 1 << 16)), |_| 0);
    }
    let scratch = RedisServer::start(&[]); // PFCOUNT of expected HyperLogLogs
    let (diffs, compared, _) = compare(&expected, &cluster.read_all(), &mut scratch.conn(), 2000, &BTreeSet::new());
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    assert!(compared > 8000, "{compared}");
}

#[test]
fn replicate_into_a_cluster_follows_the_journal_and_refuses_an_inexact_flushdb() {
    // The capture's journal holds cross-shard MSET/DEL (split per slot here), RESTOREs, streams
    // and, at the end, a FLUSHDB in db 2. With db 2 mapped onto db 0 that FLUSHDB would wipe
    // db 0's data too, so the run must stop and say so rather than diverge.
    let fx = fixture("v1.40.1-default");
    let master = CaptureMaster::start(&fx, Faults::default());
    let cluster = RedisCluster::start();
    let target = format!("redis://{}", cluster.seed());
    let out = df2redis(&["replicate", "--source", &master.addr(), "--target", &target, "--db-map", "0:0,1:0,2:0", "--on-reject", "skip"]).wait_with_output().unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("FLUSHDB in source db 2") && log.contains("db_map"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let (main_clean, _) = master.wait_closed(Duration::from_secs(30)).unwrap();
    assert!(main_clean);
}
