//! Availability through real failures: replicated memcached pools, miss failover
//! and warm-up, gutter pools and active health checks, each against memcached or
//! redis servers this test kills and restarts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cashew_testkit::{
    cashew_replicas, free_port, load, memcached, memcached_on, redis_server, redis_server_on,
    Cashew, McConn, PoolProxy, Process,
};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");
const KEYS: usize = 10_000;

fn pairs(tag: &str, version: u32) -> Vec<(String, String)> {
    (0..KEYS)
        .map(|i| {
            let key = format!("{tag}:{i}");
            let value = format!("v{version}-{key}");
            (key, value)
        })
        .collect()
}

fn keys_of(pairs: &[(String, String)]) -> Vec<String> {
    pairs.iter().map(|(k, _)| k.clone()).collect()
}

/// A replicated pool over three memcached servers, the keys written through it,
/// and where `cashew route` places each key.
struct Replicated {
    proxy: PoolProxy,
    pairs: Vec<(String, String)>,
    /// Backend indices of each key's replicas, in order.
    replicas: Vec<Vec<usize>>,
}

impl Replicated {
    fn start(tag: &str, settings: &str) -> Replicated {
        let backends: Vec<Process> = (0..3).map(|_| memcached()).collect();
        let settings = format!("  hash: md5\n  distribution: ketama\n  replicas: 2\n{settings}");
        let proxy = PoolProxy::start(CASHEW, backends, &settings, &[]);
        let pairs = pairs(tag, 1);
        let conf = proxy.cashew.dir.join("cashew.yml");
        let replicas = cashew_replicas(CASHEW, &conf, None, &keys_of(&pairs))
            .into_iter()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        let at = proxy
                            .backends
                            .iter()
                            .position(|b| *e == format!("{}:1", b.addr));
                        at.unwrap_or_else(|| panic!("{e} is none of the backends"))
                    })
                    .collect()
            })
            .collect();
        let r = Replicated {
            proxy,
            pairs,
            replicas,
        };
        r.client().set_many(&r.pairs, 0);
        r
    }

    fn client(&self) -> McConn {
        McConn::connect(self.proxy.listen)
    }

    fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.proxy.cashew.stats_json()).unwrap()
    }

    /// The keys whose replica number `nth` (0 = first) is backend `server`.
    fn keys_with(&self, server: usize, nth: usize) -> Vec<String> {
        self.pairs
            .iter()
            .zip(&self.replicas)
            .filter(|(_, r)| r[nth] == server)
            .map(|((k, _), _)| k.clone())
            .collect()
    }

    /// Reads every key through cashew: the keys that missed (a wrong value panics).
    fn read_all(&self, pairs: &[(String, String)]) -> Vec<String> {
        let hits = self.client().get_many(&keys_of(pairs));
        let mut misses = Vec::new();
        for (key, value) in pairs {
            match hits.get(key) {
                Some(got) => assert_eq!(got, value, "{key}"),
                None => misses.push(key.clone()),
            }
        }
        misses
    }

    fn kill(&mut self, server: usize) -> u16 {
        let backend = &mut self.proxy.backends[server];
        backend.signal("KILL");
        backend
            .wait_exit(Duration::from_secs(5))
            .expect("memcached exits");
        backend.port()
    }

    /// The server restarted, empty, on its port.
    fn restart_empty(&mut self, server: usize) {
        let port = self.proxy.backends[server].port();
        self.proxy.backends[server] = memcached_on("127.0.0.1", port);
    }

    fn direct(&self, server: usize) -> McConn {
        McConn::connect(self.proxy.backends[server].addr)
    }
}

/// Each key's value is on exactly its replicas.
fn assert_placed_on_replicas(r: &Replicated) {
    for server in 0..3 {
        let mut direct = r.direct(server);
        let kept: Vec<String> = (0..2).flat_map(|nth| r.keys_with(server, nth)).collect();
        assert_eq!(direct.get_many(&kept).len(), kept.len(), "server {server}");
        assert_eq!(
            direct.stat("curr_items"),
            kept.len() as u64,
            "server {server}"
        );
    }
}

