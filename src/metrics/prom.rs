//! `/metrics`: the [`Report`] in the Prometheus text exposition format (version 0.0.4).
//!
//! Counters are process totals (every session of the process), so they only grow; gauges
//! describe the running session. Per-flow series carry a `flow` label. Rates are left to
//! PromQL (`rate(df2redis_flow_commands_applied_total[1m])`); the two `*_per_second` gauges
//! exist for dashboards without it and for parity with `/status`.

use std::collections::BTreeMap;
use std::fmt::{Display, Write};

use super::{Phase, Report};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value as the format wants it: backslash, double quote and newline escaped.
pub fn label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value: integers as they are, floats in decimal, infinities as `+Inf`/`-Inf`.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", label_value(v))).collect();
            let _ = write!(self.0, "{{{}}}", l.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A family with one series per flow, from `get` (skipped where it gives `None`).
    fn per_flow<T: Display>(&mut self, r: &Report, name: &str, kind: &str, help: &str, get: impl Fn(&super::FlowReport) -> Option<T>) {
        self.family(name, kind, help);
        for (i, f) in r.flows.iter().enumerate() {
            if let Some(v) = get(f) {
                self.sample(name, &[("flow", &i.to_string())], v);
            }
        }
    }

    fn by_label(&mut self, name: &str, kind: &str, help: &str, label: &str, m: &BTreeMap<String, u64>) {
        self.family(name, kind, help);
        for (k, v) in m {
            self.sample(name, &[(label, k)], v);
        }
    }
}

pub fn render(r: &Report) -> String {
    let mut o = Out(String::with_capacity(4096));
    o.family("df2redis_info", "gauge", "Always 1; the version of df2redis in a label.");
    o.sample("df2redis_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);
    o.family("df2redis_phase", "gauge", "1 for the phase the process is in, 0 for the others.");
    for p in Phase::ALL {
        o.sample("df2redis_phase", &[("phase", p.name())], u8::from(p == r.phase));
    }
    o.one("df2redis_phase_seconds", "gauge", "Seconds since the current phase began.", float(r.phase_for.as_secs_f64()));
    o.one("df2redis_uptime_seconds", "gauge", "Seconds since the process started.", float(r.uptime.as_secs_f64()));
    o.one("df2redis_sessions_total", "counter", "Replication sessions started.", r.sessions);

    o.per_flow(r, "df2redis_flow_keys_total", "counter", "Snapshot keys decoded.", |f| Some(f.keys));
    o.per_flow(r, "df2redis_flow_received_bytes_total", "counter", "Bytes received from the master (as sent, compressed).", |f| Some(f.bytes));
    o.per_flow(r, "df2redis_flow_journal_records_total", "counter", "Stable-sync journal records decoded.", |f| Some(f.records));
    o.per_flow(r, "df2redis_flow_commands_applied_total", "counter", "Commands the target acknowledged.", |f| Some(f.commands));
    o.per_flow(r, "df2redis_flow_received_lsn", "gauge", "Next LSN the flow's reader will decode (running session).", |f| {
        f.now.as_ref().map(|n| n.received_lsn)
    });
    o.per_flow(r, "df2redis_flow_applied_lsn", "gauge", "Next LSN after the last record the target applied: what the ACK carries (running session).", |f| {
        f.now.as_ref().map(|n| n.applied_lsn)
    });
    o.per_flow(r, "df2redis_flow_lag_records", "gauge", "Journal records decoded and not yet applied (stable sync).", |f| {
        f.now.as_ref().and_then(|n| n.lag_records())
    });
    o.per_flow(r, "df2redis_flow_lag_seconds", "gauge", "Age of the oldest record read from the master and not yet applied, 0 when none is pending (stable sync).", |f| {
        f.now.as_ref().and_then(|n| n.lag_ms).map(|ms| float(ms as f64 / 1e3))
    });
    o.per_flow(r, "df2redis_flow_fullsync_done", "gauge", "1 once the flow's snapshot is complete (FULLSYNC_END).", |f| {
        f.now.as_ref().map(|n| u8::from(n.fullsync_done))
    });

    o.one("df2redis_ops_per_second", "gauge", "Commands applied per second over the last 10 s.", float(r.ops_per_sec));
    o.one("df2redis_received_bytes_per_second", "gauge", "Bytes received from the master per second over the last 10 s.", float(r.bytes_per_sec));
    if let Some(p) = &r.full_sync {
        if let Some(k) = p.master_keys {
            o.one("df2redis_master_keys", "gauge", "Keys on the master (all dbs) when the session started.", k);
        }
        if let Some(m) = p.master_used_memory {
            o.one("df2redis_master_used_memory_bytes", "gauge", "The master's used_memory when the session started.", m);
        }
        if let Some(ratio) = p.ratio {
            o.one("df2redis_fullsync_progress_ratio", "gauge", "Full sync done, 0 to 1 (keys decoded over the master's key count).", float(ratio));
        }
        if let Some(eta) = p.eta {
            o.one("df2redis_fullsync_eta_seconds", "gauge", "Estimated seconds left in the full sync, at its average rate.", float(eta.as_secs_f64()));
        }
    }

    let name = "df2redis_pipeline_latency_seconds";
    o.family(name, "histogram", "Round trip of a pipeline to the target: from its send to the reply of its last command.");
    for (le, c) in &r.latency.buckets {
        o.sample(&format!("{name}_bucket"), &[("le", &float(*le))], c);
    }
    o.sample(&format!("{name}_bucket"), &[("le", "+Inf")], r.latency.count);
    o.sample(&format!("{name}_sum"), &[], float(r.latency.sum_seconds));
    o.sample(&format!("{name}_count"), &[], r.latency.count);

    o.by_label("df2redis_skipped_total", "counter", "Keys or records not written, by reason (policies for what Redis cannot hold).", "reason", &r.skipped);
    o.by_label("df2redis_altered_total", "counter", "Keys or records written in a changed form, by reason.", "reason", &r.altered);
    o.one("df2redis_expired_on_arrival_total", "counter", "Snapshot keys whose TTL had passed when they arrived (not written).", r.expired_on_arrival);
    o.family("df2redis_errors_total", "counter", "Errors by kind: commands the target rejected (skipped by policy on_reject = skip), sessions ended by an error.");
    o.sample("df2redis_errors_total", &[("kind", "target_rejected")], r.rejected);
    o.sample("df2redis_errors_total", &[("kind", "session_failed")], r.sessions_failed);
    o.by_label("df2redis_node_writes_total", "counter", "Commands acknowledged per Redis Cluster master node.", "node", &r.node_writes);
    o.family("df2redis_redirects_total", "counter", "Cluster redirects followed, by kind.");
    o.sample("df2redis_redirects_total", &[("kind", "moved")], r.redirects.0);
    o.sample("df2redis_redirects_total", &[("kind", "ask")], r.redirects.1);
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_floats() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(0.00025), "0.00025");
        assert_eq!(float(10.0), "10");
    }

    #[test]
    fn every_sample_follows_its_family() {
        let r = Report { skipped: [("odd \"reason\"".to_string(), 1)].into(), ..Default::default() };
        let text = render(&r);
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap().to_string();
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            assert!(line.starts_with(&family), "{line} outside family {family}");
        }
        assert!(text.contains("df2redis_skipped_total{reason=\"odd \\\"reason\\\"\"} 1\n"), "{text}");
        assert!(text.contains("df2redis_phase{phase=\"connecting\"} 1\n"), "{text}");
    }
}
