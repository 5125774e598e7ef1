//! A real 3-master Redis Cluster on free loopback ports, for as long as the value lives:
//! starting it, reading its whole dataset back, and moving slots between its nodes (at once,
//! or step by step to leave a slot half-migrated and provoke `ASK`).

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::Value as RV;

use super::redis_server::{free_port, read_key, scan_keys, spawn_ready_kind, Mode, ServerKind, TempDir};
use super::Dataset;

/// How long the cluster may take to form or to agree on a change.
const SETTLE: Duration = Duration::from_secs(30);
/// The pause between two polls of a condition.
const POLL: Duration = Duration::from_millis(20);
/// Keys per MIGRATE when a slot is moved.
const MIGRATE_BATCH: usize = 100;

/// One `redis-server --cluster-enabled yes` (or valkey-server), stopped (by its PID) and its
/// directory removed on drop.
pub struct ClusterNode {
    pub port: u16,
    pub kind: ServerKind,
    /// The cluster bus port: `--cluster-port`, chosen free rather than port + 10000, which
    /// overflows for ephemeral ports above 55535. Redis 6.2 has no such option: its bus is
    /// always port + 10000, so its port is chosen below 55535 with that bus port free.
    pub bus_port: u16,
    /// The node ID (`CLUSTER MYID`).
    pub id: String,
    /// Its redis-server arguments after the port (to restart it alike).
    args: Vec<String>,
    child: Child,
    // Declared after `child`: removed once the process is gone.
    _dir: TempDir,
}

