//! RESTOREs the target refused, written as commands instead.
//!
//! A RESTORE can be refused for reasons df2redis cannot see in advance: `sanitize-dump-payload
//! yes` rejecting a payload, an ACL without `RESTORE`, a renamed command. The key is then
//! written as the element path would have written it (`DEL`, bounded element commands, the
//! TTL), counted by reason for the summary.
//!
//! By the time the refusal is read, later commands of the flow may have run: the rest of the
//! batch and the pipelines sent after it. Those that touch no refused key are unaffected.
//! Those that touch only the refused key ran on a missing key, so they run again after the
//! rebuild, in their order, which gives the key the value it has on the master. A later
//! command that touched the refused key *and* other keys (RENAME, SMOVE, SUNIONSTORE ...)
//! may have written a wrong value elsewhere: that cannot be repaired from here, and the run
//! stops with an error that says so (rerun with `--restore off`).

use crate::protocol::cursor::show;
use crate::protocol::rdb_type;
use crate::replay::{dump, Cmd};
use crate::target::keyspec;

/// What to send in place of refused RESTOREs, and why each was refused.
pub struct Plan {
    pub cmds: Vec<Cmd>,
    /// Per refused key: "<type>: <error>", for the summary's counts.
    pub reasons: Vec<String>,
}

/// `batch`: the batch whose replies were just read; `refused`: its refused RESTOREs (index,
/// error); `later`: the commands of the pipelines sent after it, in order.
pub fn plan<'a>(batch: &'a [Cmd], refused: &[(usize, String)], later: impl Iterator<Item = &'a Cmd> + Clone) -> Result<Plan, String> {
    let mut plan = Plan { cmds: Vec::new(), reasons: Vec::new() };
    for (i, error) in refused {
        let restore = &batch[*i];
        let key = restore.key().unwrap_or_default();
        let ty = restore.argv.get(3).and_then(|p| p.first().copied()).unwrap_or(u8::MAX);
        let describe = || format!("key {} (db {}, {})", show(key), restore.db, rdb_type::name(ty));
        let rebuilt = dump::fallback(restore).map_err(|e| format!("the target refused the RESTORE of {}: {error}; {e}", describe()))?;
        plan.cmds.extend(rebuilt);
        for c in batch[i + 1..].iter().chain(later.clone()) {
            if c.db != restore.db {
                continue;
            }
            let keys = keyspec::keys_of(&c.argv);
            let touches = |k: &usize| c.argv.get(*k) == Some(key);
            if !keys.indices().iter().any(touches) {
                continue;
            }
            if !keys.indices().iter().all(touches) {
                return Err(format!(
                    "the target refused the RESTORE of {} ({error}), and {} ran on that key before the refusal was \
                     read, writing other keys from it: the result cannot be repaired; run again with --restore off",
                    describe(),
                    c.describe()
                ));
            }
            plan.cmds.push(c.clone());
        }
        let error = error.split(" (on ").next().unwrap_or(error);
        plan.reasons.push(format!("{}: {}", rdb_type::name(ty), error));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restore_of_set(key: &[u8]) -> Cmd {
        dump::restore(0, key, None, &[rdb_type::SET, 1, 1, b'a'])
    }

    #[test]
    fn later_writes_to_the_key_run_again_after_the_rebuild() {
        let batch = vec![restore_of_set(b"s"), Cmd::new(0, &[b"SADD", b"s", b"b"]), Cmd::new(0, &[b"SET", b"x", b"1"])];
        let later = [Cmd::new(0, &[b"SREM", b"s", b"a"]), Cmd::new(1, &[b"SADD", b"s", b"other-db"])];
        let p = plan(&batch, &[(0, "ERR Bad data format".into())], later.iter()).unwrap();
        let got: Vec<Vec<&[u8]>> = p.cmds.iter().map(|c| c.argv.iter().collect()).collect();
        let want: [&[&[u8]]; 4] = [&[b"DEL", b"s"], &[b"SADD", b"s", b"a"], &[b"SADD", b"s", b"b"], &[b"SREM", b"s", b"a"]];
        assert_eq!(got, want);
        assert_eq!(p.reasons, ["set: ERR Bad data format"]);
    }

    #[test]
    fn a_later_multi_key_write_is_an_error() {
        let batch = vec![restore_of_set(b"s")];
        let later = [Cmd::new(0, &[b"SMOVE", b"s", b"t", b"a"])];
        let e = plan(&batch, &[(0, "NOPERM".into())], later.iter()).err().unwrap();
        assert!(e.contains("SMOVE") && e.contains("--restore off"), "{e}");
    }
}
