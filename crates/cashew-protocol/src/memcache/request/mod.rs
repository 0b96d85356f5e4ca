//! Client requests, read exactly as memcached 1.6 reads them: the same tokens
//! (split on spaces only, at most 24 counted, a line cut at a NUL byte), the same
//! numbers, the same checks in the same order and the same error for each, and the
//! same framing: a data block is expected exactly when memcached would read one.
//! Requests are described by offsets into the caller's buffer, so parsing copies
//! nothing and the bytes can be forwarded as received.
//!
//! What memcached would check only with the item in hand (a bad data chunk, a value
//! too large for the server, meta flags) is left to the server, whose reply passes
//! through unchanged.

use std::ops::Range;

use super::numbers::{safe_strtol, safe_strtoul, safe_strtoull};
use super::tokens::Tokens;

/// Longest command line cashew reads (only a multi-key `get`/`gets` may exceed
/// [`SHORT_LINE_LEN`]).
pub const MAX_LINE_LEN: usize = 256 * 1024;
/// memcached closes a connection that sends this much without a newline, unless
/// the line starts with `get ` or `gets ` (a long multi-get).
pub const SHORT_LINE_LEN: usize = 2048;
/// memcached's longest key.
pub const MAX_KEY_LEN: usize = 250;
/// memcached counts at most this many tokens (the last stands for the rest).
const MAX_TOKENS: usize = 24;
/// Meta commands refuse more tokens than this.
const META_MAX_TOKENS: usize = 20;

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
    /// `mg`: meta get.
    MetaGet,
    /// `ms`: meta set.
    MetaSet,
    /// `md`: meta delete.
    MetaDelete,
    /// `ma`: meta arithmetic.
    MetaArithmetic,
    /// `mn`: meta no-op; answered once every earlier request is.
    MetaNoop,
    /// `me`: meta debug, about one key.
    MetaDebug,
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
            Set | Add | Replace | Append | Prepend | Cas | Incr | Decr | Touch | Delete
            | MetaGet | MetaSet | MetaDelete | MetaArithmetic | MetaDebug => Shape::SingleKey,
            FlushAll | Verbosity => Shape::Broadcast,
            Version | Quit | Stats | MetaNoop => Shape::Local,
        }
    }

    pub fn is_storage(self) -> bool {
        use Command::*;
        matches!(self, Set | Add | Replace | Append | Prepend | Cas | MetaSet)
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
    /// The key is base64 (meta `b` flag): decode it to place the request.
    pub key_base64: bool,
    /// Retrievals: the key list (from the first key to the end of the line as
    /// memcached reads it). `stats`: its arguments.
    pub keys: Range<usize>,
    /// The request asked for no reply.
    pub noreply: bool,
    /// The ` noreply` token with the space before it, so it can be cut out when the
    /// proxy wants the server's reply anyway. Empty when absent.
    pub noreply_span: Range<usize>,
    /// A meta request in quiet mode (`q`): its nominal reply is left out.
    pub quiet: bool,
    /// How many keys it names: those of a retrieval, else 1 (0 for none).
    pub nkeys: u32,
}

/// A request that cannot be served: what to answer and how to get back in step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The whole reply line, `\r\n` included; empty for none.
    pub reply: &'static [u8],
    /// Bytes to drop from the buffer now.
    pub consume: usize,
    /// Further bytes to drop as they arrive (the data block of a refused storage command).
    pub skip: usize,
    /// memcached closes the connection here: answer (if anything), then close.
    pub close: bool,
    /// The request said `noreply`: send nothing.
    pub noreply: bool,
}

/// The magic bytes that start memcached binary-protocol packets.
const BINARY_REQUEST: u8 = 0x80;
const BINARY_RESPONSE: u8 = 0x81;
const BINARY_PROTOCOL: &[u8] = b"CLIENT_ERROR binary protocol is not supported\r\n";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Request(Request),
    /// More bytes are needed.
    Incomplete,
    Invalid(Invalid),
}

