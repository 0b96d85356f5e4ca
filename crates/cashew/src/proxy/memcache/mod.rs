//! The memcached text and meta protocols for clients: requests are parsed as they
//! arrive and sent to their servers at once; multi-key retrievals are split per
//! server and merged back in the client's key order; quiet meta requests are sent
//! with an `mn` after them, so the server always answers and the connection stays
//! in step, and the nominal reply the client asked to be spared is cut out here.

mod replicated;
mod routed;
mod shadow;

use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use cashew_config::Shadow;
use cashew_protocol::memcache::{
    base64, keys, parse_request, Command, Parsed, Request, Shape, ValueBlocks, MAX_KEY_LEN,
};

use super::client::{
    all_ok, poll_settle_all, try_settle_all, Part, PendingReply, Protocol, ReplyFamilies,
};
use super::handoff::BackendError;
use super::ids::{ClientId, ServerId};
use super::pool::{PoolRt, PoolSlot};
use crate::state::counters::{Family, PoolCounter, ProxyCounter};

/// A multi-key retrieval split over several servers.
pub(crate) struct MultiGet {
    request: Bytes,
    keys: std::ops::Range<usize>,
    /// For each key of the request, in order, the part it went to.
    order: Vec<u16>,
    parts: Vec<Part>,
}

/// Which get hits and misses a reply counts.
#[derive(Clone, Copy)]
pub(crate) enum Count {
    Nothing,
    /// A retrieval of this many keys: its `VALUE` blocks are hits.
    Keys(u32),
    /// A meta get: `VA`/`HD` is a hit, `EN` (or silence in quiet mode) a miss.
    MetaGet,
}

pub(crate) enum Pending {
    Ready(Bytes),
    /// One server's reply, passed through.
    Single {
        part: Part,
        count: Count,
    },
    /// A quiet meta request sent with an `mn` after it: the server's replies up
    /// to `MN`, which is cut off (the client's own `mn` is answered in order).
    Quiet {
        part: Part,
        count: Count,
    },
    Multi(Box<MultiGet>),
    Broadcast(Vec<Part>),
    /// Pools with replicas or a gutter (see `replicated`).
    Retrieval(Box<replicated::Retrieval>),
    Failover(Box<replicated::Failover>),
    Write(Box<replicated::Write>),
    /// A retrieval whose keys `routes` sent to several pools.
    Routed(Box<routed::RoutedGet>),
    /// A read whose reply is compared with the shadow pool's.
    Shadowed(Box<shadow::Shadowed>),
    Quit,
}

impl PendingReply for Pending {
    fn try_settle(&mut self) -> bool {
        match self {
            Pending::Ready(_) | Pending::Quit => true,
            Pending::Single { part, .. } | Pending::Quiet { part, .. } => part.try_settle(),
            Pending::Multi(m) => try_settle_all(&mut m.parts),
            Pending::Broadcast(parts) => try_settle_all(parts),
            Pending::Retrieval(r) => r.try_settle(),
            Pending::Failover(f) => f.try_settle(),
            Pending::Write(w) => w.try_settle(),
            Pending::Routed(r) => r.try_settle(),
            Pending::Shadowed(s) => s.inner.try_settle(),
        }
    }

    fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Pending::Ready(_) | Pending::Quit => Poll::Ready(()),
            Pending::Single { part, .. } | Pending::Quiet { part, .. } => part.poll_settle(cx),
            Pending::Multi(m) => poll_settle_all(&mut m.parts, cx),
            Pending::Broadcast(parts) => poll_settle_all(parts, cx),
            Pending::Retrieval(r) => r.poll_settle(cx),
            Pending::Failover(f) => f.poll_settle(cx),
            Pending::Write(w) => w.poll_settle(cx),
            Pending::Routed(r) => r.poll_settle(cx),
            Pending::Shadowed(s) => s.inner.poll_settle(cx),
        }
    }
}

/// A memcached client connection.
pub(crate) struct Client {
    slot: Rc<PoolSlot>,
    id: ClientId,
    /// Bytes still to drop: the data block of a refused storage command.
    skip: usize,
    /// After `quit` nothing more is read.
    done: bool,
    families: ReplyFamilies,
}

