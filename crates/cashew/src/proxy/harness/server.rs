//! The harness's servers: each server connection's jobs go through the same
//! [`Pipeline`] a connection task uses (joined gets, in-flight matching, reply
//! splitting), its bytes are "written" in parts the input picks, a fake server
//! answers each request it can parse (a key's value being its name), and the reply
//! bytes come back in parts too, or a fault breaks the connection.

use std::collections::HashMap;
use std::ops::Range;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use cashew_protocol::server::ServerCodec;
use cashew_protocol::{memcache, resp};

use super::Input;
use crate::proxy::handoff::{BackendError, JobQueue};
use crate::proxy::pool::PoolRt;
use crate::proxy::server::{Pipeline, ServerConns};

/// One server connection as the harness runs it.
struct Connection<C> {
    queue: Rc<JobQueue>,
    conns: Rc<ServerConns>,
    pipeline: Pipeline<C>,
    /// Taken from the queue, not yet written.
    wbuf: BytesMut,
    /// Written, not yet answered by the server.
    at_server: BytesMut,
    /// Answered by the server, not yet read.
    on_the_wire: BytesMut,
    rbuf: BytesMut,
}

impl<C: ServerCodec> Connection<C> {
    fn new(conns: &Rc<ServerConns>, queue: &Rc<JobQueue>) -> Self {
        Connection {
            queue: queue.clone(),
            conns: conns.clone(),
            pipeline: Pipeline::new(conns.link.clone(), queue.clone()),
            wbuf: BytesMut::new(),
            at_server: BytesMut::new(),
            on_the_wire: BytesMut::new(),
            rbuf: BytesMut::new(),
        }
    }

    fn has_work(&self) -> bool {
        self.queue.unsent() > 0 || !self.pipeline.is_idle() || !self.on_the_wire.is_empty()
    }

    /// The connection failed: what it carried fails, and a new one starts empty.
    fn break_with(&mut self, error: BackendError) {
        self.pipeline.fail_in_flight(error);
        *self = Connection::new(&self.conns, &self.queue);
    }
}

/// Every server connection of the pool the harness has seen.
pub(crate) struct Servers<C> {
    redis: bool,
    /// By queue.
    connections: HashMap<*const JobQueue, Connection<C>>,
}

impl<C: ServerCodec> Servers<C> {
    pub(crate) fn new(redis: bool) -> Self {
        Servers {
            redis,
            connections: HashMap::new(),
        }
    }

    /// One step of one server connection with work, picked by the input: it takes
    /// its queued jobs, writes some bytes, the server answers a request, and some
    /// reply bytes are read. False when no connection has work.
    pub(crate) fn step(&mut self, pool: &PoolRt, input: &mut Input) -> bool {
        for s in pool.server_ids() {
            for conns in pool.server_connections(s) {
                for queue in conns.queues() {
                    self.connections
                        .entry(Rc::as_ptr(queue))
                        .or_insert_with(|| Connection::new(&conns, queue));
                }
            }
        }
        let mut busy: Vec<&*const JobQueue> = self
            .connections
            .iter()
            .filter(|(_, c)| c.has_work())
            .map(|(k, _)| k)
            .collect();
        if busy.is_empty() {
            return false;
        }
        busy.sort();
        let key = *busy[usize::from(input.byte()) % busy.len()];
        let redis = self.redis;
        let c = self.connections.get_mut(&key).expect("a busy connection");

        while let Some(job) = c.queue.try_pop() {
            c.pipeline.enqueue(job, &mut c.wbuf);
        }
        let n = part(input.byte(), c.wbuf.len());
        c.at_server.extend_from_slice(&c.wbuf[..n]);
        c.wbuf.advance(n);
        c.pipeline.wrote(n, Instant::now());

        let how = input.byte();
        match how % 16 {
            13 | 14 => {
                let error = match how % 16 {
                    13 => BackendError::TimedOut,
                    _ => BackendError::Closed,
                };
                c.break_with(error);
                return true;
            }
            15 => c.on_the_wire.extend_from_slice(b"!not a reply\r\n"),
            _ => {
                if let Some(reply) = answer(&mut c.at_server, redis, how) {
                    c.on_the_wire.extend_from_slice(&reply);
                }
            }
        }
        let n = part(input.byte(), c.on_the_wire.len());
        let arrived = c.on_the_wire.split_to(n);
        c.rbuf.extend_from_slice(&arrived);
        if let Err(e) = c.pipeline.take_replies(&mut c.rbuf, Instant::now()) {
            c.break_with(e);
        }
        true
    }
}

