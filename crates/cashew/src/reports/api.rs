//! The admin API's contract: its JSON documents as types, shared by the server
//! (`control::admin`) and the commands that read them (`status`, `top`, ...), so
//! that a field renamed on one side fails to compile on the other; and how its
//! bearer token is read from a file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /health`.
#[derive(Serialize, Deserialize, Debug)]
pub struct Health {
    pub status: String,
    pub pid: u32,
}

/// `GET /ready`.
#[derive(Serialize, Deserialize, Debug)]
pub struct Ready {
    pub ready: bool,
    pub phase: String,
    pub generation: u64,
}

/// The configuration generation in force, in several documents.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct GenerationInfo {
    pub generation: u64,
    /// Seconds since the epoch.
    pub loaded_at: u64,
    /// `sha256:` and the hex digest of the file as written.
    pub checksum: String,
    pub file: String,
}

/// `GET /config`.
#[derive(Serialize, Deserialize, Debug)]
pub struct ConfigView {
    #[serde(flatten)]
    pub generation: GenerationInfo,
    /// The file's text with every secret value replaced by `"<redacted>"`.
    pub text: String,
}

/// `GET /status`.
#[derive(Serialize, Deserialize, Debug)]
pub struct Status {
    #[serde(flatten)]
    pub generation: GenerationInfo,
    pub pid: u32,
    pub version: String,
    pub uptime: u64,
    pub phase: String,
    pub threads: usize,
    pub pools: Vec<PoolStatus>,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct PoolStatus {
    pub name: String,
    pub listen: String,
    /// `memcached` or `redis`.
    pub protocol: String,
    pub client_connections: u64,
    pub requests_per_second: f64,
    pub requests: u64,
    pub get_hits: u64,
    pub get_misses: u64,
    pub errors: u64,
    pub latency_ms: Latency,
    pub servers: Vec<ServerStatus>,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct ServerStatus {
    pub name: String,
    /// The `servers:` entry as written.
    pub address: String,
    /// `up`, `ejected`, `down` or `manual`.
    pub state: String,
    /// Seconds the state has held.
    pub state_for_s: u64,
    /// `off`, `ok` or `failing`.
    pub health_check: String,
    pub requests: u64,
    pub errors: u64,
    pub connections: u64,
    pub latency_ms: Latency,
    /// When ejected after failures: when it is tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_in_ms: Option<u64>,
}

/// Latency quantiles in ms since start, with the histogram's counts per bucket
/// (bounds as in `/metrics`) so that a reader can take the quantiles of the
/// interval between two readings.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub buckets: Vec<u64>,
}

/// `GET /hotkeys`.
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct HotKeys {
    pub hotkeys: Vec<HotKey>,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct HotKey {
    pub pool: String,
    /// Printable: other bytes as `\xNN`.
    pub key: String,
    /// Requests per second, estimated (it may overstate)...
    pub rate: f64,
    /// ...and what it is at least.
    pub rate_min: f64,
    pub server: Option<String>,
}

/// `GET /slowlog`.
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct SlowLog {
    /// Each pool's threshold, for pools with one.
    pub slowlog_ms: BTreeMap<String, u64>,
    /// The latest first.
    pub slowlog: Vec<SlowRequest>,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct SlowRequest {
    pub time: String,
    pub pool: String,
    pub server: String,
    pub command: String,
    pub key: String,
    pub latency_ms: f64,
}

/// `POST /reload`.
#[derive(Serialize, Deserialize, Debug)]
pub struct Reloaded {
    pub generation: u64,
    pub loaded_at: u64,
    pub checksum: String,
    pub pools: Vec<String>,
}

/// `POST /restart`.
#[derive(Serialize, Deserialize, Debug)]
pub struct Restarted {
    pub pid: u32,
}

/// `POST /stop`.
#[derive(Serialize, Deserialize, Debug)]
pub struct Stopping {
    pub status: String,
}

/// `POST /pools/{pool}/servers/{server}/eject` and `restore`.
#[derive(Serialize, Deserialize, Debug)]
pub struct ServerChanged {
    pub pool: String,
    pub server: String,
    pub state: String,
}

/// Any call that failed.
#[derive(Serialize, Deserialize, Debug)]
pub struct Failure {
    pub error: String,
    /// The generation in force (a failed reload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// What could have been meant (a server name not found; the endpoints).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
}

impl Failure {
    pub fn new(error: impl Into<String>) -> Failure {
        Failure {
            error: error.into(),
            generation: None,
            servers: Vec::new(),
            endpoints: Vec::new(),
        }
    }
}

/// A token file's content without its line ending; an empty one is an error.
pub fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("admin token file {}: {e}", path.display()))?;
    let token = text.trim_end_matches(['\n', '\r']);
    if token.is_empty() {
        return Err(format!("admin token file {}: it is empty", path.display()));
    }
    Ok(token.to_string())
}
