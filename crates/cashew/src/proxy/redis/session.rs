//! Pinned sessions: a client that starts a transaction (MULTI or WATCH) or a
//! blocking call gets a server connection of its own, to the server that owns its
//! keys, for as long as it needs one; then it is back on the shared connections.
//!
//! A transaction is pinned to the server of its first key (WATCH's keys, or the
//! first keyed command after MULTI): MULTI is answered here and sent to that server
//! with the keyless commands queued before it. Every keyed command inside must map
//! to the same server; one that does not gets `-CROSSSLOT` (what Redis Cluster
//! says) and EXEC then `-EXECABORT`, as Redis does after an error in a transaction.
//! Between WATCH and MULTI, a command on keys of another server, or one that needs
//! every server or a connection of its own, is served as outside the transaction:
//! it is not part of it, and Redis runs it there too.
//! A blocking call gets a connection without `timeout` for the call alone. The
//! connection is closed when its last reply is delivered, or at once when the
//! client leaves (a client blocked and gone frees its server connection).

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use cashew_protocol::resp::{CommandKind, CommandSpec, Keys, LocalCommand, TransactionCommand};

use super::{command, err, refused, Client, Lane, Pending};
use crate::proxy::client::Part;
use crate::proxy::ids::ServerId;
use crate::proxy::pool::PoolRt;
use crate::proxy::server::ServerConns;
use crate::state::counters::{PoolCounter, PoolCounters};
use crate::state::health::PoolShared;

const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";
const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";
pub(super) const MAX_PINNED: &str = "ERR max pinned connections reached";

/// One of the pool's `max_pinned_connections`, held while a connection of a
/// client's own is open.
pub(crate) struct PinSlot {
    shared: Arc<PoolShared>,
    counters: Arc<PoolCounters>,
}

impl PinSlot {
    pub(super) fn take(pool: &PoolRt) -> Result<PinSlot, Pending> {
        let shared = pool.shared().clone();
        let max = pool.config().max_pinned_connections;
        if shared.pinned.fetch_add(1, Relaxed) >= max {
            shared.pinned.fetch_sub(1, Relaxed);
            return Err(err(MAX_PINNED));
        }
        let counters = pool.pool_stats_handle();
        counters.add(PoolCounter::PinnedConnections, 1);
        Ok(PinSlot { shared, counters })
    }
}

impl Drop for PinSlot {
    fn drop(&mut self) {
        self.shared.pinned.fetch_sub(1, Relaxed);
        self.counters.sub(PoolCounter::PinnedConnections, 1);
    }
}

/// A server connection of one client's own. Dropped (the session is over and its
/// last reply delivered, or the client left), it is closed at once.
pub(crate) struct Pinned {
    /// For a blocking call (else a transaction).
    pub(super) blocking: bool,
    conns: ServerConns,
    _slot: PinSlot,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        self.conns.abort();
    }
}

/// Where a client's transaction stands.
#[derive(Default)]
pub(crate) enum Session {
    #[default]
    None,
    /// After MULTI, before a keyed command chose the server: keyless commands are
    /// held (and answered `+QUEUED`) until then.
    Opening { held: Vec<Bytes>, dirty: bool },
    /// On a connection of its own.
    Pinned(Box<OnServer>),
}

pub(crate) struct OnServer {
    server: ServerId,
    /// The server's name, to notice a reload that took it out of the pool.
    server_name: String,
    conn: Rc<Pinned>,
    /// MULTI was sent (else only WATCH).
    multi: bool,
    /// A command inside was refused here: EXEC gets `-EXECABORT`.
    dirty: bool,
}

impl Session {
    pub(super) fn is_active(&self) -> bool {
        !matches!(self, Session::None)
    }

    /// The connection a command goes on while the session is active (see
    /// `Client::in_session`): inside MULTI before the server is chosen, one that
    /// may choose it counts as the transaction's.
    pub(super) fn lane_of(&self, kind: CommandKind) -> Lane {
        match (self, kind) {
            (_, CommandKind::Local(LocalCommand::Reset)) => Lane::Local,
            (Session::Pinned(_), _) => Lane::Pinned,
            (Session::Opening { held, .. }, CommandKind::Transaction(TransactionCommand::Exec))
                if held.is_empty() =>
            {
                Lane::Local
            }
            (
                Session::Opening { .. },
                CommandKind::Transaction(TransactionCommand::Exec)
                | CommandKind::Keyed(_)
                | CommandKind::SplitKeys(_)
                | CommandKind::SplitPairs
                | CommandKind::SameServer(_)
                | CommandKind::Script
                | CommandKind::Blocking(_),
            ) => Lane::Pinned,
            _ => Lane::Local,
        }
    }
}

