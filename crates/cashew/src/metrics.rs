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

use crate::generation::{Generation, PoolGen};
use crate::proxy::health::{ProbeState, ServerState};
use crate::stats::{self, pool as ps, server as st, HistogramTotal, FAMILIES, LATENCY_BOUNDS_US};

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics of `generation` (and of the process) as Prometheus reads them.
pub fn render(generation: Arc<Generation>) -> String {
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

/// A pool counter summed over the workers.
fn pool_counter(state: &PoolGen, i: usize) -> u64 {
    stats::pool_total(state, i)
}

/// A pool's client latency over all workers.
pub fn pool_latency(state: &PoolGen) -> HistogramTotal {
    let mut total = HistogramTotal::default();
    for w in &state.workers {
        w.pool.latency.add_to(&mut total);
    }
    total
}

/// A server's latency over all workers.
pub fn server_latency(state: &PoolGen, server: usize) -> HistogramTotal {
    let mut total = HistogramTotal::default();
    for w in &state.workers {
        w.servers[server].latency.add_to(&mut total);
    }
    total
}

/// Per-pool metrics: (name, help, type, index of the pool counter).
const POOL_COUNTERS: [(&str, &str, usize); 9] = [
    (
        "cashew_client_connections_opened",
        "Client connections accepted",
        ps::CONNECTIONS_OPENED,
    ),
    ("cashew_replies", "Replies written to clients", ps::REPLIES),
    (
        "cashew_get_hits",
        "Keys found by memcached retrievals",
        ps::GET_HITS,
    ),
    (
        "cashew_get_misses",
        "Keys not found by memcached retrievals",
        ps::GET_MISSES,
    ),
    (
        "cashew_fragments",
        "Server requests made by splitting multi-key requests",
        ps::FRAGMENTS,
    ),
    (
        "cashew_forward_errors",
        "Requests that failed on their way to a server",
        ps::FORWARD_ERROR,
    ),
    (
        "cashew_replica_failovers",
        "Requests passed on to a later replica",
        ps::REPLICA_FAILOVERS,
    ),
    (
        "cashew_warmups",
        "Hits written back to replicas that missed them",
        ps::WARMUPS,
    ),
    (
        "cashew_gutter_requests",
        "Requests sent to the gutter pool",
        ps::GUTTERED,
    ),
];

const ERROR_KINDS: [(&str, usize); 5] = [
    ("client_error", ps::ERR_CLIENT),
    ("server_error", ps::ERR_SERVER),
    ("timeout", ps::ERR_TIMEOUT),
    ("refused", ps::ERR_REFUSED),
    ("unsupported", ps::ERR_UNSUPPORTED),
];

const SERVER_COUNTERS: [(&str, &str, usize); 4] = [
    (
        "cashew_server_requests",
        "Requests sent to the server",
        st::REQUESTS,
    ),
    (
        "cashew_server_replies",
        "Replies read from the server",
        st::RESPONSES,
    ),
    (
        "cashew_server_request_bytes",
        "Bytes sent to the server",
        st::REQUEST_BYTES,
    ),
    (
        "cashew_server_reply_bytes",
        "Bytes read from the server",
        st::RESPONSE_BYTES,
    ),
];

const SERVER_ERROR_KINDS: [(&str, usize); 3] = [
    ("closed", st::SERVER_EOF),
    ("error", st::SERVER_ERR),
    ("timeout", st::SERVER_TIMEDOUT),
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
                resident_bytes() as i64,
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
                pool_counter(state, ps::CLIENT_CONNECTIONS) as i64,
            )?;
        }
        let mut f = family(
            e,
            "cashew_in_flight",
            "Requests read and not yet answered",
            MetricType::Gauge,
        )?;
        for (name, state) in &pools {
            f.gauge(&by_pool(name), pool_counter(state, ps::IN_FLIGHT) as i64)?;
        }
        let mut f = family(
            e,
            "cashew_requests",
            "Client requests by command family",
            MetricType::Counter,
        )?;
        for (name, state) in &pools {
            for (i, fam) in FAMILIES.iter().enumerate() {
                let n = pool_counter(state, ps::FAMILY + i);
                // Families a pool's protocol never has stay out.
                if n > 0 || generation_protocol_has(generation, name, i) {
                    f.counter(&vec![("pool", *name), ("family", fam)], n)?;
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
            for (i, fam) in FAMILIES.iter().enumerate() {
                let n = pool_counter(state, ps::REPLY_FAMILY + i);
                if n > 0 || generation_protocol_has(generation, name, i) {
                    f.counter(&vec![("pool", *name), ("family", fam)], n)?;
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
                f.counter(
                    &vec![("pool", *name), ("kind", kind)],
                    pool_counter(state, i),
                )?;
            }
        }
        for (metric, help, i) in POOL_COUNTERS {
            let mut f = family(e, metric, help, MetricType::Counter)?;
            for (name, state) in &pools {
                f.counter(&by_pool(name), pool_counter(state, i))?;
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
                pool_counter(state, ps::SERVER_EJECTS) + probed,
            )?;
        }
        let mut f = family(
            e,
            "cashew_client_latency_seconds",
            "From a request read in full to its reply written in full",
            MetricType::Histogram,
        )?;
        for (name, state) in &pools {
            f.histogram(&by_pool(name), &pool_latency(state))?;
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
                f.counter(labels, stats::server_total(state, *s, i))?;
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
                f.counter(&l, stats::server_total(state, *s, i))?;
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
                stats::server_total(state, *s, st::SERVER_CONNECTIONS) as i64,
            )?;
        }
        let mut f = family(
            e,
            "cashew_server_queue_depth",
            "Requests waiting to be sent to the server or for its reply",
            MetricType::Gauge,
        )?;
        for (labels, state, s) in &servers {
            let depth = stats::server_total(state, *s, st::IN_QUEUE)
                .wrapping_add(stats::server_total(state, *s, st::OUT_QUEUE));
            f.gauge(labels, depth as i64)?;
        }
        let mut f = family(
            e,
            "cashew_server_latency_seconds",
            "From a request's last byte written to the server to its reply parsed",
            MetricType::Histogram,
        )?;
        for (labels, state, s) in &servers {
            f.histogram(labels, &server_latency(state, *s))?;
        }
        Ok(())
    }
}

/// Whether family `i` belongs to the protocol of pool `name`.
fn generation_protocol_has(generation: &Generation, name: &str, i: usize) -> bool {
    let redis = generation
        .config
        .pools
        .iter()
        .find(|p| p.name == name)
        .is_some_and(|p| p.redis);
    (i >= stats::family::READ) == redis
}

/// Resident memory of this process, from `/proc/self/statm`.
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}
