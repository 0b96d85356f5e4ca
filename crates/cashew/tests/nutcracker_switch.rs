//! The drop-in promise end to end: keys written through cashew are found through a
//! live nutcracker 0.5.0 over the same servers and config, and the reverse, for a
//! memcached pool and a redis pool. Switching proxies keeps the cache.

use std::net::SocketAddr;

use cashew_testkit::{free_port, memcached, nutcracker, redis_server, Cashew, McConn, Process};
use redis::Commands;

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

/// The same pool settings behind two listen addresses: one for nutcracker, one for cashew.
fn configs(settings: &str, servers: &[String]) -> (String, SocketAddr, String, SocketAddr) {
    let servers: String = servers.iter().map(|s| format!("    - {s}\n")).collect();
    let conf =
        |port: u16| format!("pool:\n  listen: 127.0.0.1:{port}\n{settings}  servers:\n{servers}");
    let (n, c) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let addr = |port: u16| format!("127.0.0.1:{port}").parse().unwrap();
    (conf(n), addr(n), conf(c), addr(c))
}

#[test]
fn memcached_keys_written_through_one_proxy_are_found_through_the_other() {
    let backends: Vec<Process> = (0..3).map(|_| memcached()).collect();
    let entries = [
        format!("{}:1 cache-a", backends[0].addr),
        format!("{}:2 cache-b", backends[1].addr),
        format!("{}:1 cache-c", backends[2].addr),
    ];
    let (nc_yaml, nc_addr, ca_yaml, ca_addr) =
        configs("  hash: fnv1a_64\n  distribution: ketama\n", &entries);
    let _nutcracker = nutcracker(&nc_yaml, nc_addr);
    let _cashew = Cashew::start(CASHEW, &ca_yaml, &["--threads", "2"]);
    let (mut via_nutcracker, mut via_cashew) = (McConn::connect(nc_addr), McConn::connect(ca_addr));

    let keys: Vec<String> = (0..300)
        .map(|i| format!("user:{i}:profile-{}", i * 31))
        .collect();
    for k in &keys {
        via_cashew.set(k, format!("cashew-{k}").as_bytes());
    }
    for k in &keys {
        assert_eq!(
            via_nutcracker.get(k),
            Some(format!("cashew-{k}").into_bytes()),
            "{k}"
        );
    }
    for k in &keys {
        via_nutcracker.set(k, format!("nutcracker-{k}").as_bytes());
    }
    for k in &keys {
        assert_eq!(
            via_cashew.get(k),
            Some(format!("nutcracker-{k}").into_bytes()),
            "{k}"
        );
    }
    // Every server took part.
    for b in &backends {
        let mut direct = McConn::connect(b.addr);
        assert!(
            keys.iter().any(|k| direct.get(k).is_some()),
            "{} holds no key",
            b.addr
        );
    }
}

#[test]
fn redis_keys_written_through_one_proxy_are_found_through_the_other() {
    let backends: Vec<Process> = (0..2).map(|_| redis_server(&[])).collect();
    let entries: Vec<String> = backends.iter().map(|b| format!("{}:1", b.addr)).collect();
    let settings = "  redis: true\n  hash: murmur\n  hash_tag: \"{}\"\n  distribution: ketama\n";
    let (nc_yaml, nc_addr, ca_yaml, ca_addr) = configs(settings, &entries);
    let _nutcracker = nutcracker(&nc_yaml, nc_addr);
    let _cashew = Cashew::start(CASHEW, &ca_yaml, &["--threads", "2"]);
    // nutcracker closes connections on the handshake client libraries send, so it is
    // spoken to in raw RESP; cashew through the redis crate.
    let mut via_nutcracker = McConn::connect(nc_addr);
    let mut via_cashew = redis::Client::open(format!("redis://{ca_addr}/"))
        .unwrap()
        .get_connection()
        .unwrap();

    let keys: Vec<String> = (0..200)
        .map(|i| format!("{{tenant{}}}:item:{i}", i % 17))
        .collect();
    let pairs: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), format!("c-{k}"))).collect();
    let _: () = via_cashew.mset(&pairs).unwrap();
    for (k, v) in &pairs {
        via_nutcracker.send(&command(&["GET", k]));
        assert_eq!(via_nutcracker.line(), format!("${}\r\n", v.len()), "{k}");
        via_nutcracker.expect(format!("{v}\r\n").as_bytes());
    }
    for k in &keys {
        let value = format!("n-{k}");
        via_nutcracker.roundtrip(&command(&["SET", k, &value]), b"+OK\r\n");
    }
    let values: Vec<Option<String>> = via_cashew.mget(&keys).unwrap();
    for (k, v) in keys.iter().zip(values) {
        assert_eq!(v, Some(format!("n-{k}")), "{k}");
    }
}

fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
    }
    out
}
