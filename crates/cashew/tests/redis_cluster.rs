//! `redis_cluster: true`: a real Redis Cluster (redis-server nodes in cluster mode
//! joined by `redis-cli --cluster create`) behind cashew, seen by clients as one
//! redis, through resharding and failover.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cashew_protocol::resp::{element_text, reply_elements};
use cashew_testkit::cluster::{cli, RedisCluster};
use cashew_testkit::resp::{compare_sequences, messages_until_quiet, RespConn};
use cashew_testkit::{free_port, redis_server, AdminApi, Cashew};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn cashew_for(cluster: &RedisCluster, settings: &str) -> (Cashew, SocketAddr) {
    cashew_with_args(cluster, settings, &[])
}

fn cashew_with_args(cluster: &RedisCluster, settings: &str, args: &[&str]) -> (Cashew, SocketAddr) {
    let args: Vec<&str> = ["--threads", "2"].iter().chain(args).copied().collect();
    cluster.cashew(CASHEW, settings, &args)
}

fn client(addr: SocketAddr) -> redis::Connection {
    let c = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let conn = c.get_connection().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn
}

/// The port of the master that owns `key`'s slot now, as a node says.
fn owner_port(cluster: &RedisCluster, key: &str) -> u16 {
    let slot: u16 = cluster
        .cli(0, &["CLUSTER", "KEYSLOT", key])
        .trim()
        .parse()
        .unwrap();
    let nodes = cluster.cli(0, &["CLUSTER", "NODES"]);
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if !fields[2].contains("master") {
            continue;
        }
        for range in &fields[8..] {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) else {
                continue;
            };
            if (a..=b).contains(&slot) {
                let addr = fields[1].split('@').next().unwrap();
                return addr.rsplit(':').next().unwrap().parse().unwrap();
            }
        }
    }
    panic!("no owner for slot {slot}:\n{nodes}");
}

