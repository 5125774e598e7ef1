//! Settings from an INI file and command-line flags, validated into one [`Config`].
//!
//! Every setting has one name in the file (`section.key`) and one flag; flags override the
//! file. Errors name the flag or key and what would be accepted, and map to exit code 2.

use std::collections::BTreeMap;
use std::path::Path;

use crate::affinity::CpuList;
use crate::replay::filter::{self, Filter, OnFlush, Rule};
use crate::replay::{JsonPolicy, MemberTtlPolicy};
use crate::tls::{ClientSettings, TlsClient};

/// A usage or configuration error (exit code 2).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}

/// `host:port` plus credentials and TLS. A cluster target may list several seed addresses.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Endpoint {
    /// The first address (the only one for the source).
    pub addr: String,
    /// Every address given (cluster seeds); `addr` is the first.
    pub seeds: Vec<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Connect over TLS with these settings (certificates loaded and checked).
    pub tls: Option<TlsClient>,
}

impl Endpoint {
    /// AUTH arguments, if a password is set.
    pub fn auth(&self) -> Option<(&str, &str)> {
        self.password.as_deref().map(|p| (self.user.as_deref().unwrap_or(""), p))
    }

    /// The TLS settings, when connections are TLS.
    pub fn tls(&self) -> Option<&TlsClient> {
        self.tls.as_ref()
    }
}

/// JSON policy as configured: `auto` asks the target whether it has RedisJSON.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JsonSetting {
    Auto,
    Fixed(JsonPolicy),
}

/// What a full resync does to a target that a previous run of df2redis wrote (its checkpoint
/// markers are there but cannot be resumed from).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OnResync {
    /// Empty the target first: keys deleted on the master meanwhile would otherwise survive.
    Flush,
    /// Write over what is there (every key of the snapshot replaces its copy).
    Keep,
}

/// What to do when the target rejects a command.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OnReject {
    Stop,
    SkipAndCount,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The master of this session (with several sources, each session's config names its
    /// own; credentials and TLS are shared by all).
    pub source: Endpoint,
    /// Every source address given (`--source`, repeatable; `source.addr`, one line each).
    pub sources: Vec<String>,
    /// A source in Dragonfly cluster mode brings every master of its cluster (CLUSTER SLOTS).
    pub discover: bool,
    /// Which source of the run this session's is (0 with one source): metrics and pinning.
    pub source_index: usize,
    /// With several sources: this one's short label in thread names (`flow-<label>-<i>`).
    pub source_label: Option<String>,
    /// A Dragonfly cluster node: the hash slots it owned when the run planned its masters
    /// (for the log). Each session asks the node again at its start: slots move.
    pub own_slots: Option<crate::source::cluster::SlotRanges>,
    /// Several sources write to the target in this process (a resync never flushes it all).
    pub multi_source: bool,
    /// The run name ([`crate::checkpoint::name`]): in the marker keys, the writers' connection
    /// name and the lease key, so runs sharing a target keep apart.
    pub name: String,
    /// `restore`: the snapshot to read (a Dragonfly summary file or its folder, or an `.rdb`
    /// file) instead of a live master.
    pub from: Option<std::path::PathBuf>,
    pub target: Endpoint,
    pub pin_flows: Option<CpuList>,
    pub pin_writers: Option<CpuList>,
    /// Writer threads; `None` = one per flow.
    pub writers: Option<usize>,
    /// Batches a flow may queue toward its writer before its reader waits.
    pub channel_capacity: usize,
    /// Commands per pipeline.
    pub batch_cmds: usize,
    /// Payload bytes per pipeline.
    pub batch_bytes: usize,
    /// Pipelines in flight toward the target, over all writers.
    pub inflight_pipelines: usize,
    pub json: JsonSetting,
    pub member_ttl: MemberTtlPolicy,
    pub on_reject: OnReject,
    /// Full sync: send small snapshot values the target can load as `RESTORE` payloads built
    /// from the master's own encodings (on, the default), or always as element commands.
    pub restore: bool,
    /// Seconds between progress lines.
    pub progress_secs: u64,
    /// Source db -> target db. Unlisted dbs keep their number (standalone) and are an error on a
    /// cluster, which has only db 0.
    pub db_map: BTreeMap<u32, u32>,
    /// A local copy of the applied LSNs, for diagnostics (the resume point is in the target).
    pub checkpoint_file: Option<std::path::PathBuf>,
    pub on_resync: OnResync,
    /// Keep the resume point in the target (marker keys written atomically with each batch).
    pub checkpoints: bool,
    /// Reconnects: new sessions after a transient failure (the source or target went away),
    /// at most this many in a row and within `retry_deadline` of the first failure, waiting
    /// `retry_backoff` before the first and doubling up to 30 s.
    pub max_retries: u32,
    pub retry_deadline: std::time::Duration,
    pub retry_backoff: std::time::Duration,
    /// `replicate`: a source that cannot be reached before any session started is retried
    /// like a source that went away, instead of ending the run at once.
    pub wait_for_source: bool,
    /// Serve `/metrics` and `/status` over HTTP on this `host:port`.
    pub metrics_addr: Option<String>,
    /// Which source keys and dbs are replicated (everything by default).
    pub filter: Filter,
    /// Caps on what is sent to the target, over all writers, in both phases.
    pub max_ops_per_s: Option<u64>,
    pub max_bytes_per_s: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            source: Endpoint::default(),
            sources: Vec::new(),
            discover: true,
            source_index: 0,
            source_label: None,
            own_slots: None,
            multi_source: false,
            name: String::new(),
            from: None,
            target: Endpoint::default(),
            pin_flows: None,
            pin_writers: None,
            writers: None,
            channel_capacity: 16,
            batch_cmds: 2000,
            batch_bytes: 1 << 20,
            inflight_pipelines: 16,
            json: JsonSetting::Auto,
            member_ttl: MemberTtlPolicy::DropTtl,
            on_reject: OnReject::Stop,
            restore: true,
            progress_secs: 5,
            db_map: BTreeMap::new(),
            checkpoint_file: None,
            on_resync: OnResync::Flush,
            checkpoints: true,
            max_retries: 20,
            retry_deadline: std::time::Duration::from_secs(600),
            retry_backoff: std::time::Duration::from_millis(1000),
            wait_for_source: false,
            metrics_addr: None,
            filter: Filter::default(),
            max_ops_per_s: None,
            max_bytes_per_s: None,
        }
    }
}

