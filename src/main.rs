//! The `df2redis` command line.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use df2redis::config::{self, Config, Raw};
use df2redis::inspect::{self, Start};
use df2redis::pipeline::{self, Mode, Outcome, Summary};

/// Replicate a live DragonflyDB into Redis or Redis Cluster over Dragonfly's own replication
/// protocol.
///
/// df2redis connects to a Dragonfly master (v1.34 to v1.40) as a replica does: one connection
/// per master shard ("flow"), a full snapshot of every shard, then the live journal. It writes
/// the equivalent Redis commands to the target; source db N goes to target db N (--db-map to
/// change that; a cluster has only db 0). Several masters (--source repeated, or every master
/// of a Dragonfly cluster found from one node) each get their own replication session.
///
/// Examples:
///   df2redis migrate   --source dragonfly:6379 --target redis://redis:6379
///   df2redis replicate --source dragonfly:6379 --target redis://:secret@10.0.0.1:7000,10.0.0.2:7000
///   df2redis replicate --config /etc/df2redis.ini --pin-flows 0-3 --pin-writers 4-7
///   df2redis replicate --source dfly-node-1:6379 --target redis://10.0.0.1:7000 --name dfly-prod
///                      (a Dragonfly cluster: every master found from one node, one session each)
///   df2redis migrate   --source dfly-a:6379 --source dfly-b:6379 --target redis://redis:6379
///   df2redis migrate   --source dragonfly:6379 --target redis://redis:6379 --include 'prefix:user:' \
///                      --dbs 0,2 --db-map 2:1 --max-ops-per-s 20000
///   df2redis inspect flow-0.bin --token <40 hex>
///   df2redis check     --source dragonfly:6379 --target redis://redis:6379 --report check.json
///   df2redis replicate --source dragonfly:6379 --source-tls --source-tls-ca ca.pem \
///                      --target rediss://redis:6380 --target-tls-ca ca.pem
///
/// Data Redis cannot hold is handled by policy, counted by reason in the summary and logged
/// once per key: JSON (JSON.SET when the target has RedisJSON, else skipped), hash fields and
/// set members with TTLs (written without their TTL), Bloom/Cuckoo/count-min/top-k (skipped),
/// STICK and memcache flags (dropped).
///
/// Exit codes: 0 success; 1 runtime failure (the message names the flow, key or node and the
/// cause), at once when the source or the target cannot be reached before any session started;
/// 2 usage or configuration error (the message names the flag or config key), a source that
/// is not a Dragonfly master included.
///
/// Logging: RUST_LOG=debug (or info, warn, error; default info). Every setting can also be
/// given in an INI file (--config); see config.ini.example for the keys and defaults.
#[derive(Parser)]
#[command(name = "df2redis", version, about, long_about, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Copy the master and keep the target current until SIGINT or SIGTERM.
    ///
    /// Handshake, full sync of every flow, barrier, DFLY STARTSTABLE, then the live journal.
    /// On SIGINT/SIGTERM: final ACKs, the main connection is half-closed so the master ends
    /// the session, every flow is read to its end, then exit 0. Progress (keys, rates, ETA) and
    /// per-flow lag (records, ms) are shown live on a terminal, else logged every
    /// --progress-secs; --metrics-addr serves them over HTTP too.
    ///
    /// When the source or the target goes away, the session ends the same clean way and a new
    /// one starts after a backoff, resuming from the checkpoints in the target (PARTIAL) when
    /// the master can, else with a full resync (--on-resync); bounded by --max-retries and
    /// --retry-deadline, after which it exits 1 listing every attempt. A source or target that
    /// cannot be reached before any session started exits 1 at once (--wait-for-source to keep
    /// retrying the source).
    Replicate(ReplicateArgs),
    /// Copy the master once: the snapshot plus every journal record before JOURNAL_OFFSET,
    /// then print a summary and exit 0.
    ///
    /// Writes made on the master after the cut are not copied; use `replicate` for a copy that
    /// stays current. A source or target that cannot be reached at the start exits 1 at once.
    Migrate(RunArgs),
    /// Load snapshot files into the target: a Dragonfly snapshot (`SAVE DF`), or an RDB file
    /// (Dragonfly's `SAVE RDB`, or Redis's and Valkey's own), then print a summary and exit 0.
    ///
    /// --from names a Dragonfly snapshot's <name>-summary.dfs file (or the folder holding it;
    /// every shard file <name>-NNNN.dfs it lists is read, one `file-<i>` thread each, in
    /// parallel), or an .rdb file (RDB versions 9 to 11 as Redis 6.2-7.2 and Valkey 8 write
    /// them: ziplist, listpack, quicklist, intset and stream encodings; and Dragonfly's own
    /// types). Make them on Dragonfly with `SAVE DF <name>` or `SAVE RDB <name>`. Files are streamed: memory does not
    /// depend on their size. Each file must end with EOF and its checksum; a non-zero
    /// checksum (Redis, Valkey) is verified, Dragonfly writes 0.
    ///
    /// The same target, filter, db-map, policy, rate-limit, pinning and metrics flags as
    /// migrate apply (the --source flags do not). Keys whose TTL passed by the time they are
    /// read are not written (counted). Every entry replaces its key, so a restore that failed
    /// can be run again as it is.
    ///
    /// Examples:
    ///   df2redis restore --from /var/lib/dragonfly/dump-summary.dfs --target redis://redis:6379
    ///   df2redis restore --from /backups/dump.rdb --target redis://10.0.0.1:7000 --db-map 1:0
    ///
    /// Exit codes: 0 restored; 1 a file that does not decode (the message names the file, the
    /// byte offset and what was expected), a missing shard file, or a target failure; 2 usage.
    #[command(verbatim_doc_comment)]
    Restore(RestoreArgs),
    /// Compare the target with the source key by key; exit 0 only when they hold the same data.
    ///
    /// Source pass: every source db with keys (INFO KEYSPACE) is walked with SCAN, and each
    /// key is compared with its copy in the target db it maps to (--db-map, as replicate
    /// used it): its type, its TTL (within --ttl-tolerance-ms) and its value. Target pass:
    /// every target db with keys (every master of a Redis Cluster) is walked, and each key is
    /// looked up in the source dbs that map to that db. replicate's checkpoint markers
    /// (df2redis:checkpoint:*) are not data and are left out.
    ///
    /// Findings, by db and category, each with up to --max-listed keys and what differs:
    ///   missing  on the source, not on the target
    ///   extra    on the target, in no source db that maps to its db
    ///   type     different types
    ///   value    same type, different contents (the field, member, index or offset is named)
    ///   ttl      TTLs further apart than the tolerance, or a TTL on one side only
    ///   conflict (several sources) in two sources with different types, values or TTLs
    ///
    /// Values are never loaded whole: strings are compared by GETRANGE windows, lists by
    /// LRANGE windows, streams by XRANGE ... COUNT; hashes, sets and sorted sets are walked on
    /// the source (HSCAN/SSCAN/ZSCAN) and each page is looked up on the target (HMGET,
    /// SMISMEMBER, ZMSCORE: Redis 6.2 or later), after their sizes were found equal. JSON
    /// documents (RedisJSON on the target) are read whole with JSON.GET and compared as trees,
    /// numbers that are not integers within a relative 1e-12 (RedisJSON rounds some doubles);
    /// documents over 64 MiB are compared by type and TTL only. Memory stays at a few MB plus
    /// the JSON documents being compared. Other types (Bloom, Cuckoo, count-min sketch, top-k)
    /// are compared by type and TTL only (counted in the summary).
    ///
    /// A live source keeps changing: keys that vanish or change type while being compared are
    /// counted apart, not as differences; writes not yet replicated do show up. For a verdict,
    /// check after `migrate`, or after writes to the source stopped and replicate caught up.
    ///
    /// Several sources (--source repeated, or a Dragonfly cluster node: every master of its
    /// cluster with its slots, unless --discover off): the target is compared with their union.
    /// Each source's keys are compared with the target; a key another source holds too is
    /// compared once, and first with that source's copy: if they differ it is a conflict (the
    /// target cannot match both), reported naming both sources. A target key is looked up in
    /// the master owning its slot when slots are known, otherwise in each source in turn. The
    /// summary lists the sources (and slots) and names the source of each finding; --sample,
    /// --max-keys-per-s and --db-map apply over all sources. See docs/check.md.
    ///
    /// Examples:
    ///   df2redis check --source dragonfly:6379 --target redis://redis:6379 --report check.json
    ///   df2redis check --source df-a:6379 --source df-b:6379 --target redis://redis:6379
    ///   df2redis check --source dragonfly:6379 --target redis://10.0.0.1:7000 --db-map 0:0,1:0
    ///   df2redis check --config /etc/df2redis.ini --sample 10000 --max-keys-per-s 5000
    ///
    /// The summary goes to standard output; --report FILE also writes it as JSON (consistent,
    /// totals, and per db the counts and listed keys of every category).
    ///
    /// Exit codes: 0 consistent (every key checked matches); 1 differences found, or the check
    /// could not finish (the message names the server, key or command); 2 usage or
    /// configuration error.
    #[command(verbatim_doc_comment)]
    Check(CheckArgs),
    /// Remove one run's checkpoint markers from the target once its migration is finished.
    ///
    /// `replicate` keeps its resume point in the target: one key per flow,
    /// df2redis:checkpoint:<name>:<flow> in db 0, written atomically with each batch (on a
    /// cluster one per flow and master, df2redis:checkpoint:<name>:{<tag>}:<flow>, and done
    /// markers of cross-slot RENAMEs, df2redis:checkpoint:<name>:done:*), <name> being the
    /// run's --name (a run with several masters: each master's under
    /// df2redis:checkpoint:<name>+<host>-<port>:*, removed with the run's). They are not the
    /// master's data. Run this after the last `replicate` of
    /// that run (a later run would then start with a full sync).
    ///
    /// Which run: --name, or the default name of --source; without either, the only run that
    /// has markers on the target (several: exit 2, listing them). Other runs' markers are
    /// kept. Markers of earlier versions (without a run name) are removed with any run's.
    /// A run that is still running (its lease is held) is refused (exit 2): stop it first.
    /// --all removes every df2redis key instead (every run's markers, and stale leases), for
    /// a target no run will resume on.
    ///
    /// Exit 0 with the number of keys removed.
    Cleanup {
        /// The run whose markers are removed (as given to replicate).
        #[arg(long, value_name = "NAME", conflicts_with = "all")]
        name: Option<String>,
        /// The run's source, host:port: its default name (df2redis-<host>-<port>) is meant.
        #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["all", "name"])]
        source: Option<String>,
        /// Remove every df2redis key: every run's markers and leases (no run may be running).
        #[arg(long)]
        all: bool,
        /// redis://[user:password@]host:port of the target (several addresses: cluster seeds;
        /// rediss:// for TLS).
        #[arg(long, value_name = "URL")]
        target: String,
        /// ACL user on the target (overrides the URL's).
        #[arg(long, value_name = "USER")]
        target_user: Option<String>,
        /// Password on the target (overrides the URL's).
        #[arg(long, value_name = "PASSWORD")]
        target_password: Option<String>,
        #[command(flatten)]
        target_tls: TargetTls,
    },
    /// Decode a captured flow file and print its items, one line each, then a summary.
    ///
    /// A flow file holds the bytes one flow connection received after its `DFLY FLOW` reply:
    /// the RDB header, snapshot entries, inline journal blobs, FULLSYNC_END, JOURNAL_OFFSET,
    /// EOF, the eof token and the stable-sync journal. Each entry is printed as
    /// `entry db=.. key=.. type=.. elements=.. bytes=.. wire=.. expire_at=..`, each journal
    /// record as `journal lsn=.. db=.. txid=.. COMMAND args...` (lsn=inline for records inside
    /// the snapshot). The summary counts items by opcode, entries by type and records by
    /// command. Exit code 1 and the byte offset of the damage if the file does not decode.
    Inspect {
        /// The capture to read (`-` for standard input).
        flow_file: PathBuf,
        /// The eof token from the flow's `DFLY FLOW` reply; the token in the stream must match.
        #[arg(long, value_name = "T")]
        token: Option<String>,
        /// The capture is a partial-sync flow (answered PARTIAL) starting at this LSN: it holds
        /// journal records only.
        #[arg(long, value_name = "LSN")]
        partial_from: Option<u64>,
        /// The file is a snapshot file, not a flow capture: a Dragonfly `.dfs` shard or summary
        /// file or an `.rdb` file (ends with EOF and its checksum; implied by those endings).
        #[arg(long, conflicts_with_all = ["token", "partial_from"])]
        file: bool,
    },
}

