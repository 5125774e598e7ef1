//! Processes for the benchmark: spawning children that die with the bench (PR_SET_PDEATHSIG),
//! reaping them with `wait4` to get their exact CPU time and peak RSS, stopping them by PID,
//! and reading any process's CPU time from /proc. Plain FFI to libc (always linked), as
//! df2redis's own signal code does, instead of a dependency.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Timeval {
    sec: i64,
    usec: i64,
}

/// `struct rusage` of Linux (64-bit): two timevals, then 14 longs starting with ru_maxrss.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct RawRusage {
    utime: Timeval,
    stime: Timeval,
    maxrss_kb: i64,
    _rest: [i64; 13],
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
    fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut RawRusage) -> i32;
    fn prctl(option: i32, ...) -> i32;
    fn sysconf(name: i32) -> i64;
    fn getppid() -> i32;
    fn _exit(code: i32) -> !;
}

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;
const WNOHANG: i32 = 1;
const PR_SET_PDEATHSIG: i32 = 1;
const SC_CLK_TCK: i32 = 2;

/// How a reaped child ended, with what `wait4` reported about it.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    /// `Some(code)` for a normal exit, `None` when a signal ended it.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// User + system CPU seconds of the child.
    pub cpu_s: f64,
    /// Peak resident set size, bytes: the last VmHWM read from /proc while it ran (polled
    /// every 5 ms by [`Proc::wait`]; a run of a few ms may be under-reported). Not ru_maxrss: Linux carries the pre-exec high-water
    /// mark over exec, and a child forked from the bench starts as big as the bench (which
    /// holds the whole dataset).
    pub peak_rss: u64,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (_, Some(s)) => format!("killed by signal {s}"),
            _ => "unknown status".into(),
        }
    }
}

/// A child process owned by the bench: killed (SIGKILL, by PID) and reaped on drop unless it
/// was reaped before, and killed by the kernel if the bench itself dies.
pub struct Proc {
    pub name: String,
    child: Child,
    reaped: Option<Exit>,
    /// Largest VmHWM seen, bytes.
    hwm: u64,
    /// With [`Proc::track_threads`]: per thread id, its name and the CPU seconds last seen.
    threads: Option<HashMap<u64, (String, f64)>>,
    polls: u64,
}

