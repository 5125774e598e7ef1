//! Redis 7 embedded encodings carried inside RDB strings: listpack and intset
//! (protocol doc 2.5). Both arrive as one complete RSTR, so these work on whole slices.

/// One listpack element: a string or an integer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LpElem<'a> {
    Str(&'a [u8]),
    Int(i64),
}

impl LpElem<'_> {
    /// The element as Redis would return it: integers in decimal.
    pub fn to_vec(&self) -> Vec<u8> {
        match *self {
            LpElem::Str(s) => s.to_vec(),
            LpElem::Int(i) => i.to_string().into_bytes(),
        }
    }
    pub fn byte_len(&self) -> usize {
        match *self {
            LpElem::Str(s) => s.len(),
            LpElem::Int(_) => 8,
        }
    }
}

/// Decode a listpack into its elements. Every length is checked against the blob.
pub fn listpack(blob: &[u8]) -> Result<Vec<LpElem<'_>>, String> {
    let mut out = Vec::with_capacity(declared_len(blob).unwrap_or(16));
    listpack_each(blob, |e| {
        out.push(e);
        Ok(())
    })?;
    Ok(out)
}

/// The element count a listpack's header declares, when it declares one (`u16::MAX` means
/// "count them").
fn declared_len(blob: &[u8]) -> Option<usize> {
    let d = u16::from_le_bytes(blob.get(4..6)?.try_into().unwrap());
    (d != u16::MAX).then_some(d as usize)
}

/// Walk a listpack, checking it exactly as [`listpack`] does, and hand each element to `each`
/// without collecting them; returns the element count. The RESTORE path checks every value
/// it forwards this way: a vector per value was a tenth of the flow threads' time.
pub fn listpack_each<'a>(blob: &'a [u8], mut each: impl FnMut(LpElem<'a>) -> Result<(), String>) -> Result<usize, String> {
    if blob.len() < 7 {
        return Err(format!("listpack of {} bytes is shorter than its 7-byte frame", blob.len()));
    }
    let total = u32::from_le_bytes(blob[..4].try_into().unwrap()) as usize;
    if total != blob.len() {
        return Err(format!("listpack header says {total} bytes, the string holds {}", blob.len()));
    }
    let mut n = 0;
    let mut p = 6;
    loop {
        let Some(&b) = blob.get(p) else {
            return Err("listpack has no 0xFF terminator".into());
        };
        if b == 0xFF {
            if p + 1 != blob.len() {
                return Err(format!("listpack terminator at byte {p} is not the last byte"));
            }
            break;
        }
        let (elem, enc_len) = element(&blob[p..]).map_err(|e| format!("listpack byte {p}: {e}"))?;
        p += enc_len;
        p += backlen_size(enc_len);
        if p > blob.len() {
            return Err("listpack element passes the end of the blob".into());
        }
        each(elem)?;
        n += 1;
    }
    if let Some(declared) = declared_len(blob) {
        if declared != n {
            return Err(format!("listpack declares {declared} elements, holds {n}"));
        }
    }
    Ok(n)
}

/// Size of the back-length field that follows an element of `len` encoded bytes. The
/// boundaries are Redis's `lpEncodeBacklen` exactly: `< 16383`, not `<= 16383`, and so on.
fn backlen_size(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16382 => 2,
        16383..=2097150 => 3,
        2097151..=268435454 => 4,
        _ => 5,
    }
}

/// Decode one element at the start of `b`; returns it and the size of its encoding+data.
fn element(b: &[u8]) -> Result<(LpElem<'_>, usize), String> {
    let first = b[0];
    let need = |n: usize| -> Result<(), String> {
        if b.len() < n {
            Err(format!("element needs {n} bytes, {} left", b.len()))
        } else {
            Ok(())
        }
    };
    let str_at = |hdr: usize, len: usize| -> Result<(LpElem<'_>, usize), String> {
        need(hdr + len)?;
        Ok((LpElem::Str(&b[hdr..hdr + len]), hdr + len))
    };
    if first & 0x80 == 0 {
        return Ok((LpElem::Int((first & 0x7F) as i64), 1));
    }
    if first & 0xC0 == 0x80 {
        return str_at(1, (first & 0x3F) as usize);
    }
    if first & 0xE0 == 0xC0 {
        need(2)?;
        let v = (((first & 0x1F) as u16) << 8 | b[1] as u16) as i64;
        let v = if v >= 1 << 12 { v - (1 << 13) } else { v };
        return Ok((LpElem::Int(v), 2));
    }
    if first & 0xF0 == 0xE0 {
        need(2)?;
        return str_at(2, ((first & 0x0F) as usize) << 8 | b[1] as usize);
    }
    match first {
        0xF0 => {
            need(5)?;
            str_at(5, u32::from_le_bytes(b[1..5].try_into().unwrap()) as usize)
        }
        0xF1 => {
            need(3)?;
            Ok((LpElem::Int(i16::from_le_bytes(b[1..3].try_into().unwrap()) as i64), 3))
        }
        0xF2 => {
            need(4)?;
            let v = (b[1] as i32 | (b[2] as i32) << 8 | (b[3] as i8 as i32) << 16) as i64;
            Ok((LpElem::Int(v), 4))
        }
        0xF3 => {
            need(5)?;
            Ok((LpElem::Int(i32::from_le_bytes(b[1..5].try_into().unwrap()) as i64), 5))
        }
        0xF4 => {
            need(9)?;
            Ok((LpElem::Int(i64::from_le_bytes(b[1..9].try_into().unwrap())), 9))
        }
        other => Err(format!("unknown element encoding 0x{other:02X}")),
    }
}

