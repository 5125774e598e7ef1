//! Targets with modules: Debian's redis-server 7.0 with RedisJSON 2.8 and RedisBloom 2.8
//! loaded (`ServerKind::Redis7Modules`), standalone and as a cluster, against the real
//! captures and the emulator.
//!
//! - `--json auto` finds RedisJSON (the log says so); JSON documents of the snapshot go in with
//!   `JSON.SET`, `JSON.*` journal records pass through, and the target's `JSON.GET` equals the
//!   master's document. Documents are compared as trees with doubles under a relative
//!   tolerance: RedisJSON 2.8 itself reads some doubles a few units in the last place off
//!   (`90.33333333333333` comes back as `90.33333333333331`, whoever sends it).
//! - Without RedisJSON (a plain Redis 7, or a cluster where one master lacks it) the same run
//!   skips JSON by policy and counts it.
//! - Bloom, Cuckoo, count-min sketch and top-k are skipped and counted even with RedisBloom
//!   loaded (Dragonfly's layouts are not RedisBloom's); nothing is written for them.
//! - `df2redis check` compares copied documents by content and finds a changed one.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use common::capture_master::{CaptureMaster, Faults};
use common::emulator_model::expected;
use common::redis_cluster::RedisCluster;
use common::redis_server::{compare, read_all, RedisServer, ServerKind, TempDir};
use common::run::{df2redis, terminate, text};
use common::fixtures;
use df2redis::emulator::{datasets, Config, Emulator, Entry, Value};
use df2redis::protocol::rdb_type as t;
use df2redis::target::slots::key_slot;
use serde_json::Value as Json;

/// Non-integer numbers this close (relative) are equal; see the module doc.
const TOLERANCE: f64 = 1e-12;

/// `None` when `a` and `b` are the same document (integers exact, other numbers within the
/// tolerance, members in any order), else the path of the first difference.
fn doc_difference(a: &Json, b: &Json, path: &str) -> Option<String> {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => {
            let same = match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(i), Some(j), _, _) => i == j,
                (_, _, Some(i), Some(j)) => i == j,
                _ => {
                    let (f, g) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                    f == g || (f - g).abs() <= TOLERANCE * f.abs().max(g.abs())
                }
            };
            (!same).then(|| format!("{path}: {x} vs {y}"))
        }
        (Json::Array(x), Json::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (u, v))| doc_difference(u, v, &format!("{path}[{i}]")))
        }
        (Json::Object(x), Json::Object(y)) if x.len() == y.len() => x.iter().find_map(|(k, u)| match y.get(k) {
            Some(v) => doc_difference(u, v, &format!("{path}.{k}")),
            None => Some(format!("{path}: no member {k:?} on the target")),
        }),
        (x, y) if x == y => None,
        (x, y) => Some(format!("{path}: {x} vs {y}")),
    }
}

