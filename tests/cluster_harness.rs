//! The Redis Cluster test harness itself (tests/common/redis_cluster.rs) against real
//! `redis-server --cluster-enabled yes` processes, and `key_slot` against `CLUSTER KEYSLOT`.

mod common;

use std::time::Instant;

use common::redis_cluster::RedisCluster;
use common::{Dataset, Key, Val};
use df2redis::target::slots::key_slot;
use redis::ErrorKind;

fn cmd(args: &[&[u8]]) -> redis::Cmd {
    let mut c = redis::Cmd::new();
    for a in args {
        c.arg(*a);
    }
    c
}

fn run<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&[u8]]) -> redis::RedisResult<T> {
    cmd(args).query(c)
}

/// `ASKING` then the command, in one round trip.
fn run_asking<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&[u8]]) -> redis::RedisResult<T> {
    let (v,): (T,) = redis::pipe().cmd("ASKING").ignore().add_command(cmd(args)).query(c)?;
    Ok(v)
}

/// Write `args` on the node that owns `key`'s slot.
fn write(cl: &RedisCluster, key: &[u8], args: &[&[u8]]) {
    let owner = cl.owner(key_slot(key));
    let _: redis::Value = run(&mut cl.conn(owner), args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
}

/// The ~200 keys `key_slot` is checked on: the documented examples, hashtag edge cases, and
/// pseudo-random binary keys with braces sprinkled in.
fn varied_keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = [
        &b"foo"[..],
        b"bar",
        b"",
        b"123456789",
        b"{user1000}.following",
        b"{user1000}.followers",
        b"foo{}{bar}",
        b"foo{{bar}}zap",
        b"foo{bar}{zap}",
        b"{",
        b"}",
        b"{}",
        b"}{",
        b"{a}",
        b"a{b",
        b"a}b{c}d",
        b"{\x00}",
        b"\x00",
        b"\xff\xfe{\xff}",
        b"\r\n{\r\n}",
        b"bulk:000333",
    ]
    .iter()
    .map(|k| k.to_vec())
    .collect();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    while keys.len() < 200 {
        let len = (next() % 24) as usize;
        let mut k: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Braces at random places in about half of the keys.
        if len > 0 && next() % 2 == 0 {
            let i = (next() as usize) % len;
            k[i] = b'{';
            let j = (next() as usize) % len;
            k[j] = b'}';
        }
        keys.push(k);
    }
    keys
}

/// The same keys, types and values; expiry times equal within 1 s (MIGRATE carries the
/// remaining TTL, not the absolute time, so a moved key's expiry can shift by a millisecond
/// or so).
fn assert_same_data(actual: &Dataset, expected: &Dataset) {
    let (a, e) = (&actual[&0], &expected[&0]);
    let keys = |m: &std::collections::BTreeMap<Vec<u8>, Key>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(a), keys(e), "the same keys");
    for (k, ek) in e {
        let ak = &a[k];
        let name = String::from_utf8_lossy(k);
        assert_eq!((&ak.ty, &ak.val), (&ek.ty, &ek.val), "key {name}");
        assert_eq!(ak.expire_at_ms < 0, ek.expire_at_ms < 0, "key {name}: TTL presence");
        assert!((ak.expire_at_ms - ek.expire_at_ms).abs() <= 1000, "key {name}: {} vs {}", ak.expire_at_ms, ek.expire_at_ms);
    }
}

