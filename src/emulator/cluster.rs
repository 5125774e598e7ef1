//! Dragonfly's cluster mode (`--cluster_mode=yes`): the layout a controller pushes to every
//! node, the node's own slot set, and the `CLUSTER` replies built from them. Pure data and
//! bytes, no I/O. Facts and sources: docs/protocol/dragonfly-cluster.md.

use super::resp;

/// Number of hash slots.
pub const SLOTS: usize = 16384;

/// An inclusive slot range, as Dragonfly's `SlotRange`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SlotRange {
    pub start: u16,
    pub end: u16,
}

impl SlotRange {
    pub fn new(start: u16, end: u16) -> SlotRange {
        SlotRange { start, end }
    }
    pub fn contains(&self, slot: u16) -> bool {
        self.start <= slot && slot <= self.end
    }
}

/// A node of the layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub ip: String,
    pub port: u16,
}

/// A migration listed in the source's shard of a layout (Dragonfly's `MigrationInfo`): slots
/// moving to the node `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationInfo {
    pub slots: Vec<SlotRange>,
    pub target: NodeInfo,
}

/// One shard of the layout: a master, its slots, its outgoing migrations. (The emulator's
/// layouts have no replicas.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    pub slots: Vec<SlotRange>,
    pub master: NodeInfo,
    pub migrations: Vec<MigrationInfo>,
}

/// The emulator's cluster mode (see [`super::Config::cluster`]).
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// `--cluster_node_id`; `None` = the master replid, as Dragonfly does.
    pub node_id: Option<String>,
    /// The layout the node starts with (as if pushed by `DFLYCLUSTER CONFIG` before any
    /// replica connected); empty = not configured yet (key commands then fail with
    /// `Cluster is not yet configured`).
    pub layout: Vec<ShardInfo>,
}

/// A set of slots (Dragonfly's `SlotSet`), 2 KiB.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotSet(Box<[u64; SLOTS / 64]>);

impl SlotSet {
    pub fn empty() -> SlotSet {
        SlotSet(Box::new([0; SLOTS / 64]))
    }
    pub fn full() -> SlotSet {
        SlotSet(Box::new([u64::MAX; SLOTS / 64]))
    }
    pub fn of(ranges: &[SlotRange]) -> SlotSet {
        let mut s = SlotSet::empty();
        s.set(ranges, true);
        s
    }
    pub fn contains(&self, slot: u16) -> bool {
        let i = slot as usize % SLOTS;
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    pub fn set(&mut self, ranges: &[SlotRange], on: bool) {
        for r in ranges {
            for i in r.start as usize..=(r.end as usize).min(SLOTS - 1) {
                if on {
                    self.0[i / 64] |= 1 << (i % 64);
                } else {
                    self.0[i / 64] &= !(1 << (i % 64));
                }
            }
        }
    }
    /// Slots in `self` but not in `other`.
    pub fn minus(&self, other: &SlotSet) -> SlotSet {
        let mut s = self.clone();
        for (a, b) in s.0.iter_mut().zip(other.0.iter()) {
            *a &= !b;
        }
        s
    }
    pub fn union(&mut self, other: &SlotSet) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= b;
        }
    }
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
    /// Sorted, merged ranges (`SlotSet::ToSlotRanges`).
    pub fn ranges(&self) -> Vec<SlotRange> {
        let mut out: Vec<SlotRange> = Vec::new();
        for slot in 0..SLOTS as u16 {
            if !self.contains(slot) {
                continue;
            }
            match out.last_mut() {
                Some(r) if r.end + 1 == slot => r.end = slot,
                _ => out.push(SlotRange::new(slot, slot)),
            }
        }
        out
    }
}

impl std::fmt::Debug for SlotSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlotSet{:?}", self.ranges())
    }
}

/// A key's slot: CRC16 of its `{hashtag}`, as Dragonfly's `KeySlot` (same rule as Redis).
pub fn key_slot(key: &[u8]) -> u16 {
    crate::target::slots::key_slot(key)
}

/// The slots the shard of `id` owns in `layout` (`ClusterConfig::CreateFromConfig`).
pub fn owned_by(layout: &[ShardInfo], id: &str) -> SlotSet {
    let mut s = SlotSet::empty();
    for sh in layout.iter().filter(|sh| sh.master.id == id) {
        s.set(&sh.slots, true);
    }
    s
}

/// Where `MOVED` sends a slot (`ClusterConfig::GetMasterNodeForSlot`): the master of the shard
/// holding it, or, when that is this node, the target of a migration listing it.
pub fn master_for_slot<'a>(layout: &'a [ShardInfo], me: &str, slot: u16) -> Option<&'a NodeInfo> {
    let sh = layout.iter().find(|sh| sh.slots.iter().any(|r| r.contains(slot)))?;
    if sh.master.id == me {
        for m in &sh.migrations {
            if m.slots.iter().any(|r| r.contains(slot)) {
                if let Some(t) = layout.iter().find(|s| s.master.id == m.target.id) {
                    return Some(&t.master);
                }
            }
        }
    }
    Some(&sh.master)
}