fn parse(text: &[u8], what: &str) -> Json {
    serde_json::from_slice(text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", String::from_utf8_lossy(text)))
}

/// The whole document at `key` on `c` (`JSON.GET key`), `None` when the key does not exist.
fn json_get(c: &mut redis::Connection, db: u32, key: &[u8]) -> Option<Vec<u8>> {
    redis::cmd("SELECT").arg(db).query::<()>(c).unwrap();
    redis::cmd("JSON.GET").arg(key).query(c).unwrap_or_else(|e| panic!("JSON.GET {}: {e}", String::from_utf8_lossy(key)))
}

/// Assert that `c` holds each `(db, key, document)`; returns how many were compared.
fn assert_documents(c: &mut redis::Connection, docs: &[(u32, Vec<u8>, Vec<u8>)], what: &str) -> usize {
    let mut diffs = Vec::new();
    for (db, key, doc) in docs {
        let name = format!("{what}: db {db} key {}", String::from_utf8_lossy(key));
        match json_get(c, *db, key) {
            None => diffs.push(format!("{name}: missing")),
            Some(got) => {
                if let Some(d) = doc_difference(&parse(doc, &name), &parse(&got, &name), "$") {
                    diffs.push(format!("{name}: {d}"));
                }
            }
        }
    }
    assert!(diffs.is_empty(), "{} documents differ:\n{}", diffs.len(), diffs.join("\n"));
    docs.len()
}

/// Every JSON document of the emulator, as `(db, key, text)`.
fn emulator_documents(emu: &Emulator) -> Vec<(u32, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for (db, keys) in emu.data() {
        for (k, e) in keys {
            if let Value::Json(doc) = e.value {
                out.push((db, k, doc));
            }
        }
    }
    out
}

/// The Dragonfly-only keys of the emulator other than JSON, as `(db, key, skip reason)`.
fn emulator_filters(emu: &Emulator) -> Vec<(u32, Vec<u8>, &'static str)> {
    let mut out = Vec::new();
    for (db, keys) in emu.data() {
        for (k, e) in keys {
            if let Value::Opaque { rdb_type, .. } = e.value {
                let ty = match rdb_type {
                    t::SBF | t::SBF2 => "MBbloom--",
                    t::CUCKOO => "MBbloomCF",
                    t::CMS => "CMSk-TYPE",
                    t::TOPK => "TopK-TYPE",
                    other => panic!("opaque type {other}"),
                };
                out.push((db, k, reason_of(ty)));
            }
        }
    }
    out
}

/// The skip reason df2redis gives a Dragonfly-only type, by its `TYPE` name.
fn reason_of(type_name: &str) -> &'static str {
    match type_name {
        "MBbloom--" => "Bloom filter (Dragonfly-only type)",
        "MBbloomCF" => "Cuckoo filter (Dragonfly-only type)",
        "CMSk-TYPE" => "count-min sketch (Dragonfly-only type)",
        "TopK-TYPE" => "top-k (Dragonfly-only type)",
        other => panic!("no skip reason known for type {other}"),
    }
}

/// The summary's `skipped: N x REASON` lines.
fn skipped(log: &str) -> BTreeMap<String, u64> {
    log.lines()
        .filter_map(|l| l.trim().strip_prefix("skipped: "))
        .filter_map(|l| l.split_once(" x "))
        .map(|(n, reason)| (reason.to_string(), n.parse().unwrap()))
        .collect()
}

/// Assert each reason was counted exactly as often as it occurs in `keys`.
fn assert_skipped_filters(log: &str, keys: impl IntoIterator<Item = &'static str>) {
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for r in keys {
        *want.entry(r.to_string()).or_default() += 1;
    }
    assert!(!want.is_empty(), "the data set has Dragonfly-only filters");
    let got = skipped(log);
    for (reason, n) in &want {
        assert_eq!(got.get(reason), Some(n), "{reason}: summary {got:?}\n{log}");
    }
}

fn assert_json_written(log: &str) {
    assert!(log.contains("with modules") && log.contains("ReJSON"), "the target's modules are logged: {log}");
    assert!(log.contains("JSON documents will be written with JSON.SET"), "--json auto found RedisJSON: {log}");
    assert!(!skipped(log).keys().any(|r| r.contains("JSON")), "nothing JSON is skipped: {log}");
}

fn absent(c: &mut redis::Connection, db: u32, key: &[u8]) -> bool {
    redis::cmd("SELECT").arg(db).query::<()>(c).unwrap();
    redis::cmd("EXISTS").arg(key).query::<i64>(c).unwrap() == 0
}

