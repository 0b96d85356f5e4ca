//! The redis protocol for clients, RESP2 or RESP3 as each client asks with `HELLO`.
//! Every command Redis 7 knows has a class (see `cashew_protocol::resp::COMMANDS`):
//! forwarded by the key its position names, forwarded when all its keys are on one
//! server, split and merged, answered here, or refused with a reason that is true.
//! A RESP3 client's commands travel over RESP3 server connections, so it gets
//! exactly the replies a RESP3 client of that server gets.

mod auth;
mod clients;
mod cluster;
mod every_server;
mod forward;
mod info;
mod keyspace;
mod local;
mod pubsub;
mod session;
mod split;
mod tracking;

use std::collections::VecDeque;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use cashew_protocol::resp::{
    self, bulk, error, lookup, lookup_subcommand, null, null_bulk, verbatim_text, Combine,
    CommandKind, CommandSpec, LocalCommand, Parsed, Reason, TransactionCommand,
};

use self::auth::Access;
use crate::proxy::client::{
    poll_settle_all, try_settle_all, Part, PendingReply, Protocol, ReplyFamilies,
};
use crate::proxy::ids::ClientId;
use crate::proxy::pool::{PoolRt, PoolSlot};
use crate::state::clients::ClientCard;
use crate::state::counters::{Family, PoolCounter};

/// The version reported when no server has told its own yet.
const FALLBACK_REDIS_VERSION: &str = "7.0.0";

/// The version a live server gave, or the version whose behaviour cashew follows.
fn server_version(pool: &PoolRt) -> String {
    pool.server_version()
        .map_or_else(|| FALLBACK_REDIS_VERSION.to_string(), |v| v.to_string())
}

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
    /// SCAN, KEYS, RANDOMKEY and INFO's keyspace over the servers.
    Keyspace(Box<keyspace::Gather>),
    /// SCRIPT and FUNCTION subcommands every server runs, combined so.
    EveryServer(Combine, Vec<Part>),
    /// A reply on a connection of the client's own (a transaction, a blocking
    /// call), which it keeps open until the reply is delivered (or the client
    /// leaves: then it is closed at once).
    Pinned(Part, Rc<session::Pinned>),
    /// QUIT: `+OK`, then close.
    Quit,
    /// A (un)subscribe command's confirmations, owed until its servers confirm it.
    PubSub(pubsub::Confirmations),
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
    Info(info::InfoSections),
}

impl PendingReply for Pending {
    #[inline]
    fn try_settle(&mut self) -> bool {
        match self {
            Pending::Ready(_) | Pending::Quit => true,
            Pending::Single(part)
            | Pending::AfterVersion { part, .. }
            | Pending::Pinned(part, _) => part.try_settle(),
            Pending::Mget { parts, .. }
            | Pending::Sum(parts)
            | Pending::AllOk(parts)
            | Pending::EveryServer(_, parts) => try_settle_all(parts),
            Pending::Keyspace(gather) => gather.try_settle(),
            Pending::PubSub(confirmations) => confirmations.try_settle(),
        }
    }

    fn blocks(&self) -> bool {
        matches!(self, Pending::Pinned(_, conn) if conn.blocking)
    }

    fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Pending::Ready(_) | Pending::Quit => Poll::Ready(()),
            Pending::Single(part)
            | Pending::AfterVersion { part, .. }
            | Pending::Pinned(part, _) => part.poll_settle(cx),
            Pending::Mget { parts, .. }
            | Pending::Sum(parts)
            | Pending::AllOk(parts)
            | Pending::EveryServer(_, parts) => poll_settle_all(parts, cx),
            Pending::Keyspace(gather) => gather.poll_settle(cx),
            Pending::PubSub(confirmations) => confirmations.poll_settle(cx),
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
    access: Access,
    /// What `CLIENT LIST` shows of it; its name is kept there.
    card: Arc<ClientCard>,
    /// The client speaks RESP3 (after `HELLO 3`).
    resp3: bool,
    done: bool,
    families: ReplyFamilies,
    /// The family of the request being dispatched, once its command is known.
    family: Option<Family>,
    /// A transaction in progress, on a connection of the client's own.
    session: session::Session,
    /// The connection its last request that went to a server went on.
    lane: Lane,
    /// A request waits in the input for the replies before it (see [`Lane`]).
    holding: bool,
    /// Its subscriptions, once it subscribes.
    subscriber: Option<Rc<std::cell::RefCell<pubsub::Subscriber>>>,
    /// Its own server connections, while it tracks the keys it reads.
    tracking: Option<tracking::Tracker>,
    /// Where it reached cashew: the node a Redis Cluster pool shows it.
    local: Option<std::net::SocketAddr>,
}

