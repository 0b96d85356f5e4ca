//! Client requests: `*N\r\n$len\r\narg\r\n...` or an inline line of words. Arguments
//! are ranges into the caller's buffer, collected into a vector the caller reuses,
//! so parsing neither copies nor allocates per request.

use std::ops::Range;

/// Largest bulk argument accepted (Redis's default `proto-max-bulk-len`).
pub const MAX_BULK_LEN: usize = 512 * 1024 * 1024;
/// Most arguments in one request (Redis's limit).
pub const MAX_MULTIBULK_LEN: usize = 1024 * 1024;
/// Longest inline command or header line (Redis's `PROTO_INLINE_MAX_SIZE`).
const MAX_INLINE_LEN: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Bytes of the whole request.
    pub len: usize,
    /// Sent as an inline line rather than a multibulk.
    pub inline: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A request; its arguments are in the caller's vector.
    Request(Request),
    /// More bytes are needed; at least `needed` in all, when known, so the caller
    /// need not parse again before they are there.
    Incomplete { needed: Option<usize> },
    /// The stream breaks the protocol: answer `-ERR Protocol error: <reason>` and close.
    Error(&'static str),
}

/// Where a multibulk request that arrived in part stopped: the arguments read so
/// far stay in the caller's vector, and the next call reads on from here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestResume {
    pos: usize,
    /// Arguments still to read; 0 when no request is in progress.
    left: usize,
}

/// Parses the request at the start of `buf`, filling `args` with argument ranges.
/// An empty inline line is skipped: `Request` with no arguments.
pub fn parse_request(buf: &[u8], args: &mut Vec<Range<usize>>) -> Parsed {
    parse_request_resumable(buf, args, &mut RequestResume::default())
}

/// As [`parse_request`], for a request arriving in parts: `resume` (and `args`)
/// carry what the last call over a shorter prefix of the same request read, so
/// a request of many arguments is walked once, not once per read.
pub fn parse_request_resumable(
    buf: &[u8],
    args: &mut Vec<Range<usize>>,
    resume: &mut RequestResume,
) -> Parsed {
    if resume.left == 0 {
        args.clear();
    }
    let parsed = match buf.first() {
        None => Parsed::Incomplete { needed: None },
        Some(b'*') => multibulk(buf, args, resume),
        Some(_) => inline(buf, args),
    };
    if !matches!(parsed, Parsed::Incomplete { .. }) {
        *resume = RequestResume::default();
    }
    parsed
}

/// The line starting at `from`, without its `\r\n`, and where the next line starts.
fn line(buf: &[u8], from: usize) -> Option<(Range<usize>, usize)> {
    let nl = memchr::memchr(b'\n', &buf[from..])? + from;
    let end = if nl > from && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    Some((from..end, nl + 1))
}

/// A header's decimal number, from `at` up to `\r\n`, read in one pass: the number
/// and where the next line starts. `None` when the header is anything else (a
/// sign, another byte, not all there yet): the general path then decides.
#[inline]
pub(super) fn quick_number(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    // One digit, as most counts and many keys' lengths are: no loop.
    if let Some(&[d @ b'0'..=b'9', b'\r', b'\n']) = buf.get(at..at + 3) {
        return Some((usize::from(d - b'0'), at + 3));
    }
    let mut n = 0usize;
    let mut i = at;
    while let Some(&b) = buf.get(i) {
        match b {
            b'0'..=b'9' if i - at < 18 => n = n * 10 + usize::from(b - b'0'),
            b'\r' if i > at && buf.get(i + 1) == Some(&b'\n') => return Some((n, i + 2)),
            _ => return None,
        }
        i += 1;
    }
    None
}

fn number(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
    Some(if negative { -n } else { n })
}

