//! LZF (liblzf), used by RDB strings encoded as `0xC3` (protocol doc 2.3).
//!
//! The format is small enough that a hand-written, bounds-checked decoder is clearer than a
//! dependency on a C binding. The compressor exists for the emulator and for tests; it produces
//! valid LZF that liblzf's decoder accepts, not necessarily the same bytes as liblzf.

/// Expand `input`, which must produce exactly `out_len` bytes.
pub fn decompress(input: &[u8], out_len: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(out_len);
    let mut ip = 0;
    while ip < input.len() {
        let ctrl = input[ip] as usize;
        ip += 1;
        if ctrl < 32 {
            let run = ctrl + 1;
            if ip + run > input.len() {
                return Err(format!("literal run of {run} bytes passes the end of the input"));
            }
            if out.len() + run > out_len {
                return Err(format!("output exceeds the declared length {out_len}"));
            }
            out.extend_from_slice(&input[ip..ip + run]);
            ip += run;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                let Some(&b) = input.get(ip) else {
                    return Err("back reference truncated".into());
                };
                len += b as usize;
                ip += 1;
            }
            len += 2;
            let Some(&low) = input.get(ip) else {
                return Err("back reference truncated".into());
            };
            ip += 1;
            let back = ((ctrl & 0x1F) << 8) + low as usize + 1;
            if back > out.len() {
                return Err(format!("back reference {back} bytes before the start of the output"));
            }
            if out.len() + len > out_len {
                return Err(format!("output exceeds the declared length {out_len}"));
            }
            let start = out.len() - back;
            // Overlapping copies are how LZF encodes runs: copy byte by byte.
            for i in 0..len {
                let b = out[start + i];
                out.push(b);
            }
        }
    }
    if out.len() != out_len {
        return Err(format!("expanded to {} bytes, declared {out_len}", out.len()));
    }
    Ok(out)
}

/// Compress `input` into LZF. Returns `None` when the result would not be smaller.
pub fn compress(input: &[u8]) -> Option<Vec<u8>> {
    const HLOG: usize = 14;
    const MAX_OFF: usize = 1 << 13;
    const MAX_REF: usize = (1 << 8) + (1 << 3);
    if input.len() < 4 {
        return None;
    }
    let mut table = vec![usize::MAX; 1 << HLOG];
    let mut out = Vec::with_capacity(input.len());
    let mut lit_start = 0usize;
    let mut ip = 0usize;
    let flush_literals = |out: &mut Vec<u8>, from: usize, to: usize| {
        let mut p = from;
        while p < to {
            let n = (to - p).min(32);
            out.push((n - 1) as u8);
            out.extend_from_slice(&input[p..p + n]);
            p += n;
        }
    };
    while ip + 2 < input.len() {
        let h = ((input[ip] as usize) << 16 | (input[ip + 1] as usize) << 8 | input[ip + 2] as usize)
            .wrapping_mul(2654435761)
            >> (32 - HLOG)
            & ((1 << HLOG) - 1);
        let cand = table[h];
        table[h] = ip;
        if cand != usize::MAX
            && ip - cand <= MAX_OFF
            && ip > cand
            && input[cand..cand + 3] == input[ip..ip + 3]
        {
            let mut len = 3;
            let max = (input.len() - ip).min(MAX_REF);
            while len < max && input[cand + len] == input[ip + len] {
                len += 1;
            }
            flush_literals(&mut out, lit_start, ip);
            let off = ip - cand - 1;
            let l = len - 2;
            if l < 7 {
                out.push(((l << 5) | (off >> 8)) as u8);
            } else {
                out.push(((7 << 5) | (off >> 8)) as u8);
                out.push((l - 7) as u8);
            }
            out.push((off & 0xFF) as u8);
            ip += len;
            lit_start = ip;
        } else {
            ip += 1;
        }
    }
    flush_literals(&mut out, lit_start, input.len());
    (out.len() < input.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let inputs: Vec<Vec<u8>> = vec![
            b"abcdefghabcdefghabcdefghabcdefghabcdefgh".to_vec(),
            vec![0u8; 10_000],
            (0..5000u32).flat_map(|i| (i % 251).to_le_bytes()).collect(),
        ];
        for input in inputs {
            let c = compress(&input).expect("compressible");
            assert_eq!(decompress(&c, input.len()).unwrap(), input);
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(decompress(&[0x05, b'a'], 6).is_err()); // literal past the end
        assert!(decompress(&[0x00, b'a', 0x20, 0x05], 4).is_err()); // reference before start
        assert!(decompress(&[0x00, b'a'], 2).is_err()); // short output
    }
}
