//! MD5-based hashing: the `md5` key hash and the digest that ketama points come from.

use md5::{Digest, Md5};

/// The 16-byte MD5 digest of `data`.
#[inline]
pub fn md5_digest(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

/// The first four digest bytes, little-endian.
pub fn md5(key: &[u8]) -> u32 {
    let d = md5_digest(key);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_rfc1321() {
        // RFC 1321 test suite: MD5("abc") = 900150983cd24fb0d6963f7d28e17f72.
        let d = md5_digest(b"abc");
        assert_eq!(d[..4], [0x90, 0x01, 0x50, 0x98]);
        assert_eq!(md5(b"abc"), 0x9850_0190);
    }
}
