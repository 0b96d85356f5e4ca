//! A pool as one worker runs it in one generation: its router and its server
//! connections; and the slot through which clients reach the pool of the current
//! generation, so a reload swaps routing under connected clients between two
//! batches of requests.

use std::cell::{Cell, OnceCell, Ref, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;
use cashew_config::Pool;
use cashew_protocol::resp::Effect;
use cashew_protocol::server::{Memcache, Redis};
use cashew_route::Router;

use super::handoff::{BackendError, Job, Replies, ReplyRx};
use super::ids::{ClientId, ServerId};
use super::server::{LinkSettings, PushSink, ServerConns, ServerLink};
use super::tasks::TaskCount;
use crate::log::{Limiter, INFO, WARN};
use crate::log_at;
use crate::state::counters::{PoolCounter, PoolCounters, ProxyCounters, Registry, ServerCounter};
use crate::state::generation::Generation;
use crate::state::health::{PoolShared, ServerHealth, ServerState};

/// Most replicas a key may have.
pub(crate) const MAX_REPLICAS: usize = 16;

/// The servers that keep a key, in order; during a migration, then the servers
/// the previous placement kept it on (from `old_from`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Replicas {
    servers: [u16; MAX_REPLICAS],
    len: u8,
    old_from: u8,
}

impl Replicas {
    /// Whether replica `i` is where the previous placement kept the key (during a
    /// migration), not where the key is placed now.
    pub(crate) fn is_old(&self, i: usize) -> bool {
        i >= usize::from(self.old_from)
    }

    /// Whether the previous placement kept the key elsewhere too (keys are moving).
    pub(crate) fn has_previous(&self) -> bool {
        self.len > self.old_from
    }

    /// The servers the key is placed on now.
    pub(crate) fn current(&self) -> impl Iterator<Item = ServerId> + '_ {
        self.servers().take(usize::from(self.old_from))
    }

    /// The servers only the previous placement kept the key on.
    pub(crate) fn previous(&self) -> impl Iterator<Item = ServerId> + '_ {
        self.servers().skip(usize::from(self.old_from))
    }

    pub(crate) fn servers(&self) -> impl Iterator<Item = ServerId> + '_ {
        self.servers[..self.len as usize]
            .iter()
            .map(|&s| ServerId(usize::from(s)))
    }

    pub(crate) fn get(&self, i: usize) -> Option<ServerId> {
        (i < self.len as usize).then(|| ServerId(usize::from(self.servers[i])))
    }

    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }
}

pub(crate) struct PoolRt {
    pub(crate) generation: Arc<Generation>,
    index: usize,
    router: RefCell<Router>,
    /// One per server, in config order; kept from the previous generation's pool
    /// when the server's connection settings did not change. During a migration,
    /// then the servers only the previous placement has.
    servers: Vec<Rc<ServerConns>>,
    /// While keys move after a reload (`migrate_ms`): where they were.
    migration: Option<MigrationRt>,
    migration_over: Cell<bool>,
    /// Redis pools: RESP3 connections for RESP3 clients, opened on first use.
    servers3: Vec<OnceCell<Rc<ServerConns>>>,
    backends: Rc<TaskCount>,
    /// The pool that takes keys whose servers are all ejected (set by the worker
    /// once every pool of the generation is built).
    gutter: RefCell<Weak<PoolSlot>>,
    /// The pools `routes` names, in the order of the config's routes.
    routes: RefCell<Vec<Weak<PoolSlot>>>,
    /// The pool `shadow` names, and the copies sent to it not yet answered.
    shadow: RefCell<Weak<PoolSlot>>,
    pub(crate) shadow_in_flight: Cell<usize>,
    replies: Rc<Replies>,
    /// The shared epoch this worker's router was built at.
    seen_epoch: Cell<u64>,
    /// When a full server queue was last logged (µs since the epoch): once a second.
    queue_full_logged_at: Cell<u64>,
    /// Log lines of refused requests, failed TLS handshakes and failed AUTHs.
    refused_log: Limiter,
    tls_log: Limiter,
    auth_log: Limiter,
    /// When an ejected server is due back, so the router is rebuilt then.
    next_rebuild: Cell<Option<Instant>>,
    shared: Arc<PoolShared>,
    /// With `hotkeys: true`: one request in how many is sampled, and the sketch's
    /// size (read on every request, so kept here rather than looked up).
    pub(crate) hotkeys: Option<(u32, u32)>,
    /// A Redis Cluster pool's map (read on every request, so kept here).
    cluster: Option<Arc<cashew_config::ClusterTopology>>,
    /// Whether read-only commands go to replicas (`read_from`, with replicas known).
    replica_reads: bool,
    pool_stats: Arc<PoolCounters>,
    proxy_stats: Arc<ProxyCounters>,
}

