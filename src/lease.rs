//! One process per run name: a lease key in the target.
//!
//! Two processes with the same name would write the same checkpoint markers and close each
//! other's writers. So a run first takes `df2redis:lease:<name>` (`SET NX PX`, db 0; on a
//! cluster on the master of its slot), holding `host=<h> pid=<p> started=<unix s> token=<t>`,
//! and a thread renews it every [`RENEW_EVERY`] (a script that extends it only while it still
//! holds this run's token). A clean exit deletes it the same way. A second process finding it
//! refuses to start (exit 2), naming the holder.
//!
//! A run killed with -9 leaves its lease, which expires [`TTL`] after the last renewal. A
//! restart on the same host need not wait: when the holder's host is this host and its pid is
//! not a live process here (or is this very process, as in a restarted container whose
//! program is pid 1 again), the holder is gone and the lease is taken over. Across hosts
//! nothing can be checked, so a restart elsewhere waits for the expiry.
//!
//! If the lease is lost all the same (deleted by `cleanup --all`, or expired through a stall
//! longer than the TTL), the renewal takes it again when it is free; when another process
//! holds it, this run stops as on SIGTERM: two writers under one name must not go on.

use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Sender};

use crate::checkpoint::LEASE_PREFIX;
use crate::config::Config;
use crate::target::resp::Reply;
use crate::target::{Target, TargetError};

/// How long a lease lives without renewal.
pub const TTL: Duration = Duration::from_secs(15);
/// How often it is renewed: three renewals may fail before it expires.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

/// Extend the lease only while it holds our token.
const RENEW: &[u8] = b"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/// Delete the lease only while it holds our token.
const RELEASE: &[u8] = b"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
/// Replace a dead holder's lease, only if it is still that holder's.
const TAKE_OVER: &[u8] =
    b"if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 else return 0 end";

/// Why a lease could not be taken.
#[derive(Debug)]
pub enum LeaseError {
    /// Another live run holds the name: what its lease says.
    Held { name: String, holder: String },
    /// The target could not be reached at all.
    Unreachable(TargetError),
    Target(TargetError),
}

impl std::fmt::Display for LeaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseError::Held { name, holder } => write!(
                f,
                "another df2redis runs under the name {name:?} on this target ({holder}; lease key {LEASE_PREFIX}{name}). \
                 Two runs with one name would overwrite each other's checkpoints: stop it first, or give this run \
                 another --name. A run killed with -9 on another host frees the name {} s after it died",
                TTL.as_secs()
            ),
            LeaseError::Unreachable(e) => write!(f, "{e}"),
            LeaseError::Target(e) => write!(f, "taking the run's lease: {e}"),
        }
    }
}

impl From<TargetError> for LeaseError {
    fn from(e: TargetError) -> Self {
        LeaseError::Target(e)
    }
}

/// A held lease, renewed by its thread until dropped (then released).
pub struct Lease {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What a lease key holds.
struct Holder {
    host: String,
    pid: u32,
}

impl Holder {
    fn parse(v: &str) -> Option<Holder> {
        let field = |k: &str| v.split(' ').find_map(|f| f.strip_prefix(k)?.strip_prefix('='));
        Some(Holder { host: field("host")?.to_string(), pid: field("pid")?.parse().ok()? })
    }