impl Client {
    pub(crate) fn new(slot: Rc<PoolSlot>, id: ClientId) -> Client {
        Client {
            id,
            slot,
            skip: 0,
            done: false,
            families: ReplyFamilies::default(),
        }
    }
}

impl Protocol for Client {
    type Pending = Pending;

    fn take_requests(
        &mut self,
        input: &mut BytesMut,
        queue: &mut VecDeque<Pending>,
        max_queue: usize,
    ) -> bool {
        let slot = self.slot.clone();
        let pool = &*slot.pool();
        let max_value = Some(pool.config().value_limit() as usize);
        let max_keys = pool.config().max_keys as usize;
        let mut last_family = None;
        while !self.done && queue.len() < max_queue {
            self.families
                .note(queue.len(), last_family, pool.pool_stats());
            last_family = None;
            if self.skip > 0 {
                let n = self.skip.min(input.len());
                input.advance(n);
                self.skip -= n;
                if self.skip > 0 {
                    break;
                }
            }
            match parse_request(input, max_value) {
                Parsed::Incomplete => break,
                Parsed::Invalid(bad) => {
                    let consumed = bad.consume.min(input.len());
                    input.advance(consumed);
                    self.skip = bad.skip + (bad.consume - consumed);
                    pool.refused(error_kind(bad.reply), bad.reply);
                    if !bad.noreply {
                        queue.push_back(Pending::Ready(Bytes::from_static(bad.reply)));
                    }
                    if bad.close {
                        self.families
                            .note(queue.len(), last_family, pool.pool_stats());
                        self.done = true;
                        return false;
                    }
                }
                Parsed::Request(req) => {
                    last_family = Some(family(req.command));
                    let bytes = input.split_to(req.len).freeze();
                    if req.nkeys as usize > max_keys {
                        let reply = too_many_keys(max_keys);
                        pool.refused(PoolCounter::ErrClient, &reply);
                        queue.push_back(Pending::Ready(reply));
                        continue;
                    }
                    if req.command == Command::Quit {
                        queue.push_back(Pending::Quit);
                        self.done = true;
                    } else {
                        self.dispatch(pool, &req, bytes, queue);
                    }
                }
            }
        }
        self.families
            .note(queue.len(), last_family, pool.pool_stats());
        true
    }

    fn finish(&mut self, pending: Pending) -> (Bytes, bool) {
        self.families.finished();
        match pending {
            Pending::Quit => (Bytes::new(), true),
            other => (reply_bytes(&self.slot.pool(), other), false),
        }
    }
}

/// How a local error reply counts: an unknown command is unsupported, a command
/// a proxy cannot serve refused, anything else the client's error.
fn error_kind(reply: &[u8]) -> PoolCounter {
    if reply.starts_with(b"ERROR not supported") || reply.starts_with(b"CLIENT_ERROR stats") {
        PoolCounter::ErrRefused
    } else if reply.starts_with(b"ERROR") {
        PoolCounter::ErrUnsupported
    } else {
        PoolCounter::ErrClient
    }
}

/// The family a command is counted in.
#[inline]
fn family(command: Command) -> Family {
    use Command::*;
    match command {
        Get => Family::Get,
        Gets => Family::Gets,
        Gat => Family::Gat,
        Gats => Family::Gats,
        Set => Family::Set,
        Add => Family::Add,
        Replace => Family::Replace,
        Append => Family::Append,
        Prepend => Family::Prepend,
        Cas => Family::Cas,
        Incr => Family::Incr,
        Decr => Family::Decr,
        Touch => Family::Touch,
        Delete => Family::Delete,
        MetaGet | MetaSet | MetaDelete | MetaArithmetic | MetaNoop | MetaDebug => Family::Meta,
        _ => Family::Other,
    }
}

/// The reply to a retrieval of more than `max_keys` keys.
fn too_many_keys(max_keys: usize) -> Bytes {
    Bytes::from(format!(
        "CLIENT_ERROR too many keys in one request (max_keys is {max_keys})\r\n"
    ))
}

