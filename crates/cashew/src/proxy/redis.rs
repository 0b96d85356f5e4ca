//! The redis protocol (RESP2) for clients: commands are forwarded by their first
//! key, multi-key MGET/DEL/UNLINK/TOUCH/EXISTS/MSET are split per server and merged,
//! connection-level commands are answered here, and every request gets a reply.

use std::collections::VecDeque;
use std::ops::Range;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use cashew_protocol::resp::{
    self, array_header, bulk, error, integer, lookup, null_bulk, simple, CommandKind, Parsed,
    ReplyParse, COMMANDS,
};

use super::client::{
    all_ok, settle_all, try_settle_all, Part, PendingReply, Protocol, MAX_PENDING,
};
use super::handoff::BackendError;
use super::pool::{PoolRt, PoolSlot};
use crate::stats::{pool as ps, proxy as px};

/// The Redis version whose RESP2 behaviour cashew follows (reported by HELLO and INFO).
const REDIS_COMPAT_VERSION: &str = "7.0.0";

pub enum Pending {
    Ready(Bytes),
    /// One server's reply, passed through.
    Single(Part),
    /// MGET over several servers: `order[i]` is the part that holds key `i`.
    Mget {
        parts: Vec<Part>,
        order: Vec<u16>,
    },
    /// DEL, UNLINK, TOUCH, EXISTS over several servers: the integer replies summed.
    Sum(Vec<Part>),
    /// MSET over several servers: `+OK` when every part says so.
    AllOk(Vec<Part>),
    /// QUIT: `+OK`, then close.
    Quit,
}

impl PendingReply for Pending {
    fn try_settle(&mut self) -> bool {
        match self {
            Pending::Ready(_) | Pending::Quit => true,
            Pending::Single(part) => part.try_settle(),
            Pending::Mget { parts, .. } | Pending::Sum(parts) | Pending::AllOk(parts) => {
                try_settle_all(parts)
            }
        }
    }

    async fn settle(&mut self) {
        match self {
            Pending::Ready(_) | Pending::Quit => {}
            Pending::Single(part) => part.settle().await,
            Pending::Mget { parts, .. } | Pending::Sum(parts) | Pending::AllOk(parts) => {
                settle_all(parts).await
            }
        }
    }
}

/// A redis client connection.
pub struct Client {
    slot: Rc<PoolSlot>,
    id: usize,
    /// Argument ranges of the request being dispatched, reused between requests.
    args: Vec<Range<usize>>,
    /// Parse again only once the input holds this many bytes (a big bulk arriving).
    needed: usize,
    authenticated: bool,
    name: Option<Bytes>,
    done: bool,
}

impl Client {
    pub fn new(slot: Rc<PoolSlot>, id: usize) -> Client {
        let authenticated = slot.pool().config().redis_auth.is_none();
        Client {
            id,
            authenticated,
            slot,
            args: Vec::new(),
            needed: 0,
            name: None,
            done: false,
        }
    }
}

fn ready(build: impl FnOnce(&mut Vec<u8>)) -> Pending {
    let mut out = Vec::new();
    build(&mut out);
    Pending::Ready(out.into())
}

fn err(text: &str) -> Pending {
    ready(|o| error(o, text))
}

impl Protocol for Client {
    type Pending = Pending;

    fn take_requests(&mut self, input: &mut BytesMut, queue: &mut VecDeque<Pending>) -> bool {
        let slot = self.slot.clone();
        let pool = &*slot.pool();
        while !self.done && queue.len() < MAX_PENDING && input.len() >= self.needed {
            match resp::parse_request(input, &mut self.args) {
                Parsed::Incomplete { needed } => {
                    self.needed = needed.unwrap_or(0);
                    break;
                }
                Parsed::Error(reason) => {
                    // As Redis: the error, then the connection is closed.
                    queue.push_back(err(&format!("ERR Protocol error: {reason}")));
                    self.done = true;
                    return false;
                }
                Parsed::Request(request) => {
                    self.needed = 0;
                    let bytes = input.split_to(request.len).freeze();
                    if !self.args.is_empty() {
                        let pending = self.dispatch(pool, &bytes);
                        queue.push_back(pending);
                    }
                }
            }
        }
        true
    }

    fn finish(&mut self, pending: Pending) -> (Bytes, bool) {
        match pending {
            Pending::Quit => (Bytes::from_static(b"+OK\r\n"), true),
            other => (self.reply_bytes(&self.slot.pool(), other), false),
        }
    }
}

