//! Shadow traffic against real memcached: a pool copies its requests to a shadow
//! pool and compares the replies to reads, without the client ever waiting for
//! the shadow.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use cashew_testkit::{free_port, memcached, AdminApi, Cashew, McConn, Process};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

struct Shadowed {
    primary: Vec<Process>,
    mirror: Vec<Process>,
    cashew: Cashew,
    /// The shadowed pool, and a pool over the same servers without a shadow.
    main: SocketAddr,
    plain: SocketAddr,
    /// The shadow pool's own listener.
    mirror_listen: SocketAddr,
    api: AdminApi,
}

/// `main` (2 servers) shadowed by `mirror` (2 other servers) with `shadow`'s
/// settings; `plain` serves main's servers without a shadow.
fn start(shadow: &str, mirror_settings: &str) -> Shadowed {
    let (primary, mirror) = (
        vec![memcached(), memcached()],
        vec![memcached(), memcached()],
    );
    let (main, plain, mirror_listen) = (
        local(free_port("127.0.0.1")),
        local(free_port("127.0.0.1")),
        local(free_port("127.0.0.1")),
    );
    let admin = local(free_port("127.0.0.1"));
    let servers =
        |s: &[Process]| -> String { s.iter().map(|p| format!("    - {}:1\n", p.addr)).collect() };
    let yaml = format!(
        "main:\n  listen: {main}\n  shadow:\n{shadow}  servers:\n{}\
         plain:\n  listen: {plain}\n  servers:\n{}\
         mirror:\n  listen: {mirror_listen}\n{mirror_settings}  servers:\n{}",
        servers(&primary),
        servers(&primary),
        servers(&mirror),
    );
    let cashew = Cashew::start(
        CASHEW,
        &yaml,
        &["--threads", "2", "--admin", &admin.to_string()],
    );
    Shadowed {
        primary,
        mirror,
        cashew,
        main,
        plain,
        mirror_listen,
        api: AdminApi::new(admin, None),
    }
}

fn counter(cashew: &Cashew, name: &str) -> u64 {
    let stats: serde_json::Value = serde_json::from_str(&cashew.stats_json()).unwrap();
    stats["main"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in main's stats: {stats}"))
}

fn keys(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("shadow:{i}"), format!("value-{i}")))
        .collect()
}

/// `total` single-key gets over `conns` connections, `depth` in flight on each,
/// checking each reply; stops at `limit`. The gets done.
fn pipelined_gets(
    addr: SocketAddr,
    pairs: &[(String, String)],
    total: usize,
    limit: Duration,
) -> usize {
    let (conns, depth) = (4, 50);
    let deadline = Instant::now() + limit;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..conns)
            .map(|c| {
                scope.spawn(move || {
                    let mut stream = TcpStream::connect(addr).unwrap();
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut done = 0;
                    let mut line = String::new();
                    while done < total / conns && Instant::now() < deadline {
                        let batch: Vec<&(String, String)> = (0..depth)
                            .map(|i| &pairs[(c * 7919 + done + i) % pairs.len()])
                            .collect();
                        let requests: String =
                            batch.iter().map(|(k, _)| format!("get {k}\r\n")).collect();
                        stream.write_all(requests.as_bytes()).unwrap();
                        for (key, value) in batch {
                            line.clear();
                            reader.read_line(&mut line).unwrap();
                            assert_eq!(line, format!("VALUE {key} 0 {}\r\n", value.len()));
                            line.clear();
                            reader.read_line(&mut line).unwrap();
                            assert_eq!(line.trim_end(), value);
                            line.clear();
                            reader.read_line(&mut line).unwrap();
                            assert_eq!(line, "END\r\n");
                        }
                        done += depth;
                    }
                    done
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    })
}

/// The 99th percentile of single gets, one at a time, for `duration`.
fn p99_of_gets(addr: SocketAddr, key: &str, value: &str, duration: Duration) -> (Duration, usize) {
    let mut c = McConn::connect(addr);
    let expected = format!("VALUE {key} 0 {}\r\n{value}\r\nEND\r\n", value.len());
    let mut times = Vec::new();
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let start = Instant::now();
        c.roundtrip(format!("get {key}\r\n").as_bytes(), expected.as_bytes());
        times.push(start.elapsed());
    }
    times.sort();
    (times[times.len() * 99 / 100], times.len())
}

