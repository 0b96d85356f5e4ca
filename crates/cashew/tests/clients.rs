//! Who is connected: `CLIENT LIST`, `CLIENT INFO` and `CLIENT ID` on a redis pool
//! (its own clients, over every worker), and the admin API's `GET /clients`
//! (every pool's), against real redis and memcached servers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cashew_testkit::{free_port, memcached, redis_server, AdminApi, Cashew, McConn, Process};
use redis::Connection;

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn local() -> SocketAddr {
    format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap()
}

fn connect(addr: SocketAddr) -> Connection {
    redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_connection()
        .unwrap()
}

/// A `CLIENT LIST` line's fields.
fn fields(line: &str) -> BTreeMap<String, String> {
    line.split(' ')
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn list(c: &mut Connection, args: &[&str]) -> Vec<BTreeMap<String, String>> {
    let text: String = redis::cmd("CLIENT").arg("LIST").arg(args).query(c).unwrap();
    text.lines().map(fields).collect()
}

fn id_of(c: &mut Connection) -> u64 {
    redis::cmd("CLIENT").arg("ID").query(c).unwrap()
}

/// cashew (two workers) with a redis pool `data` and a memcached pool `cache`.
struct Rig {
    listen: SocketAddr,
    mc_listen: SocketAddr,
    admin: SocketAddr,
    api: AdminApi,
    _cashew: Cashew,
    _servers: [Process; 2],
}

impl Rig {
    fn start() -> Rig {
        let (redis, mc) = (redis_server(&[]), memcached());
        let (listen, mc_listen, admin) = (local(), local(), local());
        let yaml = format!(
            "data:\n  listen: {listen}\n  redis: true\n  servers:\n    - {}:1\n\
             cache:\n  listen: {mc_listen}\n  servers:\n    - {}:1\n",
            redis.addr, mc.addr
        );
        let cashew = Cashew::start(
            CASHEW,
            &yaml,
            &["--threads", "2", "--admin", &admin.to_string()],
        );
        Rig {
            listen,
            mc_listen,
            admin,
            api: AdminApi::new(admin, None),
            _cashew: cashew,
            _servers: [redis, mc],
        }
    }

    fn listed(&self) -> Vec<serde_json::Value> {
        self.api.get("/clients").1["clients"]
            .as_array()
            .unwrap()
            .clone()
    }
}

#[test]
fn client_list_shows_the_pools_clients_over_every_worker() {
    let rig = Rig::start();
    let (listen, mc_listen) = (rig.listen, rig.mc_listen);

    let mut named = connect(listen);
    let _: () = redis::cmd("CLIENT")
        .arg(&["SETNAME", "billing-worker"])
        .query(&mut named)
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg(&["SETINFO", "LIB-NAME", "my-lib"])
        .query(&mut named)
        .unwrap();
    // The crate's own CLIENT SETINFO on connecting are counted too.
    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut named).unwrap();
    let before: u64 = fields(info.trim_end())["tot-cmds"].parse().unwrap();
    assert!(before >= 2, "{info}");
    for i in 0..5 {
        let _: () = redis::cmd("SET").arg(i).arg(i).query(&mut named).unwrap();
    }
    let mut idle = connect(listen);
    let idle_id = id_of(&mut idle);
    let mut subscriber = connect(listen);
    let subscriber_id = id_of(&mut subscriber);
    let mut pubsub = subscriber.as_pubsub();
    pubsub.subscribe("news").unwrap();
    let mut mc_client = McConn::connect(mc_listen);
    mc_client.send(b"version\r\n");
    assert!(mc_client.line().starts_with("VERSION"));
    std::thread::sleep(Duration::from_millis(1300));

    let mut me = connect(listen);
    let my_id = id_of(&mut me);
    let _: () = redis::cmd("SET").arg("x").arg(1).query(&mut named).unwrap();
    let clients = list(&mut me, &[]);
    assert_eq!(clients.len(), 4, "{clients:?}");
    let ids: Vec<u64> = clients.iter().map(|c| c["id"].parse().unwrap()).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique, ids, "ids differ, oldest first");
    let by_id = |id: u64| {
        clients
            .iter()
            .find(|c| c["id"] == id.to_string())
            .unwrap_or_else(|| panic!("{id}: {clients:?}"))
    };
    let first = &clients[0];
    assert_eq!(first["name"], "billing-worker");
    assert_eq!(first["lib-name"], "my-lib");
    assert_eq!(
        first["tot-cmds"],
        (before + 7).to_string(),
        "CLIENT INFO, five SETs and one more"
    );
    assert_eq!(first["idle"], "0");
    assert_eq!(first["laddr"], listen.to_string());
    assert_eq!(first["flags"], "N");
    assert!(by_id(idle_id)["idle"].parse::<u64>().unwrap() >= 1);
    assert_eq!(by_id(subscriber_id)["flags"], "P");
    assert_eq!(by_id(my_id)["name"], "");
    assert!(by_id(my_id)["addr"].starts_with("127.0.0.1:"));

    // Filters, as Redis has them.
    let subscribers = list(&mut me, &["TYPE", "pubsub"]);
    assert_eq!(subscribers.len(), 1);
    assert_eq!(subscribers[0]["id"], subscriber_id.to_string());
    assert_eq!(list(&mut me, &["TYPE", "normal"]).len(), 3);
    assert!(list(&mut me, &["TYPE", "master"]).is_empty());
    let two = list(&mut me, &["ID", &idle_id.to_string(), &my_id.to_string()]);
    assert_eq!(two.len(), 2);
    for bad in [&["ID", "x"][..], &["TYPE", "nobody"], &["SOMETHING"]] {
        let e = redis::cmd("CLIENT")
            .arg("LIST")
            .arg(bad)
            .query::<String>(&mut me)
            .unwrap_err();
        assert!(
            e.to_string().contains("ERR") || e.to_string().contains("rror"),
            "{bad:?}: {e}"
        );
    }
    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut me).unwrap();
    assert_eq!(fields(info.trim_end())["id"], my_id.to_string());
    let info: String = redis::cmd("INFO").arg("clients").query(&mut me).unwrap();
    assert!(
        info.contains("connected_clients:4\r\n"),
        "the pool's four: {info}"
    );
    let info: String = redis::cmd("INFO").arg("proxy").query(&mut me).unwrap();
    assert!(
        info.contains("connected_clients:5\r\n"),
        "every pool's five: {info}"
    );

    // The admin API lists every pool's clients.
    let api = &rig.api;
    let (status, doc) = api.get("/clients");
    assert_eq!(status, 200, "{doc}");
    let all = doc["clients"].as_array().unwrap();
    assert_eq!(all.len(), 5, "{doc}");
    let memcache: Vec<_> = all.iter().filter(|c| c["protocol"] == "memcache").collect();
    assert_eq!(memcache.len(), 1, "{doc}");
    assert_eq!(memcache[0]["pool"], "cache");
    assert_eq!(memcache[0]["requests"], 1);
    assert_eq!(memcache[0]["local"], mc_listen.to_string());
    let billing = all.iter().find(|c| c["name"] == "billing-worker").unwrap();
    assert_eq!(billing["pool"], "data");
    assert_eq!(billing["lib_name"], "my-lib");

    // `cashew clients` prints them.
    let out = std::process::Command::new(CASHEW)
        .args(["clients", "--admin", &rig.admin.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("      ID  POOL"), "{table}");
    assert!(table.ends_with("5 clients\n"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains(" data ") && l.contains("billing-worker (my-lib")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains(" cache ") && l.contains(" memcache ")),
        "{table}"
    );
    assert!(table.contains("[subscriber]"), "{table}");

    // A client that leaves is no longer listed.
    drop(pubsub);
    drop(subscriber);
    drop(mc_client);
    let deadline = Instant::now() + Duration::from_secs(5);
    while list(&mut me, &[]).len() != 3
        || api.get("/clients").1["clients"].as_array().unwrap().len() != 3
    {
        assert!(Instant::now() < deadline, "{:?}", list(&mut me, &[]));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_admin_api_closes_a_client() {
    let rig = Rig::start();
    // A redis client waiting in a blocking call, on a server connection of its own.
    let mut blocked = connect(rig.listen);
    let blocked_id = id_of(&mut blocked);
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let outcome = redis::cmd("BLPOP")
            .arg(&["nothing", "30"])
            .query::<Option<(String, String)>>(&mut blocked);
        (outcome, started.elapsed())
    });
    let mut mc_client = McConn::connect(rig.mc_listen);
    mc_client.send(b"version\r\n");
    assert!(mc_client.line().starts_with("VERSION"));
    let mut other = connect(rig.listen);
    std::thread::sleep(Duration::from_millis(200));
    let mc_id = rig
        .listed()
        .iter()
        .find(|c| c["protocol"] == "memcache")
        .unwrap()["id"]
        .as_u64()
        .unwrap();

    let (status, doc) = rig.api.post(&format!("/clients/{blocked_id}/kill"));
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["killed"], blocked_id);
    assert_eq!(doc["pool"], "data");
    let (outcome, waited) = waiter.join().unwrap();
    assert!(outcome.is_err(), "{outcome:?}");
    assert!(
        waited < Duration::from_secs(5),
        "closed at once, not after {waited:?}"
    );

    let (status, _) = rig.api.post(&format!("/clients/{mc_id}/kill"));
    assert_eq!(status, 200);
    assert_eq!(
        mc_client.line(),
        "",
        "the memcached client sees the connection end"
    );

    let (status, doc) = rig.api.post("/clients/999999/kill");
    assert_eq!(status, 404, "{doc}");
    assert!(
        doc["error"].as_str().unwrap().contains("no client 999999"),
        "{doc}"
    );
    assert_eq!(rig.api.post("/clients/nonsense/kill").0, 404);
    assert_eq!(
        rig.api.try_get_status(&format!("/clients/{mc_id}/kill")),
        Some(405)
    );

    // The others go on.
    let pong: String = redis::cmd("PING").query(&mut other).unwrap();
    assert_eq!(pong, "PONG");
    let listed = rig.listed();
    assert_eq!(listed.len(), 1, "{listed:?}");
}

#[test]
fn memcached_stats_conns_lists_the_pools_connections() {
    let rig = Rig::start();
    let mut a = McConn::connect(rig.mc_listen);
    let mut b = McConn::connect(rig.mc_listen);
    b.send(b"version\r\n");
    assert!(b.line().starts_with("VERSION"));
    let _redis_client = connect(rig.listen);
    a.send(b"stats conns\r\n");
    let mut lines = Vec::new();
    loop {
        let line = a.line();
        if line == "END\r\n" {
            break;
        }
        assert!(line.starts_with("STAT "), "{line:?}");
        lines.push(line);
    }
    let addrs: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(":addr tcp:127.0.0.1:"))
        .collect();
    assert_eq!(
        addrs.len(),
        2,
        "the pool's two clients, not the redis pool's: {lines:?}"
    );
    let listen = format!(":listen_addr tcp:{}\r\n", rig.mc_listen);
    assert_eq!(
        lines.iter().filter(|l| l.ends_with(&listen)).count(),
        2,
        "{lines:?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(":secs_since_last_cmd "))
            .count(),
        2
    );
}
