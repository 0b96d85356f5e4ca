//! Numbers as memcached reads them: C's `strtol` family (leading white space, an
//! optional sign, decimal digits) wrapped the way memcached wraps them, so that
//! cashew accepts exactly the numbers memcached accepts, with the same quirks
//! (`-0` is a valid flag value, a 64-bit length is cut to 32 bits). Whether a
//! length is valid decides whether a data block follows, so this must match.

/// What C's `isspace` accepts in the C locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The digits `strtol`/`strtoul` would read from `token`.
struct Scan {
    negative: bool,
    /// The magnitude, or `None` when it does not fit in 64 bits.
    magnitude: Option<u64>,
    /// Index just past the last digit; 0 when there were none (no conversion).
    end: usize,
}

fn scan(token: &[u8]) -> Scan {
    let mut i = 0;
    while i < token.len() && is_c_space(token[i]) {
        i += 1;
    }
    let mut negative = false;
    if i < token.len() && (token[i] == b'+' || token[i] == b'-') {
        negative = token[i] == b'-';
        i += 1;
    }
    let digits_start = i;
    let mut magnitude = Some(0u64);
    while i < token.len() && token[i].is_ascii_digit() {
        let digit = u64::from(token[i] - b'0');
        magnitude = magnitude
            .and_then(|m| m.checked_mul(10))
            .and_then(|m| m.checked_add(digit));
        i += 1;
    }
    Scan {
        negative,
        magnitude,
        end: if i == digits_start { 0 } else { i },
    }
}

/// memcached accepts a number when the digits end the token or are followed by
/// white space (`xisspace(*endptr)`).
fn ends_well(token: &[u8], scan: &Scan) -> bool {
    scan.end != 0 && (scan.end == token.len() || is_c_space(token[scan.end]))
}

/// `strtoull` then memcached's checks: a value so large it is negative as a
/// signed number is refused when the token has a minus sign anywhere.
fn unsigned(token: &[u8]) -> Option<u64> {
    let scan = scan(token);
    if !ends_well(token, &scan) {
        return None;
    }
    let magnitude = scan.magnitude?; // ERANGE
    let value = if scan.negative {
        magnitude.wrapping_neg()
    } else {
        magnitude
    };
    if (value as i64) < 0 && token.contains(&b'-') {
        return None;
    }
    Some(value)
}

/// memcached's `safe_strtoull`.
pub fn safe_strtoull(token: &[u8]) -> Option<u64> {
    unsigned(token)
}

/// memcached's `safe_strtoul`: as [`safe_strtoull`], then cut to 32 bits.
pub fn safe_strtoul(token: &[u8]) -> Option<u32> {
    unsigned(token).map(|v| v as u32)
}

/// memcached's `safe_strtol`: C's `strtol` (64-bit `long`), then cut to 32 bits.
pub fn safe_strtol(token: &[u8]) -> Option<i32> {
    let scan = scan(token);
    if !ends_well(token, &scan) {
        return None;
    }
    let magnitude = scan.magnitude?;
    let value: i64 = if scan.negative {
        if magnitude > 1 << 63 {
            return None; // ERANGE
        }
        (magnitude as i64).wrapping_neg()
    } else {
        i64::try_from(magnitude).ok()?
    };
    Some(value as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_numbers() {
        assert_eq!(safe_strtoull(b"42"), Some(42));
        assert_eq!(safe_strtoull(b"+42"), Some(42));
        assert_eq!(safe_strtoull(b"\t42"), Some(42));
        assert_eq!(safe_strtoull(b"42\t"), Some(42), "white space may follow");
        assert_eq!(safe_strtoull(b"42\tjunk"), Some(42));
        assert_eq!(safe_strtoull(b"-0"), Some(0));
        assert_eq!(safe_strtoull(b"-1"), None);
        assert_eq!(safe_strtoull(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(safe_strtoull(b"18446744073709551616"), None, "ERANGE");
        for bad in [&b""[..], b"x", b"4x", b"+", b"-", b" ", b"0x10"] {
            assert_eq!(
                safe_strtoull(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn small_unsigned_numbers_wrap_to_32_bits() {
        assert_eq!(safe_strtoul(b"4294967295"), Some(u32::MAX));
        assert_eq!(safe_strtoul(b"4294967296"), Some(0));
        assert_eq!(safe_strtoul(b"-5"), None);
    }

    #[test]
    fn signed_numbers_wrap_to_32_bits() {
        assert_eq!(safe_strtol(b"-1"), Some(-1));
        assert_eq!(safe_strtol(b"2147483647"), Some(i32::MAX));
        assert_eq!(safe_strtol(b"2147483648"), Some(i32::MIN));
        assert_eq!(safe_strtol(b"4294967301"), Some(5));
        assert_eq!(safe_strtol(b"9223372036854775807"), Some(-1));
        assert_eq!(safe_strtol(b"9223372036854775808"), None, "ERANGE");
        assert_eq!(safe_strtol(b"-9223372036854775808"), Some(0));
        assert_eq!(safe_strtol(b"-9223372036854775809"), None);
        assert_eq!(safe_strtol(b"12ab"), None);
    }
}
