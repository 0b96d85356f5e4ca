//! The stats cashew reports, with nutcracker's names and descriptions so that
//! existing monitoring reads them unchanged.

#[derive(Clone, Copy, Debug)]
pub struct StatInfo {
    pub name: &'static str,
    pub description: &'static str,
}

const fn stat(name: &'static str, description: &'static str) -> StatInfo {
    StatInfo { name, description }
}

pub const POOL_STATS: [StatInfo; 6] = [
    stat("client_eof", "# eof on client connections"),
    stat("client_err", "# errors on client connections"),
    stat("client_connections", "# active client connections"),
    stat("server_ejects", "# times backend server was ejected"),
    stat("forward_error", "# times we encountered a forwarding error"),
    stat(
        "fragments",
        "# fragments created from a multi-vector request",
    ),
];

/// cashew's own pool stats, in the document only for pools with `replicas` or a
/// `gutter` (indices [`pool::REPLICA_FAILOVERS`] on).
pub const AVAILABILITY_STATS: [StatInfo; 4] = [
    stat(
        "replica_failovers",
        "# requests passed on to a later replica after an error, a timeout or a miss",
    ),
    stat(
        "warmups",
        "# hits written back to replicas that missed them",
    ),
    stat(
        "warmups_dropped",
        "# write-backs dropped because the server's queue was full",
    ),
    stat("gutter_requests", "# requests sent to the gutter pool"),
];

pub const SERVER_STATS: [StatInfo; 13] = [
    stat("server_eof", "# eof on server connections"),
    stat("server_err", "# errors on server connections"),
    stat("server_timedout", "# timeouts on server connections"),
    stat("server_connections", "# active server connections"),
    stat(
        "server_ejected_at",
        "timestamp when server was ejected in usec since epoch",
    ),
    stat("requests", "# requests"),
    stat("request_bytes", "total request bytes"),
    stat("responses", "# responses"),
    stat("response_bytes", "total response bytes"),
    stat("in_queue", "# requests in incoming queue"),
    stat("in_queue_bytes", "current request bytes in incoming queue"),
    stat("out_queue", "# requests in outgoing queue"),
    stat("out_queue_bytes", "current request bytes in outgoing queue"),
];

/// The text of `-D`, laid out as nutcracker lays it out.
pub fn describe() -> String {
    let mut out = String::new();
    for (title, stats) in [
        ("pool stats:", &POOL_STATS[..]),
        ("server stats:", &SERVER_STATS[..]),
    ] {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(title);
        out.push('\n');
        for s in stats {
            out.push_str(&format!("  {:<20}\"{}\"\n", s.name, s.description));
        }
    }
    out
}

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::generation::{Generation, PoolGen};
use crate::proxy::health::ProbeState;

/// Index of each pool stat in [`POOL_STATS`].
pub mod pool {
    pub const CLIENT_EOF: usize = 0;
    pub const CLIENT_ERR: usize = 1;
    pub const CLIENT_CONNECTIONS: usize = 2;
    pub const SERVER_EJECTS: usize = 3;
    pub const FORWARD_ERROR: usize = 4;
    pub const FRAGMENTS: usize = 5;
    // cashew's own, not in nutcracker's JSON:
    /// Requests passed on to a later replica after an error, a timeout or a miss.
    pub const REPLICA_FAILOVERS: usize = 6;
    /// Hits written back to replicas that missed them.
    pub const WARMUPS: usize = 7;
    /// Write-backs dropped because the server's queue was full.
    pub const WARMUPS_DROPPED: usize = 8;
    /// Requests sent to the gutter pool.
    pub const GUTTERED: usize = 9;
    // For the metrics only:
    /// Client connections accepted, in all.
    pub const CONNECTIONS_OPENED: usize = 10;
    /// Replies written to clients.
    pub const REPLIES: usize = 11;
    pub const GET_HITS: usize = 12;
    pub const GET_MISSES: usize = 13;
    /// Requests read and not yet answered (a level: added and taken away).
    pub const IN_FLIGHT: usize = 14;
    /// Errors by kind: the request broke the protocol; the server failed or
    /// could not be reached; the server timed out; cashew refused the command
    /// (it cannot be proxied); cashew does not know it.
    pub const ERR_CLIENT: usize = 15;
    pub const ERR_SERVER: usize = 16;
    pub const ERR_TIMEOUT: usize = 17;
    pub const ERR_REFUSED: usize = 18;
    pub const ERR_UNSUPPORTED: usize = 19;
    /// Requests by command family: `FAMILY + i` for [`super::FAMILIES`]`[i]`.
    pub const FAMILY: usize = 20;
    /// Replies by command family, likewise (requests with `noreply` get none).
    pub const REPLY_FAMILY: usize = FAMILY + super::FAMILIES.len();
    pub const COUNT: usize = REPLY_FAMILY + super::FAMILIES.len();
}

