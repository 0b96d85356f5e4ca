//! cashew in front of real redis-server processes: the redis crate, redis-cli and
//! redis-benchmark through the proxy; splitting, placement, AUTH, redis_db, big
//! values, and an answer for every request.

use std::process::Command;

use cashew_testkit::{redis_server, McConn, PoolProxy, Process};
use redis::{Commands, Connection, Value};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

/// cashew over redis servers, with redis helpers.
struct Proxy(PoolProxy);

impl std::ops::Deref for Proxy {
    type Target = PoolProxy;
    fn deref(&self) -> &PoolProxy {
        &self.0
    }
}

impl Proxy {
    fn start(servers: usize, backend_args: &[&str], pool_settings: &str) -> Proxy {
        let backends: Vec<Process> = (0..servers).map(|_| redis_server(backend_args)).collect();
        let settings = format!("  redis: true\n  hash: md5\n{pool_settings}");
        Proxy(PoolProxy::start(CASHEW, backends, &settings, &[]))
    }

    fn client(&self) -> Connection {
        redis::Client::open(format!("redis://{}/", self.listen))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    fn direct(&self, i: usize) -> Connection {
        redis::Client::open(format!("redis://{}/", self.backends[i].addr))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    fn raw(&self) -> McConn {
        McConn::connect(self.listen)
    }

    /// The `redis_version` the first server reports (cashew reports the same).
    fn server_version(&self) -> String {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut self.direct(0))
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap()
            .trim()
            .to_string()
    }
}

fn keys(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("{tag}:{i}")).collect()
}

#[test]
fn pipelines_of_mixed_commands_through_the_redis_crate() {
    let p = Proxy::start(3, &[], "");
    let mut c = p.client();
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.set(format!("k{i}"), i).ignore();
        pipe.incr(format!("n{}", i % 7), 1).ignore();
        pipe.rpush(format!("l{}", i % 5), i).ignore();
        pipe.hset(format!("h{}", i % 3), format!("f{i}"), i)
            .ignore();
        pipe.sadd(format!("s{}", i % 4), i).ignore();
        pipe.zadd(format!("z{}", i % 2), format!("m{i}"), i)
            .ignore();
    }
    pipe.get("k42")
        .llen("l0")
        .hlen("h1")
        .scard("s3")
        .zcard("z1")
        .get("n3");
    let (k42, llen, hlen, scard, zcard, n3): (i64, i64, i64, i64, i64, i64) =
        pipe.query(&mut c).unwrap();
    assert_eq!((k42, llen, hlen, scard, zcard), (42, 40, 67, 50, 100));
    assert_eq!(n3, 29);
    let values: Vec<i64> = c.lrange("l2", 0, 2).unwrap();
    assert_eq!(values, [2, 7, 12]);
    let score: f64 = c.zscore("z0", "m10").unwrap();
    assert_eq!(score, 10.0);
    let _: () = c.expire("k1", 100).unwrap();
    let ttl: i64 = c.ttl("k1").unwrap();
    assert!(ttl > 0 && ttl <= 100);
    let t: String = redis::cmd("TYPE").arg("h0").query(&mut c).unwrap();
    assert_eq!(t, "hash");
    let got: Option<String> = redis::cmd("EVAL")
        .arg("return redis.call('get', KEYS[1])")
        .arg(1)
        .arg("k7")
        .query(&mut c)
        .unwrap();
    assert_eq!(got.as_deref(), Some("7"));
}