/// Where to read and write, shared by `replicate`, `migrate` and `check`.
#[derive(Args)]
struct Endpoints {
    /// INI file with the same settings (keys documented in config.ini.example); flags win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Dragonfly master (for `check`, any Redis-protocol server), host:port. Repeat it for
    /// several masters into one target (a consolidation, or the nodes of a Dragonfly cluster):
    /// one replication session per master, each with its own flows, checkpoints and resync.
    /// A node in Dragonfly cluster mode brings every master of its cluster (--discover).
    /// [file: source.addr, repeatable]
    #[arg(long, value_name = "HOST:PORT")]
    source: Vec<String>,
    /// ACL user on the master.  [file: source.user]
    #[arg(long, value_name = "USER")]
    source_user: Option<String>,
    /// Password on the master.  [file: source.password]
    #[arg(long, value_name = "PASSWORD")]
    source_password: Option<String>,
    #[command(flatten)]
    source_tls: SourceTls,
    /// Target Redis or Redis Cluster: redis://[user:password@]host:port[,host:port...], or
    /// rediss://... for TLS (see --target-tls-*). A cluster is detected (CLUSTER INFO); several
    /// addresses are seeds.  [file: target.url, repeatable]
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    #[command(flatten)]
    target_tls: TargetTls,
    /// Source db -> target db, e.g. 0:0,1:0 (required for data outside db 0 on a cluster, which
    /// has only db 0; dbs not listed keep their number).  [file: target.db_map]
    #[arg(long, value_name = "MAP")]
    db_map: Option<String>,
    /// ACL user on the target (overrides the URL's).  [file: target.user]
    #[arg(long, value_name = "USER")]
    target_user: Option<String>,
    /// Password on the target (overrides the URL's).  [file: target.password]
    #[arg(long, value_name = "PASSWORD")]
    target_password: Option<String>,
}

