//! TLS on both sides, with certificates made by the tests: redis-server with
//! `--tls-port` and memcached with `-Z`, both requiring TLS, cashew between them
//! with `tls` and `server_tls`; clients that cannot be trusted are refused with
//! their reason and disturb nobody; certificates rotate by reload.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cashew_testkit::resp::RespConn;
use cashew_testkit::tls::{peer_serial, Authority, Issued, Request, TlsClient};
use cashew_testkit::{free_port, memcached_tls, redis_server_tls, AdminApi, Cashew, Process};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn listen() -> SocketAddr {
    format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap()
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// The PKI of a test: one CA for servers, the proxy and clients.
struct Pki {
    ca: Authority,
    server: Issued,
    proxy: Issued,
    client: Issued,
}

fn pki() -> Pki {
    let ca = Authority::new("cashew test CA");
    let (server, proxy, client) = (ca.issue("server"), ca.issue("proxy"), ca.issue("client"));
    Pki {
        ca,
        server,
        proxy,
        client,
    }
}

/// `tls` (with `ca` for mutual TLS when asked) and `server_tls` with the proxy's
/// client certificate.
fn tls_settings(pki: &Pki, mutual: bool) -> String {
    let mut s = format!(
        "  tls:\n    cert: {}\n    key: {}\n",
        path(&pki.proxy.cert),
        path(&pki.proxy.key)
    );
    if mutual {
        s.push_str(&format!("    ca: {}\n", path(&pki.ca.ca())));
    }
    s.push_str(&format!(
        "  server_tls:\n    ca: {}\n    cert: {}\n    key: {}\n",
        path(&pki.ca.ca()),
        path(&pki.proxy.cert),
        path(&pki.proxy.key)
    ));
    s
}

fn start(
    pool: &str,
    listen: SocketAddr,
    settings: &str,
    servers: &[&Process],
    args: &[&str],
) -> Cashew {
    let list: String = servers
        .iter()
        .map(|s| format!("    - {}:1\n", s.addr))
        .collect();
    let yaml =
        format!("{pool}:\n  listen: {listen}\n  timeout: 2000\n{settings}  servers:\n{list}");
    let mut all = vec!["--threads", "2"];
    all.extend(args);
    Cashew::start(CASHEW, &yaml, &all)
}

fn stats(cashew: &Cashew) -> serde_json::Value {
    serde_json::from_str(&cashew.stats_json()).unwrap()
}

fn resp_read(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    if let Some(n) = line
        .strip_prefix('$')
        .and_then(|n| n.trim().parse::<usize>().ok())
    {
        let mut data = vec![0; n + 2];
        r.read_exact(&mut data).unwrap();
        return String::from_utf8_lossy(&data[..n]).into_owned();
    }
    line.trim_end().to_string()
}

#[test]
fn redis_over_tls_on_both_sides_with_the_redis_crate_and_redis_py() {
    let pki = pki();
    // The server wants a client certificate: cashew shows its own.
    let server = redis_server_tls(&pki.server, &pki.ca.ca(), &[]);
    let addr = listen();
    let cashew = start(
        "web",
        addr,
        &format!("  redis: true\n{}", tls_settings(&pki, true)),
        &[&server],
        &[],
    );

    // The redis crate, over TLS with a client certificate.
    let certs = redis::TlsCertificates {
        client_tls: Some(redis::ClientTlsConfig {
            client_cert: std::fs::read(&pki.client.cert).unwrap(),
            client_key: std::fs::read(&pki.client.key).unwrap(),
        }),
        root_cert: Some(std::fs::read(pki.ca.ca()).unwrap()),
    };
    let url = format!("rediss://{addr}/");
    let client = redis::Client::build_with_tls(url.as_str(), certs).unwrap();
    let mut con = client.get_connection().unwrap();
    let _: () = redis::cmd("SET")
        .arg("tls:k")
        .arg("v")
        .query(&mut con)
        .unwrap();
    let got: String = redis::cmd("GET").arg("tls:k").query(&mut con).unwrap();
    assert_eq!(got, "v");
    // Large values and a pipeline, so that writes fill the sockets both ways.
    let big = "x".repeat(300_000);
    let mut pipe = redis::pipe();
    for i in 0..50 {
        pipe.cmd("SET")
            .arg(format!("tls:big{i}"))
            .arg(&big)
            .ignore();
        pipe.cmd("GET").arg(format!("tls:big{i}"));
    }
    let values: Vec<String> = pipe.query(&mut con).unwrap();
    assert_eq!(values.len(), 50);
    assert!(values.iter().all(|v| *v == big));

    // redis-py with ssl=True and a client certificate, in RESP3 and RESP2.
    let out = run_python(
        "tls_clients.py",
        &[
            "redis",
            &addr.ip().to_string(),
            &addr.port().to_string(),
            &path(&pki.ca.ca()),
            &path(&pki.client.cert),
            &path(&pki.client.key),
        ],
    );
    assert!(out.contains("redis-py over TLS: ok"), "{out}");
    assert_eq!(stats(&cashew)["web"]["tls_handshake_failures"], 0);
}

#[test]
fn memcached_over_tls_on_both_sides_with_pymemcache() {
    let pki = pki();
    let server = memcached_tls(&pki.server, &[]);
    let addr = listen();
    let cashew = start("mc", addr, &tls_settings(&pki, false), &[&server], &[]);
    let client = TlsClient::new(&pki.ca.ca(), None);
    let reply = client.roundtrip(addr, b"set k 0 0 5\r\nhello\r\nmg k v\r\n", 21);
    assert_eq!(reply, b"STORED\r\nVA 5\r\nhello\r\n");
    let out = run_python(
        "tls_clients.py",
        &[
            "memcached",
            &addr.ip().to_string(),
            &addr.port().to_string(),
            &path(&pki.ca.ca()),
        ],
    );
    assert!(out.contains("pymemcache over TLS: ok"), "{out}");
    assert_eq!(stats(&cashew)["mc"]["tls_handshake_failures"], 0);
}

/// Whether a connection was closed by cashew (read gives end of stream or an error).
fn closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return true,
            Ok(_) => continue, // a TLS alert or an error reply, then the end
        }
    }
}

