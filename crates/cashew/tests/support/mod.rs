//! Rigs and helpers the observability and logging tests share: cashew over real
//! servers with its admin API on, and ways to read its log.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use cashew_testkit::{free_port, memcached, redis_server, AdminApi, Cashew};

pub const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

pub fn admin_port() -> (String, SocketAddr) {
    let port = free_port("127.0.0.1");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    (addr.to_string(), addr)
}

pub fn redis_roundtrip(
    s: &mut TcpStream,
    r: &mut BufReader<TcpStream>,
    request: &str,
    lines: usize,
) {
    s.write_all(request.as_bytes()).unwrap();
    for _ in 0..lines {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
    }
}

/// A memcached pool `cache` over two servers and a redis pool `sessions` over one,
/// named `names`, with `cache_settings` (lines indented two spaces) in `cache`;
/// cashew has two worker threads and its admin API on.
pub struct TwoPools {
    pub _servers: Vec<cashew_testkit::Process>,
    pub cashew: Cashew,
    pub mc_listen: u16,
    pub rd_listen: u16,
    pub admin_arg: String,
    pub admin_addr: SocketAddr,
}

pub fn two_pools(cache_settings: &str, names: [&str; 3]) -> TwoPools {
    let servers = vec![memcached(), memcached(), redis_server(&[])];
    let (mc_listen, rd_listen) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let yaml = format!(
        "cache:\n  listen: 127.0.0.1:{mc_listen}\n{cache_settings}  servers:\n    - {}:1 {}\n    - {}:1 {}\nsessions:\n  listen: 127.0.0.1:{rd_listen}\n  redis: true\n  servers:\n    - {}:1 {}\n",
        servers[0].addr, names[0], servers[1].addr, names[1], servers[2].addr, names[2]
    );
    let (admin_arg, admin_addr) = admin_port();
    let cashew = Cashew::start(CASHEW, &yaml, &["--threads", "2", "--admin", &admin_arg]);
    TwoPools {
        _servers: servers,
        cashew,
        mc_listen,
        rd_listen,
        admin_arg,
        admin_addr,
    }
}

/// Waits (at most 5 s) until the log has a line with `pattern`.
pub fn wait_for_log(cashew: &Cashew, pattern: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cashew.log().contains(pattern) {
        assert!(
            Instant::now() < deadline,
            "no '{pattern}' in the log:\n{}",
            cashew.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Log lines matching `pattern`.
pub fn lines_with<'a>(log: &'a str, pattern: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(pattern)).collect()
}

/// No Rust debug formatting where an operator reads.
pub fn assert_in_words(log: &str) {
    for debug in ["Some(", "Io(", "Kind(", "Tcp {", "Unix {", "Os {"] {
        assert!(
            !log.contains(debug),
            "debug output {debug:?} in the log:\n{log}"
        );
    }
}

/// One memcached pool `pool` over one server named `server`, with `settings` (lines
/// indented two spaces); cashew with `args` and its admin API on.
pub struct OnePool {
    pub server: cashew_testkit::Process,
    pub cashew: Cashew,
    pub listen: SocketAddr,
    pub admin: AdminApi,
}

pub fn one_pool(settings: &str, server: &str, args: &[&str]) -> OnePool {
    let mc = memcached();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let yaml = format!(
        "pool:\n  listen: {listen}\n{settings}  servers:\n    - {}:1 {server}\n",
        mc.addr
    );
    let (admin_arg, admin_addr) = admin_port();
    let mut all = vec!["--admin", &admin_arg];
    all.extend_from_slice(args);
    let cashew = Cashew::start(CASHEW, &yaml, &all);
    OnePool {
        server: mc,
        cashew,
        listen,
        admin: AdminApi::new(admin_addr, None),
    }
}
