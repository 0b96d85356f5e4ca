//! Commands over the whole keyspace against real redis servers: SCAN walks every
//! server once, KEYS, DBSIZE, RANDOMKEY, FLUSHDB, FLUSHALL and INFO's keyspace,
//! memory and stats add up over the servers, and a server down gives an error,
//! never part of an answer.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use cashew_testkit::{free_port, redis_server, AdminApi, Cashew, Process};
use redis::{Connection, Value};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

struct Rig {
    servers: Vec<Process>,
    cashew: Cashew,
    listen: SocketAddr,
    api: AdminApi,
}

fn local() -> SocketAddr {
    format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap()
}

fn yaml(listen: SocketAddr, servers: &[&Process], settings: &str) -> String {
    let list: String = servers
        .iter()
        .map(|s| format!("    - {}:1\n", s.addr))
        .collect();
    format!(
        "data:\n  listen: {listen}\n  redis: true\n  timeout: 2000\n{settings}  servers:\n{list}"
    )
}

/// cashew over the first `used` of `total` redis servers.
fn rig(total: usize, used: usize, settings: &str) -> Rig {
    let servers: Vec<Process> = (0..total).map(|_| redis_server(&[])).collect();
    let listen = local();
    let admin = local();
    let refs: Vec<&Process> = servers[..used].iter().collect();
    let cashew = Cashew::start(
        CASHEW,
        &yaml(listen, &refs, settings),
        &["--threads", "2", "--admin", &admin.to_string()],
    );
    Rig {
        servers,
        cashew,
        listen,
        api: AdminApi::new(admin, None),
    }
}

fn connect(addr: SocketAddr) -> Connection {
    redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_connection()
        .unwrap()
}

impl Rig {
    fn client(&self) -> Connection {
        connect(self.listen)
    }

    fn write_keys(&self, n: usize) -> BTreeSet<String> {
        let mut c = self.client();
        let keys: Vec<String> = (0..n).map(|i| format!("key:{i}")).collect();
        for chunk in keys.chunks(1000) {
            let pairs: Vec<(&String, &String)> = chunk.iter().map(|k| (k, k)).collect();
            let _: () = redis::cmd("MSET").arg(&pairs).query(&mut c).unwrap();
        }
        keys.into_iter().collect()
    }

    fn dbsize_of(&self, server: usize) -> u64 {
        redis::cmd("DBSIZE")
            .query(&mut connect(self.servers[server].addr))
            .unwrap()
    }
}

/// A whole SCAN walk with `args` after the cursor: every key returned, and the
/// number of calls it took.
fn scan_all(c: &mut Connection, args: &[&str]) -> (Vec<String>, usize) {
    let (mut cursor, mut keys, mut calls) = (0u64, Vec::new(), 0);
    loop {
        let (next, batch): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg(args).query(c).unwrap();
        keys.extend(batch);
        calls += 1;
        assert!(calls < 10_000, "the walk does not end");
        if next == 0 {
            return (keys, calls);
        }
        cursor = next;
    }
}

