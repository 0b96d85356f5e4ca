//! The PHP clients of LNMP stacks (Debian's php-memcached, pecl memcache and
//! phpredis, installed by `scripts/install-deps`) driving cashew in front of real
//! servers: the scripts in `tests/php/` check each operation and print what held.

use std::path::PathBuf;
use std::process::Command;

use cashew_testkit::{free_port, memcached, redis_server, Cashew, Process};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn run_php(script: &str, args: &[String]) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/php")
        .join(script);
    let out = Command::new(cashew_testkit::program("php"))
        .arg(path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("php: {e} (scripts/install-deps installs php8.2-cli)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} {args:?}:\n{text}");
    text
}

#[test]
fn php_memcached_and_pecl_memcache_through_cashew() {
    let servers: Vec<Process> = (0..2).map(|_| memcached()).collect();
    let port = free_port("127.0.0.1");
    let yaml = format!(
        "php:\n  listen: 127.0.0.1:{port}\n  servers:\n    - {}:1\n    - {}:1\n",
        servers[0].addr, servers[1].addr
    );
    let _cashew = Cashew::start(CASHEW, &yaml, &["--threads", "2"]);
    let out = run_php(
        "memcached_clients.php",
        &["127.0.0.1".into(), port.to_string()],
    );
    println!("{}", out.trim());
    assert!(out.contains("memcached clients: ok"), "{out}");
    assert!(
        out.lines().filter(|l| l.ends_with(": ok")).count() > 50,
        "{out}"
    );
}

#[test]
fn phpredis_through_cashew_over_three_servers() {
    let servers: Vec<Process> = (0..4).map(|_| redis_server(&[])).collect();
    let (port, refusing) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let yaml = format!(
        "php:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n    - {}:1\n    - {}:1\n    - {}:1\nrefusing:\n  listen: 127.0.0.1:{refusing}\n  redis: true\n  keyspace_commands: false\n  servers:\n    - {}:1\n",
        servers[0].addr, servers[1].addr, servers[2].addr, servers[3].addr
    );
    let _cashew = Cashew::start(CASHEW, &yaml, &["--threads", "2"]);
    let out = run_php(
        "phpredis.php",
        &["127.0.0.1".into(), port.to_string(), refusing.to_string()],
    );
    println!("{}", out.trim());
    assert!(out.contains("phpredis: ok"), "{out}");
    assert!(out.contains("scan collects every key: ok"), "{out}");
}
