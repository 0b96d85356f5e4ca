//! The process's life as an operator drives it, with real signals and real
//! memcached servers: graceful stop, restart and binary upgrade under load, one
//! port one owner, systemd socket activation and readiness notification.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cashew_testkit::load;
use cashew_testkit::{
    free_port, memcached, pid_alive, temp_dir, Cashew, KillOnDrop, McConn, Process,
};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

fn pool_yaml(listen: u16, servers: &[&Process], extra: &str) -> String {
    let servers: String = servers
        .iter()
        .map(|s| format!("    - {}:1\n", s.addr))
        .collect();
    format!("alpha:\n  listen: 127.0.0.1:{listen}\n{extra}  servers:\n{servers}")
}

fn kill(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn graceful_stop_answers_requests_waiting_on_a_frozen_server() {
    let mc = memcached();
    let listen = free_port("127.0.0.1");
    let admin = addr(free_port("127.0.0.1"));
    let pid_file = temp_dir("stop").join("cashew.pid");
    let mut cashew = Cashew::start(
        CASHEW,
        &pool_yaml(listen, &[&mc], ""),
        &[
            "-p",
            pid_file.to_str().unwrap(),
            "--admin",
            &admin.to_string(),
        ],
    );
    let api = cashew_testkit::AdminApi::new(admin, None);
    let mut c = McConn::connect(addr(listen));
    c.set("k", b"v");
    mc.freeze();
    c.send(&b"get k\r\n".repeat(5));
    std::thread::sleep(Duration::from_millis(100));
    cashew.process.signal("TERM");

    // Draining: not ready for load balancers, and new clients are refused.
    wait_for("/ready to say draining", Duration::from_secs(5), || {
        api.get("/ready").0 == 503
    });
    assert_eq!(api.get("/ready").1["phase"], "draining");
    wait_for("new clients to be refused", Duration::from_secs(5), || {
        TcpStream::connect(addr(listen)).is_err()
    });
    assert!(cashew
        .process
        .wait_exit(Duration::from_millis(300))
        .is_none());

    mc.signal("CONT");
    for _ in 0..5 {
        c.expect(b"VALUE k 0 1\r\nv\r\nEND\r\n");
    }
    assert!(c.is_closed(), "closed after its last reply");
    let status = cashew
        .process
        .wait_exit(Duration::from_secs(5))
        .expect("exit");
    assert!(status.success(), "{status}");
    assert!(!pid_file.exists(), "pid file left behind");
    assert!(
        cashew.log().contains("drained, exiting"),
        "{}",
        cashew.log()
    );
}

#[test]
fn a_drain_ends_at_its_timeout_and_a_second_signal_stops_at_once() {
    let mc = memcached();
    for (args, signals, within) in [
        (&["--drain-timeout", "0.5"][..], 1, Duration::from_secs(3)),
        (&["--drain-timeout", "60"][..], 2, Duration::from_secs(3)),
    ] {
        let listen = free_port("127.0.0.1");
        let mut cashew = Cashew::start(CASHEW, &pool_yaml(listen, &[&mc], ""), args);
        let mut c = McConn::connect(addr(listen));
        c.set("k", b"v");
        mc.freeze();
        c.send(b"get k\r\n");
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        for _ in 0..signals {
            cashew.process.signal("TERM");
            std::thread::sleep(Duration::from_millis(200));
        }
        let status = cashew.process.wait_exit(within).expect("cashew exits");
        assert!(status.success(), "{status}");
        assert!(started.elapsed() < within);
        assert!(c.is_closed(), "the waiting client is cut");
        mc.signal("CONT");
        let log = cashew.log();
        match signals {
            1 => assert!(
                log.contains("drain timed out with 1 client connections"),
                "{log}"
            ),
            _ => assert!(log.contains("stopping at once"), "{log}"),
        }
    }
}

#[test]
fn restarts_under_load_refuse_nothing_and_lose_nothing() {
    let backends = [memcached(), memcached()];
    let listen = free_port("127.0.0.1");
    let admin = addr(free_port("127.0.0.1"));
    let pid_file = temp_dir("restart").join("cashew.pid");
    let mut cashew = Cashew::start(
        CASHEW,
        &pool_yaml(listen, &[&backends[0], &backends[1]], "  timeout: 2000\n"),
        &[
            "-p",
            pid_file.to_str().unwrap(),
            "--admin",
            &admin.to_string(),
        ],
    );
    let first = cashew.process.pid();
    let stop = AtomicBool::new(false);
    let target = addr(listen);
    let mut pids = vec![first];
    let mut guards = Vec::new();

    let tally = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            let mut clients: Vec<load::Client> = Vec::new();
            for t in 0..4 {
                clients.push(Box::new(move |stop: &AtomicBool| {
                    load::connection_per_request(target, &format!("once{t}"), stop)
                }));
            }
            for t in 0..2 {
                clients.push(Box::new(move |stop: &AtomicBool| {
                    load::counter_increments(target, &format!("counter{t}"), stop)
                }));
                clients.push(Box::new(move |stop: &AtomicBool| {
                    load::memcached_pipelines_reconnecting(target, &format!("pipe{t}"), stop)
                }));
            }
            load::run(clients, &stop)
        });
        std::thread::sleep(Duration::from_millis(500));

        // SIGUSR2: a new process takes the sockets, the old one drains and exits.
        kill(first, "USR2");
        let status = cashew
            .process
            .wait_exit(Duration::from_secs(20))
            .expect("old exits");
        assert!(status.success(), "{status}");
        let second = read_pid(&pid_file).expect("pid file");
        assert_ne!(second, first);
        assert!(pid_alive(second));
        guards.push(KillOnDrop(second));
        pids.push(second);
        std::thread::sleep(Duration::from_millis(500));

        // `cashew restart` through the admin API does the same.
        let out = Command::new(CASHEW)
            .args(["restart", "--admin", &admin.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let third = read_pid(&pid_file).expect("pid file");
        assert!(String::from_utf8_lossy(&out.stdout).contains(&third.to_string()));
        guards.push(KillOnDrop(third));
        pids.push(third);
        wait_for(
            "the second process to exit",
            Duration::from_secs(20),
            || !pid_alive(second),
        );
        std::thread::sleep(Duration::from_millis(500));

        stop.store(true, Ordering::Relaxed);
        load.join().unwrap()
    });
    println!(
        "2 restarts (pids {pids:?}) under load: {} requests, {} refused, {} failed, {} connections closed by a drain and resumed",
        tally.requests,
        tally.refused,
        tally.failures.len(),
        tally.closed
    );
    assert_eq!(tally.refused, 0);
    assert!(tally.failures.is_empty(), "{:#?}", tally.failures);
    assert!(tally.requests > 1000, "{} requests", tally.requests);
    let log = cashew.log();
    assert!(log.contains("this process drains and exits"), "{log}");
}

