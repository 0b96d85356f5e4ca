//! `GET /metrics`: the counters and latency histograms of every pool and server in
//! the Prometheus (OpenMetrics) text format, written by the `prometheus-client`
//! crate. They are gathered at scrape time from the per-worker single-writer
//! counters the request path keeps anyway, so serving metrics costs the request
//! path nothing.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::state::counters::{
    Family as CommandFamily, HistogramTotal, PoolCounter, ServerCounter, LATENCY_BOUNDS_US,
};
use crate::state::generation::{Generation, PoolGen};
use crate::state::health::{ProbeState, ServerState};

/// The content type of [`render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics of `generation` (and of the process) as Prometheus reads them.
pub(crate) fn render(generation: Arc<Generation>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(generation)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

struct Snapshot(Arc<Generation>);

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "metrics of generation {}", self.0.number)
    }
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn by_pool(pool: &str) -> Labels<'_> {
    vec![("pool", pool)]
}

/// One metric family being written: its samples, one per label set.
struct Family<'e> {
    encoder: MetricEncoder<'e>,
}

impl Family<'_> {
    fn counter(&mut self, labels: &Labels, value: u64) -> Result<(), std::fmt::Error> {
        self.encoder
            .encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)
    }

    fn gauge(&mut self, labels: &Labels, value: i64) -> Result<(), std::fmt::Error> {
        self.encoder.encode_family(labels)?.encode_gauge(&value)
    }

    fn histogram(&mut self, labels: &Labels, h: &HistogramTotal) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = h
            .buckets
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let bound = LATENCY_BOUNDS_US
                    .get(i)
                    .map_or(f64::INFINITY, |&us| us as f64 / 1e6);
                (bound, n)
            })
            .collect();
        self.encoder
            .encode_family(labels)?
            .encode_histogram::<NoLabelSet>(h.sum_us as f64 / 1e6, h.count(), &buckets, None)
    }
}

fn family<'e>(
    encoder: &'e mut DescriptorEncoder,
    name: &'e str,
    help: &str,
    kind: MetricType,
) -> Result<Family<'e>, std::fmt::Error> {
    Ok(Family {
        encoder: encoder.encode_descriptor(name, help, None, kind)?,
    })
}

/// Per-pool metrics: (name, help, counter).
const POOL_COUNTERS: [(&str, &str, PoolCounter); 22] = [
    (
        "cashew_client_connections_opened",
        "Client connections accepted",
        PoolCounter::ConnectionsOpened,
    ),
    (
        "cashew_replies",
        "Replies written to clients",
        PoolCounter::Replies,
    ),
    (
        "cashew_get_hits",
        "Keys found by memcached retrievals",
        PoolCounter::GetHits,
    ),
    (
        "cashew_get_misses",
        "Keys not found by memcached retrievals",
        PoolCounter::GetMisses,
    ),
    (
        "cashew_fragments",
        "Server requests made by splitting multi-key requests",
        PoolCounter::Fragments,
    ),
    (
        "cashew_forward_errors",
        "Requests that failed on their way to a server",
        PoolCounter::ForwardError,
    ),
    (
        "cashew_replica_failovers",
        "Requests passed on to a later replica",
        PoolCounter::ReplicaFailovers,
    ),
    (
        "cashew_warmups",
        "Hits written back to replicas that missed them",
        PoolCounter::Warmups,
    ),
    (
        "cashew_gutter_requests",
        "Requests sent to the gutter pool",
        PoolCounter::Guttered,
    ),
    (
        "cashew_migrate_fallbacks",
        "Keys asked of their previous server after a miss while keys move",
        PoolCounter::MigrateFallbacks,
    ),
    (
        "cashew_migrate_hits",
        "Keys found on their previous server while keys move",
        PoolCounter::MigrateHits,
    ),
    (
        "cashew_shadow_requests",
        "Requests copied to the shadow pool",
        PoolCounter::ShadowRequests,
    ),
    (
        "cashew_shadow_mismatches",
        "Keys the shadow pool answered otherwise",
        PoolCounter::ShadowMismatches,
    ),
    (
        "cashew_shadow_dropped",
        "Copies not sent to the shadow pool: too many waiting",
        PoolCounter::ShadowDropped,
    ),
    (
        "cashew_cluster_moved",
        "MOVED redirections followed (Redis Cluster pools)",
        PoolCounter::ClusterMoved,
    ),
    (
        "cashew_cluster_ask",
        "ASK redirections followed (Redis Cluster pools)",
        PoolCounter::ClusterAsk,
    ),
    (
        "cashew_cluster_retries",
        "Requests sent again after TRYAGAIN or CLUSTERDOWN (Redis Cluster pools)",
        PoolCounter::ClusterRetries,
    ),
    (
        "cashew_pinned_connections",
        "Server connections pinned to one client (transactions, blocking calls)",
        PoolCounter::PinnedConnections,
    ),
    (
        "cashew_keys_commands",
        "KEYS commands sent over every server",
        PoolCounter::KeysCommands,
    ),
    (
        "cashew_flushall_commands",
        "FLUSHALL commands sent over every server",
        PoolCounter::FlushallCommands,
    ),
    (
        "cashew_tls_handshake_failures",
        "Client connections closed because their TLS handshake failed",
        PoolCounter::TlsHandshakeFailures,
    ),
    (
        "cashew_auth_failures",
        "AUTH and HELLO AUTH refused for a wrong user or password",
        PoolCounter::AuthFailures,
    ),
];

