//! The admin API's contract: its JSON documents as types, shared by the server
//! (`control::admin`) and the commands that read them (`status`, `top`, ...), so
//! that a field renamed on one side fails to compile on the other; and how its
//! bearer token is read from a file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /health`.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Health {
    pub(crate) status: String,
    pub(crate) pid: u32,
}

/// `GET /ready`.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Ready {
    pub(crate) ready: bool,
    pub(crate) phase: String,
    pub(crate) generation: u64,
}

/// The configuration generation in force, in several documents.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct GenerationInfo {
    pub(crate) generation: u64,
    /// Seconds since the epoch.
    pub(crate) loaded_at: u64,
    /// `sha256:` and the hex digest of the file as written.
    pub(crate) checksum: String,
    pub(crate) file: String,
}

/// `GET /config`.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct ConfigView {
    #[serde(flatten)]
    pub(crate) generation: GenerationInfo,
    /// The file's text with every secret value replaced by `"<redacted>"`.
    pub(crate) text: String,
}

/// `GET /status`.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Status {
    #[serde(flatten)]
    pub(crate) generation: GenerationInfo,
    pub(crate) pid: u32,
    pub(crate) version: String,
    pub(crate) uptime: u64,
    pub(crate) phase: String,
    pub(crate) threads: usize,
    pub(crate) pools: Vec<PoolStatus>,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct PoolStatus {
    pub(crate) name: String,
    pub(crate) listen: String,
    /// `memcached` or `redis`.
    pub(crate) protocol: String,
    pub(crate) client_connections: u64,
    pub(crate) requests_per_second: f64,
    pub(crate) requests: u64,
    pub(crate) get_hits: u64,
    pub(crate) get_misses: u64,
    pub(crate) errors: u64,
    pub(crate) latency_ms: Latency,
    /// Redis pools: server connections pinned to one client (transactions,
    /// blocking calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pinned_connections: Option<u64>,
    /// Pools with `migrate_ms`: the keys moving since the last change of placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) migration: Option<MigrationStatus>,
    /// Redis Cluster pools: the map routed by and the redirections followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cluster: Option<ClusterStatus>,
    pub(crate) servers: Vec<ServerStatus>,
}

/// A Redis Cluster pool's slot map and what following it took.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct ClusterStatus {
    /// Slots that have an owner in the map (16384 when the cluster is whole).
    pub(crate) slots_covered: usize,
    pub(crate) moved: u64,
    pub(crate) ask: u64,
    pub(crate) retries: u64,
    /// Reads of the slot maps since start: every interval, and when asked (a
    /// MOVED, a failed node); and how many found a changed map.
    pub(crate) refreshes_periodic: u64,
    pub(crate) refreshes_asked: u64,
    pub(crate) maps_changed: u64,
}

/// A pool's keys moving after a reload changed their placement.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct MigrationStatus {
    /// Milliseconds until the previous placement is forgotten (0: it is).
    pub(crate) ends_in_ms: u64,
    /// Keys asked of their previous server after a miss, and found there.
    pub(crate) fallbacks: u64,
    pub(crate) hits: u64,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct ServerStatus {
    pub(crate) name: String,
    /// The `servers:` entry as written.
    pub(crate) address: String,
    /// `up`, `ejected`, `down` or `manual`.
    pub(crate) state: String,
    /// Seconds the state has held.
    pub(crate) state_for_s: u64,
    /// `off`, `ok` or `failing`.
    pub(crate) health_check: String,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) connections: u64,
    pub(crate) latency_ms: Latency,
    /// When ejected after failures: when it is tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) back_in_ms: Option<u64>,
    /// A Redis Cluster node's role (`master`, `replica`) and the slots it owns
    /// (`0-5460 6000`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cluster_role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) slots: Option<String>,
    /// A replica a Sentinel pool reads from (`read_from`): its master's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) replica_of: Option<String>,
}

/// Latency quantiles in ms since start, with the histogram's counts per bucket
/// (bounds as in `/metrics`) so that a reader can take the quantiles of the
/// interval between two readings.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub(crate) struct Latency {
    pub(crate) p50: Option<f64>,
    pub(crate) p99: Option<f64>,
    pub(crate) buckets: Vec<u64>,
}

