//! Hash slots of a Dragonfly cluster node as a source: which the session's master owns, what
//! its resume point assumed, and what a slot migration does to the sessions of one run.
//!
//! What Dragonfly v1.40 does during a slot migration (docs/protocol/dragonfly-cluster.md,
//! section C, read from its `cluster/` sources): the new owner executes the copied keys and
//! the forwarded writes as ordinary commands, so they are in *its* replication journal while
//! the old owner still owns and journals the slots; `CLUSTER SLOTS` keeps showing the pushed
//! layout until the controller commits the new one, and then the old owner flushes the slots
//! and journals one `DFLYCLUSTER FLUSHSLOTS <start> <end>...` record per flow. The layout
//! change itself is never journaled. Two sessions would then write the same keys to the
//! target, each in its own master's order, and nothing orders the old owner's last writes
//! against the new owner's first ones (and applying FLUSHSLOTS would delete the migrated
//! keys). So df2redis does not try to interleave them:
//!
//! - a journal record for a key outside the slots the master owned when the session started,
//!   or a `FLUSHSLOTS` record, ends that session (a transient fault: it restarts); snapshot
//!   keys outside them are left out (counted);
//! - a session records its master's slots next to its checkpoints
//!   (`df2redis:checkpoint:<run>:slots`); a restart that finds them changed is a full resync of
//!   that master, which deletes only the keys of the slots it owns now;
//! - within one run, a session that starts owning slots another running session still owns
//!   (the old owner has not reached its FLUSHSLOTS yet) first stops that session and waits for
//!   it to end ([`claim`]), so the old owner can never write over the new owner's snapshot.
//!
//! While a migration is in progress the new owner's session restarts with the backoff (its
//! master has not yet taken the slots over); once the cluster's layout changed, both masters
//! resync their slots and the run continues, exact.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::prepare::StartError;
use super::shared::{Failure, Fault, Shared};
use crate::checkpoint::Resume;
use crate::config::Config;
use crate::protocol::Argv;
use crate::source::cluster::SlotRanges;
use crate::target::keyspec;
use crate::target::resp::Reply;
use crate::target::slots::key_slot;
use crate::target::Target;

/// The skip reason of a snapshot key in a slot its master did not own at the session's start.
pub const NOT_OWNED: &str = "snapshot key in a slot its master does not own yet (a slot migration into it in progress)";

/// The key holding the slots run `run`'s master owned when its checkpoints began.
pub fn slots_key(run: &str) -> Vec<u8> {
    format!("{}{run}:slots", crate::checkpoint::MARKER_PREFIX).into_bytes()
}

/// Why a journal record cannot be applied by a session whose master owned `owned` at its start:
/// a slot migration (see the module doc); `None` for an ordinary record.
pub fn foreign(argv: &Argv, owned: &SlotRanges) -> Option<String> {
    let name = argv.get(0).unwrap_or_default();
    if name.eq_ignore_ascii_case(b"DFLYCLUSTER") && argv.get(1).is_some_and(|s| s.eq_ignore_ascii_case(b"FLUSHSLOTS")) {
        let ranges: Vec<String> = argv.iter().skip(2).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let ranges = ranges.chunks(2).map(|r| r.join("-")).collect::<Vec<_>>().join(",");
        return Some(format!("the master journaled DFLYCLUSTER FLUSHSLOTS {ranges}: it gave those slots up (a slot migration ended)"));
    }
    for &i in keyspec::keys_of(argv).indices() {
        let key = argv.get(i).unwrap_or_default();
        let slot = key_slot(key);
        if !owned.contains(slot) {
            return Some(format!(
                "the master journaled {} on key {:?} in slot {slot}, which it did not own when this session started \
                 (it owned {owned}): a slot migration into it is in progress",
                String::from_utf8_lossy(name).to_ascii_uppercase(),
                String::from_utf8_lossy(key)
            ));
        }
    }
    None
}

/// A resume is only valid for the slots the checkpoints were taken with.
pub fn check_resume(target: &mut Target, run: &str, owned: &SlotRanges, resume: Resume) -> Result<Resume, StartError> {
    if !matches!(resume, Resume::At(_)) {
        return Ok(resume);
    }
    let key = slots_key(run);
    let then = match target.query_key(&key, &[b"GET", &key]).map_err(|e| e.to_string())? {
        Reply::Bulk(Some(v)) => SlotRanges::parse(&String::from_utf8_lossy(&v)),
        _ => None,
    };
    Ok(match then {
        Some(then) if &then == owned => resume,
        Some(then) => Resume::Unusable(format!(
            "the master's hash slots changed since the checkpoints (it owned {then}, it owns {owned} now: a slot migration)"
        )),
        None => Resume::Unusable(format!(
            "the checkpoints do not say which hash slots the master owned ({} is missing)",
            String::from_utf8_lossy(&key)
        )),
    })
}

/// Record the slots a new full sync starts with (after the old markers were deleted).
pub fn record(target: &mut Target, run: &str, owned: &SlotRanges) -> Result<(), StartError> {
    let key = slots_key(run);
    let v = owned.to_string();
    match target.query_key(&key, &[b"SET", &key, v.as_bytes()]).map_err(|e| e.to_string())? {
        Reply::Error(e) => Err(format!("recording the master's slots in {}: {e}", String::from_utf8_lossy(&key)).into()),
        _ => Ok(()),
    }
}