impl Client {
    fn dispatch(
        &self,
        pool: &Rc<PoolRt>,
        req: &Request,
        bytes: Bytes,
        queue: &mut VecDeque<Pending>,
    ) {
        pool.pool_stats().request(family(req.command));
        let counters = pool.proxy_stats();
        match req.command {
            c if c.is_storage() => counters.add(ProxyCounter::CmdSet, 1),
            Command::Touch => counters.add(ProxyCounter::CmdTouch, 1),
            Command::MetaGet => counters.add(ProxyCounter::CmdGet, 1),
            _ => {}
        }
        let shape = req.command.shape();
        if let Some((sample, capacity)) = pool.hotkeys {
            let hot = &pool.pool_stats().hotkeys;
            match shape {
                Shape::SingleKey => hot.observe(&bytes[req.key.clone()], sample, capacity),
                Shape::Retrieval => {
                    for key in keys(&bytes, req.keys.clone()) {
                        hot.observe(key, sample, capacity);
                    }
                }
                _ => {}
            }
        }
        if let Some(shadow) = &pool.config().shadow {
            return self.dispatch_shadowed(pool, shadow, req, bytes, queue);
        }
        if pool.has_routes() && matches!(shape, Shape::SingleKey | Shape::Retrieval) {
            return self.dispatch_routed(pool, req, bytes, queue);
        }
        self.send(pool, req, bytes, queue);
    }

    /// Sends a request of a pool with a shadow, then its copy. Apart so that the
    /// path of pools without one stays as short.
    #[inline(never)]
    fn dispatch_shadowed(
        &self,
        pool: &Rc<PoolRt>,
        shadow: &Shadow,
        req: &Request,
        bytes: Bytes,
        queue: &mut VecDeque<Pending>,
    ) {
        let copy = bytes.clone();
        let shape = req.command.shape();
        if pool.has_routes() && matches!(shape, Shape::SingleKey | Shape::Retrieval) {
            self.dispatch_routed(pool, req, bytes, queue);
        } else {
            self.send(pool, req, bytes, queue);
        }
        self.shadow(pool, shadow, req, copy, queue);
    }

    /// Sends a request to the servers of `pool` (the client's, or the one its key
    /// is routed to).
    fn send(&self, pool: &Rc<PoolRt>, req: &Request, bytes: Bytes, queue: &mut VecDeque<Pending>) {
        let shape = req.command.shape();
        if (pool.stable_placement() || pool.migrating())
            && matches!(shape, Shape::SingleKey | Shape::Retrieval)
        {
            return replicated::dispatch(self.id, pool, req, bytes, queue);
        }
        match shape {
            Shape::Local => match req.command {
                Command::Version => self.version(pool, queue),
                Command::MetaNoop => queue.push_back(Pending::Ready(Bytes::from_static(b"MN\r\n"))),
                _ => queue.push_back(Pending::Ready(stats_command(
                    pool,
                    &bytes[req.keys.clone()],
                ))),
            },
            Shape::SingleKey => {
                let mut decoded = [0u8; MAX_KEY_LEN];
                let key = &bytes[req.key.clone()];
                let key = match req.key_base64 {
                    // A key that does not decode is refused by the server, wherever it goes.
                    true => base64::decode(key, &mut decoded).map_or(key, |n| &decoded[..n]),
                    false => key,
                };
                let Some(server) = pool.route(key) else {
                    return no_server(pool, req.noreply, queue);
                };
                let count = match req.command {
                    Command::MetaGet => Count::MetaGet,
                    _ => Count::Nothing,
                };
                if req.quiet {
                    let mut with_noop = BytesMut::with_capacity(bytes.len() + 4);
                    with_noop.extend_from_slice(&bytes);
                    with_noop.extend_from_slice(b"mn\r\n");
                    let rx = pool.send_until_noop(server, self.id, with_noop.freeze());
                    queue.push_back(Pending::Quiet {
                        part: Part::new(rx),
                        count,
                    });
                    return;
                }
                let (bytes, want) = forwardable(req, bytes);
                let rx = pool.send(server, self.id, bytes, want);
                if want {
                    queue.push_back(Pending::Single {
                        part: Part::new(rx),
                        count,
                    });
                }
            }
            Shape::Retrieval => self.retrieval(pool, req, bytes, queue),
            Shape::Broadcast => {
                let (bytes, want) = forwardable(req, bytes);
                let live: Vec<ServerId> = pool.server_ids().filter(|&s| pool.is_live(s)).collect();
                if live.is_empty() {
                    return no_server(pool, req.noreply, queue);
                }
                let parts = live
                    .into_iter()
                    .map(|s| Part::new(pool.send(s, self.id, bytes.clone(), want)))
                    .collect();
                if want {
                    queue.push_back(Pending::Broadcast(parts));
                }
            }
        }
    }