#[test]
fn a_failed_restart_leaves_the_old_process_serving() {
    // cashew runs from a copy of its binary, so the test can replace it on disk.
    let dir = temp_dir("upgrade");
    let binary = dir.join("cashew");
    std::fs::copy(CASHEW, &binary).unwrap();
    let mc = memcached();
    let listen = free_port("127.0.0.1");
    let pid_file = dir.join("cashew.pid");
    let yaml = pool_yaml(listen, &[&mc], "");
    let cashew = Cashew::start(
        binary.to_str().unwrap(),
        &yaml,
        &["-p", pid_file.to_str().unwrap()],
    );
    let pid = cashew.process.pid();
    let mut c = McConn::connect(addr(listen));
    c.set("k", b"v");
    // The new process may log its own reason before the old one logs the failure,
    // so wait for both.
    const FAILED: &str = "restart failed, this process keeps serving";
    let expect_failure = |why: &str| {
        let failures_before = cashew.log().matches(FAILED).count();
        kill(pid, "USR2");
        wait_for("the restart to fail", Duration::from_secs(20), || {
            let log = cashew.log();
            log.contains(why) && log.matches(FAILED).count() > failures_before
        });
        assert_eq!(read_pid(&pid_file), Some(pid));
    };

    // An invalid config: the new process says why and exits.
    cashew.write_config("alpha:\n  listen: 127.0.0.1:1\n  hash: nope\n  servers: []\n");
    expect_failure("cashew.yml:3:");
    assert_eq!(c.get("k").as_deref(), Some(&b"v"[..]));

    // A broken binary on disk: it exits before saying it is ready.
    cashew.write_config(&yaml);
    std::fs::remove_file(&binary).unwrap();
    std::fs::write(&binary, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    expect_failure("exit status: 3");
    assert_eq!(c.get("k").as_deref(), Some(&b"v"[..]));

    // A good binary put in place: `cashew restart` through the pid file upgrades.
    std::fs::remove_file(&binary).unwrap();
    std::fs::copy(CASHEW, &binary).unwrap();
    let out = Command::new(CASHEW)
        .args(["restart", "-p", pid_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = read_pid(&pid_file).unwrap();
    assert_ne!(new, pid);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&new.to_string()));
    let _guard = KillOnDrop(new);
    assert_eq!(
        std::fs::read_link(format!("/proc/{new}/exe")).unwrap(),
        binary,
        "the new process runs the binary now on disk"
    );
    let mut fresh = McConn::connect(addr(listen));
    assert_eq!(fresh.get("k").as_deref(), Some(&b"v"[..]));
}

#[test]
fn a_unix_socket_listener_is_handed_over_not_recreated() {
    let mc = memcached();
    let dir = temp_dir("unix-restart");
    let sock = dir.join("cashew.sock");
    let pid_file = dir.join("cashew.pid");
    let yaml = format!(
        "alpha:\n  listen: {} 0600\n  servers:\n    - {}:1\n",
        sock.display(),
        mc.addr
    );
    let mut cashew = Cashew::start(CASHEW, &yaml, &["-p", pid_file.to_str().unwrap()]);
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = inode(&sock);
    kill(cashew.process.pid(), "USR2");
    cashew
        .process
        .wait_exit(Duration::from_secs(20))
        .expect("old exits");
    let new = read_pid(&pid_file).unwrap();
    let _guard = KillOnDrop(new);
    assert_eq!(inode(&sock), before, "the socket file is the same one");
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    std::io::Write::write_all(&mut s, b"set u 0 0 1\r\n1\r\n").unwrap();
    let mut reply = [0u8; 8];
    std::io::Read::read_exact(&mut s, &mut reply).unwrap();
    assert_eq!(&reply, b"STORED\r\n");
}

#[test]
fn a_port_has_one_owner_unless_pools_ask_for_reuseport() {
    let mc = memcached();
    let listen = free_port("127.0.0.1");
    let yaml = pool_yaml(listen, &[&mc], "");
    let _first = Cashew::start(CASHEW, &yaml, &[]);
    let dir = temp_dir("owner");
    std::fs::write(dir.join("cashew.yml"), &yaml).unwrap();
    let out = Command::new(CASHEW)
        .arg("-c")
        .arg(dir.join("cashew.yml"))
        .args(["-s", &free_port("127.0.0.1").to_string(), "-a", "127.0.0.1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "pool 'alpha': cannot listen on 127.0.0.1:{listen}: Address already in use"
        )),
        "{stderr}"
    );

    // With reuseport, two instances share the port on purpose.
    let listen = free_port("127.0.0.1");
    let yaml = pool_yaml(listen, &[&mc], "  reuseport: true\n");
    let a = Cashew::start(CASHEW, &yaml, &[]);
    let b = Cashew::start(CASHEW, &yaml, &[]);
    let clients: Vec<McConn> = (0..32)
        .map(|_| {
            let mut c = McConn::connect(addr(listen));
            c.roundtrip(b"set shared 0 0 1\r\n1\r\n", b"STORED\r\n");
            c
        })
        .collect();
    let connections = |cashew: &Cashew| -> u64 {
        let doc: serde_json::Value = serde_json::from_str(&cashew.stats_json()).unwrap();
        doc["curr_connections"].as_u64().unwrap()
    };
    let (on_a, on_b) = (connections(&a), connections(&b));
    assert_eq!(on_a + on_b, 32);
    assert!(on_a > 0 && on_b > 0, "both serve: {on_a} and {on_b}");
    drop(clients);
}

