//! A live journal of non-idempotent commands on the emulator, and waiting on its ACKs: a
//! record applied twice (an extra INCR, a duplicated list element) or lost shows up as a
//! difference between the target and the master.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use df2redis::emulator::Emulator;

use super::run::{df2redis, terminate, text};

/// Keep writing INCR, LPUSH, APPEND and XADD until `stop`; returns how many were written.
pub fn journal_writer(emu: Arc<Emulator>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    spawn_writer(emu, stop, |_, n| {
        let k = n % 97;
        let v = format!("v{n}");
        match n % 4 {
            0 => vec!["INCR".into(), format!("ctr:{k}")],
            1 => vec!["LPUSH".into(), format!("list:{}", k % 13), v],
            2 => vec!["APPEND".into(), format!("str:{}", k % 11), v],
            _ => vec!["XADD".into(), format!("stream:{}", k % 7), "*".into(), "n".into(), v],
        }
    })
}

/// [`journal_writer`]'s commands interleaved, on the same keys, with commands that are safe to
/// apply twice (SET, HSET, DEL, SADD), INCRBY, and every 450th step a RENAME between two slots
/// of one emulator shard (journaled as it is): on a cluster target the first kind runs in the
/// checkpoint script, the second as plain pipelined commands, the RENAME by DUMP/RESTORE.
/// Values are ~200 bytes: pipelines of tens of KB, which Redis reads in pieces.
pub fn mixed_journal_writer(emu: Arc<Emulator>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let pad = "p".repeat(200);
    spawn_writer(emu, stop, move |emu, n| {
        let k = n % 97;
        let v = format!("v{n}{pad}");
        match n % 9 {
            0 => vec!["INCR".into(), format!("ctr:{k}")],
            1 => vec!["LPUSH".into(), format!("list:{}", k % 13), v],
            2 => vec!["APPEND".into(), format!("str:{}", k % 11), v],
            3 => vec!["XADD".into(), format!("stream:{}", k % 7), "*".into(), "n".into(), v],
            4 => vec!["SET".into(), format!("ctr:{}", (k + 1) % 97), format!("{n}")],
            5 => vec!["HSET".into(), format!("h:{}", k % 17), format!("f{}", k % 5), v],
            6 => vec!["DEL".into(), format!("list:{}", (k + 3) % 13), format!("str:{}", (k + 5) % 11)],
            7 => vec!["SADD".into(), format!("set:{}", k % 19), format!("m{}", n % 50)],
            _ if n % 50 == 8 => {
                let (a, b) = same_shard_other_slot(emu, n);
                emu.write(0, &[b"SET", a.as_bytes(), v.as_bytes()]).unwrap();
                vec!["RENAME".into(), a, b]
            }
            _ => vec!["INCRBY".into(), format!("ctr:{}", (k + 2) % 97), "3".into()],
        }
    })
}

/// A thread writing `op(emu, n)` for n = 0, 1, ... to db 0 until `stop`; returns how many.
fn spawn_writer(
    emu: Arc<Emulator>,
    stop: Arc<AtomicBool>,
    mut op: impl FnMut(&Emulator, u64) -> Vec<String> + Send + 'static,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let op = op(&emu, n);
            let args: Vec<&[u8]> = op.iter().map(|a| a.as_bytes()).collect();
            emu.write(0, &args).unwrap();
            n += 1;
        }
        n
    })
}

/// Two keys on one emulator shard in different cluster slots.
fn same_shard_other_slot(emu: &Emulator, n: u64) -> (String, String) {
    use df2redis::target::slots::key_slot;
    let a = format!("rn:{n}:src");
    (0..)
        .map(|j| format!("rn:{n}:dst{j}"))
        .find(|b| emu.shard_of(a.as_bytes()) == emu.shard_of(b.as_bytes()) && key_slot(a.as_bytes()) != key_slot(b.as_bytes()))
        .map(|b| (a, b))
        .unwrap()
}