/// The placement a pool had before a reload, while its keys move.
struct MigrationRt {
    router: Router,
    /// The previous placement's servers, as ids of this pool.
    ids: Vec<ServerId>,
    until: Instant,
}

/// What a worker lends every pool it builds.
pub(crate) struct WorkerCtx {
    pub(crate) id: usize,
    pub(crate) replies: Rc<Replies>,
    /// Client and server connection tasks, counted so a drain can wait for them.
    pub(crate) clients: Rc<TaskCount>,
    pub(crate) backends: Rc<TaskCount>,
}

impl PoolRt {
    /// Builds pool `index` of `generation`, reusing `previous`'s connections to
    /// servers whose name and connection settings are unchanged; new connections
    /// start on the current `LocalSet`.
    pub(crate) fn new(
        generation: Arc<Generation>,
        index: usize,
        worker: &WorkerCtx,
        previous: Option<&PoolRt>,
    ) -> PoolRt {
        let pool = &generation.config.pools[index];
        let state = &generation.pools[index];
        let counters = &state.workers[worker.id];
        let link = |s: usize, resp3: bool| ServerLink {
            pool_name: pool.name.clone(),
            server_name: pool.servers[s].name().to_string(),
            settings: LinkSettings::new(pool, &state.tls, &pool.servers[s], resp3),
            counters: counters.servers[s].clone(),
            pool_counters: counters.pool.clone(),
            health: state.servers[s].clone(),
            retired: false,
            pushes: None,
        };
        // The previous generation's connections to the same server with the same
        // settings, counters and health.
        let kept = |wanted: &ServerLink, resp3: bool| -> Option<Rc<ServerConns>> {
            let previous = previous?;
            let mut groups = previous
                .servers
                .iter()
                .chain(previous.servers3.iter().filter_map(|c| c.get()));
            groups
                .find(|c| {
                    let have = &c.link;
                    have.settings.resp3 == resp3
                        && have.server_name == wanted.server_name
                        && have.settings == wanted.settings
                        && Arc::ptr_eq(&have.health, &wanted.health)
                        && Arc::ptr_eq(&have.counters, &wanted.counters)
                        && Arc::ptr_eq(&have.pool_counters, &wanted.pool_counters)
                })
                .cloned()
        };
        let mut servers: Vec<Rc<ServerConns>> = (0..pool.servers.len())
            .map(|s| {
                let wanted = link(s, false);
                kept(&wanted, false).unwrap_or_else(|| {
                    Rc::new(start_conns(pool, Rc::new(wanted), &worker.backends))
                })
            })
            .collect();
        let migration = state.migration.as_ref().filter(|m| m.is_active()).map(|m| {
            let from = &m.from;
            let ids = from
                .servers
                .iter()
                .map(|old| {
                    if let Some(i) = pool.servers.iter().position(|s| s.name() == old.name()) {
                        return ServerId(i);
                    }
                    // A server only the previous placement has: its keys are read
                    // from it (and deleted there on writes) until the window ends.
                    let wanted = ServerLink {
                        pool_name: pool.name.clone(),
                        server_name: old.name().to_string(),
                        settings: LinkSettings::new(from, &state.tls, old, false),
                        counters: Arc::default(),
                        pool_counters: counters.pool.clone(),
                        health: Arc::new(ServerHealth::new(state.shared.clone())),
                        retired: true,
                        pushes: None,
                    };
                    let conns = previous
                        .and_then(|p| p.retired(&wanted))
                        .unwrap_or_else(|| {
                            Rc::new(start_conns(pool, Rc::new(wanted), &worker.backends))
                        });
                    servers.push(conns);
                    ServerId(servers.len() - 1)
                })
                .collect();
            MigrationRt {
                router: Router::new(
                    from.hash,
                    from.distribution,
                    from.hash_tag,
                    &from.route_nodes(),
                ),
                ids,
                until: m.until,
            }
        });
        let servers3 = (0..pool.servers.len())
            .map(|s| {
                let cell = OnceCell::new();
                if pool.redis {
                    if let Some(conns) = kept(&link(s, true), true) {
                        let _ = cell.set(conns);
                    }
                }
                cell
            })
            .collect();
        let router = Router::new(pool.hash, pool.distribution, pool.hash_tag, &[]);
        let rt = PoolRt {
            index,
            router: RefCell::new(router),
            servers,
            servers3,
            migration,
            migration_over: Cell::new(false),
            backends: worker.backends.clone(),
            gutter: RefCell::default(),
            routes: RefCell::default(),
            shadow: RefCell::default(),
            shadow_in_flight: Cell::new(0),
            replies: worker.replies.clone(),
            seen_epoch: Cell::new(0),
            queue_full_logged_at: Cell::new(0),
            refused_log: Limiter::default(),
            tls_log: Limiter::default(),
            auth_log: Limiter::default(),
            next_rebuild: Cell::new(None),
            shared: state.shared.clone(),
            pool_stats: counters.pool.clone(),
            proxy_stats: generation.registry.workers[worker.id].clone(),
            hotkeys: pool
                .hotkeys
                .then_some((pool.hotkeys_sample, pool.hotkeys_capacity)),
            cluster: pool.cluster.clone(),
            replica_reads: pool.read_from != cashew_config::ReadFrom::Master
                && (pool.cluster.is_some() || pool.sentinel_replicas.is_some()),
            generation,
        };
        rt.rebuild();
        rt
    }