/// Command families requests are counted by: memcached's commands, then redis's
/// classes.
pub const FAMILIES: [&str; 21] = [
    "get", "gets", "gat", "gats", "set", "add", "replace", "append", "prepend", "cas", "incr",
    "decr", "touch", "delete", "meta", "other", "read", "write", "split", "local", "refused",
];

/// Index in [`FAMILIES`] of each redis class.
pub mod family {
    /// A request of no family (it broke the protocol before its command was known).
    pub const NONE: u8 = u8::MAX;
    pub const OTHER: usize = 15;
    pub const READ: usize = 16;
    pub const WRITE: usize = 17;
    pub const SPLIT: usize = 18;
    pub const LOCAL: usize = 19;
    pub const REFUSED: usize = 20;
}

/// Index of each server stat in [`SERVER_STATS`].
pub mod server {
    pub const SERVER_EOF: usize = 0;
    pub const SERVER_ERR: usize = 1;
    pub const SERVER_TIMEDOUT: usize = 2;
    pub const SERVER_CONNECTIONS: usize = 3;
    pub const SERVER_EJECTED_AT: usize = 4;
    pub const REQUESTS: usize = 5;
    pub const REQUEST_BYTES: usize = 6;
    pub const RESPONSES: usize = 7;
    pub const RESPONSE_BYTES: usize = 8;
    pub const IN_QUEUE: usize = 9;
    pub const IN_QUEUE_BYTES: usize = 10;
    pub const OUT_QUEUE: usize = 11;
    pub const OUT_QUEUE_BYTES: usize = 12;
    pub const COUNT: usize = 13;
}

/// Proxy-wide counters reported by the memcached `stats` command.
pub mod proxy {
    pub const CURR_CONNECTIONS: usize = 0;
    pub const TOTAL_CONNECTIONS: usize = 1;
    pub const CMD_GET: usize = 2;
    pub const CMD_SET: usize = 3;
    pub const CMD_TOUCH: usize = 4;
    pub const GET_HITS: usize = 5;
    pub const GET_MISSES: usize = 6;
    pub const NAMES: [&str; 7] = [
        "curr_connections",
        "total_connections",
        "cmd_get",
        "cmd_set",
        "cmd_touch",
        "get_hits",
        "get_misses",
    ];
}

/// Counters written by one worker thread only, read by any. A single writer needs
/// no atomic read-modify-write: a plain load and store keep the hot path cheap.
pub struct Counters<const N: usize>([AtomicU64; N]);

