//! What no retry can fix ends the run at once: a source that is not a Dragonfly master (exit 2),
//! and a source or target that cannot be reached before any session started (exit 1), each
//! with the address and the cause. `replicate --wait-for-source` (or its file key) keeps
//! retrying the source instead, and connects once the master is there.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::emulator_model::expected;
use common::redis_server::{compare, free_port, read_all, RedisServer, ServerKind, TempDir};
use common::run::{df2redis, text, wait_bounded};
use df2redis::emulator::{datasets, Config, Emulator};

/// A fast failure returns well within this; today's retries would take 10 minutes.
const PROMPTLY: Duration = Duration::from_secs(10);

fn run(args: &[&str], what: &str) -> (Output, String) {
    let out = wait_bounded(df2redis(args), PROMPTLY, what);
    let log = text(&out);
    (out, log)
}

fn assert_not_dragonfly(kind: ServerKind, product: &str) {
    let srv = RedisServer::start_kind(kind, &[]);
    let (addr, target) = (srv.addr(), format!("redis://{}", srv.addr()));
    for cmd in ["migrate", "replicate"] {
        let (out, log) = run(&[cmd, "--source", &addr, "--target", &target], "a source that is not a Dragonfly master");
        assert_eq!(out.status.code(), Some(2), "{cmd}: {log}");
        assert!(log.contains(&format!("error: source {addr} is not a Dragonfly master")), "{cmd}: {log}");
        assert!(log.contains("answered `REPLCONF capa dragonfly` with +OK"), "{cmd}: {log}");
        assert!(log.contains(product), "{cmd}: {log}");
        assert!(!log.contains("a new session starts"), "{cmd}: {log}");
    }
}

#[test]
fn a_redis_server_as_the_source_is_a_usage_error() {
    assert_not_dragonfly(ServerKind::Redis7, "a Redis server: INFO SERVER reports redis_version:7.");
}

#[test]
fn a_valkey_server_as_the_source_is_a_usage_error() {
    assert_not_dragonfly(ServerKind::Valkey8, "a Valkey server: INFO SERVER reports valkey_version:8.");
}

#[test]
fn a_source_nobody_listens_on_fails_at_once_without_wait_for_source() {
    let srv = RedisServer::start(&[]);
    let source = format!("127.0.0.1:{}", free_port());
    let target = format!("redis://{}", srv.addr());
    for cmd in ["migrate", "replicate"] {
        let (out, log) = run(&[cmd, "--source", &source, "--target", &target], "connection refused by the source");
        assert_eq!(out.status.code(), Some(1), "{cmd}: {log}");
        assert!(
            log.contains(&format!("error: cannot reach the source: main connection to {source}: Connection refused")),
            "{cmd}: {log}"
        );
        assert!(log.contains("No session has started, so this is not retried (check --source"), "{cmd}: {log}");
        assert_eq!(log.contains("--wait-for-source"), cmd == "replicate", "the hint is replicate's: {log}");
        assert!(!log.contains("a new session starts"), "{cmd}: {log}");
        assert!(!log.contains("summary ----"), "no flow was opened, nothing to sum up: {log}");
    }
    // migrate has no such flag.
    let (out, log) = run(&["migrate", "--source", &source, "--target", &target, "--wait-for-source"], "a usage error");
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("--wait-for-source"), "{log}");
}

#[test]
fn a_target_nobody_listens_on_fails_at_once_even_with_wait_for_source() {
    let emu = Emulator::start(Config { shards: 2, ..Config::default() }).unwrap();
    datasets::small(&emu, 10);
    let source = emu.addr().to_string();
    let target_addr = format!("127.0.0.1:{}", free_port());
    let target = format!("redis://{target_addr}");
    for args in [vec!["migrate"], vec!["replicate"], vec!["replicate", "--wait-for-source"]] {
        let mut a = args.clone();
        a.extend(["--source", &source, "--target", &target]);
        let (out, log) = run(&a, "connection refused by the target");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {log}");
        assert!(
            log.contains(&format!("error: cannot reach the target: target {target_addr}: Connection refused")),
            "{args:?}: {log}"
        );
        assert!(log.contains("not retried (check --target)"), "{args:?}: {log}");
        assert!(!log.contains("a new session starts"), "{args:?}: {log}");
    }
    assert_eq!(emu.sessions_created(), 0, "the master was never asked for a session");
}

/// The file key: replicate retries the absent source, then replicates once the master is up.
#[test]
fn wait_for_source_retries_until_the_master_is_up() {
    let srv = RedisServer::start(&[]);
    let port = free_port();
    let dir = TempDir::new("wait-for-source");
    let ini = dir.0.join("df2redis.ini");
    std::fs::write(
        &ini,
        format!("[source]\naddr = 127.0.0.1:{port}\n[target]\nurl = redis://{}\n[retry]\nwait_for_source = on\nbackoff_ms = 50\n", srv.addr()),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_df2redis"))
        .args(["replicate", "--config", ini.to_str().unwrap(), "--progress-secs", "1"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    // Awaited: df2redis announcing that it will try the absent source again.
    let deadline = Instant::now() + PROMPTLY;
    let retrying = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.contains("a new session starts in") => break l,
            Ok(_) => {}
            Err(e) => {
                let _ = child.kill(); // by PID
                panic!("no retry announced within {PROMPTLY:?} ({e})");
            }
        }
    };

    let emu = Emulator::start_on(Config { shards: 2, ..Config::default() }, port).unwrap();
    // Written through the journal: whether they arrive in the snapshot or after it.
    for i in 0..50 {
        emu.write(0, &[b"SET", format!("k:{i}").as_bytes(), b"v"]).unwrap();
    }
    let acked = emu.wait_acked_all(Duration::from_secs(60));
    let st = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(retrying.contains(&format!("main connection to 127.0.0.1:{port}: Connection refused")), "{retrying}");
    assert!(acked, "the master was never caught up with: {log}");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("full sync started on 2 flows"), "{log}");
    let mut c = srv.conn();
    let (diffs, compared, _) = compare(&expected(&emu), &read_all(&mut c), &mut c, 1000, &BTreeSet::new());
    assert!(diffs.is_empty() && compared == 50, "{compared} keys compared, differences: {diffs:?}\n{log}");
}