    pub(crate) fn config(&self) -> &Pool {
        &self.generation.config.pools[self.index]
    }

    /// This pool's connections to a server only a previous placement has, with
    /// the same settings.
    fn retired(&self, wanted: &ServerLink) -> Option<Rc<ServerConns>> {
        self.servers[self.config().servers.len()..]
            .iter()
            .find(|c| {
                c.link.server_name == wanted.server_name && c.link.settings == wanted.settings
            })
            .cloned()
    }

    /// The previous placement while keys are moving after a reload.
    fn migration(&self) -> Option<&MigrationRt> {
        let m = self.migration.as_ref()?;
        if self.migration_over.get() {
            return None;
        }
        if Instant::now() >= m.until {
            self.migration_over.set(true);
            return None;
        }
        Some(m)
    }

    /// Whether keys are moving: requests of single keys and retrievals then look
    /// where the previous placement put a key too.
    pub(crate) fn migrating(&self) -> bool {
        self.migration().is_some()
    }

    pub(crate) fn shared(&self) -> &Arc<PoolShared> {
        &self.shared
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.generation.registry
    }

    pub(crate) fn pool_stats(&self) -> &PoolCounters {
        &self.pool_stats
    }

    pub(crate) fn pool_stats_handle(&self) -> Arc<PoolCounters> {
        self.pool_stats.clone()
    }

    pub(crate) fn proxy_stats(&self) -> &ProxyCounters {
        &self.proxy_stats
    }

