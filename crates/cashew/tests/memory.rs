//! Memory comes back: after bursts of 16 MiB values, of 10,000 connections and of a
//! client that pipelines gets of 500 kB values without reading, and their clients
//! gone, cashew's resident size returns within 8 MiB of where it started within 5 s,
//! burst after burst (20 times: no drift). And large values reuse memory rather than
//! have the kernel fault it in for every reply.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use cashew_testkit::{
    free_port, memcached, minor_faults, raise_open_files_limit, redis_server, rss_bytes, Cashew,
};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");
const MIB: u64 = 1 << 20;

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// SET and three GETs of a 16 MiB value.
fn big_values(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).unwrap();
    let value = vec![b'v'; 16 << 20];
    let mut request = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n", value.len()).into_bytes();
    request.extend_from_slice(&value);
    request.extend_from_slice(b"\r\n");
    s.write_all(&request).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "+OK\r\n");
    for _ in 0..3 {
        s.write_all(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n").unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        let mut body = vec![0; value.len() + 2];
        r.read_exact(&mut body).unwrap();
        assert!(body[..value.len()] == value[..]);
    }
}

/// Stores `value` as memcached key `big`.
fn store_big(s: &mut TcpStream, value: &[u8]) {
    let mut set = format!("set big 0 0 {}\r\n", value.len()).into_bytes();
    set.extend_from_slice(value);
    set.extend_from_slice(b"\r\n");
    s.write_all(&set).unwrap();
    let mut line = [0u8; 8];
    s.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"STORED\r\n");
}

/// A client that pipelines gets of a 500 kB value for a second without reading a
/// reply, then leaves.
fn slow_reader(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).unwrap();
    store_big(&mut s, &vec![b'x'; 500_000]);
    s.set_nonblocking(true).unwrap();
    let requests = b"get big\r\n".repeat(200);
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        if s.write_all(&requests).is_err() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// 10,000 connections opened, some used, all closed.
fn many_connections(addr: SocketAddr) {
    let conns: Vec<TcpStream> = (0..10_000)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    for mut c in conns.iter().step_by(500) {
        c.write_all(b"version\r\n").unwrap();
        let mut buf = [0u8; 64];
        let _ = c.read(&mut buf).unwrap();
    }
}

#[test]
fn memory_comes_back_after_each_burst_without_drift() {
    let limit = raise_open_files_limit();
    assert!(
        limit >= 16_384,
        "10,000 connections need an open files limit of 16384; this process may have {limit}"
    );
    let (mc, rd) = (memcached(), redis_server(&[]));
    let (mc_port, rd_port) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let yaml = format!(
        "mc:\n  listen: 127.0.0.1:{mc_port}\n  servers:\n    - {}:1\nrd:\n  listen: 127.0.0.1:{rd_port}\n  redis: true\n  servers:\n    - {}:1\n",
        mc.addr, rd.addr
    );
    let cashew = Cashew::start_with_open_files(CASHEW, &yaml, &["--threads", "1"], 16_384);
    let pid = cashew.process.pid();
    std::thread::sleep(Duration::from_millis(500));
    let start = rss_bytes(pid);
    let mut after = Vec::new();
    for round in 0..20 {
        big_values(local(rd_port));
        many_connections(local(mc_port));
        slow_reader(local(mc_port));
        let done = Instant::now();
        let mut rss = rss_bytes(pid);
        while rss > start + 8 * MIB && done.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(100));
            rss = rss_bytes(pid);
        }
        after.push((rss / MIB, done.elapsed().as_millis()));
        assert!(
            rss <= start + 8 * MIB,
            "round {round}: {} MiB 5 s after the burst, started at {} MiB",
            rss / MIB,
            start / MIB
        );
    }
    println!(
        "resident at start {} MiB; after each burst (MiB, ms to get there): {after:?}",
        start / MIB
    );
}

/// Gets of a large value reuse the memory of the ones before: a buffer mapped and
/// unmapped per reply (or given back by every free) makes the kernel fault in each
/// of its pages again, which cost 512 KiB values 2.5 times the CPU per request.
#[test]
fn large_values_reuse_memory_rather_than_fault_it_in_per_request() {
    let mc = memcached();
    let port = free_port("127.0.0.1");
    let yaml = format!(
        "mc:\n  listen: 127.0.0.1:{port}\n  servers:\n    - {}:1\n",
        mc.addr
    );
    let cashew = Cashew::start(CASHEW, &yaml, &["--threads", "1"]);
    let pid = cashew.process.pid();
    let value = vec![b'v'; 512 << 10];
    let mut conn = TcpStream::connect(local(port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    store_big(&mut conn, &value);
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut get = |n: usize| {
        for _ in 0..n {
            conn.write_all(b"get big\r\n").unwrap();
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            assert!(header.starts_with("VALUE big 0 524288"), "{header:?}");
            let mut body = vec![0; value.len() + 2 + b"END\r\n".len()];
            reader.read_exact(&mut body).unwrap();
            assert!(body[..value.len()] == value[..] && body.ends_with(b"\r\nEND\r\n"));
        }
    };
    get(50);
    let before = minor_faults(pid);
    let gets = 200;
    get(gets);
    let per_get = (minor_faults(pid) - before) as f64 / gets as f64;
    println!("{per_get:.1} page faults per get of a 512 KiB value");
    // A 512 KiB buffer is 128 pages; faulting each reply's in was about 120.
    assert!(
        per_get < 8.0,
        "{per_get:.1} page faults per get of a 512 KiB value"
    );
}
