//! Filters, db mapping and rate limits, end to end. The emulator as the source, a real
//! redis-server as the target, `df2redis` as a separate process.
//!
//! The keys a filtered run must leave are computed by this file's own reading of the rules (not
//! df2redis's matcher), from the emulator's data after every write: the target must hold
//! exactly those, mapped to their target dbs, and nothing else of the master's.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use common::emulator_model::expected;
use common::live::wait_every_flow_acked;
use common::redis_server::{compare, read_all, RedisServer};
use common::run::{df2redis, terminate, text};
use common::Dataset;
use df2redis::emulator::{Config, Emulator, Entry, Value};

const MINUTE: Duration = Duration::from_secs(60);

/// The rules of the main test, as flags...
const RULES: &[&str] = &[
    "--include",
    "prefix:user:",
    "--include",
    "glob:order:[0-9]*",
    "--exclude",
    "regex:^user:[0-9]+:tmp$",
    "--dbs",
    "0,1",
    "--db-map",
    "1:3",
];

/// ... and as this test reads them.
fn passes(db: u32, key: &[u8]) -> bool {
    let key = std::str::from_utf8(key).unwrap();
    let included =
        key.starts_with("user:") || key.strip_prefix("order:").is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()));
    let tmp = key
        .strip_prefix("user:")
        .and_then(|r| r.strip_suffix(":tmp"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    (db == 0 || db == 1) && included && !tmp
}

fn target_db(db: u32) -> u32 {
    if db == 1 {
        3
    } else {
        db
    }
}

/// The emulator's data as the filtered, mapped target must hold it.
fn filtered(emu: &Emulator) -> Dataset {
    let mut out = Dataset::new();
    for (db, keys) in expected(emu) {
        for (k, v) in keys {
            if passes(db, &k) {
                out.entry(target_db(db)).or_default().insert(k, v);
            }
        }
    }
    out
}

fn string(v: &str) -> Entry {
    Entry::new(Value::String(v.as_bytes().to_vec()))
}

/// How the filter must treat the journal records of the writes, counted as the summary counts
/// them. The emulator, as Dragonfly, journals a multi-key DEL or MSET as one record per shard
/// holding that shard's keys; each such record is judged on its own.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    kept: u64,
    dropped: u64,
    split: u64,
}

struct Writer<'a> {
    emu: &'a Emulator,
    counts: Counts,
}

impl Writer<'_> {
    fn w(&mut self, db: u32, args: &[&str]) {
        let argv: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.emu.write(db, &argv).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let name = args[0];
        let records: Vec<Vec<&str>> = match name {
            "DEL" | "MSET" => {
                let step = if name == "MSET" { 2 } else { 1 };
                let mut by_shard: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
                for unit in args[1..].chunks(step) {
                    by_shard.entry(self.emu.shard_of(unit[0].as_bytes())).or_default().push(unit[0]);
                }
                by_shard.into_values().collect()
            }
            "RENAME" => vec![vec![args[1], args[2]]],
            _ => vec![vec![args[1]]],
        };
        for keys in records {
            let pass = keys.iter().filter(|k| passes(db, k.as_bytes())).count();
            match pass {
                0 => self.counts.dropped += 1,
                p if p == keys.len() => self.counts.kept += 1,
                _ => self.counts.split += 1,
            }
        }
    }
}

/// Two keys `{a}N` and `{b}N` on the same emulator shard (RENAME needs that there).
fn same_shard(emu: &Emulator, a: &str, b: &str) -> (String, String) {
    for i in 0..10_000 {
        let (x, y) = (format!("{a}{i}"), format!("{b}{i}"));
        if emu.shard_of(x.as_bytes()) == emu.shard_of(y.as_bytes()) {
            return (x, y);
        }
    }
    panic!("no pair on one shard");
}

/// The numbers of the summary line `filtered: A keys (snapshot), B records (journal); C
/// records written in part`.
fn summary_counts(log: &str) -> (u64, u64, u64) {
    let line = log.lines().find(|l| l.starts_with("filtered: ")).unwrap_or_else(|| panic!("no filtered line:\n{log}"));
    let nums: Vec<u64> =
        line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
    assert_eq!(nums.len(), 3, "{line}");
    (nums[0], nums[1], nums[2])
}

/// Keys of every db of the target, as (db, key).
fn key_set(ds: &Dataset) -> BTreeSet<(u32, Vec<u8>)> {
    ds.iter().flat_map(|(db, keys)| keys.keys().map(move |k| (*db, k.clone()))).collect()
}