impl Client {
    pub(crate) fn new(slot: Rc<PoolSlot>, id: ClientId, card: Arc<ClientCard>) -> Client {
        let access = Access::of_new_client(slot.pool().config());
        Client {
            id,
            access,
            slot,
            args: Vec::new(),
            resume: resp::RequestResume::default(),
            needed: 0,
            card,
            resp3: false,
            done: false,
            families: ReplyFamilies::default(),
            family: None,
            session: session::Session::default(),
            subscriber: None,
            tracking: None,
            lane: Lane::Shared,
            holding: false,
            local: None,
        }
    }

    pub(crate) fn with_local(mut self, local: Option<std::net::SocketAddr>) -> Client {
        self.local = local;
        self
    }
}

/// Which connection a request goes on. Requests on one connection run in order;
/// a request on another waits until the replies before it have come.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Lane {
    /// Answered here, on no connection.
    Local,
    /// The worker's shared connections to the servers.
    Shared,
    /// The shared connections, for a command beside a transaction (see
    /// `Client::beside_watch`): apart from `Shared`, which the common path takes
    /// to mean that no transaction is open.
    Beside,
    /// The connection of the client's transaction.
    Pinned,
    /// WATCH or MULTI starting a transaction: a new connection (the one before,
    /// of an earlier transaction, may still run its EXEC), then `Pinned`.
    NewTransaction,
    /// A connection of its own for one blocking call.
    Blocking,
    /// The client's subscriber connections.
    Subscriber,
    /// `CLIENT TRACKING`, which moves the client's requests to (or from) its own
    /// connections: it waits for the replies before it, and the next request for it.
    Tracking,
}

impl Lane {
    #[inline]
    fn waits_after(self, last: Lane) -> bool {
        match self {
            Lane::Local => false,
            Lane::Blocking | Lane::NewTransaction => true,
            lane => lane != last,
        }
    }

    /// The lane the requests after this one find.
    #[inline]
    fn after(self) -> Lane {
        match self {
            Lane::NewTransaction => Lane::Pinned,
            lane => lane,
        }
    }
}

