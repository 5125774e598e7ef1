//! Which commands may be applied again after a crash without changing the result.
//!
//! On a Redis Cluster the checkpoint markers cannot share a transaction with every command
//! (see [`super::cluster`]), so after a crash a node may hold an unknown prefix of the last
//! pipeline it was sent. Re-sending that pipeline is exact when each key's commands in it only
//! *assign*: set a value, a field, a member or a TTL to a given value, or delete. Applying such
//! a sequence `y` on top of any prefix `x` of itself gives `y` alone: every element `y` touches
//! ends with `y`'s last write to it, and an element `y` never touches was not touched by `x`
//! either. Everything else (INCR, LPUSH, APPEND, XADD, conditional forms such as SET NX or
//! ZADD GT, relative edits such as LTRIM) goes into the script that writes the marker, and
//! runs atomically with it.
//!
//! The list is deliberately short: a command missing from it only costs speed (it is run in
//! the script), a command wrongly on it would be applied twice.

use crate::protocol::Argv;

/// Whether `argv`, applied again on top of any prefix of the same sequence, leaves the key as
/// applying it once would (see the module documentation).
pub fn replays_safely(argv: &Argv) -> bool {
    let Some(name) = argv.get(0) else { return false };
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    if is(b"SET") {
        return set_options_assign(argv);
    }
    if is(b"ZADD") {
        return zadd_options_assign(argv);
    }
    if is(b"EXPIRE") || is(b"PEXPIRE") || is(b"EXPIREAT") || is(b"PEXPIREAT") {
        // With NX / XX / GT / LT the outcome depends on the TTL before.
        return argv.len() == 3;
    }
    if is(b"RESTORE") {
        return argv.iter().skip(4).any(|a| a.eq_ignore_ascii_case(b"REPLACE"));
    }
    const ASSIGN: &[&[u8]] =
        &[b"SETEX", b"PSETEX", b"MSET", b"DEL", b"UNLINK", b"HSET", b"HMSET", b"HDEL", b"SADD", b"SREM", b"ZREM", b"PERSIST"];
    ASSIGN.iter().any(|n| is(n))
}

/// `SET key value` with only EX/PX/EXAT/PXAT, KEEPTTL or GET (not NX, XX or anything newer).
fn set_options_assign(argv: &Argv) -> bool {
    let mut it = argv.iter().skip(3);
    while let Some(o) = it.next() {
        let is = |n: &[u8]| o.eq_ignore_ascii_case(n);
        if is(b"EX") || is(b"PX") || is(b"EXAT") || is(b"PXAT") {
            if it.next().is_none() {
                return false;
            }
        } else if !(is(b"KEEPTTL") || is(b"GET")) {
            return false;
        }
    }
    argv.len() >= 3
}

/// `ZADD key [CH] score member ...`: plain score assignments (not NX, XX, GT, LT or INCR).
fn zadd_options_assign(argv: &Argv) -> bool {
    for o in argv.iter().skip(2) {
        let is = |n: &[u8]| o.eq_ignore_ascii_case(n);
        if is(b"CH") {
            continue;
        }
        return !(is(b"NX") || is(b"XX") || is(b"GT") || is(b"LT") || is(b"INCR"));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safe(args: &[&str]) -> bool {
        replays_safely(&Argv::from_slices(args))
    }

    #[test]
    fn assignments_replay_and_the_rest_does_not() {
        for yes in [
            &["SET", "k", "v"][..],
            &["set", "k", "v", "EX", "10", "GET"],
            &["SET", "k", "v", "KEEPTTL"],
            &["HSET", "h", "f", "v"],
            &["DEL", "a", "b"],
            &["MSET", "a", "1", "b", "2"],
            &["ZADD", "z", "1", "m"],
            &["ZADD", "z", "CH", "inf", "m"],
            &["PEXPIREAT", "k", "123"],
            &["RESTORE", "k", "0", "payload", "REPLACE"],
            &["SADD", "s", "m"],
            &["PERSIST", "k"],
        ] {
            assert!(safe(yes), "{yes:?}");
        }
        for no in [
            &["INCR", "k"][..],
            &["LPUSH", "l", "v"],
            &["APPEND", "s", "v"],
            &["XADD", "x", "*", "f", "v"],
            &["SET", "k", "v", "NX"],
            &["SET", "k", "v", "EX"],
            &["SET", "k"],
            &["ZADD", "z", "GT", "1", "m"],
            &["ZADD", "z", "CH", "INCR", "1", "m"],
            &["EXPIRE", "k", "10", "NX"],
            &["RESTORE", "k", "0", "payload"],
            &["LTRIM", "l", "0", "1"],
            &["SETRANGE", "s", "0", "x"],
            &["HINCRBY", "h", "f", "1"],
            &[],
        ] {
            assert!(!safe(no), "{no:?}");
        }
    }
}
