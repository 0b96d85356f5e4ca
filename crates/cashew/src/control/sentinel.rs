//! Redis servers known by their Sentinel master names (`sentinels:` in a pool).
//! Each load of the configuration (start, reload) asks the pool's Sentinels for the
//! address of each master and uses it as the server's address; placement keeps
//! using the names, so no key moves. A thread per set of Sentinels listens for
//! `+switch-master` and reloads the configuration (as SIGHUP does) when a master
//! the pools use is switched: the switched server gets new connections to the new
//! master, and the old ones finish what they carry (or fail, if the old master is
//! gone) and close. With `read_from` a replica, each load also asks for every
//! master's replicas (`SENTINEL REPLICAS`), which join the pool after its servers
//! (for reads only, outside placement); the thread also reloads when a replica
//! goes down, comes back or is added, as the Sentinels see it.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::resp_client::{
    authenticate, connect, read_frame, request, strings, wait_frame, Duplex, Wait,
};
use crate::net::tls::{PoolTls, ServerTlsConnector};
use cashew_config::{Config, ReadFrom, Secret, SentinelReplicas, Server, ServerAddress};
use cashew_protocol::resp::reply_elements;

use crate::log::{NOTICE, WARN};
use crate::log_at;

/// How long a Sentinel may take to connect and answer at a load.
const ASK_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long the Sentinel listened to may stay quiet before it is pinged; one that
/// does not answer the ping within as long again is left for the next.
const HEARTBEAT: Duration = Duration::from_millis(1000);

/// A host and port.
type Address = (String, u16);

/// The last address each master was known at: used when no Sentinel answers.
static KNOWN: Mutex<Option<HashMap<String, Address>>> = Mutex::new(None);
/// The last replicas known of each master: used when no Sentinel answers.
static KNOWN_REPLICAS: Mutex<Option<HashMap<String, Vec<Address>>>> = Mutex::new(None);
/// Sentinel sets already watched, and how the last load said to reach them.
static WATCHED: Mutex<Option<HashMap<Vec<Address>, Reach>>> = Mutex::new(None);

/// How a pool's Sentinels are reached: the password (and user) they want, TLS.
#[derive(Clone, Default)]
struct Reach {
    auth: Option<(Option<String>, Secret)>,
    tls: Option<Arc<ServerTlsConnector>>,
}

impl Reach {
    fn of(pool: &cashew_config::Pool, tls: Option<&PoolTls>) -> Reach {
        Reach {
            auth: pool
                .sentinel_auth
                .clone()
                .map(|password| (pool.sentinel_auth_user.clone(), password)),
            tls: tls.and_then(|t| t.sentinels.clone()),
        }
    }

    /// A connection to `host`'s Sentinel, authenticated, whose reads wait up to
    /// `patience`; `None` (logged when the Sentinel refuses the password) when it
    /// cannot be had.
    fn open(&self, host: &str, port: u16, patience: Duration) -> Option<Box<dyn Duplex>> {
        let mut stream = connect(host, port, self.tls.as_deref(), patience).ok()?;
        if let Some((user, password)) = &self.auth {
            let said = authenticate(
                &mut stream,
                &mut Vec::new(),
                user.as_deref(),
                password.expose(),
            );
            if let Err(why) = said {
                log_at!(WARN, "sentinel {host}:{port}: {why}");
                return None;
            }
        }
        Some(stream)
    }
}

