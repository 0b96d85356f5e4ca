//! Redis servers named by their Sentinel masters: 3 redis-sentinel processes watch
//! two masters with a replica each; a master is stopped under load, the Sentinels
//! fail it over, and cashew serves from the new master soon after `+switch-master`,
//! with no reply wrong or out of order.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cashew_testkit::{free_port, program, redis_server, Cashew, Process};
use redis::Connection;

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn connect(addr: SocketAddr) -> Connection {
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap()
}

fn sentinel(dir: &std::path::Path, masters: &[(&str, &Process)]) -> Process {
    let port = free_port("127.0.0.1");
    let mut conf =
        format!("port {port}\nbind 127.0.0.1\ndaemonize no\nsentinel resolve-hostnames no\n");
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

fn sentinel_query(s: &Process, args: &[&str]) -> redis::Value {
    redis::cmd("SENTINEL")
        .arg(args)
        .query(&mut connect(s.addr))
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

#[test]
fn a_master_failed_over_by_the_sentinels_serves_again_through_cashew() {
    // Declared first, dropped last: the Sentinels (dropped before) never see a
    // port of theirs taken by another test's server.
    let m1 = redis_server(&[]);
    let m2 = redis_server(&[]);
    let m1_port = m1.port().to_string();
    let r1 = redis_server(&["--replicaof", "127.0.0.1", &m1_port]);
    let _r2 = redis_server(&["--replicaof", "127.0.0.1", &m2.port().to_string()]);
    let dir = std::env::temp_dir().join(format!("cashew-sentinel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sentinels: Vec<Process> = (0..3)
        .map(|_| sentinel(&dir, &[("shard-a", &m1), ("shard-b", &m2)]))
        .collect();
    // Each Sentinel knows the two others and each master's replica.
    wait_for(
        "the Sentinels know each other and the replicas",
        Duration::from_secs(30),
        || {
            sentinels.iter().all(|s| {
                ["shard-a", "shard-b"].iter().all(|m| {
                    len_of(&sentinel_query(s, &["sentinels", m])) == 2
                        && len_of(&sentinel_query(s, &["replicas", m])) == 1
                })
            })
        },
    );

    let listen: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let list: String = sentinels
        .iter()
        .map(|s| format!("    - {}\n", s.addr))
        .collect();
    let yaml = format!(
        "queue:\n  listen: {listen}\n  redis: true\n  timeout: 500\n  sentinels:\n{list}  servers:\n    - shard-a:1\n    - shard-b:1\n"
    );
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
    let _ = std::fs::remove_dir_all(&dir);
}
