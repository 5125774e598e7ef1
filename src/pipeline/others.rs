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
    Ok(names)
}

/// Whether the target holds markers of the earlier unnamed format.
pub fn has_legacy_markers(target: &mut Target) -> Result<bool, TargetError> {
    Ok(target.marker_owners()?.contains(&Owner::Legacy))
}

/// `--on-resync flush` with other runs on the target: delete the keys this run's key rules
/// select (SCAN and UNLINK, every db this run may write; every master of a cluster), never a
/// flush. Without key rules this source's keys cannot be told apart from theirs: refuse.
pub fn delete_own_keys(target: &mut Target, cfg: &Config, why: &str, others: &BTreeSet<String>) -> Result<(), StartError> {
    let names = others.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
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
    let mut dbs = target.dbs_with_keys()?;
    if !target.is_cluster() {
        if let Some(selected) = &cfg.filter.dbs {
            // Only the target dbs this run's source dbs map to.
            let mapped: BTreeSet<u32> = selected.iter().map(|d| cfg.db_map.get(d).copied().unwrap_or(*d)).collect();
            dbs.retain(|d| mapped.contains(d));
        }
    }
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