impl ClusterNode {
    /// Start one empty cluster-enabled node with `more` arguments (made anew for each attempt,
    /// so they may hold free ports); returns once it logs that it accepts connections.
    fn start(kind: ServerKind, more: &dyn Fn() -> Vec<String>) -> ClusterNode {
        for _attempt in 0..10 {
            let (port, bus_port) = if kind == ServerKind::Redis62 { fixed_bus_ports() } else { (free_port(), free_port()) };
            if bus_port == port {
                continue;
            }
            let dir = TempDir::new("redis-cluster");
            let mut extra: Vec<String> =
                ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            if kind != ServerKind::Redis62 {
                extra.extend(["--cluster-port".to_string(), bus_port.to_string()]);
            }
            extra.extend(more());
            let args = extra.clone();
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            if let Some(child) = spawn_ready_kind(kind, port, &dir.0, &extra) {
                let mut node = ClusterNode { port, kind, bus_port, id: String::new(), args, child, _dir: dir };
                let mut c = node.conn();
                // A node of the wrong server would make the test pass against something else.
                kind.assert_is(&mut c);
                node.id = q(&mut c, &[b"CLUSTER", b"MYID"]);
                return node;
            }
        }
        panic!("a cluster-enabled {kind:?} did not start on free ports after 10 attempts");
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The node's working directory (its nodes.conf), removed on drop.
    pub fn dir(&self) -> &std::path::Path {
        &self._dir.0
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then start again on the same port, directory (nodes.conf, AOF) and arguments.
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        // The port was just ours; a few tries cover a slow release of the socket.
        for _attempt in 0..20 {
            if let Some(child) = spawn_ready_kind(self.kind, self.port, &self._dir.0, &args) {
                self.child = child;
                return;
            }
        }
        panic!("cluster node {} did not restart", self.addr());
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .unwrap()
            .get_connection()
            .unwrap_or_else(|e| panic!("connect to cluster node {}: {e}", self.addr()))
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One contiguous slot range and the port of the master serving it (`CLUSTER SLOTS`).
pub type SlotRange = (u16, u16, u16);

pub struct RedisCluster {
    pub nodes: Vec<ClusterNode>,
    /// Slots whose migration was begun and not finished: slot -> (from, to) node indices.
    migrations: Mutex<HashMap<u16, (usize, usize)>>,
}

impl RedisCluster {
    /// Three empty masters joined with `redis-cli --cluster create`, each owning a third of
    /// the slots; returns once every node reports `cluster_state:ok` and all agree on the
    /// slot map.
    pub fn start() -> RedisCluster {
        Self::start_with(Vec::new)
    }

    /// [`start`](Self::start) with more arguments for every node (e.g. a TLS listener: the
    /// harness keeps using the plain ports).
    pub fn start_with(more: impl Fn() -> Vec<String>) -> RedisCluster {
        Self::start_kind_with(ServerKind::Redis7, more)
    }

    /// [`start`](Self::start) with nodes of `kind` (each checked to be that kind).
    pub fn start_kind(kind: ServerKind) -> RedisCluster {
        Self::start_kind_with(kind, Vec::new)
    }

    /// [`start_with`](Self::start_with) with nodes of `kind`.
    pub fn start_kind_with(kind: ServerKind, more: impl Fn() -> Vec<String>) -> RedisCluster {
        Self::start_kinds(&[kind; 3], more)
    }

    /// One master of each kind in `kinds` (a cluster in the middle of an upgrade).
    pub fn start_kinds(kinds: &[ServerKind], more: impl Fn() -> Vec<String>) -> RedisCluster {
        let nodes: Vec<ClusterNode> = kinds.iter().map(|&kind| ClusterNode::start(kind, &more)).collect();
        let cluster = RedisCluster { nodes, migrations: Mutex::new(HashMap::new()) };
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(cluster.addrs())
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli must be installed (apt-get install redis-tools)");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success() && !text.contains("[ERR]"),
            "redis-cli --cluster create failed ({}):\n{text}",
            out.status
        );
        cluster.wait_consistent();
        cluster
    }

    /// "127.0.0.1:port" of the first node.
    pub fn seed(&self) -> String {
        self.nodes[0].addr()
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(ClusterNode::addr).collect()
    }

    /// A plain (non-cluster-aware) connection to node `i`.
    pub fn conn(&self, i: usize) -> redis::Connection {
        self.nodes[i].conn()
    }

    /// The index of the node listening on `port`.
    pub fn node_by_port(&self, port: u16) -> usize {
        self.nodes.iter().position(|n| n.port == port).unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    /// Node `i`'s `CLUSTER INFO` as a map.
    pub fn info(&self, i: usize) -> BTreeMap<String, String> {
        let text: String = q(&mut self.conn(i), &[b"CLUSTER", b"INFO"]);
        text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_string(), v.trim().to_string())).collect()
    }

    /// Node `i`'s view of the slot map, sorted by range.
    pub fn slot_map(&self, i: usize) -> Vec<SlotRange> {
        slot_map(&mut self.conn(i))
    }

    /// The node that owns `slot` in node 0's view (the nodes agree once
    /// [`wait_consistent`](Self::wait_consistent) returned; a half-migrated slot is still
    /// owned by its source).
    pub fn owner(&self, slot: u16) -> usize {
        let map = self.slot_map(0);
        let (_, _, port) = map
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .unwrap_or_else(|| panic!("slot {slot} is not served: {map:?}"));
        self.node_by_port(*port)
    }

    /// Wait (bounded) until every node reports `cluster_state:ok`, knows every node, sees
    /// every slot assigned, and all report the same slot map.
    pub fn wait_consistent(&self) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let Err(why) = self.consistency() else { return };
            assert!(Instant::now() < deadline, "cluster did not settle within {SETTLE:?}: {why}");
            std::thread::sleep(POLL);
        }
    }

    /// `Ok` if the cluster is settled, else what is not yet.
    fn consistency(&self) -> Result<(), String> {
        let n = self.nodes.len().to_string();
        let mut first: Option<Vec<SlotRange>> = None;
        for i in 0..self.nodes.len() {
            let info = self.info(i);
            let get = |k: &str| info.get(k).map(String::as_str).unwrap_or("?");
            if get("cluster_state") != "ok" {
                return Err(format!("node {i}: cluster_state:{}", get("cluster_state")));
            }
            if get("cluster_known_nodes") != n {
                return Err(format!("node {i}: cluster_known_nodes:{}", get("cluster_known_nodes")));
            }
            if get("cluster_slots_assigned") != "16384" {
                return Err(format!("node {i}: cluster_slots_assigned:{}", get("cluster_slots_assigned")));
            }
            let map = self.slot_map(i);
            match &first {
                None => first = Some(map),
                Some(f) if *f != map => return Err(format!("node {i} sees slots {map:?}, node 0 sees {f:?}")),
                _ => {}
            }
        }
        Ok(())
    }

    /// Every key of the cluster (db 0) but the checkpoint markers and leases, read from the node that holds it. Each read is
    /// preceded by `ASKING`, so keys already migrated to the importing node of a half-migrated
    /// slot are read too. A key held by two nodes is a broken cluster: it panics.
    pub fn read_all(&self) -> Dataset {
        let mut ds = Dataset::new();
        let mut found_on: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for i in 0..self.nodes.len() {
            let mut c = self.conn(i);
            for k in scan_keys(&mut c) {
                if df2redis::checkpoint::is_internal(&k) {
                    continue; // replicate's checkpoint markers and lease, not data
                }
                if let Some(prev) = found_on.insert(k.clone(), i) {
                    panic!("key {:?} is held by nodes {prev} and {i}", String::from_utf8_lossy(&k));
                }
                if let Some(key) = read_key(&mut c, &k, Mode::Asking) {
                    ds.entry(0).or_default().insert(k, key);
                }
            }
        }
        ds
    }

    /// Move slot `slot` and its keys to node `to` (nothing if it is there already).
    pub fn move_slot(&self, slot: u16, to: usize) {
        if self.owner(slot) == to {
            return;
        }
        self.begin_migration(slot, to);
        self.finish_migration(slot);
    }

    /// Mark `slot` IMPORTING on node `to` and MIGRATING on its owner; no key moves yet.
    pub fn begin_migration(&self, slot: u16, to: usize) {
        let from = self.owner(slot);
        assert_ne!(from, to, "slot {slot} is already on node {to}");
        let s = slot.to_string();
        let (from_id, to_id) = (self.nodes[from].id.as_bytes(), self.nodes[to].id.as_bytes());
        q::<()>(&mut self.conn(to), &[b"CLUSTER", b"SETSLOT", s.as_bytes(), b"IMPORTING", from_id]);
        q::<()>(&mut self.conn(from), &[b"CLUSTER", b"SETSLOT", s.as_bytes(), b"MIGRATING", to_id]);
        self.migrations.lock().unwrap().insert(slot, (from, to));
    }

    /// MIGRATE up to `n` keys of the slot being migrated; returns how many moved (0 once the
    /// source holds none).
    pub fn migrate_some_keys(&self, slot: u16, n: usize) -> usize {
        let (from, to) = *self.migrations.lock().unwrap().get(&slot).unwrap_or_else(|| panic!("slot {slot}: no migration begun"));
        let mut src = self.conn(from);
        let keys: Vec<Vec<u8>> =
            q(&mut src, &[b"CLUSTER", b"GETKEYSINSLOT", slot.to_string().as_bytes(), n.to_string().as_bytes()]);
        if keys.is_empty() {
            return 0;
        }
        let port = self.nodes[to].port.to_string();
        let mut args: Vec<&[u8]> = vec![b"MIGRATE", b"127.0.0.1", port.as_bytes(), b"", b"0", b"5000", b"KEYS"];
        args.extend(keys.iter().map(Vec::as_slice));
        // "OK", or "NOKEY" if they all expired in the meantime.
        q::<String>(&mut src, &args);
        keys.len()
    }

    /// Migrate the slot's remaining keys, assign it to the destination on every node
    /// (destination, source, then the others, as redis-cli does), and wait until the nodes
    /// agree.
    pub fn finish_migration(&self, slot: u16) {
        while self.migrate_some_keys(slot, MIGRATE_BATCH) > 0 {}
        let (from, to) = self.migrations.lock().unwrap().remove(&slot).unwrap();
        let s = slot.to_string();
        let to_id = self.nodes[to].id.clone();
        let order = [to, from].into_iter().chain((0..self.nodes.len()).filter(|&i| i != to && i != from));
        for i in order {
            q::<()>(&mut self.conn(i), &[b"CLUSTER", b"SETSLOT", s.as_bytes(), b"NODE", to_id.as_bytes()]);
        }
        let deadline = Instant::now() + SETTLE;
        loop {
            let owners: Vec<usize> = (0..self.nodes.len())
                .map(|i| {
                    let map = self.slot_map(i);
                    map.iter().find(|(a, b, _)| (*a..=*b).contains(&slot)).map_or(usize::MAX, |r| self.node_by_port(r.2))
                })
                .collect();
            if owners.iter().all(|&o| o == to) && self.consistency().is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "slot {slot}: nodes did not agree on node {to} as owner: {owners:?}");
            std::thread::sleep(POLL);
        }
    }
}

