//! Server replies. A reply is one line, `VALUE` blocks closed by `END`, or a meta
//! `VA <length> <flags>` line followed by its data.

use super::tokens::Tokens;
pub use crate::{ReplyParse, Resume};

/// Parses the reply at the start of `buf`.
pub fn parse_reply(buf: &[u8]) -> ReplyParse {
    parse_reply_resumable(buf, &mut Resume::default())
}

/// As [`parse_reply`], for a reply arriving in parts: `resume` carries what the
/// last call over a shorter prefix of the same reply found complete.
pub fn parse_reply_resumable(buf: &[u8], resume: &mut Resume) -> ReplyParse {
    let parsed = parse_from(buf, &mut resume.pos);
    if parsed != ReplyParse::Incomplete {
        resume.reset();
    }
    parsed
}

/// Parses from `*cursor`, a block boundary after `VALUE` blocks (or 0), and
/// leaves it at the end of the last complete block.
fn parse_from(buf: &[u8], cursor: &mut usize) -> ReplyParse {
    loop {
        let pos = *cursor;
        let Some(nl) = super::scan::find(&buf[pos..], b'\n') else {
            return ReplyParse::Incomplete;
        };
        let line = &buf[pos..pos + nl];
        let line_len = nl + 1;
        // Every memcached reply starts with an upper-case word or a number: anything
        // else means the connection is out of step (or not talking to memcached).
        if !line
            .first()
            .is_some_and(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return ReplyParse::Invalid;
        }
        if pos == 0 && line.starts_with(b"VA ") {
            let Some(data) = token_number(line, 1) else {
                return ReplyParse::Invalid;
            };
            let end = line_len + data + 2;
            if buf.len() < end {
                return ReplyParse::Incomplete;
            }
            if &buf[end - 2..end] != b"\r\n" {
                return ReplyParse::Invalid;
            }
            return ReplyParse::Complete(end);
        }
        if !line.starts_with(b"VALUE ") {
            // `END` closes a retrieval; any other line is a whole reply on its own,
            // unless VALUE blocks came before it, which only END may follow.
            let is_end = line == b"END\r" || line == b"END";
            return match (pos, is_end) {
                (0, _) | (_, true) => ReplyParse::Complete(pos + line_len),
                _ => ReplyParse::Invalid,
            };
        }
        let Some(data) = value_len(line) else {
            return ReplyParse::Invalid;
        };
        let end = pos + line_len + data + 2;
        if buf.len() < end {
            return ReplyParse::Incomplete;
        }
        if &buf[end - 2..end] != b"\r\n" {
            return ReplyParse::Invalid;
        }
        *cursor = end;
    }
}

/// The data length of a `VALUE <key> <flags> <bytes> [<cas>]` line.
#[inline]
fn value_len(line: &[u8]) -> Option<usize> {
    token_number(line, 3)
}

/// Token `index` of a reply line, as a length.
#[inline]
fn token_number(line: &[u8], index: usize) -> Option<usize> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = &line[Tokens::new(line).nth(index)?];
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + usize::from(d - b'0'))
    })
}

/// The `VALUE` blocks of a complete retrieval reply, each as `(key, whole block)`.
pub struct ValueBlocks<'a> {
    rest: &'a [u8],
}

impl<'a> ValueBlocks<'a> {
    pub fn new(reply: &'a [u8]) -> Self {
        ValueBlocks { rest: reply }
    }
}