fn multibulk(buf: &[u8], args: &mut Vec<Range<usize>>, resume: &mut RequestResume) -> Parsed {
    let (mut pos, mut left) = if resume.left > 0 {
        (resume.pos, resume.left)
    } else if let Some((count @ 1..=MAX_MULTIBULK_LEN, pos)) = quick_number(buf, 1) {
        args.reserve(count.min(64));
        (pos, count)
    } else {
        let Some((header, pos)) = line(buf, 0) else {
            return too_long_or_incomplete(buf.len(), "too big mbulk count string");
        };
        let count = match number(&buf[header.start + 1..header.end]) {
            Some(n) if n <= MAX_MULTIBULK_LEN as i64 => n,
            _ => return Parsed::Error("invalid multibulk length"),
        };
        if count <= 0 {
            return Parsed::Request(Request {
                len: pos,
                inline: false,
            });
        }
        // What the header claims is not trusted with memory: the vector grows as
        // arguments actually arrive.
        args.reserve((count as usize).min(64));
        (pos, count as usize)
    };
    let mut stop = |pos, left, needed| {
        *resume = RequestResume { pos, left };
        Parsed::Incomplete { needed }
    };
    while left > 0 {
        if pos >= buf.len() {
            return stop(pos, left, None);
        }
        if buf[pos] != b'$' {
            return Parsed::Error(match buf[pos] {
                b'\r' | b'\n' => "invalid bulk length",
                _ => "expected '$'",
            });
        }
        if let Some((len @ 0..=MAX_BULK_LEN, data)) = quick_number(buf, pos + 1) {
            let end = data + len + 2;
            if buf.len() < end {
                return stop(pos, left, Some(end));
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Parsed::Error("invalid bulk length");
            }
            args.push(data..data + len);
            pos = end;
            left -= 1;
            continue;
        }
        let Some((header, data)) = line(buf, pos) else {
            return match too_long_or_incomplete(buf.len() - pos, "too big bulk count string") {
                Parsed::Incomplete { .. } => stop(pos, left, None),
                error => error,
            };
        };
        let len = match number(&buf[header.start + 1..header.end]) {
            Some(n) if (0..=MAX_BULK_LEN as i64).contains(&n) => n as usize,
            _ => return Parsed::Error("invalid bulk length"),
        };
        let end = data + len + 2;
        if buf.len() < end {
            return stop(pos, left, Some(end));
        }
        if &buf[end - 2..end] != b"\r\n" {
            return Parsed::Error("invalid bulk length");
        }
        args.push(data..data + len);
        pos = end;
        left -= 1;
    }
    Parsed::Request(Request {
        len: pos,
        inline: false,
    })
}

fn inline(buf: &[u8], args: &mut Vec<Range<usize>>) -> Parsed {
    let Some((text, next)) = line(buf, 0) else {
        return too_long_or_incomplete(buf.len(), "too big inline request");
    };
    let mut i = text.start;
    while i < text.end {
        while i < text.end && matches!(buf[i], b' ' | b'\t') {
            i += 1;
        }
        if i == text.end {
            break;
        }
        if matches!(buf[i], b'"' | b'\'') {
            // A quoted argument, as typed in telnet: the range is inside the quotes.
            // Escapes would need the argument rewritten, which ranges cannot express.
            let quote = buf[i];
            let Some(len) = buf[i + 1..text.end].iter().position(|&b| b == quote) else {
                return Parsed::Error("unbalanced quotes in request");
            };
            let inner = i + 1..i + 1 + len;
            if quote == b'"' && buf[inner.clone()].contains(&b'\\') {
                return Parsed::Error("escapes in quoted inline arguments are not supported");
            }
            i = inner.end + 1;
            if i < text.end && !matches!(buf[i], b' ' | b'\t') {
                // Redis's words for it.
                return Parsed::Error("unbalanced quotes in request");
            }
            args.push(inner);
            continue;
        }
        let start = i;
        while i < text.end && !matches!(buf[i], b' ' | b'\t') {
            i += 1;
        }
        args.push(start..i);
    }
    Parsed::Request(Request {
        len: next,
        inline: true,
    })
}

