//! Pool and process settings of memcached pools at work: the stats port, worker
//! threads, client_connections, preconnect, max_value_size, a unix socket listener.

use std::time::{Duration, Instant};

use cashew_testkit::{
    memcached, Cashew, PoolProxy, NUTCRACKER_POOL_STATS, NUTCRACKER_SERVER_STATS,
};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

#[test]
fn stats_port_serves_nutcracker_json() {
    let p = PoolProxy::memcached(CASHEW, 2, "", &[]);
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
    let p = PoolProxy::memcached(CASHEW, 1, "", &["--threads", "4"]);
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
    let p = PoolProxy::memcached(CASHEW, 1, "  client_connections: 2\n", &["--threads", "1"]);
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
fn preconnect_opens_server_connections_at_start() {
    let p = PoolProxy::memcached(
        CASHEW,
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
    let p = PoolProxy::memcached(CASHEW, 1, "  max_value_size: 100\n", &[]);
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
