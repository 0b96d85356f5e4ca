//! Client requests. A request is described by offsets into the caller's buffer, so
//! parsing copies nothing and the bytes can be forwarded exactly as received.

use std::ops::Range;

use super::tokens::{is_valid_key, Tokens};

/// Longest command line accepted (a multi-get of many long keys fits easily).
pub const MAX_LINE_LEN: usize = 256 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Get,
    Gets,
    Gat,
    Gats,
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
    Incr,
    Decr,
    Touch,
    Delete,
    FlushAll,
    Verbosity,
    Version,
    Quit,
    Stats,
}

/// How a request travels through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Any number of keys, split per server and merged back.
    Retrieval,
    /// One key, one server.
    SingleKey,
    /// Sent to every server of the pool.
    Broadcast,
    /// Answered by the proxy itself.
    Local,
}

impl Command {
    pub fn shape(self) -> Shape {
        use Command::*;
        match self {
            Get | Gets | Gat | Gats => Shape::Retrieval,
            Set | Add | Replace | Append | Prepend | Cas | Incr | Decr | Touch | Delete => {
                Shape::SingleKey
            }
            FlushAll | Verbosity => Shape::Broadcast,
            Version | Quit | Stats => Shape::Local,
        }
    }

    pub fn is_storage(self) -> bool {
        use Command::*;
        matches!(self, Set | Add | Replace | Append | Prepend | Cas)
    }

    fn from_name(name: &[u8]) -> Option<Command> {
        use Command::*;
        Some(match name {
            b"get" => Get,
            b"gets" => Gets,
            b"gat" => Gat,
            b"gats" => Gats,
            b"set" => Set,
            b"add" => Add,
            b"replace" => Replace,
            b"append" => Append,
            b"prepend" => Prepend,
            b"cas" => Cas,
            b"incr" => Incr,
            b"decr" => Decr,
            b"touch" => Touch,
            b"delete" => Delete,
            b"flush_all" => FlushAll,
            b"verbosity" => Verbosity,
            b"version" => Version,
            b"quit" => Quit,
            b"stats" => Stats,
            _ => return None,
        })
    }
}

/// A complete, valid request at the start of the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    /// Bytes of the command line, line ending included.
    pub line_len: usize,
    /// Bytes of the whole request, data block included.
    pub len: usize,
    /// The key of a single-key command, or the first key of a retrieval.
    pub key: Range<usize>,
    /// Retrievals: the key list on the line (from the first key to the line's end).
    pub keys: Range<usize>,
    /// The request asked for no reply.
    pub noreply: bool,
    /// The ` noreply` token with the space before it, so it can be cut out when the
    /// proxy wants the server's reply anyway. Empty when absent.
    pub noreply_span: Range<usize>,
}

/// A request that cannot be served: what to answer and how to get back in step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The whole reply line, `\r\n` included.
    pub reply: &'static [u8],
    /// Bytes to drop from the buffer now.
    pub consume: usize,
    /// Further bytes to drop as they arrive (the data block of a refused storage command).
    pub skip: usize,
    /// The stream cannot be resynchronised: answer, then close.
    pub close: bool,
    /// The request said `noreply`: send nothing.
    pub noreply: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Request(Request),
    /// More bytes are needed.
    Incomplete,
    Invalid(Invalid),
}

const ERROR: &[u8] = b"ERROR\r\n";
const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";
const BAD_KEY: &[u8] = b"CLIENT_ERROR bad key: 1 to 250 bytes, no spaces or control characters\r\n";
const BAD_DELTA: &[u8] = b"CLIENT_ERROR invalid numeric delta argument\r\n";
const BAD_CHUNK: &[u8] = b"CLIENT_ERROR bad data chunk\r\n";
const TOO_LARGE: &[u8] = b"CLIENT_ERROR object too large for cache\r\n";
const LINE_TOO_LONG: &[u8] = b"CLIENT_ERROR line too long\r\n";

