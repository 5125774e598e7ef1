//! Exactly-once checkpoints on a Redis Cluster: the checkpoint scheme (`checkpoint::cluster`) is exact for any
//! prefix of the pipelines a crash leaves applied.
//!
//! A crash (df2redis killed, a connection dropped) leaves each node with a prefix of the bytes
//! it was sent: Redis applies the complete commands in it, in order. Here the prefixes are
//! made on purpose: a journal of commands that are unsafe to apply twice (INCR, LPUSH,
//! APPEND, HINCRBY, ZINCRBY) mixed with safe ones on the same keys (SET, HSET, DEL, MSET
//! across slots) is applied batch by batch through the real cluster target; at a chosen batch
//! each node instead gets a cut of the bytes the target would send it for that batch and the
//! next (two pipelines in flight), written on a raw socket that is then closed. A new target
//! connection reads the markers, resumes at the lowest, skips per slot what the nodes hold and
//! applies the rest in other batch sizes. The cluster must then equal a standalone server
//! that got every command exactly once. Every cut position is fair: mid-command, mid-script,
//! before or after the marker.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use common::redis_cluster::RedisCluster;
use common::redis_server::{compare, read_all, RedisServer};
use df2redis::checkpoint::cluster::SlotSkip;
use df2redis::checkpoint::{idempotent, Resume, ResumeAt, Stamp};
use df2redis::replay::Cmd;
use df2redis::target::{keyspec, Marks, Target};

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The journal: one command per record, record `i` has LSN `i`.
fn journal(r: &mut Rng, n: usize) -> Vec<Cmd> {
    (0..n)
        .map(|i| {
            let k = r.below(40);
            let v = format!("v{i}");
            let args: Vec<String> = match r.below(14) {
                0 => vec!["INCR".into(), format!("c:{k}")],
                1 => vec!["INCRBY".into(), format!("c:{k}"), "5".into()],
                2 => vec!["SET".into(), format!("c:{k}"), format!("{i}")],
                3 => vec!["LPUSH".into(), format!("l:{k}"), v],
                4 => vec!["RPUSH".into(), format!("l:{k}"), v.clone(), v],
                5 => vec!["DEL".into(), format!("l:{k}"), format!("s:{}", (k + 7) % 40)],
                6 => vec!["APPEND".into(), format!("s:{k}"), v],
                7 => vec!["SET".into(), format!("s:{k}"), v],
                8 => vec!["HSET".into(), format!("h:{k}"), format!("f{}", i % 3), format!("{i}")],
                9 => vec!["HINCRBY".into(), format!("h:{k}"), format!("f{}", i % 3), "2".into()],
                10 => vec!["HDEL".into(), format!("h:{k}"), format!("f{}", i % 3)],
                11 => vec!["ZADD".into(), format!("z:{k}"), format!("{}", i % 9), format!("m{}", i % 4)],
                12 => vec!["ZINCRBY".into(), format!("z:{k}"), "1".into(), format!("m{}", i % 4)],
                _ => vec!["MSET".into(), format!("s:{k}"), v.clone(), format!("s:{}", (k + 13) % 40), v],
            };
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            Cmd::new(0, &args)
        })
        .collect()
}

/// Apply records `from..to` of the journal as one checkpointed batch; records below a
/// resume's skip are left out as the flow threads do.
fn batch(journal: &[Cmd], from: usize, to: usize, skip: Option<&SlotSkip>) -> (Vec<Cmd>, Vec<u16>, Vec<bool>, Vec<u64>) {
    let mut cmds = Vec::new();
    let mut lsns = Vec::new();
    for (lsn, c) in journal.iter().enumerate().take(to).skip(from) {
        let at = cmds.len();
        cmds.push(c.clone());
        if let Some(s) = skip {
            s.filter(lsn as u64, &mut cmds, at);
        }
        lsns.resize(cmds.len(), lsn as u64);
    }
    let hints = cmds.iter().map(keyspec::slot_hint).collect();
    let unsafe_twice = cmds.iter().map(|c| !idempotent::replays_safely(&c.argv)).collect();
    (cmds, hints, unsafe_twice, lsns)
}

fn apply(t: &mut Target, journal: &[Cmd], from: usize, to: usize, skip: Option<&SlotSkip>) {
    let (cmds, hints, unsafe_twice, lsns) = batch(journal, from, to, skip);
    // As a writer does: a resumed flow's markers never go back below a master's own.
    let marks = Marks { stamp: stamp(to), unsafe_twice: &unsafe_twice, lsns: &lsns, resumed: skip };
    t.send_batch(&cmds, &hints, Some(&marks)).unwrap();
    t.recv(&cmds).unwrap();
}

fn stamp(next_lsn: usize) -> Stamp<'static> {
    Stamp { run: "cut", flow: 0, replid: "cut-test", flows: 1, next_lsn: next_lsn as u64 }
}

/// Write `bytes` to `addr` on a fresh connection, close it for writing and wait until the
/// server closed it too: every complete command in `bytes` is applied then.
fn apply_prefix(addr: &str, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
}

