//! `dns_refresh_ms`: a server given by host name whose name moves to another
//! address (a pod rescheduled behind a headless Service) gets its connections
//! moved there within a refresh, while its keys stay placed on it (placement uses
//! the name) and the other server keeps its connections.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use cashew_testkit::dns::{Answer, Nameserver};
use cashew_testkit::{free_port, memcached, memcached_on, Cashew, McConn};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

/// A free port on both loopback addresses, so the name's two homes share it.
fn port_free_on_both(a: &str, b: &str) -> u16 {
    loop {
        let port = free_port(a);
        if std::net::TcpListener::bind((b, port)).is_ok() {
            return port;
        }
    }
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// A name `name` served by a test nameserver, pointing at the first of two
/// memcached "homes" on the same port of two loopback addresses; `None` (and why)
/// where this machine does not let a test run its own nameserver.
struct Moving {
    ns: Nameserver,
    name: &'static str,
    port: u16,
    old_home: cashew_testkit::Process,
    new_home: cashew_testkit::Process,
}

const HOMES: (&str, &str) = ("127.0.0.2", "127.0.0.3");

impl Moving {
    fn start(name: &'static str) -> Option<Moving> {
        let ns = cashew_testkit::prerequisite("a test nameserver (root)", Nameserver::start())?;
        let port = port_free_on_both(HOMES.0, HOMES.1);
        let (old_home, new_home) = (memcached_on(HOMES.0, port), memcached_on(HOMES.1, port));
        ns.set(name, Answer::Address(HOMES.0.parse::<Ipv4Addr>().unwrap()));
        Some(Moving {
            ns,
            name,
            port,
            old_home,
            new_home,
        })
    }

    /// The name points at the second home from now on.
    fn r#move(&self) {
        self.ns.set(
            self.name,
            Answer::Address(HOMES.1.parse::<Ipv4Addr>().unwrap()),
        );
    }
}

#[test]
fn a_server_whose_name_moves_gets_connections_at_its_new_address() {
    let Some(moving) = Moving::start("cache-0.cache.test") else {
        return;
    };
    let Moving {
        ns,
        name,
        port,
        old_home,
        new_home,
    } = &moving;
    let (home_a, home_b) = HOMES;
    let other = memcached();
    let listen = free_port("127.0.0.1");
    let yaml = format!(
        "cache:\n  listen: 127.0.0.1:{listen}\n  dns_refresh_ms: 200\n  preconnect: true\n  servers:\n    - {name}:{port}:1 moving\n    - {}:1 other\n",
        other.addr
    );
    let cashew = Cashew::start_with_nameserver(CASHEW, &yaml, &[], ns);
    let proxy = format!("127.0.0.1:{listen}").parse().unwrap();
    let mut client = McConn::connect(proxy);
    let keys: Vec<String> = (0..200).map(|i| format!("key:{i}")).collect();
    for k in &keys {
        client.set(k, b"before");
    }
    let on_moving: Vec<&String> = keys
        .iter()
        .filter(|k| McConn::connect(old_home.addr).get(k).is_some())
        .collect();
    assert!(
        !on_moving.is_empty() && on_moving.len() < keys.len(),
        "the keys are spread over both servers: {} of {} on the moving one",
        on_moving.len(),
        keys.len()
    );
    let other_connections = McConn::connect(other.addr).stat("total_connections");
    // cashew's connections and the probe's own.
    let at_old_home = McConn::connect(old_home.addr).stat("curr_connections");
    assert!(at_old_home >= 2, "cashew is connected to the old address");

    moving.r#move();
    let moved_in = wait_until(
        "cashew's connection to the moving server at its old address closes",
        Duration::from_secs(10),
        || McConn::connect(old_home.addr).stat("curr_connections") == 1,
    );
    assert!(
        cashew
            .log()
            .contains(&format!("'{name}' from {home_a} to {home_b}")),
        "the log says which name moved:\n{}",
        cashew.log()
    );
    // Every key placed on the moving server now goes to its new address: a miss
    // there (nothing was written to it), then what is written lands there.
    for k in &on_moving {
        assert_eq!(client.get(k), None, "{k} is asked of the new address");
        client.set(k, b"after");
        assert_eq!(
            McConn::connect(new_home.addr).get(k).as_deref(),
            Some(&b"after"[..]),
            "{k} is written to the new address"
        );
    }
    // The other server's keys did not move and its connection was kept.
    for k in keys.iter().filter(|k| !on_moving.contains(k)) {
        assert_eq!(client.get(k).as_deref(), Some(&b"before"[..]), "{k}");
    }
    assert_eq!(
        McConn::connect(other.addr).stat("total_connections"),
        other_connections + 1,
        "only this check's own connection is new on the other server"
    );
    println!("connections moved {moved_in:?} after the name changed");
}