fn error_of(c: &mut Connection, command: &[&str]) -> String {
    match redis::cmd(command[0]).arg(&command[1..]).query::<Value>(c) {
        Ok(v) => panic!("{command:?} answered {v:?}, not an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn scan_walks_every_server_once_and_the_others_add_up() {
    let rig = rig(3, 3, "");
    let written = rig.write_keys(30_000);
    for s in 0..3 {
        assert!(rig.dbsize_of(s) > 5_000, "keys are spread over the servers");
    }
    let mut c = rig.client();

    let (keys, calls) = scan_all(&mut c, &["COUNT", "1000"]);
    let found: BTreeSet<String> = keys.iter().cloned().collect();
    assert_eq!(found, written, "every key, in {calls} calls");
    assert!(
        keys.len() < written.len() + written.len() / 10,
        "few repeats"
    );
    // MATCH and TYPE pass through; the redis crate's own iteration.
    let (ones, _) = scan_all(&mut c, &["MATCH", "key:1*", "TYPE", "string"]);
    let expected: BTreeSet<&String> = written.iter().filter(|k| k.starts_with("key:1")).collect();
    assert_eq!(ones.iter().collect::<BTreeSet<_>>(), expected);
    let iterated: BTreeSet<String> = redis::Commands::scan_match::<_, String>(&mut c, "key:2*")
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        iterated.len(),
        written.iter().filter(|k| k.starts_with("key:2")).count()
    );
    assert!(error_of(&mut c, &["SCAN", "not-a-number"]).contains("invalid cursor"));

    let size: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(size, 30_000);
    let mut listed: Vec<String> = redis::cmd("KEYS").arg("key:123*").query(&mut c).unwrap();
    listed.sort();
    let mut expected: Vec<String> = written
        .iter()
        .filter(|k| k.starts_with("key:123"))
        .cloned()
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
    let all: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert_eq!(all.len(), 30_000);
    let random: String = redis::cmd("RANDOMKEY").query(&mut c).unwrap();
    assert!(written.contains(&random), "{random}");
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut c).unwrap();
    assert!(
        info.starts_with("# Keyspace\r\ndb0:keys=30000,expires=0,"),
        "{info}"
    );
    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    assert!(
        info.contains("# Proxy") && info.contains("db0:keys=30000,"),
        "{info}"
    );

    let ok: String = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    assert_eq!(ok, "OK");
    assert_eq!(
        (0..3).map(|s| rig.dbsize_of(s)).sum::<u64>(),
        0,
        "every server flushed"
    );
    let none: Option<String> = redis::cmd("RANDOMKEY").query(&mut c).unwrap();
    assert_eq!(none, None);
    let (keys, calls) = scan_all(&mut c, &[]);
    assert!(
        keys.is_empty() && calls == 3,
        "{keys:?} in {calls} calls: one per server"
    );
    rig.write_keys(10);
    let ok: String = redis::cmd("FLUSHALL").arg("SYNC").query(&mut c).unwrap();
    assert_eq!(ok, "OK");
    assert_eq!((0..3).map(|s| rig.dbsize_of(s)).sum::<u64>(), 0);

    let metrics = rig.api.get_text("/metrics").1;
    for counter in ["cashew_keys_commands", "cashew_flushall_commands"] {
        let value = metrics
            .lines()
            .find(|l| l.starts_with(counter) && l.contains("pool=\"data\""))
            .unwrap_or_else(|| panic!("no {counter} in {metrics}"));
        let expected = if counter == "cashew_keys_commands" {
            2
        } else {
            1
        };
        assert!(value.ends_with(&format!(" {expected}")), "{value}");
    }
}

/// `field` of `INFO`'s text.
fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::to_string)
}

#[test]
fn info_memory_and_stats_add_up_over_the_servers() {
    let rig = rig(3, 3, "");
    let mut direct: Vec<Connection> = rig.servers.iter().map(|s| connect(s.addr)).collect();
    for (i, server) in direct.iter_mut().enumerate() {
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", "maxmemory"])
            .arg(format!("{}mb", 10 * (i + 1)))
            .query(server)
            .unwrap();
    }
    let written = rig.write_keys(3_000);
    let mut c = rig.client();
    for (i, key) in written.iter().take(500).enumerate() {
        let _: Option<String> = redis::cmd("GET").arg(key).query(&mut c).unwrap();
        let _: Option<String> = redis::cmd("GET")
            .arg(format!("missing:{i}"))
            .query(&mut c)
            .unwrap();
    }
    let mut summed = |section: &str, field: &str| -> u64 {
        direct
            .iter_mut()
            .map(|server| {
                let info: String = redis::cmd("INFO").arg(section).query(server).unwrap();
                info_field(&info, field).unwrap().parse::<u64>().unwrap()
            })
            .sum()
    };

    let memory: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
    assert!(memory.starts_with("# Memory\r\n"), "{memory}");
    assert_eq!(
        info_field(&memory, "maxmemory").unwrap(),
        (60u64 << 20).to_string()
    );
    assert_eq!(info_field(&memory, "maxmemory_human").unwrap(), "60.00M");
    assert_eq!(
        info_field(&memory, "maxmemory_policy").unwrap(),
        "noeviction"
    );
    let used: u64 = info_field(&memory, "used_memory").unwrap().parse().unwrap();
    assert!(used > 3 * 500_000, "three servers' memory: {used}");
    assert!(info_field(&memory, "used_memory_human")
        .unwrap()
        .ends_with('M'));

    let stats: String = redis::cmd("INFO").arg("Stats").query(&mut c).unwrap();
    assert!(stats.starts_with("# Stats\r\n"), "{stats}");
    for field in ["keyspace_hits", "keyspace_misses"] {
        let through_cashew: u64 = info_field(&stats, field).unwrap().parse().unwrap();
        assert_eq!(through_cashew, 500, "{field}: {stats}");
        assert_eq!(through_cashew, summed("stats", field), "{field}");
    }
    assert!(info_field(&stats, "total_connections_received").is_none());

    // The default sections hold them, in Redis's order, with the proxy's own.
    let all: String = redis::cmd("INFO").query(&mut c).unwrap();
    let at = |title: &str| all.find(title).unwrap_or_else(|| panic!("{title}: {all}"));
    assert!(at("# Server") < at("# Clients") && at("# Clients") < at("# Memory"));
    assert!(at("# Memory") < at("# Stats") && at("# Stats") < at("# Proxy"));
    assert!(at("# Proxy") < at("# Keyspace"));
    assert!(all.contains("db0:keys=3000,"), "{all}");
    let only_server: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
    assert!(!only_server.contains("# Memory") && !only_server.contains("# Keyspace"));
}

