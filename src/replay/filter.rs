//! Which keys are replicated: include/exclude rules on key names, and a set of source dbs.
//!
//! A key passes when its source db is selected (`--dbs`, all by default), it matches at least
//! one `--include` rule (or there is none) and no `--exclude` rule. The [`Replayer`] applies
//! the same [`Filter`] to snapshot entries and to journal records, before the db mapping: rules
//! are about the source (its dbs, its key names).
//!
//! A journal record whose keys fall on both sides of the rules is split when that is exact
//! (`DEL`, `UNLINK`, `TOUCH`, `EXISTS` keep the passing keys, `MSET` the passing pairs) and is
//! an error otherwise: a `RENAME` from a kept key to a dropped one cannot be half applied, and
//! applying it whole would write outside the filter. `FLUSHDB`/`FLUSHALL` would empty target
//! dbs that may hold keys the filter never copied; they stop the run unless `--on-flush flush`.
//!
//! [`Replayer`]: super::Replayer

use std::collections::BTreeSet;

use crate::protocol::cursor::show;
use crate::protocol::Argv;
use crate::target::keyspec::keys_of;

/// One `--include` / `--exclude` pattern.
#[derive(Debug, Clone)]
pub struct Rule {
    /// As given (with its kind prefix, if any), for messages.
    text: String,
    pat: Pattern,
}

#[derive(Debug, Clone)]
enum Pattern {
    Prefix(Vec<u8>),
    Glob(Glob),
    Regex(regex::bytes::Regex),
}

impl Rule {
    /// `prefix:TEXT`, `glob:PATTERN`, `regex:RE`, or a bare glob. Errors say what is wrong with
    /// the pattern (the caller adds the flag).
    pub fn parse(s: &str) -> Result<Rule, String> {
        let pat = if let Some(p) = s.strip_prefix("prefix:") {
            if p.is_empty() {
                return Err(format!("{s:?}: an empty prefix matches every key"));
            }
            Pattern::Prefix(p.as_bytes().to_vec())
        } else if let Some(p) = s.strip_prefix("regex:") {
            // Byte-oriented, as keys are bytes: `.` is any byte but \n, classes and (?i) are
            // ASCII. Unanchored, as grep: anchor with ^ and $.
            let re = regex::bytes::RegexBuilder::new(p)
                .unicode(false)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("{s:?} is not a valid regex: {}", one_line(&e.to_string())))?;
            Pattern::Regex(re)
        } else {
            let p = s.strip_prefix("glob:").unwrap_or(s);
            if p.is_empty() {
                return Err(format!("{s:?}: an empty glob matches only the empty key (use glob:* for every key)"));
            }
            Pattern::Glob(Glob::parse(p.as_bytes()).map_err(|e| format!("{s:?} is not a valid glob: {e}"))?)
        };
        Ok(Rule { text: s.to_string(), pat })
    }

    pub fn matches(&self, key: &[u8]) -> bool {
        match &self.pat {
            Pattern::Prefix(p) => key.starts_with(p),
            Pattern::Glob(g) => g.matches(key),
            Pattern::Regex(r) => r.is_match(key),
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a filtered run does when the master empties a db (`FLUSHDB`, `FLUSHALL`), and when a
/// full resync would empty the target (`--on-resync flush`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFlush {
    /// Stop with an error: the target db may hold keys the filter never copied.
    #[default]
    Stop,
    /// Run the flush on the target as it is (its target db, or every db), keys outside the
    /// filter included.
    Flush,
}

/// The rules of a run. The default passes everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub include: Vec<Rule>,
    pub exclude: Vec<Rule>,
    /// Only these source dbs (`None`: all).
    pub dbs: Option<BTreeSet<u32>>,
    pub on_flush: OnFlush,
}

/// What to do with one journal record.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Replay it as it is.
    Keep,
    /// Leave it out: none of its keys pass (or its db is not selected).
    Drop,
    /// Replay this command instead: the record with its failing keys removed.
    Split(Argv),
}

impl Filter {
    /// Whether any rule is set (the default filter passes everything and costs nothing).
    pub fn is_active(&self) -> bool {
        self.has_key_rules() || self.dbs.is_some()
    }

    pub fn has_key_rules(&self) -> bool {
        !self.include.is_empty() || !self.exclude.is_empty()
    }

    pub fn db_passes(&self, db: u32) -> bool {
        self.dbs.as_ref().is_none_or(|d| d.contains(&db))
    }

    pub fn key_passes(&self, key: &[u8]) -> bool {
        (self.include.is_empty() || self.include.iter().any(|r| r.matches(key))) && !self.exclude.iter().any(|r| r.matches(key))
    }

