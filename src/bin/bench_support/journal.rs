//! The live-journal figure: the in-process emulator streams a fixed-rate mix (SET, HSET, INCR,
//! LPUSH, ZADD, DEL, cross-shard MSET) while `df2redis replicate` applies it. Before each
//! step's clock starts, the step's records are applied to the emulator's data model and
//! pre-encoded per shard (`Emulator::prepare_journal`); during the step they are released
//! paced to the rate, a chunk every millisecond (`Emulator::release_journal`), so the source
//! costs almost no CPU and the figure measures df2redis, not the emulator's write path. Every
//! 10 ms a probe `SET bench:probe:<n> <ns since the bench started>` goes through the
//! emulator's live write path, interleaved between the chunks with its own LSN, and a probe
//! thread polls the target for it (MGET every millisecond): lag = first seen - handed to the
//! flow. The rate is stepped; a step holds when the source achieved the rate (within 5 %),
//! no probe was lost and the p99 lag is under the limit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use df2redis::emulator::datasets::Rng;
use df2redis::emulator::{Compression, Config, Emulator, Value};
use redis::Value as RV;

use super::servers::{RedisServer, Target, R};
use super::sys::{self, Proc};

pub struct JournalCfg {
    pub flows: usize,
    pub compression: Compression,
    pub step: Duration,
    pub rates: Vec<u64>,
    pub lag_limit_ms: f64,
    pub df2redis: PathBuf,
    pub df2redis_args: Vec<String>,
    pub dir: PathBuf,
}

#[derive(Clone, Debug, Default)]
pub struct Step {
    pub rate: u64,
    pub achieved: f64,
    pub probes: usize,
    pub lost: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub df2redis_cpu_pct: f64,
    pub redis_cpu_pct: f64,
    pub source_cpu_pct: f64,
    /// The rest of the machine (interference).
    pub other_cpu_pct: f64,
    pub pass: bool,
    pub why: String,
}

impl Step {
    /// Operations applied per second of df2redis CPU (its cost per op, which the machine's
    /// other load hardly moves).
    pub fn ops_per_df2redis_core(&self) -> f64 {
        if self.df2redis_cpu_pct > 0.0 {
            self.achieved / (self.df2redis_cpu_pct / 100.0)
        } else {
            0.0
        }
    }
}

pub struct JournalResult {
    pub steps: Vec<Step>,
    /// Index of the highest step that held.
    pub best: Option<usize>,
    pub max_stall_ms: u64,
    pub verified_keys: u64,
    pub peak_rss: u64,
}

/// Operations pre-built once, cycled through by the steps' prepared journals.
type Op = Vec<Vec<u8>>;

const POOL: usize = 1 << 16;
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// The paced release hands the records due to the flows this often.
const TICK: Duration = Duration::from_millis(1);
/// Steps halfway between the highest rate that held and the lowest that did not.
const REFINE_STEPS: usize = 2;
/// No halving once the two are this close (ops/s).
const REFINE_MIN: u64 = 50_000;
/// How long after a step the probe thread still waits for its last probes.
const GRACE: Duration = Duration::from_secs(2);

fn op_pool(emu: &Emulator) -> Vec<Op> {
    let mut r = Rng::new(42);
    let b = |s: String| s.into_bytes();
    (0..POOL)
        .map(|i| {
            let k = r.below(100_000);
            let v = r.text(16);
            match i % 7 {
                0 => vec![b"SET".to_vec(), b(format!("j:s:{k}")), v],
                1 => vec![b"HSET".to_vec(), b(format!("j:h:{}", k % 10_000)), b(format!("f{}", k % 20)), v],
                2 => vec![b"INCR".to_vec(), b(format!("j:n:{}", k % 10_000))],
                3 => vec![b"LPUSH".to_vec(), b(format!("j:l:{}", k % 100)), v],
                4 => vec![
                    b"ZADD".to_vec(),
                    b(format!("j:z:{}", k % 100)),
                    b(format!("{}", r.below(1000))),
                    b(format!("m{}", k % 1000)),
                ],
                5 => vec![b"DEL".to_vec(), b(format!("j:s:{k}"))],
                _ => {
                    // Cross-shard: the second key lives on another shard than the first.
                    let a = format!("j:m:{k}");
                    let mut j = k + 1;
                    while emu.config().shards > 1
                        && emu.shard_of(format!("j:m:{j}").as_bytes()) == emu.shard_of(a.as_bytes())
                    {
                        j += 1;
                    }
                    vec![b"MSET".to_vec(), b(a), v.clone(), b(format!("j:m:{j}")), v]
                }
            }
        })
        .collect()
}