const ERROR: &[u8] = b"ERROR\r\n";
const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";
const BAD_DELETE: &[u8] =
    b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n";
const BAD_DELTA: &[u8] = b"CLIENT_ERROR invalid numeric delta argument\r\n";
const BAD_EXPTIME: &[u8] = b"CLIENT_ERROR invalid exptime argument\r\n";
const TOO_LARGE: &[u8] = b"SERVER_ERROR object too large for cache\r\n";
const LINE_TOO_LONG: &[u8] = b"CLIENT_ERROR line too long\r\n";
const SHUTDOWN: &[u8] = b"ERROR: shutdown not enabled\r\n";
const ADMIN: &[u8] = b"ERROR not supported by the proxy: a server administration command\r\n";

/// The tokens of a command line as memcached counts them.
struct Line<'a> {
    line: &'a [u8],
    /// The first 23 tokens.
    tokens: [Range<usize>; MAX_TOKENS - 1],
    /// memcached's `ntokens`: real tokens (at most 23) plus the terminal one.
    ntokens: usize,
}

impl<'a> Line<'a> {
    fn new(line: &'a [u8]) -> Line<'a> {
        let mut tokens: [Range<usize>; MAX_TOKENS - 1] = Default::default();
        let mut n = 0;
        for t in split(line) {
            if n == tokens.len() {
                break;
            }
            tokens[n] = t;
            n += 1;
        }
        Line {
            line,
            tokens,
            ntokens: n + 1,
        }
    }

    fn token(&self, i: usize) -> &'a [u8] {
        &self.line[self.tokens[i].clone()]
    }

    /// The last real token (memcached's `tokens[ntokens - 2]`).
    fn last(&self) -> &'a [u8] {
        self.token(self.ntokens - 2)
    }

    /// The last real token is `noreply`: its span with the space before it.
    fn noreply(&self) -> Option<Range<usize>> {
        if self.ntokens < 3 || self.last() != b"noreply" {
            return None;
        }
        let t = &self.tokens[self.ntokens - 2];
        let start = self.line[..t.start]
            .iter()
            .rposition(|&b| b != b' ')
            .map_or(t.start, |p| p + 1);
        Some(start..t.end)
    }
}

/// Tokens split on spaces only, as memcached splits them.
fn split(line: &[u8]) -> Tokens<'_> {
    Tokens::new(line)
}

