//! A pool as one worker runs it: its router and its server connections; and the
//! state all workers share: failure counts and ejections, so that a dead server
//! leaves every worker's placement after `server_failure_limit` failures in all.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cashew_config::{Config, Pool};
use cashew_route::Router;

use super::backend::{self, BackendError};
use super::handoff::{Job, JobQueue, Replies, ReplyRx};
use crate::log_at;
use crate::stats::{self, PoolCounters, Registry, ServerCounters, WorkerStats};

/// What the workers share about one pool. Written on failures and ejections only;
/// the request path reads one counter.
pub struct SharedPool {
    /// Clients of this pool across all workers, for `client_connections`.
    pub clients: AtomicU32,
    /// Bumped at every ejection: a worker that sees a new value rebuilds its router.
    epoch: AtomicU64,
    /// Consecutive failures of each server.
    failures: Vec<AtomicU32>,
    /// Until when each server is ejected, in ms since `origin`; 0 when it is not.
    ejected_until: Vec<AtomicU64>,
    origin: Instant,
}

impl SharedPool {
    pub fn new(servers: usize) -> SharedPool {
        SharedPool {
            clients: AtomicU32::new(0),
            epoch: AtomicU64::new(0),
            failures: (0..servers).map(|_| AtomicU32::new(0)).collect(),
            ejected_until: (0..servers).map(|_| AtomicU64::new(0)).collect(),
            origin: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        // Never 0, which means "not ejected".
        self.origin.elapsed().as_millis() as u64 + 1
    }

    /// When `server` comes back, if it is ejected now.
    fn ejected_until(&self, server: usize) -> Option<Instant> {
        match self.ejected_until[server].load(Relaxed) {
            0 => None,
            until if until <= self.now_ms() => None,
            until => Some(self.origin + Duration::from_millis(until - 1)),
        }
    }
}

pub struct PoolRt {
    index: usize,
    config: Arc<Config>,
    router: RefCell<Router>,
    /// `[server][connection]`: the queue of each server connection task.
    connections: Vec<Vec<Rc<JobQueue>>>,
    replies: Rc<Replies>,
    shared: Arc<SharedPool>,
    /// The shared epoch this worker's router was built at.
    seen_epoch: Cell<u64>,
    /// When an ejected server is due back, so the router is rebuilt then.
    next_rebuild: Cell<Option<Instant>>,
    stats: Arc<WorkerStats>,
    pub registry: Arc<Registry>,
    next_client: Cell<usize>,
}

impl PoolRt {
    /// Creates the pool and starts its server connection tasks on the current `LocalSet`.
    pub fn start(
        index: usize,
        config: Arc<Config>,
        stats: Arc<WorkerStats>,
        registry: Arc<Registry>,
        shared: Arc<SharedPool>,
    ) -> Rc<PoolRt> {
        let pool = Rc::new_cyclic(|weak| {
            let pool = &config.pools[index];
            let connections = (0..pool.servers.len())
                .map(|s| {
                    (0..pool.server_connections)
                        .map(|_| {
                            let queue = Rc::new(JobQueue::default());
                            let task =
                                backend::run(weak.clone(), s, queue.clone(), pool.preconnect);
                            tokio::task::spawn_local(task);
                            queue
                        })
                        .collect()
                })
                .collect();
            let nodes = pool.route_nodes();
            let router = Router::new(pool.hash, pool.distribution, pool.hash_tag, &nodes);
            PoolRt {
                index,
                router: RefCell::new(router),
                connections,
                replies: Rc::default(),
                shared,
                seen_epoch: Cell::new(0),
                next_rebuild: Cell::new(None),
                stats,
                registry,
                next_client: Cell::new(0),
                config,
            }
        });
        pool.rebuild();
        pool
    }

    pub fn config(&self) -> &Pool {
        &self.config.pools[self.index]
    }

    pub fn clients(&self) -> &AtomicU32 {
        &self.shared.clients
    }

    pub fn stats(&self, server: usize) -> &ServerCounters {
        &self.stats.servers[self.index][server]
    }

    pub fn pool_stats(&self) -> &PoolCounters {
        &self.stats.pools[self.index]
    }

    pub fn proxy_stats(&self) -> &stats::ProxyCounters {
        &self.stats.proxy
    }

    pub fn server_count(&self) -> usize {
        self.connections.len()
    }

