//! Raw RESP for tests that compare cashew's replies with a redis-server's byte for
//! byte: a connection that sends commands and reads whole replies, and the text
//! format of `tests/data/redis-corpus.txt` and `redis-sequences.txt`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use cashew_protocol::resp::{self, ReplyParse};

/// A raw RESP connection: send requests, read whole replies.
pub struct RespConn(pub TcpStream, Vec<u8>);

impl RespConn {
    pub fn connect(addr: SocketAddr) -> RespConn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        RespConn(s, Vec::new())
    }

    /// Sends one command and reads its reply.
    pub fn request(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.0.write_all(&encode(args)).unwrap();
        self.reply()
    }

    /// The next whole reply.
    pub fn reply(&mut self) -> Vec<u8> {
        self.try_reply().expect("a reply within the read timeout")
    }

    /// The next whole reply (or push), or `None` when none comes within the read
    /// timeout.
    pub fn try_reply(&mut self) -> Option<Vec<u8>> {
        loop {
            if let ReplyParse::Complete(n) = resp::parse_reply(&self.1) {
                return Some(self.1.drain(..n).collect());
            }
            let mut buf = [0u8; 65536];
            let n = match self.0.read(&mut buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                Err(e) => panic!("{e}"),
            };
            assert!(n > 0, "connection closed");
            self.1.extend_from_slice(&buf[..n]);
        }
    }
}

/// A command as a RESP array of bulk strings.
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = Vec::new();
    resp::array_header(&mut out, args.len());
    for a in args {
        resp::bulk(&mut out, a.as_ref());
    }
    out
}

/// A line's arguments: split at spaces, `"..."` kept whole.
pub fn split_args(line: &str) -> Vec<Vec<u8>> {
    let mut args = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (arg, tail) = match rest.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').expect("a closing quote"),
            None => rest.split_once(' ').unwrap_or((rest, "")),
        };
        args.push(arg.as_bytes().to_vec());
        rest = tail.trim_start();
    }
    args
}

/// A command of a sequence: its arguments.
pub type Command = Vec<Vec<u8>>;

/// The sequences of a text: commands one per line, sequences apart by a blank
/// line, `#` lines left out.
pub fn sequences(text: &str) -> Vec<Vec<Command>> {
    let mut sequences: Vec<Vec<Command>> = vec![Vec::new()];
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        match line.trim().is_empty() {
            true if !sequences.last().unwrap().is_empty() => sequences.push(Vec::new()),
            true => {}
            false => sequences.last_mut().unwrap().push(split_args(line)),
        }
    }
    sequences.retain(|s| !s.is_empty());
    sequences
}

/// Sends every command of `sequence` at once on a new connection (after `HELLO
/// protocol`), then a `PING` that marks the end, and returns every reply up to the
/// end's, as text.
pub fn replies_to_pipelined(addr: SocketAddr, protocol: &str, sequence: &[Command]) -> String {
    let mut conn = RespConn::connect(addr);
    conn.request(&[b"HELLO", protocol.as_bytes()]);
    let mut out = Vec::new();
    for args in sequence {
        out.extend(encode(args));
    }
    out.extend(encode(&["PING", "end-of-sequence"]));
    conn.0.write_all(&out).unwrap();
    let mut replies = String::new();
    loop {
        let reply = String::from_utf8_lossy(&conn.reply()).into_owned();
        let last = reply.contains("end-of-sequence");
        replies.push_str(&reply);
        if last {
            return replies;
        }
    }
}

/// Runs every sequence of `text` against `reference` and `through`, in RESP2 and
/// RESP3; panics listing each one whose replies differ.
pub fn compare_sequences(text: &str, reference: SocketAddr, through: SocketAddr) {
    let sequences = sequences(text);
    assert!(!sequences.is_empty(), "the sequences are read");
    let mut differ = Vec::new();
    for protocol in ["2", "3"] {
        for sequence in &sequences {
            let expected = replies_to_pipelined(reference, protocol, sequence);
            let got = replies_to_pipelined(through, protocol, sequence);
            if got != expected {
                let commands: Vec<String> = sequence
                    .iter()
                    .map(|args| String::from_utf8_lossy(&args.join(&b' ')).into_owned())
                    .collect();
                differ.push(format!(
                    "RESP{protocol}: {commands:?}\n  redis : {}\n  cashew: {}",
                    expected.escape_debug(),
                    got.escape_debug()
                ));
            }
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// The payloads of the messages a subscriber gets until none comes for `quiet`.
pub fn messages_until_quiet(pubsub: &mut redis::PubSub<'_>, quiet: Duration) -> Vec<String> {
    pubsub.set_read_timeout(Some(quiet)).unwrap();
    let mut got = Vec::new();
    while let Ok(message) = pubsub.get_message() {
        got.push(message.get_payload::<String>().unwrap());
    }
    got
}
