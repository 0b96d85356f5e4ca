//! `GET /status` (and `cashew status`, `cashew top`): each pool and server with
//! its state, load, errors and latency.

use super::api::{
    ClusterStatus, GenerationInfo, MigrationStatus, PoolStatus, ServerStatus, Status,
};
use super::insight::latency_ms;
use crate::state::counters::{Family, PoolCounter, ServerCounter};
use crate::state::generation::Generation;
use crate::state::health::{ProbeState, ServerState};

/// The generation's identity, as several documents give it.
pub(crate) fn generation_info(generation: &Generation) -> GenerationInfo {
    GenerationInfo {
        generation: generation.number,
        loaded_at: generation.source.loaded_at_secs(),
        checksum: generation.source.checksum.clone(),
        file: generation.source.path.display().to_string(),
    }
}

/// The status of `generation` in `phase`; `rate` gives a pool's requests per second.
pub(crate) fn status(generation: &Generation, phase: &str, rate: impl Fn(&str) -> f64) -> Status {
    let now_usec = crate::clock::now_usec();
    let pools = generation
        .config
        .pools
        .iter()
        .zip(&generation.pools)
        .map(|(pool, state)| {
            let servers = pool
                .servers
                .iter()
                .enumerate()
                .map(|(s, server)| {
                    let total = |c| state.server_total(s, c);
                    let health = &state.servers[s];
                    let now = health.state();
                    let back_in_ms = match now {
                        ServerState::Ejected(until) => Some(
                            until
                                .saturating_duration_since(std::time::Instant::now())
                                .as_millis() as u64,
                        ),
                        _ => None,
                    };
                    ServerStatus {
                        name: server.name().to_string(),
                        address: server.entry.clone(),
                        state: now.name().to_string(),
                        state_for_s: now_usec.saturating_sub(health.changed_at_usec()) / 1_000_000,
                        health_check: match health.probe_state() {
                            ProbeState::Off => "off",
                            ProbeState::Ok => "ok",
                            ProbeState::Failing => "failing",
                        }
                        .to_string(),
                        requests: total(ServerCounter::Requests),
                        errors: total(ServerCounter::ServerErr)
                            + total(ServerCounter::ServerEof)
                            + total(ServerCounter::ServerTimedout),
                        connections: total(ServerCounter::ServerConnections),
                        latency_ms: latency_ms(&state.server_latency(s)),
                        back_in_ms,
                        cluster_role: pool.cluster.as_ref().map(|c| {
                            match c.masters[s] {
                                true => "master",
                                false => "replica",
                            }
                            .to_string()
                        }),
                        slots: pool.cluster.as_ref().map(|c| slot_ranges(c, s)),
                        replica_of: pool.sentinel_replicas.as_ref().and_then(|r| {
                            let master =
                                r.replicas.iter().position(|of| of.contains(&(s as u16)))?;
                            Some(pool.servers[master].name().to_string())
                        }),
                    }
                })
                .collect();
            PoolStatus {
                name: pool.name.clone(),
                listen: pool.listen.to_string(),
                protocol: if pool.redis { "redis" } else { "memcached" }.to_string(),
                client_connections: state.total(PoolCounter::ClientConnections),
                requests_per_second: rate(&pool.name),
                requests: Family::ALL.iter().map(|&f| state.requests(f)).sum(),
                get_hits: state.total(PoolCounter::GetHits),
                get_misses: state.total(PoolCounter::GetMisses),
                errors: PoolCounter::ERRORS.iter().map(|&c| state.total(c)).sum(),
                latency_ms: latency_ms(&state.latency()),
                pinned_connections: pool
                    .redis
                    .then(|| state.total(PoolCounter::PinnedConnections)),
                migration: (pool.migrate_ms > 0).then(|| MigrationStatus {
                    ends_in_ms: state.migration.as_ref().map_or(0, |m| {
                        m.until
                            .saturating_duration_since(std::time::Instant::now())
                            .as_millis() as u64
                    }),
                    fallbacks: state.total(PoolCounter::MigrateFallbacks),
                    hits: state.total(PoolCounter::MigrateHits),
                }),
                cluster: pool.cluster.as_ref().map(|c| {
                    let (periodic, asked, changed) = crate::state::cluster::refreshes();
                    ClusterStatus {
                        slots_covered: c.slots.covered(),
                        moved: state.total(PoolCounter::ClusterMoved),
                        ask: state.total(PoolCounter::ClusterAsk),
                        retries: state.total(PoolCounter::ClusterRetries),
                        refreshes_periodic: periodic,
                        refreshes_asked: asked,
                        maps_changed: changed,
                    }
                }),
                servers,
            }
        })
        .collect();
    let registry = &generation.registry;
    Status {
        generation: generation_info(generation),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime: registry.uptime(),
        phase: phase.to_string(),
        threads: registry.threads(),
        pools,
    }
}

/// The slots server `server` of a cluster pool owns, as `first-last` ranges.
fn slot_ranges(cluster: &cashew_config::ClusterTopology, server: usize) -> String {
    let ranges: Vec<String> = cluster
        .slots
        .ranges()
        .into_iter()
        .filter(|&(_, _, owner)| usize::from(owner) == server)
        .map(|(first, last, _)| match first == last {
            true => first.to_string(),
            false => format!("{first}-{last}"),
        })
        .collect();
    ranges.join(" ")
}
