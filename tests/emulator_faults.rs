//! Injected faults do what they say: 1-byte TCP segments, a wrong eof token, a flow closed
//! mid-stream, and a replica that stops reading past the replication timeout.

mod emulator_support;

use std::time::Duration;

use df2redis::emulator::{datasets, Config, Emulator, Entry, Value};
use emulator_support::*;

#[test]
fn one_byte_segments_still_decode_to_the_masters_data() {
    let emu =
        Emulator::start(Config { shards: 2, segment_size: Some(1), chunk_size: 512, ..Config::default() }).unwrap();
    for i in 0..20 {
        emu.load(0, format!("k:{i}").as_bytes(), Entry::new(Value::String(format!("value {i}").into_bytes())));
    }
    emu.load(1, b"set", Entry::new(Value::Set((0..300).map(|i| format!("member {i}").into_bytes()).collect())));
    let mut m = handshake(emu.addr(), None);
    let flows = full_sync(&mut m);
    let mut replica = Replica::default();
    for f in &flows {
        replica.apply_all(&f.items);
    }
    assert_same("1-byte segments", &replica.data(), &normalize(emu.data()));
    assert!(flows.iter().any(|f| opcode_counts(f)[0xE0] > 0), "the set was chunked");
}

#[test]
fn a_wrong_eof_token_is_caught_by_the_decoder() {
    let emu = Emulator::start(Config { shards: 1, wrong_token: true, ..Config::default() }).unwrap();
    let mut m = handshake(emu.addr(), None);
    let mut flows = m.open_flows(None);
    assert_eq!(m.sync(), Reply::Simple("OK".into()));
    flows[0].wait_fullsync_end();
    assert_eq!(m.startstable(), Reply::Simple("OK".into()));
    let e = flows[0].wait_failed();
    assert!(e.contains("eof token mismatch"), "{e}");
}

#[test]
fn a_flow_closed_after_n_bytes_cancels_the_whole_session() {
    let emu = Emulator::start(Config { shards: 2, close_flow_after: Some((1, 100)), ..Config::default() }).unwrap();
    datasets::small(&emu, 200);
    let mut m = handshake(emu.addr(), None);
    let mut flows = m.open_flows(None);
    assert_eq!(m.sync(), Reply::Simple("OK".into()));
    let end = flows[1].wait_closed();
    assert!(end.is_err(), "the stream was cut short: {end:?}");
    assert_eq!(flows[1].raw.len(), 100, "exactly the configured bytes");
    let _ = flows[0].wait_closed();
    assert_eq!(m.startstable(), Reply::Error("ERR syncid not found".into()));
    assert!(emu.violations().is_empty());
}

#[test]
fn a_replica_that_stops_reading_is_cut_off_after_the_replication_timeout() {
    let timeout = Duration::from_millis(300);
    let emu = Emulator::start(Config { shards: 1, replication_timeout: timeout, ..Config::default() }).unwrap();
    // 24 MB of incompressible values: more than the socket buffers on both sides hold.
    datasets::big(&emu, 24, 1 << 20);
    let mut m = handshake(emu.addr(), None);
    let mut flow = Client::connect(emu.addr());
    let Reply::Array(r) = flow.call(&["DFLY", "FLOW", &m.replid, &m.sync_id, "0"]) else { panic!() };
    assert_eq!(r[0], Reply::Simple("FULL".into()));
    flow.stream.set_read_timeout(None).unwrap();
    assert_eq!(m.sync(), Reply::Simple("OK".into()));
    // STARTSTABLE waits for the snapshot, which never finishes: it returns once the stalled
    // write has cancelled the session.
    assert!(matches!(m.startstable(), Reply::Error(_)));
    let stall = emu.max_stall_ms();
    // (less 10 ms for the truncation of a 300.x ms stall to whole ms)
    assert!(stall + 10 >= timeout.as_millis() as u64, "longest blocked write {stall} ms");
    drop(flow);
}