/// Kills server 1 of a replicated pool with `settings`: every read still hits and
/// every write is stored (get_many and set_many panic on any error reply). Then
/// restarts it empty: without `failover_on_miss`, exactly the keys it is the first
/// replica of miss, as they would on a lone server that restarted.
fn crash_and_empty_restart_without_failover(tag: &str, settings: &str) -> serde_json::Value {
    let mut r = Replicated::start(tag, settings);
    assert_placed_on_replicas(&r);
    let first_on_1 = r.keys_with(1, 0);
    assert!(first_on_1.len() > KEYS / 5, "{} keys", first_on_1.len());

    r.kill(1);
    assert_eq!(r.read_all(&r.pairs), Vec::<String>::new());
    let v2 = pairs(tag, 2);
    r.client().set_many(&v2, 0);
    assert_eq!(r.read_all(&v2), Vec::<String>::new());
    let stats = r.stats();
    assert_eq!(stats["pool"]["forward_error"], 0);

    r.restart_empty(1);
    std::thread::sleep(Duration::from_millis(500));
    let mut misses = r.read_all(&v2);
    misses.sort();
    let mut expected = first_on_1;
    expected.sort();
    assert_eq!(misses.len(), expected.len());
    assert_eq!(misses, expected);
    stats
}

#[test]
fn replicas_serve_every_key_of_a_dead_ejected_server() {
    let eject = "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 300\n  timeout: 1000\n";
    let stats = crash_and_empty_restart_without_failover("ejected", eject);
    assert!(stats["pool"]["server_ejects"].as_u64().unwrap() >= 1);
}

#[test]
fn replicas_serve_every_key_of_a_dead_server_never_ejected() {
    // Every read of its keys fails on it first and is answered by the next replica.
    let stats = crash_and_empty_restart_without_failover("kept", "  timeout: 1000\n");
    let failovers = stats["pool"]["replica_failovers"].as_u64().unwrap();
    assert!(failovers as usize > KEYS / 5, "{failovers} failovers");
    assert_eq!(stats["pool"]["server_ejects"], 0);
}

/// Kills server 1, restarts it empty and waits until cashew uses it again.
fn crash_and_restart_empty(settings: &str, tag: &str) -> Replicated {
    let eject = "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 200\n  timeout: 1000\n";
    let mut r = Replicated::start(tag, &format!("{eject}{settings}"));
    r.kill(1);
    assert_eq!(r.read_all(&r.pairs), Vec::<String>::new());
    r.restart_empty(1);
    // Past the retry timeout of any ejection made while it was dead.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(r.direct(1).stat("curr_items"), 0);
    r
}

#[test]
fn failover_on_miss_serves_an_empty_restarted_server_from_its_replica() {
    let r = crash_and_restart_empty("  failover_on_miss: true\n", "miss");
    assert_eq!(r.read_all(&r.pairs), Vec::<String>::new());
    let failovers = r.stats()["pool"]["replica_failovers"].as_u64().unwrap();
    assert!(failovers >= r.keys_with(1, 0).len() as u64, "{failovers}");
    // No warm-up: it stays empty until written.
    assert_eq!(r.direct(1).stat("curr_items"), 0);
    assert_eq!(r.stats()["pool"]["warmups"], 0);
}

