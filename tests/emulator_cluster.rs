//! The emulator as a node of a Dragonfly cluster: reply shapes as Dragonfly v1.40.1's source
//! writes them (docs/protocol/dragonfly-cluster.md, section B), MOVED, replication of one node
//! by df2redis, and what each node's replication journal carries during a slot migration
//! (section C).

mod common;
mod emulator_support;

use std::time::Duration;

use common::dragonfly_cluster::DragonflyCluster;
use common::redis_server::{scan_keys, RedisServer};
use common::run::{df2redis, terminate, text};
use df2redis::emulator::cluster::{key_slot, SlotRange};
use df2redis::emulator::{Config, Emulator};
use emulator_support::{close_gracefully, full_sync, handshake, Client, Flow, Master, Reply};

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

fn config() -> Config {
    Config { shards: 2, ..Config::default() }
}

#[test]
fn cluster_replies_have_dragonflys_shapes() {
    let c = DragonflyCluster::start(3, config());
    let mut cl = Client::connect(c.addr(1));
    let node = |i: usize| {
        Reply::Array(vec![
            bulk("id"),
            bulk(&c.id(i)),
            bulk("endpoint"),
            bulk("127.0.0.1"),
            bulk("ip"),
            bulk("127.0.0.1"),
            bulk("port"),
            Reply::Int(c.addr(i).port() as i64),
            bulk("role"),
            bulk("master"),
            bulk("replication-offset"),
            Reply::Int(0),
            bulk("health"),
            bulk("online"),
        ])
    };
    let ranges = [(0, 5461), (5462, 10922), (10923, 16383)];
    let shards: Vec<Reply> = (0..3)
        .map(|i| {
            Reply::Array(vec![
                bulk("slots"),
                Reply::Array(vec![Reply::Int(ranges[i].0), Reply::Int(ranges[i].1)]),
                bulk("nodes"),
                Reply::Array(vec![node(i)]),
            ])
        })
        .collect();
    assert_eq!(cl.call(&["CLUSTER", "SHARDS"]), Reply::Array(shards));
    let slots: Vec<Reply> = (0..3)
        .map(|i| {
            Reply::Array(vec![
                Reply::Int(ranges[i].0),
                Reply::Int(ranges[i].1),
                Reply::Array(vec![bulk("127.0.0.1"), Reply::Int(c.addr(i).port() as i64), bulk(&c.id(i))]),
            ])
        })
        .collect();
    assert_eq!(cl.call(&["cluster", "slots"]), Reply::Array(slots));
    let nodes: String = (0..3)
        .map(|i| {
            let p = c.addr(i).port();
            let me = if i == 1 { "myself," } else { "" };
            format!("{} 127.0.0.1:{p}@{p} {me}master - 0 0 0 connected {}-{}\n", c.id(i), ranges[i].0, ranges[i].1)
        })
        .collect();
    assert_eq!(cl.call(&["CLUSTER", "NODES"]), bulk(&nodes));
    assert_eq!(cl.call(&["CLUSTER", "MYID"]), Reply::Simple(c.id(1)));
    assert_eq!(c.id(1), c.nodes[1].master_replid(), "the id defaults to the replid");
    let info = cl.call(&["CLUSTER", "INFO"]).text();
    assert!(info.starts_with("cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\n"), "{info}");
    assert!(info.contains("\r\ncluster_known_nodes:3\r\ncluster_size:3\r\ncluster_current_epoch:1\r\n"), "{info}");
    assert!(info.ends_with("cluster_stats_messages_meet_received:0\r\ncluster_stats_messages_received:1\r\n"), "{info}");
    assert_eq!(cl.call(&["CLUSTER", "KEYSLOT", "{user}:1"]), Reply::Int(key_slot(b"user") as i64));
    assert_eq!(
        cl.call(&["INFO", "cluster"]),
        bulk("# Cluster\r\ncluster_enabled:1\r\nmigration_errors_total:0\r\ntotal_migrated_keys:0\r\n\r\n")
    );
    assert_eq!(cl.call(&["CLUSTER", "SHARDS", "x"]), Reply::Error("ERR wrong number of arguments for 'cluster shards' command".into()));
    assert_eq!(
        cl.call(&["CLUSTER", "FOO"]),
        Reply::Error("ERR Unknown subcommand or wrong number of arguments for 'FOO'. Try CLUSTER HELP.".into())
    );
    assert_eq!(cl.call(&["CLUSTER"]), Reply::Error("ERR wrong number of arguments for 'cluster' command".into()));

    // A node no layout was pushed to yet.
    let bare = Emulator::start(Config { cluster: Some(Default::default()), ..config() }).unwrap();
    let mut b = Client::connect(bare.addr());
    assert_eq!(b.call(&["CLUSTER", "SHARDS"]), Reply::Error("ERR Cluster is not yet configured".into()));
    assert_eq!(b.call(&["SET", "k", "v"]), Reply::Error("ERR Cluster is not yet configured".into()));
    assert!(b.call(&["CLUSTER", "INFO"]).text().starts_with("cluster_state:fail\r\ncluster_slots_assigned:0\r\n"));
}