#[test]
fn untrusted_clients_and_servers_are_refused_with_their_reason_and_disturb_nobody() {
    let pki = pki();
    let other = Authority::new("another CA");
    let stranger = other.issue("stranger");
    let expired = pki.ca.issue_for(
        "expired",
        Request {
            names: &["127.0.0.1"],
            serial: 3,
            expired: true,
        },
    );
    let server = redis_server_tls(&pki.server, &pki.ca.ca(), &[]);
    let (addr, admin) = (listen(), listen());
    let admin_arg = admin.to_string();
    // One worker: its log lines are limited to one a second.
    let yaml = format!(
        "web:\n  listen: {addr}\n  redis: true\n{}  servers:\n    - {}:1\n",
        tls_settings(&pki, true),
        server.addr
    );
    let cashew = Cashew::start(
        CASHEW,
        &yaml,
        &["--threads", "1", "-v", "6", "--admin", &admin_arg],
    );
    let good = TlsClient::new(&pki.ca.ca(), Some(&pki.client));

    // A client that keeps working while the others are refused.
    let mut steady = good.connect(addr).unwrap();
    let ping = |conn: &mut cashew_testkit::tls::TlsConn| {
        conn.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
        let mut reply = [0u8; 7];
        conn.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"+PONG\r\n");
    };
    ping(&mut steady);
    // A client that never finishes its handshake: closed after 10 s (looked at last).
    let silent = TcpStream::connect(addr).unwrap();
    let silent_since = Instant::now();

    // Each refused client is logged with the reason (a second apart: the log takes
    // one line a second).
    let served = |client: &TlsClient| -> Result<(), String> {
        let mut c = client.connect(addr)?;
        c.write_all(b"*1\r\n$4\r\nPING\r\n")
            .map_err(|e| e.to_string())?;
        let mut b = [0u8; 7];
        c.read_exact(&mut b).map_err(|e| e.to_string())
    };
    let logged = |reason: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = cashew.log();
            let line = log.lines().find(|l| {
                l.contains("pool 'web': TLS handshake with 127.0.0.1:") && l.contains(reason)
            });
            if line.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "no line with '{reason}':\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(1100));
    };
    let mut plain = TcpStream::connect(addr).unwrap();
    plain.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    assert!(closed(&mut plain));
    logged("failed: not TLS (a plaintext client?)");
    ping(&mut steady);
    // Under mutual TLS: no certificate, another CA's, an expired one.
    assert!(served(&TlsClient::new(&pki.ca.ca(), None)).is_err());
    logged("failed: the client presented no certificate");
    assert!(served(&TlsClient::new(&pki.ca.ca(), Some(&stranger))).is_err());
    logged("failed: the certificate is not signed by a trusted CA");
    assert!(served(&TlsClient::new(&pki.ca.ca(), Some(&expired))).is_err());
    logged("failed: the certificate has expired");
    // A client that does not trust cashew's certificate refuses it.
    let Err(error) = served(&TlsClient::new(&other.ca(), None)) else {
        panic!("a client that does not trust cashew's CA was served");
    };
    assert!(error.contains("UnknownIssuer"), "{error}");
    logged("failed: the peer refused the handshake");
    ping(&mut steady);

    // A burst: one line, then the next line tells how many were left out.
    for _ in 0..5 {
        let mut plain = TcpStream::connect(addr).unwrap();
        plain.write_all(b"PING\r\n").unwrap();
        assert!(closed(&mut plain));
    }
    std::thread::sleep(Duration::from_millis(1100));
    let mut plain = TcpStream::connect(addr).unwrap();
    plain.write_all(b"PING\r\n").unwrap();
    assert!(closed(&mut plain));
    logged("(4 more in the last second not logged)");

    let failures = stats(&cashew)["web"]["tls_handshake_failures"]
        .as_u64()
        .unwrap();
    assert_eq!(failures, 11);
    let (_, metrics) = AdminApi::new(admin, None).get_text("/metrics");
    let counted = format!("cashew_tls_handshake_failures_total{{pool=\"web\"}} {failures}");
    assert!(metrics.contains(&counted), "{metrics}");

    let mut silent = silent;
    assert!(closed(&mut silent));
    let waited = silent_since.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(14),
        "{waited:?}"
    );
    logged("failed: the handshake did not finish within 10 s");
    ping(&mut steady);
}

