//! Decoding the base64 keys of meta commands (`b` flag), so that such a key is
//! placed by its bytes, as the server stores it.

/// Decodes standard base64 (`A-Z a-z 0-9 + /`, `=` padding) into `out`; the
/// decoded length, or `None` for input that is not base64 or does not fit.
pub fn decode(input: &[u8], out: &mut [u8]) -> Option<usize> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    if input.is_empty() || input.len() % 4 != 0 {
        return None;
    }
    let mut n = 0;
    let chunks = input.len() / 4;
    for (i, chunk) in input.chunks_exact(4).enumerate() {
        let last = i + 1 == chunks;
        let pad = if last {
            chunk.iter().rev().take_while(|&&c| c == b'=').count()
        } else {
            0
        };
        if pad > 2 {
            return None;
        }
        let mut bits = 0u32;
        for &c in &chunk[..4 - pad] {
            bits = (bits << 6) | value(c)?;
        }
        bits <<= 6 * pad as u32;
        let bytes = [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8];
        let take = 3 - pad;
        out.get_mut(n..n + take)?.copy_from_slice(&bytes[..take]);
        n += take;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::decode;

    fn decoded(s: &str) -> Option<Vec<u8>> {
        let mut out = [0u8; 64];
        decode(s.as_bytes(), &mut out).map(|n| out[..n].to_vec())
    }

    #[test]
    fn rfc4648_vectors() {
        for (text, plain) in [
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9vYmFy", "foobar"),
        ] {
            assert_eq!(decoded(text).as_deref(), Some(plain.as_bytes()), "{text}");
        }
    }

    #[test]
    fn not_base64() {
        for bad in ["", "Zm9", "Zm9v!", "Z===", "Zg==Zg=="] {
            assert_eq!(decoded(bad), None, "{bad}");
        }
        let mut small = [0u8; 2];
        assert_eq!(decode(b"Zm9v", &mut small), None, "does not fit");
    }
}
