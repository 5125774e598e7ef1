//! What each captured Dragonfly release could and could not put into its capture, stated per
//! release, so that the fixture tests expect exactly that: a capture from an older master is
//! judged by what that master sends, never by a looser rule for every capture.

use std::collections::BTreeSet;

use df2redis::source::release::{Release, XREADGROUP_JOURNALED_SINCE};

use super::{Dataset, Fixture, Val};

/// The release of the master a capture was taken from (`session.json`).
pub fn release(fx: &Fixture) -> Release {
    let name = fx.session["dragonfly_version"].as_str().unwrap_or_else(|| panic!("{}: session.json has no dragonfly_version", fx.name));
    Release::parse(name).unwrap_or_else(|| panic!("{}: dragonfly_version {name:?} is not a release number", fx.name))
}

pub fn journals_xreadgroup(fx: &Fixture) -> bool {
    release(fx) >= XREADGROUP_JOURNALED_SINCE
}

/// The Dragonfly-only types (as `TYPE` names them) the capture's data set holds, one key each.
/// The `types` data set creates JSON, Bloom, Cuckoo, count-min sketch and top-k keys; v1.36.0
/// has no CF.*, CMS.* or TOPK.* commands (it refused them), so only JSON and Bloom remain.
pub fn dragonfly_only_types(fx: &Fixture) -> BTreeSet<&'static str> {
    let all = ["ReJSON-RL", "MBbloom--", "MBbloomCF", "CMSk-TYPE", "TopK-TYPE"];
    match fx.session["scenario"].as_str() {
        Some("types") => {}
        Some("globals") => return BTreeSet::new(),
        other => panic!("{}: no data-set facts for scenario {other:?}", fx.name),
    }
    let r = release(fx);
    match (r.major, r.minor) {
        (1, 36) => ["ReJSON-RL", "MBbloom--"].into(),
        (1, 40) => all.into(),
        _ => panic!("{}: no version facts for Dragonfly {r}: state which Dragonfly-only types it can create", fx.name),
    }
}

/// A consumer-group read (XREADGROUP) that delivered new entries to a consumer.
#[derive(Debug, Clone)]
pub struct GroupRead {
    pub db: u32,
    pub key: &'static [u8],
    pub group: &'static [u8],
    pub consumer: &'static [u8],
}

/// The read in the `types` data set's journal phase: consumer `carol` of group `g1` reads the
/// new entries of `stream:small`.
pub const TYPES_JOURNAL_READ: GroupRead = GroupRead { db: 0, key: b"stream:small", group: b"g1", consumer: b"carol" };

/// The reads in the capture's journal phase that its master applied without journaling them: a
/// release before v1.37.0 journals no XREADGROUP (from v1.37.0 on it is journaled as XGROUP
/// CREATECONSUMER, XCLAIM ... LASTID and XGROUP SETID).
pub fn unjournaled_reads(fx: &Fixture) -> Vec<GroupRead> {
    if journals_xreadgroup(fx) || fx.session["scenario"].as_str() != Some("types") {
        return Vec::new();
    }
    vec![TYPES_JOURNAL_READ]
}

/// Turn the master's data after the journal phase (`final`, `after_partial_resume`) into what a
/// replica of it can hold: for each unjournaled read, the consumer's pending entries and the
/// consumer itself are gone, and the group's last delivered id and entries read are those of
/// the snapshot (`at_startstable`), where no journaled command moved them. Everything else is
/// left as the master had it, to be compared exactly.
///
/// Panics when the master's data does not show the read as described (no such consumer with
/// pending entries, a last delivered id the read did not advance): the exception would then
/// hide nothing, or something other than the read. Returns one line per read, saying what was
/// set aside.
pub fn without_unjournaled_reads(fx: &Fixture, expected: &mut Dataset, at_startstable: &Dataset) -> Vec<String> {
    let mut notes = Vec::new();
    for r in unjournaled_reads(fx) {
        let what = format!(
            "{}: db {} key {:?} group {:?} consumer {:?}",
            fx.name,
            r.db,
            String::from_utf8_lossy(r.key),
            String::from_utf8_lossy(r.group),
            String::from_utf8_lossy(r.consumer)
        );
        let group_in = |ds: &Dataset, which: &str| {
            let Some(Val::Stream(s)) = ds.get(&r.db).and_then(|m| m.get(r.key)).map(|k| &k.val) else {
                panic!("{what}: no such stream in the {which} data");
            };
            s.groups.iter().find(|g| g.name == r.group).cloned().unwrap_or_else(|| panic!("{what}: no such group in the {which} data"))
        };
        let before = group_in(at_startstable, "at_startstable");
        assert!(!before.consumers.contains(r.consumer), "{what}: the consumer exists in the snapshot already");
        let Some(Val::Stream(s)) = expected.get_mut(&r.db).and_then(|m| m.get_mut(r.key)).map(|k| &mut k.val) else {
            panic!("{what}: no such stream in the master's data");
        };
        let g = s.groups.iter_mut().find(|g| g.name == r.group).unwrap_or_else(|| panic!("{what}: no such group in the master's data"));
        let delivered: Vec<String> = g.pending.iter().filter(|p| p.1 == r.consumer).map(|p| p.0.clone()).collect();
        assert!(!delivered.is_empty() && g.consumers.contains(r.consumer), "{what}: the master shows no delivery to this consumer");
        assert_ne!(g.last_delivered_id, before.last_delivered_id, "{what}: the read did not advance the last delivered id");
        notes.push(format!(
            "{what}: not replicable on Dragonfly {} (XREADGROUP is not journaled): pending entries {delivered:?}, the consumer, \
             and last delivered id {} (a replica keeps the snapshot's {})",
            release(fx),
            g.last_delivered_id,
            before.last_delivered_id
        ));
        g.pending.retain(|p| p.1 != r.consumer);
        g.consumers.remove(r.consumer);
        g.last_delivered_id = before.last_delivered_id;
        g.entries_read = before.entries_read;
    }
    notes
}