/// Decode an intset: `u32 encoding (2|4|8)`, `u32 length`, then signed LE integers.
pub fn intset(blob: &[u8]) -> Result<Vec<i64>, String> {
    let enc = intset_check(blob)?.0;
    Ok(blob[8..]
        .chunks_exact(enc)
        .map(|c| match enc {
            2 => i16::from_le_bytes(c.try_into().unwrap()) as i64,
            4 => i32::from_le_bytes(c.try_into().unwrap()) as i64,
            _ => i64::from_le_bytes(c.try_into().unwrap()),
        })
        .collect())
}

/// Check an intset's frame: (element width, element count). Every width-sized slice of its
/// body is a valid integer, so this is all there is to check.
pub fn intset_check(blob: &[u8]) -> Result<(usize, usize), String> {
    if blob.len() < 8 {
        return Err(format!("intset of {} bytes is shorter than its 8-byte header", blob.len()));
    }
    let enc = u32::from_le_bytes(blob[..4].try_into().unwrap()) as usize;
    let n = u32::from_le_bytes(blob[4..8].try_into().unwrap()) as usize;
    if !matches!(enc, 2 | 4 | 8) {
        return Err(format!("intset element width {enc} is not 2, 4 or 8"));
    }
    if blob.len() != 8 + enc * n {
        return Err(format!(
            "intset of {n} elements of {enc} bytes needs {} bytes, the string holds {}",
            8 + enc * n,
            blob.len()
        ));
    }
    Ok((enc, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(elems: &[&[u8]]) -> Vec<u8> {
        // Strings only, 6-bit length form, as Redis writes short strings.
        let mut body = Vec::new();
        for e in elems {
            body.push(0x80 | e.len() as u8);
            body.extend_from_slice(e);
            body.push((1 + e.len()) as u8);
        }
        let mut out = ((body.len() + 7) as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&(elems.len() as u16).to_le_bytes());
        out.extend_from_slice(&body);
        out.push(0xFF);
        out
    }

    #[test]
    fn decodes_strings_and_ints() {
        let blob = lp(&[b"a", b"hello"]);
        assert_eq!(listpack(&blob).unwrap(), vec![LpElem::Str(b"a"), LpElem::Str(b"hello")]);
        // 13-bit negative int: -7 = 0x1FF9 -> C0|0x1F, 0xF9
        let blob = [10, 0, 0, 0, 1, 0, 0xDF, 0xF9, 2, 0xFF];
        assert_eq!(listpack(&blob).unwrap(), vec![LpElem::Int(-7)]);
    }

    #[test]
    fn backlen_boundaries_follow_redis() {
        // One string of 16378 bytes: 0xF0 + u32 length + data = 16383 encoded bytes, whose
        // back-length takes 3 bytes in Redis (the boundary is < 16383).
        let data = vec![b'x'; 16378];
        let mut body = vec![0xF0];
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&data);
        body.extend_from_slice(&[0x7F, 0x7F, 0x01]); // 16383 as a 3-byte backlen
        let mut blob = ((body.len() + 7) as u32).to_le_bytes().to_vec();
        blob.extend_from_slice(&1u16.to_le_bytes());
        blob.extend_from_slice(&body);
        blob.push(0xFF);
        assert_eq!(listpack(&blob).unwrap(), vec![LpElem::Str(&data)]);
        assert_eq!((backlen_size(127), backlen_size(128), backlen_size(16382), backlen_size(16383)), (1, 2, 2, 3));
    }

    #[test]
    fn rejects_truncation() {
        let mut blob = lp(&[b"hello"]);
        blob.truncate(blob.len() - 3);
        assert!(listpack(&blob).is_err());
        assert!(intset(&[2, 0, 0, 0, 2, 0, 0, 0, 1, 0]).is_err());
    }
}