/// Parses the request at the start of `buf`. `max_value` is the largest data block
/// accepted; a larger one is refused and skipped.
pub fn parse_request(buf: &[u8], max_value: usize) -> Parsed {
    let Some(nl) = memchr::memchr(b'\n', buf) else {
        if buf.len() > MAX_LINE_LEN {
            return invalid(LINE_TOO_LONG, buf.len(), 0, false).closing();
        }
        return Parsed::Incomplete;
    };
    let line_len = nl + 1;
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let line = &buf[..line_end];

    let mut tokens = Tokens::new(line);
    let Some(name) = tokens.next() else {
        return invalid(ERROR, line_len, 0, false);
    };
    let Some(command) = Command::from_name(&line[name]) else {
        return invalid(ERROR, line_len, 0, false);
    };

    // At most 8 tokens are needed by any non-retrieval command (cas has 7 and noreply).
    let mut args: [Range<usize>; 8] = Default::default();
    let mut nargs = 0;
    let request = |key: Range<usize>, keys: Range<usize>, noreply: Option<Range<usize>>, len| {
        let noreply_span = noreply.unwrap_or(line_end..line_end);
        Parsed::Request(Request {
            command,
            line_len,
            len,
            key,
            keys,
            noreply: !noreply_span.is_empty(),
            noreply_span,
        })
    };

    if command.shape() == Shape::Retrieval {
        let mut rest = tokens.clone();
        if matches!(command, Command::Gat | Command::Gats) {
            match rest.next() {
                Some(t) if parse_i64(&line[t.clone()]).is_some() => {}
                _ => return invalid(BAD_FORMAT, line_len, 0, false),
            }
        }
        let mut first: Option<Range<usize>> = None;
        for t in rest {
            if !is_valid_key(&line[t.clone()]) {
                return invalid(BAD_KEY, line_len, 0, false);
            }
            first.get_or_insert(t);
        }
        return match first {
            Some(key) => request(key.clone(), key.start..line_end, None, line_len),
            None => invalid(BAD_FORMAT, line_len, 0, false),
        };
    }

    for t in tokens {
        if nargs == args.len() {
            return invalid(BAD_FORMAT, line_len, 0, false);
        }
        args[nargs] = t;
        nargs += 1;
    }
    let args = &args[..nargs];
    let arg = |i: usize| &line[args[i].clone()];

    // A trailing `noreply`, for the commands that take one.
    let takes_noreply = !matches!(command, Command::Version | Command::Quit | Command::Stats);
    let (args, noreply) = match args.split_last() {
        Some((last, rest)) if takes_noreply && &line[last.clone()] == b"noreply" => {
            // Cut from the space before the token.
            let start = line[..last.start]
                .iter()
                .rposition(|&b| b != b' ')
                .map_or(last.start, |p| p + 1);
            (rest, Some(start..last.end))
        }
        _ => (args, None),
    };
    let quiet = noreply.is_some();
    let fail = |reply, skip| invalid(reply, line_len, skip, quiet);
    let no_key = 0..0;

    match command {
        c if c.is_storage() => {
            let expected = if c == Command::Cas { 5 } else { 4 };
            // The length comes first: with it, a refused request's data can be skipped.
            let Some(bytes) = args.get(3).and_then(|_| parse_u64(arg(3))) else {
                return fail(BAD_FORMAT, 0);
            };
            let data = usize::try_from(bytes).unwrap_or(usize::MAX);
            let skip = data.saturating_add(2);
            if args.len() != expected
                || parse_u32(arg(1)).is_none()
                || parse_i64(arg(2)).is_none()
                || (c == Command::Cas && parse_u64(arg(4)).is_none())
            {
                return fail(BAD_FORMAT, skip);
            }
            if !is_valid_key(arg(0)) {
                return fail(BAD_KEY, skip);
            }
            if data > max_value {
                return fail(TOO_LARGE, skip);
            }
            let len = line_len + data + 2;
            if buf.len() < len {
                return Parsed::Incomplete;
            }
            if &buf[len - 2..len] != b"\r\n" {
                return fail(BAD_CHUNK, data);
            }
            request(args[0].clone(), no_key, noreply, len)
        }
        Command::Incr | Command::Decr => {
            if args.len() != 2 {
                return fail(BAD_FORMAT, 0);
            }
            if !is_valid_key(arg(0)) {
                return fail(BAD_KEY, 0);
            }
            if parse_u64(arg(1)).is_none() {
                return fail(BAD_DELTA, 0);
            }
            request(args[0].clone(), no_key, noreply, line_len)
        }
        Command::Touch => {
            if args.len() != 2 || parse_i64(arg(1)).is_none() {
                return fail(BAD_FORMAT, 0);
            }
            if !is_valid_key(arg(0)) {
                return fail(BAD_KEY, 0);
            }
            request(args[0].clone(), no_key, noreply, line_len)
        }
        Command::Delete => {
            // `delete <key> [0] [noreply]`: memcached still accepts a zero hold time.
            let ok = match args.len() {
                1 => true,
                2 => arg(1) == b"0",
                _ => false,
            };
            if !ok {
                return fail(BAD_FORMAT, 0);
            }
            if !is_valid_key(arg(0)) {
                return fail(BAD_KEY, 0);
            }
            request(args[0].clone(), no_key, noreply, line_len)
        }
        Command::FlushAll => {
            if args.len() > 1 || (args.len() == 1 && parse_i64(arg(0)).is_none()) {
                return fail(BAD_FORMAT, 0);
            }
            request(no_key.clone(), no_key, noreply, line_len)
        }
        Command::Verbosity => {
            if args.len() != 1 || parse_u32(arg(0)).is_none() {
                return fail(BAD_FORMAT, 0);
            }
            request(no_key.clone(), no_key, noreply, line_len)
        }
        _ => request(no_key.clone(), no_key, None, line_len),
    }
}