#[test]
fn outside_cluster_mode_cluster_commands_fail_as_dragonfly() {
    let emu = Emulator::start(config()).unwrap();
    let mut c = Client::connect(emu.addr());
    for sub in ["SHARDS", "SLOTS", "NODES", "INFO", "MYID"] {
        assert_eq!(
            c.call(&["CLUSTER", sub]),
            Reply::Error("ERR Cluster is disabled. Enabled via passing --cluster_mode=emulated|yes".into())
        );
    }
    assert_eq!(
        c.call(&["DFLYCLUSTER", "FLUSHSLOTS", "0", "1"]),
        Reply::Error("ERR Cluster is disabled. Use --cluster_mode=yes to enable.".into())
    );
    assert!(c.call(&["INFO"]).text().contains("# Cluster\r\ncluster_enabled:0\r\n"));
    assert_eq!(c.call(&["SELECT", "3"]), Reply::Simple("OK".into()));
    assert!(emu.push_cluster_layout(Vec::new()).is_err());
}

#[test]
fn keys_of_other_nodes_get_moved_and_only_db_0_exists() {
    let c = DragonflyCluster::start(2, config());
    let mut n = 0;
    let theirs = DragonflyCluster::key_in(&c.layout()[1].slots, "k", &mut n);
    let slot = key_slot(theirs.as_bytes());
    let moved = format!("MOVED {slot} 127.0.0.1:{}", c.addr(1).port());
    let mut cl = Client::connect(c.addr(0));
    assert_eq!(cl.call(&["SET", &theirs, "v"]), Reply::Error(moved.clone()));
    assert_eq!(cl.call(&["GET", &theirs]), Reply::Error(moved.clone()), "reads too");
    assert_eq!(c.nodes[0].write(0, &[b"SET", theirs.as_bytes(), b"v"]), Err(moved));
    let mine = DragonflyCluster::key_in(&c.layout()[0].slots, "k", &mut n);
    assert_eq!(cl.call(&["SET", &mine, "v"]), Reply::Simple("OK".into()));
    assert_eq!(cl.call(&["MSET", &mine, "1", &theirs, "2"]), Reply::Error("CROSSSLOT Keys in request don't hash to the same slot".into()));
    assert_eq!(cl.call(&["SELECT", "1"]), Reply::Error("ERR SELECT is not allowed in cluster mode".into()));
    assert_eq!(cl.call(&["SELECT", "0"]), Reply::Simple("OK".into()));
    assert_eq!(c.nodes[0].write(1, &[b"SET", mine.as_bytes(), b"v"]), Err("ERR SELECT is not allowed in cluster mode".into()));
    assert!(c.write(&[b"SET", theirs.as_bytes(), b"v"]).is_ok(), "the helper routes to the owner");
    assert_eq!(c.nodes[1].data()[&0].len(), 1);
}

