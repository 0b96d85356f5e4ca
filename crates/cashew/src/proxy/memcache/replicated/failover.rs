//! One key's meta get or meta debug over replicas.

use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cashew_protocol::memcache::{Command, Request, MAX_KEY_LEN};

use super::super::{count_reply, Count};
use super::{failed_reply, live_from, placement_key, send, with_noop};
use crate::proxy::client::Part;
use crate::proxy::gutter::{self};
use crate::proxy::handoff::{BackendError, Reply};
use crate::proxy::ids::ClientId;
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
