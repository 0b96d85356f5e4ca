//! The client path without sockets, for fuzzing and tests: requests made from the
//! input go through a protocol's `take_requests` (parse, route, split), each job a
//! server would get is answered as the input says (a reply, an error, a timeout, a
//! dropped connection), in any order between servers and in order on each
//! connection, a reload may swap the pool between two batches, and every reply is
//! merged and finished as for a real client. [`run`] panics when a request gets no
//! reply, more than one, a reply out of order, or a multi-key reply whose values are
//! not its keys' in its key order.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::client::{PendingReply, Protocol};
use super::handoff::{BackendError, Job, JobQueue, Replies};
use super::pool::{PoolRt, PoolSlot, WorkerCtx};
use super::{memcache, redis};
use crate::state::counters::Registry;
use crate::state::generation::{Generation, ListenSockets, Source};

/// Keys are `k0` … `k11`, so that requests share servers and repeat keys.
const KEYS: u8 = 12;
/// Pending replies a client may have (small, so that back-pressure is exercised).
const MAX_QUEUE: usize = 8;
/// Turns of answering and settling allowed once the input is used up.
const FINAL_TURNS: usize = 10_000;

const POOLS: [&str; 4] = [
    "p:\n  listen: 127.0.0.1:1\n  hash: fnv1a_64\n  distribution: ketama\n  servers:\n    - 127.0.0.1:2:1 a\n    - 127.0.0.1:3:1 b\n    - 127.0.0.1:4:1 c\n",
    "p:\n  listen: 127.0.0.1:1\n  distribution: modula\n  server_connections: 2\n  servers:\n    - 127.0.0.1:2:1\n    - 127.0.0.1:3:1\n",
    "p:\n  listen: 127.0.0.1:1\n  replicas: 2\n  failover_on_miss: true\n  warmup: true\n  servers:\n    - 127.0.0.1:2:1 a\n    - 127.0.0.1:3:1 b\n    - 127.0.0.1:4:1 c\n",
    "p:\n  listen: 127.0.0.1:1\n  redis: true\n  hash: murmur\n  servers:\n    - 127.0.0.1:2:1 a\n    - 127.0.0.1:3:1 b\n    - 127.0.0.1:4:1 c\n",
];

/// The input, read a byte at a time; zeros once it is used up.
struct Input<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn key(&mut self) -> String {
        format!("k{}", self.byte() % KEYS)
    }
}

/// What a request's reply must be.
#[derive(Debug)]
enum Expect {
    /// Values for these keys, in this order: memcached `get`/`gets` (any of them,
    /// as a subsequence), a meta get (`quiet`: nothing on a miss), redis `MGET`
    /// (every one, a value or nil in its place) or `GET`.
    Values { keys: Vec<String>, quiet: bool },
    /// One reply, of any kind.
    One,
}

/// Runs one input through the client path; panics on a broken promise. Returns
/// how many replies it checked.
pub fn run(data: &[u8]) -> usize {
    let mut input = Input { bytes: data, at: 0 };
    let yaml = POOLS[usize::from(input.byte()) % POOLS.len()];
    let config = cashew_config::parse("harness.yml", yaml).expect("harness config");
    let redis = config.pools[0].redis;
    let listeners = config
        .pools
        .iter()
        .map(|p| Arc::new(ListenSockets::new(0, p.listen.clone(), false, Vec::new())))
        .collect();
    let generation = Arc::new(Generation::new(
        1,
        config,
        Source::new("harness.yml".into(), yaml.into()),
        Arc::new(Registry::new(1)),
        listeners,
        None,
    ));
    let ctx = WorkerCtx {
        id: 0,
        replies: Rc::new(Replies::default()),
        clients: Rc::default(),
        backends: Rc::default(),
    };
    // Server connection tasks are spawned here and never run: the harness is the
    // server side.
    let local = tokio::task::LocalSet::new();
    let _inside = local.enter();
    let slot = Rc::new(PoolSlot::new(PoolRt::new(
        generation.clone(),
        0,
        &ctx,
        None,
    )));
    let mut path = Path {
        redis,
        slot: slot.clone(),
        buf: BytesMut::new(),
        expected: VecDeque::new(),
        answered: 0,
    };
    if redis {
        path.drive(&mut input, redis::Client::new(slot, 0), &generation, &ctx);
    } else {
        path.drive(
            &mut input,
            memcache::Client::new(slot, 0),
            &generation,
            &ctx,
        );
    }
    path.answered
}

