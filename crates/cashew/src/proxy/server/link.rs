//! What a server connection knows of its server, fixed for the connection's life:
//! how to reach and talk to it, this worker's counters for it, and its shared
//! health. A connection knows its server through this link, never through the
//! pool, so a reload can replace the pool while the connection finishes its work.

use std::sync::Arc;
use std::time::Duration;

use cashew_config::{Pool, ReadFrom, Server, ServerAddress};
use cashew_protocol::server::{Handshake, Memcache, Redis};

use crate::log_at;
use crate::net::tls::{PoolTls, ServerTlsConnector};
use crate::proxy::handoff::BackendError;
use crate::state::counters::{PoolCounter, PoolCounters, ServerCounter, ServerCounters};
use crate::state::health::{EjectPolicy, Failure, ServerHealth};

pub(crate) struct ServerLink {
    pub(crate) pool_name: String,
    pub(crate) server_name: String,
    pub(crate) settings: LinkSettings,
    /// This worker's counters for the server and its pool.
    pub(crate) counters: Arc<ServerCounters>,
    pub(crate) pool_counters: Arc<PoolCounters>,
    pub(crate) health: Arc<ServerHealth>,
    /// A server only a previous placement has (read while keys move after a
    /// reload): its failures are no one's concern, neither counted nor logged.
    pub(crate) retired: bool,
    /// Where the RESP3 pushes the server sends go (a tracking client's
    /// invalidations); without it they are read past.
    pub(crate) pushes: Option<super::push::PushSink>,
}

/// How to reach and talk to a server. Connections whose settings are unchanged by a
/// reload are kept, so a client's requests to a server stay on one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LinkSettings {
    pub(crate) address: ServerAddress,
    /// Where the host name was last seen to point (see `control::dns`): only
    /// compared, so that a server whose name moved gets new connections.
    pub(crate) resolved: Option<std::net::IpAddr>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) keepalive: bool,
    /// TLS towards the server (`server_tls`).
    pub(crate) tls: Option<Arc<ServerTlsConnector>>,
    /// A redis connection opened in RESP3 (`HELLO 3`), for RESP3 clients.
    pub(crate) resp3: bool,
    /// What a new connection sends first (redis `AUTH`, `SELECT`; then a request
    /// for the server's version).
    pub(crate) handshake: Handshake,
    pub(crate) policy: EjectPolicy,
    pub(crate) connections: u32,
    pub(crate) preconnect: bool,
    /// Requests slower than this are kept in the pool's slow log.
    pub(crate) slowlog: Option<Duration>,
    /// Consecutive single-key memcached retrievals go out as one (see `Pipeline::join`).
    pub(crate) coalesce_gets: bool,
}

impl LinkSettings {
    pub(crate) fn new(pool: &Pool, tls: &PoolTls, server: &Server, resp3: bool) -> LinkSettings {
        // A Redis Cluster replica that serves reads takes them after `READONLY`.
        let replica_reads = pool.read_from != ReadFrom::Master
            && pool.cluster.as_ref().is_some_and(|c| {
                let at = pool.servers.iter().position(|s| s.name() == server.name());
                at.is_some_and(|i| !c.masters[i])
            });
        let handshake = match pool.redis {
            true if replica_reads => Redis::replica_handshake(
                pool.redis_auth_user.as_deref(),
                pool.redis_auth.as_ref().map(|s| s.expose()),
                resp3,
            ),
            true => Redis::handshake(
                pool.redis_auth_user.as_deref(),
                pool.redis_auth.as_ref().map(|s| s.expose()),
                pool.redis_db,
                resp3,
            ),
            false => Memcache::handshake(pool.memcached_auth.as_ref().map(|s| s.expose())),
        };
        LinkSettings {
            address: server.address.clone(),
            resolved: server.resolved,
            timeout: pool
                .timeout_ms
                .filter(|&t| t > 0)
                .map(Duration::from_millis),
            keepalive: pool.tcpkeepalive,
            tls: tls.connect.clone(),
            resp3,
            handshake,
            policy: EjectPolicy::of(pool),
            connections: pool.server_connections.max(1),
            preconnect: pool.preconnect,
            slowlog: (pool.slowlog_ms > 0).then(|| Duration::from_millis(pool.slowlog_ms)),
            coalesce_gets: pool.coalesce_gets && !pool.redis,
        }
    }
}

impl ServerLink {
    /// A reply came: the server is well.
    pub(crate) fn ok(&self) {
        if self.health.ok() && !self.retired {
            log_at!(
                crate::log::NOTICE,
                "pool '{}': server '{}' back in service",
                self.pool_name,
                self.server_name
            );
        }
    }

    /// Counts a failed connection in the server's stats alone. A subscriber's own
    /// connection is counted so, not judged: it may end for a reason of its
    /// client's (too slow for the server's output buffer limit).
    pub(crate) fn count_failure(&self, error: &BackendError) {
        let counter = match error {
            BackendError::TimedOut => ServerCounter::ServerTimedout,
            BackendError::Closed => ServerCounter::ServerEof,
            _ => ServerCounter::ServerErr,
        };
        self.counters.add(counter, 1);
    }

    /// A connection failed; `seen` is its record of failure events (see
    /// [`ServerHealth::failed`]).
    pub(crate) fn failed(&self, error: BackendError, seen: &mut u64) {
        if self.retired {
            return;
        }
        self.count_failure(&error);
        let (pool, name) = (&self.pool_name, &self.server_name);
        let policy = self.settings.policy;
        match self.health.failed(policy, seen) {
            Failure::SameEvent => {}
            // Logged when the server starts failing; failures that follow (a
            // connection tried for each request) are counted, not logged.
            Failure::Counted if self.health.failures_in_a_row() > 1 => {}
            Failure::Counted => log_at!(
                crate::log::NOTICE,
                "pool '{pool}': server '{name}' failed: {}",
                error.reason()
            ),
            Failure::Ejected => {
                self.pool_counters.add(PoolCounter::ServerEjects, 1);
                let until = match policy.health_checked {
                    true => "until a health check succeeds".to_string(),
                    false => {
                        let back = std::time::SystemTime::now()
                            + Duration::from_millis(policy.retry_timeout_ms);
                        format!(
                            "for {} ms, until {}",
                            policy.retry_timeout_ms,
                            crate::log::format_time(back)
                        )
                    }
                };
                log_at!(
                    crate::log::NOTICE,
                    "pool '{pool}': server '{name}' failed: {}; ejected {until}",
                    error.reason()
                );
            }
        }
    }
}