#[test]
fn a_cluster_is_one_redis_through_cashew() {
    let cluster = RedisCluster::start(3, 1);
    let (cashew, addr) = cashew_for(&cluster, "");
    let mut c = client(addr);

    // 10,000 keys written and read back, pipelined.
    let keys: Vec<String> = (0..10_000).map(|i| format!("key:{i}")).collect();
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.set(k, format!("value of {k}")).ignore();
    }
    pipe.query::<()>(&mut c).unwrap();
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.get(k);
    }
    let values: Vec<String> = pipe.query(&mut c).unwrap();
    for (k, v) in keys.iter().zip(&values) {
        assert_eq!(v, &format!("value of {k}"));
    }
    // Each key is on the master its slot belongs to.
    for k in keys.iter().step_by(997) {
        let port = owner_port(&cluster, k);
        assert_eq!(
            cli(port, &["GET", k]).trim(),
            format!("value of {k}"),
            "{k} on its owner"
        );
    }

    // MSET and MGET across all slots.
    let pairs: Vec<(String, String)> = (0..500)
        .map(|i| (format!("m:{i}"), format!("{i}")))
        .collect();
    redis::cmd("MSET").arg(&pairs).query::<()>(&mut c).unwrap();
    let names: Vec<&String> = pairs.iter().map(|(k, _)| k).collect();
    let got: Vec<String> = redis::cmd("MGET").arg(&names).query(&mut c).unwrap();
    assert_eq!(
        got,
        pairs.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>()
    );
    let deleted: i64 = redis::cmd("DEL").arg(&names[..100]).query(&mut c).unwrap();
    assert_eq!(deleted, 100);

    // A script over hash-tagged keys; keys of two slots are refused as a cluster does.
    let n: i64 = redis::cmd("EVAL")
        .arg("redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCRBY', KEYS[2], ARGV[1])")
        .arg(2)
        .arg("{user1}:a")
        .arg("{user1}:b")
        .arg(5)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 5);
    // A script loaded once runs by its SHA1 on every master; the redis crate's
    // Script loads it when EVALSHA says NOSCRIPT.
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.call('GET', KEYS[1])")
        .query(&mut c)
        .unwrap();
    for k in keys.iter().step_by(1001) {
        let v: String = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(k)
            .query(&mut c)
            .unwrap();
        assert_eq!(v, format!("value of {k}"));
    }
    for port in cluster
        .masters()
        .iter()
        .map(|&m| cluster.nodes[m].addr.port())
    {
        assert_eq!(
            cli(port, &["SCRIPT", "EXISTS", &sha]).trim(),
            "1",
            "on {port}"
        );
    }
    let exists: Vec<bool> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, [true]);
    let () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut c).unwrap();
    let script = redis::Script::new("return redis.call('STRLEN', KEYS[1])");
    for k in keys.iter().step_by(1001) {
        let n: usize = script.key(k).invoke(&mut c).unwrap();
        assert_eq!(n, format!("value of {k}").len());
    }
    // A library of functions, loaded once, is called on every master.
    let name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg("#!lua name=cashewlib\nredis.register_function('cashew_len', function(keys) return redis.call('STRLEN', keys[1]) end)")
        .query(&mut c)
        .unwrap();
    assert_eq!(name, "cashewlib");
    for k in keys.iter().step_by(1001) {
        let n: usize = redis::cmd("FCALL")
            .arg("cashew_len")
            .arg(1)
            .arg(k)
            .query(&mut c)
            .unwrap();
        assert_eq!(n, format!("value of {k}").len());
    }
    let () = redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("cashewlib")
        .query(&mut c)
        .unwrap();
    for port in cluster
        .masters()
        .iter()
        .map(|&m| cluster.nodes[m].addr.port())
    {
        assert_eq!(cli(port, &["FUNCTION", "LIST"]).trim(), "", "on {port}");
    }

    let e = redis::cmd("SUNION")
        .arg("{a}x")
        .arg("{b}y")
        .query::<Vec<String>>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("CROSSSLOT"), "{e}");
    let same: Vec<String> = redis::cmd("SUNION")
        .arg("{a}x")
        .arg("{a}y")
        .query(&mut c)
        .unwrap();
    assert!(same.is_empty());

    // Cluster commands see one node that owns every slot: cashew.
    let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).unwrap();
    assert!(info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:1"));
    let slots: redis::Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut c).unwrap();
    let text = format!("{slots:?}");
    assert!(
        text.contains("16383") && text.contains(&addr.port().to_string()),
        "{text}"
    );
    for key in ["somekey", "{user1}:a", "foo"] {
        let ours: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut c)
            .unwrap();
        assert_eq!(
            ours.to_string(),
            cluster.cli(1, &["CLUSTER", "KEYSLOT", key]).trim()
        );
    }
    let slot = cluster
        .cli(0, &["CLUSTER", "KEYSLOT", "key:1"])
        .trim()
        .to_string();
    let count: i64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(&slot)
        .query(&mut c)
        .unwrap();
    assert!(count >= 1, "the slot of key:1 holds it");
    // The stats JSON counts redirections (none here: the map was right).
    let stats: serde_json::Value = serde_json::from_str(&cashew.stats_json()).unwrap();
    assert_eq!(stats["cluster"]["cluster_moved"], 0, "{stats}");
}

/// What clients saw while the cluster changed under them.
#[derive(Default)]
struct Seen {
    requests: u64,
    /// Replies that were not what the request should get (a MOVED or ASK
    /// passed on, a stale value, an error), with when they came.
    wrong: Vec<(Duration, String)>,
    /// Reads of an older value than the last acknowledged write: a write the
    /// cluster lost (only where `lossy`: a killed master's last writes may not have
    /// reached its replica, as Redis replicates after acknowledging).
    lost: u64,
}

