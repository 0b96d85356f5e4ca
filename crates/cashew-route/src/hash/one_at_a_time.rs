//! Bob Jenkins' one-at-a-time hash, over signed bytes as nutcracker reads them.

use super::signed_byte;

pub fn one_at_a_time(key: &[u8]) -> u32 {
    let mut value: u32 = 0;
    for &b in key {
        value = value.wrapping_add(signed_byte(b));
        value = value.wrapping_add(value << 10);
        value ^= value >> 6;
    }
    value = value.wrapping_add(value << 3);
    value ^= value >> 11;
    value.wrapping_add(value << 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(one_at_a_time(b""), 0);
        // Reference values of the canonical algorithm (ASCII only, where sign does not matter).
        assert_eq!(one_at_a_time(b"a"), 0xca2e_9442);
        assert_eq!(
            one_at_a_time(b"The quick brown fox jumps over the lazy dog"),
            0x519e_91f5
        );
    }

    #[test]
    fn high_bytes_are_signed() {
        // A byte >= 0x80 is added as 0xffffff80.., not 0x80..; the two must differ.
        let unsigned = {
            let mut v: u32 = 0xc3;
            v = v.wrapping_add(v << 10);
            v ^= v >> 6;
            v = v.wrapping_add(v << 3);
            v ^= v >> 11;
            v.wrapping_add(v << 15)
        };
        assert_ne!(one_at_a_time(&[0xc3]), unsigned);
    }
}