#[test]
fn warmup_refills_a_restarted_server_in_one_read_pass() {
    let r = crash_and_restart_empty(
        "  failover_on_miss: true\n  warmup: true\n  warmup_ttl: 120\n",
        "warm",
    );
    assert_eq!(r.read_all(&r.pairs), Vec::<String>::new());
    // The keys it serves reads for (it is their first replica) are back on it.
    let own = r.keys_with(1, 0);
    let mut direct = r.direct(1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let held = direct.get_many(&own).len();
        if held == own.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{held} of {} keys written back",
            own.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let values: HashMap<String, String> = r.pairs.iter().cloned().collect();
    for (key, value) in direct.get_many(&own) {
        assert_eq!(value, values[&key]);
    }
    // With the TTL warmup_ttl gives (the original one is not known).
    let ttl = direct.ttl(&own[0]);
    assert!((1..=120).contains(&ttl), "TTL {ttl}");
    let stats = r.stats();
    assert_eq!(stats["pool"]["warmups"], own.len() as u64);
    assert_eq!(stats["pool"]["warmups_dropped"], 0);
    // A second pass is served by the restarted server itself.
    let failovers = stats["pool"]["replica_failovers"].as_u64().unwrap();
    assert_eq!(r.read_all(&r.pairs), Vec::<String>::new());
    assert_eq!(r.stats()["pool"]["replica_failovers"], failovers);
}

fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> (T, Duration) {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return (value, started.elapsed());
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn json(cashew: &Cashew) -> serde_json::Value {
    serde_json::from_str(&cashew.stats_json()).unwrap()
}

/// A probe interval; a test allows two of them, plus this much for scheduling.
const PROBE_MS: u64 = 300;
const SLACK_MS: u64 = 250;

fn within_two_probes(what: &str, took: Duration) {
    println!("{what} after {} ms", took.as_millis());
    assert!(
        took <= Duration::from_millis(2 * PROBE_MS + SLACK_MS),
        "{what} after {took:?}, more than two probe intervals of {PROBE_MS} ms"
    );
}

#[test]
fn health_checks_eject_a_dead_server_and_bring_it_back_without_client_errors() {
    let settings = format!(
        "  hash: md5\n  distribution: ketama\n  auto_eject_hosts: true\n  server_failure_limit: 2\n  server_retry_timeout: 100\n  health_check_interval: {PROBE_MS}\n"
    );
    let mut p = PoolProxy::start(
        CASHEW,
        (0..3).map(|_| memcached()).collect(),
        &settings,
        &[],
    );
    let pairs = pairs("probe", 1)[..300].to_vec();
    let keys = keys_of(&pairs);
    let routed = p.routed(&keys);
    let mut c = McConn::connect(p.listen);
    c.set_many(&pairs, 0);
    let victim = p.backends[1].addr.to_string();
    let stats = json(&p.cashew);
    assert_eq!(stats["pool"][&victim]["health_check_ok"], 1);

    // Killed: the probes find it, no client request is sent to find out.
    p.backends[1].signal("KILL");
    let killed = Instant::now();
    let (_, took) = wait_for("ejection", Duration::from_secs(5), || {
        (json(&p.cashew)["pool"]["server_ejects"] == 1).then_some(())
    });
    within_two_probes("ejected", killed.elapsed().max(took));
    let stats = json(&p.cashew);
    assert_eq!(stats["pool"][&victim]["health_check_ok"], 0);
    assert!(stats["pool"][&victim]["state_changed_at"].as_u64().unwrap() > 0);

    // Its keys moved to the other servers (a nutcracker ring): they miss, with no
    // error, and can be written there.
    let victim_keys: Vec<(String, String)> = pairs
        .iter()
        .zip(&routed)
        .filter(|(_, &s)| s == 1)
        .map(|(kv, _)| kv.clone())
        .collect();
    assert!(!victim_keys.is_empty());
    assert!(c.get_many(&keys_of(&victim_keys)).is_empty());
    c.set_many(&victim_keys, 0);
    assert_eq!(c.get_many(&keys_of(&victim_keys)).len(), victim_keys.len());

    // Restarted: a probe re-admits it before any client request goes to it.
    let port = p.backends[1].port();
    p.backends[1] = memcached_on("127.0.0.1", port);
    let restarted = Instant::now();
    wait_for("re-admission", Duration::from_secs(5), || {
        (json(&p.cashew)["pool"][&victim]["health_check_ok"] == 1).then_some(())
    });
    within_two_probes("back in service", restarted.elapsed());
    c.set_many(&victim_keys, 0);
    let mut direct = McConn::connect(p.backends[1].addr);
    assert_eq!(
        direct.get_many(&keys_of(&victim_keys)).len(),
        victim_keys.len()
    );
    let stats = json(&p.cashew);
    assert_eq!(stats["pool"]["forward_error"], 0);
    assert_eq!(stats["pool"]["server_ejects"], 1);
    assert!(p.cashew.log().contains("health checks failed in a row"));
}

#[test]
fn replicas_and_health_checks_keep_clients_error_free_through_a_crash_and_restart() {
    let settings = format!(
        "  auto_eject_hosts: true\n  server_failure_limit: 2\n  timeout: 1000\n  failover_on_miss: true\n  health_check_interval: {PROBE_MS}\n"
    );
    let mut r = Replicated::start("steady", &settings);
    let listen = r.proxy.listen;
    let stop = AtomicBool::new(false);
    let tally = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            let clients: Vec<load::Client> = (0..4)
                .map(|t| -> load::Client {
                    Box::new(move |stop: &AtomicBool| {
                        load::memcached_pipelines(listen, &format!("steady{t}"), stop)
                    })
                })
                .collect();
            load::run(clients, &stop)
        });
        std::thread::sleep(Duration::from_millis(300));
        r.kill(1);
        std::thread::sleep(Duration::from_millis(3 * PROBE_MS));
        assert_eq!(r.read_all(&r.pairs), Vec::<String>::new());
        r.restart_empty(1);
        std::thread::sleep(Duration::from_millis(3 * PROBE_MS));
        assert_eq!(r.read_all(&r.pairs), Vec::<String>::new());
        stop.store(true, Ordering::Relaxed);
        load.join().unwrap()
    });
    println!(
        "through a crash and an empty restart: {} requests, {} misses, {} failures",
        tally.requests,
        tally.misses,
        tally.failures.len()
    );
    assert!(tally.failures.is_empty(), "{:?}", tally.failures);
    assert!(tally.requests > 1000, "{} requests", tally.requests);
    let victim = r.proxy.backends[1].addr.to_string();
    let stats = r.stats();
    assert_eq!(stats["pool"]["forward_error"], 0);
    assert_eq!(stats["pool"][&victim]["health_check_ok"], 1);
    assert!(stats["pool"]["server_ejects"].as_u64().unwrap() >= 1);
}

