//! Server replies of every RESP2 type, nested arrays included.

pub use crate::ReplyParse;

/// Parses the reply at the start of `buf`, walking nested arrays without recursion.
pub fn parse_reply(buf: &[u8]) -> ReplyParse {
    let mut pos = 0;
    // Elements still to read at each open array level.
    let mut remaining: u64 = 1;
    let mut stack: Vec<u64> = Vec::new();
    loop {
        while remaining == 0 {
            match stack.pop() {
                Some(r) => remaining = r,
                None => return ReplyParse::Complete(pos),
            }
        }
        let Some(nl) = memchr::memchr(b'\n', &buf[pos..]) else {
            return ReplyParse::Incomplete;
        };
        let line_end = pos + nl + 1;
        // At least a type byte and the `\r` before the `\n`.
        if nl < 2 || buf[line_end - 2] != b'\r' {
            return ReplyParse::Invalid;
        }
        let body = &buf[pos + 1..line_end - 2];
        remaining -= 1;
        match buf[pos] {
            b'+' | b'-' | b':' => pos = line_end,
            b'$' => {
                let Some(len) = length(body) else {
                    return ReplyParse::Invalid;
                };
                pos = match len {
                    None => line_end,
                    Some(len) => {
                        let end = line_end + len + 2;
                        if buf.len() < end {
                            return ReplyParse::Incomplete;
                        }
                        if &buf[end - 2..end] != b"\r\n" {
                            return ReplyParse::Invalid;
                        }
                        end
                    }
                };
            }
            b'*' => {
                let Some(len) = length(body) else {
                    return ReplyParse::Invalid;
                };
                pos = line_end;
                if let Some(len) = len {
                    if len > 0 {
                        stack.push(remaining);
                        remaining = len as u64;
                    }
                }
            }
            _ => return ReplyParse::Invalid,
        }
    }
}

/// A length field: `Some(None)` for -1 (null), `None` when malformed.
fn length(digits: &[u8]) -> Option<Option<usize>> {
    if digits == b"-1" {
        return Some(None);
    }
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(Some(
        digits
            .iter()
            .fold(0usize, |n, &d| n * 10 + usize::from(d - b'0')),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_types() {
        for r in [
            &b"+OK\r\n"[..],
            b"-ERR bad\r\n",
            b":42\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"$0\r\n\r\n",
        ] {
            assert_eq!(parse_reply(r), ReplyParse::Complete(r.len()), "{r:?}");
        }
        assert_eq!(
            parse_reply(b"$5\r\nhello\r\n+OK\r\n"),
            ReplyParse::Complete(11)
        );
    }

    #[test]
    fn nested_arrays() {
        let r = b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n*1\r\n$-1\r\n+x\r\n";
        assert_eq!(parse_reply(r), ReplyParse::Complete(r.len()));
        for cut in 0..r.len() {
            assert_eq!(parse_reply(&r[..cut]), ReplyParse::Incomplete, "cut {cut}");
        }
    }

    #[test]
    fn invalid() {
        assert_eq!(parse_reply(b"?what\r\n"), ReplyParse::Invalid);
        assert_eq!(parse_reply(b"$x\r\n"), ReplyParse::Invalid);
        assert_eq!(parse_reply(b"$1\r\nab\r\n"), ReplyParse::Invalid);
        // Found by fuzzing: a line with no type byte.
        assert_eq!(parse_reply(b"\r\n"), ReplyParse::Invalid);
        assert_eq!(parse_reply(b"\n"), ReplyParse::Invalid);
        assert_eq!(parse_reply(b"*1\r\n\r\n"), ReplyParse::Invalid);
    }
}
