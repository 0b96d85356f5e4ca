//! `INFO`: the proxy's own sections (`server`, `clients`, `proxy`), and the
//! sections that describe the data (`memory`, `stats`, `keyspace`), summed over
//! the pool's servers so that the pool reads as one server.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::{server_version, Client};
use crate::proxy::ids::ServerId;
use crate::proxy::pool::PoolRt;
use crate::state::counters::ProxyCounter;

/// The sections an `INFO` asks for, of those cashew has: none named means the
/// default ones, which here are all of them; a section it does not have is left
/// out, as Redis leaves out one it does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InfoSections {
    pub(crate) server: bool,
    pub(crate) clients: bool,
    pub(crate) memory: bool,
    pub(crate) stats: bool,
    pub(crate) proxy: bool,
    pub(crate) keyspace: bool,
}

impl InfoSections {
    const ALL: InfoSections = InfoSections {
        server: true,
        clients: true,
        memory: true,
        stats: true,
        proxy: true,
        keyspace: true,
    };

    pub(crate) fn asked<'a>(names: impl IntoIterator<Item = &'a [u8]>) -> InfoSections {
        let mut asked = InfoSections {
            server: false,
            clients: false,
            memory: false,
            stats: false,
            proxy: false,
            keyspace: false,
        };
        let mut any = false;
        for name in names {
            any = true;
            match name.to_ascii_lowercase().as_slice() {
                b"default" | b"all" | b"everything" => return InfoSections::ALL,
                b"server" => asked.server = true,
                b"clients" => asked.clients = true,
                b"memory" => asked.memory = true,
                b"stats" => asked.stats = true,
                b"proxy" => asked.proxy = true,
                b"keyspace" => asked.keyspace = true,
                _ => {}
            }
        }
        match any {
            true => asked,
            false => InfoSections::ALL,
        }
    }

    /// Whether a section asked for is made of the servers' own.
    pub(crate) fn needs_servers(self) -> bool {
        self.memory || self.stats || self.keyspace
    }

    /// What each server is asked: only its keyspace when that is all that is needed
    /// (the default sections hold the other two, on every Redis version).
    pub(crate) fn server_request(self) -> Bytes {
        match self.memory || self.stats {
            true => Bytes::from_static(b"*1\r\n$4\r\nINFO\r\n"),
            false => Bytes::from_static(b"*2\r\n$4\r\nINFO\r\n$8\r\nkeyspace\r\n"),
        }
    }
}

/// `# Memory`: these fields summed, each with its `_human` twin where Redis gives one.
const MEMORY: &[(&str, bool)] = &[
    ("used_memory", true),
    ("used_memory_rss", true),
    ("used_memory_peak", true),
    ("used_memory_dataset", false),
    ("maxmemory", true),
];
/// `# Memory` fields given when every server has the same value.
const MEMORY_SHARED: &[&str] = &["maxmemory_policy"];
/// `# Stats`: what the servers did with the data. Their connection counts are the
/// proxy's own connections to them, so they are left out.
const STATS: &[(&str, bool)] = &[
    ("total_commands_processed", false),
    ("instantaneous_ops_per_sec", false),
    ("total_net_input_bytes", false),
    ("total_net_output_bytes", false),
    ("expired_keys", false),
    ("evicted_keys", false),
    ("keyspace_hits", false),
    ("keyspace_misses", false),
];

impl Client {
    /// The `INFO` text of `sections`, each ending with a line break and a blank
    /// line between them, as Redis writes them. `servers` holds each server's
    /// `INFO` reply when sections made of theirs were asked for (else none).
    pub(super) fn info(&self, pool: &PoolRt, sections: InfoSections, servers: &[Bytes]) -> String {
        let registry = pool.registry();
        let clients = registry.proxy_total(ProxyCounter::CurrConnections);
        let mut parts = Vec::new();
        if sections.server {
            parts.push(format!(
                "# Server\r\nredis_version:{}\r\nredis_mode:standalone\r\nprocess_id:{}\r\nuptime_in_seconds:{}\r\n",
                server_version(pool),
                std::process::id(),
                registry.uptime(),
            ));
        }
        if sections.clients {
            // The pool's own, as CLIENT LIST lists them (the proxy section has all).
            let pool_clients = pool.shared().clients.load(Relaxed);
            parts.push(format!("# Clients\r\nconnected_clients:{pool_clients}\r\n"));
        }
        if !servers.is_empty() && sections.memory {
            parts.push(summed_section(servers, "Memory", MEMORY, MEMORY_SHARED));
        }
        if !servers.is_empty() && sections.stats {
            parts.push(summed_section(servers, "Stats", STATS, &[]));
        }
        if sections.proxy {
            parts.push(self.proxy_section(pool, clients));
        }
        if !servers.is_empty() && sections.keyspace {
            parts.push(keyspace_section(servers));
        }
        parts.join("\r\n")
    }