#[test]
fn split_commands_span_servers_and_merge() {
    let p = Proxy::start(3, &[], "");
    let mut c = p.client();
    let keys = keys(30, "split");
    assert_eq!(
        p.routed(&keys)
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        3
    );

    let pairs: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), format!("v-{k}"))).collect();
    let _: () = c.mset(&pairs).unwrap();
    let mut asked: Vec<String> = keys.clone();
    asked.insert(3, "split:missing".into());
    asked.push(keys[0].clone());
    let values: Vec<Option<String>> = c.mget(&asked).unwrap();
    let expected: Vec<Option<String>> = asked
        .iter()
        .map(|k| (k != "split:missing").then(|| format!("v-{k}")))
        .collect();
    assert_eq!(values, expected);

    let exists: i64 = redis::cmd("EXISTS")
        .arg(&keys[..10])
        .arg("split:missing")
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, 10);
    let touched: i64 = redis::cmd("TOUCH").arg(&keys[..10]).query(&mut c).unwrap();
    assert_eq!(touched, 10);
    let deleted: i64 = c.del(&keys[..10]).unwrap();
    assert_eq!(deleted, 10);
    let unlinked: i64 = redis::cmd("UNLINK")
        .arg(&keys[10..])
        .arg("split:missing")
        .query(&mut c)
        .unwrap();
    assert_eq!(unlinked, 20);
    let values: Vec<Option<String>> = c.mget(&keys).unwrap();
    assert!(values.iter().all(Option::is_none));

    // Each part of a split lands on its own server.
    let _: () = c.mset(&pairs).unwrap();
    let routed = p.routed(&keys);
    let mut direct: Vec<Connection> = (0..3).map(|i| p.direct(i)).collect();
    for (k, &server) in keys.iter().zip(&routed) {
        for (i, d) in direct.iter_mut().enumerate() {
            let here: bool = d.exists(k).unwrap();
            assert_eq!(here, i == server, "{k}");
        }
    }

    // As in Redis, MGET gives nil for a key of another type.
    let _: () = c.rpush("split:list", "x").unwrap();
    let mut with_list = keys.clone();
    with_list.push("split:list".into());
    let values: Vec<Option<String>> = c.mget(&with_list).unwrap();
    assert_eq!(values.last(), Some(&None));
    assert_eq!(values[0].as_deref(), Some("v-split:0"));
}

#[test]
fn keys_land_where_cashew_route_says() {
    let p = Proxy::start(2, &[], "");
    let mut c = p.client();
    let keys = keys(200, "placed");
    for k in &keys {
        let _: () = c.set(k, 1).unwrap();
    }
    let routed = p.routed(&keys);
    let mut direct = [p.direct(0), p.direct(1)];
    for (k, &server) in keys.iter().zip(&routed) {
        let here: bool = direct[server].exists(k).unwrap();
        let other: bool = direct[1 - server].exists(k).unwrap();
        assert!(here && !other, "{k} should be on server {server}");
    }
}

