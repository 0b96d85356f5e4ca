//! The validated configuration: what every other part of cashew reads.

use std::path::PathBuf;

use cashew_route::{Distribution, HashFunction, HashTag, RouteNode};

use crate::secret::Secret;
use crate::yaml::Location;

/// A whole config file: its pools in the order written.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub pools: Vec<Pool>,
}

impl Config {
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }
}

/// One pool: a listen address in front of a set of servers. Field names and
/// defaults are nutcracker's.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    pub name: String,
    pub listen: Listen,
    pub hash: HashFunction,
    pub hash_tag: Option<HashTag>,
    pub distribution: Distribution,
    /// Milliseconds a server may take to answer; `None` waits forever.
    pub timeout_ms: Option<u64>,
    pub backlog: u32,
    /// Most clients at once; 0 means no limit.
    pub client_connections: u32,
    pub redis: bool,
    pub redis_auth: Option<Secret>,
    pub redis_db: u32,
    pub preconnect: bool,
    pub auto_eject_hosts: bool,
    pub server_connections: u32,
    pub server_retry_timeout_ms: u64,
    pub server_failure_limit: u32,
    pub tcpkeepalive: bool,
    pub reuseport: bool,
    /// Largest value a client may store, in bytes (cashew's own key); without it
    /// only `max_request_size` bounds it and the server decides below that.
    pub max_value_size: Option<u64>,
    /// memcached: each key is kept on this many servers (cashew's own key).
    pub replicas: u32,
    /// memcached: a miss on a key's first replica is asked of the next ones.
    pub failover_on_miss: bool,
    /// memcached: a hit found on a later replica is written back to the ones that missed.
    pub warmup: bool,
    /// Seconds a written-back item lives (the proxy cannot know the original TTL).
    pub warmup_ttl: u64,
    /// The pool that takes the requests of keys whose servers are all ejected.
    pub gutter: Option<String>,
    /// Seconds at most that a write to the gutter pool lives.
    pub gutter_ttl: u64,
    /// Milliseconds between health probes of each server; 0 for none.
    pub health_check_interval_ms: u64,
    /// Bytes of replies cashew holds for one client (written to it or not yet
    /// arrived) before it stops reading that client's requests.
    pub client_output_limit: u64,
    /// Largest request a client may send, in bytes (line and data).
    pub max_request_size: u64,
    /// Most keys in one request.
    pub max_keys: u32,
    /// Bytes of requests waiting to be written to one server connection, beyond
    /// which new requests for it fail at once.
    pub server_queue_limit: u64,
    /// Track the pool's hottest keys (cashew's own key).
    pub hotkeys: bool,
    /// Keys the hot-key sketch of each worker holds.
    pub hotkeys_capacity: u32,
    /// One request in this many is looked at for hot keys.
    pub hotkeys_sample: u32,
    /// Requests a server takes longer than this to answer are kept in the slow
    /// log; 0 for none.
    pub slowlog_ms: u64,
    /// Send consecutive single-key memcached `get`s (or `gets`) for one server as one
    /// multi-key request, which the server answers with one write instead of one per
    /// key (cashew's own key).
    pub coalesce_gets: bool,
    /// Redis pools: Sentinels (`host:port`) that know the servers by master name;
    /// empty when the servers are addresses.
    pub sentinels: Vec<(String, u16)>,
    /// The password cashew gives the Sentinels (their `requirepass`, or an ACL
    /// user's with `sentinel_auth_user`).
    pub sentinel_auth: Option<Secret>,
    pub sentinel_auth_user: Option<String>,
    /// TLS towards the Sentinels.
    pub sentinel_tls: Option<ServerTls>,
    /// Redis pools: the most server connections that clients' transactions,
    /// blocking calls and subscriptions may hold at once, over all workers.
    pub max_pinned_connections: u32,
    /// Redis pools: SCAN, KEYS, DBSIZE, RANDOMKEY, FLUSHDB and FLUSHALL go over every
    /// server (`false`: they are refused, as by nutcracker).
    pub keyspace_commands: bool,
    /// Milliseconds after a reload that changes where keys are placed during which
    /// a key that misses on its new server is looked for on its old one (0: off).
    pub migrate_ms: u64,
    /// How often (ms) the host names of servers are resolved again; a server whose
    /// address changed gets new connections at its new address (0: only when
    /// connecting).
    pub dns_refresh_ms: u64,
    /// Redis pools: the servers are seeds of a Redis Cluster, whose nodes and slot
    /// map are discovered (`cluster`).
    pub redis_cluster: bool,
    /// Redis Cluster pools: milliseconds between reads of the slot map.
    pub cluster_refresh_interval_ms: u64,
    /// Redis Cluster and Sentinel pools: which servers read-only commands go to.
    pub read_from: ReadFrom,
    /// Redis Cluster pools, when loaded for serving: the cluster as its nodes
    /// described it (not in the file). `servers` then holds its nodes.
    pub cluster: Option<std::sync::Arc<ClusterTopology>>,
    /// Sentinel pools reading from replicas, when loaded for serving: the masters'
    /// replicas the Sentinels reported (not in the file). `servers` then holds the
    /// file's servers, then these.
    pub sentinel_replicas: Option<std::sync::Arc<SentinelReplicas>>,
    /// Keys that begin with a prefix go to another pool of the file: (prefix, pool),
    /// longest prefix first.
    pub routes: Vec<(String, String)>,
    /// A copy of some requests goes to another pool, whose replies are compared.
    pub shadow: Option<Shadow>,
    /// TLS towards clients: the listener speaks TLS.
    pub tls: Option<ListenTls>,
    /// TLS towards the servers.
    pub server_tls: Option<ServerTls>,
    /// The ACL user cashew authenticates as on redis servers (`AUTH user password`).
    pub redis_auth_user: Option<String>,
    /// Users clients may authenticate as (redis pools), besides `redis_auth`.
    pub users: Vec<User>,
    /// `user:password` sent to memcached servers started with `-Y` (text auth).
    pub memcached_auth: Option<Secret>,
    pub servers: Vec<Server>,
}

