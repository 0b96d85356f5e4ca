//! The redis protocol for clients, RESP2 or RESP3 as each client asks with `HELLO`.
//! Every command Redis 7 knows has a class (see `cashew_protocol::resp::COMMANDS`):
//! forwarded by the key its position names, forwarded when all its keys are on one
//! server, split and merged, answered here, or refused with a reason that is true.
//! A RESP3 client's commands travel over RESP3 server connections, so it gets
//! exactly the replies a RESP3 client of that server gets.

use std::collections::VecDeque;
use std::ops::Range;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use cashew_protocol::resp::{
    self, array_header, bulk, error, integer, lookup, lookup_subcommand, map_header, null,
    null_bulk, simple, verbatim_text, CommandKind, CommandSpec, Keys, LocalCommand, Merge, Parsed,
    Reason, ReplyParse, COMMANDS,
};

use super::client::{
    all_ok, settle_all, try_settle_all, Part, PendingReply, Protocol, ReplyFamilies,
};
use super::gutter::{self, Target};
use super::handoff::BackendError;
use super::ids::{ClientId, ServerId};
use super::pool::{PoolRt, PoolSlot};
use crate::state::counters::{Family, PoolCounter, ProxyCounter};

/// The version reported when no server has told its own yet.
const FALLBACK_REDIS_VERSION: &str = "7.0.0";

pub(crate) enum Pending {
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
    /// A reply of the proxy's that reports a server's version, when none was known:
    /// built once `part` (a `PING` that connects to a live server, whose handshake
    /// learns its version) is answered.
    AfterVersion {
        part: Part,
        reply: VersionedReply,
    },
}

/// Replies that report the servers' version.
#[derive(Clone, Copy)]
pub(crate) enum VersionedReply {
    Hello { resp3: bool },
    Info,
}

impl PendingReply for Pending {
    fn try_settle(&mut self) -> bool {
        match self {
            Pending::Ready(_) | Pending::Quit => true,
            Pending::Single(part) | Pending::AfterVersion { part, .. } => part.try_settle(),
            Pending::Mget { parts, .. } | Pending::Sum(parts) | Pending::AllOk(parts) => {
                try_settle_all(parts)
            }
        }
    }

    async fn settle(&mut self) {
        match self {
            Pending::Ready(_) | Pending::Quit => {}
            Pending::Single(part) | Pending::AfterVersion { part, .. } => part.settle().await,
            Pending::Mget { parts, .. } | Pending::Sum(parts) | Pending::AllOk(parts) => {
                settle_all(parts).await
            }
        }
    }
}

/// A redis client connection.
pub(crate) struct Client {
    slot: Rc<PoolSlot>,
    id: ClientId,
    /// Argument ranges of the request being dispatched, reused between requests.
    args: Vec<Range<usize>>,
    /// Where a request that arrived in part stopped being read.
    resume: resp::RequestResume,
    /// Parse again only once the input holds this many bytes (a big bulk arriving).
    needed: usize,
    authenticated: bool,
    name: Option<Bytes>,
    /// The client speaks RESP3 (after `HELLO 3`).
    resp3: bool,
    done: bool,
    families: ReplyFamilies,
    /// The family of the request being dispatched, once its command is known.
    family: Option<Family>,
}

