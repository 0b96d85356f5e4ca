//! MurmurHash2 with libmemcached's seed (`0xdeadbeef * len`).

const M: u32 = 0x5bd1_e995;
const R: u32 = 24;

pub fn murmur(key: &[u8]) -> u32 {
    let len = key.len() as u32;
    let seed = 0xdead_beefu32.wrapping_mul(len);
    let mut h = seed ^ len;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        if rest.len() >= 3 {
            h ^= (rest[2] as u32) << 16;
        }
        if rest.len() >= 2 {
            h ^= (rest[1] as u32) << 8;
        }
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_key() {
        // Seed and length are both 0: only the final mix of 0 remains.
        assert_eq!(murmur(b""), 0);
    }

    #[test]
    fn every_tail_length_mixes() {
        let a = murmur(b"abcd");
        let b = murmur(b"abcde");
        let c = murmur(b"abcdef");
        let d = murmur(b"abcdefg");
        assert!(a != b && b != c && c != d && a != d);
    }
}