/// Wait (polling the emulator's ACK record, bounded) until the flows of its latest session
/// together acknowledged `more` records beyond `from`.
pub fn wait_acked_beyond(emu: &Emulator, from: u64, more: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if emu.acked().iter().sum::<u64>() >= from + more {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// Wait (bounded) until every flow of the emulator's latest session acknowledged something:
/// its end of the full sync is applied (and, with checkpoints, its marker written).
pub fn wait_every_flow_acked(emu: &Emulator, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if emu.acked().iter().all(|&a| a > 0) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// SIGKILL by PID; the run's output.
pub fn kill9(child: std::process::Child) -> String {
    let st = std::process::Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    text(&child.wait_with_output().unwrap())
}

/// Start `replicate`, then wait (bounded) until its session exists, every flow's marker
/// exists (an ACK follows it) and then a spread of 1 to 3000 further records are
/// acknowledged, the count drawn from `seed` (xorshift): a deterministic spread of moments for
/// the kill. Returns the run, the count, and whether it was reached.
pub fn start_and_wait_spread(emu: &Emulator, args: &[&str], seed: &mut u64) -> (std::process::Child, u64, bool) {
    let sessions = emu.sessions_created();
    let child = df2redis(args);
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let more = 1 + *seed % 3000;
    // Counted from the new run's own ACKs: those a killed run had sent can still be read by
    // the emulator after the kill, and with a small spread they alone would end the wait
    // before the new run even connected.
    let reached = poll(Duration::from_secs(60), || emu.sessions_created() > sessions)
        && wait_every_flow_acked(emu, Duration::from_secs(60))
        && wait_acked_beyond(emu, emu.acked().iter().sum::<u64>(), more, Duration::from_secs(60));
    (child, more, reached)
}

/// The last run of a kill series: the journal writer stops, everything is acknowledged, then
/// SIGTERM; the run must exit 0. Returns how many records the writer wrote, and the log.
pub fn last_run(emu: &Emulator, args: &[&str], stop: &AtomicBool, writer: std::thread::JoinHandle<u64>) -> (u64, String) {
    let child = df2redis(args);
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    assert!(emu.wait_acked_all(Duration::from_secs(60)), "not every LSN acknowledged: {:?} vs {:?}", emu.acked(), emu.lsns());
    let out = terminate(child);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    (written, log)
}

/// Poll (bounded) until `pred` holds.
pub fn poll(within: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// An emulated master (2 shards, a deep backlog) whose keys all start with `prefix`: `keys`
/// strings and 20 lists. Several of them share one target without overlapping keys.
pub fn prefixed_master(prefix: &str, keys: usize) -> Arc<Emulator> {
    let cfg = df2redis::emulator::Config { shards: 2, backlog_len: 1 << 20, ..Default::default() };
    let emu = Arc::new(Emulator::start(cfg).unwrap());
    for i in 0..keys {
        emu.write(0, &[b"SET", format!("{prefix}s:{i}").as_bytes(), format!("v{i}").as_bytes()]).unwrap();
        emu.write(0, &[b"RPUSH", format!("{prefix}l:{}", i % 20).as_bytes(), format!("e{i}").as_bytes()]).unwrap();
    }
    emu
}

/// Keep writing non-idempotent commands (INCR, LPUSH) on `prefix` keys until `stop`.
pub fn prefixed_writer(emu: Arc<Emulator>, prefix: &'static str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let k = n % 31;
            let (a, b) = (format!("{prefix}ctr:{k}"), format!("{prefix}list:{}", k % 7));
            let r = if n % 2 == 0 { emu.write(0, &[b"INCR", a.as_bytes()]) } else { emu.write(0, &[b"LPUSH", b.as_bytes(), b"x"]) };
            r.unwrap();
            n += 1;
            if n % 64 == 0 {
                // Pace the journal (a few thousand records a second), not a synchronization.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        n
    })
}

/// Two masters' data together (their keys are disjoint).
pub fn union_of(a: &Emulator, b: &Emulator) -> super::Dataset {
    let mut all = super::emulator_model::expected(a);
    for (db, keys) in super::emulator_model::expected(b) {
        all.entry(db).or_default().extend(keys);
    }
    all
}
