//! The admin API's views of what the request path noticed: `/hotkeys` (each pool's
//! hottest keys, summed over the workers' sketches), `/slowlog` (the requests
//! its servers were slow to answer), `/shadow` (what shadow pools answered
//! otherwise) and `/clients` (the client connections).

use cashew_route::Router;

use super::api::{
    self, ClientView, Clients, HotKey, HotKeys, Latency, ShadowMismatch, ShadowPool, ShadowReport,
    SlowLog, SlowRequest,
};
use crate::state::counters::{HistogramTotal, PoolCounter};
use crate::state::generation::Generation;
use crate::state::hotkeys::printable;

/// Every client connection, oldest first.
pub(crate) fn clients() -> Clients {
    let now = std::time::Instant::now();
    let clients = crate::state::clients::connected(None)
        .iter()
        .map(|card| {
            let profile = card.profile();
            ClientView {
                id: card.id,
                pool: card.pool.clone(),
                protocol: card.protocol.to_string(),
                address: card.address.clone(),
                local: card.local.clone(),
                age_s: card.age(now).as_secs(),
                idle_s: card.idle(now).as_secs(),
                requests: card.requests(),
                name: profile.name,
                lib_name: profile.lib_name,
                lib_ver: profile.lib_ver,
                subscriber: profile.subscriber,
            }
        })
        .collect();
    Clients { clients }
}

/// Keys shown per pool.
const TOP: usize = 20;

/// Each pool's hottest keys, hottest first, for the pools with `hotkeys: true`:
/// `rate` in requests per second, estimated (Space-Saving may overstate it),
/// `rate_min` what it is at least.
pub(crate) fn hotkeys(generation: &Generation) -> HotKeys {
    let mut out = Vec::new();
    for (pool, state) in generation.config.pools.iter().zip(&generation.pools) {
        if !pool.hotkeys {
            continue;
        }
        // Each worker's sampled counts, as rates, summed by key: the estimate, and
        // what it is at least (the count less what Space-Saving may overstate).
        let mut rates: Vec<(Vec<u8>, f64, f64)> = Vec::new();
        for worker in &state.workers {
            let counts = worker.pool.hotkeys.counts();
            let per_second =
                f64::from(pool.hotkeys_sample) / counts.covered.as_secs_f64().max(1e-3);
            for (key, count, error) in counts.keys {
                let rate = count as f64 * per_second;
                let least = (count - error) as f64 * per_second;
                match rates.iter_mut().find(|(k, ..)| *k == key) {
                    Some((_, r, l)) => {
                        *r += rate;
                        *l += least;
                    }
                    None => rates.push((key, rate, least)),
                }
            }
        }
        rates.sort_by(|a, b| b.1.total_cmp(&a.1));
        let router = Router::new(
            pool.hash,
            pool.distribution,
            pool.hash_tag,
            &pool.route_nodes(),
        );
        let tenth = |r: f64| (r * 10.0).round() / 10.0;
        for (key, rate, least) in rates.into_iter().take(TOP) {
            let server = router
                .route(&key)
                .map(|s| pool.servers[s].name().to_string());
            out.push(HotKey {
                pool: pool.name.clone(),
                key: printable(&key),
                rate: tenth(rate),
                rate_min: tenth(least),
                server,
            });
        }
    }
    HotKeys { hotkeys: out }
}

/// The requests servers were slow to answer, the latest first, with each pool's
/// threshold.
pub(crate) fn slowlog(generation: &Generation) -> SlowLog {
    let mut entries = Vec::new();
    for (pool, state) in generation.config.pools.iter().zip(&generation.pools) {
        for worker in &state.workers {
            for e in worker.pool.slowlog.entries() {
                entries.push((e.at_usec, pool.name.clone(), e));
            }
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    let slowlog = entries
        .into_iter()
        .map(|(at, pool, e)| {
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_micros(at);
            SlowRequest {
                time: crate::log::format_time(time),
                pool,
                server: e.server,
                command: e.command,
                key: e.key,
                latency_ms: (e.latency.as_secs_f64() * 1e6).round() / 1e3,
            }
        })
        .collect();
    let slowlog_ms = generation
        .config
        .pools
        .iter()
        .filter(|p| p.slowlog_ms > 0)
        .map(|p| (p.name.clone(), p.slowlog_ms))
        .collect();
    SlowLog {
        slowlog_ms,
        slowlog,
    }
}

/// Each shadowed pool's counts and the keys its shadow answered otherwise, the
/// latest first.
pub(crate) fn shadow(generation: &Generation) -> ShadowReport {
    let mut report = ShadowReport::default();
    let mut mismatches = Vec::new();
    for (pool, state) in generation.config.pools.iter().zip(&generation.pools) {
        let Some(shadow) = &pool.shadow else {
            continue;
        };
        report.pools.push(ShadowPool {
            pool: pool.name.clone(),
            shadow_pool: shadow.pool.clone(),
            fraction: shadow.fraction,
            commands: if shadow.all_commands { "all" } else { "reads" }.into(),
            requests: state.total(PoolCounter::ShadowRequests),
            mismatches: state.total(PoolCounter::ShadowMismatches),
            dropped: state.total(PoolCounter::ShadowDropped),
        });
        for worker in &state.workers {
            for m in worker.pool.shadow.entries() {
                mismatches.push((pool.name.clone(), m));
            }
        }
    }
    mismatches.sort_by_key(|(_, m)| std::cmp::Reverse(m.at_usec));
    report.mismatches = mismatches
        .into_iter()
        .map(|(pool, m)| ShadowMismatch {
            time: crate::log::format_time(
                std::time::UNIX_EPOCH + std::time::Duration::from_micros(m.at_usec),
            ),
            pool,
            command: m.command,
            key: m.key,
            primary: m.primary,
            shadow: m.shadow,
        })
        .collect();
    report
}

/// Latency quantiles in ms since start, for `/status`.
pub(crate) fn latency_ms(total: &HistogramTotal) -> Latency {
    let q = |q: f64| total.quantile_us(q).map(|us| us as f64 / 1e3);
    api::Latency {
        p50: q(0.5),
        p99: q(0.99),
        buckets: total.buckets.to_vec(),
    }
}
