//! Replaying a capture's items directly (one replayer per flow, one connection) into a real
//! server, with the cross-flow barrier for global commands done sequentially: a flow that
//! reaches FLUSHDB/FLUSHALL stops until every flow has reached the same txid, then it runs
//! once. Compared with the master's data at each phase of the capture.

use std::collections::BTreeSet;

use super::redis_server::{compare, read_all, RedisServer, ServerKind};
use super::*;

use df2redis::protocol::{FlowDecoder, Item, Limits};
use df2redis::replay::{Clock, Cmd, Policy, RecordClass, ReplayStats, Replayer};
use df2redis::target::server::Version;
use df2redis::target::{Standalone, TargetError};

pub struct Flow {
    items: Vec<Item>,
    pos: usize,
    replayer: Replayer,
}

/// Keys whose TTL had passed before the test replayed the record that set it, and keys a
/// command could not touch because of that (see `late_ttl_keys`).
#[derive(Default)]
pub struct Late {
    ttl_passed: BTreeSet<(u32, Vec<u8>)>,
    tainted: BTreeSet<(u32, Vec<u8>)>,
}

/// Apply a batch. The one error tolerated is "no such key" on a key that had already expired
/// on the target only because the capture is replayed late; its keys are then not judged.
fn apply(w: &mut Standalone, cmds: &[Cmd], late: &mut Late) {
    match w.apply(cmds) {
        Ok(()) => {}
        Err(TargetError::Rejected { index, error, more: 0, .. })
            if error.contains("no such key")
                && late.ttl_passed.contains(&(cmds[index].db, cmds[index].key().unwrap_or_default().to_vec())) =>
        {
            let c = &cmds[index];
            eprintln!("tolerated: {} failed with {error:?}: its key expired early because the capture is replayed late", c.describe());
            late.tainted.extend(c.argv.iter().skip(1).map(|k| (c.db, k.to_vec())));
        }
        Err(e) => panic!("{e}"),
    }
}

/// Apply flow items until `stop` says so (the stopping item is applied too, unless it is a
/// global record: then the flow is left positioned on it and its txid is returned).
fn advance(f: &mut Flow, w: &mut Standalone, stop_at_token: bool, late: &mut Late) -> Option<u64> {
    let mut cmds: Vec<Cmd> = Vec::new();
    let mut blocked = None;
    while f.pos < f.items.len() {
        match &mut f.items[f.pos] {
            Item::Value(v) => f.replayer.value(v, &mut cmds),
            Item::Journal(r) => match f.replayer.record(r, &mut cmds).unwrap() {
                RecordClass::Normal => {}
                RecordClass::Global { txid } => {
                    blocked = Some(txid);
                    break;
                }
            },
            Item::Token(_) if stop_at_token => {
                f.pos += 1;
                break;
            }
            _ => {}
        }
        f.pos += 1;
        if cmds.len() >= 1000 {
            apply(w, &cmds, late);
            cmds.clear();
        }
    }
    apply(w, &cmds, late);
    blocked
}

/// Run every flow to its end, executing each global command once when all flows reached it.
fn run_with_barrier(flows: &mut [Flow], w: &mut Standalone, late: &mut Late) -> usize {
    let mut globals = 0;
    loop {
        let blocked: Vec<Option<u64>> = flows.iter_mut().map(|f| advance(f, w, false, late)).collect();
        if blocked.iter().all(Option::is_none) {
            return globals;
        }
        let txids: Vec<u64> = blocked.iter().flatten().copied().collect();
        assert!(
            txids.len() == flows.len() && txids.iter().all(|&t| t == txids[0]),
            "flows stopped at different global commands or ended before one: {blocked:?}"
        );
        let Item::Journal(r) = &flows[0].items[flows[0].pos] else { unreachable!() };
        apply(w, &[flows[0].replayer.global_command(r)], late);
        globals += 1;
        for f in flows.iter_mut() {
            f.pos += 1;
        }
    }
}

