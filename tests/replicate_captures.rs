//! `df2redis replicate` against a fake master serving each real capture: the target ends equal
//! to the master's `final` data; faults on the wire give a correct result or a clear error,
//! exit code 1, and the master sees a clean close.

mod common;

use std::collections::BTreeSet;
use std::process::Child;
use std::time::Duration;

use common::capture_master::{CaptureMaster, Faults};
use common::redis_server::{compare, read_all, RedisServer};
use common::run::{df2redis, terminate, text};
use common::*;

fn replicate(master: &CaptureMaster, srv: &RedisServer, extra: &[&str]) -> Child {
    let target = format!("redis://{}", srv.addr());
    let source = master.addr();
    let mut args = vec!["replicate", "--source", &source, "--target", &target, "--progress-secs", "1"];
    args.extend_from_slice(extra);
    df2redis(&args)
}

#[test]
fn replicate_reproduces_every_capture() {
    let mut restores = 0;
    for fx in fixtures() {
        let n = fx.num_flows();
        let master = CaptureMaster::start(&fx, Faults::default());
        let srv = RedisServer::start(&[]);
        // `--on-reject skip`: replaying a capture hours after it was taken can make a record
        // meet a key whose absolute TTL has passed (see late_ttl_keys); such rejections are
        // counted, bounded below, and their keys not judged.
        let child = replicate(&master, &srv, &["--on-reject", "skip"]);
        let lsns: Vec<u64> = (0..n).map(|i| fx.lsn_at_end(i)).collect();
        if let Err(e) = master.wait_acks(&lsns, Duration::from_secs(120)) {
            let out = terminate(child);
            panic!("{}: {e}\n{}", fx.name, text(&out));
        }
        let out = terminate(child);
        let log = text(&out);
        assert_eq!(out.status.code(), Some(0), "{}: exit status\n{log}", fx.name);
        let (main_clean, flows) = master.wait_closed(Duration::from_secs(30)).unwrap();
        assert!(main_clean, "{}: the main connection was not closed cleanly", fx.name);
        assert!(flows.iter().all(|f| *f == Some(true)), "{}: flow closes {flows:?}", fx.name);
        assert!(!master.commands().iter().any(|c| c.starts_with("VIOLATION")), "{}: {:?}", fx.name, master.commands());
        assert!(log.contains("---- replicate summary ----"), "{log}");
        // A master older than v1.37.0 is named at start with what its journal leaves out.
        let warned = log.contains("does not journal XREADGROUP");
        if dragonfly_versions::journals_xreadgroup(&fx) {
            assert!(!warned, "{}: XREADGROUP warning for a master that journals it\n{log}", fx.name);
        } else {
            let line = log.lines().find(|l| l.contains("does not journal XREADGROUP")).unwrap_or_else(|| panic!("{}: no XREADGROUP warning\n{log}", fx.name));
            let release = fx.session["dragonfly_version"].as_str().unwrap();
            for part in ["WARN", release, "pending entries", "consumers", "last-delivered id"] {
                assert!(line.contains(part), "{}: the warning lacks {part:?}: {line}", fx.name);
            }
            eprintln!("{}: {line}", fx.name);
        }

        let decoded: Vec<_> = (0..n).map(|i| fx.decode(i, 1 << 16)).collect();
        let ttls: Vec<_> = decoded.iter().flat_map(|d| absolute_ttls(d)).collect();
        let all = fx.expected();
        let mut expected = parse_dataset(&all["final"]);
        // What the master applied without journaling it is not judged (dragonfly_versions).
        for note in dragonfly_versions::without_unjournaled_reads(&fx, &mut expected, &parse_dataset(&all["at_startstable"])) {
            eprintln!("{note}");
        }
        let members: Vec<_> = decoded.iter().map(|d| member_ttls(d)).collect();
        for m in &members {
            drop_expired_members(&mut expected, m, |db| db);
        }
        let mut late = late_ttl_keys(&ttls, &expected);
        let rejected = log
            .lines()
            .find_map(|l| l.strip_prefix("commands rejected by the target and skipped: "))
            .map_or(0, |n| n.trim().parse::<usize>().unwrap());
        if rejected > 0 {
            // Only records about keys whose TTL passed before this replay may fail; their keys
            // (and the keys those records write) are not judged.
            let now = redis_server::now_ms();
            let passed: BTreeSet<(u32, Vec<u8>)> = ttls.iter().filter(|t| t.2 < now).map(|(d, k, _)| (*d, k.clone())).collect();
            assert!(rejected <= passed.len(), "{}: {rejected} rejected commands\n{log}", fx.name);
            for d in &decoded {
                for it in d {
                    if let df2redis::protocol::Item::Journal(r) = it {
                        if r.argv.get(1).is_some_and(|k| passed.contains(&(r.db, k.to_vec()))) {
                            late.extend(r.argv.iter().skip(1).map(|k| (r.db, k.to_vec())));
                        }
                    }
                }
            }
        }
        for r in dragonfly_versions::unjournaled_reads(&fx) {
            assert!(!late.contains(&(r.db, r.key.to_vec())), "{}: the stream of an unjournaled read must still be judged", fx.name);
        }
        let mut c = srv.conn();
        let actual = read_all(&mut c);
        let (diffs, compared, _) = compare(&expected, &actual, &mut c, 2000, &late);
        assert!(diffs.is_empty(), "{}: {} differences:\n{}\n{log}", fx.name, diffs.len(), diffs.join("\n"));
        assert!(compared > 0);
        // Real Dragonfly encodings go as RESTORE payloads (unless the run says --restore off)
        // and the target loads every one.
        assert!(!log.contains("RESTORE refused"), "{}: {log}", fx.name);
        let info: String = redis::cmd("INFO").arg("commandstats").query(&mut c).unwrap();
        let n: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_restore:calls="))
            .map_or(0, |r| r.split(',').next().unwrap().parse().unwrap());
        restores += n;
        eprintln!("{}: replicate reproduced {compared} keys ({} not judged: late TTLs; {n} RESTOREs)", fx.name, late.len());
    }
    if std::env::var("DF2REDIS_TEST_RESTORE").as_deref() != Ok("off") {
        assert!(restores > 0, "the captures' small collections travel as RESTORE payloads");
    }
}

