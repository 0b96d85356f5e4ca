//! The client path without sockets, for fuzzing and tests: requests made from the
//! input go through a protocol's `take_requests` (parse, route, split), each
//! server connection's jobs through the pipeline a connection task uses (joined
//! gets, in-flight matching, reply splitting) to a fake server that answers as the
//! input says (values, errors, a timeout, a closed connection, bytes that are no
//! reply), in parts, in any order between connections and in order on each; a
//! reload may swap the pool between two batches, and every reply is merged and
//! finished as for a real client. [`run`] panics when a request gets no reply, more
//! than one, a reply out of order, or a multi-key reply whose values are not its
//! keys' in its key order.

mod expect;
mod server;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use bytes::BytesMut;
use cashew_protocol::server::{Memcache, Redis, ServerCodec};

use super::client::{PendingReply, Protocol};
use super::handoff::Replies;
use super::pool::{PoolRt, PoolSlot, WorkerCtx};
use super::{memcache, redis};
use crate::state::clients::ClientCard;
use crate::state::counters::Registry;
use crate::state::generation::{Generation, ListenSockets, Loaded, Source};
use expect::Expect;
use server::Servers;

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
pub(crate) struct Input<'a> {
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
        Loaded::without_tls(config, Source::new("harness.yml".into(), yaml.into())),
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
    let card = ClientCard::connect("harness", "redis", String::new(), String::new());
    if redis {
        let client = redis::Client::new(slot.clone(), slot.new_client_id(), card.shared());
        path.drive::<_, Redis>(&mut input, client, &generation, &ctx);
    } else {
        let client = memcache::Client::new(slot.clone(), slot.new_client_id());
        path.drive::<_, Memcache>(&mut input, client, &generation, &ctx);
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
    fn drive<P: Protocol, C: ServerCodec>(
        &mut self,
        input: &mut Input,
        mut client: P,
        generation: &Arc<Generation>,
        ctx: &WorkerCtx,
    ) {
        let mut servers = Servers::<C>::new(self.redis);
        let mut queue = VecDeque::new();
        while !input.done() {
            match input.byte() % 8 {
                0..=3 => {
                    self.request(input);
                    assert!(client.take_requests(&mut self.buf, &mut queue, MAX_QUEUE));
                }
                4 | 5 => {
                    for _ in 0..=input.byte() % 4 {
                        servers.step(&self.slot.pool(), input);
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
            while servers.step(&self.slot.pool(), input) {}
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
            expect::redis_request(input, kind)
        } else {
            expect::memcache_request(input, kind)
        };
        self.buf.extend_from_slice(text.as_bytes());
        if let Some(expect) = expect {
            self.expected.push_back((text, expect));
        }
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
                expect::check_redis(&text, &expect)
            } else {
                expect::check_memcache(&text, &expect)
            };
            if let Err(why) = checked {
                panic!("reply {} to {request:?}: {why}: {text:?}", self.answered);
            }
            self.answered += 1;
        }
    }
}
