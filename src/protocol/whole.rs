//! Whole values: the encoded bytes of a snapshot value exactly as the master sent them, for a
//! `RESTORE` payload.
//!
//! Redis loads a DUMP payload straight into its own encodings: a listpack hash or sorted set
//! is copied as one block, where `HSET`/`ZADD` would parse and insert every field. So a small
//! entry whose type the target knows travels as its encoded bytes ([`Piece::Encoded`]) instead
//! of element batches. The scan below steps over such a value and checks it as thoroughly as
//! the element path would (framing, listpacks, intsets, scores), so a malformed entry still
//! stops the run with an error naming the key and the offset instead of reaching the target.
//! Values larger than the bound, and empty ones (which Redis refuses to load), are left to the
//! element path, which keeps its bounded memory for big values.
//!
//! [`Piece::Encoded`]: super::items::Piece::Encoded

use super::cursor::{Cursor, PResult, RstrHeader, Stop};
use super::items::rdb_type as t;
use super::listpack::{intset_check, listpack_each};

/// The default bound on a whole value's encoded size. A RESTORE is loaded by the target in
/// one go (it blocks the server meanwhile), and the flow's buffer holds the value until it
/// is complete: small collections, the ones that gain most, fit many times over.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;

/// Which value types are taken whole, and up to what encoded size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Whole {
    /// Bit `t` set: type `t` is taken whole (types 0-63).
    types: u64,
    pub max_bytes: usize,
}

impl Whole {
    /// Nothing is taken whole: every value goes through the element path.
    pub const NONE: Whole = Whole { types: 0, max_bytes: 0 };

    /// The given types (those [`scannable`]; others are ignored), up to `max_bytes` each.
    pub fn new(types: impl IntoIterator<Item = u8>, max_bytes: usize) -> Whole {
        let types = types.into_iter().filter(|&ty| scannable(ty)).fold(0u64, |m, ty| m | 1 << ty);
        Whole { types, max_bytes }
    }

    pub fn takes(&self, ty: u8) -> bool {
        ty < 64 && self.types & (1 << ty) != 0 && self.max_bytes > 0
    }

    /// The types taken whole, ascending.
    pub fn types(&self) -> impl Iterator<Item = u8> + '_ {
        (0..64u8).filter(|&ty| self.takes(ty))
    }
}

/// Types this module can step over (the others always take the element path).
pub fn scannable(ty: u8) -> bool {
    matches!(
        ty,
        t::STRING
            | t::SET
            | t::HASH
            | t::ZSET_2
            | t::SET_INTSET
            | t::HASH_LISTPACK
            | t::ZSET_LISTPACK
            | t::LIST_QUICKLIST_2
    )
}

/// Step over one value of type `ty` starting at the cursor (which is at the start of the
/// current unit), checking it. `Ok(true)`: the value is complete and at most `max` bytes;
/// `Ok(false)`: it is larger, or empty, and the element path must read it from the start.
/// `Stop::More` asks for more bytes as usual (never for more than `max`).
pub fn scan(ty: u8, cur: &mut Cursor, max: usize) -> PResult<bool> {
    let start = cur.pos();
    match value(ty, cur, start, max) {
        // The value needs more bytes than the bound: no point waiting for them.
        Err(Stop::More(n)) if n > max => Ok(false),
        r => r,
    }
}

