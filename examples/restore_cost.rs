//! df2redis's own CPU per key on the full sync's RESTORE path, without sockets: a pre-encoded
//! emulator snapshot (LZ4 blobs, as the bench's) is fed to a flow decoder in 64 KiB reads, its
//! items turned into commands by the replayer and written as RESP into a pipeline buffer, as the
//! flow and writer threads do. Prints nanoseconds per key, the fastest of several passes.
//!
//! End-to-end figures (`scripts/bench.sh`) move by 10-20% with the machine's other load; this
//! one hardly does, so it is the before/after figure for changes to the decode-and-build path:
//!
//!   cargo run --release --features emulator --example restore_cost -- [lists20|hashes|zsets|sets|small] [keys] [resp-file]
//!
//! With a third argument the commands are also written there as RESP, for
//! `redis-cli --pipe`: what Redis makes of exactly what df2redis sends, without df2redis.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use df2redis::emulator::datasets::Rng;
use df2redis::emulator::snapshot::{encode_body, SerOpts, Serializer};
use df2redis::emulator::{Compression, Entry, Keyspace, Value};
use df2redis::protocol::whole::{Whole, DEFAULT_MAX_BYTES};
use df2redis::protocol::{FlowDecoder, Item, Limits};
use df2redis::replay::{dump::COLLECTION_TYPES, Clock, Cmd, Policy, Replayer};

fn dataset(kind: &str, n: usize) -> Keyspace {
    let mut r = Rng::new(7);
    let mut ks = Keyspace::default();
    for i in 0..n {
        let member = |r: &mut Rng, m: usize| {
            let mut name = format!("m{m:03}:").into_bytes();
            name.extend(r.text(11));
            name
        };
        let (key, value) = match kind {
            "lists20" => (format!("list:{i:011}"), Value::List((0..20).map(|_| r.text(32)).collect::<VecDeque<_>>())),
            "hashes" => (
                format!("hash:{i:011}"),
                Value::Hash((0..20).map(|f| (format!("field:{f:010}").into_bytes(), r.text(32))).collect::<BTreeMap<_, _>>()),
            ),
            "zsets" => (
                format!("zset:{i:011}"),
                Value::Zset((0..20).map(|m| (member(&mut r, m), r.below(1_000_000) as f64 / 1024.0)).collect::<BTreeMap<_, _>>()),
            ),
            "sets" => (format!("set:{i:012}"), Value::Set((0..20).map(|m| member(&mut r, m)).collect::<BTreeSet<_>>())),
            "small" => (format!("key:{i:012}"), Value::String(r.text(32))),
            other => panic!("unknown dataset {other} (lists20, hashes, zsets, sets, small)"),
        };
        ks.insert(key.into_bytes(), Entry::new(value));
    }
    ks
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kind = args.get(1).map_or("lists20", |s| s.as_str());
    let n: usize = args.get(2).map_or(200_000, |s| s.parse().expect("keys: a number"));
    let dbs = BTreeMap::from([(0u32, dataset(kind, n))]);
    let opts = SerOpts { compression: Compression::Lz4, tagged: false, chunk_size: 0, two_open: false };
    let mut ser = Serializer::new(opts);
    ser.header(&[]);
    let mut stream = ser.take_ready();
    stream.extend_from_slice(&encode_body(opts, &dbs, 0));
    let limits = Limits { whole: Whole::new(COLLECTION_TYPES.iter().copied(), DEFAULT_MAX_BYTES), ..Limits::default() };
    let mut best = f64::INFINITY;
    let mut sent = 0;
    let mut file = args.get(3).map(|p| std::io::BufWriter::new(std::fs::File::create(p).expect("the RESP file")));
    for pass in 0..7 {
        let mut dec = FlowDecoder::new(None, None, limits);
        let mut rep = Replayer::new(Policy::default(), Clock::System).with_target_rdb(10).with_fresh_target(true);
        let (mut items, mut cmds, mut buf): (Vec<Item>, Vec<Cmd>, Vec<u8>) = (Vec::new(), Vec::new(), Vec::new());
        let (mut keys, mut bytes) = (0usize, 0usize);
        let t = Instant::now();
        for read in stream.chunks(64 * 1024) {
            dec.feed(read, &mut items).expect("the snapshot decodes");
            for item in items.drain(..) {
                if let Item::Value(mut v) = item {
                    keys += v.last as usize;
                    rep.value(&mut v, &mut cmds);
                }
                if cmds.len() >= 2000 {
                    flush(&mut cmds, &mut buf, &mut bytes);
                    save(&mut file, pass, &buf);
                }
            }
        }
        flush(&mut cmds, &mut buf, &mut bytes);
        save(&mut file, pass, &buf);
        best = best.min(t.elapsed().as_secs_f64());
        assert_eq!(keys, n, "every key decoded");
        sent = bytes;
    }
    println!(
        "{kind}: {n} keys, {:.1} MB of snapshot, {:.1} MB of RESP: {:.0} ns per key ({:.3} CPU-s per 100k keys)",
        stream.len() as f64 / 1e6,
        sent as f64 / 1e6,
        best * 1e9 / n as f64,
        best * 1e5 / n as f64
    );
}

fn save(file: &mut Option<std::io::BufWriter<std::fs::File>>, pass: usize, buf: &[u8]) {
    if let (Some(f), 0) = (file, pass) {
        std::io::Write::write_all(f, buf).expect("writing the RESP file");
    }
}

/// What the writer does with a batch: its RESP into one buffer (the socket's copy left out).
fn flush(cmds: &mut Vec<Cmd>, buf: &mut Vec<u8>, bytes: &mut usize) {
    buf.clear();
    for c in cmds.iter() {
        c.argv.write_resp(buf);
    }
    *bytes += buf.len();
    cmds.clear();
}
