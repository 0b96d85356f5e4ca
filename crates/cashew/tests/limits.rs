//! What one client or one server can make cashew hold is bounded: a client that
//! never reads, oversized requests, too many keys, a server that stops reading,
//! thousands of connections, running out of descriptors. Memory comes back after
//! a burst.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cashew_testkit::{
    cpu_time, memcached, raise_open_files_limit, redis_server, rss_bytes, Cashew, McConn, PoolProxy,
};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");
const MIB: u64 = 1 << 20;
/// cashew's default `client_output_limit`.
const OUTPUT_LIMIT: u64 = 8 * MIB;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// Waits up to 10 s for cashew's resident memory to come within `slack` of
/// `baseline`; the last figure seen.
fn memory_returns(pid: u32, baseline: u64, slack: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = rss_bytes(pid);
        if now <= baseline + slack || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A client with a tiny receive buffer that sends `request` over and over and
/// reads nothing, for `how_long`. The bytes it managed to send.
fn never_reading_client(to: SocketAddr, request: &[u8], how_long: Duration) -> (TcpStream, u64) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&to.into()).unwrap();
    let mut stream = TcpStream::from(socket);
    stream.set_nonblocking(true).unwrap();
    let batch = request.repeat(100);
    let deadline = Instant::now() + how_long;
    let mut sent = 0u64;
    while Instant::now() < deadline {
        match stream.write(&batch) {
            Ok(n) => sent += n as u64,
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    (stream, sent)
}

/// Runs `probe` every 20 ms until `stop`; the slowest run.
fn slowest(stop: &AtomicBool, mut probe: impl FnMut()) -> Duration {
    let mut worst = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        probe();
        worst = worst.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    worst
}

/// The shape of both slow-reader tests: a value of 500 kB read over and over by a
/// client that reads nothing, while another client keeps working.
fn slow_reader(listen: SocketAddr, pid: u32, request: &[u8], mut probe: impl FnMut() + Send) {
    let before = rss_bytes(pid);
    let stop = AtomicBool::new(false);
    let (peak, sent, worst, slow) = std::thread::scope(|scope| {
        let other = scope.spawn(|| slowest(&stop, &mut probe));
        let (slow, sent) = never_reading_client(listen, request, Duration::from_secs(3));
        let peak = rss_bytes(pid);
        stop.store(true, Ordering::Relaxed);
        (peak, sent, other.join().unwrap(), slow)
    });
    println!(
        "never-reading client: {:.1} MiB of requests sent; cashew resident {:.1} MiB before, {:.1} MiB after 3 s; another client's slowest request {} ms",
        mib(sent),
        mib(before),
        mib(peak),
        worst.as_millis()
    );
    assert!(
        peak <= before + OUTPUT_LIMIT + 64 * MIB,
        "grew by {:.1} MiB",
        mib(peak - before)
    );
    assert!(worst < Duration::from_millis(250), "{worst:?}");
    drop(slow);
    let after = memory_returns(pid, before, 20 * MIB);
    println!("after it left: {:.1} MiB", mib(after));
    assert!(after <= before + 20 * MIB, "{:.1} MiB", mib(after));
}

#[test]
fn a_memcached_client_that_never_reads_costs_bounded_memory_and_slows_no_one() {
    let p = PoolProxy::start(CASHEW, vec![memcached()], "", &[]);
    let mut c = McConn::connect(p.listen);
    let value = vec![b'v'; 500_000];
    c.set("big", &value);
    let mut other = McConn::connect(p.listen);
    slow_reader(p.listen, p.cashew.process.pid(), b"get big\r\n", || {
        other.roundtrip(b"set small 0 0 1\r\nx\r\n", b"STORED\r\n");
        other.roundtrip(b"get small\r\n", b"VALUE small 0 1\r\nx\r\nEND\r\n");
    });
}

#[test]
fn a_redis_client_that_never_reads_costs_bounded_memory_and_slows_no_one() {
    let p = PoolProxy::start(CASHEW, vec![redis_server(&[])], "  redis: true\n", &[]);
    let mut c = McConn::connect(p.listen);
    let value = "v".repeat(500_000);
    c.roundtrip(
        format!(
            "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n{value}\r\n",
            value.len()
        )
        .as_bytes(),
        b"+OK\r\n",
    );
    let mut other = McConn::connect(p.listen);
    slow_reader(p.listen, p.cashew.process.pid(), b"GET big\r\n", || {
        other.roundtrip(b"SET small x\r\n", b"+OK\r\n");
        other.roundtrip(b"GET small\r\n", b"$1\r\nx\r\n");
    });
}

#[test]
fn memory_comes_back_after_a_burst_of_large_values() {
    let backends = (0..3).map(|_| memcached()).collect();
    let p = PoolProxy::start(CASHEW, backends, "", &[]);
    let pid = p.cashew.process.pid();
    let before = rss_bytes(pid);
    let stop_at = Instant::now() + Duration::from_secs(3);
    let peak = std::thread::scope(|scope| {
        for i in 0..40 {
            let listen = p.listen;
            scope.spawn(move || {
                let mut c = McConn::connect(listen);
                let value = vec![b'b'; 100_000 + i * 1000];
                let mut n = 0;
                while Instant::now() < stop_at {
                    let key = format!("burst{i}:{}", n % 20);
                    c.set(&key, &value);
                    assert_eq!(c.get(&key).map(|v| v.len()), Some(value.len()));
                    n += 1;
                }
            });
        }
        let mut peak = 0;
        while Instant::now() < stop_at {
            peak = peak.max(rss_bytes(pid));
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    });
    let after = memory_returns(pid, before, 20 * MIB);
    println!(
        "burst of 40 clients: resident {:.1} MiB before, {:.1} MiB at the peak, {:.1} MiB after",
        mib(before),
        mib(peak),
        mib(after)
    );
    assert!(after <= before + 20 * MIB);
}

#[test]
fn oversized_memcached_requests_and_too_many_keys_get_errors_and_the_connection_stays() {
    let settings = "  max_request_size: 1048576\n  max_keys: 100\n";
    let p = PoolProxy::start(CASHEW, vec![memcached()], settings, &[]);
    let mut c = McConn::connect(p.listen);
    let big = vec![b'x'; 1_048_577];
    let mut request = format!("set big 0 0 {}\r\n", big.len()).into_bytes();
    request.extend_from_slice(&big);
    request.extend_from_slice(b"\r\n");
    c.send(&request);
    assert_eq!(c.line(), "SERVER_ERROR object too large for cache\r\n");
    c.send(b"version\r\n");
    assert!(c.line().starts_with("VERSION "));

    let keys = |n: usize| {
        (0..n)
            .map(|i| format!("k{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    c.roundtrip(format!("get {}\r\n", keys(100)).as_bytes(), b"END\r\n");
    c.roundtrip(
        format!("get {}\r\n", keys(101)).as_bytes(),
        b"CLIENT_ERROR too many keys in one request (max_keys is 100)\r\n",
    );
    c.roundtrip(b"set k1 0 0 1\r\n1\r\n", b"STORED\r\n");
    c.roundtrip(b"get k1\r\n", b"VALUE k1 0 1\r\n1\r\nEND\r\n");
}

#[test]
fn oversized_redis_requests_and_too_many_keys_get_errors() {
    let settings = "  redis: true\n  max_request_size: 1048576\n  max_keys: 100\n";
    let p = PoolProxy::start(CASHEW, vec![redis_server(&[])], settings, &[]);
    let mut c = McConn::connect(p.listen);
    let keys = |n: usize| {
        (0..n)
            .map(|i| format!("k{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    c.send(format!("MGET {}\r\n", keys(100)).as_bytes());
    assert_eq!(c.line(), "*100\r\n");
    for _ in 0..100 {
        assert_eq!(c.line(), "$-1\r\n");
    }
    c.roundtrip(
        format!("DEL {}\r\n", keys(101)).as_bytes(),
        b"-ERR too many keys in one request (max_keys is 100)\r\n",
    );
    c.roundtrip(b"PING\r\n", b"+PONG\r\n");

    // Past max_request_size the stream cannot be followed: the error, then a close.
    let mut big = TcpStream::connect(p.listen).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = big.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n");
    let _ = big.write_all(&vec![b'x'; 100_000]);
    let mut reply = String::new();
    let _ = BufReader::new(&big).read_to_string(&mut reply);
    assert_eq!(
        reply,
        "-ERR Protocol error: request larger than max_request_size (1048576 bytes)\r\n"
    );
}

#[test]
fn a_full_server_queue_fails_new_requests_at_once_and_only_for_that_server() {
    let settings = "  hash: md5\n  server_queue_limit: 1048576\n";
    let p = PoolProxy::start(CASHEW, vec![memcached(), memcached()], settings, &[]);
    let keys: Vec<String> = (0..200).map(|i| format!("q{i}")).collect();
    let routed = p.routed(&keys);
    let on = |server: usize| -> Vec<String> {
        keys.iter()
            .zip(&routed)
            .filter(|(_, &s)| s == server)
            .map(|(k, _)| k.clone())
            .collect()
    };
    let (frozen_keys, live_keys) = (on(0), on(1));
    p.backends[0].freeze();

    // Twenty clients each send 30 sets of 100 kB to the frozen server: far more
    // than the socket buffers and the 1 MiB queue limit hold.
    let value = vec![b'q'; 100_000];
    let mut flooders: Vec<McConn> = (0..20)
        .map(|i| {
            let c = McConn::connect(p.listen);
            let mut batch = Vec::new();
            for n in 0..30 {
                let key = &frozen_keys[(i * 30 + n) % frozen_keys.len()];
                batch.extend_from_slice(format!("set {key} 0 0 {}\r\n", value.len()).as_bytes());
                batch.extend_from_slice(&value);
                batch.extend_from_slice(b"\r\n");
            }
            let mut writer = c.clone_stream();
            std::thread::spawn(move || writer.write_all(&batch));
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));

    // Another set for the frozen server fails at once; the other server serves.
    let mut probe = McConn::connect(p.listen);
    let started = Instant::now();
    let mut set = format!("set {} 0 0 {}\r\n", frozen_keys[0], value.len()).into_bytes();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    probe.roundtrip(
        &set,
        b"SERVER_ERROR Too many requests queued for the server\r\n",
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    probe.roundtrip(format!("get {}\r\n", live_keys[0]).as_bytes(), b"END\r\n");
    let held = rss_bytes(p.cashew.process.pid());

    // Resumed: every flooder gets one reply per request, in order.
    p.backends[0].signal("CONT");
    let (mut stored, mut refused) = (0, 0);
    for c in &mut flooders {
        for _ in 0..30 {
            match c.line().as_str() {
                "STORED\r\n" => stored += 1,
                "SERVER_ERROR Too many requests queued for the server\r\n" => refused += 1,
                other => panic!("unexpected reply {other:?}"),
            }
        }
    }
    println!(
        "flood of 600 x 100 kB sets to a frozen server: {stored} stored, {refused} refused at once; cashew resident {:.1} MiB while frozen",
        mib(held)
    );
    assert!(refused > 0 && stored > 0);
    assert!(held < 150 * MIB);
    probe.roundtrip(format!("get {}\r\n", live_keys[0]).as_bytes(), b"END\r\n");
    probe.send(format!("get {}\r\n", frozen_keys[0]).as_bytes());
    assert!(probe.line().starts_with("VALUE "), "a stored value");
    assert!(p.cashew.log().contains("server_queue_limit"));
}

#[test]
fn ten_thousand_clients_at_once() {
    let limit = raise_open_files_limit();
    let enough = match limit >= 10_500 {
        true => Ok(()),
        false => Err(format!("this process may open only {limit} files")),
    };
    if cashew_testkit::prerequisite("10,500 open files for 10,000 clients", enough).is_none() {
        return;
    }
    let p = PoolProxy::start(CASHEW, vec![memcached()], "", &[]);
    let pid = p.cashew.process.pid();
    let before = rss_bytes(pid);
    let mut clients = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let s = TcpStream::connect(p.listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        clients.push(s);
    }
    for s in &mut clients {
        s.write_all(b"version\r\n").unwrap();
    }
    for s in &mut clients {
        let mut line = [0u8; 8];
        s.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"VERSION ");
    }
    let held = rss_bytes(pid);
    let per_client = (held.saturating_sub(before)) / 10_000;
    let stats: serde_json::Value = serde_json::from_str(&p.cashew.stats_json()).unwrap();
    println!(
        "10,000 idle clients: resident {:.1} MiB -> {:.1} MiB, {per_client} bytes each",
        mib(before),
        mib(held)
    );
    assert_eq!(stats["pool"]["client_connections"], 10_000);
    assert!(per_client <= 6144, "{per_client} bytes per idle client");
}

#[test]
fn out_of_descriptors_is_logged_once_a_second_and_accepting_resumes() {
    let yaml_port = cashew_testkit::free_port("127.0.0.1");
    let listen: SocketAddr = format!("127.0.0.1:{yaml_port}").parse().unwrap();
    let server = memcached();
    let yaml = format!(
        "pool:\n  listen: {listen}\n  servers:\n    - {}:1\n",
        server.addr
    );
    let cashew = Cashew::start_with_open_files(CASHEW, &yaml, &["--threads", "1"], 64);
    let pid = cashew.process.pid();
    // More clients than descriptors: the last ones wait in the listen backlog.
    let mut clients: Vec<TcpStream> = (0..100)
        .map(|_| {
            let s = TcpStream::connect(listen).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    let cpu_before = cpu_time(pid);
    std::thread::sleep(Duration::from_millis(2500));
    let cpu = cpu_time(pid) - cpu_before;
    let log = cashew.log();
    let complaints = log.matches("cannot accept clients").count();
    println!(
        "out of descriptors for 2.5 s: {complaints} log lines, {} ms of CPU",
        cpu.as_millis()
    );
    assert!((1..=4).contains(&complaints), "{log}");
    assert!(
        cpu < Duration::from_millis(300),
        "{cpu:?} of CPU: a busy loop"
    );
    // Clients leave; the ones waiting are accepted and served.
    let waiting = clients.split_off(60);
    drop(clients);
    for mut s in waiting {
        s.write_all(b"version\r\n").unwrap();
        let mut line = [0u8; 8];
        s.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"VERSION ");
    }
}