struct Path {
    redis: bool,
    slot: Rc<PoolSlot>,
    /// Request bytes not yet taken by the protocol.
    buf: BytesMut,
    expected: VecDeque<(String, Expect)>,
    answered: usize,
}

impl Path {
    fn drive<P: Protocol>(
        &mut self,
        input: &mut Input,
        mut client: P,
        generation: &Arc<Generation>,
        ctx: &WorkerCtx,
    ) {
        let mut queue = VecDeque::new();
        while !input.done() {
            match input.byte() % 8 {
                0..=3 => {
                    self.request(input);
                    assert!(client.take_requests(&mut self.buf, &mut queue, MAX_QUEUE));
                }
                4 | 5 => {
                    for _ in 0..=input.byte() % 4 {
                        self.answer_one(input);
                    }
                }
                6 => self.settle(&mut client, &mut queue),
                _ => {
                    // A reload: the same config as a new generation, between batches.
                    let next = PoolRt::new(generation.clone(), 0, ctx, Some(&self.slot.pool()));
                    self.slot.replace(next);
                }
            }
        }
        for _ in 0..FINAL_TURNS {
            assert!(client.take_requests(&mut self.buf, &mut queue, MAX_QUEUE));
            while self.answer_one(input) {}
            self.settle(&mut client, &mut queue);
            if self.buf.is_empty() && queue.is_empty() {
                break;
            }
        }
        assert!(
            queue.is_empty() && self.buf.is_empty(),
            "{} requests never answered ({} bytes never read)",
            queue.len(),
            self.buf.len()
        );
        assert!(
            self.expected.is_empty(),
            "{} replies missing, first for {:?}",
            self.expected.len(),
            self.expected.front()
        );
    }

    /// Appends one request, and what its reply must be.
    fn request(&mut self, input: &mut Input) {
        let kind = input.byte();
        let (text, expect) = if self.redis {
            redis_request(input, kind)
        } else {
            memcache_request(input, kind)
        };
        self.buf.extend_from_slice(text.as_bytes());
        if let Some(expect) = expect {
            self.expected.push_back((text, expect));
        }
    }

    /// Answers the oldest job of one server connection, picked by the input; false
    /// when no job waits anywhere.
    fn answer_one(&mut self, input: &mut Input) -> bool {
        let pool = self.slot.pool().clone();
        let queues: Vec<Rc<JobQueue>> = (0..pool.server_count())
            .flat_map(|s| pool.server_queues(s))
            .collect();
        let waiting: Vec<&Rc<JobQueue>> = queues.iter().filter(|q| q.unsent() > 0).collect();
        if waiting.is_empty() {
            return false;
        }
        let queue = waiting[usize::from(input.byte()) % waiting.len()];
        let Some(job) = queue.try_pop() else {
            return false;
        };
        queue.sent(job.bytes.len());
        let how = input.byte();
        let reply = match how % 10 {
            0 => Err(BackendError::TimedOut),
            1 => Err(BackendError::Closed),
            2 => Err(BackendError::Protocol),
            // The connection task went away without a word.
            3 => {
                drop(job);
                return true;
            }
            _ if self.redis => Ok(redis_reply(&job, how)),
            _ => Ok(memcache_reply(&job, how)),
        };
        if let Some(tx) = job.reply {
            tx.send(reply);
        }
        true
    }

