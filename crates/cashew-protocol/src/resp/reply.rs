//! Server replies of every RESP2 and RESP3 type, nested aggregates included: simple
//! lines (`+ - : _ # , (`), length-prefixed strings (`$ ! =`), aggregates (`* ~ >`
//! of N elements, `%` of N key-value pairs) and attributes (`|`, key-value pairs
//! that come before the reply they describe and belong to it).

pub use crate::{ReplyParse, Resume};

/// Parses the reply at the start of `buf`, walking nested arrays without recursion.
pub fn parse_reply(buf: &[u8]) -> ReplyParse {
    parse_reply_resumable(buf, &mut Resume::default())
}

/// Whether a whole reply is an error: a simple error (`-`) or a RESP3 blob
/// error (`!`).
pub fn is_error(reply: &[u8]) -> bool {
    matches!(reply.first(), Some(b'-' | b'!'))
}

/// The elements of a whole array, push or map reply (a map's keys and values in
/// turn), each as its bytes; `None` for any other reply or a malformed one.
pub fn reply_elements(reply: &[u8]) -> Option<Vec<&[u8]>> {
    let kind = *reply.first()?;
    if !matches!(kind, b'*' | b'>' | b'%') {
        return None;
    }
    let nl = memchr::memchr(b'\n', reply)?;
    let count: usize = std::str::from_utf8(reply.get(1..nl.checked_sub(1)?)?)
        .ok()?
        .parse()
        .ok()?;
    let count = if kind == b'%' {
        count.checked_mul(2)?
    } else {
        count
    };
    let mut at = nl + 1;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let ReplyParse::Complete(n) = parse_reply(reply.get(at..)?) else {
            return None;
        };
        out.push(&reply[at..at + n]);
        at += n;
    }
    Some(out)
}

/// The text of a bulk or simple string element; `None` for anything else (a null
/// among them).
pub fn element_text(element: &[u8]) -> Option<&[u8]> {
    match element.first()? {
        b'+' => element.get(1..element.len().checked_sub(2)?),
        b'$' | b'=' if !element.starts_with(b"$-1") => {
            let nl = memchr::memchr(b'\n', element)?;
            element.get(nl + 1..element.len().checked_sub(2)?)
        }
        _ => None,
    }
}

/// As [`parse_reply`], for a reply arriving in parts: `resume` carries where the
/// last call over a shorter prefix of the same reply stopped, and how many
/// elements each open aggregate still had to read there.
pub fn parse_reply_resumable(buf: &[u8], resume: &mut Resume) -> ReplyParse {
    let mut pos = resume.pos;
    // Elements still to read at the innermost open level, and at the outer ones.
    let mut stack = std::mem::take(&mut resume.open);
    let mut remaining: u64 = stack.pop().unwrap_or(1);
    let parsed = loop {
        while remaining == 0 {
            match stack.pop() {
                Some(r) => remaining = r,
                None => break,
            }
        }
        if remaining == 0 {
            break ReplyParse::Complete(pos);
        }
        match element(buf, pos) {
            Element::Incomplete => break ReplyParse::Incomplete,
            Element::Invalid => break ReplyParse::Invalid,
            Element::Scalar(end) => {
                remaining -= 1;
                pos = end;
            }
            Element::Aggregate {
                end,
                elements,
                attribute,
            } => {
                remaining -= 1;
                if attribute {
                    // An attribute does not take the place of a reply: the reply follows it.
                    remaining += 1;
                }
                pos = end;
                if elements > 0 {
                    stack.push(remaining);
                    remaining = elements;
                }
            }
        }
    };
    if parsed == ReplyParse::Incomplete {
        // Complete elements are not read again: the next call starts after them.
        resume.pos = pos;
        stack.push(remaining);
        resume.open = stack;
    } else {
        resume.reset();
    }
    parsed
}

enum Element {
    Incomplete,
    Invalid,
    /// A whole element ending at this offset.
    Scalar(usize),
    /// An aggregate's header ending at `end`, with this many elements to follow.
    Aggregate {
        end: usize,
        elements: u64,
        attribute: bool,
    },
}