/// Every setting, as raw text, keyed by its file name (`section.key`). Flags are mapped to the
/// same names by the CLI, so one validation path serves both.
pub type Raw = BTreeMap<String, String>;

/// The keys a file may hold, with their flag, default and meaning (also the source of
/// `config.ini.example`'s contents and of error messages).
pub const KEYS: &[(&str, &str, &str)] = &[
    ("source.addr", "--source", "Dragonfly master host:port (required, but for restore); repeatable: several masters into one target"),
    ("source.discover", "--discover", "on | off: a source in Dragonfly cluster mode brings every master of its cluster (on)"),
    ("source.from", "--from", "restore: a Dragonfly snapshot (its -summary.dfs file or folder) or an .rdb file"),
    ("source.user", "--source-user", "ACL user on the master (default: the default user)"),
    ("source.password", "--source-password", "password on the master (default: none)"),
    ("source.tls", "--source-tls", "on | off: every connection to the master over TLS (off)"),
    ("source.tls_ca", "--source-tls-ca", "PEM file of the CA(s) to trust for the master's certificate (default: the system's)"),
    ("source.tls_cert", "--source-tls-cert", "PEM client certificate for the master (with source.tls_key)"),
    ("source.tls_key", "--source-tls-key", "PEM private key of source.tls_cert"),
    ("source.tls_server_name", "--source-tls-server-name", "name the master's certificate must carry (default: the host of source.addr)"),
    ("run.name", "--name", "run name: keeps runs sharing one target apart (markers, writers, lease); default df2redis-<source host>-<port>"),
    ("target.url", "--target", "redis://[user:password@]host:port of the target, rediss:// for TLS (required)"),
    ("target.user", "--target-user", "ACL user on the target (overrides the URL's)"),
    ("target.password", "--target-password", "password on the target (overrides the URL's)"),
    ("target.tls_ca", "--target-tls-ca", "PEM file of the CA(s) to trust for the target's certificates (default: the system's)"),
    ("target.tls_cert", "--target-tls-cert", "PEM client certificate for the target (with target.tls_key)"),
    ("target.tls_key", "--target-tls-key", "PEM private key of target.tls_cert"),
    ("target.tls_server_name", "--target-tls-server-name", "name the target's certificates must carry (default: the host of each address)"),
    ("target.db_map", "--db-map", "source db -> target db, e.g. 0:0,1:0 (a cluster has only db 0)"),
    ("threads.pin_flows", "--pin-flows", "CPU list for the flow threads, e.g. 0-3 or 0,2"),
    ("threads.pin_writers", "--pin-writers", "CPU list for the writer threads"),
    ("threads.writers", "--writers", "writer threads (default: one per flow)"),
    ("tuning.channel_capacity", "--channel-capacity", "batches queued per flow before its reader waits (16)"),
    ("tuning.batch_cmds", "--batch-cmds", "commands per pipeline (2000)"),
    ("tuning.batch_bytes", "--batch-bytes", "payload bytes per pipeline (1048576)"),
    ("tuning.inflight_pipelines", "--inflight", "pipelines in flight over all writers (16)"),
    ("policy.json", "--json", "JSON documents: auto | json-set | skip (auto)"),
    ("policy.member_ttl", "--member-ttl", "hash field / set member TTLs: drop-ttl | skip (drop-ttl)"),
    ("policy.on_reject", "--on-reject", "a command the target rejects: stop | skip (stop)"),
    ("policy.restore", "--restore", "auto | off: full sync writes small values the target can load as RESTORE payloads (auto)"),
    ("log.progress_secs", "--progress-secs", "seconds between progress lines (5)"),
    ("metrics.addr", "--metrics-addr", "serve /metrics (Prometheus) and /status (JSON) on host:port (off)"),
    ("checkpoint.file", "--checkpoint", "file mirroring the applied LSNs (diagnostics; the resume point is in the target)"),
    ("checkpoint.on_resync", "--on-resync", "full resync over a target df2redis wrote before: flush | keep (flush)"),
    ("checkpoint.markers", "--checkpoints", "on | off: keep the resume point in the target; off = every restart is a full resync (on)"),
    ("retry.max_retries", "--max-retries", "new sessions in a row after the source or target went away; 0 = exit at once (20)"),
    ("retry.deadline_secs", "--retry-deadline", "give up reconnecting this many seconds after the first failure (600)"),
    ("retry.backoff_ms", "--retry-backoff-ms", "wait before the first reconnect, doubled each time up to 30 s (1000)"),
    ("retry.wait_for_source", "--wait-for-source", "on | off: replicate keeps retrying a source it cannot reach at the start (off)"),
    ("filter.include", "--include", "replicate only keys matching one of these patterns (repeatable): prefix:P | glob:G | regex:R | G"),
    ("filter.exclude", "--exclude", "never replicate keys matching one of these patterns (repeatable), same syntax"),
    ("filter.dbs", "--dbs", "replicate only these source dbs, e.g. 0,2 (all); mapped afterwards by db_map"),
    ("filter.on_flush", "--on-flush", "FLUSHDB/FLUSHALL on the master, or a full resync's flush, while filtering: stop | flush (stop)"),
    ("limits.ops_per_s", "--max-ops-per-s", "cap on commands sent to the target per second, all writers together (none)"),
    ("limits.bytes_per_s", "--max-bytes-per-s", "cap on payload bytes sent to the target per second (none)"),
];

