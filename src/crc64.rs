//! Redis's CRC-64 (Jones polynomial, reflected, as `crc::CRC_64_REDIS`): the checksum that
//! ends every DUMP payload and RDB file.
//!
//! The full sync checksums every byte of every RESTORE payload it builds, and the `crc`
//! crate's slice-by-16 table (~2.4 GB/s here) was the largest single item in the flow
//! threads' profile. On x86-64 CPUs with carry-less multiplication (PCLMULQDQ, every x86-64
//! CPU since 2010) this folds 64 bytes per step instead, several times faster; elsewhere the
//! table is used. No crate does this for Redis's polynomial within our Rust version (the
//! SIMD CRC crates either fix another CRC-64, or need a newer compiler), and the method is
//! short: Intel's "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ", with the
//! constants computed below from the polynomial, and the tests compare it with the table on
//! every length and alignment that matters.

/// The table implementation: short inputs, the tail of long ones, and CPUs without PCLMULQDQ.
const TABLE: crc::Crc<u64, crc::Table<16>> = crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_REDIS);

/// Below this many bytes the table is as fast as setting up the folding.
const SIMD_MIN: usize = 64;

/// The CRC of `bytes` continued from `crc` (0 to start; the result of an earlier call to go
/// on): `update(update(0, a), b) == update(0, a ++ b)`.
pub fn update(crc: u64, bytes: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() >= SIMD_MIN && std::arch::is_x86_feature_detected!("pclmulqdq") && std::arch::is_x86_feature_detected!("sse4.1") {
        let whole = bytes.len() & !15;
        // SAFETY: the CPU has the features `clmul::crc` is compiled for (checked just above).
        let crc = unsafe { clmul::crc(crc, &bytes[..whole]) };
        return table(crc, &bytes[whole..]);
    }
    table(crc, bytes)
}

fn table(crc: u64, bytes: &[u8]) -> u64 {
    if bytes.is_empty() {
        return crc;
    }
    // The crate reflects a custom initial value for a reflected CRC; its register holds `crc`
    // once reflected back.
    let mut d = TABLE.digest_with_initial(crc.reverse_bits());
    d.update(bytes);
    d.finalize()
}

/// The polynomial without its x^64 term, bit j standing for x^j.
const POLY: u64 = 0xad93_d235_94c9_35a9;

/// x^n mod P, reflected (bit 63 - j stands for x^j), as the folding multiplies it.
const fn x_pow_mod(n: u32) -> u64 {
    let mut r: u64 = 1;
    let mut i = 0;
    while i < n {
        let carry = r >> 63;
        r <<= 1;
        if carry == 1 {
            r ^= POLY;
        }
        i += 1;
    }
    r.reverse_bits()
}

/// floor(x^128 / P) without its x^64 term, reflected: Barrett reduction's constant.
const fn mu() -> u64 {
    let full: u128 = (1u128 << 64) | POLY as u128;
    let (mut rem, mut q): (u128, u128) = (0, 0);
    let mut deg: i32 = 128;
    while deg >= 0 {
        rem = (rem << 1) | (deg == 128) as u128;
        q <<= 1;
        if (rem >> 64) & 1 == 1 {
            rem ^= full;
            q |= 1;
        }
        deg -= 1;
    }
    (q as u64).reverse_bits()
}

#[cfg(target_arch = "x86_64")]
mod clmul {
    //! Folding: a 128-bit block X = L·x^64 + H (L the first 8 bytes) followed by D more bits
    //! is congruent, for the CRC, to L·(x^(64+D) mod P) + H·(x^D mod P) placed D bits later.
    //! A reflected carry-less product of a and b stands for x·a·b in the 128-bit register,
    //! hence the constants' exponents one lower than D.
    use super::{mu, x_pow_mod, POLY};
    use std::arch::x86_64::*;

    /// (for the first 8 bytes, for the last 8) of a block folded forward by `bits`.
    const fn fold_by(bits: u32) -> (u64, u64) {
        (x_pow_mod(64 + bits - 1), x_pow_mod(bits - 1))
    }
    const BY_512: (u64, u64) = fold_by(512);
    const BY_384: (u64, u64) = fold_by(384);
    const BY_256: (u64, u64) = fold_by(256);
    const BY_128: (u64, u64) = fold_by(128);
    const X_127: u64 = x_pow_mod(127);
    const MU: u64 = mu();
    const P: u64 = POLY.reverse_bits();