    /// Counts a client request cashew answered with an error of its own (`kind`, a
    /// `stats::pool::ERR_*` index) and logs it at INFO, at most once a second per
    /// pool and worker so that a broken client cannot flood the log.
    pub(crate) fn refused(&self, kind: PoolCounter, reply: &[u8]) {
        self.pool_stats.add(kind, 1);
        let Some(more) = self.refused_log.check(INFO) else {
            return;
        };
        let text = String::from_utf8_lossy(reply);
        let text = text.trim_end().trim_start_matches('-');
        let text: String = text.chars().take(200).collect();
        log_at!(
            INFO,
            "pool '{}': a client request refused: {text}{more}",
            self.config().name
        );
    }

    /// What clients of a TLS listener handshake with (this generation's
    /// certificate: clients connected before a reload keep theirs).
    pub(crate) fn tls_acceptor(&self) -> Option<&tokio_rustls::TlsAcceptor> {
        self.generation.pools[self.index].tls.accept.as_ref()
    }

    /// Counts and logs a client whose TLS handshake failed.
    pub(crate) fn tls_failed(&self, peer: &str, reason: &str) {
        self.pool_stats.add(PoolCounter::TlsHandshakeFailures, 1);
        if let Some(more) = self.tls_log.check(INFO) {
            let name = &self.config().name;
            log_at!(
                INFO,
                "pool '{name}': TLS handshake with {peer} failed: {reason}{more}"
            );
        }
    }

    /// Counts and logs a failed `AUTH` or `HELLO .. AUTH`.
    pub(crate) fn auth_failed(&self, user: &str) {
        self.pool_stats.add(PoolCounter::AuthFailures, 1);
        if let Some(more) = self.auth_log.check(INFO) {
            let name = &self.config().name;
            log_at!(
                INFO,
                "pool '{name}': a client failed to authenticate as '{user}'{more}"
            );
        }
    }

    /// Counts a request that failed because of its server.
    pub(crate) fn server_failed(&self, error: &BackendError) {
        let kind = match error {
            BackendError::TimedOut => PoolCounter::ErrTimeout,
            _ => PoolCounter::ErrServer,
        };
        self.pool_stats.add(kind, 1);
    }

    /// Every connection group toward `server` on this worker, RESP3 ones included.
    #[cfg(any(test, feature = "harness"))]
    pub(crate) fn server_connections(&self, server: ServerId) -> Vec<Rc<ServerConns>> {
        let resp3 = self.servers3[server.0].get().cloned();
        std::iter::once(self.servers[server.0].clone())
            .chain(resp3)
            .collect()
    }

    fn health(&self, server: ServerId) -> &ServerHealth {
        &self.servers[server.0].link.health
    }

    /// The server for `key`, or `None` when every server is ejected. With stable
    /// placement this is the key's first server, live or not (see [`replicas`]).
    ///
    /// [`replicas`]: Self::replicas
    #[inline]
    pub(crate) fn route(&self, key: &[u8]) -> Option<ServerId> {
        if let Some(cluster) = &self.cluster {
            return cluster.slots.route(key).map(|s| ServerId(usize::from(s)));
        }
        let due = self.next_rebuild.get().is_some_and(|t| Instant::now() >= t);
        if due || self.shared().epoch() != self.seen_epoch.get() {
            self.rebuild();
        }
        self.router.borrow().route(key).map(ServerId)
    }

    /// A Redis Cluster pool's map, when it is one.
    #[inline]
    pub(crate) fn cluster(&self) -> Option<&cashew_config::ClusterTopology> {
        self.cluster.as_deref()
    }

    /// The server of the pool named `name` (a cluster node's `host:port`).
    pub(crate) fn server_named(&self, name: &str) -> Option<ServerId> {
        self.config()
            .servers
            .iter()
            .position(|s| s.name() == name)
            .map(ServerId)
    }

