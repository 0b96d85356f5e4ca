//! Servers that fail under a pipelined load, for both protocols: killed and
//! restarted, frozen and resumed, closing mid-reply, answering garbage, never
//! answering, answering a byte at a time, named by a host name that stops
//! resolving or resolves slowly. Every request gets exactly one reply, in order;
//! only the faulty server's keys see errors, and a client using only other
//! servers' keys is not slowed; no client is disconnected; once the fault is gone,
//! errors stop within the retry timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cashew_testkit::dns::{Answer, Nameserver};
use cashew_testkit::faulty::{Fault, FaultyLink};
use cashew_testkit::{
    cashew_route, free_port, memcached, memcached_on, redis_server, redis_server_on, Cashew,
    Process,
};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");
const RETRY_MS: u64 = 500;
const TIMEOUT_MS: u64 = 400;
/// The faulty server is the second of three.
const FAULTY: usize = 1;
/// Its host name, when it is given by name.
const FAULTY_NAME: &str = "faulty.cashew.test";
const LOOPBACK: std::net::Ipv4Addr = std::net::Ipv4Addr::LOCALHOST;
/// The most a batch of requests for healthy servers may take, whatever the fault.
const BYSTANDER_LIMIT: Duration = Duration::from_millis(750);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Protocol {
    Memcache,
    Redis,
}

struct Rig {
    protocol: Protocol,
    servers: Vec<Process>,
    link: FaultyLink,
    cashew: Cashew,
    listen: SocketAddr,
    /// Keys and the server each belongs to.
    keys: Vec<(String, usize)>,
    /// Resolves the faulty server's name, when it has one.
    nameserver: Option<Nameserver>,
}

impl Rig {
    fn start(protocol: Protocol, nameserver: Option<Nameserver>) -> Rig {
        let servers: Vec<Process> = (0..3)
            .map(|_| match protocol {
                Protocol::Memcache => memcached(),
                Protocol::Redis => redis_server(&[]),
            })
            .collect();
        let link = FaultyLink::start(servers[FAULTY].addr);
        let entries: Vec<String> = (0..3)
            .map(|i| match (i, &nameserver) {
                (FAULTY, Some(_)) => format!("{FAULTY_NAME}:{}:1", link.addr.port()),
                (FAULTY, None) => format!("{}:1", link.addr),
                _ => format!("{}:1", servers[i].addr),
            })
            .collect();
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
            .parse()
            .unwrap();
        let yaml = format!(
            "pool:\n  listen: {listen}\n  redis: {}\n  hash: md5\n  auto_eject_hosts: true\n  server_failure_limit: 2\n  server_retry_timeout: {RETRY_MS}\n  timeout: {TIMEOUT_MS}\n  servers:\n{}",
            protocol == Protocol::Redis,
            entries.iter().map(|e| format!("    - {e}\n")).collect::<String>()
        );
        let args = ["--threads", "2"];
        let cashew = match &nameserver {
            Some(ns) => {
                ns.set(FAULTY_NAME, Answer::Address(LOOPBACK));
                Cashew::start_with_nameserver(CASHEW, &yaml, &args, ns)
            }
            None => Cashew::start(CASHEW, &yaml, &args),
        };
        // Each load client its own keys, so that what it reads is what it wrote.
        let names: Vec<String> = (0..4)
            .flat_map(|client| (0..45).map(move |i| format!("c{client}-k{i}")))
            .collect();
        let conf = cashew.dir.join("cashew.yml");
        let keys = cashew_route(CASHEW, &conf, None, &names)
            .into_iter()
            .zip(names)
            .map(|(entry, key)| (key, entries.iter().position(|e| *e == entry).unwrap()))
            .collect();
        Rig {
            protocol,
            servers,
            link,
            cashew,
            listen,
            keys,
            nameserver,
        }
    }

    fn answer(&self, answer: Answer) {
        self.nameserver.as_ref().unwrap().set(FAULTY_NAME, answer);
    }

    /// Drops every connection to the faulty server, so that cashew connects (and
    /// resolves its name) again.
    fn break_connections(&self) {
        self.link.set(Fault::CloseMidReply);
        std::thread::sleep(Duration::from_millis(100));
        self.link.set(Fault::None);
    }

    fn restart_faulty_server(&mut self) {
        let port = self.servers[FAULTY].port();
        self.servers[FAULTY] = match self.protocol {
            Protocol::Memcache => memcached_on("127.0.0.1", port),
            Protocol::Redis => redis_server_on(port, &[]),
        };
    }
}

