//! Multi-key commands split over servers (MGET, MSET, DEL, ...) and the replies
//! put back together; and the bytes of every settled reply.

use bytes::Bytes;
use cashew_protocol::resp::{self, array_header, bulk, integer, CommandSpec, Merge, ReplyParse};
use cashew_route::cluster_slot;

use super::{Client, Pending};
use crate::proxy::client::{all_ok, Part};
use crate::proxy::gutter::Target;
use crate::proxy::handoff::BackendError;
use crate::proxy::pool::PoolRt;
use crate::state::counters::PoolCounter;

impl Client {
    /// Splits a multi-key command into one command per server: its keys, merged by
    /// `merge`; without one, its key-value pairs (MSET).
    pub(super) fn split(
        &mut self,
        pool: &PoolRt,
        spec: &CommandSpec,
        bytes: &Bytes,
        merge: Option<Merge>,
    ) -> Pending {
        let step = if merge.is_some() { 1 } else { 2 };
        let groups = (self.argc() - 1) / step;
        let mut targets: Vec<Target> = Vec::new();
        // A cluster takes a multi-key command only when its keys share a slot:
        // there, a command goes to each slot (`slots[i]` is target i's).
        let in_slots = pool.cluster().is_some();
        let mut slots: Vec<u16> = Vec::new();
        // For each group of arguments, in order, the target it goes to.
        let mut order: Vec<u16> = Vec::with_capacity(groups);
        for g in 0..groups {
            let key = self.arg(bytes, 1 + g * step);
            let Some(t) = self.target(pool, key) else {
                return self.no_server(pool);
            };
            let slot = if in_slots { cluster_slot(key) } else { 0 };
            let same =
                |(i, have): (usize, &Target)| have.same(&t) && (!in_slots || slots[i] == slot);
            let index = match targets.iter().enumerate().position(same) {
                Some(i) => i,
                None => {
                    targets.push(t);
                    slots.push(slot);
                    targets.len() - 1
                }
            };
            order.push(index as u16);
        }
        let effect = spec.effect;
        if targets.len() == 1 {
            let keys: Vec<&[u8]> = (0..groups).map(|g| self.arg(bytes, 1 + g * step)).collect();
            return Pending::Single(self.send_keyed(
                pool,
                &targets[0],
                bytes.clone(),
                effect,
                &keys,
            ));
        }

        // One command per target, with its groups in the client's order.
        let command_name = self.arg(bytes, 0);
        let parts: Vec<Part> = targets
            .iter()
            .enumerate()
            .map(|(t, target)| {
                let mine: Vec<usize> = (0..groups).filter(|&g| order[g] as usize == t).collect();
                let mut out = Vec::with_capacity(64 * mine.len());
                array_header(&mut out, 1 + mine.len() * step);
                bulk(&mut out, command_name);
                for &g in &mine {
                    for a in 0..step {
                        bulk(&mut out, self.arg(bytes, 1 + g * step + a));
                    }
                }
                let keys: Vec<&[u8]> = mine
                    .iter()
                    .map(|&g| self.arg(bytes, 1 + g * step))
                    .collect();
                self.send_keyed(pool, target, out.into(), effect, &keys)
            })
            .collect();
        pool.pool_stats()
            .add(PoolCounter::Fragments, parts.len() as u64);
        match merge {
            Some(Merge::Values) => Pending::Mget { parts, order },
            Some(Merge::Sum) => Pending::Sum(parts),
            None => Pending::AllOk(parts),
        }
    }

    pub(super) fn reply_bytes(&self, pool: &PoolRt, pending: Pending) -> Bytes {
        match pending {
            Pending::Ready(b) => b,
            Pending::Quit => Bytes::new(),
            Pending::Single(mut part) | Pending::Pinned(mut part, _) => {
                part.take().unwrap_or_else(|e| self.failed(pool, e))
            }
            Pending::Mget { mut parts, order } => self.merge_mget(pool, &mut parts, &order),
            Pending::Sum(mut parts) => {
                let mut total: i64 = 0;
                for p in &mut parts {
                    let reply = match p.take() {
                        Ok(r) => r,
                        Err(e) => return self.failed(pool, e),
                    };
                    match std::str::from_utf8(&reply[1..reply.len() - 2])
                        .ok()
                        .and_then(|n| n.parse::<i64>().ok())
                    {
                        Some(n) if reply[0] == b':' => total += n,
                        _ => return reply,
                    }
                }
                let mut out = Vec::new();
                integer(&mut out, total);
                out.into()
            }
            Pending::AllOk(mut parts) => all_ok(&mut parts, b"+OK\r\n", |e| self.failed(pool, e)),
            Pending::Keyspace(gather) => self.gathered(pool, *gather),
            Pending::EveryServer(combine, mut parts) => self.combined(pool, combine, &mut parts),
            Pending::PubSub(confirmations) => confirmations.finish().0,
            // The server's answer is not the client's: only its version is (and
            // without a server, the fallback version is reported).
            Pending::AfterVersion { reply, .. } => self.versioned(pool, reply),
        }
    }

    pub(super) fn failed(&self, pool: &PoolRt, e: BackendError) -> Bytes {
        pool.pool_stats().add(PoolCounter::ForwardError, 1);
        pool.server_failed(&e);
        e.redis_reply()
    }

    /// One array of values in the client's key order, from each server's array.
    pub(super) fn merge_mget(&self, pool: &PoolRt, parts: &mut [Part], order: &[u16]) -> Bytes {
        let mut replies = Vec::with_capacity(parts.len());
        for p in parts.iter_mut() {
            match p.take() {
                Ok(r) if r.starts_with(b"*") => replies.push(r),
                Ok(error_reply) => return error_reply,
                Err(e) => return self.failed(pool, e),
            }
        }
        // Where the next element of each server's array starts.
        let mut cursors: Vec<usize> = replies
            .iter()
            .map(|r| memchr::memchr(b'\n', r).map_or(r.len(), |nl| nl + 1))
            .collect();
        let mut out = Vec::with_capacity(replies.iter().map(Bytes::len).sum::<usize>() + 16);
        array_header(&mut out, order.len());
        for &part in order {
            let (reply, at) = (&replies[part as usize], &mut cursors[part as usize]);
            match resp::parse_reply(&reply[*at..]) {
                ReplyParse::Complete(n) => {
                    out.extend_from_slice(&reply[*at..*at + n]);
                    *at += n;
                }
                // A server answered with fewer values than keys: never from Redis.
                _ => self.null(&mut out),
            }
        }
        out.into()
    }
}
