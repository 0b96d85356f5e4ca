//! Redis Cluster pools (`redis_cluster: true`). Each load of the configuration
//! asks a node of the cluster for its slot map (`CLUSTER SHARDS`, or `CLUSTER
//! SLOTS` on servers older than 7.0): the nodes it names before the seeds of the
//! file, so the seeds may all be gone once one answered. The pool's servers become
//! the cluster's nodes (masters, then replicas), named `host:port`, and its
//! `cluster` the slot owners. A thread reads the maps again every
//! `cluster_refresh_interval`, and at once when a worker asks (a MOVED, a failed
//! connection to a master); when a map changed it reloads the configuration (as
//! SIGHUP does), which routes by the new map and keeps the connections of nodes
//! that stay.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cashew_config::{ClusterTopology, Config, Pool, Server, ServerAddress};
use cashew_protocol::resp::{element_text, reply_elements};
use cashew_route::SlotMap;

use super::resp_client::{authenticate, connect, read_frame, request};
use crate::log::{NOTICE, WARN};
use crate::log_at;
use crate::net::tls::{PoolTls, ServerTlsConnector};
use crate::state::cluster::{wait_for_request, MAPS_CHANGED, REFRESHES_ASKED, REFRESHES_PERIODIC};

/// How long a node may take to connect and answer.
const ASK_TIMEOUT: Duration = Duration::from_millis(1000);
/// The least time between two reads of the maps, however often workers ask.
const MIN_SPACING: Duration = Duration::from_millis(50);

/// A node's address.
type Node = (String, u16);
/// An `AUTH`'s user (when not `default`) and password.
type Auth = (Option<String>, String);
/// How a pool's nodes are asked: after `AUTH`, over TLS.
type Asking = (Option<Auth>, Option<Arc<ServerTlsConnector>>);

/// One master and its replicas, as a node describes them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Shard {
    master: Node,
    slots: Vec<(u16, u16)>,
    replicas: Vec<Node>,
}

/// A cluster pool as the watcher knows it.
struct Watched {
    seeds: Vec<Node>,
    auth: Option<Auth>,
    tls: Option<Arc<ServerTlsConnector>>,
    every: Duration,
    /// The map the configuration in force routes by.
    loaded: Vec<Shard>,
    /// A changed map a reload was asked for (not asked again).
    signalled: Option<Vec<Shard>>,
}

static POOLS: Mutex<BTreeMap<String, Watched>> = Mutex::new(BTreeMap::new());
static STARTED: Mutex<bool> = Mutex::new(false);

/// Gives every cluster pool its nodes and slot map, asking the cluster; an error
/// names the pool and the nodes asked when none answered.
pub(crate) fn resolve(file: &str, config: &mut Config, tls: &[PoolTls]) -> Result<(), String> {
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    let mut watched = BTreeMap::new();
    for (pool, tls) in config.pools.iter_mut().zip(tls) {
        if !pool.redis_cluster {
            continue;
        }
        let tls = tls.connect.clone();
        let seeds: Vec<Node> = pool
            .servers
            .iter()
            .filter_map(|s| match &s.address {
                ServerAddress::Tcp { host, port } => Some((host.clone(), *port)),
                _ => None,
            })
            .collect();
        let auth = pool
            .redis_auth
            .as_ref()
            .map(|p| (pool.redis_auth_user.clone(), p.expose().to_string()));
        let known = pools.get(&pool.name).map(|w| nodes_of(&w.loaded));
        let candidates = known.into_iter().flatten().chain(seeds.iter().cloned());
        let shards = ask_any(candidates, auth.as_ref(), tls.as_deref()).map_err(|why| {
            let asked: Vec<String> = seeds.iter().map(|(h, p)| format!("{h}:{p}")).collect();
            format!(
                "{file}: pool '{}': no node of the cluster gave its slot map (seeds {}; the last asked, {why})",
                pool.name,
                asked.join(", ")
            )
        })?;
        apply(pool, &shards);
        watched.insert(
            pool.name.clone(),
            Watched {
                seeds,
                auth,
                tls,
                every: Duration::from_millis(pool.cluster_refresh_interval_ms),
                loaded: shards,
                signalled: None,
            },
        );
    }
    let any = !watched.is_empty();
    *pools = watched;
    drop(pools);
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    if any && !*started {
        *started = true;
        super::watchers::spawn("cashew-cluster", watch);
    }
    Ok(())
}

