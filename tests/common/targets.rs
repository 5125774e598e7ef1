//! The end-to-end scenarios of the Redis 7 tests, run against another kind of target server
//! (Redis 6.2, Valkey 8.1), standalone and as a 3-master cluster: `migrate` and `replicate`
//! from the emulator with every type and a live journal, `df2redis check` of the copy, resumes
//! after kill -9 of df2redis and after a crash of the target. targets_redis62.rs and
//! targets_valkey.rs run them; what a kind cannot hold is asserted from the run's summary.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use df2redis::emulator::{datasets, Config, Emulator, Value};
use serde_json::Value as Json;

use super::emulator_model::expected;
use super::live::{
    journal_writer, kill9, last_run, mixed_journal_writer, poll, start_and_wait_spread, wait_acked_beyond, wait_every_flow_acked,
};
use super::redis_cluster::RedisCluster;
use super::redis_server::{compare, now_ms, read_all, RedisServer, ServerKind, TempDir, NOT_HELD, NOT_HELD_ID};
use super::run::{df2redis, terminate, text};
use super::Dataset;

const MINUTE: Duration = Duration::from_secs(60);

/// The summary's reasons for what a target before Redis 7.0 cannot hold.
pub const STREAM_META: &str = "stream entries-added counter and max-deleted-id not kept (target before Redis 7.0)";
pub const ENTRIES_READ: &str = "stream consumer group entries-read not kept (target before Redis 7.0)";

/// A standalone server or a 3-master cluster, every node of one kind (checked at start).
pub enum Target {
    One(RedisServer),
    Cluster(RedisCluster),
}

impl Target {
    /// A cluster whose masters are of several kinds (one per entry of `kinds`).
    pub fn mixed_cluster(kinds: &[ServerKind]) -> Target {
        Target::Cluster(RedisCluster::start_kinds(kinds, Vec::new))
    }

    pub fn start(kind: ServerKind, cluster: bool, extra: &[&str]) -> Target {
        if cluster {
            let more: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            Target::Cluster(RedisCluster::start_kind_with(kind, move || more.clone()))
        } else {
            Target::One(RedisServer::start_kind(kind, extra))
        }
    }

    pub fn url(&self) -> String {
        match self {
            Target::One(s) => format!("redis://{}", s.addr()),
            Target::Cluster(c) => format!("redis://{}", c.seed()),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }

    /// df2redis arguments a cluster target needs: the emulator's dbs 0-2 merged into db 0.
    pub fn db_map(&self) -> Vec<&'static str> {
        if self.is_cluster() {
            vec!["--db-map", "0:0,1:0,2:0"]
        } else {
            Vec::new()
        }
    }

    /// Assert the target holds the emulator's data (Dragonfly-only types, skipped by policy,
    /// not judged); returns how many keys were compared.
    pub fn assert_holds(&self, emu: &Emulator, what: &str, log: &str) -> usize {
        self.assert_holds_as(emu, what, log, false)
    }

    /// [`assert_holds`](Self::assert_holds); with `meta_not_held`, the streams' 7.0 metadata
    /// (entries-added, max-deleted-id, groups' entries-read) is not compared on any node: df2redis
    /// leaves it out for the least capable master's sake, and a Redis 7 node then derives its
    /// own from the entries written.
    pub fn assert_holds_as(&self, emu: &Emulator, what: &str, log: &str, meta_not_held: bool) -> usize {
        let mut exp = expected(emu);
        if self.is_cluster() {
            exp = super::merged(exp);
        }
        let not_judged: BTreeSet<(u32, Vec<u8>)> = exp
            .iter()
            .flat_map(|(db, m)| m.iter().filter(|(_, k)| k.ty == "dragonfly-only").map(move |(k, _)| (*db, k.clone())))
            .collect();
        // PFCOUNT of expected HyperLogLogs runs on a scratch server for a cluster.
        let (actual, diffs, compared) = match self {
            Target::One(s) => {
                let mut c = s.conn();
                let act = read_all(&mut c);
                let (d, n, _) = compare(&exp, &act, &mut c, 1000, &not_judged);
                (act, d, n)
            }
            Target::Cluster(cl) => {
                let mut act = cl.read_all();
                if meta_not_held {
                    forget_stream_meta(&mut act);
                }
                let scratch = RedisServer::start(&[]);
                let (d, n, _) = compare(&exp, &act, &mut scratch.conn(), 1000, &not_judged);
                (act, d, n)
            }
        };
        assert!(diffs.is_empty(), "{what}: {} differences:\n{}\n---- log:\n{log}", diffs.len(), diffs.join("\n"));
        assert!(!actual.is_empty(), "{what}: the target is empty");
        compared
    }
}

