//! The process as an operator runs it: signals, log file, pid file, daemon mode.

use std::process::Command;
use std::time::{Duration, Instant};

use cashew_testkit::{free_port, memcached, temp_dir, Cashew, McConn};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn yaml(listen: u16, backend: &std::net::SocketAddr) -> String {
    format!("alpha:\n  listen: 127.0.0.1:{listen}\n  servers:\n    - {backend}:1\n")
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(pid: u32, signal: &str) {
    assert!(Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

#[test]
fn signals_are_logged_and_sigterm_exits_cleanly() {
    let backend = memcached();
    let dir = temp_dir("signals");
    let pid_file = dir.join("cashew.pid");
    let cashew = Cashew::start(
        CASHEW,
        &yaml(free_port("127.0.0.1"), &backend.addr),
        &["-p", pid_file.to_str().unwrap(), "--threads", "1"],
    );
    let pid = cashew.process.pid();
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        pid.to_string()
    );

    kill(pid, "HUP");
    wait_for("SIGHUP in the log", || {
        cashew
            .log()
            .contains("signal 1 (SIGHUP) received, reopening log file")
    });
    kill(pid, "TTIN");
    wait_for("SIGTTIN in the log", || {
        cashew
            .log()
            .contains("signal 21 (SIGTTIN) received, up logging level to 6")
    });
    kill(pid, "TTOU");
    wait_for("SIGTTOU in the log", || {
        cashew
            .log()
            .contains("signal 22 (SIGTTOU) received, down logging level to 5")
    });

    // SIGHUP also reloads the configuration; SIGUSR1 only reopens the log.
    wait_for("the reload of the SIGHUP", || {
        cashew.log().contains("configuration generation 2 loaded")
    });
    kill(pid, "USR1");
    wait_for("SIGUSR1 in the log", || {
        cashew
            .log()
            .contains("signal 10 (SIGUSR1) received, reopening log file")
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(!cashew.log().contains("configuration generation 3"));

    // The log file is reopened on SIGHUP: after a rotation, new lines go to a new file.
    let log = cashew.dir.join("cashew.log");
    std::fs::rename(&log, cashew.dir.join("cashew.log.1")).unwrap();
    kill(pid, "HUP");
    wait_for("a new log file", || cashew.log().contains("SIGHUP"));

    kill(pid, "TERM");
    wait_for("exit", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });
    assert!(cashew
        .log()
        .contains("signal 15 (SIGTERM) received, stopping gracefully"));
    assert!(!pid_file.exists(), "pid file left behind");
}

#[test]
fn sigsegv_is_logged_before_the_default_action() {
    let backend = memcached();
    let cashew = Cashew::start(
        CASHEW,
        &yaml(free_port("127.0.0.1"), &backend.addr),
        &["--threads", "1"],
    );
    kill(cashew.process.pid(), "SEGV");
    wait_for("SIGSEGV in the log", || {
        cashew
            .log()
            .contains("signal 11 (SIGSEGV) received, core dumping")
    });
}

#[test]
fn daemonize_detaches_and_writes_the_pid_file() {
    let backend = memcached();
    let dir = temp_dir("daemon");
    let conf = dir.join("cashew.yml");
    let listen = free_port("127.0.0.1");
    std::fs::write(&conf, yaml(listen, &backend.addr)).unwrap();
    let pid_file = dir.join("cashew.pid");
    let stats_port = free_port("127.0.0.1").to_string();
    // Relative paths keep working although the daemon leaves the working directory alone.
    // Started with umask 0, as an init script may: its files are still not writable
    // by everyone.
    let mut command = Command::new(CASHEW);
    // SAFETY: between fork and exec only umask runs, which is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::umask(0);
            Ok(())
        });
    }
    let status = command
        .current_dir(&dir)
        .args([
            "-d",
            "-c",
            "cashew.yml",
            "-p",
            "cashew.pid",
            "-o",
            "cashew.log",
            "-s",
            &stats_port,
            "-a",
            "127.0.0.1",
            "--threads",
            "1",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for("the pid file", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    });
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut c = McConn::connect(format!("127.0.0.1:{listen}").parse().unwrap());
    c.set("daemon", b"yes");
    assert_eq!(c.get("daemon").as_deref(), Some(&b"yes"[..]));
    let mode = |name: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("cashew.pid"), 0o644, "pid file");
    assert_eq!(mode("cashew.log"), 0o644, "log file");
    // A rotated log file is reopened with the same mode.
    std::fs::rename(dir.join("cashew.log"), dir.join("cashew.log.1")).unwrap();
    kill(pid, "USR1");
    wait_for("the log file to be reopened", || {
        dir.join("cashew.log").exists()
    });
    assert_eq!(mode("cashew.log"), 0o644, "reopened log file");
    kill(pid, "TERM");
    wait_for("the pid file to go", || !pid_file.exists());
    assert!(std::fs::read_to_string(dir.join("cashew.log"))
        .unwrap()
        .contains("SIGTERM"));
}

#[test]
fn a_listen_address_in_use_stops_the_start_with_a_clear_error() {
    let backend = memcached();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = temp_dir("inuse");
    let conf = dir.join("cashew.yml");
    std::fs::write(&conf, yaml(port, &backend.addr)).unwrap();
    let out = Command::new(CASHEW)
        .args([
            "-c",
            conf.to_str().unwrap(),
            "-s",
            &free_port("127.0.0.1").to_string(),
            "-a",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pool 'alpha': cannot listen on"),
        "{stderr}"
    );
}
