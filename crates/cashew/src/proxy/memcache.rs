//! A memcached client connection: requests are parsed as they arrive, sent to their
//! servers at once (pipelined), and replies are written back strictly in request order.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};
use cashew_protocol::memcache::{
    keys, parse_request, Command, Parsed, Request, Shape, ValueBlocks,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use super::backend::{BackendError, Reply};
use super::pool::PoolRt;
use crate::stats::{pool as ps, proxy as px};

/// Replies a client may have outstanding before cashew stops reading its requests.
const MAX_PENDING: usize = 1024;
const READ_CHUNK: usize = 16 * 1024;
const SHRINK_ABOVE: usize = 1 << 20;
const WRITE_SLICES: usize = 64;

/// One server's part of a request.
struct Part {
    rx: Option<oneshot::Receiver<Reply>>,
    reply: Option<Reply>,
}

impl Part {
    fn new(rx: Option<oneshot::Receiver<Reply>>) -> Self {
        Part { rx, reply: None }
    }

    /// Waits for the reply. Cancel-safe: a reply is stored the moment it arrives.
    async fn settle(&mut self) {
        if self.reply.is_none() {
            let reply = match self.rx.as_mut() {
                Some(rx) => rx.await.unwrap_or(Err(BackendError::Closed)),
                None => Err(BackendError::Closed),
            };
            self.reply = Some(reply);
        }
    }

    fn take(&mut self) -> Reply {
        self.reply.take().unwrap_or(Err(BackendError::Closed))
    }
}

/// A multi-key retrieval split over several servers.
struct MultiGet {
    request: Bytes,
    keys: std::ops::Range<usize>,
    /// For each key of the request, in order, the part it went to.
    order: Vec<u16>,
    parts: Vec<Part>,
}

enum Pending {
    Ready(Bytes),
    /// One server's reply, passed through. `keys` counts keys of a retrieval.
    Single {
        part: Part,
        keys: u32,
    },
    Multi(Box<MultiGet>),
    Broadcast(Vec<Part>),
    Quit,
}

impl Pending {
    fn is_settled(&self) -> bool {
        match self {
            Pending::Ready(_) | Pending::Quit => true,
            Pending::Single { part, .. } => part.reply.is_some(),
            Pending::Multi(m) => m.parts.iter().all(|p| p.reply.is_some()),
            Pending::Broadcast(parts) => parts.iter().all(|p| p.reply.is_some()),
        }
    }

    async fn settle(&mut self) {
        match self {
            Pending::Ready(_) | Pending::Quit => {}
            Pending::Single { part, .. } => part.settle().await,
            Pending::Multi(m) => {
                for p in &mut m.parts {
                    p.settle().await;
                }
            }
            Pending::Broadcast(parts) => {
                for p in parts {
                    p.settle().await;
                }
            }
        }
    }
}

pub async fn serve<R, W>(mut reader: R, mut writer: W, pool: Rc<PoolRt>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut client = Client {
        id: pool.new_client_id(),
        pool,
        pending: VecDeque::new(),
    };
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut out: VecDeque<Bytes> = VecDeque::new();
    let mut skip = 0usize;
    let mut reading = true;
    let mut closing = false;
    let max_value = client.pool.config().max_value_size as usize;

    loop {
        // Take every complete request that is buffered.
        while reading && client.pending.len() < MAX_PENDING {
            if skip > 0 {
                let n = skip.min(rbuf.len());
                rbuf.advance(n);
                skip -= n;
                if skip > 0 {
                    break;
                }
            }
            match parse_request(&rbuf, max_value) {
                Parsed::Incomplete => break,
                Parsed::Invalid(bad) => {
                    let consumed = bad.consume.min(rbuf.len());
                    rbuf.advance(consumed);
                    skip = bad.skip + (bad.consume - consumed);
                    if !bad.noreply {
                        client
                            .pending
                            .push_back(Pending::Ready(Bytes::from_static(bad.reply)));
                    }
                    if bad.close {
                        client.pool.pool_stats().add(ps::CLIENT_ERR, 1);
                        reading = false;
                    }
                }
                Parsed::Request(req) => {
                    let bytes = rbuf.split_to(req.len).freeze();
                    if req.command == Command::Quit {
                        client.pending.push_back(Pending::Quit);
                        reading = false;
                    } else {
                        client.dispatch(&req, bytes);
                    }
                }
            }
        }
        if rbuf.is_empty() && rbuf.capacity() > SHRINK_ABOVE {
            rbuf = BytesMut::with_capacity(READ_CHUNK);
        }

        // Move finished replies, in order, to the output.
        while client.pending.front().is_some_and(Pending::is_settled) {
            match client.pending.pop_front() {
                Some(Pending::Quit) => {
                    client.pending.clear();
                    closing = true;
                }
                Some(p) => out.push_back(client.finish(p)),
                None => {}
            }
        }

        if out.is_empty() && (closing || (!reading && client.pending.is_empty())) {
            break;
        }

        if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
            rbuf.reserve(READ_CHUNK);
        }
        let can_read = reading && client.pending.len() < MAX_PENDING;
        let waiting = client.pending.front().is_some_and(|p| !p.is_settled());
        tokio::select! {
            read = reader.read_buf(&mut rbuf), if can_read => match read {
                Ok(0) => {
                    client.pool.pool_stats().add(ps::CLIENT_EOF, 1);
                    reading = false;
                }
                Ok(_) => {}
                Err(_) => {
                    client.pool.pool_stats().add(ps::CLIENT_ERR, 1);
                    break;
                }
            },
            written = write_some(&mut writer, &mut out), if !out.is_empty() => {
                if written.is_err() {
                    client.pool.pool_stats().add(ps::CLIENT_ERR, 1);
                    break;
                }
            }
            () = async { client.pending.front_mut().expect("waiting").settle().await }, if waiting => {}
        }
    }
    let _ = writer.shutdown().await;
}

