//! `/status`: the [`Report`] as one JSON object, for people with `curl | jq` and for scripts
//! that wait for a phase.
//!
//! Written by hand (serde is a test-only dependency): every string goes through
//! [`escape`], numbers are plain decimals, and an unknown or infinite figure is `null`.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{FlowReport, Report};

pub const CONTENT_TYPE: &str = "application/json";

pub use crate::json::string as escape;

/// A JSON number, or `null` when not finite (JSON has no infinities).
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "null".into(), |v| v.to_string())
}

fn map(m: &BTreeMap<String, u64>) -> String {
    let fields: Vec<String> = m.iter().map(|(k, v)| format!("{}:{v}", escape(k))).collect();
    format!("{{{}}}", fields.join(","))
}

fn flow(i: usize, f: &FlowReport) -> String {
    let now = f.now.as_ref();
    format!(
        "{{\"flow\":{i},\"keys\":{},\"bytes\":{},\"records\":{},\"commands\":{},\"received_lsn\":{},\
         \"applied_lsn\":{},\"lag_records\":{},\"lag_ms\":{},\"fullsync_done\":{},\"stable\":{}}}",
        f.keys,
        f.bytes,
        f.records,
        f.commands,
        opt(now.map(|n| n.received_lsn)),
        opt(now.map(|n| n.applied_lsn)),
        opt(now.and_then(|n| n.lag_records())),
        opt(now.and_then(|n| n.lag_ms)),
        opt(now.map(|n| n.fullsync_done)),
        opt(now.map(|n| n.stable)),
    )
}

pub fn render(r: &Report) -> String {
    let mut o = String::with_capacity(2048);
    let sum = |g: fn(&FlowReport) -> u64| r.flows.iter().map(g).sum::<u64>();
    let _ = write!(
        o,
        "{{\"phase\":{},\"phase_seconds\":{},\"uptime_seconds\":{},\"sessions\":{},\"sessions_failed\":{},\
         \"ops_per_sec\":{},\"bytes_per_sec\":{},\
         \"totals\":{{\"keys\":{},\"bytes\":{},\"records\":{},\"commands\":{}}},",
        escape(r.phase.name()),
        num(r.phase_for.as_secs_f64()),
        num(r.uptime.as_secs_f64()),
        r.sessions,
        r.sessions_failed,
        num(r.ops_per_sec),
        num(r.bytes_per_sec),
        sum(|f| f.keys),
        sum(|f| f.bytes),
        sum(|f| f.records),
        sum(|f| f.commands),
    );
    match &r.full_sync {
        None => o.push_str("\"full_sync\":null,"),
        Some(p) => {
            let _ = write!(
                o,
                "\"full_sync\":{{\"keys\":{},\"bytes\":{},\"master_keys\":{},\"master_used_memory\":{},\"progress\":{},\
                 \"eta_seconds\":{}}},",
                p.keys,
                p.bytes,
                opt(p.master_keys),
                opt(p.master_used_memory),
                p.ratio.map_or_else(|| "null".into(), num),
                p.eta.map_or_else(|| "null".into(), |d| num(d.as_secs_f64())),
            );
        }
    }
    let flows: Vec<String> = r.flows.iter().enumerate().map(|(i, f)| flow(i, f)).collect();
    let _ = write!(o, "\"flows\":[{}],", flows.join(","));
    let l = &r.latency;
    let buckets: Vec<String> = l.buckets.iter().map(|(le, c)| format!("{{\"le\":{},\"count\":{c}}}", num(*le))).collect();
    let q = |v: Option<f64>| v.map_or_else(|| "null".into(), num);
    let _ = write!(
        o,
        "\"pipeline_latency\":{{\"count\":{},\"sum_seconds\":{},\"mean_seconds\":{},\"p50_seconds\":{},\
         \"p99_seconds\":{},\"buckets\":[{}]}},",
        l.count,
        num(l.sum_seconds),
        q(l.mean()),
        q(l.quantile(0.5)),
        q(l.quantile(0.99)),
        buckets.join(","),
    );
    let _ = write!(
        o,
        "\"skipped\":{},\"altered\":{},\"expired_on_arrival\":{},\"errors\":{{\"target_rejected\":{},\
         \"sessions_failed\":{}}},\"node_writes\":{},\"redirects\":{{\"moved\":{},\"ask\":{}}}}}",
        map(&r.skipped),
        map(&r.altered),
        r.expired_on_arrival,
        r.rejected,
        r.sessions_failed,
        map(&r.node_writes),
        r.redirects.0,
        r.redirects.1,
    );
    o.push('\n');
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{FlowSnapshot, FullSyncProgress, Phase};

    #[test]
    fn strings_are_escaped() {
        assert_eq!(escape("plain"), "\"plain\"");
        assert_eq!(escape("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(escape("l1\nl2\r\t\u{8}\u{c}"), "\"l1\\nl2\\r\\t\\b\\f\"");
        assert_eq!(escape("\u{0}\u{1f}\u{7f}"), "\"\\u0000\\u001f\u{7f}\"");
        assert_eq!(escape("Größe 🙂"), "\"Größe 🙂\"");
    }

    #[test]
    fn a_report_renders_as_valid_json() {
        let r = Report {
            phase: Phase::FullSync,
            flows: vec![
                FlowReport { keys: 3, now: Some(FlowSnapshot { stable: true, received_lsn: 9, applied_lsn: 7, lag_ms: Some(4), ..Default::default() }), ..Default::default() },
                FlowReport { keys: 1, ..Default::default() },
            ],
            skipped: [("JSON \"document\"\n".to_string(), 2)].into(),
            full_sync: Some(FullSyncProgress { ratio: Some(0.5), eta: Some(std::time::Duration::from_millis(1500)), ..Default::default() }),
            ops_per_sec: f64::NAN,
            ..Default::default()
        };
        let text = render(&r);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(v["phase"], "full_sync");
        assert_eq!(v["totals"]["keys"], 4);
        assert_eq!(v["flows"][0]["lag_records"], 2);
        assert_eq!(v["flows"][0]["lag_ms"], 4);
        assert!(v["flows"][1]["applied_lsn"].is_null());
        assert_eq!(v["skipped"]["JSON \"document\"\n"], 2);
        assert_eq!(v["full_sync"]["eta_seconds"], 1.5);
        assert!(v["ops_per_sec"].is_null());
        assert!(v["pipeline_latency"]["p99_seconds"].is_null());
    }
}
