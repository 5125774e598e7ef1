//! The `dfly-emulator` binary: ready line, a replica can sync from it, it exits when asked.

mod emulator_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use emulator_support::*;

#[test]
fn the_binary_serves_a_dataset_and_a_live_journal_and_stops_on_stdin_eof() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dfly-emulator"))
        .args([
            "--port",
            "0",
            "--shards",
            "2",
            "--dataset",
            "small",
            "--keys",
            "500",
            "--journal-rate",
            "500",
            "--exit-on-stdin-eof",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dfly-emulator");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let rest = line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("ready line: {line:?}"));
    let (addr, replid) = rest.split_once(" replid=").unwrap();
    assert_eq!(replid.len(), 40);

    let mut m = handshake(addr.parse().unwrap(), None);
    assert_eq!(m.replid, replid);
    let mut flows = full_sync(&mut m);
    let mut replica = Replica::default();
    let mut keys = 0;
    for f in flows.iter_mut() {
        keys += f.items.iter().filter(|i| matches!(i, df2redis::protocol::Item::Value(v) if v.last)).count();
        // The generator keeps writing: records keep coming after the token.
        let from = f.wait_token();
        f.wait_item(
            from,
            "a live journal record",
            |i| matches!(i, df2redis::protocol::Item::Journal(r) if r.lsn.is_some()),
        );
        replica.apply_all(&f.items);
    }
    assert!(keys >= 500, "the dataset ({keys} entries) plus the generator's keys");
    close_gracefully(m, flows);

    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