/// Parses the request at the start of `buf`. `max_value`, when set, is the
/// largest data block the proxy accepts; a larger one is refused and skipped.
pub fn parse_request(buf: &[u8], max_value: Option<usize>) -> Parsed {
    if matches!(buf.first(), Some(&(BINARY_REQUEST | BINARY_RESPONSE))) {
        // A binary-protocol packet may never hold a newline: answer and close
        // rather than wait for a line that does not come. Only the magic byte is
        // consumed, so the decision is the same however much of the packet came.
        return invalid(BINARY_PROTOCOL, 1, 0, false).closing();
    }
    // The newline, and a NUL before it: memcached reads the line as a C string,
    // which stops there. One pass finds the first of the two.
    let Some(first) = super::scan::find2(buf, b'\n', 0) else {
        return incomplete_line(buf);
    };
    let (nl, nul) = match buf[first] {
        b'\n' => (first, None),
        _ => match super::scan::find(&buf[first..], b'\n') {
            Some(p) => (first + p, Some(first)),
            None => return incomplete_line(buf),
        },
    };
    let line_len = nl + 1;
    // memcached strips a `\r` before the newline unless it is the whole line (a NUL
    // comes before either).
    let end = match nul {
        Some(nul) => nul,
        None if nl > 1 && buf[nl - 1] == b'\r' => nl - 1,
        None => nl,
    };
    // Retrievals, the requests clients send most, need no token table: their keys
    // are walked once.
    if let Some(first) = split(&buf[..end]).next() {
        let name = &buf[first];
        if name.len() >= 2 && (name[0] == b'g' || name == b"bget") {
            return retrieval(&buf[..end], line_len, end);
        }
    }
    let line = Line::new(&buf[..end]);
    let local = |reply| invalid(reply, line_len, 0, false);
    if line.ntokens < 2 || line.tokens[0].len() < 2 {
        return local(ERROR);
    }
    let name = line.token(0);
    let request = |command, key: Range<usize>, keys: Range<usize>, len| Request {
        command,
        line_len,
        len,
        nkeys: u32::from(!key.is_empty()),
        key,
        key_base64: false,
        keys,
        noreply: false,
        noreply_span: end..end,
        quiet: false,
    };
    let with_noreply = |mut r: Request| {
        if let Some(span) = line.noreply() {
            r.noreply = true;
            r.noreply_span = span;
        }
        Parsed::Request(r)
    };

    if name.len() == 2 && name[0] == b'm' {
        return meta(buf, &line, line_len, max_value);
    }
    let storage = match name {
        b"set" => Some(Command::Set),
        b"add" => Some(Command::Add),
        b"replace" => Some(Command::Replace),
        b"append" => Some(Command::Append),
        b"prepend" => Some(Command::Prepend),
        b"cas" => Some(Command::Cas),
        _ => None,
    };
    if let Some(command) = storage {
        return update(buf, &line, line_len, command, max_value);
    }
    let nt = line.ntokens;
    // noreply as memcached's `set_noreply_maybe` sees it: the last real token.
    let quiet = line.noreply().is_some();
    let fail = |reply| invalid(reply, line_len, 0, quiet);
    let key = || line.tokens[1].clone();
    let no_key = end..end;
    match name {
        b"incr" | b"decr" => {
            if nt != 4 && nt != 5 {
                return local(ERROR);
            }
            if line.token(1).len() > MAX_KEY_LEN {
                return fail(BAD_FORMAT);
            }
            if safe_strtoull(line.token(2)).is_none() {
                return fail(BAD_DELTA);
            }
            let command = if name == b"incr" {
                Command::Incr
            } else {
                Command::Decr
            };
            with_noreply(request(command, key(), no_key, line_len))
        }
        b"touch" => {
            if nt != 4 && nt != 5 {
                return local(ERROR);
            }
            if line.token(1).len() > MAX_KEY_LEN {
                return fail(BAD_FORMAT);
            }
            if safe_strtol(line.token(2)).is_none() {
                return fail(BAD_EXPTIME);
            }
            with_noreply(request(Command::Touch, key(), no_key, line_len))
        }
        b"delete" => {
            if !(3..=5).contains(&nt) {
                return local(ERROR);
            }
            if nt > 3 {
                let hold_is_zero = line.token(2) == b"0";
                let valid =
                    (nt == 4 && (hold_is_zero || quiet)) || (nt == 5 && hold_is_zero && quiet);
                if !valid {
                    return fail(BAD_DELETE);
                }
            }
            if line.token(1).len() > MAX_KEY_LEN {
                return fail(BAD_FORMAT);
            }
            let delete = request(Command::Delete, key(), no_key, line_len);
            if nt == 3 {
                // memcached looks for noreply only after the key: `delete noreply`
                // deletes the key "noreply".
                return Parsed::Request(delete);
            }
            with_noreply(delete)
        }
        b"flush_all" => {
            if !(2..=4).contains(&nt) {
                return local(ERROR);
            }
            let plain = if quiet { 3 } else { 2 };
            if nt != plain && safe_strtol(line.token(1)).is_none() {
                return fail(BAD_EXPTIME);
            }
            with_noreply(request(Command::FlushAll, no_key.clone(), no_key, line_len))
        }
        b"verbosity" => {
            if nt != 3 && nt != 4 {
                return local(ERROR);
            }
            if safe_strtoul(line.token(1)).is_none() {
                return fail(BAD_FORMAT);
            }
            with_noreply(request(
                Command::Verbosity,
                no_key.clone(),
                no_key,
                line_len,
            ))
        }
        b"version" => Parsed::Request(request(Command::Version, no_key.clone(), no_key, line_len)),
        b"quit" => Parsed::Request(request(Command::Quit, no_key.clone(), no_key, line_len)),
        b"stats" => {
            let args = line
                .tokens
                .get(1)
                .filter(|_| nt > 2)
                .map_or(end, |t| t.start);
            Parsed::Request(request(Command::Stats, no_key, args..end, line_len))
        }
        b"shutdown" => local(SHUTDOWN),
        b"slabs" | b"lru_crawler" | b"lru" | b"watch" | b"cache_memlimit" | b"extstore"
        | b"refresh_certs" => local(ADMIN),
        _ if line.last().starts_with(b"HTTP/") => {
            // memcached hangs up on an HTTP request.
            invalid(b"", line_len, 0, false).closing()
        }
        _ => local(ERROR),
    }
}

