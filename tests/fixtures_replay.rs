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
use df2redis::replay::MODERN_TARGET;

#[test]
fn replaying_captures_reproduces_the_masters_data() {
    let replayed = replay_every_capture(ServerKind::Redis7, MODERN_TARGET);
    assert!(!replayed.is_empty());
}