fn too_long_or_incomplete(pending: usize, reason: &'static str) -> Parsed {
    if pending > MAX_INLINE_LEN {
        Parsed::Error(reason)
    } else {
        Parsed::Incomplete { needed: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_numbers_are_the_lines_general_numbers() {
        // Every header of up to 5 bytes over digits, CR, LF, a sign and another
        // byte: a quick number is a line of digits only ending in CRLF, read as
        // `number` reads it.
        let bytes = b"0179\r\n-x";
        for len in 0..=5u32 {
            for mut draw in 0..bytes.len().pow(len) {
                let mut text = vec![b'$'];
                for _ in 0..len {
                    text.push(bytes[draw % bytes.len()]);
                    draw /= bytes.len();
                }
                let expected = line(&text, 0).and_then(|(header, next)| {
                    let digits = &text[header.start + 1..header.end];
                    let all_digits = !digits.is_empty() && digits.iter().all(u8::is_ascii_digit);
                    let crlf = text.get(header.end) == Some(&b'\r');
                    (all_digits && crlf).then(|| (number(digits).unwrap() as usize, next))
                });
                assert_eq!(quick_number(&text, 1), expected, "{text:?}");
            }
        }
    }

    #[test]
    fn requests_arriving_in_parts_resume_where_they_stopped() {
        let request = b"*4\r\n$4\r\nMSET\r\n$1\r\na\r\n$0\r\n\r\n$3\r\nxyz\r\n";
        let mut whole = Vec::new();
        assert!(matches!(
            parse_request(request, &mut whole),
            Parsed::Request(_)
        ));
        for step in 1..=request.len() {
            let (mut args, mut resume, mut have) = (Vec::new(), RequestResume::default(), 0);
            loop {
                have = (have + step).min(request.len());
                match parse_request_resumable(&request[..have], &mut args, &mut resume) {
                    Parsed::Incomplete { .. } => assert!(have < request.len(), "step {step}"),
                    Parsed::Request(r) => {
                        assert_eq!((r.len, &args), (request.len(), &whole), "step {step}");
                        assert_eq!(resume, RequestResume::default());
                        break;
                    }
                    Parsed::Error(e) => panic!("step {step}: {e}"),
                }
            }
        }
    }

    fn args_of(buf: &[u8]) -> (Parsed, Vec<Vec<u8>>) {
        let mut args = Vec::new();
        let parsed = parse_request(buf, &mut args);
        let words = args.iter().map(|r| buf[r.clone()].to_vec()).collect();
        (parsed, words)
    }

    #[test]
    fn multibulk_request() {
        let buf = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*1\r\n";
        let (parsed, words) = args_of(buf);
        assert_eq!(
            parsed,
            Parsed::Request(Request {
                len: 31,
                inline: false
            })
        );
        assert_eq!(words, [&b"SET"[..], b"k", b"hello"]);
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let buf = b"*2\r\n$4\r\nECHO\r\n$11\r\nhello world\r\n";
        for cut in 0..buf.len() {
            assert!(
                matches!(args_of(&buf[..cut]).0, Parsed::Incomplete { .. }),
                "cut {cut}"
            );
        }
        assert!(matches!(args_of(buf).0, Parsed::Request(_)));
    }

    #[test]
    fn big_bulk_says_how_much_it_needs() {
        let mut buf = b"*2\r\n$3\r\nGET\r\n$1000000\r\n".to_vec();
        buf.extend(vec![b'x'; 10]);
        assert_eq!(
            args_of(&buf).0,
            Parsed::Incomplete {
                needed: Some(23 + 1_000_002)
            }
        );
    }

    #[test]
    fn binary_safe_arguments() {
        let buf = b"*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\n";
        assert_eq!(args_of(buf).1[1], b"a\r\nb");
    }

    #[test]
    fn inline_commands() {
        let (parsed, words) = args_of(b"set  key value\r\nPING\r\n");
        assert_eq!(
            parsed,
            Parsed::Request(Request {
                len: 16,
                inline: true
            })
        );
        assert_eq!(words, [&b"set"[..], b"key", b"value"]);
        let (parsed, words) = args_of(b"\r\n");
        assert_eq!(
            parsed,
            Parsed::Request(Request {
                len: 2,
                inline: true
            })
        );
        assert!(words.is_empty());
        assert_eq!(args_of(b"PING\n").1, [b"PING"]);
        let (parsed, words) = args_of(b"EVAL \"return 1\" 0 'a b'\r\n");
        assert!(matches!(parsed, Parsed::Request(_)));
        assert_eq!(words, [&b"EVAL"[..], b"return 1", b"0", b"a b"]);
        assert!(matches!(args_of(b"GET \"k\r\n").0, Parsed::Error(_)));
    }

    #[test]
    fn protocol_errors() {
        assert_eq!(
            args_of(b"*x\r\n").0,
            Parsed::Error("invalid multibulk length")
        );
        assert_eq!(args_of(b"*2\r\n:3\r\n").0, Parsed::Error("expected '$'"));
        assert_eq!(
            args_of(b"*1\r\n$-5\r\n").0,
            Parsed::Error("invalid bulk length")
        );
        assert_eq!(
            args_of(b"*1\r\n$3\r\nabcd\r\n").0,
            Parsed::Error("invalid bulk length")
        );
        let endless = vec![b'a'; MAX_INLINE_LEN + 1];
        assert_eq!(args_of(&endless).0, Parsed::Error("too big inline request"));
    }

    #[test]
    fn empty_multibulk_is_a_no_op() {
        assert_eq!(
            args_of(b"*0\r\n").0,
            Parsed::Request(Request {
                len: 4,
                inline: false
            })
        );
        assert_eq!(
            args_of(b"*-1\r\n").0,
            Parsed::Request(Request {
                len: 5,
                inline: false
            })
        );
    }
}
