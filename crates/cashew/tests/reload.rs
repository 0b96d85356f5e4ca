//! Hot reload against real memcached and redis-server: under a pipelined load of
//! both protocols, configurations that add, remove and re-weight servers, change
//! the hash, add and remove pools and move a listen port take effect without one
//! failed or reordered reply and without closing a client of a surviving pool.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cashew_testkit::load;
use cashew_testkit::{
    cashew_route, free_port, memcached, redis_server, AdminApi, Cashew, McConn, Process,
};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// cashew with an admin API on a free port.
fn start(yaml: &str, args: &[&str]) -> (Cashew, AdminApi) {
    let admin = addr(free_port("127.0.0.1"));
    let admin_arg = admin.to_string();
    let mut all = vec!["--admin", admin_arg.as_str()];
    all.extend(args);
    if !args.contains(&"--threads") {
        all.extend(["--threads", "2"]);
    }
    let cashew = Cashew::start(CASHEW, yaml, &all);
    (cashew, AdminApi::new(admin, None))
}

struct Ports {
    cache: u16,
    sessions: u16,
    extra: u16,
    mover: [u16; 2],
}

/// Configuration number `step` of the reload cycle: which servers, their weights,
/// the hash and distribution, whether the `extra` pool exists and where `mover`
/// listens all change from step to step.
fn config(step: usize, ports: &Ports, mc: &[Process], rd: &[Process]) -> String {
    let subsets: [&[usize]; 4] = [&[0, 1, 2], &[0, 1, 2, 3], &[1, 2, 3], &[0, 2, 3]];
    let subset = subsets[step % 4];
    let hash = ["fnv1a_64", "murmur", "md5", "crc32a", "one_at_a_time"][step % 5];
    let distribution = if step % 6 == 5 { "modula" } else { "ketama" };
    let server_connections = 1 + step % 2;
    let servers = |backends: &[Process]| -> String {
        subset
            .iter()
            .map(|&i| {
                let weight = if step % 3 == 2 { 1 + i % 3 } else { 1 };
                format!("    - {}:{weight} s{i}\n", backends[i].addr)
            })
            .collect()
    };
    let mut yaml = format!(
        "cache:\n  listen: 127.0.0.1:{}\n  hash: {hash}\n  distribution: {distribution}\n  timeout: 2000\n  server_connections: {server_connections}\n  servers:\n{}",
        ports.cache,
        servers(mc)
    );
    yaml += &format!(
        "sessions:\n  listen: 127.0.0.1:{}\n  redis: true\n  hash: {hash}\n  distribution: {distribution}\n  timeout: 2000\n  servers:\n{}",
        ports.sessions,
        servers(rd)
    );
    yaml += &format!(
        "mover:\n  listen: 127.0.0.1:{}\n  servers:\n    - {}:1\n",
        ports.mover[step % 2],
        mc[1].addr
    );
    if step % 3 == 1 {
        yaml += &format!(
            "extra:\n  listen: 127.0.0.1:{}\n  servers:\n    - {}:1\n",
            ports.extra, mc[0].addr
        );
    }
    yaml
}

fn reload(admin: &AdminApi, expect_generation: u64) {
    let (status, body) = admin.post("/reload");
    assert_eq!(status, 200, "reload: {body}");
    assert_eq!(body["generation"], expect_generation, "{body}");
}

#[test]
fn fifty_reloads_under_pipelined_load_lose_nothing() {
    let mc: Vec<Process> = (0..4).map(|_| memcached()).collect();
    let rd: Vec<Process> = (0..4).map(|_| redis_server(&[])).collect();
    let ports = Ports {
        cache: free_port("127.0.0.1"),
        sessions: free_port("127.0.0.1"),
        extra: free_port("127.0.0.1"),
        mover: [free_port("127.0.0.1"), free_port("127.0.0.1")],
    };
    let (cashew, admin) = start(&config(0, &ports, &mc, &rd), &[]);
    let stop = AtomicBool::new(false);
    let (cache, sessions) = (addr(ports.cache), addr(ports.sessions));

    let started = Instant::now();
    let reloads = 50;
    let tally = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            let mut clients: Vec<load::Client> = Vec::new();
            for t in 0..3 {
                clients.push(Box::new(move |stop: &AtomicBool| {
                    load::memcached_pipelines(cache, &format!("mc{t}"), stop)
                }));
                clients.push(Box::new(move |stop: &AtomicBool| {
                    load::redis_pipelines(sessions, &format!("rd{t}"), stop)
                }));
            }
            load::run(clients, &stop)
        });

        let mut extra_client: Option<McConn> = None;
        for step in 1..=reloads {
            cashew.write_config(&config(step, &ports, &mc, &rd));
            reload(&admin, step as u64 + 1);
            // A client of a removed pool is answered, then closed.
            if step % 3 == 2 {
                let mut c = extra_client.take().expect("a client of the extra pool");
                assert!(
                    c.is_closed(),
                    "step {step}: the removed pool's client is closed"
                );
            }
            // New clients reach every pool where the generation says it listens.
            let mut mover = McConn::connect(addr(ports.mover[step % 2]));
            mover.set(&format!("mover{step}"), b"here");
            assert_eq!(
                mover.get(&format!("mover{step}")).as_deref(),
                Some(&b"here"[..])
            );
            if step % 3 == 1 {
                let mut c = McConn::connect(addr(ports.extra));
                c.set(&format!("extra{step}"), b"x");
                extra_client = Some(c);
            }
            std::thread::sleep(Duration::from_millis(40));
        }

        // An invalid file changes nothing: the errors name the file and line.
        let file = cashew.dir.join("cashew.yml");
        cashew.write_config("cache:\n  listen: 127.0.0.1:1\n  hash: nope\n  servers: []\n");
        let (status, body) = admin.post("/reload");
        assert_eq!(status, 400, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(&format!("{}:3:", file.display())), "{error}");
        assert_eq!(body["generation"], reloads as u64 + 1);
        std::thread::sleep(Duration::from_millis(200));

        stop.store(true, Ordering::Relaxed);
        load.join().unwrap()
    });
    let elapsed = started.elapsed();
    println!(
        "{reloads} reloads in {:.1} s under load: {} requests, {} misses (keys moved), {} failures, {} connections closed",
        elapsed.as_secs_f64(),
        tally.requests,
        tally.misses,
        tally.failures.len(),
        tally.closed
    );
    assert!(tally.failures.is_empty(), "{:#?}", tally.failures);
    assert_eq!(tally.closed, 0, "a client of a surviving pool was closed");
    assert!(
        tally.requests > 1000,
        "the load ran: {} requests",
        tally.requests
    );
    let log = cashew.log();
    assert!(log.contains("reload: pool 'extra' added"), "{log}");
    assert!(
        log.contains("reload failed, the running configuration stays"),
        "{log}"
    );
}

