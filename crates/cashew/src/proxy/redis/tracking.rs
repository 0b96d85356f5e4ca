//! Client-side caching: `CLIENT TRACKING ON` from a RESP3 client. The server must
//! track the keys this client reads, and tell it when they change, so the client
//! gets a connection of its own to each server it sends a command to, whose
//! handshake turns tracking on with the client's options (`BCAST`, `PREFIX`,
//! `OPTIN`, `OPTOUT`, `NOLOOP`). The server's invalidations come back on that
//! connection as pushes, in order with its replies, and go to the client once every
//! reply before them is written: a value read before a change is never delivered
//! after the change's invalidation. A lost connection makes the client forget all
//! it caches (`invalidate` with no keys, as after `FLUSHALL`), since the server
//! forgot what it tracked for it. The connections count against
//! `max_pinned_connections`. `REDIRECT` (RESP2 clients) is refused: the server
//! would send another connection the invalidations of keys many clients read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cashew_config::ServerAddress;
use cashew_protocol::resp::{
    array_header, bulk, integer, map_header, simple, CommandKind, CommandSpec, LocalCommand,
    INVALIDATE_ALL,
};

use super::session::{PinSlot, MAX_PINNED};
use super::{command, err, ready, Client, Pending};
use crate::proxy::handoff::{BackendError, ReplyRx};
use crate::proxy::ids::{ClientId, ServerId};
use crate::proxy::pool::PoolRt;
use crate::proxy::server::{push_channel, PushSink, PushSource, ServerConns};

const NOT_OPTING: &str = "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled";

/// A tracking client's state, shared with its requests that a Redis Cluster
/// redirects (they follow on its connections).
pub(crate) type Tracker = Rc<RefCell<Tracking>>;

pub(crate) struct Tracking {
    /// What followed `ON`, given to each server as the client gave it.
    options: Vec<Bytes>,
    mode: Mode,
    /// Its connection to each server, by pool (a gutter's servers are another
    /// pool's) and server name (a reload may move a server).
    conns: HashMap<String, HashMap<String, Own>>,
    pushes: PushSource,
    sink: PushSink,
    /// `CLIENT CACHING yes|no`, owed to the connection of the next command.
    caching: Option<bool>,
    /// Where the pool placed keys when last looked at (see [`Placed`]).
    placed: Placed,
}

/// Where a pool places keys: a reload that moves them, or a server ejected or
/// restored, sends reads of a key the client cached to a server that never told it
/// of the key, and writes elsewhere than the server that tracks it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Placed {
    generation: u64,
    /// A digest of the placement (servers, weights, hash, distribution, hash tag).
    placement: u64,
    /// The pool's ejection epoch.
    epoch: u64,
}

impl Placed {
    fn of(pool: &PoolRt) -> Placed {
        use std::hash::{Hash, Hasher};
        let config = pool.config();
        let servers: Vec<(&str, u32)> = config.servers[..config.keyspace_servers()]
            .iter()
            .map(|s| (s.name(), s.weight))
            .collect();
        let mut digest = std::collections::hash_map::DefaultHasher::new();
        format!(
            "{servers:?} {:?} {:?} {:?}",
            config.hash, config.distribution, config.hash_tag
        )
        .hash(&mut digest);
        Placed {
            generation: pool.generation.number,
            placement: digest.finish(),
            epoch: pool.shared().epoch(),
        }
    }

