//! What a check found, by db and by category, with a bounded list of keys for each; printed as
//! text and written as JSON (by hand: no serialization crate in the binary).
//!
//! Source-side categories (`missing`, `type`, `value`, `ttl`, and with several sources
//! `conflict`) are counted under the source and db the key was read from (with the target db
//! it maps to); `extra` keys under the target db they were found in.
//!
//! With one source (and no slots known) the text and the JSON are as they always were; with
//! several, each source db is named by its source's address, and the summary lists the
//! sources with their slots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::Duration;

use crate::protocol::cursor::show;
use crate::source::cluster::SlotRanges;

/// A kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// On the source, not on the target.
    Missing,
    /// On the target, in no source db that maps to its db.
    Extra,
    /// On both, with different types.
    Type,
    /// Same type, different contents.
    Value,
    /// TTLs further apart than the tolerance, or a TTL on one side only.
    Ttl,
    /// In two sources with different types, values or TTLs: the target cannot match both.
    Conflict,
}

impl Category {
    pub fn name(self) -> &'static str {
        match self {
            Category::Missing => "missing",
            Category::Extra => "extra",
            Category::Type => "type",
            Category::Value => "value",
            Category::Ttl => "ttl",
            Category::Conflict => "conflict",
        }
    }
    /// The categories counted per source db, in report order.
    pub const SOURCE: [Category; 4] = [Category::Missing, Category::Type, Category::Value, Category::Ttl];
}

/// A count and the first keys counted, each with what differs.
#[derive(Debug, Default, Clone)]
pub struct Listed {
    pub count: u64,
    pub keys: Vec<(Vec<u8>, String)>,
}

/// One source db.
#[derive(Debug, Default, Clone)]
pub struct SourceDb {
    pub target_db: u32,
    /// Source keys compared.
    pub checked: u64,
    /// Keys that disappeared from the source (deleted, expired) or changed type while being
    /// compared: a live source, not a difference.
    pub vanished: u64,
    /// Keys of types whose values are not read (compared by type and TTL only).
    pub not_compared: u64,
    /// Keys also in an earlier source, compared when that source was walked.
    pub in_earlier_source: u64,
    pub missing: Listed,
    pub type_: Listed,
    pub value: Listed,
    pub ttl: Listed,
    pub conflict: Listed,
}

impl SourceDb {
    pub fn get(&self, c: Category) -> &Listed {
        match c {
            Category::Missing => &self.missing,
            Category::Type => &self.type_,
            Category::Value => &self.value,
            Category::Conflict => &self.conflict,
            Category::Ttl | Category::Extra => &self.ttl,
        }
    }
}

/// One target db.
#[derive(Debug, Default, Clone)]
pub struct TargetDb {
    /// Target keys looked up on the source.
    pub checked: u64,
    pub extra: Listed,
}

/// One source compared.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub addr: String,
    /// A Dragonfly cluster node: the slots it owns.
    pub slots: Option<SlotRanges>,
}

#[derive(Debug, Clone)]
pub struct Report {
    /// The sources' addresses, comma-separated.
    pub source: String,
    /// The sources, in the order they were walked (indices of `source_dbs`).
    pub sources: Vec<SourceInfo>,
    pub target: String,
    pub target_kind: &'static str,
    pub sample: Option<u64>,
    pub ttl_tolerance_ms: u64,
    /// Keys listed per category and db.
    pub max_listed: usize,
    /// By (source index, db).
    pub source_dbs: BTreeMap<(usize, u32), SourceDb>,
    pub target_dbs: BTreeMap<u32, TargetDb>,
    pub elapsed: Duration,
    /// Set when the check stopped before the end.
    pub error: Option<String>,
}

impl Report {
    pub fn new(sources: Vec<SourceInfo>, target: String, sample: Option<u64>, ttl_tolerance_ms: u64, max_listed: usize) -> Report {
        Report {
            source: sources.iter().map(|s| s.addr.as_str()).collect::<Vec<_>>().join(","),
            sources,
            target,
            target_kind: "standalone",
            sample,
            ttl_tolerance_ms,
            max_listed,
            source_dbs: BTreeMap::new(),
            target_dbs: BTreeMap::new(),
            elapsed: Duration::ZERO,
            error: None,
        }
    }

    pub fn source_db(&mut self, source: usize, db: u32) -> &mut SourceDb {
        self.source_dbs.entry((source, db)).or_default()
    }

    /// Whether sources are named in the report: several, or one whose slots are known.
    pub fn names_sources(&self) -> bool {
        self.sources.len() > 1 || self.sources.iter().any(|s| s.slots.is_some())
    }

