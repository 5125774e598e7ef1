//! The bench's own Redis: one standalone `redis-server`, and a 3-master Redis Cluster, on free
//! 127.0.0.1 ports, stopped by PID when dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis::Value as RV;

use super::sys::{self, free_port, Proc};

pub type R<T> = Result<T, String>;

/// One `redis-server` process (standalone or cluster node).
pub struct RedisServer {
    pub port: u16,
    proc: Proc,
}

/// Where the bench's Redis servers run (see `--redis-cpu`): a standalone server on `redis`
/// alone, a cluster's masters on `all`. Unset: wherever the bench runs.
pub struct CpuLayout {
    pub redis: usize,
    pub all: Vec<usize>,
}

static CPU_LAYOUT: std::sync::OnceLock<CpuLayout> = std::sync::OnceLock::new();

/// Give standalone Redis servers started from now on CPU `layout.redis` alone.
pub fn set_cpu_layout(layout: CpuLayout) {
    let _ = CPU_LAYOUT.set(layout);
}

/// Whether a CPU layout was set (standalone Redis on a CPU of its own).
pub fn redis_has_own_cpu() -> bool {
    CPU_LAYOUT.get().is_some()
}

impl RedisServer {
    /// Start a redis-server (`--save "" --appendonly no`) on a free port; `cluster` adds
    /// `--cluster-enabled yes` with an explicit, free `--cluster-port` (port + 10000 overflows
    /// for ephemeral ports). Returns once it answers PING.
    pub fn start(bin: &Path, dir: &Path, name: &str, cluster: bool) -> R<RedisServer> {
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let bus_port = cluster.then(free_port);
            if port == 0 || bus_port == Some(port) {
                continue;
            }
            let log = dir.join(format!("{name}-{port}.log"));
            let mut cmd = Command::new(bin);
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--daemonize", "no", "--protected-mode", "no", "--loglevel", "notice"])
                .arg("--logfile")
                .arg(&log)
                .arg("--dir")
                .arg(dir);
            if let Some(bus) = bus_port {
                // A port an earlier cluster of this run used may come round again: its node
                // file would make this node remember that cluster ("is not empty").
                let _ = std::fs::remove_file(dir.join(format!("nodes-{port}.conf")));
                cmd.args(["--cluster-enabled", "yes", "--cluster-config-file", &format!("nodes-{port}.conf")]).args([
                    "--cluster-port",
                    &bus.to_string(),
                    "--cluster-node-timeout",
                    "5000",
                ]);
            }
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            if let Some(l) = CPU_LAYOUT.get() {
                let mask = df2redis::affinity::CpuMask::of(if cluster { &l.all } else { std::slice::from_ref(&l.redis) });
                // SAFETY: one sched_setaffinity call between fork and exec.
                unsafe {
                    std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || mask.apply());
                }
            }
            let proc =
                sys::spawn(&format!("{name} :{port}"), cmd).map_err(|e| format!("start {}: {e}", bin.display()))?;
            let mut s = RedisServer { port, proc };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(mut c) = s.try_conn() {
                    if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                        return Ok(s);
                    }
                }
                if s.proc.try_reap().is_some() || Instant::now() > deadline {
                    last = format!(
                        "redis-server on port {port} did not start; its log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err(last)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }
    pub fn cpu_s(&self) -> f64 {
        self.proc.cpu_s().unwrap_or(0.0)
    }
    fn try_conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?
            .get_connection_with_timeout(Duration::from_secs(5))
    }
    pub fn conn(&self) -> R<redis::Connection> {
        self.try_conn().map_err(|e| format!("connect to redis {}: {e}", self.addr()))
    }
    pub fn flushall(&self) -> R<()> {
        let mut c = self.conn()?;
        redis::cmd("FLUSHALL").arg("SYNC").query::<()>(&mut c).map_err(|e| format!("FLUSHALL on {}: {e}", self.addr()))
    }
    pub fn dbsize(&self) -> R<u64> {
        let mut c = self.conn()?;
        redis::cmd("DBSIZE").query::<u64>(&mut c).map_err(|e| format!("DBSIZE on {}: {e}", self.addr()))
    }
    /// `CONFIG RESETSTAT`: zero the command statistics.
    pub fn reset_stats(&self) -> R<()> {
        let mut c = self.conn()?;
        redis::cmd("CONFIG").arg("RESETSTAT").query::<()>(&mut c).map_err(|e| format!("CONFIG RESETSTAT: {e}"))
    }
    /// `INFO stats`: (read events processed, bytes read from clients) since the last reset.
    pub fn io_stats(&self) -> R<(u64, u64)> {
        let mut c = self.conn()?;
        let info: String = redis::cmd("INFO").arg("stats").query(&mut c).map_err(|e| e.to_string())?;
        let get = |k: &str| -> u64 {
            info.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        Ok((get("total_reads_processed"), get("total_net_input_bytes")))
    }
    /// `INFO commandstats`: command -> (calls, microseconds spent executing it).
    pub fn command_stats(&self) -> R<BTreeMap<String, (u64, u64)>> {
        let mut c = self.conn()?;
        let info: String = redis::cmd("INFO").arg("commandstats").query(&mut c).map_err(|e| e.to_string())?;
        let mut out = BTreeMap::new();
        for l in info.lines() {
            let Some((name, rest)) = l.strip_prefix("cmdstat_").and_then(|r| r.split_once(':')) else { continue };
            let field = |k: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                    .and_then(|v| v.parse().ok())
            };
            if let (Some(calls), Some(usec)) = (field("calls"), field("usec")) {
                out.insert(name.to_string(), (calls, usec));
            }
        }
        Ok(out)
    }
    pub fn stop(mut self) {
        self.proc.terminate(Duration::from_secs(10));
    }
}

