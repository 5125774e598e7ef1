//! The emulator's control plane: replies and error strings of protocol doc sections 3-6,
//! AUTH, the DFLY state machine, misuse detection, and session teardown.

mod emulator_support;

use df2redis::emulator::{Config, Dialect, Emulator};
use emulator_support::*;

fn err(s: &str) -> Reply {
    Reply::Error(s.to_string())
}
fn ok() -> Reply {
    Reply::Simple("OK".into())
}

#[test]
fn control_plane_replies_and_errors() {
    let emu = Emulator::start(Config { shards: 2, ..Config::default() }).unwrap();
    let mut c = Client::connect(emu.addr());
    assert_eq!(c.call(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(c.call(&["ping", "hi"]), Reply::Bulk(Some(b"hi".to_vec())));
    let server = c.call(&["INFO", "SERVER"]).text();
    assert!(server.contains("dragonfly_version:df-v1.40.1\r\n"), "{server}");
    let repl = c.call(&["INFO", "REPLICATION"]).text();
    assert!(
        repl.contains("role:master\r\n") && repl.contains(&format!("master_replid:{}\r\n", emu.master_replid())),
        "{repl}"
    );

    assert_eq!(c.call(&["REPLCONF", "listening-port"]), err("ERR syntax error"));
    assert_eq!(c.call(&["REPLCONF", "listening-port", "abc"]), err("ERR value is not an integer or out of range"));
    assert_eq!(c.call(&["REPLCONF", "bogus", "1"]), err("ERR syntax error"));
    assert_eq!(c.call(&["REPLCONF", "capa", "dragonfly", "capa", "eof"]), ok(), "capa dragonfly counts only alone");
    assert_eq!(c.call(&["REPLCONF", "capa", "DRAGONFLY"]), ok(), "the value must be lower case");
    assert_eq!(c.call(&["REPLCONF", "ip-address", "10.0.0.1", "listening-port", "7000"]), ok());
    let Reply::Array(a) = c.call(&["REPLCONF", "CAPA", "dragonfly"]) else { panic!() };
    assert_eq!(a[1], Reply::Simple("SYNC1".into()));
    let Reply::Array(b) = c.call(&["REPLCONF", "capa", "dragonfly"]) else { panic!() };
    assert_eq!(b[1], Reply::Simple("SYNC2".into()), "every capa dragonfly opens a new session");
    assert_eq!(c.call(&["REPLCONF", "client-version", "5"]), ok(), "after capa it is harmless");

    // Inline commands, as Dragonfly's own replica sends them.
    c.send_raw(b"DFLY REPLICAOFFSET\r\n");
    assert_eq!(c.read_reply().unwrap(), Reply::Array(vec![Reply::Int(1), Reply::Int(1)]));

    let id = emu.master_replid();
    let flow = |args: &[&str]| {
        let mut f = Client::connect(emu.addr());
        let mut full = vec!["DFLY", "FLOW"];
        full.extend_from_slice(args);
        f.call(&full)
    };
    assert_eq!(flow(&[&id, "SYNC2"]), err("ERR syntax error"));
    assert_eq!(flow(&[&id, "SYNC2", "0", "1", "2", "3"]), err("ERR syntax error"));
    assert_eq!(flow(&["0123456789012345678901234567890123456789", "SYNC2", "0"]), err("ERR bad master id"));
    assert_eq!(flow(&[&id, "SYNC2", "x"]), err("ERR value is not an integer or out of range"));
    assert_eq!(flow(&[&id, "SYNC2", "2"]), err("ERR value is not an integer or out of range"));
    assert_eq!(flow(&[&id, "SYNC2", "0", "abc"]), err("ERR value is not an integer or out of range"));
    assert_eq!(flow(&[&id, "SYNX2", "0"]), err("ERR bad sync id"));
    assert_eq!(flow(&[&id, "SYNC99", "0"]), err("ERR syncid not found"));
    assert_eq!(flow(&[&id, "SYNC2", "0", "someone-else", "1-1-1"]), err("ERR syntax error"), "one LSN per shard");

    assert_eq!(c.call(&["DFLY", "SYNC", "SYNC2"]), err("ERR invalid state"), "SYNC before every FLOW");
    assert_eq!(c.call(&["DFLY", "STARTSTABLE", "SYNC2"]), err("ERR invalid state"));
    assert_eq!(c.call(&["DFLY", "SYNC", "SYNC77"]), err("ERR syncid not found"));
    assert!(matches!(c.call(&["DFLY", "BOGUS"]), Reply::Error(e) if e.contains("Unknown subcommand")));
    assert!(matches!(c.call(&["NOSUCH"]), Reply::Error(e) if e.starts_with("ERR unknown command")));

    // Ordinary clients can write (for the demo).
    assert_eq!(c.call(&["SET", "k", "v"]), ok());
    assert!(matches!(c.call(&["INCR", "k"]), Reply::Error(e) if e.contains("not an integer")));
    assert_eq!(c.call(&["SELECT", "3"]), ok());
    assert_eq!(c.call(&["SET", "k3", "v"]), ok());
    assert!(emu.data()[&3].contains_key(b"k3".as_slice()));

    // Malformed RESP: an error, then the connection is closed.
    c.send_raw(b"*1\r\n$x\r\n");
    assert!(matches!(c.read_reply().unwrap(), Reply::Error(e) if e.contains("Protocol error")));
    assert!(c.sees_eof());
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
}

#[test]
fn v1_36_answers_capa_with_four_elements() {
    let emu = Emulator::start(Config { shards: 3, dialect: Dialect::V1_36, ..Config::default() }).unwrap();
    let m = handshake(emu.addr(), None);
    assert_eq!(
        m.capa,
        vec![Reply::Simple(emu.master_replid()), Reply::Simple("SYNC1".into()), Reply::Int(3), Reply::Int(4)]
    );
    let mut c = Client::connect(emu.addr());
    assert!(c.call(&["INFO", "server"]).text().contains("dragonfly_version:df-v1.36.0"));
}

#[test]
fn client_version_before_capa_is_a_loud_violation() {
    let emu = Emulator::start(Config::default()).unwrap();
    let mut c = Client::connect(emu.addr());
    c.send(&["REPLCONF", "CLIENT-VERSION", "4"]);
    assert!(c.sees_eof(), "the connection is closed, as the real master would crash");
    let v = emu.violations();
    assert_eq!(v.len(), 1);
    assert!(v[0].contains("CLIENT-VERSION"), "{v:?}");
}

#[test]
fn auth_is_required_on_every_connection_when_a_password_is_set() {
    let emu = Emulator::start(Config { shards: 2, password: Some("s3cret".into()), ..Config::default() }).unwrap();
    let mut c = Client::connect(emu.addr());
    assert_eq!(c.call(&["PING"]), err("NOAUTH Authentication required."));
    assert_eq!(c.call(&["AUTH", "nope"]), err("WRONGPASS invalid username-password pair or user is disabled."));
    assert_eq!(c.call(&["AUTH", "default", "s3cret"]), ok());
    assert_eq!(c.call(&["PING"]), Reply::Simple("PONG".into()));
    let mut unauth_flow = Client::connect(emu.addr());
    assert_eq!(unauth_flow.call(&["DFLY", "FLOW", "x", "SYNC1", "0"]), err("NOAUTH Authentication required."));
    let mut m = handshake(emu.addr(), Some("s3cret"));
    let flows = full_sync(&mut m);
    close_gracefully(m, flows);

    let open = Emulator::start(Config::default()).unwrap();
    let mut c = Client::connect(open.addr());
    assert!(matches!(c.call(&["AUTH", "x"]), Reply::Error(e) if e.contains("without any password configured")));
}

#[test]
fn the_dfly_state_machine_rejects_out_of_order_commands() {
    let emu = Emulator::start(Config { shards: 2, ..Config::default() }).unwrap();
    let mut m = handshake(emu.addr(), None);
    let mut flows = m.open_flows(None);
    assert_eq!(m.startstable(), err("ERR invalid state"), "STARTSTABLE before SYNC with FULL flows");
    assert_eq!(m.sync(), ok());
    assert_eq!(m.sync(), err("ERR invalid state"), "SYNC twice");
    let mut late = Client::connect(emu.addr());
    assert_eq!(late.call(&["DFLY", "FLOW", &m.replid, &m.sync_id, "0"]), err("ERR invalid state"), "FLOW after SYNC");
    for f in flows.iter_mut() {
        f.wait_fullsync_end();
    }
    assert_eq!(m.startstable(), ok());
    assert_eq!(m.startstable(), err("ERR invalid state"), "STARTSTABLE twice");
    for f in flows.iter_mut() {
        f.wait_token();
    }
    assert!(emu.violations().is_empty());
}

#[test]
fn acks_are_never_answered_and_misuse_is_recorded() {
    let emu = Emulator::start(Config { shards: 1, ..Config::default() }).unwrap();
    let mut m = handshake(emu.addr(), None);
    let mut flows = full_sync(&mut m);
    flows[0].ack(1);
    assert!(emu.wait_acked_all(WAIT), "ACK 1 = the shard's next LSN");
    assert_eq!(emu.acked(), vec![1]);
    assert!(emu.violations().is_empty());

    // ACK on the main connection: no reply (the next reply is PING's).
    m.main.send(&["REPLCONF", "ACK", "1"]);
    assert_eq!(m.main.call(&["PING"]), Reply::Simple("PONG".into()));
    assert!(emu.violations()[0].contains("main connection"));

    // Anything but ACK on a flow is answered into the data stream and breaks it.
    flows[0].send_raw(b"REPLCONF ACK 5 extra\r\n");
    let e = flows[0].wait_failed();
    assert!(e.contains("journal opcode"), "{e}");
    assert_eq!(emu.violations().len(), 2, "{:?}", emu.violations());
}

#[test]
fn closing_any_connection_cancels_the_session_and_the_close_kind_is_recorded() {
    let emu = Emulator::start(Config { shards: 3, ..Config::default() }).unwrap();
    let mut m = handshake(emu.addr(), None);
    let mut flows = full_sync(&mut m);
    let reset = flows.remove(1);
    reset.reset();
    for f in flows.iter_mut() {
        assert!(f.wait_closed().is_ok(), "flow {}: the master shuts the other flows down", f.index);
    }
    assert_eq!(m.startstable(), err("ERR syncid not found"), "the session is gone");
    drop(flows);
    m.main.stream.shutdown(std::net::Shutdown::Both).unwrap();
    assert!(emu.wait_session_closed(WAIT));
    assert_eq!(emu.flow_closed_cleanly(), vec![Some(true), Some(false), Some(true)]);
}