fn queued() -> Pending {
    Pending::Ready(Bytes::from_static(b"+QUEUED\r\n"))
}

impl Client {
    /// A connection of the client's own to `server`, within the pool's
    /// `max_pinned_connections`.
    fn pin(&self, pool: &PoolRt, server: ServerId, blocking: bool) -> Result<Rc<Pinned>, Pending> {
        let slot = PinSlot::take(pool)?;
        let conns = pool.private_connection(server, self.resp3, blocking);
        Ok(Rc::new(Pinned {
            blocking,
            conns,
            _slot: slot,
        }))
    }

    fn send_pinned(&self, pool: &PoolRt, conn: &Rc<Pinned>, bytes: Bytes) -> Pending {
        let part = Part::new(pool.send_private(&conn.conns, self.id, bytes, true));
        Pending::Pinned(part, conn.clone())
    }

    /// The keys a command names, by its class; `None` when they cannot be found
    /// (the server will say what is wrong).
    fn command_keys<'a>(&self, spec: &CommandSpec, bytes: &'a [u8]) -> Option<Vec<&'a [u8]>> {
        let argc = self.argc();
        let positions: Vec<usize> = match spec.kind {
            CommandKind::Keyed(at) => vec![usize::from(at)],
            CommandKind::SameServer(keys) | CommandKind::Blocking(keys) => {
                self.key_positions(bytes, keys)?
            }
            CommandKind::SplitKeys(_) => (1..argc).collect(),
            CommandKind::SplitPairs => (1..argc).step_by(2).collect(),
            CommandKind::Script => self.key_positions(bytes, Keys::NumKeys(2))?,
            CommandKind::Transaction(TransactionCommand::Watch) => (1..argc).collect(),
            _ => Vec::new(),
        };
        Some(
            positions
                .into_iter()
                .filter(|&i| i < argc)
                .map(|i| &bytes[self.args[i].clone()])
                .collect(),
        )
    }

    /// The one server all `keys` are on; `Err` when they are on several.
    fn server_of(&self, pool: &PoolRt, keys: &[&[u8]]) -> Result<Option<ServerId>, Pending> {
        let mut server = None;
        for key in keys {
            let Some(s) = pool.route(key) else {
                return Err(self.no_server(pool));
            };
            if server.is_some_and(|first| first != s) {
                return Err(err(CROSSSLOT));
            }
            server = Some(s);
        }
        Ok(server)
    }

    /// A blocking call outside a transaction: on a connection of its own, closed
    /// once the reply is delivered.
    pub(super) fn blocking(&self, pool: &PoolRt, spec: &CommandSpec, bytes: &Bytes) -> Pending {
        let server = match self.command_keys(spec, bytes) {
            Some(keys) => match self.server_of(pool, &keys) {
                Ok(server) => server,
                Err(reply) => return reply,
            },
            None => None,
        };
        let Some(server) = server.or_else(|| pool.first_live()) else {
            return self.no_server(pool);
        };
        match self.pin(pool, server, true) {
            Ok(conn) => self.send_pinned(pool, &conn, bytes.clone()),
            Err(reply) => reply,
        }
    }

    /// After WATCH, before MULTI: a command that is not the transaction's, to be
    /// served as outside it (see the head of this file).
    pub(super) fn beside_watch(&self, pool: &PoolRt, spec: &CommandSpec, bytes: &[u8]) -> bool {
        let Session::Pinned(on) = &self.session else {
            return false;
        };
        if on.multi {
            return false;
        }
        match spec.kind {
            CommandKind::Transaction(_) | CommandKind::Local(_) | CommandKind::Refused(_) => false,
            CommandKind::Keyspace(_)
            | CommandKind::EveryServer { .. }
            | CommandKind::BySubcommand
            | CommandKind::PubSub(_)
            | CommandKind::PubSubQuery(_)
            | CommandKind::Blocking(_) => true,
            _ => self
                .command_keys(spec, bytes)
                .is_some_and(|keys| keys.iter().any(|k| pool.route(k) != Some(on.server))),
        }
    }

    /// A command while a transaction is open, or one that opens it.
    pub(super) fn in_session(
        &mut self,
        pool: &PoolRt,
        spec: &CommandSpec,
        bytes: &Bytes,
    ) -> Pending {
        if let Session::Pinned(on) = &self.session {
            let still_there = pool
                .config()
                .servers
                .get(on.server.0)
                .is_some_and(|s| s.name() == on.server_name);
            if !still_there {
                self.session = Session::None;
                return err("ERR the server of this transaction left the pool in a reload: the transaction is discarded");
            }
        }
        match spec.kind {
            CommandKind::Transaction(command) => self.transaction(pool, spec, command, bytes),
            CommandKind::Local(LocalCommand::Reset) => {
                self.session = Session::None;
                self.local(pool, LocalCommand::Reset, bytes)
            }
            CommandKind::Local(LocalCommand::Ping | LocalCommand::Echo) => {
                self.inside(pool, spec, bytes, &[])
            }
            // Queued as Redis queues it: the server selects the pool's database.
            CommandKind::Local(LocalCommand::Select) if self.in_multi() && self.argc() == 2 => {
                match std::str::from_utf8(self.arg(bytes, 1))
                    .ok()
                    .and_then(|n| n.parse::<i64>().ok())
                {
                    Some(0) => {
                        let db = pool.config().redis_db.to_string();
                        self.inside(pool, spec, &command(b"SELECT", &[db.as_bytes()]), &[])
                    }
                    _ => {
                        self.mark_dirty();
                        self.local(pool, LocalCommand::Select, bytes)
                    }
                }
            }
            CommandKind::Local(LocalCommand::Quit) => self.local(pool, LocalCommand::Quit, bytes),
            CommandKind::Local(_) if self.in_multi() => {
                // Answered now, it would be missing from EXEC's array, and a client
                // that matches that array to its commands would be misled.
                self.mark_dirty();
                err(&format!(
                    "ERR '{}' inside a transaction is not supported by the proxy: cashew answers it itself, outside the transaction",
                    spec.name
                ))
            }
            CommandKind::Local(command) => self.local(pool, command, bytes),
            CommandKind::Refused(reason) => {
                self.mark_dirty();
                refused(spec.name, reason)
            }
            CommandKind::Keyspace(_)
            | CommandKind::EveryServer { .. }
            | CommandKind::BySubcommand
            | CommandKind::PubSub(_)
            | CommandKind::PubSubQuery(_) => {
                self.mark_dirty();
                err(&format!(
                    "ERR '{}' inside a transaction is not supported by the proxy: it needs every server, or connections of its own",
                    spec.name
                ))
            }
            _ => match self.command_keys(spec, bytes) {
                Some(keys) => self.inside(pool, spec, bytes, &keys),
                None => self.inside(pool, spec, bytes, &[]),
            },
        }
    }

    /// Inside MULTI: commands are queued.
    fn in_multi(&self) -> bool {
        match &self.session {
            Session::Opening { .. } => true,
            Session::Pinned(on) => on.multi,
            Session::None => false,
        }
    }

    /// A command refused inside MULTI: EXEC then fails, as Redis's does after a
    /// command it could not queue.
    pub(super) fn mark_dirty(&mut self) {
        match &mut self.session {
            Session::Opening { dirty, .. } => *dirty = true,
            Session::Pinned(on) if on.multi => on.dirty = true,
            _ => {}
        }
    }

    /// A command (not a transaction command) inside a transaction.
    fn inside(
        &mut self,
        pool: &PoolRt,
        spec: &CommandSpec,
        bytes: &Bytes,
        keys: &[&[u8]],
    ) -> Pending {
        let server = match self.server_of(pool, keys) {
            Ok(server) => server,
            Err(reply) => {
                self.mark_dirty();
                return reply;
            }
        };
        match &mut self.session {
            Session::Pinned(on) => {
                if server.is_some_and(|s| s != on.server) {
                    if on.multi {
                        on.dirty = true;
                    }
                    return err(CROSSSLOT);
                }
                let conn = on.conn.clone();
                self.send_pinned(pool, &conn, bytes.clone())
            }
            Session::Opening { held, dirty } => match server {
                // Keyless: held until the server is known.
                None => {
                    held.push(bytes.clone());
                    queued()
                }
                Some(server) => {
                    let (held, dirty) = (std::mem::take(held), *dirty);
                    self.open_on(pool, server, held, dirty, Some(bytes))
                }
            },
            Session::None => {
                // Only WATCH and MULTI open a session; nothing else comes here.
                let _ = spec;
                err("ERR no transaction")
            }
        }
    }

    /// Pins the transaction opened by MULTI to `server`: MULTI and the commands
    /// held go first (their replies were given), then `next`.
    fn open_on(
        &mut self,
        pool: &PoolRt,
        server: ServerId,
        held: Vec<Bytes>,
        dirty: bool,
        next: Option<&Bytes>,
    ) -> Pending {
        let conn = match self.pin(pool, server, false) {
            Ok(conn) => conn,
            Err(reply) => {
                self.session = Session::None;
                return reply;
            }
        };
        pool.send_private(&conn.conns, self.id, multi_bytes(), false);
        for request in held {
            pool.send_private(&conn.conns, self.id, request, false);
        }
        let reply = match next {
            Some(bytes) => self.send_pinned(pool, &conn, bytes.clone()),
            None => queued(),
        };
        self.session = Session::Pinned(Box::new(OnServer {
            server,
            server_name: pool.config().servers[server.0].name().to_string(),
            conn,
            multi: true,
            dirty,
        }));
        reply
    }

    fn transaction(
        &mut self,
        pool: &PoolRt,
        spec: &CommandSpec,
        command: TransactionCommand,
        bytes: &Bytes,
    ) -> Pending {
        use TransactionCommand::*;
        match (std::mem::take(&mut self.session), command) {
            (Session::None, Multi) => {
                self.session = Session::Opening {
                    held: Vec::new(),
                    dirty: false,
                };
                ready_ok()
            }
            (Session::None, Exec) => err("ERR EXEC without MULTI"),
            (Session::None, Discard) => err("ERR DISCARD without MULTI"),
            (Session::None, Unwatch) => ready_ok(),
            (Session::None, Watch) => {
                let keys = self.command_keys(spec, bytes).unwrap_or_default();
                let server = match self.server_of(pool, &keys) {
                    Ok(Some(server)) => server,
                    Ok(None) => return err("ERR wrong number of arguments for 'watch' command"),
                    Err(reply) => return reply,
                };
                let conn = match self.pin(pool, server, false) {
                    Ok(conn) => conn,
                    Err(reply) => return reply,
                };
                let reply = self.send_pinned(pool, &conn, bytes.clone());
                self.session = Session::Pinned(Box::new(OnServer {
                    server,
                    server_name: pool.config().servers[server.0].name().to_string(),
                    conn,
                    multi: false,
                    dirty: false,
                }));
                reply
            }
            (opening @ Session::Opening { .. }, Multi) => {
                self.session = opening;
                err("ERR MULTI calls can not be nested")
            }
            (opening @ Session::Opening { .. }, Watch) => {
                self.session = opening;
                err("ERR WATCH inside MULTI is not allowed")
            }
            (Session::Opening { mut held, dirty }, Unwatch) => {
                held.push(bytes.clone());
                self.session = Session::Opening { held, dirty };
                queued()
            }
            (Session::Opening { .. }, Discard) => ready_ok(),
            (Session::Opening { dirty: true, .. }, Exec) => err(EXECABORT),
            (Session::Opening { held, .. }, Exec) if held.is_empty() => {
                Pending::Ready(Bytes::from_static(b"*0\r\n"))
            }
            (Session::Opening { held, .. }, Exec) => {
                // Only keyless commands: any server runs them.
                let Some(server) = pool.first_live() else {
                    return self.no_server(pool);
                };
                let reply = self.open_on(pool, server, held, false, Some(bytes));
                self.session = Session::None;
                reply
            }
            (Session::Pinned(on), Multi) if on.multi => {
                self.session = Session::Pinned(on);
                err("ERR MULTI calls can not be nested")
            }
            (Session::Pinned(mut on), Multi) => {
                on.multi = true;
                let reply = self.send_pinned(pool, &on.conn, bytes.clone());
                self.session = Session::Pinned(on);
                reply
            }
            (Session::Pinned(on), Watch) if on.multi => {
                self.session = Session::Pinned(on);
                err("ERR WATCH inside MULTI is not allowed")
            }
            (Session::Pinned(on), Watch) => {
                let keys = self.command_keys(spec, bytes).unwrap_or_default();
                let reply = match self.server_of(pool, &keys) {
                    Ok(Some(s)) if s != on.server => err(CROSSSLOT),
                    Err(reply) => reply,
                    _ => self.send_pinned(pool, &on.conn, bytes.clone()),
                };
                self.session = Session::Pinned(on);
                reply
            }
            (Session::Pinned(on), Exec) if on.dirty => {
                // The server's transaction is dropped with the connection.
                drop(on);
                err(EXECABORT)
            }
            (Session::Pinned(on), Exec | Discard) if on.multi => {
                // The session ends; the reply keeps the connection until it comes.
                self.send_pinned(pool, &on.conn, bytes.clone())
            }
            (Session::Pinned(on), Exec) => {
                self.session = Session::Pinned(on);
                err("ERR EXEC without MULTI")
            }
            (Session::Pinned(on), Discard) => {
                self.session = Session::Pinned(on);
                err("ERR DISCARD without MULTI")
            }
            (Session::Pinned(on), Unwatch) if on.multi => {
                let reply = self.send_pinned(pool, &on.conn, bytes.clone());
                self.session = Session::Pinned(on);
                reply
            }
            (Session::Pinned(on), Unwatch) => self.send_pinned(pool, &on.conn, bytes.clone()),
        }
    }
}

fn ready_ok() -> Pending {
    Pending::Ready(Bytes::from_static(b"+OK\r\n"))
}

fn multi_bytes() -> Bytes {
    Bytes::from_static(b"*1\r\n$5\r\nMULTI\r\n")
}
