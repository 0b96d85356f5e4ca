//! Redis servers named by their Sentinel masters: 3 redis-sentinel processes watch
//! two masters with a replica each; a master is stopped under load, the Sentinels
//! fail it over, and cashew serves from the new master soon after `+switch-master`,
//! with no reply wrong or out of order.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cashew_testkit::resp::messages_until_quiet;
use cashew_testkit::tls::{Authority, Issued};
use cashew_testkit::{free_port, program, redis_server, AdminApi, Cashew, Process};
use redis::Connection;

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn connect(addr: SocketAddr) -> Connection {
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap()
}

/// A Sentinel of `masters`, with `extra` lines of configuration.
fn sentinel(dir: &std::path::Path, masters: &[(&str, &Process)], extra: &str) -> Process {
    let port = free_port("127.0.0.1");
    let mut conf = format!(
        "port {port}\nbind 127.0.0.1\ndaemonize no\nsentinel resolve-hostnames no\n{extra}"
    );
    for (name, master) in masters {
        conf.push_str(&format!(
            "sentinel monitor {name} 127.0.0.1 {} 2\nsentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 10000\nsentinel parallel-syncs {name} 1\n",
            master.port()
        ));
    }
    let path = dir.join(format!("sentinel-{port}.conf"));
    std::fs::write(&path, conf).unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    Process::spawn(
        "redis-sentinel",
        Command::new(program("redis-sentinel"))
            .arg(&path)
            .current_dir(dir),
        addr,
    )
}

fn sentinel_query(s: &Process, password: Option<&str>, args: &[&str]) -> redis::Value {
    let mut c = connect(s.addr);
    if let Some(password) = password {
        let _: () = redis::cmd("AUTH").arg(password).query(&mut c).unwrap();
    }
    redis::cmd("SENTINEL")
        .arg(args)
        .query(&mut c)
        .unwrap_or(redis::Value::Nil)
}