#[test]
fn captures_json_documents_and_journal_reach_a_rejson_target() {
    let mut judged = 0;
    for fx in fixtures() {
        let exp = fx.expected();
        let mut docs = Vec::new();
        let mut filters = Vec::new();
        for (db, keys) in parse_raw(&exp["final"]) {
            for (k, ty, v) in keys {
                match ty.as_str() {
                    "ReJSON-RL" => docs.push((db, k, v.as_str().expect("a JSON value is its text").as_bytes().to_vec())),
                    "MBbloom--" | "MBbloomCF" | "CMSk-TYPE" | "TopK-TYPE" => filters.push((db, k, reason_of(&ty))),
                    _ => {}
                }
            }
        }
        if docs.is_empty() {
            continue;
        }
        let master = CaptureMaster::start(&fx, Faults::default());
        let srv = RedisServer::start_kind(ServerKind::Redis7Modules, &[]);
        let target = format!("redis://{}", srv.addr());
        let source = master.addr();
        // `--on-reject skip`: a capture replayed long after it was taken can meet keys whose
        // absolute TTL passed (see replicate_captures); none of them is a JSON key.
        let child = df2redis(&["replicate", "--source", &source, "--target", &target, "--progress-secs", "1", "--on-reject", "skip"]);
        let lsns: Vec<u64> = (0..fx.num_flows()).map(|i| fx.lsn_at_end(i)).collect();
        let acked = master.wait_acks(&lsns, Duration::from_secs(120));
        let out = terminate(child);
        let log = text(&out);
        acked.unwrap_or_else(|e| panic!("{}: {e}\n{log}", fx.name));
        assert_eq!(out.status.code(), Some(0), "{}: {log}", fx.name);
        assert_json_written(&log);
        let mut c = srv.conn();
        // The journal's `JSON.SET json:1 $.a 2` passed through: `final` has a = 2.
        judged += assert_documents(&mut c, &docs, &fx.name);
        for (db, k, _) in &filters {
            assert!(absent(&mut c, *db, k), "{}: {} was written", fx.name, String::from_utf8_lossy(k));
        }
        // The snapshot's filters are the ones the master held when the journal phase began.
        let at_start = parse_raw(&exp["at_startstable"]).into_iter().flat_map(|(_, keys)| keys).filter_map(|(_, ty, _)| match ty.as_str() {
            "MBbloom--" | "MBbloomCF" | "CMSk-TYPE" | "TopK-TYPE" => Some(reason_of(&ty)),
            _ => None,
        });
        assert_skipped_filters(&log, at_start.collect::<Vec<_>>());
        eprintln!("{}: {} JSON documents equal, {} filters skipped", fx.name, docs.len(), filters.len());
    }
    assert!(judged > 0, "the captures hold JSON documents");
}

/// Per db: (key, TYPE, value) as an expected.json section gives them.
type RawKeys = Vec<(u32, Vec<(Vec<u8>, String, Json)>)>;

/// `(db, [(key, TYPE, value)])` of an expected.json section (keys as text; JSON keys are).
fn parse_raw(section: &Json) -> RawKeys {
    section
        .as_object()
        .unwrap()
        .iter()
        .map(|(db, keys)| {
            let keys = keys
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v["type"].as_str().unwrap().to_string(), v["value"].clone()))
                .collect();
            (db.parse().unwrap(), keys)
        })
        .collect()
}