/// Clients pipelining writes and reads of their own keys through cashew until
/// `stop`; every reply is checked, and at the end every key holds its last value
/// (or, when `lossy`, an older one, counted as lost).
fn load(
    addr: SocketAddr,
    clients: usize,
    stop: Arc<AtomicBool>,
    lossy: bool,
) -> Vec<std::thread::JoinHandle<Seen>> {
    let started = Instant::now();
    (0..clients)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = client(addr);
                let mut seen = Seen::default();
                let keys: Vec<String> = (0..400).map(|i| format!("load:{t}:{i}")).collect();
                let mut last: Vec<Option<u64>> = vec![None; keys.len()];
                // Keys whose last write failed: it may or may not have been applied.
                let mut unknown = vec![false; keys.len()];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut pipe = redis::pipe();
                    let mut expect = Vec::new();
                    let mut written = Vec::new();
                    for j in 0..16 {
                        n += 1;
                        let k = ((n * 7919) % keys.len() as u64) as usize;
                        if j % 2 == 0 {
                            pipe.set(&keys[k], n).ignore();
                            last[k] = Some(n);
                            written.push(k);
                        } else {
                            pipe.get(&keys[k]);
                            expect.push((
                                k,
                                (!unknown[k] && !written.contains(&k)).then_some(last[k]),
                            ));
                        }
                    }
                    match pipe.query::<Vec<Option<u64>>>(&mut c) {
                        Err(e) => {
                            seen.wrong.push((started.elapsed(), e.to_string()));
                            for &k in &written {
                                unknown[k] = true;
                            }
                            c = client(addr);
                        }
                        Ok(replies) => {
                            for &k in &written {
                                unknown[k] = false;
                            }
                            for (reply, (k, want)) in replies.iter().zip(&expect) {
                                let Some(want) = want else { continue };
                                if reply == want {
                                    continue;
                                }
                                if lossy && reply < want {
                                    seen.lost += 1;
                                    unknown[*k] = true;
                                } else {
                                    seen.wrong.push((
                                        started.elapsed(),
                                        format!("GET gave {reply:?}, wanted {want:?}"),
                                    ));
                                }
                            }
                        }
                    }
                    seen.requests += 16;
                }
                for ((k, want), unknown) in keys.iter().zip(&last).zip(&unknown) {
                    let got: Option<u64> = redis::cmd("GET").arg(k).query(&mut c).unwrap_or(None);
                    if got != *want && !unknown && lossy && got < *want {
                        seen.lost += 1;
                    } else if got != *want && !unknown {
                        seen.wrong.push((
                            started.elapsed(),
                            format!("{k} holds {got:?} after, wanted {want:?}"),
                        ));
                    }
                }
                seen
            })
        })
        .collect()
}

fn finish(threads: Vec<std::thread::JoinHandle<Seen>>) -> Seen {
    let mut all = Seen::default();
    for t in threads {
        let s = t.join().unwrap();
        all.requests += s.requests;
        all.wrong.extend(s.wrong);
        all.lost += s.lost;
    }
    all
}

