//! The pre-encoded journal (`Emulator::prepare_journal` / `release_journal`, the benchmark's
//! journal source): its bytes decode with df2redis's own `FlowDecoder` to the expected records
//! (cross-shard MSET split per shard with one txid), released on a stable-sync session they
//! carry consecutive LSNs continuing the shard's LSN, interleave with live writes, and a
//! replica applying them ends equal to `data()`, with ACKs equal to `lsns()`.
#![cfg(feature = "emulator")]

mod emulator_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use df2redis::emulator::{Config, Emulator};
use df2redis::protocol::{FlowDecoder, Item, JournalRecord, Limits, RecordKind};
use emulator_support::*;

fn ops(emu: &Emulator, n: usize) -> Vec<Vec<Vec<u8>>> {
    let b = |s: String| s.into_bytes();
    (0..n)
        .map(|i| match i % 7 {
            0 => vec![b("SET".into()), b(format!("s:{i}")), b(format!("v{i}"))],
            1 => vec![b("HSET".into()), b(format!("h:{}", i % 5)), b(format!("f{}", i % 3)), b(format!("v{i}"))],
            2 => vec![b("INCR".into()), b(format!("n:{}", i % 4))],
            3 => vec![b("LPUSH".into()), b(format!("l:{}", i % 3)), b(format!("v{i}"))],
            4 => vec![b("ZADD".into()), b(format!("z:{}", i % 3)), b(format!("{}", i % 10)), b(format!("m{}", i % 6))],
            5 => vec![b("DEL".into()), b(format!("s:{}", i - 5))],
            _ => {
                let a = format!("m:{i}");
                let mut j = i + 1;
                while emu.shard_of(format!("m:{j}").as_bytes()) == emu.shard_of(a.as_bytes()) {
                    j += 1;
                }
                vec![b("MSET".into()), b(a), b(format!("x{i}")), b(format!("m:{j}")), b(format!("y{i}"))]
            }
        })
        .collect()
}

fn decode(shard: usize, next_lsn: u64, bytes: &[u8]) -> Vec<Item> {
    let mut d = FlowDecoder::partial(Some(shard as u32), next_lsn, Limits::default());
    let mut items = Vec::new();
    // In odd pieces, as a socket would deliver them.
    for piece in bytes.chunks(37) {
        d.feed(piece, &mut items).unwrap_or_else(|e| panic!("shard {shard}: {e}"));
    }
    items
}