/// Keys that may be given several times (in the file: one line each; as flags: repeated).
/// Their values are kept in [`Raw`] joined by newlines, which an INI value cannot contain.
pub const REPEATABLE: &[&str] = &["filter.include", "filter.exclude", "source.addr"];

fn flag_of(key: &str) -> &'static str {
    KEYS.iter().find(|k| k.0 == key).map_or("", |k| k.1)
}

fn name(key: &str) -> String {
    format!("{} (file key {key})", flag_of(key))
}

/// Parse an INI file: `[section]` headers, `key = value`, `;`/`#` comments. Keys become
/// `section.key`; unknown keys are errors (a typo must not silently fall back to a default).
pub fn parse_ini(text: &str, path: &Path) -> Result<Raw, ConfigError> {
    let mut raw = Raw::new();
    let mut section = String::new();
    for (n, line) in text.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), n + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[') {
            section = s.strip_suffix(']').ok_or_else(|| ConfigError(format!("{}: unterminated section header", at())))?.trim().to_string();
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| ConfigError(format!("{}: expected key = value", at())))?;
        let key = format!("{section}.{}", k.trim());
        if !KEYS.iter().any(|(name, _, _)| *name == key) {
            let known: Vec<&str> = KEYS.iter().map(|k| k.0).collect();
            return Err(ConfigError(format!("{}: unknown key {key} (known: {})", at(), known.join(", "))));
        }
        // Several cluster seeds may be given by repeating the url key.
        match raw.get_mut(&key) {
            Some(prev) if REPEATABLE.contains(&key.as_str()) => {
                prev.push('\n');
                prev.push_str(v.trim());
            }
            Some(prev) if key == "target.url" => {
                let v = v.trim();
                let v = v.split_once("://").map_or(v, |x| x.1);
                prev.push(',');
                prev.push_str(v.rsplit_once('@').map_or(v, |x| x.1));
            }
            _ => {
                raw.insert(key, v.trim().to_string());
            }
        }
    }
    Ok(raw)
}

