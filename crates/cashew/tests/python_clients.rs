//! The Python client libraries people run today, at their current releases
//! (`tests/python/requirements.txt`, installed by `scripts/install-deps`), against
//! cashew in front of real servers: redis-py with its defaults (RESP3) and in RESP2,
//! and pymemcache.

use cashew_testkit::{memcached, redis_server, PoolProxy, Process};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

#[test]
fn redis_py_with_its_defaults_and_in_resp2() {
    let backends: Vec<Process> = (0..3).map(|_| redis_server(&[])).collect();
    let p = PoolProxy::start(
        CASHEW,
        backends,
        "  redis: true\n  hash: md5\n  hash_tag: \"{}\"\n",
        &[],
    );
    let (host, port) = (p.listen.ip().to_string(), p.listen.port().to_string());
    for protocol in ["default", "2"] {
        let out = cashew_testkit::run_python_script(
            "redis_py.py",
            &[host.clone(), port.clone(), protocol.into()],
        );
        println!("{}", out.trim());
        let expected = if protocol == "default" {
            "RESP3: ok"
        } else {
            "RESP2: ok"
        };
        assert!(out.contains(expected), "{out}");
    }
}

#[test]
fn pymemcache_through_cashew() {
    let p = PoolProxy::start(CASHEW, vec![memcached(), memcached(), memcached()], "", &[]);
    let out = cashew_testkit::run_python_script(
        "pymemcache_client.py",
        &[p.listen.ip().to_string(), p.listen.port().to_string()],
    );
    println!("{}", out.trim());
    assert!(out.contains(": ok"), "{out}");
}