#[test]
fn snapshot_and_journal_keep_exactly_what_the_rules_pass() {
    let emu = Emulator::start(Config { shards: 4, ..Config::default() }).unwrap();
    for i in 0..300 {
        let h: BTreeMap<Vec<u8>, Vec<u8>> = [(b"f".to_vec(), format!("{i}").into_bytes())].into();
        emu.load(0, format!("user:{i}").as_bytes(), string("u"));
        emu.load(0, format!("user:{i}:tmp").as_bytes(), string("t"));
        emu.load(0, format!("user:{i}:profile").as_bytes(), Entry::new(Value::Hash(h)));
        emu.load(0, format!("order:{i}").as_bytes(), Entry::new(Value::List([b"x".to_vec()].into())));
        emu.load(0, format!("order:x{i}").as_bytes(), string("o"));
        emu.load(0, format!("cache:{i}").as_bytes(), string("c"));
        emu.load(1, format!("user:{i}").as_bytes(), string("u1"));
        emu.load(1, format!("other:{i}").as_bytes(), string("o1"));
        emu.load(2, format!("user:{i}").as_bytes(), string("u2"));
    }
    // Snapshot keys the rules leave out: user:N:tmp, order:xN, cache:N in db 0, other:N in db
    // 1, everything in db 2.
    let snapshot_filtered = 300 * 5;

    // Keys that are not the master's, in target dbs the run writes to (0) or not (2): a
    // filtered run must leave them alone.
    let srv = RedisServer::start(&[]);
    let mut c = srv.conn();
    for db in [0, 2] {
        redis::cmd("SELECT").arg(db).query::<()>(&mut c).unwrap();
        redis::cmd("SET").arg("foreign:key").arg("mine").query::<()>(&mut c).unwrap();
    }
    let target = format!("redis://{}", srv.addr());
    let source = emu.addr().to_string();
    let mut args = vec!["replicate", "--source", &source, "--target", &target, "--progress-secs", "1", "--on-flush", "flush"];
    args.extend_from_slice(RULES);
    let child = df2redis(&args);
    assert!(wait_every_flow_acked(&emu, MINUTE), "the full sync did not complete");

    // The live journal: single-key writes on both sides of the rules, cross-shard MSETs and
    // multi-key DELs mixing kept and dropped keys, RENAMEs whose keys all pass or all fail,
    // writes in a db the rules leave out, and FLUSHDBs (one in a db left out: skipped; one in
    // db 1, mapped to 3: run, since --on-flush flush).
    let mut wr = Writer { emu: &emu, counts: Counts::default() };
    for i in 0..200 {
        wr.w(0, &["SET", &format!("user:j{i}"), "v"]);
        wr.w(0, &["SET", &format!("cache:j{i}"), "v"]);
        wr.w(0, &["SET", &format!("user:{i}:tmp"), "changed"]);
        wr.w(0, &["HSET", &format!("user:{i}:profile"), "g", "2"]);
        wr.w(0, &["LPUSH", &format!("order:{i}"), "y"]);
        let (a, b, c, d) = (format!("user:m{i}"), format!("cache:m{i}"), format!("order:{}", 1000 + i), format!("user:{i}:tmp"));
        wr.w(0, &["MSET", &a, "1", &b, "2", &c, "3", &d, "4"]);
        if i % 2 == 0 {
            let (a, b, c) = (format!("user:{i}"), format!("cache:{i}"), format!("order:x{i}"));
            wr.w(0, &["DEL", &a, &b, &c]);
        }
        wr.w(1, &["SET", &format!("other:j{i}"), "v"]);
        wr.w(1, &["SET", &format!("user:j{i}"), "v"]);
        wr.w(2, &["SET", &format!("user:j{i}"), "v"]);
    }
    let (a, b) = same_shard(&emu, "user:from", "user:to");
    wr.w(0, &["SET", &a, "renamed"]);
    wr.w(0, &["RENAME", &a, &b]);
    let (a, b) = same_shard(&emu, "cache:from", "cache:to");
    wr.w(0, &["SET", &a, "renamed"]);
    wr.w(0, &["RENAME", &a, &b]);
    let shards = emu.config().shards as u64;
    emu.write(2, &[b"FLUSHDB"]).unwrap();
    wr.counts.dropped += shards;
    // db 1 gets new keys after its flush, which must arrive too.
    emu.write(1, &[b"SET", b"user:1", b"before"]).unwrap();
    emu.write(1, &[b"FLUSHDB"]).unwrap();
    wr.w(1, &["SET", "user:after-flush", "v"]);
    wr.counts.kept += 1;
    assert!(wr.counts.split > 20, "too few records mix kept and dropped keys: {:?}", wr.counts);

    let acked = emu.wait_acked_all(MINUTE);
    let out = terminate(child);
    let log = text(&out);
    assert!(acked, "ACKs {:?} never reached the LSNs {:?}\n{log}", emu.acked(), emu.lsns());
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    assert!(log.contains("running FLUSHDB"), "the FLUSHDB of db 1 ran: {log}");

    // Exactly the keys the rules pass, mapped, and the foreign keys untouched.
    let want = filtered(&emu);
    let mut c = srv.conn();
    let mut got = read_all(&mut c);
    for db in [0, 2] {
        let foreign = got.get_mut(&db).and_then(|keys| keys.remove(b"foreign:key".as_slice()));
        assert!(foreign.is_some(), "the foreign key of target db {db} is gone");
    }
    got.retain(|_, keys| !keys.is_empty());
    let (diffs, compared, _) = compare(&want, &got, &mut c, 1000, &BTreeSet::new());
    assert!(diffs.is_empty(), "{} differences:\n{}", diffs.len(), diffs.join("\n"));
    let (w, g) = (key_set(&want), key_set(&got));
    let extra: Vec<_> = g.difference(&w).map(|(db, k)| format!("db {db} {}", String::from_utf8_lossy(k))).take(20).collect();
    assert!(extra.is_empty(), "keys the rules leave out reached the target: {extra:?}");
    assert_eq!(w, g);
    assert!(compared >= 900, "{compared}");
    assert!(want.contains_key(&0) && want.contains_key(&3) && !want.contains_key(&1) && !want.contains_key(&2));
    assert_eq!(
        want[&3].keys().map(|k| k.as_slice()).collect::<Vec<_>>(),
        [b"user:after-flush".as_slice()],
        "db 1 after its flush"
    );

    let (keys, records, split) = summary_counts(&log);
    assert_eq!((keys, records, split), (snapshot_filtered, wr.counts.dropped, wr.counts.split), "{log}");
}

