//! Redis workloads that hold a connection, against real redis servers:
//! transactions (MULTI/EXEC, WATCH) and blocking calls (BLPOP, BRPOP, XREAD BLOCK)
//! get a server connection of the client's own for as long as they need one; a
//! job queue (RQ) runs through cashew.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use cashew_testkit::resp::compare_sequences;
use cashew_testkit::{redis_server, PoolProxy, Process};
use redis::{Connection, Value};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn start(servers: usize, settings: &str) -> PoolProxy {
    let backends: Vec<Process> = (0..servers).map(|_| redis_server(&[])).collect();
    let settings = format!("  redis: true\n  hash: md5\n  hash_tag: \"{{}}\"\n{settings}");
    PoolProxy::start(CASHEW, backends, &settings, &[])
}

fn connect(addr: SocketAddr) -> Connection {
    redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Two hash tags whose keys are on different servers.
fn tags_on_two_servers(p: &PoolProxy) -> (String, String) {
    let tags: Vec<String> = (0..50).map(|i| format!("{{t{i}}}")).collect();
    let keys: Vec<String> = tags.iter().map(|t| format!("{t}:k")).collect();
    let servers = p.routed(&keys);
    let other = (1..tags.len()).find(|&i| servers[i] != servers[0]).unwrap();
    (tags[0].clone(), tags[other].clone())
}

fn pinned(p: &PoolProxy) -> u64 {
    p.stats()["pool"]["pinned_connections"].as_u64().unwrap()
}

/// A counter of the server at `addr` in the stats document.
fn server_stat(p: &PoolProxy, addr: SocketAddr, counter: &str) -> u64 {
    let stats = p.stats();
    let name = addr.to_string();
    stats["pool"][&name][counter]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} {counter}: {stats}"))
}

/// Connections the server has open (the proxy's included).
fn server_clients(server: &Process) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut connect(server.addr))
        .unwrap();
    list.lines().count()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Between WATCH and MULTI a client may run any command, as on Redis: one on
/// keys of another server runs outside the transaction, and every reply comes in
/// the client's order, from the watched server's connection or not (compared,
/// pipelined, with one redis-server's replies).
#[test]
fn commands_between_watch_and_multi_run_in_order_on_any_server() {
    let p = start(3, "");
    let reference = redis_server(&[]);
    let (a, b) = tags_on_two_servers(&p);
    let (w, same, other) = (format!("{a}w"), format!("{a}s"), format!("{b}o"));
    let sequence = format!(
        "SET {w} 1\nWATCH {w}\nSET {same} 5\nSET {other} 6\nMGET {same} {other} {w}\n\
         INCR {same}\nINCR {other}\nBLPOP {other}q 0.01\nMGET {same} {other}\nMULTI\n\
         INCR {w}\nEXEC\nMGET {same} {other} {w}\n\
         WATCH {w}\nMSET {same} 1 {other} 2 {w} 7\nMULTI\nINCR {w}\nEXEC\nGET {w}\n\
         DEL {same} {other} {w}\n"
    );
    // Replies on two connections may race: a few rounds.
    for _ in 0..10 {
        compare_sequences(&sequence, reference.addr, p.listen);
    }
}