/// Gives every server named by a master its master's address, asking the pool's
/// Sentinels; an error names the pool and the master when none knows it.
pub(crate) fn resolve(file: &str, config: &mut Config, tls: &[PoolTls]) -> Result<(), String> {
    for (at, pool) in config.pools.iter_mut().enumerate() {
        if pool.sentinels.is_empty() {
            continue;
        }
        let reach = Reach::of(pool, tls.get(at));
        let masters: Vec<Option<String>> = pool
            .servers
            .iter()
            .map(|s| match &s.address {
                ServerAddress::Sentinel { master } => Some(master.clone()),
                _ => None,
            })
            .collect();
        let sentinels = pool.sentinels.clone();
        let mut asking = Asking::new(&sentinels, &reach);
        for server in &mut pool.servers {
            let ServerAddress::Sentinel { master } = &server.address else {
                continue;
            };
            let master = master.clone();
            let address = match asking.first(b"get-master-addr-by-name", &master, master_address) {
                Some(address) => {
                    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
                    known
                        .get_or_insert_with(HashMap::new)
                        .insert(master.clone(), address.clone());
                    address
                }
                None => {
                    let known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
                    match known.as_ref().and_then(|k| k.get(&master)) {
                        Some(address) => {
                            log_at!(WARN, "pool '{}': no Sentinel answered for master '{master}'; using its last known address {}:{}", pool.name, address.0, address.1);
                            address.clone()
                        }
                        None => {
                            let list: Vec<String> = pool
                                .sentinels
                                .iter()
                                .map(|(h, p)| format!("{h}:{p}"))
                                .collect();
                            return Err(format!(
                                "{file}: pool '{}': no Sentinel of {} knows master '{master}'",
                                pool.name,
                                list.join(", ")
                            ));
                        }
                    }
                }
            };
            server.address = ServerAddress::Tcp {
                host: address.0,
                port: address.1,
            };
        }
        if pool.read_from != ReadFrom::Master {
            add_replicas(pool, &masters, &mut asking);
        }
        watch(&pool.sentinels, reach);
    }
    Ok(())
}

/// Adds each master's replicas that are up, as the Sentinels report them, after
/// the pool's servers (named `host:port`, as a cluster's nodes are).
fn add_replicas(pool: &mut cashew_config::Pool, masters: &[Option<String>], asking: &mut Asking) {
    let mut replicas = vec![Vec::new(); masters.len()];
    for (of, master) in replicas.iter_mut().zip(masters) {
        let Some(master) = master else {
            continue;
        };
        let found = asking.first(b"REPLICAS", master, replicas_up);
        let mut known = KNOWN_REPLICAS.lock().unwrap_or_else(|e| e.into_inner());
        let known = known.get_or_insert_with(HashMap::new);
        let up = match found {
            Some(up) => {
                known.insert(master.clone(), up.clone());
                up
            }
            None => {
                log_at!(WARN, "pool '{}': no Sentinel answered for the replicas of master '{master}'; using the last known", pool.name);
                known.get(master).cloned().unwrap_or_default()
            }
        };
        for (host, port) in up {
            let server = Server::cluster_node(&host, port);
            // A replica of two masters (mid-failover) reads for the first.
            if pool.servers.iter().any(|s| s.name() == server.name()) {
                continue;
            }
            of.push(pool.servers.len() as u16);
            pool.servers.push(server);
        }
    }
    pool.sentinel_replicas = Some(std::sync::Arc::new(SentinelReplicas {
        masters: masters.len(),
        replicas,
    }));
}

/// A pool's Sentinels as one load asks them: in their order, each question going
/// to the next when one does not know the answer. One that cannot be reached or
/// does not answer in time is not asked again in the same load, so that a
/// Sentinel that hangs delays a load by one timeout, not one per question.
struct Asking<'a> {
    sentinels: &'a [Address],
    reach: &'a Reach,
    silent: Vec<bool>,
}

impl<'a> Asking<'a> {
    fn new(sentinels: &'a [Address], reach: &'a Reach) -> Self {
        Asking {
            sentinels,
            reach,
            silent: vec![false; sentinels.len()],
        }
    }

    /// `SENTINEL <question> <master>`, read by `read` from the first Sentinel whose
    /// reply it accepts.
    fn first<T>(
        &mut self,
        question: &[u8],
        master: &str,
        read: impl Fn(&[u8]) -> Option<T>,
    ) -> Option<T> {
        for ((host, port), silent) in self.sentinels.iter().zip(&mut self.silent) {
            if *silent {
                continue;
            }
            match query(self.reach, host, *port, question, master) {
                Some(reply) => {
                    if let Some(answer) = read(&reply) {
                        return Some(answer);
                    }
                }
                None => {
                    log_at!(
                        WARN,
                        "sentinel {host}:{port} did not answer; not asked again in this load"
                    );
                    *silent = true;
                }
            }
        }
        None
    }
}