    pub fn passes(&self, db: u32, key: &[u8]) -> bool {
        self.db_passes(db) && self.key_passes(key)
    }

    /// Why `key` does not pass the key rules (`None` when it does), naming the rule.
    pub fn why_not(&self, key: &[u8]) -> Option<String> {
        if let Some(r) = self.exclude.iter().find(|r| r.matches(key)) {
            return Some(format!("matches --exclude {}", r.text));
        }
        if !self.include.is_empty() && !self.include.iter().any(|r| r.matches(key)) {
            let all: Vec<&str> = self.include.iter().map(|r| r.text.as_str()).collect();
            return Some(format!("matches no --include ({})", all.join(", ")));
        }
        None
    }

    /// The fate of a journal record (not a PING) of source db `db`.
    pub fn record(&self, db: u32, argv: &Argv) -> Result<Verdict, String> {
        let name = argv.get(0).unwrap_or_default();
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        if is(b"FLUSHDB") || is(b"FLUSHALL") {
            return self.flush(db, argv);
        }
        if !self.db_passes(db) {
            return Ok(Verdict::Drop);
        }
        if !self.has_key_rules() {
            return Ok(Verdict::Keep);
        }
        let keys = keys_of(argv);
        let idx = keys.indices();
        let pass: Vec<bool> = idx.iter().map(|&i| self.key_passes(argv.get(i).unwrap_or_default())).collect();
        // Keyless records (PUBLISH, FT.*, scripts without keys) are not about keys: kept.
        if pass.iter().all(|&p| p) {
            return Ok(Verdict::Keep);
        }
        if pass.iter().all(|&p| !p) {
            return Ok(Verdict::Drop);
        }
        // Split where the parts are independent of each other.
        let (group, out_name): (usize, &[u8]) = if is(b"DEL") || is(b"UNLINK") || is(b"TOUCH") || is(b"EXISTS") || is(b"STICK") {
            (1, name)
        } else if (is(b"MSET") || is(b"MSETNX")) && argv.len() % 2 == 1 {
            // Dragonfly journals MSETNX as MSET per shard (protocol doc 7.5): what reaches us is
            // already the outcome, so the passing pairs are set unconditionally.
            (2, b"MSET")
        } else {
            return Err(self.mixed(db, argv, idx, &pass));
        };
        let mut a = Argv::with_capacity(argv.byte_len(), argv.len());
        a.push(out_name);
        for (&i, _) in idx.iter().zip(&pass).filter(|(_, p)| **p) {
            for j in i..i + group {
                a.push(argv.get(j).unwrap_or_default());
            }
        }
        Ok(Verdict::Split(a))
    }

    fn flush(&self, db: u32, argv: &Argv) -> Result<Verdict, String> {
        let all = argv.get(0).is_some_and(|n| n.eq_ignore_ascii_case(b"FLUSHALL"));
        if !all && !self.db_passes(db) {
            // Nothing of that db was copied: nothing to empty.
            return Ok(Verdict::Drop);
        }
        // FLUSHDB of a selected db with only --dbs rules: the target db holds that source db's
        // keys and nothing else of the master's, as without a filter.
        if (!all && !self.has_key_rules()) || !self.is_active() || self.on_flush == OnFlush::Flush {
            return Ok(Verdict::Keep);
        }
        let what = if all { "FLUSHALL (every db)".to_string() } else { format!("FLUSHDB in source db {db}") };
        let scope = if all { "every target db" } else { "its target db" };
        Err(format!(
            "the master ran {what} while a filter is active ({}): flushing {scope} would also delete keys the filter \
             never copied, which may belong to others, and deleting only the filtered keys is not supported. Stopping. \
             Empty the filtered keys yourself and restart, or accept flushing the whole target db with --on-flush flush \
             (file key filter.on_flush)",
            self.describe()
        ))
    }

    fn mixed(&self, db: u32, argv: &Argv, idx: &[usize], pass: &[bool]) -> String {
        let shown: Vec<String> = idx
            .iter()
            .zip(pass)
            .take(6)
            .map(|(&i, &p)| {
                let k = argv.get(i).unwrap_or_default();
                if p {
                    format!("{} (kept)", show(k))
                } else {
                    format!("{} (dropped: {})", show(k), self.why_not(k).unwrap_or_default())
                }
            })
            .collect();
        let more = if idx.len() > 6 { format!(" and {} more", idx.len() - 6) } else { String::new() };
        format!(
            "journal record {} in source db {db} has keys on both sides of the filter: {}{more}. Replaying part of it \
             would change what it does, and replaying it whole would write outside the filter. Stopping: change \
             --include/--exclude so that its keys fall on the same side",
            argv.name_upper(),
            shown.join(", ")
        )
    }