#[test]
fn replicate_of_one_node_copies_exactly_its_keys() {
    let c = DragonflyCluster::start(2, Config { shards: 3, ..Config::default() });
    for i in 0..600 {
        c.write(&[b"SET", format!("key:{i}").as_bytes(), b"v"]).unwrap();
        if i % 10 == 0 {
            c.write(&[b"HSET", format!("h:{i}").as_bytes(), b"f", b"x"]).unwrap();
        }
    }
    let srv = RedisServer::start(&[]);
    let target = format!("redis://{}", srv.addr());
    // --discover off: only this node (by default df2redis would find and replicate node 1 too).
    let child = df2redis(&["replicate", "--source", &c.addr(0).to_string(), "--discover", "off", "--target", &target, "--progress-secs", "1"]);
    assert!(c.nodes[0].wait_fullsync_end(Duration::from_secs(60)), "no FULLSYNC_END");
    for i in 0..300 {
        c.write(&[b"SET", format!("live:{i}").as_bytes(), b"w"]).unwrap();
    }
    let acked = c.nodes[0].wait_acked_all(Duration::from_secs(60));
    let out = terminate(child);
    let log = text(&out);
    assert!(acked, "ACKs {:?} never reached {:?}\n{log}", c.nodes[0].acked(), c.nodes[0].lsns());
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(c.nodes[0].violations().is_empty(), "{:?}", c.nodes[0].violations());
    let copied = common::emulator_model::assert_matches_emulator(&c.nodes[0], &mut srv.conn(), "one cluster node");
    // df2redis's own checkpoint markers aside.
    let keys: Vec<Vec<u8>> = scan_keys(&mut srv.conn()).into_iter().filter(|k| !k.starts_with(b"df2redis:")).collect();
    let foreign: Vec<String> = keys.iter().filter(|k| c.owner_of(k) != 0).map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    assert!(foreign.is_empty(), "keys of node 1 on the target: {foreign:?}");
    assert!(copied > 300 && keys.len() < 960, "{copied} keys copied of 960 written");
}

/// Every stable record a replica of `emu` got since `since` (per-flow LSNs): (flow, txid, db,
/// argv as text).
fn records_since(emu: &Emulator, flows: &mut [Flow], since: &[u64]) -> Vec<(usize, u64, u32, Vec<String>)> {
    let now = emu.lsns();
    let mut out = Vec::new();
    for (i, f) in flows.iter_mut().enumerate() {
        for lsn in since[i]..now[i] {
            let at = f.wait_lsn(lsn);
            let df2redis::protocol::Item::Journal(r) = &f.items[at] else { unreachable!() };
            let argv = r.argv.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            out.push((i, r.txid, r.db, argv));
        }
    }
    out
}

fn w(c: &DragonflyCluster, args: &[&str]) {
    c.write(&args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>()).unwrap();
}

fn argvs(recs: &[(usize, u64, u32, Vec<String>)]) -> Vec<String> {
    let mut v: Vec<String> = recs.iter().map(|r| r.3.join(" ")).collect();
    v.sort();
    v
}