/// How many of `len` bytes go at once: all for 0 (so that an input used up, all
/// zeros, always makes progress), else a part.
fn part(byte: u8, len: usize) -> usize {
    match byte {
        0 => len,
        b => len.min(usize::from(b) % 64 + 1),
    }
}

/// The server's reply to the first whole request of `at_server`, taken from it.
fn answer(at_server: &mut BytesMut, redis: bool, how: u8) -> Option<Vec<u8>> {
    let (len, reply) = if redis {
        let mut args: Vec<Range<usize>> = Vec::new();
        match resp::parse_request(at_server, &mut args) {
            resp::Parsed::Request(r) => {
                let args: Vec<String> = args
                    .iter()
                    .map(|a| String::from_utf8_lossy(&at_server[a.clone()]).into_owned())
                    .collect();
                (r.len, redis_reply(&args, how))
            }
            resp::Parsed::Incomplete { .. } => return None,
            resp::Parsed::Error(why) => panic!("the proxy sent a bad redis request: {why}"),
        }
    } else {
        match memcache::parse_request(at_server, None) {
            memcache::Parsed::Request(r) => (r.len, memcache_reply(&at_server[..r.len], how)),
            memcache::Parsed::Incomplete => return None,
            memcache::Parsed::Invalid(bad) => panic!(
                "the proxy sent a bad memcached request: {:?}",
                String::from_utf8_lossy(bad.reply)
            ),
        }
    };
    at_server.advance(len);
    Some(reply.into_bytes())
}

/// What a memcached server answers to `request`, a key's value being its name;
/// `how`'s bits pick hits and outcomes.
fn memcache_reply(request: &[u8], how: u8) -> String {
    let text = String::from_utf8_lossy(request);
    let line = text.split("\r\n").next().unwrap_or("");
    let words: Vec<&str> = line.split(' ').collect();
    let hit = |i: usize| (how >> (i % 7)) & 1 == 1;
    let mut out = String::new();
    match words[0] {
        "get" | "gets" | "gat" | "gats" => {
            let keys = if words[0].starts_with("gat") {
                &words[2..]
            } else {
                &words[1..]
            };
            for (i, key) in keys.iter().enumerate() {
                if hit(i) {
                    let cas = if words[0].ends_with('s') { " 7" } else { "" };
                    out += &format!("VALUE {key} 0 {}{cas}\r\n{key}\r\n", key.len());
                }
            }
            out += "END\r\n";
        }
        "mg" => {
            let quiet = words.contains(&"q");
            if hit(0) {
                out += &format!("VA {}\r\n{}\r\n", words[1].len(), words[1]);
            } else if !quiet {
                out += "EN\r\n";
            }
        }
        "mn" => out += "MN\r\n",
        "set" | "add" | "replace" | "append" | "prepend" | "cas" => {
            out += if hit(0) {
                "STORED\r\n"
            } else {
                "NOT_STORED\r\n"
            };
        }
        "delete" => {
            out += if hit(0) {
                "DELETED\r\n"
            } else {
                "NOT_FOUND\r\n"
            }
        }
        "touch" => {
            out += if hit(0) {
                "TOUCHED\r\n"
            } else {
                "NOT_FOUND\r\n"
            }
        }
        "version" => out += "VERSION 1.6.21\r\n",
        _ => out += "ERROR\r\n",
    }
    out
}

/// What a redis server answers to a request of `args`, a key's value being its name.
fn redis_reply(args: &[String], how: u8) -> String {
    let hit = |i: usize| (how >> (i % 7)) & 1 == 1;
    let value = |i: usize, key: &str| match hit(i) {
        true => format!("${}\r\n{key}\r\n", key.len()),
        false => "$-1\r\n".to_string(),
    };
    let name = args
        .first()
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_default();
    match name.as_str() {
        "GET" => value(0, &args[1]),
        "MGET" => {
            let mut out = format!("*{}\r\n", args.len() - 1);
            for (i, key) in args[1..].iter().enumerate() {
                out += &value(i, key);
            }
            out
        }
        "SET" => "+OK\r\n".into(),
        "DEL" => format!(":{}\r\n", (1..args.len()).filter(|&i| hit(i)).count()),
        "PING" => "+PONG\r\n".into(),
        _ => "-ERR unknown command\r\n".into(),
    }
}