/// Write a probe `SET bench:probe:<n> <ns since epoch>` every 10 ms through the emulator's live
/// write path (it goes to the socket writers at once, between the paced chunks) until `stop`;
/// each probe is timestamped right after its write() returned, i.e. when it was handed to
/// the flow. Returns the next probe number.
fn probe_writer(emu: &Emulator, stop: &AtomicBool, probes: &Sender<(u64, Instant)>, mut n: u64, epoch: Instant) -> u64 {
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let key = format!("bench:probe:{n}");
        let ns = Instant::now().duration_since(epoch).as_nanos().to_string();
        if let Err(e) = emu.write(0, &[b"SET", key.as_bytes(), ns.as_bytes()]) {
            log::warn!("probe writer: {e}");
        }
        let _ = probes.send((n, Instant::now()));
        n += 1;
        next += PROBE_EVERY;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    n
}

/// Poll the target for probes until the sender is gone and every probe was seen (or the
/// grace period passed). Returns the lags in ms and the number never seen.
fn poll_probes(port: u16, rx: Receiver<(u64, Instant)>) -> R<(Vec<f64>, usize)> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection())
        .map_err(|e| format!("probe thread: {e}"))?;
    let mut outstanding: Vec<(u64, Instant)> = Vec::new();
    let mut lags = Vec::new();
    let mut ended: Option<Instant> = None;
    loop {
        loop {
            match rx.try_recv() {
                Ok(p) => outstanding.push(p),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    ended.get_or_insert_with(Instant::now);
                    break;
                }
            }
        }
        if !outstanding.is_empty() {
            let n = outstanding.len().min(2000);
            let keys: Vec<String> = outstanding[..n].iter().map(|(i, _)| format!("bench:probe:{i}")).collect();
            let got: Vec<Option<Vec<u8>>> =
                redis::cmd("MGET").arg(&keys).query(&mut c).map_err(|e| format!("probe MGET: {e}"))?;
            let now = Instant::now();
            let mut seen = vec![false; n];
            for (i, v) in got.iter().enumerate() {
                if v.is_some() {
                    lags.push(now.duration_since(outstanding[i].1).as_secs_f64() * 1e3);
                    seen[i] = true;
                }
            }
            let mut i = 0;
            outstanding.retain(|_| {
                let keep = i >= n || !seen[i];
                i += 1;
                keep
            });
        }
        if let Some(t) = ended {
            if outstanding.is_empty() || t.elapsed() > GRACE {
                return Ok((lags, outstanding.len()));
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn pct(cpu: f64, wall: f64) -> f64 {
    if wall > 0.0 {
        cpu / wall * 100.0
    } else {
        0.0
    }
}

/// Wait until the probe `key` is on the target.
fn wait_for_key(target: &Target, key: &str, timeout: Duration) -> R<bool> {
    let mut c = target.conn_for(key.as_bytes())?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let n: u64 = redis::cmd("EXISTS").arg(key).query(&mut c).map_err(|e| e.to_string())?;
        if n == 1 {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(false)
}

/// An emulator (empty, pre-encoded) and `df2redis replicate` from it into `target` (flushed
/// first, with `extra` arguments), in stable sync once this returns; and the path of its log.
fn start_replicate(cfg: &JournalCfg, target: &Target, extra: &[&str], tag: &str) -> R<(Arc<Emulator>, Proc, PathBuf)> {
    let emu = Arc::new(
        Emulator::start(Config {
            shards: cfg.flows,
            compression: cfg.compression,
            pre_encode: true,
            ..Config::default()
        })
        .map_err(|e| format!("emulator: {e}"))?,
    );
    emu.pre_encode();
    target.flushall()?;
    let (out, err) = (cfg.dir.join(format!("{tag}-df2redis.out")), cfg.dir.join(format!("{tag}-df2redis.err")));
    let mut cmd = sys::command_logged(&cfg.df2redis, &out, &err).map_err(|e| e.to_string())?;
    cmd.arg("replicate")
        .args(["--source", &emu.addr().to_string(), "--target", &target.url()])
        .args(&cfg.df2redis_args)
        .args(extra);
    let mut df: Proc = sys::spawn("df2redis replicate", cmd).map_err(|e| format!("start df2redis: {e}"))?;
    // Stable sync reached: a first probe arrives.
    emu.write(0, &[b"SET", b"bench:probe:start", b"0"]).map_err(|e| e.to_string())?;
    if !wait_for_key(target, "bench:probe:start", Duration::from_secs(60))? {
        let e = df.terminate(Duration::from_secs(10));
        return Err(format!(
            "df2redis replicate never applied the first probe within 60 s (df2redis: {}; its log: {})",
            e.describe(),
            err.display()
        ));
    }
    Ok((emu, df, err))
}

/// How fast `replicate` applies a backlog of `records` journal operations released at once
/// (records per second, from the release to the last ACK), with or without its checkpoint
/// markers (`--checkpoints on|off`): the cost of the exactly-once batches (MULTI/EXEC on a
/// server; markers and scripts on a cluster).
pub fn catchup(cfg: &JournalCfg, target: &Target, checkpoints: bool, ops: usize) -> R<f64> {
    let onoff = if checkpoints { "on" } else { "off" };
    let (emu, mut df, err) = start_replicate(cfg, target, &["--checkpoints", onoff], &format!("catchup-{onoff}"))?;
    let pool = op_pool(&emu);
    let fail = |df: &mut Proc, why: String| -> String {
        let e = df.terminate(Duration::from_secs(10));
        format!("{why} (df2redis: {}; its log: {})", e.describe(), err.display())
    };
    let prep = emu.prepare_journal(0, pool.iter().cycle().take(ops)).map_err(|e| fail(&mut df, format!("preparing the journal: {e}")))?;
    let t0 = Instant::now();
    emu.release_journal(&prep, u64::MAX / 4, TICK);
    if !emu.wait_acked_all(Duration::from_secs(300)) {
        return Err(fail(&mut df, format!("df2redis did not apply {} records within 300 s", prep.records())));
    }
    let rate = prep.records() as f64 / t0.elapsed().as_secs_f64();
    let e = df.terminate(Duration::from_secs(30));
    if !e.success() {
        return Err(format!("df2redis replicate did not exit cleanly on SIGTERM: {}; log: {}", e.describe(), err.display()));
    }
    Ok(rate)
}

/// The practical ceiling of the target for the journal's mix: `ops` operations of the same
/// pool as RESP commands through `redis-cli --pipe` into the flushed `redis`, in ops/s.
pub fn pipe_mix(cfg: &JournalCfg, redis: &RedisServer, redis_cli: &std::path::Path, ops: usize) -> R<f64> {
    let emu = Emulator::start(Config { shards: cfg.flows, ..Config::default() }).map_err(|e| format!("emulator: {e}"))?;
    let pool = op_pool(&emu);
    emu.stop();
    let file = cfg.dir.join("journal-mix.resp");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file).map_err(|e| format!("{}: {e}", file.display()))?);
        let mut buf = Vec::new();
        for op in pool.iter().cycle().take(ops) {
            buf.clear();
            df2redis::target::resp::encode(&mut buf, op.iter().map(|a| a.as_slice()));
            std::io::Write::write_all(&mut w, &buf).map_err(|e| e.to_string())?;
        }
        std::io::Write::flush(&mut w).map_err(|e| e.to_string())?;
    }
    redis.flushall()?;
    let out = cfg.dir.join("journal-mix-pipe.out");
    let mut cmd = std::process::Command::new(redis_cli);
    cmd.args(["-h", "127.0.0.1", "-p", &redis.port.to_string(), "--pipe"])
        .stdin(std::fs::File::open(&file).map_err(|e| format!("{}: {e}", file.display()))?)
        .stdout(std::fs::File::create(&out).map_err(|e| e.to_string())?)
        .stderr(std::process::Stdio::null());
    let t0 = Instant::now();
    let mut p = sys::spawn("redis-cli --pipe", cmd).map_err(|e| format!("redis-cli: {e}"))?;
    let e = p.wait(Duration::from_secs(600))?;
    let secs = t0.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    if !e.success() || !text.contains("errors: 0,") {
        return Err(format!("journal mix: redis-cli --pipe failed ({}):\n{text}", e.describe()));
    }
    let _ = std::fs::remove_file(&file);
    redis.flushall()?;
    Ok(ops as f64 / secs)
}

