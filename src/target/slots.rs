//! Redis Cluster hash slots: CRC16-XMODEM of the key (or of its `{hashtag}`) modulo 16384,
//! exactly as Redis computes them (`cluster.c`, `keyHashSlot`).

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// CRC16-XMODEM lookup table (poly 0x1021, no reflection), built at compile time.
const TABLE: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            bit += 1;
        }
        t[i] = crc;
        i += 1;
    }
    t
};

/// CRC16-XMODEM (poly 0x1021, init 0, no reflection, no final xor), the checksum Redis
/// Cluster hashes keys with. `crc16(b"123456789") == 0x31C3`.
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| (crc << 8) ^ TABLE[((crc >> 8) as u8 ^ b) as usize])
}

/// The part of `key` that is hashed: the bytes between the first `{` and the first `}` after
/// it, if there is at least one such byte; otherwise the whole key.
pub fn hash_part(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The Redis Cluster hash slot (0..16384) of `key`, with Redis's hashtag rules.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_part(key)) & (SLOTS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bit-by-bit definition, to check the table against.
    fn crc16_bitwise(data: &[u8]) -> u16 {
        let mut crc = 0u16;
        for &b in data {
            crc ^= (b as u16) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            }
        }
        crc
    }

    #[test]
    fn crc16_check_value() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn crc16_table_matches_bitwise() {
        let data: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for len in 0..data.len() {
            assert_eq!(crc16(&data[..len]), crc16_bitwise(&data[..len]), "len {len}");
        }
    }

    #[test]
    fn known_slots() {
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
        // Values from the Redis Cluster specification / `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"somekey"), 11058);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
    }

    #[test]
    fn hashtags() {
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"{user1000}.followers"));
        // Empty braces: the whole key is hashed.
        assert_eq!(hash_part(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        // The first '{' and the first '}' after it.
        assert_eq!(hash_part(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(key_slot(b"foo{{bar}}zap"), crc16(b"{bar") % 16384);
        assert_eq!(hash_part(b"foo{bar}{zap}"), b"bar");
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        // No closing brace, or a closing brace only before the opening one.
        assert_eq!(hash_part(b"foo{bar"), b"foo{bar");
        assert_eq!(hash_part(b"}foo{bar"), b"}foo{bar");
        assert_eq!(hash_part(b"a}b{c}d"), b"c");
        assert_eq!(hash_part(b"{}"), b"{}");
        assert_eq!(hash_part(b"{a}"), b"a");
        assert_eq!(hash_part(b"\xff{\x00}\xfe"), b"\x00");
    }
}