/// No newline yet: wait, unless memcached would have hung up by now.
fn incomplete_line(buf: &[u8]) -> Parsed {
    if buf.len() > SHORT_LINE_LEN {
        let leading = buf.iter().take_while(|&&b| b == b' ').count();
        let rest = &buf[leading..];
        let multi_get = leading <= 100 && (rest.starts_with(b"get ") || rest.starts_with(b"gets "));
        if !multi_get {
            return invalid(b"", buf.len(), 0, false).closing();
        }
        if buf.len() > MAX_LINE_LEN {
            return invalid(LINE_TOO_LONG, buf.len(), 0, false).closing();
        }
    }
    Parsed::Incomplete
}

/// `get`, `gets`, `gat`, `gats`, `bget` (an old name of `get` memcached still
/// serves), and any other command starting with `g`, which memcached refuses the
/// same way: `line` is the command line without its line ending.
fn retrieval(line: &[u8], line_len: usize, end: usize) -> Parsed {
    let local = |reply| invalid(reply, line_len, 0, false);
    let mut keys = split(line).peekable();
    let name = keys.next().map_or(&b""[..], |t| &line[t]);
    if keys.peek().is_none() {
        return local(ERROR);
    }
    let (command, touch) = match name {
        b"get" | b"bget" => (Command::Get, false),
        b"gets" => (Command::Gets, false),
        b"gat" => (Command::Gat, true),
        b"gats" => (Command::Gats, true),
        _ => return local(ERROR),
    };
    if touch && keys.next().is_some_and(|t| safe_strtol(&line[t]).is_none()) {
        return local(BAD_EXPTIME);
    }
    let mut first: Option<Range<usize>> = None;
    let mut nkeys = 0u32;
    for key in keys {
        if key.len() > MAX_KEY_LEN {
            return local(BAD_FORMAT);
        }
        nkeys = nkeys.saturating_add(1);
        first.get_or_insert(key);
    }
    match first {
        Some(key) => Parsed::Request(Request {
            command,
            line_len,
            len: line_len,
            keys: key.start..end,
            key,
            key_base64: false,
            noreply: false,
            noreply_span: end..end,
            quiet: false,
            nkeys,
        }),
        // `gat <exptime>` with no key: memcached answers an empty retrieval.
        None => local(b"END\r\n"),
    }
}