    /// A number for a new client; it picks the client's connection to each server,
    /// so one client's requests to a server stay in order on one connection.
    pub fn new_client_id(&self) -> usize {
        let id = self.next_client.get();
        self.next_client.set(id.wrapping_add(1));
        id
    }

    /// The server for `key`, or `None` when every server is ejected.
    #[inline]
    pub fn route(&self, key: &[u8]) -> Option<usize> {
        let due = self.next_rebuild.get().is_some_and(|t| Instant::now() >= t);
        if due || self.shared.epoch.load(Relaxed) != self.seen_epoch.get() {
            self.rebuild();
        }
        self.router.borrow().route(key)
    }

    pub fn is_live(&self, server: usize) -> bool {
        self.shared.ejected_until(server).is_none()
    }

    /// Queues `bytes` for `server`; the reply, if wanted, comes on the returned receiver.
    pub fn send(
        &self,
        server: usize,
        client: usize,
        bytes: Bytes,
        want_reply: bool,
    ) -> Option<ReplyRx> {
        let stats = self.stats(server);
        let len = bytes.len() as u64;
        stats.add(stats::server::REQUESTS, 1);
        stats.add(stats::server::REQUEST_BYTES, len);
        stats.add(stats::server::IN_QUEUE, 1);
        stats.add(stats::server::IN_QUEUE_BYTES, len);
        let (reply, rx) = match want_reply {
            true => {
                let (tx, rx) = self.replies.channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        let connections = &self.connections[server];
        connections[client % connections.len()].push(Job { bytes, reply });
        rx
    }

    pub fn server_ok(&self, server: usize) {
        let failures = &self.shared.failures[server];
        // Read first: most replies find it at 0 already, and a store would bounce
        // the cache line between workers.
        if failures.load(Relaxed) != 0 {
            failures.store(0, Relaxed);
        }
    }

    pub fn server_failed(&self, server: usize, error: BackendError) {
        use stats::server::{SERVER_EOF, SERVER_ERR, SERVER_TIMEDOUT};
        let counter = match error {
            BackendError::TimedOut => SERVER_TIMEDOUT,
            BackendError::Closed => SERVER_EOF,
            _ => SERVER_ERR,
        };
        self.stats(server).add(counter, 1);
        let pool = self.config();
        let name = pool.servers[server].name();
        log_at!(
            crate::log::WARN,
            "pool '{}': server '{name}' failed: {error:?}",
            pool.name
        );

        let shared = &self.shared;
        let failures = shared.failures[server].fetch_add(1, Relaxed) + 1;
        if !pool.auto_eject_hosts || failures < pool.server_failure_limit {
            return;
        }
        let current = shared.ejected_until[server].load(Relaxed);
        if current > shared.now_ms() {
            return;
        }
        let until = shared.now_ms() + pool.server_retry_timeout_ms;
        // One worker wins the ejection; it counts it and tells the others.
        if shared.ejected_until[server]
            .compare_exchange(current, until, Relaxed, Relaxed)
            .is_ok()
        {
            shared.failures[server].store(0, Relaxed);
            shared.epoch.fetch_add(1, Relaxed);
            self.pool_stats().add(stats::pool::SERVER_EJECTS, 1);
            self.stats(server)
                .set(stats::server::SERVER_EJECTED_AT, stats::now_usec());
            log_at!(
                crate::log::WARN,
                "pool '{}': ejecting server '{name}' for {} ms",
                pool.name,
                pool.server_retry_timeout_ms
            );
        }
        self.rebuild();
    }

    /// Rebuilds placement over the servers that are live now.
    fn rebuild(&self) {
        self.seen_epoch.set(self.shared.epoch.load(Relaxed));
        let pool = self.config();
        let mut nodes = pool.route_nodes();
        let mut next = None;
        for (server, node) in nodes.iter_mut().enumerate() {
            let until = self.shared.ejected_until(server);
            node.live = until.is_none();
            if let Some(t) = until {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        }
        *self.router.borrow_mut() =
            Router::new(pool.hash, pool.distribution, pool.hash_tag, &nodes);
        self.next_rebuild.set(next);
    }
}

impl Drop for PoolRt {
    /// Lets the server connection tasks finish.
    fn drop(&mut self) {
        for queue in self.connections.iter().flatten() {
            queue.close();
        }
    }
}
