//! Servers given by host name whose address moves (a headless Service, a
//! StatefulSet pod that is rescheduled). A thread resolves every such name each
//! `dns_refresh_ms`; when one resolves to a new address it reloads the
//! configuration (as SIGHUP does). The reload gives the server's settings the new
//! address, so the server gets new connections (which resolve the name as every
//! connection does) and the old ones finish what they carry and close. Placement
//! uses the server's name, so no key moves. Names are looked up off the main
//! thread: a slow or failing DNS delays no load, and an answer that fails keeps
//! the last address known.

use std::collections::BTreeMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::time::Duration;

use cashew_config::{Config, ServerAddress};

use crate::log::NOTICE;
use crate::log_at;

/// A host name and port of a server.
type Name = (String, u16);

struct Watched {
    /// The address each name was last seen at (`None`: not resolved yet).
    names: BTreeMap<Name, Option<IpAddr>>,
    /// The shortest `dns_refresh_ms` of the pools that have names.
    every: Duration,
    started: bool,
}

static WATCHED: Mutex<Watched> = Mutex::new(Watched {
    names: BTreeMap::new(),
    every: Duration::from_secs(30),
    started: false,
});

/// Gives each host-named server of the pools that refresh names the address its
/// name was last seen at, and watches those names from now on (only those: a
/// name no pool uses any more is dropped).
pub(crate) fn resolve(config: &mut Config) {
    let mut watched = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
    let mut names = BTreeMap::new();
    let mut every: Option<u64> = None;
    for pool in &mut config.pools {
        if pool.dns_refresh_ms == 0 {
            continue;
        }
        for server in &mut pool.servers {
            let ServerAddress::Tcp { host, port } = &server.address else {
                continue;
            };
            if host.parse::<IpAddr>().is_ok() {
                continue;
            }
            let name = (host.clone(), *port);
            let seen = watched.names.get(&name).copied().flatten();
            server.resolved = seen;
            names.insert(name, seen);
            every = Some(every.map_or(pool.dns_refresh_ms, |e| e.min(pool.dns_refresh_ms)));
        }
    }
    watched.names = names;
    let Some(every) = every else {
        return;
    };
    watched.every = Duration::from_millis(every);
    if !watched.started {
        watched.started = true;
        super::watchers::spawn("cashew-dns", watch);
    }
}

/// Resolves the watched names, for ever; a reload when one of them moved.
fn watch() {
    loop {
        let names: Vec<Name> = {
            let watched = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
            watched.names.keys().cloned().collect()
        };
        let mut moved = Vec::new();
        for name in names {
            let Some(now) = lookup(&name) else {
                continue;
            };
            let mut watched = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
            // The name may have left the configuration meanwhile.
            let Some(seen) = watched.names.get_mut(&name) else {
                continue;
            };
            if let Some(before) = seen.replace(now) {
                if before != now {
                    moved.push(format!("'{}' from {before} to {now}", name.0));
                }
            }
        }
        if !moved.is_empty() {
            log_at!(
                NOTICE,
                "dns: {} moved; reloading the configuration",
                moved.join(", ")
            );
            // The reload (as SIGHUP) gives the servers their new addresses.
            // SAFETY: signalling the own process has no memory effects.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGHUP);
            }
        }
        let every = WATCHED.lock().unwrap_or_else(|e| e.into_inner()).every;
        std::thread::sleep(every);
    }
}

fn lookup((host, port): &Name) -> Option<IpAddr> {
    let mut addrs = (host.as_str(), *port).to_socket_addrs().ok()?;
    addrs.next().map(|a| a.ip())
}