#[test]
fn auth_with_redis_auth() {
    let p = Proxy::start(2, &["--requirepass", "s3cret"], "  redis_auth: s3cret\n");
    let mut raw = p.raw();
    raw.roundtrip(b"GET k\r\n", b"-NOAUTH Authentication required.\r\n");
    raw.roundtrip(
        b"AUTH wrong\r\n",
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    raw.roundtrip(b"SET k v\r\n", b"-NOAUTH Authentication required.\r\n");
    raw.roundtrip(b"AUTH s3cret\r\n", b"+OK\r\n");
    raw.roundtrip(b"SET k v\r\nGET k\r\n", b"+OK\r\n$1\r\nv\r\n");
    raw.roundtrip(b"AUTH default s3cret\r\n", b"+OK\r\n");

    let mut c = redis::Client::open(format!("redis://:s3cret@{}/", p.listen))
        .unwrap()
        .get_connection()
        .unwrap();
    let v: String = c.get("k").unwrap();
    assert_eq!(v, "v");
}

#[test]
fn auth_without_redis_auth_is_an_error() {
    let p = Proxy::start(1, &[], "");
    let mut raw = p.raw();
    raw.send(b"AUTH pw\r\n");
    assert!(raw
        .line()
        .starts_with("-ERR AUTH <password> called without any password configured"));
    raw.roundtrip(b"PING\r\n", b"+PONG\r\n");
}

#[test]
fn backends_needing_a_password_fail_clearly_without_it() {
    let p = Proxy::start(1, &["--requirepass", "s3cret"], "");
    let mut raw = p.raw();
    raw.send(b"GET k\r\n");
    let line = raw.line();
    assert!(
        line.starts_with("-NOAUTH") || line.starts_with("-ERR"),
        "{line}"
    );
    raw.roundtrip(b"PING\r\n", b"+PONG\r\n");
}

#[test]
fn redis_db_is_selected_on_server_connections() {
    let p = Proxy::start(1, &[], "  redis_db: 3\n");
    let mut c = p.client();
    let _: () = c.set("in-db-3", "yes").unwrap();
    let mut direct = p.direct(0);
    let in0: bool = direct.exists("in-db-3").unwrap();
    assert!(!in0);
    let _: () = redis::cmd("SELECT").arg(3).query(&mut direct).unwrap();
    let v: String = direct.get("in-db-3").unwrap();
    assert_eq!(v, "yes");
    let mut raw = p.raw();
    raw.roundtrip(b"SELECT 0\r\n", b"+OK\r\n");
    raw.send(b"SELECT 3\r\n");
    assert!(raw
        .line()
        .starts_with("-ERR SELECT is limited to database 0"));
}

#[test]
fn a_failing_select_reaches_clients() {
    let p = Proxy::start(1, &["--databases", "4"], "  redis_db: 9\n");
    let mut raw = p.raw();
    raw.roundtrip(b"GET k\r\n", b"-ERR DB index is out of range\r\n");
    raw.roundtrip(b"PING\r\n", b"+PONG\r\n");
}

#[test]
fn sixteen_mib_values() {
    let p = Proxy::start(2, &[], "");
    let mut c = p.client();
    let big: Vec<u8> = (0..16 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    let _: () = c.set("big", &big).unwrap();
    let back: Vec<u8> = c.get("big").unwrap();
    assert!(back == big);
    let len: usize = c.strlen("big").unwrap();
    assert_eq!(len, big.len());
}

#[test]
fn every_request_is_answered_and_the_connection_stays_usable() {
    let p = Proxy::start(2, &[], "");
    let mut raw = p.raw();
    for (command, why) in [
        ("CONFIG GET save", "administration"),
        ("CLIENT TRACKING on", "server push"),
        ("SCRIPT DEBUG yes", "administration"),
        ("MOVE k 1", "redis_db"),
        ("CLUSTER INFO", "not a redis cluster"),
    ] {
        raw.send(format!("{command}\r\n").as_bytes());
        let line = raw.line();
        assert!(
            line.starts_with("-ERR command '")
                && line.contains("' is not supported by the proxy: ")
                && line.contains(why),
            "{command}: {line}"
        );
    }
    raw.roundtrip(
        b"GET\r\n",
        b"-ERR wrong number of arguments for 'get' command\r\n",
    );
    raw.roundtrip(
        b"MSET a 1 b\r\n",
        b"-ERR wrong number of arguments for 'mset' command\r\n",
    );
    raw.roundtrip(
        b"NOSUCH a\r\n",
        b"-ERR unknown command 'NOSUCH', with args beginning with: 'a' \r\n",
    );
    raw.roundtrip(b"EVAL \"return 1\" 0\r\n", b"-ERR 'eval' without keys is not supported by the proxy: it needs a key to choose a server\r\n");
    // Server errors pass through and close nothing.
    raw.roundtrip(b"LPUSH lst x\r\n", b":1\r\n");
    raw.roundtrip(
        b"GET lst\r\n",
        b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
    );
    raw.roundtrip(
        b"INCR lst\r\n",
        b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
    );
    // Answered by the proxy.
    raw.roundtrip(
        b"PING\r\nPING hi\r\nECHO hello\r\n",
        b"+PONG\r\n$2\r\nhi\r\n$5\r\nhello\r\n",
    );
    raw.roundtrip(
        b"CLIENT SETNAME app\r\nCLIENT GETNAME\r\n",
        b"+OK\r\n$3\r\napp\r\n",
    );
    raw.roundtrip(b"CLIENT SETINFO LIB-NAME x\r\n", b"+OK\r\n");
    raw.roundtrip(b"HELLO 4\r\n", b"-NOPROTO unsupported protocol version\r\n");
    raw.send(b"HELLO 2\r\n");
    assert_eq!(raw.line(), "*14\r\n");
    let version = p.server_version();
    raw.expect(
        format!(
            "$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n${}\r\n{version}\r\n$5\r\nproto\r\n:2\r\n$2\r\nid\r\n",
            version.len()
        )
        .as_bytes(),
    );
    raw.line();
    raw.expect(
        b"$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
    );
    raw.send(b"COMMAND COUNT\r\n");
    let count: usize = raw
        .line()
        .trim_start_matches(':')
        .trim_end()
        .parse()
        .unwrap();
    assert!(count > 100);
    raw.roundtrip(b"COMMAND DOCS\r\n", b"*0\r\n");
    raw.roundtrip(
        b"COMMAND INFO get nosuch\r\n",
        b"*2\r\n*6\r\n$3\r\nget\r\n:2\r\n*0\r\n:1\r\n:1\r\n:1\r\n*-1\r\n",
    );
    // An empty multibulk and an empty inline line get nothing, as in Redis.
    raw.roundtrip(b"*0\r\n\r\nPING\r\n", b"+PONG\r\n");
    raw.roundtrip(b"SET k v\r\nGET k\r\n", b"+OK\r\n$1\r\nv\r\n");
    raw.roundtrip(b"QUIT\r\n", b"+OK\r\n");
    assert!(raw.is_closed());

    // A request that breaks the protocol: the error, then close.
    let mut raw = p.raw();
    raw.roundtrip(
        b"*1\r\n$x\r\n",
        b"-ERR Protocol error: invalid bulk length\r\n",
    );
    assert!(raw.is_closed());
}

#[test]
fn info_has_a_proxy_section() {
    let p = Proxy::start(2, &[], "");
    let mut c = p.client();
    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    assert!(info.contains("# Proxy\r\n"));
    assert!(info.contains(&format!("proxy_version:{}\r\n", env!("CARGO_PKG_VERSION"))));
    assert!(info.contains("connected_clients:1\r\n"), "{info}");
    for b in &p.backends {
        assert!(
            info.contains(&format!("address={}:1,state=up", b.addr)),
            "{info}"
        );
    }
}

#[test]
fn redis_cli_basics() {
    let p = Proxy::start(2, &[], "");
    let port = p.listen.port().to_string();
    let cli = |args: &[&str]| {
        let out = Command::new(cashew_testkit::program("redis-cli"))
            .args(["-p", &port])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["ping"]), "PONG\n");
    assert_eq!(cli(&["set", "cli", "works"]), "OK\n");
    assert_eq!(cli(&["get", "cli"]), "works\n");
    assert!(cli(&["info"]).contains("# Proxy"));

    // Interactive: commands on standard input, one per line.
    let out = cashew_testkit::run_with_input(
        Command::new(cashew_testkit::program("redis-cli")).args(["-p", &port]),
        b"set a 1\nincr a\nget a\ndbsize\nping\n",
    );
    let out = String::from_utf8(out.stdout).unwrap();
    // redis-cli follows an error with a blank line when not on a terminal.
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    let expected = ["OK", "2", "2", "2", "PONG"];
    assert_eq!(lines, expected, "{out}");
}

#[test]
fn redis_benchmark_runs_without_errors() {
    let p = Proxy::start(2, &[], "");
    let out = Command::new(cashew_testkit::program("redis-benchmark"))
        .args([
            "-p",
            &p.listen.port().to_string(),
            "-q",
            "-P",
            "16",
            "-n",
            "5000",
            "-c",
            "8",
        ])
        .args([
            "-t",
            "set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,lrange,mset",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    let finals: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("requests per second"))
        .collect();
    for test in [
        "SET",
        "GET",
        "INCR",
        "LPUSH",
        "RPUSH",
        "LPOP",
        "RPOP",
        "SADD",
        "HSET",
        "SPOP",
        "LRANGE_100",
        "MSET",
    ] {
        assert!(
            finals.iter().any(|l| l.trim_start().starts_with(test)),
            "{test} missing:\n{stdout}"
        );
    }
    let lower = stdout.to_lowercase();
    assert!(!lower.contains("error"), "{stdout}");
    let mut c = p.client();
    let v: Value = redis::cmd("GET")
        .arg("key:__rand_int__")
        .query(&mut c)
        .unwrap();
    assert!(matches!(v, Value::BulkString(_)), "{v:?}");
}

/// SCRIPT LOAD goes to every server; one that is down does not fail it (it
/// lacks the script as a server that joins later does), so a script still runs
/// by its SHA1 on the keys of the servers that are up. A script that does not
/// compile is the servers' error.
#[test]
fn scripts_load_on_every_server_that_is_up() {
    let mut p = Proxy::start(
        3,
        &[],
        "  server_failure_limit: 1\n  auto_eject_hosts: false\n",
    );
    let mut c = p.client();
    let script = "return redis.call('INCR', KEYS[1])";
    let keys = keys(30, "s");
    let placed = p.routed(&keys);
    drop(p.0.backends.remove(2));
    for _ in 0..2 {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(script)
            .query(&mut c)
            .unwrap();
        for (k, _) in keys.iter().zip(&placed).filter(|(_, &s)| s < 2) {
            let _: i64 = redis::cmd("EVALSHA")
                .arg(&sha)
                .arg(1)
                .arg(k)
                .query(&mut c)
                .unwrap();
        }
        for i in 0..2 {
            let there: Vec<bool> = redis::cmd("SCRIPT")
                .arg("EXISTS")
                .arg(&sha)
                .query(&mut p.direct(i))
                .unwrap();
            assert_eq!(there, [true], "server {i}");
        }
        let () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut c).unwrap();
    }
    let e = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return +")
        .query::<String>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("Error compiling script"), "{e}");
}