    /// The rules in one line, as flags.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.include.iter().map(|r| format!("--include {}", r.text)));
        parts.extend(self.exclude.iter().map(|r| format!("--exclude {}", r.text)));
        if let Some(d) = &self.dbs {
            parts.push(format!("--dbs {}", d.iter().map(u32::to_string).collect::<Vec<_>>().join(",")));
        }
        parts.join(" ")
    }
}

/// `--dbs 0,2,5` -> {0, 2, 5}.
pub fn parse_dbs(s: &str) -> Result<BTreeSet<u32>, String> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let db = part.parse::<u32>().map_err(|_| format!("{part:?} is not a db number (expected e.g. 0,2)"))?;
        out.insert(db);
    }
    if out.is_empty() {
        return Err(format!("{s:?} names no db (expected e.g. 0,2)"));
    }
    Ok(out)
}

/// A Redis-style glob, compiled: `*` any run of bytes, `?` one byte, `[abc]`, `[a-z]`,
/// `[^a]` a byte of (or not of) a class, `\x` the byte `x` literally (also inside a class).
/// Matching is on bytes and case-sensitive, as Redis's `KEYS`/`SCAN MATCH`.
#[derive(Debug, Clone, PartialEq)]
pub struct Glob {
    toks: Vec<Tok>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(u8),
    Any,
    Star,
    /// Inclusive byte ranges; `negated` for `[^...]`.
    Class {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

impl Glob {
    /// Unlike Redis, which reads an unterminated `[` or a trailing `\` somehow, these are
    /// errors: a filter must mean what its author thinks.
    pub fn parse(p: &[u8]) -> Result<Glob, String> {
        let mut toks = Vec::new();
        let mut i = 0;
        while i < p.len() {
            match p[i] {
                b'*' => {
                    if toks.last() != Some(&Tok::Star) {
                        toks.push(Tok::Star);
                    }
                }
                b'?' => toks.push(Tok::Any),
                b'\\' => {
                    i += 1;
                    let &c = p.get(i).ok_or("it ends with a lone \\ (escape it as \\\\)")?;
                    toks.push(Tok::Lit(c));
                }
                b'[' => {
                    let start = i;
                    i += 1;
                    let negated = p.get(i) == Some(&b'^');
                    if negated {
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    loop {
                        let Some(&c) = p.get(i) else {
                            return Err(format!("the [ at offset {start} is not closed by ]"));
                        };
                        if c == b']' {
                            break;
                        }
                        let lo = if c == b'\\' {
                            i += 1;
                            *p.get(i).ok_or(format!("the [ at offset {start} is not closed by ]"))?
                        } else {
                            c
                        };
                        // `a-z`; a `-` first or last in the class is itself.
                        if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|&e| e != b']') {
                            i += 2;
                            let mut hi = p[i];
                            if hi == b'\\' {
                                i += 1;
                                hi = *p.get(i).ok_or(format!("the [ at offset {start} is not closed by ]"))?;
                            }
                            // Redis accepts reversed ranges as the same range.
                            ranges.push((lo.min(hi), lo.max(hi)));
                        } else {
                            ranges.push((lo, lo));
                        }
                        i += 1;
                    }
                    toks.push(Tok::Class { negated, ranges });
                }
                c => toks.push(Tok::Lit(c)),
            }
            i += 1;
        }
        Ok(Glob { toks })
    }

    /// Iterative matching with one backtrack point (the last `*`): O(pattern x key) at worst,
    /// never exponential.
    pub fn matches(&self, s: &[u8]) -> bool {
        let t = &self.toks;
        let (mut ti, mut si) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            match t.get(ti) {
                Some(Tok::Star) => {
                    star = Some((ti, si));
                    ti += 1;
                    continue;
                }
                Some(tok) if tok.one(s[si]) => {
                    ti += 1;
                    si += 1;
                    continue;
                }
                _ => {}
            }
            // Mismatch: let the last star take one more byte, or fail.
            match star {
                Some((st, ss)) => {
                    star = Some((st, ss + 1));
                    ti = st + 1;
                    si = ss + 1;
                }
                None => return false,
            }
        }
        t[ti..].iter().all(|x| *x == Tok::Star)
    }
}

impl Tok {
    fn one(&self, c: u8) -> bool {
        match self {
            Tok::Lit(l) => *l == c,
            Tok::Any => true,
            Tok::Star => false,
            Tok::Class { negated, ranges } => ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&c)) != *negated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str, s: &str) -> bool {
        Glob::parse(p.as_bytes()).unwrap().matches(s.as_bytes())
    }

