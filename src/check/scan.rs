//! Walking the keys of one db: `SCAN` pages from the server, or from every master of a
//! cluster in turn; which dbs hold keys (`INFO KEYSPACE`); and how a `--sample` is shared
//! among the dbs.

use std::collections::BTreeMap;

use crate::target::resp::Reply;

use super::conn::{cmd, Args};
use super::side::Side;
use super::CheckError;

/// Keys per db, from the text of `INFO KEYSPACE` (`db1:keys=4,expires=0,avg_ttl=0`).
pub fn parse_keyspace(text: &str) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((db, rest)) = line.trim().strip_prefix("db").and_then(|l| l.split_once(':')) else { continue };
        let keys: Option<u64> = rest.split(',').find_map(|kv| kv.strip_prefix("keys=")).and_then(|k| k.trim().parse().ok());
        if let (Ok(db), Some(keys)) = (db.parse::<u32>(), keys) {
            *out.entry(db).or_insert(0) += keys;
        }
    }
    out
}

/// Keys per db of a side (summed over the masters of a cluster); dbs without keys are left
/// out.
pub fn keyspace(side: &mut Side) -> Result<BTreeMap<u32, u64>, CheckError> {
    let mut out = BTreeMap::new();
    for c in side.scan_nodes() {
        match c.query(&cmd(&[b"INFO", b"KEYSPACE"]))? {
            Reply::Bulk(Some(text)) => {
                for (db, n) in parse_keyspace(&String::from_utf8_lossy(&text)) {
                    *out.entry(db).or_insert(0) += n;
                }
            }
            other => return Err(c.error(format!("INFO KEYSPACE answered {other:?}"))),
        }
    }
    out.retain(|_, n| *n > 0);
    Ok(out)
}

/// Share `sample` keys among the dbs (of every source) in proportion to their key counts (rounded up, so every
/// db with keys gets at least one).
pub fn shares<K: Ord + Copy>(sample: u64, counts: &BTreeMap<K, u64>) -> BTreeMap<K, u64> {
    let total: u64 = counts.values().sum();
    counts
        .iter()
        .map(|(&db, &n)| {
            let share = if total == 0 { 0 } else { ((sample as u128 * n as u128).div_ceil(total as u128)) as u64 };
            (db, share.min(n).max(1))
        })
        .collect()
}

/// A `SCAN` over one db of a side: one node after the other for a cluster.
pub struct Scanner {
    db: u32,
    node: usize,
    cursor: Vec<u8>,
    done: bool,
}

impl Scanner {
    pub fn new(db: u32) -> Scanner {
        Scanner { db, node: 0, cursor: b"0".to_vec(), done: false }
    }

    /// The next page of keys (possibly empty), or `None` when the whole db was walked.
    pub fn next_page(&mut self, side: &mut Side, count: usize) -> Result<Option<Vec<Vec<u8>>>, CheckError> {
        if self.done {
            return Ok(None);
        }
        let mut nodes = side.scan_nodes();
        let Some(conn) = nodes.get_mut(self.node) else {
            self.done = true;
            return Ok(None);
        };
        let n = count.to_string();
        let scan: Args = cmd(&[b"SCAN", &self.cursor, b"COUNT", n.as_bytes()]);
        let reply = conn.query_in(self.db, &scan)?;
        let (next, keys) = parse_scan(reply).map_err(|e| conn.error(format!("SCAN in db {}: {e}", self.db)))?;
        if next == b"0" {
            self.node += 1;
            self.cursor = b"0".to_vec();
            self.done = self.node >= nodes.len();
        } else {
            self.cursor = next;
        }
        Ok(Some(keys))
    }
}

/// A `SCAN`-style reply (`SCAN`, `HSCAN`, `SSCAN`, `ZSCAN`): the next cursor and the items.
pub fn parse_scan(reply: Reply) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
    let shape = |r: &Reply| format!("expected [cursor, items], got {r:?}");
    let Reply::Array(Some(parts)) = reply else {
        return Err(match reply {
            Reply::Error(e) => e,
            r => shape(&r),
        });
    };
    let mut it = parts.into_iter();
    match (it.next(), it.next()) {
        (Some(Reply::Bulk(Some(next))), Some(Reply::Array(Some(items)))) => {
            let items = items
                .into_iter()
                .map(|i| match i {
                    Reply::Bulk(Some(b)) => Ok(b),
                    other => Err(format!("a SCAN item is {other:?}")),
                })
                .collect::<Result<_, _>>()?;
            Ok((next, items))
        }
        (a, b) => Err(format!("expected [cursor, items], got [{a:?}, {b:?}]")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_lines() {
        let t = "# Keyspace\r\ndb0:keys=12,expires=3,avg_ttl=0\r\ndb3:keys=1,expires=0,avg_ttl=0\r\nbad\r\n";
        assert_eq!(parse_keyspace(t), BTreeMap::from([(0, 12), (3, 1)]));
        assert!(parse_keyspace("").is_empty());
    }

    #[test]
    fn sample_shares() {
        let counts = BTreeMap::from([(0, 900), (1, 100), (2, 1)]);
        assert_eq!(shares(100, &counts), BTreeMap::from([(0, 90), (1, 10), (2, 1)]));
        assert_eq!(shares(5000, &counts), counts);
    }

    #[test]
    fn scan_replies() {
        let ok = Reply::Array(Some(vec![Reply::Bulk(Some(b"17".to_vec())), Reply::Array(Some(vec![Reply::Bulk(Some(b"k".to_vec()))]))]));
        assert_eq!(parse_scan(ok).unwrap(), (b"17".to_vec(), vec![b"k".to_vec()]));
        assert!(parse_scan(Reply::Error("ERR x".into())).is_err());
        assert!(parse_scan(Reply::Array(Some(vec![Reply::Int(1)]))).is_err());
    }
}