pub fn run(cfg: &JournalCfg, redis: &RedisServer, epoch: Instant, say: &dyn Fn(String)) -> R<JournalResult> {
    let (emu, mut df, err) = start_replicate(cfg, &Target::Standalone(redis), &[], "journal")?;
    let pool = Arc::new(op_pool(&emu));
    let fail = |df: &mut Proc, why: String| -> String {
        let e = df.terminate(Duration::from_secs(10));
        format!("{why} (df2redis: {}; its log: {})", e.describe(), err.display())
    };

    let mut steps: Vec<Step> = Vec::new();
    let mut probe_n: u64 = 0;
    let mut pool_at: usize = 0;
    let mut ladder = cfg.rates.iter().copied();
    let mut refine_left = REFINE_STEPS;
    while let Some(rate) = next_rate(&steps, &mut ladder, &mut refine_left) {
        // Before the clock: this step's records, applied to the data model and encoded.
        let n_ops = (rate as f64 * cfg.step.as_secs_f64()).round() as usize;
        let t_prep = Instant::now();
        let prep = emu
            .prepare_journal(0, pool.iter().cycle().skip(pool_at).take(n_ops))
            .map_err(|e| fail(&mut df, format!("preparing the journal: {e}")))?;
        pool_at = (pool_at + n_ops) % pool.len();
        say(format!(
            "journal {rate} ops/s: {} records ({:.1} MB) prepared in {:.1} s",
            prep.records(),
            prep.bytes() as f64 / 1e6,
            t_prep.elapsed().as_secs_f64()
        ));
        let (tx, rx) = mpsc::channel();
        let port = redis.port;
        let poller = std::thread::Builder::new()
            .name("bench-probe".into())
            .spawn(move || poll_probes(port, rx))
            .map_err(|e| e.to_string())?;
        let (cpu_df0, cpu_r0, cpu_s0, busy0) =
            (df.cpu_s().unwrap_or(0.0), redis.cpu_s(), sys::self_cpu_s(), sys::system_busy_s());
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let prober = {
            let (emu, stop, n) = (emu.clone(), stop.clone(), probe_n);
            std::thread::Builder::new()
                .name("bench-probe-writer".into())
                .spawn(move || probe_writer(&emu, &stop, &tx, n, epoch))
                .map_err(|e| e.to_string())?
        };
        // The rate counts commands (a cross-shard MSET is one, as a client sees it) while the
        // flows carry records (its parts): pace the records so the commands come at `rate`.
        let per_op = prep.records() as f64 / n_ops.max(1) as f64;
        let released = emu.release_journal(&prep, (rate as f64 * per_op).round() as u64, TICK);
        stop.store(true, Ordering::SeqCst);
        probe_n = prober.join().map_err(|_| "the probe writer panicked".to_string())?;
        let (done, secs) = ((released.records as f64 / per_op).round() as u64, released.secs);
        let wall = t0.elapsed().as_secs_f64();
        let (cpu_df1, cpu_r1, cpu_s1, busy1) =
            (df.cpu_s().unwrap_or(0.0), redis.cpu_s(), sys::self_cpu_s(), sys::system_busy_s());
        let other = (busy1 - busy0) - (cpu_df1 - cpu_df0) - (cpu_r1 - cpu_r0) - (cpu_s1 - cpu_s0);
        let (mut lags, lost) = poller.join().map_err(|_| "the probe thread panicked".to_string())??;
        lags.sort_by(f64::total_cmp);
        let mut s = Step {
            rate,
            achieved: done as f64 / secs,
            probes: lags.len() + lost,
            lost,
            p50_ms: percentile(&lags, 0.50),
            p99_ms: percentile(&lags, 0.99),
            max_ms: lags.last().copied().unwrap_or(0.0),
            df2redis_cpu_pct: pct(cpu_df1 - cpu_df0, wall),
            redis_cpu_pct: pct(cpu_r1 - cpu_r0, wall),
            source_cpu_pct: pct(cpu_s1 - cpu_s0, wall),
            other_cpu_pct: pct(other.max(0.0), wall),
            pass: false,
            why: String::new(),
        };
        let mut why = Vec::new();
        if s.achieved < rate as f64 * 0.95 {
            why.push(format!("the source reached only {:.0} ops/s", s.achieved));
        }
        if lost > 0 {
            why.push(format!("{lost} probes not applied within {GRACE:?} after the step"));
        }
        if s.p99_ms >= cfg.lag_limit_ms {
            why.push(format!("p99 lag {:.1} ms >= {} ms", s.p99_ms, cfg.lag_limit_ms));
        }
        if let Some(e) = df.try_reap() {
            return Err(format!(
                "df2redis replicate ended during the journal step ({}); log: {}",
                e.describe(),
                err.display()
            ));
        }
        s.pass = why.is_empty();
        s.why = why.join("; ");
        say(format!(
            "journal {rate} ops/s: achieved {:.0}, lag p50 {:.1} ms p99 {:.1} ms max {:.1} ms, {} probes, CPU df2redis {:.0}% redis {:.0}% source {:.0}% other {:.0}% -> {}",
            s.achieved,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            s.probes,
            s.df2redis_cpu_pct,
            s.redis_cpu_pct,
            s.source_cpu_pct,
            s.other_cpu_pct,
            if s.pass { "holds".to_string() } else { format!("missed: {}", s.why) }
        ));
        steps.push(s);
        // Let df2redis drain what is queued before the next step (or the check).
        if !emu.wait_acked_all(Duration::from_secs(120)) {
            return Err(fail(&mut df, format!("df2redis did not catch up within 120 s after the {rate} ops/s step")));
        }
    }

    // Everything written is applied (ACKed): the target must equal the emulator's data.
    if !emu.wait_acked_all(Duration::from_secs(120)) {
        return Err(fail(&mut df, "df2redis did not ACK every record within 120 s".into()));
    }
    let verified = match verify_all(&emu, redis) {
        Ok(n) => n,
        Err(e) => return Err(fail(&mut df, format!("the target differs from the emulator after the journal: {e}"))),
    };
    let e = df.terminate(Duration::from_secs(30));
    if !e.success() {
        return Err(format!(
            "df2redis replicate did not exit cleanly on SIGTERM: {}; log: {}",
            e.describe(),
            err.display()
        ));
    }
    let best = steps.iter().enumerate().filter(|(_, s)| s.pass).max_by_key(|(_, s)| s.rate).map(|(i, _)| i);
    let max_stall_ms = emu.max_stall_ms();
    let violations = emu.violations();
    if !violations.is_empty() {
        return Err(format!("the emulator saw protocol violations: {violations:?}"));
    }
    Ok(JournalResult { steps, best, max_stall_ms, verified_keys: verified, peak_rss: e.peak_rss })
}