/// An error reply a client saw: when, and for a key of which server.
struct Seen {
    at: Instant,
    server: usize,
    reply: String,
}

#[derive(Default)]
struct Tally {
    requests: u64,
    errors: Vec<Seen>,
    /// Misses and older values for the faulty server's keys.
    stale: Vec<Seen>,
    wrong: Vec<String>,
    closed: bool,
    /// The longest a batch took for the client that uses healthy servers only.
    slowest_bystander: Duration,
}

fn line(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut l = String::new();
    if r.read_line(&mut l)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(l)
}

fn data(r: &mut BufReader<TcpStream>, len: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; len + 2];
    r.read_exact(&mut buf)?;
    buf.truncate(len);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// What the load clients need of the rig.
#[derive(Clone)]
struct Target {
    protocol: Protocol,
    listen: SocketAddr,
    keys: Vec<(String, usize)>,
}

/// A pipelining client: batches of a set and a get for each of six keys, every
/// reply checked against its request, in order.
fn client(rig: &Target, id: usize, stop: &AtomicBool, tally: &Mutex<Tally>) {
    let stream = TcpStream::connect(rig.listen).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let prefix = format!("c{id}-");
    let keys: Vec<&(String, usize)> = rig
        .keys
        .iter()
        .filter(|(key, _)| key.starts_with(&prefix))
        .collect();
    let mut seq = 0usize;
    let bystander = keys.iter().all(|(_, server)| *server != FAULTY);
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let started = Instant::now();
        let batch: Vec<&(String, usize)> =
            (0..6).map(|i| keys[(seq * 6 + i) % keys.len()]).collect();
        let value = format!("c{id}s{seq}");
        let mut request = String::new();
        for (key, _) in &batch {
            request += &match rig.protocol {
                Protocol::Memcache => {
                    format!("set {key} 0 0 {}\r\n{value}\r\nget {key}\r\n", value.len())
                }
                Protocol::Redis => format!("SET {key} {value}\r\nGET {key}\r\n"),
            };
        }
        if writer.write_all(request.as_bytes()).is_err() {
            tally.lock().unwrap().closed = true;
            return;
        }
        for (key, server) in &batch {
            let checked = check_pair(rig.protocol, &mut reader, &value);
            let mut t = tally.lock().unwrap();
            t.requests += 2;
            match checked {
                Err(_) => {
                    t.closed = true;
                    return;
                }
                Ok(Reply::Fine) => {}
                Ok(Reply::Error(reply)) if *server == FAULTY => t.errors.push(Seen {
                    at: Instant::now(),
                    server: *server,
                    reply,
                }),
                // A key of the faulty server may be read elsewhere while it is
                // ejected: a miss or an older value there is right.
                Ok(Reply::Other(reply)) if *server == FAULTY => t.stale.push(Seen {
                    at: Instant::now(),
                    server: *server,
                    reply,
                }),
                Ok(Reply::Error(reply)) => t.errors.push(Seen {
                    at: Instant::now(),
                    server: *server,
                    reply,
                }),
                Ok(Reply::Other(what)) => t.wrong.push(format!(
                    "{key} (server {server}) set to {value} by client {id}: {what}"
                )),
            }
        }
        if bystander {
            let mut t = tally.lock().unwrap();
            t.slowest_bystander = t.slowest_bystander.max(started.elapsed());
        }
    }
}

enum Reply {
    /// Stored, then read back with the value just stored.
    Fine,
    /// An error reply to the set or the get.
    Error(String),
    /// Something else: a miss, another value.
    Other(String),
}

