//! The emulator's full sync, decoded by the real flow decoder: every type and encoding, every
//! compression, tagged and legacy big values, both dialects; then the live journal, ACKs and
//! a clean goodbye.

mod emulator_support;

use df2redis::emulator::{datasets, Compression, Config, Dialect, Emulator};
use df2redis::protocol::{Item, RecordKind};
use emulator_support::*;

const OP_LZ4: usize = 0xCA;
const OP_ZSTD: usize = 0xC9;
const OP_CHUNK: usize = 0xE0;

#[test]
fn type_coverage_replicates_exactly_then_the_journal_follows() {
    let emu = Emulator::start(Config::default()).unwrap();
    datasets::type_coverage(&emu);
    let mut m = handshake(emu.addr(), None);
    assert_eq!(m.capa.len(), 5, "v1.40 answers capa dragonfly with 5 elements");
    assert_eq!(m.replid, emu.master_replid());
    assert_eq!(m.sync_id, "SYNC1");
    assert_eq!(m.capa[2], Reply::Int(4));
    assert_eq!(m.capa[3], Reply::Int(5), "DflyVersion ordinal of v1.37+");
    assert_eq!(m.capa[4].text(), m.replid, "lineage = replid for a plain master");

    let mut flows = full_sync(&mut m);
    let lsns = emu.lsns();
    for f in &flows {
        let i = f.index;
        let mut want = vec!["redis-ver", "df-ver", "redis-bits", "ctime", "used-mem", "aof-preamble"];
        if i == 0 {
            want.extend(["shard-count", "table-mem"]);
        }
        want.push("shard-id");
        assert_eq!(aux_names(&f.items), want, "flow {i} AUX order");
        assert_eq!(aux_value(&f.items, "df-ver").unwrap(), "df-v1.40.1");
        assert_eq!(aux_value(&f.items, "shard-id").unwrap(), i.to_string());
        assert!(f.items.contains(&Item::Token(f.token.clone().into_bytes())), "flow {i} token");
        assert_eq!(f.journal_offset(), Some(lsns[i]), "flow {i} JOURNAL_OFFSET = the shard's next LSN");
        assert!(f.items.contains(&Item::Eof { checksum: 0 }));
    }
    let counts: Vec<Vec<u64>> = flows.iter().map(opcode_counts).collect();
    assert!(counts.iter().any(|c| c[OP_CHUNK] > 0), "the 10 MB list travels in tagged chunks");
    assert!(counts.iter().all(|c| c[OP_LZ4] > 0), "every flow has LZ4 blobs");

    let mut replica = Replica::default();
    for f in &flows {
        replica.apply_all(&f.items);
    }
    assert_same("snapshot", &replica.data(), &normalize(emu.data()));

    // The live journal: single-key writes (txid 0), a cross-shard MSET and DEL (one txid),
    // rewritten forms (SET EX -> PXAT, EXPIRE -> PEXPIREAT, XADD * -> explicit ID).
    let w = |args: &[&str]| emu.write(0, &args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>()).unwrap();
    w(&["SET", "j:1", "v1", "EX", "100"]);
    w(&["MSET", "m:a", "1", "m:b", "2", "m:c", "3", "m:d", "4", "m:e", "5"]);
    w(&["INCR", "m:a"]);
    w(&["HSET", "hash:small", "f9", "v9"]);
    w(&["EXPIRE", "str:plain", "500"]);
    w(&["XADD", "stream:small", "*", "f", "new"]);
    w(&["LPUSH", "list:small", "head"]);
    w(&["ZADD", "zset:small", "7", "seven"]);
    w(&["DEL", "m:b", "m:c", "m:d"]);
    w(&["APPEND", "str:plain", "!"]);
    let lsns = emu.lsns();
    for f in flows.iter_mut() {
        let offset = f.journal_offset().unwrap();
        if lsns[f.index] > offset {
            f.wait_lsn(lsns[f.index] - 1);
        }
        let records = f.stable_records();
        let got: Vec<u64> = records.iter().map(|r| r.lsn.unwrap()).collect();
        assert_eq!(got, (offset..lsns[f.index]).collect::<Vec<_>>(), "flow {}: consecutive LSNs", f.index);
        if let Some(first) = records.first() {
            let at = f.items.iter().position(|i| matches!(i, Item::Journal(r) if r.lsn == first.lsn)).unwrap();
            assert_eq!(
                f.items[at + 1],
                Item::LsnMark { announced: offset, expected: Some(offset) },
                "flow {}: the first stable record is followed by its LSN marker",
                f.index
            );
        }
        for r in &records {
            let name = r.argv.name_upper();
            match name.as_str() {
                "SET" => assert_eq!(r.argv.get(3), Some(b"PXAT".as_slice()), "SET EX is journaled as PXAT"),
                "PEXPIREAT" | "INCR" | "HSET" | "LPUSH" | "ZADD" | "APPEND" => assert_eq!(r.txid, 0),
                "XADD" => assert_ne!(r.argv.get(2), Some(b"*".as_slice()), "XADD * gets an explicit ID"),
                "MSET" | "DEL" => assert_ne!(r.txid, 0, "multi-key parts share a non-zero txid"),
                other => panic!("unexpected journal command {other}"),
            }
            assert_eq!(r.kind, RecordKind::Command);
        }
    }
    let txids: std::collections::BTreeSet<u64> = flows
        .iter()
        .flat_map(|f| {
            f.stable_records().into_iter().filter(|r| r.argv.name_upper() == "MSET").map(|r| r.txid).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(txids.len(), 1, "one txid for all parts of the MSET");
    for f in &flows {
        for r in f.stable_records() {
            replica.record(r);
        }
    }
    assert_same("after the journal", &replica.data(), &normalize(emu.data()));

    for f in flows.iter_mut() {
        let next = f.next_lsn().unwrap();
        f.ack(next);
    }
    assert!(emu.wait_acked_all(WAIT), "ACKs {:?} never matched LSNs {:?}", emu.acked(), emu.lsns());
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());

    close_gracefully(m, flows);
    assert!(emu.wait_session_closed(WAIT));
    assert_eq!(emu.flow_closed_cleanly(), vec![Some(true); 4]);
    emu.stop();
}

struct Case {
    name: &'static str,
    cfg: Config,
    chunks: bool,
    blob: Option<usize>,
    interleaved: bool,
}

#[test]
fn every_compression_dialect_and_chunking_mode_decodes_to_the_masters_data() {
    let base = || Config { shards: 3, chunk_size: 4096, ..Config::default() };
    let cases = vec![
        Case {
            name: "lz4 tagged, two open entries",
            cfg: Config { two_open_entries: true, ..base() },
            chunks: true,
            blob: Some(OP_LZ4),
            interleaved: true,
        },
        Case {
            name: "zstd tagged",
            cfg: Config { compression: Compression::Zstd, ..base() },
            chunks: true,
            blob: Some(OP_ZSTD),
            interleaved: false,
        },
        Case {
            name: "lzf tagged",
            cfg: Config { compression: Compression::Lzf, ..base() },
            chunks: true,
            blob: None,
            interleaved: false,
        },
        Case {
            name: "plain legacy",
            cfg: Config { compression: Compression::None, tagged_chunks: Some(false), ..base() },
            chunks: false,
            blob: None,
            interleaved: false,
        },
        Case {
            name: "lz4 legacy",
            cfg: Config { tagged_chunks: Some(false), ..base() },
            chunks: false,
            blob: Some(OP_LZ4),
            interleaved: false,
        },
        Case {
            name: "v1.36",
            cfg: Config { dialect: Dialect::V1_36, ..base() },
            chunks: false,
            blob: Some(OP_LZ4),
            interleaved: false,
        },
        Case {
            name: "one shard, no splitting",
            cfg: Config { shards: 1, chunk_size: 0, ..base() },
            chunks: false,
            blob: Some(OP_LZ4),
            interleaved: false,
        },
    ];
    for c in cases {
        let v136 = c.cfg.dialect == Dialect::V1_36;
        let emu = Emulator::start(c.cfg.clone()).unwrap();
        datasets::every_type(&emu);
        let mut m = handshake(emu.addr(), None);
        if v136 {
            assert_eq!(m.capa.len(), 4, "{}: v1.36 has no lineage", c.name);
            assert_eq!(m.capa[3], Reply::Int(4), "{}", c.name);
        }
        let mut flows = full_sync(&mut m);
        let mut replica = Replica::default();
        for f in &flows {
            replica.apply_all(&f.items);
            let counts = opcode_counts(f);
            if !c.chunks {
                assert_eq!(counts[OP_CHUNK], 0, "{}: flow {} has tagged chunks", c.name, f.index);
            }
            for op in [OP_LZ4, OP_ZSTD] {
                if c.blob != Some(op) {
                    assert_eq!(counts[op], 0, "{}: flow {} has blobs 0x{op:02X}", c.name, f.index);
                }
            }
            let want_ver = if v136 { "df-v1.36.0" } else { "df-v1.40.1" };
            assert_eq!(aux_value(&f.items, "df-ver").unwrap(), want_ver);
        }
        let counts: Vec<Vec<u64>> = flows.iter().map(opcode_counts).collect();
        if c.chunks {
            assert!(counts.iter().any(|x| x[OP_CHUNK] > 0), "{}: no tagged chunks", c.name);
        }
        if let Some(op) = c.blob {
            assert!(counts.iter().any(|x| x[op] > 0), "{}: no 0x{op:02X} blobs", c.name);
        }
        if c.interleaved {
            assert!(flows.iter().any(|f| saw_interleaved_entries(&f.items)), "{}: no two entries open at once", c.name);
        }
        if c.cfg.compression == Compression::Lzf {
            assert!(
                flows.iter().any(|f| f.raw.windows(2).any(|w| w == [0x02, 0xC3] || w == [0x01, 0xC3])),
                "{}: no LZF strings",
                c.name
            );
        }
        assert_same(c.name, &replica.data(), &normalize(emu.data()));

        emu.write(0, &[b"SET", b"after", b"1"]).unwrap();
        let s = emu.shard_of(b"after");
        let lsn = emu.lsns()[s] - 1;
        let at = flows[s].wait_lsn(lsn);
        let Item::Journal(r) = &flows[s].items[at] else { unreachable!() };
        assert_eq!(r.argv.name_upper(), "SET");
        assert!(emu.violations().is_empty(), "{}: {:?}", c.name, emu.violations());
        close_gracefully(m, flows);
        emu.stop();
    }
}
