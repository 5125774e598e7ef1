//! One progress line at a steady cadence: keys, bytes and rates during the full sync, then the
//! lag of each flow (records decoded but not yet applied) during stable sync.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::shared::Shared;

pub fn run(shared: &Shared, every: Duration) {
    let started = Instant::now();
    let mut last = (Instant::now(), 0u64, 0u64);
    loop {
        if shared.stop.receiver().recv_timeout(every).is_err() && shared.stop.is_stopped() {
            return;
        }
        let keys: u64 = shared.flows.iter().map(|f| f.keys.load(Relaxed)).sum();
        let bytes: u64 = shared.flows.iter().map(|f| f.bytes.load(Relaxed)).sum();
        let dt = last.0.elapsed().as_secs_f64().max(1e-3);
        let (kps, mbps) = ((keys - last.1) as f64 / dt, (bytes - last.2) as f64 / dt / 1e6);
        last = (Instant::now(), keys, bytes);
        let stable = shared.flows.iter().all(|f| f.stable.load(Relaxed));
        if !stable {
            let cut = shared.flows.iter().filter(|f| f.fullsync_end.load(Relaxed)).count();
            log::info!(
                "full sync: {keys} keys, {:.1} MB in {:.0} s ({kps:.0} keys/s, {mbps:.1} MB/s); {cut}/{} flows complete",
                bytes as f64 / 1e6,
                started.elapsed().as_secs_f64(),
                shared.flows.len()
            );
        } else {
            let lags: Vec<String> = shared
                .flows
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let rx = f.received_next_lsn.load(Relaxed);
                    let ap = f.applied_next_lsn.load(Relaxed);
                    format!("flow {i} lag {}", rx.saturating_sub(ap))
                })
                .collect();
            let records: u64 = shared.flows.iter().map(|f| f.records.load(Relaxed)).sum();
            log::info!("stable sync: {records} records; {}", lags.join(", "));
        }
    }
}