#[test]
fn a_server_certificate_for_another_name_is_a_server_failure_with_its_reason() {
    let pki = pki();
    let elsewhere = pki.ca.issue_for(
        "elsewhere",
        Request {
            names: &["cache.elsewhere.example"],
            serial: 7,
            expired: false,
        },
    );
    let server = redis_server_tls(&elsewhere, &pki.ca.ca(), &["--tls-auth-clients", "no"]);
    let addr = listen();
    let settings = format!(
        "  redis: true\n  server_tls:\n    ca: {}\n",
        path(&pki.ca.ca())
    );
    let cashew = start("web", addr, &settings, &[&server], &[]);
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    c.write_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap();
    let reply = resp_read(&mut r);
    assert_eq!(
        reply,
        "-ERR TLS handshake failed: the certificate is for another name"
    );
    // A server failure like any other: counted, logged when it starts.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(150));
        c.write_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap();
        assert!(resp_read(&mut r).contains("the certificate is for another name"));
    }
    let doc = stats(&cashew);
    let server_err = doc["web"][server.addr.to_string()]["server_err"]
        .as_u64()
        .unwrap();
    assert!(server_err >= 2, "{doc}");
    let log = cashew.log();
    let logged = log
        .lines()
        .filter(|l| l.contains("failed: TLS handshake failed: the certificate is for another name"))
        .count();
    assert_eq!(logged, 1, "{log}");

    // With server_name set to the name the certificate has, the same server serves.
    let addr = listen();
    let settings = format!(
        "  redis: true\n  server_tls:\n    ca: {}\n    server_name: cache.elsewhere.example\n",
        path(&pki.ca.ca())
    );
    let _named = start("web", addr, &settings, &[&server], &[]);
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    c.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        .unwrap();
    assert_eq!(resp_read(&mut r), "+OK");
    assert_eq!(resp_read(&mut r), "v");
}