/// `set`, `add`, `replace`, `append`, `prepend`, `cas`: the checks memcached makes
/// before it reads the data block, in its order.
fn update(
    buf: &[u8],
    line: &Line<'_>,
    line_len: usize,
    command: Command,
    max_value: Option<usize>,
) -> Parsed {
    let nt = line.ntokens;
    let (fields, with_noreply) = if command == Command::Cas {
        (7, 8)
    } else {
        (6, 7)
    };
    if nt != fields && nt != with_noreply {
        return invalid(ERROR, line_len, 0, false);
    }
    let noreply = line.noreply();
    let fail = |reply, skip| invalid(reply, line_len, skip, noreply.is_some());
    if line.token(1).len() > MAX_KEY_LEN {
        return fail(BAD_FORMAT, 0);
    }
    let numbers_ok = safe_strtoul(line.token(2)).is_some() && safe_strtol(line.token(3)).is_some();
    let Some(vlen) = safe_strtol(line.token(4)).filter(|_| numbers_ok) else {
        return fail(BAD_FORMAT, 0);
    };
    if command == Command::Cas && safe_strtoull(line.token(5)).is_none() {
        return fail(BAD_FORMAT, 0);
    }
    if !(0..=i32::MAX - 2).contains(&vlen) {
        return fail(BAD_FORMAT, 0);
    }
    let data = vlen as usize + 2;
    if max_value.is_some_and(|max| data - 2 > max) {
        return fail(TOO_LARGE, data);
    }
    let len = line_len + data;
    if buf.len() < len {
        return Parsed::Incomplete;
    }
    let end = line_len - 1;
    Parsed::Request(Request {
        command,
        line_len,
        len,
        key: line.tokens[1].clone(),
        key_base64: false,
        keys: end..end,
        noreply: noreply.is_some(),
        noreply_span: noreply.unwrap_or(end..end),
        quiet: false,
        nkeys: 1,
    })
}

/// Meta commands: checked only as far as the framing and the key need; the rest
/// (flags, modes, opaques) is the server's to judge.
fn meta(buf: &[u8], line: &Line<'_>, line_len: usize, max_value: Option<usize>) -> Parsed {
    let local = |reply| invalid(reply, line_len, 0, false);
    let command = match line.token(0)[1] {
        b'g' => Command::MetaGet,
        b's' => Command::MetaSet,
        b'd' => Command::MetaDelete,
        b'a' => Command::MetaArithmetic,
        b'n' => Command::MetaNoop,
        b'e' => Command::MetaDebug,
        _ => return local(ERROR),
    };
    let nt = line.ntokens;
    let end = line_len - 1;
    let mut request = Request {
        command,
        line_len,
        len: line_len,
        key: end..end,
        key_base64: false,
        keys: end..end,
        noreply: false,
        noreply_span: end..end,
        quiet: false,
        nkeys: 0,
    };
    match command {
        Command::MetaNoop => return Parsed::Request(request),
        Command::MetaDebug => {
            if nt < 3 || line.token(1).len() > MAX_KEY_LEN {
                return local(BAD_FORMAT);
            }
            request.key = line.tokens[1].clone();
            request.nkeys = 1;
            request.key_base64 = nt >= 4 && line.token(2) == b"b";
            return Parsed::Request(request);
        }
        _ => {}
    }
    if nt < 3 {
        return local(ERROR);
    }
    if line.token(1).len() > MAX_KEY_LEN {
        return local(BAD_FORMAT);
    }
    request.key = line.tokens[1].clone();
    request.nkeys = 1;
    // Flags start after the key, or after the data length of `ms`.
    let first_flag = if command == Command::MetaSet { 3 } else { 2 };
    for i in first_flag..nt - 1 {
        match line.token(i)[0] {
            b'b' => request.key_base64 = true,
            b'q' => request.quiet = true,
            _ => {}
        }
    }
    if command == Command::MetaSet {
        // memcached reads (or swallows) the data block once the length is valid.
        if nt == 3 || nt > META_MAX_TOKENS {
            return Parsed::Request(request);
        }
        let Some(vlen) = safe_strtol(line.token(2)).filter(|v| (0..=i32::MAX - 2).contains(v))
        else {
            return Parsed::Request(request);
        };
        let data = vlen as usize + 2;
        if max_value.is_some_and(|max| data - 2 > max) {
            return invalid(TOO_LARGE, line_len, data, false);
        }
        request.len = line_len + data;
        if buf.len() < request.len {
            return Parsed::Incomplete;
        }
    }
    Parsed::Request(request)
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

#[cfg(test)]
mod tests;