/// The sessions of this run that own slots, by source number.
#[derive(Default)]
struct Registry {
    owners: BTreeMap<usize, Owner>,
}

struct Owner {
    addr: String,
    slots: SlotRanges,
    shared: Option<Arc<Shared>>,
}

fn registry() -> &'static (Mutex<Registry>, Condvar) {
    static R: OnceLock<(Mutex<Registry>, Condvar)> = OnceLock::new();
    R.get_or_init(|| (Mutex::new(Registry::default()), Condvar::new()))
}

/// How long a session waits for the old owner of its slots to stop (its shutdown drains
/// its flows: bounded by the drain timeout).
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(120);

/// A session's claim on its master's slots; released when the session ends.
pub struct Claim {
    source: usize,
}

impl Claim {
    /// The session's threads are running: another session taking these slots over stops them
    /// through `shared`.
    pub fn attach(&self, shared: Arc<Shared>) {
        let (m, cv) = registry();
        if let Some(o) = m.lock().owners.get_mut(&self.source) {
            o.shared = Some(shared);
        }
        // A session waiting for these slots while this one was starting can stop it now.
        cv.notify_all();
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let (m, cv) = registry();
        m.lock().owners.remove(&self.source);
        cv.notify_all();
    }
}

/// Claim `owned` for this session (several sources in one run): a running session of another
/// source that still owns some of these slots is stopped (it restarts, finds its slots changed
/// and resyncs what it owns then), and this one waits until it has ended.
pub fn claim(cfg: &Config, owned: &SlotRanges) -> Result<Claim, StartError> {
    let (m, cv) = registry();
    let deadline = Instant::now() + HANDOVER_TIMEOUT;
    let mut reg = m.lock();
    loop {
        let old: Vec<usize> = reg.owners.iter().filter(|(&k, o)| k != cfg.source_index && o.slots.overlaps(owned)).map(|(&k, _)| k).collect();
        if old.is_empty() {
            break;
        }
        for k in &old {
            let o = &reg.owners[k];
            if let Some(sh) = &o.shared {
                if !sh.stop.is_stopped() {
                    sh.fail(Failure {
                        msg: format!(
                            "source {}: master {} now owns some of its hash slots ({owned}); this session stops so that \
                             its last writes cannot land after the new owner's (it restarts with the slots it owns now)",
                            o.addr, cfg.source.addr
                        ),
                        fault: Fault::Transient,
                    });
                }
            }
        }
        log::info!("source {}: waiting for the previous owner of slots {owned} to stop", cfg.source.addr);
        if cv.wait_until(&mut reg, deadline).timed_out() {
            let who: Vec<String> = old.iter().map(|k| reg.owners[k].addr.clone()).collect();
            return Err(StartError::Failed(
                format!(
                    "source {}: it owns slots {owned} now, but the session of {} that owned some of them did not stop \
                     within {} s",
                    cfg.source.addr,
                    who.join(", "),
                    HANDOVER_TIMEOUT.as_secs()
                ),
                Fault::Transient,
            ));
        }
    }
    reg.owners.insert(cfg.source_index, Owner { addr: cfg.source.addr.clone(), slots: owned.clone(), shared: None });
    Ok(Claim { source: cfg.source_index })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(parts: &[&str]) -> Argv {
        Argv::from_slices(parts)
    }

    #[test]
    fn a_new_owner_stops_the_old_one_and_waits_for_it() {
        let cfg = |k: usize, addr: &str| {
            let mut c = Config { source_index: 100 + k, multi_source: true, ..Default::default() };
            c.source.addr = addr.into();
            c
        };
        let old = claim(&cfg(0, "old:1"), &SlotRanges::parse("0-99").unwrap()).unwrap();
        let shared = Arc::new(Shared::new(1));
        old.attach(shared.clone());
        // Disjoint slots: no wait.
        drop(claim(&cfg(1, "other:1"), &SlotRanges::parse("100-199").unwrap()).unwrap());
        let new = std::thread::spawn(move || claim(&cfg(2, "new:1"), &SlotRanges::parse("50-60").unwrap()).map(|_| ()).is_ok());
        // The old owner's session is told to stop (transient, naming both) ...
        while !shared.stop.is_stopped() {
            std::thread::yield_now();
        }
        let e = shared.error().unwrap();
        assert!(e.contains("source old:1") && e.contains("master new:1 now owns some of its hash slots (50-60)"), "{e}");
        // ... and the new one goes on once it has ended.
        drop(old);
        assert!(new.join().unwrap());
    }

    #[test]
    fn foreign_records_are_named() {
        let owned = SlotRanges::parse("0-8191").unwrap();
        // "a" is slot 15495, "b" 3300.
        assert!(foreign(&argv(&["SET", "b", "1"]), &owned).is_none());
        let e = foreign(&argv(&["SET", "a", "1"]), &owned).unwrap();
        assert!(e.contains("slot 15495") && e.contains("\"a\"") && e.contains("0-8191"), "{e}");
        let e = foreign(&argv(&["DFLYCLUSTER", "FLUSHSLOTS", "0", "100"]), &owned).unwrap();
        assert!(e.contains("FLUSHSLOTS 0-100"), "{e}");
        assert!(foreign(&argv(&["PING"]), &owned).is_none());
        assert!(foreign(&argv(&["MSET", "b", "1", "a", "2"]), &owned).is_some());
    }
}
