//! One key's meta get or meta debug over replicas, and, while keys move after a
//! reload, over where the previous placement kept the key.

use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use cashew_protocol::memcache::{Command, Request, MAX_KEY_LEN};

use super::super::{count_reply, Count};
use super::{failed_reply, live_from, placement_key, send, with_noop, WARMUP_QUEUE_LIMIT};
use crate::proxy::client::Part;
use crate::proxy::gutter::{self};
use crate::proxy::handoff::{BackendError, Reply};
use crate::proxy::ids::{ClientId, ServerId};
use crate::proxy::pool::{PoolRt, Replicas};
use crate::state::counters::PoolCounter;

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
    /// The key as sent (base64 with `b`), for a write-back.
    key: Bytes,
    base64: bool,
    meta_get: bool,
    /// The miss of the key's own server, answered if its previous one fails.
    miss: Option<Reply>,
}

impl Failover {
    pub(super) fn start(
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
            key: bytes.slice(req.key.clone()),
            base64: req.key_base64,
            meta_get: req.command == Command::MetaGet,
            miss: None,
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
            let failed = failed_reply(&reply);
            let miss = reply.as_ref().is_ok_and(|r| self.is_miss(r));
            let from = self.at.map(|at| at + 1);
            let next = match (failed, miss) {
                (true, _) => from.and_then(|f| live_from(&self.pool, &self.replicas, f)),
                // A key that is moving is looked for on each server that may hold it.
                (false, true) if self.on_miss || self.replicas.has_previous() => {
                    from.and_then(|f| live_from(&self.pool, &self.replicas, f))
                }
                _ => None,
            };
            match next {
                Some(i) => {
                    if miss && !self.on_miss {
                        self.pool.pool_stats().add(PoolCounter::MigrateFallbacks, 1);
                    } else {
                        self.pool.pool_stats().add(PoolCounter::ReplicaFailovers, 1);
                    }
                    if miss && self.miss.is_none() {
                        self.miss = Some(reply);
                    }
                    self.at = Some(i);
                    let server = self.replicas.get(i).expect("a replica");
                    self.part = send(
                        &self.pool,
                        server,
                        self.client,
                        self.bytes.clone(),
                        self.quiet,
                    );
                }
                None if (failed || miss) && self.miss.is_some() => {
                    // Missed where the key belongs, and failed or missed where it
                    // was: the miss it is.
                    self.done = self.miss.take();
                }
                None => {
                    if self.miss.is_some() && self.replicas.has_previous() && !failed {
                        self.moved_hit();
                    }
                    self.done = Some(reply);
                }
            }
        }
        true
    }

    /// A hit after a miss of a moving key: counted, and (meta get) written to the
    /// key's servers now, read whole from the one that had it.
    fn moved_hit(&self) {
        self.pool.pool_stats().add(PoolCounter::MigrateHits, 1);
        let (Some(at), true) = (self.at, self.meta_get) else {
            return;
        };
        let Some(from) = self.replicas.get(at) else {
            return;
        };
        let to: Vec<ServerId> = self
            .replicas
            .current()
            .filter(|&s| s != from && self.pool.is_live(s))
            .collect();
        write_back(
            self.pool.clone(),
            self.client,
            self.key.clone(),
            self.base64,
            from,
            to,
        );
    }

    pub(crate) fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while !self.try_settle() {
            std::task::ready!(self.part.poll_settle(cx));
        }
        Poll::Ready(())
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

/// Reads a key whole (value, client flags, remaining TTL) from `from` and adds it
/// to `to`, off the client's path: an `add`, so a write that got there first wins,
/// living no longer than `warmup_ttl`.
fn write_back(
    pool: Rc<PoolRt>,
    client: ClientId,
    key: Bytes,
    base64: bool,
    from: ServerId,
    to: Vec<ServerId>,
) {
    if to.is_empty() {
        return;
    }
    let b = if base64 { " b" } else { "" };
    let mut get = BytesMut::with_capacity(key.len() + 16);
    get.extend_from_slice(b"mg ");
    get.extend_from_slice(&key);
    get.extend_from_slice(format!(" v f t{b}\r\n").as_bytes());
    let mut part = Part::new(pool.send(from, client, get.freeze(), true));
    tokio::task::spawn_local(async move {
        std::future::poll_fn(|cx| part.poll_settle(cx)).await;
        let Ok(reply) = part.take() else {
            return;
        };
        let Some(item) = MetaItem::parse(&reply) else {
            return;
        };
        let ttl = match item.ttl {
            Some(t) if t > 0 => (t as u64).min(pool.config().warmup_ttl),
            _ => pool.config().warmup_ttl,
        };
        let mut set = BytesMut::with_capacity(reply.len() + key.len() + 32);
        set.extend_from_slice(b"ms ");
        set.extend_from_slice(&key);
        set.extend_from_slice(
            format!(" {} F{} T{ttl} ME{b}\r\n", item.data.len(), item.flags).as_bytes(),
        );
        set.extend_from_slice(item.data);
        set.extend_from_slice(b"\r\n");
        let set = set.freeze();
        for server in to {
            if pool.queued(server) >= WARMUP_QUEUE_LIMIT {
                pool.pool_stats().add(PoolCounter::WarmupsDropped, 1);
                continue;
            }
            pool.send(server, client, set.clone(), false);
            pool.pool_stats().add(PoolCounter::Warmups, 1);
        }
    });
}

/// A meta get's `VA <len> f<flags> t<ttl>` reply.
struct MetaItem<'r> {
    data: &'r [u8],
    flags: u32,
    /// Seconds left; `None` or -1 when it never expires.
    ttl: Option<i64>,
}

impl<'r> MetaItem<'r> {
    fn parse(reply: &'r [u8]) -> Option<MetaItem<'r>> {
        let nl = memchr::memchr(b'\n', reply)?;
        let line = std::str::from_utf8(&reply[..nl]).ok()?.trim_end();
        let mut words = line.split(' ');
        if words.next()? != "VA" {
            return None;
        }
        let len: usize = words.next()?.parse().ok()?;
        let (mut flags, mut ttl) = (0, None);
        for w in words {
            match w.split_at(1) {
                ("f", n) => flags = n.parse().ok()?,
                ("t", n) => ttl = n.parse().ok(),
                _ => {}
            }
        }
        let data = reply.get(nl + 1..nl + 1 + len)?;
        Some(MetaItem { data, flags, ttl })
    }
}

#[cfg(test)]
mod tests {
    use super::MetaItem;

    #[test]
    fn a_meta_get_reply_gives_value_flags_and_ttl() {
        let item = MetaItem::parse(b"VA 5 f7 t120\r\nhello\r\n").unwrap();
        assert_eq!(
            (item.data, item.flags, item.ttl),
            (&b"hello"[..], 7, Some(120))
        );
        let item = MetaItem::parse(b"VA 2 t-1 f0\r\nhi\r\n").unwrap();
        assert_eq!(item.ttl, Some(-1));
        assert!(MetaItem::parse(b"EN\r\n").is_none());
        assert!(MetaItem::parse(b"VA 9 f1\r\nshort\r\n").is_none());
    }
}
