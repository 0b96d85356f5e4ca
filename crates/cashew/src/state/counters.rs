//! The counters and latency histograms cashew keeps, per worker thread: each
//! counter is an enum variant that carries its name and description, so a counter
//! cannot be paired with the wrong name, and a new one is declared in one place.
//! The nutcracker ones keep nutcracker's names and descriptions, so existing
//! monitoring reads them unchanged.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// Declares a counter enum: each variant with its name, and its description when
/// the counter is reported with one (nutcracker's `-D`).
macro_rules! counters {
    ($(#[$meta:meta])* pub(crate) enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident => $text:literal, $description:literal;)*
    }) => {
        counters! { $(#[$meta])* pub(crate) enum $name { $($(#[$vmeta])* $variant => $text;)* } }

        impl $name {
            pub(crate) fn description(self) -> &'static str {
                match self {
                    $($name::$variant => $description,)*
                }
            }
        }
    };
    ($(#[$meta:meta])* pub(crate) enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident => $text:literal;)*
    }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            pub(crate) const ALL: &'static [$name] = &[$($name::$variant,)*];
            pub(crate) const COUNT: usize = Self::ALL.len();

            pub(crate) fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }
    };
}

counters! {
    /// A pool's counters. The first six are nutcracker's, in its order.
    pub(crate) enum PoolCounter {
        ClientEof => "client_eof", "# eof on client connections";
        ClientErr => "client_err", "# errors on client connections";
        ClientConnections => "client_connections", "# active client connections";
        ServerEjects => "server_ejects", "# times backend server was ejected";
        ForwardError => "forward_error", "# times we encountered a forwarding error";
        Fragments => "fragments", "# fragments created from a multi-vector request";
        // cashew's availability counters, in the stats JSON of pools with
        // `replicas` or a `gutter`:
        ReplicaFailovers => "replica_failovers", "# requests passed on to a later replica after an error, a timeout or a miss";
        Warmups => "warmups", "# hits written back to replicas that missed them";
        WarmupsDropped => "warmups_dropped", "# write-backs dropped because the server's queue was full";
        Guttered => "gutter_requests", "# requests sent to the gutter pool";
        // In the stats JSON of pools with `migrate_ms`:
        MigrateFallbacks => "migrate_fallbacks", "# keys asked of their previous server after a miss while keys move";
        MigrateHits => "migrate_hits", "# keys found on their previous server while keys move";
        // In the stats JSON of pools with `shadow`:
        ShadowRequests => "shadow_requests", "# requests copied to the shadow pool";
        ShadowMismatches => "shadow_mismatches", "# keys the shadow pool answered otherwise (hit or miss, value)";
        ShadowDropped => "shadow_dropped", "# copies not sent: too many waiting for the shadow pool";
        // In the stats JSON of pools with `redis_cluster`:
        ClusterMoved => "cluster_moved", "# MOVED redirections followed";
        ClusterAsk => "cluster_ask", "# ASK redirections followed";
        ClusterRetries => "cluster_retries", "# requests sent again after TRYAGAIN or CLUSTERDOWN";
        // In the metrics (the stats JSON of a file without cashew's keys stays
        // nutcracker's):
        KeysCommands => "keys_commands", "# KEYS over every server";
        FlushallCommands => "flushall_commands", "# FLUSHALL over every server";
        // In the stats JSON of pools with `tls`, and of pools with `users`:
        TlsHandshakeFailures => "tls_handshake_failures", "# client connections closed because their TLS handshake failed";
        AuthFailures => "auth_failures", "# AUTH and HELLO AUTH refused for a wrong user or password";
        // For the metrics and status only:
        ConnectionsOpened => "connections_opened", "# client connections accepted";
        Replies => "replies", "# replies written to clients";
        GetHits => "get_hits", "# keys found by retrievals";
        GetMisses => "get_misses", "# keys not found by retrievals";
        /// A level: redis clients' connections of their own (transactions,
        /// blocking calls).
        PinnedConnections => "pinned_connections", "# server connections pinned to one client (transactions, blocking calls)";
        /// A level: requests read and not yet answered.
        InFlight => "in_flight", "# requests read and not yet answered";
        /// Errors by kind: the request broke the protocol; the server failed or
        /// could not be reached; it timed out; cashew refused the command (it
        /// cannot be proxied); cashew does not know it.
        ErrClient => "client_error", "# requests that broke the protocol";
        ErrServer => "server_error", "# requests whose server failed or could not be reached";
        ErrTimeout => "timeout", "# requests whose server timed out";
        ErrRefused => "refused", "# requests cashew cannot proxy";
        ErrUnsupported => "unsupported", "# requests of commands cashew does not know";
    }
}