    /// `version`: the version a live server gave when cashew connected to it, so
    /// that clients which check it see memcached's; asked of a server if none has
    /// told it yet.
    fn version(&self, pool: &PoolRt, queue: &mut VecDeque<Pending>) {
        if let Some(version) = pool.server_version() {
            let reply = Bytes::from(format!("VERSION {version}\r\n"));
            return queue.push_back(Pending::Ready(reply));
        }
        let Some(server) = pool.first_live() else {
            return no_server(pool, false, queue);
        };
        let rx = pool.send(server, self.id, Bytes::from_static(b"version\r\n"), true);
        queue.push_back(Pending::Single {
            part: Part::new(rx),
            count: Count::Nothing,
        });
    }

    fn retrieval(&self, pool: &PoolRt, req: &Request, bytes: Bytes, queue: &mut VecDeque<Pending>) {
        let nkeys = req.nkeys as usize;
        pool.proxy_stats().add(ProxyCounter::CmdGet, nkeys as u64);

        // Most retrievals touch one server: forward them untouched. Finding that
        // out allocates nothing; a split routes the keys again as it builds parts.
        let Some(first) = pool.route(&bytes[req.key.clone()]) else {
            return no_server(pool, false, queue);
        };
        let mut split = false;
        if nkeys > 1 {
            for key in keys(&bytes, req.keys.clone()).skip(1) {
                match pool.route(key) {
                    Some(s) => split |= s != first,
                    None => return no_server(pool, false, queue),
                }
            }
        }
        if !split {
            let rx = pool.send(first, self.id, bytes, true);
            queue.push_back(Pending::Single {
                part: Part::new(rx),
                count: Count::Keys(nkeys as u32),
            });
            return;
        }

        // One fragment per server: the command prefix, then that server's keys.
        let prefix = &bytes[..req.keys.start];
        let mut fragments: Vec<(ServerId, BytesMut)> = Vec::new();
        let mut order = Vec::with_capacity(nkeys);
        for key in keys(&bytes, req.keys.clone()) {
            let Some(server) = pool.route(key) else {
                return no_server(pool, false, queue);
            };
            let part = match fragments.iter().position(|(s, _)| *s == server) {
                Some(i) => i,
                None => {
                    let mut f = BytesMut::with_capacity(prefix.len() + 64);
                    f.extend_from_slice(prefix);
                    fragments.push((server, f));
                    fragments.len() - 1
                }
            };
            let f = &mut fragments[part].1;
            if f.len() > prefix.len() {
                f.extend_from_slice(b" ");
            }
            f.extend_from_slice(key);
            order.push(part as u16);
        }
        pool.pool_stats()
            .add(PoolCounter::Fragments, fragments.len() as u64);
        let parts = fragments
            .into_iter()
            .map(|(server, mut f)| {
                f.extend_from_slice(b"\r\n");
                Part::new(pool.send(server, self.id, f.freeze(), true))
            })
            .collect();
        queue.push_back(Pending::Multi(Box::new(MultiGet {
            request: bytes,
            keys: req.keys.clone(),
            order,
            parts,
        })));
    }
}