#[test]
fn systemd_socket_activation_serves_the_passed_socket() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    let mc = memcached();
    // The test keeps its own descriptor of the listener: cashew cannot bind the
    // port itself, so it must serve the socket it was given.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = listener.local_addr().unwrap();
    let dir = temp_dir("socket-activation");
    let conf = dir.join("cashew.yml");
    std::fs::write(&conf, pool_yaml(listen.port(), &[&mc], "")).unwrap();
    let stats = free_port("127.0.0.1");
    let script = format!(
        "LISTEN_PID=$$ LISTEN_FDS=1 exec {CASHEW} -c {} -s {stats} -a 127.0.0.1 -o {} --threads 2",
        conf.display(),
        dir.join("cashew.log").display()
    );
    let fd = listener.as_raw_fd();
    let mut command = Command::new("sh");
    command.args(["-c", &script]);
    // SAFETY: dup2 and fcntl are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            } else {
                libc::dup2(fd, 3);
            }
            Ok(())
        });
    }
    let _cashew = Process::spawn("cashew", &mut command, addr(stats));
    let mut c = McConn::connect(listen);
    c.set("activated", b"yes");
    assert_eq!(c.get("activated").as_deref(), Some(&b"yes"[..]));
}

#[test]
fn readiness_reload_and_stop_are_told_to_systemd() {
    use std::os::unix::net::UnixDatagram;

    let mc = memcached();
    let dir = temp_dir("notify");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let listen = free_port("127.0.0.1");
    let mut cashew = Cashew::start_with_env(
        CASHEW,
        &pool_yaml(listen, &[&mc], ""),
        &[],
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    );
    let next = || {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    cashew.process.signal("HUP");
    let reloading = next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(next(), "READY=1");
    cashew.process.signal("TERM");
    assert_eq!(next(), "STOPPING=1");
    assert!(cashew.process.wait_exit(Duration::from_secs(5)).is_some());
}