#[test]
fn cluster_starts_key_slot_agrees_with_redis_and_drop_cleans_up() {
    let t = Instant::now();
    let cl = RedisCluster::start();
    eprintln!("cluster up in {:?}", t.elapsed());

    assert_eq!(cl.nodes.len(), 3);
    assert_eq!(cl.seed(), format!("127.0.0.1:{}", cl.nodes[0].port));
    assert_eq!(cl.addrs().len(), 3);
    let mut ids: Vec<&str> = cl.nodes.iter().map(|n| n.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "distinct node ids");
    for i in 0..3 {
        let info = cl.info(i);
        assert_eq!(info["cluster_state"], "ok", "node {i}");
        assert_eq!(info["cluster_known_nodes"], "3", "node {i}");
        assert_eq!(info["cluster_size"], "3", "node {i}");
        assert_eq!(info["cluster_slots_assigned"], "16384", "node {i}");
        assert_eq!(cl.slot_map(i), cl.slot_map(0), "node {i} agrees on the slot map");
    }
    // Every node owns a contiguous third, together all slots.
    let map = cl.slot_map(0);
    assert_eq!(map.len(), 3, "{map:?}");
    assert_eq!(map[0].0, 0);
    assert_eq!(map[2].1, 16383);
    assert!(map.windows(2).all(|w| w[0].1 + 1 == w[1].0), "{map:?}");

    // key_slot == CLUSTER KEYSLOT, asked of every node in turn, pipelined.
    let keys = varied_keys();
    assert!(keys.len() >= 200);
    for (i, chunk) in keys.chunks(70).enumerate() {
        let mut p = redis::pipe();
        for k in chunk {
            p.cmd("CLUSTER").arg("KEYSLOT").arg(k.as_slice());
        }
        let slots: Vec<u16> = p.query(&mut cl.conn(i % 3)).unwrap();
        for (k, s) in chunk.iter().zip(slots) {
            assert_eq!(key_slot(k), s, "key {:?}", String::from_utf8_lossy(k));
        }
    }

    // A key written on its owner is read back by read_all; an empty cluster reads empty.
    assert!(cl.read_all().is_empty());
    write(&cl, b"foo", &[b"SET", b"foo", b"1"]);
    write(&cl, b"bar", &[b"RPUSH", b"bar", b"a", b"b"]);
    let ds = cl.read_all();
    assert_eq!(ds[&0].len(), 2);
    assert_eq!(ds[&0][&b"foo"[..]].val, Val::Str(b"1".to_vec()));
    assert_eq!(ds[&0][&b"bar"[..]].val, Val::List(vec![b"a".to_vec(), b"b".to_vec()]));

    // Drop stops every node (by PID) and removes its directory.
    let pids: Vec<u32> = cl.nodes.iter().map(|n| n.pid()).collect();
    let ports: Vec<u16> = cl.nodes.iter().map(|n| n.port).collect();
    let dirs: Vec<std::path::PathBuf> = cl.nodes.iter().map(|n| n.dir().to_path_buf()).collect();
    assert!(dirs.iter().all(|d| d.join("nodes.conf").exists()), "{dirs:?}");
    drop(cl);
    for d in &dirs {
        assert!(!d.exists(), "{} not removed", d.display());
    }
    for (pid, port) in pids.iter().zip(ports) {
        // The child was reaped by Drop: its /proc entry is gone (a PID reused this fast by a
        // redis-server on the same port is not a real possibility).
        let alive = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains(&port.to_string()));
        assert!(!alive, "redis-server {pid} on port {port} still running");
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} still answers");
    }
    eprintln!("test done in {:?}", t.elapsed());
}