impl PoolCounter {
    /// nutcracker's pool stats, in its order.
    pub(crate) const NUTCRACKER: [PoolCounter; 6] = [
        PoolCounter::ClientEof,
        PoolCounter::ClientErr,
        PoolCounter::ClientConnections,
        PoolCounter::ServerEjects,
        PoolCounter::ForwardError,
        PoolCounter::Fragments,
    ];
    pub(crate) const AVAILABILITY: [PoolCounter; 4] = [
        PoolCounter::ReplicaFailovers,
        PoolCounter::Warmups,
        PoolCounter::WarmupsDropped,
        PoolCounter::Guttered,
    ];
    /// Errors a client got, by kind.
    pub(crate) const ERRORS: [PoolCounter; 5] = [
        PoolCounter::ErrClient,
        PoolCounter::ErrServer,
        PoolCounter::ErrTimeout,
        PoolCounter::ErrRefused,
        PoolCounter::ErrUnsupported,
    ];
}

counters! {
    /// Command families requests and replies are counted by: memcached's
    /// commands, then redis's classes.
    pub(crate) enum Family {
        Get => "get";
        Gets => "gets";
        Gat => "gat";
        Gats => "gats";
        Set => "set";
        Add => "add";
        Replace => "replace";
        Append => "append";
        Prepend => "prepend";
        Cas => "cas";
        Incr => "incr";
        Decr => "decr";
        Touch => "touch";
        Delete => "delete";
        Meta => "meta";
        Other => "other";
        Read => "read";
        Write => "write";
        Split => "split";
        Local => "local";
        Refused => "refused";
    }
}

impl Family {
    /// Whether redis commands are counted in it (else memcached's).
    pub(crate) fn is_redis(self) -> bool {
        self as usize >= Family::Read as usize
    }
}

counters! {
    /// A server's counters: nutcracker's, in its order.
    pub(crate) enum ServerCounter {
        ServerEof => "server_eof", "# eof on server connections";
        ServerErr => "server_err", "# errors on server connections";
        ServerTimedout => "server_timedout", "# timeouts on server connections";
        ServerConnections => "server_connections", "# active server connections";
        /// Kept with the server's health, shared by every worker (see
        /// [`server_total`]); this counter stays 0.
        ServerEjectedAt => "server_ejected_at", "timestamp when server was ejected in usec since epoch";
        Requests => "requests", "# requests";
        RequestBytes => "request_bytes", "total request bytes";
        Responses => "responses", "# responses";
        ResponseBytes => "response_bytes", "total response bytes";
        InQueue => "in_queue", "# requests in incoming queue";
        InQueueBytes => "in_queue_bytes", "current request bytes in incoming queue";
        OutQueue => "out_queue", "# requests in outgoing queue";
        OutQueueBytes => "out_queue_bytes", "current request bytes in outgoing queue";
    }
}

counters! {
    /// Proxy-wide counters, reported by the memcached `stats` command.
    pub(crate) enum ProxyCounter {
        CurrConnections => "curr_connections";
        TotalConnections => "total_connections";
        CmdGet => "cmd_get";
        CmdSet => "cmd_set";
        CmdTouch => "cmd_touch";
        GetHits => "get_hits";
        GetMisses => "get_misses";
    }
}

/// Counters written by one worker thread only, read by any. A single writer needs
/// no atomic read-modify-write: a plain load and store keep the hot path cheap.
pub(crate) struct Counters<const N: usize>([AtomicU64; N]);