/// Build the config from raw settings (file first, then flags on top).
pub fn build(raw: &Raw) -> Result<Config, ConfigError> {
    let mut c = Config::default();
    let get = |k: &str| raw.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let num = |k: &str, min: usize| -> Result<Option<usize>, ConfigError> {
        get(k)
            .map(|v| {
                v.parse::<usize>()
                    .ok()
                    .filter(|&n| n >= min)
                    .ok_or_else(|| ConfigError(format!("{}: expected a whole number >= {min}, got {v:?}", name(k))))
            })
            .transpose()
    };
    // A restore reads files: it has no master, and a master given with it is a mistake.
    match (get("source.from"), get("source.addr")) {
        (Some(from), None) => c.from = Some(std::path::PathBuf::from(from)),
        (Some(_), Some(_)) => {
            return Err(ConfigError(format!(
                "{} and {} both given: restore reads snapshot files, replicate and migrate a live master",
                name("source.from"),
                name("source.addr")
            )))
        }
        (None, None) => {
            return Err(ConfigError(format!(
                "{} is required (for restore: {}, the snapshot files to read)",
                name("source.addr"),
                name("source.from")
            )))
        }
        (None, Some(_)) => {
            c.source = source_endpoint(raw)?;
            c.sources = get("source.addr").unwrap_or_default().lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
            for (i, a) in c.sources.iter().enumerate() {
                check_addr(a, "source.addr")?;
                if c.sources[..i].contains(a) {
                    return Err(ConfigError(format!("{}: {a} is given twice", name("source.addr"))));
                }
            }
        }
    }
    c.name = match get("run.name") {
        Some(n) => {
            crate::checkpoint::name::validate(n).map_err(|e| ConfigError(format!("{}: {e}", name("run.name"))))?;
            n.to_string()
        }
        None if c.from.is_some() => "restore".to_string(),
        None => crate::checkpoint::name::default_for(&c.source.addr),
    };
    c.target = target_endpoint(raw)?;
    for (key, slot) in [("threads.pin_flows", &mut c.pin_flows), ("threads.pin_writers", &mut c.pin_writers)] {
        if let Some(v) = get(key) {
            *slot = Some(CpuList::parse(v).map_err(|e| ConfigError(format!("{}: {e}", name(key))))?);
        }
    }
    c.writers = num("threads.writers", 1)?;
    if let Some(n) = num("tuning.channel_capacity", 1)? {
        c.channel_capacity = n;
    }
    if let Some(n) = num("tuning.batch_cmds", 1)? {
        c.batch_cmds = n;
    }
    if let Some(n) = num("tuning.batch_bytes", 1024)? {
        c.batch_bytes = n;
    }
    if let Some(n) = num("tuning.inflight_pipelines", 1)? {
        c.inflight_pipelines = n;
    }
    if let Some(n) = num("log.progress_secs", 1)? {
        c.progress_secs = n as u64;
    }
    if let Some(n) = num("retry.max_retries", 0)? {
        c.max_retries = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some(n) = num("retry.deadline_secs", 1)? {
        c.retry_deadline = std::time::Duration::from_secs(n as u64);
    }
    if let Some(n) = num("retry.backoff_ms", 1)? {
        c.retry_backoff = std::time::Duration::from_millis(n as u64);
    }
    if let Some(v) = get("target.db_map") {
        c.db_map = parse_db_map(v).map_err(|e| ConfigError(format!("{}: {e}", name("target.db_map"))))?;
    }
    let choice = |k: &str, opts: &[&str]| -> Result<Option<String>, ConfigError> {
        get(k)
            .map(|v| {
                let v = v.to_ascii_lowercase();
                if opts.contains(&v.as_str()) {
                    Ok(v)
                } else {
                    Err(ConfigError(format!("{}: expected one of {}, got {v:?}", name(k), opts.join(" | "))))
                }
            })
            .transpose()
    };
    c.json = match choice("policy.json", &["auto", "json-set", "skip"])?.as_deref() {
        None | Some("auto") => JsonSetting::Auto,
        Some("json-set") => JsonSetting::Fixed(JsonPolicy::JsonSet),
        _ => JsonSetting::Fixed(JsonPolicy::SkipAsked),
    };
    c.member_ttl = match choice("policy.member_ttl", &["drop-ttl", "skip"])?.as_deref() {
        Some("skip") => MemberTtlPolicy::Skip,
        _ => MemberTtlPolicy::DropTtl,
    };
    c.discover = choice("source.discover", &["on", "off"])?.as_deref() != Some("off");
    c.on_resync = match choice("checkpoint.on_resync", &["flush", "keep"])?.as_deref() {
        Some("keep") => OnResync::Keep,
        _ => OnResync::Flush,
    };
    c.checkpoint_file = get("checkpoint.file").map(std::path::PathBuf::from);
    c.checkpoints = choice("checkpoint.markers", &["on", "off"])?.as_deref() != Some("off");
    c.wait_for_source = choice("retry.wait_for_source", &["on", "off"])?.as_deref() == Some("on");
    if let Some(a) = get("metrics.addr") {
        check_addr(a, "metrics.addr")?;
        c.metrics_addr = Some(a.to_string());
    }
    c.on_reject = match choice("policy.on_reject", &["stop", "skip"])?.as_deref() {
        Some("skip") => OnReject::SkipAndCount,
        _ => OnReject::Stop,
    };
    c.restore = choice("policy.restore", &["auto", "off"])?.as_deref() != Some("off");
    for (key, rules) in [("filter.include", &mut c.filter.include), ("filter.exclude", &mut c.filter.exclude)] {
        for p in get(key).into_iter().flat_map(|v| v.split('\n')).map(str::trim).filter(|p| !p.is_empty()) {
            rules.push(Rule::parse(p).map_err(|e| ConfigError(format!("{}: {e}", name(key))))?);
        }
    }
    if let Some(v) = get("filter.dbs") {
        c.filter.dbs = Some(filter::parse_dbs(v).map_err(|e| ConfigError(format!("{}: {e}", name("filter.dbs"))))?);
    }
    c.filter.on_flush = match choice("filter.on_flush", &["stop", "flush"])?.as_deref() {
        Some("flush") => OnFlush::Flush,
        _ => OnFlush::Stop,
    };
    c.max_ops_per_s = num("limits.ops_per_s", 1)?.map(|n| n as u64);
    c.max_bytes_per_s = num("limits.bytes_per_s", 1024)?.map(|n| n as u64);
    // A batch waits for its whole cost at once, and its flow's reader waits with it: batches
    // of at most a tenth of a second of the cap keep the readers moving (the master cancels a
    // replica whose flow it cannot write to for 30 s).
    for (cap, key, batch, floor, flag) in [
        (c.max_ops_per_s, "limits.ops_per_s", &mut c.batch_cmds, 1, "--batch-cmds"),
        (c.max_bytes_per_s, "limits.bytes_per_s", &mut c.batch_bytes, 1024, "--batch-bytes"),
    ] {
        let Some(cap) = cap else { continue };
        let most = usize::try_from(cap / 10).unwrap_or(usize::MAX).max(floor);
        if *batch > most {
            log::info!("{} {cap}: batches of at most {most} ({flag} lowered from {batch}), a tenth of a second of the cap", flag_of(key));
            *batch = most;
        }
    }
    Ok(c)
}

/// The source's address, credentials and TLS (`source.*`).
pub fn source_endpoint(raw: &Raw) -> Result<Endpoint, ConfigError> {
    let get = |k: &str| raw.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let addr = get("source.addr").ok_or_else(|| ConfigError(format!("{} is required", name("source.addr"))))?;
    // Several sources: the first is this endpoint's address, the others share its settings.
    let addr = addr.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or(addr).to_string();
    check_addr(&addr, "source.addr")?;
    let on = match get("source.tls").map(str::to_ascii_lowercase).as_deref() {
        None | Some("off") => false,
        Some("on") => true,
        Some(v) => return Err(ConfigError(format!("{}: expected on | off, got {v:?}", name("source.tls")))),
    };
    Ok(Endpoint {
        seeds: vec![addr.clone()],
        addr,
        user: get("source.user").map(str::to_string),
        password: get("source.password").map(str::to_string),
        tls: tls_client(raw, "source", on, &name("source.tls"))?,
    })
}

/// The target's addresses, credentials and TLS (`target.*`; `rediss://` turns TLS on).
pub fn target_endpoint(raw: &Raw) -> Result<Endpoint, ConfigError> {
    let get = |k: &str| raw.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let url = get("target.url").ok_or_else(|| ConfigError(format!("{} is required", name("target.url"))))?;
    let (mut ep, on) = parse_redis_url(url).map_err(|e| ConfigError(format!("{}: {e}", name("target.url"))))?;
    if let Some(u) = get("target.user") {
        ep.user = Some(u.to_string());
    }
    if let Some(p) = get("target.password") {
        ep.password = Some(p.to_string());
    }
    ep.tls = tls_client(raw, "target", on, "a rediss:// URL in --target (file key target.url)")?;
    Ok(ep)
}

/// The TLS client of `side` when `on`; its settings without TLS on are an error (they would
/// be ignored in silence). `switch` names what turns TLS on.
fn tls_client(raw: &Raw, side: &'static str, on: bool, switch: &str) -> Result<Option<TlsClient>, ConfigError> {
    let get = |which: &str| raw.get(&format!("{side}.tls_{which}")).map(String::as_str).filter(|v| !v.is_empty());
    let settings = ClientSettings {
        ca: get("ca").map(std::path::PathBuf::from),
        cert: get("cert").map(std::path::PathBuf::from),
        key: get("key").map(std::path::PathBuf::from),
        server_name: get("server_name").map(str::to_string),
    };
    if !on {
        if let Some(which) = ["ca", "cert", "key", "server_name"].into_iter().find(|w| get(w).is_some()) {
            let key = format!("{side}.tls_{which}");
            return Err(ConfigError(format!("{} is set but TLS is off for the {side}: TLS is turned on by {switch}", name(&key))));
        }
        return Ok(None);
    }
    TlsClient::load(side, settings).map(Some).map_err(ConfigError)
}

/// `0:0,1:0` -> {0: 0, 1: 0}.
pub fn parse_db_map(s: &str) -> Result<BTreeMap<u32, u32>, String> {
    let mut m = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parsed = pair.split_once(':').and_then(|(a, b)| Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?)));
        let Some((a, b)) = parsed else {
            return Err(format!("{pair:?} is not SRC:DST (expected e.g. 0:0,1:0)"));
        };
        if m.insert(a, b).is_some() {
            return Err(format!("source db {a} is mapped twice"));
        }
    }
    Ok(m)
}

