//! memcached pools with stable placement (`replicas`, `gutter`): every key is kept
//! on its replicas, the servers `PoolRt::replicas` names. Reads go to the first live
//! replica and fall through to the next on an error, a timeout or (with
//! `failover_on_miss`) a miss, within the same client request; `warmup` writes such
//! a hit back to the replicas that missed it. Writes go to every live replica and
//! answer with the first replica's reply, or the first success when it failed.
//! `cas` is checked on the first live replica only (its unique is that server's),
//! and when it stores, the value is set on the other replicas too. Keys whose
//! replicas are all ejected go to the gutter pool.

mod failover;
mod retrieval;
mod write;

pub(crate) use failover::Failover;
pub(crate) use retrieval::Retrieval;
pub(crate) use write::Write;

use std::collections::VecDeque;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use cashew_protocol::memcache::{base64, Command, Request, MAX_KEY_LEN};

use super::{no_server, Pending};
use crate::proxy::client::Part;
use crate::proxy::gutter::Target;
use crate::proxy::handoff::Reply;
use crate::proxy::ids::{ClientId, ServerId};
use crate::proxy::pool::{PoolRt, Replicas};

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
        _ => write::write(client, pool, req, bytes, queue),
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