fn invalid(reply: &'static [u8], consume: usize, skip: usize, noreply: bool) -> Parsed {
    Parsed::Invalid(Invalid {
        reply,
        consume,
        skip,
        close: false,
        noreply,
    })
}

impl Parsed {
    fn closing(self) -> Parsed {
        match self {
            Parsed::Invalid(i) => Parsed::Invalid(Invalid { close: true, ..i }),
            other => other,
        }
    }
}

fn parse_u64(t: &[u8]) -> Option<u64> {
    if t.is_empty() || t.len() > 20 || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(t).ok()?.parse().ok()
}

fn parse_u32(t: &[u8]) -> Option<u32> {
    parse_u64(t).and_then(|n| u32::try_from(n).ok())
}

fn parse_i64(t: &[u8]) -> Option<i64> {
    match t.split_first() {
        Some((b'-', digits)) => parse_u64(digits)
            .and_then(|n| i64::try_from(n).ok())
            .map(|n| -n),
        _ => parse_u64(t).and_then(|n| i64::try_from(n).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024 * 1024;

    fn req(buf: &[u8]) -> Request {
        match parse_request(buf, MAX) {
            Parsed::Request(r) => r,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn bad(buf: &[u8]) -> Invalid {
        match parse_request(buf, MAX) {
            Parsed::Invalid(i) => i,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn get_with_keys() {
        let buf = b"get a bb ccc\r\nnext";
        let r = req(buf);
        assert_eq!(r.command, Command::Get);
        assert_eq!(r.len, 14);
        assert_eq!(&buf[r.key.clone()], b"a");
        let keys: Vec<&[u8]> = crate::memcache::keys(buf, r.keys).collect();
        assert_eq!(keys, [&b"a"[..], b"bb", b"ccc"]);
    }

    #[test]
    fn gat_skips_the_exptime() {
        let buf = b"gat 100 k1 k2\r\n";
        let r = req(buf);
        assert_eq!(&buf[r.key.clone()], b"k1");
        assert_eq!(&buf[r.keys.clone()], b"k1 k2");
        assert_eq!(bad(b"gat k1\r\n").reply, BAD_FORMAT);
    }

    #[test]
    fn set_with_data_block() {
        let buf = b"set k 5 0 3\r\nabc\r\nget k\r\n";
        let r = req(buf);
        assert_eq!(r.command, Command::Set);
        assert_eq!((r.line_len, r.len), (13, 18));
        assert!(!r.noreply);
        assert_eq!(parse_request(&buf[..17], MAX), Parsed::Incomplete);
    }

    #[test]
    fn noreply_is_found_and_can_be_cut() {
        let buf = b"set k 0 0 1 noreply\r\nx\r\n";
        let r = req(buf);
        assert!(r.noreply);
        let mut stripped = buf[..r.noreply_span.start].to_vec();
        stripped.extend_from_slice(&buf[r.noreply_span.end..r.len]);
        assert_eq!(stripped, b"set k 0 0 1\r\nx\r\n");
        assert!(req(b"delete k noreply\r\n").noreply);
        assert!(req(b"incr k 1 noreply\r\n").noreply);
        assert!(req(b"flush_all noreply\r\n").noreply);
        assert!(!req(b"delete k\r\n").noreply);
    }

    #[test]
    fn cas_needs_its_unique() {
        assert_eq!(req(b"cas k 0 0 1 99\r\nx\r\n").command, Command::Cas);
        assert_eq!(bad(b"cas k 0 0 1\r\nx\r\n").reply, BAD_FORMAT);
    }

    #[test]
    fn bare_newlines_are_accepted() {
        let r = req(b"get k\n");
        assert_eq!(r.len, 6);
        assert_eq!(r.key, 4..5);
    }

    #[test]
    fn unknown_and_empty_commands_are_errors() {
        let i = bad(b"bogus k\r\nget k\r\n");
        assert_eq!((i.reply, i.consume, i.close), (ERROR, 9, false));
        assert_eq!(bad(b"\r\n").reply, ERROR);
        assert_eq!(bad(b"GET k\r\n").reply, ERROR);
    }

    #[test]
    fn bad_keys() {
        let long = format!("get {}\r\n", "k".repeat(251));
        assert_eq!(bad(long.as_bytes()).reply, BAD_KEY);
        assert!(matches!(
            parse_request(format!("get {}\r\n", "k".repeat(250)).as_bytes(), MAX),
            Parsed::Request(_)
        ));
        assert_eq!(bad(b"get a\x01b\r\n").reply, BAD_KEY);
        assert_eq!(bad(b"get\r\n").reply, BAD_FORMAT);
        let i = bad(b"set bad\x02key 0 0 3\r\nabc\r\n");
        assert_eq!((i.reply, i.consume, i.skip), (BAD_KEY, 19, 5));
    }

    #[test]
    fn bad_numbers() {
        let i = bad(b"set k x 0 3\r\nabc\r\n");
        assert_eq!((i.reply, i.skip), (BAD_FORMAT, 5));
        let i = bad(b"set k 0 0 -1\r\n");
        assert_eq!((i.reply, i.skip), (BAD_FORMAT, 0));
        assert_eq!(bad(b"incr k x\r\n").reply, BAD_DELTA);
        assert_eq!(bad(b"incr k -1\r\n").reply, BAD_DELTA);
        assert_eq!(bad(b"touch k soon\r\n").reply, BAD_FORMAT);
        assert_eq!(bad(b"delete k 5\r\n").reply, BAD_FORMAT);
        assert_eq!(req(b"delete k 0\r\n").command, Command::Delete);
        assert_eq!(bad(b"verbosity\r\n").reply, BAD_FORMAT);
    }

    #[test]
    fn too_large_value_is_skipped() {
        let i = match parse_request(b"set k 0 0 2000\r\n", 1000) {
            Parsed::Invalid(i) => i,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (i.reply, i.consume, i.skip, i.close),
            (TOO_LARGE, 16, 2002, false)
        );
    }

    #[test]
    fn wrong_data_length() {
        let i = bad(b"set k 0 0 2\r\nabc\r\n");
        assert_eq!((i.reply, i.consume, i.skip), (BAD_CHUNK, 13, 2));
    }

    #[test]
    fn errors_of_noreply_requests_are_quiet() {
        assert!(bad(b"incr k x noreply\r\n").noreply);
        assert!(bad(b"set k 0 0 2 noreply\r\nabc\r\n").noreply);
    }

    #[test]
    fn endless_line_closes() {
        let buf = vec![b'a'; MAX_LINE_LEN + 1];
        let i = bad(&buf);
        assert!(i.close);
        assert_eq!(parse_request(&buf[..100], MAX), Parsed::Incomplete);
    }

    #[test]
    fn every_prefix_of_a_pipeline_is_incomplete_or_a_request() {
        let pipeline: &[u8] =
            b"set a 1 2 5\r\nhello\r\nget a b\r\nincr n 5 noreply\r\ndelete a\r\n";
        let mut offset = 0;
        let mut seen = 0;
        while offset < pipeline.len() {
            let r = req(&pipeline[offset..]);
            for cut in offset..offset + r.len {
                match parse_request(&pipeline[offset..cut], MAX) {
                    Parsed::Incomplete => {}
                    other => panic!("prefix {cut} gave {other:?}"),
                }
            }
            offset += r.len;
            seen += 1;
        }
        assert_eq!(seen, 4);
    }
}