impl Endpoints {
    /// The settings of `--config FILE` (if given), overridden by these flags and `more`.
    fn raw(self, more: Vec<(&str, Option<String>)>) -> Result<Raw, config::ConfigError> {
        let mut flags = vec![
            ("source.addr", (!self.source.is_empty()).then(|| self.source.join("\n"))),
            ("source.user", self.source_user),
            ("source.password", self.source_password),
            ("target.url", self.target),
            ("target.user", self.target_user),
            ("target.password", self.target_password),
            ("target.db_map", self.db_map),
        ];
        flags.extend(more);
        let mut raw = file_and_flags(self.config.as_deref(), flags)?;
        self.source_tls.into_raw(&mut raw);
        self.target_tls.into_raw(&mut raw);
        Ok(raw)
    }
}

#[derive(Args)]
struct ReplicateArgs {
    #[command(flatten)]
    run: RunArgs,
    /// When the source cannot be reached before any session started (connection refused, no
    /// route, a failed handshake), keep retrying it as a source that went away (--max-retries,
    /// --retry-deadline) instead of exiting 1 at once: for a service that may start before its
    /// master. The target is not waited for.  [file: retry.wait_for_source = on]
    #[arg(long)]
    wait_for_source: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    /// on: a --source in Dragonfly cluster mode (--cluster_mode=yes) brings every master of its
    /// cluster (CLUSTER SLOTS), each replicated by its own session, and each session knows the
    /// hash slots its master owns (a resync of that master deletes only those slots' keys).
    /// off: only the sources given.  [file: source.discover]
    #[arg(long, value_name = "on|off")]
    discover: Option<String>,
    /// Pin the flow threads (flow-0, flow-1, ...) round-robin to these CPUs, e.g. 0-3 or 0,2.
    /// [file: threads.pin_flows]
    #[arg(long, value_name = "CPULIST")]
    pin_flows: Option<String>,
    /// Pin the writer threads (writer-0, ...) round-robin to these CPUs.  [file: threads.pin_writers]
    #[arg(long, value_name = "CPULIST")]
    pin_writers: Option<String>,
    /// Writer threads, each owning whole flows (default: one per flow).  [file: threads.writers]
    #[arg(long, value_name = "N")]
    writers: Option<String>,
    /// Batches a flow may queue before its reader waits for the target (default 16).
    /// [file: tuning.channel_capacity]
    #[arg(long, value_name = "N")]
    channel_capacity: Option<String>,
    /// Commands per pipeline (default 2000).  [file: tuning.batch_cmds]
    #[arg(long, value_name = "N")]
    batch_cmds: Option<String>,
    /// Payload bytes per pipeline (default 1048576).  [file: tuning.batch_bytes]
    #[arg(long, value_name = "BYTES")]
    batch_bytes: Option<String>,
    /// Pipelines in flight toward the target over all writers (default 16: four writers with four each).
    /// [file: tuning.inflight_pipelines]
    #[arg(long, value_name = "N")]
    inflight: Option<String>,
    /// JSON documents: auto (JSON.SET if the target has RedisJSON, on every master of a
    /// cluster; else skip) | json-set | skip. See docs/json-and-modules.md.  [file: policy.json]
    #[arg(long, value_name = "POLICY")]
    json: Option<String>,
    /// Hash fields / set members with TTLs: drop-ttl (write them without TTL; members already
    /// expired are left out) | skip (skip the key).  [file: policy.member_ttl]
    #[arg(long, value_name = "POLICY")]
    member_ttl: Option<String>,
    /// A command the target rejects: stop (exit 1 naming the command, key and error) | skip
    /// (count it and go on).  [file: policy.on_reject]
    #[arg(long, value_name = "POLICY")]
    on_reject: Option<String>,
    /// auto (default): during the full sync, small hashes, sorted sets, lists and sets whose
    /// encoding the target's version loads are written as one RESTORE each, built from the
    /// bytes Dragonfly sent (a payload the target refuses is written as commands, counted in
    /// the summary) | off: every value is written element by element (HSET, ZADD, RPUSH, SADD).
    /// [file: policy.restore]
    #[arg(long, value_name = "auto|off")]
    restore: Option<String>,
    /// Seconds between progress lines (default 5) when stderr is not a terminal; a terminal
    /// gets a live display refreshed twice a second.  [file: log.progress_secs]
    #[arg(long, value_name = "SECS")]
    progress_secs: Option<String>,
    /// Mirror the applied LSNs of every flow in FILE (rewritten atomically every progress
    /// interval and at the end), for diagnostics. The resume point itself is kept in the
    /// target, in the marker keys df2redis:checkpoint:* (db 0). Several masters: one file
    /// each, FILE.<host>-<port>.  [file: checkpoint.file]
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<String>,
    /// The run's name, which keeps several df2redis runs sharing one target apart (one per
    /// Dragonfly master, e.g. one per node of a Dragonfly cluster): it is in this run's
    /// checkpoint marker keys (df2redis:checkpoint:NAME:*), its writers' connection name
    /// (df2redis-writer-NAME: a restart closes only its own) and its lease key
    /// (df2redis:lease:NAME: a second run with the same name refuses to start, exit 2).
    /// Letters, digits, '.', '_', '-'. Default: df2redis-<source host>-<port>, so runs against
    /// different masters differ; give one explicitly for two runs of one master, and keep it
    /// across restarts (a new name finds no checkpoints: full sync). restore ignores it.
    /// [file: run.name]
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// A full resync over a target a previous run wrote (its checkpoints exist but cannot be
    /// resumed: another master id, a backlog overrun, a cluster whose slots moved): flush
    /// (delete this run's keys first, default: the whole target when no other run has
    /// markers there; with other runs' markers only the keys --include/--exclude select, and
    /// without such rules the run refuses) | keep (write over it; keys deleted on the master
    /// meanwhile survive).
    /// [file: checkpoint.on_resync]
    #[arg(long, value_name = "POLICY")]
    on_resync: Option<String>,
    /// on (default): keep the resume point in the target, marker keys written atomically with
    /// each batch (exactly-once resume): in MULTI/EXEC on a server; on a cluster one marker
    /// per flow and master, with the commands unsafe to apply twice (INCR, LPUSH ...) run in
    /// a script per node that sets it | off: write no markers; every restart or reconnect is
    /// a full resync (for targets that must hold nothing but the data).
    /// [file: checkpoint.markers]
    #[arg(long, value_name = "on|off")]
    checkpoints: Option<String>,
    /// When the source or target goes away (EOF, reset, the master cancelling, the target
    /// restarting), start a new session, resuming from the checkpoints: at most N in a row
    /// (default 20; 0 = exit 1 at once). Failures a retry cannot fix (rejected password or
    /// command, undecodable stream) exit 1 at once.  [file: retry.max_retries]
    #[arg(long, value_name = "N")]
    max_retries: Option<String>,
    /// Stop reconnecting SECS after the first failure of a row, exit 1 with every attempt's
    /// error (default 600).  [file: retry.deadline_secs]
    #[arg(long, value_name = "SECS")]
    retry_deadline: Option<String>,
    /// Wait before the first reconnect, doubled each time up to 30 s (default 1000).
    /// [file: retry.backoff_ms]
    #[arg(long, value_name = "MS")]
    retry_backoff_ms: Option<String>,
    /// Serve GET /metrics (Prometheus text format) and GET /status (JSON) over HTTP on
    /// HOST:PORT, e.g. 127.0.0.1:9121 (default: off). docs/metrics.md lists the metrics and fields.
    /// [file: metrics.addr]
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// Replicate only keys matching PATTERN; repeat it to keep keys matching any of several.
    /// PATTERN is `prefix:TEXT` (keys starting with TEXT), `glob:GLOB` (Redis-style: `*` any
    /// run of bytes, `?` one byte, `[abc]` `[a-z]` `[^a]` classes, `\` escapes the next
    /// character), `regex:RE` (unanchored, on the key's bytes: `.` is any byte, classes and
    /// (?i) are ASCII; anchor with ^ and $), or a bare GLOB. The same rules apply to the
    /// snapshot and to the journal: a DEL/UNLINK/TOUCH/EXISTS keeps its passing keys and an
    /// MSET its passing pairs; a record whose keys must stay together (RENAME, SMOVE, LMOVE,
    /// COPY, SINTERSTORE ...) with keys on both sides of the rules stops the run, naming the
    /// command, its keys and the rule. Counted in the summary.
    /// Example: --include 'prefix:user:' --include 'glob:session:*'.  [file: filter.include,
    /// one line per pattern]
    #[arg(long, value_name = "PATTERN")]
    include: Vec<String>,
    /// Never replicate keys matching PATTERN (same syntax as --include; repeatable). A key
    /// passes when it matches some --include (or there is none) and no --exclude.
    /// [file: filter.exclude, one line per pattern]
    #[arg(long, value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Replicate only these source dbs, e.g. 0,2 (default: all). Applied before --db-map: the
    /// selected dbs are then written to the dbs they map to, and the others need no mapping on
    /// a cluster target.  [file: filter.dbs]
    #[arg(long, value_name = "DBS")]
    dbs: Option<String>,
    /// With --include, --exclude or --dbs set, what a FLUSHDB or FLUSHALL on the master does,
    /// and a full resync under --on-resync flush: stop (default: exit 1 naming the command;
    /// flushing the target db would also delete keys the filter never copied, which may
    /// belong to others) | flush (run it on the target as it is, every key of the target db
    /// or dbs included). A FLUSHDB in a db --dbs leaves out is skipped either way.
    /// [file: filter.on_flush]
    #[arg(long, value_name = "stop|flush")]
    on_flush: Option<String>,
    /// Send at most N commands per second to the target, all writers together, in the full
    /// sync and the journal (default: no cap). Batches shrink to a tenth of a second of the
    /// cap. A cap lower than the master's write rate makes the replica fall behind, and the
    /// master cancels a replica it cannot write to for 30 s: a warning names the cap when it
    /// holds a flow back for 10 s.  [file: limits.ops_per_s]
    #[arg(long, value_name = "N")]
    max_ops_per_s: Option<String>,
    /// Send at most N payload bytes (keys, values, arguments) per second to the target, all
    /// writers together (default: no cap; at least 1024). As --max-ops-per-s otherwise.
    /// [file: limits.bytes_per_s]
    #[arg(long, value_name = "N")]
    max_bytes_per_s: Option<String>,
}

