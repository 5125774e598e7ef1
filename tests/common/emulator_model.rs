//! The emulator's data in the tests' model (tests built with the `emulator` feature).

use super::redis_server::now_ms;
use super::{sort_zset, Dataset, Group, Key, Stream, Val};
use df2redis::emulator::{Emulator, Entry, Value};

/// The emulator's data in the tests' model, as Redis should hold it after the policies:
/// field/member TTLs dropped (members already expired left out), Dragonfly-only types not
/// compared.
pub fn expected(emu: &Emulator) -> Dataset {
    let now_s = now_ms() as u64 / 1000;
    let mut ds = Dataset::new();
    for (db, keys) in emu.data() {
        let m = ds.entry(db).or_default();
        for (k, e) in keys {
            m.insert(k, key_of(&e, now_s));
        }
    }
    ds
}

fn key_of(e: &Entry, now_s: u64) -> Key {
    let (ty, val) = match &e.value {
        Value::String(s) => ("string", Val::Str(s.clone())),
        Value::List(l) => ("list", Val::List(l.iter().cloned().collect())),
        Value::Set(s) => ("set", Val::Set(s.clone())),
        Value::SetTtl(s) => ("set", Val::Set(s.iter().filter(|(_, t)| t.is_none_or(|t| t > now_s)).map(|(m, _)| m.clone()).collect())),
        Value::Hash(h) => ("hash", Val::Hash(h.clone())),
        Value::HashTtl(h) => (
            "hash",
            Val::Hash(h.iter().filter(|(_, (_, t))| t.is_none_or(|t| t > now_s)).map(|(f, (v, _))| (f.clone(), v.clone())).collect()),
        ),
        Value::Zset(z) => {
            let mut v: Vec<(Vec<u8>, f64)> = z.iter().map(|(m, s)| (m.clone(), *s)).collect();
            sort_zset(&mut v);
            ("zset", Val::Zset(v))
        }
        Value::Stream(s) => (
            "stream",
            Val::Stream(Stream {
                entries: s.live().map(|(id, r)| (id.to_string(), r.fields.iter().flat_map(|(f, v)| [f.clone(), v.clone()]).collect())).collect(),
                last_id: s.last_id.to_string(),
                entries_added: s.entries_added,
                max_deleted_id: s.max_deleted_id.to_string(),
                groups: {
                    let mut g: Vec<Group> = s
                        .groups
                        .iter()
                        .map(|g| Group {
                            name: g.name.clone(),
                            last_delivered_id: g.last_id.to_string(),
                            entries_read: (g.entries_read >= 0).then_some(g.entries_read as u64),
                            // Redis keeps a pending entry only while its message exists.
                            pending: g
                                .pel
                                .iter()
                                .filter(|(id, _)| s.entries.get(id).is_some_and(|r| !r.deleted))
                                .map(|(id, p)| (id.to_string(), p.consumer.clone(), p.delivery_count))
                                .collect(),
                            consumers: g.consumers.iter().map(|c| c.name.clone()).collect(),
                        })
                        .collect();
                    g.sort_by(|a, b| a.name.cmp(&b.name));
                    g
                },
            }),
        ),
        other => ("dragonfly-only", Val::Other(other.type_name().to_string())),
    };
    Key { ty: ty.to_string(), expire_at_ms: e.expire_at_ms.map_or(-1, |m| m as i64), val }
}

/// Assert that the server behind `c` holds what the emulator holds, keys of Dragonfly-only
/// types aside (they are skipped by policy, not expected on the target); returns the number of
/// keys compared.
pub fn assert_matches_emulator(emu: &df2redis::emulator::Emulator, c: &mut redis::Connection, what: &str) -> usize {
    let exp = expected(emu);
    let act = super::redis_server::read_all(c);
    let not_judged: std::collections::BTreeSet<(u32, Vec<u8>)> = exp
        .iter()
        .flat_map(|(db, keys)| keys.iter().filter(|(_, k)| k.ty == "dragonfly-only").map(move |(k, _)| (*db, k.clone())))
        .collect();
    let (diffs, compared, _) = super::redis_server::compare(&exp, &act, c, 1000, &not_judged);
    assert!(diffs.is_empty(), "{what}: {} differences:\n{}", diffs.len(), diffs.join("\n"));
    compared
}
