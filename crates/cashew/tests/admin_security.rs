//! What the admin API lets out, and to whom: secrets never (with or without the
//! token), reads only with the token, the token rotated from its file, and slow
//! clients unable to hold the API or slow the data plane.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use cashew_testkit::{free_port, memcached, redis_server, AdminApi, Cashew, McConn};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");
const PASSWORD: &str = "topsecretpw-5d1c";
const TOKEN: &str = "tok-admin-1";

fn local(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// A redis pool with `redis_auth` and a memcached pool with hot keys and a slow log.
fn two_pools(redis: SocketAddr, mc: SocketAddr) -> (String, SocketAddr, SocketAddr) {
    let (rd, mcl) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let yaml = format!(
        "rd:\n  listen: 127.0.0.1:{rd}\n  redis: true\n  redis_auth: {PASSWORD}   # the password\n  servers:\n    - {redis}:1 r0\nmc:\n  listen: 127.0.0.1:{mcl}\n  hotkeys: true\n  slowlog_ms: 1000\n  servers:\n    - {mc}:1 m0\n"
    );
    (yaml, local(rd), local(mcl))
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(CASHEW)
        .args(args)
        .env_remove("CASHEW_ADMIN_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One authenticated redis round trip through cashew, so the password is used.
fn redis_ping(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = format!(
        "*2\r\n$4\r\nAUTH\r\n${}\r\n{PASSWORD}\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
        PASSWORD.len()
    );
    s.write_all(auth.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b"$-1\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"+OK\r\n$-1\r\n");
}

#[test]
fn secrets_are_never_served_or_logged_with_or_without_a_token() {
    let redis = redis_server(&["--requirepass", PASSWORD]);
    let mc = memcached();
    let (yaml, rd, _) = two_pools(redis.addr, mc.addr);
    for token in [None, Some(TOKEN)] {
        let admin = local(free_port("127.0.0.1"));
        let mut args = vec![
            "--admin".to_string(),
            admin.to_string(),
            "-v".into(),
            "11".into(),
        ];
        if let Some(t) = token {
            args.extend(["--admin-token".into(), t.into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cashew = Cashew::start(CASHEW, &yaml, &args);
        redis_ping(rd);
        let api = AdminApi::new(admin, token);

        let (status, config) = api.get("/config");
        assert_eq!(status, 200, "{config}");
        let text = config["text"].as_str().unwrap();
        assert!(
            !text.contains(PASSWORD),
            "/config serves the password:\n{text}"
        );
        assert!(
            text.contains("redis_auth: \"<redacted>\"   # the password"),
            "{text}"
        );
        assert!(
            text.contains("slowlog_ms: 1000"),
            "the rest is as written: {text}"
        );
        // The checksum is still the file's own.
        let file = cashew.dir.join("cashew.yml");
        let sha = Command::new("sha256sum").arg(&file).output().unwrap();
        let sha = String::from_utf8_lossy(&sha.stdout);
        let digest = sha.split_whitespace().next().unwrap();
        assert_eq!(config["checksum"], format!("sha256:{digest}"));

        for path in ["/status", "/stats", "/hotkeys", "/slowlog"] {
            let (status, body) = api.get(path);
            assert_eq!(status, 200, "{path}");
            assert!(
                !body.to_string().contains(PASSWORD),
                "{path} shows the password"
            );
        }
        let (_, metrics) = api.get_text("/metrics");
        assert!(!metrics.contains(PASSWORD));
        let admin_arg = admin.to_string();
        let mut status_args = vec!["status", "--admin", &admin_arg];
        if let Some(t) = token {
            status_args.extend(["--admin-token", t]);
        }
        let (code, out, err) = cli(&status_args);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("pool rd (redis)"), "{out}");
        assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD));
        let log = cashew.log();
        assert!(log.contains("pool 'rd'"), "the log is written: {log}");
        assert!(
            !log.contains(PASSWORD),
            "the log at -v 11 shows the password"
        );
    }
}

#[test]
fn with_a_token_every_call_but_the_probes_needs_it() {
    let redis = redis_server(&["--requirepass", PASSWORD]);
    let mc = memcached();
    let (yaml, _, _) = two_pools(redis.addr, mc.addr);
    let reads = ["/config", "/stats", "/status", "/hotkeys", "/slowlog"];
    for metrics_public in [false, true] {
        let admin = local(free_port("127.0.0.1"));
        let admin_arg = admin.to_string();
        let mut args = vec!["--admin", &admin_arg, "--admin-token", TOKEN];
        if metrics_public {
            args.push("--metrics-public");
        }
        let _cashew = Cashew::start(CASHEW, &yaml, &args);
        let (open, wrong, api) = (
            AdminApi::new(admin, None),
            AdminApi::new(admin, Some("not-it")),
            AdminApi::new(admin, Some(TOKEN)),
        );
        for path in reads.iter().chain(&["/metrics"]) {
            let public = metrics_public && *path == "/metrics";
            let expect = if public { 200 } else { 401 };
            assert_eq!(open.get_text(path).0, expect, "{path} without the token");
            assert_eq!(wrong.get_text(path).0, expect, "{path} with a wrong token");
            assert_eq!(api.get_text(path).0, 200, "{path} with the token");
        }
        for path in ["/health", "/ready"] {
            assert_eq!(open.get(path).0, 200, "{path} is for probes");
        }
        assert_eq!(
            open.get_text("/nothing").0,
            401,
            "no endpoint list without the token"
        );
        if !metrics_public {
            // The commands that read the API send the token too.
            let (code, _, err) = cli(&["top", "--once", "--admin", &admin_arg]);
            assert_eq!(code, 1);
            assert!(err.contains("needs its token"), "{err}");
            let (code, out, err) = cli(&[
                "top",
                "--once",
                "--admin",
                &admin_arg,
                "--admin-token",
                TOKEN,
            ]);
            assert_eq!(code, 0, "{err}");
            assert!(out.contains("rd") && out.contains("m0"), "{out}");
        }
    }
}

#[test]
fn a_token_file_is_read_again_at_each_reload() {
    let mc = memcached();
    let listen = free_port("127.0.0.1");
    let admin = local(free_port("127.0.0.1"));
    let dir = cashew_testkit::temp_dir("token");
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, "first-token\n").unwrap();
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{listen}\n  servers:\n    - {}:1\n",
        mc.addr
    );
    let cashew = Cashew::start(
        CASHEW,
        &yaml,
        &[
            "--admin",
            &admin.to_string(),
            "--admin-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let (first, second) = (
        AdminApi::new(admin, Some("first-token")),
        AdminApi::new(admin, Some("second-token")),
    );
    assert_eq!(
        first.get("/status").0,
        200,
        "the file's line ending is not the token's"
    );
    assert_eq!(second.get("/status").0, 401);

    std::fs::write(&token_file, "second-token\n").unwrap();
    assert_eq!(first.get("/status").0, 200, "rotated only by a reload");
    let (status, body) = first.post("/reload");
    assert_eq!(status, 200, "{body}");
    assert_eq!(first.get("/status").0, 401, "the old token stops working");
    assert_eq!(second.get("/status").0, 200, "the new one works");
    assert!(
        cashew.log().contains("the admin token changed"),
        "{}",
        cashew.log()
    );
    assert!(!cashew.log().contains("second-token"));

    // A token file that cannot be used fails the reload and changes nothing.
    std::fs::write(&token_file, "\n").unwrap();
    let (status, body) = second.post("/reload");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("is empty"),
        "{body}"
    );
    assert_eq!(
        second.get("/status").1["generation"],
        2,
        "still generation 2"
    );
    std::fs::remove_file(&token_file).unwrap();
    cashew.process.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(second.get("/status").0, 200, "the token in force stays");
    assert!(cashew.log().contains("No such file"), "{}", cashew.log());
}

/// Latency of `n` gets one at a time through cashew: the 99th percentile.
fn p99_of_gets(addr: SocketAddr, duration: Duration) -> (Duration, usize) {
    let mut c = McConn::connect(addr);
    c.set("p99-key", b"value");
    let mut times = Vec::new();
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let start = Instant::now();
        c.roundtrip(b"get p99-key\r\n", b"VALUE p99-key 0 5\r\nvalue\r\nEND\r\n");
        times.push(start.elapsed());
    }
    times.sort();
    (times[times.len() * 99 / 100], times.len())
}

#[test]
fn slow_clients_cannot_hold_the_admin_api_or_slow_the_data_plane() {
    let mc = memcached();
    let listen = free_port("127.0.0.1");
    let admin = local(free_port("127.0.0.1"));
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{listen}\n  servers:\n    - {}:1\n",
        mc.addr
    );
    let _cashew = Cashew::start(
        CASHEW,
        &yaml,
        &["--admin", &admin.to_string(), "--threads", "1"],
    );
    let api = AdminApi::new(admin, None);

    let (before, n_before) = p99_of_gets(local(listen), Duration::from_secs(2));

    // 100 clients that send their headers a byte at a time, slowly.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut conns: Vec<TcpStream> = (0..100)
                .filter_map(|_| TcpStream::connect(admin).ok())
                .collect();
            let request = b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa";
            let mut at = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for c in &mut conns {
                    let _ = c.write_all(&request[at % request.len()..][..1]);
                }
                at += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
            conns.len()
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let (during, n_during) = p99_of_gets(local(listen), Duration::from_secs(2));
    let started = Instant::now();
    let (status, health) = api.get("/status");
    let answered_in = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let held = slow.join().unwrap();
    println!(
        "data plane p99 of gets one at a time: {before:?} ({n_before} gets) before, {during:?} ({n_during} gets) with {held} slow admin clients; /status answered in {answered_in:?}"
    );
    assert_eq!(held, 100);
    assert_eq!(status, 200, "a well-behaved call is answered: {health}");
    assert!(answered_in < Duration::from_secs(2), "{answered_in:?}");
    // Generous: the admin API runs on another thread than the data plane, so the
    // slow clients should not show at all.
    assert!(
        during <= before * 5 + Duration::from_millis(5),
        "p99 {before:?} before, {during:?} during"
    );

    // A client that sends its headers a byte a second is closed after 10 s.
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let started = Instant::now();
    let request = b"GET /health HTTP/1.1\r\nHost: a-slow-host-name-that-goes-on-and-on\r\n";
    let mut closed_after = None;
    for b in request.iter().cycle() {
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
        let _ = s.write_all(&[*b]);
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            // Nothing yet: the read waited a second.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // Closed, reset, or told off before closing.
            _ => {
                closed_after = Some(started.elapsed());
                break;
            }
        }
    }
    let closed_after = closed_after.expect("the slow client was never closed");
    assert!(
        closed_after >= Duration::from_secs(9) && closed_after < Duration::from_secs(13),
        "closed after {closed_after:?}"
    );
}

#[test]
fn an_oversized_request_body_is_refused() {
    let mc = memcached();
    let listen = free_port("127.0.0.1");
    let admin = local(free_port("127.0.0.1"));
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{listen}\n  servers:\n    - {}:1\n",
        mc.addr
    );
    let _cashew = Cashew::start(CASHEW, &yaml, &["--admin", &admin.to_string()]);
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert_eq!(
        AdminApi::new(admin, None).get("/status").1["generation"],
        1,
        "nothing reloaded"
    );
}
