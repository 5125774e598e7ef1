//! CPU lists (`0-3`, `0,2,5-7`) and pinning the calling thread to one CPU of a list.
//!
//! Pinning uses `sched_setaffinity(2)` through a two-line FFI declaration rather than a
//! dependency: the call is stable Linux ABI and this is the only place that needs it.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(Vec<usize>);

/// The CPUs this process may run on (from `sched_getaffinity`).
pub fn available_cpus() -> Vec<usize> {
    let mut set = [0u8; CPU_SET_BYTES];
    // SAFETY: the buffer is CPU_SET_BYTES long, as passed.
    let rc = unsafe { sched_getaffinity(0, CPU_SET_BYTES, set.as_mut_ptr()) };
    if rc != 0 {
        return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    }
    (0..CPU_SET_BYTES * 8).filter(|&c| set[c / 8] & (1 << (c % 8)) != 0).collect()
}

impl CpuList {
    /// Parse a list; every CPU must be one this process may run on.
    pub fn parse(s: &str) -> Result<CpuList, String> {
        let avail = available_cpus();
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) else {
                return Err(format!("{part:?} is not a CPU number or range (expected e.g. 0-3 or 0,2)"));
            };
            if a > b {
                return Err(format!("range {part:?} runs backwards"));
            }
            for c in a..=b {
                if !avail.contains(&c) {
                    return Err(format!("CPU {c} is not available to this process (available: {})", Self(avail)));
                }
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        if out.is_empty() {
            return Err("empty CPU list".into());
        }
        Ok(CpuList(out))
    }

    /// The CPU for the `i`-th thread of a group (round-robin over the list).
    pub fn cpu_for(&self, i: usize) -> usize {
        self.0[i % self.0.len()]
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s: Vec<String> = self.0.iter().map(|c| c.to_string()).collect();
        f.write_str(&s.join(","))
    }
}

const CPU_SET_BYTES: usize = 128; // glibc's cpu_set_t: 1024 CPUs

extern "C" {
    fn sched_setaffinity(pid: i32, cpusetsize: usize, mask: *const u8) -> i32;
    fn sched_getaffinity(pid: i32, cpusetsize: usize, mask: *mut u8) -> i32;
}

/// Pin the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    if cpu >= CPU_SET_BYTES * 8 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("CPU {cpu} out of range")));
    }
    CpuMask::of(&[cpu]).apply()
}

/// A set of CPUs in the form `sched_setaffinity` takes (CPUs beyond 1023 are left out).
#[derive(Clone, Copy)]
pub struct CpuMask([u8; CPU_SET_BYTES]);

impl CpuMask {
    pub fn of(cpus: &[usize]) -> CpuMask {
        let mut set = [0u8; CPU_SET_BYTES];
        for &c in cpus.iter().filter(|&&c| c < CPU_SET_BYTES * 8) {
            set[c / 8] |= 1 << (c % 8);
        }
        CpuMask(set)
    }

    /// Restrict the calling thread, and the threads and processes it starts from now on, to
    /// these CPUs. One system call, so it may also run between fork and exec.
    pub fn apply(&self) -> std::io::Result<()> {
        // SAFETY: pid 0 is the calling thread; the mask is CPU_SET_BYTES long.
        if unsafe { sched_setaffinity(0, CPU_SET_BYTES, self.0.as_ptr()) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_rejects_unknown_cpus() {
        let l = CpuList::parse("0").unwrap();
        assert_eq!(l.cpu_for(3), 0);
        assert!(CpuList::parse("0-").is_err());
        assert!(CpuList::parse("3-1").is_err());
        let e = CpuList::parse("4096").unwrap_err();
        assert!(e.contains("not available"), "{e}");
        pin_current_thread(available_cpus()[0]).unwrap();
    }
}