/// The bytes a settled request puts on the client's wire.
fn reply_bytes(pool: &PoolRt, pending: Pending) -> Bytes {
    match pending {
        Pending::Ready(b) => b,
        Pending::Quit => Bytes::new(),
        Pending::Single { mut part, count } => match part.take() {
            Ok(reply) => {
                count_reply(pool, count, &reply);
                reply
            }
            Err(e) => failed(pool, e),
        },
        Pending::Quiet { mut part, count } => match part.take() {
            Ok(mut reply) => {
                reply.truncate(reply.len().saturating_sub(b"MN\r\n".len()));
                count_reply(pool, count, &reply);
                reply
            }
            Err(e) => failed(pool, e),
        },
        Pending::Multi(m) => merge(pool, *m),
        Pending::Broadcast(mut parts) => all_ok(&mut parts, b"OK\r\n", |e| failed(pool, e)),
        Pending::Retrieval(r) => r.finish(),
        Pending::Failover(f) => f.finish(),
        Pending::Write(w) => w.finish(),
        Pending::Routed(r) => r.finish(),
        Pending::Shadowed(s) => {
            let reply = reply_bytes(pool, s.inner);
            // The comparison may have ended (the worker draining): no matter.
            let _ = s.primary.send(reply.clone());
            reply
        }
    }
}

/// Counts the hits and misses of a retrieval's reply.
fn count_reply(pool: &PoolRt, count: Count, reply: &[u8]) {
    let (hits, keys) = match count {
        Count::Nothing => return,
        Count::Keys(1) => (usize::from(reply.starts_with(b"VALUE ")), 1),
        Count::Keys(n) => (ValueBlocks::new(reply).count(), n as usize),
        Count::MetaGet => {
            let hit = reply.starts_with(b"VA ") || reply.starts_with(b"HD");
            (usize::from(hit), 1)
        }
    };
    count_hits(pool, hits, keys);
}

fn failed(pool: &PoolRt, e: BackendError) -> Bytes {
    pool.pool_stats().add(PoolCounter::ForwardError, 1);
    pool.server_failed(&e);
    e.memcache_reply()
}

fn count_hits(pool: &PoolRt, hits: usize, keys: usize) {
    let counters = pool.proxy_stats();
    counters.add(ProxyCounter::GetHits, hits as u64);
    counters.add(ProxyCounter::GetMisses, keys.saturating_sub(hits) as u64);
    let counters = pool.pool_stats();
    counters.add(PoolCounter::GetHits, hits as u64);
    counters.add(PoolCounter::GetMisses, keys.saturating_sub(hits) as u64);
}

/// Values in the client's key order, one `END`. A failed part fails the request.
fn merge(pool: &PoolRt, mut m: MultiGet) -> Bytes {
    let mut replies = Vec::with_capacity(m.parts.len());
    for p in &mut m.parts {
        match p.take() {
            Ok(r) if r.starts_with(b"VALUE ") || r.starts_with(b"END") => replies.push(r),
            Ok(error_line) => return error_line,
            Err(e) => return failed(pool, e),
        }
    }
    let mut blocks: Vec<_> = replies
        .iter()
        .map(|r| ValueBlocks::new(r).peekable())
        .collect();
    let mut out = BytesMut::with_capacity(replies.iter().map(Bytes::len).sum());
    let mut hits = 0;
    for (key, &part) in keys(&m.request, m.keys.clone()).zip(&m.order) {
        let it = &mut blocks[part as usize];
        if let Some(&(block_key, block)) = it.peek() {
            if block_key == key {
                out.extend_from_slice(block);
                it.next();
                hits += 1;
            }
        }
    }
    out.extend_from_slice(b"END\r\n");
    count_hits(pool, hits, m.order.len());
    out.freeze()
}

/// `stats [argument]`: cashew's own counters for `stats`, its clients for `conns`;
/// for the other arguments that memcached knows, the reply shape clients expect
/// (`RESET`, `OK`, or `STAT` lines closed by `END`), and for the others
/// memcached's `ERROR`. What describes the items a server holds (items, slabs,
/// sizes, cachedump) is refused with a `CLIENT_ERROR` rather than answered with an
/// empty list, so a tool that lists keys says it could not instead of finding none;
/// like memcached's own errors, it has no `END` after it.
fn stats_command(pool: &PoolRt, args: &[u8]) -> Bytes {
    let mut words = args.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let reply: &'static [u8] = match words.next() {
        None => return stats_reply(pool),
        Some(b"reset") => {
            pool.registry().reset_proxy_counters();
            b"RESET\r\n"
        }
        Some(b"detail") => match words.next() {
            Some(b"on" | b"off") => b"OK\r\n",
            Some(b"dump") => b"END\r\n",
            _ => b"CLIENT_ERROR usage: stats detail on|off|dump\r\n",
        },
        Some(b"conns") => return stats_conns(pool),
        Some(b"settings" | b"extstore") => b"END\r\n",
        Some(b"sizes_enable" | b"sizes_disable") => b"END\r\n",
        Some(b"items") => b"CLIENT_ERROR stats items is not supported by the proxy: each server holds its own items; ask each server\r\n",
        Some(b"slabs") => b"CLIENT_ERROR stats slabs is not supported by the proxy: each server holds its own items; ask each server\r\n",
        Some(b"sizes") => b"CLIENT_ERROR stats sizes is not supported by the proxy: each server holds its own items; ask each server\r\n",
        Some(b"cachedump") => {
            b"CLIENT_ERROR stats cachedump is not supported by the proxy: each server holds its own items; ask each server\r\n"
        }
        Some(_) => b"ERROR\r\n",
    };
    Bytes::from_static(reply)
}