/// TLS toward the master.
#[derive(Args)]
struct SourceTls {
    /// Connect to the master over TLS (every connection: main and flows), as a Dragonfly
    /// replica with --tls_replication does.  [file: source.tls = on]
    #[arg(long)]
    source_tls: bool,
    /// PEM file of the CA(s) that signed the master's certificate (default: the system's CA
    /// bundle).  [file: source.tls_ca]
    #[arg(long, value_name = "FILE")]
    source_tls_ca: Option<String>,
    /// PEM client certificate (chain) to present to the master, with --source-tls-key (a master
    /// started with --tls_ca_cert_file demands one).  [file: source.tls_cert]
    #[arg(long, value_name = "FILE")]
    source_tls_cert: Option<String>,
    /// PEM private key of --source-tls-cert.  [file: source.tls_key]
    #[arg(long, value_name = "FILE")]
    source_tls_key: Option<String>,
    /// The name the master's certificate must carry (default: the host of --source).
    /// [file: source.tls_server_name]
    #[arg(long, value_name = "NAME")]
    source_tls_server_name: Option<String>,
}

/// TLS toward the target (turned on by a rediss:// URL).
#[derive(Args)]
struct TargetTls {
    /// PEM file of the CA(s) that signed the target's certificates (default: the system's CA
    /// bundle).  [file: target.tls_ca]
    #[arg(long, value_name = "FILE")]
    target_tls_ca: Option<String>,
    /// PEM client certificate (chain) to present to the target, with --target-tls-key (Redis
    /// demands one unless tls-auth-clients is no).  [file: target.tls_cert]
    #[arg(long, value_name = "FILE")]
    target_tls_cert: Option<String>,
    /// PEM private key of --target-tls-cert.  [file: target.tls_key]
    #[arg(long, value_name = "FILE")]
    target_tls_key: Option<String>,
    /// The name the target's certificates must carry (default: the host of each address,
    /// cluster nodes included).  [file: target.tls_server_name]
    #[arg(long, value_name = "NAME")]
    target_tls_server_name: Option<String>,
}

