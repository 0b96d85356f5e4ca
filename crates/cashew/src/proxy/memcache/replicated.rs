//! memcached pools with stable placement (`replicas`, `gutter`): every key is kept
//! on its replicas, the servers `PoolRt::replicas` names. Reads go to the first live
//! replica and fall through to the next on an error, a timeout or (with
//! `failover_on_miss`) a miss, within the same client request; `warmup` writes such
//! a hit back to the replicas that missed it. Writes go to every live replica and
//! answer with the first replica's reply, or the first success when it failed.
//! `cas` is checked on the first live replica only (its unique is that server's),
//! and when it stores, the value is set on the other replicas too. Keys whose
//! replicas are all ejected go to the gutter pool.

use std::collections::VecDeque;
use std::ops::Range;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use cashew_protocol::memcache::{base64, keys, Command, Request, ValueBlocks, MAX_KEY_LEN};

use super::{count_reply, forwardable, no_server, Count, Pending};
use crate::proxy::client::{settle_all, try_settle_all, Part};
use crate::proxy::gutter::{self, Target};
use crate::proxy::handoff::{BackendError, Reply};
use crate::proxy::ids::{ClientId, ServerId};
use crate::proxy::pool::{PoolRt, Replicas};
use crate::state::counters::PoolCounter;

/// A write-back is dropped when the server already has this many requests queued
/// on this worker's connections: warm-up never delays clients.
const WARMUP_QUEUE_LIMIT: u64 = 1024;

/// Sends a request of a pool with stable placement and queues its pending reply.
pub(crate) fn dispatch(
    client: ClientId,
    pool: &Rc<PoolRt>,
    req: &Request,
    bytes: Bytes,
    queue: &mut VecDeque<Pending>,
) {
    match req.command {
        Command::Get | Command::Gets | Command::Gat | Command::Gats => {
            match Retrieval::start(client, pool, req, bytes) {
                Some(r) => queue.push_back(Pending::Retrieval(Box::new(r))),
                None => no_server(pool, false, queue),
            }
        }
        Command::MetaGet | Command::MetaDebug => {
            let on_miss = req.command == Command::MetaGet && pool.config().failover_on_miss;
            match Failover::start(client, pool, req, bytes, on_miss) {
                Some(f) => queue.push_back(Pending::Failover(Box::new(f))),
                None => no_server(pool, false, queue),
            }
        }
        _ => write(client, pool, req, bytes, queue),
    }
}

/// The bytes a key is placed by: a base64 key (meta `b` flag) is decoded.
fn placement_key<'a>(
    req: &Request,
    bytes: &'a [u8],
    decoded: &'a mut [u8; MAX_KEY_LEN],
) -> &'a [u8] {
    let key = &bytes[req.key.clone()];
    if !req.key_base64 {
        return key;
    }
    match base64::decode(key, decoded) {
        Some(n) => &decoded[..n],
        None => key,
    }
}

/// The first live replica at or after index `from`.
fn live_from(pool: &PoolRt, replicas: &Replicas, from: usize) -> Option<usize> {
    (from..replicas.len()).find(|&i| replicas.get(i).is_some_and(|s| pool.is_live(s)))
}

/// Sends a fragment of a retrieval to `target`.
fn send_to(target: &Target, pool: &PoolRt, client: ClientId, bytes: Bytes) -> Part {
    let (pool, server) = target.resolve(pool);
    Part::new(pool.send(server, client, bytes, true))
}

/// A reply that counts as a failure of its server: the next replica is asked.
fn failed_reply(reply: &Reply) -> bool {
    match reply {
        Err(_) => true,
        Ok(r) => r.starts_with(b"SERVER_ERROR"),
    }
}

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
    fn start(
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
    /// one, a failure of the request when its last replica failed.
    fn next_replica(&mut self, k: usize, missed: bool, failure: Option<BackendError>) {
        let failover_on_miss = self.pool.config().failover_on_miss;
        let pool = self.pool.clone();
        let key = &mut self.keys[k];
        key.fragment = None;
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
            Some(i) if !missed || failover_on_miss => {
                key.at = Some(i);
                pool.pool_stats().add(PoolCounter::ReplicaFailovers, 1);
            }
            _ if missed => key.outcome = Outcome::Miss,
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

    pub(crate) async fn settle(&mut self) {
        while !self.try_settle() {
            let f = self
                .fragments
                .iter()
                .position(|f| !f.processed)
                .expect("an unsettled fragment");
            self.fragments[f].part.settle().await;
        }
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
                if key.missed != 0 && pool.config().warmup {
                    warm_up(pool, self.client, key, &reply[range.clone()]);
                }
            }
        }
        out.extend_from_slice(b"END\r\n");
        super::count_hits(pool, hits, self.keys.len());
        out.freeze()
    }
}