    /// Finishes every reply at the front of the queue that is complete.
    fn settle<P: Protocol>(&mut self, client: &mut P, queue: &mut VecDeque<P::Pending>) {
        while let Some(front) = queue.front_mut() {
            if !front.try_settle() {
                break;
            }
            let pending = queue.pop_front().unwrap();
            let (bytes, close) = client.finish(pending);
            let (request, expect) = self.expected.pop_front().unwrap_or_else(|| {
                panic!(
                    "a reply no request asked for: {:?}",
                    String::from_utf8_lossy(&bytes)
                )
            });
            assert!(!close, "the connection was closed after {request:?}");
            let text = String::from_utf8_lossy(&bytes);
            let checked = if self.redis {
                check_redis(&text, &expect)
            } else {
                check_memcache(&text, &expect)
            };
            if let Err(why) = checked {
                panic!("reply {} to {request:?}: {why}: {text:?}", self.answered);
            }
            self.answered += 1;
        }
    }
}

fn memcache_request(input: &mut Input, kind: u8) -> (String, Option<Expect>) {
    let noreply = if input.byte() & 1 == 1 {
        " noreply"
    } else {
        ""
    };
    match kind % 6 {
        command @ (0 | 1) => {
            let keys: Vec<String> = (0..=input.byte() % 5).map(|_| input.key()).collect();
            let verb = ["get", "gets"][usize::from(command)];
            let text = format!("{verb} {}\r\n", keys.join(" "));
            (text, Some(Expect::Values { keys, quiet: false }))
        }
        2 => {
            let key = input.key();
            let text = format!("set {key} 0 0 {}{noreply}\r\n{key}\r\n", key.len());
            (text, noreply.is_empty().then_some(Expect::One))
        }
        3 => {
            let key = input.key();
            let text = format!("delete {key}{noreply}\r\n");
            (text, noreply.is_empty().then_some(Expect::One))
        }
        4 => {
            let key = input.key();
            let quiet = !noreply.is_empty();
            let text = format!("mg {key} v{}\r\n", if quiet { " q" } else { "" });
            let keys = vec![key];
            (text, Some(Expect::Values { keys, quiet }))
        }
        _ => ("mn\r\n".into(), Some(Expect::One)),
    }
}

fn redis_request(input: &mut Input, kind: u8) -> (String, Option<Expect>) {
    let command = |args: &[&str]| {
        let mut text = format!("*{}\r\n", args.len());
        for a in args {
            text += &format!("${}\r\n{a}\r\n", a.len());
        }
        text
    };
    match kind % 5 {
        0 => {
            let key = input.key();
            let keys = vec![key.clone()];
            (
                command(&["GET", &key]),
                Some(Expect::Values { keys, quiet: false }),
            )
        }
        1 => {
            let keys: Vec<String> = (0..=input.byte() % 5).map(|_| input.key()).collect();
            let mut args = vec!["MGET"];
            args.extend(keys.iter().map(String::as_str));
            (command(&args), Some(Expect::Values { keys, quiet: false }))
        }
        2 => {
            let key = input.key();
            (command(&["SET", &key, &key]), Some(Expect::One))
        }
        3 => {
            let keys: Vec<String> = (0..=input.byte() % 4).map(|_| input.key()).collect();
            let mut args = vec!["DEL"];
            args.extend(keys.iter().map(String::as_str));
            (command(&args), Some(Expect::One))
        }
        _ => ("PING\r\n".into(), Some(Expect::One)),
    }
}

/// What a memcached server would answer to `job`, a key's value being its name;
/// `how`'s bits pick hits and outcomes.
fn memcache_reply(job: &Job, how: u8) -> Bytes {
    let text = String::from_utf8_lossy(&job.bytes);
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
    if job.until_noop {
        out += "MN\r\n";
    }
    Bytes::from(out)
}

/// What a redis server would answer to `job`, a key's value being its name.
fn redis_reply(job: &Job, how: u8) -> Bytes {
    let args = resp_args(&job.bytes);
    let hit = |i: usize| (how >> (i % 7)) & 1 == 1;
    let value = |i: usize, key: &str| match hit(i) {
        true => format!("${}\r\n{key}\r\n", key.len()),
        false => "$-1\r\n".to_string(),
    };
    let name = args
        .first()
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_default();
    Bytes::from(match name.as_str() {
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
    })
}

