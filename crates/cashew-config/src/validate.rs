//! From a YAML tree to the [`Config`] model, collecting every error on the way.

use cashew_route::{Distribution, HashFunction, HashTag};

use crate::address::{parse_listen, parse_sentinel, parse_sentinel_server, parse_server};
use crate::error::ConfigError;
use crate::model::{Config, Listen, Pool, ReadFrom};
use crate::secret::{Secret, SECRET_KEYS};
use crate::yaml::{Location, Node, Value};

/// Every key a pool may have, in the order the docs list them.
pub const POOL_KEYS: [&str; 53] = [
    "listen",
    "hash",
    "hash_tag",
    "distribution",
    "timeout",
    "backlog",
    "client_connections",
    "redis",
    "redis_auth",
    "redis_db",
    "preconnect",
    "auto_eject_hosts",
    "server_connections",
    "server_retry_timeout",
    "server_failure_limit",
    "tcpkeepalive",
    "reuseport",
    "max_value_size",
    "replicas",
    "failover_on_miss",
    "warmup",
    "warmup_ttl",
    "gutter",
    "gutter_ttl",
    "health_check_interval",
    "client_output_limit",
    "max_request_size",
    "max_keys",
    "server_queue_limit",
    "hotkeys",
    "hotkeys_capacity",
    "hotkeys_sample",
    "slowlog_ms",
    "coalesce_gets",
    "keyspace_commands",
    "max_pinned_connections",
    "sentinels",
    "sentinel_auth",
    "sentinel_auth_user",
    "sentinel_tls",
    "migrate_ms",
    "dns_refresh_ms",
    "redis_cluster",
    "cluster_refresh_interval",
    "read_from",
    "routes",
    "shadow",
    "tls",
    "server_tls",
    "redis_auth_user",
    "users",
    "memcached_auth",
    "servers",
];

/// An ACL user name, as `AUTH` takes it.
fn user_name(s: &str) -> Result<String, String> {
    match s.is_empty() || s.contains(' ') {
        true => Err(format!("'{s}' is not a user name: no spaces, not empty")),
        false => Ok(s.to_string()),
    }
}

fn pool_keys() -> impl Iterator<Item = &'static str> {
    POOL_KEYS.into_iter()
}

pub struct Validator<'f> {
    file: &'f str,
    errors: Vec<ConfigError>,
    /// Where each pool names its gutter pool, checked once every pool is read.
    gutters: Vec<(String, Location)>,
    /// Each route as (pool, prefix, where its target is written), checked once
    /// every pool is read.
    pub(crate) route_targets: Vec<(String, String, Location)>,
    /// Each pool with a shadow, and where its target is written.
    pub(crate) shadow_targets: Vec<(String, Location)>,
}

impl<'f> Validator<'f> {
    pub fn new(file: &'f str) -> Self {
        Validator {
            file,
            errors: Vec::new(),
            gutters: Vec::new(),
            route_targets: Vec::new(),
            shadow_targets: Vec::new(),
        }
    }