/// Shadow traffic: a copy of the requests of a share of the keys goes to another
/// pool; its replies are compared with the pool's own and dropped.
#[derive(Clone, Debug, PartialEq)]
pub struct Shadow {
    pub pool: String,
    /// Of the keys, by a hash of the key (a key is always or never shadowed).
    pub fraction: f64,
    /// `true`: writes are copied too (not compared); `false`: reads only.
    pub all_commands: bool,
}

/// A pool's listener speaks TLS: its certificate chain and key, and the CA its
/// clients' certificates must be signed by (mutual TLS) when given. Paths are
/// absolute (a relative one is taken from the config file's directory).
#[derive(Clone, Debug)]
pub struct ListenTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
    /// Where `tls:` is in the file, for errors found when the files are loaded.
    pub at: Location,
}

/// TLS towards a pool's servers: the CA that signs their certificates (the
/// system's roots without one), a client certificate and key for servers that
/// want one, and the name to verify and send (the server's host without one).
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
    /// Where `server_tls:` is in the file.
    pub at: Location,
}

// Equal whatever lines they were written on: a reload that moves them changes nothing.
impl PartialEq for ListenTls {
    fn eq(&self, other: &Self) -> bool {
        (&self.cert, &self.key, &self.ca) == (&other.cert, &other.key, &other.ca)
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        (&self.ca, &self.cert, &self.key, &self.server_name)
            == (&other.ca, &other.cert, &other.key, &other.server_name)
    }
}

/// A user clients of a redis pool may authenticate as.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub name: String,
    /// The SHA-256 of the password, as 32 bytes.
    pub password_sha256: Secret,
    pub commands: UserCommands,
}

/// What a user may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserCommands {
    All,
    /// Read-only: commands Redis flags as writes get `-NOPERM`.
    Read,
}

