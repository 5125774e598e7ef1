//! Fuzz the replay layer: decoded snapshot items and journal records to Redis commands.
//!
//! The stream is decoded by a `FlowDecoder` as in `flow_decoder`; every `Item::Value` goes to
//! `Replayer::value` and every `Item::Journal` to `Replayer::record_owned` (after
//! `global_command` for FLUSHALL/FLUSHDB, as the pipeline does), under a policy chosen by the
//! first byte. Replay errors are expected; every command produced must satisfy `check` (which
//! also runs the cluster checkpoints' classification and slot split on it).
//!
//! Input layout: one options byte, then the `flow_decoder` input (2-byte header and the stream,
//! see `fuzz/src/lib.rs`):
//!
//! ```text
//! byte 0  options  bit 0     JSON policy: 0 = Skip, 1 = JsonSet
//!                  bit 1     member TTL policy: 0 = DropTtl, 1 = Skip
//!                  bit 2     fresh target (no DEL before snapshot entries)
//!                  bit 3     db map {0->1, 1->0, 2->0} (FLUSHDB in db 1 or 2 is then an error)
//!                  bits 4-5  fixed clock: 1.7e12, 0, 1.8e12 or 4.1e12 Unix ms
//!                  bits 6-7  unused
//! ```
#![no_main]

use std::collections::BTreeMap;

use df2redis::protocol::{FlowDecoder, Item};
use df2redis::replay::{Clock, Cmd, JsonPolicy, MemberTtlPolicy, Policy, RecordClass, Replayer};
use df2redis_fuzz::{limits, split_size, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

/// Realistic instants only (2023, 1970, 2027, 2100).
const CLOCKS: [u64; 4] = [1_700_000_000_000, 0, 1_800_000_000_000, 4_102_444_800_000];

fn replayer(opts: u8) -> Replayer {
    let policy = Policy {
        json: if opts & 1 != 0 { JsonPolicy::JsonSet } else { JsonPolicy::Skip },
        member_ttl: if opts & 2 != 0 { MemberTtlPolicy::Skip } else { MemberTtlPolicy::DropTtl },
    };
    let clock = Clock::Fixed(CLOCKS[usize::from((opts >> 4) & 3)]);
    let r = Replayer::new(policy, clock).with_fresh_target(opts & 4 != 0);
    if opts & 8 != 0 {
        r.with_db_map(BTreeMap::from([(0, 1), (1, 0), (2, 0)]))
    } else {
        r
    }
}

/// A command name the replayer may build: ASCII uppercase letters, digits, '.', '_' or '-'.
fn well_formed_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.iter().all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

/// Invariants of every produced command. `carried` is the name of the journal record the
/// commands come from: a command with exactly that name is the record's own command (passed
/// through, or with Dragonfly-only arguments removed), whose name is the master's, not the
/// replayer's, and is not checked (Redis rejects a bad one with an error reply). Every other name
/// was built by the replayer.
fn check(cmds: &[Cmd], carried: Option<&[u8]>) {
    for c in cmds {
        let name = c.argv.get(0);
        assert!(!c.argv.is_empty() && name.is_some(), "command with an empty argv in db {}", c.db);
        let name = name.unwrap_or_default();
        // Must not panic, whatever the arguments hold: the description, and what a cluster
        // target's checkpoints ask of every command (is it safe to apply twice, its slots).
        let described = c.describe();
        let _ = df2redis::checkpoint::idempotent::replays_safely(&c.argv);
        let _ = df2redis::target::keyspec::split(c);
        if carried != Some(name) {
            assert!(well_formed_name(name), "malformed command name: {described} (argv {:?})", c.argv);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 1 + HEADER_LEN {
        return;
    }
    let (opts, mode, split, body) = (data[0], data[1], data[2], &data[1 + HEADER_LEN..]);
    let mut decoder = if mode & 1 != 0 {
        FlowDecoder::partial(None, u64::from(mode >> 2), limits(mode))
    } else {
        FlowDecoder::new(None, None, limits(mode))
    };
    let mut replayer = replayer(opts);
    let mut items: Vec<Item> = Vec::new();
    let mut cmds: Vec<Cmd> = Vec::new();

    for piece in body.chunks(split_size(split, body.len())) {
        let fed = decoder.feed(piece, &mut items);
        for item in items.drain(..) {
            match item {
                Item::Value(v) => {
                    replayer.value(&v, &mut cmds);
                    check(&cmds, None);
                }
                Item::Journal(rec) => {
                    let name = rec.argv.get(0).map(<[u8]>::to_vec);
                    let is_global = name
                        .as_deref()
                        .is_some_and(|n| n.eq_ignore_ascii_case(b"FLUSHALL") || n.eq_ignore_ascii_case(b"FLUSHDB"));
                    // Built before the record is handed over, as src/pipeline/flow.rs does.
                    let global = is_global.then(|| replayer.global_command(&rec));
                    let class = replayer.record_owned(rec, &mut cmds);
                    if let Ok(RecordClass::Global { .. }) = class {
                        // The pipeline expects the global command it built for exactly these.
                        let cmd = global.expect("Global class for a record that is not FLUSHALL/FLUSHDB");
                        check(std::slice::from_ref(&cmd), name.as_deref());
                    }
                    check(&cmds, name.as_deref());
                }
                _ => {}
            }
            cmds.clear();
        }
        if fed.is_err() {
            break;
        }
    }
    let _ = decoder.finish();
});