/// Read every stream's 7.0 metadata as a server before 7.0 shows it: not held.
fn forget_stream_meta(ds: &mut Dataset) {
    for k in ds.values_mut().flat_map(|m| m.values_mut()) {
        if let super::Val::Stream(s) = &mut k.val {
            s.entries_added = NOT_HELD;
            s.max_deleted_id = NOT_HELD_ID.to_string();
            for g in &mut s.groups {
                g.entries_read = Some(NOT_HELD);
            }
        }
    }
}

/// The summary's `altered: N x reason` lines.
pub fn altered(log: &str) -> BTreeMap<String, u64> {
    log.lines()
        .filter_map(|l| l.strip_prefix("altered: "))
        .filter_map(|l| l.split_once(" x "))
        .map(|(n, reason)| (reason.to_string(), n.trim().parse().unwrap()))
        .collect()
}

/// Streams in the emulator's data now, and their groups whose entries-read is known: what a
/// snapshot taken now makes a target before 7.0 leave out.
pub fn stream_meta_now(emu: &Emulator) -> (u64, u64) {
    let (mut streams, mut groups) = (0, 0);
    for keys in emu.data().values() {
        for e in keys.values() {
            if let Value::Stream(s) = &e.value {
                streams += 1;
                groups += s.groups.iter().filter(|g| g.entries_read >= 0).count() as u64;
            }
        }
    }
    (streams, groups)
}

/// The summary counts what `kind` cannot hold, exactly: for Redis 6.2 `streams` streams
/// without their entries-added / max-deleted-id and `groups` groups without entries-read;
/// for the others nothing of the kind.
pub fn assert_altered(kind: ServerKind, log: &str, streams: u64, groups: u64) {
    // The run names what it found (INFO server): the product and its version.
    let announced = match kind {
        ServerKind::Valkey8 => ": Valkey 8.1.",
        ServerKind::Redis62 => ": Redis 6.2.",
        _ => ": Redis 7.",
    };
    assert!(log.lines().any(|l| l.contains("target 127.0.0.1:") && l.contains(announced)), "expected {announced:?}:\n{log}");
    let a = altered(log);
    if kind == ServerKind::Redis62 {
        assert!(streams > 0 && groups > 0, "the scenario must hold streams and groups with entries-read");
        assert_eq!(a.get(STREAM_META), Some(&streams), "{a:?}\n{log}");
        assert_eq!(a.get(ENTRIES_READ), Some(&groups), "{a:?}\n{log}");
        assert!(log.contains("target speaks Redis 6.2"), "{log}");
    } else {
        assert!(a.keys().all(|r| !r.contains("before Redis 7.0")), "{a:?}\n{log}");
    }
}