/// A master's address, from a `get-master-addr-by-name` reply (nil when the
/// Sentinel does not know the master).
fn master_address(reply: &[u8]) -> Option<Address> {
    match strings(reply)?.as_slice() {
        [ip, port] => Some((ip.clone(), port.parse().ok()?)),
        _ => None,
    }
}

/// `SENTINEL <question> <master>` asked of one Sentinel: its reply, or `None`
/// when it cannot be reached or does not answer in time.
fn query(reach: &Reach, host: &str, port: u16, question: &[u8], master: &str) -> Option<Vec<u8>> {
    let mut stream = reach.open(host, port, ASK_TIMEOUT)?;
    stream
        .write_all(&request(&[b"SENTINEL", question, master.as_bytes()]))
        .ok()?;
    read_frame(&mut stream, &mut Vec::new())
}

/// From a `SENTINEL REPLICAS` reply (per replica, field and value pairs): the
/// replicas not down nor disconnected. (Their `master-link-status` is not used:
/// the Sentinel refreshes it every 10 s, and no event says it changed.)
fn replicas_up(reply: &[u8]) -> Option<Vec<Address>> {
    if reply.first() != Some(&b'*') {
        return None;
    }
    let items = reply_elements(reply)?;
    let up = items
        .into_iter()
        .filter_map(|item| {
            let fields = strings(item)?;
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|pair| pair[0] == name)
                    .and_then(|pair| pair.get(1))
            };
            let flags = field("flags")?;
            let down = flags
                .split(',')
                .any(|f| matches!(f, "s_down" | "o_down" | "disconnected"));
            if down {
                return None;
            }
            Some((field("ip")?.clone(), field("port")?.parse().ok()?))
        })
        .collect();
    Some(up)
}

/// Starts listening for switches on `sentinels`, once per set; `reach` (as this
/// load found it) is used from the next connection on.
fn watch(sentinels: &[Address], reach: Reach) {
    let mut watched = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
    let known = watched
        .get_or_insert_with(HashMap::new)
        .insert(sentinels.to_vec(), reach)
        .is_some();
    if known {
        return;
    }
    let sentinels = sentinels.to_vec();
    super::watchers::spawn("cashew-sentinel", move || loop {
        for (host, port) in &sentinels {
            let reach = WATCHED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .and_then(|w| w.get(&sentinels).cloned())
                .unwrap_or_default();
            listen(&reach, host, *port);
        }
        std::thread::sleep(Duration::from_secs(1));
    });
}

/// Events about replicas that change which ones serve reads.
const REPLICA_EVENTS: [&str; 5] = [
    "+sdown",
    "-sdown",
    "+slave",
    "+convert-to-slave",
    "+slave-reconf-done",
];

/// Listens to one Sentinel's `+switch-master` (and replica events) until the
/// connection ends or the Sentinel stops answering.
fn listen(reach: &Reach, host: &str, port: u16) {
    let Some(mut stream) = reach.open(host, port, HEARTBEAT) else {
        return;
    };
    let mut channels: Vec<&[u8]> = vec![b"SUBSCRIBE", b"+switch-master"];
    channels.extend(REPLICA_EVENTS.iter().map(|e| e.as_bytes()));
    if stream.write_all(&request(&channels)).is_err() {
        return;
    }
    let mut buf = Vec::new();
    let mut subscribed = false;
    let mut pinged = false;
    loop {
        let frame = match wait_frame(&mut stream, &mut buf) {
            Wait::Frame(frame) => frame,
            Wait::Closed => return,
            Wait::Idle if pinged => {
                log_at!(
                    WARN,
                    "sentinel {host}:{port} stopped answering; listening to the next"
                );
                return;
            }
            Wait::Idle => {
                // A Sentinel that hangs keeps its connection open: only a ping tells.
                if stream.write_all(&request(&[b"PING"])).is_err() {
                    return;
                }
                pinged = true;
                continue;
            }
        };
        pinged = false;
        if !subscribed {
            subscribed = true;
            // A switch between the last load and now was not heard.
            if missed_changes(reach, host, port) {
                log_at!(NOTICE, "sentinel {host}:{port}: masters or replicas changed while not listened to; reloading the configuration");
                reload();
            }
        }
        let Some(parts) = strings(&frame) else {
            continue;
        };
        let [kind, channel, payload] = parts.as_slice() else {
            continue;
        };
        if kind != "message" {
            continue;
        }
        let words: Vec<&str> = payload.split(' ').collect();
        if channel != "+switch-master" {
            replica_event(host, port, channel, &words);
            continue;
        }
        // "<master> <old-ip> <old-port> <new-ip> <new-port>"
        let [master, old_ip, old_port, new_ip, new_port] = words.as_slice() else {
            continue;
        };
        if !knows(&KNOWN, master) {
            continue;
        }
        if let Ok(port) = new_port.parse::<u16>() {
            let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(k) = known.as_mut() {
                k.insert(master.to_string(), (new_ip.to_string(), port));
            }
        }
        log_at!(
            NOTICE,
            "sentinel {host}:{port}: master '{master}' switched from {old_ip}:{old_port} to {new_ip}:{new_port}; reloading the configuration"
        );
        // The reload (as SIGHUP) asks the Sentinels again and moves the server.
        reload();
    }
}