    fn proxy_section(&self, pool: &PoolRt, clients: u64) -> String {
        let config = pool.config();
        let generation = &pool.generation;
        let mut s = format!(
            "# Proxy\r\nproxy:cashew\r\nproxy_version:{}\r\nuptime:{}\r\nconnected_clients:{clients}\r\nthreads:{}\r\ngeneration:{}\r\nconfig_checksum:{}\r\npools:{}\r\npool:{}\r\nservers:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            pool.registry().uptime(),
            pool.registry().threads(),
            generation.number,
            generation.source.checksum,
            generation.config.pools.len(),
            config.name,
            config.servers.len(),
        );
        for (i, server) in config.servers.iter().enumerate() {
            s.push_str(&format!(
                "server{i}:name={},address={},state={}\r\n",
                server.name(),
                server.entry,
                pool.server_state(ServerId(i)).name(),
            ));
        }
        s
    }
}

/// The `name:value` lines of `section` in one server's `INFO` reply (a RESP2
/// bulk string or a RESP3 verbatim one).
fn section_fields<'a>(
    reply: &'a [u8],
    section: &'a str,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    let mut current: &str = "";
    reply.split(|&b| b == b'\n').filter_map(move |line| {
        let line = std::str::from_utf8(line).ok()?.trim_end();
        let line = line.strip_prefix("txt:").unwrap_or(line);
        if let Some(title) = line.strip_prefix("# ") {
            current = title;
            return None;
        }
        match current.eq_ignore_ascii_case(section) {
            true => line.split_once(':'),
            false => None,
        }
    })
}

fn field<'a>(reply: &'a [u8], section: &'a str, name: &str) -> Option<&'a str> {
    section_fields(reply, section).find_map(|(n, v)| (n == name).then_some(v))
}

/// `# {title}` with `summed` added up over the servers that have them, and each of
/// `shared` when all servers give it the same value. A field no server has is
/// left out.
fn summed_section(
    replies: &[Bytes],
    title: &str,
    summed: &[(&str, bool)],
    shared: &[&str],
) -> String {
    let mut out = format!("# {title}\r\n");
    for &(name, human) in summed {
        let mut values = replies
            .iter()
            .filter_map(|r| field(r, title, name)?.parse::<u64>().ok())
            .peekable();
        if values.peek().is_none() {
            continue;
        }
        let total = values.fold(0u64, u64::saturating_add);
        out.push_str(&format!("{name}:{total}\r\n"));
        if human {
            out.push_str(&format!("{name}_human:{}\r\n", human_bytes(total)));
        }
    }
    for &name in shared {
        let values: Vec<Option<&str>> = replies.iter().map(|r| field(r, title, name)).collect();
        if let Some(Some(first)) = values.first() {
            if values.iter().all(|v| v == &Some(*first)) {
                out.push_str(&format!("{name}:{first}\r\n"));
            }
        }
    }
    out
}

/// A size as Redis's `_human` fields write it: `512B`, `1.50K`, `12.00M`, ...
fn human_bytes(n: u64) -> String {
    const UNITS: [char; 5] = ['K', 'M', 'G', 'T', 'P'];
    let mut scale = 1024u64;
    for unit in UNITS {
        if n < scale.saturating_mul(1024) || unit == 'P' {
            return match n < 1024 {
                true => format!("{n}B"),
                false => format!("{:.2}{unit}", n as f64 / scale as f64),
            };
        }
        scale *= 1024;
    }
    unreachable!("the last unit returns")
}