fn globals() -> Fixture {
    fixtures().into_iter().find(|f| f.name == "v1.40.1-globals").unwrap()
}

#[test]
fn one_byte_tcp_segments_give_the_same_result() {
    let fx = globals();
    let master = CaptureMaster::start(&fx, Faults { segment: Some(1), ..Default::default() });
    let srv = RedisServer::start(&[]);
    let child = replicate(&master, &srv, &[]);
    let lsns: Vec<u64> = (0..fx.num_flows()).map(|i| fx.lsn_at_end(i)).collect();
    let ok = master.wait_acks(&lsns, Duration::from_secs(120));
    let out = terminate(child);
    ok.unwrap_or_else(|e| panic!("{e}\n{}", text(&out)));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let expected = parse_dataset(&fx.expected()["final"]);
    let mut c = srv.conn();
    let actual = read_all(&mut c);
    let (diffs, _, _) = compare(&expected, &actual, &mut c, 2000, &BTreeSet::new());
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn token_mismatch_is_a_clear_error_and_a_clean_close() {
    let fx = globals();
    let master = CaptureMaster::start(&fx, Faults { wrong_token: true, ..Default::default() });
    let srv = RedisServer::start(&[]);
    let out = replicate(&master, &srv, &[]).wait_with_output().unwrap();
    let log = text(&out);
    eprintln!("{log}");
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("eof token mismatch") && log.contains("byte offset") && log.contains("flow "), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let (main_clean, _) = master.wait_closed(Duration::from_secs(30)).unwrap();
    assert!(main_clean, "the main connection was not closed cleanly");
}

#[test]
fn a_flow_closing_mid_stream_is_a_clear_error_and_a_clean_close() {
    let fx = globals();
    let master = CaptureMaster::start(&fx, Faults { close_flow_after: Some((1, 1000)), ..Default::default() });
    let srv = RedisServer::start(&[]);
    // No new session (tests/faults.rs covers reconnects): the first error is the outcome.
    let out = replicate(&master, &srv, &["--max-retries", "0"]).wait_with_output().unwrap();
    let log = text(&out);
    eprintln!("{log}");
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("flow 1") && log.contains("1000"), "the error names the flow and offset: {log}");
    assert!(!log.contains("panicked"), "{log}");
    let (main_clean, _) = master.wait_closed(Duration::from_secs(30)).unwrap();
    assert!(main_clean, "the main connection was not closed cleanly");
}