/// Writes a hit back to the live replicas that missed it, with its flags and the
/// pool's `warmup_ttl` (the original TTL is not known to a proxy).
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
    set.extend_from_slice(b"set ");
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
        let Some(server) = key.replicas.get(i).filter(|_| key.missed & (1 << i) != 0) else {
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

/// One key's meta get or debug over replicas: the next live replica is asked when
/// one fails or (meta get with `failover_on_miss`) misses.
pub(crate) struct Failover {
    pool: Rc<PoolRt>,
    client: ClientId,
    bytes: Bytes,
    quiet: bool,
    on_miss: bool,
    replicas: Replicas,
    /// Index in `replicas` asked now; `None` when it is the gutter.
    at: Option<usize>,
    part: Part,
    done: Option<Reply>,
    count: Count,
}

impl Failover {
    fn start(
        client: ClientId,
        pool: &Rc<PoolRt>,
        req: &Request,
        bytes: Bytes,
        on_miss: bool,
    ) -> Option<Failover> {
        let mut decoded = [0u8; MAX_KEY_LEN];
        let replicas = pool.replicas(placement_key(req, &bytes, &mut decoded));
        let bytes = match req.quiet {
            true => with_noop(&bytes),
            false => bytes,
        };
        let at = live_from(pool, &replicas, 0);
        let part = match at {
            Some(i) => send(pool, replicas.get(i)?, client, bytes.clone(), req.quiet),
            None => {
                let (gutter, server) =
                    gutter::route(pool, placement_key(req, &bytes, &mut decoded))?;
                pool.pool_stats().add(PoolCounter::Guttered, 1);
                send(&gutter, server, client, bytes.clone(), req.quiet)
            }
        };
        Some(Failover {
            pool: pool.clone(),
            client,
            bytes,
            quiet: req.quiet,
            on_miss,
            replicas,
            at,
            part,
            done: None,
            count: if req.command == Command::MetaGet {
                Count::MetaGet
            } else {
                Count::Nothing
            },
        })
    }

    fn is_miss(&self, reply: &[u8]) -> bool {
        match self.quiet {
            true => reply == b"MN\r\n",
            false => reply.starts_with(b"EN"),
        }
    }

    pub(crate) fn try_settle(&mut self) -> bool {
        while self.done.is_none() {
            if !self.part.try_settle() {
                return false;
            }
            let reply = self.part.take();
            let retry = failed_reply(&reply)
                || (self.on_miss && reply.as_ref().is_ok_and(|r| self.is_miss(r)));
            let next = self
                .at
                .and_then(|at| live_from(&self.pool, &self.replicas, at + 1));
            match next {
                Some(i) if retry => {
                    self.at = Some(i);
                    self.pool.pool_stats().add(PoolCounter::ReplicaFailovers, 1);
                    let server = self.replicas.get(i).expect("a replica");
                    self.part = send(
                        &self.pool,
                        server,
                        self.client,
                        self.bytes.clone(),
                        self.quiet,
                    );
                }
                _ => self.done = Some(reply),
            }
        }
        true
    }

    pub(crate) async fn settle(&mut self) {
        while !self.try_settle() {
            self.part.settle().await;
        }
    }

    pub(crate) fn finish(self) -> Bytes {
        match self.done.unwrap_or(Err(BackendError::Closed)) {
            Ok(mut reply) => {
                if self.quiet {
                    reply.truncate(reply.len().saturating_sub(b"MN\r\n".len()));
                }
                count_reply(&self.pool, self.count, &reply);
                reply
            }
            Err(e) => {
                self.pool.pool_stats().add(PoolCounter::ForwardError, 1);
                self.pool.server_failed(&e);
                e.memcache_reply()
            }
        }
    }
}

/// A request with an `mn` after it (quiet meta: the reply runs up to `MN`).
fn with_noop(bytes: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(bytes.len() + 4);
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"mn\r\n");
    out.freeze()
}

fn send(pool: &PoolRt, server: ServerId, client: ClientId, bytes: Bytes, until_noop: bool) -> Part {
    Part::new(match until_noop {
        true => pool.send_until_noop(server, client, bytes),
        false => pool.send(server, client, bytes, true),
    })
}