#[test]
fn transactions_run_on_the_server_of_their_keys() {
    let p = start(3, "");
    let mut c = connect(p.listen);
    let (a, b) = tags_on_two_servers(&p);

    let (set, incr, got): (bool, i64, String) = redis::pipe()
        .atomic()
        .set(format!("{a}:n"), 10)
        .incr(format!("{a}:n"), 5)
        .get(format!("{a}:n"))
        .query(&mut c)
        .unwrap();
    assert_eq!((set, incr, got.as_str()), (true, 15, "15"));

    // WATCH, and another client's write in between: EXEC answers nil.
    let mut other = connect(p.listen);
    let _: () = redis::cmd("WATCH")
        .arg(format!("{a}:bal"))
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{a}:bal"))
        .arg(5)
        .query(&mut other)
        .unwrap();
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let queued: String = redis::cmd("SET")
        .arg(format!("{a}:bal"))
        .arg(100)
        .query(&mut c)
        .unwrap();
    assert_eq!(queued, "QUEUED");
    let exec: Value = redis::cmd("EXEC").query(&mut c).unwrap();
    assert_eq!(exec, Value::Nil, "a watched key changed");
    let bal: i64 = redis::cmd("GET")
        .arg(format!("{a}:bal"))
        .query(&mut c)
        .unwrap();
    assert_eq!(bal, 5);

    // A key of another server inside MULTI: CROSSSLOT, then EXECABORT; nothing ran.
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: String = redis::cmd("SET")
        .arg(format!("{a}:x"))
        .arg(1)
        .query(&mut c)
        .unwrap();
    let cross = redis::cmd("SET")
        .arg(format!("{b}:y"))
        .arg(1)
        .query::<String>(&mut c)
        .unwrap_err();
    assert_eq!(cross.code(), Some("CROSSSLOT"), "{cross}");
    let abort = redis::cmd("EXEC").query::<Value>(&mut c).unwrap_err();
    assert_eq!(abort.code(), Some("EXECABORT"), "{abort}");
    let x: Option<i64> = redis::cmd("GET")
        .arg(format!("{a}:x"))
        .query(&mut c)
        .unwrap();
    assert_eq!(x, None, "the aborted transaction ran nothing");

    // Keyless commands only, DISCARD, and nesting.
    let mut raw = TcpStream::connect(p.listen).unwrap();
    let mut reader = BufReader::new(raw.try_clone().unwrap());
    raw.write_all(
        b"MULTI\r\nPING\r\nECHO hi\r\nEXEC\r\nMULTI\r\nMULTI\r\nSET k v\r\nDISCARD\r\nGET k\r\n",
    )
    .unwrap();
    let mut replies = String::new();
    for _ in 0..12 {
        reader.read_line(&mut replies).unwrap();
    }
    assert_eq!(
        replies,
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+PONG\r\n$2\r\nhi\r\n+OK\r\n-ERR MULTI calls can not be nested\r\n+QUEUED\r\n+OK\r\n$-1\r\n",
    );

    // Every session is over: its connection is closed.
    wait_for("pinned connections closed", Duration::from_secs(5), || {
        pinned(&p) == 0
    });
}