/// `# Keyspace` with each database's keys and expiring keys summed over the
/// servers' sections, and the average TTL weighted by the expiring keys.
pub(super) fn keyspace_section(replies: &[Bytes]) -> String {
    // db number → (keys, expires, avg_ttl × expires)
    let mut dbs: std::collections::BTreeMap<u64, (u64, u64, u128)> = Default::default();
    for reply in replies {
        for (db, fields) in section_fields(reply, "Keyspace") {
            let Some(n) = db.strip_prefix("db").and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            let field = |name: &str| -> u64 {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
                    .unwrap_or(0)
            };
            let entry = dbs.entry(n).or_default();
            entry.0 += field("keys");
            entry.1 += field("expires");
            entry.2 += u128::from(field("avg_ttl")) * u128::from(field("expires"));
        }
    }
    let mut out = String::from("# Keyspace\r\n");
    for (db, (keys, expires, ttl_sum)) in dbs {
        let avg_ttl = if expires == 0 {
            0
        } else {
            ttl_sum / u128::from(expires)
        };
        out.push_str(&format!(
            "db{db}:keys={keys},expires={expires},avg_ttl={avg_ttl}\r\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(names: &[&str]) -> InfoSections {
        InfoSections::asked(names.iter().map(|n| n.as_bytes()))
    }

    #[test]
    fn info_gives_the_sections_asked_for() {
        assert_eq!(asked(&[]), InfoSections::ALL);
        assert_eq!(asked(&["Everything"]), InfoSections::ALL);
        assert_eq!(asked(&["server", "default"]), InfoSections::ALL);
        let server_and_keyspace = asked(&["SERVER", "keyspace"]);
        assert!(server_and_keyspace.server && server_and_keyspace.keyspace);
        assert!(!server_and_keyspace.clients && !server_and_keyspace.proxy);
        assert!(!server_and_keyspace.memory && !server_and_keyspace.stats);
        let memory = asked(&["Memory"]);
        assert!(memory.memory && memory.needs_servers() && !memory.keyspace);
        assert_eq!(memory.server_request(), &b"*1\r\n$4\r\nINFO\r\n"[..]);
        assert!(server_and_keyspace
            .server_request()
            .ends_with(b"keyspace\r\n"));
        let none = asked(&["persistence"]);
        assert!(!(none.server || none.clients || none.proxy || none.needs_servers()));
    }

    #[test]
    fn keyspace_sections_are_summed_per_database() {
        let a = Bytes::from_static(b"$60\r\n# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=1000\r\ndb1:keys=1,expires=0,avg_ttl=0\r\n\r\n");
        let b = Bytes::from_static(
            b"=70\r\ntxt:# Keyspace\r\ndb0:keys=5,expires=2,avg_ttl=3000,subexpiry=0\r\n\r\n",
        );
        assert_eq!(
            keyspace_section(&[a, b]),
            "# Keyspace\r\ndb0:keys=15,expires=4,avg_ttl=2000\r\ndb1:keys=1,expires=0,avg_ttl=0\r\n"
        );
    }

    #[test]
    fn memory_and_stats_are_summed_and_other_sections_ignored() {
        let a = Bytes::from_static(
            b"$0\r\n# Server\r\nused_memory:7\r\n\r\n# Memory\r\nused_memory:1000\r\nused_memory_human:1000B\r\nmaxmemory:1048576\r\nmaxmemory_policy:allkeys-lru\r\n\r\n# Stats\r\nkeyspace_hits:3\r\nkeyspace_misses:4\r\n\r\n# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n\r\n",
        );
        let b = Bytes::from_static(
            b"=0\r\ntxt:# Memory\r\nused_memory:1048\r\nmaxmemory:2097152\r\nmaxmemory_policy:allkeys-lru\r\n\r\n# Stats\r\nkeyspace_hits:10\r\n\r\n",
        );
        let c = Bytes::from_static(
            b"$0\r\n# Memory\r\nused_memory:0\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n",
        );
        assert_eq!(
            summed_section(&[a.clone(), b.clone()], "Memory", MEMORY, MEMORY_SHARED),
            "# Memory\r\nused_memory:2048\r\nused_memory_human:2.00K\r\nmaxmemory:3145728\r\nmaxmemory_human:3.00M\r\nmaxmemory_policy:allkeys-lru\r\n"
        );
        assert!(
            !summed_section(&[a.clone(), b.clone(), c], "Memory", MEMORY, MEMORY_SHARED)
                .contains("maxmemory_policy"),
            "servers that differ give no policy"
        );
        assert_eq!(
            summed_section(&[a, b], "Stats", STATS, &[]),
            "# Stats\r\nkeyspace_hits:13\r\nkeyspace_misses:4\r\n"
        );
    }

    #[test]
    fn sizes_read_as_redis_writes_them() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1536), "1.50K");
        assert_eq!(human_bytes(5 << 20), "5.00M");
        assert_eq!(human_bytes(3 << 30), "3.00G");
        assert_eq!(human_bytes(1 << 40), "1.00T");
        assert_eq!(human_bytes(u64::MAX), "16384.00P");
    }
}
