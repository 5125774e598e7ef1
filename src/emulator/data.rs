//! The emulator's data model: values of every type Dragonfly replicates, with the metadata a
//! snapshot carries (TTL, sticky flag, stream tombstones and consumer groups).
//!
//! A [`Keyspace`] is one db of one shard. The write commands that change it are in
//! [`super::commands`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::time::{SystemTime, UNIX_EPOCH};

pub use crate::protocol::StreamId;

/// One key's value and metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub value: Value,
    /// Absolute Unix milliseconds.
    pub expire_at_ms: Option<u64>,
    /// Dragonfly `STICK` (DF_MASK bit 0 in the snapshot).
    pub sticky: bool,
}

impl Entry {
    pub fn new(value: Value) -> Self {
        Entry { value, expire_at_ms: None, sticky: false }
    }
    pub fn with_expiry(value: Value, expire_at_ms: u64) -> Self {
        Entry { value, expire_at_ms: Some(expire_at_ms), sticky: false }
    }
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expire_at_ms.is_some_and(|t| t <= now_ms)
    }

    /// The emulator's model of the memory a key takes on a master, for `INFO MEMORY`: the
    /// key and value bytes plus a fixed overhead per key (table slot, object header) and per
    /// element (node or listpack entry). Not Dragonfly's exact accounting; it only has to grow
    /// with the data as a real `used_memory` does.
    pub fn approx_memory(&self, key: &[u8]) -> u64 {
        const PER_KEY: u64 = 48;
        const PER_ELEMENT: u64 = 16;
        let elems = |n: usize, bytes: usize| n as u64 * PER_ELEMENT + bytes as u64;
        let value = match &self.value {
            Value::String(s) | Value::Json(s) => s.len() as u64,
            Value::List(l) => elems(l.len(), l.iter().map(Vec::len).sum()),
            Value::Set(s) => elems(s.len(), s.iter().map(Vec::len).sum()),
            Value::Hash(h) => elems(h.len(), h.iter().map(|(f, v)| f.len() + v.len()).sum()),
            Value::Zset(z) => elems(z.len(), z.keys().map(|m| m.len() + 8).sum()),
            Value::HashTtl(h) => elems(h.len(), h.iter().map(|(f, (v, _))| f.len() + v.len() + 8).sum()),
            Value::SetTtl(s) => elems(s.len(), s.keys().map(|m| m.len() + 8).sum()),
            Value::Stream(st) => elems(
                st.entries.len(),
                st.entries.values().map(|r| 16 + r.fields.iter().map(|(f, v)| f.len() + v.len()).sum::<usize>()).sum(),
            ),
            Value::Opaque { bytes, .. } => bytes.len() as u64,
        };
        PER_KEY + key.len() as u64 + value
    }
}

/// A value of every type Dragonfly v1.40 replicates.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    String(Vec<u8>),
    List(VecDeque<Vec<u8>>),
    Set(BTreeSet<Vec<u8>>),
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    /// member -> score (never NaN).
    Zset(BTreeMap<Vec<u8>, f64>),
    Stream(Stream),
    /// A JSON document: the compact text Dragonfly would print (see `datasets::json_documents`).
    Json(Vec<u8>),
    /// field -> (value, TTL as absolute Unix seconds).
    HashTtl(BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>),
    /// member -> TTL as absolute Unix seconds.
    SetTtl(BTreeMap<Vec<u8>, Option<u64>>),
    /// A Dragonfly-only probabilistic type (33-37): the serialized value after the key.
    Opaque {
        rdb_type: u8,
        bytes: Vec<u8>,
    },
}

impl Value {
    /// The name `TYPE` would answer (for error messages and the CLI).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Set(_) | Value::SetTtl(_) => "set",
            Value::Hash(_) | Value::HashTtl(_) => "hash",
            Value::Zset(_) => "zset",
            Value::Stream(_) => "stream",
            Value::Json(_) => "ReJSON-RL",
            Value::Opaque { .. } => "opaque",
        }
    }
}