    #[test]
    fn globs_match_as_redis_does() {
        let yes = [
            ("*", ""),
            ("*", "anything"),
            ("user:*", "user:"),
            ("user:*", "user:42"),
            ("*:42", "user:42"),
            ("u*r*2", "user:42"),
            ("h?llo", "hello"),
            ("h?llo", "hallo"),
            ("h[ae]llo", "hallo"),
            ("h[^e]llo", "hallo"),
            ("h[a-b]llo", "hbllo"),
            ("h[b-a]llo", "hallo"),
            ("a\\*b", "a*b"),
            ("a\\?", "a?"),
            ("[\\]]", "]"),
            ("[a-]", "-"),
            ("[-a]", "-"),
            ("**a**", "xxa"),
            ("*a*b*c*", "xaybzc"),
            ("exact", "exact"),
        ];
        for (p, s) in yes {
            assert!(glob(p, s), "{p} should match {s:?}");
        }
        let no = [
            ("user:*", "users"),
            ("h?llo", "hllo"),
            ("h[ae]llo", "hillo"),
            ("h[^e]llo", "hello"),
            ("a\\*b", "axb"),
            ("*a*b*c*", "xaybz"),
            ("exact", "exactly"),
            ("exact", "Exact"),
            ("?", ""),
        ];
        for (p, s) in no {
            assert!(!glob(p, s), "{p} should not match {s:?}");
        }
        // Binary keys: bytes, not characters.
        let g = Glob::parse(b"k?\xff*").unwrap();
        assert!(g.matches(b"k\x00\xff\x01") && !g.matches(b"k\xff"));
        // Many stars on a long miss stays fast (no exponential backtracking).
        let g = Glob::parse("*a*a*a*a*a*a*a*a*b".as_bytes()).unwrap();
        assert!(!g.matches(&[b'a'; 5000]));
    }