impl<const N: usize> Default for Counters<N> {
    fn default() -> Self {
        Counters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl<const N: usize> Counters<N> {
    #[inline]
    fn add(&self, i: usize, n: u64) {
        let c = &self.0[i];
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    fn sub(&self, i: usize, n: u64) {
        let c = &self.0[i];
        c.store(c.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    fn get(&self, i: usize) -> u64 {
        self.0[i].load(Relaxed)
    }
}

/// Upper bounds of the latency histograms' buckets, in µs: log-linear, fine enough
/// to tell 50 µs from 200 µs and 1 ms from 5 ms.
pub(crate) const LATENCY_BOUNDS_US: [u64; 30] = [
    10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500,
    10_000, 15_000, 20_000, 30_000, 50_000, 75_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// A latency histogram written by one worker thread only (see [`Counters`]): one
/// bucket per bound of [`LATENCY_BOUNDS_US`] and one above them all.
pub(crate) struct Histogram {
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
    /// Records `n` values of `latency` at once.
    #[inline]
    pub(crate) fn record_n(&self, latency: std::time::Duration, n: u64) {
        let us = latency.as_micros() as u64;
        let bucket = &self.buckets[bucket_of(us)];
        bucket.store(bucket.load(Relaxed) + n, Relaxed);
        self.sum_us.store(
            self.sum_us.load(Relaxed).wrapping_add(us.wrapping_mul(n)),
            Relaxed,
        );
    }

    /// Adds this histogram's counts (not cumulative) and sum to `into`.
    pub(crate) fn add_to(&self, into: &mut HistogramTotal) {
        for (total, b) in into.buckets.iter_mut().zip(&self.buckets) {
            *total += b.load(Relaxed);
        }
        into.sum_us += self.sum_us.load(Relaxed);
    }
}

/// Histograms of several workers summed.
#[derive(Clone, Default, Debug)]
pub(crate) struct HistogramTotal {
    pub(crate) buckets: [u64; LATENCY_BOUNDS_US.len() + 1],
    pub(crate) sum_us: u64,
}

impl HistogramTotal {
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The bucket bound under which `q` (0 to 1) of the values fall: an upper
    /// estimate of the quantile, `None` without values.
    pub(crate) fn quantile_us(&self, q: f64) -> Option<u64> {
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
pub(crate) struct PoolCounters {
    counters: Counters<{ PoolCounter::COUNT }>,
    requests: Counters<{ Family::COUNT }>,
    /// Replies by family (requests with `noreply` get none).
    replies: Counters<{ Family::COUNT }>,
    pub(crate) latency: Histogram,
    pub(crate) hotkeys: super::hotkeys::HotKeys,
    pub(crate) slowlog: super::slowlog::SlowLog,
    pub(crate) shadow: super::shadow::ShadowLog,
}

impl PoolCounters {
    #[inline]
    pub(crate) fn add(&self, counter: PoolCounter, n: u64) {
        self.counters.add(counter as usize, n);
    }

    #[inline]
    pub(crate) fn sub(&self, counter: PoolCounter, n: u64) {
        self.counters.sub(counter as usize, n);
    }

    pub(crate) fn get(&self, counter: PoolCounter) -> u64 {
        self.counters.get(counter as usize)
    }

    /// A request of `family` was read.
    #[inline]
    pub(crate) fn request(&self, family: Family) {
        self.requests.add(family as usize, 1);
    }

    /// `n` replies are owed to requests of `family`.
    #[inline]
    pub(crate) fn replies_owed(&self, family: Family, n: u64) {
        self.replies.add(family as usize, n);
    }

    pub(crate) fn requests(&self, family: Family) -> u64 {
        self.requests.get(family as usize)
    }

    pub(crate) fn replies(&self, family: Family) -> u64 {
        self.replies.get(family as usize)
    }
}

/// One worker's counters for a server, and the server's latency: from a request's
/// last byte written to its reply parsed.
#[derive(Default)]
pub(crate) struct ServerCounters {
    counters: Counters<{ ServerCounter::COUNT }>,
    pub(crate) latency: Histogram,
}

impl ServerCounters {
    #[inline]
    pub(crate) fn add(&self, counter: ServerCounter, n: u64) {
        self.counters.add(counter as usize, n);
    }

    #[inline]
    pub(crate) fn sub(&self, counter: ServerCounter, n: u64) {
        self.counters.sub(counter as usize, n);
    }

    pub(crate) fn get(&self, counter: ServerCounter) -> u64 {
        self.counters.get(counter as usize)
    }
}

/// One worker's proxy-wide counters.
#[derive(Default)]
pub(crate) struct ProxyCounters(Counters<{ ProxyCounter::COUNT }>);

impl ProxyCounters {
    #[inline]
    pub(crate) fn add(&self, counter: ProxyCounter, n: u64) {
        self.0.add(counter as usize, n);
    }

    #[inline]
    pub(crate) fn sub(&self, counter: ProxyCounter, n: u64) {
        self.0.sub(counter as usize, n);
    }

    pub(crate) fn get(&self, counter: ProxyCounter) -> u64 {
        self.0.get(counter as usize)
    }
}

/// One worker's counters for one pool of a generation: the pool's and each server's,
/// in the order of the config. Carried by pool and server name across reloads.
#[derive(Clone)]
pub(crate) struct PoolStats {
    pub(crate) pool: Arc<PoolCounters>,
    pub(crate) servers: Vec<Arc<ServerCounters>>,
}

/// What lasts for the life of the process: start time and each worker's proxy-wide
/// counters.
pub(crate) struct Registry {
    pub(crate) workers: Vec<Arc<ProxyCounters>>,
    started: Instant,
    /// The totals at the last memcached `stats reset`.
    baseline: [AtomicU64; ProxyCounter::COUNT],
}

impl Registry {
    pub(crate) fn new(threads: usize) -> Self {
        Registry {
            workers: (0..threads).map(|_| Arc::default()).collect(),
            started: Instant::now(),
            baseline: Default::default(),
        }
    }

    pub(crate) fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub(crate) fn threads(&self) -> usize {
        self.workers.len()
    }

    pub(crate) fn proxy_total(&self, counter: ProxyCounter) -> u64 {
        self.workers
            .iter()
            .map(|w| w.get(counter))
            .fold(0, u64::wrapping_add)
    }

    /// `stats reset`: counters read from now on start again from 0 (but the
    /// current connections, which are a level, not a count).
    pub(crate) fn reset_proxy_counters(&self) {
        for &counter in ProxyCounter::ALL {
            if counter != ProxyCounter::CurrConnections {
                self.baseline[counter as usize].store(self.proxy_total(counter), Relaxed);
            }
        }
    }

    pub(crate) fn proxy_since_reset(&self, counter: ProxyCounter) -> u64 {
        self.proxy_total(counter)
            .wrapping_sub(self.baseline[counter as usize].load(Relaxed))
    }
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

    #[test]
    fn every_counter_has_a_name_of_its_own() {
        let names: Vec<&str> = PoolCounter::ALL.iter().map(|c| c.name()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert_eq!(Family::ALL.len(), 21);
        assert!(Family::Read.is_redis() && !Family::Other.is_redis());
        assert_eq!(ServerCounter::COUNT, 13);
    }
}