/// The pool's servers become the cluster's nodes, masters first.
fn apply(pool: &mut Pool, shards: &[Shard]) {
    let mut servers: Vec<Server> = Vec::new();
    let mut slots = SlotMap::new();
    for (i, shard) in shards.iter().enumerate() {
        servers.push(Server::cluster_node(&shard.master.0, shard.master.1));
        for &(first, last) in &shard.slots {
            slots.assign(first, last, i as u16);
        }
    }
    let mut replicas = vec![Vec::new(); shards.len()];
    for (i, shard) in shards.iter().enumerate() {
        for (host, port) in &shard.replicas {
            replicas[i].push(servers.len() as u16);
            servers.push(Server::cluster_node(host, *port));
        }
    }
    let masters = (0..servers.len()).map(|s| s < shards.len()).collect();
    replicas.resize(servers.len(), Vec::new());
    pool.servers = servers;
    pool.cluster = Some(Arc::new(ClusterTopology {
        slots,
        replicas,
        masters,
    }));
}

fn nodes_of(shards: &[Shard]) -> Vec<Node> {
    shards
        .iter()
        .flat_map(|s| std::iter::once(s.master.clone()).chain(s.replicas.iter().cloned()))
        .collect()
}

/// Reads the maps again, for ever; a reload when one changed.
fn watch() {
    loop {
        let every = {
            let pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
            pools.values().map(|w| w.every).min()
        };
        let asked = wait_for_request(every.unwrap_or(Duration::from_secs(2)));
        match asked {
            true => &REFRESHES_ASKED,
            false => &REFRESHES_PERIODIC,
        }
        .fetch_add(1, Ordering::Relaxed);
        // Each pool's name, the nodes to ask, and how (the lock is not held while asking).
        let work: Vec<(String, Vec<Node>, Asking)> = {
            let pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
            pools
                .iter()
                .map(|(name, w)| {
                    let mut nodes = nodes_of(&w.loaded);
                    nodes.extend(w.seeds.iter().cloned());
                    (name.clone(), nodes, (w.auth.clone(), w.tls.clone()))
                })
                .collect()
        };
        let mut changed = Vec::new();
        for (name, nodes, (auth, tls)) in work {
            let shards = match ask_any(nodes.into_iter(), auth.as_ref(), tls.as_deref()) {
                Ok(shards) => shards,
                Err(why) => {
                    log_at!(WARN, "pool '{name}': no node of the cluster gave its slot map; the last asked, {why}");
                    continue;
                }
            };
            let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
            let Some(w) = pools.get_mut(&name) else {
                continue;
            };
            if shards != w.loaded && w.signalled.as_ref() != Some(&shards) {
                w.signalled = Some(shards);
                changed.push(name);
            }
        }
        if !changed.is_empty() {
            MAPS_CHANGED.fetch_add(1, Ordering::Relaxed);
            let why = if asked {
                "asked by a redirection or a failed connection"
            } else {
                "periodic read"
            };
            log_at!(
                NOTICE,
                "cluster pool(s) {}: the slot map changed ({why}); reloading the configuration",
                changed.join(", ")
            );
            // The reload (as SIGHUP) reads the map again and routes by it.
            // SAFETY: signalling the own process has no memory effects.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGHUP);
            }
        }
        std::thread::sleep(MIN_SPACING);
    }
}

/// The map from the first node that gives one; else why the last one did not.
fn ask_any(
    nodes: impl Iterator<Item = Node>,
    auth: Option<&Auth>,
    tls: Option<&ServerTlsConnector>,
) -> Result<Vec<Shard>, String> {
    let mut why = "no node to ask".to_string();
    for node in nodes {
        match ask(&node, auth, tls) {
            Ok(shards) => return Ok(shards),
            Err(e) => why = format!("{}:{}: {e}", node.0, node.1),
        }
    }
    Err(why)
}

/// The cluster as `node` describes it, sorted so that two descriptions compare.
fn ask(
    node: &Node,
    auth: Option<&Auth>,
    tls: Option<&ServerTlsConnector>,
) -> Result<Vec<Shard>, String> {
    let mut stream = connect(&node.0, node.1, tls, ASK_TIMEOUT)?;
    ask_over(&mut stream, auth, tls.is_some())
}

