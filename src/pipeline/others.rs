//! Other runs sharing the target: who they are, and what a full resync of this run may delete
//! without touching their keys.
//!
//! Another run is known by its checkpoint markers (`df2redis:checkpoint:<name>:*`, written
//! from its stable sync on) or its lease (`df2redis:lease:<name>`, held from its start, so a
//! run still in its full sync counts too). Markers of the earlier unnamed format are not
//! another run's: that format allowed one run per target, the one being upgraded.

use std::collections::BTreeSet;

use super::prepare::StartError;
use super::shared::Fault;
use crate::checkpoint::{self, Owner};
use crate::config::Config;
use crate::source::cluster::SlotRanges;
use crate::target::{Target, TargetError};

/// The names of the other runs that have markers or a lease on the target.
pub fn other_runs(target: &mut Target, name: &str) -> Result<BTreeSet<String>, TargetError> {
    let mut names = BTreeSet::new();
    for k in target.internal_keys()? {
        match checkpoint::owner_of(&k) {
            Some(Owner::Run(n)) => {
                names.insert(n);
            }
            Some(Owner::Legacy) => {}
            None => names.extend(checkpoint::lease_owner(&k)),
        }
    }
    names.remove(name);
    // A master of a several-source run (`<run>+<host>-<port>`): the run's own lease is not
    // another run's; its other masters are.
    if let Some((run, _)) = name.split_once('+') {
        names.remove(run);
    }
    Ok(names)
}

/// Whether the target holds markers of the earlier unnamed format.
pub fn has_legacy_markers(target: &mut Target) -> Result<bool, TargetError> {
    Ok(target.marker_owners()?.contains(&Owner::Legacy))
}

/// `--on-resync flush` with other runs on the target (or other masters in this run): delete
/// the keys this source owns, never a flush: for a Dragonfly cluster node the keys of its
/// slots, and of those the ones this run's key rules select (SCAN and UNLINK, every db this
/// run may write; every master of a cluster). Without slots or key rules this source's keys
/// cannot be told apart from theirs: refuse.
pub fn delete_own_keys(
    target: &mut Target,
    cfg: &Config,
    owned: Option<&SlotRanges>,
    why: &str,
    others: &BTreeSet<String>,
) -> Result<(), StartError> {
    let mut names = others.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
    if cfg.multi_source {
        names = if names.is_empty() { "the other masters of this run".into() } else { format!("{names} and the other masters of this run") };
    }
    let owned = owned.filter(|o| !o.is_all());
    if let Some(o) = owned {
        return delete_slots(target, cfg, o, why, &names);
    }
    if !cfg.filter.has_key_rules() {
        return Err(StartError::Failed(
            format!(
                "full resync: {why}; --on-resync flush would empty the target, but other df2redis runs write to it \
                 too (run names {names}: their checkpoint markers or leases are there), and this source's keys cannot \
                 be told apart from theirs: flushing would destroy their data. Stopping. Choose --on-resync keep \
                 (write over the target; keys deleted on the master meanwhile survive), or give each run \
                 --include/--exclude rules that select only its own keys (a resync then deletes only those), or \
                 replicate each source into its own target"
            ),
            Fault::Fatal,
        ));
    }
    let dbs = target_dbs(target, cfg)?;
    log::warn!(
        "full resync: {why}; other df2redis runs write to this target (run names {names}): deleting only the keys \
         this run's rules select ({}) in target dbs {dbs:?}, not flushing",
        cfg.filter.describe()
    );
    let n = target
        .unlink_where(&dbs, &|k| cfg.filter.key_passes(k))
        .map_err(|e| format!("deleting this run's keys for the full resync: {e}"))?;
    log::info!("full resync: deleted {n} keys selected by this run's rules; other runs' keys untouched");
    Ok(())
}

/// A Dragonfly cluster node's resync: delete the keys of the slots it owns (and, with key
/// rules, only those they select). Other masters own the other slots, so nothing of theirs
/// is touched. On a Redis Cluster target this goes slot by slot (the cost is this master's
/// keys); on a server it is one SCAN.
fn delete_slots(target: &mut Target, cfg: &Config, owned: &SlotRanges, why: &str, others: &str) -> Result<(), StartError> {
    let dbs = target_dbs(target, cfg)?;
    let with_rules = if cfg.filter.has_key_rules() { format!(" and selected by this run's rules ({})", cfg.filter.describe()) } else { String::new() };
    let others = if others.is_empty() { String::new() } else { format!(" (other writers: {others})") };
    log::warn!("full resync: {why}; deleting only the keys in the master's hash slots {owned}{with_rules}, not flushing{others}");
    let n = target
        .unlink_in_slots(&dbs, owned, &|k| cfg.filter.key_passes(k))
        .map_err(|e| format!("deleting the keys of slots {owned} for the full resync: {e}"))?;
    log::info!("full resync: deleted {n} keys in slots {owned}; keys of other slots untouched");
    Ok(())
}

/// The target dbs this run may have written: those with keys, and with `--dbs`, only the ones
/// its source dbs map to.
fn target_dbs(target: &mut Target, cfg: &Config) -> Result<Vec<u32>, TargetError> {
    let mut dbs = target.dbs_with_keys()?;
    if !target.is_cluster() {
        if let Some(selected) = &cfg.filter.dbs {
            let mapped: BTreeSet<u32> = selected.iter().map(|d| cfg.db_map.get(d).copied().unwrap_or(*d)).collect();
            dbs.retain(|d| mapped.contains(d));
        }
    }
    Ok(dbs)
}