impl Client {
    pub(crate) fn new(slot: Rc<PoolSlot>, id: ClientId) -> Client {
        let authenticated = slot.pool().config().redis_auth.is_none();
        Client {
            id,
            authenticated,
            slot,
            args: Vec::new(),
            resume: resp::RequestResume::default(),
            needed: 0,
            name: None,
            resp3: false,
            done: false,
            families: ReplyFamilies::default(),
            family: None,
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

/// Counts (and logs, see [`PoolRt::refused`]) an error reply cashew gave itself:
/// an unknown command is unsupported, a command a proxy cannot serve refused,
/// anything else the client's error.
fn count_local_reply(pool: &PoolRt, reply: &[u8]) {
    if !reply.starts_with(b"-") || reply.starts_with(b"-ERR No live server") {
        return;
    }
    let kind = if reply.starts_with(b"-ERR unknown command") {
        PoolCounter::ErrUnsupported
    } else if memchr::memmem::find(reply, b"is not supported by the proxy").is_some() {
        PoolCounter::ErrRefused
    } else {
        PoolCounter::ErrClient
    };
    pool.refused(kind, reply);
}

fn refused(name: &str, reason: Reason) -> Pending {
    err(&format!(
        "ERR command '{name}' is not supported by the proxy: {}",
        reason.text()
    ))
}

const BAD_CLIENT_NAME: &str =
    "ERR Client names cannot contain spaces, newlines or special characters.";

/// A client name Redis accepts: printable ASCII without spaces.
fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

fn wrong_arity(name: &str) -> Pending {
    err(&format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

impl Protocol for Client {
    type Pending = Pending;

    fn take_requests(
        &mut self,
        input: &mut BytesMut,
        queue: &mut VecDeque<Pending>,
        max_queue: usize,
    ) -> bool {
        let slot = self.slot.clone();
        let pool = &*slot.pool();
        while !self.done && queue.len() < max_queue && input.len() >= self.needed {
            match resp::parse_request_resumable(input, &mut self.args, &mut self.resume) {
                Parsed::Incomplete { needed } => {
                    let max = pool.config().max_request_size;
                    if needed.unwrap_or(input.len()) as u64 > max {
                        // As Redis past its query buffer limit: the error, then close.
                        let reply = err(&format!(
                            "ERR Protocol error: request larger than max_request_size ({max} bytes)"
                        ));
                        if let Pending::Ready(bytes) = &reply {
                            pool.refused(PoolCounter::ErrClient, bytes);
                        }
                        queue.push_back(reply);
                        self.families.note(queue.len(), None, pool.pool_stats());
                        self.done = true;
                        return false;
                    }
                    self.needed = needed.unwrap_or(0);
                    break;
                }
                Parsed::Error(reason) => {
                    // As Redis: the error, then the connection is closed.
                    let text = format!("ERR Protocol error: {reason}");
                    pool.refused(PoolCounter::ErrClient, text.as_bytes());
                    queue.push_back(err(&text));
                    self.families.note(queue.len(), None, pool.pool_stats());
                    self.done = true;
                    return false;
                }
                Parsed::Request(request) => {
                    self.needed = 0;
                    let bytes = input.split_to(request.len).freeze();
                    if !self.args.is_empty() {
                        self.family = None;
                        let pending = self.dispatch(pool, &bytes);
                        if let Pending::Ready(reply) = &pending {
                            count_local_reply(pool, reply);
                        }
                        queue.push_back(pending);
                        self.families
                            .note(queue.len(), self.family, pool.pool_stats());
                    }
                }
            }
        }
        true
    }

    fn finish(&mut self, pending: Pending) -> (Bytes, bool) {
        self.families.finished();
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

    fn argc(&self) -> usize {
        self.args.len()
    }

    /// A null in the client's protocol.
    fn null(&self, out: &mut Vec<u8>) {
        if self.resp3 {
            null(out)
        } else {
            null_bulk(out)
        }
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
        let allowed = matches!(spec.kind, CommandKind::Local(l) if l.allowed_before_auth());
        if !self.authenticated && !allowed {
            return err("NOAUTH Authentication required.");
        }
        if !spec.arity_ok(self.argc()) {
            return wrong_arity(spec.name);
        }
        let spec = match spec.kind {
            CommandKind::BySubcommand => {
                let sub = self.arg(bytes, 1);
                match lookup_subcommand(spec.name, sub) {
                    Some(sub) if sub.arity_ok(self.argc()) => sub,
                    Some(sub) => return wrong_arity(sub.name),
                    None => {
                        return err(&format!(
                            "ERR unknown subcommand '{}'. Try {} HELP.",
                            String::from_utf8_lossy(sub),
                            spec.name.to_ascii_uppercase()
                        ))
                    }
                }
            }
            _ => spec,
        };
        let keys = match spec.kind {
            CommandKind::SplitKeys(_) => self.argc() - 1,
            CommandKind::SplitPairs => (self.argc() - 1) / 2,
            _ => 0,
        };
        let max_keys = pool.config().max_keys as usize;
        if keys > max_keys {
            return err(&format!(
                "ERR too many keys in one request (max_keys is {max_keys})"
            ));
        }
        let family = match spec.kind {
            CommandKind::Refused(_) => Family::Refused,
            CommandKind::Local(_) => Family::Local,
            CommandKind::SplitKeys(_) | CommandKind::SplitPairs => Family::Split,
            _ if spec.write => Family::Write,
            _ => Family::Read,
        };
        pool.pool_stats().request(family);
        self.family = Some(family);
        if let Some((sample, capacity)) = pool.hotkeys {
            let hot = &pool.pool_stats().hotkeys;
            let (first, step) = match spec.kind {
                CommandKind::Keyed(key) => (usize::from(key), usize::MAX),
                CommandKind::SplitKeys(_) => (1, 1),
                CommandKind::SplitPairs => (1, 2),
                _ => (0, 0),
            };
            if first > 0 {
                for i in (first..self.argc()).step_by(step.min(self.argc())) {
                    hot.observe(self.arg(bytes, i), sample, capacity);
                }
            }
        }
        match spec.kind {
            CommandKind::Refused(reason) => refused(spec.name, reason),
            CommandKind::Local(command) => self.local(pool, command, bytes),
            CommandKind::Keyed(key) => self.forward_by(pool, usize::from(key), bytes, spec.write),
            CommandKind::AnyServer => self.forward_any(pool, bytes),
            CommandKind::Script => self.script(pool, spec, bytes),
            CommandKind::SameServer(keys) => self.same_server(pool, spec, keys, bytes),
            CommandKind::SplitKeys(merge) => self.split(pool, spec, bytes, Some(merge)),
            CommandKind::SplitPairs => {
                if self.argc() % 2 == 0 {
                    return wrong_arity(spec.name);
                }
                self.split(pool, spec, bytes, None)
            }
            // A subcommand is resolved above: never one that needs resolving again.
            CommandKind::BySubcommand => err("ERR unknown subcommand"),
        }
    }

    /// Sends the request, as received, to `server`.
    fn forward_to(&self, pool: &PoolRt, server: ServerId, bytes: &Bytes) -> Pending {
        Pending::Single(Part::new(pool.send_redis(
            server,
            self.id,
            bytes.clone(),
            self.resp3,
        )))
    }

    /// Where `key` goes (see [`Target`]); `None` when no server can take it.
    fn target(&self, pool: &PoolRt, key: &[u8]) -> Option<Target> {
        let server = pool.route(key)?;
        if !pool.stable_placement() || pool.is_live(server) {
            return Some(Target::Server(server));
        }
        let (gutter, server) = gutter::route(pool, key)?;
        pool.pool_stats().add(PoolCounter::Guttered, 1);
        Some(Target::Gutter(gutter, server))
    }

    /// Sends `bytes` to `target`. A write to the gutter is followed by `EXPIRE key
    /// gutter_ttl LT` for each of `keys`, which only ever shortens a TTL.
    fn send_to(
        &self,
        pool: &PoolRt,
        target: &Target,
        bytes: Bytes,
        write: bool,
        keys: &[&[u8]],
    ) -> Part {
        let (to, s) = target.resolve(pool);
        let part = Part::new(to.send_redis(s, self.id, bytes, self.resp3));
        if write && target.is_gutter() {
            let ttl = pool.config().gutter_ttl.to_string();
            for key in keys {
                let mut expire = Vec::new();
                array_header(&mut expire, 4);
                for arg in [&b"EXPIRE"[..], key, ttl.as_bytes(), b"LT"] {
                    bulk(&mut expire, arg);
                }
                to.send(s, self.id, expire.into(), false);
            }
        }
        part
    }

    /// Sends the request to the server of the key at argument `key`.
    fn forward_by(&self, pool: &PoolRt, key: usize, bytes: &Bytes, write: bool) -> Pending {
        let key = self.arg(bytes, key);
        match self.target(pool, key) {
            Some(target) => {
                Pending::Single(self.send_to(pool, &target, bytes.clone(), write, &[key]))
            }
            None => self.no_server(pool),
        }
    }

    /// Sends the request to the first live server: it is about no key, or its
    /// keys cannot be found (the server then gives Redis's own error).
    fn forward_any(&self, pool: &PoolRt, bytes: &Bytes) -> Pending {
        match pool.first_live() {
            Some(server) => self.forward_to(pool, server, bytes),
            None => self.no_server(pool),
        }
    }

    fn no_server(&self, pool: &PoolRt) -> Pending {
        pool.pool_stats().add(PoolCounter::ForwardError, 1);
        pool.server_failed(&BackendError::NoServer);
        Pending::Ready(BackendError::NoServer.redis_reply())
    }

    /// EVAL, EVALSHA, FCALL and their read-only forms: `numkeys` at argument 2,
    /// forwarded by the first key, as nutcracker does.
    fn script(&self, pool: &PoolRt, spec: &CommandSpec, bytes: &Bytes) -> Pending {
        let keys = std::str::from_utf8(self.arg(bytes, 2))
            .ok()
            .and_then(|n| n.parse::<i64>().ok());
        match keys {
            None => err("ERR value is not an integer or out of range"),
            Some(n) if n < 0 => err("ERR Number of keys can't be negative"),
            Some(n) if n as usize > self.argc() - 3 => {
                err("ERR Number of keys can't be greater than number of args")
            }
            Some(0) => err(&format!(
                "ERR '{}' without keys is not supported by the proxy: it needs a key to choose a server",
                spec.name
            )),
            Some(_) => self.forward_by(pool, 3, bytes, true),
        }
    }

    /// Where the keys of a command that needs them on one server are, or `None`
    /// when they cannot be found (the server will say what is wrong).
    fn key_positions(&self, bytes: &[u8], keys: Keys) -> Option<Vec<usize>> {
        let argc = self.argc();
        match keys {
            Keys::Range { first, last, step } => {
                let last = if last < 0 {
                    argc.checked_sub(last.unsigned_abs() as usize)?
                } else {
                    last as usize
                };
                Some(
                    (first as usize..=last.min(argc - 1))
                        .step_by(step as usize)
                        .collect(),
                )
            }
            Keys::NumKeys(at) => {
                let at = usize::from(at);
                let n: usize = std::str::from_utf8(self.arg(bytes, at))
                    .ok()?
                    .parse()
                    .ok()?;
                (n > 0 && at + n < argc).then(|| (at + 1..=at + n).collect())
            }
            Keys::Streams { .. } => {
                let streams =
                    (1..argc).find(|&i| self.arg(bytes, i).eq_ignore_ascii_case(b"streams"))?;
                let rest = argc - streams - 1;
                (rest > 0 && rest % 2 == 0).then(|| (streams + 1..=streams + rest / 2).collect())
            }
        }
    }

    /// A multi-key command forwarded only when all its keys are on one server.
    fn same_server(&self, pool: &PoolRt, spec: &CommandSpec, keys: Keys, bytes: &Bytes) -> Pending {
        if let Keys::Streams { options } = keys {
            if self.blocks(usize::from(options), bytes) {
                return refused(spec.name, Reason::Blocking);
            }
        }
        let Some(positions) = self.key_positions(bytes, keys) else {
            return self.forward_any(pool, bytes);
        };
        let mut target: Option<Target> = None;
        for &i in &positions {
            let Some(t) = self.target(pool, self.arg(bytes, i)) else {
                return self.no_server(pool);
            };
            if target.as_ref().is_some_and(|first| !first.same(&t)) {
                return err(&format!(
                    "CROSSSLOT Keys in request don't hash to the same server: '{}' is forwarded only when all its keys are on one server of the proxy; put a hash tag such as {{user1}} in each of them",
                    spec.name
                ));
            }
            target = Some(t);
        }
        match target {
            Some(t) => {
                let keys: Vec<&[u8]> = positions.iter().map(|&i| self.arg(bytes, i)).collect();
                Pending::Single(self.send_to(pool, &t, bytes.clone(), spec.write, &keys))
            }
            None => self.forward_any(pool, bytes),
        }
    }

    /// `XREAD`/`XREADGROUP` with `BLOCK` among its options (from argument `from`)
    /// before `STREAMS`.
    fn blocks(&self, from: usize, bytes: &[u8]) -> bool {
        (from..self.argc())
            .map(|i| self.arg(bytes, i))
            .take_while(|a| !a.eq_ignore_ascii_case(b"streams"))
            .any(|a| a.eq_ignore_ascii_case(b"block"))
    }

    /// Splits a multi-key command into one command per server: its keys, merged by
    /// `merge`; without one, its key-value pairs (MSET).
    fn split(
        &mut self,
        pool: &PoolRt,
        spec: &CommandSpec,
        bytes: &Bytes,
        merge: Option<Merge>,
    ) -> Pending {
        let step = if merge.is_some() { 1 } else { 2 };
        let groups = (self.argc() - 1) / step;
        let mut targets: Vec<Target> = Vec::new();
        // For each group of arguments, in order, the target it goes to.
        let mut order: Vec<u16> = Vec::with_capacity(groups);
        for g in 0..groups {
            let Some(t) = self.target(pool, self.arg(bytes, 1 + g * step)) else {
                return self.no_server(pool);
            };
            let index = match targets.iter().position(|have| have.same(&t)) {
                Some(i) => i,
                None => {
                    targets.push(t);
                    targets.len() - 1
                }
            };
            order.push(index as u16);
        }
        let write = spec.write;
        if targets.len() == 1 {
            let keys: Vec<&[u8]> = (0..groups).map(|g| self.arg(bytes, 1 + g * step)).collect();
            return Pending::Single(self.send_to(pool, &targets[0], bytes.clone(), write, &keys));
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
                self.send_to(pool, target, out.into(), write, &keys)
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
            // The server's answer is not the client's: only its version is (and
            // without a server, the fallback version is reported).
            Pending::AfterVersion { reply, .. } => self.versioned(pool, reply),
        }
    }

    /// A reply that reports the servers' version: now, or once a server is reached.
    fn with_version(&self, pool: &PoolRt, reply: VersionedReply) -> Pending {
        if pool.server_version().is_none() {
            if let Some(server) = pool.first_live() {
                let ping = Bytes::from_static(b"*1\r\n$4\r\nPING\r\n");
                let part = Part::new(pool.send(server, self.id, ping, true));
                return Pending::AfterVersion { part, reply };
            }
        }
        Pending::Ready(self.versioned(pool, reply))
    }

    fn versioned(&self, pool: &PoolRt, reply: VersionedReply) -> Bytes {
        let mut o = Vec::new();
        match reply {
            VersionedReply::Hello { resp3 } => self.hello_reply(&mut o, pool, resp3),
            VersionedReply::Info => {
                let text = self.info(pool);
                match self.resp3 {
                    true => verbatim_text(&mut o, text.as_bytes()),
                    false => bulk(&mut o, text.as_bytes()),
                }
            }
        }
        o.into()
    }

    fn failed(&self, pool: &PoolRt, e: BackendError) -> Bytes {
        pool.pool_stats().add(PoolCounter::ForwardError, 1);
        pool.server_failed(&e);
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
                _ => self.null(&mut out),
            }
        }
        out.into()
    }

    /// Connection-level commands, answered without a server.
    fn local(&mut self, pool: &PoolRt, command: LocalCommand, bytes: &Bytes) -> Pending {
        let argc = self.argc();
        let arg = |i: usize| self.arg(bytes, i);
        match command {
            LocalCommand::Ping => match argc {
                1 => ready(|o| simple(o, "PONG")),
                2 => ready(|o| bulk(o, arg(1))),
                _ => wrong_arity("ping"),
            },
            LocalCommand::Echo => ready(|o| bulk(o, arg(1))),
            LocalCommand::Quit => {
                self.done = true;
                Pending::Quit
            }
            LocalCommand::Auth => match argc {
                2 => self.auth(pool, None, arg(1)),
                3 => self.auth(pool, Some(arg(1)), arg(2)),
                _ => err("ERR syntax error"),
            },
            LocalCommand::Select => match std::str::from_utf8(arg(1)).ok().and_then(|n| n.parse::<i64>().ok()) {
                Some(0) => ready(|o| simple(o, "OK")),
                Some(_) => err("ERR SELECT is limited to database 0 by the proxy: the pool's database is set by redis_db in its config"),
                None => err("ERR value is not an integer or out of range"),
            },
            LocalCommand::Reset => {
                self.name = None;
                self.resp3 = false;
                self.authenticated = pool.config().redis_auth.is_none();
                ready(|o| simple(o, "RESET"))
            }
            LocalCommand::Client => self.client(bytes),
            LocalCommand::Hello => self.hello(pool, bytes),
            LocalCommand::Command => self.command(bytes),
            LocalCommand::Info => self.with_version(pool, VersionedReply::Info),
        }
    }

    /// `CLIENT` subcommands about this connection are answered here; the ones that
    /// act on the server (or need it to push) are refused.
    fn client(&mut self, bytes: &Bytes) -> Pending {
        let argc = self.argc();
        let sub = self.arg(bytes, 1).to_ascii_lowercase();
        let wrong = || {
            err(&format!(
                "ERR wrong number of arguments for 'client|{}' command",
                String::from_utf8_lossy(&sub)
            ))
        };
        match sub.as_slice() {
            b"setname" if argc == 3 => {
                let name = self.arg(bytes, 2);
                if !valid_client_name(name) {
                    return err(BAD_CLIENT_NAME);
                }
                self.name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
                ready(|o| simple(o, "OK"))
            }
            b"getname" if argc == 2 => ready(|o| match &self.name {
                Some(n) => bulk(o, n),
                None => self.null(o),
            }),
            b"setinfo" if argc == 4 => ready(|o| simple(o, "OK")),
            b"id" if argc == 2 => ready(|o| integer(o, self.id.0 as i64)),
            b"no-evict" | b"no-touch" if argc == 3 => ready(|o| simple(o, "OK")),
            b"info" if argc == 2 => {
                let name = self.name.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                let line = format!(
                    "id={} name={name} db=0 resp={} lib-name=cashew-proxy\n",
                    self.id.0,
                    if self.resp3 { 3 } else { 2 }
                );
                ready(|o| match self.resp3 {
                    true => verbatim_text(o, line.as_bytes()),
                    false => bulk(o, line.as_bytes()),
                })
            }
            b"setname" | b"getname" | b"setinfo" | b"id" | b"no-evict" | b"no-touch" | b"info" => wrong(),
            b"tracking" | b"caching" | b"getredir" | b"trackinginfo" => {
                refused(&format!("client|{}", String::from_utf8_lossy(&sub)), Reason::PubSub)
            }
            b"reply" => err("ERR command 'client|reply' is not supported by the proxy: replies are matched to requests"),
            other => refused(&format!("client|{}", String::from_utf8_lossy(other)), Reason::Admin),
        }
    }

    fn auth(&mut self, pool: &PoolRt, user: Option<&[u8]>, password: &[u8]) -> Pending {
        let Some(expected) = pool.config().redis_auth.as_ref() else {
            return err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
        };
        let user_ok = user.is_none_or(|u| u == b"default");
        if user_ok && expected.matches(password) {
            self.authenticated = true;
            ready(|o| simple(o, "OK"))
        } else {
            err("WRONGPASS invalid username-password pair or user is disabled.")
        }
    }

    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`: switches the connection to
    /// RESP2 or RESP3 and answers as Redis does, with a live server's version.
    fn hello(&mut self, pool: &PoolRt, bytes: &Bytes) -> Pending {
        let argc = self.argc();
        let mut resp3 = self.resp3;
        if argc >= 2 {
            match self.arg(bytes, 1) {
                b"2" => resp3 = false,
                b"3" => resp3 = true,
                other => {
                    return match std::str::from_utf8(other)
                        .ok()
                        .and_then(|v| v.parse::<i64>().ok())
                    {
                        Some(_) => err("NOPROTO unsupported protocol version"),
                        None => err("ERR Protocol version is not an integer or out of range"),
                    }
                }
            }
        }
        let mut i = 2;
        let mut name = None;
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
                    let given = self.arg(bytes, i + 1);
                    if !valid_client_name(given) {
                        return err(BAD_CLIENT_NAME);
                    }
                    name = Some(Bytes::copy_from_slice(given));
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
        self.resp3 = resp3;
        if name.is_some() {
            self.name = name;
        }
        self.with_version(pool, VersionedReply::Hello { resp3 })
    }

    /// The `HELLO` reply: a map in RESP3, a flat array in RESP2.
    fn hello_reply(&self, o: &mut Vec<u8>, pool: &PoolRt, resp3: bool) {
        let version = server_version(pool);
        let fields: [(&[u8], Field); 7] = [
            (b"server", Field::Text(b"redis")),
            (b"version", Field::Text(version.as_bytes())),
            (b"proto", Field::Number(if resp3 { 3 } else { 2 })),
            (b"id", Field::Number(self.id.0 as i64)),
            (b"mode", Field::Text(b"standalone")),
            (b"role", Field::Text(b"master")),
            (b"modules", Field::Empty),
        ];
        if resp3 {
            map_header(o, fields.len());
        } else {
            array_header(o, fields.len() * 2);
        }
        for (key, value) in &fields {
            bulk(o, key);
            match value {
                Field::Text(t) => bulk(o, t),
                Field::Number(n) => integer(o, *n),
                Field::Empty => array_header(o, 0),
            }
        }
    }

    /// `COMMAND`, `COMMAND COUNT|LIST|INFO name...|DOCS`: the commands the proxy
    /// serves, each in the six-field form every client reads, with Redis's arity
    /// and key positions.
    fn command(&self, bytes: &Bytes) -> Pending {
        let served = || COMMANDS.iter().filter(|c| c.is_served());
        let entry = |o: &mut Vec<u8>, c: &CommandSpec| {
            let (first, last, step) = c.keys;
            array_header(o, 6);
            bulk(o, c.name.as_bytes());
            integer(o, c.arity.into());
            array_header(o, 0);
            integer(o, first.into());
            integer(o, last.into());
            integer(o, step.into());
        };
        if self.argc() == 1 {
            return ready(|o| {
                array_header(o, served().count());
                served().for_each(|c| entry(o, c));
            });
        }
        match self.arg(bytes, 1).to_ascii_lowercase().as_slice() {
            b"count" => ready(|o| integer(o, served().count() as i64)),
            b"list" => ready(|o| {
                array_header(o, served().count());
                served().for_each(|c| bulk(o, c.name.as_bytes()));
            }),
            b"docs" => ready(|o| match self.resp3 {
                true => map_header(o, 0),
                false => array_header(o, 0),
            }),
            b"info" => ready(|o| {
                array_header(o, self.argc() - 2);
                for i in 2..self.argc() {
                    match lookup(self.arg(bytes, i)).filter(|c| c.is_served()) {
                        Some(c) => entry(o, c),
                        None if self.resp3 => null(o),
                        None => o.extend_from_slice(b"*-1\r\n"),
                    }
                }
            }),
            other => err(&format!(
                "ERR command 'command|{}' is not supported by the proxy: ask a server",
                String::from_utf8_lossy(other)
            )),
        }
    }

    /// `INFO`: Redis-style sections, with a `# Proxy` section describing cashew.
    fn info(&self, pool: &PoolRt) -> String {
        let config = pool.config();
        let registry = pool.registry();
        let clients = registry.proxy_total(ProxyCounter::CurrConnections);
        let generation = &pool.generation;
        let mut s = format!(
            "# Server\r\nredis_version:{}\r\nredis_mode:standalone\r\nprocess_id:{}\r\nuptime_in_seconds:{}\r\n\r\n# Clients\r\nconnected_clients:{clients}\r\n\r\n# Proxy\r\nproxy:cashew\r\nproxy_version:{}\r\nuptime:{}\r\nconnected_clients:{clients}\r\nthreads:{}\r\ngeneration:{}\r\nconfig_checksum:{}\r\npools:{}\r\npool:{}\r\nservers:{}\r\n",
            server_version(pool),
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
                pool.server_state(ServerId(i)).name(),
            ));
        }
        s
    }
}

/// A value of the `HELLO` reply.
enum Field<'a> {
    Text(&'a [u8]),
    Number(i64),
    Empty,
}

/// The version a live server gave, or the version whose behaviour cashew follows.
fn server_version(pool: &PoolRt) -> String {
    pool.server_version()
        .map_or_else(|| FALLBACK_REDIS_VERSION.to_string(), |v| v.to_string())
}