    /// The categories counted per source db, in report order.
    fn source_categories(&self) -> &'static [Category] {
        if self.names_sources() {
            &[Category::Missing, Category::Type, Category::Value, Category::Ttl, Category::Conflict]
        } else {
            &Category::SOURCE
        }
    }

    fn source_addr(&self, source: usize) -> &str {
        self.sources.get(source).map_or("?", |s| s.addr.as_str())
    }

    pub fn target_db(&mut self, db: u32) -> &mut TargetDb {
        self.target_dbs.entry(db).or_default()
    }

    /// Count a difference: `db` is the db of source `source`, or the target db for
    /// [`Category::Extra`] (`source` unused).
    pub fn record(&mut self, cat: Category, source: usize, db: u32, key: &[u8], detail: String) {
        let max = self.max_listed;
        let listed = match cat {
            Category::Extra => &mut self.target_db(db).extra,
            Category::Missing => &mut self.source_db(source, db).missing,
            Category::Type => &mut self.source_db(source, db).type_,
            Category::Value => &mut self.source_db(source, db).value,
            Category::Ttl => &mut self.source_db(source, db).ttl,
            Category::Conflict => &mut self.source_db(source, db).conflict,
        };
        log::debug!("{} {source}/{db}: {} ({detail})", cat.name(), show(key));
        listed.count += 1;
        if listed.keys.len() < max {
            listed.keys.push((key.to_vec(), detail));
        }
    }

    pub fn count(&self, cat: Category) -> u64 {
        match cat {
            Category::Extra => self.target_dbs.values().map(|d| d.extra.count).sum(),
            c => self.source_dbs.values().map(|d| d.get(c).count).sum(),
        }
    }

    pub fn differences(&self) -> u64 {
        Category::SOURCE.iter().map(|&c| self.count(c)).sum::<u64>() + self.count(Category::Conflict) + self.count(Category::Extra)
    }

    /// Consistent: the check ran to its end and found no difference.
    pub fn consistent(&self) -> bool {
        self.error.is_none() && self.differences() == 0
    }

    pub fn source_checked(&self) -> u64 {
        self.source_dbs.values().map(|d| d.checked).sum()
    }

    pub fn target_checked(&self) -> u64 {
        self.target_dbs.values().map(|d| d.checked).sum()
    }

    /// The human summary.
    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(out, "---- check summary ----")?;
        writeln!(out, "source {} -> target {} ({})", self.source, self.target, self.target_kind)?;
        if self.names_sources() {
            let each: Vec<String> = self.sources.iter().map(|s| format!("{} ({})", s.addr, slots_text(&s.slots))).collect();
            let n = self.sources.len();
            writeln!(out, "{n} source{} compared: {}", if n == 1 { "" } else { "s" }, each.join(", "))?;
        }
        let mode = match self.sample {
            Some(n) => format!("sample of about {n} keys per side"),
            None => "full pass".to_string(),
        };
        writeln!(out, "{mode}; TTL tolerance {} ms; elapsed {:.1} s", self.ttl_tolerance_ms, self.elapsed.as_secs_f64())?;
        let cats = self.source_categories();
        for (&(src, db), d) in &self.source_dbs {
            let counts: Vec<String> = cats.iter().map(|&c| format!("{} {}", d.get(c).count, c.name())).collect();
            let which = if self.names_sources() { format!("source {} db {db}", self.source_addr(src)) } else { format!("source db {db}") };
            write!(out, "{which} -> target db {}: {} keys compared: {}", d.target_db, d.checked, counts.join(", "))?;
            if d.in_earlier_source > 0 {
                write!(out, "; {} also in an earlier source, compared there", d.in_earlier_source)?;
            }
            if d.vanished > 0 {
                write!(out, "; {} changed or vanished on the source meanwhile", d.vanished)?;
            }
            if d.not_compared > 0 {
                write!(out, "; {} of types compared by type and TTL only", d.not_compared)?;
            }
            writeln!(out)?;
            for &c in cats {
                list(out, c, d.get(c))?;
            }
        }
        let on = if self.names_sources() { "sources" } else { "source" };
        for (db, d) in &self.target_dbs {
            writeln!(out, "target db {db}: {} keys looked up on the {on}: {} extra", d.checked, d.extra.count)?;
            list(out, Category::Extra, &d.extra)?;
        }
        match (&self.error, self.differences()) {
            (Some(e), n) => writeln!(out, "result: incomplete ({n} differences before the error: {e})"),
            (None, 0) => writeln!(out, "result: consistent ({} source keys, {} target keys)", self.source_checked(), self.target_checked()),
            (None, n) => writeln!(out, "result: {n} differences"),
        }
    }

    /// The JSON report (`--report FILE`).
    pub fn to_json(&self) -> String {
        let mut j = String::with_capacity(4096);
        j.push_str("{\n");
        let _ = writeln!(j, "  \"version\": 1,");
        let _ = writeln!(j, "  \"consistent\": {},", self.consistent());
        let _ = writeln!(j, "  \"complete\": {},", self.error.is_none());
        let _ = writeln!(j, "  \"error\": {},", self.error.as_deref().map_or("null".to_string(), json_str));
        let _ = writeln!(j, "  \"mode\": \"{}\",", if self.sample.is_some() { "sample" } else { "full" });
        let _ = writeln!(j, "  \"sample\": {},", self.sample.map_or("null".to_string(), |n| n.to_string()));
        let _ = writeln!(j, "  \"source\": {},", json_str(&self.source));
        if self.names_sources() {
            let each: Vec<String> = self
                .sources
                .iter()
                .map(|s| format!("{{\"addr\": {}, \"slots\": {}}}", json_str(&s.addr), s.slots.as_ref().map_or("null".to_string(), |r| json_str(&r.to_string()))))
                .collect();
            let _ = writeln!(j, "  \"sources\": [{}],", each.join(", "));
        }
        let _ = writeln!(j, "  \"target\": {},", json_str(&self.target));
        let _ = writeln!(j, "  \"target_kind\": \"{}\",", self.target_kind);
        let _ = writeln!(j, "  \"ttl_tolerance_ms\": {},", self.ttl_tolerance_ms);
        let _ = writeln!(j, "  \"elapsed_ms\": {},", self.elapsed.as_millis());
        let _ = write!(
            j,
            "  \"totals\": {{\"differences\": {}, \"source_keys_checked\": {}, \"target_keys_checked\": {}",
            self.differences(),
            self.source_checked(),
            self.target_checked()
        );
        for c in [Category::Missing, Category::Extra, Category::Type, Category::Value, Category::Ttl] {
            let _ = write!(j, ", \"{}\": {}", c.name(), self.count(c));
        }
        if self.names_sources() {
            let _ = write!(j, ", \"conflict\": {}", self.count(Category::Conflict));
        }
        let vanished: u64 = self.source_dbs.values().map(|d| d.vanished).sum();
        let not_compared: u64 = self.source_dbs.values().map(|d| d.not_compared).sum();
        let _ = writeln!(j, ", \"vanished\": {vanished}, \"not_compared\": {not_compared}}},");
        j.push_str("  \"source_dbs\": [");
        for (i, (&(src, db), d)) in self.source_dbs.iter().enumerate() {
            j.push_str(if i == 0 { "\n" } else { ",\n" });
            j.push_str("    {");
            if self.names_sources() {
                let _ = write!(j, "\"source\": {}, \"in_earlier_source\": {}, ", json_str(self.source_addr(src)), d.in_earlier_source);
            }
            let _ = write!(
                j,
                "\"db\": {db}, \"target_db\": {}, \"keys_checked\": {}, \"vanished\": {}, \"not_compared\": {}",
                d.target_db, d.checked, d.vanished, d.not_compared
            );
            for &c in self.source_categories() {
                let _ = write!(j, ",\n      \"{}\": {}", c.name(), listed_json(d.get(c)));
            }
            j.push('}');
        }
        j.push_str("\n  ],\n  \"target_dbs\": [");
        for (i, (db, d)) in self.target_dbs.iter().enumerate() {
            j.push_str(if i == 0 { "\n" } else { ",\n" });
            let _ = write!(j, "    {{\"db\": {db}, \"keys_checked\": {},\n      \"extra\": {}}}", d.checked, listed_json(&d.extra));
        }
        j.push_str("\n  ]\n}\n");
        j
    }
}

