//! Malformed and abusive input from clients (tests/data/hostile/): each case gets
//! its reply or a close within a bounded time, sent whole, byte by byte, followed
//! by a half-close, or abandoned with a reset; cashew stays up, counts the closes,
//! and a well-behaved client working all along sees no error and no stall.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cashew_testkit::{free_port, memcached, redis_server, unescape, Cashew, McConn};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");
/// The longest any case may take to get its reply or its close.
const BOUND: Duration = Duration::from_secs(3);
/// How long an incomplete request is watched for an early reply.
const QUIET: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Protocol {
    Memcache,
    Redis,
}

impl Protocol {
    /// A request whose reply nothing in a case's output can be mistaken for.
    fn probe(self) -> (&'static [u8], &'static [u8]) {
        match self {
            Protocol::Memcache => (b"get __probe__ __probe__\r\n", b"END\r\n"),
            Protocol::Redis => (b"ECHO __probe__\r\n", b"$9\r\n__probe__\r\n"),
        }
    }
}

#[derive(Debug)]
enum Outcome {
    Reply(Vec<u8>),
    Close(Vec<u8>),
    /// A reply, then the rest of the request is read away (a refused value's data)
    /// until the client ends its side.
    Skip(Vec<u8>),
    Wait,
    None,
}

struct Case {
    name: String,
    bytes: Vec<u8>,
    outcome: Outcome,
}

fn cases(text: &str) -> Vec<Case> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            let [name, bytes, outcome] = fields[..] else {
                panic!("not NAME<TAB>BYTES<TAB>OUTCOME: {l}");
            };
            let (kind, prefix) = outcome.split_once(' ').unwrap_or((outcome, ""));
            let prefix = unescape(prefix);
            let outcome = match kind {
                "reply" => Outcome::Reply(prefix),
                "close" => Outcome::Close(prefix),
                "skip" => Outcome::Skip(prefix),
                "wait" => Outcome::Wait,
                "none" => Outcome::None,
                other => panic!("{name}: unknown outcome {other}"),
            };
            Case {
                name: name.to_string(),
                bytes: unescape(bytes),
                outcome,
            }
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Whole,
    ByteByByte,
    /// Sent whole, then the client shuts down its sending side.
    HalfClose,
    /// Sent whole, then the connection is reset.
    Vanish,
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn send(s: &mut TcpStream, bytes: &[u8], mode: Mode) {
    // A write may fail once cashew has closed on a broken stream: that is allowed.
    match mode {
        Mode::ByteByByte => {
            for b in bytes {
                if s.write_all(&[*b]).is_err() {
                    return;
                }
            }
        }
        _ => {
            let _ = s.write_all(bytes);
        }
    }
}

/// Reads until `enough` says so, the end of the stream (`true`), or `limit`.
fn read_until(
    s: &mut TcpStream,
    got: &mut Vec<u8>,
    limit: Duration,
    enough: impl Fn(&[u8]) -> bool,
) -> Result<bool, String> {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 64 * 1024];
    while !enough(got) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no end within {limit:?}; got {}", show(got)));
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // A reset after cashew closed on a stream it could not follow.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(true),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Ok(false)
}

fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
    format!("{text:?}{}", if bytes.len() > 200 { "..." } else { "" })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Runs one case in one mode; `Err` says what went wrong.
fn run(addr: SocketAddr, protocol: Protocol, case: &Case, mode: Mode) -> Result<(), String> {
    let mut s = connect(addr);
    send(&mut s, &case.bytes, mode);
    let (probe, probe_reply) = protocol.probe();
    let mut got = Vec::new();
    match mode {
        Mode::Vanish => {
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            return Ok(());
        }
        Mode::HalfClose => {
            let _ = s.shutdown(Shutdown::Write);
            read_until(&mut s, &mut got, BOUND, |_| false)?;
            let prefix: &[u8] = match &case.outcome {
                Outcome::Reply(p) | Outcome::Close(p) | Outcome::Skip(p) => p,
                Outcome::Wait | Outcome::None => b"",
            };
            if !got.starts_with(prefix) {
                return Err(format!(
                    "expected {} then a close, got {}",
                    show(prefix),
                    show(&got)
                ));
            }
            return Ok(());
        }
        Mode::Whole | Mode::ByteByByte => {}
    }
    match &case.outcome {
        Outcome::Reply(prefix) => {
            read_until(&mut s, &mut got, BOUND, |g| g.len() >= prefix.len().max(1))?;
            if !got.starts_with(prefix) {
                return Err(format!("expected {}, got {}", show(prefix), show(&got)));
            }
            // The connection still serves: the probe's reply comes after the case's.
            let _ = s.write_all(probe);
            let closed = read_until(&mut s, &mut got, BOUND, |g| {
                g.ends_with(probe_reply) && contains(&g[prefix.len()..], probe_reply)
            })?;
            if closed {
                return Err(format!("closed after {}", show(&got)));
            }
        }
        Outcome::None => {
            let _ = s.write_all(probe);
            read_until(&mut s, &mut got, BOUND, |g| g.len() >= probe_reply.len())?;
            if !got.starts_with(probe_reply) {
                return Err(format!("expected no reply, got {}", show(&got)));
            }
        }
        Outcome::Close(prefix) => {
            let closed = read_until(&mut s, &mut got, BOUND, |_| false)?;
            if !closed || !got.starts_with(prefix) {
                return Err(format!(
                    "expected {} then a close, got {}",
                    show(prefix),
                    show(&got)
                ));
            }
        }
        Outcome::Skip(_) | Outcome::Wait => {
            let prefix: &[u8] = match &case.outcome {
                Outcome::Skip(p) => p,
                _ => b"",
            };
            if !prefix.is_empty() {
                read_until(&mut s, &mut got, BOUND, |g| g.len() >= prefix.len())?;
            }
            let _ = read_until(&mut s, &mut got, QUIET, |g| g.len() > prefix.len());
            if got != prefix {
                return Err(format!(
                    "expected {} and nothing more yet, got {}",
                    show(prefix),
                    show(&got)
                ));
            }
            let _ = s.shutdown(Shutdown::Write);
            if !read_until(&mut s, &mut got, BOUND, |_| false)? {
                return Err("no close after the client ended its side".into());
            }
        }
    }
    Ok(())
}