    /// Whether an ejected server's keys stay placed on it (served by its replicas
    /// or the gutter pool) rather than re-hashed onto the other servers.
    pub(crate) fn stable_placement(&self) -> bool {
        self.config().stable_placement()
    }

    /// The servers that keep `key`, in order: its own, then its replicas.
    pub(crate) fn replicas(&self, key: &[u8]) -> Replicas {
        let mut servers = [0usize; MAX_REPLICAS];
        let want = (self.config().replicas as usize).clamp(1, MAX_REPLICAS);
        let n = self.router.borrow().replicas(key, &mut servers[..want]);
        let mut out = Replicas {
            servers: [0; MAX_REPLICAS],
            len: n as u8,
            old_from: n as u8,
        };
        for (o, s) in out.servers.iter_mut().zip(&servers[..n]) {
            *o = *s as u16;
        }
        if let Some(m) = self.migration() {
            let mut old = [0usize; MAX_REPLICAS];
            let had = m.router.replicas(key, &mut old[..want]);
            for &o in &old[..had] {
                let id = m.ids[o].0 as u16;
                let len = usize::from(out.len);
                if len < MAX_REPLICAS && !out.servers[..len].contains(&id) {
                    out.servers[len] = id;
                    out.len += 1;
                }
            }
        }
        out
    }

    /// The gutter pool in force, when this pool has one.
    pub(crate) fn gutter(&self) -> Option<Rc<PoolSlot>> {
        self.gutter.borrow().upgrade()
    }

    pub(crate) fn set_gutter(&self, gutter: &Rc<PoolSlot>) {
        *self.gutter.borrow_mut() = Rc::downgrade(gutter);
    }

    pub(crate) fn set_routes(&self, targets: Vec<Weak<PoolSlot>>) {
        *self.routes.borrow_mut() = targets;
    }

    pub(crate) fn set_shadow(&self, target: &Rc<PoolSlot>) {
        *self.shadow.borrow_mut() = Rc::downgrade(target);
    }

    /// The shadow pool in force, when this pool has one.
    pub(crate) fn shadow_pool(&self) -> Option<Rc<PoolRt>> {
        let slot = self.shadow.borrow().upgrade()?;
        let pool = slot.pool().clone();
        Some(pool)
    }

    pub(crate) fn has_routes(&self) -> bool {
        !self.config().routes.is_empty()
    }

    /// The pool `key` is routed to, when a route of this pool matches it.
    pub(crate) fn routed(&self, key: &[u8]) -> Option<Rc<PoolRt>> {
        let routes = &self.config().routes;
        let i = routes
            .iter()
            .position(|(prefix, _)| key.starts_with(prefix.as_bytes()))?;
        let slot = self.routes.borrow().get(i)?.upgrade()?;
        let pool = slot.pool().clone();
        Some(pool)
    }

    /// Requests queued on this worker's connections to `server`, not yet written.
    pub(crate) fn queued(&self, server: ServerId) -> u64 {
        self.servers[server.0]
            .link
            .counters
            .get(ServerCounter::InQueue)
    }

    pub(crate) fn server_state(&self, server: ServerId) -> ServerState {
        self.health(server).state()
    }

    pub(crate) fn is_live(&self, server: ServerId) -> bool {
        self.health(server).is_live()
    }

    /// The version of the first live server that has told it.
    pub(crate) fn server_version(&self) -> Option<std::sync::Arc<str>> {
        self.server_ids()
            .filter(|&s| self.is_live(s))
            .find_map(|s| self.health(s).version())
    }

    /// The first live server that holds the keyspace (not a replica found for reads).
    pub(crate) fn first_live(&self) -> Option<ServerId> {
        (0..self.keyspace_servers())
            .map(ServerId)
            .find(|&s| self.is_live(s))
    }

    /// The tag of the pool's server list that its SCAN cursors carry.
    pub(crate) fn scan_tag(&self) -> u64 {
        self.generation.pools[self.index].scan_tags.current()
    }