#[test]
fn certificates_rotate_by_reload_while_a_client_pipelines() {
    let pki = pki();
    let server = redis_server_tls(&pki.server, &pki.ca.ca(), &[]);
    let addr = listen();
    let admin = listen();
    let admin_arg = admin.to_string();
    let cashew = start(
        "web",
        addr,
        &format!("  redis: true\n{}", tls_settings(&pki, false)),
        &[&server],
        &["--admin", &admin_arg],
    );
    let api = AdminApi::new(admin, None);
    let client = TlsClient::new(&pki.ca.ca(), None);
    let first = client.connect(addr).unwrap();
    assert_eq!(peer_serial(&first), vec![1]);

    // A client pipelining all along: every reply in order, none an error.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let pipeliner = {
        let (stop, done) = (stop.clone(), done.clone());
        std::thread::spawn(move || {
            let mut conn = first;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut batch = Vec::new();
                for i in 0..16 {
                    let key = format!("rot:{}", (n + i) % 100);
                    let value = (n + i).to_string();
                    batch.extend_from_slice(
                        format!(
                            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
                            key.len(),
                            value.len()
                        )
                        .as_bytes(),
                    );
                    batch.extend_from_slice(
                        format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes(),
                    );
                }
                conn.write_all(&batch).unwrap();
                let mut r = BufReader::new(&mut conn);
                for i in 0..16 {
                    assert_eq!(resp_read(&mut r), "+OK");
                    assert_eq!(resp_read(&mut r), (n + i).to_string());
                }
                n += 16;
                done.store(n, Ordering::Relaxed);
            }
            peer_serial(&conn)
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    // The files are replaced by a certificate with serial 2, and cashew reloads.
    let rotated = pki.ca.issue_for(
        "rotated",
        Request {
            names: &["127.0.0.1"],
            serial: 2,
            expired: false,
        },
    );
    std::fs::copy(&rotated.cert, &pki.proxy.cert).unwrap();
    std::fs::copy(&rotated.key, &pki.proxy.key).unwrap();
    let (status, body) = api.post("/reload");
    assert_eq!(status, 200, "{body}");
    let second = client.connect(addr).unwrap();
    assert_eq!(
        peer_serial(&second),
        vec![2],
        "a new client sees the new certificate"
    );

    // A key that is not the certificate's fails the reload, which changes nothing.
    std::fs::copy(&pki.client.key, &pki.proxy.key).unwrap();
    let (status, body) = api.post("/reload");
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains(":5:3: pool 'web': key 'tls': the key in "),
        "{body}"
    );
    assert!(
        error.contains("is not the key of the certificate in"),
        "{body}"
    );
    let third = client.connect(addr).unwrap();
    assert_eq!(peer_serial(&third), vec![2]);

    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let old_serial = pipeliner
        .join()
        .expect("the pipelining client saw no error");
    assert_eq!(old_serial, vec![1], "the old client keeps its session");
    assert!(done.load(Ordering::Relaxed) > 100);
    assert_eq!(stats(&cashew)["web"]["client_err"], 0);
}

#[test]
fn the_config_check_reads_the_certificates() {
    let pki = pki();
    let dir = cashew_testkit::temp_dir("tls-check");
    let conf = dir.join("cashew.yml");
    let yaml = format!(
        "web:\n  listen: 127.0.0.1:1\n  redis: true\n  tls:\n    cert: {}\n    key: {}\n  servers:\n    - 127.0.0.1:2:1\n",
        path(&pki.proxy.cert),
        path(&pki.client.key)
    );
    std::fs::write(&conf, yaml).unwrap();
    let out = std::process::Command::new(CASHEW)
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        text.contains(&format!(
            "{}:4:3: pool 'web': key 'tls': the key in {} is not the key of the certificate in {}",
            conf.display(),
            pki.client.key.display(),
            pki.proxy.cert.display()
        )),
        "{text}"
    );
}

fn run_python(script: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    cashew_testkit::run_python_script(script, &args)
}

