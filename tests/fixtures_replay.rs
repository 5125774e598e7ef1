//! Replaying every capture, in stream order, into a real redis-server reproduces the master's
//! data: `at_startstable` after the snapshot part, `final` after the journal, and for
//! v1.40.1-default `after_partial_resume` after the partial-sync streams.
//!
//! This is the direct mapping of items to commands (one replayer per flow, one connection),
//! with the cross-flow barrier for global commands done sequentially
//! (`common::capture_replay`). The same replay into Redis 6.2 and Valkey is in
//! targets_redis62.rs and targets_valkey.rs.

mod common;

use common::capture_replay::replay_every_capture;
use common::redis_server::ServerKind;
use common::*;
use df2redis::replay::MODERN_TARGET;

#[test]
fn replaying_captures_reproduces_the_masters_data() {
    let replayed = replay_every_capture(ServerKind::Redis7, MODERN_TARGET);
    assert!(!replayed.is_empty());
}

/// The v1.36.0 capture's exception is exactly carol's delivery: it changes the master's data
/// (it cannot pass vacuously), only in that group, and every other difference a replica could
/// show in that stream is still reported.
#[test]
fn the_unjournaled_read_exception_sets_aside_only_that_read() {
    let fx = fixtures().into_iter().find(|f| !dragonfly_versions::journals_xreadgroup(f)).expect("a capture from a master older than v1.37.0");
    let all = fx.expected();
    let at_startstable = parse_dataset(&all["at_startstable"]);
    for phase in ["final", "after_partial_resume"] {
        let master = parse_dataset(&all[phase]);
        let mut replica = master.clone();
        let notes = dragonfly_versions::without_unjournaled_reads(&fx, &mut replica, &at_startstable);
        assert_eq!(notes.len(), 1, "{phase}: {notes:?}");
        let read = dragonfly_versions::TYPES_JOURNAL_READ;
        // Only that stream differs, and in it only that group.
        for (db, keys) in &master {
            for (k, v) in keys {
                let r = &replica[db][k];
                if (*db, k.as_slice()) != (read.db, read.key) {
                    assert_eq!(r, v, "{phase}: db {db} key {:?} changed", String::from_utf8_lossy(k));
                }
            }
        }
        let stream = |ds: &Dataset| match &ds[&read.db][read.key].val {
            Val::Stream(s) => s.clone(),
            other => panic!("{other:?}"),
        };
        let (m, r) = (stream(&master), stream(&replica));
        assert_ne!(m, r, "{phase}: the exception changed nothing");
        assert_eq!((&m.entries, &m.last_id, m.entries_added, &m.max_deleted_id), (&r.entries, &r.last_id, r.entries_added, &r.max_deleted_id));
        assert_eq!(m.groups.len(), r.groups.len());
        for (gm, gr) in m.groups.iter().zip(&r.groups) {
            if gm.name != read.group {
                assert_eq!(gm, gr, "{phase}: another group changed");
                continue;
            }
            let others = |g: &Group| g.pending.iter().filter(|p| p.1 != read.consumer).cloned().collect::<Vec<_>>();
            assert_eq!(others(gm), gr.pending, "{phase}: other consumers' pending entries changed");
            assert!(gm.pending.len() > gr.pending.len());
            assert_eq!(gm.consumers.len(), gr.consumers.len() + 1);
        }
        // A replica differing anywhere else in the stream is reported (g1 comes first, and
        // there are other groups).
        assert!(r.groups[0].name == read.group && r.groups.len() > 1);
        let g1 = m.groups[0].clone();
        type Damage = Box<dyn Fn(&mut Stream)>;
        let damages: Vec<(&str, Damage)> = vec![
            ("another consumer's delivery count", Box::new(|s| s.groups[0].pending[0].2 += 1)),
            ("another consumer's pending entry gone", Box::new(|s| {
                s.groups[0].pending.remove(0);
            })),
            ("the read's consumer present", Box::new(|s| {
                s.groups[0].consumers.insert(read.consumer.to_vec());
            })),
            ("the master's last delivered id", Box::new(move |s| s.groups[0].last_delivered_id = g1.last_delivered_id.clone())),
            ("another group's last delivered id", Box::new(|s| s.groups[1].last_delivered_id = "0-1".into())),
            ("a group missing", Box::new(|s| {
                s.groups.pop();
            })),
            ("an entry missing", Box::new(|s| {
                s.entries.pop();
            })),
        ];
        for (what, damage) in damages {
            let mut bad = r.clone();
            damage(&mut bad);
            let (e, a) = (&replica[&read.db][read.key].val, &Val::Stream(bad));
            assert!(diff_val(e, a).is_some(), "{phase}: {what} was not reported");
        }
    }
}