/// The next rate to try: the ladder's, up to its first rate that does not hold; then up to
/// [`REFINE_STEPS`] rates halfway between the highest that held and the lowest that did not,
/// while they are more than [`REFINE_MIN`] apart. The ladder's steps are 0.2M apart near the
/// limit, a tenth of the mix pipe's rate: without the halving the figure would move by that
/// much on one step's luck.
fn next_rate(steps: &[Step], ladder: &mut impl Iterator<Item = u64>, refine_left: &mut usize) -> Option<u64> {
    let Some(missed) = steps.iter().filter(|s| !s.pass).map(|s| s.rate).min() else {
        return ladder.next();
    };
    let held = steps.iter().filter(|s| s.pass).map(|s| s.rate).max()?;
    if *refine_left == 0 || missed.saturating_sub(held) <= REFINE_MIN {
        return None;
    }
    *refine_left -= 1;
    Some((held + missed) / 2 / 10_000 * 10_000)
}

/// Compare every key of the emulator's db 0 with the target (strings, hashes, lists, zsets).
fn verify_all(emu: &Emulator, redis: &RedisServer) -> R<u64> {
    let data = emu.data().remove(&0).unwrap_or_default();
    let mut c = redis.conn()?;
    // replicate keeps one checkpoint marker per flow in db 0, and its lease; not the master's data.
    let pattern = "df2redis:*";
    let markers: Vec<Vec<u8>> = redis::cmd("KEYS").arg(pattern).query(&mut c).map_err(|e| format!("KEYS {pattern}: {e}"))?;
    let markers: Vec<Vec<u8>> = markers.into_iter().filter(|k| df2redis::checkpoint::is_internal(k)).collect();
    let size = redis.dbsize()? - markers.len() as u64;
    if size != data.len() as u64 {
        return Err(format!("target DBSIZE {size} (without {} checkpoint markers), emulator has {} keys", markers.len(), data.len()));
    }
    let keys: Vec<(&Vec<u8>, &Value)> = data.iter().map(|(k, e)| (k, &e.value)).collect();
    for chunk in keys.chunks(500) {
        let mut p = redis::pipe();
        for (k, v) in chunk {
            match v {
                Value::String(_) => p.cmd("GET").arg(k.as_slice()),
                Value::Hash(_) => p.cmd("HGETALL").arg(k.as_slice()),
                Value::List(_) => p.cmd("LRANGE").arg(k.as_slice()).arg(0).arg(-1),
                Value::Zset(_) => p.cmd("ZRANGE").arg(k.as_slice()).arg(0).arg(-1).arg("WITHSCORES"),
                other => return Err(format!("unexpected {} key in the journal dataset", other.type_name())),
            };
        }
        let got: Vec<RV> = p.query(&mut c).map_err(|e| format!("reading the target: {e}"))?;
        for ((k, want), got) in chunk.iter().zip(got) {
            let name = String::from_utf8_lossy(k);
            let bulk = |v: &RV| match v {
                RV::BulkString(b) => Some(b.clone()),
                RV::SimpleString(s) => Some(s.clone().into_bytes()),
                _ => None,
            };
            let arr = |v: RV| match v {
                RV::Array(a) => a.iter().map(bulk).collect::<Option<Vec<_>>>(),
                _ => None,
            };
            let same = match want {
                Value::String(s) => bulk(&got).as_ref() == Some(s),
                Value::Hash(h) => arr(got).is_some_and(|a| {
                    let m: BTreeMap<Vec<u8>, Vec<u8>> = a.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
                    a.len() == 2 * h.len() && m == *h
                }),
                Value::List(l) => arr(got).is_some_and(|a| a.iter().eq(l.iter())),
                Value::Zset(z) => arr(got).is_some_and(|a| {
                    let m: Option<BTreeMap<Vec<u8>, f64>> = a
                        .chunks(2)
                        .map(|p| Some((p[0].clone(), std::str::from_utf8(&p[1]).ok()?.parse::<f64>().ok()?)))
                        .collect();
                    a.len() == 2 * z.len() && m.as_ref() == Some(z)
                }),
                _ => false,
            };
            if !same {
                return Err(format!("key {name} differs"));
            }
        }
    }
    Ok(keys.len() as u64)
}