/// `stats conns`: the pool's client connections over every worker, as memcached
/// lists its own, each under its client id (memcached's is the descriptor).
fn stats_conns(pool: &PoolRt) -> Bytes {
    let now = std::time::Instant::now();
    let tcp = |a: &str| match a.starts_with("unix:") || a.starts_with('/') {
        true => a.to_string(),
        false => format!("tcp:{a}"),
    };
    let mut s = String::new();
    for card in crate::state::clients::connected(Some(&pool.config().name)) {
        let id = card.id;
        s.push_str(&format!(
            "STAT {id}:addr {}\r\nSTAT {id}:listen_addr {}\r\nSTAT {id}:secs_since_last_cmd {}\r\n",
            tcp(&card.address),
            tcp(&card.local),
            card.idle(now).as_secs()
        ));
    }
    s.push_str("END\r\n");
    Bytes::from(s)
}

/// The memcached `stats` reply, over all workers, since the last `stats reset`.
fn stats_reply(pool: &PoolRt) -> Bytes {
    let registry = pool.registry();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let version = pool
        .server_version()
        .map_or_else(|| env!("CARGO_PKG_VERSION").to_string(), |v| v.to_string());
    let mut s = format!(
        "STAT pid {}\r\nSTAT uptime {}\r\nSTAT time {now}\r\nSTAT version {version}\r\nSTAT proxy cashew {}\r\nSTAT threads {}\r\n",
        std::process::id(),
        registry.uptime(),
        env!("CARGO_PKG_VERSION"),
        registry.threads(),
    );
    for &counter in ProxyCounter::ALL {
        s.push_str(&format!(
            "STAT {} {}\r\n",
            counter.name(),
            registry.proxy_since_reset(counter)
        ));
    }
    s.push_str("END\r\n");
    Bytes::from(s)
}

fn no_server(pool: &PoolRt, noreply: bool, queue: &mut VecDeque<Pending>) {
    pool.pool_stats().add(PoolCounter::ForwardError, 1);
    pool.server_failed(&BackendError::NoServer);
    if !noreply {
        queue.push_back(Pending::Ready(BackendError::NoServer.memcache_reply()));
    }
}

/// The bytes to send a server and whether a reply is wanted. A `noreply` request is
/// sent without its `noreply` so that the server's answer, even an error, keeps the
/// connection in step; the proxy then drops that answer.
fn forwardable(req: &Request, bytes: Bytes) -> (Bytes, bool) {
    if !req.noreply {
        return (bytes, true);
    }
    let mut stripped = BytesMut::with_capacity(bytes.len());
    stripped.extend_from_slice(&bytes[..req.noreply_span.start]);
    stripped.extend_from_slice(&bytes[req.noreply_span.end..]);
    (stripped.freeze(), false)
}

#[cfg(test)]
mod family_tests {
    use super::*;

    #[test]
    fn commands_map_to_their_families() {
        let name = |c| family(c).name();
        assert_eq!(name(Command::Get), "get");
        assert_eq!(name(Command::Delete), "delete");
        assert_eq!(name(Command::MetaDebug), "meta");
        assert_eq!(name(Command::MetaGet), "meta");
        assert_eq!(name(Command::Quit), "other");
        assert_eq!(name(Command::Stats), "other");
    }
}
