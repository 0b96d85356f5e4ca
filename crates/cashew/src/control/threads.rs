//! How many worker threads cashew runs when `--threads` is not given.

use std::net::IpAddr;

use cashew_config::{Config, ServerAddress};

/// One per CPU this process may use, but one fewer when a server of the configuration
/// runs on this host (a loopback address, `localhost` or a unix socket): the servers
/// need a core of their own. On a 2-core machine running memcached or redis and the
/// clients too, two workers gave 1.33× (memcached) and 1.54× (redis) the p99 latency
/// of one at pipeline 1 and used more CPU per request (docs/performance.md).
pub(crate) fn default_threads(config: &Config, cpus: usize) -> usize {
    let local = config
        .pools
        .iter()
        .flat_map(|pool| &pool.servers)
        .any(|server| is_local(&server.address));
    match local {
        true => cpus.saturating_sub(1).max(1),
        false => cpus.max(1),
    }
}

fn is_local(address: &ServerAddress) -> bool {
    match address {
        ServerAddress::Unix { .. } => true,
        ServerAddress::Sentinel { .. } => false,
        ServerAddress::Tcp { host, .. } => {
            host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(servers: &[&str]) -> Config {
        let list: String = servers
            .iter()
            .map(|s| format!("    - \"{s}:1\"\n"))
            .collect();
        let yaml = format!("p:\n  listen: 127.0.0.1:22121\n  servers:\n{list}");
        cashew_config::parse("t.yml", &yaml).expect("valid")
    }

    #[test]
    fn a_server_on_this_host_leaves_it_a_core() {
        for local in [
            "127.0.0.1:11211",
            "127.0.0.2:11211",
            "[::1]:11211",
            "localhost:11211",
            "/run/mc.sock",
        ] {
            let c = config(&["10.0.0.1:11211", local]);
            assert_eq!(default_threads(&c, 4), 3, "{local}");
            assert_eq!(default_threads(&c, 2), 1, "{local}");
            assert_eq!(default_threads(&c, 1), 1, "{local}");
        }
    }

    #[test]
    fn remote_servers_get_every_core() {
        let c = config(&["10.0.0.1:11211", "cache-b.example:11211"]);
        assert_eq!(default_threads(&c, 4), 4);
        assert_eq!(default_threads(&c, 1), 1);
    }
}