/// A well-behaved client: a set and a get every few milliseconds until `stop`;
/// its slowest round trip, and any wrong reply.
fn steady(addr: SocketAddr, protocol: Protocol, stop: &AtomicBool) -> (Duration, Vec<String>) {
    let mut c = McConn::connect(addr);
    let mut worst = Duration::ZERO;
    let mut wrong = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let started = Instant::now();
        let (request, reply) = match protocol {
            Protocol::Memcache => (
                format!(
                    "set steady 0 0 {}\r\n{n}\r\nget steady\r\n",
                    n.to_string().len()
                ),
                format!(
                    "STORED\r\nVALUE steady 0 {}\r\n{n}\r\nEND\r\n",
                    n.to_string().len()
                ),
            ),
            Protocol::Redis => (
                format!("SET steady {n}\r\nGET steady\r\n"),
                format!("+OK\r\n${}\r\n{n}\r\n", n.to_string().len()),
            ),
        };
        c.send(request.as_bytes());
        let got = c.read_exact(reply.len());
        if got != reply.as_bytes() {
            wrong.push(show(&got));
            break;
        }
        worst = worst.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(2));
    }
    (worst, wrong)
}

fn hostile(protocol: Protocol, corpus: &str) {
    let (memcache, redis) = match protocol {
        Protocol::Memcache => (Some([memcached(), memcached()]), None),
        Protocol::Redis => (None, Some([redis_server(&[]), redis_server(&[])])),
    };
    let servers: Vec<SocketAddr> = match (&memcache, &redis) {
        (Some(s), _) | (_, Some(s)) => s.iter().map(|p| p.addr).collect(),
        _ => unreachable!(),
    };
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let yaml = format!(
        "pool:\n  listen: {listen}\n  redis: {}\n  timeout: 2000\n  servers:\n    - {}:1\n    - {}:1\n",
        protocol == Protocol::Redis,
        servers[0],
        servers[1]
    );
    let cashew = Cashew::start(CASHEW, &yaml, &["--threads", "2"]);
    let cases = cases(corpus);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (failures, runs, (worst, wrong)) = std::thread::scope(|scope| {
        let steady = scope.spawn(|| steady(listen, protocol, &stop));
        let mut failures = Vec::new();
        let mut runs = 0;
        for case in &cases {
            let mut modes = vec![Mode::Whole, Mode::HalfClose, Mode::Vanish];
            if case.bytes.len() <= 300 {
                modes.push(Mode::ByteByByte);
            }
            for mode in modes {
                runs += 1;
                if let Err(why) = run(listen, protocol, case, mode) {
                    failures.push(format!("{} ({mode:?}): {why}", case.name));
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        (failures, runs, steady.join().unwrap())
    });
    let stats: serde_json::Value = serde_json::from_str(&cashew.stats_json()).unwrap();
    println!(
        "{protocol:?}: {} cases, {runs} runs in {:.1} s; client_err {}, client_eof {}; a well-behaved client's slowest round trip {} ms",
        cases.len(),
        started.elapsed().as_secs_f64(),
        stats["pool"]["client_err"],
        stats["pool"]["client_eof"],
        worst.as_millis()
    );
    assert!(
        failures.is_empty(),
        "{} of {runs} runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(wrong.is_empty(), "the well-behaved client got {wrong:?}");
    assert!(
        worst < Duration::from_millis(500),
        "the well-behaved client waited {worst:?}"
    );
    // Closes on broken streams are counted (the QUIT ones are not errors).
    let error_closes = cases
        .iter()
        .filter(|c| {
            matches!(c.outcome, Outcome::Close(_)) && !c.name.to_lowercase().contains("quit")
        })
        .count() as u64;
    assert!(stats["pool"]["client_err"].as_u64().unwrap() >= error_closes);
    assert!(cashew_testkit::pid_alive(cashew.process.pid()));
}

#[test]
fn hostile_memcached_clients() {
    hostile(
        Protocol::Memcache,
        include_str!("data/hostile/memcache.txt"),
    );
}

#[test]
fn hostile_redis_clients() {
    hostile(Protocol::Redis, include_str!("data/hostile/redis.txt"));
}