/// A command cashew sends a server itself: `name` and `args` as a RESP array.
fn command(name: &[u8], args: &[&[u8]]) -> Bytes {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    resp::array_header(&mut out, 1 + args.len());
    resp::bulk(&mut out, name);
    for a in args {
        resp::bulk(&mut out, a);
    }
    out.into()
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
        self.holding = false;
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
                    let spec = match self.args.first() {
                        Some(name) => lookup(&input[name.clone()]),
                        None => None,
                    };
                    // A session's commands never find the lane shared (MULTI and
                    // WATCH take the transaction's).
                    let common = self.lane == Lane::Shared
                        && spec.is_some_and(|s| matches!(s.kind, CommandKind::Keyed(_)));
                    if !common {
                        let lane = self.lane_of(pool, spec, &input[..request.len]);
                        if lane.waits_after(self.lane) && !queue.is_empty() {
                            // It goes on another connection than the requests before
                            // it: it is taken once they are answered, so that it
                            // runs after them, as on one connection to Redis.
                            self.holding = true;
                            break;
                        }
                        if lane != Lane::Local {
                            self.lane = lane.after();
                        }
                    }
                    let bytes = input.split_to(request.len).freeze();
                    if !self.args.is_empty() {
                        self.family = None;
                        let pending = self.dispatch(pool, spec, bytes);
                        if self.family.is_none() {
                            // Refused before it had a class (unknown, wrong arity, no
                            // permission): inside MULTI, EXEC then fails, as in Redis.
                            self.mark_dirty();
                        }
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

    fn holds_input(&self) -> bool {
        self.holding
    }

    fn may_push(&self) -> bool {
        self.subscriber.is_some() || self.tracking.is_some()
    }

    fn poll_push(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Poll::Ready(push) = self.poll_subscriber(cx) {
            return Poll::Ready(push);
        }
        self.poll_tracking(cx)
    }

    fn finish(&mut self, pending: Pending) -> (Bytes, bool) {
        self.families.finished();
        match pending {
            Pending::Quit => (Bytes::from_static(b"+OK\r\n"), true),
            Pending::PubSub(confirmations) => self.subscription_changed(confirmations),
            other => (self.reply_bytes(&self.slot.pool(), other), false),
        }
    }
}

impl Client {
    /// A (un)subscribe's reply, and the card told whether the client is still
    /// subscribed. Out of line: `finish` is on every reply's path.
    #[cold]
    #[inline(never)]
    fn subscription_changed(&mut self, confirmations: pubsub::Confirmations) -> (Bytes, bool) {
        let finished = confirmations.finish();
        let subscriber = self.in_subscribed_mode();
        self.card.set(|p| p.subscriber = subscriber);
        finished
    }

    fn arg<'a>(&self, bytes: &'a [u8], i: usize) -> &'a [u8] {
        &bytes[self.args[i].clone()]
    }

    fn argc(&self) -> usize {
        self.args.len()
    }

    /// Text (as `INFO`'s): a bulk string, or verbatim text in RESP3.
    fn text(&self, out: &mut Vec<u8>, text: &[u8]) {
        match self.resp3 {
            true => verbatim_text(out, text),
            false => bulk(out, text),
        }
    }

    /// A null in the client's protocol.
    fn null(&self, out: &mut Vec<u8>) {
        if self.resp3 {
            null(out)
        } else {
            null_bulk(out)
        }
    }

    fn dispatch(
        &mut self,
        pool: &PoolRt,
        spec: Option<&'static CommandSpec>,
        bytes: Bytes,
    ) -> Pending {
        let name = self.arg(&bytes, 0);
        let Some(spec) = spec else {
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
        if self.access == Access::None && !allowed {
            return err("NOAUTH Authentication required.");
        }
        if !spec.arity_ok(self.argc()) {
            return wrong_arity(spec.name);
        }
        let spec = match spec.kind {
            CommandKind::BySubcommand => {
                let sub = self.arg(&bytes, 1);
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
        if self.access == Access::Read && spec.write {
            // Redis 7.0's words (7.2 names the user).
            return err(&format!(
                "NOPERM this user has no permissions to run the '{}' command",
                spec.name
            ));
        }
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
            CommandKind::Refused(reason) => {
                match reason == Reason::Cluster && pool.cluster().is_some() {
                    true => Family::Local,
                    false => Family::Refused,
                }
            }
            CommandKind::Local(_) => Family::Local,
            CommandKind::Keyspace(_) if !pool.config().keyspace_commands => Family::Refused,
            CommandKind::SplitKeys(_) | CommandKind::SplitPairs | CommandKind::Keyspace(_) => {
                Family::Split
            }
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
                    hot.observe(self.arg(&bytes, i), sample, capacity);
                }
            }
        }
        if self.session.is_active() || self.subscriber.is_some() {
            return self.dispatch_in_state(pool, spec, bytes);
        }
        self.route(pool, spec, bytes)
    }

    /// The connection a request of this command goes on (see [`Lane`]); where
    /// that depends on more than its command, the one it may go on.
    #[inline(never)]
    fn lane_of(&self, pool: &PoolRt, spec: Option<&CommandSpec>, bytes: &[u8]) -> Lane {
        let Some(spec) = spec else {
            return Lane::Local;
        };
        if self.changes_tracking(spec, bytes) {
            return Lane::Tracking;
        }
        if self.session.is_active() {
            if !self.beside_watch(pool, spec, bytes) {
                return self.session.lane_of(spec.kind);
            }
            return match self.lane_outside(spec) {
                Lane::Shared => Lane::Beside,
                lane => lane,
            };
        }
        match self.lane_outside(spec) {
            // A tracking client's other requests go on connections of its own.
            Lane::Shared if self.tracking.is_some() && !Self::by_one_server(spec) => Lane::Beside,
            lane => lane,
        }
    }

    /// Whether the command goes to one server by [`Client::send_redis`] (else to
    /// every server, on the shared connections).
    fn by_one_server(spec: &CommandSpec) -> bool {
        !matches!(
            spec.kind,
            CommandKind::Keyspace(_)
                | CommandKind::EveryServer { .. }
                | CommandKind::BySubcommand
                | CommandKind::PubSubQuery(_)
        )
    }

    /// The lane of a command outside a transaction.
    fn lane_outside(&self, spec: &CommandSpec) -> Lane {
        match spec.kind {
            CommandKind::Keyed(_)
            | CommandKind::SplitKeys(_)
            | CommandKind::SplitPairs
            | CommandKind::SameServer(_)
            | CommandKind::Script
            | CommandKind::AnyServer
            | CommandKind::EveryServer { .. }
            | CommandKind::BySubcommand
            | CommandKind::Keyspace(_)
            | CommandKind::PubSubQuery(_) => Lane::Shared,
            CommandKind::Blocking(_) => Lane::Blocking,
            CommandKind::PubSub(_) => Lane::Subscriber,
            CommandKind::Transaction(TransactionCommand::Watch | TransactionCommand::Multi) => {
                Lane::NewTransaction
            }
            CommandKind::Transaction(_) | CommandKind::Local(_) | CommandKind::Refused(_) => {
                Lane::Local
            }
        }
    }

    /// A command of a client in a transaction, or a subscriber: apart, so that the
    /// path of other clients stays short.
    #[inline(never)]
    fn dispatch_in_state(&mut self, pool: &PoolRt, spec: &CommandSpec, bytes: Bytes) -> Pending {
        if self.in_subscribed_mode() {
            match spec.kind {
                CommandKind::PubSub(_)
                | CommandKind::Local(LocalCommand::Quit | LocalCommand::Reset) => {}
                CommandKind::Local(LocalCommand::Ping) => return self.subscribed_ping(&bytes),
                _ => return self.not_in_subscribed_mode(spec.name),
            }
        }
        if self.session.is_active() && !self.beside_watch(pool, spec, &bytes) {
            return self.in_session(pool, spec, &bytes);
        }
        self.route(pool, spec, bytes)
    }

    /// A command cashew does not forward: refused, or the cluster's, which a
    /// cluster pool answers.
    #[inline(never)]
    fn refused(
        &mut self,
        pool: &PoolRt,
        spec: &CommandSpec,
        reason: Reason,
        bytes: &Bytes,
    ) -> Pending {
        match reason == Reason::Cluster && pool.cluster().is_some() {
            true => self.cluster_command(pool, spec, bytes),
            false => refused(spec.name, reason),
        }
    }

    /// Sends a command where its class says.
    #[inline]
    fn route(&mut self, pool: &PoolRt, spec: &CommandSpec, bytes: Bytes) -> Pending {
        match spec.kind {
            CommandKind::Refused(reason) => self.refused(pool, spec, reason, &bytes),
            CommandKind::Blocking(_) => self.blocking(pool, spec, &bytes),
            CommandKind::PubSub(command) => self.pubsub(pool, command, &bytes),
            CommandKind::PubSubQuery(query) => self.pubsub_query(pool, query, &bytes),
            CommandKind::Transaction(_) => self.in_session(pool, spec, &bytes),
            CommandKind::Local(command) => self.local(pool, command, &bytes),
            CommandKind::Keyspace(_) if !pool.config().keyspace_commands => {
                refused(spec.name, Reason::Keyspace)
            }
            CommandKind::Keyspace(command) => self.keyspace(pool, command, &bytes),
            CommandKind::Keyed(key) => self.forward_by(pool, usize::from(key), bytes, spec.effect),
            CommandKind::AnyServer => self.forward_any(pool, &bytes),
            CommandKind::EveryServer { replicas, combine } => {
                self.every_server(pool, replicas, combine, &bytes)
            }
            CommandKind::Script => self.script(pool, spec, &bytes),
            CommandKind::SameServer(keys) => self.same_server(pool, spec, keys, &bytes),
            CommandKind::SplitKeys(merge) => self.split(pool, spec, &bytes, Some(merge)),
            CommandKind::SplitPairs => {
                if self.argc() % 2 == 0 {
                    return wrong_arity(spec.name);
                }
                self.split(pool, spec, &bytes, None)
            }
            // A subcommand is resolved above: never one that needs resolving again.
            CommandKind::BySubcommand => err("ERR unknown subcommand"),
        }
    }
}
