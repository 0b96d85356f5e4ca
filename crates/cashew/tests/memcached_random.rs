//! Random requests, pipelined in random batches, get through cashew (a pool of
//! three servers, where multi-key gets are split and consecutive gets joined) the
//! bytes one memcached gives them, reply by reply: the text protocol and the meta
//! protocol mixed on one connection. The seeds are fixed, so a failure is found
//! again by running the test again.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use cashew_testkit::random::Random;
use cashew_testkit::{memcached, PoolProxy};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

/// Requests on a few keys: `K` one key, `K*` one to six, `V` a value with its
/// length (`L`) and data block, `F` flags, `C` the CAS unique the connection last
/// saw for the key (each server numbers its items, so the two sides' uniques
/// differ: they are compared masked). Left out: what the clock answers (`mg t`,
/// the seconds left, may differ by one between them), and arithmetic that wraps
/// or shrinks a number, which memcached pads with spaces or not depending on
/// whether another connection holds the item.
const TEMPLATES: &[&str] = &[
    "set K F 0 L\r\nV",
    "add K F 0 L\r\nV",
    "replace K F 0 L\r\nV",
    "append K F 0 L\r\nV",
    "prepend K F 0 L\r\nV",
    "get K*",
    "get K",
    "gets K*",
    "gets K",
    "gats 1000 K*",
    "cas K F 0 L C\r\nV",
    "cas K F 0 L C\r\nV",
    "gat 1000 K*",
    "touch K 1000",
    "delete K",
    "incr K 1",
    "incr K 5",
    "incr K abc",
    "mg K v f",
    "mg K v k s",
    "mg K k v",
    "mg K",
    "ms K L FF\r\nV",
    "md K",
    "mn",
    "ma K N0 J13 v",
    "ma K",
    "get",
    "nosuchcommand K",
];

/// Names that spread over three servers (the default hash puts `k0` … `k9` on one).
const KEYS: &[&str] = &[
    "apple",
    "banana",
    "cherry",
    "damson",
    "elder",
    "fig",
    "grape",
    "hazel",
    "kiwi",
    "lemon",
    "mango",
    "nectarine",
];

const VALUES: &[&str] = &[
    "1",
    "22",
    "abc",
    "",
    "-1",
    "12345",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

struct Request {
    /// With [`CAS`] where the unique goes.
    bytes: Vec<u8>,
    /// The reply ends at `END`.
    until_end: bool,
    /// The key a `cas` is about.
    cas_key: Option<String>,
}

/// Where a request's CAS unique goes, each connection putting its own.
const CAS: &str = "@cas@";

impl Request {
    fn bytes_for(&self, conn: &Conn) -> Vec<u8> {
        let Some(key) = &self.cas_key else {
            return self.bytes.clone();
        };
        // A unique no item has: `EXISTS` (or `NOT_FOUND`) on both sides.
        let unique = conn.cas.get(key).map_or("999999999", String::as_str);
        String::from_utf8_lossy(&self.bytes)
            .replace(CAS, unique)
            .into_bytes()
    }
}

/// One request from `template`.
fn request(template: &str, random: &mut Random) -> Request {
    let value = *random.pick(VALUES);
    let key = |random: &mut Random| random.pick(KEYS).to_string();
    let mut words = Vec::new();
    let (line, data) = match template.split_once("\r\n") {
        Some((line, _)) => (line, Some(value)),
        None => (template, None),
    };
    for word in line.split(' ') {
        match word {
            "K" => words.push(key(random)),
            "K*" => words.extend((0..1 + random.below(6)).map(|_| key(random))),
            "F" => words.push(random.below(4).to_string()),
            "FF" => words.push(format!("F{}", random.below(4))),
            "L" => words.push(value.len().to_string()),
            "C" => words.push(CAS.to_string()),
            word => words.push(word.to_string()),
        }
    }
    let mut bytes = format!("{}\r\n", words.join(" ")).into_bytes();
    if let Some(data) = data {
        bytes.extend_from_slice(format!("{data}\r\n").as_bytes());
    }
    let until_end = matches!(words[0].as_str(), "get" | "gets" | "gat" | "gats") && words.len() > 1;
    let cas_key = (words[0] == "cas").then(|| words[1].clone());
    Request {
        bytes,
        until_end,
        cas_key,
    }
}

/// A connection that reads whole replies: lines, and the data blocks of `VALUE`
/// and `VA` lines; it keeps the last CAS unique it saw of each key.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    cas: HashMap<String, String>,
}