/// Defaults of the limits that bound what one client or server can make cashew hold.
pub const DEFAULT_CLIENT_OUTPUT_LIMIT: u64 = 8 << 20;
pub const DEFAULT_MAX_REQUEST_SIZE: u64 = 64 << 20;
pub const DEFAULT_MAX_KEYS: u32 = 100_000;
pub const DEFAULT_SERVER_QUEUE_LIMIT: u64 = 64 << 20;

impl Pool {
    /// Defaults for every optional key, as nutcracker 0.5.0 has them.
    pub(crate) fn with_defaults(name: String, listen: Listen) -> Pool {
        Pool {
            name,
            listen,
            hash: HashFunction::Fnv1a64,
            hash_tag: None,
            distribution: Distribution::Ketama,
            timeout_ms: None,
            backlog: 512,
            client_connections: 0,
            redis: false,
            redis_auth: None,
            redis_db: 0,
            preconnect: false,
            auto_eject_hosts: false,
            server_connections: 1,
            server_retry_timeout_ms: 30_000,
            server_failure_limit: 2,
            tcpkeepalive: false,
            reuseport: false,
            max_value_size: None,
            replicas: 1,
            failover_on_miss: false,
            warmup: false,
            warmup_ttl: 300,
            gutter: None,
            gutter_ttl: 10,
            health_check_interval_ms: 0,
            client_output_limit: DEFAULT_CLIENT_OUTPUT_LIMIT,
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
            max_keys: DEFAULT_MAX_KEYS,
            server_queue_limit: DEFAULT_SERVER_QUEUE_LIMIT,
            hotkeys: false,
            hotkeys_capacity: 128,
            hotkeys_sample: 8,
            slowlog_ms: 0,
            coalesce_gets: true,
            keyspace_commands: true,
            max_pinned_connections: 1024,
            sentinels: Vec::new(),
            sentinel_auth: None,
            sentinel_auth_user: None,
            sentinel_tls: None,
            migrate_ms: 0,
            dns_refresh_ms: 30_000,
            redis_cluster: false,
            cluster_refresh_interval_ms: 2000,
            read_from: ReadFrom::Master,
            cluster: None,
            sentinel_replicas: None,
            routes: Vec::new(),
            shadow: None,
            tls: None,
            server_tls: None,
            redis_auth_user: None,
            users: Vec::new(),
            memcached_auth: None,
            servers: Vec::new(),
        }
    }

    /// The largest memcached value a client may store through cashew.
    pub fn value_limit(&self) -> u64 {
        self.max_value_size
            .map_or(self.max_request_size, |m| m.min(self.max_request_size))
    }

    /// The pool a key goes to: the one named by the longest prefix of `routes`
    /// the key begins with, else this one (`None`).
    pub fn route_for(&self, key: &[u8]) -> Option<&str> {
        self.routes
            .iter()
            .find(|(prefix, _)| key.starts_with(prefix.as_bytes()))
            .map(|(_, pool)| pool.as_str())
    }

    /// Whether placement stays fixed when servers are ejected: with replicas or a
    /// gutter pool, an ejected server's keys are served by its replicas or the
    /// gutter, never re-hashed onto the other servers.
    pub fn stable_placement(&self) -> bool {
        self.replicas > 1 || self.gutter.is_some()
    }

    /// How many servers hold the keyspace: the first ones, all but the replicas
    /// found for reads (a cluster's or the Sentinels').
    pub fn keyspace_servers(&self) -> usize {
        match (&self.cluster, &self.sentinel_replicas) {
            (Some(c), _) => c.masters.iter().filter(|&&m| m).count(),
            (None, Some(r)) => r.masters,
            (None, None) => self.servers.len(),
        }
    }

    /// The servers that serve read-only commands for master `server` (indices in
    /// `servers`): none unless `read_from` says a replica.
    pub fn read_replicas(&self, server: usize) -> &[u16] {
        if self.read_from == ReadFrom::Master {
            return &[];
        }
        let replicas = match (&self.cluster, &self.sentinel_replicas) {
            (Some(c), _) => &c.replicas,
            (None, Some(r)) => &r.replicas,
            (None, None) => return &[],
        };
        replicas.get(server).map_or(&[], |r| r.as_slice())
    }