    #[inline(always)]
    unsafe fn consts((lo, hi): (u64, u64)) -> __m128i {
        _mm_set_epi64x(hi as i64, lo as i64)
    }

    /// `x` folded forward by the distance `k` stands for.
    #[inline(always)]
    unsafe fn fold16(x: __m128i, k: __m128i) -> __m128i {
        _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11))
    }

    #[inline(always)]
    unsafe fn load(b: &[u8], at: usize) -> __m128i {
        debug_assert!(at + 16 <= b.len());
        _mm_loadu_si128(b.as_ptr().add(at) as *const __m128i)
    }

    #[inline(always)]
    unsafe fn lanes(x: __m128i) -> (u64, u64) {
        (_mm_extract_epi64(x, 0) as u64, _mm_extract_epi64(x, 1) as u64)
    }

    #[inline(always)]
    unsafe fn mul(a: u64, b: u64) -> u128 {
        let (lo, hi) = lanes(_mm_clmulepi64_si128(_mm_set_epi64x(0, a as i64), _mm_set_epi64x(0, b as i64), 0x00));
        (hi as u128) << 64 | lo as u128
    }

    /// The CRC of `b` (a multiple of 16 bytes, at least 64) continued from `crc`.
    #[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
    pub unsafe fn crc(crc: u64, b: &[u8]) -> u64 {
        debug_assert!(b.len() >= 64 && b.len() % 16 == 0);
        // The running CRC enters as x^(bits of b) times itself: added to the first 8 bytes.
        let mut x0 = _mm_xor_si128(load(b, 0), _mm_set_epi64x(0, crc as i64));
        let (mut x1, mut x2, mut x3) = (load(b, 16), load(b, 32), load(b, 48));
        let mut at = 64;
        // Four independent blocks, each folded 64 bytes forward per step.
        let k = consts(BY_512);
        while at + 64 <= b.len() {
            x0 = _mm_xor_si128(fold16(x0, k), load(b, at));
            x1 = _mm_xor_si128(fold16(x1, k), load(b, at + 16));
            x2 = _mm_xor_si128(fold16(x2, k), load(b, at + 32));
            x3 = _mm_xor_si128(fold16(x3, k), load(b, at + 48));
            at += 64;
        }
        // Into one block, then the remaining 16-byte blocks one by one.
        let mut x = _mm_xor_si128(fold16(x0, consts(BY_384)), x3);
        x = _mm_xor_si128(x, fold16(x1, consts(BY_256)));
        x = _mm_xor_si128(x, fold16(x2, consts(BY_128)));
        let k = consts(BY_128);
        while at < b.len() {
            x = _mm_xor_si128(fold16(x, k), load(b, at));
            at += 16;
        }
        // CRC = X·x^64 mod P: first to 128 bits (L·x^128 + H·x^64), then Barrett.
        let (l, h) = lanes(x);
        let y = mul(l, X_127) ^ h as u128;
        let (l, h) = (y as u64, (y >> 64) as u64);
        let q = l ^ ((mul(l, MU) as u64) << 1);
        h ^ (mul(q, P) >> 63) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(b: &[u8]) -> u64 {
        crc::Crc::<u64>::new(&crc::CRC_64_REDIS).checksum(b)
    }

    #[test]
    fn matches_redis_check_value_and_the_table_everywhere() {
        // Redis's own test vector (crc64.c): "123456789" -> e9c6d914c4b8d9ca.
        assert_eq!(update(0, b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..5000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        // Every length around the folding's steps, at several alignments.
        for off in 0..4 {
            for len in (0..600).chain([1023, 1024, 1025, 4096, 4999 - off]) {
                let b = &data[off..off + len];
                assert_eq!(update(0, b), reference(b), "offset {off} length {len}");
            }
        }
        // Continued in pieces, as the RDB file reader does.
        for cut in [0, 1, 15, 16, 63, 64, 65, 700, 4999] {
            let (a, b) = data.split_at(cut);
            assert_eq!(update(update(0, a), b), reference(&data), "cut at {cut}");
        }
        assert_eq!(update(0, &[0xFF; 64]), reference(&[0xFF; 64]));
    }
}
