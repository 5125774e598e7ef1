//! Metrics: `df2redis replicate --metrics-addr` against the emulator and a real
//! redis-server. `/metrics` must parse as Prometheus text (checked strictly here, line by
//! line) and its counters must equal what the test wrote; `/status` must go through the
//! phases of the run. Plus the emulator's INFO figures the full-sync estimate relies on.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::redis_server::{free_port, RedisServer};
use common::run::{df2redis, terminate, text};
use df2redis::emulator::{datasets, Config, Emulator, Entry, Value};
use df2redis::protocol::rdb_type;

// ---------------------------------------------------------------------------------------------
// HTTP, by hand: what a scraper sends.

struct HttpResponse {
    status: u16,
    headers: String,
    body: String,
}

fn http(addr: &str, request: &str) -> Result<HttpResponse, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let raw = String::from_utf8(raw).map_err(|e| e.to_string())?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(|| format!("no end of headers in {raw:?}"))?;
    let status = head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad status line in {head:?}"))?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
    if len != body.len() && !request.starts_with("HEAD") {
        return Err(format!("Content-Length {len} but {} body bytes", body.len()));
    }
    Ok(HttpResponse { status, headers: head.to_string(), body: body.to_string() })
}

fn get(addr: &str, path: &str) -> Result<HttpResponse, String> {
    http(addr, &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: df2redis-test\r\n\r\n"))
}

/// Poll `f` until it gives `Some`, or fail after `within` saying what was awaited.
fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Result<Option<T>, String>) -> T {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    loop {
        match f() {
            Ok(Some(v)) => return v,
            Ok(None) => last.clear(),
            Err(e) => last = e,
        }
        assert!(Instant::now() < deadline, "waited {within:?} for {what}; last error: {last}");
        std::thread::sleep(Duration::from_millis(20)); // a polling interval, not a synchronization
    }
}

// ---------------------------------------------------------------------------------------------
// The Prometheus text format, parsed strictly.

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || (colon && c == b':'))
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || (colon && c == b':'))
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|_| format!("bad value {s:?}")),
    }
}

/// `{a="x",b="y\"z"}` -> labels; returns the rest of the line after `}`.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("expected {")?;
    if let Some(r) = rest.strip_prefix('}') {
        return Ok((labels, r));
    }
    loop {
        let eq = rest.find('=').ok_or_else(|| format!("no = in labels {s:?}"))?;
        let name = &rest[..eq];
        if !is_name(name, false) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..].strip_prefix('"').ok_or_else(|| format!("label {name} value not quoted"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated label value in {s:?}")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in {s:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice in {s:?}"));
        }
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        rest = rest.strip_prefix(',').ok_or_else(|| format!("expected , or }} in {s:?}"))?;
    }
}