#[test]
fn an_identical_shadow_never_mismatches_and_a_stopped_one_costs_the_clients_nothing() {
    let s = start(
        "    pool: mirror\n    fraction: 1.0\n    commands: all\n",
        "  timeout: 500\n  server_failure_limit: 1000\n",
    );
    // Written through the shadowed pool: with `commands: all` the shadow gets the
    // same writes.
    let pairs = keys(1000);
    McConn::connect(s.main).set_many(&pairs, 0);
    let on_mirror = |mirror: &[Process]| -> usize {
        let names: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
        mirror
            .iter()
            .map(|m| McConn::connect(m.addr).get_many(&names).len())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while on_mirror(&s.mirror) < pairs.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        on_mirror(&s.mirror),
        pairs.len(),
        "writes are copied to the shadow"
    );
    let requests_before = counter(&s.cashew, "shadow_requests");

    let reads = pipelined_gets(s.main, &pairs, 100_000, Duration::from_secs(60));
    assert_eq!(reads, 100_000, "the reads finish in time");
    let settled = Instant::now() + Duration::from_secs(5);
    while counter(&s.cashew, "shadow_requests") - requests_before < 100_000
        && Instant::now() < settled
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (requests, mismatches, dropped) = (
        counter(&s.cashew, "shadow_requests") - requests_before,
        counter(&s.cashew, "shadow_mismatches"),
        counter(&s.cashew, "shadow_dropped"),
    );
    println!("{reads} reads: {requests} copied to the shadow, {mismatches} mismatches, {dropped} dropped");
    assert_eq!(mismatches, 0, "{:?}", s.api.get("/shadow").1);
    assert_eq!(requests + dropped, 100_000);
    assert!(requests >= 99_000, "{requests} of 100000 copied");

    // The client's latency with the shadow, without it (same servers), and with
    // the shadow's servers stopped.
    let (key, value) = &pairs[0];
    let (with, n_with) = p99_of_gets(s.main, key, value, Duration::from_secs(2));
    let (without, n_without) = p99_of_gets(s.plain, key, value, Duration::from_secs(2));
    for m in &s.mirror {
        m.freeze();
    }
    let dropped_before = counter(&s.cashew, "shadow_dropped");
    let (stopped, n_stopped) = p99_of_gets(s.main, key, value, Duration::from_secs(2));
    let dropped_stopped = counter(&s.cashew, "shadow_dropped") - dropped_before;
    for m in &s.mirror {
        m.signal("CONT");
    }
    println!(
        "p99 of gets one at a time: {with:?} ({n_with}) shadowed, {without:?} ({n_without}) without a shadow, {stopped:?} ({n_stopped}) with the shadow's servers stopped ({dropped_stopped} copies dropped)"
    );
    assert!(
        dropped_stopped > 0,
        "a stopped shadow's copies are dropped beyond the limit"
    );
    // Generous bounds: these machines are shared; what must not happen is a client
    // waiting for the shadow (it would wait 500 ms, the shadow's timeout).
    assert!(
        with <= without * 5 + Duration::from_millis(5),
        "{with:?} vs {without:?}"
    );
    assert!(
        stopped <= without * 5 + Duration::from_millis(20),
        "{stopped:?} vs {without:?}"
    );
    assert!(
        n_stopped > 1000,
        "only {n_stopped} gets in 2 s with the shadow stopped"
    );
    drop(s.primary);
}

#[test]
fn a_shadow_that_answers_otherwise_is_counted_and_shown() {
    let s = start("    pool: mirror\n    fraction: 1.0\n", "");
    let pairs = keys(40);
    // Written to the pool only (reads are shadowed, writes not): the shadow misses
    // every key, and some it holds with another value.
    McConn::connect(s.main).set_many(&pairs, 0);
    let mut mirror = McConn::connect(s.mirror_listen);
    let mut mirror_pairs = pairs[..10].to_vec();
    for (_, v) in &mut mirror_pairs {
        v.push_str("-other");
    }
    mirror.set_many(&mirror_pairs, 0);
    // Keys 10..20 agree.
    mirror.set_many(&pairs[10..20], 0);

    let names: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
    let got = McConn::connect(s.main).get_many(&names);
    assert_eq!(got.len(), 40, "the client gets the pool's values");
    assert!(pairs.iter().all(|(k, v)| &got[k] == v));

    let deadline = Instant::now() + Duration::from_secs(5);
    while counter(&s.cashew, "shadow_mismatches") < 30 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        counter(&s.cashew, "shadow_mismatches"),
        30,
        "10 other values, 20 misses"
    );
    let (status, report) = s.api.get("/shadow");
    assert_eq!(status, 200);
    let pool = &report["pools"][0];
    assert_eq!(pool["pool"], "main");
    assert_eq!(pool["shadow_pool"], "mirror");
    assert_eq!(pool["commands"], "reads");
    assert_eq!(pool["mismatches"], 30);
    let shown = report["mismatches"].as_array().unwrap();
    assert!(!shown.is_empty() && shown.len() <= 64, "{report}");
    for m in shown {
        let key = m["key"].as_str().unwrap();
        let i: usize = key.strip_prefix("shadow:").unwrap().parse().unwrap();
        assert!(!(10..20).contains(&i), "key {key} agreed: {m}");
        assert!(m["primary"].as_str().unwrap().starts_with("hit"), "{m}");
        let expected = if i < 10 { "hit" } else { "miss" };
        assert!(m["shadow"].as_str().unwrap().starts_with(expected), "{m}");
        assert_eq!(m["command"], "get");
    }
    let metrics = s.api.get_text("/metrics").1;
    assert!(
        metrics.lines().any(|l| l.contains("shadow_mismatches")
            && l.contains("pool=\"main\"")
            && l.ends_with(" 30")),
        "{metrics}"
    );
}
