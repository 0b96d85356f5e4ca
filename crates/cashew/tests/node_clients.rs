//! The Node.js client libraries people run today, at the releases
//! `tests/node/package-lock.json` pins (installed by `scripts/install-deps`), against
//! cashew in front of real servers: ioredis, node-redis in RESP2 and RESP3 and with
//! its client-side cache, and the cluster clients of both against a Redis Cluster
//! pool.

use std::net::SocketAddr;

use cashew_testkit::cluster::RedisCluster;
use cashew_testkit::{redis_server, run_node_script, PoolProxy, Process};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn pool_of_three() -> PoolProxy {
    let backends: Vec<Process> = (0..3).map(|_| redis_server(&[])).collect();
    PoolProxy::start(
        CASHEW,
        backends,
        "  redis: true\n  hash: md5\n  hash_tag: \"{}\"\n",
        &[],
    )
}

fn address(listen: SocketAddr) -> Vec<String> {
    vec![listen.ip().to_string(), listen.port().to_string()]
}

#[test]
fn ioredis_through_cashew() {
    let p = pool_of_three();
    let out = run_node_script("ioredis_client.js", &address(p.listen));
    assert!(out.contains("all ok"), "{out}");
}

#[test]
fn node_redis_in_resp2_and_resp3() {
    let p = pool_of_three();
    for protocol in ["2", "3"] {
        let mut args = address(p.listen);
        args.push(protocol.into());
        let out = run_node_script("node_redis_client.js", &args);
        assert!(out.contains("all ok"), "RESP{protocol}: {out}");
    }
}

#[test]
fn node_redis_client_side_cache() {
    let p = pool_of_three();
    let out = run_node_script("client_side_cache.js", &address(p.listen));
    assert!(out.contains("all ok"), "{out}");
}

#[test]
fn cluster_clients_of_ioredis_and_node_redis() {
    let cluster = RedisCluster::start(3, 0);
    let (_cashew, listen) = cluster.cashew(CASHEW, "", &[]);
    let out = run_node_script("cluster_clients.js", &address(listen));
    assert!(out.contains("all ok"), "{out}");
}
