//! cashew in front of real memcached servers: every command, placement, pipelines,
//! big values, bad input, failures, stats and a client library.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cashew_testkit::faulty::FaultyLink;
use cashew_testkit::{
    free_port, memcached, memcached_on, Cashew, McConn, PoolProxy, Process, NUTCRACKER_POOL_STATS,
    NUTCRACKER_SERVER_STATS,
};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

/// cashew over memcached servers, with memcached helpers.
struct Proxy(PoolProxy);

impl std::ops::Deref for Proxy {
    type Target = PoolProxy;
    fn deref(&self) -> &PoolProxy {
        &self.0
    }
}

impl std::ops::DerefMut for Proxy {
    fn deref_mut(&mut self) -> &mut PoolProxy {
        &mut self.0
    }
}

impl Proxy {
    /// cashew with one pool over `servers` fresh memcached servers.
    fn start(servers: usize, pool_settings: &str, args: &[&str]) -> Proxy {
        let backends: Vec<Process> = (0..servers).map(|_| memcached()).collect();
        Self::over(backends, pool_settings, args)
    }

    fn over(backends: Vec<Process>, pool_settings: &str, args: &[&str]) -> Proxy {
        Proxy(PoolProxy::start(CASHEW, backends, pool_settings, args))
    }

    fn client(&self) -> McConn {
        McConn::connect(self.listen)
    }

    fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.cashew.stats_json()).unwrap()
    }

    /// What the first server answers to `version` (cashew answers the same).
    fn server_version(&self) -> String {
        let mut c = McConn::connect(self.backends[0].addr);
        c.send(b"version\r\n");
        c.line()
    }
}

fn keys(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("{tag}:{i}")).collect()
}

#[test]
fn every_command_through_three_servers() {
    let p = Proxy::start(3, "", &[]);
    let mut c = p.client();
    c.roundtrip(b"set k1 5 0 3\r\nabc\r\n", b"STORED\r\n");
    c.roundtrip(b"get k1\r\n", b"VALUE k1 5 3\r\nabc\r\nEND\r\n");
    c.roundtrip(b"add k1 0 0 1\r\nx\r\n", b"NOT_STORED\r\n");
    c.roundtrip(b"add k2 0 0 1\r\nx\r\n", b"STORED\r\n");
    c.roundtrip(b"replace k2 0 0 1\r\ny\r\n", b"STORED\r\n");
    c.roundtrip(b"replace nope 0 0 1\r\ny\r\n", b"NOT_STORED\r\n");
    c.roundtrip(b"append k2 0 0 2\r\nzz\r\n", b"STORED\r\n");
    c.roundtrip(b"prepend k2 0 0 2\r\naa\r\n", b"STORED\r\n");
    c.roundtrip(b"get k2\r\n", b"VALUE k2 0 5\r\naayzz\r\nEND\r\n");

    // cas with the unique gets returns.
    c.send(b"gets k1\r\n");
    let header = c.line();
    let unique: u64 = header
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    c.expect(b"abc\r\nEND\r\n");
    c.roundtrip(
        format!("cas k1 0 0 1 {}\r\nq\r\n", unique + 1000).as_bytes(),
        b"EXISTS\r\n",
    );
    c.roundtrip(
        format!("cas k1 0 0 1 {unique}\r\nq\r\n").as_bytes(),
        b"STORED\r\n",
    );
    c.roundtrip(b"cas nope 0 0 1 1\r\nq\r\n", b"NOT_FOUND\r\n");

    c.roundtrip(b"set n 0 0 2\r\n10\r\n", b"STORED\r\n");
    c.roundtrip(b"incr n 5\r\n", b"15\r\n");
    c.roundtrip(b"decr n 20\r\n", b"0\r\n");
    c.roundtrip(b"incr missing 1\r\n", b"NOT_FOUND\r\n");
    c.roundtrip(b"set n 0 0 1\r\n0\r\n", b"STORED\r\n");
    c.roundtrip(b"touch n 100\r\n", b"TOUCHED\r\n");
    c.roundtrip(b"touch missing 100\r\n", b"NOT_FOUND\r\n");
    c.roundtrip(b"gat 100 n\r\n", b"VALUE n 0 1\r\n0\r\nEND\r\n");
    c.send(b"gats 100 n\r\n");
    assert!(c.line().starts_with("VALUE n 0 1 "));
    c.expect(b"0\r\nEND\r\n");
    c.roundtrip(b"delete n\r\n", b"DELETED\r\n");
    c.roundtrip(b"delete n\r\n", b"NOT_FOUND\r\n");
    c.roundtrip(b"delete k2 0\r\n", b"DELETED\r\n");

    // noreply: no reply at all, but the command is done.
    c.roundtrip(
        b"set q 0 0 1 noreply\r\n1\r\nincr q 4 noreply\r\ndelete gone noreply\r\nget q\r\n",
        b"VALUE q 0 1\r\n5\r\nEND\r\n",
    );
    c.roundtrip(
        b"touch q 10 noreply\r\nadd q 0 0 1 noreply\r\nz\r\nget q\r\n",
        b"VALUE q 0 1\r\n5\r\nEND\r\n",
    );

    // Answered by cashew.
    c.roundtrip(b"version\r\n", p.server_version().as_bytes());
    c.send(b"stats\r\n");
    let mut stats = HashMap::new();
    loop {
        let line = c.line();
        if line == "END\r\n" {
            break;
        }
        let mut parts = line.trim_end().splitn(3, ' ');
        assert_eq!(parts.next(), Some("STAT"), "{line}");
        stats.insert(
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
        );
    }
    for name in [
        "pid",
        "uptime",
        "version",
        "threads",
        "curr_connections",
        "total_connections",
        "cmd_get",
        "cmd_set",
        "get_hits",
        "get_misses",
    ] {
        assert!(stats.contains_key(name), "stats lacks {name}: {stats:?}");
    }
    assert_eq!(stats["pid"], p.cashew.process.pid().to_string());
    assert_eq!(stats["threads"], "2");
    assert!(stats["cmd_set"].parse::<u64>().unwrap() >= 10);

    // Sent to every server.
    c.roundtrip(b"verbosity 1\r\n", b"OK\r\n");
    c.roundtrip(b"flush_all\r\n", b"OK\r\n");
    c.roundtrip(b"get k1 q\r\n", b"END\r\n");
    c.roundtrip(
        b"set k1 0 0 1\r\n1\r\nflush_all noreply\r\nget k1\r\n",
        b"STORED\r\nEND\r\n",
    );

    // quit: replies already due come first, then the connection closes.
    c.send(b"set last 0 0 1\r\nx\r\nget last\r\nquit\r\nget last\r\n");
    c.expect(b"STORED\r\nVALUE last 0 1\r\nx\r\nEND\r\n");
    assert!(c.is_closed());
}

