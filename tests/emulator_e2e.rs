//! End to end: the Dragonfly-master emulator as the source, a real redis-server as the target,
//! `df2redis` as a separate process, compared key by key with the emulator's own data.

mod common;

use std::time::Duration;

use common::run::{df2redis, terminate, text};
use common::redis_server::{now_ms, RedisServer};
use df2redis::emulator::{datasets, Config, Emulator};

fn check(emu: &Emulator, srv: &RedisServer, what: &str) -> usize {
    common::emulator_model::assert_matches_emulator(emu, &mut srv.conn(), what)
}

#[test]
fn migrate_copies_every_type_with_writes_during_the_snapshot_and_after_the_cut() {
    let emu = Emulator::start(Config { shards: 4, pause_snapshot_after: Some(10), hold_startstable: true, ..Config::default() }).unwrap();
    datasets::type_coverage(&emu);
    // Several dbs and TTLs (type_coverage has TTL'd keys in db 0 too).
    for db in 1..=3u32 {
        for i in 0..50 {
            emu.write(db, &[b"SET", format!("db{db}:k{i}").as_bytes(), b"v", b"EX", b"3600"]).unwrap();
        }
    }
    let srv = RedisServer::start(&[]);
    let target = format!("redis://{}", srv.addr());
    let child = df2redis(&["migrate", "--source", &emu.addr().to_string(), "--target", &target]);

    // Mid-snapshot: every flow is paused after 10 entries; these writes become inline
    // journal blobs (or, for keys not yet serialized, part of their entry).
    assert!(emu.wait_snapshot_paused(Duration::from_secs(60)), "the snapshot never paused");
    for i in 0..200 {
        emu.write(0, &[b"SET", format!("during:{i}").as_bytes(), format!("v{i}").as_bytes()]).unwrap();
        emu.write(0, &[b"HSET", b"during:hash", format!("f{i}").as_bytes(), b"x"]).unwrap();
    }
    emu.write(0, &[b"DEL", b"during:1", b"during:2", b"during:3"]).unwrap();
    emu.write(0, &[b"RPUSH", b"during:list", b"a", b"b"]).unwrap();
    emu.resume_snapshot();
    // After every flow's FULLSYNC_END and before STARTSTABLE: held post-cut blobs.
    assert!(emu.wait_fullsync_end(Duration::from_secs(120)), "no FULLSYNC_END");
    for i in 0..100 {
        emu.write(0, &[b"SET", format!("postcut:{i}").as_bytes(), b"x", b"PX", b"3600000"]).unwrap();
    }
    emu.write(0, &[b"MSET", b"postcut:a", b"1", b"postcut:b", b"2", b"postcut:c", b"3"]).unwrap();
    emu.release_startstable();

    let out = child.wait_with_output().unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(emu.wait_session_closed(Duration::from_secs(30)), "session still open");
    assert!(emu.flow_closed_cleanly().iter().all(|c| *c == Some(true)), "{:?}", emu.flow_closed_cleanly());
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    let n = check(&emu, &srv, "migrate");
    assert!(n > 500, "{n}");
    let list: i64 = redis::cmd("LLEN").arg("list:10mb").query(&mut srv.conn()).unwrap();
    assert_eq!(list, 40_000);
}

#[test]
fn replicate_follows_a_live_journal_and_acks_every_lsn() {
    let emu = Emulator::start(Config { shards: 4, ..Config::default() }).unwrap();
    datasets::every_type(&emu);
    datasets::small(&emu, 2000);
    let srv = RedisServer::start(&[]);
    let target = format!("redis://{}", srv.addr());
    let child = df2redis(&["replicate", "--source", &emu.addr().to_string(), "--target", &target, "--progress-secs", "1"]);
    assert!(emu.wait_fullsync_end(Duration::from_secs(60)), "no FULLSYNC_END");

    // 100 000+ records spread over the flows: plain and counter writes, hashes, lists, sorted
    // sets, cross-shard MSET and DEL, streams, TTLs and expiry, and FLUSHDB in db 1.
    let w = |args: &[&str]| emu.write(if args[0] == "db1" { 1 } else { 0 }, &args.iter().skip((args[0] == "db1") as usize).map(|a| a.as_bytes()).collect::<Vec<_>>()).unwrap();
    for i in 0..12_000u32 {
        let k = format!("j:{}", i % 1000);
        w(&["SET", &k, &format!("v{i}")]);
        w(&["INCR", &format!("ctr:{}", i % 97)]);
        w(&["HSET", &format!("h:{}", i % 50), &format!("f{}", i % 20), &i.to_string()]);
        w(&["LPUSH", &format!("l:{}", i % 30), &i.to_string()]);
        w(&["ZADD", &format!("z:{}", i % 40), &format!("{}.25", i % 1000), &format!("m{}", i % 300)]);
        w(&["MSET", &format!("ms:{}", i % 500), "a", &format!("ms:{}", (i + 7) % 500), "b", &format!("ms:{}", (i + 13) % 500), "c"]);
        w(&["XADD", &format!("x:{}", i % 10), "*", "i", &i.to_string()]);
        if i % 3 == 0 {
            w(&["DEL", &format!("ms:{}", i % 500), &format!("j:{}", (i + 1) % 1000)]);
        }
        if i % 10 == 0 {
            // Due at once: active expiry below journals a DEL for each.
            w(&["SET", &format!("ttl:{i}"), "t", "PXAT", &now_ms().to_string()]);
            w(&["db1", "SET", &format!("one:{}", i % 100), "x"]);
        }
        if i % 1000 == 0 {
            w(&["LPOP", &format!("l:{}", i % 30)]);
            w(&["PEXPIREAT", &format!("h:{}", i % 50), &(now_ms() + 3_600_000).to_string()]);
        }
        if i == 5000 {
            w(&["db1", "FLUSHDB"]);
        }
    }
    w(&["XGROUP", "CREATE", "x:1", "g", "0"]);
    // Expire the due keys on the master (journaled as DEL records).
    emu.expire_now();
    let total: u64 = emu.lsns().iter().sum();
    assert!(total > 100_000, "only {total} records");
    let acked = emu.wait_acked_all(Duration::from_secs(120));
    let out = terminate(child);
    let log = text(&out);
    assert!(acked, "ACKs {:?} never reached the LSNs {:?}\n{log}", emu.acked(), emu.lsns());
    assert_eq!(emu.acked(), emu.lsns(), "the emulator saw ACKs equal to its LSNs");
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("running FLUSHDB"), "the global command ran once: {log}");
    assert!(emu.wait_session_closed(Duration::from_secs(30)));
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    check(&emu, &srv, "replicate");
}