#[test]
fn resharding_under_load_is_invisible_to_clients() {
    let cluster = RedisCluster::start(3, 0);
    let admin = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let (cashew, addr) = cashew_with_args(
        &cluster,
        "  cluster_refresh_interval: 500\n",
        &["--admin", &admin],
    );
    let mut c = client(addr);
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        pipe.set(format!("before:{i}"), i).ignore();
    }
    pipe.query::<()>(&mut c).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(addr, 4, stop.clone(), false);
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let out = std::process::Command::new(cashew_testkit::program("redis-cli"))
        .args(["--cluster", "reshard", &cluster.nodes[0].addr.to_string()])
        .args([
            "--cluster-from",
            &cluster.id(0),
            "--cluster-to",
            &cluster.id(1),
        ])
        .args(["--cluster-slots", "1000", "--cluster-yes"])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "reshard: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster.wait_ok(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    let seen = finish(threads);
    let stats: serde_json::Value = serde_json::from_str(&cashew.stats_json()).unwrap();
    println!(
        "1,000 slots moved in {took:?}; {} requests, MOVED followed {}, ASK followed {}, retries {}",
        seen.requests, stats["cluster"]["cluster_moved"], stats["cluster"]["cluster_ask"], stats["cluster"]["cluster_retries"]
    );
    assert!(
        seen.wrong.is_empty(),
        "{} wrong replies: {:?}",
        seen.wrong.len(),
        &seen.wrong[..seen.wrong.len().min(10)]
    );
    assert!(seen.requests > 1000, "the load ran: {}", seen.requests);
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        pipe.get(format!("before:{i}"));
    }
    let before: Vec<u64> = pipe.query(&mut c).unwrap();
    assert_eq!(
        before,
        (0..10_000).collect::<Vec<u64>>(),
        "keys written before hold their values"
    );
    // The new owner serves the moved slots: cashew routes there without redirections.
    let moved_before = stats["cluster"]["cluster_moved"].as_u64().unwrap();
    for i in 0..2000 {
        let _: () = redis::cmd("SET")
            .arg(format!("after:{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let stats: serde_json::Value = serde_json::from_str(&cashew.stats_json()).unwrap();
    assert_eq!(
        stats["cluster"]["cluster_moved"].as_u64().unwrap(),
        moved_before,
        "the map was read again: no MOVED"
    );

    // cashew status shows the nodes with their slots, /metrics the map's reads.
    let out = std::process::Command::new(CASHEW)
        .args(["status", "--admin", &admin])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    println!("{status}");
    assert!(status.contains("cluster: 16384 slots covered"), "{status}");
    let from = cluster.nodes[0].addr.to_string();
    let line = status
        .lines()
        .skip_while(|l| !l.contains(&from))
        .nth(1)
        .unwrap_or_default();
    assert!(
        line.starts_with("    master: "),
        "{from} is a master with its slots: {status}"
    );
    let owned: usize = line
        .trim()
        .trim_start_matches("master: ")
        .split(' ')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum();
    assert_eq!(
        owned,
        5461 - 1000,
        "{from} gave 1,000 of its slots away: {line}"
    );
    let api = AdminApi::new(admin.parse().unwrap(), None);
    let (code, metrics) = api.get_text("/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("cashew_cluster_map_reads_total{reason=\"asked\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("cashew_cluster_moved_total{pool=\"cluster\"}"));
}

/// How long until the killed master's replica has taken over: the killed node
/// is marked failed and three live masters hold slots, in every live node's view.
fn wait_promoted(cluster: &RedisCluster, killed: usize, limit: Duration) -> Duration {
    let started = Instant::now();
    let victim = format!("{}@", cluster.nodes[killed].addr);
    // Every node that lives must see it: cashew may read the map from any of them,
    // and gossip reaches them one after another (up to a second apart when the
    // machine is busy).
    let sees_it = |node: usize| {
        let nodes = cluster.cli(node, &["CLUSTER", "NODES"]);
        let live_masters = nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .filter(|l| l.split(' ').count() > 8)
            .count();
        let marked = nodes
            .lines()
            .any(|l| l.contains(&victim) && l.contains("fail"));
        (marked && live_masters == 3, nodes)
    };
    loop {
        let views: Vec<(bool, String)> = (0..cluster.nodes.len())
            .filter(|&i| i != killed)
            .map(sees_it)
            .collect();
        if views.iter().all(|(seen, _)| *seen) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "no failover within {limit:?}:\n{}",
            views
                .iter()
                .map(|(_, nodes)| nodes.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_master_killed_under_load_is_replaced_and_a_graceful_failover_loses_nothing() {
    let mut cluster = RedisCluster::start(3, 1);
    let (cashew, addr) = cashew_for(&cluster, "  cluster_refresh_interval: 500\n");

    // A graceful failover (CLUSTER FAILOVER on a replica): no error at all.
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(addr, 4, stop.clone(), false);
    std::thread::sleep(Duration::from_millis(500));
    let replica = (0..cluster.nodes.len())
        .find(|&i| cluster.cli(i, &["ROLE"]).starts_with("slave"))
        .unwrap();
    assert_eq!(cluster.cli(replica, &["CLUSTER", "FAILOVER"]).trim(), "OK");
    let started = Instant::now();
    while !cluster.cli(replica, &["ROLE"]).starts_with("master") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the replica took over"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.wait_ok(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let seen = finish(threads);
    println!(
        "graceful failover: {} requests, {} wrong",
        seen.requests,
        seen.wrong.len()
    );
    assert!(
        seen.wrong.is_empty(),
        "{:?}\n{}",
        &seen.wrong[..seen.wrong.len().min(10)],
        cashew.log()
    );

    // A master killed: errors only for what was in flight on it, then none.
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(addr, 4, stop.clone(), true);
    std::thread::sleep(Duration::from_millis(500));
    let victim = cluster.masters()[0];
    let killed_at = Instant::now();
    cluster.nodes[victim].signal("KILL");
    let promoted = wait_promoted(&cluster, victim, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let seen = finish(threads);
    let since_kill = killed_at.elapsed();
    let last_error = seen.wrong.iter().map(|(t, _)| *t).max();
    println!(
        "master killed: replica promoted after {promoted:?}; {} requests, {} errors, the last {:?} after the load started; {} reads of a write the cluster lost; stats {}",
        seen.requests,
        seen.wrong.len(),
        last_error,
        seen.lost,
        cashew.stats_json()
    );
    // The load began 0.5 s before the kill: errors may come only around the kill
    // (what was in flight on the dead node), none once its replica serves.
    for (t, what) in &seen.wrong {
        println!("error {t:?}: {what}");
    }
    for (t, what) in &seen.wrong {
        assert!(
            what.contains("onnection") || what.contains("closed") || what.contains("broken"),
            "only failures of the dead node's connections: {what}"
        );
        assert!(
            *t < Duration::from_millis(500) + promoted + Duration::from_millis(600),
            "an error {t:?} into the load, after the failover: {what}"
        );
    }
    assert!(
        seen.wrong.len() <= 4 * 16,
        "at most one pipeline per client fails: {}",
        seen.wrong.len()
    );
    assert!(since_kill > promoted);
    let _ = cluster.nodes.remove(victim);
}

#[test]
fn redis_py_cluster_client_works_through_cashew() {
    let cluster = RedisCluster::start(3, 0);
    let (_cashew, addr) = cashew_for(&cluster, "");
    let out = cashew_testkit::run_python_script(
        "redis_cluster_client.py",
        &[addr.ip().to_string(), addr.port().to_string()],
    );
    assert!(out.contains("RedisCluster through cashew: ok"), "{out}");
}

/// `cmdstat_get` calls a node has served.
fn gets_served(port: u16) -> u64 {
    let stats = cli(port, &["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// The servers of cashew's pool `cluster` now.
fn nodes_known(cashew: &Cashew) -> usize {
    let stats: serde_json::Value = serde_json::from_str(&cashew.stats_json()).unwrap();
    stats["cluster"]
        .as_object()
        .unwrap()
        .values()
        .filter(|v| v.is_object())
        .count()
}

/// How many times cashew has logged a changed slot map.
fn map_changes(cashew: &Cashew) -> usize {
    cashew.log().matches("the slot map changed").count()
}

#[test]
fn read_from_replica_sends_reads_to_replicas() {
    let cluster = RedisCluster::start(3, 1);
    let (cashew, addr) = cashew_for(
        &cluster,
        "  read_from: replica\n  cluster_refresh_interval: 200\n",
    );
    let mut c = client(addr);
    let mut pipe = redis::pipe();
    for i in 0..3000 {
        pipe.set(format!("r:{i}"), i).ignore();
    }
    pipe.query::<()>(&mut c).unwrap();
    let masters = cluster.masters();
    // A replica shows as online in CLUSTER SHARDS once its replication offset is
    // past 0 (after writes, or the master's first ping 10 s on), and leaves the map
    // while the cluster says it failed (a node timeout of 1 s, which a loaded
    // machine can reach): a pass whose map changed while it ran is made again.
    let started = Instant::now();
    for attempt in 1.. {
        loop {
            let (nodes, changes) = (nodes_known(&cashew), map_changes(&cashew));
            // Settled: all six nodes, and no change for a few refreshes.
            std::thread::sleep(Duration::from_millis(600));
            if nodes == 6 && nodes_known(&cashew) == 6 && map_changes(&cashew) == changes {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "cashew knows {nodes} nodes\n{}",
                cashew.log()
            );
        }
        let changes = map_changes(&cashew);
        let before: Vec<u64> = (0..cluster.nodes.len())
            .map(|i| gets_served(cluster.nodes[i].port()))
            .collect();
        let mut pipe = redis::pipe();
        for i in 0..3000 {
            pipe.get(format!("r:{i}"));
        }
        let values: Vec<u64> = pipe.query(&mut c).unwrap();
        assert_eq!(values, (0..3000).collect::<Vec<u64>>());
        let served: Vec<u64> = (0..cluster.nodes.len())
            .map(|i| gets_served(cluster.nodes[i].port()) - before[i])
            .collect();
        let by_masters: u64 = masters.iter().map(|&m| served[m]).sum();
        let by_replicas: u64 = served.iter().sum::<u64>() - by_masters;
        println!(
            "GETs served by masters {by_masters}, by replicas {by_replicas}: {served:?} (map changes {changes})"
        );
        if by_replicas == 3000 {
            break;
        }
        // Only a map that changed during the pass may send reads to a master.
        assert!(
            map_changes(&cashew) != changes && attempt < 5,
            "every read went to a replica: {by_replicas} of 3000, the map unchanged\n{}",
            cashew.log()
        );
    }
    // Writes still go to masters: a replica would answer MOVED, which cashew follows.
    let _: () = redis::cmd("SET").arg("r:0").arg("w").query(&mut c).unwrap();
}

#[test]
fn a_node_added_and_given_slots_under_load_loses_nothing() {
    let mut cluster = RedisCluster::start(3, 0);
    let (cashew, addr) = cashew_for(&cluster, "  cluster_refresh_interval: 500\n");
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(addr, 4, stop.clone(), false);
    std::thread::sleep(Duration::from_millis(300));
    let node = cashew_testkit::cluster::cluster_node();
    let redis_cli = |args: &[&str]| {
        let out = std::process::Command::new(cashew_testkit::program("redis-cli"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    let seed = cluster.nodes[0].addr.to_string();
    redis_cli(&["--cluster", "add-node", &node.addr.to_string(), &seed]);
    cluster.nodes.push(node);
    cluster.wait_ok(Duration::from_secs(20));
    let started = Instant::now();
    redis_cli(&[
        "--cluster",
        "rebalance",
        &seed,
        "--cluster-use-empty-masters",
    ]);
    let took = started.elapsed();
    cluster.wait_ok(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    let seen = finish(threads);
    let owned = cluster.cli(3, &["CLUSTER", "NODES"]);
    let new_has_slots = owned
        .lines()
        .any(|l| l.contains("myself") && l.split(' ').count() > 8);
    println!(
        "rebalanced onto a new node in {took:?}; {} requests; {}",
        seen.requests,
        cashew.stats_json().lines().next().unwrap_or("")
    );
    assert!(new_has_slots, "the new node owns slots:\n{owned}");
    assert!(
        seen.wrong.is_empty(),
        "{:?}",
        &seen.wrong[..seen.wrong.len().min(10)]
    );
    assert!(seen.requests > 1000);
}

#[test]
fn a_cluster_behind_tls_and_a_password_is_discovered_and_served() {
    // A managed cluster as clouds offer it: TLS only, AUTH required.
    let ca = cashew_testkit::tls::Authority::new("cashew cluster CA");
    let (server, proxy, admin) = (ca.issue("server"), ca.issue("proxy"), ca.issue("admin"));
    let cluster = RedisCluster::start_tls(3, &server, &admin, &ca.ca(), "s3cret");
    let settings = format!(
        "  redis_auth: s3cret\n  server_tls:\n    ca: {}\n    cert: {}\n    key: {}\n",
        ca.ca().display(),
        proxy.cert.display(),
        proxy.key.display()
    );
    let (cashew, addr) = cashew_for(&cluster, &settings);
    let mut c = redis::Client::open(format!("redis://:s3cret@{addr}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.set(format!("t:{i}"), i).ignore();
    }
    pipe.query::<()>(&mut c).unwrap();
    let names: Vec<String> = (0..1000).map(|i| format!("t:{i}")).collect();
    let got: Vec<u64> = redis::cmd("MGET").arg(&names).query(&mut c).unwrap();
    assert_eq!(got, (0..1000).collect::<Vec<u64>>());
    // The map was read over TLS: cashew knows the three nodes, and its keys are on them.
    let stats: serde_json::Value = serde_json::from_str(&cashew.stats_json()).unwrap();
    let nodes = stats["cluster"]
        .as_object()
        .unwrap()
        .values()
        .filter(|v| v.is_object())
        .count();
    assert_eq!(nodes, 3, "{stats}");
    let keys: u64 = (0..3)
        .map(|n| cluster.cli(n, &["DBSIZE"]).trim().parse::<u64>().unwrap())
        .sum();
    assert_eq!(keys, 1000);
    assert_eq!(stats["cluster"]["cluster_moved"], 0, "{stats}");
}

/// The pipelined sequences of `tests/data/redis-sequences.txt` (transactions with
/// errors, blocking calls, subscriptions over several masters) get through a Redis
/// Cluster pool the bytes a redis-server gives them, in the same order.
#[test]
fn pipelined_sequences_get_a_servers_replies_through_a_cluster_pool() {
    let cluster = RedisCluster::start(3, 0);
    let (_cashew, listen) = cashew_for(&cluster, "");
    let reference = redis_server(&[]);
    compare_sequences(
        include_str!("data/redis-sequences.txt"),
        reference.addr,
        listen,
    );
}

/// Messages a pattern subscriber through cashew gets for `published` messages.
fn pattern_messages(addr: SocketAddr, published: usize) -> Vec<String> {
    let mut subscriber = client(addr);
    let mut pubsub = subscriber.as_pubsub();
    pubsub.psubscribe("news.*").unwrap();
    let mut publisher = client(addr);
    for i in 0..published {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(format!("news.{i}"))
            .arg(format!("m{i}"))
            .query(&mut publisher)
            .unwrap();
    }
    messages_until_quiet(&mut pubsub, Duration::from_millis(500))
}

#[test]
fn a_pattern_subscriber_gets_each_message_once() {
    // Every node of a cluster hears every PUBLISH (the cluster bus carries it), so a
    // pattern needs one node, not all six.
    // Messages published on different nodes reach it in the bus's order, as with
    // a cluster client.
    let cluster = RedisCluster::start(3, 1);
    let (_cashew, addr) = cashew_for(&cluster, "");
    let mut got = pattern_messages(addr, 20);
    got.sort_by_key(|m| m[1..].parse::<u32>().unwrap());
    assert_eq!(got, (0..20).map(|i| format!("m{i}")).collect::<Vec<_>>());
}

/// A RESP3 client of cashew at `addr` that turned `CLIENT TRACKING` on.
fn tracking_client(addr: SocketAddr) -> RespConn {
    let mut c = RespConn::connect(addr);
    assert!(c.request(&[b"HELLO", b"3"]).starts_with(b"%"));
    assert_eq!(c.request(&[b"CLIENT", b"TRACKING", b"ON"]), b"+OK\r\n");
    c
}

/// The keys of the `invalidate` pushes `c` gets until none comes for 300 ms.
fn invalidated_keys(c: &mut RespConn) -> BTreeSet<String> {
    c.0.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut keys = BTreeSet::new();
    while let Some(push) = c.try_reply() {
        assert!(
            push.starts_with(b">2\r\n"),
            "{}",
            String::from_utf8_lossy(&push)
        );
        let parts = reply_elements(&push).unwrap();
        for key in reply_elements(parts[1]).unwrap() {
            keys.insert(String::from_utf8(element_text(key).unwrap().to_vec()).unwrap());
        }
    }
    c.0.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    keys
}

#[test]
fn a_tracking_client_hears_of_its_keys_on_every_node_and_after_a_redirection() {
    let cluster = RedisCluster::start(3, 0);
    let (_cashew, addr) = cashew_for(&cluster, "  cluster_refresh_interval: 600000\n");
    let keys: Vec<String> = (0..30).map(|i| format!("cached:{i}")).collect();
    let mut w = client(addr);
    for k in &keys {
        let _: () = redis::cmd("SET").arg(k).arg("old").query(&mut w).unwrap();
    }
    let owners: BTreeSet<u16> = keys.iter().map(|k| owner_port(&cluster, k)).collect();
    assert_eq!(owners.len(), 3, "the keys are on every master");

    let mut c = tracking_client(addr);
    for k in &keys {
        assert_eq!(c.request(&[b"GET", k.as_bytes()]), b"$3\r\nold\r\n");
    }
    for k in &keys {
        let _: () = redis::cmd("SET").arg(k).arg("new").query(&mut w).unwrap();
    }
    let all: BTreeSet<String> = keys.iter().cloned().collect();
    assert_eq!(invalidated_keys(&mut c), all);

    // A key's slot moves behind cashew's back: its read is redirected (MOVED) and
    // followed on the client's own tracking connection to the new owner, which
    // then tells it of the key's change.
    let key = &keys[0];
    let from = cluster
        .nodes
        .iter()
        .position(|n| n.port() == owner_port(&cluster, key))
        .unwrap();
    let to = (from + 1) % 3;
    let slot = cluster
        .cli(0, &["CLUSTER", "KEYSLOT", key])
        .trim()
        .to_string();
    let (from_id, to_id) = (cluster.id(from), cluster.id(to));
    cluster.cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
    cluster.cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
    let to_port = cluster.nodes[to].port().to_string();
    cluster.cli(
        from,
        &[
            "MIGRATE",
            "127.0.0.1",
            &to_port,
            "",
            "0",
            "5000",
            "KEYS",
            key,
        ],
    );
    for node in 0..3 {
        cluster.cli(node, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
    }
    assert_eq!(c.request(&[b"GET", key.as_bytes()]), b"$3\r\nnew\r\n");
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("newer")
        .query(&mut w)
        .unwrap();
    assert_eq!(invalidated_keys(&mut c), BTreeSet::from([key.clone()]));
}