    pub fn error(&mut self, at: Location, pool: Option<&str>, key: Option<&str>, message: String) {
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            at: Some(at),
            pool: pool.map(str::to_string),
            key: key.map(str::to_string),
            message,
        });
    }

    /// The config file's directory: relative paths in the file are taken from it.
    pub(crate) fn base_dir(&self) -> std::path::PathBuf {
        std::path::Path::new(self.file)
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
    }

    pub(crate) fn error_count(&self) -> usize {
        self.errors.len()
    }

    pub fn finish(self) -> Vec<ConfigError> {
        self.errors
    }

    pub fn config(&mut self, root: Option<Node>) -> Config {
        let mut pools = Vec::new();
        let Some(root) = root else {
            self.error(
                Location { line: 1, column: 1 },
                None,
                None,
                "the file defines no pools; expected a mapping of pool names to pool settings"
                    .into(),
            );
            return Config { pools };
        };
        let Value::Mapping(entries) = root.value else {
            let found = root.kind();
            self.error(
                root.at,
                None,
                None,
                format!(
                    "the top level must be a mapping of pool names to pool settings, found {found}"
                ),
            );
            return Config { pools };
        };
        let mut names: Vec<(String, Location)> = Vec::new();
        for (key, value) in entries {
            let Value::Scalar(name) = key.value else {
                self.error(
                    key.at,
                    None,
                    None,
                    format!("a pool name must be plain text, found {}", key.kind()),
                );
                continue;
            };
            if name.is_empty() {
                self.error(key.at, None, None, "a pool name must not be empty".into());
                continue;
            }
            if let Some((_, first)) = names.iter().find(|(n, _)| *n == name) {
                let line = first.line;
                self.error(
                    key.at,
                    Some(&name),
                    None,
                    format!(
                        "duplicate pool name; the pool '{name}' is first defined at line {line}"
                    ),
                );
                continue;
            }
            names.push((name.clone(), key.at));
            if let Some(pool) = self.pool(name, key.at, value) {
                pools.push(pool);
            }
        }
        if names.is_empty() {
            self.error(root.at, None, None, "the file defines no pools".into());
        }
        self.check_listen_addresses(&pools, &names);
        self.check_gutters(&pools);
        self.check_routes(&pools);
        self.check_shadows(&pools);
        Config { pools }
    }

    fn pool(&mut self, name: String, name_at: Location, node: Node) -> Option<Pool> {
        let Value::Mapping(entries) = node.value else {
            let found = node.kind();
            self.error(
                node.at,
                Some(&name),
                None,
                format!("pool settings must be a mapping of keys to values, found {found}"),
            );
            return None;
        };
        let pool_name = Some(name.as_str());
        // Placeholder until `listen:` is read; a pool without one is an error.
        let mut pool = Pool::with_defaults(
            name.clone(),
            Listen::Tcp {
                host: String::new(),
                port: 0,
            },
        );
        let errors_before = self.errors.len();
        let mut seen: Vec<(String, Location)> = Vec::new();
        let mut redis_auth_at = None;
        // Servers are master names when the pool has Sentinels, wherever the key is.
        let by_sentinel = entries
            .iter()
            .any(|(k, _)| matches!(&k.value, Value::Scalar(key) if key == "sentinels"));

        for (key_node, value) in entries {
            let Value::Scalar(key) = &key_node.value else {
                self.error(
                    key_node.at,
                    pool_name,
                    None,
                    format!("a key must be plain text, found {}", key_node.kind()),
                );
                continue;
            };
            let key = key.as_str();
            if let Some((_, first)) = seen.iter().find(|(k, _)| k == key) {
                let line = first.line;
                self.error(
                    key_node.at,
                    pool_name,
                    Some(key),
                    format!("duplicate key; it is first set at line {line}"),
                );
                continue;
            }
            seen.push((key.to_string(), key_node.at));
            if !pool_keys().any(|k| k == key) {
                let hint = match closest(key, pool_keys()) {
                    Some(k) => format!("did you mean '{k}'? "),
                    None => String::new(),
                };
                let allowed = pool_keys().collect::<Vec<_>>().join(", ");
                self.error(
                    key_node.at,
                    pool_name,
                    Some(key),
                    format!("unknown key; {hint}allowed keys: {allowed}"),
                );
                continue;
            }
            let mut field = Field {
                v: self,
                pool: &name,
                key,
                node: &value,
            };
            match key {
                "servers" => {
                    let servers = field.servers(by_sentinel);
                    pool.servers = servers;
                }
                "sentinels" => pool.sentinels = field.sentinels(),
                "listen" => {
                    if let Some(listen) = field.parse(parse_listen) {
                        pool.listen = listen;
                    }
                }
                "hash" => set(&mut pool.hash, field.named(&HashFunction::ALL.map(|h| (h.name(), h)))),
                "distribution" => set(&mut pool.distribution, field.named(&Distribution::ALL.map(|d| (d.name(), d)))),
                "hash_tag" => pool.hash_tag = field.parse(|t| HashTag::new(t.as_bytes()).ok_or_else(|| format!("'{t}' is {} bytes long; a hash tag is exactly 2 characters, such as '{{}}'", t.len()))),
                "timeout" => pool.timeout_ms = field.number(0, u64::MAX),
                "backlog" => set(&mut pool.backlog, field.number(0, u32::MAX)),
                "client_connections" => set(&mut pool.client_connections, field.number(0, u32::MAX)),
                "redis_db" => set(&mut pool.redis_db, field.number(0, u32::MAX)),
                "server_connections" => set(&mut pool.server_connections, field.number(1, u32::MAX)),
                "server_retry_timeout" => set(&mut pool.server_retry_timeout_ms, field.number(0, u64::MAX)),
                "server_failure_limit" => set(&mut pool.server_failure_limit, field.number(0, u32::MAX)),
                "redis" => set(&mut pool.redis, field.boolean()),
                "preconnect" => set(&mut pool.preconnect, field.boolean()),
                "auto_eject_hosts" => set(&mut pool.auto_eject_hosts, field.boolean()),
                "tcpkeepalive" => set(&mut pool.tcpkeepalive, field.boolean()),
                "reuseport" => set(&mut pool.reuseport, field.boolean()),
                "max_value_size" => pool.max_value_size = field.number(1, u32::MAX as u64),
                "replicas" => set(&mut pool.replicas, field.number(1, 16)),
                "failover_on_miss" => set(&mut pool.failover_on_miss, field.boolean()),
                "warmup" => set(&mut pool.warmup, field.boolean()),
                "warmup_ttl" => set(&mut pool.warmup_ttl, field.number(1, 30 * 24 * 3600)),
                "gutter" => {
                    pool.gutter = field.parse(|s| if s.is_empty() { Err("is empty; give the name of another pool of this file".into()) } else { Ok(s.to_string()) })
                }
                "gutter_ttl" => set(&mut pool.gutter_ttl, field.number(1, 30 * 24 * 3600)),
                "health_check_interval" => set(&mut pool.health_check_interval_ms, field.number(0, u64::MAX)),
                "client_output_limit" => set(&mut pool.client_output_limit, field.number(1024, 1 << 40)),
                "max_request_size" => set(&mut pool.max_request_size, field.number(1024, 1 << 30)),
                "max_keys" => set(&mut pool.max_keys, field.number(1, u32::MAX)),
                "server_queue_limit" => set(&mut pool.server_queue_limit, field.number(1024, 1 << 40)),
                "hotkeys" => set(&mut pool.hotkeys, field.boolean()),
                "hotkeys_capacity" => set(&mut pool.hotkeys_capacity, field.number(8, 4096)),
                "hotkeys_sample" => set(&mut pool.hotkeys_sample, field.number(1, 1 << 20)),
                "slowlog_ms" => set(&mut pool.slowlog_ms, field.number(0, u64::MAX)),
                "coalesce_gets" => set(&mut pool.coalesce_gets, field.boolean()),
                "keyspace_commands" => set(&mut pool.keyspace_commands, field.boolean()),
                "max_pinned_connections" => {
                    set(&mut pool.max_pinned_connections, field.number(0, 1 << 20))
                }
                "migrate_ms" => set(&mut pool.migrate_ms, field.number(0, 7 * 24 * 3600 * 1000)),
                "redis_cluster" => set(&mut pool.redis_cluster, field.boolean()),
                "cluster_refresh_interval" => set(&mut pool.cluster_refresh_interval_ms, field.number(10, 24 * 3600 * 1000)),
                "read_from" => set(&mut pool.read_from, field.named(&ReadFrom::ALL.map(|r| (r.name(), r)))),
                "dns_refresh_ms" => set(&mut pool.dns_refresh_ms, field.number(0, 24 * 3600 * 1000)),
                "routes" => pool.routes = self.routes(&name, &value),
                "shadow" => pool.shadow = self.shadow(&name, &value),
                "redis_auth" => {
                    redis_auth_at = Some(key_node.at);
                    pool.redis_auth = field.secret();
                }
                "memcached_auth" => {
                    pool.memcached_auth = field.secret();
                    if pool.memcached_auth.as_ref().is_some_and(|s| !s.expose().contains(':')) {
                        self.error(value.at, pool_name, Some(key), "is not 'user:password': the credentials of memcached's text auth (-Y)".into());
                    }
                }
                "redis_auth_user" => {
                    pool.redis_auth_user = field.parse(user_name);
                }
                "tls" => pool.tls = self.listen_tls(&name, &value, key_node.at),
                "server_tls" => pool.server_tls = self.server_tls(&name, key, &value, key_node.at),
                "sentinel_tls" => pool.sentinel_tls = self.server_tls(&name, key, &value, key_node.at),
                "sentinel_auth" => pool.sentinel_auth = field.secret(),
                "sentinel_auth_user" => {
                    pool.sentinel_auth_user = field.parse(user_name);
                }
                "users" => pool.users = self.users(&name, &value),
                _ => unreachable!("every key of POOL_KEYS is handled"),
            }
        }

        let has = |k: &str| seen.iter().any(|(s, _)| s == k);
        if !has("listen") {
            self.error(name_at, pool_name, None, "has no 'listen' key; give the address clients connect to, e.g. 'listen: 127.0.0.1:22121'".into());
        }
        if !has("servers") {
            self.error(
                name_at,
                pool_name,
                None,
                "has no 'servers' key; list at least one server, e.g. '- 127.0.0.1:11211:1'".into(),
            );
        }
        if let (Some(at), false) = (redis_auth_at, pool.redis) {
            self.error(
                at,
                pool_name,
                Some("redis_auth"),
                "is only valid in a redis pool; add 'redis: true' or remove it".into(),
            );
        }
        self.check_security(&pool, &seen);
        self.check_server_names(&pool, &seen);
        self.check_availability(&pool, &seen);
        if let Some((_, at)) = seen.iter().find(|(k, _)| k == "gutter") {
            self.gutters.push((pool.name.clone(), *at));
        }
        (self.errors.len() == errors_before).then_some(pool)
    }

    /// The availability keys fit together and fit the protocol.
    fn check_availability(&mut self, pool: &Pool, seen: &[(String, Location)]) {
        let at = |key: &str| seen.iter().find(|(k, _)| k == key).map(|(_, at)| *at);
        let name = Some(pool.name.as_str());
        if pool.distribution == Distribution::Random {
            for key in ["replicas", "gutter"] {
                if let Some(at) = at(key) {
                    self.error(at, name, Some(key), "needs 'distribution: ketama' or 'modula': with 'random' a key has no server of its own to keep a copy on or stand in for".into());
                }
            }
        }
        if pool.redis {
            for key in ["replicas", "failover_on_miss", "warmup", "warmup_ttl"] {
                if let Some(at) = at(key) {
                    self.error(at, name, Some(key), "is for memcached pools: redis replicates its data itself (replicaof, Sentinel), which a proxy must not second-guess".into());
                }
            }
            if let Some(at) = at("migrate_ms") {
                self.error(at, name, Some("migrate_ms"), "is for memcached pools: a redis pool's keys are its data, not a cache to warm (move them with MIGRATE or a replica)".into());
            }
            if pool.redis_cluster {
                for key in [
                    "sentinels",
                    "gutter",
                    "auto_eject_hosts",
                    "redis_db",
                    "hash",
                    "distribution",
                ] {
                    if let Some(at) = at(key) {
                        self.error(at, name, Some(key), "does not go with 'redis_cluster': the cluster places keys by slot (CRC16 of the key or of its {hash tag}), fails over by itself and has only database 0".into());
                    }
                }
                if let (Some(at), Some(tag)) = (at("hash_tag"), pool.hash_tag) {
                    if tag != HashTag::new(b"{}").expect("two bytes") {
                        self.error(at, name, Some("hash_tag"), "must be '{}' with 'redis_cluster': the cluster's hash tags are the part between braces".into());
                    }
                }
            } else {
                if let Some(at) = at("cluster_refresh_interval") {
                    self.error(
                        at,
                        name,
                        Some("cluster_refresh_interval"),
                        "is for pools with 'redis_cluster: true'".into(),
                    );
                }
                if let (Some(at), true) = (at("read_from"), pool.sentinels.is_empty()) {
                    self.error(at, name, Some("read_from"), "is for pools whose replicas cashew can find: with 'redis_cluster: true' or 'sentinels'".into());
                }
            }
            return;
        }
        for key in ["redis_cluster", "cluster_refresh_interval", "read_from"] {
            if let Some(at) = at(key) {
                self.error(
                    at,
                    name,
                    Some(key),
                    "is for redis pools: memcached has no cluster protocol".into(),
                );
            }
        }
        if let Some(at) = at("keyspace_commands") {
            self.error(at, name, Some("keyspace_commands"), "is for redis pools: memcached has no commands over the keyspace but flush_all, which cashew sends to every server".into());
        }
        if let Some(at) = at("sentinels") {
            self.error(
                at,
                name,
                Some("sentinels"),
                "is for redis pools: memcached has no Sentinel".into(),
            );
        }
        if let Some(at) = at("max_pinned_connections") {
            self.error(at, name, Some("max_pinned_connections"), "is for redis pools: memcached has no transactions, blocking commands or subscriptions".into());
        }
        if let Some(at) = at("replicas") {
            if pool.replicas as usize > pool.servers.len() && !pool.servers.is_empty() {
                self.error(at, name, Some("replicas"), format!(
                    "is {} but the pool has {} servers; each replica of a key is on a server of its own",
                    pool.replicas,
                    pool.servers.len()
                ));
            }
        }
        if let (Some(at), true) = (at("failover_on_miss"), pool.failover_on_miss) {
            if pool.replicas < 2 {
                self.error(
                    at,
                    name,
                    Some("failover_on_miss"),
                    "needs 'replicas: 2' or more: a miss is asked of a key's next replica".into(),
                );
            }
        }
        if let (Some(at), true) = (at("warmup"), pool.warmup) {
            if !pool.failover_on_miss {
                self.error(
                    at,
                    name,
                    Some("warmup"),
                    "needs 'failover_on_miss: true': it writes back the hits that failover finds"
                        .into(),
                );
            }
        }
    }

    /// The security keys fit the protocol and each other.
    fn check_security(&mut self, pool: &Pool, seen: &[(String, Location)]) {
        let at = |key: &str| seen.iter().find(|(k, _)| k == key).map(|(_, at)| *at);
        let name = Some(pool.name.as_str());
        for key in ["redis_auth_user", "users"] {
            if let (Some(at), false) = (at(key), pool.redis) {
                self.error(
                    at,
                    name,
                    Some(key),
                    "is only valid in a redis pool; add 'redis: true' or remove it".into(),
                );
            }
        }
        if let (Some(at), None) = (at("redis_auth_user"), &pool.redis_auth) {
            self.error(
                at,
                name,
                Some("redis_auth_user"),
                "needs 'redis_auth', the user's password".into(),
            );
        }
        for key in ["sentinel_auth", "sentinel_auth_user", "sentinel_tls"] {
            if let (Some(at), true) = (at(key), pool.sentinels.is_empty()) {
                self.error(
                    at,
                    name,
                    Some(key),
                    "is for pools whose servers are named by Sentinel masters: with 'sentinels'"
                        .into(),
                );
            }
        }
        if let (Some(at), None) = (at("sentinel_auth_user"), &pool.sentinel_auth) {
            self.error(
                at,
                name,
                Some("sentinel_auth_user"),
                "needs 'sentinel_auth', the user's password".into(),
            );
        }
        if let (Some(at), true) = (at("memcached_auth"), pool.redis) {
            self.error(at, name, Some("memcached_auth"), "is for memcached pools; a redis pool authenticates with 'redis_auth' (and 'redis_auth_user')".into());
        }
        if let (Some(at), Some(_)) = (at("server_tls"), &pool.server_tls) {
            if let Some(s) = pool
                .servers
                .iter()
                .find(|s| matches!(s.address, crate::model::ServerAddress::Unix { .. }))
            {
                self.error(
                    at,
                    name,
                    Some("server_tls"),
                    format!(
                        "server '{}' is a unix socket; TLS is for TCP servers",
                        s.entry
                    ),
                );
            }
        }
        if let (Some(at), Some(_)) = (at("tls"), &pool.tls) {
            if matches!(pool.listen, Listen::Unix { .. }) {
                self.error(
                    at,
                    name,
                    Some("tls"),
                    "the pool listens on a unix socket; TLS is for TCP listeners".into(),
                );
            }
        }
    }

    fn check_server_names(&mut self, pool: &Pool, seen: &[(String, Location)]) {
        let Some((_, at)) = seen.iter().find(|(k, _)| k == "servers") else {
            return;
        };
        for (i, s) in pool.servers.iter().enumerate() {
            if let Some(first) = pool.servers[..i].iter().find(|f| f.name() == s.name()) {
                self.error(*at, Some(&pool.name), Some("servers"), format!(
                    "servers '{}' and '{}' have the same name '{}'; every server of a pool needs its own name (add a distinct name after the weight)",
                    first.entry, s.entry, s.name()
                ));
            }
        }
    }

    /// A gutter is another pool of the file, of the same protocol, with no gutter
    /// of its own.
    fn check_gutters(&mut self, pools: &[Pool]) {
        for (name, at) in std::mem::take(&mut self.gutters) {
            let Some(pool) = pools.iter().find(|p| p.name == name) else {
                continue;
            };
            let Some(gutter) = &pool.gutter else { continue };
            let error = |message: String| (at, message);
            let problem = match pools.iter().find(|p| &p.name == gutter) {
                _ if gutter == &name => Some(error("a pool cannot be its own gutter; name another pool of this file".into())),
                None => {
                    let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).filter(|n| *n != name).collect();
                    Some(error(format!("no pool '{gutter}' in this file; pools: {}", names.join(", "))))
                }
                Some(g) if g.redis != pool.redis => Some(error(format!(
                    "pool '{gutter}' speaks {} and this pool {}; a gutter speaks the same protocol",
                    if g.redis { "redis" } else { "memcached" },
                    if pool.redis { "redis" } else { "memcached" }
                ))),
                Some(g) if g.gutter.is_some() => Some(error(format!(
                    "pool '{gutter}' has a gutter of its own; a gutter pool must not send its keys on again"
                ))),
                Some(_) => None,
            };
            if let Some((at, message)) = problem {
                self.error(at, Some(&name), Some("gutter"), message);
            }
        }
    }

    fn check_listen_addresses(&mut self, pools: &[Pool], names: &[(String, Location)]) {
        for (i, p) in pools.iter().enumerate() {
            if let Some(first) = pools[..i].iter().find(|f| f.listen == p.listen) {
                let at = names
                    .iter()
                    .find(|(n, _)| *n == p.name)
                    .map_or(Location::default(), |(_, at)| *at);
                self.error(at, Some(&p.name), Some("listen"), format!("listens on the same address as pool '{}'; each pool needs its own listen address", first.name));
            }
        }
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// One key's value being read; errors are reported against it.
struct Field<'v, 'f, 'n> {
    v: &'v mut Validator<'f>,
    pool: &'n str,
    key: &'n str,
    node: &'n Node,
}