#[test]
fn usage_errors_exit_2_and_name_the_flag() {
    let out = df2redis(&["replicate", "--source", "nohost", "--target", "redis://127.0.0.1:1"]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--source"), "{}", text(&out));
    let out = df2redis(&["migrate", "--source", "127.0.0.1:1", "--target", "redis://127.0.0.1:2", "--pin-flows", "9999"])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--pin-flows") && text(&out).contains("9999"), "{}", text(&out));
}

#[test]
fn migrate_from_a_config_file_copies_the_snapshot_and_stops() {
    let fx = fixtures().into_iter().find(|f| f.name == "v1.40.1-default").unwrap();
    let master = CaptureMaster::start(&fx, Faults::default());
    let srv = RedisServer::start(&[]);
    let dir = redis_server::TempDir::new("cfg");
    let cfg = dir.0.join("df2redis.ini");
    // The file names a wrong target port; the flag overrides it.
    std::fs::write(
        &cfg,
        format!("[source]\naddr = {}\n[target]\nurl = redis://127.0.0.1:1\n[tuning]\nbatch_cmds = 100\n", master.addr()),
    )
    .unwrap();
    let target = format!("redis://{}", srv.addr());
    let out = df2redis(&["migrate", "--config", cfg.to_str().unwrap(), "--target", &target]).wait_with_output().unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("---- migrate summary ----") && log.contains("total: "), "{log}");
    assert!(log.contains("skipped: 1 x JSON document"), "skipped keys are counted by reason: {log}");
    let (main_clean, flows) = master.wait_closed(Duration::from_secs(30)).unwrap();
    assert!(main_clean && flows.iter().all(|f| *f == Some(true)), "closes: main {main_clean}, flows {flows:?}");
    let mut expected = parse_dataset(&fx.expected()["at_startstable"]);
    for i in 0..fx.num_flows() {
        drop_expired_members(&mut expected, &member_ttls(&fx.decode(i, 1 << 16)), |db| db);
    }
    let mut c = srv.conn();
    let actual = read_all(&mut c);
    let (diffs, compared, _) = compare(&expected, &actual, &mut c, 2000, &BTreeSet::new());
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    assert!(compared > 8000);
}

#[test]
fn target_credentials_from_the_url_and_wrong_ones_are_named() {
    let fx = globals();
    let master = CaptureMaster::start(&fx, Faults::default());
    let srv = RedisServer::start(&["--requirepass", "s3cret"]);
    let source = master.addr();
    let bad = format!("redis://:wrong@{}", srv.addr());
    let out = df2redis(&["migrate", "--source", &source, "--target", &bad]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&srv.addr()) && text(&out).contains("AUTH"), "{}", text(&out));

    let good = format!("redis://:s3cret@{}", srv.addr());
    let out = df2redis(&["migrate", "--source", &source, "--target", &good]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let expected = parse_dataset(&fx.expected()["at_startstable"]);
    let mut c = srv.conn_auth("s3cret");
    let actual = read_all(&mut c);
    let (diffs, compared, _) = compare(&expected, &actual, &mut c, 2000, &BTreeSet::new());
    assert!(diffs.is_empty() && compared > 500, "{}", diffs.join("\n"));
}

