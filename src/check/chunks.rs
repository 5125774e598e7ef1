//! Comparing one value window by window, so that no value is ever held whole.
//!
//! Ordered values are read from both sides in the same windows and compared in place:
//! strings with `GETRANGE`, lists with `LRANGE` (index windows), streams with `XRANGE ...
//! COUNT` (ID windows). Unordered values are walked on the source with `HSCAN` / `SSCAN` /
//! `ZSCAN` and each page is looked up on the target (`HMGET`, `SMISMEMBER`, `ZMSCORE`):
//! every source field or member must be on the target with the same value, which together
//! with equal sizes (checked before, `HLEN` / `SCARD` / `ZCARD`) proves the values equal. A
//! cursor may return an item twice; a lookup does not mind, where a digest (sum of hashes)
//! would. A difference names the field, member, index or offset.
//!
//! Windows are sized in bytes, not only in elements, so that a list of 10 MB elements is read
//! one element at a time: the first window aims at 64 KiB (at most 128 elements), judged from
//! the source's `MEMORY USAGE` of the key when it answers; later ones at about 1 MiB, judged
//! from the bytes per element seen so far. A [`Job`] is pure: it builds commands and judges
//! replies; `compare` sends them.

use crate::protocol::cursor::show;
use crate::target::resp::Reply;

use super::conn::{cmd, Args};
use super::scan::parse_scan;

/// Elements in a value's first window.
const FIRST_ELEMS: u64 = 128;
/// Reply bytes aimed at by a first window (and a string's first window).
const FIRST_BYTES: u64 = 64 << 10;
/// Reply bytes aimed at by later windows.
const STEP_BYTES: u64 = 1 << 20;
/// Elements in a later window, at most.
const MAX_ELEMS: u64 = 4096;
/// Assumed bytes per element before any was seen.
const GUESS_ELEM_BYTES: u64 = 64;

/// The value types compared by contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    List,
    Hash,
    Set,
    Zset,
    Stream,
}

impl Kind {
    /// From a `TYPE` reply; `None` for types compared by type and TTL only (e.g. ReJSON-RL).
    pub fn from_type(t: &str) -> Option<Kind> {
        Some(match t {
            "string" => Kind::Str,
            "list" => Kind::List,
            "hash" => Kind::Hash,
            "set" => Kind::Set,
            "zset" => Kind::Zset,
            "stream" => Kind::Stream,
            _ => return None,
        })
    }

    /// The command that gives the size (bytes of a string, elements otherwise).
    pub fn size_cmd(self, key: &[u8]) -> Args {
        let name: &[u8] = match self {
            Kind::Str => b"STRLEN",
            Kind::List => b"LLEN",
            Kind::Hash => b"HLEN",
            Kind::Set => b"SCARD",
            Kind::Zset => b"ZCARD",
            Kind::Stream => b"XLEN",
        };
        cmd(&[name, key])
    }

    fn unit(self) -> &'static str {
        match self {
            Kind::Str => "bytes",
            Kind::Hash => "fields",
            Kind::Set | Kind::Zset => "members",
            Kind::List | Kind::Stream => "elements",
        }
    }

    /// The message for sizes that differ.
    pub fn size_differs(self, src: i64, tgt: i64) -> String {
        format!("size differs: source {src} {u}, target {tgt} {u}", u = self.unit())
    }
}

/// Where a value's comparison stands after a window.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Compared to the end: equal.
    Same,
    /// Differs: how.
    Differs(String),
    /// More windows to go.
    More,
    /// The key changed type or vanished on a side meanwhile (a live source): not judged.
    Changed,
}

/// After the first half of a window: a verdict, or (unordered types) the lookup to send to
/// the target.
#[derive(Debug, PartialEq)]
pub enum AfterSource {
    Step(Step),
    Lookup(Args),
}