const ERROR_KINDS: [(&str, PoolCounter); 5] = [
    ("client_error", PoolCounter::ErrClient),
    ("server_error", PoolCounter::ErrServer),
    ("timeout", PoolCounter::ErrTimeout),
    ("refused", PoolCounter::ErrRefused),
    ("unsupported", PoolCounter::ErrUnsupported),
];

const SERVER_COUNTERS: [(&str, &str, ServerCounter); 4] = [
    (
        "cashew_server_requests",
        "Requests sent to the server",
        ServerCounter::Requests,
    ),
    (
        "cashew_server_replies",
        "Replies read from the server",
        ServerCounter::Responses,
    ),
    (
        "cashew_server_request_bytes",
        "Bytes sent to the server",
        ServerCounter::RequestBytes,
    ),
    (
        "cashew_server_reply_bytes",
        "Bytes read from the server",
        ServerCounter::ResponseBytes,
    ),
];

const SERVER_ERROR_KINDS: [(&str, ServerCounter); 3] = [
    ("closed", ServerCounter::ServerEof),
    ("error", ServerCounter::ServerErr),
    ("timeout", ServerCounter::ServerTimedout),
];

const STATES: [&str; 4] = ["up", "ejected", "down", "manual"];

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let generation = &*self.0;
        let none: Labels = Vec::new();
        let e = &mut encoder;

        let mut build =
            e.encode_descriptor("cashew_build", "cashew's version", None, MetricType::Info)?;
        build.encode_info(&vec![("version", env!("CARGO_PKG_VERSION"))])?;
        let registry = &generation.registry;
        let process = [
            (
                "cashew_uptime_seconds",
                "Seconds since cashew started",
                registry.uptime() as i64,
            ),
            (
                "cashew_generation",
                "Generation of the configuration in force",
                generation.number as i64,
            ),
            (
                "cashew_worker_threads",
                "Worker threads",
                registry.threads() as i64,
            ),
            (
                "cashew_resident_memory_bytes",
                "Resident memory",
                crate::process::resident_bytes().unwrap_or(0) as i64,
            ),
            (
                "cashew_open_fds",
                "Open file descriptors",
                open_fds() as i64,
            ),
        ];
        for (name, help, value) in process {
            family(e, name, help, MetricType::Gauge)?.gauge(&none, value)?;
        }
        if generation.config.pools.iter().any(|p| p.redis_cluster) {
            let (periodic, asked, changed) = crate::state::cluster::refreshes();
            let mut f = family(
                e,
                "cashew_cluster_map_reads",
                "Reads of the Redis Cluster slot maps, by reason: every interval, or asked by a MOVED or a failed node",
                MetricType::Counter,
            )?;
            for (reason, n) in [("periodic", periodic), ("asked", asked)] {
                f.counter(&vec![("reason", reason)], n)?;
            }
            family(
                e,
                "cashew_cluster_map_changes",
                "Reads of the Redis Cluster slot maps that found a change (each reloads the configuration)",
                MetricType::Counter,
            )?
            .counter(&none, changed)?;
        }

        let pools: Vec<(&str, &PoolGen)> = generation
            .config
            .pools
            .iter()
            .map(|p| p.name.as_str())
            .zip(&generation.pools)
            .collect();

        let mut f = family(
            e,
            "cashew_client_connections",
            "Client connections open",
            MetricType::Gauge,
        )?;
        for (name, state) in &pools {
            f.gauge(
                &by_pool(name),
                state.total(PoolCounter::ClientConnections) as i64,
            )?;
        }
        let mut f = family(
            e,
            "cashew_in_flight",
            "Requests read and not yet answered",
            MetricType::Gauge,
        )?;
        for (name, state) in &pools {
            f.gauge(&by_pool(name), state.total(PoolCounter::InFlight) as i64)?;
        }
        let mut f = family(
            e,
            "cashew_requests",
            "Client requests by command family",
            MetricType::Counter,
        )?;
        for (name, state) in &pools {
            for &fam in CommandFamily::ALL {
                let n = state.requests(fam);
                // Families a pool's protocol never has stay out.
                if n > 0 || generation_protocol_has(generation, name, fam) {
                    f.counter(&vec![("pool", *name), ("family", fam.name())], n)?;
                }
            }
        }
        let mut f = family(
            e,
            "cashew_family_replies",
            "Replies owed to client requests, by command family, counted as requests are taken",
            MetricType::Counter,
        )?;
        for (name, state) in &pools {
            for &fam in CommandFamily::ALL {
                let n = state.replies(fam);
                if n > 0 || generation_protocol_has(generation, name, fam) {
                    f.counter(&vec![("pool", *name), ("family", fam.name())], n)?;
                }
            }
        }
        let mut f = family(
            e,
            "cashew_errors",
            "Client requests answered with an error, by kind",
            MetricType::Counter,
        )?;
        for (name, state) in &pools {
            for (kind, i) in ERROR_KINDS {
                f.counter(&vec![("pool", *name), ("kind", kind)], state.total(i))?;
            }
        }
        for (metric, help, i) in POOL_COUNTERS {
            let mut f = family(e, metric, help, MetricType::Counter)?;
            for (name, state) in &pools {
                f.counter(&by_pool(name), state.total(i))?;
            }
        }
        let mut f = family(
            e,
            "cashew_server_ejections_by_pool",
            "Server ejections in the pool",
            MetricType::Counter,
        )?;
        for (name, state) in &pools {
            let probed = state
                .shared
                .probe_ejections
                .load(std::sync::atomic::Ordering::Relaxed);
            f.counter(
                &by_pool(name),
                state.total(PoolCounter::ServerEjects) + probed,
            )?;
        }
        let mut f = family(
            e,
            "cashew_client_latency_seconds",
            "From a request read in full to its reply written in full",
            MetricType::Histogram,
        )?;
        for (name, state) in &pools {
            f.histogram(&by_pool(name), &state.latency())?;
        }

        // Servers.
        let servers: Vec<(Labels, &PoolGen, usize)> = generation
            .config
            .pools
            .iter()
            .zip(&generation.pools)
            .flat_map(|(pool, state)| {
                pool.servers.iter().enumerate().map(move |(s, server)| {
                    (
                        vec![("pool", pool.name.as_str()), ("server", server.name())],
                        state,
                        s,
                    )
                })
            })
            .collect();
        for (metric, help, i) in SERVER_COUNTERS {
            let mut f = family(e, metric, help, MetricType::Counter)?;
            for (labels, state, s) in &servers {
                f.counter(labels, state.server_total(*s, i))?;
            }
        }
        let mut f = family(
            e,
            "cashew_server_errors",
            "Server connection failures, by kind",
            MetricType::Counter,
        )?;
        for (labels, state, s) in &servers {
            for (kind, i) in SERVER_ERROR_KINDS {
                let mut l = labels.clone();
                l.push(("kind", kind));
                f.counter(&l, state.server_total(*s, i))?;
            }
        }
        let mut f = family(
            e,
            "cashew_server_ejections",
            "Times the server was ejected",
            MetricType::Counter,
        )?;
        for (labels, state, s) in &servers {
            f.counter(labels, state.servers[*s].ejections())?;
        }
        let mut f = family(
            e,
            "cashew_server_state",
            "1 for the server's state: up, ejected (after failures), down (until a health check succeeds), manual",
            MetricType::Gauge,
        )?;
        for (labels, state, s) in &servers {
            let now = match state.servers[*s].state() {
                ServerState::Up => "up",
                ServerState::Ejected(_) => "ejected",
                ServerState::Down => "down",
                ServerState::Manual => "manual",
            };
            for name in STATES {
                let mut l = labels.clone();
                l.push(("state", name));
                f.gauge(&l, i64::from(name == now))?;
            }
        }
        let mut f = family(
            e,
            "cashew_server_state_changed_timestamp_seconds",
            "When the server's state last changed",
            MetricType::Gauge,
        )?;
        for (labels, state, s) in &servers {
            f.gauge(
                labels,
                (state.servers[*s].changed_at_usec() / 1_000_000) as i64,
            )?;
        }
        let mut f = family(
            e,
            "cashew_server_health_check_ok",
            "1 when the last health check succeeded (servers with health checks)",
            MetricType::Gauge,
        )?;
        for (labels, state, s) in &servers {
            match state.servers[*s].probe_state() {
                ProbeState::Off => {}
                probe => f.gauge(labels, i64::from(probe == ProbeState::Ok))?,
            }
        }
        let mut f = family(
            e,
            "cashew_server_connections",
            "Server connections open",
            MetricType::Gauge,
        )?;
        for (labels, state, s) in &servers {
            f.gauge(
                labels,
                state.server_total(*s, ServerCounter::ServerConnections) as i64,
            )?;
        }
        let mut f = family(
            e,
            "cashew_server_queue_depth",
            "Requests waiting to be sent to the server or for its reply",
            MetricType::Gauge,
        )?;
        for (labels, state, s) in &servers {
            let depth = state
                .server_total(*s, ServerCounter::InQueue)
                .wrapping_add(state.server_total(*s, ServerCounter::OutQueue));
            f.gauge(labels, depth as i64)?;
        }
        let mut f = family(
            e,
            "cashew_server_latency_seconds",
            "From a request's last byte written to the server to its reply parsed",
            MetricType::Histogram,
        )?;
        for (labels, state, s) in &servers {
            f.histogram(labels, &state.server_latency(*s))?;
        }
        Ok(())
    }
}

/// Whether `family` belongs to the protocol of pool `name`.
fn generation_protocol_has(generation: &Generation, name: &str, family: CommandFamily) -> bool {
    let redis = generation
        .config
        .pools
        .iter()
        .find(|p| p.name == name)
        .is_some_and(|p| p.redis);
    family.is_redis() == redis
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}