pub const NOT_CONFIGURED: &str = "ERR Cluster is not yet configured";
pub const DISABLED: &str = "ERR Cluster is disabled. Enabled via passing --cluster_mode=emulated|yes";
pub const DFLYCLUSTER_DISABLED: &str = "ERR Cluster is disabled. Use --cluster_mode=yes to enable.";
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";
pub const SELECT_REFUSED: &str = "ERR SELECT is not allowed in cluster mode";

pub fn moved(slot: u16, to: &NodeInfo) -> String {
    format!("MOVED {slot} {}:{}", to.ip, to.port)
}

/// `CLUSTER SHARDS` (`ClusterShardsImpl`).
pub fn shards_reply(layout: &[ShardInfo]) -> Vec<u8> {
    let shards: Vec<Vec<u8>> = layout
        .iter()
        .map(|sh| {
            let slots: Vec<Vec<u8>> =
                sh.slots.iter().flat_map(|r| [resp::int(r.start as i64), resp::int(r.end as i64)]).collect();
            let n = &sh.master;
            let node = resp::array(&[
                resp::bulk(b"id"),
                resp::bulk(n.id.as_bytes()),
                resp::bulk(b"endpoint"),
                resp::bulk(n.ip.as_bytes()),
                resp::bulk(b"ip"),
                resp::bulk(n.ip.as_bytes()),
                resp::bulk(b"port"),
                resp::int(n.port as i64),
                resp::bulk(b"role"),
                resp::bulk(b"master"),
                resp::bulk(b"replication-offset"),
                resp::int(0),
                resp::bulk(b"health"),
                resp::bulk(b"online"),
            ]);
            resp::array(&[resp::bulk(b"slots"), resp::array(&slots), resp::bulk(b"nodes"), resp::array(&[node])])
        })
        .collect();
    resp::array(&shards)
}

/// `CLUSTER SLOTS` (`ClusterSlotsImpl`): one element per range, shards in layout order.
pub fn slots_reply(layout: &[ShardInfo]) -> Vec<u8> {
    let mut ranges = Vec::new();
    for sh in layout {
        let n = &sh.master;
        for r in &sh.slots {
            let node = resp::array(&[resp::bulk(n.ip.as_bytes()), resp::int(n.port as i64), resp::bulk(n.id.as_bytes())]);
            ranges.push(resp::array(&[resp::int(r.start as i64), resp::int(r.end as i64), node]));
        }
    }
    resp::array(&ranges)
}

/// `CLUSTER NODES` (`ClusterNodesImpl`): lines end with `\n` only (Dragonfly #2726).
pub fn nodes_reply(layout: &[ShardInfo], me: &str) -> Vec<u8> {
    let mut out = String::new();
    for sh in layout {
        let n = &sh.master;
        out.push_str(&format!("{} {}:{}@{} ", n.id, n.ip, n.port, n.port));
        if n.id == me {
            out.push_str("myself,");
        }
        out.push_str("master - 0 0 0 connected");
        for r in &sh.slots {
            if r.start == r.end {
                out.push_str(&format!(" {}", r.start));
            } else {
                out.push_str(&format!(" {}-{}", r.start, r.end));
            }
        }
        out.push('\n');
    }
    resp::bulk(out.as_bytes())
}

/// `CLUSTER INFO` (`ClusterInfoImpl`): constants except the node and shard counts.
pub fn info_reply(layout: &[ShardInfo]) -> Vec<u8> {
    let (state, assigned) = if layout.is_empty() { ("fail", 0) } else { ("ok", SLOTS) };
    let known = layout.len();
    let size = layout.iter().filter(|sh| !sh.slots.is_empty()).count();
    let lines: [(&str, String); 16] = [
        ("cluster_state", state.into()),
        ("cluster_slots_assigned", assigned.to_string()),
        ("cluster_slots_ok", assigned.to_string()),
        ("cluster_slots_pfail", "0".into()),
        ("cluster_slots_fail", "0".into()),
        ("cluster_known_nodes", known.to_string()),
        ("cluster_size", size.to_string()),
        ("cluster_current_epoch", "1".into()),
        ("cluster_my_epoch", "1".into()),
        ("cluster_stats_messages_ping_sent", "1".into()),
        ("cluster_stats_messages_pong_sent", "1".into()),
        ("cluster_stats_messages_sent", "1".into()),
        ("cluster_stats_messages_ping_received", "1".into()),
        ("cluster_stats_messages_pong_received", "1".into()),
        ("cluster_stats_messages_meet_received", "0".into()),
        ("cluster_stats_messages_received", "1".into()),
    ];
    let text: String = lines.iter().map(|(k, v)| format!("{k}:{v}\r\n")).collect();
    resp::bulk(text.as_bytes())
}

