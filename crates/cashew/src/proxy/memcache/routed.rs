//! `routes`: a key that begins with a routed prefix is served by the pool its
//! route names (its hash, distribution, replicas and limits); a retrieval whose
//! keys go to several pools is split per pool and merged back in key order.

use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use cashew_protocol::memcache::{
    base64, keys, parse_request, Parsed, Request, Shape, ValueBlocks, MAX_KEY_LEN,
};

use super::{reply_bytes, Client, Pending};
use crate::proxy::client::PendingReply;
use crate::proxy::pool::PoolRt;

/// A retrieval split over pools: one part per pool, each a retrieval of its keys.
pub(crate) struct RoutedGet {
    request: Bytes,
    keys: std::ops::Range<usize>,
    /// For each key of the request, in order, the part it went to.
    order: Vec<u16>,
    /// Each part's pool (where its hits are counted) and pending reply.
    parts: Vec<(Rc<PoolRt>, Pending)>,
}

impl Client {
    /// Sends a request of a pool with routes: each key to the pool its prefix
    /// names, or to this one.
    pub(super) fn dispatch_routed(
        &self,
        pool: &Rc<PoolRt>,
        req: &Request,
        bytes: Bytes,
        queue: &mut VecDeque<Pending>,
    ) {
        if req.command.shape() == Shape::SingleKey {
            let mut decoded = [0u8; MAX_KEY_LEN];
            let key = &bytes[req.key.clone()];
            let key = match req.key_base64 {
                true => base64::decode(key, &mut decoded).map_or(key, |n| &decoded[..n]),
                false => key,
            };
            let target = pool.routed(key).unwrap_or_else(|| pool.clone());
            return self.send(&target, req, bytes, queue);
        }
        // A retrieval: its keys grouped by pool, in the order first seen.
        let mut groups: Vec<(Rc<PoolRt>, BytesMut)> = Vec::new();
        let mut order = Vec::with_capacity(req.nkeys as usize);
        let prefix = &bytes[..req.keys.start];
        for key in keys(&bytes, req.keys.clone()) {
            let target = pool.routed(key).unwrap_or_else(|| pool.clone());
            let part = match groups.iter().position(|(p, _)| Rc::ptr_eq(p, &target)) {
                Some(i) => i,
                None => {
                    let mut line = BytesMut::with_capacity(prefix.len() + 64);
                    line.extend_from_slice(prefix);
                    groups.push((target, line));
                    groups.len() - 1
                }
            };
            let line = &mut groups[part].1;
            if line.len() > prefix.len() {
                line.extend_from_slice(b" ");
            }
            line.extend_from_slice(key);
            order.push(part as u16);
        }
        if groups.len() == 1 {
            let (target, _) = groups.pop().expect("one group");
            return self.send(&target, req, bytes, queue);
        }
        let mut parts = Vec::with_capacity(groups.len());
        for (target, mut line) in groups {
            line.extend_from_slice(b"\r\n");
            let line = line.freeze();
            let Parsed::Request(sub) = parse_request(&line, None) else {
                unreachable!("a part of a valid retrieval is one");
            };
            let mut one = VecDeque::new();
            self.send(&target, &sub, line, &mut one);
            let pending = one.pop_front().unwrap_or_else(|| {
                Pending::Ready(Bytes::from_static(b"SERVER_ERROR no reply\r\n"))
            });
            parts.push((target, pending));
        }
        queue.push_back(Pending::Routed(Box::new(RoutedGet {
            request: bytes,
            keys: req.keys.clone(),
            order,
            parts,
        })));
    }
}

impl RoutedGet {
    pub(crate) fn try_settle(&mut self) -> bool {
        let mut all = true;
        for (_, p) in &mut self.parts {
            all &= p.try_settle();
        }
        all
    }

    pub(crate) fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for (_, p) in &mut self.parts {
            std::task::ready!(p.poll_settle(cx));
        }
        Poll::Ready(())
    }

    /// Values in the client's key order, one `END`; an error line of a part is
    /// the reply.
    pub(crate) fn finish(self) -> Bytes {
        let mut replies = Vec::with_capacity(self.parts.len());
        for (pool, pending) in self.parts {
            let reply = reply_bytes(&pool, pending);
            if !(reply.starts_with(b"VALUE ") || reply.starts_with(b"END")) {
                return reply;
            }
            replies.push(reply);
        }
        let mut blocks: Vec<_> = replies
            .iter()
            .map(|r| ValueBlocks::new(r).peekable())
            .collect();
        let mut out = BytesMut::with_capacity(replies.iter().map(Bytes::len).sum());
        for (key, &part) in keys(&self.request, self.keys.clone()).zip(&self.order) {
            let it = &mut blocks[part as usize];
            if let Some(&(block_key, block)) = it.peek() {
                if block_key == key {
                    out.extend_from_slice(block);
                    it.next();
                }
            }
        }
        out.extend_from_slice(b"END\r\n");
        out.freeze()
    }
}