#[test]
fn without_a_refresh_a_moved_name_keeps_its_connections() {
    let Some(moving) = Moving::start("cache-1.cache.test") else {
        return;
    };
    let Moving {
        ns,
        name,
        port,
        old_home,
        new_home: _new_home,
    } = &moving;
    let listen = free_port("127.0.0.1");
    let yaml = format!(
        "cache:\n  listen: 127.0.0.1:{listen}\n  dns_refresh_ms: 0\n  servers:\n    - {name}:{port}:1\n"
    );
    let cashew = Cashew::start_with_nameserver(CASHEW, &yaml, &[], ns);
    let mut client = McConn::connect(format!("127.0.0.1:{listen}").parse().unwrap());
    client.set("k", b"v");
    moving.r#move();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(client.get("k").as_deref(), Some(&b"v"[..]));
    assert!(
        McConn::connect(old_home.addr).stat("curr_connections") >= 2,
        "cashew kept its connection"
    );
    assert!(!cashew.log().contains("moved"), "{}", cashew.log());
}

#[test]
fn a_daemon_watches_names_too() {
    // `-d` forks after the configuration is first read: the thread that resolves
    // the names must run in the process that serves, not in the one that exited.
    let Some(moving) = Moving::start("cache-2.cache.test") else {
        return;
    };
    let Moving {
        ns,
        name,
        port,
        old_home,
        new_home: _new_home,
    } = &moving;
    let (home_a, home_b) = HOMES;
    let dir = cashew_testkit::temp_dir("dns-daemon");
    let listen = free_port("127.0.0.1");
    std::fs::write(
        dir.join("cashew.yml"),
        format!("cache:\n  listen: 127.0.0.1:{listen}\n  dns_refresh_ms: 200\n  preconnect: true\n  servers:\n    - {name}:{port}:1\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("resolv.conf"),
        format!("nameserver {}\noptions timeout:5 attempts:1\n", ns.addr),
    )
    .unwrap();
    let stats_port = free_port("127.0.0.1").to_string();
    let status = std::process::Command::new(cashew_testkit::program("unshare"))
        .current_dir(&dir)
        .args(["--mount", "--", "sh", "-c"])
        .arg(r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#)
        .arg(dir.join("resolv.conf"))
        .arg(CASHEW)
        .args([
            "-d",
            "-c",
            "cashew.yml",
            "-p",
            "cashew.pid",
            "-o",
            "cashew.log",
        ])
        .args(["-s", &stats_port, "-a", "127.0.0.1", "--threads", "1"])
        .status()
        .unwrap();
    assert!(status.success());
    let pid_file = dir.join("cashew.pid");
    wait_until("the pid file", Duration::from_secs(10), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    });
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _daemon = cashew_testkit::KillOnDrop(pid);
    let mut client = McConn::connect(format!("127.0.0.1:{listen}").parse().unwrap());
    client.set("k", b"v");
    assert!(McConn::connect(old_home.addr).stat("curr_connections") >= 2);
    moving.r#move();
    let log = || std::fs::read_to_string(dir.join("cashew.log")).unwrap_or_default();
    wait_until(
        "the daemon moves its connection",
        Duration::from_secs(10),
        || McConn::connect(old_home.addr).stat("curr_connections") == 1,
    );
    assert!(
        log().contains(&format!("'{name}' from {home_a} to {home_b}")),
        "{}",
        log()
    );
    assert_eq!(client.get("k"), None, "asked of the new address");
}