impl Field<'_, '_, '_> {
    fn fail<T>(&mut self, at: Location, message: String) -> Option<T> {
        self.v.error(at, Some(self.pool), Some(self.key), message);
        None
    }

    fn scalar(&mut self) -> Option<&str> {
        match &self.node.value {
            Value::Scalar(s) => Some(s.as_str()),
            _ => {
                let found = self.node.kind();
                self.v.error(
                    self.node.at,
                    Some(self.pool),
                    Some(self.key),
                    format!("expected a single value, found {found}"),
                );
                None
            }
        }
    }

    fn parse<T>(&mut self, f: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let text = self.scalar()?.to_string();
        match f(&text) {
            Ok(v) => Some(v),
            Err(message) => self.fail(self.node.at, message),
        }
    }

    fn named<T: Copy>(&mut self, choices: &[(&'static str, T)]) -> Option<T> {
        self.parse(|text| {
            choices
                .iter()
                .find(|(n, _)| *n == text)
                .map(|&(_, v)| v)
                .ok_or_else(|| {
                    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                    let hint = closest(text, names.iter().copied())
                        .map_or(String::new(), |n| format!("did you mean '{n}'? "));
                    format!(
                        "unknown value '{text}'; {hint}allowed: {}",
                        names.join(", ")
                    )
                })
        })
    }

    /// A secret (see [`SECRET_KEYS`]): never repeated in an error.
    fn secret(&mut self) -> Option<Secret> {
        debug_assert!(
            SECRET_KEYS.contains(&self.key),
            "{} is not in SECRET_KEYS",
            self.key
        );
        self.parse(|s| match s.is_empty() {
            true => Err("is empty; give the secret or leave the key out".into()),
            false => Ok(Secret::new(s)),
        })
    }

    fn boolean(&mut self) -> Option<bool> {
        self.parse(|text| match text {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!("'{text}' is not a boolean; allowed: true, false")),
        })
    }

    fn number<T: TryFrom<u64> + Copy + std::fmt::Display>(&mut self, min: T, max: T) -> Option<T>
    where
        u64: From<T>,
    {
        self.parse(|text| {
            let n = text
                .parse::<u64>()
                .ok()
                .filter(|_| text.bytes().all(|b| b.is_ascii_digit()))
                .filter(|&n| n >= u64::from(min) && n <= u64::from(max));
            n.and_then(|n| T::try_from(n).ok())
                .ok_or_else(|| format!("'{text}' is not a whole number from {min} to {max}"))
        })
    }

    fn sentinels(&mut self) -> Vec<(String, u16)> {
        let Value::Sequence(items) = &self.node.value else {
            let found = self.node.kind();
            self.fail::<()>(
                self.node.at,
                format!("expected a list of 'host:port' entries, found {found}"),
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.fail::<()>(
                self.node.at,
                "the list is empty; name at least one Sentinel".into(),
            );
        }
        let mut out = Vec::new();
        for item in items {
            match &item.value {
                Value::Scalar(entry) => match parse_sentinel(entry) {
                    Ok(s) => out.push(s),
                    Err(message) => self.fail::<()>(item.at, message).unwrap_or(()),
                },
                _ => self
                    .fail::<()>(
                        item.at,
                        format!(
                            "a Sentinel is one 'host:port' string, found {}",
                            item.kind()
                        ),
                    )
                    .unwrap_or(()),
            }
        }
        out
    }

    fn servers(&mut self, by_sentinel: bool) -> Vec<crate::model::Server> {
        let Value::Sequence(items) = &self.node.value else {
            let found = self.node.kind();
            self.fail::<()>(
                self.node.at,
                format!("expected a list of 'host:port:weight [name]' entries, found {found}"),
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.fail::<()>(
                self.node.at,
                "the list is empty; a pool needs at least one server".into(),
            );
        }
        let mut servers = Vec::new();
        for item in items {
            match &item.value {
                Value::Scalar(entry) => match if by_sentinel {
                    parse_sentinel_server(entry)
                } else {
                    parse_server(entry)
                } {
                    Ok(s) => servers.push(s),
                    Err(message) => {
                        self.fail::<()>(item.at, message);
                    }
                },
                _ => {
                    self.fail::<()>(
                        item.at,
                        format!(
                            "a server entry must be one 'host:port:weight [name]' string, found {}",
                            item.kind()
                        ),
                    );
                }
            }
        }
        servers
    }
}

/// The allowed word nearest to `word`, if it is close enough to be a typo.
fn closest<'a>(word: &str, allowed: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    allowed
        .map(|a| (edit_distance(word, a), a))
        .filter(|&(d, a)| d <= 2.max(a.len() / 4))
        .min_by_key(|&(d, _)| d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(closest("distributon", pool_keys()), Some("distribution"));
        assert_eq!(closest("hash_tags", pool_keys()), Some("hash_tag"));
        assert_eq!(closest("zzzzzz", pool_keys()), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