/// A crash with the pipelines of batches `bounds` (the next two) in flight: each node keeps a
/// prefix of the bytes it was sent, cut anywhere. Returns how many bytes each node was sent.
fn crash_in_flight(mut t: Target, journal: &[Cmd], bounds: &[usize], skip: Option<&SlotSkip>, r: &mut Rng) -> Vec<usize> {
    let mut sent: Vec<(String, Vec<u8>)> = Vec::new();
    for w in bounds.windows(2).take(2) {
        let (cmds, hints, unsafe_twice, lsns) = batch(journal, w[0], w[1], skip);
        let marks = Marks { stamp: stamp(w[1]), unsafe_twice: &unsafe_twice, lsns: &lsns, resumed: skip };
        for (addr, bytes) in t.encode_batch(&cmds, &hints, Some(&marks)).unwrap().unwrap() {
            match sent.iter_mut().find(|s| s.0 == addr) {
                Some(s) => s.1.extend_from_slice(&bytes),
                None => sent.push((addr, bytes)),
            }
        }
    }
    drop(t);
    for (addr, bytes) in &sent {
        let cut = match r.below(4) {
            0 => 0,
            1 => bytes.len(),
            _ => r.below(bytes.len() as u64 + 1) as usize,
        };
        apply_prefix(addr, &bytes[..cut]);
    }
    sent.iter().map(|s| s.1.len()).collect()
}

/// A new session's target connection, and where its markers say to resume.
fn resume(seeds: &[String], trial: usize) -> (Target, ResumeAt, Arc<SlotSkip>) {
    let mut t = Target::connect(seeds, None, None).unwrap();
    let Resume::At(at) = t.read_resume("cut", "cut-test", 1).unwrap() else { panic!("trial {trial}: markers unusable") };
    let skip = at.skip.as_ref().unwrap()[0].clone();
    (t, at, skip)
}

/// Every command of the journal, once, into the reference server; then the cluster must hold
/// the same.
fn assert_applied_once(cluster: &RedisCluster, reference: &mut redis::Connection, journal: &[Cmd], what: &str) {
    for c in journal {
        let mut cmd = redis::cmd(std::str::from_utf8(c.argv.get(0).unwrap()).unwrap());
        for a in c.argv.iter().skip(1) {
            cmd.arg(a);
        }
        cmd.query::<redis::Value>(reference).unwrap();
    }
    let (diffs, compared, _) = compare(&read_all(reference), &cluster.read_all(), reference, 1000, &Default::default());
    assert!(diffs.is_empty(), "{what}: {} differences:\n{}", diffs.len(), diffs.join("\n"));
    assert!(compared > 50, "{compared}");
}

