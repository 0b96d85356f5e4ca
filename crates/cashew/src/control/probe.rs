//! Active health checks (`health_check_interval`): each server of such a pool is
//! probed from the main thread, on a connection of its own, never by a worker and
//! never with a client request. `server_failure_limit` failed probes in a row eject
//! it for every worker before clients fail; a probe that succeeds brings it back.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use cashew_config::{Pool, Server};
use tokio::task::JoinHandle;

use crate::log::{INFO, NOTICE};
use crate::log_at;
use cashew_protocol::server::{Memcache, Redis, ServerCodec};

use crate::proxy::server::{LinkSettings, Probe};
use crate::state::generation::Generation;
use crate::state::health::{EjectPolicy, ServerHealth};

/// Starts a probe task for every server of every pool with health checks.
pub(crate) fn start(generation: &Arc<Generation>) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (p, pool) in generation.config.pools.iter().enumerate() {
        if pool.health_check_interval_ms == 0 {
            continue;
        }
        let pool = Rc::new(pool.clone());
        for (s, server) in pool.servers.iter().enumerate() {
            let health = generation.pools[p].servers[s].clone();
            let settings = LinkSettings::new(&pool, &generation.pools[p].tls, server, false);
            let (pool, server) = (pool.clone(), server.clone());
            tasks.push(match pool.redis {
                true => {
                    tokio::task::spawn_local(probe_loop::<Redis>(pool, server, settings, health))
                }
                false => {
                    tokio::task::spawn_local(probe_loop::<Memcache>(pool, server, settings, health))
                }
            });
        }
    }
    tasks
}

async fn probe_loop<C: ServerCodec>(
    pool: Rc<Pool>,
    server: Server,
    settings: LinkSettings,
    health: Arc<ServerHealth>,
) {
    let interval = Duration::from_millis(pool.health_check_interval_ms);
    // A probe must end before the next one is due.
    let timeout = pool
        .timeout_ms
        .filter(|&t| t > 0)
        .map_or(interval, Duration::from_millis)
        .min(interval);
    let policy = EjectPolicy::of(&pool);
    let mut probe = Probe::<C>::new(settings, health.clone());
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (pool_name, name) = (&pool.name, server.name());
    loop {
        ticks.tick().await;
        match probe.once(timeout).await {
            Ok(()) => {
                if health.probe_ok() {
                    log_at!(NOTICE, "pool '{pool_name}': server '{name}' back in service: a health check succeeded");
                }
            }
            Err(error) => {
                if health.probe_failed(policy) {
                    log_at!(
                        NOTICE,
                        "pool '{pool_name}': server '{name}' ejected until a health check succeeds: {} health checks failed in a row ({})",
                        policy.failure_limit,
                        error.reason()
                    );
                } else {
                    log_at!(
                        INFO,
                        "pool '{pool_name}': server '{name}': health check failed: {}",
                        error.reason()
                    );
                }
            }
        }
    }
}