impl SourceTls {
    fn into_raw(self, raw: &mut Raw) {
        if self.source_tls {
            raw.insert("source.tls".into(), "on".into());
        }
        let flags = [
            ("source.tls_ca", self.source_tls_ca),
            ("source.tls_cert", self.source_tls_cert),
            ("source.tls_key", self.source_tls_key),
            ("source.tls_server_name", self.source_tls_server_name),
        ];
        for (k, v) in flags {
            if let Some(v) = v {
                raw.insert(k.to_string(), v);
            }
        }
    }
}

impl TargetTls {
    fn into_raw(self, raw: &mut Raw) {
        let flags = [
            ("target.tls_ca", self.target_tls_ca),
            ("target.tls_cert", self.target_tls_cert),
            ("target.tls_key", self.target_tls_key),
            ("target.tls_server_name", self.target_tls_server_name),
        ];
        for (k, v) in flags {
            if let Some(v) = v {
                raw.insert(k.to_string(), v);
            }
        }
    }
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    /// on: a --source in Dragonfly cluster mode brings every master of its cluster (CLUSTER
    /// SLOTS), each compared as a source owning its slots. off: only the sources given.
    /// [file: source.discover]
    #[arg(long, value_name = "on|off")]
    discover: Option<String>,
    /// Check about N keys of each side (shared among the dbs by their key counts, in SCAN
    /// order) instead of all of them.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    sample: Option<u64>,
    /// TTLs (PTTL) further apart than this are a difference. A key about to expire (its TTL
    /// within the tolerance) may be absent from the target.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    ttl_tolerance_ms: u64,
    /// Read at most about N keys per second (a window of a big value counts as a key), to
    /// spare a production server. Default: no limit.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_keys_per_s: Option<u64>,
    /// Also write the findings as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Keys listed per category and db (the counts are always complete).
    #[arg(long, value_name = "N", default_value_t = 20)]
    max_listed: usize,
    /// Seconds between progress lines.
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    progress_secs: u64,
}

