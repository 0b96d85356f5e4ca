//! Finding a byte in the short lines of the text protocol: a word at a time over
//! the first bytes, where most lines end (a search routine's setup costs more than
//! such a line), then `memchr` for the rest of a long one.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;
/// Bytes looked at a word at a time before `memchr` takes over.
const SHORT: usize = 32;

/// The high bit of the lowest zero byte of `w` set (bytes above it may be flagged
/// too, by the borrow; bytes below never are).
#[inline]
fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(ONES) & !w & HIGH
}

/// Where `a` or `b` first occurs in `buf`.
#[inline]
pub(crate) fn find2(buf: &[u8], a: u8, b: u8) -> Option<usize> {
    let (all_a, all_b) = (ONES * u64::from(a), ONES * u64::from(b));
    let short = buf.len().min(SHORT);
    let mut at = 0;
    while at + 8 <= short {
        let mut word = [0u8; 8];
        word.copy_from_slice(&buf[at..at + 8]);
        let w = u64::from_le_bytes(word);
        let hits = zero_bytes(w ^ all_a) | zero_bytes(w ^ all_b);
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    if at < SHORT {
        return buf[at..]
            .iter()
            .position(|&c| c == a || c == b)
            .map(|p| at + p);
    }
    memchr::memchr2(a, b, &buf[at..]).map(|p| at + p)
}

/// Where `a` first occurs in `buf`.
#[inline]
pub(crate) fn find(buf: &[u8], a: u8) -> Option<usize> {
    find2(buf, a, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_a_byte_walk_finds() {
        // Bytes next to the ones looked for, with and without the high bit, so that
        // a borrow or a carry between bytes would show.
        let alphabet = [
            b'\n', 0, 1, 9, 11, 0x80, 0x81, 0x8a, 0xff, b'a', b'\r', b' ',
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            crate::next_random(&mut x);
            let len = (x % 90) as usize;
            // One byte in `rarity` looked for: hits fall anywhere, or nowhere.
            let rarity = 2 + (x >> 20) % 120;
            let mut r = x;
            let buf: Vec<u8> = (0..len)
                .map(|i| {
                    r = r.rotate_left(7) ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
                    match r % rarity {
                        0 => b'\n',
                        1 => 0,
                        k => alphabet[2 + k as usize % (alphabet.len() - 2)],
                    }
                })
                .collect();
            let walk2 = buf.iter().position(|&c| c == b'\n' || c == 0);
            assert_eq!(find2(&buf, b'\n', 0), walk2, "{buf:?}");
            let walk = buf.iter().position(|&c| c == b'\n');
            assert_eq!(find(&buf, b'\n'), walk, "{buf:?}");
        }
        assert_eq!(find(b"", b'\n'), None);
        let long = [vec![b'x'; 1000], b"\n".to_vec()].concat();
        assert_eq!(find(&long, b'\n'), Some(1000));
        assert_eq!(find2(&long, 0, b'\n'), Some(1000));
    }
}
