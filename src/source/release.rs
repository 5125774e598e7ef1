//! The master's Dragonfly release, and what an older release leaves out of its journal.
//!
//! A replica sees only what the master journals; a write the master applies but does not
//! journal cannot be reproduced by any replica (Dragonfly's own included). Such gaps are
//! properties of the master's release, so the user is told at start, before trusting the copy.

use super::MasterInfo;

/// A release number as `INFO SERVER` names it (`dragonfly_version:df-v1.36.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

/// The first release that journals XREADGROUP's effects (as `XCLAIM ... LASTID` per delivered
/// entry and `XGROUP SETID ... ENTRIESREAD`); earlier ones apply them on the master only.
pub const XREADGROUP_JOURNALED_SINCE: Release = Release { major: 1, minor: 37, patch: 0 };

/// The DflyVersion ordinal v1.37.0 introduced: a master that names no release but speaks an
/// older protocol version is older than v1.37.0.
const ORDINAL_OF_V137: i64 = 5;

impl Release {
    /// `df-v1.36.0`, `v1.40.1`, `1.37.0`, `df-v1.38.2-rc1`; `None` for a name with no
    /// numbered release in it (a development build).
    pub fn parse(s: &str) -> Option<Release> {
        let s = s.trim();
        let s = s.strip_prefix("df-").unwrap_or(s);
        let s = s.strip_prefix('v').unwrap_or(s);
        let mut parts = s.splitn(3, '.');
        let num = |p: Option<&str>| -> Option<u32> {
            let p = p?;
            let digits = &p[..p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len())];
            digits.parse().ok()
        };
        Some(Release { major: num(parts.next())?, minor: num(parts.next())?, patch: num(parts.next())? })
    }
}

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Whether the master journals XREADGROUP: from its release when INFO SERVER named one,
/// else from its protocol version.
pub fn journals_xreadgroup(info: &MasterInfo) -> bool {
    match info.release.as_deref().and_then(Release::parse) {
        Some(r) => r >= XREADGROUP_JOURNALED_SINCE,
        None => info.version >= ORDINAL_OF_V137,
    }
}

/// The warning to give at start when the master's journal leaves something out; `None` when
/// nothing known is missing.
pub fn journal_gaps(info: &MasterInfo) -> Option<String> {
    if journals_xreadgroup(info) {
        return None;
    }
    let which = match (&info.release, info.release.as_deref().and_then(Release::parse)) {
        (Some(name), Some(_)) => format!("the master is Dragonfly {name}"),
        (name, _) => format!(
            "the master ({}) speaks protocol version {}, that of v1.34 to v1.36",
            name.as_deref().map_or("no release named in INFO SERVER".to_string(), |n| format!("release {n}")),
            info.version
        ),
    };
    Some(format!(
        "{which}, older than {XREADGROUP_JOURNALED_SINCE}, and does not journal XREADGROUP: consumer-group reads on \
         the master during this run are NOT replicated (the pending entries they deliver, the consumers they create, \
         the group's last-delivered id and entries-read they advance); the target's groups keep what the snapshot and \
         the journaled commands (XGROUP, XACK, XCLAIM, ...) gave them. Dragonfly's own replicas of this master have \
         the same gap; upgrade it to {XREADGROUP_JOURNALED_SINCE} or later for exact consumer groups"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(release: Option<&str>, version: i64) -> MasterInfo {
        MasterInfo {
            replid: "r".into(),
            sync_id: "SYNC1".into(),
            num_flows: 1,
            version,
            release: release.map(str::to_string),
        }
    }

    #[test]
    fn release_names_parse() {
        let r = |a, b, c| Some(Release { major: a, minor: b, patch: c });
        assert_eq!(Release::parse("df-v1.36.0"), r(1, 36, 0));
        assert_eq!(Release::parse("df-v1.40.1"), r(1, 40, 1));
        assert_eq!(Release::parse("v1.37.0"), r(1, 37, 0));
        assert_eq!(Release::parse("1.34.2"), r(1, 34, 2));
        assert_eq!(Release::parse("df-v1.38.2-rc1"), r(1, 38, 2));
        assert_eq!(Release::parse("df-dev"), None);
        assert_eq!(Release::parse("df-v1.36"), None);
        assert!(Release::parse("df-v1.9.0") < Release::parse("df-v1.10.0"));
    }

    #[test]
    fn xreadgroup_is_journaled_from_v1_37() {
        assert!(!journals_xreadgroup(&info(Some("df-v1.34.2"), 4)));
        assert!(!journals_xreadgroup(&info(Some("df-v1.36.0"), 4)));
        assert!(journals_xreadgroup(&info(Some("df-v1.37.0"), 5)));
        assert!(journals_xreadgroup(&info(Some("df-v1.40.1"), 5)));
        // No release named: the protocol version decides (4 up to v1.36, 5 from v1.37).
        assert!(!journals_xreadgroup(&info(None, 4)));
        assert!(journals_xreadgroup(&info(None, 5)));
        assert!(journals_xreadgroup(&info(Some("df-dev"), 5)));
    }

    #[test]
    fn the_warning_names_the_release_and_what_is_lost() {
        let w = journal_gaps(&info(Some("df-v1.36.0"), 4)).unwrap();
        for part in ["df-v1.36.0", "v1.37.0", "XREADGROUP", "pending entries", "consumers", "last-delivered id"] {
            assert!(w.contains(part), "{part}: {w}");
        }
        assert!(journal_gaps(&info(None, 4)).unwrap().contains("protocol version 4"));
        assert_eq!(journal_gaps(&info(Some("df-v1.40.1"), 5)), None);
    }
}