impl<const N: usize> Default for Counters<N> {
    fn default() -> Self {
        Counters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl<const N: usize> Counters<N> {
    #[inline]
    pub fn add(&self, i: usize, n: u64) {
        let c = &self.0[i];
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn sub(&self, i: usize, n: u64) {
        let c = &self.0[i];
        c.store(c.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    #[inline]
    pub fn set(&self, i: usize, n: u64) {
        self.0[i].store(n, Relaxed);
    }

    pub fn get(&self, i: usize) -> u64 {
        self.0[i].load(Relaxed)
    }
}

/// Upper bounds of the latency histograms' buckets, in µs: log-linear, fine enough
/// to tell 50 µs from 200 µs and 1 ms from 5 ms.
pub const LATENCY_BOUNDS_US: [u64; 30] = [
    10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500,
    10_000, 15_000, 20_000, 30_000, 50_000, 75_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// A latency histogram written by one worker thread only (see [`Counters`]): one
/// bucket per bound of [`LATENCY_BOUNDS_US`] and one above them all.
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// For each power of two of a latency in µs, the first bucket that may hold it:
/// finding a bucket is then a table load and at most a few comparisons.
const FIRST_BUCKET: [u8; 64] = {
    let mut table = [0u8; 64];
    let mut k = 0;
    while k < 64 {
        let low = if k == 0 { 0 } else { 1u64 << k };
        let mut i = 0;
        while i < LATENCY_BOUNDS_US.len() && LATENCY_BOUNDS_US[i] < low {
            i += 1;
        }
        table[k] = i as u8;
        k += 1;
    }
    table
};

#[inline]
fn bucket_of(us: u64) -> usize {
    let mut i = usize::from(FIRST_BUCKET[63 - (us | 1).leading_zeros() as usize]);
    while i < LATENCY_BOUNDS_US.len() && LATENCY_BOUNDS_US[i] < us {
        i += 1;
    }
    i
}

impl Histogram {
    #[inline]
    pub fn record(&self, latency: std::time::Duration) {
        self.record_n(latency, 1);
    }

    /// Records `n` values of `latency` at once.
    #[inline]
    pub fn record_n(&self, latency: std::time::Duration, n: u64) {
        let us = latency.as_micros() as u64;
        let bucket = &self.buckets[bucket_of(us)];
        bucket.store(bucket.load(Relaxed) + n, Relaxed);
        self.sum_us.store(
            self.sum_us.load(Relaxed).wrapping_add(us.wrapping_mul(n)),
            Relaxed,
        );
    }

    /// Adds this histogram's counts (not cumulative) and sum to `into`.
    pub fn add_to(&self, into: &mut HistogramTotal) {
        for (total, b) in into.buckets.iter_mut().zip(&self.buckets) {
            *total += b.load(Relaxed);
        }
        into.sum_us += self.sum_us.load(Relaxed);
    }
}

/// Histograms of several workers summed.
#[derive(Clone, Default, Debug)]
pub struct HistogramTotal {
    pub buckets: [u64; LATENCY_BOUNDS_US.len() + 1],
    pub sum_us: u64,
}

impl HistogramTotal {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The bucket bound under which `q` (0 to 1) of the values fall: an upper
    /// estimate of the quantile, `None` without values.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(LATENCY_BOUNDS_US.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        None
    }
}

/// One worker's counters for a pool, and its clients' latency: from a request read
/// in full to its reply written in full.
#[derive(Default)]
pub struct PoolCounters {
    counters: Counters<{ pool::COUNT }>,
    pub latency: Histogram,
    pub hotkeys: crate::hotkeys::HotKeys,
    pub slowlog: crate::slowlog::SlowLog,
}

impl std::ops::Deref for PoolCounters {
    type Target = Counters<{ pool::COUNT }>;
    fn deref(&self) -> &Self::Target {
        &self.counters
    }
}

/// One worker's counters for a server, and the server's latency: from a request's
/// last byte written to its reply parsed.
#[derive(Default)]
pub struct ServerCounters {
    counters: Counters<{ server::COUNT }>,
    pub latency: Histogram,
}

impl std::ops::Deref for ServerCounters {
    type Target = Counters<{ server::COUNT }>;
    fn deref(&self) -> &Self::Target {
        &self.counters
    }
}

pub type ProxyCounters = Counters<7>;

/// One worker's counters for one pool of a generation: the pool's and each server's,
/// in the order of the config. Carried by pool and server name across reloads.
#[derive(Clone)]
pub struct PoolStats {
    pub pool: Arc<PoolCounters>,
    pub servers: Vec<Arc<ServerCounters>>,
}

/// What lasts for the life of the process: start time and each worker's proxy-wide
/// counters.
pub struct Registry {
    pub workers: Vec<Arc<ProxyCounters>>,
    started: Instant,
    /// The totals at the last memcached `stats reset`.
    baseline: [AtomicU64; proxy::NAMES.len()],
}

impl Registry {
    pub fn new(threads: usize) -> Self {
        Registry {
            workers: (0..threads).map(|_| Arc::default()).collect(),
            started: Instant::now(),
            baseline: Default::default(),
        }
    }

    pub fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    pub fn proxy_total(&self, i: usize) -> u64 {
        self.workers
            .iter()
            .map(|w| w.get(i))
            .fold(0, u64::wrapping_add)
    }

    /// `stats reset`: counters read from now on start again from 0 (but the
    /// current connections, which are a level, not a count).
    pub fn reset_proxy_counters(&self) {
        for (i, base) in self.baseline.iter().enumerate() {
            if i != proxy::CURR_CONNECTIONS {
                base.store(self.proxy_total(i), Relaxed);
            }
        }
    }

    pub fn proxy_since_reset(&self, i: usize) -> u64 {
        self.proxy_total(i)
            .wrapping_sub(self.baseline[i].load(Relaxed))
    }
}

/// A pool counter summed over the workers.
pub fn pool_total(pool: &PoolGen, i: usize) -> u64 {
    pool.workers
        .iter()
        .map(|w| w.pool.get(i))
        .fold(0, u64::wrapping_add)
}

/// A server counter summed over the workers.
pub fn server_total(pool: &PoolGen, server: usize, i: usize) -> u64 {
    if i == server::SERVER_EJECTED_AT {
        // An ejection is shared by every worker: its time is kept with the health.
        return pool.servers[server].ejected_at_usec();
    }
    pool.workers
        .iter()
        .map(|w| w.servers[server].get(i))
        .fold(0, u64::wrapping_add)
}

/// nutcracker's stats document, with the generation of the configuration in force.
pub fn json(generation: &Generation, source: &str) -> String {
    let registry = &generation.registry;
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut out = format!(
        "{{\"service\":\"nutcracker\", \"source\":{}, \"version\":{}, \"uptime\":{}, \"timestamp\":{}, \"total_connections\":{}, \"curr_connections\":{}, \"generation\":{}, \"generation_loaded_at\":{}, \"config_checksum\":{}",
        json_string(source),
        json_string(env!("CARGO_PKG_VERSION")),
        registry.uptime(),
        timestamp,
        registry.proxy_total(proxy::TOTAL_CONNECTIONS),
        registry.proxy_total(proxy::CURR_CONNECTIONS),
        generation.number,
        generation.source.loaded_at_secs(),
        json_string(&generation.source.checksum),
    );
    for (p, pool) in generation.config.pools.iter().enumerate() {
        let state = &generation.pools[p];
        out.push_str(&format!(", {}: {{", json_string(&pool.name)));
        let fields = POOL_STATS.iter().enumerate().map(|(i, s)| {
            let mut value = pool_total(state, i);
            if i == pool::SERVER_EJECTS {
                value += state.shared.probe_ejections.load(Relaxed);
            }
            format!("\"{}\":{value}", s.name)
        });
        out.push_str(&fields.collect::<Vec<_>>().join(", "));
        if pool.stable_placement() {
            // Like the health-check fields: only where the pool uses the feature.
            for (i, s) in AVAILABILITY_STATS.iter().enumerate() {
                let value = pool_total(state, pool::REPLICA_FAILOVERS + i);
                out.push_str(&format!(", \"{}\":{value}", s.name));
            }
        }
        for (s, srv) in pool.servers.iter().enumerate() {
            let mut fields: Vec<String> = SERVER_STATS
                .iter()
                .enumerate()
                .map(|(i, st)| format!("\"{}\":{}", st.name, server_total(state, s, i)))
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

pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Microseconds since the epoch, for `server_ejected_at`.
pub fn now_usec() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_lands_in_the_first_bucket_whose_bound_holds_it() {
        for us in (0..20_000_000u64)
            .step_by(997)
            .chain([0, 1, 10, 11, 75, 76, u64::MAX])
        {
            let expected = LATENCY_BOUNDS_US.partition_point(|&b| b < us);
            assert_eq!(bucket_of(us), expected, "{us} µs");
        }
        for &bound in &LATENCY_BOUNDS_US {
            assert_eq!(LATENCY_BOUNDS_US[bucket_of(bound)], bound);
        }
    }
}