fn slots_text(slots: &Option<SlotRanges>) -> String {
    slots.as_ref().map_or("not a cluster node".to_string(), |r| format!("slots {r}"))
}

fn list(out: &mut impl Write, c: Category, l: &Listed) -> io::Result<()> {
    for (k, detail) in &l.keys {
        writeln!(out, "  {}: {} ({detail})", c.name(), show(k))?;
    }
    if l.count > l.keys.len() as u64 {
        writeln!(out, "  {}: ... and {} more", c.name(), l.count - l.keys.len() as u64)?;
    }
    Ok(())
}

fn listed_json(l: &Listed) -> String {
    let keys: Vec<String> = l.keys.iter().map(|(k, d)| format!("{{{}, \"detail\": {}}}", key_json(k), json_str(d))).collect();
    format!("{{\"count\": {}, \"keys\": [{}]}}", l.count, keys.join(", "))
}

/// `"key": "..."`; a key that is not UTF-8 also gets `"key_hex"`, since its text form had to
/// replace bytes.
fn key_json(k: &[u8]) -> String {
    match std::str::from_utf8(k) {
        Ok(s) => format!("\"key\": {}", json_str(s)),
        Err(_) => {
            let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
            format!("\"key\": {}, \"key_hex\": \"{hex}\"", json_str(&String::from_utf8_lossy(k)))
        }
    }
}

