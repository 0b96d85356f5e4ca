//! Redis servers known by their Sentinel master names (`sentinels:` in a pool).
//! Each load of the configuration (start, reload) asks the pool's Sentinels for the
//! address of each master and uses it as the server's address; placement keeps
//! using the names, so no key moves. A thread per set of Sentinels listens for
//! `+switch-master` and reloads the configuration (as SIGHUP does) when a master
//! the pools use is switched: the switched server gets new connections to the new
//! master, and the old ones finish what they carry (or fail, if the old master is
//! gone) and close.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::Duration;

use super::resp_client::{read_frame, request, strings};
use cashew_config::{Config, ServerAddress};

use crate::log::{NOTICE, WARN};
use crate::log_at;

/// How long a Sentinel may take to connect and answer at a load.
const ASK_TIMEOUT: Duration = Duration::from_millis(1000);

/// A host and port.
type Address = (String, u16);

/// The last address each master was known at: used when no Sentinel answers.
static KNOWN: Mutex<Option<HashMap<String, Address>>> = Mutex::new(None);
/// Sentinel sets already watched.
static WATCHED: Mutex<Option<HashSet<Vec<Address>>>> = Mutex::new(None);

/// Gives every server named by a master its master's address, asking the pool's
/// Sentinels; an error names the pool and the master when none knows it.
pub(crate) fn resolve(file: &str, config: &mut Config) -> Result<(), String> {
    for pool in &mut config.pools {
        if pool.sentinels.is_empty() {
            continue;
        }
        for server in &mut pool.servers {
            let ServerAddress::Sentinel { master } = &server.address else {
                continue;
            };
            let master = master.clone();
            let address = match ask_any(&pool.sentinels, &master) {
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
        watch(&pool.sentinels);
    }
    Ok(())
}

/// The master's address from the first Sentinel that knows it.
fn ask_any(sentinels: &[(String, u16)], master: &str) -> Option<(String, u16)> {
    sentinels
        .iter()
        .find_map(|(host, port)| ask(host, *port, master))
}

fn ask(host: &str, port: u16, master: &str) -> Option<(String, u16)> {
    let addr = (host, port).to_socket_addrs().ok()?.next()?;
    let mut stream = TcpStream::connect_timeout(&addr, ASK_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(ASK_TIMEOUT)).ok()?;
    stream
        .write_all(&request(&[
            b"SENTINEL",
            b"get-master-addr-by-name",
            master.as_bytes(),
        ]))
        .ok()?;
    let reply = read_frame(&mut stream, &mut Vec::new())?;
    let parts = strings(&reply)?;
    match parts.as_slice() {
        [ip, port] => Some((ip.clone(), port.parse().ok()?)),
        _ => None,
    }
}

/// Starts listening for switches on `sentinels`, once per set.
fn watch(sentinels: &[(String, u16)]) {
    let mut watched = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
    if !watched
        .get_or_insert_with(HashSet::new)
        .insert(sentinels.to_vec())
    {
        return;
    }
    let sentinels = sentinels.to_vec();
    super::watchers::spawn("cashew-sentinel", move || loop {
        for (host, port) in &sentinels {
            listen(host, *port);
        }
        std::thread::sleep(Duration::from_secs(1));
    });
}

/// Listens to one Sentinel's `+switch-master` until the connection ends.
fn listen(host: &str, port: u16) {
    let Some(addr) = (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    else {
        return;
    };
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, ASK_TIMEOUT) else {
        return;
    };
    if stream
        .write_all(&request(&[b"SUBSCRIBE", b"+switch-master"]))
        .is_err()
    {
        return;
    }
    let mut buf = Vec::new();
    while let Some(frame) = read_frame(&mut stream, &mut buf) {
        let Some(parts) = strings(&frame) else {
            continue;
        };
        let [kind, _, payload] = parts.as_slice() else {
            continue;
        };
        if kind != "message" {
            continue;
        }
        // "<master> <old-ip> <old-port> <new-ip> <new-port>"
        let words: Vec<&str> = payload.split(' ').collect();
        let [master, old_ip, old_port, new_ip, new_port] = words.as_slice() else {
            continue;
        };
        let used = KNOWN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|k| k.contains_key(*master));
        if !used {
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
        unsafe {
            libc::kill(libc::getpid(), libc::SIGHUP);
        }
    }
}
