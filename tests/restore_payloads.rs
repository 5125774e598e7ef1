//! Full sync through RESTORE payloads: each target version gets the encodings it loads (and
//! commands for the rest), the result is exact with RESTORE on and off, keys already on the
//! target are replaced, and a target that refuses RESTORE still ends exact, the refusals
//! counted in the summary.

mod common;

use common::redis_server::{RedisServer, ServerKind};
use common::run::{df2redis, text};
use df2redis::emulator::{datasets, Config, Emulator, Entry, Value};

/// The emulator's every-type dataset plus 20-element collections of each kind (listpack
/// hashes and sorted sets, quicklist lists, intsets with 64-bit members, sets of strings) with
/// the edge cases the encodings have: integers inside listpacks, empty strings, infinite and
/// fractional scores, TTLs.
fn source(streams: bool) -> Emulator {
    let emu = Emulator::start(Config { shards: 3, ..Config::default() }).unwrap();
    datasets::every_type(&emu);
    let in_an_hour = common::redis_server::now_ms() as u64 + 3_600_000;
    for i in 0..50u64 {
        let hash = (0..20).map(|f| (format!("f{f}").into_bytes(), if f == 3 { Vec::new() } else { format!("{}", i * 1000 + f).into_bytes() }));
        let zset = (0..20).map(|m| {
            let score = match m {
                0 => f64::INFINITY,
                1 => f64::NEG_INFINITY,
                2 => 0.1 + 0.2,
                _ => m as f64 * -1.5,
            };
            (format!("m{m}").into_bytes(), score)
        });
        let list = (0..20).map(|e| if e % 2 == 0 { format!("{}", e as i64 - 7).into_bytes() } else { format!("e{e}-{i}").into_bytes() });
        let ints = (0..20).map(|m| (i64::MAX - m as i64 * (i as i64 + 1)).to_string().into_bytes());
        let strs = (0..20).map(|m| format!("member-{m}-{i}").into_bytes());
        let mut entries = vec![
            (format!("r:hash:{i}"), Entry::new(Value::Hash(hash.collect()))),
            (format!("r:zset:{i}"), Entry::new(Value::Zset(zset.collect()))),
            (format!("r:list:{i}"), Entry::new(Value::List(list.collect()))),
            (format!("r:ints:{i}"), Entry::new(Value::Set(ints.collect()))),
            (format!("r:set:{i}"), Entry::new(Value::Set(strs.collect()))),
        ];
        if i % 5 == 0 {
            for (_, e) in &mut entries {
                e.expire_at_ms = Some(in_an_hour + i);
            }
        }
        for (k, e) in entries {
            emu.load((i % 2) as u32, k.as_bytes(), e);
        }
    }
    if !streams {
        // Redis 6.2 has no XSETID ENTRIESADDED/MAXDELETEDID: the stream metadata path is
        // another matter than RESTORE, so the 6.2 runs leave streams out.
        for (db, keys) in emu.data() {
            for (k, e) in keys {
                if matches!(e.value, Value::Stream(_)) {
                    emu.write(db, &[b"DEL", &k]).unwrap();
                }
            }
        }
    }
    emu
}

/// Copy every key of `from` into a fresh Redis 7 with DUMP / PTTL / RESTORE (the test
/// helpers read TTLs with PEXPIRETIME, which Redis 6.2 lacks; its DUMP payloads load in 7.0).
fn copy_to_redis7(from: &RedisServer) -> RedisServer {
    let to = RedisServer::start(&[]);
    let (mut a, mut b) = (from.conn(), to.conn());
    for db in 0..16u32 {
        redis::cmd("SELECT").arg(db).query::<()>(&mut a).unwrap();
        redis::cmd("SELECT").arg(db).query::<()>(&mut b).unwrap();
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut a).unwrap();
        for k in keys {
            let payload: Vec<u8> = redis::cmd("DUMP").arg(&k).query(&mut a).unwrap();
            let ttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut a).unwrap();
            redis::cmd("RESTORE").arg(&k).arg(ttl.max(0)).arg(payload).query::<()>(&mut b).unwrap();
        }
    }
    to
}

fn assert_exact(emu: &Emulator, srv: &RedisServer, what: &str) -> usize {
    if srv.kind == ServerKind::Redis62 {
        return assert_exact(emu, &copy_to_redis7(srv), what);
    }
    common::emulator_model::assert_matches_emulator(emu, &mut srv.conn(), what)
}

