//! A retrieval (`get`, `gets`, `gat`, `gats`) over replicas, with fall-through to
//! the next replica and warm-up of the ones that missed.

use std::ops::Range;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use cashew_protocol::memcache::{keys, Request, ValueBlocks};

use super::{failed_reply, live_from, send_to, WARMUP_QUEUE_LIMIT};
use crate::proxy::client::Part;
use crate::proxy::gutter::{self, Target};
use crate::proxy::handoff::BackendError;
use crate::proxy::ids::ClientId;
use crate::proxy::pool::{PoolRt, Replicas};
use crate::state::counters::PoolCounter;

enum Outcome {
    Waiting,
    /// Found in fragment `.0`'s reply at `.1`.
    Hit(usize, Range<usize>),
    Miss,
}

struct Key {
    range: Range<usize>,
    replicas: Replicas,
    /// Index in `replicas` of the server asked now; `None` once it is the gutter.
    at: Option<usize>,
    /// Replica indices (as bits) that missed the key: where a warm-up writes it.
    missed: u32,
    /// The fragment asking for the key now, if sent.
    fragment: Option<usize>,
    outcome: Outcome,
}

struct Fragment {
    part: Part,
    keys: Vec<usize>,
    reply: Option<Bytes>,
    processed: bool,
}

/// A `get`, `gets`, `gat` or `gats` over replicas: each key is asked of its first
/// live replica (fragments grouped per server), and asked again of the next one
/// when that fails or, with `failover_on_miss`, misses.
pub(crate) struct Retrieval {
    pool: Rc<PoolRt>,
    client: ClientId,
    request: Bytes,
    /// The command and what comes before the keys (`get `, `gat 100 `).
    prefix: Range<usize>,
    keys: Vec<Key>,
    fragments: Vec<Fragment>,
    failed: Option<BackendError>,
    /// An error line a server gave instead of values: the request's reply.
    passthrough: Option<Bytes>,
}

impl Retrieval {
    pub(super) fn start(
        client: ClientId,
        pool: &Rc<PoolRt>,
        req: &Request,
        request: Bytes,
    ) -> Option<Retrieval> {
        let has_gutter = pool.gutter().is_some();
        let mut key_states = Vec::new();
        let line = req.keys.clone();
        let base = line.start;
        for key in keys(&request, line) {
            let start = key.as_ptr() as usize - request.as_ptr() as usize;
            let replicas = pool.replicas(key);
            let at = live_from(pool, &replicas, 0);
            if at.is_none() && !has_gutter {
                return None;
            }
            key_states.push(Key {
                range: start..start + key.len(),
                replicas,
                at,
                missed: 0,
                fragment: None,
                outcome: Outcome::Waiting,
            });
        }
        let mut retrieval = Retrieval {
            pool: pool.clone(),
            client,
            request,
            prefix: 0..base,
            keys: key_states,
            fragments: Vec::new(),
            failed: None,
            passthrough: None,
        };
        retrieval.send_waiting();
        Some(retrieval)
    }

    fn target(&self, key: &Key) -> Option<Target> {
        match key.at {
            Some(i) => key.replicas.get(i).map(Target::Server),
            None => {
                let (gutter, server) = gutter::route(&self.pool, &self.request[key.range.clone()])?;
                Some(Target::Gutter(gutter, server))
            }
        }
    }

    /// Sends every key not yet asked, one fragment per server.
    fn send_waiting(&mut self) {
        let mut groups: Vec<(Target, Vec<usize>)> = Vec::new();
        for (i, key) in self.keys.iter().enumerate() {
            if !matches!(key.outcome, Outcome::Waiting) || key.fragment.is_some() {
                continue;
            }
            let Some(target) = self.target(key) else {
                self.failed.get_or_insert(BackendError::NoServer);
                continue;
            };
            match groups.iter_mut().find(|(t, _)| t.same(&target)) {
                Some((_, members)) => members.push(i),
                None => groups.push((target, vec![i])),
            }
        }
        for (target, members) in groups {
            let prefix = &self.request[self.prefix.clone()];
            let mut bytes = BytesMut::with_capacity(prefix.len() + 32 * members.len());
            let to_gutter = target.is_gutter();
            if to_gutter {
                self.pool.pool_stats().add(PoolCounter::Guttered, 1);
            }
            if to_gutter && prefix.starts_with(b"gat") {
                // gat/gats set a TTL: the gutter caps it.
                let ttl = self.pool.config().gutter_ttl;
                bytes.extend_from_slice(&gutter::cap_token(prefix, prefix.len(), 1, ttl));
            } else {
                bytes.extend_from_slice(prefix);
            }
            for (n, &k) in members.iter().enumerate() {
                if n > 0 {
                    bytes.extend_from_slice(b" ");
                }
                bytes.extend_from_slice(&self.request[self.keys[k].range.clone()]);
            }
            bytes.extend_from_slice(b"\r\n");
            let part = send_to(&target, &self.pool, self.client, bytes.freeze());
            let index = self.fragments.len();
            for &k in &members {
                self.keys[k].fragment = Some(index);
            }
            self.fragments.push(Fragment {
                part,
                keys: members,
                reply: None,
                processed: false,
            });
        }
    }