/// A 3-master Redis Cluster, formed with `redis-cli --cluster create`.
pub struct Cluster {
    pub nodes: Vec<RedisServer>,
    /// slot -> index into `nodes` of the master serving it.
    pub owner: Vec<u8>,
}

impl Cluster {
    pub fn start(server_bin: &Path, cli_bin: &Path, dir: &Path, masters: usize) -> R<Cluster> {
        let nodes = (0..masters)
            .map(|i| RedisServer::start(server_bin, dir, &format!("cluster{i}"), true))
            .collect::<R<Vec<_>>>()?;
        let out_path = dir.join("cluster-create.log");
        let mut cmd = sys::command_logged(cli_bin, &out_path, &out_path.with_extension("err"))
            .map_err(|e| format!("cluster create log: {e}"))?;
        cmd.arg("--cluster").arg("create").args(nodes.iter().map(RedisServer::addr));
        cmd.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let mut p = sys::spawn("redis-cli --cluster create", cmd).map_err(|e| format!("redis-cli: {e}"))?;
        let e = p.wait(Duration::from_secs(60))?;
        let text = std::fs::read_to_string(&out_path).unwrap_or_default()
            + &std::fs::read_to_string(out_path.with_extension("err")).unwrap_or_default();
        if !e.success() || text.contains("[ERR]") {
            return Err(format!("redis-cli --cluster create failed ({}):\n{text}", e.describe()));
        }
        let mut c = Cluster { nodes, owner: Vec::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match c.consistency() {
                Ok(map) => {
                    c.owner = map;
                    return Ok(c);
                }
                Err(why) if Instant::now() > deadline => return Err(format!("the cluster did not settle: {why}")),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The seed URL for df2redis (every master listed).
    pub fn url(&self) -> String {
        format!("redis://{}", self.nodes.iter().map(RedisServer::addr).collect::<Vec<_>>().join(","))
    }

    /// Ok(slot owner map) once every node reports cluster_state:ok, knows every node, sees
    /// every slot assigned, and all agree on the slot map.
    fn consistency(&self) -> R<Vec<u8>> {
        let mut first: Option<Vec<u8>> = None;
        for (i, n) in self.nodes.iter().enumerate() {
            let mut c = n.conn()?;
            let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).map_err(|e| e.to_string())?;
            let get = |k: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')))
                    .unwrap_or("?")
                    .trim()
                    .to_string()
            };
            if get("cluster_state") != "ok" {
                return Err(format!("node {i}: cluster_state:{}", get("cluster_state")));
            }
            if get("cluster_known_nodes") != self.nodes.len().to_string() {
                return Err(format!("node {i}: cluster_known_nodes:{}", get("cluster_known_nodes")));
            }
            if get("cluster_slots_assigned") != "16384" {
                return Err(format!("node {i}: cluster_slots_assigned:{}", get("cluster_slots_assigned")));
            }
            let map = self.slot_owner(&mut c)?;
            match &first {
                None => first = Some(map),
                Some(f) if *f != map => return Err(format!("node {i} disagrees on the slot map")),
                _ => {}
            }
        }
        first.ok_or_else(|| "no nodes".into())
    }

    fn slot_owner(&self, c: &mut redis::Connection) -> R<Vec<u8>> {
        let raw: Vec<RV> = redis::cmd("CLUSTER").arg("SLOTS").query(c).map_err(|e| e.to_string())?;
        let mut owner = vec![u8::MAX; 16384];
        for r in raw {
            let RV::Array(r) = r else { return Err(format!("CLUSTER SLOTS entry {r:?}")) };
            let int = |v: &RV| match v {
                RV::Int(i) => Ok(*i),
                other => Err(format!("CLUSTER SLOTS: expected an integer, got {other:?}")),
            };
            let (a, b) = (int(&r[0])?, int(&r[1])?);
            let RV::Array(master) = &r[2] else { return Err(format!("CLUSTER SLOTS master {:?}", r[2])) };
            let port = int(&master[1])? as u16;
            let idx = self.nodes.iter().position(|n| n.port == port).ok_or(format!("unknown node port {port}"))?;
            for s in a..=b {
                owner[s as usize] = idx as u8;
            }
        }
        if owner.contains(&u8::MAX) {
            return Err("some slots are not served".into());
        }
        Ok(owner)
    }

    pub fn flushall(&self) -> R<()> {
        self.nodes.iter().try_for_each(RedisServer::flushall)
    }
    pub fn dbsize(&self) -> R<u64> {
        self.nodes.iter().map(RedisServer::dbsize).sum()
    }
    pub fn cpu_s(&self) -> f64 {
        self.nodes.iter().map(RedisServer::cpu_s).sum()
    }
    pub fn reset_stats(&self) -> R<()> {
        self.nodes.iter().try_for_each(RedisServer::reset_stats)
    }
    pub fn io_stats(&self) -> R<(u64, u64)> {
        let mut t = (0, 0);
        for n in &self.nodes {
            let (a, b) = n.io_stats()?;
            t = (t.0 + a, t.1 + b);
        }
        Ok(t)
    }
    pub fn command_stats(&self) -> R<BTreeMap<String, (u64, u64)>> {
        let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for n in &self.nodes {
            for (k, (c, u)) in n.command_stats()? {
                let e = out.entry(k).or_default();
                e.0 += c;
                e.1 += u;
            }
        }
        Ok(out)
    }
    /// A connection to the master serving `key`.
    pub fn conn_for(&self, key: &[u8]) -> R<redis::Connection> {
        let slot = df2redis::target::slots::key_slot(key);
        self.nodes[self.owner[slot as usize] as usize].conn()
    }
    pub fn stop(self) {
        for n in self.nodes {
            n.stop();
        }
    }
}

/// Paths of per-node RESP files split from one file.
pub fn split_paths(base: &Path, n: usize) -> Vec<PathBuf> {
    (0..n).map(|i| base.with_extension(format!("node{i}.resp"))).collect()
}

/// Where a figure writes: a server or a cluster.
pub enum Target<'a> {
    Standalone(&'a RedisServer),
    Cluster(&'a Cluster),
}

impl Target<'_> {
    pub fn url(&self) -> String {
        match self {
            Target::Standalone(r) => format!("redis://{}", r.addr()),
            Target::Cluster(c) => c.url(),
        }
    }
    pub fn flushall(&self) -> R<()> {
        match self {
            Target::Standalone(r) => r.flushall(),
            Target::Cluster(c) => c.flushall(),
        }
    }
    pub fn dbsize(&self) -> R<u64> {
        match self {
            Target::Standalone(r) => r.dbsize(),
            Target::Cluster(c) => c.dbsize(),
        }
    }
    pub fn cpu_s(&self) -> f64 {
        match self {
            Target::Standalone(r) => r.cpu_s(),
            Target::Cluster(c) => c.cpu_s(),
        }
    }
    pub fn reset_stats(&self) -> R<()> {
        match self {
            Target::Standalone(r) => r.reset_stats(),
            Target::Cluster(c) => c.reset_stats(),
        }
    }
    /// A connection to the server that holds `key`.
    pub fn conn_for(&self, key: &[u8]) -> R<redis::Connection> {
        match self {
            Target::Standalone(r) => r.conn(),
            Target::Cluster(c) => c.conn_for(key),
        }
    }
}