/// `cmdstat_<name>` calls from INFO commandstats.
fn calls(srv: &RedisServer, name: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut srv.conn()).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|r| r.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Put a stale value of another type under every key the source has in db 0 and db 1, so the
/// run must replace them.
fn stale_target(emu: &Emulator, srv: &RedisServer) {
    let mut c = srv.conn();
    for (db, keys) in emu.data() {
        if db > 1 {
            continue;
        }
        redis::cmd("SELECT").arg(db).query::<()>(&mut c).unwrap();
        for (i, k) in keys.keys().enumerate() {
            if i % 2 == 0 {
                redis::cmd("SADD").arg(k).arg("stale").query::<()>(&mut c).unwrap();
            } else {
                redis::cmd("SET").arg(k).arg("stale").query::<()>(&mut c).unwrap();
            }
        }
    }
}

fn migrate(emu: &Emulator, target: &str, extra: &[&str]) -> String {
    let src = emu.addr().to_string();
    let mut args = vec!["migrate", "--source", &src, "--target", target];
    args.extend_from_slice(extra);
    let out = df2redis(&args).wait_with_output().unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    log
}

/// The RDB version in the trailer of a DUMP payload the server makes itself.
fn dump_version(srv: &RedisServer) -> u16 {
    let mut c = srv.conn();
    redis::cmd("SET").arg("df2redis-test:probe").arg("x").query::<()>(&mut c).unwrap();
    let p: Vec<u8> = redis::cmd("DUMP").arg("df2redis-test:probe").query(&mut c).unwrap();
    redis::cmd("DEL").arg("df2redis-test:probe").query::<()>(&mut c).unwrap();
    u16::from_le_bytes([p[p.len() - 10], p[p.len() - 9]])
}

#[test]
fn each_target_version_gets_the_encodings_it_loads_and_ends_exact() {
    for (kind, rdb, restored_types) in [
        (ServerKind::Redis7, 10, "hash(listpack), zset(listpack), list, set(intset)"),
        (ServerKind::Valkey8, 11, "hash(listpack), zset(listpack), list, set(intset)"),
        (ServerKind::Redis62, 9, "hash(listpack), zset(listpack), list re-encoded to their plain forms for RDB version 9"),
    ] {
        let emu = source(kind != ServerKind::Redis62);
        for restore in ["auto", "off"] {
            let srv = RedisServer::start_kind(kind, &[]);
            // The target's own DUMP format is what df2redis assumes of that version.
            assert_eq!(dump_version(&srv), rdb, "{kind:?}: RDB version of its DUMP payloads");
            stale_target(&emu, &srv);
            let log = migrate(&emu, &format!("redis://{}", srv.addr()), &["--restore", restore]);
            let n = assert_exact(&emu, &srv, &format!("{kind:?} --restore {restore}"));
            assert!(n >= 290, "{n}");
            let restores = calls(&srv, "restore");
            if restore == "auto" {
                assert!(log.contains(restored_types), "{kind:?}: the log names what goes as RESTORE:\n{log}");
                // 250 collections of 20 (on 6.2 the listpack types re-encoded).
                assert!(restores >= 250, "{kind:?}: {restores} RESTOREs");
                assert!(!log.contains("RESTORE refused"), "{log}");
            } else {
                assert_eq!(restores, 0, "{kind:?} --restore off sends no RESTORE");
                assert!(log.contains("--restore off"), "{log}");
            }
        }
        emu.stop();
    }
}

#[test]
fn a_target_that_refuses_restore_gets_the_keys_as_commands_counted() {
    let emu = source(true);
    let srv = RedisServer::start(&[]);
    let mut c = srv.conn();
    redis::cmd("ACL")
        .arg(&["SETUSER", "migrator", "on", ">secret", "~*", "&*", "+@all", "-restore"])
        .query::<()>(&mut c)
        .unwrap();
    let log = migrate(&emu, &format!("redis://migrator:secret@{}", srv.addr()), &[]);
    assert_exact(&emu, &srv, "RESTORE refused by ACL");
    assert_eq!(calls(&srv, "restore"), 0);
    let refused: u64 = log
        .lines()
        .filter_map(|l| l.strip_prefix("RESTORE refused, written as commands instead: "))
        .map(|l| l.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(refused >= 250, "every RESTORE-able key is counted as refused ({refused}):\n{log}");
    assert!(log.contains("NOPERM"), "the reason is the target's error:\n{log}");
    emu.stop();
}

#[test]
fn sanitize_dump_payload_yes_loads_dragonflys_encodings() {
    let emu = source(true);
    let srv = RedisServer::start(&["--sanitize-dump-payload", "yes"]);
    let log = migrate(&emu, &format!("redis://{}", srv.addr()), &[]);
    assert_exact(&emu, &srv, "sanitize-dump-payload yes");
    assert!(calls(&srv, "restore") >= 250);
    // Deep sanitization accepts every payload (duplicates and listpack integrity checked).
    assert!(!log.contains("RESTORE refused"), "{log}");
    emu.stop();
}