use crate::json::string as json_str;

/// A command for messages: its name and its key.
pub fn show_args(c: &[Vec<u8>]) -> String {
    match c {
        [] => String::new(),
        [name] => String::from_utf8_lossy(name).into_owned(),
        [name, key, ..] => format!("{} {}", String::from_utf8_lossy(name), show(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_and_parses() {
        let mut r = Report::new(one("s:1"), "t:2".into(), None, 2000, 2);
        r.source_db(0, 0).checked = 5;
        r.record(Category::Missing, 0, 0, b"a\"b\\c\n", "type string".into());
        r.record(Category::Value, 0, 0, b"\xff\x00", "differs".into());
        r.record(Category::Value, 0, 0, b"v2", "x".into());
        r.record(Category::Value, 0, 0, b"v3", "x".into());
        r.record(Category::Extra, 0, 1, b"e", "not on the source".into());
        let j = r.to_json();
        let v: serde_json::Value = serde_json::from_str(&j).unwrap_or_else(|e| panic!("{e}\n{j}"));
        assert_eq!(v["consistent"], false);
        assert_eq!(v["totals"]["differences"], 5);
        assert_eq!(v["source_dbs"][0]["missing"]["keys"][0]["key"], "a\"b\\c\n");
        assert_eq!(v["source_dbs"][0]["value"]["count"], 3);
        assert_eq!(v["source_dbs"][0]["value"]["keys"].as_array().unwrap().len(), 2);
        assert_eq!(v["source_dbs"][0]["value"]["keys"][0]["key_hex"], "ff00");
        assert_eq!(v["target_dbs"][0]["db"], 1);
        assert_eq!(v["target_dbs"][0]["extra"]["keys"][0]["key"], "e");
        let mut text = Vec::new();
        r.write_text(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("... and 1 more") && text.contains("result: 5 differences"), "{text}");
    }

    #[test]
    fn empty_report_is_consistent_json() {
        let r = Report::new(one("s"), "t".into(), Some(10), 0, 5);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["consistent"], true);
        assert_eq!(v["mode"], "sample");
        assert_eq!(v["source_dbs"].as_array().unwrap().len(), 0);
    }

    fn one(addr: &str) -> Vec<SourceInfo> {
        vec![SourceInfo { addr: addr.into(), slots: None }]
    }

    #[test]
    fn one_source_is_not_named_several_are() {
        let mut r = Report::new(one("s:1"), "t:2".into(), None, 2000, 5);
        r.source_db(0, 0).checked = 1;
        let mut text = Vec::new();
        r.write_text(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("source db 0 -> target db 0: 1 keys compared: 0 missing, 0 type, 0 value, 0 ttl\n"), "{text}");
        assert!(!text.contains("source compared") && !text.contains("sources compared"), "{text}");
        assert!(!r.to_json().contains("\"sources\""));

        let sources = vec![
            SourceInfo { addr: "a:1".into(), slots: None },
            SourceInfo { addr: "b:2".into(), slots: SlotRanges::parse("0-8191") },
        ];
        let mut r = Report::new(sources, "t:2".into(), None, 2000, 5);
        r.source_db(0, 0).checked = 2;
        r.source_db(1, 0).in_earlier_source = 1;
        r.record(Category::Missing, 1, 0, b"m", "string not in target db 0".into());
        r.record(Category::Conflict, 0, 0, b"c", "also in b:2 db 0, and they differ: value".into());
        let mut text = Vec::new();
        r.write_text(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("source a:1,b:2 -> target t:2"), "{text}");
        assert!(text.contains("2 sources compared: a:1 (not a cluster node), b:2 (slots 0-8191)"), "{text}");
        assert!(text.contains("source b:2 db 0 -> target db 0: 0 keys compared: 1 missing, 0 type, 0 value, 0 ttl, 0 conflict; 1 also in an earlier source"), "{text}");
        assert!(text.contains("  conflict: \"c\""), "{text}");
        assert!(text.contains("result: 2 differences"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["sources"][1]["slots"], "0-8191");
        assert_eq!(v["sources"][0]["slots"], serde_json::Value::Null);
        assert_eq!(v["totals"]["conflict"], 1);
        assert_eq!(v["source_dbs"][1]["source"], "b:2");
        assert_eq!(v["source_dbs"][1]["missing"]["keys"][0]["key"], "m");
        assert_eq!(v["source_dbs"][0]["conflict"]["count"], 1);
    }
}