/// Writes as much of `out` as the socket takes in one call.
async fn write_some<W: AsyncWrite + Unpin>(w: &mut W, out: &mut VecDeque<Bytes>) -> io::Result<()> {
    let n = if out.len() == 1 {
        w.write(&out[0]).await?
    } else {
        let slices: Vec<IoSlice<'_>> = out
            .iter()
            .take(WRITE_SLICES)
            .map(|b| IoSlice::new(b))
            .collect();
        w.write_vectored(&slices).await?
    };
    if n == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    let mut left = n;
    while left > 0 {
        let front = out.front_mut().expect("written bytes came from out");
        if front.len() <= left {
            left -= front.len();
            out.pop_front();
        } else {
            front.advance(left);
            left = 0;
        }
    }
    Ok(())
}

struct Client {
    pool: Rc<PoolRt>,
    id: usize,
    pending: VecDeque<Pending>,
}

impl Client {
    fn dispatch(&mut self, req: &Request, bytes: Bytes) {
        let counters = self.pool.proxy_stats();
        match req.command {
            c if c.is_storage() => counters.add(px::CMD_SET, 1),
            Command::Touch => counters.add(px::CMD_TOUCH, 1),
            _ => {}
        }
        match req.command.shape() {
            Shape::Local => {
                let reply = match req.command {
                    Command::Version => {
                        Bytes::from(format!("VERSION {}\r\n", env!("CARGO_PKG_VERSION")))
                    }
                    _ => self.stats_reply(),
                };
                self.pending.push_back(Pending::Ready(reply));
            }
            Shape::SingleKey => {
                let Some(server) = self.pool.route(&bytes[req.key.clone()]) else {
                    return self.no_server(req.noreply);
                };
                let (bytes, want) = forwardable(req, bytes);
                let rx = self.pool.send(server, self.id, bytes, want);
                if want {
                    self.pending.push_back(Pending::Single {
                        part: Part::new(rx),
                        keys: 0,
                    });
                }
            }
            Shape::Retrieval => self.retrieval(req, bytes),
            Shape::Broadcast => {
                let (bytes, want) = forwardable(req, bytes);
                let live: Vec<usize> = (0..self.pool.server_count())
                    .filter(|&s| self.pool.is_live(s))
                    .collect();
                if live.is_empty() {
                    return self.no_server(req.noreply);
                }
                let parts = live
                    .into_iter()
                    .map(|s| Part::new(self.pool.send(s, self.id, bytes.clone(), want)))
                    .collect();
                if want {
                    self.pending.push_back(Pending::Broadcast(parts));
                }
            }
        }
    }

    fn no_server(&mut self, noreply: bool) {
        self.pool.pool_stats().add(ps::FORWARD_ERROR, 1);
        if !noreply {
            self.pending
                .push_back(Pending::Ready(BackendError::NoServer.memcache_reply()));
        }
    }