/// A write to every live replica (or, for `cas`, to the first, then set on the
/// others once it stored).
pub(crate) struct Write {
    pool: Rc<PoolRt>,
    client: ClientId,
    /// In replica order.
    parts: Vec<Part>,
    /// `noreply`: the client gets nothing (the result is still needed to propagate).
    silent: bool,
    quiet: bool,
    propagate: Option<Propagate>,
}

/// A successful `cas` (or meta set with `C`) repeated on the other replicas as a
/// plain set, so they hold the same value.
struct Propagate {
    set: Bytes,
    to: Vec<ServerId>,
    /// The reply that means it stored.
    stored: &'static [u8],
}

fn write(
    client: ClientId,
    pool: &Rc<PoolRt>,
    req: &Request,
    bytes: Bytes,
    queue: &mut VecDeque<Pending>,
) {
    let mut decoded = [0u8; MAX_KEY_LEN];
    let replicas = pool.replicas(placement_key(req, &bytes, &mut decoded));
    let live: Vec<ServerId> = replicas.servers().filter(|&s| pool.is_live(s)).collect();
    if live.is_empty() {
        return to_gutter(client, pool, req, bytes, queue);
    }
    let cas_like = req.command == Command::Cas
        || (req.command == Command::MetaSet && meta_has_cas(&bytes, req));
    if cas_like {
        let set = propagation(req, &bytes);
        let (send_bytes, _) = forwardable(req, bytes);
        let send_bytes = if req.quiet {
            with_noop(&send_bytes)
        } else {
            send_bytes
        };
        let part = send(pool, live[0], client, send_bytes, req.quiet);
        queue.push_back(Pending::Write(Box::new(Write {
            pool: pool.clone(),
            client,
            parts: vec![part],
            silent: req.noreply,
            quiet: req.quiet,
            propagate: set.map(|set| Propagate {
                set,
                to: live[1..].to_vec(),
                stored: if req.command == Command::Cas {
                    b"STORED\r\n"
                } else {
                    b"HD"
                },
            }),
        })));
        return;
    }
    let (bytes, want) = forwardable(req, bytes);
    if !want {
        for &server in &live {
            pool.send(server, client, bytes.clone(), false);
        }
        return;
    }
    let bytes = if req.quiet { with_noop(&bytes) } else { bytes };
    let parts = live
        .iter()
        .map(|&server| send(pool, server, client, bytes.clone(), req.quiet))
        .collect();
    queue.push_back(Pending::Write(Box::new(Write {
        pool: pool.clone(),
        client,
        parts,
        silent: false,
        quiet: req.quiet,
        propagate: None,
    })));
}

/// Every replica of the key is ejected: the gutter pool takes the write, with its
/// TTL capped, or the client hears that no server is live.
fn to_gutter(
    client: ClientId,
    pool: &Rc<PoolRt>,
    req: &Request,
    bytes: Bytes,
    queue: &mut VecDeque<Pending>,
) {
    let mut decoded = [0u8; MAX_KEY_LEN];
    let Some((gutter, server)) = gutter::route(pool, placement_key(req, &bytes, &mut decoded))
    else {
        return no_server(pool, req.noreply, queue);
    };
    pool.pool_stats().add(PoolCounter::Guttered, 1);
    let ttl = pool.config().gutter_ttl;
    let bytes = match req.command {
        c if c.is_storage() && c != Command::MetaSet => {
            gutter::cap_token(&bytes, req.line_len, 3, ttl)
        }
        Command::Touch => gutter::cap_token(&bytes, req.line_len, 2, ttl),
        Command::MetaSet => gutter::cap_meta_ttl(&bytes, req.line_len, ttl),
        _ => bytes,
    };
    // The exptime was rewritten on the line, so the noreply span must be found anew.
    let req = match cashew_protocol::memcache::parse_request(&bytes, None) {
        cashew_protocol::memcache::Parsed::Request(r) => r,
        _ => return no_server(pool, req.noreply, queue),
    };
    let (bytes, want) = forwardable(&req, bytes);
    if req.quiet {
        let part = Part::new(gutter.send_until_noop(server, client, with_noop(&bytes)));
        return queue.push_back(Pending::Quiet {
            part,
            count: Count::Nothing,
        });
    }
    let rx = gutter.send(server, client, bytes, want);
    if want {
        queue.push_back(Pending::Single {
            part: Part::new(rx),
            count: Count::Nothing,
        });
    }
}