    /// Whether keys may have moved since `self`; `self` becomes now.
    fn moved(&mut self, pool: &PoolRt) -> bool {
        let unchanged =
            self.generation == pool.generation.number && self.epoch == pool.shared().epoch();
        if unchanged {
            return false;
        }
        let now = Placed::of(pool);
        let moved = now.placement != self.placement || now.epoch != self.epoch;
        *self = now;
        moved
    }
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Mode {
    bcast: bool,
    optin: bool,
    optout: bool,
    noloop: bool,
}

struct Own {
    conns: ServerConns,
    /// Where it connects: a server given another address by a reload gets a new one.
    address: ServerAddress,
    _slot: PinSlot,
}

impl Tracking {
    /// Queues `bytes` on the connection to `server` of `pool`, opening it.
    fn send(
        &mut self,
        pool: &PoolRt,
        server: ServerId,
        client: ClientId,
        bytes: Bytes,
        want_reply: bool,
    ) -> Option<ReplyRx> {
        let config = &pool.config().servers[server.0];
        let name = config.name();
        if !self.conns.contains_key(&pool.config().name) {
            self.conns
                .insert(pool.config().name.clone(), HashMap::new());
        }
        let conns = self.conns.get_mut(&pool.config().name).expect("inserted");
        let stale = conns
            .get(name)
            .is_some_and(|own| own.address != config.address);
        if stale {
            // Nothing it tracked is watched from now on.
            conns.remove(name);
            self.sink.send(Bytes::from_static(INVALIDATE_ALL));
        }
        if !conns.contains_key(name) {
            let Ok(slot) = PinSlot::take(pool) else {
                let full = Bytes::from(format!("-{MAX_PINNED}\r\n"));
                return pool.failed_reply(BackendError::Setup(full));
            };
            let own = Own {
                conns: pool.tracking_connection(server, &self.options, self.sink.clone()),
                address: config.address.clone(),
                _slot: slot,
            };
            conns.insert(name.to_string(), own);
        }
        let own = &conns[name];
        if let Some(yes) = self.caching.take() {
            let answer: &[u8] = if yes { b"yes" } else { b"no" };
            let caching = command(b"CLIENT", &[b"CACHING", answer]);
            pool.send_private(&own.conns, client, caching, false);
        }
        pool.send_private(&own.conns, client, bytes, want_reply)
    }
}

/// A request of `client` for `server`: on its tracking connection when it tracks,
/// else on the shared ones.
#[inline(always)]
pub(super) fn send_on(
    tracking: Option<&Tracker>,
    pool: &PoolRt,
    server: ServerId,
    client: ClientId,
    bytes: Bytes,
    resp3: bool,
    want_reply: bool,
) -> Option<ReplyRx> {
    match tracking {
        None => pool.send_redis_job(server, client, bytes, resp3, want_reply),
        Some(tracking) => send_tracked(tracking, pool, server, client, bytes, want_reply),
    }
}

impl Client {
    /// A request for `server` of `pool`: on the client's own tracking connection
    /// when it tracks, else on the shared ones.
    #[inline(always)]
    pub(super) fn send_redis(
        &self,
        pool: &PoolRt,
        server: ServerId,
        bytes: Bytes,
    ) -> Option<ReplyRx> {
        let tracking = self.tracking.as_ref();
        send_on(tracking, pool, server, self.id, bytes, self.resp3, true)
    }

    /// Starts or ends tracking (`None`), as `CLIENT LIST` shows it (flag `t`).
    pub(super) fn set_tracking(&mut self, tracking: Option<Tracker>) {
        let on = tracking.is_some();
        self.tracking = tracking;
        self.card.set(|p| p.tracking = on);
    }

    /// Whether the command moves the client's requests to or from its tracking
    /// connections: `CLIENT TRACKING`, and `RESET` or `HELLO` (which may leave
    /// RESP3) while it tracks.
    pub(super) fn changes_tracking(&self, spec: &CommandSpec, bytes: &[u8]) -> bool {
        match spec.kind {
            CommandKind::Local(LocalCommand::Client) => {
                self.argc() > 1 && self.arg(bytes, 1).eq_ignore_ascii_case(b"tracking")
            }
            CommandKind::Local(LocalCommand::Reset | LocalCommand::Hello) => {
                self.tracking.is_some()
            }
            _ => false,
        }
    }

    /// `CLIENT TRACKING ON|OFF [options]`.
    pub(super) fn client_tracking(&mut self, pool: &PoolRt, bytes: &Bytes) -> Pending {
        let on = match self.arg(bytes, 2).to_ascii_lowercase().as_slice() {
            b"on" => true,
            b"off" => false,
            _ => return err("ERR syntax error"),
        };
        if !on {
            self.set_tracking(None);
            return ready(|o| simple(o, "OK"));
        }
        if !self.resp3 {
            return err("ERR command 'client|tracking' is not supported by the proxy: in RESP2 it needs server push to another connection (REDIRECT); switch to RESP3 with HELLO 3");
        }
        let mut mode = Mode::default();
        let mut options = Vec::new();
        let mut prefixes = 0;
        let mut i = 3;
        while i < self.argc() {
            let option = self.arg(bytes, i).to_ascii_lowercase();
            match option.as_slice() {
                b"bcast" => mode.bcast = true,
                b"optin" => mode.optin = true,
                b"optout" => mode.optout = true,
                b"noloop" => mode.noloop = true,
                b"prefix" if i + 1 < self.argc() => {
                    options.push(bytes.slice(self.args[i].clone()));
                    i += 1;
                    prefixes += 1;
                }
                b"redirect" => {
                    return err("ERR command 'client|tracking' is not supported by the proxy: with REDIRECT the server would send one connection the invalidations of keys many clients read; leave REDIRECT out");
                }
                _ => return err("ERR syntax error"),
            }
            options.push(bytes.slice(self.args[i].clone()));
            i += 1;
        }
        // As Redis checks them.
        if mode.optin && mode.optout {
            return err("ERR You can't use both OPTIN and OPTOUT");
        }
        if mode.bcast && (mode.optin || mode.optout) {
            return err("ERR OPTIN and OPTOUT are not compatible with BCAST");
        }
        if prefixes > 0 && !mode.bcast {
            return err("ERR PREFIX option requires BCAST mode to be enabled");
        }
        if let Some(tracking) = &self.tracking {
            if tracking.borrow().options == options {
                return ready(|o| simple(o, "OK"));
            }
        }
        let (sink, pushes) = push_channel();
        if self.tracking.is_some() {
            // What the connections of the old options tracked is no longer watched.
            sink.send(Bytes::from_static(INVALIDATE_ALL));
        }
        self.set_tracking(Some(Rc::new(RefCell::new(Tracking {
            options,
            mode,
            conns: HashMap::new(),
            pushes,
            sink,
            caching: None,
            placed: Placed::of(pool),
        }))));
        ready(|o| simple(o, "OK"))
    }