/// Two pools: `main` over three servers with `gutter: spare`, and `spare`.
fn gutter_config(
    listen: SocketAddr,
    spare_listen: SocketAddr,
    main: &[Process],
    spare: &Process,
    extra: &str,
) -> String {
    let servers: String = main
        .iter()
        .map(|b| format!("    - {}:1\n", b.addr))
        .collect();
    format!(
        "main:\n  listen: {listen}\n  hash: md5\n  distribution: ketama\n  auto_eject_hosts: true\n  server_failure_limit: 2\n  health_check_interval: {PROBE_MS}\n  gutter: spare\n  gutter_ttl: 8\n{extra}  servers:\n{servers}spare:\n  listen: {spare_listen}\n{extra}  servers:\n    - {}:1\n",
        spare.addr
    )
}

fn loopback() -> SocketAddr {
    format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap()
}

#[test]
fn an_ejected_servers_keys_go_to_the_gutter_pool_and_nowhere_else() {
    let mut main: Vec<Process> = (0..3).map(|_| memcached()).collect();
    let spare = memcached();
    let (listen, spare_listen) = (loopback(), loopback());
    let yaml = gutter_config(listen, spare_listen, &main, &spare, "");
    let cashew = Cashew::start(CASHEW, &yaml, &["--threads", "2"]);
    let conf = cashew.dir.join("cashew.yml");
    let pairs = pairs("gutter", 1)[..3000].to_vec();
    let keys = keys_of(&pairs);
    let routed: Vec<usize> = cashew_replicas(CASHEW, &conf, Some("main"), &keys)
        .iter()
        .map(|r| {
            main.iter()
                .position(|b| r[0] == format!("{}:1", b.addr))
                .unwrap()
        })
        .collect();
    let mut c = McConn::connect(listen);
    c.set_many(&pairs, 0);
    let (victim, others): (Vec<_>, Vec<_>) = pairs.iter().zip(&routed).partition(|(_, &s)| s == 1);
    let victim: Vec<(String, String)> = victim.into_iter().map(|(kv, _)| kv.clone()).collect();
    let others: Vec<(String, String)> = others.into_iter().map(|(kv, _)| kv.clone()).collect();
    let items_before = [0, 2].map(|s| McConn::connect(main[s].addr).stat("curr_items"));

    main[1].signal("KILL");
    wait_for("ejection", Duration::from_secs(5), || {
        (json(&cashew)["main"]["server_ejects"] == 1).then_some(())
    });
    // Its keys miss (the gutter is empty), are written to the gutter and read from it.
    assert!(c.get_many(&keys_of(&victim)).is_empty());
    let v2: Vec<(String, String)> = victim
        .iter()
        .map(|(k, v)| (k.clone(), format!("{v}-2")))
        .collect();
    c.set_many(&v2, 0);
    assert_eq!(c.get_many(&keys_of(&v2)), v2.iter().cloned().collect());
    let mut gutter = McConn::connect(spare.addr);
    assert_eq!(gutter.stat("curr_items"), victim.len() as u64);
    // With the TTL capped by gutter_ttl (the request asked for none).
    let ttl = gutter.ttl(&victim[0].0);
    assert!((1..=8).contains(&ttl), "TTL {ttl}");
    // The other servers got no new key and still serve their own.
    let items_after = [0, 2].map(|s| McConn::connect(main[s].addr).stat("curr_items"));
    assert_eq!(items_after, items_before);
    assert_eq!(
        c.get_many(&keys_of(&others)),
        others.iter().cloned().collect()
    );
    let stats = json(&cashew);
    // Every write, and at least one fragment of each of the two reads.
    let guttered = stats["main"]["gutter_requests"].as_u64().unwrap();
    assert!(guttered >= victim.len() as u64 + 2, "{guttered}");
    assert_eq!(stats["main"]["forward_error"], 0);

    // Back: its keys return to it.
    main[1] = memcached_on("127.0.0.1", main[1].port());
    wait_for("re-admission", Duration::from_secs(5), || {
        (json(&cashew)["main"][&main[1].addr.to_string()]["health_check_ok"] == 1).then_some(())
    });
    c.set_many(&victim, 0);
    assert_eq!(
        McConn::connect(main[1].addr)
            .get_many(&keys_of(&victim))
            .len(),
        victim.len()
    );
}