/// A free port below 55535 whose port + 10000 is free too (Redis 6.2's fixed cluster bus port).
/// Both are probed by binding; another process may take them before the node does, and the
/// caller then tries again.
fn fixed_bus_ports() -> (u16, u16) {
    for _ in 0..1000 {
        let Ok(l) = std::net::TcpListener::bind("127.0.0.1:0") else { continue };
        let port = l.local_addr().unwrap().port();
        if port >= 55535 {
            // Ephemeral ports run to 60999: ask for one in the low range instead.
            let low = 20000 + (port % 30000);
            if std::net::TcpListener::bind(("127.0.0.1", low)).is_ok() && std::net::TcpListener::bind(("127.0.0.1", low + 10000)).is_ok() {
                return (low, low + 10000);
            }
            continue;
        }
        drop(l);
        if std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return (port, port + 10000);
        }
    }
    panic!("no free port pair (p, p + 10000) below 55535");
}

/// Run a command, panicking with the command on error.
fn q<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&[u8]]) -> T {
    try_q(c, args).unwrap_or_else(|e| panic!("{:?}: {e}", args.iter().map(|a| String::from_utf8_lossy(a)).collect::<Vec<_>>()))
}

fn try_q<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&[u8]]) -> redis::RedisResult<T> {
    let mut cmd = redis::Cmd::new();
    for a in args {
        cmd.arg(*a);
    }
    cmd.query(c)
}

fn slot_map(c: &mut redis::Connection) -> Vec<SlotRange> {
    let raw: Vec<RV> = q(c, &[b"CLUSTER", b"SLOTS"]);
    let mut map: Vec<SlotRange> = raw
        .iter()
        .map(|r| {
            let RV::Array(r) = r else { panic!("CLUSTER SLOTS entry {r:?}") };
            let int = |v: &RV| match v {
                RV::Int(i) => *i as u16,
                other => panic!("CLUSTER SLOTS: expected an integer, got {other:?}"),
            };
            let RV::Array(master) = &r[2] else { panic!("CLUSTER SLOTS master {:?}", r[2]) };
            (int(&r[0]), int(&r[1]), int(&master[1]))
        })
        .collect();
    map.sort_unstable();
    map
}

