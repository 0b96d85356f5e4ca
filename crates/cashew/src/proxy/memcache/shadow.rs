//! Shadow traffic: for a share of the keys (chosen by a hash of the key, so a key
//! is always or never shadowed), a copy of each request goes to the pool's shadow
//! pool. The shadow's replies to reads are compared with the pool's own, key by
//! key (hit or miss, and the value), and dropped: the client never waits for
//! them. At most [`IN_FLIGHT_LIMIT`] copies per worker wait for the shadow pool;
//! beyond that copies are dropped and counted.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hasher};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use cashew_config::Shadow;
use cashew_protocol::memcache::{
    keys, parse_request, Command, Parsed, Request, Shape, ValueBlocks,
};
use cashew_route::HashFunction;

use super::{reply_bytes, Client, Pending};
use crate::proxy::client::PendingReply;
use crate::proxy::pool::PoolRt;
use crate::state::counters::PoolCounter;
use crate::state::shadow::Mismatch;

/// Copies waiting for the shadow pool, per worker and pool.
const IN_FLIGHT_LIMIT: usize = 1024;

/// A request whose reply is also compared with its shadow's: the reply goes to
/// the client as ever, and a copy of it to the comparison.
pub(crate) struct Shadowed {
    pub(super) inner: Pending,
    pub(super) primary: tokio::sync::oneshot::Sender<Bytes>,
}

/// Whether `key` is among the `fraction` of keys shadowed.
fn selected(key: &[u8], fraction: f64) -> bool {
    fraction >= 1.0 || (HashFunction::Murmur.hash(key) as f64) < fraction * 4_294_967_296.0
}

impl Client {
    /// Copies a request just sent (its pending reply, if any, last in `queue`) to
    /// the shadow pool when it is shadowed.
    pub(super) fn shadow(
        &self,
        pool: &Rc<PoolRt>,
        shadow: &Shadow,
        req: &Request,
        bytes: Bytes,
        queue: &mut VecDeque<Pending>,
    ) {
        let reads = matches!(req.command, Command::Get | Command::Gets | Command::MetaGet);
        let shape = req.command.shape();
        if !(reads || shadow.all_commands && matches!(shape, Shape::SingleKey | Shape::Retrieval)) {
            return;
        }
        // The request itself, or a retrieval of its shadowed keys.
        let (copy, compared): (Bytes, Vec<Bytes>) = match shape {
            Shape::Retrieval => {
                let chosen: Vec<&[u8]> = keys(&bytes, req.keys.clone())
                    .filter(|k| selected(k, shadow.fraction))
                    .collect();
                if chosen.is_empty() {
                    return;
                }
                let mut line = BytesMut::from(&bytes[..req.keys.start]);
                line.extend_from_slice(&chosen.join(&b' '));
                line.extend_from_slice(b"\r\n");
                let compared = chosen.iter().map(|k| Bytes::copy_from_slice(k)).collect();
                (line.freeze(), compared)
            }
            _ => {
                let key = &bytes[req.key.clone()];
                if !selected(key, shadow.fraction) {
                    return;
                }
                (bytes.clone(), vec![bytes.slice(req.key.clone())])
            }
        };
        let Some(target) = pool.shadow_pool() else {
            return;
        };
        let stats = pool.pool_stats();
        if pool.shadow_in_flight.get() >= IN_FLIGHT_LIMIT {
            stats.add(PoolCounter::ShadowDropped, 1);
            return;
        }
        let Parsed::Request(copy_req) = parse_request(&copy, None) else {
            return;
        };
        let mut sent = VecDeque::new();
        self.send(&target, &copy_req, copy, &mut sent);
        stats.add(PoolCounter::ShadowRequests, 1);
        let Some(mut shadow_pending) = sent.pop_front() else {
            return; // a write without a reply
        };
        if !reads {
            return; // writes are copied, not compared
        }
        let Some(primary) = queue.pop_back() else {
            return;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        queue.push_back(Pending::Shadowed(Box::new(Shadowed {
            inner: primary,
            primary: tx,
        })));
        let command = req.command;
        let home = pool.clone();
        home.shadow_in_flight.set(home.shadow_in_flight.get() + 1);
        tokio::task::spawn_local(async move {
            std::future::poll_fn(|cx| shadow_pending.poll_settle(cx)).await;
            let shadow_reply = reply_bytes(&target, shadow_pending);
            if let Ok(primary) = rx.await {
                compare(&home, command, &compared, &primary, &shadow_reply);
            }
            home.shadow_in_flight.set(home.shadow_in_flight.get() - 1);
        });
    }
}

/// What a server answered for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Miss,
    /// The value's length and a digest of its flags and bytes (a `gets` unique
    /// or meta flags differ between servers and are left out).
    Hit(usize, u64),
    Error(String),
}

impl Outcome {
    fn describe(&self) -> String {
        match self {
            Outcome::Miss => "miss".into(),
            Outcome::Hit(len, digest) => format!("hit, {len} bytes, digest {:08x}", digest >> 32),
            Outcome::Error(line) => format!("error: {line}"),
        }
    }
}

fn digest(parts: &[&[u8]]) -> u64 {
    let mut h = DefaultHasher::new();
    for p in parts {
        h.write(p);
    }
    h.finish()
}