    /// How many servers hold the keyspace: the first ones, all but the replicas
    /// found for reads.
    pub(crate) fn keyspace_servers(&self) -> usize {
        self.config().keyspace_servers()
    }

    /// The server a command for `master` goes to: for a read with `read_from` a
    /// replica, one of the master's live replicas (spread by client), else the
    /// master.
    #[inline(always)]
    pub(crate) fn server_for(
        &self,
        master: ServerId,
        effect: Effect,
        client: ClientId,
    ) -> ServerId {
        if effect == Effect::Read && self.replica_reads {
            return self.replica_of(master, client);
        }
        master
    }

    #[inline(never)]
    fn replica_of(&self, master: ServerId, client: ClientId) -> ServerId {
        let replicas = self.config().read_replicas(master.0);
        let live = || {
            replicas
                .iter()
                .map(|&r| ServerId(usize::from(r)))
                .filter(|&r| self.is_live(r))
        };
        match live().count() {
            0 => master,
            n => live().nth(client.0 % n).unwrap_or(master),
        }
    }

    /// Every server of the pool, in order.
    pub(crate) fn server_ids(&self) -> impl Iterator<Item = ServerId> {
        (0..self.config().servers.len()).map(ServerId)
    }

    /// Queues `bytes` for `server` on `client`'s connection to it; the reply, if
    /// wanted, comes on the returned receiver.
    pub(crate) fn send(
        &self,
        server: ServerId,
        client: ClientId,
        bytes: Bytes,
        want_reply: bool,
    ) -> Option<ReplyRx> {
        self.send_job(&self.servers[server.0], client, bytes, want_reply, false)
    }

    /// As [`send`](Self::send), over a RESP3 connection when `resp3` (a redis
    /// client that asked for RESP3 gets exactly what such a client gets).
    pub(crate) fn send_redis(
        &self,
        server: ServerId,
        client: ClientId,
        bytes: Bytes,
        resp3: bool,
    ) -> Option<ReplyRx> {
        self.send_redis_job(server, client, bytes, resp3, true)
    }

    /// As [`send_redis`](Self::send_redis), with the reply dropped unless `want_reply`.
    pub(crate) fn send_redis_job(
        &self,
        server: ServerId,
        client: ClientId,
        bytes: Bytes,
        resp3: bool,
        want_reply: bool,
    ) -> Option<ReplyRx> {
        if !resp3 {
            return self.send(server, client, bytes, want_reply);
        }
        let conns = self.servers3[server.0].get_or_init(|| {
            let first = &self.servers[server.0].link;
            let pool = self.config();
            let tls = &self.generation.pools[self.index].tls;
            let link = ServerLink {
                settings: LinkSettings::new(pool, tls, &pool.servers[server.0], true),
                pool_name: first.pool_name.clone(),
                server_name: first.server_name.clone(),
                counters: first.counters.clone(),
                pool_counters: first.pool_counters.clone(),
                health: first.health.clone(),
                retired: false,
                pushes: None,
            };
            Rc::new(ServerConns::start::<Redis>(Rc::new(link), &self.backends))
        });
        self.send_job(conns, client, bytes, want_reply, false)
    }

    /// A connection of its own to `server`, for one client's pinned session
    /// (a transaction, a blocking call): opened at its first request, with the
    /// pool's handshake, and no `timeout` when `blocking` (the command's own
    /// timeout rules).
    pub(crate) fn private_connection(
        &self,
        server: ServerId,
        resp3: bool,
        blocking: bool,
    ) -> ServerConns {
        let link = self.private_link(server, resp3, blocking);
        ServerConns::start::<Redis>(Rc::new(link), &self.backends)
    }

