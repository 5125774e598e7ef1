//! An emulated Dragonfly cluster (`--cluster_mode=yes`): N emulator nodes on free loopback
//! ports that agree on one layout, writes routed to the owning node, and scripted slot
//! migrations (docs/protocol/dragonfly-cluster.md, section C).

use std::net::SocketAddr;

use df2redis::emulator::cluster::{self, ClusterOptions, MigrationInfo, NodeInfo, ShardInfo, SlotRange};
use df2redis::emulator::{Config, Emulator};

pub struct DragonflyCluster {
    pub nodes: Vec<Emulator>,
    layout: Vec<ShardInfo>,
}

impl DragonflyCluster {
    /// `n` nodes, the 16384 slots split evenly in node order; every node built from `cfg`.
    pub fn start(n: usize, cfg: Config) -> DragonflyCluster {
        Self::start_with(cluster::even_split(n).into_iter().map(|r| vec![r]).collect(), cfg)
    }

    /// One node per entry of `split`, owning those ranges. Each node's id is its replid (as
    /// Dragonfly's default); the layout is pushed to every node before any replica connects.
    pub fn start_with(split: Vec<Vec<SlotRange>>, cfg: Config) -> DragonflyCluster {
        let nodes: Vec<Emulator> = split
            .iter()
            .map(|_| Emulator::start(Config { cluster: Some(ClusterOptions::default()), ..cfg.clone() }).expect("start a node"))
            .collect();
        let layout = nodes
            .iter()
            .zip(split)
            .map(|(n, slots)| ShardInfo { slots, master: node_info(n), migrations: Vec::new() })
            .collect();
        let c = DragonflyCluster { nodes, layout };
        c.push(c.layout.clone());
        c
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr()
    }
    pub fn id(&self, i: usize) -> String {
        self.nodes[i].cluster_id().expect("a cluster node")
    }
    pub fn layout(&self) -> &[ShardInfo] {
        &self.layout
    }

    /// The node serving `key` now (finished migrations included).
    pub fn owner_of(&self, key: &[u8]) -> usize {
        let slot = cluster::key_slot(key);
        (0..self.nodes.len())
            .find(|&i| self.nodes[i].owned_slots().iter().any(|r| r.contains(slot)))
            .unwrap_or_else(|| panic!("no node serves slot {slot}"))
    }

    /// A client write through the node that owns its first key.
    pub fn write(&self, args: &[&[u8]]) -> Result<(), String> {
        let key = args.get(1).ok_or("no key")?;
        self.nodes[self.owner_of(key)].write(0, args)
    }

    /// A key whose slot lies in `ranges`, made from `prefix` and a counter.
    pub fn key_in(ranges: &[SlotRange], prefix: &str, from: &mut u64) -> String {
        loop {
            let k = format!("{prefix}{from}");
            *from += 1;
            if ranges.iter().any(|r| r.contains(cluster::key_slot(k.as_bytes()))) {
                return k;
            }
        }
    }

    /// Step 1: push a layout listing the migration of `ranges` from node `from` to `to`.
    pub fn begin_migration(&mut self, from: usize, to: usize, ranges: &[SlotRange]) {
        let target = node_info(&self.nodes[to]);
        self.layout[from].migrations.push(MigrationInfo { slots: ranges.to_vec(), target });
        self.push(self.layout.clone());
    }

    /// Steps 2-4: copy the keys to `to`, forwarding `from`'s writes of the slots. The number
    /// of keys copied.
    pub fn copy(&self, from: usize, to: usize) -> usize {
        self.nodes[from].migrate_slots_to(&self.nodes[to]).expect("migration copy")
    }

    /// Step 5: finalize (the target serves the slots; nothing journaled).
    pub fn finalize(&self, from: usize, to: usize) {
        self.nodes[from].finalize_migration_to(&self.nodes[to]).expect("migration finalize");
    }

    /// Step 6: push the layout with the slots moved and no migrations (the source flushes
    /// them and journals `DFLYCLUSTER FLUSHSLOTS`).
    pub fn commit(&mut self, from: usize, to: usize) {
        let moved: Vec<SlotRange> = self.layout[from].migrations.iter().flat_map(|m| m.slots.clone()).collect();
        self.layout[from].migrations.clear();
        let mut left = cluster::SlotSet::of(&self.layout[from].slots);
        left.set(&moved, false);
        self.layout[from].slots = left.ranges();
        let mut gained = cluster::SlotSet::of(&self.layout[to].slots);
        gained.set(&moved, true);
        self.layout[to].slots = gained.ranges();
        self.push(self.layout.clone());
    }

    /// The whole migration of `ranges` from `from` to `to`; the keys copied.
    pub fn migrate(&mut self, from: usize, to: usize, ranges: &[SlotRange]) -> usize {
        self.begin_migration(from, to, ranges);
        let n = self.copy(from, to);
        self.finalize(from, to);
        self.commit(from, to);
        n
    }

    fn push(&self, layout: Vec<ShardInfo>) {
        for n in &self.nodes {
            n.push_cluster_layout(layout.clone()).expect("push the layout");
        }
    }
}

fn node_info(n: &Emulator) -> NodeInfo {
    NodeInfo { id: n.cluster_id().expect("a cluster node"), ip: "127.0.0.1".into(), port: n.addr().port() }
}