impl Conn {
    fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Conn {
            stream,
            buf: Vec::new(),
            cas: HashMap::new(),
        }
    }

    fn fill(&mut self) {
        let mut buf = [0u8; 65536];
        let got = self.stream.read(&mut buf).unwrap();
        assert!(got > 0, "connection closed");
        self.buf.extend_from_slice(&buf[..got]);
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill();
        }
        self.buf.drain(..n).collect()
    }

    fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return self.take(at + 2);
            }
            self.fill();
        }
    }

    /// The next reply, with the CAS uniques of its `VALUE` lines masked (and
    /// kept).
    fn reply(&mut self, until_end: bool) -> String {
        let mut reply = String::new();
        loop {
            let line = String::from_utf8_lossy(&self.line()).into_owned();
            let words: Vec<&str> = line.split_whitespace().collect();
            let block = match words.first() {
                Some(&"VALUE") => words.get(3),
                Some(&"VA") => words.get(1),
                _ => None,
            };
            match words.as_slice() {
                ["VALUE", key, flags, length, unique] => {
                    self.cas.insert(key.to_string(), unique.to_string());
                    reply.push_str(&format!("VALUE {key} {flags} {length} <cas>\r\n"));
                }
                _ => reply.push_str(&line),
            }
            if let Some(length) = block {
                let block = self.take(length.parse::<usize>().unwrap() + 2);
                reply.push_str(&String::from_utf8_lossy(&block));
                if words[0] == "VA" {
                    return reply;
                }
                continue;
            }
            let more = until_end
                && line != "END\r\n"
                && !line.starts_with("CLIENT_ERROR")
                && !line.starts_with("SERVER_ERROR")
                && !line.starts_with("ERROR");
            if !more {
                return reply;
            }
        }
    }
}

#[test]
fn random_requests_over_three_servers_get_memcacheds_replies() {
    let direct = memcached();
    let proxy = PoolProxy::start(CASHEW, (0..3).map(|_| memcached()).collect(), "", &[]);
    let keys: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
    let placed = proxy.routed(&keys);
    assert!(
        placed.iter().any(|&s| s != placed[0]),
        "the keys spread over the servers: {placed:?}"
    );
    let mut differ = Vec::new();
    let mut compared = 0;
    for seed in [1, 2, 3] {
        let mut random = Random::new(seed);
        let mut conns = [Conn::connect(direct.addr), Conn::connect(proxy.listen)];
        let mut history: Vec<String> = Vec::new();
        for _ in 0..1000 {
            let batch: Vec<Request> = (0..1 + random.below(16))
                .map(|_| {
                    let template = *random.pick(TEMPLATES);
                    request(template, &mut random)
                })
                .collect();
            for conn in &mut conns {
                let bytes: Vec<u8> = batch.iter().flat_map(|r| r.bytes_for(conn)).collect();
                conn.stream.write_all(&bytes).unwrap();
            }
            for request in &batch {
                let expected = conns[0].reply(request.until_end);
                let got = conns[1].reply(request.until_end);
                let line = String::from_utf8_lossy(&request.bytes)
                    .escape_debug()
                    .to_string();
                compared += 1;
                if got != expected && differ.len() < 5 {
                    differ.push(format!(
                        "seed {seed}, after {:?}:\n  {line}\n  memcached: {}\n  cashew:    {}",
                        &history[history.len().saturating_sub(8)..],
                        expected.escape_debug(),
                        got.escape_debug()
                    ));
                }
                history.push(line);
            }
        }
    }
    println!("{compared} requests compared");
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