    #[test]
    fn bad_globs_are_errors_naming_the_problem() {
        for (p, want) in [("user:[a-z", "not closed"), ("a\\", "lone \\"), ("[\\", "not closed"), ("[a-\\", "not closed")] {
            let e = Glob::parse(p.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{p}: {e}");
        }
    }

    #[test]
    fn rules_by_kind() {
        let r = Rule::parse("prefix:user:").unwrap();
        assert!(r.matches(b"user:1") && !r.matches(b"users"));
        // A bare pattern is a glob; `prefix:` text is not a glob.
        let r = Rule::parse("user:*").unwrap();
        assert!(r.matches(b"user:1") && !r.matches(b"xuser:1"));
        let r = Rule::parse("prefix:a*").unwrap();
        assert!(r.matches(b"a*b") && !r.matches(b"ab"));
        let r = Rule::parse("glob:prefix:x").unwrap();
        assert!(r.matches(b"prefix:x"));
        // Regexes are unanchored and byte-oriented.
        let r = Rule::parse("regex:^a.*z$").unwrap();
        assert!(r.matches(b"a\xffz") && !r.matches(b"ba z"));
        let r = Rule::parse("regex:[0-9]{3}").unwrap();
        assert!(r.matches(b"order:123:x") && !r.matches(b"order:12"));
        let r = Rule::parse("regex:(?i)^USER:").unwrap();
        assert!(r.matches(b"user:1"));
        for (bad, want) in
            [("regex:(", "not a valid regex"), ("glob:[", "not a valid glob"), ("prefix:", "empty prefix"), ("", "empty glob")]
        {
            let e = Rule::parse(bad).unwrap_err();
            assert!(e.contains(want) && e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }

    fn filter(inc: &[&str], exc: &[&str]) -> Filter {
        Filter {
            include: inc.iter().map(|s| Rule::parse(s).unwrap()).collect(),
            exclude: exc.iter().map(|s| Rule::parse(s).unwrap()).collect(),
            ..Filter::default()
        }
    }

    fn av(s: &str) -> Argv {
        Argv::from_slices(&s.split(' ').collect::<Vec<_>>())
    }

    #[test]
    fn include_any_and_exclude_none() {
        let f = filter(&["prefix:user:", "glob:order:*"], &["glob:*:tmp"]);
        assert!(f.key_passes(b"user:1") && f.key_passes(b"order:9"));
        assert!(!f.key_passes(b"cart:1") && !f.key_passes(b"user:1:tmp"));
        assert_eq!(f.why_not(b"user:1:tmp").unwrap(), "matches --exclude glob:*:tmp");
        assert_eq!(f.why_not(b"cart:1").unwrap(), "matches no --include (prefix:user:, glob:order:*)");
        assert_eq!(f.why_not(b"user:2"), None);
        // Excludes only: everything else passes.
        let f = filter(&[], &["prefix:cache:"]);
        assert!(f.key_passes(b"x") && !f.key_passes(b"cache:1"));
        assert!(!Filter::default().is_active() && Filter::default().passes(7, b"any"));
        let f = Filter { dbs: Some(parse_dbs("0, 2").unwrap()), ..Filter::default() };
        assert!(f.passes(2, b"k") && !f.passes(1, b"k") && f.is_active() && !f.has_key_rules());
        assert!(parse_dbs("0,x").unwrap_err().contains("\"x\""));
        assert!(parse_dbs(" , ").is_err());
    }

    #[test]
    fn records_are_kept_dropped_or_split() {
        let f = filter(&["prefix:a:"], &[]);
        assert_eq!(f.record(0, &av("SET a:1 v")).unwrap(), Verdict::Keep);
        assert_eq!(f.record(0, &av("SET b:1 v")).unwrap(), Verdict::Drop);
        assert_eq!(f.record(0, &av("PUBLISH ch m")).unwrap(), Verdict::Keep);
        assert_eq!(f.record(0, &av("XGROUP CREATE b:1 g $")).unwrap(), Verdict::Drop);
        assert_eq!(f.record(0, &av("DEL a:1 b:1 a:2")).unwrap(), Verdict::Split(av("DEL a:1 a:2")));
        assert_eq!(f.record(0, &av("unlink b:1 a:2")).unwrap(), Verdict::Split(av("unlink a:2")));
        assert_eq!(f.record(0, &av("MSET a:1 x b:1 y a:2 z")).unwrap(), Verdict::Split(av("MSET a:1 x a:2 z")));
        assert_eq!(f.record(0, &av("MSETNX b:1 y a:2 z")).unwrap(), Verdict::Split(av("MSET a:2 z")));
        assert_eq!(f.record(0, &av("RENAME a:1 a:2")).unwrap(), Verdict::Keep);
        assert_eq!(f.record(0, &av("RENAME b:1 b:2")).unwrap(), Verdict::Drop);
        for c in [
            "RENAME a:1 b:1",
            "SMOVE b:1 a:1 m",
            "LMOVE a:1 b:1 LEFT RIGHT",
            "SINTERSTORE a:1 b:1",
            "COPY b:1 a:1",
            "MSET a:1 x b:1",
        ] {
            let e = f.record(0, &av(c)).unwrap_err();
            let name = c.split(' ').next().unwrap();
            assert!(e.contains(&format!("journal record {name} in source db 0")), "{e}");
            assert!(e.contains("\"a:1\" (kept)") && e.contains("\"b:1\" (dropped: matches no --include (prefix:a:))"), "{e}");
        }
        // The db rule comes first.
        let f = Filter { dbs: Some([1].into()), ..filter(&["prefix:a:"], &[]) };
        assert_eq!(f.record(0, &av("SET a:1 v")).unwrap(), Verdict::Drop);
        assert_eq!(f.record(0, &av("RENAME a:1 b:1")).unwrap(), Verdict::Drop);
    }

    #[test]
    fn flushes_under_a_filter() {
        let dbs = Filter { dbs: Some([1].into()), ..Filter::default() };
        assert_eq!(dbs.record(0, &av("FLUSHDB")).unwrap(), Verdict::Drop);
        assert_eq!(dbs.record(1, &av("FLUSHDB")).unwrap(), Verdict::Keep);
        let e = dbs.record(1, &av("FLUSHALL")).unwrap_err();
        assert!(e.contains("FLUSHALL (every db)") && e.contains("--dbs 1") && e.contains("--on-flush flush"), "{e}");
        let keys = filter(&["prefix:a:"], &[]);
        let e = keys.record(3, &av("FLUSHDB")).unwrap_err();
        assert!(e.contains("FLUSHDB in source db 3") && e.contains("--include prefix:a:"), "{e}");
        let opted = Filter { on_flush: OnFlush::Flush, ..keys };
        assert_eq!(opted.record(3, &av("FLUSHDB")).unwrap(), Verdict::Keep);
        assert_eq!(opted.record(3, &av("FLUSHALL")).unwrap(), Verdict::Keep);
        assert_eq!(Filter::default().record(0, &av("FLUSHALL")).unwrap(), Verdict::Keep);
    }
}
