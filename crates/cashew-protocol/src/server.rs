//! What a proxy needs to know of a server's protocol, without any I/O: how a reply
//! is framed, how long it will be when its first line tells, what a new connection
//! sends first, what a health probe sends and accepts, and which frames answer no
//! request. The proxy's server connection is generic over a [`ServerCodec`].

use std::fmt;

use crate::{memcache, resp, ReplyParse, Resume};

/// A server protocol, as the proxy's server connections speak it.
pub trait ServerCodec: Copy + Default + fmt::Debug + 'static {
    /// Parses the reply at the front of `buf`, on from where `resume` left it.
    fn parse_reply(buf: &[u8], resume: &mut Resume) -> ReplyParse;

    /// How long the reply at the front of `buf` will be, when its first line tells
    /// (a value's length); 0 when it does not.
    fn expected_reply_len(buf: &[u8]) -> usize;

    /// Whether `buf` starts with a frame the server sends unasked (a RESP3 push),
    /// which answers no request and is read past.
    fn is_push(buf: &[u8]) -> bool;

    /// What a health probe sends on its connection.
    const PROBE: &'static [u8];

    /// What a whole reply to [`PROBE`](Self::PROBE) says of the server.
    fn probe_answer(reply: &[u8]) -> ProbeAnswer;

    /// Whether a reply to one of a handshake's requests (before its last, the
    /// version request) refuses the connection.
    fn refuses(reply: &[u8]) -> bool;

    /// The version in a reply to the handshake's version request.
    fn version_of(reply: &[u8]) -> Option<&str>;
}

/// What a health probe's reply says.
#[derive(Debug, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// The server serves.
    Serves,
    /// The server answered but cannot serve (`-LOADING`, `-MASTERDOWN`).
    Refuses,
    /// Not the reply of a server of this protocol.
    NotAReply,
}

/// The requests a new connection sends before any client's, and how many replies
/// they get; the last is a version request.
#[derive(Clone, PartialEq, Eq)]
pub struct Handshake {
    pub bytes: Vec<u8>,
    pub replies: usize,
}

impl fmt::Debug for Handshake {
    /// Without the bytes, which may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handshake {{ {} requests }}", self.replies)
    }
}

/// The memcached text and meta protocols.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memcache;

/// RESP2 and RESP3.
#[derive(Clone, Copy, Debug, Default)]
pub struct Redis;