    /// Whether this holder is certainly gone: it ran on this host and its pid is not a live
    /// process here (a zombie is dead too), or it is our own pid (a restarted container).
    fn is_gone(&self) -> bool {
        if self.host != hostname() {
            return false;
        }
        if self.pid == std::process::id() {
            return true;
        }
        if !std::path::Path::new("/proc/self").exists() {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Err(_) => true,
            // `pid (comm) state ...`: the state follows the last ')'.
            Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && !h.contains(' '))
        .unwrap_or_else(|| "unknown".into())
}

pub fn lease_key(name: &str) -> Vec<u8> {
    format!("{LEASE_PREFIX}{name}").into_bytes()
}

/// Who holds run `name`'s lease on `target`, if anyone.
pub fn holder(target: &mut Target, name: &str) -> Result<Option<String>, TargetError> {
    let key = lease_key(name);
    match target.query_key(&key, &[b"GET", &key])? {
        Reply::Bulk(Some(v)) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
        _ => Ok(None),
    }
}

/// Whether the lease value `v` names a holder that is certainly gone (see [`Holder::is_gone`]).
pub fn holder_is_gone(v: &str) -> bool {
    Holder::parse(v).is_some_and(|h| h.is_gone())
}

fn eval(target: &mut Target, script: &[u8], key: &[u8], args: &[&[u8]]) -> Result<Reply, TargetError> {
    let mut argv: Vec<&[u8]> = vec![b"EVAL", script, b"1", key];
    argv.extend_from_slice(args);
    target.query_key(key, &argv)
}

/// Try once to take the lease `key` with `value`: `Err` with the holder's value when another
/// live process holds it.
fn try_take(target: &mut Target, key: &[u8], value: &str) -> Result<Result<(), String>, TargetError> {
    let ttl = TTL.as_millis().to_string();
    match target.query_key(key, &[b"SET", key, value.as_bytes(), b"NX", b"PX", ttl.as_bytes()])? {
        Reply::Status(_) => return Ok(Ok(())),
        Reply::Error(error) => {
            return Err(TargetError::Rejected { index: 0, command: format!("SET {} ... NX PX", String::from_utf8_lossy(key)), error, more: 0 })
        }
        _ => {}
    }
    let key_str = String::from_utf8_lossy(key).into_owned();
    let Some(old) = holder_of_key(target, key)? else {
        // Expired between the two commands: try again on the next call.
        return Ok(Err(format!("{key_str} changed hands while being taken")));
    };
    if holder_is_gone(&old) {
        if let Reply::Int(1) = eval(target, TAKE_OVER, key, &[old.as_bytes(), value.as_bytes(), ttl.as_bytes()])? {
            log::warn!("took over the lease {key_str} of a run that is no longer alive ({old})");
            return Ok(Ok(()));
        }
    }
    Ok(Err(old))
}

fn holder_of_key(target: &mut Target, key: &[u8]) -> Result<Option<String>, TargetError> {
    match target.query_key(key, &[b"GET", key])? {
        Reply::Bulk(Some(v)) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
        _ => Ok(None),
    }
}

/// Take the lease of `cfg.name` on the target, and start renewing it.
pub fn acquire(cfg: &Config) -> Result<Lease, LeaseError> {
    let connect = || Target::connect(&cfg.target.seeds, cfg.target.auth(), cfg.target.tls());
    let mut target = connect().map_err(LeaseError::Unreachable)?;
    let key = lease_key(&cfg.name);
    let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let token = format!("{:x}{:08x}", started.as_nanos(), std::process::id());
    let value = format!("host={} pid={} started={} token={token}", hostname(), std::process::id(), started.as_secs());
    // Twice: the first attempt may lose a race with an expiry.
    let mut last = String::new();
    for _ in 0..2 {
        match try_take(&mut target, &key, &value)? {
            Ok(()) => {
                log::info!("run name {:?}: lease {} taken ({} s, renewed every {} s)", cfg.name, String::from_utf8_lossy(&key), TTL.as_secs(), RENEW_EVERY.as_secs());
                let (tx, rx) = bounded::<()>(0);
                let cfg = cfg.clone();
                let thread = std::thread::Builder::new()
                    .name("lease".into())
                    .spawn(move || renew(&cfg, target, &key, &value, &rx))
                    .map_err(|e| LeaseError::Target(TargetError::Io { addr: String::new(), error: e }))?;
                return Ok(Lease { stop: Some(tx), thread: Some(thread) });
            }
            Err(holder) => last = holder,
        }
    }
    Err(LeaseError::Held { name: cfg.name.clone(), holder: last })
}

/// The renewal loop: until `stop` is closed, then release.
fn renew(cfg: &Config, target: Target, key: &[u8], value: &str, stop: &crossbeam_channel::Receiver<()>) {
    let key_str = String::from_utf8_lossy(key).into_owned();
    let ttl = TTL.as_millis().to_string();
    let mut conn = Some(target);
    let mut next = Instant::now() + RENEW_EVERY;
    // Until the sender is dropped (then release).
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_deadline(next) {
        next = Instant::now() + RENEW_EVERY;
        if conn.is_none() {
            conn = Target::connect(&cfg.target.seeds, cfg.target.auth(), cfg.target.tls())
                .map_err(|e| log::warn!("lease {key_str}: reconnecting to renew it: {e}"))
                .ok();
        }
        let Some(t) = conn.as_mut() else { continue };
        match eval(t, RENEW, key, &[value.as_bytes(), ttl.as_bytes()]) {
            Ok(Reply::Int(1)) => {}
            Ok(_) => match try_take(t, key, value) {
                Ok(Ok(())) => log::warn!("lease {key_str} had been lost (deleted, or expired through a stall): taken again"),
                Ok(Err(holder)) => {
                    log::error!("lease {key_str} is now held by another process ({holder}): stopping this run");
                    crate::signals::request_stop_lease_lost();
                    return;
                }
                Err(e) => {
                    log::warn!("lease {key_str}: {e}");
                    conn = None;
                }
            },
            Err(e) => {
                log::warn!("lease {key_str}: renewing it: {e}");
                conn = None;
            }
        }
    }
    if conn.is_none() {
        conn = Target::connect(&cfg.target.seeds, cfg.target.auth(), cfg.target.tls()).ok();
    }
    match conn.as_mut().map(|t| eval(t, RELEASE, key, &[value.as_bytes()])) {
        Some(Ok(_)) => log::info!("lease {key_str} released"),
        Some(Err(e)) => log::warn!("lease {key_str}: releasing it: {e} (it expires by itself in {} s)", TTL.as_secs()),
        None => log::warn!("lease {key_str}: the target cannot be reached to release it (it expires by itself in {} s)", TTL.as_secs()),
    }
}

impl Drop for Lease {
    /// Stop renewing and release the lease (waits for the release: a clean exit leaves none).
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