/// The emulator's every type (with a 1 MB document) into Redis + RedisJSON + RedisBloom, then a
/// live journal of JSON.SET / JSON.DEL / PEXPIRE on documents: every native key exact, every
/// document equal, the filters counted and not written.
#[test]
fn emulator_snapshot_and_journal_on_a_rejson_target() {
    let emu = Emulator::start(Config { shards: 4, ..Config::default() }).unwrap();
    datasets::type_coverage(&emu);
    // Kept exactly by Dragonfly, stored as a double by RedisJSON: written, counted as altered.
    emu.load(0, b"json:bigint", Entry::new(Value::Json(br#"{"n":123456789012345678901234567890}"#.to_vec())));
    let srv = RedisServer::start_kind(ServerKind::Redis7Modules, &[]);
    let target = format!("redis://{}", srv.addr());
    let child = df2redis(&["replicate", "--source", &emu.addr().to_string(), "--target", &target, "--progress-secs", "1"]);
    assert!(emu.wait_fullsync_end(Duration::from_secs(120)), "the full sync did not end");
    let w = |db: u32, args: &[&[u8]]| emu.write(db, args).unwrap();
    w(0, &[b"JSON.SET", b"json:live", b"$", br#"{"added":[1.25,"x\ty"],"n":null}"#]);
    w(0, &[b"JSON.SET", b"json:1", b"$", br#"{"a":3,"b":[],"replaced":true}"#]);
    w(0, &[b"JSON.SET", b"json:nested", b"$", b"[]", b"XX"]);
    w(0, &[b"JSON.DEL", b"json:array"]);
    w(0, &[b"PEXPIRE", b"json:string", b"3600000"]);
    w(1, &[b"JSON.SET", b"db1:json", b"$", r#"{"db":1,"live":"é"}"#.as_bytes()]);
    let acked = emu.wait_acked_all(Duration::from_secs(60));
    let out = terminate(child);
    let log = text(&out);
    assert!(acked, "the journal was not acknowledged within 60 s: {log}");
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_json_written(&log);
    assert!(log.contains("altered: 1 x JSON integer beyond 64 bits"), "{log}");

    let docs = emulator_documents(&emu);
    assert!(docs.iter().any(|d| d.1 == b"json:1mb" && d.2.len() > 1 << 20), "the 1 MB document is in the data set");
    let mut c = srv.conn();
    let n = assert_documents(&mut c, &docs, "emulator");
    assert!(absent(&mut c, 0, b"json:array"), "JSON.DEL passed through");
    let filters = emulator_filters(&emu);
    for (db, k, _) in &filters {
        assert!(absent(&mut c, *db, k), "{} was written", String::from_utf8_lossy(k));
    }
    assert_skipped_filters(&log, filters.iter().map(|f| f.2));

    // Native keys exact, JSON TTLs too (compare() judges TTLs of every key it compares).
    let exp = expected(&emu);
    let not_judged: BTreeSet<(u32, Vec<u8>)> =
        exp.iter().flat_map(|(db, m)| m.iter().filter(|(_, k)| k.ty == "dragonfly-only").map(move |(k, _)| (*db, k.clone()))).collect();
    let (diffs, compared, _) = compare(&exp, &read_all(&mut c), &mut c, 1000, &not_judged);
    assert!(diffs.is_empty(), "{} differences:\n{}", diffs.len(), diffs.join("\n"));
    for (db, k, _) in &docs {
        let want = emu.data()[db][k].expire_at_ms.map_or(-1, |t| t as i64);
        redis::cmd("SELECT").arg(*db).query::<()>(&mut c).unwrap();
        let got: i64 = redis::cmd("PEXPIRETIME").arg(k).query(&mut c).unwrap();
        assert!((want < 0) == (got < 0) && (want - got).abs() <= 1000, "{}: PEXPIRETIME {got}, expected {want}", String::from_utf8_lossy(k));
    }
    eprintln!("{n} JSON documents equal, {compared} native keys exact, {} filters skipped", filters.len());
}

/// The same data and journal into a plain Redis 7: every document and JSON record skipped by
/// policy and counted, none written.
#[test]
fn without_rejson_documents_and_json_records_are_skipped_and_counted() {
    let emu = Emulator::start(Config { shards: 4, ..Config::default() }).unwrap();
    datasets::every_type(&emu);
    let srv = RedisServer::start_kind(ServerKind::Redis7, &[]);
    let target = format!("redis://{}", srv.addr());
    let docs = emulator_documents(&emu);
    let child = df2redis(&["replicate", "--source", &emu.addr().to_string(), "--target", &target, "--progress-secs", "1"]);
    assert!(emu.wait_fullsync_end(Duration::from_secs(120)), "the full sync did not end");
    emu.write(0, &[b"JSON.SET", b"json:live", b"$", b"{}"]).unwrap();
    emu.write(0, &[b"JSON.DEL", b"json:1"]).unwrap();
    let acked = emu.wait_acked_all(Duration::from_secs(60));
    let out = terminate(child);
    let log = text(&out);
    assert!(acked, "the journal was not acknowledged within 60 s: {log}");
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("JSON documents will be skipped (no RedisJSON)"), "{log}");
    let got = skipped(&log);
    assert_eq!(got.get("JSON document (target has no RedisJSON)"), Some(&(docs.len() as u64)), "{got:?}\n{log}");
    assert_eq!(got.get("JSON command (target has no RedisJSON)"), Some(&2), "{got:?}\n{log}");
    let mut c = srv.conn();
    for (db, k, _) in docs.iter().chain([(0, b"json:live".to_vec(), Vec::new())].iter()) {
        assert!(absent(&mut c, *db, k), "{} was written", String::from_utf8_lossy(k));
    }
}

/// Cluster node arguments loading both modules on the nodes `with` says.
fn module_args(with: impl Fn(usize) -> bool) -> impl Fn() -> Vec<String> {
    let n = std::cell::Cell::new(0);
    move || {
        let i = n.get();
        n.set(i + 1);
        if with(i) {
            ServerKind::Redis7Modules.args()
        } else {
            Vec::new()
        }
    }
}

fn migrate_into(emu: &Emulator, cluster: &RedisCluster) -> String {
    let target = format!("redis://{}", cluster.seed());
    let out = df2redis(&["migrate", "--source", &emu.addr().to_string(), "--target", &target, "--db-map", "0:0,1:0,2:0"])
        .wait_with_output()
        .unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    log
}

/// `--json auto` on a cluster: JSON.SET when every master has RedisJSON (each document on the
/// master of its slot); skipped and counted when one master lacks it.
#[test]
fn cluster_json_auto_needs_rejson_on_every_master() {
    let emu = Emulator::start(Config { shards: 4, ..Config::default() }).unwrap();
    datasets::every_type(&emu);
    let docs = emulator_documents(&emu);

    let cluster = RedisCluster::start_with(module_args(|_| true));
    let log = migrate_into(&emu, &cluster);
    assert_json_written(&log);
    let mut n = 0;
    for (_, k, doc) in &docs {
        let mut c = cluster.conn(cluster.owner(key_slot(k)));
        n += assert_documents(&mut c, &[(0, k.clone(), doc.clone())], "cluster");
    }
    assert_eq!(n, docs.len());
    drop(cluster);

    let partial = RedisCluster::start_with(module_args(|i| i != 1));
    let log = migrate_into(&emu, &partial);
    assert!(log.contains("JSON documents will be skipped (no RedisJSON)"), "one master lacks RedisJSON: {log}");
    assert_eq!(skipped(&log).get("JSON document (target has no RedisJSON)"), Some(&(docs.len() as u64)), "{log}");
    for (_, k, _) in &docs {
        let mut c = partial.conn(partial.owner(key_slot(k)));
        assert!(absent(&mut c, 0, k), "{} was written", String::from_utf8_lossy(k));
    }
}

/// `df2redis check` against a RedisJSON target reads documents on both sides: the copies
/// (including a double RedisJSON rounds, and a 1 MB document) are no difference; a changed
/// document is one, named with the path that differs.
#[test]
fn check_compares_json_documents_by_content() {
    let emu = Emulator::start(Config::default()).unwrap();
    datasets::json_documents(&emu);
    emu.load(0, b"json:1mb", Entry::new(Value::Json(datasets::json_1mb())));
    emu.load(0, b"plain", Entry::new(Value::String(b"v".to_vec())));
    let keys = emu.data().values().map(|m| m.len() as u64).sum::<u64>();
    let srv = RedisServer::start_kind(ServerKind::Redis7Modules, &[]);
    let target = format!("redis://{}", srv.addr());
    let out = df2redis(&["migrate", "--source", &emu.addr().to_string(), "--target", &target]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let dir = TempDir::new("check-json");
    let report: PathBuf = dir.0.join("report.json");
    let run_check = || {
        let _ = std::fs::remove_file(&report);
        let out = df2redis(&["check", "--source", &emu.addr().to_string(), "--target", &target, "--report", report.to_str().unwrap()])
            .wait_with_output()
            .unwrap();
        let v: Json = serde_json::from_slice(&std::fs::read(&report).unwrap_or_else(|e| panic!("no report ({e}): {}", text(&out)))).unwrap();
        (out.status.code(), v, text(&out))
    };
    let (code, v, log) = run_check();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(v["consistent"], true, "{v}");
    assert_eq!(v["totals"]["source_keys_checked"], keys, "{v}");
    assert_eq!(v["totals"]["not_compared"], 0, "every document was compared by content: {v}");

    // A changed document; and an integer beyond 64 bits, which Dragonfly keeps and RedisJSON
    // turns into a double (as a copy of it would be).
    let mut c = srv.conn();
    redis::cmd("JSON.SET").arg("json:nested").arg("$.a[0][1][0]").arg(7).query::<()>(&mut c).unwrap();
    let wide = br#"{"n":123456789012345678901234567890}"#;
    emu.write(0, &[b"JSON.SET", b"json:bigint", b"$", wide]).unwrap();
    redis::cmd("JSON.SET").arg("json:bigint").arg("$").arg(&wide[..]).query::<()>(&mut c).unwrap();
    let (code, v, log) = run_check();
    assert_ne!(code, Some(0), "{log}");
    assert_eq!(v["totals"]["differences"], 2, "{v}");
    let listed: BTreeMap<String, String> = v["source_dbs"][0]["value"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["key"].as_str().unwrap().to_string(), k["detail"].as_str().unwrap().to_string()))
        .collect();
    assert!(listed["json:nested"].contains(r#"$["a"][0][1][0]: source 2, target 7"#), "{listed:?}");
    assert!(listed["json:bigint"].contains(r#"$["n"]: source 123456789012345678901234567890, target 1.2345678901234568e29"#), "{listed:?}");
}

/// The emulator writes a JSON entry byte for byte as a real v1.40.1 master did: type 30, the
/// key, and the document as one RDB string (LZF-compressed under `--compression_mode=1`).
#[test]
fn emulator_encodes_a_json_entry_as_the_captured_master() {
    let doc = br#"{"a":1,"b":[1,2,{"c":"x"}],"d":null,"e":1.5}"#.to_vec();
    let entry = Entry::new(Value::Json(doc.clone()));
    for (name, lzf) in [("v1.40.1-plain", false), ("v1.40.1-lzf", true)] {
        let fx = fixtures().into_iter().find(|f| f.name == name).unwrap_or_else(|| panic!("fixture {name}"));
        let want = df2redis::emulator::encode::entry(b"json:1", &entry, lzf).bytes;
        assert_eq!(want[0], t::JSON);
        let found = (0..fx.num_flows()).any(|i| fx.flow_bytes(i).windows(want.len()).any(|w| w == want.as_slice()));
        assert!(found, "{name}: no flow holds the emulator's encoding {want:02X?}");
    }
}

/// `--json skip` skips documents even on a RedisJSON target; `--json json-set` on a target
/// without RedisJSON is refused there, and the run stops naming the command and the error.
#[test]
fn explicit_json_policies_override_the_probe() {
    let emu = Emulator::start(Config::default()).unwrap();
    datasets::json_documents(&emu);
    let docs = emulator_documents(&emu);
    let migrate = |srv: &RedisServer, policy: &str| {
        let target = format!("redis://{}", srv.addr());
        let out = df2redis(&["migrate", "--source", &emu.addr().to_string(), "--target", &target, "--json", policy])
            .wait_with_output()
            .unwrap();
        (out.status.code(), text(&out))
    };

    let modules = RedisServer::start_kind(ServerKind::Redis7Modules, &[]);
    let (code, log) = migrate(&modules, "skip");
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("JSON documents will be skipped (--json)"), "{log}");
    assert_eq!(skipped(&log).get("JSON document (policy: skip)"), Some(&(docs.len() as u64)), "{log}");
    let mut c = modules.conn();
    for (db, k, _) in &docs {
        assert!(absent(&mut c, *db, k), "{} was written", String::from_utf8_lossy(k));
    }

    let plain = RedisServer::start_kind(ServerKind::Redis7, &[]);
    let (code, log) = migrate(&plain, "json-set");
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("JSON.SET") && log.contains("unknown command"), "the error names the command and the target's answer: {log}");
    assert!(!log.contains("panicked"), "{log}");
}
