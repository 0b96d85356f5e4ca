//! Commands over the whole keyspace against real redis servers: SCAN walks every
//! server once, KEYS, DBSIZE, RANDOMKEY, FLUSHDB, FLUSHALL and INFO's keyspace add
//! up over the servers, and a server down gives an error, never part of an answer.

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