/// A 3-master cluster, the reference server, and how many trials a test runs
/// (`DF2REDIS_CUT_TRIALS`, 40 by default).
fn servers() -> (RedisCluster, RedisServer, usize) {
    let trials = std::env::var("DF2REDIS_CUT_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    (RedisCluster::start(), RedisServer::start(&[]), trials)
}

/// Empty every master and the reference before a trial; the reference's connection.
fn flush_both(cluster: &RedisCluster, reference: &RedisServer) -> redis::Connection {
    for i in 0..3 {
        redis::cmd("FLUSHALL").query::<()>(&mut cluster.conn(i)).unwrap();
    }
    let mut conn = reference.conn();
    redis::cmd("FLUSHALL").query::<()>(&mut conn).unwrap();
    conn
}

#[test]
fn any_prefix_a_crash_leaves_on_the_nodes_resumes_exactly() {
    let (cluster, reference, trials) = servers();
    let seeds = vec![cluster.seed()];
    let mut r = Rng(0x9E3779B97F4A7C15);
    let (mut differing_markers, mut skipped_total) = (0, 0);
    for trial in 0..trials {
        let journal = journal(&mut r, 600);
        // Batch boundaries of the session that crashes.
        let mut bounds = vec![0usize];
        while *bounds.last().unwrap() < journal.len() {
            let next = (bounds.last().unwrap() + 20 + r.below(120) as usize).min(journal.len());
            bounds.push(next);
        }
        let mut reference_conn = flush_both(&cluster, &reference);

        let mut t = Target::connect(&seeds, None, None).unwrap();
        let crash = 1 + r.below(bounds.len() as u64 - 3) as usize;
        for w in bounds.windows(2).take(crash) {
            apply(&mut t, &journal, w[0], w[1], None);
        }
        let sent = crash_in_flight(t, &journal, &bounds[crash..], None, &mut r);

        // Resume: a new connection reads the markers.
        let (mut t, at, skip) = resume(&seeds, trial);
        if skip.until() > at.lsns[0] {
            differing_markers += 1;
        }
        let mut from = at.lsns[0] as usize;
        while from < journal.len() {
            let to = (from + 1 + r.below(200) as usize).min(journal.len());
            let (cmds, ..) = batch(&journal, from, to, Some(&skip));
            skipped_total += (to - from) - cmds.len().min(to - from);
            apply(&mut t, &journal, from, to, Some(&skip));
            from = to;
        }

        let what =
            format!("trial {trial}: crash at batch {crash} of {}, cuts of {sent:?} bytes, resumed at {}", bounds.len() - 1, at.lsns[0]);
        assert_applied_once(&cluster, &mut reference_conn, &journal, &what);
    }
    eprintln!("{trials} crashes: {differing_markers} left the nodes at different markers, {skipped_total} commands skipped on resume");
    assert!(differing_markers > trials / 4, "{differing_markers} of {trials}");
}

/// A second crash before the resumed session caught up. The first crash leaves the nodes at
/// different markers; the next session resumes at the lowest and leaves out, per node, what
/// the node holds. Its pipelines write every node's marker, so a marker must never go back
/// below what its node held before, or a crash then makes the next resume apply those records
/// on that node again (an INCR twice, an XADD refused).
#[test]
fn a_second_crash_before_the_resume_caught_up_resumes_exactly() {
    let (cluster, reference, trials) = servers();
    let seeds = vec![cluster.seed()];
    let mut r = Rng(0x2545F4914F6CDD1D);
    let mut in_window = 0;
    for trial in 0..trials {
        let journal = journal(&mut r, 600);
        let mut reference_conn = flush_both(&cluster, &reference);

        // The first session: applied up to 200, then crashed with two batches in flight.
        let mut t = Target::connect(&seeds, None, None).unwrap();
        apply(&mut t, &journal, 0, 200, None);
        let first = crash_in_flight(t, &journal, &[200, 200 + 20 + r.below(80) as usize, 350], None, &mut r);

        // The second: from the lowest marker, one batch applied while some node is still ahead
        // of it, then a crash with two more in flight.
        let (mut t, at, skip) = resume(&seeds, trial);
        let (low, until) = (at.lsns[0] as usize, skip.until() as usize);
        let mid = low + (until - low) / 2;
        if mid > low {
            in_window += 1;
            apply(&mut t, &journal, low, mid, Some(&skip));
        }
        let step = 1 + r.below(60) as usize;
        let second = crash_in_flight(t, &journal, &[mid, mid + step, mid + 2 * step], Some(&skip), &mut r);

        // The third resumes from the second's markers and applies the rest.
        let (mut t, at2, skip) = resume(&seeds, trial);
        let mut from = at2.lsns[0] as usize;
        while from < journal.len() {
            let to = (from + 1 + r.below(200) as usize).min(journal.len());
            apply(&mut t, &journal, from, to, Some(&skip));
            from = to;
        }
        let what = format!(
            "trial {trial}: first crash with {first:?} bytes in flight, resumed at {low} (nodes up to {until}), applied to {mid}, \
             second crash with {second:?} bytes in flight, resumed at {}",
            at2.lsns[0]
        );
        assert_applied_once(&cluster, &mut reference_conn, &journal, &what);
    }
    eprintln!("{trials} double crashes: {in_window} applied a batch while a node was ahead");
    assert!(in_window > trials / 4, "{in_window} of {trials}");
}

/// Lua passes at most ~8000 values to a call: a longer push runs in the script as several
/// pushes, in order; any other unsafe command that long is refused with its name.
#[test]
fn a_push_longer_than_a_script_call_takes_is_split_in_order() {
    let cluster = RedisCluster::start();
    let mut t = Target::connect(&[cluster.seed()], None, None).unwrap();
    let elems: Vec<String> = (0..9000).map(|i| format!("e{i}")).collect();
    let mut push: Vec<&[u8]> = vec![b"RPUSH", b"biglist"];
    push.extend(elems.iter().map(|e| e.as_bytes()));
    let cmds = vec![Cmd::new(0, &[b"INCR", b"biglist:n"]), Cmd::new(0, &push)];
    let hints: Vec<u16> = cmds.iter().map(keyspec::slot_hint).collect();
    let marks = Marks { stamp: stamp(2), unsafe_twice: &[true, true], lsns: &[0, 1], resumed: None };
    t.send_batch(&cmds, &hints, Some(&marks)).unwrap();
    t.recv(&cmds).unwrap();
    let node = cluster.owner(df2redis::target::slots::key_slot(b"biglist"));
    let got: Vec<String> = redis::cmd("LRANGE").arg("biglist").arg(0).arg(-1).query(&mut cluster.conn(node)).unwrap();
    assert_eq!(got, elems);

    let mut set: Vec<&[u8]> = vec![b"SADD", b"bigset"];
    set.extend(elems.iter().map(|e| e.as_bytes()));
    let cmds = vec![Cmd::new(0, &set)];
    let hints: Vec<u16> = cmds.iter().map(keyspec::slot_hint).collect();
    let marks = Marks { stamp: stamp(3), unsafe_twice: &[true], lsns: &[2], resumed: None };
    let e = t.send_batch(&cmds, &hints, Some(&marks)).unwrap_err().to_string();
    assert!(e.contains("SADD") && e.contains("--checkpoints off"), "{e}");
}