fn len_of(v: &redis::Value) -> usize {
    match v {
        redis::Value::Array(items) => items.len(),
        _ => 0,
    }
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Two masters, `shard-a` and `shard-b`, with a replica each, watched by three
/// Sentinels that know each other and the replicas.
struct Shards {
    // Dropped first: the Sentinels never see a port of theirs taken by another
    // test's server.
    sentinels: Vec<Process>,
    /// Where cashew is told the Sentinels are (their TLS ports, with TLS).
    listed: Vec<String>,
    m1: Process,
    m2: Process,
    r1: Process,
    r2: Process,
    dir: std::path::PathBuf,
}

impl Shards {
    fn start(name: &str) -> Shards {
        Shards::start_guarded(name, None, None)
    }

    /// As [`start`](Self::start), with Sentinels that want `password` and, with
    /// `tls`, also listen with TLS (the certificate and its CA) on a port of their
    /// own, which cashew is given.
    fn start_guarded(name: &str, password: Option<&str>, tls: Option<(&Issued, &Path)>) -> Shards {
        let m1 = redis_server(&[]);
        let m2 = redis_server(&[]);
        let r1 = redis_server(&["--replicaof", "127.0.0.1", &m1.port().to_string()]);
        let r2 = redis_server(&["--replicaof", "127.0.0.1", &m2.port().to_string()]);
        let dir = std::env::temp_dir().join(format!("cashew-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut listed = Vec::new();
        let sentinels: Vec<Process> = (0..3)
            .map(|_| {
                let mut extra = String::new();
                if let Some(password) = password {
                    extra.push_str(&format!("requirepass {password}\n"));
                }
                if let Some((issued, ca)) = tls {
                    let port = free_port("127.0.0.1");
                    extra.push_str(&format!(
                        "tls-port {port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients no\n",
                        issued.cert.display(),
                        issued.key.display(),
                        ca.display()
                    ));
                    listed.push(format!("127.0.0.1:{port}"));
                }
                let s = sentinel(&dir, &[("shard-a", &m1), ("shard-b", &m2)], &extra);
                if tls.is_none() {
                    listed.push(s.addr.to_string());
                }
                s
            })
            .collect();
        wait_for(
            "the Sentinels know each other and the replicas",
            Duration::from_secs(30),
            || {
                sentinels.iter().all(|s| {
                    ["shard-a", "shard-b"].iter().all(|m| {
                        len_of(&sentinel_query(s, password, &["sentinels", m])) == 2
                            && len_of(&sentinel_query(s, password, &["replicas", m])) == 1
                    })
                })
            },
        );
        Shards {
            sentinels,
            listed,
            m1,
            m2,
            r1,
            r2,
            dir,
        }
    }

    /// A pool `queue` on `listen` over the two masters, with `settings`.
    fn pool_yaml(&self, listen: SocketAddr, settings: &str) -> String {
        let list: String = self.listed.iter().map(|s| format!("    - {s}\n")).collect();
        format!(
            "queue:\n  listen: {listen}\n  redis: true\n  timeout: 500\n{settings}  sentinels:\n{list}  servers:\n    - shard-a:1\n    - shard-b:1\n"
        )
    }
}

impl Shards {
    /// Writes `n` keys `job:<i>` (each holding its name) through cashew at
    /// `listen`: how many are on each master, both of which hold some, once
    /// their replicas have them too.
    fn write_jobs(&self, listen: SocketAddr, n: usize) -> (Vec<String>, u64, u64) {
        let mut c = connect(listen);
        let keys: Vec<String> = (0..n).map(|i| format!("job:{i}")).collect();
        for k in &keys {
            let _: () = redis::cmd("SET").arg(k).arg(k).query(&mut c).unwrap();
        }
        let (on_m1, on_m2) = (dbsize(&self.m1), dbsize(&self.m2));
        assert_eq!(on_m1 + on_m2, n as u64);
        assert!(on_m1 > 0 && on_m2 > 0, "{on_m1} + {on_m2}");
        wait_for(
            "the replicas have the keys",
            Duration::from_secs(10),
            || dbsize(&self.r1) == on_m1 && dbsize(&self.r2) == on_m2,
        );
        (keys, on_m1, on_m2)
    }

    /// After [`write_jobs`](Self::write_jobs) of 100 keys: stops shard-a's master,
    /// waits for cashew at `listen` to hear the Sentinels switch it, and checks
    /// that 100 more keys are written to the new master (shard-a's replica) or
    /// to shard-b's.
    fn fail_over_shard_a(&self, cashew: &Cashew, listen: SocketAddr) {
        self.m1.freeze();
        wait_for(
            "cashew hears of the switch",
            Duration::from_secs(60),
            || cashew.log().contains("master 'shard-a' switched"),
        );
        self.writes_reach_the_new_master(listen);
    }

    /// Once shard-a's replica is its master: 100 more keys written through cashew
    /// at `listen` are on it or on shard-b's master (after 100 of `write_jobs`).
    fn writes_reach_the_new_master(&self, listen: SocketAddr) {
        let after: Vec<String> = (0..100).map(|i| format!("task:{i}")).collect();
        wait_for("writes served", Duration::from_secs(10), || {
            let mut c = connect(listen);
            after
                .iter()
                .all(|k| redis::cmd("SET").arg(k).arg(k).query::<()>(&mut c).is_ok())
        });
        assert_eq!(dbsize(&self.r1) + dbsize(&self.m2), 200);
    }
}

/// The keys a redis server holds.
fn dbsize(p: &Process) -> u64 {
    redis::cmd("DBSIZE")
        .query::<u64>(&mut connect(p.addr))
        .unwrap()
}

impl Drop for Shards {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_listen() -> SocketAddr {
    format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap()
}

#[test]
fn a_master_failed_over_by_the_sentinels_serves_again_through_cashew() {
    let shards = Shards::start("sentinel");
    let Shards { m1, m2, r1, .. } = &shards;
    let listen = free_listen();
    let yaml = shards.pool_yaml(listen, "");
    let cashew = Cashew::start(CASHEW, &yaml, &["--threads", "2"]);
    let mut c = connect(listen);
    let keys: Vec<String> = (0..200).map(|i| format!("job:{i}")).collect();
    for k in &keys {
        let _: () = redis::cmd("SET").arg(k).arg(k).query(&mut c).unwrap();
    }
    let on_m1: u64 = redis::cmd("DBSIZE").query(&mut connect(m1.addr)).unwrap();
    let on_m2: u64 = redis::cmd("DBSIZE").query(&mut connect(m2.addr)).unwrap();
    assert_eq!(on_m1 + on_m2, 200);
    assert!(
        on_m1 > 0 && on_m2 > 0,
        "{on_m1} + {on_m2}: both masters serve"
    );
    // A key of shard-a, written and read back in a loop.
    let probe = keys
        .iter()
        .find(|k| {
            let v: Option<String> = redis::cmd("GET")
                .arg(k.as_str())
                .query(&mut connect(m1.addr))
                .unwrap();
            v.is_some()
        })
        .unwrap()
        .clone();
    wait_for("the replica has the keys", Duration::from_secs(10), || {
        let n: u64 = redis::cmd("DBSIZE").query(&mut connect(r1.addr)).unwrap();
        n == on_m1
    });

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let load = std::thread::spawn({
        let (stop, outcomes, probe) = (stop.clone(), outcomes.clone(), probe.clone());
        move || {
            let mut c = connect(listen);
            let mut i = 0u64;
            let end = Instant::now() + Duration::from_secs(90);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                i += 1;
                let set = redis::cmd("SET").arg(&probe).arg(i).query::<()>(&mut c);
                let got = redis::cmd("GET").arg(&probe).query::<Option<u64>>(&mut c);
                let ok = match (set, got) {
                    (Ok(()), Ok(value)) => {
                        assert_eq!(value, Some(i), "a reply out of order or lost");
                        true
                    }
                    _ => {
                        // The connection may be gone with the master: a new one.
                        if let Ok(fresh) = redis::Client::open(format!("redis://{listen}/"))
                            .and_then(|cl| cl.get_connection_with_timeout(Duration::from_secs(1)))
                        {
                            c = fresh;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                        false
                    }
                };
                outcomes.lock().unwrap().push((Instant::now(), ok));
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let killed_at = Instant::now();
    // Stopped rather than killed: its port stays taken while the Sentinels run.
    m1.freeze();
    wait_for(
        "cashew hears of the switch",
        Duration::from_secs(60),
        || cashew.log().contains("master 'shard-a' switched"),
    );
    let switched_at = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    let outcomes = outcomes.lock().unwrap();
    let failed = outcomes.iter().filter(|(_, ok)| !ok).count();
    let first_ok_after = outcomes
        .iter()
        .filter(|(at, ok)| *ok && *at > switched_at)
        .map(|(at, _)| *at - switched_at)
        .next();
    let failing_after = outcomes
        .iter()
        .filter(|(at, ok)| !ok && *at > switched_at + Duration::from_secs(1))
        .count();
    println!(
        "master stopped; switch heard {:.1} s later; {} requests, {failed} failed (all before the switch + 1 s: {}); first success {:?} after the switch",
        (switched_at - killed_at).as_secs_f64(),
        outcomes.len(),
        failing_after == 0,
        first_ok_after
    );
    assert!(
        first_ok_after.is_some_and(|d| d <= Duration::from_secs(1)),
        "{first_ok_after:?}"
    );
    assert_eq!(
        failing_after, 0,
        "requests failed more than 1 s after the switch"
    );
    // Everything written before is served from the new master.
    let mut c = connect(listen);
    for k in keys.iter().filter(|k| **k != probe) {
        let v: Option<String> = redis::cmd("GET").arg(k.as_str()).query(&mut c).unwrap();
        assert_eq!(v.as_deref(), Some(k.as_str()));
    }
}

/// GETs `server` has served (its `INFO commandstats`).
fn gets_served(server: &Process) -> u64 {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut connect(server.addr))
        .unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Reads every key through cashew (each must hold its own name); how many GETs
/// each of `servers` served for it, or `None` when a read failed.
fn read_all(listen: SocketAddr, keys: &[String], servers: &[&Process]) -> Option<Vec<u64>> {
    let before: Vec<u64> = servers.iter().map(|s| gets_served(s)).collect();
    let mut c = connect(listen);
    for k in keys {
        let v: Option<String> = redis::cmd("GET").arg(k.as_str()).query(&mut c).ok()?;
        assert_eq!(v.as_deref(), Some(k.as_str()));
    }
    Some(
        servers
            .iter()
            .zip(before)
            .map(|(s, b)| gets_served(s) - b)
            .collect(),
    )
}

#[test]
fn read_from_replica_reads_from_the_replicas_the_sentinels_report() {
    let shards = Shards::start("sentinel-reads");
    let Shards { m1, m2, r1, r2, .. } = &shards;
    let listen = free_listen();
    let yaml = shards.pool_yaml(listen, "  read_from: replica\n");
    let admin = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let cashew = Cashew::start(CASHEW, &yaml, &["--threads", "2", "--admin", &admin]);
    let status = Command::new(CASHEW)
        .args(["status", "--admin", &admin])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    for (replica, master) in [(r1, "shard-a"), (r2, "shard-b")] {
        let at = status
            .find(&replica.addr.to_string())
            .unwrap_or_else(|| panic!("{status}"));
        let next = status[at..].lines().nth(1).unwrap_or_default();
        assert_eq!(
            next.trim(),
            format!("replica of {master}, serving reads"),
            "{status}"
        );
    }
    let stats: serde_json::Value = serde_json::from_str(&cashew.stats_json()).unwrap();
    for replica in [r1, r2] {
        assert!(
            stats["queue"][replica.addr.to_string()].is_object(),
            "{} is a server of the pool: {stats}",
            replica.addr
        );
    }

    // Writes go to the masters, placed as without replicas.
    let (keys, on_m1, on_m2) = shards.write_jobs(listen, 200);
    let mut c = connect(listen);

    // Reads go to the replicas only.
    let servers = [m1, m2, r1, r2];
    let served = read_all(listen, &keys, &servers).unwrap();
    assert_eq!(served, vec![0, 0, on_m1, on_m2]);
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut c).unwrap();
    assert_eq!(values, keys.iter().cloned().map(Some).collect::<Vec<_>>());

    // A publish goes to the masters, where subscribers are, and a pattern
    // subscriber hears it once (not again from a replica).
    let mut subscriber = connect(listen);
    let mut pubsub = subscriber.as_pubsub();
    pubsub.psubscribe("news.*").unwrap();
    pubsub.subscribe("news.direct").unwrap();
    for i in 0..10 {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(format!("news.{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let _: i64 = redis::cmd("PUBLISH")
        .arg("news.direct")
        .arg("d")
        .query(&mut c)
        .unwrap();
    let mut heard = messages_until_quiet(&mut pubsub, Duration::from_millis(500));
    heard.sort();
    // news.direct comes once by its channel and once by the pattern.
    let mut expected: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    expected.extend(["d".to_string(), "d".to_string()]);
    expected.sort();
    assert_eq!(heard, expected);
    drop(pubsub);

    // A replica down: once the Sentinels say so, its master serves its reads.
    r1.freeze();
    let frozen = Instant::now();
    wait_for("reads served again", Duration::from_secs(20), || {
        read_all(listen, &keys, &[m1, m2, r2]).is_some_and(|s| s == vec![on_m1, 0, on_m2])
    });
    println!(
        "replica stopped: its master served every read {:.1} s later",
        frozen.elapsed().as_secs_f64()
    );
    assert!(
        cashew.log().contains("+sdown of replica"),
        "{}",
        cashew.log()
    );
    // Back up: reads go to it again.
    r1.signal("CONT");
    let back = Instant::now();
    wait_for("the replica serves again", Duration::from_secs(20), || {
        read_all(listen, &keys, &servers).is_some_and(|s| s == vec![0, 0, on_m1, on_m2])
    });
    println!(
        "replica back: it served every read again {:.1} s later",
        back.elapsed().as_secs_f64()
    );
}

#[test]
fn a_sentinel_that_hangs_costs_a_load_one_timeout_and_the_next_is_listened_to() {
    let shards = Shards::start("sentinel-hangs");
    // The first Sentinel listed hangs: the kernel still accepts its connections,
    // nothing answers on them.
    shards.sentinels[0].freeze();
    let listen = free_listen();
    let yaml = shards.pool_yaml(listen, "  read_from: replica\n");
    let admin: SocketAddr = free_listen();
    let cashew = Cashew::start(
        CASHEW,
        &yaml,
        &[
            "--threads",
            "2",
            "--admin",
            &admin.to_string(),
            "--admin-token",
            "t",
        ],
    );
    // A load asks four questions (two masters' addresses and replicas).
    let api = AdminApi::new(admin, Some("t"));
    let asked = Instant::now();
    let (status, body) = api.post("/reload");
    let took = asked.elapsed();
    assert_eq!(status, 200, "{body}");
    println!(
        "reload with the first Sentinel hung: {:.2} s",
        took.as_secs_f64()
    );
    assert!(
        took < Duration::from_millis(2500),
        "{took:?}: the hung Sentinel was asked more than once"
    );

    shards.write_jobs(listen, 100);
    // The two Sentinels that answer fail shard-a over; cashew, which listened to
    // the hung one first, hears of it from the next.
    shards.fail_over_shard_a(&cashew, listen);
    let log = cashew.log();
    assert!(log.contains("stopped answering"), "{log}");
}

#[test]
fn a_switch_made_while_no_sentinel_was_listened_to_is_caught_up() {
    let mut shards = Shards::start("sentinel-missed");
    // After the first Sentinel, three addresses that accept connections and never
    // answer (hosts gone quiet): once the first hangs, the listener spends seconds
    // on them before it reaches the second Sentinel.
    let quiet: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    for (i, q) in quiet.iter().enumerate() {
        shards
            .listed
            .insert(1 + i, q.local_addr().unwrap().to_string());
    }
    let listen = free_listen();
    let cashew = Cashew::start(CASHEW, &shards.pool_yaml(listen, ""), &["--threads", "2"]);
    shards.write_jobs(listen, 100);
    // The listened Sentinel hangs, and the second fails shard-a over at once
    // (`SENTINEL FAILOVER`), well before the listener comes to it.
    shards.sentinels[0].freeze();
    let failover = redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg("shard-a")
        .query::<()>(&mut connect(shards.sentinels[1].addr));
    assert!(failover.is_ok(), "{failover:?}");
    wait_for(
        "cashew catches up with the switch",
        Duration::from_secs(60),
        || cashew.log().contains("changed while not listened to"),
    );
    // Writes are kept once the reload is done and the old master follows the new
    // one (what it took before that is lost with its demotion, as in any failover).
    wait_for("the reload is done", Duration::from_secs(10), || {
        cashew.log().matches("configuration generation").count() >= 2
    });
    wait_for(
        "shard-a's old master follows the new one",
        Duration::from_secs(30),
        || {
            redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut connect(shards.m1.addr))
                .is_ok_and(|info| info.contains("role:slave"))
        },
    );
    shards.writes_reach_the_new_master(listen);
}

#[test]
fn sentinels_that_want_a_password_and_tls_are_asked_and_listened_to() {
    let authority = Authority::new("sentinels");
    let issued = authority.issue("sentinel");
    let shards = Shards::start_guarded(
        "sentinel-guarded",
        Some("sentinel-pw"),
        Some((&issued, &authority.ca())),
    );
    let Shards { m1, m2, r1, r2, .. } = &shards;
    let listen = free_listen();
    let settings = format!(
        "  read_from: replica\n  sentinel_auth: sentinel-pw\n  sentinel_tls:\n    ca: {}\n",
        authority.ca().display()
    );
    let cashew = Cashew::start(CASHEW, &shards.pool_yaml(listen, &settings), &[]);

    // Both questions of a load were answered: masters placed, replicas read.
    let (keys, on_m1, on_m2) = shards.write_jobs(listen, 100);
    let served = read_all(listen, &keys, &[m1, m2, r1, r2]).unwrap();
    assert_eq!(served, vec![0, 0, on_m1, on_m2]);
    // The listener authenticated too: it hears the failover.
    shards.fail_over_shard_a(&cashew, listen);

    // A wrong password: cashew says why, and does not start.
    let dir = cashew_testkit::temp_dir("sentinel-wrong-password");
    let path = dir.join("cashew.yml");
    let wrong = settings.replace("sentinel-pw", "not-the-password");
    std::fs::write(&path, shards.pool_yaml(free_listen(), &wrong)).unwrap();
    let out = Command::new(CASHEW)
        .args(["-c", path.to_str().unwrap(), "-s", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("knows master 'shard-a'"), "{stderr}");
    assert!(stderr.contains("WRONGPASS"), "{stderr}");
}