fn check_addr(addr: &str, key: &str) -> Result<(), ConfigError> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => Ok(()),
        _ => Err(ConfigError(format!("{}: expected host:port, got {addr:?}", name(key)))),
    }
}

/// `redis://[user[:password]@]host:port[,host:port...][/]` (a bare `host:port` is accepted
/// too), or `rediss://` for TLS. Several addresses are cluster seeds. Returns the endpoint
/// without its TLS settings ([`target_endpoint`] adds them), and whether the URL asks for TLS.
pub fn parse_redis_url(url: &str) -> Result<(Endpoint, bool), String> {
    let (rest, tls) = match url.split_once("://") {
        Some(("redis", r)) => (r, false),
        Some(("rediss", r)) => (r, true),
        Some((scheme, _)) => return Err(format!("unsupported scheme {scheme:?} in {url:?} (expected redis:// or rediss://)")),
        None => (url, false),
    };
    let rest = rest.trim_end_matches('/');
    let (auth, hostport) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    if hostport.contains('/') {
        return Err(format!("{url:?}: a db number in the URL is not supported: source dbs map to the same target dbs (see db_map)"));
    }
    let seeds: Vec<String> = hostport.split(',').map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).collect();
    for h in &seeds {
        check_addr(h, "target.url").map_err(|_| format!("expected redis://host:port[,host:port...], got {url:?}"))?;
    }
    if seeds.is_empty() {
        return Err(format!("no address in {url:?}"));
    }
    let (user, password) = match auth {
        None => (None, None),
        Some(a) => match a.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
            None => (None, Some(a.to_string())),
        },
    };
    Ok((Endpoint { addr: seeds[0].clone(), seeds, user, password, tls: None }, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> Raw {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn several_sources_from_the_file_or_flags() {
        let r = parse_ini("[source]\naddr = a:1\naddr = b:2\ndiscover = off\n[target]\nurl = h:3\n", Path::new("c.ini")).unwrap();
        let c = build(&r).unwrap();
        assert_eq!(c.sources, ["a:1", "b:2"]);
        assert_eq!((c.source.addr.as_str(), c.discover), ("a:1", false));
        assert_eq!(c.name, "df2redis-a-1", "the default name comes from the first source");
        let c = build(&raw(&[("source.addr", "a:1"), ("target.url", "h:3")])).unwrap();
        assert!(c.discover && c.sources == ["a:1"]);
        let e = build(&raw(&[("source.addr", "a:1\na:1"), ("target.url", "h:3")])).unwrap_err();
        assert!(e.0.contains("a:1 is given twice") && e.0.contains("--source"), "{e}");
        let e = build(&raw(&[("source.addr", "a:1\nb"), ("target.url", "h:3")])).unwrap_err();
        assert!(e.0.contains("expected host:port, got \"b\""), "{e}");
    }

    #[test]
    fn flags_and_file_validate_with_names() {
        let c = build(&raw(&[("source.addr", "127.0.0.1:6379"), ("target.url", "redis://u:p@h:7000")])).unwrap();
        assert_eq!(
            c.target,
            Endpoint { addr: "h:7000".into(), seeds: vec!["h:7000".into()], user: Some("u".into()), password: Some("p".into()), tls: None }
        );
        let c = build(&raw(&[("source.addr", "a:1"), ("target.url", "redis://h:1,h:2"), ("target.db_map", "0:0, 1:0")])).unwrap();
        assert_eq!(c.target.seeds, ["h:1", "h:2"]);
        assert_eq!(c.db_map.get(&1), Some(&0));
        let raw2 = parse_ini("[target]\nurl = redis://h:1\nurl = redis://h:2\n", Path::new("x")).unwrap();
        assert_eq!(raw2["target.url"], "redis://h:1,h:2");
        let e = build(&raw(&[("source.addr", "nope"), ("target.url", "redis://h:1")])).unwrap_err();
        assert!(e.0.contains("--source") && e.0.contains("source.addr"), "{e}");
        let e = build(&raw(&[("source.addr", "h:1"), ("target.url", "h:2"), ("policy.json", "maybe")])).unwrap_err();
        assert!(e.0.contains("--json") && e.0.contains("auto | json-set | skip"), "{e}");
        assert!(!c.wait_for_source);
        let c = build(&raw(&[("source.addr", "h:1"), ("target.url", "h:2"), ("retry.wait_for_source", "ON")])).unwrap();
        assert!(c.wait_for_source);
        let e = build(&raw(&[("source.addr", "h:1"), ("target.url", "h:2"), ("retry.wait_for_source", "yes")])).unwrap_err();
        assert!(e.0.contains("--wait-for-source (file key retry.wait_for_source)") && e.0.contains("on | off"), "{e}");
        let e = parse_ini("[source]\naddrr = x\n", Path::new("c.ini")).unwrap_err();
        assert!(e.0.contains("c.ini:2") && e.0.contains("source.addrr"), "{e}");
    }

    #[test]
    fn filters_and_limits() {
        let base = [("source.addr", "h:1"), ("target.url", "h:2")];
        let with = |more: &[(&str, &str)]| build(&raw(&[&base[..], more].concat()));
        let c = with(&[]).unwrap();
        assert!(!c.filter.is_active() && c.max_ops_per_s.is_none() && c.max_bytes_per_s.is_none());
        // Repeated lines in the file add up; flags arrive joined the same way.
        let file = parse_ini("[filter]\ninclude = prefix:a:\ninclude = glob:b:*\nexclude = regex:tmp$\ndbs = 0, 2\n", Path::new("f"))
            .unwrap();
        assert_eq!(file["filter.include"], "prefix:a:\nglob:b:*");
        let mut r = raw(&base);
        r.extend(file);
        let c = build(&r).unwrap();
        assert_eq!(c.filter.include.iter().map(|r| r.text()).collect::<Vec<_>>(), ["prefix:a:", "glob:b:*"]);
        assert!(c.filter.passes(2, b"b:1") && !c.filter.passes(1, b"b:1") && !c.filter.passes(0, b"a:tmp"));
        assert_eq!(c.filter.on_flush, OnFlush::Stop);
        let c = with(&[("filter.on_flush", "flush"), ("limits.ops_per_s", "500"), ("limits.bytes_per_s", "1048576")]).unwrap();
        assert_eq!((c.filter.on_flush, c.max_ops_per_s, c.max_bytes_per_s), (OnFlush::Flush, Some(500), Some(1 << 20)));
        // Batches shrink to a tenth of a second of a cap, never below one command or 1 KiB.
        assert_eq!((c.batch_cmds, c.batch_bytes), (50, 104857));
        let c = with(&[("limits.ops_per_s", "5"), ("limits.bytes_per_s", "2048"), ("tuning.batch_cmds", "100")]).unwrap();
        assert_eq!((c.batch_cmds, c.batch_bytes), (1, 1024));
        let c = with(&[("limits.ops_per_s", "1000000"), ("limits.bytes_per_s", "1000000000")]).unwrap();
        assert_eq!((c.batch_cmds, c.batch_bytes), (2000, 1 << 20));
        // Errors name the flag, the file key and the bad pattern.
        for (k, v, want) in [
            ("filter.include", "prefix:a:\nuser:[a-z", "--include (file key filter.include): \"user:[a-z\" is not a valid glob"),
            ("filter.exclude", "regex:(", "--exclude (file key filter.exclude): \"regex:(\" is not a valid regex"),
            ("filter.dbs", "0,one", "--dbs (file key filter.dbs): \"one\" is not a db number"),
            ("filter.on_flush", "maybe", "--on-flush (file key filter.on_flush): expected one of stop | flush"),
            ("limits.ops_per_s", "0", "--max-ops-per-s (file key limits.ops_per_s): expected a whole number >= 1"),
            ("limits.bytes_per_s", "10MB", "--max-bytes-per-s (file key limits.bytes_per_s): expected a whole number >= 1024"),
        ] {
            let e = with(&[(k, v)]).unwrap_err();
            assert!(e.0.contains(want), "{k}={v}: {e}");
        }
    }

    #[test]
    fn tls_settings_are_checked_and_named() {
        let base = [("source.addr", "127.0.0.1:6379"), ("target.url", "rediss://u:p@h:7000,h:7001")];
        let (ep, tls) = parse_redis_url("rediss://u:p@h:7000,h:7001").unwrap();
        assert!(tls);
        assert_eq!((ep.seeds.as_slice(), ep.user.as_deref()), (["h:7000".to_string(), "h:7001".to_string()].as_slice(), Some("u")));
        assert!(!parse_redis_url("redis://h:1").unwrap().1);
        // TLS settings with TLS off are an error, naming the key and what turns TLS on.
        let e = build(&raw(&[("source.addr", "a:1"), ("target.url", "redis://h:1"), ("target.tls_ca", "/x")])).unwrap_err();
        assert!(e.0.contains("--target-tls-ca") && e.0.contains("rediss://"), "{e}");
        let e = build(&raw(&[("source.addr", "a:1"), ("source.tls_server_name", "db"), ("target.url", "h:1")])).unwrap_err();
        assert!(e.0.contains("--source-tls-server-name") && e.0.contains("--source-tls"), "{e}");
        let e = build(&raw(&[("source.addr", "a:1"), ("source.tls", "maybe"), ("target.url", "h:1")])).unwrap_err();
        assert!(e.0.contains("--source-tls") && e.0.contains("on | off"), "{e}");
        // A certificate without its key, a missing file: the flag and the file are named.
        let mut r = raw(&base);
        r.insert("target.tls_cert".into(), "/nonexistent/client.pem".into());
        let e = build(&r).unwrap_err();
        assert!(e.0.contains("--target-tls-cert") && e.0.contains("--target-tls-key"), "{e}");
        let mut r = raw(&base);
        r.insert("source.tls".into(), "on".into());
        r.insert("source.tls_ca".into(), "/nonexistent/ca.pem".into());
        let e = build(&r).unwrap_err();
        assert!(e.0.contains("--source-tls-ca") && e.0.contains("/nonexistent/ca.pem"), "{e}");
        // A file that is not PEM.
        let dir = std::env::temp_dir().join(format!("df2redis-config-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let mut r = raw(&base);
        r.insert("target.tls_ca".into(), junk.display().to_string());
        let e = build(&r).unwrap_err();
        assert!(e.0.contains("--target-tls-ca") && e.0.contains("holds no certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    /// config.ini.example documents every key, and uncommented it is a valid file.
    #[test]
    fn example_documents_every_key_and_parses() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.ini.example")).unwrap();
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix(';') {
                Some(rest) if rest.contains('=') && !rest.starts_with(' ') => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let raw = parse_ini(&uncommented, Path::new("config.ini.example")).unwrap();
        for (key, flag, _) in KEYS {
            assert!(raw.contains_key(*key), "config.ini.example lacks {key}");
            assert!(text.contains(flag), "config.ini.example does not name {flag}");
        }
        // The uncommented example (all defaults plus the sample addresses) is a valid config.
        let mut raw = raw;
        raw.retain(|_, v| !v.is_empty());
        raw.remove("threads.pin_flows");
        raw.remove("threads.pin_writers");
        build(&raw).unwrap();
    }
}