/// The comparison of one value.
#[derive(Debug)]
pub struct Job {
    pub key: Vec<u8>,
    pub kind: Kind,
    /// Bytes (string) or elements, from the size round.
    len: u64,
    /// Next byte offset (string) or index (list).
    pos: u64,
    /// Next stream ID to read from.
    from_id: Vec<u8>,
    /// Source cursor (unordered types).
    cursor: Vec<u8>,
    /// Windows done.
    pub windows: u64,
    /// Reply bytes per element seen so far.
    elem_bytes: u64,
    /// The source page waiting for its target lookup: (field or member, value or score).
    page: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Job {
    pub fn new(key: Vec<u8>, kind: Kind, len: u64) -> Job {
        Job { key, kind, len, pos: 0, from_id: b"-".to_vec(), cursor: b"0".to_vec(), windows: 0, elem_bytes: GUESS_ELEM_BYTES, page: Vec::new() }
    }

    /// What the source says the key takes in memory (`MEMORY USAGE`), to size the first
    /// window before any element was seen.
    pub fn set_memory_usage(&mut self, bytes: u64) {
        if self.windows == 0 && self.len > 0 {
            self.elem_bytes = (bytes / self.len).max(1);
        }
    }

    /// The next window: bytes (string) or elements.
    pub fn window(&self) -> u64 {
        let per = self.elem_bytes.max(1);
        match (self.kind, self.windows) {
            (Kind::Str, 0) => FIRST_BYTES,
            (Kind::Str, _) => STEP_BYTES,
            (_, 0) => (FIRST_BYTES / per).clamp(1, FIRST_ELEMS),
            _ => (STEP_BYTES / per).clamp(1, MAX_ELEMS),
        }
    }

    /// About how many reply bytes the next window brings, per side.
    pub fn expected_bytes(&self) -> u64 {
        match self.kind {
            Kind::Str => self.window().min(self.len.saturating_sub(self.pos)),
            _ => self.window().min(self.len.max(1)) * self.elem_bytes,
        }
    }

    /// The source's command for the next window, and the target's when the same window is
    /// read there too (ordered types).
    pub fn source_cmd(&self) -> (Args, Option<Args>) {
        let w = self.window();
        let k = self.key.as_slice();
        let n = w.to_string();
        let c = match self.kind {
            Kind::Str => cmd(&[b"GETRANGE", k, self.pos.to_string().as_bytes(), (self.pos + w - 1).to_string().as_bytes()]),
            Kind::List => cmd(&[b"LRANGE", k, self.pos.to_string().as_bytes(), (self.pos + w - 1).to_string().as_bytes()]),
            Kind::Stream => cmd(&[b"XRANGE", k, &self.from_id, b"+", b"COUNT", n.as_bytes()]),
            Kind::Hash => return (cmd(&[b"HSCAN", k, &self.cursor, b"COUNT", n.as_bytes()]), None),
            Kind::Set => return (cmd(&[b"SSCAN", k, &self.cursor, b"COUNT", n.as_bytes()]), None),
            Kind::Zset => return (cmd(&[b"ZSCAN", k, &self.cursor, b"COUNT", n.as_bytes()]), None),
        };
        (c.clone(), Some(c))
    }

    /// Judge the source's reply (and the target's, for ordered types).
    pub fn after_source(&mut self, src: Reply, tgt: Option<Reply>) -> Result<AfterSource, String> {
        if let Some(step) = errors(&src, "source").or_else(|| tgt.as_ref().and_then(|t| errors(t, "target"))) {
            return step.map(AfterSource::Step);
        }
        let w = self.window();
        self.windows += 1;
        let step = match (self.kind, tgt) {
            (Kind::Str, Some(t)) => {
                let (a, b) = (bulk(src, "source")?, bulk(t, "target")?);
                if let Some(i) = first_difference(&a, &b) {
                    Step::Differs(format!("bytes differ from offset {}", self.pos + i as u64))
                } else {
                    self.advance(w, a.len() as u64, w)
                }
            }
            (Kind::List, Some(t)) => {
                let (a, b) = (bulks(src, "source")?, bulks(t, "target")?);
                self.learn(&a);
                if let Some(i) = first_difference(&a, &b) {
                    let at = |v: &[Vec<u8>]| v.get(i).map_or("nothing".to_string(), |e| show(e));
                    Step::Differs(format!("element {} differs: source {}, target {}", self.pos + i as u64, at(&a), at(&b)))
                } else {
                    self.advance(a.len() as u64, a.len() as u64, w)
                }
            }
            (Kind::Stream, Some(t)) => {
                let (a, b) = (entries(src, "source")?, entries(t, "target")?);
                self.learn_bytes(a.iter().map(|e| e.0.len() + e.1.iter().map(|f| f.len() + 16).sum::<usize>()).sum(), a.len());
                if let Some(i) = first_difference(&a, &b) {
                    let id = |v: &[StreamEntry]| v.get(i).map_or("nothing".to_string(), |e| String::from_utf8_lossy(&e.0).into_owned());
                    Step::Differs(format!("stream entry {} differs (target: {})", id(&a), id(&b)))
                } else {
                    match a.last() {
                        Some(last) if a.len() as u64 >= w => {
                            self.from_id = next_id(&last.0).ok_or_else(|| format!("source: bad stream ID {}", show(&last.0)))?;
                            Step::More
                        }
                        _ => Step::Same,
                    }
                }
            }
            (kind, _) => {
                let (cursor, items) = parse_scan(src).map_err(|e| format!("source: {e}"))?;
                self.learn(&items);
                self.cursor = cursor;
                self.page = match kind {
                    Kind::Set => items.into_iter().map(|m| (m, Vec::new())).collect(),
                    _ => {
                        if items.len() % 2 != 0 {
                            return Err("source: a scan page with an odd number of items".into());
                        }
                        let mut it = items.into_iter();
                        std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
                    }
                };
                if self.page.is_empty() {
                    return Ok(AfterSource::Step(self.scan_step()));
                }
                let name: &[u8] = match kind {
                    Kind::Hash => b"HMGET",
                    Kind::Set => b"SMISMEMBER",
                    _ => b"ZMSCORE",
                };
                let mut c = cmd(&[name, &self.key]);
                c.extend(self.page.iter().map(|(m, _)| m.clone()));
                return Ok(AfterSource::Lookup(c));
            }
        };
        Ok(AfterSource::Step(step))
    }

    /// Judge the target's answer to the lookup of the last source page.
    pub fn after_lookup(&mut self, tgt: Reply) -> Result<Step, String> {
        if let Some(step) = errors(&tgt, "target") {
            return step;
        }
        let Reply::Array(Some(got)) = tgt else { return Err(format!("target: lookup answered {tgt:?}")) };
        if got.len() != self.page.len() {
            return Err(format!("target: {} answers for {} lookups", got.len(), self.page.len()));
        }
        for ((m, v), g) in std::mem::take(&mut self.page).into_iter().zip(got) {
            let verdict = match (self.kind, g) {
                (Kind::Set, Reply::Int(1)) => None,
                (Kind::Set, Reply::Int(0)) => Some(format!("member {} missing on the target", show(&m))),
                (Kind::Hash, Reply::Bulk(None)) => Some(format!("field {} missing on the target", show(&m))),
                (Kind::Hash, Reply::Bulk(Some(t))) => {
                    (t != v).then(|| format!("field {} differs: source {}, target {}", show(&m), show(&v), show(&t)))
                }
                (Kind::Zset, Reply::Bulk(None)) => Some(format!("member {} missing on the target", show(&m))),
                (Kind::Zset, Reply::Bulk(Some(t))) => (!same_score(&v, &t)).then(|| {
                    format!("member {} score differs: source {}, target {}", show(&m), String::from_utf8_lossy(&v), String::from_utf8_lossy(&t))
                }),
                (_, other) => return Err(format!("target: lookup of {} answered {other:?}", show(&m))),
            };
            if let Some(d) = verdict {
                return Ok(Step::Differs(d));
            }
        }
        Ok(self.scan_step())
    }

    fn scan_step(&self) -> Step {
        if self.cursor == b"0" {
            Step::Same
        } else {
            Step::More
        }
    }

    /// Learn the bytes per element from a page of items (members, or fields and values).
    /// An equal window of `got` items (or bytes) was read, asking for `asked`: move on by
    /// `by`. A short window or the known length reached means the key is done.
    fn advance(&mut self, by: u64, got: u64, asked: u64) -> Step {
        self.pos += by;
        if got < asked || self.pos >= self.len {
            Step::Same
        } else {
            Step::More
        }
    }

    fn learn(&mut self, items: &[Vec<u8>]) {
        let per_element = match self.kind {
            Kind::Hash | Kind::Zset => 2,
            _ => 1,
        };
        self.learn_bytes(items.iter().map(|i| i.len() + 16).sum(), items.len() / per_element);
    }

    fn learn_bytes(&mut self, bytes: usize, elements: usize) {
        if let Some(per) = bytes.checked_div(elements) {
            self.elem_bytes = per.max(1) as u64;
        }
    }
}

/// A reply error: `WRONGTYPE` means the key changed meanwhile; anything else stops the check.
fn errors(r: &Reply, side: &str) -> Option<Result<Step, String>> {
    match r {
        Reply::Error(e) if e.starts_with("WRONGTYPE") => Some(Ok(Step::Changed)),
        Reply::Error(e) => Some(Err(format!("{side}: {e}"))),
        _ => None,
    }
}

fn bulk(r: Reply, side: &str) -> Result<Vec<u8>, String> {
    match r {
        Reply::Bulk(b) => Ok(b.unwrap_or_default()),
        other => Err(format!("{side}: expected a string, got {other:?}")),
    }
}

fn bulks(r: Reply, side: &str) -> Result<Vec<Vec<u8>>, String> {
    match r {
        Reply::Array(items) => items.unwrap_or_default().into_iter().map(|i| bulk(i, side)).collect(),
        other => Err(format!("{side}: expected an array, got {other:?}")),
    }
}

/// A stream entry as `XRANGE` gives it: its ID, then its fields and values.
type StreamEntry = (Vec<u8>, Vec<Vec<u8>>);

/// `XRANGE` entries.
fn entries(r: Reply, side: &str) -> Result<Vec<StreamEntry>, String> {
    let Reply::Array(items) = r else { return Err(format!("{side}: expected stream entries, got {r:?}")) };
    items
        .unwrap_or_default()
        .into_iter()
        .map(|e| match e {
            Reply::Array(Some(mut parts)) if parts.len() == 2 => {
                let fields = bulks(parts.pop().unwrap_or(Reply::Bulk(None)), side)?;
                Ok((bulk(parts.pop().unwrap_or(Reply::Bulk(None)), side)?, fields))
            }
            other => Err(format!("{side}: expected a stream entry, got {other:?}")),
        })
        .collect()
}

/// The first index where `a` and `b` differ (one being shorter counts).
fn first_difference<T: PartialEq>(a: &[T], b: &[T]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y).or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))
}

