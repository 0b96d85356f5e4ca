//! What an operator sees: `/metrics` read by a real Prometheus parser after a known
//! workload against real servers, hot keys, the slow log and `cashew top`.

use std::io::BufReader;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cashew_testkit::{cashew_route, free_port, memcached, AdminApi, Cashew, McConn};

mod support;

use support::*;

/// One sample of the metrics.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    value: f64,
}

/// `/metrics`, parsed by prometheus_client's strict OpenMetrics parser.
fn scrape(admin: &AdminApi) -> Vec<Sample> {
    let (status, text) = admin.get_text("/metrics");
    assert_eq!(status, 200, "{text}");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/parse_metrics.py");
    let out = cashew_testkit::run_with_input(
        Command::new(cashew_testkit::python()).arg(script),
        text.as_bytes(),
    );
    assert!(
        out.status.success(),
        "the parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Sample {
                name: v["name"].as_str().unwrap().to_string(),
                labels: v["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect(),
                value: v["value"].as_f64().unwrap(),
            }
        })
        .collect()
}

/// The value of the sample `name` with (at least) `labels`, summed when several
/// match; panics when none does.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .collect();
    assert!(!matching.is_empty(), "no {name} {labels:?}");
    matching.iter().map(|s| s.value).sum()
}

#[test]
fn metrics_count_a_known_workload() {
    let rig = two_pools("", ["a", "b", "r"]);
    let (cashew, mc_listen, rd_listen) = (&rig.cashew, rig.mc_listen, rig.rd_listen);
    let admin = AdminApi::new(rig.admin_addr, None);

    // memcached: M sets, N single-key gets of which H hit, one multi-get of ten
    // stored keys, E unknown commands and R refused ones.
    let (m, misses, e, r) = (20, 30, 5, 2);
    let mut c = McConn::connect(format!("127.0.0.1:{mc_listen}").parse().unwrap());
    let stored: Vec<String> = (0..m).map(|i| format!("k{i}")).collect();
    for key in &stored {
        c.set(key, b"v");
    }
    for key in &stored {
        assert!(c.get(key).is_some());
    }
    for i in 0..misses {
        assert!(c.get(&format!("missing{i}")).is_none());
    }
    let multi = &stored[..10];
    assert_eq!(c.get_many(multi).len(), 10);
    for _ in 0..e {
        c.roundtrip(b"frobnicate\r\n", b"ERROR\r\n");
    }
    for _ in 0..r {
        c.send(b"slabs reassign 1 2\r\n");
        assert!(c.line().starts_with("ERROR not supported by the proxy"));
    }
    // The servers the multi-get went to.
    let conf = cashew.dir.join("cashew.yml");
    let mut servers = cashew_route(CASHEW, &conf, Some("cache"), multi);
    servers.sort();
    servers.dedup();
    let parts = servers.len() as f64;

    // redis: 3 reads, 2 writes, 1 split, 1 local, 1 refused, 1 unknown.
    let mut s = TcpStream::connect(("127.0.0.1", rd_listen)).unwrap();
    let mut rr = BufReader::new(s.try_clone().unwrap());
    redis_roundtrip(&mut s, &mut rr, "SET a 1\r\nSET b 2\r\n", 2);
    redis_roundtrip(&mut s, &mut rr, "GET a\r\nGET b\r\nGET c\r\n", 5);
    redis_roundtrip(&mut s, &mut rr, "MGET a b c\r\n", 6);
    redis_roundtrip(
        &mut s,
        &mut rr,
        "PING\r\nCONFIG GET save\r\nNOSUCH x\r\n",
        3,
    );

    // Replies are counted as they are written: wait for the last one.
    let deadline = Instant::now() + Duration::from_secs(5);
    let samples = loop {
        let samples = scrape(&admin);
        let replies = value(&samples, "cashew_replies_total", &[("pool", "sessions")]);
        if replies == 9.0 || Instant::now() > deadline {
            break samples;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let v = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels);
    let cache = ("pool", "cache");
    let gets = (m + misses + 1) as f64;
    assert_eq!(
        v("cashew_requests_total", &[cache, ("family", "set")]),
        m as f64
    );
    assert_eq!(
        v("cashew_requests_total", &[cache, ("family", "get")]),
        gets
    );
    assert_eq!(v("cashew_get_hits_total", &[cache]), (m + 10) as f64);
    assert_eq!(v("cashew_get_misses_total", &[cache]), misses as f64);
    assert_eq!(
        v("cashew_errors_total", &[cache, ("kind", "unsupported")]),
        e as f64
    );
    assert_eq!(
        v("cashew_errors_total", &[cache, ("kind", "refused")]),
        r as f64
    );
    assert_eq!(
        v("cashew_errors_total", &[cache, ("kind", "server_error")]),
        0.0
    );
    let replies = (m + misses + m + 1 + e + r) as f64;
    assert_eq!(v("cashew_replies_total", &[cache]), replies);
    let set_replies = v("cashew_family_replies_total", &[cache, ("family", "set")]);
    assert_eq!(set_replies, m as f64);
    let get_replies = v("cashew_family_replies_total", &[cache, ("family", "get")]);
    assert_eq!(get_replies, gets);
    assert_eq!(v("cashew_client_latency_seconds_count", &[cache]), replies);
    assert_eq!(
        v(
            "cashew_client_latency_seconds_bucket",
            &[cache, ("le", "+Inf")]
        ),
        replies
    );
    assert!(v("cashew_client_latency_seconds_sum", &[cache]) > 0.0);
    assert_eq!(v("cashew_in_flight", &[cache]), 0.0);
    assert_eq!(v("cashew_client_connections", &[cache]), 1.0);
    assert_eq!(v("cashew_client_connections_opened_total", &[cache]), 1.0);
    // Every request a server got: the sets, the single gets, one part per server
    // of the multi-get; each answered, each timed.
    let to_servers = (m + m + misses) as f64 + parts;
    assert_eq!(v("cashew_server_requests_total", &[cache]), to_servers);
    assert_eq!(v("cashew_server_replies_total", &[cache]), to_servers);
    assert_eq!(
        v("cashew_server_latency_seconds_count", &[cache]),
        to_servers
    );
    for server in ["a", "b"] {
        let labels = [cache, ("server", server)];
        assert_eq!(
            v(
                "cashew_server_state",
                &[cache, ("server", server), ("state", "up")]
            ),
            1.0
        );
        assert_eq!(
            v("cashew_server_latency_seconds_count", &labels),
            v("cashew_server_replies_total", &labels)
        );
        assert_eq!(v("cashew_server_ejections_total", &labels), 0.0);
    }

    let sessions = ("pool", "sessions");
    // Each family's requests, and the replies they were owed.
    for (family, n) in [
        ("read", 3.0),
        ("write", 2.0),
        ("split", 1.0),
        ("local", 1.0),
        ("refused", 1.0),
    ] {
        let labels = [sessions, ("family", family)];
        assert_eq!(v("cashew_requests_total", &labels), n, "{family}");
        assert_eq!(v("cashew_family_replies_total", &labels), n, "{family}");
    }
    assert_eq!(
        v("cashew_errors_total", &[sessions, ("kind", "refused")]),
        1.0
    );
    assert_eq!(
        v("cashew_errors_total", &[sessions, ("kind", "unsupported")]),
        1.0
    );
    assert_eq!(v("cashew_replies_total", &[sessions]), 9.0);
    // A request of no known command has no family.
    assert_eq!(v("cashew_family_replies_total", &[sessions]), 8.0);
    assert_eq!(v("cashew_client_latency_seconds_count", &[sessions]), 9.0);

    assert_eq!(v("cashew_worker_threads", &[]), 2.0);
    assert_eq!(v("cashew_generation", &[]), 1.0);
    assert!(v("cashew_resident_memory_bytes", &[]) > 1e6);
    assert!(v("cashew_open_fds", &[]) > 5.0);
    assert_eq!(
        v(
            "cashew_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // Every metric the Grafana dashboard queries is one cashew serves.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../contrib/grafana/cashew.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for (at, _) in expr.match_indices("cashew_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    samples.iter().any(|s| s.name == name),
                    "the dashboard's panel '{}' queries {name}, which /metrics lacks",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried > 15, "{queried} metric references in the dashboard");
}

#[test]
fn hot_keys_of_a_skewed_workload() {
    let mcs = [memcached(), memcached(), memcached()];
    let listen = free_port("127.0.0.1");
    let yaml = format!(
        "pool:\n  listen: 127.0.0.1:{listen}\n  hotkeys: true\n  servers:\n{}",
        mcs.iter()
            .enumerate()
            .map(|(i, m)| format!("    - {}:1 s{i}\n", m.addr))
            .collect::<String>()
    );
    let (admin_arg, admin_addr) = admin_port();
    let cashew = Cashew::start(CASHEW, &yaml, &["--threads", "2", "--admin", &admin_arg]);
    let admin = AdminApi::new(admin_addr, None);
    // Two pipelining clients: 30% of requests for one key, the rest spread
    // uniformly over 10,000 keys.
    let run_for = Duration::from_secs(2);
    let started = Instant::now();
    let hot_requests: u64 = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..2u64)
            .map(|id| {
                scope.spawn(move || {
                    let mut c = McConn::connect(format!("127.0.0.1:{listen}").parse().unwrap());
                    let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ id;
                    let mut hot = 0;
                    while started.elapsed() < run_for {
                        let mut batch = String::new();
                        for _ in 0..100 {
                            state ^= state << 13;
                            state ^= state >> 7;
                            state ^= state << 17;
                            if state % 10 < 3 {
                                hot += 1;
                                batch.push_str("get the-hot-key\r\n");
                            } else {
                                batch.push_str(&format!("get k{}\r\n", (state >> 8) % 10_000));
                            }
                        }
                        c.send(batch.as_bytes());
                        for _ in 0..100 {
                            assert_eq!(c.line(), "END\r\n");
                        }
                    }
                    hot
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).sum()
    });
    let truth = hot_requests as f64 / started.elapsed().as_secs_f64();
    let (status, body) = admin.get("/hotkeys");
    assert_eq!(status, 200);
    let keys = body["hotkeys"].as_array().unwrap();
    println!(
        "truth {truth:.0}/s; reported {}",
        serde_json::to_string(&keys[..3.min(keys.len())]).unwrap()
    );
    assert_eq!(keys[0]["pool"], "pool");
    assert_eq!(keys[0]["key"], "the-hot-key");
    let rate = keys[0]["rate"].as_f64().unwrap();
    assert!(
        (rate - truth).abs() <= 0.2 * truth,
        "reported {rate}/s, truth {truth:.0}/s"
    );
    let conf = cashew.dir.join("cashew.yml");
    let server = &cashew_route(CASHEW, &conf, None, &["the-hot-key".to_string()])[0];
    assert!(
        server.ends_with(keys[0]["server"].as_str().unwrap()),
        "{server} {}",
        keys[0]
    );
    // No other key comes close.
    assert!(
        keys[1]["rate"].as_f64().unwrap() < rate / 10.0,
        "{}",
        keys[1]
    );
}

#[test]
fn requests_to_a_frozen_server_appear_in_the_slow_log() {
    let rig = one_pool("  slowlog_ms: 100\n", "frozen", &["--threads", "1"]);
    let (mc, admin) = (&rig.server, &rig.admin);
    let mut c = McConn::connect(rig.listen);
    c.roundtrip(b"get fast-key\r\n", b"END\r\n");
    mc.freeze();
    c.send(b"get slow-key\r\n");
    std::thread::sleep(Duration::from_millis(300));
    mc.signal("CONT");
    assert_eq!(c.line(), "END\r\n");
    let (status, body) = admin.get("/slowlog");
    assert_eq!(status, 200);
    let entries = body["slowlog"].as_array().unwrap();
    println!("{}", serde_json::to_string_pretty(&body).unwrap());
    assert_eq!(entries.len(), 1, "{body}");
    let e = &entries[0];
    assert_eq!(
        (&e["pool"], &e["server"]),
        (&"pool".into(), &"frozen".into())
    );
    assert_eq!(
        (&e["command"], &e["key"]),
        (&"get".into(), &"slow-key".into())
    );
    let latency = e["latency_ms"].as_f64().unwrap();
    assert!((250.0..5000.0).contains(&latency), "{latency} ms");
}

#[test]
fn top_once_shows_every_pool_and_server() {
    let rig = two_pools(
        "  hotkeys: true\n  hotkeys_sample: 1\n",
        ["cache-a", "cache-b", "redis-a"],
    );
    let (mc_listen, admin_arg) = (rig.mc_listen, rig.admin_arg.clone());
    let mut c = McConn::connect(format!("127.0.0.1:{mc_listen}").parse().unwrap());
    for _ in 0..50 {
        c.roundtrip(b"get popular\r\n", b"END\r\n");
    }
    // Traffic during the second top measures over.
    let busy = std::thread::spawn(move || {
        let mut c = McConn::connect(format!("127.0.0.1:{mc_listen}").parse().unwrap());
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            c.roundtrip(b"get popular\r\n", b"END\r\n");
        }
    });
    let out = Command::new(CASHEW)
        .args(["top", "--once", "--admin", &admin_arg])
        .output()
        .unwrap();
    busy.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("cashew ") && lines[0].contains("generation 1"),
        "{text}"
    );
    for pool in ["cache", "sessions"] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{pool} "))),
            "{pool}: {text}"
        );
    }
    for server in ["cache-a", "cache-b", "redis-a"] {
        let row = lines.iter().find(|l| l.starts_with(&format!("{server} ")));
        assert!(row.is_some_and(|r| r.contains(" up ")), "{server}: {text}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("cache ") && l.contains(" popular ")),
        "{text}"
    );
    // The pool's row has requests per second and latency of that second.
    let pool_row = lines
        .iter()
        .find(|l| l.starts_with("cache ") && l.contains("memcached"))
        .unwrap();
    let cells: Vec<&str> = pool_row.split_whitespace().collect();
    assert!(cells[2].parse::<u64>().unwrap() > 0, "{pool_row}");
    assert!(
        cells[4].ends_with("ms") && cells[5].ends_with("ms"),
        "{pool_row}"
    );
    // Without an instance, a clear error.
    let out = Command::new(CASHEW)
        .args(["top", "--once", "--admin", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach http://127.0.0.1:1"));
}