/// Whether `host`'s Sentinel gives a master some pool uses another address, or
/// other replicas, than the last load found.
fn missed_changes(reach: &Reach, host: &str, port: u16) -> bool {
    let known = snapshot(&KNOWN);
    let known_replicas = snapshot(&KNOWN_REPLICAS);
    let sentinel = [(host.to_string(), port)];
    let mut asking = Asking::new(&sentinel, reach);
    known.iter().any(|(master, address)| {
        asking
            .first(b"get-master-addr-by-name", master, master_address)
            .is_some_and(|now| now != *address)
    }) || known_replicas.iter().any(|(master, replicas)| {
        asking
            .first(b"REPLICAS", master, replicas_up)
            .is_some_and(|now| !same_members(now, replicas))
    })
}

fn same_members(mut a: Vec<Address>, b: &[Address]) -> bool {
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

fn snapshot<V: Clone>(known: &Mutex<Option<HashMap<String, V>>>) -> HashMap<String, V> {
    known
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default()
}

/// A replica of a master whose replicas serve reads went down, came back or was
/// added: the configuration is reloaded.
fn replica_event(host: &str, port: u16, event: &str, words: &[&str]) {
    // "slave <name> <ip> <port> @ <master> <master-ip> <master-port>"
    let ["slave", _, ip, replica_port, "@", master, ..] = words else {
        return;
    };
    if !knows(&KNOWN_REPLICAS, master) {
        return;
    }
    log_at!(
        NOTICE,
        "sentinel {host}:{port}: {event} of replica {ip}:{replica_port} of master '{master}'; reloading the configuration"
    );
    reload();
}

/// Whether `master` is in `known` (a master some pool uses).
fn knows<V>(known: &Mutex<Option<HashMap<String, V>>>, master: &str) -> bool {
    known
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|k| k.contains_key(master))
}

/// Reloads the configuration as SIGHUP does (asking the Sentinels again).
fn reload() {
    unsafe {
        libc::kill(libc::getpid(), libc::SIGHUP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(fields: &[(&str, &str)]) -> Vec<u8> {
        let args: Vec<&[u8]> = fields
            .iter()
            .flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()])
            .collect();
        request(&args)
    }

    #[test]
    fn only_replicas_up_serve_reads() {
        let mut reply = b"*5\r\n".to_vec();
        for (port, flags, link) in [
            ("7001", "slave", "ok"),
            ("7002", "s_down,slave", "ok"),
            ("7003", "slave,disconnected", "err"),
            ("7004", "slave", "err"),
            ("7005", "slave,o_down", "ok"),
        ] {
            reply.extend(replica(&[
                ("name", "x"),
                ("ip", "127.0.0.1"),
                ("port", port),
                ("flags", flags),
                ("master-link-status", link),
            ]));
        }
        let up = |port| ("127.0.0.1".to_string(), port);
        assert_eq!(replicas_up(&reply), Some(vec![up(7001), up(7004)]));
        assert_eq!(replicas_up(b"*0\r\n"), Some(Vec::new()));
        // A Sentinel that does not know the master: the next is asked.
        assert_eq!(replicas_up(b"-ERR No such master with that name\r\n"), None);
    }
}