#[test]
fn a_blocked_client_is_released_by_another_and_costs_the_others_nothing() {
    let p = start(2, "");
    let listen = p.listen;
    let waiter = std::thread::spawn(move || {
        let mut c = connect(listen);
        let started = Instant::now();
        let got: (String, String) = redis::cmd("BLPOP")
            .arg("{q}:jobs")
            .arg(5)
            .query(&mut c)
            .unwrap();
        (got, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut c = connect(p.listen);
    let _: () = redis::cmd("LPUSH")
        .arg("{q}:jobs")
        .arg("job-1")
        .query(&mut c)
        .unwrap();
    let (got, waited) = waiter.join().unwrap();
    assert_eq!(got, ("{q}:jobs".to_string(), "job-1".to_string()));
    assert!(
        waited >= Duration::from_millis(250),
        "it blocked: {waited:?}"
    );

    // XREAD BLOCK, released by XADD.
    let waiter = std::thread::spawn(move || {
        let mut c = connect(listen);
        let got: Value = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(5000)
            .arg("STREAMS")
            .arg("{q}:events")
            .arg("$")
            .query(&mut c)
            .unwrap();
        got
    });
    std::thread::sleep(Duration::from_millis(300));
    let _: String = redis::cmd("XADD")
        .arg("{q}:events")
        .arg("*")
        .arg("k")
        .arg("v")
        .query(&mut c)
        .unwrap();
    assert_ne!(waiter.join().unwrap(), Value::Nil);

    // 200 clients blocked at once while another pipelines.
    let p99 = |c: &mut Connection| {
        let mut times = Vec::new();
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            let started = Instant::now();
            let _: Vec<Option<String>> = redis::pipe()
                .get("a")
                .get("b")
                .get("c")
                .get("d")
                .query(c)
                .unwrap();
            times.push(started.elapsed());
        }
        times.sort();
        times[times.len() * 99 / 100]
    };
    let before = p99(&mut c);
    let clients_before: usize = p.backends.iter().map(server_clients).sum();
    let mut blocked: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut s = TcpStream::connect(listen).unwrap();
            s.write_all(format!("BLPOP {{b{i}}}:empty 0\r\n").as_bytes())
                .unwrap();
            s
        })
        .collect();
    wait_for("200 pinned connections", Duration::from_secs(10), || {
        pinned(&p) == 200
    });
    let during = p99(&mut c);
    println!("p99 of a 4-get pipeline: {before:?} before, {during:?} with 200 clients blocked");
    assert!(
        during <= before * 5 + Duration::from_millis(5),
        "{before:?} → {during:?}"
    );
    let on_servers: usize = p.backends.iter().map(server_clients).sum();
    assert!(
        on_servers >= clients_before + 200,
        "{clients_before} → {on_servers}"
    );

    // The blocked clients leave: their server connections close.
    blocked.clear();
    wait_for(
        "pinned connections closed on the servers",
        Duration::from_secs(5),
        || {
            pinned(&p) == 0
                && p.backends.iter().map(server_clients).sum::<usize>() <= clients_before
        },
    );
    drop(blocked);
}

#[test]
fn max_pinned_connections_gives_an_error_and_the_client_stays_usable() {
    let p = start(1, "  max_pinned_connections: 2\n");
    let held: Vec<TcpStream> = (0..2)
        .map(|i| {
            let mut s = TcpStream::connect(p.listen).unwrap();
            s.write_all(format!("BLPOP held{i} 0\r\n").as_bytes())
                .unwrap();
            s
        })
        .collect();
    wait_for("2 pinned", Duration::from_secs(5), || pinned(&p) == 2);
    let mut c = connect(p.listen);
    let e = redis::cmd("BLPOP")
        .arg("third")
        .arg(0)
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(
        e.to_string().contains("max pinned connections reached"),
        "{e}"
    );
    let e = redis::cmd("WATCH")
        .arg("k")
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(
        e.to_string().contains("max pinned connections reached"),
        "{e}"
    );
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    drop(held);
    wait_for("released", Duration::from_secs(5), || pinned(&p) == 0);
    let none: Value = redis::cmd("BLPOP")
        .arg("third")
        .arg(0.05)
        .query(&mut c)
        .unwrap();
    assert_eq!(none, Value::Nil);
}

#[test]
fn an_rq_worker_runs_a_thousand_jobs_through_cashew() {
    // RQ's transactions name several keys without hash tags: one server per pool.
    let p = start(1, "");
    let text =
        cashew_testkit::run_python_script("rq_jobs.py", &[p.listen.to_string(), "1000".into()]);
    assert!(text.contains("1000 of 1000 results"), "{text}");
}

#[test]
fn subscribers_get_every_message_once_and_in_order_over_three_servers() {
    let p = start(3, "");
    for protocol in ["2", "3"] {
        let args = [
            p.listen.ip().to_string(),
            p.listen.port().to_string(),
            protocol.into(),
        ];
        let text = cashew_testkit::run_python_script("redis_pubsub.py", &args);
        assert!(text.contains("each once and in order: ok"), "{text}");
    }
    wait_for(
        "subscribers' connections closed",
        Duration::from_secs(5),
        || pinned(&p) == 0,
    );
}