/// `ask` over a connected stream.
fn ask_over(
    stream: &mut (impl Read + Write),
    auth: Option<&Auth>,
    tls: bool,
) -> Result<Vec<Shard>, String> {
    let mut buf = Vec::new();
    if let Some((user, password)) = auth {
        authenticate(stream, &mut buf, user.as_deref(), password)?;
    }
    let mut call = |args: &[&[u8]]| -> Result<Vec<u8>, String> {
        stream
            .write_all(&request(args))
            .map_err(|e| e.to_string())?;
        read_frame(stream, &mut buf).ok_or_else(|| "the connection ended".to_string())
    };
    let reply = call(&[b"CLUSTER", b"SHARDS"])?;
    let parsed = if reply.starts_with(b"-") {
        parse_slots(&call(&[b"CLUSTER", b"SLOTS"])?)
    } else {
        parse_shards(&reply, tls)
    };
    let mut shards = parsed.ok_or("its slot map could not be read")?;
    for shard in &mut shards {
        shard.slots.sort_unstable();
        shard.replicas.sort_unstable();
    }
    shards.sort_unstable();
    shards.dedup();
    match shards.is_empty() {
        true => Err("it knows no master".into()),
        false => Ok(shards),
    }
}

fn text(element: &[u8]) -> Option<String> {
    element_text(element).map(|t| String::from_utf8_lossy(t).into_owned())
}

fn int(element: &[u8]) -> Option<i64> {
    let body = element.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(body).ok()?.parse().ok()
}

/// `CLUSTER SHARDS`: per shard, `slots` (first, last pairs) and `nodes` (each
/// with `ip`, `port` and/or `tls-port`, `role`, `health`). Replicas that are not online are left
/// out; a master is kept whatever its health (its slots are its until a failover).
fn parse_shards(reply: &[u8], tls: bool) -> Option<Vec<Shard>> {
    let mut shards = Vec::new();
    for shard in reply_elements(reply)? {
        let fields = reply_elements(shard)?;
        let mut slots = Vec::new();
        let mut master = None;
        let mut replicas = Vec::new();
        for pair in fields.chunks(2) {
            let [key, value] = pair else { continue };
            match text(key)?.as_str() {
                "slots" => {
                    let bounds: Vec<i64> = reply_elements(value)?
                        .into_iter()
                        .map(int)
                        .collect::<Option<_>>()?;
                    for range in bounds.chunks(2) {
                        if let [first, last] = range {
                            slots.push((u16::try_from(*first).ok()?, u16::try_from(*last).ok()?));
                        }
                    }
                }
                "nodes" => {
                    for node in reply_elements(value)? {
                        let mut info: BTreeMap<String, &[u8]> = BTreeMap::new();
                        for kv in reply_elements(node)?.chunks(2) {
                            if let [k, v] = kv {
                                info.insert(text(k)?, v);
                            }
                        }
                        let ip = info.get("ip").and_then(|v| text(v))?;
                        // A node without a plain port (TLS only) gives `tls-port`; over
                        // TLS that is the one to use.
                        let port = match tls {
                            true => info.get("tls-port").or(info.get("port")),
                            false => info.get("port").or(info.get("tls-port")),
                        };
                        let port = port.and_then(|v| int(v))?;
                        let address = (ip, u16::try_from(port).ok()?);
                        let role = info.get("role").and_then(|v| text(v)).unwrap_or_default();
                        let health = info.get("health").and_then(|v| text(v)).unwrap_or_default();
                        if role == "master" {
                            master = Some(address);
                        } else if health == "online" {
                            replicas.push(address);
                        }
                    }
                }
                _ => {}
            }
        }
        // A shard of a failed master's former replicas without a master yet, or
        // a master without slots, still names nodes worth knowing.
        if let Some(master) = master {
            shards.push(Shard {
                master,
                slots,
                replicas,
            });
        }
    }
    Some(shards)
}