fn records(items: &[Item]) -> Vec<&JournalRecord> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Journal(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn argv(r: &JournalRecord) -> Vec<Vec<u8>> {
    r.argv.iter().map(|a| a.to_vec()).collect()
}

#[test]
fn prepared_journal_decodes_to_the_records_of_the_live_path() {
    let emu = Emulator::start(Config { shards: 3, ..Config::default() }).unwrap();
    let ops = ops(&emu, 700);
    let before = emu.lsns();
    let prep = emu.prepare_journal(0, &ops).unwrap();
    // Nothing was journaled yet, but the data model already holds the effect.
    assert_eq!(emu.lsns(), before);
    assert_eq!(emu.data()[&0][b"n:0".as_slice()].value, df2redis::emulator::Value::String(b"25".to_vec()));

    // Expected per shard: single-key ops on their key's shard, MSET split per shard.
    let mut want: Vec<Vec<Vec<Vec<u8>>>> = vec![Vec::new(); 3];
    for op in &ops {
        if op[0] == b"MSET" {
            let mut by: BTreeMap<usize, Vec<Vec<u8>>> = BTreeMap::new();
            for p in op[1..].chunks(2) {
                by.entry(emu.shard_of(&p[0])).or_insert_with(|| vec![b"MSET".to_vec()]).extend(p.iter().cloned());
            }
            for (s, a) in by {
                want[s].push(a);
            }
        } else {
            want[emu.shard_of(&op[1])].push(op.clone());
        }
    }
    let mut mset_txids: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    let mut total = 0;
    for (s, want) in want.iter().enumerate() {
        let items = decode(s, 1, prep.shard_bytes(s));
        let recs = records(&items);
        assert_eq!(recs.len(), prep.shard_records(s), "shard {s}");
        assert_eq!(recs.iter().map(|r| argv(r)).collect::<Vec<_>>(), *want, "shard {s}");
        for (k, r) in recs.iter().enumerate() {
            assert_eq!(r.kind, RecordKind::Command);
            assert_eq!(r.db, 0);
            assert_eq!(r.lsn, Some(1 + k as u64), "shard {s}: consecutive LSNs from the shard's next");
            if r.argv.get(0) == Some(b"MSET".as_slice()) {
                assert_ne!(r.txid, 0);
                // The op this part belongs to (its values are unique per op).
                let op_id = ops
                    .iter()
                    .position(|o| o[0] == b"MSET" && (argv(r).contains(&o[2]) || argv(r).contains(&o[4])))
                    .unwrap();
                mset_txids.entry(ops[op_id][1].clone()).or_default().push(r.txid);
            } else {
                assert_eq!(r.txid, 0);
            }
        }
        total += recs.len();
    }
    assert_eq!(total as u64, prep.records());
    for (k, t) in mset_txids {
        assert_eq!(t.len(), 2, "{}: split over two shards", String::from_utf8_lossy(&k));
        assert_eq!(t[0], t[1], "one txid per cross-shard MSET");
    }
}

#[test]
fn released_journal_streams_paced_with_consecutive_lsns_and_acks_end_at_lsns() {
    let emu = Emulator::start(Config { shards: 3, lsn_marker_period: Duration::from_millis(5), ..Config::default() })
        .unwrap();
    let mut m = handshake(emu.addr(), None);
    let mut flows = full_sync(&mut m);
    // Some live records first: the released ones continue their LSNs.
    for i in 0..10 {
        emu.write(0, &[b"SET", format!("live:{i}").as_bytes(), b"1"]).unwrap();
    }
    let ops = ops(&emu, 3000);
    let prep = emu.prepare_journal(0, &ops).unwrap();
    let start_lsns = emu.lsns();
    let t = Instant::now();
    let released = std::thread::scope(|sc| {
        let h = sc.spawn(|| emu.release_journal(&prep, 20_000, Duration::from_millis(1)));
        // A live write in the middle of the release takes the next LSN between two chunks.
        std::thread::sleep(Duration::from_millis(50));
        emu.write(0, &[b"SET", b"probe", b"1"]).unwrap();
        h.join().unwrap()
    });
    let took = t.elapsed().as_secs_f64();
    assert_eq!(released.records, prep.records());
    assert_eq!(released.bytes, prep.bytes());
    assert!(took > 0.12 && took < 2.0, "3000+ records at 20000/s took {took:.3} s");
    let end = emu.lsns();
    for (s, f) in flows.iter_mut().enumerate() {
        assert_eq!(end[s], start_lsns[s] + prep.shard_records(s) as u64 + u64::from(emu.shard_of(b"probe") == s));
        f.wait_lsn(end[s] - 1);
        let recs = f.stable_records();
        let lsns: Vec<u64> = recs.iter().map(|r| r.lsn.unwrap()).collect();
        assert_eq!(lsns, (1..end[s]).collect::<Vec<_>>(), "flow {s}: consecutive LSNs");
        // The LSN markers the decoder saw agreed with its count (it fails otherwise); there
        // were some, as the live path writes them.
        assert!(f.items.iter().any(|i| matches!(i, Item::LsnMark { .. })), "flow {s}: no LSN marker");
        f.ack(end[s]);
    }
    assert!(emu.wait_acked_all(Duration::from_secs(10)));
    assert_eq!(emu.acked(), emu.lsns());
    let mut replica = Replica::default();
    for f in &flows {
        replica.apply_all(&f.items);
    }
    assert_same("replica after the released journal", &normalize(replica.data()), &normalize(emu.data()));
    assert!(emu.violations().is_empty());
    close_gracefully(m, flows);
}