impl Client {
    fn arg<'a>(&self, bytes: &'a [u8], i: usize) -> &'a [u8] {
        &bytes[self.args[i].clone()]
    }

    fn dispatch(&mut self, pool: &PoolRt, bytes: &Bytes) -> Pending {
        let name = self.arg(bytes, 0);
        let Some(spec) = lookup(name) else {
            let mut text = format!(
                "ERR unknown command '{}', with args beginning with: ",
                String::from_utf8_lossy(name)
            );
            for a in self.args[1..].iter().take(8) {
                text.push_str(&format!(
                    "'{}' ",
                    String::from_utf8_lossy(&bytes[a.clone()])
                ));
            }
            return err(&text);
        };
        if !self.authenticated && !matches!(spec.name, "auth" | "quit" | "hello") {
            return err("NOAUTH Authentication required.");
        }
        if !spec.arity_ok(self.args.len()) {
            return wrong_arity(spec.name);
        }
        match spec.kind {
            CommandKind::Unsupported => err(&format!(
                "ERR command '{}' is not supported by the proxy",
                spec.name
            )),
            CommandKind::Local => self.local(pool, spec.name, bytes),
            CommandKind::Keyed => self.forward(pool, 1, bytes),
            CommandKind::Script => {
                let keys = std::str::from_utf8(self.arg(bytes, 2))
                    .ok()
                    .and_then(|n| n.parse::<i64>().ok());
                match keys {
                    None => err("ERR value is not an integer or out of range"),
                    Some(n) if n < 0 => err("ERR Number of keys can't be negative"),
                    Some(n) if n as usize > self.args.len() - 3 => {
                        err("ERR Number of keys can't be greater than number of args")
                    }
                    Some(0) => err(&format!(
                        "ERR '{}' without keys is not supported by the proxy: it needs a key to choose a server",
                        spec.name
                    )),
                    Some(_) => self.forward(pool, 3, bytes),
                }
            }
            CommandKind::SplitKeys => self.split(pool, spec.name, bytes, 1),
            CommandKind::SplitPairs => {
                if self.args.len() % 2 == 0 {
                    return wrong_arity(spec.name);
                }
                self.split(pool, spec.name, bytes, 2)
            }
        }
    }

    /// Sends the request, as received, to the server of the key at argument `key`.
    fn forward(&mut self, pool: &PoolRt, key: usize, bytes: &Bytes) -> Pending {
        match pool.route(self.arg(bytes, key)) {
            Some(server) => {
                Pending::Single(Part::new(pool.send(server, self.id, bytes.clone(), true)))
            }
            None => self.no_server(pool),
        }
    }

    fn no_server(&self, pool: &PoolRt) -> Pending {
        pool.pool_stats().add(ps::FORWARD_ERROR, 1);
        Pending::Ready(BackendError::NoServer.redis_reply())
    }

    /// Splits a multi-key command whose keys come in groups of `step` arguments
    /// (1: keys; 2: key-value pairs) into one command per server.
    fn split(&mut self, pool: &PoolRt, name: &str, bytes: &Bytes, step: usize) -> Pending {
        let groups = (self.args.len() - 1) / step;
        let mut servers = Vec::with_capacity(groups);
        for g in 0..groups {
            match pool.route(self.arg(bytes, 1 + g * step)) {
                Some(s) => servers.push(s),
                None => return self.no_server(pool),
            }
        }
        let first = servers[0];
        if servers.iter().all(|&s| s == first) {
            return Pending::Single(Part::new(pool.send(first, self.id, bytes.clone(), true)));
        }

        // One command per server, with that server's groups in the client's order.
        let mut targets: Vec<usize> = Vec::new();
        let order: Vec<u16> = servers
            .iter()
            .map(|&s| match targets.iter().position(|&t| t == s) {
                Some(i) => i as u16,
                None => {
                    targets.push(s);
                    (targets.len() - 1) as u16
                }
            })
            .collect();
        let command_name = self.arg(bytes, 0);
        let parts: Vec<Part> = targets
            .iter()
            .enumerate()
            .map(|(t, &server)| {
                let mine: Vec<usize> = (0..groups).filter(|&g| order[g] as usize == t).collect();
                let mut out = Vec::with_capacity(64 * mine.len());
                array_header(&mut out, 1 + mine.len() * step);
                bulk(&mut out, command_name);
                for g in mine {
                    for a in 0..step {
                        bulk(&mut out, self.arg(bytes, 1 + g * step + a));
                    }
                }
                Part::new(pool.send(server, self.id, out.into(), true))
            })
            .collect();
        pool.pool_stats().add(ps::FRAGMENTS, parts.len() as u64);
        match name {
            "mget" => Pending::Mget { parts, order },
            "mset" => Pending::AllOk(parts),
            _ => Pending::Sum(parts),
        }
    }

    fn reply_bytes(&self, pool: &PoolRt, pending: Pending) -> Bytes {
        match pending {
            Pending::Ready(b) => b,
            Pending::Quit => Bytes::new(),
            Pending::Single(mut part) => part.take().unwrap_or_else(|e| self.failed(pool, e)),
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
        }
    }

    fn failed(&self, pool: &PoolRt, e: BackendError) -> Bytes {
        pool.pool_stats().add(ps::FORWARD_ERROR, 1);
        e.redis_reply()
    }

    /// One array of values in the client's key order, from each server's array.
    fn merge_mget(&self, pool: &PoolRt, parts: &mut [Part], order: &[u16]) -> Bytes {
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
                _ => null_bulk(&mut out),
            }
        }
        out.into()
    }

    /// Connection-level commands, answered without a server.
    fn local(&mut self, pool: &PoolRt, name: &str, bytes: &Bytes) -> Pending {
        let argc = self.args.len();
        let arg = |i: usize| self.arg(bytes, i);
        let lower = |i: usize| arg(i).to_ascii_lowercase();
        match name {
            "ping" => match argc {
                1 => ready(|o| simple(o, "PONG")),
                2 => ready(|o| bulk(o, arg(1))),
                _ => wrong_arity(name),
            },
            "echo" => ready(|o| bulk(o, arg(1))),
            "quit" => {
                self.done = true;
                Pending::Quit
            }
            "auth" => match argc {
                2 => self.auth(pool, None, arg(1)),
                3 => self.auth(pool, Some(arg(1)), arg(2)),
                _ => err("ERR syntax error"),
            },
            "select" => match std::str::from_utf8(arg(1)).ok().and_then(|n| n.parse::<i64>().ok()) {
                Some(0) => ready(|o| simple(o, "OK")),
                Some(_) => err("ERR SELECT is limited to database 0 by the proxy: the pool's database is set by redis_db in its config"),
                None => err("ERR value is not an integer or out of range"),
            },
            "client" => match lower(1).as_slice() {
                b"setname" if argc == 3 => {
                    self.name = Some(Bytes::copy_from_slice(arg(2)));
                    ready(|o| simple(o, "OK"))
                }
                b"getname" if argc == 2 => ready(|o| match &self.name {
                    Some(n) => bulk(o, n),
                    None => null_bulk(o),
                }),
                b"setinfo" if argc == 4 => ready(|o| simple(o, "OK")),
                b"id" if argc == 2 => ready(|o| integer(o, self.id as i64)),
                b"setname" | b"getname" | b"setinfo" | b"id" => {
                    err(&format!("ERR wrong number of arguments for 'client|{}' command", String::from_utf8_lossy(&lower(1))))
                }
                other => err(&format!(
                    "ERR command 'client {}' is not supported by the proxy",
                    String::from_utf8_lossy(other)
                )),
            },
            "hello" => self.hello(pool, bytes),
            "command" => self.command(bytes),
            "info" => ready(|o| bulk(o, self.info(pool).as_bytes())),
            _ => err(&format!("ERR command '{name}' is not supported by the proxy")),
        }
    }

    fn auth(&mut self, pool: &PoolRt, user: Option<&[u8]>, password: &[u8]) -> Pending {
        let Some(expected) = pool.config().redis_auth.as_deref() else {
            return err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
        };
        let user_ok = user.is_none_or(|u| u == b"default");
        if user_ok && password == expected.as_bytes() {
            self.authenticated = true;
            ready(|o| simple(o, "OK"))
        } else {
            err("WRONGPASS invalid username-password pair or user is disabled.")
        }
    }

    /// `HELLO [2 [AUTH user pass] [SETNAME name]]`, answered as Redis 7 does in RESP2.
    fn hello(&mut self, pool: &PoolRt, bytes: &Bytes) -> Pending {
        let argc = self.args.len();
        if argc >= 2 {
            match self.arg(bytes, 1) {
                b"2" => {}
                b"3" => return err("NOPROTO sorry, this protocol version is not supported."),
                _ => return err("ERR Protocol version is not an integer or out of range"),
            }
        }
        let mut i = 2;
        while i < argc {
            let option = self.arg(bytes, i).to_ascii_lowercase();
            match option.as_slice() {
                b"auth" if i + 2 < argc => {
                    let (user, pass) = (self.args[i + 1].clone(), self.args[i + 2].clone());
                    if let Pending::Ready(e) = self.auth(pool, Some(&bytes[user]), &bytes[pass]) {
                        if e.starts_with(b"-") {
                            return Pending::Ready(e);
                        }
                    }
                    i += 3;
                }
                b"setname" if i + 1 < argc => {
                    self.name = Some(Bytes::copy_from_slice(self.arg(bytes, i + 1)));
                    i += 2;
                }
                _ => {
                    return err(&format!(
                        "ERR Syntax error in HELLO option '{}'",
                        String::from_utf8_lossy(self.arg(bytes, i))
                    ))
                }
            }
        }
        if !self.authenticated {
            return err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        }
        ready(|o| {
            array_header(o, 14);
            bulk(o, b"server");
            bulk(o, b"redis");
            bulk(o, b"version");
            bulk(o, REDIS_COMPAT_VERSION.as_bytes());
            bulk(o, b"proto");
            integer(o, 2);
            bulk(o, b"id");
            integer(o, self.id as i64);
            bulk(o, b"mode");
            bulk(o, b"standalone");
            bulk(o, b"role");
            bulk(o, b"master");
            bulk(o, b"modules");
            array_header(o, 0);
        })
    }

    /// `COMMAND`, `COMMAND COUNT`, `COMMAND INFO name...`, `COMMAND DOCS`: what the
    /// proxy serves, in the six-field form every RESP2 client reads.
    fn command(&self, bytes: &Bytes) -> Pending {
        let served = || {
            COMMANDS
                .iter()
                .filter(|c| c.kind != CommandKind::Unsupported)
        };
        let entry = |o: &mut Vec<u8>, c: &resp::CommandSpec| {
            let (first, last, step) = c.key_spec();
            array_header(o, 6);
            bulk(o, c.name.as_bytes());
            integer(o, c.arity.into());
            array_header(o, 0);
            integer(o, first);
            integer(o, last);
            integer(o, step);
        };
        if self.args.len() == 1 {
            return ready(|o| {
                array_header(o, served().count());
                served().for_each(|c| entry(o, c));
            });
        }
        match self.arg(bytes, 1).to_ascii_lowercase().as_slice() {
            b"count" => ready(|o| integer(o, served().count() as i64)),
            b"docs" => ready(|o| array_header(o, 0)),
            b"info" => ready(|o| {
                array_header(o, self.args.len() - 2);
                for i in 2..self.args.len() {
                    match lookup(self.arg(bytes, i)).filter(|c| c.kind != CommandKind::Unsupported)
                    {
                        Some(c) => entry(o, c),
                        None => o.extend_from_slice(b"*-1\r\n"),
                    }
                }
            }),
            other => err(&format!(
                "ERR command 'command {}' is not supported by the proxy",
                String::from_utf8_lossy(other)
            )),
        }
    }

    /// `INFO`: Redis-style sections, with a `# Proxy` section describing cashew.
    fn info(&self, pool: &PoolRt) -> String {
        let config = pool.config();
        let registry = pool.registry();
        let clients = registry.proxy_total(px::CURR_CONNECTIONS);
        let generation = &pool.generation;
        let mut s = format!(
            "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nredis_mode:standalone\r\nprocess_id:{}\r\nuptime_in_seconds:{}\r\n\r\n# Clients\r\nconnected_clients:{clients}\r\n\r\n# Proxy\r\nproxy:cashew\r\nproxy_version:{}\r\nuptime:{}\r\nconnected_clients:{clients}\r\nthreads:{}\r\ngeneration:{}\r\nconfig_checksum:{}\r\npools:{}\r\npool:{}\r\nservers:{}\r\n",
            std::process::id(),
            registry.uptime(),
            env!("CARGO_PKG_VERSION"),
            registry.uptime(),
            registry.threads(),
            generation.number,
            generation.source.checksum,
            generation.config.pools.len(),
            config.name,
            config.servers.len(),
        );
        for (i, server) in config.servers.iter().enumerate() {
            s.push_str(&format!(
                "server{i}:name={},address={},state={}\r\n",
                server.name(),
                server.entry,
                pool.server_state(i).name(),
            ));
        }
        s
    }
}

fn wrong_arity(name: &str) -> Pending {
    err(&format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}