/// The threads are named (perf, gdb and top show them by role) and pinned as asked.
#[test]
fn threads_are_named_and_pinned() {
    let fx = globals();
    let master = CaptureMaster::start(&fx, Faults::default());
    let srv = RedisServer::start(&[]);
    let cpu = df2redis::affinity::available_cpus()[0].to_string();
    let child = replicate(&master, &srv, &["--pin-flows", &cpu, "--pin-writers", &cpu]);
    let lsns: Vec<u64> = (0..fx.num_flows()).map(|i| fx.lsn_at_end(i)).collect();
    master.wait_acks(&lsns, Duration::from_secs(60)).unwrap();
    let mut names = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{}/task", child.id())).unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap().trim().to_string();
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        let allowed = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim().to_string();
        names.insert(name, allowed);
    }
    let out = terminate(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for i in 0..fx.num_flows() {
        assert_eq!(names.get(&format!("flow-{i}")), Some(&cpu), "{names:?}");
        assert_eq!(names.get(&format!("writer-{i}")), Some(&cpu), "{names:?}");
        assert!(names.contains_key(&format!("ack-{i}")), "{names:?}");
    }
}

/// One writer owning all three flows: at each FLUSHDB/FLUSHALL it parks the flows that reached
/// it and keeps applying the others until all three arrive, then runs it once.
#[test]
fn one_writer_for_all_flows_keeps_the_global_barrier() {
    let fx = globals();
    let master = CaptureMaster::start(&fx, Faults::default());
    let srv = RedisServer::start(&[]);
    let child = replicate(&master, &srv, &["--writers", "1"]);
    let lsns: Vec<u64> = (0..fx.num_flows()).map(|i| fx.lsn_at_end(i)).collect();
    let acked = master.wait_acks(&lsns, Duration::from_secs(60));
    let out = terminate(child);
    let log = text(&out);
    acked.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(log.matches("running FLUSH").count(), 2, "FLUSHDB and FLUSHALL once each: {log}");
    let expected = parse_dataset(&fx.expected()["final"]);
    let mut c = srv.conn();
    let actual = read_all(&mut c);
    let (diffs, compared, _) = compare(&expected, &actual, &mut c, 2000, &BTreeSet::new());
    assert!(diffs.is_empty() && compared > 0, "{}", diffs.join("\n"));
}

/// A target that already holds keys: every snapshot entry replaces what is under its name,
/// whatever the type (the entry is written after a DEL), so no stale value survives.
#[test]
fn snapshot_entries_replace_stale_target_values() {
    let fx = fixtures().into_iter().find(|f| f.name == "v1.40.1-default").unwrap();
    let master = CaptureMaster::start(&fx, Faults::default());
    let srv = RedisServer::start(&[]);
    let mut c = srv.conn();
    // Same names as source keys, other types and values.
    for (cmd, args) in [
        ("SET", vec!["list:small", "stale"]),
        ("RPUSH", vec!["hash:small", "stale"]),
        ("SADD", vec!["zset:small", "stale"]),
        ("HSET", vec!["set:big", "f", "stale"]),
        ("SADD", vec!["hash:big", "stale"]),
    ] {
        redis::cmd(cmd).arg(&args).query::<()>(&mut c).unwrap();
    }
    let target = format!("redis://{}", srv.addr());
    let out = df2redis(&["migrate", "--source", &master.addr(), "--target", &target]).wait_with_output().unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("already holds keys"), "{log}");
    let mut expected = parse_dataset(&fx.expected()["at_startstable"]);
    for i in 0..fx.num_flows() {
        drop_expired_members(&mut expected, &member_ttls(&fx.decode(i, 1 << 16)), |db| db);
    }
    let actual = read_all(&mut c);
    let (diffs, compared, _) = compare(&expected, &actual, &mut c, 2000, &BTreeSet::new());
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    assert!(compared > 8000);
}
