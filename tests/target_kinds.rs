//! The test targets are what they claim to be: each kind starts from the binary
//! scripts/test.sh installed and answers INFO (and MODULE LIST) as that server. The tests that
//! replicate into Redis 6.2, Valkey or a module-loaded Redis rely on this check in
//! `RedisServer::start_kind`, so a wrong binary fails them instead of letting them pass.

mod common;

use common::redis_server::{RedisServer, ServerKind};

#[test]
fn every_target_kind_starts_and_is_what_it_says() {
    for kind in [ServerKind::Redis7, ServerKind::Redis62, ServerKind::Valkey8, ServerKind::Redis7Modules] {
        let s = RedisServer::start_kind(kind, &[]);
        let mut c = s.conn();
        let pong: String = redis::cmd("PING").query(&mut c).unwrap();
        assert_eq!(pong, "PONG", "{kind:?}");
    }
}

#[test]
#[should_panic(expected = "expected valkey-server")]
fn a_plain_redis_is_not_taken_for_valkey() {
    let s = RedisServer::start_kind(ServerKind::Redis7, &[]);
    ServerKind::Valkey8.assert_is(&mut s.conn());
}