    /// `CLIENT CACHING yes|no`: for the next command, with OPTIN or OPTOUT.
    pub(super) fn client_caching(&mut self, bytes: &Bytes) -> Pending {
        let yes = match self.arg(bytes, 2).to_ascii_lowercase().as_slice() {
            b"yes" => true,
            b"no" => false,
            _ => return err("ERR syntax error"),
        };
        let Some(tracking) = &self.tracking else {
            return err(NOT_OPTING);
        };
        let mut t = tracking.borrow_mut();
        match t.mode {
            mode if (yes && mode.optin) || (!yes && mode.optout) => {
                t.caching = Some(yes);
                ready(|o| simple(o, "OK"))
            }
            mode if mode.optin || mode.optout => err(match yes {
                true => {
                    "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode."
                }
                false => {
                    "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode."
                }
            }),
            _ => err(NOT_OPTING),
        }
    }

    /// `CLIENT GETREDIR`: 0 while tracking (without redirection), else -1.
    pub(super) fn client_getredir(&self) -> Pending {
        let redirect = if self.tracking.is_some() { 0 } else { -1 };
        ready(|o| integer(o, redirect))
    }

    /// `CLIENT TRACKINGINFO`: flags, redirect and prefixes, as Redis gives them.
    pub(super) fn client_trackinginfo(&self) -> Pending {
        let mut flags: Vec<&[u8]> = Vec::new();
        let mut prefixes: Vec<&[u8]> = Vec::new();
        let tracking = self.tracking.as_ref().map(|t| t.borrow());
        match &tracking {
            None => flags.push(b"off"),
            Some(t) => {
                flags.push(b"on");
                for (on, flag) in [
                    (t.mode.bcast, &b"bcast"[..]),
                    (t.mode.optin, b"optin"),
                    (t.mode.optout, b"optout"),
                    (t.caching == Some(true), b"caching-yes"),
                    (t.caching == Some(false), b"caching-no"),
                    (t.mode.noloop, b"noloop"),
                ] {
                    if on {
                        flags.push(flag);
                    }
                }
                let mut options = t.options.iter();
                while let Some(option) = options.next() {
                    if option.eq_ignore_ascii_case(b"prefix") {
                        prefixes.extend(options.next().map(|p| &p[..]));
                    }
                }
            }
        }
        let redirect = if self.tracking.is_some() { 0 } else { -1 };
        ready(|o| {
            match self.resp3 {
                true => map_header(o, 3),
                false => array_header(o, 6),
            }
            bulk(o, b"flags");
            array_header(o, flags.len());
            flags.iter().for_each(|f| bulk(o, f));
            bulk(o, b"redirect");
            integer(o, redirect);
            bulk(o, b"prefixes");
            array_header(o, prefixes.len());
            prefixes.iter().for_each(|p| bulk(o, p));
        })
    }

    /// The next invalidation for the client, if one came; everything to forget when
    /// keys may have moved (a Redis Cluster's nodes tell of keys that leave them).
    pub(super) fn poll_tracking(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let Some(tracking) = &self.tracking else {
            return Poll::Pending;
        };
        let mut t = tracking.borrow_mut();
        let pool = self.slot.pool();
        if pool.cluster().is_none() && t.placed.moved(&pool) {
            // Connections to servers no longer in the pool go.
            let names: Vec<&str> = pool.config().servers.iter().map(|s| s.name()).collect();
            if let Some(conns) = t.conns.get_mut(&pool.config().name) {
                conns.retain(|name, _| names.contains(&name.as_str()));
            }
            return Poll::Ready(Some(Bytes::from_static(INVALIDATE_ALL)));
        }
        match t.pushes.poll_recv(cx, INVALIDATE_ALL) {
            Poll::Ready(Some(push)) => Poll::Ready(Some(push)),
            // It holds a sender: never.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

/// Out of line: the common path only checks that the client does not track
/// (with the borrow inlined in `send_on`, `send_to` ran 10 more instructions per
/// request for clients that do not track).
#[inline(never)]
fn send_tracked(
    tracking: &Tracker,
    pool: &PoolRt,
    server: ServerId,
    client: ClientId,
    bytes: Bytes,
    want_reply: bool,
) -> Option<ReplyRx> {
    tracking
        .borrow_mut()
        .send(pool, server, client, bytes, want_reply)
}