impl CheckArgs {
    fn into_options(self) -> Result<df2redis::check::Options, config::ConfigError> {
        let cfg = config::build(&self.endpoints.raw(vec![("source.discover", self.discover)])?)?;
        Ok(df2redis::check::Options {
            source: cfg.source,
            sources: cfg.sources,
            discover: cfg.discover,
            target: cfg.target,
            db_map: cfg.db_map,
            sample: self.sample,
            ttl_tolerance_ms: self.ttl_tolerance_ms,
            max_keys_per_s: self.max_keys_per_s,
            max_listed: self.max_listed,
            progress_every: std::time::Duration::from_secs(self.progress_secs),
        })
    }
}

/// `restore`: the files to read, and the run flags of `migrate`.
#[derive(Args)]
struct RestoreArgs {
    /// A Dragonfly snapshot's <name>-summary.dfs file or the folder holding it, or an .rdb
    /// file.  [file: source.from]
    #[arg(long, value_name = "PATH")]
    from: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

impl RunArgs {
    /// The config of these flags (over `--config FILE`), with `more` settings of the command.
    fn into_config_with(self, more: Vec<(&str, Option<String>)>) -> Result<Config, config::ConfigError> {
        let mut flags = more;
        flags.extend([
            ("threads.pin_flows", self.pin_flows),
            ("threads.pin_writers", self.pin_writers),
            ("threads.writers", self.writers),
            ("tuning.channel_capacity", self.channel_capacity),
            ("tuning.batch_cmds", self.batch_cmds),
            ("tuning.batch_bytes", self.batch_bytes),
            ("tuning.inflight_pipelines", self.inflight),
            ("policy.json", self.json),
            ("policy.member_ttl", self.member_ttl),
            ("policy.on_reject", self.on_reject),
            ("policy.restore", self.restore),
            ("log.progress_secs", self.progress_secs),
            ("checkpoint.file", self.checkpoint),
            ("checkpoint.on_resync", self.on_resync),
            ("run.name", self.name),
            ("source.discover", self.discover),
            ("checkpoint.markers", self.checkpoints),
            ("retry.max_retries", self.max_retries),
            ("retry.deadline_secs", self.retry_deadline),
            ("retry.backoff_ms", self.retry_backoff_ms),
            ("metrics.addr", self.metrics_addr),
            ("filter.dbs", self.dbs),
            ("filter.on_flush", self.on_flush),
            ("limits.ops_per_s", self.max_ops_per_s),
            ("limits.bytes_per_s", self.max_bytes_per_s),
            // Repeated flags replace the file's lines, joined as the file's are (config::REPEATABLE).
            ("filter.include", (!self.include.is_empty()).then(|| self.include.join("\n"))),
            ("filter.exclude", (!self.exclude.is_empty()).then(|| self.exclude.join("\n"))),
        ]);
        config::build(&self.endpoints.raw(flags)?)
    }
}

/// The settings of `--config FILE` (if given), overridden by the flags that were set.
fn file_and_flags(file: Option<&std::path::Path>, flags: Vec<(&str, Option<String>)>) -> Result<Raw, config::ConfigError> {
    let mut raw: Raw = match file {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).map_err(|e| config::ConfigError(format!("--config {}: {e}", p.display())))?;
            config::parse_ini(&text, p)?
        }
        None => Raw::new(),
    };
    for (k, v) in flags {
        if let Some(v) = v {
            raw.insert(k.to_string(), v);
        }
    }
    Ok(raw)
}

/// mimalloc, because a command's buffer is allocated on a flow thread and freed on a writer
/// thread, which glibc's malloc serves under the flow arena's lock (Cargo.toml has the figures).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut logger = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    logger.format_timestamp_millis();
    if df2redis::console::global().is_terminal() {
        // Log lines and the live progress block share the terminal (see console.rs).
        logger.target(env_logger::Target::Pipe(Box::new(df2redis::console::LogTarget)));
    }
    logger.init();
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect { flow_file, token, partial_from, file } => run_inspect(flow_file, token, partial_from, file),
        Command::Replicate(args) => {
            run_with(args.run, Mode::Replicate, vec![("retry.wait_for_source", args.wait_for_source.then(|| "on".to_string()))])
        }
        Command::Migrate(args) => run_with(args, Mode::Migrate, Vec::new()),
        Command::Restore(RestoreArgs { from, run: args }) => {
            run_with(args, Mode::Restore, vec![("source.from", from.map(|p| p.display().to_string()))])
        }
        Command::Cleanup { name, source, all, target, target_user, target_password, target_tls } => {
            let which = match (name, source, all) {
                (_, _, true) => Which::All,
                (Some(n), _, _) => Which::Name(n),
                (None, Some(s), _) => Which::Name(df2redis::checkpoint::name::default_for(&s)),
                (None, None, false) => Which::Only,
            };
            if let Which::Name(n) = &which {
                if let Err(e) = df2redis::checkpoint::name::validate(n) {
                    eprintln!("error: --name: {e}");
                    return ExitCode::from(2);
                }
            }
            let mut raw = Raw::new();
            raw.insert("target.url".into(), target);
            for (k, v) in [("target.user", target_user), ("target.password", target_password)] {
                if let Some(v) = v {
                    raw.insert(k.into(), v);
                }
            }
            target_tls.into_raw(&mut raw);
            run_cleanup(&raw, which)
        }
        Command::Check(args) => run_check(args),
    }
}

