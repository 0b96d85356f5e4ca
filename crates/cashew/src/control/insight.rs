//! The admin API's views of what the request path noticed: `/hotkeys` (each pool's
//! hottest keys, summed over the workers' sketches) and `/slowlog` (the requests
//! its servers were slow to answer).

use cashew_route::Router;
use serde_json::{json, Value};

use crate::generation::Generation;
use crate::hotkeys::printable;
use crate::stats::HistogramTotal;

/// Keys shown per pool.
const TOP: usize = 20;

/// `{"hotkeys": [{"pool", "key", "rate", "rate_min", "server"}]}`, hottest first
/// within each pool that has `hotkeys: true`: `rate` in requests per second,
/// estimated (Space-Saving may overstate it), `rate_min` what it is at least.
pub fn hotkeys(generation: &Generation) -> Value {
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
            let server = router.route(&key).map(|s| pool.servers[s].name());
            out.push(json!({
                "pool": pool.name,
                "key": printable(&key),
                "rate": tenth(rate),
                "rate_min": tenth(least),
                "server": server,
            }));
        }
    }
    json!({ "hotkeys": out })
}

/// `{"slowlog": [{"time", "pool", "server", "command", "key", "latency_ms"}]}`,
/// the latest first, with each pool's threshold.
pub fn slowlog(generation: &Generation) -> Value {
    let mut entries = Vec::new();
    for (pool, state) in generation.config.pools.iter().zip(&generation.pools) {
        for worker in &state.workers {
            for e in worker.pool.slowlog.entries() {
                entries.push((e.at_usec, pool.name.clone(), e));
            }
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|(at, pool, e)| {
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_micros(at);
            json!({
                "time": crate::log::format_time(time),
                "pool": pool,
                "server": e.server,
                "command": e.command,
                "key": e.key,
                "latency_ms": (e.latency.as_secs_f64() * 1e6).round() / 1e3,
            })
        })
        .collect();
    let thresholds: serde_json::Map<String, Value> = generation
        .config
        .pools
        .iter()
        .filter(|p| p.slowlog_ms > 0)
        .map(|p| (p.name.clone(), Value::from(p.slowlog_ms)))
        .collect();
    json!({ "slowlog_ms": thresholds, "slowlog": entries })
}

/// Latency quantiles in ms since start (`p50`, `p99`), for `/status`, with the
/// histogram's counts per bucket (`buckets`, bounds as in `/metrics`) so that a
/// reader can take the quantiles of the interval between two readings.
pub fn latency_ms(total: &HistogramTotal) -> Value {
    let q = |q: f64| total.quantile_us(q).map(|us| us as f64 / 1e3);
    json!({ "p50": q(0.5), "p99": q(0.99), "buckets": total.buckets.to_vec() })
}
