//! cashew in front of real memcached servers: every command, placement, pipelines,
//! big values, bad input, failures and a client library.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cashew_testkit::{memcached, memcached_on, McConn, PoolProxy, Process};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn keys(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("{tag}:{i}")).collect()
}

#[test]
fn every_command_through_three_servers() {
    let p = PoolProxy::memcached(CASHEW, 3, "", &[]);
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
    let p = PoolProxy::memcached(CASHEW, 3, "  hash: murmur\n", &[]);
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
    let p = PoolProxy::memcached(CASHEW, 3, "  hash: md5\n", &[]);
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
    let p = PoolProxy::memcached(CASHEW, 3, "", &["--threads", "4"]);
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
    let p = PoolProxy::memcached(CASHEW, 2, "", &[]);
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
    let p = PoolProxy::memcached(CASHEW, 2, "", &[]);
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
    let mut p = PoolProxy::start(CASHEW, backends, settings, &["--threads", "2"]);
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
    let p = PoolProxy::memcached(CASHEW, 2, settings, &["--threads", "2"]);
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
    let p = PoolProxy::memcached(
        CASHEW,
        2,
        "  hash: md5\n  timeout: 300\n",
        &["--threads", "1"],
    );
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
fn a_memcached_client_library_works_through_cashew() {
    let p = PoolProxy::memcached(CASHEW, 3, "", &[]);
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