#[test]
fn a_cursor_from_before_a_reload_that_changed_the_servers_starts_again() {
    let rig = rig(3, 2, "");
    rig.write_keys(2_000);
    let mut c = rig.client();
    let (cursor, _): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(10)
        .query(&mut c)
        .unwrap();
    assert_ne!(cursor, 0);
    let (mid, _): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(cursor)
        .arg("COUNT")
        .arg(10)
        .query(&mut c)
        .unwrap();
    assert_ne!(mid, 0);

    let refs: Vec<&Process> = rig.servers.iter().collect();
    rig.cashew.write_config(&yaml(rig.listen, &refs, ""));
    let (status, body) = rig.api.post("/reload");
    assert_eq!(status, 200, "{body}");

    let from_start: (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(10)
        .query(&mut c)
        .unwrap();
    let from_old: (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(mid)
        .arg("COUNT")
        .arg(10)
        .query(&mut c)
        .unwrap();
    assert_eq!(
        from_old, from_start,
        "an old cursor walks again from the first server"
    );
    // A whole walk after the reload still finds every key (now on 2 of 3 servers).
    let (keys, _) = scan_all(&mut c, &["COUNT", "100"]);
    assert_eq!(keys.iter().collect::<BTreeSet<_>>().len(), 2_000);
}

#[test]
fn a_server_down_gives_an_error_never_part_of_an_answer() {
    let mut rig = rig(3, 3, "");
    rig.write_keys(3_000);
    let mut c = rig.client();
    // Walk into the second server, then stop the third.
    let mut cursor = 0u64;
    loop {
        let (next, _): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(500)
            .query(&mut c)
            .unwrap();
        cursor = next;
        if cursor >> 54 == 1 {
            break;
        }
        assert_ne!(cursor, 0);
    }
    drop(rig.servers.remove(2));
    // Each gets an error (FLUSHDB last: the live servers do flush; its reply says
    // that not all did).
    for command in [
        &["DBSIZE"][..],
        &["KEYS", "*"],
        &["RANDOMKEY"],
        &["INFO", "keyspace"],
        &["INFO", "memory"],
        &["FLUSHDB"],
    ] {
        let e = error_of(&mut c, command);
        assert!(!e.is_empty(), "{command:?}");
    }
    // The walk goes on over the second server and fails at the third.
    let outcome = loop {
        match redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(500)
            .query::<(u64, Vec<String>)>(&mut c)
        {
            Ok((next, _)) => {
                assert_ne!(next, 0, "the walk cannot end without the third server");
                cursor = next;
            }
            Err(e) => break e,
        }
    };
    assert!(cursor >> 54 == 2, "{outcome}");
}

#[test]
fn keyspace_commands_false_refuses_them_and_keys_is_bounded() {
    let refusing = rig(2, 2, "  keyspace_commands: false\n");
    let mut c = refusing.client();
    for command in ["SCAN", "KEYS", "DBSIZE", "RANDOMKEY", "FLUSHDB", "FLUSHALL"] {
        let args: &[&str] = match command {
            "SCAN" => &["SCAN", "0"],
            "KEYS" => &["KEYS", "*"],
            other => &[other][..],
        };
        let e = error_of(&mut c, args);
        assert!(
            e.contains("is not supported by the proxy"),
            "{command}: {e}"
        );
    }
    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    assert!(!info.contains("# Keyspace"), "{info}");
    assert!(
        !info.contains("# Memory") && info.contains("# Proxy"),
        "{info}"
    );
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG", "the connection stays usable");

    let bounded = rig(2, 2, "  client_output_limit: 65536\n");
    bounded.write_keys(10_000);
    let mut c = bounded.client();
    let e = error_of(&mut c, &["KEYS", "*"]);
    assert!(
        e.contains("client_output_limit") && e.contains("SCAN"),
        "{e}"
    );
    let few: Vec<String> = redis::cmd("KEYS").arg("key:999*").query(&mut c).unwrap();
    assert_eq!(few.len(), 11);
}