/// Spawn `cmd` (stdin, stdout and stderr as given) as a [`Proc`]. Must be called from the
/// main thread: PR_SET_PDEATHSIG fires when the *thread* that forked exits.
pub fn spawn(name: &str, mut cmd: Command) -> std::io::Result<Proc> {
    let parent = std::process::id() as i32;
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            prctl(PR_SET_PDEATHSIG, SIGKILL as u64);
            if getppid() != parent {
                _exit(1);
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    Ok(Proc { name: name.to_string(), child, reaped: None, hwm: 0, threads: None, polls: 0 })
}

/// A command with stdin from /dev/null and stdout/stderr to files (truncated).
pub fn command_logged(program: &Path, out: &Path, err: &Path) -> std::io::Result<Command> {
    let mut c = Command::new(program);
    c.stdin(Stdio::null()).stdout(File::create(out)?).stderr(File::create(err)?);
    Ok(c)
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sample the CPU time of each of its threads while [`Proc::wait`] polls (every 60 ms), so
    /// that [`Proc::thread_cpu_s`] can say where its time went.
    pub fn track_threads(&mut self) {
        self.threads = Some(HashMap::new());
    }

    /// CPU seconds per thread name with its numeric suffix dropped (`flow-0`..`flow-3` ->
    /// `flow-*`), as last sampled (a thread's final ~60 ms may be missing).
    pub fn thread_cpu_s(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (name, cpu) in self.threads.iter().flat_map(|t| t.values()) {
            let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
            let key = if base.len() < name.len() { format!("{base}*") } else { name.clone() };
            *out.entry(key).or_insert(0.0) += cpu;
        }
        out
    }

    fn sample_threads(&mut self) {
        let pid = self.pid();
        let Some(map) = self.threads.as_mut() else { return };
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return };
        for t in dir.flatten() {
            let Ok(tid) = t.file_name().to_string_lossy().parse::<u64>() else { continue };
            let p = t.path();
            let Some(cpu) = proc_cpu_s(&p.join("stat").to_string_lossy()) else { continue };
            let e = map.entry(tid).or_insert_with(|| {
                (std::fs::read_to_string(p.join("comm")).unwrap_or_default().trim().to_string(), 0.0)
            });
            e.1 = cpu;
        }
    }

    /// CPU seconds so far (from /proc; only while it runs).
    pub fn cpu_s(&self) -> Option<f64> {
        if self.reaped.is_some() {
            return None;
        }
        proc_cpu_s(&format!("/proc/{}/stat", self.pid()))
    }

    /// Reap it if it ended (non-blocking); before that, note its VmHWM.
    pub fn try_reap(&mut self) -> Option<Exit> {
        if let Some(e) = self.reaped {
            return Some(e);
        }
        self.hwm = self.hwm.max(vm_hwm(self.pid()));
        if self.polls % 12 == 0 {
            self.sample_threads();
        }
        self.polls += 1;
        let mut status = 0i32;
        let mut ru = RawRusage::default();
        // SAFETY: wait4 writes an int and a struct rusage of the declared layout.
        let r = unsafe { wait4(self.pid(), &mut status, WNOHANG, &mut ru) };
        if r == self.pid() {
            let e = exit_of(status, &ru, self.hwm);
            self.reaped = Some(e);
            Some(e)
        } else if r < 0 {
            // Not our child any more (cannot happen unless reaped elsewhere).
            let e = Exit { code: None, signal: None, cpu_s: 0.0, peak_rss: 0 };
            self.reaped = Some(e);
            Some(e)
        } else {
            None
        }
    }

    /// Wait for it to end, polling every 5 ms (VmHWM each time, thread CPU every 60 ms); past
    /// `timeout` it is killed (SIGKILL) and `Err` says so.
    pub fn wait(&mut self, timeout: Duration) -> Result<Exit, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_reap() {
                return Ok(e);
            }
            if Instant::now() >= deadline {
                self.signal(SIGKILL);
                let e = self.wait_blocking();
                return Err(format!("{} ran longer than {:?} and was killed ({})", self.name, timeout, e.describe()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait_blocking(&mut self) -> Exit {
        if let Some(e) = self.reaped {
            return e;
        }
        let mut status = 0i32;
        let mut ru = RawRusage::default();
        // SAFETY: as in try_reap.
        let r = unsafe { wait4(self.pid(), &mut status, 0, &mut ru) };
        let e = if r == self.pid() {
            exit_of(status, &ru, self.hwm)
        } else {
            Exit { code: None, signal: None, cpu_s: 0.0, peak_rss: 0 }
        };
        self.reaped = Some(e);
        e
    }

    pub fn signal(&self, sig: i32) {
        if self.reaped.is_none() {
            // SAFETY: kill(2) on our own unreaped child's PID (it cannot be reused before we
            // reap it).
            unsafe {
                kill(self.pid(), sig);
            }
        }
    }

    /// SIGTERM, then SIGKILL if it has not ended within `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Exit {
        self.signal(SIGTERM);
        match self.wait(grace) {
            Ok(e) => e,
            Err(_) => self.reaped.expect("reaped after the kill"),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            self.signal(SIGKILL);
            self.wait_blocking();
        }
    }
}

/// VmHWM of a live process, bytes (0 when unknown).
fn vm_hwm(pid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn exit_of(status: i32, ru: &RawRusage, hwm: u64) -> Exit {
    let sig = status & 0x7f;
    let tv = |t: Timeval| t.sec as f64 + t.usec as f64 / 1e6;
    Exit {
        code: (sig == 0).then_some((status >> 8) & 0xff),
        signal: (sig != 0).then_some(sig),
        cpu_s: tv(ru.utime) + tv(ru.stime),
        peak_rss: if hwm > 0 { hwm } else { ru.maxrss_kb.max(0) as u64 * 1024 },
    }
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { sysconf(SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime (seconds) from a /proc/.../stat file.
pub fn proc_cpu_s(path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clk_tck())
}

/// CPU seconds of this process (the in-process emulator, the generator and the harness).
pub fn self_cpu_s() -> f64 {
    proc_cpu_s("/proc/self/stat").unwrap_or(0.0)
}

/// CPU seconds the whole machine spent busy (all CPUs; /proc/stat: everything but idle and
/// iowait). The part not used by the measured processes is interference from elsewhere.
pub fn system_busy_s() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else { return 0.0 };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle) as f64 / clk_tck()
}

/// A free TCP port on 127.0.0.1 (bound and released; the caller retries if it is taken by
/// the time it is used).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// How many CPUs the bench was started with (the first call decides: `main` makes it before
/// `--redis-cpu` narrows the bench's own CPUs to the ones Redis does not use).
pub fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}
