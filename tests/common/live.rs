//! A live journal of non-idempotent commands on the emulator, and waiting on its ACKs: a
//! record applied twice (an extra INCR, a duplicated list element) or lost shows up as a
//! difference between the target and the master.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use df2redis::emulator::Emulator;

/// Keep writing INCR, LPUSH, APPEND and XADD until `stop`; returns how many were written.
pub fn journal_writer(emu: Arc<Emulator>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let k = n % 97;
            let v = format!("v{n}");
            let op: Vec<String> = match n % 4 {
                0 => vec!["INCR".into(), format!("ctr:{k}")],
                1 => vec!["LPUSH".into(), format!("list:{}", k % 13), v],
                2 => vec!["APPEND".into(), format!("str:{}", k % 11), v],
                _ => vec!["XADD".into(), format!("stream:{}", k % 7), "*".into(), "n".into(), v],
            };
            let args: Vec<&[u8]> = op.iter().map(|a| a.as_bytes()).collect();
            emu.write(0, &args).unwrap();
            n += 1;
        }
        n
    })
}

/// Wait (polling the emulator's ACK record, bounded) until the flows of its latest session
/// together acknowledged `more` records beyond `from`.
pub fn wait_acked_beyond(emu: &Emulator, from: u64, more: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if emu.acked().iter().sum::<u64>() >= from + more {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// Wait (bounded) until every flow of the emulator's latest session acknowledged something:
/// its end of the full sync is applied (and, with checkpoints, its marker written).
pub fn wait_every_flow_acked(emu: &Emulator, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if emu.acked().iter().all(|&a| a > 0) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}