/// Wait (bounded) for a run to end by itself.
fn wait_exit(mut child: Child, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = terminate(child);
    panic!("df2redis did not stop by itself within {within:?}:\n{}", text(&out));
}

/// A replicate run of `emu` under `rules` that stops (exit 1, no new session) when the master
/// writes `poison`; returns its output.
fn stops_on(emu: Emulator, rules: &[&str], poison: &[&str]) -> String {
    let srv = RedisServer::start(&[]);
    let target = format!("redis://{}", srv.addr());
    let source = emu.addr().to_string();
    let mut args = vec!["replicate", "--source", &source, "--target", &target, "--retry-backoff-ms", "50"];
    args.extend_from_slice(rules);
    let child = df2redis(&args);
    assert!(wait_every_flow_acked(&emu, MINUTE), "the full sync did not complete");
    let argv: Vec<&[u8]> = poison.iter().map(|a| a.as_bytes()).collect();
    emu.write(0, &argv).unwrap();
    let out = wait_exit(child, MINUTE);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(!log.contains("a new session starts"), "a filter error is final: {log}");
    assert!(emu.wait_session_closed(Duration::from_secs(30)), "a connection is still open");
    assert!(emu.flow_closed_cleanly().iter().all(|c| *c == Some(true)), "{:?}", emu.flow_closed_cleanly());
    log
}

#[test]
fn a_rename_across_the_rules_stops_the_run_naming_command_keys_and_rule() {
    let emu = Emulator::start(Config { shards: 2, ..Config::default() }).unwrap();
    let (keep, drop) = same_shard(&emu, "keep:", "drop:");
    emu.load(0, keep.as_bytes(), string("v"));
    let log = stops_on(emu, &["--exclude", "glob:drop:*"], &["RENAME", &keep, &drop]);
    let want = format!(
        "journal record RENAME in source db 0 has keys on both sides of the filter: \"{keep}\" (kept), \"{drop}\" \
         (dropped: matches --exclude glob:drop:*)"
    );
    assert!(log.contains(&want), "{log}");
}

#[test]
fn a_flushdb_under_a_filter_stops_the_run_unless_allowed() {
    let emu = Emulator::start(Config { shards: 2, ..Config::default() }).unwrap();
    emu.load(0, b"a:1", string("v"));
    emu.load(0, b"b:1", string("v"));
    let log = stops_on(emu, &["--include", "prefix:a:"], &["FLUSHDB"]);
    assert!(log.contains("the master ran FLUSHDB in source db 0 while a filter is active (--include prefix:a:)"), "{log}");
    assert!(log.contains("--on-flush flush"), "{log}");
}