/// The length of a value announced at the start of `buf` and of the line that
/// announces it: the reply then takes the line, the data and what may close it.
fn announced(buf: &[u8], data_len: impl Fn(&[u8]) -> Option<usize>) -> usize {
    let Some(nl) = memchr::memchr(b'\n', &buf[..buf.len().min(512)]) else {
        return 0;
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    // The line, the data and its line ending, and `END` after a `VALUE` block.
    data_len(line).map_or(0, |len| (nl + 1).saturating_add(len).saturating_add(7))
}

fn number(text: Option<&[u8]>) -> Option<usize> {
    std::str::from_utf8(text?).ok()?.parse().ok()
}

impl Memcache {
    /// A new connection asks for the server's version, which clients asking for it
    /// are given; first, with `user:password`, it authenticates as memcached's text
    /// auth (`-Y`) wants: a `set` whose value is the user and the password.
    pub fn handshake(credentials: Option<&str>) -> Handshake {
        let mut bytes = Vec::new();
        let mut replies = 1;
        if let Some(credentials) = credentials {
            let value = credentials.replacen(':', " ", 1);
            bytes.extend_from_slice(
                format!("set auth 0 0 {}\r\n{value}\r\n", value.len()).as_bytes(),
            );
            replies += 1;
        }
        bytes.extend_from_slice(b"version\r\n");
        Handshake { bytes, replies }
    }
}

impl ServerCodec for Memcache {
    fn parse_reply(buf: &[u8], resume: &mut Resume) -> ReplyParse {
        memcache::parse_reply_resumable(buf, resume)
    }

    fn expected_reply_len(buf: &[u8]) -> usize {
        announced(buf, |line| {
            if line.starts_with(b"VALUE ") {
                number(line.split(|&b| b == b' ').nth(3))
            } else if line.starts_with(b"VA ") {
                number(line.split(|&b| b == b' ').nth(1))
            } else {
                None
            }
        })
    }

    fn is_push(_: &[u8]) -> bool {
        false
    }

    const PROBE: &'static [u8] = b"version\r\n";

    fn probe_answer(reply: &[u8]) -> ProbeAnswer {
        match reply.starts_with(b"VERSION ") {
            true => ProbeAnswer::Serves,
            false => ProbeAnswer::NotAReply,
        }
    }

    /// Only the auth `set` is answered before the version: anything but `STORED`
    /// (`CLIENT_ERROR authentication failure`) refuses the connection.
    fn refuses(reply: &[u8]) -> bool {
        !reply.starts_with(b"STORED")
    }

    fn version_of(reply: &[u8]) -> Option<&str> {
        let text = std::str::from_utf8(reply).ok()?;
        text.strip_prefix("VERSION ").map(str::trim_end)
    }
}

impl Redis {
    /// `HELLO 3` on RESP3 connections (with the credentials, when there are any),
    /// else `AUTH` when there is a password (as `user`, an ACL user, when given);
    /// `SELECT` for a database other than 0; then `INFO server` for the server's
    /// version.
    pub fn handshake(
        user: Option<&str>,
        password: Option<&str>,
        db: u32,
        resp3: bool,
    ) -> Handshake {
        use resp::{array_header, bulk};
        let mut bytes = Vec::new();
        let mut replies = 0;
        if resp3 {
            array_header(&mut bytes, if password.is_some() { 5 } else { 2 });
            bulk(&mut bytes, b"HELLO");
            bulk(&mut bytes, b"3");
            if let Some(password) = password {
                bulk(&mut bytes, b"AUTH");
                bulk(&mut bytes, user.unwrap_or("default").as_bytes());
                bulk(&mut bytes, password.as_bytes());
            }
            replies += 1;
        } else if let Some(password) = password {
            array_header(&mut bytes, if user.is_some() { 3 } else { 2 });
            bulk(&mut bytes, b"AUTH");
            if let Some(user) = user {
                bulk(&mut bytes, user.as_bytes());
            }
            bulk(&mut bytes, password.as_bytes());
            replies += 1;
        }
        if db != 0 {
            array_header(&mut bytes, 2);
            bulk(&mut bytes, b"SELECT");
            bulk(&mut bytes, db.to_string().as_bytes());
            replies += 1;
        }
        array_header(&mut bytes, 2);
        bulk(&mut bytes, b"INFO");
        bulk(&mut bytes, b"server");
        Handshake {
            bytes,
            replies: replies + 1,
        }
    }

    /// As [`handshake`](Self::handshake) for a Redis Cluster replica that serves
    /// reads: `READONLY` before the version is asked.
    pub fn replica_handshake(user: Option<&str>, password: Option<&str>, resp3: bool) -> Handshake {
        let mut h = Self::handshake(user, password, 0, resp3);
        h.add_before_version(&[b"READONLY"]);
        h
    }
}

impl Handshake {
    /// Adds a command (of a redis handshake) before the closing request for the
    /// server's version; the server must answer it with no error.
    pub fn add_before_version(&mut self, args: &[&[u8]]) {
        let info = self.bytes.len() - b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n".len();
        let mut command = Vec::new();
        resp::array_header(&mut command, args.len());
        for arg in args {
            resp::bulk(&mut command, arg);
        }
        self.bytes.splice(info..info, command);
        self.replies += 1;
    }
}

impl ServerCodec for Redis {
    fn parse_reply(buf: &[u8], resume: &mut Resume) -> ReplyParse {
        resp::parse_reply_resumable(buf, resume)
    }

    fn expected_reply_len(buf: &[u8]) -> usize {
        announced(buf, |line| {
            line.strip_prefix(b"$").and_then(|n| number(Some(n)))
        })
    }

    fn is_push(buf: &[u8]) -> bool {
        buf.first() == Some(&b'>')
    }

    const PROBE: &'static [u8] = b"*1\r\n$4\r\nPING\r\n";

    fn probe_answer(reply: &[u8]) -> ProbeAnswer {
        match reply.starts_with(b"-") {
            true => ProbeAnswer::Refuses,
            false => ProbeAnswer::Serves,
        }
    }

    fn refuses(reply: &[u8]) -> bool {
        reply.starts_with(b"-")
    }

    fn version_of(reply: &[u8]) -> Option<&str> {
        let text = std::str::from_utf8(reply).ok()?;
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))?;
        Some(line.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_reply_is_sized_from_its_first_line() {
        let value = b"VALUE k 0 100000\r\nxx";
        assert_eq!(Memcache::expected_reply_len(value), 18 + 100_000 + 7);
        assert_eq!(
            Memcache::expected_reply_len(b"VA 5000 f1\r\n"),
            12 + 5000 + 7
        );
        assert_eq!(Redis::expected_reply_len(b"$70000\r\nab"), 8 + 70_000 + 7);
        assert_eq!(Memcache::expected_reply_len(b"END\r\n"), 0);
        assert_eq!(
            Memcache::expected_reply_len(b"VALUE k 0 1"),
            0,
            "line not complete"
        );
        assert_eq!(Redis::expected_reply_len(b"$-1\r\n"), 0);
    }

    #[test]
    fn versions_are_read_from_both_protocols() {
        assert_eq!(Memcache::version_of(b"VERSION 1.6.18\r\n"), Some("1.6.18"));
        assert_eq!(Memcache::version_of(b"ERROR\r\n"), None);
        let info = b"$52\r\n# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n\r\n";
        assert_eq!(Redis::version_of(info), Some("7.0.15"));
        let resp3 = b"=56\r\ntxt:# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n\r\n";
        assert_eq!(Redis::version_of(resp3), Some("7.0.15"));
        assert_eq!(Redis::version_of(b"-NOPERM no\r\n"), None);
    }

    #[test]
    fn handshakes_say_what_they_send_and_hide_it() {
        let h = Redis::handshake(None, Some("pw"), 2, false);
        assert_eq!(h.replies, 3);
        assert!(h
            .bytes
            .starts_with(b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n"));
        assert_eq!(format!("{h:?}"), "Handshake { 3 requests }");
        let h = Redis::handshake(None, Some("pw"), 0, true);
        assert_eq!(h.replies, 2);
        assert!(h
            .bytes
            .starts_with(b"*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n"));
        assert_eq!(Redis::handshake(None, None, 0, false).replies, 1);
        let h = Redis::handshake(Some("app"), Some("pw"), 0, false);
        assert!(h
            .bytes
            .starts_with(b"*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$2\r\npw\r\n*2\r\n$4\r\nINFO"));
        let h = Redis::handshake(Some("app"), Some("pw"), 0, true);
        assert!(h
            .bytes
            .starts_with(b"*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n"));
        let h = Redis::replica_handshake(None, Some("pw"), false);
        assert_eq!(h.replies, 3);
        assert!(h
            .bytes
            .ends_with(b"*1\r\n$8\r\nREADONLY\r\n*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"));
        let h = Memcache::handshake(Some("user:pa:ss"));
        assert_eq!(h.bytes, b"set auth 0 0 10\r\nuser pa:ss\r\nversion\r\n");
        assert_eq!((h.replies, Memcache::handshake(None).replies), (2, 1));
        assert!(Memcache::refuses(
            b"CLIENT_ERROR authentication failure\r\n"
        ));
        assert!(!Memcache::refuses(b"STORED\r\n"));
        assert_eq!(Memcache::handshake(None).bytes, b"version\r\n");
    }

    #[test]
    fn probes_tell_a_serving_server() {
        assert_eq!(
            Memcache::probe_answer(b"VERSION 1.6\r\n"),
            ProbeAnswer::Serves
        );
        assert_eq!(Memcache::probe_answer(b"ERROR\r\n"), ProbeAnswer::NotAReply);
        assert_eq!(Redis::probe_answer(b"+PONG\r\n"), ProbeAnswer::Serves);
        assert_eq!(Redis::probe_answer(b"-LOADING\r\n"), ProbeAnswer::Refuses);
        assert!(Redis::is_push(b">3\r\n") && !Memcache::is_push(b">"));
    }
}