/// The arguments of a request the proxy sends (always an array of bulk strings).
fn resp_args(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split("\r\n");
    let count: usize = lines
        .next()
        .and_then(|l| l.strip_prefix('*'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (0..count)
        .filter_map(|_| {
            lines.next()?;
            lines.next().map(str::to_string)
        })
        .collect()
}

fn check_memcache(text: &str, expect: &Expect) -> Result<(), String> {
    let is_error = text.starts_with("SERVER_ERROR ") && text.ends_with("\r\n");
    let one_line = text.ends_with("\r\n") && text.find("\r\n") == Some(text.len() - 2);
    match expect {
        Expect::One => match one_line {
            true => Ok(()),
            false => Err("not one reply line".into()),
        },
        Expect::Values { keys, .. } if keys.len() == 1 && text.starts_with('V') => {
            // Meta get: VA, or a VALUE block for get.
            if text.starts_with("VA ") {
                let want = format!("VA {}\r\n{}\r\n", keys[0].len(), keys[0]);
                return match text == want {
                    true => Ok(()),
                    false => Err(format!("expected {want:?}")),
                };
            }
            check_values(text, keys)
        }
        Expect::Values { quiet: true, .. } if text.is_empty() || is_error => Ok(()),
        Expect::Values { .. } if is_error || text == "EN\r\n" => Ok(()),
        Expect::Values { keys, .. } => check_values(text, keys),
    }
}

/// `VALUE` blocks for a subsequence of `keys`, each holding its key, then `END`.
fn check_values(text: &str, keys: &[String]) -> Result<(), String> {
    let mut rest = text;
    let mut next_key = 0;
    while let Some(block) = rest.strip_prefix("VALUE ") {
        let (header, after) = block.split_once("\r\n").ok_or("a VALUE line without end")?;
        let key = header.split(' ').next().unwrap_or("");
        let data = after.get(..key.len()).ok_or("a short value")?;
        if data != key || after.get(key.len()..key.len() + 2) != Some("\r\n") {
            return Err(format!("the value of {key} is not its own"));
        }
        let found = keys[next_key..]
            .iter()
            .position(|k| k == key)
            .ok_or_else(|| format!("{key} not asked for, or out of order"))?;
        next_key += found + 1;
        rest = &after[key.len() + 2..];
    }
    match rest {
        "END\r\n" => Ok(()),
        _ => Err(format!("ends with {rest:?}, not END")),
    }
}

fn check_redis(text: &str, expect: &Expect) -> Result<(), String> {
    let one_line = text.ends_with("\r\n") && text.find("\r\n") == Some(text.len() - 2);
    let is_error = one_line && text.starts_with('-');
    match expect {
        Expect::One if one_line => Ok(()),
        Expect::One => Err("not one simple reply".into()),
        Expect::Values { .. } if is_error => Ok(()),
        Expect::Values { keys, .. } if keys.len() == 1 && !text.starts_with('*') => {
            check_bulk(text, &keys[0]).and_then(|rest| match rest {
                "" => Ok(()),
                _ => Err("more than one reply".into()),
            })
        }
        Expect::Values { keys, .. } => {
            let header = format!("*{}\r\n", keys.len());
            let mut rest = text
                .strip_prefix(header.as_str())
                .ok_or(format!("not an array of {}", keys.len()))?;
            for key in keys {
                rest = match rest.starts_with('-') {
                    true => rest.split_once("\r\n").ok_or("an error without end")?.1,
                    false => check_bulk(rest, key)?,
                };
            }
            match rest {
                "" => Ok(()),
                _ => Err(format!("{rest:?} after the array")),
            }
        }
    }
}

/// A nil or a bulk string holding `key` at the start of `text`; what follows it.
fn check_bulk<'t>(text: &'t str, key: &str) -> Result<&'t str, String> {
    if let Some(rest) = text.strip_prefix("$-1\r\n") {
        return Ok(rest);
    }
    let want = format!("${}\r\n{key}\r\n", key.len());
    text.strip_prefix(want.as_str())
        .ok_or_else(|| format!("the value of {key} is not its own"))
}