    /// A connection of a tracking client's own to `server`, in RESP3, whose
    /// handshake turns tracking on with the client's `options`, and whose server's
    /// pushes (its invalidations) go to `pushes`.
    pub(crate) fn tracking_connection(
        &self,
        server: ServerId,
        options: &[Bytes],
        pushes: PushSink,
    ) -> ServerConns {
        let mut link = self.private_link(server, true, false);
        let mut args: Vec<&[u8]> = vec![b"CLIENT", b"TRACKING", b"ON"];
        args.extend(options.iter().map(|o| &o[..]));
        link.settings.handshake.add_before_version(&args);
        link.pushes = Some(pushes);
        ServerConns::start::<Redis>(Rc::new(link), &self.backends)
    }

    /// Runs a task of a client's own server connection, counted with the
    /// worker's server connections (a drain waits for them).
    pub(crate) fn spawn_private(&self, task: impl std::future::Future<Output = ()> + 'static) {
        self.backends.spawn(task);
    }

    /// What a connection of one client's own to `server` knows of it.
    pub(crate) fn private_link(&self, server: ServerId, resp3: bool, blocking: bool) -> ServerLink {
        let first = &self.servers[server.0].link;
        let pool = self.config();
        let tls = &self.generation.pools[self.index].tls;
        let mut settings = LinkSettings::new(pool, tls, &pool.servers[server.0], resp3);
        settings.connections = 1;
        settings.preconnect = false;
        if blocking {
            settings.timeout = None;
        }
        ServerLink {
            settings,
            pool_name: first.pool_name.clone(),
            server_name: first.server_name.clone(),
            counters: first.counters.clone(),
            pool_counters: first.pool_counters.clone(),
            health: first.health.clone(),
            retired: false,
            pushes: None,
        }
    }

    /// Queues a request on a private connection (see [`private_connection`](Self::private_connection)).
    pub(crate) fn send_private(
        &self,
        conns: &ServerConns,
        client: ClientId,
        bytes: Bytes,
        want_reply: bool,
    ) -> Option<ReplyRx> {
        self.send_job(conns, client, bytes, want_reply, false)
    }

    /// Queues a request that ends with `mn`: its reply runs up to `MN`.
    pub(crate) fn send_until_noop(
        &self,
        server: ServerId,
        client: ClientId,
        bytes: Bytes,
    ) -> Option<ReplyRx> {
        self.send_job(&self.servers[server.0], client, bytes, true, true)
    }