    /// The servers as the router sees them, all live: those that hold the keyspace.
    pub fn route_nodes(&self) -> Vec<RouteNode<'_>> {
        self.servers[..self.keyspace_servers()]
            .iter()
            .map(|s| RouteNode {
                name: s.name().as_bytes(),
                weight: s.weight,
                live: true,
            })
            .collect()
    }
}

/// Where a pool accepts clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// `host:port` or `[v6]:port`; `host` is without brackets.
    Tcp { host: String, port: u16 },
    /// `/path.sock [mode]`, the mode in octal.
    Unix { path: PathBuf, mode: Option<u32> },
}

impl std::fmt::Display for Listen {
    /// As an operator writes it: `host:port`, `[v6]:port`, or the socket path.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Listen::Tcp { host, port } => write!(f, "{host}:{port}"),
            Listen::Unix { path, .. } => write!(f, "{}", path.display()),
        }
    }
}

/// Where a Redis Cluster or Sentinel pool sends read-only commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    Master,
    /// A replica of the slot's master; the master when none is up.
    Replica,
    /// As `Replica`, named for clients that say it so.
    PreferReplica,
}

impl ReadFrom {
    pub const ALL: [ReadFrom; 3] = [ReadFrom::Master, ReadFrom::Replica, ReadFrom::PreferReplica];

    pub fn name(self) -> &'static str {
        match self {
            ReadFrom::Master => "master",
            ReadFrom::Replica => "replica",
            ReadFrom::PreferReplica => "prefer_replica",
        }
    }
}

/// A Redis Cluster as its nodes described it: which server of the pool owns
/// each slot, and each master's replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterTopology {
    pub slots: cashew_route::SlotMap,
    /// Per server of the pool: the servers that replicate it (empty for replicas).
    pub replicas: Vec<Vec<u16>>,
    /// Per server of the pool: whether it is a master.
    pub masters: Vec<bool>,
}

/// The replicas of a Sentinel pool's masters, as the Sentinels reported them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelReplicas {
    /// How many of the pool's servers are its masters (the file's servers).
    pub masters: usize,
    /// Per master: the servers of the pool that replicate it.
    pub replicas: Vec<Vec<u16>>,
}

/// One `servers:` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// The entry exactly as written, e.g. `10.0.0.1:11211:1 cache-a`.
    pub entry: String,
    pub address: ServerAddress,
    pub weight: u32,
    /// The ketama and stats name (see [`Server::name`]).
    name: String,
    /// The address a host name resolved to when the configuration was loaded for
    /// serving (not in the file): a change of it gives the server new connections.
    pub resolved: Option<std::net::IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerAddress {
    /// `host` is without brackets.
    Tcp {
        host: String,
        port: u16,
    },
    Unix {
        path: PathBuf,
    },
    /// A redis master known by its name to the pool's Sentinels, which give its
    /// address (at start, at each reload, and when they switch it).
    Sentinel {
        master: String,
    },
}

impl Server {
    pub(crate) fn new(entry: String, address: ServerAddress, weight: u32, name: String) -> Self {
        Server {
            entry,
            address,
            weight,
            name,
            resolved: None,
        }
    }

    /// A node of a Redis Cluster, found in its slot map: named `host:port`.
    pub fn cluster_node(host: &str, port: u16) -> Server {
        let name = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Server::new(
            format!("{name}:1"),
            ServerAddress::Tcp {
                host: host.to_string(),
                port,
            },
            1,
            name,
        )
    }

    /// The server's name in placement and stats: the node name when given, else
    /// `host:port` as written, else `host` alone for port 11211 (libmemcached's
    /// convention, which nutcracker keeps so that ketama placement matches).
    pub fn name(&self) -> &str {
        &self.name
    }
}