#[test]
fn a_restart_hands_the_tls_listener_over_and_drains_the_old_sessions() {
    let pki = pki();
    let server = redis_server_tls(&pki.server, &pki.ca.ca(), &[]);
    let addr = listen();
    let pid_file = cashew_testkit::temp_dir("tls-restart").join("cashew.pid");
    let mut cashew = start(
        "web",
        addr,
        &format!("  redis: true\n{}", tls_settings(&pki, false)),
        &[&server],
        &["-p", pid_file.to_str().unwrap()],
    );
    let first = cashew.process.pid();
    let client = Arc::new(TlsClient::new(&pki.ca.ca(), None));

    // Clients that connect, pipeline a few requests and leave, all through the
    // restart: every reply right, and no connection refused or handshake failed.
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let (stop, client) = (stop.clone(), client.clone());
        std::thread::spawn(move || {
            let (mut sessions, mut drained) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let mut conn = client.connect(addr).expect("a TLS session");
                let mut batch = Vec::new();
                for i in 0..8 {
                    let key = format!("restart:{sessions}:{i}");
                    batch.extend_from_slice(format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\n{i}\r\n*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len(), key.len()).as_bytes());
                }
                conn.write_all(&batch).unwrap();
                let mut r = BufReader::new(&mut conn);
                for i in 0..8 {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        drained += 1; // closed by the drain at a request boundary
                        break;
                    }
                    assert_eq!(line, "+OK\r\n");
                    assert_eq!(resp_read(&mut r), i.to_string());
                }
                sessions += 1;
            }
            (sessions, drained)
        })
    };
    // A session of the old process, idle at the restart: closed by its drain,
    // cleanly (TLS close_notify), after its replies.
    let mut held = client.connect(addr).unwrap();
    held.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut pong = [0u8; 7];
    held.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    std::thread::sleep(Duration::from_millis(300));
    let status = std::process::Command::new("kill")
        .args(["-USR2", &first.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = cashew
        .process
        .wait_exit(Duration::from_secs(20))
        .expect("the old process exits");
    assert!(exit.success(), "{exit}");
    let second: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(second, first);
    let _guard = cashew_testkit::KillOnDrop(second);
    let mut rest = Vec::new();
    assert_eq!(
        held.read_to_end(&mut rest).map_err(|e| e.to_string()),
        Ok(0)
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (sessions, drained) = loader.join().expect("no TLS client saw an error");
    println!("{sessions} TLS sessions through a restart, {drained} closed by the drain");
    assert!(sessions > 20, "{sessions}");
    // The new process serves TLS with the same certificate.
    let conn = client.connect(addr).unwrap();
    assert_eq!(peer_serial(&conn), vec![1]);
}

#[test]
fn a_tracking_client_hears_invalidations_from_a_server_behind_tls_and_a_password() {
    let pki = pki();
    let server = redis_server_tls(&pki.server, &pki.ca.ca(), &["--requirepass", "s3cret"]);
    let addr = listen();
    let server_tls = format!(
        "  server_tls:\n    ca: {}\n    cert: {}\n    key: {}\n",
        path(&pki.ca.ca()),
        path(&pki.proxy.cert),
        path(&pki.proxy.key)
    );
    let _cashew = start(
        "cache",
        addr,
        &format!("  redis: true\n  redis_auth: s3cret\n{server_tls}"),
        &[&server],
        &[],
    );
    let mut c = RespConn::connect(addr);
    let hello = c.request(&[b"HELLO", b"3", b"AUTH", b"default", b"s3cret"]);
    assert!(
        hello.starts_with(b"%"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    assert_eq!(c.request(&[b"CLIENT", b"TRACKING", b"ON"]), b"+OK\r\n");
    assert_eq!(c.request(&[b"GET", b"k"]), b"_\r\n");
    let mut w = RespConn::connect(addr);
    assert_eq!(w.request(&[b"AUTH", b"s3cret"]), b"+OK\r\n");
    assert_eq!(w.request(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    // Its own connection to the server, opened over TLS with the password and
    // tracking on, brings the invalidation.
    assert_eq!(
        c.reply(),
        b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n",
        "the server's invalidation of the key read"
    );
}