/// Every line must be a HELP, a TYPE or a sample `name{labels} value`; every sample must
/// belong to a family declared before it, families must not interleave, series must be
/// unique, counters must end in `_total`, histograms must be cumulative with `+Inf` = count.
fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    if !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps = BTreeSet::new();
    let mut finished = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut seen = BTreeSet::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _help) = rest.split_once(' ').ok_or_else(|| at("HELP without text".into()))?;
            if !is_name(name, true) || !helps.insert(name.to_string()) {
                return Err(at("bad or repeated HELP".into()));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| at("TYPE without a type".into()))?;
            if !is_name(name, true) || !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at("bad TYPE".into()));
            }
            if types.insert(name.to_string(), kind.to_string()).is_some() {
                return Err(at("repeated TYPE".into()));
            }
            if let Some(c) = current.replace(name.to_string()) {
                finished.insert(c);
            }
            continue;
        }
        if line.starts_with('#') {
            continue; // a comment
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_name(name, true) {
            return Err(at("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') { parse_labels(&line[name_end..]).map_err(at)? } else { (BTreeMap::new(), &line[name_end..]) };
        let value = rest.strip_prefix(' ').ok_or_else(|| at("expected one space before the value".into()))?;
        if value.contains(' ') {
            return Err(at("a timestamp or trailing text".into()));
        }
        let value = parse_value(value).map_err(at)?;
        let family = if types.contains_key(name) {
            name.to_string()
        } else {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| types.get(*f).is_some_and(|k| k == "histogram" || k == "summary")))
                .ok_or_else(|| at("sample without a TYPE".into()))?
                .to_string()
        };
        if current.as_deref() != Some(family.as_str()) || finished.contains(&family) {
            return Err(at(format!("sample of {family} outside its family's block")));
        }
        if types[&family] == "counter" && !name.ends_with("_total") {
            return Err(at("counter not named *_total".into()));
        }
        if types[&family] == "counter" && (value.is_nan() || value < 0.0) {
            return Err(at("negative counter".into()));
        }
        if !seen.insert(format!("{name}{labels:?}")) {
            return Err(at("duplicate series".into()));
        }
        samples.push(Sample { name: name.to_string(), labels, value });
    }
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
            .map(|s| Ok((parse_value(s.labels.get("le").ok_or("bucket without le")?)?, s.value)))
            .collect::<Result<_, String>>()?;
        let count = samples.iter().find(|s| s.name == format!("{family}_count")).ok_or("histogram without _count")?.value;
        if !buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1) {
            return Err(format!("{family}: buckets not increasing and cumulative: {buckets:?}"));
        }
        if buckets.last() != Some(&(f64::INFINITY, count)) {
            return Err(format!("{family}: the +Inf bucket must end the buckets and equal _count {count}"));
        }
        samples.iter().find(|s| s.name == format!("{family}_sum")).ok_or("histogram without _sum")?;
    }
    Ok(samples)
}

fn scrape(addr: &str) -> Result<Vec<Sample>, String> {
    let r = get(addr, "/metrics")?;
    if r.status != 200 || !r.headers.contains("Content-Type: text/plain; version=0.0.4") {
        return Err(format!("/metrics answered {}: {}", r.status, r.headers));
    }
    parse_prometheus(&r.body).map_err(|e| format!("{e}\n{}", r.body))
}

/// The value of the series `name` with exactly these labels.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    samples.iter().find(|s| s.name == name && s.labels == want).map(|s| s.value)
}

fn sum(samples: &[Sample], name: &str) -> f64 {
    samples.iter().filter(|s| s.name == name).map(|s| s.value).sum()
}

fn status(addr: &str) -> Result<serde_json::Value, String> {
    let r = get(addr, "/status")?;
    if r.status != 200 || !r.headers.contains("Content-Type: application/json") {
        return Err(format!("/status answered {}: {}", r.status, r.headers));
    }
    serde_json::from_str(&r.body).map_err(|e| format!("/status is not JSON ({e}): {}", r.body))
}

/// df2redis's stderr, read as it comes, so the test can wait for a log line.
struct LogTail {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl LogTail {
    fn of(child: &mut std::process::Child) -> LogTail {
        let stderr = child.stderr.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let l = lines.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        LogTail { lines, reader: Some(reader) }
    }

    fn wait_line(&self, what: &str, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        wait_for(what, within, || Ok(self.lines.lock().unwrap().iter().find(|l| pred(l)).cloned()))
    }