/// `GET /clients`.
#[derive(Serialize, Deserialize, Debug, Default)]
pub(crate) struct Clients {
    /// Oldest first.
    pub(crate) clients: Vec<ClientView>,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct ClientView {
    pub(crate) id: u64,
    pub(crate) pool: String,
    /// `redis` or `memcache`.
    pub(crate) protocol: String,
    pub(crate) address: String,
    pub(crate) local: String,
    /// Seconds since it connected, and since its last request.
    pub(crate) age_s: u64,
    pub(crate) idle_s: u64,
    pub(crate) requests: u64,
    /// A redis client's `CLIENT SETNAME` and `CLIENT SETINFO` (empty if none).
    pub(crate) name: String,
    pub(crate) lib_name: String,
    pub(crate) lib_ver: String,
    pub(crate) subscriber: bool,
}

/// `POST /clients/{id}/kill`.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Killed {
    pub(crate) killed: u64,
    pub(crate) pool: String,
    pub(crate) address: String,
}

/// `GET /hotkeys`.
#[derive(Serialize, Deserialize, Debug, Default)]
pub(crate) struct HotKeys {
    pub(crate) hotkeys: Vec<HotKey>,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct HotKey {
    pub(crate) pool: String,
    /// Printable: other bytes as `\xNN`.
    pub(crate) key: String,
    /// Requests per second, estimated (it may overstate)...
    pub(crate) rate: f64,
    /// ...and what it is at least.
    pub(crate) rate_min: f64,
    pub(crate) server: Option<String>,
}

/// `GET /slowlog`.
#[derive(Serialize, Deserialize, Debug, Default)]
pub(crate) struct SlowLog {
    /// Each pool's threshold, for pools with one.
    pub(crate) slowlog_ms: BTreeMap<String, u64>,
    /// The latest first.
    pub(crate) slowlog: Vec<SlowRequest>,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct SlowRequest {
    pub(crate) time: String,
    pub(crate) pool: String,
    pub(crate) server: String,
    pub(crate) command: String,
    pub(crate) key: String,
    pub(crate) latency_ms: f64,
}

/// `GET /shadow`.
#[derive(Serialize, Deserialize, Debug, Default)]
pub(crate) struct ShadowReport {
    /// Each pool with a `shadow`.
    pub(crate) pools: Vec<ShadowPool>,
    /// The latest first.
    pub(crate) mismatches: Vec<ShadowMismatch>,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct ShadowPool {
    pub(crate) pool: String,
    pub(crate) shadow_pool: String,
    pub(crate) fraction: f64,
    /// `reads` or `all`.
    pub(crate) commands: String,
    pub(crate) requests: u64,
    pub(crate) mismatches: u64,
    pub(crate) dropped: u64,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct ShadowMismatch {
    pub(crate) time: String,
    pub(crate) pool: String,
    pub(crate) command: String,
    pub(crate) key: String,
    /// What the pool answered, and its shadow, in words.
    pub(crate) primary: String,
    pub(crate) shadow: String,
}

/// `POST /reload`.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Reloaded {
    pub(crate) generation: u64,
    pub(crate) loaded_at: u64,
    pub(crate) checksum: String,
    pub(crate) pools: Vec<String>,
}

/// `POST /restart`.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Restarted {
    pub(crate) pid: u32,
}

/// `POST /stop`.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Stopping {
    pub(crate) status: String,
}

/// `POST /pools/{pool}/servers/{server}/eject` and `restore`.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct ServerChanged {
    pub(crate) pool: String,
    pub(crate) server: String,
    pub(crate) state: String,
}

/// Any call that failed.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Failure {
    pub(crate) error: String,
    /// The generation in force (a failed reload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) generation: Option<u64>,
    /// What could have been meant (a server name not found; the endpoints).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) endpoints: Vec<String>,
}

impl Failure {
    pub(crate) fn new(error: impl Into<String>) -> Failure {
        Failure {
            error: error.into(),
            generation: None,
            servers: Vec::new(),
            endpoints: Vec::new(),
        }
    }
}

/// A token file's content without its line ending; an empty one is an error.
pub(crate) fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("admin token file {}: {e}", path.display()))?;
    let token = text.trim_end_matches(['\n', '\r']);
    if token.is_empty() {
        return Err(format!("admin token file {}: it is empty", path.display()));
    }
    Ok(token.to_string())
}
