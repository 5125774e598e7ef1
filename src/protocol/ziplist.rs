//! Ziplist, the compact encoding Redis up to 6.2 writes for small lists, hashes and sorted sets
//! (RDB types 10, 12, 13, and the nodes of type 14 quicklists). Dragonfly never sends it; it
//! appears in RDB files written by Redis 6.2 and older. Like a listpack it arrives as one
//! complete RDB string, so this works on a whole slice.
//!
//! ```text
//! ziplist := zlbytes:u32le zltail:u32le zllen:u16le entry* 0xFF
//! entry   := prevlen (1 byte < 254, or 0xFE + u32le) encoding payload
//! ```
//! The encodings (Redis `ziplist.c`): `00pppppp` a string of up to 63 bytes, `01pppppp qqqqqqqq`
//! up to 16383 (14-bit big-endian length), `10000000` + u32be length; `11000000` int16,
//! `11010000` int32, `11100000` int64, `11110000` int24, `11111110` int8 (all little-endian),
//! `1111xxxx` with xxxx in 0001..1101 the integer xxxx - 1.

use super::listpack::LpElem;

/// Decode a ziplist into its elements. Every length is checked against the blob.
pub fn ziplist(blob: &[u8]) -> Result<Vec<LpElem<'_>>, String> {
    if blob.len() < 11 {
        return Err(format!("ziplist of {} bytes is shorter than its 11-byte frame", blob.len()));
    }
    let total = u32::from_le_bytes(blob[0..4].try_into().unwrap()) as usize;
    if total != blob.len() {
        return Err(format!("ziplist header says {total} bytes, the string holds {}", blob.len()));
    }
    let count = u16::from_le_bytes(blob[8..10].try_into().unwrap());
    let mut out = Vec::new();
    let mut p = 10;
    let need = |p: usize, n: usize, what: &str| {
        if p + n > blob.len() {
            Err(format!("ziplist {what} at byte {p} runs past the end ({n} bytes needed, {} left)", blob.len().saturating_sub(p)))
        } else {
            Ok(())
        }
    };
    loop {
        need(p, 1, "entry")?;
        if blob[p] == 0xFF {
            p += 1;
            break;
        }
        // prevlen: only its size matters when reading forward.
        p += if blob[p] < 254 { 1 } else { 5 };
        need(p, 1, "encoding")?;
        let enc = blob[p];
        let at = p;
        p += 1;
        let elem = match enc >> 6 {
            0b00 => {
                let n = (enc & 0x3F) as usize;
                need(p, n, "string")?;
                p += n;
                LpElem::Str(&blob[p - n..p])
            }
            0b01 => {
                need(p, 1, "14-bit length")?;
                let n = (((enc & 0x3F) as usize) << 8) | blob[p] as usize;
                p += 1;
                need(p, n, "string")?;
                p += n;
                LpElem::Str(&blob[p - n..p])
            }
            0b10 => {
                if enc != 0x80 {
                    return Err(format!("ziplist encoding 0x{enc:02X} at byte {at} is not a string encoding"));
                }
                need(p, 4, "32-bit length")?;
                let n = u32::from_be_bytes(blob[p..p + 4].try_into().unwrap()) as usize;
                p += 4;
                need(p, n, "string")?;
                p += n;
                LpElem::Str(&blob[p - n..p])
            }
            _ => {
                let (len, v): (usize, i64) = match enc {
                    0xC0 => (2, 0),
                    0xD0 => (4, 0),
                    0xE0 => (8, 0),
                    0xF0 => (3, 0),
                    0xFE => (1, 0),
                    0xF1..=0xFD => (0, i64::from(enc & 0x0F) - 1),
                    _ => return Err(format!("ziplist encoding 0x{enc:02X} at byte {at} is not a valid encoding")),
                };
                need(p, len, "integer")?;
                let b = &blob[p..p + len];
                p += len;
                LpElem::Int(match enc {
                    0xC0 => i64::from(i16::from_le_bytes(b.try_into().unwrap())),
                    0xD0 => i64::from(i32::from_le_bytes(b.try_into().unwrap())),
                    0xE0 => i64::from_le_bytes(b.try_into().unwrap()),
                    // 24 bits, sign-extended.
                    0xF0 => i64::from(i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8),
                    0xFE => i64::from(b[0] as i8),
                    _ => v,
                })
            }
        };
        out.push(elem);
    }
    if p != blob.len() {
        return Err(format!("ziplist ends at byte {} of {}", p - 1, blob.len()));
    }
    // zllen saturates at 65535 ("count it"): then only the walk says how many there are.
    if count != u16::MAX && count as usize != out.len() {
        return Err(format!("ziplist header says {count} entries, it holds {}", out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ziplist as Redis builds it, from already-encoded entries (prevlen is filled in).
    fn build(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut body = Vec::new();
        let mut prev = 0usize;
        let mut tail = 10;
        for e in entries {
            tail = 10 + body.len();
            let start = body.len();
            if prev < 254 {
                body.push(prev as u8);
            } else {
                body.push(0xFE);
                body.extend_from_slice(&(prev as u32).to_le_bytes());
            }
            body.extend_from_slice(e);
            prev = body.len() - start;
        }
        let total = 10 + body.len() + 1;
        let mut z = Vec::new();
        z.extend_from_slice(&(total as u32).to_le_bytes());
        z.extend_from_slice(&(tail as u32).to_le_bytes());
        z.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        z.extend_from_slice(&body);
        z.push(0xFF);
        z
    }

    #[test]
    fn every_encoding() {
        let long = vec![b'x'; 300];
        let mut s14 = vec![0x40 | (300 >> 8) as u8, (300 & 0xFF) as u8];
        s14.extend_from_slice(&long);
        let mut s32 = vec![0x80, 0, 0, 0x01, 0x2C];
        s32.extend_from_slice(&long);
        let entries = vec![
            [&[0x03u8][..], b"abc"].concat(),
            vec![0x00],
            s14,
            s32,
            [&[0xC0u8][..], &(-2i16).to_le_bytes()].concat(),
            [&[0xD0u8][..], &(70000i32).to_le_bytes()].concat(),
            [&[0xE0u8][..], &(i64::MIN).to_le_bytes()].concat(),
            vec![0xF0, 0xFF, 0xFF, 0xFF], // int24 -1
            vec![0xF0, 0x00, 0x00, 0x80], // int24 -8388608
            vec![0xFE, 0x80],             // int8 -128
            vec![0xF1],                   // 0
            vec![0xFD],                   // 12
        ];
        let z = build(&entries);
        let got = ziplist(&z).unwrap();
        assert_eq!(
            got,
            vec![
                LpElem::Str(b"abc"),
                LpElem::Str(b""),
                LpElem::Str(&long),
                LpElem::Str(&long),
                LpElem::Int(-2),
                LpElem::Int(70000),
                LpElem::Int(i64::MIN),
                LpElem::Int(-1),
                LpElem::Int(-8388608),
                LpElem::Int(-128),
                LpElem::Int(0),
                LpElem::Int(12),
            ]
        );
    }

    #[test]
    fn damaged_ziplists_are_errors_not_panics() {
        let z = build(&[[&[0x03u8][..], b"abc"].concat(), vec![0xF5]]);
        for cut in 0..z.len() {
            let mut d = z[..cut].to_vec();
            if d.len() >= 4 {
                d[0..4].copy_from_slice(&(cut as u32).to_le_bytes());
            }
            assert!(ziplist(&d).is_err(), "cut at {cut}");
        }
        let mut bad = z.clone();
        bad[8] = 3; // wrong count
        assert!(ziplist(&bad).unwrap_err().contains("says 3 entries"));
        let mut bad = z.clone();
        bad[11] = 0x81; // not a string encoding
        assert!(ziplist(&bad).is_err());
        for b in 0..=255u8 {
            let mut x = z.clone();
            x[11] = b;
            let _ = ziplist(&x);
        }
    }
}