/// `migrate` of every type, with writes during the snapshot and after its cut, then `df2redis
/// check` of the copy: the only differences it reports are the Dragonfly-only keys the
/// policy skips, as missing.
pub fn migrate_every_type_then_check(kind: ServerKind, cluster: bool) {
    let emu = Emulator::start(Config { shards: 4, pause_snapshot_after: Some(10), hold_startstable: true, ..Config::default() }).unwrap();
    datasets::every_type(&emu);
    for db in 1..=2u32 {
        for i in 0..50 {
            emu.write(db, &[b"SET", format!("db{db}:k{i}").as_bytes(), b"v", b"EX", b"3600"]).unwrap();
        }
    }
    let (streams, groups) = stream_meta_now(&emu);
    let t = Target::start(kind, cluster, &[]);
    let (source, url) = (emu.addr().to_string(), t.url());
    let mut args = vec!["migrate", "--source", &source, "--target", &url];
    args.extend(t.db_map());
    let child = df2redis(&args);
    assert!(emu.wait_snapshot_paused(MINUTE), "the snapshot never paused");
    for i in 0..200 {
        emu.write(0, &[b"SET", format!("during:{i}").as_bytes(), format!("v{i}").as_bytes()]).unwrap();
        emu.write(0, &[b"HSET", b"during:hash", format!("f{i}").as_bytes(), b"x"]).unwrap();
    }
    emu.write(0, &[b"DEL", b"during:1", b"during:2"]).unwrap();
    emu.resume_snapshot();
    assert!(emu.wait_fullsync_end(Duration::from_secs(120)), "no FULLSYNC_END");
    for i in 0..100 {
        emu.write(0, &[b"SET", format!("postcut:{i}").as_bytes(), b"x", b"PX", b"3600000"]).unwrap();
    }
    emu.release_startstable();
    let out = child.wait_with_output().unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    let n = t.assert_holds(&emu, "migrate", &log);
    assert!(n > 300, "{n}");
    assert_altered(kind, &log, streams, groups);

    let dir = TempDir::new("targets-check");
    let report = dir.0.join("report.json").to_string_lossy().into_owned();
    let mut args = vec!["check", "--source", &source, "--target", &url, "--report", &report];
    args.extend(t.db_map());
    let out = df2redis(&args).wait_with_output().unwrap();
    let log = text(&out);
    let v: Json = serde_json::from_str(&std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("no report ({e}): {log}"))).unwrap();
    // Keys are listed under their source db (a cluster's too).
    let skipped: BTreeSet<(u64, String)> = emu
        .data()
        .iter()
        .flat_map(|(db, m)| {
            m.iter()
                .filter(|(_, e)| matches!(e.value, Value::Json(_) | Value::Opaque { .. }))
                .map(move |(k, _)| (*db as u64, String::from_utf8_lossy(k).into_owned()))
        })
        .collect();
    let mut reported = BTreeSet::new();
    for d in v["source_dbs"].as_array().unwrap() {
        for cat in ["type", "value", "ttl"] {
            assert_eq!(d[cat]["count"], 0, "check: {cat} differences in {d}\n{log}");
        }
        for k in d["missing"]["keys"].as_array().unwrap() {
            reported.insert((d["db"].as_u64().unwrap(), k["key"].as_str().unwrap().to_string()));
        }
    }
    for d in v["target_dbs"].as_array().unwrap() {
        assert_eq!(d["extra"]["count"], 0, "check: extra keys in {d}\n{log}");
    }
    assert!(!skipped.is_empty());
    assert_eq!(reported, skipped, "check: the missing keys are exactly the skipped Dragonfly-only ones\n{log}");
    assert!(v["totals"]["source_keys_checked"].as_u64().unwrap() > 300, "{v}");
}

