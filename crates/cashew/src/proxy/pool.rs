//! A pool as one worker runs it: its router, its server connections, and the
//! failure counts that eject and restore servers.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cashew_config::{Config, Pool};
use cashew_route::Router;
use tokio::sync::{mpsc, oneshot};

use super::backend::{self, BackendError, Job, Reply};
use crate::log_at;
use crate::stats::{self, PoolCounters, Registry, ServerCounters, WorkerStats};

pub struct PoolRt {
    index: usize,
    config: Arc<Config>,
    router: RefCell<Router>,
    servers: Vec<ServerRt>,
    /// When an ejected server is due back, so the router is rebuilt then.
    next_rebuild: Cell<Option<Instant>>,
    stats: Arc<WorkerStats>,
    pub registry: Arc<Registry>,
    /// Clients of this pool across all workers, for `client_connections`.
    pub clients: Arc<AtomicU32>,
    next_client: Cell<usize>,
}

struct ServerRt {
    connections: Vec<mpsc::UnboundedSender<Job>>,
    failures: Cell<u32>,
    ejected_until: Cell<Option<Instant>>,
}

impl PoolRt {
    /// Creates the pool and starts its server connection tasks on the current `LocalSet`.
    pub fn start(
        index: usize,
        config: Arc<Config>,
        stats: Arc<WorkerStats>,
        registry: Arc<Registry>,
        clients: Arc<AtomicU32>,
    ) -> Rc<PoolRt> {
        Rc::new_cyclic(|weak| {
            let pool = &config.pools[index];
            let servers = (0..pool.servers.len())
                .map(|s| ServerRt {
                    connections: (0..pool.server_connections)
                        .map(|_| {
                            let (tx, rx) = mpsc::unbounded_channel();
                            let preconnect = pool.preconnect;
                            tokio::task::spawn_local(backend::run(weak.clone(), s, rx, preconnect));
                            tx
                        })
                        .collect(),
                    failures: Cell::new(0),
                    ejected_until: Cell::new(None),
                })
                .collect();
            let router = Router::new(
                pool.hash,
                pool.distribution,
                pool.hash_tag,
                &pool.route_nodes(),
            );
            PoolRt {
                index,
                router: RefCell::new(router),
                servers,
                next_rebuild: Cell::new(None),
                stats,
                registry,
                clients,
                next_client: Cell::new(0),
                config,
            }
        })
    }

    pub fn config(&self) -> &Pool {
        &self.config.pools[self.index]
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
        self.servers.len()
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
        if let Some(due) = self.next_rebuild.get() {
            if Instant::now() >= due {
                self.rebuild();
            }
        }
        self.router.borrow().route(key)
    }

    pub fn is_live(&self, server: usize) -> bool {
        self.servers[server]
            .ejected_until
            .get()
            .is_none_or(|t| t <= Instant::now())
    }

    /// Queues `bytes` for `server`; the reply, if wanted, comes on the returned receiver.
    pub fn send(
        &self,
        server: usize,
        client: usize,
        bytes: Bytes,
        want_reply: bool,
    ) -> Option<oneshot::Receiver<Reply>> {
        let stats = self.stats(server);
        let len = bytes.len() as u64;
        stats.add(stats::server::REQUESTS, 1);
        stats.add(stats::server::REQUEST_BYTES, len);
        stats.add(stats::server::IN_QUEUE, 1);
        stats.add(stats::server::IN_QUEUE_BYTES, len);
        let (tx, rx) = if want_reply {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let connections = &self.servers[server].connections;
        let connection = &connections[client % connections.len()];
        if let Err(mpsc::error::SendError(job)) = connection.send(Job { bytes, reply: tx }) {
            stats.sub(stats::server::IN_QUEUE, 1);
            stats.sub(stats::server::IN_QUEUE_BYTES, len);
            if let Some(tx) = job.reply {
                let _ = tx.send(Err(BackendError::Closed));
            }
        }
        rx
    }

    pub fn server_ok(&self, server: usize) {
        self.servers[server].failures.set(0);
    }

    pub fn server_failed(&self, server: usize, error: BackendError) {
        use stats::server::{SERVER_EOF, SERVER_ERR, SERVER_TIMEDOUT};
        let counter = match error {
            BackendError::TimedOut => SERVER_TIMEDOUT,
            BackendError::Closed => SERVER_EOF,
            _ => SERVER_ERR,
        };
        self.stats(server).add(counter, 1);
        let name = self.config().servers[server].name();
        log_at!(
            crate::log::WARN,
            "pool '{}': server '{name}' failed: {error:?}",
            self.config().name
        );

        let s = &self.servers[server];
        s.failures.set(s.failures.get() + 1);
        let pool = self.config();
        if pool.auto_eject_hosts
            && s.failures.get() >= pool.server_failure_limit
            && s.ejected_until.get().is_none()
        {
            let until = Instant::now() + Duration::from_millis(pool.server_retry_timeout_ms);
            s.ejected_until.set(Some(until));
            s.failures.set(0);
            self.pool_stats().add(stats::pool::SERVER_EJECTS, 1);
            self.stats(server)
                .set(stats::server::SERVER_EJECTED_AT, stats::now_usec());
            log_at!(
                crate::log::WARN,
                "pool '{}': ejecting server '{name}' for {} ms",
                pool.name,
                pool.server_retry_timeout_ms
            );
            self.rebuild();
        }
    }

    /// Rebuilds placement over the servers that are live now.
    fn rebuild(&self) {
        let now = Instant::now();
        let mut next = None;
        for s in &self.servers {
            match s.ejected_until.get() {
                Some(t) if t <= now => s.ejected_until.set(None),
                Some(t) => next = Some(next.map_or(t, |n: Instant| n.min(t))),
                None => {}
            }
        }
        let pool = self.config();
        let mut nodes = pool.route_nodes();
        for (node, s) in nodes.iter_mut().zip(&self.servers) {
            node.live = s.ejected_until.get().is_none();
        }
        *self.router.borrow_mut() =
            Router::new(pool.hash, pool.distribution, pool.hash_tag, &nodes);
        self.next_rebuild.set(next);
    }
}