#[test]
fn a_slot_migration_journals_what_dragonfly_does() {
    let mut c = DragonflyCluster::start(2, config());
    let moving = [SlotRange::new(0, 199)];
    let mut n = 0;
    let mut key = |p: &str| DragonflyCluster::key_in(&moving, p, &mut n);
    let (s, t, set, h, z, l) = (key("s"), key("t"), key("set"), key("h"), key("z"), key("l"));
    w(&c, &["SET", &s, "v"]);
    w(&c, &["SET", &t, "v", "PXAT", "4102444800000"]);
    w(&c, &["SADD", &set, "a", "b"]);
    w(&c, &["HSET", &h, "f", "v"]);
    w(&c, &["ZADD", &z, "1.23456789", "m"]);
    w(&c, &["RPUSH", &l, "a", "b"]);
    w(&c, &["PEXPIREAT", &l, "4102444800000"]);
    let mut n2 = 1000;
    let stays = DragonflyCluster::key_in(&[SlotRange::new(200, 8191)], "stay", &mut n2);
    w(&c, &["SET", &stays, "v"]);

    let attach = |emu: &Emulator| -> (Master, Vec<Flow>, Vec<u64>) {
        let mut m = handshake(emu.addr(), None);
        let flows = full_sync(&mut m);
        (m, flows, emu.lsns())
    };
    let (src, dst) = (&c.nodes[0], &c.nodes[1]);
    let (m0, mut f0, base0) = attach(src);
    let (m1, mut f1, base1) = attach(dst);

    // 1. A layout listing the migration: nothing journaled.
    c.begin_migration(0, 1, &moving);
    assert_eq!((c.nodes[0].lsns(), c.nodes[1].lsns()), (base0.clone(), base1.clone()), "a layout push journals nothing");

    // 2-4. The copy: the target journals each key as Dragonfly's CmdSerializer commands.
    assert_eq!(c.copy(0, 1), 6);
    assert_eq!(c.nodes[0].lsns(), base0, "the source journals nothing for the copy");
    let copied = records_since(&c.nodes[1], &mut f1, &base1);
    let mut want = vec![
        format!("SET {s} v"),
        format!("SET {t} v PXAT 4102444800000"),
        format!("SADD {set} a b"),
        format!("HSET {h} f v"),
        format!("ZADD {z} 1.23457 m"),
        format!("RPUSH {l} a b"),
        format!("PEXPIREAT {l} 4102444800000"),
    ];
    want.sort();
    assert_eq!(argvs(&copied), want);
    assert!(copied.iter().all(|r| r.2 == 0 && c.nodes[1].shard_of(r.3[1].as_bytes()) == r.0), "db 0, on the key's shard");
    let after_copy = c.nodes[1].lsns();

    // A write to a moving slot: the source owns it, journals it and forwards it; the target
    // refuses clients.
    let src_port = c.addr(0).port();
    assert_eq!(c.owner_of(s.as_bytes()), 0);
    w(&c, &["SET", &s, "v2"]);
    let slot = key_slot(s.as_bytes());
    assert_eq!(c.nodes[1].write(0, &[b"SET", s.as_bytes(), b"x"]), Err(format!("MOVED {slot} 127.0.0.1:{src_port}")));
    assert_eq!(argvs(&records_since(&c.nodes[0], &mut f0, &base0)), vec![format!("SET {s} v2")]);
    assert_eq!(argvs(&records_since(&c.nodes[1], &mut f1, &after_copy)), vec![format!("SET {s} v2")]);
    let (mid0, mid1) = (c.nodes[0].lsns(), c.nodes[1].lsns());

    // 5. Finalize: nothing journaled, the layout both report unchanged, MOVED to the target.
    c.finalize(0, 1);
    assert_eq!((c.nodes[0].lsns(), c.nodes[1].lsns()), (mid0.clone(), mid1.clone()));
    assert_eq!(c.nodes[0].cluster_layout(), c.nodes[1].cluster_layout());
    assert_eq!(c.nodes[0].cluster_layout()[0].slots, vec![SlotRange::new(0, 8191)], "layout unchanged until the push");
    let dst_port = c.addr(1).port();
    assert_eq!(c.nodes[0].write(0, &[b"SET", s.as_bytes(), b"x"]), Err(format!("MOVED {slot} 127.0.0.1:{dst_port}")));
    assert!(c.nodes[0].data()[&0].contains_key(s.as_bytes()), "the source keeps the keys until the push");
    w(&c, &["SET", &s, "v3"]);
    assert_eq!(argvs(&records_since(&c.nodes[1], &mut f1, &mid1)), vec![format!("SET {s} v3")]);
    let fin1 = c.nodes[1].lsns();

    // 6. The final layout: the source deletes the slots and journals FLUSHSLOTS on every flow.
    c.commit(0, 1);
    let flush = records_since(&c.nodes[0], &mut f0, &mid0);
    assert_eq!(flush.len(), 2, "one record per shard: {flush:?}");
    for (i, r) in flush.iter().enumerate() {
        assert_eq!((r.0, r.1, r.2, r.3.join(" ")), (i, 0, 0, "DFLYCLUSTER FLUSHSLOTS 0 199".to_string()));
    }
    assert_eq!(c.nodes[1].lsns(), fin1, "the target journals nothing at the push");
    let src_keys: Vec<Vec<u8>> = c.nodes[0].data()[&0].keys().cloned().collect();
    assert_eq!(src_keys, vec![stays.as_bytes().to_vec()]);
    assert_eq!(c.nodes[1].data()[&0].len(), 6);
    let mut cl = Client::connect(c.addr(0));
    assert!(cl.call(&["INFO", "cluster"]).text().contains("total_migrated_keys:6"));
    assert_eq!(c.nodes[0].cluster_layout()[0].slots, vec![SlotRange::new(200, 8191)]);

    for emu in &c.nodes {
        assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    }
    close_gracefully(m0, f0);
    close_gracefully(m1, f1);
}