fn redis_conn(addr: SocketAddr) -> redis::Connection {
    redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap()
}

#[test]
fn redis_pools_have_health_checks_and_a_gutter() {
    let mut main: Vec<Process> = (0..2).map(|_| redis_server(&[])).collect();
    let spare = redis_server(&[]);
    let (listen, spare_listen) = (loopback(), loopback());
    let yaml = gutter_config(listen, spare_listen, &main, &spare, "  redis: true\n");
    let cashew = Cashew::start(CASHEW, &yaml, &["--threads", "2"]);
    let conf = cashew.dir.join("cashew.yml");
    let keys: Vec<String> = (0..200).map(|i| format!("rg:{i}")).collect();
    let routed = cashew_replicas(CASHEW, &conf, Some("main"), &keys);
    let victim_entry = format!("{}:1", main[1].addr);
    let victim_keys: Vec<&String> = keys
        .iter()
        .zip(&routed)
        .filter(|(_, r)| r[0] == victim_entry)
        .map(|(k, _)| k)
        .collect();
    assert!(!victim_keys.is_empty());

    let mut c = redis_conn(listen);
    let victim_addr = main[1].addr.to_string();
    assert_eq!(json(&cashew)["main"][&victim_addr]["health_check_ok"], 1);
    main[1].signal("KILL");
    let killed = Instant::now();
    wait_for("ejection", Duration::from_secs(5), || {
        (json(&cashew)["main"]["server_ejects"] == 1).then_some(())
    });
    within_two_probes("redis server ejected", killed.elapsed());

    // Writes to its keys land in the gutter with a TTL of at most gutter_ttl.
    for k in &victim_keys {
        let () = redis::cmd("SET").arg(*k).arg("g").query(&mut c).unwrap();
        let got: String = redis::cmd("GET").arg(*k).query(&mut c).unwrap();
        assert_eq!(got, "g");
    }
    let mut gutter = redis_conn(spare.addr);
    let ttl: i64 = redis::cmd("TTL")
        .arg(victim_keys[0])
        .query(&mut gutter)
        .unwrap();
    assert!((1..=8).contains(&ttl), "TTL {ttl}");
    let size: usize = redis::cmd("DBSIZE").query(&mut gutter).unwrap();
    assert_eq!(size, victim_keys.len());
    let mut survivor = redis_conn(main[0].addr);
    let size: usize = redis::cmd("DBSIZE").query(&mut survivor).unwrap();
    assert_eq!(size, 0, "the other server got none of its keys");

    main[1] = redis_server_on(main[1].port(), &[]);
    let restarted = Instant::now();
    wait_for("re-admission", Duration::from_secs(5), || {
        (json(&cashew)["main"][&victim_addr]["health_check_ok"] == 1).then_some(())
    });
    within_two_probes("redis server back", restarted.elapsed());
    let () = redis::cmd("SET")
        .arg(victim_keys[0])
        .arg("back")
        .query(&mut c)
        .unwrap();
    let mut back = redis_conn(main[1].addr);
    let got: String = redis::cmd("GET")
        .arg(victim_keys[0])
        .query(&mut back)
        .unwrap();
    assert_eq!(got, "back");
    assert_eq!(json(&cashew)["main"]["forward_error"], 0);
}