/// Reads the replies to a set of `value` and a get of the same key.
fn check_pair(
    protocol: Protocol,
    r: &mut BufReader<TcpStream>,
    value: &str,
) -> std::io::Result<Reply> {
    let is_error = |l: &str| l.starts_with("SERVER_ERROR") || l.starts_with("-ERR");
    let set = line(r)?;
    let get = line(r)?;
    let got = match protocol {
        Protocol::Memcache => match get.as_str() {
            "END\r\n" => None,
            header if header.starts_with("VALUE ") => {
                let len: usize = header
                    .trim_end()
                    .rsplit(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                let v = data(r, len)?;
                let end = line(r)?;
                if end != "END\r\n" {
                    return Ok(Reply::Other(format!("{header:?} then {end:?}")));
                }
                Some(v)
            }
            other => {
                return Ok(if is_error(other) {
                    Reply::Error(other.into())
                } else {
                    Reply::Other(other.into())
                })
            }
        },
        Protocol::Redis => match get.as_str() {
            "$-1\r\n" => None,
            header if header.starts_with('$') => {
                Some(data(r, header[1..].trim_end().parse().unwrap())?)
            }
            other => {
                return Ok(if is_error(other) {
                    Reply::Error(other.into())
                } else {
                    Reply::Other(other.into())
                })
            }
        },
    };
    let stored = matches!(set.as_str(), "STORED\r\n" | "+OK\r\n");
    Ok(match (stored, got) {
        (true, Some(v)) if v == value => Reply::Fine,
        (false, _) if is_error(&set) => Reply::Error(set),
        (_, got) => Reply::Other(format!("set {set:?}, get {got:?}")),
    })
}

/// Runs the load, applies `fault` for a second, lifts it with `repair`, and checks
/// what the clients saw.
fn survives(
    protocol: Protocol,
    what: &str,
    fault: impl FnOnce(&mut Rig),
    repair: impl FnOnce(&mut Rig),
) {
    survives_on(Rig::start(protocol, None), what, fault, repair);
}

/// A rig whose faulty server is given by a host name, or `None` (and why) where
/// this machine does not let a test run its own nameserver.
fn named_rig(protocol: Protocol) -> Option<Rig> {
    let ns = cashew_testkit::prerequisite("a test nameserver (root)", Nameserver::start())?;
    Some(Rig::start(protocol, Some(ns)))
}

fn not_resolving(protocol: Protocol) {
    let Some(rig) = named_rig(protocol) else {
        return;
    };
    let log = survives_on(
        rig,
        "host name not resolving",
        |r| {
            r.answer(Answer::Unknown);
            r.break_connections();
        },
        |r| r.answer(Answer::Address(LOOPBACK)),
    );
    let failed = format!("address resolution of '{FAULTY_NAME}' failed");
    assert!(log.contains(&failed), "no '{failed}' in the log:\n{log}");
}

fn resolving_slowly(protocol: Protocol) {
    let Some(rig) = named_rig(protocol) else {
        return;
    };
    survives_on(
        rig,
        "host name resolving slowly",
        |r| {
            r.answer(Answer::Slow(Duration::from_millis(1500), LOOPBACK));
            r.break_connections();
        },
        |r| r.answer(Answer::Address(LOOPBACK)),
    );
}

/// As [`survives`], on a rig already started.
fn survives_on(
    mut rig: Rig,
    what: &str,
    fault: impl FnOnce(&mut Rig),
    repair: impl FnOnce(&mut Rig),
) -> String {
    let protocol = rig.protocol;
    let stop = AtomicBool::new(false);
    let tally = Mutex::new(Tally::default());
    let target = Target {
        protocol,
        listen: rig.listen,
        keys: rig.keys.clone(),
    };
    let bystander = Target {
        keys: target
            .keys
            .iter()
            .filter(|(_, server)| *server != FAULTY)
            .cloned()
            .collect(),
        ..target.clone()
    };
    let (faulted, repaired, settled) = std::thread::scope(|scope| {
        let load: Vec<_> = (0..4)
            .map(|id| {
                let (stop, tally) = (&stop, &tally);
                let target = if id == 3 { &bystander } else { &target };
                scope.spawn(move || client(target, id, stop, tally))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let faulted = Instant::now();
        fault(&mut rig);
        std::thread::sleep(Duration::from_millis(1000));
        repair(&mut rig);
        let repaired = Instant::now();
        // The retry timeout, a timeout for a request caught in the change, a margin.
        std::thread::sleep(Duration::from_millis(RETRY_MS + TIMEOUT_MS + 600));
        let settled = Instant::now();
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, Ordering::Relaxed);
        for l in load {
            l.join().unwrap();
        }
        (faulted, repaired, settled)
    });
    let t = tally.into_inner().unwrap();
    let stats: serde_json::Value = serde_json::from_str(&rig.cashew.stats_json()).unwrap();
    let last_error = t.errors.iter().map(|e| e.at).max();
    println!(
        "{protocol:?}, {what}: {} requests, {} error replies (all for the faulty server's keys: {}), {} misses or old values, last error {} ms after the repair, {} ejections, slowest batch for healthy servers {} ms",
        t.requests,
        t.errors.len(),
        t.errors.iter().all(|e| e.server == FAULTY),
        t.stale.len(),
        last_error.map_or(0, |at| at.saturating_duration_since(repaired).as_millis()),
        stats["pool"]["server_ejects"],
        t.slowest_bystander.as_millis()
    );
    assert!(!t.closed, "a client connection was closed");
    assert!(
        t.wrong.is_empty(),
        "wrong replies: {:?}",
        &t.wrong[..t.wrong.len().min(5)]
    );
    let elsewhere: Vec<&Seen> = t.errors.iter().filter(|e| e.server != FAULTY).collect();
    assert!(
        elsewhere.is_empty(),
        "errors for other servers' keys: {:?}",
        elsewhere.iter().map(|e| &e.reply).collect::<Vec<_>>()
    );
    let late: Vec<&Seen> = t.errors.iter().filter(|e| e.at > settled).collect();
    assert!(
        late.is_empty(),
        "errors after recovery: {:?}",
        late.iter().map(|e| &e.reply).collect::<Vec<_>>()
    );
    let stale: Vec<&Seen> = t.stale.iter().filter(|e| e.at > settled).collect();
    assert!(
        stale.is_empty(),
        "misses or old values after recovery: {:?}",
        stale.iter().map(|e| &e.reply).collect::<Vec<_>>()
    );
    assert!(t.errors.iter().all(|e| e.at >= faulted));
    assert!(
        !t.errors.is_empty() || stats["pool"]["server_ejects"].as_u64().unwrap() > 0,
        "the fault had no effect"
    );
    assert!(t.requests > 500, "{} requests", t.requests);
    assert!(
        t.slowest_bystander < BYSTANDER_LIMIT,
        "a client of healthy servers waited {} ms",
        t.slowest_bystander.as_millis()
    );
    drop(rig.link);
    rig.cashew.log()
}

fn killed(protocol: Protocol) {
    survives(
        protocol,
        "killed and restarted",
        |r| r.servers[FAULTY].signal("KILL"),
        Rig::restart_faulty_server,
    );
}

fn frozen(protocol: Protocol) {
    survives(
        protocol,
        "frozen and resumed",
        |r| r.servers[FAULTY].freeze(),
        |r| r.servers[FAULTY].signal("CONT"),
    );
}

fn with_fault(protocol: Protocol, fault: Fault) {
    survives(
        protocol,
        &format!("{fault:?}"),
        |r| r.link.set(fault),
        |r| r.link.set(Fault::None),
    );
}

#[test]
fn memcached_killed_and_restarted() {
    killed(Protocol::Memcache);
}

#[test]
fn memcached_frozen_and_resumed() {
    frozen(Protocol::Memcache);
}

#[test]
fn memcached_closing_mid_reply() {
    with_fault(Protocol::Memcache, Fault::CloseMidReply);
}

#[test]
fn memcached_answering_garbage() {
    with_fault(Protocol::Memcache, Fault::Garbage);
}

#[test]
fn memcached_never_answering() {
    with_fault(Protocol::Memcache, Fault::Silent);
}

#[test]
fn memcached_answering_byte_by_byte() {
    with_fault(Protocol::Memcache, Fault::Slow);
}

#[test]
fn memcached_host_name_not_resolving() {
    not_resolving(Protocol::Memcache);
}

#[test]
fn memcached_host_name_resolving_slowly() {
    resolving_slowly(Protocol::Memcache);
}

#[test]
fn redis_host_name_not_resolving() {
    not_resolving(Protocol::Redis);
}

#[test]
fn redis_host_name_resolving_slowly() {
    resolving_slowly(Protocol::Redis);
}

#[test]
fn redis_killed_and_restarted() {
    killed(Protocol::Redis);
}

#[test]
fn redis_frozen_and_resumed() {
    frozen(Protocol::Redis);
}

#[test]
fn redis_closing_mid_reply() {
    with_fault(Protocol::Redis, Fault::CloseMidReply);
}

#[test]
fn redis_answering_garbage() {
    with_fault(Protocol::Redis, Fault::Garbage);
}

#[test]
fn redis_never_answering() {
    with_fault(Protocol::Redis, Fault::Silent);
}

#[test]
fn redis_answering_byte_by_byte() {
    with_fault(Protocol::Redis, Fault::Slow);
}
