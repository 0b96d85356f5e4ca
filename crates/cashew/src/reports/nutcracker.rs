//! nutcracker's reports, with its names and layout so that existing monitoring
//! reads them unchanged: the stats document (stats port, `GET /stats`) and the
//! text of `-D`.

use std::sync::atomic::Ordering::Relaxed;

use crate::state::counters::{PoolCounter, ProxyCounter, ServerCounter};
use crate::state::generation::Generation;
use crate::state::health::ProbeState;

/// The text of `-D`, laid out as nutcracker lays it out.
pub fn describe() -> String {
    let pool = PoolCounter::NUTCRACKER.map(|c| (c.name(), c.description()));
    let server = ServerCounter::ALL
        .iter()
        .map(|c| (c.name(), c.description()));
    let mut out = String::new();
    for (title, stats) in [
        ("pool stats:", pool.to_vec()),
        ("server stats:", server.collect()),
    ] {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(title);
        out.push('\n');
        for (name, description) in stats {
            out.push_str(&format!("  {name:<20}\"{description}\"\n"));
        }
    }
    out
}

/// nutcracker's stats document, with the generation of the configuration in force.
pub(crate) fn json(generation: &Generation, source: &str) -> String {
    let registry = &generation.registry;
    let mut out = format!(
        "{{\"service\":\"nutcracker\", \"source\":{}, \"version\":{}, \"uptime\":{}, \"timestamp\":{}, \"total_connections\":{}, \"curr_connections\":{}, \"generation\":{}, \"generation_loaded_at\":{}, \"config_checksum\":{}",
        json_string(source),
        json_string(env!("CARGO_PKG_VERSION")),
        registry.uptime(),
        crate::clock::unix_secs(),
        registry.proxy_total(ProxyCounter::TotalConnections),
        registry.proxy_total(ProxyCounter::CurrConnections),
        generation.number,
        generation.source.loaded_at_secs(),
        json_string(&generation.source.checksum),
    );
    for (pool, state) in generation.config.pools.iter().zip(&generation.pools) {
        out.push_str(&format!(", {}: {{", json_string(&pool.name)));
        let fields = PoolCounter::NUTCRACKER.iter().map(|&c| {
            let mut value = state.total(c);
            if c == PoolCounter::ServerEjects {
                value += state.shared.probe_ejections.load(Relaxed);
            }
            format!("\"{}\":{value}", c.name())
        });
        out.push_str(&fields.collect::<Vec<_>>().join(", "));
        if pool.stable_placement() {
            // Like the health-check fields: only where the pool uses the feature.
            for c in PoolCounter::AVAILABILITY {
                out.push_str(&format!(", \"{}\":{}", c.name(), state.total(c)));
            }
        }
        let optional = [
            (pool.migrate_ms > 0, PoolCounter::MigrateFallbacks),
            (pool.migrate_ms > 0, PoolCounter::MigrateHits),
            (pool.shadow.is_some(), PoolCounter::ShadowRequests),
            (pool.shadow.is_some(), PoolCounter::ShadowMismatches),
            (pool.shadow.is_some(), PoolCounter::ShadowDropped),
            (pool.tls.is_some(), PoolCounter::TlsHandshakeFailures),
            (!pool.users.is_empty(), PoolCounter::AuthFailures),
            (pool.redis, PoolCounter::PinnedConnections),
            (pool.redis_cluster, PoolCounter::ClusterMoved),
            (pool.redis_cluster, PoolCounter::ClusterAsk),
            (pool.redis_cluster, PoolCounter::ClusterRetries),
        ];
        for (_, c) in optional.into_iter().filter(|(uses, _)| *uses) {
            out.push_str(&format!(", \"{}\":{}", c.name(), state.total(c)));
        }
        for (s, srv) in pool.servers.iter().enumerate() {
            let mut fields: Vec<String> = ServerCounter::ALL
                .iter()
                .map(|&c| format!("\"{}\":{}", c.name(), state.server_total(s, c)))
                .collect();
            if pool.health_check_interval_ms > 0 {
                // Only pools with cashew's health checks: a nutcracker config's
                // document stays exactly nutcracker's.
                let health = &state.servers[s];
                let ok = health.probe_state() == ProbeState::Ok;
                fields.push(format!("\"health_check_ok\":{}", u8::from(ok)));
                fields.push(format!("\"state_changed_at\":{}", health.changed_at_usec()));
            }
            out.push_str(&format!(
                ", {}: {{{}}}",
                json_string(srv.name()),
                fields.join(", ")
            ));
        }
        out.push('}');
    }
    out.push_str("}\n");
    out
}

/// A JSON string literal.
pub(crate) fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}