/// `replicate` with a live journal of every kind of record (plain and counter writes,
/// hashes, lists, sorted sets, cross-shard MSET and DEL, streams and a consumer group with
/// entries-read, TTLs and expiry, FLUSHDB in db 1); every LSN is acknowledged and the target
/// ends equal to the master.
pub fn replicate_live_journal(kind: ServerKind, cluster: bool) {
    let emu = Emulator::start(Config { shards: 4, ..Config::default() }).unwrap();
    datasets::every_type(&emu);
    datasets::small(&emu, 1000);
    let (streams, groups) = stream_meta_now(&emu);
    let t = Target::start(kind, cluster, &[]);
    let (source, url) = (emu.addr().to_string(), t.url());
    let mut args = vec!["replicate", "--source", &source, "--target", &url, "--progress-secs", "1"];
    args.extend(t.db_map());
    let child = df2redis(&args);
    assert!(emu.wait_fullsync_end(MINUTE), "no FULLSYNC_END");
    let w = |db: u32, args: &[&str]| emu.write(db, &args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>()).unwrap();
    for i in 0..3000u32 {
        w(0, &["SET", &format!("j:{}", i % 500), &format!("v{i}")]);
        w(0, &["INCR", &format!("ctr:{}", i % 97)]);
        w(0, &["HSET", &format!("h:{}", i % 50), &format!("f{}", i % 20), &i.to_string()]);
        w(0, &["LPUSH", &format!("l:{}", i % 30), &i.to_string()]);
        w(0, &["ZADD", &format!("z:{}", i % 40), &format!("{}.25", i % 1000), &format!("m{}", i % 300)]);
        w(0, &["MSET", &format!("ms:{}", i % 500), "a", &format!("ms:{}", (i + 7) % 500), "b"]);
        w(0, &["XADD", &format!("x:{}", i % 10), "*", "i", &i.to_string()]);
        if i % 3 == 0 {
            w(0, &["DEL", &format!("ms:{}", i % 500), &format!("j:{}", (i + 1) % 500)]);
        }
        if i % 10 == 0 {
            w(0, &["SET", &format!("ttl:{i}"), "t", "PXAT", &now_ms().to_string()]);
            w(1, &["SET", &format!("one:{}", i % 100), "x"]);
        }
        if i % 1000 == 0 {
            w(0, &["PEXPIREAT", &format!("h:{}", i % 50), &(now_ms() + 3_600_000).to_string()]);
        }
        if i == 1500 && !cluster {
            w(1, &["FLUSHDB"]);
        }
    }
    // One more group whose entries-read a target before 7.0 cannot hold.
    w(0, &["XGROUP", "CREATE", "x:1", "g", "0", "ENTRIESREAD", "0"]);
    emu.expire_now();
    let acked = emu.wait_acked_all(Duration::from_secs(120));
    let out = terminate(child);
    let log = text(&out);
    assert!(acked, "ACKs {:?} never reached the LSNs {:?}\n{log}", emu.acked(), emu.lsns());
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    if !cluster {
        assert!(log.contains("running FLUSHDB"), "the global command ran once: {log}");
    }
    t.assert_holds(&emu, "replicate", &log);
    assert_altered(kind, &log, streams, groups + 1);
}

/// `rounds` runs of `replicate` killed with SIGKILL at a spread of moments of a live journal
/// of non-idempotent commands (on a cluster interleaved with safe ones and cross-slot
/// RENAMEs), then a last run stopped cleanly: every restart resumes from the target's
/// checkpoints and the target ends equal to the master, nothing applied twice or lost.
pub fn kill_9_resumes_exactly_once(kind: ServerKind, cluster: bool, rounds: usize) {
    let emu = Arc::new(Emulator::start(Config { shards: 4, backlog_len: 1 << 20, ..Config::default() }).unwrap());
    datasets::small(&emu, 500);
    let t = Target::start(kind, cluster, &[]);
    let (source, url) = (emu.addr().to_string(), t.url());
    let args = ["replicate", "--source", &source, "--target", &url, "--progress-secs", "1"];
    let stop = Arc::new(AtomicBool::new(false));
    let writer = if cluster { mixed_journal_writer(emu.clone(), stop.clone()) } else { journal_writer(emu.clone(), stop.clone()) };
    let mut seed = 0x9E3779B97F4A7C15u64 ^ rounds as u64;
    for round in 0..rounds {
        let (child, more, reached) = start_and_wait_spread(&emu, &args, &mut seed);
        let log = kill9(child);
        assert!(reached, "round {round}: df2redis never acknowledged {more} more records:\n{log}");
        assert!(round == 0 || log.contains("resuming from the target's checkpoints"), "round {round} did not resume:\n{log}");
    }
    let (written, log) = last_run(&emu, &args, &stop, writer);
    assert!(log.contains("resuming from the target's checkpoints"), "{log}");
    assert!(written > 0);
    let n = t.assert_holds(&emu, &format!("after {rounds} kills and {written} writes"), &log);
    assert!(n >= 500 + 97, "{n}");
}