#[test]
fn keys_land_where_cashew_route_says() {
    let p = Proxy::start(3, "  hash: murmur\n", &[]);
    let keys = keys(300, "placed");
    let mut c = p.client();
    for k in &keys {
        c.set(k, k.as_bytes());
    }
    let routed = p.routed(&keys);
    let mut direct: Vec<McConn> = p.backends.iter().map(|b| McConn::connect(b.addr)).collect();
    let mut per_server = [0; 3];
    for (k, &server) in keys.iter().zip(&routed) {
        for (i, d) in direct.iter_mut().enumerate() {
            assert_eq!(
                d.get(k).is_some(),
                i == server,
                "{k} should be on server {server} only"
            );
        }
        per_server[server] += 1;
    }
    assert!(per_server.iter().all(|&n| n > 50), "{per_server:?}");
}

#[test]
fn multi_get_merges_in_key_order_across_servers() {
    let p = Proxy::start(3, "  hash: md5\n", &[]);
    let mut c = p.client();
    let keys = keys(40, "multi");
    for (i, k) in keys.iter().enumerate() {
        if i % 3 != 0 {
            c.set(k, format!("v{i}").as_bytes());
        }
    }
    // Misses, duplicates and every server in one request.
    let mut asked: Vec<&str> = keys.iter().map(String::as_str).collect();
    asked.push(&keys[1]);
    asked.insert(0, &keys[2]);
    let request = format!("get {}\r\n", asked.join(" "));
    let mut expected = String::new();
    for k in &asked {
        let i: usize = k.rsplit(':').next().unwrap().parse().unwrap();
        if i % 3 != 0 {
            let v = format!("v{i}");
            expected.push_str(&format!("VALUE {k} 0 {}\r\n{v}\r\n", v.len()));
        }
    }
    expected.push_str("END\r\n");
    for _ in 0..3 {
        c.roundtrip(request.as_bytes(), expected.as_bytes());
    }
    assert_eq!(
        p.routed(&keys)
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        3
    );

    // gat and gats split the same way, the exptime kept in every fragment.
    let gat_request = format!("gat 300 {}\r\n", asked.join(" "));
    c.roundtrip(gat_request.as_bytes(), expected.as_bytes());
    c.send(format!("gats 300 {} {}\r\n", keys[1], keys[2]).as_bytes());
    for k in [&keys[1], &keys[2]] {
        let header = c.line();
        assert!(header.starts_with(&format!("VALUE {k} 0 ")), "{header}");
        c.line();
    }
    c.expect(b"END\r\n");

    // Each server touched counts one request per multi-get, and fragments are counted.
    let before = p.stats();
    c.roundtrip(request.as_bytes(), expected.as_bytes());
    let after = p.stats();
    for b in &p.backends {
        let name = b.addr.to_string();
        let d = after["pool"][&name]["requests"].as_u64().unwrap()
            - before["pool"][&name]["requests"].as_u64().unwrap();
        assert_eq!(d, 1, "{name}");
    }
    let fragments = after["pool"]["fragments"].as_u64().unwrap()
        - before["pool"]["fragments"].as_u64().unwrap();
    assert_eq!(fragments, 3);
}

