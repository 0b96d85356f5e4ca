//! Fowler–Noll–Vo hashes, over signed bytes as nutcracker reads them.

use super::signed_byte;

const FNV_64_INIT: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_64_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV_32_INIT: u32 = 2_166_136_261;
const FNV_32_PRIME: u32 = 16_777_619;

pub fn fnv1_64(key: &[u8]) -> u32 {
    let mut hash = FNV_64_INIT;
    for &b in key {
        hash = hash.wrapping_mul(FNV_64_PRIME);
        hash ^= b as i8 as i64 as u64;
    }
    hash as u32
}

/// nutcracker truncates the 64-bit basis and prime to 32 bits and runs the loop in
/// 32-bit arithmetic. The low 32 bits of a product depend only on the low 32 bits of
/// its factors, so this still equals the low half of the real FNV-1a 64.
pub fn fnv1a_64(key: &[u8]) -> u32 {
    let mut hash = FNV_64_INIT as u32;
    for &b in key {
        hash ^= signed_byte(b);
        hash = hash.wrapping_mul(FNV_64_PRIME as u32);
    }
    hash
}

pub fn fnv1_32(key: &[u8]) -> u32 {
    let mut hash = FNV_32_INIT;
    for &b in key {
        hash = hash.wrapping_mul(FNV_32_PRIME);
        hash ^= signed_byte(b);
    }
    hash
}

pub fn fnv1a_32(key: &[u8]) -> u32 {
    let mut hash = FNV_32_INIT;
    for &b in key {
        hash ^= signed_byte(b);
        hash = hash.wrapping_mul(FNV_32_PRIME);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_fnv32_vectors() {
        // Published FNV test vectors (ASCII input, so the signed read does not matter).
        assert_eq!(fnv1_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1_32(b"a"), 0x050c_5d7e);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
        // Low 32 bits of FNV-1 64 of "a" (0xaf63bd4c8601b7be).
        assert_eq!(fnv1_64(b"a"), 0x8601_b7be);
    }

    #[test]
    fn fnv1a_64_is_the_low_half_of_real_fnv1a_64() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c and of "foobar" 0x85944171f73967e8.
        assert_eq!(fnv1a_64(b"a"), 0x8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0xf739_67e8);
    }
}
