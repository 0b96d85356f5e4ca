//! Writes to every live replica, `cas` on the first then propagated, and writes
//! of keys whose replicas are all ejected to the gutter pool.

use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use cashew_protocol::memcache::{Command, Request, MAX_KEY_LEN};

use super::super::{forwardable, no_server, Count, Pending};
use super::{placement_key, send, with_noop};
use crate::proxy::client::{poll_settle_all, try_settle_all, Part};
use crate::proxy::gutter::{self};
use crate::proxy::handoff::BackendError;
use crate::proxy::ids::{ClientId, ServerId};
use crate::proxy::pool::{PoolRt, Replicas};
use crate::state::counters::PoolCounter;

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

pub(super) fn write(
    client: ClientId,
    pool: &Rc<PoolRt>,
    req: &Request,
    bytes: Bytes,
    queue: &mut VecDeque<Pending>,
) {
    let mut decoded = [0u8; MAX_KEY_LEN];
    let replicas = pool.replicas(placement_key(req, &bytes, &mut decoded));
    forget_previous(client, pool, req, &bytes, &replicas);
    let live: Vec<ServerId> = replicas.current().filter(|&s| pool.is_live(s)).collect();
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

/// While keys move, where the previous placement kept the key hears of a write:
/// a text delete or touch as sent, anything else that stores, changes or deletes a
/// value as a delete,
/// so that no later look there finds the value it replaced.
fn forget_previous(
    client: ClientId,
    pool: &PoolRt,
    req: &Request,
    bytes: &Bytes,
    replicas: &Replicas,
) {
    let mut previous = replicas.previous().peekable();
    if previous.peek().is_none() {
        return;
    }
    let request = match req.command {
        Command::Delete | Command::Touch => forwardable(req, bytes.clone()).0,
        // A meta delete too becomes a plain one: it may be quiet, and its reply is
        // not wanted anyway.
        _ => {
            let key = &bytes[req.key.clone()];
            let mut delete = BytesMut::with_capacity(key.len() + 12);
            match req.key_base64 {
                true => {
                    delete.extend_from_slice(b"md ");
                    delete.extend_from_slice(key);
                    delete.extend_from_slice(b" b\r\n");
                }
                false => {
                    delete.extend_from_slice(b"delete ");
                    delete.extend_from_slice(key);
                    delete.extend_from_slice(b"\r\n");
                }
            }
            delete.freeze()
        }
    };
    for server in previous {
        pool.send(server, client, request.clone(), false);
    }
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

    pub(crate) fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        poll_settle_all(&mut self.parts, cx)
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