/// The stream ID right after `id` (`ms-seq`).
fn next_id(id: &[u8]) -> Option<Vec<u8>> {
    let (ms, seq) = std::str::from_utf8(id).ok()?.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    let (ms, seq) = match seq.checked_add(1) {
        Some(s) => (ms, s),
        None => (ms.checked_add(1)?, 0),
    };
    Some(format!("{ms}-{seq}").into_bytes())
}

/// Scores as two servers may print them ("1.5" and "1.50", "inf" and "+inf"): equal as
/// numbers.
fn same_score(a: &[u8], b: &[u8]) -> bool {
    let num = |s: &[u8]| -> Option<f64> {
        let t = std::str::from_utf8(s).ok()?.trim().to_ascii_lowercase();
        match t.as_str() {
            "inf" | "+inf" => Some(f64::INFINITY),
            "-inf" => Some(f64::NEG_INFINITY),
            _ => t.parse().ok(),
        }
    };
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Reply {
        Reply::Bulk(Some(s.as_bytes().to_vec()))
    }
    fn arr(v: Vec<Reply>) -> Reply {
        Reply::Array(Some(v))
    }

    #[test]
    fn strings_in_windows() {
        let mut j = Job::new(b"k".to_vec(), Kind::Str, 10);
        let (s, t) = j.source_cmd();
        assert_eq!(s, cmd(&[b"GETRANGE", b"k", b"0", b"65535"]));
        assert_eq!(t.as_ref(), Some(&s));
        assert_eq!(j.after_source(b("0123456789"), Some(b("0123456789"))).unwrap(), AfterSource::Step(Step::Same));
        let mut j = Job::new(b"k".to_vec(), Kind::Str, 10);
        assert_eq!(
            j.after_source(b("0123456789"), Some(b("0123X56789"))).unwrap(),
            AfterSource::Step(Step::Differs("bytes differ from offset 4".into()))
        );
        let mut j = Job::new(b"k".to_vec(), Kind::Str, 200_000);
        assert_eq!(j.after_source(b(&"a".repeat(65536)), Some(b(&"a".repeat(65536)))).unwrap(), AfterSource::Step(Step::More));
        assert_eq!(j.source_cmd().0, cmd(&[b"GETRANGE", b"k", b"65536", b"1114111"]));
    }

    #[test]
    fn lists_name_the_index() {
        let mut j = Job::new(b"l".to_vec(), Kind::List, 3);
        let r = j.after_source(arr(vec![b("a"), b("b"), b("c")]), Some(arr(vec![b("a"), b("x"), b("c")]))).unwrap();
        assert_eq!(r, AfterSource::Step(Step::Differs("element 1 differs: source \"b\", target \"x\"".into())));
        let mut j = Job::new(b"l".to_vec(), Kind::List, 3);
        let r = j.after_source(arr(vec![b("a"), b("b"), b("c")]), Some(arr(vec![b("a"), b("b")]))).unwrap();
        assert_eq!(r, AfterSource::Step(Step::Differs("element 2 differs: source \"c\", target nothing".into())));
        let mut j = Job::new(b"l".to_vec(), Kind::List, 3);
        assert_eq!(j.after_source(Reply::Error("WRONGTYPE x".into()), Some(arr(vec![]))).unwrap(), AfterSource::Step(Step::Changed));
        assert!(j.after_source(Reply::Error("ERR boom".into()), Some(arr(vec![]))).is_err());
    }

    #[test]
    fn later_windows_follow_element_size() {
        let mut j = Job::new(b"l".to_vec(), Kind::List, 100_000);
        let page: Vec<Reply> = (0..128).map(|_| b(&"x".repeat(1000))).collect();
        assert_eq!(j.after_source(arr(page.clone()), Some(arr(page))).unwrap(), AfterSource::Step(Step::More));
        assert_eq!(j.window(), STEP_BYTES / 1016);
        assert_eq!(j.source_cmd().0, cmd(&[b"LRANGE", b"l", b"128", (128 + j.window() - 1).to_string().as_bytes()]));
        // Elements of 10 MB: one per window, from the first one on.
        let mut j = Job::new(b"l".to_vec(), Kind::List, 50);
        j.set_memory_usage(500 << 20);
        assert_eq!(j.window(), 1);
        let mut j = Job::new(b"l".to_vec(), Kind::List, 50);
        j.set_memory_usage(5000);
        assert_eq!(j.window(), FIRST_ELEMS);
    }

    #[test]
    fn hashes_are_looked_up_on_the_target() {
        let mut j = Job::new(b"h".to_vec(), Kind::Hash, 2);
        let page = arr(vec![b("7"), arr(vec![b("f1"), b("v1"), b("f2"), b("v2")])]);
        let AfterSource::Lookup(c) = j.after_source(page, None).unwrap() else { panic!() };
        assert_eq!(c, cmd(&[b"HMGET", b"h", b"f1", b"f2"]));
        assert_eq!(j.after_lookup(arr(vec![b("v1"), b("v2")])).unwrap(), Step::More);
        assert_eq!(j.source_cmd().0[2], b"7");
        let page = arr(vec![b("0"), arr(vec![b("f3"), b("v3")])]);
        assert!(matches!(j.after_source(page, None).unwrap(), AfterSource::Lookup(_)));
        assert_eq!(j.after_lookup(arr(vec![Reply::Bulk(None)])).unwrap(), Step::Differs("field \"f3\" missing on the target".into()));
    }

    #[test]
    fn sets_and_zsets() {
        let mut j = Job::new(b"s".to_vec(), Kind::Set, 2);
        let AfterSource::Lookup(c) = j.after_source(arr(vec![b("0"), arr(vec![b("a"), b("b")])]), None).unwrap() else { panic!() };
        assert_eq!(c, cmd(&[b"SMISMEMBER", b"s", b"a", b"b"]));
        assert_eq!(j.after_lookup(arr(vec![Reply::Int(1), Reply::Int(0)])).unwrap(), Step::Differs("member \"b\" missing on the target".into()));
        let mut j = Job::new(b"z".to_vec(), Kind::Zset, 2);
        let AfterSource::Lookup(_) = j.after_source(arr(vec![b("0"), arr(vec![b("a"), b("1.5"), b("b"), b("inf")])]), None).unwrap() else {
            panic!()
        };
        assert_eq!(j.after_lookup(arr(vec![b("1.50"), b("+inf")])).unwrap(), Step::Same);
        let mut j = Job::new(b"z".to_vec(), Kind::Zset, 1);
        let AfterSource::Lookup(_) = j.after_source(arr(vec![b("0"), arr(vec![b("a"), b("1")])]), None).unwrap() else { panic!() };
        assert_eq!(j.after_lookup(arr(vec![b("2")])).unwrap(), Step::Differs("member \"a\" score differs: source 1, target 2".into()));
        // An empty last page ends the walk without a lookup.
        let mut j = Job::new(b"s".to_vec(), Kind::Set, 1);
        assert_eq!(j.after_source(arr(vec![b("0"), arr(vec![])]), None).unwrap(), AfterSource::Step(Step::Same));
    }

    #[test]
    fn streams_by_id_windows() {
        let e = |id: &str, v: &str| arr(vec![b(id), arr(vec![b("f"), b(v)])]);
        let mut j = Job::new(b"x".to_vec(), Kind::Stream, 300);
        let page: Vec<Reply> = (0..128).map(|i| e(&format!("5-{i}"), "v")).collect();
        assert_eq!(j.after_source(arr(page.clone()), Some(arr(page))).unwrap(), AfterSource::Step(Step::More));
        assert_eq!(j.source_cmd().0[2], b"5-128");
        let r = j.after_source(arr(vec![e("6-0", "a")]), Some(arr(vec![e("6-0", "b")]))).unwrap();
        assert_eq!(r, AfterSource::Step(Step::Differs("stream entry 6-0 differs (target: 6-0)".into())));
        assert_eq!(next_id(b"1-18446744073709551615"), Some(b"2-0".to_vec()));
        assert_eq!(next_id(b"x"), None);
    }
}