/// `CLUSTER SLOTS`: per range, first and last slot, then the master's and each
/// replica's `[ip, port, id, ...]`.
fn parse_slots(reply: &[u8]) -> Option<Vec<Shard>> {
    let mut by_master: BTreeMap<Node, Shard> = BTreeMap::new();
    for range in reply_elements(reply)? {
        let parts = reply_elements(range)?;
        let [first, last, nodes @ ..] = parts.as_slice() else {
            return None;
        };
        let node = |e: &[u8]| -> Option<Node> {
            let fields = reply_elements(e)?;
            Some((
                text(fields.first()?)?,
                u16::try_from(int(fields.get(1)?)?).ok()?,
            ))
        };
        let (master, replicas) = nodes.split_first()?;
        let master = node(master)?;
        let shard = by_master.entry(master.clone()).or_insert_with(|| Shard {
            master,
            slots: Vec::new(),
            replicas: Vec::new(),
        });
        shard.slots.push((
            u16::try_from(int(first)?).ok()?,
            u16::try_from(int(last)?).ok()?,
        ));
        for r in replicas {
            let r = node(r)?;
            if !shard.replicas.contains(&r) {
                shard.replicas.push(r);
            }
        }
    }
    Some(by_master.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> String {
        format!("${}\r\n{s}\r\n", s.len())
    }

    fn node(ip: &str, port: u16, role: &str, health: &str) -> String {
        format!(
            "*8\r\n{}{}{}:{port}\r\n{}{}{}{}",
            bulk("ip"),
            bulk(ip),
            bulk("port"),
            bulk("role"),
            bulk(role),
            bulk("health"),
            bulk(health)
        )
    }

    #[test]
    fn shards_are_read_with_online_replicas_only() {
        let reply = format!(
            "*2\r\n*4\r\n{}*2\r\n:0\r\n:5460\r\n{}*3\r\n{}{}{}*4\r\n{}*4\r\n:5461\r\n:5470\r\n:6000\r\n:16383\r\n{}*1\r\n{}",
            bulk("slots"),
            bulk("nodes"),
            node("127.0.0.1", 7000, "master", "online"),
            node("127.0.0.1", 7003, "replica", "online"),
            node("127.0.0.1", 7004, "replica", "fail"),
            bulk("slots"),
            bulk("nodes"),
            node("127.0.0.1", 7001, "master", "online"),
        );
        let shards = parse_shards(reply.as_bytes(), false).expect("parsed");
        assert_eq!(
            shards,
            vec![
                Shard {
                    master: ("127.0.0.1".into(), 7000),
                    slots: vec![(0, 5460)],
                    replicas: vec![("127.0.0.1".into(), 7003)],
                },
                Shard {
                    master: ("127.0.0.1".into(), 7001),
                    slots: vec![(5461, 5470), (6000, 16383)],
                    replicas: vec![],
                },
            ]
        );
        let mut pool = cashew_config::parse(
            "t.yml",
            "c:\n  listen: 127.0.0.1:1\n  redis: true\n  redis_cluster: true\n  servers:\n    - 127.0.0.1:7000:1\n",
        )
        .unwrap()
        .pools
        .remove(0);
        apply(&mut pool, &shards);
        let names: Vec<&str> = pool.servers.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7003"]
        );
        let topology = pool.cluster.as_ref().unwrap();
        assert_eq!(topology.slots.owner(5460), Some(0));
        assert_eq!(topology.slots.owner(5465), Some(1));
        assert_eq!(topology.slots.owner(5999), None);
        assert_eq!(topology.replicas[0], vec![2]);
        assert_eq!(topology.masters, vec![true, true, false]);
    }

    #[test]
    fn slots_of_older_servers_are_read() {
        let master = |port: u16| format!("*3\r\n{}:{port}\r\n{}", bulk("127.0.0.1"), bulk("id"));
        let reply = format!(
            "*2\r\n*4\r\n:0\r\n:99\r\n{}{}*3\r\n:100\r\n:16383\r\n{}",
            master(7000),
            master(7003),
            master(7001)
        );
        let shards = parse_slots(reply.as_bytes()).expect("parsed");
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0].slots, vec![(0, 99)]);
        assert_eq!(shards[0].replicas, vec![("127.0.0.1".to_string(), 7003)]);
        assert_eq!(shards[1].master, ("127.0.0.1".to_string(), 7001));
    }
}