/// A RESP3 client that subscribes and publishes in one pipeline gets its own
/// message: the PUBLISH, on another connection than the SUBSCRIBE, waits for its
/// confirmation, as it runs after it on one connection to Redis.
#[test]
fn a_publish_pipelined_after_a_subscribe_reaches_it() {
    use cashew_protocol::resp::{parse_reply, ReplyParse};
    use std::io::Read;

    let p = start(3, "");
    let mut s = TcpStream::connect(p.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    // The next whole frame, as text.
    let mut frame = |s: &mut TcpStream| loop {
        if let ReplyParse::Complete(n) = parse_reply(&buf) {
            return String::from_utf8_lossy(&buf.drain(..n).collect::<Vec<u8>>()).into_owned();
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
    };
    s.write_all(b"HELLO 3\r\n").unwrap();
    assert!(frame(&mut s).starts_with('%'));
    for round in 0..20 {
        let channel = format!("news{round}");
        s.write_all(
            format!("SUBSCRIBE {channel}\r\nPUBLISH {channel} hello\r\nUNSUBSCRIBE {channel}\r\n")
                .as_bytes(),
        )
        .unwrap();
        let frames: Vec<String> = (0..4).map(|_| frame(&mut s)).collect();
        assert!(frames[0].contains("subscribe"), "round {round}: {frames:?}");
        assert_eq!(
            frames[1], ":1\r\n",
            "round {round}: PUBLISH reached the subscriber: {frames:?}"
        );
        assert!(
            frames[2..]
                .iter()
                .any(|f| f.contains("message") && f.contains("hello")),
            "round {round}: the message came: {frames:?}"
        );
        assert!(
            frames[2..].iter().any(|f| f.contains("unsubscribe")),
            "round {round}: {frames:?}"
        );
    }
}

/// A command cashew answers itself (INFO, CLIENT, COMMAND, AUTH, HELLO) cannot be
/// queued in a transaction: it is refused and EXEC fails, rather than answered at
/// once and missing from EXEC's array. PING, ECHO and SELECT 0 are queued.
#[test]
fn commands_cashew_answers_are_refused_inside_multi() {
    use cashew_testkit::resp::RespConn;

    let p = start(3, "");
    let mut c = RespConn::connect(p.listen);
    for local in [&b"INFO"[..], b"COMMAND", b"HELLO"] {
        assert_eq!(c.request(&[b"MULTI"]), b"+OK\r\n");
        assert_eq!(c.request(&[b"SET", b"{m}k", b"1"]), b"+QUEUED\r\n");
        let refused = c.request(&[local]);
        assert!(
            refused.starts_with(b"-ERR '") && refused.ends_with(b"outside the transaction\r\n"),
            "{}",
            String::from_utf8_lossy(&refused)
        );
        assert!(c.request(&[b"EXEC"]).starts_with(b"-EXECABORT"));
    }
    assert_eq!(c.request(&[b"GET", b"{m}k"]), b"$-1\r\n", "nothing ran");
    assert_eq!(c.request(&[b"MULTI"]), b"+OK\r\n");
    for queued in [
        &[&b"PING"[..]][..],
        &[b"ECHO", b"x"],
        &[b"SELECT", b"0"],
        &[b"SET", b"{m}k", b"2"],
    ] {
        assert_eq!(c.request(queued), b"+QUEUED\r\n");
    }
    assert_eq!(
        c.request(&[b"EXEC"]),
        b"*4\r\n+PONG\r\n$1\r\nx\r\n+OK\r\n+OK\r\n"
    );
}

/// Requests pipelined behind a blocking call wait for it (as on one connection to
/// Redis) in the client's socket, not in cashew's memory: cashew stops reading
/// until the call returns, and TCP holds the client back. Then every one is
/// answered, in order.
#[test]
fn requests_behind_a_blocking_call_wait_in_the_socket_not_in_cashew() {
    use std::io::{ErrorKind, Read};

    let p = start(1, "");
    let mut s = TcpStream::connect(p.listen).unwrap();
    s.write_all(b"*3\r\n$5\r\nBLPOP\r\n$4\r\n{q}q\r\n$1\r\n3\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    const GET: &[u8] = b"GET {q}k\r\n";
    let chunk = GET.repeat(100_000);
    s.set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let started = Instant::now();
    let mut written = 0;
    while written < 128 << 20 && started.elapsed() < Duration::from_millis(1500) {
        match s.write(&chunk[written % chunk.len()..]) {
            Ok(n) => written += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        written < 32 << 20,
        "{} MiB of requests were taken while the call blocked",
        written >> 20
    );
    // The rest of a request cut short, then every reply.
    s.set_write_timeout(None).unwrap();
    s.write_all(&GET[written % GET.len()..]).unwrap();
    let requests = written.div_ceil(GET.len());
    let mut expected = b"*-1\r\n".to_vec();
    expected.extend(b"$-1\r\n".repeat(requests));
    let mut got = vec![0u8; expected.len()];
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.read_exact(&mut got).unwrap();
    let first_difference = got.iter().zip(&expected).position(|(a, b)| a != b);
    assert!(
        first_difference.is_none(),
        "{requests} requests answered in order after the call: {:?}",
        first_difference.map(|at| String::from_utf8_lossy(
            &got[at.saturating_sub(20)..(at + 40).min(got.len())]
        )
        .into_owned())
    );
}

#[test]
fn a_subscriber_whose_server_is_lost_is_closed() {
    let mut p = start(2, "");
    let mut s = TcpStream::connect(p.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"PSUBSCRIBE news:*\r\n").unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut confirmation = String::new();
    for _ in 0..5 {
        reader.read_line(&mut confirmation).unwrap();
    }
    assert_eq!(confirmation, "*3\r\n$10\r\npsubscribe\r\n$6\r\nnews:*\r\n");
    let mut count = String::new();
    reader.read_line(&mut count).unwrap();
    assert_eq!(count, ":1\r\n");
    wait_for(
        "a connection to each server",
        Duration::from_secs(5),
        || pinned(&p) == 2,
    );
    // The subscriber's own connections are counted with the servers'.
    let (kept, lost) = (p.backends[0].addr, p.backends[1].addr);
    let open = server_stat(&p, kept, "server_connections");
    assert!(open >= 1, "{open}");
    let failures = |p: &PoolProxy| {
        ["server_eof", "server_err"]
            .iter()
            .map(|c| server_stat(p, lost, c))
            .sum::<u64>()
    };
    assert_eq!(failures(&p), 0);
    let server = p.backends.remove(1);
    drop(server);
    let mut rest = String::new();
    let n = reader.read_line(&mut rest).unwrap_or(0);
    assert_eq!(n, 0, "closed, not {rest:?}");
    wait_for("released", Duration::from_secs(5), || pinned(&p) == 0);
    assert!(failures(&p) >= 1, "the lost connection counted");
    assert_eq!(
        server_stat(&p, kept, "server_connections"),
        open - 1,
        "the subscriber's connection closed"
    );
}

#[test]
fn a_transaction_whose_server_a_reload_removes_ends_with_an_error() {
    let p = start(2, "");
    let (a, _) = tags_on_two_servers(&p);
    let key = format!("{a}:k");
    let server = p.routed(std::slice::from_ref(&key))[0];
    let mut c = connect(p.listen);
    let _: () = redis::cmd("WATCH").arg(&key).query(&mut c).unwrap();
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: String = redis::cmd("SET").arg(&key).arg(1).query(&mut c).unwrap();

    // The transaction's server leaves the pool.
    let kept = &p.backends[1 - server];
    let yaml = format!(
        "pool:\n  listen: {}\n  redis: true\n  hash: md5\n  hash_tag: \"{{}}\"\n  servers:\n    - {}:1\n",
        p.listen, kept.addr
    );
    p.cashew.write_config(&yaml);
    p.cashew.process.signal("HUP");
    wait_for("the reload", Duration::from_secs(5), || {
        p.cashew.log().contains("configuration generation 2")
    });
    let e = redis::cmd("EXEC").query::<Value>(&mut c).unwrap_err();
    assert!(e.to_string().contains("left the pool"), "{e}");
    // The client goes on, on the new pool.
    let _: () = redis::cmd("SET").arg(&key).arg(2).query(&mut c).unwrap();
    let v: i64 = redis::cmd("GET")
        .arg(&key)
        .query(&mut connect(kept.addr))
        .unwrap();
    assert_eq!(v, 2);
    wait_for("its connection closed", Duration::from_secs(5), || {
        pinned(&p) == 0
    });
}

/// A subscriber's server that stops answering: after the pool's `timeout` the
/// (un)subscribe waiting for it is answered with the error and the client is
/// closed (as when the server is lost), whether its connection to the server
/// was open already or was still being opened.
#[test]
fn a_subscriber_whose_server_stops_answering_is_told_and_closed() {
    for frozen_before_subscribing in [false, true] {
        let p = start(1, "  timeout: 300\n");
        let mut s = TcpStream::connect(p.listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        if !frozen_before_subscribing {
            s.write_all(b"SUBSCRIBE a\r\n").unwrap();
            let mut confirmation = String::new();
            for _ in 0..6 {
                reader.read_line(&mut confirmation).unwrap();
            }
            assert!(confirmation.ends_with(":1\r\n"), "{confirmation:?}");
        }
        p.backends[0].freeze();
        let asked = Instant::now();
        s.write_all(b"SUBSCRIBE b\r\nPING\r\n").unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        assert_eq!(
            reply, "-ERR Connection timed out\r\n",
            "frozen before subscribing: {frozen_before_subscribing}"
        );
        let waited = asked.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
            "answered after {waited:?}"
        );
        let mut rest = String::new();
        let n = reader.read_line(&mut rest).unwrap_or(0);
        assert_eq!(n, 0, "closed, not {rest:?}");
        wait_for("released", Duration::from_secs(5), || pinned(&p) == 0);
        p.backends[0].signal("CONT");
    }
}

/// Transactions pipelined one after another each get a server connection of
/// their own: one starts only once the replies before it have come, so that they
/// run in the client's order (compared, pipelined, with one redis-server's
/// replies: RPUSH's counts and the list give the order they ran in, and a
/// WATCH that an earlier transaction's late write touched would abort).
#[test]
fn pipelined_transactions_run_in_order() {
    let p = start(3, "");
    let reference = redis_server(&[]);
    let mut sequence = String::new();
    for i in 0..200 {
        if i % 2 == 1 {
            sequence.push_str("WATCH {t}l\n");
        }
        sequence.push_str(&format!("MULTI\nRPUSH {{t}}l {i}\nEXEC\n"));
    }
    sequence.push_str("LRANGE {t}l 0 -1\nDEL {t}l\n");
    compare_sequences(&sequence, reference.addr, p.listen);
}

/// Reloads `p` with `servers` (in that order).
fn reload_with(p: &PoolProxy, servers: &[&Process], generation: u32) {
    let list: String = servers
        .iter()
        .map(|s| format!("    - {}:1\n", s.addr))
        .collect();
    let yaml = format!(
        "pool:\n  listen: {}\n  redis: true\n  hash: md5\n  hash_tag: \"{{}}\"\n  servers:\n{list}",
        p.listen
    );
    p.cashew.write_config(&yaml);
    p.cashew.process.signal("HUP");
    wait_for("the reload", Duration::from_secs(5), || {
        p.cashew
            .log()
            .contains(&format!("configuration generation {generation}"))
    });
}

/// Subscribes `pubsub` to `channels`, publishes each (its name as the message)
/// through `publisher`, and says whether every message came (once; channels on
/// different servers may come in any order).
fn hears(pubsub: &mut redis::PubSub, publisher: &mut Connection, channels: &[String]) -> bool {
    for c in channels {
        pubsub.subscribe(c).unwrap();
    }
    for c in channels {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(c)
            .arg(c)
            .query(publisher)
            .unwrap();
    }
    pubsub
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut got: Vec<String> = Vec::new();
    for _ in channels {
        match pubsub.get_message().map(|m| m.get_payload::<String>()) {
            Ok(Ok(message)) => got.push(message),
            _ => return false,
        }
    }
    let mut want = channels.to_vec();
    want.sort();
    got.sort();
    got == want
}

/// A reload that lists the same servers in another order moves no channel: a
/// subscriber goes on, and subscribes where each new channel is published.
#[test]
fn a_subscriber_goes_on_after_a_reload_reorders_servers() {
    let p = start(3, "");
    let mut subscriber = connect(p.listen);
    let mut pubsub = subscriber.as_pubsub();
    let mut publisher = connect(p.listen);
    let before: Vec<String> = (0..10).map(|i| format!("before{i}")).collect();
    assert!(hears(&mut pubsub, &mut publisher, &before));
    let b = &p.backends;
    reload_with(&p, &[&b[2], &b[0], &b[1]], 2);
    let after: Vec<String> = (0..20).map(|i| format!("after{i}")).collect();
    assert!(hears(&mut pubsub, &mut publisher, &after));
    // The channels subscribed before the reload hear their publishes still.
    for c in &before {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(c)
            .arg(c)
            .query(&mut publisher)
            .unwrap();
        let got: String = pubsub.get_message().unwrap().get_payload().unwrap();
        assert_eq!(got, *c);
    }
}

/// A reload that adds servers moves some channels: a subscriber with one of
/// them is closed, as when its server is lost, so that it subscribes again;
/// one whose channels stay goes on, and subscribes on the new servers too.
#[test]
fn a_reload_that_moves_a_subscribers_channel_closes_it() {
    let p = start(1, "");
    let more: Vec<Process> = (0..2).map(|_| redis_server(&[])).collect();
    let servers = [&p.backends[0], &more[0], &more[1]];
    // Where channels go once the servers are added.
    let next = p.cashew.dir.join("next.yml");
    let list: String = servers
        .iter()
        .map(|s| format!("    - {}:1\n", s.addr))
        .collect();
    std::fs::write(
        &next,
        format!("pool:\n  listen: {}\n  redis: true\n  hash: md5\n  hash_tag: \"{{}}\"\n  servers:\n{list}", p.listen),
    )
    .unwrap();
    let names: Vec<String> = (0..40).map(|i| format!("ch{i}")).collect();
    let placed = cashew_testkit::cashew_route(CASHEW, &next, None, &names);
    let first = format!("{}:1", p.backends[0].addr);
    let stays = names
        .iter()
        .zip(&placed)
        .find(|(_, s)| **s == first)
        .unwrap()
        .0
        .clone();
    let moves = names
        .iter()
        .zip(&placed)
        .find(|(_, s)| **s != first)
        .unwrap()
        .0
        .clone();

    let mut publisher = connect(p.listen);
    let mut staying = connect(p.listen);
    let mut staying = staying.as_pubsub();
    assert!(hears(
        &mut staying,
        &mut publisher,
        std::slice::from_ref(&stays)
    ));
    let mut moving = connect(p.listen);
    let mut moving = moving.as_pubsub();
    assert!(hears(
        &mut moving,
        &mut publisher,
        std::slice::from_ref(&moves)
    ));

    reload_with(&p, &servers, 2);
    let closed = moving.get_message().unwrap_err();
    assert!(
        !closed.is_timeout() && (closed.is_connection_dropped() || closed.is_io_error()),
        "{closed}"
    );
    // The one that stays hears its channel and new ones, wherever they are.
    let after: Vec<String> = (0..20).map(|i| format!("after{i}")).collect();
    assert!(hears(&mut staying, &mut publisher, &after));
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&stays)
        .arg(&stays)
        .query(&mut publisher)
        .unwrap();
    let got: String = staying.get_message().unwrap().get_payload().unwrap();
    assert_eq!(got, stays);
}
