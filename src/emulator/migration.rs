//! The commands a Dragonfly source sends a slot-migration target for one key
//! (`journal/cmd_serializer.cc` `CmdSerializer::SerializeEntry`), which the target executes and
//! so journals. Pure: no I/O, no locks. Facts: docs/protocol/dragonfly-cluster.md, section C.

use super::data::{Entry, Value};

pub type Argv = Vec<Vec<u8>>;

/// The commands for `key`, in Dragonfly's order: the value (split into several commands past
/// `chunk_size` bytes), then `STICK` and `PEXPIREAT` for non-strings. Types Dragonfly sends
/// as `RESTORE <DUMP payload>` (streams, JSON, probabilistic types) are refused: the emulator
/// has no DUMP encoder.
pub fn copy_commands(key: &[u8], e: &Entry, chunk_size: usize) -> Result<Vec<Argv>, String> {
    let mut out = Vec::new();
    let k = key.to_vec();
    let mut agg = Aggregator::new(k.clone(), chunk_size);
    match &e.value {
        Value::String(v) => {
            let mut c = vec![b"SET".to_vec(), k.clone(), v.clone()];
            if let Some(at) = e.expire_at_ms {
                c.extend([b"PXAT".to_vec(), at.to_string().into_bytes()]);
            }
            out.push(c);
            // Strings carry their expiry in the SET; STICK still follows.
            if e.sticky {
                out.push(vec![b"STICK".to_vec(), k]);
            }
            return Ok(out);
        }
        Value::Set(m) => m.iter().for_each(|x| agg.add(b"SADD", &[x], &mut out)),
        Value::SetTtl(m) => m.keys().for_each(|x| agg.add(b"SADD", &[x], &mut out)),
        Value::Hash(m) => m.iter().for_each(|(f, v)| agg.add(b"HSET", &[f, v], &mut out)),
        Value::HashTtl(m) => m.iter().for_each(|(f, (v, _))| agg.add(b"HSET", &[f, v], &mut out)),
        Value::List(l) => l.iter().for_each(|x| agg.add(b"RPUSH", &[x], &mut out)),
        Value::Zset(z) => {
            // Dragonfly iterates by score; the score is formatted with absl::StrCat(double),
            // i.e. six significant digits.
            let mut by_score: Vec<(&Vec<u8>, f64)> = z.iter().map(|(m, s)| (m, *s)).collect();
            by_score.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(b.0)));
            for (m, s) in by_score {
                agg.add(b"ZADD", &[six_digits(s).as_bytes(), m], &mut out);
            }
        }
        Value::Stream(_) | Value::Json(_) | Value::Opaque { .. } => {
            return Err(format!(
                "the emulator cannot migrate key {:?}: Dragonfly sends this type as RESTORE with a DUMP payload, \
                 which the emulator does not encode",
                String::from_utf8_lossy(key)
            ))
        }
    }
    agg.flush(&mut out);
    if e.sticky {
        out.push(vec![b"STICK".to_vec(), k.clone()]);
    }
    if let Some(at) = e.expire_at_ms {
        out.push(vec![b"PEXPIREAT".to_vec(), k, at.to_string().into_bytes()]);
    }
    Ok(out)
}

/// Dragonfly's `CommandAggregator`: members pile up until their bytes reach the limit. Its
/// byte count is never reset after a commit, so past the first chunk every member (pair) is a
/// command of its own; reproduced as is.
struct Aggregator {
    key: Vec<u8>,
    limit: usize,
    bytes: usize,
    cmd: &'static [u8],
    members: Vec<Vec<u8>>,
}

impl Aggregator {
    fn new(key: Vec<u8>, limit: usize) -> Self {
        Aggregator { key, limit, bytes: 0, cmd: b"", members: Vec::new() }
    }
    fn add(&mut self, cmd: &'static [u8], unit: &[&[u8]], out: &mut Vec<Argv>) {
        self.cmd = cmd;
        for m in unit {
            self.bytes += m.len();
            self.members.push(m.to_vec());
        }
        if self.bytes >= self.limit {
            self.flush(out);
        }
    }
    fn flush(&mut self, out: &mut Vec<Argv>) {
        if self.members.is_empty() {
            return;
        }
        let mut c = vec![self.cmd.to_vec(), self.key.clone()];
        c.append(&mut self.members);
        out.push(c);
    }
}

/// `absl::StrCat(double)`: `%.6g` (six significant digits, trailing zeros dropped, exponent
/// form below 1e-4 and from 1e6).
pub fn six_digits(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    // The exponent after rounding to six significant digits.
    let sci = format!("{:.5e}", v);
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if (-4..6).contains(&exp) {
        trim(format!("{:.*}", (5 - exp).max(0) as usize, v))
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{}{:02}", trim(mant.to_string()), sign, exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn s(v: &[&[u8]]) -> Argv {
        v.iter().map(|x| x.to_vec()).collect()
    }

    #[test]
    fn six_digits_is_printf_g() {
        for (v, want) in [
            (1.0, "1"),
            (1.5, "1.5"),
            (1.23456789, "1.23457"),
            (123456.0, "123456"),
            (1234567.0, "1.23457e+06"),
            (0.0001, "0.0001"),
            (0.00001234, "1.234e-05"),
            (-2.5, "-2.5"),
            (999999.5, "1e+06"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(six_digits(v), want, "{v}");
        }
    }

    #[test]
    fn strings_sets_and_zsets_become_dragonfly_commands() {
        let mut e = Entry::with_expiry(Value::String(b"v".to_vec()), 1_900_000_000_000);
        e.sticky = true;
        assert_eq!(
            copy_commands(b"k", &e, 1024).unwrap(),
            vec![s(&[b"SET", b"k", b"v", b"PXAT", b"1900000000000"]), s(&[b"STICK", b"k"])]
        );
        let set: BTreeSet<Vec<u8>> = [b"a".to_vec(), b"b".to_vec()].into();
        let e = Entry::with_expiry(Value::Set(set), 5);
        assert_eq!(
            copy_commands(b"k", &e, 1024).unwrap(),
            vec![s(&[b"SADD", b"k", b"a", b"b"]), s(&[b"PEXPIREAT", b"k", b"5"])]
        );
        let z: BTreeMap<Vec<u8>, f64> = [(b"x".to_vec(), 2.0), (b"y".to_vec(), 0.1234567)].into();
        assert_eq!(copy_commands(b"z", &Entry::new(Value::Zset(z)), 1024).unwrap(), vec![s(&[b"ZADD", b"z", b"0.123457", b"y", b"2", b"x"])]);
    }

    #[test]
    fn past_the_first_chunk_every_member_is_a_command() {
        let l: std::collections::VecDeque<Vec<u8>> = [b"aa".to_vec(), b"bb".to_vec(), b"cc".to_vec(), b"dd".to_vec()].into();
        assert_eq!(
            copy_commands(b"l", &Entry::new(Value::List(l)), 4).unwrap(),
            vec![s(&[b"RPUSH", b"l", b"aa", b"bb"]), s(&[b"RPUSH", b"l", b"cc"]), s(&[b"RPUSH", b"l", b"dd"])]
        );
        assert!(copy_commands(b"j", &Entry::new(Value::Json(b"{}".to_vec())), 4).is_err());
    }
}