    /// Everything, once the process has ended.
    fn all(mut self) -> String {
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        self.lines.lock().unwrap().join("\n")
    }
}

fn wait_phase(addr: &str, phase: &str, within: Duration) -> serde_json::Value {
    wait_for(&format!("/status phase {phase}"), within, || {
        let s = status(addr)?;
        Ok((s["phase"] == phase).then_some(s))
    })
}

// ---------------------------------------------------------------------------------------------

#[test]
fn the_prometheus_parser_of_this_test_is_strict() {
    assert!(parse_prometheus("# TYPE a_total counter\na_total{x=\"1\\\"\"} 1\n").is_ok());
    assert!(parse_prometheus("# HELP h Help.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n").is_ok());
    for bad in [
        "# TYPE a counter\na_total 1\n",                 // text format 0.0.4: TYPE names the sample
        "a_total 1\n",                                  // no TYPE
        "# TYPE a counter\na_total 1",                  // no final newline
        "# TYPE a counter\na 1\n",                      // counter without _total
        "# TYPE a gauge\na  1\n",                       // two spaces
        "# TYPE a gauge\na{x=1} 1\n",                   // unquoted label
        "# TYPE a gauge\na 1 123\n",                    // timestamp
        "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n", // interleaved families
        "# TYPE a gauge\na 1\na 2\n",                   // duplicate series
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
    ] {
        assert!(parse_prometheus(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn the_emulator_reports_keyspace_and_memory_consistent_with_its_data() {
    let emu = Emulator::start(Config { shards: 3, ..Config::default() }).unwrap();
    datasets::small(&emu, 1000);
    datasets::hashes(&emu, 20, 50);
    for i in 0..30 {
        emu.write(2, &[b"SET", format!("t{i}").as_bytes(), b"v", b"EX", b"3600"]).unwrap();
    }
    let info = |section: &str| -> String {
        let s = TcpStream::connect(emu.addr()).unwrap();
        (&s).write_all(format!("*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n", section.len()).as_bytes()).unwrap();
        match df2redis::target::resp::read_reply(&mut BufReader::new(&s)).unwrap() {
            df2redis::target::resp::Reply::Bulk(Some(b)) => String::from_utf8(b.to_vec()).unwrap(),
            other => panic!("INFO {section}: {other:?}"),
        }
    };
    let ks = info("keyspace");
    assert!(ks.contains("db0:keys=1020,expires=0,"), "{ks}");
    assert!(ks.contains("db2:keys=30,expires=30,"), "{ks}");
    let data = emu.data();
    let payload: u64 = data
        .values()
        .flat_map(|m| m.iter())
        .map(|(k, e)| {
            k.len() as u64
                + match &e.value {
                    Value::String(v) => v.len() as u64,
                    Value::Hash(h) => h.iter().map(|(f, v)| (f.len() + v.len()) as u64).sum(),
                    _ => 0,
                }
        })
        .sum();
    let mem = info("memory");
    let used: u64 = mem.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap();
    assert!(used >= payload && used < payload * 3, "used_memory {used} vs payload {payload}");
    // It follows the data.
    emu.write(0, &[b"DEL", b"key:000000000000"]).unwrap();
    assert!(info("keyspace").contains("db0:keys=1019,"));
    assert!(!info("server").contains("used_memory"), "only the sections asked for");
}

#[test]
fn replicate_serves_metrics_that_match_what_was_written_and_phases_in_status() {
    // The snapshot pauses after 10 entries per flow, so the full sync can be observed.
    let emu = Emulator::start(Config { shards: 4, pause_snapshot_after: Some(10), ..Config::default() }).unwrap();
    const STRINGS: usize = 3000;
    datasets::small(&emu, STRINGS);
    // Skipped by policy (the target has no RedisJSON; Bloom filters have no Redis form).
    let mut r = datasets::Rng::new(7);
    emu.load(0, b"bf:metrics", Entry::new(Value::Opaque { rdb_type: rdb_type::SBF2, bytes: datasets::sbf2(&mut r) }));
    for i in 0..2 {
        emu.load(0, format!("json:{i}").as_bytes(), Entry::new(Value::Json(br#"{"a":[1,2]}"#.to_vec())));
    }
    let keys = STRINGS + 3;

    let srv = RedisServer::start(&[]);
    let target = format!("redis://{}", srv.addr());
    let maddr = format!("127.0.0.1:{}", free_port());
    let source = emu.addr().to_string();
    let mut child = df2redis(&["replicate", "--source", &source, "--target", &target, "--metrics-addr", &maddr, "--progress-secs", "1"]);
    let log = LogTail::of(&mut child);

    // Full sync, paused: the phase, the master's size and a partial key count.
    assert!(emu.wait_snapshot_paused(Duration::from_secs(60)), "the snapshot never paused");
    let s = wait_phase(&maddr, "full_sync", Duration::from_secs(30));
    assert_eq!(s["full_sync"]["master_keys"], keys as u64, "{s}");
    assert!(s["full_sync"]["master_used_memory"].as_u64().unwrap() > (STRINGS * 32) as u64, "{s}");
    let m = scrape(&maddr).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(value(&m, "df2redis_phase", &[("phase", "full_sync")]), Some(1.0));
    assert_eq!(value(&m, "df2redis_master_keys", &[]), Some(keys as f64));
    let partial = sum(&m, "df2redis_flow_keys_total");
    assert!(partial <= 40.0, "4 flows paused after 10 entries each, yet {partial} keys");
    // Not a terminal: the steady progress line, with the share of the master's keys and an ETA.
    let line = log.wait_line("a full-sync progress line", Duration::from_secs(30), |l| l.contains("full sync: "));
    assert!(line.contains(&format!(" of ~{keys} keys (")) && line.contains(", ETA ") && line.contains("flow 3: "), "{line}");
    emu.resume_snapshot();

    // Stable sync, then a journal the test counts.
    let s = wait_phase(&maddr, "stable_sync", Duration::from_secs(60));
    assert_eq!(s["full_sync"]["progress"], 1.0, "{s}");
    const SETS: usize = 400;
    for i in 0..SETS {
        emu.write(0, &[b"SET", format!("j:{i}").as_bytes(), b"v"]).unwrap();
    }
    for i in 0..100 {
        emu.write(0, &[b"INCR", format!("ctr:{}", i % 10).as_bytes()]).unwrap();
    }
    assert!(emu.wait_acked_all(Duration::from_secs(60)), "ACKs {:?} never reached {:?}", emu.acked(), emu.lsns());
    let lsns = emu.lsns();
    assert_eq!(lsns.iter().map(|l| l - 1).sum::<u64>(), (SETS + 100) as u64, "one record per write");

    let m = scrape(&maddr).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sum(&m, "df2redis_flow_keys_total"), keys as f64);
    assert_eq!(value(&m, "df2redis_sessions_total", &[]), Some(1.0));
    assert_eq!(value(&m, "df2redis_phase", &[("phase", "stable_sync")]), Some(1.0));
    assert_eq!(sum(&m, "df2redis_phase"), 1.0, "exactly one phase");
    for (i, lsn) in lsns.iter().enumerate() {
        let f = i.to_string();
        let l = [("flow", f.as_str())];
        assert_eq!(value(&m, "df2redis_flow_applied_lsn", &l), Some(*lsn as f64), "flow {i}");
        assert_eq!(value(&m, "df2redis_flow_received_lsn", &l), Some(*lsn as f64), "flow {i}");
        assert_eq!(value(&m, "df2redis_flow_journal_records_total", &l), Some((*lsn - 1) as f64), "flow {i}");
        assert_eq!(value(&m, "df2redis_flow_lag_records", &l), Some(0.0), "flow {i}");
        assert_eq!(value(&m, "df2redis_flow_lag_seconds", &l), Some(0.0), "flow {i}: nothing pending");
        assert_eq!(value(&m, "df2redis_flow_fullsync_done", &l), Some(1.0), "flow {i}");
    }
    // One SET per string of the snapshot (an empty target: no DEL first), one command per
    // journal record; the skipped keys give none.
    assert_eq!(sum(&m, "df2redis_flow_commands_applied_total"), (STRINGS + SETS + 100) as f64);
    assert_eq!(value(&m, "df2redis_skipped_total", &[("reason", "JSON document (target has no RedisJSON)")]), Some(2.0));
    assert_eq!(value(&m, "df2redis_skipped_total", &[("reason", "Bloom filter (Dragonfly-only type)")]), Some(1.0));
    assert_eq!(value(&m, "df2redis_errors_total", &[("kind", "target_rejected")]), Some(0.0));
    let pipelines = value(&m, "df2redis_pipeline_latency_seconds_count", &[]).unwrap();
    assert!(pipelines >= 4.0, "at least one pipeline per flow: {pipelines}");
    assert!(value(&m, "df2redis_pipeline_latency_seconds_sum", &[]).unwrap() > 0.0);
    assert!(sum(&m, "df2redis_flow_received_bytes_total") > (STRINGS * 40) as f64);

    // /status says the same.
    let s = status(&maddr).unwrap();
    assert_eq!(s["phase"], "stable_sync");
    assert_eq!(s["totals"]["keys"], keys as u64);
    assert_eq!(s["totals"]["records"], (SETS + 100) as u64);
    assert_eq!(s["flows"].as_array().unwrap().len(), 4);
    for (i, f) in s["flows"].as_array().unwrap().iter().enumerate() {
        assert_eq!((f["applied_lsn"].as_u64(), f["lag_records"].as_u64(), f["lag_ms"].as_u64()), (Some(lsns[i]), Some(0), Some(0)), "{f}");
    }
    assert_eq!(s["skipped"]["Bloom filter (Dragonfly-only type)"], 1);
    assert!(s["pipeline_latency"]["count"].as_u64().unwrap() >= 4);
    assert!(s["pipeline_latency"]["p99_seconds"].as_f64().is_some(), "{s}");

    // The endpoint's other answers.
    assert_eq!(get(&maddr, "/nope").unwrap().status, 404);
    assert_eq!(http(&maddr, "POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi").unwrap().status, 405);
    let head = http(&maddr, "HEAD /status HTTP/1.1\r\n\r\n").unwrap();
    assert!(head.status == 200 && head.body.is_empty(), "{}", head.headers);
    assert_eq!(http(&maddr, "garbage\r\n\r\n").unwrap().status, 400);

    let line = log.wait_line("a stable-sync progress line after the ACKs", Duration::from_secs(30), |l| {
        l.contains("stable sync: ") && l.contains(&format!("{} records", SETS + 100))
    });
    assert!(line.contains("flow 0 lag 0 records 0 ms") && line.contains("flow 3 lag 0 records 0 ms"), "{line}");

    let out = terminate(child);
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), log.all());
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains(&format!("metrics: http://{maddr}/metrics")), "{log}");
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    assert!(TcpStream::connect(&maddr).is_err(), "the endpoint ends with the process");
}

#[test]
fn a_metrics_address_in_use_is_a_usage_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = df2redis(&["replicate", "--source", "127.0.0.1:1", "--target", "redis://127.0.0.1:1", "--metrics-addr", &addr])
        .wait_with_output()
        .unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("--metrics-addr (file key metrics.addr): cannot listen on"), "{log}");
    let out = df2redis(&["replicate", "--source", "127.0.0.1:1", "--target", "redis://127.0.0.1:1", "--metrics-addr", "9121"])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--metrics-addr (file key metrics.addr): expected host:port"), "{}", text(&out));
}

/// Per-node writes into a 3-master Redis Cluster: every node gets its share and the shares add
/// up to the commands applied.
#[test]
fn node_writes_of_a_cluster_target_add_up() {
    let emu = Emulator::start(Config { shards: 2, ..Config::default() }).unwrap();
    datasets::small(&emu, 600);
    let cluster = common::redis_cluster::RedisCluster::start();
    let target = format!("redis://{}", cluster.seed());
    let maddr = format!("127.0.0.1:{}", free_port());
    let child = df2redis(&["replicate", "--source", &emu.addr().to_string(), "--target", &target, "--metrics-addr", &maddr]);
    wait_phase(&maddr, "stable_sync", Duration::from_secs(60));
    for i in 0..300 {
        emu.write(0, &[b"SET", format!("j:{i}").as_bytes(), b"v"]).unwrap();
    }
    assert!(emu.wait_acked_all(Duration::from_secs(60)), "ACKs {:?} never reached {:?}", emu.acked(), emu.lsns());
    let m = wait_for("per-node writes adding up to the commands applied", Duration::from_secs(30), || {
        let m = scrape(&maddr)?;
        let applied = sum(&m, "df2redis_flow_commands_applied_total");
        Ok((applied == 900.0 && sum(&m, "df2redis_node_writes_total") == applied).then_some(m))
    });
    for addr in cluster.addrs() {
        let w = value(&m, "df2redis_node_writes_total", &[("node", addr.as_str())]);
        assert!(w.is_some_and(|w| w > 0.0), "node {addr}: {w:?}");
    }
    let out = terminate(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
