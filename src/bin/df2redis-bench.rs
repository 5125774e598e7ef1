//! `df2redis-bench`: df2redis's throughput, memory, lag and checkpoint-cost figures, end to end
//! on one machine. Run it through `scripts/bench.sh`, which builds it first.
//!
//! Everything runs in one process tree on 127.0.0.1: its own redis-server (and a 3-master
//! cluster), the Dragonfly-master emulator in process with pre-encoded snapshots, and
//! `df2redis` / `redis-cli --pipe` / `redis-benchmark` as children. By default the standalone
//! redis-server gets the last CPU to itself and everything else the others (`--redis-cpu`):
//! on a 2-core machine the three processes otherwise take CPU from each other in proportions
//! that move from run to run, and a real target has a host of its own. Children are stopped by
//! PID (and die with the bench: PR_SET_PDEATHSIG). Datasets are generated, loaded and
//! pre-encoded, and their RESP files written, before the clock starts; each copy is checked
//! (DBSIZE and sampled values; the journal run compares every key) after it stops.
//!
//! Output: progress on stderr; on stdout a table, one `FIGURE name=value` line per figure,
//! and one `TARGET` line per target. Exit 0 unless a copy was wrong or something crashed
//! (1), or `--strict` and a target was missed (3); 2 for usage errors.

#[path = "bench_support/data.rs"]
mod data;
#[path = "bench_support/journal.rs"]
mod journal;
#[path = "bench_support/servers.rs"]
mod servers;
#[path = "bench_support/sys.rs"]
mod sys;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use df2redis::emulator::{Compression, Config, Emulator};

use data::{Dataset, Kind, Spec};
use servers::{Cluster, RedisServer, Target, R};

const LONG_ABOUT: &str = "\
Benchmark df2redis end to end on this machine, and print a table plus one line per \
figure: `FIGURE name=value`.