/// A meta set carries a CAS (`C` flag).
fn meta_has_cas(bytes: &[u8], req: &Request) -> bool {
    bytes[..req.line_len]
        .split(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .filter(|t| !t.is_empty())
        .skip(3)
        .any(|t| t[0] == b'C')
}

/// The plain set that repeats a `cas` or CAS meta set on the other replicas.
fn propagation(req: &Request, bytes: &[u8]) -> Option<Bytes> {
    let line_end = bytes[..req.line_len]
        .iter()
        .rposition(|&b| b != b'\r' && b != b'\n')
        .map_or(0, |p| p + 1);
    let tokens: Vec<&[u8]> = bytes[..line_end]
        .split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .collect();
    let mut set = BytesMut::with_capacity(bytes.len());
    if req.command == Command::Cas {
        // cas <key> <flags> <exptime> <bytes> <unique> [noreply]
        set.extend_from_slice(b"set");
        for t in tokens.get(1..5)? {
            set.extend_from_slice(b" ");
            set.extend_from_slice(t);
        }
    } else {
        // ms <key> <datalen> <flags>: keep what the stored item is (TTL, client
        // flags, base64 key), drop the CAS, mode and what only shapes the reply.
        set.extend_from_slice(b"ms");
        for (i, t) in tokens.iter().enumerate().skip(1) {
            if i < 3 || matches!(t[0], b'T' | b'F' | b'b') {
                set.extend_from_slice(b" ");
                set.extend_from_slice(t);
            }
        }
    }
    set.extend_from_slice(b"\r\n");
    set.extend_from_slice(&bytes[req.line_len..req.len]);
    Some(set.freeze())
}

impl Write {
    pub(crate) fn try_settle(&mut self) -> bool {
        try_settle_all(&mut self.parts)
    }

    pub(crate) async fn settle(&mut self) {
        settle_all(&mut self.parts).await
    }

    pub(crate) fn finish(mut self) -> Bytes {
        let mut first_failure = None;
        let mut chosen = None;
        for part in &mut self.parts {
            match part.take() {
                Ok(reply) if !reply.starts_with(b"SERVER_ERROR") => {
                    chosen = Some(reply);
                    break;
                }
                Ok(reply) => {
                    first_failure.get_or_insert(Ok(reply));
                }
                Err(e) => {
                    first_failure.get_or_insert(Err(e));
                }
            }
        }
        let reply = match (chosen, first_failure) {
            (Some(reply), _) => reply,
            (None, Some(Ok(server_error))) => server_error,
            (None, failure) => {
                self.pool.pool_stats().add(PoolCounter::ForwardError, 1);
                let e = match failure {
                    Some(Err(e)) => e,
                    _ => BackendError::NoServer,
                };
                self.pool.server_failed(&e);
                e.memcache_reply()
            }
        };
        if let Some(p) = &self.propagate {
            if reply.starts_with(p.stored) {
                for &server in &p.to {
                    if self.pool.is_live(server) {
                        self.pool.send(server, self.client, p.set.clone(), false);
                    }
                }
            }
        }
        match (self.silent, self.quiet) {
            (true, _) => Bytes::new(),
            (false, true) => {
                let mut reply = reply;
                reply.truncate(reply.len().saturating_sub(b"MN\r\n".len()));
                reply
            }
            (false, false) => reply,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cashew_protocol::memcache::{parse_request, Parsed};

    fn request(bytes: &[u8]) -> Request {
        match parse_request(bytes, None) {
            Parsed::Request(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_cas_is_repeated_as_a_set() {
        let bytes = b"cas k 5 100 2 12345 noreply\r\nhi\r\n";
        let set = propagation(&request(bytes), bytes).unwrap();
        assert_eq!(&set[..], b"set k 5 100 2\r\nhi\r\n");
    }

    #[test]
    fn a_cas_meta_set_is_repeated_as_a_plain_one() {
        let bytes = b"ms k 2 C99 T60 F3 q O1 MS\r\nhi\r\n";
        let req = request(bytes);
        assert!(meta_has_cas(bytes, &req));
        let set = propagation(&req, bytes).unwrap();
        assert_eq!(&set[..], b"ms k 2 T60 F3\r\nhi\r\n");
        assert!(!meta_has_cas(
            b"ms k 2 T60\r\nhi\r\n",
            &request(b"ms k 2 T60\r\nhi\r\n")
        ));
    }
}