impl<'a> Iterator for ValueBlocks<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let nl = super::scan::find(self.rest, b'\n')?;
        let line = &self.rest[..nl];
        if !line.starts_with(b"VALUE ") {
            return None;
        }
        let data = value_len(line)?;
        let end = (nl + 1 + data + 2).min(self.rest.len());
        let key = line[6..].split(|&b| b == b' ').next()?;
        let block = &self.rest[..end];
        self.rest = &self.rest[end..];
        Some((key, block))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_arriving_in_parts_resume_where_they_stopped() {
        for reply in [
            &b"VALUE a 0 3\r\nabc\r\nVALUE bb 5 0\r\n\r\nVALUE c 1 2 99\r\nxy\r\nEND\r\n"[..],
            b"VA 5 f1\r\nhello\r\n",
            b"END\r\n",
            b"STORED\r\n",
        ] {
            crate::check_resuming(reply, parse_reply_resumable);
        }
        // What comes after VALUE blocks is still checked when resuming.
        let mut resume = Resume::default();
        assert_eq!(
            parse_reply_resumable(b"VALUE a 0 1\r\nx\r\n", &mut resume),
            ReplyParse::Incomplete
        );
        assert_eq!(
            parse_reply_resumable(b"VALUE a 0 1\r\nx\r\nSTORED\r\n", &mut resume),
            ReplyParse::Invalid
        );
    }

    #[test]
    fn single_lines() {
        for reply in [
            &b"STORED\r\n"[..],
            b"NOT_FOUND\r\n",
            b"42\r\n",
            b"END\r\n",
            b"SERVER_ERROR oops\r\n",
        ] {
            assert_eq!(parse_reply(reply), ReplyParse::Complete(reply.len()));
        }
        assert_eq!(
            parse_reply(b"STORED\r\nDELETED\r\n"),
            ReplyParse::Complete(8)
        );
        assert_eq!(parse_reply(b"STOR"), ReplyParse::Incomplete);
        for garbage in [&b"\x00garbage\r\n"[..], b"\r\n", b"hello\r\n", b" END\r\n"] {
            assert_eq!(parse_reply(garbage), ReplyParse::Invalid, "{garbage:?}");
        }
    }

    #[test]
    fn value_blocks() {
        let reply = b"VALUE a 0 3\r\nabc\r\nVALUE bb 5 1 77\r\nx\r\nEND\r\nSTORED\r\n";
        assert_eq!(parse_reply(reply), ReplyParse::Complete(reply.len() - 8));
        for cut in 0..reply.len() - 8 {
            assert_eq!(
                parse_reply(&reply[..cut]),
                ReplyParse::Incomplete,
                "cut {cut}"
            );
        }
        let blocks: Vec<_> = ValueBlocks::new(reply).collect();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0], (&b"a"[..], &b"VALUE a 0 3\r\nabc\r\n"[..]));
        assert_eq!(blocks[1].0, b"bb");
    }

    #[test]
    fn values_may_hold_line_breaks() {
        let reply = b"VALUE a 0 4\r\n\r\nEN\r\nEND\r\n";
        assert_eq!(parse_reply(reply), ReplyParse::Complete(reply.len()));
    }

    #[test]
    fn meta_replies() {
        for reply in [
            &b"HD\r\n"[..],
            b"EN\r\n",
            b"MN\r\n",
            b"NF O12 kfoo\r\n",
            b"ME foo exp=-1\r\n",
        ] {
            assert_eq!(parse_reply(reply), ReplyParse::Complete(reply.len()));
        }
        let reply = b"VA 3 O5 f0\r\nabc\r\nMN\r\n";
        assert_eq!(parse_reply(reply), ReplyParse::Complete(reply.len() - 4));
        for cut in 0..reply.len() - 4 {
            assert_eq!(
                parse_reply(&reply[..cut]),
                ReplyParse::Incomplete,
                "cut {cut}"
            );
        }
        assert_eq!(parse_reply(b"VA x\r\n"), ReplyParse::Invalid);
        assert_eq!(parse_reply(b"VA 1\r\nxyz\r\n"), ReplyParse::Invalid);
    }

    #[test]
    fn broken_replies() {
        assert_eq!(parse_reply(b"VALUE a 0 x\r\n"), ReplyParse::Invalid);
        assert_eq!(parse_reply(b"VALUE a 0 1\r\nxyz\r\n"), ReplyParse::Invalid);
        assert_eq!(
            parse_reply(b"VALUE a 0 1\r\nx\r\nSTORED\r\n"),
            ReplyParse::Invalid
        );
    }
}