    fn send_job(
        &self,
        conns: &ServerConns,
        client: ClientId,
        bytes: Bytes,
        want_reply: bool,
        until_noop: bool,
    ) -> Option<ReplyRx> {
        let queue = conns.queue(client);
        let limit = self.config().server_queue_limit as usize;
        if queue.unsent() > 0 && queue.unsent() + bytes.len() > limit {
            // The server is not keeping up: fail now rather than hold more.
            return self.refuse_queue_full(conns, want_reply);
        }
        let stats = &conns.link.counters;
        let len = bytes.len() as u64;
        stats.add(ServerCounter::Requests, 1);
        stats.add(ServerCounter::RequestBytes, len);
        stats.add(ServerCounter::InQueue, 1);
        stats.add(ServerCounter::InQueueBytes, len);
        let (reply, rx) = match want_reply {
            true => {
                let (tx, rx) = self.replies.channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        queue.push(Job {
            bytes,
            reply,
            until_noop,
        });
        rx
    }

    fn refuse_queue_full(&self, conns: &ServerConns, want_reply: bool) -> Option<ReplyRx> {
        conns.link.counters.add(ServerCounter::ServerErr, 1);
        let now = crate::clock::now_usec();
        let last = self.queue_full_logged_at.get();
        if now.saturating_sub(last) >= 1_000_000 {
            self.queue_full_logged_at.set(now);
            log_at!(
                WARN,
                "pool '{}': server '{}' has more than server_queue_limit {} bytes of requests waiting; failing new ones",
                conns.link.pool_name,
                conns.link.server_name,
                self.config().server_queue_limit
            );
        }
        if !want_reply {
            return None;
        }
        self.failed_reply(BackendError::QueueFull)
    }

    /// A reply that is `error` already, for a request that was never sent.
    pub(crate) fn failed_reply(&self, error: BackendError) -> Option<ReplyRx> {
        let (tx, rx) = self.replies.channel();
        tx.send(Err(error));
        Some(rx)
    }

    /// Rebuilds placement over the servers that are live now (with stable
    /// placement, over all of them: liveness is looked at per request).
    fn rebuild(&self) {
        self.seen_epoch.set(self.shared().epoch());
        let pool = self.config();
        let mut nodes = pool.route_nodes();
        let mut next = None;
        if !pool.stable_placement() {
            for (server, node) in self.server_ids().zip(nodes.iter_mut()) {
                let state = self.server_state(server);
                node.live = state == ServerState::Up;
                if let ServerState::Ejected(t) = state {
                    next = Some(next.map_or(t, |n: Instant| n.min(t)));
                }
            }
        }
        *self.router.borrow_mut() =
            Router::new(pool.hash, pool.distribution, pool.hash_tag, &nodes);
        self.next_rebuild.set(next);
    }
}

/// Starts connections to a server of `pool` in the pool's protocol.
fn start_conns(pool: &Pool, link: Rc<ServerLink>, tasks: &Rc<TaskCount>) -> ServerConns {
    match pool.redis {
        true => ServerConns::start::<Redis>(link, tasks),
        false => ServerConns::start::<Memcache>(link, tasks),
    }
}

/// Where a worker's clients find their pool. A reload replaces the pool in the
/// slot; removing the pool (or draining the worker) closes the slot: its clients
/// finish the requests they have read, then close.
pub(crate) struct PoolSlot {
    current: RefCell<Rc<PoolRt>>,
    closing: Cell<bool>,
    /// Each client's task, woken when the slot closes. A task's waker does not
    /// change, so it is registered once rather than at every turn of the loop.
    clients: RefCell<HashMap<ClientId, Waker>>,
    next_client: Cell<usize>,
}

impl PoolSlot {
    pub(crate) fn new(pool: PoolRt) -> PoolSlot {
        PoolSlot {
            current: RefCell::new(Rc::new(pool)),
            closing: Cell::new(false),
            clients: RefCell::default(),
            next_client: Cell::new(0),
        }
    }

    /// The pool of the generation in force. Held only while handling one batch.
    #[inline]
    pub(crate) fn pool(&self) -> Ref<'_, Rc<PoolRt>> {
        self.current.borrow()
    }

    /// A new generation's pool; every client is woken, so that a subscriber whose
    /// channels it moved learns of it while it waits.
    pub(crate) fn replace(&self, pool: PoolRt) {
        *self.current.borrow_mut() = Rc::new(pool);
        for waker in self.clients.borrow().values() {
            waker.wake_by_ref();
        }
    }

    /// Closes the slot and wakes every client, so each finishes and closes.
    pub(crate) fn close(&self) {
        self.closing.set(true);
        let clients = std::mem::take(&mut *self.clients.borrow_mut());
        for waker in clients.into_values() {
            waker.wake();
        }
    }

    #[inline]
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// Registers the task serving client `id`, to be woken when the slot closes.
    pub(crate) fn register(&self, id: ClientId, waker: Waker) {
        if !self.closing.get() {
            self.clients.borrow_mut().insert(id, waker);
        }
    }

    pub(crate) fn unregister(&self, id: ClientId) {
        self.clients.borrow_mut().remove(&id);
    }

    /// A number for a new client; it picks the client's connection to each server,
    /// so one client's requests to a server stay in order on one connection.
    pub(crate) fn new_client_id(&self) -> ClientId {
        let id = self.next_client.get();
        self.next_client.set(id.wrapping_add(1));
        ClientId(id)
    }
}
