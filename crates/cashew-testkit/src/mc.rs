//! A raw memcached text-protocol client, for tests that check bytes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A minimal memcached text-protocol connection for checking backends directly.
pub struct McConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl McConn {
    pub fn connect(addr: SocketAddr) -> McConn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        McConn {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// The connection's socket, for writing from another thread.
    pub fn clone_stream(&self) -> TcpStream {
        self.writer.try_clone().unwrap()
    }

    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.reader
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
        buf
    }

    /// Reads exactly as many bytes as `expected` holds and checks they match.
    pub fn expect(&mut self, expected: &[u8]) {
        let got = self.read_exact(expected.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected)
        );
    }

    /// Sends `request` and checks the reply is exactly `reply`.
    pub fn roundtrip(&mut self, request: &[u8], reply: &[u8]) {
        self.send(request);
        self.expect(reply);
    }

    /// True when the other side has closed the connection (reads end of stream).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0))
    }

    pub fn set(&mut self, key: &str, value: &[u8]) {
        let mut request = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
        self.send(&request);
        assert_eq!(self.line(), "STORED\r\n", "set {key}");
    }

    /// Sets every pair with pipelined `set`s (TTL `exptime`), each expecting `STORED`.
    pub fn set_many(&mut self, pairs: &[(String, String)], exptime: u32) {
        for chunk in pairs.chunks(100) {
            let mut request = Vec::new();
            for (key, value) in chunk {
                request.extend_from_slice(
                    format!("set {key} 0 {exptime} {}\r\n{value}\r\n", value.len()).as_bytes(),
                );
            }
            self.send(&request);
            for (key, _) in chunk {
                assert_eq!(self.line(), "STORED\r\n", "set {key}");
            }
        }
    }

    /// The hits among `keys`, read with multi-key `get`s of up to 100 keys; any
    /// reply but values and `END` (a `SERVER_ERROR`) is a panic.
    pub fn get_many(&mut self, keys: &[String]) -> HashMap<String, String> {
        let mut hits = HashMap::new();
        for chunk in keys.chunks(100) {
            self.send(format!("get {}\r\n", chunk.join(" ")).as_bytes());
            loop {
                let header = self.line();
                if header == "END\r\n" {
                    break;
                }
                let words: Vec<&str> = header.trim_end().split(' ').collect();
                let ["VALUE", key, _flags, len] = words[..] else {
                    panic!("expected VALUE or END, got {header:?}");
                };
                let len: usize = len.parse().unwrap();
                let mut value = self.read_exact(len + 2);
                value.truncate(len);
                let value = String::from_utf8(value).unwrap();
                hits.insert(key.to_string(), value);
            }
        }
        hits
    }

    /// A number from the server's `stats` (e.g. `curr_items`).
    pub fn stat(&mut self, name: &str) -> u64 {
        self.send(b"stats\r\n");
        let mut found = None;
        loop {
            let line = self.line();
            if line == "END\r\n" {
                break;
            }
            let mut words = line.trim_end().splitn(3, ' ');
            if let (Some("STAT"), Some(n), Some(v)) = (words.next(), words.next(), words.next()) {
                if n == name {
                    found = v.parse().ok();
                }
            }
        }
        found.unwrap_or_else(|| panic!("no stat {name}"))
    }

    /// The seconds `key` has left to live, as the meta command `mg <key> t` says.
    pub fn ttl(&mut self, key: &str) -> i64 {
        self.send(format!("mg {key} t\r\n").as_bytes());
        let line = self.line();
        line.trim_end()
            .strip_prefix("HD t")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("mg {key} t: {line:?}"))
    }

    /// The value of `key`, or `None` on a miss.
    pub fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.send(format!("get {key}\r\n").as_bytes());
        let header = self.line();
        if header == "END\r\n" {
            return None;
        }
        let len: usize = header
            .trim_end()
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad get reply {header:?}"));
        let mut value = vec![0; len + 2];
        self.reader.read_exact(&mut value).unwrap();
        value.truncate(len);
        assert_eq!(self.line(), "END\r\n");
        Some(value)
    }
}