#[test]
fn counters_and_ejections_follow_server_names_across_reloads() {
    let mc: Vec<Process> = (0..4).map(|_| memcached()).collect();
    let listen = free_port("127.0.0.1");
    let yaml = |order: &[usize]| {
        let servers: String = order
            .iter()
            .map(|&i| format!("    - {}:1 s{i}\n", mc[i].addr))
            .collect();
        format!("pool:\n  listen: 127.0.0.1:{listen}\n  servers:\n{servers}")
    };
    let (cashew, admin) = start(&yaml(&[0, 1, 2]), &[]);
    let mut c = McConn::connect(addr(listen));
    for i in 0..300 {
        c.set(&format!("k{i}"), b"v");
    }
    let stats = |name: &str, field: &str| -> u64 {
        let doc: serde_json::Value = serde_json::from_str(&cashew.stats_json()).unwrap();
        doc["pool"][name][field]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}.{field} in {doc}"))
    };
    let s1_requests = stats("s1", "requests");
    assert!(s1_requests > 0);
    let (status, body) = admin.post("/pools/pool/servers/s1/eject");
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("manual")),
        "{body}"
    );

    // Reordered, one added: s1 keeps its counters and stays ejected.
    cashew.write_config(&yaml(&[3, 2, 1, 0]));
    reload(&admin, 2);
    assert_eq!(stats("s1", "requests"), s1_requests);
    assert_eq!(stats("s3", "requests"), 0);
    let (_, status) = admin.get("/status");
    let servers = status["pools"][0]["servers"].as_array().unwrap();
    let s1 = servers.iter().find(|s| s["name"] == "s1").unwrap();
    assert_eq!(s1["state"], "manual", "{status}");

    // The keys placement gives s1: while it is ejected by hand they go elsewhere,
    // once restored they reach it again.
    let conf = cashew.dir.join("cashew.yml");
    let keys: Vec<String> = (0..400).map(|i| format!("key:{i}")).collect();
    let placed = cashew_route(CASHEW, &conf, None, &keys);
    let s1_keys: Vec<&String> = keys
        .iter()
        .zip(&placed)
        .filter(|(_, server)| server.ends_with(" s1"))
        .map(|(key, _)| key)
        .collect();
    assert!(s1_keys.len() > 20, "{} of 400 keys on s1", s1_keys.len());
    let mut direct = McConn::connect(mc[1].addr);
    for key in &s1_keys {
        c.set(key, b"elsewhere");
        assert_eq!(
            direct.get(key),
            None,
            "{key} reached s1 while it was ejected"
        );
    }
    let (status, _) = admin.post("/pools/pool/servers/s1/restore");
    assert_eq!(status, 200);
    for key in &s1_keys {
        c.set(key, b"home");
        assert_eq!(
            direct.get(key).as_deref(),
            Some(&b"home"[..]),
            "{key} after restore"
        );
    }
}

#[test]
fn listen_backlog_and_timeout_changes_keep_clients_connected() {
    let mc = memcached();
    let listen = free_port("127.0.0.1");
    let yaml = |extra: &str| {
        format!(
            "pool:\n  listen: 127.0.0.1:{listen}\n{extra}  servers:\n    - {}:1\n",
            mc.addr
        )
    };
    let (cashew, admin) = start(&yaml(""), &[]);
    let mut c = McConn::connect(addr(listen));
    c.set("a", b"1");
    for (generation, extra) in [
        (2, "  backlog: 64\n"),
        (3, "  timeout: 500\n  tcpkeepalive: true\n"),
        (4, "  server_connections: 3\n  preconnect: true\n"),
        (5, ""),
    ] {
        cashew.write_config(&yaml(extra));
        reload(&admin, generation);
        assert_eq!(
            c.get("a").as_deref(),
            Some(&b"1"[..]),
            "generation {generation}"
        );
    }
}