/// The outcome of each of `keys` in a reply to a `get`/`gets` or a meta get.
fn outcomes(command: Command, reply: &[u8], keys: &[Bytes]) -> Vec<Outcome> {
    let first_line = || {
        let end = memchr::memchr(b'\n', reply).unwrap_or(reply.len());
        String::from_utf8_lossy(&reply[..end])
            .trim_end()
            .to_string()
    };
    if command == Command::MetaGet {
        let outcome = if reply.starts_with(b"EN") {
            Outcome::Miss
        } else if reply.starts_with(b"HD") {
            Outcome::Hit(0, 0)
        } else if reply.starts_with(b"VA ") {
            let end = memchr::memchr(b'\n', reply).unwrap_or(reply.len());
            let len: usize = reply[3..end]
                .split(|&b| b == b' ' || b == b'\r')
                .next()
                .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
                .unwrap_or(0);
            let data = reply.get(end + 1..end + 1 + len).unwrap_or_default();
            Outcome::Hit(len, digest(&[data]))
        } else {
            Outcome::Error(first_line())
        };
        return vec![outcome];
    }
    if !(reply.starts_with(b"VALUE ") || reply.starts_with(b"END")) {
        return vec![Outcome::Error(first_line()); keys.len()];
    }
    let mut blocks = ValueBlocks::new(reply).peekable();
    keys.iter()
        .map(|key| match blocks.peek() {
            Some(&(block_key, block)) if block_key == &key[..] => {
                blocks.next();
                let nl = memchr::memchr(b'\n', block).unwrap_or(block.len());
                let words: Vec<&[u8]> = block[..nl]
                    .split(|&b| b == b' ' || b == b'\r')
                    .filter(|w| !w.is_empty())
                    .collect();
                let flags = words.get(2).copied().unwrap_or_default();
                let data = block
                    .get(nl + 1..block.len().saturating_sub(2))
                    .unwrap_or_default();
                Outcome::Hit(data.len(), digest(&[flags, b" ", data]))
            }
            _ => Outcome::Miss,
        })
        .collect()
}

/// Counts and keeps each key the shadow answered otherwise.
fn compare(pool: &PoolRt, command: Command, keys: &[Bytes], primary: &[u8], shadow: &[u8]) {
    // The primary's reply holds every key of the request; its blocks of the
    // compared keys are found in order among them.
    let primary_outcomes = match command {
        Command::MetaGet => outcomes(command, primary, keys),
        _ => primary_outcomes_of(primary, keys),
    };
    let shadow_outcomes = outcomes(command, shadow, keys);
    let name = match command {
        Command::Get => "get",
        Command::Gets => "gets",
        _ => "mg",
    };
    for ((key, p), s) in keys.iter().zip(primary_outcomes).zip(shadow_outcomes) {
        if p == s {
            continue;
        }
        pool.pool_stats().add(PoolCounter::ShadowMismatches, 1);
        pool.pool_stats().shadow.record(Mismatch {
            at_usec: crate::clock::now_usec(),
            command: name.to_string(),
            key: crate::state::hotkeys::printable(&key[..key.len().min(64)]),
            primary: p.describe(),
            shadow: s.describe(),
        });
    }
}

/// The outcomes of `keys` in a reply that may hold other keys too (the primary
/// answered the whole request; only some keys were shadowed).
fn primary_outcomes_of(reply: &[u8], keys: &[Bytes]) -> Vec<Outcome> {
    if !(reply.starts_with(b"VALUE ") || reply.starts_with(b"END")) {
        return outcomes(Command::Get, reply, keys);
    }
    let found: Vec<(&[u8], &[u8])> = ValueBlocks::new(reply).collect();
    keys.iter()
        .map(|key| match found.iter().find(|(k, _)| *k == &key[..]) {
            Some(&(_, block)) => outcomes(Command::Get, block, std::slice::from_ref(key))
                .pop()
                .unwrap_or(Outcome::Miss),
            None => Outcome::Miss,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_always_or_never_shadowed_and_about_the_fraction_are() {
        let n = (0..10_000)
            .filter(|i| selected(format!("k{i}").as_bytes(), 0.1))
            .count();
        assert!((800..1200).contains(&n), "{n}");
        assert_eq!(selected(b"k1", 0.1), selected(b"k1", 0.1));
        assert!(selected(b"anything", 1.0));
    }

    #[test]
    fn outcomes_leave_out_what_differs_between_servers() {
        let keys = [Bytes::from_static(b"a"), Bytes::from_static(b"b")];
        let one = outcomes(Command::Gets, b"VALUE a 3 2 100\r\nhi\r\nEND\r\n", &keys);
        let two = outcomes(Command::Gets, b"VALUE a 3 2 999\r\nhi\r\nEND\r\n", &keys);
        assert_eq!(one, two, "the unique is the server's own");
        assert_eq!(one[1], Outcome::Miss);
        let other_value = outcomes(Command::Get, b"VALUE a 3 2\r\nho\r\nEND\r\n", &keys);
        assert_ne!(one[0], other_value[0]);
        let other_flags = outcomes(Command::Get, b"VALUE a 4 2\r\nhi\r\nEND\r\n", &keys);
        assert_ne!(one[0], other_flags[0]);
        let mg = |r: &[u8]| outcomes(Command::MetaGet, r, &keys[..1]).pop().unwrap();
        assert_eq!(mg(b"VA 2 c5\r\nhi\r\n"), mg(b"VA 2 c9\r\nhi\r\n"));
        assert_eq!(mg(b"EN\r\n"), Outcome::Miss);
        assert!(matches!(
            mg(b"SERVER_ERROR out of memory\r\n"),
            Outcome::Error(_)
        ));
        // A primary reply with more keys than were shadowed.
        let full = b"VALUE x 0 1\r\n1\r\nVALUE b 0 2\r\nbb\r\nEND\r\n";
        let got = primary_outcomes_of(full, &keys);
        assert_eq!(got[0], Outcome::Miss);
        assert!(matches!(got[1], Outcome::Hit(2, _)));
    }
}