#[test]
fn a_rate_cap_paces_the_full_sync_and_the_journal_and_the_copy_is_exact() {
    const RATE: u64 = 1000;
    let emu = Emulator::start(Config { shards: 4, ..Config::default() }).unwrap();
    let keys = 2000u64;
    for i in 0..keys {
        emu.load(0, format!("key:{i}").as_bytes(), string("v"));
    }
    let srv = RedisServer::start(&[]);
    let target = format!("redis://{}", srv.addr());
    let source = emu.addr().to_string();
    let rate = RATE.to_string();
    let started = Instant::now();
    let child = df2redis(&["replicate", "--source", &source, "--target", &target, "--max-ops-per-s", &rate]);
    assert!(wait_every_flow_acked(&emu, MINUTE), "the full sync did not complete");
    let full_sync = started.elapsed();
    // One SET per key into the empty target: at least (keys - burst - one batch) / rate.
    // (Only a lower bound is a property of the cap; a slow machine makes it longer.)
    let least = |n: u64| Duration::from_secs_f64((n - RATE / 4 - RATE / 10) as f64 / RATE as f64);
    assert!(full_sync >= least(keys), "{keys} keys in {full_sync:?} under --max-ops-per-s {RATE}");

    let records = 1500u64;
    let from = Instant::now();
    for i in 0..records {
        emu.write(0, &[b"INCR", format!("ctr:{}", i % 50).as_bytes()]).unwrap();
    }
    let acked = emu.wait_acked_all(MINUTE);
    let journal = from.elapsed();
    let out = terminate(child);
    let log = text(&out);
    assert!(acked, "{log}");
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(journal >= least(records), "{records} records in {journal:?} under --max-ops-per-s {RATE}\n{log}");
    assert!(log.contains("rate caps on the target: --max-ops-per-s 1000"), "{log}");
    assert!(log.contains("batches of at most 100 (--batch-cmds lowered from 2000)"), "{log}");
    let mut c = srv.conn();
    let (diffs, compared, _) = compare(&expected(&emu), &read_all(&mut c), &mut c, 1000, &BTreeSet::new());
    assert!(diffs.is_empty(), "{} differences:\n{}", diffs.len(), diffs.join("\n"));
    assert_eq!(compared as u64, keys + 50);
}

#[test]
fn a_full_resync_under_a_filter_does_not_empty_the_target_unless_allowed() {
    let emu = Emulator::start(Config { shards: 2, ..Config::default() }).unwrap();
    emu.load(0, b"a:1", string("v"));
    emu.load(0, b"b:1", string("v"));
    let srv = RedisServer::start(&[]);
    redis::cmd("SET").arg("foreign:key").arg("mine").query::<()>(&mut srv.conn()).unwrap();
    let target = format!("redis://{}", srv.addr());
    let source = emu.addr().to_string();
    let args = ["replicate", "--source", &source, "--target", &target, "--include", "prefix:a:"];
    let child = df2redis(&args);
    assert!(wait_every_flow_acked(&emu, MINUTE), "the full sync did not complete");
    let out = terminate(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The master restarts with a new id: its checkpoints in the target cannot be resumed from.
    let port = emu.addr().port();
    emu.stop();
    let emu = Emulator::start_on(Config { shards: 2, ..Config::default() }, port).unwrap();
    emu.load(0, b"a:2", string("v"));
    let out = wait_exit(df2redis(&args), MINUTE);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("full resync: the checkpoints are from master"), "{log}");
    assert!(log.contains("would also delete keys the filter never copied (--include prefix:a:)"), "{log}");
    assert!(!log.contains("a new session starts"), "{log}");
    let kept: Option<String> = redis::cmd("GET").arg("foreign:key").query(&mut srv.conn()).unwrap();
    assert_eq!(kept.as_deref(), Some("mine"));

    // Allowed: the target is emptied and the new master's filtered keys copied.
    let child = df2redis(&[&args[..], &["--on-flush", "flush"]].concat());
    assert!(wait_every_flow_acked(&emu, MINUTE), "the full resync did not complete");
    let out = terminate(child);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("emptying the target first"), "{log}");
    let mut c = srv.conn();
    let keys: BTreeSet<Vec<u8>> = read_all(&mut c).remove(&0).unwrap_or_default().into_keys().collect();
    assert!(keys.contains(b"a:2".as_slice()) && !keys.contains(b"foreign:key".as_slice()), "{keys:?}");
    assert!(!keys.contains(b"a:1".as_slice()) && !keys.contains(b"b:1".as_slice()));
}