/// `CLUSTER HELP` (`ClusterFamily::ClusterHelp`).
pub fn help_reply() -> Vec<u8> {
    const LINES: [&str; 11] = [
        "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "SLOTS",
        "   Return information about slots range mappings. Each range is made of:",
        "   start, end, master and replicas IP addresses, ports and ids.",
        "NODES",
        "   Return cluster configuration seen by node. Output format:",
        "   <id> <ip:port> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...",
        "INFO",
        "  Return information about the cluster",
        "HELP",
        "    Prints this help.",
    ];
    let items: Vec<Vec<u8>> = LINES.iter().map(|l| resp::simple(l)).collect();
    resp::array(&items)
}

/// Parse `<start>-<end>` or `<slot>`.
pub fn parse_range(s: &str) -> Result<SlotRange, String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let num = |x: &str| {
        x.trim().parse::<u16>().ok().filter(|v| (*v as usize) < SLOTS).ok_or_else(|| format!("bad slot {x:?} in {s:?} (0..=16383)"))
    };
    let r = SlotRange::new(num(a)?, num(b)?);
    if r.start > r.end {
        return Err(format!("slot range {s:?} ends before it starts"));
    }
    Ok(r)
}

/// A shard from the command line: `<id>@<ip>:<port>=<start>-<end>[,<start>-<end>|<slot>…]`.
pub fn parse_shard(spec: &str) -> Result<ShardInfo, String> {
    let bad = || format!("bad cluster shard {spec:?}: want <id>@<ip>:<port>=<start>-<end>[,...]");
    let (node, ranges) = spec.split_once('=').ok_or_else(bad)?;
    let (id, addr) = node.split_once('@').ok_or_else(bad)?;
    let (ip, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse::<u16>().map_err(|_| bad())?;
    if id.is_empty() || ip.is_empty() {
        return Err(bad());
    }
    let slots = ranges.split(',').map(parse_range).collect::<Result<Vec<_>, _>>()?;
    Ok(ShardInfo { slots, master: NodeInfo { id: id.into(), ip: ip.into(), port }, migrations: Vec::new() })
}

/// The 16384 slots split evenly into `n` contiguous ranges (the first ones one slot longer
/// when it does not divide).
pub fn even_split(n: usize) -> Vec<SlotRange> {
    let n = n.clamp(1, SLOTS);
    let (base, extra) = (SLOTS / n, SLOTS % n);
    let mut start = 0usize;
    (0..n)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let r = SlotRange::new(start as u16, (start + len - 1) as u16);
            start += len;
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_sets_merge_into_sorted_ranges() {
        let mut s = SlotSet::of(&[SlotRange::new(10, 20), SlotRange::new(21, 30), SlotRange::new(100, 100)]);
        assert_eq!(s.ranges(), vec![SlotRange::new(10, 30), SlotRange::new(100, 100)]);
        s.set(&[SlotRange::new(15, 16)], false);
        assert_eq!(s.ranges(), vec![SlotRange::new(10, 14), SlotRange::new(17, 30), SlotRange::new(100, 100)]);
        assert!(SlotSet::full().minus(&SlotSet::full()).is_empty());
        assert_eq!(SlotSet::full().ranges(), vec![SlotRange::new(0, 16383)]);
    }

    #[test]
    fn even_split_covers_every_slot_once() {
        let r = even_split(3);
        assert_eq!(r, vec![SlotRange::new(0, 5461), SlotRange::new(5462, 10922), SlotRange::new(10923, 16383)]);
        assert_eq!(parse_range("5-9"), Ok(SlotRange::new(5, 9)));
        assert!(parse_range("9-5").is_err() && parse_range("16384").is_err() && parse_range("x").is_err());
        let sh = parse_shard("n1@127.0.0.1:7001=0-99,200").unwrap();
        assert_eq!((sh.master.id.as_str(), sh.master.port), ("n1", 7001));
        assert_eq!(sh.slots, vec![SlotRange::new(0, 99), SlotRange::new(200, 200)]);
        assert!(parse_shard("n1@127.0.0.1=0-9").is_err() && parse_shard("@h:1=0").is_err());
    }

    #[test]
    fn moved_follows_a_finished_migration_of_my_shard() {
        let node = |id: &str, port| NodeInfo { id: id.into(), ip: "127.0.0.1".into(), port };
        let layout = vec![
            ShardInfo {
                slots: vec![SlotRange::new(0, 99)],
                master: node("a", 1),
                migrations: vec![MigrationInfo { slots: vec![SlotRange::new(0, 9)], target: node("b", 2) }],
            },
            ShardInfo { slots: vec![SlotRange::new(100, 16383)], master: node("b", 2), migrations: vec![] },
        ];
        assert_eq!(master_for_slot(&layout, "a", 5).unwrap().id, "b");
        assert_eq!(master_for_slot(&layout, "b", 5).unwrap().id, "a");
        assert_eq!(master_for_slot(&layout, "a", 50).unwrap().id, "a");
        assert_eq!(owned_by(&layout, "a").ranges(), vec![SlotRange::new(0, 99)]);
    }
}
