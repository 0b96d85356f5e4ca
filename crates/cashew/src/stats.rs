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

/// nutcracker's pool counters, then cashew's own (see [`pool`]).
pub type PoolCounters = Counters<{ POOL_STATS.len() + AVAILABILITY_STATS.len() }>;
pub type ServerCounters = Counters<13>;
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