It starts its own redis-server (free port, --save \"\" --appendonly no), a 3-master Redis Cluster \
for the cluster figure, and the Dragonfly-master emulator in process, with every snapshot \
pre-encoded before the clock starts. For each snapshot dataset it times `df2redis migrate` (4 \
flows by default) into the empty redis-server, records df2redis's peak RSS and the CPU used by \
df2redis, Redis and the emulator, checks the copy (DBSIZE and sampled values), then times \
`redis-cli --pipe` of the same data as RESP commands into the same server. The journal figure \
steps a write mix (pre-encoded before each step, released paced to the rate) through \
`df2redis replicate` and measures the lag of live probe keys; its \
denominator is the same mix of commands through `redis-cli --pipe` (journal_vs_mix_pipe); \
`redis-benchmark -P 100 -t set` is printed beside it for information. The 20-element \
collection datasets are also piped back as RESTOREs of their own DUMP payloads (the RESTORE \
ceiling).

Before a dataset's timed runs Redis is filled once by an untimed `redis-cli --pipe` (warm-up, \
--no-warmup to skip), so that both timed runs find Redis' memory already faulted in; every \
timed run starts from FLUSHALL. The table also shows df2redis's CPU per thread group and what \
Redis executed (INFO commandstats, read events), which tell where the time goes.

Figures (MB = 10^6 bytes of payload: key, field and value bytes; the wire MB df2redis reports \
are in the table):
  <ds>.fullsync_keys_per_s  <ds>.fullsync_mb_per_s  <ds>.pipe_keys_per_s  <ds>.fullsync_vs_pipe
  <ds>.peak_rss_mb  <ds>.df2redis_cpu_pct  <ds>.redis_cpu_pct  <ds>.emulator_cpu_pct
  <ds>.df2redis_cpu_s_per_100k_keys (median over the runs; also for cluster_<ds>: df2redis's own
      cost, which the machine's other load hardly moves)
      for <ds> in small, hashes, zsets, lists20, sets, lists, big (and small_4x: peak_rss_mb,
      fullsync_keys_per_s); hashes, zsets, lists20 and sets are 20-element collections
  <ds>_vs_pipe  <ds>_vs_restore_pipe  <ds>.restore_pipe_keys_per_s  and the same for
      cluster_<ds>, for <ds> in small, hashes, zsets, lists20, sets (the RESTORE ceiling: the
      piped copy's own DUMP payloads piped back as `RESTORE key 0 payload` into the flushed
      target, in the same run, in the dataset's order: in the server's own SCAN order every
      insert would land next to the previous one, which no copy from a master does)
  <ds>.restore_keys_per_s  <ds>.restore_vs_pipe  <ds>.restore_peak_rss_mb  for <ds> in small and \
hashes: `df2redis restore` of the dataset's RDB file (SAVEd by a separate redis-server, for the \
same reason), against the pipe of the same data
  rss_growth  benchmark_set_ops_per_s  journal_max_ops_per_s  lag_p99_ms  journal_vs_benchmark
      (information only: a one-key SET benchmark, about twice as fast as the journal's mix)
  journal.peak_rss_mb  max_source_stall_ms
  journal_ops_per_df2redis_core_s  journal.df2redis_cpu_pct  journal.redis_cpu_pct
      journal.source_cpu_pct (at journal_max_ops_per_s: ops/s per core df2redis used, and each
      process's CPU; the table shows them for every step, and why the ladder stopped)
  journal_catchup_ops_per_s  journal_catchup_nocheckpoints_ops_per_s  checkpoint_cost (1 - on/off:
      a backlog of --catchup-ops journal operations released at once, applied with and without
      the exactly-once MULTI/EXEC checkpoints)
  journal_mix_pipe_ops_per_s  journal_vs_mix_pipe (the journal's own mix of commands through
      `redis-cli --pipe`: what the target accepts for that workload, against
      journal_max_ops_per_s)
  cluster_fullsync_keys_per_s  cluster_pipe_keys_per_s  cluster_fullsync_vs_pipe
  cluster_journal_catchup_ops_per_s  cluster_journal_catchup_nocheckpoints_ops_per_s
  cluster_checkpoint_cost (the catch-up into the 3-master cluster, with and without its
      checkpoints: per-node markers, and a script per node for the commands unsafe to apply
      twice, 2 in 7 of the mix)

Exit status: 0 when every copy was right (targets missed or not), 1 when a copy was wrong or a \
process failed, 3 with --strict when a target was missed, 2 for usage errors.";

#[derive(Parser, Debug)]
#[command(name = "df2redis-bench", about = "Benchmark df2redis end to end", long_about = LONG_ABOUT)]
struct Args {
    /// Tiny sizes and short journal steps (the whole run well under a minute); explicit size
    /// flags still win.
    #[arg(long)]
    smoke: bool,
    /// Run only these parts (comma-separated): small, hashes, zsets, lists20, sets, lists, big,
    /// rss (small at --rss-factor times its size), journal, cluster (small and the 20-element
    /// collections into a 3-master cluster), multi (small/2 keys from 2 masters in one run
    /// into a 3-master cluster, against one master with the same keys).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<Part>>,
    /// Keys of `small` (16-byte keys, 32-byte values) [default: 2000000; smoke 20000].
    #[arg(long)]
    small_keys: Option<usize>,
    /// Hashes of `hashes` [default: 200000; smoke 2000].
    #[arg(long)]
    hashes: Option<usize>,
    /// Fields per hash (16-byte names, 32-byte values).
    #[arg(long, default_value_t = 20)]
    hash_fields: usize,
    /// Lists of `lists` [default: 100; smoke 4].
    #[arg(long)]
    lists: Option<usize>,
    /// Elements (32 bytes) per list [default: 100000; smoke 10000].
    #[arg(long)]
    list_elems: Option<usize>,
    /// Sorted sets of `zsets` [default: 150000; smoke 2000].
    #[arg(long)]
    zsets: Option<usize>,
    /// Lists of `lists20` [default: 200000; smoke 2000].
    #[arg(long)]
    short_lists: Option<usize>,
    /// Sets of `sets` [default: 150000; smoke 2000].
    #[arg(long)]
    sets: Option<usize>,
    /// Members (elements) per sorted set, set and list of `zsets`, `sets` and `lists20`.
    #[arg(long, default_value_t = 20)]
    collection_width: usize,
    /// Elements per RPUSH in the RESP file of `lists`.
    #[arg(long, default_value_t = 1000)]
    list_batch: usize,
    /// Strings of `big` [default: 1000; smoke 20].
    #[arg(long)]
    big: Option<usize>,
    /// Bytes per `big` value.
    #[arg(long, default_value_t = 1 << 20)]
    big_bytes: usize,
    /// rss_growth compares `small` with `small` at this many times its keys.
    #[arg(long, default_value_t = 4)]
    rss_factor: usize,
    /// Emulator shards = df2redis flows.
    #[arg(long, default_value_t = 4)]
    flows: usize,
    /// Snapshot compression of the emulator (Dragonfly's default is lz4).
    #[arg(long, value_enum, default_value_t = Compression::Lz4)]
    compression: Compression,
    /// Seconds each journal rate is held [default: 20; smoke 2].
    #[arg(long)]
    journal_secs: Option<f64>,
    /// Journal rates to step through, ops/s, comma-separated; stops at the first that does
    /// not hold [default: 5000,10000,20000,40000,80000,120000,160000,200000,240000,320000,480000,640000;
    /// smoke 2000,5000].
    #[arg(long, value_delimiter = ',')]
    journal_rates: Option<Vec<u64>>,
    /// A journal step holds only with a p99 lag under this many ms.
    #[arg(long, default_value_t = 100.0)]
    lag_limit_ms: f64,
    /// Requests of `redis-benchmark -P 100 -t set` [default: 2000000; smoke 100000].
    #[arg(long)]
    benchmark_requests: Option<u64>,
    /// Journal operations of the catch-up figure (released at once, applied by `replicate`
    /// with and without its checkpoints) [default: 2000000; smoke 20000].
    #[arg(long)]
    catchup_ops: Option<usize>,
    /// The df2redis binary [default: `df2redis` beside this program].
    #[arg(long)]
    df2redis: Option<PathBuf>,
    /// An extra argument for every df2redis run (repeat it), e.g. --df2redis-arg=--inflight=16.
    #[arg(long = "df2redis-arg", allow_hyphen_values = true)]
    df2redis_args: Vec<String>,
    /// redis-server, redis-cli and redis-benchmark are looked up in PATH unless given.
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// redis-cli (cluster creation and `--pipe`).
    #[arg(long, default_value = "redis-cli")]
    redis_cli: PathBuf,
    /// redis-benchmark (journal_vs_benchmark, printed for information).
    #[arg(long, default_value = "redis-benchmark")]
    redis_benchmark: PathBuf,
    /// Directory for RESP files, logs and Redis' working directories [default: a fresh one
    /// under $TMPDIR, removed at the end].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the work directory (logs of every run) at the end.
    #[arg(long)]
    keep_work_dir: bool,
    /// Longest a single df2redis or redis-cli run may take, in seconds.
    #[arg(long, default_value_t = 3600)]
    timeout_secs: u64,
    /// Skip the untimed warm-up fill of Redis before each dataset's timed runs. Without it the
    /// first timed run pays for Redis' memory growing (page faults) and the later one does not.
    #[arg(long)]
    no_warmup: bool,
    /// Where the standalone redis-server runs: `auto` (default) gives it the machine's last
    /// CPU to itself and keeps the bench (the emulated source), df2redis and redis-cli on the
    /// others, as when the target has a host of its own; `shared` lets every process run on
    /// every CPU; a number picks Redis's CPU. With one CPU, `auto` is `shared`. A cluster's
    /// masters always share every CPU.
    #[arg(long, default_value = "auto")]
    redis_cpu: String,
    /// Exit 3 when a target is missed.
    #[arg(long)]
    strict: bool,
    /// Times each snapshot dataset's migrate and pipe are run (alternating); the figures are
    /// the median run's, peak RSS the highest [default: 3; smoke 1].
    #[arg(long)]
    repeat: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Part {
    Small,
    Hashes,
    Zsets,
    Lists20,
    Sets,
    Lists,
    Big,
    Rss,
    Journal,
    Cluster,
    Multi,
}

/// Sizes and settings after --smoke and the explicit flags.
struct Plan {
    parts: Vec<Part>,
    small: usize,
    hashes: usize,
    zsets: usize,
    lists20: usize,
    sets: usize,
    lists: usize,
    list_elems: usize,
    big: usize,
    journal_secs: f64,
    journal_rates: Vec<u64>,
    benchmark_requests: u64,
    catchup_ops: usize,
    repeat: usize,
}

impl Plan {
    fn from(a: &Args) -> Plan {
        let s = a.smoke;
        let pick = |v: Option<usize>, full: usize, smoke: usize| v.unwrap_or(if s { smoke } else { full });
        Plan {
            parts: a.only.clone().unwrap_or_else(|| {
                vec![
                    Part::Small,
                    Part::Hashes,
                    Part::Zsets,
                    Part::Lists20,
                    Part::Sets,
                    Part::Lists,
                    Part::Big,
                    Part::Rss,
                    Part::Journal,
                    Part::Cluster,
                    Part::Multi,
                ]
            }),
            small: pick(a.small_keys, 2_000_000, 20_000),
            hashes: pick(a.hashes, 200_000, 2_000),
            zsets: pick(a.zsets, 150_000, 2_000),
            lists20: pick(a.short_lists, 200_000, 2_000),
            sets: pick(a.sets, 150_000, 2_000),
            lists: pick(a.lists, 100, 4),
            list_elems: pick(a.list_elems, 100_000, 10_000),
            big: pick(a.big, 1000, 20),
            journal_secs: a.journal_secs.unwrap_or(if s { 2.0 } else { 20.0 }),
            journal_rates: a.journal_rates.clone().unwrap_or_else(|| {
                if s {
                    vec![2000, 5000]
                } else {
                    // Up to the mix pipe's own rate here (1.3M-2.1M ops/s): the ladder stops at
                    // the first rate that does not hold, tries up to two rates halfway below it,
                    // and the table shows which process ran out of CPU at the lowest miss.
                    vec![
                        50_000, 100_000, 200_000, 400_000, 600_000, 800_000, 1_000_000, 1_200_000, 1_400_000, 1_600_000,
                        1_800_000,
                    ]
                }
            }),
            benchmark_requests: a.benchmark_requests.unwrap_or(if s { 100_000 } else { 2_000_000 }),
            catchup_ops: pick(a.catchup_ops, 2_000_000, 20_000),
            repeat: a.repeat.unwrap_or(if s { 1 } else { 3 }).max(1),
        }
    }
    fn has(&self, p: Part) -> bool {
        self.parts.contains(&p)
    }
}

/// One timed `df2redis migrate`.
/// Where a timed copy reads from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// `migrate` from the emulator.
    Master(&'a Emulator),
    /// `restore` of a snapshot file.
    File(&'a Path),
    /// One `migrate` from several emulators (`--source` repeated).
    Masters(&'a [&'a Emulator]),
}

#[derive(Clone, Debug, Default)]
struct Migrate {
    wall: f64,
    wire_mb: f64,
    peak_rss: u64,
    df2redis_cpu: f64,
    redis_cpu: f64,
    emulator_cpu: f64,
    /// Busy CPU of the machine not used by df2redis, Redis or the bench (interference).
    other_cpu: f64,
    /// df2redis CPU seconds per 100 000 keys: unlike the wall time, this hardly moves with the
    /// machine's other load, so it is the figure for df2redis's own cost (the median over runs
    /// once [`median_migrate`] has combined them).
    cpu_per_100k: f64,
    /// df2redis CPU seconds by thread group (flow-*, writer-*, ...).
    threads: BTreeMap<String, f64>,
    /// What Redis executed (INFO commandstats).
    cmds: CmdStats,
}

/// command -> (calls, microseconds executing it), from INFO commandstats.
type CmdStats = BTreeMap<String, (u64, u64)>;

/// One timed `redis-cli --pipe` (or three at once for the cluster).
#[derive(Clone, Debug, Default)]
struct Pipe {
    wall: f64,
    redis_cpu: f64,
    cli_cpu: f64,
    cmds: CmdStats,
}

struct Row {
    name: String,
    keys: u64,
    payload: u64,
    migrate: Migrate,
    pipe: Option<Pipe>,
    /// The RESTORE ceiling: the target's own DUMP payloads of the piped copy, piped back as
    /// RESTOREs into the flushed target.
    restore_pipe: Option<Pipe>,
    /// `df2redis restore` of the piped copy's own RDB file (`SAVE`), for `small` and `hashes`.
    restore_file: Option<Migrate>,
}

/// More of [`Target`] (defined beside the servers): what the full-sync figures read.
impl Target<'_> {
    /// Command statistics (read before the copy is checked) minus the harness's own commands
    /// and the clients' probes (MODULE LIST by df2redis, ECHO by redis-cli).
    fn command_stats(&self) -> R<CmdStats> {
        let mut m = match self {
            Target::Standalone(r) => r.command_stats(),
            Target::Cluster(c) => c.command_stats(),
        }?;
        let (reads, bytes) = match self {
            Target::Standalone(r) => r.io_stats(),
            Target::Cluster(c) => c.io_stats(),
        }?;
        m.insert("(reads)".into(), (reads, bytes));
        m.retain(|k, _| {
            !matches!(
                k.as_str(),
                "flushall"
                    | "dbsize"
                    | "info"
                    | "config|resetstat"
                    | "ping"
                    | "cluster|info"
                    | "cluster|slots"
                    | "cluster|myid"
                    | "module|list"
                    | "echo"
            )
        });
        Ok(m)
    }
    fn verify(&self, ds: &Dataset) -> R<()> {
        match self {
            Target::Standalone(r) => data::verify_samples(&ds.samples, |_| r.conn()),
            Target::Cluster(c) => data::verify_samples(&ds.samples, |k| c.conn_for(k)),
        }
    }
}

struct Bench {
    args: Args,
    plan: Plan,
    dir: PathBuf,
    df2redis: PathBuf,
    epoch: Instant,
    rows: Vec<Row>,
    figures: Vec<(String, String)>,
    max_stall_ms: u64,
    journal: Option<journal::JournalResult>,
    benchmark_rps: Option<f64>,
    /// Catch-up rates (records/s, medians) with and without checkpoints.
    catchup: Option<(f64, f64)>,
    /// The same on the cluster.
    cluster_catchup: Option<(f64, f64)>,
    /// The journal's mix through `redis-cli --pipe` (ops/s, median).
    mix_pipe: Option<f64>,
}

fn say(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn pct(cpu: f64, wall: f64) -> f64 {
    if wall > 0.0 {
        cpu / wall * 100.0
    } else {
        0.0
    }
}

/// Resolve a program name through PATH (a path with a '/' is taken as is).
fn resolve(p: &Path) -> R<PathBuf> {
    if p.components().count() > 1 {
        return if p.exists() { Ok(p.to_path_buf()) } else { Err(format!("{} does not exist", p.display())) };
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|v| std::env::split_paths(&v).collect::<Vec<_>>())
        .map(|d| d.join(p))
        .find(|c| c.is_file())
        .ok_or_else(|| {
            format!("{} not found in PATH (scripts/bench.sh installs redis-server and redis-tools)", p.display())
        })
}

fn tail(path: &Path, lines: usize) -> String {
    let t = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = t.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

impl Bench {

    fn emulator(&self) -> R<Emulator> {
        Emulator::start(Config {
            shards: self.args.flows,
            compression: self.args.compression,
            pre_encode: true,
            ..Config::default()
        })
        .map_err(|e| format!("start the emulator: {e}"))
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.args.timeout_secs)
    }

    /// Generate a dataset into a fresh emulator (and a RESP file), then pre-encode it.
    fn prepare(&self, spec: &Spec, resp: bool) -> R<(Emulator, Dataset)> {
        let emu = self.emulator()?;
        let t = Instant::now();
        let path = resp.then(|| self.dir.join(format!("{}.resp", spec.name)));
        let ds = data::generate(spec, &emu, path.as_deref())?;
        say(format!(
            "{}: generated {} keys, {:.1} MB payload{} in {:.1} s",
            spec.name,
            ds.keys,
            mb(ds.payload),
            if resp {
                format!(", RESP file {:.1} MB ({} commands)", mb(ds.resp_bytes), ds.resp_cmds)
            } else {
                String::new()
            },
            t.elapsed().as_secs_f64()
        ));
        let t = Instant::now();
        let body = emu.pre_encode();
        say(format!("{}: pre-encoded {:.1} MB of snapshot in {:.1} s", spec.name, mb(body), t.elapsed().as_secs_f64()));
        Ok((emu, ds))
    }

    /// Time `df2redis migrate` from `emu` into the flushed `target`, then check the copy.
    fn migrate(&self, emu: &Emulator, target: &Target, ds: &Dataset, label: &str) -> R<Migrate> {
        self.copy(Source::Master(emu), target, ds, label)
    }

    /// Time one df2redis copy of `ds` into the flushed `target` (`migrate` from the emulator, or
    /// `restore` of a snapshot file), check the copy, and measure what it cost.
    fn copy(&self, source: Source, target: &Target, ds: &Dataset, label: &str) -> R<Migrate> {
        target.flushall()?;
        target.reset_stats()?;
        let out = self.dir.join(format!("{label}-df2redis.out"));
        let err = self.dir.join(format!("{label}-df2redis.err"));
        let mut cmd = sys::command_logged(&self.df2redis, &out, &err).map_err(|e| e.to_string())?;
        let what = match source {
            Source::Master(emu) => {
                cmd.args(["migrate", "--source", &emu.addr().to_string()]);
                "migrate"
            }
            Source::File(path) => {
                cmd.args(["restore", "--from"]).arg(path);
                "restore"
            }
            Source::Masters(emus) => {
                cmd.arg("migrate");
                for e in emus {
                    cmd.args(["--source", &e.addr().to_string()]);
                }
                "migrate"
            }
        };
        cmd.args(["--target", &target.url()]).args(&self.args.df2redis_args);
        let (r0, e0, s0) = (target.cpu_s(), sys::self_cpu_s(), sys::system_busy_s());
        // The clock starts once df2redis was exec'd: forking the bench (which holds the whole
        // dataset) is the harness's cost, not df2redis's.
        let mut p =
            sys::spawn(&format!("df2redis {what}"), cmd).map_err(|e| format!("start {}: {e}", self.df2redis.display()))?;
        let t0 = Instant::now();
        p.track_threads();
        let exit = p.wait(self.timeout());
        let wall = t0.elapsed().as_secs_f64();
        let (r1, e1, s1) = (target.cpu_s(), sys::self_cpu_s(), sys::system_busy_s());
        let exit = exit.map_err(|e| format!("{label}: {e}"))?;
        if !exit.success() {
            return Err(format!(
                "{label}: df2redis {what} failed ({}):\n{}\n{}",
                exit.describe(),
                tail(&out, 20),
                tail(&err, 20)
            ));
        }
        let cmds = target.command_stats()?;
        // The summary's totals are informative (wire MB); the target itself is what is checked.
        let summary = std::fs::read_to_string(&out).unwrap_or_default();
        let (keys, wire_mb) = parse_total(&summary).unwrap_or((ds.keys, f64::NAN));
        let size = target.dbsize()?;
        if size != ds.keys || keys != ds.keys {
            return Err(format!(
                "{label}: WRONG COPY: the target holds {size} keys, df2redis reports {keys}, the dataset has {}",
                ds.keys
            ));
        }
        target.verify(ds).map_err(|e| format!("{label}: WRONG COPY: {e}"))?;
        let emus = match source {
            Source::Master(emu) => vec![emu],
            Source::Masters(emus) => emus.to_vec(),
            Source::File(_) => Vec::new(),
        };
        for emu in emus {
            let v = emu.violations();
            if !v.is_empty() {
                return Err(format!("{label}: the emulator saw protocol violations: {v:?}"));
            }
        }
        let m = Migrate {
            wall,
            wire_mb,
            peak_rss: exit.peak_rss,
            df2redis_cpu: exit.cpu_s,
            redis_cpu: r1 - r0,
            emulator_cpu: e1 - e0,
            other_cpu: ((s1 - s0) - exit.cpu_s - (r1 - r0) - (e1 - e0)).max(0.0),
            cpu_per_100k: exit.cpu_s * 1e5 / ds.keys.max(1) as f64,
            threads: p.thread_cpu_s(),
            cmds,
        };
        say(format!(
            "{label}: {what} {:.2} s, {:.0} keys/s, {:.1} MB/s payload, peak RSS {:.1} MB, CPU df2redis {:.0}% redis {:.0}% emulator {:.0}% other {:.0}% (copy checked)",
            wall,
            ds.keys as f64 / wall,
            mb(ds.payload) / wall,
            mb(m.peak_rss),
            pct(m.df2redis_cpu, wall),
            pct(m.redis_cpu, wall),
            pct(m.emulator_cpu, wall),
            pct(m.other_cpu, wall)
        ));
        say(format!("{label}: df2redis CPU by thread: {} ({:.3} CPU-s per 100k keys)", thread_line(&m), m.cpu_per_100k));
        say(format!("{label}: Redis executed: {}", cmd_line(&m.cmds)));
        Ok(m)
    }

    /// Time `redis-cli --pipe` of each (file, port) at once into the flushed `target`; check the
    /// key count.
    fn pipe(&self, target: &Target, files: &[(PathBuf, u16)], ds: &Dataset, label: &str) -> R<Pipe> {
        target.flushall()?;
        target.reset_stats()?;
        let mut procs = Vec::new();
        let r0 = target.cpu_s();
        // As for df2redis, the clock starts once the (first) redis-cli was exec'd.
        let mut t0 = None;
        for (i, (file, port)) in files.iter().enumerate() {
            let out = self.dir.join(format!("{label}-pipe{i}.out"));
            let mut cmd = Command::new(&self.args.redis_cli);
            cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "--pipe"])
                .stdin(std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?)
                .stdout(std::fs::File::create(&out).map_err(|e| e.to_string())?)
                .stderr(Stdio::null());
            procs.push((sys::spawn("redis-cli --pipe", cmd).map_err(|e| format!("redis-cli: {e}"))?, out));
            t0.get_or_insert_with(Instant::now);
        }
        let t0 = t0.unwrap_or_else(Instant::now);
        let mut cli_cpu = 0.0;
        for (p, out) in procs.iter_mut() {
            let e = p.wait(self.timeout()).map_err(|e| format!("{label}: {e}"))?;
            let text = std::fs::read_to_string(&*out).unwrap_or_default();
            if !e.success() || !text.contains("errors: 0,") {
                return Err(format!("{label}: redis-cli --pipe failed ({}):\n{text}", e.describe()));
            }
            cli_cpu += e.cpu_s;
        }
        let wall = t0.elapsed().as_secs_f64();
        let redis_cpu = target.cpu_s() - r0;
        let cmds = target.command_stats()?;
        let size = target.dbsize()?;
        if size != ds.keys {
            return Err(format!("{label}: redis-cli --pipe left {size} keys, the dataset has {}", ds.keys));
        }
        target.verify(ds).map_err(|e| format!("{label}: the pipe's copy differs: {e}"))?;
        say(format!(
            "{label}: redis-cli --pipe {:.2} s, {:.0} keys/s, CPU redis {:.0}% redis-cli {:.0}%",
            wall,
            ds.keys as f64 / wall,
            pct(redis_cpu, wall),
            pct(cli_cpu, wall)
        ));
        Ok(Pipe { wall, redis_cpu, cli_cpu, cmds })
    }

    /// The dataset as an RDB file, `<name>.rdb` in the bench folder, SAVEd by a redis-server of
    /// its own. Not by the target: its SAVE writes keys in its own hash table's bucket order,
    /// and loading that back into the same process inserts bucket after bucket (the same
    /// seed), which made 1M strings' SETs take a third of their usual time inside Redis. A
    /// real snapshot comes from another server, in an order the target's table does not share.
    fn save_rdb(&self, ds: &Dataset, name: &str) -> R<PathBuf> {
        let saver = RedisServer::start(&self.args.redis_server, &self.dir, &format!("{name}-saver"), false)?;
        let resp = ds.resp.clone().expect("RESP file");
        self.pipe(&Target::Standalone(&saver), &[(resp, saver.port)], ds, &format!("{name}-saver"))?;
        let mut c = saver.conn()?;
        let () = redis::cmd("SAVE").query(&mut c).map_err(|e| format!("SAVE: {e}"))?;
        let get = |c: &mut redis::Connection, k: &str| -> R<String> {
            let v: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(k).query(c).map_err(|e| format!("CONFIG GET {k}: {e}"))?;
            v.get(1).cloned().ok_or_else(|| format!("CONFIG GET {k}: no value"))
        };
        let saved = PathBuf::from(get(&mut c, "dir")?).join(get(&mut c, "dbfilename")?);
        let path = self.dir.join(format!("{name}.rdb"));
        std::fs::rename(&saved, &path)
            .or_else(|_| std::fs::copy(&saved, &path).map(|_| ()))
            .map_err(|e| format!("{} -> {}: {e}", saved.display(), path.display()))?;
        say(format!("{name}: a separate redis-server SAVEd the dataset as {} ({:.1} MB) for df2redis restore", path.display(), mb(std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0))));
        Ok(path)
    }

    fn spec(&self, name: &str, kind: Kind, keys: usize, width: usize) -> Spec {
        Spec { name: name.to_string(), kind, keys, width, list_batch: self.args.list_batch }
    }

    fn snapshot_dataset(&mut self, redis: &RedisServer, spec: Spec, part: Part) -> R<()> {
        let small = spec.kind == Kind::Small;
        let standalone = self.plan.has(part);
        // Strings and the 20-element collections have a RESTORE ceiling and a cluster run.
        let ceiling = matches!(part, Part::Small | Part::Hashes | Part::Zsets | Part::Lists20 | Part::Sets);
        let cluster = ceiling && self.plan.has(Part::Cluster);
        let rss_base = small && self.plan.has(Part::Rss);
        if !standalone && !cluster && !rss_base {
            return Ok(());
        }
        say(format!("== {}", spec.name));
        let (emu, ds) = self.prepare(&spec, standalone || cluster)?;
        let target = Target::Standalone(redis);
        let mut restore_file = None;
        if (standalone && !self.args.no_warmup) || (ceiling && (standalone || cluster)) {
            // Fill Redis once (untimed) so that the migrate and the pipes all find its memory
            // already faulted in; each timed run starts from FLUSHALL. The piped copy is also
            // what the RESTORE ceiling is made of: its DUMP payloads, piped back as RESTOREs.
            let resp = ds.resp.clone().expect("RESP file");
            let t = Instant::now();
            self.pipe(&target, &[(resp, redis.port)], &ds, &format!("{}-warmup", spec.name))?;
            say(format!("{}: warm-up fill done in {:.1} s (untimed)", spec.name, t.elapsed().as_secs_f64()));
            if ceiling {
                let path = self.dir.join(format!("{}.restore.resp", spec.name));
                let keys = data::keys_in_order(ds.resp.as_deref().expect("RESP file"))?;
                let n = data::dump_as_restores(&mut redis.conn()?, &keys, &path)?;
                say(format!("{}: DUMPed the piped copy into {n} RESTORE commands (the RESTORE ceiling)", spec.name));
                restore_file = Some(path);
            }
        }
        // `df2redis restore` of the same data as a snapshot file: the piped copy SAVEd by Redis.
        let rdb_file = match (standalone, part) {
            (true, Part::Small | Part::Hashes) if restore_file.is_some() => Some(self.save_rdb(&ds, &spec.name)?),
            _ => None,
        };
        if standalone || rss_base {
            let (mut ms, mut ps, mut rs, mut fs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..if standalone { self.plan.repeat } else { 1 } {
                ms.push(self.migrate(&emu, &target, &ds, &spec.name)?);
                if standalone {
                    let resp = ds.resp.clone().expect("RESP file");
                    ps.push(self.pipe(&target, &[(resp, redis.port)], &ds, &spec.name)?);
                    if let Some(f) = &restore_file {
                        rs.push(self.pipe(&target, &[(f.clone(), redis.port)], &ds, &format!("{}-restore", spec.name))?);
                    }
                    if let Some(f) = &rdb_file {
                        fs.push(self.copy(Source::File(f), &target, &ds, &format!("{}-restore-file", spec.name))?);
                    }
                }
            }
            let m = median_migrate(ms);
            let pipe = (!ps.is_empty()).then(|| median_by_wall(ps, |p| p.wall));
            let restore_pipe = (!rs.is_empty()).then(|| median_by_wall(rs, |p| p.wall));
            let restore_file = (!fs.is_empty()).then(|| median_migrate(fs));
            self.rows.push(Row { name: spec.name.clone(), keys: ds.keys, payload: ds.payload, migrate: m, pipe, restore_pipe, restore_file });
        }
        redis.flushall()?;
        if cluster {
            let name = format!("cluster_{}", spec.name);
            say(format!("== {name}: starting 3 masters"));
            let c = Cluster::start(&self.args.redis_server, &self.args.redis_cli, &self.dir, 3)?;
            let resp = ds.resp.clone().expect("RESP file");
            let parts = servers::split_paths(&resp, c.nodes.len());
            let counts = data::split_by_slot(&resp, &c.owner, &parts)?;
            say(format!("{name}: RESP split per master by slot: {counts:?} commands"));
            let restore = restore_file.as_ref().expect("a RESTORE file for every cluster dataset");
            let restore_parts = servers::split_paths(restore, c.nodes.len());
            data::split_by_slot(restore, &c.owner, &restore_parts)?;
            let ct = Target::Cluster(&c);
            let ports = || c.nodes.iter().map(|n| n.port);
            let files: Vec<(PathBuf, u16)> = parts.iter().cloned().zip(ports()).collect();
            let restore_files: Vec<(PathBuf, u16)> = restore_parts.iter().cloned().zip(ports()).collect();
            if !self.args.no_warmup {
                self.pipe(&ct, &files, &ds, &format!("{name}-warmup"))?;
            }
            let (mut ms, mut ps, mut rs) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..self.plan.repeat {
                ms.push(self.migrate(&emu, &ct, &ds, &name)?);
                ps.push(self.pipe(&ct, &files, &ds, &name)?);
                rs.push(self.pipe(&ct, &restore_files, &ds, &format!("{name}-restore"))?);
            }
            let (m, p, r) = (median_migrate(ms), median_by_wall(ps, |p| p.wall), median_by_wall(rs, |p| p.wall));
            self.rows.push(Row { name, keys: ds.keys, payload: ds.payload, migrate: m, pipe: Some(p), restore_pipe: Some(r), restore_file: None });
            if small {
                // The cost of the cluster's checkpoints (markers, and a script per node for the
                // commands unsafe to apply twice): the journal backlog with and without them.
                self.cluster_catchup = Some(self.catchup_pairs(&self.journal_cfg(), &ct, "cluster catch-up")?);
            }
            c.flushall()?;
            c.stop();
            for p in parts.into_iter().chain(restore_parts) {
                let _ = std::fs::remove_file(p);
            }
        }
        self.max_stall_ms = self.max_stall_ms.max(emu.max_stall_ms());
        for p in ds.resp.iter().chain(&restore_file) {
            let _ = std::fs::remove_file(p);
        }
        emu.stop();
        Ok(())
    }

    /// Two masters in one run into a 3-master cluster, against one master holding the same
    /// keys: the keys of `small` (half its size) dealt alternately to two emulators.
    fn multi_source(&mut self) -> R<()> {
        if !self.plan.has(Part::Multi) {
            return Ok(());
        }
        say("== multi_source");
        let spec = self.spec("multi", Kind::Small, (self.plan.small / 2).max(1000), 32);
        let (one, ds) = self.prepare(&spec, false)?;
        let (a, b) = (self.emulator()?, self.emulator()?);
        for (i, (key, entry)) in one.data().remove(&0).unwrap_or_default().into_iter().enumerate() {
            if i % 2 == 0 { &a } else { &b }.load(0, &key, entry);
        }
        let t = Instant::now();
        let body = a.pre_encode() + b.pre_encode();
        say(format!("multi: dealt {} keys to 2 masters, pre-encoded {:.1} MB in {:.1} s", ds.keys, mb(body), t.elapsed().as_secs_f64()));
        let c = Cluster::start(&self.args.redis_server, &self.args.redis_cli, &self.dir, 3)?;
        let ct = Target::Cluster(&c);
        let (mut singles, mut multis) = (Vec::new(), Vec::new());
        for _ in 0..self.plan.repeat {
            singles.push(self.migrate(&one, &ct, &ds, "multi_single")?);
            multis.push(self.copy(Source::Masters(&[&a, &b]), &ct, &ds, "multi_two_masters")?);
        }
        let (s, m) = (median_migrate(singles), median_migrate(multis));
        for (name, r) in [("multi_single", s), ("multi_two_masters", m)] {
            self.rows.push(Row { name: name.into(), keys: ds.keys, payload: ds.payload, migrate: r, pipe: None, restore_pipe: None, restore_file: None });
        }
        for e in [&one, &a, &b] {
            self.max_stall_ms = self.max_stall_ms.max(e.max_stall_ms());
        }
        c.flushall()?;
        c.stop();
        for e in [one, a, b] {
            e.stop();
        }
        Ok(())
    }

    fn rss_dataset(&mut self, redis: &RedisServer) -> R<()> {
        if !self.plan.has(Part::Rss) {
            return Ok(());
        }
        let name = format!("small_{}x", self.args.rss_factor);
        say(format!("== {name}"));
        let spec = self.spec(&name, Kind::Small, self.plan.small * self.args.rss_factor, 32);
        let (emu, ds) = self.prepare(&spec, false)?;
        let m = self.migrate(&emu, &Target::Standalone(redis), &ds, &name)?;
        self.rows.push(Row { name, keys: ds.keys, payload: ds.payload, migrate: m, pipe: None, restore_pipe: None, restore_file: None });
        self.max_stall_ms = self.max_stall_ms.max(emu.max_stall_ms());
        redis.flushall()?;
        emu.stop();
        Ok(())
    }

    fn benchmark(&mut self, redis: &RedisServer) -> R<f64> {
        redis.flushall()?;
        let out = self.dir.join("redis-benchmark.out");
        let mut cmd = sys::command_logged(&self.args.redis_benchmark, &out, &self.dir.join("redis-benchmark.err"))
            .map_err(|e| e.to_string())?;
        cmd.args(["-h", "127.0.0.1", "-p", &redis.port.to_string(), "-P", "100", "-t", "set", "-q"])
            .args(["-n", &self.plan.benchmark_requests.to_string()]);
        let mut p = sys::spawn("redis-benchmark", cmd).map_err(|e| format!("redis-benchmark: {e}"))?;
        let e = p.wait(self.timeout())?;
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let rps = text
            .split(['\r', '\n'])
            .filter_map(|l| l.trim().strip_prefix("SET: "))
            .filter_map(|l| l.split_whitespace().next().and_then(|n| n.parse::<f64>().ok()))
            .next_back();
        redis.flushall()?;
        match (e.success(), rps) {
            (true, Some(r)) => {
                say(format!("redis-benchmark -P 100 -t set -n {}: {r:.0} SET/s", self.plan.benchmark_requests));
                Ok(r)
            }
            _ => Err(format!("redis-benchmark failed ({}):\n{text}", e.describe())),
        }
    }

    fn journal(&mut self, redis: &RedisServer) -> R<()> {
        if !self.plan.has(Part::Journal) {
            return Ok(());
        }
        say("== journal");
        self.benchmark_rps = Some(self.benchmark(redis)?);
        let cfg = self.journal_cfg();
        let r = journal::run(&cfg, redis, self.epoch, &|m| say(m))?;
        say(format!("journal: the target equals the emulator's {} keys after the run", r.verified_keys));
        self.max_stall_ms = self.max_stall_ms.max(r.max_stall_ms);
        self.journal = Some(r);
        self.catchup = Some(self.catchup_pairs(&cfg, &Target::Standalone(redis), "catch-up")?);
        let mut pipes = Vec::new();
        for _ in 0..self.plan.repeat {
            let r = journal::pipe_mix(&cfg, redis, &self.args.redis_cli, self.plan.catchup_ops)?;
            say(format!("journal mix of {} ops through redis-cli --pipe: {r:.0} ops/s", self.plan.catchup_ops));
            pipes.push(r);
        }
        self.mix_pipe = Some(median(&mut pipes));
        redis.flushall()?;
        Ok(())
    }

    /// The cost of the checkpoints: the same backlog applied with and without them into
    /// `target`, alternated --repeat times, so drift of the machine hits both alike. Returns
    /// the medians (on, off).
    fn catchup_pairs(&self, cfg: &journal::JournalCfg, target: &Target, label: &str) -> R<(f64, f64)> {
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for _ in 0..self.plan.repeat {
            for (markers, v) in [(false, &mut off), (true, &mut on)] {
                let r = journal::catchup(cfg, target, markers, self.plan.catchup_ops)?;
                say(format!(
                    "{label} of {} ops, checkpoints {}: {r:.0} records/s",
                    self.plan.catchup_ops,
                    if markers { "on" } else { "off" }
                ));
                v.push(r);
            }
        }
        Ok((median(&mut on), median(&mut off)))
    }

    fn journal_cfg(&self) -> journal::JournalCfg {
        journal::JournalCfg {
            flows: self.args.flows,
            compression: self.args.compression,
            step: Duration::from_secs_f64(self.plan.journal_secs),
            rates: self.plan.journal_rates.clone(),
            lag_limit_ms: self.args.lag_limit_ms,
            df2redis: self.df2redis.clone(),
            df2redis_args: self.args.df2redis_args.clone(),
            dir: self.dir.clone(),
        }
    }

    fn run(&mut self) -> R<()> {
        let dir = self.dir.clone();
        let b0 = sys::system_busy_s();
        std::thread::sleep(Duration::from_secs(1));
        let busy = sys::system_busy_s() - b0;
        if busy > 0.15 {
            say(format!(
                "WARNING: the machine is busy before the bench starts ({:.0}% of a CPU in use by other processes); \
                 the figures will be disturbed (see the oth% columns)",
                busy * 100.0
            ));
        }
        let redis = RedisServer::start(&self.args.redis_server, &dir, "redis", false)?;
        say(format!("redis-server on {} (pid {}), work dir {}", redis.addr(), redis.pid(), dir.display()));
        let w = self.args.collection_width;
        let specs = [
            (self.spec("small", Kind::Small, self.plan.small, 32), Part::Small),
            (self.spec("hashes", Kind::Hashes, self.plan.hashes, self.args.hash_fields), Part::Hashes),
            (self.spec("zsets", Kind::Zsets, self.plan.zsets, w), Part::Zsets),
            (self.spec("lists20", Kind::Lists, self.plan.lists20, w), Part::Lists20),
            (self.spec("sets", Kind::Sets, self.plan.sets, w), Part::Sets),
            (self.spec("lists", Kind::Lists, self.plan.lists, self.plan.list_elems), Part::Lists),
            (self.spec("big", Kind::Big, self.plan.big, self.args.big_bytes), Part::Big),
        ];
        let r = (|| {
            for (s, part) in specs {
                self.snapshot_dataset(&redis, s, part)?;
            }
            self.rss_dataset(&redis)?;
            self.multi_source()?;
            self.journal(&redis)
        })();
        redis.stop();
        r
    }

    /// The table, the FIGURE lines and the TARGET lines; returns how many targets were missed.
    fn report(&mut self) -> usize {
        let mut t = String::new();
        let cpus = sys::cpus();
        let _ = writeln!(
            t,
            "\n==== df2redis benchmark: {} flows, {:?} snapshots, {} CPUs ({}) ====",
            self.args.flows,
            self.args.compression,
            cpus,
            if servers::redis_has_own_cpu() {
                "standalone Redis on a CPU of its own; source, df2redis and redis-cli on the rest; cluster masters on all"
            } else {
                "source, df2redis and Redis share them"
            }
        );
        let _ = writeln!(
            t,
            "{:<10} {:>9} {:>8} {:>8} | {:>7} {:>10} {:>7} {:>6} | {:>4} {:>4} {:>4} {:>4} | {:>7} {:>10} {:>4} {:>4} | {:>6}",
            "dataset", "keys", "pay MB", "wire MB", "mig s", "keys/s", "MB/s", "RSS MB", "df%", "red%", "emu%", "oth%", "pipe s",
            "keys/s", "red%", "cli%", "ratio"
        );
        for r in &self.rows {
            let m = &r.migrate;
            let (ps, pk, pr, pc, ratio) = match &r.pipe {
                Some(p) => (
                    format!("{:.2}", p.wall),
                    format!("{:.0}", r.keys as f64 / p.wall),
                    format!("{:.0}", pct(p.redis_cpu, p.wall)),
                    format!("{:.0}", pct(p.cli_cpu, p.wall)),
                    format!("{:.3}", p.wall / m.wall),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
            };
            let _ = writeln!(
                t,
                "{:<10} {:>9} {:>8.1} {:>8.1} | {:>7.2} {:>10.0} {:>7.1} {:>6.1} | {:>4.0} {:>4.0} {:>4.0} {:>4.0} | {:>7} {:>10} {:>4} {:>4} | {:>6}",
                r.name,
                r.keys,
                mb(r.payload),
                m.wire_mb,
                m.wall,
                r.keys as f64 / m.wall,
                mb(r.payload) / m.wall,
                mb(m.peak_rss),
                pct(m.df2redis_cpu, m.wall),
                pct(m.redis_cpu, m.wall),
                pct(m.emulator_cpu, m.wall),
                pct(m.other_cpu, m.wall),
                ps,
                pk,
                pr,
                pc,
                ratio
            );
        }
        let _ = writeln!(
            t,
            "(mig = df2redis migrate wall time; MB/s of payload; RSS = df2redis peak RSS; CPU % of one core over the \
             wall time: df = df2redis, red = redis-server(s), emu = emulator in the bench process, oth = \
             the rest of the machine (interference: should be ~0), cli = redis-cli; ratio = fullsync_keys_per_s / \
             pipe_keys_per_s)"
        );
        let _ = writeln!(
            t,
            "\ndf2redis CPU by thread during the migrate (% of one core over its wall time; sampled every 60 ms):"
        );
        for r in &self.rows {
            let _ = writeln!(t, "{:<10} {}", r.name, thread_line(&r.migrate));
        }
        let _ = writeln!(
            t,
            "\nwhat Redis executed (INFO commandstats: calls, and seconds inside the commands; the rest of \
             Redis' CPU is reading, parsing and replying):"
        );
        for r in &self.rows {
            let _ = writeln!(t, "{:<10} migrate: {}", r.name, cmd_line(&r.migrate.cmds));
            if let Some(p) = &r.pipe {
                let _ = writeln!(t, "{:<10} pipe:    {}", "", cmd_line(&p.cmds));
            }
            if let Some(p) = &r.restore_pipe {
                let _ = writeln!(t, "{:<10} restore: {}", "", cmd_line(&p.cmds));
            }
        }
        let _ = writeln!(
            t,
            "\nthe RESTORE ceiling (the piped copy's own DUMP payloads piped back as RESTOREs into the flushed target):"
        );
        let _ = writeln!(t, "{:<16} {:>10} {:>10} {:>10} {:>5} {:>5} | {:>8} {:>8}", "dataset", "df2redis", "pipe", "restore", "red%", "cli%", "vs pipe", "vs rest.");
        for r in &self.rows {
            let (Some(p), Some(rp)) = (&r.pipe, &r.restore_pipe) else { continue };
            let k = r.keys as f64;
            let _ = writeln!(
                t,
                "{:<16} {:>10.0} {:>10.0} {:>10.0} {:>5.0} {:>5.0} | {:>8.3} {:>8.3}",
                r.name,
                k / r.migrate.wall,
                k / p.wall,
                k / rp.wall,
                pct(rp.redis_cpu, rp.wall),
                pct(rp.cli_cpu, rp.wall),
                p.wall / r.migrate.wall,
                rp.wall / r.migrate.wall
            );
        }
        let _ = writeln!(t, "(keys/s; vs = df2redis keys/s divided by the pipe's, and by the RESTORE ceiling's)");
        if let Some(j) = &self.journal {
            let _ = writeln!(
                t,
                "\njournal steps ({} flows, mix SET/HSET/INCR/LPUSH/ZADD/DEL/cross-shard MSET):",
                self.args.flows
            );
            let _ = writeln!(
                t,
                "{:>8} {:>9} {:>7} {:>5} {:>8} {:>8} {:>8} {:>5} {:>5} {:>5} {:>5} {:>5} {:>10}  verdict",
                "rate", "achieved", "probes", "lost", "p50 ms", "p99 ms", "max ms", "df%", "red%", "src%", "oth%", "busy%", "ops/df-core"
            );
            for s in &j.steps {
                let _ = writeln!(
                    t,
                    "{:>8} {:>9.0} {:>7} {:>5} {:>8.1} {:>8.1} {:>8.1} {:>5.0} {:>5.0} {:>5.0} {:>5.0} {:>5.0} {:>10.0}  {}",
                    s.rate,
                    s.achieved,
                    s.probes,
                    s.lost,
                    s.p50_ms,
                    s.p99_ms,
                    s.max_ms,
                    s.df2redis_cpu_pct,
                    s.redis_cpu_pct,
                    s.source_cpu_pct,
                    s.other_cpu_pct,
                    busy_pct(s),
                    s.ops_per_df2redis_core(),
                    if s.pass { "holds".to_string() } else { format!("missed: {}", s.why) }
                );
            }
            let _ = writeln!(t, "(src = the bench process: paced release of the pre-encoded journal, emulator flow writers, live probe writes and probe poller; busy = all four, of {} % for this machine's {} cores; ops/df-core = achieved ops/s per core df2redis used)", 100 * cpus, cpus);
            let first_missed = j.steps.iter().filter(|s| !s.pass).min_by_key(|s| s.rate);
            if let Some(s) = first_missed {
                let _ = writeln!(t, "{}", journal_limit(s));
            }
            if first_missed.is_some_and(|s| s.achieved < s.rate as f64 * 0.95) {
                let _ = writeln!(
                    t,
                    "note: the ladder stopped because the source could not stream faster on this machine; \
                     df2redis's own limit is at least the last rate that held"
                );
            }
        }
        print!("{t}");

        // Figures.
        let mut figs: Vec<(String, String)> = Vec::new();
        let mut figure = |n: &str, v: String| figs.push((n.to_string(), v));
        let rows: BTreeMap<String, (u64, u64, Migrate, Option<Pipe>)> = self
            .rows
            .iter()
            .map(|r| (r.name.clone(), (r.keys, r.payload, r.migrate.clone(), r.pipe.clone())))
            .collect();
        // df2redis restore of the target's own RDB file, against the pipe of the same data.
        for r in &self.rows {
            let (Some(p), Some(f)) = (&r.pipe, &r.restore_file) else { continue };
            figure(&format!("{}.restore_keys_per_s", r.name), format!("{:.0}", r.keys as f64 / f.wall));
            figure(&format!("{}.restore_vs_pipe", r.name), format!("{:.3}", p.wall / f.wall));
            figure(&format!("{}.restore_peak_rss_mb", r.name), format!("{:.1}", mb(f.peak_rss)));
        }
        for r in &self.rows {
            figure(&format!("{}.df2redis_cpu_s_per_100k_keys", r.name), format!("{:.3}", r.migrate.cpu_per_100k));
        }
        // Against the pipe and the RESTORE ceiling: <ds>_vs_pipe, <ds>_vs_restore_pipe.
        for r in &self.rows {
            let (Some(p), Some(rp)) = (&r.pipe, &r.restore_pipe) else { continue };
            let k = r.keys as f64;
            figure(&format!("{}.restore_pipe_keys_per_s", r.name), format!("{:.0}", k / rp.wall));
            figure(&format!("{}_vs_pipe", r.name), format!("{:.3}", p.wall / r.migrate.wall));
            figure(&format!("{}_vs_restore_pipe", r.name), format!("{:.3}", rp.wall / r.migrate.wall));
        }
        let small_4x = format!("small_{}x", self.args.rss_factor);
        for name in ["small", "hashes", "zsets", "lists20", "sets", "lists", "big", small_4x.as_str()] {
            let Some((keys, payload, m, p)) = rows.get(name) else { continue };
            let kps = *keys as f64 / m.wall;
            figure(&format!("{name}.fullsync_keys_per_s"), format!("{kps:.0}"));
            figure(&format!("{name}.fullsync_mb_per_s"), format!("{:.1}", mb(*payload) / m.wall));
            if let Some(p) = p {
                let pk = *keys as f64 / p.wall;
                figure(&format!("{name}.pipe_keys_per_s"), format!("{pk:.0}"));
                figure(&format!("{name}.fullsync_vs_pipe"), format!("{:.3}", kps / pk));
            }
            figure(&format!("{name}.peak_rss_mb"), format!("{:.1}", mb(m.peak_rss)));
            figure(&format!("{name}.df2redis_cpu_pct"), format!("{:.0}", pct(m.df2redis_cpu, m.wall)));
            figure(&format!("{name}.redis_cpu_pct"), format!("{:.0}", pct(m.redis_cpu, m.wall)));
            figure(&format!("{name}.emulator_cpu_pct"), format!("{:.0}", pct(m.emulator_cpu, m.wall)));
        }
        if let (Some(a), Some(b)) = (rows.get("small"), rows.get(&small_4x)) {
            figure("rss_growth", format!("{:.3}", b.2.peak_rss as f64 / a.2.peak_rss.max(1) as f64));
        }
        if let Some(rps) = self.benchmark_rps {
            figure("benchmark_set_ops_per_s", format!("{rps:.0}"));
        }
        if let Some(j) = &self.journal {
            let (max, p99) = match j.best {
                Some(i) => (j.steps[i].rate, j.steps[i].p99_ms),
                None => (0, j.steps.first().map_or(0.0, |s| s.p99_ms)),
            };
            figure("journal_max_ops_per_s", max.to_string());
            figure("lag_p99_ms", format!("{p99:.1}"));
            if let Some(s) = j.best.map(|i| &j.steps[i]) {
                // df2redis's own cost, which the other processes' load hardly moves.
                figure("journal_ops_per_df2redis_core_s", format!("{:.0}", s.ops_per_df2redis_core()));
                figure("journal.df2redis_cpu_pct", format!("{:.0}", s.df2redis_cpu_pct));
                figure("journal.redis_cpu_pct", format!("{:.0}", s.redis_cpu_pct));
                figure("journal.source_cpu_pct", format!("{:.0}", s.source_cpu_pct));
            }
            if let Some(rps) = self.benchmark_rps {
                // Information only: a one-key SET benchmark runs about twice as fast as the
                // journal's mix itself; journal_vs_mix_pipe is the target.
                figure("journal_vs_benchmark", format!("{:.3}", max as f64 / rps));
            }
            figure("journal.peak_rss_mb", format!("{:.1}", mb(j.peak_rss)));
        }
        if let Some((on, off)) = self.catchup {
            figure("journal_catchup_ops_per_s", format!("{on:.0}"));
            figure("journal_catchup_nocheckpoints_ops_per_s", format!("{off:.0}"));
            figure("checkpoint_cost", format!("{:.3}", 1.0 - on / off));
        }
        if let Some(p) = self.mix_pipe {
            figure("journal_mix_pipe_ops_per_s", format!("{p:.0}"));
            if let Some(j) = &self.journal {
                let max = j.best.map_or(0, |i| j.steps[i].rate);
                figure("journal_vs_mix_pipe", format!("{:.3}", max as f64 / p));
            }
        }
        if self.plan.has(Part::Small)
            || self.plan.has(Part::Hashes)
            || self.plan.has(Part::Lists)
            || self.plan.has(Part::Big)
            || self.plan.has(Part::Rss)
            || self.plan.has(Part::Journal)
            || self.plan.has(Part::Cluster)
        {
            figure("max_source_stall_ms", self.max_stall_ms.to_string());
        }
        if let Some((keys, _, m, Some(p))) = rows.get("cluster_small") {
            let (f, pk) = (*keys as f64 / m.wall, *keys as f64 / p.wall);
            figure("cluster_fullsync_keys_per_s", format!("{f:.0}"));
            figure("cluster_pipe_keys_per_s", format!("{pk:.0}"));
            figure("cluster_fullsync_vs_pipe", format!("{:.3}", f / pk));
        }
        if let (Some(s), Some(m)) = (rows.get("multi_single"), rows.get("multi_two_masters")) {
            // Keys per second from two masters in one run over one master with the same keys.
            figure("multi_source_vs_single", format!("{:.3}", s.2.wall / m.2.wall));
        }
        if let Some((on, off)) = self.cluster_catchup {
            figure("cluster_journal_catchup_ops_per_s", format!("{on:.0}"));
            figure("cluster_journal_catchup_nocheckpoints_ops_per_s", format!("{off:.0}"));
            figure("cluster_checkpoint_cost", format!("{:.3}", 1.0 - on / off));
        }
        self.figures = figs;
        println!();
        for (n, v) in &self.figures {
            println!("FIGURE {n}={v}");
        }

        // Targets.
        let get = |n: &str| self.figures.iter().find(|(k, _)| k == n).and_then(|(_, v)| v.parse::<f64>().ok());
        let mut targets: Vec<(String, &str, f64)> = Vec::new();
        // Full sync against the same data piped as commands, and against the RESTORE ceiling
        // (standalone and cluster): strings keep SET, collections go as RESTOREs.
        for (n, vs_pipe) in [("small", 0.9), ("hashes", 1.8), ("zsets", 5.0), ("lists20", 1.3), ("sets", 1.0)] {
            for prefix in ["", "cluster_"] {
                targets.push((format!("{prefix}{n}_vs_pipe"), ">=", vs_pipe));
                targets.push((format!("{prefix}{n}_vs_restore_pipe"), ">=", 0.8));
            }
        }
        for n in ["small", "hashes", "zsets", "lists20", "sets", "lists", "big", small_4x.as_str(), "journal"] {
            targets.push((format!("{n}.peak_rss_mb"), "<=", 256.0));
        }
        targets.extend([
            ("rss_growth".to_string(), "<=", 1.2),
            ("multi_source_vs_single".to_string(), ">=", 0.9),
            ("journal_vs_mix_pipe".to_string(), ">=", 0.8),
            ("checkpoint_cost".to_string(), "<=", 0.10),
            ("cluster_checkpoint_cost".to_string(), "<=", 0.10),
            ("lag_p99_ms".to_string(), "<", self.args.lag_limit_ms),
            ("max_source_stall_ms".to_string(), "<", 10_000.0),
        ]);
        println!("\ntargets:");
        let mut missed = 0;
        for (name, op, limit) in &targets {
            let verdict = match get(name) {
                None => "n/a".to_string(),
                Some(v) => {
                    let ok = match *op {
                        ">=" => v >= *limit,
                        "<=" => v <= *limit,
                        _ => v < *limit,
                    };
                    if !ok {
                        missed += 1;
                    }
                    format!("{} ({v})", if ok { "holds" } else { "MISSED" })
                }
            };
            println!("TARGET {name} {op} {limit} {verdict}");
        }
        if self.args.smoke {
            println!("(smoke sizes: the targets are for the full sizes; a miss here is not a failure)");
        }
        missed
    }
}

/// The median of `v` (the upper one for an even count; 0 when empty).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The run with the median wall time (the upper median for an even count). Timed pairs are
/// repeated because this machine's run-to-run spread (±15% for `redis-cli --pipe` alone) is
/// larger than the differences the ratios are meant to show.
fn median_by_wall<T>(mut runs: Vec<T>, wall: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| wall(a).total_cmp(&wall(b)));
    let mid = runs.len() / 2;
    runs.swap_remove(mid)
}

/// `--redis-cpu`: `auto`, `shared` or a CPU number, against the CPUs this process may use.
fn cpu_layout(arg: &str) -> R<Option<servers::CpuLayout>> {
    let all = df2redis::affinity::available_cpus();
    let redis = match arg {
        "shared" => return Ok(None),
        "auto" if all.len() < 2 => return Ok(None),
        "auto" => *all.last().expect("two CPUs or more"),
        n => {
            let c: usize = n.parse().map_err(|_| format!("{n:?} is not auto, shared or a CPU number"))?;
            if !all.contains(&c) || all.len() < 2 {
                return Err(format!("CPU {c} is not one of the {} CPUs this process may use ({all:?})", all.len()));
            }
            c
        }
    };
    Ok(Some(servers::CpuLayout { redis, all }))
}

/// The CPU the step's processes and the rest of the machine used, % of one core.
fn busy_pct(s: &journal::Step) -> f64 {
    s.df2redis_cpu_pct + s.redis_cpu_pct + s.source_cpu_pct + s.other_cpu_pct
}

/// Why the journal ladder stopped at step `s` (one that missed), as far as the CPU shows it:
/// Redis's one core, or the whole machine, or neither (then it is df2redis's latency).
fn journal_limit(s: &journal::Step) -> String {
    let machine = 100.0 * sys::cpus() as f64;
    let who = format!(
        "df2redis {:.0}%, Redis {:.0}%, source {:.0}%, other {:.0}% of {machine:.0}%",
        s.df2redis_cpu_pct, s.redis_cpu_pct, s.source_cpu_pct, s.other_cpu_pct
    );
    if s.redis_cpu_pct >= 90.0 {
        format!("limit at {} ops/s: Redis's one thread was busy ({who})", s.rate)
    } else if busy_pct(s) >= 0.9 * machine {
        format!("limit at {} ops/s: the machine's {} cores were busy, shared by the three processes ({who})", s.rate, sys::cpus())
    } else {
        format!("limit at {} ops/s: neither Redis nor the machine was saturated ({who}): df2redis's latency", s.rate)
    }
}

/// The median migrate by wall time, with the highest peak RSS of all its runs and the median
/// CPU per key.
fn median_migrate(runs: Vec<Migrate>) -> Migrate {
    let peak = runs.iter().map(|m| m.peak_rss).max().unwrap_or(0);
    let mut cpu: Vec<f64> = runs.iter().map(|m| m.cpu_per_100k).collect();
    let mut m = median_by_wall(runs, |m| m.wall);
    m.peak_rss = peak;
    m.cpu_per_100k = median(&mut cpu);
    m
}

/// `flow-* 35% writer-* 30% ...` for one migrate.
fn thread_line(m: &Migrate) -> String {
    let mut v: Vec<(&String, &f64)> = m.threads.iter().filter(|(_, c)| **c > 0.0).collect();
    v.sort_by(|a, b| b.1.total_cmp(a.1));
    v.iter().map(|(n, c)| format!("{n} {:.0}%", pct(**c, m.wall))).collect::<Vec<_>>().join("  ")
}

/// `set 2000000 calls 1.21 s, ...` (the four commands that took longest), then the read
/// events Redis processed and the bytes per read.
fn cmd_line(c: &CmdStats) -> String {
    let mut c = c.clone();
    let reads = c.remove("(reads)");
    let mut v: Vec<(&String, &(u64, u64))> = c.iter().collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.1 .1));
    let total: u64 = c.values().map(|x| x.0).sum();
    let mut s: Vec<String> =
        v.iter().take(4).map(|(n, (calls, us))| format!("{n} {calls} calls {:.2} s", *us as f64 / 1e6)).collect();
    if v.len() > 4 {
        s.push(format!("({} commands in all)", total));
    }
    if let Some((n, bytes)) = reads {
        s.push(format!(
            "| {n} reads, {:.1} KB/read, {:.1} commands/read",
            bytes as f64 / n.max(1) as f64 / 1e3,
            total as f64 / n.max(1) as f64
        ));
    }
    s.join(", ")
}

/// `total: N keys, X MB, ...` of df2redis's summary.
fn parse_total(summary: &str) -> Option<(u64, f64)> {
    let line = summary.lines().find(|l| l.starts_with("total: "))?;
    let mut w = line["total: ".len()..].split([' ', ',']).filter(|s| !s.is_empty());
    let keys = w.next()?.parse().ok()?;
    let _ = w.next()?; // "keys"
    let mb = w.next()?.parse().ok()?;
    Some((keys, mb))
}

/// The work directory, removed on drop unless kept.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let plan = Plan::from(&args);
    let df2redis = args
        .df2redis
        .clone()
        .or_else(|| std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("df2redis"))))
        .unwrap_or_else(|| PathBuf::from("df2redis"));
    let mut args = args;
    for p in [&mut args.redis_server, &mut args.redis_cli, &mut args.redis_benchmark] {
        match resolve(p) {
            Ok(r) => *p = r,
            Err(e) => {
                eprintln!("df2redis-bench: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if !df2redis.is_file() {
        eprintln!(
            "df2redis-bench: {} not found (build it: cargo build --release --features emulator --bins)",
            df2redis.display()
        );
        return ExitCode::from(2);
    }
    sys::cpus(); // counted before --redis-cpu narrows the bench's own CPUs
    match cpu_layout(&args.redis_cpu) {
        Ok(Some(l)) => {
            // Before any thread or child exists, so that all of them inherit the mask.
            let rest: Vec<usize> = l.all.iter().copied().filter(|&c| c != l.redis).collect();
            if let Err(e) = df2redis::affinity::CpuMask::of(&rest).apply() {
                eprintln!("df2redis-bench: --redis-cpu: cannot restrict the bench to CPUs {rest:?}: {e}");
                return ExitCode::from(2);
            }
            say(format!(
                "CPU layout: redis-server on CPU {} alone; the bench (source), df2redis and redis-cli on CPUs {rest:?} (--redis-cpu shared to mix them)",
                l.redis
            ));
            servers::set_cpu_layout(l);
        }
        Ok(None) => say("CPU layout: every process on every CPU (--redis-cpu shared)"),
        Err(e) => {
            eprintln!("df2redis-bench: --redis-cpu: {e}");
            return ExitCode::from(2);
        }
    }
    if args.flows == 0 || plan.journal_rates.is_empty() || args.rss_factor == 0 {
        eprintln!("df2redis-bench: --flows, --rss-factor and --journal-rates must be positive / not empty");
        return ExitCode::from(2);
    }
    let dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("df2redis-bench-{}", std::process::id())));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("df2redis-bench: {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    let _work = WorkDir { path: dir.clone(), keep: args.keep_work_dir || args.work_dir.is_some() };
    let mut b = Bench {
        plan,
        dir,
        df2redis,
        epoch: Instant::now(),
        rows: Vec::new(),
        figures: Vec::new(),
        max_stall_ms: 0,
        journal: None,
        benchmark_rps: None,
        catchup: None,
        cluster_catchup: None,
        mix_pipe: None,
        args,
    };
    let started = Instant::now();
    let result = b.run();
    let missed = b.report();
    say(format!("done in {:.0} s", started.elapsed().as_secs_f64()));
    match result {
        Err(e) => {
            eprintln!("df2redis-bench: FAILED: {e}");
            ExitCode::from(1)
        }
        Ok(()) if missed > 0 && b.args.strict => ExitCode::from(3),
        Ok(()) => ExitCode::SUCCESS,
    }
}