#[test]
fn move_slot_moves_keys_and_the_old_owner_answers_moved() {
    let t = Instant::now();
    let cl = RedisCluster::start();
    let slot = key_slot(b"m");
    let from = cl.owner(slot);
    let to = (from + 1) % 3;

    // 250 strings (more than one MIGRATE batch) and one key of each other type in the slot,
    // plus keys elsewhere.
    let mut c = cl.conn(from);
    let mut p = redis::pipe();
    for i in 0..250 {
        p.cmd("SET").arg(format!("{{m}}s{i}")).arg(format!("v{i}")).ignore();
    }
    p.query::<()>(&mut c).unwrap();
    for args in [
        &[&b"RPUSH"[..], b"{m}list", b"a", b"b", b"c"][..],
        &[b"SADD", b"{m}set", b"x", b"y"],
        &[b"HSET", b"{m}hash", b"f", b"v", b"g", b"\x00\xff"],
        &[b"ZADD", b"{m}zset", b"1.5", b"a", b"-2", b"b"],
        &[b"XADD", b"{m}stream", b"1-1", b"f", b"v"],
        &[b"XGROUP", b"CREATE", b"{m}stream", b"g", b"0"],
        &[b"PEXPIREAT", b"{m}list", b"4102444800000"],
    ] {
        let _: redis::Value = run(&mut c, args).unwrap();
    }
    write(&cl, b"foo", &[b"SET", b"foo", b"elsewhere"]);
    write(&cl, b"bar", &[b"SET", b"bar", b"elsewhere"]);
    let before = cl.read_all();
    assert_eq!(before[&0].len(), 257);
    assert_eq!(before[&0][&b"{m}list"[..]].expire_at_ms, 4102444800000);

    let t_move = Instant::now();
    cl.move_slot(slot, to);
    eprintln!("move_slot of 255 keys in {:?}", t_move.elapsed());

    assert_eq!(cl.owner(slot), to);
    for i in 0..3 {
        let map = cl.slot_map(i);
        let owner = map.iter().find(|(a, b, _)| (*a..=*b).contains(&slot)).unwrap().2;
        assert_eq!(owner, cl.nodes[to].port, "node {i}'s view of slot {slot}");
        assert_eq!(cl.info(i)["cluster_state"], "ok");
    }
    let count = |i: usize| -> i64 { run(&mut cl.conn(i), &[b"CLUSTER", b"COUNTKEYSINSLOT", slot.to_string().as_bytes()]).unwrap() };
    assert_eq!(count(from), 0);
    assert_eq!(count(to), 255);
    assert_same_data(&cl.read_all(), &before);

    // The old owner redirects with MOVED to the new one, for reads and writes.
    let err = run::<()>(&mut c, &[b"SET", b"{m}s0", b"new"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Moved, "{err}");
    let to_addr = cl.nodes[to].addr();
    assert_eq!(err.redirect_node(), Some((to_addr.as_str(), slot)));
    let err = run::<Option<String>>(&mut c, &[b"GET", b"{m}new-key"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Moved, "{err}");
    // The new owner takes the write.
    let _: () = run(&mut cl.conn(to), &[b"SET", b"{m}s0", b"new"]).unwrap();

    // Moving it back works too, and move_slot to the owner is a no-op.
    cl.move_slot(slot, from);
    cl.move_slot(slot, from);
    assert_eq!(cl.owner(slot), from);
    assert_eq!(count(from), 255);
    eprintln!("test done in {:?}", t.elapsed());
}

#[test]
fn half_migrated_slot_answers_ask() {
    let t = Instant::now();
    let cl = RedisCluster::start();
    let slot = key_slot(b"h");
    let from = cl.owner(slot);
    let to = (from + 2) % 3;
    let mut src = cl.conn(from);
    let mut dst = cl.conn(to);
    for i in 0..10 {
        let _: () = run(&mut src, &[b"SET", format!("{{h}}{i}").as_bytes(), b"v"]).unwrap();
    }

    cl.begin_migration(slot, to);
    assert_eq!(cl.migrate_some_keys(slot, 4), 4);
    // Which keys left: the source's keys in the slot (EXISTS on a moved one would ASK).
    let left: Vec<Vec<u8>> = run(&mut src, &[b"CLUSTER", b"GETKEYSINSLOT", slot.to_string().as_bytes(), b"100"]).unwrap();
    assert_eq!(left.len(), 6);
    let all: Vec<Vec<u8>> = (0..10).map(|i| format!("{{h}}{i}").into_bytes()).collect();
    let moved: Vec<Vec<u8>> = all.iter().filter(|k| !left.contains(k)).cloned().collect();
    assert_eq!(moved.len(), 4);
    let stayed = left[0].clone();
    let on_dst: i64 = run(&mut dst, &[b"CLUSTER", b"COUNTKEYSINSLOT", slot.to_string().as_bytes()]).unwrap();
    assert_eq!(on_dst, 4);

    // The owner still serves the keys it holds, and sends the others to the importing node.
    let v: String = run(&mut src, &[b"GET", &stayed]).unwrap();
    assert_eq!(v, "v");
    let err = run::<Option<String>>(&mut src, &[b"GET", &moved[0]]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Ask, "{err}");
    let to_addr = cl.nodes[to].addr();
    assert_eq!(err.redirect_node(), Some((to_addr.as_str(), slot)));
    // A new key of the slot: ASK too (it must be created on the importing node).
    let err = run::<()>(&mut src, &[b"SET", b"{h}new", b"x"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Ask, "{err}");
    // The importing node: MOVED without ASKING, served with it.
    let err = run::<Option<String>>(&mut dst, &[b"GET", &moved[0]]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Moved, "{err}");
    assert_eq!(err.redirect_node(), Some((cl.nodes[from].addr().as_str(), slot)));
    let v: String = run_asking(&mut dst, &[b"GET", &moved[0]]).unwrap();
    assert_eq!(v, "v");
    let _: () = run_asking(&mut dst, &[b"SET", b"{h}new", b"x"]).unwrap();

    // The cluster is still healthy and read_all sees every key, wherever it is.
    for i in 0..3 {
        assert_eq!(cl.info(i)["cluster_state"], "ok");
    }
    let ds = cl.read_all();
    assert_eq!(ds[&0].len(), 11);
    assert!(ds[&0].values().all(|k| k.val == Val::Str(b"v".to_vec()) || k.val == Val::Str(b"x".to_vec())));

    cl.finish_migration(slot);
    assert_eq!(cl.owner(slot), to);
    let n: i64 = run(&mut dst, &[b"CLUSTER", b"COUNTKEYSINSLOT", slot.to_string().as_bytes()]).unwrap();
    assert_eq!(n, 11);
    let err = run::<Option<String>>(&mut src, &[b"GET", &stayed]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Moved, "{err}");
    assert_same_data(&cl.read_all(), &ds);
    eprintln!("test done in {:?}", t.elapsed());
}
