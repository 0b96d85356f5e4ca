//! The log lines of the events that matter, in words: a server failing and coming
//! back, a port in use, a name that does not resolve, refused requests, JSON lines.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use cashew_testkit::dns::Nameserver;
use cashew_testkit::{free_port, memcached, memcached_on, AdminApi, Cashew, McConn};

mod support;

use support::*;

#[test]
fn a_server_killed_and_restarted_is_logged_once_each_way() {
    let mut mc = memcached();
    let port = mc.port();
    let listen = free_port("127.0.0.1");
    let yaml = format!(
        "pool:\n  listen: 127.0.0.1:{listen}\n  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 300\n  timeout: 500\n  servers:\n    - {}:1 one\n",
        mc.addr
    );
    let (admin_arg, admin_addr) = admin_port();
    let cashew = Cashew::start(CASHEW, &yaml, &["--threads", "2", "--admin", &admin_arg]);
    let mut c = McConn::connect(format!("127.0.0.1:{listen}").parse().unwrap());
    c.set("k", b"v");
    // Each worker has a connection to the server.
    let mut other = McConn::connect(format!("127.0.0.1:{listen}").parse().unwrap());
    other.set("k", b"v");
    // Killed and restarted at once (the port is not left free for another test to
    // take): both workers' connections see it close, which is one failure.
    drop(mc);
    mc = memcached_on("127.0.0.1", port);
    wait_for_log(&cashew, "server 'one' failed");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut back = false;
    while !back && Instant::now() < deadline {
        c.send(b"get k\r\n");
        back = c.line() == "END\r\n";
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(back, "the server never came back:\n{}", cashew.log());
    wait_for_log(&cashew, "back in service");
    let (status, _) = AdminApi::new(admin_addr, None).post("/reload");
    assert_eq!(status, 200);
    wait_for_log(&cashew, "configuration generation 2 loaded");
    let log = cashew.log();
    println!("{log}");
    let failed = lines_with(&log, "server 'one' failed");
    assert_eq!(failed.len(), 1, "{log}");
    assert!(failed[0].contains("ejected for 300 ms, until "), "{log}");
    assert_eq!(
        lines_with(&log, "server 'one' back in service").len(),
        1,
        "{log}"
    );
    assert_eq!(
        lines_with(&log, "configuration generation 2 loaded").len(),
        1,
        "{log}"
    );
    assert_in_words(&log);
    drop(mc);
}

#[test]
fn a_port_in_use_is_a_fatal_error_in_words_on_stderr_and_in_the_log() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = cashew_testkit::temp_dir("port-in-use");
    let conf = dir.join("cashew.yml");
    let log = dir.join("cashew.log");
    std::fs::write(
        &conf,
        format!("pool:\n  listen: {addr}\n  servers:\n    - 127.0.0.1:1:1\n"),
    )
    .unwrap();
    let stats = free_port("127.0.0.1").to_string();
    let out = Command::new(CASHEW)
        .arg("-c")
        .arg(&conf)
        .arg("-o")
        .arg(&log)
        .args(["-s", &stats, "-a", "127.0.0.1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!("cannot listen on {addr}: Address already in use");
    assert_eq!(lines_with(&stderr, &expected).len(), 1, "{stderr}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(lines_with(&log, &expected).len(), 1, "{log}");
    assert_in_words(&log);
}

#[test]
fn a_host_name_that_does_not_resolve_is_logged_as_such() {
    let Some(nameserver) =
        cashew_testkit::prerequisite("a test nameserver (root)", Nameserver::start())
    else {
        return;
    };
    let listen = free_port("127.0.0.1");
    let yaml = format!(
        "pool:\n  listen: 127.0.0.1:{listen}\n  servers:\n    - nosuch.cashew.test:11211:1\n"
    );
    let cashew = Cashew::start_with_nameserver(CASHEW, &yaml, &["--threads", "2"], &nameserver);
    let mut c = McConn::connect(format!("127.0.0.1:{listen}").parse().unwrap());
    c.send(b"get k\r\n");
    let reply = c.line();
    let words = "address resolution of 'nosuch.cashew.test' failed";
    assert!(reply.contains(words), "{reply}");
    wait_for_log(&cashew, words);
    let log = cashew.log();
    assert_eq!(lines_with(&log, words).len(), 1, "{log}");
    assert_in_words(&log);
}

#[test]
fn refused_requests_are_logged_at_info_at_most_once_a_second() {
    let rig = one_pool("", "a", &["--threads", "1", "-v", "6"]);
    let cashew = &rig.cashew;
    let mut c = McConn::connect(rig.listen);
    let started = Instant::now();
    for _ in 0..200 {
        c.roundtrip(b"frobnicate\r\n", b"ERROR\r\n");
    }
    let seconds = started.elapsed().as_secs() + 1;
    std::thread::sleep(Duration::from_millis(100));
    let log = cashew.log();
    let refused = lines_with(&log, "pool 'pool': a client request refused: ERROR");
    assert!(
        !refused.is_empty() && refused.len() as u64 <= seconds,
        "{} lines in {seconds} s:\n{log}",
        refused.len()
    );
}

#[test]
fn json_log_lines_are_one_object_each() {
    let rig = one_pool("", "a", &["--log-format", "json"]);
    let cashew = &rig.cashew;
    // The start-up lines are written as the stats port opens: wait for the last.
    wait_for_log(cashew, "stats on");
    let mut log = cashew.log();
    log.truncate(log.rfind('\n').map_or(0, |i| i + 1));
    assert!(log.lines().count() >= 3, "{log}");
    for line in log.lines() {
        let object: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            object["time"].is_string() && object["message"].is_string(),
            "{line}"
        );
        assert_eq!(object["level"], "notice", "{line}");
    }
    assert!(log.contains("\"message\":\"cashew "), "{log}");
}