/// Compare the target with section `phase` of the capture's expected data `all`.
fn check(fx: &Fixture, all: &serde_json::Value, phase: &str, srv: &RedisServer, ttls: &[(u32, Vec<u8>, i64)], tainted: &BTreeSet<(u32, Vec<u8>)>) {
    let mut expected = parse_dataset(&all[phase]);
    // After the journal phase: what the master applied without journaling it is not judged
    // (see dragonfly_versions); everything else is.
    if phase != "at_startstable" {
        for note in dragonfly_versions::without_unjournaled_reads(fx, &mut expected, &parse_dataset(&all["at_startstable"])) {
            eprintln!("{note}");
        }
    }
    let mut late = late_ttl_keys(ttls, &expected);
    late.extend(tainted.iter().cloned());
    for r in dragonfly_versions::unjournaled_reads(fx) {
        assert!(!late.contains(&(r.db, r.key.to_vec())), "{}: the stream of an unjournaled read must still be judged", fx.name);
    }
    let fx = &fx.name;
    let mut c = srv.conn();
    let actual = read_all(&mut c);
    let (diffs, compared, expired) = compare(&expected, &actual, &mut c, 2000, &late);
    assert!(diffs.is_empty(), "{fx} {phase}: {} differences:\n{}", diffs.len(), diffs.join("\n"));
    assert!(compared > 0);
    eprintln!(
        "{fx} {phase}: {compared} keys equal, {expired} expired by now and absent as they should be, \
         {} not judged (an absolute TTL they were given had passed at replay time: {:?})",
        late.len(),
        late.iter().map(|(_, k)| String::from_utf8_lossy(k).into_owned()).collect::<Vec<_>>()
    );
}


/// Replay every capture into a fresh server of `kind`, with replayers told the server's
/// version, checking each phase against expected.json; returns each capture's name and the
/// replay counts (skipped/altered by reason) of all its flows.
pub fn replay_every_capture(kind: ServerKind, version: Version) -> Vec<(String, ReplayStats)> {
    let mut all = Vec::new();
    for fx in fixtures() {
        let srv = RedisServer::start_kind(kind, &[]);
        let mut w = Standalone::connect(&srv.addr(), None, None).unwrap();
        let decoded: Vec<Vec<Item>> = (0..fx.num_flows()).map(|i| fx.decode(i, 1 << 16)).collect();
        let mut ttls: Vec<_> = decoded.iter().flat_map(|items| absolute_ttls(items)).collect();
        let mut late = Late::default();
        // Generous margin: the replay of one capture takes seconds.
        let soon = redis_server::now_ms() + 60_000;
        late.ttl_passed = ttls.iter().filter(|t| t.2 < soon).map(|(db, k, _)| (*db, k.clone())).collect();
        // Decisions about member TTLs and keys already expired are made as of the capture, so
        // the comparison with the master's data at that time holds whenever the test runs.
        let capture_ms = capture_ms(&fx, &decoded[0]);
        let replayer = || Replayer::new(Policy::default(), Clock::Fixed(capture_ms)).with_target_version(version);
        let mut flows: Vec<Flow> = decoded.into_iter().map(|items| Flow { items, pos: 0, replayer: replayer() }).collect();
        for f in flows.iter_mut() {
            assert_eq!(advance(f, &mut w, true, &mut late), None, "{}: global command before the token", fx.name);
        }
        let expected = fx.expected();
        check(&fx, &expected, "at_startstable", &srv, &ttls, &late.tainted);
        let globals = run_with_barrier(&mut flows, &mut w, &mut late);
        if fx.name.contains("globals") {
            assert!(globals >= 2, "{}: expected FLUSHDB and FLUSHALL, ran {globals} global commands", fx.name);
        }
        check(&fx, &expected, "final", &srv, &ttls, &late.tainted);
        let mut stats = ReplayStats::default();
        for f in &flows {
            stats.merge(f.replayer.stats());
        }

        if let Some(partial) = fx.partial() {
            let mut pflows: Vec<Flow> = (0..fx.num_flows())
                .map(|i| Flow { items: partial_items(&fx, &partial, i), pos: 0, replayer: replayer() })
                .collect();
            ttls.extend(pflows.iter().flat_map(|f| absolute_ttls(&f.items)));
            late.ttl_passed.extend(ttls.iter().filter(|t| t.2 < soon).map(|(db, k, _)| (*db, k.clone())));
            run_with_barrier(&mut pflows, &mut w, &mut late);
            check(&fx, &expected, "after_partial_resume", &srv, &ttls, &late.tainted);
            for f in &pflows {
                stats.merge(f.replayer.stats());
            }
        }
        all.push((fx.name.clone(), stats));
    }
    all
}

/// The capture's own time: its snapshot's creation plus the full sync's duration (Unix ms).
pub fn capture_ms(fx: &Fixture, first_flow: &[Item]) -> u64 {
    ctime(first_flow) * 1000 + (fx.session["full_sync_seconds"].as_f64().unwrap() * 1000.0) as u64
}

/// The items of flow `i`'s partial-sync stream (`partial.json` names where it resumes).
pub fn partial_items(fx: &Fixture, partial: &serde_json::Value, i: usize) -> Vec<Item> {
    let lsn = partial["resume_lsns"][i].as_u64().unwrap();
    let mut d = FlowDecoder::partial(Some(i as u32), lsn, Limits::default());
    let mut items = Vec::new();
    d.feed(&fx.partial_bytes(i), &mut items).unwrap();
    d.finish().unwrap();
    items
}