/// The target (every node with `appendfsync always`) is killed during the journal and
/// restarted: its checkpoints survive with its data, the next session resumes from them
/// (no full resync) and the target ends equal to the master.
pub fn target_crash_resumes_from_its_checkpoints(kind: ServerKind, cluster: bool) {
    let emu = Arc::new(Emulator::start(Config { shards: 4, backlog_len: 1 << 20, ..Config::default() }).unwrap());
    datasets::small(&emu, 1000);
    let durable = ["--appendonly", "yes", "--appendfsync", "always"];
    let mut t = Target::start(kind, cluster, &durable);
    let (source, url) = (emu.addr().to_string(), t.url());
    let child = df2redis(&["replicate", "--source", &source, "--target", &url, "--retry-backoff-ms", "50", "--progress-secs", "1"]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = if cluster { mixed_journal_writer(emu.clone(), stop.clone()) } else { journal_writer(emu.clone(), stop.clone()) };
    assert!(wait_every_flow_acked(&emu, MINUTE) && wait_acked_beyond(&emu, 0, 3000, MINUTE), "no journal progress");
    match &mut t {
        Target::One(s) => s.crash_and_restart(&durable),
        Target::Cluster(c) => {
            c.nodes[1].crash_and_restart();
            c.wait_consistent();
        }
    }
    let base = emu.acked().iter().sum::<u64>();
    assert!(wait_acked_beyond(&emu, base, 3000, MINUTE), "no journal progress after the crash");
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let acked = emu.wait_acked_all(MINUTE);
    let out = terminate(child);
    let log = text(&out);
    assert!(acked, "not every LSN acknowledged: {:?} vs {:?}\n{log}", emu.acked(), emu.lsns());
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("a new session starts in"), "{log}");
    assert!(log.contains("resuming from the target's checkpoints"), "{log}");
    assert!(!log.contains("full resync"), "{log}");
    let n = t.assert_holds(&emu, "after the target's crash", &log);
    assert!(n >= 1000, "{n}");
}

/// A writer that crashed or whose session ended can leave pipelines on the target that the
/// server received and has not run yet (here held by CLIENT PAUSE); run after a new session
/// read the markers, they would apply records twice. A new session closes such connections
/// (named `df2redis-writer-<run name>`, found in `CLIENT LIST`, whose format differs between
/// versions) first: what they held is dropped. Another run's writers are left alone.
pub fn stale_writer_is_closed(kind: ServerKind) {
    use std::io::{Read, Write};

    let srv = RedisServer::start_kind(kind, &[]);
    let mut old = std::net::TcpStream::connect(srv.addr()).unwrap();
    let setname = |conn: &mut std::net::TcpStream, name: &str| {
        conn.write_all(format!("*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n${}\r\n{name}\r\n", name.len()).as_bytes()).unwrap();
        let mut ok = [0u8; 5];
        conn.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"+OK\r\n");
    };
    setname(&mut old, &df2redis::checkpoint::name::writer_name("r1"));
    let mut other = std::net::TcpStream::connect(srv.addr()).unwrap();
    setname(&mut other, &df2redis::checkpoint::name::writer_name("r2"));
    let mut c = srv.conn();
    redis::cmd("CLIENT").arg("PAUSE").arg(30_000).arg("WRITE").query::<()>(&mut c).unwrap();
    old.write_all(&b"*2\r\n$4\r\nINCR\r\n$3\r\nctr\r\n".repeat(100)).unwrap();
    // The first INCR waits for the pause to end (flag b: blocked), the rest behind it.
    assert!(poll(Duration::from_secs(10), || {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
        list.lines().any(|l| l.contains("name=df2redis-writer-r1") && l.contains(" flags=b"))
    }));
    let mut t = df2redis::target::Target::connect(&[srv.addr()], None, None).unwrap();
    assert_eq!(t.close_stale_writers("r1", false).unwrap(), Some(1));
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    assert!(list.contains("name=df2redis-writer-r2"), "run r2's writer must stay open:\n{list}");
    drop(other);
    redis::cmd("CLIENT").arg("UNPAUSE").query::<()>(&mut c).unwrap();
    // The old connection is closed: it answers nothing more (a live one would answer the
    // INCRs within the timeout).
    old.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut replies = Vec::new();
    let _ = old.read_to_end(&mut replies);
    assert!(replies.is_empty(), "the earlier writer's INCRs ran: {}", String::from_utf8_lossy(&replies));
    let v: Option<i64> = redis::cmd("GET").arg("ctr").query(&mut c).unwrap();
    assert_eq!(v, None, "the earlier writer's queued INCRs ran");
}