fn value(ty: u8, cur: &mut Cursor, start: usize, max: usize) -> PResult<bool> {
    let over = |cur: &Cursor| cur.pos() - start > max;
    match ty {
        t::STRING => {
            match cur.rstr_header()? {
                RstrHeader::Plain(n) if n > max => return Ok(false),
                RstrHeader::Plain(n) | RstrHeader::Lzf { clen: n, .. } => {
                    cur.bytes(n)?;
                }
                RstrHeader::Int(_) => {}
            }
        }
        t::SET_INTSET | t::HASH_LISTPACK | t::ZSET_LISTPACK => {
            let at = cur.pos();
            let h = cur.rstr_header()?;
            if matches!(h, RstrHeader::Plain(n) if n > max) {
                return Ok(false);
            }
            let blob = cur.rstr_body(h)?;
            let bad = |e: String| cur.err_at(at, e);
            let elems = match ty {
                t::SET_INTSET => intset_check(&blob).map_err(bad)?.1,
                _ => {
                    // Every element is checked (framing, encodings, lengths) and every score
                    // parsed: Redis loads a payload without looking inside it (unless
                    // sanitize-dump-payload is on), so this check is what keeps a damaged
                    // entry from reaching the target.
                    let mut i = 0usize;
                    let n = listpack_each(&blob, |e| {
                        i += 1;
                        if ty == t::ZSET_LISTPACK && i % 2 == 0 {
                            super::entry::lp_score(&e)?;
                        }
                        Ok(())
                    })
                    .map_err(bad)?;
                    if n % 2 != 0 {
                        return Err(cur.err_at(at, format!("{} listpack has an odd {n} elements", t::name(ty))));
                    }
                    n
                }
            };
            if elems == 0 {
                return Ok(false);
            }
        }
        t::SET | t::HASH | t::ZSET_2 | t::LIST_QUICKLIST_2 => {
            let n = cur.puint()?;
            if n == 0 {
                return Ok(false);
            }
            for _ in 0..n {
                match ty {
                    t::SET => cur.skip_rstr()?,
                    t::HASH => {
                        cur.skip_rstr()?;
                        cur.skip_rstr()?;
                    }
                    t::ZSET_2 => {
                        cur.skip_rstr()?;
                        let at = cur.pos();
                        if cur.f64_le()?.is_nan() {
                            return Err(cur.err_at(at, "sorted-set score is NaN"));
                        }
                    }
                    _ => {
                        let at = cur.pos();
                        match cur.puint()? {
                            1 => cur.skip_rstr()?,
                            2 => {
                                let node = cur.rstr()?;
                                listpack_each(&node, |_| Ok(())).map_err(|e| cur.err_at(at, format!("list node: {e}")))?;
                            }
                            c => {
                                return Err(cur.err_at(
                                    at,
                                    format!("quicklist node container {c} (expected 1 PLAIN or 2 PACKED)"),
                                ))
                            }
                        }
                    }
                }
                if over(cur) {
                    return Ok(false);
                }
            }
        }
        _ => return Ok(false),
    }
    Ok(!over(cur))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Space;

    fn run(ty: u8, bytes: &[u8], max: usize) -> PResult<(bool, usize)> {
        let mut c = Cursor::new(bytes, Space::Payload, 0);
        c.mark();
        scan(ty, &mut c, max).map(|ok| (ok, c.pos()))
    }

    #[test]
    fn counted_values_are_whole_within_the_bound() {
        // A set of two members "a", "bc", then a byte of the next item.
        let set = [2, 1, b'a', 2, b'b', b'c', 0xFF];
        assert_eq!(run(t::SET, &set, 64).unwrap(), (true, 6));
        assert!(!run(t::SET, &set, 5).unwrap().0, "over the bound");
        assert!(matches!(run(t::SET, &set[..4], 64), Err(Stop::More(_))), "truncated: more bytes");
        assert!(!run(t::SET, &[0], 64).unwrap().0, "empty: element path");
        // Asking for more than the bound gives up at once.
        assert!(!run(t::SET, &[1, 0x40, 0xFF], 64).unwrap().0);
        assert!(run(t::LIST_QUICKLIST_2, &[1, 3, 1, b'x'], 64).is_err(), "unknown container");
        let mut z = vec![1, 1, b'm'];
        z.extend_from_slice(&f64::NAN.to_le_bytes());
        assert!(run(t::ZSET_2, &z, 64).is_err(), "NaN score");
    }

    #[test]
    fn whole_types_are_a_set() {
        let w = Whole::new([t::HASH_LISTPACK, t::JSON, t::SET], 100);
        assert_eq!(w.types().collect::<Vec<_>>(), vec![t::SET, t::HASH_LISTPACK]);
        assert!(!Whole::NONE.takes(t::SET));
    }
}