fn run_check(args: CheckArgs) -> ExitCode {
    let report_path = args.report.clone();
    let opts = match args.into_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Created first, so that a path that cannot be written fails before the long scan.
    let mut report_file = match report_path.as_ref().map(|p| (p, File::create(p))) {
        None => None,
        Some((_, Ok(f))) => Some(f),
        Some((p, Err(e))) => {
            eprintln!("error: --report {}: {e}", p.display());
            return ExitCode::from(2);
        }
    };
    let report = match df2redis::check::run(&opts) {
        Ok(r) => r,
        Err(df2redis::check::CheckError::Usage(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let _ = report.write_text(&mut io::stdout().lock());
    if let (Some(f), Some(p)) = (report_file.as_mut(), &report_path) {
        if let Err(e) = f.write_all(report.to_json().as_bytes()).and_then(|_| f.sync_all()) {
            eprintln!("error: --report {}: {e}", p.display());
            return ExitCode::from(1);
        }
    }
    if let Some(e) = &report.error {
        eprintln!("error: the check stopped before the end: {e}");
        return ExitCode::from(1);
    }
    if report.consistent() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn run_with(args: RunArgs, mode: Mode, more: Vec<(&str, Option<String>)>) -> ExitCode {
    let mut cfg = match args.into_config_with(more) {
        Ok(c) if mode == Mode::Restore && c.from.is_none() => {
            eprintln!("error: restore needs --from PATH (file key source.from): a snapshot's -summary.dfs file or folder, or an .rdb file");
            return ExitCode::from(2);
        }
        Ok(c) if mode != Mode::Restore && c.from.is_some() => {
            eprintln!("error: source.from (--from) is for restore; replicate and migrate read a live master (--source)");
            return ExitCode::from(2);
        }
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if mode == Mode::Migrate && cfg.wait_for_source {
        // Only the file can set it here (the flag is replicate's); a file shared by both commands is fine.
        log::warn!("retry.wait_for_source is for replicate: migrate exits at once when the source cannot be reached");
        cfg.wait_for_source = false;
    }
    if cfg.filter.is_active() {
        log::info!("replicating only what passes the filter: {}", cfg.filter.describe());
    }
    let caps: Vec<String> = [("--max-ops-per-s", cfg.max_ops_per_s), ("--max-bytes-per-s", cfg.max_bytes_per_s)]
        .iter()
        .filter_map(|(flag, v)| v.map(|v| format!("{flag} {v}")))
        .collect();
    if !caps.is_empty() {
        log::info!("rate caps on the target: {}", caps.join(", "));
    }
    df2redis::signals::install();
    // Bound before the session starts, so that a taken port is a usage error, not a surprise
    // in the middle of a migration. It serves until the summary is printed.
    let _metrics = match &cfg.metrics_addr {
        None => None,
        Some(addr) => match df2redis::metrics::http::Server::start(addr, df2redis::metrics::Routes(df2redis::metrics::global())) {
            Ok(s) => {
                log::info!("metrics: http://{}/metrics and /status", s.addr());
                Some(s)
            }
            Err(e) => {
                eprintln!("error: --metrics-addr (file key metrics.addr): cannot listen on {addr}: {e}");
                return ExitCode::from(2);
            }
        },
    };
    // One process per run name: a second one with the same name would overwrite this one's
    // checkpoints and close its writers. Held (renewed) until the summary is printed.
    let _lease = match mode {
        Mode::Restore => None,
        _ => match df2redis::lease::acquire(&cfg) {
            Ok(l) => Some(l),
            Err(e @ df2redis::lease::LeaseError::Held { .. }) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            Err(df2redis::lease::LeaseError::Unreachable(e)) => {
                eprintln!("error: {}", pipeline::cannot_reach_target(&e.to_string()));
                return ExitCode::from(1);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        },
    };
    match pipeline::run(&cfg, mode) {
        Outcome::Ok(s) => {
            print_summary(&s, mode, cfg.filter.is_active());
            ExitCode::SUCCESS
        }
        Outcome::Usage(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Outcome::Failed(e, s, _) => {
            // No flow was ever opened (the source or target could not be reached): nothing to sum up.
            if !s.flows.is_empty() {
                print_summary(&s, mode, cfg.filter.is_active());
            }
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn print_summary(s: &Summary, mode: Mode, filtering: bool) {
    let mut out = io::stdout().lock();
    let what = match mode {
        Mode::Migrate => "migrate",
        Mode::Replicate => "replicate",
        Mode::Restore => "restore",
    };
    let _ = writeln!(out, "---- {what} summary ----");
    let _ = writeln!(out, "elapsed: {:.1} s", s.elapsed.as_secs_f64());
    let (mut keys, mut bytes, mut records) = (0, 0, 0);
    for (i, f) in s.flows.iter().enumerate() {
        if mode == Mode::Restore {
            let _ = writeln!(out, "file {i}: {} keys, {:.1} MB read, {} commands applied", f.keys, f.bytes as f64 / 1e6, f.commands);
            keys += f.keys;
            bytes += f.bytes;
            continue;
        }
        let lsn = match f.applied_next_lsn {
            0 => "journal offset not reached".to_string(),
            n => format!("next LSN {n}"),
        };
        let _ = writeln!(
            out,
            "flow {i}: {} keys, {:.1} MB received, {} journal records, {} commands applied, {lsn}",
            f.keys,
            f.bytes as f64 / 1e6,
            f.records,
            f.commands,
        );
        keys += f.keys;
        bytes += f.bytes;
        records += f.records;
    }
    let _ = writeln!(out, "total: {keys} keys, {:.1} MB, {records} journal records", bytes as f64 / 1e6);
    let st = &s.stats;
    if filtering || st.filtered_keys + st.filtered_records + st.split_records > 0 {
        let _ = writeln!(
            out,
            "filtered: {} keys (snapshot), {} records (journal); {} records written in part",
            st.filtered_keys, st.filtered_records, st.split_records
        );
    }
    if s.stats.expired_on_arrival > 0 {
        let _ = writeln!(out, "keys already expired when they arrived (not written): {}", s.stats.expired_on_arrival);
    }
    for (label, map) in [("skipped", &s.stats.skipped), ("altered", &s.stats.altered)] {
        for (reason, n) in map {
            let _ = writeln!(out, "{label}: {n} x {reason}");
        }
    }
    for (node, n) in &s.node_writes {
        let _ = writeln!(out, "node {node}: {n} writes");
    }
    if s.redirects != (0, 0) {
        let _ = writeln!(out, "cluster redirects followed: {} MOVED, {} ASK", s.redirects.0, s.redirects.1);
    }
    if s.rejected > 0 {
        let _ = writeln!(out, "commands rejected by the target and skipped: {}", s.rejected);
    }
    for (reason, n) in &s.restore_fallbacks {
        let _ = writeln!(out, "RESTORE refused, written as commands instead: {n} x {reason}");
    }
    if s.sessions > 1 {
        let _ = writeln!(out, "sessions: {} (the source or target went away {} times):", s.sessions, s.reconnects.len());
        for r in &s.reconnects {
            let _ = writeln!(out, "  {r}");
        }
    }
    if let Some(by) = s.stopped_by {
        let _ = writeln!(out, "stopped by {by}");
    }
}

/// Which markers `cleanup` removes.
enum Which {
    Name(String),
    /// The only run with markers on the target.
    Only,
    All,
}

fn run_cleanup(raw: &Raw, which: Which) -> ExitCode {
    use df2redis::checkpoint::{run_pattern, Owner};
    let ep = match config::target_endpoint(raw) {
        Ok(ep) => ep,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let at = ep.seeds.join(",");
    let mut t = match df2redis::target::Target::connect(&ep.seeds, ep.auth(), ep.tls()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let result = (|| -> Result<Result<String, String>, df2redis::target::TargetError> {
        let owners = t.marker_owners()?;
        // A run with several masters keeps each master's markers under `<run>+<host>-<port>`.
        let per_master: Vec<String> = owners.iter().filter_map(|o| if let Owner::Run(n) = o { Some(n.clone()) } else { None }).collect();
        let mut runs: Vec<String> = per_master.iter().map(|n| n.split('+').next().unwrap_or(n).to_string()).collect();
        runs.sort();
        runs.dedup();
        let legacy = owners.contains(&Owner::Legacy);
        // A run still running must not lose its markers under its feet.
        let live = |t: &mut df2redis::target::Target, n: &str| -> Result<Option<String>, df2redis::target::TargetError> {
            Ok(df2redis::lease::holder(t, n)?.filter(|h| !df2redis::lease::holder_is_gone(h)))
        };
        let name = match which {
            Which::All => {
                for n in t.lease_names()? {
                    if let Some(h) = live(&mut t, &n)? {
                        return Ok(Err(format!("run {n:?} is running ({h}): stop it before cleanup --all")));
                    }
                }
                let k = t.delete_all_internal()?;
                return Ok(Ok(format!("removed {k} df2redis keys (df2redis:checkpoint:* of every run, df2redis:lease:*) from {at}")));
            }
            Which::Name(n) => n,
            Which::Only => match runs.as_slice() {
                [] if !legacy => return Ok(Ok(format!("removed 0 checkpoint marker keys from {at} (no run has markers there)"))),
                [] => String::new(),
                [n] => n.clone(),
                many => {
                    return Ok(Err(format!(
                        "several runs have checkpoint markers on {at}: {}; name the one to remove with --name (or --all for every one)",
                        many.join(", ")
                    )))
                }
            },
        };
        let mut removed = 0;
        let mut what = Vec::new();
        if !name.is_empty() {
            if let Some(h) = live(&mut t, &name)? {
                return Ok(Err(format!("run {name:?} is running ({h}): stop it before removing its checkpoints")));
            }
            removed += t.delete_markers(&name)?;
            for m in per_master.iter().filter(|m| m.strip_prefix(name.as_str()).is_some_and(|r| r.starts_with('+'))) {
                removed += t.delete_markers(m)?;
            }
            let lease = df2redis::lease::lease_key(&name);
            t.query_key(&lease, &[b"DEL", &lease])?;
            what.push(format!("of run {name:?} ({}, and {} of its masters)", run_pattern(&name), run_pattern(&format!("{name}+*"))));
        }
        if legacy {
            removed += t.delete_legacy_markers()?;
            what.push("of earlier versions (without a run name)".into());
        }
        let kept: Vec<&String> = runs.iter().filter(|n| **n != name).collect();
        let mut msg = format!("removed {removed} checkpoint marker keys {} from {at}", what.join(" and "));
        if !kept.is_empty() {
            msg.push_str(&format!("; other runs' markers kept: {}", kept.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")));
        }
        Ok(Ok(msg))
    })();
    match result {
        Ok(Ok(msg)) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Ok(Err(refusal)) => {
            eprintln!("error: {refusal}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_inspect(path: PathBuf, token: Option<String>, partial_from: Option<u64>, file: bool) -> ExitCode {
    if let Some(t) = &token {
        if t.len() != 40 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            eprintln!("error: --token must be the 40 hex digits of the FLOW reply, got {t:?}");
            return ExitCode::from(2);
        }
    }
    let input: Box<dyn io::Read> = if path.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        match File::open(&path) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("error: cannot open flow file {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    };
    let snapshot_file = file
        || (token.is_none()
            && partial_from.is_none()
            && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("dfs") || e.eq_ignore_ascii_case("rdb")));
    let start = match partial_from {
        Some(lsn) => Start::Partial(lsn),
        None if snapshot_file => Start::File,
        None => Start::Full,
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let r = inspect::inspect(input, token.map(String::into_bytes), start, &mut out);
    let _ = out.flush();
    match r {
        Ok(Ok(_)) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {}: {e}", path.display());
            ExitCode::from(1)
        }
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: reading {}: {e}", path.display());
            ExitCode::from(1)
        }
    }
}