/// The element that starts at `pos`.
fn element(buf: &[u8], pos: usize) -> Element {
    // Bulk strings and arrays, most of what servers send, read their length in
    // one pass; anything unusual takes the general path below.
    match buf.get(pos) {
        Some(b'$') => {
            if let Some((len, line_end)) = super::request::quick_number(buf, pos + 1) {
                let end = line_end + len + 2;
                return if buf.len() < end {
                    Element::Incomplete
                } else if &buf[end - 2..end] != b"\r\n" {
                    Element::Invalid
                } else {
                    Element::Scalar(end)
                };
            }
        }
        Some(b'*') => {
            if let Some((len, line_end)) = super::request::quick_number(buf, pos + 1) {
                return Element::Aggregate {
                    end: line_end,
                    elements: len as u64,
                    attribute: false,
                };
            }
        }
        _ => {}
    }
    let Some(nl) = memchr::memchr(b'\n', &buf[pos..]) else {
        return Element::Incomplete;
    };
    let line_end = pos + nl + 1;
    // At least a type byte and the `\r` before the `\n`.
    if nl < 2 || buf[line_end - 2] != b'\r' {
        return Element::Invalid;
    }
    let body = &buf[pos + 1..line_end - 2];
    match buf[pos] {
        b'+' | b'-' | b':' | b',' | b'(' => Element::Scalar(line_end),
        b'_' if body.is_empty() => Element::Scalar(line_end),
        b'#' if body == b"t" || body == b"f" => Element::Scalar(line_end),
        b'$' | b'!' | b'=' => match length(body) {
            None => Element::Invalid,
            Some(None) => Element::Scalar(line_end),
            Some(Some(len)) => {
                let end = line_end + len + 2;
                if buf.len() < end {
                    Element::Incomplete
                } else if &buf[end - 2..end] != b"\r\n" {
                    Element::Invalid
                } else {
                    Element::Scalar(end)
                }
            }
        },
        kind @ (b'*' | b'~' | b'>' | b'%' | b'|') => {
            let Some(len) = length(body) else {
                return Element::Invalid;
            };
            if len.is_none() && kind != b'*' {
                // Only RESP2's null array has a length of -1.
                return Element::Invalid;
            }
            let pairs = matches!(kind, b'%' | b'|');
            Element::Aggregate {
                end: line_end,
                elements: len.unwrap_or(0) as u64 * if pairs { 2 } else { 1 },
                attribute: kind == b'|',
            }
        }
        _ => Element::Invalid,
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

    #[test]
    fn errors_are_simple_and_blob_errors() {
        assert!(is_error(b"-ERR x\r\n"));
        assert!(is_error(b"!3\r\nbad\r\n"));
        assert!(!is_error(b"+OK\r\n"));
        assert!(!is_error(b"$1\r\n-\r\n"));
        assert!(!is_error(b""));
    }

    #[test]
    fn elements_of_arrays_pushes_and_maps() {
        let arr = b"*3\r\n$7\r\nmessage\r\n$-1\r\n:5\r\n";
        let e = reply_elements(arr).unwrap();
        assert_eq!(e, [&b"$7\r\nmessage\r\n"[..], b"$-1\r\n", b":5\r\n"]);
        assert_eq!(element_text(e[0]), Some(&b"message"[..]));
        assert_eq!(element_text(e[1]), None);
        assert_eq!(element_text(e[2]), None);
        let map = b"%1\r\n+a\r\n:1\r\n";
        let e = reply_elements(map).unwrap();
        assert_eq!(element_text(e[0]), Some(&b"a"[..]));
        assert_eq!(e.len(), 2);
        assert!(reply_elements(b">2\r\n+x\r\n").is_none(), "incomplete");
        assert!(reply_elements(b"+OK\r\n").is_none());
        assert!(reply_elements(b"*x\r\n").is_none());
    }
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
    fn replies_arriving_in_parts_resume_where_they_stopped() {
        for reply in [
            &b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n*1\r\n$-1\r\n+x\r\n"[..],
            b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:2039123\r\n:9543892\r\n",
            b"%2\r\n+first\r\n:1\r\n+second\r\n*0\r\n",
            b"$5\r\nhello\r\n",
            b"*-1\r\n",
            b"+OK\r\n",
        ] {
            crate::check_resuming(reply, parse_reply_resumable);
        }
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
    fn resp3_types() {
        for r in [
            &b"_\r\n"[..],
            b"#t\r\n",
            b",3.14\r\n",
            b",-inf\r\n",
            b"(3492890328409238509324850943850943825024385\r\n",
            b"!21\r\nSYNTAX invalid syntax\r\n",
            b"=15\r\ntxt:Some string\r\n",
            b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n",
            b"~3\r\n+a\r\n+b\r\n+c\r\n",
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
            b"%0\r\n",
            b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:2039123\r\n:9543892\r\n",
        ] {
            assert_eq!(
                parse_reply(r),
                ReplyParse::Complete(r.len()),
                "{}",
                String::from_utf8_lossy(r)
            );
            for cut in 0..r.len() {
                assert_eq!(parse_reply(&r[..cut]), ReplyParse::Incomplete, "cut {cut}");
            }
        }
        // An attribute inside an array belongs to the element after it.
        let r = b"*2\r\n:1\r\n|1\r\n+ttl\r\n:3\r\n:2\r\n";
        assert_eq!(parse_reply(r), ReplyParse::Complete(r.len()));
        assert_eq!(parse_reply(b"_x\r\n"), ReplyParse::Invalid);
        assert_eq!(parse_reply(b"#x\r\n"), ReplyParse::Invalid);
        assert_eq!(parse_reply(b"%-1\r\n"), ReplyParse::Invalid);
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