/// A stream, including entries deleted by XDEL that still occupy their listpack node (they
/// are serialized with the deleted flag, as Redis and Dragonfly do).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Stream {
    pub entries: BTreeMap<StreamId, StreamRecord>,
    pub last_id: StreamId,
    pub max_deleted_id: StreamId,
    pub entries_added: u64,
    pub groups: Vec<Group>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StreamRecord {
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    pub deleted: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub name: Vec<u8>,
    pub last_id: StreamId,
    /// -1 when unknown (Redis `SCG_INVALID_ENTRIES_READ`); serialized as a u64.
    pub entries_read: i64,
    /// The group's PEL; each entry names its consumer.
    pub pel: BTreeMap<StreamId, Pending>,
    pub consumers: Vec<Consumer>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub consumer: Vec<u8>,
    pub delivery_time_ms: u64,
    pub delivery_count: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Consumer {
    pub name: Vec<u8>,
    pub seen_time_ms: u64,
    pub active_time_ms: u64,
}

impl Stream {
    /// Entries not deleted.
    pub fn live(&self) -> impl Iterator<Item = (&StreamId, &StreamRecord)> {
        self.entries.iter().filter(|(_, r)| !r.deleted)
    }
    pub fn len(&self) -> u64 {
        self.live().count() as u64
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn first_id(&self) -> StreamId {
        self.live().next().map(|(id, _)| *id).unwrap_or_default()
    }
    /// Append an entry with an ID greater than `last_id`.
    pub fn add(&mut self, id: StreamId, fields: Vec<(Vec<u8>, Vec<u8>)>) {
        self.entries.insert(id, StreamRecord { fields, deleted: false });
        self.last_id = id;
        self.entries_added += 1;
    }
    /// XDEL of one ID; returns whether a live entry was deleted.
    pub fn delete(&mut self, id: StreamId) -> bool {
        match self.entries.get_mut(&id) {
            Some(r) if !r.deleted => {
                r.deleted = true;
                if id > self.max_deleted_id {
                    self.max_deleted_id = id;
                }
                true
            }
            _ => false,
        }
    }
    /// Drop the oldest entries until at most `max` live ones remain (exact trimming).
    pub fn trim_maxlen(&mut self, max: u64) {
        let mut live = self.len();
        while live > max {
            let Some((&id, r)) = self.entries.iter().next() else { break };
            if !r.deleted {
                live -= 1;
            }
            self.entries.remove(&id);
        }
        self.drop_leading_tombstones();
    }
    /// Drop entries with IDs below `min`.
    pub fn trim_minid(&mut self, min: StreamId) {
        self.entries = self.entries.split_off(&min);
        self.drop_leading_tombstones();
    }
    fn drop_leading_tombstones(&mut self) {
        while let Some((&id, r)) = self.entries.iter().next() {
            if !r.deleted {
                break;
            }
            self.entries.remove(&id);
        }
    }
    /// The ID `*` stands for now.
    pub fn next_auto_id(&self, now_ms: u64) -> StreamId {
        if now_ms > self.last_id.ms {
            StreamId { ms: now_ms, seq: 0 }
        } else {
            StreamId { ms: self.last_id.ms, seq: self.last_id.seq + 1 }
        }
    }
}

/// One db of one shard. A fixed hasher keeps iteration (and so snapshot order) repeatable.
pub type Keyspace = HashMap<Vec<u8>, Entry, BuildHasherDefault<std::collections::hash_map::DefaultHasher>>;

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Parse a canonical decimal i64 the way Redis' `string2ll` does (no `+`, no leading zeros).
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let t = std::str::from_utf8(s).ok()?;
    let digits = t.strip_prefix('-').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    if t == "-0" {
        return None;
    }
    t.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_integers() {
        assert_eq!(parse_i64(b"-12"), Some(-12));
        for bad in ["", "-", "-0", "01", "+1", "1 ", "99999999999999999999"] {
            assert_eq!(parse_i64(bad.as_bytes()), None, "{bad}");
        }
    }
}