    /// The key is asked of its next live replica, or is done: a miss when it was
    /// one, a failure of the request when its last replica failed. While keys
    /// move, a miss is asked of where the previous placement kept the key, and a
    /// failure there is a miss (that server may be gone).
    fn next_replica(&mut self, k: usize, missed: bool, failure: Option<BackendError>) {
        let failover_on_miss = self.pool.config().failover_on_miss;
        let pool = self.pool.clone();
        let key = &mut self.keys[k];
        key.fragment = None;
        let was_old = key.at.is_some_and(|at| key.replicas.is_old(at));
        // A key that is moving is looked for on each server that may hold it.
        let moving = key.replicas.has_previous();
        let next = match key.at {
            Some(at) => {
                if missed {
                    key.missed |= 1 << at;
                }
                live_from(&pool, &key.replicas, at + 1)
            }
            None => None,
        };
        match next {
            Some(i) if !missed || failover_on_miss || moving => {
                key.at = Some(i);
                let counter = match missed && moving && !failover_on_miss {
                    true => PoolCounter::MigrateFallbacks,
                    false => PoolCounter::ReplicaFailovers,
                };
                pool.pool_stats().add(counter, 1);
            }
            _ if missed || was_old => key.outcome = Outcome::Miss,
            _ => {
                key.outcome = Outcome::Miss;
                self.failed
                    .get_or_insert(failure.unwrap_or(BackendError::NoServer));
            }
        }
    }

    fn process(&mut self, f: usize) {
        self.fragments[f].processed = true;
        let reply = self.fragments[f].part.take();
        let members = std::mem::take(&mut self.fragments[f].keys);
        if failed_reply(&reply) {
            let error = reply.err().unwrap_or(BackendError::Protocol);
            for k in members {
                self.next_replica(k, false, Some(error.clone()));
            }
            return;
        }
        let reply = reply.expect("failures handled above");
        if !reply.starts_with(b"VALUE ") && !reply.starts_with(b"END") {
            self.passthrough.get_or_insert(reply);
            for k in members {
                self.keys[k].outcome = Outcome::Miss;
            }
            return;
        }
        let mut blocks = ValueBlocks::new(&reply).peekable();
        let base = reply.as_ptr() as usize;
        for k in members {
            let key = &self.request[self.keys[k].range.clone()];
            match blocks.peek() {
                Some(&(block_key, block)) if block_key == key => {
                    let start = block.as_ptr() as usize - base;
                    self.keys[k].outcome = Outcome::Hit(f, start..start + block.len());
                    blocks.next();
                }
                _ => self.next_replica(k, true, None),
            }
        }
        self.fragments[f].reply = Some(reply);
    }

    pub(crate) fn try_settle(&mut self) -> bool {
        loop {
            let mut progressed = false;
            for f in 0..self.fragments.len() {
                if !self.fragments[f].processed && self.fragments[f].part.try_settle() {
                    self.process(f);
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
            self.send_waiting();
        }
        self.fragments.iter().all(|f| f.processed)
    }

    pub(crate) fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while !self.try_settle() {
            let Some(f) = self.fragments.iter().position(|f| !f.processed) else {
                break;
            };
            std::task::ready!(self.fragments[f].part.poll_settle(cx));
        }
        Poll::Ready(())
    }

    pub(crate) fn finish(self) -> Bytes {
        let pool = &self.pool;
        if let Some(reply) = self.passthrough {
            return reply;
        }
        if let Some(error) = self.failed {
            pool.pool_stats().add(PoolCounter::ForwardError, 1);
            pool.server_failed(&error);
            return error.memcache_reply();
        }
        let mut out = BytesMut::new();
        let mut hits = 0;
        for key in &self.keys {
            if let Outcome::Hit(f, range) = &key.outcome {
                let reply = self.fragments[*f].reply.as_ref().expect("a hit's reply");
                out.extend_from_slice(&reply[range.clone()]);
                hits += 1;
                // Found after a miss, on a server it was moving from.
                let moved = key.replicas.has_previous() && key.missed != 0;
                if moved {
                    pool.pool_stats().add(PoolCounter::MigrateHits, 1);
                }
                if key.missed != 0 && (pool.config().warmup || moved) {
                    warm_up(pool, self.client, key, &reply[range.clone()]);
                }
            }
        }
        out.extend_from_slice(b"END\r\n");
        super::super::count_hits(pool, hits, self.keys.len());
        out.freeze()
    }
}

/// Writes a hit back to the live replicas that missed it (where the key is placed
/// now), with its flags and the pool's `warmup_ttl` (the original TTL is not known
/// to a proxy). An `add`: a client's write that got there first is not undone.
fn warm_up(pool: &PoolRt, client: ClientId, key: &Key, block: &[u8]) {
    let Some(nl) = memchr::memchr(b'\n', block) else {
        return;
    };
    let line = &block[..nl].strip_suffix(b"\r").unwrap_or(&block[..nl]);
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let (Some(b"VALUE"), Some(name), Some(flags), Some(len)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return;
    };
    let data = &block[nl + 1..];
    let mut set = BytesMut::with_capacity(block.len() + 16);
    set.extend_from_slice(b"add ");
    set.extend_from_slice(name);
    set.extend_from_slice(
        format!(
            " {} {} ",
            String::from_utf8_lossy(flags),
            pool.config().warmup_ttl
        )
        .as_bytes(),
    );
    set.extend_from_slice(len);
    set.extend_from_slice(b"\r\n");
    set.extend_from_slice(data);
    let set = set.freeze();
    for i in 0..key.replicas.len() {
        let missed = key.missed & (1 << i) != 0 && !key.replicas.is_old(i);
        let Some(server) = key.replicas.get(i).filter(|_| missed) else {
            continue;
        };
        if !pool.is_live(server) {
            continue;
        }
        if pool.queued(server) >= WARMUP_QUEUE_LIMIT {
            pool.pool_stats().add(PoolCounter::WarmupsDropped, 1);
            continue;
        }
        pool.send(server, client, set.clone(), false);
        pool.pool_stats().add(PoolCounter::Warmups, 1);
    }
}