    fn retrieval(&mut self, req: &Request, bytes: Bytes) {
        let pool = &self.pool;
        let all_keys = keys(&bytes, req.keys.clone());
        let nkeys = all_keys.clone().count();
        pool.proxy_stats().add(px::CMD_GET, nkeys as u64);

        // Most retrievals touch one server: forward them untouched.
        let Some(first) = pool.route(&bytes[req.key.clone()]) else {
            return self.no_server(false);
        };
        let mut servers = Vec::with_capacity(nkeys);
        servers.push(first);
        let mut split = false;
        for key in all_keys.clone().skip(1) {
            let Some(s) = pool.route(key) else {
                return self.no_server(false);
            };
            split |= s != first;
            servers.push(s);
        }
        if !split {
            let rx = pool.send(first, self.id, bytes.clone(), true);
            self.pending.push_back(Pending::Single {
                part: Part::new(rx),
                keys: nkeys as u32,
            });
            return;
        }

        // One fragment per server: the command prefix, then that server's keys.
        let prefix = &bytes[..req.keys.start];
        let mut fragments: Vec<(usize, BytesMut)> = Vec::new();
        let mut order = Vec::with_capacity(nkeys);
        for (key, &server) in all_keys.zip(&servers) {
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
        pool.pool_stats().add(ps::FRAGMENTS, fragments.len() as u64);
        let parts = fragments
            .into_iter()
            .map(|(server, mut f)| {
                f.extend_from_slice(b"\r\n");
                Part::new(pool.send(server, self.id, f.freeze(), true))
            })
            .collect();
        self.pending.push_back(Pending::Multi(Box::new(MultiGet {
            request: bytes,
            keys: req.keys.clone(),
            order,
            parts,
        })));
    }

    /// The bytes a settled request puts on the client's wire.
    fn finish(&self, pending: Pending) -> Bytes {
        match pending {
            Pending::Ready(b) => b,
            Pending::Quit => Bytes::new(),
            Pending::Single { mut part, keys } => match part.take() {
                Ok(reply) => {
                    let hits = match keys {
                        0 => None,
                        1 => Some(usize::from(reply.starts_with(b"VALUE "))),
                        _ => Some(ValueBlocks::new(&reply).count()),
                    };
                    if let Some(hits) = hits {
                        self.count_hits(hits, keys as usize);
                    }
                    reply
                }
                Err(e) => self.failed(e),
            },
            Pending::Multi(m) => self.merge(*m),
            Pending::Broadcast(mut parts) => {
                for p in &mut parts {
                    match p.take() {
                        Ok(reply) if reply.as_ref() == b"OK\r\n" => {}
                        Ok(reply) => return reply,
                        Err(e) => return self.failed(e),
                    }
                }
                Bytes::from_static(b"OK\r\n")
            }
        }
    }

    fn failed(&self, e: BackendError) -> Bytes {
        self.pool.pool_stats().add(ps::FORWARD_ERROR, 1);
        e.memcache_reply()
    }

    fn count_hits(&self, hits: usize, keys: usize) {
        let counters = self.pool.proxy_stats();
        counters.add(px::GET_HITS, hits as u64);
        counters.add(px::GET_MISSES, keys.saturating_sub(hits) as u64);
    }

    /// Values in the client's key order, one `END`. A failed part fails the request.
    fn merge(&self, mut m: MultiGet) -> Bytes {
        let mut replies = Vec::with_capacity(m.parts.len());
        for p in &mut m.parts {
            match p.take() {
                Ok(r) if r.starts_with(b"VALUE ") || r.starts_with(b"END") => replies.push(r),
                Ok(error_line) => return error_line,
                Err(e) => return self.failed(e),
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
        self.count_hits(hits, m.order.len());
        out.freeze()
    }

    /// The memcached `stats` reply, over all workers.
    fn stats_reply(&self) -> Bytes {
        let registry = &self.pool.registry;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut s = format!(
            "STAT pid {}\r\nSTAT uptime {}\r\nSTAT time {now}\r\nSTAT version {}\r\nSTAT threads {}\r\n",
            std::process::id(),
            registry.uptime(),
            env!("CARGO_PKG_VERSION"),
            registry.workers.len(),
        );
        for (i, name) in px::NAMES.iter().enumerate() {
            s.push_str(&format!("STAT {name} {}\r\n", registry.proxy_total(i)));
        }
        s.push_str("END\r\n");
        Bytes::from(s)
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