#[test]
fn concurrent_clients_with_deep_pipelines_get_their_own_replies_in_order() {
    let p = Proxy::start(3, "", &["--threads", "4"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let version = p.server_version();
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let listen = p.listen;
            let version = version.clone();
            std::thread::spawn(move || {
                let mut c = McConn::connect(listen);
                for round in 0..10 {
                    assert!(Instant::now() < deadline, "took too long");
                    let mut request = Vec::new();
                    let mut expected = Vec::new();
                    for i in 0..200 {
                        let key = format!("c{t}:k{i}");
                        let value = format!("{t}-{round}-{i}");
                        match i % 5 {
                            0 | 1 => {
                                request.extend(
                                    format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).bytes(),
                                );
                                expected.extend(b"STORED\r\n");
                            }
                            2 => {
                                request.extend(format!("get {key} c{t}:k{}\r\n", i - 1).bytes());
                                let prev = format!("{t}-{round}-{}", i - 1);
                                let mut e = String::new();
                                if round > 0 {
                                    let v = format!("{t}-{}-{i}", round - 1);
                                    e.push_str(&format!("VALUE {key} 0 {}\r\n{v}\r\n", v.len()));
                                }
                                e.push_str(&format!(
                                    "VALUE c{t}:k{} 0 {}\r\n{prev}\r\nEND\r\n",
                                    i - 1,
                                    prev.len()
                                ));
                                expected.extend(e.bytes());
                                // Keep the key for the next round's get.
                                request.extend(
                                    format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).bytes(),
                                );
                                expected.extend(b"STORED\r\n");
                            }
                            3 => {
                                request.extend(format!("incr c{t}:n 1\r\n").bytes());
                                let n = round * 40 + i / 5;
                                expected.extend(
                                    if round == 0 && i == 3 {
                                        "NOT_FOUND\r\n".to_string()
                                    } else {
                                        format!("{n}\r\n")
                                    }
                                    .bytes(),
                                );
                                if round == 0 && i == 3 {
                                    request.extend(format!("set c{t}:n 0 0 1\r\n0\r\n").bytes());
                                    expected.extend(b"STORED\r\n");
                                }
                            }
                            _ => {
                                request.extend(b"version\r\nbogus\r\n");
                                expected.extend(version.bytes());
                                expected.extend(b"ERROR\r\n");
                            }
                        }
                    }
                    c.roundtrip(&request, &expected);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn big_values_and_many_tiny_ones() {
    let p = Proxy::start(2, "", &[]);
    let mut c = p.client();
    let big: Vec<u8> = (0..1024 * 1024 - 100).map(|i| (i % 251) as u8).collect();
    for i in 0..3 {
        let key = format!("big{i}");
        c.set(&key, &big);
        assert_eq!(c.get(&key).as_deref(), Some(&big[..]));
    }
    let mut request = Vec::new();
    let mut expected = Vec::new();
    for i in 0..5000 {
        request.extend(format!("set t{i} 0 0 1\r\n{}\r\n", i % 10).bytes());
        expected.extend(b"STORED\r\n");
    }
    let all: Vec<String> = (0..5000).map(|i| format!("t{i}")).collect();
    request.extend(format!("get {}\r\n", all.join(" ")).bytes());
    for i in 0..5000 {
        expected.extend(format!("VALUE t{i} 0 1\r\n{}\r\n", i % 10).bytes());
    }
    expected.extend(b"END\r\n");
    c.roundtrip(&request, &expected);

    // Over memcached's 1 MiB item size: refused by the server, which skips its
    // data; the connection stays usable.
    let too_big = vec![b'x'; 1024 * 1024 + 1];
    let mut request = format!("set huge 0 0 {}\r\n", too_big.len()).into_bytes();
    request.extend(&too_big);
    request.extend(b"\r\nget big0\r\n");
    c.send(&request);
    c.expect(b"SERVER_ERROR object too large for cache\r\n");
    assert_eq!(c.line(), format!("VALUE big0 0 {}\r\n", big.len()));
    c.read_exact(big.len() + 2);
    c.expect(b"END\r\n");
}

#[test]
fn bad_input_gets_an_answer_and_the_connection_stays_open() {
    let p = Proxy::start(2, "", &[]);
    let mut c = p.client();
    let long_key = "k".repeat(251);
    c.roundtrip(b"bogus command\r\n", b"ERROR\r\n");
    c.roundtrip(
        format!("get {long_key}\r\n").as_bytes(),
        b"CLIENT_ERROR bad command line format\r\n",
    );
    c.roundtrip(
        b"set k 0 0 notanumber\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    );
    // As memcached: no data block is read after a bad number, so its line is
    // taken as a command.
    c.roundtrip(
        b"set k x 0 1\r\nv\r\n",
        b"CLIENT_ERROR bad command line format\r\nERROR\r\n",
    );
    c.roundtrip(
        b"incr k abc\r\n",
        b"CLIENT_ERROR invalid numeric delta argument\r\n",
    );
    c.roundtrip(
        b"set k 0 0 1\r\nTOOLONG\r\n",
        b"CLIENT_ERROR bad data chunk\r\nERROR\r\n",
    );
    c.roundtrip(b"get\r\n", b"ERROR\r\n");
    c.roundtrip(b"incr k abc noreply\r\nset k 0 0 1\r\nv\r\n", b"STORED\r\n");
    c.roundtrip(b"get k\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n");
    let stats = p.stats();
    assert_eq!(stats["pool"]["client_err"], 0);

    // A line that never ends: memcached hangs up once 2 KiB came without a
    // newline (unless it is a multi-get), and so does cashew, counting it.
    let mut c = p.client();
    c.send(&vec![b'a'; 300 * 1024]);
    assert!(c.is_closed());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(p.stats()["pool"]["client_err"], 1);
    // A multi-get may be long, up to cashew's own limit of 256 KiB a line.
    let mut c = p.client();
    let mut long_get = b"get ".to_vec();
    long_get.resize(300 * 1024, b'k');
    c.send(&long_get);
    c.expect(b"CLIENT_ERROR line too long\r\n");
    assert!(c.is_closed());
}

#[test]
fn a_dead_backend_is_ejected_and_comes_back() {
    let backends: Vec<Process> = (0..3).map(|_| memcached()).collect();
    let victim_addr = backends[1].addr;
    let settings = "  hash: md5\n  auto_eject_hosts: true\n  server_failure_limit: 2\n  server_retry_timeout: 1500\n  timeout: 1000\n";
    let mut p = Proxy::over(backends, settings, &["--threads", "2"]);
    let keys = keys(200, "eject");
    let routed = p.routed(&keys);
    let victim_keys: Vec<&String> = keys
        .iter()
        .zip(&routed)
        .filter(|(_, &s)| s == 1)
        .map(|(k, _)| k)
        .collect();
    assert!(!victim_keys.is_empty());
    let mut c = p.client();
    for k in &keys {
        c.set(k, b"1");
    }

    // Kill it: requests to it fail with a server error until the second failure
    // event (its connection closing counts as one, a refused reconnection as the
    // next) ejects it; its keys then go to the others.
    drop(p.backends.remove(1));
    let mut errors = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        assert!(Instant::now() < deadline, "the dead server was not ejected");
        c.send(format!("get {}\r\n", victim_keys[0]).as_bytes());
        let line = c.line();
        if line == "END\r\n" {
            break;
        }
        assert!(line.starts_with("SERVER_ERROR "), "{line}");
        errors += 1;
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(
        (1..=3).contains(&errors),
        "{errors} failed requests before the ejection"
    );
    // Ejection is shared: clients on every worker see the server gone at once.
    for _ in 0..8 {
        let mut other = p.client();
        other.roundtrip(format!("get {}\r\n", victim_keys[0]).as_bytes(), b"END\r\n");
    }
    for k in &victim_keys {
        c.roundtrip(format!("set {k} 0 0 1\r\n2\r\n").as_bytes(), b"STORED\r\n");
        c.roundtrip(
            format!("get {k}\r\n").as_bytes(),
            format!("VALUE {k} 0 1\r\n2\r\nEND\r\n").as_bytes(),
        );
    }
    let stats = p.stats();
    assert_eq!(stats["pool"]["server_ejects"], 1);
    assert!(
        stats["pool"][&victim_addr.to_string()]["server_ejected_at"]
            .as_u64()
            .unwrap()
            > 0
    );
    // The other servers' keys never moved.
    for (k, &s) in keys.iter().zip(&routed) {
        if s != 1 {
            c.roundtrip(
                format!("get {k}\r\n").as_bytes(),
                format!("VALUE {k} 0 1\r\n1\r\nEND\r\n").as_bytes(),
            );
        }
    }

    // Back on the same port: after the retry timeout its keys return to it.
    let revived = memcached_on("127.0.0.1", victim_addr.port());
    std::thread::sleep(Duration::from_millis(1700));
    c.roundtrip(
        format!("set {} 0 0 1\r\n3\r\n", victim_keys[0]).as_bytes(),
        b"STORED\r\n",
    );
    let mut direct = McConn::connect(revived.addr);
    assert_eq!(direct.get(victim_keys[0]).as_deref(), Some(&b"3"[..]));
}

#[test]
fn a_crash_seen_by_every_worker_counts_as_one_failure() {
    let settings = "  hash: md5\n  auto_eject_hosts: true\n  server_failure_limit: 2\n  server_retry_timeout: 30000\n";
    let p = Proxy::start(2, settings, &["--threads", "2"]);
    let keys = keys(100, "crash");
    let victim_key = &keys[p.routed(&keys).iter().position(|&s| s == 1).unwrap()];
    let victim = p.backends[1].addr.to_string();
    // Clients until both workers hold a connection to the server.
    let mut clients = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.stats()["pool"][&victim]["server_connections"] != 2 {
        assert!(
            Instant::now() < deadline,
            "the workers did not both connect"
        );
        let mut c = p.client();
        c.roundtrip(format!("get {victim_key}\r\n").as_bytes(), b"END\r\n");
        clients.push(c);
    }

    // Both connections see the crash: one failure, not the two that eject.
    p.backends[1].signal("KILL");
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.stats()["pool"][&victim]["server_connections"] != 0 {
        assert!(
            Instant::now() < deadline,
            "the connections did not see the crash"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = p.stats();
    assert_eq!(stats["pool"][&victim]["server_eof"], 2);
    assert_eq!(stats["pool"]["server_ejects"], 0);
    // The next failure, a refused reconnection, is the second: it ejects.
    let c = &mut clients[0];
    c.send(format!("get {victim_key}\r\n").as_bytes());
    assert!(c.line().starts_with("SERVER_ERROR "));
    assert_eq!(p.stats()["pool"]["server_ejects"], 1);
    c.roundtrip(format!("get {victim_key}\r\n").as_bytes(), b"END\r\n");
}

#[test]
fn a_frozen_backend_times_out_without_failing_the_others() {
    let p = Proxy::start(2, "  hash: md5\n  timeout: 300\n", &["--threads", "1"]);
    let keys = keys(100, "frozen");
    let routed = p.routed(&keys);
    let frozen_key = &keys[routed.iter().position(|&s| s == 0).unwrap()];
    let live_key = &keys[routed.iter().position(|&s| s == 1).unwrap()];
    let mut c = p.client();
    c.set(live_key, b"ok");

    p.backends[0].freeze();
    let started = Instant::now();
    c.send(format!("get {frozen_key}\r\n").as_bytes());
    let mut other = p.client();
    other.roundtrip(
        format!("get {live_key}\r\n").as_bytes(),
        format!("VALUE {live_key} 0 2\r\nok\r\nEND\r\n").as_bytes(),
    );
    c.expect(b"SERVER_ERROR Connection timed out\r\n");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(280) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // The client connection stays usable.
    c.roundtrip(
        format!("get {live_key}\r\n").as_bytes(),
        format!("VALUE {live_key} 0 2\r\nok\r\nEND\r\n").as_bytes(),
    );
    p.backends[0].signal("CONT");
    assert_eq!(
        p.stats()["pool"][&p.backends[0].addr.to_string()]["server_timedout"],
        1
    );
    std::thread::sleep(Duration::from_millis(100));
    c.roundtrip(
        format!("set {frozen_key} 0 0 1\r\nx\r\n").as_bytes(),
        b"STORED\r\n",
    );
}

#[test]
fn stats_port_serves_nutcracker_json() {
    let p = Proxy::start(2, "", &[]);
    let mut c = p.client();
    for i in 0..10 {
        c.set(&format!("s{i}"), b"v");
    }
    let doc = p.stats();
    assert_eq!(doc["service"], "nutcracker");
    for field in [
        "source",
        "version",
        "uptime",
        "timestamp",
        "total_connections",
        "curr_connections",
    ] {
        assert!(!doc[field].is_null(), "{field} missing: {doc}");
    }
    assert_eq!(doc["curr_connections"], 1);
    let pool = &doc["pool"];
    for field in NUTCRACKER_POOL_STATS {
        assert!(pool[field].is_u64(), "{field} missing: {pool}");
    }
    assert_eq!(pool["client_connections"], 1);
    let mut requests = 0;
    for b in &p.backends {
        let server = &pool[&b.addr.to_string()];
        for field in NUTCRACKER_SERVER_STATS {
            assert!(server[field].is_u64(), "{field} missing: {server}");
        }
        requests += server["requests"].as_u64().unwrap();
        assert_eq!(server["requests"], server["responses"]);
    }
    assert_eq!(requests, 10);
    drop(c);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(p.stats()["pool"]["client_eof"], 1);
}

#[test]
fn threads_flag_runs_that_many_workers() {
    let p = Proxy::start(1, "", &["--threads", "4"]);
    let workers = || {
        std::fs::read_dir(format!("/proc/{}/task", p.cashew.process.pid()))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
            .filter(|name| name.starts_with("cashew-w"))
            .count()
    };
    // Threads start just after the sockets are bound: give them a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while workers() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let state = std::fs::read_to_string(format!("/proc/{}/status", p.cashew.process.pid()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("State:"))
        .unwrap_or("")
        .to_string();
    assert_eq!(workers(), 4, "process {state}; log:\n{}", p.cashew.log());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(workers(), 4, "no more than asked for");
}

#[test]
fn client_connections_limit_is_enforced() {
    let p = Proxy::start(1, "  client_connections: 2\n", &["--threads", "1"]);
    let mut a = p.client();
    let mut b = p.client();
    let version = p.server_version();
    assert!(version.starts_with("VERSION 1."), "{version}");
    a.roundtrip(b"version\r\n", version.as_bytes());
    b.roundtrip(b"version\r\n", version.as_bytes());
    let mut over = p.client();
    over.expect(b"SERVER_ERROR too many connections\r\n");
    assert!(over.is_closed());
    drop(a);
    std::thread::sleep(Duration::from_millis(100));
    let mut again = p.client();
    again.roundtrip(b"version\r\n", version.as_bytes());
}

#[test]
fn a_memcached_client_library_works_through_cashew() {
    let p = Proxy::start(3, "", &[]);
    let client =
        memcache::Client::connect(format!("memcache://{}?protocol=ascii", p.listen)).unwrap();
    client.set("lib:a", "alpha", 0).unwrap();
    client.set("lib:n", 41u64, 0).unwrap();
    assert_eq!(
        client.get::<String>("lib:a").unwrap().as_deref(),
        Some("alpha")
    );
    assert_eq!(client.increment("lib:n", 1).unwrap(), 42);
    client.add("lib:a", "other", 0).unwrap();
    client.add("lib:b", "beta", 0).unwrap();
    assert_eq!(
        client.get::<String>("lib:b").unwrap().as_deref(),
        Some("beta")
    );
    client.append("lib:a", "bet").unwrap();
    let many: HashMap<String, String> = client.gets(&["lib:a", "lib:none", "lib:n"]).unwrap();
    assert_eq!(many.get("lib:a").map(String::as_str), Some("alphabet"));
    assert_eq!(many.get("lib:n").map(String::as_str), Some("42"));
    assert!(!many.contains_key("lib:none"));
    assert!(client.touch("lib:a", 100).unwrap());
    assert!(client.delete("lib:a").unwrap());
    assert_eq!(client.get::<String>("lib:a").unwrap(), None);
    let versions = client.version().unwrap();
    assert_eq!(format!("VERSION {}\r\n", versions[0].1), p.server_version());
    client.flush().unwrap();
    assert_eq!(client.get::<u64>("lib:n").unwrap(), None);
}

#[test]
fn preconnect_opens_server_connections_at_start() {
    let p = Proxy::start(
        2,
        "  preconnect: true\n  server_connections: 2\n",
        &["--threads", "2"],
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = p.stats();
        let open: Vec<u64> = p
            .backends
            .iter()
            .map(|b| {
                stats["pool"][&b.addr.to_string()]["server_connections"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        // Two connections per server in each of two workers, before any request.
        if open == [4, 4] {
            break;
        }
        assert!(Instant::now() < deadline, "server connections: {open:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn max_value_size_is_per_pool() {
    let p = Proxy::start(1, "  max_value_size: 100\n", &[]);
    let mut c = p.client();
    c.roundtrip(
        &[b"set a 0 0 100\r\n".as_slice(), &[b'x'; 100], b"\r\n"].concat(),
        b"STORED\r\n",
    );
    c.roundtrip(
        &[
            b"set b 0 0 101\r\n".as_slice(),
            &[b'x'; 101],
            b"\r\nget b\r\n",
        ]
        .concat(),
        b"SERVER_ERROR object too large for cache\r\nEND\r\n",
    );
}

#[test]
fn a_failed_fragment_fails_the_multi_get_but_not_the_connection() {
    let p = Proxy::start(2, "  hash: md5\n  timeout: 200\n", &["--threads", "1"]);
    let keys = keys(50, "frag");
    let routed = p.routed(&keys);
    let a = &keys[routed.iter().position(|&s| s == 0).unwrap()];
    let b = &keys[routed.iter().position(|&s| s == 1).unwrap()];
    let mut c = p.client();
    c.set(a, b"1");
    c.set(b, b"2");
    p.backends[1].freeze();
    c.roundtrip(
        format!("get {a} {b}\r\n").as_bytes(),
        b"SERVER_ERROR Connection timed out\r\n",
    );
    p.backends[1].signal("CONT");
    c.roundtrip(
        format!("get {a}\r\n").as_bytes(),
        format!("VALUE {a} 0 1\r\n1\r\nEND\r\n").as_bytes(),
    );
    assert!(p.stats()["pool"]["forward_error"].as_u64().unwrap() >= 1);
}

#[test]
fn unix_socket_listen_with_mode() {
    let backend = memcached();
    let dir = cashew_testkit::temp_dir("unix");
    let sock = dir.join("cashew.sock");
    let yaml = format!(
        "alpha:\n  listen: {} 0600\n  servers:\n    - {}:1\n",
        sock.display(),
        backend.addr
    );
    let _cashew = Cashew::start(CASHEW, &yaml, &["--threads", "2"]);
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"set u 0 0 2\r\nhi\r\nget u\r\n").unwrap();
    let expected = b"STORED\r\nVALUE u 0 2\r\nhi\r\nEND\r\n";
    let mut got = vec![0; expected.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, expected);
}

#[test]
fn meta_requests_over_three_servers_keep_quiet_mode_and_opaques_in_order() {
    let p = Proxy::start(3, "  hash: md5\n", &[]);
    // Keys on three different servers.
    let candidates = keys(60, "meta");
    let placed = p.routed(&candidates);
    let pick = |server: usize| {
        let i = placed
            .iter()
            .position(|&s| s == server)
            .expect("a key on each server");
        candidates[i].clone()
    };
    let (a, b, c) = (pick(0), pick(1), pick(2));
    let pipeline = format!(
        "ms {a} 2 q O1 T0\r\naa\r\nms {b} 2 O2\r\nbb\r\nmg {a} v q O3\r\nmg {c}:none v q O4\r\n\
         get {a} {b}\r\nmg {b} v O5 k\r\nmd {a} q\r\nmg {a} v\r\nset {c} 7 0 2\r\ncc\r\n\
         mg {c} v f q O6\r\nma {c}:n N0 J10 v\r\nma {c}:n q\r\nmg {c}:n v\r\nmn\r\nversion\r\n"
    );
    let reference = memcached();
    let mut direct = McConn::connect(reference.addr);
    direct.send(pipeline.as_bytes());
    let expected = {
        // Read the direct reply up to the final VERSION line.
        let mut all = Vec::new();
        loop {
            let line = direct.line();
            all.extend_from_slice(line.as_bytes());
            if line.starts_with("VERSION ") {
                break all;
            }
        }
    };
    let mut through = p.client();
    through.send(pipeline.as_bytes());
    let got = through.read_exact(expected.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected)
    );
    let text = String::from_utf8(got).unwrap();
    assert!(
        text.starts_with(&format!(
            "HD O2\r\nVA 2 O3\r\naa\r\nVALUE {a} 0 2\r\naa\r\nVALUE {b} 0 2\r\nbb\r\nEND\r\n"
        )),
        "{text}"
    );
    assert!(
        !text.contains("O1") && !text.contains("O4"),
        "quiet successes and misses stay silent"
    );
    assert!(
        text.contains("MN\r\nVERSION "),
        "mn answers after everything before it"
    );
    // The servers hold their keys (a was deleted by the pipeline).
    for (server, key) in [(1, &b), (2, &c)] {
        let mut s = McConn::connect(p.backends[server].addr);
        s.send(format!("mg {key} v\r\n").as_bytes());
        let reply = s.line();
        assert_ne!(reply, "EN\r\n", "{key} on server {server}");
    }
}

/// memcached answers every pipelined `get` with a write of its own, and a multi-key
/// `get` with one: consecutive single-key gets for a server go to it joined, and each
/// still gets its own reply, exactly what the server would have given it alone.
#[test]
fn consecutive_gets_reach_the_server_joined_and_each_gets_its_own_reply() {
    for coalesce in [true, false] {
        let (server, link, cashew, listen) = recorded(coalesce);
        let mut direct = McConn::connect(server.addr);
        direct.roundtrip(
            b"set a 0 0 1\r\nA\r\nset c 3 0 2\r\nCC\r\n",
            b"STORED\r\nSTORED\r\n",
        );
        let cas = |direct: &mut McConn, key: &str| {
            direct.send(format!("gets {key}\r\n").as_bytes());
            let line = direct.line();
            direct.read_exact(line.split(' ').nth(3).unwrap().parse::<usize>().unwrap() + 7);
            line.trim_end().rsplit(' ').next().unwrap().to_string()
        };
        let (cas_a, cas_c) = (cas(&mut direct, "a"), cas(&mut direct, "c"));

        let pipeline = "get a\r\nget b\r\nget a\r\nget c\r\ngets a\r\ngets zz\r\ngets c\r\n\
                        set d 0 0 1\r\nD\r\nget d\r\nget a\r\nget a b c\r\nget c\r\n";
        let a = "VALUE a 0 1\r\nA\r\n";
        let c = "VALUE c 3 2\r\nCC\r\n";
        let expected = format!(
            "{a}END\r\nEND\r\n{a}END\r\n{c}END\r\n\
             VALUE a 0 1 {cas_a}\r\nA\r\nEND\r\nEND\r\nVALUE c 3 2 {cas_c}\r\nCC\r\nEND\r\n\
             STORED\r\nVALUE d 0 1\r\nD\r\nEND\r\n{a}END\r\n{a}{c}END\r\n{c}END\r\n"
        );
        let mut client = McConn::connect(listen);
        client.send(pipeline.as_bytes());
        let got = client.read_exact(expected.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            expected,
            "coalesce_gets: {coalesce}"
        );

        let seen = String::from_utf8_lossy(&link.requests()).into_owned();
        let sent = match coalesce {
            true => "get a b a c\r\ngets a zz c\r\nset d 0 0 1\r\nD\r\nget d a\r\nget a b c\r\nget c\r\n",
            false => pipeline,
        };
        assert!(
            seen.ends_with(sent),
            "coalesce_gets: {coalesce}, the server saw {seen:?}"
        );
        drop(cashew);
    }
}

/// cashew with one worker over one memcached that it reaches through a relay that
/// records what it sends, its server connection open (the first request on a new
/// connection goes out as it opens, alone).
fn recorded(coalesce: bool) -> (Process, FaultyLink, Cashew, std::net::SocketAddr) {
    let server = memcached();
    let link = FaultyLink::start(server.addr);
    let listen = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let yaml = format!(
        "pool:\n  listen: {listen}\n  coalesce_gets: {coalesce}\n  servers:\n    - {}:1\n",
        link.addr
    );
    let cashew = Cashew::start(CASHEW, &yaml, &["--threads", "1"]);
    let listen = listen.parse().unwrap();
    McConn::connect(listen).roundtrip(b"get warm\r\n", b"END\r\n");
    (server, link, cashew, listen)
}

/// Splitting a joined reply copies its values, which costs more than joining saves
/// for large ones: after a joined reply with a large value, the next 64 retrievals go
/// out unjoined, then joining resumes.
#[test]
fn a_large_value_pauses_joining_for_64_retrievals() {
    let (server, link, _cashew, listen) = recorded(true);
    let big = "x".repeat(20_000);
    McConn::connect(server.addr).roundtrip(
        format!("set big 0 0 {}\r\n{big}\r\nset a 0 0 1\r\nA\r\n", big.len()).as_bytes(),
        b"STORED\r\nSTORED\r\n",
    );
    let mut client = McConn::connect(listen);
    let a = "VALUE a 0 1\r\nA\r\nEND\r\n";
    let mut step = |requests: &str, replies: &str, server_saw: &str| {
        client.roundtrip(requests.as_bytes(), replies.as_bytes());
        let seen = String::from_utf8_lossy(&link.requests()).into_owned();
        assert!(
            seen.ends_with(server_saw),
            "after {requests:?} the server saw ...{:?}",
            &seen[seen.len().saturating_sub(80)..]
        );
    };
    step("get a\r\nget b\r\n", &format!("{a}END\r\n"), "get a b\r\n");
    step(
        "get big\r\nget a\r\n",
        &format!("VALUE big 0 {}\r\n{big}\r\nEND\r\n{a}", big.len()),
        "get big a\r\n",
    );
    step(
        "get a\r\nget b\r\n",
        &format!("{a}END\r\n"),
        "get a\r\nget b\r\n",
    );
    let sixty_two = "get b\r\n".repeat(62);
    step(&sixty_two, &"END\r\n".repeat(62), &sixty_two);
    step("get a\r\nget b\r\n", &format!("{a}END\r\n"), "get a b\r\n");
}
