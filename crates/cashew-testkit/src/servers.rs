//! The real servers tests talk to: memcached, redis-server, nutcracker.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use crate::tls::Issued;

use crate::*;

/// A memcached server on `127.0.0.1` and a free port.
pub fn memcached() -> Process {
    memcached_on("127.0.0.1", free_port("127.0.0.1"))
}

/// A memcached server on `host:port` (any loopback address).
pub fn memcached_on(host: &str, port: u16) -> Process {
    memcached_on_with(host, port, &[])
}

/// A memcached server on `127.0.0.1` and a free port, with further options.
pub fn memcached_with(extra: &[&str]) -> Process {
    memcached_on_with("127.0.0.1", free_port("127.0.0.1"), extra)
}

/// A memcached server that speaks TLS only (`-Z`), with the certificate `server`.
pub fn memcached_tls(server: &Issued, extra: &[&str]) -> Process {
    let files = format!(
        "ssl_chain_cert={},ssl_key={}",
        server.cert.display(),
        server.key.display()
    );
    let mut args = vec!["-Z", "-o", &files];
    args.extend(extra);
    memcached_with(&args)
}

fn memcached_on_with(host: &str, port: u16, extra: &[&str]) -> Process {
    let mut cmd = Command::new(program("memcached"));
    cmd.args([
        "-l",
        host,
        "-p",
        &port.to_string(),
        "-U",
        "0",
        "-t",
        "1",
        "-m",
        "64",
    ]);
    if running_as_root() {
        cmd.args(["-u", "nobody"]);
    }
    cmd.args(extra);
    let addr = format!("{host}:{port}").parse().unwrap();
    Process::spawn("memcached", &mut cmd, addr)
}

/// A redis-server on `127.0.0.1` and a free port, with no persistence; `extra` are
/// further `--name value` settings (e.g. `["--requirepass", "secret"]`).
pub fn redis_server(extra: &[&str]) -> Process {
    redis_server_on(free_port("127.0.0.1"), extra)
}

/// As [`redis_server`], on a given port (e.g. to restart a server where it was).
pub fn redis_server_on(port: u16, extra: &[&str]) -> Process {
    // A directory of its own: a replica writes the data it syncs to dump.rdb there,
    // which any later server started in the same directory would load.
    let dir = std::env::temp_dir().join(format!("cashew-redis-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a directory for redis-server");
    let mut cmd = Command::new(program("redis-server"));
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.display().to_string(),
    ]);
    cmd.args(extra);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    Process::spawn("redis-server", &mut cmd, addr)
}

/// A redis-server that speaks TLS only, with the certificate `server`; clients
/// must show a certificate `ca` signed.
pub fn redis_server_tls(server: &Issued, ca: &Path, extra: &[&str]) -> Process {
    redis_server_tls_on(free_port("127.0.0.1"), server, ca, extra)
}

/// As [`redis_server_tls`], on a given port, in a directory of its own (see
/// [`redis_server_on`]).
pub fn redis_server_tls_on(port: u16, server: &Issued, ca: &Path, extra: &[&str]) -> Process {
    let dir = std::env::temp_dir().join(format!("cashew-redis-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a directory for redis-server");
    let mut cmd = Command::new(program("redis-server"));
    cmd.args([
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .arg("--dir")
    .arg(&dir)
    .args(["--tls-port", &port.to_string()])
    .arg("--tls-cert-file")
    .arg(&server.cert)
    .arg("--tls-key-file")
    .arg(&server.key)
    .arg("--tls-ca-cert-file")
    .arg(ca)
    .args(extra);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    Process::spawn("redis-server", &mut cmd, addr)
}

/// nutcracker started with the config `yaml`, listening (for readiness) on `wait_for`.
pub fn nutcracker(yaml: &str, wait_for: SocketAddr) -> Process {
    let dir = temp_dir("nutcracker");
    let conf = dir.join("nutcracker.yml");
    std::fs::write(&conf, yaml).unwrap();
    let stats_port = free_port("127.0.0.1");
    let mut cmd = Command::new(program("nutcracker"));
    cmd.arg("-c")
        .arg(&conf)
        .args(["-s", &stats_port.to_string(), "-a", "127.0.0.1"])
        .arg("-o")
        .arg(dir.join("nutcracker.log"))
        .arg("-p")
        .arg(dir.join("nutcracker.pid"));
    Process::spawn("nutcracker", &mut cmd, wait_for)
}
